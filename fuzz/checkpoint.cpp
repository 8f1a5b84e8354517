// Fuzzes bigs's checkpoint reader (checkpoint_read), the model built from
// what it accepts (model_from_checkpoint) and a forward pass through it.
// Input: a checkpoint.
#define BIGS_NO_MAIN
#include "bigs.cu"
#include "fuzz.h"

using namespace bigs;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_stdout();
  return 0;
}

static void load(const std::string& path) {
  CkptHeader h;
  std::vector<float> data;
  std::string err;
  if (!checkpoint_read(path, &h, &data, &err)) {
    FUZZ_CHECK_NAMES(err, path);
    return;
  }
  const Config c = ckpt_config(h);
  FUZZ_CHECK(config_check(c).empty(), "accepted a bad config: %s", config_check(c).c_str());
  for (float x : data) FUZZ_CHECK(std::isfinite(x), "a non-finite value was loaded");
  Model m;
  FUZZ_CHECK(model_from_checkpoint(path, 1, c.T, 0, -1, &m, &h, &data, nullptr, &err), "%s", err.c_str());
  std::vector<int> ids(c.T), types(c.T, 0), targets(c.T, -1);
  for (int t = 0; t < c.T; t++) ids[t] = t % c.V;
  targets[0] = 1 % c.V;
  float label = 0;
  Batch bt{1, ids.data(), types.data(), c.labels ? nullptr : targets.data(), c.labels ? &label : nullptr};
  Loss loss;
  FUZZ_CHECK(model_forward(m, bt, false, &loss, &err), "%s", err.c_str());
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  as_is_and_with_checksums<CkptHeader>("model.bin", data, size, load);
  return 0;
}
