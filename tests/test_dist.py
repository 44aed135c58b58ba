"""qmamba.dist: the torchrun environment, rank devices, shared steps that fail on every
rank at once, and `qmamba quantize` on two ranks giving the single process's numbers to
the last image (two gloo processes on CPU, one launch for all of it: starting a process
that imports torch costs seconds)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
from torch.utils.data import TensorDataset

from qmamba import dist
from qmamba.errors import ConfigError, QMambaError

LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@pytest.fixture
def launch(monkeypatch):
    """Set (or clear, with None) the torchrun variables for one test."""
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)

    def set_env(world=None, rank=None, local_rank=None):
        for name, value in zip(LAUNCH_VARS, (world, rank, local_rank), strict=True):
            if value is not None:
                monkeypatch.setenv(name, str(value))

    return set_env


def test_single_process_without_torchrun(launch):
    launch()
    assert dist.launch_env() is None
    assert (dist.rank(), dist.world_size(), dist.is_main(), dist.is_distributed()) == (0, 1, True, False)
    assert dist.describe() is None
    launch(world=1, rank=0)  # torchrun --nproc_per_node 1: one process, no group needed
    assert dist.launch_env() is None
    with dist.session(torch.device("cpu")) as env:
        assert env is None and not torch.distributed.is_initialized()
    # the shared steps are plain calls
    assert dist.from_main(lambda: 7, "computing") == 7
    assert dist.sum_counts([3, 4], None, "counting") == [3, 4]
    with pytest.raises(KeyError):
        dist.sum_counts([0], KeyError("x"), "counting")


def test_launch_env_and_rank_without_a_group(launch):
    launch(world=4, rank=2, local_rank=1)
    assert dist.launch_env() == dist.Launch(4, 2, 1)
    assert dist.rank() == 2 and not dist.is_main()  # known from the environment before init
    assert dist.place(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="every rank would use the same GPU"):
        dist.place(torch.device("cuda", 0))
    launch(world=2, rank=5)
    with pytest.raises(ConfigError, match="RANK"):
        dist.launch_env()
    launch(world="two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"):
        dist.launch_env()


def test_bad_timeout(monkeypatch):
    monkeypatch.setenv(dist.TIMEOUT_ENV, "0")
    with pytest.raises(ConfigError, match=dist.TIMEOUT_ENV):
        dist._timeout()
    monkeypatch.setenv(dist.TIMEOUT_ENV, "90")
    assert dist._timeout().total_seconds() == 90


# ------------------------------------------------------------------------ two processes
class _NaNOnMarker(nn.Module):
    """Logits of a fixed linear map; NaN for images whose first value is the marker."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        out = self.fc(x)
        return torch.where(x[:, :1] == 1000.0, torch.full_like(out, float("nan")), out)


def _data(n: int = 37, marker: int | None = None) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 6, generator=g), torch.randint(0, 4, (n,), generator=g)
    if marker is not None:
        x[marker, 0] = 1000.0
    return TensorDataset(x, y)


def _outcome(fn) -> list:
    try:
        return ["ok", fn()]
    except Exception as e:
        return [type(e).__name__, str(e)]


QUANTIZE_ARGS = dict(model="vim_fmnist", method="qmamba", w_bits=4, a_bits=4, calib_size=4,
                     eval_limit=27, batch_size=6)  # 5 batches: rank 0 runs 3 (15 images), rank 1 2 (12)


def _quantize_cli(out: str) -> list[str]:
    a = QUANTIZE_ARGS
    return ["quantize", "--model", a["model"], "--method", a["method"], "--w-bits", str(a["w_bits"]),
            "--a-bits", str(a["a_bits"]), "--calib-size", str(a["calib_size"]), "--eval-limit",
            str(a["eval_limit"]), "--batch-size", str(a["batch_size"]), "--device", "cpu",
            "--threads", "1", "--no-progress", "--out", out]


def _worker(rank: int, world: int, ports: tuple[int, int], out_dir: str) -> None:
    """One rank: a few shared steps, then `qmamba quantize` as under torchrun; each
    outcome is written to out_dir/rank<r>.json."""
    from qmamba.cli.main import main
    from qmamba.eval.distributed import evaluate_sharded

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank), **{dist.TIMEOUT_ENV: "120"})
    torch.set_num_threads(1)
    results: dict = {}

    def build() -> nn.Module:
        assert dist.rank() == 0, "from_main ran fn on another rank"
        torch.manual_seed(123)
        return nn.Linear(3, 2)

    def fail() -> None:
        raise ValueError("boom on rank 0")

    def evaluate(marker=None):
        r = evaluate_sharded(_NaNOnMarker(), _data(marker=marker), 5, "cpu")
        return [r.correct1, r.correct5, r.num_images, r.hits1.tolist(), r.hits5.tolist()]

    with dist.session(torch.device("cpu")):
        results["group"] = [dist.rank(), dist.world_size(), dist.is_distributed(), dist.describe()]
        results["from_main"] = _outcome(lambda: dist.from_main(build, "building").weight.tolist())
        results["from_main_fails"] = _outcome(lambda: dist.from_main(fail, "calibrating"))
        results["eval"] = _outcome(evaluate)
        # image 7 is in batch 1 (images 5..9), which rank 1 runs
        results["eval_nan_on_rank1"] = _outcome(lambda: evaluate(marker=7))
        results["after_failures"] = _outcome(lambda: dist.sum_counts([rank + 1], None, "counting"))
    results["closed"] = not torch.distributed.is_initialized()

    # the command line opens (and closes) its own group, as under torchrun
    os.environ["MASTER_PORT"] = str(ports[1])
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        results["quantize_rc"] = main(_quantize_cli(os.path.join(out_dir, "two")))
    results["quantize_stdout"] = stdout.getvalue()
    results["closed_after_cli"] = not torch.distributed.is_initialized()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run `_worker` on two gloo ranks and, meanwhile (rank 1 idles while rank 0
    calibrates), the single-process `quantize` here; (rank 0 results, rank 1 results,
    output folder, single-process report)."""
    from qmamba.jobs import QuantizeJob, run_quantize

    for name in LAUNCH_VARS:
        assert name not in os.environ, f"{name} is set: run the tests without torchrun"
    out = tmp_path_factory.mktemp("ranks")
    ctx = mp.start_processes(_worker, args=(2, (_free_port(), _free_port()), str(out)), nprocs=2,
                             join=False, start_method="spawn")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run_quantize(QuantizeJob(**QUANTIZE_ARGS, device="cpu"), out / "one").report
    finally:
        torch.set_num_threads(threads)
    deadline = time.time() + 300
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two ranks did not finish: a failure left one waiting")
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    return r0, r1, out, one


def test_two_ranks_share_results_and_failures(two_ranks):
    r0, r1, _, _ = two_ranks
    assert r0["group"][:3] == [0, 2, True] and r1["group"][:3] == [1, 2, True]
    assert r0["group"][3]["backend"] == "gloo" and r0["group"][3]["world_size"] == 2
    torch.manual_seed(123)
    assert r0["from_main"] == r1["from_main"] == ["ok", nn.Linear(3, 2).weight.tolist()]

    assert r0["from_main_fails"] == ["ValueError", "boom on rank 0"]
    assert r1["from_main_fails"] == ["QMambaError", "rank 0 failed while calibrating: ValueError: boom on rank 0"]

    from qmamba.eval import evaluate

    whole = evaluate(_NaNOnMarker(), torch.utils.data.DataLoader(_data(), batch_size=5))
    # the per-image hits too, gathered from both ranks in dataset order
    assert r0["eval"] == r1["eval"] == ["ok", [whole.correct1, whole.correct5, 37, whole.hits1.tolist(),
                                               whole.hits5.tolist()]]

    assert r1["eval_nan_on_rank1"][0] == "NumericsError" and "on batch 1 (" in r1["eval_nan_on_rank1"][1]
    assert r0["eval_nan_on_rank1"][0] == "QMambaError"
    assert r0["eval_nan_on_rank1"][1].startswith("rank 1 failed while evaluating: NaN or inf in the activations")
    # the group still works after the failures, and is closed at the end
    assert r0["after_failures"] == r1["after_failures"] == ["ok", [3]]
    assert r0["closed"] and r1["closed"]


def test_two_rank_quantize_is_the_single_process_run(two_ranks):
    """Same FP and quantized counts to the last image, same calibrated model file; only
    rank 0 writes and prints."""
    r0, r1, out, one = two_ranks
    assert r0["quantize_rc"] == r1["quantize_rc"] == 0
    assert r0["closed_after_cli"] and r1["closed_after_cli"]
    assert "qmamba W4A4" in r0["quantize_stdout"] and r1["quantize_stdout"] == ""
    assert sorted(p.name for p in (out / "two").iterdir()) == ["model", "report.json"]
    two = json.loads((out / "two" / "report.json").read_text())
    assert two["distributed"]["world_size"] == 2

    assert one["distributed"] is None
    for key in ("fp", "quantized"):
        exact = ("top1", "top5", "correct1", "correct5", "num_images")
        assert {k: two[key][k] for k in exact} == {k: one[key][k] for k in exact}, key
    assert two["quantized"]["num_images"] == 27  # no padded duplicates
    assert two["points"] == one["points"]  # the same calibration, SQNR included
    assert (out / "two" / "model" / "model.safetensors").read_bytes() == \
        (out / "one" / "model" / "model.safetensors").read_bytes()


def test_sum_counts_raises_its_own_error_alone():
    with pytest.raises(QMambaError, match="mine"):
        dist.sum_counts([1], QMambaError("mine"), "counting")
