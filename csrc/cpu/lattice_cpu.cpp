#include "cpu/lattice_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "cpu/fast_paths.h"
#include "cpu/key_grid.h"
#include "cpu/lattice_inputs.h"
#include "cpu/key_table.h"
#include "cpu/lattice_simd.h"
#include "cpu/profile.h"
#include "crf/lattice.h"
#include "switches.h"


namespace pyseg {
namespace cpu {
namespace {

using namespace build_inputs;  // the build's inputs (lattice_inputs.h)

// Array size for per-point scratch (d+2 entries); a struct constant because GCC 12 crashes on a local
// constexpr used inside lambdas.
template <int D>
struct Scratch {
  static constexpr int kSize = (D > 0 ? D : crf::kMaxDim) + 2;
};

// One entry of the per-thread simplex cache: rem0 and the packed ranks (3 bits each; all ones = empty) of a
// simplex and its d+1 vertex ids. Only for a compile-time dimension (D = 2, 3, 5: ranks 0..D fit in 3 bits).
constexpr int kSimplexCacheBits = 11;
// The merge's global hash table is sized for all local rows at once (an upper bound on m), up to this many: no
// rehash while merging, and a sparse table for the neighbour lookups, about half of which find no vertex.
constexpr int64_t kMergeTableKeys = int64_t(1) << 22;
template <int D>
struct SimplexSlot {
  static_assert(D <= 7, "ranks are packed in 3 bits each");
  uint32_t rbits = 0xFFFFFFFFu;
  int32_t rem0[D > 0 ? D + 1 : 1];
  int32_t ids[D > 0 ? D + 1 : 1];
};


// One lattice build over n points (build_keys): the lattice being filled, its inputs and the vertex tables,
// in four steps that each leave the state the next one reads:
//   lattice_points   each point's simplex (rem0, rank) and barycentric weights, its vertices numbered in its
//                    chunk's table (offsets hold chunk-relative rows until normalise)
//   number_vertices   the global vertices: the chunks' keys merged in chunk order (local row k -> to_global[k])
//   find_neighbours  the blur neighbours of every vertex
//   normalise        norm = filter(ones), folded into the weights or kept as pre/post factors per point
template <int D, class Keys, class Feat>
struct LatticeBuild {
  static constexpr bool kGrid = std::is_same<Keys, KeyGrid>::value;
  Lattice& lat;
  const Feat& feat;
  const int normalization;
  Executor& ex;
  const GridPlan* plan;  // KeyGrid boxes (kGrid only)
  const int d, d1;
  const crf::LatticeScales sc;
  std::vector<Keys> local;   // per chunk: the vertices its points touch (its local rows)
  std::vector<int64_t> bad;  // per chunk: its first point out of the lattice's range, or -1
  Keys table;                // the global vertices (number_vertices)
  int64_t rows = 0;          // local rows of all chunks

  LatticeBuild(Lattice& lat_, int d_rt, int64_t n, const Feat& feat_, int normalization_, Executor& ex_,
               const GridPlan* plan_);
  void lattice_points();
  void number_vertices();
  void find_neighbours();
  void normalise();
};

// Sizes the lattice's point arrays and cuts the points into chunks.
template <int D, class Keys, class Feat>
LatticeBuild<D, Keys, Feat>::LatticeBuild(Lattice& lat_, int d_rt, int64_t n, const Feat& feat_, int normalization_,
                                          Executor& ex_, const GridPlan* plan_)
    : lat(lat_), feat(feat_), normalization(normalization_), ex(ex_), plan(plan_), d(D > 0 ? D : d_rt), d1(d + 1),
      sc(crf::make_lattice_scales(d)) {
  if (n <= 0) throw std::invalid_argument("lattice needs at least one point");
  if (n > (int64_t)std::numeric_limits<int32_t>::max() / d1)
    throw std::invalid_argument("too many points for the lattice: expected n * (d+1) < 2^31, got n = " +
                                std::to_string(n) + ", d = " + std::to_string(d));
  lat.d = d;
  lat.n = n;
  const int64_t chunk = lattice_chunk_size(n);
  const int nchunks = (int)((n + chunk - 1) / chunk);
  lat.nchunks = nchunks;
  lat.chunk_begin.resize(nchunks + 1);
  for (int c = 0; c <= nchunks; ++c) lat.chunk_begin[c] = std::min<int64_t>(n, (int64_t)c * chunk);
  // Every entry is written by lattice_points (or the build throws).
  lat.offsets.clear();
  lat.offsets.resize(n * d1);
  lat.bary.clear();
  lat.bary.resize(n * d1);
  local.reserve(nchunks);
  for (int c = 0; c < nchunks; ++c) {
    if constexpr (kGrid)
      local.emplace_back();  // the chunk's grid is made in its task (a parallel fill)
    else
      local.emplace_back(d, chunk / 8 + 64);
  }
  bad.assign(nchunks, -1);
}

// The lattice points of one chunk and their vertices in the chunk's table. Consecutive points often fall in
// the same simplex: then only the weights change; a simplex seen a little earlier (e.g. in the row above) is
// found in a direct-mapped simplex cache without hashing its d+1 vertices.
template <int D, class Keys, class Feat>
struct ChunkPoints {
  using Build = LatticeBuild<D, Keys, Feat>;
  Build& bd;
  Keys& tab;
  const int d, d1;
  std::vector<SimplexSlot<D>> scache;
  int key[Scratch<D>::kSize];
  int prev_rem0[Scratch<D>::kSize], prev_rank[Scratch<D>::kSize], ids[Scratch<D>::kSize];
  bool have_prev = false;

  ChunkPoints(Build& b, int c)
      : bd(b), tab(b.local[c]), d(b.d), d1(b.d1),
        scache(D > 0 && !Build::kGrid ? (size_t(1) << kSimplexCacheBits) : 0) {
    if constexpr (Build::kGrid) tab = b.plan->chunk[c].grid();
    for (int i = 0; i < Scratch<D>::kSize; ++i) prev_rem0[i] = prev_rank[i] = ids[i] = 0;
  }

  // ids <- the chunk's rows of the simplex's d+1 vertices, inserting the new ones.
  void insert_vertices(const int* rem0, const int* rank) {
    for (int r = 0; r < d1; ++r) {
      crf::vertex_key<D>(d, rem0, rank, r, key);
      ids[r] = tab.find_or_insert(key);
    }
  }

  // The same through a direct-mapped simplex cache (the simplices of the rows just above): on a hit, no vertex
  // hashing. Only the fixed-dimension builds (D = 2, 3, 5: ranks fit 3 bits each, 3 * (D + 1) < 32) have it;
  // the dynamic-d build (D = 0, d up to 32) would shift past 32 bits.
  void cached_vertices(const int* rem0, const int* rank) {
    if constexpr (D == 0) {
      insert_vertices(rem0, rank);
    } else {
      uint32_t rbits = 0, sh = 0;
      for (int i = 0; i < d1; ++i) {
        rbits |= (uint32_t)rank[i] << (3 * i);
        sh = (sh ^ (uint32_t)rem0[i]) * 0x9E3779B1u;
      }
      SimplexSlot<D>& slot = scache[((sh ^ rbits) * 0x85EBCA77u) >> (32 - kSimplexCacheBits)];
      bool same = slot.rbits == rbits;
      for (int i = 0; i < d1 && same; ++i) same = slot.rem0[i] == rem0[i];
      if (same) {
        for (int r = 0; r < d1; ++r) ids[r] = slot.ids[r];
        return;
      }
      insert_vertices(rem0, rank);
      slot.rbits = rbits;
      for (int i = 0; i < d1; ++i) slot.rem0[i] = rem0[i], slot.ids[i] = ids[i];
    }
  }

  // Places point p (its lattice point computed) in the chunk's vertices.
  void place(int64_t p, const int* rem0, const int* rank, const float* bary) {
    float* bo = bd.lat.bary.data() + p * d1;
    for (int r = 0; r < d1; ++r) bo[r] = bary[r];
    int32_t* oo = bd.lat.offsets.data() + p * d1;
    // The previous point's simplex (consecutive points often share one): then only the weights change.
    int diff = have_prev ? 0 : 1;
    for (int i = 0; i < d1; ++i) diff |= (rem0[i] ^ prev_rem0[i]) | (rank[i] ^ prev_rank[i]);
    if (diff != 0) {
      if constexpr (Build::kGrid)
        insert_vertices(rem0, rank);  // a grid lookup is one array access: no simplex cache
      else
        cached_vertices(rem0, rank);
      for (int i = 0; i < d1; ++i) {
        prev_rem0[i] = rem0[i];
        prev_rank[i] = rank[i];
      }
      have_prev = true;
    }
    for (int r = 0; r < d1; ++r) oo[r] = ids[r];
  }

  // Points [b, e); returns the first point out of the lattice's range, or -1.
  int64_t run(int64_t b, int64_t e) {
    float f[Scratch<D>::kSize];
    const int64_t fw = bd.feat.width();
    int64_t p = b;
#if defined(PYSEG_HAVE_AVX2_OPS)
    if constexpr (D == 2 || D == 3 || D == 5) {
      // 8 lattice points at a time (bitwise the same as one by one); a group with a point out of range is
      // left to the scalar loop below, which reports it.
      if (lattice_simd_enabled()) {
        alignas(32) float f8[D * 8];
        int r8[8 * (D + 1)], k8[8 * (D + 1)];
        float b8[8 * (D + 2)];
        const int64_t p8 = p;
        for (; p + 8 <= e; p += 8) {
          int64_t x = p % fw, y = p / fw;
          for (int l = 0; l < 8; ++l, ++x) {
            if (x == fw) x = 0, ++y;
            bd.feat(p + l, x, y, f);
            for (int i = 0; i < D; ++i) f8[i * 8 + l] = f[i];
          }
          if (!lattice_points8<D>(f8, bd.sc, r8, k8, b8)) break;
          for (int l = 0; l < 8; ++l) place(p + l, r8 + l * (D + 1), k8 + l * (D + 1), b8 + l * (D + 2));
        }
        fast_path_counts().lattice_points8.fetch_add(p - p8, std::memory_order_relaxed);
      }
    }
#endif
    int rem0[Scratch<D>::kSize], rank[Scratch<D>::kSize];
    float bary[Scratch<D>::kSize + 1];
    int64_t fx = p % fw, fy = p / fw;
    for (; p < e; ++p, ++fx) {
      if (fx == fw) fx = 0, ++fy;
      bd.feat(p, fx, fy, f);
      if (!crf::lattice_point<D>(d, f, bd.sc, rem0, rank, bary)) return p;
      place(p, rem0, rank, bary);
    }
    return -1;
  }
};

template <int D, class Keys, class Feat>
void LatticeBuild<D, Keys, Feat>::lattice_points() {
  ex.run(lat.nchunks, [&](int c) {
    ChunkPoints<D, Keys, Feat> chunk(*this, c);
    bad[c] = chunk.run(lat.chunk_begin[c], lat.chunk_begin[c + 1]);
  });
  for (int c = 0; c < lat.nchunks; ++c) {
    if (bad[c] >= 0) {
      float f[Scratch<D>::kSize];
      feat(bad[c], bad[c] % feat.width(), bad[c] / feat.width(), f);
      throw std::invalid_argument(overflow_message(d, bad[c], f));
    }
  }
}

template <int D, class Keys, class Feat>
void LatticeBuild<D, Keys, Feat>::number_vertices() {
  const int nchunks = lat.nchunks;
  lat.local_begin.assign(nchunks + 1, 0);
  for (int c = 0; c < nchunks; ++c) lat.local_begin[c + 1] = lat.local_begin[c] + local[c].size();
  rows = lat.local_begin[nchunks];  // <= n (d+1) < 2^31
  lat.to_global.clear();
  lat.to_global.resize(rows);
  table = [&] {
    if constexpr (kGrid)
      return nchunks == 1 ? std::move(local[0]) : plan->all.grid();
    else
      return nchunks == 1 ? std::move(local[0]) : KeyTable<D>(d, std::min<int64_t>(rows, kMergeTableKeys));
  }();
  if (nchunks == 1) {
    for (int64_t k = 0; k < rows; ++k) lat.to_global[k] = (int32_t)k;
  } else {
    for (int c = 0; c < nchunks; ++c) {
      int32_t* tg = lat.to_global.data() + lat.local_begin[c];
      for (int i = 0; i < local[c].size(); ++i) tg[i] = table.find_or_insert(local[c].key(i));
      if constexpr (kGrid)
        local[c] = KeyGrid();
      else
        local[c] = KeyTable<D>(d, 1);
    }
  }
  const int m = table.size();
  lat.m = m;
#ifdef PYSEG_PROFILE
  std::fprintf(stderr, "lattice d=%d n=%lld m=%d rows=%lld chunks=%d\n", d, (long long)lat.n, m, (long long)rows,
               nchunks);
#endif
  // The local rows of each vertex, in chunk order (the reduce adds them in this order).
  lat.gather_start.assign(m + 1, 0);
  for (int64_t k = 0; k < rows; ++k) ++lat.gather_start[lat.to_global[k] + 1];
  for (int v = 0; v < m; ++v) lat.gather_start[v + 1] += lat.gather_start[v];
  lat.gather_rows.clear();
  lat.gather_rows.resize(rows);
  std::vector<int32_t> at(lat.gather_start.begin(), lat.gather_start.end() - 1);
  for (int64_t k = 0; k < rows; ++k) lat.gather_rows[at[lat.to_global[k]]++] = (int32_t)k;
}

template <int D, class Keys, class Feat>
void LatticeBuild<D, Keys, Feat>::find_neighbours() {
  const int m = lat.m;
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
}

// norm = filter(ones) (alpha included), as the reference computes it. Its splat also turns the chunk-relative
// offsets into rows of the concatenated local arrays.
template <int D, class Keys, class Feat>
void LatticeBuild<D, Keys, Feat>::normalise() {
  const int m = lat.m;
  const int64_t n = lat.n;
  const float alpha = crf::lattice_alpha(d);
  wvec<float> acc(rows, 0.0f), vl(rows), va(m + 1, 0.0f), vb(m + 1, 0.0f);
  ex.run(lat.nchunks, [&](int c) {
    const int32_t base = (int32_t)lat.local_begin[c];
    int32_t* off = lat.offsets.data();
    const float* w = lat.bary.data();
    for (int64_t i = lat.chunk_begin[c] * d1; i < lat.chunk_begin[c + 1] * d1; ++i) {
      off[i] += base;
      acc[off[i]] += w[i];
    }
  });
  ex.parallel_for(m, [&](int64_t b, int64_t e) { reduce_rows(lat, acc.data(), 1, va.data(), b, e); }, 4096);
  for (int j = 0; j < d1; ++j) {
    ex.parallel_for(m, [&](int64_t b, int64_t e) { blur_rows(lat, j, va.data(), vb.data(), 1, b, e); });
    va.swap(vb);
  }
  ex.parallel_for(rows, [&](int64_t b, int64_t e) { distribute_rows(lat, va.data(), 1, vl.data(), b, e); }, 8192);
  // The symmetric normalisation and none fold into the weights (bary *= pre, post = alpha pre: see Lattice);
  // the others keep a factor per point before the splat and after the slice.
  lat.folded = normalization == crf::NORMALIZE_SYMMETRIC || normalization == crf::NO_NORMALIZATION;
  lat.slice_scale = alpha;
  wvec<float>().swap(lat.pre);
  wvec<float>().swap(lat.post);
  // A point's slice of the filtered ones (alpha not applied).
  auto ones_of = [&](int64_t p) {
    float s = 0.0f;
    for (int r = 0; r < d1; ++r) s += lat.bary[p * d1 + r] * vl[lat.offsets[p * d1 + r]];
    return s;
  };
  if (normalization == crf::NORMALIZE_SYMMETRIC) {
    ex.parallel_for(n, [&](int64_t b, int64_t e) {
      // The sums of a block, then their factors (square roots and divisions, 4 at a time where AVX2 is on: a
      // divider-bound loop), then the weights.
      constexpr int64_t kB = 512;
      float sums[kB], k[kB];
      for (int64_t p0 = b; p0 < e; p0 += kB) {
        const int64_t cnt = std::min(kB, e - p0);
        for (int64_t i = 0; i < cnt; ++i) sums[i] = ones_of(p0 + i);
#if defined(PYSEG_HAVE_AVX2_OPS)
        if (lattice_simd_enabled())
          symmetric_factors(sums, cnt, alpha, k);
        else
#endif
          for (int64_t i = 0; i < cnt; ++i) k[i] = crf::symmetric_factor(sums[i], alpha);
        float* w = lat.bary.data() + p0 * d1;
        for (int64_t i = 0; i < cnt; ++i)
          for (int r = 0; r < d1; ++r) w[i * d1 + r] *= k[i];
      }
    });
  }
  if (lat.folded) return;
  lat.pre.resize(n);
  lat.post.resize(n);
  ex.parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const double norm = (double)(ones_of(p) * alpha);
      float pre = 1.0f, post = alpha;
      if (normalization == crf::NORMALIZE_BEFORE) {
        pre = (float)(1.0 / (norm + 1e-20));
      } else if (normalization == crf::NORMALIZE_AFTER) {
        post = alpha * (float)(1.0 / (norm + 1e-20));
      }
      lat.pre[p] = pre;
      lat.post[p] = post;
    }
  });
}

template <int D, class Keys, class Feat>
void build_keys(Lattice& lat, int d_rt, int64_t n, const Feat& feat, int normalization, Executor& ex,
                const GridPlan* plan) {
  LatticeBuild<D, Keys, Feat> build(lat, d_rt, n, feat, normalization, ex, plan);
  PYSEG_PROFILE_CLOCK(prof, "lattice d=" + std::to_string(build.d));
  build.lattice_points();
  PYSEG_PROFILE_TICK(prof, "points");
  build.number_vertices();
  PYSEG_PROFILE_TICK(prof, "merge");
  build.find_neighbours();
  PYSEG_PROFILE_TICK(prof, "neighbours");
  build.normalise();
  PYSEG_PROFILE_TICK(prof, "norm");
}

// Builds the lattice; with a plan (D = 2 only) the vertices are numbered through KeyGrids instead of hash
// tables (the same numbering, so the same lattice) and without the simplex caches (a grid lookup is cheaper).
template <int D, class Feat>
void build_impl(Lattice& lat, int d_rt, int64_t n, const Feat& feat, int normalization, Executor& ex,
                const GridPlan* plan = nullptr) {
  if constexpr (D == 2) {
    if (plan) return build_keys<D, KeyGrid>(lat, d_rt, n, feat, normalization, ex, plan);
  }
  build_keys<D, KeyTable<D>>(lat, d_rt, n, feat, normalization, ex, nullptr);
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
  GridPlan plan;
  const bool grid = plan_gaussian_grid(t, n, plan);
  build_impl<2>(lat, 2, n, GaussFeat{&t, feat.width}, normalization, ex, grid ? &plan : nullptr);
}
bool gaussian_lattice_uses_grid(int64_t n, const GaussianImageFeatures& feat) {
  if (n < 1 || feat.width < 1 || !(feat.sx > 0 && feat.sy > 0)) return false;
  const ImageTables t(n, feat.width, feat.sx, feat.sy, nullptr);
  GridPlan plan;
  return plan_gaussian_grid(t, n, plan);
}
void build_lattice(Lattice& lat, int64_t n, const BilateralImageFeatures& feat, int normalization, Executor& ex) {
  const float sc[3] = {feat.sr, feat.sg, feat.sb};
  const ImageTables t(n, feat.width, feat.sx, feat.sy, sc);
  build_impl<5>(lat, 5, n, BilatFeat{&t, feat.width, feat.rgb}, normalization, ex);
}

int64_t lattice_chunk_size(int64_t n) {
  const int64_t base = 32768, max_chunks = 64;
  return std::max<int64_t>(base, (n + max_chunks - 1) / max_chunks);
}

}  // namespace cpu
}  // namespace pyseg
