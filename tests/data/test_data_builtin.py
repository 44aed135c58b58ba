"""Built-in compressed Fashion-MNIST bundles."""
from __future__ import annotations

import lzma

import numpy as np
import pytest
import torch
from test_data_fashion_mnist import make_split  # helper from the same folder

from qmamba.data import builtin
from qmamba.data.builtin import (
    BuiltinFashionMNIST,
    bundle_path,
    calib_indices,
    load_builtin,
    make_bundle,
    read_bundle,
    write_bundle,
)
from qmamba.data.fashion_mnist import DEFAULT_ROOT
from qmamba.errors import DataError


def test_round_trip_restores_order(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=30)
    indices = np.arange(100, 130)
    p = write_bundle(tmp_path / "x.npz.xz", images, labels, indices, {"split": "x"})
    d = read_bundle(p)
    assert np.array_equal(d["images"], images) and np.array_equal(d["labels"], labels)
    assert np.array_equal(d["indices"], indices) and d["meta"]["split"] == "x"
    assert d["labels"].dtype == np.int64 and d["meta"]["count"] == 30
    assert [q.name for q in tmp_path.iterdir()] == ["x.npz.xz"]


def test_corrupt_bundle(tmp_path):
    p = tmp_path / "bad.npz.xz"
    p.write_bytes(b"not xz at all")
    with pytest.raises(DataError, match="corrupt or truncated") as e:
        read_bundle(p)
    assert str(p) in str(e.value)
    p.write_bytes(lzma.compress(b"PK but not a zip"))
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_bundle(p)
    with pytest.raises(DataError, match="does not exist"):
        read_bundle(tmp_path / "none.npz.xz")
    with pytest.raises(DataError, match="unknown built-in split"):
        bundle_path("train")


def test_make_bundle_from_idx(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    tr_x, tr_y = make_split(src, "train", 50, seed=3)
    te_x, te_y = make_split(src, "t10k", 7, seed=4)
    monkeypatch.setattr(builtin, "CALIB_SIZE", 16)
    out = tmp_path / "out"
    make_bundle("calib", source_root=src, out_dir=out)
    make_bundle("test", source_root=src, out_dir=out)
    c = load_builtin("calib", folder=out)
    idx = calib_indices(16, 0, total=50)
    assert np.array_equal(c["indices"], idx)
    assert np.array_equal(c["images"], tr_x[idx]) and np.array_equal(c["labels"], tr_y[idx])
    t = BuiltinFashionMNIST("test", folder=out)
    assert len(t) == 7 and t[2][1] == te_y[2] and t[2][0].shape == (1, 28, 28)
    # missing bundle: rebuilt from the IDX files, identical
    c2 = load_builtin("calib", folder=tmp_path / "empty", source_root=src)
    assert np.array_equal(c2["images"], c["images"])
    with pytest.raises(DataError, match="missing.*cannot be rebuilt"):
        load_builtin("calib", folder=tmp_path / "empty", source_root=tmp_path / "nowhere")


def test_calib_indices_fixed():
    a = calib_indices()
    assert len(a) == 1024 and len(set(a.tolist())) == 1024 and a.max() < 60000
    assert np.array_equal(a, calib_indices())
    assert np.all(np.diff(a) > 0)


@pytest.mark.skipif(not bundle_path("test").exists(), reason="built-in bundles not built")
def test_shipped_bundles():
    t = BuiltinFashionMNIST("test")
    assert len(t) == 10000 and np.bincount(t.labels.numpy()).tolist() == [1000] * 10
    assert t.labels[:5].tolist() == [9, 2, 1, 1, 6]
    c = BuiltinFashionMNIST("calib")
    assert len(c) == 1024 and c.meta["source_split"] == "train" and c.meta["seed"] == 0
    assert np.array_equal(c.indices, calib_indices())
    x, y = c[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and 0 <= y < 10
    assert (bundle_path("test").parent / "LICENSE").read_text().count("Zalando SE") >= 1
    if (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").exists():
        from qmamba.data import load_fashion_mnist

        ref_x, ref_y = load_fashion_mnist("test", DEFAULT_ROOT)
        assert np.array_equal(t.images.numpy(), ref_x) and np.array_equal(t.labels.numpy(), ref_y)
