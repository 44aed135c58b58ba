"""Where NaN or inf first appear in a forward pass, for an error message that names it.

Only run after a check has failed (it repeats the forward of one batch with a hook on
every module), so it costs nothing on healthy runs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from qmamba.errors import NumericsError, is_out_of_memory


class _Found(Exception):
    pass


def _tensors(obj) -> list[torch.Tensor]:
    if torch.is_tensor(obj):
        return [obj]
    if isinstance(obj, list | tuple):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


def _nonfinite(obj) -> bool:
    return any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in _tensors(obj))


@torch.no_grad()
def first_nonfinite_module(model: nn.Module, x: torch.Tensor) -> tuple[str, str] | None:
    """(qualified name, class name) of the first module whose output holds NaN or inf
    when `model` runs on `x`, in the order outputs are produced (so the innermost
    module where they appear), or None if the forward stays finite. Name "" is the model
    itself."""
    found: list[tuple[str, str]] = []

    def hook(name):
        def check(module, _args, output):
            if _nonfinite(output):
                found.append((name, type(module).__name__))
                raise _Found
        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()]
    try:
        model(x)
    except _Found:
        pass
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def nonfinite_error(model: nn.Module, x: torch.Tensor, batch_index: int, first_image: int) -> NumericsError:
    """The error for a batch whose logits are not finite, naming where NaN/inf appear."""
    images = f"batch {batch_index} (images {first_image}..{first_image + int(x.shape[0]) - 1})"
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        return NumericsError(f"the input images of {images} contain NaN or inf: check the dataset "
                             "and its transform")
    try:
        where = first_nonfinite_module(model, x)
    except RuntimeError as err:  # e.g. out of memory: the batch had been split to fit
        if not is_out_of_memory(err):
            raise
        where = None
    if where is None:  # not reproducible on a re-run, or the re-run did not fit in memory
        at = "(the layer could not be found: they did not appear again when the batch was re-run)"
    elif where[0] == "":
        at = f"first in the output of the model itself ({where[1]})"
    else:
        at = f"first in the output of layer {where[0]} ({where[1]})"
    return NumericsError(
        f"NaN or inf in the activations on {images}, {at}: for a float model check the "
        "checkpoint; for a quantized model, its calibration (e.g. more bits or more "
        "calibration images)"
    )
