"""Calibration observers of the scan's in-loop points (A_bar, B_bar u, h).

The scan reports, per call, the per-(t, c, k) minimum and maximum over the batch
(`observe_scan_stats`, kept by a `MinMaxObserver`); `selective_ssm` also hands the A
and B observers values at a fixed set of sampled positions (`observe_samples`). Both
are bounded in memory: one (L, d, n) pair of tensors and a capped sample per point,
never every h_t.
"""
from __future__ import annotations

import torch

from qmamba.quant.observers.base import MinMaxObserver

MAX_SAMPLES = 1 << 18


class ScanPointObserver:
    def __init__(self, includes_u: bool = True, max_samples: int = MAX_SAMPLES):
        self.includes_u = includes_u  # read by selective_ssm for the B point
        self.max_samples = max_samples
        self._steps = MinMaxObserver()
        self._samples: list[torch.Tensor] = []
        self._num_samples = 0

    def observe_scan_stats(self, step_min: torch.Tensor, step_max: torch.Tensor) -> None:
        self._steps.observe_scan_stats(step_min.cpu(), step_max.cpu())

    def observe_samples(self, values: torch.Tensor) -> None:
        if self._num_samples >= self.max_samples:
            return
        flat = values.detach().float().flatten().cpu()[: self.max_samples - self._num_samples]
        self._samples.append(flat)
        self._num_samples += flat.numel()

    @property
    def step_min(self) -> torch.Tensor:  # (L, d, n)
        return self._steps.per_step_min

    @property
    def step_max(self) -> torch.Tensor:  # (L, d, n)
        return self._steps.per_step_max

    @property
    def samples(self) -> torch.Tensor:
        if not self._samples:
            raise RuntimeError("no samples were observed at this scan point")
        return torch.cat(self._samples)
