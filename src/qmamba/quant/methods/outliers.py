"""Rotations and smoothing of Linear inputs, set up before calibration (Quamba, MambaQuant).

`apply_outlier_transforms(model, config, images)` runs the float model once over the
calibration images to collect, at the input points of the layers it will transform,
the per-channel mean, covariance and absolute maximum; then it sets the layers'
`input_rotation` slots and folds their weights (qmamba.nn.rotation), so the model's
float output is unchanged (up to float rounding) and calibration proper sees the
transformed inputs. Which layers: the models declare `rotation_sites()` (Vim's mixer,
VMamba's SS2D and MLP), by kind, never by name:

- `norm_input` (in_proj, fc1), with `outlier.klt`: R = K H, K the eigenvectors of the
  input's calibration covariance, H the orthonormal Hadamard matrix (MambaQuant's
  KLT-enhanced rotation), online in the slot, W -> W R;
- `ssm_output` (out_proj), with `outlier.hadamard_out_proj`: R = H, optionally after
  SmoothQuant factors s (`outlier.smooth_alpha`): x -> (x / s) H, W -> (W * s) H;
- `inner` (Vim x_proj, VMamba fc2), with `outlier.hadamard_inner`: R = H online;
- `folded` (Vim dt_proj, fed by x_proj's first dt_rank outputs), with `outlier.klt`:
  R = K H folded into the producer's rows (W_rows -> R^T W_rows) and the consumer's
  weight (W -> W R); the consumer's slot records R with online=False.

Statistics come from the float model (no quantizer is active yet), as in MambaQuant.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from qmamba.models import contract
from qmamba.models.contract import RotationSites
from qmamba.nn.point import QuantPoint
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine.mechanism import Mechanism
from qmamba.quant.methods.hadamard import KRONECKER_KIND, kronecker_factors, mixing_rotation

SMOOTH_MIN = 1e-5


class InputStatistics:
    """Observer protocol: running per-channel sum, Gram matrix and |max| (float64)."""

    def __init__(self, channel_axis: int):
        self.channel_axis = channel_axis
        self.count = 0
        self.sum: torch.Tensor | None = None
        self.gram: torch.Tensor | None = None
        self.absmax: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> None:
        xc = x.detach().movedim(self.channel_axis % x.dim(), -1)
        xc = xc.reshape(-1, xc.shape[-1]).double()  # (rows, n)
        amax = xc.abs().amax(dim=0)
        if self.sum is None:
            self.sum, self.gram, self.absmax = xc.sum(0), xc.T @ xc, amax
        else:
            self.sum += xc.sum(0)
            self.gram += xc.T @ xc
            self.absmax = torch.maximum(self.absmax, amax)
        self.count += xc.shape[0]

    def covariance(self) -> torch.Tensor:
        """(n, n) unbiased covariance of the channels (float64)."""
        if self.count < 2:
            raise RuntimeError("covariance needs at least two observed rows")
        mean = self.sum / self.count
        return (self.gram - self.count * torch.outer(mean, mean)) / (self.count - 1)


def klt_rotation(cov: torch.Tensor, seed: int = 0, structured: bool = False) -> tuple[torch.Tensor, str]:
    """(K H, kind): the KLT-enhanced rotation of a covariance (float64).

    K: eigenvectors of `cov` (columns, eigh), so x K has a diagonal covariance; H: the
    orthonormal Hadamard matrix, which gives every channel of x K H the same variance
    trace(cov) / n (a seeded random orthogonal matrix where no Hadamard matrix exists)."""
    _, k = torch.linalg.eigh(cov.double())
    h, kind = mixing_rotation(cov.shape[0], seed, structured)
    return k @ h, f"klt_{kind}"  # dense: K has no structure


def smoothing_factors(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant s_j = max|x_j|^alpha / max_i |W_ij|^(1 - alpha), over input channels j."""
    w_max = weight.detach().abs().amax(dim=0).double().clamp(min=SMOOTH_MIN)  # (in,)
    s = act_absmax.double().clamp(min=SMOOTH_MIN) ** alpha / w_max ** (1.0 - alpha)
    return s.clamp(min=SMOOTH_MIN)


def rotation_sites(model: nn.Module) -> RotationSites:
    """The model's declared sites (qmamba.models.contract), every kind present."""
    return contract.rotation_sites(model)


def _rotate(layer: nn.Module, matrix: torch.Tensor, kind: str, smooth: torch.Tensor | None = None,
            online: bool = True) -> None:
    """Set the layer's slot and fold its weight (float output unchanged); a Kronecker
    Hadamard matrix (kind KRONECKER_KIND) is applied factor by factor online."""
    factors = kronecker_factors(matrix.shape[0]) if kind == KRONECKER_KIND else None
    layer.input_rotation.set(matrix, smooth, online=online, kind=kind, factors=factors)
    with torch.no_grad():
        layer.weight.copy_(layer.input_rotation.fold_into_weight(layer.weight))


@torch.no_grad()
def _collect(model: nn.Module, layers: list[nn.Module], images, device) -> dict[int, InputStatistics]:
    """One float pass over `images`, observing the input point of every layer in `layers`."""
    stats: dict[int, InputStatistics] = {}
    points: list[QuantPoint] = []
    for layer in layers:
        point = layer.input_quant
        stats[id(layer)] = InputStatistics(point.channel_axis)
        point.observer = stats[id(layer)]
        points.append(point)
    try:
        for x in images:
            model(x.to(device))
    finally:
        for point in points:
            point.observer = None
    return stats


@torch.no_grad()
def apply_outlier_transforms(model: nn.Module, config: QuantConfig, images, device=None) -> dict[str, dict]:
    """Set every rotation the config asks for; returns {layer name: slot description}."""
    cfg = config.outlier
    if not cfg.rotates:
        return {}
    device = device or next(model.parameters()).device
    sites = rotation_sites(model)
    needs_cov = (sites["norm_input"] + [c for _, _, c in sites["folded"]]) if cfg.klt else []
    needs_max = sites["ssm_output"] if cfg.hadamard_out_proj and cfg.smooth_alpha is not None else []
    stats = _collect(model, needs_cov + needs_max, images, device) if needs_cov + needs_max else {}
    seed = config.seed
    structured = cfg.fast_hadamard

    if cfg.klt:
        for layer in sites["norm_input"]:
            r, kind = klt_rotation(stats[id(layer)].covariance(), seed, structured)
            _rotate(layer, r, kind)
        for producer, rows, consumer in sites["folded"]:
            r, kind = klt_rotation(stats[id(consumer)].covariance(), seed, structured)
            r = r.float().double()  # the float32 matrix the slot keeps, folded on both sides
            w = producer.weight.detach().double()  # (out, in): rows [0, rows) feed the consumer
            w[:rows] = r.T @ w[:rows]
            producer.weight.copy_(w.to(producer.weight.dtype))
            _rotate(consumer, r, kind, online=False)
    if cfg.hadamard_out_proj:
        for layer in sites["ssm_output"]:
            h, kind = mixing_rotation(layer.in_features, seed, structured)
            smooth = None
            if cfg.smooth_alpha is not None:
                smooth = smoothing_factors(stats[id(layer)].absmax, layer.weight, cfg.smooth_alpha)
            _rotate(layer, h, kind, smooth)
    if cfg.hadamard_inner:
        for layer in sites["inner"]:
            h, kind = mixing_rotation(layer.in_features, seed, structured)
            _rotate(layer, h, kind)
    names = {id(m): n for n, m in model.named_modules()}
    return {
        names[id(layer)]: layer.input_rotation.describe()
        for kind_layers in (sites["norm_input"], sites["ssm_output"], sites["inner"])
        for layer in kind_layers if layer.input_rotation.active
    } | {names[id(c)]: c.input_rotation.describe() for _, _, c in sites["folded"] if c.input_rotation.active}


class Rotations(Mechanism):
    """Quamba's / MambaQuant's rotations and smoothing, set on the float model before
    calibration (`outlier.klt`, `outlier.hadamard_out_proj`, `outlier.hadamard_inner`)."""

    @classmethod
    def enabled(cls, config: QuantConfig) -> bool:
        return config.outlier.rotates

    def prepare(self, run) -> None:
        run.info["rotations"] = apply_outlier_transforms(run.qmodel, self.config, run.images, run.device)
