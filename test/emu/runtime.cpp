// runtime.cpp: the emulated CUDA runtime (test infrastructure for bigs; never
// linked into the product). Implements, with the real signatures from
// cuda_runtime_api.h, the runtime calls bigs uses, and the internal API of
// emu.h. Strict: where a GPU would fail, the call fails with the same error
// code and one line "emu: <call>: <what>" on stderr.
//
// Environment:
//   BIGS_EMU_CARD   h100 (default: 80 GiB), h200 (141 GiB), or a size: 2GB, 512MB (GB = 2^30 bytes)
//   BIGS_EMU_SEED   seed of the block order and of the random queue order (default 1)
//   BIGS_EMU_ORDER  how queued work that is not ordered runs at a synchronisation:
//                   lifo (default: newest first, so a missing dependency in
//                   either direction shows), random (seeded), fifo
//   BIGS_EMU_DEVICES  how many devices cudaGetDeviceCount reports (default 1)
// cudaDeviceReset reads them again.
#include <cxxabi.h>
#include <dlfcn.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cuda_emu.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

// The __shared__ variables of the whole program (see cuda_emu.h); weak, so a
// program without any links.
extern "C" char __start_emu_shared[] __attribute__((weak));
extern "C" char __stop_emu_shared[] __attribute__((weak));

namespace emu {
uint3 cur_threadIdx, cur_blockIdx;
dim3 cur_blockDim, cur_gridDim;

namespace {

// Device limits of an sm_90 part (H100/H200): CUDA C++ Programming Guide,
// "Compute Capabilities", table "Technical Specifications per Compute
// Capability" (9.0): 1024 threads per block; block x, y at most 1024, z at
// most 64; grid x at most 2^31-1, y and z at most 65535; 48 KB of shared
// memory per block without opting in, 227 KB with
// cudaFuncAttributeMaxDynamicSharedMemorySize (Programming Guide, "Shared
// Memory" for compute capability 9.0).
constexpr unsigned kMaxThreads = 1024, kMaxBlockXY = 1024, kMaxBlockZ = 64;
constexpr unsigned kMaxGridX = 0x7fffffffu, kMaxGridYZ = 65535;
constexpr size_t kSharedDefault = 48 * 1024, kSharedOptin = 227 * 1024;
constexpr size_t kGiB = size_t(1) << 30;

enum class Order { Lifo, Fifo, Random };

struct Op {
  std::string what;
  std::function<void()> fn;
  std::vector<uint64_t> preds;
};
struct Stream {
  unsigned flags = 0;  // cudaStreamNonBlocking or 0
  int priority = 0;
  uint64_t last = 0;   // id of the newest op queued on it
  bool legacy = false;
};
struct Event {
  unsigned flags = 0;
  bool recorded = false, done = false;
  uint64_t op = 0;
  double when = 0;  // seconds, when its marker ran
};

struct State {
  std::recursive_mutex mu;
  // memory
  std::map<uintptr_t, Alloc> allocs;  // by base
  std::unordered_map<uintptr_t, uint64_t> alloc_serial;
  std::unordered_set<uintptr_t> freed;  // bases freed and not handed out again
  uint64_t serial = 0;
  size_t used = 0, card = 80 * kGiB;
  // streams, events, queued work
  Stream legacy, per_thread;
  std::set<Stream*> streams;  // created ones, alive
  std::set<Event*> events;
  std::unordered_map<uint64_t, Op> pending;
  uint64_t next_op = 0;
  // errors
  int failures = 0;
  cudaError_t sticky = cudaSuccess;
  bool executing = false;  // inside queued work
  // configuration
  Order order = Order::Lifo;
  uint64_t seed = 1, rng = 1;
  int devices = 1, device = 0;
  std::map<const void*, int> max_dynamic_smem;  // cudaFuncSetAttribute
  bool inited = false;
};

State& st() {
  static State* s = new State;  // never destroyed: teardown runs at exit
  return *s;
}
thread_local cudaError_t t_last_error = cudaSuccess;

uint64_t next_random(State& s) {  // splitmix64
  uint64_t z = (s.rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void teardown();

bool parse_size(const char* v, size_t* out) {
  char* end = nullptr;
  double x = strtod(v, &end);
  if (end == v || !(x > 0)) return false;
  std::string u(end);
  for (char& c : u) c = (char)tolower((unsigned char)c);
  double mult = 1;
  if (u == "gb" || u == "gib" || u == "g") mult = (double)kGiB;
  else if (u == "mb" || u == "mib" || u == "m") mult = 1024.0 * 1024;
  else if (u == "kb" || u == "kib" || u == "k") mult = 1024;
  else if (!u.empty() && u != "b") return false;
  *out = (size_t)(x * mult);
  return true;
}

void configure(State& s) {
  s.card = 80 * kGiB;
  if (const char* v = getenv("BIGS_EMU_CARD")) {
    std::string c(v);
    if (c == "h100") s.card = 80 * kGiB;
    else if (c == "h200") s.card = 141 * kGiB;
    else if (!parse_size(v, &s.card)) {
      fprintf(stderr, "emu: BIGS_EMU_CARD: '%s' is not h100, h200 or a size like 2GB\n", v);
      exit(2);
    }
  }
  s.seed = 1;
  if (const char* v = getenv("BIGS_EMU_SEED")) s.seed = strtoull(v, nullptr, 10);
  s.rng = s.seed;
  s.order = Order::Lifo;
  if (const char* v = getenv("BIGS_EMU_ORDER")) {
    std::string o(v);
    if (o == "lifo") s.order = Order::Lifo;
    else if (o == "fifo") s.order = Order::Fifo;
    else if (o == "random") s.order = Order::Random;
    else {
      fprintf(stderr, "emu: BIGS_EMU_ORDER: '%s' is not lifo, fifo or random\n", v);
      exit(2);
    }
  }
  s.devices = 1;
  if (const char* v = getenv("BIGS_EMU_DEVICES")) s.devices = std::max(1, atoi(v));
}

// Every API call: the lock, the configuration on first use.
struct Api {
  std::lock_guard<std::recursive_mutex> lock;
  State& s;
  Api() : lock(st().mu), s(st()) {
    if (!s.inited) {
      s.inited = true;
      s.legacy.legacy = true;
      configure(s);
      atexit(teardown);
    }
  }
};

// A failed call: the message, and the error as cudaGetLastError's.
cudaError_t err(const char* call, cudaError_t e, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
cudaError_t err(const char* call, cudaError_t e, const char* fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fail(call, "%s (%s)", msg, cudaGetErrorName(e));
  t_last_error = e;
  return e;
}
// The sticky error, if the context has faulted: CUDA Runtime API, "Error
// Handling": after a sticky error every later call returns it.
cudaError_t sticky_or(cudaError_t e) {
  State& s = st();
  if (s.sticky != cudaSuccess) {
    t_last_error = s.sticky;
    return s.sticky;
  }
  return e;
}

// ---------------------------------------------------------------------------
// Streams and queued work. CUDA C++ Programming Guide, "Streams" and
// "Default Stream" / "Implicit Synchronization": work in one stream runs in
// order; work in different streams is unordered unless an event wait
// (cudaStreamWaitEvent) orders it; the legacy default stream waits for all
// blocking streams and they wait for it (streams made with
// cudaStreamNonBlocking are exempt: CUDA Runtime API, "Stream
// synchronization behavior").

Stream* stream_of(cudaStream_t h) {
  State& s = st();
  if (h == nullptr || h == cudaStreamLegacy) return &s.legacy;
  if (h == cudaStreamPerThread) return &s.per_thread;
  Stream* p = reinterpret_cast<Stream*>(h);
  return s.streams.count(p) ? p : nullptr;
}

uint64_t enqueue_on(Stream* q, const char* what, std::function<void()> fn, std::vector<uint64_t> extra = {}) {
  State& s = st();
  Op op;
  op.what = what;
  op.fn = std::move(fn);
  op.preds = std::move(extra);
  auto add = [&](uint64_t id) {
    if (id && s.pending.count(id)) op.preds.push_back(id);
  };
  add(q->last);
  if (q->legacy) {
    for (Stream* o : s.streams)
      if (!(o->flags & cudaStreamNonBlocking)) add(o->last);
    add(s.per_thread.last);
  } else if (!(q->flags & cudaStreamNonBlocking)) {
    add(s.legacy.last);
  }
  uint64_t id = ++s.next_op;
  s.pending.emplace(id, std::move(op));
  q->last = id;
  return id;
}

// Run the ops in roots and everything they depend on, in an order that
// respects only the dependencies (Kahn's algorithm; the choice among ready
// ops is the adversary's).
void run_ops(const std::vector<uint64_t>& roots) {
  State& s = st();
  std::vector<uint64_t> need, stack(roots.begin(), roots.end());
  std::unordered_set<uint64_t> seen;
  while (!stack.empty()) {
    uint64_t id = stack.back();
    stack.pop_back();
    auto it = s.pending.find(id);
    if (it == s.pending.end() || !seen.insert(id).second) continue;
    need.push_back(id);
    for (uint64_t p : it->second.preds) stack.push_back(p);
  }
  if (need.empty()) return;
  std::unordered_map<uint64_t, int> indeg;
  std::unordered_map<uint64_t, std::vector<uint64_t>> succ;
  for (uint64_t id : need) {
    int d = 0;
    for (uint64_t p : s.pending[id].preds)
      if (seen.count(p)) {
        d++;
        succ[p].push_back(id);
      }
    indeg[id] = d;
  }
  std::vector<uint64_t> ready;
  for (uint64_t id : need)
    if (!indeg[id]) ready.push_back(id);
  while (!ready.empty()) {
    size_t k = 0;
    if (s.order == Order::Random) {
      k = next_random(s) % ready.size();
    } else {
      for (size_t i = 1; i < ready.size(); i++)
        if ((s.order == Order::Lifo) ? ready[i] > ready[k] : ready[i] < ready[k]) k = i;
    }
    uint64_t id = ready[k];
    ready[k] = ready.back();
    ready.pop_back();
    Op op = std::move(s.pending[id]);
    s.pending.erase(id);
    // A faulted context runs nothing more (its work is lost, as on a GPU).
    if (s.sticky == cudaSuccess && op.fn) {
      s.executing = true;
      op.fn();
      s.executing = false;
    }
    for (uint64_t n : succ[id])
      if (--indeg[n] == 0) ready.push_back(n);
  }
}

void run_all() {
  State& s = st();
  std::vector<uint64_t> all;
  for (auto& kv : s.pending) all.push_back(kv.first);
  run_ops(all);
}

// ---------------------------------------------------------------------------
// Memory.

enum class Where { Host, Device, Straddles };
Where where(const void* p, size_t bytes) {
  const Alloc* a = find_alloc(p);
  if (!a) return Where::Host;
  return (size_t)((const char*)p - a->base) + bytes <= a->bytes ? Where::Device : Where::Straddles;
}
const char* where_name(Where w) { return w == Where::Host ? "host" : w == Where::Device ? "device" : "device (past the end)"; }

// ---------------------------------------------------------------------------
// Kernels: blocks run one at a time in a seeded permutation of the grid
// (CUDA C++ Programming Guide, "Thread Hierarchy": blocks are required to
// execute independently, in any order); a block's threads run on fibers, one
// after another on the same stack until one reaches __syncthreads, which
// parks it (its stack kept) and starts the next thread on a fresh stack.
// Stack switches after a fiber's first entry are GCC's __builtin_setjmp /
// __builtin_longjmp (no signal mask syscall, unlike swapcontext; and, unlike
// the libc _longjmp, not intercepted by ASan, whose interceptor unpoisons
// the stack on every jump and made a barrier 20x slower), announced to ASan
// with its fiber API when it is on.

constexpr size_t kStack = 256 * 1024;  // per emulated thread that waits at a barrier

struct Fiber {
  void* jb[5];  // __builtin_setjmp's buffer
  char* lo;  // usable stack (above a guard page)
  size_t size;
  void* fake = nullptr;  // ASan's fake stack while switched away
};

void* g_sched_jb[5];

// __builtin_longjmp may not be in the function that calls __builtin_setjmp.
// The switching functions are noipa: a caller must not keep values in
// call-clobbered registers across them on the strength of what their body
// clobbers (GCC's -fipa-ra), since another fiber's code runs in between.
[[noreturn]] __attribute__((noipa)) void jump(void** jb) { __builtin_longjmp(jb, 1); }
void* g_sched_fake = nullptr;
const void* g_sched_lo = nullptr;
size_t g_sched_size = 0;
Fiber* g_cur = nullptr;
std::vector<Fiber*>& g_free = *new std::vector<Fiber*>;  // never destroyed: LSan sees the fibers at exit

struct BlockRun {
  void (*run)(void*) = nullptr;
  void* pack = nullptr;
  unsigned n = 0, next = 0, finished = 0;
  bool reverse = false;
  std::vector<Fiber*> waiting;
  const char* site = nullptr;  // the first barrier's file and line (__syncthreads)
  int line = 0;
  bool site_mismatch = false, in_kernel = false;
} g_blk;

inline void asan_start(void** save, const void* lo, size_t size) {
#if EMU_ASAN
  __sanitizer_start_switch_fiber(save, lo, size);
#else
  (void)save, (void)lo, (void)size;
#endif
}
inline void asan_finish(void* save, const void** lo, size_t* size) {
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(save, lo, size);
#else
  (void)save, (void)lo, (void)size;
#endif
}

void set_thread(unsigned t) {
  unsigned i = g_blk.reverse ? g_blk.n - 1 - t : t;
  unsigned bx = cur_blockDim.x, by = cur_blockDim.y;
  cur_threadIdx = make_uint3(i % bx, (i / bx) % by, i / (bx * by));
}

// Fiber -> scheduler; returns when the scheduler resumes this fiber.
__attribute__((noipa)) void to_scheduler(Fiber* f) {
  if (!__builtin_setjmp(f->jb)) {
    asan_start(&f->fake, g_sched_lo, g_sched_size);
    jump(g_sched_jb);
  }
  asan_finish(f->fake, &g_sched_lo, &g_sched_size);
}

void fiber_main() {
  asan_finish(nullptr, &g_sched_lo, &g_sched_size);
  for (;;) {
    while (g_blk.next < g_blk.n) {  // threads not started yet: run them straight through
      set_thread(g_blk.next++);
      g_blk.run(g_blk.pack);
      g_blk.finished++;
    }
    Fiber* f = g_cur;
    g_free.push_back(f);
    to_scheduler(f);
  }
}

// Scheduler -> fiber f; returns when f parks at a barrier or runs out of threads.
__attribute__((noipa)) void resume(Fiber* f) {
  g_cur = f;
  if (!__builtin_setjmp(g_sched_jb)) {
    asan_start(&g_sched_fake, f->lo, f->size);
    jump(f->jb);
  }
  asan_finish(g_sched_fake, nullptr, nullptr);
}

__attribute__((noipa)) void start_new_fiber() {
  Fiber* f = new Fiber;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  char* m = (char*)mmap(nullptr, kStack + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    perror("emu: fiber stack: mmap");
    abort();
  }
  mprotect(m, page, PROT_NONE);  // a guard page: a stack overflow faults
  f->lo = m + page;
  f->size = kStack;
  static ucontext_t uc, here;
  getcontext(&uc);
  uc.uc_stack.ss_sp = f->lo;
  uc.uc_stack.ss_size = f->size;
  uc.uc_link = nullptr;
  makecontext(&uc, fiber_main, 0);
  g_cur = f;
  if (!__builtin_setjmp(g_sched_jb)) {
    asan_start(&g_sched_fake, f->lo, f->size);
    swapcontext(&here, &uc);  // first entry only; it jumps back with jump()
  }
  asan_finish(g_sched_fake, nullptr, nullptr);
}

void poison_shared() {
  uintptr_t lo = (uintptr_t)__start_emu_shared, hi = (uintptr_t)__stop_emu_shared;
  if (lo && hi > lo) memset(__start_emu_shared, 0xFF, hi - lo);
}

// Runs one block; returns false when its threads did not all reach the same
// barriers (reported).
bool run_block(const char* name) {
  g_blk.next = g_blk.finished = 0;
  g_blk.waiting.clear();
  bool ok = true;
  auto check_phase = [&]() {
    if (g_blk.waiting.empty() || !ok) return;
    if (g_blk.finished > 0 || g_blk.site_mismatch) {
      fail(name,
           "block (%u,%u,%u): __syncthreads not reached by all %u threads alike (%zu waiting at a barrier, %u "
           "exited%s): a barrier in divergent code (Programming Guide, \"Synchronization Functions\")",
           cur_blockIdx.x, cur_blockIdx.y, cur_blockIdx.z, g_blk.n, g_blk.waiting.size(), g_blk.finished,
           g_blk.site_mismatch ? ", or waiting at different __syncthreads" : "");
      ok = false;
    }
  };
  g_blk.site = nullptr;
  g_blk.site_mismatch = false;
  while (g_blk.next < g_blk.n) {
    if (g_free.empty()) start_new_fiber();
    else {
      Fiber* f = g_free.back();
      g_free.pop_back();
      resume(f);
    }
  }
  while (!g_blk.waiting.empty()) {  // a barrier: everyone has arrived
    check_phase();
    std::vector<Fiber*> now;
    now.swap(g_blk.waiting);
    g_blk.site = nullptr;
    g_blk.site_mismatch = false;
    if (g_blk.reverse) std::reverse(now.begin(), now.end());
    for (Fiber* f : now) resume(f);
  }
  return ok;
}

struct KernelRun {
  std::string name;
  dim3 grid, block;
  void (*run)(void*);
  void (*destroy)(void*);
  void* pack;
  uint64_t seed;
  ~KernelRun() { destroy(pack); }
};

void run_grid(KernelRun& k) {
  State& s = st();
  uint64_t gx = k.grid.x, gy = k.grid.y, gz = k.grid.z, total = gx * gy * gz;
  // A seeded permutation of the blocks: b -> (a b + c) mod total, a coprime to total.
  uint64_t a = 1, c = 0;
  if (total > 1) {
    uint64_t r = k.seed;
    a = (r % total) | 1;
    while (std::gcd(a, total) != 1) a++;
    c = (r >> 32) % total;
    if (a == 1 && c == 0) c = total - 1;  // never the natural order
  }
  cur_gridDim = k.grid;
  cur_blockDim = k.block;
  g_blk.run = k.run;
  g_blk.pack = k.pack;
  g_blk.n = k.block.x * k.block.y * k.block.z;
  g_blk.in_kernel = true;
  uint64_t bits = k.seed;
  for (uint64_t i = 0; i < total; i++) {
    uint64_t b = (uint64_t)(((unsigned __int128)a * i + c) % total);
    cur_blockIdx = make_uint3((unsigned)(b % gx), (unsigned)((b / gx) % gy), (unsigned)(b / (gx * gy)));
    if (i % 64 == 0) bits = next_random(s);
    g_blk.reverse = (bits >> (i % 64)) & 1;
    poison_shared();
    if (!run_block(k.name.c_str())) {
      g_blk.in_kernel = false;
      set_sticky(cudaErrorLaunchFailure);
      return;
    }
  }
  g_blk.in_kernel = false;
}

std::string kernel_name(const void* func) {
  Dl_info info;
  if (func && dladdr(func, &info) && info.dli_sname) {
    int status = 0;
    char* d = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    std::string r = status == 0 && d ? d : info.dli_sname;
    free(d);
    return r;
  }
  char buf[64];
  snprintf(buf, sizeof buf, "kernel at %p", func);
  return buf;
}

// ---------------------------------------------------------------------------
void teardown() {
  State& s = st();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  if (s.allocs.empty()) return;
  size_t bytes = 0;
  uint64_t first = UINT64_MAX;
  const Alloc* fa = nullptr;
  for (auto& kv : s.allocs) {
    bytes += kv.second.bytes;
    uint64_t n = s.alloc_serial[kv.first];
    if (n < first) first = n, fa = &kv.second;
  }
  fprintf(stderr,
          "emu: teardown: %zu device allocation(s) never freed, %zu bytes in all; the oldest: cudaMalloc #%" PRIu64
          " of %zu bytes at %p\n",
          s.allocs.size(), bytes, first, fa->bytes, (void*)fa->base);
  s.failures++;
}

}  // namespace

// ---------------------------------------------------------------------------
// emu.h

const Alloc* find_alloc(const void* p) {
  State& s = st();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  auto it = s.allocs.upper_bound((uintptr_t)p);
  if (it == s.allocs.begin()) return nullptr;
  --it;
  const Alloc& a = it->second;
  return (uintptr_t)p < (uintptr_t)a.base + a.bytes ? &a : nullptr;
}

bool in_device(const void* p, size_t bytes) {
  const Alloc* a = find_alloc(p);
  return a && (size_t)((const char*)p - a->base) + bytes <= a->bytes;
}

void enqueue(cudaStream_t h, const char* what, std::function<void()> op) {
  Api api;
  Stream* q = stream_of(h);
  if (!q) {
    fail(what, "stream %p is not a live stream", (void*)h);
    return;
  }
  enqueue_on(q, what, std::move(op));
}

void drain(cudaStream_t h) {
  Api api;
  Stream* q = stream_of(h);
  if (!q) return;
  // Work newly queued on q would depend on q's last op and, for a stream
  // that synchronises with the legacy stream, on the legacy stream's (and
  // the legacy stream's on every blocking stream's).
  std::vector<uint64_t> roots{q->last};
  if (q->legacy) {
    for (Stream* o : api.s.streams)
      if (!(o->flags & cudaStreamNonBlocking)) roots.push_back(o->last);
    roots.push_back(api.s.per_thread.last);
  } else if (!(q->flags & cudaStreamNonBlocking)) {
    roots.push_back(api.s.legacy.last);
  }
  run_ops(roots);
}

void fail(const char* call, const char* fmt, ...) {
  State& s = st();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "emu: %s: %s\n", call, msg);
  s.failures++;
  if (s.executing && s.sticky == cudaSuccess) s.sticky = cudaErrorLaunchFailure;
}

int failures() {
  State& s = st();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  return s.failures;
}

void set_sticky(cudaError_t e) {
  State& s = st();
  std::lock_guard<std::recursive_mutex> lock(s.mu);
  s.sticky = e;
}

namespace detail {
void launch(const Launch& l) {
  Api api;
  State& s = api.s;
  std::unique_ptr<KernelRun> k(new KernelRun{l.name ? l.name : kernel_name(l.func), l.grid, l.block, l.run,
                                             l.destroy, l.pack, next_random(s)});
  const char* name = k->name.c_str();
  if (s.sticky != cudaSuccess) {
    t_last_error = s.sticky;
    return;
  }
  Stream* q = stream_of(l.stream);
  if (!q) {
    err(name, cudaErrorInvalidResourceHandle, "launch on stream %p, which is not a live stream", (void*)l.stream);
    return;
  }
  // CUDA Runtime API, cudaErrorInvalidConfiguration: "a kernel launch is
  // requesting resources that can never be satisfied by the current device.
  // Requesting more shared memory per block than the device supports will
  // trigger this error, as will requesting too many threads or blocks."
  const dim3 &b = l.block, &g = l.grid;
  uint64_t threads = (uint64_t)b.x * b.y * b.z;
  if (!b.x || !b.y || !b.z || b.x > kMaxBlockXY || b.y > kMaxBlockXY || b.z > kMaxBlockZ || threads > kMaxThreads) {
    err(name, cudaErrorInvalidConfiguration,
        "block (%u,%u,%u) = %" PRIu64 " threads: at most 1024 threads, x and y at most 1024, z at most 64", b.x, b.y,
        b.z, threads);
    return;
  }
  if (!g.x || !g.y || !g.z || g.x > kMaxGridX || g.y > kMaxGridYZ || g.z > kMaxGridYZ) {
    err(name, cudaErrorInvalidConfiguration, "grid (%u,%u,%u): x at most 2^31-1, y and z at most 65535, none 0", g.x,
        g.y, g.z);
    return;
  }
  size_t limit = kSharedDefault;
  if (l.func) {
    auto it = s.max_dynamic_smem.find(l.func);
    if (it != s.max_dynamic_smem.end()) limit = std::max(limit, (size_t)it->second);
  }
  if (l.smem > limit) {
    err(name, cudaErrorInvalidConfiguration,
        "%zu bytes of dynamic shared memory: more than the %zu allowed (above 48 KB needs "
        "cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize), at most 227 KB)",
        l.smem, limit);
    return;
  }
  // A pointer argument must point into device memory (or be null, or one
  // past an allocation's end): a host address faults on the GPU
  // (cudaErrorIllegalAddress, sticky: CUDA Runtime API, "Error Handling").
  for (int i = 0; i < l.nptrs; i++) {
    const char* p = (const char*)l.ptrs[i];
    if (!p || find_alloc(p) || find_alloc(p - 1)) continue;
    fail(name, "pointer argument %p (the %d%s pointer argument) is not in device memory: the kernel would fault",
         (const void*)p, i + 1, i == 0 ? "st" : i == 1 ? "nd" : i == 2 ? "rd" : "th");
    s.sticky = cudaErrorIllegalAddress;
    t_last_error = s.sticky;
    return;
  }
  KernelRun* kr = k.release();
  std::shared_ptr<KernelRun> owned(kr);
  enqueue_on(q, name, [owned]() { run_grid(*owned); });
}
}  // namespace detail
}  // namespace emu

void emu::syncthreads_at(const char* file, int line) {
  using namespace emu;
  if (!g_blk.in_kernel) {
    fail("__syncthreads", "called outside a kernel");
    return;
  }
  if (!g_blk.site) g_blk.site = file, g_blk.line = line;
  else if (g_blk.line != line || strcmp(g_blk.site, file) != 0) g_blk.site_mismatch = true;
  uint3 me = cur_threadIdx;
  Fiber* f = g_cur;
  g_blk.waiting.push_back(f);
  to_scheduler(f);
  g_cur = f;
  cur_threadIdx = me;
}

// ---------------------------------------------------------------------------
// The runtime API (CUDA Runtime API reference, by module).
using emu::Api;
using emu::err;
using emu::sticky_or;

// Error Handling.
extern "C" {

cudaError_t cudaGetLastError(void) {
  Api api;
  cudaError_t e = emu::t_last_error;
  if (api.s.sticky != cudaSuccess) return api.s.sticky;
  emu::t_last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) {
  Api api;
  if (api.s.sticky != cudaSuccess) return api.s.sticky;
  return emu::t_last_error;
}

#define EMU_ERRORS(X)                                                                            \
  X(cudaSuccess, "no error")                                                                     \
  X(cudaErrorInvalidValue, "invalid argument")                                                   \
  X(cudaErrorMemoryAllocation, "out of memory")                                                  \
  X(cudaErrorInitializationError, "initialization error")                                        \
  X(cudaErrorInvalidConfiguration, "invalid configuration argument")                             \
  X(cudaErrorInvalidDevicePointer, "invalid device pointer")                                     \
  X(cudaErrorInvalidMemcpyDirection, "invalid copy direction for memcpy")                        \
  X(cudaErrorInvalidDevice, "invalid device ordinal")                                            \
  X(cudaErrorInvalidResourceHandle, "invalid resource handle")                                   \
  X(cudaErrorInvalidDeviceFunction, "invalid device function")                                   \
  X(cudaErrorNotReady, "device not ready")                                                       \
  X(cudaErrorIllegalAddress, "an illegal memory access was encountered")                         \
  X(cudaErrorLaunchOutOfResources, "too many resources requested for launch")                    \
  X(cudaErrorLaunchFailure, "unspecified launch failure")                                        \
  X(cudaErrorNoDevice, "no CUDA-capable device is detected")                                     \
  X(cudaErrorNotSupported, "operation not supported")                                            \
  X(cudaErrorUnknown, "unknown error")

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
#define EMU_STR(code, text) \
  case code:                \
    return text;
    EMU_ERRORS(EMU_STR)
#undef EMU_STR
    default:
      return "unrecognized error code";
  }
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
#define EMU_NAME(code, text) \
  case code:                 \
    return #code;
    EMU_ERRORS(EMU_NAME)
#undef EMU_NAME
    default:
      return "cudaErrorUnknown";
  }
}

// Device Management.
cudaError_t cudaGetDeviceCount(int* count) {
  Api api;
  if (!count) return err("cudaGetDeviceCount", cudaErrorInvalidValue, "count is null");
  *count = api.s.devices;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  Api api;
  if (device < 0 || device >= api.s.devices)
    return err("cudaSetDevice", cudaErrorInvalidDevice, "device %d of %d", device, api.s.devices);
  api.s.device = device;
  return sticky_or(cudaSuccess);
}

cudaError_t cudaGetDevice(int* device) {
  Api api;
  if (!device) return err("cudaGetDevice", cudaErrorInvalidValue, "device is null");
  *device = api.s.device;
  return sticky_or(cudaSuccess);
}

// The values of an H100 SXM (compute capability 9.0; CUDA C++ Programming
// Guide, "Compute Capabilities").
cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  Api api;
  if (!value) return err("cudaDeviceGetAttribute", cudaErrorInvalidValue, "value is null");
  if (device < 0 || device >= api.s.devices)
    return err("cudaDeviceGetAttribute", cudaErrorInvalidDevice, "device %d of %d", device, api.s.devices);
  int v;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: v = 1024; break;
    case cudaDevAttrMaxBlockDimX: v = 1024; break;
    case cudaDevAttrMaxBlockDimY: v = 1024; break;
    case cudaDevAttrMaxBlockDimZ: v = 64; break;
    case cudaDevAttrMaxGridDimX: v = 0x7fffffff; break;
    case cudaDevAttrMaxGridDimY: v = 65535; break;
    case cudaDevAttrMaxGridDimZ: v = 65535; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: v = 48 * 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: v = 227 * 1024; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: v = 228 * 1024; break;
    case cudaDevAttrWarpSize: v = 32; break;
    case cudaDevAttrMultiProcessorCount: v = 132; break;
    case cudaDevAttrComputeCapabilityMajor: v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: v = 0; break;
    case cudaDevAttrL2CacheSize: v = 50 * 1024 * 1024; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: v = 2048; break;
    case cudaDevAttrMaxRegistersPerBlock: v = 65536; break;
    case cudaDevAttrTotalConstantMemory: v = 65536; break;
    case cudaDevAttrGlobalMemoryBusWidth: v = 5120; break;
    case cudaDevAttrConcurrentKernels: v = 1; break;
    case cudaDevAttrUnifiedAddressing: v = 1; break;
    default:
      return err("cudaDeviceGetAttribute", cudaErrorInvalidValue, "attribute %d is not emulated", (int)attr);
  }
  *value = v;
  return sticky_or(cudaSuccess);
}

// H100: priorities 0 (least) to -5 (greatest).
cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  Api api;
  if (least) *least = 0;
  if (greatest) *greatest = -5;
  return sticky_or(cudaSuccess);
}

cudaError_t cudaDeviceSynchronize(void) {
  Api api;
  emu::run_all();
  return sticky_or(cudaSuccess);
}

// Destroys the context: its memory, streams, events and queued work go; the
// sticky error is cleared (CUDA Runtime API, cudaDeviceReset). The
// configuration is read again from the environment.
cudaError_t cudaDeviceReset(void) {
  Api api;
  emu::State& s = api.s;
  s.pending.clear();
  for (auto& kv : s.allocs) free(kv.second.base);
  s.allocs.clear();
  s.alloc_serial.clear();
  s.freed.clear();
  s.used = 0;
  for (emu::Stream* q : s.streams) delete q;
  s.streams.clear();
  for (emu::Event* e : s.events) delete e;
  s.events.clear();
  s.legacy = emu::Stream();
  s.legacy.legacy = true;
  s.per_thread = emu::Stream();
  s.max_dynamic_smem.clear();
  s.sticky = cudaSuccess;
  emu::t_last_error = cudaSuccess;
  emu::configure(s);
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  Api api;
  if (!func) return err("cudaFuncSetAttribute", cudaErrorInvalidDeviceFunction, "func is null");
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || (size_t)value > emu::kSharedOptin)
      return err("cudaFuncSetAttribute", cudaErrorInvalidValue,
                 "cudaFuncAttributeMaxDynamicSharedMemorySize %d: more than the 227 KB of an sm_90 block", value);
    api.s.max_dynamic_smem[func] = value;
  } else if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) {
    if (value < -1 || value > 100)
      return err("cudaFuncSetAttribute", cudaErrorInvalidValue, "carveout %d: not -1 or 0..100", value);
  } else {
    return err("cudaFuncSetAttribute", cudaErrorInvalidValue, "attribute %d is not emulated", (int)attr);
  }
  return sticky_or(cudaSuccess);
}

// Memory Management.
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  Api api;
  if (!free_bytes || !total) return err("cudaMemGetInfo", cudaErrorInvalidValue, "null argument");
  *total = api.s.card;
  *free_bytes = api.s.card - std::min(api.s.card, api.s.used);
  return sticky_or(cudaSuccess);
}

// Each allocation is its own host allocation, 256-byte aligned as
// cudaMalloc's are ("aligned for any kind of variable"), filled with 0xFF
// bytes (NaN as float and bf16) so that a read of memory nobody wrote shows.
cudaError_t cudaMalloc(void** ptr, size_t size) {
  Api api;
  emu::State& s = api.s;
  if (!ptr) return err("cudaMalloc", cudaErrorInvalidValue, "devPtr is null");
  if (s.sticky != cudaSuccess) return sticky_or(cudaSuccess);
  if (size == 0) {
    *ptr = nullptr;
    return cudaSuccess;
  }
  if (size > s.card - std::min(s.card, s.used))
    return err("cudaMalloc", cudaErrorMemoryAllocation, "%zu bytes: only %zu of the card's %zu bytes are free", size,
               s.card - std::min(s.card, s.used), s.card);
  void* p = nullptr;
  if (posix_memalign(&p, 256, size) != 0 || !p)
    return err("cudaMalloc", cudaErrorMemoryAllocation, "%zu bytes: the host is out of memory", size);
  memset(p, 0xFF, size);
  s.allocs[(uintptr_t)p] = emu::Alloc{(char*)p, size};
  s.alloc_serial[(uintptr_t)p] = ++s.serial;
  s.freed.erase((uintptr_t)p);
  s.used += size;
  *ptr = p;
  return cudaSuccess;
}

// cudaFree synchronises the device first (CUDA Runtime API, "API
// synchronization behavior": cudaFree is synchronous), then frees; a pointer
// that is not an allocation's base, or freed already, is cudaErrorInvalidValue.
cudaError_t cudaFree(void* p) {
  Api api;
  emu::State& s = api.s;
  if (!p) return sticky_or(cudaSuccess);
  emu::run_all();
  auto it = s.allocs.find((uintptr_t)p);
  if (it == s.allocs.end()) {
    if (s.freed.count((uintptr_t)p)) return err("cudaFree", cudaErrorInvalidValue, "%p: freed already", p);
    if (const emu::Alloc* a = emu::find_alloc(p))
      return err("cudaFree", cudaErrorInvalidValue, "%p: inside the allocation at %p, not its start", p,
                 (void*)a->base);
    return err("cudaFree", cudaErrorInvalidValue, "%p: not device memory", p);
  }
  s.used -= it->second.bytes;
  free(it->second.base);
  s.alloc_serial.erase(it->first);
  s.freed.insert(it->first);
  s.allocs.erase(it);
  return sticky_or(cudaSuccess);
}

}  // extern "C"

namespace emu {
namespace {
const char* kind_name(cudaMemcpyKind k) {
  switch (k) {
    case cudaMemcpyHostToHost: return "cudaMemcpyHostToHost";
    case cudaMemcpyHostToDevice: return "cudaMemcpyHostToDevice";
    case cudaMemcpyDeviceToHost: return "cudaMemcpyDeviceToHost";
    case cudaMemcpyDeviceToDevice: return "cudaMemcpyDeviceToDevice";
    case cudaMemcpyDefault: return "cudaMemcpyDefault";
  }
  return "an unknown kind";
}

// Checks a copy's pointers against its kind; the resolved kind in *k.
// CUDA Runtime API, cudaMemcpy: "Calling cudaMemcpy() with dst and src
// pointers that do not match the direction of the copy results in an
// undefined behavior": here cudaErrorInvalidValue.
cudaError_t check_copy(const char* call, void* dst, const void* src, size_t n, cudaMemcpyKind* k) {
  Where wd = where(dst, n), ws = where(src, n);
  if (wd == Where::Straddles || ws == Where::Straddles)
    return err(call, cudaErrorInvalidValue, "%zu bytes from %p to %p: the %s range runs past its allocation's end",
               n, src, dst, wd == Where::Straddles ? "destination" : "source");
  cudaMemcpyKind want = ws == Where::Host ? (wd == Where::Host ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice)
                                          : (wd == Where::Host ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice);
  if (*k == cudaMemcpyDefault) *k = want;
  else if (*k < cudaMemcpyHostToHost || *k > cudaMemcpyDefault)
    return err(call, cudaErrorInvalidMemcpyDirection, "kind %d", (int)*k);
  else if (*k != want)
    return err(call, cudaErrorInvalidValue, "%s, but the source %p is %s memory and the destination %p is %s memory",
               kind_name(*k), src, where_name(ws), dst, where_name(wd));
  return cudaSuccess;
}

// A copy queued on q; H2D stages the source now (API synchronization
// behavior: pageable host memory is copied to a staging buffer at the call).
uint64_t queue_copy(Stream* q, const char* what, void* dst, const void* src, size_t n, cudaMemcpyKind k) {
  if (k == cudaMemcpyHostToDevice) {
    auto staged = std::make_shared<std::vector<char>>((const char*)src, (const char*)src + n);
    return enqueue_on(q, what, [dst, staged]() { memcpy(dst, staged->data(), staged->size()); });
  }
  return enqueue_on(q, what, [dst, src, n]() { memcpy(dst, src, n); });
}
}  // namespace
}  // namespace emu

extern "C" {

// CUDA Runtime API, "API synchronization behavior", Memcpy, synchronous:
// host to device and device to host complete before the return (the former
// after a stream sync); device to device does not synchronise the host.
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind) {
  Api api;
  if (api.s.sticky != cudaSuccess) return sticky_or(cudaSuccess);
  if (count == 0) return cudaSuccess;
  if (cudaError_t e = emu::check_copy("cudaMemcpy", dst, src, count, &kind)) return e;
  if (kind == cudaMemcpyHostToHost) {
    memcpy(dst, src, count);
    return cudaSuccess;
  }
  uint64_t id = emu::queue_copy(&api.s.legacy, "cudaMemcpy", dst, src, count, kind);
  if (kind != cudaMemcpyDeviceToDevice) emu::run_ops({id});
  return sticky_or(cudaSuccess);
}

// Asynchronous: device to pageable host memory returns once the copy is
// done; host to device stages the source; the rest is queued.
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream) {
  Api api;
  if (api.s.sticky != cudaSuccess) return sticky_or(cudaSuccess);
  emu::Stream* q = emu::stream_of(stream);
  if (!q) return err("cudaMemcpyAsync", cudaErrorInvalidResourceHandle, "stream %p is not a live stream", (void*)stream);
  if (count == 0) return cudaSuccess;
  if (cudaError_t e = emu::check_copy("cudaMemcpyAsync", dst, src, count, &kind)) return e;
  if (kind == cudaMemcpyHostToHost) {
    memcpy(dst, src, count);
    return cudaSuccess;
  }
  uint64_t id = emu::queue_copy(q, "cudaMemcpyAsync", dst, src, count, kind);
  if (kind == cudaMemcpyDeviceToHost) emu::run_ops({id});
  return sticky_or(cudaSuccess);
}

// CUDA Runtime API, cudaMemcpy2DAsync: `height` rows of `width` bytes, row r
// from src + r spitch to dst + r dpitch; a width wider than either pitch is
// cudaErrorInvalidPitchValue. The same synchronisation as cudaMemcpyAsync;
// each endpoint's whole extent is checked as one range.
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              enum cudaMemcpyKind kind, cudaStream_t stream) {
  Api api;
  if (api.s.sticky != cudaSuccess) return sticky_or(cudaSuccess);
  const char* call = "cudaMemcpy2DAsync";
  emu::Stream* q = emu::stream_of(stream);
  if (!q) return err(call, cudaErrorInvalidResourceHandle, "stream %p is not a live stream", (void*)stream);
  if (width > dpitch || width > spitch)
    return err(call, cudaErrorInvalidPitchValue, "width %zu bytes is wider than the pitch (dst %zu, src %zu)", width,
               dpitch, spitch);
  if (width == 0 || height == 0) return cudaSuccess;
  // Each endpoint over its own extent, against the kind (as check_copy does
  // for a flat copy).
  const size_t dext = (height - 1) * dpitch + width, sext = (height - 1) * spitch + width;
  const emu::Where wd = emu::where(dst, dext), ws = emu::where(src, sext);
  if (wd == emu::Where::Straddles || ws == emu::Where::Straddles)
    return err(call, cudaErrorInvalidValue, "the %s's %zu rows run past its allocation's end",
               wd == emu::Where::Straddles ? "destination" : "source", height);
  const cudaMemcpyKind want = ws == emu::Where::Host
                                  ? (wd == emu::Where::Host ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice)
                                  : (wd == emu::Where::Host ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice);
  if (kind != cudaMemcpyDefault && kind != want)
    return err(call, cudaErrorInvalidValue, "%s, but the source %p is %s memory and the destination %p is %s memory",
               emu::kind_name(kind), src, emu::where_name(ws), dst, emu::where_name(wd));
  const cudaMemcpyKind k = want;
  auto rows = [dst, dpitch, spitch, width, height](const char* from) {
    for (size_t r = 0; r < height; r++) memcpy((char*)dst + r * dpitch, from + r * spitch, width);
  };
  if (k == cudaMemcpyHostToHost) {
    rows((const char*)src);
    return cudaSuccess;
  }
  uint64_t id;
  if (k == cudaMemcpyHostToDevice) {  // staged at the call, as cudaMemcpyAsync's
    auto staged = std::make_shared<std::vector<char>>((const char*)src, (const char*)src + sext);
    id = emu::enqueue_on(q, call, [rows, staged]() { rows(staged->data()); });
  } else {
    id = emu::enqueue_on(q, call, [rows, src]() { rows((const char*)src); });
  }
  if (k == cudaMemcpyDeviceToHost) emu::run_ops({id});
  return sticky_or(cudaSuccess);
}

// Memset: asynchronous with respect to the host for device memory ("API
// synchronization behavior", Memset).
static cudaError_t memset_on(const char* call, emu::Stream* q, void* p, int value, size_t count) {
  if (count == 0) return cudaSuccess;
  emu::Where w = emu::where(p, count);
  if (w != emu::Where::Device)
    return err(call, cudaErrorInvalidValue, "%zu bytes at %p: %s memory, not a device range", count, p,
               emu::where_name(w));
  emu::enqueue_on(q, call, [p, value, count]() { memset(p, value, count); });
  return cudaSuccess;
}

cudaError_t cudaMemset(void* p, int value, size_t count) {
  Api api;
  if (api.s.sticky != cudaSuccess) return sticky_or(cudaSuccess);
  return memset_on("cudaMemset", &api.s.legacy, p, value, count);
}

cudaError_t cudaMemsetAsync(void* p, int value, size_t count, cudaStream_t stream) {
  Api api;
  if (api.s.sticky != cudaSuccess) return sticky_or(cudaSuccess);
  emu::Stream* q = emu::stream_of(stream);
  if (!q) return err("cudaMemsetAsync", cudaErrorInvalidResourceHandle, "stream %p is not a live stream", (void*)stream);
  return memset_on("cudaMemsetAsync", q, p, value, count);
}

// Stream Management.
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* out, unsigned int flags, int priority) {
  Api api;
  if (!out) return err("cudaStreamCreate", cudaErrorInvalidValue, "pStream is null");
  if (flags & ~(unsigned)cudaStreamNonBlocking)
    return err("cudaStreamCreate", cudaErrorInvalidValue, "flags 0x%x", flags);
  if (api.s.sticky != cudaSuccess) return sticky_or(cudaSuccess);
  emu::Stream* q = new emu::Stream;
  q->flags = flags;
  q->priority = std::min(0, std::max(-5, priority));  // clamped to the range, as documented
  api.s.streams.insert(q);
  *out = reinterpret_cast<cudaStream_t>(q);
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* out, unsigned int flags) {
  return cudaStreamCreateWithPriority(out, flags, 0);
}

cudaError_t cudaStreamCreate(cudaStream_t* out) { return cudaStreamCreateWithPriority(out, 0, 0); }

// Work still queued on a destroyed stream runs (CUDA Runtime API,
// cudaStreamDestroy: resources are released once the device has completed it).
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  Api api;
  emu::Stream* q = emu::stream_of(stream);
  if (!q || q->legacy || q == &api.s.per_thread)
    return err("cudaStreamDestroy", cudaErrorInvalidResourceHandle, "stream %p is not a created, live stream",
               (void*)stream);
  api.s.streams.erase(q);
  delete q;
  return sticky_or(cudaSuccess);
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  Api api;
  emu::Stream* q = emu::stream_of(stream);
  if (!q)
    return err("cudaStreamSynchronize", cudaErrorInvalidResourceHandle, "stream %p is not a live stream",
               (void*)stream);
  emu::run_ops({q->last});
  return sticky_or(cudaSuccess);
}

// A poll would never see the work finish (it runs only at a
// synchronisation), so a query finishes it.
cudaError_t cudaStreamQuery(cudaStream_t stream) { return cudaStreamSynchronize(stream); }

// Orders the stream's later work after the event's most recent record
// (CUDA Runtime API, cudaStreamWaitEvent); a never recorded event: no wait.
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
  Api api;
  emu::Stream* q = emu::stream_of(stream);
  emu::Event* e = reinterpret_cast<emu::Event*>(event);
  if (!q) return err("cudaStreamWaitEvent", cudaErrorInvalidResourceHandle, "stream %p is not live", (void*)stream);
  if (!api.s.events.count(e))
    return err("cudaStreamWaitEvent", cudaErrorInvalidResourceHandle, "event %p is not live", (void*)event);
  if (flags & ~(unsigned)cudaEventWaitExternal)
    return err("cudaStreamWaitEvent", cudaErrorInvalidValue, "flags 0x%x", flags);
  if (api.s.sticky != cudaSuccess) return sticky_or(cudaSuccess);
  std::vector<uint64_t> extra;
  if (e->recorded && e->op) extra.push_back(e->op);
  emu::enqueue_on(q, "cudaStreamWaitEvent", nullptr, extra);
  return cudaSuccess;
}

// Event Management.
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* out, unsigned int flags) {
  Api api;
  if (!out) return err("cudaEventCreate", cudaErrorInvalidValue, "event is null");
  unsigned known = cudaEventBlockingSync | cudaEventDisableTiming | cudaEventInterprocess;
  if ((flags & ~known) || ((flags & cudaEventInterprocess) && !(flags & cudaEventDisableTiming)))
    return err("cudaEventCreate", cudaErrorInvalidValue, "flags 0x%x", flags);
  if (api.s.sticky != cudaSuccess) return sticky_or(cudaSuccess);
  emu::Event* e = new emu::Event;
  e->flags = flags;
  api.s.events.insert(e);
  *out = reinterpret_cast<cudaEvent_t>(e);
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* out) { return cudaEventCreateWithFlags(out, cudaEventDefault); }

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  Api api;
  emu::Event* e = reinterpret_cast<emu::Event*>(event);
  if (!api.s.events.count(e))
    return err("cudaEventDestroy", cudaErrorInvalidResourceHandle, "event %p is not live", (void*)event);
  api.s.events.erase(e);
  delete e;
  return sticky_or(cudaSuccess);
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  Api api;
  emu::Event* e = reinterpret_cast<emu::Event*>(event);
  emu::Stream* q = emu::stream_of(stream);
  if (!api.s.events.count(e))
    return err("cudaEventRecord", cudaErrorInvalidResourceHandle, "event %p is not live", (void*)event);
  if (!q) return err("cudaEventRecord", cudaErrorInvalidResourceHandle, "stream %p is not live", (void*)stream);
  if (api.s.sticky != cudaSuccess) return sticky_or(cudaSuccess);
  e->recorded = true;
  e->done = false;
  // The marker completes the event when it runs, if the event still exists
  // and this is still its latest record.
  emu::State* s = &api.s;
  uint64_t id = s->next_op + 1;  // the id enqueue_on hands out next
  e->op = emu::enqueue_on(q, "cudaEventRecord", [s, e, id]() {
    if (s->events.count(e) && e->op == id) {
      e->done = true;
      e->when = emu::now_s();
    }
  });
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  Api api;
  emu::Event* e = reinterpret_cast<emu::Event*>(event);
  if (!api.s.events.count(e))
    return err("cudaEventSynchronize", cudaErrorInvalidResourceHandle, "event %p is not live", (void*)event);
  if (e->recorded) emu::run_ops({e->op});
  return sticky_or(cudaSuccess);
}

cudaError_t cudaEventQuery(cudaEvent_t event) { return cudaEventSynchronize(event); }

// CUDA Runtime API, cudaEventElapsedTime: both events recorded and complete,
// neither made with cudaEventDisableTiming. Any positive time will do here.
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  Api api;
  emu::Event *a = reinterpret_cast<emu::Event*>(start), *b = reinterpret_cast<emu::Event*>(end);
  if (!ms) return err("cudaEventElapsedTime", cudaErrorInvalidValue, "ms is null");
  if (!api.s.events.count(a) || !api.s.events.count(b))
    return err("cudaEventElapsedTime", cudaErrorInvalidResourceHandle, "an event is not live");
  if ((a->flags | b->flags) & cudaEventDisableTiming)
    return err("cudaEventElapsedTime", cudaErrorInvalidResourceHandle, "an event was made with cudaEventDisableTiming");
  if (!a->recorded || !b->recorded)
    return err("cudaEventElapsedTime", cudaErrorInvalidResourceHandle, "an event was never recorded");
  if (api.s.sticky != cudaSuccess) return sticky_or(cudaSuccess);
  if (!a->done || !b->done) {
    emu::t_last_error = cudaErrorNotReady;
    return cudaErrorNotReady;
  }
  *ms = (float)(std::fabs(b->when - a->when) * 1e3) + 1e-3f;
  return cudaSuccess;
}

}  // extern "C"
