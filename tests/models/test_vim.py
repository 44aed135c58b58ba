"""Vim: variants, upstream state-dict layout, quantization points, and the eval math
checked against an independent token-by-token implementation."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qmamba
from qmamba.models import ssm as ssm_module
from qmamba.models.builtin import BUILTIN_MODELS
from qmamba.models.registry import imagenet_data_config, list_models, register_with_timm
from qmamba.models.vim import VisionMamba
from qmamba.nn.point import QuantPoint, iter_points
from qmamba.nn.rotation import idle_rotation_points
from qmamba.nn.ssm_points import SSMQuantPoints

VIM_NAMES = [
    n for n in list_models() if n.startswith("vim_") and n not in BUILTIN_MODELS
]
SMALL = {"img_size": 32, "depth": 2}


def _naive_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, return_last_state=False):
    """Stand-in for qmamba.ops.selective_scan while that module is being written."""
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float32)  # (b, d, n)
    ys = []
    for t in range(u.shape[-1]):
        dA = torch.exp(delta[:, :, t, None] * A)  # (b, d, n)
        dBu = delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None].float()  # (b, d, n)
        h = dA * h + dBu
        ys.append((h * C[:, None, :, t]).sum(-1))  # (b, d)
    y = torch.stack(ys, dim=-1)  # (b, d, l)
    if D is not None:
        y = y + D.float()[None, :, None] * u.float()
    if z is not None:
        y = y * F.silu(z.float())
    return (y, h) if return_last_state else y


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: intra-op threads only add contention on shared CI cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _scan(monkeypatch):
    if not hasattr(ssm_module.ops, "selective_scan"):
        monkeypatch.setattr(
            ssm_module.ops, "selective_scan", _naive_selective_scan, raising=False
        )


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- variants and layout


@pytest.mark.parametrize("name", VIM_NAMES)
def test_variant_builds_and_runs_small(name):
    torch.manual_seed(0)
    model = qmamba.create_model(name, num_classes=7, **SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    assert model.num_classes == 7
    assert model.default_cfg["input_size"] == (3, 32, 32)
    assert model.pretrained_cfg is model.default_cfg


def test_variant_names_and_aliases():
    assert set(VIM_NAMES) == {
        "vim_tiny", "vim_tiny_stride8", "vim_small", "vim_small_stride8", "vim_base"
    }
    for name, embed_dim in [
        ("vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2", 192),
        ("vim_small_patch16_stride8_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2", 384),
        ("vim_base_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_middle_cls_token_div2", 768),
    ]:
        model = qmamba.create_model(name, **SMALL)
        assert model.embed_dim == embed_dim


def _expected_vim_t_shapes() -> dict[str, tuple[int, ...]]:
    D, E, N, R = 192, 384, 16, 12
    shapes = {
        "cls_token": (1, 1, D),
        "pos_embed": (1, 197, D),
        "patch_embed.proj.weight": (D, 3, 16, 16),
        "patch_embed.proj.bias": (D,),
        "head.weight": (1000, D),
        "head.bias": (1000,),
        "norm_f.weight": (D,),
    }
    for i in range(24):
        p = f"layers.{i}."
        shapes[p + "norm.weight"] = (D,)
        shapes[p + "mixer.in_proj.weight"] = (2 * E, D)
        shapes[p + "mixer.out_proj.weight"] = (D, E)
        for suffix, a_log in (("", "A_log"), ("_b", "A_b_log")):
            shapes[p + f"mixer.conv1d{suffix}.weight"] = (E, 1, 4)
            shapes[p + f"mixer.conv1d{suffix}.bias"] = (E,)
            shapes[p + f"mixer.x_proj{suffix}.weight"] = (R + 2 * N, E)
            shapes[p + f"mixer.dt_proj{suffix}.weight"] = (E, R)
            shapes[p + f"mixer.dt_proj{suffix}.bias"] = (E,)
            shapes[p + f"mixer.{a_log}"] = (E, N)
            shapes[p + f"mixer.D{suffix}"] = (E,)
    return shapes


def test_vim_tiny_state_dict_is_upstream():
    with torch.device("meta"):
        model = qmamba.create_model("vim_tiny")
    sd = model.state_dict()
    expected = _expected_vim_t_shapes()
    assert len(expected) == 415
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert list(model.buffers()) == []


@pytest.mark.parametrize(
    "name, millions, cls_index, tokens",
    [
        ("vim_tiny", 7.15, 98, 197),
        ("vim_tiny_stride8", 7.25, 364, 730),
        ("vim_small", 25.8, 98, 197),
        ("vim_small_stride8", 26.0, 364, 730),
        ("vim_base", 97.6, 98, 197),
    ],
)
def test_full_size_params_and_class_token(name, millions, cls_index, tokens):
    with torch.device("meta"):
        model = qmamba.create_model(name)
    assert abs(_count(model) / 1e6 - millions) < 0.01
    assert model.cls_index == cls_index
    assert model.pos_embed.shape[1] == tokens


def test_state_dict_round_trip_strict():
    torch.manual_seed(0)
    a = qmamba.create_model("vim_tiny_stride8", **SMALL).eval()
    torch.manual_seed(1)
    b = qmamba.create_model("vim_tiny_stride8", **SMALL).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_timm_create_model():
    timm = pytest.importorskip("timm")
    register_with_timm()  # idempotent; the package may already have done it on import
    model = timm.create_model("vim_tiny", img_size=32, depth=2, num_classes=5)
    assert isinstance(model, VisionMamba)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_init_like_upstream():
    torch.manual_seed(0)
    model = qmamba.create_model("vim_small", num_classes=10, **SMALL)
    mixer = model.layers[0].mixer
    log_n = torch.log(torch.arange(1, 17, dtype=torch.float32))
    for a_log, d, dt_proj in ((mixer.A_log, mixer.D, mixer.dt_proj),
                              (mixer.A_b_log, mixer.D_b, mixer.dt_proj_b)):
        assert torch.equal(a_log, log_n.expand(768, 16))
        assert torch.equal(d, torch.ones(768))
        dt = F.softplus(dt_proj.bias)
        assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
        assert dt_proj.weight.abs().max() <= mixer.dt_rank**-0.5
    assert torch.equal(model.head.bias, torch.zeros(10))
    assert model.pos_embed.std() < 0.03


# ---------------------------------------------------------------- quantization points


def test_quant_points_at_documented_names():
    model = qmamba.create_model("vim_tiny", **SMALL)
    mixer = model.layers[1].mixer
    for branch in (mixer.forward_branch, mixer.backward_branch):
        assert isinstance(branch.quant, SSMQuantPoints)
        assert list(branch.parameters()) == []
        assert branch.quant.h.role == "ssm.h" and branch.quant.z.role == "ssm.z"
    for layer in ("in_proj", "conv1d", "conv1d_b", "dt_proj", "dt_proj_b", "out_proj"):
        assert getattr(mixer, layer).input_quant.role == "linear_input"
        assert getattr(mixer, layer).weight_quant.role == "weight"
    assert mixer.x_proj.input_quant is None and mixer.x_proj_b.input_quant is None
    assert model.patch_embed.proj.weight_quant.tags == {"first"}
    assert model.patch_embed.proj.input_quant.tags == {"first"}
    assert model.head.weight_quant.tags == {"last"}
    names = dict(iter_points(model))
    assert "layers.1.mixer.forward_branch.quant.h" in names
    assert "layers.0.mixer.backward_branch.quant.u" in names
    assert "layers.1.mixer.x_proj_b.weight_quant" in names


def test_points_are_identity_by_default():
    torch.manual_seed(0)
    model = qmamba.create_model("vim_tiny", num_classes=10, **SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    calls = []

    class Spy(nn.Module):
        def forward(self, t):
            calls.append(t.shape)
            return t

    # Points outside the scan recurrence (layer inputs/weights, u) see their tensors;
    # with identity quantizers the output is bit-identical. The points of x_proj's
    # rotation slots are used only while a recipe rotates x_proj's input.
    idle = idle_rotation_points(model)
    assert len(idle) == 2 * len(model.layers)  # x_proj, x_proj_b
    for _, point in iter_points(model):
        if point.role in ("weight", "linear_input", "ssm.u"):
            point.quantizer = Spy()
    with torch.no_grad():
        out = model(x)
    assert torch.equal(out, ref)
    assert len(calls) == sum(
        p.role in ("weight", "linear_input", "ssm.u") and id(p) not in idle for _, p in iter_points(model)
    )


def test_identity_points_through_quantized_scan_path():
    """Activating the scan's own points sends each direction through ops.quantized_scan;
    with identity quantizers that path gives the float result."""
    if not hasattr(ssm_module.ops, "quantized_scan"):
        pytest.skip("qmamba.ops.quantized_scan not available yet")
    torch.manual_seed(0)
    model = qmamba.create_model("vim_tiny_stride8", num_classes=10, **SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        for _, point in iter_points(model):
            if point.role in ("ssm.delta", "ssm.C", "ssm.y", "ssm.z"):
                point.quantizer = nn.Identity()
        assert model.layers[0].mixer.backward_branch.quant.active
        out = model(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- math


def _naive_vim(model: VisionMamba, img: torch.Tensor) -> torch.Tensor:
    """Token-by-token float64 Vim forward from the parameters (independent of vim.py)."""
    P = {k: v.double() for k, v in model.state_dict().items()}
    img = img.double()
    k = P["patch_embed.proj.weight"].shape[-1]
    s = model.patch_embed.proj.stride[0]
    side = (img.shape[-1] - k) // s + 1
    tokens = [
        torch.einsum("bchw,dchw->bd", img[:, :, i * s:i * s + k, j * s:j * s + k],
                     P["patch_embed.proj.weight"]) + P["patch_embed.proj.bias"]
        for i in range(side) for j in range(side)
    ]
    mid = len(tokens) // 2
    tokens = tokens[:mid] + [P["cls_token"][0, 0].expand_as(tokens[0])] + tokens[mid:]
    tokens = [t + P["pos_embed"][0, i] for i, t in enumerate(tokens)]

    def rms(t, w):
        return t / torch.sqrt((t * t).mean(-1, keepdim=True) + 1e-5) * w

    def run(xs, zs, m, suffix, a_log_name, d_name):
        w = P[m + f"conv1d{suffix}.weight"][:, 0]  # (E, K)
        K = w.shape[-1]
        A = -torch.exp(P[m + a_log_name])  # (E, N)
        N = A.shape[1]
        R = P[m + f"dt_proj{suffix}.weight"].shape[1]
        h = torch.zeros(xs[0].shape[0], A.shape[0], N, dtype=torch.float64)
        ys = []
        for t in range(len(xs)):
            c = P[m + f"conv1d{suffix}.bias"].clone()
            for j in range(K):
                src = t - (K - 1) + j
                if src >= 0:
                    c = c + w[:, j] * xs[src]
            u = F.silu(c)  # (b, E)
            xd = u @ P[m + f"x_proj{suffix}.weight"].T
            dt_r, Bt, Ct = xd[:, :R], xd[:, R:R + N], xd[:, R + N:]
            delta = F.softplus(dt_r @ P[m + f"dt_proj{suffix}.weight"].T
                               + P[m + f"dt_proj{suffix}.bias"])  # (b, E)
            h = torch.exp(delta[..., None] * A) * h + delta[..., None] * Bt[:, None] * u[..., None]
            y = (h * Ct[:, None]).sum(-1) + P[m + d_name] * u
            ys.append(y * F.silu(zs[t]))
        return ys

    residual = None
    hidden = tokens
    for i in range(len(model.layers)):
        m = f"layers.{i}.mixer."
        residual = hidden if residual is None else [r + h for r, h in zip(residual, hidden, strict=True)]
        normed = [rms(r, P[f"layers.{i}.norm.weight"]) for r in residual]
        xz = [t @ P[m + "in_proj.weight"].T for t in normed]
        E = xz[0].shape[-1] // 2
        xs, zs = [t[:, :E] for t in xz], [t[:, E:] for t in xz]
        yf = run(xs, zs, m, "", "A_log", "D")
        yb = run(xs[::-1], zs[::-1], m, "_b", "A_b_log", "D_b")[::-1]
        hidden = [((a + b) / 2) @ P[m + "out_proj.weight"].T for a, b in zip(yf, yb, strict=True)]
    out = rms(residual[mid] + hidden[mid], P["norm_f.weight"])
    return (out @ P["head.weight"].T + P["head.bias"]).float()


@pytest.mark.parametrize("depth, stride", [(1, 8), (2, 16)])
def test_matches_naive_token_loop(depth, stride):
    torch.manual_seed(0)
    model = VisionMamba(img_size=32, patch_size=16, stride=stride, depth=depth,
                        embed_dim=16, d_state=4, num_classes=5).eval()
    with torch.no_grad():  # make every parameter matter (upstream init leaves some trivial)
        for name, p in model.named_parameters():
            if name.endswith(("D", "D_b", "norm.weight", "norm_f.weight", "head.bias",
                              "conv1d.bias", "conv1d_b.bias")):
                p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out, _naive_vim(model, x), atol=1e-5, rtol=1e-5)


def test_mixer_directions_are_distinct():
    """Swapping the backward copies into the forward slots changes the output."""
    torch.manual_seed(0)
    model = VisionMamba(img_size=32, stride=8, depth=1, embed_dim=16, d_state=4,
                        num_classes=3).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        mixer = model.layers[0].mixer
        mixer.x_proj_b.weight.add_(1.0)
        assert not torch.allclose(model(x), ref)


# ---------------------------------------------------------------- pos_embed, training


def test_filter_state_dict_interpolates_pos_embed():
    torch.manual_seed(0)
    src = qmamba.create_model("vim_tiny", img_size=64, depth=1, num_classes=3)  # 4x4 grid
    dst = qmamba.create_model("vim_tiny", img_size=32, depth=1, num_classes=3)  # 2x2 grid
    sd = src.state_dict()
    with pytest.warns(UserWarning, match="4x4 grid to 2x2") as record:
        new = dst.filter_state_dict(sd)
    assert len(record) == 1
    pos = new["pos_embed"]
    assert pos.shape == (1, 5, 192)
    assert torch.equal(pos[0, dst.cls_index], sd["pos_embed"][0, src.cls_index])
    grid = torch.cat((sd["pos_embed"][:, :8], sd["pos_embed"][:, 9:]), 1)  # (1, 16, D)
    grid = grid.reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(2, 2), mode="bicubic", align_corners=False)
    want = want.flatten(2).transpose(1, 2)  # (1, 4, D)
    torch.testing.assert_close(torch.cat((pos[:, :2], pos[:, 3:]), 1), want)
    assert sd["pos_embed"].shape == (1, 17, 192)  # input not modified
    dst.load_state_dict(new, strict=True)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = dst.filter_state_dict(dst.state_dict())
    assert same["pos_embed"].shape == (1, 5, 192)


def test_drop_path_training_and_eval():
    torch.manual_seed(0)
    tiny = {"img_size": 32, "depth": 2, "embed_dim": 32, "d_state": 4, "num_classes": 4}
    model = VisionMamba(drop_path_rate=0.3, **tiny)
    plain = VisionMamba(**tiny)
    plain.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), plain.eval()(x))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    y = torch.tensor([0, 3])
    first = None
    for _ in range(8):
        loss = F.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert math.isfinite(loss.item()) and loss.item() < first


def test_data_config():
    model = qmamba.create_model("vim_small_stride8", **SMALL)
    cfg = imagenet_data_config(32, 3)
    assert {k: v for k, v in model.default_cfg.items() if k != "num_classes"} == {
        k: v for k, v in cfg.items() if k != "num_classes"
    }
    assert model.embed_dim == 384


def test_wrong_image_size_is_a_clear_error():
    model = qmamba.create_model("vim_tiny", **SMALL)
    with pytest.raises(qmamba.QMambaError, match="img_size=64"):
        model(torch.randn(1, 3, 64, 64))


def test_quant_point_is_identity_module():
    point = QuantPoint("ssm.h")
    t = torch.randn(3)
    assert point(t) is t
