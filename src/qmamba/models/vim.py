"""Vim (Vision Mamba, hustvl/Vim) in pure PyTorch, with explicit quantization points.

Same parameter names and shapes as the released checkpoints (`load_state_dict(strict=True)`
accepts them) and the same eval-mode math as upstream's `VisionMamba` with
`bimamba_type="v2"`, `if_divide_out=True`, `use_middle_cls_token=True`, RMSNorm, residual
in float32 and fused add+norm semantics (see shared/docs/architectures.md, "Vim").

Layout: tokens are (B, L, D); the selective scan works on (B, E, L) with E = expand * D.
Every layer that may be quantized is a Quant layer or calls a `QuantPoint`; the scan of
each direction goes through `qmamba.models.ssm.selective_ssm` with the points of
`mixer.forward_branch.quant` / `mixer.backward_branch.quant`.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from qmamba.errors import CheckpointError, QMambaError
from qmamba.models.contract import (
    AdaptsCheckpoints,
    DeclaresRotationSites,
    QuantBlock,
    QuantizableModel,
    RotationSites,
    merge_rotation_sites,
)
from qmamba.models.data_config import imagenet_data_config
from qmamba.models.labels import IMAGENET_1K, label_set_for
from qmamba.models.layers import RMSNorm, at_least_float32
from qmamba.models.registry import register_model
from qmamba.models.ssm import selective_ssm
from qmamba.nn.layers import QuantConv1d, QuantConv2d, QuantLinear
from qmamba.nn.ssm_points import SSMQuantPoints

__all__ = ["VisionMamba", "BiMambaMixer", "VimBlock", "PatchEmbed", "ScanBranch", "DropPath"]


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's whole branch with probability `p` (training only).

    Kept here rather than imported from timm so that `import qmamba` does not pay timm's
    import time.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, 1)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PatchEmbed(nn.Module):
    """Plain conv patch embedding (kernel `patch_size`, stride `stride`, no padding/norm)."""

    def __init__(self, img_size: int, patch_size: int, stride: int, in_chans: int, embed_dim: int):
        super().__init__()
        if img_size < patch_size:
            raise QMambaError(f"img_size {img_size} is smaller than patch_size {patch_size}")
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        side = (img_size - patch_size) // stride + 1
        self.grid_size = (side, side)
        self.num_patches = side * side
        self.proj = QuantConv2d(
            in_chans, embed_dim, kernel_size=patch_size, stride=stride, tags=("first",)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        if tuple(x.shape[-2:]) != self.img_size:
            raise QMambaError(
                f"input image size {tuple(x.shape[-2:])} does not match the model's "
                f"{self.img_size}; build the model with img_size={x.shape[-1]} or resize"
            )
        x = self.proj(x)  # (B, D, gh, gw)
        return x.flatten(2).transpose(1, 2)  # (B, M, D)


class ScanBranch(nn.Module):
    """One direction of the bidirectional mixer: no parameters, only its SSM points.

    The parameters of the direction (conv, x_proj, dt_proj, A_log, D) belong to the mixer
    (upstream names) and are passed in, so the state dict stays upstream's.
    """

    def __init__(self, dt_rank: int, d_state: int):
        super().__init__()
        self.dt_rank = dt_rank
        self.d_state = d_state
        self.quant = SSMQuantPoints(has_z=True)

    def forward(
        self,
        x: torch.Tensor,  # (B, E, L) conv input
        z: torch.Tensor,  # (B, E, L) gate input
        conv1d: QuantConv1d,
        x_proj: QuantLinear,
        dt_proj: QuantLinear,
        A_log: torch.Tensor,  # (E, N)
        D: torch.Tensor,  # (E,)
    ) -> torch.Tensor:  # (B, E, L)
        seqlen = x.shape[-1]
        u_float = F.silu(conv1d(x)[..., :seqlen])  # (B, E, L) causal: left context only
        u = self.quant.u(u_float)  # (B, E, L)
        # x_proj reads the quantized u, unless a recipe rotates its input: then its
        # rotation slot rotates the float u and quantizes it at its own point
        x_proj_in = u_float if x_proj.input_rotation.active else u
        x_dbl = x_proj(x_proj_in.transpose(1, 2))  # (B, L, R + 2N)
        dt_r, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        # dt_proj's bias is the scan's delta_bias, so only its matmul happens here.
        dt_in = dt_proj.input_quant(dt_proj.input_rotation(dt_r))  # (B, L, R)
        dt = F.linear(dt_in, dt_proj.weight_quant(dt_proj.weight))  # (B, L, E)
        A = -torch.exp(at_least_float32(A_log))  # (E, N)
        return selective_ssm(
            self.quant,
            u,
            dt.transpose(1, 2),  # (B, E, L)
            A,
            B.transpose(1, 2).contiguous(),  # (B, N, L)
            C.transpose(1, 2).contiguous(),  # (B, N, L)
            at_least_float32(D),
            at_least_float32(dt_proj.bias),
            z,
        )


class BiMambaMixer(nn.Module, DeclaresRotationSites):
    """Upstream `Mamba` with `bimamba_type="v2"` and `if_divide_out=True` (eval math)."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
    ):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        E, N, R = self.d_inner, d_state, self.dt_rank

        # Direct parameters first, then the layers, in upstream's order of attributes.
        self.A_log = nn.Parameter(_s4d_real_A_log(E, N))  # (E, N)
        self.D = nn.Parameter(torch.ones(E))  # (E,)
        self.A_b_log = nn.Parameter(_s4d_real_A_log(E, N))  # (E, N), spelled as upstream
        self.D_b = nn.Parameter(torch.ones(E))  # (E,)
        for p in (self.A_log, self.D, self.A_b_log, self.D_b):
            p._no_weight_decay = True

        self.in_proj = QuantLinear(d_model, 2 * E, bias=False)
        self.conv1d = _causal_depthwise_conv(E, d_conv)
        self.x_proj = QuantLinear(E, R + 2 * N, bias=False, quantize_input=False)
        self.dt_proj = QuantLinear(R, E, bias=True)
        self.conv1d_b = _causal_depthwise_conv(E, d_conv)
        self.x_proj_b = QuantLinear(E, R + 2 * N, bias=False, quantize_input=False)
        self.dt_proj_b = QuantLinear(R, E, bias=True)
        self.out_proj = QuantLinear(E, d_model, bias=False)
        for dt_proj in (self.dt_proj, self.dt_proj_b):
            _init_dt_proj(dt_proj, dt_min, dt_max, dt_init_floor)

        self.forward_branch = ScanBranch(R, N)
        self.backward_branch = ScanBranch(R, N)

    def rotation_sites(self) -> RotationSites:
        """The Linear inputs the rotating recipes may transform (qmamba.quant.methods.outliers):
        `norm_input` reads the normed residual stream, `ssm_output` the scan output,
        `inner` reads u; `folded`: (producer, rows, consumer) where the consumer's input
        is the producer's first `rows` outputs, so a rotation of it folds into them."""
        return {
            "norm_input": [self.in_proj],
            "ssm_output": [self.out_proj],
            "inner": [self.x_proj, self.x_proj_b],
            "folded": [(self.x_proj, self.dt_rank, self.dt_proj),
                       (self.x_proj_b, self.dt_rank, self.dt_proj_b)],
        }

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        xz = self.in_proj(hidden_states)  # (B, L, 2E)
        x, z = xz.transpose(1, 2).chunk(2, dim=1)  # (B, E, L) each
        y_f = self.forward_branch(
            x, z, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D
        )  # (B, E, L)
        y_b = self.backward_branch(
            x.flip(-1), z.flip(-1), self.conv1d_b, self.x_proj_b, self.dt_proj_b,
            self.A_b_log, self.D_b,
        ).flip(-1)  # (B, E, L), back in forward token order
        y = (y_f + y_b).transpose(1, 2) / 2  # (B, L, E)
        return self.out_proj(y)  # (B, L, D)


class VimBlock(nn.Module, QuantBlock):
    """Add -> RMSNorm -> mixer, returning (mixer output, residual) like upstream's Block.

    The residual is kept in float32; the first block takes the embedded tokens as its
    residual. Drop path (training only) acts on the previous block's output before the add.
    """

    def __init__(self, dim: int, d_state: int, drop_path: float, norm_eps: float, **mixer_kw):
        super().__init__()
        self.mixer = BiMambaMixer(dim, d_state=d_state, **mixer_kw)
        self.norm = RMSNorm(dim, eps=norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(
        self, hidden_states: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:  # (B, L, D) each
        if residual is None:
            residual = at_least_float32(hidden_states)  # (B, L, D)
        else:
            residual = residual + at_least_float32(self.drop_path(hidden_states))  # (B, L, D)
        normed = self.norm(residual.to(self.norm.weight.dtype))  # (B, L, D)
        return self.mixer(normed), residual

    def norm_linear_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(norm, linear) pairs whose linear input point sees exactly the norm's output
        (scale reparameterization folds per-channel factors across them)."""
        return [(self.norm, self.mixer.in_proj)]


class VisionMamba(nn.Module, QuantizableModel, AdaptsCheckpoints):
    """Vim with a middle class token, absolute position embedding and the bi-mamba v2 mixer.

    Its outputs are the ImageNet-1k classes when num_classes is 1000, generic classes
    otherwise (`label_set`, qmamba.models.labels); a factory that trains it on other data
    sets its own data config and label set (qmamba.models.builtin).
    """

    family = "vim"

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        stride: int = 16,
        depth: int = 24,
        embed_dim: int = 192,
        d_state: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-5,
        d_conv: int = 4,
        expand: int = 2,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = self.num_features = embed_dim
        self.default_cfg = self.pretrained_cfg = imagenet_data_config(img_size, in_chans, num_classes)
        self.label_set = label_set_for(IMAGENET_1K, num_classes)

        # Direct parameters first, then modules, in upstream's order of attributes.
        self.patch_embed = PatchEmbed(img_size, patch_size, stride, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_index = num_patches // 2  # the class token sits in the middle
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))  # (1, 1, D)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))  # (1, M+1, D)
        self.pos_drop = nn.Dropout(drop_rate)
        self.head = (
            QuantLinear(embed_dim, num_classes, tags=("last",)) if num_classes > 0 else nn.Identity()
        )
        # Upstream: block i drops the output of block i-1 with rate linspace(0, r, depth)[i-1].
        dpr = [0.0] + [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()
        self.layers = nn.ModuleList(
            VimBlock(embed_dim, d_state, dpr[i], norm_eps, d_conv=d_conv, expand=expand)
            for i in range(depth)
        )
        self.norm_f = RMSNorm(embed_dim, eps=norm_eps)
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        """Upstream's init: timm ViT-style stem/head/tokens, Mamba's mixer init (in __init__),
        and out_proj rescaled by 1/sqrt(depth) (GPT-2 prenorm-residual scheme)."""
        w = self.patch_embed.proj.weight
        # LeCun normal truncated at 2 std (TF's variance_scaling, as timm's lecun_normal_)
        std = math.sqrt(1.0 / nn.init._calculate_fan_in_and_fan_out(w)[0]) / 0.87962566103423978
        nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(self.patch_embed.proj.bias)
        if isinstance(self.head, nn.Linear):
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for layer in self.layers:
            out_proj = layer.mixer.out_proj
            nn.init.kaiming_uniform_(out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                out_proj.weight /= math.sqrt(depth)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        t = self.patch_embed(x)  # (B, M, D)
        p = self.cls_index
        cls = self.cls_token.expand(t.shape[0], -1, -1)  # (B, 1, D)
        t = torch.cat((t[:, :p], cls, t[:, p:]), dim=1)  # (B, M+1, D)
        t = self.pos_drop(t + self.pos_embed)  # (B, L, D)

        residual = None
        hidden = t  # (B, L, D)
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)  # (B, L, D) each
        residual = residual + at_least_float32(self.drop_path(hidden))  # (B, L, D)
        return self.norm_f(residual.to(self.norm_f.weight.dtype))  # (B, L, D)

    def quant_blocks(self) -> list[nn.Module]:
        """The blocks calibrated one after another: layer i maps (hidden, residual) of
        layer i-1 to its own (see qmamba.quant.engine)."""
        return list(self.layers)

    def rotation_sites(self) -> RotationSites:
        """The rotation sites of every layer's mixer, in layer order."""
        return merge_rotation_sites(layer.mixer for layer in self.layers)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, self.cls_index]  # (B, D)
        return x if pre_logits else self.head(x)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.forward_head(self.forward_features(x))

    def filter_state_dict(self, state_dict: dict) -> dict:
        """Fit an upstream state dict to this model: resize `pos_embed` to this model's grid.

        The patch-grid part is interpolated bicubically (square grids); the middle class
        token's embedding is kept as is and put back in the middle of the new sequence.
        """
        pos = state_dict.get("pos_embed")
        if pos is None or pos.shape[1] == self.pos_embed.shape[1]:
            return state_dict
        if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != self.embed_dim:
            raise CheckpointError(
                f"pos_embed of shape {tuple(pos.shape)} does not fit this model "
                f"(1, {self.pos_embed.shape[1]}, {self.embed_dim})"
            )
        old_m = pos.shape[1] - 1
        old_side = math.isqrt(old_m)
        if old_side * old_side != old_m:
            raise CheckpointError(
                f"pos_embed has {old_m} patch tokens, not a square grid; cannot resize it"
            )
        new_grid = self.patch_embed.grid_size
        warnings.warn(
            f"interpolating pos_embed from a {old_side}x{old_side} grid to "
            f"{new_grid[0]}x{new_grid[1]} (bicubic, middle class token kept)",
            stacklevel=2,
        )
        old_p = old_m // 2
        cls = pos[:, old_p : old_p + 1]  # (1, 1, D)
        grid = torch.cat((pos[:, :old_p], pos[:, old_p + 1 :]), dim=1)  # (1, M_old, D)
        grid = grid.reshape(1, old_side, old_side, -1).permute(0, 3, 1, 2)  # (1, D, s, s)
        grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False)
        grid = grid.flatten(2).transpose(1, 2).to(pos.dtype)  # (1, M_new, D)
        p = self.cls_index
        new_pos = torch.cat((grid[:, :p], cls, grid[:, p:]), dim=1)  # (1, M_new+1, D)
        out = dict(state_dict)
        out["pos_embed"] = new_pos
        return out


def _s4d_real_A_log(d_inner: int, d_state: int) -> torch.Tensor:
    """S4D-real init: A = -(1..N) for every channel, stored as log(1..N)."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)


def _causal_depthwise_conv(channels: int, kernel: int) -> QuantConv1d:
    # Padded on both sides like upstream; the branch keeps the first L outputs (causal).
    return QuantConv1d(
        channels, channels, kernel_size=kernel, groups=channels, padding=kernel - 1, bias=True
    )


def _init_dt_proj(dt_proj: nn.Linear, dt_min: float, dt_max: float, floor: float) -> None:
    """Mamba's dt init: weight ~ U(+-R^-0.5); softplus(bias) log-uniform in [dt_min, dt_max]."""
    std = dt_proj.in_features**-0.5
    nn.init.uniform_(dt_proj.weight, -std, std)
    log_dt = torch.rand(dt_proj.out_features) * (math.log(dt_max) - math.log(dt_min))
    dt = torch.exp(log_dt + math.log(dt_min)).clamp(min=floor)  # (E,)
    inv_softplus = dt + torch.log(-torch.expm1(-dt))  # (E,)
    with torch.no_grad():
        dt_proj.bias.copy_(inv_softplus)


_UPSTREAM_SUFFIX = "224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2"


def _build(embed_dim: int, stride: int, kwargs: dict) -> VisionMamba:
    args = {"embed_dim": embed_dim, "stride": stride, "patch_size": 16, "depth": 24}
    args.update(kwargs)
    return VisionMamba(**args)


@register_model("vim_tiny", aliases=(f"vim_tiny_patch16_{_UPSTREAM_SUFFIX}",))
def vim_tiny(**kwargs) -> VisionMamba:
    """Vim-T: D 192, stride 16 (vim_t_midclstok_76p1acc.pth)."""
    return _build(192, 16, kwargs)


@register_model("vim_tiny_stride8", aliases=(f"vim_tiny_patch16_stride8_{_UPSTREAM_SUFFIX}",))
def vim_tiny_stride8(**kwargs) -> VisionMamba:
    """Vim-T+: D 192, stride 8, 730 tokens (vim_t_midclstok_ft_78p3acc.pth)."""
    return _build(192, 8, kwargs)


@register_model("vim_small", aliases=(f"vim_small_patch16_{_UPSTREAM_SUFFIX}",))
def vim_small(**kwargs) -> VisionMamba:
    """Vim-S: D 384, stride 16 (vim_s_midclstok_80p5acc.pth)."""
    return _build(384, 16, kwargs)


@register_model("vim_small_stride8", aliases=(f"vim_small_patch16_stride8_{_UPSTREAM_SUFFIX}",))
def vim_small_stride8(**kwargs) -> VisionMamba:
    """Vim-S+: D 384, stride 8, 730 tokens (vim_s_midclstok_ft_81p6acc.pth)."""
    return _build(384, 8, kwargs)


@register_model(
    "vim_base",
    aliases=(
        # upstream spells this one "middle_cls_token"; accept the uniform spelling too
        "vim_base_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_middle_cls_token_div2",
        f"vim_base_patch16_{_UPSTREAM_SUFFIX}",
    ),
)
def vim_base(**kwargs) -> VisionMamba:
    """Vim-B: D 768, stride 16 (vim_b_midclstok_81p9acc.pth)."""
    return _build(768, 16, kwargs)
