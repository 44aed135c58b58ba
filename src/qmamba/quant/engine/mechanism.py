"""Mechanisms: the methods that take part in calibration at its named steps.

The engine (`steps.py`) runs the same steps for every recipe; what a method adds (a
rotation before calibration, smoothing after a block is observed, block-wise tuning,
another search metric, grouped blocks) is a `Mechanism` subclass in the method's own
module (qmamba.quant.methods), switched on by the config. Every hook is a no-op here, so
a mechanism implements only the steps it takes part in.

The hooks, in the order calibration calls them:
- `prepare(run)`: before planning; may transform the float model (rotations) or
  precompute what later hooks need.
- `trunk_hooks(run)`: a context manager around the float pass over the calibration
  images (stem and head statistics); may register forward hooks on the blocks.
- `block_groups(run)`: groups of consecutive blocks calibrated and searched together,
  or None (one block per group).
- `search_weights(run, group_blocks)`: per-element weights of the search's output error
  for one group, or None (plain mean squared error).
- `before_observe(run, block, plans)`: may replace some plans' observers.
- `after_observe(run, block, plans, inputs)`: after the block's observers saw its
  calibration inputs, before its quantizers are built; may set quantizers itself (and
  mark those plans not searchable).
- `tune_block(run, index, block, inputs, targets)`: after the block is built.
- `finish(run)`: at the end; may add to the model's `qmamba_info`.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from qmamba.quant.config import QuantConfig

if TYPE_CHECKING:
    import torch.nn as nn

    from qmamba.quant.engine.plan import PointPlan
    from qmamba.quant.engine.steps import CalibrationRun


class Mechanism:
    def __init__(self, config: QuantConfig):
        self.config = config

    @classmethod
    def enabled(cls, config: QuantConfig) -> bool:
        raise NotImplementedError

    def prepare(self, run: CalibrationRun) -> None:
        pass

    def trunk_hooks(self, run: CalibrationRun) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def block_groups(self, run: CalibrationRun) -> list[list[int]] | None:
        return None

    def search_weights(self, run: CalibrationRun, group_blocks: list[nn.Module]):
        return None

    def before_observe(self, run: CalibrationRun, block: nn.Module, plans: list[PointPlan]) -> None:
        pass

    def after_observe(self, run: CalibrationRun, block: nn.Module, plans: list[PointPlan],
                      inputs: list[tuple]) -> None:
        pass

    def tune_block(self, run: CalibrationRun, index: int, block: nn.Module, inputs: list[tuple],
                   targets: list[tuple]) -> None:
        pass

    def finish(self, run: CalibrationRun) -> None:
        pass
