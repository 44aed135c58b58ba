"""Quantization primitives: pure functions on tensors (no state, no modules).

Everything broadcasts: `scale` / `zero_point` have the rank of `x` with size 1 on the
reduced dimensions (the `keepdim=True` shape that `reduce_minmax` returns), or are
scalars. Codes are integer-valued float tensors (they become the stored integers when a
model is saved). The elementwise fake-quantization math is the one of
`qmamba.ops.scan_quant_spec` (shared with the scan kernels); the functions here that
return fake-quantized values call it, and the code functions (`quantize`,
`log_quantize`, `log1m_quantize`) are their exact integer halves:
`dequantize(quantize(x)) == fake_quant_uniform(x)` bit for bit (the tests check it).

Bit widths: any int in [2, 16] (`validate_bits`).

Code ranges (`qrange`):
  * asymmetric uniform: [0, 2^b - 1] with an integer zero point;
  * symmetric uniform: the *restricted* range [-(2^(b-1) - 1), 2^(b-1) - 1], zero point
    0, so the grid is symmetric about 0 (one code of the two's-complement range, -2^(b-1),
    is not used);
  * log1m (LtSQ for A_bar): [0, 2^b - 1], x_hat = 1 - s * base^(-q);
  * log_signed (LtSQ anchored at 0): magnitude codes m in [0, 2^(b-1) - 1] (the spec's
    qmin/qmax, `log_signed_qrange`), m = 2^(b-1) - 1 meaning exactly 0, plus a sign. The
    stored code is the sign-magnitude integer k = sign(x) * (qmax - m) in the symmetric
    range [-(2^(b-1) - 1), 2^(b-1) - 1] (k = 0 is zero; |k| grows with |x|; the order of
    codes is the order of values).

Granularity is a tuple of kept dims: per tensor `()`, per channel `(axis,)`, per token
`(token_axis,)`; per group along any axis: `group_view` reshapes that axis into
(n_groups, group_size) and `group_keep_dims` gives the kept dims of the view.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from qmamba.errors import ConfigError
from qmamba.ops.scan_quant_spec import (
    codes_log1m,
    codes_log_signed,
    codes_uniform,
    fake_quant_log1m,
    fake_quant_log_signed,
    fake_quant_uniform,
    log_grid_lookup,
)

MIN_BITS = 2
MAX_BITS = 16
SQRT2 = math.sqrt(2.0)

__all__ = [
    "MIN_BITS",
    "MAX_BITS",
    "SQRT2",
    "validate_bits",
    "qrange",
    "log1m_qrange",
    "log_signed_qrange",
    "normalize_dims",
    "reduce_minmax",
    "per_tensor",
    "per_channel",
    "per_token",
    "group_view",
    "group_unview",
    "group_keep_dims",
    "choose_qparams",
    "minmax_qparams",
    "quantize",
    "dequantize",
    "fake_quant",
    "log_quantize",
    "log_dequantize",
    "log_fake_quant",
    "log1m_quantize",
    "log1m_dequantize",
    "log1m_fake_quant",
    "sqnr_db",
    "sample_values",
]


# ----------------------------------------------------------------------------- bits, ranges


def validate_bits(bits) -> int:
    """`bits` as an int; any integer in [2, 16] is accepted (ConfigError otherwise).

    Booleans and floats (even 4.0) are rejected so that a mistyped option does not pass
    silently; 1 bit has no useful grid (a symmetric 1-bit range is {0}).
    """
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise ConfigError(
            f"bit width must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r} "
            f"({type(bits).__name__})"
        )
    b = int(bits)
    if not MIN_BITS <= b <= MAX_BITS:
        raise ConfigError(f"bit width must be an integer in [{MIN_BITS}, {MAX_BITS}], got {b}")
    return b


def qrange(bits, symmetric: bool) -> tuple[int, int]:
    """Uniform code range: symmetric -> (-(2^(b-1)-1), 2^(b-1)-1) (restricted, symmetric
    grid); asymmetric -> (0, 2^b - 1)."""
    b = validate_bits(bits)
    if symmetric:
        q = 2 ** (b - 1) - 1
        return -q, q
    return 0, 2**b - 1


def log1m_qrange(bits) -> tuple[int, int]:
    """Code range of the log1m grid (LtSQ for A_bar): (0, 2^b - 1)."""
    b = validate_bits(bits)
    return 0, 2**b - 1


def log_signed_qrange(bits) -> tuple[int, int]:
    """Magnitude code range of the log_signed grid, as `ScanPointQuant` expects it:
    (0, 2^(b-1) - 1); the top code means exactly 0 and the sign is the extra bit."""
    b = validate_bits(bits)
    return 0, 2 ** (b - 1) - 1


# ----------------------------------------------------------------------------- granularity


def normalize_dims(dims: Sequence[int], ndim: int) -> tuple[int, ...]:
    """Non-negative, sorted, unique dims; ConfigError when one is out of range."""
    out = []
    for d in dims:
        if not -ndim <= d < ndim:
            raise ConfigError(f"dim {d} out of range for a tensor with {ndim} dims")
        out.append(d % ndim)
    return tuple(sorted(set(out)))


def reduce_minmax(
    x: torch.Tensor, keep_dims: Sequence[int] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """(min, max) over every dim not in `keep_dims`, with keepdim=True shapes."""
    keep = normalize_dims(keep_dims, x.dim())
    red = tuple(d for d in range(x.dim()) if d not in keep)
    if not red:
        return x.clone(), x.clone()
    return x.amin(dim=red, keepdim=True), x.amax(dim=red, keepdim=True)


def per_tensor() -> tuple[int, ...]:
    return ()


def per_channel(axis: int) -> tuple[int, ...]:
    return (axis,)


def per_token(token_axis: int) -> tuple[int, ...]:
    return (token_axis,)


def group_view(x: torch.Tensor, axis: int, group_size: int) -> torch.Tensor:
    """View `x` with `axis` split into (n_groups, group_size) (n_groups at `axis`).

    Quantize per group with `keep_dims=group_keep_dims(axis, other_kept_dims)` on the
    view, then `group_unview(view, axis)`.
    """
    axis = normalize_dims((axis,), x.dim())[0]
    size = x.shape[axis]
    if (
        isinstance(group_size, bool)
        or not isinstance(group_size, numbers.Integral)
        or group_size < 1
    ):
        raise ConfigError(f"group size must be a positive integer, got {group_size!r}")
    if size % group_size:
        raise ConfigError(f"group size {group_size} does not divide dim {axis} of size {size}")
    shape = x.shape[:axis] + (size // group_size, int(group_size)) + x.shape[axis + 1 :]
    return x.reshape(shape)


def group_unview(xg: torch.Tensor, axis: int) -> torch.Tensor:
    """Inverse of `group_view(x, axis, g)`: merges dims `axis` and `axis + 1`."""
    axis = normalize_dims((axis,), xg.dim() - 1)[0]
    return xg.flatten(axis, axis + 1)


def group_keep_dims(
    axis: int, keep_dims: Sequence[int] = (), ndim: int | None = None
) -> tuple[int, ...]:
    """Kept dims on `group_view(x, axis, g)` for one range per group (and per kept dim).

    `axis` and `keep_dims` refer to the dims of the *original* tensor (give `ndim` when
    any of them is negative); dims after `axis` move one to the right in the view.
    """
    if ndim is not None:
        axis = normalize_dims((axis,), ndim)[0]
        keep_dims = normalize_dims(keep_dims, ndim)
    elif axis < 0 or any(d < 0 for d in keep_dims):
        raise ConfigError("negative dims need `ndim`")
    keep = {d + 1 if d > axis else d for d in keep_dims if d != axis}
    keep.add(axis)
    return tuple(sorted(keep))


# ----------------------------------------------------------------------------- uniform


def _as_tensor(v, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v.float()
    device = like.device if like is not None else None
    return torch.tensor(float(v), dtype=torch.float32, device=device)


def choose_qparams(xmin, xmax, bits, symmetric: bool, eps: float = 1e-8):
    """(scale, zero_point) float32 tensors from a range (tensors broadcast elementwise).

    Asymmetric: the range is widened to contain 0, (lo, hi) = (min(xmin, 0), max(xmax, 0)),
    scale = (hi - lo) / (qmax - qmin), zero_point = clamp(qmin - round(lo / scale)) (an
    integer-valued float, so 0 is exactly representable). Symmetric: scale =
    max(|xmin|, |xmax|) / qmax, zero_point = 0. scale >= eps always.
    """
    qmin, qmax = qrange(bits, symmetric)
    xmin = _as_tensor(xmin)
    xmax = _as_tensor(xmax, xmin)
    if symmetric:
        amax = torch.maximum(xmin.abs(), xmax.abs())
        scale = torch.clamp(amax / qmax, min=eps)
        return scale, torch.zeros_like(scale)
    lo = torch.clamp(xmin, max=0.0)
    hi = torch.clamp(xmax, min=0.0)
    scale = torch.clamp((hi - lo) / float(qmax - qmin), min=eps)
    zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
    return scale, zero_point


def minmax_qparams(x: torch.Tensor, bits, symmetric: bool = False, keep_dims: Sequence[int] = ()):
    """(scale, zero_point, qmin, qmax) from the min/max of `x` at the given granularity."""
    xmin, xmax = reduce_minmax(x.detach().float(), keep_dims)
    scale, zp = choose_qparams(xmin, xmax, bits, symmetric)
    qmin, qmax = qrange(bits, symmetric)
    return scale, zp, qmin, qmax


def quantize(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int) -> torch.Tensor:
    """Codes clamp(round(x / scale) + zero_point, qmin, qmax) (round half to even);
    `scan_quant_spec.codes_uniform`."""
    return codes_uniform(x, scale, zero_point, qmin, qmax)


def dequantize(codes: torch.Tensor, scale, zero_point) -> torch.Tensor:
    return (codes - zero_point) * scale


class _FakeQuantSTE(torch.autograd.Function):
    """Values of `fake_quant_uniform`; gradient 1 for x where round(x/s)+zp is inside
    [qmin, qmax] (the torch.fake_quantize convention), 0 where it is clipped."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):
        with torch.no_grad():
            v = torch.round(x / scale) + zero_point  # the unclamped code
            mask = (v >= qmin) & (v <= qmax)
            out = fake_quant_uniform(x, scale, zero_point, qmin, qmax)
        ctx.save_for_backward(mask)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (mask,) = ctx.saved_tensors
        grad_x = grad_out * mask.to(grad_out.dtype)
        return grad_x, None, None, None, None


def fake_quant(
    x: torch.Tensor,
    scale,
    zero_point,
    qmin: int,
    qmax: int,
    learnable_scale: bool = False,
    grad_scale: float | None = None,
) -> torch.Tensor:
    """Uniform fake quantization with a straight-through gradient for `x`.

    Values are exactly `scan_quant_spec.fake_quant_uniform`. Gradient w.r.t. x: 1 where
    the unclipped code round(x/s)+zp lies in [qmin, qmax], 0 elsewhere.

    `learnable_scale=True` (block-wise tuning) also gives `scale` (and `zero_point`, if it
    requires grad) the LSQ gradient: d x_hat / d s = round(x/s) - x/s inside the range,
    qmin - zp / qmax - zp where clipped; `grad_scale` multiplies the scale gradient (LSQ
    uses 1 / sqrt(numel * qmax)). The forward values do not change.
    """
    if not learnable_scale:
        return _FakeQuantSTE.apply(x, scale, zero_point, qmin, qmax)
    with torch.no_grad():
        value = fake_quant_uniform(x, scale, zero_point, qmin, qmax)
    s = scale
    if grad_scale is not None:
        s = scale * grad_scale + (scale - scale * grad_scale).detach()
    v = torch.clamp(x / s + zero_point, qmin, qmax)
    v = v + (torch.round(v) - v).detach()
    surrogate = (v - zero_point) * s
    # exact forward values, gradients of the LSQ surrogate
    return value + (surrogate - surrogate.detach())


# ----------------------------------------------------------------------------- log grids


def _check_base(base: float) -> float:
    base = float(base)
    if not base > 1.0 or not math.isfinite(base):
        raise ConfigError(f"log base must be a finite number > 1, got {base}")
    return base


def log_quantize(x: torch.Tensor, scale, bits, base: float = 2.0) -> torch.Tensor:
    """Signed codes k of the log_signed grid (anchored at 0, sign kept).

    m = the spec's magnitude code in [0, qmax], qmax = 2^(b-1) - 1
    (`scan_quant_spec.codes_log_signed`: the threshold grid, about
    clamp(round(-log_base(|x| / s)), 0, qmax)), k = sign(x) * (qmax - m) in [-qmax, qmax];
    k = 0 is exactly 0.
    """
    base = _check_base(base)
    qmin, qmax = log_signed_qrange(bits)
    m = codes_log_signed(x, scale, qmin, qmax, base)
    return torch.sign(x) * (qmax - m) + 0.0  # + 0.0 turns -0.0 into 0.0


def log_dequantize(codes: torch.Tensor, scale, bits, base: float = 2.0) -> torch.Tensor:
    """sign(k) * s * p_(qmax - |k|) (p_m = base^-m, the spec's table), and 0 for k = 0."""
    base = _check_base(base)
    qmin, qmax = log_signed_qrange(bits)
    m = qmax - codes.abs()
    val = torch.sign(codes) * scale * log_grid_lookup(m, base, qmin, qmax)
    return torch.where(codes == 0, torch.zeros_like(val), val)


def log_fake_quant(x: torch.Tensor, scale, bits, base: float = 2.0) -> torch.Tensor:
    """log_signed fake quantization (`scan_quant_spec.fake_quant_log_signed`)."""
    base = _check_base(base)
    qmin, qmax = log_signed_qrange(bits)
    return fake_quant_log_signed(x, scale, qmin, qmax, base)


def log1m_quantize(x: torch.Tensor, scale, bits, base: float = 2.0) -> torch.Tensor:
    """Codes q in [0, 2^b - 1] of the log1m grid (`scan_quant_spec.codes_log1m`: the
    threshold grid, about clamp(round(-log_base((1 - x) / s)), 0, 2^b - 1)); x = 1 and
    anything above maps to the top code, the value closest to 1."""
    base = _check_base(base)
    qmin, qmax = log1m_qrange(bits)
    return codes_log1m(x, scale, qmin, qmax, base)


def log1m_dequantize(codes: torch.Tensor, scale, base: float = 2.0) -> torch.Tensor:
    """1 - s * p_q (p_q = base^-q, the spec's table)."""
    base = _check_base(base)
    top = int(codes.nan_to_num(0.0).max()) if codes.numel() else 0
    top = (1 << max(top, 1).bit_length()) - 1  # 2^b - 1 >= the largest code: few tables
    return 1.0 - scale * log_grid_lookup(codes, base, 0, top)


def log1m_fake_quant(x: torch.Tensor, scale, bits, base: float = 2.0) -> torch.Tensor:
    """log1m fake quantization (`scan_quant_spec.fake_quant_log1m`)."""
    base = _check_base(base)
    qmin, qmax = log1m_qrange(bits)
    return fake_quant_log1m(x, scale, qmin, qmax, base)


# ----------------------------------------------------------------------------- metrics, sampling


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """10 log10(sum ref^2 / sum (ref - approx)^2) in float64; inf when equal."""
    ref = reference.detach().double()
    err = (ref - approx.detach().double()).pow(2).sum().item()
    sig = ref.pow(2).sum().item()
    if err == 0.0:
        return math.inf
    if sig == 0.0:
        return -math.inf
    return 10.0 * math.log10(sig / err)


def sample_values(x: torch.Tensor, max_values: int = 2**20, seed: int = 0) -> torch.Tensor:
    """A deterministic, seeded subsample of the values of `x` (flattened), at most
    `max_values`; all values (in order) when `x` is small enough."""
    flat = x.detach().reshape(-1)
    n = flat.numel()
    if n <= max_values:
        return flat
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if n <= 2**26:
        idx = torch.randperm(n, generator=gen)[:max_values]
    else:  # with replacement: randperm of huge n would cost n int64s
        idx = torch.randint(0, n, (max_values,), generator=gen)
    return flat[idx.to(flat.device)]
