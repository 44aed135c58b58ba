"""Fashion-MNIST IDX reader and dataset."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from qmamba.data import CLASS_NAMES, FashionMNIST, load_fashion_mnist, read_idx
from qmamba.data.fashion_mnist import DEFAULT_ROOT, IMAGES_MAGIC, LABELS_MAGIC
from qmamba.data.transforms import eval_transform, fashion_mnist_data_config
from qmamba.errors import DataError


def write_idx(path: Path, arr: np.ndarray, code: int = 0x08, compress: bool = False,
              dims=None, extra: bytes = b"") -> Path:
    dims = arr.shape if dims is None else dims
    head = struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    data = head + arr.astype(arr.dtype.newbyteorder(">")).tobytes() + extra
    if compress:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_split(folder: Path, prefix: str, n: int, seed: int = 0, compress: bool = True):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    ext = ".gz" if compress else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images, compress=compress)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels, compress=compress)
    return images, labels


@pytest.fixture()
def fm_root(tmp_path):
    train = make_split(tmp_path, "train", 40, seed=1)
    test = make_split(tmp_path, "t10k", 12, seed=2, compress=False)
    return tmp_path, train, test


def test_read_idx_raw_and_gzip(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", a)), a)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.gz", a, compress=True)), a)
    # gzip detected by content, not name
    assert np.array_equal(read_idx(write_idx(tmp_path / "b", a, compress=True)), a)
    f = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(read_idx(write_idx(tmp_path / "f", f, code=0x0D)), f)
    i = np.array([-5, 70000], dtype=np.int32)
    assert np.array_equal(read_idx(write_idx(tmp_path / "i", i, code=0x0C)), i)


@pytest.mark.parametrize("case", ["bad_magic", "short", "truncated", "too_long",
                                  "wrong_kind", "bad_gzip", "header_cut"])
def test_read_idx_errors_name_the_file(tmp_path, case):
    a = np.zeros((3, 28, 28), dtype=np.uint8)
    p = tmp_path / f"{case}.idx"
    if case == "bad_magic":
        p.write_bytes(b"\x12\x34\x08\x03" + bytes(100))
        match = "bad magic"
    elif case == "short":
        p.write_bytes(b"\x00\x00")
        match = "not an IDX file"
    elif case == "truncated":
        write_idx(p, a)
        p.write_bytes(p.read_bytes()[:-5])
        match = "truncated or corrupt"
    elif case == "too_long":
        write_idx(p, a, extra=b"xx")
        match = "truncated or corrupt"
    elif case == "wrong_kind":
        write_idx(p, a)
        match = "2049 was expected"
    elif case == "bad_gzip":
        write_idx(p, a, compress=True)
        p.write_bytes(p.read_bytes()[:40])
        match = "corrupt or truncated gzip"
    else:
        p.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x03")
        match = "truncated inside its header"
    with pytest.raises(DataError, match=match) as e:
        read_idx(p, expect_magic=LABELS_MAGIC if case == "wrong_kind" else IMAGES_MAGIC
                 if case != "short" else None)
    assert str(p) in str(e.value)


def test_load_and_dataset(fm_root):
    root, (tr_x, tr_y), (te_x, te_y) = fm_root
    x, y = load_fashion_mnist("train", root)
    assert np.array_equal(x, tr_x) and np.array_equal(y, tr_y) and y.dtype == np.int64
    x, y = load_fashion_mnist("test", root)
    assert np.array_equal(x, te_x)
    ds = FashionMNIST("test", root=root)
    assert len(ds) == 12 and ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    img, label = ds[3]
    assert img.shape == (1, 28, 28) and img.dtype == torch.float32 and label == te_y[3]
    expected = (torch.from_numpy(te_x[3]).float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(img[0], expected, atol=1e-6)
    # a torchvision-style transform gets a PIL image: same numbers
    ds2 = FashionMNIST("test", root=root, transform=eval_transform(fashion_mnist_data_config()))
    assert torch.allclose(ds2[3][0], img, atol=1e-6)


def test_dataset_errors(tmp_path, fm_root, monkeypatch):
    root = fm_root[0]
    with pytest.raises(DataError, match="does not exist"):
        FashionMNIST("train", root=tmp_path / "nothing")
    with pytest.raises(DataError, match="unknown Fashion-MNIST split"):
        FashionMNIST("dev", root=root)
    (root / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*not found"):
        FashionMNIST("test", root=root)
    # count mismatch between images and labels
    write_idx(root / "t10k-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError, match="12 images but"):
        FashionMNIST("test", root=root)
    write_idx(root / "t10k-labels-idx1-ubyte", np.full(12, 10, dtype=np.uint8))
    with pytest.raises(DataError, match="outside 0..9"):
        FashionMNIST("test", root=root)
    # the env var selects the default folder
    monkeypatch.setenv("QMAMBA_FASHION_MNIST", str(root))
    assert len(FashionMNIST("train")) == 40


def test_class_names():
    assert CLASS_NAMES == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@pytest.mark.skipif(not (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_debian_files(monkeypatch):
    monkeypatch.delenv("QMAMBA_FASHION_MNIST", raising=False)
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    assert np.bincount(y).tolist() == [1000] * 10
    assert y[:5].tolist() == [9, 2, 1, 1, 6]
    x, y = load_fashion_mnist("train")
    assert x.shape == (60000, 28, 28) and np.bincount(y).tolist() == [6000] * 10
