// Register-blocked filter and update ops for a compile-time padded label count LP (a multiple of 4): a
// row of labels stays in registers (Row<LP>, cpu/simd.h) for a whole slice or splat. Semantics as
// lattice_filter.cpp's generic splat_chunk/reduce_rows/blur_rows/slice_pixel and
// crf::meanfield_pixel.
// Included (after cpu/simd.h) inside an ISA namespace by ops_sse2.cpp / ops_avx2.cpp.

template <int LP>
void reduce_rows_v(const Lattice& lat, const float* __restrict acc, float* __restrict global, int64_t vb, int64_t ve) {
  using R = Row<LP>;
  const int32_t* __restrict gs = lat.gather_start.data();
  const int32_t* __restrict gr = lat.gather_rows.data();
  for (int64_t v = vb; v < ve; ++v) {
    R a = R::load(acc + (int64_t)gr[gs[v]] * LP);
    for (int32_t k = gs[v] + 1; k < gs[v + 1]; ++k) a.add(R::load(acc + (int64_t)gr[k] * LP));
    a.store(global + v * LP);
  }
}

template <int LP>
void blur_rows_v(const Lattice& lat, int j, const float* __restrict src, float* __restrict dst, int64_t vb,
                 int64_t ve, float* __restrict local) {
  using R = Row<LP>;
  const int32_t* __restrict nb = lat.nbr.data() + (size_t)j * lat.m * 2;
  const int32_t* __restrict gs = lat.gather_start.data();
  const int32_t* __restrict gr = lat.gather_rows.data();
  for (int64_t v = vb; v < ve; ++v) {
    R a = R::load(src + (int64_t)nb[2 * v] * LP);
    a.add(R::load(src + (int64_t)nb[2 * v + 1] * LP));
    R o = R::load(src + v * LP);
    o.fma(0.5f, a);
    if (!local) {
      o.store(dst + v * LP);
      continue;
    }
    for (int32_t q = gs[v]; q < gs[v + 1]; ++q) o.store(local + (int64_t)gr[q] * LP);
  }
}

// The fused mean-field step for pixels [pb, pe) of one chunk: slice every term, compatibility, unary and
// softmax, then the splat of the new Q for the next step. A block of kBlockPixels pixels goes through each
// phase in turn (energies term by term, softmax, splat term by term; an image's Gaussian and
// bilateral terms both at once): the loops are short and uniform (a compile-time number of vertices), and
// the long dependency chain of one pixel (slice sums, max, exp, sum, division) overlaps with the next
// pixels' instead of stalling the core.
constexpr int kBlockPixels = 16;
// The unary rows of the block kPrefetchPixels ahead are prefetched: a sequential stream, but the hardware's
// prefetch can fall behind among the slice's scattered loads (the distance measured: benchmarks/NOTES_cpu.md).
constexpr int kPrefetchPixels = 64;

// Prefetches the rows (of `width` elements) of pixels [p, p + kBlockPixels), as far as they are in [0, n).
template <class T>
inline void prefetch_pixels(const T* base, int width, int64_t p, int64_t n) {
  if (p >= n) return;
  const char* b = (const char*)(base + p * width);
  const char* e = (const char*)(base + std::min<int64_t>(n, p + kBlockPixels) * width);
  for (; b < e; b += 64) __builtin_prefetch(b);
}

// A pixel's vertex rows (its offsets), for a compile-time D1 read two at a time (one 64-bit load per pair: the
// update is bound by its load operations more than by the bytes it streams); for D1 = 0 (d + 1 at run time)
// read where they are.
template <int D1>
struct PixelRows {
  explicit PixelRows(const int32_t* __restrict p) {
    if constexpr (D1 == 0) {
      at = p;
    } else {
      for (int r = 0; r + 1 < D1; r += 2) {
        uint64_t v;
        std::memcpy(&v, p + r, sizeof(v));
        o[r] = (uint32_t)v;
        o[r + 1] = (uint32_t)(v >> 32);
      }
      if (D1 % 2) o[D1 - 1] = (uint32_t)p[D1 - 1];
    }
  }
  size_t operator[](int r) const {
    if constexpr (D1 == 0)
      return (uint32_t)at[r];
    else
      return o[r];
  }
  uint32_t o[D1 > 0 ? D1 : 1];
  const int32_t* at = nullptr;
};

// tb[i] = src[i] - C(slice of pixel p0 + i) for the term, i < nb (D1: vertices per pixel, 0 = run time);
// src is tb itself or the unary rows (the first term reads them directly: no copy of a cold stream).
template <int LP, int D1>
inline void energies_block(const UpdateTerm& k, int64_t p0, int nb, const float* src, float* tb) {
  using R = Row<LP>;
  const Lattice& lat = *k.lat;
  const int d1 = D1 > 0 ? D1 : lat.d + 1;
  const int32_t* __restrict off = lat.offsets.data() + p0 * d1;
  const float* __restrict w = lat.bary.data() + p0 * d1;
  const float* __restrict post = lat.folded ? nullptr : lat.post.data() + p0;
  const float* __restrict vals = k.values;
  const crf::CompatView c = k.compat;
  for (int i = 0; i < nb; ++i, off += d1, w += d1) {
    R m = R::zero();
    const PixelRows<D1> o(off);
    for (int r = 0; r < d1; ++r) m.fma_mem(w[r], vals + o[r] * LP);
    m.scale(post ? post[i] : lat.slice_scale);
    R t = R::load(src + i * LP);
    if (c.type == crf::COMPAT_POTTS) {
      t.fma(c.w, m);
    } else if (c.type == crf::COMPAT_DIAGONAL) {
      t.sub_mul_mem(c.data, m);
    } else {
      alignas(32) float mf[LP], tf[LP];
      m.store(mf);
      t.store(tf);
      for (int l = 0; l < LP; ++l) {
        const float* row = c.data + l * LP;
        float s = 0.0f;
        for (int jj = 0; jj < LP; ++jj) s += row[jj] * mf[jj];
        tf[l] -= s;
      }
      t = R::load(tf);
    }
    t.store(tb + i * LP);
  }
}

// energies_block for two Potts terms on folded lattices at once (D1a, D1b vertices per pixel): tb[i] = src[i]
// + wa alpha_a slice_a + wb alpha_b slice_b, the two slices' sums as two independent chains (more loads in
// flight), alpha in the compatibility weight (no product per pixel), one store per pixel.
template <int LP, int D1a, int D1b>
inline void energies_block_potts2(const UpdateTerm& ka, const UpdateTerm& kb, int64_t p0, int nb,
                                  const float* src, float* tb) {
  using R = Row<LP>;
  const Lattice& la = *ka.lat;
  const Lattice& lb = *kb.lat;
  const int32_t* __restrict offa = la.offsets.data() + p0 * D1a;
  const float* __restrict wa = la.bary.data() + p0 * D1a;
  const int32_t* __restrict offb = lb.offsets.data() + p0 * D1b;
  const float* __restrict wb = lb.bary.data() + p0 * D1b;
  const float* __restrict va = ka.values;
  const float* __restrict vb = kb.values;
  const float ca = ka.compat.w * la.slice_scale, cb = kb.compat.w * lb.slice_scale;
  for (int i = 0; i < nb; ++i, offa += D1a, wa += D1a, offb += D1b, wb += D1b) {
    R ma = R::zero(), mb = R::zero();
    const PixelRows<D1a> oa(offa);
    const PixelRows<D1b> ob(offb);
    for (int r = 0; r < D1a; ++r) {
      ma.fma_mem(wa[r], va + oa[r] * LP);
      mb.fma_mem(wb[r], vb + ob[r] * LP);
    }
    for (int r = D1a; r < D1b; ++r) mb.fma_mem(wb[r], vb + ob[r] * LP);
    R t = R::load(src + i * LP);
    t.fma(ca, ma);
    t.fma(cb, mb);
    t.store(tb + i * LP);
  }
}

// The term's acc rows += bary * pre * q for pixels p0 + i, i < nb (q: rows of LP at tb; pre is in bary where
// the lattice is folded), in pixel order (D1: vertices per pixel, 0 = run time). Rows are not kept in
// registers across pixels: that spills (benchmarks/NOTES_cpu.md).
template <int LP, int D1>
inline void splat_block(const UpdateTerm& k, int64_t p0, int nb, const float* __restrict tb) {
  using R = Row<LP>;
  const Lattice& lat = *k.lat;
  const int d1 = D1 > 0 ? D1 : lat.d + 1;
  const int32_t* __restrict off = lat.offsets.data() + p0 * d1;
  const float* __restrict w = lat.bary.data() + p0 * d1;
  const float* __restrict pre = lat.folded ? nullptr : lat.pre.data() + p0;
  float* __restrict acc = k.acc;
  for (int i = 0; i < nb; ++i, off += d1, w += d1) {
    const R s = pre ? R::load(tb + i * LP).scaled(pre[i]) : R::load(tb + i * LP);
    const PixelRows<D1> o(off);
    for (int r = 0; r < d1; ++r) {
      float* row = acc + o[r] * LP;
      R a = R::load(row);
      a.fma(w[r], s);
      a.store(row);
    }
  }
}

// splat_block for two terms on folded lattices at once (D1a, D1b vertices per pixel): each pixel's row is
// read once and the two terms' read-modify-writes interleave (independent rows). The same operations as
// splat_block for term a then term b, row by row in the same order within each term (bitwise the same).
template <int LP, int D1a, int D1b>
inline void splat_block2(const UpdateTerm& ka, const UpdateTerm& kb, int64_t p0, int nb,
                         const float* __restrict tb) {
  using R = Row<LP>;
  const Lattice& la = *ka.lat;
  const Lattice& lb = *kb.lat;
  const int32_t* __restrict offa = la.offsets.data() + p0 * D1a;
  const float* __restrict wa = la.bary.data() + p0 * D1a;
  const int32_t* __restrict offb = lb.offsets.data() + p0 * D1b;
  const float* __restrict wb = lb.bary.data() + p0 * D1b;
  float* __restrict acca = ka.acc;
  float* __restrict accb = kb.acc;
  for (int i = 0; i < nb; ++i, offa += D1a, wa += D1a, offb += D1b, wb += D1b) {
    const R q = R::load(tb + i * LP);
    const PixelRows<D1a> oa(offa);
    const PixelRows<D1b> ob(offb);
    for (int r = 0; r < D1b; ++r) {
      if (r < D1a) {
        float* row = acca + oa[r] * LP;
        R a = R::load(row);
        a.fma(wa[r], q);
        a.store(row);
      }
      float* row = accb + ob[r] * LP;
      R a = R::load(row);
      a.fma(wb[r], q);
      a.store(row);
    }
  }
}

// splat_block with the image dimensions (d = 2, 5) compiled in.
template <int LP>
inline void splat_rows_of(const UpdateTerm& k, int64_t p0, int nb, const float* __restrict rows) {
  switch (k.lat->d) {
    case 2: splat_block<LP, 3>(k, p0, nb, rows); break;
    case 5: splat_block<LP, 6>(k, p0, nb, rows); break;
    default: splat_block<LP, 0>(k, p0, nb, rows); break;
  }
}

// acc local rows of chunk c <- scatter of q (n x lp) times pre (the first splat of an inference).
template <int LP>
void splat_chunk_v(const Lattice& lat, int c, const float* __restrict q, float* __restrict acc) {
  clear_chunk_rows(lat, c, LP, acc);
  const int64_t pb = lat.chunk_begin[c];
  splat_rows_of<LP>(UpdateTerm{&lat, nullptr, acc, crf::CompatView{}}, pb, (int)(lat.chunk_begin[c + 1] - pb),
                    q + pb * LP);
}

template <int LP>
void update_pixels_v(int nk, const UpdateTerm* ks, const float* __restrict neg_u, int64_t pb, int64_t pe,
                     float* __restrict q_out, float* __restrict out_lm, int labels, int64_t n) {
  using R = Row<LP>;
  alignas(64) float tb[kBlockPixels * LP];
  bool any_acc = false;
  for (int k = 0; k < nk; ++k) any_acc |= ks[k].acc != nullptr;
  // The image case (a Gaussian term, then a bilateral one, both Potts, symmetric normalisation): both slices
  // in one loop, and both splats.
  const bool potts_gb = nk == 2 && ks[0].lat->d == 2 && ks[1].lat->d == 5 && ks[0].compat.type == crf::COMPAT_POTTS &&
                        ks[1].compat.type == crf::COMPAT_POTTS && ks[0].lat->folded && ks[1].lat->folded;
  for (int64_t p0 = pb; p0 < pe; p0 += kBlockPixels) {
    const int nb = (int)std::min<int64_t>(kBlockPixels, pe - p0);
    prefetch_pixels(neg_u, LP, p0 + kPrefetchPixels, n);
    // Energies: -U - sum_k C_k(slice_k).
    if (nk == 0) std::memcpy(tb, neg_u + p0 * LP, sizeof(float) * LP * nb);
    if (potts_gb) {
      energies_block_potts2<LP, 3, 6>(ks[0], ks[1], p0, nb, neg_u + p0 * LP, tb);
    } else {
      for (int k = 0; k < nk; ++k) {
        const float* src = k == 0 ? neg_u + p0 * LP : tb;
        switch (ks[k].lat->d) {
          case 2: energies_block<LP, 3>(ks[k], p0, nb, src, tb); break;
          case 5: energies_block<LP, 6>(ks[k], p0, nb, src, tb); break;
          default: energies_block<LP, 0>(ks[k], p0, nb, src, tb); break;
        }
      }
    }
    // Softmax: VW pixels at a time across pixels, the rest row by row. When the new Q only goes to the
    // label-major output (the last step of an inference), full groups write it there directly.
    const bool lm_only = out_lm && !q_out && !any_acc;
    int i0 = 0;
    for (; i0 + VW <= nb; i0 += VW)
      softmax_rows_across<LP>(tb + i0 * LP, labels, lm_only ? out_lm + p0 + i0 : nullptr, n);
    for (int i = i0; i < nb; ++i) {
      R t = R::load(tb + i * LP);
      const float sum = t.exp_sub_sum(t.max_all());
      t.scale(1.0f / sum);
      t.store(tb + i * LP);
    }
    if (lm_only) {
      for (int l = 0; l < labels; ++l)
        for (int i = i0; i < nb; ++i) out_lm[(int64_t)l * n + p0 + i] = tb[i * LP + l];
      continue;
    }
    // Splat of the new Q, term by term (the image case's two terms together).
    if (potts_gb && ks[0].acc && ks[1].acc) {
      splat_block2<LP, 3, 6>(ks[0], ks[1], p0, nb, tb);
    } else {
      for (int k = 0; k < nk; ++k)
        if (ks[k].acc) splat_rows_of<LP>(ks[k], p0, nb, tb);
    }
    if (q_out) std::memcpy(q_out + p0 * LP, tb, sizeof(float) * LP * nb);
    if (out_lm)
      for (int l = 0; l < labels; ++l)
        for (int i = 0; i < nb; ++i) out_lm[(int64_t)l * n + p0 + i] = tb[i * LP + l];
  }
}

// Unary rows from probabilities for pixels [b, e), any lp: neg_u (n x lp) = log(clip(p)), padding lanes
// kPadEnergy; q0 ((e - b) x lp, row p - b for pixel p; optional) = clip(p) / sum of clip(p) (softmax(-U));
// clip(p) = min(max(p, clip), 1). prob is label-major (labels, n). Blocks of pixels, vectorised along them.
// Returns false when a pixel has a probability that is negative or not finite, or probabilities whose sum is
// off 1 by more than sum_tol (rows may then be partly written).
inline bool unary_rows_any(int lp, const float* __restrict prob, int64_t n, int labels, int64_t b, int64_t e,
                           float clip, float sum_tol, float* __restrict neg_u, float* __restrict q0) {
  constexpr int64_t kB = 256;
  alignas(64) float sums[kB], csum[kB], logs[kB], clipped[kB];
  for (int64_t b0 = b; b0 < e; b0 += kB) {
    const int64_t cnt = std::min(e, b0 + kB) - b0;
    float* ur = neg_u + b0 * lp;
    float* qr = q0 ? q0 + (b0 - b) * lp : nullptr;
    for (int64_t i = 0; i < cnt; ++i)
      for (int l = labels; l < lp; ++l) {
        ur[i * lp + l] = crf::kPadEnergy;
        if (qr) qr[i * lp + l] = 0.0f;
      }
    for (int64_t i = 0; i < cnt; ++i) sums[i] = csum[i] = 0.0f;
    int bad = 0;
    for (int l = 0; l < labels; ++l) {
      const float* src = prob + (int64_t)l * n + b0;
      for (int64_t i = 0; i < cnt; ++i) {
        const float v = src[i];
        bad |= (int)!((v >= 0.0f) & (v <= 3.4e38f));  // negative, NaN or inf (branch-free: vectorises)
        sums[i] += v;
        const float lo = v < clip ? clip : v;
        const float c = lo > 1.0f ? 1.0f : lo;
        clipped[i] = c;
        csum[i] += c;
      }
      int64_t i = 0;
      for (; i + VW <= cnt; i += VW) vstore(logs + i, vlog_pos(vload<vw_t>(clipped + i)));
      for (; i < cnt; ++i) logs[i] = crf::fast_log_pos(clipped[i]);
      for (i = 0; i < cnt; ++i) ur[i * lp + l] = logs[i];
      if (qr)
        for (i = 0; i < cnt; ++i) qr[i * lp + l] = clipped[i];
    }
    for (int64_t i = 0; i < cnt; ++i) bad |= !(std::fabs(sums[i] - 1.0f) <= sum_tol);
    if (bad) return false;
    if (qr)
      for (int64_t i = 0; i < cnt; ++i) {
        const float inv = 1.0f / csum[i];
        for (int l = 0; l < labels; ++l) qr[i * lp + l] *= inv;
      }
  }
  return true;
}

// unary_rows_any for a compile-time LP: VW pixels at a time, the rows written through in-register transposes.
template <int LP>
bool unary_rows_v(const float* __restrict prob, int64_t n, int labels, int64_t b, int64_t e, float clip,
                  float sum_tol, float* __restrict neg_u, float* __restrict q0) {
  const vw_t vclip = vset1<vw_t>(clip), one = vset1<vw_t>(1.0f), big = vset1<vw_t>(3.4e38f);
  const vw_t pad = vset1<vw_t>(crf::kPadEnergy), tol = vset1<vw_t>(sum_tol);
  vwi_t bad = vwi_t{};
  int64_t p = b;
  for (; p + VW <= e; p += VW) {
    vw_t lg[LP], qv[LP];
    vw_t sum = vw_t{}, csum = vw_t{};
    for (int l = 0; l < labels; ++l) {
      const vw_t v = vload<vw_t>(prob + (int64_t)l * n + p);
      bad |= ~((v >= 0.0f) & (v <= big));  // negative, NaN or inf
      sum += v;
      const vw_t lo = v < vclip ? vclip : v;
      const vw_t c = lo > one ? one : lo;
      qv[l] = c;
      csum += c;
      lg[l] = vlog_pos(c);
    }
    const vw_t dev = sum - 1.0f;
    bad |= ~((dev <= tol) & (dev >= -tol));
    for (int l = labels; l < LP; ++l) lg[l] = pad;
    rows_from_labels<LP>(lg, neg_u + p * LP);
    if (q0) {
      const vw_t inv = 1.0f / csum;
      for (int l = 0; l < labels; ++l) qv[l] *= inv;
      for (int l = labels; l < LP; ++l) qv[l] = vw_t{};
      rows_from_labels<LP>(qv, q0 + (p - b) * LP);
    }
  }
  bool ok = true;
  for (int i = 0; i < VW; ++i) ok &= bad[i] == 0;
  if (p < e) ok &= unary_rows_any(LP, prob, n, labels, p, e, clip, sum_tol, neg_u, q0 ? q0 + (p - b) * LP : nullptr);
  return ok;
}
