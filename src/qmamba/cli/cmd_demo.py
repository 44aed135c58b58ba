"""`qmamba demo`: the built-in models x recipes x bit settings, as a table and a plot."""
from __future__ import annotations

import argparse
from pathlib import Path

from qmamba.cli import add_portable_arg, command_line, param_flags
from qmamba.jobs.demo import (
    DEMO_CALIB_SIZE,
    DEMO_EVAL_LIMIT,
    DEMO_FILES,
    DEMO_SEARCH_SAMPLES,
    DEMO_SETTINGS,
    DEMO_THREADS,
)
from qmamba.quant.recipes import get_recipe, list_recipes


def _registered_settings() -> str:
    """'ptq4vit: W8A8 W4A8 W4A4, ...' for the recipes registered with demo settings."""
    parts = [f"{name}: {' '.join(get_recipe(name).demo_settings) or 'none (not in the demo)'}"
             for name in list_recipes() if get_recipe(name).demo_settings is not None]
    return "; ".join(parts) or "none"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="quantize the built-in models with every recipe and bit setting",
        description="Runs on the built-in Fashion-MNIST models and data (no download): FP once "
                    "per model, then every recipe x setting; writes OUT/results.json, "
                    "OUT/results.md and OUT/accuracy_vs_bits.png.",
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="output folder (default runs/demo)")
    p.add_argument("--models", nargs="+", metavar="NAME", help="built-in models (default: all)")
    p.add_argument("--recipes", nargs="+", default=list(list_recipes()), metavar="R",
                   help=f"default: {' '.join(list_recipes())}")
    p.add_argument("--settings", nargs="+", default=None, metavar="WxAy",
                   help=f"default: {' '.join(DEMO_SETTINGS)}, each recipe only at those it is "
                        f"registered with ({_registered_settings()}); given, every recipe runs at these")
    p.add_argument("--eval-limit", type=int, default=DEMO_EVAL_LIMIT, metavar="N",
                   help=f"evaluate on the first N images of --eval-part (default {DEMO_EVAL_LIMIT}; "
                        "0 = all of them)")
    p.add_argument("--eval-part", choices=("reporting", "tuning", "all"), default="reporting",
                   help="which built-in test images: the reporting half (default: the last 5,000, "
                        "on which no default was chosen), the tuning half or all 10,000")
    p.add_argument("--calib-size", type=int, default=DEMO_CALIB_SIZE, metavar="N",
                   help=f"calibration images from the built-in training bundle (default {DEMO_CALIB_SIZE})")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S",
                   help="calibration seeds; each recipe and setting runs once per seed and the table "
                        "shows mean ± standard deviation (default: 0)")
    p.add_argument("--seed", type=int, dest="seed_alias", metavar="S", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=256, metavar="B")
    p.add_argument("--device", default="cpu", metavar="DEV", help="cpu (default), cuda or auto")
    p.add_argument("--search-samples", type=int, default=DEMO_SEARCH_SAMPLES, metavar="N",
                   help="images of the block-output clipping search of the recipes that search "
                        f"(qmamba*, ptq4vit, qvlm; default {DEMO_SEARCH_SAMPLES}; the recipes' own default is 32)")
    p.add_argument("--threads", type=int, default=DEMO_THREADS, metavar="N",
                   help=f"CPU threads for PyTorch (default {DEMO_THREADS}: predictable on shared machines)")
    add_portable_arg(p, default=True)
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="worker processes, one model each (default: one per model, at most one per CPU "
                        "core; 1: everything in this process); the numbers are the same either way")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.set_defaults(func=run, param_flags=param_flags(p))


def run(args: argparse.Namespace) -> int:
    from qmamba.jobs import DemoJob, run_demo
    from qmamba.report.tables import demo_markdown

    if args.eval_limit is not None and args.eval_limit < 0:
        from qmamba.errors import ConfigError

        raise ConfigError(f"--eval-limit must be >= 0 (0 = all images of --eval-part), got {args.eval_limit}")
    given = args.settings is not None
    job = DemoJob(models=args.models, recipes=args.recipes, settings=args.settings if given else DEMO_SETTINGS,
                  recipe_settings=not given,
                  eval_limit=args.eval_limit or None, eval_part=args.eval_part, calib_size=args.calib_size,
                  seeds=[args.seed_alias] if args.seed_alias is not None else args.seeds,
                  batch_size=args.batch_size, device=args.device,
                  search_samples=args.search_samples, processes=args.processes)
    results = run_demo(job, args.out, args.progress, command_line(args)).report
    print(demo_markdown(results))
    out = Path(args.out)
    for name in DEMO_FILES:
        print(f"written: {out / name}")
    print(f"demo time: {results['seconds']:.0f} s")
    return 0
