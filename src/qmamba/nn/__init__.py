"""The slots that models and quantization share: quantization points, rotation slots,
layers with points, the points of a selective scan.

Models build these in `__init__` and call them in `forward`; the quantization engine
finds them by type and fills them. This package imports neither `qmamba.models` nor
`qmamba.quant`.
"""
from qmamba.nn.layers import QuantConv1d, QuantConv2d, QuantLinear
from qmamba.nn.point import ACT_ROLES, ALL_ROLES, SCAN_ROLES, WEIGHT_ROLES, QuantPoint, iter_points
from qmamba.nn.rotation import InputRotation, idle_rotation_points
from qmamba.nn.ssm_points import SSMQuantPoints

__all__ = [
    "ACT_ROLES",
    "ALL_ROLES",
    "InputRotation",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLinear",
    "QuantPoint",
    "SCAN_ROLES",
    "SSMQuantPoints",
    "WEIGHT_ROLES",
    "idle_rotation_points",
    "iter_points",
]
