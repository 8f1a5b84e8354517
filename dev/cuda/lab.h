// dev/cuda/lab.h: what the kernel labs (dev/cuda/*.cu) and their CPU-side
// test (test/test_lab.cpp) share, in the manner of llm.c's dev/cuda/common.h.
// It includes bigs.cu (so each lab runs bigs.cu's own kernels as its
// version 1, with bigs.cu's checked calls and context), then adds:
//   - the cost model: bytes and FLOPs per kernel -> a predicted time on an
//     H200 (host only);
//   - rounding-error bounds and the bounded comparison every validation uses
//     (host only);
//   - GemmSpec, one cuBLASLt product described as plain numbers, with a CPU
//     twin that follows cuBLASLt's column-major semantics, so the index
//     arithmetic of a plan of products is checked on a machine without GPU;
//   - (nvcc only) device buffers, poisoning, a prepared-descriptor cuBLASLt
//     call, the deterministic finish of two-stage column sums, and a timer
//     (CUDA events, L2 flushed before each repeat, median of repeats).
// Index and shape logic lives in BIGS_HD (__host__ __device__) functions, so
// the CPU test runs the very expressions the kernels run.
#pragma once

#define BIGS_NO_MAIN
#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bigs.cu"

namespace lab {
using namespace bigs;

// ---------------------------------------------------------------------------
// The cost model
// ---------------------------------------------------------------------------
// The ceilings are bigs.cu's Cost device's, so the lab and the cost table
// predict alike: 3.8 TB/s (kHbmBytes, 80% of HBM3e's 4.8), 790 TFLOP/s for
// bf16 tensor-core products (kTensorFlops, 80% of 989), 50 TFLOP/s for
// CUDA-core work (kCudaCoreFlops: exact fp32 products, the FFTs). The labs
// add one thing: memory latency under load, for Little's law (bytes in
// flight / latency bounds the bandwidth a kernel can draw), about 1 us on
// Hopper's HBM; an assumption, used only where a kernel keeps few loads in
// flight. Launch overheads (4 us each outside a CUDA graph, in the Cost
// device) are counted, not added: the labs time back-to-back launches.
constexpr double kLatency = 1e-6;  // s

// One kernel: its compulsory DRAM traffic, its arithmetic and the peak that
// arithmetic runs at, and (0 = plenty) the bytes it keeps in flight.
struct Work {
  std::string what;
  double bytes = 0, flops = 0, peak = kCudaCoreFlops, inflight = 0;
  int launches = 1;
};

// One of bigs.cu's OpCost (an operation's launches, as its Cost device
// counts them) as Works, one per launch.
inline std::vector<Work> works_of(const OpCost& o) {
  std::vector<Work> w;
  for (const Launch& l : o) w.push_back({l.op, l.bytes, l.flops, l.tensor ? kTensorFlops : kCudaCoreFlops, 0, 1});
  return w;
}

// The kernel's predicted time: the slowest of moving its bytes, doing its
// FLOPs, and (when inflight is given) waiting out the latency of its loads.
inline double predict_s(const Work& w) {
  double t = std::max(w.bytes / kHbmBytes, w.flops / w.peak);
  if (w.inflight > 0) t = std::max(t, w.bytes * kLatency / w.inflight);
  return t;
}
inline double predict_s(const std::vector<Work>& ws) {
  double t = 0;
  for (const Work& w : ws) t += predict_s(w);
  return t;
}
inline double total_bytes(const std::vector<Work>& ws) {
  double b = 0;
  for (const Work& w : ws) b += w.bytes;
  return b;
}
inline double total_flops(const std::vector<Work>& ws) {
  double f = 0;
  for (const Work& w : ws) f += w.flops;
  return f;
}
inline int total_launches(const std::vector<Work>& ws) {
  int n = 0;
  for (const Work& w : ws) n += w.launches;
  return n;
}

// ---------------------------------------------------------------------------
// Rounding-error bounds and the bounded comparison
// ---------------------------------------------------------------------------
// Unit roundoffs (half an ulp, relative) of round-to-nearest: fp32 keeps 24
// significant bits, bf16 8, double 53.
constexpr double kU32 = 0x1p-24, kU16 = 0x1p-8, kU64 = 0x1p-53;

// Higham's gamma_n = n u / (1 - n u): a sum or dot product of n terms,
// computed in any order, is within gamma_n * sum |terms| of the exact value.
inline double gamma_n(double n, double u) { return n * u / (1 - n * u); }

// Round to the nearest bf16 (ties to even) and back, as __float2bfloat16
// does; host-only code needs no CUDA header for it.
inline float bf16_round(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  if ((b & 0x7f800000u) == 0x7f800000u && (b & 0x007fffffu)) return x;  // NaN stays NaN
  b += 0x7fffu + ((b >> 16) & 1u);
  b &= 0xffff0000u;
  std::memcpy(&x, &b, 4);
  return x;
}
inline std::vector<float> bf16_round(std::vector<float> v) {
  for (float& x : v) x = bf16_round(x);
  return v;
}

// n values uniform in [lo, hi), from bigs.cu's counter-based generator:
// stream names the tensor, so every tensor is fresh and reproducible.
inline std::vector<float> random_vec(size_t n, uint64_t stream, float lo = -1, float hi = 1) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * uniform_at(0x1ab5eed, stream, i);
  return v;
}

// got against ref, element by element: |got - ref| <= bound. NaN fails.
struct Check {
  std::string what;
  size_t n = 0, bad = 0, worst = 0;
  double worst_ratio = 0;  // the largest |got - ref| / bound
  double caught = -1;      // the share of a one-index-off result the bound rejects (< 0: not asked)
  bool ok() const { return bad == 0 && n > 0; }
};

template <class A>
Check check_bounded(const std::string& what, const A* got, const double* ref, const double* bound, size_t n) {
  Check c;
  c.what = what, c.n = n;
  for (size_t i = 0; i < n; i++) {
    double err = std::fabs((double)got[i] - ref[i]);
    if (!(err <= bound[i])) c.bad++;
    double r = bound[i] > 0 ? err / bound[i] : (err == 0 ? 0 : INFINITY);
    if (!(r <= c.worst_ratio)) c.worst_ratio = r, c.worst = i;
  }
  return c;
}

// How sharp a bound is: the share of elements at which `alt` (the reference
// read one index off: t + 1 for a sequence, l + 1 for a lag) would fail it.
// A bound that lets most of an off-by-one result through checks nothing.
inline double caught_share(const double* ref, const double* alt, const double* bound, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += std::fabs(alt[i] - ref[i]) > bound[i];
  return n ? (double)k / n : 0;
}

// An accumulated result (init + sum) with its sum read one index off: sum at
// i + 1 (i - 1 at the end) added to init at i, what an index slip in the
// summing kernel would give. init empty: 0.
inline std::vector<double> off_by_one(const std::vector<double>& v, const std::vector<float>& init = {}) {
  if (v.size() < 2) return {};
  std::vector<double> a(v.size());
  for (size_t i = 0; i < v.size(); i++) {
    size_t j = i + 1 < v.size() ? i + 1 : i - 1;
    a[i] = init.empty() ? v[j] : v[j] - init[j] + init[i];
  }
  return a;
}

inline void print_check(const Check& c) {
  std::string caught = c.caught < 0 ? std::string("  n/a") : strf("%5.1f%%", 100 * c.caught);
  printf("    %-34s %s  worst err/bound %.2e at %zu; one-off caught %s\n", c.what.c_str(), c.ok() ? "ok  " : "FAIL",
         c.worst_ratio, c.worst, caught.c_str());
  if (c.bad) printf("      %zu of %zu values outside the bound\n", c.bad, c.n);
}

// ---------------------------------------------------------------------------
// One cuBLASLt product as numbers, and its CPU twin
// ---------------------------------------------------------------------------
// Column-major, as cuBLASLt sees memory: batch q = 0 .. batch-1 computes
//   D_q (m x n) = op(A_q) (m x k) op(B_q) (k x n) + beta D_q
// with X_q = X + x_off + q * sx (elements; sx = 0: one matrix for every q),
// op(A)(i, p) = A[i + p lda] or, ta, A[p + i lda]; likewise B with ldb, tb;
// D(i, j) = D[i + j ldd].
// GemmSpec (one cuBLASLt product as numbers) is bigs.cu's, beside the Toeplitz route.

// The product on the CPU with fp32 accumulation (any order is within the
// bounds the labs use): column j of D as a sum of columns of op(A) when A is
// not transposed, else as dot products along A's stored columns (both
// vectorise). rows: only these rows i of D (all when null), so a large
// product can be checked on a sample of its rows. bf16_out: round each
// result to bf16, as a bf16 D is stored.
template <class TA, class TD>
void gemm_cpu(const GemmSpec& s, const TA* A, const TA* B, TD* D, const std::vector<int>* rows = nullptr,
              bool bf16_out = false) {
  std::vector<int> all;
  if (!rows) {
    for (int i = 0; i < s.m; i++) all.push_back(i);
    rows = &all;
  }
  const bool dense = !rows->empty() && (int)rows->size() == s.m;
#pragma omp parallel for collapse(2)
  for (int q = 0; q < s.batch; q++)
    for (int j = 0; j < s.n; j++) {
      const TA* a = A + s.a_off + q * s.sa;
      const TA* b = B + s.b_off + q * s.sb;
      TD* d = D + s.d_off + q * s.sd + (int64_t)j * s.ldd;
      auto bpj = [&](int p) { return (float)(s.tb ? b[j + (int64_t)p * s.ldb] : b[p + (int64_t)j * s.ldb]); };
      std::vector<float> acc(s.m, 0.0f);
      if (!s.ta) {
        for (int p = 0; p < s.k; p++) {
          const TA* ap = a + (int64_t)p * s.lda;
          float bv = bpj(p);
          if (dense)
#pragma omp simd
            for (int i = 0; i < s.m; i++) acc[i] += (float)ap[i] * bv;
          else
            for (int i : *rows) acc[i] += (float)ap[i] * bv;
        }
      } else {
        for (int i : *rows) {
          const TA* ai = a + (int64_t)i * s.lda;
          float sum = 0;
          if (!s.tb) {
            const TA* bj = b + (int64_t)j * s.ldb;
#pragma omp simd reduction(+ : sum)
            for (int p = 0; p < s.k; p++) sum += (float)ai[p] * (float)bj[p];
          } else {
            for (int p = 0; p < s.k; p++) sum += (float)ai[p] * bpj(p);
          }
          acc[i] = sum;
        }
      }
      for (int i : *rows) {
        float v = s.beta != 0 ? acc[i] + s.beta * (float)d[i] : acc[i];  // beta 0: D is not read (BLAS's rule)
        d[i] = (TD)(bf16_out ? bf16_round(v) : v);
      }
    }
}

// The product's compulsory traffic (each operand read once, D written, and
// read too when beta != 0; a shared operand, stride 0, read once for the
// whole batch) and its FLOPs, for elements of ea (A, B) and ed (D) bytes.
inline Work gemm_work(const std::string& what, const GemmSpec& s, int ea, int ed, double peak) {
  Work w;
  w.what = what, w.peak = peak;
  double q = s.batch;
  w.flops = 2.0 * s.m * s.n * s.k * q;
  w.bytes = ea * ((double)s.m * s.k * (s.sa ? q : 1) + (double)s.k * s.n * (s.sb ? q : 1)) +
            ed * (double)s.m * s.n * q * (s.beta != 0 ? 2 : 1);
  return w;
}

// ---------------------------------------------------------------------------
// Deterministic two-stage column sums: the shared tree
// ---------------------------------------------------------------------------
// Kernels that sum down columns use blocks of kLanes x kRows threads:
// threadIdx.x picks the column (consecutive threads, consecutive columns:
// coalesced), threadIdx.y one of kRows interleaved row subsets, so each warp
// reads whole rows. The kRows partial sums of a column are then added in the
// fixed tree below by one thread (host and device run this same function),
// and the slices' results by the finish kernel in the same way. Every order
// is fixed by the shapes alone, never by the device, so results repeat bit
// for bit on any GPU.
// kLanes, kRows, tree8, slice_rows and finish_thread_sum are bigs.cu's (the
// Toeplitz route's deterministic column sums).

#ifdef BIGS_CUDA
// ---------------------------------------------------------------------------
// Device plumbing (nvcc only)
// ---------------------------------------------------------------------------
// A device buffer that frees itself; float vectors go up and come back
// converted to and from the buffer's type.
template <class X>
struct Buf {
  X* p = nullptr;
  size_t n = 0;
  explicit Buf(size_t count) : n(count) { cudaCheck(cudaMalloc(&p, std::max<size_t>(1, n) * sizeof(X))); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { cudaFree(p); }
  void put(const std::vector<float>& v) {
    std::vector<X> h(v.size());
    for (size_t i = 0; i < v.size(); i++) h[i] = (X)v[i];
    cudaCheck(cudaMemcpy(p, h.data(), h.size() * sizeof(X), cudaMemcpyHostToDevice));
  }
  std::vector<float> get() const {
    std::vector<X> h(n);
    cudaCheck(cudaMemcpy(h.data(), p, n * sizeof(X), cudaMemcpyDeviceToHost));
    return std::vector<float>(h.begin(), h.end());
  }
  // All bits set: NaN in fp32 and bf16, so an element a kernel fails to
  // write cannot pass a check.
  void poison() { cudaCheck(cudaMemset(p, 0xff, n * sizeof(X))); }
};

// The largest power of two up to 256 dividing every byte offset a batched
// operand's columns and matrices start at: its base, ld and batch stride.
inline uint32_t operand_alignment(const void* base, int64_t ld, int64_t stride, size_t elem) {
  uint64_t a = (uint64_t)(uintptr_t)base | (uint64_t)ld * elem | (uint64_t)stride * elem;
  uint32_t al = 256;
  while (al > 1 && a % al) al /= 2;
  return al;
}

// A prepared cuBLASLt product: descriptors, layouts and the heuristic's
// algorithm, made once per problem and kept ("cache the
// descriptors": a training step asks the same questions every time).
struct LtPlan {
  std::vector<int64_t> key;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  std::vector<cublasLtMatmulAlgo_t> algos;  // the heuristic's candidates, best first
  size_t next = 0;                          // the first one not known to fail
};
struct LtCache {
  std::vector<std::unique_ptr<LtPlan>> plans;
  LtCache() = default;
  LtCache(const LtCache&) = delete;
  LtCache& operator=(const LtCache&) = delete;
  ~LtCache() {
    for (auto& p : plans) {
      cublasLtMatrixLayoutDestroy(p->la), cublasLtMatrixLayoutDestroy(p->lb), cublasLtMatrixLayoutDestroy(p->ld);
      cublasLtMatmulDescDestroy(p->desc);
    }
  }
};

static void lt_layout(cublasLtMatrixLayout_t* l, cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld, int batch,
                      int64_t stride) {
  cublasCheck(cublasLtMatrixLayoutCreate(l, t, rows, cols, ld));
  cublasCheck(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch));
  cublasCheck(
      cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
}

// Runs the product s on A, B, D (base pointers; s's offsets are added here)
// with fp32 accumulation: bf16 operands under CUBLAS_COMPUTE_32F, fp32
// operands under ctx.compute (exact fp32 unless TF32 is asked for), as
// bigs.cu's matmul, and like it trying up to kGemmCandidates of the
// heuristic's answers in order until one runs. epi: CUBLASLT_EPILOGUE_DEFAULT,
// or BGRADB with `bias` (fp32, n values: the column sums of op(B), which it
// overwrites). Returns false, having done nothing, when no algorithm runs an
// epilogue; a plain product without one throws.
template <class TA, class TD>
bool lt_gemm(CudaCtx& ctx, LtCache& cache, const GemmSpec& s, const TA* A, const TA* B, TD* D,
             cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT, float* bias = nullptr) {
  const TA* a = A + s.a_off;
  const TA* b = B + s.b_off;
  TD* d = D + s.d_off;
  cublasComputeType_t compute = std::is_same<TA, float>::value ? ctx.compute : CUBLAS_COMPUTE_32F;
  uint32_t al[4] = {operand_alignment(a, s.lda, s.sa, sizeof(TA)), operand_alignment(b, s.ldb, s.sb, sizeof(TA)),
                    operand_alignment(d, s.ldd, s.sd, sizeof(TD)), operand_alignment(d, s.ldd, s.sd, sizeof(TD))};
  std::vector<int64_t> key = {dtype_of<TA>(), dtype_of<TD>(), compute, s.ta,    s.tb, s.m,  s.n,  s.k,
                              s.lda,          s.ldb,          s.ldd,   s.batch, s.sa, s.sb, s.sd, s.beta != 0,
                              (int64_t)epi,   al[0],          al[1],   al[2]};
  LtPlan* p = nullptr;
  for (auto& q : cache.plans)
    if (q->key == key) p = q.get();
  if (!p) {
    cache.plans.push_back(std::make_unique<LtPlan>());
    p = cache.plans.back().get();
    p->key = key;
    cublasCheck(cublasLtMatmulDescCreate(&p->desc, compute, CUDA_R_32F));
    cublasOperation_t opa = s.ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = s.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    if (epi != CUBLASLT_EPILOGUE_DEFAULT) {
      cudaDataType_t bt = CUDA_R_32F;
      cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
      cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    }
    // The stored shapes, before op(); C shares D's layout.
    lt_layout(&p->la, dtype_of<TA>(), s.ta ? s.k : s.m, s.ta ? s.m : s.k, s.lda, s.batch, s.sa);
    lt_layout(&p->lb, dtype_of<TA>(), s.tb ? s.n : s.k, s.tb ? s.k : s.n, s.ldb, s.batch, s.sb);
    lt_layout(&p->ld, dtype_of<TD>(), s.m, s.n, s.ldd, s.batch, s.sd);
    p->algos = lt_candidates(ctx, p->desc, p->la, p->lb, p->ld, al, epi != CUBLASLT_EPILOGUE_DEFAULT);
  }
  if (epi != CUBLASLT_EPILOGUE_DEFAULT)
    cublasCheck(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  const float alpha = 1.0f;
  cublasStatus_t last = CUBLAS_STATUS_NOT_SUPPORTED;
  for (; p->next < p->algos.size(); p->next++) {  // a candidate that fails is not tried again
    last = cublasLtMatmul(ctx.lt, p->desc, &alpha, a, p->la, b, p->lb, &s.beta, d, p->ld, d, p->ld, &p->algos[p->next],
                          ctx.workspace, ctx.workspace_size, ctx.stream);
    if (last == CUBLAS_STATUS_SUCCESS) return true;
  }
  if (epi != CUBLASLT_EPILOGUE_DEFAULT) return false;
  throw CudaError(
      strf("cuBLASLt: no algorithm ran (%zu tried; last status %s) for m %d n %d k %d batch %d, op %c%c, "
           "ld %lld %lld %lld, alignment %u %u %u",
           p->algos.size(), cublasLtGetStatusName(last), s.m, s.n, s.k, s.batch, s.ta ? 'T' : 'N', s.tb ? 'T' : 'N',
           (long long)s.lda, (long long)s.ldb, (long long)s.ldd, al[0], al[1], al[2]));
}

// colsum_finish_tree_kernel is bigs.cu's.
inline void colsum_finish(CudaCtx& ctx, float* dst, float* extra0, const float* part, int64_t cols, int slices) {
  colsum_finish_tree_kernel<<<(unsigned)((cols + kLanes - 1) / kLanes), dim3(kLanes, kRows), 0, ctx.stream>>>(
      dst, extra0, part, cols, slices);
  launchCheck();
}

// Times fn on ctx.stream with CUDA events: `warmup` untimed runs, then
// `reps` timed ones, each after a memset that evicts L2 (so every repeat
// reads its operands from DRAM, as the cost model assumes); the median in ms.
struct Timer {
  cudaEvent_t start = nullptr, stop = nullptr;
  void* flush = nullptr;
  size_t flush_bytes = 0;
  Timer() {
    int dev = 0, l2 = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    flush_bytes = 2 * (size_t)l2;
    cudaCheck(cudaMalloc(&flush, flush_bytes));
    cudaCheck(cudaEventCreate(&start));
    cudaCheck(cudaEventCreate(&stop));
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  ~Timer() {
    cudaEventDestroy(start), cudaEventDestroy(stop);
    cudaFree(flush);
  }
  double median_ms(CudaCtx& ctx, const std::function<void()>& fn, int warmup = 3, int reps = 15) {
    for (int i = 0; i < warmup; i++) fn();
    std::vector<float> ms(reps);
    for (int i = 0; i < reps; i++) {
      cudaCheck(cudaMemsetAsync(flush, i & 1, flush_bytes, ctx.stream));
      cudaCheck(cudaEventRecord(start, ctx.stream));
      fn();
      cudaCheck(cudaEventRecord(stop, ctx.stream));
      cudaCheck(cudaEventSynchronize(stop));
      cudaCheck(cudaEventElapsedTime(&ms[i], start, stop));
    }
    std::sort(ms.begin(), ms.end());
    return ms[reps / 2];
  }
};

// "" when a GPU can be used, else why not (the runtime's words).
inline std::string gpu_absent() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return std::string("no CUDA device: ") + cudaGetErrorString(e);
  return n > 0 ? "" : "no CUDA device";
}
// The labs' command line: --predict, --validate, --bench, --reps and the
// lab's own flags (extra; check_flags says what is wrong with them, or "").
// run(validate, bench, reps) makes the lab's state and does the work,
// returning whether every check passed. Exit 0 when all passed, 1 when one
// failed or a CUDA call did, 2 on a bad command line or without a GPU.
inline int lab_main(int argc, char** argv, const char* name, const char* what, std::vector<Flag> extra,
                    const std::function<std::string()>& check_flags, const std::function<void()>& predict,
                    const std::function<bool(bool, bool, int)>& run) {
  bool pred = false, only_validate = false, only_bench = false;
  long long reps = 15;
  std::vector<Flag> flags = {
      {Flag::Switch, "predict", &pred, 0, 0, "print the predicted table and exit (no GPU needed)"},
      {Flag::Switch, "validate", &only_validate, 0, 0, "validation only"},
      {Flag::Switch, "bench", &only_bench, 0, 0, "benchmark only"},
      {Flag::Int, "reps", &reps, 1, 1000, "timed repeats per measurement (the median is reported)"},
  };
  flags.insert(flags.end(), extra.begin(), extra.end());
  std::vector<std::string> rest;
  std::string err, usage = strf("usage: %s [options]: %s (dev/cuda/README.md)", name, what);
  int rc = parse_flags(argc, argv, flags, usage.c_str(), &rest, &err);
  if (rc == 1) return 0;
  if (rc == 0 && !rest.empty()) err = "no positional arguments; see --help";
  if (rc == 0 && err.empty()) err = check_flags();
  if (!err.empty()) {
    fprintf(stderr, "%s: %s\n", name, err.c_str());
    return 2;
  }
  if (pred) {
    predict();
    return 0;
  }
  std::string why = gpu_absent();
  if (!why.empty()) {
    fprintf(stderr, "%s: %s (--predict runs without one)\n", name, why.c_str());
    return 2;
  }
  try {
    return run(!only_bench, !only_validate, (int)reps) ? 0 : 1;
  } catch (const CudaError& e) {
    fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}

// Runs a lab's validation between its header and its verdict line, with the
// lab's scratch poisoned (NaN) on every use meanwhile (*poison).
inline bool run_validation(const char* file, bool* poison, const std::function<bool()>& validate) {
  printf("validation: every version against the CPU reference (double), bounds in %s\n", file);
  *poison = true;
  bool ok = validate();
  *poison = false;
  printf("validation %s\n", ok ? "passed" : "FAILED");
  return ok;
}
#endif  // BIGS_CUDA

}  // namespace lab
