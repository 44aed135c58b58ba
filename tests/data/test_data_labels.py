"""Matching class folder names to a model's classes (qmamba.data.labels, class_map)."""
from __future__ import annotations

import json
import random

import pytest

from qmamba.data.class_map import read_class_map
from qmamba.data.fashion_mnist import CLASS_NAMES
from qmamba.data.labels import (
    ClassNames,
    assign_labels,
    imagenet_classes,
    is_wordnet_id,
    normalize_name,
)
from qmamba.errors import ConfigError, DataError

WORD_FOLDERS = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                "sneaker", "bag", "ankle_boot"]  # in label order
MAX_MESSAGE = 600  # "a few hundred characters", whatever the folder holds


def test_normalize_name():
    keys = {normalize_name(n) for n in ("T-shirt/top", "tshirt_top", "T shirt top", "T-SHIRT_TOP")}
    assert keys == {"tshirttop"}
    assert normalize_name("Ankle boot") == normalize_name("ankle-boot") == "ankleboot"
    assert is_wordnet_id("n01440764") and not is_wordnet_id("n0144076") and not is_wordnet_id("coat")


def test_word_names_in_any_order():
    shuffled = WORD_FOLDERS[:]
    random.Random(0).shuffle(shuffled)
    a = assign_labels(shuffled, CLASS_NAMES)
    assert a.mode == "names" and a.folders == a.matched == 10 and a.num_classes == 10
    assert a.mapping == {f: i for i, f in enumerate(WORD_FOLDERS)}
    variants = ["T-shirt_top", "Trouser", "PULLOVER", "dress", "Coat", "sandal", "Shirt",
                "sneaker", "Bag", "Ankle-Boot"]
    assert assign_labels(variants, CLASS_NAMES).mapping == {f: i for i, f in enumerate(variants)}


def test_subset_and_hidden_folders():
    a = assign_labels(["coat", "bag", ".ipynb_checkpoints", "trouser"], CLASS_NAMES)
    assert a.mapping == {"bag": 8, "coat": 4, "trouser": 1}
    assert a.folders == 3 and a.classes_with_images == 3
    assert "3 of the model's 10 classes" in a.describe()


def test_imagenet_wordnet_ids_and_descriptions():
    wnids, descriptions = imagenet_classes()
    assert len(wnids) == 1000 and wnids[0] == "n01440764"
    by_id = ClassNames(wnids)
    assert by_id.index_of("n01443537") == 1
    assert by_id.index_of("tench") == 0  # the description's first words match too
    assert by_id.index_of("goldfish") == 1 and by_id.label(1) == "n01443537 (goldfish)"
    assert by_id.index_of("crane") is None  # two ImageNet classes are 'crane'
    by_text = ClassNames(descriptions)  # timm-style descriptions: WordNet ids added
    assert by_text.index_of("n01484850") == 2 and by_text.index_of("white shark") == 2
    a = assign_labels([wnids[k] for k in (999, 5, 417)], wnids)
    assert a.mapping == {wnids[5]: 5, wnids[417]: 417, wnids[999]: 999}


def test_unknown_names_one_short_message():
    folders = WORD_FOLDERS[:8] + ["ankle_boat", "mystery"]
    with pytest.raises(DataError) as e:
        assign_labels(folders, CLASS_NAMES, where="'DIR/val'")
    msg = str(e.value)
    assert "2 of its 10 class folders match no class" in msg
    assert "'ankle_boat' (closest: 'Ankle boot')" in msg and "'mystery'" in msg
    assert "--class-map FILE" in msg and "--labels sorted" in msg
    assert "class_map=PATH" in msg and "labels='sorted'" in msg
    assert len(msg) < MAX_MESSAGE


def test_many_long_unknown_names_stay_short():
    folders = [f"some_rather_long_folder_name_that_goes_on_and_on_{i:04d}" for i in range(1000)]
    with pytest.raises(DataError) as e:
        assign_labels(folders, CLASS_NAMES, where="'DIR/val'")
    msg = str(e.value)
    assert "1,000 of its 1,000 class folders" in msg and "(1,000 in all)" in msg
    assert len(msg) < MAX_MESSAGE


def test_two_folders_for_one_class():
    with pytest.raises(DataError, match="'T-shirt top' and 'tshirt_top' both match") as e:
        assign_labels(["tshirt_top", "T-shirt top", "coat"], CLASS_NAMES)
    assert "--class-map" in str(e.value)


def test_sorted_mode():
    folders = [f"c{i}" for i in range(10)]
    a = assign_labels(folders, CLASS_NAMES, labels="sorted")
    assert a.mode == "sorted" and a.mapping == {f: i for i, f in enumerate(folders)}
    with pytest.raises(DataError, match="3 class folders but the model predicts 10") as e:
        assign_labels(["a", "b", "c"], CLASS_NAMES, labels="sorted")
    assert "--class-map" in str(e.value) and len(str(e.value)) < MAX_MESSAGE
    # without class names, sorted positions are the only way (as before names were known)
    assert assign_labels(folders, None, num_classes=10).mode == "sorted"
    with pytest.raises(DataError, match="class names are not known"):
        assign_labels(folders[:3], None, num_classes=10)
    with pytest.raises(DataError, match="labels='names' needs the model's class names"):
        assign_labels(folders, None, labels="names", num_classes=10)
    with pytest.raises(ConfigError, match="labels='alphabetic'"):
        assign_labels(folders, CLASS_NAMES, labels="alphabetic")
    with pytest.raises(ConfigError, match="pass one of them"):
        assign_labels(folders, CLASS_NAMES, labels="sorted", class_map={"c0": 0})


def test_class_map_values_index_or_name():
    a = assign_labels(["x", "y", "coat"], CLASS_NAMES, class_map={"x": 9, "y": "T-shirt/top"})
    assert a.mode == "class_map" and a.mapping == {"coat": 4, "x": 9, "y": 0}  # coat: by name
    assert a.class_map == "<mapping>"
    # a map may list folders this split lacks (one map for a full and a subset folder)
    assert assign_labels(["x"], CLASS_NAMES, class_map={"x": 1, "z": 2}).mapping == {"x": 1}
    with pytest.raises(DataError, match="values that are not class indices 0..9") as e:
        assign_labels(["x", "y"], CLASS_NAMES, class_map={"x": 10, "y": "Cot"})
    assert "'x': '10'" in str(e.value) and "'y': 'Cot'" in str(e.value)
    with pytest.raises(DataError, match="neither in the class map"):
        assign_labels(["x", "mystery"], CLASS_NAMES, class_map={"x": 1})
    # without class names: indices only, every folder listed
    a = assign_labels(["x", "y"], None, class_map={"x": 3, "y": 0}, num_classes=10)
    assert a.mapping == {"x": 3, "y": 0}
    with pytest.raises(DataError, match="has no entry for 1 class folder: 'y'"):
        assign_labels(["x", "y"], None, class_map={"x": 3}, num_classes=10)


def test_class_map_files(tmp_path):
    js = tmp_path / "map.json"
    js.write_text(json.dumps({"a": 1, "b": "Ankle boot"}))
    assert read_class_map(js) == ({"a": 1, "b": "Ankle boot"}, str(js))
    csv_index = tmp_path / "map.csv"
    csv_index.write_text("folder,class\n# a comment\na,1\n\nb, 9\n")
    assert read_class_map(csv_index)[0] == {"a": 1, "b": 9}
    csv_names = tmp_path / "names.txt"
    csv_names.write_text('a,Trouser\n"b, with comma",T-shirt/top\n')
    assert read_class_map(csv_names)[0] == {"a": "Trouser", "b, with comma": "T-shirt/top"}
    a = assign_labels(["a", "b"], CLASS_NAMES, class_map=js)
    assert a.mapping == {"a": 1, "b": 9} and a.class_map == str(js)


@pytest.mark.parametrize("name, text, match", [
    ("bad.json", "{'a': 1}", "not valid JSON"),
    ("list.json", "[1, 2]", "holds a JSON list"),
    ("bool.json", '{"a": true}', "must be an index or a name"),
    ("empty.json", "{}", "lists no folder"),
    ("cells.csv", "a,1,2\n", "line 1: expected 2 cells"),
    ("twice.csv", "a,1\na,2\n", "listed twice"),
])
def test_class_map_file_errors(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=match) as e:
        read_class_map(path)
    assert name in str(e.value) and len(str(e.value)) < MAX_MESSAGE


def test_class_map_missing(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_class_map(tmp_path / "nope.json")
    with pytest.raises(DataError, match="a file path or a mapping"):
        read_class_map(3)
