// test_emu_libs.cpp: the emulated cuBLASLt and cuFFT (test/emu/cublaslt.cpp,
// test/emu/cufft.cpp) against numpy, and their strictness rules with planted
// bugs. GoogleTest; `make test-emu-libs` runs it and then
// dev/test_emu_libs.py, which recomputes every product and transform this
// program wrote (inputs and the emulator's outputs, in $EMU_LIBS_OUT,
// default build/emu_libs) with numpy, independently.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <cufft.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "emu/emu.h"

namespace {

std::string out_dir() {
  const char* d = getenv("EMU_LIBS_OUT");
  return d && *d ? d : "build/emu_libs";
}

void write_file(const std::string& name, const void* p, size_t bytes) {
  std::ofstream f(out_dir() + "/" + name, std::ios::binary);
  f.write(static_cast<const char*>(p), (std::streamsize)bytes);
  ASSERT_TRUE(f.good()) << name;
}

void manifest(const std::string& line) {
  std::ofstream f(out_dir() + "/manifest.txt", std::ios::app);
  f << line << "\n";
}

size_t tsize(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }
const char* tname(cudaDataType_t t) { return t == CUDA_R_32F ? "f32" : "bf16"; }

// n elements of type t, random in [-1, 1), as bytes.
std::vector<char> random_bytes(std::mt19937& rng, cudaDataType_t t, size_t n) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<char> b(n * tsize(t));
  for (size_t i = 0; i < n; i++) {
    float v = u(rng);
    if (t == CUDA_R_32F) {
      std::memcpy(&b[4 * i], &v, 4);
    } else {
      __nv_bfloat16 h = __float2bfloat16(v);
      std::memcpy(&b[2 * i], &h, 2);
    }
  }
  return b;
}

void* upload(const std::vector<char>& b) {
  void* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, b.size() ? b.size() : 1), cudaSuccess);
  if (!b.empty()) {
    EXPECT_EQ(cudaMemcpy(d, b.data(), b.size(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  return d;
}
std::vector<char> download(const void* d, size_t bytes) {
  std::vector<char> b(bytes);
  EXPECT_EQ(cudaMemcpy(b.data(), d, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  return b;
}

uint32_t align_of(const void* p, int64_t ld, int64_t stride, size_t elem) {  // as dev/cuda/lab.h computes it
  uint64_t a = (uint64_t)(uintptr_t)p | (uint64_t)ld * elem | (uint64_t)stride * elem;
  uint32_t al = 256;
  while (al > 1 && a % al) al /= 2;
  return al;
}

size_t extent(int64_t rows, int64_t cols, int64_t ld, int batch, int64_t stride) {  // elements
  return (size_t)((cols - 1) * ld + rows + (int64_t)(batch - 1) * stride);
}

#define LT(call) ASSERT_EQ((call), CUBLAS_STATUS_SUCCESS) << #call

// One product, in cuBLASLt's column-major terms.
struct Gemm {
  std::string name;
  cudaDataType_t ab = CUDA_R_32F, cd = CUDA_R_32F;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  bool ta = false, tb = false;
  int m = 1, n = 1, k = 1;
  int64_t lda = 0, ldb = 0, ldd = 0;  // 0: the rows
  int batch = 1;
  int64_t sa = 0, sb = 0, sd = 0;     // batch strides (elements)
  float alpha = 1, beta = 0;
  bool c_is_d = true;                 // C = D (bigs' way); else a separate C
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  cudaDataType_t bias_type = CUDA_R_32F;  // when bias_type_set
  bool bias_type_set = false;
  bool ties = false;  // A's fp32 values exactly halfway between two TF32 values
};

// Runs g through the emulator (heuristic, then the first candidate) and
// writes its inputs and outputs for dev/test_emu_libs.py.
void run_gemm(Gemm g, cublasLtHandle_t lt, cudaStream_t stream, std::mt19937& rng) {
  SCOPED_TRACE(g.name);
  int64_t ar = g.ta ? g.k : g.m, ac = g.ta ? g.m : g.k, br = g.tb ? g.n : g.k, bc = g.tb ? g.k : g.n;
  if (!g.lda) g.lda = ar;
  if (!g.ldb) g.ldb = br;
  if (!g.ldd) g.ldd = g.m;
  int64_t ld_aux = (g.m + 7) / 8 * 8;  // the documented rule: a multiple of 8, >= rows
  int64_t s_aux = ld_aux * g.n;
  size_t na = extent(ar, ac, g.lda, g.batch, g.sa), nb = extent(br, bc, g.ldb, g.batch, g.sb),
         nd = extent(g.m, g.n, g.ldd, g.batch, g.sd), naux = extent(g.m, g.n, ld_aux, g.batch, s_aux);
  bool bgrad = g.epi == CUBLASLT_EPILOGUE_BGRADB;
  cudaDataType_t bt = g.bias_type_set ? g.bias_type : g.cd;
  size_t nbias = bgrad ? g.n : g.m;
  std::vector<char> A = random_bytes(rng, g.ab, na), B = random_bytes(rng, g.ab, nb), C = random_bytes(rng, g.cd, nd),
                    bias = random_bytes(rng, bt, nbias);
  if (g.ties) {  // +-(1 + j 2^-10 + 2^-11) 2^e: TF32 rounding must break the tie (away from zero)
    std::uniform_int_distribution<int> mant(0, 1023), ex(-2, 1), sign(0, 1);
    for (size_t i = 0; i < na; i++) {
      float v = std::ldexp((1.0f + mant(rng) * 0x1p-10f + 0x1p-11f) * (sign(rng) ? -1.0f : 1.0f), ex(rng));
      std::memcpy(&A[4 * i], &v, 4);
    }
  }
  void *dA = upload(A), *dB = upload(B), *dC = upload(C), *dbias = upload(bias);
  void* dD = g.c_is_d ? dC : nullptr;
  if (!g.c_is_d) {
    ASSERT_EQ(cudaMalloc(&dD, nd * tsize(g.cd)), cudaSuccess);  // poisoned: what is not written shows
  }
  std::vector<char> D0 = download(dD, nd * tsize(g.cd));
  void* daux = nullptr;
  ASSERT_EQ(cudaMalloc(&daux, naux * tsize(g.cd)), cudaSuccess);
  void* ws = nullptr;
  size_t ws_size = 4u << 20;
  ASSERT_EQ(cudaMalloc(&ws, ws_size), cudaSuccess);

  cublasLtMatmulDesc_t desc;
  LT(cublasLtMatmulDescCreate(&desc, g.compute, CUDA_R_32F));
  cublasOperation_t opa = g.ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = g.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
  LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
  LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &g.epi, sizeof g.epi));
  if (g.epi != CUBLASLT_EPILOGUE_DEFAULT) {
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &dbias, sizeof dbias));
    if (g.bias_type_set) {
      LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &g.bias_type, sizeof g.bias_type));
    }
  }
  if (g.epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) {
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &daux, sizeof daux));
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld_aux, sizeof ld_aux));
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, &s_aux, sizeof s_aux));
  }
  cublasLtMatrixLayout_t la, lb, lc, ld;
  LT(cublasLtMatrixLayoutCreate(&la, g.ab, ar, ac, g.lda));
  LT(cublasLtMatrixLayoutCreate(&lb, g.ab, br, bc, g.ldb));
  LT(cublasLtMatrixLayoutCreate(&lc, g.cd, g.m, g.n, g.ldd));
  LT(cublasLtMatrixLayoutCreate(&ld, g.cd, g.m, g.n, g.ldd));
  if (g.batch > 1) {
    std::pair<cublasLtMatrixLayout_t, int64_t> bl[4] = {{la, g.sa}, {lb, g.sb}, {lc, g.sd}, {ld, g.sd}};
    for (auto& [l, s] : bl) {
      LT(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &g.batch, sizeof g.batch));
      LT(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &s, sizeof s));
    }
  }
  cublasLtMatmulPreference_t pref;
  LT(cublasLtMatmulPreferenceCreate(&pref));
  uint64_t wsz = ws_size;
  LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof wsz));
  uint32_t al[4] = {align_of(dA, g.lda, g.sa, tsize(g.ab)), align_of(dB, g.ldb, g.sb, tsize(g.ab)),
                    align_of(dC, g.ldd, g.sd, tsize(g.cd)), align_of(dD, g.ldd, g.sd, tsize(g.cd))};
  cublasLtMatmulPreferenceAttributes_t which[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; i++) LT(cublasLtMatmulPreferenceSetAttribute(pref, which[i], &al[i], sizeof al[i]));
  cublasLtMatmulHeuristicResult_t heur[4];
  int count = 0;
  LT(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, ld, pref, 4, heur, &count));
  ASSERT_GE(count, 1);
  int before = emu::failures();
  LT(cublasLtMatmul(lt, desc, &g.alpha, dA, la, dB, lb, &g.beta, dC, lc, dD, ld, &heur[0].algo, ws, ws_size,
                    stream));
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(emu::failures(), before);
  std::vector<char> D = download(dD, nd * tsize(g.cd)), aux = download(daux, naux * tsize(g.cd)),
                    bias_out = download(dbias, nbias * tsize(bt));
  write_file(g.name + ".A", A.data(), A.size());
  write_file(g.name + ".B", B.data(), B.size());
  write_file(g.name + ".C", C.data(), C.size());
  write_file(g.name + ".D0", D0.data(), D0.size());
  write_file(g.name + ".D", D.data(), D.size());
  write_file(g.name + ".bias", bias.data(), bias.size());
  write_file(g.name + ".bias_out", bias_out.data(), bias_out.size());
  write_file(g.name + ".aux", aux.data(), aux.size());
  char line[1024];
  snprintf(line, sizeof line,
           "gemm name=%s ab=%s cd=%s bias=%s compute=%s ta=%d tb=%d m=%d n=%d k=%d lda=%lld ldb=%lld ldd=%lld "
           "batch=%d sa=%lld sb=%lld sd=%lld alpha=%.9g beta=%.9g c_is_d=%d epi=%s ld_aux=%lld s_aux=%lld",
           g.name.c_str(), tname(g.ab), tname(g.cd), tname(bt),
           g.compute == CUBLAS_COMPUTE_32F_FAST_TF32 ? "tf32" : "f32", g.ta, g.tb, g.m, g.n, g.k, (long long)g.lda,
           (long long)g.ldb, (long long)g.ldd, g.batch, (long long)g.sa, (long long)g.sb, (long long)g.sd, g.alpha,
           g.beta, g.c_is_d,
           g.epi == CUBLASLT_EPILOGUE_BIAS            ? "bias"
           : g.epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ? "gelu_aux_bias"
           : g.epi == CUBLASLT_EPILOGUE_BGRADB        ? "bgradb"
                                                      : "default",
           (long long)ld_aux, (long long)s_aux);
  manifest(line);
  LT(cublasLtMatmulPreferenceDestroy(pref));
  for (auto l : {la, lb, lc, ld}) LT(cublasLtMatrixLayoutDestroy(l));
  LT(cublasLtMatmulDescDestroy(desc));
  for (void* p : {dA, dB, dbias, daux, ws}) EXPECT_EQ(cudaFree(p), cudaSuccess);
  EXPECT_EQ(cudaFree(dC), cudaSuccess);
  if (!g.c_is_d) {
    EXPECT_EQ(cudaFree(dD), cudaSuccess);
  }
}

class EmuLibs : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
    ASSERT_EQ(cublasLtCreate(&lt), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(system(("mkdir -p " + out_dir()).c_str()), 0);
  }
  void TearDown() override {
    EXPECT_EQ(cublasLtDestroy(lt), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  }
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
};

// A fresh manifest for this run (the first test in the file).
TEST(EmuLibsSetup, FreshOutput) {
  ASSERT_EQ(system(("mkdir -p " + out_dir() + " && rm -f " + out_dir() + "/manifest.txt").c_str()), 0);
}

TEST_F(EmuLibs, GemmAgainstNumpy) {
  std::mt19937 rng(1234);
  std::vector<Gemm> cases;
  auto add = [&](Gemm g) { cases.push_back(g); };
  Gemm g;
  // Plain shapes, every transpose pair, ld larger than the rows.
  g = Gemm{}, g.name = "f32_nn_3x5x7", g.m = 3, g.n = 5, g.k = 7, add(g);
  g = Gemm{}, g.name = "f32_tn_17x5x33", g.ta = true, g.m = 17, g.n = 5, g.k = 33, g.lda = 40, add(g);
  g = Gemm{}, g.name = "f32_nt_7x17x3", g.tb = true, g.m = 7, g.n = 17, g.k = 3, g.ldb = 19, g.ldd = 9, add(g);
  g = Gemm{}, g.name = "f32_tt_33x7x17", g.ta = g.tb = true, g.m = 33, g.n = 7, g.k = 17, g.lda = 21, g.ldb = 8,
  g.ldd = 35, add(g);
  // alpha, beta with a separate C; beta = 1 in place (bigs accumulates so).
  g = Gemm{}, g.name = "f32_ab_sepC", g.m = 5, g.n = 7, g.k = 3, g.alpha = 0.5f, g.beta = 0.25f, g.c_is_d = false,
  g.ldd = 6, add(g);
  g = Gemm{}, g.name = "f32_accumulate", g.ta = true, g.m = 17, g.n = 3, g.k = 5, g.beta = 1.0f, add(g);
  // Strided batches: padded strides, a broadcast B (stride 0), D padded.
  g = Gemm{}, g.name = "f32_batch3", g.m = 5, g.n = 3, g.k = 7, g.batch = 3, g.sa = 5 * 7 + 4, g.sb = 0, g.sd = 17,
  g.ldd = 5, add(g);
  g = Gemm{}, g.name = "bf16_batch3_tn", g.ab = g.cd = CUDA_R_16BF, g.ta = true, g.m = 7, g.n = 5, g.k = 3,
  g.batch = 3, g.sa = 24, g.sb = 16, g.sd = 40, g.ldd = 8, add(g);
  // bf16 inputs, bf16 or fp32 outputs (odd ld: not an error, see cublaslt.cpp [TC]).
  g = Gemm{}, g.name = "bf16_bf16_nt", g.ab = g.cd = CUDA_R_16BF, g.tb = true, g.m = 17, g.n = 33, g.k = 7, add(g);
  g = Gemm{}, g.name = "bf16_f32_tn", g.ab = CUDA_R_16BF, g.ta = true, g.m = 33, g.n = 5, g.k = 17, g.beta = 0.5f,
  add(g);
  // TF32.
  g = Gemm{}, g.name = "tf32_nn", g.compute = CUBLAS_COMPUTE_32F_FAST_TF32, g.m = 17, g.n = 7, g.k = 33, add(g);
  g = Gemm{}, g.name = "tf32_ties", g.compute = CUBLAS_COMPUTE_32F_FAST_TF32, g.ties = true, g.m = 5, g.n = 7,
  g.k = 17, add(g);
  g = Gemm{}, g.name = "tf32_tt_batch", g.compute = CUBLAS_COMPUTE_32F_FAST_TF32, g.ta = g.tb = true, g.m = 5,
  g.n = 3, g.k = 17, g.batch = 3, g.sa = 85, g.sb = 60, g.sd = 15, add(g);
  // Epilogues.
  g = Gemm{}, g.name = "f32_bias", g.epi = CUBLASLT_EPILOGUE_BIAS, g.m = 7, g.n = 5, g.k = 3, g.alpha = 2.0f,
  g.beta = 0.5f, add(g);
  g = Gemm{}, g.name = "bf16_bias_tn", g.ab = g.cd = CUDA_R_16BF, g.epi = CUBLASLT_EPILOGUE_BIAS, g.ta = true,
  g.m = 17, g.n = 5, g.k = 33, g.ldd = 24, add(g);
  g = Gemm{}, g.name = "f32_gelu", g.epi = CUBLASLT_EPILOGUE_GELU_AUX_BIAS, g.m = 5, g.n = 7, g.k = 17, add(g);
  g = Gemm{}, g.name = "bf16_gelu_nt", g.ab = g.cd = CUDA_R_16BF, g.epi = CUBLASLT_EPILOGUE_GELU_AUX_BIAS, g.tb = true,
  g.m = 33, g.n = 3, g.k = 7, add(g);
  g = Gemm{}, g.name = "bf16_gelu_batch", g.ab = g.cd = CUDA_R_16BF, g.epi = CUBLASLT_EPILOGUE_GELU_AUX_BIAS,
  g.m = 7, g.n = 5, g.k = 3, g.batch = 3, g.sa = 21, g.sb = 15, g.sd = 35, g.beta = 1.0f, add(g);
  g = Gemm{}, g.name = "f32_bgradb", g.epi = CUBLASLT_EPILOGUE_BGRADB, g.bias_type_set = true, g.tb = true, g.m = 5,
  g.n = 17, g.k = 7, add(g);
  g = Gemm{}, g.name = "tf32_bias_f32bias", g.compute = CUBLAS_COMPUTE_32F_FAST_TF32, g.epi = CUBLASLT_EPILOGUE_BIAS,
  g.bias_type_set = true, g.m = 3, g.n = 5, g.k = 7, add(g);
  g = Gemm{}, g.name = "bf16_bias_f32bias", g.ab = g.cd = CUDA_R_16BF, g.epi = CUBLASLT_EPILOGUE_BIAS,
  g.bias_type_set = true, g.m = 9, g.n = 5, g.k = 7, add(g);
  for (const Gemm& c : cases) {
    run_gemm(c, lt, stream, rng);
    if (HasFatalFailure()) return;
  }
}

// --- cuFFT
struct Fft {
  std::string name;
  cufftType type = CUFFT_R2C;
  int n = 8, batch = 1;
  bool basic = true;
  int istride = 1, idist = 0, ostride = 1, odist = 0;
  int direction = CUFFT_FORWARD;
  bool in_place = false;
};

void run_fft(const Fft& f, cudaStream_t stream, std::mt19937& rng) {
  SCOPED_TRACE(f.name);
  int nf = f.n / 2 + 1;
  int n_in = f.type == CUFFT_C2R ? nf : f.n, n_out = f.type == CUFFT_R2C ? nf : f.n;
  int idist = f.basic ? n_in : f.idist, odist = f.basic ? n_out : f.odist;
  int istride = f.basic ? 1 : f.istride, ostride = f.basic ? 1 : f.ostride;
  size_t in_floats = (f.type == CUFFT_R2C ? 1 : 2) * (size_t)((f.batch - 1) * idist + (n_in - 1) * istride + 1);
  size_t out_floats = (f.type == CUFFT_C2R ? 1 : 2) * (size_t)((f.batch - 1) * odist + (n_out - 1) * ostride + 1);
  std::vector<char> in = random_bytes(rng, CUDA_R_32F, in_floats);
  void* din = upload(in);
  void* dout = nullptr;
  if (f.in_place) {
    dout = din;
  } else {
    ASSERT_EQ(cudaMalloc(&dout, out_floats * 4), cudaSuccess);
  }
  cufftHandle plan;
  ASSERT_EQ(cufftCreate(&plan), CUFFT_SUCCESS);
  ASSERT_EQ(cufftSetAutoAllocation(plan, 0), CUFFT_SUCCESS);
  int n = f.n, inembed = n_in, onembed = n_out;
  size_t ws = 0;
  ASSERT_EQ(cufftMakePlanMany(plan, 1, &n, f.basic ? nullptr : &inembed, f.istride, f.idist,
                              f.basic ? nullptr : &onembed, f.ostride, f.odist, f.type, f.batch, &ws),
            CUFFT_SUCCESS);
  EXPECT_GT(ws, 0u);
  void* work = nullptr;
  ASSERT_EQ(cudaMalloc(&work, ws), cudaSuccess);
  ASSERT_EQ(cufftSetWorkArea(plan, work), CUFFT_SUCCESS);
  ASSERT_EQ(cufftSetStream(plan, stream), CUFFT_SUCCESS);
  int before = emu::failures();
  cufftResult r = f.type == CUFFT_R2C ? cufftExecR2C(plan, (cufftReal*)din, (cufftComplex*)dout)
                  : f.type == CUFFT_C2R ? cufftExecC2R(plan, (cufftComplex*)din, (cufftReal*)dout)
                                        : cufftExecC2C(plan, (cufftComplex*)din, (cufftComplex*)dout, f.direction);
  ASSERT_EQ(r, CUFFT_SUCCESS);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(emu::failures(), before);
  std::vector<char> out = download(dout, out_floats * 4), in_after = download(din, in_floats * 4);
  write_file(f.name + ".in", in.data(), in.size());
  write_file(f.name + ".out", out.data(), out.size());
  write_file(f.name + ".in_after", in_after.data(), in_after.size());
  char line[512];
  snprintf(line, sizeof line,
           "fft name=%s type=%s n=%d batch=%d istride=%d idist=%d ostride=%d odist=%d direction=%d in_place=%d",
           f.name.c_str(), f.type == CUFFT_R2C ? "r2c" : f.type == CUFFT_C2R ? "c2r" : "c2c", f.n, f.batch, istride,
           idist, ostride, odist, f.direction, f.in_place);
  manifest(line);
  EXPECT_EQ(cufftDestroy(plan), CUFFT_SUCCESS);
  EXPECT_EQ(cudaFree(work), cudaSuccess);
  EXPECT_EQ(cudaFree(din), cudaSuccess);
  if (!f.in_place) {
    EXPECT_EQ(cudaFree(dout), cudaSuccess);
  }
}

TEST_F(EmuLibs, FftAgainstNumpy) {
  std::mt19937 rng(99);
  std::vector<Fft> cases;
  Fft f;
  // bigs' plans: the basic layout, power-of-two n = 2 * padded T.
  f = Fft{}, f.name = "r2c_64_b3", f.n = 64, f.batch = 3, cases.push_back(f);
  f = Fft{}, f.name = "c2r_64_b3", f.type = CUFFT_C2R, f.n = 64, f.batch = 3, cases.push_back(f);
  // Odd and non-power-of-two sizes (T = 17, 33 padded oddly), batched.
  f = Fft{}, f.name = "r2c_34_b5", f.n = 34, f.batch = 5, cases.push_back(f);
  f = Fft{}, f.name = "r2c_17_b3", f.n = 17, f.batch = 3, cases.push_back(f);
  f = Fft{}, f.name = "c2r_33_b3", f.type = CUFFT_C2R, f.n = 33, f.batch = 3, cases.push_back(f);
  f = Fft{}, f.name = "c2r_66_b2", f.type = CUFFT_C2R, f.n = 66, f.batch = 2, cases.push_back(f);
  f = Fft{}, f.name = "c2c_fwd_15_b3", f.type = CUFFT_C2C, f.n = 15, f.batch = 3, cases.push_back(f);
  f = Fft{}, f.name = "c2c_inv_32_b2", f.type = CUFFT_C2C, f.n = 32, f.batch = 2, f.direction = CUFFT_INVERSE,
  cases.push_back(f);
  // The advanced layout: strides and distances.
  f = Fft{}, f.name = "r2c_adv_12", f.n = 12, f.batch = 3, f.basic = false, f.istride = 2, f.idist = 30,
  f.ostride = 1, f.odist = 8, cases.push_back(f);
  f = Fft{}, f.name = "c2c_adv_7", f.type = CUFFT_C2C, f.n = 7, f.batch = 3, f.basic = false, f.istride = 3,
  f.idist = 22, f.ostride = 2, f.odist = 15, cases.push_back(f);
  f = Fft{}, f.name = "c2c_inplace_16", f.type = CUFFT_C2C, f.n = 16, f.batch = 2, f.in_place = true,
  cases.push_back(f);
  for (const Fft& c : cases) {
    run_fft(c, stream, rng);
    if (HasFatalFailure()) return;
  }
}

// --- planted bugs: each fails as the real call would, loudly.

// A bf16 problem's descriptors with the preference's alignments given.
struct Bf16Problem {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  void *A = nullptr, *B = nullptr, *D = nullptr, *ws = nullptr;
  int m = 16, n = 8, k = 16;
  void make(uint32_t align, int64_t lda) {
    ASSERT_EQ(cudaMalloc(&A, 4096), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&B, 4096), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&D, 4096), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&ws, 1 << 20), cudaSuccess);
    ASSERT_EQ(cudaMemset(A, 0, 4096), cudaSuccess);
    ASSERT_EQ(cudaMemset(B, 0, 4096), cudaSuccess);
    LT(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    LT(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, m, k, lda));
    LT(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, k, n, k));
    LT(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, m, n, m));
    LT(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t wsz = 1 << 20;
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof wsz));
    for (auto a : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                   CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      LT(cublasLtMatmulPreferenceSetAttribute(pref, a, &align, sizeof align));
  }
  ~Bf16Problem() {
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(desc);
    for (void* p : {A, B, D, ws})
      if (p) cudaFree(p);
  }
};

// Runs f, returns what it wrote on stderr (and echoes it, for the record).
template <class F>
std::string stderr_of(F f) {
  testing::internal::CaptureStderr();
  f();
  std::string s = testing::internal::GetCapturedStderr();
  fprintf(stdout, "[planted] %s", s.c_str());
  return s;
}

TEST_F(EmuLibs, PlantedMisalignedBf16Pointer) {
  Bf16Problem p;
  p.make(16, 16);
  cublasLtMatmulHeuristicResult_t h[4];
  int count = 0;
  LT(cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.la, p.lb, p.ld, p.ld, p.pref, 4, h, &count));
  ASSERT_GE(count, 1);
  float alpha = 1, beta = 0;
  int before = emu::failures();
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  // The bug: A one bf16 element past the 16-byte-aligned address promised.
  const __nv_bfloat16* a1 = static_cast<const __nv_bfloat16*>(p.A) + 1;
  std::string err = stderr_of([&] {
    st = cublasLtMatmul(lt, p.desc, &alpha, a1, p.la, p.B, p.lb, &beta, p.D, p.ld, p.D, p.ld, &h[0].algo, p.ws,
                        1 << 20, stream);
  });
  EXPECT_EQ(st, CUBLAS_STATUS_NOT_SUPPORTED);
  EXPECT_EQ(emu::failures(), before + 1);
  EXPECT_NE(err.find("emu: cublasLtMatmul: matrix A"), std::string::npos) << err;
  // The same product on the aligned pointer runs.
  LT(cublasLtMatmul(lt, p.desc, &alpha, p.A, p.la, p.B, p.lb, &beta, p.D, p.ld, p.D, p.ld, &h[0].algo, p.ws, 1 << 20,
                    stream));
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(emu::failures(), before + 1);
}

TEST_F(EmuLibs, PlantedPreferenceBelowElementSize) {
  Bf16Problem p;
  p.make(1, 16);  // promises 1-byte alignment: no kernel reads bf16 at odd addresses
  cublasLtMatmulHeuristicResult_t h[4];
  int count = -1;
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  std::string err = stderr_of([&] { st = cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.la, p.lb, p.ld, p.ld, p.pref,
                                                                         4, h, &count); });
  EXPECT_EQ(st, CUBLAS_STATUS_NOT_SUPPORTED);
  EXPECT_EQ(count, 0);
  EXPECT_NE(err.find("no algorithm fits"), std::string::npos) << err;
}

// cuBLASLt documents ld % 8 == 0 (16-bit types) only as a tensor-core
// performance condition ("Tensor Core Usage"), so an odd bf16 lda runs; the
// documented multiple-of-8 rule is the GELU aux matrix's, below.
TEST_F(EmuLibs, Bf16OddLeadingDimensionRuns) {
  Bf16Problem p;
  p.make(16, 17);
  cublasLtMatmulHeuristicResult_t h[4];
  int count = 0;
  LT(cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.la, p.lb, p.ld, p.ld, p.pref, 4, h, &count));
  ASSERT_GE(count, 1);
  float alpha = 1, beta = 0;
  LT(cublasLtMatmul(lt, p.desc, &alpha, p.A, p.la, p.B, p.lb, &beta, p.D, p.ld, p.D, p.ld, &h[0].algo, p.ws, 1 << 20,
                    stream));
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
}

TEST_F(EmuLibs, PlantedBf16AuxLdNotMultipleOf8) {
  Bf16Problem p;
  p.make(16, 16);
  void *bias = nullptr, *aux = nullptr;
  ASSERT_EQ(cudaMalloc(&bias, 256), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&aux, 4096), cudaSuccess);
  cublasLtEpilogue_t e = CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  LT(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e));
  LT(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  LT(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
  int64_t good = 16, bad = 17;  // >= rows (16) both; 17 is not a multiple of 8
  LT(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &good, sizeof good));
  cublasLtMatmulHeuristicResult_t h[4];
  int count = 0;
  LT(cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.la, p.lb, p.ld, p.ld, p.pref, 4, h, &count));
  ASSERT_GE(count, 1);
  LT(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &bad, sizeof bad));
  cublasLtMatmulHeuristicResult_t h2[4];
  int count2 = -1;
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  std::string err = stderr_of([&] { st = cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.la, p.lb, p.ld, p.ld, p.pref,
                                                                         4, h2, &count2); });
  EXPECT_EQ(st, CUBLAS_STATUS_NOT_SUPPORTED);  // the heuristic's honest "none"
  EXPECT_EQ(count2, 0);
  EXPECT_NE(err.find("EPILOGUE_AUX_LD 17"), std::string::npos) << err;
  float alpha = 1, beta = 0;
  int before = emu::failures();
  err = stderr_of([&] {
    st = cublasLtMatmul(lt, p.desc, &alpha, p.A, p.la, p.B, p.lb, &beta, p.D, p.ld, p.D, p.ld, &h[0].algo, p.ws,
                        1 << 20, stream);
  });
  EXPECT_EQ(st, CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(emu::failures(), before + 1);
  EXPECT_NE(err.find("emu: cublasLtMatmul: EPILOGUE_AUX_LD 17 must be divisible by 8"), std::string::npos) << err;
  EXPECT_EQ(cudaFree(bias), cudaSuccess);
  EXPECT_EQ(cudaFree(aux), cudaSuccess);
}

TEST_F(EmuLibs, PlantedWorkspaceTooSmall) {
  Bf16Problem p;
  p.make(16, 16);
  cublasLtMatmulHeuristicResult_t h[4];
  int count = 0;
  LT(cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.la, p.lb, p.ld, p.ld, p.pref, 4, h, &count));
  ASSERT_GE(count, 1);
  ASSERT_GT(h[0].workspaceSize, 0u);
  float alpha = 1, beta = 0;
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  std::string err = stderr_of([&] {
    st = cublasLtMatmul(lt, p.desc, &alpha, p.A, p.la, p.B, p.lb, &beta, p.D, p.ld, p.D, p.ld, &h[0].algo, p.ws,
                        h[0].workspaceSize - 1, stream);
  });
  EXPECT_EQ(st, CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_NE(err.find("emu: cublasLtMatmul: workspaceSizeInBytes"), std::string::npos) << err;
}

TEST_F(EmuLibs, PlantedLeadingDimensionBelowRows) {
  Bf16Problem p;
  p.make(16, 15);  // A has 16 rows
  cublasLtMatmulHeuristicResult_t h[4];
  int count = 0;
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  std::string err = stderr_of([&] { st = cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.la, p.lb, p.ld, p.ld, p.pref,
                                                                         4, h, &count); });
  EXPECT_EQ(st, CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_NE(err.find("leading dimension 15 < rows 16"), std::string::npos) << err;
}

TEST_F(EmuLibs, PlantedAttributeSize) {
  cublasLtMatrixLayout_t l;
  LT(cublasLtMatrixLayoutCreate(&l, CUDA_R_32F, 4, 4, 4));
  int64_t count = 3;  // BATCH_COUNT is int32_t
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  std::string err = stderr_of(
      [&] { st = cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count); });
  EXPECT_EQ(st, CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_NE(err.find("emu: cublasLtMatrixLayoutSetAttribute"), std::string::npos) << err;
  LT(cublasLtMatrixLayoutDestroy(l));
}

// A host pointer as an operand: the call returns success (cuBLASLt does not
// look), the kernel faults; the fault is sticky, so this runs in a child.
void host_pointer_child(cublasLtHandle_t lt, cudaStream_t stream) {
  cublasStatus_t st;
  cudaError_t e;
  {
    Bf16Problem p;
    p.make(16, 16);
    cublasLtMatmulHeuristicResult_t h[4];
    int count = 0;
    cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.la, p.lb, p.ld, p.ld, p.pref, 4, h, &count);
    alignas(256) static __nv_bfloat16 host_b[16 * 8];
    float alpha = 1, beta = 0;
    // The bug: B is host memory.
    st = cublasLtMatmul(lt, p.desc, &alpha, p.A, p.la, host_b, p.lb, &beta, p.D, p.ld, p.D, p.ld, &h[0].algo, p.ws,
                        1 << 20, stream);
    e = cudaDeviceSynchronize();
  }
  fprintf(stderr, "cublasLtMatmul returned %s, cudaDeviceSynchronize %s\n", cublasLtGetStatusName(st),
          cudaGetErrorName(e));
  exit(st == CUBLAS_STATUS_SUCCESS && e == cudaErrorIllegalAddress ? 42 : 1);
}

TEST_F(EmuLibs, PlantedHostPointerOperand) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(host_pointer_child(lt, stream), testing::ExitedWithCode(42),
              "emu: cublasLtMatmul: operand B .* not inside one device allocation");
}

TEST_F(EmuLibs, PlantedMissingFftWorkArea) {
  cufftHandle plan;
  ASSERT_EQ(cufftCreate(&plan), CUFFT_SUCCESS);
  ASSERT_EQ(cufftSetAutoAllocation(plan, 0), CUFFT_SUCCESS);
  int n = 64;
  size_t ws = 0;
  ASSERT_EQ(cufftMakePlanMany(plan, 1, &n, nullptr, 1, n, nullptr, 1, n / 2 + 1, CUFFT_R2C, 2, &ws), CUFFT_SUCCESS);
  ASSERT_EQ(cufftSetStream(plan, stream), CUFFT_SUCCESS);
  void *in = nullptr, *out = nullptr;
  ASSERT_EQ(cudaMalloc(&in, 2 * n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&out, 2 * (n / 2 + 1) * 8), cudaSuccess);
  int before = emu::failures();
  cufftResult r = CUFFT_SUCCESS;
  // The bug: no cufftSetWorkArea after cufftSetAutoAllocation(plan, 0).
  std::string err = stderr_of([&] { r = cufftExecR2C(plan, (cufftReal*)in, (cufftComplex*)out); });
  EXPECT_EQ(r, CUFFT_NO_WORKSPACE);
  EXPECT_EQ(emu::failures(), before + 1);
  EXPECT_NE(err.find("emu: cufftExecR2C: plan"), std::string::npos) << err;
  EXPECT_EQ(cufftDestroy(plan), CUFFT_SUCCESS);
  EXPECT_EQ(cudaFree(in), cudaSuccess);
  EXPECT_EQ(cudaFree(out), cudaSuccess);
}

TEST_F(EmuLibs, PlantedMisalignedFftData) {
  cufftHandle plan;
  ASSERT_EQ(cufftCreate(&plan), CUFFT_SUCCESS);
  int n = 16;
  ASSERT_EQ(cufftMakePlanMany(plan, 1, &n, nullptr, 1, n, nullptr, 1, n / 2 + 1, CUFFT_R2C, 1, nullptr),
            CUFFT_SUCCESS);
  void *in = nullptr, *out = nullptr;
  ASSERT_EQ(cudaMalloc(&in, 2 * n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&out, (n / 2 + 1) * 8), cudaSuccess);
  cufftResult r = CUFFT_SUCCESS;
  std::string err = stderr_of([&] { r = cufftExecR2C(plan, (cufftReal*)in + 1, (cufftComplex*)out); });
  EXPECT_EQ(r, CUFFT_INVALID_VALUE);
  EXPECT_NE(err.find("not aligned to cufftComplex"), std::string::npos) << err;
  EXPECT_EQ(cufftDestroy(plan), CUFFT_SUCCESS);
  EXPECT_EQ(cudaFree(in), cudaSuccess);
  EXPECT_EQ(cudaFree(out), cudaSuccess);
}

// A work area that is host memory faults in the transform (sticky).
void host_work_child(cudaStream_t stream) {
  cufftHandle plan;
  cufftCreate(&plan);
  cufftSetAutoAllocation(plan, 0);
  int n = 16;
  size_t ws = 0;
  cufftMakePlanMany(plan, 1, &n, nullptr, 1, n, nullptr, 1, n / 2 + 1, CUFFT_R2C, 1, &ws);
  static std::vector<char> host_work;
  host_work.resize(ws);
  cufftSetWorkArea(plan, host_work.data());  // the bug
  cufftSetStream(plan, stream);
  void *in = nullptr, *out = nullptr;
  cudaMalloc(&in, n * 4);
  cudaMalloc(&out, (n / 2 + 1) * 8);
  cufftResult r = cufftExecR2C(plan, (cufftReal*)in, (cufftComplex*)out);
  cudaError_t e = cudaDeviceSynchronize();
  cudaFree(in), cudaFree(out), cufftDestroy(plan);
  fprintf(stderr, "cufftExecR2C returned %d, cudaDeviceSynchronize %s\n", (int)r, cudaGetErrorName(e));
  exit(r == CUFFT_SUCCESS && e == cudaErrorIllegalAddress ? 42 : 1);
}

TEST_F(EmuLibs, PlantedHostFftWorkArea) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(host_work_child(stream), testing::ExitedWithCode(42),
              "emu: cufftExecR2C: plan .*work area .* not inside one device allocation");
}

// cuFFT's "Data Layout": an out-of-place C2R overwrites its input.
TEST_F(EmuLibs, C2ROverwritesItsInput) {
  cufftHandle plan;
  ASSERT_EQ(cufftCreate(&plan), CUFFT_SUCCESS);
  int n = 8;
  ASSERT_EQ(cufftMakePlanMany(plan, 1, &n, nullptr, 1, n / 2 + 1, nullptr, 1, n, CUFFT_C2R, 1, nullptr),
            CUFFT_SUCCESS);
  ASSERT_EQ(cufftSetStream(plan, stream), CUFFT_SUCCESS);
  void *in = nullptr, *out = nullptr;
  ASSERT_EQ(cudaMalloc(&in, (n / 2 + 1) * 8), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&out, n * 4), cudaSuccess);
  ASSERT_EQ(cudaMemset(in, 0, (n / 2 + 1) * 8), cudaSuccess);
  ASSERT_EQ(cufftExecC2R(plan, (cufftComplex*)in, (cufftReal*)out), CUFFT_SUCCESS);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  std::vector<char> after = download(in, (n / 2 + 1) * 8), res = download(out, n * 4);
  float v;
  std::memcpy(&v, after.data(), 4);
  EXPECT_TRUE(std::isnan(v));
  std::memcpy(&v, res.data(), 4);
  EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(cufftDestroy(plan), CUFFT_SUCCESS);
  EXPECT_EQ(cudaFree(in), cudaSuccess);
  EXPECT_EQ(cudaFree(out), cudaSuccess);
}

}  // namespace
