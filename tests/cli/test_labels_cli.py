"""Class folders matched to the model's classes by name, through `qmamba eval` and
`qmamba quantize` (issue 14): word-named and shuffled folders, a subset of the classes,
synset-named folders, class maps, and one short error line when nothing matches."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from qmamba.data import load_builtin

# Fashion-MNIST classes, in label order, spelled as users name folders (another order
# when sorted, another spelling than the model's "T-shirt/top", "Ankle boot", ...)
WORDS = ("T-shirt_top", "trouser", "Pullover", "dress", "COAT", "sandal", "shirt", "Sneaker", "bag",
         "ankle boot")


def _real_images_folder(root, names, per_class: int = 6, splits=("val",)):
    """The first `per_class` built-in test images of each class, in folders `names[label]`."""
    data = load_builtin("test")
    images, labels = data["images"], data["labels"]
    for split in splits:
        for cls, name in enumerate(names):
            if name is None:
                continue
            d = root / split / name
            d.mkdir(parents=True)
            for i, k in enumerate(np.flatnonzero(labels == cls)[:per_class]):
                Image.fromarray(images[k].reshape(28, 28), "L").save(d / f"{i}.png")
    return root


def _eval(run_cli, *args):
    rc, out, err = run_cli("eval", "--model", "vim_fmnist", "--no-progress", "--batch-size", "32", "--workers", "0",
                           *args)
    return rc, out, err


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    return {
        "sorted": _real_images_folder(root / "sorted", [f"c{k}" for k in range(10)]),
        "words": _real_images_folder(root / "words", WORDS),
        "subset": _real_images_folder(root / "subset", [WORDS[k] if k in (1, 5, 8) else None for k in range(10)]),
    }


def test_word_named_folders_give_the_label_ordered_accuracy_with_no_flag(run_cli, folders, tmp_path):
    rc, out, err = _eval(run_cli, "--data", folders["words"], "--out", tmp_path / "w.json")
    assert rc == 0, err
    assert "labels matched by name: 10 of the model's 10 classes have images" in out
    words = json.loads((tmp_path / "w.json").read_text())
    assert words["label_set"] == {"name": "fashion-mnist", "num_classes": 10}
    assert words["evaluation"]["labels"]["mapping"] == {name: k for k, name in enumerate(WORDS)}
    rc, _, err = _eval(run_cli, "--data", folders["sorted"], "--labels", "sorted", "--out", tmp_path / "s.json")
    assert rc == 0, err
    ordered = json.loads((tmp_path / "s.json").read_text())
    assert words["result"]["top1"] == ordered["result"]["top1"] > 70.0  # the same 60 images
    # sorted labels on the word-named folders: what `eval --data` did before
    rc, _, _ = _eval(run_cli, "--data", folders["words"], "--labels", "sorted", "--out", tmp_path / "x.json")
    assert rc == 0 and json.loads((tmp_path / "x.json").read_text())["result"]["top1"] < words["result"]["top1"]


def test_a_folder_with_3_of_10_classes_is_evaluated_against_those_classes(run_cli, folders, tmp_path):
    rc, out, err = _eval(run_cli, "--data", folders["subset"], "--out", tmp_path / "r.json")
    assert rc == 0, err
    labels = json.loads((tmp_path / "r.json").read_text())["evaluation"]["labels"]
    assert labels["classes_with_images"] == 3 and labels["folders"] == 3
    assert labels["mapping"] == {WORDS[1]: 1, WORDS[5]: 5, WORDS[8]: 8}
    assert "3 of the model's 10 classes have images" in out


def test_names_that_match_nothing_give_one_short_error_line(run_cli, tmp_path, write_class_folders):
    names = {f"category_{i:04d}_with_a_long_name": i % 10 for i in range(200)}
    root = write_class_folders(tmp_path / "unknown", names, per_class=1)
    rc, out, err = _eval(run_cli, "--data", root)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: ")
    assert "category_0000_with_a_long_name" in lines[0] and "200" in lines[0]
    assert "--labels sorted" in lines[0] and "--class-map" in lines[0]
    assert len(lines[0]) < 700


def test_a_class_map_file_assigns_the_folders(run_cli, folders, tmp_path):
    mapping = {f"c{k}": WORDS[k] for k in range(10)}
    mapping["c3"] = 3  # indices work too
    path = tmp_path / "map.json"
    path.write_text(json.dumps(mapping))
    rc, out, err = _eval(run_cli, "--data", folders["sorted"], "--class-map", path, "--out", tmp_path / "m.json")
    assert rc == 0, err
    labels = json.loads((tmp_path / "m.json").read_text())["evaluation"]["labels"]
    assert labels["mode"] == "class_map" and labels["mapping"] == {f"c{k}": k for k in range(10)}
    rc, _, err = _eval(run_cli, "--data", folders["sorted"], "--class-map", path, "--labels", "sorted")
    assert rc == 2 and "not allowed with argument" in err


def test_quantize_matches_train_and_val_folders_by_name(run_cli, tmp_path):
    root = _real_images_folder(tmp_path / "tv", WORDS, per_class=2, splits=("train", "val"))
    out_dir = tmp_path / "q"
    rc, out, err = run_cli("quantize", "--model", "vim_fmnist", "--data", root, "--method", "minmax",
                           "--w-bits", "8", "--a-bits", "8", "--calib-size", "16", "--batch-size", "16",
                           "--workers", "0", "--out", out_dir, "--no-progress")
    assert rc == 0, err
    report = json.loads((out_dir / "report.json").read_text())
    for part in ("calibration", "evaluation"):
        assert report[part]["labels"]["mode"] == "names"
        assert report[part]["labels"]["mapping"] == {name: k for k, name in enumerate(WORDS)}
    assert "labels      : labels matched by name" in out


def test_synset_named_folders_of_an_imagenet_model(run_cli, tmp_path, write_class_folders):
    """A subset of ImageNet synsets, in any order, for a model with the ImageNet-1k classes."""
    from qmamba.models import registry
    from qmamba.models.labels import IMAGENET_1K, label_set_for

    name = "qmamba_test_tiny_imagenet_vim"

    @registry.register_model(name)
    def tiny(**kwargs):
        from qmamba.models.data_config import imagenet_data_config
        from qmamba.models.vim import VisionMamba

        m = VisionMamba(img_size=28, in_chans=1, num_classes=1000, patch_size=7, stride=7, embed_dim=8,
                        depth=1, d_state=4)
        m.default_cfg = m.pretrained_cfg = {**imagenet_data_config(28, 1, 1000), "crop_pct": 1.0,
                                            "mean": (0.5,), "std": (0.5,)}
        m.label_set = label_set_for(IMAGENET_1K, 1000)
        return m

    try:
        ckpt = tmp_path / "tiny.safetensors"
        from qmamba.checkpoint import save_checkpoint

        save_checkpoint(registry.create_model(name), ckpt)
        synsets = {"n01440764": 0, "n01443537": 1, "n04590129": 9}  # tench, goldfish, window shade (class 905)
        root = write_class_folders(tmp_path / "imagenet", synsets, per_class=1)
        rc, _, err = run_cli("eval", "--model", name, "--checkpoint", ckpt, "--data", root,
                             "--out", tmp_path / "r.json", "--no-progress")
        assert rc == 0, err
        labels = json.loads((tmp_path / "r.json").read_text())["evaluation"]["labels"]
        assert labels["mapping"] == {"n01440764": 0, "n01443537": 1, "n04590129": 905}
        assert labels["num_classes"] == 1000 and labels["classes_with_images"] == 3
    finally:
        registry._FACTORIES.pop(name, None)
