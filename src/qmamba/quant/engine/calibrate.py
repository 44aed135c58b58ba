"""Block-wise post-training calibration: `quantize(model, config, calib_loader)`.

The procedure (method.md "Calibration"):
1. run the float model once on the calibration images: observe the points outside the
   blocks (stem, head) and keep the float input of the first block;
2. quantize the stem, capture the (quantized) input of the first block;
3. for each block in order, on the outputs of the already-quantized blocks before it:
   observe every point of the block, build its quantizers, re-observe the hidden-state
   points with A_bar / B_bar u quantized (h must be calibrated on the quantized
   recurrence), then, if the recipe searches, try clipping ratios point by point and keep
   those that minimise the MSE between the block's output and the float model's output;
4. observe and quantize the head with everything before it quantized.

Only one block's inputs and outputs are kept (float and quantized), never every h_t:
scan points see per-step ranges and a bounded sample.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from qmamba.errors import DataError, NumericsError, QMambaError
from qmamba.nn.point import QuantPoint, iter_points
from qmamba.nn.rotation import idle_rotation_points
from qmamba.quant.config import QuantConfig
from qmamba.quant.methods import builders, entropy_groups, hessian, jlss, reparam
from qmamba.quant.methods.outliers import apply_outlier_transforms
from qmamba.quant.observers.act import ActObserver
from qmamba.quant.observers.scan import ScanPointObserver
from qmamba.quant.quantizers import SmoothedInput, SmoothedWeight, twin_uniform
from qmamba.quant.quantizers.log_sqrt2 import log_sqrt2_quantizer


class _StopForward(Exception):
    pass


TWIN_ROLES = ("ssm.u", "ssm.z")  # SiLU outputs: twin uniform quantization (PTQ4ViT)


@dataclass
class PointPlan:
    name: str
    point: QuantPoint
    bits: int
    block: int | None = None  # index in model.quant_blocks(); None = stem/head
    observer: object | None = None
    info: dict = field(default_factory=dict)

    @property
    def role(self) -> str:
        return self.point.role


# ----------------------------------------------------------------------------- planning
def plan_points(model: nn.Module, config: QuantConfig) -> list[PointPlan]:
    """Which points get a quantizer, at how many bits (roles and tags decide; the points
    of rotation slots only while their slot is active)."""
    plans = []
    idle = idle_rotation_points(model)
    for name, point in iter_points(model):
        if id(point) in idle:
            continue
        if point.role.startswith("ssm.") and point.role != "ssm.u" and not config.ssm.quantize:
            continue
        bits = config.w_bits if point.role == "weight" else config.a_bits
        if config.first_last_bits is not None and point.tags & {"first", "last"}:
            bits = config.first_last_bits
        if point.role in config.role_bits:
            bits = config.role_bits[point.role]
            if bits is None:  # this role stays in float
                continue
        plans.append(PointPlan(name, point, bits))
    return plans


def _assign_blocks(plans: list[PointPlan], blocks: list[nn.Module]) -> None:
    owner = {}
    for i, block in enumerate(blocks):
        for module in block.modules():
            owner[id(module)] = i
    for plan in plans:
        plan.block = owner.get(id(plan.point))


def _scan_directions(model: nn.Module) -> dict[int, int]:
    """id(h point) -> number of scan directions sharing it (VMamba: 4)."""
    out = {}
    for module in model.modules():
        h = getattr(module, "h", None)
        if isinstance(h, QuantPoint) and h.role == "ssm.h":
            out[id(h)] = int(getattr(module, "directions", 1))
    return out


# ----------------------------------------------------------------------------- observers
def _new_observer(plan: PointPlan, config: QuantConfig):
    role = plan.role
    if role == "weight":
        return _WeightCapture()
    if role in ("ssm.A", "ssm.B", "ssm.h"):
        return ScanPointObserver(includes_u=config.ssm.b_includes_u)
    per_token = config.act.per_token and role == "linear_input" and not plan.point.tags
    kind, percentile = config.act.observer, config.act.percentile
    if role == "ssm.u" and config.outlier.u_percentile is not None:  # Quamba's clipped SSM input
        kind, percentile = "percentile", config.outlier.u_percentile
    needs_values = config.ssm.delta_grid == "ltsq" or config.vit_ptq.log_sqrt2_role == "ssm.delta"
    if role == "ssm.delta" and needs_values and kind == "minmax":
        kind = "mse"  # the skewness test / log scale needs values, which min/max does not keep
    return ActObserver(
        kind=kind,
        percentile=percentile,
        per_token=per_token,
        channel_axis=plan.point.channel_axis,
        track_channels=config.act.smoothing_alpha is not None and role == "linear_input",
    )


class _WeightCapture:
    def __init__(self):
        self.weight = None

    def __call__(self, w: torch.Tensor) -> None:
        self.weight = w.detach()


def _build(plan: PointPlan, config: QuantConfig, directions: dict[int, int], clip=1.0):
    """The quantizer of `plan` for one search candidate `clip` (a clipping ratio; for
    twin uniform points a (D1, exponent) pair, None for the covering one)."""
    obs, role, bits = plan.observer, plan.role, plan.bits
    if role == "weight":
        channel_dims = plan.point.weight_channel_dims
        return builders.weight_quantizer(obs.weight, bits, config.weight.observer, channel_dims, clip)
    if role in TWIN_ROLES and config.vit_ptq.twin_uniform:
        xmin, xmax = obs.range(bits)
        candidate = clip if isinstance(clip, tuple) else None
        return twin_uniform.twin_quantizer(float(xmin.min()), float(xmax.max()), bits, candidate)
    if role == config.vit_ptq.log_sqrt2_role == "ssm.delta":
        q = log_sqrt2_quantizer(obs.samples(), bits)
        q.scale.mul_(clip)
        return q
    if role == "ssm.A":
        return builders.a_bar_quantizer(obs, bits, config.ssm, clip)
    if role == "ssm.B":
        return builders.b_bar_quantizer(obs, bits, config.ssm, clip)
    if role == "ssm.h":
        return builders.h_quantizer(obs, bits, config.ssm, directions.get(id(plan.point), 1), clip)
    symmetric = config.outlier.act_symmetric
    if role == "ssm.delta":
        return builders.delta_quantizer(obs, bits, config.ssm, clip, symmetric=symmetric)
    xmin, xmax = obs.range(bits)
    return builders.act_quantizer(xmin, xmax, bits, clip, "token" if obs.per_token else "tensor", symmetric)


# ----------------------------------------------------------------------------- running
def _first_block_inputs(model, blocks, images, device) -> list[tuple]:
    """Run the model on each batch until the first block; return its positional inputs."""
    captured = []

    def hook(_module, args, kwargs):
        captured.append((tuple(a.detach() if torch.is_tensor(a) else a for a in args), dict(kwargs)))
        raise _StopForward

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for x in images:
            try:
                model(x.to(device))
            except _StopForward:
                pass
    finally:
        handle.remove()
    return captured


def _run_block(block, inputs: list[tuple]) -> list[tuple]:
    outs = []
    for args, kwargs in inputs:
        out = block(*args, **kwargs)
        outs.append(((*out,) if isinstance(out, tuple) else (out,), {}))
    return outs


def _group_loss(blocks, inputs, targets, weights=None) -> float:
    """Mean squared error between the output of `blocks` run in sequence and `targets`;
    with `weights` (per batch, per output tensor, or None) a weighted squared error."""
    total, count = 0.0, 0
    for b, ((args, kwargs), (target, _)) in enumerate(zip(inputs, targets, strict=True)):
        for block in blocks:
            out = block(*args, **kwargs)
            out = out if isinstance(out, tuple) else (out,)
            args, kwargs = out, {}
        w_batch = weights[b] if weights is not None else (None,) * len(out)
        for o, t, w in zip(out, target, w_batch, strict=True):
            if torch.is_tensor(o) and o is not None:
                err = (o.float() - t.float()).pow(2)
                total += float((err * w).sum() if w is not None else err.sum())
                count += o.numel()
    return total / max(count, 1)


class _ObserveThenPass(nn.Module):
    """Placed inside SmoothedInput while calibrating: observe x / s, pass it on."""

    def __init__(self, observer):
        super().__init__()
        self.observer = observer

    def forward(self, x):
        self.observer(x)
        return x


class _CheckedObserver:
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


def _attach(plans: Iterable[PointPlan]) -> None:
    for p in plans:
        p.point.observer = _CheckedObserver(p.observer, p)


def _detach(plans: Iterable[PointPlan]) -> None:
    for p in plans:
        p.point.observer = None


# ----------------------------------------------------------------------------- main entry
def collect_calibration_images(calib_loader, calib_size: int) -> list[torch.Tensor]:
    """First `calib_size` images of the loader as a list of batches (labels dropped)."""
    batches, n = [], 0
    for item in calib_loader:
        x = item[0] if isinstance(item, list | tuple) else item
        if not torch.is_tensor(x):
            raise DataError("the calibration loader must yield image tensors or (images, labels)")
        take = min(x.shape[0], calib_size - n)
        batches.append(x[:take])
        n += take
        if n >= calib_size:
            break
    if n == 0:
        raise DataError("the calibration loader yielded no images")
    if n < calib_size:
        raise DataError(f"calibration needs {calib_size} images but the data has only {n}")
    return batches


@torch.no_grad()
def quantize(
    model: nn.Module,
    config: QuantConfig,
    calib_loader,
    *,
    device: str | torch.device | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> nn.Module:
    """A quantized copy of `model` (the input model is untouched)."""
    config.validate()
    start = time.time()
    qmodel = copy.deepcopy(model).eval()
    if device is not None:
        qmodel.to(device)
    device = next(qmodel.parameters()).device
    qmodel.qmamba_config = config
    qmodel.qmamba_info = {"points": {}, "calibration_seconds": 0.0}
    if config.is_float:
        return qmodel
    config = _family_defaults(qmodel, config)
    qmodel.qmamba_config = config
    torch.manual_seed(config.seed)
    images = collect_calibration_images(calib_loader, config.calib_size)
    if config.outlier.rotates:  # Quamba / MambaQuant: rotate and fold before calibrating
        qmodel.qmamba_info["rotations"] = apply_outlier_transforms(qmodel, config, images, device)
    plans = plan_points(qmodel, config)
    blocks = list(qmodel.quant_blocks()) if hasattr(qmodel, "quant_blocks") else []
    _assign_blocks(plans, blocks)
    directions = _scan_directions(qmodel)
    outer = [p for p in plans if p.block is None]
    by_block = [[p for p in plans if p.block == i] for i in range(len(blocks))]

    def report(stage, i, n):
        if progress is not None:
            progress(stage, i, n)

    hessian_probs = None
    if config.search.enabled and config.vit_ptq.search_metric == "hessian":
        hessian_probs = hessian.fp_probabilities(qmodel, _first_image_batches(images, config.search.samples), device)

    # 1. stem / head statistics on the float model; float input of the first block
    order = []
    for p in outer:
        p.observer = _new_observer(p, config)
        p.point.observer = _OrderedObserver(_CheckedObserver(p.observer, p), order, p)
    if not blocks:  # no block structure: one pass observes everything
        raise QMambaError(f"{type(model).__name__} does not expose quant_blocks(); cannot calibrate block-wise")
    first_seen = {}

    def mark(_m, _a):
        first_seen.setdefault("block0", len(order))

    mark_handle = blocks[0].register_forward_pre_hook(mark)
    samplers = [entropy_groups.OutputSampler(config.seed) for _ in blocks] if config.vit_ptq.entropy_groups else []
    sampler_handles = [b.register_forward_hook(s) for b, s in zip(blocks, samplers, strict=True)] if samplers else []
    try:
        for x in images:
            qmodel(x.to(device))
            first_seen.setdefault("block0", len(order))
    finally:
        mark_handle.remove()
        for h in sampler_handles:
            h.remove()
        _detach(outer)
    groups = [[i] for i in range(len(blocks))]
    if samplers:
        entropies = [s.entropy() for s in samplers]
        groups = entropy_groups.group_blocks(entropies, config.vit_ptq.entropy_quantile, config.vit_ptq.max_group)
        qmodel.qmamba_info["block_entropy_bits"] = entropies
        qmodel.qmamba_info["block_groups"] = groups
    stem_ids = {id(p) for p in order[: first_seen.get("block0", 0)]}
    stem = [p for p in outer if id(p) in stem_ids]
    head = [p for p in outer if id(p) not in stem_ids]
    for p in stem:
        p.point.quantizer = _build(p, config, directions)
    x_fp = _first_block_inputs(_without_quantizers(qmodel, stem), blocks, images, device)
    x_q = _first_block_inputs(qmodel, blocks, images, device)

    # 2. blocks, in order, on the outputs of the already-quantized blocks; a group of
    #    several blocks (Q-VLM) is calibrated block by block, then searched jointly
    qmamba_jlss: list[dict] = []
    for group in groups:
        report("calibrate", group[0], len(blocks))
        group_blocks = [blocks[i] for i in group]
        group_plans = [p for i in group for p in by_block[i]]
        x_q_in = x_q
        weights = None
        if hessian_probs is not None:
            weights = hessian.block_output_weights(
                qmodel, group_blocks[-1], _first_image_batches(images, config.search.samples), hessian_probs, device)
        for k, i in enumerate(group):
            y_fp = _run_block(blocks[i], x_fp)
            _calibrate_block(blocks[i], by_block[i], config, directions, x_q)
            if config.tune.jlss:
                tuned = jlss.tune_block(blocks[i], _first_images(x_q, config.tune.samples),
                                        _first_images(y_fp, config.tune.samples), config.tune.steps, config.tune.lr)
                qmamba_jlss.append({"block": i, "loss_before": tuned.loss_before, "loss_after": tuned.loss_after})
            if k < len(group) - 1:
                x_q = _run_block(blocks[i], x_q)
            x_fp = y_fp
        if config.search.enabled:
            _search_group(group_blocks, group_plans, config, directions,
                          _first_images(x_q_in, config.search.samples), _first_images(x_fp, config.search.samples),
                          weights, group if config.vit_ptq.entropy_groups else None)
        x_q = x_q_in
        for block in group_blocks:
            x_q = _run_block(block, x_q)
    report("calibrate", len(blocks), len(blocks))

    # 3. head on the fully quantized trunk
    for p in head:
        p.observer = _new_observer(p, config)
    _attach(head)
    try:
        for x in images:
            qmodel(x.to(device))
    finally:
        _detach(head)
    for p in head:
        p.point.quantizer = _build(p, config, directions)

    for p in plans:
        desc = p.point.quantizer.describe() if p.point.quantizer is not None else {}
        qmodel.qmamba_info["points"][p.name] = {"role": p.role, "bits": p.bits, **desc, **p.info}
        p.observer = None
    if qmamba_jlss:
        qmodel.qmamba_info["jlss"] = qmamba_jlss
    qmodel.qmamba_info["calibration_seconds"] = time.time() - start
    qmodel.qmamba_info["calibration_images"] = sum(int(x.shape[0]) for x in images)
    return qmodel


def _family_defaults(model: nn.Module, config: QuantConfig) -> QuantConfig:
    """PTQ4VM smooths with alpha 0.5 on Vim and 0.65 on VMamba."""
    if config.recipe == "ptq4vm" and getattr(model, "family", "vim") == "vmamba" and config.act.smoothing_alpha == 0.5:
        return config.replace(**{"act.smoothing_alpha": 0.65})
    return config


def _first_image_batches(images: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    """The first `n` images as batches cut like `_first_images` cuts the cached inputs."""
    out, taken = [], 0
    for x in images:
        if taken >= n:
            break
        k = min(x.shape[0], n - taken)
        out.append(x[:k])
        taken += k
    return out


def _first_images(batches: list[tuple], n: int) -> list[tuple]:
    """The cached (args, kwargs) of the first `n` images (tensors sliced on dim 0)."""
    out, taken = [], 0
    for args, kwargs in batches:
        if taken >= n:
            break
        size = next(a.shape[0] for a in args if torch.is_tensor(a))
        k = min(size, n - taken)
        out.append((tuple(a[:k] if torch.is_tensor(a) else a for a in args), kwargs))
        taken += k
    return out


class _OrderedObserver:
    """Records the order in which outer points are first seen (stem vs head)."""

    def __init__(self, inner, order: list, plan: PointPlan):
        self.inner, self.order, self.plan = inner, order, plan

    def __call__(self, x):
        if not any(p is self.plan for p in self.order):
            self.order.append(self.plan)
        self.inner(x)


class _without_quantizers:
    """Context-free helper: a callable that runs `model` with `plans`' quantizers removed."""

    def __init__(self, model, plans):
        self.model, self.plans = model, plans

    def __call__(self, x):
        saved = [p.point.quantizer for p in self.plans]
        for p in self.plans:
            p.point.quantizer = None
        try:
            return self.model(x)
        finally:
            for p, q in zip(self.plans, saved, strict=True):
                p.point.quantizer = q

    def __getattr__(self, name):
        return getattr(self.model, name)


def _calibrate_block(block, plans, config, directions, inputs) -> None:
    smooth = config.act.smoothing_alpha
    for p in plans:
        p.observer = _new_observer(p, config)
    pairs = _reparam_pairs(block, plans) if config.vit_ptq.reparam else []
    for p_in, _, _ in pairs:
        p_in.observer = reparam.channel_observer(p_in.point.channel_axis)
    _attach(plans)
    try:
        _run_block(block, inputs)
    finally:
        _detach(plans)
    if smooth is not None:
        _apply_smoothing(block, plans, config, inputs, smooth)
    for p_in, p_w, (norm, linear) in pairs:
        scale, zero_point = reparam.per_channel_qparams(p_in.observer, p_in.bits)
        p_in.point.quantizer, how = reparam.fold_pair(norm, linear, scale, zero_point, p_in.bits)
        p_in.info["reparam"] = how
        p_w.observer.weight = linear.weight.detach()  # the folded weight
    for p in plans:
        if p.point.quantizer is None:
            p.point.quantizer = _build(p, config, directions)
    # h (and everything after A/B) must see the quantized recurrence: observe again
    scan_h = [p for p in plans if p.role == "ssm.h"]
    if scan_h:
        for p in scan_h:
            p.point.quantizer = None
            p.observer = _new_observer(p, config)
        _attach(scan_h)
        try:
            _run_block(block, inputs)
        finally:
            _detach(scan_h)
        for p in scan_h:
            p.point.quantizer = _build(p, config, directions)


def _reparam_pairs(block, plans) -> list[tuple]:
    """(input plan, weight plan, (norm, linear)) of the block's norm -> linear pairs."""
    by_point = {id(p.point): p for p in plans}
    out = []
    for norm, linear in reparam.norm_linear_pairs(block):
        rotation = getattr(linear, "input_rotation", None)
        if rotation is not None and rotation.active:
            continue  # the input point sees the rotated norm output, not the norm output
        p_in = by_point.get(id(getattr(linear, "input_quant", None)))
        p_w = by_point.get(id(getattr(linear, "weight_quant", None)))
        if p_in is not None and p_w is not None and not p_in.point.tags:
            out.append((p_in, p_w, (norm, linear)))
    return out


def _apply_smoothing(block, plans, config, inputs, alpha: float) -> None:
    """SmoothQuant-style smoothing of every Linear input in the block (PTQ4VM).

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha); the input point quantizes X / s and the
    weight point W * s. The input statistics are then observed again on X / s.
    """
    by_point = {id(p.point): p for p in plans}
    pairs = []
    for module in block.modules():
        inp, wq = getattr(module, "input_quant", None), getattr(module, "weight_quant", None)
        if not isinstance(inp, QuantPoint) or not isinstance(wq, QuantPoint) or inp.tags:
            continue
        if id(inp) not in by_point or id(wq) not in by_point or module.weight.dim() != 2:
            continue
        p_in, p_w = by_point[id(inp)], by_point[id(wq)]
        act_max = p_in.observer.channel_absmax()  # (in_features,)
        w_max = module.weight.detach().abs().amax(dim=0).float()  # (in_features,)
        s = (act_max.clamp(min=1e-5) ** alpha) / (w_max.clamp(min=1e-5) ** (1 - alpha))
        s = s.clamp(min=1e-5)
        p_in.observer = _new_observer(p_in, config)
        p_in.point.quantizer = SmoothedInput(_ObserveThenPass(_CheckedObserver(p_in.observer, p_in)), s,
                                             inp.channel_axis)
        p_w.point.quantizer = SmoothedWeight(nn.Identity(), s)  # keeps the float product while observing
        pairs.append((p_in, p_w, s))
    if not pairs:
        return
    _run_block(block, inputs)
    for p_in, p_w, s in pairs:
        xmin, xmax = p_in.observer.range(p_in.bits)
        inner = builders.act_quantizer(xmin, xmax, p_in.bits, 1.0, "token" if p_in.observer.per_token else "tensor")
        p_in.point.quantizer = SmoothedInput(inner, s, p_in.point.channel_axis)
        w = p_w.observer.weight * s.view(1, -1)
        p_w.point.quantizer = SmoothedWeight(
            builders.weight_quantizer(w, p_w.bits, config.weight.observer, p_w.point.weight_channel_dims), s
        )
        p_in.info["smoothing_alpha"] = alpha


def _search_candidates(p: PointPlan, config: QuantConfig) -> list:
    """What the search tries at a point; the first entry is what calibration built."""
    if p.role in TWIN_ROLES and config.vit_ptq.twin_uniform:
        xmin, xmax = p.observer.range(p.bits)
        return twin_uniform.candidates(float(xmin.min()), float(xmax.max()), p.bits)
    return [1.0, *(c for c in config.search.candidates if c != 1.0)]


def _searchable(p: PointPlan, config: QuantConfig) -> bool:
    if p.role == "weight":
        return config.vit_ptq.search_weights and isinstance(p.observer, _WeightCapture)
    return not isinstance(p.point.quantizer, SmoothedInput) and "reparam" not in p.info


def _search_group(blocks, plans, config, directions, inputs, targets, weights=None, group=None) -> None:
    """Coordinate search point by point in forward order (`vit_ptq.search_rounds` sweeps),
    each candidate scored by the error of the output of the whole group of blocks
    (`group`: their indices, recorded in the points' info)."""
    searchable = [p for p in plans if _searchable(p, config)]
    for p in searchable if group is not None else ():
        p.info["search_group"] = list(group)
    chosen = {id(p): _search_candidates(p, config)[0] for p in searchable}
    # the loss of the blocks as they stand: computed once, then carried from point to point
    # (after a point's search the blocks hold its best quantizer, whose loss is known)
    current = _group_loss(blocks, inputs, targets, weights) if searchable else 0.0
    for _ in range(config.vit_ptq.search_rounds):
        for p in searchable:
            best_key = chosen[id(p)]
            best_q, best_loss = p.point.quantizer, current
            for key in _search_candidates(p, config):
                if key == chosen[id(p)]:
                    continue
                p.point.quantizer = _build(p, config, directions, key)
                loss = _group_loss(blocks, inputs, targets, weights)
                if loss < best_loss * (1.0 - config.search.min_gain):
                    best_key, best_loss, best_q = key, loss, p.point.quantizer
            p.point.quantizer = best_q
            current = best_loss
            chosen[id(p)] = best_key
            p.info["clip"] = list(best_key) if isinstance(best_key, tuple) else best_key
