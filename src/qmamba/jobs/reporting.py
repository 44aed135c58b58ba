"""Parts the job reports share: the versions that made a result, the per-point entries."""
from __future__ import annotations

import platform

import torch
import torch.nn as nn

import qmamba

__all__ = ["points_report", "versions"]


def versions() -> dict:
    return {"qmamba": qmamba.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


def points_report(qmodel: nn.Module, sqnr: dict | None) -> dict:
    """Each quantization point as calibration described it (`qmamba_info["points"]`),
    with its SQNR in dB when measured."""
    points = {}
    for name, info in (getattr(qmodel, "qmamba_info", {}) or {}).get("points", {}).items():
        entry = dict(info)
        if sqnr is not None:
            entry["sqnr_db"] = sqnr.get(name)
        points[name] = entry
    return points
