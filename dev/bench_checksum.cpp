// What the checksums cost (README "Reliability"): CRC-32C speed of the two
// implementations in formats.h, and verifying a shard against reading it the
// way the trainer does (every row once, in a shuffled order). Built and run
// by dev/bench_checksum.sh; timings are the best of 3.
//
//   bench_checksum SHARD
#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bigsc/formats.h"

using namespace bigs;

template <class F>
static double best_seconds(F f, bool cold_file = false, const char* path = nullptr) {
  double best = 1e30;
  for (int i = 0; i < 3; i++) {
    if (cold_file) {  // drop the file's pages from the page cache: as read from the disk
      const int fd = open(path, O_RDONLY);
      posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      close(fd);
    }
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: bench_checksum SHARD\n");
    return 2;
  }
  const char* path = argv[1];
  std::vector<uint8_t> buf(256u << 20);
  std::mt19937_64 rng(1);
  for (size_t i = 0; i < buf.size(); i += 8) {
    const uint64_t r = rng();
    memcpy(&buf[i], &r, 8);
  }
  volatile uint32_t sink = 0;
  const double gb = buf.size() / 1e9;
  const double t_portable = best_seconds([&] { sink = crc32c_portable(0, buf.data(), buf.size()); });
  printf("crc32c_portable (slicing-by-8): %6.2f GB/s\n", gb / t_portable);
#ifdef __SSE4_2__
  const double t_sse = best_seconds([&] { sink = crc32c_sse42(0, buf.data(), buf.size()); });
  printf("crc32c_sse42 (crc32 instruction): %6.2f GB/s (%.1fx)\n", gb / t_sse, t_portable / t_sse);
#endif

  FILE* f = fopen(path, "rb");
  ShardHeader h;
  std::string err;
  if (!f || !read_shard_header(f, path, &h, &err)) {
    fprintf(stderr, "bench_checksum: %s\n", err.empty() ? "cannot open the shard" : err.c_str());
    return 1;
  }
  const double size_gb = double(file_size_of(f)) / 1e9;
  printf("shard %s: %.2f GB, %llu sequences of T = %u\n", path, size_gb, (unsigned long long)h.num_sequences, h.seq_len);
  auto verify = [&] {
    if (!verify_payload(f, path, sizeof h, h.payload_crc, kShardWhat, kShardFix, &err)) {
      fprintf(stderr, "bench_checksum: %s\n", err.c_str());
      exit(1);
    }
  };
  // The trainer's reads: every row once, in a shuffled order, one fseek + fread each.
  std::vector<uint32_t> order(h.num_sequences);
  std::iota(order.begin(), order.end(), 0u);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<uint16_t> row(h.seq_len);
  auto read_rows = [&] {
    for (uint32_t r : order) {
      if (fseek(f, long(sizeof h + uint64_t(r) * h.seq_len * 2), SEEK_SET) != 0 ||
          fread(row.data(), 2, h.seq_len, f) != h.seq_len)
        exit(1);
    }
  };
  const double warm_verify = best_seconds(verify), warm_rows = best_seconds(read_rows);
  const double cold_verify = best_seconds(verify, true, path), cold_rows = best_seconds(read_rows, true, path);
  printf("verify the shard, in the page cache: %6.3f s (%5.2f GB/s)\n", warm_verify, size_gb / warm_verify);
  printf("verify the shard, from the disk:     %6.3f s (%5.2f GB/s)\n", cold_verify, size_gb / cold_verify);
  printf("read every row in shuffled order, in the page cache: %6.3f s; verifying adds %.0f%%\n", warm_rows,
         100 * warm_verify / warm_rows);
  printf("read every row in shuffled order, from the disk:     %6.3f s; verifying adds %.0f%%\n", cold_rows,
         100 * cold_verify / cold_rows);
  fclose(f);
  return sink == 0x12345678;  // keeps the CRCs from being optimised away
}
