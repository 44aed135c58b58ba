"""`--device` on every command that computes, and the torchrun guard of the CLI."""
from __future__ import annotations

import pytest
import torch

from qmamba.cli.main import main

NO_CUDA = not torch.cuda.is_available()

COMMANDS = {
    "quantize": ["quantize", "--model", "vim_fmnist", "--method", "qmamba", "--w-bits", "4", "--a-bits", "4"],
    "eval": ["eval", "--model", "vim_fmnist"],
    "analyze": ["analyze", "--model", "vim_fmnist"],
    "demo": ["demo"],
    "train": ["train", "--model", "vim_fmnist"],
}


@pytest.mark.skipif(not NO_CUDA, reason="checks the message of a machine without CUDA")
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cuda_without_a_gpu_is_a_clear_error(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written; if it were, it lands here
    rc = main([*COMMANDS[command], "--device", "cuda", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: device 'cuda': CUDA is not available") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_bad_device_name(capsys):
    assert main(["eval", "--model", "vim_fmnist", "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_torchrun_only_for_quantize_and_eval(monkeypatch, capsys):
    """Other commands refuse to run once per rank; errors name the rank."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["demo", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error (rank 1): `qmamba demo` runs as one process")
    assert main(["list-models"]) == 2
