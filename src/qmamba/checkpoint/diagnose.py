"""Readable errors for a checkpoint that does not fit: which registered model it belongs to."""
from __future__ import annotations

import time
import warnings
from collections.abc import Mapping

import torch
import torch.nn as nn

from qmamba.checkpoint.state_dict import SHOW, format_shape, listing, shape_of
from qmamba.errors import CheckpointError, QMambaError
from qmamba.models import contract, registry
from qmamba.models.registry import create_model, list_models

_GUESS_TIME_LIMIT_S = 10.0


def model_label(model: nn.Module) -> str:
    """The registered name of a model built by create_model; else what a timm or user
    model calls itself; else its class name."""
    name = contract.registered_name(model)
    if name is not None:
        return name
    for attr in ("model_name", "name"):  # not our contract: other libraries' models
        v = getattr(model, attr, None)
        if isinstance(v, str) and v:
            return v
    try:
        architecture = contract.data_config(model).get("architecture")  # timm's models
    except QMambaError:
        architecture = None
    return architecture if isinstance(architecture, str) else type(model).__name__


_META_CACHE: dict[tuple[str, int], tuple[nn.Module, dict[str, tuple]] | None] = {}


def _meta_model(name: str, create_model) -> tuple[nn.Module, dict[str, tuple]] | None:
    """Registered model `name` built on the meta device, with its state-dict shapes (cached)."""
    key = (name, id(registry._FACTORIES.get(name)))
    if key not in _META_CACHE:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with torch.device("meta"):
                    cand = create_model(name)
            _META_CACHE[key] = (cand, {k: shape_of(v) for k, v in cand.state_dict().items()})
        except Exception:  # a model that cannot be built on meta is simply not a candidate
            _META_CACHE[key] = None
    return _META_CACHE[key]


def guess_model(sd: Mapping[str, torch.Tensor], exclude: Mapping[str, tuple] | None = None,
                time_limit_s: float = _GUESS_TIME_LIMIT_S, use_filter: bool = True
                ) -> tuple[str, float, bool] | None:
    """Which registered model does this state dict fit best?

    Builds each registered model on the meta device (no memory, no init cost) and compares
    names and shapes, also after the candidate's own `filter_state_dict`. Returns
    (name, score in [0, 1], exact fit) or None. Models whose signature equals `exclude`
    (the model being loaded) are skipped. Gives up after `time_limit_s`.
    """
    raw = {k: shape_of(v) for k, v in sd.items()}
    best: tuple[str, float, bool] | None = None
    best_rank: tuple = ()
    t0 = time.monotonic()
    # models already built (cached) cost nothing: try them first
    names = sorted(list_models(),
                   key=lambda n: (n, id(registry._FACTORIES.get(n))) not in _META_CACHE)
    for name in names:
        if time.monotonic() - t0 > time_limit_s:
            break
        got = _meta_model(name, create_model)
        if got is None:
            continue
        cand, cshapes = got
        if exclude is not None and cshapes == dict(exclude):
            continue
        variants = [raw]
        filt = contract.state_dict_filter(cand)
        if use_filter and filt is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fsd = filt(dict(sd))
                variants.append({k: shape_of(v) for k, v in fsd.items()})
            except Exception:
                pass
        for i, shapes in enumerate(variants):
            is_raw = i == 0  # variants[0] is the file as stored
            matched = sum(1 for k, s in shapes.items() if cshapes.get(k) == s)
            score = matched / max(len(shapes), len(cshapes), 1)
            exact = shapes == cshapes
            # an exact fit as stored beats one that needed the candidate's own remapping
            # (e.g. pos_embed interpolation), which beats a partial fit
            rank = (exact and is_raw, exact, score)
            if best is None or rank > best_rank:
                best, best_rank = (name, score, exact), rank
    return best


def fit_error(path: str, model: nn.Module, sd: Mapping[str, torch.Tensor],
               model_shapes: Mapping[str, tuple], missing, unexpected, mismatched,
               strict: bool, raw_sd: Mapping[str, torch.Tensor] | None = None
               ) -> CheckpointError:
    label = model_label(model)
    parts = []
    if strict and missing:
        parts.append(f"{len(missing)} missing")
    if strict and unexpected:
        parts.append(f"{len(unexpected)} unexpected")
    if mismatched:
        parts.append(f"{len(mismatched)} with a different shape")
    lines = [
        f"checkpoint {path!r} does not fit the model {label}: " + ", ".join(parts)
        + f" (the file has {len(sd)} tensors, the model {len(model_shapes)})."
    ]
    if strict and missing:
        lines.append(f"  missing from the file (the model has them): {listing(missing)}")
    if strict and unexpected:
        lines.append(f"  unexpected in the file (the model lacks them): {listing(unexpected)}")
    if mismatched:
        shown = "; ".join(
            f"{k}: file {format_shape(a)} vs model {format_shape(b)}" for k, a, b in mismatched[:SHOW]
        )
        more = f"; ... (+{len(mismatched) - SHOW} more)" if len(mismatched) > SHOW else ""
        lines.append(f"  shape mismatches: {shown}{more}")
    own_matched = sum(1 for k, s in model_shapes.items()
                      if k in sd and shape_of(sd[k]) == tuple(s))
    own_score = own_matched / max(len(sd), len(model_shapes), 1)
    guess = guess_model(sd if raw_sd is None else raw_sd, exclude=model_shapes)
    if guess is not None:
        name, score, exact = guess
        if exact:
            lines.append(
                f"This looks like a checkpoint of {name} (every tensor fits it): build that "
                f"model instead, e.g. qmamba.create_model({name!r})."
            )
        elif score > own_score and score >= 0.5:
            lines.append(
                f"This looks closest to a checkpoint of {name} ({score:.0%} of the tensors "
                "fit it by name and shape)."
            )
    return CheckpointError("\n".join(lines))


