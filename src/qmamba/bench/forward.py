"""Model forward benchmark: reference scan, compiled scan, and the no-scan floor.

    python -m qmamba.bench forward --model vim_tiny [--batch 8 --threads 2 --repeats 3
                                   --img-size 224 --quantized qmamba --bits 4 4]

Prints one JSON object with milliseconds per image for the model's forward with the
reference scan, the compiled scan, and the scan replaced by a no-op (`scan_backend
("noop")`: the time of everything but the scan, the floor a faster scan can approach).
With `--quantized RECIPE`, the model is also quantized (calibrated on `--calib` random
images: a timing run, not an accuracy run) and its fake-quantized forward is timed with
the compiled backend, so the cost of the quantized scan and quantizers can be compared
with the float forward measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up (and the compiled extension's build on first use)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qmamba.bench forward", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vim_tiny")
    parser.add_argument("--img-size", type=int, default=None, help="default: the model's own")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-reference", action="store_true", help="the reference scan is slow at 224")
    parser.add_argument("--quantized", default=None, help="also time this recipe's fake-quantized model")
    parser.add_argument("--bits", type=int, nargs=2, default=(4, 4), metavar=("W", "A"))
    parser.add_argument("--calib", type=int, default=8, help="random calibration images (timing only)")
    args = parser.parse_args(argv)

    import qmamba
    from qmamba import ops

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kwargs = {} if args.img_size is None else {"img_size": args.img_size}
    model = qmamba.create_model(args.model, **kwargs).eval()
    c, h, w = model.default_cfg["input_size"]
    x = torch.randn(args.batch, c, h, w)

    def run():
        with torch.no_grad():
            model(x)

    result = {"config": {**vars(args), "bits": list(args.bits), "input": [args.batch, c, h, w],
                         "torch": torch.__version__}}
    backends = ["noop", "compiled"] + ([] if args.skip_reference else ["reference"])
    for backend in backends:
        with ops.scan_backend(backend):
            times = _time(run, args.repeats)
        result[f"{backend}_ms_per_image"] = 1000 * min(times) / args.batch
        result[f"{backend}_median_ms_per_image"] = 1000 * statistics.median(times) / args.batch
    result["compiled_over_floor"] = result["compiled_ms_per_image"] / result["noop_ms_per_image"]
    if "reference_ms_per_image" in result:
        result["reference_over_compiled"] = result["reference_ms_per_image"] / result["compiled_ms_per_image"]

    if args.quantized:
        from qmamba.quant.calibrate import quantize
        from qmamba.quant.config import QuantConfig

        calib = [(torch.randn(min(8, args.calib - i), c, h, w), None) for i in range(0, args.calib, 8)]
        cfg = QuantConfig.from_recipe(args.quantized, *args.bits, calib_size=args.calib)
        t0 = time.perf_counter()
        qmodel = quantize(model, cfg, calib)
        result["quantize_seconds"] = time.perf_counter() - t0

        def run_q():
            with torch.no_grad():
                qmodel(x)

        with ops.scan_backend("compiled"):
            times = _time(run_q, args.repeats)
        result["quantized_compiled_ms_per_image"] = 1000 * min(times) / args.batch
        result["quantized_over_float"] = result["quantized_compiled_ms_per_image"] / result["compiled_ms_per_image"]
    print(json.dumps(result, indent=2))
    return 0
