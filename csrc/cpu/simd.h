// Float vectors for the CPU hot loops (GCC/Clang vector extensions): included by ops_sse2.cpp (PYSEG_VW 4,
// any x86-64) and ops_avx2.cpp (PYSEG_VW 8, compiled with -mavx2 -mfma) inside their own namespaces.
//
// A pixel's or vertex's labels form a row of LP floats (LP a multiple of 4). Row<LP> holds it in registers as
// LP / VW wide vectors plus, when VW is 8 and LP % 8 == 4, one 4-lane tail: 11 labels are 12 floats (one
// 8-lane and one 4-lane vector), with no padding to 16 and no third vector.
// No include guard on purpose: one copy per ISA namespace. Needs <cstdint>, <cstring> and crf/meanfield.h
// included before.

#ifndef PYSEG_VW
#error "define PYSEG_VW (4 or 8) before including cpu/simd.h"
#endif

constexpr int VW = PYSEG_VW;
typedef float vw_t __attribute__((vector_size(4 * PYSEG_VW)));
typedef int32_t vwi_t __attribute__((vector_size(4 * PYSEG_VW)));
typedef float v4_t __attribute__((vector_size(16)));
typedef int32_t v4i_t __attribute__((vector_size(16)));

template <class V>
static inline V vload(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <class V>
static inline void vstore(float* p, V v) {
  std::memcpy(p, &v, sizeof(v));
}
template <class V>
static inline V vset1(float x) {
  return x - V{};
}
template <class V>
static inline V vmax(V a, V b) {
  return a > b ? a : b;
}

// Horizontal max / sum of a 4-lane vector as a scalar (fixed order).
static inline float hmax4(v4_t v) {
  v = vmax(v, __builtin_shufflevector(v, v, 2, 3, 0, 1));
  v = vmax(v, __builtin_shufflevector(v, v, 1, 0, 3, 2));
  return v[0];
}
static inline float hsum4(v4_t v) {
  v = v + __builtin_shufflevector(v, v, 2, 3, 0, 1);
  v = v + __builtin_shufflevector(v, v, 1, 0, 3, 2);
  return v[0];
}
// A wide vector folded to 4 lanes.
static inline v4_t fold_max(vw_t v) {
#if PYSEG_VW == 8
  return vmax(__builtin_shufflevector(v, v, 0, 1, 2, 3), __builtin_shufflevector(v, v, 4, 5, 6, 7));
#else
  return v;
#endif
}
static inline v4_t fold_sum(vw_t v) {
#if PYSEG_VW == 8
  return __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
#else
  return v;
#endif
}

// exp(x) for x <= 0 as 2^(x log2 e) (not crf::fast_exp_nonpos's polynomial: see there): n = round, f in [-1/2, 1/2], 2^f by its degree-6 Taylor polynomial
// (truncation < 1.3e-7 relative; the rounding of x log2 e adds about |x| 6e-8, so ~1e-6 for the x > -20 that
// matter in a softmax). Below -60 the result is exactly 0 (e^-60 ~ 1e-26 is negligible next to the largest
// lane, which is 1): padding lanes stay 0 and products of tiny values never become denormal.
template <class V, class VI>
static inline V vexp_nonpos(V x) {
  const V lo = vset1<V>(-60.0f);
  const V xc = x < lo ? lo : x;
  const V t = xc * 1.44269504088896341f;
  const V magic = vset1<V>(12582912.0f);
  const V n = (t + magic) - magic;
  const V f = t - n;
  V p = vset1<V>(1.5403530393381606e-4f);
  p = p * f + 1.3333558146428443e-3f;
  p = p * f + 9.6181291076284772e-3f;
  p = p * f + 5.5504108664821580e-2f;
  p = p * f + 2.4022650695910071e-1f;
  p = p * f + 6.9314718055994531e-1f;
  p = p * f + 1.0f;
  const VI ni = __builtin_convertvector(n, VI);
  const VI bits = (ni + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const V res = p * scale;
  return x < lo ? V{} : res;
}

// log(x) lane-wise for positive normal floats (crf::fast_log_pos, the same polynomial).
static inline vw_t vlog_pos(vw_t x) {
  vwi_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  vwi_t e = ((bits >> 23) & 0xff) - 127;
  const vwi_t mb = (bits & 0x7fffff) | 0x3f800000;
  vw_t m;
  std::memcpy(&m, &mb, sizeof(m));
  const vwi_t big = m > 1.41421356f;  // all ones where true
  m = big ? m * 0.5f : m;
  e = e - big;  // -(-1) = +1 where big
  return crf::log_of_mantissa(m - 1.0f, __builtin_convertvector(e, vw_t));
}

// A row of LP floats in registers.
template <int LP>
struct Row {
  static_assert(LP % 4 == 0, "rows are padded to a multiple of 4 floats");
  static constexpr int NW = LP / VW;             // full wide vectors
  static constexpr bool kTail = LP % VW != 0;    // one 4-lane tail (VW == 8 only)
  vw_t w[NW > 0 ? NW : 1];
  v4_t t;

  static inline Row zero() {
    Row r;
    for (int i = 0; i < NW; ++i) r.w[i] = vw_t{};
    r.t = v4_t{};
    return r;
  }
  static inline Row load(const float* p) {
    Row r;
    for (int i = 0; i < NW; ++i) r.w[i] = vload<vw_t>(p + VW * i);
    if (kTail) r.t = vload<v4_t>(p + VW * NW);
    return r;
  }
  inline void store(float* p) const {
    for (int i = 0; i < NW; ++i) vstore(p + VW * i, w[i]);
    if (kTail) vstore(p + VW * NW, t);
  }
  // The low 4 lanes of a broadcast (no extra instruction: the register's low half).
  static inline v4_t low4(vw_t v) {
#if PYSEG_VW == 8
    return __builtin_shufflevector(v, v, 0, 1, 2, 3);
#else
    return v;
#endif
  }
  // this += s * x
  inline void fma(float s, const Row& x) {
    const vw_t sw = vset1<vw_t>(s);
    for (int i = 0; i < NW; ++i) w[i] += sw * x.w[i];
    if (kTail) t += low4(sw) * x.t;
  }
  inline void add(const Row& x) {
    for (int i = 0; i < NW; ++i) w[i] += x.w[i];
    if (kTail) t += x.t;
  }
  // this += s * row at p (straight from memory)
  inline void fma_mem(float s, const float* p) {
    const vw_t sw = vset1<vw_t>(s);
    for (int i = 0; i < NW; ++i) w[i] += sw * vload<vw_t>(p + VW * i);
    if (kTail) t += low4(sw) * vload<v4_t>(p + VW * NW);
  }
  inline void scale(float s) {
    const vw_t sw = vset1<vw_t>(s);
    for (int i = 0; i < NW; ++i) w[i] *= sw;
    if (kTail) t *= low4(sw);
  }
  inline Row scaled(float s) const {
    Row r = *this;
    r.scale(s);
    return r;
  }
  // this -= v * x lane-wise (v a row of LP floats in memory)
  inline void sub_mul_mem(const float* v, const Row& x) {
    for (int i = 0; i < NW; ++i) w[i] -= vload<vw_t>(v + VW * i) * x.w[i];
    if (kTail) t -= vload<v4_t>(v + VW * NW) * x.t;
  }
  inline float max_all() const {
    if constexpr (NW == 0) {
      return hmax4(t);
    } else {
      vw_t m = w[0];
      for (int i = 1; i < NW; ++i) m = vmax(m, w[i]);
      v4_t m4 = fold_max(m);
      if (kTail) m4 = vmax(m4, t);
      return hmax4(m4);
    }
  }
  // this <- exp(this - mx); returns the sum of the results (fixed order)
  inline float exp_sub_sum(float mx) {
    vw_t s = vw_t{};
    for (int i = 0; i < NW; ++i) {
      w[i] = vexp_nonpos<vw_t, vwi_t>(w[i] - mx);
      s += w[i];
    }
    v4_t s4 = fold_sum(s);
    if (kTail) {
      t = vexp_nonpos<v4_t, v4i_t>(t - mx);
      s4 += t;
    }
    return hsum4(s4);
  }
};

// In-register transposes (pixels x labels <-> labels x pixels) for the softmax across pixels.
static inline void transpose4(v4_t& a0, v4_t& a1, v4_t& a2, v4_t& a3) {
  const v4_t t0 = __builtin_shufflevector(a0, a1, 0, 4, 1, 5), t1 = __builtin_shufflevector(a0, a1, 2, 6, 3, 7);
  const v4_t t2 = __builtin_shufflevector(a2, a3, 0, 4, 1, 5), t3 = __builtin_shufflevector(a2, a3, 2, 6, 3, 7);
  a0 = __builtin_shufflevector(t0, t2, 0, 1, 4, 5);
  a1 = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
  a2 = __builtin_shufflevector(t1, t3, 0, 1, 4, 5);
  a3 = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
}
#if PYSEG_VW == 8
static inline void transpose8(vw_t* r) {
  vw_t t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[i + 4] = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}
#endif

// VW rows of LP floats (stride LP) <-> LP vectors c[l] holding label l of the VW rows (in-register transposes).
template <int LP>
static inline void labels_from_rows(const float* rows, vw_t* c) {
  constexpr int NW = LP / VW;
  [[maybe_unused]] constexpr bool kTail = LP % VW != 0;
  for (int j = 0; j < NW; ++j) {
#if PYSEG_VW == 8
    for (int i = 0; i < 8; ++i) c[j * 8 + i] = vload<vw_t>(rows + i * LP + j * 8);
    transpose8(c + j * 8);
#else
    v4_t a[4];
    for (int i = 0; i < 4; ++i) a[i] = vload<v4_t>(rows + i * LP + j * 4);
    transpose4(a[0], a[1], a[2], a[3]);
    for (int i = 0; i < 4; ++i) c[j * 4 + i] = a[i];
#endif
  }
#if PYSEG_VW == 8
  if (kTail) {
    v4_t lo[4], hi[4];
    for (int i = 0; i < 4; ++i) {
      lo[i] = vload<v4_t>(rows + i * LP + NW * 8);
      hi[i] = vload<v4_t>(rows + (i + 4) * LP + NW * 8);
    }
    transpose4(lo[0], lo[1], lo[2], lo[3]);
    transpose4(hi[0], hi[1], hi[2], hi[3]);
    for (int i = 0; i < 4; ++i) c[NW * 8 + i] = __builtin_shufflevector(lo[i], hi[i], 0, 1, 2, 3, 4, 5, 6, 7);
  }
#endif
}
template <int LP>
static inline void rows_from_labels(vw_t* c, float* rows) {
  constexpr int NW = LP / VW;
  [[maybe_unused]] constexpr bool kTail = LP % VW != 0;
  for (int j = 0; j < NW; ++j) {
#if PYSEG_VW == 8
    transpose8(c + j * 8);
    for (int i = 0; i < 8; ++i) vstore(rows + i * LP + j * 8, c[j * 8 + i]);
#else
    v4_t a[4] = {c[j * 4], c[j * 4 + 1], c[j * 4 + 2], c[j * 4 + 3]};
    transpose4(a[0], a[1], a[2], a[3]);
    for (int i = 0; i < 4; ++i) vstore(rows + i * LP + j * 4, a[i]);
#endif
  }
#if PYSEG_VW == 8
  if (kTail) {
    v4_t lo[4], hi[4];
    for (int i = 0; i < 4; ++i) {
      lo[i] = __builtin_shufflevector(c[NW * 8 + i], c[NW * 8 + i], 0, 1, 2, 3);
      hi[i] = __builtin_shufflevector(c[NW * 8 + i], c[NW * 8 + i], 4, 5, 6, 7);
    }
    transpose4(lo[0], lo[1], lo[2], lo[3]);
    transpose4(hi[0], hi[1], hi[2], hi[3]);
    for (int i = 0; i < 4; ++i) {
      vstore(rows + i * LP + NW * 8, lo[i]);
      vstore(rows + (i + 4) * LP + NW * 8, hi[i]);
    }
  }
#endif
}

// Softmax of VW rows of LP floats at rows (stride LP), computed across the rows: the rows are transposed so
// that a vector holds one label of VW pixels (no horizontal max or sum, one division per VW pixels), labels
// >= `labels` (padding) are set to 0 without an exp. The result goes back to the rows, or, where lm is given,
// straight to the label-major output lm (label l of these pixels at lm + l * n; the rows are then left as
// they were).
template <int LP>
static inline void softmax_rows_across(float* rows, int labels, float* lm = nullptr, int64_t n = 0) {
  vw_t c[LP];  // c[l]: label l of the VW pixels
  labels_from_rows<LP>(rows, c);
  const int nl = labels < LP ? labels : LP;
  vw_t mx = c[0];
  for (int l = 1; l < nl; ++l) mx = vmax(mx, c[l]);
  vw_t sum = vw_t{};
  for (int l = 0; l < nl; ++l) {
    c[l] = vexp_nonpos<vw_t, vwi_t>(c[l] - mx);
    sum += c[l];
  }
  const vw_t inv = 1.0f / sum;
  for (int l = 0; l < nl; ++l) c[l] *= inv;
  if (lm) {
    for (int l = 0; l < nl; ++l) vstore(lm + (int64_t)l * n, c[l]);
    return;
  }
  for (int l = nl; l < LP; ++l) c[l] = vw_t{};
  rows_from_labels<LP>(c, rows);
}
