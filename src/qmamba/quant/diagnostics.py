"""Diagnostics: how much each quantization point loses, and what the SSM's tensors look like.

- `point_sqnr(qmodel, images)`: SQNR (dB) of every quantized point on real inputs, each
  point measured on the inputs it sees inside the quantized model (so upstream error is
  included in what it quantizes, as at inference).
- `trace_scan(model, images, point)`: the hidden states h_t of one scan (before and after
  its quantizer) and A_bar samples, from the reference recurrence.
- `plot_distributions(...)`: histograms of A_bar and of h_t per time step for one layer
  (the paper's Figure 1) to PNG.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn as nn

from qmamba.models import contract
from qmamba.nn.point import QuantPoint, iter_points
from qmamba.ops.scan_quant_spec import apply_scan_quant


class _SQNRProbe:
    """Accumulates signal and noise energy of one point (observer protocol)."""

    def __init__(self, point: QuantPoint):
        self.point = point
        self.signal = 0.0
        self.noise = 0.0
        self.includes_u = getattr(point.quantizer, "includes_u", True)
        self.step_min = self.step_max = None

    def _add(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        x, x_hat = x.double(), x_hat.double()
        self.signal += float(x.pow(2).sum())
        self.noise += float((x - x_hat).pow(2).sum())

    def __call__(self, x: torch.Tensor) -> None:  # tensor points
        self._add(x, self.point.quantizer(x))

    def observe_samples(self, values: torch.Tensor) -> None:  # A_bar / B_bar u samples
        q = self.point.quantizer
        if q.scale.numel() != 1:
            return  # grouped scan quantizers are measured by trace_scan
        spec = q.scan_spec()
        self._add(values, apply_scan_quant(values.float(), spec, q.scale.view(()), q.zero_point.view(())))

    def observe_scan_stats(self, step_min, step_max) -> None:
        pass

    def observe_h_steps(self, h_pre: torch.Tensor, h_post: torch.Tensor) -> None:  # (l, b, d, n)
        self._add(h_pre, h_post)

    @property
    def sqnr_db(self) -> float | None:
        if self.signal == 0.0 and self.noise == 0.0:
            return None
        if self.noise == 0.0:
            return math.inf
        return 10.0 * math.log10(self.signal / self.noise) if self.signal > 0 else -math.inf


@torch.no_grad()
def point_sqnr(qmodel: nn.Module, images: Iterable[torch.Tensor], device=None) -> dict[str, float | None]:
    """SQNR in dB of every point that has a quantizer, on `images` (batches)."""
    probes = {}
    for name, point in iter_points(qmodel):
        if point.quantizer is not None:
            probes[name] = _SQNRProbe(point)
            point.observer = probes[name]
    try:
        dev = device or next(qmodel.parameters()).device
        for x in images:
            x = x[0] if isinstance(x, list | tuple) else x
            qmodel(x.to(dev))
    finally:
        for probe in probes.values():
            probe.point.observer = None
    return {name: probe.sqnr_db for name, probe in probes.items()}


# ----------------------------------------------------------------------------- scan traces
class _TraceProbe:
    """Collects A_bar samples and the per-step hidden states of one scan."""

    def __init__(self, point: QuantPoint | None = None):
        self.point = point
        self.includes_u = True
        self.samples: list[torch.Tensor] = []
        self.h_pre: list[torch.Tensor] = []
        self.h_post: list[torch.Tensor] = []

    def __call__(self, x):
        pass

    def observe_samples(self, values: torch.Tensor) -> None:
        self.samples.append(values.detach().float().flatten().cpu())

    def observe_scan_stats(self, step_min, step_max) -> None:
        pass

    def observe_h_steps(self, h_pre: torch.Tensor, h_post: torch.Tensor) -> None:  # (l, b, d, n)
        self.h_pre.append(h_pre.float().cpu())
        self.h_post.append(h_post.float().cpu())


def scan_points_of_block(model: nn.Module, block_index: int):
    """The SSMQuantPoints modules of one calibration block, in forward order."""
    from qmamba.nn.ssm_points import SSMQuantPoints

    blocks = contract.quant_blocks(model)
    if not 0 <= block_index < len(blocks):
        raise IndexError(f"layer {block_index} does not exist: the model has {len(blocks)} blocks")
    return [m for m in blocks[block_index].modules() if isinstance(m, SSMQuantPoints)]


@torch.no_grad()
def trace_scan(model: nn.Module, images: torch.Tensor, block_index: int, direction: int = 0) -> dict:
    """A_bar samples and h_t (before / after Q_h) of one scan of one block.

    Returns {"A_bar": (m,), "h_pre": (l, b, d, n), "h_post": (l, b, d, n)}: the
    quantizer of h (if any) is the model's; A_bar values are those the scan uses.
    """
    scans = scan_points_of_block(model, block_index)
    if not scans:
        raise ValueError(f"block {block_index} has no selective scan")
    if not 0 <= direction < len(scans):
        raise IndexError(f"block {block_index} has {len(scans)} scans; direction {direction} does not exist")
    points = scans[direction]
    a_probe, h_probe = _TraceProbe(points.A), _TraceProbe(points.h)
    points.A.observer, points.h.observer = a_probe, h_probe
    try:
        model(images.to(next(model.parameters()).device))
    finally:
        points.A.observer = points.h.observer = None
    return {
        "A_bar": torch.cat(a_probe.samples),
        "h_pre": torch.cat(h_probe.h_pre, dim=1),
        "h_post": torch.cat(h_probe.h_post, dim=1),
    }


def plot_distributions(
    model: nn.Module, images: torch.Tensor, block_index: int, out_png, direction: int = 0, title: str | None = None
) -> dict:
    """Histograms of A_bar and of h_t per time step for one block (the paper's Figure 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from qmamba.io_utils import atomic_path

    tr = trace_scan(model, images, block_index, direction)
    a_bar = tr["A_bar"].numpy()
    h = tr["h_pre"]  # (l, b, d, n)
    steps = h.shape[0]
    flat = h.reshape(steps, -1)
    lo, hi = float(flat.quantile(0.001, dim=1).min()) if flat.shape[1] < 16_000_000 else float(flat.min()), float(flat.max())
    lo = min(lo, float(flat.min()))
    bins = np.linspace(lo, hi, 81)
    heat = np.stack([np.histogram(flat[t].numpy(), bins=bins)[0] for t in range(steps)], axis=1)  # (80, l)

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    axes[0].hist(a_bar, bins=100, color="#3465a4")
    axes[0].set_title(f"A_bar (median {np.median(a_bar):.3f})")
    axes[0].set_xlabel("A_bar = exp(delta * A)")
    axes[0].set_yscale("log")
    axes[1].imshow(np.log1p(heat), aspect="auto", origin="lower", extent=(0, steps, lo, hi), cmap="viridis")
    axes[1].set_title("h_t distribution per time step (log count)")
    axes[1].set_xlabel("time step t")
    axes[1].set_ylabel("h value")
    amax = flat.abs().amax(dim=1).numpy()
    axes[2].plot(amax, label="max |h_t|")
    axes[2].plot(flat.std(dim=1).numpy(), label="std h_t")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("time step t")
    axes[2].legend()
    axes[2].set_title("range of h_t over time")
    fig.suptitle(title or f"block {block_index}, scan {direction}")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return {
        "png": str(out_png),
        "a_bar_median": float(np.median(a_bar)),
        "h_absmax_per_step": amax.tolist(),
        "steps": steps,
    }


# ----------------------------------------------------------------------------- grid studies
def compare_scan_grids(trace: dict, bits: int = 4, groups: int = 8, base: float = 2.0) -> dict:
    """LtSQ vs uniform on A_bar and TGQ vs per-tensor on h, on one traced scan.

    - A_bar: the relative error of 1 - A_bar where A_bar is above its median (where the
      values crowd next to 1), and the SQNR over all values, for the log1m grid
      (s = max(1 - A_bar)) and the uniform min/max grid at `bits`;
    - h: the SQNR of the traced float h_t quantized per tensor (G = 1), with `groups`
      equal time groups (TGQ), and per step (G = L), all min/max calibrated on the trace.
    """
    from qmamba.quant.methods.ltsq import above_median_mask, relative_error_1m
    from qmamba.quant.methods.tgq import tgq_quantizer
    from qmamba.quant.primitives import (
        choose_qparams,
        fake_quant,
        log1m_fake_quant,
        qrange,
        sqnr_db,
    )

    a = trace["A_bar"].float()
    mask = above_median_mask(a)
    s = torch.clamp(1.0 - a.min(), min=1e-12)
    a_log = log1m_fake_quant(a, s, bits, base)
    scale, zp = choose_qparams(a.min(), a.max(), bits, symmetric=False)
    qmin, qmax = qrange(bits, symmetric=False)
    a_uni = fake_quant(a, scale, zp, qmin, qmax)
    out = {
        "bits": bits,
        "A_bar_median": float(a.median()),
        "A_bar": {
            "ltsq_rel_err_1m_above_median": relative_error_1m(a, a_log, mask),
            "uniform_rel_err_1m_above_median": relative_error_1m(a, a_uni, mask),
            "ltsq_sqnr_db": sqnr_db(a, a_log),
            "uniform_sqnr_db": sqnr_db(a, a_uni),
        },
    }
    h = trace["h_pre"]  # (l, b, d, n)
    step_min, step_max = h.amin(dim=1), h.amax(dim=1)  # (l, d, n)
    h_bdln = h.permute(1, 2, 0, 3)  # (b, d, l, n)
    results = {}
    for label, g in (("per_tensor", 1), (f"tgq_{groups}", groups), ("per_step", 0)):
        q = tgq_quantizer(step_min, step_max, bits, groups=g)
        results[f"{label}_sqnr_db"] = sqnr_db(h_bdln, q.fake_quant(h_bdln))
    out["h"] = results
    return out
