"""The jobs' calibration and evaluation splits: unreadable images skipped and counted,
sizes checked with errors that name the parameter."""
from __future__ import annotations

import warnings

import pytest
import torch

from qmamba.data.transforms import fashion_mnist_data_config
from qmamba.errors import ConfigError, DataError
from qmamba.jobs.data import calibration_data, data_workers, evaluation_data

CFG = fashion_mnist_data_config()  # 1x28x28, 10 classes


@pytest.fixture(scope="module")
def folder(tmp_path_factory, write_image_folder, fashion_folders):
    """10 classes x 3 images per split; two corrupt files in train/, one in val/."""
    root = write_image_folder(tmp_path_factory.mktemp("data"), per_class=3, names=fashion_folders)
    names = fashion_folders
    bad = [root / "train" / names[0] / "1.png", root / "train" / names[5] / "0.png",
           root / "val" / names[9] / "2.png"]
    for b in bad:
        b.write_bytes(b.read_bytes()[:40])  # truncated: the header survives, the pixels do not
    return root, bad


class _Model(torch.nn.Module):
    pretrained_cfg = default_cfg = CFG


class _ImageNetModel(torch.nn.Module):
    pretrained_cfg = default_cfg = {**CFG, "input_size": (3, 224, 224), "num_classes": 1000,
                                    "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def test_calibration_skips_and_replaces(folder):
    root, bad = folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = calibration_data(_Model(), "m", root, 28, seed=0, skip_corrupt=True)
    assert split.num_images == 28 and sorted(split.skipped) == sorted(map(str, bad[:2]))
    assert split.describe()["skipped_unreadable"]["count"] == 2
    assert all(torch.isfinite(split.dataset[i][0]).all() for i in range(28))
    with pytest.raises(DataError, match="only 28 readable images"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calibration_data(_Model(), "m", root, 29, seed=0, skip_corrupt=True)


def test_evaluation_skips_and_counts(folder):
    root, bad = folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = evaluation_data(_Model(), "m", root, skip_corrupt=True)
    assert split.num_images == 29 and split.skipped == [str(bad[2])]
    without = evaluation_data(_Model(), "m", root)
    assert without.num_images == 30 and without.skipped is None
    assert "skipped_unreadable" not in without.describe()



def test_sizes_are_checked_by_parameter_name(folder):
    root, _ = folder
    with pytest.raises(DataError) as err:
        calibration_data(_Model(), "m", None, 5000, seed=0)
    assert err.value.params == ("calib_size",)
    assert str(err.value).startswith("`calib_size` 5000 is more than the 1,024 images")
    with pytest.raises(ConfigError) as err:
        evaluation_data(_Model(), "m", root, eval_limit=0)
    assert err.value.params == ("eval_limit",)
    with pytest.raises(ConfigError) as err:
        data_workers(root, -1)
    assert err.value.params == ("workers",)
    assert data_workers(None, None) == 0 and data_workers(root, 3) == 3


def test_a_model_for_other_images_needs_a_folder():
    with pytest.raises(DataError) as err:
        evaluation_data(_ImageNetModel(), "big", None)
    assert err.value.params == ("data_dir",)
    assert "big takes 224x224 images with 3 channel(s) and 1000 classes" in str(err.value)
