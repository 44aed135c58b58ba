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
// (v[k] + v[k + n/2]) until one register is left, then its lanes.
template <int NC>
QI_INLINE float tree_chunks(S::F* v) {
  for (int w = NC / 2; w >= 1; w /= 2) {
    for (int i = 0; i < w; ++i) v[i] = S::fadd(v[i], v[i + w]);
  }
  return S::tree(v[0]);
}

// B terms of one row (b_terms_row); false when the grid has no base-2 form (then
// b_terms_row computes the row)
template <int NC>
QI_INLINE bool b_terms_simd(const ScanArgs& a, const ChannelTables& T, int64_t b, int64_t c,
                            int32_t* __restrict t2) {
  const int64_t n = NC * W, grp = c / a.dg;
  const bool log_grid = a.b.kind == 3;
  if (log_grid && !a.b.pow2) return false;
  const float cap = std::ldexp(static_cast<float>(2 * (a.h.qmax - a.h.qmin) + 1), a.F);
  const float* ur = a.u + b * a.su[0] + c * a.su[1];
  const int8_t* di = a.didx + b * a.sd[0] + c * a.sd[1];
  const float* Bb = a.B + b * a.sB[0] + grp * a.sB[1];
  const int32_t NB = a.b.qmax - a.b.qmin;
  const S::I zero = S::seti(0), one = S::seti(1), nb = S::seti(NB), absmask = S::seti(0x7fffffff);
  const S::I signmask = S::seti(static_cast<int32_t>(0x80000000u)), qminv = S::seti(a.b.qmin);
  const S::I mantmask = S::seti(0x7fffff), smant = S::seti(a.b.s_mant - 1);
  const S::I top = S::seti(127 - a.b.qmin), e126 = S::seti(126), b127 = S::seti(127);
  const S::F capv = S::setf(cap), ncapv = S::setf(-cap);
  const S::F qlo = S::setf(static_cast<float>(a.b.qmin)), qhi = S::setf(static_cast<float>(a.b.qmax));
  S::F inv[NC], zpB[NC];
  for (int ch = 0; ch < NC; ++ch) {
    inv[ch] = S::loadf(T.invB.data() + ch * W);
    zpB[ch] = S::loadf(T.zpB.data() + ch * W);
  }
  for (int64_t t = 0; t < a.l; ++t) {
    const S::F du = S::setf(a.dvals[di[t * a.sd[2]]] * ur[t * a.su[2]]);
    const float* Bt = Bb + t * a.sB[2];
    const float* rbt = T.rb.data() + (a.h.group != nullptr ? a.h.group[t] : 0) * n;
    for (int ch = 0; ch < NC; ++ch) {
      const S::F x = S::fmul(du, S::loadf(Bt + ch * W));
      const S::F rb = S::loadf(rbt + ch * W);
      S::I out;
      if (log_grid) {
        // r = |x| / s_B; m = its code count from the float's bits (the zero code when
        // r == 0: the count is then above NB and clamps to it). Lanes with r < 2^-100
        // get counts >= 99 here where the thresholds say otherwise; their terms round to 0
        // either way (the plan keeps rb < 2^90).
        const S::I xb = S::asi(x);
        const S::I bits = S::asi(S::fmul(S::asf(S::band(xb, absmask)), inv[ch]));
        S::I m = S::sub(top, S::sra(bits, 23));
        m = S::sel(S::lt(smant, S::band(bits, mantmask)), S::sub(m, one), m);  // mant >= S
        m = S::imin(S::imax(m, zero), nb);
        const S::I e = S::imin(S::add(m, qminv), e126);
        S::F mag = S::fmul(rb, S::asf(S::sll(S::sub(b127, e), 23)));  // rb 2^-e
        mag = S::self(S::lt(m, nb), S::self(S::flt(mag, capv), mag, capv), S::setf(0.0f));
        out = S::cvt(S::asf(S::bor(S::asi(mag), S::band(xb, signmask))));  // the sign of x
      } else {
        S::F q = S::fadd(S::fround(S::fmul(x, inv[ch])), zpB[ch]);
        q = S::self(S::flt(q, qlo), qlo, q);
        q = S::self(S::flt(qhi, q), qhi, q);
        S::F v = S::fmul(S::fsub(q, zpB[ch]), rb);
        v = S::self(S::flt(v, ncapv), ncapv, v);
        v = S::self(S::flt(capv, v), capv, v);
        out = S::cvt(v);
      }
      S::storei(t2 + t * n + ch * W, out);
    }
  }
  return true;
}

// step_in_group on one register of a row
template <bool kLog1m>
QI_INLINE S::I step_simd(S::I hq, S::I at, S::I s2, S::I t2, S::I lo, S::I hi, int32_t F,
                         int32_t F2) {
  S::I term;
  if constexpr (kLog1m) {  // rounding shifts: (v + 2^(sh-1)) >> sh, sh = min(at, 31)
    const S::I sh = S::imin(at, S::seti(31));
    const S::I v = S::add(S::mul(hq, s2), S::sllv(S::seti(1), S::sub(sh, S::seti(1))));
    term = S::sub(S::sll(hq, F), S::srav(v, sh));
  } else {
    term = S::sra(S::add(S::mul(hq, at), S::seti(int32_t(1) << (F2 - F - 1))), F2 - F);
  }
  const S::I x = S::add(term, t2);
  // round half to even: (x + half - 1 + (floor(x / 2^F) & 1)) >> F
  const S::I odd = S::band(S::sra(x, F), S::seti(1));
  const S::I q = S::sra(S::add(S::add(x, S::seti((int32_t(1) << (F - 1)) - 1)), odd), F);
  return S::imin(S::imax(q, lo), hi);
}

template <int NC, int R, bool kLog1m>
QI_INLINE void rows_simd(const ScanArgs& a, ChannelTables& T, int64_t b0, int64_t c) {
  const int64_t l = a.l, n = NC * W, grp = c / a.dg;
  for (int r = 0; r < R; ++r) {
    int32_t* t2 = T.t2.data() + r * l * n;
    if (!b_terms_simd<NC>(a, T, b0 + r, c, t2)) b_terms_row(a, T, b0 + r, c, t2);
  }
  S::I s2[NC];
  for (int ch = 0; ch < NC; ++ch) s2[ch] = S::loadi(T.s2.data() + ch * W);
  S::I h[R][NC];
  const int8_t* di[R];
  const float* Cb[R];
  float* yr[R];
  for (int r = 0; r < R; ++r) {
    for (int ch = 0; ch < NC; ++ch) h[r][ch] = S::seti(0);
    di[r] = a.didx + (b0 + r) * a.sd[0] + c * a.sd[1];
    Cb[r] = a.C + (b0 + r) * a.sC[0] + grp * a.sC[1];
    yr[r] = a.y + (b0 + r) * a.sy[0] + c * a.sy[1];
  }
  int64_t gprev = a.h.group != nullptr ? a.h.group[0] : 0;
  for (int64_t t = 0; t < l; ++t) {
    const int64_t g = a.h.group != nullptr ? a.h.group[t] : 0;
    if (t > 0 && g != gprev) {  // the first step of a group: int64 terms (step_boundary)
      for (int r = 0; r < R; ++r) {
        alignas(64) int32_t hb[NC * W];
        for (int ch = 0; ch < NC; ++ch) S::storei(hb + ch * W, h[r][ch]);
        step_boundary(a, hb, T.at.data() + (di[r][t * a.sd[2]] + a.doff) * n, T, T.t2.data() + (r * l + t) * n, g);
        for (int ch = 0; ch < NC; ++ch) h[r][ch] = S::loadi(hb + ch * W);
      }
    } else {
      for (int ch = 0; ch < NC; ++ch) {
        const S::I lo = S::loadi(T.lo.data() + g * n + ch * W);
        const S::I hi = S::loadi(T.hi.data() + g * n + ch * W);
        for (int r = 0; r < R; ++r) {
          const S::I at = S::loadi(T.at.data() + (di[r][t * a.sd[2]] + a.doff) * n + ch * W);
          const S::I t2 = S::loadi(T.t2.data() + (r * l + t) * n + ch * W);
          h[r][ch] = step_simd<kLog1m>(h[r][ch], at, s2[ch], t2, lo, hi, a.F, a.F2);
        }
      }
    }
    gprev = g;
    for (int r = 0; r < R; ++r) {
      S::F p[NC];
      for (int ch = 0; ch < NC; ++ch) {
        const S::F hs = S::loadf(T.hs.data() + g * n + ch * W);
        p[ch] = S::fmul(S::fmul(S::tof(h[r][ch]), hs), S::loadf(Cb[r] + t * a.sC[2] + ch * W));
      }
      yr[r][t * a.sy[2]] = tree_chunks<NC>(p);
    }
  }
}

template <int NC, bool kLog1m>
QI_INLINE void rows_simd_n(const ScanArgs& a, ChannelTables& T, int64_t b0, int64_t nr, int64_t c) {
  constexpr int kMaxR = NC == 1 ? 4 : 2;  // registers: R * NC rows of state side by side
  for (int64_t b = b0; b < b0 + nr; b += kMaxR) {
    switch (std::min<int64_t>(kMaxR, b0 + nr - b)) {
      case 4: rows_simd<NC, 4 <= kMaxR ? 4 : 1, kLog1m>(a, T, b, c); break;
      case 3: rows_simd<NC, 3 <= kMaxR ? 3 : 1, kLog1m>(a, T, b, c); break;
      case 2: rows_simd<NC, 2, kLog1m>(a, T, b, c); break;
      default: rows_simd<NC, 1, kLog1m>(a, T, b, c); break;
    }
  }
}

// rows b0 .. b0 + nr - 1 of channel c on this path, or false (n not a multiple of W, or
// B / C not contiguous over the states)
template <bool kLog1m>
QI_INLINE bool rows(const ScanArgs& a, ChannelTables& T, int64_t b0, int64_t nr, int64_t c) {
  if (a.sB[3] != 1 || a.sC[3] != 1) return false;
  switch (a.n) {
    case W: rows_simd_n<1, kLog1m>(a, T, b0, nr, c); return true;
    case 2 * W: rows_simd_n<2, kLog1m>(a, T, b0, nr, c); return true;
    case 4 * W: rows_simd_n<4, kLog1m>(a, T, b0, nr, c); return true;
    default: return false;
  }
}

// scan_tasks with the rows of this path (the generic loops where it does not apply)
void tasks(const ScanArgs& a, int64_t begin, int64_t end) {
  ChannelTables T;
  init_tables(a, T);
  for (int64_t c = begin; c < end; ++c) {
    fill_channel(a, c, T);
    fill_a_table(a, c, 0, a.nb, T);
    for (int64_t b0 = 0; b0 < a.nb; b0 += kRows) {
      const int64_t nr = std::min(kRows, a.nb - b0);
      if (a.a.kind == 2) {
        if (!rows<true>(a, T, b0, nr, c)) scan_rows<true>(a, T, b0, nr, c);
      } else {
        if (!rows<false>(a, T, b0, nr, c)) scan_rows<false>(a, T, b0, nr, c);
      }
    }
  }
}

// ---- the fused Vim-mixer kernels (int_kernels.cpp, "fused Vim mixer") on W channels at a
// time: the same float32 operations as the scalar code (exp_f32, silu_f32, softplus_f32,
// quant_value), the remainder of a row by the scalar code itself.

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
