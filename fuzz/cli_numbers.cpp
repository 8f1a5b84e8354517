// Fuzzes cli.h: the number parsers (parse_int, parse_double) on arbitrary
// strings, and parse_flags on arbitrary command lines. Input: NUL-separated
// arguments.
#include "bigsc/cli.h"
#include "fuzz.h"

using namespace bigs;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  quiet_stdout();  // --help
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args = {"cmd"};
  std::string cur;
  for (size_t i = 0; i < size; i++) {
    if (data[i]) cur += char(data[i]);
    else args.push_back(cur), cur.clear();
  }
  args.push_back(cur);

  std::string err;
  for (const std::string& a : args) {
    long long v;
    if (parse_int(a.c_str(), -1000, 1LL << 40, "--n", &v, &err))
      FUZZ_CHECK(v >= -1000 && v <= (1LL << 40), "%lld out of range", v);
    double d;
    if (parse_double(a.c_str(), 0, 1, false, "--p", &d, &err)) FUZZ_CHECK(d >= 0 && d < 1, "%g out of range", d);
    if (parse_double(a.c_str(), -1e9, 1e9, true, "--x", &d, &err))
      FUZZ_CHECK(std::isfinite(d) && d >= -1e9 && d <= 1e9, "%g out of range", d);
  }

  long long n = 5;
  double x = 0.5;
  std::string s;
  bool on = false;
  const std::vector<Flag> flags = {{Flag::Int, "n", &n, 1, 100, "an int"},
                                   {Flag::Num, "x", &x, 0, 1, "a number"},
                                   {Flag::Str, "name", &s, 0, 0, "a string"},
                                   {Flag::Switch, "on", &on, 0, 0, "a switch"}};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> positional;
  const int rc = parse_flags((int)args.size(), argv.data(), flags, "usage: cmd", &positional, &err);
  FUZZ_CHECK(rc >= 0 && rc <= 2, "rc %d", rc);
  FUZZ_CHECK(n >= 1 && n <= 100 && x >= 0 && x <= 1, "n %lld, x %g out of range", n, x);
  if (rc == 2) FUZZ_CHECK(!err.empty(), "rc 2 without a message");
  return 0;
}
