// bigsc/cublaslt.cuh: dense products through cuBLASLt for bigs.cu: layouts, transposes, strided
// batches, the bias and GELU epilogues, operand alignment and the heuristic's algorithms, tried in
// order. Included at the top of bigs.cu after cuda_common.cuh; names nothing from bigs.cu.

#pragma once

#include "cuda_common.cuh"

#ifdef BIGS_CUDA

namespace bigs {

// The largest power of two, up to 256, that divides the address. Tensors in
// the host-layout tests sit at arbitrary offsets, while cuBLASLt's heuristic
// assumes 256-byte aligned operands unless told otherwise; stating the truth
// keeps it from choosing an algorithm that needs more alignment than we have.
static uint32_t pow2_alignment(uint64_t x) {
  uint32_t a = 256;
  while (a > 2 && x % a) a /= 2;
  return a;
}
static uint32_t ptr_alignment(const void* p) { return pow2_alignment((uintptr_t)p); }

// Strided batches of one product: batch q reads A + q a and B + q b and
// writes D + q d (element strides; 0: one matrix serves every q, as the
// Toeplitz route shares its matrix). count 1: a single product.
struct GemmBatch {
  int count = 1;
  int64_t a = 0, b = 0, d = 0;
};

// The alignment every batch of an operand keeps: its base's, and its
// stride's in bytes.
static uint32_t batch_alignment(const void* p, int64_t stride, size_t elem) {
  uint32_t a = ptr_alignment(p);
  if (stride) a = std::min(a, pow2_alignment((uint64_t)stride * elem));
  return a;
}

template <class X>
constexpr cudaDataType_t dtype_of();
template <>
constexpr cudaDataType_t dtype_of<float>() {
  return CUDA_R_32F;
}
template <>
constexpr cudaDataType_t dtype_of<bf16>() {
  return CUDA_R_16BF;
}

// What cuBLASLt adds after the product: nothing, a bias per row of D, or a
// bias and then GELU (tanh form), keeping the pre-GELU values in `aux`
// (laid out as D).
enum class Epi { None, Bias, GeluBias };

// How many algorithms to ask cuBLASLt's heuristic for, best first: the
// next serves when one fails to run.
constexpr int kGemmCandidates = 8;

// The heuristic's first kGemmCandidates algorithms for a problem whose
// operands A, B, C, D have the byte alignments al, best first. With an
// epilogue, a heuristic that does not support it for these types is an
// answer too (no algorithm: the caller falls back to its own kernels), not
// an error. The lab's plans (dev/cuda/lab.h) ask the same way.
static std::vector<cublasLtMatmulAlgo_t> lt_candidates(CudaCtx& ctx, cublasLtMatmulDesc_t desc,
                                                       cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                                                       cublasLtMatrixLayout_t ld, const uint32_t* al, bool epilogue) {
  cublasLtMatmulPreference_t pref;
  cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
  uint64_t ws = ctx.workspace_size;
  cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  cublasLtMatmulPreferenceAttributes_t which[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; i++) cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, which[i], &al[i], sizeof al[i]));
  cublasLtMatmulHeuristicResult_t heur[kGemmCandidates];
  int count = 0;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx.lt, desc, la, lb, ld, ld, pref, kGemmCandidates, heur, &count);
  cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
  if (!epilogue && st != CUBLAS_STATUS_NOT_SUPPORTED) cublasCheck(st);
  std::vector<cublasLtMatmulAlgo_t> algos;
  for (int i = 0; st == CUBLAS_STATUS_SUCCESS && i < count; i++)
    if (heur[i].state == CUBLAS_STATUS_SUCCESS) algos.push_back(heur[i].algo);
  return algos;
}

// D (m, n) = op(A) op(B) + beta C, then the epilogue, in cuBLASLt's
// column-major terms (C = null: C is D). A row-major (r, c) matrix is a
// column-major (c, r) one with leading dimension c; the launchers below use
// that to run our row-major products without copies.
// Types: A and B fp32 or bf16; C and D fp32 or bf16; accumulation in fp32
// always (bf16 operands: CUBLAS_COMPUTE_32F; fp32 operands: ctx.compute,
// exact fp32 by default or TF32). Bias and aux have D's type.
// Returns false, having done nothing, when cuBLASLt has no algorithm for an
// epilogue (the caller then runs the plain product and its own kernels); a
// plain product without an algorithm is an error.
template <class TA, class TD>
static bool matmul(CudaCtx& ctx, TD* D, const TA* A, const TA* Bm, bool ta, bool tb, int m, int n, int k, int lda,
                   int ldb, int ldd, float beta, const TD* C = nullptr, Epi epi = Epi::None, const TD* bias = nullptr,
                   TD* aux = nullptr, const GemmBatch& bat = GemmBatch{}) {
  if (m == 0 || n == 0 || k == 0 || bat.count == 0) return true;  // callers accumulate (beta = 1) or have k > 0
  if (!C) C = D;
  cublasComputeType_t compute = std::is_same<TA, float>::value ? ctx.compute : CUBLAS_COMPUTE_32F;
  uint32_t al[5] = {batch_alignment(A, bat.a, sizeof(TA)), batch_alignment(Bm, bat.b, sizeof(TA)),
                    batch_alignment(C, bat.d, sizeof(TD)), batch_alignment(D, bat.d, sizeof(TD)),
                    aux ? ptr_alignment(aux) : 256u};
  std::vector<int64_t> key = {dtype_of<TA>(),
                              dtype_of<TD>(),
                              compute,
                              ta,
                              tb,
                              m,
                              n,
                              k,
                              lda,
                              ldb,
                              ldd,
                              (int)epi,
                              beta != 0,
                              al[0],
                              al[1],
                              al[2],
                              al[3],
                              al[4],
                              bias ? (int64_t)ptr_alignment(bias) : 0,
                              bat.count,
                              bat.a,
                              bat.b,
                              bat.d};
  cublasLtMatmulDesc_t desc;
  cublasCheck(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F));
  cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
  cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
  cublasLtEpilogue_t e = epi == Epi::Bias       ? CUBLASLT_EPILOGUE_BIAS
                         : epi == Epi::GeluBias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS
                                                : CUBLASLT_EPILOGUE_DEFAULT;
  cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e));
  if (epi != Epi::None)
    cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  if (epi == Epi::GeluBias) {
    int64_t ld_aux = ldd;  // pre has out's layout, fused or not
    cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
    cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld_aux, sizeof ld_aux));
  }
  cublasLtMatrixLayout_t la, lb, ld;  // the stored shapes, before op(); C shares D's
  cublasCheck(cublasLtMatrixLayoutCreate(&la, dtype_of<TA>(), ta ? k : m, ta ? m : k, lda));
  cublasCheck(cublasLtMatrixLayoutCreate(&lb, dtype_of<TA>(), tb ? n : k, tb ? k : n, ldb));
  cublasCheck(cublasLtMatrixLayoutCreate(&ld, dtype_of<TD>(), m, n, ldd));
  if (bat.count > 1) {
    std::pair<cublasLtMatrixLayout_t, int64_t> batched[3] = {{la, bat.a}, {lb, bat.b}, {ld, bat.d}};
    for (auto& [l, stride] : batched) {
      cublasCheck(
          cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bat.count, sizeof bat.count));
      cublasCheck(
          cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    }
  }
  GemmAlgo* found = nullptr;
  for (GemmAlgo& g : ctx.algos)
    if (g.key == key) found = &g;
  if (!found) {  // first time: ask the heuristic for a few candidates, and remember them
    ctx.algos.push_back(GemmAlgo{key, lt_candidates(ctx, desc, la, lb, ld, al, epi != Epi::None)});
    found = &ctx.algos.back();
  }
  // The candidates in order, until one runs; one that fails is not tried
  // again for this problem.
  const float alpha = 1.0f;
  cublasStatus_t last = CUBLAS_STATUS_NOT_SUPPORTED;
  bool ok = false;
  while (!ok && found->next < found->algos.size()) {
    last = cublasLtMatmul(ctx.lt, desc, &alpha, A, la, Bm, lb, &beta, C, ld, D, ld, &found->algos[found->next],
                          ctx.workspace, ctx.workspace_size, ctx.stream);
    ok = last == CUBLAS_STATUS_SUCCESS;
    if (!ok) found->next++;
  }
  cublasCheck(cublasLtMatrixLayoutDestroy(la));
  cublasCheck(cublasLtMatrixLayoutDestroy(lb));
  cublasCheck(cublasLtMatrixLayoutDestroy(ld));
  cublasCheck(cublasLtMatmulDescDestroy(desc));
  if (!ok && epi == Epi::None)
    throw CudaError(
        strf("cuBLASLt: no algorithm ran (%zu tried; last status %s) for types %d/%d, m %d n %d k %d, op %c%c, ld %d "
             "%d %d, alignment %u %u %u %u",
             found->algos.size(), cublasLtGetStatusName(last), (int)dtype_of<TA>(), (int)dtype_of<TD>(), m, n, k,
             ta ? 'T' : 'N', tb ? 'T' : 'N', lda, ldb, ldd, al[0], al[1], al[2], al[3]));
  return ok;
}

}  // namespace bigs

#endif  // BIGS_CUDA
