// bigsc/cost.h continues bigs.cu (included after pretrain and fill-mask): the cost device Cost<S>,
// which prices every operation of a step on an H200 by roofline without computing anything, and the
// bench command, which times real steps and prints that prediction beside them.

#pragma once

// ---------------------------------------------------------------------------
// Cost<S>: the GPU's operations as numbers. Each operation adds to a ledger
// the FLOPs, bytes and launches of its GPU launcher (the *_cost function
// beside each launcher), in the GPU's precision (S = a 2-byte type for
// bf16, float for fp32). Nothing is computed or allocated: the blocks'
// pointers are laid out from a base no memory is behind, and nothing reads
// them. The ledger predicts each operation's time on an H200 by roofline,
// from these ceilings and no others (so that the prediction cannot be
// tuned): the larger of its FLOPs at 790 TFLOP/s for bf16 tensor-core
// products or 50 TFLOP/s for CUDA-core work, and its bytes at 3.8 TB/s (80%
// of HBM3e's 4.8), plus 4 us per kernel launch that is not inside a
// captured CUDA graph.
// ---------------------------------------------------------------------------

constexpr double kTensorFlops = 790e12, kCudaCoreFlops = 50e12, kHbmBytes = 3.8e12, kLaunchSeconds = 4e-6;

struct CostRow {
  std::string op;
  double calls = 0, flops = 0, bytes = 0, launches = 0, seconds = 0;
};

struct CostLedger {
  bool graph = false;         // the step runs as one captured CUDA graph: no launch overhead
  std::vector<CostRow> rows;  // by operation, in the order first seen
  // One operation: each launch to its row; calls counts the operations
  // that touched a row.
  void add(const OpCost& o) {
    std::vector<std::string> touched;
    for (const Launch& l : o) {
      auto it = std::find_if(rows.begin(), rows.end(), [&](const CostRow& r) { return r.op == l.op; });
      if (it == rows.end()) it = rows.insert(rows.end(), CostRow{l.op});
      if (std::find(touched.begin(), touched.end(), it->op) == touched.end()) touched.push_back(it->op), it->calls += 1;
      it->flops += l.flops, it->bytes += l.bytes, it->launches += 1;
      it->seconds += std::max(l.flops / (l.tensor ? kTensorFlops : kCudaCoreFlops), l.bytes / kHbmBytes) +
                     (graph ? 0 : kLaunchSeconds);
    }
  }
  CostRow total() const {
    CostRow t{"total"};
    for (const CostRow& r : rows)
      t.calls += r.calls, t.flops += r.flops, t.bytes += r.bytes, t.launches += r.launches, t.seconds += r.seconds;
    return t;
  }
};

template <class S>
struct Cost {
  using A = S;
  using W = S;
  CostLedger& led;
  Config c;
  bool fuse_epilogues = true;  // as CudaCtx's
  ActsT<S> a;
  Params p, g;
  ParamsT<S> w;

  Cost(CostLedger& ledger, const Config& config, int B, int R) : led(ledger), c(config) {
    char* nowhere = reinterpret_cast<char*>(uintptr_t{1} << 20);
    layout_acts(&a, nowhere, c, B, R, kActAlign);
    point_params(&p, (float*)nowhere, c, kDevAlign);
    point_params(&g, (float*)nowhere, c, kDevAlign);
    point_params(&w, (S*)nowhere, c, kDevAlign);
  }
  void upload_batch(const Batch& bt) { led.add(copy_cost(2 * (size_t)bt.B * c.T * sizeof(int))); }
  void upload_rows(const int*, const int*, int P) { led.add(copy_cost(2 * (size_t)P * sizeof(int))); }
  const int* ids(const Batch&) const { return nullptr; }
  const int* types(const Batch&) const { return nullptr; }
  const int* rows(const Model&) const { return nullptr; }
  const int* row_target(const Model&) const { return nullptr; }
  void to_host(float*, const float*, size_t n) { led.add(copy_cost(n * sizeof(float))); }
  void to_device(float*, const float*, size_t n) { led.add(copy_cost(n * sizeof(float))); }
  void logits_to_host(float*, const float*, int P, int V, int) { led.add(copy_cost((size_t)P * V * sizeof(float))); }
  double sum_to_host(float*, const float*, int n) {
    led.add(copy_cost((size_t)n * sizeof(float)));
    return 0;
  }
  int logit_ld(const Config& cf) const { return (int)logit_stride(cf); }
  template <class X>
  void zero(X*, size_t n) {
    led.add(memset_cost(n, sizeof(X)));
  }
  const S* as_operand(S* tmp, const float* x, size_t n) {
    if (sizeof(S) == sizeof(float)) return (const S*)x;
    led.add(cast_cost(n, sizeof(float), sizeof(S)));
    return tmp;
  }
  void embedding_forward(float*, const int*, const int*, const float*, const float*, const float*, int B, int T,
                         int H) {
    led.add(embedding_forward_cost(B, T, H));
  }
  void embedding_backward(float*, float*, float*, const float*, const int*, const int*, int B, int T, int H) {
    led.add(embedding_backward_cost(B, T, H, c.V, c.types));
  }
  template <class TO, class TI>
  void layernorm_forward(TO*, float*, float*, const TI*, const float*, const float*, int n, int C) {
    led.add(layernorm_forward_cost(n, C, sizeof(TI), sizeof(TO)));
  }
  template <class TD, class TO, class TI>
  void layernorm_backward(TD*, float*, float*, const TO*, const TI*, const float*, const float*, const float*, int n,
                          int C, Acc acc = Acc::Add) {
    led.add(layernorm_backward_cost(n, C, sizeof(TD), sizeof(TO), sizeof(TI), acc == Acc::Add));
  }
  template <class TA, class TD>
  void dense_forward(TD*, const TA*, const TA*, const TD*, int n, int in, int out_dim, int ld = 0) {
    led.add(dense_forward_cost(n, in, out_dim, ld ? ld : out_dim, sizeof(TA), sizeof(TD), false, false, false));
  }
  template <class TA, class TD>
  void dense_gelu_forward(TD*, TD*, const TA*, const TA*, const TD*, int n, int in, int out_dim) {
    led.add(dense_forward_cost(n, in, out_dim, out_dim, sizeof(TA), sizeof(TD), true,
                               gelu_fusable(sizeof(TD), fuse_epilogues, out_dim), false));
  }
  template <class TA, class TD>
  void dense_residual_forward(TD*, const TA*, const TA*, const TD*, const TD*, int n, int in, int out_dim) {
    led.add(dense_forward_cost(n, in, out_dim, out_dim, sizeof(TA), sizeof(TD), false, false, true));
  }
  template <class TA, class TI>
  void dense_backward(TI* dinp, float*, float* db, const TA*, const TA*, const TA*, int n, int in, int out_dim,
                      Acc acc = Acc::Add, int ld = 0) {
    led.add(dense_backward_cost(n, in, out_dim, ld ? ld : out_dim, sizeof(TA), sizeof(TI), dinp != nullptr,
                                db != nullptr, acc == Acc::Add));
  }
  template <class TO, class TI>
  void activation_forward(TO*, const TI*, size_t n, Act) {
    led.add(activation_forward_cost(n, sizeof(TI), sizeof(TO)));
  }
  template <class TD, class TO, class TI>
  void activation_backward(TD*, const TO*, const TI*, size_t n, Act) {
    led.add(activation_backward_cost(n, sizeof(TD), sizeof(TO), sizeof(TI)));
  }
  template <class X>
  void gate_forward(X*, const X*, const X*, size_t n) {
    led.add(gate_forward_cost(n, sizeof(X)));
  }
  template <class X>
  void gate_backward(X*, X*, const X*, const X*, const X*, size_t n) {
    led.add(gate_backward_cost(n, sizeof(X)));
  }
  template <class X>
  void gate_gelu_backward(X*, X*, const X*, const X*, const X*, const X*, const X*, size_t n) {
    led.add(gate_gelu_backward_cost(n, sizeof(X)));
  }
  void s4d_kernel_forward(float*, const Ssm&, int N, int T) { led.add(s4d_kernel_forward_cost(N, T)); }
  void s4d_kernel_backward(const Ssm&, const float*, const Ssm&, int N, int T) {
    led.add(s4d_kernel_backward_cost(N, T));
  }
  template <class X>
  void ssm_conv_forward(X*, const X*, const float*, const float*, int B, int T, int H, bool) {
    led.add(ssm_conv_forward_cost(B, T, H, sizeof(X)));
  }
  template <class X>
  void ssm_conv_backward(X*, float*, float*, const X*, const X*, const float*, const float*, int B, int T, int H,
                         bool) {
    led.add(ssm_conv_backward_cost(B, T, H, sizeof(X)));
  }
  template <class TO, class TI>
  void dropout_forward(TO*, const TI*, size_t n, float, uint64_t, uint64_t) {
    led.add(dropout_cost(n, sizeof(TI), sizeof(TO)));
  }
  template <class X>
  void dropout_backward(X*, const X*, size_t n, float, uint64_t, uint64_t) {
    led.add(dropout_cost(n, sizeof(X), sizeof(X)));
  }
  void crossentropy_forward(float*, const float*, const int*, int n, int V, int) {
    led.add(crossentropy_forward_cost(n, V));
  }
  template <class X>
  void crossentropy_backward(X*, const float*, const int*, float, int n, int V, int) {
    led.add(crossentropy_backward_cost(n, V, sizeof(X)));
  }
  template <class TO, class TI>
  void meanpool_forward(TO*, const TI*, const int*, int, int B, int T, int H) {
    led.add(meanpool_forward_cost(B, T, H, sizeof(TI), sizeof(TO)));
  }
  void meanpool_backward(float*, const float*, const int*, int, int B, int T, int H) {
    led.add(meanpool_backward_cost(B, T, H));
  }
  template <class TO, class TI>
  void gather_rows(TO*, const TI*, const int*, int P, int H) {
    led.add(gather_rows_cost(P, H, sizeof(TI), sizeof(TO)));
  }
  void scatter_rows(float*, const float*, const int*, int P, int H) { led.add(scatter_rows_cost(P, H)); }
};


static const char* kBenchUsage =
    "usage: bigs bench [--config large] [--seq 128] [--batch 8] [--steps 10] [--device auto] [--precision bf16]\n"
    "       bigs bench --plan [--config large] [--seq 128] [--batch 8] [--precision bf16] [--memory-gb G] [--ranks K]\n"
    "Times full training steps (forward, backward, grad norm, AdamW) on random tokens after warm-up and\n"
    "prints tokens/s and MFU. FLOPs per step = 6 x dense weights x tokens (the seven dense layers of every\n"
    "layer) + 6 x P x (H^2 + V H) (the MLM head on the P predicted rows) + 12 L B H x 2.5 n log2 n (six\n"
    "real FFTs of length n = fft_size(T) per channel and SSM, two SSMs per layer). MFU is against 989\n"
    "TFLOP/s, the dense bf16 peak of an H100/H200 SXM, whatever precision runs; on a GPU the run also times\n"
    "a large bf16 cuBLASLt product and reports the step's FLOP rate as a share of that measured peak.\n"
    "Both print the cost device's prediction of the step on an H200 (a roofline per operation; --plan\n"
    "prints the table by operation). --plan runs nothing and needs no GPU: it also prints the GPU memory\n"
    "plan and the largest batch that fits in --memory-gb.";

// bench's batch: random tokens away from the special ids, per_seq evenly
// spaced predicted positions in every sequence.
static void bench_batch(const Config& c, int B, int per_seq, uint64_t seed, std::vector<int>* ids,
                        std::vector<int>* types, std::vector<int>* targets) {
  const int T = c.T;
  Rng rng{seed};
  ids->assign((size_t)B * T, 0), types->assign((size_t)B * T, 0), targets->assign((size_t)B * T, -1);
  for (int& id : *ids) id = 999 + (int)rng.below((uint32_t)(c.V - 999));
  for (int b = 0; b < B; b++)
    for (int k = 0; k < per_seq; k++) (*targets)[(size_t)b * T + 1 + (size_t)k * (T - 1) / per_seq] = (*ids)[0];
}

// The model FLOPs of one bench step (see kBenchUsage), for tokens/s and MFU.
static double bench_flops(const Config& c, int B, int P) {
  double H = c.H, I = c.I, L = c.L, V = c.V, tokens = (double)B * c.T, n = fft_size(c.T);
  double dense = L * (3 * I * H + 4 * H * H);
  return 6 * dense * tokens + 6 * P * (H * H + V * H) + 12 * L * B * H * 2.5 * n * std::log2(n);
}

// One bench step (one micro-batch of B sequences with per_seq predictions
// each) on the cost device, in the GPU's precision: the same orchestration
// as the real step, then the optimizer's launches.
// ready: if given, by bucket of the gradient exchange (bucket_spans), the
// ledger's time when the backward pass has finished it.
static bool bench_step_cost(const Config& c, int B, int per_seq, Precision prec, CostLedger* led, std::string* err,
                            std::vector<double>* ready = nullptr) {
  if (prec == Precision::Tf32) {
    *err = "the cost model has ceilings for bf16 and fp32 only (no TF32 rate): use --precision bf16 or fp32";
    return false;
  }
  Model m;
  if (!model_shape(&m, c, B, B * per_seq, err)) return false;
  std::vector<int> ids, types, targets;
  bench_batch(c, B, per_seq, 1, &ids, &types, &targets);
  Batch bt{B, ids.data(), types.data(), targets.data(), nullptr};
  size_t n = table_total(param_table(c, kDevAlign));
  BucketDone done;
  if (ready) {
    ready->assign(c.L + 2, 0.0);
    done = [&](int b) { (*ready)[b] = led->total().seconds; };
  }
  bool ok = false;
  auto run = [&](auto& d) {
    Loss loss;
    ok = forward_on(d, m, bt, true, &loss, err);
    if (ok) backward_on(d, m, bt, true, loss, 1.0f, done);
  };
  led->add(zero_grad_cost(n));
  if (prec == Precision::Bf16) {
    Cost<uint16_t> d(*led, c, B, B * per_seq);  // a 2-byte type sizes bf16
    run(d);
  } else {
    Cost<float> d(*led, c, B, B * per_seq);
    run(d);
  }
  led->add(grad_norm_cost(n));
  led->add(adamw_cost(n, prec == Precision::Bf16));
  return ok;
}

static void print_cost_table(const CostLedger& led) {
  printf("  %-28s %6s %9s %10s %9s %9s %6s\n", "operation", "calls", "launches", "GFLOP", "GB", "ms", "share");
  CostRow t = led.total();
  for (const CostRow& r : led.rows)
    printf("  %-28s %6.0f %9.0f %10.2f %9.3f %9.3f %5.1f%%\n", r.op.c_str(), r.calls, r.launches, r.flops / 1e9,
           r.bytes / 1e9, r.seconds * 1e3, 100 * r.seconds / t.seconds);
  printf("  %-28s %6.0f %9.0f %10.2f %9.3f %9.3f\n", "total", t.calls, t.launches, t.flops / 1e9, t.bytes / 1e9,
         t.seconds * 1e3);
}

// "bench: predicted ..." (dev/gpu_check.sh reads this line).
static void print_cost_prediction(const CostLedger& led, const Config& c, int B, int P) {
  double s = led.total().seconds, tokens = (double)B * c.T;
  printf("bench: predicted on an H200 %.2f ms/step  %.0f tokens/s  MFU %.2f%% (of 989 TFLOP/s; cost model)\n", s * 1e3,
         tokens / s, 100 * bench_flops(c, B, P) / s / 989e12);
}

// The data-parallel step on K GPUs over NVLink (README "Data-parallel
// training"), predicted from the cost of one GPU's step on its share of the
// batch, with one micro-batch per GPU. Each GPU sends (K - 1) / K of its fp32
// gradient to the shards' owners and receives as much (the all-to-all,
// bucket by bucket), and as many bytes of updated fp32 parameters in the
// all-gather, each at 450 GB/s per direction (NVLink 4 on an H100/H200 SXM,
// the ring's links all busy), plus an assumed 20 us a NCCL call; packing a
// bucket and the owner's adds of the K copies go at HBM speed. As built, a
// bucket leaves when the backward pass has finished it (`ready`, from the
// cost device) and the comm stream takes the buckets in turn; the model's
// stream packs each, then waits for the last exchange before the norm and
// AdamW over its shard, and for the all-gather after them (then the bf16
// copy of the whole block). Serial: the same exchanges after the backward
// pass, for comparison (what the first data-parallel step did).
constexpr double kNvlinkBytes = 450e9;
constexpr double kNcclCallSeconds = 20e-6;
static void print_data_parallel_prediction(const std::vector<double>& ready, const Config& c, int B, int P, int K,
                                           bool bf16) {
  const double n = (double)table_total(param_table(c, kDevAlign));
  const std::vector<std::vector<Span>> spans = bucket_spans(c, kDevAlign);
  double s = 0, comm = 0, packs = 0, links = 0, adds = 0;  // the two streams' clocks, and the totals
  for (size_t b = 0; b < spans.size(); b++) {
    double size = 0;
    for (const Span& x : spans[b]) size += (double)x.len;
    const double pack = 8 * size / kHbmBytes + kLaunchSeconds, wire = (K - 1.0) / K * 4 * size / kNvlinkBytes;
    const double add =
        (K + 2.0) * 4 * size / K / kHbmBytes + kLaunchSeconds;  // K copies read, the sum read and written
    packs += pack, links += wire, adds += add;
    s = std::max(s, ready[b] + packs);  // the model's stream, delayed by the packs so far
    comm = std::max(comm, s) + kNcclCallSeconds + wire + add;
  }
  const double gather = (K - 1.0) / K * 4 * n / kNvlinkBytes + kNcclCallSeconds;
  // After the backward pass, in place of one GPU's norm and AdamW over the
  // block (the ledger's last): the shard's sum into the gradient block, the
  // norm and AdamW over the shard, and after the all-gather the bf16 copy
  // of the whole block.
  const size_t shard = shards_of((size_t)n, K).size;
  CostLedger tail;
  tail.add(grad_norm_cost(shard));
  tail.add(adamw_cost(shard, bf16));
  if (bf16) tail.add(cast_cost((size_t)n, sizeof(float), 2));
  const double after = 8.0 * shard / kHbmBytes + kLaunchSeconds + tail.total().seconds;
  const double built = std::max(s, comm) + after + gather;
  const double serial = ready.back() + packs + (double)spans.size() * kNcclCallSeconds + links + adds + after + gather;
  const double tokens = (double)K * B * c.T, flops = K * bench_flops(c, B, P);
  printf(
      "data-parallel on %d H200s over NVLink (450 GB/s a direction), batch %d each (%d a step): %.2f GB sent a GPU "
      "and step (gradient all-to-all in %zu buckets and parameter all-gather), %.2f ms on the links, %.2f ms of "
      "packs and adds\n",
      K, B, K * B, 8 * (K - 1.0) / K * n / 1e9, spans.size(), (links + gather - kNcclCallSeconds) * 1e3,
      (packs + adds) * 1e3);
  for (auto [what, t] :
       {std::pair<const char*, double>{"as built (bucketed, overlapped with the backward pass)", built},
        std::pair<const char*, double>{"serial (the exchanges after the backward pass)", serial}})
    printf("data-parallel: predicted on %d H200s, %s: %.2f ms/step  %.0f tokens/s  MFU %.2f%% (cost model)\n", K, what,
           t * 1e3, tokens / t, 100 * flops / t / (K * 989e12));
}

#ifdef BIGS_CUDA
__global__ void fill_uniform_kernel(bf16* x, size_t n, uint64_t seed) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < n) x[i] = __float2bfloat16(2.0f * uniform_at(seed, 0, i) - 1.0f);
}

// The bf16 dense peak this GPU reaches here: an (8192 x 8192) x (8192 x
// 8192) product through the same matmul as the model, fp32 accumulation,
// timed over a few runs after one untimed, on random operands in [-1, 1]
// (zeros read about 12% high on Hopper). Returns FLOP/s.
static double measure_bf16_peak(CudaCtx& ctx) {
  const int n = 8192, reps = 10;
  const size_t count = (size_t)n * n;
  bf16 *a = nullptr, *b = nullptr, *d = nullptr;
  uint64_t seed = 1;
  for (bf16** x : {&a, &b, &d}) {
    cudaCheck(cudaMalloc(x, count * sizeof(bf16)));
    launchKernel(fill_uniform_kernel, grid_for(count), kThreads, 0, ctx.stream, *x, count, seed++);
  }
  cudaEvent_t t0, t1;
  cudaCheck(cudaEventCreate(&t0));
  cudaCheck(cudaEventCreate(&t1));
  matmul(ctx, d, a, b, true, false, n, n, n, n, n, n, 0.0f);
  cudaCheck(cudaEventRecord(t0, ctx.stream));
  for (int i = 0; i < reps; i++) matmul(ctx, d, a, b, true, false, n, n, n, n, n, n, 0.0f);
  cudaCheck(cudaEventRecord(t1, ctx.stream));
  cudaCheck(cudaEventSynchronize(t1));
  float ms = 0;
  cudaCheck(cudaEventElapsedTime(&ms, t0, t1));
  cudaCheck(cudaEventDestroy(t0));
  cudaCheck(cudaEventDestroy(t1));
  for (bf16* x : {a, b, d}) cudaCheck(cudaFree(x));
  return 2.0 * n * n * (double)n * reps / (ms / 1e3);
}
#endif

// The time fn takes on the device: the host's clock on the CPU; on the GPU
// CUDA events on the model's stream (device time, not host time).
template <class Fn>
static double step_seconds(const Cpu&, Fn&& fn) {
  const double t0 = now_seconds();
  fn();
  return now_seconds() - t0;
}
// The measured bf16 product peak: a GPU's (0 on the CPU: none to measure).
static double bf16_peak(const Cpu&) { return 0; }
#ifdef BIGS_CUDA
template <class S, class Fn>
static double step_seconds(const Gpu<S>& d, Fn&& fn) {
  cudaEvent_t t0, t1;
  cudaCheck(cudaEventCreate(&t0));
  cudaCheck(cudaEventCreate(&t1));
  cudaCheck(cudaEventRecord(t0, d.ctx.stream));
  fn();
  cudaCheck(cudaEventRecord(t1, d.ctx.stream));
  cudaCheck(cudaEventSynchronize(t1));
  float ms = 0;
  cudaCheck(cudaEventElapsedTime(&ms, t0, t1));
  cudaCheck(cudaEventDestroy(t0));
  cudaCheck(cudaEventDestroy(t1));
  return ms / 1e3;
}
template <class S>
static double bf16_peak(const Gpu<S>& d) {
  try {
    return measure_bf16_peak(d.ctx);
  } catch (const CudaError& e) {
    printf("bench: the bf16 peak was not measured: %s\n", e.what());
    return 0;
  }
}
#endif

static int cmd_bench(int argc, char** argv) {
  const char* cmd = "bench";
  std::string config = "large";
  Device device;
  long long seq = 128, batch = 8, steps = 10, warmup = 2, seed = 1, threads = 0, ranks = 1;
  double memory_gb = 0;
  bool plan_only = false;
  std::vector<Flag> flags = {
      {Flag::Str, "config", &config, 0, 0, "tiny, base, large, or a file of 'key value' lines"},
      {Flag::Int, "seq", &seq, 8, 1 << 16, "sequence length T"},
      {Flag::Int, "batch", &batch, 1, 1 << 16, "sequences per step"},
      {Flag::Int, "steps", &steps, 1, 1 << 20, "timed steps"},
      {Flag::Int, "warmup", &warmup, 1, 1 << 20, "untimed steps first (plans, caches, clocks)"},
      {Flag::Int, "seed", &seed, 0, 1LL << 62, "seed of the init and the tokens"},
      {Flag::Int, "threads", &threads, 0, 4096, "CPU threads; 0 = all"},
      {Flag::Switch, "plan", &plan_only, 0, 0,
       "print the GPU memory plan, the batch that fits and the predicted step; run nothing"},
      {Flag::Num, "memory-gb", &memory_gb, 0, 1e6,
       "--plan: GPU memory to plan for; 0 = this GPU's free memory, else 141 (H200)"},
      {Flag::Int, "ranks", &ranks, 1, 4096,
       "--plan: also predict the data-parallel step on this many GPUs over NVLink, --batch each"},
  };
  device_flags(&flags, &device);
  if (int rc = parse_command(cmd, argc, argv, flags, kBenchUsage, nullptr); rc >= 0) return rc;
  std::string err;
  Config c;
  if (!device_check(device, &err) || !config_load(config, &c, &err)) return fail(cmd, err, 2);
  if (c.V == 0) c.V = 30522;  // bert-large-uncased's vocabulary
  c.T = (int)seq;
  const int B = (int)batch, T = c.T, per_seq = std::min(20, std::max(1, (int)std::lround(0.15 * T)));
  Precision prec = Precision::Bf16;
  parse_precision(device.precision, &prec, &err);  // device_check accepted it
  CostLedger led;
  std::vector<double> ready;
  bool predicted = prec != Precision::Tf32 && bench_step_cost(c, B, per_seq, prec, &led, &err, &ready);
  if (plan_only) {
    double bytes = memory_gb * 1e9;
#ifdef BIGS_CUDA
    size_t free_bytes = 0, total_bytes = 0;
    if (bytes == 0 && cuda_device_present() && cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess)
      bytes = (double)free_bytes;
#endif
    if (bytes == 0) bytes = 141e9;
    print_gpu_plan(gpu_plan(c, B, B * per_seq, prec), prec, B, T);
    if (ranks > 1) {  // DataParallel's buffers on the GPU
      const double dp = exchange_buffer_bytes(table_total(param_table(c, kDevAlign)), (int)ranks);
      printf("the data-parallel step's buffers on each of %lld GPUs: %.2f GB, set aside below\n", ranks, dp / 1e9);
      bytes -= dp;
    }
    int fit = gpu_max_batch(c, per_seq, prec, bytes);
    printf("largest batch that fits in %.1f GB (95%% of it planned) at T %d (%s): %d", bytes / 1e9, T,
           precision_name(prec), fit);
    if (fit > 0) printf(" (%.2f GB)", gpu_plan(c, fit, fit * per_seq, prec).total() / 1e9);
    printf("\n");
    if (!predicted) return prec == Precision::Tf32 ? 0 : fail(cmd, err);
    printf(
        "predicted training step on an H200, %s, batch %d, T %d (per operation: the larger of FLOPs at 790 "
        "TFLOP/s bf16 tensor cores or 50 TFLOP/s CUDA cores and bytes at 3.8 TB/s, plus 4 us a launch):\n",
        precision_name(prec), B, T);
    print_cost_table(led);
    print_cost_prediction(led, c, B, B * per_seq);
    if (ranks > 1) print_data_parallel_prediction(ready, c, B, B * per_seq, (int)ranks, prec == Precision::Bf16);
    return 0;
  }
  if (device.name == "cuda" && !cuda_device_present())  // before minutes of host-side init
    return fail(cmd, "--device cuda: no CUDA device here; use --device cpu");
  set_threads(threads);
  Model m;
  if (!model_build(&m, c, B, B * per_seq, &err)) return fail(cmd, err);
  model_init(&m, (uint64_t)seed);
  std::vector<float> mom1(m.num_params, 0.0f), mom2(m.num_params, 0.0f);
  if (!model_use_device(&m, device, &mom1, &mom2, &err)) return fail(cmd, err);
  m.dropout = 0.1f;
  print_model_plan(m);
  std::vector<int> ids, types, targets;
  bench_batch(c, B, per_seq, (uint64_t)seed, &ids, &types, &targets);
  Batch bt{B, ids.data(), types.data(), targets.data(), nullptr};
  StepSettings ss{B, 1, 1.0, AdamW{}};
  StepResult r;
  World one;
  DataParallel dp;
  if (!data_parallel_init(&dp, one, m, 1, &err)) return fail(cmd, err);
  auto step = [&](long long i) { return train_step(m, dp, bt, B, ss, (uint64_t)i, 1e-5, mom1, mom2, &r, &err); };
  for (long long i = 0; i < warmup; i++)
    if (!step(i)) return fail(cmd, err);
  double seconds = 0, peak = 0;
  bool ok = true;
  const std::string name = device_name(m);
  with_device(m, [&](auto& d) {
    seconds = step_seconds(d, [&] {
      for (long long i = 0; ok && i < steps; i++) ok = step(warmup + i);
    });
  });
  if (!ok) return fail(cmd, err);
  double tokens = (double)B * T, flops = bench_flops(c, B, B * per_seq);
  double per_step = seconds / (double)steps, achieved = flops / per_step;
  if (name == "cpu")  // no peak is known for a CPU: an MFU against a GPU's would say nothing
    printf("bench: %s (fp32) T %d  batch %d  %lld steps  %.2f ms/step  %.0f tokens/s  %.1f GFLOP/s (no MFU: no peak "
           "is known for this CPU)\n",
           name.c_str(), T, B, steps, per_step * 1e3, tokens / per_step, achieved / 1e9);
  else
    printf(
        "bench: %s T %d  batch %d  %lld steps  %.2f ms/step  %.0f tokens/s  %.1f TFLOP/s  MFU %.2f%% (of 989 "
        "TFLOP/s)\n",
        name.c_str(), T, B, steps, per_step * 1e3, tokens / per_step, achieved / 1e12, 100 * achieved / 989e12);
  double H = c.H, V = c.V, P = (double)B * per_seq, n = fft_size(T);
  printf("bench: FLOPs per step %.4g = dense %.4g + MLM head %.4g + FFT %.4g\n", flops,
         6 * (double)c.L * (3.0 * c.I * H + 4 * H * H) * tokens, 6 * P * (H * H + V * H),
         12.0 * c.L * B * H * 2.5 * n * std::log2(n));
  if (name != "cpu" && predicted) print_cost_prediction(led, c, B, B * per_seq);
  fflush(stdout);  // after the result is out: the peak's 384 MB may not fit next to a large batch
  with_device(m, [&](auto& d) { peak = bf16_peak(d); });
  if (peak > 0)
    printf("bench: measured bf16 cuBLASLt peak %.1f TFLOP/s (8192^3 product); this step runs at %.1f%% of it\n",
           peak / 1e12, 100 * achieved / peak);
  return 0;
}
