"""Calibration time of recipes on one model, in one run (issue 16's time budget).

    python -m qmamba.bench calibration --model vim_tiny [--recipes qmamba qmamba_plus]
                                       [--bits 4 4] [--calib 256] [--threads 2] [--out FILE]

Each recipe (a name or a variant RECIPE[KEY=VALUE;...], as `bench accuracy` takes them)
calibrates the same model on the same `--calib` images (seeded random images at the
model's input size, batches of `--batch`: a timing run, not an accuracy run); the recipes
take turns in `--repeats` rounds so that they see the same machine load. The JSON has the
wall-clock and the CPU seconds (`time.process_time`: the process's own, all its threads;
at one thread, steadier than the wall clock on a shared machine) of every round per
recipe, their medians, and `<recipe>_over_<first recipe>` / `<recipe>_cpu_over_<first
recipe>`: the median of the per-round ratios against the first recipe. `stage_cpu_seconds`:
per recipe and round, the CPU seconds of the block search, of the block tuning and of
the rest (observing, building), as the calibration recorded them (`qmamba_info`).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qmamba.bench calibration", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vim_tiny")
    parser.add_argument("--recipes", nargs="+", default=["qmamba", "qmamba_plus"],
                        help="recipes or variants RECIPE[KEY=VALUE;...]; ratios are against the first")
    parser.add_argument("--bits", type=int, nargs=2, default=(4, 4), metavar=("W", "A"))
    parser.add_argument("--calib", type=int, default=256, help="calibration images (random, seeded)")
    parser.add_argument("--batch", type=int, default=32, help="calibration batch size")
    parser.add_argument("--search-samples", type=int, default=None,
                        help="images of the block search (default: each recipe's own)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="rounds; the recipes take turns in each")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the JSON here")
    return parser


def recipe_config(name: str, bits, calib: int, search_samples: int | None):
    """The QuantConfig of a recipe or recipe variant at these bits and calibration size,
    built as the demo and the accuracy benchmark build theirs (`DemoJob.config`: the
    search images replaced when the recipe searches; a variant's overrides last)."""
    from qmamba.bench.accuracy_runs import split_variant
    from qmamba.jobs.demo import DemoJob

    recipe, overrides = split_variant(name)
    cfg = DemoJob(calib_size=calib, search_samples=search_samples).config(recipe, *bits)
    return cfg.replace(**overrides) if overrides else cfg


def random_image_batches(shape, count: int, batch: int) -> list[torch.Tensor]:
    """`count` random images of `shape` (C, H, W), seeded (1), in batches of `batch`: the
    calibration images of the timing benchmarks."""
    g = torch.Generator().manual_seed(1)
    return [torch.randn(min(batch, count - i), *shape, generator=g) for i in range(0, count, batch)]


def calibration_images(model, calib: int, batch: int) -> list[torch.Tensor]:
    """`calib` seeded random images at the model's input size, in batches of `batch`."""
    from qmamba.models import contract

    return random_image_batches(contract.data_config(model)["input_size"], calib, batch)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    import qmamba
    from qmamba.bench.scan import write_report
    from qmamba.portable import platform_record
    from qmamba.quant.engine import quantize

    torch.set_num_threads(args.threads)
    configs = {name: recipe_config(name, args.bits, args.calib, args.search_samples) for name in args.recipes}
    torch.manual_seed(0)
    model = qmamba.create_model(args.model).eval()
    images = calibration_images(model, args.calib, args.batch)
    seconds: dict[str, list[float]] = {name: [] for name in args.recipes}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in args.recipes}
    stages: dict[str, list[dict]] = {name: [] for name in args.recipes}
    for _ in range(args.repeats):
        for name, cfg in configs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            qmodel = quantize(model, cfg, [(x, None) for x in images])
            seconds[name].append(time.perf_counter() - t0)
            cpu_seconds[name].append(time.process_time() - c0)
            stages[name].append(qmodel.qmamba_info["stage_cpu_seconds"])
    first = args.recipes[0]
    result = {"config": {**vars(args), "bits": list(args.bits), "torch": torch.__version__,
                         "configs": {name: cfg.to_dict() for name, cfg in configs.items()}},
              "seconds": seconds, "cpu_seconds": cpu_seconds, "stage_cpu_seconds": stages}
    for name in args.recipes:
        result[f"{name}_median_seconds"] = statistics.median(seconds[name])
        result[f"{name}_median_cpu_seconds"] = statistics.median(cpu_seconds[name])
        if name != first:
            result[f"{name}_over_{first}"] = statistics.median(
                s / f for s, f in zip(seconds[name], seconds[first], strict=True))
            result[f"{name}_cpu_over_{first}"] = statistics.median(
                s / f for s, f in zip(cpu_seconds[name], cpu_seconds[first], strict=True))
    result["platform"] = platform_record()
    write_report(result, args.out)
    return 0
