"""Portable numbers: PyTorch's CPU kernels pinned to paths that every x86-64 CPU with
AVX2 runs the same way, so that a run gives the same bits on any such machine,
whatever its vendor or generation (issue 12; docs/design.md, "Portable numbers").

PyTorch picks its CPU code by the CPU it finds: ATen's vectorized kernels by the widest
vector ISA (AVX-512 where there is one), MKL by vendor and ISA (on Intel, paths that AMD
CPUs never take), oneDNN and NNPACK convolutions by ISA and cache sizes. Each choice sums
in its own order, so two machines differ in the last bits, and at 4 bits a last bit can
flip a calibration decision (a clipping range, a rounding) and move the accuracy. The pins:

- `ATEN_CPU_CAPABILITY=avx2`: ATen's AVX2 kernels (and their SLEEF exp/log), not the
  AVX-512 ones, on a CPU that has AVX-512.
- `MKL_CBWR=COMPATIBLE`: MKL's conditional numerical reproducibility, the one branch Intel
  documents as giving the same results on Intel and non-Intel CPUs (GEMM, VML exp/log).
- `ONEDNN_MAX_CPU_ISA=AVX2`: a guard: no oneDNN code above AVX2, should a path that the
  switch below does not cover call oneDNN (none does in our models: no measured effect).
- `torch.backends.mkldnn` and `torch.backends.nnpack` off (in the process): convolutions
  through ATen's im2col + MKL GEMM; oneDNN and NNPACK choose blockings by cache size.
- A fixed thread count (the command's `--threads`, `PORTABLE_THREADS` by default).

The variables must be in the environment before PyTorch loads (ATen reads its capability
once; MKL and oneDNN at their first call). `import qmamba` loads PyTorch, so no entry
point can set them in time: `pin_process()` re-executes the command (`os.execve` of the
same interpreter and arguments: same process id, stdin, stdout and exit code) with them
set, once. `platform_record()` says, in every report, which CPU ran, which paths were in
effect and whether the run was pinned.
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence

__all__ = [
    "PIN_ENV",
    "PORTABLE_THREADS",
    "REEXEC_MARKER",
    "cpu_info",
    "environment_pinned",
    "pin_process",
    "pinned_switches",
    "pins_unavailable",
    "platform_record",
    "startup_environment",
]

# The environment pins, set before PyTorch loads (see the module docstring for each).
PIN_ENV: Mapping[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
PORTABLE_THREADS = 1  # threads of a portable run that names none
# Set in the environment of the re-executed process: no second re-exec, and the record
# says the pins came from qmamba.
REEXEC_MARKER = "QMAMBA_PORTABLE_REEXEC"
# The CPU flags (Linux /proc/cpuinfo names) that decide PyTorch's code paths.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8",
             "amx_bf16")


def cpu_info(cpuinfo_path: str = "/proc/cpuinfo") -> dict:
    """{"model", "vendor", "flags": {flag: bool} (ISA_FLAGS), "logical_cpus"} of this
    machine; model and flags are None where /proc/cpuinfo cannot be read (not Linux).
    Under an emulator (qemu-user) /proc/cpuinfo is the host's."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if not sep:
                    if fields:
                        break  # the first processor's block is enough
                    continue
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    have = set(fields.get("flags", "").split()) if "flags" in fields else None
    return {
        "model": fields.get("model name") or platform.processor() or None,
        "vendor": fields.get("vendor_id"),
        "flags": {name: name in have for name in ISA_FLAGS} if have is not None else None,
        "logical_cpus": os.cpu_count(),
    }


def pins_unavailable(info: Mapping | None = None, machine: str | None = None) -> str | None:
    """Why the pins cannot apply here (None: they can): they need an x86-64 CPU with AVX2
    and FMA (older ATen versions run AVX2 code when told to, without checking)."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64"):
        return f"the CPU is not x86-64 ({machine})"
    flags = (info if info is not None else cpu_info())["flags"]
    if flags is None:
        return "the CPU's instruction sets cannot be read (no /proc/cpuinfo)"
    if not (flags["avx2"] and flags["fma"]):
        return "the CPU has no AVX2 + FMA"
    return None


def startup_environment() -> dict[str, str]:
    """The environment this process started with, as PyTorch saw it when it loaded (Linux:
    /proc/self/environ, which later os.environ edits do not change); elsewhere os.environ."""
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return dict(os.environ)
    env = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env


def environment_pinned(environ: Mapping[str, str] | None = None) -> bool:
    """Whether every PIN_ENV variable has its pinned value in `environ` (default: the
    environment this process started with)."""
    env = startup_environment() if environ is None else environ
    return all(env.get(key) == value for key, value in PIN_ENV.items())


def pin_process(orig_argv: Sequence[str] | None = None) -> str:
    """Re-execute this process's command with PIN_ENV in its environment, unless the
    pins are already in effect. Returns only when it does not re-execute: "pinned" (they
    are in effect) or the reason it cannot (a warning says it; the run goes on natively).

    `orig_argv`: the command as the interpreter got it (default sys.orig_argv, which keeps
    `-m qmamba`, interpreter options and the console script's path)."""
    if environment_pinned():
        return "pinned"
    reason = pins_unavailable()
    if reason is None and os.environ.get(REEXEC_MARKER):
        reason = (f"the re-executed process did not start with {_pins_text()} in its "
                  "environment")  # never re-execute twice
    if reason is None and not sys.executable:
        reason = "the Python interpreter's path is unknown (sys.executable is empty)"
    if reason is not None:
        warnings.warn(f"portable numbers are off: {reason}; this run uses this CPU's own "
                      "kernel paths (the report says so)", RuntimeWarning, stacklevel=2)
        return reason
    argv = list(sys.orig_argv if orig_argv is None else orig_argv)
    env = {**os.environ, **PIN_ENV, REEXEC_MARKER: "1"}
    command = [sys.executable, *argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if os.name == "posix":
            os.execve(sys.executable, command, env)  # does not return
        raise SystemExit(subprocess.call(command, env=env))  # pragma: no cover - Windows
    except OSError as e:
        warnings.warn(f"portable numbers are off: re-executing {sys.executable} failed ({e}); this "
                      "run uses this CPU's own kernel paths (the report says so)", RuntimeWarning,
                      stacklevel=2)
        return f"re-executing failed: {e}"


def _pins_text() -> str:
    return " ".join(f"{k}={v}" for k, v in PIN_ENV.items())


@contextlib.contextmanager
def pinned_switches() -> Iterator[None]:
    """The in-process pins for the block: oneDNN (mkldnn) and NNPACK convolutions off, so
    convolutions run ATen's im2col + MKL GEMM. Previous settings come back afterwards."""
    import torch

    # not torch.backends.mkldnn.flags(): it also resets the TF32 / fp32-precision settings
    saved_mkldnn = torch.backends.mkldnn.enabled
    saved_nnpack = torch.backends.nnpack.set_flags(False)[0]
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = saved_mkldnn
        torch.backends.nnpack.set_flags(saved_nnpack)


def _nnpack_enabled() -> bool | None:
    """torch.backends.nnpack has no getter: the private one, None where it is missing."""
    import torch

    getter = getattr(torch._C, "_get_nnpack_enabled", None)
    return bool(getter()) if getter is not None else None


def _switches_off() -> bool:
    import torch

    return not torch.backends.mkldnn.enabled and _nnpack_enabled() is False


def _library_versions() -> dict:
    """torch, MKL and oneDNN versions as PyTorch reports its build."""
    import torch

    config = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([0-9][0-9.]*)", config)
    onednn = re.search(r"(?:MKL-DNN|oneDNN) v([^\s]+)", config)
    return {"torch": torch.__version__, "mkl": mkl.group(1) if mkl else None,
            "onednn": onednn.group(1) if onednn else None}


def _scan_backend() -> dict:
    from qmamba.ops import backend

    return {"requested": backend.get_scan_backend(), "cpu": backend.cpu_backend_status()}


def platform_record() -> dict:
    """What decided this run's CPU numbers, for its report: the CPU (model, vendor, the
    vector ISA flags that matter), PyTorch's CPU capability, the pins (environment at
    startup, in-process switches, whether all were in effect: `pinned`), threads, the scan
    backend and the library versions."""
    import torch

    env = startup_environment()
    switches_off = _switches_off()
    return {
        "cpu": cpu_info(),
        "machine": platform.machine(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "pinned": environment_pinned(env) and switches_off,
        "pins": {
            "environment": {key: env.get(key) for key in PIN_ENV},
            "wanted": dict(PIN_ENV),
            "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
            "nnpack_enabled": _nnpack_enabled(),
            "reexecuted": bool(env.get(REEXEC_MARKER)),
        },
        "threads": torch.get_num_threads(),
        "scan_backend": _scan_backend(),
        "versions": _library_versions(),
    }
