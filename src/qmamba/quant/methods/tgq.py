"""Temporal Group Quantization (TGQ) of the hidden state h_t.

The time steps of a scan are split into G groups, fixed offline from calibration; each
group has its own scale and zero point (method.md). Calibration gives, per time step,
the range of h over the batch (per channel and state dimension, from the scan's
statistics); this file turns those per-step ranges into group boundaries and a
`ScanQuantizer`:

- `equal_groups`: contiguous, equal-length groups (the default);
- `dp_groups`: the G - 1 boundaries that minimise the total expected quantization error
  sum_g len_g * range_g^2 (a uniform grid's MSE is proportional to the squared step)
  by dynamic programming over the per-step ranges (beyond the paper; an option);
- G = 1 is per-tensor quantization, G = L (`h_groups=0` in the config) one per step.
"""
from __future__ import annotations

import numpy as np
import torch

from qmamba.quant.primitives import choose_qparams, qrange
from qmamba.quant.quantizers import ScanQuantizer


def equal_groups(length: int, groups: int) -> torch.Tensor:
    """(L,) group index of each step for G contiguous groups of (nearly) equal length."""
    groups = max(1, min(groups, length))
    return (torch.arange(length) * groups // length).long()


def dp_groups(step_min: torch.Tensor, step_max: torch.Tensor, groups: int) -> torch.Tensor:
    """(L,) group index minimising sum over groups of len * (max - min)^2.

    step_min / step_max: (L,) per-step range of the quantity (already reduced to the
    granularity the scale will have; for per-channel scales pass the summed cost by
    calling with the widest channel's range or use `equal_groups`).
    """
    lo = step_min.double().cpu().numpy()
    hi = step_max.double().cpu().numpy()
    length = lo.shape[0]
    groups = max(1, min(groups, length))
    # cost[i, j] for the segment [i, j] inclusive, vectorised per end point j
    inf = float("inf")
    best = np.full((groups + 1, length + 1), inf)
    arg = np.zeros((groups + 1, length + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for j in range(1, length + 1):  # segment ends at step j-1 (inclusive)
        seg_hi = np.maximum.accumulate(hi[:j][::-1])[::-1]  # max over [i, j)
        seg_lo = np.minimum.accumulate(lo[:j][::-1])[::-1]
        seg_cost = (j - np.arange(j)) * (seg_hi - seg_lo) ** 2  # (j,) for starts i = 0..j-1
        for g in range(1, groups + 1):
            total = best[g - 1, :j] + seg_cost
            i = int(np.argmin(total))
            best[g, j] = total[i]
            arg[g, j] = i
    index = np.zeros(length, dtype=np.int64)
    j, g = length, groups
    while g > 0 and j > 0:
        i = arg[g, j]
        index[i:j] = g - 1
        j, g = i, g - 1
    # renumber so that groups are 0..G'-1 in time order (some groups may be empty)
    _, index = np.unique(index, return_inverse=True)
    return torch.from_numpy(index.astype(np.int64))


def tgq_quantizer(
    step_min: torch.Tensor,  # (L, d, n) per-step minimum of h over the calibration batch
    step_max: torch.Tensor,  # (L, d, n)
    bits: int,
    groups: int,
    group_mode: str = "equal",
    channel_groups: int = 1,  # K: 1 per tensor, number of scan directions, or d per channel
    per_state: bool = False,
    clip_ratio: float = 1.0,
) -> ScanQuantizer:
    """An asymmetric uniform `ScanQuantizer` with a scale per (time group, K, N')."""
    length, d, n = step_min.shape
    if groups == 0:
        groups = length
    if group_mode == "dp" and 1 < groups < length:
        group_index = dp_groups(step_min.amin(dim=(1, 2)), step_max.amax(dim=(1, 2)), groups)
    else:
        group_index = equal_groups(length, groups)
    num_groups = int(group_index.max()) + 1
    k = channel_groups
    n_ = n if per_state else 1
    mins = step_min.reshape(length, k, d // k, n).amin(dim=2)  # (L, K, n)
    maxs = step_max.reshape(length, k, d // k, n).amax(dim=2)
    if not per_state:
        mins, maxs = mins.amin(dim=2, keepdim=True), maxs.amax(dim=2, keepdim=True)  # (L, K, 1)
    index = group_index.view(-1, 1, 1).expand_as(mins)  # (L, K, N')
    gmin = torch.zeros(num_groups, k, n_).scatter_reduce(0, index, mins.float(), "amin", include_self=False)
    gmax = torch.zeros(num_groups, k, n_).scatter_reduce(0, index, maxs.float(), "amax", include_self=False)
    scale, zero_point = choose_qparams(gmin * clip_ratio, gmax * clip_ratio, bits, symmetric=False)
    qmin, qmax = qrange(bits, symmetric=False)
    return ScanQuantizer(
        "uniform", bits, scale, zero_point, qmin, qmax,
        group_index=group_index if num_groups > 1 else None,
    )
