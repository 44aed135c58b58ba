"""`qmamba eval`: accuracy of a float model or of a saved quantized model."""
from __future__ import annotations

import argparse

from qmamba.cli import add_data_args, add_portable_arg, add_run_args, command_line, param_flags
from qmamba.loading import BACKENDS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a float checkpoint or a saved quantized model",
        description="Top-1/top-5 accuracy of a built-in model, a registered model with "
                    "--checkpoint, or a quantized model saved by `qmamba quantize` (--quantized OUT/model).",
    )
    p.add_argument("--model", metavar="NAME", help="model name (optional with --quantized)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", metavar="PATH", help="float weights file")
    src.add_argument("--quantized", metavar="DIR", help="a folder written by save_quantized (OUT/model)")
    p.add_argument("--backend", choices=BACKENDS, default="simulated",
                   help="with --quantized: run the model with fake quantization in float ('simulated', "
                        "default, any device) or with integer arithmetic on the CPU ('int': int8 GEMMs "
                        "on the weight codes, the integer scan; prints which layers stay float and why)")
    p.add_argument("--use-ema", action="store_true", help="load the checkpoint's 'model_ema' weights")
    p.add_argument("--allow-unsafe-pickle", action="store_true",
                   help="allow checkpoints that need full unpickling (trusted files only)")
    add_data_args(p, calibration=False)
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the --eval-limit subset of a folder")
    p.add_argument("--out", metavar="FILE", help="also write the result as JSON")
    add_run_args(p)
    add_portable_arg(p, default=False)
    p.set_defaults(func=run, distributed=True, param_flags=param_flags(p))  # torchrun: see qmamba.dist


def run(args: argparse.Namespace) -> int:
    from qmamba import dist
    from qmamba.jobs import EvalJob, run_eval
    from qmamba.report.summary import eval_summary

    job = EvalJob(
        model=args.model, checkpoint=args.checkpoint, quantized=args.quantized, backend=args.backend,
        use_ema=args.use_ema, allow_unsafe_pickle=args.allow_unsafe_pickle, data=args.data,
        batch_size=args.batch_size, device=args.device, eval_limit=args.eval_limit, workers=args.workers, seed=args.seed,
        skip_corrupt_images=args.skip_corrupt_images, labels=args.labels, class_map=args.class_map,
        eval_part=args.eval_part,
    )
    result = run_eval(job, args.out, args.progress, command_line(args))
    if not dist.is_main():  # torchrun: rank 0 reports
        return 0
    print(eval_summary(result.report))
    if result.report.get("backend") == "int":
        from qmamba.integer import describe

        print(describe(result.model))
    if args.out:
        print(f"written: {args.out}")
    return 0
