// Fuzzes the vocab loader (Tokenizer::load) on arbitrary files, and encode
// and decode with whatever vocabulary it accepts. Input: the vocab file up to
// the first NUL byte, then a text to encode.
#include <algorithm>
#include <string_view>

#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* p = reinterpret_cast<const char*>(data);
  const char* nul = static_cast<const char*>(memchr(p, 0, size));
  const size_t vocab_bytes = nul ? size_t(nul - p) : size;
  const std::string_view text = nul ? std::string_view(nul + 1, size - vocab_bytes - 1) : std::string_view();
  const std::string path = fuzz_file("vocab.txt", p, vocab_bytes);

  bigs::Tokenizer tok;
  std::string err;
  if (!tok.load(path, &err)) {
    FUZZ_CHECK_NAMES(err, path);
    return 0;
  }
  // One token a line: as many tokens as lines.
  const long lines = std::count(p, p + vocab_bytes, '\n') + (vocab_bytes && p[vocab_bytes - 1] != '\n');
  const int V = tok.vocab_size();
  FUZZ_CHECK(V == lines, "%d tokens from %ld lines", V, lines);
  for (int id : {tok.pad_id(), tok.unk_id(), tok.cls_id(), tok.sep_id(), tok.mask_id()})
    FUZZ_CHECK(id >= 0 && id < V, "special id %d", id);
  for (int i = 0; i < V; i++) {
    const int j = tok.token_id(tok.token(i));  // a duplicate maps to one of its ids
    FUZZ_CHECK(j >= 0 && j < V && tok.token(j) == tok.token(i), "token %d '%s' looks up %d", i, tok.token(i).c_str(),
               j);
  }
  std::vector<int> ids;
  for (std::string_view s : {text, std::string_view("Hello, world! [MASK] un##able ÀÉÎ 中文 \xF0\x9F\x98\x80")}) {
    ids.clear();
    tok.encode(s, &ids);
    for (int id : ids) FUZZ_CHECK(id >= 0 && id < V, "id %d of %d", id, V);
    tok.decode(ids);
  }
  return 0;
}
