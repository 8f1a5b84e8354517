// bigsc/cpu_fast.h continues bigs.cu (included after the layers, before the Cpu device): the fast
// CPU twins of the layers' reference loops: the packed GEMM, vectorised GELU and exp, the threaded S4D
// kernel, the Toeplitz and FFT SSM convolutions, vectorised cross-entropy. Each has the contract of
// its *_cpu reference in bigs.cu, and test_cpu_kernels checks each against it.

#pragma once

// ---------------------------------------------------------------------------
// Dense, the fast CPU path: packed, cache-blocked, register-tiled products
// ---------------------------------------------------------------------------
// The loops above are the readable reference; the model runs these. One
// routine, gemm_cpu, computes C (m, n) = or += A (m, k) B (k, n) for operands
// given by strides, so a dense layer's three products are three calls:
//   forward  out  (rows, out) = inp (rows, in) W^T (in, out)  + bias
//   backward dinp (rows, in) += dout (rows, out) W (out, in)
//            dW   (out, in)  += dout^T (out, rows) inp (rows, in)
// It is the layered scheme of Goto and BLIS: a KC-deep slice of B is copied
// ("packed") into kNR-wide column panels and a slice of A into kMR-tall row
// panels, each contiguous in the order the micro-kernel reads it; the
// micro-kernel holds a kMR x kNR tile of C in vector registers and adds one
// rank-1 update (a row of A times a row of B) per k.
// Determinism: every element of C is summed by one thread, in k order, KC
// terms at a time, whatever the thread count; so results are bit-identical
// from run to run and for any number of threads (never across instruction
// sets: the tile shape differs).

// A thin vector layer, so the kernels below read the same for every target.
#if defined(__AVX512F__)
using VecF = __m512;
constexpr int kVecW = 16;  // floats per vector
constexpr int kMR = 12;    // 24 accumulators + 2 B vectors + 1 broadcast of 32 registers
static inline VecF vf_load(const float* p) { return _mm512_loadu_ps(p); }
static inline void vf_store(float* p, VecF v) { _mm512_storeu_ps(p, v); }
static inline VecF vf_set1(float x) { return _mm512_set1_ps(x); }
static inline VecF vf_add(VecF a, VecF b) { return _mm512_add_ps(a, b); }
static inline VecF vf_mul(VecF a, VecF b) { return _mm512_mul_ps(a, b); }
static inline VecF vf_fma(VecF a, VecF b, VecF c) { return _mm512_fmadd_ps(a, b, c); }
#elif defined(__AVX2__) && defined(__FMA__)
using VecF = __m256;
constexpr int kVecW = 8;
constexpr int kMR = 6;  // 12 accumulators + 2 B vectors + 1 broadcast of 16 registers
static inline VecF vf_load(const float* p) { return _mm256_loadu_ps(p); }
static inline void vf_store(float* p, VecF v) { _mm256_storeu_ps(p, v); }
static inline VecF vf_set1(float x) { return _mm256_set1_ps(x); }
static inline VecF vf_add(VecF a, VecF b) { return _mm256_add_ps(a, b); }
static inline VecF vf_mul(VecF a, VecF b) { return _mm256_mul_ps(a, b); }
static inline VecF vf_fma(VecF a, VecF b, VecF c) { return _mm256_fmadd_ps(a, b, c); }
#else  // plain C++: scalars the compiler may vectorise as it can
using VecF = float;
constexpr int kVecW = 1;
constexpr int kMR = 4;
static inline VecF vf_load(const float* p) { return *p; }
static inline void vf_store(float* p, VecF v) { *p = v; }
static inline VecF vf_set1(float x) { return x; }
static inline VecF vf_add(VecF a, VecF b) { return a + b; }
static inline VecF vf_mul(VecF a, VecF b) { return a * b; }
static inline VecF vf_fma(VecF a, VecF b, VecF c) { return a * b + c; }
#endif
constexpr int kNV = kVecW > 1 ? 2 : 4;  // vectors per tile row
constexpr int kNR = kNV * kVecW;        // tile columns
// Blocking: an A block (kMC x kKC, 144 KB at 12 x 12) stays in L2 while the
// B micro-panels (kKC x kNR, 32 KB at kNR 32) stream through L1; B is packed
// once per kNC columns and shared by all threads.
constexpr int kKC = 256, kMC = 12 * kMR, kNC = 2048;

// Whether A is known to be zero on one side of its diagonal (the Toeplitz
// matrices of the SSM convolution): those terms are skipped, which changes
// no sum, since they would add exact zeros.
enum class Band { Full, Lower, Upper };  // Lower: A(i, p) = 0 for p > i; Upper: for p < i

// The threads a parallel region started here would get: 1 inside one
// already (the fast kernels never nest).
static int omp_threads() {
#ifdef _OPENMP
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

// Grow-only scratch, 64-byte aligned, one per thread (OpenMP's threads live
// as long as the program, so nothing is allocated once the sizes are known).
static float* gemm_scratch(std::vector<float>& buf, size_t n) {
  if (buf.size() < n + 16) buf.resize(n + 16);
  return (float*)(((uintptr_t)buf.data() + 63) & ~(uintptr_t)63);
}

// A (m, k), element (i, p) at a[i * rs + p * cs] -> row panels of kMR rows:
// ap[(i / kMR) * kc * kMR + p * kMR + i % kMR], rows past m zero.
static void gemm_pack_a(float* ap, const float* a, ptrdiff_t rs, ptrdiff_t cs, int m, int kc) {
  for (int i0 = 0; i0 < m; i0 += kMR, ap += (size_t)kc * kMR) {
    int mr = std::min(kMR, m - i0);
    if (cs == 1) {  // rows contiguous: read each row along k
      for (int i = 0; i < mr; i++) {
        const float* src = a + (i0 + i) * rs;
        for (int p = 0; p < kc; p++) ap[p * kMR + i] = src[p];
      }
    } else {  // columns contiguous (or a Toeplitz view): read each column along i
      for (int p = 0; p < kc; p++) {
        const float* src = a + i0 * rs + p * cs;
        for (int i = 0; i < mr; i++) ap[p * kMR + i] = src[i * rs];
      }
    }
    for (int i = mr; i < kMR; i++)
      for (int p = 0; p < kc; p++) ap[p * kMR + i] = 0.0f;
  }
}

// B (k, n), element (p, j) at b[p * rs + j * cs] -> column panels of kNR:
// bp[(j / kNR) * kc * kNR + p * kNR + j % kNR], columns past n zero.
static void gemm_pack_b(float* bp, const float* b, ptrdiff_t rs, ptrdiff_t cs, int n, int kc, int j0) {
  int nr = std::min(kNR, n - j0);
  if (cs == 1) {
    for (int p = 0; p < kc; p++) {
      const float* src = b + p * rs + j0;
      for (int j = 0; j < nr; j++) bp[p * kNR + j] = src[j];
      for (int j = nr; j < kNR; j++) bp[p * kNR + j] = 0.0f;
    }
  } else {
    for (int j = 0; j < nr; j++) {
      const float* src = b + (j0 + j) * cs;
      for (int p = 0; p < kc; p++) bp[p * kNR + j] = src[p * rs];
    }
    for (int j = nr; j < kNR; j++)
      for (int p = 0; p < kc; p++) bp[p * kNR + j] = 0.0f;
  }
}

// The micro-kernel: the (mr, nr) corner of the kc-term product of one A
// panel (kMR values per k, the next k's at a + as) and one B panel (kNR
// values per k, the next at b + bs), stored to c (row stride ldc) as
// c = acc + bias (bias may be null) or, with add, c = c + acc. A packed
// panel has as = kMR, bs = kNR; an operand already laid out that way in
// memory (A contiguous along i, B along j) is read in place with its own
// stride instead, which saves the copy.
static inline void gemm_micro(int kc, const float* a, ptrdiff_t as, const float* b, ptrdiff_t bs, float* c,
                              size_t ldc, int mr, int nr, bool add, const float* bias) {
  VecF acc[kMR][kNV];
  for (int i = 0; i < kMR; i++)
    for (int v = 0; v < kNV; v++) acc[i][v] = vf_set1(0.0f);
  for (int p = 0; p < kc; p++, a += as, b += bs) {
    VecF bv[kNV];
    for (int v = 0; v < kNV; v++) bv[v] = vf_load(b + v * kVecW);
    for (int i = 0; i < kMR; i++) {
      VecF av = vf_set1(a[i]);
      for (int v = 0; v < kNV; v++) acc[i][v] = vf_fma(av, bv[v], acc[i][v]);
    }
  }
  if (mr == kMR && nr == kNR) {
    for (int i = 0; i < kMR; i++)
      for (int v = 0; v < kNV; v++) {
        float* cp = c + i * ldc + v * kVecW;
        VecF r = add ? vf_add(vf_load(cp), acc[i][v]) : bias ? vf_add(acc[i][v], vf_load(bias + v * kVecW)) : acc[i][v];
        vf_store(cp, r);
      }
    return;
  }
  alignas(64) float tile[kMR * kNR];  // an edge tile: through memory, the same sums
  for (int i = 0; i < kMR; i++)
    for (int v = 0; v < kNV; v++) vf_store(tile + i * kNR + v * kVecW, acc[i][v]);
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nr; j++) {
      float t = tile[i * kNR + j];
      c[i * ldc + j] = add ? c[i * ldc + j] + t : bias ? t + bias[j] : t;
    }
}

// C (m, n, row stride ldc) = A B + bias (bias (n) may be null), or with add
// C += A B. A's element (i, p) is a[i * ars + p * acs], B's (p, j) is
// b[p * brs + j * bcs]. Threads share each packed B panel and split the
// rows into A blocks, and also the B panel's columns when there are fewer
// blocks than threads. Whole panels of an A with ars = 1 or a B with
// bcs = 1 are read in place; only their partial edge panels are packed.
static void gemm_cpu(float* c, size_t ldc, const float* a, ptrdiff_t ars, ptrdiff_t acs, const float* b, ptrdiff_t brs,
                     ptrdiff_t bcs, int m, int n, int k, const float* bias, bool add, Band band = Band::Full) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!add)
      for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) c[i * ldc + j] = bias ? bias[j] : 0.0f;
    return;
  }
  const int threads = omp_threads();
  // Rows per A block: at most kMC, fewer so that every thread gets a block.
  int mc = std::min(kMC, (m + threads - 1) / threads);
  mc = (mc + kMR - 1) / kMR * kMR;
  const int mblocks = (m + mc - 1) / mc;
  const bool a_direct = ars == 1, b_direct = bcs == 1;
  // A B that is not read in place is packed whole (all k) for each column
  // block, so the threads meet at a barrier once per block rather than at
  // every k slice: on a busy machine each barrier can cost a time slice.
  static thread_local std::vector<float> bp_mem;
  float* bp = b_direct ? nullptr : gemm_scratch(bp_mem, (size_t)k * ((std::min(n, kNC) + kNR - 1) / kNR * kNR));
#pragma omp parallel if (threads > 1)
  {
    static thread_local std::vector<float> ap_mem, ep_mem;
    float* ap = gemm_scratch(ap_mem, (size_t)kKC * mc);
    float* ep = gemm_scratch(ep_mem, (size_t)kKC * kNR);  // a partial edge panel of an in-place B
    for (int jc = 0; jc < n; jc += kNC) {
      const int nc = std::min(kNC, n - jc), npanels = (nc + kNR - 1) / kNR;
      const int nsplit = std::max(1, std::min(npanels, threads / mblocks));
      if (!b_direct) {
#pragma omp for schedule(static)
        for (int jp = 0; jp < npanels; jp++) gemm_pack_b(bp + (size_t)jp * k * kNR, b, brs, bcs, n, k, jc + jp * kNR);
      }
      for (int pc = 0; pc < k; pc += kKC) {
        const int kc = std::min(kKC, k - pc);
        const bool acc_c = add || pc > 0;  // later slices add to what the first stored
        // nowait: a static schedule gives each thread the same tiles in every
        // slice, so a tile's slices run in order on one thread.
#pragma omp for schedule(static) collapse(2) nowait
        for (int ib = 0; ib < mblocks; ib++)
          for (int js = 0; js < nsplit; js++) {
            const int i0 = ib * mc, m_blk = std::min(mc, m - i0), m_full = a_direct ? m_blk / kMR * kMR : 0;
            if (m_full < m_blk)  // the panels not read in place
              gemm_pack_a(ap + (size_t)m_full * kc, a + (i0 + m_full) * ars + pc * acs, ars, acs, m_blk - m_full, kc);
            for (int jp = js * npanels / nsplit; jp < (js + 1) * npanels / nsplit; jp++) {
              const int j0 = jc + jp * kNR, nr = std::min(kNR, n - j0);
              const float* bpan = bp + (size_t)jp * k * kNR + (size_t)pc * kNR;
              ptrdiff_t bs = kNR;
              if (b_direct && nr == kNR) {
                bpan = b + pc * brs + j0, bs = brs;
              } else if (b_direct) {
                gemm_pack_b(ep, b + pc * brs, brs, bcs, n, kc, j0);
                bpan = ep;
              }
              for (int ir = 0; ir < m_blk; ir += kMR) {
                const bool a_here = ir < m_full;
                const float* apan = a_here ? a + (i0 + ir) * ars + pc * acs : ap + (size_t)ir * kc;
                const ptrdiff_t as = a_here ? acs : kMR;
                // The k range this tile needs: all of the slice, or the part
                // on A's non-zero side of the diagonal.
                const int row = i0 + ir;
                int kb = 0, ke = kc;
                if (band == Band::Lower) ke = std::max(0, std::min(kc, row + kMR - pc));
                if (band == Band::Upper) kb = std::min(kc, std::max(0, row - pc));
                if (kb == ke && acc_c) continue;  // nothing to add
                gemm_micro(ke - kb, apan + kb * as, as, bpan + kb * bs, bs, c + (size_t)row * ldc + j0, ldc,
                           std::min(kMR, m_blk - ir), nr, acc_c, bias ? bias + j0 : nullptr);
              }
            }
          }
      }
      if (!b_direct && jc + kNC < n) {
#pragma omp barrier
      }
    }
  }
}

// The same contract as dense_forward_cpu: out (rows, out_dim) = inp W^T + b.
void dense_forward_fast(float* out, const float* inp, const float* w, const float* bias, int rows, int in_dim,
                        int out_dim) {
  gemm_cpu(out, out_dim, inp, in_dim, 1, w, 1, in_dim, rows, out_dim, in_dim, bias, false);
}

// Column sums, db (n) += sum over rows of d (rows, n): threads over column
// strips, each column summed down the rows in order (the reference's order).
static void colsum_add_cpu(float* db, const float* d, int rows, int n) {
  constexpr int kStrip = 64;
#pragma omp parallel for schedule(static)
  for (int j0 = 0; j0 < n; j0 += kStrip) {
    const int w = std::min(kStrip, n - j0);
    float s[kStrip] = {};
    for (int r = 0; r < rows; r++) {
      const float* x = d + (size_t)r * n + j0;
#pragma omp simd
      for (int j = 0; j < w; j++) s[j] += x[j];
    }
    for (int j = 0; j < w; j++) db[j0 + j] += s[j];
  }
}

// The same contract as dense_backward_cpu: dinp (if not null), dw, db (if
// not null) +=.
void dense_backward_fast(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                         int rows, int in_dim, int out_dim) {
  if (dinp) gemm_cpu(dinp, in_dim, dout, out_dim, 1, w, in_dim, 1, rows, in_dim, out_dim, nullptr, true);
  gemm_cpu(dw, in_dim, dout, 1, out_dim, inp, in_dim, 1, out_dim, in_dim, rows, nullptr, true);
  if (db) colsum_add_cpu(db, dout, rows, out_dim);
}

// ---------------------------------------------------------------------------
// GELU, the fast CPU path: vectorised
// ---------------------------------------------------------------------------
// The same formulas as gelu_tanh and gelu_tanh_grad, with exp computed on
// whole vectors (vf_exp) instead of one libm call per element, which was a
// sixth of a training step. Every element goes through the vector path (a
// tail is padded into a full vector), so an element's value never depends on
// how the threads split the range.

#if defined(__AVX512F__)
// The masked forms with every lane set: the same instructions, and they keep
// g++ 12 from warning about the unmasked forms' internal undefined operand.
constexpr __mmask16 kAll = 0xFFFF;
static inline VecF vf_sub(VecF a, VecF b) { return _mm512_sub_ps(a, b); }
static inline VecF vf_div(VecF a, VecF b) { return _mm512_div_ps(a, b); }
static inline VecF vf_clamp(VecF x, float lo, float hi) {
  VecF l = _mm512_set1_ps(lo), h = _mm512_set1_ps(hi);
  return _mm512_mask_min_ps(h, kAll, _mm512_mask_max_ps(l, kAll, x, l), h);
}
static inline VecF vf_round(VecF x) {
  return _mm512_mask_roundscale_ps(x, kAll, x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
static inline VecF vf_nan_or(VecF x, VecF y) {  // x where x is NaN, else y
  return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}
static inline VecF vf_pow2i(VecF n) {  // 2^n for integral n in [-126, 127]: the exponent field directly
  __m512i z = _mm512_setzero_si512();
  __m512i e = _mm512_add_epi32(_mm512_mask_cvtps_epi32(z, kAll, n), _mm512_set1_epi32(127));
  return _mm512_castsi512_ps(_mm512_mask_slli_epi32(z, kAll, e, 23));
}
#elif defined(__AVX2__) && defined(__FMA__)
static inline VecF vf_sub(VecF a, VecF b) { return _mm256_sub_ps(a, b); }
static inline VecF vf_div(VecF a, VecF b) { return _mm256_div_ps(a, b); }
static inline VecF vf_clamp(VecF x, float lo, float hi) {
  return _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(lo)), _mm256_set1_ps(hi));
}
static inline VecF vf_round(VecF x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline VecF vf_nan_or(VecF x, VecF y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); }
static inline VecF vf_pow2i(VecF n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
#else
static inline VecF vf_sub(VecF a, VecF b) { return a - b; }
static inline VecF vf_div(VecF a, VecF b) { return a / b; }
// NaN clamps to lo, as max_ps does (it returns its second operand).
static inline VecF vf_clamp(VecF x, float lo, float hi) { return std::min(std::max(lo, x), hi); }
static inline VecF vf_round(VecF x) { return std::nearbyint(x); }
static inline VecF vf_nan_or(VecF x, VecF y) { return x != x ? x : y; }
static inline VecF vf_pow2i(VecF n) { return std::ldexp(1.0f, (int)n); }
#endif

// e^x for x in [-87, 88] (clamped outside, where the callers need only
// "tiny" and "huge"; NaN stays NaN, so a model that overflowed says so in its
// loss instead of turning the NaN into a number, and the clamp keeps it out
// of the integer conversion): x = n ln2 + r with |r| <= ln2 / 2, ln2 in two parts so
// r is exact; e^r by the degree-7 Taylor-like minimax polynomial of Cephes'
// expf; then scaled by 2^n. Within 2 ulp of the correctly rounded result
// (test_cpu_kernels checks it against std::exp on a dense grid).
static inline VecF vf_exp(VecF x) {
  const VecF in = x;
  x = vf_clamp(x, -87.0f, 88.0f);
  VecF n = vf_round(vf_mul(x, vf_set1(1.44269504088896341f)));
  VecF r = vf_fma(n, vf_set1(-0.693359375f), x);
  r = vf_fma(n, vf_set1(2.12194440e-4f), r);
  VecF p = vf_set1(1.9875691500e-4f);
  p = vf_fma(p, r, vf_set1(1.3981999507e-3f));
  p = vf_fma(p, r, vf_set1(8.3334519073e-3f));
  p = vf_fma(p, r, vf_set1(4.1665795894e-2f));
  p = vf_fma(p, r, vf_set1(1.6666665459e-1f));
  p = vf_fma(p, r, vf_set1(5.0000001201e-1f));
  VecF y = vf_fma(vf_mul(p, r), r, vf_add(r, vf_set1(1.0f)));
  return vf_nan_or(in, vf_mul(y, vf_pow2i(n)));
}

// gelu_tanh and its derivative at x, from one exp: th = 1 - 2 / (1 + e^2u).
static inline void vf_gelu_tanh(VecF x, VecF* y, VecF* dy) {
  const VecF k = vf_set1(0.7978845608028654f), one = vf_set1(1.0f), half = vf_set1(0.5f);
  VecF x2 = vf_mul(x, x);
  VecF u = vf_mul(k, vf_fma(vf_mul(vf_set1(0.044715f), x2), x, x));
  VecF th = vf_sub(one, vf_div(vf_set1(2.0f), vf_add(one, vf_exp(vf_add(u, u)))));
  if (y) *y = vf_mul(vf_mul(half, x), vf_add(one, th));
  if (dy) {
    VecF d1 = vf_mul(half, vf_add(one, th));
    VecF d2 =
        vf_mul(vf_mul(vf_mul(half, x), vf_sub(one, vf_mul(th, th))), vf_mul(k, vf_fma(vf_set1(0.134145f), x2, one)));
    *dy = vf_add(d1, d2);
  }
}

// Runs body(in, out) on every kVecW-wide slice of [0, n) of NI inputs and
// NO outputs (in[q], out[q] point at the slice), threads over the slices;
// a last partial slice goes through a zero-padded copy.
template <int NI, int NO, class Body>
static void vf_map(size_t n, const float* const (&in)[NI], float* const (&out)[NO], Body body) {
  const size_t full = n / kVecW * kVecW;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < full; i += kVecW) {
    const float* a[NI];
    float* o[NO];
    for (int q = 0; q < NI; q++) a[q] = in[q] + i;
    for (int q = 0; q < NO; q++) o[q] = out[q] + i;
    body(a, o);
  }
  if (full == n) return;
  alignas(64) float ti[NI][kVecW] = {}, to[NO][kVecW];
  const float* a[NI];
  float* o[NO];
  for (int q = 0; q < NI; q++) std::copy(in[q] + full, in[q] + n, ti[q]), a[q] = ti[q];
  for (int q = 0; q < NO; q++) o[q] = to[q];
  body(a, o);
  for (int q = 0; q < NO; q++) std::copy(to[q], to[q] + (n - full), out[q] + full);
}

// The same contract as activation_forward_cpu (GELU-tanh vectorised; the
// head's erf GELU and the pooler's tanh are small and stay on the reference).
void activation_forward_fast(float* out, const float* inp, size_t n, Act act) {  // out =
  if (act != Act::GeluTanh) return activation_forward_cpu(out, inp, n, act);
  vf_map<1, 1>(n, {inp}, {out}, [](const float* const* a, float* const* o) {
    VecF y;
    vf_gelu_tanh(vf_load(a[0]), &y, nullptr);
    vf_store(o[0], y);
  });
}

// The same contract as activation_backward_cpu: dinp = dout * act'(inp).
void activation_backward_fast(float* dinp, const float* dout, const float* inp, size_t n, Act act) {
  if (act != Act::GeluTanh) return activation_backward_cpu(dinp, dout, inp, n, act);
  vf_map<2, 1>(n, {dout, inp}, {dinp}, [](const float* const* a, float* const* o) {
    VecF dy;
    vf_gelu_tanh(vf_load(a[1]), nullptr, &dy);
    vf_store(o[0], vf_mul(vf_load(a[0]), dy));
  });
}

// ---------------------------------------------------------------------------
// S4D kernel, the fast CPU path: the same sums, threaded
// ---------------------------------------------------------------------------
// The kernel is O(N T) complex exponentials, serial in the reference: at
// T = 1024 several milliseconds a call while the other threads wait. Here
// the forward runs over l in parallel, each sum in the reference's order
// (the reference's bits), and the backward over the modes n (the same bits
// but for dlog_step's last place; test_cpu_kernels checks both).

void s4d_kernel_forward_fast(float* K, const float* a_re, const float* a_im, const float* c, float log_step, int N,
                             int T) {  // K (T) =
  using Cx = std::complex<double>;
  double dt = std::exp((double)log_step);
  std::vector<Cx> A(N), ct(N);
  for (int n = 0; n < N; n++) {
    A[n] = Cx(std::min((double)a_re[n], kMaxARe), (double)a_im[n]);
    ct[n] = Cx(c[2 * n], c[2 * n + 1]) * (std::exp(dt * A[n]) - 1.0) / A[n];
  }
#pragma omp parallel for schedule(static)
  for (int l = 0; l < T; l++) {
    double acc = 0.0;
    for (int n = 0; n < N; n++) acc += std::real(ct[n] * std::exp((double)l * dt * A[n]));
    K[l] = (float)acc;
  }
}

void s4d_kernel_backward_fast(float* da_re, float* da_im, float* dc, float* dlog_step, const float* dK,
                              const float* a_re, const float* a_im, const float* c, float log_step, int N, int T) {
  // Each mode on its own through the reference (its da_re, da_im, dc are the
  // reference's bits); the modes' dlog_step parts, each rounded to float,
  // summed in mode order.
  std::vector<float> part(N, 0.0f);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++)
    s4d_kernel_backward_cpu(da_re + n, da_im + n, dc + 2 * n, &part[n], dK, a_re + n, a_im + n, c + 2 * n, log_step,
                            1, T);
  double s = 0;
  for (int n = 0; n < N; n++) s += part[n];
  *dlog_step += (float)s;
}

// ---------------------------------------------------------------------------
// SSM convolution, the fast CPU path: a Toeplitz product for short
// sequences, an FFT for long ones
// ---------------------------------------------------------------------------
// Both use that the kernel K is shared by all H channels.
// Toeplitz: per sequence, y = Kt u + D u with Kt the (T, T) lower (causal)
// or upper (anti-causal) triangular Toeplitz matrix of K, a product gemm_cpu
// runs at the machine's FMA rate while skipping the zero triangle; in the
// backward, dK[l] is the sum along diagonal l of G = sum_b dout_b u_b^T.
// FFT: the channels are transformed side by side, one vector lane each, and
// two real channels ride in one complex sequence (z = u1 + i u2): K's
// spectrum is the same for both, so Re and Im of ifft(fft(z) * fft(K)) are
// the two convolutions, with no unpacking. The forward transform is radix-2
// decimation in frequency (natural order in, bit-reversed out) and the
// inverse decimation in time (bit-reversed in, natural out), so the
// pointwise products happen in bit-reversed order and no permutation pass is
// needed. Sums over channels (dK, dD) are taken per sequence and then in
// sequence order: the same bits for any thread count.

// Up to this length the Toeplitz product is the cheaper (the FFT does
// O(log T) work per output, the product O(T) but at the full FMA rate).
// Measured here, B 8, H 128, one thread, forward / dK in ms: T 128: 0.20 /
// 0.44 Toeplitz, 0.35 / 0.42 FFT; T 256: 0.76 / 1.70 against 0.74 / 1.10;
// T 512: 3.4 / 6.3 against 2.3 / 2.5.
constexpr int kToeplitzMaxT = 128;

// y_b (T, H) = D u_b + the banded Toeplitz product, for every sequence.
static void ssm_conv_toeplitz(float* out, const float* inp, const float* K, float D, int B, int T, int H,
                              bool anticausal) {
  // kz[T - 1 + l] = K[l], zero at negative lags: A(i, p) = kz[T - 1 + i - p]
  // (causal) or kz[T - 1 + p - i] (anti-causal) reads the matrix in place.
  std::vector<float> kz(2 * (size_t)T, 0.0f);
  std::copy(K, K + T, kz.begin() + T - 1);
  const float* a0 = kz.data() + T - 1;
  const size_t n = (size_t)T * H;
  // One sequence per thread at a time (gemm_cpu then runs on its caller's
  // thread): one parallel region for the batch instead of one per sequence.
  // With fewer sequences than threads, each product is threaded instead.
  auto one = [&](int b) {
    const float* u = inp + b * n;
    float* y = out + b * n;
    for (size_t i = 0; i < n; i++) y[i] = D * u[i];
    gemm_cpu(y, H, a0, anticausal ? -1 : 1, anticausal ? 1 : -1, u, H, 1, T, H, T, nullptr, true,
             anticausal ? Band::Upper : Band::Lower);
  };
  if (B >= omp_threads()) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) one(b);
  } else {
    for (int b = 0; b < B; b++) one(b);
  }
}

// The FFT's plan for length n: the twiddles e^(-2 pi i j / n), j < n / 2,
// computed in double.
struct FftVec {
  int n = 0;
  std::vector<float> wr, wi;
};
static FftVec fft_vec_plan(int n) {
  FftVec p;
  p.n = n;
  p.wr.resize(n / 2);
  p.wi.resize(n / 2);
  for (int j = 0; j < n / 2; j++)
    p.wr[j] = (float)std::cos(-2 * M_PI * j / n), p.wi[j] = (float)std::sin(-2 * M_PI * j / n);
  return p;
}

// Forward transform of n complex vectors (re[t], im[t] at re + t kVecW), in
// place, natural order in, bit-reversed order out.
static void fft_vec_forward(float* re, float* im, const FftVec& p) {
  const int n = p.n;
  for (int len = n; len >= 2; len >>= 1) {
    const int half = len / 2, stride = n / len;
    for (int i = 0; i < n; i += len)
      for (int k = 0; k < half; k++) {
        const VecF wr = vf_set1(p.wr[k * stride]), wi = vf_set1(p.wi[k * stride]);
        float *ar = re + (size_t)(i + k) * kVecW, *ai = im + (size_t)(i + k) * kVecW;
        float *br = ar + (size_t)half * kVecW, *bi = ai + (size_t)half * kVecW;
        VecF xr = vf_load(ar), xi = vf_load(ai), yr = vf_load(br), yi = vf_load(bi);
        VecF dr = vf_sub(xr, yr), di = vf_sub(xi, yi);
        vf_store(ar, vf_add(xr, yr));
        vf_store(ai, vf_add(xi, yi));
        vf_store(br, vf_sub(vf_mul(dr, wr), vf_mul(di, wi)));  // (x - y) w
        vf_store(bi, vf_add(vf_mul(dr, wi), vf_mul(di, wr)));
      }
  }
}

// Inverse transform (unscaled: n times the inverse DFT), bit-reversed order
// in, natural order out.
static void fft_vec_inverse(float* re, float* im, const FftVec& p) {
  const int n = p.n;
  for (int len = 2; len <= n; len <<= 1) {
    const int half = len / 2, stride = n / len;
    for (int i = 0; i < n; i += len)
      for (int k = 0; k < half; k++) {
        const VecF wr = vf_set1(p.wr[k * stride]), wi = vf_set1(-p.wi[k * stride]);  // conjugate twiddle
        float *ar = re + (size_t)(i + k) * kVecW, *ai = im + (size_t)(i + k) * kVecW;
        float *br = ar + (size_t)half * kVecW, *bi = ai + (size_t)half * kVecW;
        VecF yr0 = vf_load(br), yi0 = vf_load(bi);
        VecF yr = vf_sub(vf_mul(yr0, wr), vf_mul(yi0, wi)), yi = vf_add(vf_mul(yr0, wi), vf_mul(yi0, wr));
        VecF xr = vf_load(ar), xi = vf_load(ai);
        vf_store(ar, vf_add(xr, yr));
        vf_store(ai, vf_add(xi, yi));
        vf_store(br, vf_sub(xr, yr));
        vf_store(bi, vf_sub(xi, yi));
      }
  }
}

// Channel group g of sequence x_b (T, H): channels [2gW, 2gW + W) into re,
// the next W into im (W = kVecW), zero past H and past T (up to n).
static void fft_vec_load(float* re, float* im, const float* x, int T, int H, int g, int n) {
  const int c0 = 2 * g * kVecW;
  const bool whole = c0 + 2 * kVecW <= H;  // all 2W channels present: vector loads
  for (int t = 0; t < T; t++) {
    float *r = re + (size_t)t * kVecW, *m = im + (size_t)t * kVecW;
    const float* src = x + (size_t)t * H + c0;
    if (whole) {
      vf_store(r, vf_load(src));
      vf_store(m, vf_load(src + kVecW));
      continue;
    }
    for (int q = 0; q < kVecW; q++) {
      r[q] = c0 + q < H ? src[q] : 0.0f;
      m[q] = c0 + kVecW + q < H ? src[kVecW + q] : 0.0f;
    }
  }
  std::fill(re + (size_t)T * kVecW, re + (size_t)n * kVecW, 0.0f);
  std::fill(im + (size_t)T * kVecW, im + (size_t)n * kVecW, 0.0f);
}

// The reverse: y_b[t, channels of group g] = scale * z[t] + D x_b[t, ...].
static void fft_vec_store(float* y, const float* re, const float* im, const float* x, float scale, float D, int T,
                          int H, int g) {
  const int c0 = 2 * g * kVecW;
  const VecF s = vf_set1(scale), d = vf_set1(D);
  for (int t = 0; t < T; t++) {
    const float *r = re + (size_t)t * kVecW, *m = im + (size_t)t * kVecW, *u = x + (size_t)t * H + c0;
    float* o = y + (size_t)t * H + c0;
    if (c0 + 2 * kVecW <= H) {
      vf_store(o, vf_fma(s, vf_load(r), vf_mul(d, vf_load(u))));
      vf_store(o + kVecW, vf_fma(s, vf_load(m), vf_mul(d, vf_load(u + kVecW))));
      continue;
    }
    for (int q = 0; q < 2 * kVecW && c0 + q < H; q++) o[q] = scale * (q < kVecW ? r[q] : m[q - kVecW]) + D * u[q];
  }
}

// K's spectrum in bit-reversed order, one value per vector (all lanes equal),
// conjugated for the anti-causal direction.
static void fft_vec_kernel(std::vector<float>* kr, std::vector<float>* ki, const float* K, int T, const FftVec& p,
                           bool conjugate) {
  kr->assign((size_t)p.n * kVecW, 0.0f);
  ki->assign((size_t)p.n * kVecW, 0.0f);
  for (int t = 0; t < T; t++) std::fill_n(kr->data() + (size_t)t * kVecW, kVecW, K[t]);
  fft_vec_forward(kr->data(), ki->data(), p);
  if (conjugate)
    for (float& v : *ki) v = -v;
}

// z *= k, pointwise, n complex vectors.
static void fft_vec_mul(float* zr, float* zi, const float* kr, const float* ki, int n) {
  for (size_t t = 0; t < (size_t)n * kVecW; t += kVecW) {
    VecF ar = vf_load(zr + t), ai = vf_load(zi + t), br = vf_load(kr + t), bi = vf_load(ki + t);
    vf_store(zr + t, vf_sub(vf_mul(ar, br), vf_mul(ai, bi)));
    vf_store(zi + t, vf_add(vf_mul(ar, bi), vf_mul(ai, br)));
  }
}

static void ssm_conv_fft_fast(float* out, const float* inp, const float* K, float D, int B, int T, int H,
                              bool anticausal) {
  const int n = fft_size(T), groups = (H + 2 * kVecW - 1) / (2 * kVecW);
  const FftVec p = fft_vec_plan(n);
  std::vector<float> kr, ki;
  fft_vec_kernel(&kr, &ki, K, T, p, anticausal);
#pragma omp parallel
  {
    std::vector<float> zr((size_t)n * kVecW), zi((size_t)n * kVecW);
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
      for (int g = 0; g < groups; g++) {
        const float* u = inp + (size_t)b * T * H;
        fft_vec_load(zr.data(), zi.data(), u, T, H, g, n);
        fft_vec_forward(zr.data(), zi.data(), p);
        fft_vec_mul(zr.data(), zi.data(), kr.data(), ki.data(), n);
        fft_vec_inverse(zr.data(), zi.data(), p);
        fft_vec_store(out + (size_t)b * T * H, zr.data(), zi.data(), u, 1.0f / n, D, T, H, g);
      }
  }
}

// The same contract as ssm_conv_forward_cpu.
void ssm_conv_forward_fast(float* out, const float* inp, const float* K, float D, int B, int T, int H,
                           bool anticausal) {  // out (B, T, H) =
  if (T <= kToeplitzMaxT)
    ssm_conv_toeplitz(out, inp, K, D, B, T, H, anticausal);
  else
    ssm_conv_fft_fast(out, inp, K, D, B, T, H, anticausal);
}

// dD's per-sequence part: sum of dout * inp over (T, H), in kVecW lanes
// combined in lane order.
static float ssm_dot_fast(const float* d, const float* u, size_t n) {
  const size_t full = n / kVecW * kVecW;
  VecF acc = vf_set1(0.0f);
  for (size_t i = 0; i < full; i += kVecW) acc = vf_fma(vf_load(d + i), vf_load(u + i), acc);
  alignas(64) float lanes[kVecW];
  vf_store(lanes, acc);
  float s = 0;
  for (int q = 0; q < kVecW; q++) s += lanes[q];
  for (size_t i = full; i < n; i++) s += d[i] * u[i];
  return s;
}

// dK through the FFT: per sequence, the cross-spectrum summed over its
// channel groups (causal: fft(dout) conj(fft(u)); anti-causal: the
// conjugate pair), then over sequences in order, one inverse transform, and
// the real parts summed over lanes.
static void ssm_dk_fft_fast(float* dK, const float* dout, const float* inp, int B, int T, int H, bool anticausal) {
  const int n = fft_size(T), groups = (H + 2 * kVecW - 1) / (2 * kVecW);
  const FftVec p = fft_vec_plan(n);
  const size_t len = (size_t)n * kVecW;
  std::vector<float> sr((size_t)B * len, 0.0f), si((size_t)B * len, 0.0f);
#pragma omp parallel
  {
    std::vector<float> dr(len), di(len), ur(len), ui(len);
#pragma omp for schedule(static)
    for (int b = 0; b < B; b++) {
      float *accr = sr.data() + b * len, *acci = si.data() + b * len;
      for (int g = 0; g < groups; g++) {
        fft_vec_load(dr.data(), di.data(), dout + (size_t)b * T * H, T, H, g, n);
        fft_vec_load(ur.data(), ui.data(), inp + (size_t)b * T * H, T, H, g, n);
        fft_vec_forward(dr.data(), di.data(), p);
        fft_vec_forward(ur.data(), ui.data(), p);
        const float sign = anticausal ? -1.0f : 1.0f;  // the conjugated factor's imaginary sign
        const VecF sd = vf_set1(sign);
        for (size_t t = 0; t < len; t += kVecW) {
          // causal: (dr + i di)(ur - i ui); anti-causal: (dr - i di)(ur + i ui)
          VecF ar = vf_load(dr.data() + t), ai = vf_load(di.data() + t);
          VecF br = vf_load(ur.data() + t), bi = vf_load(ui.data() + t);
          VecF re = vf_fma(ar, br, vf_mul(ai, bi));
          VecF im = vf_mul(sd, vf_sub(vf_mul(ai, br), vf_mul(ar, bi)));
          vf_store(accr + t, vf_add(vf_load(accr + t), re));
          vf_store(acci + t, vf_add(vf_load(acci + t), im));
        }
      }
    }
  }
  for (int b = 1; b < B; b++)
    for (size_t t = 0; t < len; t++) sr[t] += sr[b * len + t], si[t] += si[b * len + t];
  fft_vec_inverse(sr.data(), si.data(), p);
  for (int l = 0; l < T; l++) {
    float s = 0;
    for (int q = 0; q < kVecW; q++) s += sr[(size_t)l * kVecW + q];
    dK[l] += s / (float)n;
  }
}

// dK through the Toeplitz form: G (T, T) = sum_b dout_b u_b^T, then
// dK[l] = sum_t G[t][t - l] (causal) or G[t][t + l] (anti-causal).
static void ssm_dk_toeplitz(float* dK, const float* dout, const float* inp, int B, int T, int H, bool anticausal) {
  // Per sequence (threads over sequences, as in ssm_conv_toeplitz): its
  // G_b, then its diagonal sums; then the sequences' sums in order.
  std::vector<float> part((size_t)B * T);
  auto one = [&](int b) {
    static thread_local std::vector<float> G;
    G.assign((size_t)T * T, 0.0f);
    gemm_cpu(G.data(), T, dout + (size_t)b * T * H, H, 1, inp + (size_t)b * T * H, 1, H, T, T, H, nullptr, false);
    for (int l = 0; l < T; l++) {
      float s = 0;
      for (int t = anticausal ? 0 : l; t < (anticausal ? T - l : T); t++)
        s += G[(size_t)t * T + (anticausal ? t + l : t - l)];
      part[(size_t)b * T + l] = s;
    }
  };
  if (B >= omp_threads()) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) one(b);
  } else {
    for (int b = 0; b < B; b++) one(b);
  }
  for (int b = 0; b < B; b++)
    for (int l = 0; l < T; l++) dK[l] += part[(size_t)b * T + l];
}

// The same contract as ssm_conv_backward_cpu: dinp =, dK and dD +=.
void ssm_conv_backward_fast(float* dinp, float* dK, float* dD, const float* dout, const float* inp, const float* K,
                            float D, int B, int T, int H, bool anticausal) {
  ssm_conv_forward_fast(dinp, dout, K, D, B, T, H, !anticausal);
  if (T <= kToeplitzMaxT)
    ssm_dk_toeplitz(dK, dout, inp, B, T, H, anticausal);
  else
    ssm_dk_fft_fast(dK, dout, inp, B, T, H, anticausal);
  std::vector<float> part(B);
#pragma omp parallel for schedule(static)
  for (int b = 0; b < B; b++) part[b] = ssm_dot_fast(dout + (size_t)b * T * H, inp + (size_t)b * T * H, (size_t)T * H);
  for (int b = 0; b < B; b++) *dD += part[b];
}


// ---------------------------------------------------------------------------
// Softmax cross-entropy, the fast CPU path: vectorised exp and sums
// ---------------------------------------------------------------------------
// The same contracts as crossentropy_forward_cpu and _backward_cpu. A row's
// sums run in kVecW lanes, combined in lane order at the end: a fixed order,
// so the result does not depend on the thread count.

// Over one row x (V): its max, and sum_v e^(x_v - max) with each exponential
// written to e (V) when e is not null.
static float softmax_row_fast(const float* x, int V, float* e, float* mx_out) {
  float mx = x[0];
  for (int v = 1; v < V; v++) mx = std::max(mx, x[v]);
  const int full = V / kVecW * kVecW;
  VecF acc = vf_set1(0.0f), m = vf_set1(mx);
  for (int v = 0; v < full; v += kVecW) {
    VecF t = vf_exp(vf_sub(vf_load(x + v), m));
    if (e) vf_store(e + v, t);
    acc = vf_add(acc, t);
  }
  alignas(64) float lanes[kVecW], tail[kVecW];
  vf_store(lanes, acc);
  float sum = 0;
  for (int q = 0; q < kVecW; q++) sum += lanes[q];
  if (full < V) {  // the tail through a padded vector, its unused lanes dropped
    std::fill(tail, tail + kVecW, mx);
    std::copy(x + full, x + V, tail);
    vf_store(tail, vf_exp(vf_sub(vf_load(tail), m)));
    for (int v = full; v < V; v++) {
      if (e) e[v] = tail[v - full];
      sum += tail[v - full];
    }
  }
  *mx_out = mx;
  return sum;
}

void crossentropy_forward_fast(float* losses, const float* logits, const int* targets, int rows,
                               int V) {  // losses (rows) =
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; r++) {
    const float* x = logits + (size_t)r * V;
    float mx, sum = softmax_row_fast(x, V, nullptr, &mx);
    losses[r] = std::log(sum) + mx - x[targets[r]];
  }
}

// dlogits = scale * (softmax(logits) - onehot(target)); one exp per logit.
void crossentropy_backward_fast(float* dlogits, const float* logits, const int* targets, float scale, int rows,
                                int V) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; r++) {
    float* d = dlogits + (size_t)r * V;
    float mx, sum = softmax_row_fast(logits + (size_t)r * V, V, d, &mx);
    const float et = d[targets[r]];
    const VecF s = vf_set1(scale), inv = vf_set1(1.0f / sum);
    const int full = V / kVecW * kVecW;
    for (int v = 0; v < full; v += kVecW) vf_store(d + v, vf_mul(s, vf_mul(vf_load(d + v), inv)));
    for (int v = full; v < V; v++) d[v] = scale * (d[v] * (1.0f / sum));
    d[targets[r]] = scale * (et * (1.0f / sum) - 1.0f);
  }
}
