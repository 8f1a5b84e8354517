// Fuzzes data_prep's GLUE TSV reader (convert_glue_split) for every task and
// split, and checks the task file it writes. Input: a byte choosing the task,
// one choosing the split, one choosing T (3..66), then the TSV file.
#define DATA_PREP_NO_MAIN
#include "data_prep.cpp"
#include "fuzz.h"

using namespace bigs;

static const Tokenizer& tok = bert_tokenizer();

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_stdout();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const GlueTask& task = glue_tasks()[data[0] % glue_tasks().size()];
  const GlueSplit& split = task.splits[data[1] % task.splits.size()];
  const int T = 3 + data[2] % 64;
  const std::string tsv = fuzz_file("in.tsv", data + 3, size - 3);

  AtomicFile out;
  std::string err;
  FUZZ_CHECK(out.open(fuzz_dir() + "/task.bin", &err), "%s", err.c_str());
  GlueSplitResult r;
  if (!convert_glue_split(task, split, tsv, tok, T, &out, &r, &err)) {
    FUZZ_CHECK_NAMES(err, tsv);
    return 0;
  }
  // The file written is a valid task file holding exactly the examples read.
  FILE* f = fopen(out.tmp_path().c_str(), "rb");
  TaskHeader h;
  FUZZ_CHECK(read_task_header(f, "task.bin", &h, &err, uint32_t(tok.vocab_size())), "%s", err.c_str());
  FUZZ_CHECK(h.num_examples == r.examples && r.examples + r.skipped == r.rows, "%llu examples, %llu + %llu rows",
             (unsigned long long)h.num_examples, (unsigned long long)r.examples, (unsigned long long)r.skipped);
  FUZZ_CHECK(h.seq_len == uint32_t(T) && h.has_labels == (split.test ? 0u : 1u), "header fields");
  std::vector<uint8_t> rec(task_record_size(h.seq_len));
  std::vector<uint16_t> ids(h.seq_len);
  std::vector<uint8_t> types(h.seq_len);
  uint32_t crc = 0;
  for (uint64_t i = 0; i < h.num_examples; i++) {
    FUZZ_CHECK(fread(rec.data(), rec.size(), 1, f) == 1, "short file");
    crc = crc32c(crc, rec.data(), rec.size());
    float label;
    uint32_t index;
    unpack_task_record(rec.data(), h.seq_len, ids.data(), types.data(), &label, &index);
    FUZZ_CHECK(ids[0] == uint32_t(tok.cls_id()), "record %llu: no [CLS]", (unsigned long long)i);
    for (uint32_t t = 0; t < h.seq_len; t++)
      FUZZ_CHECK(ids[t] < h.vocab_size && types[t] <= 1, "record %llu: id %u type %u", (unsigned long long)i, ids[t],
                 types[t]);
    if (split.test)
      FUZZ_CHECK(label == -1, "test label %g", label);
    else if (h.num_labels == 1)
      FUZZ_CHECK(label >= 0 && label <= 5, "score %g", label);
    else
      FUZZ_CHECK(label >= 0 && label < h.num_labels && label == float(int(label)), "label %g", label);
  }
  FUZZ_CHECK(crc == h.payload_crc, "payload CRC 0x%08X, header 0x%08X", crc, h.payload_crc);
  fclose(f);
  return 0;
}
