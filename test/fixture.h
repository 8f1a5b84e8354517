// Reader for the fixture that dev/reference.py writes: named tensors, each
// stored with its dtype and shape (format in dev/reference.py's docstring).
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

struct FixtureTensor {
  std::vector<int64_t> dims;
  std::vector<double> data;  // every dtype widened to double
  size_t size() const { return data.size(); }
};

struct Fixture {
  std::map<std::string, FixtureTensor> t;
  std::string error;
  bool has(const std::string& k) const { return t.count(k) != 0; }
  const FixtureTensor& at(const std::string& k) const { return t.at(k); }
};

inline Fixture read_fixture(const char* path) {
  Fixture fx;
  FILE* f = fopen(path, "rb");
  if (!f) {
    fx.error = std::string("cannot open ") + path + "; run `make build/fixture.bin` (needs python3-torch)";
    return fx;
  }
  auto rd = [&](void* p, size_t n) { return fread(p, 1, n, f) == n; };
  uint32_t head[3];
  if (!rd(head, sizeof head) || head[0] != 0x58494642u || head[1] != 1u) {
    fx.error = std::string(path) + " is not a version-1 fixture; regenerate it with dev/reference.py";
    fclose(f);
    return fx;
  }
  for (uint32_t r = 0; r < head[2]; r++) {
    uint32_t len, dtype, ndim;
    std::string name;
    bool ok = rd(&len, 4) && len < 4096;
    if (ok) {
      name.resize(len);
      ok = rd(&name[0], len) && rd(&dtype, 4) && rd(&ndim, 4) && dtype <= 2 && ndim <= 8;
    }
    FixtureTensor x;
    size_t n = 1;
    for (uint32_t d = 0; ok && d < ndim; d++) {
      int64_t v;
      ok = rd(&v, 8) && v >= 0;
      x.dims.push_back(v);
      n *= (size_t)v;
    }
    if (ok) {
      x.data.resize(n);
      for (size_t i = 0; ok && i < n; i++) {
        if (dtype == 0) {
          float v;
          ok = rd(&v, 4);
          x.data[i] = v;
        } else if (dtype == 1) {
          int32_t v;
          ok = rd(&v, 4);
          x.data[i] = v;
        } else {
          ok = rd(&x.data[i], 8);
        }
      }
    }
    if (!ok) {
      fx.error = std::string(path) + " is truncated or corrupt at record " + std::to_string(r);
      break;
    }
    fx.t[name] = std::move(x);
  }
  fclose(f);
  return fx;
}
