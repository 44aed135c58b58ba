"""The engine's targets, checked on the built-in models (issue "QMamba PTQ engine").

    python -m qmamba.bench targets [--accuracy-results runs/accuracy/accuracy.json] [--out FILE]

1. Accuracy, judged from the claims of the accuracy benchmark (`python -m qmamba.bench
   accuracy`: paired differences over calibration seeds and reporting images with a 95%
   bootstrap interval, `qmamba.report.claims`), never from one row against another.
   Without `--accuracy-results` a reduced benchmark runs here (the recipes and settings
   the checks need, seeds 0 1 2, all reporting images). Per model:
   - qmamba at W8A8 within 0.5 top-1 of FP: the interval of qmamba - FP lies above -0.5;
   - at W4A4 qmamba beats minmax and percentile, LtSQ helps (qmamba vs qmamba_no_ltsq)
     and TGQ helps (qmamba vs qmamba_no_tgq): each verdict is `wins` (interval above 0).
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
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from qmamba.quant.recipes import list_recipes
from qmamba.report.claims import find_claim

# the checks compare the method with its ablations, the simple baselines and FP
NEEDED_GROUPS = ("baseline", "method", "ablation")
NEEDED_SETTINGS = ("W8A8", "W4A4")
FP_MARGIN = 0.5  # top-1 points qmamba may lose at W8A8
# (label, A, B) of the claims that must be won at W4A4
WINS_AT_W4A4 = (("W4A4 qmamba beats minmax", "qmamba", "minmax"),
                ("W4A4 qmamba beats percentile", "qmamba", "percentile"),
                ("W4A4 LtSQ helps (qmamba vs qmamba_no_ltsq)", "qmamba", "qmamba_no_ltsq"),
                ("W4A4 TGQ helps (qmamba vs qmamba_no_tgq)", "qmamba", "qmamba_no_tgq"))


def needed_recipes() -> tuple[str, ...]:
    return tuple(r for g in NEEDED_GROUPS for r in list_recipes(g))


def _values(claim: Mapping) -> dict:
    return {"difference": claim["difference"], "low": claim["low"], "high": claim["high"],
            "verdict": claim["verdict"], "seeds": len(claim["seeds"]), "images": claim["num_images"]}


def accuracy_checks(claims: Sequence[Mapping]) -> list[dict]:
    """The accuracy targets, one dict per check, from judged claims (the accuracy
    benchmark's `claims`): each passes or fails on its interval alone."""
    checks = []
    for model in dict.fromkeys(c["model"] for c in claims):
        near_fp = find_claim(claims, model, "W8A8", "qmamba", "fp")
        if near_fp is not None:
            checks.append({"model": model, "check": f"qmamba W8A8 within {FP_MARGIN} of FP (interval of "
                                                    f"qmamba - FP above -{FP_MARGIN})",
                           "values": _values(near_fp), "pass": near_fp["low"] > -FP_MARGIN})
        for label, a, b in WINS_AT_W4A4:
            claim = find_claim(claims, model, "W4A4", a, b)
            if claim is not None:
                checks.append({"model": model, "check": label, "values": _values(claim),
                               "pass": claim["verdict"] == "wins"})
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


def _accuracy_claims(path: str | None, seeds: Sequence[int], eval_limit: int | None) -> tuple[list[dict], str]:
    """(claims, where they come from): the given results' claims, or a reduced accuracy
    benchmark run here."""
    if path:
        report = json.loads(Path(path).read_text())
        if "claims" not in report:
            raise SystemExit(f"error: {path} holds no `claims`: give the accuracy.json of "
                             "`python -m qmamba.bench accuracy`")
        return report["claims"], path
    from qmamba.bench.accuracy import AccuracyJob, run_accuracy
    from qmamba.report.progress import Progress

    job = AccuracyJob(recipes=needed_recipes(), settings=NEEDED_SETTINGS, seeds=seeds, eval_limit=eval_limit)
    with tempfile.TemporaryDirectory() as tmp:
        report = run_accuracy(job, tmp, Progress())
    return report["claims"], (f"reduced accuracy benchmark (recipes {' '.join(job.recipes)}, "
                              f"{' '.join(job.settings)}, seeds {' '.join(map(str, seeds))})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qmamba.bench targets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accuracy-results", default=None, metavar="FILE",
                        help="accuracy.json of `python -m qmamba.bench accuracy` (default: run a reduced one)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="S",
                        help="calibration seeds of the reduced benchmark (default 0 1 2)")
    parser.add_argument("--eval-limit", type=int, default=None, metavar="N",
                        help="reporting images of the reduced benchmark (default: all 5,000)")
    parser.add_argument("--grid-images", type=int, default=64, help="calibration images traced for the grid checks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the checks and the per-scan numbers as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from qmamba.models.builtin import BUILTIN_MODELS

    claims, source = _accuracy_claims(args.accuracy_results, args.seeds, args.eval_limit)
    result = {"accuracy_source": source, "accuracy": accuracy_checks(claims), "grids": []}
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

        with atomic_write(args.out) as f:
            f.write(json.dumps(result, indent=2))
        print(f"written: {args.out}")
    return 0
