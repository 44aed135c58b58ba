"""The eval job as a library call: a float model or a saved quantized one, its result,
the JSON it writes, its errors (named by parameter)."""
from __future__ import annotations

import json

import pytest

from qmamba.errors import QMambaError
from qmamba.jobs import EvalJob, QuantizeJob, run_eval, run_quantize


def test_float_and_saved_quantized_model(tiny_name, tiny_checkpoint, tmp_path):
    quantized = run_quantize(QuantizeJob(model=tiny_name, checkpoint=tiny_checkpoint, method="minmax", w_bits=8,
                                         a_bits=8, calib_size=8, eval_limit=16, batch_size=8, device="cpu",
                                         sqnr_images=0), tmp_path / "q")
    result = run_eval(EvalJob(quantized=str(tmp_path / "q" / "model"), eval_limit=16, batch_size=8, device="cpu"),
                      tmp_path / "e.json")
    assert result.accuracy.top1 == quantized.quantized.top1
    assert result.report["result"]["top1"] == result.accuracy.top1 and result.report["method"] == "minmax"
    assert json.loads((tmp_path / "e.json").read_text())["result"] == result.report["result"]
    assert result.out == tmp_path / "e.json" and result.model.qmamba_config.setting == "W8A8"
    fp = run_eval(EvalJob(model=tiny_name, checkpoint=tiny_checkpoint, eval_limit=16, batch_size=8, device="cpu"))
    assert fp.accuracy.top1 == quantized.fp.top1 and fp.report["setting"] == "FP" and fp.out is None


@pytest.mark.parametrize("fields, params", [
    ({}, ("model", "quantized")),
    ({"model": "vim_tiny", "use_ema": True}, ("use_ema", "checkpoint")),
    ({"model": "vim_tiny"}, ("checkpoint",)),
    ({"quantized": "q", "checkpoint": "c"}, ("checkpoint", "quantized")),
    ({"model": "vim_tiny", "batch_size": 0}, ("batch_size",)),
    ({"model": "vim_tiny", "seed": -1}, ("seed",)),
])
def test_errors_name_the_job_fields(fields, params):
    with pytest.raises(QMambaError) as err:
        run_eval(EvalJob(**{"device": "cpu", **fields}))
    assert err.value.params == params
    assert set(params) <= set(EvalJob.__dataclass_fields__)


def test_out_must_be_a_file(tmp_path):
    with pytest.raises(QMambaError) as err:
        run_eval(EvalJob(model="vim_tiny", device="cpu"), out=tmp_path)
    assert err.value.params == ("out",) and "is a folder" in str(err.value)
