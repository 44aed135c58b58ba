"""Data configs of the models (timm style): how images must be prepared for a model.

A data config is a dict with `input_size` (C, H, W), `crop_pct`, `interpolation`, `mean`,
`std` and `num_classes`; a model keeps its own as `pretrained_cfg` (= `default_cfg`), and
`qmamba.data` builds the evaluation transform from it. It belongs to the model: building
a model needs no dataset code.
"""
from __future__ import annotations

__all__ = [
    "DATA_CONFIG_KEYS",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "fashion_mnist_data_config",
    "imagenet_data_config",
]

# every key a complete data config has
DATA_CONFIG_KEYS = ("input_size", "crop_pct", "interpolation", "mean", "std", "num_classes")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Per-pixel statistics of the 60,000 Fashion-MNIST training images, pixels scaled to [0, 1].
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)


def imagenet_data_config(img_size: int = 224, in_chans: int = 3, num_classes: int = 1000) -> dict:
    """Data config of the official ImageNet models (resize to size / 0.875, bicubic,
    center crop, ImageNet mean/std)."""
    return {
        "input_size": (in_chans, img_size, img_size),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "num_classes": num_classes,
    }


def fashion_mnist_data_config(num_classes: int = 10) -> dict:
    """Data config of the built-in 28x28 grayscale models: no resize, Fashion-MNIST stats."""
    return {
        "input_size": (1, 28, 28),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": FASHION_MNIST_MEAN,
        "std": FASHION_MNIST_STD,
        "num_classes": num_classes,
    }
