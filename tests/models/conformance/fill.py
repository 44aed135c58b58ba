"""Seeded, name-driven weight fill used by the upstream conformance data.

``seeded_fill`` builds a realistic, numerically sane float32 state dict from key names
and shapes only, so the same weights can be produced for the upstream models (when the
reference data is generated) and for ours (when it is checked), whatever order either
side constructs its modules in.

Determinism: the keys are sorted; key number ``i`` in that order draws from its own
``torch.Generator`` seeded with ``seed * 1_000_003 + i``. A key's values therefore
depend on the seed, on the full sorted key list (through ``i``) and on its own
name and shape, never on dict order. Only CPU generators and float32 sampling are used.

Rules (matched on the key's last name component, which is fine for test data):

- ``A_log``, ``A_logs``, ``A_b_log`` (rows, N): ``log(1..N)`` in every row (the S4D-real
  initialisation) plus ``0.02 * randn``.
- ``D``, ``Ds``, ``D_b``: ``1 + 0.05 * randn``.
- dt projection biases (``dt_proj.bias``, ``dt_proj_b.bias``, ``dt_projs_bias``):
  inverse softplus of ``dt`` drawn log-uniformly in [1e-3, 1e-1]
  (``dt + log(-expm1(-dt))``), so ``softplus(bias)`` lies in that range.
- ``cls_token``, ``pos_embed``: ``0.02 * randn``.
- 1-D ``weight`` (every norm: LayerNorm, RMSNorm, also the numbered LayerNorms of
  VMamba's ``patch_embed``/``downsample``): ``1 + 0.1 * randn``.
- every other ``bias`` (norm or layer): ``0.02 * randn``.
- ``x_proj_weight`` (K, R+2N, d) and ``dt_projs_weight`` (K, d, R), which are K stacked
  Linear weights: ``randn / sqrt(shape[-1])``.
- any other weight with >= 2 dims: ``randn / sqrt(fan_in)``, ``fan_in = prod(shape[1:])``.
- anything else (1-D non-weight parameters not listed above): ``0.02 * randn``.
"""
from __future__ import annotations

import math

import torch

__all__ = ["seeded_fill", "key_seed"]

_SEED_STRIDE = 1_000_003
_DT_MIN, _DT_MAX = 1e-3, 1e-1


def key_seed(seed: int, index: int) -> int:
    """Generator seed of the key at position ``index`` of the sorted key list."""
    return (seed * _SEED_STRIDE + index) % (2**63)


def _randn(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float32)


def _fill_one(name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    parts = name.split(".")
    leaf = parts[-1]
    parent = parts[-2] if len(parts) > 1 else ""
    if leaf in ("A_log", "A_logs", "A_b_log"):
        if len(shape) != 2:
            raise ValueError(f"{name}: expected (rows, N), got {shape}")
        n = shape[1]
        base = torch.log(torch.arange(1, n + 1, dtype=torch.float32)).expand(shape)
        return base + 0.02 * _randn(shape, g)
    if leaf in ("D", "Ds", "D_b"):
        return 1.0 + 0.05 * _randn(shape, g)
    if leaf == "dt_projs_bias" or (leaf == "bias" and parent in ("dt_proj", "dt_proj_b")):
        u = torch.rand(shape, generator=g, dtype=torch.float32)
        dt = torch.exp(u * (math.log(_DT_MAX) - math.log(_DT_MIN)) + math.log(_DT_MIN))
        return dt + torch.log(-torch.expm1(-dt))
    if leaf in ("cls_token", "pos_embed"):
        return 0.02 * _randn(shape, g)
    if leaf == "weight" and len(shape) == 1:
        return 1.0 + 0.1 * _randn(shape, g)
    if leaf == "bias":
        return 0.02 * _randn(shape, g)
    if leaf in ("x_proj_weight", "dt_projs_weight") and len(shape) == 3:
        return _randn(shape, g) / math.sqrt(shape[-1])
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return _randn(shape, g) / math.sqrt(fan_in)
    return 0.02 * _randn(shape, g)


def seeded_fill(
    named_shapes: list[tuple[str, tuple[int, ...]]], seed: int
) -> dict[str, torch.Tensor]:
    """Return ``{name: float32 tensor}`` for every (name, shape), deterministically.

    The result does not depend on the order of ``named_shapes`` (see module docstring).
    """
    names = [n for n, _ in named_shapes]
    if len(set(names)) != len(names):
        raise ValueError("duplicate key names")
    shapes = {n: tuple(int(s) for s in shape) for n, shape in named_shapes}
    out: dict[str, torch.Tensor] = {}
    for index, name in enumerate(sorted(names)):
        g = torch.Generator(device="cpu")
        g.manual_seed(key_seed(seed, index))
        out[name] = _fill_one(name, shapes[name], g).contiguous()
    return out
