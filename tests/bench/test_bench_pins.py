"""The benchmarks run on the portable kernel paths unless --native, and record them."""
from __future__ import annotations

import json
import sys

from qmamba import portable
from qmamba.bench.__main__ import main

TINY_SCAN = ["scan", "--batch", "2", "--dim", "4", "--length", "5", "--state", "3", "--threads", "1",
             "--repeats", "1", "--backends", "reference"]


def test_bench_pins_by_default_and_records_the_platform(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(portable, "pin_process", lambda *a: calls.append(a) or "recorded")
    monkeypatch.setattr(sys, "argv", ["python -m qmamba.bench", *TINY_SCAN])
    assert main() == 0  # the process's own command line: pinned
    assert len(calls) == 1
    monkeypatch.setattr(sys, "argv", ["python -m qmamba.bench", "--native", *TINY_SCAN])
    capsys.readouterr()
    assert main() == 0 and len(calls) == 1
    record = json.loads(capsys.readouterr().out)["platform"]
    assert not record["pinned"] and record["threads"] == 1
    assert set(record["pins"]["environment"]) == set(portable.PIN_ENV)
