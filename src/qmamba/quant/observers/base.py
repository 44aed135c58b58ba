"""Calibration observers: they see tensors and produce quantization parameters.

The only stateful objects of the quantization primitives. Every observer:
  * `obs(x)` observes a tensor (no gradient, float32 storage, returns nothing);
  * `obs.qparams(bits) -> (scale, zero_point)` float32 tensors of the keepdim shape of
    the observed tensors (size 1 on reduced dims, so they broadcast against them);
  * `obs.reset()` forgets everything;
  * is deterministic: the same tensors in the same order give the same qparams (random
    subsampling uses a seeded generator, on the device of the data).

`keep_dims` is the granularity: () per tensor, (axis,) per channel / per token; for per
group, observe `primitives.group_view(x, axis, g)` with `group_keep_dims(...)`. Every
observed tensor must have the same sizes on the kept dims (the other dims may vary, e.g.
the batch). Non-finite values raise ValueError.

The scan reports per-step statistics of A_bar, B_bar u and h as (l, d, n) min/max
tensors; `MinMaxObserver.observe_scan_stats(min, max)` keeps their running elementwise
min/max as `per_step_min` / `per_step_max` (for TGQ) and folds them into the range at
its `keep_dims` (interpreted on the (l, d, n) layout). The other observers need the
values themselves and refuse scan stats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from qmamba.errors import ConfigError
from qmamba.ops.scan_quant_spec import fake_quant_uniform
from qmamba.quant.primitives import (
    choose_qparams,
    normalize_dims,
    qrange,
    reduce_minmax,
    validate_bits,
)

__all__ = ["Observer", "MinMaxObserver", "PercentileObserver", "MSEObserver"]

DEFAULT_MAX_SAMPLES = 2**20
DEFAULT_MIN_PER_SLICE = 1024


def _prepare(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"observers take tensors, got {type(x).__name__}")
    return x.detach().float()


def _check_finite(lo: torch.Tensor, hi: torch.Tensor, what: str) -> None:
    # amin/amax propagate NaN, and +-inf shows up in them: one cheap check
    if not (bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all())):
        raise ValueError(f"{what}: observed a tensor with NaN or infinite values")


class Observer:
    """Base: running min/max at `keep_dims` granularity."""

    def __init__(self, keep_dims: Sequence[int] = (), symmetric: bool = False):
        self.keep_dims = tuple(int(d) for d in keep_dims)
        self.symmetric = bool(symmetric)
        self.reset()

    def reset(self) -> None:
        self.min_val: torch.Tensor | None = None
        self.max_val: torch.Tensor | None = None
        self._keep: tuple[int, ...] | None = None
        self._keep_sizes: tuple[int, ...] | None = None

    @property
    def observed(self) -> bool:
        return self.min_val is not None

    def _check_layout(self, x: torch.Tensor) -> tuple[int, ...]:
        keep = normalize_dims(self.keep_dims, x.dim())
        sizes = tuple(x.shape[d] for d in keep)
        if self._keep is None:
            self._keep, self._keep_sizes = keep, sizes
        elif (keep, sizes) != (self._keep, self._keep_sizes) or (
            self.min_val is not None and self.min_val.dim() != x.dim()
        ):
            raise ValueError(
                f"{type(self).__name__}: kept dims {keep} of sizes {sizes} (rank {x.dim()}) do "
                f"not match the earlier {self._keep} of sizes {self._keep_sizes}"
            )
        return keep

    def _update_minmax(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        _check_finite(lo, hi, type(self).__name__)
        if self.min_val is None:
            self.min_val, self.max_val = lo.clone(), hi.clone()
        else:
            self.min_val = torch.minimum(self.min_val, lo.to(self.min_val.device))
            self.max_val = torch.maximum(self.max_val, hi.to(self.max_val.device))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> None:
        x = _prepare(x)
        self._check_layout(x)
        self._update_minmax(*reduce_minmax(x, self._keep))
        self._observe_values(x)

    def _observe_values(self, x: torch.Tensor) -> None:
        pass

    def observe_scan_stats(self, min_stats: torch.Tensor, max_stats: torch.Tensor) -> None:
        raise ConfigError(
            f"{type(self).__name__} needs the tensor values, but a scan point reports only "
            f"per-step min/max: use MinMaxObserver there"
        )

    def _require_observed(self) -> None:
        if self.min_val is None:
            raise ValueError(
                f"{type(self).__name__}: qparams requested before any tensor was observed"
            )

    def clip_range(self, bits) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi) the qparams are chosen from (keepdim shape)."""
        self._require_observed()
        return self.min_val, self.max_val

    def qparams(self, bits) -> tuple[torch.Tensor, torch.Tensor]:
        bits = validate_bits(bits)
        lo, hi = self.clip_range(bits)
        return choose_qparams(lo, hi, bits, self.symmetric)


class MinMaxObserver(Observer):
    """Running min/max; also takes the scan's per-step (l, d, n) statistics."""

    def reset(self) -> None:
        super().reset()
        self.per_step_min: torch.Tensor | None = None
        self.per_step_max: torch.Tensor | None = None

    @torch.no_grad()
    def observe_scan_stats(self, min_stats: torch.Tensor, max_stats: torch.Tensor) -> None:
        lo, hi = _prepare(min_stats), _prepare(max_stats)
        if lo.shape != hi.shape:
            raise ValueError(f"scan stats min {tuple(lo.shape)} and max {tuple(hi.shape)} differ")
        _check_finite(lo, hi, "MinMaxObserver.observe_scan_stats")
        self._check_layout(lo)
        if self.per_step_min is None:
            self.per_step_min, self.per_step_max = lo.clone(), hi.clone()
        else:
            if lo.shape != self.per_step_min.shape:
                raise ValueError(
                    f"scan stats of shape {tuple(lo.shape)} after {tuple(self.per_step_min.shape)}"
                )
            self.per_step_min = torch.minimum(self.per_step_min, lo.to(self.per_step_min.device))
            self.per_step_max = torch.maximum(self.per_step_max, hi.to(self.per_step_max.device))
        self._update_minmax(reduce_minmax(lo, self._keep)[0], reduce_minmax(hi, self._keep)[1])


class _Reservoir:
    """A uniform random sample without replacement, per slice, of bounded size.

    Bottom-k sampling: every value seen gets a seeded uniform key and each slice keeps
    the `cap` values with the smallest keys, which is a uniform sample of all values seen
    so far (all of them while fewer than `cap` were seen).
    """

    def __init__(self, max_samples: int, min_per_slice: int, seed: int):
        if max_samples < 1 or min_per_slice < 1:
            raise ConfigError("observer sample sizes must be positive")
        self.max_samples, self.min_per_slice, self.seed = max_samples, min_per_slice, seed
        self.reset()

    def reset(self) -> None:
        self.values: torch.Tensor | None = None  # (S, n) float32
        self.keys: torch.Tensor | None = None
        self.cap = 0
        self._gen: torch.Generator | None = None

    def add(self, slices: torch.Tensor) -> None:  # (S, m)
        if self.values is None:
            n_slices = slices.shape[0]
            self.cap = max(self.max_samples // max(n_slices, 1), self.min_per_slice)
            self._gen = torch.Generator(device=slices.device).manual_seed(self.seed)
        if self.values is not None and self.values.shape[0] == 1 and self.values.shape[1] >= self.cap:
            slices, keys = self._entrants(slices)
        else:
            keys = torch.rand(slices.shape, generator=self._gen, device=slices.device)
        if self.values is None:
            values = slices
        else:
            values = torch.cat([self.values, slices.to(self.values.device)], dim=1)
            keys = torch.cat([self.keys, keys.to(self.keys.device)], dim=1)
        if values.shape[1] > self.cap:
            idx = keys.topk(self.cap, dim=1, largest=False, sorted=False).indices
            values, keys = values.gather(1, idx), keys.gather(1, idx)
        self.values, self.keys = values.contiguous(), keys.contiguous()


    def _entrants(self, slices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For a full single-slice sample: the new values whose keys fall below the largest
        kept key tau (only they can enter), drawn without a key per value. Their number is
        Binomial(m, tau), their positions uniform without replacement, their keys uniform
        on [0, tau): the distribution of drawing every key and keeping those below tau, at
        the cost of the entrants instead of all m values."""
        m = slices.shape[1]
        tau = float(self.keys.max())
        count = int(torch.binomial(torch.tensor([float(m)]), torch.tensor([tau]), generator=self._gen))
        count = min(count, m)
        picked = torch.empty(0, dtype=torch.long)
        while picked.numel() < count:  # top up what duplicates removed
            draw = torch.randint(m, (count - picked.numel(),), generator=self._gen)
            picked = torch.unique(torch.cat([picked, draw]))
        keys = torch.rand((1, count), generator=self._gen) * tau
        return slices[:, picked.to(slices.device)], keys.to(slices.device)


class _SampledObserver(Observer):
    """Min/max plus a bounded seeded sample of the values of every kept slice.

    Memory: at most max(max_samples, n_slices * min_per_slice) float32 values (twice,
    with the sampling keys).
    """

    def __init__(
        self,
        keep_dims: Sequence[int] = (),
        symmetric: bool = False,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        min_per_slice: int = DEFAULT_MIN_PER_SLICE,
        seed: int = 0,
    ):
        self._reservoir = _Reservoir(int(max_samples), int(min_per_slice), int(seed))
        super().__init__(keep_dims, symmetric)

    def reset(self) -> None:
        super().reset()
        self._reservoir.reset()

    def _observe_values(self, x: torch.Tensor) -> None:
        keep = self._keep
        rest = tuple(d for d in range(x.dim()) if d not in keep)
        slices = x.permute(keep + rest).reshape(math.prod(self._keep_sizes), -1)
        self._reservoir.add(slices)

    @property
    def samples(self) -> torch.Tensor:
        """(n_slices, n) the values kept (slices in the order of the kept dims)."""
        self._require_observed()
        return self._reservoir.values

    def _to_keep_shape(self, v: torch.Tensor) -> torch.Tensor:
        """(S,) per-slice values -> the keepdim shape of min_val."""
        return v.reshape(self.min_val.shape)


class PercentileObserver(_SampledObserver):
    """Clipping range from percentiles of a bounded, seeded sample of the values.

    Asymmetric: (p_(100 - percentile), p_percentile) of the values; symmetric:
    p_percentile of |x|. Percentiles are exact on the sample (sorted, linear
    interpolation like torch.quantile's default), and exact on the data while no more
    than the per-slice capacity was seen.
    """

    def __init__(
        self,
        percentile: float = 99.999,
        keep_dims: Sequence[int] = (),
        symmetric: bool = False,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        min_per_slice: int = DEFAULT_MIN_PER_SLICE,
        seed: int = 0,
    ):
        percentile = float(percentile)
        if not 50.0 < percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile
        super().__init__(keep_dims, symmetric, max_samples, min_per_slice, seed)

    @staticmethod
    def _quantile(sorted_vals: torch.Tensor, q: float) -> torch.Tensor:
        n = sorted_vals.shape[1]
        pos = q * (n - 1)
        lo = int(pos)
        hi = min(lo + 1, n - 1)
        frac = pos - lo
        a, b = sorted_vals[:, lo].double(), sorted_vals[:, hi].double()
        return (a + (b - a) * frac).float()

    def clip_range(self, bits) -> tuple[torch.Tensor, torch.Tensor]:
        self._require_observed()
        q = self.percentile / 100.0
        vals = self._reservoir.values
        if self.symmetric:
            amax = self._quantile(vals.abs().sort(dim=1).values, q)
            amax = self._to_keep_shape(amax)
            return -amax, amax
        s = vals.sort(dim=1).values
        lo = self._to_keep_shape(self._quantile(s, 1.0 - q))
        hi = self._to_keep_shape(self._quantile(s, q))
        return lo, hi


class MSEObserver(_SampledObserver):
    """Clipping ratio searched to minimise the quantization error on a sample.

    Keeps the exact min/max and a bounded seeded sample. For `bits`, candidate ranges are
    r * (lo, hi) (asymmetric; lo = min(xmin, 0), hi = max(xmax, 0)) or r * max|x|
    (symmetric) for r in `ratios` (default 100 values from 0.3 to 1.0), independently per
    kept slice; the error is mean |fq(x) - x|^p on the sample (p = `norm`, default 2).
    r = 1 (the min/max range) is tried first and a candidate replaces the best only when
    strictly better, so on the sample the result is never worse than min/max.
    """

    def __init__(
        self,
        keep_dims: Sequence[int] = (),
        symmetric: bool = False,
        num_candidates: int = 100,
        min_ratio: float = 0.3,
        norm: float = 2.0,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        min_per_slice: int = DEFAULT_MIN_PER_SLICE,
        seed: int = 0,
    ):
        if num_candidates < 1 or not 0.0 < min_ratio <= 1.0:
            raise ConfigError("MSEObserver: need num_candidates >= 1 and 0 < min_ratio <= 1")
        if num_candidates == 1:
            ratios = [1.0]
        else:
            step = (1.0 - min_ratio) / (num_candidates - 1)
            ratios = [1.0 - i * step for i in range(num_candidates)]
            ratios[0], ratios[-1] = 1.0, float(min_ratio)
        self.ratios: tuple[float, ...] = tuple(ratios)  # descending, 1.0 first
        self.norm = float(norm)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        super().__init__(keep_dims, symmetric, max_samples, min_per_slice, seed)

    def reset(self) -> None:
        super().reset()
        self._cache = {}

    def _observe_values(self, x: torch.Tensor) -> None:
        self._cache = {}
        super()._observe_values(x)

    def clip_range(self, bits) -> tuple[torch.Tensor, torch.Tensor]:
        self._require_observed()
        bits = validate_bits(bits)
        if bits in self._cache:
            return self._cache[bits]
        qmin, qmax = qrange(bits, self.symmetric)
        vals = self._reservoir.values  # (S, n)
        n_slices = vals.shape[0]
        lo = self.min_val.reshape(n_slices, 1).to(vals.device)
        hi = self.max_val.reshape(n_slices, 1).to(vals.device)
        if self.symmetric:
            amax = torch.maximum(lo.abs(), hi.abs())
            lo, hi = -amax, amax
        else:
            lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
        best_err = None
        best_lo, best_hi = lo, hi
        for r in self.ratios:
            c_lo, c_hi = lo * r, hi * r
            scale, zp = choose_qparams(c_lo, c_hi, bits, self.symmetric)
            err = (fake_quant_uniform(vals, scale, zp, qmin, qmax) - vals).abs()
            err = err.double().pow(self.norm).mean(dim=1, keepdim=True)
            if best_err is None:
                best_err = err
                continue
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, c_lo, best_lo)
            best_hi = torch.where(better, c_hi, best_hi)
        out = (self._to_keep_shape(best_lo), self._to_keep_shape(best_hi))
        self._cache[bits] = out
        return out
