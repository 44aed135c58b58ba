"""int8 x int8 -> int32 matrix products, exact on every CPU path, chosen by measurement.

Paths (`gemm_paths()` says which ones this process can use; `int_matmul` picks per weight):

* "int_mm": `torch._int_mm` (oneDNN). Measured on vim_tiny's shapes (M = 1,576, two threads):
  on the AVX-512 VNNI / AMX path 3.3x - 9.3x faster than the fp32 GEMM, and exact. On the
  AVX2 path (AVX2-only CPUs, or ONEDNN_MAX_CPU_ISA=AVX2) oneDNN multiplies the int8
  activations shifted to uint8 (0..255) by the weights with vpmaddubsw, whose int16 pair
  sums saturate: the results are wrong once |w| > 64 (exact for |w| <= 64, measured).
  It also returns garbage for K = 1 (torch 2.14).
* "int_mm_split": on such a path, 8-bit weights are split w = 2 w_hi + w_lo with
  w_hi = floor(w / 2) in [-64, 63] and w_lo in {0, 1}: one `_int_mm` with 2N columns, then
  2 acc_hi + acc_lo in the epilogue (twice the multiplies; exact).
* "float": the fp32 GEMM on the integer values, exact while K * max|a| * max|w| < 2^24
  (every partial sum is an integer below 2^24); used where K < 32 (there fp32 is as fast:
  K = 12, dt_proj's rank, measured 0.055 ms fp32 against 0.074 ms `_int_mm`), where
  `_int_mm` is exact on neither form, and float64 above 2^24.
* the reference: the int64 product (`reference_matmul`), the tests' oracle.

Whether `_int_mm` is exact here is measured once per process (`gemm_paths`): a product
of extreme codes (a in {-128, 127}, w in {-127, 127} and in {-64, 64}) against int64.
"""
from __future__ import annotations

import functools

import torch

MIN_INT_MM_K = 32


@functools.lru_cache(maxsize=1)
def gemm_paths() -> dict[str, bool]:
    """{"full": `_int_mm` exact for any int8 weights, "seven_bit": exact for |w| <= 64}."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, wmax in (("full", 127), ("seven_bit", 64)):
        ok = True
        for m, k, n in ((48, 64, 32), (7, 96, 40), (300, 256, 64)):
            a = torch.where(torch.rand(m, k, generator=g) < 0.5, -128, 127).to(torch.int8)
            w = torch.where(torch.rand(n, k, generator=g) < 0.5, -wmax, wmax).to(torch.int8)
            for ww in (w, -w, w.flip(0)):
                try:
                    got = torch._int_mm(a, ww.t())
                except RuntimeError:
                    ok = False
                    break
                ok = ok and torch.equal(got.long(), reference_matmul(a, ww))
        out[name] = ok
    return out


def reference_matmul(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """a (M, K) int8 times w (N, K)^T, exactly, int64 (M, N)."""
    return a.long() @ w.long().t()


def choose_path(k: int, wmax: int) -> str:
    """The path for a weight with K inputs and largest |code| `wmax`."""
    paths = gemm_paths()
    if k < MIN_INT_MM_K:
        return "float"
    if paths["full"] or (wmax <= 64 and paths["seven_bit"]):
        return "int_mm"
    if paths["seven_bit"]:
        return "int_mm_split"
    return "float"


class PackedWeight(torch.nn.Module):
    """int8 weight codes (N, K) and what its path needs (the split halves, lazily)."""

    def __init__(self, codes: torch.Tensor):
        super().__init__()
        if codes.dim() != 2:
            raise ValueError(f"weight codes must be (N, K), got {tuple(codes.shape)}")
        self.register_buffer("codes", codes.to(torch.int8).contiguous())
        self.register_buffer("colsum", codes.long().sum(1).to(torch.int32))  # (N,)
        self.wmax = int(codes.abs().max()) if codes.numel() else 0
        self.path = choose_path(codes.shape[1], self.wmax)
        self._split: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return self.codes.shape[0]

    def split(self) -> torch.Tensor:
        """(2N, K): w_hi = floor(w / 2) rows, then w_lo = w - 2 w_hi rows."""
        if self._split is None:
            w = self.codes.long()
            hi = torch.div(w, 2, rounding_mode="floor")
            self._split = torch.cat([hi, w - 2 * hi]).to(torch.int8).contiguous()
        return self._split

    def matmul(self, a: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """(acc, split): acc int32 (M, N), or (M, 2N) hi / lo halves when split."""
        if self.path == "int_mm":
            return torch._int_mm(a, self.codes.t()), False
        if self.path == "int_mm_split":
            return torch._int_mm(a, self.split().t()), True
        k = a.shape[1]
        exact32 = k * 128 * max(self.wmax, 1) < 2**24
        dtype = torch.float32 if exact32 else torch.float64
        # every partial sum is an integer the float type holds exactly: no rounding to undo
        return (a.to(dtype) @ self.codes.to(dtype).t()).to(torch.int32), False
