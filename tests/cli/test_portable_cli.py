"""The commands' portable mode (`qmamba.portable`): the demo pins by default (--native
turns it off), quantize / eval / analyze with --portable; the reports record it."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from qmamba import portable
from qmamba.cli.main import build_parser, main

REQUIRED = {"quantize": ["--model", "x", "--method", "m"], "analyze": ["--model", "x"]}


@pytest.mark.parametrize("command, default, flag", [
    ("demo", True, "--native"), ("quantize", False, "--portable"), ("eval", False, "--portable"),
    ("analyze", False, "--portable"),
])
def test_portable_options(command, default, flag):
    parser = build_parser()
    assert parser.parse_args([command, *REQUIRED.get(command, [])]).portable is default
    assert parser.parse_args([command, *REQUIRED.get(command, []), flag]).portable is not default


@pytest.fixture
def pin_calls(monkeypatch):
    """pin_process() replaced by a recorder: no process is re-executed."""
    calls = []
    monkeypatch.setattr(portable, "pin_process", lambda *a: calls.append(a) or "recorded")
    return calls


@pytest.mark.parametrize("extra, pinned", [([], True), (["--native"], False)])
def test_the_process_entry_pins_the_demo(monkeypatch, tmp_path, pin_calls, extra, pinned):
    monkeypatch.setattr(sys, "argv", ["qmamba", "demo", "--eval-limit", "-1", "--out", str(tmp_path / "d"),
                                      "--no-progress", *extra])
    assert main() == 2  # the bad --eval-limit is reported after the pins
    assert len(pin_calls) == int(pinned)


def test_an_in_process_call_never_reexecutes(tmp_path, pin_calls, capsys):
    assert main(["demo", "--eval-limit", "-1", "--out", str(tmp_path / "d"), "--no-progress"]) == 2
    assert pin_calls == [] and "--eval-limit" in capsys.readouterr().err


def _quantize(tiny_name, tiny_checkpoint, out, *extra):
    return main(["quantize", "--model", tiny_name, "--checkpoint", tiny_checkpoint, "--method", "minmax",
                 "--w-bits", "8", "--a-bits", "8", "--calib-size", "8", "--eval-limit", "8",
                 "--batch-size", "8", "--out", str(out), "--no-progress", *extra])


def test_portable_quantize_in_a_pinned_process(monkeypatch, tmp_path, tiny_name, tiny_checkpoint, capsys):
    """In a process that started with the pins, --portable fixes the threads and turns the
    in-process switches on for the command; report.json and the eval report say so."""
    monkeypatch.setattr(portable, "environment_pinned", lambda environ=None: True)
    threads = torch.get_num_threads()
    assert _quantize(tiny_name, tiny_checkpoint, tmp_path / "q", "--portable") == 0
    record = json.loads((tmp_path / "q" / "report.json").read_text())["platform"]
    assert record["pinned"] and record["threads"] == portable.PORTABLE_THREADS
    assert not record["pins"]["mkldnn_enabled"] and not record["pins"]["nnpack_enabled"]
    assert torch.backends.mkldnn.enabled and torch.get_num_threads() == threads  # restored
    assert main(["eval", "--quantized", str(tmp_path / "q" / "model"), "--eval-limit", "8",
                 "--out", str(tmp_path / "e.json"), "--no-progress"]) == 0
    native = json.loads((tmp_path / "e.json").read_text())["platform"]
    assert not native["pinned"] and native["pins"]["mkldnn_enabled"]
    capsys.readouterr()
