// Fuzzes the tokenizer's encode on arbitrary bytes with the BERT vocab:
// single texts and pairs, truncated and padded to any length, and decode.
// Input: a flags byte (bit 0: a pair, split at the first tab; bit 1: pad),
// a max_len byte (0 = no truncation), then the text.
#include <algorithm>
#include <iterator>
#include <string_view>

#include "fuzz.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  bert_tokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const bool pair = data[0] & 1, pad = data[0] & 2;
  const int max_len = data[1];
  const std::string_view text(reinterpret_cast<const char*>(data + 2), size - 2);
  const bigs::Tokenizer& tok = bert_tokenizer();
  const int V = tok.vocab_size();

  std::vector<int> ids;
  tok.encode(text, &ids);
  for (int id : ids) FUZZ_CHECK(id >= 0 && id < V, "id %d", id);
  // Decoding gives the words back, so encoding the decoded text gives the
  // same ids (decode marks word boundaries with spaces, glues "##" pieces),
  // except for [PAD], which decode drops (a literal "[PAD]" in the text).
  std::vector<int> again, no_pad;
  tok.encode(tok.decode(ids), &again);
  std::copy_if(ids.begin(), ids.end(), std::back_inserter(no_pad), [&](int id) { return id != tok.pad_id(); });
  FUZZ_CHECK(again == no_pad, "encode(decode(ids)) differs: %zu vs %zu ids", again.size(), no_pad.size());

  std::string_view a = text, b;
  const size_t tab = text.find('\t');
  if (pair && tab != std::string_view::npos) a = text.substr(0, tab), b = text.substr(tab + 1);
  std::vector<int> in, types;
  tok.encode_model_input(a, pair ? &b : nullptr, max_len, pad, &in, &types);
  FUZZ_CHECK(in.size() == types.size(), "%zu ids, %zu types", in.size(), types.size());
  FUZZ_CHECK(!in.empty() && in[0] == tok.cls_id(), "no [CLS] first");
  if (max_len >= (pair ? 3 : 2)) FUZZ_CHECK(in.size() <= size_t(max_len), "%zu ids > max_len %d", in.size(), max_len);
  if (pad && max_len >= 3) FUZZ_CHECK(in.size() == size_t(max_len), "padded to %zu, not %d", in.size(), max_len);
  for (size_t i = 0; i < in.size(); i++) {
    FUZZ_CHECK(in[i] >= 0 && in[i] < V, "id %d", in[i]);
    FUZZ_CHECK(types[i] == 0 || (pair && types[i] == 1), "type %d", types[i]);
  }
  if (text.find("[SEP]") == std::string_view::npos) {  // else the text's own [SEP]s count too
    const long seps = std::count(in.begin(), in.end(), tok.sep_id());
    FUZZ_CHECK(seps == (pair ? 2 : 1), "%ld [SEP]", seps);
  }
  return 0;
}
