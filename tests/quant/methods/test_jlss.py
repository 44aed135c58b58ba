"""PTQ4VM's block-wise joint tuning of smoothing factors and step sizes (JLSS)."""
import pytest
import torch
from quant_helpers import image_loader

from qmamba.errors import ConfigError
from qmamba.nn.point import iter_points
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine import quantize
from qmamba.quant.methods.jlss import learnable_tensors
from qmamba.quant.quantizers import SmoothedInput, SmoothedWeight
from qmamba.quant.serialize import load_quantized, save_quantized

TUNE = {"tune.jlss": True, "tune.steps": 6, "tune.samples": 8, "tune.lr": 5e-3}


def _ptq4vm(model, tune: bool):
    cfg = QuantConfig.from_recipe("ptq4vm", 4, 4, calib_size=8)
    if tune:
        cfg = cfg.replace(**TUNE)
    return quantize(model, cfg, image_loader(8, 28))


def test_jlss_never_worsens_a_block_and_changes_the_tuned_tensors(vim_model):
    plain, tuned = _ptq4vm(vim_model, False), _ptq4vm(vim_model, True)
    log = tuned.qmamba_info["jlss"]
    assert len(log) == len(list(tuned.quant_blocks()))
    assert all(r["loss_after"] <= r["loss_before"] for r in log)
    assert any(r["loss_after"] < r["loss_before"] for r in log)
    before = torch.cat([t.flatten() for t in learnable_tensors(plain.layers[0])])
    after = torch.cat([t.flatten() for t in learnable_tensors(tuned.layers[0])])
    assert before.shape == after.shape and not torch.equal(before, after)
    assert not any(t.requires_grad for t in learnable_tensors(tuned))
    assert all(p.requires_grad for p in tuned.parameters())  # model weights left as they were


def test_jlss_keeps_the_smoothing_of_each_linear_consistent(vim_model):
    tuned = _ptq4vm(vim_model, True)
    pairs = 0
    for module in tuned.modules():
        iq, wq = getattr(module, "input_quant", None), getattr(module, "weight_quant", None)
        if iq is not None and isinstance(iq.quantizer, SmoothedInput):
            assert isinstance(wq.quantizer, SmoothedWeight)
            assert torch.equal(iq.quantizer.smooth, wq.quantizer.smooth)  # x / s and w * s: same s
            pairs += 1
    assert pairs > 0


def test_jlss_model_saves_and_reloads_bit_identically(tmp_path, vim_model):
    tuned = _ptq4vm(vim_model, True)
    save_quantized(tuned, tmp_path / "m")
    x = image_loader(4, 28, seed=3)[0][0]
    with torch.no_grad():
        assert torch.equal(load_quantized(tmp_path / "m")(x), tuned(x))


def test_jlss_needs_smoothing():
    with pytest.raises(ConfigError, match="smoothing"):
        QuantConfig.from_recipe("minmax", 4, 4).replace(**{"tune.jlss": True})


def test_gradient_passes_straight_through_the_quantized_scan(vim_model):
    q = _ptq4vm(vim_model, False)
    mixer_points = [p for _, p in iter_points(q) if p.role == "ssm.h"]
    assert mixer_points and all(p.quantizer is not None for p in mixer_points)
    x = image_loader(2, 28)[0][0].requires_grad_(True)
    q(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_tune_batch_makes_each_step_take_that_many_images(monkeypatch, vim_model):
    import qmamba.quant.methods.jlss as jlss
    sizes = []
    real = jlss.tune_block

    def recording(block, inputs, targets, steps, lr):
        sizes.append([a[0].shape[0] for a, _ in inputs])
        assert [t[0].shape[0] for t, _ in targets] == sizes[-1]
        return real(block, inputs, targets, steps, lr)

    monkeypatch.setattr(jlss, "tune_block", recording)
    cfg = QuantConfig.from_recipe("ptq4vm", 4, 4, calib_size=8).replace(**TUNE, **{"tune.batch": 3})
    quantize(vim_model, cfg, image_loader(8, 28))
    assert sizes and all(s == [3, 3, 2] for s in sizes)  # 8 tuning images in steps of 3


def test_tune_after_search_runs_each_block_s_tuning_after_its_search(monkeypatch, vim_model):
    import qmamba.quant.engine.steps as steps
    import qmamba.quant.methods.jlss as jlss
    calls = []
    real_tune, real_search = jlss.tune_block, steps.search_group
    monkeypatch.setattr(jlss, "tune_block", lambda *a: calls.append("tune") or real_tune(*a))
    monkeypatch.setattr(steps, "search_group", lambda *a, **k: calls.append("search") or real_search(*a, **k))
    base = QuantConfig.from_recipe("ptq4vm", 4, 4, calib_size=8).replace(
        **TUNE, **{"search.enabled": True, "search.candidates": (1.0, 0.8), "search.samples": 4})
    quantize(vim_model, base, image_loader(8, 28))
    blocks = len(calls) // 2
    assert calls == ["tune", "search"] * blocks
    calls.clear()
    tuned = quantize(vim_model, base.replace(**{"tune.after_search": True}), image_loader(8, 28))
    assert calls == ["search", "tune"] * blocks
    assert all(r["loss_after"] <= r["loss_before"] for r in tuned.qmamba_info["jlss"])
    stages = tuned.qmamba_info["stage_cpu_seconds"]  # where the calibration's time went
    assert set(stages) == {"search", "tune", "other"} and all(v >= 0 for v in stages.values())
    assert set(tuned.qmamba_info["stage_seconds"]) == set(stages)


def test_tune_batch_must_be_positive():
    with pytest.raises(ConfigError, match="tune.batch"):
        QuantConfig.from_recipe("ptq4vm", 4, 4).replace(**{"tune.batch": 0})
