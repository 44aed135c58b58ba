"""VMamba (MzeroMiko/VMamba) image classifiers in pure PyTorch.

`VSSM` reproduces the released models in float32 eval mode with upstream's parameter
names and shapes (so the released `.pth` files load with `strict=True` after
`filter_state_dict`), and exposes quantization points (docs/design.md).

Registered variants (short name, upstream factory alias):
  vanilla v0 (channels-last, gated SS2D, no MLP, patch merging):
    vmamba_tiny_v0 / vanilla_vmamba_tiny, vmamba_small_v0, vmamba_base_v0
  v2 (forward type v05_noz, channel-first, MLP, conv downsample, 2-conv stem):
    vmamba_tiny_s2l5, vmamba_small_s2l15, vmamba_base_s2l15   (ssm_ratio 2)
    vmamba_tiny_s1l8, vmamba_small_s1l20, vmamba_base_s1l20   (ssm_ratio 1)
Settings are those of upstream's factory functions and `configs/vssm/*.yaml`.
"""
from __future__ import annotations

import re
from collections import OrderedDict

import torch
import torch.nn as nn

from qmamba.models.contract import (
    AdaptsCheckpoints,
    DeclaresRotationSites,
    QuantizableModel,
    RotationSites,
    merge_rotation_sites,
)
from qmamba.models.data_config import imagenet_data_config
from qmamba.models.labels import IMAGENET_1K, label_set_for
from qmamba.models.layers import LayerNorm2d
from qmamba.models.registry import register_model
from qmamba.models.vmamba_blocks import (
    PatchMerging2D,
    Permute,
    VSSBlock,
    downsample_v3,
    patch_embed_v1,
    patch_embed_v2,
)
from qmamba.nn.layers import QuantLinear

__all__ = ["VSSM"]

_VERSIONS = {
    # forward_type, channel_first, mlp_ratio, downsample, stem, ssm_conv_bias
    "v0": ("v0", False, 0.0, "v1", "v1", True),
    "v2": ("v05_noz", True, 4.0, "v3", "v2", False),
}


def _stage(dim: int, next_dim: int | None, drop_paths: list[float], downsample: str,
           block_args: dict) -> nn.Sequential:
    """One stage: its VSS blocks, then the downsample to `next_dim` (identity after the
    last stage). Built in this order, so the state-dict keys and the random init are
    upstream's."""
    blocks = nn.Sequential(*[VSSBlock(dim, drop_path=dp, **block_args) for dp in drop_paths])
    if next_dim is None:
        down = nn.Identity()
    elif downsample == "v1":
        down = PatchMerging2D(dim, next_dim)
    else:
        down = downsample_v3(dim, next_dim)
    return nn.Sequential(OrderedDict(blocks=blocks, downsample=down))


class VSSM(nn.Module, QuantizableModel, AdaptsCheckpoints):
    """VMamba classifier: stem -> 4 stages of VSS blocks (+ downsample) -> classifier.

    `version="v0"` builds the vanilla models, `version="v2"` the v05_noz ones; the other
    keyword arguments are the sizes (dims may be an int: stage i has dims * 2**i).
    Input (B, in_chans, H, W), output (B, num_classes): the ImageNet-1k classes when
    num_classes is 1000, generic classes otherwise (`label_set`).
    """

    family = "vmamba"

    def __init__(
        self,
        version: str = "v2",
        num_classes: int = 1000,
        img_size: int = 224,
        in_chans: int = 3,
        patch_size: int = 4,
        dims: int | list[int] = 96,
        depths: tuple[int, ...] = (2, 2, 9, 2),
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        dt_rank: int | str = "auto",
        ssm_conv: int = 3,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if version not in _VERSIONS:
            raise ValueError(f"unknown VMamba version {version!r}; known: {sorted(_VERSIONS)}")
        forward_type, channel_first, mlp_ratio, downsample, stem, conv_bias = _VERSIONS[version]
        self.version = version
        self.channel_first = channel_first
        self.num_classes = num_classes
        depths = list(depths)
        if isinstance(dims, int):
            dims = [dims * 2**i for i in range(len(depths))]
        dims = list(dims)
        if len(dims) != len(depths):
            raise ValueError(f"dims {dims} and depths {depths} differ in length")
        self.dims = dims
        self.num_features = dims[-1]
        self.default_cfg = self.pretrained_cfg = imagenet_data_config(img_size, in_chans, num_classes)
        self.label_set = label_set_for(IMAGENET_1K, num_classes)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # drop path

        make_stem = patch_embed_v1 if stem == "v1" else patch_embed_v2
        self.patch_embed = make_stem(in_chans, dims[0], patch_size)

        block_args = dict(channel_first=channel_first, mlp_ratio=mlp_ratio, d_state=d_state,
                          ssm_ratio=ssm_ratio, dt_rank=dt_rank, d_conv=ssm_conv, conv_bias=conv_bias,
                          forward_type=forward_type)
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            next_dim = dims[i + 1] if i < len(depths) - 1 else None
            self.layers.append(_stage(dims[i], next_dim, dpr[start:start + depth], downsample, block_args))

        self.classifier = nn.Sequential(OrderedDict(
            norm=LayerNorm2d(self.num_features) if channel_first else nn.LayerNorm(self.num_features),
            permute=nn.Identity() if channel_first else Permute(0, 3, 1, 2),
            avgpool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(1),
            head=QuantLinear(self.num_features, num_classes, tags=("last",)),
        ))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # upstream: every Linear (also the channel-first 1x1 ones) trunc-normal(0.02),
        # zero bias; LayerNorms 1/0; convs keep torch's default; SS2D's raw parameters
        # keep their Mamba-style init
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def quant_blocks(self) -> list[nn.Module]:
        """The modules calibrated one after another, in forward order: every VSS block
        and every downsample between stages; each maps the previous one's output to its
        own (see qmamba.quant.engine)."""
        out: list[nn.Module] = []
        for layer in self.layers:
            out.extend(layer.blocks)
            if not isinstance(layer.downsample, nn.Identity):
                out.append(layer.downsample)
        return out

    def rotation_sites(self) -> RotationSites:
        """The rotation sites of every block's SS2D and MLP, in forward order."""
        declarers: list[DeclaresRotationSites] = []
        for layer in self.layers:
            for block in layer.blocks:
                declarers.append(block.op)
                if block.mlp_branch:
                    declarers.append(block.mlp)
        return merge_rotation_sites(declarers)

    def no_weight_decay_keywords(self) -> set[str]:
        return {"A_logs", "Ds"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, H/4, W/4, C) v0 / (B, C, H/4, W/4) v2
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, in_chans, H, W)
        return self.classifier(self.forward_features(x))  # (B, num_classes)

    # ------------------------------------------------------------ checkpoint keys
    _LEGACY_RENAMES = (
        (re.compile(r"^patch_embed\.proj"), "patch_embed.0"),
        (re.compile(r"^patch_embed\.norm"), "patch_embed.2"),
        (re.compile(r"^(layers\.\d+\.blocks\.\d+\.)ln_1"), r"\1norm"),
        (re.compile(r"^(layers\.\d+\.blocks\.\d+\.)self_attention"), r"\1op"),
        (re.compile(r"^norm"), "classifier.norm"),
        (re.compile(r"^head"), "classifier.head"),
    )

    def filter_state_dict(self, state_dict: dict) -> dict:
        """Map a released/legacy state dict onto this model's keys and shapes (new dict).

        Renames legacy keys as upstream's loader does (`patch_embed.proj/norm` ->
        `patch_embed.0/2`, `ln_1` -> `norm`, `self_attention` -> `op`, top-level `norm`
        and `head` -> `classifier.norm` / `classifier.head`) and reshapes 1x1-conv
        weights stored as (out, in, 1, 1) to our Linear shape (out, in).
        """
        own = {k: v.shape for k, v in self.state_dict().items()}
        out = {}
        for key, value in state_dict.items():
            if key not in own:
                for pattern, repl in self._LEGACY_RENAMES:
                    key = pattern.sub(repl, key)
            target = own.get(key)
            if (
                target is not None
                and isinstance(value, torch.Tensor)
                and value.dim() == 4
                and len(target) == 2
                and tuple(value.shape) == (*target, 1, 1)
            ):
                value = value.reshape(target)  # (out, in, 1, 1) -> (out, in)
            out[key] = value
        return out


# ------------------------------------------------------------------------ variants
def _build(version: str, defaults: dict, kwargs: dict) -> VSSM:
    cfg = dict(defaults)
    cfg.update(kwargs)
    return VSSM(version=version, **cfg)


_V0 = dict(d_state=16, ssm_ratio=2.0, patch_size=4)
_V2_S2 = dict(d_state=1, ssm_ratio=2.0, patch_size=4)
_V2_S1 = dict(d_state=1, ssm_ratio=1.0, patch_size=4)


@register_model("vmamba_tiny_v0", aliases=("vanilla_vmamba_tiny",))
def vmamba_tiny_v0(**kwargs) -> VSSM:
    """Vanilla VMamba-T (82.2%, vssmtiny_dp01_ckpt_epoch_292.pth)."""
    return _build("v0", dict(_V0, dims=96, depths=(2, 2, 9, 2), drop_path_rate=0.2), kwargs)


@register_model("vmamba_small_v0", aliases=("vanilla_vmamba_small",))
def vmamba_small_v0(**kwargs) -> VSSM:
    """Vanilla VMamba-S (83.5%, vssmsmall_dp03_ckpt_epoch_238.pth)."""
    return _build("v0", dict(_V0, dims=96, depths=(2, 2, 27, 2), drop_path_rate=0.3), kwargs)


@register_model("vmamba_base_v0", aliases=("vanilla_vmamba_base",))
def vmamba_base_v0(**kwargs) -> VSSM:
    """Vanilla VMamba-B (83.7%, vssmbase_dp06_ckpt_epoch_241.pth)."""
    return _build("v0", dict(_V0, dims=128, depths=(2, 2, 27, 2), drop_path_rate=0.6), kwargs)


@register_model("vmamba_tiny_s2l5")
def vmamba_tiny_s2l5(**kwargs) -> VSSM:
    """VMamba-T[s2l5] (82.5%, vssm_tiny_0230_ckpt_epoch_262.pth)."""
    return _build("v2", dict(_V2_S2, dims=96, depths=(2, 2, 5, 2), drop_path_rate=0.2), kwargs)


@register_model("vmamba_small_s2l15")
def vmamba_small_s2l15(**kwargs) -> VSSM:
    """VMamba-S[s2l15] (83.6%, vssm_small_0229_ckpt_epoch_222.pth)."""
    return _build("v2", dict(_V2_S2, dims=96, depths=(2, 2, 15, 2), drop_path_rate=0.3), kwargs)


@register_model("vmamba_base_s2l15")
def vmamba_base_s2l15(**kwargs) -> VSSM:
    """VMamba-B[s2l15] (83.9%, vssm_base_0229_ckpt_epoch_237.pth)."""
    return _build("v2", dict(_V2_S2, dims=128, depths=(2, 2, 15, 2), drop_path_rate=0.6), kwargs)


@register_model("vmamba_tiny_s1l8")
def vmamba_tiny_s1l8(**kwargs) -> VSSM:
    """VMamba-T[s1l8] (82.6%, vssm1_tiny_0230s_ckpt_epoch_264.pth)."""
    return _build("v2", dict(_V2_S1, dims=96, depths=(2, 2, 8, 2), drop_path_rate=0.2), kwargs)


@register_model("vmamba_small_s1l20")
def vmamba_small_s1l20(**kwargs) -> VSSM:
    """VMamba-S[s1l20] (83.3%, vssm1_small_0229s_ckpt_epoch_240.pth)."""
    return _build("v2", dict(_V2_S1, dims=96, depths=(2, 2, 20, 2), drop_path_rate=0.3), kwargs)


@register_model("vmamba_base_s1l20")
def vmamba_base_s1l20(**kwargs) -> VSSM:
    """VMamba-B[s1l20] (83.8%, vssm1_base_0229s_ckpt_epoch_225.pth)."""
    return _build("v2", dict(_V2_S1, dims=128, depths=(2, 2, 20, 2), drop_path_rate=0.5), kwargs)
