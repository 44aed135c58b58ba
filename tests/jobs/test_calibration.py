"""The jobs' calibration step: NaN/inf explained (the float model's first layer that
produces them, or the quantization), out-of-memory retries with smaller batches, the
engine's batches, the SQNR that must not throw a calibration away."""
from __future__ import annotations

import pytest
import torch

from qmamba.errors import NumericsError, OutOfMemoryError
from qmamba.jobs import QuantizeJob, run_quantize
from qmamba.jobs.calibration import calibrate, calibration_batches, first_images, point_sqnr
from qmamba.models.registry import create_model
from qmamba.quant.config import QuantConfig
from qmamba.report.progress import Progress

CFG = QuantConfig.from_recipe("minmax", 8, 8, calib_size=8)


@pytest.fixture
def tiny_model(tiny_name):
    torch.manual_seed(0)
    return create_model(tiny_name).eval()


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return list(torch.randn(8, 1, 28, 28, generator=g).split(4))  # 2 x (4, 1, 28, 28)


def test_names_the_float_layer(tiny_model):
    with torch.no_grad():
        tiny_model.get_parameter("layers.0.mixer.in_proj.weight").view(-1)[0] = float("nan")
    with pytest.raises(NumericsError) as err:
        calibrate(tiny_model, CFG, _batches(), torch.device("cpu"), Progress(enabled=False))
    assert "first in layer layers.0.mixer.in_proj" in str(err.value)


def test_blames_quantization_when_the_float_model_is_finite(tiny_model, monkeypatch):
    import qmamba.quant.engine.steps as engine

    real_build = engine.build_quantizer

    def overflowing_stem(plan, config, directions, clip=1.0):
        q = real_build(plan, config, directions, clip)
        if plan.name == "patch_embed.proj.input_quant":
            return torch.nn.Sequential(q, _Inf())
        return q

    monkeypatch.setattr(engine, "build_quantizer", overflowing_stem)
    with pytest.raises(NumericsError, match="float model stays finite.*quantization before this point"):
        calibrate(tiny_model, CFG, _batches(), torch.device("cpu"), Progress(enabled=False))


class _Inf(torch.nn.Module):
    def forward(self, x):
        return x * float("inf")


def test_calibration_out_of_memory_retries_with_smaller_batches(monkeypatch, tiny_name, tiny_checkpoint,
                                                                tmp_path, capsys):
    import qmamba.quant.engine.algorithm as engine

    real = engine.quantize
    sizes = []

    def quantize(model, config, batches, **kwargs):
        sizes.append(max(int(x.shape[0]) for x in batches))
        if sizes[-1] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real(model, config, batches, **kwargs)

    monkeypatch.setattr(engine, "quantize", quantize)
    job = QuantizeJob(model=tiny_name, checkpoint=tiny_checkpoint, method="minmax", w_bits=8, a_bits=8,
                      calib_size=8, eval_limit=8, batch_size=8, device="cpu", sqnr_images=0)
    result = run_quantize(job)
    assert sizes == [8, 4, 2] and result.report["calibration"]["batch_size"] == 2
    assert "retrying with 4" in capsys.readouterr().err
    monkeypatch.setattr(engine, "quantize", lambda *a, **k: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory")))
    with pytest.raises(OutOfMemoryError, match="even with one image per batch") as err:
        run_quantize(job)
    assert err.value.params == ("device", "calib_size")


def test_calibration_batches_put_the_search_images_first():
    images = [torch.zeros(5, 1, 2, 2), torch.ones(7, 1, 2, 2)]
    search = QuantConfig.from_recipe("qmamba", 4, 4).replace(**{"search.samples": 3})
    assert [int(x.shape[0]) for x in calibration_batches(images, 4, search)] == [3, 4, 4, 1]
    assert [int(x.shape[0]) for x in calibration_batches(images, 4, CFG)] == [4, 4, 4]
    assert [int(x.shape[0]) for x in first_images([(images[0], None), images[1]], 6)] == [5, 1]


def test_sqnr_failure_is_a_warning_not_an_error():
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.warns(UserWarning, match="per-point SQNR could not be measured"):
        assert point_sqnr(Broken(), [torch.zeros(1, 1, 2, 2)]) is None
