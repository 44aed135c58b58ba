"""`load_checkpoint` and `save_checkpoint`."""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from qmamba.checkpoint.diagnose import fit_error, guess_model, model_label
from qmamba.checkpoint.read import read_checkpoint
from qmamba.checkpoint.state_dict import (
    extract_state_dict,
    fit_shapes,
    listing,
    shape_of,
    strip_prefix,
)
from qmamba.errors import CheckpointError
from qmamba.io_utils import atomic_path
from qmamba.models import contract


def load_checkpoint(model: nn.Module, path: str | os.PathLike, use_ema: bool = False,
                    allow_unsafe_pickle: bool = False, strict: bool = True) -> dict:
    """Load the weights in `path` into `model` (in place).

    Args:
        model: the model to fill; if it has `filter_state_dict(sd) -> sd`, that maps legacy
            key names/shapes (and interpolates position embeddings) first.
        path: a `.safetensors` file or a `torch.save` file (`.pth`, `.pt`, `.bin`, ...).
        use_ema: take the weights under 'model_ema' (error if the file has none).
        allow_unsafe_pickle: fall back to full unpickling for files that contain Python
            objects other than tensors. Unpickling can run arbitrary code: only for
            trusted files.
        strict: as in `load_state_dict`; with False, missing/unexpected keys become
            warnings (shape mismatches are still errors).

    Returns:
        {'path', 'format' ('safetensors' | 'torch'), 'source_key' ('model', 'model_ema',
        'state_dict' or None), 'num_tensors', 'warnings': [str, ...], 'metadata' (the
        safetensors metadata, {} for torch files)}. Warnings are also issued with
        `warnings.warn`.

    Raises:
        CheckpointError with a message naming the file and what to do.
    """
    spath = str(path)
    sd, fmt, source_key, metadata, notes = _state_dict_of(spath, use_ema, allow_unsafe_pickle)
    raw_sd = sd
    sd, more = _mapped_onto(model, sd, spath)
    notes += more
    notes += _fit_or_raise(model, sd, spath, strict, raw_sd)
    try:
        model.load_state_dict(sd, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(
            f"loading {spath!r} into {model_label(model)} failed: {e}"
        ) from e
    for n in notes:
        warnings.warn(n, stacklevel=2)
    return {
        "path": spath,
        "format": fmt,
        "source_key": source_key,
        "num_tensors": len(sd),
        "warnings": notes,
        "metadata": metadata,
    }


def _state_dict_of(spath: str, use_ema: bool, allow_unsafe_pickle: bool):
    """(state dict, format, source key, metadata, notes) of the file, `module.` stripped."""
    obj, fmt, metadata = read_checkpoint(spath, allow_unsafe_pickle=allow_unsafe_pickle)
    notes: list[str] = []
    if allow_unsafe_pickle and fmt == "torch":
        notes.append(f"loaded {spath!r} with full unpickling (allow_unsafe_pickle=True)")
    if fmt == "safetensors":
        if use_ema:
            raise CheckpointError(
                f"use_ema was requested but {spath!r} is a safetensors file holding a single "
                "state dict (no 'model_ema' entry)"
            )
        sd, source_key = obj, None
    else:
        sd, source_key, more = extract_state_dict(obj, use_ema=use_ema, path=spath)
        notes += more
    return strip_prefix(sd, "module."), fmt, source_key, metadata, notes


def _mapped_onto(model: nn.Module, sd: dict, spath: str) -> tuple[dict, list[str]]:
    """The state dict after the model's own checkpoint filter (legacy names, position
    embedding sizes), and what the filter said."""
    filt = contract.state_dict_filter(model)
    if filt is None:
        return sd, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mapped = filt(dict(sd))
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {spath!r} could not be mapped onto {model_label(model)}: "
                f"{type(e).__name__}: {e}"
            ) from e
    notes = [str(w.message) for w in caught]
    if caught:
        # The model had to adapt the file (e.g. interpolate pos_embed): say so if the
        # file fits another registered model as it is.
        own = {k: shape_of(v) for k, v in model.state_dict().items()}
        guess = guess_model(sd, exclude=own, use_filter=False)
        if guess is not None and guess[2]:
            notes.append(
                f"{spath!r} was adapted to fit {model_label(model)}, but it fits "
                f"{guess[0]} exactly: this looks like a checkpoint of {guess[0]}"
            )
    return mapped, notes


def _fit_or_raise(model: nn.Module, sd: dict, spath: str, strict: bool, raw_sd: dict) -> list[str]:
    """Raise a readable CheckpointError if `sd` does not fit `model`; notes on what is
    missing or ignored when it fits loosely (strict=False)."""
    model_shapes = {k: shape_of(v) for k, v in model.state_dict().items()}
    missing, unexpected, mismatched = fit_shapes({k: shape_of(v) for k, v in sd.items()}, model_shapes)
    if mismatched or (strict and (missing or unexpected)):
        raise fit_error(spath, model, sd, model_shapes, missing, unexpected, mismatched, strict, raw_sd=raw_sd)
    notes = []
    if missing:
        notes.append(f"{len(missing)} model tensors not in the file kept their current "
                     f"values: {listing(missing)}")
    if unexpected:
        notes.append(f"{len(unexpected)} tensors in the file were ignored: "
                     f"{listing(unexpected)}")
    return notes


def _metadata_str(metadata: Mapping | None) -> dict[str, str] | None:
    if not metadata:
        return None
    out = {}
    for k, v in metadata.items():
        if not isinstance(k, str):
            raise TypeError(f"metadata keys must be str, got {k!r}")
        out[k] = v if isinstance(v, str) else json.dumps(v, default=str, sort_keys=True)
    return out


def save_checkpoint(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
                    path: str | os.PathLike, metadata: Mapping | None = None) -> Path:
    """Write a safetensors file atomically (no partial file is ever left at `path`).

    `metadata` values that are not str are stored as JSON. Tensors are saved detached,
    on CPU and contiguous; tensors sharing storage (tied weights) are copied.
    """
    from safetensors.torch import save_file

    if isinstance(model_or_state_dict, nn.Module):
        sd = model_or_state_dict.state_dict()
    else:
        sd = model_or_state_dict
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state dict entry {k!r} is a {type(v).__name__}, not a tensor")
        t = v.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        sid = (storage.data_ptr(), storage.nbytes())
        if t.numel() and (sid in seen or storage.nbytes() != t.numel() * t.element_size()):
            t = t.clone()  # shares storage with another tensor, or is a view of a larger one
        elif t.numel():
            seen.add(sid)
        tensors[k] = t
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=_metadata_str(metadata))
    return target
