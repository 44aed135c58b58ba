"""The named steps of block-wise calibration (method.md, "Calibration").

1. trunk: run the float model once on the calibration images, observing the points
   outside the blocks (the stem before the first block, the head after the last);
2. stem: quantize the stem; capture the first block's float and quantized inputs;
3. blocks, group by group (one block each unless a mechanism groups them): observe every
   point of a block on the outputs of the already-quantized blocks before it, build its
   quantizers, observe the hidden-state points again on the quantized recurrence (h must
   be calibrated on it), tune; then search the group's clipping ratios against the float
   model's output;
4. head: observe and quantize it with everything before it quantized.

Only one block's inputs and outputs are kept (float and quantized), never every h_t:
scan points see per-step ranges and a bounded sample.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from qmamba.errors import QMambaError
from qmamba.models.contract import quant_blocks, quant_info
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine.blocks import (
    WithoutQuantizers,
    first_block_inputs,
    first_images,
    run_block,
)
from qmamba.quant.engine.build import build_quantizer
from qmamba.quant.engine.mechanism import Mechanism
from qmamba.quant.engine.observe import new_observer, observing
from qmamba.quant.engine.plan import PointPlan, assign_blocks, scan_directions
from qmamba.quant.engine.search import search_group


@dataclass
class CalibrationRun:
    """What every step of one calibration shares."""

    qmodel: nn.Module  # the copy being quantized
    config: QuantConfig
    images: list[torch.Tensor]  # calibration batches
    device: torch.device
    mechanisms: list[Mechanism]
    progress: Callable[[str, int, int], None] | None = None
    start: float = field(default_factory=time.time)
    blocks: list[nn.Module] = field(default_factory=list)
    directions: dict[int, int] = field(default_factory=dict)  # id(h point) -> scan directions
    record_groups: bool = False  # the search records its block group in the points' info
    # seconds spent in the clipping search and in the block tuning: stage -> [wall, CPU]
    stage_seconds: dict[str, list[float]] = field(default_factory=dict)
    cpu_start: float = field(default_factory=time.process_time)

    @contextlib.contextmanager
    def timed(self, stage: str):
        """Add the wall-clock and the process CPU seconds of the enclosed code to `stage`."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            acc = self.stage_seconds.setdefault(stage, [0.0, 0.0])
            acc[0] += time.perf_counter() - wall
            acc[1] += time.process_time() - cpu

    @property
    def info(self) -> dict:
        return quant_info(self.qmodel)

    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def attach_blocks(self, plans: list[PointPlan]) -> None:
        """Find the calibration blocks and which block holds each planned point."""
        self.blocks = quant_blocks(self.qmodel)  # QMambaError naming what the model lacks
        if not self.blocks:
            raise QMambaError(f"{type(self.qmodel).__name__}.quant_blocks() is empty: nothing to calibrate "
                              "block-wise")
        assign_blocks(plans, self.blocks)
        self.directions = scan_directions(self.qmodel)


@dataclass
class Trunk:
    stem: list[PointPlan]
    head: list[PointPlan]
    groups: list[list[int]]  # block indices calibrated and searched together


def observe_trunk(run: CalibrationRun, plans: list[PointPlan]) -> Trunk:
    """Step 1: the float pass; which outer points come before the first block (stem) and
    which after (head), and the block groups."""
    outer = [p for p in plans if p.block is None]
    for p in outer:
        p.observer = new_observer(p, run.config)
    order: list[PointPlan] = []
    first_seen: dict[str, int] = {}

    def mark(_module, _args) -> None:  # a pre-hook that returned a value would replace the inputs
        first_seen.setdefault("block0", len(order))

    handle = run.blocks[0].register_forward_pre_hook(mark)
    with contextlib.ExitStack() as stack:
        stack.enter_context(observing(outer, order))
        stack.callback(handle.remove)
        for m in run.mechanisms:
            stack.enter_context(m.trunk_hooks(run))
        for x in run.images:
            run.qmodel(x.to(run.device))
            first_seen.setdefault("block0", len(order))
    groups = [[i] for i in range(len(run.blocks))]
    for m in run.mechanisms:
        grouped = m.block_groups(run)
        if grouped is not None:
            groups, run.record_groups = grouped, True
    stem_ids = {id(p) for p in order[: first_seen.get("block0", 0)]}
    return Trunk([p for p in outer if id(p) in stem_ids], [p for p in outer if id(p) not in stem_ids], groups)


def calibrate_stem(run: CalibrationRun, stem: list[PointPlan]) -> tuple[list, list]:
    """Step 2: build the stem's quantizers; the first block's float and quantized inputs."""
    for p in stem:
        p.point.quantizer = build_quantizer(p, run.config, run.directions)
    x_fp = first_block_inputs(WithoutQuantizers(run.qmodel, stem), run.blocks[0], run.images, run.device)
    x_q = first_block_inputs(run.qmodel, run.blocks[0], run.images, run.device)
    return x_fp, x_q


def calibrate_group(run: CalibrationRun, group: list[int], by_block: list[list[PointPlan]],
                    x_fp: list, x_q: list) -> tuple[list, list]:
    """Step 3 for one group of blocks: calibrate block by block, then search jointly.
    Returns the float and the quantized outputs of the group."""
    config = run.config
    run.report("calibrate", group[0], len(run.blocks))
    group_blocks = [run.blocks[i] for i in group]
    x_q_in, weights = x_q, None
    for m in run.mechanisms:
        weights = m.search_weights(run, group_blocks) if weights is None else weights
    tune_after = config.tune.after_search and config.search.enabled
    y_fps = []
    for k, i in enumerate(group):
        y_fp = run_block(run.blocks[i], x_fp)
        calibrate_block(run, run.blocks[i], by_block[i], x_q)
        if not tune_after:
            _tune(run, i, x_q, y_fp)
        if k < len(group) - 1:
            x_q = run_block(run.blocks[i], x_q)
        x_fp = y_fp
        y_fps.append(y_fp)
    if config.search.enabled:
        n = config.search.samples
        with run.timed("search"):
            search_group(group_blocks, [p for i in group for p in by_block[i]], config, run.directions,
                         first_images(x_q_in, n), first_images(x_fp, n), weights,
                         group if run.record_groups else None)
    if tune_after:  # tuning starts from the searched clipping ranges
        x_q = x_q_in
        for k, i in enumerate(group):
            _tune(run, i, x_q, y_fps[k])
            if k < len(group) - 1:
                x_q = run_block(run.blocks[i], x_q)
    x_q = x_q_in
    for block in group_blocks:
        x_q = run_block(block, x_q)
    return x_fp, x_q


def _tune(run: CalibrationRun, index: int, inputs: list, targets: list) -> None:
    """The mechanisms that tune a block (JLSS) tune block `index`, timed as "tune"."""
    tuners = [m for m in run.mechanisms if type(m).tune_block is not Mechanism.tune_block]
    if tuners:
        with run.timed("tune"):
            for m in tuners:
                m.tune_block(run, index, run.blocks[index], inputs, targets)


def calibrate_block(run: CalibrationRun, block: nn.Module, plans: list[PointPlan], inputs: list) -> None:
    """Observe, let the mechanisms act, build; then observe h again on the quantized
    recurrence (A_bar and B_bar u now quantized) and build it."""
    for p in plans:
        p.observer = new_observer(p, run.config)
    for m in run.mechanisms:
        m.before_observe(run, block, plans)
    with observing(plans):
        run_block(block, inputs)
    for m in run.mechanisms:
        m.after_observe(run, block, plans, inputs)
    for p in plans:
        if p.point.quantizer is None:
            p.point.quantizer = build_quantizer(p, run.config, run.directions)
    scan_h = [p for p in plans if p.role == "ssm.h"]
    if scan_h:
        for p in scan_h:
            p.point.quantizer = None
            p.observer = new_observer(p, run.config)
        with observing(scan_h):
            run_block(block, inputs)
        for p in scan_h:
            p.point.quantizer = build_quantizer(p, run.config, run.directions)


def calibrate_head(run: CalibrationRun, head: list[PointPlan]) -> None:
    """Step 4: the head's statistics on the fully quantized trunk, then its quantizers."""
    for p in head:
        p.observer = new_observer(p, run.config)
    with observing(head):
        for x in run.images:
            run.qmodel(x.to(run.device))
    for p in head:
        p.point.quantizer = build_quantizer(p, run.config, run.directions)


def finish(run: CalibrationRun, plans: list[PointPlan]) -> nn.Module:
    """Record every point's quantizer and what calibration did in `qmamba_info`."""
    for p in plans:
        desc = p.point.quantizer.describe() if p.point.quantizer is not None else {}
        run.info["points"][p.name] = {"role": p.role, "bits": p.bits, **desc, **p.info}
        p.observer = None
    for m in run.mechanisms:
        m.finish(run)
    wall, cpu = time.time() - run.start, time.process_time() - run.cpu_start
    run.info["calibration_seconds"] = wall
    # where the time went: the search, the tuning, and the rest (observing, building)
    stages = {**run.stage_seconds, "other": [wall - sum(v[0] for v in run.stage_seconds.values()),
                                             cpu - sum(v[1] for v in run.stage_seconds.values())]}
    run.info["stage_seconds"] = {k: round(v[0], 3) for k, v in stages.items()}
    run.info["stage_cpu_seconds"] = {k: round(v[1], 3) for k, v in stages.items()}
    run.info["calibration_images"] = sum(int(x.shape[0]) for x in run.images)
    return run.qmodel
