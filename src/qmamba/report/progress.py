"""Progress bars (tqdm, on stderr) and a record of where a run is, for interruptions.

The library code (`qmamba.jobs`) only calls `progress.stage(...)` and the returned
object's `update`/`set_total`; the CLI decides whether bars are drawn. `progress.where`
always names the step in progress, so Ctrl-C can say where it stopped.
"""
from __future__ import annotations

import sys


class _Stage:
    def __init__(self, owner: Progress, desc: str, total: int | None, unit: str):
        self.owner, self.desc, self.total, self.unit = owner, desc, total, unit
        self.done = 0
        self.bar = None
        if total is not None:  # quick steps without a size: no bar
            self._open_bar()

    def _open_bar(self) -> None:
        if self.owner.enabled and self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, file=self.owner.file,
                            leave=self.owner.leave, dynamic_ncols=True, mininterval=0.5, initial=self.done)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def set_done(self, done: int, total: int | None = None) -> None:
        """Absolute position (for callbacks that report `i of n`)."""
        if total is not None and total != self.total:
            self.total = total
            if self.bar is None:
                self._open_bar()
            else:
                self.bar.total = total
                self.bar.refresh()
        self.update(done - self.done)

    def __enter__(self) -> _Stage:
        self.owner._push(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.bar is not None:
            self.bar.close()
        self.owner._pop(self, failed=exc_type is not None)


class Progress:
    """Factory of progress stages; `enabled=False` draws nothing but still tracks `where`."""

    def __init__(self, enabled: bool = True, file=None, leave: bool = False):
        self.enabled = enabled
        self.file = file if file is not None else sys.stderr
        self.leave = leave
        self._stack: list[_Stage] = []
        self._last: str | None = None
        self.context = ""  # e.g. "run 3 of 60" (set by long jobs)
        self.written: list[str] = []  # outputs already in place (for the interruption message)

    def stage(self, desc: str, total: int | None = None, unit: str = "it") -> _Stage:
        return _Stage(self, desc, total, unit)

    def _push(self, stage: _Stage) -> None:
        self._stack.append(stage)
        self._last = None

    def _pop(self, stage: _Stage, failed: bool) -> None:
        if self._stack and self._stack[-1] is stage:
            self._stack.pop()
        if failed:  # keep the failing stage as the answer of `where`
            self._last = self._last or self._describe(stage)
        else:
            self._last = None

    @staticmethod
    def _describe(stage: _Stage) -> str:
        if stage.total:
            return f"{stage.desc} ({stage.done}/{stage.total} {stage.unit})"
        return stage.desc

    @property
    def where(self) -> str:
        """The innermost step in progress (or the one that failed), with the job context."""
        text = self._last or (self._describe(self._stack[-1]) if self._stack else "before any step started")
        return f"{text}, {self.context}" if self.context else text

    def outputs_written(self, paths) -> None:
        """Record outputs that are complete on disk (`OutputSet(on_commit=...)`)."""
        self.written += [str(p) for p in paths]

    def message(self, text: str) -> None:
        """A line on stderr that does not break the bars."""
        if self.enabled:
            from tqdm.auto import tqdm

            tqdm.write(text, file=self.file)
        else:
            print(text, file=self.file)
