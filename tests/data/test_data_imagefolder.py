"""ImageNet-layout folders and eval transforms."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qmamba.data import build_eval_dataset, eval_transform, resolve_data_config
from qmamba.data.transforms import fashion_mnist_data_config
from qmamba.errors import DataError
from qmamba.models.registry import imagenet_data_config

CFG = dict(imagenet_data_config(), num_classes=2)


def _img(path: Path, size=(300, 260), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    c = {"RGB": 3, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(size[1], size[0], c), dtype=np.uint8)
    im = Image.fromarray(arr[..., 0] if c == 1 else arr)
    im.save(path)
    return path


@pytest.fixture()
def root(tmp_path):
    for split in ("train", "val"):
        for k, cls in enumerate(("n001", "n002")):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            _img(d / "a.png", seed=k)
            _img(d / "b.JPEG", size=(240, 320), seed=10 + k)
            _img(d / "c.jpg", size=(100, 80), mode="L", seed=20 + k)
    return tmp_path


def test_eval_dataset_shapes_and_classes(root):
    ds = build_eval_dataset(root, "val", CFG)
    assert ds.classes == ["n001", "n002"] and len(ds) == 6
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
        assert y == (0 if i < 3 else 1)
    train = build_eval_dataset(root, "train", CFG)
    assert len(train) == 6 and train.root.endswith("train")


def test_transform_matches_timm(root):
    timm_data = pytest.importorskip("timm.data")
    cfg = timm_data.resolve_data_config(
        {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bicubic",
         "mean": CFG["mean"], "std": CFG["std"]})
    ref = timm_data.create_transform(**cfg, is_training=False)
    ours = eval_transform(CFG)
    for p in sorted((root / "val" / "n001").iterdir()):
        im = Image.open(p).convert("RGB")
        assert torch.allclose(ours(im), ref(im), atol=1e-6), p.name
    # small sizes too (floor(size / crop_pct))
    small = dict(CFG, input_size=(3, 32, 32))
    cfg = timm_data.resolve_data_config(dict(cfg, input_size=(3, 32, 32)))
    ref = timm_data.create_transform(**cfg, is_training=False)
    im = Image.open(root / "val" / "n002" / "a.png").convert("RGB")
    assert torch.allclose(eval_transform(small)(im), ref(im), atol=1e-6)


def test_transform_from_model_and_grayscale():
    class M(torch.nn.Module):
        pretrained_cfg = imagenet_data_config(64)

    t = eval_transform(M())
    im = Image.fromarray(np.zeros((50, 90, 3), dtype=np.uint8))
    assert t(im).shape == (3, 64, 64)
    g = eval_transform(fashion_mnist_data_config())
    arr = np.random.default_rng(0).integers(0, 256, size=(28, 28), dtype=np.uint8)
    x = g(Image.fromarray(arr))
    assert x.shape == (1, 28, 28)
    expected = (torch.from_numpy(arr).float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(x[0], expected, atol=1e-6)  # no resampling at all
    with pytest.raises(DataError, match="mean/std"):
        resolve_data_config(dict(imagenet_data_config(), mean=(0.5,)))
    with pytest.raises(DataError, match="no data config"):
        resolve_data_config(torch.nn.Linear(1, 1))


def test_root_errors(tmp_path, root):
    with pytest.raises(DataError, match="does not exist") as e:
        build_eval_dataset(tmp_path / "missing", "val", CFG)
    assert "missing" in str(e.value)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        build_eval_dataset(f, "val", CFG)
    only_val = tmp_path / "only_val"
    (only_val / "val" / "c").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no train/ folder \(calibration") as e:
        build_eval_dataset(only_val, "train", CFG)
    assert "contains: val" in str(e.value)
    only_train = tmp_path / "only_train"
    (only_train / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no val/ folder"):
        build_eval_dataset(only_train, "val", CFG)


def test_empty_and_flat_folders(tmp_path):
    r = tmp_path / "r"
    (r / "val").mkdir(parents=True)
    with pytest.raises(DataError, match="is empty"):
        build_eval_dataset(r, "val", CFG)
    _img(r / "val" / "ILSVRC2012_val_00000001.JPEG", size=(10, 10))
    with pytest.raises(DataError, match="no class folders"):
        build_eval_dataset(r, "val", CFG)
    (r / "val" / "n001").mkdir()
    (r / "val" / "n001" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images found"):
        build_eval_dataset(r, "val", CFG, class_names=["n001", "n002"])


def test_num_classes_check(root):
    """Without class names, labels are sorted folder positions: the counts must agree."""
    with pytest.raises(DataError, match="2 class folders but the model predicts 1,000") as e:
        build_eval_dataset(root, "val", imagenet_data_config())
    assert "class_names=" in str(e.value) and "class_map=" in str(e.value)
    names = [f"n{i:03d}" for i in range(1000)]
    ds = build_eval_dataset(root, "val", imagenet_data_config(), class_names=names)
    assert len(ds) == 6 and sorted(set(ds.targets)) == [1, 2]


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_image(root, kind):
    bad = root / "val" / "n002" / "zz_bad.jpg"
    if kind == "garbage":
        bad.write_bytes(b"definitely not a jpeg")
    else:
        good = (root / "val" / "n002" / "b.JPEG").read_bytes()
        bad.write_bytes(good[: len(good) // 2])
    ds = build_eval_dataset(root, "val", CFG)
    assert len(ds) == 7
    idx = [p for p, _ in ds.samples].index(str(bad))
    with pytest.raises(DataError, match="cannot read image") as e:
        ds[idx]
    assert str(bad) in str(e.value) and "skip_corrupt=True" in str(e.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_eval_dataset(root, "val", CFG, skip_corrupt=True)
    assert len(ds) == 6 and [p for p, _ in ds.skipped] == [str(bad)]
    assert ds.targets == [0, 0, 0, 1, 1, 1]
    assert any("skipped 1 unreadable" in str(w.message) for w in caught)
    for i in range(len(ds)):
        ds[i]
