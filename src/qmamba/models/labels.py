"""Label sets: which class each output of a classifier stands for, in output order.

A model carries its `LabelSet` (`model.label_set`, qmamba.models.contract). Three kinds:
- `imagenet-1k`: the 1,000 ImageNet-1k classes, named by their WordNet ids (`n01440764`,
  the folder names of an ImageNet `train/` or `val/` tree) in the sorted order every
  ImageNet classifier uses, with their WordNet lemmas as descriptions ("tench, Tinca
  tinca"). Read from the tables timm ships inside its package (`timm.data.ImageNetInfo`),
  so nothing is downloaded; loaded on first use and kept.
- `fashion-mnist`: the ten Fashion-MNIST classes in label order (labels 0..9 of the IDX
  files and of the built-in bundles).
- `generic`: a model whose head has another number of outputs: class i is named
  `class_<i>` with i zero-padded to the width of the largest index (`class_0`..`class_9`
  for 10, `class_00`..`class_99` for 100), so that sorting the names keeps label order;
  the descriptions are the names.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "GENERIC",
    "IMAGENET_1K",
    "LabelSet",
    "generic_class_names",
    "label_set_for",
]

IMAGENET_1K = "imagenet-1k"
FASHION_MNIST = "fashion-mnist"
GENERIC = "generic"

# Label order of the Fashion-MNIST IDX files (Xiao et al., 2017, arXiv 1708.07747).
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_SIZES = {IMAGENET_1K: 1000, FASHION_MNIST: len(FASHION_MNIST_CLASSES)}


@dataclass(frozen=True)
class LabelSet:
    """The classes of a model's outputs: a known set by name, or `generic` ones.

    Only the name and the size are stored (cheap to copy, compare and save as JSON); the
    names and descriptions are looked up when asked for.
    """

    name: str
    num_classes: int

    def __post_init__(self) -> None:
        if self.name != GENERIC and _SIZES.get(self.name) != self.num_classes:
            known = ", ".join(f"{k} ({v})" for k, v in _SIZES.items())
            raise ValueError(
                f"label set {self.name!r} with {self.num_classes} classes: known sets are "
                f"{known}; use {GENERIC!r} for any other head"
            )
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")

    @property
    def is_generic(self) -> bool:
        return self.name == GENERIC

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in output order (WordNet ids for ImageNet)."""
        return _names_and_descriptions(self.name, self.num_classes)[0]

    @property
    def descriptions(self) -> tuple[str, ...]:
        """A human-readable description of each class, in output order."""
        return _names_and_descriptions(self.name, self.num_classes)[1]

    def describe(self) -> str:
        """One line for listings: `imagenet-1k (1000 classes)`."""
        return f"{self.name} ({self.num_classes} classes)"


def label_set_for(name: str, num_classes: int) -> LabelSet:
    """The known set `name` if it has `num_classes` classes, else a generic one."""
    if _SIZES.get(name) == num_classes:
        return LabelSet(name, num_classes)
    return LabelSet(GENERIC, num_classes)


def generic_class_names(num_classes: int) -> tuple[str, ...]:
    """`class_<i>`, i zero-padded so that sorted names keep label order."""
    width = len(str(max(num_classes - 1, 0)))
    return tuple(f"class_{i:0{width}d}" for i in range(num_classes))


@lru_cache(maxsize=8)
def _names_and_descriptions(name: str, num_classes: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if name == IMAGENET_1K:
        from timm.data import ImageNetInfo  # package data files only, no network

        info = ImageNetInfo("imagenet-1k")
        return tuple(info.label_names()), tuple(info.label_descriptions())
    if name == FASHION_MNIST:
        return FASHION_MNIST_CLASSES, FASHION_MNIST_CLASSES
    names = generic_class_names(num_classes)
    return names, names
