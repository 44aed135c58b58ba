"""qmamba.io_utils: outputs that appear together or not at all."""
from __future__ import annotations

import os
import signal

import pytest

from qmamba.io_utils import OutputSet, interrupts_deferred, replace_dir


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_output_set_commits_files_and_folders_together(tmp_path):
    seen = []
    with OutputSet(on_commit=seen.extend) as outputs:
        model = outputs.folder(tmp_path / "model")
        (model / "weights.bin").write_bytes(b"w")
        outputs.file(tmp_path / "report.json").write_text("{}")
        assert _names(tmp_path) != ["model", "report.json"]  # nothing visible yet
        assert all(n.startswith(".") and n.endswith(".tmp") for n in _names(tmp_path))
        outputs.commit()
    assert _names(tmp_path) == ["model", "report.json"]
    assert (tmp_path / "model" / "weights.bin").read_bytes() == b"w"
    assert seen == [tmp_path / "model", tmp_path / "report.json"]
    assert oct((tmp_path / "report.json").stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's mode


def test_output_set_without_commit_leaves_nothing(tmp_path):
    (tmp_path / "report.json").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), OutputSet() as outputs:
        outputs.folder(tmp_path / "model")
        outputs.file(tmp_path / "report.json").write_text("new")
        raise RuntimeError("boom")
    assert _names(tmp_path) == ["report.json"]
    assert (tmp_path / "report.json").read_text() == "old"


def test_commit_replaces_previous_outputs(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "stale.bin").write_bytes(b"old")
    (tmp_path / "report.json").write_text("old")
    with OutputSet() as outputs:
        (outputs.folder(tmp_path / "model") / "new.bin").write_bytes(b"new")
        outputs.file(tmp_path / "report.json").write_text("new")
        outputs.commit()
    assert _names(tmp_path) == ["model", "report.json"]
    assert _names(tmp_path / "model") == ["new.bin"]
    assert (tmp_path / "report.json").read_text() == "new"


def test_marker_is_removed_before_a_commit_that_fails_midway(tmp_path, monkeypatch):
    """A commit cut after the model folder moved must not leave the old report beside it."""
    (tmp_path / "report.json").write_text("describes the old model")
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("report.json"):
            raise OSError("disk gone")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError), OutputSet() as outputs:
        outputs.folder(tmp_path / "model")
        outputs.file(tmp_path / "report.json").write_text("new")
        outputs.commit()
    assert not (tmp_path / "report.json").exists()
    assert not [n for n in _names(tmp_path) if n.endswith(".tmp")]


def test_same_target_twice_is_refused(tmp_path):
    with OutputSet() as outputs:
        outputs.file(tmp_path / "a")
        with pytest.raises(ValueError, match="already part"):
            outputs.file(tmp_path / "a")


def test_interrupts_are_deferred_to_the_end_of_the_block(tmp_path):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("after the signal")  # still runs: the signal waits
    assert done == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_interrupt_during_commit_arrives_after_every_output_is_in_place(tmp_path):
    recorded = []

    def on_commit(paths):
        recorded.extend(paths)
        os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C came during the renames

    with pytest.raises(KeyboardInterrupt), OutputSet(on_commit) as outputs:
        outputs.file(tmp_path / "a.png").write_bytes(b"png")
        outputs.file(tmp_path / "results.json").write_text("{}")
        outputs.commit()
    assert _names(tmp_path) == ["a.png", "results.json"] and len(recorded) == 2


def test_replace_dir(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "x").write_text("1")
    replace_dir(tmp_path / "new", tmp_path / "dst")
    (tmp_path / "new2").mkdir()
    replace_dir(tmp_path / "new2", tmp_path / "dst")
    assert _names(tmp_path) == ["dst"] and _names(tmp_path / "dst") == []
