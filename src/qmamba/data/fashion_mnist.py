"""Fashion-MNIST from IDX files (the Debian package `dataset-fashion-mnist` or any copy).

The files are the four original ones, gzipped or not:
`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
`t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`.
The folder defaults to `$QMAMBA_FASHION_MNIST` or else `/usr/share/datasets/fashion-mnist`.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from qmamba.errors import DataError
from qmamba.models.data_config import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from qmamba.models.labels import FASHION_MNIST_CLASSES

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
ENV_ROOT = "QMAMBA_FASHION_MNIST"

# class names in label order and the normalisation statistics: the models' (a model's
# label set and data config belong to the model, qmamba.models.labels / data_config)
CLASS_NAMES = FASHION_MNIST_CLASSES

IMAGES_MAGIC = 0x00000803  # 2051: unsigned byte, 3 dims
LABELS_MAGIC = 0x00000801  # 2049: unsigned byte, 1 dim

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SPLIT_ALIASES = {"train": "train", "test": "test", "t10k": "test", "val": "test"}


def default_root() -> Path:
    env = os.environ.get(ENV_ROOT)
    return Path(env) if env else DEFAULT_ROOT


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read IDX file {str(path)!r}: {e.strerror or e}") from e
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the name says
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(
                f"IDX file {str(path)!r} is a corrupt or truncated gzip file ({e})"
            ) from e
    return raw


def read_idx(path: str | os.PathLike, expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or raw) into a numpy array, validating its header.

    The header is two zero bytes, a type code, the number of dimensions, then one
    big-endian uint32 per dimension; the data must have exactly the announced size.
    """
    p = Path(path)
    raw = _read_bytes(p)
    if len(raw) < 4:
        raise DataError(f"{str(p)!r} is not an IDX file: only {len(raw)} bytes")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    magic = struct.unpack(">I", raw[:4])[0]
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{str(p)!r} is not an IDX file: bad magic number 0x{magic:08x}"
        )
    if expect_magic is not None and magic != expect_magic:
        raise DataError(
            f"IDX file {str(p)!r} has magic number {magic} (0x{magic:08x}) but {expect_magic} "
            f"was expected ({'images' if expect_magic == IMAGES_MAGIC else 'labels'}): "
            "images and labels files swapped?"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {str(p)!r} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        raise DataError(
            f"IDX file {str(p)!r} announces shape {tuple(dims)} ({expected} data bytes) but "
            f"holds {actual} bytes: the file is truncated or corrupt"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        p = root / name
        if p.is_file():
            return p
    raise DataError(
        f"Fashion-MNIST file {stem}[.gz] not found in {str(root)!r}. Install the Debian "
        f"package (apt-get install dataset-fashion-mnist), or point root= / ${ENV_ROOT} "
        "to a folder with the four IDX files"
    )


def resolve_split(split: str) -> str:
    try:
        return _SPLIT_ALIASES[split]
    except KeyError:
        raise DataError(f"unknown Fashion-MNIST split {split!r}: use 'train' or 'test'") from None


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of one split, validated."""
    split = resolve_split(split)
    r = Path(root) if root is not None else default_root()
    if not r.is_dir():
        raise DataError(
            f"Fashion-MNIST folder {str(r)!r} does not exist. Install the Debian package "
            f"(apt-get install dataset-fashion-mnist), or pass root= / set ${ENV_ROOT}"
        )
    img_stem, lab_stem = _FILES[split]
    img_path, lab_path = _find(r, img_stem), _find(r, lab_stem)
    images = read_idx(img_path, expect_magic=IMAGES_MAGIC)
    labels = read_idx(lab_path, expect_magic=LABELS_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{str(img_path)!r} holds images of shape {images.shape[1:]}, not 28x28")
    if len(images) != len(labels):
        raise DataError(
            f"{str(img_path)!r} has {len(images)} images but {str(lab_path)!r} has "
            f"{len(labels)} labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise DataError(f"{str(lab_path)!r} has labels outside 0..9 (max {labels.max()})")
    return images, labels.astype(np.int64)


def to_tensor_normalized(images: torch.Tensor, mean=FASHION_MNIST_MEAN,
                         std=FASHION_MNIST_STD) -> torch.Tensor:
    """uint8 (..., 28, 28) -> float32 (..., 1, 28, 28), scaled to [0, 1] and normalised."""
    x = images.to(torch.float32).div_(255.0).unsqueeze(-3)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (x - m) / s


class ArrayImageDataset(Dataset):
    """A dataset over in-memory uint8 grayscale images and int labels.

    `transform=None` gives the default: float32 (1, H, W) normalised with the
    Fashion-MNIST mean/std (vectorised, no PIL). Any other transform receives a PIL
    image of mode 'L' (torchvision convention), e.g. `transforms.eval_transform(cfg)`.
    """

    classes = list(CLASS_NAMES)

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None,
                 source: str = ""):
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.transform = transform
        self.source = source
        self.targets = self.labels.tolist()
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = self.images[i]
        if self.transform is None:
            x = to_tensor_normalized(img)
        else:
            from PIL import Image

            x = self.transform(Image.fromarray(img.numpy()))
        return x, int(self.labels[i])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images{', ' + self.source if self.source else ''})"


class FashionMNIST(ArrayImageDataset):
    """Fashion-MNIST split read from IDX files; items are (image, label)."""

    def __init__(self, split: str = "train", root: str | os.PathLike | None = None,
                 transform=None):
        images, labels = load_fashion_mnist(split, root)
        r = Path(root) if root is not None else default_root()
        super().__init__(images, labels, transform, source=f"{resolve_split(split)} from {r}")
        self.split = resolve_split(split)
        self.root = r
