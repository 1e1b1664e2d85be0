// Per-pixel mean-field update of the dense CRF: compatibility transform (Potts / diagonal / full matrix),
// unary and a numerically stable softmax. Written once for the CPU driver and the CUDA kernels.
//
// Labels may be padded to a vector-friendly count: a padded lane carries neg_unary = kPadEnergy, a zero
// message and zero compatibility entries, and comes out of the softmax as exactly 0.
#pragma once

#include <string.h>

#include "crf/common.h"

namespace pyseg {
namespace crf {

// -U of a padding lane: its exponential underflows to exactly 0.
constexpr float kPadEnergy = -1e30f;

PYSEG_HD PYSEG_INLINE float bits_as_float(int32_t i) {
#if defined(__CUDA_ARCH__)
  return __int_as_float(i);
#else
  float f;
  memcpy(&f, &i, sizeof(f));
  return f;
#endif
}

PYSEG_HD PYSEG_INLINE int32_t float_as_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_int(f);
#else
  int32_t i;
  memcpy(&i, &f, sizeof(i));
  return i;
#endif
}

// log(x) from the reduced mantissa f = m - 1 (m in [sqrt(1/2), sqrt(2))) and the exponent fe (as a float):
// Cephes-style degree-9 polynomial, about 1e-7 relative error. T is a float or a vector of floats (the CPU's
// vlog_pos in cpu/simd.h runs it lane-wise), so the one polynomial serves the scalar and vector logs.
template <class T>
PYSEG_HD PYSEG_INLINE T log_of_mantissa(T f, T fe) {
  const T z = f * f;
  T y = f * 7.0376836292e-2f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  return (f + y) + 0.693359375f * fe;
}

// log(x) for a positive normal float (exponent split, then log_of_mantissa). Branch-free so that loops
// vectorise.
PYSEG_HD PYSEG_INLINE float fast_log_pos(float x) {
  const int32_t bits = float_as_bits(x);
  int32_t e = ((bits >> 23) & 0xff) - 127;
  float m = bits_as_float((bits & 0x7fffff) | 0x3f800000);  // [1, 2)
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  return log_of_mantissa(m - 1.0f, (float)e);
}

// exp(x) for x <= 0 (as after subtracting a row maximum): Cody-Waite range reduction and a degree-6
// polynomial, about 2e-7 relative error; exactly 0 below -87.3. Branch-free so that loops vectorise.
// Not cpu/simd.h's vexp_nonpos (2^f, exactly 0 below -60 to keep denormals out of vector loops): both stay.
PYSEG_HD PYSEG_INLINE float fast_exp_nonpos(float x) {
  const float xc = x < -87.3f ? -87.3f : x;
  // n = round(x / ln 2) with the 1.5 * 2^23 trick (round to nearest; no floorf for SSE2).
  const float magic = 12582912.0f;
  const float t = xc * 1.44269504088896341f + magic;
  const float n = t - magic;
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;  // ln2 split into hi and lo parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = bits_as_float(((int32_t)n + 127) << 23);
  return x < -87.3f ? 0.0f : p * scale;
}

// x[0..L) <- softmax(x) (maximum subtracted first).
PYSEG_HD PYSEG_INLINE void softmax_inplace(int L, float* x) {
  float mx = x[0];
  for (int l = 1; l < L; ++l) mx = x[l] > mx ? x[l] : mx;
  float s = 0.0f;
  for (int l = 0; l < L; ++l) {
    const float e = fast_exp_nonpos(x[l] - mx);
    x[l] = e;
    s += e;
  }
  const float inv = 1.0f / s;
  for (int l = 0; l < L; ++l) x[l] *= inv;
}

// acc[0..L) -= C(msg): Potts C(x) = -w x; diagonal C(x) = v * x; matrix C(x) = S x (S row-major, ld = L).
PYSEG_HD PYSEG_INLINE void subtract_compat(int L, const CompatView& c, const float* msg, float* acc) {
  if (c.type == COMPAT_POTTS) {
    const float w = c.w;
    for (int l = 0; l < L; ++l) acc[l] += w * msg[l];
  } else if (c.type == COMPAT_DIAGONAL) {
    for (int l = 0; l < L; ++l) acc[l] -= c.data[l] * msg[l];
  } else {
    for (int l = 0; l < L; ++l) {
      const float* row = c.data + (long)l * L;
      float s = 0.0f;
      for (int j = 0; j < L; ++j) s += row[j] * msg[j];
      acc[l] -= s;
    }
  }
}

// One pixel's update: q_out = softmax(neg_unary - sum_k C_k(msg_k)), msg_k = msgs + k * msg_stride holding
// the filtered (and normalised) Q of term k. q_out must not alias the messages.
PYSEG_HD PYSEG_INLINE void meanfield_pixel(int L, const float* neg_unary, int n_terms, const float* msgs,
                                           int msg_stride, const CompatView* compat, float* q_out) {
  for (int l = 0; l < L; ++l) q_out[l] = neg_unary[l];
  for (int k = 0; k < n_terms; ++k) subtract_compat(L, compat[k], msgs + (long)k * msg_stride, q_out);
  softmax_inplace(L, q_out);
}

}  // namespace crf
}  // namespace pyseg
