"""The engine's targets, checked on the built-in models (issue "QMamba PTQ engine").

    python -m qmamba.bench targets [--demo-results runs/demo/results.json] [--out FILE]

1. Accuracy, from a demo's results.json (run `qmamba demo` first; without
   `--demo-results` a reduced demo runs here: the recipes and settings the checks need):
   qmamba at W8A8 within 0.5 top-1 of FP; at W4A4 qmamba above minmax and percentile, and
   each ablation (qmamba_no_ltsq, qmamba_no_tgq) below qmamba.
2. Grids at 4 bits on real calibration activations of the float built-in models, every
   block and scan direction (`qmamba.quant.diagnostics.compare_scan_grids`): TGQ with
   G = 8 against one range (per tensor) by the SQNR of h_t, and LtSQ against uniform by
   the relative error of 1 - A_bar where A_bar is above its median.

Prints one line per check (PASS / FAIL with the numbers) and writes everything as JSON
to `--out`. Speed targets are separate: `python -m qmamba.bench forward --model vim_tiny
--quantized qmamba --calib 256` times calibration and the quantized/float forward ratio.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from qmamba.quant.recipes import list_recipes

# the checks compare the method with its ablations and the simple baselines
NEEDED_GROUPS = ("float", "baseline", "method", "ablation")
NEEDED_SETTINGS = ("W8A8", "W4A4")


def needed_recipes() -> tuple[str, ...]:
    return tuple(r for g in NEEDED_GROUPS for r in list_recipes(g))


def _top1(rows: list[dict], model: str, recipe: str, setting: str | None) -> float | None:
    for r in rows:
        if r["model"] == model and r["recipe"] == recipe and (setting is None or r.get("setting") == setting):
            return float(r["top1"])
    return None


def accuracy_checks(rows: list[dict]) -> list[dict]:
    """The accuracy targets, one dict per check, from demo result rows."""
    checks = []
    for model in sorted({r["model"] for r in rows}):
        fp = _top1(rows, model, "fp", None)
        q8 = _top1(rows, model, "qmamba", "W8A8")
        q4 = _top1(rows, model, "qmamba", "W4A4")
        if fp is not None and q8 is not None:
            checks.append({"model": model, "check": "qmamba W8A8 within 0.5 of FP",
                           "values": {"fp": fp, "qmamba": q8}, "pass": fp - q8 <= 0.5})
        for other, relation in (("minmax", "above"), ("percentile", "above"),
                                ("qmamba_no_ltsq", "below"), ("qmamba_no_tgq", "below")):
            v = _top1(rows, model, other, "W4A4")
            if q4 is None or v is None:
                continue
            label = f"W4A4 qmamba above {other}" if relation == "above" else f"W4A4 {other} below qmamba"
            checks.append({"model": model, "check": label, "values": {"qmamba": q4, other: v}, "pass": q4 > v})
    return checks


@torch.no_grad()
def grid_checks(model_name: str, images: torch.Tensor, bits: int = 4, groups: int = 8) -> dict:
    """compare_scan_grids on every block and scan direction of a float built-in model."""
    from qmamba.models import contract
    from qmamba.models.builtin import load_builtin_model
    from qmamba.quant.diagnostics import compare_scan_grids, scan_points_of_block, trace_scan

    model = load_builtin_model(model_name)
    per_scan = []
    for block in range(len(contract.quant_blocks(model))):
        for direction in range(len(scan_points_of_block(model, block))):
            trace = trace_scan(model, images, block, direction)
            per_scan.append({"block": block, "direction": direction,
                             **compare_scan_grids(trace, bits=bits, groups=groups)})
    tgq_key = f"tgq_{groups}_sqnr_db"
    tgq_wins = sum(s["h"][tgq_key] > s["h"]["per_tensor_sqnr_db"] for s in per_scan)
    ltsq_wins = sum(s["A_bar"]["ltsq_rel_err_1m_above_median"] < s["A_bar"]["uniform_rel_err_1m_above_median"]
                    for s in per_scan)
    n = len(per_scan)
    return {
        "model": model_name, "bits": bits, "groups": groups, "scans": per_scan,
        "checks": [
            {"model": model_name, "check": f"TGQ G={groups} SQNR of h above per tensor, every scan",
             "values": {"scans_won": tgq_wins, "scans": n,
                        "mean_tgq_db": _mean([s["h"][tgq_key] for s in per_scan]),
                        "mean_per_tensor_db": _mean([s["h"]["per_tensor_sqnr_db"] for s in per_scan])},
             "pass": tgq_wins == n},
            {"model": model_name, "check": "LtSQ rel. error of 1-A_bar above median below uniform, every scan",
             "values": {"scans_won": ltsq_wins, "scans": n,
                        "mean_ltsq": _mean([s["A_bar"]["ltsq_rel_err_1m_above_median"] for s in per_scan]),
                        "mean_uniform": _mean([s["A_bar"]["uniform_rel_err_1m_above_median"] for s in per_scan])},
             "pass": ltsq_wins == n},
        ],
    }


def _mean(values: list[float]) -> float:
    return float(sum(values) / max(len(values), 1))


def _calibration_images(n: int) -> torch.Tensor:
    from qmamba.data import BuiltinFashionMNIST
    from qmamba.data.transforms import eval_transform
    from qmamba.models.builtin import BUILTIN_MODELS, create_model

    ds = BuiltinFashionMNIST("calib", transform=eval_transform(create_model(BUILTIN_MODELS[0])))
    return torch.stack([ds[i][0] for i in range(min(n, len(ds)))])  # (n, 1, 28, 28)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qmamba.bench targets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-results", default=None, help="a demo's results.json (default: run a reduced demo)")
    parser.add_argument("--grid-images", type=int, default=64, help="calibration images traced for the grid checks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the checks and the per-scan numbers as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from qmamba.models.builtin import BUILTIN_MODELS

    if args.demo_results:
        rows = json.loads(Path(args.demo_results).read_text())["rows"]
        source = args.demo_results
    else:
        from qmamba.jobs import DemoJob, run_demo

        with tempfile.TemporaryDirectory() as tmp:
            rows = run_demo(DemoJob(recipes=needed_recipes(), settings=NEEDED_SETTINGS), tmp).report["rows"]
        source = "reduced demo (defaults of `qmamba demo`, recipes " + " ".join(needed_recipes()) + ", W8A8 W4A4)"
    result = {"accuracy_source": source, "accuracy": accuracy_checks(rows), "grids": []}
    images = _calibration_images(args.grid_images)
    for name in BUILTIN_MODELS:
        result["grids"].append(grid_checks(name, images))
    checks = result["accuracy"] + [c for g in result["grids"] for c in g["checks"]]
    for c in checks:
        values = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in c["values"].items())
        print(f"{'PASS' if c['pass'] else 'FAIL'}  {c['model']:<14} {c['check']}: {values}")
    if args.out:
        from qmamba.io_utils import atomic_write
        from qmamba.portable import platform_record

        result["platform"] = platform_record()

        atomic_write(args.out, json.dumps(result, indent=2))
        print(f"written: {args.out}")
    return 0
