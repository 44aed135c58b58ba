"""The model contract: what a model must provide to be quantized, saved and evaluated.

Our model classes subclass these protocols explicitly (PEP 544), so a class that forgets
a method cannot even be instantiated, and type checkers see what each one promises; a
model from elsewhere may satisfy them structurally. Callers do not probe models with
getattr/hasattr: they use the accessors below, which return the member or raise a
`QMambaError` naming the model class and the missing member.

- `QuantizableModel`: a whole classifier (VisionMamba, VSSM): its family, its chain of
  calibration blocks, the Linear inputs that may be rotated, its data config, its label
  set and class names, and the spec `create_model` records.
- `QuantBlock`: one element of that chain: the (norm, linear) pairs inside it.
- `DeclaresRotationSites`: a module that says which of its Linear inputs may be rotated
  (the Vim mixer, SS2D, VMamba's MLP, and the model, which merges them).
- `HasRawWeightPoints`: a module whose weight points quantize raw parameters rather
  than a layer's `weight` (SS2D's stacked x/dt projections).
- `QuantizedModel`: what `qmamba.quantize` / `load_quantized` add: the config and the
  calibration record.
- `AdaptsCheckpoints`: optional; maps a released state dict onto the model's keys.
"""
from __future__ import annotations

import inspect
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypedDict, runtime_checkable

import torch.nn as nn

from qmamba.errors import QMambaError
from qmamba.models.labels import LabelSet

if TYPE_CHECKING:
    from qmamba.quant.config import QuantConfig

__all__ = [
    "ROTATION_KINDS",
    "AdaptsCheckpoints",
    "DeclaresRotationSites",
    "HasDataConfig",
    "HasRawWeightPoints",
    "ModelSpec",
    "QuantBlock",
    "QuantizableModel",
    "QuantizedModel",
    "RotationSites",
    "check_quantizable",
    "class_names",
    "data_config",
    "is_quantized",
    "label_set",
    "mark_quantized",
    "merge_rotation_sites",
    "missing_members",
    "model_family",
    "model_spec",
    "norm_linear_pairs",
    "quant_blocks",
    "quant_config",
    "quant_info",
    "registered_name",
    "rotation_sites",
    "state_dict_filter",
    "weight_point_param",
]

# what a rotation site reads (qmamba.quant.methods.outliers picks the rotation by kind)
ROTATION_KINDS = ("norm_input", "ssm_output", "inner", "folded")


class RotationSites(TypedDict, total=False):
    """Linear layers (QuantLinear) whose input a rotating recipe may transform, by kind.

    `norm_input`: reads a normed residual stream; `ssm_output`: reads the scan output;
    `inner`: reads an activation inside the block (u, the MLP's GELU output);
    `folded`: (producer, rows, consumer) triples where the consumer's input is the
    producer's first `rows` outputs, so its rotation is folded into them offline.
    """

    norm_input: list[nn.Module]
    ssm_output: list[nn.Module]
    inner: list[nn.Module]
    folded: list[tuple[nn.Module, int, nn.Module]]


class ModelSpec(TypedDict):
    """How to rebuild a model: `create_model(spec["name"], **spec["kwargs"])`."""

    name: str
    kwargs: dict[str, Any]


@runtime_checkable
class DeclaresRotationSites(Protocol):
    @abstractmethod
    def rotation_sites(self) -> RotationSites:
        """The QuantLinear layers of this module whose input may be rotated, by kind.

        Used by the rotating recipes (Quamba, MambaQuant: qmamba.quant.methods.outliers),
        which set each layer's `input_rotation` slot and fold the weight before
        calibration."""


@runtime_checkable
class QuantBlock(Protocol):
    @abstractmethod
    def norm_linear_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Every (norm, linear) pair in this block whose linear's input point sees exactly
        the norm's output (nothing in between), including the pairs of its submodules.

        Used by RepQ-ViT's scale reparameterization (qmamba.quant.methods.reparam, recipe
        `repq_vit`), which folds per-channel factors from the linear's input quantizer
        into the norm; an empty list is a valid answer."""


@runtime_checkable
class HasRawWeightPoints(Protocol):
    """A module whose weight points quantize raw `nn.Parameter`s, not a layer's weight."""

    # point attribute -> parameter attribute of the same module, e.g.
    # {"quant_x_proj_weight": "x_proj_weight"}; points not listed quantize `weight`.
    # Used by serialization (qmamba.quant.serialize) to store integer codes for the right
    # tensor and by calibration to find the tensor a weight point sees.
    weight_point_params: dict[str, str]


@runtime_checkable
class HasDataConfig(Protocol):
    """timm-style data config (qmamba.models.data_config): `input_size`, `crop_pct`,
    `interpolation`, `mean`, `std`, `num_classes`. `default_cfg` is the same dict (timm
    reads either). Used by qmamba.data to build the evaluation transform and by the
    pipeline and benchmarks for the input size."""

    pretrained_cfg: dict[str, Any]
    default_cfg: dict[str, Any]


@runtime_checkable
class QuantizableModel(DeclaresRotationSites, HasDataConfig, Protocol):
    """A classifier qmamba can calibrate, quantize, save and evaluate.

    `rotation_sites()` (from DeclaresRotationSites) merges the sites of all its modules;
    `pretrained_cfg` / `default_cfg` (from HasDataConfig) is its data config.
    """

    # "vim" or "vmamba": family-specific defaults of the recipes (calibration engine)
    family: ClassVar[str]
    # outputs of the head
    num_classes: int
    # which class each output is (qmamba.models.labels); num_classes of them
    label_set: LabelSet
    # set by qmamba.create_model: the registered name and keyword arguments that rebuild
    # this architecture (saved with quantized models, read back by load_quantized);
    # None for a model built by calling its class directly
    qmamba_spec: ModelSpec | None = None

    @abstractmethod
    def quant_blocks(self) -> list[nn.Module]:
        """The modules calibrated one after another, in forward order: each maps the
        previous one's output to its own (calibration engine, diagnostics, JLSS tuning,
        entropy grouping). Every one is a QuantBlock."""

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in output order (`label_set.class_names`)."""
        return self.label_set.class_names


@runtime_checkable
class QuantizedModel(QuantizableModel, Protocol):
    """A model returned by `qmamba.quantize` or `load_quantized`."""

    # the QuantConfig it was calibrated with (family defaults applied)
    qmamba_config: QuantConfig
    # calibration record: per point {"role", "bits", ...}, timings, rotations, ...
    qmamba_info: dict[str, Any]


@runtime_checkable
class AdaptsCheckpoints(Protocol):
    """Optional: maps a released/legacy state dict onto this model's keys and shapes
    (timm's checkpoint filter function; qmamba.checkpoint calls it before loading)."""

    def filter_state_dict(self, state_dict: dict) -> dict: ...


# ------------------------------------------------------------------------- checking
_MISSING = object()


def _protocol_members(protocol: type) -> list[str]:
    """Names a protocol requires: annotated attributes and public methods/properties,
    less the attributes it gives a default value (such as `qmamba_spec = None`)."""
    names: dict[str, None] = {}
    for cls in protocol.__mro__:
        if not getattr(cls, "_is_protocol", False) or cls.__module__ == "typing":
            continue
        for name in (*getattr(cls, "__annotations__", {}), *vars(cls)):
            value = vars(cls).get(name, _MISSING)
            has_default = not (value is _MISSING or callable(value) or isinstance(value, property))
            if not name.startswith("_") and not has_default:
                names[name] = None
    return list(names)


def missing_members(obj: object, protocol: type) -> list[str]:
    """The members `protocol` requires that `obj` lacks (found without running properties)."""
    return [n for n in _protocol_members(protocol) if inspect.getattr_static(obj, n, _MISSING) is _MISSING]


def _contract_error(obj: object, what: str, protocol: type) -> QMambaError:
    return QMambaError(
        f"{type(obj).__name__} does not satisfy qmamba's model contract: {what} "
        f"(qmamba.models.contract.{protocol.__name__}; docs/design.md, 'The model contract')"
    )


def _require(obj: object, member: str, protocol: type) -> Any:
    if inspect.getattr_static(obj, member, _MISSING) is _MISSING:
        raise _contract_error(obj, f"it has no `{member}`", protocol)
    return getattr(obj, member)


def check_quantizable(model: nn.Module) -> QuantizableModel:
    """`model` itself if it provides every member of QuantizableModel, else a QMambaError
    naming its class and what it lacks."""
    missing = missing_members(model, QuantizableModel)
    if missing:
        raise _contract_error(model, f"it lacks {', '.join(missing)}", QuantizableModel)
    return model  # type: ignore[return-value]


# ------------------------------------------------------------------------ accessors
def model_family(model: nn.Module) -> str:
    """The model's family ("vim", "vmamba")."""
    return _require(model, "family", QuantizableModel)


def quant_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's calibration blocks, in forward order; each one checked to be a QuantBlock."""
    blocks = list(_require(model, "quant_blocks", QuantizableModel)())
    for i, block in enumerate(blocks):
        if inspect.getattr_static(block, "norm_linear_pairs", _MISSING) is _MISSING:
            raise _contract_error(
                model, f"block {i} ({type(block).__name__}) has no `norm_linear_pairs`", QuantBlock
            )
    return blocks


def norm_linear_pairs(block: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """The (norm, linear) pairs the block declares."""
    return list(_require(block, "norm_linear_pairs", QuantBlock)())


def merge_rotation_sites(declarers: Iterable[DeclaresRotationSites]) -> RotationSites:
    """The sites of several modules merged by kind, in the given order (every kind present)."""
    sites: RotationSites = {kind: [] for kind in ROTATION_KINDS}  # type: ignore[assignment]
    for module in declarers:
        for kind, entries in module.rotation_sites().items():
            if kind not in ROTATION_KINDS:
                raise ValueError(
                    f"{type(module).__name__} declares rotation sites of unknown kind {kind!r} "
                    f"(known: {', '.join(ROTATION_KINDS)})"
                )
            sites[kind].extend(entries)
    return sites


def rotation_sites(model: nn.Module) -> RotationSites:
    """The model's rotation sites, every kind present (empty lists where none)."""
    _require(model, "rotation_sites", QuantizableModel)
    return merge_rotation_sites([model])  # type: ignore[list-item]


def weight_point_param(owner: nn.Module, point_attr: str) -> str:
    """Attribute name of the parameter that `owner`'s weight point `point_attr` quantizes
    (`weight` unless the owner declares otherwise in `weight_point_params`)."""
    declared = inspect.getattr_static(owner, "weight_point_params", None)
    if isinstance(declared, Mapping):
        return declared.get(point_attr, "weight")
    return "weight"


def data_config(model: nn.Module) -> dict[str, Any]:
    """A copy of the model's data config (`pretrained_cfg`, else `default_cfg`)."""
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = inspect.getattr_static(model, attr, None)
        if isinstance(cfg, Mapping) and cfg:
            return dict(cfg)
    raise _contract_error(model, "it has no data config (pretrained_cfg)", HasDataConfig)


def label_set(model: nn.Module) -> LabelSet:
    """The label set of the model's outputs."""
    labels = _require(model, "label_set", QuantizableModel)
    if not isinstance(labels, LabelSet):
        raise _contract_error(model, f"its label_set is a {type(labels).__name__}, not a LabelSet",
                              QuantizableModel)
    return labels


def class_names(model: nn.Module) -> tuple[str, ...]:
    """Class names of the model's outputs, in output order."""
    return label_set(model).class_names


def model_spec(model: nn.Module) -> ModelSpec:
    """The registered name and arguments that rebuild the model's architecture."""
    spec = inspect.getattr_static(model, "qmamba_spec", None)
    if spec is None:
        raise QMambaError(
            f"this {type(model).__name__} was not built by qmamba.create_model, so qmamba "
            "cannot record how to rebuild it: build it with qmamba.create_model(name, ...)"
        )
    return spec


def registered_name(model: nn.Module) -> str | None:
    """The registered name create_model built the model under, or None."""
    spec = inspect.getattr_static(model, "qmamba_spec", None)
    return spec["name"] if isinstance(spec, Mapping) else None


def is_quantized(model: nn.Module) -> bool:
    """Whether `qmamba.quantize` (or load_quantized) made this model."""
    return inspect.getattr_static(model, "qmamba_config", None) is not None


def quant_config(model: nn.Module) -> QuantConfig:
    """The QuantConfig a quantized model was calibrated with."""
    if not is_quantized(model):
        raise QMambaError(
            f"this {type(model).__name__} is not quantized: quantize it with qmamba.quantize "
            "or load one with qmamba.load_quantized"
        )
    return model.qmamba_config  # type: ignore[attr-defined]


def quant_info(model: nn.Module) -> dict[str, Any]:
    """The calibration record of a quantized model ({} for a float model)."""
    info = inspect.getattr_static(model, "qmamba_info", None)
    return info if isinstance(info, dict) else {}


def mark_quantized(model: nn.Module, config: QuantConfig, info: dict[str, Any] | None = None) -> None:
    """Record on `model` the config it is quantized with and its calibration record."""
    model.qmamba_config = config
    model.qmamba_info = {} if info is None else info


def state_dict_filter(model: nn.Module) -> Callable[[dict], dict] | None:
    """The model's checkpoint filter (AdaptsCheckpoints), or None if it has none."""
    fn = getattr(model, "filter_state_dict", None) if isinstance(model, AdaptsCheckpoints) else None
    return fn if callable(fn) else None
