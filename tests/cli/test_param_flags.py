"""The library's errors name parameters; each command shows them as its flags, through
one table per command (`qmamba.cli.param_flags`)."""
from __future__ import annotations

import dataclasses

import pytest

from qmamba.cli.main import build_parser
from qmamba.jobs import DemoJob, EvalJob, QuantizeJob

REQUIRED = {"quantize": ["--model", "x", "--method", "m"], "analyze": ["--model", "x"], "train": ["--model", "x"]}


def _flags(command: str) -> dict[str, str]:
    return build_parser().parse_args([command, *REQUIRED.get(command, [])]).param_flags


@pytest.mark.parametrize("command, job, library_only", [
    ("quantize", QuantizeJob, {"sqnr_images"}),
    ("eval", EvalJob, set()),
    ("demo", DemoJob, {"recipe_settings"}),
])
def test_every_job_field_has_a_flag(command, job, library_only):
    flags = _flags(command)
    for field in dataclasses.fields(job):
        if field.name not in library_only:
            assert flags[field.name].startswith("--"), field.name
    assert _flags("quantize")["overrides"] == "--set"


def test_parameters_of_the_shared_steps():
    quantize, analyze = _flags("quantize"), _flags("analyze")
    assert (quantize["data_dir"], quantize["out_dir"], quantize["use_ema"]) == ("--data", "--out", "--use-ema")
    assert (analyze["data_dir"], analyze["calib_size"]) == ("--data", "--images")
    assert _flags("train")["device"] == "--device"


def test_use_ema_needs_checkpoint(run_cli, tiny_name):
    rc, _, err = run_cli("eval", "--model", tiny_name, "--use-ema", "--no-progress")
    assert rc == 2 and err == "error: --use-ema needs --checkpoint\n"


def test_messages_name_the_flags(run_cli, tmp_path):
    rc, _, err = run_cli("demo", "--calib-size", "0", "--out", tmp_path / "d", "--no-progress")
    assert rc == 2 and err == "error: --calib-size must be at least 1, got 0\n"
    rc, _, err = run_cli("eval", "--model", "vim_fmnist", "--seed", "-1", "--no-progress")
    assert rc == 2 and err.startswith("error: --seed must be an integer in [0, 2**63 - 1]")
    rc, _, err = run_cli("analyze", "--model", "vim_fmnist", "--images", "5000", "--out", tmp_path / "a",
                         "--no-progress")
    assert rc == 2 and "--images 5000 is more than the 1,024 images" in err and "use --images 1024" in err
