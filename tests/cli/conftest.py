"""Fixtures of the CLI tests: a tiny untrained Vim on 28x28 grey images (it uses the
built-in Fashion-MNIST data like the built-in models), its checkpoint, one CPU thread."""
from __future__ import annotations

import pytest
import torch

TINY = "qmamba_test_tiny_vim"


def _register_tiny() -> None:
    from qmamba.models.builtin import with_fashion_mnist_config
    from qmamba.models.registry import _FACTORIES, create_model, register_model
    from qmamba.models.vim import VisionMamba

    if TINY in _FACTORIES:
        return

    @register_model(TINY)
    def tiny(**kwargs):
        args = dict(img_size=28, in_chans=1, num_classes=10, patch_size=7, stride=7,
                    embed_dim=8, depth=1, d_state=4)
        args.update(kwargs)
        return with_fashion_mnist_config(VisionMamba(**args))

    assert create_model(TINY) is not None


@pytest.fixture(autouse=True)
def _cli_one_thread(one_thread):
    """Every CLI test runs with one thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def tiny_name():
    """Registered for the module's tests only, so later tests see the usual registry."""
    from qmamba.models import registry

    _register_tiny()
    yield TINY
    registry._FACTORIES.pop(TINY, None)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_name) -> str:
    from qmamba.checkpoint import save_checkpoint
    from qmamba.models.registry import create_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(create_model(tiny_name), path)
    return str(path)


@pytest.fixture
def run_cli(capsys):
    """Run `qmamba ARGS` in-process; returns (exit code, stdout, stderr)."""
    from qmamba.cli.main import main

    def run(*args: str):
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run
