"""Loading the float model of a job: built-in weights or a checkpoint; errors named by
parameter."""
from __future__ import annotations

import pytest

from qmamba.errors import CheckpointError, ConfigError
from qmamba.jobs.models import builtin_model_names, load_model


def test_builtin_model_with_its_shipped_weights():
    assert builtin_model_names() == ("vim_fmnist", "vmamba_fmnist")
    loaded = load_model("vim_fmnist", use_ema=True)  # built-in weights: nothing to pick from
    assert loaded.name == "vim_fmnist" and loaded.checkpoint is None
    assert loaded.weights.startswith("built-in weights") and not loaded.model.training


def test_checkpoint(tiny_name, tiny_checkpoint):
    loaded = load_model(tiny_name, tiny_checkpoint)
    assert (loaded.name, loaded.checkpoint, loaded.weights) == (tiny_name, tiny_checkpoint, tiny_checkpoint)
    assert loaded.load_info["num_tensors"] > 0


def test_errors_name_the_parameters(tiny_name):
    with pytest.raises(ConfigError) as err:
        load_model(tiny_name, use_ema=True)
    assert str(err.value) == "`use_ema` needs `checkpoint`" and err.value.params == ("use_ema", "checkpoint")
    with pytest.raises(CheckpointError) as err:
        load_model(tiny_name)
    assert err.value.params == ("checkpoint",) and "has no built-in weights" in str(err.value)
