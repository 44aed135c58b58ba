"""Atomic JSON/text writers and conversion of results to strict JSON."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from qmamba.io_utils import atomic_write


def jsonable(obj: Any) -> Any:
    """`obj` as plain JSON types, valid under strict parsers.

    Tensors become numbers or lists, dataclasses dicts, tuples lists, paths strings. JSON
    has no infinity or NaN: +-inf become the strings "inf"/"-inf" (an SQNR of a point that
    loses nothing is inf dB) and NaN becomes null.
    """
    if obj is None or isinstance(obj, bool | str | int):
        return obj
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.item() if obj.numel() == 1 and obj.dim() == 0 else obj.tolist())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return jsonable(obj.item())
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays
        return jsonable(obj.tolist())
    return str(obj)


def dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented strict JSON, atomically; returns the path."""
    text = dumps(obj)  # convert first: a failure leaves nothing behind
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)
