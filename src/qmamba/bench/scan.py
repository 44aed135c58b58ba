"""Selective scan benchmark: reference vs the fast backends, float and quantized forward.

    python -m qmamba.bench scan [--batch 8 --dim 384 --length 197 --state 16
                                 --threads 2 --repeats 5 --device cpu|cuda
                                 --backends reference,compiled --out FILE]

Prints one JSON object (and writes it to --out): milliseconds per image (per batch
element) of each backend, the speedup of each over the reference, and the largest output
difference from the reference. Default backends: reference and compiled on CPU,
reference and triton on CUDA (GPU times are taken after torch.cuda.synchronize()).
Inputs follow Vim-T's scan (d=384, l=197 tokens, n=16): S4D-real A = -(1..n), delta from
softplus(dt + dt_bias) with dt in [1e-3, 0.1], D and the z gate. The quantized scan uses
QMamba's quantizers: log1m for A_bar, log_signed for B_bar u (8 bits, per tensor) and a
uniform 8-bit h with 4 time groups (TGQ) per channel, calibrated on the same inputs.
The backends' runs are interleaved so that all see the same machine load.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch


def _inputs(batch: int, dim: int, length: int, state: int, seed: int = 0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(dim, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    delta_bias = dt + torch.log(-torch.expm1(-dt))  # inverse softplus, as Mamba's dt_proj init
    x = dict(
        u=torch.randn(batch, dim, length, generator=g),
        delta=0.1 * torch.randn(batch, dim, length, generator=g),
        A=-torch.arange(1, state + 1, dtype=torch.float32).repeat(dim, 1),
        B=torch.randn(batch, state, length, generator=g),
        C=torch.randn(batch, state, length, generator=g),
        D=torch.ones(dim),
        z=torch.randn(batch, dim, length, generator=g),
        delta_bias=delta_bias,
    )
    return {k: v.to(device) for k, v in x.items()}


def _quantizers(stats: dict, length: int, groups: int = 4):
    from qmamba.ops import ScanPointQuant

    one = torch.ones(1, 1, 1)
    a_quant = ScanPointQuant(
        "log1m", scale=one * float((1 - stats["A_min"]).max()), zero_point=None, qmin=0, qmax=255
    )
    b_abs = torch.maximum(stats["B_min"].abs(), stats["B_max"].abs())
    b_quant = ScanPointQuant(
        "log_signed", scale=one * float(b_abs.max()), zero_point=None, qmin=0, qmax=127
    )
    group_index = torch.arange(length) * groups // length
    h_lo = torch.stack([stats["h_min"][group_index == i].amin((0, 2)) for i in range(groups)])
    h_hi = torch.stack([stats["h_max"][group_index == i].amax((0, 2)) for i in range(groups)])
    h_lo, h_hi = h_lo.clamp(max=0), h_hi.clamp(min=0)
    scale = ((h_hi - h_lo) / 255).clamp(min=1e-8)[..., None]  # (G, d, 1)
    zero_point = torch.round(-h_lo[..., None] / scale)
    h_quant = ScanPointQuant(
        "uniform", scale=scale, zero_point=zero_point, qmin=0, qmax=255, group_index=group_index
    )
    return a_quant, b_quant, h_quant


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_pair(fns: dict, repeats: int, device: torch.device | None = None) -> dict:
    """(seconds of every run of each function, each function's warm-up result): the
    functions take turns in every repeat, after one warm-up each (the warm-up also
    compiles: the C++ extension or the Triton kernels)."""
    results = {name: fn() for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times, results


def _summary(times: dict, results: dict, batch: int) -> dict:
    """Per backend: ms per image (median, min), images/s, speedup over the reference and
    the largest difference from it; `speedup` / `max_abs_diff`: of the first fast backend."""
    out = {}
    for name, ts in times.items():
        out[f"{name}_ms_per_image"] = round(statistics.median(ts) * 1000 / batch, 4)
        out[f"{name}_min_ms_per_image"] = round(min(ts) * 1000 / batch, 4)
        out[f"{name}_images_per_s"] = round(batch / statistics.median(ts), 2)
    fast = [name for name in times if name != "reference"]
    if "reference" in times:
        ref = results["reference"]
        for name in fast:
            out[f"{name}_speedup"] = round(statistics.median(times["reference"]) / statistics.median(times[name]), 2)
            out[f"{name}_max_abs_diff"] = float((ref - results[name]).abs().max())
        if fast:
            out["speedup"] = out[f"{fast[0]}_speedup"]
            out["max_abs_diff"] = out[f"{fast[0]}_max_abs_diff"]
    return out


def parse_backends(text: str | None, device: torch.device) -> list[str]:
    """The --backends list (default: reference + the device's fast kernel)."""
    from qmamba.ops.backend import BACKENDS

    if text is None:
        return ["reference", "triton" if device.type == "cuda" else "compiled"]
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        if name not in BACKENDS or name == "auto":
            raise SystemExit(f"unknown scan backend {name!r}: choose from "
                             f"{', '.join(b for b in BACKENDS if b != 'auto')}")
    return list(dict.fromkeys(names))


def bench_device(name: str) -> torch.device:
    """--device: cpu or cuda[:N], with the CLI's message when CUDA is missing."""
    from qmamba.errors import QMambaError
    from qmamba.jobs.devices import resolve_device

    try:
        return resolve_device(name)
    except QMambaError as e:
        raise SystemExit(f"error: {e.message_for({'device': '--device'})}") from None


def write_report(report: dict, path: str | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if path:
        from pathlib import Path

        from qmamba.io_utils import atomic_write

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as f:
            f.write(text + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qmamba.bench scan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--length", type=int, default=197)
    parser.add_argument("--state", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated scan backends (default: reference plus compiled "
                             "on CPU, triton on CUDA)")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the JSON here")
    return parser


@torch.no_grad()
def _time_scans(x: dict, backends: list[str], args, device) -> dict:
    """The float and the quantized scan with every backend, timed in turns."""
    from qmamba import ops

    def float_scan(name):
        def run():
            with ops.scan_backend(name):
                return ops.selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"],
                                          z=x["z"], delta_bias=x["delta_bias"],
                                          delta_softplus=True)
        return run

    times, results = _time_pair({name: float_scan(name) for name in backends}, args.repeats, device)
    report = {"float_forward": _summary(times, results, args.batch)}
    delta = torch.nn.functional.softplus(x["delta"] + x["delta_bias"][:, None])
    _, stats = ops.quantized_scan(x["u"], delta, x["A"], x["B"], x["C"], collect_stats=True)
    a_q, b_q, h_q = _quantizers({k: v.cpu() for k, v in stats.items()}, args.length)

    def quant_scan(name):
        def run():
            with ops.scan_backend(name):
                return ops.quantized_scan(x["u"], delta, x["A"], x["B"], x["C"],
                                          a_quant=a_q, b_quant=b_q, h_quant=h_q)[0]
        return run

    times, results = _time_pair({name: quant_scan(name) for name in backends if name != "noop"},
                                args.repeats, device)
    report["quantized_forward"] = _summary(times, results, args.batch)
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    from qmamba import ops
    from qmamba.ops import backend
    from qmamba.portable import platform_record

    torch.set_num_threads(args.threads)
    device = bench_device(args.device)
    backends = parse_backends(args.backends, device)
    if "compiled" in backends and not ops.compiled_available():
        print(json.dumps({"error": f"compiled scan unavailable: {backend.build_error()}"}))
        return 1
    x = _inputs(args.batch, args.dim, args.length, args.state, device=device)
    report = {
        "config": {
            "batch": args.batch, "dim": args.dim, "length": args.length, "state": args.state,
            "threads": torch.get_num_threads(), "repeats": args.repeats, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "backends": backends, "torch": torch.__version__,
        }
    }
    report.update(_time_scans(x, backends, args, device))
    report["platform"] = platform_record()
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
