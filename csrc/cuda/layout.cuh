// Sizes and workspace layout of the CUDA dense CRF (host code; also compiled by g++ for the emulation test).
//
// One call handles a batch of B images of H x W pixels and L labels with two lattices: lattice 0 is the
// Gaussian (position) kernel, d = 2; lattice 1 the bilateral (position + RGB) kernel, d = 5. The batch is
// folded into the lattices: a vertex is (image, key), so one sequence of launches serves every image.
//
// Indices: pixel p = b * N + y * W + x (N = H * W); entry e = (pixel, remainder r) of a lattice,
// e = p * (d+1) + r for lattice 0 and E0 + p * (d+1) + r for lattice 1 (E0 = P * 3 with P = B * N).
// Vertices of both lattices share one numbering: lattice 0's first (v < M0), then lattice 1's (M0 <= v < M);
// M and M0 are only known on the device (counts[]); arrays indexed by vertex are sized for the upper
// bound M <= E (every entry its own vertex, which tiny sigmas really reach).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <stdexcept>
#include <string>

namespace pyseg {
namespace cuda {

constexpr int kDim0 = 2;         // Gaussian lattice
constexpr int kDim1 = 5;         // bilateral lattice
constexpr int kNbrAxes = 6;      // neighbour rows per vertex (d+1 of the larger lattice)
constexpr int kPieceLen = 32;    // entries per splat piece at most (bounded work per piece)
constexpr int kSubLen = 8;       // a piece is summed as kPieceLen / kSubLen sums of kSubLen entries, then a tree
constexpr int kSubs = kPieceLen / kSubLen;
static_assert(kSubs == 4, "the splat's tree of sub-sums is written for 4 sub-sums");
constexpr int kMaxLabels = 4096; // labels per call (a pixel's row must stay a modest size)
// Pixels per call: keeps every hash slot (2 * next_pow2(6 P) for the bilateral lattice) an int32.
constexpr int64_t kMaxPixels = (int64_t(1) << 29) / (kDim1 + 1);

struct Sizes {
  int B, H, W, L;
  int64_t N, P;  // pixels per image, pixels in the batch
  int LP, G;     // labels padded to a multiple of 4, float4 groups per pixel row (LP / 4)
  int64_t E0, E1, E;
  int64_t cap0, cap1, C;  // hash table capacities (powers of 2), C = cap0 + cap1
  int end_bit;            // bits needed by an entry index (radix sort range of the vertex keys)
};

inline int64_t next_pow2(int64_t x) {
  int64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

// Validates the shapes and derives every size; throws std::invalid_argument naming the bad value.
inline Sizes make_sizes(int64_t B, int64_t H, int64_t W, int64_t L) {
  if (B < 1 || H < 1 || W < 1)
    throw std::invalid_argument("dense_crf_cuda: batch, height and width must be >= 1, got B=" + std::to_string(B) +
                                " H=" + std::to_string(H) + " W=" + std::to_string(W));
  if (L < 1 || L > kMaxLabels)
    throw std::invalid_argument("dense_crf_cuda: labels must be in 1.." + std::to_string(kMaxLabels) + ", got " +
                                std::to_string(L));
  if (H > kMaxPixels || W > kMaxPixels || B > kMaxPixels || H * W > kMaxPixels || B * (H * W) > kMaxPixels)
    throw std::invalid_argument("dense_crf_cuda: batch too large for one call (B=" + std::to_string(B) +
                                " H=" + std::to_string(H) + " W=" + std::to_string(W) + "; at most " +
                                std::to_string(kMaxPixels) + " pixels per call): split the batch");
  Sizes s;
  s.B = (int)B;
  s.H = (int)H;
  s.W = (int)W;
  s.L = (int)L;
  s.N = H * W;
  s.P = B * s.N;
  s.E0 = s.P * (kDim0 + 1);
  s.E1 = s.P * (kDim1 + 1);
  s.E = s.E0 + s.E1;
  s.LP = (int)((L + 3) / 4 * 4);
  s.G = s.LP / 4;
  // Load factor <= 1/2 even when every entry is its own vertex.
  s.cap0 = 2 * next_pow2(s.E0);
  s.cap1 = 2 * next_pow2(s.E1);
  s.C = s.cap0 + s.cap1;
  if (s.C > (int64_t(1) << 31) - 1) throw std::logic_error("dense_crf_cuda: hash table exceeds int32 slots");
  int bits = 0;
  while ((int64_t(1) << bits) < s.E) ++bits;
  s.end_bit = bits;
  return s;
}

// Device arrays, carved out of one workspace buffer (256-byte aligned each).
struct Buffers {
  float* neg_u;        // P * LP     -U, pixel-major, padded lanes kPadEnergy
  float* q;            // P * LP     current Q, pixel-major, padded lanes 0
  int32_t* pdat;       // P * 3 + P * 6   per pixel and lattice: rem0[0..d) then the ranks packed 4 bits each
  float* bary;         // E          barycentric weight of each entry
  int32_t* entry_slot; // E          hash slot of each entry
  int32_t* entry_key;  // E          the entry that claimed the slot (sort keys: vertices numbered in its order)
  int32_t* entry_idx;  // E          0..E-1 (sort values); later reused for the piece scan
  int32_t* sorted_key;    // E
  int32_t* sorted_entry;  // E       entries grouped by vertex, ascending entry order within a vertex
  int32_t* flags;      // E          run / piece heads
  int32_t* vid;        // E          inclusive scan of run heads
  int32_t* table;      // C          hash table: owner entry, then vertex id; -1 empty
  int32_t* vstart;     // E + 1      first sorted position of each vertex
  int32_t* vowner;     // E          an entry of each vertex (its key's source)
  int32_t* vpiece;     // E + 1      first piece of each vertex
  int32_t* pstart;     // E + 1      first sorted position of each piece
  int32_t* counts;     // 4          M, M0, pieces
  int32_t* ev;         // E          vertex of each entry (slice)
  float* lw;           // E          slice weight: compat * alpha * norm(p) * bary
  float* swe;          // E          splat weight by entry: norm(p) * bary
  int32_t* spix;       // E          pixel of each sorted position (splat gather)
  float* sws;          // E          splat weight of each sorted position
  int32_t* nbr;        // E * 6 * 2  blur neighbours (n1, n2) per vertex and axis, -1 when absent
  float* vals0;        // E * LP     vertex values
  float* vals1;        // E * LP     the splat's piece sums, then vertex values (blur ping-pong)
  void* cub_temp;      // cub_bytes
};

constexpr int kNumBuffers = 26;  // the arrays of Buffers

// Bytes of each array of Buffers, in declaration order; cub_bytes is the sort/scan scratch size.
inline void buffer_bytes(const Sizes& s, size_t cub_bytes, size_t out[kNumBuffers]) {
  const size_t P = (size_t)s.P, E = (size_t)s.E, LP = (size_t)s.LP, C = (size_t)s.C;
  const size_t sizes[kNumBuffers] = {
      P * LP * 4, P * LP * 4, P * 9 * 4, E * 4,           // neg_u q pdat bary
      E * 4,      E * 4,      E * 4,     E * 4,  E * 4,   // entry_slot entry_key entry_idx sorted_key sorted_entry
      E * 4,      E * 4,      C * 4,                      // flags vid table
      (E + 1) * 4, E * 4, (E + 1) * 4, (E + 1) * 4, 16,   // vstart vowner vpiece pstart counts
      E * 4,      E * 4,      E * 4,     E * 4,  E * 4,   // ev lw swe spix sws
      E * kNbrAxes * 2 * 4,                               // nbr
      E * LP * 4, E * LP * 4,                             // vals0 vals1
      cub_bytes};
  for (int i = 0; i < kNumBuffers; ++i) out[i] = sizes[i];
}

struct Layout {
  size_t off[kNumBuffers];
  size_t total;
};

inline size_t align256(size_t x) { return (x + 255) / 256 * 256; }

// Byte offsets of the arrays of Buffers in one workspace, in declaration order.
inline Layout make_layout(const Sizes& s, size_t cub_bytes) {
  size_t sizes[kNumBuffers];
  buffer_bytes(s, cub_bytes, sizes);
  Layout lay;
  size_t o = 0;
  for (int i = 0; i < kNumBuffers; ++i) {
    lay.off[i] = o;
    o += align256(sizes[i] > 0 ? sizes[i] : 1);
  }
  lay.total = o;
  return lay;
}

// The arrays of Buffers at the given addresses, in declaration order.
inline Buffers bind_pointers(void* const p[kNumBuffers]) {
  Buffers f;
  void** ptrs[kNumBuffers] = {(void**)&f.neg_u,   (void**)&f.q,       (void**)&f.pdat,        (void**)&f.bary,
                              (void**)&f.entry_slot, (void**)&f.entry_key, (void**)&f.entry_idx, (void**)&f.sorted_key,
                              (void**)&f.sorted_entry,
                              (void**)&f.flags,   (void**)&f.vid,     (void**)&f.table,       (void**)&f.vstart,
                              (void**)&f.vowner,  (void**)&f.vpiece,  (void**)&f.pstart,      (void**)&f.counts,
                              (void**)&f.ev,      (void**)&f.lw,      (void**)&f.swe,         (void**)&f.spix,
                              (void**)&f.sws,     (void**)&f.nbr,     (void**)&f.vals0,       (void**)&f.vals1,
                              (void**)&f.cub_temp};
  for (int i = 0; i < kNumBuffers; ++i) *ptrs[i] = p[i];
  return f;
}

inline Buffers bind_buffers(const Layout& lay, void* base) {
  void* p[kNumBuffers];
  for (int i = 0; i < kNumBuffers; ++i) p[i] = (char*)base + lay.off[i];
  return bind_pointers(p);
}

}  // namespace cuda
}  // namespace pyseg
