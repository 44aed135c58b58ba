"""The built-in Fashion-MNIST models: registered architectures, data config, shipped
weights that load strictly and classify the built-in test images well."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Subset

import qmamba
from qmamba.data import BuiltinFashionMNIST, eval_transform, fashion_mnist_data_config
from qmamba.errors import CheckpointError, QMambaError
from qmamba.eval import evaluate
from qmamba.models import builtin
from qmamba.models.builtin import BUILTIN_MODELS, builtin_weights_path, load_builtin_model
from qmamba.models.vim import VisionMamba
from qmamba.models.vmamba import VSSM

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def test_images():
    return Subset(BuiltinFashionMNIST("test"), range(500))


def test_registered_with_fashion_mnist_config():
    assert BUILTIN_MODELS == ("vim_fmnist", "vmamba_fmnist")
    for name in BUILTIN_MODELS:
        assert name in qmamba.list_models()
        m = qmamba.create_model(name)
        assert m.pretrained_cfg == fashion_mnist_data_config(10)
        assert m.pretrained_cfg["input_size"] == (1, 28, 28)
        assert m.pretrained_cfg["crop_pct"] == 1.0
        assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_architectures():
    vim = qmamba.create_model("vim_fmnist")
    assert isinstance(vim, VisionMamba)
    assert vim.patch_embed.num_patches == 49 and vim.pos_embed.shape[1] == 50
    assert vim.embed_dim == builtin.BUILTIN_CONFIGS["vim_fmnist"]["embed_dim"]
    assert len(vim.layers) == builtin.BUILTIN_CONFIGS["vim_fmnist"]["depth"]
    vm = qmamba.create_model("vmamba_fmnist")
    assert isinstance(vm, VSSM) and vm.version == "v2"
    assert vm.dims == list(builtin.BUILTIN_CONFIGS["vmamba_fmnist"]["dims"])
    x = vm.forward_features(torch.zeros(1, 1, 28, 28))
    assert x.shape == (1, vm.dims[-1], 4, 4)  # 28 -> 7x7 (stem) -> 4x4 (downsample)


@pytest.mark.parametrize("name", BUILTIN_MODELS)
def test_shipped_weights_load_and_classify(name, test_images):
    path = builtin_weights_path(name)
    assert path.is_file() and path.stat().st_size < 4 * 2**20  # a few MB at most
    model = load_builtin_model(name)
    assert not model.training
    meta = model.builtin_metadata
    assert meta["model"] == name and float(meta["test_top1"]) >= 85.0
    assert meta["command"].startswith(f"qmamba train --model {name} ")
    loader = DataLoader(test_images, batch_size=250)
    res = evaluate(model, loader)
    assert res.num_images == 500
    assert res.top1 > 85.0, f"{name}: top-1 {res.top1:.2f}% on the first 500 test images"


def test_builtin_tensor_path_matches_eval_transform(test_images):
    """The datasets' default tensors equal the model's timm-style eval transform."""
    model = qmamba.create_model("vim_fmnist")
    images = BuiltinFashionMNIST("test", transform=eval_transform(model))
    x_default, _ = test_images[3]
    x_transform, _ = images[3]
    torch.testing.assert_close(x_default, x_transform, atol=1e-5, rtol=0)


def test_missing_weights_and_unknown_name(tmp_path, monkeypatch):
    with pytest.raises(QMambaError, match="not a built-in model"):
        load_builtin_model("vim_tiny")
    monkeypatch.setattr(builtin, "builtin_weights_dir", lambda: tmp_path)
    with pytest.raises(CheckpointError, match="missing.*qmamba train --model vim_fmnist"):
        load_builtin_model("vim_fmnist")
