// Fuzzes data_prep inspect, the reader of both data files (shards and task
// files, by their magic), with and without --verify. Input: the file.
#define DATA_PREP_NO_MAIN
#include "data_prep.cpp"
#include "fuzz.h"

using namespace bigs;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_stdout();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint32_t magic = 0;
  if (size >= 4) memcpy(&magic, data, 4);
  std::vector<uint8_t> fixed = magic == kTaskMagic ? with_fixed_checksums<TaskHeader>(data, size)
                                                   : with_fixed_checksums<ShardHeader>(data, size);
  for (const std::vector<uint8_t>& bytes : {std::vector<uint8_t>(data, data + size), fixed}) {
    const std::string path = fuzz_file("data.bin", bytes.data(), bytes.size());
    for (bool verify : {false, true}) {
      const int rc = run_inspect(path, 3, "", verify);
      FUZZ_CHECK(rc == 0 || rc == kExitError, "exit status %d", rc);
    }
  }
  return 0;
}
