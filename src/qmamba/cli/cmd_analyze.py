"""`qmamba analyze`: histograms of A_bar and of h_t per time step for one layer (the
paper's Figure 1), drawn by `qmamba.quant.diagnostics.plot_distributions`.

One PNG per scan of the layer (Vim: forward and backward; VMamba: the 4-direction scan),
for the float model and, with --quantized, for the quantized model too; plus
OUT/analysis.json with the numbers behind them (A_bar median, max |h_t| per step).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from qmamba.cli import add_model_args, add_portable_arg, add_run_args, command_line, param_flags
from qmamba.errors import ConfigError, QMambaError
from qmamba.io_utils import OutputSet
from qmamba.quant import diagnostics

ANALYZE_IMAGES = 32  # training images traced through the scan


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze", help="plot A_bar and h_t distributions of one layer to PNG",
        description="Trace training images through one layer's scans and draw histograms of "
                    "A_bar and of the hidden state h_t per time step (float model, and a saved "
                    "quantized model with --quantized).",
    )
    add_model_args(p)
    p.add_argument("--quantized", metavar="DIR", help="a quantized model saved by `qmamba quantize` (OUT/model)")
    p.add_argument("--data", metavar="DIR", help="ImageNet-layout folder (images from DIR/train)")
    p.add_argument("--layer", type=int, default=0, metavar="I", help="block index (default 0)")
    p.add_argument("--direction", type=int, metavar="D", help="only this scan of the layer (default: all)")
    p.add_argument("--images", type=int, default=ANALYZE_IMAGES, metavar="N",
                   help=f"training images to trace (default {ANALYZE_IMAGES})")
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/analyze-<model>-layer<I>)")
    add_run_args(p, batch_size=32)
    add_portable_arg(p, default=False)
    p.set_defaults(func=run, param_flags=param_flags(p, calib_size="images"))


def _load_models(args: argparse.Namespace):
    """(the float model as loaded, [(tag, model)]: the float one, and the --quantized one)."""
    from qmamba.jobs.models import load_model
    from qmamba.quant.serialize import load_quantized

    with args.progress.stage(f"loading {args.model}"):
        lm = load_model(args.model, args.checkpoint, args.use_ema, args.allow_unsafe_pickle)
        models = [("fp", lm.model)]
        if args.quantized:
            qmodel = load_quantized(args.quantized)
            if qmodel.qmamba_spec["name"] != lm.name:
                raise ConfigError(f"{args.quantized} holds a quantized {qmodel.qmamba_spec['name']}, not {lm.name}")
            models.append((qmodel.qmamba_config.setting, qmodel))
    return lm, models


def _directions(args: argparse.Namespace, lm) -> list[int]:
    """The scans of --layer to trace (all, or --direction), checked against the model."""
    blocks = list(lm.model.quant_blocks()) if hasattr(lm.model, "quant_blocks") else []
    if not 0 <= args.layer < len(blocks):
        raise ConfigError(f"--layer {args.layer} is out of range: {lm.name} has blocks 0..{len(blocks) - 1}")
    scans = len(diagnostics.scan_points_of_block(lm.model, args.layer))
    if scans == 0:
        raise ConfigError(f"layer {args.layer} of {lm.name} has no selective scan")
    if args.direction is None:
        return list(range(scans))
    if not 0 <= args.direction < scans:
        raise ConfigError(f"--direction {args.direction} is out of range: layer {args.layer} has scans 0..{scans - 1}")
    return [args.direction]


def run(args: argparse.Namespace) -> int:
    import torch

    from qmamba.jobs.data import calibration_data, materialize
    from qmamba.jobs.devices import resolve_device
    from qmamba.portable import platform_record
    from qmamba.quant.config import check_seed
    from qmamba.report.writers import dumps

    if args.images < 1:
        raise ConfigError(f"--images must be at least 1, got {args.images}")
    check_seed(args.seed, "--seed")
    device = resolve_device(args.device)
    out = Path(args.out) if args.out else Path("runs") / f"analyze-{args.model}-layer{args.layer}"
    if out.exists() and not out.is_dir():
        raise QMambaError(f"output path {str(out)!r} exists and is not a folder")
    lm, models = _load_models(args)
    directions = _directions(args, lm)
    with args.progress.stage("reading the images"):
        calib = calibration_data(lm.model, lm.name, args.data, args.images, args.seed)
        images = torch.cat([x for x, _ in materialize(calib, args.batch_size)])

    summary = {"model": lm.name, "weights": lm.weights, "quantized": args.quantized, "layer": args.layer,
               "images": int(images.shape[0]), "image_source": calib.source, "seed": args.seed,
               "plots": [], "command": command_line(args)}
    # every PNG and analysis.json appear together at the end (analysis.json last)
    with OutputSet(args.progress.outputs_written) as outputs:
        with args.progress.stage(f"tracing layer {args.layer}", total=len(models) * len(directions),
                                 unit="plot") as st:
            for tag, model in models:
                model = model.to(device).eval()
                for d in directions:
                    name = f"layer{args.layer}_scan{d}_{tag}.png"
                    with torch.no_grad():
                        stats = diagnostics.plot_distributions(
                            model, images, block_index=args.layer, out_png=outputs.file(out / name),
                            direction=d, title=f"{lm.name} {tag}: layer {args.layer}, scan {d}")
                    stats = dict(stats or {})
                    stats.update(png=str(out / name), model=tag, direction=d)
                    summary["plots"].append(stats)
                    st.update(1)
        summary["platform"] = platform_record()
        outputs.file(out / "analysis.json").write_text(dumps(summary), encoding="utf-8")
        outputs.commit()
    print(f"{lm.name} layer {args.layer}: {summary['images']} training images traced")
    for entry in summary["plots"]:
        median = entry.get("a_bar_median")
        extra = f" (A_bar median {median:.3f})" if isinstance(median, float) else ""
        print(f"written: {entry['png']}{extra}")
    print(f"written: {out / 'analysis.json'}")
    return 0
