// cuda_emu.h: the header a CUDA source includes instead of nvcc's implicit
// ones when it is compiled by g++ with -DBIGS_EMU, so that it runs on the CPU
// on an emulated device (test infrastructure; never in the product).
//
// It includes the real CUDA Toolkit headers (so the emulated build sees the
// real signatures, enums and constants; test/emu/runtime.cpp implements the
// runtime functions behind them) and emulates by hand what g++ cannot see:
//   - threadIdx, blockIdx, blockDim, gridDim, warpSize;
//   - __shared__ (static storage in one linker section, poisoned with 0xFF
//     bytes before every block: blocks run one at a time, so a static is
//     per block; a read of shared memory no thread of the block wrote gives NaN);
//   - __syncthreads (a real barrier among the block's threads, on fibers);
//   - kernel launches: emu::launch(kernel, grid, block, smem, stream, args...)
//     or EMU_LAUNCH(kernel, grid, block, smem, stream, args...), the
//     macro form deducing a kernel template's arguments as <<<...>>> does.
//   - atomicAdd/atomicMax/atomicMin/atomicExch on int/unsigned/float/double
//     (blocks and threads never run at once here, so plain read-modify-write).
#pragma once
#ifdef __CUDACC__
#error "cuda_emu.h is for the emulated build (g++ -DBIGS_EMU), not for nvcc"
#endif
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

#include "emu.h"

// __shared__: CUDA C++ Programming Guide, "Variable Memory Space Specifiers"
// (__shared__: one copy per block, lifetime of the block). Blocks of a grid
// run one after another on one host thread, so one static copy serves every
// block; the section lets the runtime find and poison all of them
// (__start_emu_shared / __stop_emu_shared, made by the GNU linker for a
// section whose name is a C identifier). `extern __shared__` (dynamic shared
// memory) is not supported (bigs does not use it).
// Limit: g++ (12, at least) drops the section attribute of a static local
// in a function template, so a template's __shared__ arrays are not
// poisoned: still one copy per block (correct), but a read of a slot no
// thread of the block wrote sees the previous block's value, not NaN.
// clang++ keeps the attribute (all poisoned).
#undef __shared__
#define __shared__ static __attribute__((section("emu_shared"), aligned(16)))

namespace emu {
// The running thread's coordinates (set by the runtime for each emulated
// thread; restored after a __syncthreads).
extern uint3 cur_threadIdx, cur_blockIdx;
extern dim3 cur_blockDim, cur_gridDim;

namespace detail {
// One launch, type-erased: run(pack) calls the kernel with the arguments in
// pack for the current thread; destroy(pack) frees it.
struct Launch {
  const char* name;  // for messages: the kernel's name, or null (then the runtime finds one)
  const void* func;  // the __global__ function (cudaFuncSetAttribute's key), or null
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  void (*run)(void*);
  void (*destroy)(void*);
  void* pack;
  const void* const* ptrs;  // the pointer-typed arguments, checked against device memory
  int nptrs;
};
void launch(const Launch& l);  // checks and queues; takes ownership of pack

template <class T>
inline void collect_pointer(const T& v, const void** out, int& n) {
  if constexpr (std::is_pointer_v<T>) out[n++] = (const void*)v;
  else (void)v;
}
template <class F, class Tup>
struct Pack {
  F f;
  Tup args;
  static void run(void* p) {
    Pack* k = static_cast<Pack*>(p);
    std::apply(k->f, k->args);  // each thread gets its own copy of the parameters
  }
  static void destroy(void* p) { delete static_cast<Pack*>(p); }
};
template <class F, class Tup>
void launch_pack(const char* name, const void* func, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                 Pack<F, Tup>* pack) {
  constexpr size_t n = std::tuple_size_v<Tup>;
  const void* ptrs[n + 1];
  int np = 0;
  std::apply([&](const auto&... v) { (collect_pointer(v, ptrs, np), ...); }, pack->args);
  launch(Launch{name, func, grid, block, smem, stream, &Pack<F, Tup>::run, &Pack<F, Tup>::destroy, pack, ptrs, np});
}
}  // namespace detail

// kernel<<<grid, block, smem, stream>>>(args...): the arguments are converted
// to the kernel's parameter types at the call, as a launch does (CUDA C++
// Programming Guide, "Execution Configuration").
template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "emu::launch: the argument count differs from the kernel's");
  using Tup = std::tuple<std::decay_t<P>...>;
  using F = void (*)(P...);
  auto* pack = new detail::Pack<F, Tup>{kernel, Tup(std::forward<A>(args)...)};
  detail::launch_pack(nullptr, (const void*)kernel, grid, block, smem, stream, pack);
}

// The macro form's worker: f is a generic lambda that calls the kernel by
// name, so a kernel template's arguments are deduced from the (decayed)
// argument types as in kernel<<<...>>>(args...).
template <class F, class... A>
void launch_deduced(const char* name, F f, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
  using Tup = std::tuple<std::decay_t<A>...>;
  auto* pack = new detail::Pack<F, Tup>{f, Tup(std::forward<A>(args)...)};
  detail::launch_pack(name, nullptr, grid, block, smem, stream, pack);
}
}  // namespace emu

#define EMU_LAUNCH(kernel, grid, block, smem, stream, ...)                                                  \
  ::emu::launch_deduced(                                                                                    \
      #kernel, [](auto&... emu_a) { kernel(emu_a...); }, dim3(grid), dim3(block), (size_t)(smem), (stream), \
      ##__VA_ARGS__)

// Built-in variables (CUDA C++ Programming Guide, "Built-in Variables"):
// read-only for the kernel.
#define threadIdx (static_cast<const uint3&>(::emu::cur_threadIdx))
#define blockIdx (static_cast<const uint3&>(::emu::cur_blockIdx))
#define blockDim (static_cast<const dim3&>(::emu::cur_blockDim))
#define gridDim (static_cast<const dim3&>(::emu::cur_gridDim))
#define warpSize 32

// CUDA Math API: min and max at global scope, as nvcc provides them to
// device code (overloaded there for each integer and floating type; bigs
// calls them with two arguments of one type, which this template covers).
template <class T, class = std::enable_if_t<std::is_arithmetic_v<T>>>
inline T min(T a, T b) {
  return b < a ? b : a;
}
template <class T, class = std::enable_if_t<std::is_arithmetic_v<T>>>
inline T max(T a, T b) {
  return a < b ? b : a;
}

// CUDA C++ Programming Guide, "Synchronization Functions": waits until every
// thread of the block has reached it; allowed in conditional code only if
// the condition is the same across the block (else the emulator reports it).
// The barrier is known by its place in the source (file and line), which an
// optimiser cannot duplicate the way it duplicates a call's return address.
namespace emu {
void syncthreads_at(const char* file, int line);
}
#define __syncthreads() ::emu::syncthreads_at(__FILE__, __LINE__)

// CUDA C++ Programming Guide, "Atomic Functions": return the old value.
// Emulated threads never run at the same time, so plain code is atomic here.
template <class T>
inline T atomicAdd(T* p, T v) {
  static_assert(std::is_same_v<T, int> || std::is_same_v<T, unsigned> || std::is_same_v<T, float> ||
                    std::is_same_v<T, double> || std::is_same_v<T, unsigned long long>,
                "atomicAdd: a type CUDA has no atomicAdd for");
  T old = *p;
  *p = old + v;
  return old;
}
template <class T>
inline T atomicMax(T* p, T v) {
  static_assert(std::is_integral_v<T>, "atomicMax: integers only in CUDA");
  T old = *p;
  if (v > old) *p = v;
  return old;
}
template <class T>
inline T atomicMin(T* p, T v) {
  static_assert(std::is_integral_v<T>, "atomicMin: integers only in CUDA");
  T old = *p;
  if (v < old) *p = v;
  return old;
}
template <class T>
inline T atomicExch(T* p, T v) {
  T old = *p;
  *p = v;
  return old;
}
