"""Small file-system helpers shared by the whole project.

`atomic_write` / `atomic_path` make sure a reader never sees a half-written file: the
data goes to a temporary file in the destination folder (same file system, so the final
`os.replace` is atomic), is flushed and fsynced, and only then renamed over the target.
On any exception the temporary file is removed and the target is left untouched.

`OutputSet` does the same for the several outputs of one job (a report next to the
model it describes, a table next to its plot): all are written under temporary names,
then renamed into place together with Ctrl-C / SIGTERM held off for those few
milliseconds (`interrupts_deferred`), so a stopped run leaves either every new output or
none of them.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
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


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        f.flush()
        os.fsync(f.fileno())


_DEFERRED_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None))
                          if s is not None)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT / SIGTERM that arrive inside the block; deliver them when it ends.

    For short critical sections (renaming finished outputs into place) that must not be
    cut in the middle. Outside the main thread signals cannot be caught: the block just
    runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    saved = {}
    for sig in _DEFERRED_SIGNALS:
        if signal.getsignal(sig) is None:  # a handler installed outside Python: leave it alone
            continue
        try:
            saved[sig] = signal.signal(sig, lambda signum, _frame: received.append(signum))
        except (ValueError, OSError):  # pragma: no cover - e.g. an embedded interpreter
            pass
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(received):  # each signal once, in arrival order
            signal.raise_signal(sig)  # now handled as it would have been (KeyboardInterrupt, ...)


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move the finished folder `src` to `dst`, replacing a previous `dst` folder."""
    src, dst = Path(src), Path(dst)
    old = None
    if dst.is_dir():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class OutputSet:
    """The outputs of one job, written under temporary names and renamed together.

        with OutputSet() as outputs:
            save_quantized(qmodel, outputs.folder(out / "model"))
            Path(outputs.file(out / "report.json")).write_text(text)
            outputs.commit()

    `file(target)` / `folder(target)` return a temporary path next to `target` (same file
    system, hidden name `.<name>.*.tmp`) for the caller to fill. `commit()` fsyncs the
    files and renames everything into place with interrupts deferred. The output added
    last is the completion marker (e.g. report.json): its previous version is removed
    before anything is renamed, so even a crash in the middle of a commit (power loss)
    never leaves a marker beside outputs it does not describe. Leaving the `with` block
    without a commit (an exception, Ctrl-C) deletes every temporary path.
    """

    def __init__(self, on_commit: Callable[[list[Path]], None] | None = None) -> None:
        """`on_commit(paths)` is called once everything is in place (still with interrupts
        held, so a Ctrl-C during the commit is reported after the outputs are recorded)."""
        self._items: list[tuple[Path, Path, bool]] = []  # (temporary, target, is folder)
        self.committed: list[Path] = []
        self._on_commit = on_commit

    def _check_new(self, target: Path) -> None:
        if any(t == target for _, t, _ in self._items):
            raise ValueError(f"{str(target)!r} is already part of this output set")

    def file(self, target: str | os.PathLike) -> Path:
        target = Path(target)
        self._check_new(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        self._items.append((Path(name), target, False))
        return Path(name)

    def folder(self, target: str | os.PathLike) -> Path:
        target = Path(target)
        self._check_new(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_UMASK)
        self._items.append((tmp, target, True))
        return tmp

    def commit(self) -> list[Path]:
        """Rename every output into place; returns their paths."""
        for tmp, target, is_dir in self._items:
            if not is_dir:
                _fsync_file(tmp)
                mode = target.stat().st_mode & 0o7777 if target.is_file() else 0o666 & ~_UMASK
                os.chmod(tmp, mode)
        with interrupts_deferred():
            if self._items:
                marker = self._items[-1][1]
                if marker.is_file() or marker.is_symlink():
                    marker.unlink()
            for tmp, target, is_dir in self._items:
                if is_dir:
                    replace_dir(tmp, target)
                else:
                    os.replace(tmp, target)
            for folder in dict.fromkeys(t.parent for _, t, _ in self._items):
                _fsync_dir(folder)
            self.committed = [t for _, t, _ in self._items]
            self._items = []
            if self._on_commit is not None:
                self._on_commit(list(self.committed))
        return self.committed

    def discard(self) -> None:
        """Delete the temporary paths not yet committed."""
        for tmp, _target, is_dir in self._items:
            if is_dir:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        self._items = []

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()
