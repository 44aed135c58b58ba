"""Integer backend accuracy: top-1 of the integer model against the simulated one.

    python -m qmamba.bench int_accuracy [--models vim_fmnist vmamba_fmnist]
                                        [--recipes qmamba minmax]
                                        [--settings W8A8 W4A8 W4A4]
                                        [--calib-size 64 --search-samples 8 --seed 0]
                                        [--eval-limit 0 --eval-part reporting --threads 1 --out FILE]
                                        [--no-float64-reference]

For every built-in model, recipe and setting: calibrate as the demo does (`--calib-size`
seeded built-in training images, `--search-samples` of them for the clipping search),
save the model and reload it twice, as the simulated model (`load_quantized`) and on the
integer backend (`to_integer`), and evaluate both on the built-in test images of
`--eval-part` (default: the reporting half, all 5,000 unless `--eval-limit N`, the first
N). Prints one line per run and writes the JSON: both top-1s, their difference in points
(the target: within 0.1), the images whose prediction differs, and the layers left in
float.

A third evaluation (unless `--no-float64-reference`) runs the simulated model with its
scan's arithmetic in float64 (`qmamba.ops.scan_precision`): the simulated scan computes
A_hat h + B_hat in float32 before rounding h to its code, so where that value lies within
float32's error of a half-integer its own rounding picks the code; the integer scan
computes it exactly. At 4-bit h such near-ties are frequent enough to move top-1, so the
row also gives the integer model against the float64 simulation and how far the float32
simulation itself lies from it.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

TARGET_POINTS = 0.1


def _loaders(model, name: str, calib_size: int, seed: int, limit: int | None, eval_part: str,
             batch: int = 250):
    """The demo's data (`qmamba.jobs.data`): `calib_size` seeded training images, and the
    test images of `eval_part` (the first `limit` of them with a limit)."""
    from qmamba.jobs.data import calibration_data, evaluation_data, materialize

    calib = calibration_data(model, name, None, calib_size, seed)
    test = evaluation_data(model, name, None, limit or None, eval_part=eval_part)
    return [x for x, _ in materialize(calib, 64)], materialize(test, batch)


@torch.no_grad()
def _predictions(model, loader) -> tuple[torch.Tensor, torch.Tensor]:
    preds, labels = [], []
    for x, y in loader:
        preds.append(model(x).argmax(1))
        labels.append(y)
    return torch.cat(preds), torch.cat(labels)


def run_one(name: str, recipe: str, setting: str, args) -> dict:
    from qmamba.integer import describe, to_integer
    from qmamba.jobs.calibration import calibration_batches
    from qmamba.models.builtin import load_builtin_model
    from qmamba.ops import scan_precision
    from qmamba.quant.config import QuantConfig
    from qmamba.quant.engine import quantize
    from qmamba.quant.serialize import load_quantized, save_quantized

    model = load_builtin_model(name)
    w, a = (int(v) for v in setting.upper().lstrip("W").split("A"))
    cfg = QuantConfig.from_recipe(recipe, w, a, calib_size=args.calib_size, seed=args.seed)
    if cfg.search.enabled:
        cfg = cfg.replace(**{"search.samples": args.search_samples})
    calib, test = _loaders(model, name, args.calib_size, args.seed, args.eval_limit, args.eval_part)
    with tempfile.TemporaryDirectory() as tmp:
        save_quantized(quantize(model, cfg, calibration_batches(calib, 64, cfg)), Path(tmp) / "model")
        simulated = load_quantized(Path(tmp) / "model")
        integer = to_integer(load_quantized(Path(tmp) / "model"))
    t0 = time.perf_counter()
    sim_pred, labels = _predictions(simulated, test)
    t1 = time.perf_counter()
    int_pred, _ = _predictions(integer, test)
    t2 = time.perf_counter()
    n = labels.numel()

    def top1(pred):
        return 100.0 * float((pred == labels).sum()) / n

    sim_top1, int_top1 = top1(sim_pred), top1(int_pred)
    floats = [line.strip() for line in describe(integer).splitlines()[1:] if line.strip().startswith("float:")]
    row = {"model": name, "recipe": recipe, "setting": setting, "images": n,
           "simulated_top1": round(sim_top1, 2), "integer_top1": round(int_top1, 2),
           "difference_points": round(int_top1 - sim_top1, 2),
           "within_target": abs(int_top1 - sim_top1) <= TARGET_POINTS + 1e-9,
           "predictions_differing": int((sim_pred != int_pred).sum()),
           "float_layers": floats, "simulated_seconds": round(t1 - t0, 1),
           "integer_seconds": round(t2 - t1, 1)}
    if args.float64_reference:
        # the same simulated model with its scan's arithmetic in float64: how far the
        # simulated model's own float32 rounding moves it (at 4-bit h it decides near-ties of
        # h codes, which the integer scan resolves exactly)
        with scan_precision(torch.float64):
            sim64_pred, _ = _predictions(simulated, test)
        sim64_top1 = top1(sim64_pred)
        row.update({"simulated_float64_scan_top1": round(sim64_top1, 2),
                    "simulated_float32_vs_float64_points": round(sim_top1 - sim64_top1, 2),
                    "simulated_float32_vs_float64_differing": int((sim_pred != sim64_pred).sum()),
                    "difference_vs_float64_points": round(int_top1 - sim64_top1, 2),
                    "within_target_vs_float64": abs(int_top1 - sim64_top1) <= TARGET_POINTS + 1e-9,
                    "predictions_differing_vs_float64": int((sim64_pred != int_pred).sum())})
    row["config"] = cfg.to_dict()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qmamba.bench int_accuracy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vim_fmnist", "vmamba_fmnist"])
    parser.add_argument("--recipes", nargs="+", default=["qmamba", "minmax"])
    parser.add_argument("--settings", nargs="+", default=["W8A8", "W4A8", "W4A4"])
    parser.add_argument("--calib-size", type=int, default=64)
    parser.add_argument("--search-samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-limit", type=int, default=0, help="the first N images of the part (0: all)")
    parser.add_argument("--eval-part", default="reporting", choices=("all", "tuning", "reporting"),
                        help="which built-in test images (default: the reporting half, qmamba.data.parts)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-float64-reference", dest="float64_reference", action="store_false",
                        help="skip the third evaluation: the simulated model with its scan in float64")
    parser.add_argument("--out", default=None, metavar="FILE")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        for recipe in args.recipes:
            for setting in args.settings:
                row = run_one(name, recipe, setting, args)
                rows.append(row)
                line = (f"{name:14s} {recipe:8s} {setting}: simulated {row['simulated_top1']:.2f} "
                        f"integer {row['integer_top1']:.2f} ({row['difference_points']:+.2f} points, "
                        f"{row['predictions_differing']} of {row['images']} predictions differ) "
                        f"{'PASS' if row['within_target'] else 'FAIL'}")
                if args.float64_reference:
                    line += (f"; simulated with a float64 scan {row['simulated_float64_scan_top1']:.2f} "
                             f"(integer {row['difference_vs_float64_points']:+.2f}, "
                             f"{row['predictions_differing_vs_float64']} differ; the float32 simulation "
                             f"{row['simulated_float32_vs_float64_points']:+.2f}, "
                             f"{row['simulated_float32_vs_float64_differing']} differ)")
                print(line, flush=True)
    report = {"command": "python -m qmamba.bench int_accuracy", "args": vars(args), "rows": rows,
              "all_within_target": all(r["within_target"] for r in rows), "torch": torch.__version__}
    if args.float64_reference:
        report["all_within_target_vs_float64"] = all(r["within_target_vs_float64"] for r in rows)
    if args.out:
        from qmamba.io_utils import atomic_write

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if report["all_within_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
