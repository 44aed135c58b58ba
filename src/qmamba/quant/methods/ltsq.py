"""Long-tailed Skewness Quantization (LtSQ), method.md: pure parameter search.

* A_bar = exp(delta * A) in (0, 1], dense next to 1 with a long tail towards 0: the
  "log1m" grid x_hat = 1 - s * base^(-q), q in [0, 2^b - 1] (`ltsq_params_a_bar`).
* delta, B_bar u (dense near 0, tail away from 0): the "log_signed" grid anchored at 0,
  x_hat = sign(x) * s * base^(-m), m in [0, 2^(b-1) - 1], top code = 0
  (`ltsq_params_signed`).

The scale s is searched over `s0 * multiplier` (s0 = max(1 - A_bar), resp. max |x|;
default multipliers 2^(k/4), k = -8..4) and, optionally, over the base (pass a sequence
of bases, e.g. (2.0, SQRT2)). The criterion is a callable
`error_fn(fake_quant_fn) -> float` (the engine passes one that runs the scan and
measures its output error); the default is the MSE of the samples themselves. Ties go
to the first candidate in (base, multiplier) order, so the search is deterministic.

Whether to use LtSQ at all is the skewness test (`skewness_test`: median of A_bar above
alpha; `skewness_test_signed`: median |x| below beta * max |x|): the engine falls back
to the uniform quantizer otherwise. LtSQ is judged by `relative_error_1m` (the relative
error of 1 - A_bar where A_bar is crowded near 1), not by SQNR (method.md).

Codes are integers in the grid's range, like the uniform ones: `LtSQParams.quantize`
gives the codes to store (for log_signed the sign-magnitude codes of
`primitives.log_quantize`), `LtSQParams.scan_spec()` the `ScanPointQuant` of the scan.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from qmamba.errors import ConfigError
from qmamba.ops.scan_quant_spec import ScanPointQuant
from qmamba.quant.primitives import (
    log1m_dequantize,
    log1m_fake_quant,
    log1m_qrange,
    log1m_quantize,
    log_dequantize,
    log_fake_quant,
    log_quantize,
    log_signed_qrange,
    qrange,
    sample_values,
    validate_bits,
)

__all__ = [
    "DEFAULT_SCALE_MULTIPLIERS",
    "LtSQParams",
    "skewness_test",
    "skewness_test_signed",
    "ltsq_params_a_bar",
    "ltsq_params_signed",
    "relative_error_1m",
    "above_median_mask",
]

DEFAULT_SCALE_MULTIPLIERS: tuple[float, ...] = tuple(2.0 ** (k / 4) for k in range(-8, 5))
_EPS = 1e-12

FakeQuantFn = Callable[[torch.Tensor], torch.Tensor]
ErrorFn = Callable[[FakeQuantFn], float]


@dataclass(frozen=True)
class LtSQParams:
    """A chosen LtSQ grid: kind ("log1m" or "log_signed"), 0-d float32 scale, base, bits,
    and the value of the error function it was chosen with."""

    kind: str
    scale: torch.Tensor
    base: float
    bits: int
    error: float

    @property
    def qmin(self) -> int:
        """Grid code range as `ScanPointQuant` expects it (log_signed: magnitude codes)."""
        return (log1m_qrange if self.kind == "log1m" else log_signed_qrange)(self.bits)[0]

    @property
    def qmax(self) -> int:
        return (log1m_qrange if self.kind == "log1m" else log_signed_qrange)(self.bits)[1]

    @property
    def code_range(self) -> tuple[int, int]:
        """Range of the stored codes (`quantize`)."""
        if self.kind == "log1m":
            return log1m_qrange(self.bits)
        return qrange(self.bits, symmetric=True)

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale.to(x.device)
        if self.kind == "log1m":
            return log1m_fake_quant(x, s, self.bits, self.base)
        return log_fake_quant(x, s, self.bits, self.base)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale.to(x.device)
        if self.kind == "log1m":
            return log1m_quantize(x, s, self.bits, self.base)
        return log_quantize(x, s, self.bits, self.base)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        s = self.scale.to(codes.device)
        if self.kind == "log1m":
            return log1m_dequantize(codes, s, self.base)
        return log_dequantize(codes, s, self.bits, self.base)

    def scan_spec(self, group_index: torch.Tensor | None = None) -> ScanPointQuant:
        """One scale for the whole point: (G, K, N') = (1, 1, 1)."""
        return ScanPointQuant(
            kind=self.kind,
            scale=self.scale.reshape(1, 1, 1).float(),
            zero_point=None,
            qmin=self.qmin,
            qmax=self.qmax,
            base=self.base,
            group_index=group_index,
        )


def _flat(samples) -> torch.Tensor:
    if isinstance(samples, torch.Tensor):
        return samples.detach().float().reshape(-1)
    parts = [s.detach().float().reshape(-1) for s in samples]
    if not parts:
        raise ConfigError("LtSQ needs calibration samples, got none")
    return torch.cat([p.to(parts[0].device) for p in parts])


def _median(x: torch.Tensor) -> float:
    """Lower median (torch.median convention) of a flat tensor."""
    if x.numel() == 0:
        raise ConfigError("cannot take the median of an empty sample")
    return x.median().item()


def skewness_test(x_sample: torch.Tensor, alpha: float) -> bool:
    """True (long-tailed: use the log1m grid) when the median of `x_sample` (A_bar
    values) is above `alpha`. The median is the lower one for an even count."""
    x = _flat(x_sample)
    return _median(x) > float(alpha)


def skewness_test_signed(x_sample: torch.Tensor, beta: float) -> bool:
    """True (long-tailed: use the log_signed grid) when median |x| < beta * max |x|,
    i.e. the values crowd near 0 with a tail away from it (delta, B_bar u)."""
    a = _flat(x_sample).abs()
    return _median(a) < float(beta) * a.max().item()


def _bases(base) -> tuple[float, ...]:
    if isinstance(base, (int, float)):
        bases = (float(base),)
    else:
        bases = tuple(float(b) for b in base)
    if not bases or any(not (b > 1.0 and math.isfinite(b)) for b in bases):
        raise ConfigError(f"log bases must be finite numbers > 1, got {base!r}")
    return bases


def _search(
    kind: str,
    s0: float,
    samples: torch.Tensor,
    bits: int,
    base,
    search: Iterable[float],
    error_fn: ErrorFn | None,
    max_samples: int,
    seed: int,
) -> LtSQParams:
    bits = validate_bits(bits)
    multipliers = tuple(float(m) for m in search)
    if not multipliers or any(not (m > 0 and math.isfinite(m)) for m in multipliers):
        raise ConfigError(f"LtSQ scale multipliers must be positive numbers, got {multipliers!r}")
    if error_fn is None:
        x = sample_values(samples, max_values=max_samples, seed=seed)
        x64 = x.double()

        def error_fn(fq: FakeQuantFn) -> float:
            return (fq(x).double() - x64).pow(2).mean().item()

    fq_of = log1m_fake_quant if kind == "log1m" else log_fake_quant
    best: LtSQParams | None = None
    for b in _bases(base):
        for m in multipliers:
            scale = torch.tensor(max(s0 * m, _EPS), dtype=torch.float32, device=samples.device)
            err = float(error_fn(partial(fq_of, scale=scale, bits=bits, base=b)))
            if math.isnan(err):
                continue
            if best is None or err < best.error:
                best = LtSQParams(kind=kind, scale=scale, base=b, bits=bits, error=err)
    if best is None:
        raise ConfigError("LtSQ search: the error function returned NaN for every candidate")
    return best


def ltsq_params_a_bar(
    samples,
    bits,
    base: float | Sequence[float] = 2.0,
    search: Iterable[float] = DEFAULT_SCALE_MULTIPLIERS,
    error_fn: ErrorFn | None = None,
    max_samples: int = 2**20,
    seed: int = 0,
) -> LtSQParams:
    """The log1m grid for A_bar samples (a tensor or a sequence of tensors).

    Candidates s = max(1 - A_bar) * multiplier for each multiplier in `search` (and each
    base when `base` is a sequence). `error_fn(fake_quant_fn) -> float` is minimised,
    `fake_quant_fn(x)` applying the candidate grid; default: MSE on a seeded subsample of
    at most `max_samples` of the samples.
    """
    x = _flat(samples)
    if x.numel() == 0:
        raise ConfigError("LtSQ needs calibration samples, got an empty tensor")
    s0 = max((1.0 - x).max().item(), _EPS)
    return _search("log1m", s0, x, bits, base, search, error_fn, max_samples, seed)


def ltsq_params_signed(
    samples,
    bits,
    base: float | Sequence[float] = 2.0,
    search: Iterable[float] = DEFAULT_SCALE_MULTIPLIERS,
    error_fn: ErrorFn | None = None,
    max_samples: int = 2**20,
    seed: int = 0,
) -> LtSQParams:
    """The log_signed grid (anchored at 0, sign kept) for delta / B_bar u samples.

    Candidates s = max |x| * multiplier; otherwise as `ltsq_params_a_bar`.
    """
    x = _flat(samples)
    if x.numel() == 0:
        raise ConfigError("LtSQ needs calibration samples, got an empty tensor")
    s0 = max(x.abs().max().item(), _EPS)
    return _search("log_signed", s0, x, bits, base, search, error_fn, max_samples, seed)


def above_median_mask(a_bar: torch.Tensor) -> torch.Tensor:
    """A_bar > its (lower) median: the crowded part next to 1."""
    return a_bar > a_bar.detach().reshape(-1).median()


def relative_error_1m(
    a_bar: torch.Tensor, a_hat: torch.Tensor, mask: torch.Tensor | None = None
) -> float:
    """mean |(1 - a_hat) - (1 - a_bar)| / (1 - a_bar) over `mask` (all by default),
    in float64; elements with A_bar >= 1 (no distance to 1) are left out. NaN if none."""
    a = a_bar.detach().double()
    d = 1.0 - a
    valid = d > 0
    if mask is not None:
        valid = valid & mask.to(valid.device)
    if not bool(valid.any()):
        return math.nan
    rel = ((1.0 - a_hat.detach().double()) - d).abs() / d
    return rel[valid].mean().item()
