"""What the quantized selective scan needs to know about one in-loop quantizer.

The quantized recurrence (method.md) is

    h_t = Q_h( Q_A(A_bar_t) * h_{t-1} + Q_B(B_bar_t u_t) ),    y_t = C_t . h_t

`Q_A`, `Q_B` and `Q_h` run inside the time loop, so the scan kernels (reference and
compiled) receive them as plain tensors, not modules: a `ScanPointQuant` per point.
This file also holds the elementwise fake-quantization math of the three grid kinds;
it is the single definition that the reference scan, the quantizer modules and the
tests share (the compiled kernel re-implements it in C++ and is tested against it).

Grid kinds (codes q are integers in [qmin, qmax]):
  "uniform":    q = clamp(round(x / s) + zp, qmin, qmax);      x_hat = (q - zp) * s
                (round half to even, as torch.round / std::nearbyint)
  "log1m":      r = clamp(1 - x, min=0) / s
                q = qmin + #{k in [qmin, qmax - 1] : r < c_k}    (q = qmax when r == 0)
                x_hat = 1 - s * p_q        (LtSQ for A_bar in (0, 1], dense near 1)
  "log_signed": r = |x| / s
                m = qmin + #{k in [qmin, qmax - 1] : r < c_k}    (m = qmax when r == 0)
                x_hat = sign(x) * s * p_m, and 0 when m == qmax
                (LtSQ anchored at 0 for B_bar u and delta; one code is kept for zero,
                 the sign is one extra bit: qmax = 2^(bits-1) - 1)

The log grids are defined by thresholds, so that no logarithm is evaluated and every
backend performs the same IEEE operations (one subtraction, one division, comparisons,
one multiplication (and subtraction) with table values):
  c_k = base^-(k + 0.5)   (the geometric midpoint between the grid values p_k, p_{k+1})
  p_q = base^-q
both computed per integer in float64 (`math.pow`) and rounded to the compute dtype: the
tables of `log_grid_tables(base, qmin, qmax, dtype)`, which the compiled kernel receives
as they are. Away from ties this is q = clamp(round(-log_base(r)), qmin, qmax) (the
former definition); exactly at a threshold (r == c_k) the code is k (the larger of the
two grid values p_k, p_{k+1}; the former rule rounded half to even), and c_k / p_q are the correctly rounded-from-float64 constants instead of
exp(-k * ln(base)) evaluated in the compute dtype. Edge cases: r == 0 (x == 1 for log1m,
x == 0 for log_signed) -> qmax, even where deep thresholds underflow to 0; r == +inf ->
qmin; x NaN -> code NaN and x_hat NaN. r < 0 cannot occur (1 - x is clamped at 0 and
scales are > 0).

`codes_uniform`, `codes_log1m`, `codes_log_signed` give the integer codes (integer-valued
tensors in the dtype of the computation, NaN for NaN input) and `fake_quant_*` the
dequantized values; `qmamba.quant.primitives` builds its quantize / dequantize functions
on them, so each grid has one definition.

Parameter layout. `scale` and `zero_point` have shape (G, K, N') where
  G  = number of time groups (TGQ); `group_index` (L,) int64 maps step t -> group,
  K  divides the channel count d of the scan; channel c uses row c // (d // K)
       (K = 1 per tensor, K = number of directions in VMamba, K = d per channel),
  N' is 1 or the state size n.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

GRID_KINDS = ("uniform", "log1m", "log_signed")


@dataclass
class ScanPointQuant:
    kind: str
    scale: torch.Tensor  # (G, K, N') float32, > 0
    zero_point: torch.Tensor | None  # (G, K, N') float32 integer-valued; uniform only
    qmin: int
    qmax: int
    base: float = 2.0  # log kinds only
    group_index: torch.Tensor | None = None  # (L,) int64, values in [0, G); None -> group 0

    def __post_init__(self):
        if self.kind not in GRID_KINDS:
            raise ValueError(f"unknown grid kind {self.kind!r}; known: {GRID_KINDS}")
        if self.scale.dim() != 3:
            raise ValueError(f"scale must be (G, K, N'), got shape {tuple(self.scale.shape)}")
        if self.zero_point is not None and self.zero_point.shape != self.scale.shape:
            raise ValueError("zero_point must have the shape of scale")
        if self.qmin >= self.qmax:
            raise ValueError(f"empty code range [{self.qmin}, {self.qmax}]")

    @property
    def num_groups(self) -> int:
        return self.scale.shape[0]

    def groups_for_length(self, length: int, device=None) -> torch.Tensor:
        """(L,) int64 group of every time step."""
        if self.group_index is None:
            return torch.zeros(length, dtype=torch.long, device=device)
        if self.group_index.numel() != length:
            raise ValueError(
                f"quantizer calibrated for sequences of {self.group_index.numel()} steps, got {length}"
            )
        return self.group_index.to(device=device, dtype=torch.long)

    def expand_params(self, d: int, n: int, dtype=torch.float32, device=None):
        """scale, zero_point expanded to (G, d, n) (zero_point None -> zeros)."""
        g, k, n_ = self.scale.shape
        if d % k != 0 or n_ not in (1, n):
            raise ValueError(f"quantizer params {tuple(self.scale.shape)} do not fit d={d}, n={n}")
        scale = self.scale.to(device=device, dtype=dtype).repeat_interleave(d // k, dim=1)
        scale = scale.expand(g, d, n)
        if self.zero_point is None:
            zp = torch.zeros_like(scale)
        else:
            zp = self.zero_point.to(device=device, dtype=dtype).repeat_interleave(d // k, dim=1)
            zp = zp.expand(g, d, n)
        return scale, zp


def codes_uniform(x, scale, zero_point, qmin: int, qmax: int):
    """Uniform codes clamp(round(x / s) + zp, qmin, qmax) (round half to even)."""
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def fake_quant_uniform(x, scale, zero_point, qmin: int, qmax: int):
    """Uniform affine fake quantization (round half to even, as torch.round)."""
    q = codes_uniform(x, scale, zero_point, qmin, qmax)
    return (q - zero_point) * scale


def _check_log_range(base: float, qmin: int, qmax: int) -> tuple[float, int, int]:
    base, qmin, qmax = float(base), int(qmin), int(qmax)
    if not (base > 1.0 and math.isfinite(base)):
        raise ValueError(f"log base must be a finite number > 1, got {base}")
    if qmin >= qmax:
        raise ValueError(f"empty code range [{qmin}, {qmax}]")
    return base, qmin, qmax


def log_threshold_values(base: float, qmin: int, qmax: int) -> list[float]:
    """c_k = base^-(k + 0.5) for k = qmin .. qmax - 1, float64 (non-increasing)."""
    base, qmin, qmax = _check_log_range(base, qmin, qmax)
    return [math.pow(base, -(k + 0.5)) for k in range(qmin, qmax)]


def log_grid_values(base: float, qmin: int, qmax: int) -> list[float]:
    """p_q = base^-q for q = qmin .. qmax, float64."""
    base, qmin, qmax = _check_log_range(base, qmin, qmax)
    return [math.pow(base, -q) for q in range(qmin, qmax + 1)]


@functools.lru_cache(maxsize=256)
def _log_tables_cached(base: float, qmin: int, qmax: int, dtype, device):
    c = torch.tensor(log_threshold_values(base, qmin, qmax), dtype=torch.float64)
    p = torch.tensor(log_grid_values(base, qmin, qmax), dtype=torch.float64)
    return c.to(device=device, dtype=dtype), p.to(device=device, dtype=dtype)


def log_grid_tables(base: float, qmin: int, qmax: int, dtype=torch.float32, device="cpu"):
    """(thresholds c (qmax - qmin,), values p (qmax - qmin + 1,)) in `dtype` on `device`.

    c[j] = c_{qmin + j} = base^-(qmin + j + 0.5), p[j] = p_{qmin + j} = base^-(qmin + j),
    each computed in float64 and rounded to `dtype`. Cached; do not modify the tensors.
    """
    base, qmin, qmax = _check_log_range(base, qmin, qmax)
    return _log_tables_cached(base, qmin, qmax, dtype, torch.device(device))


def _log_count(r: torch.Tensor, base: float, qmin: int, qmax: int) -> torch.Tensor:
    """#{k in [qmin, qmax - 1] : r < c_k} (int64), qmax - qmin where r == 0; NaN r -> 0."""
    c, _ = log_grid_tables(base, qmin, qmax, r.dtype, r.device)
    n = c.numel()
    # c is non-increasing: the k with r < c_k are a prefix; count them on the flipped
    # (non-decreasing) table: n - #{c_k <= r}
    count = n - torch.searchsorted(c.flip(0), r.contiguous(), right=True)
    return torch.where(r == 0, torch.full_like(count, n), count.clamp(0, n))


def _log_r1m(x, scale):
    return torch.clamp(1.0 - x, min=0.0) / scale


def _log_rsigned(x, scale):
    return x.abs() / scale


def _as_codes(count: torch.Tensor, r: torch.Tensor, qmin: int) -> torch.Tensor:
    q = (count + qmin).to(r.dtype)
    return torch.where(torch.isnan(r), r, q)


def codes_log1m(x, scale, qmin: int, qmax: int, base: float = 2.0):
    """log1m codes q in [qmin, qmax] (see the module docstring); NaN for NaN x."""
    r = _log_r1m(x, scale)
    return _as_codes(_log_count(r, base, qmin, qmax), r, qmin)


def codes_log_signed(x, scale, qmin: int, qmax: int, base: float = 2.0):
    """log_signed magnitude codes m in [qmin, qmax] (qmax: zero); NaN for NaN x."""
    r = _log_rsigned(x, scale)
    return _as_codes(_log_count(r, base, qmin, qmax), r, qmin)


def log_grid_lookup(codes: torch.Tensor, base: float, qmin: int, qmax: int) -> torch.Tensor:
    """p_q = base^-q of integer-valued codes in [qmin, qmax] (the table, in codes' dtype;
    NaN codes give NaN)."""
    _, p = log_grid_tables(base, qmin, qmax, codes.dtype, codes.device)
    idx = (codes - qmin).nan_to_num(0.0).long().clamp(0, p.numel() - 1)
    return torch.where(torch.isnan(codes), codes, p[idx])


def fake_quant_log1m(x, scale, qmin: int, qmax: int, base: float = 2.0):
    """Log grid on the distance from 1: x_hat = 1 - s * p_q."""
    r = _log_r1m(x, scale)
    count = _log_count(r, base, qmin, qmax)
    _, p = log_grid_tables(base, qmin, qmax, r.dtype, r.device)
    val = 1.0 - scale * p[count]
    return torch.where(torch.isnan(r), r, val)


def fake_quant_log_signed(x, scale, qmin: int, qmax: int, base: float = 2.0):
    """Log grid anchored at 0 with the sign kept; magnitude code qmax means exactly 0."""
    r = _log_rsigned(x, scale)
    count = _log_count(r, base, qmin, qmax)
    _, p = log_grid_tables(base, qmin, qmax, r.dtype, r.device)
    val = torch.sign(x) * scale * p[count]
    val = torch.where(count >= qmax - qmin, torch.zeros_like(val), val)
    return torch.where(torch.isnan(r), r, val)


def apply_scan_quant(x: torch.Tensor, spec: ScanPointQuant, scale, zero_point) -> torch.Tensor:
    """Fake-quantize `x` with already broadcast `scale` / `zero_point` (same rank as x)."""
    if spec.kind == "uniform":
        return fake_quant_uniform(x, scale, zero_point, spec.qmin, spec.qmax)
    if spec.kind == "log1m":
        return fake_quant_log1m(x, scale, spec.qmin, spec.qmax, spec.base)
    return fake_quant_log_signed(x, scale, spec.qmin, spec.qmax, spec.base)
