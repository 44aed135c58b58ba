"""Built-in Fashion-MNIST data shipped inside the package (no download, no dataset folder).

Two bundles live in `qmamba/assets/fashion_mnist/`:
- `calib.npz.xz`: 1,024 training images chosen by `calib_indices()` (seed 0), for
  calibrating the built-in models (calibration data never comes from the test split);
- `test.npz.xz`: all 10,000 test images, for evaluating them.

Format (version 1): an xz (LZMA2) stream holding an uncompressed `.npz` with
`images` uint8 (N, 28, 28), `labels` uint8 (N,), `indices` int32 (N,) (each image's index
in its original IDX split) and `meta` (a JSON string). Inside the file the images are
grouped by class (it compresses ~1% better than gzip/zlib npz would and keeps the package
small); `read_bundle` returns them sorted by `indices`, i.e. in the original order.
Loading uses `np.load(allow_pickle=False)`: a bundle can never run code.

`python -m qmamba.data.make_builtin` rebuilds the bundles from the IDX files.
"""
from __future__ import annotations

import io
import json
import lzma
import os
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from qmamba.data.fashion_mnist import ArrayImageDataset, load_fashion_mnist
from qmamba.errors import DataError
from qmamba.io_utils import atomic_write

FORMAT_VERSION = 1
CALIB_SIZE = 1024
CALIB_SEED = 0
BUILTIN_SPLITS = {"calib": "train", "test": "test"}  # bundle -> source IDX split
_XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME,
                "lc": 4, "lp": 0, "pb": 0}]


def assets_dir() -> Path:
    """The package folder holding the bundles."""
    return Path(str(resources.files("qmamba"))) / "assets" / "fashion_mnist"


def bundle_path(split: str, folder: str | os.PathLike | None = None) -> Path:
    _check_split(split)
    return (Path(folder) if folder is not None else assets_dir()) / f"{split}.npz.xz"


def _check_split(split: str) -> None:
    if split not in BUILTIN_SPLITS:
        raise DataError(
            f"unknown built-in split {split!r}: use one of {', '.join(BUILTIN_SPLITS)}"
        )


def calib_indices(n: int = CALIB_SIZE, seed: int = CALIB_SEED, total: int = 60000) -> np.ndarray:
    """The fixed calibration subset: the first n of a seeded permutation, sorted."""
    if not 0 < n <= total:
        raise DataError(f"cannot draw {n} calibration images from {total}")
    g = torch.Generator().manual_seed(seed)
    return np.sort(torch.randperm(total, generator=g)[:n].numpy()).astype(np.int64)


def write_bundle(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray,
                 indices: np.ndarray, meta: dict | None = None) -> Path:
    """Write a bundle atomically (see module docstring for the format)."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.asarray(labels)
    indices = np.asarray(indices)
    if images.ndim != 3 or len(images) != len(labels) or len(labels) != len(indices):
        raise ValueError(
            f"bundle arrays disagree: images {images.shape}, labels {labels.shape}, "
            f"indices {indices.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("labels must fit in uint8")
    # Group similar images (same class, similar ink amount) for better compression.
    ink = (images.reshape(len(images), -1) > 0).sum(1)
    order = np.lexsort((indices, ink, labels))
    full_meta = {"format": FORMAT_VERSION, "count": int(len(images)),
                 "image_shape": list(images.shape[1:]), **(meta or {})}
    buf = io.BytesIO()
    np.savez(buf, images=images[order], labels=labels[order].astype(np.uint8),
             indices=indices[order].astype(np.int32), meta=np.array(json.dumps(full_meta)))
    data = lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ, filters=_XZ_FILTERS)
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def read_bundle(path: str | os.PathLike) -> dict:
    """{'images' uint8 (N,28,28), 'labels' int64, 'indices' int64, 'meta' dict}, in original order."""
    p = Path(path)
    try:
        raw = lzma.decompress(p.read_bytes())
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            images, labels, indices = z["images"], z["labels"], z["indices"]
            meta = json.loads(str(z["meta"]))
    except FileNotFoundError:
        raise DataError(f"built-in data bundle {str(p)!r} does not exist") from None
    except (lzma.LZMAError, EOFError, zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise DataError(
            f"built-in data bundle {str(p)!r} is corrupt or truncated ({type(e).__name__}: {e}); "
            "rebuild it with `python -m qmamba.data.make_builtin` or reinstall qmamba"
        ) from e
    if meta.get("format") != FORMAT_VERSION:
        raise DataError(f"built-in data bundle {str(p)!r} has unknown format {meta.get('format')!r}")
    if images.ndim != 3 or not (len(images) == len(labels) == len(indices) == meta.get("count")):
        raise DataError(f"built-in data bundle {str(p)!r} is inconsistent: {meta}")
    order = np.argsort(indices, kind="stable")
    return {"images": images[order], "labels": labels[order].astype(np.int64),
            "indices": indices[order].astype(np.int64), "meta": meta}


def _from_source(split: str, source_root: str | os.PathLike | None) -> dict:
    src = BUILTIN_SPLITS[split]
    images, labels = load_fashion_mnist(src, source_root)
    if split == "calib":
        idx = calib_indices(CALIB_SIZE, CALIB_SEED, total=len(images))
    else:
        idx = np.arange(len(images), dtype=np.int64)
    meta = {"split": split, "source_split": src, "dataset": "Fashion-MNIST",
            "license": "MIT, Copyright (c) 2017 Zalando SE"}
    if split == "calib":
        meta.update(seed=CALIB_SEED, source_count=int(len(images)))
    return {"images": images[idx], "labels": labels[idx], "indices": idx, "meta": meta}


def make_bundle(split: str, source_root: str | os.PathLike | None = None,
                out_dir: str | os.PathLike | None = None) -> Path:
    """Build bundle `split` ('calib' or 'test') from the IDX files; return its path."""
    _check_split(split)
    d = _from_source(split, source_root)
    return write_bundle(bundle_path(split, out_dir), d["images"], d["labels"], d["indices"],
                        d["meta"])


def load_builtin(split: str, folder: str | os.PathLike | None = None,
                 source_root: str | os.PathLike | None = None) -> dict:
    """Read a built-in bundle; if the package lacks it, build the same data from the IDX files."""
    p = bundle_path(split, folder)
    if p.is_file():
        return read_bundle(p)
    try:
        return _from_source(split, source_root)
    except DataError as e:
        raise DataError(
            f"built-in data bundle {str(p)!r} is missing (reinstall qmamba or run "
            f"`python -m qmamba.data.make_builtin`), and it cannot be rebuilt: {e}"
        ) from e


class BuiltinFashionMNIST(ArrayImageDataset):
    """The built-in 'calib' (1,024 train images) or 'test' (10,000) Fashion-MNIST data."""

    def __init__(self, split: str = "test", transform=None,
                 folder: str | os.PathLike | None = None):
        d = load_builtin(split, folder)
        super().__init__(d["images"], d["labels"], transform, source=f"built-in {split}")
        self.split = split
        self.indices = d["indices"]
        self.meta = d["meta"]
