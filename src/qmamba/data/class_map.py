"""Class-map files: which model class each class folder holds, written by the user.

JSON: an object `{"folder name": 3, "other folder": "Coat"}`.
CSV: one `folder,class` row per folder (an optional header row whose first cell is
`folder`; blank lines and lines starting with `#` are skipped).
A value is a class index (an integer) or a class name (matched like folder names).
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path

from qmamba.errors import DataError

FORMAT_HINT = ("a JSON object {\"folder\": class index or name} or CSV rows "
               "folder,class index or name")


def _value(raw, where: str) -> int | str:
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise DataError(f"{where}: a class must be an index or a name, got {str(raw)[:40]!r}")
    if isinstance(raw, str):
        raw = raw.strip()
        if raw.lstrip("-").isdigit():
            return int(raw)
        if not raw:
            raise DataError(f"{where}: the class is empty")
    return raw


def _from_mapping(entries: Mapping, source: str) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    for folder, raw in entries.items():
        out[str(folder)] = _value(raw, f"class map {source!r}, folder {str(folder)[:40]!r}")
    return out


def _read_json(text: str, source: str) -> dict[str, int | str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"class map {source!r} is not valid JSON ({e.msg}, line {e.lineno}); "
                        f"expected {FORMAT_HINT}") from e
    if not isinstance(data, dict):
        raise DataError(f"class map {source!r} holds a JSON {type(data).__name__}; "
                        f"expected {FORMAT_HINT}")
    return _from_mapping(data, source)


def _read_csv(text: str, source: str) -> dict[str, int | str]:
    out: dict[str, int | str] = {}
    rows = csv.reader(io.StringIO(text))
    for line, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if line == 1 and cells[0].casefold() in ("folder", "folder_name", "folder name"):
            continue
        if len(cells) != 2 or not cells[0]:
            raise DataError(f"class map {source!r}, line {line}: expected 2 cells "
                            f"(folder,class), got {len(cells)}")
        where = f"class map {source!r}, line {line}"
        value = _value(cells[1], where)
        if cells[0] in out and out[cells[0]] != value:
            raise DataError(f"{where}: folder {cells[0][:40]!r} is listed twice, with "
                            f"{out[cells[0]]!r} and {value!r}")
        out[cells[0]] = value
    return out


def read_class_map(class_map) -> tuple[dict[str, int | str], str]:
    """(folder -> class index or name, the map as messages and reports name it).

    `class_map` is a path to a `.json` file or a CSV file (any other extension), or an
    in-memory mapping.
    """
    if isinstance(class_map, Mapping):
        return _from_mapping(class_map, "<mapping>"), "<mapping>"
    if not isinstance(class_map, (str, os.PathLike)):
        raise DataError(f"class_map must be a file path or a mapping, got "
                        f"{type(class_map).__name__}")
    path = Path(class_map)
    source = str(path)
    if not path.is_file():
        raise DataError(f"class map {source!r} does not exist or is not a file; "
                        f"expected {FORMAT_HINT}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read class map {source!r}: {e}") from e
    if path.suffix.lower() == ".json":
        entries = _read_json(text, source)
    else:
        entries = _read_csv(text, source)
    if not entries:
        raise DataError(f"class map {source!r} lists no folder; expected {FORMAT_HINT}")
    return entries, source
