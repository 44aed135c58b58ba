"""build_eval_dataset on folders named after the model's classes, in any order, subsets,
empty class folders, class maps: every image gets the index of the class it holds.

Each generated image (conftest's write_class_folders) is one grey level that encodes its
true class (10 * class + 5), so a test reads the class back from the pixels and compares
it with the dataset's label.
"""
from __future__ import annotations

import json
import random
import warnings

import pytest
from PIL import Image

from qmamba.data import build_eval_dataset
from qmamba.data.fashion_mnist import CLASS_NAMES
from qmamba.data.labels import imagenet_classes
from qmamba.data.transforms import fashion_mnist_data_config
from qmamba.errors import DataError
from qmamba.models.registry import imagenet_data_config

WORDS = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
         "bag", "ankle_boot"]  # Fashion-MNIST label order
CFG = fashion_mnist_data_config()


def pixel_class(img: Image.Image) -> int:
    """The class an image was written for (its grey level is 10 * class + 5)."""
    return (img.getpixel((0, 0))[0] - 5) // 10


@pytest.fixture(scope="module")
def write_classes(write_class_folders):
    return write_class_folders


def build(root, split="val", data_config=CFG, **kw):
    return build_eval_dataset(root, split, data_config, transform=pixel_class, **kw)


def assert_labels_true(ds) -> None:
    assert len(ds) > 0
    for i in range(len(ds)):
        truth, label = ds[i]
        assert label == truth, ds.samples[i][0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_word_named_any_order(tmp_path, seed, write_classes):
    """Folder names that sort in another order than the labels: matched by name."""
    names = WORDS[:]
    random.Random(seed).shuffle(names)
    spelled = {n if k % 2 else n.upper().replace("_", "-"): WORDS.index(n)
               for k, n in enumerate(names)}
    write_classes(tmp_path, spelled, splits=("train", "val"))
    for split in ("val", "train"):
        ds = build(tmp_path, split, class_names=CLASS_NAMES)
        assert_labels_true(ds)
        a = ds.label_assignment
        assert (a.mode, a.folders, a.matched, a.classes_with_images) == ("names", 10, 10, 10)


def test_sorted_labels_are_wrong_for_word_names(tmp_path, write_classes):
    """Today's behaviour, kept behind labels='sorted': folder i = class i."""
    write_classes(tmp_path, {n: WORDS.index(n) for n in WORDS})
    ds = build(tmp_path, labels="sorted", class_names=CLASS_NAMES)
    assert ds.label_assignment.mode == "sorted"
    wrong = sum(ds[i][0] != ds[i][1] for i in range(len(ds)))
    assert wrong == 12  # only dress, sandal, shirt and sneaker sort into their label position


def test_model_class_names_used(tmp_path, write_classes):
    """A model passed as the data config gives its class names."""

    class Model:
        pretrained_cfg = CFG
        class_names = CLASS_NAMES

    write_classes(tmp_path, {"coat": 4, "bag": 8})
    ds = build_eval_dataset(tmp_path, "val", Model(), transform=pixel_class)
    assert_labels_true(ds)
    assert ds.label_assignment.mode == "names"
    cfg = dict(CFG, label_names=list(CLASS_NAMES))  # timm's pretrained_cfg field
    assert build(tmp_path, data_config=cfg).label_assignment.mapping == {"bag": 8, "coat": 4}


def test_subset_three_of_ten(tmp_path, write_classes):
    write_classes(tmp_path, {"sneaker": 7, "Bag": 8, "t-shirt top": 0})
    ds = build(tmp_path, class_names=CLASS_NAMES)
    assert_labels_true(ds)
    a = ds.label_assignment
    assert (a.folders, a.matched, a.classes_with_images, a.num_classes) == (3, 3, 3, 10)
    assert "3 of the model's 10 classes have images" in a.describe()
    record = a.to_dict()
    assert record["mode"] == "names" and record["mapping"] == {"Bag": 8, "sneaker": 7,
                                                              "t-shirt top": 0}
    json.dumps(record)


def test_empty_class_folders(tmp_path, write_classes):
    write_classes(tmp_path, {"coat": 4, "bag": None, "dress": 3, "shirt": None})
    ds = build(tmp_path, class_names=CLASS_NAMES)
    assert_labels_true(ds)
    a = ds.label_assignment
    assert a.empty == ("bag", "shirt") and a.classes_with_images == 2
    assert "2 class folders without images" in a.describe()


def test_imagenet_synsets_subset_and_empty(tmp_path, write_classes):
    """An ImageNet layout with all 1,000 class folders, 20 of them filled (no torchvision
    error naming the 980 empty ones); and a 3-synset folder."""
    wnids, _ = imagenet_classes()
    filled = set(range(0, 1000, 50))
    write_classes(tmp_path / "full", {w: (k % 25 if k in filled else None)
                                      for k, w in enumerate(wnids)}, per_class=1)
    ds = build_eval_dataset(tmp_path / "full", "val", imagenet_data_config(32),
                            class_names=wnids)
    a = ds.label_assignment
    assert len(ds) == 20 and sorted(set(ds.targets)) == sorted(filled)
    assert (a.folders, a.matched, len(a.empty), a.classes_with_images) == (1000, 1000, 980, 20)
    write_classes(tmp_path / "few", {wnids[999]: 1, wnids[3]: 2, wnids[500]: 3})
    ds = build_eval_dataset(tmp_path / "few", "val", imagenet_data_config(32), class_names=wnids)
    assert sorted(set(ds.targets)) == [3, 500, 999]
    assert dict(zip(ds.targets, (pixel_class(Image.open(p).convert("RGB")) for p, _ in ds.samples),
                    strict=True)) == {999: 1, 3: 2, 500: 3}


def test_unknown_names(tmp_path, write_classes):
    write_classes(tmp_path, {**{w: k for k, w in enumerate(WORDS[:7])},
                             "sneakers_and_more": 7, "misc": 8, "ankle_boat": 9})
    with pytest.raises(DataError) as e:
        build(tmp_path, class_names=CLASS_NAMES)
    msg = str(e.value)
    assert msg.startswith(repr(str(tmp_path / "val")))
    assert "3 of its 10 class folders match no class" in msg
    assert "'ankle_boat' (closest: 'Ankle boot')" in msg and "'misc'" in msg
    assert "--class-map FILE" in msg and "--labels sorted" in msg
    assert len(msg) < 600


def test_no_name_matches_and_many_folders(tmp_path):
    """A folder of 1,000 unknown names: one short message, the first few and the count."""
    for i in range(1000):
        (tmp_path / "val" / f"category_{i:04d}").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        build(tmp_path, class_names=CLASS_NAMES)
    msg = str(e.value)
    assert "'category_0000'" in msg and "(1,000 in all)" in msg and len(msg) < 600


@pytest.mark.parametrize("kind", ["json_index", "json_name", "csv_index", "csv_name"])
def test_class_map(tmp_path, kind, write_classes):
    folders = {"first": 3, "second": 9, "coat": 4}  # 'coat' is not in the map: matched by name
    write_classes(tmp_path, folders)
    values = {"first": 3, "second": 9} if "index" in kind else {"first": "Dress",
                                                                "second": "ankle boot"}
    if kind.startswith("json"):
        path = tmp_path / "map.json"
        path.write_text(json.dumps(values))
    else:
        path = tmp_path / "map.csv"
        path.write_text("folder,class\n" + "".join(f"{k},{v}\n" for k, v in values.items()))
    ds = build(tmp_path, class_names=CLASS_NAMES, class_map=path)
    assert_labels_true(ds)
    a = ds.label_assignment
    assert a.mode == "class_map" and a.class_map == str(path) and a.to_dict()["class_map"] == str(path)
    assert str(path) in a.describe()


def test_sorted_mode_counts(tmp_path, write_classes):
    write_classes(tmp_path, {f"c{k}": k for k in range(10)})
    ds = build(tmp_path, class_names=CLASS_NAMES, labels="sorted")
    assert_labels_true(ds)
    write_classes(tmp_path / "three", {f"c{k}": k for k in range(3)})
    with pytest.raises(DataError, match="has 3 class folders but the model predicts 10") as e:
        build(tmp_path / "three", class_names=CLASS_NAMES, labels="sorted")
    assert "--class-map" in str(e.value)


def test_skip_corrupt_counts_empty(tmp_path, write_classes):
    write_classes(tmp_path, {"coat": 4, "bag": 8}, per_class=1)
    (tmp_path / "val" / "bag" / "0.png").write_bytes(b"not a png")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        ds = build(tmp_path, class_names=CLASS_NAMES, skip_corrupt=True)
    assert len(ds) == 1 and ds.label_assignment.empty == ("bag",)
