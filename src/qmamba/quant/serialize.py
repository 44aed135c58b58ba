"""Save and reload a quantized model: packed integer codes, scales, zero points, config.

A saved model is a folder with
- `model.safetensors`: the float tensors that stay float (norms, biases, A_log, D,
  position embeddings, ...), the weight codes packed to their bit width
  (`<weight>.__codes`, uint8), and every quantizer's buffers (`<point>.__q.<buffer>`);
- `quant.json`: format version, the architecture (`create_model` name and kwargs), the
  QuantConfig, for every quantization point the quantizer's class and attributes, and
  the active rotation slots of rotating recipes (`rotations`: size, online, smoothing;
  their matrices and smoothing factors are float tensors of `model.safetensors`, their
  folded weights are the weight codes).

On reload the weights are the dequantized codes, held by a `CodedWeight` quantizer that
ignores the float parameter, so the logits are bit-identical to the model that was
saved (`dequantize(quantize(w))` is exactly the fake quantization it ran with).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file

from qmamba.errors import CheckpointError
from qmamba.io_utils import atomic_write
from qmamba.models import create_model
from qmamba.models.contract import (
    is_quantized,
    mark_quantized,
    model_spec,
    quant_config,
    quant_info,
    registered_name,
    weight_point_param,
)
from qmamba.nn.point import iter_points
from qmamba.nn.rotation import InputRotation
from qmamba.quant.config import QuantConfig
from qmamba.quant.quantizers import CodedWeight, SmoothedWeight  # the package registers every kind
from qmamba.quant.quantizers.registry import rebuild_quantizer, save_quantizer

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "quant.json"


# ----------------------------------------------------------------------------- bit packing
def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned integer codes (< 2^bits) -> little-endian bit stream in uint8."""
    flat = codes.flatten().to(torch.int64).cpu().numpy().astype(np.uint32)
    if flat.size and (flat.max() >= 2**bits):
        raise ValueError(f"codes do not fit in {bits} bits")
    bit_planes = ((flat[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)  # (n, bits)
    return torch.from_numpy(np.packbits(bit_planes.reshape(-1), bitorder="little"))


def unpack_codes(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    bit_stream = np.unpackbits(packed.cpu().numpy(), bitorder="little")[: numel * bits]
    planes = bit_stream.reshape(numel, bits).astype(np.uint32)
    values = (planes << np.arange(bits, dtype=np.uint32)).sum(axis=1)
    return torch.from_numpy(values.astype(np.int64))


# ----------------------------------------------------------------------------- save
def _weight_entry(point_name: str, quantizer: nn.Module, weight: torch.Tensor, tensors: dict) -> dict:
    """Packed codes and scale of a weight point (WeightQuantizer or CodedWeight, possibly
    inside SmoothedWeight, whose factors are saved beside them)."""
    if not hasattr(quantizer, "weight_codes"):
        raise CheckpointError(f"cannot save weight quantizer {type(quantizer).__name__} at {point_name}")
    codes, scale, bits, qmin = quantizer.weight_codes(weight)
    tensors[f"{point_name}.__codes"] = pack_codes(codes - qmin, bits)
    tensors[f"{point_name}.__scale"] = scale.float().contiguous()
    smoothing = isinstance(quantizer, SmoothedWeight)
    return {"type": "weight", "bits": bits, "qmin": qmin, "shape": list(codes.shape), "smoothing": smoothing}


def save_quantized(qmodel: nn.Module, out_dir: str | os.PathLike) -> dict:
    """Write `model.safetensors` and `quant.json` into `out_dir`; returns size info."""
    if registered_name(qmodel) is None or not is_quantized(qmodel):
        raise CheckpointError("save_quantized needs a model built by qmamba.create_model and quantized by qmamba.quantize")
    spec, config = model_spec(qmodel), quant_config(qmodel)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    points: dict[str, dict] = {}
    coded_params = set()
    params = dict(qmodel.named_parameters())
    for name, point in iter_points(qmodel):
        if point.quantizer is None:
            continue
        if point.role == "weight":
            param_name = _weight_param_of(qmodel, name, point)
            entry = _weight_entry(name, point.quantizer, params[param_name], tensors)
            entry["param"] = param_name
            coded_params.add(param_name)
            if isinstance(point.quantizer, SmoothedWeight):
                tensors[f"{name}.__smooth"] = point.quantizer.smooth.contiguous()
        else:
            entry = save_quantizer(f"{name}.__q", point.quantizer, tensors)
        points[name] = entry
    float_params = 0
    for key, value in qmodel.state_dict().items():
        if key in coded_params or ".__q." in key or key.startswith("__") or _is_quantizer_buffer(key):
            continue
        tensors[key] = value.detach().contiguous()
        float_params += value.numel()
    rotations = {
        name: m.describe() for name, m in qmodel.named_modules() if isinstance(m, InputRotation) and m.active
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "model": spec,
        "config": config.to_dict(),
        "points": points,
        "rotations": rotations,
        "info": _jsonable({k: v for k, v in quant_info(qmodel).items()
                           if k not in VOLATILE_INFO}),
    }
    with atomic_write(out / WEIGHTS_FILE, "wb") as f:
        f.write(_safetensors_bytes(tensors))
    with atomic_write(out / META_FILE, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    weight_bytes = sum(t.numel() * t.element_size() for k, t in tensors.items() if k.endswith("__codes"))
    float_weight_bytes = sum(params[p].numel() * 4 for p in coded_params)
    return {
        "path": str(out),
        "file_bytes": (out / WEIGHTS_FILE).stat().st_size + (out / META_FILE).stat().st_size,
        "weight_code_bytes": weight_bytes,
        "weight_float32_bytes": float_weight_bytes,
        "float_tensor_elements": float_params,
    }


# Timings are left out of the saved model: the same calibration gives the same files,
# byte for byte (the report of the run keeps the timing).
VOLATILE_INFO = ("calibration_seconds", "stage_seconds", "stage_cpu_seconds")


def _safetensors_bytes(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def _is_quantizer_buffer(key: str) -> bool:
    """State-dict keys of buffers that live inside quantizer modules (saved separately)."""
    return ".quantizer." in key


def _weight_param_of(model: nn.Module, point_name: str, point) -> str:
    """The parameter a weight point quantizes: declared by its owner module."""
    owner_name, _, attr = point_name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    param_attr = weight_point_param(owner, attr)
    return f"{owner_name}.{param_attr}" if owner_name else param_attr


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if torch.is_tensor(o) else str(o)))


# ----------------------------------------------------------------------------- load
def load_quantized(path: str | os.PathLike) -> nn.Module:
    """Rebuild a model saved by `save_quantized`; CheckpointError if the folder is not
    one, or is damaged."""
    folder = Path(path)
    meta_path, weights_path = folder / META_FILE, folder / WEIGHTS_FILE
    if not meta_path.is_file() or not weights_path.is_file():
        raise CheckpointError(
            f"{folder} is not a saved quantized model (expected {META_FILE} and {WEIGHTS_FILE} in it)"
        )
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(weights_path))
    except (json.JSONDecodeError, OSError, Exception) as e:  # safetensors raises its own types
        raise CheckpointError(f"cannot read the quantized model in {folder}: {e}; the files are "
                              "corrupt or truncated: quantize the model again") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise CheckpointError(f"{meta_path}: format version {version} is not supported "
                              f"(this qmamba reads version {FORMAT_VERSION}); quantize the model again")
    try:
        return _rebuild(meta, tensors, meta_path, weights_path)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        raise CheckpointError(
            f"the quantized model in {folder} is damaged ({META_FILE} and {WEIGHTS_FILE} do not "
            f"match: {type(e).__name__}: {e}); quantize the model again"
        ) from e


def _rebuild(meta: dict, tensors: dict, meta_path: Path, weights_path: Path) -> nn.Module:
    model = create_model(meta["model"]["name"], **meta["model"]["kwargs"]).eval()
    config = QuantConfig.from_dict(meta["config"])
    _restore_rotations(model, meta.get("rotations", {}), meta_path)  # their tensors load below
    points = dict(iter_points(model))
    state = model.state_dict()
    quantizers = {}
    for name, entry in meta["points"].items():
        if name not in points:
            raise CheckpointError(f"{meta_path}: quantization point {name} does not exist in the model")
        if entry["type"] != "weight":
            quantizers[name] = rebuild_quantizer(f"{name}.__q", entry, tensors)
            continue
        numel = int(np.prod(entry["shape"]))
        codes = unpack_codes(tensors[f"{name}.__codes"], entry["bits"], numel).view(entry["shape"]) + entry["qmin"]
        scale = tensors[f"{name}.__scale"]
        coded = CodedWeight(codes, scale, torch.zeros_like(scale), entry["bits"], entry["smoothing"])
        w = coded(state[entry["param"]])
        if entry["smoothing"]:  # the float parameter is not stored: keep it consistent
            smooth = tensors[f"{name}.__smooth"]
            shape = [1] * w.dim()
            shape[1] = -1
            w = w / smooth.view(shape)
            coded = SmoothedWeight(coded, smooth)
        state[entry["param"]] = w
        quantizers[name] = coded
    missing = [k for k in state if k not in tensors and not _is_coded(k, meta)]
    if missing:
        raise CheckpointError(f"{weights_path} lacks tensors: {missing[:5]} ({len(missing)} in all)")
    state.update({k: tensors[k] for k in state if k in tensors})
    model.load_state_dict(state, strict=True)
    for name, quantizer in quantizers.items():
        points[name].quantizer = quantizer
    mark_quantized(model, config, meta.get("info", {}))
    return model


def _restore_rotations(model: nn.Module, rotations: dict, meta_path: Path) -> None:
    """Activate the saved rotation slots (placeholder values, overwritten by the state dict)."""
    for name, entry in rotations.items():
        try:
            slot = model.get_submodule(name)
        except AttributeError:
            slot = None
        if not isinstance(slot, InputRotation):
            raise CheckpointError(f"{meta_path}: rotation slot {name} does not exist in the model")
        n = int(entry["size"])
        factors = entry.get("factors")
        if factors is not None and (not isinstance(factors, list) or len(factors) != 2):
            raise CheckpointError(f"{meta_path}: rotation slot {name} has factors {factors!r} (want [m, s])")
        try:
            slot.set(torch.eye(n), torch.ones(n) if entry["smoothing"] else None, online=entry["online"],
                     kind=entry.get("kind", ""), factors=None if factors is None else tuple(factors))
        except ValueError as err:
            raise CheckpointError(f"{meta_path}: rotation slot {name}: {err}") from None


def _is_coded(key: str, meta: dict) -> bool:
    return any(e.get("param") == key for e in meta["points"].values())
