// Fuzzes bigs's shard reader: shards_open, then the training order
// (DataOrder, two epochs) and masking of every sequence read. Input: a shard.
#define BIGS_NO_MAIN
#include "bigs.cu"
#include "fuzz.h"

using namespace bigs;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_stdout();
  return 0;
}

static void read_all(const std::string& path) {
  ShardSet s;
  std::string err;
  if (!shards_open(path, &s, &err)) {
    FUZZ_CHECK_NAMES(err, path);
    return;
  }
  const int T = (int)s.h.seq_len, V = (int)s.h.vocab_size;
  DataOrder order;
  order.s = &s, order.seed = 7;
  std::vector<int> ids(T), targets(T);
  MaskSpec ms;
  for (uint64_t k = 0; k < std::min<uint64_t>(2 * s.total, 64); k++) {
    if (!order.read(k, ids.data(), &err)) {
      FUZZ_CHECK_NAMES(err, path);
      return;
    }
    for (int id : ids) FUZZ_CHECK(id >= 0 && id < V, "sequence %llu: id %d, V = %d", (unsigned long long)k, id, V);
    if (V < 8) continue;  // no model has so few tokens (config_check), so pretrain stops before masking
    Rng rng = mask_rng_train(7, k);
    mask_sequence(ids.data(), targets.data(), T, V, s.h, ms, rng);
    for (int t = 0; t < T; t++)
      FUZZ_CHECK(ids[t] >= 0 && ids[t] < V && targets[t] >= -1 && targets[t] < V, "masked id %d target %d", ids[t],
                 targets[t]);
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  as_is_and_with_checksums<ShardHeader>("train_000000.bin", data, size, read_all);
  return 0;
}
