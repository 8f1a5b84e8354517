// bigsc/cuda_common.cuh: CUDA plumbing for bigs.cu: checked calls, the launch helper, the context
// every launcher takes (stream, cuBLASLt handle, cuFFT plans, scratch), block reductions. Included
// at the top of bigs.cu after common.h; names nothing from bigs.cu. Compiled by nvcc, or by g++
// against the tests' emulated CUDA device (BIGS_EMU: test/emu/cuda_emu.h, never in the product).

#pragma once

#include "common.h"

#ifdef BIGS_EMU
#include "emu/cuda_emu.h"
#endif
#ifdef BIGS_CUDA
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cufft.h>
#endif

#ifdef BIGS_CUDA

namespace bigs {

// ---------------------------------------------------------------------------
// CUDA plumbing: checked calls, the context every launcher takes, reductions
// ---------------------------------------------------------------------------
// A failed CUDA, cuBLASLt or cuFFT call throws CudaError naming file:line and
// the library's message. Nothing exits from deep inside: main() and the
// tests catch it and report it.
struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
static void cuda_check(cudaError_t e, const char* file, int line) {
  if (e == cudaSuccess) return;
  // Cleared, so that the next launch check reports its own launch, not this
  // (a sticky fault stays: the context is then unusable anyway).
  (void)cudaGetLastError();
  throw CudaError(strf("%s:%d: CUDA error %s: %s", file, line, cudaGetErrorName(e), cudaGetErrorString(e)));
}
static void cublas_check(cublasStatus_t s, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw CudaError(
        strf("%s:%d: cuBLASLt error %s: %s", file, line, cublasLtGetStatusName(s), cublasLtGetStatusString(s)));
}
static void cufft_check(cufftResult r, const char* file, int line) {
  if (r != CUFFT_SUCCESS)
    throw CudaError(strf("%s:%d: cuFFT error %d (see cufftResult in cufft.h)", file, line, (int)r));
}
#define cudaCheck(call) cuda_check((call), __FILE__, __LINE__)
#define cublasCheck(call) cublas_check((call), __FILE__, __LINE__)
#define cufftCheck(call) cufft_check((call), __FILE__, __LINE__)
#ifdef BIGS_NCCL
static void nccl_check(ncclResult_t r, const char* file, int line) {
  if (r != ncclSuccess) throw CudaError(strf("%s:%d: NCCL error %d: %s", file, line, (int)r, ncclGetErrorString(r)));
}
#define ncclCheck(call) nccl_check((call), __FILE__, __LINE__)
#endif
// After every launch: a bad launch configuration shows up here, at its line.
#define launchCheck() cuda_check(cudaGetLastError(), __FILE__, __LINE__)
// Every kernel launch, in one form: kernel<<<grid, block, smem, stream>>>(...)
// and its check. The emulated build (test/emu) runs the kernel on the CPU
// instead, with the same configuration and the same checks of it.
#ifdef BIGS_EMU
#define launchKernel(kernel, grid, block, smem, stream, ...)          \
  do {                                                                \
    EMU_LAUNCH(kernel, grid, block, smem, stream, __VA_ARGS__);       \
    launchCheck();                                                    \
  } while (0)
#else
#define launchKernel(kernel, grid, block, smem, stream, ...)          \
  do {                                                                \
    kernel<<<grid, block, smem, stream>>>(__VA_ARGS__);               \
    launchCheck();                                                    \
  } while (0)
#endif

// Elementwise kernels use one thread per element in blocks of kThreads;
// reduction kernels use one block of kThreads per row (a power of two, which
// the tree reductions below need).
constexpr int kThreads = 256;
static unsigned grid_for(size_t n) { return (unsigned)std::max<size_t>(1, (n + kThreads - 1) / kThreads); }

// Sum over the block, in a fixed tree order so results are reproducible
// (no atomics anywhere in the model). Every thread gets the total.
template <class T>
__device__ T block_sum(T v) {
  __shared__ T s[kThreads];
  s[threadIdx.x] = v;
  __syncthreads();
  for (int k = kThreads / 2; k > 0; k >>= 1) {
    if ((int)threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
    __syncthreads();
  }
  T r = s[0];
  __syncthreads();  // s may be reused by the next call
  return r;
}
__device__ float block_max(float v) {
  __shared__ float s[kThreads];
  s[threadIdx.x] = v;
  __syncthreads();
  for (int k = kThreads / 2; k > 0; k >>= 1) {
    if ((int)threadIdx.x < k) s[threadIdx.x] = fmaxf(s[threadIdx.x], s[threadIdx.x + k]);
    __syncthreads();
  }
  float r = s[0];
  __syncthreads();
  return r;
}

// Storage types. Kernels compute in fp32 whatever they read or write: ld()
// widens, st() rounds (to nearest even), so one kernel text serves fp32 and
// bf16 tensors alike and the arithmetic is the CPU's.
using bf16 = __nv_bfloat16;
// nd<X> in a parameter type keeps that argument out of template deduction,
// so it may be passed as nullptr.
template <class X>
struct NoDeduce {
  using type = X;
};
template <class X>
using nd = typename NoDeduce<X>::type;
__device__ __forceinline__ float ld(float x) { return x; }
__device__ __forceinline__ float ld(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(bf16* p, float v) { *p = __float2bfloat16(v); }

// A cuFFT plan pair for `batch` contiguous signals of length n. A plan made
// for more signals serves fewer (the rows past the batch are transformed
// and never read), so one plan set made at the batch capacity serves every
// batch, the last partial one of an evaluation too, and nothing is planned
// or allocated mid-run.
struct FftPlan {
  int n = 0, batch = 0;
  cufftHandle r2c = 0, c2r = 0;
};

// A cuBLASLt problem (types, shapes, strides, epilogue, pointer alignments)
// and the heuristic's algorithms for it, best first: a training step asks
// the same few dozen questions every time. `next` is the first one not yet
// seen failing; a problem whose list is used up has no algorithm.
struct GemmAlgo {
  std::vector<int64_t> key;
  std::vector<cublasLtMatmulAlgo_t> algos;
  size_t next = 0;
};

// Everything a launcher needs besides its tensors: the stream, the cuBLASLt
// handle and workspace, the cuFFT plans with the work area they share, and
// the FFT and reduction scratch. model_to_device makes the plans and the
// scratch for a full batch at start-up, so a training step allocates
// nothing; a kernel test on a bare context gets them made on first use.
struct CudaCtx {
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;  // cuBLASLt
  size_t workspace_size = 0;
  // The dense layers' compute type: CUBLAS_COMPUTE_32F (exact fp32 products,
  // the mode the tests check against the CPU) or CUBLAS_COMPUTE_32F_FAST_TF32
  // (tensor cores on fp32 data, products rounded to 10-bit mantissas).
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  std::vector<FftPlan> plans;
  void* fft_work = nullptr;           // the plans' work area (we allocate it: cufftSetAutoAllocation(0))
  size_t fft_work_size = 0;           // its size in bytes
  float* fft_real = nullptr;          // (channels, n) zero-padded signals
  cufftComplex* fft_spec = nullptr;   // (channels, n/2 + 1) their spectra
  cufftComplex* fft_spec2 = nullptr;  // (channels, n/2 + 1) a second set (dK needs two)
  cufftComplex* fft_k = nullptr;      // (n/2 + 1) one kernel's spectrum, or the dK sum
  size_t fft_channels = 0;            // capacity of the buffers above, in signals
  int fft_n = 0;                      // ... and in signal length
  double* red = nullptr;              // reduction partials
  size_t red_cap = 0;
  float* colsum = nullptr;  // (kColChunks, width) partial column sums
  size_t colsum_cap = 0;    // its capacity in floats
  // Epilogue fusion (bias, GELU) in cuBLASLt for bf16 products; off, the
  // same products run with separate bias and GELU kernels (the tests
  // compare the two).
  bool fuse_epilogues = true;
  std::vector<GemmAlgo> algos;  // heuristic results, looked up by problem
  int* idx = nullptr;           // index lists the embedding backward uploads
  size_t idx_cap = 0;           // its capacity in ints
  // The Toeplitz route's scratch (see toeplitz_forward), capacities in
  // elements: the matrix (bytes), one group's Gx, the lag sums' partials.
  char* toep = nullptr;
  size_t toep_cap = 0;
  float* gram = nullptr;
  size_t gram_cap = 0;
  float* lagpart = nullptr;
  size_t lagpart_cap = 0;
  // The Toeplitz backward's cap on one group of sequences' Gx, in bytes (0:
  // kGramCapBytes). The tests set less, to run the model in several groups.
  size_t gram_group_bytes = 0;
};

constexpr size_t kWorkspaceBytes = 32u << 20;  // cuBLASLt's recommendation for Hopper
constexpr size_t kRedCap = 1 << 16;            // doubles: partials of the two-stage reductions

static void cuda_ctx_create(CudaCtx* ctx) {
  cudaCheck(cudaStreamCreate(&ctx->stream));
  cublasCheck(cublasLtCreate(&ctx->lt));
  ctx->workspace_size = kWorkspaceBytes;
  cudaCheck(cudaMalloc(&ctx->workspace, ctx->workspace_size));
  ctx->red_cap = kRedCap;
  cudaCheck(cudaMalloc(&ctx->red, ctx->red_cap * sizeof(double)));
}

static void fft_free_buffers(CudaCtx* ctx) {
  cudaCheck(cudaFree(ctx->fft_real));
  cudaCheck(cudaFree(ctx->fft_spec));
  cudaCheck(cudaFree(ctx->fft_spec2));
  cudaCheck(cudaFree(ctx->fft_k));
  ctx->fft_real = nullptr, ctx->fft_spec = ctx->fft_spec2 = ctx->fft_k = nullptr;
  ctx->fft_channels = 0, ctx->fft_n = 0;
}

static void cuda_ctx_destroy(CudaCtx* ctx) {
  if (ctx->stream) cudaCheck(cudaStreamSynchronize(ctx->stream));
  for (FftPlan& p : ctx->plans) {
    cufftCheck(cufftDestroy(p.r2c));
    cufftCheck(cufftDestroy(p.c2r));
  }
  ctx->plans.clear();
  cudaCheck(cudaFree(ctx->fft_work));
  fft_free_buffers(ctx);
  cudaCheck(cudaFree(ctx->workspace));
  cudaCheck(cudaFree(ctx->red));
  cudaCheck(cudaFree(ctx->colsum));
  cudaCheck(cudaFree(ctx->idx));
  cudaCheck(cudaFree(ctx->toep));
  cudaCheck(cudaFree(ctx->gram));
  cudaCheck(cudaFree(ctx->lagpart));
  if (ctx->lt) cublasCheck(cublasLtDestroy(ctx->lt));
  if (ctx->stream) cudaCheck(cudaStreamDestroy(ctx->stream));
  *ctx = CudaCtx{};
}

// The plans for at least `batch` signals of length n (see FftPlan). A new
// plan draws on the context's one work area, which grows to the largest
// plan's need: the transforms run one at a time on one stream. A single
// signal gets a plan for exactly one: its buffers (a kernel's spectrum,
// fft_k) hold one signal, and a batched plan would write past them.
static const FftPlan& fft_plan(CudaCtx& ctx, int n, int batch) {
  for (const FftPlan& p : ctx.plans)
    if (p.n == n && (batch == 1 ? p.batch == 1 : p.batch >= batch)) return p;
  FftPlan p;
  p.n = n, p.batch = batch;
  size_t ws[2] = {0, 0};
  cufftCheck(cufftCreate(&p.r2c));
  cufftCheck(cufftCreate(&p.c2r));
  cufftCheck(cufftSetAutoAllocation(p.r2c, 0));
  cufftCheck(cufftSetAutoAllocation(p.c2r, 0));
  // Null embeds: the basic layout, signal i at i * n (real) and at
  // i * (n/2 + 1) (complex).
  cufftCheck(cufftMakePlanMany(p.r2c, 1, &n, nullptr, 1, n, nullptr, 1, n / 2 + 1, CUFFT_R2C, batch, &ws[0]));
  cufftCheck(cufftMakePlanMany(p.c2r, 1, &n, nullptr, 1, n / 2 + 1, nullptr, 1, n, CUFFT_C2R, batch, &ws[1]));
  cufftCheck(cufftSetStream(p.r2c, ctx.stream));
  cufftCheck(cufftSetStream(p.c2r, ctx.stream));
  ctx.plans.push_back(p);
  size_t need = std::max(ws[0], ws[1]);
  if (need > ctx.fft_work_size) {
    cudaCheck(cudaStreamSynchronize(ctx.stream));  // the old area may still be in use
    cudaCheck(cudaFree(ctx.fft_work));
    ctx.fft_work = nullptr;
    cudaCheck(cudaMalloc(&ctx.fft_work, need));
    ctx.fft_work_size = need;
  }
  for (FftPlan& q : ctx.plans) {  // every plan on the (possibly new) area
    cufftCheck(cufftSetWorkArea(q.r2c, ctx.fft_work));
    cufftCheck(cufftSetWorkArea(q.c2r, ctx.fft_work));
  }
  return ctx.plans.back();
}

// Grows the FFT scratch to hold `channels` signals of length n, zeroed, so
// that rows past a short batch hold finite values when a plan transforms
// them.
static void fft_reserve(CudaCtx& ctx, size_t channels, int n) {
  if (channels <= ctx.fft_channels && n <= ctx.fft_n) return;
  cudaCheck(cudaStreamSynchronize(ctx.stream));  // the old buffers may still be in use
  channels = std::max(channels, ctx.fft_channels), n = std::max(n, ctx.fft_n);
  fft_free_buffers(&ctx);
  size_t nf = (size_t)n / 2 + 1;
  cudaCheck(cudaMalloc(&ctx.fft_real, channels * n * sizeof(float)));
  cudaCheck(cudaMalloc(&ctx.fft_spec, channels * nf * sizeof(cufftComplex)));
  cudaCheck(cudaMalloc(&ctx.fft_spec2, channels * nf * sizeof(cufftComplex)));
  cudaCheck(cudaMalloc(&ctx.fft_k, nf * sizeof(cufftComplex)));
  cudaCheck(cudaMemset(ctx.fft_real, 0, channels * n * sizeof(float)));
  cudaCheck(cudaMemset(ctx.fft_spec, 0, channels * nf * sizeof(cufftComplex)));
  cudaCheck(cudaMemset(ctx.fft_spec2, 0, channels * nf * sizeof(cufftComplex)));
  ctx.fft_channels = channels, ctx.fft_n = n;
}

// Grows a scratch buffer of the context to hold n elements. Only the first
// step can grow one (model_to_device sizes them for a full batch), so the
// synchronisation here never lands inside a timed step.
template <class X>
static void scratch_reserve(CudaCtx& ctx, X** buf, size_t* cap, size_t n) {
  if (n <= *cap) return;
  cudaCheck(cudaStreamSynchronize(ctx.stream));  // the old buffer may still be in use
  cudaCheck(cudaFree(*buf));
  *buf = nullptr;
  cudaCheck(cudaMalloc(buf, n * sizeof(X)));
  *cap = n;
}

// Column sums (bias and LayerNorm gradients) run in two deterministic
// stages: kColChunks slices of rows, each summed in order by one thread per
// column into ctx.colsum, then one thread per column adds the slices in
// order. Enough parallelism for a few thousand columns, and no atomics.

// Two-stage deterministic sum of a[i] * b[i] in double (b = null: the sum of
// squares): a fixed grid, each block sums a fixed slice, then one thread adds
// the partials in order. No atomics, so every run gives the same bits.
template <class X>
__global__ void dot_partial_kernel(double* part, const X* a, const X* b, size_t n) {
  double s = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    s += (double)ld(a[i]) * (double)ld(b ? b[i] : a[i]);
  s = block_sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}
// The total goes to *out (when not null) and is added to *acc (when not null).
__global__ void sum_partials_kernel(double* out, float* acc, const double* part, int count) {
  double s = 0;
  for (int i = 0; i < count; i++) s += part[i];
  if (out) *out = s;
  if (acc) *acc += (float)s;
}

// sum_i a[i] b[i] (b = null: a[i]^2) into ctx.red[kRedBlocks] and/or added to *acc.
template <class X>
static void dot_reduce(CudaCtx& ctx, float* acc, const X* a, const nd<X>* b, size_t n) {
  launchKernel(dot_partial_kernel, kRedBlocks, kThreads, 0, ctx.stream, ctx.red, a, b, n);
  launchKernel(sum_partials_kernel, 1, 1, 0, ctx.stream, ctx.red + kRedBlocks, acc, ctx.red, kRedBlocks);
}

}  // namespace bigs

#endif  // BIGS_CUDA
