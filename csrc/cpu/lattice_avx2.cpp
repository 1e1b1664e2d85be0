// crf::lattice_point for 8 points at once. Compiled with -mavx2 and -ffp-contract=off (see CMakeLists.txt):
// every float operation is the scalar one, lane by lane, in the same order, so the results are bitwise equal.
#include "cpu/lattice_simd.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <immintrin.h>

#include "cpu/ops.h"
#include "switches.h"

namespace pyseg {
namespace cpu {
namespace {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));

inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

}  // namespace

bool lattice_simd_enabled() {
  static const bool on = switches::lattice_simd_allowed() && cpu_has_avx2();
  return on;
}

template <int D>
bool lattice_points8(const float* f, const crf::LatticeScales& sc, int* rem0_out, int* rank_out, float* bary_out) {
  constexpr int d1 = D + 1;
  v8f elevated[d1];
  v8f sm = v8f{};
  for (int j = D; j > 0; --j) {
    const v8f cf = load8(f + (j - 1) * 8) * sc.s[j - 1];
    elevated[j] = sm - (float)j * cf;
    sm += cf;
  }
  elevated[0] = sm;
  const float down_factor = 1.0f / (float)d1;
  const float up_factor = (float)d1;
  v8i bad = v8i{};
  v8i rem0[d1];
  v8i sum = v8i{};
  for (int i = 0; i < d1; ++i) {
    const v8f e = elevated[i];
    v8i ebits;
    std::memcpy(&ebits, &e, sizeof(e));
    v8f ae;
    const v8i abits = ebits & 0x7fffffff;
    std::memcpy(&ae, &abits, sizeof(ae));
    const v8i ok = ae <= crf::kMaxLatticeCoord;  // false for NaN
    bad |= ~ok;
    const v8f v = ok ? down_factor * e : v8f{};  // (no float -> int conversion of out-of-range lanes)
    v8f fl = __builtin_convertvector(__builtin_convertvector(v, v8i), v8f);
    fl = fl > v ? fl - 1.0f : fl;
    const v8f cl = fl < v ? fl + 1.0f : fl;
    const v8f up = cl * up_factor;
    const v8f down = fl * up_factor;
    const v8f nearest = (up - e < e - down) ? up : down;
    rem0[i] = __builtin_convertvector(nearest, v8i);
    sum += rem0[i];
  }
  for (int l = 0; l < 8; ++l)
    if (bad[l]) return false;
  // sum / (d+1), exact (every rem0 is a multiple of d+1): an arithmetic shift by the power of 2 in d+1, then a
  // multiplication by the inverse of its odd part modulo 2^32.
  {
    constexpr int kTwos = (d1 % 4 == 0) ? 2 : (d1 % 2 == 0 ? 1 : 0);
    constexpr uint32_t kOdd = (uint32_t)(d1 >> kTwos);
    uint32_t inv = kOdd;  // Newton iteration for the inverse modulo 2^32
    for (int it = 0; it < 5; ++it) inv *= 2u - kOdd * inv;
    sum = (v8i)((v8u)(sum >> kTwos) * inv);
  }
  v8f resid[d1];
  v8i rank[d1];
  for (int i = 0; i < d1; ++i) {
    resid[i] = elevated[i] - __builtin_convertvector(rem0[i], v8f);
    rank[i] = v8i{};
  }
  for (int i = 0; i < D; ++i)
    for (int j = i + 1; j <= D; ++j) {
      const v8i lt = resid[i] < resid[j];  // -1 where true
      rank[i] -= lt;
      rank[j] += 1 + lt;
    }
  for (int i = 0; i < d1; ++i) {
    const v8i rk = rank[i] + sum;
    const v8i shift = rk < 0 ? v8i{} + d1 : (rk > D ? v8i{} - d1 : v8i{});
    rank[i] = rk + shift;
    rem0[i] += shift;
  }
  v8f bary[D + 2];
  for (int k = 0; k < D + 2; ++k) bary[k] = v8f{};
  for (int i = 0; i < d1; ++i) {
    const v8f v = (elevated[i] - __builtin_convertvector(rem0[i], v8f)) * down_factor;
    const v8i slot = D - rank[i];  // += v there, -= v at slot + 1
    for (int k = 0; k < D + 2; ++k) {
      bary[k] = slot == k ? bary[k] + v : bary[k];
      bary[k] = slot + 1 == k ? bary[k] - v : bary[k];
    }
  }
  bary[0] += 1.0f + bary[D + 1];
  for (int l = 0; l < 8; ++l) {
    for (int i = 0; i < d1; ++i) {
      rem0_out[l * d1 + i] = rem0[i][l];
      rank_out[l * d1 + i] = rank[i][l];
    }
    for (int k = 0; k < D + 2; ++k) bary_out[l * (D + 2) + k] = bary[k][l];
  }
  return true;
}

template bool lattice_points8<2>(const float*, const crf::LatticeScales&, int*, int*, float*);
template bool lattice_points8<3>(const float*, const crf::LatticeScales&, int*, int*, float*);
template bool lattice_points8<5>(const float*, const crf::LatticeScales&, int*, int*, float*);

void symmetric_factors(const float* s, int64_t count, float alpha, float* k) {
  const __m128 a4 = _mm_set1_ps(alpha);
  const __m256d one = _mm256_set1_pd(1.0), eps = _mm256_set1_pd(1e-20);
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) {
    const __m256d norm = _mm256_cvtps_pd(_mm_mul_ps(_mm_loadu_ps(s + i), a4));
    _mm_storeu_ps(k + i, _mm256_cvtpd_ps(_mm256_div_pd(one, _mm256_sqrt_pd(_mm256_add_pd(norm, eps)))));
  }
  for (; i < count; ++i) k[i] = crf::symmetric_factor(s[i], alpha);
}

}  // namespace cpu
}  // namespace pyseg
