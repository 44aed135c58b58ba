"""Quantizer kinds: every quantizer class saves and rebuilds itself.

A saved quantized model (`qmamba.quant.serialize`) stores each non-weight quantizer as
an entry of `quant.json` (`{"type": <saved_type>, ...its attributes}`) and its buffers as
tensors `<prefix>.<buffer>` of `model.safetensors`. The class that wrote an entry is
found again by its `saved_type` in this registry, so adding a quantizer kind is one
class: subclass `SavedQuantizer`, set `saved_type`, implement `saved_attrs` and
`rebuild`, decorate it with `@register_quantizer`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn as nn

from qmamba.errors import CheckpointError

TensorLookup = Callable[[str], torch.Tensor]  # buffer name -> its saved tensor

_KINDS: dict[str, type[SavedQuantizer]] = {}


class SavedQuantizer:
    """Mixin of the nn.Module quantizers that a saved model can hold."""

    saved_type: ClassVar[str]

    def saved_attrs(self) -> dict:
        """The JSON-able constructor arguments that are not buffers."""
        raise NotImplementedError

    @classmethod
    def rebuild(cls, entry: dict, tensor: TensorLookup) -> nn.Module:
        """The quantizer an entry describes; `tensor(name)` gives its saved buffers."""
        raise NotImplementedError

    def save_entry(self, prefix: str, tensors: dict[str, torch.Tensor]) -> dict:
        """Put the buffers into `tensors` under `prefix` and return the entry."""
        for name, buf in self.named_buffers(recurse=False):  # type: ignore[attr-defined]
            tensors[f"{prefix}.{name}"] = buf.contiguous()
        return {"type": self.saved_type, **self.saved_attrs()}


def register_quantizer(cls: type[SavedQuantizer]) -> type[SavedQuantizer]:
    """Class decorator: make `cls` loadable under its `saved_type`."""
    kind = cls.saved_type
    if kind in _KINDS and _KINDS[kind] is not cls:
        raise ValueError(f"quantizer type {kind!r} registered twice")
    _KINDS[kind] = cls
    return cls


def quantizer_types() -> tuple[str, ...]:
    return tuple(sorted(_KINDS))


def save_quantizer(prefix: str, quantizer: nn.Module, tensors: dict[str, torch.Tensor]) -> dict:
    """The entry of `quantizer` (its buffers go into `tensors` under `prefix`)."""
    if not isinstance(quantizer, SavedQuantizer):
        raise CheckpointError(f"cannot save quantizer {type(quantizer).__name__} at {prefix}")
    return quantizer.save_entry(prefix, tensors)


def rebuild_quantizer(prefix: str, entry: dict, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The quantizer saved under `prefix` with this entry."""
    return rebuild_entry(entry, lambda name: tensors[f"{prefix}.{name}"], prefix)


def rebuild_entry(entry: dict, tensor: TensorLookup, where: str = "") -> nn.Module:
    """The quantizer of `entry`, its buffers read through `tensor` (wrappers rebuild their
    inner quantizer with this, on a lookup relative to theirs)."""
    cls = _KINDS.get(entry["type"])
    if cls is None:
        raise CheckpointError(f"unknown quantizer type {entry['type']!r}" + (f" at {where}" if where else ""))
    return cls.rebuild(entry, tensor)
