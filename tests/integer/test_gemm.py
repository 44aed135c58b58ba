"""int8 GEMMs: every path exact against the int64 product, on the AVX-512 / AMX path of this
process and with oneDNN and PyTorch forced to their AVX2 paths (a subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from qmamba.integer.gemm import PackedWeight, choose_path, gemm_paths, reference_matmul


def _operands(m, k, n, wmax, seed=0, extreme=False):
    g = torch.Generator().manual_seed(seed)
    if extreme:  # the saturating pattern of vpmaddubsw: a in {-128, 127}, |w| = wmax
        a = torch.where(torch.rand(m, k, generator=g) < 0.5, -128, 127).to(torch.int8)
        w = torch.where(torch.rand(n, k, generator=g) < 0.5, -wmax, wmax).to(torch.int8)
    else:
        a = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
        w = torch.randint(-wmax, wmax + 1, (n, k), generator=g, dtype=torch.int8)
    return a, w


def _product(pw: PackedWeight, a: torch.Tensor) -> torch.Tensor:
    acc, split = pw.matmul(a)
    if split:
        n = acc.shape[1] // 2
        acc = 2 * acc[:, :n] + acc[:, n:]
    return acc.long()


@pytest.mark.parametrize("path", ["int_mm", "int_mm_split", "float"])
@pytest.mark.parametrize("wmax", [127, 64, 7])
@pytest.mark.parametrize("shape", [(50, 192, 40), (3, 384, 17), (64, 33, 8)])
def test_paths_are_exact(path, wmax, shape):
    if path == "int_mm" and not gemm_paths()["full"] and wmax > 64:
        pytest.skip("_int_mm saturates on this oneDNN path (the split path covers it)")
    for extreme in (False, True):
        a, w = _operands(*shape, wmax, extreme=extreme)
        pw = PackedWeight(w)
        pw.path = path
        assert torch.equal(_product(pw, a), reference_matmul(a, w)), (path, extreme)


def test_path_choice():
    assert choose_path(12, 127) == "float"  # dt_proj's rank: fp32 is as fast, _int_mm breaks at K = 1
    assert choose_path(384, 7) == "int_mm"  # 4-bit weights never saturate
    expected = "int_mm" if gemm_paths()["full"] else "int_mm_split"
    assert choose_path(384, 127) == expected
    a, w = _operands(20, 1, 6, 127)
    assert torch.equal(_product(PackedWeight(w), a), reference_matmul(a, w))  # K = 1


AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "QMAMBA_INT_ISA": "avx2"}
CHILD = r'''
import json, torch
from qmamba.integer.gemm import PackedWeight, gemm_paths, reference_matmul
from qmamba.ops.int_extension import kernel_isa
out = {"paths": gemm_paths(), "capability": torch.backends.cpu.get_cpu_capability(), "isa": kernel_isa()}
g = torch.Generator().manual_seed(0)
exact = []
for wmax in (127, 64, 7):
    a = torch.where(torch.rand(300, 384, generator=g) < 0.5, -128, 127).to(torch.int8)
    w = torch.where(torch.rand(96, 384, generator=g) < 0.5, -wmax, wmax).to(torch.int8)
    pw = PackedWeight(w)
    acc, split = pw.matmul(a)
    acc = (2 * acc[:, :96] + acc[:, 96:]) if split else acc
    exact.append([wmax, pw.path, torch.equal(acc.long(), reference_matmul(a, w))])
out["exact"] = exact
print(json.dumps(out))
'''


def test_avx2_path_is_exact():
    """oneDNN's AVX2 int8 kernels saturate for |w| > 64: the probe must see it and the
    split path must make 8-bit weights exact."""
    env = {**os.environ, **AVX2_ENV}
    res = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["capability"] == "AVX2" and out["isa"] in ("avx2", "baseline")
    assert out["paths"]["seven_bit"]
    for wmax, path, exact in out["exact"]:
        assert exact, (wmax, path)
        if wmax > 64 and not out["paths"]["full"]:
            assert path == "int_mm_split"
