"""Small file-system helpers shared by the whole project.

`atomic_write` / `atomic_path` make sure a reader never sees a half-written file: the
data goes to a temporary file in the destination folder (same file system, so the final
`os.replace` is atomic), is flushed and fsynced, and only then renamed over the target.
On any exception the temporary file is removed and the target is left untouched.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Read the process umask once so new files get the usual permissions (mkstemp uses 0600).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _fsync_dir(folder: Path) -> None:
    """Best effort: persist the rename itself (POSIX); silently skipped where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is fsynced and renamed to `path`.

    For writers that want a file name rather than a file object (safetensors, PIL,
    matplotlib's savefig, ...). The caller writes the whole file to the yielded path.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        if target.exists():
            mode = target.stat().st_mode & 0o7777
        else:
            mode = 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = None,
                 newline: str | None = None):
    """Open a temporary file for writing; rename it over `path` only if the block succeeds.

    `mode` is "w"/"wt" (text, UTF-8 by default) or "wb" (binary)::

        with atomic_write("report.json") as f:
            json.dump(result, f)
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_write supports modes 'w', 'wt' and 'wb', not {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": newline}
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
