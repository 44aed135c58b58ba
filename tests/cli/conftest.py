"""Fixtures of the CLI tests: one CPU thread, the command run in-process (the tiny
model and its checkpoint: tests/conftest.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _cli_one_thread(one_thread):
    """Every CLI test runs with one thread (tests/conftest.py)."""


@pytest.fixture
def run_cli(capsys):
    """Run `qmamba ARGS` in-process; returns (exit code, stdout, stderr)."""
    from qmamba.cli.main import main

    def run(*args: str):
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run
