// dev/cuda/colsum.cu: the kernel lab for the deterministic column sums of
// bigs.cu: bias gradients db[c] += sum_r dout[r][c] and the
// LayerNorm weight gradients dw[c] += sum_r dout[r][c] (x[r][c] - mean[r])
// rstd[r], db[c] += sum_r dout[r][c]; the CPU reference, numbered versions,
// a validator and a benchmark, in the manner of llm.c's dev/cuda.
//
// Versions (bytes per version in the table of dev/cuda/README.md):
//   v1  bigs.cu today (bias_backward; layernorm_dw_partial_kernel +
//       colsum_finish_kernel): 64 fixed row slices, one thread per column,
//       one X-byte load at a time. Reads rows x cols x X bytes once, but with
//       only 64 x cols threads of ~4 loads each in flight: at 1024 columns
//       about 0.5 MB in flight, so Little's law (1 us latency) caps it near
//       0.5 TB/s.
//   v2  a many-slice tree: blocks of 32 x 8 threads, each thread 16 bytes of
//       a row per load (8 bf16 or 4 fp32 columns), the 8 row subsets added
//       by a fixed tree, slices chosen from the shape so ~1024 blocks run
//       (never from the device: the same bits on every GPU), then a tree
//       finish. Same bytes, ~30x more in flight. Falls back to 1-column
//       loads when the row stride is not a multiple of 16 bytes.
//   v3  (bias only) cuBLASLt's BGRADB epilogue on the weight-gradient GEMM
//       dW += inp^T dout, which reads dout anyway: no pass of its own. It
//       overwrites its output, so it goes to a scratch vector and one more
//       small kernel adds it into db. Timed as GEMM + BGRADB against the
//       plain GEMM; reports "n/a" where cuBLASLt offers no algorithm.
//
// Build and run (the lead's dev/gpu_check.sh does this on a lent GPU):
//   make lab                     # build/lab_ssm_conv and build/lab_colsum (nvcc, -arch=sm_90)
//   build/lab_colsum             # validate all versions, then benchmark; table last; ~10 s on an H200
//   build/lab_colsum --validate  # validation only
//   build/lab_colsum --bench     # benchmark only
//   build/lab_colsum --predict   # the predicted table; needs no GPU
// Exit status: 0 when every check passed, 1 when one failed or a CUDA call
// did, 2 on a bad command line or without a GPU.
#include "lab.h"

namespace lab {

// ---------------------------------------------------------------------------
// v2's shapes and indices (host and device)
// ---------------------------------------------------------------------------
// Columns per thread: 16 bytes of X, or 1 where rows are not 16-byte strided.
template <class X>
BIGS_HD inline int colsum_vec(int64_t ld) {
  int v = 16 / (int)sizeof(X);
  return ld % v == 0 ? v : 1;
}

// Blocks along the columns (kLanes threads of vec columns each) and row
// slices: enough slices for ~1024 blocks, at most 256, and at least 4 rows
// per thread.
BIGS_HD inline int colsum_blocks_x(int64_t cols, int vec) {
  return (int)((cols + (int64_t)kLanes * vec - 1) / ((int64_t)kLanes * vec));
}
BIGS_HD inline int colsum_slices(int64_t rows, int64_t cols, int vec) {
  int64_t bx = colsum_blocks_x(cols, vec), s = (1024 + bx - 1) / bx, most = rows / (kRows * 4);
  if (s > most) s = most;
  if (s > 256) s = 256;
  return (int)(s < 1 ? 1 : s);
}

// Thread (x, y) of block (bx, by): columns c0 .. c0 + vec - 1 and rows
// r0, r0 + kRows, ... < r1.
BIGS_HD inline void colsum_thread_range(int bx, int by, int x, int y, int64_t rows, int slices, int vec, int64_t* c0,
                                        int64_t* r0, int64_t* r1) {
  *c0 = ((int64_t)bx * kLanes + x) * vec;
  slice_rows(rows, slices, by, r0, r1);
  *r0 += y;
}

// LayerNorm's dw term, the expression bigs.cu's kernels and CPU path use.
BIGS_HD inline float ln_dw_term(float d, float x, float mean, float rstd) { return d * (x - mean) * rstd; }

// The CPU twin of v2 (host): every thread of every block, the same ranges
// and tree, scalar loads. nout 1: bias (part (slices, cols)); nout 2:
// LayerNorm (part (2, slices, cols): dw then db). Then the finish into dst.
inline void colsum_tree_sim(std::vector<float*> dst, const float* dout, const float* inp, const float* mean,
                            const float* rstd, int64_t rows, int64_t cols, int64_t ld, int vec) {
  int nout = (int)dst.size(), slices = colsum_slices(rows, cols, vec), bxn = colsum_blocks_x(cols, vec);
  std::vector<float> part((size_t)nout * slices * cols, NAN);
#pragma omp parallel for collapse(2)
  for (int by = 0; by < slices; by++)
    for (int bx = 0; bx < bxn; bx++)
      for (int x = 0; x < kLanes; x++) {
        std::vector<float> acc((size_t)kRows * nout * vec, 0.0f);  // [y][o][j]
        int64_t c0 = 0;
        for (int y = 0; y < kRows; y++) {
          int64_t r0, r1;
          colsum_thread_range(bx, by, x, y, rows, slices, vec, &c0, &r0, &r1);
          if (c0 >= cols) continue;
          for (int64_t r = r0; r < r1; r += kRows)
            for (int j = 0; j < vec; j++) {
              float d = dout[r * ld + c0 + j];
              float* a = &acc[((size_t)y * nout) * vec + j];
              if (nout == 1)
                a[0] += d;
              else
                a[0] += ln_dw_term(d, inp[r * ld + c0 + j], mean[r], rstd[r]), a[vec] += d;
            }
        }
        for (int o = 0; o < nout; o++)
          for (int j = 0; j < vec && c0 + j < cols; j++)
            part[((size_t)o * slices + by) * cols + c0 + j] = tree8(&acc[(size_t)o * vec + j], nout * vec);
      }
  for (int o = 0; o < nout; o++)
    for (int64_t c = 0; c < cols; c++) {
      float v[kRows];
      for (int y = 0; y < kRows; y++)
        v[y] = finish_thread_sum(part.data() + (size_t)o * slices * cols, cols, slices, c, y);
      dst[o][c] += tree8(v, 1);
    }
}

// ---------------------------------------------------------------------------
// Reference and bounds (host)
// ---------------------------------------------------------------------------
// Column sums in double, and the sums of |terms|: sum[o][c], abs[o][c].
struct ColRef {
  std::vector<std::vector<double>> sum, abs;
};
inline ColRef colsum_ref(int nout, const float* dout, const float* inp, const float* mean, const float* rstd,
                         int64_t rows, int64_t cols, int64_t ld) {
  ColRef r;
  r.sum.assign(nout, std::vector<double>(cols, 0.0)), r.abs = r.sum;
  const int64_t kBlock = 256;  // columns per task: rows are read along memory
#pragma omp parallel for
  for (int64_t c0 = 0; c0 < cols; c0 += kBlock)
    for (int64_t i = 0; i < rows; i++)
      for (int64_t c = c0; c < std::min(cols, c0 + kBlock); c++) {
        double d = dout[i * ld + c];
        double w = nout == 1 ? d : d * ((double)inp[i * ld + c] - mean[i]) * rstd[i];
        r.sum[0][c] += w, r.abs[0][c] += std::fabs(w);
        if (nout == 2) r.sum[1][c] += d, r.abs[1][c] += std::fabs(d);
      }
  return r;
}

// Every version sums the same fp32 terms (bf16 inputs are exact in fp32) in
// some order and adds the total to dst once: within gamma_{rows + 1} of
// (sum |terms| + |dst0|), whatever the order (a tree's is shorter, cuBLASLt
// documents none). The LayerNorm term, d (x - mean) rstd, costs up to 3
// roundings in fp32 (the reference takes it in double), so the dw bound adds
// gamma_3 of sum |terms|. Tensor cores may truncate fp32 sums (2^-23 per
// addition), so v3 in bf16 gets twice the unit.
inline std::vector<double> colsum_bound(const std::vector<double>& abs, const std::vector<float>& dst0, int64_t rows,
                                        double u) {
  std::vector<double> b(abs.size());
  for (size_t c = 0; c < abs.size(); c++) b[c] = gamma_n((double)rows + 1, u) * (abs[c] + std::fabs(dst0[c]));
  return b;
}

// ---------------------------------------------------------------------------
// The cost model (host)
// ---------------------------------------------------------------------------
// v1: 64 slices x ceil(cols / 256) blocks of 256 threads, ~4 loads in flight
// each (the unrolled loop); the finish reads 64 partials per column.
inline std::vector<Work> colsum_v1_work(int nout, int xs, int64_t rows, int64_t cols) {
  double threads = 256.0 * ((cols + 255) / 256) * kColChunks, in = nout == 1 ? 1 : 2;
  std::vector<Work> w;
  w.push_back({"v1 partial", in * rows * cols * xs + (nout - 1) * 8.0 * rows + nout * kColChunks * cols * 4.0, 0,
               kCudaCoreFlops, threads * 4 * xs * in});
  for (int o = 0; o < nout; o++) w.push_back({"v1 finish", kColChunks * cols * 4.0 + 8.0 * cols});
  return w;
}
// v2: 16-byte loads (ld columns read, padding included), ~2 in flight per
// thread; the tree finish.
inline std::vector<Work> colsum_v2_work(int nout, int xs, int64_t rows, int64_t cols, int64_t ld) {
  int vec = xs == 2 ? colsum_vec<uint16_t>(ld) : colsum_vec<float>(ld), slices = colsum_slices(rows, cols, vec);
  double threads = (double)kLanes * kRows * colsum_blocks_x(cols, vec) * slices, in = nout == 1 ? 1 : 2;
  double read = vec > 1 ? (double)ld : (double)cols;
  std::vector<Work> w;
  w.push_back({"v2 partial", in * rows * read * xs + (nout - 1) * 8.0 * rows + nout * (double)slices * cols * 4, 0,
               kCudaCoreFlops, threads * 2 * vec * xs * in});
  for (int o = 0; o < nout; o++) w.push_back({"v2 finish", (double)slices * cols * 4 + 8.0 * cols});
  return w;
}

// The weight-gradient GEMM the bias gradient rides on in v3: dW' (in x out)
// += inp' (in x rows) dout'^T, in_dim = H.
inline GemmSpec dw_spec(int64_t rows, int64_t cols, int64_t ld, int in_dim) {
  GemmSpec s;
  s.tb = true;
  s.m = in_dim, s.n = (int)cols, s.k = (int)rows;
  s.lda = in_dim, s.ldb = ld, s.ldd = in_dim;
  s.beta = 1;
  return s;
}

// A validation case: inputs (bf16 values when bf16v), initial dw, db.
struct ColCase {
  int64_t rows, cols, ld;
  std::vector<float> dout, inp, mean, rstd, dw0, db0;
};
inline ColCase make_col_case(int64_t rows, int64_t cols, int64_t ld, bool bf16v, uint64_t seed) {
  ColCase c{rows, cols, ld, {}, {}, {}, {}, {}, {}};
  c.dout = random_vec(rows * ld, seed * 8), c.inp = random_vec(rows * ld, seed * 8 + 1, -2, 3);
  if (bf16v) c.dout = bf16_round(c.dout), c.inp = bf16_round(c.inp);
  c.mean = random_vec(rows, seed * 8 + 2, 0, 1), c.rstd = random_vec(rows, seed * 8 + 3, 0.5f, 2);
  c.dw0 = random_vec(cols, seed * 8 + 4), c.db0 = random_vec(cols, seed * 8 + 5);
  return c;
}

constexpr int64_t kRowsLarge = 8192;  // B T at both bench shapes
struct ColShape {
  int64_t cols, ld;
};
// dv and the MLP (I = 3072), H = 1024, the vocabulary (30522, rows padded
// to 30528 so bf16 rows are 16-byte aligned, as bigs.cu stores logits).
constexpr ColShape kColShapes[] = {{1024, 1024}, {3072, 3072}, {30522, 30528}};
constexpr int kInDim = 1024;

inline void print_predictions() {
  printf("predicted (H200: %.1f TB/s, latency %.1f us for Little's law), rows %lld\n", kHbmBytes / 1e12, kLatency * 1e6,
         (long long)kRowsLarge);
  printf("%-5s %6s %-5s | %9s %9s | %9s %9s | %9s\n", "op", "cols", "prec", "v1 ms", "v1 MB", "v2 ms", "v2 MB",
         "GEMM ms");
  for (int nout : {1, 2})
    for (const ColShape& s : kColShapes) {
      if (nout == 2 && s.cols != kInDim) continue;  // LayerNorm is over H only
      for (int xs : {2, 4}) {
        auto w1 = colsum_v1_work(nout, xs, kRowsLarge, s.cols), w2 = colsum_v2_work(nout, xs, kRowsLarge, s.cols, s.ld);
        double g = predict_s(
            gemm_work("dW", dw_spec(kRowsLarge, s.cols, s.ld, kInDim), xs, 4, xs == 2 ? kTensorFlops : kCudaCoreFlops));
        printf("%-5s %6lld %-5s | %9.4f %9.1f | %9.4f %9.1f | %9.4f\n", nout == 1 ? "bias" : "ln", (long long)s.cols,
               xs == 2 ? "bf16" : "fp32", 1e3 * predict_s(w1), total_bytes(w1) / 1e6, 1e3 * predict_s(w2),
               total_bytes(w2) / 1e6, 1e3 * g);
      }
    }
}

#ifdef BIGS_CUDA
// ---------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------
// VEC columns of row p: one 16-byte load when VEC * sizeof(X) == 16.
template <int VEC, class X>
__device__ inline void load_cols(float* v, const X* p) {
  if constexpr (VEC * sizeof(X) == 16) {
    int4 raw = *(const int4*)p;
    const X* e = (const X*)&raw;
    for (int j = 0; j < VEC; j++) v[j] = ld(e[j]);
  } else {
    for (int j = 0; j < VEC; j++) v[j] = ld(p[j]);
  }
}

// v2's first stage. NOUT 1: part (slices, cols) of sum dout; NOUT 2: part
// (2, slices, cols) of the LayerNorm dw and db terms (inp, mean, rstd used).
template <int VEC, int NOUT, class X>
__global__ void colsum_tree_kernel(float* part, const X* dout, const X* inp, const float* mean, const float* rstd,
                                   int64_t rows, int64_t cols, int64_t ld, int slices) {
  __shared__ float sh[NOUT][VEC][kRows][kLanes];
  int64_t c0, r0, r1;
  colsum_thread_range(blockIdx.x, blockIdx.y, threadIdx.x, threadIdx.y, rows, slices, VEC, &c0, &r0, &r1);
  float acc[NOUT][VEC] = {};
  if (c0 < cols)
    for (int64_t r = r0; r < r1; r += kRows) {
      float d[VEC];
      load_cols<VEC>(d, dout + r * ld + c0);
      if constexpr (NOUT == 1) {
        for (int j = 0; j < VEC; j++) acc[0][j] += d[j];
      } else {
        float x[VEC];
        load_cols<VEC>(x, inp + r * ld + c0);
        float m = mean[r], s = rstd[r];
        for (int j = 0; j < VEC; j++) acc[0][j] += ln_dw_term(d[j], x[j], m, s), acc[1][j] += d[j];
      }
    }
  for (int o = 0; o < NOUT; o++)
    for (int j = 0; j < VEC; j++) sh[o][j][threadIdx.y][threadIdx.x] = acc[o][j];
  __syncthreads();
  if (threadIdx.y == 0 && c0 < cols)
    for (int o = 0; o < NOUT; o++)
      for (int j = 0; j < VEC && c0 + j < cols; j++)
        part[((int64_t)o * slices + blockIdx.y) * cols + c0 + j] = tree8(&sh[o][j][0][threadIdx.x], kLanes);
}

__global__ void add_kernel(float* dst, const float* src, int64_t n) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) dst[i] += src[i];
}

// The lab's state: bigs.cu's context, prepared products, scratch.
struct ColLab {
  CudaCtx ctx;
  LtCache lt;
  float* part = nullptr;  // v2's partials
  size_t part_cap = 0;
  float* bgrad = nullptr;  // v3's overwritten bias gradient
  size_t bgrad_cap = 0;
  bool poison_scratch = false;
  ColLab() { cuda_ctx_create(&ctx); }
  ColLab(const ColLab&) = delete;
  ColLab& operator=(const ColLab&) = delete;
  ~ColLab() {
    cudaFree(part), cudaFree(bgrad);
    cuda_ctx_destroy(&ctx);
  }
  float* scratch(float** p, size_t* cap, size_t n) {
    scratch_reserve(ctx, p, cap, n);
    if (poison_scratch) cudaCheck(cudaMemsetAsync(*p, 0xff, n * sizeof(float), ctx.stream));
    return *p;
  }
};

// ---------------------------------------------------------------------------
// Versions. Bias: db (cols) += column sums of dout (rows, ld). LayerNorm:
// dw, db (cols) += the terms above; inp shares dout's layout.
// ---------------------------------------------------------------------------
template <class X>
void bias_v1(ColLab& lab, float* db, const X* dout, int64_t rows, int64_t cols, int64_t ld) {
  bias_backward(lab.ctx, db, dout, (int)rows, (int)cols, (int)ld);
}

template <class X>
void ln_v1(ColLab& lab, float* dw, float* db, const X* dout, const X* inp, const float* mean, const float* rstd,
           int64_t rows, int64_t cols) {
  int C = (int)cols;
  scratch_reserve(lab.ctx, &lab.ctx.colsum, &lab.ctx.colsum_cap, (size_t)kColChunks * 2 * C);
  layernorm_dw_partial_kernel<<<dim3(grid_for(C), kColChunks), kThreads, 0, lab.ctx.stream>>>(lab.ctx.colsum, dout, inp,
                                                                                              mean, rstd, (int)rows, C);
  launchCheck();
  colsum_finish_kernel<<<grid_for(C), kThreads, 0, lab.ctx.stream>>>(dw, lab.ctx.colsum, C, 2 * (size_t)C);
  launchCheck();
  colsum_finish_kernel<<<grid_for(C), kThreads, 0, lab.ctx.stream>>>(db, lab.ctx.colsum + C, C, 2 * (size_t)C);
  launchCheck();
}

template <int VEC, int NOUT, class X>
void tree_launch(ColLab& lab, float* part, const X* dout, const X* inp, const float* mean, const float* rstd,
                 int64_t rows, int64_t cols, int64_t ld, int slices) {
  dim3 grid(colsum_blocks_x(cols, VEC), slices);
  colsum_tree_kernel<VEC, NOUT>
      <<<grid, dim3(kLanes, kRows), 0, lab.ctx.stream>>>(part, dout, inp, mean, rstd, rows, cols, ld, slices);
  launchCheck();
}

// v2, both operations (inp, mean, rstd null and dw null: bias into db).
template <class X>
void colsum_v2(ColLab& lab, float* dw, float* db, const X* dout, const X* inp, const float* mean, const float* rstd,
               int64_t rows, int64_t cols, int64_t ld) {
  constexpr int kVec = 16 / sizeof(X);
  bool wide = colsum_vec<X>(ld) == kVec && (uintptr_t)dout % 16 == 0 && (!inp || (uintptr_t)inp % 16 == 0);
  int vec = wide ? kVec : 1, slices = colsum_slices(rows, cols, vec), nout = dw ? 2 : 1;
  float* part = lab.scratch(&lab.part, &lab.part_cap, (size_t)nout * slices * cols);
  if (nout == 1)
    wide ? tree_launch<kVec, 1>(lab, part, dout, inp, mean, rstd, rows, cols, ld, slices)
         : tree_launch<1, 1>(lab, part, dout, inp, mean, rstd, rows, cols, ld, slices);
  else
    wide ? tree_launch<kVec, 2>(lab, part, dout, inp, mean, rstd, rows, cols, ld, slices)
         : tree_launch<1, 2>(lab, part, dout, inp, mean, rstd, rows, cols, ld, slices);
  if (dw) colsum_finish(lab.ctx, dw, nullptr, part, cols, slices);
  colsum_finish(lab.ctx, db, nullptr, part + (size_t)(nout - 1) * slices * cols, cols, slices);
}

// dW (in_dim, cols) += inp^T dout, and with bgrad the v3 bias gradient
// (db += column sums of dout through BGRADB); false when cuBLASLt offers no
// BGRADB here.
template <class X>
bool dw_gemm(ColLab& lab, float* dW, float* db, const X* inp, const X* dout, int64_t rows, int64_t cols, int64_t ld,
             int in_dim) {
  GemmSpec s = dw_spec(rows, cols, ld, in_dim);
  if (!db) return lt_gemm(lab.ctx, lab.lt, s, inp, dout, dW);
  float* g = lab.scratch(&lab.bgrad, &lab.bgrad_cap, cols);
  if (!lt_gemm(lab.ctx, lab.lt, s, inp, dout, dW, CUBLASLT_EPILOGUE_BGRADB, g)) return false;
  add_kernel<<<grid_for(cols), kThreads, 0, lab.ctx.stream>>>(db, g, cols);
  launchCheck();
  return true;
}

// ---------------------------------------------------------------------------
// Validator
// ---------------------------------------------------------------------------
template <class X>
bool validate_case(ColLab& lab, const ColCase& c, const char* prec) {
  bool ok = true;
  ColRef bias = colsum_ref(1, c.dout.data(), nullptr, nullptr, nullptr, c.rows, c.cols, c.ld);
  ColRef ln = colsum_ref(2, c.dout.data(), c.inp.data(), c.mean.data(), c.rstd.data(), c.rows, c.cols, c.ld);
  Buf<X> dout(c.dout.size()), inp(c.inp.size()), ginp((size_t)c.rows * kInDim);  // ginp: the dW GEMM's input
  Buf<float> mean(c.rows), rstd(c.rows), dw(c.cols), db(c.cols), dW((size_t)kInDim * c.cols);
  dout.put(c.dout), inp.put(c.inp), mean.put(c.mean), rstd.put(c.rstd);
  ginp.put(std::vector<float>(ginp.n, 0.5f)), dW.put(std::vector<float>(dW.n, 0.0f));
  std::string tag = strf("%s rows %lld cols %lld ld %lld", prec, (long long)c.rows, (long long)c.cols, (long long)c.ld);
  auto report = [&](const std::string& what, const std::vector<float>& got, const std::vector<double>& ref,
                    const std::vector<double>& bound, const std::vector<float>& start) {
    Check k = check_bounded(tag + " " + what, got.data(), ref.data(), bound.data(), got.size());
    std::vector<double> alt = off_by_one(ref, start);  // the neighbouring column's sum
    if (!alt.empty()) k.caught = caught_share(ref.data(), alt.data(), bound.data(), ref.size());
    print_check(k);
    ok &= k.ok();
  };
  auto with0 = [](std::vector<double> s, const std::vector<float>& d0) {
    for (size_t i = 0; i < s.size(); i++) s[i] += d0[i];
    return s;
  };
  // Each version twice from the same start: checked, then compared bit for bit.
  auto twice = [&](const std::string& what, const std::function<bool()>& run, Buf<float>& out,
                   const std::vector<float>& start, const std::vector<double>& ref, const std::vector<double>& bound) {
    std::vector<float> first;
    for (int i = 0; i < 2; i++) {
      out.put(start);
      try {
        if (!run()) {
          printf("    %s %s: n/a (cuBLASLt offers no algorithm)\n", tag.c_str(), what.c_str());
          return;
        }
      } catch (const CudaError& e) {  // a library refusing a shape fails this version, not the lab
        printf("    %s %s FAIL: %s\n", tag.c_str(), what.c_str(), e.what());
        ok = false;
        return;
      }
      cudaCheck(cudaStreamSynchronize(lab.ctx.stream));
      std::vector<float> got = out.get();
      if (i == 0) report(what, got, ref, bound, start), first = got;
      if (i == 1 && std::memcmp(first.data(), got.data(), got.size() * 4) != 0) {
        printf("    %s %s FAIL: a second run gave other bits\n", tag.c_str(), what.c_str());
        ok = false;
      }
    }
  };
  auto bb = colsum_bound(bias.abs[0], c.db0, c.rows, kU32), bb3 = colsum_bound(bias.abs[0], c.db0, c.rows, 2 * kU32);
  auto rb = with0(bias.sum[0], c.db0);
  twice(
      "bias v1", [&]() { return bias_v1(lab, db.p, dout.p, c.rows, c.cols, c.ld), true; }, db, c.db0, rb, bb);
  twice(
      "bias v2",
      [&]() {
        return colsum_v2(lab, nullptr, db.p, dout.p, (const X*)nullptr, nullptr, nullptr, c.rows, c.cols, c.ld), true;
      },
      db, c.db0, rb, bb);
  twice(
      "bias v3 (BGRADB)", [&]() { return dw_gemm(lab, dW.p, db.p, ginp.p, dout.p, c.rows, c.cols, c.ld, kInDim); }, db,
      c.db0, rb, std::is_same<X, float>::value ? bb : bb3);
  if (c.ld == c.cols) {  // LayerNorm rows are unpadded
    std::vector<double> lnw = colsum_bound(ln.abs[0], c.dw0, c.rows, kU32),
                        lnb = colsum_bound(ln.abs[1], c.db0, c.rows, kU32);
    for (size_t i = 0; i < lnw.size(); i++) lnw[i] += gamma_n(3, kU32) * ln.abs[0][i];
    auto rw = with0(ln.sum[0], c.dw0), rbl = with0(ln.sum[1], c.db0);
    for (int ver : {1, 2}) {
      auto run = [&]() {
        db.put(c.db0);
        ver == 1 ? ln_v1(lab, dw.p, db.p, dout.p, inp.p, mean.p, rstd.p, c.rows, c.cols)
                 : colsum_v2(lab, dw.p, db.p, dout.p, inp.p, mean.p, rstd.p, c.rows, c.cols, c.ld);
        return true;
      };
      twice(strf("ln v%d dw", ver), run, dw, c.dw0, rw, lnw);
      report(strf("ln v%d db", ver), db.get(), rbl, lnb, c.db0);
    }
  }
  return ok;
}

// bf16 and fp32; odd shapes (57 rows, 111 columns: 1-column loads), the
// padded vocabulary row (16-byte loads over a padded stride) and BiGS-large's.
inline bool validate(ColLab& lab) {
  bool ok = true;
  uint64_t seed = 1;
  const ColCase shapes[] = {{57, 111, 111, {}, {}, {}, {}, {}, {}},
                            {57, 1024, 1024, {}, {}, {}, {}, {}, {}},
                            {8192, 1024, 1024, {}, {}, {}, {}, {}, {}},
                            {8192, 3072, 3072, {}, {}, {}, {}, {}, {}},
                            {1000, 30522, 30528, {}, {}, {}, {}, {}, {}}};
  for (bool bf16v : {false, true})
    for (const ColCase& s : shapes) {
      ColCase c = make_col_case(s.rows, s.cols, s.ld, bf16v, seed++);
      ok &= bf16v ? validate_case<bf16>(lab, c, "bf16") : validate_case<float>(lab, c, "fp32");
    }
  return ok;
}

// ---------------------------------------------------------------------------
// Benchmark
// ---------------------------------------------------------------------------
template <class X>
void bench_prec(ColLab& lab, Timer& timer, int reps) {
  int xs = sizeof(X);
  const char* prec = xs == 2 ? "bf16" : "fp32";
  for (const ColShape& s : kColShapes) {
    int64_t rows = kRowsLarge, cols = s.cols, ld = s.ld;
    Buf<X> dout((size_t)rows * ld), inp((size_t)rows * ld), ginp((size_t)rows * kInDim);
    Buf<float> mean(rows), rstd(rows), dw(cols), db(cols), dW((size_t)kInDim * cols);
    dout.put(random_vec(rows * ld, 201)), inp.put(random_vec(rows * ld, 202)), ginp.put(random_vec(rows * kInDim, 203));
    mean.put(random_vec(rows, 204)), rstd.put(random_vec(rows, 205, 0.5f, 2));
    auto row = [&](const char* op, const char* ver, double ms, const std::vector<Work>& w) {
      printf("%-5s %6lld %-5s %-14s | %9.4f | %7.0f | %9.4f\n", op, (long long)cols, prec, ver, ms,
             total_bytes(w) / ms / 1e6, 1e3 * predict_s(w));
    };
    auto t = [&](const std::function<void()>& f) {
      try {
        return timer.median_ms(lab.ctx, f, 3, reps);
      } catch (const CudaError& e) {
        printf("  (failed: %s)\n", e.what());
        return (double)NAN;
      }
    };
    row("bias", "v1", t([&]() { bias_v1(lab, db.p, dout.p, rows, cols, ld); }), colsum_v1_work(1, xs, rows, cols));
    row("bias", "v2",
        t([&]() { colsum_v2(lab, nullptr, db.p, dout.p, (const X*)nullptr, nullptr, nullptr, rows, cols, ld); }),
        colsum_v2_work(1, xs, rows, cols, ld));
    std::vector<Work> g = {
        gemm_work("dW", dw_spec(rows, cols, ld, kInDim), xs, 4, xs == 2 ? kTensorFlops : kCudaCoreFlops)};
    row("dW", "GEMM", t([&]() { dw_gemm(lab, dW.p, nullptr, ginp.p, dout.p, rows, cols, ld, kInDim); }), g);
    bool has = true;
    double gb = t([&]() { has &= dw_gemm(lab, dW.p, db.p, ginp.p, dout.p, rows, cols, ld, kInDim); });
    if (has)
      row("dW", "GEMM+BGRADB v3", gb, g);
    else
      printf("%-5s %6lld %-5s %-14s | n/a: cuBLASLt offers no BGRADB algorithm here\n", "dW", (long long)cols, prec,
             "GEMM+BGRADB v3");
    if (cols == kInDim) {
      row("ln", "v1", t([&]() { ln_v1(lab, dw.p, db.p, dout.p, inp.p, mean.p, rstd.p, rows, cols); }),
          colsum_v1_work(2, xs, rows, cols));
      row("ln", "v2", t([&]() { colsum_v2(lab, dw.p, db.p, dout.p, inp.p, mean.p, rstd.p, rows, cols, ld); }),
          colsum_v2_work(2, xs, rows, cols, ld));
    }
  }
}

inline void benchmark(ColLab& lab, int reps) {
  Timer timer;
  printf(
      "\ncolumn sums, rows %lld; median of %d after 3 warm-up, L2 flushed before each; GB/s from the predicted "
      "bytes; the dW GEMM (in %d) for v3's BGRADB\n",
      (long long)kRowsLarge, reps, kInDim);
  printf("%-5s %6s %-5s %-14s | %9s | %7s | %9s\n", "op", "cols", "prec", "version", "ms", "GB/s", "pred ms");
  bench_prec<bf16>(lab, timer, reps);
  bench_prec<float>(lab, timer, reps);
}
#endif  // BIGS_CUDA

}  // namespace lab

#if defined(__CUDACC__) && !defined(LAB_NO_MAIN)
int main(int argc, char** argv) {
  using namespace lab;
  return lab_main(
      argc, argv, "lab_colsum", "the column-sum lab", {}, []() { return std::string(); }, []() { print_predictions(); },
      [&](bool validating, bool benching, int reps) {
        ColLab lab;
        bool ok =
            !validating || run_validation("dev/cuda/colsum.cu", &lab.poison_scratch, [&]() { return validate(lab); });
        if (benching) benchmark(lab, reps);
        return ok;
      });
}
#endif
