// bigsc/ssm_toeplitz.cuh: the SSM convolution as Toeplitz products, for the GPU: the plans (which
// products, on which columns, in which groups) as host code over an executor, so the cost device and
// the kernel lab replay exactly what the GPU runs, and the CUDA executor with its kernels. bigs.cu
// chooses between this route and the FFT (gpu_toeplitz_route). Included at the top of bigs.cu;
// names nothing from bigs.cu.

#pragma once

#include "cublaslt.cuh"

namespace bigs {

// batch q = 0 .. batch-1 computes
//   D_q (m x n) = op(A_q) (m x k) op(B_q) (k x n) + beta D_q
// with X_q = X + x_off + q sx (elements; sx = 0: one matrix for every q),
// op(A)(i, p) = A[i + p lda] or, ta, A[p + i lda]; likewise B; D(i, j) =
// D[i + j ldd].
struct GemmSpec {
  bool ta = false, tb = false;
  int m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldd = 0;
  int batch = 1;
  int64_t sa = 0, sb = 0, sd = 0;
  int64_t a_off = 0, b_off = 0, d_off = 0;
  float beta = 0;
};

// N's leading dimension: T rounded up to 8 elements, so every column starts
// 16-byte aligned in bf16 (cuBLASLt's tensor-core kernels want that).
BIGS_HD inline int toeplitz_ld(int T) { return (T + 7) / 8 * 8; }

// N(s, t), and 0 in the padding rows s >= T.
BIGS_HD inline float toeplitz_entry(const float* K, float d, int s, int t, int T) {
  if (s >= T || s > t) return 0.0f;
  return s == t ? K[0] + d : K[t - s];
}

// Thread i of the build writes rows s0 .. s0 + 7 of column t (one 16-byte
// store in bf16): their values and the offset of the first; false past the
// end. Consecutive threads write consecutive rows of one column.
BIGS_HD inline bool toeplitz_build_thread(int64_t i, const float* K, float d, int T, int ldT, int64_t* off,
                                          float v[8]) {
  int64_t groups = ldT / 8;
  if (i >= groups * T) return false;
  int t = (int)(i / groups), s0 = (int)(i % groups) * 8;
  for (int j = 0; j < 8; j++) v[j] = toeplitz_entry(K, d, s0 + j, t, T);
  *off = (int64_t)t * ldT + s0;
  return true;
}

// The products of out = Toep(K) inp over the batch (A = inp, B = N, D =
// out). chunk 0 (or >= T): one product (version 2). Else (version 3) one
// per block of C output columns [t0, t0 + nc), over input columns [0, t0 +
// nc) (causal) or [t0, T) (anti-causal, N's rows t0 .. read through op T).
// chunk must be a multiple of 8, so every block starts aligned.
inline std::vector<GemmSpec> conv_plan(int B, int T, int H, bool anticausal, int chunk) {
  int ldT = toeplitz_ld(T), C = chunk > 0 && chunk < T ? chunk : T;
  std::vector<GemmSpec> plan;
  for (int t0 = 0; t0 < T; t0 += C) {
    GemmSpec s;
    int nc = std::min(C, T - t0);
    s.tb = anticausal;
    s.m = H, s.n = nc;
    s.lda = H, s.ldb = ldT, s.ldd = H;
    s.batch = B, s.sa = s.sd = (int64_t)T * H, s.sb = 0;  // N is shared by every sequence
    s.d_off = (int64_t)t0 * H;
    if (!anticausal)
      s.k = t0 + nc, s.a_off = 0, s.b_off = (int64_t)t0 * ldT;
    else
      s.k = T - t0, s.a_off = (int64_t)t0 * H, s.b_off = t0 + (int64_t)t0 * ldT;
    plan.push_back(s);
  }
  return plan;
}

// dK[l] is a sum along the l-th diagonal of Gx_b(r, c) = sum_h first[r][h]
// second[c][h] (column-major, ld ldG = toeplitz_ld(T), stride T ldG):
// causal first = dout, second = inp, so Gx(c + l, c) = dout[c + l] . u[c];
// anti-causal first = inp, second = dout, so Gx(c + l, c) = u[c + l] .
// dout[c]. Either way dK[l] = sum_b sum_{c < T - l} Gx_b(c + l, c): only the
// lower triangle r >= c, and each lag's entries are consecutive in memory
// (column c, rows c + l), which the diagonal sums rely on. The products for
// nseq sequences (A = first, B = second, D = Gx): one (chunk 0), or one per
// block of C columns [c0, c0 + nc), rows [c0, T). (One product over the
// whole batch would need the reduction index (b, h), which has two strides
// in our (B, T, H) layout; so the batch sum is the diagonal sums'.)
inline std::vector<GemmSpec> gram_plan(int nseq, int T, int H, int chunk) {
  int ldG = toeplitz_ld(T), C = chunk > 0 && chunk < T ? chunk : T;
  std::vector<GemmSpec> plan;
  for (int c0 = 0; c0 < T; c0 += C) {
    GemmSpec s;
    s.ta = true;
    s.m = T - c0, s.n = std::min(C, T - c0), s.k = H;
    s.lda = s.ldb = H, s.ldd = ldG;
    s.batch = nseq, s.sa = s.sb = (int64_t)T * H, s.sd = (int64_t)T * ldG;
    s.a_off = s.b_off = (int64_t)c0 * H, s.d_off = c0 + (int64_t)c0 * ldG;
    plan.push_back(s);
  }
  return plan;
}

// Gx takes T ldG fp32 per sequence (67 MB at T = 4096), so the batch goes
// through in groups of this many sequences, each group's lag sums added to
// dK in order.
constexpr size_t kGramCapBytes = 256u << 20;
inline int gram_group(int B, int T, size_t cap_bytes) {
  size_t per = (size_t)T * toeplitz_ld(T) * sizeof(float);
  return (int)std::max<size_t>(1, std::min<size_t>(B, cap_bytes / per));
}

// Deterministic column sums over a fixed tree: blocks of kLanes x kRows
// threads, threadIdx.x the column (consecutive threads, consecutive
// columns: coalesced), threadIdx.y one of kRows interleaved row subsets;
// the kRows partial sums of a column are added in the fixed tree below (host
// and device run this very function), and the slices' results by the
// finish in the same way. Every order is fixed by the shapes alone, so
// results repeat bit for bit on any GPU.
constexpr int kLanes = 32, kRows = 8;

// ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7)), reading v[i * stride].
BIGS_HD inline float tree8(const float* v, int stride) {
  float a0 = v[0] + v[4 * stride], a1 = v[stride] + v[5 * stride], a2 = v[2 * stride] + v[6 * stride],
        a3 = v[3 * stride] + v[7 * stride];
  return (a0 + a2) + (a1 + a3);
}

// Row range of slice `slice` of `slices` over `rows` rows: [*r0, *r1).
BIGS_HD inline void slice_rows(int64_t rows, int slices, int slice, int64_t* r0, int64_t* r1) {
  int64_t per = (rows + slices - 1) / slices, a = slice * per, b = a + per;
  *r0 = a < rows ? a : rows;
  *r1 = b < rows ? b : rows;
}

// The finish: thread (x, y) of block bx adds the partials of slices y, y + 8,
// ... for column c = bx * 32 + x in slice order; tree8 over y then.
BIGS_HD inline float finish_thread_sum(const float* part, int64_t cols, int slices, int64_t c, int y) {
  float s = 0;
  for (int k = y; k < slices; k += kRows) s += part[(int64_t)k * cols + c];
  return s;
}

// The diagonal sums are a column sum of a skewed matrix: rows r = q T + c
// (q the sequence, c the column of Gx), columns the lags l, entry
// Gx_q(c + l, c) where c + l < T. Slices: one per 128 rows, at most 256.
BIGS_HD inline int diag_slices(int64_t rows) {
  int64_t s = rows / 128;
  return (int)(s < 1 ? 1 : s > 256 ? 256 : s);
}

// One thread's part: lag l over rows r0, r0 + kRows, ... < r1.
BIGS_HD inline float diag_thread_sum(const float* G, int T, int ldG, int l, int64_t r0, int64_t r1) {
  float s = 0;
  if (l >= T) return s;
  for (int64_t r = r0; r < r1; r += kRows) {
    int64_t q = r / T;
    int c = (int)(r - q * T);
    if (c + l < T) s += G[q * T * ldG + (int64_t)c * ldG + c + l];
  }
  return s;
}

// out (B, T, H) = Toep(K, D) inp, causal or anti-causal (overwrites). Ex
// runs the pieces: the GPU's executor (below), the cost device's, or the
// lab's CPU twin; all take the same calls in the same order.
template <class Ex, class X>
void toeplitz_forward(Ex& ex, X* out, const X* inp, const float* K, const float* D, int B, int T, int H,
                      bool anticausal, int chunk) {
  int ldT = toeplitz_ld(T);
  X* N = ex.template matrix<X>((size_t)T * ldT);  // (T, ldT) column-major
  ex.build(N, K, D, T, ldT);
  for (const GemmSpec& s : conv_plan(B, T, H, anticausal, chunk)) ex.conv_gemm(s, inp, N, out);
}

// dinp = the opposite direction's product (overwrites); dK (T), dD (1) +=.
// dD is the lag-0 sum (sum dout u), so it needs no pass of its own.
template <class Ex, class X>
void toeplitz_backward(Ex& ex, X* dinp, float* dK, float* dD, const X* dout, const X* inp, const float* K,
                       const float* D, int B, int T, int H, bool anticausal, int chunk, size_t gram_cap) {
  toeplitz_forward(ex, dinp, dout, K, D, B, T, H, !anticausal, chunk);
  int ldG = toeplitz_ld(T), g = gram_group(B, T, gram_cap);
  float* G = ex.gram((size_t)g * T * ldG);   // (g, T, ldG) column-major
  const X* first = anticausal ? inp : dout;  // see gram_plan
  const X* second = anticausal ? dout : inp;
  for (int q0 = 0; q0 < B; q0 += g) {
    int nq = std::min(g, B - q0);
    size_t at = (size_t)q0 * T * H;
    for (const GemmSpec& s : gram_plan(nq, T, H, chunk)) ex.gram_gemm(s, first + at, second + at, G);
    int slices = diag_slices((int64_t)nq * T);
    float* part = ex.partials((size_t)slices * T);
    ex.diag(part, G, T, ldG, nq, slices);
    ex.finish(dK, dD, part, T, slices);
  }
}

// The Toeplitz route's scratch at a batch capacity (model_to_device makes
// it at start-up; the memory plan counts it): the matrix, one group's Gx and
// the lag sums' partials.
struct ToeplitzScratch {
  size_t matrix_bytes = 0, gram_floats = 0, part_floats = 0;
};
static ToeplitzScratch toeplitz_scratch(size_t elem, int B, int T) {
  int g = gram_group(B, T, kGramCapBytes);
  size_t ldT = toeplitz_ld(T);
  return {(size_t)T * ldT * elem, (size_t)g * T * ldT, (size_t)diag_slices((int64_t)g * T) * T};
}


#ifdef BIGS_CUDA
// The Toeplitz route's kernels and executor (see toeplitz_forward).
__device__ inline void store8(bf16* p, const float* v) {  // one 16-byte store
  __nv_bfloat162 h[4];
  for (int j = 0; j < 4; j++) h[j] = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
  *(uint4*)p = *(const uint4*)h;
}
__device__ inline void store8(float* p, const float* v) {
  ((float4*)p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  ((float4*)p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

// N (T, ldT) column-major from K (T) and *D; one thread per 8 rows.
template <class X>
__global__ void toeplitz_build_kernel(X* N, const float* K, const float* D, int T, int ldT) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, off;
  float v[8];
  if (toeplitz_build_thread(i, K, *D, T, ldT, &off, v)) store8(N + off, v);
}

// The first stage of the lag sums: part[slice][l], block (kLanes, kRows).
__global__ void diag_partial_kernel(float* part, const float* G, int T, int ldG, int nseq, int slices) {
  __shared__ float sh[kRows][kLanes];
  int l = blockIdx.x * kLanes + threadIdx.x;
  int64_t r0, r1;
  slice_rows((int64_t)nseq * T, slices, blockIdx.y, &r0, &r1);
  sh[threadIdx.y][threadIdx.x] = diag_thread_sum(G, T, ldG, l, r0 + threadIdx.y, r1);
  __syncthreads();
  if (threadIdx.y == 0 && l < T) part[(int64_t)blockIdx.y * T + l] = tree8(&sh[0][threadIdx.x], kLanes);
}

// The second stage of a two-stage column sum: dst[c] += the sum over slices
// of part[slice * cols + c] (finish_thread_sum, then tree8), and when extra0
// is given, *extra0 += the same sum for column 0 (the SSM's dD is dK[0]'s
// increment). Blocks of (kLanes, kRows), one column per x.
__global__ void colsum_finish_tree_kernel(float* dst, float* extra0, const float* part, int64_t cols, int slices) {
  __shared__ float sh[kRows][kLanes];
  int64_t c = (int64_t)blockIdx.x * kLanes + threadIdx.x;
  sh[threadIdx.y][threadIdx.x] = c < cols ? finish_thread_sum(part, cols, slices, c, threadIdx.y) : 0.0f;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float s = tree8(&sh[0][threadIdx.x], kLanes);
    dst[c] += s;
    if (c == 0 && extra0) *extra0 += s;
  }
}

// One GemmSpec through matmul (fp32 accumulation; offsets added here).
template <class TA, class TD>
static void gemm(CudaCtx& ctx, const GemmSpec& s, const TA* A, const TA* B, TD* D) {
  matmul<TA, TD>(ctx, D + s.d_off, A + s.a_off, B + s.b_off, s.ta, s.tb, s.m, s.n, s.k, (int)s.lda, (int)s.ldb,
                 (int)s.ldd, s.beta, nullptr, Epi::None, nullptr, nullptr, GemmBatch{s.batch, s.sa, s.sb, s.sd});
}

struct ToeplitzExec {
  CudaCtx& ctx;
  template <class X>
  X* matrix(size_t n) {
    scratch_reserve(ctx, &ctx.toep, &ctx.toep_cap, n * sizeof(X));
    return (X*)ctx.toep;
  }
  float* gram(size_t n) {
    scratch_reserve(ctx, &ctx.gram, &ctx.gram_cap, n);
    return ctx.gram;
  }
  float* partials(size_t n) {
    scratch_reserve(ctx, &ctx.lagpart, &ctx.lagpart_cap, n);
    return ctx.lagpart;
  }
  template <class X>
  void build(X* N, const float* K, const float* D, int T, int ldT) {
    launchKernel(toeplitz_build_kernel, grid_for((size_t)T * (ldT / 8)), kThreads, 0, ctx.stream, N, K, D, T, ldT);
  }
  template <class X>
  void conv_gemm(const GemmSpec& s, const X* A, const X* B, X* D) {
    gemm(ctx, s, A, B, D);
  }
  template <class X>
  void gram_gemm(const GemmSpec& s, const X* A, const X* B, float* G) {
    gemm(ctx, s, A, B, G);
  }
  void diag(float* p, const float* G, int T, int ldG, int nseq, int slices) {
    launchKernel(diag_partial_kernel, dim3((T + kLanes - 1) / kLanes, slices), dim3(kLanes, kRows), 0, ctx.stream, p, G,
                 T, ldG, nseq, slices);
  }
  void finish(float* dK, float* dD, const float* p, int T, int slices) {
    launchKernel(colsum_finish_tree_kernel, (unsigned)((T + kLanes - 1) / kLanes), dim3(kLanes, kRows), 0, ctx.stream,
                 dK, dD, p, T, slices);
  }
};
#endif  // BIGS_CUDA

}  // namespace bigs
