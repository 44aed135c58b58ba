"""Explicit quantization points.

A `QuantPoint` is a named slot in a model where one tensor may be quantized. Models
create their points at construction time and call them in `forward`, so every place
that quantization can touch is visible in the module tree (for example
`model.layers[3].mixer.forward_branch.quant.h`). Until a quantizer is attached a point
is the identity and holds no parameters or buffers, so the model's state dict is the
upstream one.

Each point declares a `role` (what kind of tensor it sees) and optional `tags` (for
example `"first"` / `"last"` for the patch embedding and the classifier), which is how
recipes choose quantizers: never by matching substrings of layer names.

Points inside the selective scan (`ssm.A`, `ssm.B`, `ssm.h`) are not called on tensors
by the model; the scan asks them for a `scan_spec()` and runs the quantized recurrence
itself (see `qmamba.ops.quantized_scan`).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn

# Roles a point can declare. Activation roles are quantized by `forward`; weight roles
# see a layer's weight; scan roles are consumed inside the selective scan.
WEIGHT_ROLES = ("weight",)
ACT_ROLES = (
    "linear_input",  # input of a Linear / Conv (normed tokens, dt_r, y before out_proj, MLP inputs)
    "ssm.u",  # u = silu(conv(x)): input of x_proj and of the scan
    "ssm.delta",  # delta after softplus
    "ssm.C",  # C_t
    "ssm.y",  # scan output y_t = C_t . h_t
    "ssm.z",  # the gate silu(z)
)
SCAN_ROLES = ("ssm.A", "ssm.B", "ssm.h")
ALL_ROLES = WEIGHT_ROLES + ACT_ROLES + SCAN_ROLES


class QuantPoint(nn.Module):
    """Identity until `quantizer` is set; `observer` sees tensors during calibration."""

    def __init__(
        self,
        role: str,
        tags: tuple[str, ...] = (),
        channel_axis: int = -1,
        weight_channel_dims: tuple[int, ...] = (0,),
    ):
        """`channel_axis`: the channel axis of the activations this point sees (-1 for
        Linear inputs, 1 for Conv inputs); `weight_channel_dims`: the output-channel
        dims of a weight (per-channel scales keep them; (0, 1) for VMamba's stacked
        (directions, out, in) projection weights)."""
        super().__init__()
        if role not in ALL_ROLES:
            raise ValueError(f"unknown quantization role {role!r}; known: {ALL_ROLES}")
        self.role = role
        self.tags = frozenset(tags)
        self.channel_axis = channel_axis
        self.weight_channel_dims = tuple(weight_channel_dims)
        self.quantizer: nn.Module | None = None
        # Set only inside a calibration context (qmamba.quant.calibration); never persisted.
        self.observer = None

    @property
    def is_scan_point(self) -> bool:
        return self.role in SCAN_ROLES

    @property
    def active(self) -> bool:
        return self.quantizer is not None or self.observer is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer(x)
        if self.quantizer is None:
            return x
        return self.quantizer(x)

    def scan_spec(self):
        """The quantizer of a scan point as a `qmamba.ops.ScanPointQuant`, or None."""
        if self.quantizer is None:
            return None
        return self.quantizer.scan_spec()

    def extra_repr(self) -> str:
        tags = f", tags={sorted(self.tags)}" if self.tags else ""
        return f"role={self.role!r}{tags}"


def iter_points(model: nn.Module) -> Iterator[tuple[str, QuantPoint]]:
    """All quantization points of `model` with their qualified names, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, QuantPoint):
            yield name, module
