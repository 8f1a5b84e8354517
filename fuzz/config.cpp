// Fuzzes bigs's config file parser (config_load): it must refuse anything
// but lines of "key integer" (and comments), with each value in range.
// Input: the config file.
#include <cctype>

#define BIGS_NO_MAIN
#include "bigs.cu"
#include "fuzz.h"

using namespace bigs;

// What the file may hold: blank lines, lines starting with '#', and lines of
// a known key, blanks, a decimal integer (optionally signed), blanks, with no
// NUL byte.
static bool well_formed(const std::string& text) {
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    size_t i = line.find_first_not_of(" \t\r\v\f");
    if (i == std::string::npos || line[0] == '#') continue;  // a comment may hold anything
    if (line.find('\0') != std::string::npos) return false;
    size_t k = line.find_first_of(" \t\r\v\f", i);
    if (k == std::string::npos) return false;
    const std::string key = line.substr(i, k - i);
    static const char* keys[] = {"V", "H", "I", "L", "N", "T", "types", "labels"};
    if (std::none_of(std::begin(keys), std::end(keys), [&](const char* s) { return key == s; })) return false;
    size_t v = line.find_first_not_of(" \t\r\v\f", k);
    if (v == std::string::npos) return false;
    if (line[v] == '+' || line[v] == '-') v++;
    size_t digits = v;
    while (digits < line.size() && isdigit((unsigned char)line[digits])) digits++;
    if (digits == v || line.find_first_not_of(" \t\r\v\f", digits) != std::string::npos) return false;
  }
  return true;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string path = fuzz_file("model.cfg", data, size);
  Config c;
  std::string err;
  if (!config_load(path, &c, &err)) {
    FUZZ_CHECK_NAMES(err, path);
    return 0;
  }
  FUZZ_CHECK(well_formed(text), "accepted a malformed file");
  // What pretrain does next: V and T from the data, then the model's sizes.
  c.V = 30522, c.T = 128;
  if (config_check(c).empty()) table_total(param_table(c));
  return 0;
}
