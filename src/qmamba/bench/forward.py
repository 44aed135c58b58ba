"""Model forward benchmark: each scan backend, the no-scan floor, float and quantized.

    python -m qmamba.bench forward --model vim_tiny [--batch 8 --threads 2 --repeats 5
                                   --img-size 224 --device cpu|cuda
                                   --backends noop,compiled,reference
                                   --quantized qmamba --bits 4 4 --out FILE]

Prints one JSON object (and writes it to --out) with milliseconds per image and images
per second of the model's forward with each scan backend; `noop` replaces the scan by
zeros (`scan_backend("noop")`: the time of everything but the scan, the floor a faster
scan can approach). The backends take turns in every repeat (the reference is timed on
its own); `<backend>_over_floor` compares the fastest runs, `_over_floor_median` is the
median of the per-repeat ratios. Default backends: noop, compiled and reference on CPU; noop, triton
and reference on CUDA (times after torch.cuda.synchronize()). With `--quantized RECIPE`
the model is also quantized (calibrated on `--calib` random images: a timing run, not an
accuracy run) and its fake-quantized forward is timed with every backend but noop.
`--skip-reference` drops the slow reference loop.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def _time(fns: dict, repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each function after a warm-up, the functions taking turns in
    every repeat so that all see the same machine load (the scan benchmark's timer)."""
    from qmamba.bench.scan import _time_pair

    return _time_pair(fns, repeats, device)[0]


def _record(result: dict, key: str, times: list[float], batch: int) -> None:
    result[f"{key}_ms_per_image"] = 1000 * min(times) / batch
    result[f"{key}_median_ms_per_image"] = 1000 * statistics.median(times) / batch
    result[f"{key}_images_per_s"] = batch / statistics.median(times)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qmamba.bench forward", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vim_tiny")
    parser.add_argument("--img-size", type=int, default=None, help="default: the model's own")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated scan backends (default: noop, compiled, reference on "
                             "CPU; noop, triton, reference on CUDA)")
    parser.add_argument("--skip-reference", action="store_true", help="the reference scan is slow at 224")
    parser.add_argument("--quantized", default=None, help="also time this recipe's fake-quantized model")
    parser.add_argument("--bits", type=int, nargs=2, default=(4, 4), metavar=("W", "A"))
    parser.add_argument("--calib", type=int, default=8, help="random calibration images (timing only)")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the JSON here")
    return parser


def _backends(args: argparse.Namespace, device: torch.device) -> list[str]:
    from qmamba.bench.scan import parse_backends

    if args.backends is None:
        backends = ["noop", *parse_backends(None, device)[::-1]]  # noop, fast, reference
    else:
        backends = parse_backends(args.backends, device)
    return [b for b in backends if b != "reference"] if args.skip_reference else backends


def _forward(net, x: torch.Tensor, backend: str | None = None):
    """A callable that runs `net` on `x` without gradients (with this scan backend)."""
    from qmamba import ops

    def run():
        with torch.no_grad(), ops.scan_backend(backend or ops.get_scan_backend()):
            net(x)
    return run


def _time_float(result: dict, model, x, backends: list[str], args, device) -> list[str]:
    """Time the float forward with every backend; returns the fast ones (not noop / reference)."""
    # the reference loop is slow: timed on its own, the others take turns
    turns = [b for b in backends if b != "reference"]
    times = _time({b: _forward(model, x, b) for b in turns}, args.repeats, device)
    if "reference" in backends:
        times.update(_time({"reference": _forward(model, x, "reference")}, args.repeats, device))
    for backend in backends:
        _record(result, backend, times[backend], args.batch)
    fast = [b for b in backends if b not in ("noop", "reference")]
    if "noop" in backends:
        for b in fast:
            # by the fastest run of each, and by the median of the per-repeat ratios
            result[f"{b}_over_floor"] = result[f"{b}_ms_per_image"] / result["noop_ms_per_image"]
            result[f"{b}_over_floor_median"] = statistics.median(
                f / n for f, n in zip(times[b], times["noop"], strict=True))
    if "reference" in backends:
        for b in fast:
            result[f"reference_over_{b}"] = result["reference_ms_per_image"] / result[f"{b}_ms_per_image"]
    return fast


def _time_quantized(result: dict, model, x, backends: list[str], fast: list[str], args, device) -> None:
    """Calibrate `args.quantized` on random images (a timing run) and time its forward."""
    from qmamba.bench.calibration import random_image_batches
    from qmamba.bench.scan import _sync
    from qmamba.quant.config import QuantConfig
    from qmamba.quant.engine import quantize

    calib = [(b.to(device), None) for b in random_image_batches(x.shape[1:], args.calib, 8)]
    cfg = QuantConfig.from_recipe(args.quantized, *args.bits, calib_size=args.calib)
    t0 = time.perf_counter()
    qmodel = quantize(model, cfg, calib)
    _sync(device)
    result["quantize_seconds"] = time.perf_counter() - t0
    for backend in backends:
        if backend == "noop":  # the quantized scan has no no-op: it is the scan under test
            continue
        times = _time({"q": _forward(qmodel, x, backend)}, args.repeats, device)["q"]
        _record(result, f"quantized_{backend}", times, args.batch)
        if backend in fast:
            result[f"quantized_over_float_{backend}"] = (
                result[f"quantized_{backend}_ms_per_image"] / result[f"{backend}_ms_per_image"])
    if "reference" in backends:
        for b in fast:
            result[f"quantized_reference_over_{b}"] = (
                result["quantized_reference_ms_per_image"] / result[f"quantized_{b}_ms_per_image"])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    import qmamba
    from qmamba.bench.scan import bench_device, write_report
    from qmamba.models import contract
    from qmamba.portable import platform_record

    torch.set_num_threads(args.threads)
    device = bench_device(args.device)
    backends = _backends(args, device)
    torch.manual_seed(0)
    kwargs = {} if args.img_size is None else {"img_size": args.img_size}
    model = qmamba.create_model(args.model, **kwargs).eval().to(device)
    c, h, w = contract.data_config(model)["input_size"]
    if args.img_size is not None:
        h = w = args.img_size
    x = torch.randn(args.batch, c, h, w, device=device)
    result = {"config": {**vars(args), "bits": list(args.bits), "input": [args.batch, c, h, w],
                         "backends": backends, "device": str(device),
                         "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                         "torch": torch.__version__}}
    fast = _time_float(result, model, x, backends, args, device)
    if args.quantized:
        _time_quantized(result, model, x, backends, fast, args, device)
    result["platform"] = platform_record()
    write_report(result, args.out)
    return 0
