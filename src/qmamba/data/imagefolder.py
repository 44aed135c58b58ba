"""ImageNet-layout folders: `<root>/train/<class>/*.JPEG` and `<root>/val/<class>/*.JPEG`.

Evaluation reads `val/`; calibration reads `train/` (never the images evaluated on).
Class indices follow torchvision's ImageFolder (sorted folder names), which for the
standard `n01440764 ...` synset folders is the ImageNet-1k label order of the models.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

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
    """torchvision ImageFolder with DataError on unreadable images and a `skipped` list."""

    def __init__(self, root: str, transform=None, skip_corrupt: bool = False):
        super().__init__(root, transform=transform, loader=load_image)
        self.skipped: list[tuple[str, str]] = []
        if skip_corrupt:
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
                    f"skipped {len(self.skipped)} unreadable image(s) in {root!r}, e.g. "
                    f"{self.skipped[0][0]!r}", stacklevel=3,
                )
            if not good:
                raise DataError(f"no readable image in {root!r} ({len(self.skipped)} skipped)")


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


def build_eval_dataset(root: str | os.PathLike, split: str = "val",
                       data_config: Mapping | object | None = None, transform=None,
                       skip_corrupt: bool = False, check_num_classes: bool = True
                       ) -> EvalImageFolder:
    """Dataset over `<root>/<split>` with the eval transform of `data_config`.

    Args:
        root: the dataset folder (containing train/ and/or val/).
        split: 'val' for evaluation, 'train' for calibration.
        data_config: a timm-style data config dict or a model (its pretrained_cfg);
            ignored when `transform` is given; the ImageNet config if both are None.
        skip_corrupt: check every image up front (decoding it) and leave unreadable ones
            out (listed in `dataset.skipped`, with a warning). Without it, an unreadable
            image raises DataError naming the file when it is read.
        check_num_classes: with a data config that has `num_classes`, require that many
            class folders (labels are folder indices, so a different count would make
            every accuracy meaningless).
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
    try:
        ds = EvalImageFolder(str(d), transform=transform, skip_corrupt=skip_corrupt)
    except FileNotFoundError as e:
        raise DataError(
            f"no images found in {str(d)!r}: {e} (image extensions: {', '.join(IMG_EXTENSIONS)})"
        ) from e
    if check_num_classes and cfg is not None and cfg.get("num_classes"):
        n = int(cfg["num_classes"])
        if len(ds.classes) != n:
            raise DataError(
                f"{str(d)!r} has {len(ds.classes)} class folders but the model predicts {n} "
                "classes: labels are folder indices, so they would not match (use the full "
                "set of class folders, or pass check_num_classes=False)"
            )
    return ds
