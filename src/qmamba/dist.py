"""Runs under torchrun: the process group, this rank, and results shared between ranks.

`torchrun --nproc_per_node K -m qmamba quantize ...` (and `qmamba eval`) start K
processes whose environment holds WORLD_SIZE, RANK and LOCAL_RANK; `session(device)`
opens the process group from it (gloo for CPU, nccl for CUDA, each rank on
cuda:LOCAL_RANK) and closes it at the end. Without torchrun (or with one process)
nothing here does anything and every helper answers as the single process.

What makes K processes give exactly the single process's numbers:
- Evaluation (`qmamba.eval.distributed`): the single-process batches are dealt
  round-robin to the ranks, every image is counted once (no padding), and the int64
  counts are summed with an all_reduce.
- Calibration runs on rank 0 only: it is the single-process code on the same images, and
  `from_main` broadcasts its result (the calibrated model, pickled from a CPU copy) to the
  other ranks, which wait meanwhile. Splitting the calibration images over the ranks and
  reducing statistics would not reproduce one process: the block-wise engine feeds each
  block the outputs of the already-quantized blocks and scores clipping candidates on a
  fixed first batch, so every rank would need every image anyway.
- Only rank 0 writes files and prints results (`is_main`).

Failures: a rank that fails inside a shared step says so in the collective the others
are waiting in (a failure flag in the count all_reduce, an error in place of rank 0's
broadcast), so every rank stops with an error naming the failed rank instead of waiting
for the collective timeout. A rank that dies outright is torchrun's business: it stops
the others. The timeout of a collective is QMAMBA_DIST_TIMEOUT seconds (default 3600: the
other ranks wait that long for rank 0's calibration).
"""
from __future__ import annotations

import contextlib
import datetime
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as tdist

from qmamba.errors import ConfigError, QMambaError

T = TypeVar("T")

TIMEOUT_ENV = "QMAMBA_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Launch:
    """The torchrun environment of this process."""

    world_size: int
    rank: int
    local_rank: int


def _env_int(name: str, default: int | None = None) -> int | None:
    text = os.environ.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment variable {name}={text!r} is not an integer (set by torchrun)") from None


def launch_env() -> Launch | None:
    """The torchrun launch this process belongs to, or None for a single process
    (no WORLD_SIZE, or WORLD_SIZE 1)."""
    world = _env_int("WORLD_SIZE", 1)
    if world is None or world <= 1:
        return None
    rank = _env_int("RANK")
    if rank is None or not 0 <= rank < world:
        raise ConfigError(f"WORLD_SIZE={world} but RANK is {os.environ.get('RANK')!r}: start the "
                          "processes with torchrun (it sets both)")
    return Launch(world, rank, _env_int("LOCAL_RANK", 0))


def is_distributed() -> bool:
    """True inside an initialized process group of more than one rank."""
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def rank() -> int:
    if is_distributed():
        return tdist.get_rank()
    env = launch_env()
    return env.rank if env is not None else 0


def world_size() -> int:
    return tdist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or the single process): the one that writes files and prints results.
    Answers from the environment before the process group exists."""
    return rank() == 0


def describe() -> dict | None:
    """For reports: None for a single process."""
    if not is_distributed():
        return None
    return {"world_size": world_size(), "backend": tdist.get_backend(),
            "evaluation": "single-process batches dealt round-robin, counts summed (int64)",
            "calibration": "rank 0, calibrated model broadcast"}


def place(device: torch.device) -> torch.device:
    """This rank's device: under torchrun, CUDA means cuda:LOCAL_RANK."""
    env = launch_env()
    if env is None or device.type != "cuda":
        return device
    if device.index is not None:
        raise ConfigError(
            f"device {str(device)!r} under torchrun: every rank would use the same GPU; give "
            "--device cuda (or auto) and each rank uses cuda:LOCAL_RANK"
        )
    if env.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"rank {env.rank} has LOCAL_RANK {env.local_rank} but this machine has "
            f"{torch.cuda.device_count()} CUDA device(s): start at most that many processes per node"
        )
    return torch.device("cuda", env.local_rank)


def _timeout() -> datetime.timedelta:
    seconds = _env_int(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    if seconds is None or seconds <= 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {seconds}")
    return datetime.timedelta(seconds=seconds)


@contextlib.contextmanager
def session(device: torch.device | None) -> Iterator[Launch | None]:
    """The process group of a torchrun launch for the duration of the block (nothing
    for a single process, or when the caller already initialized one)."""
    env = launch_env()
    if env is None or (tdist.is_available() and tdist.is_initialized()):
        yield env
        return
    if not tdist.is_available():
        raise QMambaError("this PyTorch build has no torch.distributed: run one process (without torchrun)")
    use_cuda = device is not None and device.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if use_cuda else "gloo"
    kwargs = {"device_id": device} if use_cuda else {}
    tdist.init_process_group(backend, timeout=_timeout(), **kwargs)
    try:
        yield env
    finally:
        tdist.destroy_process_group()


def _collective_device() -> torch.device:
    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _message(error: BaseException) -> str:
    text = str(error).strip()
    return text if isinstance(error, QMambaError) else f"{type(error).__name__}: {text}"


def _raise_failure(error: BaseException | None, what: str) -> None:
    """After a collective whose flag said some rank failed: every rank raises."""
    messages: list[Any] = [None] * world_size()
    tdist.all_gather_object(messages, None if error is None else _message(error))
    if error is not None:
        raise error
    bad = next(r for r, m in enumerate(messages) if m is not None)
    raise QMambaError(f"rank {bad} failed while {what}: {messages[bad]}")


def sum_counts(counts: Sequence[int], error: BaseException | None, what: str) -> list[int]:
    """The sum over the ranks of each count (int64 all_reduce), or an error on every rank
    when any rank passes `error` (its own error on that rank, 'rank r failed while
    <what>: ...' on the others). Every rank must call it with as many counts."""
    if not is_distributed():
        if error is not None:
            raise error
        return [int(c) for c in counts]
    values = [0 if error is not None else int(c) for c in counts]
    t = torch.tensor([int(error is not None), *values], dtype=torch.int64, device=_collective_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    if int(t[0]) > 0:
        _raise_failure(error, what)
    return [int(v) for v in t[1:].tolist()]


def all_gather(value: T) -> list[T]:
    """`value` of every rank, in rank order (pickled; for small objects such as per-image
    bool vectors); `[value]` for a single process. Every rank must call it."""
    if not is_distributed():
        return [value]
    out: list[Any] = [None] * world_size()
    tdist.all_gather_object(out, value)
    return out


def max_value(value: float) -> float:
    """The largest `value` over the ranks (e.g. the wall time of a sharded step)."""
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return float(t.item())


def from_main(fn: Callable[[], T], what: str, portable: Callable[[T], T] | None = None) -> T:
    """`fn()` run on rank 0 only; every rank gets its result (pickled, broadcast).

    `portable(value)` makes the value fit for another process before it is sent (e.g. a
    model moved to CPU: a pickled CUDA tensor would be rebuilt on rank 0's GPU); it runs
    only when there are other ranks. If `fn` fails on rank 0, rank 0 raises its error and
    the others raise 'rank 0 failed while <what>: ...' instead of waiting.
    """
    if not is_distributed():
        return fn()
    if is_main():
        error: Exception | None = None
        try:
            value = fn()
            # pickled here, inside the try: a value that cannot be sent is an error the
            # other ranks hear about, not a broadcast that never starts
            payload = (True, pickle.dumps(portable(value) if portable is not None else value,
                                          protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as e:  # sent to the other ranks, then raised here
            error, payload = e, (False, _message(e))
        tdist.broadcast_object_list([payload], src=0, device=_collective_device())
        if error is not None:
            raise error
        return value
    box: list[Any] = [None]
    tdist.broadcast_object_list(box, src=0, device=_collective_device())
    ok, data = box[0]
    if not ok:
        raise QMambaError(f"rank 0 failed while {what}: {data}")
    return pickle.loads(data)
