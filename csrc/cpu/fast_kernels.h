// Register-blocked filter and update kernels for a compile-time padded label count LP = VW * NV: a vertex's
// or pixel's labels stay in NV vector registers for a whole gather, so nothing is re-read or re-written
// per entry. Semantics as lattice_cpu.cpp's generic splat_rows/blur_rows/slice_pixel and
// crf::meanfield_pixel.
// Included (after cpu/simd.h) inside an ISA namespace by kernels_sse.cpp / kernels_avx2.cpp.

template <int NV>
void splat_rows_v(const Lattice& lat, const float* __restrict q, float* __restrict values, int64_t vb, int64_t ve) {
  constexpr int LP = VW * NV;
  const CsrEntry* __restrict csr = lat.csr.data();
  const int64_t* __restrict st = lat.csr_start.data();
  for (int64_t v = vb; v < ve; ++v) {
    v4f acc[NV];
    for (int i = 0; i < NV; ++i) acc[i] = v4_set1(0.0f);
    const int64_t e = st[v + 1];
    for (int64_t k = st[v]; k < e; ++k) {
      __builtin_prefetch(q + (int64_t)csr[k + 12].pixel * LP);  // csr has 16 padding entries at the end
      const v4f w = v4_set1(csr[k].w);
      const float* src = q + (int64_t)csr[k].pixel * LP;
      for (int i = 0; i < NV; ++i) acc[i] += w * v4_load(src + VW * i);
    }
    float* out = values + v * LP;
    for (int i = 0; i < NV; ++i) v4_store(out + VW * i, acc[i]);
  }
}

template <int NV>
void blur_rows_v(const Lattice& lat, int j, const float* __restrict src, float* __restrict dst, int64_t vb,
                 int64_t ve) {
  constexpr int LP = VW * NV;
  const int32_t* __restrict nb = lat.nbr.data() + (size_t)j * lat.m * 2;
  const v4f half = v4_set1(0.5f);
  for (int64_t v = vb; v < ve; ++v) {
    const float* a = src + (int64_t)nb[2 * v] * LP;
    const float* b = src + (int64_t)nb[2 * v + 1] * LP;
    const float* o = src + v * LP;
    float* out = dst + v * LP;
    for (int i = 0; i < NV; ++i)
      v4_store(out + VW * i, v4_load(o + VW * i) + half * (v4_load(a + VW * i) + v4_load(b + VW * i)));
  }
}

// Slice of pixel p into registers (post-normalisation and alpha applied).
template <int NV>
inline void slice_v(const Lattice& lat, int64_t p, const float* __restrict values, v4f* acc) {
  constexpr int LP = VW * NV;
  const int d1 = lat.d + 1;
  const int32_t* off = lat.offsets.data() + p * d1;
  const float* w = lat.bary.data() + p * d1;
  for (int i = 0; i < NV; ++i) acc[i] = v4_set1(0.0f);
  for (int r = 0; r < d1; ++r) {
    const float* s = values + (int64_t)off[r] * LP;
    const v4f wr = v4_set1(w[r]);
    for (int i = 0; i < NV; ++i) acc[i] += wr * v4_load(s + VW * i);
  }
  const v4f post = v4_set1(lat.post[p]);
  for (int i = 0; i < NV; ++i) acc[i] *= post;
}

// q[p] <- softmax(-U[p] - sum_k C_k(slice_k(p))) for p in [pb, pe). With out_lm set, the result goes to
// out_lm (labels, n) instead (the last iteration writes the caller's layout directly).
template <int NV>
void update_pixels_v(int nk, const UpdateKernel* ks, const float* __restrict neg_u, float* __restrict q, int64_t pb,
                     int64_t pe, float* __restrict out_lm = nullptr, int labels = 0, int64_t n = 0) {
  constexpr int LP = VW * NV;
  for (int64_t p = pb; p < pe; ++p) {
    v4f t[NV];
    const float* nu = neg_u + p * LP;
    for (int i = 0; i < NV; ++i) t[i] = v4_load(nu + VW * i);
    for (int k = 0; k < nk; ++k) {
      v4f m[NV];
      slice_v<NV>(*ks[k].lat, p, ks[k].values, m);
      const crf::CompatView& c = ks[k].compat;
      if (c.type == crf::COMPAT_POTTS) {
        const v4f w = v4_set1(c.w);
        for (int i = 0; i < NV; ++i) t[i] += w * m[i];
      } else if (c.type == crf::COMPAT_DIAGONAL) {
        for (int i = 0; i < NV; ++i) t[i] -= v4_load(c.data + VW * i) * m[i];
      } else {
        float mf[LP], tf[LP];
        for (int i = 0; i < NV; ++i) {
          v4_store(mf + VW * i, m[i]);
          v4_store(tf + VW * i, t[i]);
        }
        for (int l = 0; l < LP; ++l) {
          const float* row = c.data + l * LP;
          float s = 0.0f;
          for (int jj = 0; jj < LP; ++jj) s += row[jj] * mf[jj];
          tf[l] -= s;
        }
        for (int i = 0; i < NV; ++i) t[i] = v4_load(tf + VW * i);
      }
    }
    v4f mx = t[0];
    for (int i = 1; i < NV; ++i) mx = v4_max(mx, t[i]);
    const v4f vmx = v4_allmax(mx);
    v4f s = v4_set1(0.0f);
    for (int i = 0; i < NV; ++i) {
      t[i] = v4_exp_nonpos(t[i] - vmx);
      s += t[i];
    }
    const v4f inv = 1.0f / v4_allsum(s);
    if (out_lm) {
      float tf[LP];
      for (int i = 0; i < NV; ++i) v4_store(tf + VW * i, t[i] * inv);
      for (int l = 0; l < labels; ++l) out_lm[(int64_t)l * n + p] = tf[l];
    } else {
      float* out = q + p * LP;
      for (int i = 0; i < NV; ++i) v4_store(out + VW * i, t[i] * inv);
    }
  }
}

