"""Loading the released checkpoints (and our own safetensors files) with clear errors.

`load_checkpoint(model, path)` reads `.safetensors` files with safetensors and anything
else with `torch.load(weights_only=True)` (the released Vim/VMamba `.pth` files pickle an
`argparse.Namespace` of training arguments, which is allow-listed). Files that need
arbitrary unpickling are refused unless the caller opts in with `allow_unsafe_pickle=True`
(CLI: `--allow-unsafe-pickle`). The state dict is located inside the usual layouts
(`model`, `model_ema`, `state_dict`, or a bare dict of tensors), DDP's `module.` prefix is
stripped, the model's own `filter_state_dict` maps legacy names/shapes, and the result is
checked against `model.state_dict()` before loading so a wrong file gives one readable
error (with a guess of which registered model the file belongs to).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import time
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from qmamba.errors import CheckpointError, QMambaError
from qmamba.io_utils import atomic_path

__all__ = ["load_checkpoint", "save_checkpoint", "read_checkpoint", "extract_state_dict"]

_UNSAFE_HINT = (
    "pass allow_unsafe_pickle=True (CLI: --allow-unsafe-pickle) only for files from a "
    "source you trust"
)
_SHOW = 5  # names listed per category in a fit error
_GUESS_TIME_LIMIT_S = 10.0


# --------------------------------------------------------------------------- reading


def _check_path(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise CheckpointError(
            f"checkpoint {str(path)!r} is a directory: give the path of the checkpoint file "
            "(.pth / .pt / .safetensors) inside it"
        )
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {e.strerror or e}") from e


def _corrupt(path: Path, detail: object) -> CheckpointError:
    return CheckpointError(
        f"cannot read checkpoint {str(path)!r}: the file is corrupt or truncated, or not a "
        f"PyTorch/safetensors checkpoint ({detail}); download or copy it again"
    )


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e
    except Exception as e:  # damaged headers surface as other types too (found by fuzzing)
        raise _corrupt(path, _first_line(e)) from e
    return tensors, metadata


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def _first_bytes(path: Path, n: int = 4) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _load_torch(path: Path, allow_unsafe_pickle: bool) -> Any:
    if allow_unsafe_pickle:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (zipfile.BadZipFile, EOFError, RuntimeError, pickle.UnpicklingError) as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise _corrupt(path, f"{type(e).__name__}: {first[:200]}") from e
        except (ModuleNotFoundError, AttributeError) as e:
            raise CheckpointError(
                f"checkpoint {str(path)!r} pickles Python objects whose code is not "
                f"available here ({e}); import the module that defines them first, or "
                "re-save the weights alone with qmamba.save_checkpoint"
            ) from e
        except Exception as e:  # unpickling damaged data fails in many ways
            raise _corrupt(path, _first_line(e)) from e
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"GLOBAL ([\w.]+)", msg)
        if m:
            raise CheckpointError(
                f"checkpoint {str(path)!r} contains Python objects other than tensors "
                f"(it refers to {m.group(1)!r}); unpickling it can run arbitrary code, so it "
                f"was not loaded. If you trust the file, {_UNSAFE_HINT}."
            ) from e
        if _first_bytes(path, 1) == b"\x80":
            # A pickle stream, but not one torch.save wrote (e.g. pickle.dump with protocol
            # >= 4): the safe loader cannot parse it at all.
            raise CheckpointError(
                f"checkpoint {str(path)!r} is a plain Python pickle (not written by "
                "torch.save) that the safe loader cannot read; unpickling it can run "
                f"arbitrary code, so it was not loaded. If you trust the file, {_UNSAFE_HINT}, "
                "or re-save it with qmamba.save_checkpoint."
            ) from e
        raise _corrupt(path, "not a pickle / zip archive torch.load understands") from e
    except (zipfile.BadZipFile, EOFError) as e:
        raise _corrupt(path, type(e).__name__) from e
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _corrupt(path, first[:200]) from e
    except Exception as e:  # the safe unpickler on damaged data: struct.error, IndexError, ...
        raise _corrupt(path, _first_line(e)) from e


def read_checkpoint(path: str | os.PathLike, allow_unsafe_pickle: bool = False
                    ) -> tuple[Any, str, dict[str, str]]:
    """Read a checkpoint file; return (object, format, safetensors metadata)."""
    p = Path(path)
    _check_path(p)
    if p.suffix == ".safetensors":
        tensors, meta = _load_safetensors(p)
        return tensors, "safetensors", meta
    obj = _load_torch(p, allow_unsafe_pickle)
    return obj, "torch", {}


# --------------------------------------------------------------------------- layouts


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
            + ", ".join(map(repr, dropped[:_SHOW]))
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


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _fit(sd_shapes: Mapping[str, tuple], model_shapes: Mapping[str, tuple]):
    missing = [k for k in model_shapes if k not in sd_shapes]
    unexpected = [k for k in sd_shapes if k not in model_shapes]
    mismatched = [
        (k, sd_shapes[k], model_shapes[k])
        for k in model_shapes
        if k in sd_shapes and tuple(sd_shapes[k]) != tuple(model_shapes[k])
    ]
    return missing, unexpected, mismatched


def _fmt_shape(s: tuple) -> str:
    return "(" + ", ".join(str(int(x)) for x in s) + ")"


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f", ... (+{len(names) - _SHOW} more)" if len(names) > _SHOW else "")


def _model_label(model: nn.Module) -> str:
    """The registered name of a model built by create_model; else what a timm or user
    model calls itself; else its class name."""
    from qmamba.models import contract

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
    from qmamba.models import registry

    key = (name, id(registry._FACTORIES.get(name)))
    if key not in _META_CACHE:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with torch.device("meta"):
                    cand = create_model(name)
            _META_CACHE[key] = (cand, {k: _shape(v) for k, v in cand.state_dict().items()})
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
    try:
        from qmamba.models.registry import create_model, list_models
    except Exception:  # pragma: no cover - registry always importable in the package
        return None
    raw = {k: _shape(v) for k, v in sd.items()}
    best: tuple[str, float, bool] | None = None
    best_rank: tuple = ()
    t0 = time.monotonic()
    from qmamba.models import contract, registry

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
                variants.append({k: _shape(v) for k, v in fsd.items()})
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


def _fit_error(path: str, model: nn.Module, sd: Mapping[str, torch.Tensor],
               model_shapes: Mapping[str, tuple], missing, unexpected, mismatched,
               strict: bool, raw_sd: Mapping[str, torch.Tensor] | None = None
               ) -> CheckpointError:
    label = _model_label(model)
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
        lines.append(f"  missing from the file (the model has them): {_listing(missing)}")
    if strict and unexpected:
        lines.append(f"  unexpected in the file (the model lacks them): {_listing(unexpected)}")
    if mismatched:
        shown = "; ".join(
            f"{k}: file {_fmt_shape(a)} vs model {_fmt_shape(b)}" for k, a, b in mismatched[:_SHOW]
        )
        more = f"; ... (+{len(mismatched) - _SHOW} more)" if len(mismatched) > _SHOW else ""
        lines.append(f"  shape mismatches: {shown}{more}")
    own_matched = sum(1 for k, s in model_shapes.items()
                      if k in sd and _shape(sd[k]) == tuple(s))
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


# --------------------------------------------------------------------------- public API


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
    from qmamba.models import contract  # here: qmamba.models imports this module

    spath = str(path)
    obj, fmt, metadata = read_checkpoint(path, allow_unsafe_pickle=allow_unsafe_pickle)
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
    del obj
    sd = strip_prefix(sd, "module.")

    raw_sd = sd
    filt = contract.state_dict_filter(model)
    if filt is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                sd = filt(dict(sd))
            except CheckpointError:
                raise
            except Exception as e:
                raise CheckpointError(
                    f"checkpoint {spath!r} could not be mapped onto {_model_label(model)}: "
                    f"{type(e).__name__}: {e}"
                ) from e
        notes += [str(w.message) for w in caught]
        if caught:
            # The model had to adapt the file (e.g. interpolate pos_embed): say so if the
            # file fits another registered model as it is.
            own = {k: _shape(v) for k, v in model.state_dict().items()}
            guess = guess_model(raw_sd, exclude=own, use_filter=False)
            if guess is not None and guess[2]:
                notes.append(
                    f"{spath!r} was adapted to fit {_model_label(model)}, but it fits "
                    f"{guess[0]} exactly: this looks like a checkpoint of {guess[0]}"
                )

    model_shapes = {k: _shape(v) for k, v in model.state_dict().items()}
    missing, unexpected, mismatched = _fit(
        {k: _shape(v) for k, v in sd.items()}, model_shapes
    )
    if mismatched or (strict and (missing or unexpected)):
        raise _fit_error(spath, model, sd, model_shapes, missing, unexpected, mismatched, strict,
                         raw_sd=raw_sd)
    if missing:
        notes.append(f"{len(missing)} model tensors not in the file kept their current "
                     f"values: {_listing(missing)}")
    if unexpected:
        notes.append(f"{len(unexpected)} tensors in the file were ignored: "
                     f"{_listing(unexpected)}")
    try:
        model.load_state_dict(sd, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(
            f"loading {spath!r} into {_model_label(model)} failed: {e}"
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
