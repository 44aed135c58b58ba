"""The recipe registry: one place that knows every recipe.

A recipe is a named composition of the engine's mechanisms: a function that sets the
fields of a fresh `QuantConfig` (already holding the recipe name and bit widths), and,
where the paper says so, an `adapt(config, model)` that changes the config for a model
family (PTQ4VM smooths VMamba with another alpha). Each recipe lives in its own module of
this package and registers itself:

    @register_recipe("minmax", group="baseline", summary="per-tensor min/max ranges")
    def minmax(cfg):
        cfg.weight.observer = "minmax"

Every module of `qmamba.quant.recipes` is imported when the registry is first read, so
adding a recipe is adding one file. Every list of recipe names (CLI choices and help, the
demo, the benchmark targets) comes from `list_recipes()`.

Every literature baseline `X` also exists as `X+base` (group `on_base`): `X`'s own
mechanisms on the strong base (`qmamba.quant.recipes.base`: the machinery `qmamba` uses
that is no paper's contribution), so a table can show each baseline as its paper
publishes it and on the same footing as QMamba.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qmamba.errors import ConfigError

if TYPE_CHECKING:
    import torch.nn as nn

    from qmamba.quant.config import QuantConfig

# The groups, in the order tables list them.
GROUPS = ("float", "baseline", "method", "ablation", "literature", "on_base")
BASE_SUFFIX = "+base"
# The demo runs each literature baseline (as published and on the base) at these two
# settings only, so that `make demo` stays within 10 minutes on 2 cores; the accuracy
# benchmark (`python -m qmamba.bench accuracy`) runs every recipe at every setting.
LITERATURE_DEMO_SETTINGS = ("W8A8", "W4A4")
BASE_DEMO_SETTINGS = ("W4A4",)  # the X+base rows: where the base matters most
BASE_RECIPE = "qmamba_base"  # whose configure is the strong base


@dataclass(frozen=True)
class Recipe:
    name: str
    configure: Callable[[QuantConfig], None]  # sets the fields of a fresh config in place
    group: str  # one of GROUPS
    summary: str  # one line for help texts and tables
    adapt: Callable[[QuantConfig, nn.Module], QuantConfig] | None = None  # family-specific changes
    # the bit settings the demo runs it at by default (None: every setting)
    demo_settings: tuple[str, ...] | None = None
    # an ablation row: (the full recipe, the addition this recipe leaves out); the
    # accuracy benchmark then judges "<addition> helps in <full recipe>"
    ablates: tuple[str, str] | None = None

    @property
    def quantizes(self) -> bool:
        return self.group != "float"

    def adapted(self, config: QuantConfig, model: nn.Module) -> QuantConfig:
        """`config` changed for this model (the same config when the recipe has no rule)."""
        return config if self.adapt is None else self.adapt(config, model)


_RECIPES: dict[str, Recipe] = {}
_loaded = False


def register_recipe(name: str, *, group: str, summary: str, adapt=None, demo_settings=None, ablates=None):
    """Decorator: register the config function it decorates as recipe `name`
    (`ablates`: (full recipe, what this one leaves out) for an ablation row)."""
    if group not in GROUPS:
        raise ValueError(f"recipe {name!r}: unknown group {group!r} (one of {GROUPS})")

    def deco(fn: Callable[[QuantConfig], None]):
        if name in _RECIPES:
            raise ValueError(f"recipe {name!r} registered twice")
        settings = tuple(demo_settings) if demo_settings is not None else None
        _RECIPES[name] = Recipe(name, fn, group, summary, adapt, settings,
                                tuple(ablates) if ablates is not None else None)
        return fn

    return deco


def _load_all() -> None:
    """Import every recipe module of this package once (they register themselves)."""
    global _loaded
    if _loaded:
        return
    package = importlib.import_module("qmamba.quant.recipes")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name != "registry":
            importlib.import_module(f"qmamba.quant.recipes.{info.name}")
    _loaded = True


def list_recipes(group: str | None = None) -> tuple[str, ...]:
    """Recipe names, by group (GROUPS order), then by name; only `group`'s when given.
    The `X+base` variants of the literature baselines are listed in group `on_base`."""
    _load_all()
    if group is not None and group not in GROUPS:
        raise ValueError(f"unknown recipe group {group!r} (one of {GROUPS})")
    on_base = [_on_base(r) for r in _RECIPES.values() if r.group == "literature"]
    ordered = sorted([*_RECIPES.values(), *on_base], key=lambda r: (GROUPS.index(r.group), r.name))
    return tuple(r.name for r in ordered if group is None or r.group == group)


def _on_base(stem: Recipe) -> Recipe:
    """`stem` on the strong base: its own fields first, then the base's (which quantizes
    every point and adds MSE observers, the block search and the h layout)."""
    base = _RECIPES[BASE_RECIPE]

    def configure(cfg: QuantConfig) -> None:
        stem.configure(cfg)
        base.configure(cfg)

    configure.__doc__ = f"{stem.name} on the strong base (qmamba.quant.recipes.base)."
    configure.__module__ = stem.configure.__module__
    return Recipe(stem.name + BASE_SUFFIX, configure, "on_base", f"{stem.summary}; on the strong base",
                  stem.adapt, BASE_DEMO_SETTINGS)


def get_recipe(name: Any) -> Recipe:
    """The recipe called `name`; ConfigError with the closest names otherwise."""
    _load_all()
    if isinstance(name, str) and name.endswith(BASE_SUFFIX):
        stem = _RECIPES.get(name[: -len(BASE_SUFFIX)])
        if stem is not None and stem.group == "literature":
            return _on_base(stem)
    if name not in _RECIPES:
        names = list_recipes()
        close = difflib.get_close_matches(str(name), names, n=2, cutoff=0.4)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"unknown recipe {name!r}.{hint} Known recipes: {', '.join(names)}")
    return _RECIPES[name]
