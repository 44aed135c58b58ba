"""NaN / inf during calibration stop it with the quantization point (and, through the
pipeline, the first float layer producing them) named."""
from __future__ import annotations

import copy

import pytest
import torch
from quant_helpers import image_loader

from qmamba.errors import NumericsError
from qmamba.pipeline import calibrate
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine import quantize
from qmamba.report.progress import Progress

CFG = QuantConfig.from_recipe("minmax", 8, 8, calib_size=8)


def _broken(model, param: str, value: float):
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.get_parameter(param).view(-1)[0] = value
    return m


def test_quantize_names_the_point(vim_model):
    m = _broken(vim_model, "layers.1.mixer.in_proj.weight", float("nan"))
    with pytest.raises(NumericsError, match=r"quantization point head\.input_quant \(role linear_input"):
        quantize(m, CFG, image_loader(8, 28))


def test_weight_nan_is_named_at_its_weight_point(vim_model):
    m = _broken(vim_model, "patch_embed.proj.weight", float("inf"))
    with pytest.raises(NumericsError, match=r"weight reaching quantization point patch_embed\.proj\.weight_quant"):
        quantize(m, CFG, image_loader(8, 28))


def test_pipeline_names_the_float_layer(vim_model):
    m = _broken(vim_model, "layers.1.mixer.in_proj.weight", float("nan"))
    batches = [x for x, _ in image_loader(8, 28)]
    with pytest.raises(NumericsError) as err:
        calibrate(m, CFG, batches, torch.device("cpu"), Progress(enabled=False))
    assert "first in layer layers.1.mixer.in_proj" in str(err.value)


def test_pipeline_blames_quantization_when_the_float_model_is_finite(vim_model, monkeypatch):
    import qmamba.quant.engine.steps as engine

    real_build = engine.build_quantizer

    def overflowing_stem(plan, config, directions, clip=1.0):
        q = real_build(plan, config, directions, clip)
        if plan.name == "patch_embed.proj.input_quant":
            return torch.nn.Sequential(q, _Inf())
        return q

    monkeypatch.setattr(engine, "build_quantizer", overflowing_stem)
    batches = [x for x, _ in image_loader(8, 28)]
    with pytest.raises(NumericsError, match="float model stays finite.*quantization before this point"):
        calibrate(vim_model, CFG, batches, torch.device("cpu"), Progress(enabled=False))


class _Inf(torch.nn.Module):
    def forward(self, x):
        return x * float("inf")
