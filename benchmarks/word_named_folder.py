"""Issue 14's first target, measured: a word-named Fashion-MNIST folder gives the same
top-1 as the label-ordered one and as the built-in evaluation, with no flag.

Writes the first N built-in test images (in a shuffled file order) into ImageFolder
layouts under a temporary folder:
- `sorted`: folders c0..c9 whose sorted order is the label order (labels='sorted');
- `words`: ankle_boot/ bag/ coat/ ... tshirt_top/ (sorted order is not the label order);
- `Words`: 'Ankle boot'/ 'Bag'/ ... 'T-shirt_top'/ (another spelling and order);
evaluates the built-in vim_fmnist on each through build_eval_dataset with the model's
class names, and on the built-in images directly; and, for comparison, the `words` folder
with labels='sorted' (what `qmamba eval --data` did before names were matched).

    MKL_CBWR=COMPATIBLE PYTHONPATH=src python benchmarks/word_named_folder.py [N] [OUT.json]
"""
from __future__ import annotations

import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from qmamba.data import BuiltinFashionMNIST, build_eval_dataset, eval_transform  # noqa: E402
from qmamba.data.fashion_mnist import CLASS_NAMES  # noqa: E402
from qmamba.eval import evaluate  # noqa: E402
from qmamba.models.builtin import load_builtin_model  # noqa: E402

LAYOUTS = {
    "sorted": [f"c{k}" for k in range(10)],
    "words": ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
              "sneaker", "bag", "ankle_boot"],
    "Words": [n.replace("/", "_") for n in CLASS_NAMES],
}


def write_folder(root: Path, names: list[str], images, labels, order: list[int]) -> None:
    for name in names:
        (root / "val" / name).mkdir(parents=True)
    for i in order:  # files written in a shuffled order; names keep the image index
        Image.fromarray(images[i], "L").save(root / "val" / names[labels[i]] / f"{i:05d}.png")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def top1(model, dataset) -> dict:
    loader = DataLoader(dataset, batch_size=100, shuffle=False, num_workers=0)
    r = evaluate(model, loader)
    return {"top1": r.top1, "top5": r.top5, "images": r.num_images}


def main(n: int = 2000, out: str | None = None) -> dict:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model = load_builtin_model("vim_fmnist")
    builtin = BuiltinFashionMNIST("test", eval_transform(model))
    images = builtin.images[:n].numpy()
    labels = builtin.labels[:n].tolist()
    order = list(range(n))
    random.Random(0).shuffle(order)
    results = {"builtin": top1(model, Subset(builtin, range(n)))}
    with tempfile.TemporaryDirectory() as tmp:
        for layout, names in LAYOUTS.items():
            root = Path(tmp) / layout
            write_folder(root, names, images, labels, order)
            labels_mode = "sorted" if layout == "sorted" else None
            ds = build_eval_dataset(root, "val", model, class_names=CLASS_NAMES, labels=labels_mode)
            results[layout] = top1(model, ds) | {"labels": ds.label_assignment.to_dict()["mode"],
                                                 "folders": sorted(names)[:3]}
        ds = build_eval_dataset(Path(tmp) / "words", "val", model, labels="sorted")
        results["words_with_labels_sorted"] = top1(model, ds) | {"labels": "sorted"}
    record = {"n": n, "model": "vim_fmnist", "results": results,
              "command": "PYTHONPATH=src python benchmarks/word_named_folder.py "
                         + " ".join(sys.argv[1:]),
              "cpu": cpu_name(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    text = json.dumps(record, indent=1)
    if out:
        Path(out).write_text(text + "\n")
    print(text)
    return record


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, sys.argv[2] if len(sys.argv) > 2 else None)
