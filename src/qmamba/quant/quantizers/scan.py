"""The in-loop quantizer of the selective scan (A_bar, B_bar u, h): `ScanQuantizer`.

A uniform or LtSQ log grid with TGQ time groups; the scan reads it via `scan_spec()`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from qmamba.ops.scan_quant_spec import ScanPointQuant, apply_scan_quant
from qmamba.quant.quantizers.registry import SavedQuantizer, TensorLookup, register_quantizer


@register_quantizer
class ScanQuantizer(SavedQuantizer, nn.Module):
    """In-loop quantizer of the selective scan: uniform or LtSQ grid, TGQ time groups.

    `scale`/`zero_point` are (G, K, N') (see `qmamba.ops.scan_quant_spec`);
    `group_index` (L,) maps each time step to its group (TGQ), absent for G = 1.
    `kind` is the grid (uniform, log1m, log_signed), not the saved type.
    """

    saved_type = "scan"

    def __init__(
        self,
        kind: str,
        bits: int,
        scale: torch.Tensor,
        zero_point: torch.Tensor | None,
        qmin: int,
        qmax: int,
        base: float = 2.0,
        group_index: torch.Tensor | None = None,
        includes_u: bool = True,
    ):
        super().__init__()
        self.kind = kind
        self.includes_u = includes_u  # B point only: quantizes B_bar*u (True) or B_bar
        self.bits = bits
        self.qmin, self.qmax = int(qmin), int(qmax)
        self.base = float(base)
        self.register_buffer("scale", scale.detach().float().clone())
        zp = torch.zeros_like(self.scale) if zero_point is None else zero_point.detach().float().clone()
        self.register_buffer("zero_point", zp)
        gi = torch.zeros(0, dtype=torch.long) if group_index is None else group_index.detach().long().clone()
        self.register_buffer("group_index", gi)

    @property
    def num_groups(self) -> int:
        return int(self.scale.shape[0])

    def scan_spec(self) -> ScanPointQuant:
        return ScanPointQuant(
            kind=self.kind,
            scale=self.scale,
            zero_point=self.zero_point if self.kind == "uniform" else None,
            qmin=self.qmin,
            qmax=self.qmax,
            base=self.base,
            group_index=self.group_index if self.group_index.numel() else None,
        )

    def fake_quant(self, x: torch.Tensor, channel_dim: int = 1, state_dim: int = -1, time_dim: int | None = None) -> torch.Tensor:
        """Fake-quantize a tensor laid out like the scan's (b, d, l, n) (for analysis and tests)."""
        b, d, l, n = x.shape
        spec = self.scan_spec()
        scale, zp = spec.expand_params(d, n, device=x.device)  # (G, d, n)
        groups = spec.groups_for_length(l, device=x.device)  # (l,)
        scale = scale[groups].permute(1, 0, 2)[None]  # (1, d, l, n)
        zp = zp[groups].permute(1, 0, 2)[None]
        return apply_scan_quant(x.float(), spec, scale, zp)

    def describe(self) -> dict:
        grid = {"uniform": "uniform", "log1m": "ltsq_log1m", "log_signed": "ltsq_log_signed"}[self.kind]
        info = {
            "grid": grid,
            "bits": self.bits,
            "groups": self.num_groups,
            "scale_shape": list(self.scale.shape),
        }
        if self.kind != "uniform":
            info["log_base"] = self.base
        if self.group_index.numel():
            bounds = (torch.nonzero(self.group_index[1:] != self.group_index[:-1]).flatten() + 1).tolist()
            info["group_starts"] = [0, *bounds]
        return info

    def extra_repr(self) -> str:
        return f"kind={self.kind}, bits={self.bits}, groups={self.num_groups}, scale={tuple(self.scale.shape)}"

    def saved_attrs(self) -> dict:
        return {"kind": self.kind, "bits": self.bits, "qmin": self.qmin, "qmax": self.qmax,
                "base": self.base, "includes_u": self.includes_u}

    @classmethod
    def rebuild(cls, entry: dict, tensor: TensorLookup) -> ScanQuantizer:
        gi = tensor("group_index")
        return cls(entry["kind"], entry["bits"], tensor("scale"), tensor("zero_point"), entry["qmin"],
                   entry["qmax"], entry["base"], gi if gi.numel() else None, entry["includes_u"])
