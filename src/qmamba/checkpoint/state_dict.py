"""Finding the state dict inside a checkpoint and checking it against a model's."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from qmamba.errors import CheckpointError

SHOW = 5  # names listed per category in a fit error


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(v, torch.Tensor) for v in obj.values()
    )


def _as_state_dict(obj: Any) -> Any:
    if isinstance(obj, nn.Module):  # some files pickle the whole model (unsafe path only)
        return obj.state_dict()
    return obj


def _describe_keys(obj: Mapping) -> str:
    items = []
    for k, v in list(obj.items())[:20]:
        kind = "tensor" if isinstance(v, torch.Tensor) else type(v).__name__
        items.append(f"{k!r} ({kind})")
    more = f", ... (+{len(obj) - 20} more)" if len(obj) > 20 else ""
    return ", ".join(items) + more


def extract_state_dict(obj: Any, use_ema: bool = False, path: str = "<checkpoint>"
                       ) -> tuple[dict[str, torch.Tensor], str | None, list[str]]:
    """Find the state dict in a loaded checkpoint object.

    Returns (state_dict, source_key, warnings). `source_key` is 'model', 'model_ema',
    'state_dict' or None for a bare state dict.
    """
    notes: list[str] = []
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {path!r} holds a {type(obj).__name__}, not a dict of weights"
        )
    if use_ema:
        if "model_ema" not in obj:
            raise CheckpointError(
                f"use_ema was requested but checkpoint {path!r} has no 'model_ema' entry; "
                f"its top-level keys are: {_describe_keys(obj) or '(none)'}"
            )
        key: str | None = "model_ema"
    elif "model" in obj:
        key = "model"
    elif "model_ema" in obj:
        key = "model_ema"
        notes.append(
            f"checkpoint {path!r} has no 'model' entry; using the EMA weights ('model_ema')"
        )
    elif "state_dict" in obj:
        key = "state_dict"
    elif _is_tensor_dict(obj):
        key = None
    else:
        raise CheckpointError(
            f"cannot find the weights in checkpoint {path!r}: expected an entry 'model', "
            f"'model_ema' or 'state_dict', or a plain dict of tensors; its top-level keys "
            f"are: {_describe_keys(obj) or '(none)'}"
        )
    sd = obj if key is None else _as_state_dict(obj[key])
    if not isinstance(sd, Mapping):
        raise CheckpointError(
            f"entry {key!r} of checkpoint {path!r} is a {type(sd).__name__}, not a dict of "
            "weights"
        )
    dropped = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if dropped:
        notes.append(
            f"ignored {len(dropped)} non-tensor entries in the state dict: "
            + ", ".join(map(repr, dropped[:SHOW]))
        )
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"checkpoint {path!r} contains no tensors under {key!r}")
    return sd, key, notes


def strip_prefix(sd: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Remove a leading `prefix` (DDP's 'module.') from every key that has it."""
    if not any(k.startswith(prefix) for k in sd):
        return sd
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        nk = k[len(prefix):] if k.startswith(prefix) else k
        if nk in out:
            raise CheckpointError(
                f"key {nk!r} appears both with and without the {prefix!r} prefix"
            )
        out[nk] = v
    return out


# --------------------------------------------------------------------------- fit check


def shape_of(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def fit_shapes(sd_shapes: Mapping[str, tuple], model_shapes: Mapping[str, tuple]):
    missing = [k for k in model_shapes if k not in sd_shapes]
    unexpected = [k for k in sd_shapes if k not in model_shapes]
    mismatched = [
        (k, sd_shapes[k], model_shapes[k])
        for k in model_shapes
        if k in sd_shapes and tuple(sd_shapes[k]) != tuple(model_shapes[k])
    ]
    return missing, unexpected, mismatched


def format_shape(s: tuple) -> str:
    return "(" + ", ".join(str(int(x)) for x in s) + ")"


def listing(names: list[str]) -> str:
    shown = ", ".join(names[:SHOW])
    return shown + (f", ... (+{len(names) - SHOW} more)" if len(names) > SHOW else "")


