"""`qmamba quantize`: calibrate, evaluate FP and quantized, save the model and a report."""
from __future__ import annotations

import argparse
from pathlib import Path

from qmamba.cli import (
    add_data_args,
    add_model_args,
    add_portable_arg,
    add_run_args,
    command_line,
    param_flags,
)
from qmamba.quant.recipes import list_recipes


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quantize", help="quantize a model and report FP / quantized accuracy",
        description="Calibrate a model with a PTQ recipe on training images, evaluate the "
                    "full-precision and the quantized model on the evaluation images, and write "
                    "OUT/model/ (the quantized model) and OUT/report.json.",
    )
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--method", required=True, metavar="M", help=f"recipe: {', '.join(list_recipes())}")
    p.add_argument("--w-bits", metavar="W", help="weight bits, an integer in [2, 16]")
    p.add_argument("--a-bits", metavar="A", help="activation bits, an integer in [2, 16]")
    p.add_argument("--calib-size", type=int, metavar="N",
                   help="calibration images (default: the config's, 256)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="calibration subset seed (default 0)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<model>-<method>-W<w>A<a>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one config field of the recipe (repeatable; JSON values), e.g. "
                        "--set tune.jlss=true (PTQ4VM's block-wise tuning), --set ssm.h_groups=4, "
                        "--set 'role_bits={\"ssm.h\": 8}'; report.json records the result")
    add_run_args(p)
    add_portable_arg(p, default=False)
    p.set_defaults(func=run, distributed=True, param_flags=param_flags(p))  # torchrun: see qmamba.dist


def run(args: argparse.Namespace) -> int:
    from qmamba import dist
    from qmamba.jobs import QuantizeJob, run_quantize
    from qmamba.report.summary import quantize_summary

    job = QuantizeJob(
        model=args.model, method=args.method, w_bits=args.w_bits, a_bits=args.a_bits,
        checkpoint=args.checkpoint, use_ema=args.use_ema, allow_unsafe_pickle=args.allow_unsafe_pickle,
        data=args.data, calib_size=args.calib_size, seed=args.seed, batch_size=args.batch_size,
        device=args.device, eval_limit=args.eval_limit, workers=args.workers,
        overrides=tuple(args.overrides),
        skip_corrupt_images=args.skip_corrupt_images, labels=args.labels, class_map=args.class_map,
        eval_part=args.eval_part,
    )
    config = job.config()  # validate bits / recipe before choosing the folder name
    out = Path(args.out) if args.out else Path("runs") / f"{args.model}-{config.recipe}-{config.setting}"
    result = run_quantize(job, out, args.progress, command_line(args))
    if not dist.is_main():  # torchrun: rank 0 reports
        return 0
    print(quantize_summary(result.report))
    print(f"  report      : {out / 'report.json'}")
    return 0
