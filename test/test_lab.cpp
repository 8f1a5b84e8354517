// The kernel labs (dev/cuda/ssm_conv.cu, dev/cuda/colsum.cu) checked on the
// CPU, since no GPU may be at hand: every kernel's thread loop and every
// cuBLASLt plan runs here through its CPU twin (SimExec, colsum_tree_sim,
// gemm_cpu: the same index functions and the same orchestration the GPU
// runs), against the labs' double-precision references and the very bounds
// the GPU validation applies, at the labs' validation shapes. What this
// cannot check: cuBLASLt's and cuFFT's own behaviour (that a GemmSpec means
// on the GPU what gemm_cpu does is by construction: lt_gemm maps each field
// to the layout attribute of the same name), shared memory and vector
// loads, and timing. Built with g++ (the labs' CUDA parts sit behind
// __CUDACC__).
#define LAB_NO_MAIN
#include <gtest/gtest.h>

#include "dev/cuda/colsum.cu"
#include "dev/cuda/ssm_conv.cu"

using namespace lab;

namespace {

// ---------------------------------------------------------------------------
// SSM convolution, the Toeplitz route (versions 2 and 3)
// ---------------------------------------------------------------------------

// N from the build's thread loop equals its definition everywhere,
// padding rows included (SimExec's scratch starts as NaN, so a row no
// thread writes would show).
TEST(SsmLab, ToeplitzBuild) {
  for (int T : {19, 128, 1027}) {
    SsmCase c = make_case(1, T, 1, false, false, 7);
    SimExec ex;
    int ldT = toeplitz_ld(T);
    float* N = ex.matrix<float>((size_t)T * ldT);
    ex.build(N, c.K.data(), c.D.data(), T, ldT);
    size_t bad = 0;
    for (int t = 0; t < T; t++)
      for (int s = 0; s < ldT; s++) {
        float want = s >= T || s > t ? 0.0f : t == s ? c.K[0] + c.D[0] : c.K[t - s];
        bad += !(N[(size_t)t * ldT + s] == want);
      }
    EXPECT_EQ(bad, 0u) << "T = " << T;
  }
}

// The largest element index a product touches in A, B and D, so every plan
// can be shown to stay inside its buffers.
struct Extent {
  int64_t a, b, d;
};
Extent extent(const GemmSpec& s) {
  int64_t q = s.batch - 1;
  int64_t a = s.a_off + q * s.sa + (s.ta ? (s.k - 1) + (s.m - 1) * s.lda : (s.m - 1) + (s.k - 1) * s.lda);
  int64_t b = s.b_off + q * s.sb + (s.tb ? (s.n - 1) + (s.k - 1) * s.ldb : (s.k - 1) + (s.n - 1) * s.ldb);
  int64_t d = s.d_off + q * s.sd + (s.m - 1) + (s.n - 1) * s.ldd;
  return {a, b, d};
}

// Every product of every plan, at the validation and benchmark shapes,
// inside its buffers; and v3's FLOPs are B H T (T + C) when C divides T
// (the README's count), v2's 2 B H T^2.
TEST(SsmLab, PlansStayInBounds) {
  std::vector<Shape> shapes = {{3, 19, 111}, {3, 128, 1024}, {3, 1027, 136}};
  for (const Shape& s : kBenchShapes) shapes.push_back(s);
  for (const Shape& sh : shapes)
    for (bool anti : {false, true})
      for (int chunk : {0, validation_chunk(sh.T), kDefaultChunk}) {
        SCOPED_TRACE(strf("B %d T %d H %d chunk %d %s", sh.B, sh.T, sh.H, chunk, anti ? "anti" : "causal"));
        int64_t act = (int64_t)sh.B * sh.T * sh.H, ld = toeplitz_ld(sh.T);
        for (const GemmSpec& s : conv_plan(sh.B, sh.T, sh.H, anti, chunk)) {
          Extent e = extent(s);
          EXPECT_LT(e.a, act);
          EXPECT_LT(e.b, sh.T * ld);
          EXPECT_LT(e.d, act);
          EXPECT_GE(std::min(s.a_off, s.b_off), 0);
          EXPECT_EQ(s.b_off % 8, 0) << "16-byte aligned in bf16";
        }
        int g = gram_group(sh.B, sh.T, kGramCapBytes);
        for (const GemmSpec& s : gram_plan(g, sh.T, sh.H, chunk)) {
          Extent e = extent(s);
          EXPECT_LT(e.a, (int64_t)g * sh.T * sh.H);
          EXPECT_LT(e.b, (int64_t)g * sh.T * sh.H);
          EXPECT_LT(e.d, (int64_t)g * sh.T * ld);
          EXPECT_EQ(s.d_off % 4, 0) << "16-byte aligned in fp32";
        }
      }
  for (const Shape& s : kBenchShapes) {
    double f2 = 0, f3 = 0;
    for (const GemmSpec& g : conv_plan(s.B, s.T, s.H, false, 0)) f2 += 2.0 * g.m * g.n * g.k * g.batch;
    for (const GemmSpec& g : conv_plan(s.B, s.T, s.H, false, kDefaultChunk)) f3 += 2.0 * g.m * g.n * g.k * g.batch;
    EXPECT_EQ(f2, 2.0 * s.B * s.H * s.T * s.T);
    if (s.T % kDefaultChunk == 0) {
      EXPECT_EQ(f3, (double)s.B * s.H * s.T * (s.T + (double)kDefaultChunk));
    }
  }
}

// One case through the CPU twin, forward and backward, with the GPU
// validation's settings for version ver (2: dense, default group cap; 3:
// validation_chunk and a cap of two sequences per group).
std::vector<std::vector<float>> sim_run(const SsmCase& c, int ver, const std::vector<int>& hs, bool swap_gram = false) {
  size_t n = (size_t)c.B * c.T * c.H;
  std::vector<float> y(n, NAN), dinp(n, NAN), dK = c.dK0, dD = c.dD0;
  SimExec ex;
  ex.round_bf16 = c.is_bf16;
  if (!hs.empty()) ex.rows = &hs;
  int chunk = ver == 3 ? validation_chunk(c.T) : 0;
  size_t cap = ver == 3 ? 2 * (size_t)c.T * toeplitz_ld(c.T) * sizeof(float) : kGramCapBytes;
  toeplitz_forward(ex, y.data(), c.u.data(), c.K.data(), c.D.data(), c.B, c.T, c.H, c.anticausal, chunk);
  // swap_gram: the lag sums of the other direction (a deliberate bug).
  toeplitz_backward(ex, dinp.data(), dK.data(), dD.data(), swap_gram ? c.u.data() : c.dout.data(),
                    swap_gram ? c.dout.data() : c.u.data(), c.K.data(), c.D.data(), c.B, c.T, c.H, c.anticausal, chunk,
                    cap);
  return {y, dinp, dK, dD};
}

int groups_for(const SsmCase& c, int ver) {
  size_t cap = ver == 3 ? 2 * (size_t)c.T * toeplitz_ld(c.T) * sizeof(float) : kGramCapBytes;
  int g = gram_group(c.B, c.T, cap);
  return (c.B + g - 1) / g;
}

// Channels a large case computes its conv products on: the edges of the
// 8-wide bf16 groups, the ends and some in between.
std::vector<int> sample_channels(int H) { return {0, 1, 7, 8, 9, H / 2 - 1, H / 2, H - 2, H - 1}; }

// Versions 2 and 3, both directions, fp32 at H = 111 and 1024, bf16 at H = 136
// and 1024 (bf16 as the GPU's storage rounds), T = 19, 128, 1027, B = 3:
// within the bounds, and the bounds sharp enough to reject most of a
// one-index-off result. The largest shape computes y and dinp on a sample of
// channels (dK, dD always whole) and runs in fp32 only.
struct SimCase {
  int T, H;
  bool bf16;
};
class SsmSim : public ::testing::TestWithParam<SimCase> {};

TEST_P(SsmSim, ToeplitzWithinBounds) {
  SimCase p = GetParam();
  for (bool anti : {false, true}) {
    SsmCase c = make_case(3, p.T, p.H, anti, p.bf16, 100 + p.T + p.H + anti);
    std::vector<int> hs = (int64_t)p.T * p.H > 200000 ? sample_channels(p.H) : std::vector<int>();
    SsmRef r = reference(c, hs);
    for (int ver : {2, 3}) {
      std::string tag = strf("v%d %s T %d H %d %s", ver, p.bf16 ? "bf16" : "fp32", p.T, p.H, anti ? "anti" : "causal");
      auto o = sim_run(c, ver, hs);
      for (const Check& k :
           check_ssm(tag, c, r, toeplitz_bounds(c, r, groups_for(c, ver)), o[0], o[1], o[2], o[3], hs)) {
        EXPECT_TRUE(k.ok()) << k.what << ": " << k.bad << " of " << k.n << " outside the bound, worst err/bound "
                            << k.worst_ratio << " at " << k.worst;
        if (k.what.find(" dD") == std::string::npos) {
          EXPECT_GT(k.caught, 0.5) << k.what << ": the bound is too loose";
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, SsmSim,
                         ::testing::Values(SimCase{19, 111, false}, SimCase{19, 1024, false}, SimCase{128, 111, false},
                                           SimCase{128, 1024, false}, SimCase{1027, 111, false},
                                           SimCase{1027, 1024, false}, SimCase{19, 136, true}, SimCase{19, 1024, true},
                                           SimCase{128, 136, true}, SimCase{128, 1024, true},
                                           SimCase{1027, 136, true}));

// The bounds reject plans with an index wrong: the other direction's
// product, one block of v3 reading N one column off, and the other
// direction's lag sums. (So the checks above can fail.)
TEST(SsmLab, BoundsRejectBrokenPlans) {
  const int B = 3, T = 128, H = 111;
  SsmCase c = make_case(B, T, H, false, false, 5);
  SsmRef r = reference(c);
  SsmBounds b = toeplitz_bounds(c, r, 1);
  size_t n = (size_t)B * T * H;
  auto y_check = [&](const std::vector<float>& y) {
    std::vector<double> yd(y.begin(), y.end());
    return check_bounded("y", yd.data(), r.y.data(), b.y.data(), n);
  };
  {  // the anti-causal plan for a causal case
    std::vector<float> y(n, NAN);
    SimExec ex;
    toeplitz_forward(ex, y.data(), c.u.data(), c.K.data(), c.D.data(), B, T, H, true, 0);
    EXPECT_GT(y_check(y).bad, n / 2);
  }
  {  // v3, the second block's N one column to the right
    std::vector<float> y(n, NAN);
    SimExec ex;
    int ldT = toeplitz_ld(T);
    float* N = ex.matrix<float>((size_t)T * ldT);
    ex.build(N, c.K.data(), c.D.data(), T, ldT);
    auto plan = conv_plan(B, T, H, false, 48);
    plan[1].b_off += ldT;
    for (const GemmSpec& s : plan) ex.conv_gemm(s, c.u.data(), N, y.data());
    Check k = y_check(y);
    EXPECT_GT(k.bad, 0u);
    EXPECT_GT(k.bad, (size_t)B * 40 * H) << "most of block 1 (48 of T's columns, the last only partly off)";
  }
  {  // the lag sums of the other direction
    auto o = sim_run(c, 2, {}, true);
    std::vector<double> dK(o[2].begin(), o[2].end());
    EXPECT_GT(check_bounded("dK", dK.data(), r.dK.data(), b.dK.data(), T).bad, (size_t)T / 2);
  }
}

// ---------------------------------------------------------------------------
// Column sums (version 2)
// ---------------------------------------------------------------------------

// The tree of v2 at the lab's validation shapes, 16-byte (8 bf16, 4 fp32
// columns) and 1-column loads, bias and LayerNorm, against the double
// reference within the GPU validation's bound; and a sum missing its last
// row fails it.
TEST(ColsumLab, TreeWithinBounds) {
  struct S {
    int64_t rows, cols, ld;
  };
  for (S s : {S{57, 111, 111}, S{57, 1024, 1024}, S{8192, 1024, 1024}, S{8192, 3072, 3072}, S{1000, 30522, 30528}})
    for (int vec : {1, 4, 8}) {
      if (s.ld % vec) continue;
      SCOPED_TRACE(
          strf("rows %lld cols %lld ld %lld vec %d", (long long)s.rows, (long long)s.cols, (long long)s.ld, vec));
      ColCase c = make_col_case(s.rows, s.cols, s.ld, vec == 8, 11);
      int nmax = s.ld == s.cols ? 2 : 1;
      for (int nout = 1; nout <= nmax; nout++) {
        ColRef r = colsum_ref(nout, c.dout.data(), c.inp.data(), c.mean.data(), c.rstd.data(), s.rows, s.cols, s.ld);
        std::vector<float> dw = c.dw0, db = c.db0;
        std::vector<float*> dst =
            nout == 1 ? std::vector<float*>{db.data()} : std::vector<float*>{dw.data(), db.data()};
        colsum_tree_sim(dst, c.dout.data(), c.inp.data(), c.mean.data(), c.rstd.data(), s.rows, s.cols, s.ld, vec);
        for (int o = 0; o < nout; o++) {
          const std::vector<float>& d0 = nout == 2 && o == 0 ? c.dw0 : c.db0;
          std::vector<double> ref = r.sum[o], bound = colsum_bound(r.abs[o], d0, s.rows, kU32);
          for (size_t i = 0; i < ref.size(); i++) ref[i] += d0[i];
          if (nout == 2 && o == 0)
            for (size_t i = 0; i < bound.size(); i++) bound[i] += gamma_n(3, kU32) * r.abs[0][i];
          std::vector<float> got(dst[o], dst[o] + s.cols);
          Check k = check_bounded(strf("nout %d out %d", nout, o), got.data(), ref.data(), bound.data(), s.cols);
          EXPECT_TRUE(k.ok()) << k.what << " worst " << k.worst_ratio;
        }
        // A column one off would fail at most columns; so would one row short
        // where the rows are few enough for a single term to stand out.
        std::vector<double> ref = r.sum[0], bound = colsum_bound(r.abs[0], c.db0, s.rows, kU32);
        if (nout == 1 && s.cols > 1) {
          for (size_t i = 0; i < ref.size(); i++) ref[i] += c.db0[i];
          std::vector<double> alt = off_by_one(ref, c.db0);
          EXPECT_GT(caught_share(ref.data(), alt.data(), bound.data(), s.cols), 0.5);
        }
        if (nout == 1 && s.rows <= 1000) {
          std::vector<float> short_db = c.db0;
          std::vector<float*> sd = {short_db.data()};
          colsum_tree_sim(sd, c.dout.data(), nullptr, nullptr, nullptr, s.rows - 1, s.cols, s.ld, vec);
          EXPECT_GT(check_bounded("short", short_db.data(), ref.data(), bound.data(), s.cols).bad, (size_t)s.cols / 2);
        }
      }
    }
}

// v2's launch shape: every thread's rows and columns inside the tensor, the
// slices covering every row once, ~1024 blocks where the rows allow.
TEST(ColsumLab, LaunchShape) {
  for (int64_t rows : {57, 1000, 8192})
    for (int64_t cols : {111, 1024, 3072, 30522})
      for (int vec : {1, 4, 8}) {
        int slices = colsum_slices(rows, cols, vec), bx = colsum_blocks_x(cols, vec);
        EXPECT_GE(slices, 1);
        EXPECT_LE(slices, 256);
        EXPECT_GE((int64_t)bx * kLanes * vec, cols);
        int64_t covered = 0, prev = 0;
        for (int by = 0; by < slices; by++) {
          int64_t r0, r1;
          slice_rows(rows, slices, by, &r0, &r1);
          EXPECT_EQ(r0, prev);
          covered += r1 - r0, prev = r1;
        }
        EXPECT_EQ(covered, rows);
        if (rows == 8192 && cols <= 3072) {
          EXPECT_GE((int64_t)bx * slices, 256);
        }
      }
}

}  // namespace
