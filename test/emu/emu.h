// emu.h: the internal API of the emulated CUDA device (test infrastructure
// only; never linked into the product). runtime.cpp implements it; the
// emulated cuBLASLt, cuFFT and NCCL code against it. See cuda_emu.h for the
// header a kernel source includes.
#pragma once
#include <cuda_runtime_api.h>
#include <cstddef>
#include <functional>

namespace emu {
// A device allocation (each cudaMalloc is its own host allocation).
struct Alloc { char* base; size_t bytes; };
const Alloc* find_alloc(const void* p);          // allocation holding p, or nullptr
bool in_device(const void* p, size_t bytes);     // [p, p+bytes) inside one allocation
// Queue work on a stream; it runs later, at a synchronisation point, in an
// order that respects only the declared dependencies (stream order,
// cudaStreamWaitEvent, the legacy default stream's implicit synchronisation).
void enqueue(cudaStream_t s, const char* what, std::function<void()> op);
// Run, now, everything that work newly queued on s would depend on (all of
// s's queue and what it waits for), as a synchronisation would, without
// reporting errors to the host. For NCCL, which must execute eagerly.
void drain(cudaStream_t s);
// Report a failure: prints "emu: <call>: <message>" on stderr, counts it
// (failures() returns the count, for tests), and for failures detected while
// executing queued work, makes the error sticky as a GPU fault is.
void fail(const char* call, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
int failures();
void set_sticky(cudaError_t e);                  // a fault inside queued work
}  // namespace emu
