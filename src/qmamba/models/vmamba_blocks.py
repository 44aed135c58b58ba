"""Building blocks of VMamba (MzeroMiko/VMamba), pure PyTorch, with quantization points.

Two released families share these blocks:
- vanilla "v0" models: channels-last tensors (B, H, W, C), `in_proj` a Linear with a gate
  branch z, depthwise conv with bias, out_norm then `y * silu(z)`, patch-merging
  downsample, no MLP;
- "v2" models (forward type `v05_noz`): channel-first tensors (B, C, H, W), 1x1
  projections stored as Linear weights (out, in) and applied over channels, depthwise
  conv without bias, no z, out_norm then out_proj, an MLP after every SS2D.

Both scan four directions of the (H, W) grid: row-major, column-major and the two
reversed ones. `cross_scan` / `cross_merge` are the index gymnastics; the scan itself
goes through `qmamba.models.ssm.selective_ssm` with the four direction sequences stacked
along channels (direction k owns channels [k*E, (k+1)*E)) and B/C grouped by direction.
Parameter names and shapes are upstream's, so released checkpoints load strictly.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from qmamba.models.contract import (
    DeclaresRotationSites,
    HasRawWeightPoints,
    QuantBlock,
    RotationSites,
)
from qmamba.models.layers import LayerNorm2d, at_least_float32
from qmamba.models.ssm import selective_ssm
from qmamba.nn.layers import QuantConv2d, QuantLinear
from qmamba.nn.point import QuantPoint
from qmamba.nn.ssm_points import SSMQuantPoints

K_DIRECTIONS = 4


# ----------------------------------------------------------------------------- helpers
class Permute(nn.Module):
    """Permutes dimensions; holds no parameters (keeps upstream's Sequential indices)."""

    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class QuantLinear2d(QuantLinear):
    """A Linear over the channels of a (B, C, H, W) tensor; weight stored as (out, in).

    Computed as a 1x1 convolution (the upstream arithmetic). Its input point sees the
    channel-first tensor (channel axis 1); its weight point sees the (out, in) weight.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.input_quant is not None:
            self.input_quant.channel_axis = 1
        self.input_rotation.channel_axis = 1
        if self.input_rotation.quant is not None:
            self.input_rotation.quant.channel_axis = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        x = self.input_rotation(x)  # (B, C, H, W), rotated over C when a recipe says so
        w = self.weight_quant(self.weight)  # (out, in)
        return F.conv2d(self._q_input(x), w[:, :, None, None], self.bias)  # (B, out, H, W)


def _norm(dim: int, channel_first: bool) -> nn.LayerNorm:
    return LayerNorm2d(dim) if channel_first else nn.LayerNorm(dim)


def _linear(channel_first: bool):
    return QuantLinear2d if channel_first else QuantLinear


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4, C, H*W): row-major, column-major, and both reversed."""
    row = x.flatten(2)  # (B, C, L), position h*W + w
    col = x.transpose(2, 3).flatten(2)  # (B, C, L), position w*H + h
    fwd = torch.stack([row, col], dim=1)  # (B, 2, C, L)
    return torch.cat([fwd, fwd.flip(-1)], dim=1)  # (B, 4, C, L)


def cross_merge(ys: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, 4, C, H*W) -> (B, C, H, W): undo each direction's order and SUM the four."""
    b, _, c, l = ys.shape
    ys = ys[:, 0:2] + ys[:, 2:4].flip(-1)  # (B, 2, C, L): row-major, column-major orders
    col = ys[:, 1].reshape(b, c, W, H).transpose(2, 3)  # (B, C, H, W)
    return ys[:, 0].reshape(b, c, H, W) + col  # (B, C, H, W)


# ------------------------------------------------------------------------------- SS2D
def _dt_bias_init(d_inner: int, dt_min=1e-3, dt_max=0.1, dt_floor=1e-4) -> torch.Tensor:
    """Bias whose softplus is log-uniform in [dt_min, dt_max] (Mamba's dt init)."""
    log_dt = torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    dt = torch.exp(log_dt).clamp(min=dt_floor)  # (d_inner,)
    return dt + torch.log(-torch.expm1(-dt))  # inverse softplus


class SS2D(nn.Module, DeclaresRotationSites, HasRawWeightPoints):
    """2D selective scan ("SS2D") of VMamba, forward types `v0` and `v05_noz`.

    `forward_type="v0"` (channels-last, gated) or `"v05_noz"` (channel-first, no gate).
    Input and output: (B, H, W, C) for v0, (B, C, H, W) for v05_noz.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        dt_rank: int | str = "auto",
        d_conv: int = 3,
        conv_bias: bool = True,
        forward_type: str = "v0",
    ):
        super().__init__()
        if forward_type not in ("v0", "v05_noz"):
            raise ValueError(f"unsupported SS2D forward_type {forward_type!r} (v0, v05_noz)")
        self.forward_type = forward_type
        self.has_z = forward_type == "v0"
        self.channel_first = not self.has_z
        self.d_model = int(d_model)
        self.d_state = int(d_state)
        self.d_inner = d_inner = int(ssm_ratio * d_model)
        # dt rank follows the block width d_model, also when d_inner = 2 * d_model
        self.dt_rank = R = int(math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank)
        N, K = self.d_state, K_DIRECTIONS
        Linear = _linear(self.channel_first)

        if self.channel_first:  # upstream registers v2's out_norm first (state-dict order)
            self.out_norm = _norm(d_inner, self.channel_first)
        self.in_proj = Linear(d_model, d_inner * (2 if self.has_z else 1), bias=False)
        # the conv's input point sees the in_proj output
        self.conv2d = QuantConv2d(
            d_inner, d_inner, kernel_size=d_conv, padding=(d_conv - 1) // 2,
            groups=d_inner, bias=conv_bias,
        )
        self.act = nn.SiLU()
        if not self.channel_first:
            self.out_norm = _norm(d_inner, self.channel_first)
        self.out_proj = Linear(d_inner, d_model, bias=False)

        self._init_raw_parameters(K, R, N, d_inner)

        # quantization points of the scan and of the raw parameters
        # (the u point sees (B, E, H, W) before the cross scan: channel axis 1)
        self.quant = SSMQuantPoints(has_z=self.has_z, directions=K)
        if self.has_z:  # v0 gates after out_norm, on channels-last silu(z) (B, H, W, E)
            self.quant.z.channel_axis = -1
        # stacked (directions, out, in) weights: per-channel scales keep dims 0 and 1;
        # `weight_point_params` names the parameter each weight point quantizes (serialize)
        self.weight_point_params = {"quant_x_proj_weight": "x_proj_weight",
                                    "quant_dt_projs_weight": "dt_projs_weight"}
        self.quant_x_proj_weight = QuantPoint("weight", weight_channel_dims=(0, 1))
        self.quant_dt_projs_weight = QuantPoint("weight", weight_channel_dims=(0, 1))
        self.quant_dt_r = QuantPoint("linear_input", channel_axis=2)  # dt_r: (B, K, R, L)

    def _init_raw_parameters(self, K: int, R: int, N: int, d_inner: int) -> None:
        """The raw per-direction parameters, exactly upstream's names, shapes, order and init."""
        bound = d_inner**-0.5  # nn.Linear's default init of the x projections
        self.x_proj_weight = nn.Parameter(
            torch.empty(K, R + 2 * N, d_inner).uniform_(-bound, bound)
        )  # (K, R+2N, E)
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(K * d_inner, 1)  # (K*E, N)
        self.A_logs = nn.Parameter(torch.log(A))  # (K*E, N)
        self.Ds = nn.Parameter(torch.ones(K * d_inner))  # (K*E,)
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True
        self.dt_projs_weight = nn.Parameter(
            torch.empty(K, d_inner, R).uniform_(-(R**-0.5), R**-0.5)
        )  # (K, E, R)
        self.dt_projs_bias = nn.Parameter(
            torch.stack([_dt_bias_init(d_inner) for _ in range(K)])
        )  # (K, E)

    def rotation_sites(self) -> RotationSites:
        """The Linear inputs the rotating recipes may transform (qmamba.quant.methods.outliers):
        in_proj reads the normed block input, out_proj the (normed) scan output."""
        return {"norm_input": [self.in_proj], "ssm_output": [self.out_proj]}

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """u = silu(conv(.)) (B, E, H, W) -> merged scan output (B, E, H, W)."""
        b, E, H, W = x.shape
        L, N, R, K = H * W, self.d_state, self.dt_rank, K_DIRECTIONS
        x = self.quant.u(x)  # (B, E, H, W): u feeds the x projections and the scan
        xs = cross_scan(x)  # (B, K, E, L)
        x_dbl = torch.einsum(
            "bkdl,kcd->bkcl", xs, self.quant_x_proj_weight(self.x_proj_weight)
        )  # (B, K, R+2N, L)
        dt_r, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)  # (B, K, R|N|N, L)
        dts = torch.einsum(
            "bkrl,kdr->bkdl", self.quant_dt_r(dt_r), self.quant_dt_projs_weight(self.dt_projs_weight)
        )  # (B, K, E, L)
        ys = selective_ssm(
            self.quant,
            xs.reshape(b, K * E, L),  # (B, K*E, L)
            dts.reshape(b, K * E, L),  # (B, K*E, L)
            -torch.exp(at_least_float32(self.A_logs)),  # (K*E, N)
            Bs.contiguous(),  # (B, K, N, L)
            Cs.contiguous(),  # (B, K, N, L)
            at_least_float32(self.Ds),  # (K*E,)
            at_least_float32(self.dt_projs_bias).flatten(),  # (K*E,)
        )  # (B, K*E, L)
        return cross_merge(ys.view(b, K, E, L), H, W)  # (B, E, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_z:  # v0: x (B, H, W, C)
            x, z = self.in_proj(x).chunk(2, dim=-1)  # (B, H, W, E) each
            x = self.act(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))  # (B, E, H, W)
            y = self.forward_core(x).permute(0, 2, 3, 1)  # (B, H, W, E)
            y = self.out_norm(y) * self.quant.z(self.act(z))  # (B, H, W, E)
            return self.out_proj(y)  # (B, H, W, C)
        # v05_noz: x (B, C, H, W)
        x = self.act(self.conv2d(self.in_proj(x)))  # (B, E, H, W)
        y = self.out_norm(self.forward_core(x))  # (B, E, H, W)
        return self.out_proj(y)  # (B, C, H, W)

    def norm_linear_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """v05_noz: out_norm feeds out_proj directly (v0 gates in between: no pair)."""
        return [] if self.has_z else [(self.out_norm, self.out_proj)]


# ------------------------------------------------------------------------ block, MLP
class Mlp(nn.Module, DeclaresRotationSites):
    """fc1 -> exact (erf) GELU -> fc2."""

    def __init__(self, dim: int, hidden: int, channel_first: bool):
        super().__init__()
        Linear = _linear(channel_first)
        self.fc1 = Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden, dim)

    def rotation_sites(self) -> RotationSites:
        """fc1 reads the normed block input; fc2 reads the GELU output (qmamba.quant.methods.outliers)."""
        return {"norm_input": [self.fc1], "inner": [self.fc2]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module, QuantBlock):
    """x = x + drop_path(op(norm(x))); x = x + drop_path(mlp(norm2(x))) (if mlp_ratio > 0)."""

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        channel_first: bool = False,
        mlp_ratio: float = 0.0,
        **ss2d_kwargs,
    ):
        super().__init__()
        self.norm = _norm(dim, channel_first)
        self.op = SS2D(dim, **ss2d_kwargs)
        if self.op.channel_first != channel_first:
            raise ValueError("SS2D forward type and block layout disagree")
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp_branch = mlp_ratio > 0
        if self.mlp_branch:
            self.norm2 = _norm(dim, channel_first)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), channel_first)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        if self.mlp_branch:
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x

    def norm_linear_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(norm, linear) pairs whose linear input point sees exactly the norm's output:
        norm -> op.in_proj, the SS2D's own pairs, norm2 -> mlp.fc1."""
        pairs = [(self.norm, self.op.in_proj), *self.op.norm_linear_pairs()]
        if self.mlp_branch:
            pairs.append((self.norm2, self.mlp.fc1))
        return pairs


# -------------------------------------------------------------- stems and downsampling
class PatchMerging2D(nn.Module, QuantBlock):
    """v1 downsample, channels-last: 2x2 neighbours concatenated -> LayerNorm(4C) -> Linear."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.reduction = QuantLinear(4 * dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, C)
        H, W = x.shape[1:3]
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))  # (B, H', W', C), even sizes
        # this order of the four neighbours is what the released weights expect
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1
        )  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))  # (B, H/2, W/2, out_dim)

    def norm_linear_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """LayerNorm(4C) feeds the reduction directly."""
        return [(self.norm, self.reduction)]


class DownsampleV3(nn.Sequential, QuantBlock):
    """v3 downsample, channel-first: conv3x3 s2 p1 -> LayerNorm (keys `1.*`, `3.*`;
    a Sequential with upstream's indices, the Identity slots kept for them)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__(
            nn.Identity(),
            QuantConv2d(dim, out_dim, kernel_size=3, stride=2, padding=1),
            nn.Identity(),
            LayerNorm2d(out_dim),
        )

    def norm_linear_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """None: the norm comes after the conv."""
        return []


def downsample_v3(dim: int, out_dim: int) -> DownsampleV3:
    """v3 downsample, channel-first: conv3x3 s2 p1 -> LayerNorm (keys `1.*`, `3.*`)."""
    return DownsampleV3(dim, out_dim)


def patch_embed_v1(in_chans: int, dim: int, patch_size: int) -> nn.Sequential:
    """v1 stem: conv k=s=patch (bias) -> channels-last LayerNorm (keys `0.*`, `2.*`)."""
    return nn.Sequential(
        QuantConv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size, tags=("first",)),
        Permute(0, 2, 3, 1),
        nn.LayerNorm(dim),
    )


def patch_embed_v2(in_chans: int, dim: int, patch_size: int) -> nn.Sequential:
    """v2 stem: conv-LN-GELU-conv-LN, each conv k=s+1, s=patch/2, p=1 (keys 0, 2, 5, 7)."""
    stride = patch_size // 2
    k = stride + 1
    return nn.Sequential(
        QuantConv2d(in_chans, dim // 2, kernel_size=k, stride=stride, padding=1, tags=("first",)),
        nn.Identity(),
        LayerNorm2d(dim // 2),
        nn.Identity(),
        nn.GELU(),
        QuantConv2d(dim // 2, dim, kernel_size=k, stride=stride, padding=1),
        nn.Identity(),
        LayerNorm2d(dim),
    )
