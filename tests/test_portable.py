"""qmamba.portable: the CPU record, the pins, and the re-execution that sets them before
PyTorch loads (real re-executions run in subprocesses)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import qmamba
from qmamba import portable

needs_pins = pytest.mark.skipif(portable.pins_unavailable() is not None,
                                reason=f"no pins here: {portable.pins_unavailable()}")

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7601 32-Core Processor
flags\t\t: fpu sse sse2 sse4_2 avx avx2 fma f16c

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: ignored: only the first processor is read
"""


def test_cpu_info_reads_model_vendor_and_isa_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    info = portable.cpu_info(str(path))
    assert (info["model"], info["vendor"]) == ("AMD EPYC 7601 32-Core Processor", "AuthenticAMD")
    assert info["flags"]["avx2"] and info["flags"]["fma"] and not info["flags"]["avx512f"]
    assert set(info["flags"]) == set(portable.ISA_FLAGS)
    assert portable.pins_unavailable(info, machine="x86_64") is None
    missing = portable.cpu_info(str(tmp_path / "nope"))
    assert missing["flags"] is None and missing["logical_cpus"] == os.cpu_count()


def test_pins_need_x86_64_with_avx2_and_fma():
    flags = dict.fromkeys(portable.ISA_FLAGS, True)
    assert portable.pins_unavailable({"flags": flags}, machine="AMD64") is None
    assert "not x86-64" in portable.pins_unavailable({"flags": flags}, machine="aarch64")
    assert "no AVX2" in portable.pins_unavailable({"flags": {**flags, "fma": False}}, machine="x86_64")
    assert "cannot be read" in portable.pins_unavailable({"flags": None}, machine="x86_64")


def test_environment_pinned_needs_every_value():
    assert portable.environment_pinned(dict(portable.PIN_ENV))
    assert not portable.environment_pinned({**portable.PIN_ENV, "MKL_CBWR": "AUTO"})
    assert not portable.environment_pinned({})


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="Linux only")
def test_pins_set_after_the_start_do_not_count(monkeypatch):
    """PyTorch read the environment when it loaded: an os.environ edit now is too late."""
    for key, value in portable.PIN_ENV.items():
        monkeypatch.setenv(key, value + "x")
    assert portable.startup_environment().get("MKL_CBWR") != "COMPATIBLEx"


def test_switches_turn_onednn_and_nnpack_off_for_the_block_only():
    before = (torch.backends.mkldnn.enabled, portable._nnpack_enabled())
    with portable.pinned_switches():
        record = portable.platform_record()
        assert not torch.backends.mkldnn.enabled and portable._nnpack_enabled() is False
    assert (torch.backends.mkldnn.enabled, portable._nnpack_enabled()) == before
    pins = record["pins"]
    assert (pins["mkldnn_enabled"], pins["nnpack_enabled"]) == (False, False)
    assert record["pinned"] == portable.environment_pinned()  # this process: as it started


def test_platform_record_fields():
    record = portable.platform_record()
    assert set(record) == {"cpu", "machine", "torch_cpu_capability", "pinned", "pins", "threads",
                           "scan_backend", "versions"}
    assert record["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(record["pins"]["environment"]) == set(portable.PIN_ENV) == set(record["pins"]["wanted"])
    assert record["threads"] == torch.get_num_threads()
    assert record["scan_backend"]["requested"] == "auto"
    assert record["versions"]["torch"] == torch.__version__
    json.dumps(record)  # it goes into the reports


def test_reexec_command_and_environment(monkeypatch):
    """pin_process() re-executes the interpreter with the original arguments, the pins and
    the marker (execve intercepted)."""
    calls = []

    def fake_execve(path, argv, env):
        calls.append((path, argv, env))
        raise SystemExit(0)

    monkeypatch.setattr(portable, "startup_environment", dict)
    monkeypatch.setattr(portable, "pins_unavailable", lambda *a, **k: None)
    monkeypatch.delenv(portable.REEXEC_MARKER, raising=False)
    monkeypatch.setattr(os, "execve", fake_execve)
    with pytest.raises(SystemExit):
        portable.pin_process(["python3", "-m", "qmamba", "demo", "--out", "d"])
    path, argv, env = calls[0]
    assert path == sys.executable and argv == [sys.executable, "-m", "qmamba", "demo", "--out", "d"]
    assert portable.environment_pinned(env) and env[portable.REEXEC_MARKER] == "1"


def test_no_second_reexec(monkeypatch):
    """A process started by pin_process() whose environment still lacks the pins warns
    and goes on natively instead of re-executing again."""
    monkeypatch.setattr(portable, "startup_environment", dict)
    monkeypatch.setattr(portable, "pins_unavailable", lambda *a, **k: None)
    monkeypatch.setenv(portable.REEXEC_MARKER, "1")
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("re-executed twice"))
    with pytest.warns(RuntimeWarning, match="portable numbers are off"):
        reason = portable.pin_process(["python3", "x.py"])
    assert "did not start with" in reason


def test_already_pinned_or_unavailable_returns(monkeypatch):
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("re-executed"))
    monkeypatch.setattr(portable, "startup_environment", lambda: dict(portable.PIN_ENV))
    assert portable.pin_process(["python3"]) == "pinned"
    monkeypatch.setattr(portable, "startup_environment", dict)
    monkeypatch.setattr(portable, "pins_unavailable", lambda *a, **k: "the CPU has no AVX2 + FMA")
    with pytest.warns(RuntimeWarning, match="no AVX2"):
        assert portable.pin_process(["python3"]) == "the CPU has no AVX2 + FMA"


def _clean_env() -> dict:
    """This environment without the pins, with this checkout's qmamba first on the path."""
    env = {k: v for k, v in os.environ.items() if k not in portable.PIN_ENV and k != portable.REEXEC_MARKER}
    src = str(Path(qmamba.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env["PYTHONPATH"]]) if env.get("PYTHONPATH") else src
    return env


# `qmamba` as the process's own command line: main() with no arguments (torch is loaded
# by `import qmamba` before main() can run); afterwards what the process ran with
CLI = """
import os, sys
print("entry", os.environ.get("QMAMBA_PORTABLE_REEXEC"), os.getpid(), flush=True)
from qmamba.cli.main import main
rc = main()
import torch
from qmamba import portable
print("capability", torch.backends.cpu.get_cpu_capability(), portable.environment_pinned())
print("stdin", sys.stdin.read().strip())
sys.exit(rc)
"""


@needs_pins
def test_the_command_line_reexecutes_once_with_the_pins(tmp_path):
    """`qmamba demo` re-executes itself once, with the pins in effect when torch loads in
    the new process: the same process id, stdin, exit code and error message."""
    out = subprocess.run([sys.executable, "-c", CLI, "demo", "--eval-limit", "-1", "--out",
                          str(tmp_path / "d"), "--no-progress"], input="hello", capture_output=True,
                         text=True, env=_clean_env(), timeout=300)
    assert out.returncode == 2, out.stderr
    lines = out.stdout.splitlines()
    entries = [line.split() for line in lines if line.startswith("entry")]
    assert [e[1] for e in entries] == ["None", "1"]  # exactly one re-execution
    assert entries[0][2] == entries[1][2]  # the same process
    assert lines[-2:] == ["capability AVX2 True", "stdin hello"]
    assert out.stderr.strip().splitlines()[-1] == \
        "error: --eval-limit must be >= 0 (0 = all images of --eval-part), got -1"
