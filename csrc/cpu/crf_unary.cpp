// DenseCrf's unary: from energies or from probabilities (validated), and the fused unary + first splat.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/crf_cpu.h"
#include "cpu/ops.h"
#include "crf/meanfield.h"

namespace pyseg {
namespace cpu {

void DenseCrf::ensure_unary() {
  if (has_unary_) return;
  for (int64_t p = 0; p < n_; ++p)
    for (int l = 0; l < lp_; ++l) neg_u_[p * lp_ + l] = l < labels_ ? 0.0f : crf::kPadEnergy;
  has_unary_ = true;
}

void DenseCrf::set_unary(const float* u) {
  std::vector<float> blk((size_t)kBlock * lp_);
  for (int64_t b = 0; b < n_; b += kBlock) {
    const int64_t e = std::min(n_, b + kBlock);
    const int64_t cnt = e - b;
    for (int64_t i = 0; i < cnt * lp_; ++i) blk[i] = crf::kPadEnergy;
    for (int l = 0; l < labels_; ++l) {
      const float* src = u + (int64_t)l * n_ + b;
      for (int64_t i = 0; i < cnt; ++i) {
        const float v = src[i];
        if (!std::isfinite(v)) {
          std::ostringstream os;
          os << "unary energies must be finite, got " << v << " at label " << l << ", point " << b + i;
          throw std::invalid_argument(os.str());
        }
        blk[i * lp_ + l] = -v;
      }
    }
    std::memcpy(neg_u_.get() + b * lp_, blk.data(), sizeof(float) * cnt * lp_);
  }
  has_unary_ = true;
}

void DenseCrf::set_unary_from_probs(const float* prob, float clip, float sum_tol, float* q0, Executor& ex) {
  // The ISA's unary op per range of pixels (validate, log, into rows); q0 (n, lp) gets softmax(-U) =
  // clip(p) / sum(clip(p)) directly.
  std::atomic<int64_t> first_bad{-1};
  ex.parallel_for(n_, [&](int64_t b0, int64_t e0) {
    float* q0_rows = q0 ? q0 + b0 * lp_ : nullptr;
    if (!ops_->unary(lp_, prob, n_, labels_, b0, e0, clip, sum_tol, neg_u_.get(), q0_rows)) {
      int64_t expected = -1;
      first_bad.compare_exchange_strong(expected, b0);
    }
  }, 16384);
  if (first_bad.load() >= 0) throw_bad_probs(prob, sum_tol);
  has_unary_ = true;
}

void DenseCrf::throw_bad_probs(const float* prob, float sum_tol) const {
  // Find and report the first offending pixel (any block may have been first to fail).
  for (int64_t p = 0; p < n_; ++p) {
    float s = 0.0f;
    for (int l = 0; l < labels_; ++l) {
      const float v = prob[(int64_t)l * n_ + p];
      if (!(v >= 0.0f && v <= 3.4e38f)) {
        std::ostringstream os;
        os << "probabilities must be finite and >= 0 (in [0, 1]), got " << v << " at label " << l << ", pixel "
           << p;
        throw std::invalid_argument(os.str());
      }
      s += v;
    }
    if (!(std::fabs(s - 1.0f) <= sum_tol)) {
      std::ostringstream os;
      os << "probabilities must sum to 1 over the labels (within " << sum_tol << "), got " << s << " at pixel "
         << p;
      throw std::invalid_argument(os.str());
    }
  }
  throw std::logic_error("a block reported bad probabilities that the scan did not find");
}

bool DenseCrf::can_splat_unary() const { return !terms_.empty(); }

void DenseCrf::set_unary_from_probs_splat(const float* prob, float clip, float sum_tol, Executor& ex) {
  if (!can_splat_unary()) throw std::logic_error("set_unary_from_probs_splat needs the pairwise terms added first");
  ensure_buffers();
  // Chunk by chunk (every lattice of this CRF has the same chunks): blocks of kBlock pixels get their unary
  // rows and softmax(-U) in a small buffer, splatted at once into every term's rows: the starting Q never
  // goes through memory (no n x lp buffer, no second pass over it).
  std::atomic<int64_t> first_bad{-1};
  const Lattice& lat0 = terms_[0]->lat();
  ex.run(lat0.nchunks, [&](int c) {
    const int64_t pb = lat0.chunk_begin[c], pe = lat0.chunk_begin[c + 1];
    for (auto& k : terms_) clear_chunk_rows(k->lat(), c, lp_, k->acc());
    std::vector<float> qb((size_t)kBlock * lp_);
    for (int64_t b = pb; b < pe; b += kBlock) {
      const int64_t e = std::min(pe, b + kBlock);
      if (!ops_->unary(lp_, prob, n_, labels_, b, e, clip, sum_tol, neg_u_.get(), qb.data())) {
        int64_t expected = -1;
        first_bad.compare_exchange_strong(expected, b);
        return;
      }
      for (auto& k : terms_) ops_->splat_rows(k->lat(), b, (int)(e - b), qb.data(), lp_, k->acc());
    }
  });
  if (first_bad.load() >= 0) throw_bad_probs(prob, sum_tol);
  has_unary_ = true;
}

}  // namespace cpu
}  // namespace pyseg
