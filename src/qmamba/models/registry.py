"""Model registry: short names, upstream aliases, default data configs, timm registration.

Every variant is one registered factory function (timm style). `create_model` resolves
aliases (the long upstream factory names) and passes keyword arguments through, so small
variants for tests and built-in models are built by the same code as the official ones.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable

import torch.nn as nn

from qmamba.errors import QMambaError

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}
_ALIASES: dict[str, str] = {}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_data_config(img_size: int = 224, in_chans: int = 3) -> dict:
    """timm-style pretrained/data config of the official ImageNet models."""
    return {
        "input_size": (in_chans, img_size, img_size),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "num_classes": 1000,
    }


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
