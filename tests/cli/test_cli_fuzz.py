"""Random command lines end in success or our one-line error (exit 2), never a traceback.

The argument lists are drawn from the real options of each subcommand (read from the
parser) with random values (numbers out of range, text, missing values, unknown names),
in random order. Nothing long may start: loading a model (or the training data) is
replaced by raising `WouldRun`, a QMambaError, so a command line that passes every check
ends in "error: would run" instead of a real run. The commands run in an empty folder.

QMAMBA_FUZZ_EXAMPLES=N runs N examples instead of 40 (a longer hunt).
"""
from __future__ import annotations

import contextlib
import io
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmamba.cli.main import main
from qmamba.errors import QMambaError
from qmamba.quant.recipes import list_recipes

MODELS = ["vim_tiny", "vim_fmnist", "vmamba_fmnist", "vmamba_tiny_v0", "vim_tni", "", "-", "x" * 300]
RECIPES = [*list_recipes(), "qmamb", "QMAMBA"]  # the registered ones and two near misses
NUMBERS = ["0", "1", "2", "4", "8", "16", "17", "-1", "-4", "4.5", "1e3", "nan", "inf", "four", "", " 8 ",
           "99999999999999999999"]
PATHS = ["/nonexistent/ckpt.pth", "/dev/null", "/", "relative/nowhere", ""]

VALUES = {  # values per option name; other options take any of these
    "--model": MODELS, "--models": MODELS, "--method": RECIPES, "--recipes": RECIPES,
    "--settings": ["W4A8", "W8A8", "W1A8", "W4X4", "w6a6", ""],
    "--device": ["cpu", "cuda", "cuda:7", "tpu", "auto", ""],
    "--checkpoint": PATHS, "--data": PATHS, "--quantized": PATHS, "--out": PATHS + ["out", "out/x.json"],
    "--set": ["calib_size=abc", "seed=-1", "ssm.h_groups=x", "tune.steps=null", "nope=1", "w_bits=3.5",
              "search.candidates=5", "weight=3", "role_bits={\"ssm.h\": 1}", "act.smoothing_alpha=2",
              "=", "x", "ssm.h_groups=4", "tune.jlss=true"],
}
ANY_VALUE = NUMBERS + PATHS + MODELS[:3]
COMMANDS = ["quantize", "eval", "analyze", "list-models", "demo", "train"]
REQUIRED = {"quantize": ["--model", "--method"], "analyze": ["--model"], "train": ["--model"]}


def _subcommand_options() -> dict[str, list[tuple[str, int | str | None]]]:
    """{command: [(option, nargs)]} read from the real parser (nargs 0: a flag)."""
    import argparse

    from qmamba.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for command in COMMANDS:
        actions = sub.choices[command]._actions
        out[command] = [(a.option_strings[-1], a.nargs) for a in actions
                        if a.option_strings and a.option_strings[-1] != "--help"]
    return out


OPTIONS = _subcommand_options()


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(COMMANDS * 3 + ["quantise", ""]))
    words = []
    if draw(st.integers(0, 3)):  # mostly: the required options, so validation is reached
        for option in REQUIRED.get(command, []):
            words += [option, draw(st.sampled_from(VALUES[option]))]
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["own"] * 6 + ["stray", "junk"]))
        if kind == "own" and command in OPTIONS:
            option, nargs = draw(st.sampled_from(OPTIONS[command]))
            words.append(option)
            pool = VALUES.get(option, ANY_VALUE)
            if nargs in ("+", "*"):
                words += draw(st.lists(st.sampled_from(pool), max_size=3))
            elif nargs != 0 and draw(st.integers(0, 9)):  # sometimes the value is missing
                words.append(draw(st.sampled_from(pool)))
        elif kind == "stray":  # an option of another command, a help / version flag, "--"
            words.append(draw(st.sampled_from(["--bogus", "--calib-size", "--all", "-h", "--version", "--"])))
        else:
            words.append(draw(st.text(max_size=12)))
    return command, words


class WouldRun(QMambaError):
    """Raised where a command would start real work (load a model or the training data)."""


def _would_run(*_args, **_kwargs):
    raise WouldRun("would run")


EXAMPLES = int(os.environ.get("QMAMBA_FUZZ_EXAMPLES", "40"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(line=command_lines())
def test_random_command_lines(line, tmp_path):
    import qmamba.data
    import qmamba.jobs.demo
    import qmamba.jobs.evaluate
    import qmamba.jobs.models
    import qmamba.jobs.quantize

    command, words = line
    argv = ([command] if command else []) + words
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        for job in (qmamba.jobs.models, qmamba.jobs.quantize, qmamba.jobs.evaluate, qmamba.jobs.demo):
            mp.setattr(job, "load_model", _would_run)
        mp.setattr(qmamba.data, "FashionMNIST", _would_run)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    stderr = err.getvalue()
    assert "Traceback" not in stderr, (argv, stderr)
    assert rc in (0, 2), (argv, rc, stderr)
    if rc == 2:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines, argv
        assert lines[-1].startswith("error: ") or "usage:" in stderr, (argv, stderr)
    assert not any(tmp_path.iterdir()), (argv, "wrote files before any work was done")
