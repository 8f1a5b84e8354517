// cli.h: the command-line helpers shared by bigs, data_prep and tokenizer:
// numbers parsed whole and range-checked, and a flag table that drives
// getopt_long, --help and the start-up table of settings.
#pragma once

#include <getopt.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace bigs {

// Parses a whole decimal integer in [lo, hi]; the error names the flag.
inline bool parse_int(const char* s, long long lo, long long hi, const char* flag, long long* out,
                      std::string* err) {
  errno = 0;
  char* end = nullptr;
  const long long v = strtoll(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
    *err = std::string(flag) + ": expected an integer in " + std::to_string(lo) + ".." + std::to_string(hi) +
           ", got '" + s + "'";
    return false;
  }
  *out = v;
  return true;
}

// Parses a whole finite number in [lo, hi) (or [lo, hi] when hi_inclusive).
inline bool parse_double(const char* s, double lo, double hi, bool hi_inclusive, const char* flag, double* out,
                         std::string* err) {
  errno = 0;
  char* end = nullptr;
  const double v = strtod(s, &end);
  const bool in_range = v >= lo && (hi_inclusive ? v <= hi : v < hi);
  if (errno != 0 || end == s || *end != '\0' || !std::isfinite(v) || !in_range) {
    char buf[128];
    snprintf(buf, sizeof(buf), ": expected a number in [%g, %g%c, got '", lo, hi, hi_inclusive ? ']' : ')');
    *err = std::string(flag) + buf + s + "'";
    return false;
  }
  *out = v;
  return true;
}

// One command-line flag: its long name, where the value goes, its range and
// its help line. A table of these is the whole interface of a command.
struct Flag {
  enum Kind { Int, Num, Str, Switch } kind;
  const char* name;  // without the leading "--"
  void* value;       // long long*, double*, std::string* or bool*
  double lo, hi;     // inclusive range for Int and Num
  const char* help;
  mutable bool given = false;  // set by parse_flags when the command line names it
};

// Levenshtein distance, for "did you mean" suggestions.
inline size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> d(b.size() + 1);
  for (size_t j = 0; j <= b.size(); j++) d[j] = j;
  for (size_t i = 1; i <= a.size(); i++) {
    size_t prev = d[0];
    d[0] = i;
    for (size_t j = 1; j <= b.size(); j++) {
      const size_t cur = d[j];
      d[j] = std::min(std::min(d[j] + 1, d[j - 1] + 1), prev + (a[i - 1] == b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return d[b.size()];
}

// The candidate nearest to word (at most a third of its letters off, and at
// least 1), or "" when none is that near.
inline std::string nearest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::max<size_t>(1, word.size() / 3) + 1;
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

inline std::string flag_value(const Flag& f) {
  char buf[64];
  switch (f.kind) {
    case Flag::Int: return std::to_string(*(long long*)f.value);
    case Flag::Num: snprintf(buf, sizeof buf, "%g", *(double*)f.value); return buf;
    case Flag::Str: return ((std::string*)f.value)->empty() ? "-" : *(std::string*)f.value;
    case Flag::Switch: return *(bool*)f.value ? "on" : "off";
  }
  return "";
}

inline void print_usage(FILE* out, const char* usage, const std::vector<Flag>& flags) {
  fprintf(out, "%s\n", usage);
  for (const Flag& f : flags) {
    std::string lhs = std::string("  --") + f.name + (f.kind == Flag::Switch ? "" : " X");
    fprintf(out, "%-26s %s (default: %s)\n", lhs.c_str(), f.help, flag_value(f).c_str());
  }
  fprintf(out, "  %-24s this help\n", "--help");
}

// The settings a run uses, one per line, so a log says how it was made.
inline void print_settings(FILE* out, const std::vector<Flag>& flags) {
  for (const Flag& f : flags) fprintf(out, "  %-22s %s\n", f.name, flag_value(f).c_str());
}

// Parses argv[1..] (argv[0] is the command name) against the table; the rest
// go to *positional. Returns 0 on success, 1 when --help was printed, and 2
// with *err set on a bad command line.
inline int parse_flags(int argc, char** argv, const std::vector<Flag>& flags, const char* usage,
                       std::vector<std::string>* positional, std::string* err) {
  std::vector<option> opts;
  for (size_t i = 0; i < flags.size(); i++)
    opts.push_back({flags[i].name, flags[i].kind == Flag::Switch ? no_argument : required_argument, nullptr,
                    (int)(256 + i)});
  opts.push_back({"help", no_argument, nullptr, 'h'});
  opts.push_back({nullptr, 0, nullptr, 0});
  optind = 0;  // reset getopt, so a command can be parsed more than once (tests)
  opterr = 0;
  for (;;) {
    int c = getopt_long(argc, argv, "h", opts.data(), nullptr);
    if (c == -1) break;
    if (c == 'h') {
      print_usage(stdout, usage, flags);
      return 1;
    }
    if (c < 256) {
      std::string arg = argv[optind - 1], name = arg.substr(arg.find_first_not_of('-') == std::string::npos
                                                                 ? arg.size()
                                                                 : arg.find_first_not_of('-'));
      name = name.substr(0, name.find('='));
      std::vector<std::string> names = {"help"};
      for (const Flag& f : flags) names.push_back(f.name);
      const bool known = std::find(names.begin(), names.end(), name) != names.end();
      const std::string near = known ? "" : nearest(name, names);
      *err = "unknown or incomplete option '" + arg + "'" + (near.empty() ? "" : "; did you mean --" + near + "?") +
             "; see --help";
      return 2;
    }
    const Flag& f = flags[c - 256];
    f.given = true;
    std::string name = std::string("--") + f.name;
    long long iv;
    switch (f.kind) {
      case Flag::Int:
        if (!parse_int(optarg, (long long)f.lo, (long long)f.hi, name.c_str(), &iv, err)) return 2;
        *(long long*)f.value = iv;
        break;
      case Flag::Num:
        if (!parse_double(optarg, f.lo, f.hi, true, name.c_str(), (double*)f.value, err)) return 2;
        break;
      case Flag::Str: *(std::string*)f.value = optarg; break;
      case Flag::Switch: *(bool*)f.value = true; break;
    }
  }
  for (int i = optind; i < argc; i++) positional->push_back(argv[i]);
  return 0;
}

}  // namespace bigs
