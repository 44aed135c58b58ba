"""Calibration as the jobs run it: `qmamba.quant.engine.quantize` with a
progress stage, restarted with smaller batches when memory runs out, NaN/inf errors
explained, and the per-point SQNR of the result."""
from __future__ import annotations

import gc
import warnings
from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn

import qmamba.quant.engine.algorithm as engine
from qmamba.errors import NumericsError, QMambaError, is_out_of_memory
from qmamba.errors import OutOfMemoryError as QMambaOutOfMemory
from qmamba.eval.nonfinite import first_nonfinite_module
from qmamba.quant import diagnostics
from qmamba.quant.config import QuantConfig
from qmamba.report.progress import Progress

__all__ = ["calibrate", "calibration_batches", "first_images", "float_copy", "point_sqnr"]


def calibrate(model: nn.Module, config: QuantConfig, calib_batches: Sequence[torch.Tensor],
              device: torch.device, progress: Progress, desc: str | None = None) -> nn.Module:
    """`qmamba.quant.engine.quantize` with a progress bar over the blocks.

    A calibration that runs out of memory is restarted with every batch split in halves
    (down to one image per batch), as timm's validate retries with a smaller batch; the
    batch size used is recorded in `qmodel.qmamba_info["calibration_batch_size"]`.
    """
    batches = list(calib_batches)
    while True:
        largest = max((int(x.shape[0]) for x in batches), default=0)
        try:
            with progress.stage(desc or f"calibrating {config.recipe} {config.setting}", unit="block") as st:
                qmodel = engine.quantize(model, config, batches, device=device,
                                         progress=lambda _stage, i, n: st.set_done(i, n))
            qmodel.qmamba_info["calibration_batch_size"] = largest
            return qmodel
        except NumericsError as err:
            raise explain_nonfinite(err, model, batches, device) from err
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            if largest <= 1:
                raise QMambaOutOfMemory(
                    f"calibration ran out of memory on {device} even with one image per batch: "
                    "use a device with more memory, `device` cpu, or a smaller `calib_size`"
                ) from err
        _free_device_memory(device)
        smaller = max(largest // 2, 1)
        progress.message(f"out of memory while calibrating with batches of {largest} images; "
                         f"retrying with {smaller}")
        batches = [part for x in batches for part in x.split(smaller)]


def explain_nonfinite(err: NumericsError, model: nn.Module, batches: Sequence[torch.Tensor],
                      device: torch.device) -> NumericsError:
    """`err` (NaN/inf during calibration) with whether the float model already produces
    them (and in which layer) or only the quantized one does."""
    with torch.no_grad():
        for i, x in enumerate(batches):
            x = x.to(device)
            if x.is_floating_point() and not bool(torch.isfinite(x).all()):
                return NumericsError(f"{err} (calibration batch {i} already holds NaN or inf in the images)")
            where = first_nonfinite_module(model, x)
            if where is not None:
                return NumericsError(f"{err}. The float model already produces them on calibration batch "
                                     f"{i}, first in layer {where[0] or '(the model)'} ({where[1]})")
    return NumericsError(f"{err}. The float model stays finite on these images, so the quantization "
                         "before this point produces them: try more bits or another recipe")


def _free_device_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def float_copy(model: nn.Module, config: QuantConfig) -> nn.Module:
    """The 'fp' recipe: quantize() returns an unquantized copy carrying the config."""
    return engine.quantize(model, config, [])


def calibration_batches(images: Sequence[torch.Tensor], batch_size: int, config: QuantConfig) -> list[torch.Tensor]:
    """Re-batch the calibration images so that the first batch holds exactly the
    `config.search.samples` images the block-output search scores candidates on (the
    engine takes whole batches from the front until it has that many), then
    `batch_size` chunks."""
    x = torch.cat(list(images)) if len(images) > 1 else images[0]
    first = min(config.search.samples, x.shape[0]) if config.search.enabled else 0
    out = [x[:first]] if first else []
    out += list(x[first:].split(batch_size)) if x.shape[0] > first else []
    return out


def first_images(batches: Iterable, n: int) -> list[torch.Tensor]:
    """The first `n` images of `batches` (tensors or (images, labels) pairs)."""
    out, have = [], 0
    for item in batches:
        x = item[0] if isinstance(item, list | tuple) else item
        take = min(int(x.shape[0]), n - have)
        out.append(x[:take])
        have += take
        if have >= n:
            break
    return out


def point_sqnr(qmodel: nn.Module, images: Sequence[torch.Tensor]) -> dict | None:
    """SQNR (dB) per point (`qmamba.quant.diagnostics.point_sqnr`), or None with a
    warning when it cannot be measured: a diagnostic must not throw away a finished
    calibration."""
    try:
        return dict(diagnostics.point_sqnr(qmodel, images))
    except (KeyboardInterrupt, QMambaError):
        raise
    except Exception as e:
        warnings.warn(f"per-point SQNR could not be measured ({type(e).__name__}: {e}); "
                      "the report leaves it out", stacklevel=2)
        return None
