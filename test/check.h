// What the C++ suites share: the fp32 tolerance and one all_close
// (|a - b| <= atol + rtol |b| elementwise; a failure names the worst
// element, a success prints the worst relative error), and the oracle's
// fixture with the model of each of its sections. Include it after bigs.cu.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "test/fixture.h"

namespace bigs_test {

using namespace bigs;

// fp32 against a float64 reference: rounding in a different order.
constexpr double kAtol = 1e-5, kRtol = 1e-4;

template <class A, class B>
::testing::AssertionResult all_close(const std::string& what, const A* a, const B* b, size_t n, double atol = kAtol,
                                     double rtol = kRtol) {
  size_t bad = 0, worst = 0;
  double worst_excess = -1e300, worst_rel = 0;
  for (size_t i = 0; i < n; i++) {
    double x = (double)a[i], y = (double)b[i], err = std::fabs(x - y), tol = atol + rtol * std::fabs(y);
    if (!(err <= tol)) bad++;
    if (err - tol > worst_excess) worst_excess = err - tol, worst = i;
    if (std::fabs(y) > atol) worst_rel = std::max(worst_rel, err / std::fabs(y));
  }
  if (bad == 0) {
    printf("  %-28s %8zu values, worst relative error %.2e\n", what.c_str(), n, worst_rel);
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << n << " values differ; worst at " << worst
                                       << ": got " << (double)a[worst] << ", want " << (double)b[worst] << " (atol "
                                       << atol << ", rtol " << rtol << ")";
}

template <class A, class B>
::testing::AssertionResult all_close(const std::string& what, const std::vector<A>& a, const std::vector<B>& b,
                                     double atol = kAtol, double rtol = kRtol) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << what << ": sizes " << a.size() << " and " << b.size();
  return all_close(what, a.data(), b.data(), a.size(), atol, rtol);
}

// The fixture dev/reference.py writes (BIGS_FIXTURE, else build/fixture.bin).
inline const Fixture& fixture() {
  static Fixture fx = read_fixture(getenv("BIGS_FIXTURE") ? getenv("BIGS_FIXTURE") : "build/fixture.bin");
  return fx;
}

// One section of the fixture ("mlm", "cls", "reg"): its model on the host,
// with the oracle's parameters, and its batch.
struct Section {
  Model m;
  std::vector<int> ids, types, targets;
  std::vector<float> labels;
  Batch batch;
};

inline void load_section(const std::string& s, Section* x) {
  const Fixture& fx = fixture();
  ASSERT_TRUE(fx.error.empty()) << fx.error;
  const auto& cf = fx.at(s + "/config").data;
  Config c{(int)cf[0], (int)cf[1], (int)cf[2], (int)cf[3], (int)cf[4], (int)cf[5], (int)cf[6], (int)cf[7]};
  int BB = (int)cf[8];
  std::string err;
  ASSERT_TRUE(model_build(&x->m, c, BB, BB * c.T, &err)) << err;
  for (const TensorInfo& t : x->m.table) {
    if (t.count == 0) continue;
    std::string k = s + "/param/" + t.name;
    ASSERT_TRUE(fx.has(k)) << "fixture has no " << k;
    ASSERT_EQ(fx.at(k).size(), t.count) << k;
    for (size_t i = 0; i < t.count; i++) x->m.params_mem[t.offset + i] = (float)fx.at(k).data[i];
  }
  auto ints = [&](const std::string& k) {
    std::vector<int> v;
    for (double d : fx.at(k).data) v.push_back((int)d);
    return v;
  };
  x->ids = ints(s + "/ids");
  x->types = ints(s + "/types");
  x->batch.B = BB;
  x->batch.ids = x->ids.data();
  x->batch.types = x->types.data();
  if (fx.has(s + "/targets")) {
    x->targets = ints(s + "/targets");
    x->batch.targets = x->targets.data();
  } else {
    for (double d : fx.at(s + "/labels").data) x->labels.push_back((float)d);
    x->batch.labels = x->labels.data();
  }
}

// A section's model against the oracle, on whatever device `place` puts it:
// the loss, the final hidden states, the logits and the gradient of every
// parameter tensor (evaluation mode: no dropout). hidden(m) fetches the
// final states; close(what, got, want) judges a tensor, with the device's
// tolerance.
template <class Place, class Hidden, class Close>
void check_section(const std::string& s, Place place, Hidden hidden, Close close) {
  Section x;
  load_section(s, &x);
  if (::testing::Test::HasFatalFailure()) return;
  const Fixture& fx = fixture();
  Model& m = x.m;
  const Config& c = m.c;
  place(m);
  if (::testing::Test::HasFatalFailure()) return;
  auto ref = [&](const std::string& k) -> const std::vector<double>& { return fx.at(s + "/" + k).data; };
  std::string err;
  Loss loss;
  ASSERT_TRUE(model_forward(m, x.batch, false, &loss, &err)) << err;
  std::vector<double> mean = {loss.sum / loss.count};
  EXPECT_TRUE(all_close(s + " loss", mean, ref("loss")));
  EXPECT_TRUE(close(s + " hidden", hidden(m, ref("hidden").size()), ref("hidden")));
  if (c.labels) {  // back on the host
    EXPECT_TRUE(close(s + " logits", std::vector<float>(m.a.cls_logits, m.a.cls_logits + ref("logits").size()),
                      ref("logits")));
  }
  model_zero_grad(m);
  model_backward(m, x.batch, false, loss, 1.0f / loss.count);
  model_grads_to_host(m);
  for (const TensorInfo& t : m.table) {
    std::string k = s + "/grad/" + t.name;
    if (t.count == 0) continue;
    if (!fx.has(k)) {  // the reference may omit the unused MLM head of a classifier
      ASSERT_TRUE(c.labels > 0 && std::string(t.name).compare(0, 4, "head") == 0) << "fixture has no " << k;
      continue;
    }
    ASSERT_EQ(fx.at(k).size(), t.count) << k;
    EXPECT_TRUE(close(k, std::vector<float>(m.grads_mem.begin() + t.offset, m.grads_mem.begin() + t.offset + t.count),
                      fx.at(k).data));
  }
  if (!c.labels) {  // MLM logits at every position: predict every row
    std::vector<int> all(x.ids.size(), 0);
    Batch b = x.batch;
    b.targets = all.data();
    ASSERT_TRUE(model_forward(m, b, false, &loss, &err)) << err;
    EXPECT_TRUE(close(s + " logits", std::vector<float>(m.a.logits, m.a.logits + ref("logits").size()), ref("logits")));
  }
}

}  // namespace bigs_test
