"""Evaluation transforms from a model's data config (timm style).

A data config is a dict with `input_size` (C, H, W), `crop_pct`, `interpolation`, `mean`,
`std` (the `pretrained_cfg` of our models). The eval transform is the one every official
Vim/VMamba result uses, identical to timm's `create_transform(..., is_training=False)`:
resize the shorter side to floor(size / crop_pct) -> center crop to size -> tensor in
[0, 1] -> normalise. Images already at the target size (e.g. 28x28 Fashion-MNIST for
the built-in models, crop_pct 1.0) are not resampled at all.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from qmamba.errors import DataError, QMambaError
from qmamba.models import contract
from qmamba.models.data_config import fashion_mnist_data_config  # noqa: F401  (its old home)

_INTERP = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
    "lanczos": InterpolationMode.LANCZOS,
    "box": InterpolationMode.BOX,
    "hamming": InterpolationMode.HAMMING,
}
_REQUIRED = ("input_size", "mean", "std")


def resolve_data_config(model_or_config) -> dict:
    """A data config from a dict, or from a model's `pretrained_cfg` / `default_cfg`."""
    if isinstance(model_or_config, Mapping):
        cfg = dict(model_or_config)
    else:
        try:
            cfg = contract.data_config(model_or_config)
        except QMambaError:
            raise DataError(
                f"{type(model_or_config).__name__} has no data config (pretrained_cfg); "
                "pass one explicitly"
            ) from None
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise DataError(f"data config lacks {', '.join(missing)}: {cfg}")
    cfg.setdefault("crop_pct", 0.875)
    cfg.setdefault("interpolation", "bicubic")
    c, h, w = cfg["input_size"]
    if len(cfg["mean"]) != c or len(cfg["std"]) != c:
        raise DataError(
            f"data config mean/std have {len(cfg['mean'])}/{len(cfg['std'])} values for {c} channels"
        )
    if cfg["interpolation"] not in _INTERP:
        raise DataError(
            f"unknown interpolation {cfg['interpolation']!r}: use one of {', '.join(_INTERP)}"
        )
    return cfg


class ResizeShorter:
    """Resize the shorter side to `size` (aspect kept); a no-op if it already is `size`."""

    def __init__(self, size: int, interpolation: InterpolationMode):
        self.size = size
        self.resize = T.Resize(size, interpolation=interpolation)

    def __call__(self, img):
        w, h = img.size if hasattr(img, "size") and not torch.is_tensor(img) else img.shape[-1:-3:-1]
        if min(w, h) == self.size:
            return img
        return self.resize(img)

    def __repr__(self) -> str:
        return f"ResizeShorter(size={self.size}, interpolation={self.resize.interpolation.value})"


class ConvertMode:
    """PIL image -> mode 'RGB' or 'L' so grayscale/CMYK/palette files work everywhere."""

    def __init__(self, channels: int):
        self.mode = {1: "L", 3: "RGB"}.get(channels)
        if self.mode is None:
            raise DataError(f"images with {channels} channels are not supported (1 or 3)")

    def __call__(self, img):
        return img if torch.is_tensor(img) or img.mode == self.mode else img.convert(self.mode)

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


def eval_transform(model_or_config) -> T.Compose:
    """PIL image -> normalised float tensor (C, H, W), as timm's eval transform."""
    cfg = resolve_data_config(model_or_config)
    c, h, w = cfg["input_size"]
    crop_pct = float(cfg["crop_pct"] or 1.0)
    if h == w:
        scale: int | tuple[int, int] = math.floor(h / crop_pct)
    else:  # timm: scale both sides for non-square inputs
        scale = (math.floor(h / crop_pct), math.floor(w / crop_pct))
    interp = _INTERP[cfg["interpolation"]]
    steps = [ConvertMode(c)]
    if isinstance(scale, int):
        steps.append(ResizeShorter(scale, interp))
    else:
        steps.append(T.Resize(scale, interpolation=interp))
    steps += [
        T.CenterCrop((h, w)),
        T.ToTensor(),
        T.Normalize(mean=list(cfg["mean"]), std=list(cfg["std"])),
    ]
    return T.Compose(steps)
