// bigsc/common.h: the standard headers bigs.cu uses, errors, strf, counter-based random numbers,
// and the unit the cost device counts in. Included first; names nothing from bigs.cu.

#pragma once

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <complex>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>  // the fast CPU kernels' vector intrinsics
#endif

#include <glob.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <thread>

#ifdef BIGS_MPI
#define OMPI_SKIP_MPICXX 1  // MPI's C interface only: the deprecated C++ bindings do not compile cleanly
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif
// The CUDA path is compiled by nvcc, or by g++ for the tests' emulated CUDA
// device (-DBIGS_EMU, test/emu/), which runs the same source on the CPU.
#if defined(__CUDACC__) || defined(BIGS_EMU)
#define BIGS_CUDA 1
#endif
#ifdef BIGS_NCCL
#if !defined(BIGS_MPI) || !defined(BIGS_CUDA)
#error "BIGS_NCCL needs BIGS_MPI and the CUDA path: the ranks find each other through MPI, NCCL runs on CUDA streams"
#endif
#include <nccl.h>
#endif

// Functions the CPU and the GPU share (random numbers, activation formulas),
// so both paths compute the very same expressions.
#ifdef __CUDACC__
#define BIGS_HD __host__ __device__
#else
#define BIGS_HD
#endif

namespace bigs {

// ============================================================================
// Utilities
// ============================================================================

// Errors travel up as a message; only the command layer prints and exits.
struct Error {
  std::string msg;
};

[[gnu::format(printf, 1, 2)]] static std::string strf(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

static double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Counter-based random numbers: a value depends only on (seed, stream, index),
// never on the order of calls, so a dropout mask is the same on every device
// and after a resume, and generating it parallelises trivially.
BIGS_HD static inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
BIGS_HD static inline float uniform_at(uint64_t seed, uint64_t stream, uint64_t i) {
  uint64_t h = splitmix64(seed ^ splitmix64(stream ^ splitmix64(i)));
  return (float)(h >> 40) * (1.0f / 16777216.0f);  // 24 bits: exact in fp32
}

// A small sequential generator for initialisation and masking. Its whole state
// is one integer, so a checkpoint can store it and a resumed run continues
// the same stream.
struct Rng {
  uint64_t state;
  uint64_t next() { return splitmix64(state++); }
  float uniform() { return (float)(next() >> 40) * (1.0f / 16777216.0f); }
  uint32_t below(uint32_t n) { return (uint32_t)(((next() >> 32) * (uint64_t)n) >> 32); }
  float normal() {  // Box-Muller; one draw per call keeps the state simple
    float u1 = ((float)(next() >> 40) + 1.0f) * (1.0f / 16777217.0f);
    float u2 = uniform();
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
  }
};

// What one GPU operation costs, for the cost device (see Cost): each of its
// launches (a kernel or a library call) with its floating-point work,
// whether that runs on tensor cores (bf16 products) or on CUDA cores, and
// the bytes it moves through device memory (every tensor it touches counted
// once per launch, read or written, as if re-reads hit the cache). The
// launches of one stream run one after another, so each is its own
// roofline. Each GPU launcher has its formula beside it, in the element
// sizes it runs with.
struct Launch {
  const char* op;  // the row of the cost table it adds to
  double flops;
  bool tensor;  // true: tensor-core products; false: CUDA-core work
  double bytes;
};
using OpCost = std::vector<Launch>;

constexpr int kColChunks = 64;  // row slices of the GPU's two-stage column sums (see CUDA plumbing)
constexpr int kRedBlocks = 512;  // blocks of the GPU's two-stage dot products (dot_reduce)

}  // namespace bigs
