// cufft.cpp: the emulated cuFFT, the subset bigs uses (bigs.cu's fft_plan
// and the SSM convolution). Test infrastructure only, never linked into the
// product; the real signatures of /usr/local/cuda/include/cufft.h.
//
// One-dimensional single-precision plans (R2C, C2R, C2C) of any size and
// batch, basic or advanced layout (stride / dist), unnormalised as cuFFT
// is, each transform a queued op on the plan's stream. The arithmetic is in
// double (a radix-2 FFT for powers of two, a plain DFT otherwise), rounded
// to float at the end: more exact than cuFFT, so tests of bigs still need
// their fp32 tolerances.
//
// Strictness, by section of the cuFFT documentation
// (docs.nvidia.com/cuda/cufft):
//  [AUTO]    "cufftSetAutoAllocation()": with autoAllocate 0 before
//            cufftMakePlan*(), cuFFT does not allocate the work area; the
//            caller must give one (cufftSetWorkArea) before executing.
//  [RESULT]  "cufftResult": CUFFT_NO_WORKSPACE "No workspace has been
//            provided prior to plan execution"; CUFFT_INVALID_PLAN "cuFFT
//            was passed an invalid plan handle"; CUFFT_INVALID_SIZE;
//            CUFFT_INVALID_VALUE.
//  [EXEC]    "cufftExecC2C() / cufftExecR2C() / cufftExecC2R()": idata and
//            odata in GPU memory, aligned to cufftComplex in single
//            precision (a misaligned pointer gives CUFFT_INVALID_VALUE, as
//            cupy/cupy#9229 observed); C2C direction CUFFT_FORWARD or
//            CUFFT_INVERSE, else CUFFT_INVALID_VALUE.
//  [LAYOUT]  "Advanced Data Layout": input[b * idist + x * istride];
//            "Passing inembed or onembed set to NULL is a special case and
//            is equivalent to passing n for each. This is same as the basic
//            data layout and other advanced parameters such as istride are
//            ignored."
//  [DATA]    "Data Layout" (2.4): "Out-of-place complex-to-real FFT will
//            always overwrite input buffer" -- so an out-of-place C2R here
//            leaves NaN (0xFF bytes) in the input it read.
//  [STREAM]  "Streamed cuFFT Transforms" / "cufftSetStream()": the
//            transform runs on the plan's stream; the work area may be
//            overwritten by any transform of a plan using it, so here each
//            transform leaves garbage there.
// An operand outside device memory is not checked by cuFFT: its kernel
// faults, so here the queued op fails (emu::fail) and makes
// cudaErrorIllegalAddress sticky.
#include <cufft.h>

#include <cmath>
#include <complex>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "emu.h"

namespace {

struct Plan {
  bool made = false;
  bool auto_alloc = true;  // [AUTO]: cuFFT's default
  cufftType type = CUFFT_C2C;
  int n = 0, batch = 0;
  int istride = 1, idist = 0, ostride = 1, odist = 0;
  size_t work_size = 0;
  void* work = nullptr;
  cudaStream_t stream = nullptr;
};

std::mutex g_mu;
std::map<cufftHandle, Plan> g_plans;
cufftHandle g_next = 1;

// The live plan h, or null after reporting CUFFT_INVALID_PLAN for call.
Plan* live_plan(cufftHandle h, const char* call) {
  auto it = g_plans.find(h);
  if (it != g_plans.end()) return &it->second;
  emu::fail(call, "plan %d is not a live plan (CUFFT_INVALID_PLAN)", h);
  return nullptr;
}

const char* type_name(cufftType t) {
  return t == CUFFT_R2C ? "R2C" : t == CUFFT_C2R ? "C2R" : t == CUFFT_C2C ? "C2C" : "other";
}

using cd = std::complex<double>;

// In-place transform of x (length n): sign -1 forward, +1 inverse,
// unnormalised. Powers of two: iterative radix 2; else the plain DFT.
void dft(std::vector<cd>& x, int sign) {
  const size_t n = x.size();
  const double tau = 2 * M_PI;
  if (n <= 1) return;
  if ((n & (n - 1)) == 0) {
    for (size_t i = 1, j = 0; i < n; i++) {  // bit reversal
      size_t bit = n >> 1;
      for (; j & bit; bit >>= 1) j ^= bit;
      j ^= bit;
      if (i < j) std::swap(x[i], x[j]);
    }
    for (size_t len = 2; len <= n; len <<= 1) {
      for (size_t i = 0; i < n; i += len)
        for (size_t k = 0; k < len / 2; k++) {
          double ang = sign * tau * (double)k / (double)len;
          cd w(std::cos(ang), std::sin(ang));
          cd u = x[i + k], v = x[i + k + len / 2] * w;
          x[i + k] = u + v;
          x[i + k + len / 2] = u - v;
        }
    }
    return;
  }
  std::vector<cd> tw(n), y(n);
  for (size_t k = 0; k < n; k++) tw[k] = cd(std::cos(sign * tau * k / n), std::sin(sign * tau * k / n));
  for (size_t k = 0; k < n; k++) {
    cd s = 0;
    for (size_t j = 0; j < n; j++) s += x[j] * tw[(j * k) % n];
    y[k] = s;
  }
  x = y;
}

// The work area a plan asks for: a scratch copy of the batch's complex
// signals (and, off the power-of-two path, a padded convolution's worth).
size_t work_bytes(int n, int batch) {
  size_t len = (size_t)n;
  if (n & (n - 1)) {
    len = 1;
    while (len < 2 * (size_t)n) len <<= 1;
    len *= 2;
  }
  return len * batch * sizeof(cufftComplex);
}

cufftResult exec(const char* call, cufftHandle h, cufftType want, const void* idata, void* odata, int direction) {
  Plan p;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    auto it = g_plans.find(h);
    Plan* q = it == g_plans.end() ? nullptr : &it->second;
    if (!q || !q->made) {
      emu::fail(call, "plan %d is not a valid, made plan (CUFFT_INVALID_PLAN)", h);
      return CUFFT_INVALID_PLAN;
    }
    p = *q;
  }
  if (p.type != want) {
    emu::fail(call, "plan %d is a %s plan (CUFFT_INVALID_PLAN)", h, type_name(p.type));
    return CUFFT_INVALID_PLAN;
  }
  if (want == CUFFT_C2C && direction != CUFFT_FORWARD && direction != CUFFT_INVERSE) {  // [EXEC]
    emu::fail(call, "direction %d is neither CUFFT_FORWARD nor CUFFT_INVERSE (CUFFT_INVALID_VALUE)", direction);
    return CUFFT_INVALID_VALUE;
  }
  if (!p.auto_alloc && !p.work) {  // [AUTO], [RESULT]
    emu::fail(call, "plan %d was made with cufftSetAutoAllocation(0) and has no work area (cufftSetWorkArea) "
              "(CUFFT_NO_WORKSPACE)", h);
    return CUFFT_NO_WORKSPACE;
  }
  if (!idata || !odata || (uintptr_t)idata % sizeof(cufftComplex) || (uintptr_t)odata % sizeof(cufftComplex)) {
    emu::fail(call, "idata %p / odata %p null or not aligned to cufftComplex (%zu bytes) (CUFFT_INVALID_VALUE)", idata,
              odata, sizeof(cufftComplex));
    return CUFFT_INVALID_VALUE;
  }
  emu::enqueue(p.stream, call, [p, idata, odata, direction, h]() {
    const char* call = p.type == CUFFT_R2C ? "cufftExecR2C" : p.type == CUFFT_C2R ? "cufftExecC2R" : "cufftExecC2C";
    const int n = p.n, nf = n / 2 + 1;
    const int n_in = p.type == CUFFT_C2R ? nf : n, n_out = p.type == CUFFT_R2C ? nf : n;
    const size_t in_elem = p.type == CUFFT_R2C ? sizeof(float) : sizeof(cufftComplex);
    const size_t out_elem = p.type == CUFFT_C2R ? sizeof(float) : sizeof(cufftComplex);
    size_t in_bytes = ((size_t)(p.batch - 1) * p.idist + (size_t)(n_in - 1) * p.istride + 1) * in_elem;
    size_t out_bytes = ((size_t)(p.batch - 1) * p.odist + (size_t)(n_out - 1) * p.ostride + 1) * out_elem;
    struct Span {
      const char* what;
      const void* ptr;
      size_t bytes;
    } spans[3] = {{"idata", idata, in_bytes}, {"odata", odata, out_bytes}, {"work area", p.work, p.work_size}};
    for (int i = 0; i < (p.auto_alloc ? 2 : 3); i++)
      if (!emu::in_device(spans[i].ptr, spans[i].bytes)) {
        emu::fail(call, "plan %d: %s [%p, +%zu bytes) is not inside one device allocation: the kernel faults "
                  "(cudaErrorIllegalAddress)", h, spans[i].what, spans[i].ptr, spans[i].bytes);
        emu::set_sticky(cudaErrorIllegalAddress);
        return;
      }
    const char* in = static_cast<const char*>(idata);
    // The whole batch is read before anything is written (in place works).
    std::vector<std::vector<cd>> sig(p.batch, std::vector<cd>(n));
    for (int b = 0; b < p.batch; b++) {
      std::vector<cd>& x = sig[b];
      if (p.type == CUFFT_R2C) {
        for (int j = 0; j < n; j++) {
          float v;
          std::memcpy(&v, in + ((size_t)b * p.idist + (size_t)j * p.istride) * in_elem, sizeof v);
          x[j] = v;
        }
        dft(x, -1);
      } else {
        std::vector<cufftComplex> c(n_in);
        for (int j = 0; j < n_in; j++)
          std::memcpy(&c[j], in + ((size_t)b * p.idist + (size_t)j * p.istride) * in_elem, sizeof(cufftComplex));
        if (p.type == CUFFT_C2C) {
          for (int j = 0; j < n; j++) x[j] = cd(c[j].x, c[j].y);
          dft(x, direction == CUFFT_FORWARD ? -1 : 1);
        } else {  // C2R: the Hermitian extension of the n/2 + 1 values;
                  // the imaginary parts of X[0] (and X[n/2], n even) drop out
          for (int j = 0; j < nf; j++) x[j] = cd(c[j].x, c[j].y);
          x[0] = cd(x[0].real(), 0);
          if (n % 2 == 0) x[n / 2] = cd(x[n / 2].real(), 0);
          for (int j = nf; j < n; j++) x[j] = std::conj(x[n - j]);
          dft(x, 1);
        }
      }
    }
    if (p.type == CUFFT_C2R && idata != odata)  // [DATA]: the input is overwritten
      for (int b = 0; b < p.batch; b++)
        for (int j = 0; j < n_in; j++)
          std::memset(const_cast<char*>(in) + ((size_t)b * p.idist + (size_t)j * p.istride) * in_elem, 0xff,
                      in_elem);
    char* out = static_cast<char*>(odata);
    for (int b = 0; b < p.batch; b++)
      for (int j = 0; j < n_out; j++) {
        char* dst = out + ((size_t)b * p.odist + (size_t)j * p.ostride) * out_elem;
        if (p.type == CUFFT_C2R) {
          float v = (float)sig[b][j].real();
          std::memcpy(dst, &v, sizeof v);
        } else {
          cufftComplex v{(float)sig[b][j].real(), (float)sig[b][j].imag()};
          std::memcpy(dst, &v, sizeof v);
        }
      }
    if (!p.auto_alloc) std::memset(p.work, 0x5a, p.work_size);  // [STREAM]: scratch left behind
  });
  return CUFFT_SUCCESS;
}

}  // namespace

extern "C" {

cufftResult cufftCreate(cufftHandle* handle) {
  if (!handle) {
    emu::fail("cufftCreate", "null handle pointer (CUFFT_INVALID_VALUE)");
    return CUFFT_INVALID_VALUE;
  }
  std::lock_guard<std::mutex> lk(g_mu);
  *handle = g_next++;
  g_plans[*handle] = Plan{};
  return CUFFT_SUCCESS;
}

cufftResult cufftDestroy(cufftHandle plan) {
  std::lock_guard<std::mutex> lk(g_mu);
  if (!g_plans.erase(plan)) {
    emu::fail("cufftDestroy", "plan %d is not a live plan (CUFFT_INVALID_PLAN)", plan);
    return CUFFT_INVALID_PLAN;
  }
  return CUFFT_SUCCESS;
}

cufftResult cufftSetAutoAllocation(cufftHandle plan, int auto_allocate) {
  std::lock_guard<std::mutex> lk(g_mu);
  Plan* p = live_plan(plan, "cufftSetAutoAllocation");
  if (!p) return CUFFT_INVALID_PLAN;
  p->auto_alloc = auto_allocate != 0;
  return CUFFT_SUCCESS;
}

cufftResult cufftMakePlanMany(cufftHandle plan, int rank, int* n, int* inembed, int istride, int idist,
                              int* onembed, int ostride, int odist, cufftType type, int batch, size_t* work_size) {
  const char* call = "cufftMakePlanMany";
  std::lock_guard<std::mutex> lk(g_mu);
  Plan* p = live_plan(plan, call);
  if (!p) return CUFFT_INVALID_PLAN;
  if (rank < 1 || rank > 3 || !n) {
    emu::fail(call, "rank %d (1, 2 or 3), n %p (CUFFT_INVALID_SIZE)", rank, (void*)n);
    return CUFFT_INVALID_SIZE;
  }
  if (rank != 1) {
    emu::fail(call, "rank %d: only one-dimensional plans are emulated (CUFFT_NOT_SUPPORTED)", rank);
    return CUFFT_NOT_SUPPORTED;
  }
  if (n[0] < 1 || batch < 1) {
    emu::fail(call, "n %d, batch %d (CUFFT_INVALID_SIZE)", n[0], batch);
    return CUFFT_INVALID_SIZE;
  }
  if (type != CUFFT_R2C && type != CUFFT_C2R && type != CUFFT_C2C) {
    emu::fail(call, "type %d: only R2C, C2R and C2C are emulated (CUFFT_NOT_SUPPORTED)", (int)type);
    return CUFFT_NOT_SUPPORTED;
  }
  Plan q = *p;
  q.type = type, q.n = n[0], q.batch = batch;
  int nf = n[0] / 2 + 1;
  int n_in = type == CUFFT_C2R ? nf : n[0], n_out = type == CUFFT_R2C ? nf : n[0];
  if (!inembed || !onembed) {  // [LAYOUT]: the basic layout, advanced arguments ignored
    q.istride = 1, q.idist = n_in, q.ostride = 1, q.odist = n_out;
  } else {
    if (istride < 1 || ostride < 1 || idist < 1 || odist < 1 || inembed[0] < n_in || onembed[0] < n_out) {
      emu::fail(call, "advanced layout: istride %d idist %d inembed %d ostride %d odist %d onembed %d for n %d "
                "(CUFFT_INVALID_VALUE)", istride, idist, inembed[0], ostride, odist, onembed[0], n[0]);
      return CUFFT_INVALID_VALUE;
    }
    q.istride = istride, q.idist = idist, q.ostride = ostride, q.odist = odist;
  }
  q.work_size = work_bytes(n[0], batch);
  q.made = true;
  q.work = p->work;
  *p = q;
  if (work_size) *work_size = q.work_size;
  return CUFFT_SUCCESS;
}

cufftResult cufftSetWorkArea(cufftHandle plan, void* work_area) {
  std::lock_guard<std::mutex> lk(g_mu);
  Plan* p = live_plan(plan, "cufftSetWorkArea");
  if (!p) return CUFFT_INVALID_PLAN;
  p->work = work_area;
  return CUFFT_SUCCESS;
}

cufftResult cufftSetStream(cufftHandle plan, cudaStream_t stream) {
  std::lock_guard<std::mutex> lk(g_mu);
  Plan* p = live_plan(plan, "cufftSetStream");
  if (!p) return CUFFT_INVALID_PLAN;
  p->stream = stream;
  return CUFFT_SUCCESS;
}

cufftResult cufftExecR2C(cufftHandle plan, cufftReal* idata, cufftComplex* odata) {
  return exec("cufftExecR2C", plan, CUFFT_R2C, idata, odata, CUFFT_FORWARD);
}

cufftResult cufftExecC2R(cufftHandle plan, cufftComplex* idata, cufftReal* odata) {
  return exec("cufftExecC2R", plan, CUFFT_C2R, idata, odata, CUFFT_INVERSE);
}

cufftResult cufftExecC2C(cufftHandle plan, cufftComplex* idata, cufftComplex* odata, int direction) {
  return exec("cufftExecC2C", plan, CUFFT_C2C, idata, odata, direction);
}

}  // extern "C"
