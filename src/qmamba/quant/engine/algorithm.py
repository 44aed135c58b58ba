"""`quantize(model, config, calib_loader)`: block-wise post-training calibration.

The algorithm reads as the steps of `qmamba.quant.engine.steps`; what each recipe adds
comes from the mechanisms its config switches on (`MECHANISMS`, each in its method's
module under qmamba.quant.methods) and from its registered recipe (`adapt`).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
import torch.nn as nn

from qmamba.errors import DataError
from qmamba.models.contract import mark_quantized, quant_info
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine.mechanism import Mechanism
from qmamba.quant.engine.plan import plan_points
from qmamba.quant.engine.steps import (
    CalibrationRun,
    calibrate_group,
    calibrate_head,
    calibrate_stem,
    finish,
    observe_trunk,
)
from qmamba.quant.methods.entropy_groups import EntropyGroups
from qmamba.quant.methods.gptq import GPTQ
from qmamba.quant.methods.hessian import HessianMetric
from qmamba.quant.methods.jlss import JLSS
from qmamba.quant.methods.outliers import Rotations
from qmamba.quant.methods.reparam import Reparameterization
from qmamba.quant.methods.smoothing import Smoothing
from qmamba.quant.recipes import get_recipe, list_recipes

# Every mechanism, in the order their hooks run. GPTQ comes after the mechanisms that
# change a layer's input once it is observed (smoothing, reparameterization).
MECHANISMS: tuple[type[Mechanism], ...] = (Rotations, HessianMetric, EntropyGroups, Smoothing,
                                           Reparameterization, GPTQ, JLSS)


@torch.no_grad()
def quantize(
    model: nn.Module,
    config: QuantConfig,
    calib_loader,
    *,
    device: str | torch.device | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> nn.Module:
    """A quantized copy of `model` (the input model is untouched). `progress(stage, done,
    total)` is told how many blocks are calibrated."""
    config.validate()
    run_start, cpu_start = time.time(), time.process_time()
    qmodel = _working_copy(model, config, device)
    if config.is_float:
        return qmodel
    config = _adapted(config, qmodel)
    mark_quantized(qmodel, config, quant_info(qmodel))
    torch.manual_seed(config.seed)
    images = collect_calibration_images(calib_loader, config.calib_size)
    mechanisms = [cls(config) for cls in MECHANISMS if cls.enabled(config)]
    run = CalibrationRun(qmodel, config, images, next(qmodel.parameters()).device, mechanisms, progress,
                         run_start, cpu_start=cpu_start)
    for m in mechanisms:
        m.prepare(run)  # rotations of the float model, Hessian targets
    plans = plan_points(qmodel, config)
    run.attach_blocks(plans)
    trunk = observe_trunk(run, plans)
    x_fp, x_q = calibrate_stem(run, trunk.stem)
    by_block = [[p for p in plans if p.block == i] for i in range(len(run.blocks))]
    for group in trunk.groups:
        x_fp, x_q = calibrate_group(run, group, by_block, x_fp, x_q)
    run.report("calibrate", len(run.blocks), len(run.blocks))
    calibrate_head(run, trunk.head)
    return finish(run, plans)


def _working_copy(model: nn.Module, config: QuantConfig, device) -> nn.Module:
    """An eval-mode deep copy on `device`, carrying the config and an empty info."""
    qmodel = copy.deepcopy(model).eval()
    if device is not None:
        qmodel.to(device)
    mark_quantized(qmodel, config, {"points": {}, "calibration_seconds": 0.0})
    return qmodel


def _adapted(config: QuantConfig, model: nn.Module) -> QuantConfig:
    """The config changed by its registered recipe for this model (PTQ4VM's VMamba alpha);
    a config whose recipe name is not registered is used as it is."""
    if config.recipe not in list_recipes():
        return config
    return get_recipe(config.recipe).adapted(config, model)


def collect_calibration_images(calib_loader, calib_size: int) -> list[torch.Tensor]:
    """First `calib_size` images of the loader as a list of batches (labels dropped)."""
    batches, n = [], 0
    for item in calib_loader:
        x = item[0] if isinstance(item, list | tuple) else item
        if not torch.is_tensor(x):
            raise DataError("the calibration loader must yield image tensors or (images, labels)")
        take = min(x.shape[0], calib_size - n)
        batches.append(x[:take])
        n += take
        if n >= calib_size:
            break
    if n == 0:
        raise DataError("the calibration loader yielded no images")
    if n < calib_size:
        raise DataError(f"calibration needs {calib_size} images but the data has only {n}")
    return batches
