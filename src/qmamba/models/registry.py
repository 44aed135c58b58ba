"""Model registry: short names, upstream aliases, timm registration.

Every variant is one registered factory function (timm style). `create_model` resolves
aliases (the long upstream factory names) and passes keyword arguments through, so small
variants for tests and built-in models are built by the same code as the official ones.
"""
from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable

import torch
import torch.nn as nn

from qmamba.errors import QMambaError
from qmamba.models.contract import label_set
from qmamba.models.data_config import (  # noqa: F401  (their old home; still imported from here)
    IMAGENET_MEAN,
    IMAGENET_STD,
    imagenet_data_config,
)
from qmamba.models.labels import LabelSet

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}
_ALIASES: dict[str, str] = {}
_LABEL_SETS: dict[tuple[str, int], LabelSet] = {}


def register_model(name: str, aliases: tuple[str, ...] = ()):
    """Decorator: register `fn` under `name` (and upstream alias names)."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _FACTORIES:
            raise ValueError(f"model {name!r} registered twice")
        _FACTORIES[name] = fn
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return deco


def list_models(include_aliases: bool = False) -> list[str]:
    names = sorted(_FACTORIES)
    if include_aliases:
        names += sorted(_ALIASES)
    return names


def resolve_name(name: str) -> str:
    if name in _FACTORIES:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    close = difflib.get_close_matches(name, list(_FACTORIES) + list(_ALIASES), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise QMambaError(
        f"unknown model {name!r}.{hint} Run `qmamba list-models` to see all names."
    )


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a registered model by short or upstream name.

    `pretrained=True` is accepted for timm compatibility but nothing is downloaded:
    load the released file with `qmamba.load_checkpoint(model, path)`.
    """
    if pretrained:
        raise QMambaError(
            "qmamba never downloads weights: build the model, then call "
            "qmamba.load_checkpoint(model, '/path/to/released_checkpoint.pth')"
        )
    canonical = resolve_name(name)
    model = _FACTORIES[canonical](**kwargs)
    # how to rebuild this exact architecture (saved with quantized models)
    model.qmamba_spec = {"name": canonical, "kwargs": dict(kwargs)}
    return model


def default_label_set(name: str) -> LabelSet:
    """The label set of registered model `name` built with its default arguments.

    The model says it itself: it is built on the meta device (no memory, no weight init),
    once per process.
    """
    canonical = resolve_name(name)
    key = (canonical, id(_FACTORIES[canonical]))
    if key not in _LABEL_SETS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.device("meta"):
                _LABEL_SETS[key] = label_set(_FACTORIES[canonical]())
    return _LABEL_SETS[key]


def register_with_timm() -> None:
    """Make `timm.create_model(name)` work for our names after `import qmamba`."""
    from timm.models import _registry as timm_registry

    for name, fn in _FACTORIES.items():
        if name in timm_registry._model_entrypoints:
            continue

        def entry(pretrained: bool = False, _name: str = name, **kwargs):
            kwargs.pop("pretrained_cfg", None)
            kwargs.pop("pretrained_cfg_overlay", None)
            kwargs.pop("cache_dir", None)
            return create_model(_name, pretrained=pretrained, **kwargs)

        entry.__name__ = name
        entry.__module__ = fn.__module__
        timm_registry.register_model(entry)
