// bigsc/world.h continues bigs.cu (included after the layers, before the devices): data
// parallelism: the ranks of an MPI job, the shards of a parameter block, the bucketed exchange (MPI
// over host blocks, NCCL over device blocks) and the all-gather after AdamW. It takes blocks,
// pointers and streams, never a model: the devices' dp_* operations call it.

#pragma once

// ============================================================================
// Data parallelism: ranks, shards and the collectives
// ============================================================================
// `mpirun -np K bigs pretrain ...` (or srun) starts K ranks, each running the
// same command on its share of every batch. MPI carries the few scalars of a
// step between the processes (the batch's prediction count, the micro-batch
// losses, the norm's partial sums, the stop flag) and, for a model on the
// host, its gradients and parameters; for a model on the GPU NCCL carries
// those between the devices. Started without a launcher (or built without
// MPI), bigs is a world of one rank that touches no MPI.
//
// The parameter block is cut into K contiguous shards (ZeRO stage 1,
// Rajbhandari et al. 2020): rank r receives the summed gradient of shard r,
// keeps the AdamW moments of shard r and updates it, then sends the updated
// shard to every rank (an all-gather), so that all ranks hold the same
// parameters bit for bit.
//
// A step's arithmetic does not depend on K. Rank r computes micro-batches r,
// r + K, r + 2K, ... of each global batch, so that a round of K micro-batches
// is K consecutive ones. In each round every rank sends each shard of its
// micro-batch gradient to the shard's owner (an all-to-all: a reduce-scatter
// that leaves the sum to us), which adds the K of them to its running sum in
// rank order. The all-to-all goes bucket by bucket (bucket_spans: the heads,
// each layer, the embeddings) as the backward pass finishes each, NCCL on a
// stream of its own on the GPU, so that it overlaps the rest of the
// backward pass (Bucket, world_exchange_bucket). The step's gradient is
// then g_0 + g_1 + g_2 + ... added in micro-batch order, as one process adds
// them (each micro-batch's gradient computed from zero in the gradient
// block, then added to the step's sum).
// Dropout is keyed by the global micro-batch, and the losses and the norm's
// partial sums are gathered and added in a fixed order, so K ranks reproduce
// one process bit for bit. The price is one gradient exchange per round of
// micro-batches instead of one per step (the traffic of ZeRO stage 2); with
// one micro-batch per rank and step the two are the same.

struct World {
  int rank = 0, size = 1;
  int local_rank = 0;   // among the ranks on this machine: the GPU it takes
  bool mpi = false;     // started by a launcher: MPI is up, and the collectives below go through it
  bool agreed = false;  // the command failed on every rank alike (see world_finish)
  // The watchdog: a rank that waits longer than `timeout` seconds in one
  // collective (another rank died and the launcher did not notice, or it
  // hangs) ends its own process, and the launcher then ends the job.
  std::atomic<double> timeout{900}, waiting_since{0};
  std::atomic<bool> done{false};
  std::thread watchdog;
#ifdef BIGS_NCCL
  ncclComm_t nccl = nullptr;  // made by data_parallel_init for a model on the GPU
#endif
  ~World() {  // an exception on its way to main: the watchdog stops with the world
    done = true;
    if (watchdog.joinable()) watchdog.join();
  }
};

// A wait for the other ranks, which the watchdog bounds.
struct WorldWait {
  World& w;
  explicit WorldWait(World& world) : w(world) { w.waiting_since = now_seconds(); }
  ~WorldWait() { w.waiting_since = 0; }
};

#ifdef BIGS_MPI
static void world_watch(World* w) {
  while (!w->done) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const double since = w->waiting_since, limit = w->timeout;
    if (since > 0 && limit > 0 && now_seconds() - since > limit) {
      fprintf(stderr,
              "bigs: rank %d of %d has waited %.0f s for the others in a collective (--timeout): another rank "
              "died or hangs; ending the job\n",
              w->rank, w->size, limit);
      _exit(124);
    }
  }
}

// Whether a launcher started this process as one rank of a job: Open MPI's
// mpirun (OMPI_COMM_WORLD_SIZE), MPICH's and Intel MPI's mpiexec (PMI_SIZE),
// and the PMIx launchers, srun --mpi=pmix among them (PMIX_RANK).
static bool launched_as_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (getenv(v)) return true;
  return false;
}
#endif

#ifdef BIGS_NCCL
// A rank launched by mpirun or srun: its rank among those on its machine
// (set by world_init), so that each takes its own GPU (modulo the GPUs it
// sees). model_to_device takes it, not world_init, so that a rank that
// trains on the CPU makes no CUDA context.
static int world_gpu = -1;
#endif

// Joins the job this process was launched into, if any. Ranks other than 0
// print nothing on stdout (progress, tables and logs come from rank 0);
// their errors still reach stderr. With NCCL, each rank of a machine takes
// its own GPU (local rank modulo the GPUs it sees).
static void world_init(World* w, int* argc, char*** argv) {
#ifdef BIGS_MPI
  if (!launched_as_rank()) return;
  int provided = 0;  // only the main thread calls MPI (not OpenMP's threads, not the watchdog)
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  w->mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &w->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &w->size);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &w->local_rank);
  MPI_Comm_free(&node);
  if (w->rank > 0 && !freopen("/dev/null", "w", stdout))
    fprintf(stderr, "bigs: rank %d could not silence its standard output\n", w->rank);
#ifdef BIGS_NCCL
  world_gpu = w->local_rank;  // taken by model_to_device: a rank that trains on the CPU makes no CUDA context
#endif
  w->watchdog = std::thread(world_watch, w);
#else
  (void)w, (void)argc, (void)argv;
#endif
}

// Ends this rank's part and returns its exit status. When every rank ends
// alike (success, or a failure they all know of: w.agreed), MPI_Finalize.
// Otherwise this rank failed alone while the others may be waiting for it in
// a collective: MPI_Abort ends them all, and the launcher exits with status.
static int world_finish(World& w, int status) {
#ifdef BIGS_MPI
  if (!w.mpi) return status;
  fflush(stdout);
  if (status != 0 && !w.agreed) {
    fprintf(stderr, "bigs: rank %d of %d failed (exit status %d); ending the job\n", w.rank, w.size, status);
    MPI_Abort(MPI_COMM_WORLD, status);
  }
  {
    WorldWait wait(w);  // MPI_Finalize waits for every rank
#ifdef BIGS_NCCL
    if (w.nccl) ncclCommDestroy(w.nccl);
#endif
    MPI_Finalize();
  }
#else
  (void)w;
#endif
  return status;
}

enum class Reduce { Sum, Max };

// x[0 .. n) combined over the ranks, in place. Every sum the trainer asks
// for is exact in any order: counts, or arrays in which each element is one
// rank's (the others add zeros), which the caller then adds up in order.
static void world_reduce(World& w, double* x, size_t n, Reduce op = Reduce::Sum) {
#ifdef BIGS_MPI
  if (!w.mpi || n == 0) return;
  WorldWait wait(w);
  MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_DOUBLE, op == Reduce::Sum ? MPI_SUM : MPI_MAX, MPI_COMM_WORLD);
#else
  (void)w, (void)x, (void)n, (void)op;
#endif
}

// Whether every rank holds the same v (a checksum of what must agree).
static bool world_same(World& w, uint64_t v) {
  uint64_t x[2] = {v, ~v};
#ifdef BIGS_MPI
  if (w.mpi) {
    WorldWait wait(w);
    MPI_Allreduce(MPI_IN_PLACE, x, 2, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  }
#else
  (void)w;
#endif
  return x[0] == ~x[1];  // the largest v is the smallest
}

// The shards of a block of n floats: rank r owns [lo(r), hi(r)), `size`
// elements, a multiple of kNormChunk so that no chunk of the gradient norm's
// sums (grad_norm) straddles two ranks; the last shards may be shorter or
// empty.
struct Shards {
  size_t n = 0, size = 0;
  size_t lo(int r) const { return std::min(n, (size_t)r * size); }
  size_t hi(int r) const { return std::min(n, (size_t)(r + 1) * size); }
};
static Shards shards_of(size_t n, int ranks) { return {n, round_up((n + ranks - 1) / ranks, kNormChunk)}; }

// One bucket of the gradient exchange (bucket_spans), as one rank sees it.
// A rank first copies the bucket's pieces of its gradient block, in block
// order, into its region of the packed block; since the shards are
// contiguous and in rank order, each rank's part of the bucket is then one
// run of the packed block, which goes to that rank in one message. The
// owner receives the K ranks' copies of its part into the K columns of its
// inbox and adds them, in rank order, at their places in its shard.
struct Bucket {
  std::vector<Piece> pack;  // the gradient block -> the packed block
  // Each rank's part of the bucket in the packed block (what this rank sends
  // it), and where each rank's copy of this rank's part lands in the inbox.
  std::vector<int> counts, offsets, inbox_counts, inbox_offsets;
  std::vector<Piece> unpack;                // this rank's part: a column of the inbox -> the rank's shard
  size_t at = 0, size = 0;                  // this rank's part: where it starts in each column, and its length
  size_t pack_first = 0, unpack_first = 0;  // on the GPU: where pack and unpack start in the pieces' table
};

// Every bucket for rank `rank` of `ranks` over the shards sh of a block laid
// out with `align` (the host's 1 or the GPU's kDevAlign).
static std::vector<Bucket> exchange_buckets(const Config& c, size_t align, const Shards& sh, int rank, int ranks) {
  std::vector<Bucket> out;
  const size_t lo = sh.lo(rank), hi = sh.hi(rank), shard = hi - lo;
  size_t packed = 0, column = 0;
  for (const std::vector<Span>& spans : bucket_spans(c, align)) {
    Bucket b;
    const size_t base = packed;
    for (const Span& s : spans) b.pack.push_back({s.at, packed, s.len}), packed += s.len;
    auto packed_at = [&](size_t x) {  // where the bucket's first element at or after x is packed
      size_t p = base;
      for (const Span& s : spans) p += std::min(s.len, x > s.at ? x - s.at : 0);
      return p;
    };
    for (int q = 0; q < ranks; q++) {
      const size_t first = packed_at(sh.lo(q));
      b.counts.push_back((int)(packed_at(sh.hi(q)) - first));
      b.offsets.push_back((int)first);
    }
    b.at = column;
    for (const Span& s : spans) {
      const size_t x = std::max(s.at, lo), y = std::min(s.at + s.len, hi);
      if (x < y) b.unpack.push_back({column, x - lo, y - x}), column += y - x;
    }
    b.size = column - b.at;
    for (int q = 0; q < ranks; q++) {
      b.inbox_counts.push_back((int)b.size);
      b.inbox_offsets.push_back((int)(q * shard + b.at));
    }
    out.push_back(b);
  }
  return out;
}

#ifdef BIGS_CUDA
// Every bucket's pack and unpack pieces in one table, as the GPU reads them;
// each bucket learns where its own start (pack_first, unpack_first).
static std::vector<Piece> piece_table(std::vector<Bucket>* buckets) {
  std::vector<Piece> table;
  for (Bucket& b : *buckets) {
    b.pack_first = table.size();
    table.insert(table.end(), b.pack.begin(), b.pack.end());
    b.unpack_first = table.size();
    table.insert(table.end(), b.unpack.begin(), b.unpack.end());
  }
  return table;
}
#endif

// The bytes of rank 0's exchange buffers (the longest shard) for a block of
// n floats on `ranks` ranks: the step's sum of its shard, the inbox of the
// ranks' copies of it, and the packed block.
static double exchange_buffer_bytes(size_t n, int ranks) {
  const double shard = (double)std::min(n, shards_of(n, ranks).size);
  return 4 * ((ranks + 1) * shard + (double)n);
}

// dst[p.to + i] = src[p.from + i] for every piece p (the host's pack).
static void copy_pieces(const std::vector<Piece>& pieces, const float* src, float* dst) {
  for (const Piece& p : pieces) std::copy_n(src + p.from, p.len, dst + p.to);
}

// dst[p.to + i] += src[q stride + p.from + i] for q = 0, 1, ..., ranks - 1
// in turn (the host's unpack: the ranks' copies added in rank order).
static void add_pieces(const std::vector<Piece>& pieces, const float* src, size_t stride, int ranks, float* dst) {
  for (const Piece& p : pieces) {
    float* d = dst + p.to;
    const float* s = src + p.from;
#pragma omp parallel for if (p.len >= 65536)
    for (size_t i = 0; i < p.len; i++) {
      float x = d[i];
      for (int q = 0; q < ranks; q++) x += s[(size_t)q * stride + i];
      d[i] = x;
    }
  }
}

// One rank's state for the data-parallel step (train_step): its world, the
// shards of the parameter block where the model lives (the host's packed
// layout, or the GPU's aligned one), the buckets of the exchange, and the
// host's exchange buffers (a model on the GPU keeps its own, GpuExchange).
struct DataParallel {
  World* w = nullptr;
  Shards sh;
  // Whether the step adds each micro-batch's gradient to a separate sum (a
  // world through MPI, or more than one micro-batch per step); otherwise the
  // gradient block itself is the step's gradient.
  bool sums = false;
  std::vector<Bucket> buckets;       // a world through MPI: the exchange, bucket by bucket
  std::vector<int> counts, offsets;  // each rank's shard of the block (the all-gather's counts and displacements)
  // A model on the host: the step's sum (shard), the ranks' copies (ranks,
  // shard) and the packed block (n); the exchanges in flight.
  std::vector<float> gsum, inbox, packed;
  bool in_flight = false;  // exchanges started that the device's dp_wait has not yet added
#ifdef BIGS_MPI
  std::vector<MPI_Request> pending;
#endif
  size_t lo() const { return sh.lo(w->rank); }
  size_t hi() const { return sh.hi(w->rank); }
};

// Plans the data-parallel step for a parameter block of n floats laid out
// with `align` (the host's 1, the GPU's kDevAlign) and steps of up to
// `rounds` micro-batches per rank: the shards, the all-gather's counts and,
// through MPI, the buckets of the exchange. The device then sets its
// buffers up (its dp_init).
static bool data_parallel_plan(DataParallel* dp, World& w, const Config& c, size_t n, size_t align, int rounds,
                               std::string* err) {
  dp->w = &w;
  dp->sh = shards_of(n, w.size);
  if (w.mpi && std::max(n, (size_t)w.size * dp->sh.size) > (size_t)INT_MAX) {
    *err =
        strf("%zu parameters on %d ranks are more than MPI's and NCCL's int counts and offsets can carry", n, w.size);
    return false;
  }
  for (int q = 0; q < w.size; q++) {
    dp->counts.push_back((int)(dp->sh.hi(q) - dp->sh.lo(q)));
    dp->offsets.push_back((int)dp->sh.lo(q));
  }
  dp->sums = w.mpi || rounds > 1;
  if (w.mpi) dp->buckets = exchange_buckets(c, align, dp->sh, w.rank, w.size);
  return true;
}

// ---------------------------------------------------------------------------
// The exchange on the host, through MPI, over a gradient block of floats
// ---------------------------------------------------------------------------

static void host_exchange_init(DataParallel* dp) {
  const size_t shard = dp->hi() - dp->lo();
  dp->gsum.assign(shard, 0.0f);
  dp->inbox.assign(dp->w->mpi ? (size_t)dp->w->size * shard : 0, 0.0f);
  dp->packed.assign(dp->w->mpi ? dp->sh.n : 0, 0.0f);
}

// Bucket b of this rank's micro-batch gradient (in grads) is final: each
// rank's part of it to that rank, now, while the backward pass goes on, as
// a non-blocking all-to-all (which progresses whenever a later bucket calls
// into MPI).
static void host_exchange_bucket(DataParallel& dp, const float* grads, int b) {
  const Bucket& bk = dp.buckets[b];
  copy_pieces(bk.pack, grads, dp.packed.data());
#ifdef BIGS_MPI
  dp.pending.emplace_back();
  MPI_Ialltoallv(dp.packed.data(), bk.counts.data(), bk.offsets.data(), MPI_FLOAT, dp.inbox.data(),
                 bk.inbox_counts.data(), bk.inbox_offsets.data(), MPI_FLOAT, MPI_COMM_WORLD, &dp.pending.back());
  int done = 0;
  MPI_Testall((int)dp.pending.size(), dp.pending.data(), &done, MPI_STATUSES_IGNORE);
#endif
}

// The exchanges started so far have arrived: added, in rank order, to the
// step's sum (gsum += the ranks' micro-batch gradients of this rank's
// shard, one process's order).
static void host_exchange_wait(DataParallel& dp) {
#ifdef BIGS_MPI
  {
    WorldWait wait(*dp.w);
    MPI_Waitall((int)dp.pending.size(), dp.pending.data(), MPI_STATUSES_IGNORE);
  }
  dp.pending.clear();
#endif
  for (const Bucket& bk : dp.buckets)
    add_pieces(bk.unpack, dp.inbox.data(), dp.hi() - dp.lo(), dp.w->size, dp.gsum.data());
}

// Every rank's shard of a host block laid out as dp.sh to every rank, in place.
static void host_all_gather(DataParallel& dp, float* block) {
#ifdef BIGS_MPI
  if (!dp.w->mpi) return;
  WorldWait wait(*dp.w);
  MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, block, dp.counts.data(), dp.offsets.data(), MPI_FLOAT,
                 MPI_COMM_WORLD);
#else
  (void)dp, (void)block;
#endif
}

#ifdef BIGS_CUDA
// ---------------------------------------------------------------------------
// The exchange on the GPU, through NCCL, over a gradient block in device memory
// ---------------------------------------------------------------------------

// A rank's exchange state on the GPU (GpuModel holds one).
struct GpuExchange {
  float* gsum = nullptr;            // (shard) the step's summed gradient of this rank's shard
  float* inbox = nullptr;           // (ranks, shard) the ranks' micro-batch gradients of that shard
  float* packed = nullptr;          // (n) the gradient block packed bucket by bucket (exchange_buckets)
  Piece* pieces = nullptr;          // every bucket's pack and unpack pieces
  cudaStream_t comm = nullptr;      // NCCL's stream for the gradient exchange
  std::vector<cudaEvent_t> ready;   // by bucket: packed, on the model's stream
  cudaEvent_t exchanged = nullptr;  // the last exchange's adds, on comm
  World* world = nullptr;           // a rank's: its watchdog bounds the wait for both streams at teardown
};

// The GPU's copy_pieces (add = false, ranks = 1) and add_pieces, for the
// pieces of one bucket: blockIdx.y picks the piece, the x blocks stride
// over it. The arithmetic is the host's, element by element.
__global__ void pieces_kernel(float* dst, const float* src, const Piece* pieces, size_t stride, int ranks, bool add) {
  const Piece p = pieces[blockIdx.y];
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < p.len; i += (size_t)gridDim.x * blockDim.x) {
    float x = add ? dst[p.to + i] + src[p.from + i] : src[p.from + i];
    for (int q = 1; q < ranks; q++) x += src[(size_t)q * stride + p.from + i];
    dst[p.to + i] = x;
  }
}

static void pieces_launch(cudaStream_t s, float* dst, const float* src, const Piece* pieces,
                          const std::vector<Piece>& host, size_t stride, int ranks, bool add) {
  size_t longest = 0;
  for (const Piece& p : host) longest = std::max(longest, p.len);
  if (longest == 0) return;
  const dim3 grid(std::min(grid_for(longest), 1024u), (unsigned)host.size());
  launchKernel(pieces_kernel, grid, kThreads, 0, s, dst, src, pieces, stride, ranks, add);
}

// sum[i] += in[i], the gradient of one process's micro-batch (a world of one
// that sums its micro-batches).
__global__ void add_kernel(float* sum, const float* in, size_t n) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < n) sum[i] += in[i];
}

#ifdef BIGS_NCCL
// The stream's work, collectives included, done: a wait the watchdog bounds
// (a NCCL kernel whose peer is gone spins forever).
static void gpu_wait(World& w, cudaStream_t s) {
  WorldWait wait(w);
  cudaCheck(cudaStreamSynchronize(s));
}
#endif

// The exchange's buffers on the GPU; through MPI also NCCL's communicator
// and a stream of its own (the highest priority, so that its kernels start
// as soon as a bucket is ready), with an event per bucket that the model's
// stream records when the bucket is packed. `exchanged` follows the last
// bucket's adds.
static bool gpu_exchange_init(DataParallel* dp, GpuExchange* x, std::string* err) {
  World& w = *dp->w;
  if (w.mpi) {
#ifdef BIGS_NCCL
    ncclUniqueId id;
    try {
      if (w.rank == 0) ncclCheck(ncclGetUniqueId(&id));
      WorldWait wait(w);
      MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
      ncclCheck(ncclCommInitRank(&w.nccl, w.size, id, w.rank));
    } catch (const CudaError& e) {
      *err = strf("joining the ranks' GPUs through NCCL: %s", e.what());
      return false;
    }
#else
    *err =
        "this build has no NCCL, so a model on the GPU cannot train on several ranks: build bigs where the CUDA "
        "Toolkit's nccl.h is (the Makefile finds it), or use --device cpu";
    return false;
#endif
  }
  const size_t shard = dp->hi() - dp->lo();
  const size_t inbox = w.mpi ? (size_t)w.size * shard : 0, packed = w.mpi ? dp->sh.n : 0;
  try {
    if (shard) cudaCheck(cudaMalloc(&x->gsum, shard * sizeof(float)));
    if (inbox) cudaCheck(cudaMalloc(&x->inbox, inbox * sizeof(float)));
    if (packed) cudaCheck(cudaMalloc(&x->packed, packed * sizeof(float)));
  } catch (const CudaError& e) {
    *err = strf("the data-parallel step's gradient sum, inbox and packed block (%.2f GB): %s; lower --micro-batch",
                (shard + inbox + packed) * 4 / 1e9, e.what());
    return false;
  }
  if (!w.mpi) return true;
  x->world = &w;
  const std::vector<Piece> table = piece_table(&dp->buckets);
  int least = 0, greatest = 0;
  cudaCheck(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  cudaCheck(cudaStreamCreateWithPriority(&x->comm, cudaStreamNonBlocking, greatest));
  x->ready.resize(dp->buckets.size());
  cudaCheck(cudaEventCreateWithFlags(&x->exchanged, cudaEventDisableTiming));
  for (cudaEvent_t& e : x->ready) cudaCheck(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  cudaCheck(cudaMalloc(&x->pieces, std::max<size_t>(1, table.size()) * sizeof(Piece)));
  cudaCheck(cudaMemcpy(x->pieces, table.data(), table.size() * sizeof(Piece), cudaMemcpyHostToDevice));
  return true;
}

// Both streams' work done, NCCL's included, in a wait the watchdog bounds:
// before a rank's model is freed (an error on this rank alone may leave
// exchanges in flight that a lost peer never completes).
static void gpu_exchange_drain(const GpuExchange& x, cudaStream_t s) {
  if (!x.world) return;
  WorldWait wait(*x.world);
  if (x.comm) cudaCheck(cudaStreamSynchronize(x.comm));
  cudaCheck(cudaStreamSynchronize(s));
}

static void gpu_exchange_free(GpuExchange* x) {
  for (void* p : {(void*)x->gsum, (void*)x->inbox, (void*)x->packed, (void*)x->pieces}) cudaCheck(cudaFree(p));
  for (cudaEvent_t e : x->ready) cudaCheck(cudaEventDestroy(e));
  if (x->exchanged) cudaCheck(cudaEventDestroy(x->exchanged));
  if (x->comm) cudaCheck(cudaStreamDestroy(x->comm));
}

// Bucket b's gradients (in grads, final on the model's stream s) to their
// owners. NCCL on x.comm while no NCCL call is in flight on the model's
// stream (see gpu_all_gather).
static void gpu_exchange_bucket(DataParallel& dp, GpuExchange& x, cudaStream_t s, const float* grads, int b) {
  const Bucket& bk = dp.buckets[b];
  pieces_launch(s, x.packed, grads, x.pieces + bk.pack_first, bk.pack, 0, 1, false);
  cudaCheck(cudaEventRecord(x.ready[b], s));
  cudaCheck(cudaStreamWaitEvent(x.comm, x.ready[b], 0));
#ifdef BIGS_NCCL
  World& w = *dp.w;
  {
    WorldWait wait(w);  // the group's end may wait for a peer (its first connection)
    ncclCheck(ncclGroupStart());
    for (int q = 0; q < w.size; q++) {
      if (bk.counts[q]) ncclCheck(ncclSend(x.packed + bk.offsets[q], bk.counts[q], ncclFloat, q, w.nccl, x.comm));
      if (bk.size) ncclCheck(ncclRecv(x.inbox + bk.inbox_offsets[q], bk.size, ncclFloat, q, w.nccl, x.comm));
    }
    ncclCheck(ncclGroupEnd());
  }
  pieces_launch(x.comm, x.gsum, x.inbox, x.pieces + bk.unpack_first, bk.unpack, dp.hi() - dp.lo(), w.size, true);
#endif
  cudaCheck(cudaEventRecord(x.exchanged, x.comm));
}

// Every exchange so far done: a wait the watchdog bounds; then the model's
// stream s follows them too.
static void gpu_exchange_wait(World& w, GpuExchange& x, cudaStream_t s) {
  WorldWait wait(w);
  cudaCheck(cudaEventSynchronize(x.exchanged));
  cudaCheck(cudaStreamWaitEvent(s, x.exchanged, 0));
}

// Every rank's shard of a device block laid out as dp.sh to every rank, in
// place, on the model's stream s, with the communicator that the exchange
// uses on x.comm: one stream at a time, as NCCL wants, because the host has
// waited for every exchange (gpu_exchange_wait) before it gets here and
// waits for this (gpu_wait) before anything else. Keep it so.
static void gpu_all_gather(DataParallel& dp, cudaStream_t s, float* block) {
  World& w = *dp.w;
  if (!w.mpi) return;
#ifdef BIGS_NCCL
  ncclCheck(ncclGroupStart());
  for (int q = 0; q < w.size; q++)
    if (dp.counts[q])
      ncclCheck(ncclBroadcast(block + dp.offsets[q], block + dp.offsets[q], dp.counts[q], ncclFloat, q, w.nccl, s));
  ncclCheck(ncclGroupEnd());
  gpu_wait(w, s);
#else
  (void)s, (void)block;
#endif
}
#endif  // BIGS_CUDA

// The sequences of a global batch of B that this rank computes, in the
// order train_step takes them: its micro-batches g = rank, rank + ranks, ...,
// micro-batch g being sequences g micro .. min(B, (g + 1) micro) - 1.
static std::vector<int> rank_sequences(const World& w, int B, int micro) {
  std::vector<int> idx;
  for (int g = w.rank; g * micro < B; g += w.size)
    for (int i = g * micro; i < std::min(B, (g + 1) * micro); i++) idx.push_back(i);
  return idx;
}
