"""Turn a quantized model into its integer-backend form: `to_integer(model)`.

Each layer with an integer form is replaced by its integer module (layers.py, vim.py,
vmamba.py); every other layer keeps its simulated (float, fake-quantized) module, and
`model.integer_layers` records for each one whether it runs integer and, if not, why
(bit widths above 8, points left in float, quantizers without an integer form). The
replacement is by module type: Vim's scan branches (`ScanBranch`) and VMamba's SS2D get
family modules (their projections and scans are not plain layers), then every remaining
`QuantLinear` / `QuantConv2d` of the model is converted on its own.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch.nn as nn

from qmamba.integer.codes import ActCodes, DeltaTable
from qmamba.integer.layers import IntConv1dCausal, IntConv2d, IntLinear
from qmamba.integer.scan import IntegerScan
from qmamba.integer.scan_plan import NotInteger, plan_scan
from qmamba.integer.vim import IntScanBranch
from qmamba.integer.vim_mixer import IntBiMambaMixer
from qmamba.integer.vmamba import IntSS2D
from qmamba.models.vim import BiMambaMixer
from qmamba.models.vmamba_blocks import SS2D
from qmamba.nn.layers import QuantConv1d, QuantConv2d, QuantLinear


@dataclass
class LayerRecord:
    """One layer (or scan) of the integer model: integer or float, and why."""

    name: str
    kind: str  # linear | conv | scan | projection
    integer: bool
    reason: str = ""  # why it stays float ("" when integer)
    detail: dict = field(default_factory=dict)  # bits, GEMM path, scan plan


def to_integer(model: nn.Module) -> nn.Module:
    """The integer-backend model: `model` itself, its layers replaced (in place; the
    simulated model is consumed), `model.integer_layers` the per-layer records."""
    records: list[LayerRecord] = []
    for name, module in list(model.named_modules()):
        if isinstance(module, BiMambaMixer):
            _replace(model, name, _convert_vim_mixer(name, module, records))
        elif isinstance(module, SS2D):
            _replace(model, name, _convert_ss2d(name, module, records))
    handled = {r.name for r in records}  # layers the family modules decided on
    for name, module in list(model.named_modules()):
        if name not in handled and isinstance(module, QuantLinear | QuantConv2d):
            _replace(model, name, _convert_layer(name, module, records))
    model.integer_layers = records
    model.qmamba_backend = "int"
    return model


def layer_table(model: nn.Module) -> list[dict]:
    """The records of `to_integer` as JSON-able dicts (for report.json)."""
    return [asdict(r) for r in getattr(model, "integer_layers", [])]


def describe(model: nn.Module) -> str:
    """A short text: how many layers run integer, and every one that does not, with why."""
    records = getattr(model, "integer_layers", [])
    layers = [r for r in records if r.kind != "mixer"]
    n_int = sum(r.integer for r in layers)
    lines = [f"integer backend: {n_int} of {len(layers)} layers and scans run on integers"]
    mixers = [r for r in records if r.kind == "mixer"]
    if mixers:
        lines.append(f"  {sum(r.detail['fused'] for r in mixers)} of {len(mixers)} Vim mixers fused")
    split = sum(r.integer and (r.detail or {}).get("gemm") == "int_mm_split" for r in layers)
    if split:
        lines.append(f"  {split} layers run their 8-bit weights split in two (w = 2 w_hi + w_lo, twice the "
                     "multiplies): this CPU's int8 GEMM is exact only for |w| <= 64 (oneDNN's AVX2 "
                     "path, no VNNI); on that path the integer model measured slower than the float "
                     "one (README, integer backend)")
    for r in layers:
        if not r.integer:
            lines.append(f"  float: {r.name} ({r.kind}): {r.reason}")
    return "\n".join(lines)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    if new is None:
        return
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _linear_detail(layer: IntLinear) -> dict:
    act = layer.act
    return {"gemm": layer.weight.path, "w_max": layer.weight.wmax,
            "a_bits": None if act is None else act.bits}


def _convert_layer(name: str, layer: nn.Module, records: list, **kw) -> nn.Module | None:
    kind = "conv" if isinstance(layer, QuantConv1d | QuantConv2d) else "linear"
    try:
        if isinstance(layer, QuantConv1d):
            new = IntConv1dCausal(layer)
        elif isinstance(layer, QuantConv2d):
            new = IntConv2d(layer)
        else:
            new = IntLinear.from_layer(layer, **kw)
    except NotInteger as e:
        records.append(LayerRecord(name, kind, False, str(e)))
        return None
    detail = _linear_detail(new) if isinstance(new, IntLinear) else {}
    records.append(LayerRecord(name, kind, True, "", detail))
    return new


def _scan(name: str, points, d: int, n: int, records: list) -> IntegerScan | None:
    try:
        plan = plan_scan(points, d, n)
        if points.delta.quantizer is None:
            raise NotInteger("ssm.delta is not quantized (left in float)")
        scan = IntegerScan(plan, DeltaTable(points.delta.quantizer))
    except NotInteger as e:
        records.append(LayerRecord(name, "scan", False, str(e)))
        return None
    records.append(LayerRecord(name, "scan", True, "", plan.describe()))
    return scan


def _convert_vim_mixer(prefix: str, mixer: BiMambaMixer, records: list) -> IntBiMambaMixer | None:
    """Convert the mixer's layers and branches in place; the fused mixer if it applies."""
    p = f"{prefix}." if prefix else ""
    for conv, x_proj, dt_proj, branch, A_log in (
        ("conv1d", "x_proj", "dt_proj", "forward_branch", mixer.A_log),
        ("conv1d_b", "x_proj_b", "dt_proj_b", "backward_branch", mixer.A_b_log),
    ):
        _replace(mixer, conv, _convert_layer(p + conv, getattr(mixer, conv), records))
        br = getattr(mixer, branch)
        u_codes = None
        try:
            u_codes = ActCodes(br.quant.u.quantizer, 1) if br.quant.u.quantizer is not None else None
        except NotInteger:
            u_codes = None
        xp = getattr(mixer, x_proj)
        if xp.input_rotation.active:
            _replace(mixer, x_proj, _convert_layer(p + x_proj, xp, records))
        elif u_codes is None:
            records.append(LayerRecord(p + x_proj, "linear", False, "its input u has no integer codes"))
        else:
            _replace(mixer, x_proj, _convert_layer(p + x_proj, xp, records, with_act=False))
        _replace(mixer, dt_proj, _convert_layer(p + dt_proj, getattr(mixer, dt_proj), records))
        d, n = A_log.shape
        scan = _scan(f"{p}{branch}.scan", br.quant, d, n, records)
        setattr(mixer, branch, IntScanBranch(br, scan, u_codes))
    try:  # the fused, channels-last mixer when both branches are fully integer
        fused = IntBiMambaMixer(mixer)
    except NotInteger as e:
        records.append(LayerRecord(prefix, "mixer", True, "", {"fused": False, "why_not_fused": str(e)}))
        return None
    records.append(LayerRecord(prefix, "mixer", True, "", {"fused": True}))
    return fused


def _convert_ss2d(name: str, op: SS2D, records: list) -> IntSS2D:
    p = f"{name}." if name else ""
    for child in ("in_proj", "out_proj", "conv2d"):
        _replace(op, child, _convert_layer(p + child, getattr(op, child), records))
    d, n = op.A_logs.shape
    scan = _scan(f"{p}scan", op.quant, d, n, records)
    reasons: dict[str, str] = {}
    new = IntSS2D(op, scan, reasons)
    for part in ("x_proj", "dt_projs"):
        records.append(LayerRecord(p + part, "projection", part not in reasons, reasons.get(part, "")))
    return new
