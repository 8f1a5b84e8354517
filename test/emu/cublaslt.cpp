// cublaslt.cpp: the emulated cuBLASLt, the subset bigs uses (bigs.cu's
// matmul / lt_candidates, dev/cuda/lab.h's lt_gemm). Test infrastructure
// only, never linked into the product. The functions keep the real
// signatures of /usr/local/cuda/include/cublasLt.h (extern "C" there).
//
// What it does: D = epilogue(alpha op(A) op(B) + beta C) in cuBLASLt's
// column-major terms, strided batches, fp32 / bf16 storage, fp32
// accumulation (CUBLAS_COMPUTE_32F), or TF32 inputs (..._FAST_TF32),
// epilogues DEFAULT, BIAS, GELU_AUX_BIAS and BGRADB. The product runs as a
// queued op on the call's stream (emu::enqueue), so it happens when the
// stream's work runs, as on a GPU.
//
// Strictness: what the documentation requires is checked, and a violation
// fails as the real call does, loudly ("emu: <call>: <what>"). Sources, by
// section of the cuBLAS documentation (docs.nvidia.com/cuda/cublas,
// "Using the cuBLASLt API"), cited at each rule below:
//  [LAYOUT]  cublasLtMatrixLayoutAttribute_t (CUBLASLT_MATRIX_LAYOUT_LD:
//            ">= rows for CUBLASLT_ORDER_COL"; BATCH_COUNT int32_t;
//            STRIDED_BATCH_OFFSET int64_t).
//  [DESC]    cublasLtMatmulDescAttributes_t (types and sizes of each
//            attribute; BIAS_POINTER "Bias vector length must match matrix
//            D rows count"; EPILOGUE_AUX_LD "Must be divisible by 8 and be
//            no less than the number of rows in the output matrix"; the
//            aux batch stride "Must be divisible by 8"; bias and aux types
//            default to D's; heuristics "depend on [the bias / aux pointer]
//            value to determine expected pointer alignment").
//  [EPI]     cublasLtEpilogue_t (BIAS, GELU_AUX_BIAS: "apply Bias and then
//            GELU transform", the aux output is "GELU input"; BGRADB: "bias
//            size corresponds to the number of columns of the matrix D. The
//            reduction happens over the GEMM's k dimension").
//  [PREF]    cublasLtMatmulPreferenceAttributes_t (MIN_ALIGNMENT_*_BYTES,
//            default 256: "Selecting a smaller value will exclude
//            algorithms that can not work with matrix A that is not as
//            strictly aligned as they need"; MAX_WORKSPACE_BYTES default 0).
//  [CAP]     cublasLtMatmulAlgoCapAttributes_t MIN_ALIGNMENT_*_BYTES: an
//            algorithm's alignment is "required for buffer pointer, leading
//            dimension, and possibly other strides".
//  [MATMUL]  cublasLtMatmul(): returns CUBLAS_STATUS_INVALID_VALUE "if
//            parameters are in conflict or in an impossible configuration;
//            e.g. when workspaceSizeInBytes is less than workspace required
//            by configured algo", CUBLAS_STATUS_NOT_SUPPORTED "if current
//            implementation on selected device doesn't support configured
//            operation"; its table of supported type combinations
//            (CUBLAS_COMPUTE_32F with scale CUDA_R_32F: A/B 32F -> C/D 32F,
//            A/B 16BF -> C/D 16BF or 32F; CUBLAS_COMPUTE_32F_FAST_TF32: all
//            32F); "if algo is NULL, implicit heuristics query with default
//            search preferences will be performed".
//  [HEUR]    cublasLtMatmulAlgoGetHeuristic(): INVALID_VALUE "if
//            requestedAlgoCount is less or equal to zero", NOT_SUPPORTED
//            when nothing fits.
//  [TC]      "Tensor Core Usage" (cuBLAS docs 2.1.11): pointers, ld * type
//            size (ld a multiple of 8 for 16-bit types) and the rows of
//            op(A) / op(B) / C aligned to 16 bytes are the conditions "to get
//            the most performance out of Tensor Cores"; "Aside from FP8,
//            there are no longer any restrictions on matrix dimensions and
//            memory alignments to use Tensor Cores (starting with cuBLAS
//            version 11.0.0)". So a bf16 ld that is not a multiple of 8 is
//            NOT an error here (a real cuBLASLt picks another kernel); only
//            the alignment the caller promised in the preference is
//            enforced, and 16 bytes is the most any emulated algorithm needs.
//  Observed behaviour behind NOT_SUPPORTED for an operand less aligned than
//  the algorithm was chosen for: pytorch/pytorch#92201 (cublasLtMatmul
//  returned CUBLAS_STATUS_NOT_SUPPORTED on 2-byte-aligned bf16/fp16 inputs).
//  An operand outside device memory is not something cuBLASLt checks: the
//  kernel faults on the GPU, so here the queued op fails (emu::fail) and
//  makes cudaErrorIllegalAddress sticky (CUDA C++ Programming Guide, "Error
//  Checking": an illegal access corrupts the context).
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <vector>

#include "emu.h"

// The handle type is only declared in cublasLt.h; its contents are ours.
struct cublasLtContext {
  uint64_t magic;
};

namespace {

constexpr uint64_t kHandleMagic = 0x454d554c54484e44ull;  // "EMULTHND"
constexpr uint64_t kAlgoMagic = 0x454d55414c474f31ull;    // "EMUALGO1"
constexpr uint32_t kTensorCoreAlign = 16;                 // [TC]: the most any algorithm here asks for

struct Desc {
  int32_t compute;  // cublasComputeType_t
  int32_t scale;    // cudaDataType_t
  int32_t pointer_mode = CUBLASLT_POINTER_MODE_HOST;
  int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N, transc = CUBLAS_OP_N;
  int32_t fill = CUBLAS_FILL_MODE_FULL;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  int64_t bias_batch_stride = 0;
  void* aux = nullptr;
  int64_t aux_ld = 0, aux_batch_stride = 0;
  int32_t aux_type = -1, bias_type = -1;  // -1: D's type [DESC]
};

struct Layout {
  uint32_t type;
  int32_t order = CUBLASLT_ORDER_COL;
  uint64_t rows, cols;
  int64_t ld;
  int32_t batch = 1;
  int64_t stride = 0;
  int64_t plane_offset = 0;
};

struct Pref {
  uint32_t search_mode = 0;
  uint64_t max_workspace = 0;  // [PREF] default 0
  uint32_t reduction_mask = 0xffffffffu;
  uint32_t align[4] = {256, 256, 256, 256};  // [PREF] default 256
  float max_waves = 0;
  uint64_t impl_mask = ~0ull;
};

// The live objects, so that a destroyed or foreign descriptor is caught.
std::mutex g_mu;
std::set<const void*> g_live;

template <class T>
T* make_obj(T init) {
  T* p = new T(init);
  std::lock_guard<std::mutex> lk(g_mu);
  g_live.insert(p);
  return p;
}
bool live(const void* p) {
  std::lock_guard<std::mutex> lk(g_mu);
  return p && g_live.count(p);
}
bool drop(const void* p) {
  std::lock_guard<std::mutex> lk(g_mu);
  return g_live.erase(p) > 0;
}

const char* op_name(int32_t op) { return op == CUBLAS_OP_N ? "N" : op == CUBLAS_OP_T ? "T" : "C"; }
const char* type_name(int32_t t) {
  return t == CUDA_R_32F ? "fp32" : t == CUDA_R_16BF ? "bf16" : t == CUDA_R_16F ? "fp16" : "other";
}
size_t type_size(int32_t t) { return t == CUDA_R_32F ? 4 : (t == CUDA_R_16BF || t == CUDA_R_16F) ? 2 : 0; }

uint32_t pow2_align(uint64_t v) {  // largest power of two up to 256 dividing v
  uint32_t a = 256;
  while (a > 1 && v % a) a /= 2;
  return a;
}

// An attribute value of exactly the documented size [DESC] [LAYOUT] [PREF].
template <class T>
bool get_attr(const char* call, int attr, const void* buf, size_t size, T* out) {
  if (!buf || size != sizeof(T)) {
    emu::fail(call, "attribute %d: buf %p, sizeInBytes %zu, expected %zu (CUBLAS_STATUS_INVALID_VALUE)", attr, buf,
              size, sizeof(T));
    return false;
  }
  std::memcpy(out, buf, sizeof(T));
  return true;
}

// Everything one product needs, checked.
struct Problem {
  int32_t atype, ctype, compute;
  bool ta, tb;
  int64_t m, n, k;
  int64_t lda, ldb, ldc, ldd;
  int32_t batch;
  int64_t sa, sb, sc, sd;
  uint32_t epilogue;
  const void* bias;
  int32_t bias_type;
  int64_t bias_stride;
  void* aux;
  int32_t aux_type;
  int64_t aux_ld, aux_stride;
};

bool has_bias(uint32_t e) { return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS; }

// Checks what both the heuristic and cublasLtMatmul check; returns
// CUBLAS_STATUS_SUCCESS with *p filled, or the failing status (reported).
cublasStatus_t check_problem(const char* call, cublasLtMatmulDesc_t cd, cublasLtMatrixLayout_t ad,
                             cublasLtMatrixLayout_t bd, cublasLtMatrixLayout_t cdl, cublasLtMatrixLayout_t dd,
                             Problem* p) {
  if (!live(cd) || !live(ad) || !live(bd) || !live(cdl) || !live(dd)) {
    emu::fail(call, "a descriptor is null, destroyed or not from this library (desc %p, A %p, B %p, C %p, D %p) "
              "(CUBLAS_STATUS_INVALID_VALUE)", (void*)cd, (void*)ad, (void*)bd, (void*)cdl, (void*)dd);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  const Desc& d = *reinterpret_cast<const Desc*>(cd);
  const Layout *A = reinterpret_cast<const Layout*>(ad), *B = reinterpret_cast<const Layout*>(bd),
               *C = reinterpret_cast<const Layout*>(cdl), *D = reinterpret_cast<const Layout*>(dd);
  // Supported combinations: [MATMUL]'s table, restricted to what bigs uses.
  bool types_ok = d.scale == CUDA_R_32F && A->type == B->type && C->type == D->type &&
                  ((d.compute == CUBLAS_COMPUTE_32F && A->type == CUDA_R_32F && D->type == CUDA_R_32F) ||
                   (d.compute == CUBLAS_COMPUTE_32F && A->type == CUDA_R_16BF &&
                    (D->type == CUDA_R_16BF || D->type == CUDA_R_32F)) ||
                   (d.compute == CUBLAS_COMPUTE_32F_FAST_TF32 && A->type == CUDA_R_32F && D->type == CUDA_R_32F));
  if (!types_ok) {
    emu::fail(call, "type combination compute %d scale %d A %s B %s C %s D %s is not in cublasLtMatmul's table "
              "(or not emulated) (CUBLAS_STATUS_NOT_SUPPORTED)", d.compute, d.scale, type_name(A->type),
              type_name(B->type), type_name(C->type), type_name(D->type));
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  for (const Layout* l : {A, B, C, D})
    if (l->order != CUBLASLT_ORDER_COL || l->plane_offset != 0) {
      emu::fail(call, "only column-major, non-planar layouts are emulated (CUBLAS_STATUS_NOT_SUPPORTED)");
      return CUBLAS_STATUS_NOT_SUPPORTED;
    }
  if ((d.transa != CUBLAS_OP_N && d.transa != CUBLAS_OP_T) || (d.transb != CUBLAS_OP_N && d.transb != CUBLAS_OP_T) ||
      d.transc != CUBLAS_OP_N || d.fill != CUBLAS_FILL_MODE_FULL || d.pointer_mode != CUBLASLT_POINTER_MODE_HOST) {
    // TRANSC: "Currently only CUBLAS_OP_N is supported" [DESC].
    emu::fail(call, "op A %s, op B %s, op C %s, fill %d, pointer mode %d: only N/T on A and B, full fill and host "
              "scalars are emulated (CUBLAS_STATUS_NOT_SUPPORTED)", op_name(d.transa), op_name(d.transb),
              op_name(d.transc), d.fill, d.pointer_mode);
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  Problem& q = *p;
  q.atype = A->type, q.ctype = D->type, q.compute = d.compute;
  q.ta = d.transa == CUBLAS_OP_T, q.tb = d.transb == CUBLAS_OP_T;
  q.m = q.ta ? A->cols : A->rows;
  q.k = q.ta ? A->rows : A->cols;
  int64_t kb = q.tb ? B->cols : B->rows;
  q.n = q.tb ? B->rows : B->cols;
  if (kb != q.k || (int64_t)D->rows != q.m || (int64_t)D->cols != q.n || C->rows != D->rows || C->cols != D->cols) {
    emu::fail(call, "shapes disagree: op(A) %lld x %lld (op %s), op(B) %lld x %lld (op %s), C %llu x %llu, D %llu x "
              "%llu (CUBLAS_STATUS_INVALID_VALUE)", (long long)q.m, (long long)q.k, op_name(d.transa),
              (long long)kb, (long long)q.n, op_name(d.transb), (unsigned long long)C->rows,
              (unsigned long long)C->cols, (unsigned long long)D->rows, (unsigned long long)D->cols);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  const char* names = "ABCD";
  int i = 0;
  for (const Layout* l : {A, B, C, D}) {  // [LAYOUT]: ld >= rows for column-major
    if (l->ld < (int64_t)l->rows || l->ld < 1) {
      emu::fail(call, "matrix %c: leading dimension %lld < rows %llu (CUBLAS_STATUS_INVALID_VALUE)", names[i],
                (long long)l->ld, (unsigned long long)l->rows);
      return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (l->batch < 1 || l->stride < 0) {
      emu::fail(call, "matrix %c: batch count %d, batch stride %lld (CUBLAS_STATUS_INVALID_VALUE)", names[i],
                l->batch, (long long)l->stride);
      return CUBLAS_STATUS_INVALID_VALUE;
    }
    i++;
  }
  if (A->batch != D->batch || B->batch != D->batch || C->batch != D->batch) {
    emu::fail(call, "batch counts disagree: A %d, B %d, C %d, D %d (CUBLAS_STATUS_INVALID_VALUE)", A->batch, B->batch,
              C->batch, D->batch);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  q.lda = A->ld, q.ldb = B->ld, q.ldc = C->ld, q.ldd = D->ld;
  q.batch = D->batch;
  q.sa = A->stride, q.sb = B->stride, q.sc = C->stride, q.sd = D->stride;
  q.epilogue = d.epilogue;
  q.bias = d.bias, q.bias_stride = d.bias_batch_stride;
  q.bias_type = d.bias_type == -1 ? (int32_t)D->type : d.bias_type;  // [DESC] default: D's type
  q.aux = d.aux, q.aux_ld = d.aux_ld, q.aux_stride = d.aux_batch_stride;
  q.aux_type = d.aux_type == -1 ? (int32_t)D->type : d.aux_type;
  if (q.epilogue != CUBLASLT_EPILOGUE_DEFAULT && q.epilogue != CUBLASLT_EPILOGUE_BIAS &&
      q.epilogue != CUBLASLT_EPILOGUE_GELU_AUX_BIAS && q.epilogue != CUBLASLT_EPILOGUE_BGRADB) {
    emu::fail(call, "epilogue %u is not emulated (DEFAULT, BIAS, GELU_AUX_BIAS, BGRADB are) "
              "(CUBLAS_STATUS_NOT_SUPPORTED)", q.epilogue);
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (q.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    if (q.bias_type != (int32_t)D->type && q.bias_type != CUDA_R_32F) {
      emu::fail(call, "bias type %d is neither D's type nor fp32 (CUBLAS_STATUS_NOT_SUPPORTED)", q.bias_type);
      return CUBLAS_STATUS_NOT_SUPPORTED;
    }
  }
  if (q.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) {
    if (q.aux_type != (int32_t)D->type) {
      emu::fail(call, "aux type %d differs from D's (CUBLAS_STATUS_NOT_SUPPORTED)", q.aux_type);
      return CUBLAS_STATUS_NOT_SUPPORTED;
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

// The GELU_AUX_BIAS rules on the aux matrix [DESC]; false: none can run.
bool aux_ld_ok(const Problem& q, char* why, size_t why_size) {
  if (q.epilogue != CUBLASLT_EPILOGUE_GELU_AUX_BIAS) return true;
  if (q.aux_ld < q.m || q.aux_ld % 8 != 0) {
    snprintf(why, why_size, "EPILOGUE_AUX_LD %lld must be divisible by 8 and >= the rows of D (%lld)",
             (long long)q.aux_ld, (long long)q.m);
    return false;
  }
  if (q.batch > 1 && q.aux_stride % 8 != 0) {
    snprintf(why, why_size, "EPILOGUE_AUX_BATCH_STRIDE %lld must be divisible by 8", (long long)q.aux_stride);
    return false;
  }
  return true;
}

// The alignment of an operand's layout as a heuristic sees it: its ld and
// batch stride in bytes ([CAP]: the requirement covers them too).
uint32_t layout_align(int64_t ld, int64_t stride, int32_t batch, int32_t type) {
  uint64_t bytes = (uint64_t)ld * type_size(type);
  if (batch > 1) bytes |= (uint64_t)stride * type_size(type);
  return pow2_align(bytes);
}
uint32_t operand_align(const void* ptr, int64_t ld, int64_t stride, int32_t batch, int32_t type) {
  uint32_t a = layout_align(ld, stride, batch, type);
  uint32_t b = pow2_align((uint64_t)(uintptr_t)ptr);
  return a < b ? a : b;
}

// An emulated algorithm, kept in cublasLtMatmulAlgo_t's 8 words:
// [0] magic, [1] index, [2] workspace bytes, [3] required alignments of
// A, B, C, D (a byte each), [4] of bias and aux.
struct AlgoReq {
  uint64_t index = 0, workspace = 0;
  uint32_t align[4] = {0, 0, 0, 0};
  uint32_t bias_align = 0, aux_align = 0;
};
void pack(const AlgoReq& r, cublasLtMatmulAlgo_t* a) {
  std::memset(a, 0, sizeof *a);
  a->data[0] = kAlgoMagic;
  a->data[1] = r.index;
  a->data[2] = r.workspace;
  a->data[3] = r.align[0] | r.align[1] << 8 | r.align[2] << 16 | (uint64_t)r.align[3] << 24;
  a->data[4] = r.bias_align | r.aux_align << 8;
}
bool unpack(const cublasLtMatmulAlgo_t* a, AlgoReq* r) {
  if (a->data[0] != kAlgoMagic) return false;
  r->index = a->data[1];
  r->workspace = a->data[2];
  for (int i = 0; i < 4; i++) r->align[i] = (a->data[3] >> (8 * i)) & 0xff;
  r->bias_align = a->data[4] & 0xff, r->aux_align = (a->data[4] >> 8) & 0xff;
  return true;
}

// The candidates for a problem under preference pr: each needs the
// alignment the caller promised for an operand (capped at what a tensor-core
// kernel asks for [TC], and at what the layout allows [CAP]), and the bias /
// aux alignment their pointers have now [DESC]. Candidate 0 uses workspace
// (a split-K reduction) when the preference allows 1 MiB, candidate 1 none.
// Returns the count (0: nothing fits; why says what).
int candidates(const Problem& q, const Pref& pr, AlgoReq out[2], char* why, size_t why_size) {
  if (!aux_ld_ok(q, why, why_size)) return 0;
  int32_t types[4] = {q.atype, q.atype, q.ctype, q.ctype};
  int64_t lds[4] = {q.lda, q.ldb, q.ldc, q.ldd}, strides[4] = {q.sa, q.sb, q.sc, q.sd};
  AlgoReq r;
  for (int i = 0; i < 4; i++) {
    uint32_t a = pr.align[i] < kTensorCoreAlign ? pr.align[i] : kTensorCoreAlign;
    uint32_t l = layout_align(lds[i], strides[i], q.batch, types[i]);
    if (l < a) a = l;
    if (a < type_size(types[i])) {  // no kernel reads misaligned elements
      snprintf(why, why_size, "matrix %c: minimum alignment %u bytes is below its %s element size", "ABCD"[i],
               pr.align[i], type_name(types[i]));
      return 0;
    }
    r.align[i] = a;
  }
  if (has_bias(q.epilogue) || q.epilogue == CUBLASLT_EPILOGUE_BGRADB) {
    uint32_t b = pow2_align((uint64_t)(uintptr_t)q.bias);
    r.bias_align = b < kTensorCoreAlign ? b : kTensorCoreAlign;
  }
  if (q.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) {
    uint32_t b = pow2_align((uint64_t)(uintptr_t)q.aux);
    r.aux_align = b < kTensorCoreAlign ? b : kTensorCoreAlign;
  }
  int count = 0;
  if (pr.max_workspace >= (1u << 20)) {
    out[count] = r;
    out[count].index = count;
    out[count].workspace = 1u << 20;
    count++;
  }
  out[count] = r;
  out[count].index = count;
  out[count].workspace = 0;
  return count + 1;
}

// Element access, with the conversions cuda_bf16.h defines.
inline float load(const char* base, int32_t type, int64_t i) {
  if (type == CUDA_R_32F) {
    float v;
    std::memcpy(&v, base + 4 * i, 4);
    return v;
  }
  __nv_bfloat16 h;
  std::memcpy(&h, base + 2 * i, 2);
  return __bfloat162float(h);
}
inline void store(char* base, int32_t type, int64_t i, float v) {
  if (type == CUDA_R_32F) {
    std::memcpy(base + 4 * i, &v, 4);
    return;
  }
  __nv_bfloat16 h = __float2bfloat16(v);  // round to nearest even
  std::memcpy(base + 2 * i, &h, 2);
}

// TF32: keep 10 explicit mantissa bits, rounding to nearest with ties away
// from zero, as PTX's cvt.rna.tf32.f32 does (PTX ISA, "cvt").
inline float tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) {  // finite
    u += 0x1000u;
    u &= ~0x1fffu;
  }
  std::memcpy(&x, &u, 4);
  return x;
}

inline float gelu_tanh(float x) {  // [EPI]: GELU in its tanh approximation
  const float c = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * x * (1.0f + std::tanh(c * (x + 0.044715f * x * x * x)));
}

// Bytes an operand spans: the last element of the last matrix, plus one.
size_t extent(int64_t rows, int64_t cols, int64_t ld, int32_t batch, int64_t stride, int32_t type) {
  if (rows == 0 || cols == 0) return 0;
  int64_t last = (cols - 1) * ld + (rows - 1) + (int64_t)(batch - 1) * stride;
  return (size_t)(last + 1) * type_size(type);
}

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  if (!h) {
    emu::fail("cublasLtCreate", "null handle pointer (CUBLAS_STATUS_INVALID_VALUE)");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  *h = make_obj(cublasLtContext{kHandleMagic});
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
  if (!h || !drop(h)) {
    emu::fail("cublasLtDestroy", "handle %p is not a live cuBLASLt handle (CUBLAS_STATUS_NOT_INITIALIZED)", (void*)h);
    return CUBLAS_STATUS_NOT_INITIALIZED;
  }
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasLtGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasLtGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "error detected trying to check the license";
  }
  return "unknown error";
}

// --- matmul descriptor
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  if (!desc) {
    emu::fail("cublasLtMatmulDescCreate", "null descriptor pointer (CUBLAS_STATUS_INVALID_VALUE)");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  Desc d;
  d.compute = compute, d.scale = scale;
  *desc = reinterpret_cast<cublasLtMatmulDesc_t>(make_obj(d));
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  if (!desc) return CUBLAS_STATUS_SUCCESS;
  if (!drop(desc)) {
    emu::fail("cublasLtMatmulDescDestroy", "%p is not a live descriptor (CUBLAS_STATUS_INVALID_VALUE)", (void*)desc);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  delete reinterpret_cast<Desc*>(desc);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  const char* call = "cublasLtMatmulDescSetAttribute";
  if (!live(desc)) {
    emu::fail(call, "%p is not a live descriptor (CUBLAS_STATUS_INVALID_VALUE)", (void*)desc);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  Desc& d = *reinterpret_cast<Desc*>(desc);
  bool ok;
  // Each attribute with the type [DESC] gives it.
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: ok = get_attr(call, attr, buf, size, &d.compute); break;
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: ok = get_attr(call, attr, buf, size, &d.scale); break;
    case CUBLASLT_MATMUL_DESC_POINTER_MODE: ok = get_attr(call, attr, buf, size, &d.pointer_mode); break;
    case CUBLASLT_MATMUL_DESC_TRANSA: ok = get_attr(call, attr, buf, size, &d.transa); break;
    case CUBLASLT_MATMUL_DESC_TRANSB: ok = get_attr(call, attr, buf, size, &d.transb); break;
    case CUBLASLT_MATMUL_DESC_TRANSC: ok = get_attr(call, attr, buf, size, &d.transc); break;
    case CUBLASLT_MATMUL_DESC_FILL_MODE: ok = get_attr(call, attr, buf, size, &d.fill); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: ok = get_attr(call, attr, buf, size, &d.epilogue); break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: ok = get_attr(call, attr, buf, size, &d.bias); break;
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE: ok = get_attr(call, attr, buf, size, &d.bias_batch_stride); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: ok = get_attr(call, attr, buf, size, &d.aux); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: ok = get_attr(call, attr, buf, size, &d.aux_ld); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE:
      ok = get_attr(call, attr, buf, size, &d.aux_batch_stride);
      break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE: ok = get_attr(call, attr, buf, size, &d.aux_type); break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: ok = get_attr(call, attr, buf, size, &d.bias_type); break;
    default:
      emu::fail(call, "attribute %d is not emulated (CUBLAS_STATUS_NOT_SUPPORTED)", (int)attr);
      return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

// --- matrix layouts
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (!layout) {
    emu::fail("cublasLtMatrixLayoutCreate", "null layout pointer (CUBLAS_STATUS_INVALID_VALUE)");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  Layout l;
  l.type = type, l.rows = rows, l.cols = cols, l.ld = ld;
  *layout = reinterpret_cast<cublasLtMatrixLayout_t>(make_obj(l));
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  if (!layout) return CUBLAS_STATUS_SUCCESS;
  if (!drop(layout)) {
    emu::fail("cublasLtMatrixLayoutDestroy", "%p is not a live layout (CUBLAS_STATUS_INVALID_VALUE)", (void*)layout);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  delete reinterpret_cast<Layout*>(layout);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t size) {
  const char* call = "cublasLtMatrixLayoutSetAttribute";
  if (!live(layout)) {
    emu::fail(call, "%p is not a live layout (CUBLAS_STATUS_INVALID_VALUE)", (void*)layout);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  Layout& l = *reinterpret_cast<Layout*>(layout);
  bool ok;
  switch (attr) {  // types per [LAYOUT]
    case CUBLASLT_MATRIX_LAYOUT_TYPE: ok = get_attr(call, attr, buf, size, &l.type); break;
    case CUBLASLT_MATRIX_LAYOUT_ORDER: ok = get_attr(call, attr, buf, size, &l.order); break;
    case CUBLASLT_MATRIX_LAYOUT_ROWS: ok = get_attr(call, attr, buf, size, &l.rows); break;
    case CUBLASLT_MATRIX_LAYOUT_COLS: ok = get_attr(call, attr, buf, size, &l.cols); break;
    case CUBLASLT_MATRIX_LAYOUT_LD: ok = get_attr(call, attr, buf, size, &l.ld); break;
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: ok = get_attr(call, attr, buf, size, &l.batch); break;
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: ok = get_attr(call, attr, buf, size, &l.stride); break;
    case CUBLASLT_MATRIX_LAYOUT_PLANE_OFFSET: ok = get_attr(call, attr, buf, size, &l.plane_offset); break;
    default:
      emu::fail(call, "attribute %d is not emulated (CUBLAS_STATUS_NOT_SUPPORTED)", (int)attr);
      return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

// --- heuristic preferences
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  if (!pref) {
    emu::fail("cublasLtMatmulPreferenceCreate", "null preference pointer (CUBLAS_STATUS_INVALID_VALUE)");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  *pref = reinterpret_cast<cublasLtMatmulPreference_t>(make_obj(Pref{}));
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  if (!pref) return CUBLAS_STATUS_SUCCESS;
  if (!drop(pref)) {
    emu::fail("cublasLtMatmulPreferenceDestroy", "%p is not a live preference (CUBLAS_STATUS_INVALID_VALUE)",
              (void*)pref);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  delete reinterpret_cast<Pref*>(pref);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t size) {
  const char* call = "cublasLtMatmulPreferenceSetAttribute";
  if (!live(pref)) {
    emu::fail(call, "%p is not a live preference (CUBLAS_STATUS_INVALID_VALUE)", (void*)pref);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  Pref& p = *reinterpret_cast<Pref*>(pref);
  bool ok;
  switch (attr) {  // types per [PREF]
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE: ok = get_attr(call, attr, buf, size, &p.search_mode); break;
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: ok = get_attr(call, attr, buf, size, &p.max_workspace); break;
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK: ok = get_attr(call, attr, buf, size, &p.reduction_mask); break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: ok = get_attr(call, attr, buf, size, &p.align[0]); break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: ok = get_attr(call, attr, buf, size, &p.align[1]); break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: ok = get_attr(call, attr, buf, size, &p.align[2]); break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: ok = get_attr(call, attr, buf, size, &p.align[3]); break;
    case CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT: ok = get_attr(call, attr, buf, size, &p.max_waves); break;
    case CUBLASLT_MATMUL_PREF_IMPL_MASK: ok = get_attr(call, attr, buf, size, &p.impl_mask); break;
    default:
      emu::fail(call, "attribute %d is not emulated (CUBLAS_STATUS_NOT_SUPPORTED)", (int)attr);
      return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

// --- the heuristic [HEUR]
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t ad, cublasLtMatrixLayout_t bd,
                                              cublasLtMatrixLayout_t cd, cublasLtMatrixLayout_t dd,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* count) {
  const char* call = "cublasLtMatmulAlgoGetHeuristic";
  if (!live(h)) {
    emu::fail(call, "handle %p is not a live cuBLASLt handle (CUBLAS_STATUS_NOT_INITIALIZED)", (void*)h);
    return CUBLAS_STATUS_NOT_INITIALIZED;
  }
  if (requested <= 0 || !results || !count || !live(pref)) {
    emu::fail(call, "requestedAlgoCount %d, results %p, returnAlgoCount %p, preference %p "
              "(CUBLAS_STATUS_INVALID_VALUE)", requested, (void*)results, (void*)count, (void*)pref);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  *count = 0;
  Problem q;
  cublasStatus_t st = check_problem(call, desc, ad, bd, cd, dd, &q);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  AlgoReq c[2];
  char why[256] = "";
  int n = candidates(q, *reinterpret_cast<const Pref*>(pref), c, why, sizeof why);
  if (n == 0) {
    // An answer, not an error: nothing fits (bigs then runs its own
    // kernels). Said on stderr, not counted as a failure.
    fprintf(stderr, "emu: %s: no algorithm fits: %s (CUBLAS_STATUS_NOT_SUPPORTED)\n", call, why);
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  for (int i = 0; i < n && i < requested; i++) {
    std::memset(&results[i], 0, sizeof results[i]);
    pack(c[i], &results[i].algo);
    results[i].workspaceSize = c[i].workspace;
    results[i].state = CUBLAS_STATUS_SUCCESS;
    results[i].wavesCount = 1.0f;
    ++*count;
  }
  return CUBLAS_STATUS_SUCCESS;
}

// --- the product [MATMUL]
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t desc, const void* alpha_p, const void* A,
                              cublasLtMatrixLayout_t ad, const void* B, cublasLtMatrixLayout_t bd,
                              const void* beta_p, const void* C, cublasLtMatrixLayout_t cd, void* D,
                              cublasLtMatrixLayout_t dd, const cublasLtMatmulAlgo_t* algo, void* workspace,
                              size_t workspace_size, cudaStream_t stream) {
  const char* call = "cublasLtMatmul";
  if (!live(h)) {
    emu::fail(call, "handle %p is not a live cuBLASLt handle (CUBLAS_STATUS_NOT_INITIALIZED)", (void*)h);
    return CUBLAS_STATUS_NOT_INITIALIZED;
  }
  Problem q;
  cublasStatus_t st = check_problem(call, desc, ad, bd, cd, dd, &q);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  if (!alpha_p || !beta_p) {
    emu::fail(call, "alpha %p, beta %p: host scalars required (CUBLAS_STATUS_INVALID_VALUE)", alpha_p, beta_p);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  const float alpha = *static_cast<const float*>(alpha_p), beta = *static_cast<const float*>(beta_p);
  char why[256] = "";
  if (!aux_ld_ok(q, why, sizeof why)) {  // [DESC]
    emu::fail(call, "%s (CUBLAS_STATUS_INVALID_VALUE)", why);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  AlgoReq r;
  if (algo) {
    if (!unpack(algo, &r)) {
      emu::fail(call, "the algorithm is not one cublasLtMatmulAlgoGetHeuristic returned (CUBLAS_STATUS_INVALID_VALUE)");
      return CUBLAS_STATUS_INVALID_VALUE;
    }
  } else {  // [MATMUL]: an implicit heuristic query with the default preferences
    AlgoReq c[2];
    if (candidates(q, Pref{}, c, why, sizeof why) == 0) {
      emu::fail(call, "no algorithm for the implicit heuristic query: %s (CUBLAS_STATUS_NOT_SUPPORTED)", why);
      return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    r = c[0];
  }
  if (workspace_size < r.workspace) {  // [MATMUL], the example its text gives
    emu::fail(call, "workspaceSizeInBytes %zu is less than the %llu bytes the algorithm needs "
              "(CUBLAS_STATUS_INVALID_VALUE)", workspace_size, (unsigned long long)r.workspace);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (beta != 0 && !C) {
    emu::fail(call, "beta %g with a null C (CUBLAS_STATUS_INVALID_VALUE)", beta);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  // Alignment against what the algorithm was chosen for ([PREF], [CAP],
  // pytorch#92201): pointer, ld and batch stride together.
  const void* ptrs[4] = {A, B, C ? C : D, D};
  int32_t types[4] = {q.atype, q.atype, q.ctype, q.ctype};
  int64_t lds[4] = {q.lda, q.ldb, q.ldc, q.ldd}, strides[4] = {q.sa, q.sb, q.sc, q.sd};
  for (int i = 0; i < 4; i++) {
    uint32_t have = operand_align(ptrs[i], lds[i], strides[i], q.batch, types[i]);
    if (have < r.align[i]) {
      emu::fail(call, "matrix %c (%s, %p, ld %lld, batch stride %lld) is %u-byte aligned; the algorithm was chosen "
                "for %u (the preference's CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_%c_BYTES) (CUBLAS_STATUS_NOT_SUPPORTED)",
                "ABCD"[i], type_name(types[i]), ptrs[i], (long long)lds[i], (long long)strides[i], have, r.align[i],
                "ABCD"[i]);
      return CUBLAS_STATUS_NOT_SUPPORTED;
    }
  }
  if (q.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    if (!q.bias) {
      emu::fail(call, "epilogue %u without CUBLASLT_MATMUL_DESC_BIAS_POINTER (CUBLAS_STATUS_INVALID_VALUE)",
                q.epilogue);
      return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (pow2_align((uint64_t)(uintptr_t)q.bias) < r.bias_align) {  // [DESC]: alignment fixed at the heuristic
      emu::fail(call, "bias %p is less aligned than the %u bytes its pointer had at the heuristic query "
                "(CUBLAS_STATUS_NOT_SUPPORTED)", q.bias, r.bias_align);
      return CUBLAS_STATUS_NOT_SUPPORTED;
    }
  }
  if (q.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) {
    if (!q.aux) {
      emu::fail(call, "GELU_AUX_BIAS without CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER (CUBLAS_STATUS_INVALID_VALUE)");
      return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (pow2_align((uint64_t)(uintptr_t)q.aux) < r.aux_align) {
      emu::fail(call, "aux %p is less aligned than the %u bytes its pointer had at the heuristic query "
                "(CUBLAS_STATUS_NOT_SUPPORTED)", q.aux, r.aux_align);
      return CUBLAS_STATUS_NOT_SUPPORTED;
    }
  }
  if (q.m == 0 || q.n == 0) return CUBLAS_STATUS_SUCCESS;
  const uint64_t ws_need = r.workspace;
  // The work, as the kernels would do it, when the stream gets there.
  emu::enqueue(stream, call, [q, alpha, beta, A, B, C, D, workspace, ws_need]() {
    const char* call = "cublasLtMatmul";
    int64_t ar = q.ta ? q.k : q.m, ac = q.ta ? q.m : q.k, br = q.tb ? q.n : q.k, bc = q.tb ? q.k : q.n;
    struct Span {
      const char* what;
      const void* p;
      size_t bytes;
    };
    std::vector<Span> spans = {{"A", A, extent(ar, ac, q.lda, q.batch, q.sa, q.atype)},
                               {"B", B, extent(br, bc, q.ldb, q.batch, q.sb, q.atype)},
                               {"D", D, extent(q.m, q.n, q.ldd, q.batch, q.sd, q.ctype)}};
    if (beta != 0) spans.push_back({"C", C, extent(q.m, q.n, q.ldc, q.batch, q.sc, q.ctype)});
    int64_t nbias = q.epilogue == CUBLASLT_EPILOGUE_BGRADB ? q.n : q.m;  // [EPI], [DESC]
    if (q.epilogue != CUBLASLT_EPILOGUE_DEFAULT)
      spans.push_back({"bias", q.bias,
                       (size_t)(nbias + (q.batch - 1) * q.bias_stride) * type_size(q.bias_type)});
    if (q.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS)
      spans.push_back({"aux", q.aux, extent(q.m, q.n, q.aux_ld, q.batch, q.aux_stride, q.aux_type)});
    if (ws_need) spans.push_back({"workspace", workspace, (size_t)ws_need});
    for (const Span& s : spans)
      if (s.bytes && !emu::in_device(s.p, s.bytes)) {
        // Not checked by cuBLASLt: its kernel faults.
        emu::fail(call, "operand %s [%p, +%zu bytes) is not inside one device allocation: the kernel faults "
                  "(cudaErrorIllegalAddress)", s.what, s.p, s.bytes);
        emu::set_sticky(cudaErrorIllegalAddress);
        return;
      }
    const char *a = static_cast<const char*>(A), *b = static_cast<const char*>(B);
    const char* c = static_cast<const char*>(C);
    char* d = static_cast<char*>(D);
    const bool round_tf32 = q.compute == CUBLAS_COMPUTE_32F_FAST_TF32;
    std::vector<float> opa((size_t)q.m * q.k), opb((size_t)q.k * q.n), acc((size_t)q.m * q.n);
    for (int32_t bt = 0; bt < q.batch; bt++) {
      const char* ab = a + (size_t)(bt * q.sa) * type_size(q.atype);
      const char* bb = b + (size_t)(bt * q.sb) * type_size(q.atype);
      // op(A) (m, k) and op(B) (k, n), row-major here; element (r, c) of a
      // stored column-major matrix is at r + c ld.
      for (int64_t i = 0; i < q.m; i++)
        for (int64_t p = 0; p < q.k; p++) {
          float v = q.ta ? load(ab, q.atype, p + i * q.lda) : load(ab, q.atype, i + p * q.lda);
          opa[i * q.k + p] = round_tf32 ? tf32(v) : v;
        }
      for (int64_t p = 0; p < q.k; p++)
        for (int64_t j = 0; j < q.n; j++) {
          float v = q.tb ? load(bb, q.atype, j + p * q.ldb) : load(bb, q.atype, p + j * q.ldb);
          opb[p * q.n + j] = round_tf32 ? tf32(v) : v;
        }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t i = 0; i < q.m; i++)  // fp32 accumulation
        for (int64_t p = 0; p < q.k; p++) {
          float x = opa[i * q.k + p];
          const float* row = &opb[p * q.n];
          float* out = &acc[i * q.n];
          for (int64_t j = 0; j < q.n; j++) out[j] += x * row[j];
        }
      char* db = d + (size_t)(bt * q.sd) * type_size(q.ctype);
      const char* cb = c ? c + (size_t)(bt * q.sc) * type_size(q.ctype) : nullptr;
      const char* biasb = static_cast<const char*>(q.bias) + (size_t)(bt * q.bias_stride) * type_size(q.bias_type);
      char* auxb = static_cast<char*>(q.aux) + (size_t)(bt * q.aux_stride) * type_size(q.aux_type);
      for (int64_t j = 0; j < q.n; j++)
        for (int64_t i = 0; i < q.m; i++) {
          // beta == 0: C is not read (it may hold anything, NaN included).
          float v = alpha * acc[i * q.n + j];
          if (beta != 0) v += beta * load(cb, q.ctype, i + j * q.ldc);
          if (has_bias(q.epilogue)) v += load(biasb, q.bias_type, i);
          if (q.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) {
            store(auxb, q.aux_type, i + j * q.aux_ld, v);  // the GELU input [EPI]
            v = gelu_tanh(v);
          }
          store(db, q.ctype, i + j * q.ldd, v);
        }
      if (q.epilogue == CUBLASLT_EPILOGUE_BGRADB) {  // bias[j] = sum over k of op(B)[p][j]
        char* gb = const_cast<char*>(biasb);
        for (int64_t j = 0; j < q.n; j++) {
          float s = 0;
          for (int64_t p = 0; p < q.k; p++)
            s += q.tb ? load(bb, q.atype, j + p * q.ldb) : load(bb, q.atype, p + j * q.ldb);
          store(gb, q.bias_type, j, s);
        }
      }
    }
    if (ws_need) std::memset(workspace, 0xa5, (size_t)ws_need);  // what a split-K leaves there
  });
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
