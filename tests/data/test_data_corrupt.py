"""Unreadable images: named in the error (also from loader workers), or skipped and
counted (`readable_indices`; the jobs' calibration / evaluation splits: tests/jobs)."""
from __future__ import annotations

import warnings

import pytest
import torch

from qmamba.data import build_eval_dataset, calibration_indices, make_loader
from qmamba.data.imagefolder import readable_indices
from qmamba.data.loaders import _unwrap_worker_error
from qmamba.data.transforms import fashion_mnist_data_config
from qmamba.errors import DataError

CFG = fashion_mnist_data_config()  # 1x28x28, 10 classes


@pytest.fixture(scope="module")
def folder(tmp_path_factory, write_image_folder):
    """10 classes x 3 images per split; two corrupt files in train/, one in val/."""
    root = write_image_folder(tmp_path_factory.mktemp("data"), per_class=3)
    bad = [root / "train" / "c0" / "1.png", root / "train" / "c5" / "0.png", root / "val" / "c9" / "2.png"]
    for b in bad:
        b.write_bytes(b.read_bytes()[:40])  # truncated: the header survives, the pixels do not
    return root, bad


class _Model(torch.nn.Module):
    pretrained_cfg = default_cfg = CFG


def test_readable_indices_keeps_order_and_stops_at_need(folder):
    root, bad = folder
    ds = build_eval_dataset(root, "train", CFG)
    order = calibration_indices(len(ds), len(ds), seed=0)
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        good, skipped = readable_indices(ds, order)
    assert sorted(p for p, _ in skipped) == sorted(map(str, bad[:2]))
    assert good == [i for i in order if ds.samples[i][0] not in {str(b) for b in bad}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first5, _ = readable_indices(ds, order, need=5)
    assert first5 == good[:5]


def test_worker_error_reaches_the_caller_unwrapped(folder):
    root, bad = folder
    ds = build_eval_dataset(root, "val", CFG)
    with pytest.raises(DataError) as err:
        for _ in make_loader(ds, batch_size=8, num_workers=1):
            pass
    text = str(err.value)
    assert text.startswith(f"cannot read image '{bad[2]}'") and "Traceback" not in text


def test_unwrap_leaves_other_messages_alone():
    plain = DataError("cannot read image 'x'")
    assert _unwrap_worker_error(plain) is plain
    wrapped = DataError("Caught DataError in DataLoader worker process 3.\nOriginal Traceback (most recent "
                        "call last):\n  File \"x.py\", line 1\nqmamba.errors.DataError: cannot read image 'y'\n")
    assert str(_unwrap_worker_error(wrapped)) == "cannot read image 'y'"
