"""The observer of one activation point during calibration.

Wraps the primitive observers (`qmamba.quant.observers`) with what the engine needs to
know about a point: its granularity (per tensor, or static per token: one range per
position of the token axes, PTQ4VM) and, for SmoothQuant-style smoothing, the running
per-channel absolute maximum.
"""
from __future__ import annotations

import torch

from qmamba.quant.observers.base import MinMaxObserver, MSEObserver, PercentileObserver
from qmamba.quant.primitives import per_channel

SAMPLES = 1 << 16  # values kept per point (per tensor) for percentile / MSE
MSE_CANDIDATES = 20  # clipping ratios tried by the MSE observer


class ActObserver:
    def __init__(
        self,
        kind: str = "minmax",
        percentile: float = 99.999,
        granularity: str = "tensor",
        channel_axis: int = -1,
        track_channels: bool = False,
    ):
        self.kind = kind
        self.percentile = percentile
        self.granularity = granularity  # tensor | token | channel: the quantizer's, too
        self.channel_axis = channel_axis
        self.track_channels = track_channels
        self._inner = None
        self._channel_absmax: torch.Tensor | None = None

    def _make_inner(self, x: torch.Tensor):
        keep = ()
        channel = self.channel_axis % x.dim()
        if self.granularity == "token":  # every axis except the batch and the channels
            keep = tuple(d for d in range(1, x.dim()) if d != channel)
        elif self.granularity == "channel":
            keep = per_channel(channel)
        # bounded samples: calibration visits every point of every block, often twice
        if self.kind == "percentile":
            return PercentileObserver(percentile=self.percentile, keep_dims=keep, max_samples=SAMPLES)
        if self.kind == "mse":
            return MSEObserver(keep_dims=keep, num_candidates=MSE_CANDIDATES, max_samples=SAMPLES)
        return MinMaxObserver(keep_dims=keep)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> None:
        if self._inner is None:
            self._inner = self._make_inner(x)
        self._inner(x)
        if self.track_channels:
            channel = self.channel_axis % x.dim()
            dims = tuple(d for d in range(x.dim()) if d != channel)
            amax = x.detach().abs().amax(dim=dims).float()  # (channels,)
            self._channel_absmax = amax if self._channel_absmax is None else torch.maximum(self._channel_absmax, amax)

    def range(self, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi) of the calibrated range at `bits` (keepdim shape of the observed tensors)."""
        if self._inner is None:
            raise RuntimeError("this point saw no tensor during calibration")
        return self._inner.clip_range(bits)

    def samples(self) -> torch.Tensor:
        """The bounded, seeded sample of observed values (percentile / mse observers)."""
        if not hasattr(self._inner, "samples"):
            raise RuntimeError(f"a {self.kind} observer keeps no samples")
        return self._inner.samples

    def channel_absmax(self) -> torch.Tensor:
        if self._channel_absmax is None:
            raise RuntimeError("channel statistics were not tracked at this point")
        return self._channel_absmax
