"""The model contract (qmamba.models.contract) over every registered model, timm style.

Each registered model is built with its default arguments on the meta device (the exact
architecture, no memory and no weight init: about 0.1 s a model) and checked: it
subclasses the protocols, its blocks declare complete (norm, linear) pairs of their own
modules, its rotation sites are QuantLinear layers of its own and cover every module
that declares some, its data config is complete and its class names fit its head.
"""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

import qmamba
from qmamba.data import resolve_data_config
from qmamba.errors import QMambaError
from qmamba.models import contract
from qmamba.models.contract import (
    DeclaresRotationSites,
    HasRawWeightPoints,
    QuantBlock,
    QuantizableModel,
)
from qmamba.models.data_config import DATA_CONFIG_KEYS
from qmamba.models.labels import (
    FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    GENERIC,
    IMAGENET_1K,
    LabelSet,
    generic_class_names,
)
from qmamba.models.registry import default_label_set
from qmamba.models.vim import VisionMamba
from qmamba.nn.layers import QuantLinear
from qmamba.nn.point import QuantPoint

NAMES = qmamba.list_models()
SMALL_VIM = dict(img_size=32, patch_size=16, stride=16, embed_dim=16, depth=2, d_state=4)


def _explicit(obj: object, protocol: type) -> bool:
    """Whether obj's class subclasses the protocol (declares it, not just fits it)."""
    return protocol in type(obj).__mro__


@pytest.fixture(scope="module")
def meta_models() -> dict[str, nn.Module]:
    with torch.device("meta"):
        return {name: qmamba.create_model(name) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_model_satisfies_the_contract(meta_models, name):
    model = meta_models[name]
    assert _explicit(model, QuantizableModel)
    assert contract.check_quantizable(model) is model
    assert contract.missing_members(model, QuantizableModel) == []
    assert contract.model_family(model) in ("vim", "vmamba")
    assert contract.model_spec(model) == {"name": name, "kwargs": {}}
    assert contract.registered_name(model) == name
    assert contract.state_dict_filter(model) == model.filter_state_dict


@pytest.mark.parametrize("name", NAMES)
def test_blocks_declare_their_norm_linear_pairs(meta_models, name):
    model = meta_models[name]
    blocks = contract.quant_blocks(model)
    assert blocks and all(_explicit(b, QuantBlock) for b in blocks)
    for block in blocks:
        own = {id(m) for m in block.modules()}
        pairs = contract.norm_linear_pairs(block)
        for norm, linear in pairs:
            assert id(norm) in own and id(linear) in own
            assert isinstance(linear, QuantLinear) and linear.input_quant is not None
            assert norm.weight.shape[0] == linear.in_features
        # complete: the pairs every submodule declares are among the block's
        for sub in block.modules():
            if sub is not block and isinstance(sub, QuantBlock):
                for pair in sub.norm_linear_pairs():
                    assert any(pair[0] is n and pair[1] is lin for n, lin in pairs)


@pytest.mark.parametrize("name", NAMES)
def test_rotation_sites_are_the_models_quant_linears(meta_models, name):
    model = meta_models[name]
    sites = contract.rotation_sites(model)
    assert list(sites) == list(contract.ROTATION_KINDS)
    own = {id(m) for m in model.modules()}
    for kind in ("norm_input", "ssm_output", "inner"):
        for layer in sites[kind]:
            assert isinstance(layer, QuantLinear) and id(layer) in own
    for producer, rows, consumer in sites["folded"]:
        assert isinstance(producer, QuantLinear) and isinstance(consumer, QuantLinear)
        assert id(producer) in own and id(consumer) in own
        assert consumer.in_features == rows <= producer.out_features
    assert sites["norm_input"], "every family has Linear layers reading a norm"
    # complete: the model's sites are those of every module that declares some
    declarers = [m for m in model.modules() if m is not model and _explicit(m, DeclaresRotationSites)]
    assert contract.merge_rotation_sites(declarers) == sites


@pytest.mark.parametrize("name", NAMES)
def test_raw_weight_points_name_parameters(meta_models, name):
    model = meta_models[name]
    for module in model.modules():
        if isinstance(module, HasRawWeightPoints):
            assert _explicit(module, HasRawWeightPoints)
            params = dict(module.named_parameters(recurse=False))
            for point_attr, param_attr in module.weight_point_params.items():
                point = getattr(module, point_attr)
                assert isinstance(point, QuantPoint) and point.role == "weight"
                assert param_attr in params
                assert contract.weight_point_param(module, point_attr) == param_attr


@pytest.mark.parametrize("name", NAMES)
def test_data_config_is_complete(meta_models, name):
    model = meta_models[name]
    cfg = contract.data_config(model)
    assert set(DATA_CONFIG_KEYS) <= set(cfg)
    assert model.pretrained_cfg == model.default_cfg == cfg
    assert cfg["num_classes"] == model.num_classes
    channels = cfg["input_size"][0]
    assert len(cfg["mean"]) == len(cfg["std"]) == channels
    assert resolve_data_config(model)["input_size"] == cfg["input_size"]


@pytest.mark.parametrize("name", NAMES)
def test_class_names_match_num_classes(meta_models, name):
    model = meta_models[name]
    labels = contract.label_set(model)
    assert labels.num_classes == model.num_classes
    names = contract.class_names(model)
    assert names == model.class_names == labels.class_names
    assert len(names) == len(set(names)) == model.num_classes
    assert len(labels.descriptions) == model.num_classes
    expected = FASHION_MNIST if name.endswith("_fmnist") else IMAGENET_1K
    assert labels.name == expected


def test_registry_reads_the_label_set_from_the_model():
    """What `qmamba list-models` shows: the label set of the default build."""
    assert default_label_set("vim_tiny") == LabelSet(IMAGENET_1K, 1000)
    assert default_label_set("vmamba_fmnist") == LabelSet(FASHION_MNIST, 10)


def test_fashion_mnist_models_name_their_classes_in_label_order():
    for name in ("vim_fmnist", "vmamba_fmnist"):
        model = qmamba.create_model(name)
        assert model.label_set == LabelSet(FASHION_MNIST, 10)
        assert model.class_names == (
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        )
    # the data package reads the same names (one list)
    from qmamba.data import CLASS_NAMES

    assert CLASS_NAMES is FASHION_MNIST_CLASSES


def test_other_head_sizes_get_generic_names():
    vim = qmamba.create_model("vim_tiny", num_classes=7, **SMALL_VIM)
    assert vim.label_set == LabelSet(GENERIC, 7) and vim.label_set.is_generic
    assert vim.class_names == tuple(f"class_{i}" for i in range(7))
    assert vim.pretrained_cfg["num_classes"] == 7
    fm = qmamba.create_model("vim_fmnist", num_classes=12)
    assert fm.label_set == LabelSet(GENERIC, 12)
    assert fm.class_names[:3] == ("class_00", "class_01", "class_02")
    assert qmamba.create_model("vim_tiny", num_classes=1000, **SMALL_VIM).label_set.name == IMAGENET_1K
    # zero-padded so that sorting the names keeps label order
    names = generic_class_names(101)
    assert sorted(names) == list(names) and names[-1] == "class_100"
    assert generic_class_names(0) == ()
    with pytest.raises(ValueError, match="imagenet-1k"):
        LabelSet(IMAGENET_1K, 10)


def test_imagenet_class_names_are_the_wordnet_ids():
    labels = LabelSet(IMAGENET_1K, 1000)
    names = labels.class_names
    assert len(names) == 1000 and list(names) == sorted(names)
    assert all(re.fullmatch(r"n\d{8}", n) for n in names)
    assert names[0] == "n01440764" and labels.descriptions[0].startswith("tench")
    assert names[999] == "n15075141" and labels.descriptions[999].startswith("toilet tissue")


def test_building_a_model_needs_no_data_package_and_no_network():
    """In a fresh process with sockets disabled: build the built-in models, read the
    ImageNet class names (timm's package tables), and qmamba.data is never imported."""
    code = textwrap.dedent("""
        import socket, sys

        def no_network(*args, **kwargs):
            raise OSError("network disabled")

        socket.socket.connect = socket.socket.connect_ex = no_network
        socket.getaddrinfo = socket.create_connection = no_network
        import qmamba.models as models

        models.create_model("vim_fmnist")
        models.create_model("vmamba_fmnist")
        names = models.create_model("vim_tiny", img_size=32, embed_dim=16, depth=1).class_names
        assert len(names) == 1000 and names[0] == "n01440764", names[:3]
        assert "qmamba.data" not in sys.modules, sorted(m for m in sys.modules if m.startswith("qmamba.data"))
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_accessors_name_the_class_that_breaks_the_contract():
    linear = nn.Linear(2, 2)
    with pytest.raises(QMambaError, match=r"Linear does not satisfy .*quant_blocks"):
        contract.quant_blocks(linear)
    with pytest.raises(QMambaError, match=r"Sequential does not satisfy .*lacks family, num_classes, label_set, quant_blocks"):
        contract.check_quantizable(nn.Sequential())
    with pytest.raises(QMambaError, match="Linear .*norm_linear_pairs"):
        contract.norm_linear_pairs(linear)
    with pytest.raises(QMambaError, match="Linear .*no data config"):
        contract.data_config(linear)
    with pytest.raises(QMambaError, match="Linear .*label_set"):
        contract.class_names(linear)
    assert contract.state_dict_filter(linear) is None
    assert contract.weight_point_param(linear, "weight_quant") == "weight"
    assert contract.registered_name(linear) is None

    class NoBlocks(VisionMamba):
        def quant_blocks(self):
            return [nn.Identity()]

    with pytest.raises(QMambaError, match=r"NoBlocks .*block 0 \(Identity\)"):
        contract.quant_blocks(NoBlocks(**SMALL_VIM))


def test_a_model_built_without_create_model_has_no_spec():
    model = VisionMamba(**SMALL_VIM)
    assert model.qmamba_spec is None and contract.registered_name(model) is None
    with pytest.raises(QMambaError, match="not built by qmamba.create_model"):
        contract.model_spec(model)


def test_a_class_missing_a_contract_method_cannot_be_instantiated():
    class Incomplete(nn.Module, QuantizableModel):
        family = "vim"

        def rotation_sites(self):
            return {}

    with pytest.raises(TypeError, match="quant_blocks"):
        Incomplete()


def test_quantized_model_record():
    model = VisionMamba(**SMALL_VIM)
    assert not contract.is_quantized(model) and contract.quant_info(model) == {}
    with pytest.raises(QMambaError, match="not quantized"):
        contract.quant_config(model)
    config = qmamba.QuantConfig.from_recipe("minmax", w_bits=8, a_bits=8)
    contract.mark_quantized(model, config, {"points": {}})
    assert contract.is_quantized(model)
    assert contract.quant_config(model) is config and contract.quant_info(model) == {"points": {}}
