// Selective scan CPU kernels for qmamba (float forward/backward and the quantized forward).
//
// Built on first use by qmamba/ops/backend.py through torch.utils.cpp_extension.load.
// Layouts (scan_compiled.py prepares the dtype; all of one compute dtype, float or double):
//   float forward:     u, delta, z (b, d, l) and B, C (b, g, n, l) through their strides
//                      (any views); A (d, n), D, delta_bias (d) contiguous
//   backward:          everything contiguous, B / C as (b, g, l, n)
//   quantized forward: u, delta (b, d, l), B / C (b, g, l, n) contiguous
//   out, y (b, d, l)   last_state (b, d, n)
// Channel c uses B/C group c / (d / g). The float forward and the float quantized forward
// run "lane blocks": 8 float channels of one batch row side by side in one 256-bit vector
// (see "Float forward, lane-blocked"); the backward and the quantized forward's other cases
// (double, log grids of other bases than 2) run per (batch, channel) row.
//
// Exactness: no -ffast-math, no FMA contraction (-ffp-contract=off). The float scans
// follow the reference's formulas (scan_reference.py) to rounding: their own vectorized
// exp (may differ from PyTorch's in the last bit), y summed over the states in order, and
// (float forward) delta u computed once per step. The quantizer grids use only exact
// operations (division, std::nearbyint = round half to even under the default rounding
// mode as torch.round, comparisons with the spec's threshold tables), so on equal inputs
// they make the reference's decisions bit for bit.
//
// The kernels are registered as dispatcher operators (torch.ops.qmamba_scan.*) with
// TORCH_LIBRARY rather than as a pybind module: the headers below compile in a fraction
// of the time of <torch/extension.h>, which matters because the build runs on first use.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

namespace {

#define QMAMBA_INLINE __attribute__((always_inline)) inline

// x86-64 GCC builds also compile the float scan loops for AVX2 + FMA and pick them at run
// time (cpu_has_avx2_fma); other machines use the baseline (SSE2) build of the same code.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define QMAMBA_X86_DISPATCH 1
#define QMAMBA_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

bool cpu_has_avx2_fma() {
#ifdef QMAMBA_X86_DISPATCH
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

template <bool kFma>
QMAMBA_INLINE float mul_add(float a, float b, float c) {
  if constexpr (kFma) {
    return __builtin_fmaf(a, b, c);
  } else {
    return a * b + c;
  }
}

// exp over a block: out[i] = exp(x[i]).
// double: std::exp. float: a polynomial exp written so that the compiler vectorizes the
// loop (exp dominates the float scan, one per (t, k), and scalar expf calls do not
// vectorize without -ffast-math). x = k ln2 + r, |r| <= ln2 / 2 (Cody-Waite, ln2 split so
// that k * ln2_hi is exact); exp(r) by the degree-6 polynomial below (truncation 0.05
// ulp); 2^k applied in two halves so that results down to the subnormal range come out
// right; inf / NaN / underflow as std::exp. Accuracy against float64 exp on a dense sweep
// of [-104, 88]: 0.86 ulp with FMA (the AVX2 + FMA build; tests/ops checks <= 1.5),
// comparable to PyTorch's own vectorized exp (Sleef, 1 ulp). Builds with and without FMA
// may differ in the last bit (as PyTorch's exp does between its CPU capability builds).
// exp(r) ~ 1 + r + r^2 (c2 + c3 r + c4 r^2 + c5 r^3 + c6 r^4) on |r| <= ln2 / 2: fitted to
// the relative error (Lawson's minimax iteration in float64), rounded to float; truncation
// error 0.05 ulp, with one term less than the degree 7 Taylor polynomial.
constexpr float kExpC2 = 0.4999999403953552f;
constexpr float kExpC3 = 0.1666652113199234f;
constexpr float kExpC4 = 0.04166838899254799f;
constexpr float kExpC5 = 0.008368710055947304f;
constexpr float kExpC6 = 0.001381461275741458f;

template <bool kFma>
QMAMBA_INLINE void exp_block_float(const float* __restrict x, float* __restrict out,
                                   int64_t n) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;  // 9 trailing zero bits: k * kLn2Hi exact
  constexpr float kLn2Lo = 1.42860682030941723212e-6f;
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23: (v + kShift) - kShift = round(v)
  constexpr float kHi = 88.72283935546875f;  // above: +inf
  constexpr float kLo = -103.97208404541015625f;  // below: 0
  for (int64_t i = 0; i < n; ++i) {
    const float xi = x[i];
    float xc = xi < kLo ? kLo : xi;
    xc = xc > kHi ? kHi : xc;
    xc = xi != xi ? 0.0f : xc;
    const float kf = mul_add<kFma>(xc, kLog2e, kShift) - kShift;
    float r = mul_add<kFma>(-kf, kLn2Hi, xc);
    r = mul_add<kFma>(-kf, kLn2Lo, r);
    float p = kExpC6;
    p = mul_add<kFma>(p, r, kExpC5);
    p = mul_add<kFma>(p, r, kExpC4);
    p = mul_add<kFma>(p, r, kExpC3);
    p = mul_add<kFma>(p, r, kExpC2);
    p = mul_add<kFma>(p, r, 1.0f);
    p = mul_add<kFma>(p, r, 1.0f);
    const int32_t ki = static_cast<int32_t>(kf);
    const int32_t k1 = ki >> 1, k2 = ki - k1;  // each in [-76, 64]
    const uint32_t b1 = static_cast<uint32_t>(k1 + 127) << 23;
    const uint32_t b2 = static_cast<uint32_t>(k2 + 127) << 23;
    float s1, s2;
    std::memcpy(&s1, &b1, sizeof(float));
    std::memcpy(&s2, &b2, sizeof(float));
    float res = (p * s1) * s2;
    res = xi > kHi ? std::numeric_limits<float>::infinity() : res;
    res = xi < kLo ? 0.0f : res;
    out[i] = xi != xi ? xi : res;
  }
}

template <bool kFma>
QMAMBA_INLINE void exp_block(const float* x, float* out, int64_t n) {
  exp_block_float<kFma>(x, out, n);
}

template <bool kFma>
QMAMBA_INLINE void exp_block(const double* x, double* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = std::exp(x[i]);
}

template <typename T>
inline const T* opt_ptr(const std::optional<at::Tensor>& t) {
  return (t.has_value() && t->defined()) ? t->data_ptr<T>() : nullptr;
}

// --------------------------------------------------------------------------------------
// Float scan. The elementwise parts around the recurrence are done by PyTorch in
// scan_compiled.py (delta = softplus(delta + delta_bias), gate = silu(z), and their
// derivatives), so the kernels see the final delta and the gate:
//   out_t = (y_t + D u_t) * gate_t,   y_t = sum_k C_t[k] h_t[k],
//   h_t = exp(delta_t A) * h_{t-1} + (delta_t B_t) u_t.
// --------------------------------------------------------------------------------------

// h[k] = a[k] * h_prev[k] + (dt * B[k]) * u for all k, and returns y = sum_k h[k] * C[k].
// The sum uses 8 partial sums (lane j takes k = j mod 8) so that it vectorizes. The
// forward's lane blocks sum y in order k = 0, 1, ...; the backward recomputes y with this
// function only for d gate, so it may differ from the forward's y in the last bits.
template <typename T>
QMAMBA_INLINE T update_state(const T* __restrict a, const T* __restrict h_prev, T* __restrict h,
                      const T* __restrict B, const T* __restrict C, T dt, T ut, int64_t n) {
  for (int64_t k = 0; k < n; ++k) h[k] = a[k] * h_prev[k] + (dt * B[k]) * ut;
  T acc[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += h[k + j] * C[k + j];
  }
  T y = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; k < n; ++k) y += h[k] * C[k];
  return y;
}

// Abar[t * n + k] = exp(delta[t] * A[k]) for one (b, c): the exps of the whole sequence
// in one vectorized block.
template <typename T, bool kFma>
QMAMBA_INLINE void discretize(const T* dr, const T* Ar, int64_t l, int64_t n, T* scratch,
                              T* Abar) {
  for (int64_t t = 0; t < l; ++t) {
    const T dt = dr[t];
    for (int64_t k = 0; k < n; ++k) scratch[t * n + k] = dt * Ar[k];
  }
  exp_block<kFma>(scratch, Abar, l * n);
}

// --------------------------------------------------------------------------------------
// Float forward, lane-blocked: kLanes channels of one (batch, B/C group) at once, with the
// channel innermost (h[k * W + j] is state k of channel c0 + j). The W recurrences of a
// block run side by side (W * n independent chains per step) and y_t[j] = sum_k C_t[k]
// h_t[k][j] is a vertical sum over k, in order k = 0, 1, ..., so nothing is reduced across
// a vector. A block narrower than W (d / g not a multiple of W) fills its spare lanes with
// zeros and does not store them.
//
// The inputs are read through their strides: u, delta, z (b, d, l) and B, C (b, g, n, l)
// may be any views (the models pass transposes), and with `delta_bias` /
// `delta_softplus` / `gate_silu` the kernel also does delta = softplus(delta + bias) and
// gate = silu(z) itself (the inference path, scan_compiled.py), which saves PyTorch's
// separate passes and the copies that make their results contiguous.
// --------------------------------------------------------------------------------------
template <typename T>
constexpr int64_t kLanes = 32 / sizeof(T);  // one 256-bit vector of channels
constexpr int64_t kChunk = 16;               // time steps per block of exps (general path)

// A 256-bit vector of T (GCC / Clang vector extension). The recurrence is written with it
// because the auto-vectorizer leaves the (k, lane) loops partly scalar (7x slower measured);
// without -ffp-contract the element operations round exactly as the scalar ones.
template <typename T>
struct LaneVec {
  typedef T type __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename LaneVec<T>::type;

template <typename T>
QMAMBA_INLINE Vec<T> load_vec(const T* p) {
  Vec<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
QMAMBA_INLINE void store_vec(T* p, Vec<T> v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// 2^y over a block whose values all lie in [-125, 127] (no NaN): y = k + f, k = round(y),
// f = y - k in [-1/2, 1/2] exactly; 2^f = 1 + f q(f), q of degree 5 fitted to the relative
// error (Lawson's iteration in float64, then rounded to float: 0.93 ulp on [-1/2, 1/2]
// with FMA); 2^k added to the exponent field (normal results for these y). The in-range
// path of the float scans computes A_bar = exp(delta A) as 2^(delta (A log2 e)) with
// A log2 e rounded once per channel: three FMAs fewer per element than exp_block_float
// and no range clamps (the FMA units bound the scan), at a relative error of about |delta A| * 2^-23 from
// exp(delta A) (an ulp for |delta A| near 1; A_bar is then small where it is larger).
constexpr float kExp2Q0 = 0.6931471824645996f;
constexpr float kExp2Q1 = 0.24022647738456726f;
constexpr float kExp2Q2 = 0.055503323674201965f;
constexpr float kExp2Q3 = 0.00961843691766262f;
constexpr float kExp2Q4 = 0.0013398873852565885f;
constexpr float kExp2Q5 = 0.00015353361959569156f;

template <bool kFma>
QMAMBA_INLINE void exp2_block_in_range(const float* __restrict y, float* __restrict out,
                                       int64_t m) {
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23: (v + kShift) - kShift = round(v)
  for (int64_t i = 0; i < m; ++i) {
    const float yi = y[i];
    const float kf = (yi + kShift) - kShift;
    const float f = yi - kf;
    float q = kExp2Q5;
    q = mul_add<kFma>(q, f, kExp2Q4);
    q = mul_add<kFma>(q, f, kExp2Q3);
    q = mul_add<kFma>(q, f, kExp2Q2);
    q = mul_add<kFma>(q, f, kExp2Q1);
    q = mul_add<kFma>(q, f, kExp2Q0);
    const float p = mul_add<kFma>(q, f, 1.0f);
    int32_t bits;
    std::memcpy(&bits, &p, sizeof(bits));
    bits += static_cast<int32_t>(kf) << 23;
    std::memcpy(&out[i], &bits, sizeof(bits));
  }
}

// Whether every delta_t * A_k of a block lies in [-86, 0], so that delta_t (A_k log2 e)
// lies in [-125, 0] where exp2_block_in_range applies: delta in [0, dmax], A in
// [-amax, 0], dmax * amax <= 85 (the rounded products stay within 86). NaN or negative delta, positive A: false (the general path handles them).
QMAMBA_INLINE bool exp_args_in_range(const float* dt, int64_t m, const float* A, int64_t na) {
  int ok = 1;
  float dmax = 0.0f, amax = 0.0f;
  for (int64_t i = 0; i < m; ++i) {
    ok &= static_cast<int>(dt[i] >= 0.0f);
    dmax = dt[i] > dmax ? dt[i] : dmax;
  }
  for (int64_t i = 0; i < na; ++i) {
    ok &= static_cast<int>(A[i] <= 0.0f);
    amax = -A[i] > amax ? -A[i] : amax;
  }
  return ok && dmax <= 1e30f && amax <= 1e30f && dmax * amax <= 85.0f;
}

template <typename T>
struct FwdArgs {
  int64_t d, l, n, g, dg;
  const T *up, *dp, *biasp, *Ap, *Bp, *Cp, *Dp, *gp;
  int64_t su[3], sd[3], sg[3];  // (b, d, l) strides of u, delta, gate / z
  int64_t sB[4], sC[4];         // (b, g, n, l) strides of B, C
  bool softplus, silu;          // delta = softplus(delta + bias), gate = silu(z)
  T *outp, *lastp;              // (b, d, l), (b, d, n) contiguous
};

// Per-thread buffers of the lane-blocked forward
template <typename T>
struct LaneBuffers {
  std::vector<T> u, dt, gate, y, A, A2, h, arg, abar, B, C, tmp, tmp2;
  int64_t bc_key = -1;  // (b * g + group) whose B / C are in B, C
  LaneBuffers(int64_t l, int64_t n)
      : u(l * kLanes<T>), dt(l * kLanes<T>), gate(l * kLanes<T>), y(l * kLanes<T>),
        A(n * kLanes<T>), A2(n * kLanes<T>), h(n * kLanes<T>), arg(kChunk * n * kLanes<T>),
        abar(kChunk * n * kLanes<T>), B(l * n), C(l * n), tmp(l * kLanes<T>),
        tmp2(l * kLanes<T>) {}
};

// delta <- softplus(delta) and gate <- silu(gate) = x / (1 + exp(-x)) over m values;
// s1, s2: m values of scratch each. float: vectorized (exp_block_float and the series
// below); double: the C library. softplus(x) = max(x, 0) + log1p(exp(-|x|)): PyTorch's
// log1p(exp(x)) below its threshold 20, and x above it (the log1p term is then below half
// an ulp of x). log1p(v), v = exp(-|x|) in [0, 1], is 2 atanh(s) with s = v / (2 + v) in
// [0, 1/3], by its series to s^15 (truncation < 2e-9 relative): one division, and no
// cancellation for small v.
template <bool kFma>
QMAMBA_INLINE void softplus_block(float* __restrict x, float* __restrict s1,
                                  float* __restrict s2, int64_t m) {
  for (int64_t i = 0; i < m; ++i) s1[i] = -std::abs(x[i]);
  exp_block_float<kFma>(s1, s2, m);
  for (int64_t i = 0; i < m; ++i) {
    const float xi = x[i], v = s2[i];
    const float s = v / (2.0f + v);
    const float z = s * s;
    float q = 1.0f / 15.0f;
    q = mul_add<kFma>(q, z, 1.0f / 13.0f);
    q = mul_add<kFma>(q, z, 1.0f / 11.0f);
    q = mul_add<kFma>(q, z, 1.0f / 9.0f);
    q = mul_add<kFma>(q, z, 1.0f / 7.0f);
    q = mul_add<kFma>(q, z, 1.0f / 5.0f);
    q = mul_add<kFma>(q, z, 1.0f / 3.0f);
    q = mul_add<kFma>(q, z, 1.0f);
    const float sp = (xi > 0.0f ? xi : 0.0f) + (2.0f * s) * q;
    x[i] = xi > 20.0f ? xi : (xi != xi ? xi : sp);
  }
}

template <bool kFma>
QMAMBA_INLINE void silu_block(float* __restrict x, float* __restrict s1, float* __restrict s2,
                              int64_t m) {
  for (int64_t i = 0; i < m; ++i) s1[i] = -x[i];
  exp_block_float<kFma>(s1, s2, m);
  for (int64_t i = 0; i < m; ++i) x[i] = x[i] / (1.0f + s2[i]);
}

template <bool kFma>
QMAMBA_INLINE void softplus_block(double* x, double*, double*, int64_t m) {
  for (int64_t i = 0; i < m; ++i) x[i] = x[i] > 20.0 ? x[i] : std::log1p(std::exp(x[i]));
}

template <bool kFma>
QMAMBA_INLINE void silu_block(double* x, double*, double*, int64_t m) {
  for (int64_t i = 0; i < m; ++i) x[i] = x[i] / (1.0 + std::exp(-x[i]));
}

// Lane j of the buffers <- channel c0 + j of batch b (zeros past `width`); B / C of the
// block's group into (l, n) buffers; then the elementwise delta / gate transforms.
template <typename T, bool kFma>
QMAMBA_INLINE void lane_block_load(const FwdArgs<T>& a, int64_t b, int64_t c0, int64_t width,
                                   LaneBuffers<T>& buf) {
  constexpr int64_t W = kLanes<T>;
  const int64_t l = a.l, n = a.n, grp = c0 / a.dg;
  // dst[t * W + j] = src[b, c0 + j, t] (+ add[c0 + j]), zeros past `width`; in the order
  // of the smaller stride, so that a transposed view (channel stride 1) is read a row of
  // W channels at a time instead of one cache line per element
  auto gather = [&](T* dst, const T* src, const int64_t* st, const T* add) {
    const T* base = src + b * st[0] + c0 * st[1];
    if (st[1] <= st[2]) {
      for (int64_t t = 0; t < l; ++t) {
        const T* row = base + t * st[2];
        if (add) {
          for (int64_t j = 0; j < W; ++j) dst[t * W + j] = j < width ? row[j * st[1]] + add[c0 + j] : T(0);
        } else {
          for (int64_t j = 0; j < W; ++j) dst[t * W + j] = j < width ? row[j * st[1]] : T(0);
        }
      }
    } else {
      for (int64_t j = 0; j < W; ++j) {
        const T* col = base + j * st[1];
        if (j >= width) {
          for (int64_t t = 0; t < l; ++t) dst[t * W + j] = T(0);
        } else if (add) {
          const T bias = add[c0 + j];
          for (int64_t t = 0; t < l; ++t) dst[t * W + j] = col[t * st[2]] + bias;
        } else {
          for (int64_t t = 0; t < l; ++t) dst[t * W + j] = col[t * st[2]];
        }
      }
    }
  };
  gather(buf.u.data(), a.up, a.su, nullptr);
  gather(buf.dt.data(), a.dp, a.sd, a.biasp);
  if (a.gp) gather(buf.gate.data(), a.gp, a.sg, nullptr);
  for (int64_t j = 0; j < W; ++j) {
    for (int64_t k = 0; k < n; ++k) buf.A[k * W + j] = j < width ? a.Ap[(c0 + j) * n + k] : T(0);
  }
  for (int64_t i = 0; i < n * W; ++i) buf.A2[i] = buf.A[i] * T(1.44269504088896341);  // A log2 e
  if (a.softplus) softplus_block<kFma>(buf.dt.data(), buf.tmp.data(), buf.tmp2.data(), l * W);
  if (a.gp && a.silu) silu_block<kFma>(buf.gate.data(), buf.tmp.data(), buf.tmp2.data(), l * W);
  const int64_t key = b * a.g + grp;
  if (buf.bc_key != key) {
    buf.bc_key = key;
    const T* Bg = a.Bp + b * a.sB[0] + grp * a.sB[1];
    const T* Cg = a.Cp + b * a.sC[0] + grp * a.sC[1];
    for (int64_t k = 0; k < n; ++k) {
      for (int64_t t = 0; t < l; ++t) {
        buf.B[t * n + k] = Bg[k * a.sB[2] + t * a.sB[3]];
        buf.C[t * n + k] = Cg[k * a.sC[2] + t * a.sC[3]];
      }
    }
  }
}

// out and last_state of the block's first `width` channels from the lane buffers
template <typename T>
QMAMBA_INLINE void lane_block_store(const FwdArgs<T>& a, int64_t b, int64_t c0, int64_t width,
                                    const LaneBuffers<T>& buf) {
  constexpr int64_t W = kLanes<T>;
  const int64_t l = a.l, n = a.n;
  for (int64_t j = 0; j < width; ++j) {
    const int64_t bc = b * a.d + c0 + j;
    for (int64_t t = 0; t < l; ++t) a.outp[bc * l + t] = buf.y[t * W + j];
    for (int64_t k = 0; k < n; ++k) a.lastp[bc * n + k] = buf.h[k * W + j];
  }
}

// One step of the recurrence for state k, lane-wise: h = A_bar h + (delta u) B_k. The
// reference rounds delta B first, (delta B) u; delta u is shared by the n states of a step,
// which saves a multiplication per state (the two differ by an ulp of B_bar u at most).
template <typename T>
QMAMBA_INLINE Vec<T> step_state(Vec<T> abar, Vec<T> h, Vec<T> dtu, T Bk) {
  return abar * h + dtu * Bk;
}

// The recurrence of a block: the exps of kChunk steps in one block (exp2_block_in_range
// where `in_range`, else exp_block), then the steps.
template <typename T, bool kFma>
QMAMBA_INLINE void lane_steps(const FwdArgs<T>& a, LaneBuffers<T>& buf, Vec<T> Dv,
                              bool in_range) {
  constexpr int64_t W = kLanes<T>;
  using V = Vec<T>;
  const int64_t l = a.l, n = a.n;
  const T* __restrict At = buf.A.data();   // (n, W)
  T* __restrict h = buf.h.data();          // (n, W)
  T* __restrict arg = buf.arg.data();      // (kChunk, n, W)
  T* __restrict abar = buf.abar.data();    // (kChunk, n, W)
  for (int64_t t0 = 0; t0 < l; t0 += kChunk) {
    const int64_t steps = std::min(kChunk, l - t0);
    // A_bar = exp(delta A), (steps, n, W): in range as 2^(delta (A log2 e))
    const T* Ae = in_range ? buf.A2.data() : At;
    for (int64_t s = 0; s < steps; ++s) {
      const V dts = load_vec(buf.dt.data() + (t0 + s) * W);
      for (int64_t k = 0; k < n; ++k) store_vec(arg + (s * n + k) * W, dts * load_vec(Ae + k * W));
    }
    if constexpr (std::is_same_v<T, float>) {
      if (in_range) {
        exp2_block_in_range<kFma>(arg, abar, steps * n * W);
      } else {
        exp_block<kFma>(arg, abar, steps * n * W);
      }
    } else {
      exp_block<kFma>(arg, abar, steps * n * W);
    }
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = t0 + s;
      const V dts = load_vec(buf.dt.data() + t * W);
      const V us = load_vec(buf.u.data() + t * W);
      const V dtu = dts * us;
      const T* Bt = buf.B.data() + t * n;
      const T* Ct = buf.C.data() + t * n;
      V y = {};
      for (int64_t k = 0; k < n; ++k) {
        const V hk = step_state(load_vec(abar + (s * n + k) * W), load_vec(h + k * W), dtu, Bt[k]);
        store_vec(h + k * W, hk);
        y = y + hk * Ct[k];
      }
      if (a.Dp) y = y + Dv * us;
      if (a.gp) y = y * load_vec(buf.gate.data() + t * W);
      store_vec(buf.y.data() + t * W, y);
    }
  }
}

// tasks [begin, end) of the flattened (b, group, block of W channels) range
template <typename T, bool kFma>
QMAMBA_INLINE void scan_fwd_lane_tasks(const FwdArgs<T>& a, int64_t begin, int64_t end) {
  constexpr int64_t W = kLanes<T>;
  const int64_t g = a.g, dg = a.dg;
  const int64_t per_group = (dg + W - 1) / W;
  LaneBuffers<T> buf(a.l, a.n);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t blk = task % per_group, bg = task / per_group;
    const int64_t b = bg / g, grp = bg % g;
    const int64_t c0 = grp * dg + blk * W;
    const int64_t width = std::min(W, grp * dg + dg - c0);
    lane_block_load<T, kFma>(a, b, c0, width, buf);
    Vec<T> Dv = {};
    for (int64_t j = 0; j < width; ++j) Dv[j] = a.Dp ? a.Dp[c0 + j] : T(0);
    std::fill(buf.h.begin(), buf.h.end(), T(0));
    bool in_range = false;
    if constexpr (std::is_same_v<T, float>) {
      in_range = exp_args_in_range(buf.dt.data(), a.l * W, buf.A.data(), a.n * W);
    }
    lane_steps<T, kFma>(a, buf, Dv, in_range);
    lane_block_store(a, b, c0, width, buf);
  }
}

#ifdef QMAMBA_X86_DISPATCH
QMAMBA_TARGET_AVX2 void scan_fwd_lane_tasks_avx2(const FwdArgs<float>& args, int64_t begin,
                                                 int64_t end) {
  scan_fwd_lane_tasks<float, true>(args, begin, end);
}
#endif

template <typename T>
void scan_fwd_impl(const at::Tensor& u, const at::Tensor& delta,
                   const std::optional<at::Tensor>& delta_bias, bool softplus, const at::Tensor& A,
                   const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                   const std::optional<at::Tensor>& gate, bool silu, at::Tensor& out,
                   at::Tensor& last_state) {
  const int64_t nb = u.size(0), d = u.size(1), l = u.size(2), n = A.size(1);
  const int64_t g = B.size(1);
  const bool has_gate = gate.has_value() && gate->defined();
  FwdArgs<T> args{d, l, n, g, d / g, u.data_ptr<T>(), delta.data_ptr<T>(), opt_ptr<T>(delta_bias),
                  A.data_ptr<T>(), B.data_ptr<T>(), C.data_ptr<T>(), opt_ptr<T>(D),
                  opt_ptr<T>(gate), {}, {}, {}, {}, {}, softplus, silu,
                  out.data_ptr<T>(), last_state.data_ptr<T>()};
  for (int i = 0; i < 3; ++i) {
    args.su[i] = u.stride(i);
    args.sd[i] = delta.stride(i);
    args.sg[i] = has_gate ? gate->stride(i) : 0;
  }
  for (int i = 0; i < 4; ++i) {
    args.sB[i] = B.stride(i);
    args.sC[i] = C.stride(i);
  }
  const int64_t per_group = (d / g + kLanes<T> - 1) / kLanes<T>;
  at::parallel_for(0, nb * g * per_group, 1, [&](int64_t begin, int64_t end) {
#ifdef QMAMBA_X86_DISPATCH
    if constexpr (std::is_same_v<T, float>) {
      if (cpu_has_avx2_fma()) return scan_fwd_lane_tasks_avx2(args, begin, end);
    }
#endif
    scan_fwd_lane_tasks<T, false>(args, begin, end);
  });
}

// u, delta, gate: (b, d, l) and B, C: (b, g, n, l), any strides; A (d, n), D, delta_bias
// (d) contiguous; all of one dtype. Returns out (b, d, l) and last_state (b, d, n).
std::vector<at::Tensor> scan_fwd(const at::Tensor& u, const at::Tensor& delta,
                                 const std::optional<at::Tensor>& delta_bias,
                                 bool delta_softplus, const at::Tensor& A, const at::Tensor& B,
                                 const at::Tensor& C, const std::optional<at::Tensor>& D,
                                 const std::optional<at::Tensor>& gate, bool gate_silu) {
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes() && B.dim() == 4 && C.dim() == 4,
              "scan_fwd: u, delta (b, d, l) and B, C (b, g, n, l) expected");
  TORCH_CHECK(A.is_contiguous() && (!D.has_value() || D->is_contiguous()) &&
                  (!delta_bias.has_value() || delta_bias->is_contiguous()),
              "scan_fwd: A, D and delta_bias must be contiguous");
  auto out = at::empty({u.size(0), u.size(1), u.size(2)}, u.options());
  auto last_state = at::empty({u.size(0), u.size(1), A.size(1)}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "qmamba_scan_fwd", [&] {
    scan_fwd_impl<scalar_t>(u, delta, delta_bias, delta_softplus, A, B, C, D, gate, gate_silu,
                            out, last_state);
  });
  return {out, last_state};
}

// Elementwise functions of the float forward, for the tests: kind 0 exp (exp_block),
// 1 2^x on the scans' in-range path (exp2_block_in_range; x in [-125, 127]), 2 softplus,
// 3 silu.
template <bool kFma>
QMAMBA_INLINE void elementwise_impl(int64_t kind, const float* x, float* o, float* tmp,
                                    int64_t m) {
  if (kind == 0) {
    exp_block_float<kFma>(x, o, m);
  } else if (kind == 1) {
    exp2_block_in_range<kFma>(x, o, m);
  } else {
    std::copy(x, x + m, o);
    if (kind == 2) softplus_block<kFma>(o, tmp, tmp + m, m);
    if (kind == 3) silu_block<kFma>(o, tmp, tmp + m, m);
  }
}

#ifdef QMAMBA_X86_DISPATCH
QMAMBA_TARGET_AVX2 void elementwise_avx2(int64_t kind, const float* x, float* o, float* tmp,
                                         int64_t m) {
  elementwise_impl<true>(kind, x, o, tmp, m);
}
#endif

at::Tensor scan_elementwise(const at::Tensor& x, int64_t kind) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "scan_elementwise: float32 expected");
  TORCH_CHECK(kind >= 0 && kind <= 3, "scan_elementwise: kind 0..3");
  auto in = x.contiguous();
  auto out = at::empty_like(in);
  const int64_t m = in.numel();
  std::vector<float> tmp(2 * m);
#ifdef QMAMBA_X86_DISPATCH
  if (cpu_has_avx2_fma()) {
    elementwise_avx2(kind, in.data_ptr<float>(), out.data_ptr<float>(), tmp.data(), m);
    return out;
  }
#endif
  elementwise_impl<false>(kind, in.data_ptr<float>(), out.data_ptr<float>(), tmp.data(), m);
  return out;
}

// Backward (reverse-time recurrence). Per (b, c) the forward is recomputed into
// thread-local buffers (A_bar_t and h_t for all t), then the gradients run backward:
//   dh_t = dy_t C_t + A_bar_{t+1} dh_{t+1}   (dh_{L-1} starts from d last_state)
// dB / dC are sums over the channels of a group: tasks are (b, group, chunk of channels),
// each chunk owns a partial (l, n) buffer that is summed afterwards (no races). dA and dD
// are summed over the batch the same way.
template <typename T>
struct BwdArgs {
  int64_t d, l, n, g, dg, nchunks, per_chunk;
  const T *up, *dp, *Ap, *Bp, *Cp, *Dp, *gp, *doutp, *dlastp;
  T *dup, *ddp, *dAp, *dBp, *dCp, *dDp, *dgp;
};

// tasks [begin, end) of the flattened (b, group, chunk) range
template <typename T, bool kFma>
QMAMBA_INLINE void scan_bwd_tasks(const BwdArgs<T>& args, int64_t begin, int64_t end) {
  const int64_t d = args.d, l = args.l, n = args.n, g = args.g, dg = args.dg;
  const int64_t nchunks = args.nchunks, per_chunk = args.per_chunk;
  const T *up = args.up, *dp = args.dp, *Ap = args.Ap, *Bp = args.Bp, *Cp = args.Cp;
  const T *Dp = args.Dp, *gp = args.gp, *doutp = args.doutp, *dlastp = args.dlastp;
  T *dup = args.dup, *ddp = args.ddp, *dAp = args.dAp, *dBp = args.dBp, *dCp = args.dCp;
  T *dDp = args.dDp, *dgp = args.dgp;
  std::vector<T> H(l * n), scratch(l * n), Abar(l * n), ys(l), zeros(n, T(0)), dh(n),
      dAacc(n);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t chunk = task % nchunks;
    const int64_t bg = task / nchunks;  // b * g + grp
    const int64_t b = bg / g, grp = bg % g;
    const T* Bg = Bp + bg * l * n;
    const T* Cg = Cp + bg * l * n;
    T* dBg = dBp + (bg * nchunks + chunk) * l * n;
    T* dCg = dCp + (bg * nchunks + chunk) * l * n;
    const int64_t c_begin = grp * dg + chunk * per_chunk;
    const int64_t c_end = std::min(grp * dg + dg, c_begin + per_chunk);
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t bc = b * d + c;
      const T* ur = up + bc * l;
      const T* dr = dp + bc * l;
      const T* Ar = Ap + c * n;
      const T Dc = Dp ? Dp[c] : T(0);
      // recompute the forward (same code, same results)
      discretize<T, kFma>(dr, Ar, l, n, scratch.data(), Abar.data());
      for (int64_t t = 0; t < l; ++t) {
        const T* Hp = t > 0 ? H.data() + (t - 1) * n : zeros.data();
        ys[t] = update_state(Abar.data() + t * n, Hp, H.data() + t * n, Bg + t * n,
                             Cg + t * n, dr[t], ur[t], n);
      }
      // backward in time
      for (int64_t k = 0; k < n; ++k) {
        dh[k] = dlastp ? dlastp[bc * n + k] : T(0);
        dAacc[k] = T(0);
      }
      T dDacc = T(0);
      for (int64_t t = l - 1; t >= 0; --t) {
        const T ut = ur[t];
        const T dt = dr[t];
        T dy = doutp[bc * l + t];
        if (gp) {
          T pre = ys[t];
          if (Dp) pre = pre + Dc * ut;
          dgp[bc * l + t] = dy * pre;
          dy = dy * gp[bc * l + t];
        }
        T du_t = T(0);
        if (Dp) {
          dDacc += dy * ut;
          du_t = dy * Dc;
        }
        T ddt = T(0);
        const T* Bt = Bg + t * n;
        const T* Ct = Cg + t * n;
        const T* Ht = H.data() + t * n;
        const T* Hp = t > 0 ? H.data() + (t - 1) * n : zeros.data();
        const T* at = Abar.data() + t * n;
        T* dBt = dBg + t * n;
        T* dCt = dCg + t * n;
        for (int64_t k = 0; k < n; ++k) {
          dCt[k] += dy * Ht[k];
          const T dhk = dh[k] + dy * Ct[k];
          // h_t = a * h_{t-1} + dt * B * u,  a = exp(dt * A): d(dt * A) = dh h_{t-1} a
          const T dlog_a = dhk * Hp[k] * at[k];
          dAacc[k] += dlog_a * dt;
          ddt += dlog_a * Ar[k] + dhk * Bt[k] * ut;
          dBt[k] += dhk * dt * ut;
          du_t += dhk * dt * Bt[k];
          dh[k] = dhk * at[k];
        }
        dup[bc * l + t] = du_t;
        ddp[bc * l + t] = ddt;
      }
      for (int64_t k = 0; k < n; ++k) dAp[bc * n + k] = dAacc[k];
      dDp[bc] = dDacc;
    }
  }
}

#ifdef QMAMBA_X86_DISPATCH
QMAMBA_TARGET_AVX2 void scan_bwd_tasks_avx2(const BwdArgs<float>& args, int64_t begin,
                                            int64_t end) {
  scan_bwd_tasks<float, true>(args, begin, end);
}
#endif

template <typename T>
void scan_bwd_impl(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                   const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                   const std::optional<at::Tensor>& gate, const at::Tensor& dout,
                   const std::optional<at::Tensor>& dlast, int64_t nchunks, at::Tensor& du,
                   at::Tensor& ddelta, at::Tensor& dA_part, at::Tensor& dB_part,
                   at::Tensor& dC_part, at::Tensor& dD_part, at::Tensor& dgate) {
  const int64_t nb = u.size(0), d = u.size(1), l = u.size(2), n = A.size(1);
  const int64_t g = B.size(1), dg = d / g;
  const T* gp = opt_ptr<T>(gate);
  const BwdArgs<T> args{
      d, l, n, g, dg, nchunks, (dg + nchunks - 1) / nchunks,
      u.data_ptr<T>(), delta.data_ptr<T>(), A.data_ptr<T>(), B.data_ptr<T>(), C.data_ptr<T>(),
      opt_ptr<T>(D), gp, dout.data_ptr<T>(), opt_ptr<T>(dlast),
      du.data_ptr<T>(), ddelta.data_ptr<T>(),
      dA_part.data_ptr<T>(),  // (b, d, n)
      dB_part.data_ptr<T>(),  // (b, g, nchunks, l, n), zero-initialised
      dC_part.data_ptr<T>(),  // (b, g, nchunks, l, n), zero-initialised
      dD_part.data_ptr<T>(),  // (b, d)
      gp ? dgate.data_ptr<T>() : nullptr};
  at::parallel_for(0, nb * g * nchunks, 1, [&](int64_t begin, int64_t end) {
#ifdef QMAMBA_X86_DISPATCH
    if constexpr (std::is_same_v<T, float>) {
      if (cpu_has_avx2_fma()) return scan_bwd_tasks_avx2(args, begin, end);
    }
#endif
    scan_bwd_tasks<T, false>(args, begin, end);
  });
}

std::vector<at::Tensor> scan_bwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C,
                                 const std::optional<at::Tensor>& D,
                                 const std::optional<at::Tensor>& gate, const at::Tensor& dout,
                                 const std::optional<at::Tensor>& dlast) {
  const int64_t nb = u.size(0), d = u.size(1), l = u.size(2), n = A.size(1);
  const int64_t g = B.size(1), dg = d / g;
  // enough tasks for every thread even when b * g is small
  const int64_t want = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t nchunks = std::max<int64_t>(
      1, std::min<int64_t>(dg, (want + nb * g - 1) / std::max<int64_t>(1, nb * g)));
  auto du = at::empty_like(u);
  auto ddelta = at::empty_like(u);
  auto dA_part = at::zeros({nb, d, n}, u.options());
  auto dB_part = at::zeros({nb, g, nchunks, l, n}, u.options());
  auto dC_part = at::zeros({nb, g, nchunks, l, n}, u.options());
  auto dD_part = at::zeros({nb, d}, u.options());
  // an empty tensor stands for "no gate" (operator results cannot be undefined)
  const bool has_gate = gate.has_value() && gate->defined();
  auto dgate = has_gate ? at::empty_like(u) : at::empty({0}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "qmamba_scan_bwd", [&] {
    scan_bwd_impl<scalar_t>(u, delta, A, B, C, D, gate, dout, dlast, nchunks, du, ddelta,
                            dA_part, dB_part, dC_part, dD_part, dgate);
  });
  return {du, ddelta, dA_part.sum(0), dB_part.sum(2), dC_part.sum(2), dD_part.sum(0), dgate};
}

// --------------------------------------------------------------------------------------
// Quantized scan (forward only). Elementwise math = qmamba/ops/scan_quant_spec.py.
//
// The grids use only exact IEEE operations, in the order of the spec, so that the kernel
// and the PyTorch reference make the same quantization decisions on equal inputs:
//   uniform:    q = clamp(nearbyint(x / s) + zp, qmin, qmax), x_hat = (q - zp) * s
//   log1m:      r = max(1 - x, 0) / s, q = qmin + #{j : r < c_j}, x_hat = 1 - s * p_q
//   log_signed: r = |x| / s, m = qmin + #{j : r < c_j}, x_hat = (sign(x) * s) * p_m, 0 at qmax
// (r == 0 -> qmax; NaN x -> NaN). The threshold table c and the value table p come from
// Python (scan_quant_spec.log_grid_tables), already rounded to the compute dtype.
// The count is found without a search: a cheap estimate of -log_base(r) from the float's
// bits (log2(r) ~ exponent + mantissa - 1, error < 0.0431 after centering) lands within
// one code of the count when log2(base) >= 1/8, and two table comparisons correct it;
// r below 2^-100 (2^-1000 in double: the estimate needs a normal r) and bases closer to 1
// use a binary search. Either way the result is exactly the count.
// --------------------------------------------------------------------------------------
enum QKind : int64_t { kNone = 0, kUniform = 1, kLog1m = 2, kLogSigned = 3 };

template <typename T>
struct FloatBits;
template <>
struct FloatBits<float> {
  using Int = int32_t;
  static constexpr int kMantBits = 23;
  static constexpr int32_t kBiasInt = 127;
  static constexpr float kInvMant = 1.0f / 8388608.0f;  // 2^-23
  static constexpr float kBias = 127.0f;
  static constexpr float kTiny = 7.888609052210118e-31f;  // 2^-100
};
template <>
struct FloatBits<double> {
  using Int = int64_t;
  static constexpr int kMantBits = 52;
  static constexpr int64_t kBiasInt = 1023;
  static constexpr double kInvMant = 1.0 / 4503599627370496.0;  // 2^-52
  static constexpr double kBias = 1023.0;
  static constexpr double kTiny = 9.332636185032189e-302;  // 2^-1000
};

template <typename T>
struct QParams {
  int64_t kind = kNone;
  const T* scale = nullptr;        // (G, d, n)
  const T* zp = nullptr;           // (G, d, n)
  const int64_t* group = nullptr;  // (l)
  T qmin = 0, qmax = 0;
  // log grids
  const T* cext = nullptr;  // (N + 2): +inf, c_0 .. c_{N-1}, -inf
  const T* p = nullptr;     // (N + 1): p_qmin .. p_qmax
  int32_t N = 0;            // qmax - qmin
  T t_scale = 0, t_off = 0; // count estimate = L * t_scale + t_off, L ~ log2(r)
  bool fast = false;        // the estimate is within one code (log2(base) >= 1/8)
  bool pow2 = false;        // base 2 with the tables checked: codes from the float's bits
  int32_t qmin_i = 0;
  typename FloatBits<T>::Int s_mant = 0;  // mantissa bits of c_k * 2^(k + 1) (= fl(sqrt 2))
  int64_t d = 0, n = 0;
  int64_t G = 1;  // time groups: scale / zp are (G, d, n)
  inline bool active() const { return kind != kNone; }
};

// #{j < N : r < c[j]} for the non-increasing c (a prefix): binary search, any r.
template <typename T>
inline int32_t log_count_search(T r, const T* c, int32_t N) {
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

template <typename T>
QMAMBA_INLINE T from_bits(typename FloatBits<T>::Int b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

// 2^-q for an integer q >= 0, correctly rounded (two normal factors; 0 far below)
template <typename T>
QMAMBA_INLINE T pow2_neg(int32_t q) {
  using Int = typename FloatBits<T>::Int;
  constexpr Int kBias = FloatBits<T>::kBiasInt;
  const Int qc = std::min<Int>(static_cast<Int>(q), 2 * (kBias - 1));
  const Int q1 = qc >> 1, q2 = qc - q1;
  return from_bits<T>((kBias - q1) << FloatBits<T>::kMantBits) *
         from_bits<T>((kBias - q2) << FloatBits<T>::kMantBits);
}

// Base 2: c_k = 2^-(k + 1) * S with S = fl(sqrt 2) in [1, 2), so for a normal r = 2^e * m,
// r < c_k  <=>  e + [m >= S] <= -(k + 1), and the count is clamp(-qmin - e - [m >= S], 0, N)
// (make_qparams checks the tables against this form before enabling it).
template <typename T>
QMAMBA_INLINE int32_t log_count_pow2_one(const QParams<T>& q, T ri) {
  using Int = typename FloatBits<T>::Int;
  constexpr int kMant = FloatBits<T>::kMantBits;
  constexpr Int kMask = (Int(1) << kMant) - 1;
  Int bits;
  std::memcpy(&bits, &ri, sizeof(T));
  Int k = (FloatBits<T>::kBiasInt - q.qmin_i) - (bits >> kMant) -
          static_cast<Int>((bits & kMask) >= q.s_mant);
  k = k < 0 ? Int(0) : k;
  k = k > q.N ? Int(q.N) : k;
  return static_cast<int32_t>(k);
}

// cnt[i] = #{j < N : r[i] < c_j}, and N where r[i] == 0 (NaN r: some value in [0, N]).
template <typename T>
QMAMBA_INLINE void log_count_block(const QParams<T>& q, const T* __restrict r,
                                   int32_t* __restrict cnt, int64_t m) {
  using Int = typename FloatBits<T>::Int;
  const int32_t N = q.N;
  const T* __restrict cext = q.cext;
  if (q.pow2) {
    int32_t tiny = 0;
    for (int64_t i = 0; i < m; ++i) {
      const T ri = r[i];
      const int32_t k = log_count_pow2_one(q, ri);
      cnt[i] = ri == T(0) ? N : k;
      tiny |= static_cast<int32_t>(ri < FloatBits<T>::kTiny) & static_cast<int32_t>(ri != T(0));
    }
    if (tiny) {
      for (int64_t i = 0; i < m; ++i) {
        if (r[i] != T(0) && r[i] < FloatBits<T>::kTiny) cnt[i] = log_count_search(r[i], cext + 1, N);
      }
    }
    return;
  }
  if (!q.fast) {
    for (int64_t i = 0; i < m; ++i) cnt[i] = r[i] == T(0) ? N : log_count_search(r[i], cext + 1, N);
    return;
  }
  const T tN = static_cast<T>(N), ts = q.t_scale, toff = q.t_off;
  int32_t tiny = 0;
  for (int64_t i = 0; i < m; ++i) {
    const T ri = r[i];
    Int bits;
    std::memcpy(&bits, &ri, sizeof(T));
    const T L = static_cast<T>(bits) * FloatBits<T>::kInvMant - FloatBits<T>::kBias;
    T te = L * ts + toff;
    te = te > T(0) ? te : T(0);  // also NaN -> 0
    te = te < tN ? te : tN;
    const int32_t E = static_cast<int32_t>(te + T(0.5));  // in [0, N]
    // cext[E] = c_{E-1}, cext[E + 1] = c_E
    int32_t k = E - (ri < cext[E] ? 0 : 1) + (ri < cext[E + 1] ? 1 : 0);
    k = k < 0 ? 0 : k;  // r = +inf or NaN
    k = ri == T(0) ? N : k;
    cnt[i] = k;
    tiny |= static_cast<int32_t>(ri < FloatBits<T>::kTiny) & static_cast<int32_t>(ri != T(0));
  }
  if (tiny) {
    for (int64_t i = 0; i < m; ++i) {
      if (r[i] != T(0) && r[i] < FloatBits<T>::kTiny) cnt[i] = log_count_search(r[i], cext + 1, N);
    }
  }
}

// x[i] <- Q(x[i]) with scale s[i] and zero point zp[i]; r / cnt are scratch of m entries.
template <typename T>
QMAMBA_INLINE void quant_elems(const QParams<T>& q, T* __restrict x, const T* __restrict s,
                               const T* __restrict zp, int64_t m, T* __restrict r,
                               int32_t* __restrict cnt) {
  switch (q.kind) {
    case kUniform: {
      const T lo = q.qmin, hi = q.qmax;
      for (int64_t i = 0; i < m; ++i) {
        // torch.clamp: min(max(v, lo), hi) with NaN propagating
        T v = std::nearbyint(x[i] / s[i]) + zp[i];
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        x[i] = (v - zp[i]) * s[i];
      }
      return;
    }
    case kLog1m: {
      for (int64_t i = 0; i < m; ++i) {
        T dist = T(1) - x[i];
        dist = dist < T(0) ? T(0) : dist;  // NaN stays
        r[i] = dist / s[i];
      }
      log_count_block(q, r, cnt, m);
      const T* __restrict p = q.p;
      if (q.pow2) {
        for (int64_t i = 0; i < m; ++i) {
          const T v = T(1) - s[i] * pow2_neg<T>(q.qmin_i + cnt[i]);
          x[i] = r[i] != r[i] ? r[i] : v;
        }
        return;
      }
      for (int64_t i = 0; i < m; ++i) {
        const T v = T(1) - s[i] * p[cnt[i]];
        x[i] = r[i] != r[i] ? r[i] : v;
      }
      return;
    }
    case kLogSigned: {
      for (int64_t i = 0; i < m; ++i) r[i] = std::abs(x[i]) / s[i];
      log_count_block(q, r, cnt, m);
      const T* __restrict p = q.p;
      const int32_t N = q.N;
      if (q.pow2) {
        for (int64_t i = 0; i < m; ++i) {
          const T xi = x[i];
          const T sgn = xi > T(0) ? T(1) : (xi < T(0) ? T(-1) : T(0));
          T v = (sgn * s[i]) * pow2_neg<T>(q.qmin_i + cnt[i]);
          v = cnt[i] == N ? T(0) : v;
          x[i] = r[i] != r[i] ? r[i] : v;
        }
        return;
      }
      for (int64_t i = 0; i < m; ++i) {
        const T xi = x[i];
        const T sgn = xi > T(0) ? T(1) : (xi < T(0) ? T(-1) : T(0));
        T v = (sgn * s[i]) * p[cnt[i]];
        v = cnt[i] == N ? T(0) : v;
        x[i] = r[i] != r[i] ? r[i] : v;
      }
      return;
    }
    default:
      return;
  }
}

// the base-2 form is used for r >= kTiny = 2^-depth (2^-100 / 2^-1000)
template <typename T>
constexpr int32_t kPow2MaxDepth = std::is_same_v<T, float> ? 100 : 1000;

// The tables have the base-2 form that log_count_pow2_one / pow2_neg assume: p_q = 2^-q
// bit for bit, c_k = 2^-(k + 1) * S exactly for k + 1 <= depth + 1, and c_k < kTiny below.
template <typename T>
bool pow2_tables_ok(QParams<T>& q) {
  constexpr int32_t depth = kPow2MaxDepth<T>;
  const T* c = q.cext + 1;
  const T S = std::ldexp(c[0], q.qmin_i + 1);
  if (!(S >= T(1) && S < T(2))) return false;
  using Int = typename FloatBits<T>::Int;
  Int sb;
  std::memcpy(&sb, &S, sizeof(T));
  q.s_mant = sb & ((Int(1) << FloatBits<T>::kMantBits) - 1);
  for (int32_t j = 0; j <= q.N; ++j) {
    const T want = pow2_neg<T>(q.qmin_i + j);
    if (std::memcmp(&want, q.p + j, sizeof(T)) != 0) return false;
  }
  for (int32_t j = 0; j < q.N; ++j) {
    const int32_t a = q.qmin_i + j + 1;
    if (a <= depth + 1) {
      if (c[j] != std::ldexp(S, -a)) return false;
    } else if (!(c[j] < FloatBits<T>::kTiny)) {
      return false;
    }
  }
  return true;
}

template <typename T>
QParams<T> make_qparams(int64_t kind, const std::optional<at::Tensor>& scale,
                        const std::optional<at::Tensor>& zp,
                        const std::optional<at::Tensor>& group,
                        const std::optional<at::Tensor>& thresholds,
                        const std::optional<at::Tensor>& values, double qmin, double qmax,
                        double base, int64_t d, int64_t n) {
  QParams<T> q;
  q.kind = kind;
  q.d = d;
  q.n = n;
  if (kind == kNone) return q;
  TORCH_CHECK(kind == kUniform || kind == kLog1m || kind == kLogSigned, "unknown grid kind ", kind);
  TORCH_CHECK(scale.has_value() && zp.has_value(), "quantizer parameters missing");
  q.scale = scale->data_ptr<T>();
  q.zp = zp->data_ptr<T>();
  TORCH_CHECK(scale->numel() % std::max<int64_t>(1, d * n) == 0 && scale->numel() == zp->numel(),
              "quantizer scale / zero point must be (G, d, n)");
  q.G = std::max<int64_t>(1, scale->numel() / std::max<int64_t>(1, d * n));
  if (group.has_value() && group->defined()) q.group = group->data_ptr<int64_t>();
  q.qmin = static_cast<T>(qmin);
  q.qmax = static_cast<T>(qmax);
  if (kind == kUniform) return q;
  TORCH_CHECK(thresholds.has_value() && values.has_value(), "log grid tables missing");
  const int64_t N = static_cast<int64_t>(qmax) - static_cast<int64_t>(qmin);
  TORCH_CHECK(N >= 1 && N < (int64_t(1) << 30), "bad code range");
  TORCH_CHECK(thresholds->numel() == N + 2 && values->numel() == N + 1,
              "log grid tables do not fit the code range");
  TORCH_CHECK(thresholds->scalar_type() == values->scalar_type() &&
                  thresholds->is_contiguous() && values->is_contiguous(),
              "log grid tables must be contiguous, in the compute dtype");
  q.cext = thresholds->data_ptr<T>();
  q.p = values->data_ptr<T>();
  q.N = static_cast<int32_t>(N);
  const double log2b = std::log2(base);
  q.fast = log2b >= 0.125 && std::isfinite(log2b);
  // t = -log_base(r) - qmin - 0.5 with log2(r) ~ L + 0.0430 (the centre of its error)
  q.t_scale = static_cast<T>(-1.0 / log2b);
  q.t_off = static_cast<T>(-0.0430 / log2b - qmin - 0.5);
  q.qmin_i = static_cast<int32_t>(qmin);
  q.pow2 = base == 2.0 && qmin >= 0 && qmin + 1 <= kPow2MaxDepth<T> && pow2_tables_ok(q);
  return q;
}

template <typename T>
inline void stat_update(T* mn, T* mx, T x) {
  // min / max with NaN propagation, as torch.amin / torch.amax
  if (*mn == *mn && (x != x || x < *mn)) *mn = x;
  if (*mx == *mx && (x != x || x > *mx)) *mx = x;
}

template <typename T>
struct QScanArgs {
  int64_t nb, d, l, n, g, dg;
  const T *up, *dp, *Ap, *Bp, *Cp;
  T* yp;
  T *amin, *amax, *bmin, *bmax, *hmin, *hmax;  // null without statistics
  QParams<T> qa, qb, qh;
  bool b_includes_u;
};

// S[t * n + k] = param[(group[t] * d + c) * n + k] for one channel
template <typename T>
QMAMBA_INLINE void gather_params(const QParams<T>& q, const T* param, int64_t c, int64_t l,
                                 T* out) {
  const int64_t d = q.d, n = q.n;
  for (int64_t t = 0; t < l; ++t) {
    const int64_t grp = q.group ? q.group[t] : 0;
    std::memcpy(out + t * n, param + (grp * d + c) * n, n * sizeof(T));
  }
}

// Per-thread buffers of the quantized scan (each (l, n) unless noted).
// Rows of one channel are processed kRows at a time: their recurrences are independent,
// and interleaving them hides the latency of the per-step chain (update, Q_h).
constexpr int64_t kRows = 4;

// Per-thread buffers of the quantized scan. abar / bu: (kRows, l, n); Sa, Za, Sb, Zb: the
// (l, n) scales / zero points of Q_A and Q_B for channel `channel`; h and Sh, Zh (Q_h's
// params of the current step, repeated per row): (kRows, n).
template <typename T>
struct QScanBuffers {
  std::vector<T> scratch, abar, bu, Sa, Za, Sb, Zb, R, h, Sh, Zh, hR;
  std::vector<int32_t> cnt, hcnt;
  int64_t channel = -1;
  QScanBuffers(int64_t l, int64_t n)
      : scratch(l * n), abar(kRows * l * n), bu(kRows * l * n), Sa(l * n), Za(l * n),
        Sb(l * n), Zb(l * n), R(l * n), h(kRows * n), Sh(kRows * n), Zh(kRows * n),
        hR(kRows * n), cnt(l * n), hcnt(kRows * n) {}
};

template <typename T>
void fill_channel_params(const QScanArgs<T>& a, QScanBuffers<T>& buf, int64_t c) {
  if (buf.channel == c) return;
  buf.channel = c;
  if (a.qa.active()) {
    gather_params(a.qa, a.qa.scale, c, a.l, buf.Sa.data());
    if (a.qa.kind == kUniform) gather_params(a.qa, a.qa.zp, c, a.l, buf.Za.data());
  }
  if (a.qb.active()) {
    gather_params(a.qb, a.qb.scale, c, a.l, buf.Sb.data());
    if (a.qb.kind == kUniform) gather_params(a.qb, a.qb.zp, c, a.l, buf.Zb.data());
  }
}

// A_bar and B_bar u of one (b, c) row for all steps, through Q_A and Q_B (they do not
// depend on h, so they run as blocks: exp, quantizers), into abar / bu (l, n).
template <typename T, bool kFma>
QMAMBA_INLINE void qscan_prepare_row(const QScanArgs<T>& a, QScanBuffers<T>& buf, int64_t b,
                                     int64_t c, T* __restrict abar, T* __restrict bu) {
  const int64_t d = a.d, l = a.l, n = a.n, g = a.g, ln = l * n;
  const int64_t bc = b * d + c, grp = c / a.dg;
  const T* ur = a.up + bc * l;
  const T* dr = a.dp + bc * l;
  const T* Bg = a.Bp + (b * g + grp) * l * n;
  const bool stats = a.amin != nullptr;

  discretize<T, kFma>(dr, a.Ap + c * n, l, n, buf.scratch.data(), abar);
  if (stats) {
    for (int64_t t = 0; t < l; ++t) {
      const int64_t so = (t * d + c) * n;
      for (int64_t k = 0; k < n; ++k) stat_update(a.amin + so + k, a.amax + so + k, abar[t * n + k]);
    }
  }
  if (a.qa.active()) {
    quant_elems(a.qa, abar, buf.Sa.data(), buf.Za.data(), ln, buf.R.data(), buf.cnt.data());
  }
  for (int64_t t = 0; t < l; ++t) {
    const T dt = dr[t], ut = ur[t];
    const T* __restrict Bt = Bg + t * n;
    T* __restrict out = bu + t * n;
    if (a.b_includes_u) {
      for (int64_t k = 0; k < n; ++k) out[k] = (dt * Bt[k]) * ut;
    } else {
      for (int64_t k = 0; k < n; ++k) out[k] = dt * Bt[k];
    }
  }
  if (stats) {
    for (int64_t t = 0; t < l; ++t) {
      const int64_t so = (t * d + c) * n;
      for (int64_t k = 0; k < n; ++k) stat_update(a.bmin + so + k, a.bmax + so + k, bu[t * n + k]);
    }
  }
  if (a.qb.active()) {
    quant_elems(a.qb, bu, buf.Sb.data(), buf.Zb.data(), ln, buf.R.data(), buf.cnt.data());
  }
  if (!a.b_includes_u) {
    for (int64_t t = 0; t < l; ++t) {
      const T ut = ur[t];
      for (int64_t k = 0; k < n; ++k) bu[t * n + k] = bu[t * n + k] * ut;
    }
  }
}

// Rows (b0 .. b0 + nr - 1, c), nr <= kRows: prepare each, then run their recurrences
// h_t = Q_h(Q_A(A_bar_t) h_{t-1} + Q_B(..)), y_t = C_t . h_t side by side. With
// statistics, rows of the same channel must not run concurrently.
template <typename T, bool kFma>
QMAMBA_INLINE void qscan_rows(const QScanArgs<T>& a, QScanBuffers<T>& buf, int64_t b0,
                              int64_t nr, int64_t c) {
  const int64_t d = a.d, l = a.l, n = a.n, g = a.g, ln = l * n, grp = c / a.dg;
  const bool stats = a.amin != nullptr;
  for (int64_t r = 0; r < nr; ++r) {
    qscan_prepare_row<T, kFma>(a, buf, b0 + r, c, buf.abar.data() + r * ln,
                               buf.bu.data() + r * ln);
  }
  T* __restrict h = buf.h.data();
  std::fill(buf.h.begin(), buf.h.end(), T(0));
  const QParams<T>& qh = a.qh;
  int64_t h_group = -1;
  for (int64_t t = 0; t < l; ++t) {
    for (int64_t r = 0; r < nr; ++r) {
      const T* __restrict at = buf.abar.data() + r * ln + t * n;
      const T* __restrict bt = buf.bu.data() + r * ln + t * n;
      T* __restrict hr = h + r * n;
      for (int64_t k = 0; k < n; ++k) hr[k] = at[k] * hr[k] + bt[k];
    }
    if (stats) {
      const int64_t so = (t * d + c) * n;
      for (int64_t r = 0; r < nr; ++r) {
        for (int64_t k = 0; k < n; ++k) stat_update(a.hmin + so + k, a.hmax + so + k, h[r * n + k]);
      }
    }
    if (qh.active()) {
      const int64_t tg = qh.group ? qh.group[t] : 0;
      if (tg != h_group) {  // Q_h's params of this step's group, once per row slot
        h_group = tg;
        const int64_t off = (tg * d + c) * n;
        for (int64_t r = 0; r < kRows; ++r) {
          std::memcpy(buf.Sh.data() + r * n, qh.scale + off, n * sizeof(T));
          std::memcpy(buf.Zh.data() + r * n, qh.zp + off, n * sizeof(T));
        }
      }
      quant_elems(qh, h, buf.Sh.data(), buf.Zh.data(), nr * n, buf.hR.data(), buf.hcnt.data());
    }
    // y = sum_k h[k] C[k] in order k = 0, 1, ... (as the lane-blocked kernel sums)
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t b = b0 + r;
      const T* __restrict Ct = a.Cp + ((b * g + grp) * l + t) * n;
      const T* __restrict hr = h + r * n;
      T y = T(0);
      for (int64_t k = 0; k < n; ++k) y = y + hr[k] * Ct[k];
      a.yp[(b * d + c) * l + t] = y;
    }
  }
}

// --------------------------------------------------------------------------------------
// Lane-blocked quantized scan: the float forward's layout (W channels of one batch row side
// by side, h[k * W + j]) with Q_A, Q_B and Q_h applied lane-wise by quant_elems' formulas
// (the same divisions, roundings and comparisons, so the same decisions and values as the
// row kernel above). For float without statistics and with uniform or base-2 log grids
// (qmamba's recipes); statistics, double and other log bases run the row kernel.
// --------------------------------------------------------------------------------------
typedef int32_t VecI32 __attribute__((vector_size(32)));

QMAMBA_INLINE VecI32 bits_of(Vec<float> v) {
  VecI32 o;
  __builtin_memcpy(&o, &v, sizeof(o));
  return o;
}

QMAMBA_INLINE Vec<float> float_of(VecI32 v) {
  Vec<float> o;
  __builtin_memcpy(&o, &v, sizeof(o));
  return o;
}

// log_count_pow2_one per lane, r == 0 -> N, and 0 < r < kTiny by the binary search (as
// log_count_block does)
QMAMBA_INLINE VecI32 log_count_pow2_vec(const QParams<float>& q, Vec<float> r) {
  const VecI32 zero = {};
  const VecI32 Nv = zero + q.N;
  // a vector comparison is -1 where true: adding it subtracts [m >= S]
  VecI32 k = (zero + (127 - q.qmin_i)) - (bits_of(r) >> 23) + ((bits_of(r) & 0x7fffff) >= q.s_mant);
  k = k < zero ? zero : k;
  k = k > Nv ? Nv : k;
  k = r == 0.0f ? Nv : k;
  const VecI32 tiny = (r < FloatBits<float>::kTiny) & (r != 0.0f);
  uint64_t words[4];  // any lane set: OR of the four 64-bit words (one vector test)
  __builtin_memcpy(words, &tiny, sizeof(words));
  if ((words[0] | words[1] | words[2] | words[3]) != 0) {
    for (int j = 0; j < 8; ++j) {
      if (tiny[j]) k[j] = log_count_search(r[j], q.cext + 1, q.N);
    }
  }
  return k;
}

// pow2_neg per lane (q >= 0)
QMAMBA_INLINE Vec<float> pow2_neg_vec(VecI32 q) {
  const VecI32 zero = {};
  const VecI32 cap = zero + 2 * (127 - 1);
  const VecI32 qc = q > cap ? cap : q;
  const VecI32 q1 = qc >> 1, q2 = qc - q1;
  return float_of((127 - q1) << 23) * float_of((127 - q2) << 23);
}

QMAMBA_INLINE Vec<float> nearbyint_vec(Vec<float> v) {
  for (int j = 0; j < 8; ++j) v[j] = __builtin_nearbyintf(v[j]);  // vroundps
  return v;
}

// Q(x) for one vector of lanes with their scales s and zero points zp (quant_elems' cases)
template <int64_t kKind>
QMAMBA_INLINE Vec<float> quant_lanes(const QParams<float>& q, Vec<float> x, Vec<float> s,
                                     Vec<float> zp) {
  const Vec<float> zero = {};
  switch (kKind) {
    case kUniform: {
      Vec<float> v = nearbyint_vec(x / s) + zp;
      const Vec<float> lo = zero + q.qmin, hi = zero + q.qmax;
      v = v < lo ? lo : v;
      v = v > hi ? hi : v;
      return (v - zp) * s;
    }
    case kLog1m: {
      Vec<float> dist = 1.0f - x;
      dist = dist < zero ? zero : dist;  // NaN stays
      const Vec<float> r = dist / s;
      const VecI32 cnt = log_count_pow2_vec(q, r);
      const Vec<float> v = 1.0f - s * pow2_neg_vec(q.qmin_i + cnt);
      return r != r ? r : v;
    }
    case kLogSigned: {
      const Vec<float> r = float_of(bits_of(x) & 0x7fffffff) / s;  // |x| / s
      const VecI32 cnt = log_count_pow2_vec(q, r);
      const Vec<float> one = zero + 1.0f;
      const Vec<float> sgn = x > zero ? one : (x < zero ? -one : zero);
      Vec<float> v = (sgn * s) * pow2_neg_vec(q.qmin_i + cnt);
      v = cnt == q.N ? zero : v;
      return r != r ? r : v;
    }
    default:
      return x;
  }
}

// whether the lane-blocked kernel applies
inline bool qscan_lanes_ok(const QScanArgs<float>& a) {
  for (const QParams<float>* q : {&a.qa, &a.qb, &a.qh}) {
    if (q->kind == kLog1m || q->kind == kLogSigned) {
      if (!q->pow2) return false;
    }
  }
  return true;
}

// Per-thread buffers: the float forward's lane buffers and the (G, n, W) scales / zero
// points of each quantizer for the current block of channels
struct QLaneBuffers {
  LaneBuffers<float> lanes;
  std::vector<float> S[3], Z[3];
  // with statistics: per (t, k, lane) min / max of A_bar, B_bar u and h over the batch
  // rows of the block's channels, (l, n, W) each (the task owns these channels)
  std::vector<float> smin[3], smax[3];
  QLaneBuffers(int64_t l, int64_t n, bool stats) : lanes(l, n) {
    if (stats) {
      for (int i = 0; i < 3; ++i) {
        smin[i].resize(l * n * kLanes<float>);
        smax[i].resize(l * n * kLanes<float>);
      }
    }
  }
};

// stat_update lane-wise: min / max with NaN propagation (as torch.amin / amax)
QMAMBA_INLINE void stat_update_vec(float* mn, float* mx, Vec<float> x) {
  const Vec<float> lo = load_vec(mn), hi = load_vec(mx);
  store_vec(mn, ((lo == lo) & ((x != x) | (x < lo))) ? x : lo);
  store_vec(mx, ((hi == hi) & ((x != x) | (x > hi))) ? x : hi);
}

// the statistics of the steps t0 .. t0 + steps - 1 of quantity i from a chunk (steps, n, W)
QMAMBA_INLINE void stat_chunk(QLaneBuffers& qb, int i, const float* x, int64_t t0,
                              int64_t steps, int64_t n) {
  constexpr int64_t W = kLanes<float>;
  for (int64_t e = 0; e < steps * n; ++e) {
    const int64_t off = (t0 * n + e) * W;
    stat_update_vec(qb.smin[i].data() + off, qb.smax[i].data() + off, load_vec(x + e * W));
  }
}

// S[g][k][j] = scale[(g * d + c0 + j) * n + k] (spare lanes: scale 1, zero point 0)
QMAMBA_INLINE void lane_qparams(const QParams<float>& q, int64_t c0, int64_t width,
                                std::vector<float>& S, std::vector<float>& Z) {
  constexpr int64_t W = kLanes<float>;
  const int64_t d = q.d, n = q.n, G = q.G;
  S.assign(G * n * W, 1.0f);
  Z.assign(G * n * W, 0.0f);
  for (int64_t gi = 0; gi < G; ++gi) {
    for (int64_t j = 0; j < width; ++j) {
      const float* sp = q.scale + (gi * d + c0 + j) * n;
      const float* zp = q.zp + (gi * d + c0 + j) * n;
      for (int64_t k = 0; k < n; ++k) {
        S[(gi * n + k) * W + j] = sp[k];
        Z[(gi * n + k) * W + j] = zp[k];
      }
    }
  }
}

// x[st, k, :] <- Q(x[st, k, :]) for the steps t0 .. t0 + steps - 1 of a chunk, (steps, n, W),
// with the (n, W) parameters of each step's time group
template <int64_t kKind>
QMAMBA_INLINE void quant_chunk_kind(const QParams<float>& q, float* x, const float* S,
                                    const float* Z, int64_t t0, int64_t steps) {
  constexpr int64_t W = kLanes<float>;
  const int64_t n = q.n;
  for (int64_t st = 0; st < steps; ++st) {
    const int64_t tg = q.group ? q.group[t0 + st] : 0;
    const float* Sg = S + tg * n * W;
    const float* Zg = Z + tg * n * W;
    float* xs = x + st * n * W;
    for (int64_t k = 0; k < n; ++k) {
      store_vec(xs + k * W, quant_lanes<kKind>(q, load_vec(xs + k * W), load_vec(Sg + k * W),
                                               load_vec(Zg + k * W)));
    }
  }
}

QMAMBA_INLINE void quant_chunk(const QParams<float>& q, float* x, const float* S, const float* Z,
                               int64_t t0, int64_t steps) {
  switch (q.kind) {
    case kUniform: return quant_chunk_kind<kUniform>(q, x, S, Z, t0, steps);
    case kLog1m: return quant_chunk_kind<kLog1m>(q, x, S, Z, t0, steps);
    case kLogSigned: return quant_chunk_kind<kLogSigned>(q, x, S, Z, t0, steps);
    default: return;
  }
}

// The recurrence of a chunk on the quantized A_bar / B_bar u: h = a h + bu, h = Q_h(h)
// (kHKind: Q_h's grid, kNone without), y = sum_k C_k h_k.
template <int64_t kHKind, bool kStats>
QMAMBA_INLINE void qscan_lane_steps(const QScanArgs<float>& a, QLaneBuffers& qb, int64_t t0,
                                    int64_t steps) {
  constexpr int64_t W = kLanes<float>;
  using V = Vec<float>;
  const int64_t n = a.n;
  LaneBuffers<float>& buf = qb.lanes;
  float* __restrict h = buf.h.data();             // (n, W)
  const float* __restrict abar = buf.abar.data(); // (kChunk, n, W), quantized
  const float* __restrict bu = buf.arg.data();    // (kChunk, n, W), quantized
  for (int64_t st = 0; st < steps; ++st) {
    const int64_t t = t0 + st;
    const float* Ct = buf.C.data() + t * n;
    const float* Sh = nullptr;
    const float* Zh = nullptr;
    if constexpr (kHKind != kNone) {
      const int64_t tg = a.qh.group ? a.qh.group[t] : 0;
      Sh = qb.S[2].data() + tg * n * W;
      Zh = qb.Z[2].data() + tg * n * W;
    }
    V y = {};
    for (int64_t k = 0; k < n; ++k) {
      V hk = load_vec(abar + (st * n + k) * W) * load_vec(h + k * W) + load_vec(bu + (st * n + k) * W);
      if constexpr (kStats) {
        const int64_t off = (t * n + k) * W;
        stat_update_vec(qb.smin[2].data() + off, qb.smax[2].data() + off, hk);
      }
      if constexpr (kHKind != kNone) {
        hk = quant_lanes<kHKind>(a.qh, hk, load_vec(Sh + k * W), load_vec(Zh + k * W));
      }
      store_vec(h + k * W, hk);
      y = y + hk * Ct[k];
    }
    store_vec(buf.y.data() + t * W, y);
  }
}

template <int64_t kHKind>
QMAMBA_INLINE void qscan_lane_steps_any(const QScanArgs<float>& a, QLaneBuffers& qb, int64_t t0,
                                        int64_t steps, bool stats) {
  if (stats) {
    qscan_lane_steps<kHKind, true>(a, qb, t0, steps);
  } else {
    qscan_lane_steps<kHKind, false>(a, qb, t0, steps);
  }
}

// One block: channels [c0, c0 + width) of batch row b (the quantizer parameters of the
// block are in qb.S / qb.Z)
template <bool kFma>
QMAMBA_INLINE void qscan_lane_block(const QScanArgs<float>& a, const FwdArgs<float>& f,
                                    QLaneBuffers& qb, int64_t b, int64_t c0, int64_t width) {
  constexpr int64_t W = kLanes<float>;
  using V = Vec<float>;
  const int64_t l = a.l, n = a.n;
  const bool stats = a.amin != nullptr;
  LaneBuffers<float>& buf = qb.lanes;
  lane_block_load<float, kFma>(f, b, c0, width, buf);
  std::fill(buf.h.begin(), buf.h.end(), 0.0f);
  const bool in_range = exp_args_in_range(buf.dt.data(), l * W, buf.A.data(), n * W);
  float* __restrict abar = buf.abar.data();  // (kChunk, n, W)
  float* __restrict bu = buf.arg.data();     // (kChunk, n, W)
  for (int64_t t0 = 0; t0 < l; t0 += kChunk) {
    const int64_t steps = std::min(kChunk, l - t0);
    // A_bar = exp(delta A), then Q_A: they do not depend on h, so whole chunks at once
    const float* Ae = in_range ? buf.A2.data() : buf.A.data();  // in range: 2^(delta A log2 e)
    for (int64_t st = 0; st < steps; ++st) {
      const V dts = load_vec(buf.dt.data() + (t0 + st) * W);
      for (int64_t k = 0; k < n; ++k) store_vec(bu + (st * n + k) * W, dts * load_vec(Ae + k * W));
    }
    if (in_range) {
      exp2_block_in_range<kFma>(bu, abar, steps * n * W);
    } else {
      exp_block<kFma>(bu, abar, steps * n * W);
    }
    if (stats) stat_chunk(qb, 0, abar, t0, steps, n);
    if (a.qa.active()) quant_chunk(a.qa, abar, qb.S[0].data(), qb.Z[0].data(), t0, steps);
    // B_bar u = (delta B) u (or Q_B on delta B, then times u), as the row kernel
    for (int64_t st = 0; st < steps; ++st) {
      const V dts = load_vec(buf.dt.data() + (t0 + st) * W);
      const V us = load_vec(buf.u.data() + (t0 + st) * W);
      const float* Bt = buf.B.data() + (t0 + st) * n;
      for (int64_t k = 0; k < n; ++k) {
        store_vec(bu + (st * n + k) * W, a.b_includes_u ? (dts * Bt[k]) * us : dts * Bt[k]);
      }
    }
    if (stats) stat_chunk(qb, 1, bu, t0, steps, n);
    if (a.qb.active()) quant_chunk(a.qb, bu, qb.S[1].data(), qb.Z[1].data(), t0, steps);
    if (!a.b_includes_u) {
      for (int64_t st = 0; st < steps; ++st) {
        const V us = load_vec(buf.u.data() + (t0 + st) * W);
        for (int64_t k = 0; k < n; ++k) store_vec(bu + (st * n + k) * W, load_vec(bu + (st * n + k) * W) * us);
      }
    }
    switch (a.qh.kind) {
      case kUniform: qscan_lane_steps_any<kUniform>(a, qb, t0, steps, stats); break;
      case kLog1m: qscan_lane_steps_any<kLog1m>(a, qb, t0, steps, stats); break;
      case kLogSigned: qscan_lane_steps_any<kLogSigned>(a, qb, t0, steps, stats); break;
      default: qscan_lane_steps_any<kNone>(a, qb, t0, steps, stats); break;
    }
  }
  for (int64_t j = 0; j < width; ++j) {
    const int64_t bc = b * a.d + c0 + j;
    for (int64_t t = 0; t < l; ++t) a.yp[bc * l + t] = buf.y[t * W + j];
  }
}

// Tasks [begin, end): (b, group, block of W channels) flattened; with statistics
// (group, block) with every batch row inside, so that a task owns its channels' min / max.
template <bool kFma>
QMAMBA_INLINE void qscan_lane_tasks(const QScanArgs<float>& a, const FwdArgs<float>& f,
                                    int64_t begin, int64_t end) {
  constexpr int64_t W = kLanes<float>;
  const int64_t l = a.l, n = a.n, g = a.g, dg = a.dg, d = a.d;
  const int64_t per_group = (dg + W - 1) / W;
  const bool stats = a.amin != nullptr;
  QLaneBuffers qb(l, n, stats);
  const QParams<float>* qp[3] = {&a.qa, &a.qb, &a.qh};
  float* smin_out[3] = {a.amin, a.bmin, a.hmin};
  float* smax_out[3] = {a.amax, a.bmax, a.hmax};
  for (int64_t task = begin; task < end; ++task) {
    const int64_t blk = task % per_group, rest = task / per_group;
    const int64_t grp = rest % g;
    const int64_t c0 = grp * dg + blk * W;
    const int64_t width = std::min(W, grp * dg + dg - c0);
    for (int i = 0; i < 3; ++i) {
      if (qp[i]->active()) lane_qparams(*qp[i], c0, width, qb.S[i], qb.Z[i]);
    }
    if (!stats) {
      qscan_lane_block<kFma>(a, f, qb, rest / g, c0, width);
      continue;
    }
    const float inf = std::numeric_limits<float>::infinity();
    for (int i = 0; i < 3; ++i) {
      std::fill(qb.smin[i].begin(), qb.smin[i].end(), inf);
      std::fill(qb.smax[i].begin(), qb.smax[i].end(), -inf);
    }
    for (int64_t b = 0; b < a.nb; ++b) qscan_lane_block<kFma>(a, f, qb, b, c0, width);
    for (int i = 0; i < 3; ++i) {  // (l, n, W) -> the (l, d, n) outputs
      for (int64_t t = 0; t < l; ++t) {
        for (int64_t j = 0; j < width; ++j) {
          for (int64_t k = 0; k < n; ++k) {
            smin_out[i][(t * d + c0 + j) * n + k] = qb.smin[i][(t * n + k) * W + j];
            smax_out[i][(t * d + c0 + j) * n + k] = qb.smax[i][(t * n + k) * W + j];
          }
        }
      }
    }
  }
}

#ifdef QMAMBA_X86_DISPATCH
QMAMBA_TARGET_AVX2 void qscan_lane_tasks_avx2(const QScanArgs<float>& a, const FwdArgs<float>& f,
                                              int64_t begin, int64_t end) {
  qscan_lane_tasks<true>(a, f, begin, end);
}
#endif

// The lane kernel's view of the inputs as the float forward reads them: u, delta (b, d, l)
// contiguous, B / C (b, g, l, n) contiguous seen as (b, g, n, l); no bias, softplus, gate.
inline FwdArgs<float> qscan_lane_inputs(const QScanArgs<float>& a) {
  const int64_t d = a.d, l = a.l, n = a.n, g = a.g;
  FwdArgs<float> f{d, l, n, g, a.dg, a.up, a.dp, nullptr, a.Ap, a.Bp, a.Cp, nullptr, nullptr,
                   {d * l, l, 1}, {d * l, l, 1}, {0, 0, 0}, {g * l * n, l * n, 1, n},
                   {g * l * n, l * n, 1, n}, false, false, nullptr, nullptr};
  return f;
}

void qscan_run_lanes(const QScanArgs<float>& a) {
  const FwdArgs<float> f = qscan_lane_inputs(a);
  const int64_t per_group = (a.dg + kLanes<float> - 1) / kLanes<float>;
  const int64_t rows = a.amin != nullptr ? 1 : a.nb;  // statistics: batch rows inside a task
  at::parallel_for(0, rows * a.g * per_group, 1, [&](int64_t begin, int64_t end) {
#ifdef QMAMBA_X86_DISPATCH
    if (cpu_has_avx2_fma()) return qscan_lane_tasks_avx2(a, f, begin, end);
#endif
    qscan_lane_tasks<false>(a, f, begin, end);
  });
}

// Tasks [begin, end): (channel, chunk of kRows batch rows) flattened channel-major
// (consecutive tasks share the channel's quantizer parameters), or whole channels (all
// rows) with statistics, whose per-channel min / max a task then owns.
template <typename T>
inline int64_t qscan_chunks(const QScanArgs<T>& a) {
  return (a.nb + kRows - 1) / kRows;
}

template <typename T, bool kFma>
QMAMBA_INLINE void qscan_tasks(const QScanArgs<T>& a, int64_t begin, int64_t end) {
  QScanBuffers<T> buf(a.l, a.n);
  const int64_t chunks = qscan_chunks(a);
  const bool by_channel = a.amin != nullptr;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t c = by_channel ? task : task / chunks;
    const int64_t ch_begin = by_channel ? 0 : task % chunks;
    const int64_t ch_end = by_channel ? chunks : ch_begin + 1;
    fill_channel_params(a, buf, c);
    for (int64_t ch = ch_begin; ch < ch_end; ++ch) {
      const int64_t b0 = ch * kRows;
      qscan_rows<T, kFma>(a, buf, b0, std::min(kRows, a.nb - b0), c);
    }
  }
}

#ifdef QMAMBA_X86_DISPATCH
QMAMBA_TARGET_AVX2 void qscan_tasks_avx2(const QScanArgs<float>& a, int64_t begin, int64_t end) {
  qscan_tasks<float, true>(a, begin, end);
}
QMAMBA_TARGET_AVX2 void quant_elems_avx2(const QParams<float>& q, float* x, const float* s,
                                         const float* zp, int64_t m, float* r, int32_t* cnt) {
  quant_elems<float>(q, x, s, zp, m, r, cnt);
}
#endif

template <typename T>
void qscan_run(const QScanArgs<T>& args) {
  if constexpr (std::is_same_v<T, float>) {
    if (qscan_lanes_ok(args)) return qscan_run_lanes(args);
  }
  // statistics of channel c are owned by one task: tasks are channels then; otherwise rows
  const int64_t ntasks = args.amin != nullptr ? args.d : args.d * qscan_chunks(args);
  at::parallel_for(0, ntasks, 1, [&](int64_t begin, int64_t end) {
#ifdef QMAMBA_X86_DISPATCH
    if constexpr (std::is_same_v<T, float>) {
      if (cpu_has_avx2_fma()) return qscan_tasks_avx2(args, begin, end);
    }
#endif
    qscan_tasks<T, false>(args, begin, end);
  });
}

std::vector<at::Tensor> quantized_scan_fwd(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& C,
    // a quantizer: kind, scale (G, d, n), zero point (G, d, n), group map (l), threshold
    // table (N + 2), value table (N + 1) (log grids), qmin, qmax, base
    int64_t a_kind, const std::optional<at::Tensor>& a_scale, const std::optional<at::Tensor>& a_zp,
    const std::optional<at::Tensor>& a_group, const std::optional<at::Tensor>& a_thr,
    const std::optional<at::Tensor>& a_val, double a_qmin, double a_qmax, double a_base,
    int64_t b_kind, const std::optional<at::Tensor>& b_scale, const std::optional<at::Tensor>& b_zp,
    const std::optional<at::Tensor>& b_group, const std::optional<at::Tensor>& b_thr,
    const std::optional<at::Tensor>& b_val, double b_qmin, double b_qmax, double b_base,
    int64_t h_kind, const std::optional<at::Tensor>& h_scale, const std::optional<at::Tensor>& h_zp,
    const std::optional<at::Tensor>& h_group, const std::optional<at::Tensor>& h_thr,
    const std::optional<at::Tensor>& h_val, double h_qmin, double h_qmax, double h_base,
    bool b_includes_u, bool collect_stats) {
  const int64_t nb = u.size(0), d = u.size(1), l = u.size(2), n = A.size(1);
  const int64_t g = B.size(1);
  auto y = at::empty_like(u);
  std::vector<at::Tensor> stats;
  if (collect_stats) {
    const auto inf = std::numeric_limits<double>::infinity();
    for (int i = 0; i < 3; ++i) {
      stats.push_back(at::full({l, d, n}, inf, u.options()));
      stats.push_back(at::full({l, d, n}, -inf, u.options()));
    }
  }
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "qmamba_quantized_scan", [&] {
    using T = scalar_t;
    QScanArgs<T> args{nb, d, l, n, g, d / g,
                      u.data_ptr<T>(), delta.data_ptr<T>(), A.data_ptr<T>(), B.data_ptr<T>(),
                      C.data_ptr<T>(), y.data_ptr<T>(),
                      nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                      make_qparams<T>(a_kind, a_scale, a_zp, a_group, a_thr, a_val, a_qmin,
                                      a_qmax, a_base, d, n),
                      make_qparams<T>(b_kind, b_scale, b_zp, b_group, b_thr, b_val, b_qmin,
                                      b_qmax, b_base, d, n),
                      make_qparams<T>(h_kind, h_scale, h_zp, h_group, h_thr, h_val, h_qmin,
                                      h_qmax, h_base, d, n),
                      b_includes_u};
    if (collect_stats) {
      args.amin = stats[0].data_ptr<T>();
      args.amax = stats[1].data_ptr<T>();
      args.bmin = stats[2].data_ptr<T>();
      args.bmax = stats[3].data_ptr<T>();
      args.hmin = stats[4].data_ptr<T>();
      args.hmax = stats[5].data_ptr<T>();
    }
    qscan_run<T>(args);
  });
  std::vector<at::Tensor> result{y};
  for (auto& s : stats) result.push_back(s);
  return result;
}

// Fake quantization of x viewed as (outer, mid, inner), contiguous, with one scale / zero
// point per mid index (mid = 1: per tensor): the activation quantizers' inference path
// (qmamba/ops/fake_quant.py), and with mid = numel the tests' per-element quantizer
// (scan_compiled.fake_quant_kernel). quant_elems' code, so the spec's values bit for bit,
// in one pass instead of PyTorch's five or six.
template <typename T>
void fake_quant_broadcast_run(const QParams<T>& q, const T* xp, T* op, const T* sp, const T* zpp,
                              int64_t total, int64_t mid, int64_t inner) {
  constexpr int64_t kBlock = 2048;
  at::parallel_for(0, (total + kBlock - 1) / kBlock, 4, [&](int64_t b0, int64_t b1) {
    std::vector<T> sbuf(kBlock), zbuf(kBlock), r(kBlock);
    std::vector<int32_t> cnt(kBlock);
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t i0 = blk * kBlock, m = std::min(kBlock, total - i0);
      std::copy(xp + i0, xp + i0 + m, op + i0);
      if (mid == 1) {
        std::fill(sbuf.begin(), sbuf.begin() + m, sp[0]);
        std::fill(zbuf.begin(), zbuf.begin() + m, zpp[0]);
      } else {  // runs of `inner` elements share a parameter: one division per block
        const int64_t first = i0 / inner;
        int64_t c = first % mid, r = i0 - first * inner;
        for (int64_t i = 0; i < m;) {
          const int64_t run = std::min(m - i, inner - r);
          std::fill(sbuf.begin() + i, sbuf.begin() + i + run, sp[c]);
          std::fill(zbuf.begin() + i, zbuf.begin() + i + run, zpp[c]);
          i += run;
          r = 0;
          c = c + 1 == mid ? 0 : c + 1;
        }
      }
#ifdef QMAMBA_X86_DISPATCH
      if constexpr (std::is_same_v<T, float>) {
        if (cpu_has_avx2_fma()) {
          quant_elems_avx2(q, op + i0, sbuf.data(), zbuf.data(), m, r.data(), cnt.data());
          continue;
        }
      }
#endif
      quant_elems<T>(q, op + i0, sbuf.data(), zbuf.data(), m, r.data(), cnt.data());
    }
  });
}

at::Tensor fake_quant_broadcast(const at::Tensor& x, int64_t kind, const at::Tensor& scale,
                                const at::Tensor& zp, const std::optional<at::Tensor>& thr,
                                const std::optional<at::Tensor>& val, double qmin, double qmax,
                                double base, int64_t inner) {
  TORCH_CHECK(x.is_contiguous() && scale.is_contiguous() && zp.is_contiguous(),
              "fake_quant_broadcast: contiguous tensors expected");
  const int64_t mid = scale.numel(), total = x.numel();
  TORCH_CHECK(mid >= 1 && zp.numel() == mid && inner >= 1 && total % (mid * inner) == 0,
              "fake_quant_broadcast: x must be (outer, scale.numel(), inner)");
  TORCH_CHECK(scale.scalar_type() == x.scalar_type() && zp.scalar_type() == x.scalar_type(),
              "fake_quant_broadcast: scale / zero point in x's dtype expected");
  auto out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "qmamba_fake_quant_broadcast", [&] {
    using T = scalar_t;
    const QParams<T> q = make_qparams<T>(kind, scale, zp, std::nullopt, thr, val, qmin, qmax,
                                         base, 1, mid);
    fake_quant_broadcast_run<T>(q, x.data_ptr<T>(), out.data_ptr<T>(), scale.data_ptr<T>(),
                                zp.data_ptr<T>(), total, mid, inner);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(qmamba_scan, m) {
  m.def(
      "scan_fwd(Tensor u, Tensor delta, Tensor? delta_bias, bool delta_softplus, Tensor A, "
      "Tensor B, Tensor C, Tensor? D, Tensor? gate, bool gate_silu) -> Tensor[]",
      &scan_fwd);
  m.def("scan_elementwise(Tensor x, int kind) -> Tensor", &scan_elementwise);
  m.def(
      "fake_quant_broadcast(Tensor x, int kind, Tensor scale, Tensor zp, Tensor? thr, Tensor? val, "
      "float qmin, float qmax, float base, int inner) -> Tensor",
      &fake_quant_broadcast);
  m.def(
      "scan_bwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? gate, "
      "Tensor dout, Tensor? dlast) -> Tensor[]",
      &scan_bwd);
  m.def(
      "quantized_scan_fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, "
      "int a_kind, Tensor? a_scale, Tensor? a_zp, Tensor? a_group, Tensor? a_thr, Tensor? a_val, "
      "float a_qmin, float a_qmax, float a_base, "
      "int b_kind, Tensor? b_scale, Tensor? b_zp, Tensor? b_group, Tensor? b_thr, Tensor? b_val, "
      "float b_qmin, float b_qmax, float b_base, "
      "int h_kind, Tensor? h_scale, Tensor? h_zp, Tensor? h_group, Tensor? h_thr, Tensor? h_val, "
      "float h_qmin, float h_qmax, float h_base, bool b_includes_u, bool collect_stats) "
      "-> Tensor[]",
      &quantized_scan_fwd);
}
