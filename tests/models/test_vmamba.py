"""VMamba: variants, upstream state-dict layout, checkpoint key filter, quantization
points, and one SS2D checked against an independent pixel-by-pixel implementation of the
four-direction cross scan and merge."""
from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

import qmamba
from qmamba.models import vmamba_blocks
from qmamba.models.builtin import BUILTIN_MODELS
from qmamba.models.registry import imagenet_data_config, list_models, register_with_timm
from qmamba.models.vmamba import VSSM
from qmamba.models.vmamba_blocks import SS2D, cross_merge, cross_scan
from qmamba.nn.point import iter_points

VMAMBA_NAMES = [
    n for n in list_models() if n.startswith("vmamba_") and n not in BUILTIN_MODELS
]
V0_NAMES = [n for n in VMAMBA_NAMES if n.endswith("_v0")]
SMALL = {"dims": 8, "depths": (1, 1, 2, 1), "img_size": 32, "num_classes": 5}

# published parameter counts (MzeroMiko/VMamba assets/performance.md), in millions
PUBLISHED_PARAMS_M = {
    "vmamba_tiny_v0": 23, "vmamba_small_v0": 44, "vmamba_base_v0": 76,
    "vmamba_tiny_s2l5": 31, "vmamba_small_s2l15": 50, "vmamba_base_s2l15": 89,
    "vmamba_tiny_s1l8": 30, "vmamba_small_s1l20": 49, "vmamba_base_s1l20": 87,
}


def test_all_variants_registered_with_upstream_aliases():
    assert sorted(VMAMBA_NAMES) == sorted(PUBLISHED_PARAMS_M)
    for size in ("tiny", "small", "base"):
        assert type(qmamba.create_model(f"vanilla_vmamba_{size}", **SMALL)) is VSSM


@pytest.mark.parametrize("name", VMAMBA_NAMES)
def test_small_variant_builds_and_runs(name):
    torch.manual_seed(0)
    model = qmamba.create_model(name, **SMALL).eval()
    assert model.num_classes == 5
    assert model.default_cfg == model.pretrained_cfg == imagenet_data_config(32, 3, num_classes=5)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))  # (2, 5)
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_kwargs_dims_list_in_chans_patch_and_odd_sizes():
    model = qmamba.create_model(
        "vmamba_tiny_v0", dims=[8, 12, 16, 20], depths=(1, 1, 1, 1), in_chans=1,
        patch_size=2, d_state=2, ssm_ratio=1.0, num_classes=3,
    ).eval()
    assert model.patch_embed[0].kernel_size == (2, 2)
    assert model.layers[3].blocks[0].op.A_logs.shape == (4 * 20, 2)
    with torch.no_grad():  # 26 -> 13 -> 7 -> 4 -> 2: odd grids are padded when merging
        assert model(torch.randn(1, 1, 26, 26)).shape == (1, 3)


def _shapes(name):
    with torch.device("meta"):
        model = qmamba.create_model(name)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}, model


def test_full_size_tiny_s1l8_state_dict():
    sd, _ = _shapes("vmamba_tiny_s1l8")
    assert len(sd) == 276
    expect = {
        "patch_embed.0.weight": (48, 3, 3, 3), "patch_embed.0.bias": (48,),
        "patch_embed.2.weight": (48,), "patch_embed.5.weight": (96, 48, 3, 3),
        "patch_embed.7.bias": (96,),
        "layers.0.blocks.0.norm.weight": (96,),
        "layers.0.blocks.0.op.in_proj.weight": (96, 96),
        "layers.0.blocks.0.op.conv2d.weight": (96, 1, 3, 3),
        "layers.0.blocks.0.op.x_proj_weight": (4, 6 + 2, 96),
        "layers.0.blocks.0.op.dt_projs_weight": (4, 96, 6),
        "layers.0.blocks.0.op.dt_projs_bias": (4, 96),
        "layers.0.blocks.0.op.A_logs": (384, 1), "layers.0.blocks.0.op.Ds": (384,),
        "layers.0.blocks.0.op.out_norm.weight": (96,),
        "layers.0.blocks.0.op.out_proj.weight": (96, 96),
        "layers.0.blocks.0.norm2.bias": (96,),
        "layers.0.blocks.0.mlp.fc1.weight": (384, 96), "layers.0.blocks.0.mlp.fc1.bias": (384,),
        "layers.0.blocks.0.mlp.fc2.weight": (96, 384),
        "layers.2.blocks.7.op.x_proj_weight": (4, 24 + 2, 384),
        "layers.0.downsample.1.weight": (192, 96, 3, 3), "layers.0.downsample.1.bias": (192,),
        "layers.2.downsample.3.weight": (768,),
        "layers.3.blocks.1.op.dt_projs_weight": (4, 768, 48),
        "classifier.norm.weight": (768,), "classifier.head.weight": (1000, 768),
        "classifier.head.bias": (1000,),
    }
    for key, shape in expect.items():
        assert sd[key] == shape, key
    assert "layers.0.blocks.0.op.conv2d.bias" not in sd
    assert not any(k.startswith("layers.3.downsample") for k in sd)


def test_full_size_tiny_s2l5_state_dict():
    sd, _ = _shapes("vmamba_tiny_s2l5")
    assert len(sd) == 222
    # inner width 2d; dt rank still ceil(d / 16)
    assert sd["layers.0.blocks.0.op.in_proj.weight"] == (192, 96)
    assert sd["layers.0.blocks.0.op.conv2d.weight"] == (192, 1, 3, 3)
    assert sd["layers.0.blocks.0.op.x_proj_weight"] == (4, 6 + 2, 192)
    assert sd["layers.0.blocks.0.op.dt_projs_weight"] == (4, 192, 6)
    assert sd["layers.0.blocks.0.op.A_logs"] == (768, 1)
    assert sd["layers.0.blocks.0.op.out_norm.weight"] == (192,)
    assert sd["layers.0.blocks.0.op.out_proj.weight"] == (96, 192)
    assert sd["layers.2.blocks.4.mlp.fc2.weight"] == (384, 1536)


def test_full_size_tiny_v0_state_dict():
    sd, _ = _shapes("vmamba_tiny_v0")
    assert len(sd) == 212
    expect = {
        "patch_embed.0.weight": (96, 3, 4, 4), "patch_embed.0.bias": (96,),
        "patch_embed.2.weight": (96,),
        "layers.0.blocks.0.op.in_proj.weight": (384, 96),
        "layers.0.blocks.0.op.conv2d.weight": (192, 1, 3, 3),
        "layers.0.blocks.0.op.conv2d.bias": (192,),
        "layers.0.blocks.0.op.x_proj_weight": (4, 6 + 32, 192),
        "layers.0.blocks.0.op.dt_projs_weight": (4, 192, 6),
        "layers.0.blocks.0.op.A_logs": (768, 16), "layers.0.blocks.0.op.Ds": (768,),
        "layers.0.blocks.0.op.out_norm.weight": (192,),
        "layers.0.blocks.0.op.out_proj.weight": (96, 192),
        "layers.0.downsample.reduction.weight": (192, 384),
        "layers.0.downsample.norm.weight": (384,),
        "classifier.norm.weight": (768,), "classifier.head.weight": (1000, 768),
    }
    for key, shape in expect.items():
        assert sd[key] == shape, key
    assert not any(".mlp." in k or ".norm2." in k for k in sd)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_M))
def test_full_size_parameter_count_matches_published(name):
    _, model = _shapes(name)
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6) == PUBLISHED_PARAMS_M[name], n


def test_upstream_like_init():
    torch.manual_seed(0)
    op = qmamba.create_model("vmamba_tiny_s1l8", **SMALL).layers[1].blocks[0].op
    E = op.d_inner
    torch.testing.assert_close(op.A_logs, torch.zeros(4 * E, 1))  # log(1)
    torch.testing.assert_close(op.Ds, torch.ones(4 * E))
    dt = F.softplus(op.dt_projs_bias.detach())  # (4, E)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
    op16 = qmamba.create_model("vmamba_tiny_v0", **SMALL).layers[0].blocks[0].op
    torch.testing.assert_close(op16.A_logs[5], torch.log(torch.arange(1.0, 17.0)))


# --------------------------------------------------------------- filter_state_dict
def _legacy_name(key: str) -> str:
    key = key.replace("patch_embed.0", "patch_embed.proj").replace("patch_embed.2", "patch_embed.norm")
    key = re.sub(r"(blocks\.\d+\.)norm\.", r"\1ln_1.", key).replace(".op.", ".self_attention.")
    return key.replace("classifier.norm", "norm").replace("classifier.head", "head")


def test_filter_state_dict_renames_legacy_v0_keys():
    torch.manual_seed(0)
    model = qmamba.create_model("vmamba_tiny_v0", **SMALL)
    sd = model.state_dict()
    legacy = {_legacy_name(k): v.clone() for k, v in sd.items()}
    assert "patch_embed.proj.weight" in legacy and "norm.weight" in legacy and "head.bias" in legacy
    assert "layers.1.blocks.0.ln_1.weight" in legacy
    assert "layers.2.blocks.1.self_attention.x_proj_weight" in legacy
    before = dict(legacy)
    filtered = model.filter_state_dict(legacy)
    assert legacy == before  # a new dict; the input is untouched
    assert set(filtered) == set(sd)
    fresh = qmamba.create_model("vmamba_tiny_v0", **SMALL)
    fresh.load_state_dict(filtered, strict=True)
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, sd[k])


def test_filter_state_dict_reshapes_1x1_conv_weights():
    model = qmamba.create_model("vmamba_tiny_s2l5", **SMALL)
    sd = model.state_dict()
    as_conv = {
        k: (v[:, :, None, None] if k.endswith(("in_proj.weight", "out_proj.weight", "fc1.weight", "fc2.weight")) else v)
        for k, v in sd.items()
    }
    assert as_conv["layers.0.blocks.0.mlp.fc1.weight"].dim() == 4
    filtered = model.filter_state_dict(as_conv)
    assert filtered["layers.0.blocks.0.mlp.fc1.weight"].shape == (32, 8)
    assert filtered["layers.0.blocks.0.op.conv2d.weight"].dim() == 4  # real convs kept
    model.load_state_dict(filtered, strict=True)
    # keys already right are not renamed (classifier.norm does not become classifier.classifier.norm)
    assert set(model.filter_state_dict(sd)) == set(sd)


# ----------------------------------------------------------------- quantization points
def _points(model):
    return dict(iter_points(model))


@pytest.mark.parametrize("name", ["vmamba_tiny_v0", "vmamba_tiny_s1l8"])
def test_points_exist_identity_and_used(name):
    model = qmamba.create_model(name, **SMALL).eval()
    points = _points(model)
    is_v0 = name.endswith("_v0")
    op = "layers.1.blocks.0.op."
    expected = {
        op + "in_proj.input_quant": "linear_input", op + "in_proj.weight_quant": "weight",
        op + "conv2d.input_quant": "linear_input", op + "conv2d.weight_quant": "weight",
        op + "out_proj.input_quant": "linear_input", op + "out_proj.weight_quant": "weight",
        op + "quant_x_proj_weight": "weight", op + "quant_dt_projs_weight": "weight",
        op + "quant_dt_r": "linear_input",
        op + "quant.u": "ssm.u", op + "quant.delta": "ssm.delta", op + "quant.A": "ssm.A",
        op + "quant.B": "ssm.B", op + "quant.C": "ssm.C", op + "quant.h": "ssm.h",
        op + "quant.y": "ssm.y",
        "patch_embed.0.input_quant": "linear_input", "patch_embed.0.weight_quant": "weight",
        "classifier.head.input_quant": "linear_input",
    }
    if is_v0:
        expected[op + "quant.z"] = "ssm.z"
        expected["layers.0.downsample.reduction.weight_quant"] = "weight"
    else:
        expected["layers.1.blocks.0.mlp.fc1.input_quant"] = "linear_input"
        expected["layers.1.blocks.0.mlp.fc2.weight_quant"] = "weight"
        expected["layers.0.downsample.1.input_quant"] = "linear_input"
        expected["patch_embed.5.weight_quant"] = "weight"
    for key, role in expected.items():
        assert points[key].role == role, key
    assert (op + "quant.z" in points) == is_v0
    assert model.layers[1].blocks[0].op.quant.z is None or is_v0
    assert points["patch_embed.0.weight_quant"].tags == {"first"}
    assert points["classifier.head.weight_quant"].tags == {"last"}
    if not is_v0:
        assert points["patch_embed.5.weight_quant"].tags == frozenset()
        assert points[op + "in_proj.input_quant"].channel_axis == 1  # channel-first Linear
    assert points[op + "quant_x_proj_weight"].weight_channel_dims == (0, 1)

    # identity, no state, and every non-scan point is called by forward
    x = torch.randn(4)
    assert all(p(x) is x and not p.active for p in points.values())
    assert not any("quant" in k for k in model.state_dict())
    called = set()
    for key, p in points.items():
        p.register_forward_hook(lambda m, i, o, key=key: called.add(key))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    scan_internal = {"ssm.delta", "ssm.A", "ssm.B", "ssm.C", "ssm.h", "ssm.y"}  # inside selective_ssm
    assert {k for k, p in points.items() if p.role not in scan_internal} == called


# ---------------------------------------------------- independent SS2D reference
def _naive_ss2d(op: SS2D, x: torch.Tensor) -> torch.Tensor:
    """One SS2D, pixel by pixel: explicit visiting orders, a per-direction Python
    recurrence, outputs scattered back to their pixels and summed."""
    p = {k: v.detach().double() for k, v in op.state_dict().items()}
    x = x.double()
    E, N, R = op.d_inner, op.d_state, op.dt_rank
    if op.has_z:  # x: (1, H, W, C)
        xz = x @ p["in_proj.weight"].T  # (1, H, W, 2E)
        xi, z = xz[..., :E].permute(0, 3, 1, 2), xz[..., E:]  # (1, E, H, W), (1, H, W, E)
        conv_bias = p["conv2d.bias"]
    else:  # x: (1, C, H, W)
        xi = torch.einsum("bchw,ec->behw", x, p["in_proj.weight"])  # (1, E, H, W)
        conv_bias = None
    u = F.silu(F.conv2d(xi, p["conv2d.weight"], conv_bias, padding=1, groups=E))[0]  # (E, H, W)
    _, H, W = u.shape
    row = [(i, j) for i in range(H) for j in range(W)]
    col = [(i, j) for j in range(W) for i in range(H)]
    orders = [row, col, row[::-1], col[::-1]]
    A = -torch.exp(p["A_logs"]).view(4, E, N)
    out = torch.zeros(E, H, W, dtype=torch.float64)
    for k, order in enumerate(orders):
        h = torch.zeros(E, N, dtype=torch.float64)
        for i, j in order:
            ut = u[:, i, j]  # (E,)
            dbl = p["x_proj_weight"][k] @ ut  # (R + 2N,)
            dt = F.softplus(p["dt_projs_weight"][k] @ dbl[:R] + p["dt_projs_bias"][k])  # (E,)
            Bt, Ct = dbl[R:R + N], dbl[R + N:]
            h = torch.exp(dt[:, None] * A[k]) * h + (dt * ut)[:, None] * Bt[None, :]  # (E, N)
            out[:, i, j] += h @ Ct + p["Ds"].view(4, E)[k] * ut
    y = out.permute(1, 2, 0)  # (H, W, E)
    y = F.layer_norm(y, (E,), p["out_norm.weight"], p["out_norm.bias"])
    if op.has_z:
        return (y * F.silu(z[0])) @ p["out_proj.weight"].T  # (H, W, C)
    return (y @ p["out_proj.weight"].T).permute(2, 0, 1)  # (C, H, W)


@pytest.mark.parametrize("forward_type,ratio", [("v0", 2.0), ("v05_noz", 1.0), ("v05_noz", 2.0)])
def test_ss2d_matches_pixel_by_pixel_reference(forward_type, ratio):
    torch.manual_seed(1)
    op = SS2D(8, d_state=3, ssm_ratio=ratio, forward_type=forward_type,
              conv_bias=forward_type == "v0").eval()
    with torch.no_grad():
        for prm in op.parameters():
            prm.add_(0.2 * torch.randn_like(prm))
    H, W = 3, 5  # non-square, so row- and column-major orders differ in length per line
    x = torch.randn(1, H, W, 8) if op.has_z else torch.randn(1, 8, H, W)
    with torch.no_grad():
        got = op(x)[0]
    torch.testing.assert_close(got.double(), _naive_ss2d(op, x), rtol=1e-4, atol=1e-5)


def test_scan_input_stacks_directions_along_channels(monkeypatch):
    torch.manual_seed(2)
    op = SS2D(8, d_state=2, ssm_ratio=1.0, forward_type="v05_noz").eval()
    seen = {}
    real = vmamba_blocks.selective_ssm

    def spy(points, u, dt, A, B, C, D, delta_bias, z=None):
        seen.update(u=u, B=B, A=A, D=D, delta_bias=delta_bias, z=z)
        return real(points, u, dt, A, B, C, D, delta_bias, z=z)

    monkeypatch.setattr(vmamba_blocks, "selective_ssm", spy)
    H, W, E = 2, 3, 8
    captured = {}
    op.quant.u.register_forward_hook(lambda m, i, o: captured.update(u=o))
    with torch.no_grad():
        op(torch.randn(1, 8, H, W))
    u = captured["u"][0]  # (E, H, W)
    row = [(i, j) for i in range(H) for j in range(W)]
    col = [(i, j) for j in range(W) for i in range(H)]
    for k, order in enumerate([row, col, row[::-1], col[::-1]]):
        expect = torch.stack([u[:, i, j] for i, j in order], dim=-1)  # (E, L)
        torch.testing.assert_close(seen["u"][0, k * E:(k + 1) * E], expect)
    assert seen["B"].shape == (1, 4, 2, H * W) and seen["z"] is None
    torch.testing.assert_close(seen["A"], -torch.exp(op.A_logs))
    torch.testing.assert_close(seen["delta_bias"], op.dt_projs_bias.flatten())


def test_cross_merge_is_adjoint_of_cross_scan():
    # <scan(x), y> == <x, merge(y)>: merge puts every direction's output back on its pixel
    x, y = torch.randn(2, 3, 4, 5), torch.randn(2, 4, 3, 20)
    lhs = (cross_scan(x) * y).sum()
    rhs = (x * cross_merge(y, 4, 5)).sum()
    torch.testing.assert_close(lhs, rhs)
    torch.testing.assert_close(cross_merge(cross_scan(x), 4, 5), 4 * x)


def test_backward_and_drop_path_train_mode():
    torch.manual_seed(0)
    model = qmamba.create_model("vmamba_tiny_s1l8", drop_path_rate=0.1, **SMALL).train()
    model(torch.randn(2, 3, 16, 16)).sum().backward()  # 4x4 grid after the stem
    op = model.layers[0].blocks[0].op
    assert op.dt_projs_bias.grad is not None and torch.isfinite(op.A_logs.grad).all()
    assert math.isclose(model.layers[3].blocks[0].drop_path.drop_prob, 0.1, rel_tol=1e-6)


@pytest.mark.parametrize("name", ["vmamba_tiny_v0", "vmamba_tiny_s2l5"])
def test_quant_blocks_chain_is_the_trunk(name):
    model = qmamba.create_model(name, **SMALL).eval()
    blocks = model.quant_blocks()
    assert model.family == "vmamba" and len(blocks) == 5 + 3  # 5 blocks, 3 downsamples
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        h = model.patch_embed(x)
        for block in blocks:
            h = block(h)
        torch.testing.assert_close(h, model.forward_features(x))


def test_timm_create_model_after_import():
    timm = pytest.importorskip("timm")
    register_with_timm()  # idempotent; the package may already have done it on import
    model = timm.create_model("vmamba_tiny_s1l8", **SMALL)
    assert isinstance(model, VSSM) and model.num_classes == 5
    assert isinstance(timm.create_model("vmamba_tiny_v0", **SMALL), VSSM)

