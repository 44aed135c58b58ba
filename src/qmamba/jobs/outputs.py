"""The output folder of a job: checked before any long computation, and the quantized
model saved into it as part of one `OutputSet` (renamed into place with the report)."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch.nn as nn

from qmamba.errors import QMambaError
from qmamba.io_utils import OutputSet
from qmamba.quant.serialize import META_FILE, WEIGHTS_FILE, save_quantized

__all__ = ["check_out_dir", "save_model_dir"]


def check_out_dir(out_dir: str | os.PathLike, files: Sequence[str] = (), model_dir: str | None = None) -> Path:
    """Fail early (before any long computation) if the outputs could not be written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise QMambaError(f"output path {str(out)!r} exists and is not a folder")
    for name in files:
        if (out / name).is_dir():
            raise QMambaError(f"{str(out / name)!r} is a folder; cannot write the {name} file there")
    if model_dir is not None:
        d = out / model_dir
        if d.exists() and (not d.is_dir() or (any(d.iterdir()) and not (d / META_FILE).is_file())):
            raise QMambaError(
                f"{str(d)!r} exists and is not a saved quantized model: choose another `out_dir` "
                "or move it away (qmamba replaces only its own model folders)"
            )
    return out


def save_model_dir(qmodel: nn.Module, outputs: OutputSet, out_dir: Path, name: str = "model") -> dict:
    """`save_quantized` into a temporary folder of `outputs` (it appears at
    `out_dir/name` when the set is committed); returns the size information with the
    SHA-256 of the weights file (the same command gives the same hash)."""
    tmp = outputs.folder(out_dir / name)
    size = save_quantized(qmodel, tmp)
    digest = hashlib.sha256((tmp / WEIGHTS_FILE).read_bytes()).hexdigest()
    return {**size, "path": str(out_dir / name), "weights_sha256": digest}
