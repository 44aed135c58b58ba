"""`qmamba.load_quantized(path, backend=...)`: a saved quantized model, ready to run on
the backend the caller chooses.

- "simulated" (default): the model as `qmamba.quant.serialize.load_quantized` rebuilds it,
  fake quantization in float (any device; the reference).
- "int": the same model turned into its integer form by `qmamba.integer.to_integer`:
  int8 GEMMs on the weight codes and the integer scan, on a CPU; `model.integer_layers`
  says which layers run integer and why the others stay float.

This sits above both packages so that the serializer (qmamba.quant) never imports the
integer backend, which itself builds on the quantized modules.
"""
from __future__ import annotations

import os

import torch.nn as nn

from qmamba.errors import ConfigError
from qmamba.integer import to_integer
from qmamba.quant import serialize

__all__ = ["BACKENDS", "check_backend", "load_quantized"]

BACKENDS = ("simulated", "int")


def check_backend(backend: str) -> str:
    """`backend` itself when it is one of BACKENDS, else a ConfigError naming it."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown `backend` {backend!r}: use " + " or ".join(map(repr, BACKENDS)))
    return backend


def load_quantized(path: str | os.PathLike, backend: str = "simulated") -> nn.Module:
    """Rebuild the quantized model saved in `path` (`qmamba.save_quantized`) for `backend`:
    "simulated" (fake quantization, the reference) or "int" (integer arithmetic on a CPU).
    CheckpointError if the folder is not a saved model or is damaged, ConfigError for an
    unknown backend (checked before anything is read)."""
    check_backend(backend)
    model = serialize.load_quantized(path)
    return to_integer(model) if backend == "int" else model
