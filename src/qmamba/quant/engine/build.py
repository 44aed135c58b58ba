"""Building: the quantizer of a planned point from its observer, for one clipping candidate."""
from __future__ import annotations

from qmamba.quant.config import QuantConfig
from qmamba.quant.engine.observe import WeightCapture
from qmamba.quant.engine.plan import PointPlan
from qmamba.quant.methods import builders
from qmamba.quant.quantizers import twin_uniform
from qmamba.quant.quantizers.log_sqrt2 import log_sqrt2_quantizer

TWIN_ROLES = ("ssm.u", "ssm.z")  # SiLU outputs: twin uniform quantization (PTQ4ViT)


def build_quantizer(plan: PointPlan, config: QuantConfig, directions: dict[int, int], clip=1.0):
    """The quantizer of `plan` for one search candidate `clip` (a clipping ratio; for
    twin uniform points a (D1, exponent) pair, None for the covering one)."""
    obs, role, bits = plan.observer, plan.role, plan.bits
    if role == "weight":
        channel_dims = plan.point.weight_channel_dims
        return builders.weight_quantizer(obs.weight, bits, config.weight.observer, channel_dims, clip)
    if role in TWIN_ROLES and config.vit_ptq.twin_uniform:
        xmin, xmax = obs.range(bits)
        candidate = clip if isinstance(clip, tuple) else None
        return twin_uniform.twin_quantizer(float(xmin.min()), float(xmax.max()), bits, candidate)
    if role == config.vit_ptq.log_sqrt2_role == "ssm.delta":
        q = log_sqrt2_quantizer(obs.samples(), bits)
        q.scale.mul_(clip)
        return q
    if role == "ssm.A":
        return builders.a_bar_quantizer(obs, bits, config.ssm, clip)
    if role == "ssm.B":
        return builders.b_bar_quantizer(obs, bits, config.ssm, clip)
    if role == "ssm.h":
        return builders.h_quantizer(obs, bits, config.ssm, directions.get(id(plan.point), 1), clip)
    symmetric = config.outlier.act_symmetric
    if role == "ssm.delta":
        return builders.delta_quantizer(obs, bits, config.ssm, clip, symmetric=symmetric)
    xmin, xmax = obs.range(bits)
    return builders.act_quantizer(xmin, xmax, bits, clip, obs.granularity, symmetric)


def search_candidates(plan: PointPlan, config: QuantConfig) -> list:
    """What the search tries at a point; the first entry is what calibration built."""
    if plan.role in TWIN_ROLES and config.vit_ptq.twin_uniform:
        xmin, xmax = plan.observer.range(plan.bits)
        return twin_uniform.candidates(float(xmin.min()), float(xmax.max()), plan.bits)
    return [1.0, *(c for c in config.search.candidates if c != 1.0)]


def searchable(plan: PointPlan, config: QuantConfig) -> bool:
    """Whether the block search may change this point's quantizer."""
    if plan.role == "weight":
        return config.vit_ptq.search_weights and plan.searchable and isinstance(plan.observer, WeightCapture)
    return plan.searchable
