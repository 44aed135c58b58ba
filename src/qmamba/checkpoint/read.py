"""Reading checkpoint files: safetensors, and torch.save files with a safe unpickler."""
from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from qmamba.errors import CheckpointError

_UNSAFE_HINT = (
    "pass allow_unsafe_pickle=True (CLI: --allow-unsafe-pickle) only for files from a "
    "source you trust"
)
# --------------------------------------------------------------------------- reading


def _check_path(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise CheckpointError(
            f"checkpoint {str(path)!r} is a directory: give the path of the checkpoint file "
            "(.pth / .pt / .safetensors) inside it"
        )
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {e.strerror or e}") from e


def _corrupt(path: Path, detail: object) -> CheckpointError:
    return CheckpointError(
        f"cannot read checkpoint {str(path)!r}: the file is corrupt or truncated, or not a "
        f"PyTorch/safetensors checkpoint ({detail}); download or copy it again"
    )


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _corrupt(path, f"{type(e).__name__}: {e}") from e
    except Exception as e:  # damaged headers surface as other types too (found by fuzzing)
        raise _corrupt(path, _first_line(e)) from e
    return tensors, metadata


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def _first_bytes(path: Path, n: int = 4) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _load_torch(path: Path, allow_unsafe_pickle: bool) -> Any:
    if allow_unsafe_pickle:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (zipfile.BadZipFile, EOFError, RuntimeError, pickle.UnpicklingError) as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise _corrupt(path, f"{type(e).__name__}: {first[:200]}") from e
        except (ModuleNotFoundError, AttributeError) as e:
            raise CheckpointError(
                f"checkpoint {str(path)!r} pickles Python objects whose code is not "
                f"available here ({e}); import the module that defines them first, or "
                "re-save the weights alone with qmamba.save_checkpoint"
            ) from e
        except Exception as e:  # unpickling damaged data fails in many ways
            raise _corrupt(path, _first_line(e)) from e
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"GLOBAL ([\w.]+)", msg)
        if m:
            raise CheckpointError(
                f"checkpoint {str(path)!r} contains Python objects other than tensors "
                f"(it refers to {m.group(1)!r}); unpickling it can run arbitrary code, so it "
                f"was not loaded. If you trust the file, {_UNSAFE_HINT}."
            ) from e
        if _first_bytes(path, 1) == b"\x80":
            # A pickle stream, but not one torch.save wrote (e.g. pickle.dump with protocol
            # >= 4): the safe loader cannot parse it at all.
            raise CheckpointError(
                f"checkpoint {str(path)!r} is a plain Python pickle (not written by "
                "torch.save) that the safe loader cannot read; unpickling it can run "
                f"arbitrary code, so it was not loaded. If you trust the file, {_UNSAFE_HINT}, "
                "or re-save it with qmamba.save_checkpoint."
            ) from e
        raise _corrupt(path, "not a pickle / zip archive torch.load understands") from e
    except (zipfile.BadZipFile, EOFError) as e:
        raise _corrupt(path, type(e).__name__) from e
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _corrupt(path, first[:200]) from e
    except Exception as e:  # the safe unpickler on damaged data: struct.error, IndexError, ...
        raise _corrupt(path, _first_line(e)) from e


def read_checkpoint(path: str | os.PathLike, allow_unsafe_pickle: bool = False
                    ) -> tuple[Any, str, dict[str, str]]:
    """Read a checkpoint file; return (object, format, safetensors metadata)."""
    p = Path(path)
    _check_path(p)
    if p.suffix == ".safetensors":
        tensors, meta = _load_safetensors(p)
        return tensors, "safetensors", meta
    obj = _load_torch(p, allow_unsafe_pickle)
    return obj, "torch", {}


# --------------------------------------------------------------------------- layouts


