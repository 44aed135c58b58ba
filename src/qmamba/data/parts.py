"""Evaluation parts: a fixed split of the evaluation images into a *tuning* part and a
*reporting* part, so that no reported number comes from an image used to choose a default.

- The built-in Fashion-MNIST test set (10,000 images): `tuning` is the first 5,000
  images, `reporting` the last 5,000 (file order of the bundle; each part holds every
  class, 493 to 513 images each).
- A folder (DIR/val): an image belongs to `tuning` when the first byte of the SHA-256 of
  its path relative to DIR/val (POSIX separators) is even, to `reporting` when it is odd.
  The rule needs no list and no seed, does not depend on which other images the folder
  holds, and puts about half of every class in each part.

`all` is every image. Defaults are chosen on `tuning`; tables are measured on
`reporting` (docs/design.md, "Held-out tuning").
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from qmamba.errors import ConfigError

PARTS = ("all", "tuning", "reporting")
BUILTIN_TUNING = 5000  # the first images of the built-in test set
RULES = {
    "builtin": "tuning: the first 5,000 built-in test images; reporting: the last 5,000",
    "folder": "tuning: images whose path's SHA-256 starts with an even byte; reporting: odd",
}


def check_part(part: str) -> str:
    if part not in PARTS:
        raise ConfigError(f"`eval_part` must be one of {', '.join(PARTS)}, got {part!r}")
    return part


def builtin_part_indices(total: int, part: str) -> range:
    """Indices of `part` in the built-in test set of `total` images."""
    check_part(part)
    cut = min(BUILTIN_TUNING, total)
    return {"all": range(total), "tuning": range(cut), "reporting": range(cut, total)}[part]


def path_part(relative_path: str) -> str:
    """'tuning' or 'reporting' for an image at this path relative to the split folder."""
    key = relative_path.replace(os.sep, "/").encode("utf-8")
    return "tuning" if hashlib.sha256(key).digest()[0] % 2 == 0 else "reporting"


def folder_part_indices(paths: Sequence[str], root: str | os.PathLike, part: str) -> list[int]:
    """Indices of the images of `part` among `paths` (files under `root`), in their order."""
    check_part(part)
    if part == "all":
        return list(range(len(paths)))
    return [i for i, p in enumerate(paths) if path_part(os.path.relpath(p, root)) == part]
