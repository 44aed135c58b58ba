"""`qmamba.load_quantized(path, backend=...)`: the saved model on the simulated (reference)
or the integer backend."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import qmamba
from qmamba.integer import layer_table

TESTS = Path(__file__).resolve().parent
SAVED = TESTS / "quant" / "data" / "saved_v1"
sys.path.insert(0, str(TESTS / "quant"))
sys.path.insert(0, str(TESTS / "quant" / "data"))
from make_saved_v1 import inputs  # noqa: E402


@pytest.mark.parametrize("case,model", [("vim_qmamba_w4a4", "vim"), ("vmamba_minmax_w4a4", "vmamba")])
def test_int_backend_agrees_with_simulated(case, model, one_thread):
    """The integer model agrees with the simulated one to float32 rounding (the tolerance
    of tests/integer/test_convert.py on the same fixtures and inputs)."""
    sim = qmamba.load_quantized(SAVED / case)
    imodel = qmamba.load_quantized(SAVED / case, backend="int")
    explicit = qmamba.load_quantized(SAVED / case, backend="simulated")
    assert imodel.qmamba_backend == "int" and not hasattr(sim, "integer_layers")
    assert all(r["integer"] for r in layer_table(imodel))
    x = inputs(model)
    with torch.no_grad():
        expected = sim(x)
        assert torch.equal(explicit(x), expected)  # "simulated" is the default
        torch.testing.assert_close(imodel(x), expected, rtol=0, atol=1e-5)


def test_unknown_backend_is_a_config_error(tmp_path):
    with pytest.raises(qmamba.ConfigError, match="unknown `backend` 'int8': use 'simulated' or 'int'") as e:
        qmamba.load_quantized(tmp_path / "missing", backend="int8")  # checked before the folder
    assert e.value.params == ("backend",)
