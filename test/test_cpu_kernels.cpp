// The fast CPU kernels of bigs.cu (the "fast CPU path" sections: the packed
// matrix product, the Toeplitz and FFT convolutions, the threaded S4D
// kernel, the vectorised GELU and cross-entropy) against the plain
// reference loops, run in double precision as the exact answer, on odd
// shapes and on shapes that hit every edge of the tiling; and their results
// bit for bit across repeated runs and thread counts.
//
// Tolerances are rounding-error bounds, not tuned numbers: a sum of k
// products computed in float in any order is within gamma_k = k u of the
// exact sum, relative to the sum of the terms' magnitudes (Higham, Accuracy
// and Stability of Numerical Algorithms, 2nd ed., section 3.1), u = 2^-24.
// So each check is |fast - exact| <= c u S with S the same expression on
// absolute values and c the number of roundings along the longest path.
#define BIGS_NO_MAIN
#include "bigs.cu"

#include <gtest/gtest.h>

#include <limits>
#include <random>

using namespace bigs;

namespace {

constexpr double kU = 1.0 / (1 << 24);  // fp32 unit roundoff

std::vector<float> randf(size_t n, std::mt19937_64& g, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<float> x(n);
  for (auto& v : x) v = (float)d(g);
  return x;
}
std::vector<double> as_double(const std::vector<float>& x, bool absolute = false) {
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); i++) y[i] = absolute ? std::fabs((double)x[i]) : (double)x[i];
  return y;
}

// |got - exact| <= c u bound, elementwise; reports the worst element and the
// worst error as a share of its bound.
::testing::AssertionResult within(const std::string& what, const std::vector<float>& got,
                                  const std::vector<double>& exact, const std::vector<double>& bound, double c) {
  size_t bad = 0, worst = 0;
  double worst_share = 0;
  for (size_t i = 0; i < got.size(); i++) {
    double err = std::fabs((double)got[i] - exact[i]), tol = c * kU * bound[i];
    double share = tol > 0 ? err / tol : (err > 0 ? INFINITY : 0);
    if (!(err <= tol)) bad++;
    if (share > worst_share || std::isnan(share)) worst_share = share, worst = i;
  }
  if (bad == 0) {
    printf("  %-36s worst error %.3f of its bound\n", what.c_str(), worst_share);
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << got.size() << " values outside "
                                       << c << " u x bound; worst at " << worst << ": got " << got[worst]
                                       << ", exact " << exact[worst] << ", bound " << c * kU * bound[worst];
}

// Runs f at a given OpenMP thread count, restoring the previous count.
template <class Fn>
void with_threads(int n, Fn f) {
#ifdef _OPENMP
  int keep = omp_get_max_threads();
  omp_set_num_threads(n);
  f();
  omp_set_num_threads(keep);
#else
  (void)n;
  f();
#endif
}

// ---------------------------------------------------------------------------
// Dense
// ---------------------------------------------------------------------------

struct DenseShape {
  int rows, in_dim, out_dim;
};

// Odd shapes (B 3 x T 19 and 1027 rows, H 111) and shapes one
// below, at and above each block of the tiling (kMR, kNR, kKC, kMC, kNC).
std::vector<DenseShape> dense_shapes() {
  return {{3 * 19, 111, 111},
          {3 * 1027, 111, 37},
          {1, 1, 1},
          {kMR - 1, kKC + 1, kNR + 1},
          {kMR + 1, kKC - 1, kNR - 1},
          {kMR, kKC, kNR},
          {kMC + 1, 2 * kKC + 3, 2 * kNR + 1},
          {2 * kMC + kMR + 1, 33, 65},
          {5, 7, kNC + 3}};
}

TEST(DenseFast, ForwardMatchesReference) {
  std::mt19937_64 g(1);
  for (const DenseShape& s : dense_shapes()) {
    auto x = randf((size_t)s.rows * s.in_dim, g), w = randf((size_t)s.out_dim * s.in_dim, g), b = randf(s.out_dim, g);
    std::vector<float> out((size_t)s.rows * s.out_dim, NAN);
    dense_forward_fast(out.data(), x.data(), w.data(), b.data(), s.rows, s.in_dim, s.out_dim);
    std::vector<double> exact(out.size()), bound(out.size());
    dense_forward_cpu(exact.data(), as_double(x).data(), as_double(w).data(), as_double(b).data(), s.rows, s.in_dim,
                      s.out_dim);
    dense_forward_cpu(bound.data(), as_double(x, true).data(), as_double(w, true).data(), as_double(b, true).data(),
                      s.rows, s.in_dim, s.out_dim);
    // in_dim products and additions, plus the bias.
    EXPECT_TRUE(within(strf("out (%d, %d, %d)", s.rows, s.in_dim, s.out_dim), out, exact, bound, s.in_dim + 2));
  }
}

TEST(DenseFast, BackwardMatchesReferenceAndAccumulates) {
  std::mt19937_64 g(2);
  for (const DenseShape& s : dense_shapes()) {
    size_t nx = (size_t)s.rows * s.in_dim, nw = (size_t)s.out_dim * s.in_dim, ny = (size_t)s.rows * s.out_dim;
    auto x = randf(nx, g), w = randf(nw, g), dy = randf(ny, g);
    // Non-zero starting values: the backward adds to them.
    auto dx = randf(nx, g), dw = randf(nw, g), db = randf(s.out_dim, g);
    auto ex = as_double(dx), ew = as_double(dw), eb = as_double(db);
    auto bx = as_double(dx, true), bw = as_double(dw, true), bb = as_double(db, true);
    dense_backward_fast(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), s.rows, s.in_dim, s.out_dim);
    dense_backward_cpu(ex.data(), ew.data(), eb.data(), as_double(dy).data(), as_double(x).data(), as_double(w).data(),
                       s.rows, s.in_dim, s.out_dim);
    dense_backward_cpu(bx.data(), bw.data(), bb.data(), as_double(dy, true).data(), as_double(x, true).data(),
                       as_double(w, true).data(), s.rows, s.in_dim, s.out_dim);
    std::string shape = strf(" (%d, %d, %d)", s.rows, s.in_dim, s.out_dim);
    EXPECT_TRUE(within("dinp" + shape, dx, ex, bx, s.out_dim + 2));
    EXPECT_TRUE(within("dw" + shape, dw, ew, bw, s.rows + 2));
    EXPECT_TRUE(within("db" + shape, db, eb, bb, s.rows + 2));
  }
}

TEST(DenseFast, NullDinpAndBiasAreSkipped) {
  std::mt19937_64 g(3);
  const int rows = 19, in_dim = 23, out_dim = 29;
  auto x = randf(rows * in_dim, g), w = randf(out_dim * in_dim, g), dy = randf(rows * out_dim, g);
  std::vector<float> dw1(out_dim * in_dim, 0.0f), dw2 = dw1, db(out_dim, 0.0f);
  dense_backward_fast(nullptr, dw1.data(), nullptr, dy.data(), x.data(), w.data(), rows, in_dim, out_dim);
  dense_backward_fast(nullptr, dw2.data(), db.data(), dy.data(), x.data(), w.data(), rows, in_dim, out_dim);
  EXPECT_EQ(dw1, dw2);
  std::vector<float> out(rows * out_dim), out0(rows * out_dim);
  std::vector<float> zero(out_dim, 0.0f);
  dense_forward_fast(out.data(), x.data(), w.data(), nullptr, rows, in_dim, out_dim);
  dense_forward_fast(out0.data(), x.data(), w.data(), zero.data(), rows, in_dim, out_dim);
  EXPECT_EQ(out, out0);  // no bias = a zero bias, bit for bit
}

// The same inputs give the same bits: twice at a fixed thread count, and at
// 1, 2 and 3 threads (each element is summed by one thread in k order).
TEST(DenseFast, BitIdenticalAcrossRunsAndThreadCounts) {
  std::mt19937_64 g(4);
  const int rows = 3 * 1027, in_dim = 111, out_dim = 2 * kNR + 3;
  auto x = randf((size_t)rows * in_dim, g), w = randf(out_dim * in_dim, g), b = randf(out_dim, g);
  auto dy = randf((size_t)rows * out_dim, g);
  auto run = [&] {
    std::vector<float> out((size_t)rows * out_dim), dx((size_t)rows * in_dim, 0.0f), dw(out_dim * in_dim, 0.0f),
        db(out_dim, 0.0f);
    dense_forward_fast(out.data(), x.data(), w.data(), b.data(), rows, in_dim, out_dim);
    dense_backward_fast(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), rows, in_dim, out_dim);
    out.insert(out.end(), dx.begin(), dx.end());
    out.insert(out.end(), dw.begin(), dw.end());
    out.insert(out.end(), db.begin(), db.end());
    return out;
  };
  std::vector<float> first, again, one, three;
  with_threads(2, [&] { first = run(), again = run(); });
  with_threads(1, [&] { one = run(); });
  with_threads(3, [&] { three = run(); });
  EXPECT_EQ(first, again);
  EXPECT_EQ(first, one);
  EXPECT_EQ(first, three);
}

// ---------------------------------------------------------------------------
// SSM convolution
// ---------------------------------------------------------------------------

// One case: sequences u (B, T, H), a decaying kernel K (T) like the S4D
// kernels, D; the exact answers and the bounds from the direct sum in double.
struct ConvCase {
  int B, T, H;
  std::vector<float> u, K, dy;
  float D;
};
ConvCase conv_case(int B, int T, int H, std::mt19937_64& g) {
  ConvCase c{B, T, H, randf((size_t)B * T * H, g), randf(T, g), randf((size_t)B * T * H, g), 0.7f};
  for (int l = 0; l < T; l++) c.K[l] *= (float)std::exp(-3.0 * l / T);
  return c;
}

// The FFT's error is not bounded per element by the sum of the magnitudes of
// the terms but in norm: each output gets about log2(n) u ||K|| ||u_channel||
// (every stage rounds once, twiddles included). The bound used for it:
// 2 log2(n) u ||K||_2 ||x_channel||_2 per channel, added to the direct sum's.
std::vector<double> fft_bound(const ConvCase& c, const std::vector<float>& x, double* log2n) {
  int n = fft_size(c.T);
  *log2n = std::log2((double)n);
  double kn = 0;
  for (float k : c.K) kn += (double)k * k;
  std::vector<double> b(x.size());
  for (int s = 0; s < c.B; s++)
    for (int h = 0; h < c.H; h++) {
      double xn = 0;
      for (int t = 0; t < c.T; t++) xn += (double)x[((size_t)s * c.T + t) * c.H + h] * x[((size_t)s * c.T + t) * c.H + h];
      for (int t = 0; t < c.T; t++) b[((size_t)s * c.T + t) * c.H + h] = std::sqrt(kn * xn);
    }
  return b;
}

// The lengths: 19 and 1027 (odd, and past 1024), and either side of the switch from
// the Toeplitz product to the FFT.
const int kConvTs[] = {19, kToeplitzMaxT, kToeplitzMaxT + 1, 1027};

TEST(SsmConvFast, ForwardMatchesDirectSum) {
  std::mt19937_64 g(5);
  for (int T : kConvTs)
    for (bool anti : {false, true}) {
      ConvCase c = conv_case(3, T, 111, g);
      std::vector<float> out(c.u.size(), NAN);
      ssm_conv_forward_fast(out.data(), c.u.data(), c.K.data(), c.D, c.B, c.T, c.H, anti);
      std::vector<double> exact(out.size()), bound(out.size());
      ssm_conv_direct_cpu(exact.data(), as_double(c.u).data(), as_double(c.K).data(), (double)c.D, c.B, c.T, c.H,
                          anti);
      ssm_conv_direct_cpu(bound.data(), as_double(c.u, true).data(), as_double(c.K, true).data(),
                          (double)std::fabs(c.D), c.B, c.T, c.H, anti);
      double cmul = T + 2;
      if (T > kToeplitzMaxT) {  // the FFT path: add its norm-wise bound (scaled to the same c)
        double log2n;
        auto fb = fft_bound(c, c.u, &log2n);
        for (size_t i = 0; i < bound.size(); i++) bound[i] += 2 * log2n * fb[i] / cmul;
      }
      EXPECT_TRUE(within(strf("T %d %s", T, anti ? "anti-causal" : "causal"), out, exact, bound, cmul));
    }
}

TEST(SsmConvFast, BackwardMatchesDirectSum) {
  std::mt19937_64 g(6);
  for (int T : kConvTs)
    for (bool anti : {false, true}) {
      ConvCase c = conv_case(3, T, 111, g);
      std::vector<float> du(c.u.size(), NAN), dK = randf(T, g), dD = {0.25f};
      auto eK = as_double(dK), bK = as_double(dK, true);
      double eD = dD[0], bD = std::fabs(dD[0]);
      std::vector<double> edu(du.size()), bdu(du.size());
      ssm_conv_backward_fast(du.data(), dK.data(), dD.data(), c.dy.data(), c.u.data(), c.K.data(), c.D, c.B, c.T, c.H,
                             anti);
      ssm_conv_backward_cpu(edu.data(), eK.data(), &eD, as_double(c.dy).data(), as_double(c.u).data(),
                            as_double(c.K).data(), (double)c.D, c.B, c.T, c.H, anti);
      ssm_conv_backward_cpu(bdu.data(), bK.data(), &bD, as_double(c.dy, true).data(), as_double(c.u, true).data(),
                            as_double(c.K, true).data(), (double)std::fabs(c.D), c.B, c.T, c.H, anti);
      std::string what = strf("T %d %s", T, anti ? "anti-causal" : "causal");
      // dK[l] sums B H (T - l) products, through H-term products and T-term
      // diagonal sums (Toeplitz) or in frequency space (FFT, norm-wise).
      double c_du = T + 2, c_dk = c.H + c.T + 4, c_dd = (double)c.B * c.T * c.H + 2;
      if (T > kToeplitzMaxT) {
        double log2n;
        auto fb = fft_bound(c, c.dy, &log2n);
        for (size_t i = 0; i < bdu.size(); i++) bdu[i] += 2 * log2n * fb[i] / c_du;
        // dK: sum over channels of ||dy_c|| ||u_c||, times 2 log2(n).
        auto nu = fft_bound(c, c.u, &log2n);
        double kn = 0, s = 0;
        for (float k : c.K) kn += (double)k * k;
        for (int b = 0; b < c.B; b++)
          for (int h = 0; h < c.H; h++) {
            size_t i = (size_t)b * c.T * c.H + h;
            s += fb[i] * nu[i] / kn;  // (||K|| ||dy_c||)(||K|| ||u_c||) / ||K||^2
          }
        for (auto& v : bK) v += 2 * log2n * s / c_dk;
      }
      EXPECT_TRUE(within("dinp " + what, du, edu, bdu, c_du));
      EXPECT_TRUE(within("dK " + what, dK, eK, bK, c_dk));
      EXPECT_TRUE(within("dD " + what, dD, {eD}, {bD}, c_dd));
    }
}

TEST(SsmConvFast, BitIdenticalAcrossRunsAndThreadCounts) {
  std::mt19937_64 g(7);
  for (int T : {19, 1027}) {
    ConvCase c = conv_case(3, T, 111, g);
    auto run = [&] {
      std::vector<float> out(c.u.size()), du(c.u.size()), dK(T, 0.0f), dD(1, 0.0f);
      ssm_conv_forward_fast(out.data(), c.u.data(), c.K.data(), c.D, c.B, c.T, c.H, false);
      ssm_conv_backward_fast(du.data(), dK.data(), dD.data(), c.dy.data(), c.u.data(), c.K.data(), c.D, c.B, c.T, c.H,
                             true);
      out.insert(out.end(), du.begin(), du.end());
      out.insert(out.end(), dK.begin(), dK.end());
      out.push_back(dD[0]);
      return out;
    };
    std::vector<float> first, again, one, three;
    with_threads(2, [&] { first = run(), again = run(); });
    with_threads(1, [&] { one = run(); });
    with_threads(3, [&] { three = run(); });
    EXPECT_EQ(first, again) << "T " << T;
    EXPECT_EQ(first, one) << "T " << T;
    EXPECT_EQ(first, three) << "T " << T;
  }
}

// The threaded S4D kernel is the reference's arithmetic: equal bit for bit,
// forward and backward (dlog_step but for its rounding), clipped modes
// included.
TEST(S4dKernelFast, EqualsReference) {
  std::mt19937_64 g(11);
  for (auto [N, T] : {std::pair<int, int>{7, 19}, {64, 1027}}) {
    auto a_re = randf(N, g, 0.5), a_im = randf(N, g, 3.0), c = randf(2 * N, g), dK = randf(T, g);
    for (int n = 0; n < N; n += 3) a_re[n] = 0.25f;  // above -1e-4: clipped
    float log_step = -2.3f;
    std::vector<float> K1(T), K2(T);
    s4d_kernel_forward_cpu(K1.data(), a_re.data(), a_im.data(), c.data(), log_step, N, T);
    s4d_kernel_forward_fast(K2.data(), a_re.data(), a_im.data(), c.data(), log_step, N, T);
    EXPECT_EQ(K1, K2) << "N " << N << " T " << T;
    std::vector<float> r1(4 * N + 1, 0.5f), r2 = r1;  // da_re, da_im, dc, dlog_step; they accumulate
    s4d_kernel_backward_cpu(r1.data(), r1.data() + N, r1.data() + 2 * N, r1.data() + 4 * N, dK.data(), a_re.data(),
                            a_im.data(), c.data(), log_step, N, T);
    s4d_kernel_backward_fast(r2.data(), r2.data() + N, r2.data() + 2 * N, r2.data() + 4 * N, dK.data(), a_re.data(),
                             a_im.data(), c.data(), log_step, N, T);
    // dlog_step: N per-mode parts p_n, each rounded to float once, summed in
    // double, added in float: within 3 u (sum |p_n| + 0.5) of the exact sum
    // (the parts taken from the reference in double, one mode at a time).
    double exact = 0.5, mag = 0.5;
    auto dd = as_double(dK), rd = as_double(a_re), id = as_double(a_im), cd = as_double(c);
    for (int n = 0; n < N; n++) {
      double t3[4] = {0, 0, 0, 0}, p = 0;
      s4d_kernel_backward_cpu(t3, t3 + 1, t3 + 2, &p, dd.data(), rd.data() + n, id.data() + n, cd.data() + 2 * n,
                              (double)log_step, 1, T);
      exact += p, mag += std::fabs(p);
    }
    EXPECT_TRUE(within(strf("dlog_step N %d", N), {r2.back()}, {exact}, {mag}, 3));
    r1.pop_back(), r2.pop_back();
    EXPECT_EQ(r1, r2) << "N " << N << " T " << T;
  }
}

// ---------------------------------------------------------------------------
// Vectorised exp, GELU, cross-entropy
// ---------------------------------------------------------------------------

std::vector<float> vf_apply_exp(const std::vector<float>& x) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i + kVecW <= x.size(); i += kVecW) vf_store(y.data() + i, vf_exp(vf_load(x.data() + i)));
  return y;
}

// e^x over its whole clamped range, on a grid finer than the polynomial's
// pieces: within 2 ulp (4 u relative) of the exact value.
TEST(VecMath, ExpWithinTwoUlp) {
  std::vector<float> x;
  for (double v = -87.0; v <= 88.0; v += 1.0 / 1024) x.push_back((float)v);
  x.resize(x.size() / kVecW * kVecW);
  auto y = vf_apply_exp(x);
  std::vector<double> exact(x.size()), bound(x.size());
  for (size_t i = 0; i < x.size(); i++) exact[i] = std::exp((double)x[i]), bound[i] = exact[i];
  EXPECT_TRUE(within("exp", y, exact, bound, 4));
}

// Outside the clamped range e^x is the end's value; NaN stays NaN in every
// lane (found by fuzz/checkpoint: a finite checkpoint whose forward overflows
// made the scalar build convert a NaN to an integer), and GELU passes it on.
TEST(VecMath, ExpClampsAndKeepsNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {nan, -inf, inf, -1e30f, 1e30f, -87.0f, 88.0f, 1.0f, nan};
  x.resize((x.size() + kVecW - 1) / kVecW * kVecW + kVecW, 1.0f);
  x.back() = nan;  // the last lane of a vector too
  auto y = vf_apply_exp(x);
  for (size_t i = 0; i < x.size(); i++) EXPECT_EQ(std::isnan(y[i]), std::isnan(x[i])) << "element " << i;
  EXPECT_EQ(y[1], y[5]);  // below the range: e^-87
  EXPECT_EQ(y[3], y[5]);
  EXPECT_EQ(y[2], y[6]);  // above: e^88
  EXPECT_EQ(y[4], y[6]);
  EXPECT_GT(y[6], 1e38f);
  EXPECT_LT(y[5], 1e-37f);
  std::vector<float> g(x.size());
  activation_forward_fast(g.data(), x.data(), x.size(), Act::GeluTanh);
  EXPECT_TRUE(std::isnan(g[0]) && std::isnan(g[8]) && std::isnan(g.back()));
}

// gelu_tanh in float rounds 1 + tanh near -1, so its error is absolute, a
// few u times |x|; the bound is 8 u (|x| + |gelu(x)|), and the reference's
// own float version must meet it too (the bound is no looser than needed).
TEST(VecMath, GeluMatchesReference) {
  std::mt19937_64 g(8);
  std::vector<float> x = randf(3 * 19 * 111, g, 3.0);
  for (float v : {0.0f, -1e-30f, 1e-30f, -10.0f, 10.0f, -50.0f, 50.0f}) x.push_back(v);
  const size_t n = x.size();
  std::vector<float> y(n), dy(n), ref(n), dref(n), ones(n, 1.0f);
  activation_forward_fast(y.data(), x.data(), n, Act::GeluTanh);
  activation_backward_fast(dy.data(), ones.data(), x.data(), n, Act::GeluTanh);
  activation_forward_cpu(ref.data(), x.data(), n, Act::GeluTanh);
  activation_backward_cpu(dref.data(), ones.data(), x.data(), n, Act::GeluTanh);
  std::vector<double> ey(n), ed(n), by(n), bd(n);
  for (size_t i = 0; i < n; i++) {
    ey[i] = gelu_tanh((double)x[i]), ed[i] = gelu_tanh_grad((double)x[i]);
    by[i] = std::fabs(x[i]) + std::fabs(ey[i]);
    bd[i] = 1 + std::fabs(x[i]) + std::fabs(ed[i]);
  }
  EXPECT_TRUE(within("gelu fast", y, ey, by, 8));
  EXPECT_TRUE(within("gelu reference", ref, ey, by, 8));
  EXPECT_TRUE(within("gelu' fast", dy, ed, bd, 8));
  EXPECT_TRUE(within("gelu' reference", dref, ed, bd, 8));
  // The other activations are the reference's, bit for bit.
  for (Act a : {Act::GeluErf, Act::Tanh}) {
    activation_forward_fast(y.data(), x.data(), n, a);
    activation_forward_cpu(ref.data(), x.data(), n, a);
    EXPECT_EQ(y, ref);
    activation_backward_fast(dy.data(), ones.data(), x.data(), n, a);
    activation_backward_cpu(dref.data(), ones.data(), x.data(), n, a);
    EXPECT_EQ(dy, dref);
  }
}

// A row's softmax sums V exponentials, each within a few u: the loss within
// (V + 8) u (1 + |loss| + |max|), each gradient within (V + 8) u |scale| (p + 1).
TEST(VecMath, CrossEntropyMatchesReference) {
  std::mt19937_64 g(10);
  for (int V : {1, kVecW + 1, 4096 + 3}) {
    const int rows = 19;
    auto x = randf((size_t)rows * V, g, 3.0);
    std::vector<int> t(rows);
    for (int r = 0; r < rows; r++) t[r] = (r * 7919) % V;
    const float scale = 0.37f;
    std::vector<float> loss(rows), d((size_t)rows * V);
    crossentropy_forward_fast(loss.data(), x.data(), t.data(), rows, V);
    crossentropy_backward_fast(d.data(), x.data(), t.data(), scale, rows, V);
    std::vector<double> el(rows), ed(d.size()), bl(rows), bd(d.size());
    auto xd = as_double(x);
    crossentropy_forward_cpu(el.data(), xd.data(), t.data(), rows, V);
    crossentropy_backward_cpu(ed.data(), xd.data(), t.data(), (double)scale, rows, V);
    for (int r = 0; r < rows; r++) {
      double mx = *std::max_element(xd.begin() + (size_t)r * V, xd.begin() + (size_t)(r + 1) * V);
      bl[r] = 1 + std::fabs(el[r]) + std::fabs(mx);
      for (int v = 0; v < V; v++) {
        double p = ed[(size_t)r * V + v] / scale + (v == t[r]);
        bd[(size_t)r * V + v] = scale * (p + 1);
      }
    }
    EXPECT_TRUE(within(strf("loss V %d", V), loss, el, bl, V + 8));
    EXPECT_TRUE(within(strf("dlogits V %d", V), d, ed, bd, V + 8));
  }
}

}  // namespace
