"""The float model a job starts from: a built-in model with its shipped weights, or any
registered model with a checkpoint file."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch.nn as nn

from qmamba.checkpoint import load_checkpoint
from qmamba.errors import CheckpointError, ConfigError
from qmamba.models.builtin import BUILTIN_MODELS, builtin_weights_path, load_builtin_model
from qmamba.models.registry import create_model, resolve_name

__all__ = ["LoadedModel", "builtin_model_names", "load_model"]


@dataclass
class LoadedModel:
    model: nn.Module
    name: str  # canonical registry name
    weights: str  # human-readable origin of the weights
    checkpoint: str | None  # the checkpoint path given, None for built-in weights
    load_info: dict = field(default_factory=dict)


def builtin_model_names() -> tuple[str, ...]:
    """The built-in Fashion-MNIST models (they ship their weights)."""
    return tuple(BUILTIN_MODELS)


def load_model(name: str, checkpoint: str | os.PathLike | None = None, use_ema: bool = False,
               allow_unsafe_pickle: bool = False) -> LoadedModel:
    """A float model in eval mode: a built-in model with its shipped weights, or any
    registered model with a checkpoint file."""
    canonical = resolve_name(name)  # unknown names: QMambaError with suggestions
    if checkpoint is None:
        return _builtin(canonical, use_ema)
    model = create_model(canonical)
    info = load_checkpoint(model, checkpoint, use_ema=use_ema, allow_unsafe_pickle=allow_unsafe_pickle)
    return LoadedModel(model.eval(), canonical, str(checkpoint), str(checkpoint),
                       {k: info.get(k) for k in ("format", "source_key", "num_tensors", "warnings")})


def _builtin(name: str, use_ema: bool) -> LoadedModel:
    builtin = builtin_model_names()
    if name in builtin:
        model = load_builtin_model(name)
        return LoadedModel(model.eval(), name, f"built-in weights ({builtin_weights_path(name).name})",
                           None, {"metadata": dict(getattr(model, "builtin_metadata", {}) or {})})
    if use_ema:
        raise ConfigError("`use_ema` needs `checkpoint`")
    raise CheckpointError(
        f"model {name!r} has no built-in weights: pass `checkpoint` PATH, the released "
        f"checkpoint file (the built-in models {', '.join(builtin)} ship their weights)"
    )
