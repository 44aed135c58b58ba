// The integer scan's rows with SIMD intrinsics: included twice by int_kernels.cpp, inside
// `#pragma GCC target` regions and namespaces, with QI_W = 16 (AVX-512) or 8 (AVX2).
// The state dimension n (a multiple of QI_W) is held in NC = n / QI_W registers per row;
// R rows of one channel run side by side. The operations are those of the generic loops
// in int_kernels.cpp (and of qmamba/integer/scan_reference.py), so the numbers are the
// same on every path: integer arithmetic is exact, the float ones are the same IEEE
// multiplies, roundings and conversions, and y is summed in the reference's tree order.

#if QI_W == 16
struct S {
  using I = __m512i;
  using F = __m512;
  using M = __mmask16;
  static QI_INLINE I loadi(const int32_t* p) { return _mm512_loadu_si512(p); }
  static QI_INLINE void storei(int32_t* p, I v) { _mm512_storeu_si512(p, v); }
  static QI_INLINE F loadf(const float* p) { return _mm512_loadu_ps(p); }
  static QI_INLINE I seti(int32_t v) { return _mm512_set1_epi32(v); }
  static QI_INLINE F setf(float v) { return _mm512_set1_ps(v); }
  static QI_INLINE I add(I a, I b) { return _mm512_add_epi32(a, b); }
  static QI_INLINE I sub(I a, I b) { return _mm512_sub_epi32(a, b); }
  static QI_INLINE I mul(I a, I b) { return _mm512_mullo_epi32(a, b); }
  static QI_INLINE I band(I a, I b) { return _mm512_and_si512(a, b); }
  static QI_INLINE I bor(I a, I b) { return _mm512_or_si512(a, b); }
  static QI_INLINE I bxor(I a, I b) { return _mm512_xor_si512(a, b); }
  static QI_INLINE I sra(I a, int32_t c) { return _mm512_sra_epi32(a, _mm_cvtsi32_si128(c)); }
  static QI_INLINE I srav(I a, I c) { return _mm512_srav_epi32(a, c); }
  static QI_INLINE I sllv(I a, I c) { return _mm512_sllv_epi32(a, c); }
  static QI_INLINE I sll(I a, int32_t c) { return _mm512_sll_epi32(a, _mm_cvtsi32_si128(c)); }
  static QI_INLINE I imin(I a, I b) { return _mm512_min_epi32(a, b); }
  static QI_INLINE I imax(I a, I b) { return _mm512_max_epi32(a, b); }
  static QI_INLINE M eq(I a, I b) { return _mm512_cmpeq_epi32_mask(a, b); }
  static QI_INLINE M lt(I a, I b) { return _mm512_cmplt_epi32_mask(a, b); }
  static QI_INLINE M mand(M a, M b) { return static_cast<M>(a & b); }
  static QI_INLINE M mor(M a, M b) { return static_cast<M>(a | b); }
  static QI_INLINE M mnone() { return 0; }
  static QI_INLINE bool many(M a) { return a != 0; }
  static QI_INLINE I sel(M m, I t, I f) { return _mm512_mask_blend_epi32(m, f, t); }
  static QI_INLINE F self(M m, F t, F f) { return _mm512_mask_blend_ps(m, f, t); }
  static QI_INLINE M flt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static QI_INLINE F fmul(F a, F b) { return _mm512_mul_ps(a, b); }
  static QI_INLINE F fadd(F a, F b) { return _mm512_add_ps(a, b); }
  static QI_INLINE F fsub(F a, F b) { return _mm512_sub_ps(a, b); }
  static QI_INLINE F fdiv(F a, F b) { return _mm512_div_ps(a, b); }
  // a < b ? a : b (vminps: b where either is NaN; callers pass no NaN)
  static QI_INLINE F fmin(F a, F b) { return _mm512_min_ps(a, b); }
  static QI_INLINE F fmulz(M m, F a, F b) { return _mm512_maskz_mul_ps(m, a, b); }  // m ? a b : +0
  static QI_INLINE void storef(float* p, F v) { _mm512_storeu_ps(p, v); }
  static QI_INLINE I loadi8(const int8_t* p) { return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static QI_INLINE void storei8(int8_t* p, I v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(v)); }
  static QI_INLINE F fround(F a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static QI_INLINE I cvt(F a) { return _mm512_cvtps_epi32(a); }  // round to nearest even
  static QI_INLINE F tof(I a) { return _mm512_cvtepi32_ps(a); }
  static QI_INLINE F asf(I a) { return _mm512_castsi512_ps(a); }
  static QI_INLINE I asi(F a) { return _mm512_castps_si512(a); }
  static QI_INLINE F gatherf(const float* base, I idx) { return _mm512_i32gather_ps(idx, base, 4); }
  // a | (b & c), one vpternlogd
  static QI_INLINE I or_and(I a, I b, I c) { return _mm512_ternarylogic_epi32(a, b, c, 0xF8); }
  // per 32-bit lane: a.lo16 b.lo16 + a.hi16 b.hi16 (signed int16, exact in int32)
  static QI_INLINE I madd16(I a, I b) { return _mm512_madd_epi16(a, b); }
  // round_half_even(x / 2^f) for f >= 1: (x + 2^(f-1) - 1 + bit f of x) >> f, the odd
  // bit as a mask (vptestmd) added by a masked add
  static QI_INLINE I rne_shift(I x, int32_t f) {
    const M odd = _mm512_test_epi32_mask(x, _mm512_set1_epi32(int32_t(1) << f));
    const I b = _mm512_add_epi32(x, _mm512_set1_epi32((int32_t(1) << (f - 1)) - 1));
    return sra(_mm512_mask_add_epi32(b, odd, b, _mm512_set1_epi32(1)), f);
  }
  // v[i] lane k <- v[k] lane i (16 x 16): pairs of rows, then quads, then 128-bit blocks
  static QI_INLINE void transpose(F* v) {
    F t[16], u[16];
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {  // u[4i + k], 128-bit block L: rows 4i .. 4i + 3 of column 4L + k
      u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
      u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
      u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int k = 0; k < 4; ++k) {
      const F v0 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x88), v1 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xDD);
      const F w0 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x88), w1 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xDD);
      v[k] = _mm512_shuffle_f32x4(v0, w0, 0x88);
      v[8 + k] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
      v[4 + k] = _mm512_shuffle_f32x4(v1, w1, 0x88);
      v[12 + k] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
    }
  }
  // tree() of four vectors at once (the same additions): *out_r = tree(v[r])
  static QI_INLINE void tree4(const F* v, float* out0, float* out1, float* out2, float* out3) {
    // k + 8: [v0.lo | v1.lo] + [v0.hi | v1.hi] (256-bit halves)
    const F u01 = _mm512_add_ps(_mm512_shuffle_f32x4(v[0], v[1], 0x44), _mm512_shuffle_f32x4(v[0], v[1], 0xEE));
    const F u23 = _mm512_add_ps(_mm512_shuffle_f32x4(v[2], v[3], 0x44), _mm512_shuffle_f32x4(v[2], v[3], 0xEE));
    // k + 4: 128-bit blocks [v0, v1, v2, v3] of 4 lanes
    const F w = _mm512_add_ps(_mm512_shuffle_f32x4(u01, u23, 0x88), _mm512_shuffle_f32x4(u01, u23, 0xDD));
    const F x2 = _mm512_add_ps(w, _mm512_permute_ps(w, 0x4E));   // k + 2 within each block
    const F x1 = _mm512_add_ps(x2, _mm512_permute_ps(x2, 0xB1));  // k + 1
    alignas(64) float t[16];
    _mm512_store_ps(t, x1);
    *out0 = t[0];
    *out1 = t[4];
    *out2 = t[8];
    *out3 = t[12];
  }
  // v[k] + v[k + 8], then + 4, + 2, + 1 (scan_reference.tree_sum)
  static QI_INLINE float tree(F v) {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
  }
};
#else
struct S {
  using I = __m256i;
  using F = __m256;
  using M = __m256i;  // lanes of all ones / zeros
  static QI_INLINE I loadi(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static QI_INLINE void storei(int32_t* p, I v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static QI_INLINE F loadf(const float* p) { return _mm256_loadu_ps(p); }
  static QI_INLINE I seti(int32_t v) { return _mm256_set1_epi32(v); }
  static QI_INLINE F setf(float v) { return _mm256_set1_ps(v); }
  static QI_INLINE I add(I a, I b) { return _mm256_add_epi32(a, b); }
  static QI_INLINE I sub(I a, I b) { return _mm256_sub_epi32(a, b); }
  static QI_INLINE I mul(I a, I b) { return _mm256_mullo_epi32(a, b); }
  static QI_INLINE I band(I a, I b) { return _mm256_and_si256(a, b); }
  static QI_INLINE I bor(I a, I b) { return _mm256_or_si256(a, b); }
  static QI_INLINE I bxor(I a, I b) { return _mm256_xor_si256(a, b); }
  static QI_INLINE I sra(I a, int32_t c) { return _mm256_sra_epi32(a, _mm_cvtsi32_si128(c)); }
  static QI_INLINE I srav(I a, I c) { return _mm256_srav_epi32(a, c); }
  static QI_INLINE I sllv(I a, I c) { return _mm256_sllv_epi32(a, c); }
  static QI_INLINE I sll(I a, int32_t c) { return _mm256_sll_epi32(a, _mm_cvtsi32_si128(c)); }
  static QI_INLINE I imin(I a, I b) { return _mm256_min_epi32(a, b); }
  static QI_INLINE I imax(I a, I b) { return _mm256_max_epi32(a, b); }
  static QI_INLINE M eq(I a, I b) { return _mm256_cmpeq_epi32(a, b); }
  static QI_INLINE M lt(I a, I b) { return _mm256_cmpgt_epi32(b, a); }
  static QI_INLINE M mand(M a, M b) { return _mm256_and_si256(a, b); }
  static QI_INLINE M mor(M a, M b) { return _mm256_or_si256(a, b); }
  static QI_INLINE M mnone() { return _mm256_setzero_si256(); }
  static QI_INLINE bool many(M a) { return !_mm256_testz_si256(a, a); }
  static QI_INLINE I sel(M m, I t, I f) { return _mm256_blendv_epi8(f, t, m); }
  static QI_INLINE F self(M m, F t, F f) { return _mm256_blendv_ps(f, t, _mm256_castsi256_ps(m)); }
  static QI_INLINE M flt(F a, F b) { return _mm256_castps_si256(_mm256_cmp_ps(a, b, _CMP_LT_OQ)); }
  static QI_INLINE F fmul(F a, F b) { return _mm256_mul_ps(a, b); }
  static QI_INLINE F fadd(F a, F b) { return _mm256_add_ps(a, b); }
  static QI_INLINE F fsub(F a, F b) { return _mm256_sub_ps(a, b); }
  static QI_INLINE F fdiv(F a, F b) { return _mm256_div_ps(a, b); }
  static QI_INLINE F fmin(F a, F b) { return _mm256_min_ps(a, b); }
  static QI_INLINE F fmulz(M m, F a, F b) { return _mm256_and_ps(_mm256_mul_ps(a, b), _mm256_castsi256_ps(m)); }
  static QI_INLINE void storef(float* p, F v) { _mm256_storeu_ps(p, v); }
  static QI_INLINE I loadi8(const int8_t* p) { return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
  static QI_INLINE void storei8(int8_t* p, I v) {  // values fit int8: the packs do not saturate
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi16(w16, w16));
  }
  static QI_INLINE F fround(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static QI_INLINE I cvt(F a) { return _mm256_cvtps_epi32(a); }
  static QI_INLINE F tof(I a) { return _mm256_cvtepi32_ps(a); }
  static QI_INLINE F asf(I a) { return _mm256_castsi256_ps(a); }
  static QI_INLINE I asi(F a) { return _mm256_castps_si256(a); }
  static QI_INLINE F gatherf(const float* base, I idx) { return _mm256_i32gather_ps(base, idx, 4); }
  // a | (b & c)
  static QI_INLINE I or_and(I a, I b, I c) { return bor(a, band(b, c)); }
  static QI_INLINE I madd16(I a, I b) { return _mm256_madd_epi16(a, b); }
  // round_half_even(x / 2^f) for f >= 1: (x + 2^(f-1) - 1 + ((x >> f) & 1)) >> f
  static QI_INLINE I rne_shift(I x, int32_t f) {
    const I odd = band(sra(x, f), seti(1));
    return sra(add(add(x, seti((int32_t(1) << (f - 1)) - 1)), odd), f);
  }
  // v[i] lane k <- v[k] lane i (8 x 8)
  static QI_INLINE void transpose(F* v) {
    F t[8], u[8];
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
      u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
      u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
      u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x20);
      v[4 + k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x31);
    }
  }
  // tree() of four vectors at once (the same additions): *out_r = tree(v[r])
  static QI_INLINE void tree4(const F* v, float* out0, float* out1, float* out2, float* out3) {
    // k + 4: [v0.lo | v1.lo] + [v0.hi | v1.hi] (128-bit halves)
    const F u01 = _mm256_add_ps(_mm256_permute2f128_ps(v[0], v[1], 0x20), _mm256_permute2f128_ps(v[0], v[1], 0x31));
    const F u23 = _mm256_add_ps(_mm256_permute2f128_ps(v[2], v[3], 0x20), _mm256_permute2f128_ps(v[2], v[3], 0x31));
    // k + 2: per 128-bit lane [a0, a1, b0, b1] + [a2, a3, b2, b3] (a: v0 / v1, b: v2 / v3)
    const F w = _mm256_add_ps(_mm256_shuffle_ps(u01, u23, 0x44), _mm256_shuffle_ps(u01, u23, 0xEE));
    const F x1 = _mm256_add_ps(w, _mm256_permute_ps(w, 0xB1));  // k + 1
    alignas(32) float t[8];
    _mm256_store_ps(t, x1);
    *out0 = t[0];
    *out1 = t[4];
    *out2 = t[2];
    *out3 = t[6];
  }
  // v[k] + v[k + 4], then + 2, + 1
  static QI_INLINE float tree(F v) {
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
  }
};
#endif

constexpr int W = QI_W;

// The NC registers of a row reduced in the reference's order: chunk i + NC/2 onto chunk i
// (v[k] + v[k + n/2]) until one register is left (then tree() / tree4() sum its lanes).
template <int NC>
QI_INLINE S::F tree_chunk_reg(S::F* v) {
  for (int w = NC / 2; w >= 1; w /= 2) {
    for (int i = 0; i < w; ++i) v[i] = S::fadd(v[i], v[i + w]);
  }
  return v[0];
}

// ---- the scan's rows. Per channel: a pre-pass gathers each row's delta_hat u and A-table
// offset (the strided reads of u and the delta codes, once), then R rows step side by side
// with their B terms computed in registers (no t2 buffer) and y summed four rows at a time.

// B term of one register (b_terms_row's arithmetic). Log grid with a base-2 form: r = |x| / s_B
// rounded onto its power of two from the float's bits, p = 2^(floor(log2 r) + [mantissa >= S])
// = 2^-(qmin + m) for the count m, clamped to [2^-(qmin + NB - 1) .. 2^-qmin] (0 below: the
// zero code); the term is +-min(rb p, cap), rounded. (m >= NB, and r below 2^-126, give 0;
// b_terms_row's code would give rb 2^-126 at most there, which rounds to 0: the plan keeps
// rb < 2^90.) Uniform grid: clamp((clamp(round(x / s_B) + zp) - zp) rb, +-cap), rounded.
struct BConst {
  S::I addc, expmask, signmask;
  S::F pmax, pzero, capv, ncapv, qlo, qhi;
};

QI_INLINE BConst b_consts(const ScanArgs& a) {
  BConst k;
  const float cap = std::ldexp(static_cast<float>(2 * (a.h.qmax - a.h.qmin) + 1), a.F);
  k.addc = S::seti(0x800000 - a.b.s_mant);
  k.expmask = S::seti(0x7f800000);
  k.signmask = S::seti(static_cast<int32_t>(0x80000000u));
  k.pmax = S::setf(std::ldexp(1.0f, -a.b.qmin));
  k.pzero = S::setf(std::ldexp(1.0f, -(a.b.qmax)));  // 2^-(qmin + NB): the zero code and below
  k.capv = S::setf(cap);
  k.ncapv = S::setf(-cap);
  k.qlo = S::setf(static_cast<float>(a.b.qmin));
  k.qhi = S::setf(static_cast<float>(a.b.qmax));
  return k;
}

template <int kB>  // 1: log grid (base-2 form), 2: uniform
QI_INLINE S::I b_term(const BConst& k, S::F x, S::F inv, S::F zp, S::F rb) {
  if constexpr (kB == 1) {
    // r = x / s_B with its sign: |r| = |x| inv exactly (inv > 0, rounding is symmetric); the
    // carry of + addc stops below the sign bit (r finite), which the exponent mask clears
    const S::F r = S::fmul(x, inv);
    S::F p = S::asf(S::band(S::add(S::asi(r), k.addc), k.expmask));  // an exponent field: never NaN
    p = S::fmin(p, k.pmax);                                            // m < 0: the first code
    S::F mag = S::fmulz(S::flt(k.pzero, p), rb, p);                    // m >= NB: the zero code
    mag = S::fmin(mag, k.capv);  // rb finite > 0: mag is not NaN, its sign bit 0
    return S::cvt(S::asf(S::or_and(S::asi(mag), S::asi(x), k.signmask)));
  } else {
    S::F q = S::fadd(S::fround(S::fmul(x, inv)), zp);
    q = S::self(S::flt(q, k.qlo), k.qlo, q);
    q = S::self(S::flt(k.qhi, q), k.qhi, q);
    S::F v = S::fmul(S::fsub(q, zp), rb);
    v = S::self(S::flt(v, k.ncapv), k.ncapv, v);
    v = S::self(S::flt(k.capv, v), k.capv, v);
    return S::cvt(v);
  }
}

// step_in_group on one register; log1m: sh = min(at, 31) and rnd = 2^(sh - 1) from tables
template <bool kLog1m>
QI_INLINE S::I step_simd(S::I hq, S::I sh, S::I rnd, S::I s2, S::I t2, S::I lo, S::I hi, int32_t F,
                         int32_t F2) {
  S::I term;
  if constexpr (kLog1m) {  // hq 2^F - ((hq S2 + 2^(sh-1)) >> sh)
    term = S::sub(S::sll(hq, F), S::srav(S::add(S::mul(hq, s2), rnd), sh));
  } else {
    term = S::sra(S::add(S::mul(hq, sh), S::seti(int32_t(1) << (F2 - F - 1))), F2 - F);
  }
  const S::I q = S::rne_shift(S::add(term, t2), F);  // round half to even
  return S::imin(S::imax(q, lo), hi);
}

#if QI_W == 16
// step_boundary on one register of 16 states (k0 the first), in two halves of int64 lanes
template <bool kLog1m>
QI_INLINE S::I boundary_simd(const ScanArgs& a, const ChannelTables& T, S::I hq, const int32_t* at,
                             const int32_t* t2p, int64_t g, int64_t k0) {
  const int64_t n = a.n;
  const __m512i one = _mm512_set1_epi64(1);
  const __m512i cap1 = _mm512_set1_epi64(static_cast<int64_t>(3 * (a.h.qmax - a.h.qmin) + 2) << a.F);
  const __m512i ncap1 = _mm512_sub_epi64(_mm512_setzero_si512(), cap1);
  const __m512i half = _mm512_set1_epi64(int64_t(1) << (a.F - 1));
  const __m512i mask = _mm512_set1_epi64((int64_t(1) << a.F) - 1);
  const __m128i fsh = _mm_cvtsi32_si128(a.F), f2sh = _mm_cvtsi32_si128(a.F2);
  __m256i out[2];
  for (int hh = 0; hh < 2; ++hh) {
    const int64_t k = k0 + 8 * hh;
    const __m512i h64 = _mm512_cvtepi32_epi64(hh ? _mm512_extracti64x4_epi64(hq, 1) : _mm512_castsi512_si256(hq));
    const __m512i at64 = _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(at + k)));
    const __m512i m1 = _mm512_loadu_si512(T.m1.data() + g * n + k);
    __m512i term;
    if constexpr (kLog1m) {
      const __m512i m2 = _mm512_loadu_si512(T.m2.data() + g * n + k);
      const __m512i rnd = _mm512_sllv_epi64(one, _mm512_sub_epi64(at64, one));
      term = _mm512_sub_epi64(_mm512_mullo_epi64(h64, m1),
                              _mm512_srav_epi64(_mm512_add_epi64(_mm512_mullo_epi64(h64, m2), rnd), at64));
    } else {
      term = _mm512_sra_epi64(_mm512_add_epi64(_mm512_mullo_epi64(_mm512_mullo_epi64(h64, at64), m1),
                                               _mm512_set1_epi64(int64_t(1) << (a.F2 - 1))), f2sh);
    }
    term = _mm512_min_epi64(_mm512_max_epi64(term, ncap1), cap1);
    const __m512i x = _mm512_add_epi64(term, _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(t2p + k - k0))));
    __m512i q = _mm512_sra_epi64(_mm512_add_epi64(x, half), fsh);
    const __mmask8 tie = _mm512_cmpeq_epi64_mask(_mm512_and_si512(x, mask), half);
    q = _mm512_mask_sub_epi64(q, tie, q, _mm512_and_si512(q, one));
    q = _mm512_max_epi64(q, _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(T.lo.data() + g * n + k))));
    q = _mm512_min_epi64(q, _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(T.hi.data() + g * n + k))));
    out[hh] = _mm512_cvtepi64_epi32(q);
  }
  return _mm512_inserti64x4(_mm512_castsi256_si512(out[0]), out[1], 1);
}
#endif

// Rows b0 .. b0 + R - 1 of channel c. kB: 0 B terms from T.t2 (b_terms_row), 1 / 2 in registers.
template <int NC, int R, bool kLog1m, int kB>
QI_INLINE void rows_simd(const ScanArgs& a, ChannelTables& T, int64_t b0, int64_t c) {
  const int64_t l = a.l, n = NC * W, grp = c / a.dg;
  if constexpr (kB == 0) {
    for (int r = 0; r < R; ++r) b_terms_row(a, T, b0 + r, c, T.t2.data() + r * l * n);
  }
  const BConst bk = b_consts(a);
  S::I s2[NC];
  S::F inv[NC], zpB[NC];
  for (int ch = 0; ch < NC; ++ch) {
    s2[ch] = S::loadi(T.s2.data() + ch * W);
    inv[ch] = S::loadf(T.invB.data() + ch * W);
    zpB[ch] = S::loadf(T.zpB.data() + ch * W);
  }
  const int32_t* tsh = kLog1m ? T.atc.data() : T.at.data();  // the A term's table
  S::I h[R][NC];
  const float* du[R];
  const int32_t* off[R];
  const float* Bb[R];
  const float* Cb[R];
  float* yr[R];
  for (int r = 0; r < R; ++r) {
    for (int ch = 0; ch < NC; ++ch) h[r][ch] = S::seti(0);
    du[r] = T.du_c + (b0 + r) * l;
    off[r] = T.off_c + (b0 + r) * l;
    Bb[r] = a.B + (b0 + r) * a.sB[0] + grp * a.sB[1];
    Cb[r] = a.C + (b0 + r) * a.sC[0] + grp * a.sC[1];
    yr[r] = T.y_c + (b0 + r) * l;  // the block's y buffer (b, t) of this channel
  }
  int64_t gprev = a.h.group != nullptr ? a.h.group[0] : 0;
  for (int64_t t = 0; t < l; ++t) {
    const int64_t g = a.h.group != nullptr ? a.h.group[t] : 0;
    if (t > 0 && g != gprev) {  // the first step of a group: int64 terms (step_boundary)
#if QI_W == 16
      for (int r = 0; r < R; ++r) {
        for (int ch = 0; ch < NC; ++ch) {
          alignas(64) int32_t tb[W];
          if constexpr (kB != 0) {
            const S::F x = S::fmul(S::setf(du[r][t]), S::loadf(Bb[r] + t * a.sB[2] + ch * W));
            S::storei(tb, b_term<kB>(bk, x, inv[ch], zpB[ch], S::loadf(T.rb.data() + g * n + ch * W)));
          } else {
            S::storei(tb, S::loadi(T.t2.data() + (r * l + t) * n + ch * W));
          }
          h[r][ch] = boundary_simd<kLog1m>(a, T, h[r][ch], T.at.data() + off[r][t], tb, g, ch * W);
        }
      }
#else  // AVX2: step_boundary's scalar loop
      for (int r = 0; r < R; ++r) {
        alignas(64) int32_t hb[NC * W];
        alignas(64) int32_t tb[NC * W];
        const int32_t* t2p = T.t2.data() + (r * l + t) * n;
        if constexpr (kB != 0) {
          const S::F dv = S::setf(du[r][t]);
          for (int ch = 0; ch < NC; ++ch) {
            const S::F x = S::fmul(dv, S::loadf(Bb[r] + t * a.sB[2] + ch * W));
            S::storei(tb + ch * W, b_term<kB>(bk, x, inv[ch], zpB[ch], S::loadf(T.rb.data() + g * n + ch * W)));
          }
          t2p = tb;
        }
        for (int ch = 0; ch < NC; ++ch) S::storei(hb + ch * W, h[r][ch]);
        step_boundary(a, hb, T.at.data() + off[r][t], T, t2p, g);
        for (int ch = 0; ch < NC; ++ch) h[r][ch] = S::loadi(hb + ch * W);
      }
#endif
    } else {
#pragma GCC unroll 4
      for (int ch = 0; ch < NC; ++ch) {
        const S::I lo = S::loadi(T.lo.data() + g * n + ch * W);
        const S::I hi = S::loadi(T.hi.data() + g * n + ch * W);
        const S::F rb = S::loadf(T.rb.data() + g * n + ch * W);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          S::I t2;
          if constexpr (kB == 0) {
            t2 = S::loadi(T.t2.data() + (r * l + t) * n + ch * W);
          } else {
            const S::F x = S::fmul(S::setf(du[r][t]), S::loadf(Bb[r] + t * a.sB[2] + ch * W));
            t2 = b_term<kB>(bk, x, inv[ch], zpB[ch], rb);
          }
          const S::I sh = S::loadi(tsh + off[r][t] + ch * W);
          const S::I rnd = kLog1m ? S::loadi(T.ar.data() + off[r][t] + ch * W) : sh;
          h[r][ch] = step_simd<kLog1m>(h[r][ch], sh, rnd, s2[ch], t2, lo, hi, a.F, a.F2);
        }
      }
    }
    gprev = g;
    S::F p[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      S::F pc[NC];
      for (int ch = 0; ch < NC; ++ch) {
        const S::F hs = S::loadf(T.hs.data() + g * n + ch * W);
        pc[ch] = S::fmul(S::fmul(S::tof(h[r][ch]), hs), S::loadf(Cb[r] + t * a.sC[2] + ch * W));
      }
      p[r] = tree_chunk_reg<NC>(pc);
    }
    int r = 0;
    for (; r + 4 <= R; r += 4) {
      S::tree4(p + r, yr[r] + t, yr[r + 1] + t, yr[r + 2] + t, yr[r + 3] + t);
    }
    for (; r < R; ++r) yr[r][t] = S::tree(p[r]);
  }
}

template <bool kLog1m, int kB, int NC>
QI_INLINE void rows_simd_n(const ScanArgs& a, ChannelTables& T, int64_t c) {
  constexpr int kMaxR = NC == 1 ? 8 : 4;  // registers: R * NC rows of state side by side
  for (int64_t b = 0; b < a.nb; b += kMaxR) {
    switch (std::min<int64_t>(kMaxR, a.nb - b)) {
      case 8: rows_simd<NC, 8, kLog1m, kB>(a, T, b, c); break;
      case 7: rows_simd<NC, 4, kLog1m, kB>(a, T, b, c); rows_simd<NC, 3, kLog1m, kB>(a, T, b + 4, c); break;
      case 6: rows_simd<NC, 4, kLog1m, kB>(a, T, b, c); rows_simd<NC, 2, kLog1m, kB>(a, T, b + 4, c); break;
      case 5: rows_simd<NC, 4, kLog1m, kB>(a, T, b, c); rows_simd<NC, 1, kLog1m, kB>(a, T, b + 4, c); break;
      case 4: rows_simd<NC, 4, kLog1m, kB>(a, T, b, c); break;
      case 3: rows_simd<NC, 3, kLog1m, kB>(a, T, b, c); break;
      case 2: rows_simd<NC, 2, kLog1m, kB>(a, T, b, c); break;
      default: rows_simd<NC, 1, kLog1m, kB>(a, T, b, c); break;
    }
  }
}

template <bool kLog1m, int kB>
QI_INLINE void rows_b(const ScanArgs& a, ChannelTables& T, int64_t c) {
  switch (a.n / W) {
    case 1: rows_simd_n<kLog1m, kB, 1>(a, T, c); break;
    case 2: rows_simd_n<kLog1m, kB, 2>(a, T, c); break;
    default: rows_simd_n<kLog1m, kB, 4>(a, T, c); break;
  }
}

QI_INLINE S::F vneg(S::F x) { return S::asf(S::bxor(S::asi(x), S::seti(static_cast<int32_t>(0x80000000u)))); }

QI_INLINE S::F vexp(S::F x) {
  const S::F lo = S::setf(-87.0f), hi = S::setf(88.0f);
  S::F xc = S::self(S::flt(x, lo), lo, x);
  xc = S::self(S::flt(hi, xc), hi, xc);
  const S::F k = S::fround(S::fmul(xc, S::setf(kLog2e)));
  const S::F r = S::fsub(S::fsub(xc, S::fmul(k, S::setf(kLn2Hi))), S::fmul(k, S::setf(kLn2Lo)));
  S::F p = S::setf(kExpPoly[0]);
  for (int i = 1; i < 7; ++i) p = S::fadd(S::fmul(p, r), S::setf(kExpPoly[i]));
  const S::I ki = S::cvt(k);
  const S::I k1 = S::sra(ki, 1);  // floor(k / 2)
  const S::I b127 = S::seti(127);
  const S::F out = S::fmul(S::fmul(p, S::asf(S::sll(S::add(k1, b127), 23))),
                           S::asf(S::sll(S::add(S::sub(ki, k1), b127), 23)));
  return S::self(S::flt(x, lo), S::setf(0.0f), out);
}


// fill_a_table on W states at a time for the codes marked in T.used: exp by vexp (exp_f32's
// operations), log1m counts from the float's bits where the grid has a base-2 form (else,
// and for r below 2^-100, log_count per lane); also the SIMD rows' min(at, 31) and 2^(that - 1).
QI_INLINE void fill_a_simd(const ScanArgs& a, int64_t c, ChannelTables& T) {
  const int64_t n = a.n, J = a.J;
  const float* sA = a.a.scale + c * n;
  const float* zA = a.a.zp + c * n;
  const float* Ac = a.A + c * n;
  const double two_f2 = std::ldexp(1.0, a.F2);
  const int32_t NA = a.a.qmax - a.a.qmin, shift = a.F2 - a.F;
  alignas(64) float abar[W];
  alignas(64) int32_t cnt[W];
  const S::F onef = S::setf(1.0f), zerof = S::setf(0.0f);
  const S::I top = S::seti(127 - a.a.qmin), smant = S::seti(a.a.s_mant - 1), mant = S::seti(0x7fffff);
  const S::I zero = S::seti(0), one = S::seti(1), nav = S::seti(NA), tinyb = S::seti(0x0d800000);
  const S::I base = S::seti(a.a.qmin + shift), c62 = S::seti(62), c31 = S::seti(31);
  for (int64_t j = 0; j < J; ++j) {
    if (!T.used[j]) continue;
    const S::F dv = S::setf(a.dv0[j]);
    for (int64_t k0 = 0; k0 < n; k0 += W) {
      const S::F e = vexp(S::fmul(dv, S::loadf(Ac + k0)));
      if (a.a.kind == 2) {  // log1m
        S::F dist = S::fsub(onef, e);
        dist = S::self(S::flt(dist, zerof), zerof, dist);
        const S::F r = S::fdiv(dist, S::loadf(sA + k0));
        const S::I bits = S::asi(r);
        S::I m;
        const S::M tiny = S::mand(S::lt(bits, tinyb), S::lt(zero, bits));
        if (a.a.pow2 && !S::many(tiny)) {
          m = S::sub(top, S::sra(bits, 23));
          m = S::sel(S::lt(smant, S::band(bits, mant)), S::sub(m, one), m);
          m = S::imin(S::imax(m, zero), nav);
          m = S::sel(S::eq(bits, zero), nav, m);
        } else {
          S::storef(abar, r);
          for (int i = 0; i < W; ++i) {
            cnt[i] = a.a.pow2 && (abar[i] >= kTiny || abar[i] == 0.0f) ? pow2_count(a.a, abar[i])
                                                                        : log_count(abar[i], a.a.thr, NA);
          }
          m = S::loadi(cnt);
        }
        const S::I v = S::add(base, m);
        const S::I sh = S::imin(v, c31);
        S::storei(T.at.data() + j * n + k0, S::imin(v, c62));
        S::storei(T.atc.data() + j * n + k0, sh);
        S::storei(T.ar.data() + j * n + k0, S::sllv(one, S::sub(sh, one)));
      } else {  // uniform: Afix = round(A_hat 2^F2) (in double, as fill_a_table)
        S::storef(abar, e);
        int32_t* out = T.at.data() + j * n + k0;
        for (int i = 0; i < W; ++i) {
          const int64_t k = k0 + i;
          float q = std::nearbyint(abar[i] / sA[k]) + zA[k];
          q = q < a.a.qmin ? static_cast<float>(a.a.qmin) : q;
          q = q > a.a.qmax ? static_cast<float>(a.a.qmax) : q;
          out[i] = static_cast<int32_t>(
              std::nearbyint((static_cast<double>(q - zA[k]) * static_cast<double>(sA[k])) * two_f2));
        }
      }
    }
  }
}

constexpr int64_t kBlock = 16;  // channels per block: their u / delta codes / y lines read once

// The pre-pass of channels c0 .. c0 + cb - 1: du = delta_hat u and the A-table offset of every
// (channel, row, step), into (cb, nb, l) buffers, and which delta codes each channel uses.
// Where a full block's channels are adjacent in u and the codes (Vim's channels-last
// layout), W steps x W channels at a time: vector loads per step, transposed in registers.
QI_INLINE void gather_block(const ScanArgs& a, ChannelTables& T, int64_t c0, int64_t cb) {
  const int64_t l = a.l, n = a.n, nb = a.nb;
  std::fill(T.used_blk.begin(), T.used_blk.end(), 0);
  const bool fast = cb == kBlock && a.su[1] == 1 && a.sd[1] == 1;
  const int64_t lv = fast ? l - l % W : 0;
  const S::I doffv = S::seti(static_cast<int32_t>(a.doff)), nv = S::seti(static_cast<int32_t>(n));
  alignas(64) int32_t cbuf[W];
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t t0 = 0; t0 < lv; t0 += W) {
      for (int64_t hb = 0; hb < kBlock; hb += W) {  // W channels: hb .. hb + W - 1 of the block
        S::F dv[W], ov[W];
        for (int i = 0; i < W; ++i) {
          const int64_t t = t0 + i;
          const float* ur = a.u + b * a.su[0] + (c0 + hb) + t * a.su[2];
          const int8_t* di = a.didx + b * a.sd[0] + (c0 + hb) + t * a.sd[2];
          __builtin_prefetch(ur + W * a.su[2]);
          __builtin_prefetch(di + W * a.sd[2]);
          const S::I code = S::loadi8(di);
          dv[i] = S::fmul(S::gatherf(a.dvals, code), S::loadf(ur));
          ov[i] = S::asf(S::mul(S::add(code, doffv), nv));
          S::storei(cbuf, code);
          for (int k = 0; k < W; ++k) T.used_blk[(hb + k) * a.J + cbuf[k] + a.doff] = 1;
        }
        S::transpose(dv);
        S::transpose(ov);
        for (int k = 0; k < W; ++k) {
          const int64_t at = ((hb + k) * nb + b) * l + t0;
          S::storef(T.du_blk.data() + at, dv[k]);
          S::storei(T.off_blk.data() + at, S::asi(ov[k]));
        }
      }
    }
    for (int64_t t = lv; t < l; ++t) {
      const float* ur = a.u + b * a.su[0] + c0 * a.su[1] + t * a.su[2];
      const int8_t* di = a.didx + b * a.sd[0] + c0 * a.sd[1] + t * a.sd[2];
      __builtin_prefetch(ur + 8 * a.su[2]);  // the lines of later steps (strided: no hardware prefetch)
      __builtin_prefetch(di + 8 * a.sd[2]);
      for (int64_t j = 0; j < cb; ++j) {
        const int8_t code = di[j * a.sd[1]];
        T.du_blk[(j * nb + b) * l + t] = a.dvals[code] * ur[j * a.su[1]];
        T.off_blk[(j * nb + b) * l + t] = static_cast<int32_t>((code + a.doff) * n);
        T.used_blk[j * a.J + code + a.doff] = 1;
      }
    }
  }
}

// y of the block's channels from its (cb, nb, l) buffer to a.y (channels-last: transposed
// W x W in registers, as gather_block)
QI_INLINE void scatter_block(const ScanArgs& a, const ChannelTables& T, int64_t c0, int64_t cb) {
  const int64_t l = a.l, nb = a.nb;
  const bool fast = cb == kBlock && a.sy[1] == 1;
  const int64_t lv = fast ? l - l % W : 0;
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t t0 = 0; t0 < lv; t0 += W) {
      for (int64_t hb = 0; hb < kBlock; hb += W) {
        S::F v[W];
        for (int k = 0; k < W; ++k) v[k] = S::loadf(T.y_blk.data() + ((hb + k) * nb + b) * l + t0);
        S::transpose(v);
        for (int i = 0; i < W; ++i) S::storef(a.y + b * a.sy[0] + (c0 + hb) + (t0 + i) * a.sy[2], v[i]);
      }
    }
    for (int64_t t = lv; t < l; ++t) {
      float* yr = a.y + b * a.sy[0] + c0 * a.sy[1] + t * a.sy[2];
      __builtin_prefetch(yr + 8 * a.sy[2], 1);
      for (int64_t j = 0; j < cb; ++j) yr[j * a.sy[1]] = T.y_blk[(j * nb + b) * l + t];
    }
  }
}

// scan_tasks with the rows of this path (the generic loops where it does not apply: n not a
// multiple of W up to 4 W, or B / C not contiguous over the states)
void tasks(const ScanArgs& a, int64_t begin, int64_t end) {
  const bool simd = a.sB[3] == 1 && a.sC[3] == 1 && (a.n == W || a.n == 2 * W || a.n == 4 * W);
  if (!simd) return scan_tasks_generic(a, begin, end);
  ChannelTables T;
  init_tables(a, T);
  const int64_t per = a.nb * a.l;
  T.t2.resize(8 * a.l * a.n);
  T.du_blk.resize(kBlock * per);
  T.off_blk.resize(kBlock * per);
  T.y_blk.resize(kBlock * per);
  T.used_blk.resize(kBlock * a.J);
  T.atc.assign(a.J * a.n, 0);
  T.ar.assign(a.J * a.n, 0);
  const int kB = a.b.kind == 3 ? (a.b.pow2 ? 1 : 0) : 2;
  for (int64_t c0 = begin; c0 < end; c0 += kBlock) {
    const int64_t cb = std::min(kBlock, end - c0);
    gather_block(a, T, c0, cb);
    for (int64_t j = 0; j < cb; ++j) {
      const int64_t c = c0 + j;
      T.du_c = T.du_blk.data() + j * per;
      T.off_c = T.off_blk.data() + j * per;
      T.y_c = T.y_blk.data() + j * per;
      std::copy(T.used_blk.begin() + j * a.J, T.used_blk.begin() + (j + 1) * a.J, T.used.begin());
      fill_channel(a, c, T);
      fill_a_simd(a, c, T);  // the codes marked by gather_block
      if (a.a.kind == 2) {
        if (kB == 1) rows_b<true, 1>(a, T, c);
        else if (kB == 2) rows_b<true, 2>(a, T, c);
        else rows_b<true, 0>(a, T, c);
      } else {
        if (kB == 1) rows_b<false, 1>(a, T, c);
        else if (kB == 2) rows_b<false, 2>(a, T, c);
        else rows_b<false, 0>(a, T, c);
      }
    }
    scatter_block(a, T, c0, cb);
  }
}

// ---- the fused Vim-mixer kernels (int_kernels.cpp, "fused Vim mixer") on W channels at a
// time: the same float32 operations as the scalar code (exp_f32, silu_f32, softplus_f32,
// quant_value), the remainder of a row by the scalar code itself.

QI_INLINE S::F vsilu(S::F x) { return S::fdiv(x, S::fadd(S::setf(1.0f), vexp(vneg(x)))); }

QI_INLINE S::F vsoftplus(S::F x) {
  const S::F zero = S::setf(0.0f);
  const S::F e = vexp(vneg(S::asf(S::band(S::asi(x), S::seti(0x7fffffff)))));
  const S::F w = S::fdiv(e, S::fadd(S::setf(2.0f), e));
  const S::F w2 = S::fmul(w, w);
  S::F p = S::setf(kAtanh[0]);
  for (int i = 1; i < 9; ++i) p = S::fadd(S::fmul(p, w2), S::setf(kAtanh[i]));
  const S::F v = S::fadd(S::self(S::flt(zero, x), x, zero), S::fmul(S::fmul(S::setf(2.0f), w), p));
  return S::self(S::flt(S::setf(20.0f), x), x, v);
}

// clamp(nearbyint(x * inv) + zp, lo, hi): the code q (as float), inv = 1 / s
QI_INLINE S::F vcode(S::F x, S::F inv, S::F zp, S::F lo, S::F hi) {
  S::F q = S::fadd(S::fround(S::fmul(x, inv)), zp);
  q = S::self(S::flt(q, lo), lo, q);
  return S::self(S::flt(hi, q), hi, q);
}

void conv_silu(const int8_t* x, const int8_t* wT, int8_t* codes, float* vals, const float* scale,
               const float* bias, int32_t zc, int64_t L, int64_t E, int64_t K, bool reverse, float su,
               float zpu, float qmin, float qmax, float off, int64_t r0, int64_t r1, int32_t* acc,
               float* pre) {
  const int64_t Ev = E - E % W;
  const S::F suv = S::setf(su), isu = S::setf(1.0f / su), zpv = S::setf(zpu), lo = S::setf(qmin), hi = S::setf(qmax);
  const S::F offv = S::setf(off);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / L, p = r % L;
    for (int64_t c = 0; c < Ev; c += W) {
      S::I a = S::seti(0);
      for (int64_t j = 0; j < K; ++j) {
        const int64_t src = reverse ? p + (K - 1) - j : p - (K - 1) + j;
        if (src < 0 || src >= L) continue;
        const S::I xv = S::add(S::loadi8(x + (b * L + src) * E + c), S::seti(zc));
        a = S::add(a, S::mul(xv, S::loadi8(wT + j * E + c)));
      }
      const S::F pr = S::fadd(S::fmul(S::tof(a), S::loadf(scale + c)), S::loadf(bias + c));
      const S::F q = vcode(vsilu(pr), isu, zpv, lo, hi);
      S::storei8(codes + r * E + c, S::cvt(S::fsub(q, offv)));
      S::storef(vals + r * E + c, S::fmul(S::fsub(q, zpv), suv));
    }
    if (Ev < E) {  // the remaining channels: the scalar code
      for (int64_t c = Ev; c < E; ++c) {
        int32_t av = 0;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t src = reverse ? p + (K - 1) - j : p - (K - 1) + j;
          if (src < 0 || src >= L) continue;
          av += (static_cast<int32_t>(x[(b * L + src) * E + c]) + zc) * static_cast<int32_t>(wT[j * E + c]);
        }
        const float u = silu_f32(static_cast<float>(av) * scale[c] + bias[c]);
        float q = std::nearbyint(u * (1.0f / su)) + zpu;
        q = q < qmin ? qmin : q;
        q = q > qmax ? qmax : q;
        codes[r * E + c] = static_cast<int8_t>(static_cast<int32_t>(q - off));
        vals[r * E + c] = (q - zpu) * su;
      }
    }
  }
}

void delta(const float* dt, const float* bias, int8_t* out, bool uniform, float s, float zp, float qmin,
           float qmax, float off, const float* thr, int32_t N, const Grid* pow2, int64_t E, int64_t r0,
           int64_t r1) {
  const int64_t Ev = E - E % W;
  const S::F sv = S::setf(1.0f / s), zpv = S::setf(zp), lo = S::setf(qmin), hi = S::setf(qmax);
  const S::F base = S::setf(qmin + off), zero = S::setf(0.0f);
  alignas(64) float rbuf[W];
  for (int64_t r = r0; r < r1; ++r) {
    const float* d = dt + r * E;
    int8_t* o = out + r * E;
    for (int64_t c = 0; c < Ev; c += W) {
      const S::F sp = vsoftplus(S::fadd(S::loadf(d + c), S::loadf(bias + c)));
      if (uniform) {
        S::storei8(o + c, S::cvt(S::fsub(vcode(sp, sv, zpv, lo, hi), base)));
        continue;
      }
      S::F rr = S::fmul(sp, sv);
      rr = S::self(S::flt(rr, zero), zero, rr);
      if (pow2 != nullptr) {  // r >= 2^-100 or 0 (softplus of a float above -70)
        const S::I bits = S::asi(rr);
        S::I m = S::sub(S::seti(127 - pow2->qmin), S::sra(bits, 23));
        m = S::sel(S::lt(S::seti(pow2->s_mant - 1), S::band(bits, S::seti(0x7fffff))), S::sub(m, S::seti(1)), m);
        m = S::imin(S::imax(m, S::seti(0)), S::seti(N));
        m = S::sel(S::eq(bits, S::seti(0)), S::seti(N), m);
        const S::M tiny = S::mand(S::lt(bits, S::seti(0x0d800000)), S::lt(S::seti(0), bits));  // < 2^-100
        if (!S::many(tiny)) {
          S::storei8(o + c, S::sub(m, S::seti(static_cast<int32_t>(off))));
          continue;
        }
      }
      S::storef(rbuf, rr);
      for (int i = 0; i < W; ++i) o[c + i] = static_cast<int8_t>(log_count(rbuf[i], thr, N) - static_cast<int32_t>(off));
    }
    for (int64_t c = Ev; c < E; ++c) {
      const float v = softplus_f32(d[c] + bias[c]);
      if (uniform) {
        float q = std::nearbyint(v * (1.0f / s)) + zp;
        q = q < qmin ? qmin : q;
        q = q > qmax ? qmax : q;
        o[c] = static_cast<int8_t>(static_cast<int32_t>(q - qmin - off));
      } else {
        float rr = v * (1.0f / s);
        rr = rr < 0.0f ? 0.0f : rr;
        o[c] = static_cast<int8_t>(log_count(rr, thr, N) - static_cast<int32_t>(off));
      }
    }
  }
}

// dt_proj's product and epilogue for one row (int_kernels.cpp dt_row's numbers): the K
// input codes as Kp = ceil(K / 2) int16 pairs against the weights' pairs wp (Kp, E)
// (pair i of column n: w[n, 2i] low, w[n, 2i + 1] high, 0 past K), one vpmaddwd per pair
// and W columns, the sums in registers (exact: |x w| <= 2^14, K products in int32); then
// dt[n] = float(acc[n] + z wsum[n]) * (r cs[n]).
void dt_row_pairs(const int8_t* x, const int32_t* wp, int64_t K, int64_t E, float r, int32_t z,
                  const int32_t* wsum, const float* cs, float* dt) {
  const int64_t Kp = (K + 1) / 2, Ev = E - E % W;
  int32_t xp[64];  // the row's pairs; callers keep K <= 128
  for (int64_t i = 0; i < Kp; ++i) xp[i] = i16_pair(x[2 * i], 2 * i + 1 < K ? x[2 * i + 1] : 0);
  const S::I zv = S::seti(z);
  const S::F rv = S::setf(r);
  for (int64_t c = 0; c < Ev; c += W) {
    S::I acc = S::seti(0);
    for (int64_t i = 0; i < Kp; ++i) acc = S::add(acc, S::madd16(S::seti(xp[i]), S::loadi(wp + i * E + c)));
    const S::F sc = S::fmul(rv, S::loadf(cs + c));
    S::storef(dt + c, S::fmul(S::tof(S::add(acc, S::mul(zv, S::loadi(wsum + c)))), sc));
  }
  for (int64_t n = Ev; n < E; ++n) {  // the remaining columns: dt_row's scalar code
    int32_t acc = 0;
    for (int64_t i = 0; i < Kp; ++i) {
      const int32_t w0 = static_cast<int16_t>(wp[i * E + n] & 0xffff), w1 = wp[i * E + n] >> 16;
      const int32_t x0 = static_cast<int16_t>(xp[i] & 0xffff), x1 = xp[i] >> 16;
      acc += x0 * w0 + x1 * w1;
    }
    dt[n] = static_cast<float>(acc + z * wsum[n]) * (r * cs[n]);
  }
}

void scan_out(const float* y, const float* u, const float* z, int64_t zs, const float* D, const float* prev,
              float* out, float sy, float zpy, float qyl, float qyh, bool gate, float sz, float zpz,
              float qzl, float qzh, int64_t E, int64_t r0, int64_t r1) {
  const int64_t Ev = E - E % W;
  const S::F syv = S::setf(sy), isy = S::setf(1.0f / sy), zyv = S::setf(zpy), ylo = S::setf(qyl), yhi = S::setf(qyh);
  const S::F szv = S::setf(sz), isz = S::setf(1.0f / sz), zzv = S::setf(zpz), zlo = S::setf(qzl), zhi = S::setf(qzh);
  const S::F half = S::setf(0.5f);
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = 0; c < Ev; c += W) {
      const S::F yq = S::fmul(S::fsub(vcode(S::loadf(y + r * E + c), isy, zyv, ylo, yhi), zyv), syv);
      S::F v = S::fadd(yq, S::fmul(S::loadf(D + c), S::loadf(u + r * E + c)));
      if (gate) {
        const S::F zq = S::fmul(S::fsub(vcode(vsilu(S::loadf(z + r * zs + c)), isz, zzv, zlo, zhi), zzv), szv);
        v = S::fmul(v, zq);
      }
      if (prev != nullptr) v = S::fmul(S::fadd(S::loadf(prev + r * E + c), v), half);
      S::storef(out + r * E + c, v);
    }
    for (int64_t c = Ev; c < E; ++c) {
      float v = quant_value(y[r * E + c], 1.0f / sy, sy, zpy, qyl, qyh) + D[c] * u[r * E + c];
      if (gate) v = v * quant_value(silu_f32(z[r * zs + c]), 1.0f / sz, sz, zpz, qzl, qzh);
      if (prev != nullptr) v = (prev[r * E + c] + v) * 0.5f;
      out[r * E + c] = v;
    }
  }
}
