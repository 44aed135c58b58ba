"""Datasets, transforms and loaders: Fashion-MNIST (IDX files and the built-in bundles)
and ImageNet-layout folders, whose class folders are matched to the model's classes by
name (labels.py). Data configs, class names and label sets belong to the models
(qmamba.models.data_config, qmamba.models.labels); the Fashion-MNIST ones are re-exported
here."""
from qmamba.data.builtin import BuiltinFashionMNIST, load_builtin
from qmamba.data.class_map import read_class_map
from qmamba.data.fashion_mnist import (
    CLASS_NAMES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    FashionMNIST,
    load_fashion_mnist,
    read_idx,
)
from qmamba.data.imagefolder import build_eval_dataset
from qmamba.data.labels import ClassNames, LabelAssignment, assign_labels
from qmamba.data.loaders import calibration_indices, calibration_subset, make_loader
from qmamba.data.transforms import eval_transform, resolve_data_config
from qmamba.models.data_config import fashion_mnist_data_config

__all__ = [
    "CLASS_NAMES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "BuiltinFashionMNIST",
    "ClassNames",
    "FashionMNIST",
    "LabelAssignment",
    "assign_labels",
    "build_eval_dataset",
    "calibration_indices",
    "calibration_subset",
    "eval_transform",
    "fashion_mnist_data_config",
    "load_builtin",
    "load_fashion_mnist",
    "make_loader",
    "read_class_map",
    "read_idx",
    "resolve_data_config",
]
