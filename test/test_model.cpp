// The BiGS model on the CPU: every layer against finite differences in
// double precision, the FFT convolution against the direct sum, and the whole
// model against the independent PyTorch reference (dev/reference.py).
#define BIGS_NO_MAIN
#include <gtest/gtest.h>

#include <functional>
#include <random>

#include "bigs.cu"
#include "test/check.h"

using namespace bigs;
using namespace bigs_test;

namespace {

std::vector<double> randn(size_t n, std::mt19937_64& g, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> x(n);
  for (auto& v : x) v = d(g);
  return x;
}

// Central differences of the scalar `loss()` w.r.t. x, against `grad`. At most
// max_checks evenly spread elements, so big tensors stay fast. Double
// precision with eps = 1e-6: truncation ~1e-12, rounding ~1e-9. A loss that
// is linear in x has no truncation error, so a larger eps there cuts the
// rounding noise instead (which grows with the loss's magnitude).
::testing::AssertionResult fd_matches(const std::string& what, std::vector<double>& x, const std::vector<double>& grad,
                                      const std::function<double()>& loss, size_t max_checks = 400, double eps = 1e-6) {
  const double atol = 1e-7, rtol = 1e-5;
  size_t step = std::max<size_t>(1, x.size() / max_checks);
  std::vector<double> num, ana;
  for (size_t i = 0; i < x.size(); i += step) {
    double keep = x[i];
    x[i] = keep + eps;
    double lp = loss();
    x[i] = keep - eps;
    double lm = loss();
    x[i] = keep;
    num.push_back((lp - lm) / (2 * eps));
    ana.push_back(grad[i]);
  }
  return all_close(what, ana.data(), num.data(), num.size(), atol, rtol);
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  return s;
}

// Odd shapes throughout: H not a multiple of anything, T not a power of two.
constexpr int B = 3, T = 19, H = 111;

}  // namespace

// ===========================================================================
// Finite-difference checks of every backward, in double precision
// ===========================================================================

TEST(LayerGrad, Embedding) {
  std::mt19937_64 g(1);
  const int V = 13, types = 2;
  auto wte = randn(V * H, g), wpe = randn(T * H, g), wtt = randn(types * H, g), r = randn(B * T * H, g);
  std::vector<int> ids(B * T), tt(B * T);
  for (int i = 0; i < B * T; i++) ids[i] = (i * 7) % V, tt[i] = (i / 5) % 2;  // repeated ids on purpose
  // The backward accumulates (+=): start from 0.5 and subtract it afterwards.
  std::vector<double> out(B * T * H), dwte(V * H, 0.5), dwpe(T * H, 0.5), dwtt(types * H, 0.5);
  auto loss = [&] {
    embedding_forward_cpu(out.data(), ids.data(), tt.data(), wte.data(), wpe.data(), wtt.data(), B, T, H);
    return dot(out, r);
  };
  embedding_backward_cpu(dwte.data(), dwpe.data(), dwtt.data(), r.data(), ids.data(), tt.data(), B, T, H);
  for (auto* v : {&dwte, &dwpe, &dwtt})
    for (auto& e : *v) e -= 0.5;
  EXPECT_TRUE(fd_matches("dwte", wte, dwte, loss));
  EXPECT_TRUE(fd_matches("dwpe", wpe, dwpe, loss));
  EXPECT_TRUE(fd_matches("dwtt", wtt, dwtt, loss));
}

TEST(LayerGrad, LayerNorm) {
  std::mt19937_64 g(2);
  const int rows = B * T;
  auto x = randn(rows * H, g, 2.0), w = randn(H, g), b = randn(H, g), r = randn(rows * H, g);
  for (auto& v : x) v += 3.0;  // a large mean, as real activations have
  std::vector<double> out(rows * H), mean(rows), rstd(rows), dx(rows * H, 0.5), dw(H, 0.5), db(H, 0.5);
  auto loss = [&] {
    layernorm_forward_cpu(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), rows, H);
    return dot(out, r);
  };
  loss();
  layernorm_backward_cpu(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), mean.data(), rstd.data(), rows,
                         H);
  for (auto* v : {&dx, &dw, &db})  // it accumulates: started from 0.5
    for (auto& e : *v) e -= 0.5;
  EXPECT_TRUE(fd_matches("dx", x, dx, loss));
  EXPECT_TRUE(fd_matches("dw", w, dw, loss));
  EXPECT_TRUE(fd_matches("db", b, db, loss));
}

TEST(LayerGrad, Dense) {
  std::mt19937_64 g(3);
  const int rows = B * T, out_dim = 37;
  auto x = randn(rows * H, g), w = randn(out_dim * H, g), b = randn(out_dim, g), r = randn(rows * out_dim, g);
  std::vector<double> out(rows * out_dim);
  // The backward accumulates: start from non-zero buffers and subtract.
  std::vector<double> dx(rows * H, 0.5), dw(out_dim * H, 0.5), db(out_dim, 0.5);
  auto loss = [&] {
    dense_forward_cpu(out.data(), x.data(), w.data(), b.data(), rows, H, out_dim);
    return dot(out, r);
  };
  dense_backward_cpu(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), rows, H, out_dim);
  for (auto* v : {&dx, &dw, &db})
    for (auto& e : *v) e -= 0.5;
  EXPECT_TRUE(fd_matches("dx", x, dx, loss));
  EXPECT_TRUE(fd_matches("dw", w, dw, loss));
  EXPECT_TRUE(fd_matches("db", b, db, loss));
}

TEST(LayerGrad, Activations) {
  std::mt19937_64 g(4);
  const size_t n = B * T * H;
  for (Act act : {Act::GeluTanh, Act::GeluErf, Act::Tanh}) {
    auto x = randn(n, g, 2.0), r = randn(n, g);
    std::vector<double> out(n), dx(n);
    auto loss = [&] {
      activation_forward_cpu(out.data(), x.data(), n, act);
      return dot(out, r);
    };
    activation_backward_cpu(dx.data(), r.data(), x.data(), n, act);
    EXPECT_TRUE(fd_matches("dx act " + std::to_string((int)act), x, dx, loss));
  }
}

TEST(LayerGrad, GeluFormsDiffer) {
  // The two GELU forms must not be confused: they differ by 4.4e-4 at |x| = 2.5.
  EXPECT_GT(std::fabs(gelu_tanh(2.5) - gelu_erf(2.5)), 4e-4);
  EXPECT_NEAR(gelu_erf(1.0), 0.8413447460685429, 1e-15);  // x Phi(x)
  EXPECT_NEAR(gelu_tanh(1.0), 0.8411919906082768, 1e-15);
}

TEST(LayerGrad, Gate) {
  std::mt19937_64 g(5);
  const size_t n = B * T * H;
  auto a = randn(n, g), b = randn(n, g), r = randn(n, g);
  std::vector<double> out(n), da(n), db(n);
  auto loss = [&] {
    gate_forward_cpu(out.data(), a.data(), b.data(), n);
    return dot(out, r);
  };
  gate_backward_cpu(da.data(), db.data(), r.data(), a.data(), b.data(), n);
  EXPECT_TRUE(fd_matches("da", a, da, loss));
  EXPECT_TRUE(fd_matches("db", b, db, loss));
}

TEST(LayerGrad, S4dKernel) {
  std::mt19937_64 g(6);
  for (int TT : {19, 37}) {
    const int N = 8;
    auto a_re = randn(N, g, 0.3), a_im = randn(N, g, 3.0), c = randn(2 * N, g), r = randn(TT, g);
    for (auto& v : a_re) v = -std::fabs(v) - 0.05;
    a_re[3] = 0.05;  // above the clip at -1e-4: its gradient must be exactly 0
    std::vector<double> lstep = {std::log(0.1)}, K(TT), da_re(N, 0.5), da_im(N, 0.5), dc(2 * N, 0.5), dls(1, 0.5);
    auto loss = [&] {
      s4d_kernel_forward_cpu(K.data(), a_re.data(), a_im.data(), c.data(), lstep[0], N, TT);
      return dot(K, r);
    };
    s4d_kernel_backward_cpu(da_re.data(), da_im.data(), dc.data(), dls.data(), r.data(), a_re.data(), a_im.data(),
                            c.data(), lstep[0], N, TT);
    for (auto* v : {&da_re, &da_im, &dc, &dls})  // it accumulates: started from 0.5
      for (auto& e : *v) e -= 0.5;
    EXPECT_EQ(da_re[3], 0.0);
    EXPECT_TRUE(fd_matches("da_re", a_re, da_re, loss));
    EXPECT_TRUE(fd_matches("da_im", a_im, da_im, loss));
    EXPECT_TRUE(fd_matches("dc", c, dc, loss));
    EXPECT_TRUE(fd_matches("dlog_step", lstep, dls, loss));
  }
}

// Both directions, with the direct sum (T = 19) and the FFT (T >= kFftMinT).
TEST(LayerGrad, SsmConv) {
  std::mt19937_64 g(7);
  for (int TT : {19, kFftMinT + 3})
    for (bool anticausal : {false, true}) {
      const int HH = TT < kFftMinT ? H : 2;
      auto u = randn(B * TT * HH, g), K = randn(TT, g, 0.5), r = randn(B * TT * HH, g);
      std::vector<double> D = {0.7}, out(B * TT * HH), du(B * TT * HH), dK(TT, 0.5), dD(1, 0.5);
      auto loss = [&] {
        ssm_conv_forward_cpu(out.data(), u.data(), K.data(), D[0], B, TT, HH, anticausal);
        return dot(out, r);
      };
      ssm_conv_backward_cpu(du.data(), dK.data(), dD.data(), r.data(), u.data(), K.data(), D[0], B, TT, HH, anticausal);
      for (auto* v : {&dK, &dD})  // these accumulate (du is overwritten): started from 0.5
        for (auto& e : *v) e -= 0.5;
      std::string tag = std::string(anticausal ? " anti-causal" : " causal") + " T=" + std::to_string(TT);
      // The convolution is linear in each of u, K and D: eps = 1e-3 is exact.
      EXPECT_TRUE(fd_matches("du" + tag, u, du, loss, 100, 1e-3));
      EXPECT_TRUE(fd_matches("dK" + tag, K, dK, loss, 100, 1e-3));
      EXPECT_TRUE(fd_matches("dD" + tag, D, dD, loss, 100, 1e-3));
    }
}

TEST(LayerGrad, Dropout) {
  std::mt19937_64 g(8);
  const size_t n = B * T * H;
  auto x = randn(n, g), r = randn(n, g);
  std::vector<double> out(n), dx(n);
  auto loss = [&] {
    dropout_forward_cpu(out.data(), x.data(), n, 0.3f, 42, 7);
    return dot(out, r);
  };
  loss();
  size_t dropped = std::count(out.begin(), out.end(), 0.0);
  EXPECT_NEAR((double)dropped / n, 0.3, 0.02);  // 6327 draws: 4 sigma is 0.023
  for (size_t i = 0; i < n; i++)                // inverted dropout: every kept value scaled by 1 / (1 - p)
    if (out[i] != 0.0) {
      ASSERT_NEAR(out[i], x[i] / (1 - (double)0.3f), 1e-15) << i;
    }
  dropout_backward_cpu(dx.data(), r.data(), n, 0.3f, 42, 7);
  EXPECT_TRUE(fd_matches("dx", x, dx, loss));
}

TEST(LayerGrad, CrossEntropy) {
  std::mt19937_64 g(9);
  const int rows = 7, V = 23;
  auto x = randn(rows * V, g, 3.0), r = randn(rows, g);
  std::vector<int> tgt = {0, 22, 5, 5, 11, 3, 17};
  std::vector<double> losses(rows), dx(rows * V, 0), tmp(rows * V);
  auto loss = [&] {
    crossentropy_forward_cpu(losses.data(), x.data(), tgt.data(), rows, V);
    return dot(losses, r);
  };
  for (int i = 0; i < rows; i++) {  // the backward takes one scale for all rows
    crossentropy_backward_cpu(tmp.data(), x.data(), tgt.data(), r[i], rows, V);
    for (int v = 0; v < V; v++) dx[i * V + v] = tmp[i * V + v];
  }
  EXPECT_TRUE(fd_matches("dlogits", x, dx, loss));
}

TEST(LayerGrad, MeanPool) {
  std::mt19937_64 g(10);
  auto x = randn(B * T * H, g), r = randn(B * H, g);
  std::vector<int> ids(B * T, 5);
  for (int t = 12; t < T; t++) ids[1 * T + t] = kPadId;  // sequence 1 has padding
  ids[1 * T + 4] = kPadId;                                // and a literal "[PAD]" in its text
  for (int t = 0; t < T; t++) ids[2 * T + t] = kPadId;   // sequence 2 is all padding
  std::vector<double> out(B * H), dx(B * T * H, 0.5);
  auto loss = [&] {
    meanpool_forward_cpu(out.data(), x.data(), ids.data(), kPadId, B, T, H);
    return dot(out, r);
  };
  meanpool_backward_cpu(dx.data(), r.data(), ids.data(), kPadId, B, T, H);
  for (auto& e : dx) e -= 0.5;  // it accumulates: started from 0.5
  EXPECT_TRUE(fd_matches("dx", x, dx, loss));
  EXPECT_EQ(dx[(1 * T + 15) * H], 0.0);  // padding gets no gradient
  // Sequence 1 is the mean of its first 12 positions, the [PAD] id at 4 included.
  loss();
  for (int h = 0; h < H; h++) {
    double m = 0;
    for (int t = 0; t < 12; t++) m += x[(1 * T + t) * H + h] / 12;
    EXPECT_NEAR(out[1 * H + h], m, 1e-12) << "h " << h;
  }
  EXPECT_NEAR(dx[(1 * T + 4) * H], r[1 * H] / 12, 1e-12);  // the literal [PAD] gets its share of the gradient
  for (int h = 0; h < H; h++) EXPECT_EQ(out[2 * H + h], 0.0);  // all padding pools to 0
}

// ===========================================================================
// FFT convolution == direct sum
// ===========================================================================

TEST(SsmConv, FftEqualsDirect) {
  std::mt19937_64 g(11);
  for (int TT : {1, 2, 19, 128, 512, 4096})
    for (bool anticausal : {false, true}) {
      const int BB = 2, HH = 3;
      auto ud = randn(BB * TT * HH, g), Kd = randn(TT, g);
      for (int l = 0; l < TT; l++) Kd[l] *= std::exp(-0.002 * l);  // a decaying kernel, as S4D's
      std::vector<float> u(ud.begin(), ud.end()), K(Kd.begin(), Kd.end()), a(u.size()), b(u.size());
      ssm_conv_fft_cpu(a.data(), u.data(), K.data(), 0.5f, BB, TT, HH, anticausal);
      ssm_conv_direct_cpu(b.data(), u.data(), K.data(), 0.5f, BB, TT, HH, anticausal);
      // 1e-5 relative to the output's scale: fp32 rounding, not the algorithm.
      double scale = 0;
      for (float v : b) scale = std::max(scale, (double)std::fabs(v));
      std::vector<double> want(b.begin(), b.end());
      EXPECT_TRUE(
          all_close("fft vs direct T=" + std::to_string(TT), a.data(), want.data(), want.size(), 1e-5 * scale, 1e-5));
    }
}

// ===========================================================================
// Against the reference (dev/reference.py, PyTorch autograd in float64)
// ===========================================================================

namespace {

// The CPU model as it is, at the fp32 tolerance.
void check_on_cpu(const std::string& s) {
  check_section(
      s, [](Model&) {},
      [](Model& m, size_t n) {
        const float* h = m.a.res + (size_t)m.c.L * m.B * m.c.T * m.c.H;
        return std::vector<float>(h, h + n);
      },
      [](const std::string& what, const std::vector<float>& a, const std::vector<double>& b) {
        return all_close(what, a, b);
      });
}

}  // namespace

TEST(Reference, Mlm) { check_on_cpu("mlm"); }
TEST(Reference, Classification) { check_on_cpu("cls"); }
TEST(Reference, Regression) { check_on_cpu("reg"); }

TEST(Reference, S4dKernel) {
  const Fixture& fx = fixture();
  ASSERT_TRUE(fx.error.empty()) << fx.error;
  auto f32 = [&](const std::string& k) {
    std::vector<float> v;
    for (double d : fx.at(k).data) v.push_back((float)d);
    return v;
  };
  auto a_re = f32("ssm/a_re"), a_im = f32("ssm/a_im"), c = f32("ssm/c"), ls = f32("ssm/log_step"), dK = f32("ssm/dK");
  int N = (int)a_re.size(), TT = (int)dK.size();
  std::vector<float> K(TT), da_re(N, 0), da_im(N, 0), dc(2 * N, 0), dls(1, 0);
  s4d_kernel_forward_cpu(K.data(), a_re.data(), a_im.data(), c.data(), ls[0], N, TT);
  EXPECT_TRUE(all_close("ssm K", K.data(), fx.at("ssm/K").data.data(), TT, kAtol, kRtol));
  s4d_kernel_backward_cpu(da_re.data(), da_im.data(), dc.data(), dls.data(), dK.data(), a_re.data(), a_im.data(),
                          c.data(), ls[0], N, TT);
  EXPECT_TRUE(all_close("ssm grad a_re", da_re.data(), fx.at("ssm/grad_a_re").data.data(), N, kAtol, kRtol));
  EXPECT_TRUE(all_close("ssm grad a_im", da_im.data(), fx.at("ssm/grad_a_im").data.data(), N, kAtol, kRtol));
  EXPECT_TRUE(all_close("ssm grad c", dc.data(), fx.at("ssm/grad_c").data.data(), 2 * N, kAtol, kRtol));
  EXPECT_TRUE(all_close("ssm grad log_step", dls.data(), fx.at("ssm/grad_log_step").data.data(), 1, kAtol, kRtol));
}

TEST(Reference, HippoInit) {
  const Fixture& fx = fixture();
  ASSERT_TRUE(fx.error.empty()) << fx.error;
  for (int N : {8, 64}) {
    std::vector<double> got = hippo_a_im(N);
    const auto& want = fx.at("hippo/N" + std::to_string(N));
    ASSERT_EQ(want.size(), (size_t)N);
    EXPECT_TRUE(all_close("hippo N=" + std::to_string(N), got.data(), want.data.data(), N, 1e-4, 0.0));
  }
}

// ===========================================================================
// Tables and initialisation
// ===========================================================================

TEST(Model, TablesAreConsistent) {
  Config c;
  ASSERT_TRUE(config_preset("large", &c));
  auto t = param_table(c);
  // BiGS-large dense parameters per layer: 2 (H x I) + 1 (I x H) + 4 (H x H).
  size_t per_layer = 3ull * 1024 * 3072 + 4ull * 1024 * 1024;
  size_t dense = 0;
  for (const auto& x : t)
    if (std::string(x.name).find("_w") != std::string::npos && x.name[0] == 'd') dense += x.count;
  EXPECT_EQ(dense, per_layer * 23);
  for (size_t i = 1; i < t.size(); i++) EXPECT_EQ(t[i].offset, t[i - 1].offset + t[i - 1].count);
}

TEST(Model, InitFollowsTheSpec) {
  Config c{50, 16, 24, 2, 8, 12, 2, 0};
  Model m;
  std::string err;
  ASSERT_TRUE(model_build(&m, c, 2, 8, &err)) << err;
  model_init(&m, 123);
  std::vector<double> w = hippo_a_im(8);
  for (int l = 0; l < 2; l++)
    for (int n = 0; n < 8; n++) {
      EXPECT_EQ(m.p.fs_a_re[l * 8 + n], -0.5f);
      EXPECT_FLOAT_EQ(m.p.bs_a_im[l * 8 + n], (float)w[n]);
    }
  for (int l = 0; l < 2; l++) {
    EXPECT_EQ(m.p.fs_d[l], 1.0f);
    EXPECT_GE(m.p.bs_log_step[l], std::log(0.01f));
    EXPECT_LE(m.p.bs_log_step[l], 0.0f);
  }
  EXPECT_EQ(m.p.ln_w[5], 1.0f);
  EXPECT_EQ(m.p.head_ln_w[0], 1.0f);
  EXPECT_EQ(m.p.dv_b[3], 0.0f);
  double s2 = 0;  // word embeddings ~ N(0, 0.02)
  for (int i = 0; i < c.V * c.H; i++) s2 += (double)m.p.wte[i] * m.p.wte[i];
  EXPECT_NEAR(std::sqrt(s2 / (c.V * c.H)), 0.02, 0.002);
  double cs = 0;  // C ~ N(0, 1/2) per component
  for (int i = 0; i < 2 * 8 * 2; i++) cs += (double)m.p.fs_c[i] * m.p.fs_c[i];
  EXPECT_NEAR(cs / 32, 0.5, 0.3);
}

// The two dense layers the official model creates without an explicit
// initializer, the MLM transform and the classifier, get Flax's default,
// lecun normal (std 1/sqrt(fan_in) = 1/8 at H = 64); the pooler, like every
// other kernel, N(0, 0.02). Bounds: 5 standard errors of a std estimate
// (relative error 1/sqrt(2n)).
TEST(Model, LecunNormalForTheMlmTransformAndTheClassifier) {
  Config c{50, 64, 24, 1, 4, 8, 2, 3};
  Model m;
  std::string err;
  ASSERT_TRUE(model_build(&m, c, 2, 8, &err)) << err;
  model_init(&m, 7);
  auto rms = [](const float* x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return std::sqrt(s / n);
  };
  auto bound = [](double std, size_t n) { return 5 * std / std::sqrt(2.0 * n); };
  EXPECT_NEAR(rms(m.p.head_w, 64 * 64), 0.125, bound(0.125, 64 * 64));
  EXPECT_NEAR(rms(m.p.cls_w, 3 * 64), 0.125, bound(0.125, 3 * 64));
  EXPECT_NEAR(rms(m.p.pool_w, 64 * 64), 0.02, bound(0.02, 64 * 64));
  EXPECT_NEAR(rms(m.p.dv_w, 24 * 64), 0.02, bound(0.02, 24 * 64));
}

TEST(Model, BadBatchIsRejected) {
  Config c{50, 16, 24, 1, 4, 6, 2, 0};
  Model m;
  std::string err;
  ASSERT_TRUE(model_build(&m, c, 2, 12, &err));
  std::vector<int> ids(12, 5), types(12, 0), tg(12, -1);
  ids[3] = 50;  // == V
  Batch b{2, ids.data(), types.data(), tg.data(), nullptr};
  Loss loss;
  EXPECT_FALSE(model_forward(m, b, false, &loss, &err));
  EXPECT_NE(err.find("id 50"), std::string::npos) << err;
  Config bad = c;
  bad.H = 0;
  EXPECT_FALSE(model_build(&m, bad, 2, 12, &err));
  EXPECT_NE(err.find("H = 0"), std::string::npos) << err;
}

// The GPU memory plan (computed on the host; model_to_device allocates
// exactly its blocks) against a count made here from the layer: per layer
// and token, 11 activations of width H and 5 of width I are kept (docs/MODEL.md
// section 3: ln, uf and ub before and after GELU, the two SSM outputs, the
// two dense outputs, the gate, the residual; v and g before and after
// GELU, and g * v), 2 bytes each in bf16 but for the residual stream,
// which stays fp32.
TEST(Plan, ActivationsAndParametersAsCounted) {
  Config c;
  ASSERT_TRUE(config_preset("large", &c));
  c.V = 30522, c.T = 512;
  const int B = 4, per_seq = 20;
  GpuPlan bf = gpu_plan(c, B, B * per_seq, Precision::Bf16), fp = gpu_plan(c, B, B * per_seq, Precision::Fp32);
  double per_layer = (double)c.L * B * c.T * ((10.0 * c.H + 5.0 * c.I) * 2 + 4.0 * c.H);
  EXPECT_GE((double)bf.acts, per_layer);
  EXPECT_LE((double)bf.acts, 1.1 * per_layer) << "the layers' activations are nearly all of it";
  EXPECT_GT((double)fp.acts / bf.acts, 1.9);
  EXPECT_LE((double)fp.acts / bf.acts, 2.0);
  size_t n = table_total(param_table(c)), tensors = param_table(c).size();
  EXPECT_GE(bf.params, 16 * n) << "weights, gradients and two moments in fp32";
  EXPECT_LE(bf.params, 16 * (n + 128 * tensors)) << "plus at most the alignment padding";
  EXPECT_EQ(fp.weights16, 0u);
  EXPECT_EQ(bf.weights16 * 2, bf.params / 4) << "the bf16 copy: 2 bytes per element of the same layout";
  // The largest batch that fits: its plan fits in 95% of the memory, one more does not.
  double mem = 141e9;
  int fit = gpu_max_batch(c, per_seq, Precision::Bf16, mem);
  ASSERT_GT(fit, 0);
  EXPECT_LE((double)gpu_plan(c, fit, fit * per_seq, Precision::Bf16).total(), 0.95 * mem);
  EXPECT_GT((double)gpu_plan(c, fit + 1, (fit + 1) * per_seq, Precision::Bf16).total(), 0.95 * mem);
  EXPECT_EQ(gpu_max_batch(c, per_seq, Precision::Bf16, 1e9), 0) << "the parameters alone need 5.5 GB";
}

// The host half of the GPU's embedding backward: positions grouped by key,
// keys ascending, positions ascending within a key, appended after what v
// already holds.
TEST(Embedding, GroupByKeyIsAStableCountingSort) {
  std::vector<int> key = {3, 0, 3, 7, 0, 3, 5}, v = {42};
  int groups = group_by_key(&v, key.data(), (int)key.size());
  ASSERT_EQ(groups, 4);
  const int n = (int)key.size();
  std::vector<int> order(v.begin() + 1, v.begin() + 1 + n), start(v.begin() + 1 + n, v.begin() + 1 + n + groups + 1),
      dest(v.begin() + 1 + n + groups + 1, v.end());
  EXPECT_EQ(v[0], 42);
  EXPECT_EQ(order, (std::vector<int>{1, 4, 0, 2, 5, 6, 3}));
  EXPECT_EQ(start, (std::vector<int>{0, 2, 5, 6, 7}));
  EXPECT_EQ(dest, (std::vector<int>{0, 3, 5, 7}));
}

// ===========================================================================
// The cost device: the GPU's step as numbers
// ===========================================================================

namespace {

// One bench step of a config on the cost device.
CostLedger step_ledger(const Config& c, int B, int per_seq, Precision prec) {
  CostLedger led;
  std::string err;
  EXPECT_TRUE(bench_step_cost(c, B, per_seq, prec, &led, &err)) << err;
  return led;
}

const CostRow* row(const CostLedger& led, const std::string& op) {
  for (const CostRow& r : led.rows)
    if (r.op == op) return &r;
  return nullptr;
}

}  // namespace

// The dense rows' FLOPs against a count made here: 2 x the multiply-adds of
// every product, forward once and backward twice (the input's gradient and
// the weight's): per layer the seven dense
// layers of docs/MODEL.md section 3 on B T rows, and the MLM head's transform and
// decoder on the P predicted rows.
TEST(Cost, DenseFlopsAsCounted) {
  for (Precision prec : {Precision::Bf16, Precision::Fp32}) {
    Config c;
    ASSERT_TRUE(config_preset("large", &c));
    c.T = 128;
    const int B = 4, per_seq = 20;
    CostLedger led = step_ledger(c, B, per_seq, prec);
    double BT = (double)B * c.T, P = (double)B * per_seq, H = c.H, I = c.I, V = c.V;
    double macs = c.L * BT * (3 * H * I + 4 * H * H) + P * (H * H + H * V);  // one pass, every product
    double dense = 0;
    for (const char* op : {"dense", "dense + GELU", "dense backward"})  // "dense + GELU": fused, bf16 only
      if (row(led, op)) dense += row(led, op)->flops;
    ASSERT_NE(row(led, "dense backward"), nullptr);
    EXPECT_EQ(row(led, "dense + GELU") != nullptr, prec == Precision::Bf16);
    EXPECT_DOUBLE_EQ(dense, 3 * 2 * macs) << precision_name(prec);
  }
}

// An elementwise operation moves n x element size x (inputs + outputs): the
// gates read two tensors and write one (forward, over the (B, T, H) gate and
// the (B, T, I) g * v of each layer); backward, the (B, T, H) gate reads
// three and writes two, and the fused gate + GELU backward of the (B, T, I)
// branch reads five (dgv, g, v and both pre-activations) and writes two;
// all in the activation precision.
TEST(Cost, ElementwiseBytesAsCounted) {
  Config c{101, 24, 40, 3, 8, 19, 2, 0};
  const int B = 3;
  for (Precision prec : {Precision::Bf16, Precision::Fp32}) {
    double s = prec == Precision::Bf16 ? 2 : 4, nH = (double)B * c.T * c.H * c.L, nI = (double)B * c.T * c.I * c.L;
    const CostLedger led = step_ledger(c, B, 2, prec);  // row() points into it
    const CostRow* gate = row(led, "gate");
    ASSERT_NE(gate, nullptr);
    EXPECT_DOUBLE_EQ(gate->bytes, s * (nH * (3 + 5) + nI * (3 + 7))) << precision_name(prec);
    EXPECT_EQ(gate->calls, 4.0 * c.L);
  }
}

// Each launch's time is its own roofline (the launches of one stream run one
// after another): the larger of its FLOPs at the ceiling of its kind and
// its bytes at 3.8 TB/s, plus 4 us; a row sums its operations' launches, and
// the rows add up to the total.
TEST(Cost, RowsAreRooflinesAndSumToTheTotal) {
  CostLedger led;
  led.add({{"x", 790e12, true, 3.8e9}, {"x", 0, false, 0}});  // 1 s of tensor-core work (1 ms of bytes); an empty launch
  led.add({{"y", 50e9, false, 7.6e12}});                     // 1 ms of CUDA-core work, 2 s of bytes
  led.add({{"x", 790e9, true, 7.6e9}});                      // 1 ms of work, 2 ms of bytes
  led.add({{"w", 790e12, true, 0}, {"w", 0, false, 3.8e12}});  // 1 s of work, then 1 s of bytes: 2 s, not 1
  ASSERT_EQ(led.rows.size(), 3u);
  EXPECT_NEAR(led.rows[0].seconds, 1 + 2e-3 + 3 * 4e-6, 1e-12);
  EXPECT_NEAR(led.rows[1].seconds, 2 + 4e-6, 1e-12);
  EXPECT_NEAR(led.rows[2].seconds, 2 + 2 * 4e-6, 1e-12);
  EXPECT_EQ(led.rows[0].calls, 2);
  EXPECT_EQ(led.rows[0].launches, 3);
  CostRow t = led.total();
  EXPECT_DOUBLE_EQ(t.seconds, led.rows[0].seconds + led.rows[1].seconds + led.rows[2].seconds);
  EXPECT_DOUBLE_EQ(t.bytes, 3.8e9 + 7.6e12 + 7.6e9 + 3.8e12);
  EXPECT_DOUBLE_EQ(t.launches, 6);
  led.graph = true;  // inside a captured graph: no launch overhead
  led.add({{"z", 0, false, 3.8e12}, {"z", 0, false, 0}});
  EXPECT_NEAR(led.rows[3].seconds, 1, 1e-12);
  Config c;
  ASSERT_TRUE(config_preset("large", &c));
  c.T = 512;
  CostLedger big = step_ledger(c, 2, 20, Precision::Bf16);
  double sum = 0;
  for (const CostRow& r : big.rows) sum += r.seconds;
  EXPECT_NEAR(big.total().seconds, sum, 1e-12 * sum);
  EXPECT_GT(big.total().seconds, 0);
}

// The tables decide each tensor's initialisation once; a tensor's init
// is what docs/MODEL.md section 9 says for it, by name.
TEST(Model, InitKindsFromTheTable) {
  Config c{50, 16, 24, 2, 8, 12, 2, 3};
  for (const TensorInfo& t : param_table(c)) {
    std::string n = t.name;
    auto ends = [&](const char* suf) {
      return n.size() >= strlen(suf) && n.compare(n.size() - strlen(suf), std::string::npos, suf) == 0;
    };
    if (ends("_a_re")) {
      EXPECT_EQ(t.init.kind, Init::Const) << n;
      EXPECT_EQ(t.init.a, -0.5) << n;
    } else if (ends("_a_im")) {
      EXPECT_EQ(t.init.kind, Init::HippoAIm) << n;
    } else if (ends("_log_step")) {
      EXPECT_EQ(t.init.kind, Init::LogUniform) << n;
    } else if (n == "fs_c" || n == "bs_c") {
      EXPECT_EQ(t.init.kind, Init::Normal) << n;
      EXPECT_NEAR(t.init.a * t.init.a, 0.5, 1e-7) << n;
    } else if (n == "fs_d" || n == "bs_d" || (n.find("ln") != std::string::npos && ends("_w"))) {
      EXPECT_EQ(t.init.kind, Init::Const) << n;
      EXPECT_EQ(t.init.a, 1.0) << n;
    } else if (!t.decay) {
      EXPECT_EQ(t.init.kind, Init::Const) << n;
      EXPECT_EQ(t.init.a, 0.0) << n;
    } else if (n == "head_w" || n == "cls_w") {  // Flax's default, truncated lecun normal
      EXPECT_EQ(t.init.kind, Init::TruncNormal) << n;
      EXPECT_NEAR(t.init.a * kTrunc2Std, 1 / std::sqrt((double)c.H), 1e-15) << n;
      EXPECT_EQ(t.init.b, 2.0) << n;
    } else {
      EXPECT_EQ(t.init.kind, Init::Normal) << n;
    }
  }
}

// head_w and cls_w as JAX's variance_scaling(1, "fan_in", "truncated_normal")
// draws them: inside +-2 standard normals x sqrt(1 / fan_in) / s, s the
// standard deviation of N(0, 1) truncated to [-2, 2], so that the variance
// is 1 / fan_in. s from its closed form, var = 1 - 2a phi(a) / (2 Phi(a) - 1)
// at a = 2; the samples' variance within 5 of its standard errors.
TEST(Model, TruncatedLecunNormalAsJax) {
  const double a = 2, phi = std::exp(-a * a / 2) / std::sqrt(2 * M_PI), mass = std::erf(a / std::sqrt(2.0));
  EXPECT_NEAR(kTrunc2Std, std::sqrt(1 - 2 * a * phi / mass), 1e-15);
  Config c{50, 256, 24, 1, 4, 8, 2, 3};
  Model m;
  std::string err;
  ASSERT_TRUE(model_build(&m, c, 1, 1, &err)) << err;
  model_init(&m, 7);
  for (const TensorInfo& t : m.table) {
    if (strcmp(t.name, "head_w") && strcmp(t.name, "cls_w")) continue;
    const float* x = &m.params_mem[t.offset];
    const double bound = 2 / std::sqrt(256.0) / kTrunc2Std;
    double sum2 = 0, sum4 = 0;
    for (size_t i = 0; i < t.count; i++) {
      ASSERT_LE(std::fabs(x[i]), bound * (1 + 1e-6)) << t.name << "[" << i << "]";
      sum2 += (double)x[i] * x[i], sum4 += std::pow((double)x[i], 4);
    }
    const double n = (double)t.count, var = sum2 / n, se = std::sqrt((sum4 / n - var * var) / n);
    EXPECT_NEAR(var, 1 / 256.0, 5 * se) << t.name << " (" << t.count << " values)";
  }
}
