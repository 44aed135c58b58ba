"""QuantConfig: the one serializable description of a quantization run.

A small versioned dataclass (torchao style) that round-trips through JSON and is saved
next to every result. Recipes (`QuantConfig.from_recipe`) are named presets of it; every
field stays a documented option, so ablations are config edits, not code paths.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from qmamba.errors import ConfigError
from qmamba.nn.point import ALL_ROLES
from qmamba.quant import primitives
from qmamba.quant.config_types import check_field_types
from qmamba.quant.recipes.registry import get_recipe

CONFIG_VERSION = 1

OBSERVERS = ("minmax", "percentile", "mse")
WEIGHT_OBSERVERS = ("minmax", "mse", "gptq")
A_GRIDS = ("uniform", "ltsq")
H_CHANNEL_MODES = ("tensor", "channel")
H_GROUP_MODES = ("equal", "dp")
LTSQ_SCALES = ("max", "mse")


def validate_bits(bits: Any, what: str = "bit width", allow_none: bool = False) -> int | None:
    """`primitives.validate_bits` with the option's name in the message."""
    if bits is None and allow_none:
        return None
    try:
        return primitives.validate_bits(bits)
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None


@dataclass
class WeightQuantConfig:
    """Weights: uniform symmetric, per output channel."""

    observer: str = "mse"  # minmax | mse (clipping searched on the weight itself) | gptq
    # GPTQ (qmamba.quant.methods.gptq): dampening of H (x mean diagonal), columns per lazy
    # update, columns by decreasing diag(H), and how its per-channel grid is chosen
    gptq_damp: float = 0.01
    gptq_block: int = 128
    gptq_act_order: bool = False
    gptq_scales: str = "mse"  # minmax (the weight's range) | mse (clipping searched on the weight)

    def validate(self) -> None:
        _check_choice(self.observer, WEIGHT_OBSERVERS, "weight observer")
        _check_choice(self.gptq_scales, ("minmax", "mse"), "GPTQ scales (weight.gptq_scales)")
        if not 0.0 < self.gptq_damp <= 1.0:
            raise ConfigError(f"weight.gptq_damp must be in (0, 1], got {self.gptq_damp}")
        if self.gptq_block < 1:
            raise ConfigError(f"weight.gptq_block must be at least 1, got {self.gptq_block}")


@dataclass
class ActQuantConfig:
    """Inputs of Linear/Conv layers and the SSM's u, delta, C, y, z points."""

    observer: str = "minmax"  # minmax | percentile | mse
    percentile: float = 99.999
    per_token: bool = False  # static per-token scales (PTQ4VM)
    # elementwise points given one static scale per channel (e.g. ["ssm.y", "ssm.z"]):
    # y and the gate feed only elementwise products, so a channel's scale costs nothing
    per_channel_roles: list[str] = field(default_factory=list)
    smoothing_alpha: float | None = None  # SmoothQuant-style smoothing of Linear inputs


@dataclass
class SSMQuantConfig:
    """The scan's internal points: A_bar, B_bar u and the hidden state h."""

    quantize: bool = True
    a_grid: str = "uniform"  # uniform | ltsq (log grid on 1 - A_bar when skewed)
    b_grid: str = "uniform"  # uniform | ltsq (signed log grid anchored at 0 when skewed)
    delta_grid: str = "uniform"  # uniform | ltsq (signed log grid anchored at 0 when skewed)
    ltsq_alpha: float = 0.5  # skewness test: use LtSQ when the median exceeds alpha (A_bar)
    ltsq_b_ratio: float = 0.1  # B: use LtSQ when median(|x|) < ratio * max(|x|) (long tail)
    ltsq_base: float = 2.0  # 2 or sqrt(2)
    # LtSQ's scale before the block search clips it: "max" (the calibrated extreme: max
    # 1 - A_bar, max |B_bar u|, max |delta|) or "mse" (qmamba.quant.methods.ltsq's search of
    # multiples 2^(k/4) of it, least squared error on the calibration samples)
    ltsq_scale: str = "max"
    b_includes_u: bool = True  # quantize B_bar*u (True) or B_bar alone
    h_groups: int = 1  # TGQ: number of time groups (1 = per tensor); 0 = one per step
    h_group_mode: str = "equal"  # equal | dp (boundaries by dynamic programming)
    h_channel: str = "tensor"  # tensor | channel (per scan channel; VMamba: per direction at least)
    h_per_state: bool = False  # a scale per state dimension n


@dataclass
class SearchConfig:
    """Block-wise search of clipping ranges minimising the block-output MSE."""

    enabled: bool = False
    candidates: tuple[float, ...] = (1.0, 0.85, 0.7, 0.55)
    samples: int = 32  # calibration images used for the search
    # a clipped candidate replaces the current best only if it lowers the block-output MSE
    # by more than this fraction: with few search images, tiny "gains" are noise (on
    # vim_fmnist W8A8 with 8 search images: 89.4 without, 90.1 with 0.02; FP 90.3)
    min_gain: float = 0.02
    # coarse to fine: after the sweeps over `candidates`, one more sweep that tries each
    # point's chosen ratio plus and minus `refine` (kept in (0, 1]); None: no such sweep
    refine: float | None = None


# --- ViT/VLM PTQ baselines (PTQ4ViT, RepQ-ViT, Q-VLM): their recipes in qmamba.quant.recipes ---
SEARCH_METRICS = ("mse", "hessian")
LOG_SQRT2_ROLES = ("ssm.delta",)
PER_CHANNEL_ROLES = ("ssm.y", "ssm.z")  # elementwise points: no GEMM reads them


@dataclass
class VitPTQConfig:
    """Mechanisms of the ViT/VLM post-training quantization baselines; all off by default."""

    twin_uniform: bool = False  # PTQ4ViT: twin uniform quantizer at the SiLU outputs (ssm.u, ssm.z)
    search_metric: str = "mse"  # mse | hessian (PTQ4ViT: output error weighted by squared gradients)
    search_weights: bool = False  # the block search also tries a clipping ratio per weight point
    reparam: bool = False  # RepQ-ViT: per-channel norm outputs, scales folded into norm + next linear
    log_sqrt2_role: str | None = None  # RepQ-ViT: log-sqrt(2) quantizer at this role (ssm.delta)
    entropy_groups: bool = False  # Q-VLM: blocks grouped by activation entropy, searched jointly
    entropy_quantile: float = 0.5  # a block joins the next when its entropy exceeds this quantile
    max_group: int = 2  # at most this many consecutive blocks per group
    search_rounds: int = 1  # coordinate-descent sweeps over the points of a block / group

    def validate(self) -> None:
        _check_choice(self.search_metric, SEARCH_METRICS, "search metric")
        if self.log_sqrt2_role is not None:
            _check_choice(self.log_sqrt2_role, LOG_SQRT2_ROLES, "log-sqrt(2) role")
        if not 0.0 <= self.entropy_quantile <= 1.0:
            raise ConfigError(f"entropy_quantile must be in [0, 1], got {self.entropy_quantile}")
        if self.max_group < 1 or self.search_rounds < 1:
            raise ConfigError("max_group and search_rounds must be at least 1")
# --- end of the ViT/VLM PTQ block ---


@dataclass
class TuneConfig:
    """PTQ4VM's block-wise joint tuning of smoothing factors and step sizes (JLSS)."""

    jlss: bool = False
    steps: int = 100  # Adam steps per block
    lr: float = 1e-3
    samples: int = 32  # calibration images the tuning runs on
    batch: int | None = None  # images per Adam step (None: each cached calibration batch whole)
    after_search: bool = False  # tune after the block search (False: before it, as PTQ4VM)


@dataclass
class OutlierConfig:
    """Rotations, smoothing and clipping against activation outliers (Quamba, MambaQuant;
    qmamba.quant.methods.outliers; recipes quamba and mambaquant). All off by default."""

    u_percentile: float | None = None  # clip the SSM input u at this percentile (Quamba: 99.999)
    act_symmetric: bool = False  # symmetric activation scales (Quamba)
    hadamard_out_proj: bool = False  # online Hadamard of out_proj's input, W H folded (Quamba, MambaQuant)
    smooth_alpha: float | None = None  # smoothing before that Hadamard, "smooth-fused" (MambaQuant: 0.5)
    klt: bool = False  # KLT-enhanced rotation K H of in_proj / fc1 inputs and of dt_proj's (MambaQuant)
    hadamard_inner: bool = False  # online Hadamard of Vim x_proj's and VMamba fc2's inputs (MambaQuant)
    # the Hadamard matrices in their Kronecker form P (x) S (smallest Paley factor), the
    # online ones applied factor by factor; False: the largest Paley factor, a dense product
    # (qmamba.quant.methods.hadamard)
    fast_hadamard: bool = False

    @property
    def rotates(self) -> bool:
        return self.hadamard_out_proj or self.klt or self.hadamard_inner

    def validate(self) -> None:
        if self.u_percentile is not None and not 50.0 < self.u_percentile <= 100.0:
            raise ConfigError(f"outlier.u_percentile must be in (50, 100], got {self.u_percentile}")
        if self.smooth_alpha is not None:
            if not 0.0 <= self.smooth_alpha <= 1.0:
                raise ConfigError(f"outlier.smooth_alpha must be in [0, 1], got {self.smooth_alpha}")
            if not self.hadamard_out_proj:
                raise ConfigError("outlier.smooth_alpha smooths out_proj's input before its Hadamard: "
                                  "set outlier.hadamard_out_proj too")


@dataclass
class QuantConfig:
    recipe: str = "fp"
    w_bits: int | None = None
    a_bits: int | None = None
    first_last_bits: int | None = 8  # patch embedding / stem and head; None = like the rest
    # Mixed precision by role: {"ssm.h": 8} quantizes every hidden state at 8 bits,
    # {"ssm.B": None} leaves B_bar*u in float (roles: qmamba.nn.point.ALL_ROLES).
    role_bits: dict[str, int | None] = field(default_factory=dict)
    weight: WeightQuantConfig = field(default_factory=WeightQuantConfig)
    act: ActQuantConfig = field(default_factory=ActQuantConfig)
    ssm: SSMQuantConfig = field(default_factory=SSMQuantConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    outlier: OutlierConfig = field(default_factory=OutlierConfig)
    vit_ptq: VitPTQConfig = field(default_factory=VitPTQConfig)
    calib_size: int = 256
    seed: int = 0
    version: int = CONFIG_VERSION

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        self.w_bits = validate_bits(self.w_bits, "`w_bits`", allow_none=True)
        self.a_bits = validate_bits(self.a_bits, "`a_bits`", allow_none=True)
        self.first_last_bits = validate_bits(self.first_last_bits, "first_last_bits", allow_none=True)
        if not isinstance(self.role_bits, dict):
            raise ConfigError(f"role_bits must be a mapping of role to bits, got {self.role_bits!r}")
        for role, bits in list(self.role_bits.items()):
            if role not in ALL_ROLES:
                close = difflib.get_close_matches(str(role), ALL_ROLES, n=1, cutoff=0.4)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"role_bits: unknown role {role!r}.{hint} Known roles: {', '.join(ALL_ROLES)}")
            self.role_bits[role] = validate_bits(bits, f"role_bits[{role!r}]", allow_none=True)
        check_field_types(self)  # after the bits, which have their own messages
        if (self.w_bits is None) != (self.a_bits is None):
            raise ConfigError("set both w_bits and a_bits, or neither (full precision)")
        self.weight.validate()
        _check_choice(self.act.observer, OBSERVERS, "activation observer")
        _check_choice(self.ssm.a_grid, A_GRIDS, "A_bar grid")
        _check_choice(self.ssm.b_grid, A_GRIDS, "B_bar grid")
        _check_choice(self.ssm.delta_grid, A_GRIDS, "delta grid")
        _check_choice(self.ssm.h_group_mode, H_GROUP_MODES, "TGQ group mode")
        _check_choice(self.ssm.h_channel, H_CHANNEL_MODES, "TGQ channel mode")
        _check_choice(self.ssm.ltsq_scale, LTSQ_SCALES, "LtSQ scale")
        if self.ssm.ltsq_base not in (2.0, 2.0**0.5):
            raise ConfigError(f"LtSQ log base must be 2 or sqrt(2), got {self.ssm.ltsq_base}")
        if self.ssm.h_groups < 0:
            raise ConfigError(f"h_groups must be >= 1 (or 0 for one group per step), got {self.ssm.h_groups}")
        if not 0.0 < self.act.percentile <= 100.0:
            raise ConfigError(f"percentile must be in (0, 100], got {self.act.percentile}")
        if isinstance(self.act.per_channel_roles, str) or not isinstance(self.act.per_channel_roles, list | tuple):
            raise ConfigError(f"act.per_channel_roles must be a list of roles, got {self.act.per_channel_roles!r}")
        self.act.per_channel_roles = list(self.act.per_channel_roles)
        for role in self.act.per_channel_roles:
            _check_choice(role, PER_CHANNEL_ROLES, "each of act.per_channel_roles")
        if self.act.smoothing_alpha is not None and not 0.0 <= self.act.smoothing_alpha <= 1.0:
            raise ConfigError(f"act.smoothing_alpha must be in [0, 1] (or null), got {self.act.smoothing_alpha}")
        if self.search.samples < 1 or not self.search.candidates or min(self.search.candidates) <= 0:
            raise ConfigError(f"search: samples must be >= 1 and candidates a non-empty list of clipping "
                              f"ratios > 0; got {self.search}")
        if self.search.refine is not None and not 0.0 < self.search.refine < 1.0:
            raise ConfigError(f"search.refine must be in (0, 1) (or null), got {self.search.refine}")
        if self.tune.batch is not None and self.tune.batch < 1:
            raise ConfigError(f"tune.batch must be at least 1 (or null), got {self.tune.batch}")
        if self.tune.steps < 0 or self.tune.samples < 1 or not self.tune.lr > 0:
            raise ConfigError(f"tune: steps must be >= 0, samples >= 1 and lr > 0; got {self.tune}")
        if self.tune.jlss and self.act.smoothing_alpha is None:
            raise ConfigError("tune.jlss tunes the smoothing factors: set act.smoothing_alpha "
                              "(the ptq4vm recipe does)")
        if not 0.0 <= self.search.min_gain < 1.0:
            raise ConfigError(f"search.min_gain must be in [0, 1), got {self.search.min_gain}")
        self.vit_ptq.validate()
        if self.calib_size < 1:
            raise ConfigError(f"`calib_size` must be at least 1, got {self.calib_size}")
        check_seed(self.seed, "`seed`")
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"config version {self.version} is not supported (this is {CONFIG_VERSION})")
        self.outlier.validate()

    @property
    def is_float(self) -> bool:
        return self.w_bits is None

    @property
    def setting(self) -> str:
        return "FP" if self.is_float else f"W{self.w_bits}A{self.a_bits}"

    # ------------------------------------------------------------------ recipes
    @classmethod
    def from_recipe(cls, name: str, w_bits: int | None = None, a_bits: int | None = None, **overrides) -> QuantConfig:
        """The config of a registered recipe (`qmamba.quant.recipes`) at these bit widths,
        with `overrides` (top-level or dotted fields) applied on top."""
        recipe = get_recipe(name)
        if not recipe.quantizes:
            return cls(recipe=name, **overrides)
        if w_bits is None or a_bits is None:
            raise ConfigError(f"recipe {name!r} needs both w_bits and a_bits")
        cfg = cls(recipe=name, w_bits=w_bits, a_bits=a_bits)
        recipe.configure(cfg)
        for key, value in overrides.items():
            cfg = cfg.replace(**{key: value})
        cfg.validate()
        return cfg

    def replace(self, **changes) -> QuantConfig:
        """A copy with top-level fields or dotted sub-fields ('ssm.h_groups') changed."""
        data = self.to_dict()
        for key, value in changes.items():
            target = data
            *parents, leaf = key.replace("__", ".").split(".")
            for p in parents:
                if p not in target or not isinstance(target[p], dict):
                    raise ConfigError(f"unknown config field {key!r}")
                target = target[p]
            if leaf not in target:
                raise ConfigError(f"unknown config field {key!r}")
            target[leaf] = value
        return QuantConfig.from_dict(data)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> QuantConfig:
        data = dict(data)
        version = data.get("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ConfigError(f"config version {version} is not supported (this is {CONFIG_VERSION})")
        subs = {
            "weight": WeightQuantConfig,
            "act": ActQuantConfig,
            "ssm": SSMQuantConfig,
            "search": SearchConfig,
            "tune": TuneConfig,
            "outlier": OutlierConfig,
            "vit_ptq": VitPTQConfig,
        }
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown config fields: {sorted(unknown)}")
        for key, sub_cls in subs.items():
            if key in data and isinstance(data[key], dict):
                sub_known = {f.name for f in dataclasses.fields(sub_cls)}
                bad = set(data[key]) - sub_known
                if bad:
                    raise ConfigError(f"unknown fields in config.{key}: {sorted(bad)}")
                values = dict(data[key])
                if key == "search" and isinstance(values.get("candidates"), list | tuple):
                    values["candidates"] = tuple(values["candidates"])
                data[key] = sub_cls(**values)
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> QuantConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None
        return cls.from_dict(data)


def parse_override(text: str) -> tuple[str, Any]:
    """'tune.jlss=true' -> ('tune.jlss', True): the value is JSON when it parses as JSON
    (numbers, true/false, null, lists, objects), else the plain string."""
    key, sep, value = str(text).partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"a config override must look like KEY=VALUE (e.g. tune.jlss=true), got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    if isinstance(parsed, list):
        parsed = tuple(parsed)
    return key, parsed


MAX_SEED = 2**63 - 1  # what every RNG we seed (torch, NumPy via seed % 2**32, random) accepts


def check_seed(seed: Any, what: str = "seed") -> int:
    """A seed is an integer in [0, 2**63 - 1]; ConfigError otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{what} must be an integer in [0, 2**63 - 1], got {seed!r}")
    return seed


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
