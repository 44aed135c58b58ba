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

from qmamba.ops.scan_quant_spec import apply_scan_quant
from qmamba.quant.point import QuantPoint, iter_points


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
