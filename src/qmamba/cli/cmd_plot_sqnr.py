"""`qmamba plot-sqnr`: which quantization point loses how many dB, per recipe, from the
report.json files of `qmamba quantize` runs (the picture that explains a table)."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plot-sqnr", help="draw the per-point SQNR of quantize reports",
        description="Reads the report.json of one or more `qmamba quantize` runs (e.g. the same "
                    "model and setting under several recipes) and draws, per model and setting, "
                    "every point's SQNR by role and the points that lose the most.",
    )
    p.add_argument("reports", nargs="+", metavar="REPORT",
                   help="report.json files, or the folders of quantize runs that hold them")
    p.add_argument("--out", default="point_sqnr.png", metavar="PNG", help="default point_sqnr.png")
    p.set_defaults(func=run)


def _read_report(item: str) -> dict:
    import json
    from pathlib import Path

    from qmamba.errors import QMambaError

    path = Path(item)
    path = path / "report.json" if path.is_dir() else path
    if not path.is_file():
        raise QMambaError(f"{str(item)!r} is neither a report.json file nor a folder holding one")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise QMambaError(f"cannot read {str(path)!r} as a report: {e}") from None
    if not isinstance(report, dict) or "points" not in report or "method" not in report:
        raise QMambaError(f"{str(path)!r} is not a report.json of `qmamba quantize` (no points / method)")
    return report


def run(args: argparse.Namespace) -> int:
    from qmamba.report.sqnr_plot import plot_point_sqnr

    out = plot_point_sqnr([_read_report(item) for item in args.reports], args.out)
    print(f"written: {out}")
    return 0
