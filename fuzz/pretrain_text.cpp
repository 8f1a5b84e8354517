// Fuzzes data_prep pretrain's text reader (plain text, and .gz through
// gzip -dc) and the packer behind it, and checks the shards written. Input: a
// flags byte (bit 0: the file is .gz), a byte choosing T (3..34) and one
// choosing sequences per shard (1..8), then the file.
#include <dirent.h>

#define DATA_PREP_NO_MAIN
#include "data_prep.cpp"
#include "fuzz.h"

using namespace bigs;

static const Tokenizer& tok = bert_tokenizer();

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_stdout();
  return 0;
}

// Checks one shard: a valid header, the checksum, well-formed sequences.
static uint64_t check_shard(const std::string& path, uint32_t T) {
  FILE* f = fopen(path.c_str(), "rb");
  FUZZ_CHECK(f, "cannot open %s", path.c_str());
  ShardHeader h;
  std::string err;
  FUZZ_CHECK(read_shard_header(f, path.c_str(), &h, &err, uint32_t(tok.vocab_size())), "%s", err.c_str());
  FUZZ_CHECK(h.seq_len == T && h.num_sequences > 0, "T %u, %llu sequences", h.seq_len,
             (unsigned long long)h.num_sequences);
  std::vector<uint16_t> seq(T);
  uint32_t crc = 0;
  for (uint64_t i = 0; i < h.num_sequences; i++) {
    FUZZ_CHECK(fread(seq.data(), 2, T, f) == T, "short shard");
    crc = crc32c(crc, seq.data(), 2ull * T);
    // [CLS] text... [SEP] [PAD]..., with at least one text token. (The text
    // may hold special tokens: the tokenizer reads a literal "[SEP]" as one.)
    uint32_t end = T - 1;
    while (end > 0 && seq[end] == h.pad_id) end--;
    FUZZ_CHECK(seq[0] == h.cls_id && end >= 2 && seq[end] == h.sep_id, "sequence %llu: not [CLS] a [SEP]",
               (unsigned long long)i);
    for (uint32_t t = 1; t < end; t++) FUZZ_CHECK(seq[t] < h.vocab_size, "id %u", seq[t]);
  }
  FUZZ_CHECK(crc == h.payload_crc, "payload CRC 0x%08X, header 0x%08X", crc, h.payload_crc);
  fclose(f);
  return h.num_sequences;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  PretrainOptions o;
  o.seq_len = 3 + data[1] % 32;
  o.shard_sequences = 1 + data[2] % 8;
  o.val_fraction = 0.2;
  o.threads = 1;
  o.out = fuzz_dir() + "/shards";
  o.inputs = {fuzz_file(data[0] & 1 ? "in.txt.gz" : "in.txt", data + 3, size - 3)};
  // Shards of the previous input would be kept where this one writes fewer.
  if (DIR* d = opendir(o.out.c_str())) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') remove((o.out + "/" + e->d_name).c_str());
    closedir(d);
  }
  fflush(stderr);
  const int rc = pretrain_with(o, tok);
  FUZZ_CHECK(rc == 0 || rc == kExitError, "exit status %d", rc);
  if (rc != 0) return 0;
  uint64_t total = 0;
  for (const char* prefix : {"train", "val"}) {
    for (int i = 0;; i++) {
      char name[32];
      snprintf(name, sizeof name, "/%s_%06d.bin", prefix, i);
      struct stat st;
      if (stat((o.out + name).c_str(), &st) != 0) break;
      total += check_shard(o.out + name, uint32_t(o.seq_len));
    }
  }
  FUZZ_CHECK(total > 0, "success without a sequence");
  return 0;
}
