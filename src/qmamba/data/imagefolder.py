"""ImageNet-layout folders: `<root>/train/<class>/*.JPEG` and `<root>/val/<class>/*.JPEG`.

Evaluation reads `val/`; calibration reads `train/` (never the images evaluated on).
Class folders are matched to the model's classes by name (qmamba.data.labels: WordNet ids
for ImageNet, normalised names otherwise), so a folder may hold any subset of the classes,
in any folder-name order, and class folders without images. The dataset records how its
labels were assigned in `label_assignment`.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from itertools import islice
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from qmamba.data.labels import ClassNames, LabelAssignment, assign_labels, class_folders
from qmamba.data.transforms import eval_transform, resolve_data_config
from qmamba.errors import DataError
from qmamba.models.data_config import imagenet_data_config

_SPLIT_PURPOSE = {
    "train": "calibration images come from train/ (never from the evaluated images)",
    "val": "evaluation reads val/",
}


def load_image(path: str) -> Image.Image:
    """Open and fully decode an image; DataError naming the file if it is unreadable."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()
            return img.convert("RGB")  # as torchvision's loader; ConvertMode makes 'L' if needed
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DataError(
            f"cannot read image {path!r}: {e}. The file is corrupt or not an image; remove it, "
            "or pass --skip-corrupt-images (Python: skip_corrupt=True) to leave unreadable "
            "files out (they are counted in the report)"
        ) from e


class EvalImageFolder(ImageFolder):
    """torchvision ImageFolder with DataError on unreadable images and a `skipped` list.

    `class_to_idx` (folder name -> class index) chooses the folders read and their labels
    (default: every folder, labelled by sorted position); folders without images are
    allowed. `classes` lists the folders read, `targets` holds class indices.
    """

    def __init__(self, root: str, transform=None, skip_corrupt: bool = False,
                 class_to_idx: Mapping[str, int] | None = None):
        self._given_classes = dict(class_to_idx) if class_to_idx is not None else None
        super().__init__(root, transform=transform, loader=load_image, allow_empty=True)
        self.skipped: list[tuple[str, str]] = []
        if skip_corrupt:
            self._skip_unreadable()
        if not self.samples:
            extra = f" ({len(self.skipped)} unreadable skipped)" if self.skipped else ""
            raise DataError(f"no images found in {root!r}{extra}: it needs class folders with "
                            f"images inside (image extensions: {', '.join(IMG_EXTENSIONS)})")

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        if self._given_classes is None:
            folders = class_folders(e.name for e in os.scandir(directory) if e.is_dir())
            return folders, {f: i for i, f in enumerate(folders)}
        return sorted(self._given_classes), dict(sorted(self._given_classes.items()))

    def _skip_unreadable(self) -> None:
        good = []
        for path, target in self.samples:
            try:
                load_image(path)
            except DataError as e:
                self.skipped.append((path, str(e.__cause__ or e)))
                continue
            good.append((path, target))
        self.samples = self.imgs = good
        self.targets = [t for _, t in good]
        if self.skipped:
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable image(s) in {self.root!r}, e.g. "
                f"{self.skipped[0][0]!r}", stacklevel=4,
            )

    def empty_folders(self) -> tuple[str, ...]:
        """The class folders read that hold no (readable) image."""
        filled = {Path(p).relative_to(self.root).parts[0] for p, _ in self.samples}
        return tuple(f for f in self.classes if f not in filled)


def _read_error(path: str) -> str | None:
    """None if the image decodes, else the reason it does not."""
    try:
        load_image(path)
    except DataError as e:
        return str(e.__cause__ or e)
    return None


def readable_indices(dataset: ImageFolder, candidates: Iterable[int], need: int | None = None,
                     workers: int | None = None) -> tuple[list[int], list[tuple[str, str]]]:
    """The indices among `candidates` (kept in their order) whose image decodes.

    Stops once `need` readable images are found (calibration: the next images of the
    seeded order replace unreadable ones). Returns (readable indices, [(path, reason)]
    of the unreadable ones); warns once when some were skipped. Decoding runs in a few
    threads (PIL releases the GIL while decoding).
    """
    good: list[int] = []
    skipped: list[tuple[str, str]] = []
    it = iter(candidates)
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        while need is None or len(good) < need:
            chunk = list(islice(it, 64 * workers))
            if not chunk:
                break
            paths = [dataset.samples[i][0] for i in chunk]
            for i, path, err in zip(chunk, paths, pool.map(_read_error, paths), strict=True):
                if err is not None:
                    skipped.append((path, err))
                elif need is None or len(good) < need:
                    good.append(i)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) in {dataset.root!r}, e.g. "
                      f"{skipped[0][0]!r} ({skipped[0][1]})", stacklevel=2)
    return good, skipped


def _list_dir(p: Path, limit: int = 10) -> str:
    try:
        names = sorted(os.listdir(p))
    except OSError:
        return "(unreadable)"
    if not names:
        return "(empty)"
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def check_split_folder(root: str | os.PathLike, split: str) -> Path:
    """Validate `<root>/<split>` has the class-folder layout; return its path."""
    r = Path(root)
    if not r.exists():
        raise DataError(f"dataset folder {str(r)!r} does not exist")
    if not r.is_dir():
        raise DataError(f"dataset path {str(r)!r} is not a folder")
    d = r / split
    if not d.is_dir():
        purpose = _SPLIT_PURPOSE.get(split, f"{split}/ was requested")
        raise DataError(
            f"{str(r)!r} has no {split}/ folder ({purpose}). Expected the ImageNet layout "
            f"<root>/train/<class>/*.JPEG and <root>/val/<class>/*.JPEG; {str(r)!r} contains: "
            f"{_list_dir(r)}"
        )
    subdirs = [e for e in os.scandir(d) if e.is_dir()]
    if not subdirs:
        loose = [e.name for e in os.scandir(d)
                 if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS)]
        if loose:
            raise DataError(
                f"{str(d)!r} holds {len(loose)} image files directly but no class folders: "
                f"arrange them as {split}/<class>/<image> (for ImageNet val, e.g. with the "
                "usual valprep.sh script)"
            )
        raise DataError(f"{str(d)!r} is empty: it needs one folder per class with images inside")
    return d


def model_class_names(model_or_config) -> Sequence[str] | None:
    """The class names a model (its `class_names`) or data config (`class_names`, or timm's
    `label_names`) declares, in output order; None if it declares none."""
    if model_or_config is None:
        return None
    if isinstance(model_or_config, Mapping):
        names = model_or_config.get("class_names") or model_or_config.get("label_names")
    else:
        names = getattr(model_or_config, "class_names", None)
    return list(names) if names else None


def build_eval_dataset(root: str | os.PathLike, split: str = "val",
                       data_config: Mapping | object | None = None, transform=None,
                       skip_corrupt: bool = False, *,
                       class_names: ClassNames | Sequence[str] | None = None,
                       labels: str | None = None, class_map=None) -> EvalImageFolder:
    """Dataset over `<root>/<split>` with the eval transform of `data_config`, its labels
    the model's class indices; `dataset.label_assignment` says how they were assigned.

    Args:
        root: the dataset folder (containing train/ and/or val/).
        split: 'val' for evaluation, 'train' for calibration.
        data_config: a timm-style data config dict or a model (its pretrained_cfg);
            ignored for the transform when `transform` is given; the ImageNet config if
            both are None. Its `num_classes` (and the model's `class_names`, or the
            config's `class_names`/`label_names`) are used when not given here.
        skip_corrupt: check every image up front (decoding it) and leave unreadable ones
            out (listed in `dataset.skipped`, with a warning). Without it, an unreadable
            image raises DataError naming the file when it is read.
        class_names: the model's classes in output order; class folders are matched to
            them by name (qmamba.data.labels), any subset, in any order.
        labels: 'sorted' for folder i (in sorted order) = class i, only when the folder
            count equals the class count; 'names' (the default with class names).
            Without class names, 'sorted' is the default.
        class_map: a JSON/CSV file (or a mapping): folder name -> class index or name.
    """
    d = check_split_folder(root, split)
    cfg = None
    if transform is None:
        if data_config is None:
            data_config = imagenet_data_config()
        cfg = resolve_data_config(data_config)
        transform = eval_transform(cfg)
    elif data_config is not None:
        cfg = resolve_data_config(data_config)
    if class_names is None:
        class_names = model_class_names(data_config)
    num_classes = int(cfg["num_classes"]) if cfg is not None and cfg.get("num_classes") else None
    folders = [e.name for e in os.scandir(d) if e.is_dir()]
    assignment = assign_labels(folders, class_names, labels=labels, class_map=class_map,
                               num_classes=num_classes, where=repr(str(d)))
    ds = EvalImageFolder(str(d), transform=transform, skip_corrupt=skip_corrupt,
                         class_to_idx=assignment.mapping)
    ds.label_assignment: LabelAssignment = replace(assignment, empty=ds.empty_folders())
    return ds
