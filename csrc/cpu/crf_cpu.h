// CPU dense CRF: mean-field inference over any number of pairwise terms (each a lattice) (no Python types here).
//
// Internally Q, -U and lattice values are rows of `lp` floats (the labels padded to a multiple of 4) so that a
// pixel's or vertex's labels are contiguous; padded lanes carry crf::kPadEnergy and stay exactly 0.
// A mean-field step is one pass over the pixels, chunk by chunk (lattice_cpu.h): slice, update and the splat
// of the new Q into the chunk's local rows; between steps the partial sums are reduced, blurred and
// distributed back to the local rows.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/ops.h"
#include "cpu/lattice_cpu.h"
#include "cpu/thread_pool.h"
#include "cpu/workspace.h"
#include "crf/common.h"
#include "crf/params.h"

namespace pyseg {
namespace cpu {

// A compatibility as given by the user: Potts weight, L diagonal entries or an L x L matrix (row-major).
struct CompatSpec {
  int type = crf::COMPAT_POTTS;
  float w = 0.0f;
  std::vector<float> values;
};

class DenseCrf {
 public:
  DenseCrf(int64_t n, int labels);

  int64_t n() const { return n_; }
  int labels() const { return labels_; }
  int num_terms() const { return (int)terms_.size(); }

  // U (labels, n) energies (validated: finite).
  void set_unary(const float* u);
  // -log(clip(p, clip, 1)) from probabilities (labels, n) (validated: finite, in [0, 1], sums within tol of
  // 1). When q0 is given (n * lp), it receives softmax(-U), the starting point of inference.
  void set_unary_from_probs(const float* p, float clip, float sum_tol, float* q0, Executor& ex);
  // The same, with softmax(-U) splatted straight into every term's rows (for iterate(nullptr, ...)); needs
  // the terms added first and can_splat_unary().
  void set_unary_from_probs_splat(const float* p, float clip, float sum_tol, Executor& ex);
  bool can_splat_unary() const;
  bool has_unary() const { return has_unary_; }

  void add_term(const ArrayFeatures& f, const CompatSpec& c, int normalization, Executor& ex);
  void add_gaussian(int width, int height, float sx, float sy, const CompatSpec& c, int normalization,
                    Executor& ex);
  void add_bilateral(int width, int height, float sx, float sy, float sr, float sg, float sb, const uint8_t* rgb,
                     const CompatSpec& c, int normalization, Executor& ex);

  // Q after `iterations` mean-field steps from softmax(-U), written as (labels, n).
  void inference(int iterations, float* out, Executor& ex);
  // softmax(-U) as (labels, n).
  void start_inference(float* q_out, Executor& ex);
  // One mean-field step on q (labels, n), in place.
  void step_inference(float* q, Executor& ex);
  // KL divergence of q (labels, n) as the reference defines it (up to a constant).
  double kl_divergence(const float* q, Executor& ex);

  // Pixel-major padded buffers (n * lp) for the fast path.
  int lp() const { return lp_; }
  const char* isa() const { return ops_->name; }
  void initial_q(float* qp, Executor& ex);
  // `iterations` steps from qp (n * lp); the final Q goes to out_lm as (labels, n) when given, else to qp.
  // qp == nullptr: from the rows set_unary_from_probs_splat splatted (out_lm required).
  void iterate(float* qp, int iterations, Executor& ex, float* out_lm = nullptr);
  void to_label_major(const float* qp, float* out, Executor& ex) const;
  void from_label_major(const float* q, float* qp, Executor& ex) const;

 private:
  struct PairwiseTerm {
    std::shared_ptr<const Lattice> latp;  // shared with the Gaussian lattice cache, read-only
    const Lattice& lat() const { return *latp; }
    int type;
    float w;
    std::vector<float> compat;  // lp (diagonal) or lp*lp (symmetrised matrix), zero padded
    // Two tables of max(L, m + 1) rows of lp floats whose roles alternate: the update slices the filtered
    // local rows in buf[1 - cur] and splats into buf[cur]; the reduce writes the global rows into buf[1 - cur],
    // the blur passes ping-pong between the two (row m: the zero missing neighbour), and the last pass writes
    // the local rows into whichever the pass does not read, which becomes the next update's values.
    wvec<float> buf[2];
    int cur = 0;
    float* acc() { return buf[cur].data(); }
    float* vals() { return buf[1 - cur].data(); }
  };
  void add_compat(PairwiseTerm& k, const CompatSpec& c);
  void ensure_buffers();
  void ensure_unary();  // zeros when no unary was set
  [[noreturn]] void throw_bad_probs(const float* prob, float sum_tol) const;  // the first bad pixel's message
  void splat_all(const float* qp, Executor& ex);  // every term's acc <- splat of qp
  void propagate_all(Executor& ex);              // every term's vals <- blur of its reduced acc
  void filter_all(const float* qp, Executor& ex) {
    splat_all(qp, ex);
    propagate_all(ex);
  }

  static constexpr int64_t kBlock = 256;  // pixels per block of a (labels, n) <-> (n, lp) transpose
  const OpsSet* ops_;
  int64_t n_;
  int labels_;
  int lp_;
  bool has_unary_ = false;
  WsArray<float> neg_u_;  // n * lp
  std::vector<std::unique_ptr<PairwiseTerm>> terms_;
};

// Batch of b images: probs (b, labels, h, w) float32 probabilities, rgb (b, h, w, 3) uint8 -> out (b, labels, h, w).
// A term with compat 0 is skipped. Threads go across images when b >= threads, else within each image.
void dense_crf_images(int64_t b, int labels, int h, int w, const float* probs, const uint8_t* rgb,
                      const crf::ImageParams& prm, int iterations, float* out, int threads);

}  // namespace cpu
}  // namespace pyseg
