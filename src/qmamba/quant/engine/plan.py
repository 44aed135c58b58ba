"""Planning: which quantization points get a quantizer, at how many bits, in which block."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from qmamba.nn.point import QuantPoint, iter_points
from qmamba.nn.rotation import idle_rotation_points
from qmamba.quant.config import QuantConfig


@dataclass
class PointPlan:
    name: str
    point: QuantPoint
    bits: int
    block: int | None = None  # index in model.quant_blocks(); None = stem/head
    observer: object | None = None
    info: dict = field(default_factory=dict)  # reported per point (clip, smoothing, ...)
    searchable: bool = True  # False once a mechanism fixed its quantizer (smoothing, reparam)

    @property
    def role(self) -> str:
        return self.point.role


def plan_points(model: nn.Module, config: QuantConfig) -> list[PointPlan]:
    """Which points get a quantizer, at how many bits (roles and tags decide; the points
    of rotation slots only while their slot is active)."""
    plans = []
    idle = idle_rotation_points(model)
    for name, point in iter_points(model):
        if id(point) in idle:
            continue
        if point.role.startswith("ssm.") and point.role != "ssm.u" and not config.ssm.quantize:
            continue
        bits = config.w_bits if point.role == "weight" else config.a_bits
        if config.first_last_bits is not None and point.tags & {"first", "last"}:
            bits = config.first_last_bits
        if point.role in config.role_bits:
            bits = config.role_bits[point.role]
            if bits is None:  # this role stays in float
                continue
        plans.append(PointPlan(name, point, bits))
    return plans


def assign_blocks(plans: list[PointPlan], blocks: list[nn.Module]) -> None:
    """Set each plan's `block` to the index of the calibration block that holds its point."""
    owner = {}
    for i, block in enumerate(blocks):
        for module in block.modules():
            owner[id(module)] = i
    for plan in plans:
        plan.block = owner.get(id(plan.point))


def scan_directions(model: nn.Module) -> dict[int, int]:
    """id(h point) -> number of scan directions sharing it (VMamba: 4)."""
    out = {}
    for module in model.modules():
        h = getattr(module, "h", None)
        if isinstance(h, QuantPoint) and h.role == "ssm.h":
            out[id(h)] = int(getattr(module, "directions", 1))
    return out
