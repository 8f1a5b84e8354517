// dev/cuda/ssm_conv.cu: the kernel lab for BiGS's SSM convolution,
// in the manner of llm.c's dev/cuda: the CPU reference, numbered versions, a
// validator and a benchmark.
//
// The operation, over (B, T, H) with one kernel K (T) shared by all H channels:
//   causal       y[t] = sum_{s <= t} K[t - s] u[s] + D u[t]
//   anti-causal  y[t] = sum_{s >= t} K[s - t] u[s] + D u[t]
// backward: dinp = the opposite direction's convolution of dout (overwrites);
// dK[l] += sum over b, h, t of dout[t] u[t -+ l]; dD += sum dout * u.
//
// Versions (bytes and FLOPs for BiGS-large in the table of dev/cuda/README.md;
// `--predict` prints them):
//   v1  cuFFT, bigs.cu's ssm_conv_forward / ssm_conv_backward as they are:
//       fp32 signals zero-padded to n = fft_size(T) >= 2T, a transpose into
//       and out of cuFFT's layout, R2C, spectrum product, C2R. Forward moves
//       ~ B H (28 n + (4 + 3 X) T) bytes (X = bytes per stored element),
//       backward ~ 2.1x that; ~ 7.5 n log2 n FLOPs per channel forward.
//   v2  the Toeplitz product: for each sequence y_b = Toep(K) u_b, one
//       strided-batched cuBLASLt GEMM over B reading u in place ((T, H)
//       row-major is (H, T) column-major: Y' = U' N with N the T x T matrix,
//       shared by the batch through a zero batch stride), D added to N's
//       diagonal so the skip term costs nothing; bf16 operands with fp32
//       accumulation, or fp32. The anti-causal matrix is N's transpose (the
//       op flag; nothing is built twice). Backward: dinp_b = Toep^T dout_b,
//       the same GEMM with the op flipped; dK[l] = the l-th diagonal sums of
//       Gx_b = dout_b u_b^T over every b, from one batched (T x T x H) GEMM
//       and a deterministic diagonal-sum kernel, whose lag-0 sum is dD (no
//       pass of its own). Forward: 2 B T H X + T^2 X bytes, 2 B H T^2
//       FLOPs; backward twice that, plus Gx: 4 B T^2 bytes written and half
//       of them read back.
//   v3  chunked Toeplitz: output block i (columns [iC, iC + C) of Y') only
//       needs input columns [0, iC + C) (causal), so ceil(T / C) GEMMs of
//       depth up to T skip the zero upper triangle: B H T (T + C) FLOPs
//       instead of 2 B H T^2; likewise only the lower block triangle of Gx.
//       At T <= C it is v2.
// No fused variant is here: at T = 128 and 512 v2 already moves the
// operation's floor (read u, write y) within the Toeplitz matrix's T^2 X;
// see README.md for what a fused kernel could still save at T = 4096.
//
// Build and run (the lead's dev/gpu_check.sh does this on a lent GPU):
//   make lab                        # build/lab_ssm_conv and build/lab_colsum (nvcc, -arch=sm_90)
//   build/lab_ssm_conv              # validate all versions, then benchmark; table last; ~30 s on an H200
//   build/lab_ssm_conv --validate   # validation only (~20 s: the CPU references, in double, dominate)
//   build/lab_ssm_conv --bench      # benchmark only (~5 s)
//   build/lab_ssm_conv --predict    # the predicted table; needs no GPU
// Exit status: 0 when every check passed, 1 when one failed or a CUDA call
// did, 2 on a bad command line or without a GPU.
#include "lab.h"

namespace lab {

// ---------------------------------------------------------------------------
// The Toeplitz route: shapes and indices (host and device)
// ---------------------------------------------------------------------------
// cuBLASLt is column-major, so a sequence u_b, row-major (T, H), is the
// column-major U' (H x T) with ld H, and y_b likewise Y'. The causal
// product y[t] = sum_s N(s, t) u[s] is then Y' = U' N, with N column-major
// (T x T, ld ldT):
//   N(s, t) = K[t - s] for s <= t (plus D at s = t), 0 for s > t;
// the anti-causal product is Y' = U' N^T. N is upper triangular, so output
// column t needs only input columns s <= t (causal) or s >= t (anti-causal).

// The plans (toeplitz_ld, conv_plan, gram_plan, gram_group, diag_slices,
// diag_thread_sum) and the orchestration (toeplitz_forward,
// toeplitz_backward) are bigs.cu's since version 3 moved there; the lab
// runs them with its executors.

// The CPU twin of every piece (host only). Storage is fp32; bf16 rounds
// where bf16 storage rounds (N and the products' outputs), the inputs being
// bf16 values already. Scratch starts as NaN, so a read of anything not
// written shows. rows: the conv products compute only these channels h.
struct SimExec {
  bool round_bf16 = false;
  const std::vector<int>* rows = nullptr;
  std::vector<float> N, G, part;
  template <class X>
  X* matrix(size_t n) {
    N.assign(n, NAN);
    return N.data();
  }
  float* gram(size_t n) {
    G.assign(n, NAN);
    return G.data();
  }
  float* partials(size_t n) {
    part.assign(n, NAN);
    return part.data();
  }
  void build(float* Nm, const float* K, const float* D, int T, int ldT) {
    int64_t threads = (int64_t)grid_blocks((int64_t)T * (ldT / 8)) * kThreadsSim;
    for (int64_t i = 0; i < threads; i++) {
      int64_t off;
      float v[8];
      if (toeplitz_build_thread(i, K, *D, T, ldT, &off, v))
        for (int j = 0; j < 8; j++) Nm[off + j] = round_bf16 ? bf16_round(v[j]) : v[j];
    }
  }
  void conv_gemm(const GemmSpec& s, const float* A, const float* B, float* D) {
    gemm_cpu(s, A, B, D, rows, round_bf16);
  }
  void gram_gemm(const GemmSpec& s, const float* A, const float* B, float* G) { gemm_cpu(s, A, B, G); }
  void diag(float* p, const float* Gm, int T, int ldG, int nseq, int slices) {
    int64_t rows_all = (int64_t)nseq * T;
    int bx_n = (T + kLanes - 1) / kLanes;
    for (int by = 0; by < slices; by++)
      for (int bx = 0; bx < bx_n; bx++)
        for (int x = 0; x < kLanes; x++) {
          int l = bx * kLanes + x;
          int64_t r0, r1;
          slice_rows(rows_all, slices, by, &r0, &r1);
          float v[kRows];
          for (int y = 0; y < kRows; y++) v[y] = diag_thread_sum(Gm, T, ldG, l, r0 + y, r1);
          if (l < T) p[(int64_t)by * T + l] = tree8(v, 1);
        }
  }
  void finish(float* dK, float* dD, const float* p, int T, int slices) {
    for (int c = 0; c < T; c++) {
      float v[kRows];
      for (int y = 0; y < kRows; y++) v[y] = finish_thread_sum(p, T, slices, c, y);
      float s = tree8(v, 1);
      dK[c] += s;
      if (c == 0 && dD) *dD += s;
    }
  }
  // The build's launch shape: blocks of kThreadsSim threads, as GpuExec's.
  static constexpr int kThreadsSim = 256;
  static int64_t grid_blocks(int64_t n) { return std::max<int64_t>(1, (n + kThreadsSim - 1) / kThreadsSim); }
};

// ---------------------------------------------------------------------------
// The reference (host, double) and the bounds every version is held to
// ---------------------------------------------------------------------------
// conv_ref: y = the direct O(T^2) sum of the banner, and S = the same sum of
// |terms| (what rounding errors scale with), only for channels hs (all when
// empty). Both (B, T, H).
inline void conv_ref(double* y, double* S, const float* x, const float* K, float D, int B, int T, int H,
                     bool anticausal, const std::vector<int>& hs) {
#pragma omp parallel for collapse(2)
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      double* yr = y + ((size_t)b * T + t) * H;
      double* Sr = S + ((size_t)b * T + t) * H;
      const float* x0 = x + (size_t)b * T * H;
      auto add = [&](int h, double k, const float* xs) {
        double v = k * xs[h];
        yr[h] += v, Sr[h] += std::fabs(v);
      };
      for (int h = 0; h < H; h++) yr[h] = Sr[h] = 0;
      int s0 = anticausal ? t : 0, s1 = anticausal ? T : t + 1;
      for (int s = s0; s < s1; s++) {
        double k = (double)K[anticausal ? s - t : t - s] + (s == t ? (double)D : 0.0);
        const float* xs = x0 + (size_t)s * H;
        if (hs.empty())
          for (int h = 0; h < H; h++) add(h, k, xs);
        else
          for (int h : hs) add(h, k, xs);
      }
    }
}

// lag_ref: dK[l] = sum over b, h, t of dout[t] u[t -+ l] and SdK[l] the sum
// of |terms| (both overwritten).
inline void lag_ref(double* dK, double* SdK, const float* dout, const float* u, int B, int T, int H, bool anticausal) {
#pragma omp parallel for schedule(dynamic)
  for (int l = 0; l < T; l++) {
    double s = 0, a = 0;
    for (int b = 0; b < B; b++)
      for (int t = anticausal ? 0 : l; t < (anticausal ? T - l : T); t++) {
        const float* d = dout + ((size_t)b * T + t) * H;
        const float* x = u + ((size_t)b * T + (anticausal ? t + l : t - l)) * H;
#pragma omp simd reduction(+ : s, a)
        for (int h = 0; h < H; h++) {
          double v = (double)d[h] * x[h];
          s += v, a += std::fabs(v);
        }
      }
    dK[l] = s, SdK[l] = a;
  }
}

// One validation case: inputs (bf16 values when bf16), and the initial dK,
// dD the backward adds to.
struct SsmCase {
  int B = 0, T = 0, H = 0;
  bool anticausal = false, is_bf16 = false;
  std::vector<float> u, dout, K, D, dK0, dD0;
};

inline SsmCase make_case(int B, int T, int H, bool anticausal, bool bf16, uint64_t seed) {
  SsmCase c;
  c.B = B, c.T = T, c.H = H, c.anticausal = anticausal, c.is_bf16 = bf16;
  size_t n = (size_t)B * T * H;
  c.u = random_vec(n, seed * 8 + 0), c.dout = random_vec(n, seed * 8 + 1);
  if (bf16) c.u = bf16_round(c.u), c.dout = bf16_round(c.dout);
  // A kernel with weight at every lag (1 / sqrt(1 + l) decay): long lags
  // matter, so an index slip anywhere shows.
  c.K = random_vec(T, seed * 8 + 2);
  for (int l = 0; l < T; l++) c.K[l] /= std::sqrt(1.0f + l);
  c.D = random_vec(1, seed * 8 + 3), c.dK0 = random_vec(T, seed * 8 + 4), c.dD0 = random_vec(1, seed * 8 + 5);
  return c;
}

struct SsmRef {
  std::vector<double> y, Sy, dinp, Sdinp, dK, SdK, dD, SdD;  // dK, dD include dK0, dD0
};

// hs: only these channels for y and dinp (all when empty); dK, dD always whole.
inline SsmRef reference(const SsmCase& c, const std::vector<int>& hs = {}) {
  SsmRef r;
  size_t n = (size_t)c.B * c.T * c.H;
  r.y.resize(n), r.Sy.resize(n), r.dinp.resize(n), r.Sdinp.resize(n), r.dK.resize(c.T), r.SdK.resize(c.T);
  conv_ref(r.y.data(), r.Sy.data(), c.u.data(), c.K.data(), c.D[0], c.B, c.T, c.H, c.anticausal, hs);
  conv_ref(r.dinp.data(), r.Sdinp.data(), c.dout.data(), c.K.data(), c.D[0], c.B, c.T, c.H, !c.anticausal, hs);
  lag_ref(r.dK.data(), r.SdK.data(), c.dout.data(), c.u.data(), c.B, c.T, c.H, c.anticausal);
  r.dD = {c.dD0[0] + r.dK[0]}, r.SdD = {r.SdK[0]};  // dD's sum is lag 0's
  for (int l = 0; l < c.T; l++) r.dK[l] += c.dK0[l];
  return r;
}

struct SsmBounds {
  std::vector<double> y, dinp, dK, dD;
};

// The Toeplitz route (v2, v3), element by element, valid for any summation
// order cuBLASLt picks:
//  y, dinp: each is a dot product of <= T terms K[.] x, in fp32 (gamma_T;
//    the accumulation unit is 2^-23 for bf16 operands, since tensor cores
//    may truncate rather than round their fp32 sums: Fasi et al., "Numerical
//    behavior of NVIDIA tensor cores", 2021), on matrix entries rounded
//    once (fp32: only K0 + D; bf16: every entry, 2^-8, then the output once
//    more, 2^-8: two bf16 roundings in all).
//  dK, dD: Gx entries are dot products of H exact products (bf16 x bf16 fits
//    fp32), summed over <= B T entries, then added to dK once per group:
//    gamma_{H + B T + groups} (sum |terms| + |dK0|). No bf16 rounding at all.
// In fp32 these are the a-priori worst case, not a fitted tolerance.
inline SsmBounds toeplitz_bounds(const SsmCase& c, const SsmRef& r, int groups) {
  SsmBounds b;
  double acc_u = c.is_bf16 ? 2 * kU32 : kU32, entry_u = c.is_bf16 ? kU16 + 2 * kU32 : kU32;
  double g = (1 + entry_u) * (1 + gamma_n(c.T, acc_u)) - 1;
  auto conv = [&](const std::vector<double>& ref, const std::vector<double>& S) {
    std::vector<double> out(ref.size());
    for (size_t i = 0; i < ref.size(); i++) {
      double e = g * S[i];
      out[i] = c.is_bf16 ? e + kU16 * (std::fabs(ref[i]) + e) : e;
    }
    return out;
  };
  b.y = conv(r.y, r.Sy), b.dinp = conv(r.dinp, r.Sdinp);
  double gk = gamma_n((double)c.H + (double)c.B * c.T + groups, acc_u);
  b.dK.resize(c.T);
  for (int l = 0; l < c.T; l++) b.dK[l] = gk * (r.SdK[l] + std::fabs(c.dK0[l]));
  b.dD = {gk * (r.SdD[0] + std::fabs(c.dD0[0]))};
  return b;
}

// The FFT route (v1). cuFFT documents no error bound, so this assumes
// Higham's for radix-2 Cooley-Tukey with accurate twiddles (Accuracy and
// Stability of Numerical Algorithms, Thm 24.2): a computed transform of x
// is within c1 ||F x||_2, c1 = L eta / (1 - L eta), L = log2 n,
// eta = u + gamma_4 (sqrt 2 + u). Carried through spectrum product
// (sqrt 2 gamma_2) and inverse, a convolution of x and k is within
//   c_fft A,  c_fft = (2 c1 + sqrt 2 gamma_2)(1 + 2 c1),
//   A = ||F k||_inf ||x||_2 + ||F x||_inf ||k||_2
// in the 2-norm over the channel, hence elementwise too; the spectral
// maxima are computed exactly (in double) per channel. Then the unpack's
// D x and sum (u |D x| + u |y|), and bf16 storage once (2^-8 |y|). dK:
// the channels' cross spectra are summed in fp32 (ceil(channels / 64) + 64
// terms deep: gamma_m) before one inverse, so
//   |err dK[l]| <= (c_fft + gamma_m (1 + 2 c1)) sum_ch A_ch + u |dK|;
// dD is a double sum rounded to fp32 and added: u (|sum| + |dD|).
struct FftNorms {
  std::vector<double> u2, uinf, d2, dinf;  // per channel (b, h): ||x||_2 and ||F x||_inf, for u and dout
  double k2 = 0, kinf = 0;                 // the same for K
};

inline FftNorms fft_norms(const SsmCase& c) {
  FftNorms f;
  int n = fft_size(c.T);
  size_t ch = (size_t)c.B * c.H;
  auto tw = fft_twiddles<double>(n);
  auto norms = [&](const float* x, size_t stride, double* l2, double* linf) {
    std::vector<std::complex<double>> buf(n, 0.0);
    double s = 0;
    for (int t = 0; t < c.T; t++)
      buf[t] = x[(size_t)t * stride], s += (double)x[(size_t)t * stride] * x[(size_t)t * stride];
    fft_cpu(buf.data(), n, tw.data(), false);
    double m = 0;
    for (auto& v : buf) m = std::max(m, std::abs(v));
    *l2 = std::sqrt(s), *linf = m;
  };
  f.u2.resize(ch), f.uinf.resize(ch), f.d2.resize(ch), f.dinf.resize(ch);
#pragma omp parallel for
  for (size_t i = 0; i < ch; i++) {
    size_t b = i / c.H, h = i % c.H, at = b * c.T * c.H + h;
    norms(c.u.data() + at, c.H, &f.u2[i], &f.uinf[i]);
    norms(c.dout.data() + at, c.H, &f.d2[i], &f.dinf[i]);
  }
  norms(c.K.data(), 1, &f.k2, &f.kinf);
  return f;
}

inline SsmBounds fft_bounds(const SsmCase& c, const SsmRef& r, const FftNorms& f) {
  SsmBounds b;
  double L = std::log2((double)fft_size(c.T)), eta = kU32 + gamma_n(4, kU32) * (std::sqrt(2.0) + kU32);
  double c1 = L * eta / (1 - L * eta), cf = (2 * c1 + std::sqrt(2.0) * gamma_n(2, kU32)) * (1 + 2 * c1);
  size_t n = r.y.size();
  b.y.resize(n), b.dinp.resize(n);
  for (size_t i = 0; i < n; i++) {
    size_t bb = i / ((size_t)c.T * c.H), h = i % c.H, ch = bb * c.H + h;
    double fy = cf * (f.kinf * f.u2[ch] + f.uinf[ch] * f.k2), fd = cf * (f.kinf * f.d2[ch] + f.dinf[ch] * f.k2);
    double ey = fy + kU32 * (std::fabs((double)c.D[0] * c.u[i]) + std::fabs(r.y[i]) + fy);
    double ed = fd + kU32 * (std::fabs((double)c.D[0] * c.dout[i]) + std::fabs(r.dinp[i]) + fd);
    b.y[i] = c.is_bf16 ? ey + kU16 * (std::fabs(r.y[i]) + ey) : ey;
    b.dinp[i] = c.is_bf16 ? ed + kU16 * (std::fabs(r.dinp[i]) + ed) : ed;
  }
  double A = 0;
  for (size_t ch = 0; ch < f.u2.size(); ch++) A += f.dinf[ch] * f.u2[ch] + f.uinf[ch] * f.d2[ch];
  double m = std::ceil(f.u2.size() / (double)kColChunks) + kColChunks;
  double ek = (cf + gamma_n(m, kU32) * (1 + 2 * c1)) * A;
  b.dK.resize(c.T);
  for (int l = 0; l < c.T; l++) b.dK[l] = ek + kU32 * (std::fabs(r.dK[l]) + ek);
  b.dD = {(gamma_n((double)n, kU64) + kU32 * (1 + 2 * kU32)) * r.SdD[0] + kU32 * std::fabs(r.dD[0])};
  return b;
}

// The reference read one index off, for Check::caught: y at t + 1 (t - 1 at
// the end); dK's is lab.h's off_by_one.
inline std::vector<double> off_by_one_t(const std::vector<double>& y, int T, int H) {
  if (T < 2) return {};
  std::vector<double> a(y.size());
  for (size_t i = 0; i < y.size(); i++) {
    int t = (int)(i / H % T);
    a[i] = y[t + 1 < T ? i + H : i - H];
  }
  return a;
}

// All four outputs of one run against the reference and bounds. hs: the
// channels computed (all when empty).
inline std::vector<Check> check_ssm(const std::string& tag, const SsmCase& c, const SsmRef& r, const SsmBounds& b,
                                    const std::vector<float>& y, const std::vector<float>& dinp,
                                    const std::vector<float>& dK, const std::vector<float>& dD,
                                    const std::vector<int>& hs = {}) {
  auto pick = [&](const std::vector<double>& v) {  // the computed channels only
    if (hs.empty()) return v;
    std::vector<double> o;
    for (size_t i = 0; i < v.size(); i++)
      if (std::find(hs.begin(), hs.end(), (int)(i % c.H)) != hs.end()) o.push_back(v[i]);
    return o;
  };
  auto pickf = [&](const std::vector<float>& v) {
    std::vector<double> d(v.begin(), v.end());
    return pick(d);
  };
  std::vector<Check> out;
  auto add = [&](const char* what, const std::vector<double>& got, const std::vector<double>& ref,
                 const std::vector<double>& alt, const std::vector<double>& bound) {
    Check k = check_bounded(tag + " " + what, got.data(), ref.data(), bound.data(), ref.size());
    if (!alt.empty()) k.caught = caught_share(ref.data(), alt.data(), bound.data(), ref.size());
    out.push_back(k);
  };
  add("y", pickf(y), pick(r.y), pick(off_by_one_t(r.y, c.T, c.H)), pick(b.y));
  add("dinp", pickf(dinp), pick(r.dinp), pick(off_by_one_t(r.dinp, c.T, c.H)), pick(b.dinp));
  add("dK", std::vector<double>(dK.begin(), dK.end()), r.dK, off_by_one(r.dK, c.dK0), b.dK);
  add("dD", std::vector<double>(dD.begin(), dD.end()), r.dD, {}, b.dD);
  return out;
}

// ---------------------------------------------------------------------------
// The cost model per version (host): bytes and FLOPs of each kernel
// ---------------------------------------------------------------------------
inline double peak_for(int xs) { return xs == 2 ? kTensorFlops : kCudaCoreFlops; }

// v2 (chunk 0) and v3, from the very plans the GPU runs.
inline std::vector<Work> toeplitz_work(int xs, int B, int T, int H, bool anticausal, bool backward, int chunk,
                                       size_t gram_cap) {
  std::vector<Work> w;
  int ldT = toeplitz_ld(T);
  auto conv = [&](bool anti) {
    w.push_back({"Toeplitz build", (double)T * ldT * xs + T * 4.0});
    for (const GemmSpec& s : conv_plan(B, T, H, anti, chunk))
      w.push_back(gemm_work("conv GEMM", s, xs, xs, peak_for(xs)));
  };
  if (!backward) {
    conv(anticausal);
    return w;
  }
  conv(!anticausal);
  int g = gram_group(B, T, gram_cap);
  for (int q0 = 0; q0 < B; q0 += g) {
    int nq = std::min(g, B - q0), slices = diag_slices((int64_t)nq * T);
    for (const GemmSpec& s : gram_plan(nq, T, H, chunk)) w.push_back(gemm_work("Gx GEMM", s, xs, 4, peak_for(xs)));
    // Each thread keeps ~4 loads of 4 bytes in flight (the loop, unrolled).
    double threads = (double)kLanes * ((T + kLanes - 1) / kLanes) * kRows;
    w.push_back({"lag sums", nq * (double)T * (T + 1) / 2 * 4 + (double)slices * T * 4, 0, kCudaCoreFlops,
                 threads * slices * 16});
    w.push_back({"lag finish", (double)slices * T * 4 + 2.0 * T * 4, 0, kCudaCoreFlops, threads * 16});
  }
  return w;
}

// v1 as bigs.cu's Cost device counts it (ssm_conv_*_cost: cuFFT as one
// pass over its input and output, the least it can move); v2 and v3 per
// kernel and product.
inline std::vector<Work> version_work(int ver, int xs, int B, int T, int H, bool backward, int chunk,
                                      size_t gram_cap = kGramCapBytes) {
  if (ver == 1)
    return works_of(backward ? ssm_conv_fft_backward_cost(B, T, H, xs) : ssm_conv_fft_forward_cost(B, T, H, xs));
  return toeplitz_work(xs, B, T, H, false, backward, ver == 3 ? chunk : 0, gram_cap);
}

// bigs.cu's cost device counts the Toeplitz route itself (ssm_conv_forward_cost).

// v3's block in validation: small enough that every T has several blocks,
// a short last one, and (with a cap of two
// sequences' Gx) two groups of sequences.
inline int validation_chunk(int T) { return T <= 32 ? 8 : T <= 256 ? 48 : 256; }

// BiGS-large's shapes: the memory plan's token count at T = 128 and 512 and
// its per-GPU share at 4096 (the benchmark shapes of docs/GPU.md).
struct Shape {
  int B, T, H;
};
constexpr Shape kBenchShapes[] = {{64, 128, 1024}, {16, 512, 1024}, {4, 4096, 1024}};
constexpr int kDefaultChunk = kGpuToeplitzChunk;  // bigs.cu's block

// Where the FFT wins again, by the cost model: per token, forward plus
// backward, at 16384 tokens per call (B = 16384 / T), scanning T in steps
// of 64 up to 32768. Returns the first T at which v1 is faster than
// version ver and the last at which ver is still faster (the FFT's cost
// steps at powers of two, so the two can differ).
inline std::pair<int, int> fft_crossover(int ver, int xs, int H, int chunk) {
  int first = 0, last = 0;
  for (int T = 64; T <= 32768; T += 64) {
    int B = std::max(1, 16384 / T);
    auto cost = [&](int v) {
      return predict_s(version_work(v, xs, B, T, H, false, chunk)) +
             predict_s(version_work(v, xs, B, T, H, true, chunk));
    };
    bool fft_wins = cost(1) < cost(ver);
    if (fft_wins && !first) first = T;
    if (!fft_wins) last = T;
  }
  return {first, last};
}

inline void print_predictions(int chunk) {
  printf(
      "predicted (H200: %.1f TB/s, %.0f TFLOP/s bf16, %.0f TFLOP/s fp32; per call, one direction; launches not "
      "timed)\n",
      kHbmBytes / 1e12, kTensorFlops / 1e12, kCudaCoreFlops / 1e12);
  printf("%-4s %-5s %5s %3s | %9s %9s %8s | %9s %9s %8s | %s\n", "ver", "prec", "T", "B", "fwd ms", "fwd MB", "fwd GF",
         "bwd ms", "bwd MB", "bwd GF", "launches f/b");
  for (const Shape& s : kBenchShapes)
    for (int xs : {2, 4})
      for (int ver = 1; ver <= 3; ver++) {
        auto f = version_work(ver, xs, s.B, s.T, s.H, false, chunk),
             b = version_work(ver, xs, s.B, s.T, s.H, true, chunk);
        printf("v%-3d %-5s %5d %3d | %9.4f %9.1f %8.2f | %9.4f %9.1f %8.2f | %d/%d\n", ver, xs == 2 ? "bf16" : "fp32",
               s.T, s.B, 1e3 * predict_s(f), total_bytes(f) / 1e6, total_flops(f) / 1e9, 1e3 * predict_s(b),
               total_bytes(b) / 1e6, total_flops(b) / 1e9, total_launches(f), total_launches(b));
      }
  printf("crossover (forward + backward per token, 16384 tokens a call, H 1024, v3 block %d):\n", chunk);
  for (int xs : {2, 4})
    for (int ver : {2, 3}) {
      auto [first, last] = fft_crossover(ver, xs, 1024, chunk);
      printf("  %s: v1 (FFT) first beats v%d at T = %d; v%d last wins at T = %d\n", xs == 2 ? "bf16" : "fp32", ver,
             first, ver, last);
    }
}

#ifdef BIGS_CUDA
// ---------------------------------------------------------------------------
// Kernels and the GPU executor
// ---------------------------------------------------------------------------
// store8, toeplitz_build_kernel and diag_partial_kernel are bigs.cu's.

// The lab's state: bigs.cu's context, the prepared products, the Toeplitz
// route's scratch (grown on first use, as bigs.cu's), and its settings.
struct SsmLab {
  CudaCtx ctx;
  LtCache lt;
  char* N = nullptr;  // the Toeplitz matrix, bytes
  size_t N_cap = 0;
  float* G = nullptr;  // Gx for one group of sequences
  size_t G_cap = 0;
  float* part = nullptr;  // the lag sums' partials
  size_t part_cap = 0;
  int chunk = kDefaultChunk;  // v3's block
  size_t gram_cap = kGramCapBytes;
  bool poison_scratch = false;  // validation: scratch starts as NaN every time
  SsmLab() { cuda_ctx_create(&ctx); }
  SsmLab(const SsmLab&) = delete;
  SsmLab& operator=(const SsmLab&) = delete;
  ~SsmLab() {
    cudaFree(N), cudaFree(G), cudaFree(part);
    cuda_ctx_destroy(&ctx);
  }
};

struct GpuExec {
  SsmLab& lab;
  template <class X>
  X* grow(X** p, size_t* cap, size_t n) {
    scratch_reserve(lab.ctx, p, cap, n);
    if (lab.poison_scratch) cudaCheck(cudaMemsetAsync(*p, 0xff, n * sizeof(X), lab.ctx.stream));
    return *p;
  }
  template <class X>
  X* matrix(size_t n) {
    return (X*)grow(&lab.N, &lab.N_cap, n * sizeof(X));
  }
  float* gram(size_t n) { return grow(&lab.G, &lab.G_cap, n); }
  float* partials(size_t n) { return grow(&lab.part, &lab.part_cap, n); }
  template <class X>
  void build(X* N, const float* K, const float* D, int T, int ldT) {
    toeplitz_build_kernel<<<grid_for((size_t)T * (ldT / 8)), kThreads, 0, lab.ctx.stream>>>(N, K, D, T, ldT);
    launchCheck();
  }
  template <class X>
  void conv_gemm(const GemmSpec& s, const X* A, const X* B, X* D) {
    lt_gemm(lab.ctx, lab.lt, s, A, B, D);
  }
  template <class X>
  void gram_gemm(const GemmSpec& s, const X* A, const X* B, float* G) {
    lt_gemm(lab.ctx, lab.lt, s, A, B, G);
  }
  void diag(float* p, const float* G, int T, int ldG, int nseq, int slices) {
    diag_partial_kernel<<<dim3((T + kLanes - 1) / kLanes, slices), dim3(kLanes, kRows), 0, lab.ctx.stream>>>(
        p, G, T, ldG, nseq, slices);
    launchCheck();
  }
  void finish(float* dK, float* dD, const float* p, int T, int slices) { colsum_finish(lab.ctx, dK, dD, p, T, slices); }
};
static_assert(SimExec::kThreadsSim == kThreads, "the CPU twin must launch the build as GpuExec does");

// The versions behind one signature each (bigs.cu's, plus the lab's state).
template <class X>
void version_forward(SsmLab& lab, int ver, X* out, const X* inp, const float* K, const float* D, int B, int T, int H,
                     bool anticausal) {
  if (ver == 1) return ssm_conv_fft_forward(lab.ctx, out, inp, K, D, B, T, H, anticausal);
  GpuExec ex{lab};
  toeplitz_forward(ex, out, inp, K, D, B, T, H, anticausal, ver == 3 ? lab.chunk : 0);
}
template <class X>
void version_backward(SsmLab& lab, int ver, X* dinp, float* dK, float* dD, const X* dout, const X* inp, const float* K,
                      const float* D, int B, int T, int H, bool anticausal) {
  if (ver == 1) return ssm_conv_fft_backward(lab.ctx, dinp, dK, dD, dout, inp, K, D, B, T, H, anticausal);
  GpuExec ex{lab};
  toeplitz_backward(ex, dinp, dK, dD, dout, inp, K, D, B, T, H, anticausal, ver == 3 ? lab.chunk : 0, lab.gram_cap);
}

// ---------------------------------------------------------------------------
// Validator
// ---------------------------------------------------------------------------
// One run of version `ver` on case c: outputs poisoned (y, dinp) or set to
// their initial values (dK, dD), then forward and backward; returns
// y, dinp, dK, dD.
template <class X>
std::vector<std::vector<float>> run_case(SsmLab& lab, int ver, const SsmCase& c) {
  size_t n = (size_t)c.B * c.T * c.H;
  Buf<X> u(n), dout(n), y(n), dinp(n);
  Buf<float> K(c.T), D(1), dK(c.T), dD(1);
  u.put(c.u), dout.put(c.dout), K.put(c.K), D.put(c.D), dK.put(c.dK0), dD.put(c.dD0);
  y.poison(), dinp.poison();
  version_forward(lab, ver, y.p, u.p, K.p, D.p, c.B, c.T, c.H, c.anticausal);
  version_backward(lab, ver, dinp.p, dK.p, dD.p, dout.p, u.p, K.p, D.p, c.B, c.T, c.H, c.anticausal);
  cudaCheck(cudaStreamSynchronize(lab.ctx.stream));
  return {y.get(), dinp.get(), dK.get(), dD.get()};
}

// Every version on fresh inputs, both directions, T = 19, 128, 1027, B = 3,
// H = 111 and 1024 in fp32 (exact fp32 products), H = 136 and 1024 in bf16
// (bigs.cu needs H % 8 == 0 for bf16: 16-byte rows). Each run twice: the
// second must repeat the first bit for bit. Returns whether all passed.
inline bool validate(SsmLab& lab) {
  bool all_ok = true;
  uint64_t seed = 1;
  for (bool lowp : {false, true})
    for (int T : {19, 128, 1027})
      for (int H : lowp ? std::vector<int>{136, 1024} : std::vector<int>{111, 1024})
        for (bool anti : {false, true}) {
          const int B = 3;
          SsmCase c = make_case(B, T, H, anti, lowp, seed++);
          SsmRef r = reference(c);
          FftNorms fn = fft_norms(c);
          printf("  %s T %d H %d B %d %s\n", lowp ? "bf16" : "fp32", T, H, B, anti ? "anti-causal" : "causal");
          for (int ver = 1; ver <= 3; ver++) {
            lab.chunk = ver == 3 ? validation_chunk(T) : kDefaultChunk;
            lab.gram_cap = ver == 3 ? 2 * (size_t)T * toeplitz_ld(T) * sizeof(float) : kGramCapBytes;
            int groups = (B + gram_group(B, T, lab.gram_cap) - 1) / gram_group(B, T, lab.gram_cap);
            SsmBounds b = ver == 1 ? fft_bounds(c, r, fn) : toeplitz_bounds(c, r, groups);
            auto run = [&]() { return lowp ? run_case<bf16>(lab, ver, c) : run_case<float>(lab, ver, c); };
            std::string tag = "v" + std::to_string(ver);
            std::vector<std::vector<float>> o1, o2;
            try {  // a library refusing a shape fails this version, not the lab
              o1 = run(), o2 = run();
            } catch (const CudaError& e) {
              printf("    %s FAIL: %s\n", tag.c_str(), e.what());
              all_ok = false;
              continue;
            }
            for (const Check& k : check_ssm(tag, c, r, b, o1[0], o1[1], o1[2], o1[3])) {
              print_check(k);
              all_ok &= k.ok();
            }
            bool same = true;
            for (int i = 0; i < 4; i++) same &= std::memcmp(o1[i].data(), o2[i].data(), o1[i].size() * 4) == 0;
            if (!same) printf("    %s FAIL: a second run gave other bits\n", tag.c_str());
            all_ok &= same;
          }
        }
  lab.chunk = kDefaultChunk, lab.gram_cap = kGramCapBytes;
  return all_ok;
}

// ---------------------------------------------------------------------------
// Benchmark
// ---------------------------------------------------------------------------
template <class X>
void bench_shape(SsmLab& lab, Timer& timer, const Shape& s, int reps) {
  size_t n = (size_t)s.B * s.T * s.H;
  Buf<X> u(n), dout(n), y(n), dinp(n);
  Buf<float> K(s.T), D(1), dK(s.T), dD(1);
  u.put(random_vec(n, 101)), dout.put(random_vec(n, 102)), K.put(random_vec(s.T, 103)), D.put({0.5f});
  dK.put(std::vector<float>(s.T, 0.0f)), dD.put({0.0f});
  int xs = sizeof(X);
  for (int ver = 1; ver <= 3; ver++) try {
      double f = timer.median_ms(
          lab.ctx, [&]() { version_forward(lab, ver, y.p, u.p, K.p, D.p, s.B, s.T, s.H, false); }, 3, reps);
      double b = timer.median_ms(
          lab.ctx,
          [&]() { version_backward(lab, ver, dinp.p, dK.p, dD.p, dout.p, u.p, K.p, D.p, s.B, s.T, s.H, false); }, 3,
          reps);
      auto wf = version_work(ver, xs, s.B, s.T, s.H, false, lab.chunk),
           wb = version_work(ver, xs, s.B, s.T, s.H, true, lab.chunk);
      printf("v%-3d %-5s %5d %3d | %8.4f %8.4f | %7.0f %7.1f | %7.0f %7.1f | %8.4f %8.4f\n", ver,
             xs == 2 ? "bf16" : "fp32", s.T, s.B, f, b, total_bytes(wf) / f / 1e6, total_flops(wf) / f / 1e9,
             total_bytes(wb) / b / 1e6, total_flops(wb) / b / 1e9, 1e3 * predict_s(wf), 1e3 * predict_s(wb));
    } catch (const CudaError& e) {
      printf("v%-3d %-5s %5d %3d | failed: %s\n", ver, xs == 2 ? "bf16" : "fp32", s.T, s.B, e.what());
    }
}

inline void benchmark(SsmLab& lab, int reps) {
  Timer timer;
  printf(
      "\nSSM convolution, causal, H200 expected; median of %d after 3 warm-up, L2 flushed before each; "
      "GB/s and TFLOP/s from the predicted bytes and FLOPs; v3 block %d\n",
      reps, lab.chunk);
  printf("%-4s %-5s %5s %3s | %8s %8s | %7s %7s | %7s %7s | %8s %8s\n", "ver", "prec", "T", "B", "fwd ms", "bwd ms",
         "f GB/s", "f TF/s", "b GB/s", "b TF/s", "pred f", "pred b");
  for (const Shape& s : kBenchShapes) {
    bench_shape<bf16>(lab, timer, s, reps);
    bench_shape<float>(lab, timer, s, reps);
  }
}
#endif  // BIGS_CUDA

}  // namespace lab

#if defined(__CUDACC__) && !defined(LAB_NO_MAIN)
int main(int argc, char** argv) {
  using namespace lab;
  long long chunk = kDefaultChunk;
  return lab_main(
      argc, argv, "lab_ssm_conv", "the SSM convolution lab",
      {{Flag::Int, "chunk", &chunk, 8, 1 << 16, "v3's block of columns in the benchmark (a multiple of 8)"}},
      [&]() { return chunk % 8 ? std::string("--chunk must be a multiple of 8") : std::string(); },
      [&]() { print_predictions((int)chunk); },
      [&](bool validating, bool benching, int reps) {
        SsmLab lab;
        bool ok =
            !validating || run_validation("dev/cuda/ssm_conv.cu", &lab.poison_scratch, [&]() { return validate(lab); });
        lab.chunk = (int)chunk;
        if (benching) benchmark(lab, reps);
        return ok;
      });
}
#endif
