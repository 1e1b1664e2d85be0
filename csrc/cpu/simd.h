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

// Lane-wise crf::fast_exp_nonpos.
static inline v4f v4_exp_nonpos(v4f x) {
  const v4f lo = v4_set1(-87.3f);
  const v4f xc = x < lo ? lo : x;
  const v4f magic = v4_set1(12582912.0f);
  const v4f t = xc * 1.44269504088896341f + magic;
  const v4f n = t - magic;
  const v4f r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  v4f p = v4_set1(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const v4i ni = __builtin_convertvector(n, v4i);
  const v4i bits = (ni + 127) << 23;
  v4f scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const v4f res = p * scale;
  return x < lo ? v4_set1(0.0f) : res;
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

