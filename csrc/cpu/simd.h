// Float vectors of PYSEG_VW lanes (GCC/Clang vector extensions) for the CPU hot loops: included by
// kernels_sse.cpp (4 lanes, any x86-64) and kernels_avx2.cpp (8 lanes, compiled with -mavx2 -mfma) inside
// their own namespaces. The arithmetic per lane is that of crf/meanfield.h (same polynomials).
// No include guard on purpose: one copy per ISA namespace.

// Needs <cstdint> and <cstring> included (at global scope) before.

#ifndef PYSEG_VW
#error "define PYSEG_VW (4 or 8) before including cpu/simd.h"
#endif

constexpr int VW = PYSEG_VW;
#if PYSEG_VW == 8
#define PYSEG_VW_TAIL(a, b, c, d) , a, b, c, d
#else
#define PYSEG_VW_TAIL(a, b, c, d)
#endif
typedef float v4f __attribute__((vector_size(4 * PYSEG_VW)));
typedef int32_t v4i __attribute__((vector_size(4 * PYSEG_VW)));

static inline v4f v4_load(const float* p) {
  v4f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
static inline void v4_store(float* p, v4f v) { std::memcpy(p, &v, sizeof(v)); }
static inline v4f v4_set1(float x) { return x - v4f{}; }
static inline v4f v4_max(v4f a, v4f b) { return a > b ? a : b; }
// Horizontal max / sum, broadcast to every lane (log2(VW) shuffle steps, a fixed order).
static inline v4f v4_allmax(v4f v) {
#if PYSEG_VW == 8
  v = v4_max(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3));
#endif
  v = v4_max(v, __builtin_shufflevector(v, v, 2, 3, 0, 1 PYSEG_VW_TAIL(6, 7, 4, 5)));
  v = v4_max(v, __builtin_shufflevector(v, v, 1, 0, 3, 2 PYSEG_VW_TAIL(5, 4, 7, 6)));
  return v;
}
static inline v4f v4_allsum(v4f v) {
#if PYSEG_VW == 8
  v = v + __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
#endif
  v = v + __builtin_shufflevector(v, v, 2, 3, 0, 1 PYSEG_VW_TAIL(6, 7, 4, 5));
  v = v + __builtin_shufflevector(v, v, 1, 0, 3, 2 PYSEG_VW_TAIL(5, 4, 7, 6));
  return v;
}

// exp(x) for x <= 0 as 2^(x log2 e): n = round, f in [-1/2, 1/2], 2^f by its degree-6 Taylor polynomial
// (truncation < 1.3e-7 relative; the rounding of x log2 e adds about |x| 6e-8, so ~1e-6 for the x > -20
// that matter in a softmax). Below -60 the result is exactly 0 (crf::fast_exp_nonpos: -87.3; e^-60 ~ 1e-26 is negligible next to
// the largest lane, which is 1): padding lanes stay 0 and products of tiny values never become denormal.
static inline v4f v4_exp_nonpos(v4f x) {
#if PYSEG_VW == 8 && defined(__AVX__)
  const v4f xc = (v4f)_mm256_max_ps((__m256)x, (__m256)v4_set1(-60.0f));
#elif PYSEG_VW == 4 && defined(__SSE2__)
  const v4f xc = (v4f)_mm_max_ps((__m128)x, (__m128)v4_set1(-60.0f));
#else
  const v4f xc = x < v4_set1(-60.0f) ? v4_set1(-60.0f) : x;
#endif
  const v4f t = xc * 1.44269504088896341f;
  const v4f magic = v4_set1(12582912.0f);
  const v4f n = (t + magic) - magic;
  const v4f f = t - n;
  v4f p = v4_set1(1.5403530393381606e-4f);
  p = p * f + 1.3333558146428443e-3f;
  p = p * f + 9.6181291076284772e-3f;
  p = p * f + 5.5504108664821580e-2f;
  p = p * f + 2.4022650695910071e-1f;
  p = p * f + 6.9314718055994531e-1f;
  p = p * f + 1.0f;
  const v4i ni = __builtin_convertvector(n, v4i);
  const v4i bits = (ni + 127) << 23;
  v4f scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const v4f res = p * scale;
  return x < v4_set1(-60.0f) ? v4_set1(0.0f) : res;  // exactly 0 (no denormals downstream)
}

// Lane-wise crf::fast_log_pos (x positive and normal).
static inline v4f v4_log_pos(v4f x) {
  v4i bits;
  std::memcpy(&bits, &x, sizeof(bits));
  v4i e = ((bits >> 23) & 0xff) - 127;
  const v4i mb = (bits & 0x7fffff) | 0x3f800000;
  v4f m;
  std::memcpy(&m, &mb, sizeof(m));
  const v4i big = m > 1.41421356f;  // all ones where true
  m = big ? m * 0.5f : m;
  e = e - big;  // -(-1) = +1 where big
  const v4f f = m - 1.0f;
  const v4f z = f * f;
  v4f y = v4_set1(7.0376836292e-2f);
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  const v4f fe = __builtin_convertvector(e, v4f);
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  return (f + y) + 0.693359375f * fe;
}

