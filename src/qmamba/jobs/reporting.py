"""Parts the job reports share: the versions that made a result, the model's label set,
the per-point entries."""
from __future__ import annotations

import platform

import torch
import torch.nn as nn

import qmamba
from qmamba.models.contract import label_set, quant_info

__all__ = ["label_set_record", "points_report", "versions"]


def versions() -> dict:
    return {"qmamba": qmamba.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


def label_set_record(model: nn.Module) -> dict:
    """Which classes the model's outputs are: the label set's name and size."""
    labels = label_set(model)
    return {"name": labels.name, "num_classes": labels.num_classes}


def points_report(qmodel: nn.Module, sqnr: dict | None) -> dict:
    """Each quantization point as calibration described it (`qmamba_info["points"]`),
    with its SQNR in dB when measured."""
    points = {}
    for name, info in quant_info(qmodel).get("points", {}).items():
        entry = dict(info)
        if sqnr is not None:
            entry["sqnr_db"] = sqnr.get(name)
        points[name] = entry
    return points
