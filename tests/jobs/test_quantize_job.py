"""The quantize job as a library call: its result, its saved model, its errors (named by
parameter)."""
from __future__ import annotations

import pytest
import torch

from qmamba.errors import ConfigError, QMambaError
from qmamba.jobs import QuantizeJob, run_quantize
from qmamba.quant.serialize import load_quantized


def test_reloaded_model_gives_equal_logits(tmp_path, tiny_name, tiny_checkpoint):
    job = QuantizeJob(model=tiny_name, checkpoint=tiny_checkpoint, method="ptq4vm", w_bits=4, a_bits=8,
                      calib_size=16, eval_limit=16, batch_size=16, device="cpu", sqnr_images=0)
    result = run_quantize(job, tmp_path / "out")
    reloaded = load_quantized(tmp_path / "out" / "model")
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(result.qmodel(x), reloaded(x))
    assert result.report["config"]["act"]["per_token"] is True
    assert "size" in result.report
    # a second run into the same folder replaces its own model folder, leaving nothing else
    again = run_quantize(job.__class__(**{**job.__dict__, "method": "minmax"}), tmp_path / "out")
    assert load_quantized(tmp_path / "out" / "model").qmamba_config.recipe == "minmax"
    assert again.report["method"] == "minmax"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model", "report.json"]


@pytest.mark.parametrize("fields, params", [
    ({"method": "fp", "w_bits": 4}, ("w_bits", "a_bits")),
    ({"batch_size": 0}, ("batch_size",)),
    ({"use_ema": True, "checkpoint": None}, ("use_ema", "checkpoint")),
    ({"calib_size": 5000}, ("calib_size",)),
    ({"eval_limit": 0}, ("eval_limit",)),
    ({"workers": -1}, ("workers",)),
])
def test_errors_name_the_job_fields(tiny_name, tiny_checkpoint, tmp_path, fields, params):
    job = QuantizeJob(**{"model": tiny_name, "checkpoint": tiny_checkpoint, "method": "minmax", "w_bits": 8,
                         "a_bits": 8, "device": "cpu", **fields})
    with pytest.raises(QMambaError) as err:
        run_quantize(job, tmp_path / "out")
    assert err.value.params == params
    assert set(params) <= set(QuantizeJob.__dataclass_fields__)
    assert not (tmp_path / "out").exists()


def test_a_foreign_model_folder_names_out_dir(tiny_name, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("mine")
    with pytest.raises(QMambaError) as err:
        run_quantize(QuantizeJob(model=tiny_name, method="fp", device="cpu"), tmp_path)
    assert err.value.params == ("out_dir",)


def test_config_is_the_recipe_with_the_job_edits():
    job = QuantizeJob(model="vim_tiny", method="qmamba", w_bits="4", a_bits=" 8 ", calib_size=32, seed=3,
                      overrides=("ssm.h_groups=4",))
    config = job.config()
    assert (config.w_bits, config.a_bits, config.calib_size, config.seed) == (4, 8, 32, 3)
    assert config.ssm.h_groups == 4
    with pytest.raises(ConfigError, match="`w_bits`/`a_bits`"):
        QuantizeJob(model="vim_tiny", method="fp", a_bits=4).config()
