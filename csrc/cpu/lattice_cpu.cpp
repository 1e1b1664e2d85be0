#include "cpu/lattice_cpu.h"

#include <cmath>
#include <cstring>
#include <utility>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

#include "cpu/key_table.h"
#include "crf/lattice.h"

#ifdef PYSEG_PROFILE
#include <cstdio>
#include <ctime>
#define PYSEG_TICK(name)                                             \
  do {                                                               \
    timespec ts_;                                                    \
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts_);                    \
    const double now_ = ts_.tv_sec * 1e3 + ts_.tv_nsec * 1e-6;       \
    std::fprintf(stderr, "  d=%d %-10s %.2f ms\n", d, name, now_ - prof_t); \
    prof_t = now_;                                                   \
  } while (0)
#else
#define PYSEG_TICK(name) \
  do {                   \
  } while (0)
#endif

namespace pyseg {
namespace cpu {
namespace {

constexpr int64_t kMinPointsPerChunk = 8192;

// Array size for per-point scratch (d+2 entries); a struct constant because GCC 12 crashes on a local
// constexpr used inside the lambdas below.
template <int D>
struct Scratch {
  static constexpr int kSize = (D > 0 ? D : crf::kMaxDim) + 2;
};

// One entry of the per-thread simplex cache: rem0 and the packed ranks (3 bits each; all ones = empty) of a
// simplex and its d+1 vertex ids. Only for a compile-time dimension (D = 2, 3, 5: ranks 0..D fit in 3 bits).
constexpr int kSimplexCacheBits = 11;
template <int D>
struct SimplexSlot {
  static_assert(D <= 7, "ranks are packed in 3 bits each");
  uint32_t rbits = 0xFFFFFFFFu;
  int32_t rem0[D > 0 ? D + 1 : 1];
  int32_t ids[D > 0 ? D + 1 : 1];
};

struct ArrayFeat {
  const float* f;
  int64_t n;
  int d;
  int64_t width() const { return n; }
  void operator()(int64_t p, int64_t, int64_t, float* out) const {
    for (int i = 0; i < d; ++i) out[i] = f[(int64_t)i * n + p];
  }
};
// Image features through lookup tables of the exact quotients (x / sx, y / sy, value / s): the same floats as
// crf::gaussian_features / bilateral_features without a division per pixel.
struct ImageTables {
  std::vector<float> fx, fy, fc[3];
  ImageTables(int64_t n, int width, float sx, float sy, const float* sc) {
    const int height = (int)((n + width - 1) / width);
    fx.resize(width);
    fy.resize(height);
    for (int x = 0; x < width; ++x) fx[x] = (float)x / sx;
    for (int y = 0; y < height; ++y) fy[y] = (float)y / sy;
    if (sc)
      for (int c = 0; c < 3; ++c) {
        fc[c].resize(256);
        for (int v = 0; v < 256; ++v) fc[c][v] = (float)v / sc[c];
      }
  }
};
// Called with x = p % width, y = p / width (the build walks the pixels in order: no division per pixel).
struct GaussFeat {
  const ImageTables* t;
  int w;
  int64_t width() const { return w; }
  void operator()(int64_t, int64_t x, int64_t y, float* out) const {
    out[0] = t->fx[x];
    out[1] = t->fy[y];
  }
};
struct BilatFeat {
  const ImageTables* t;
  int w;
  const uint8_t* rgb;
  int64_t width() const { return w; }
  void operator()(int64_t p, int64_t x, int64_t y, float* out) const {
    out[0] = t->fx[x];
    out[1] = t->fy[y];
    const uint8_t* c = rgb + 3 * p;
    out[2] = t->fc[0][c[0]];
    out[3] = t->fc[1][c[1]];
    out[4] = t->fc[2][c[2]];
  }
};

std::string overflow_message(int d, int64_t p, const float* f) {
  std::ostringstream os;
  os << "lattice coordinates out of range at point " << p << " (features divided by sigma: [";
  for (int i = 0; i < d; ++i) os << (i ? ", " : "") << f[i];
  os << "]): expected finite features whose magnitude times sqrt(2/3)(d+1) stays below 2^24; "
        "use larger sigmas or smaller feature values";
  return os.str();
}

template <int D, class Feat>
void build_impl(Lattice& lat, int d_rt, int64_t n, const Feat& feat, int normalization, Executor& ex) {
  const int d = D > 0 ? D : d_rt;
  const int d1 = d + 1;
  if (n <= 0) throw std::invalid_argument("lattice needs at least one point");
  if (n > (int64_t)std::numeric_limits<int32_t>::max() / d1)
    throw std::invalid_argument("too many points for the lattice: expected n * (d+1) < 2^31, got n = " +
                                std::to_string(n) + ", d = " + std::to_string(d));
  lat.d = d;
  lat.n = n;
  // Every entry is written by the point pass below (or the build throws).
  lat.offsets.clear();
  lat.offsets.resize(n * d1);
  lat.bary.clear();
  lat.bary.resize(n * d1);
  const crf::LatticeScales sc = crf::make_lattice_scales(d);
#ifdef PYSEG_PROFILE
  double prof_t = 0;
  PYSEG_TICK("start");
#endif

  const int nchunks = (int)std::max<int64_t>(1, std::min<int64_t>(ex.threads(), n / kMinPointsPerChunk));
  std::vector<KeyTable<D>> local;
  local.reserve(nchunks);
  for (int c = 0; c < nchunks; ++c) local.emplace_back(d, n / nchunks / 8 + 64);
  std::vector<int64_t> bad(nchunks, -1);

  // 1) per chunk of points: lattice point, barycentric weights, vertices in a chunk-local table. Consecutive
  //    points often fall in the same simplex: then only the weights change; a simplex seen a little earlier
  //    (e.g. in the row above) is found in a direct-mapped simplex cache without hashing its d+1 vertices.
  ex.parallel_chunks(n, nchunks, [&](int c, int64_t b, int64_t e) {
    KeyTable<D>& tab = local[c];
    std::vector<SimplexSlot<D>> scache(D > 0 ? (size_t(1) << kSimplexCacheBits) : 1);
    float f[Scratch<D>::kSize];
    int rem0[Scratch<D>::kSize], rank[Scratch<D>::kSize], prev_rem0[Scratch<D>::kSize], prev_rank[Scratch<D>::kSize], ids[Scratch<D>::kSize], key[Scratch<D>::kSize];
    int prev2_rem0[Scratch<D>::kSize], prev2_rank[Scratch<D>::kSize], ids2[Scratch<D>::kSize];
    bool have_prev2 = false;
    for (int i = 0; i < Scratch<D>::kSize; ++i) prev_rem0[i] = prev_rank[i] = prev2_rem0[i] = prev2_rank[i] = 0;
    float bary[Scratch<D>::kSize + 1];
    bool have_prev = false;
    const int64_t fw = feat.width();
    int64_t fx = b % fw, fy = b / fw;
    for (int64_t p = b; p < e; ++p, ++fx) {
      if (fx == fw) fx = 0, ++fy;
      feat(p, fx, fy, f);
      if (!crf::lattice_point<D>(d, f, sc, rem0, rank, bary)) {
        bad[c] = p;
        return;
      }
      float* bo = lat.bary.data() + p * d1;
      for (int r = 0; r < d1; ++r) bo[r] = bary[r];
      // Two-entry simplex cache: along a row, points often alternate between two simplices.
      int diff0 = have_prev ? 0 : 1, diff1 = have_prev2 ? 0 : 1;
      for (int i = 0; i < d1; ++i) {
        diff0 |= (rem0[i] ^ prev_rem0[i]) | (rank[i] ^ prev_rank[i]);
        diff1 |= (rem0[i] ^ prev2_rem0[i]) | (rank[i] ^ prev2_rank[i]);
      }
      if (diff0 != 0) {
        // Shift the cache: prev -> prev2, then prev <- this simplex (from prev2 on a hit, else looked up).
        for (int i = 0; i < d1; ++i) {
          std::swap(prev_rem0[i], prev2_rem0[i]);
          std::swap(prev_rank[i], prev2_rank[i]);
          std::swap(ids[i], ids2[i]);
        }
        std::swap(have_prev, have_prev2);
        if (diff1 != 0) {
          // Direct-mapped simplex cache (the simplices of the rows just above): on a hit, no vertex hashing.
          // Only the fixed-dimension builds (D = 2, 3, 5: ranks fit 3 bits each, 3 * (D + 1) < 32) use it;
          // the dynamic-d build (D = 0, d up to 32) would shift past 32 bits.
          uint32_t rbits = 0, sh = 0;
          if (D > 0) {
            for (int i = 0; i < d1; ++i) {
              rbits |= (uint32_t)rank[i] << (3 * i);
              sh = (sh ^ (uint32_t)rem0[i]) * 0x9E3779B1u;
            }
          }
          SimplexSlot<D>* slot = scache.data() + (D > 0 ? ((sh ^ rbits) * 0x85EBCA77u) >> (32 - kSimplexCacheBits) : 0);
          int same = D > 0 && slot->rbits == rbits;
          for (int i = 0; i < d1 && same; ++i) same = slot->rem0[i] == rem0[i];
          if (same) {
            for (int r = 0; r < d1; ++r) ids[r] = slot->ids[r];
          } else {
            for (int r = 0; r < d1; ++r) {
              crf::vertex_key<D>(d, rem0, rank, r, key);
              ids[r] = tab.find_or_insert(key);
            }
            if (D > 0) {
              slot->rbits = rbits;
              for (int i = 0; i < d1; ++i) slot->rem0[i] = rem0[i], slot->ids[i] = ids[i];
            }
          }
          for (int i = 0; i < d1; ++i) {
            prev_rem0[i] = rem0[i];
            prev_rank[i] = rank[i];
          }
          have_prev = true;
        }
      }
      int32_t* oo = lat.offsets.data() + p * d1;
      for (int r = 0; r < d1; ++r) oo[r] = ids[r];
    }
  });
  for (int c = 0; c < nchunks; ++c) {
    if (bad[c] >= 0) {
      float f[Scratch<D>::kSize];
      feat(bad[c], bad[c] % feat.width(), bad[c] / feat.width(), f);
      throw std::invalid_argument(overflow_message(d, bad[c], f));
    }
  }

  PYSEG_TICK("points");
  // 2) merge the chunk tables (vertex numbering depends on the chunking; results do not).
  KeyTable<D> table(d, local.size() == 1 ? 64 : local[0].size() * 2);
  std::vector<wvec<int32_t>> remap(nchunks);
  if (nchunks == 1) {
    table = std::move(local[0]);
  } else {
    for (int c = 0; c < nchunks; ++c) {
      remap[c].resize(local[c].size());
      for (int i = 0; i < local[c].size(); ++i) remap[c][i] = table.find_or_insert(local[c].key(i));
      local[c] = KeyTable<D>(d, 1);
    }
    ex.parallel_chunks(n, nchunks, [&](int c, int64_t b, int64_t e) {
      const int32_t* rm = remap[c].data();
      for (int64_t i = b * d1; i < e * d1; ++i) lat.offsets[i] = rm[lat.offsets[i]];
    });
  }
  const int m = table.size();
  lat.m = m;

  PYSEG_TICK("merge");
  // 3) CSR transpose (vertex -> entries in ascending point order), counted per chunk for a parallel fill.
  wvec<int64_t> pos((size_t)nchunks * m, 0);
  ex.parallel_chunks(n, nchunks, [&](int c, int64_t b, int64_t e) {
    int64_t* cnt = pos.data() + (size_t)c * m;
    for (int64_t i = b * d1; i < e * d1; ++i) ++cnt[lat.offsets[i]];
  });
  lat.csr_start.assign(m + 1, 0);
  int64_t run = 0;
  for (int v = 0; v < m; ++v) {
    lat.csr_start[v] = run;
    for (int c = 0; c < nchunks; ++c) {
      int64_t& slot = pos[(size_t)c * m + v];
      const int64_t k = slot;
      slot = run;
      run += k;
    }
  }
  lat.csr_start[m] = run;
  // Entries [0, run) are all written by the fill below; 16 spare zero entries: the splat prefetches ahead.
  lat.csr.clear();
  lat.csr.resize(run + 16);
  for (int64_t k = run; k < run + 16; ++k) lat.csr[k] = CsrEntry{0, 0.0f};
  ex.parallel_chunks(n, nchunks, [&](int c, int64_t b, int64_t e) {
    int64_t* at = pos.data() + (size_t)c * m;
    for (int64_t p = b; p < e; ++p)
      for (int r = 0; r < d1; ++r) {
        const int64_t i = p * d1 + r;
        lat.csr[at[lat.offsets[i]]++] = CsrEntry{(int32_t)p, lat.bary[i]};
      }
  });
  wvec<int64_t>().swap(pos);

  PYSEG_TICK("csr");
  // 4) blur neighbours.
  lat.nbr.assign((size_t)d1 * m * 2, m);
  ex.parallel_for(m, [&](int64_t b, int64_t e) {
    // All 2(d+1) neighbour keys of a vertex first, their slots prefetched, then the probes.
    int nk[2 * Scratch<D>::kSize][Scratch<D>::kSize];
    uint32_t hs[2 * Scratch<D>::kSize];
    for (int64_t v = b; v < e; ++v) {
      const int32_t* key = table.key((int)v);
      for (int j = 0; j < d1; ++j) {
        crf::neighbour_keys<D>(d, key, j, nk[2 * j], nk[2 * j + 1]);
        hs[2 * j] = table.slot_of(nk[2 * j]);
        hs[2 * j + 1] = table.slot_of(nk[2 * j + 1]);
        table.prefetch(hs[2 * j]);
        table.prefetch(hs[2 * j + 1]);
      }
      for (int j = 0; j < d1; ++j) {
        const int i1 = table.find_at(nk[2 * j], hs[2 * j]), i2 = table.find_at(nk[2 * j + 1], hs[2 * j + 1]);
        int32_t* o = lat.nbr.data() + ((size_t)j * m + v) * 2;
        o[0] = i1 < 0 ? m : i1;
        o[1] = i2 < 0 ? m : i2;
      }
    }
  }, 2048);

  PYSEG_TICK("neighbours");
  // 5) normalisation: norm = filter(ones) (alpha included), as the reference computes it.
  const float alpha = crf::lattice_alpha(d);
  lat.post.assign(n, alpha);
  wvec<float> va(m + 1, 0.0f), vb(m + 1, 0.0f);
  ex.parallel_for(m, [&](int64_t b, int64_t e) {
    for (int64_t v = b; v < e; ++v) {
      float s = 0.0f;
      for (int64_t k = lat.csr_start[v]; k < lat.csr_start[v + 1]; ++k) s += lat.csr[k].w;
      va[v] = s;
    }
  });
  for (int j = 0; j < d1; ++j) {
    ex.parallel_for(m, [&](int64_t b, int64_t e) { blur_rows(lat, j, va.data(), vb.data(), 1, b, e); });
    va.swap(vb);
  }
  wvec<float> pre;
  if (normalization == crf::NORMALIZE_SYMMETRIC || normalization == crf::NORMALIZE_BEFORE) pre.resize(n);
  ex.parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      float s = 0.0f;
      for (int r = 0; r < d1; ++r) s += lat.bary[p * d1 + r] * va[lat.offsets[p * d1 + r]];
      const double norm = (double)(s * alpha);
      if (normalization == crf::NORMALIZE_SYMMETRIC) {
        const float k = (float)(1.0 / std::sqrt(norm + 1e-20));
        pre[p] = k;
        lat.post[p] = alpha * k;
      } else if (normalization == crf::NORMALIZE_BEFORE) {
        pre[p] = (float)(1.0 / (norm + 1e-20));
      } else if (normalization == crf::NORMALIZE_AFTER) {
        lat.post[p] = alpha * (float)(1.0 / (norm + 1e-20));
      }
    }
  });
  if (!pre.empty()) {
    ex.parallel_for(lat.csr_start[m], [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) lat.csr[k].w *= pre[lat.csr[k].pixel];
    });
  }
  PYSEG_TICK("norm");
}

template <class Feat>
void dispatch_build(Lattice& lat, int d, int64_t n, const Feat& feat, int normalization, Executor& ex) {
  if (d < 1 || d > crf::kMaxDim)
    throw std::invalid_argument("feature dimension must be in 1.." + std::to_string(crf::kMaxDim) + ", got " +
                                std::to_string(d));
  if (normalization < crf::NO_NORMALIZATION || normalization > crf::NORMALIZE_SYMMETRIC)
    throw std::invalid_argument("normalization must be 0..3 (NO_NORMALIZATION..NORMALIZE_SYMMETRIC), got " +
                                std::to_string(normalization));
  switch (d) {
    case 2: build_impl<2>(lat, d, n, feat, normalization, ex); break;
    case 3: build_impl<3>(lat, d, n, feat, normalization, ex); break;
    case 5: build_impl<5>(lat, d, n, feat, normalization, ex); break;
    default: build_impl<0>(lat, d, n, feat, normalization, ex); break;
  }
}

}  // namespace

void build_lattice(Lattice& lat, const ArrayFeatures& feat, int normalization, Executor& ex) {
  dispatch_build(lat, feat.d, feat.n, ArrayFeat{feat.f, feat.n, feat.d}, normalization, ex);
}
void build_lattice(Lattice& lat, int64_t n, const GaussianImageFeatures& feat, int normalization, Executor& ex) {
  const ImageTables t(n, feat.width, feat.sx, feat.sy, nullptr);
  build_impl<2>(lat, 2, n, GaussFeat{&t, feat.width}, normalization, ex);
}
void build_lattice(Lattice& lat, int64_t n, const BilateralImageFeatures& feat, int normalization, Executor& ex) {
  const float sc[3] = {feat.sr, feat.sg, feat.sb};
  const ImageTables t(n, feat.width, feat.sx, feat.sy, sc);
  build_impl<5>(lat, 5, n, BilatFeat{&t, feat.width, feat.rgb}, normalization, ex);
}

void splat_rows(const Lattice& lat, const float* q, int lp, float* values, int64_t vb, int64_t ve) {
  const CsrEntry* csr = lat.csr.data();
  const int64_t* st = lat.csr_start.data();
  for (int64_t v = vb; v < ve; ++v) {
    float* out = values + v * lp;
    for (int l = 0; l < lp; ++l) out[l] = 0.0f;
    for (int64_t k = st[v]; k < st[v + 1]; ++k) {
      const float w = csr[k].w;
      const float* src = q + (int64_t)csr[k].pixel * lp;
      for (int l = 0; l < lp; ++l) out[l] += w * src[l];
    }
  }
}

void blur_rows(const Lattice& lat, int j, const float* src, float* dst, int lp, int64_t vb, int64_t ve) {
  const int32_t* nb = lat.nbr.data() + (size_t)j * lat.m * 2;
  for (int64_t v = vb; v < ve; ++v) {
    const float* a = src + (int64_t)nb[2 * v] * lp;
    const float* b = src + (int64_t)nb[2 * v + 1] * lp;
    const float* o = src + v * lp;
    float* out = dst + v * lp;
    for (int l = 0; l < lp; ++l) out[l] = o[l] + 0.5f * (a[l] + b[l]);
  }
}

void slice_pixel(const Lattice& lat, int64_t p, const float* values, int lp, float* out) {
  const int d1 = lat.d + 1;
  const int32_t* off = lat.offsets.data() + p * d1;
  const float* w = lat.bary.data() + p * d1;
  for (int l = 0; l < lp; ++l) out[l] = 0.0f;
  for (int r = 0; r < d1; ++r) {
    const float* src = values + (int64_t)off[r] * lp;
    const float wr = w[r];
    for (int l = 0; l < lp; ++l) out[l] += wr * src[l];
  }
  const float s = lat.post[p];
  for (int l = 0; l < lp; ++l) out[l] *= s;
}

}  // namespace cpu
}  // namespace pyseg
