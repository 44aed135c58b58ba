"""The two built-in Fashion-MNIST models (28x28 grey images, 10 classes) and their weights.

- `vim_fmnist`: our `VisionMamba` (bidirectional Vim v2 mixer, middle class token) on
  4x4 patches (7x7 = 49 patch tokens + the class token).
- `vmamba_fmnist`: our v2 `VSSM` (v05_noz SS2D, 4-direction scan, MLP, conv stem and
  conv downsample): 7x7 tokens in stage 1, 4x4 in stage 2.

Both are registered like every other variant (`create_model("vim_fmnist")` builds a
randomly initialised copy, keyword arguments override the sizes) and carry the
Fashion-MNIST data config (input (1, 28, 28), crop_pct 1.0, Fashion-MNIST mean/std) and
label set (the ten Fashion-MNIST classes in label order; generic classes if built with
another num_classes).
`load_builtin_model(name)` builds one and loads the weights shipped in
`qmamba/assets/models/<name>.safetensors` (see the README.md there for the exact training
command and the measured test accuracy).
"""
from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import torch.nn as nn

from qmamba.errors import CheckpointError, QMambaError
from qmamba.models.data_config import fashion_mnist_data_config
from qmamba.models.labels import FASHION_MNIST, label_set_for
from qmamba.models.registry import create_model, register_model
from qmamba.models.vim import VisionMamba
from qmamba.models.vmamba import VSSM

__all__ = [
    "BUILTIN_MODELS",
    "BUILTIN_CONFIGS",
    "builtin_weights_path",
    "load_builtin_model",
    "with_fashion_mnist_config",
]

BUILTIN_MODELS = ("vim_fmnist", "vmamba_fmnist")

# Architecture of each built-in model (what the shipped weights were trained with).
BUILTIN_CONFIGS: dict[str, dict] = {
    "vim_fmnist": dict(
        img_size=28, in_chans=1, num_classes=10,
        patch_size=4, stride=4, embed_dim=96, depth=4, d_state=4, expand=1,
    ),
    "vmamba_fmnist": dict(
        version="v2", img_size=28, in_chans=1, num_classes=10,
        patch_size=4, dims=[48, 96], depths=[2, 2], d_state=1, ssm_ratio=1.0,
    ),
}


def with_fashion_mnist_config(model: nn.Module) -> nn.Module:
    """Give a model (trained on Fashion-MNIST) the Fashion-MNIST data config and label set
    (generic classes unless its head has the ten outputs); returns the model."""
    model.default_cfg = model.pretrained_cfg = fashion_mnist_data_config(model.num_classes)
    model.label_set = label_set_for(FASHION_MNIST, model.num_classes)
    return model


@register_model("vim_fmnist")
def vim_fmnist(**kwargs) -> VisionMamba:
    """Vim for 28x28 grey images: patch 4 (49 tokens + class token), D 96, depth 4,
    expand 1 (E 96), N 4."""
    cfg = {**BUILTIN_CONFIGS["vim_fmnist"], **kwargs}
    return with_fashion_mnist_config(VisionMamba(**cfg))


@register_model("vmamba_fmnist")
def vmamba_fmnist(**kwargs) -> VSSM:
    """VMamba v2 for 28x28 grey images: 2-conv stem to 7x7, dims (48, 96), depths (2, 2)."""
    cfg = {**BUILTIN_CONFIGS["vmamba_fmnist"], **kwargs}
    return with_fashion_mnist_config(VSSM(**cfg))


def builtin_weights_dir() -> Path:
    """The package folder holding the shipped weights."""
    return Path(str(resources.files("qmamba"))) / "assets" / "models"


def builtin_weights_path(name: str) -> Path:
    """Path of the shipped safetensors weights of built-in model `name`."""
    _check_name(name)
    return builtin_weights_dir() / f"{name}.safetensors"


def _check_name(name: str) -> None:
    if name not in BUILTIN_MODELS:
        raise QMambaError(
            f"{name!r} is not a built-in model: use one of {', '.join(BUILTIN_MODELS)}"
        )


def load_builtin_model(name: str) -> nn.Module:
    """Build built-in model `name` and load its shipped weights; returned in eval mode.

    The training metadata stored in the file (epochs, seed, measured test top-1, ...) is
    available as `model.builtin_metadata` (a dict of strings).
    """
    path = builtin_weights_path(name)
    if not path.is_file():
        raise CheckpointError(
            f"the weights of the built-in model {name!r} are missing ({str(path)!r}): "
            "reinstall qmamba, or train them again with the command given in "
            f"{str(builtin_weights_dir() / 'README.md')!r} "
            f"(`qmamba train --model {name} --out {path}`)"
        )
    model = create_model(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shipped file must fit exactly, no adaptation
        try:
            info = _load_weights(model, path)
        except Warning as w:
            raise CheckpointError(
                f"the weights of the built-in model {name!r} ({str(path)!r}) do not fit its "
                f"architecture exactly: {w}"
            ) from None
    model.builtin_metadata = dict(info.get("metadata") or {})
    return model.eval()


def _load_weights(model: nn.Module, path: Path) -> dict:
    from qmamba.checkpoint import load_checkpoint  # loading needs the models registered first

    return load_checkpoint(model, path, strict=True)
