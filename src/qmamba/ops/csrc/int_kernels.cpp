// Integer-backend CPU kernels for qmamba (qmamba/integer): activation codes, the GEMM
// epilogue, the depthwise causal conv1d on codes, and the integer selective scan.
//
// Built on first use by qmamba/ops/int_extension.py (torch.utils.cpp_extension.load, -O3,
// no -march=native, no -ffast-math, -ffp-contract=off) and registered as
// torch.ops.qmamba_int.*. Each hot loop is compiled three times (AVX-512 F/BW/DQ/VL, AVX2,
// the baseline) and picked at run time (`isa()`); `set_isa(level)` caps the level (tests
// force the AVX2 and baseline paths on an AVX-512 machine; QMAMBA_INT_ISA does the same
// at load time). Every path computes the same numbers: integer arithmetic is exact, and
// the float operations are plain IEEE multiplies / adds / divisions in a fixed order
// (no FMA contraction), so the ISA changes only the speed.
//
// Each kernel has a PyTorch reference beside it that performs the same operations
// (qmamba/integer/*.py); tests/integer compare them bit for bit.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace {

#define QI_INLINE __attribute__((always_inline)) inline

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define QI_X86 1
#define QI_TARGET_AVX2 __attribute__((target("avx2,fma,bmi,bmi2")))
#define QI_TARGET_AVX512 __attribute__((target("avx2,fma,bmi,bmi2,avx512f,avx512bw,avx512dq,avx512vl")))
#endif

// ------------------------------------------------------------------------ ISA dispatch
enum Isa : int64_t { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

int64_t detected_isa() {
#ifdef QI_X86
  static const int64_t level = [] {
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
      return int64_t(kAvx512);
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("bmi2")) {
      return int64_t(kAvx2);
    }
    return int64_t(kBaseline);
  }();
  return level;
#else
  return kBaseline;
#endif
}

int64_t env_cap() {
  const char* v = std::getenv("QMAMBA_INT_ISA");
  if (v == nullptr) return kAvx512;
  const std::string s(v);
  if (s == "avx2") return kAvx2;
  if (s == "baseline") return kBaseline;
  return kAvx512;
}

int64_t g_cap = env_cap();

int64_t isa() { return std::min(g_cap, detected_isa()); }

// set_isa(level): cap the dispatch at `level` (0 baseline, 1 AVX2, 2 AVX-512; -1 leaves it);
// returns the level now in use.
int64_t set_isa(int64_t level) {
  if (level >= 0) g_cap = std::min<int64_t>(level, kAvx512);
  return isa();
}

// Each op's work function is an always-inline template instantiated three times by
// QI_DISPATCH: in a function compiled for AVX-512, one for AVX2 and one for the baseline;
// `isa()` picks one per call. (Everything the work function calls must be inlined into
// it, or it would run the baseline code whatever the target.)
#ifdef QI_X86
#define QI_DISPATCH(NAME, PARAMS, ARGS)                                   \
  QI_TARGET_AVX512 void NAME##_avx512 PARAMS { NAME ARGS; }              \
  QI_TARGET_AVX2 void NAME##_avx2 PARAMS { NAME ARGS; }                  \
  void NAME##_base PARAMS { NAME ARGS; }                                  \
  void NAME##_any PARAMS {                                                \
    if (isa() == kAvx512) return NAME##_avx512 ARGS;                      \
    if (isa() == kAvx2) return NAME##_avx2 ARGS;                          \
    NAME##_base ARGS;                                                     \
  }
#else
#define QI_DISPATCH(NAME, PARAMS, ARGS) \
  void NAME##_any PARAMS { NAME ARGS; }
#endif

// ------------------------------------------------------------------------ activation codes
// codes[i] = clamp(nearbyint(x[i] / s) + zp, qmin, qmax) - offset (int8), the quantizer's
// code (round half to even, as torch.round), shifted into int8 by `offset` (128 for codes
// in [0, 255], else 0); values[i] = (q - zp) * s (the fake-quantized value) when wanted.
// x is (outer, mid, inner) contiguous with one scale / zero point per mid index.
template <bool kValues>
QI_INLINE void codes_block(const float* __restrict x, int8_t* __restrict codes,
                           float* __restrict values, float s, float zp, float qmin,
                           float qmax, float offset, int64_t m) {
  for (int64_t i = 0; i < m; ++i) {
    float q = std::nearbyint(x[i] / s) + zp;
    q = q < qmin ? qmin : q;
    q = q > qmax ? qmax : q;
    codes[i] = static_cast<int8_t>(static_cast<int32_t>(q - offset));
    if constexpr (kValues) values[i] = (q - zp) * s;
  }
}

// elements [i0, i1) of x viewed as (outer, mid, inner): runs of one parameter at a time
template <bool kValues>
QI_INLINE void codes_range_t(const float* x, int8_t* codes, float* values, const float* s,
                             const float* zp, int64_t mid, int64_t inner, float qmin,
                             float qmax, float offset, int64_t i0, int64_t i1) {
  int64_t i = i0;
  while (i < i1) {
    const int64_t c = (i / inner) % mid;
    const int64_t end = mid == 1 ? i1 : std::min(i1, (i / inner + 1) * inner);
    codes_block<kValues>(x + i, codes + i, kValues ? values + i : nullptr, s[c], zp[c], qmin, qmax,
                         offset, end - i);
    i = end;
  }
}

QI_INLINE void codes_range(const float* x, int8_t* codes, float* values, const float* s,
                           const float* zp, int64_t mid, int64_t inner, float qmin, float qmax,
                           float offset, int64_t i0, int64_t i1) {
  if (values != nullptr) {
    codes_range_t<true>(x, codes, values, s, zp, mid, inner, qmin, qmax, offset, i0, i1);
  } else {
    codes_range_t<false>(x, codes, values, s, zp, mid, inner, qmin, qmax, offset, i0, i1);
  }
}
QI_DISPATCH(codes_range,
            (const float* x, int8_t* codes, float* values, const float* s, const float* zp,
             int64_t mid, int64_t inner, float qmin, float qmax, float offset, int64_t i0, int64_t i1),
            (x, codes, values, s, zp, mid, inner, qmin, qmax, offset, i0, i1))

std::vector<at::Tensor> quantize_codes(const at::Tensor& x, const at::Tensor& scale,
                                       const at::Tensor& zp, double qmin, double qmax,
                                       int64_t offset, int64_t inner, bool want_values) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "quantize_codes: float32 x");
  const bool rows_view = !x.is_contiguous();  // a 2D view with a row stride (per tensor)
  TORCH_CHECK(!rows_view || (x.dim() == 2 && x.stride(1) == 1 && scale.numel() == 1),
              "quantize_codes: contiguous x, or a 2D view with contiguous rows and one scale");
  TORCH_CHECK(scale.is_contiguous() && zp.is_contiguous() && scale.scalar_type() == at::kFloat &&
                  zp.scalar_type() == at::kFloat && scale.numel() == zp.numel(),
              "quantize_codes: float32 scale / zero point of equal size");
  const int64_t mid = scale.numel(), total = x.numel();
  TORCH_CHECK(mid >= 1 && inner >= 1 && total % (mid * inner) == 0,
              "quantize_codes: x must be (outer, scale.numel(), inner)");
  TORCH_CHECK(qmin - offset >= -128 && qmax - offset <= 127, "quantize_codes: codes do not fit int8");
  auto codes = at::empty(x.sizes(), x.options().dtype(at::kChar));
  at::Tensor values = want_values ? at::empty(x.sizes(), x.options()) : at::Tensor();
  const float* xp = x.data_ptr<float>();
  int8_t* cp = codes.data_ptr<int8_t>();
  float* vp = want_values ? values.data_ptr<float>() : nullptr;
  const float* sp = scale.data_ptr<float>();
  const float* zpp = zp.data_ptr<float>();
  const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  const float off = static_cast<float>(offset);
  if (rows_view) {
    const int64_t K = x.size(1), rs = x.stride(0);
    at::parallel_for(0, x.size(0), std::max<int64_t>(1, 32768 / std::max<int64_t>(K, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        codes_range_any(xp + r * rs, cp + r * K, vp != nullptr ? vp + r * K : nullptr, sp, zpp, 1, 1,
                        lo, hi, off, 0, K);
      }
    });
    return {codes, values};
  }
  at::parallel_for(0, total, 32768, [&](int64_t i0, int64_t i1) {
    codes_range_any(xp, cp, vp, sp, zpp, mid, inner, lo, hi, off, i0, i1);
  });
  return {codes, values};
}

// ------------------------------------------------------------------------ GEMM epilogue
// out[m, n] = float(acc[m, n] + zc[m] * wsum[n]) * (rs[m] * cs[n]) + bias[n]
// acc = codes (int8, shifted by the offset) x weight codes (int32 sums); zc = offset - zp
// puts the activation zero point back; rs / zc of size 1 broadcast (per-tensor scales).
// split: acc is (M, 2N), the products with w_hi and w_lo (gemm.py), acc = 2 hi + lo.
QI_INLINE void epilogue_rows(const int32_t* acc, float* out, const float* rs, const int32_t* zc,
                             bool per_row, const int32_t* wsum, const float* cs,
                             const float* bias, float* scale_buf, int32_t* acc_buf, bool split,
                             int64_t N, int64_t m0, int64_t m1) {
  for (int64_t m = m0; m < m1; ++m) {
    const float r = per_row ? rs[m] : rs[0];
    const int32_t z = per_row ? zc[m] : zc[0];
    const int32_t* __restrict a = acc + m * N;
    if (split) {
      const int32_t* __restrict ah = acc + m * 2 * N;
      for (int64_t n = 0; n < N; ++n) acc_buf[n] = 2 * ah[n] + ah[n + N];
      a = acc_buf;
    }
    float* __restrict o = out + m * N;
    float* __restrict sc = scale_buf;
    for (int64_t n = 0; n < N; ++n) sc[n] = r * cs[n];
    if (bias != nullptr) {
      for (int64_t n = 0; n < N; ++n) o[n] = static_cast<float>(a[n] + z * wsum[n]) * sc[n] + bias[n];
    } else {
      for (int64_t n = 0; n < N; ++n) o[n] = static_cast<float>(a[n] + z * wsum[n]) * sc[n];
    }
  }
}
QI_DISPATCH(epilogue_rows,
            (const int32_t* acc, float* out, const float* rs, const int32_t* zc, bool per_row,
             const int32_t* wsum, const float* cs, const float* bias, float* scale_buf,
             int32_t* acc_buf, bool split, int64_t N, int64_t m0, int64_t m1),
            (acc, out, rs, zc, per_row, wsum, cs, bias, scale_buf, acc_buf, split, N, m0, m1))

at::Tensor gemm_epilogue(const at::Tensor& acc, const at::Tensor& row_scale,
                         const at::Tensor& row_zc, const at::Tensor& wsum,
                         const at::Tensor& col_scale, const std::optional<at::Tensor>& bias,
                         bool split) {
  TORCH_CHECK(acc.dim() == 2 && acc.is_contiguous() && acc.scalar_type() == at::kInt,
              "gemm_epilogue: contiguous int32 (M, N) accumulators");
  TORCH_CHECK(!split || acc.size(1) % 2 == 0, "gemm_epilogue: split accumulators are (M, 2N)");
  const int64_t M = acc.size(0), N = split ? acc.size(1) / 2 : acc.size(1);
  TORCH_CHECK(row_scale.numel() == row_zc.numel() && (row_scale.numel() == 1 || row_scale.numel() == M),
              "gemm_epilogue: row scale / zero point of size 1 or M");
  TORCH_CHECK(wsum.numel() == N && col_scale.numel() == N && (!bias || bias->numel() == N),
              "gemm_epilogue: per-column tensors of size N");
  TORCH_CHECK(row_scale.scalar_type() == at::kFloat && col_scale.scalar_type() == at::kFloat &&
                  row_zc.scalar_type() == at::kInt && wsum.scalar_type() == at::kInt &&
                  (!bias || bias->scalar_type() == at::kFloat),
              "gemm_epilogue: float32 scales and bias, int32 zero points and column sums");
  auto out = at::empty({M, N}, acc.options().dtype(at::kFloat));
  const bool per_row = row_scale.numel() == M && M > 1;
  const float* bp = bias ? bias->contiguous().data_ptr<float>() : nullptr;
  const auto rs = row_scale.contiguous(), zc = row_zc.contiguous();
  const auto ws = wsum.contiguous(), cs = col_scale.contiguous();
  at::parallel_for(0, M, std::max<int64_t>(1, 8192 / std::max<int64_t>(N, 1)), [&](int64_t m0, int64_t m1) {
    std::vector<float> sbuf(N);
    std::vector<int32_t> abuf(split ? N : 0);
    epilogue_rows_any(acc.data_ptr<int32_t>(), out.data_ptr<float>(), rs.data_ptr<float>(),
                      zc.data_ptr<int32_t>(), per_row, ws.data_ptr<int32_t>(), cs.data_ptr<float>(),
                      bp, sbuf.data(), abuf.data(), split, N, m0, m1);
  });
  return out;
}

// in_proj's epilogue fused with what the fused Vim mixer does next: per row, gemm_epilogue's
// operations into a row buffer, then columns [0, E) (x) become the codes of each of Q
// per-tensor quantizers (quantize_codes' operations: the two convs' inputs) and columns
// [E, N) (z) are kept as floats. The same numbers as gemm_epilogue then quantize_codes,
// without the float x in memory. qparams (Q, 5): scale, zero point, qmin, qmax, offset.
std::vector<at::Tensor> epilogue_split_codes(const at::Tensor& acc, const at::Tensor& row_scale,
                                             const at::Tensor& row_zc, const at::Tensor& wsum,
                                             const at::Tensor& col_scale, const std::optional<at::Tensor>& bias,
                                             bool split, int64_t E, const at::Tensor& qparams) {
  TORCH_CHECK(acc.dim() == 2 && acc.is_contiguous() && acc.scalar_type() == at::kInt,
              "epilogue_split_codes: contiguous int32 (M, N) accumulators");
  const int64_t M = acc.size(0), N = split ? acc.size(1) / 2 : acc.size(1);
  TORCH_CHECK(0 < E && E < N, "epilogue_split_codes: 0 < E < N");
  TORCH_CHECK(row_scale.numel() == row_zc.numel() && (row_scale.numel() == 1 || row_scale.numel() == M) &&
                  row_scale.scalar_type() == at::kFloat && row_zc.scalar_type() == at::kInt,
              "epilogue_split_codes: float32 row scales and int32 zero points of size 1 or M");
  TORCH_CHECK(wsum.numel() == N && col_scale.numel() == N && (!bias || bias->numel() == N) &&
                  wsum.scalar_type() == at::kInt && col_scale.scalar_type() == at::kFloat &&
                  (!bias || bias->scalar_type() == at::kFloat),
              "epilogue_split_codes: per-column tensors of size N");
  TORCH_CHECK(qparams.dim() == 2 && qparams.size(1) == 5 && qparams.scalar_type() == at::kFloat,
              "epilogue_split_codes: float32 (Q, 5) quantizer parameters");
  const int64_t Q = qparams.size(0);
  const auto qp = qparams.contiguous();
  for (int64_t q = 0; q < Q; ++q) {
    const float* p = qp.data_ptr<float>() + q * 5;
    TORCH_CHECK(p[2] - p[4] >= -128 && p[3] - p[4] <= 127, "epilogue_split_codes: codes do not fit int8");
  }
  auto codes = at::empty({Q, M, E}, acc.options().dtype(at::kChar));
  auto z = at::empty({M, N - E}, acc.options().dtype(at::kFloat));
  const bool per_row = row_scale.numel() == M && M > 1;
  const auto rs = row_scale.contiguous(), zc = row_zc.contiguous();
  const auto ws = wsum.contiguous(), cs = col_scale.contiguous();
  const at::Tensor bc = bias ? bias->contiguous() : at::Tensor();
  const float* bp = bias ? bc.data_ptr<float>() : nullptr;
  const int64_t astride = split ? 2 * N : N;
  at::parallel_for(0, M, std::max<int64_t>(1, 8192 / N), [&](int64_t m0, int64_t m1) {
    std::vector<float> row(N), sbuf(N);
    std::vector<int32_t> abuf(split ? N : 0);
    for (int64_t m = m0; m < m1; ++m) {
      const int64_t pr = per_row ? m : 0;
      epilogue_rows_any(acc.data_ptr<int32_t>() + m * astride, row.data(), rs.data_ptr<float>() + pr,
                        zc.data_ptr<int32_t>() + pr, false, ws.data_ptr<int32_t>(), cs.data_ptr<float>(), bp,
                        sbuf.data(), abuf.data(), split, N, 0, 1);
      for (int64_t q = 0; q < Q; ++q) {
        const float* p = qp.data_ptr<float>() + q * 5;
        codes_range_any(row.data(), codes.data_ptr<int8_t>() + (q * M + m) * E, nullptr, p, p + 1, 1, 1,
                        p[2], p[3], p[4], 0, E);
      }
      std::copy(row.begin() + E, row.end(), z.data_ptr<float>() + m * (N - E));
    }
  });
  return {codes, z};
}

// ------------------------------------------------------------------------ depthwise conv1d
// Causal depthwise conv of Vim's branch on codes: for x (B, C, L) int8 codes (offset
// applied), out[b, c, t] = float(acc) * (sx * sw[c]) + bias[c] with
// acc = sum_j (x[b, c, t - (K-1) + j] + zc) * w[c, j] over the taps inside the sequence
// (the zero padding of the float conv is the value 0, i.e. the code zp: no term).
QI_INLINE void dwconv_rows(const int8_t* x, const int8_t* w, float* out, int32_t zc, float sx,
                           const float* sw, const float* bias, int64_t C, int64_t L, int64_t K,
                           int64_t r0, int64_t r1, int32_t* acc) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t c = r % C;
    const int8_t* __restrict xr = x + r * L;
    const int8_t* __restrict wr = w + c * K;
    float* __restrict o = out + r * L;
    for (int64_t t = 0; t < L; ++t) acc[t] = 0;
    for (int64_t j = 0; j < K; ++j) {
      const int32_t wj = wr[j];
      const int64_t shift = K - 1 - j;  // output t reads x[t - shift]
      for (int64_t t = shift; t < L; ++t) acc[t] += (static_cast<int32_t>(xr[t - shift]) + zc) * wj;
    }
    const float sc = sx * sw[c];
    const float bc = bias != nullptr ? bias[c] : 0.0f;
    for (int64_t t = 0; t < L; ++t) o[t] = static_cast<float>(acc[t]) * sc + bc;
  }
}
QI_DISPATCH(dwconv_rows,
            (const int8_t* x, const int8_t* w, float* out, int32_t zc, float sx, const float* sw,
             const float* bias, int64_t C, int64_t L, int64_t K, int64_t r0, int64_t r1, int32_t* acc),
            (x, w, out, zc, sx, sw, bias, C, L, K, r0, r1, acc))

at::Tensor dwconv1d_causal(const at::Tensor& x, const at::Tensor& w, int64_t zc, double sx,
                           const at::Tensor& sw, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous() && x.scalar_type() == at::kChar,
              "dwconv1d_causal: contiguous int8 (B, C, L) codes");
  const int64_t C = x.size(1), L = x.size(2);
  TORCH_CHECK(w.dim() == 2 && w.size(0) == C && w.is_contiguous() && w.scalar_type() == at::kChar,
              "dwconv1d_causal: int8 (C, K) weight codes");
  TORCH_CHECK(sw.numel() == C && sw.scalar_type() == at::kFloat && (!bias || bias->numel() == C),
              "dwconv1d_causal: float32 per-channel scales and bias");
  const int64_t K = w.size(1);
  auto out = at::empty(x.sizes(), x.options().dtype(at::kFloat));
  const auto swc = sw.contiguous();
  const at::Tensor bc = bias ? bias->contiguous() : at::Tensor();
  const float sxf = static_cast<float>(sx);
  at::parallel_for(0, x.size(0) * C, 16, [&](int64_t r0, int64_t r1) {
    std::vector<int32_t> acc(L);
    dwconv_rows_any(x.data_ptr<int8_t>(), w.data_ptr<int8_t>(), out.data_ptr<float>(),
                    static_cast<int32_t>(zc), sxf, swc.data_ptr<float>(),
                    bias ? bc.data_ptr<float>() : nullptr, C, L, K, r0, r1, acc.data());
  });
  return out;
}

// ------------------------------------------------------------------------ integer scan
// The recurrence of qmamba/integer/scan_plan.py on codes; scan_reference.py is its oracle
// (same operations). Rows (b, c) of one channel are processed kRows at a time.

// exp of float32 x in plain float32 multiplies and adds (scan_reference.exp_f32)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2Hi = 0.693145751953125f;
constexpr float kLn2Lo = 1.42860682030941723212e-6f;
constexpr float kExpPoly[7] = {0.001381461275741458f, 0.008368710055947304f, 0.04166838899254799f,
                               0.1666652113199234f, 0.4999999403953552f, 1.0f, 1.0f};

QI_INLINE float pow2i(int32_t e) {  // 2^e for a normal exponent
  const uint32_t b = static_cast<uint32_t>(e + 127) << 23;
  float v;
  std::memcpy(&v, &b, sizeof(v));
  return v;
}

QI_INLINE float exp_f32(float x) {
  float xc = x < -87.0f ? -87.0f : x;
  xc = xc > 88.0f ? 88.0f : xc;
  const float k = std::nearbyint(xc * kLog2e);
  const float r = (xc - k * kLn2Hi) - k * kLn2Lo;
  float p = kExpPoly[0];
  for (int i = 1; i < 7; ++i) p = p * r + kExpPoly[i];
  const int32_t ki = static_cast<int32_t>(k);
  const int32_t k1 = ki >= 0 ? ki / 2 : -((-ki + 1) / 2);  // floor(k / 2)
  const float out = (p * pow2i(k1)) * pow2i(ki - k1);
  return x < -87.0f ? 0.0f : out;
}

// #{j < N : r < c[j]} for the non-increasing thresholds c; N where r == 0
QI_INLINE int32_t log_count(float r, const float* c, int32_t N) {
  if (r == 0.0f) return N;
  int32_t lo = 0, hi = N;
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (r < c[mid]) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// ------------------------------------------------------------------------ fused Vim mixer
// Elementwise pieces of Vim's mixer on channels-last (B, L, E) tensors (qmamba/integer/
// vim_mixer.py); their PyTorch references (qmamba/integer/fused_reference.py) perform the
// same float32 operations. silu and softplus are written in plain float32 multiplies,
// adds and divisions (exp_f32 below), so the references reproduce them bit for bit.

// silu(x) = x / (1 + exp(-x))
QI_INLINE float silu_f32(float x) { return x / (1.0f + exp_f32(-x)); }

// softplus(x) = x above 20 (torch's threshold), else max(x, 0) + log1p(e), e = exp(-|x|):
// log1p(e) = 2 atanh(w), w = e / (2 + e) in (0, 1/3]: the odd series
// 2 (w + w^3/3 + ... + w^17/17), Horner in w^2
constexpr float kAtanh[9] = {1.0f / 17, 1.0f / 15, 1.0f / 13, 1.0f / 11, 1.0f / 9,
                             1.0f / 7, 1.0f / 5, 1.0f / 3, 1.0f};
QI_INLINE float softplus_f32(float x) {
  const float e = exp_f32(-std::fabs(x));
  const float w = e / (2.0f + e);
  const float w2 = w * w;
  float p = kAtanh[0];
  for (int i = 1; i < 9; ++i) p = p * w2 + kAtanh[i];
  const float v = (x > 0.0f ? x : 0.0f) + (2.0f * w) * p;
  return x > 20.0f ? x : v;
}

// the fused kernels round x * (1 / s) (one multiply) where the quantizers divide: the
// codes differ from theirs only where the two roundings fall on both sides of a tie
QI_INLINE float quant_value(float x, float inv, float s, float zp, float qmin, float qmax) {
  float q = std::nearbyint(x * inv) + zp;
  q = q < qmin ? qmin : q;
  q = q > qmax ? qmax : q;
  return (q - zp) * s;
}

// u codes of Vim's causal depthwise conv on x codes (B, L, E) (offset applied), weights
// w (K, E) (tap-major), channels last: pre = float(acc) * (sx * sw[c]) + bias[c], acc = sum_j (x[p - (K-1) + j] + zc) w[c, j]
// (reverse: x[p + (K-1) - j], the conv of the backward branch on the unflipped sequence),
// u = silu(pre), codes = clamp(nearbyint(u * (1 / su)) + zpu, qmin, qmax) - off, values (q - zp) su.
QI_INLINE void conv_silu_rows(const int8_t* x, const int8_t* w, int8_t* codes, float* vals,
                              const float* scale, const float* bias, int32_t zc, int64_t L,
                              int64_t E, int64_t K, bool reverse, float su, float zpu, float qmin,
                              float qmax, float off, int64_t r0, int64_t r1, int32_t* acc, float* pre) {
  for (int64_t r = r0; r < r1; ++r) {  // r = b * L + p
    const int64_t b = r / L, p = r % L;
    for (int64_t c = 0; c < E; ++c) acc[c] = 0;
    for (int64_t j = 0; j < K; ++j) {
      const int64_t src = reverse ? p + (K - 1) - j : p - (K - 1) + j;
      if (src < 0 || src >= L) continue;
      const int8_t* xr = x + (b * L + src) * E;
      for (int64_t c = 0; c < E; ++c) acc[c] += (static_cast<int32_t>(xr[c]) + zc) * static_cast<int32_t>(w[j * E + c]);
    }
    for (int64_t c = 0; c < E; ++c) pre[c] = static_cast<float>(acc[c]) * scale[c] + bias[c];
    int8_t* cr = codes + r * E;
    float* vr = vals + r * E;
    for (int64_t c = 0; c < E; ++c) {
      const float u = silu_f32(pre[c]);
      float q = std::nearbyint(u * (1.0f / su)) + zpu;
      q = q < qmin ? qmin : q;
      q = q > qmax ? qmax : q;
      cr[c] = static_cast<int8_t>(static_cast<int32_t>(q - off));
      vr[c] = (q - zpu) * su;
    }
  }
}
QI_DISPATCH(conv_silu_rows,
            (const int8_t* x, const int8_t* w, int8_t* codes, float* vals, const float* scale,
             const float* bias, int32_t zc, int64_t L, int64_t E, int64_t K, bool reverse, float su,
             float zpu, float qmin, float qmax, float off, int64_t r0, int64_t r1, int32_t* acc,
             float* pre),
            (x, w, codes, vals, scale, bias, zc, L, E, K, reverse, su, zpu, qmin, qmax, off, r0, r1, acc, pre))

// delta codes from dt (M, E): delta = softplus(dt + bias[c]); uniform grid: index =
// clamp(nearbyint(delta * (1 / s)) + zp, qmin, qmax) - qmin - off; log grid: r = delta * (1 / s)
// (delta >= 0), index = #{k : r < c_k} - off (r == 0: N), the DeltaTable's index.
QI_INLINE void delta_rows(const float* dt, const float* bias, int8_t* out, bool uniform, float s,
                          float zp, float qmin, float qmax, float off, const float* thr, int32_t N,
                          int64_t E, int64_t r0, int64_t r1, float* buf) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* d = dt + r * E;
    int8_t* o = out + r * E;
    for (int64_t c = 0; c < E; ++c) buf[c] = softplus_f32(d[c] + bias[c]);
    if (uniform) {
      for (int64_t c = 0; c < E; ++c) {
        float q = std::nearbyint(buf[c] * (1.0f / s)) + zp;
        q = q < qmin ? qmin : q;
        q = q > qmax ? qmax : q;
        o[c] = static_cast<int8_t>(static_cast<int32_t>(q - qmin - off));
      }
    } else {
      for (int64_t c = 0; c < E; ++c) {
        float rr = buf[c] * (1.0f / s);
        rr = rr < 0.0f ? 0.0f : rr;
        o[c] = static_cast<int8_t>(log_count(rr, thr, N) - static_cast<int32_t>(off));
      }
    }
  }
}
QI_DISPATCH(delta_rows,
            (const float* dt, const float* bias, int8_t* out, bool uniform, float s, float zp, float qmin,
             float qmax, float off, const float* thr, int32_t N, int64_t E, int64_t r0, int64_t r1,
             float* buf),
            (dt, bias, out, uniform, s, zp, qmin, qmax, off, thr, N, E, r0, r1, buf))

// lo and hi as the low and high halves of one int32: an int16 pair for vpmaddwd
// (dt_row_pairs), which multiplies pairs lane by lane and adds each lane's two products
QI_INLINE int32_t i16_pair(int32_t lo, int32_t hi) {
  return static_cast<int32_t>((static_cast<uint32_t>(hi) << 16) | (static_cast<uint32_t>(lo) & 0xffffu));
}

// dt_proj on its int8 input codes, one row: acc[n] = sum_k x[k] w[n, k] over the K = dt_rank
// inputs (exact in int32), then the GEMM epilogue's float operations,
// dt[n] = float(acc[n] + z wsum[n]) * (r cs[n]) (gemm_epilogue without bias).
QI_INLINE void dt_row(const int8_t* __restrict x, const int8_t* __restrict wT, int64_t K, int64_t E,
                      float r, int32_t z, const int32_t* __restrict wsum, const float* __restrict cs,
                      int32_t* __restrict acc, float* __restrict sc, float* __restrict dt) {
  for (int64_t n = 0; n < E; ++n) acc[n] = 0;
  for (int64_t k = 0; k < K; ++k) {
    const int32_t xv = x[k];
    const int8_t* __restrict w = wT + k * E;
    for (int64_t n = 0; n < E; ++n) acc[n] += xv * static_cast<int32_t>(w[n]);
  }
  for (int64_t n = 0; n < E; ++n) sc[n] = r * cs[n];
  for (int64_t n = 0; n < E; ++n) dt[n] = static_cast<float>(acc[n] + z * wsum[n]) * sc[n];
}
QI_DISPATCH(dt_row,
            (const int8_t* x, const int8_t* wT, int64_t K, int64_t E, float r, int32_t z,
             const int32_t* wsum, const float* cs, int32_t* acc, float* sc, float* dt),
            (x, wT, K, E, r, z, wsum, cs, acc, sc, dt))

// The scan's output stage of one direction, channels last (M = B L rows of E):
// v = Q_y(y) + D[c] u; with a gate, v = v * Q_z(silu(z)); with prev (the forward branch's
// output), v = (prev + v) / 2 (the mixer's average); written to out.
QI_INLINE void scan_out_rows(const float* y, const float* u, const float* z, int64_t zs,
                             const float* D, const float* prev, float* out, float sy, float zpy,
                             float qyl, float qyh, bool gate, float sz, float zpz, float qzl,
                             float qzh, int64_t E, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* yr = y + r * E;
    const float* ur = u + r * E;
    const float* zr = z + r * zs;
    float* o = out + r * E;
    for (int64_t c = 0; c < E; ++c) {
      float v = quant_value(yr[c], 1.0f / sy, sy, zpy, qyl, qyh) + D[c] * ur[c];
      if (gate) v = v * quant_value(silu_f32(zr[c]), 1.0f / sz, sz, zpz, qzl, qzh);
      if (prev != nullptr) v = (prev[r * E + c] + v) * 0.5f;
      o[c] = v;
    }
  }
}
QI_DISPATCH(scan_out_rows,
            (const float* y, const float* u, const float* z, int64_t zs, const float* D, const float* prev,
             float* out, float sy, float zpy, float qyl, float qyh, bool gate, float sz, float zpz,
             float qzl, float qzh, int64_t E, int64_t r0, int64_t r1),
            (y, u, z, zs, D, prev, out, sy, zpy, qyl, qyh, gate, sz, zpz, qzl, qzh, E, r0, r1))

struct Grid {  // one quantizer of the scan, expanded to (G, d, n)
  int64_t kind = 0;  // 1 uniform, 2 log1m, 3 log_signed
  const float* scale = nullptr;
  const float* zp = nullptr;
  int32_t qmin = 0, qmax = 0;
  const float* thr = nullptr;  // log grids: (qmax - qmin) thresholds
  const int64_t* group = nullptr;  // (l) time groups (h)
  int64_t G = 1;
  // base-2 log grid whose thresholds are S 2^-(k+1) (S = fl(sqrt 2)): codes from the bits
  bool pow2 = false;
  int32_t s_mant = 0;
};

struct ScanArgs {
  int64_t nb, d, l, n, gB, dg, J;
  const float* u;  // (b, d, l) strides su
  int64_t su[3];
  const int8_t* didx;  // (b, d, l) strides sd: delta code index - doff
  int64_t sd[3];
  int64_t doff;
  const float* dv0;    // (J) delta value of each index
  const float* dvals;  // dv0 + doff: dvals[code]
  const float* A;  // (d, n)
  const float* B;  // (b, gB, l, n) strides sB
  int64_t sB[4];
  const float* C;  // (b, gB, l, n) strides sC
  int64_t sC[4];
  float* y;  // (b, d, l) strides sy
  int64_t sy[3];
  Grid a, b, h;
  int32_t F, F2;
};

constexpr float kTiny = 7.888609052210118e-31f;  // 2^-100: below, codes by search

// Base 2 with thresholds c_k = S 2^-(k+1) for every k whose threshold is above kTiny: the
// code count of a normal r >= kTiny is clamp(127 - qmin - exponent - [mantissa >= S], 0, N).
void check_pow2(Grid& g) {
  g.pow2 = false;
  if (g.kind == 1 || g.qmin < 0) return;
  const int32_t N = g.qmax - g.qmin;
  const float S = std::ldexp(g.thr[0], g.qmin + 1);
  if (!(S >= 1.0f && S < 2.0f)) return;
  uint32_t sb;
  std::memcpy(&sb, &S, sizeof(S));
  for (int32_t j = 0; j < N; ++j) {
    const int32_t a = g.qmin + j + 1;
    if (a <= 101) {
      if (g.thr[j] != std::ldexp(S, -a)) return;
    } else if (!(g.thr[j] < kTiny)) {
      return;
    }
  }
  g.s_mant = static_cast<int32_t>(sb & 0x7fffff);
  g.pow2 = true;
}

QI_INLINE int32_t pow2_count(const Grid& g, float r) {
  int32_t bits;
  std::memcpy(&bits, &r, sizeof(r));
  int32_t k = (127 - g.qmin) - (bits >> 23) - static_cast<int32_t>((bits & 0x7fffff) >= g.s_mant);
  const int32_t N = g.qmax - g.qmin;
  k = k < 0 ? 0 : k;
  k = k > N ? N : k;
  return r == 0.0f ? N : k;
}

// Per-channel constants (scan_reference: a_code_table and the tables of int_scan_reference)
struct ChannelTables {
  std::vector<int32_t> at;      // (J, n) A term integer per delta code
  std::vector<uint8_t> used;    // (J) delta codes of this task's rows
  std::vector<int32_t> s2;      // (n) round(s_A 2^F2)
  std::vector<float> invB, zpB; // (n)
  std::vector<float> rb;        // (G, n) (s_B / s_g) 2^F
  std::vector<float> hs;        // (G, n) h scales
  std::vector<int32_t> lo, hi;  // (G, n) code bounds in the hq domain
  std::vector<int64_t> m1, m2;  // (G, n) boundary multipliers of the group entered
  std::vector<int32_t> t2;      // (kRows, l, n) B terms
  std::vector<int32_t> h;       // (kRows, n)
  std::vector<float> prod;      // (P) products for y
  // the SIMD rows (int_scan_simd.h)
  std::vector<float> du_blk, y_blk;  // (block, nb, l) delta_hat u and y of a block of channels
  std::vector<int32_t> off_blk;      // (block, nb, l) offset of the step's delta code in `at`
  std::vector<uint8_t> used_blk;     // (block, J) delta codes used by each channel
  const float* du_c = nullptr;       // this channel's (nb, l) in the buffers
  const int32_t* off_c = nullptr;
  float* y_c = nullptr;
  std::vector<int32_t> atc, ar;      // (J, n) log1m: min(at, 31) and 2^(that - 1)
};

constexpr int64_t kRows = 4;

// The A term of every delta code used by rows b0 .. b0 + nr - 1 of channel c (a_code_table)
QI_INLINE void fill_a_table(const ScanArgs& a, int64_t c, int64_t b0, int64_t nr, ChannelTables& T) {
  const int64_t n = a.n, J = a.J;
  const float* sA = a.a.scale + c * n;
  const float* zA = a.a.zp + c * n;
  const float* Ac = a.A + c * n;
  std::fill(T.used.begin(), T.used.end(), 0);
  for (int64_t r = 0; r < nr; ++r) {
    const int8_t* di = a.didx + (b0 + r) * a.sd[0] + c * a.sd[1];
    for (int64_t t = 0; t < a.l; ++t) T.used[di[t * a.sd[2]] + a.doff] = 1;
  }
  const double two_f2 = std::ldexp(1.0, a.F2);
  const int32_t NA = a.a.qmax - a.a.qmin, shift = a.F2 - a.F;
  float* abar = T.prod.data();  // n floats of scratch (prod holds >= n)
  for (int64_t j = 0; j < J; ++j) {
    if (!T.used[j]) continue;
    const float dv = a.dv0[j];
    int32_t* out = T.at.data() + j * n;
    for (int64_t k = 0; k < n; ++k) abar[k] = exp_f32(dv * Ac[k]);
    if (a.a.kind == 2) {  // log1m: the shift qA + F2 - F (at most 62)
      for (int64_t k = 0; k < n; ++k) {
        float dist = 1.0f - abar[k];
        dist = dist < 0.0f ? 0.0f : dist;
        abar[k] = dist / sA[k];
      }
      for (int64_t k = 0; k < n; ++k) {
        const int32_t cnt = a.a.pow2 && (abar[k] >= kTiny || abar[k] == 0.0f)
                                ? pow2_count(a.a, abar[k])
                                : log_count(abar[k], a.a.thr, NA);
        const int32_t v = a.a.qmin + cnt + shift;
        out[k] = v < 62 ? v : 62;
      }
    } else {  // uniform: Afix = round(A_hat 2^F2)
      for (int64_t k = 0; k < n; ++k) {
        float q = std::nearbyint(abar[k] / sA[k]) + zA[k];
        q = q < a.a.qmin ? static_cast<float>(a.a.qmin) : q;
        q = q > a.a.qmax ? static_cast<float>(a.a.qmax) : q;
        out[k] = static_cast<int32_t>(
            std::nearbyint((static_cast<double>(q - zA[k]) * static_cast<double>(sA[k])) * two_f2));
      }
    }
  }
}

// Per-channel constants: S2, 1 / s_B, the h tables and the boundary multipliers
QI_INLINE void fill_channel(const ScanArgs& a, int64_t c, ChannelTables& T) {
  const int64_t n = a.n, G = a.h.G;
  const float* sA = a.a.scale + c * n;
  const float* sB = a.b.scale + c * n;
  const double two_f1 = std::ldexp(1.0, a.F), two_f2 = std::ldexp(1.0, a.F2);  // exact powers of two
  for (int64_t k = 0; k < n; ++k) {
    T.s2[k] = static_cast<int32_t>(std::nearbyint(static_cast<double>(sA[k]) * two_f2));
    T.invB[k] = 1.0f / sB[k];
    T.zpB[k] = a.b.zp[c * n + k];
  }
  const float two_f = std::ldexp(1.0f, a.F);
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t k = 0; k < n; ++k) {
      const int64_t o = (g * a.d + c) * n + k;
      T.hs[g * n + k] = a.h.scale[o];
      T.rb[g * n + k] = (sB[k] / a.h.scale[o]) * two_f;
      T.lo[g * n + k] = a.h.qmin - static_cast<int32_t>(a.h.zp[o]);
      T.hi[g * n + k] = a.h.qmax - static_cast<int32_t>(a.h.zp[o]);
    }
  }
  if (a.h.group != nullptr) {
    for (int64_t t = 1; t < a.l; ++t) {
      const int64_t g = a.h.group[t], gp = a.h.group[t - 1];
      if (g == gp) continue;
      for (int64_t k = 0; k < n; ++k) {
        const double ratio = static_cast<double>(a.h.scale[(gp * a.d + c) * n + k]) /
                             static_cast<double>(a.h.scale[(g * a.d + c) * n + k]);
        T.m1[g * n + k] = static_cast<int64_t>(std::nearbyint(ratio * two_f1));
        T.m2[g * n + k] = static_cast<int64_t>(std::nearbyint((ratio * static_cast<double>(sA[k])) * two_f2));
      }
    }
  }
}

// B terms of one row: t2[t * n + k] = B_hat / s_g(t) 2^F, rounded, capped at +-cap2 2^F
QI_INLINE void b_terms_row(const ScanArgs& a, const ChannelTables& T, int64_t b, int64_t c,
                           int32_t* __restrict t2) {
  const int64_t n = a.n, grp = c / a.dg;
  const float cap = std::ldexp(static_cast<float>(2 * (a.h.qmax - a.h.qmin) + 1), a.F);
  const float* ur = a.u + b * a.su[0] + c * a.su[1];
  const int8_t* di = a.didx + b * a.sd[0] + c * a.sd[1];
  const float* Bb = a.B + b * a.sB[0] + grp * a.sB[1];
  const int32_t N = a.b.qmax - a.b.qmin;
  float xs[64], r[64];
  int32_t m[64];
  for (int64_t t = 0; t < a.l; ++t) {
    const float du = a.dvals[di[t * a.sd[2]]] * ur[t * a.su[2]];
    const float* Bt = Bb + t * a.sB[2];
    const int64_t g = a.h.group != nullptr ? a.h.group[t] : 0;
    const float* rb = T.rb.data() + g * n;
    int32_t* out = t2 + t * n;
    for (int64_t k0 = 0; k0 < n; k0 += 64) {
      const int64_t kn = std::min<int64_t>(64, n - k0);
      for (int64_t i = 0; i < kn; ++i) xs[i] = du * Bt[(k0 + i) * a.sB[3]];
      if (a.b.kind == 3) {  // log_signed: +-min(rb 2^-m, cap), 0 for the zero code
        int32_t tiny = 0;
        for (int64_t i = 0; i < kn; ++i) {
          r[i] = std::fabs(xs[i]) * T.invB[k0 + i];
          tiny |= static_cast<int32_t>(r[i] < kTiny && r[i] != 0.0f);
        }
        if (a.b.pow2 && !tiny) {
          for (int64_t i = 0; i < kn; ++i) m[i] = pow2_count(a.b, r[i]);
        } else {
          for (int64_t i = 0; i < kn; ++i) m[i] = log_count(r[i], a.b.thr, N);
        }
        for (int64_t i = 0; i < kn; ++i) {
          const int32_t code = a.b.qmin + m[i];
          float mag = rb[k0 + i] * pow2i(-(code < 126 ? code : 126));
          mag = mag < cap ? mag : cap;
          int32_t v = static_cast<int32_t>(std::nearbyint(mag));
          v = m[i] >= N ? 0 : v;
          out[k0 + i] = xs[i] < 0.0f ? -v : v;
        }
      } else {  // uniform: clamp((qB - zpB) rb, +-cap)
        for (int64_t i = 0; i < kn; ++i) {
          const float zp = T.zpB[k0 + i];
          float q = std::nearbyint(xs[i] * T.invB[k0 + i]) + zp;
          q = q < a.b.qmin ? static_cast<float>(a.b.qmin) : q;
          q = q > a.b.qmax ? static_cast<float>(a.b.qmax) : q;
          float v = (q - zp) * rb[k0 + i];
          v = v < -cap ? -cap : v;
          v = v > cap ? cap : v;
          out[k0 + i] = static_cast<int32_t>(std::nearbyint(v));
        }
      }
    }
  }
}

// y = sum_k v[k] in the fixed order of scan_reference.tree_sum (v padded with zeros to P)
QI_INLINE float tree_sum(float* v, int64_t n, int64_t P) {
  for (int64_t k = n; k < P; ++k) v[k] = 0.0f;
  for (int64_t w = P / 2; w >= 1; w /= 2) {
    for (int64_t k = 0; k < w; ++k) v[k] = v[k] + v[k + w];
  }
  return v[0];
}

// One step of a row inside a time group (kLog1m: the A term is a shift)
template <bool kLog1m>
QI_INLINE void step_in_group(int32_t* __restrict h, const int32_t* __restrict at,
                             const int32_t* __restrict s2, const int32_t* __restrict t2,
                             const int32_t* __restrict lo, const int32_t* __restrict hi,
                             int32_t F, int32_t F2, int64_t n) {
  const int32_t half = int32_t(1) << (F - 1), mask = (int32_t(1) << F) - 1;
  const int32_t one = int32_t(1) << F;
  for (int64_t k = 0; k < n; ++k) {
    const int32_t hq = h[k];
    int32_t term;
    if constexpr (kLog1m) {
      const int32_t sh = at[k] < 31 ? at[k] : 31;  // rounding shifts: (v + 2^(sh-1)) >> sh
      term = hq * one - ((hq * s2[k] + (int32_t(1) << (sh - 1))) >> sh);
    } else {
      term = (hq * at[k] + (int32_t(1) << (F2 - F - 1))) >> (F2 - F);
    }
    const int32_t x = term + t2[k];
    int32_t q = (x + half) >> F;
    q -= static_cast<int32_t>((x & mask) == half) & q & 1;
    q = q < lo[k] ? lo[k] : q;
    q = q > hi[k] ? hi[k] : q;
    h[k] = q;
  }
}

// The first step of a group (ratio R != 1): int64 terms capped at +-cap1 2^F
QI_INLINE void step_boundary(const ScanArgs& a, int32_t* h, const int32_t* at,
                             const ChannelTables& T, const int32_t* t2, int64_t g) {
  const int64_t n = a.n, F = a.F, F2 = a.F2;
  const int64_t cap1 = static_cast<int64_t>(3 * (a.h.qmax - a.h.qmin) + 2) << F;
  const int64_t half = int64_t(1) << (F - 1), mask = (int64_t(1) << F) - 1;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t hq = h[k], m1 = T.m1[g * n + k];
    int64_t term;
    if (a.a.kind == 2) {
      term = hq * m1 - ((hq * T.m2[g * n + k] + (int64_t(1) << (at[k] - 1))) >> at[k]);
    } else {
      term = ((hq * at[k]) * m1 + (int64_t(1) << (F2 - 1))) >> F2;
    }
    term = term < -cap1 ? -cap1 : (term > cap1 ? cap1 : term);
    const int64_t x = term + t2[k];
    int64_t q = (x + half) >> F;
    q -= static_cast<int64_t>((x & mask) == half) & q & 1;
    q = std::max<int64_t>(q, T.lo[g * n + k]);
    q = std::min<int64_t>(q, T.hi[g * n + k]);
    h[k] = static_cast<int32_t>(q);
  }
}

template <bool kLog1m>
QI_INLINE void scan_rows(const ScanArgs& a, ChannelTables& T, int64_t b0, int64_t nr, int64_t c) {
  const int64_t n = a.n, l = a.l, grp = c / a.dg;
  int64_t P = 1;
  while (P < n) P *= 2;
  for (int64_t r = 0; r < nr; ++r) b_terms_row(a, T, b0 + r, c, T.t2.data() + r * l * n);
  std::fill(T.h.begin(), T.h.end(), 0);
  for (int64_t t = 0; t < l; ++t) {
    const int64_t g = a.h.group != nullptr ? a.h.group[t] : 0;
    const bool first = t == 0;
    const bool boundary = !first && a.h.group != nullptr && a.h.group[t - 1] != g;
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t b = b0 + r;
      int32_t* hr = T.h.data() + r * n;
      const int32_t* t2 = T.t2.data() + (r * l + t) * n;
      const int32_t* at = T.at.data() + (a.didx[b * a.sd[0] + c * a.sd[1] + t * a.sd[2]] + a.doff) * n;
      if (first) {  // h_{-1} = 0: the value is the B term
        for (int64_t k = 0; k < n; ++k) hr[k] = 0;
        step_in_group<kLog1m>(hr, at, T.s2.data(), t2, T.lo.data() + g * n, T.hi.data() + g * n,
                              a.F, a.F2, n);
      } else if (boundary) {
        step_boundary(a, hr, at, T, t2, g);
      } else {
        step_in_group<kLog1m>(hr, at, T.s2.data(), t2, T.lo.data() + g * n, T.hi.data() + g * n,
                              a.F, a.F2, n);
      }
      const float* Ct = a.C + b * a.sC[0] + grp * a.sC[1] + t * a.sC[2];
      const float* hs = T.hs.data() + g * n;
      float* p = T.prod.data();
      for (int64_t k = 0; k < n; ++k) p[k] = (static_cast<float>(hr[k]) * hs[k]) * Ct[k * a.sC[3]];
      a.y[b * a.sy[0] + c * a.sy[1] + t * a.sy[2]] = tree_sum(p, n, P);
    }
  }
}

QI_INLINE void init_tables(const ScanArgs& a, ChannelTables& T) {
  const int64_t n = a.n, G = a.h.G;
  int64_t P = 1;
  while (P < n) P *= 2;
  T.at.assign(a.J * n, 0);
  T.used.assign(a.J, 0);
  T.s2.resize(n);
  T.invB.resize(n);
  T.zpB.resize(n);
  T.rb.resize(G * n);
  T.hs.resize(G * n);
  T.lo.resize(G * n);
  T.hi.resize(G * n);
  T.m1.assign(G * n, 0);
  T.m2.assign(G * n, 0);
  T.t2.resize(kRows * a.l * n);
  T.h.resize(kRows * n);
  T.prod.resize(std::max<int64_t>(P, n));
}

// Tasks are channels: the tables of channel c, then its batch rows kRows at a time (the
// SIMD paths in int_scan_simd.h do the same with their rows)
void scan_tasks_generic(const ScanArgs& a, int64_t begin, int64_t end) {
  ChannelTables T;
  init_tables(a, T);
  for (int64_t c = begin; c < end; ++c) {
    fill_channel(a, c, T);
    fill_a_table(a, c, 0, a.nb, T);
    for (int64_t b0 = 0; b0 < a.nb; b0 += kRows) {
      const int64_t nr = std::min(kRows, a.nb - b0);
      if (a.a.kind == 2) {
        scan_rows<true>(a, T, b0, nr, c);
      } else {
        scan_rows<false>(a, T, b0, nr, c);
      }
    }
  }
}

}  // namespace

#ifdef QI_X86
#include <immintrin.h>
namespace {
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,avx512f,avx512bw,avx512dq,avx512vl")
namespace qi512 {
#define QI_W 16
#include "int_scan_simd.h"
#undef QI_W
}  // namespace qi512
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2")
namespace qi256 {
#define QI_W 8
#include "int_scan_simd.h"
#undef QI_W
}  // namespace qi256
#pragma GCC pop_options
}  // namespace
#endif

namespace {

void conv_silu_any(const int8_t* x, const int8_t* wT, int8_t* codes, float* vals, const float* scale,
                   const float* bias, int32_t zc, int64_t L, int64_t E, int64_t K, bool reverse, float su,
                   float zpu, float qmin, float qmax, float off, int64_t r0, int64_t r1, int32_t* acc,
                   float* pre) {
#ifdef QI_X86
  if (isa() == kAvx512) return qi512::conv_silu(x, wT, codes, vals, scale, bias, zc, L, E, K, reverse, su, zpu, qmin, qmax, off, r0, r1, acc, pre);
  if (isa() == kAvx2) return qi256::conv_silu(x, wT, codes, vals, scale, bias, zc, L, E, K, reverse, su, zpu, qmin, qmax, off, r0, r1, acc, pre);
#endif
  conv_silu_rows_any(x, wT, codes, vals, scale, bias, zc, L, E, K, reverse, su, zpu, qmin, qmax, off, r0, r1, acc, pre);
}

void delta_any(const float* dt, const float* bias, int8_t* out, bool uniform, float s, float zp, float qmin,
               float qmax, float off, const float* thr, int32_t N, const Grid* pow2, int64_t E, int64_t r0,
               int64_t r1, float* buf) {
#ifdef QI_X86
  if (isa() == kAvx512) return qi512::delta(dt, bias, out, uniform, s, zp, qmin, qmax, off, thr, N, pow2, E, r0, r1);
  if (isa() == kAvx2) return qi256::delta(dt, bias, out, uniform, s, zp, qmin, qmax, off, thr, N, pow2, E, r0, r1);
#endif
  delta_rows_any(dt, bias, out, uniform, s, zp, qmin, qmax, off, thr, N, E, r0, r1, buf);
}

// dt_proj's row: the int16-pair SIMD product where there is one (K <= 128), else dt_row
void dt_any(const int8_t* x, const int8_t* wT, const int32_t* wp, int64_t K, int64_t E, float r, int32_t z,
            const int32_t* wsum, const float* cs, int32_t* acc, float* sc, float* dt) {
#ifdef QI_X86
  if (wp != nullptr && isa() == kAvx512) return qi512::dt_row_pairs(x, wp, K, E, r, z, wsum, cs, dt);
  if (wp != nullptr && isa() == kAvx2) return qi256::dt_row_pairs(x, wp, K, E, r, z, wsum, cs, dt);
#endif
  dt_row_any(x, wT, K, E, r, z, wsum, cs, acc, sc, dt);
}

void scan_out_any(const float* y, const float* u, const float* z, int64_t zs, const float* D, const float* prev,
                  float* out, float sy, float zpy, float qyl, float qyh, bool gate, float sz, float zpz,
                  float qzl, float qzh, int64_t E, int64_t r0, int64_t r1) {
#ifdef QI_X86
  if (isa() == kAvx512) return qi512::scan_out(y, u, z, zs, D, prev, out, sy, zpy, qyl, qyh, gate, sz, zpz, qzl, qzh, E, r0, r1);
  if (isa() == kAvx2) return qi256::scan_out(y, u, z, zs, D, prev, out, sy, zpy, qyl, qyh, gate, sz, zpz, qzl, qzh, E, r0, r1);
#endif
  scan_out_rows_any(y, u, z, zs, D, prev, out, sy, zpy, qyl, qyh, gate, sz, zpz, qzl, qzh, E, r0, r1);
}

void scan_tasks_any(const ScanArgs& a, int64_t begin, int64_t end) {
#ifdef QI_X86
  if (isa() == kAvx512) return qi512::tasks(a, begin, end);
  if (isa() == kAvx2) return qi256::tasks(a, begin, end);
#endif
  scan_tasks_generic(a, begin, end);
}

std::vector<at::Tensor> conv_silu_codes(const at::Tensor& x, const at::Tensor& w, int64_t zc, double sx,
                                        const at::Tensor& sw, const at::Tensor& bias, bool reverse,
                                        double su, double zpu, double qmin, double qmax, int64_t off) {
  TORCH_CHECK(x.dim() == 3 && x.is_contiguous() && x.scalar_type() == at::kChar,
              "conv_silu_codes: contiguous int8 (B, L, E) codes");
  const int64_t L = x.size(1), E = x.size(2);
  TORCH_CHECK(w.dim() == 2 && w.size(0) == E && w.is_contiguous() && w.scalar_type() == at::kChar,
              "conv_silu_codes: int8 (E, K) weight codes");
  TORCH_CHECK(sw.numel() == E && bias.numel() == E && sw.scalar_type() == at::kFloat &&
                  bias.scalar_type() == at::kFloat, "conv_silu_codes: float32 (E) scales and bias");
  auto codes = at::empty(x.sizes(), x.options());
  auto vals = at::empty(x.sizes(), x.options().dtype(at::kFloat));
  // the per-channel product sx * sw[c] once, as the reference computes it
  auto scale = at::empty({E}, sw.options());
  const float sxf = static_cast<float>(sx);
  const auto swc = sw.contiguous(), bc = bias.contiguous();
  for (int64_t c = 0; c < E; ++c) scale.data_ptr<float>()[c] = sxf * swc.data_ptr<float>()[c];
  const auto wT = w.t().contiguous();  // (K, E): the taps of W channels side by side
  at::parallel_for(0, x.size(0) * L, 8, [&](int64_t r0, int64_t r1) {
    std::vector<int32_t> acc(E);
    std::vector<float> pre(E);
    conv_silu_any(x.data_ptr<int8_t>(), wT.data_ptr<int8_t>(), codes.data_ptr<int8_t>(),
                  vals.data_ptr<float>(), scale.data_ptr<float>(), bc.data_ptr<float>(),
                  static_cast<int32_t>(zc), L, E, w.size(1), reverse, static_cast<float>(su),
                  static_cast<float>(zpu), static_cast<float>(qmin), static_cast<float>(qmax),
                  static_cast<float>(off), r0, r1, acc.data(), pre.data());
  });
  return {codes, vals};
}

// The delta grid as the kernels take it: its base-2 form where a log grid has one
// (check_pow2, as the scan's B grid)
Grid delta_grid(bool uniform, double qmin, double qmax, const float* thr) {
  Grid g;
  g.kind = uniform ? 1 : 3;
  g.qmin = static_cast<int32_t>(qmin);
  g.qmax = static_cast<int32_t>(qmax);
  g.thr = thr;
  if (!uniform) check_pow2(g);
  return g;
}

at::Tensor delta_codes(const at::Tensor& dt, const at::Tensor& bias, bool uniform, double s, double zp,
                       double qmin, double qmax, int64_t off, const std::optional<at::Tensor>& thr) {
  TORCH_CHECK(dt.dim() == 2 && dt.is_contiguous() && dt.scalar_type() == at::kFloat,
              "delta_codes: contiguous float32 (M, E) dt");
  const int64_t E = dt.size(1);
  TORCH_CHECK(bias.numel() == E && bias.scalar_type() == at::kFloat, "delta_codes: float32 (E) bias");
  TORCH_CHECK(uniform || (thr.has_value() && thr->is_contiguous() && thr->scalar_type() == at::kFloat),
              "delta_codes: float32 thresholds of the log grid");
  auto out = at::empty(dt.sizes(), dt.options().dtype(at::kChar));
  const auto bc = bias.contiguous();
  const float* tp = uniform ? nullptr : thr->data_ptr<float>();
  const int32_t N = uniform ? 0 : static_cast<int32_t>(thr->numel());
  const Grid g = delta_grid(uniform, qmin, qmax, tp);
  const Grid* pow2 = (!uniform && g.pow2) ? &g : nullptr;
  at::parallel_for(0, dt.size(0), 8, [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(E);
    delta_any(dt.data_ptr<float>(), bc.data_ptr<float>(), out.data_ptr<int8_t>(), uniform,
              static_cast<float>(s), static_cast<float>(zp), static_cast<float>(qmin),
              static_cast<float>(qmax), static_cast<float>(off), tp, N, pow2, E, r0, r1, buf.data());
  });
  return out;
}

// dt_proj and delta's codes in one pass (the fused Vim mixer): per row, dt_row (the
// dt_proj product and epilogue on the input codes) into a row buffer, then delta_codes' row
// on it; the same numbers as gemm_epilogue followed by delta_codes, without the float
// (M, E) dt in memory.
at::Tensor dt_delta_codes(const at::Tensor& x, const at::Tensor& w, const at::Tensor& row_scale,
                          const at::Tensor& row_zc, const at::Tensor& wsum, const at::Tensor& col_scale,
                          const at::Tensor& bias, bool uniform, double s, double zp, double qmin,
                          double qmax, int64_t off, const std::optional<at::Tensor>& thr) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == at::kChar,
              "dt_delta_codes: contiguous int8 (M, K) input codes");
  const int64_t M = x.size(0), K = x.size(1);
  TORCH_CHECK(w.dim() == 2 && w.size(1) == K && w.scalar_type() == at::kChar,
              "dt_delta_codes: int8 (E, K) weight codes");
  const int64_t E = w.size(0);
  TORCH_CHECK(row_scale.numel() == row_zc.numel() && (row_scale.numel() == 1 || row_scale.numel() == M),
              "dt_delta_codes: row scale / zero point of size 1 or M");
  TORCH_CHECK(row_scale.scalar_type() == at::kFloat && row_zc.scalar_type() == at::kInt &&
                  wsum.numel() == E && wsum.scalar_type() == at::kInt && col_scale.numel() == E &&
                  col_scale.scalar_type() == at::kFloat && bias.numel() == E && bias.scalar_type() == at::kFloat,
              "dt_delta_codes: float32 scales and bias, int32 zero points and column sums of size E");
  TORCH_CHECK(uniform || (thr.has_value() && thr->is_contiguous() && thr->scalar_type() == at::kFloat),
              "dt_delta_codes: float32 thresholds of the log grid");
  auto out = at::empty({M, E}, x.options());
  const auto wT = w.t().contiguous();  // (K, E)
  // the weights as int16 pairs for dt_row_pairs: (Kp, E) int32, pair i of column n holds
  // w[n, 2i] (low half) and w[n, 2i + 1] (high half, 0 past K)
  const int64_t Kp = (K + 1) / 2;
  std::vector<int32_t> wp;
  if (K <= 128) {
    wp.assign(Kp * E, 0);
    const int8_t* wd = wT.data_ptr<int8_t>();
    for (int64_t i = 0; i < Kp; ++i) {
      for (int64_t n = 0; n < E; ++n) {
        wp[i * E + n] = i16_pair(wd[(2 * i) * E + n], 2 * i + 1 < K ? wd[(2 * i + 1) * E + n] : 0);
      }
    }
  }
  const int32_t* wpp = wp.empty() ? nullptr : wp.data();
  const auto rs = row_scale.contiguous(), zc = row_zc.contiguous();
  const auto ws = wsum.contiguous(), cs = col_scale.contiguous(), bc = bias.contiguous();
  const bool per_row = row_scale.numel() == M && M > 1;
  const float* tp = uniform ? nullptr : thr->data_ptr<float>();
  const int32_t N = uniform ? 0 : static_cast<int32_t>(thr->numel());
  const Grid g = delta_grid(uniform, qmin, qmax, tp);
  const Grid* pow2 = (!uniform && g.pow2) ? &g : nullptr;
  at::parallel_for(0, M, 8, [&](int64_t r0, int64_t r1) {
    std::vector<int32_t> acc(E);
    std::vector<float> sc(E), dt(E), buf(E);
    for (int64_t m = r0; m < r1; ++m) {
      const float r = per_row ? rs.data_ptr<float>()[m] : rs.data_ptr<float>()[0];
      const int32_t z = per_row ? zc.data_ptr<int32_t>()[m] : zc.data_ptr<int32_t>()[0];
      dt_any(x.data_ptr<int8_t>() + m * K, wT.data_ptr<int8_t>(), wpp, K, E, r, z, ws.data_ptr<int32_t>(),
             cs.data_ptr<float>(), acc.data(), sc.data(), dt.data());
      delta_any(dt.data(), bc.data_ptr<float>(), out.data_ptr<int8_t>() + m * E, uniform,
                static_cast<float>(s), static_cast<float>(zp), static_cast<float>(qmin),
                static_cast<float>(qmax), static_cast<float>(off), tp, N, pow2, E, 0, 1, buf.data());
    }
  });
  return out;
}

at::Tensor scan_out(const at::Tensor& y, const at::Tensor& u, const std::optional<at::Tensor>& z,
                    const at::Tensor& D, const std::optional<at::Tensor>& prev, at::Tensor out,
                    double sy, double zpy, double qyl, double qyh, double sz, double zpz, double qzl,
                    double qzh) {
  TORCH_CHECK(y.dim() == 2 && y.is_contiguous() && u.sizes() == y.sizes() && u.is_contiguous() &&
                  out.sizes() == y.sizes() && out.is_contiguous(),
              "scan_out: contiguous (M, E) y, u and out");
  const int64_t E = y.size(1);
  TORCH_CHECK(!z || (z->dim() == 2 && z->size(0) == y.size(0) && z->size(1) == E && z->stride(1) == 1),
              "scan_out: z (M, E) with contiguous rows");
  TORCH_CHECK(!prev || (prev->sizes() == y.sizes() && prev->is_contiguous()), "scan_out: prev like y");
  TORCH_CHECK(D.numel() == E, "scan_out: D of size E");
  const auto Dc = D.contiguous();
  at::parallel_for(0, y.size(0), 8, [&](int64_t r0, int64_t r1) {
    scan_out_any(y.data_ptr<float>(), u.data_ptr<float>(), z ? z->data_ptr<float>() : nullptr,
                      z ? z->stride(0) : 0, Dc.data_ptr<float>(), prev ? prev->data_ptr<float>() : nullptr,
                      out.data_ptr<float>(), static_cast<float>(sy), static_cast<float>(zpy),
                      static_cast<float>(qyl), static_cast<float>(qyh), z.has_value(),
                      static_cast<float>(sz), static_cast<float>(zpz), static_cast<float>(qzl),
                      static_cast<float>(qzh), E, r0, r1);
  });
  return out;
}



Grid make_grid(int64_t kind, const at::Tensor& scale, const at::Tensor& zp, int64_t qmin,
               int64_t qmax, const std::optional<at::Tensor>& thr,
               const std::optional<at::Tensor>& group, int64_t d, int64_t n) {
  Grid g;
  g.kind = kind;
  TORCH_CHECK(scale.is_contiguous() && zp.is_contiguous() && scale.scalar_type() == at::kFloat &&
                  zp.scalar_type() == at::kFloat && scale.numel() == zp.numel() &&
                  scale.numel() % (d * n) == 0,
              "int_scan_fwd: quantizer scale / zero point must be float32 (G, d, n)");
  g.scale = scale.data_ptr<float>();
  g.zp = zp.data_ptr<float>();
  g.G = scale.numel() / (d * n);
  g.qmin = static_cast<int32_t>(qmin);
  g.qmax = static_cast<int32_t>(qmax);
  TORCH_CHECK(qmax > qmin && qmax - qmin <= 255, "int_scan_fwd: code range of at most 8 bits");
  if (kind != 1) {
    TORCH_CHECK(thr.has_value() && thr->is_contiguous() && thr->scalar_type() == at::kFloat &&
                    thr->numel() == qmax - qmin,
                "int_scan_fwd: float32 thresholds of the log grid");
    g.thr = thr->data_ptr<float>();
    check_pow2(g);
  }
  if (group.has_value() && group->defined() && group->numel() > 0) {
    TORCH_CHECK(group->is_contiguous() && group->scalar_type() == at::kLong, "int_scan_fwd: int64 groups");
    g.group = group->data_ptr<int64_t>();
  }
  return g;
}

at::Tensor int_scan_fwd(const at::Tensor& u, const at::Tensor& didx, int64_t didx_offset,
                        const at::Tensor& dvals,
                        const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                        int64_t a_kind, const at::Tensor& a_scale, const at::Tensor& a_zp,
                        int64_t a_qmin, int64_t a_qmax, const std::optional<at::Tensor>& a_thr,
                        int64_t b_kind, const at::Tensor& b_scale, const at::Tensor& b_zp,
                        int64_t b_qmin, int64_t b_qmax, const std::optional<at::Tensor>& b_thr,
                        const at::Tensor& h_scale, const at::Tensor& h_zp, int64_t h_qmin,
                        int64_t h_qmax, const std::optional<at::Tensor>& h_group,
                        int64_t F, int64_t F2, bool reverse, const std::optional<at::Tensor>& y_out) {
  TORCH_CHECK(u.dim() == 3 && u.scalar_type() == at::kFloat, "int_scan_fwd: float32 u (b, d, l)");
  const int64_t nb = u.size(0), d = u.size(1), l = u.size(2);
  TORCH_CHECK(didx.sizes() == u.sizes() && didx.scalar_type() == at::kChar,
              "int_scan_fwd: int8 delta codes (index - offset) shaped like u");
  TORCH_CHECK(didx_offset >= 0 && didx_offset <= 128 && dvals.numel() <= 128 + didx_offset,
              "int_scan_fwd: delta index offset / table size");
  TORCH_CHECK(dvals.is_contiguous() && dvals.scalar_type() == at::kFloat, "int_scan_fwd: float32 delta values");
  TORCH_CHECK(A.dim() == 2 && A.size(0) == d && A.is_contiguous() && A.scalar_type() == at::kFloat,
              "int_scan_fwd: float32 A (d, n)");
  const int64_t n = A.size(1);
  TORCH_CHECK(B.dim() == 4 && C.dim() == 4 && B.sizes() == C.sizes() && B.size(0) == nb &&
                  B.size(2) == l && B.size(3) == n && d % B.size(1) == 0 &&
                  B.scalar_type() == at::kFloat && C.scalar_type() == at::kFloat,
              "int_scan_fwd: float32 B, C (b, g, l, n)");
  TORCH_CHECK(a_kind == 1 || a_kind == 2, "int_scan_fwd: A grid uniform or log1m");
  TORCH_CHECK(b_kind == 1 || b_kind == 3, "int_scan_fwd: B grid uniform or log_signed");
  TORCH_CHECK(F >= 1 && F <= 29 && F2 > F && F2 <= 30, "int_scan_fwd: fraction bits");
  ScanArgs a{};
  a.nb = nb; a.d = d; a.l = l; a.n = n; a.gB = B.size(1); a.dg = d / B.size(1);
  a.J = dvals.numel();
  a.u = u.data_ptr<float>();
  a.didx = didx.data_ptr<int8_t>();
  a.doff = didx_offset;
  a.dv0 = dvals.data_ptr<float>();
  a.dvals = a.dv0 + didx_offset;
  a.A = A.data_ptr<float>();
  a.B = B.data_ptr<float>();
  a.C = C.data_ptr<float>();
  for (int i = 0; i < 3; ++i) {
    a.su[i] = u.stride(i);
    a.sd[i] = didx.stride(i);
  }
  for (int i = 0; i < 4; ++i) {
    a.sB[i] = B.stride(i);
    a.sC[i] = C.stride(i);
  }
  a.a = make_grid(a_kind, a_scale, a_zp, a_qmin, a_qmax, a_thr, std::nullopt, d, n);
  a.b = make_grid(b_kind, b_scale, b_zp, b_qmin, b_qmax, b_thr, std::nullopt, d, n);
  a.h = make_grid(1, h_scale, h_zp, h_qmin, h_qmax, std::nullopt, h_group, d, n);
  TORCH_CHECK(a.a.G == 1 && a.b.G == 1, "int_scan_fwd: A and B without time groups");
  if (a.h.group != nullptr) {
    TORCH_CHECK(h_group->numel() == l, "int_scan_fwd: h groups of another sequence length");
  } else {
    TORCH_CHECK(a.h.G == 1, "int_scan_fwd: h groups without a group map");
  }
  a.F = static_cast<int32_t>(F);
  a.F2 = static_cast<int32_t>(F2);
  at::Tensor y = y_out.has_value() ? *y_out : at::empty({nb, d, l}, u.options());
  TORCH_CHECK(y.sizes() == u.sizes() && y.scalar_type() == at::kFloat, "int_scan_fwd: y_out shaped like u");
  a.y = y.data_ptr<float>();
  for (int i = 0; i < 3; ++i) a.sy[i] = y.stride(i);
  if (reverse) {  // step s reads and writes position l - 1 - s: negative time strides
    a.u += (l - 1) * a.su[2];
    a.su[2] = -a.su[2];
    a.didx += (l - 1) * a.sd[2];
    a.sd[2] = -a.sd[2];
    a.B += (l - 1) * a.sB[2];
    a.sB[2] = -a.sB[2];
    a.C += (l - 1) * a.sC[2];
    a.sC[2] = -a.sC[2];
    a.y += (l - 1) * a.sy[2];
    a.sy[2] = -a.sy[2];
  }
  at::parallel_for(0, d, 1, [&](int64_t begin, int64_t end) { scan_tasks_any(a, begin, end); });
  return y;
}

}  // namespace

TORCH_LIBRARY(qmamba_int, m) {
  m.def("set_isa(int level) -> int", &set_isa);
  m.def(
      "quantize_codes(Tensor x, Tensor scale, Tensor zp, float qmin, float qmax, int offset, "
      "int inner, bool want_values) -> Tensor[]",
      &quantize_codes);
  m.def(
      "gemm_epilogue(Tensor acc, Tensor row_scale, Tensor row_zc, Tensor wsum, Tensor col_scale, "
      "Tensor? bias, bool split) -> Tensor",
      &gemm_epilogue);
  m.def(
      "epilogue_split_codes(Tensor acc, Tensor row_scale, Tensor row_zc, Tensor wsum, Tensor col_scale, "
      "Tensor? bias, bool split, int E, Tensor qparams) -> Tensor[]",
      &epilogue_split_codes);
  m.def(
      "dwconv1d_causal(Tensor x, Tensor w, int zc, float sx, Tensor sw, Tensor? bias) -> Tensor",
      &dwconv1d_causal);
  m.def(
      "conv_silu_codes(Tensor x, Tensor w, int zc, float sx, Tensor sw, Tensor bias, bool reverse, "
      "float su, float zpu, float qmin, float qmax, int off) -> Tensor[]",
      &conv_silu_codes);
  m.def(
      "delta_codes(Tensor dt, Tensor bias, bool uniform, float s, float zp, float qmin, float qmax, "
      "int off, Tensor? thr) -> Tensor",
      &delta_codes);
  m.def(
      "dt_delta_codes(Tensor x, Tensor w, Tensor row_scale, Tensor row_zc, Tensor wsum, Tensor col_scale, "
      "Tensor bias, bool uniform, float s, float zp, float qmin, float qmax, int off, Tensor? thr) -> Tensor",
      &dt_delta_codes);
  m.def(
      "scan_out(Tensor y, Tensor u, Tensor? z, Tensor D, Tensor? prev, Tensor(a!) out, float sy, "
      "float zpy, float qyl, float qyh, float sz, float zpz, float qzl, float qzh) -> Tensor(a!)",
      &scan_out);
  m.def(
      "int_scan_fwd(Tensor u, Tensor didx, int didx_offset, Tensor dvals, Tensor A, Tensor B, Tensor C, "
      "int a_kind, Tensor a_scale, Tensor a_zp, int a_qmin, int a_qmax, Tensor? a_thr, "
      "int b_kind, Tensor b_scale, Tensor b_zp, int b_qmin, int b_qmax, Tensor? b_thr, "
      "Tensor h_scale, Tensor h_zp, int h_qmin, int h_qmax, Tensor? h_group, int F, int F2, "
      "bool reverse, Tensor(a!)? y_out) -> Tensor",
      &int_scan_fwd);
}
