// Fuzzes bigs's GLUE task-file reader (task_load) and the metrics computed
// on what it loads. Input: a task file.
#define BIGS_NO_MAIN
#include "bigs.cu"
#include "fuzz.h"

using namespace bigs;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_stdout();
  return 0;
}

static void load(const std::string& path) {
  TaskData d;
  std::string err;
  if (!task_load(path, &d, &err)) {
    FUZZ_CHECK_NAMES(err, path);
    return;
  }
  FUZZ_CHECK(d.n == d.h.num_examples && d.ids.size() == d.n * d.T && d.labels.size() == d.n, "sizes");
  for (size_t i = 0; i < d.ids.size(); i++)
    FUZZ_CHECK(d.ids[i] >= 0 && d.ids[i] < (int)d.h.vocab_size && (d.types[i] == 0 || d.types[i] == 1),
               "token %zu: id %d type %d", i, d.ids[i], d.types[i]);
  const int Y = (int)d.h.num_labels;
  for (float y : d.labels)
    FUZZ_CHECK(!d.h.has_labels ? y == -1 : Y == 1 ? std::isfinite(y) : (y >= 0 && y < Y && y == std::floor(y)),
               "label %g of %d", y, Y);
  if (d.h.has_labels) {
    std::vector<double> gold(d.labels.begin(), d.labels.end());
    task_metrics(d.task, gold, gold);  // what eval does with its predictions
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  as_is_and_with_checksums<TaskHeader>("task.bin", data, size, load);
  return 0;
}
