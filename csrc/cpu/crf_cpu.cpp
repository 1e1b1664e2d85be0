#include "cpu/crf_cpu.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>

#include "cpu/ops.h"
#include "cpu/profile.h"
#include "crf/lattice.h"
#include "crf/meanfield.h"

namespace pyseg {
namespace cpu {
namespace {

void check_compat(const CompatSpec& c, int labels) {
  if (c.type == crf::COMPAT_POTTS) {
    if (!std::isfinite(c.w)) throw std::invalid_argument("Potts compatibility must be finite");
  } else if (c.type == crf::COMPAT_DIAGONAL || c.type == crf::COMPAT_MATRIX) {
    const size_t want = c.type == crf::COMPAT_DIAGONAL ? (size_t)labels : (size_t)labels * labels;
    if (c.values.size() != want)
      throw std::invalid_argument("compatibility has " + std::to_string(c.values.size()) + " entries, expected " +
                                  std::to_string(want) + " for " + std::to_string(labels) + " labels");
    for (float v : c.values)
      if (!std::isfinite(v)) throw std::invalid_argument("compatibility entries must be finite");
  } else {
    throw std::invalid_argument("unknown compatibility type " + std::to_string(c.type));
  }
}

}  // namespace

DenseCrf::DenseCrf(int64_t n, int labels)
    : ops_(&best_ops()), n_(n), labels_(labels), lp_((labels + kLabelPad - 1) / kLabelPad * kLabelPad) {
  if (n < 1) throw std::invalid_argument("the CRF needs at least one point, got " + std::to_string(n));
  if (labels < 1) throw std::invalid_argument("the CRF needs at least one label, got " + std::to_string(labels));
  if (n > (int64_t)1 << 31) throw std::invalid_argument("too many points: " + std::to_string(n));
  neg_u_ = WsArray<float>((size_t)n * lp_);  // filled by set_unary*, or with zeros by ensure_unary()
}

void DenseCrf::add_compat(PairwiseTerm& k, const CompatSpec& c) {
  check_compat(c, labels_);
  k.type = c.type;
  k.w = c.w;
  if (c.type == crf::COMPAT_DIAGONAL) {
    k.compat.assign(lp_, 0.0f);
    for (int l = 0; l < labels_; ++l) k.compat[l] = c.values[l];
  } else if (c.type == crf::COMPAT_MATRIX) {
    k.compat.assign((size_t)lp_ * lp_, 0.0f);
    for (int i = 0; i < labels_; ++i)
      for (int j = 0; j < labels_; ++j)
        k.compat[(size_t)i * lp_ + j] = 0.5f * (c.values[(size_t)i * labels_ + j] + c.values[(size_t)j * labels_ + i]);
  }
}

void DenseCrf::add_term(const ArrayFeatures& f, const CompatSpec& c, int normalization, Executor& ex) {
  if (f.n != n_)
    throw std::invalid_argument("features have " + std::to_string(f.n) + " points, the CRF has " + std::to_string(n_));
  std::unique_ptr<PairwiseTerm> k(new PairwiseTerm());
  add_compat(*k, c);
  auto lat = std::make_shared<Lattice>();
  build_lattice(*lat, f, normalization, ex);
  k->latp = std::move(lat);
  terms_.push_back(std::move(k));
}

void DenseCrf::add_gaussian(int width, int height, float sx, float sy, const CompatSpec& c, int normalization,
                            Executor& ex) {
  if ((int64_t)width * height != n_) throw std::invalid_argument("image size does not match the CRF's points");
  if (!(sx > 0 && sy > 0 && std::isfinite(sx) && std::isfinite(sy)))
    throw std::invalid_argument("Gaussian sigmas must be finite and > 0");
  std::unique_ptr<PairwiseTerm> k(new PairwiseTerm());
  add_compat(*k, c);
  k->latp = gaussian_lattice(n_, GaussianImageFeatures{width, sx, sy}, normalization, ex);
  terms_.push_back(std::move(k));
}

void DenseCrf::add_bilateral(int width, int height, float sx, float sy, float sr, float sg, float sb,
                             const uint8_t* rgb, const CompatSpec& c, int normalization, Executor& ex) {
  if ((int64_t)width * height != n_) throw std::invalid_argument("image size does not match the CRF's points");
  for (float s : {sx, sy, sr, sg, sb})
    if (!(s > 0 && std::isfinite(s))) throw std::invalid_argument("bilateral sigmas must be finite and > 0");
  std::unique_ptr<PairwiseTerm> k(new PairwiseTerm());
  add_compat(*k, c);
  auto lat = std::make_shared<Lattice>();
  build_lattice(*lat, n_, BilateralImageFeatures{width, sx, sy, sr, sg, sb, rgb}, normalization, ex);
  k->latp = std::move(lat);
  terms_.push_back(std::move(k));
}

void DenseCrf::ensure_buffers() {
  for (auto& k : terms_) {
    const size_t rows = (size_t)k->lat().rows() * lp_;
    const size_t g = (size_t)(k->lat().m + 1) * lp_;
    for (auto& b : k->buf)
      if (b.size() != std::max(rows, g)) b.resize(std::max(rows, g));
  }
}

void DenseCrf::splat_all(const float* qp, Executor& ex) {
  ensure_buffers();
  // Chunks of the first term's lattice; every lattice of this CRF has the same chunks (they depend on n only).
  if (terms_.empty()) return;
  ex.run(terms_[0]->lat().nchunks, [&](int c) {
    for (auto& k : terms_) ops_->splat(k->lat(), c, qp, lp_, k->acc());
  });
}

void DenseCrf::propagate_all(Executor& ex) {
  // All terms together, phase by phase: the reduce of the chunks' partial sums (buf[cur]) into the other
  // table, then blur pass j of every term with more than j axes, ping-pong between the two tables, a
  // term's last pass writing its local rows for the slice directly (the distribute) into the table it does
  // not read. Fewer, fuller parallel phases than term by term: each is a barrier, and a barrier costs most
  // where a thread is slow to get the CPU.
  struct Task {
    PairwiseTerm* k;
    int64_t b, e;
  };
  std::vector<Task> tasks;
  const int64_t t = ex.threads();
  // The tasks of a phase, listed thread block by thread block: block k holds vertices [m k / t, m (k + 1) / t)
  // of every term, in pieces, and the same number of tasks in every block, so that the pool's first share of
  // the list for thread k (Executor::run) is block k. A thread then blurs the same vertices in every pass and
  // mostly reads rows that it wrote itself, from its own cache (pieces in any order are slower when the cores
  // are far apart: benchmarks/NOTES_cpu.md).
  auto make_tasks = [&](int j) {
    tasks.clear();
    for (int64_t blk = 0; blk < t; ++blk)
      for (auto& kp : terms_) {
        if (kp->lat().d + 1 <= j) continue;
        const int64_t m = kp->lat().m;
        const int64_t p = t == 1 ? 1 : std::max<int64_t>(1, std::min<int64_t>(8, m / (1024 * t)));  // per block
        for (int64_t i = blk * p; i < (blk + 1) * p; ++i)
          tasks.push_back(Task{kp.get(), m * i / (t * p), m * (i + 1) / (t * p)});
      }
  };
  int max_d1 = 0;
  for (auto& kp : terms_) max_d1 = std::max(max_d1, kp->lat().d + 1);
  make_tasks(0);
  ex.run((int)tasks.size(), [&](int i) {
    const Task& tk = tasks[i];
    PairwiseTerm& k = *tk.k;
    ops_->reduce(k.lat(), k.buf[k.cur].data(), lp_, k.buf[1 - k.cur].data(), tk.b, tk.e);
  });
  // The missing-neighbour rows (row m of both tables: it may hold a local row or stale values) <- 0. In
  // buf[cur] only after pass 0 has read the last of its local rows (below).
  auto zero_row_m = [&](int which) {
    for (auto& kp : terms_) {
      float* z = kp->buf[which == 0 ? 1 - kp->cur : kp->cur].data() + (size_t)kp->lat().m * lp_;
      std::fill(z, z + lp_, 0.0f);
    }
  };
  zero_row_m(0);
  for (int j = 0; j < max_d1; ++j) {
    make_tasks(j);
    ex.run((int)tasks.size(), [&](int i) {
      const Task& tk = tasks[i];
      PairwiseTerm& k = *tk.k;
      const int s = j % 2 == 0 ? 1 - k.cur : k.cur;  // the table pass j reads
      const float* src = k.buf[s].data();
      float* dst = k.buf[1 - s].data();
      const bool last = j == k.lat().d;
      ops_->blur(k.lat(), j, src, dst, lp_, tk.b, tk.e, last ? dst : nullptr);
    });
    if (j == 0) zero_row_m(1);
  }
  // The local rows went to the table the last pass did not read: it holds the values, the other one receives
  // the next splat.
  for (auto& kp : terms_) {
    const int d = kp->lat().d;
    const int read_last = d % 2 == 0 ? 1 - kp->cur : kp->cur;
    kp->cur = read_last;
  }
}

void DenseCrf::initial_q(float* qp, Executor& ex) {
  ensure_unary();
  ex.parallel_for(n_, [&](int64_t b, int64_t e) {
    if (ops_->update(lp_, 0, nullptr, neg_u_.get(), b, e, qp, nullptr, labels_, n_)) return;
    for (int64_t p = b; p < e; ++p) {
      float* q = qp + p * lp_;
      const float* u = neg_u_.get() + p * lp_;
      for (int l = 0; l < lp_; ++l) q[l] = u[l];
      crf::softmax_inplace(lp_, q);
    }
  }, 4096);
}

void DenseCrf::iterate(float* qp, int iterations, Executor& ex, float* out_lm) {
  ensure_unary();
  if (iterations == 0) {
    if (out_lm) to_label_major(qp, out_lm, ex);
    return;
  }
  const int nk = (int)terms_.size();
  if (nk == 0) {  // no pairwise term: every step gives softmax(-U)
    initial_q(qp, ex);
    if (out_lm) to_label_major(qp, out_lm, ex);
    return;
  }
  PYSEG_PROFILE_CLOCK(prof, "iterate");
  if (qp)
    splat_all(qp, ex);
  else if (!out_lm)
    throw std::logic_error("iterate without qp (the rows already splatted) needs out_lm");
  std::vector<UpdateTerm> uks(nk);
  const Lattice& lat0 = terms_[0]->lat();
  PYSEG_PROFILE_TICK(prof, "first splat");
  for (int it = 0; it < iterations; ++it) {
    propagate_all(ex);
    PYSEG_PROFILE_TICK(prof, "blur");
    const bool last = it + 1 == iterations;
    for (int k = 0; k < nk; ++k) {
      PairwiseTerm& kk = *terms_[k];
      uks[k] = UpdateTerm{&kk.lat(), kk.vals(), last ? nullptr : kk.acc(),
                            crf::CompatView{kk.type, kk.w, kk.compat.data()}};
    }
    float* q_out = last && !out_lm ? qp : nullptr;
    float* lm = last ? out_lm : nullptr;
    // One pass over the pixels, chunk by chunk: slice, update and (but in the last step) the splat of the new
    // Q into the chunk's local rows for the next step.
    ex.run(lat0.nchunks, [&](int c) {
      const int64_t pb = lat0.chunk_begin[c], pe = lat0.chunk_begin[c + 1];
      if (!last)
        for (auto& kp : terms_) clear_chunk_rows(kp->lat(), c, lp_, kp->acc());
      if (ops_->update(lp_, nk, uks.data(), neg_u_.get(), pb, pe, q_out, lm, labels_, n_)) return;
      std::vector<float> msg((size_t)nk * lp_), q(lp_);
      std::vector<crf::CompatView> views(nk);
      for (int k = 0; k < nk; ++k) views[k] = uks[k].compat;
      for (int64_t p = pb; p < pe; ++p) {
        for (int k = 0; k < nk; ++k)
          slice_pixel(terms_[k]->lat(), p, uks[k].values, lp_, msg.data() + (size_t)k * lp_);
        crf::meanfield_pixel(lp_, neg_u_.get() + p * lp_, nk, msg.data(), lp_, views.data(), q.data());
        for (int k = 0; k < nk; ++k)
          if (uks[k].acc) splat_pixel(terms_[k]->lat(), p, q.data(), lp_, uks[k].acc);
        if (q_out) std::copy(q.begin(), q.end(), q_out + p * lp_);
        if (lm)
          for (int l = 0; l < labels_; ++l) lm[(int64_t)l * n_ + p] = q[l];
      }
    });
    PYSEG_PROFILE_TICK(prof, "update");
  }
}

void DenseCrf::to_label_major(const float* qp, float* out, Executor& ex) const {
  ex.parallel_for(n_, [&](int64_t b0, int64_t e0) {
    for (int64_t b = b0; b < e0; b += kBlock) {
      const int64_t e = std::min(e0, b + kBlock);
      for (int l = 0; l < labels_; ++l) {
        float* dst = out + (int64_t)l * n_;
        for (int64_t p = b; p < e; ++p) dst[p] = qp[p * lp_ + l];
      }
    }
  }, 16384);
}

void DenseCrf::from_label_major(const float* q, float* qp, Executor& ex) const {
  ex.parallel_for(n_, [&](int64_t b0, int64_t e0) {
    for (int64_t b = b0; b < e0; b += kBlock) {
      const int64_t e = std::min(e0, b + kBlock);
      for (int l = 0; l < lp_; ++l) {
        const float* src = q + (int64_t)l * n_;
        for (int64_t p = b; p < e; ++p) qp[p * lp_ + l] = l < labels_ ? src[p] : 0.0f;
      }
    }
  }, 16384);
}

void DenseCrf::inference(int iterations, float* out, Executor& ex) {
  if (iterations < 0) throw std::invalid_argument("iterations must be >= 0, got " + std::to_string(iterations));
  wvec<float> qp((size_t)n_ * lp_);
  initial_q(qp.data(), ex);
  iterate(qp.data(), iterations, ex, out);
}

void DenseCrf::start_inference(float* q_out, Executor& ex) {
  wvec<float> qp((size_t)n_ * lp_);
  initial_q(qp.data(), ex);
  to_label_major(qp.data(), q_out, ex);
}

void DenseCrf::step_inference(float* q, Executor& ex) {
  wvec<float> qp((size_t)n_ * lp_);
  from_label_major(q, qp.data(), ex);
  iterate(qp.data(), 1, ex);
  to_label_major(qp.data(), q, ex);
}

double DenseCrf::kl_divergence(const float* q, Executor& ex) {
  ensure_unary();
  wvec<float> qp((size_t)n_ * lp_);
  from_label_major(q, qp.data(), ex);
  const int nk = (int)terms_.size();
  if (nk > 0) filter_all(qp.data(), ex);
  const int nchunks = std::max(1, ex.threads());
  std::vector<double> part(nchunks, 0.0);
  ex.parallel_chunks(n_, nchunks, [&](int c, int64_t b, int64_t e) {
    std::vector<float> msg(lp_), acc(lp_);
    double s = 0.0;
    for (int64_t p = b; p < e; ++p) {
      const float* qq = qp.data() + p * lp_;
      const float* nu = neg_u_.get() + p * lp_;
      for (int l = 0; l < labels_; ++l) {
        s += (double)qq[l] * std::log(std::max(qq[l], 1e-20f));
        s += (double)(-nu[l]) * qq[l];
      }
      for (int k = 0; k < nk; ++k) {
        slice_pixel(terms_[k]->lat(), p, terms_[k]->vals(), lp_, msg.data());
        std::fill(acc.begin(), acc.end(), 0.0f);
        const crf::CompatView v{terms_[k]->type, terms_[k]->w, terms_[k]->compat.data()};
        crf::subtract_compat(lp_, v, msg.data(), acc.data());  // acc = -C(K q)
        for (int l = 0; l < labels_; ++l) s -= (double)qq[l] * acc[l];
      }
    }
    part[c] = s;
  });
  double kl = 0.0;
  for (double v : part) kl += v;
  return kl;
}

}  // namespace cpu
}  // namespace pyseg
