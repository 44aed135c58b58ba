"""The explicit rotation slot of a Linear layer's input (Quamba, MambaQuant).

Every `QuantLinear` owns an `InputRotation` (attribute `input_rotation`), the identity
with no buffers until a recipe sets it, so state dicts stay upstream's. Once set with an
orthogonal matrix R (n, n) and optional smoothing factors s (n,), it maps the layer's
input x to T(x) = (x / s) R along the channel axis, *before* the layer's input point, so
the input is quantized in the rotated basis; the layer's weight is folded offline once,
W <- (W * s) R (`fold_into_weight`), so the float product is unchanged:

    T(x) W'^T = (x / s) R R^T (W * s)^T = x W^T.

A Hadamard matrix in its Kronecker form R = (P (x) S) / sqrt(n) (`factors` = (m, s),
`qmamba.quant.methods.hadamard.kronecker_pair`) is applied online factor by factor
(`kronecker_apply`: m s (m + s) multiply-adds per row instead of n^2); the dense product
with `matrix` is its reference (`transform_reference`). The factors are rebuilt from
(m, s), not stored: the state dict keeps the one `matrix`.

`online=False` records a rotation whose input side is folded into the layer that
produces the input (MambaQuant's dt_proj: dt_r R = u (R^T W_dt)^T, folded into x_proj's
dt rows): the slot then does nothing at run time, the matrix is kept for the record.

Layers built with `quantize_input=False` (Vim's x_proj, whose input u is the scan point
`ssm.u`) have no input point of their own; their slot owns one (`quant`, role
`linear_input`, tag `rotated`), planned and called only while the slot is active, so the
rotated input is quantized there and the scan still sees u through `ssm.u` unrotated.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from qmamba.nn.point import QuantPoint
from qmamba.quant.methods.hadamard import kronecker_apply, kronecker_factors, kronecker_pair


class InputRotation(nn.Module):
    def __init__(self, channel_axis: int = -1, own_point: bool = False, tags: tuple[str, ...] = ()):
        super().__init__()
        self.channel_axis = channel_axis
        self.online = True
        self.kind = ""  # what the matrix is (for reports): e.g. "hadamard", "klt_hadamard"
        self.quant = (
            QuantPoint("linear_input", (*tags, "rotated"), channel_axis=channel_axis) if own_point else None
        )

    @property
    def active(self) -> bool:
        return hasattr(self, "matrix")

    @property
    def smoothed(self) -> bool:
        return hasattr(self, "smooth")

    def set(self, matrix: torch.Tensor, smooth: torch.Tensor | None = None, online: bool = True, kind: str = "",
            factors: tuple[int, int] | None = None) -> None:
        """Activate the slot with R (n, n) and optional smoothing factors s (n,); `factors`
        (m, s) says R is the Kronecker Hadamard matrix (P (x) S) / sqrt(n) of
        `kronecker_pair(n)` (applied factor by factor online)."""
        n = matrix.shape[0]
        if matrix.shape != (n, n) or (smooth is not None and smooth.shape != (n,)):
            raise ValueError(f"rotation needs R (n, n) and s (n,), got {tuple(matrix.shape)}"
                             f" and {None if smooth is None else tuple(smooth.shape)}")
        if factors is not None and tuple(factors) != kronecker_factors(n):
            raise ValueError(f"factors {tuple(factors)} are not the Kronecker Hadamard factors of {n} "
                             f"({kronecker_factors(n)})")
        for name in ("matrix", "smooth", "kron_p", "kron_s"):
            if hasattr(self, name):
                delattr(self, name)
        self.register_buffer("matrix", matrix.detach().float().clone())
        if smooth is not None:
            self.register_buffer("smooth", smooth.detach().float().clone())
        if factors is not None:
            p, s = kronecker_pair(n)  # +-1, float64
            # not in the state dict: rebuilt from (m, s); 1 / sqrt(n) folded into P
            self.register_buffer("kron_p", (p / float(n) ** 0.5).float(), persistent=False)  # (m, m)
            self.register_buffer("kron_s", s.float(), persistent=False)  # (s, s)
        self.online = bool(online)
        self.kind = kind

    @property
    def factors(self) -> tuple[int, int] | None:
        """(m, s) when the matrix is the Kronecker Hadamard (P (x) S) / sqrt(m s), else None."""
        if not hasattr(self, "kron_p"):
            return None
        return int(self.kron_p.shape[0]), int(self.kron_s.shape[0])

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """T(x) = (x / s) R along the channel axis (whatever `online` says); a Kronecker
        Hadamard R factor by factor (equal to `transform_reference` up to float rounding)."""
        return self._rotate(x, factored=self.factors is not None)

    def transform_reference(self, x: torch.Tensor) -> torch.Tensor:
        """T(x) = (x / s) R as one dense product with `matrix`."""
        return self._rotate(x, factored=False)

    def _rotate(self, x: torch.Tensor, factored: bool) -> torch.Tensor:
        axis = self.channel_axis % x.dim()
        xc = x.movedim(axis, -1)  # (..., n)
        if self.smoothed:
            xc = xc / self.smooth.to(xc.dtype)
        if factored:
            y = kronecker_apply(xc, self.kron_p.to(xc.dtype), self.kron_s.to(xc.dtype))  # (..., n)
        else:
            y = xc @ self.matrix.to(xc.dtype)  # (..., n)
        return y.movedim(-1, axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        if self.online:
            x = self.transform(x)
        return x if self.quant is None else self.quant(x)

    def fold_into_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """W' = (W * s) R for a weight (out, in): the offline half of the rotation."""
        w = weight.detach().double()
        if self.smoothed:
            w = w * self.smooth.double()[None, :]
        return (w @ self.matrix.double()).to(weight.dtype)

    def describe(self) -> dict:
        out = {"kind": self.kind, "size": int(self.matrix.shape[0]), "online": self.online,
               "smoothing": self.smoothed}
        if self.factors is not None:  # only then: the other slots' records stay as they were
            out["factors"] = list(self.factors)
        return out

    def extra_repr(self) -> str:
        if not self.active:
            return "identity"
        kron = "" if self.factors is None else f", factors={self.factors}"
        return f"kind={self.kind!r}, n={self.matrix.shape[0]}, online={self.online}, smoothing={self.smoothed}{kron}"


def idle_rotation_points(model: nn.Module) -> set[int]:
    """ids of the points owned by inactive rotation slots (not planned, never called)."""
    return {
        id(m.quant) for m in model.modules()
        if isinstance(m, InputRotation) and m.quant is not None and not m.active
    }
