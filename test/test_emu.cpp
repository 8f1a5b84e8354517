// test_emu.cpp: the emulated CUDA runtime (test/emu) against small kernels
// written here. Each strictness rule has a test that plants the bug and
// shows the emulator catch it, next to a test of the feature working.
//
// Built three ways (Makefile, "emulated CUDA device: runtime"):
//   build/test_emu       the runtime tests;
//   build/test_emu_asan  the same under AddressSanitizer, where the
//                        out-of-bounds test runs (a death test);
//   build/test_emu_nccl  with -DEMU_TEST_NCCL: the NCCL-over-MPI tests only,
//                        for mpirun -np 2.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "emu/cuda_emu.h"

#ifdef EMU_TEST_NCCL
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>
#include <nccl.h>
#endif

#define CK(call) ASSERT_EQ(cudaSuccess, (call))

// ---------------------------------------------------------------------------
// Kernels (in a named namespace: with -rdynamic the emulator's messages
// name them).
namespace kernels {

__global__ void iota_kernel(float* x, float base, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = base + (float)i;
}

__global__ void twice_kernel(float* y, const float* x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = 2 * x[i];
}

// Every thread writes its coordinates at its linear index.
__global__ void coords_kernel(uint4* out, unsigned* visits) {
  unsigned tpb = blockDim.x * blockDim.y * blockDim.z;
  unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  unsigned i = b * tpb + t;
  out[i] = make_uint4(threadIdx.x | threadIdx.y << 10 | threadIdx.z << 20, blockIdx.x, blockIdx.y, blockIdx.z);
  atomicAdd(&visits[i], 1u);
}

// The order in which blocks ran: order[k] = the block that ran k-th.
__global__ void block_order_kernel(int* order, int* counter) {
  if (threadIdx.x == 0) order[atomicAdd(counter, 1)] = blockIdx.x;
}

// Assumes block b runs after block b-1 (a bug: blocks are independent).
__global__ void chain_kernel(float* out) {
  int b = blockIdx.x;
  if (threadIdx.x == 0) out[b] = b == 0 ? 1.0f : out[b - 1] + 1.0f;
}

// A tree sum of 256 values in shared memory; without the barriers a thread
// reads partial sums other threads have not written yet. (Not a template:
// g++ 12 drops the section attribute of a template's static locals, so a
// template kernel's __shared__ arrays are not poisoned; see cuda_emu.h.)
__global__ void block_sum_kernel(float* out, const float* in, bool sync) {
  __shared__ float s[256];
  s[threadIdx.x] = in[blockIdx.x * 256 + threadIdx.x];
  if (sync) __syncthreads();
  for (int k = 128; k > 0; k >>= 1) {
    if ((int)threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
    if (sync) __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}

// A barrier only some threads reach (undefined on a GPU).
__global__ void divergent_barrier_kernel(float* out) {
  if (threadIdx.x < 16) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

// Reverses each block's slice through shared memory: needs the barrier and
// per-block shared memory (blocks would clobber each other's otherwise).
template <class T>
__global__ void reverse_kernel(T* out, const T* in) {
  __shared__ T s[1024];
  int n = blockDim.x, base = blockIdx.x * n;
  s[threadIdx.x] = in[base + threadIdx.x];
  __syncthreads();
  out[base + threadIdx.x] = s[n - 1 - threadIdx.x];
  __syncthreads();
  s[threadIdx.x] = -1;  // the next block must not see this
}

// Reads a shared slot nobody wrote in this block.
__global__ void unwritten_shared_kernel(float* out) {
  __shared__ float s[64];
  if (threadIdx.x == 0) s[0] = 1;
  __syncthreads();
  out[blockIdx.x * 2] = s[0];
  out[blockIdx.x * 2 + 1] = s[1];
}

// Writes one past the end of an n-float buffer.
__global__ void overflow_kernel(float* x, int n) {
  if (threadIdx.x == 0) x[n] = 1;
}

// Parameters are per thread: a kernel may modify its own.
__global__ void param_kernel(int* out, int v) {
  v += threadIdx.x;
  out[threadIdx.x] = v;
}

template <class T>
__global__ void convert_kernel(T* out, const float* in, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16(in[i] * 0.5f);
}

__global__ void empty_kernel(float*) {}

__global__ void many_barriers_kernel(int* out) {
  __shared__ int s[1024];
  s[threadIdx.x] = threadIdx.x;
  for (int r = 0; r < 10; r++) {
    __syncthreads();
    int v = s[(threadIdx.x + 1) % blockDim.x];
    __syncthreads();
    s[threadIdx.x] = v;
  }
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

}  // namespace kernels

namespace {
using namespace kernels;

class Emu : public ::testing::Test {
 protected:
  void SetUp() override {
    unsetenv("BIGS_EMU_ORDER");
    unsetenv("BIGS_EMU_CARD");
    unsetenv("BIGS_EMU_SEED");
    cudaDeviceReset();
  }
  void TearDown() override { cudaDeviceReset(); }
};

std::vector<float> to_host(const float* d, size_t n) {
  std::vector<float> h(n);
  EXPECT_EQ(cudaSuccess, cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

#ifndef EMU_TEST_NCCL

// ---------------------------------------------------------------------------
// Launches and threads.

TEST_F(Emu, EveryThreadOnceWithItsCoordinates) {
  dim3 grid(3, 2, 2), block(8, 4, 2);
  unsigned n = 12 * 64;
  uint4* out;
  unsigned* visits;
  CK(cudaMalloc(&out, n * sizeof(uint4)));
  CK(cudaMalloc(&visits, n * sizeof(unsigned)));
  CK(cudaMemset(visits, 0, n * sizeof(unsigned)));
  emu::launch(coords_kernel, grid, block, 0, 0, out, visits);
  CK(cudaGetLastError());
  std::vector<uint4> h(n);
  std::vector<unsigned> v(n);
  CK(cudaMemcpy(h.data(), out, n * sizeof(uint4), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(v.data(), visits, n * sizeof(unsigned), cudaMemcpyDeviceToHost));
  for (unsigned i = 0; i < n; i++) {
    unsigned b = i / 64, t = i % 64;
    ASSERT_EQ(1u, v[i]) << i;
    EXPECT_EQ((t % 8) | ((t / 8) % 4) << 10 | (t / 32) << 20, h[i].x);
    EXPECT_EQ(b % 3, h[i].y);
    EXPECT_EQ((b / 3) % 2, h[i].z);
    EXPECT_EQ(b / 6, h[i].w);
  }
  CK(cudaFree(out));
  CK(cudaFree(visits));
}

TEST_F(Emu, ParametersAreConvertedAndPerThread) {
  int* out;
  CK(cudaMalloc(&out, 32 * sizeof(int)));
  emu::launch(param_kernel, 1, 32, 0, 0, out, 100.7);  // double -> int at the launch, as <<<>>> converts
  std::vector<int> h(32);
  CK(cudaMemcpy(h.data(), out, sizeof(int) * 32, cudaMemcpyDeviceToHost));
  for (int i = 0; i < 32; i++) EXPECT_EQ(100 + i, h[i]);
  CK(cudaFree(out));
}

TEST_F(Emu, MacroLaunchDeducesTemplateArguments) {
  float* in;
  __nv_bfloat16* out;
  CK(cudaMalloc(&in, 4 * sizeof(float)));
  CK(cudaMalloc(&out, 4 * sizeof(__nv_bfloat16)));
  float h[4] = {1, 3, -5, 1e-3f};
  CK(cudaMemcpy(in, h, sizeof h, cudaMemcpyHostToDevice));
  EMU_LAUNCH(convert_kernel, 1, 32, 0, 0, out, in, 4);  // convert_kernel<__nv_bfloat16>
  CK(cudaGetLastError());
  __nv_bfloat16 r[4];
  CK(cudaMemcpy(r, out, sizeof r, cudaMemcpyDeviceToHost));
  for (int i = 0; i < 4; i++) EXPECT_NEAR(h[i] * 0.5f, __bfloat162float(r[i]), std::fabs(h[i]) * 4e-3f);
  CK(cudaFree(in));
  CK(cudaFree(out));
}

TEST_F(Emu, BlocksRunInAPermutedOrder) {
  int *order, *counter;
  const int n = 64;
  CK(cudaMalloc(&order, n * sizeof(int)));
  CK(cudaMalloc(&counter, sizeof(int)));
  CK(cudaMemset(counter, 0, sizeof(int)));
  emu::launch(block_order_kernel, n, 32, 0, 0, order, counter);
  std::vector<int> h(n);
  CK(cudaMemcpy(h.data(), order, n * sizeof(int), cudaMemcpyDeviceToHost));
  std::vector<int> sorted = h;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < n; i++) ASSERT_EQ(i, sorted[i]);  // each block once
  int natural = 0;
  for (int i = 0; i < n; i++) natural += h[i] == i;
  EXPECT_LT(natural, n / 2);
}

// Planted bug: a kernel that depends on block order.
TEST_F(Emu, PlantedBlockOrderDependenceIsCaught) {
  const int n = 32;
  float* out;
  CK(cudaMalloc(&out, n * sizeof(float)));
  emu::launch(chain_kernel, n, 32, 0, 0, out);
  std::vector<float> h = to_host(out, n);
  int wrong = 0;
  for (int i = 0; i < n; i++) wrong += !(h[i] == i + 1);
  EXPECT_GT(wrong, 0) << "the chain came out as in natural block order";
  CK(cudaFree(out));
}

TEST_F(Emu, BarrierReductionCorrectWithSyncthreads) {
  const int blocks = 4;
  std::vector<float> h(blocks * 256);
  for (size_t i = 0; i < h.size(); i++) h[i] = (float)(i % 7);
  float *in, *out;
  CK(cudaMalloc(&in, h.size() * sizeof(float)));
  CK(cudaMalloc(&out, blocks * sizeof(float)));
  CK(cudaMemcpy(in, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
  emu::launch(block_sum_kernel, blocks, 256, 0, 0, out, in, true);
  std::vector<float> r = to_host(out, blocks);
  for (int b = 0; b < blocks; b++) {
    float want = 0;
    for (int i = 0; i < 256; i++) want += h[b * 256 + i];
    EXPECT_EQ(want, r[b]);
  }
  CK(cudaFree(in));
  CK(cudaFree(out));
}

// Planted bug: the same reduction without its barriers. Threads that never
// wait run one after another, each to its end, in the block's order
// (forward or reverse, a seeded choice per block): forward, thread 0 adds
// slots no thread has written yet (poison, NaN); reverse happens to give
// the sequential answer. Over 8 blocks some run forward.
TEST_F(Emu, PlantedMissingSyncthreadsIsCaught) {
  const int blocks = 8;
  std::vector<float> h(blocks * 256, 1.0f);
  float *in, *out;
  CK(cudaMalloc(&in, h.size() * sizeof(float)));
  CK(cudaMalloc(&out, blocks * sizeof(float)));
  CK(cudaMemcpy(in, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
  emu::launch(block_sum_kernel, blocks, 256, 0, 0, out, in, false);
  std::vector<float> r = to_host(out, blocks);
  int wrong = 0;
  float shown = 256;
  for (float v : r)
    if (!(v == 256.0f)) wrong++, shown = v;
  EXPECT_GT(wrong, 0) << "the reduction without barriers came out right in every block";
  printf("[ caught   ] without __syncthreads %d of %d blocks sum to %g instead of 256\n", wrong, blocks, shown);
  CK(cudaFree(in));
  CK(cudaFree(out));
}

TEST_F(Emu, SharedMemoryIsPerBlockAndBarriersHold) {
  const int blocks = 5, n = 1024;
  std::vector<int> h(blocks * n);
  for (size_t i = 0; i < h.size(); i++) h[i] = (int)i;
  int *in, *out;
  CK(cudaMalloc(&in, h.size() * sizeof(int)));
  CK(cudaMalloc(&out, h.size() * sizeof(int)));
  CK(cudaMemcpy(in, h.data(), h.size() * sizeof(int), cudaMemcpyHostToDevice));
  emu::launch(reverse_kernel<int>, blocks, n, 0, 0, out, in);
  std::vector<int> r(h.size());
  CK(cudaMemcpy(r.data(), out, r.size() * sizeof(int), cudaMemcpyDeviceToHost));
  for (int b = 0; b < blocks; b++)
    for (int t = 0; t < n; t++) ASSERT_EQ(b * n + n - 1 - t, r[b * n + t]);
  int* o2;
  CK(cudaMalloc(&o2, 1024 * sizeof(int)));
  emu::launch(many_barriers_kernel, 1, 1024, 0, 0, o2);
  CK(cudaMemcpy(r.data(), o2, 1024 * sizeof(int), cudaMemcpyDeviceToHost));
  for (int t = 0; t < 1024; t++) ASSERT_EQ((t + 10) % 1024, r[t]);
  CK(cudaFree(in));
  CK(cudaFree(out));
  CK(cudaFree(o2));
}

// Planted bug: reading shared memory no thread of the block wrote.
TEST_F(Emu, PlantedUnwrittenSharedMemoryIsNaN) {
  float* out;
  CK(cudaMalloc(&out, 6 * sizeof(float)));
  emu::launch(unwritten_shared_kernel, 3, 32, 0, 0, out);
  std::vector<float> h = to_host(out, 6);
  for (int b = 0; b < 3; b++) {
    EXPECT_EQ(1.0f, h[2 * b]);
    EXPECT_TRUE(std::isnan(h[2 * b + 1]));
  }
  CK(cudaFree(out));
}

// Planted bug: __syncthreads reached by only part of the block.
TEST_F(Emu, PlantedDivergentBarrierIsCaught) {
  float* out;
  CK(cudaMalloc(&out, 64 * sizeof(float)));
  int before = emu::failures();
  emu::launch(divergent_barrier_kernel, 1, 64, 0, 0, out);
  EXPECT_EQ(cudaErrorLaunchFailure, cudaDeviceSynchronize());
  EXPECT_EQ(before + 1, emu::failures());
}

// Planted bugs: launch limits (1025 threads, grid y 65536, block z 65).
TEST_F(Emu, PlantedLaunchLimitsAreCaught) {
  float* x;
  CK(cudaMalloc(&x, 4 * sizeof(float)));
  emu::launch(empty_kernel, 1, 1024, 0, 0, x);
  EXPECT_EQ(cudaSuccess, cudaGetLastError());
  emu::launch(empty_kernel, 1, 1025, 0, 0, x);
  EXPECT_EQ(cudaErrorInvalidConfiguration, cudaGetLastError());
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // not sticky
  emu::launch(empty_kernel, dim3(1, 65535), 32, 0, 0, x);
  EXPECT_EQ(cudaSuccess, cudaGetLastError());
  emu::launch(empty_kernel, dim3(1, 65536), 32, 0, 0, x);
  EXPECT_EQ(cudaErrorInvalidConfiguration, cudaGetLastError());
  emu::launch(empty_kernel, 1, dim3(1, 1, 65), 0, 0, x);
  EXPECT_EQ(cudaErrorInvalidConfiguration, cudaGetLastError());
  emu::launch(empty_kernel, dim3(0x80000000u), 32, 0, 0, x);
  EXPECT_EQ(cudaErrorInvalidConfiguration, cudaGetLastError());
  emu::launch(empty_kernel, dim3(0x7fffffffu), 1, 0, (cudaStream_t)0x1234, x);
  EXPECT_EQ(cudaErrorInvalidResourceHandle, cudaGetLastError());
  EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
  CK(cudaFree(x));
}

// Planted bug: too much shared memory; the opt-in.
TEST_F(Emu, PlantedTooMuchSharedMemoryIsCaught) {
  float* x;
  CK(cudaMalloc(&x, 4 * sizeof(float)));
  emu::launch(empty_kernel, 1, 32, 48 * 1024, 0, x);
  EXPECT_EQ(cudaSuccess, cudaGetLastError());
  emu::launch(empty_kernel, 1, 32, 48 * 1024 + 1, 0, x);
  EXPECT_EQ(cudaErrorInvalidConfiguration, cudaGetLastError());
  EXPECT_EQ(cudaSuccess,
            cudaFuncSetAttribute((const void*)empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024));
  emu::launch(empty_kernel, 1, 32, 100 * 1024, 0, x);
  EXPECT_EQ(cudaSuccess, cudaGetLastError());
  emu::launch(empty_kernel, 1, 32, 100 * 1024 + 1, 0, x);
  EXPECT_EQ(cudaErrorInvalidConfiguration, cudaGetLastError());
  EXPECT_EQ(cudaErrorInvalidValue, cudaFuncSetAttribute((const void*)empty_kernel,
                                                        cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024 + 1));
  CK(cudaDeviceSynchronize());
  CK(cudaFree(x));
}

// Planted bug: a host pointer passed to a kernel.
TEST_F(Emu, PlantedHostPointerArgumentIsCaught) {
  std::vector<float> host(64);
  float* d;
  CK(cudaMalloc(&d, 64 * sizeof(float)));
  emu::launch(iota_kernel, 1, 64, 0, 0, d + 64, 0.0f, 0);  // one past the end: allowed
  EXPECT_EQ(cudaSuccess, cudaGetLastError());
  emu::launch(iota_kernel, 1, 64, 0, 0, host.data(), 0.0f, 64);
  EXPECT_EQ(cudaErrorIllegalAddress, cudaGetLastError());
  EXPECT_EQ(cudaErrorIllegalAddress, cudaGetLastError());  // sticky
  EXPECT_EQ(cudaErrorIllegalAddress, cudaDeviceSynchronize());
  EXPECT_EQ(0.0f, host[0]);  // the kernel did not run
}

// ---------------------------------------------------------------------------
// Memory.

// Planted bug: reading a buffer nobody wrote.
TEST_F(Emu, PlantedUnwrittenBufferIsNaN) {
  float* d;
  __nv_bfloat16* b;
  CK(cudaMalloc(&d, 8 * sizeof(float)));
  CK(cudaMalloc(&b, 8 * sizeof(__nv_bfloat16)));
  emu::launch(iota_kernel, 1, 32, 0, 0, d, 0.0f, 4);  // writes only the first half
  std::vector<float> h = to_host(d, 8);
  for (int i = 0; i < 4; i++) EXPECT_EQ((float)i, h[i]);
  for (int i = 4; i < 8; i++) EXPECT_TRUE(std::isnan(h[i])) << h[i];
  __nv_bfloat16 hb[8];
  CK(cudaMemcpy(hb, b, sizeof hb, cudaMemcpyDeviceToHost));
  EXPECT_TRUE(std::isnan(__bfloat162float(hb[0])));
  CK(cudaFree(d));
  CK(cudaFree(b));
}

TEST_F(Emu, CopiesAndMemsets) {
  float *a, *b;
  CK(cudaMalloc(&a, 16 * sizeof(float)));
  CK(cudaMalloc(&b, 16 * sizeof(float)));
  EXPECT_EQ(0u, (uintptr_t)a % 256);
  std::vector<float> h(16);
  for (int i = 0; i < 16; i++) h[i] = (float)i;
  CK(cudaMemcpy(a, h.data(), 64, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(b, a, 64, cudaMemcpyDeviceToDevice));
  CK(cudaMemset(b, 0, 16));
  CK(cudaMemcpy(b + 8, a, 16, cudaMemcpyDefault));
  std::vector<float> r = to_host(b, 16);
  for (int i = 0; i < 16; i++) EXPECT_EQ(i < 4 ? 0.0f : i >= 8 && i < 12 ? (float)(i - 8) : (float)i, r[i]) << i;
  CK(cudaFree(a));
  CK(cudaFree(b));
}

// Planted bugs: a copy whose kind does not match where the pointers live,
// and a copy past an allocation's end.
TEST_F(Emu, PlantedWrongCopyKindIsCaught) {
  float* d;
  std::vector<float> h(16);
  CK(cudaMalloc(&d, 16 * sizeof(float)));
  EXPECT_EQ(cudaErrorInvalidValue, cudaMemcpy(d, h.data(), 64, cudaMemcpyDeviceToHost));
  EXPECT_EQ(cudaErrorInvalidValue, cudaGetLastError());
  EXPECT_EQ(cudaErrorInvalidValue, cudaMemcpy(h.data(), d, 64, cudaMemcpyHostToDevice));
  EXPECT_EQ(cudaErrorInvalidValue, cudaMemcpy(h.data(), h.data() + 8, 16, cudaMemcpyDeviceToDevice));
  EXPECT_EQ(cudaErrorInvalidValue, cudaMemcpy(d + 8, h.data(), 64, cudaMemcpyHostToDevice));  // past the end
  EXPECT_EQ(cudaErrorInvalidValue, cudaMemset(h.data(), 0, 16));
  EXPECT_EQ(cudaErrorInvalidValue, cudaMemcpyAsync(d, h.data(), 64, cudaMemcpyDeviceToDevice, 0));
  EXPECT_EQ(cudaErrorInvalidValue, cudaGetLastError());
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // not sticky
  CK(cudaMemcpy(d, h.data(), 64, cudaMemcpyHostToDevice));
  CK(cudaFree(d));
}

// Planted bugs: freeing twice, freeing a host pointer or an interior one.
TEST_F(Emu, PlantedDoubleFreeIsCaught) {
  float* d;
  CK(cudaMalloc(&d, 64));
  EXPECT_EQ(cudaErrorInvalidValue, cudaFree(d + 1));
  CK(cudaFree(d));
  EXPECT_EQ(cudaErrorInvalidValue, cudaFree(d));
  int x;
  EXPECT_EQ(cudaErrorInvalidValue, cudaFree(&x));
  EXPECT_EQ(cudaSuccess, cudaFree(nullptr));
}

TEST_F(Emu, CardSizeAndOutOfMemory) {
  setenv("BIGS_EMU_CARD", "1MB", 1);
  cudaDeviceReset();
  size_t free0, total;
  CK(cudaMemGetInfo(&free0, &total));
  EXPECT_EQ(size_t(1) << 20, total);
  EXPECT_EQ(total, free0);
  void *a, *b;
  CK(cudaMalloc(&a, 600 << 10));
  CK(cudaMemGetInfo(&free0, &total));
  EXPECT_EQ(size_t(424) << 10, free0);
  EXPECT_EQ(cudaErrorMemoryAllocation, cudaMalloc(&b, 600 << 10));
  CK(cudaFree(a));
  CK(cudaMalloc(&b, 600 << 10));
  CK(cudaFree(b));
  setenv("BIGS_EMU_CARD", "h200", 1);
  cudaDeviceReset();
  CK(cudaMemGetInfo(&free0, &total));
  EXPECT_EQ(size_t(141) << 30, total);
  unsetenv("BIGS_EMU_CARD");
  cudaDeviceReset();
  CK(cudaMemGetInfo(&free0, &total));
  EXPECT_EQ(size_t(80) << 30, total);
}

// Planted bug: memory never freed, reported at teardown (exit).
TEST_F(Emu, PlantedLeakIsReportedAtTeardown) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        void* p;
        if (cudaMalloc(&p, 100) == cudaSuccess && cudaMalloc(&p, 28) == cudaSuccess) exit(0);
        exit(1);
      },
      ::testing::ExitedWithCode(0), "emu: teardown: 2 device allocation\\(s\\) never freed, 128 bytes");
}

// Planted bug: one past the end of a cudaMalloc'd buffer, in a kernel.
TEST_F(Emu, PlantedOutOfBoundsIsCaughtByASan) {
#if !defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "runs in build/test_emu_asan";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        float* d;
        if (cudaMalloc(&d, 10 * sizeof(float)) != cudaSuccess) exit(1);
        emu::launch(overflow_kernel, 1, 32, 0, 0, d, 9);  // in bounds: fine
        cudaDeviceSynchronize();
        emu::launch(overflow_kernel, 1, 32, 0, 0, d, 10);
        cudaDeviceSynchronize();
      },
      "heap-buffer-overflow");
#endif
}

// ---------------------------------------------------------------------------
// Streams and events.

TEST_F(Emu, EventWaitOrdersTwoStreams) {
  const int n = 256;
  float *x, *y;
  cudaStream_t s1, s2;
  cudaEvent_t e;
  CK(cudaMalloc(&x, n * sizeof(float)));
  CK(cudaMalloc(&y, n * sizeof(float)));
  CK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  CK(cudaStreamCreate(&s2));
  CK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  emu::launch(iota_kernel, 1, n, 0, s1, x, 1.0f, n);
  CK(cudaEventRecord(e, s1));
  CK(cudaStreamWaitEvent(s2, e, 0));
  emu::launch(twice_kernel, 1, n, 0, s2, y, x, n);
  CK(cudaStreamSynchronize(s2));
  std::vector<float> h(n);
  CK(cudaMemcpyAsync(h.data(), y, n * sizeof(float), cudaMemcpyDeviceToHost, s2));  // done on return
  for (int i = 0; i < n; i++) ASSERT_EQ(2.0f * (1 + i), h[i]);
  CK(cudaEventDestroy(e));
  CK(cudaStreamDestroy(s1));
  CK(cudaStreamDestroy(s2));
  CK(cudaFree(x));
  CK(cudaFree(y));
}

// Planted bug: the same without the cudaStreamWaitEvent.
TEST_F(Emu, PlantedMissingEventWaitIsCaught) {
  const int n = 256;
  for (const char* order : {"lifo", "random"}) {
    setenv("BIGS_EMU_ORDER", order, 1);
    for (int sync_device = 0; sync_device < 2; sync_device++) {
      int caught = 0;
      for (int seed = 1; seed <= 4; seed++) {
        setenv("BIGS_EMU_SEED", std::to_string(seed).c_str(), 1);
        cudaDeviceReset();
        float *x, *y;
        cudaStream_t s1, s2;
        CK(cudaMalloc(&x, n * sizeof(float)));
        CK(cudaMalloc(&y, n * sizeof(float)));
        CK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
        CK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
        emu::launch(iota_kernel, 1, n, 0, s1, x, 1.0f, n);
        emu::launch(twice_kernel, 1, n, 0, s2, y, x, n);  // should have waited for s1
        if (sync_device) CK(cudaDeviceSynchronize());
        else CK(cudaStreamSynchronize(s2));
        std::vector<float> h(n);
        CK(cudaMemcpyAsync(h.data(), y, n * sizeof(float), cudaMemcpyDeviceToHost, s2));
        bool wrong = !(h[0] == 2.0f);
        caught += wrong;
        if (wrong && seed == 1)
          printf("[ caught   ] order %s, %s: y[0] = %g instead of 2\n", order,
                 sync_device ? "cudaDeviceSynchronize" : "cudaStreamSynchronize", h[0]);
      }
      // lifo catches it every time; random at least once in four seeds
      if (std::string(order) == "lifo" || !sync_device) EXPECT_EQ(4, caught) << order << " " << sync_device;
      else EXPECT_GT(caught, 0) << order;
    }
  }
}

// The legacy default stream waits for blocking streams (and not for
// non-blocking ones: there a synchronous copy reads stale data).
TEST_F(Emu, LegacyStreamImplicitSynchronisation) {
  const int n = 64;
  for (unsigned flags : {0u, (unsigned)cudaStreamNonBlocking}) {
    cudaDeviceReset();
    float* x;
    cudaStream_t s;
    CK(cudaMalloc(&x, n * sizeof(float)));
    CK(cudaStreamCreateWithFlags(&s, flags));
    emu::launch(iota_kernel, 1, n, 0, s, x, 5.0f, n);
    std::vector<float> h = to_host(x, n);
    if (flags == 0) EXPECT_EQ(5.0f, h[0]);
    else EXPECT_TRUE(std::isnan(h[0]));
  }
}

TEST_F(Emu, AsyncHostToDeviceStagesTheSource) {
  float* d;
  cudaStream_t s;
  CK(cudaMalloc(&d, 4 * sizeof(float)));
  CK(cudaStreamCreate(&s));
  std::vector<float> h = {1, 2, 3, 4};
  CK(cudaMemcpyAsync(d, h.data(), 16, cudaMemcpyHostToDevice, s));
  h.assign(4, -1.0f);  // the copy took the values at the call
  CK(cudaStreamSynchronize(s));
  std::vector<float> r = to_host(d, 4);
  EXPECT_EQ(1.0f, r[0]);
  EXPECT_EQ(4.0f, r[3]);
  CK(cudaMemsetAsync(d, 0, 16, s));
  CK(cudaStreamSynchronize(s));
  EXPECT_EQ(0.0f, to_host(d, 4)[2]);
  CK(cudaStreamDestroy(s));
  CK(cudaFree(d));
}

TEST_F(Emu, EventsTimeAndRefuseWhatTheyMust) {
  cudaEvent_t a, b, c;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  CK(cudaEventCreateWithFlags(&c, cudaEventDisableTiming));
  float ms = -1;
  EXPECT_EQ(cudaErrorInvalidResourceHandle, cudaEventElapsedTime(&ms, a, b));  // never recorded
  CK(cudaEventRecord(a, 0));
  float* x;
  CK(cudaMalloc(&x, 1024 * sizeof(float)));
  emu::launch(iota_kernel, 4, 256, 0, 0, x, 0.0f, 1024);
  CK(cudaEventRecord(b, 0));
  CK(cudaEventRecord(c, 0));
  EXPECT_EQ(cudaErrorNotReady, cudaEventElapsedTime(&ms, a, b));
  CK(cudaEventSynchronize(b));
  CK(cudaEventElapsedTime(&ms, a, b));
  EXPECT_GT(ms, 0.0f);
  EXPECT_EQ(cudaErrorInvalidResourceHandle, cudaEventElapsedTime(&ms, a, c));
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  CK(cudaEventDestroy(c));
  EXPECT_EQ(cudaErrorInvalidResourceHandle, cudaEventDestroy(c));
  CK(cudaFree(x));
}

TEST_F(Emu, DeviceQueriesAndErrors) {
  int n = 0, dev = -1, v = 0, least = 1, greatest = 1;
  CK(cudaGetDeviceCount(&n));
  EXPECT_EQ(1, n);
  CK(cudaSetDevice(0));
  EXPECT_EQ(cudaErrorInvalidDevice, cudaSetDevice(1));
  EXPECT_EQ(cudaErrorInvalidDevice, cudaGetLastError());
  EXPECT_EQ(cudaSuccess, cudaPeekAtLastError());
  CK(cudaGetDevice(&dev));
  EXPECT_EQ(0, dev);
  CK(cudaDeviceGetAttribute(&v, cudaDevAttrL2CacheSize, 0));
  EXPECT_EQ(50 << 20, v);
  CK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  EXPECT_EQ(227 << 10, v);
  CK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  EXPECT_EQ(0, least);
  EXPECT_EQ(-5, greatest);
  cudaStream_t s;
  CK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, greatest));
  CK(cudaStreamDestroy(s));
  EXPECT_EQ(cudaErrorInvalidResourceHandle, cudaStreamSynchronize(s));
  EXPECT_STREQ("invalid argument", cudaGetErrorString(cudaErrorInvalidValue));
  EXPECT_STREQ("cudaErrorIllegalAddress", cudaGetErrorName(cudaErrorIllegalAddress));
}

// Speed: threads that never wait at a barrier run straight through on one
// stack; report the cost per thread.
TEST_F(Emu, ThreadsWithoutBarriersAreCheap) {
  const int n = 1 << 20;
  float* x;
  CK(cudaMalloc(&x, n * sizeof(float)));
  auto t0 = std::chrono::steady_clock::now();
  emu::launch(iota_kernel, n / 256, 256, 0, 0, x, 0.0f, n);
  CK(cudaDeviceSynchronize());
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<float> h = to_host(x, n);
  EXPECT_EQ((float)(n - 1), h[n - 1]);
  printf("[ timing   ] %d threads without barriers: %.1f ns a thread\n", n, s / n * 1e9);
  std::vector<float> in(256 * 1024, 1.0f);
  float *din, *dout;
  CK(cudaMalloc(&din, in.size() * sizeof(float)));
  CK(cudaMalloc(&dout, 1024 * sizeof(float)));
  CK(cudaMemcpy(din, in.data(), in.size() * sizeof(float), cudaMemcpyHostToDevice));
  t0 = std::chrono::steady_clock::now();
  emu::launch(block_sum_kernel, 1024, 256, 0, 0, dout, din, true);
  CK(cudaDeviceSynchronize());
  s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(256.0f, to_host(dout, 1024)[1023]);
  printf("[ timing   ] %d threads through 9 barriers each: %.1f ns a thread\n", 256 * 1024, s / (256 * 1024) * 1e9);
  CK(cudaFree(x));
  CK(cudaFree(din));
  CK(cudaFree(dout));
}

#else  // EMU_TEST_NCCL

// ---------------------------------------------------------------------------
// NCCL over MPI, under mpirun -np 2 (or more).

struct Nccl : Emu {
  int rank = 0, size = 1;
  ncclComm_t comm = nullptr;
  void SetUp() override {
    Emu::SetUp();
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    ncclUniqueId id;
    if (rank == 0) {
      ASSERT_EQ(ncclSuccess, ncclGetUniqueId(&id));
    }
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ASSERT_EQ(ncclSuccess, ncclCommInitRank(&comm, size, id, rank));
  }
  void TearDown() override {
    if (comm) {
      EXPECT_EQ(ncclSuccess, ncclCommDestroy(comm));
    }
    Emu::TearDown();
  }
};

TEST_F(Nccl, SendRecvPairInAGroup) {
  const int n = 100;
  float *send, *recv;
  cudaStream_t s;
  CK(cudaMalloc(&send, n * sizeof(float)));
  CK(cudaMalloc(&recv, n * size * sizeof(float)));
  CK(cudaStreamCreate(&s));
  emu::launch(iota_kernel, 1, 128, 0, s, send, 1000.0f * rank, n);  // queued: the send must run it first
  ASSERT_EQ(ncclSuccess, ncclGroupStart());
  for (int q = 0; q < size; q++) {
    ASSERT_EQ(ncclSuccess, ncclSend(send, n, ncclFloat, q, comm, s));
    ASSERT_EQ(ncclSuccess, ncclRecv(recv + q * n, n, ncclFloat, q, comm, s));
  }
  ASSERT_EQ(ncclSuccess, ncclGroupEnd());
  CK(cudaStreamSynchronize(s));
  std::vector<float> h = to_host(recv, n * size);
  for (int q = 0; q < size; q++)
    for (int i = 0; i < n; i++) ASSERT_EQ(1000.0f * q + i, h[q * n + i]) << q << " " << i;
  CK(cudaStreamDestroy(s));
  CK(cudaFree(send));
  CK(cudaFree(recv));
}

TEST_F(Nccl, BroadcastInPlaceFromEachRoot) {
  const int n = 50;
  float* buf;
  CK(cudaMalloc(&buf, n * size * sizeof(float)));
  emu::launch(iota_kernel, 1, 64, 0, 0, buf + rank * n, 100.0f * rank, n);
  ASSERT_EQ(ncclSuccess, ncclGroupStart());
  for (int q = 0; q < size; q++)
    ASSERT_EQ(ncclSuccess, ncclBroadcast(buf + q * n, buf + q * n, n, ncclFloat, q, comm, 0));
  ASSERT_EQ(ncclSuccess, ncclGroupEnd());
  std::vector<float> h = to_host(buf, n * size);
  for (int q = 0; q < size; q++)
    for (int i = 0; i < n; i++) ASSERT_EQ(100.0f * q + i, h[q * n + i]);
  CK(cudaFree(buf));
}

TEST_F(Nccl, UngroupedSendRecvAndAllReduce) {
  const int n = 10;
  float *a, *b;
  CK(cudaMalloc(&a, n * sizeof(float)));
  CK(cudaMalloc(&b, n * sizeof(float)));
  emu::launch(iota_kernel, 1, 32, 0, 0, a, (float)rank, n);
  if (size >= 2 && rank < 2) {  // ranks 0 and 1: 0 sends then receives, 1 receives then sends
    int peer = 1 - rank;
    if (rank == 0) {
      ASSERT_EQ(ncclSuccess, ncclSend(a, n, ncclFloat, peer, comm, 0));
      ASSERT_EQ(ncclSuccess, ncclRecv(b, n, ncclFloat, peer, comm, 0));
    } else {
      ASSERT_EQ(ncclSuccess, ncclRecv(b, n, ncclFloat, peer, comm, 0));
      ASSERT_EQ(ncclSuccess, ncclSend(a, n, ncclFloat, peer, comm, 0));
    }
    EXPECT_EQ((float)peer, to_host(b, n)[0]);
  }
  ASSERT_EQ(ncclSuccess, ncclAllReduce(a, b, n, ncclFloat, ncclSum, comm, 0));
  std::vector<float> h = to_host(b, n);
  float ranks = size * (size - 1) / 2.0f;
  for (int i = 0; i < n; i++) EXPECT_EQ(ranks + size * i, h[i]);
  CK(cudaFree(a));
  CK(cudaFree(b));
}

// Planted bug: the send's stream does not wait for the stream that wrote
// the data; what goes out is poison.
TEST_F(Nccl, PlantedMissingWaitBeforeSendIsCaught) {
  if (size < 2) GTEST_SKIP();
  const int n = 16;
  float *a, *b;
  cudaStream_t compute, comm_stream;
  CK(cudaMalloc(&a, n * sizeof(float)));
  CK(cudaMalloc(&b, n * sizeof(float)));
  CK(cudaStreamCreate(&compute));
  CK(cudaStreamCreateWithFlags(&comm_stream, cudaStreamNonBlocking));
  emu::launch(iota_kernel, 1, 32, 0, compute, a, 7.0f, n);
  int peer = rank ^ 1;
  if (peer < size) {
    ASSERT_EQ(ncclSuccess, ncclGroupStart());
    ASSERT_EQ(ncclSuccess, ncclSend(a, n, ncclFloat, peer, comm, comm_stream));
    ASSERT_EQ(ncclSuccess, ncclRecv(b, n, ncclFloat, peer, comm, comm_stream));
    ASSERT_EQ(ncclSuccess, ncclGroupEnd());
    CK(cudaStreamSynchronize(comm_stream));
    float got = to_host(b, 1)[0];
    EXPECT_TRUE(std::isnan(got)) << got;
    if (rank == 0) printf("[ caught   ] rank 0 received %g (poison) instead of 7\n", got);
  }
  CK(cudaDeviceSynchronize());
  CK(cudaStreamDestroy(compute));
  CK(cudaStreamDestroy(comm_stream));
  CK(cudaFree(a));
  CK(cudaFree(b));
}

TEST_F(Nccl, PlantedBadArgumentsAreRefused) {
  float* a;
  CK(cudaMalloc(&a, 4 * sizeof(float)));
  std::vector<float> host(4);
  EXPECT_EQ(ncclInvalidArgument, ncclSend(a, 4, ncclFloat, size, comm, 0));      // no such peer
  EXPECT_EQ(ncclInvalidArgument, ncclSend(host.data(), 4, ncclFloat, 0, comm, 0));  // host memory
  EXPECT_EQ(ncclInvalidArgument, ncclSend(a, 5, ncclFloat, 0, comm, 0));            // past the end
  CK(cudaFree(a));
}

#endif  // EMU_TEST_NCCL

}  // namespace

#ifdef EMU_TEST_NCCL
int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {  // one rank's report is enough; failures still set the exit code
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int r = RUN_ALL_TESTS();
  int any = 0;
  MPI_Allreduce(&r, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}
#endif
