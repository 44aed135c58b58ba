"""Observing: the observer of each point, and the context in which observers see tensors.

`observing(plans)` is the one way the engine lets observers see tensors (Brevitas's
`calibration_mode`): inside it each point hands its tensors to its plan's observer,
checked for NaN / inf; on leaving, no observer stays attached to any point.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch

from qmamba.errors import NumericsError
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine.plan import PointPlan
from qmamba.quant.observers.act import ActObserver
from qmamba.quant.observers.scan import ScanPointObserver


class WeightCapture:
    """The 'observer' of a weight point: keeps the weight (weights are built from it)."""

    def __init__(self):
        self.weight = None

    def __call__(self, w: torch.Tensor) -> None:
        self.weight = w.detach()


def new_observer(plan: PointPlan, config: QuantConfig):
    """A fresh observer for `plan`'s point, by role and config."""
    role = plan.role
    if role == "weight":
        return WeightCapture()
    if role in ("ssm.A", "ssm.B", "ssm.h"):
        return ScanPointObserver(includes_u=config.ssm.b_includes_u)
    granularity = "tensor"
    if config.act.per_token and role == "linear_input" and not plan.point.tags:
        granularity = "token"
    elif role in config.act.per_channel_roles:
        granularity = "channel"
    kind, percentile = config.act.observer, config.act.percentile
    if role == "ssm.u" and config.outlier.u_percentile is not None:  # Quamba's clipped SSM input
        kind, percentile = "percentile", config.outlier.u_percentile
    needs_values = config.ssm.delta_grid == "ltsq" or config.vit_ptq.log_sqrt2_role == "ssm.delta"
    if role == "ssm.delta" and needs_values and kind == "minmax":
        kind = "mse"  # the skewness test / log scale needs values, which min/max does not keep
    return ActObserver(
        kind=kind,
        percentile=percentile,
        granularity=granularity,
        channel_axis=plan.point.channel_axis,
        track_channels=config.act.smoothing_alpha is not None and role == "linear_input",
    )


class CheckedObserver:
    """Hands a point's tensors to its observer after checking they are finite, so NaN or
    inf stop the calibration with an error naming the point (and so the layer) where
    they arrive. Everything else is the wrapped observer's."""

    def __init__(self, inner, plan: PointPlan):
        self.inner, self.plan = inner, plan

    def _check(self, t: torch.Tensor, what: str) -> None:
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            p = self.plan
            where = f"block {p.block}" if p.block is not None else "outside the blocks (stem / head)"
            raise NumericsError(
                f"calibration: NaN or inf in the {what} reaching quantization point {p.name} "
                f"(role {p.role}, {where}): the layers before it produce them on the "
                "calibration images; check the checkpoint and the images"
            )

    def __call__(self, x: torch.Tensor) -> None:
        self._check(x, "weight" if self.plan.role == "weight" else "activations")
        self.inner(x)

    def observe_scan_stats(self, step_min: torch.Tensor, step_max: torch.Tensor) -> None:
        self._check(step_min, "scan values")
        self._check(step_max, "scan values")
        self.inner.observe_scan_stats(step_min, step_max)

    def observe_samples(self, values: torch.Tensor) -> None:
        self._check(values, "scan values")
        self.inner.observe_samples(values)

    def __getattr__(self, name):  # only for names not set in __init__
        return getattr(self.inner, name)


class OrderedObserver:
    """Records the order in which points are first seen (which come before the first
    block: the stem; the others: the head)."""

    def __init__(self, inner, order: list, plan: PointPlan):
        self.inner, self.order, self.plan = inner, order, plan

    def __call__(self, x):
        if not any(p is self.plan for p in self.order):
            self.order.append(self.plan)
        self.inner(x)


@contextlib.contextmanager
def observing(plans: Iterable[PointPlan], order: list | None = None) -> Iterator[None]:
    """Attach every plan's observer (checked; with `order`, also recording first sight)
    to its point for the duration of the block; always detached afterwards."""
    plans = list(plans)
    for p in plans:
        checked = CheckedObserver(p.observer, p)
        p.point.observer = checked if order is None else OrderedObserver(checked, order, p)
    try:
        yield
    finally:
        for p in plans:
            p.point.observer = None
