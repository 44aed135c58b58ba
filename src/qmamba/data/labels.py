"""Which of the model's classes each class folder holds.

A folder's class folders are matched to the model's classes by name, whatever their
sorted order: ImageNet folders by WordNet id (`n01440764`), others by a normalised name
(case, spaces, hyphens, underscores and other punctuation ignored, so `T-shirt_top`,
`tshirt_top` and `T-shirt/top` are the same class). A folder may hold a subset of the
classes, or class folders without images. Two other ways exist for folders whose names
are not the model's: `labels="sorted"` (folder i in sorted order is class i, as
torchvision's ImageFolder does; only when the counts agree) and `class_map=PATH` (a JSON
or CSV file: folder name -> class index or class name).

Every message raised here stays a few hundred characters, whatever the folder holds: it
names the first few folders and how many there are.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from qmamba.data.class_map import read_class_map
from qmamba.errors import ConfigError, DataError

LABEL_MODES = ("names", "sorted")
SHOWN = 3  # folder names a message lists before "... (N in all)"
_PUNCTUATION = re.compile(r"[\W_]+")
_WORDNET_ID = re.compile(r"n\d{8}")

FLAG_CLASS_MAP = ("--class-map FILE (JSON or CSV: folder -> class index or name; "
                  "Python: class_map=PATH)")
FLAG_SORTED = "--labels sorted (folder i in sorted order = class i; Python: labels='sorted')"


def normalize_name(name: str) -> str:
    """The matching key of a class or folder name: case-folded, without spaces and
    punctuation (`T-shirt/top`, `tshirt_top`, `T shirt top` -> `tshirttop`)."""
    return _PUNCTUATION.sub("", str(name).casefold())


def is_wordnet_id(name: str) -> bool:
    """Whether `name` is a WordNet noun id such as `n01440764` (ImageNet class folders)."""
    return _WORDNET_ID.fullmatch(str(name)) is not None


def plural(n: int, word: str) -> str:
    """'1 class folder', '2 class folders'."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def short(name: str, limit: int = 40) -> str:
    """`name` quoted, cut to `limit` characters (messages stay short whatever the names)."""
    name = str(name)
    return repr(name if len(name) <= limit else name[: limit - 3] + "...")


def listing(names: Sequence[str], shown: int = SHOWN, describe=short) -> str:
    """'a', 'b', 'c', ... (12 in all): the first `shown` names and the count."""
    head = ", ".join(describe(n) for n in names[:shown])
    return head + (f", ... ({len(names):,} in all)" if len(names) > shown else "")


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """ImageNet-1k's WordNet ids in label order and their descriptions ('tench, Tinca
    tinca'), from timm's bundled tables (no download)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    return tuple(info.label_names()), tuple(info.label_descriptions())


def _imagenet_ids_for(names: Sequence[str]) -> tuple[str, ...] | None:
    """The WordNet ids of `names` when they are ImageNet-1k's descriptions (or their first
    words, e.g. 'tench') in label order; else None."""
    if len(names) != 1000 or any(is_wordnet_id(n) for n in names):
        return None
    ids, descriptions = imagenet_classes()
    first = [normalize_name(d.split(",")[0]) for d in descriptions]
    full = [normalize_name(d) for d in descriptions]
    keys = [normalize_name(n) for n in names]
    return ids if keys == first or keys == full else None


def _unique(keys: Mapping[str, set[int]]) -> dict[str, int]:
    """The keys that name exactly one class."""
    return {k: min(v) for k, v in keys.items() if len(v) == 1 and k}


class ClassNames:
    """The model's classes in output order, and the lookup of a folder name in them.

    Args:
        names: one name per output index: 'T-shirt/top', a WordNet id ('n01440764'), or
            a timm-style description whose comma-separated parts are synonyms
            ('tench, Tinca tinca').
        ids: optional exact identifiers in the same order (WordNet ids). For ImageNet-1k,
            ids and descriptions complete each other: names that are the 1,000 WordNet
            ids also match folders named by description, and the reverse.

    A name shared by several classes (ImageNet has two 'crane's) matches none of them;
    such folders need a class map.
    """

    def __init__(self, names: Sequence[str], ids: Sequence[str] | None = None):
        self.names = tuple(str(n) for n in names)
        if ids is not None and len(ids) != len(self.names):
            raise DataError(f"{len(ids)} class ids for {len(self.names)} class names")
        self.ids = tuple(ids) if ids is not None else None
        self.aliases = [[n] for n in self.names]
        if self.ids is None and self.names and all(is_wordnet_id(n) for n in self.names):
            self.ids = self.names
            self._add_imagenet_descriptions()
        elif self.ids is None:
            self.ids = _imagenet_ids_for(self.names)
        self._primary, self._secondary, self.ambiguous = self._build_keys()

    def _add_imagenet_descriptions(self) -> None:
        ids, descriptions = imagenet_classes()
        known = dict(zip(ids, descriptions, strict=True))
        for i, wnid in enumerate(self.names):
            if wnid in known:
                self.aliases[i].append(known[wnid])

    def _build_keys(self) -> tuple[dict[str, int], dict[str, int], set[str]]:
        """Keys -> index: primary (ids, whole names), secondary (comma-separated parts).
        A key of several classes is left out of both (and listed in `ambiguous`)."""
        primary: dict[str, set[int]] = {}
        secondary: dict[str, set[int]] = {}
        for i, aliases in enumerate(self.aliases):
            whole = [normalize_name(a) for a in aliases]
            if self.ids is not None:
                whole.append(normalize_name(self.ids[i]))
            for key in whole:
                primary.setdefault(key, set()).add(i)
            for alias in aliases:
                for part in alias.split(","):
                    secondary.setdefault(normalize_name(part), set()).add(i)
        ambiguous = {k for d in (primary, secondary) for k, v in d.items() if len(v) > 1}
        return _unique(primary), _unique(secondary), ambiguous

    def __len__(self) -> int:
        return len(self.names)

    def label(self, index: int) -> str:
        """The class as a message shows it: 'Coat', or 'n01440764 (tench)'."""
        aliases = self.aliases[index]
        if len(aliases) > 1:
            return f"{aliases[0]} ({aliases[1].split(',')[0]})"
        return aliases[0]

    def index_of(self, name: str) -> int | None:
        """The class index `name` stands for (a WordNet id, a name or a synonym), or None."""
        key = normalize_name(name)
        if key in self._primary:
            return self._primary[key]
        return self._secondary.get(key)

    def closest(self, name: str, n: int = 1) -> list[str]:
        """Up to `n` class labels whose names are closest to `name` (for messages)."""
        keys = {**self._secondary, **self._primary}
        hits = difflib.get_close_matches(normalize_name(name), list(keys), n=n, cutoff=0.6)
        return [self.label(keys[k]) for k in hits]


def as_class_names(classes: ClassNames | Sequence[str] | None) -> ClassNames | None:
    if classes is None or isinstance(classes, ClassNames):
        return classes
    if isinstance(classes, str):
        raise DataError(f"class names must be a list of names, got the string {short(classes)}")
    return ClassNames(classes)


@dataclass(frozen=True)
class LabelAssignment:
    """How a folder's class folders became the model's class indices.

    `mode`: 'names' (matched by name), 'sorted' (folder i in sorted order = class i) or
    'class_map' (from `class_map`, a file; folders it does not list matched by name).
    `mapping`: folder name -> class index, for every folder used. `folders`: the class
    folders found. `empty`: used folders without images. `num_classes`: the model's.
    """

    mode: str
    mapping: dict[str, int]
    folders: int
    num_classes: int | None = None
    empty: tuple[str, ...] = ()
    class_map: str | None = None
    class_names: tuple[str, ...] | None = field(default=None, repr=False)

    @property
    def matched(self) -> int:
        return len(self.mapping)

    @property
    def classes_with_images(self) -> int:
        """Distinct model classes that have at least one image."""
        return len({i for f, i in self.mapping.items() if f not in self.empty})

    def to_dict(self) -> dict:
        """The record for report.json (JSON-ready)."""
        return {"mode": self.mode, "folders": self.folders, "matched": self.matched,
                "empty": len(self.empty), "classes_with_images": self.classes_with_images,
                "num_classes": self.num_classes, "class_map": self.class_map,
                "summary": self.describe(), "mapping": dict(self.mapping)}

    def describe(self) -> str:
        """One line for the console: how labels were assigned and how many classes."""
        how = {"names": "matched by name", "sorted": "by sorted folder order (--labels sorted)",
               "class_map": f"from the class map {self.class_map!r}"}[self.mode]
        of = f" of the model's {self.num_classes:,}" if self.num_classes else ""
        text = f"labels {how}: {self.classes_with_images:,}{of} classes have images"
        if self.empty:
            text += f" ({plural(len(self.empty), 'class folder')} without images)"
        return text


def class_folders(names: Sequence[str]) -> list[str]:
    """Sorted class folder names, hidden ones ('.ipynb_checkpoints') left out."""
    return sorted(n for n in names if not n.startswith("."))


def assign_labels(folders: Sequence[str], classes: ClassNames | Sequence[str] | None = None, *,
                  labels: str | None = None, class_map=None, num_classes: int | None = None,
                  where: str = "the folder") -> LabelAssignment:
    """Map class folder names to the model's class indices.

    Args:
        folders: the class folder names (any order).
        classes: the model's class names in output order (or a ClassNames).
        labels: 'names' (the default when `classes` is given), or 'sorted' (folder i in
            sorted order is class i; the default without `classes`, as before names were
            known); needs exactly `num_classes` folders.
        class_map: a path to a JSON/CSV file, or a mapping, folder name -> class index or
            class name; folders it does not list are matched by name.
        num_classes: the model's output count (default: the number of class names).
        where: the folder, as messages name it.
    """
    if labels is not None and labels not in LABEL_MODES:
        raise ConfigError(f"labels={labels!r}: use one of {', '.join(map(repr, LABEL_MODES))}")
    if labels == "sorted" and class_map is not None:
        raise ConfigError("labels='sorted' and class_map both say how folders map to classes: "
                          "pass one of them")
    classes = as_class_names(classes)
    if labels == "names" and classes is None:
        raise DataError("labels='names' needs the model's class names (class_names=[...]); "
                        "this model declares none: use a class map or labels='sorted'")
    folders = class_folders(folders)
    if num_classes is None and classes is not None:
        num_classes = len(classes)
    names = classes.names if classes is not None else None
    if class_map is not None:
        mapping, source = _mapped(folders, classes, class_map, num_classes, where)
        return LabelAssignment("class_map", mapping, len(folders), num_classes,
                               class_map=source, class_names=names)
    if labels == "sorted" or classes is None:
        _check_sorted_count(folders, num_classes, where, labels == "sorted")
        return LabelAssignment("sorted", {f: i for i, f in enumerate(folders)}, len(folders),
                               num_classes, class_names=names)
    mapping = match_by_name(folders, classes, where)
    return LabelAssignment("names", mapping, len(folders), num_classes, class_names=names)


def _check_sorted_count(folders: Sequence[str], num_classes: int | None, where: str,
                        asked: bool) -> None:
    if num_classes is None or len(folders) == num_classes:
        return
    if asked:
        raise DataError(
            f"{where} has {plural(len(folders), 'class folder')} but the model predicts "
            f"{num_classes:,} classes: labels='sorted' (--labels sorted) needs exactly one "
            f"folder per class. Use {FLAG_CLASS_MAP}"
        )
    raise DataError(
        f"{where} has {plural(len(folders), 'class folder')} but the model predicts "
        f"{num_classes:,} classes, and its class names are not known, so folders cannot be matched to classes: "
        "pass class_names=[...] (the model's, in output order) or class_map=PATH (a JSON or "
        "CSV file: folder name -> class index)"
    )


def match_by_name(folders: Sequence[str], classes: ClassNames, where: str) -> dict[str, int]:
    """folder -> class index by name; DataError listing the folders that match no class
    (with the closest class names) or that match the same class as another folder."""
    mapping = {f: classes.index_of(f) for f in folders}
    unknown = [f for f, i in mapping.items() if i is None]
    if unknown:
        raise unmatched_error(unknown, len(folders), classes, where)
    _check_distinct(mapping, classes, where)
    return mapping


def unmatched_error(unknown: Sequence[str], total: int, classes: ClassNames,
                    where: str) -> DataError:
    def with_hint(name: str) -> str:
        if normalize_name(name) in classes.ambiguous:
            return f"{short(name)} (names several classes)"
        hint = classes.closest(name)
        return f"{short(name)} (closest: {short(hint[0], 30)})" if hint else short(name)

    example = ", ".join(short(classes.label(i), 30) for i in range(min(2, len(classes))))
    return DataError(
        f"{where}: {len(unknown):,} of its {plural(total, 'class folder')} match no class of the "
        f"model ({len(classes):,} classes, e.g. {example}): {listing(unknown, describe=with_hint)}. "
        f"Rename them, or use {FLAG_CLASS_MAP}, or {FLAG_SORTED}"
    )


def _check_distinct(mapping: Mapping[str, int], classes: ClassNames, where: str) -> None:
    seen: dict[int, str] = {}
    for folder, i in mapping.items():
        if i in seen:
            raise DataError(
                f"{where}: folders {short(seen[i])} and {short(folder)} both match the class "
                f"{short(classes.label(i))}: keep one, or say which class each holds with "
                f"{FLAG_CLASS_MAP}"
            )
        seen[i] = folder


def _mapped(folders: Sequence[str], classes: ClassNames | None, class_map, num_classes: int | None,
            where: str) -> tuple[dict[str, int], str]:
    """folder -> class index from a class map (folders it lacks: by name)."""
    entries, source = read_class_map(class_map)
    resolved = resolve_class_map(entries, classes, num_classes, source)
    mapping: dict[str, int] = {}
    rest = []
    for f in folders:
        if f in resolved:
            mapping[f] = resolved[f]
        else:
            rest.append(f)
    if rest:
        if classes is None:
            raise DataError(
                f"{where}: the class map {source!r} has no entry for "
                f"{plural(len(rest), 'class folder')}: {listing(rest)}; add them "
                "(folder name -> class index)"
            )
        found = {f: classes.index_of(f) for f in rest}
        unknown = [f for f, i in found.items() if i is None]
        if unknown:
            raise DataError(
                f"{where}: {plural(len(unknown), 'class folder')} neither in the class map "
                f"{source!r} nor named after a class of the model: {listing(unknown)}; "
                "add them to the map"
            )
        mapping.update(found)
    return dict(sorted(mapping.items())), source


def resolve_class_map(entries: Mapping[str, int | str], classes: ClassNames | None,
                      num_classes: int | None, source: str) -> dict[str, int]:
    """Class-map values (indices or class names) as class indices; DataError naming the
    first few values that are out of range or match no class."""
    out: dict[str, int] = {}
    bad: list[str] = []
    for folder, value in entries.items():
        if isinstance(value, int):
            ok = value >= 0 and (num_classes is None or value < num_classes)
            index = value if ok else None
        else:
            index = classes.index_of(value) if classes is not None else None
        if index is None:
            bad.append(f"{short(folder, 30)}: {short(str(value), 30)}")
        else:
            out[folder] = index
    if bad:
        valid = (f"class indices 0..{num_classes - 1}" if num_classes else "class indices")
        if classes is not None:
            valid += " or the model's class names"
        raise DataError(f"the class map {source!r} has {len(bad):,} values that are not "
                        f"{valid}: {listing(bad, describe=str)}")
    return out
