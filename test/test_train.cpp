// Training: AdamW against the reference, the schedules, masking statistics,
// gradient accumulation, overfitting one batch, exact resume in a fresh
// process, and the trainer's answers to bad input.
#define BIGS_NO_MAIN
#include "bigs.cu"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "test/fixture.h"
#include "test/util.h"

using namespace bigs;

namespace {

const Fixture& fixture() {
  static Fixture fx = read_fixture(getenv("BIGS_FIXTURE") ? getenv("BIGS_FIXTURE") : "build/fixture.bin");
  return fx;
}

::testing::AssertionResult close_to(const std::string& what, const float* a, const std::vector<double>& b,
                                    double atol, double rtol) {
  for (size_t i = 0; i < b.size(); i++)
    if (!(std::fabs(a[i] - b[i]) <= atol + rtol * std::fabs(b[i])))
      return ::testing::AssertionFailure() << what << "[" << i << "]: got " << a[i] << ", want " << b[i];
  return ::testing::AssertionSuccess();
}

// A small random model and batch for the tests that train.
Config small_config() { return Config{50, 32, 48, 2, 8, 16, 2, 0}; }

struct SmallBatch {
  std::vector<int> ids, types, targets;
};

SmallBatch small_batch(int B, int T, int V, uint64_t seed) {
  SmallBatch s;
  Rng r{seed};
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      bool pad = t >= T - b;  // sequence b ends with b padding tokens
      int id = t == 0 ? 2 : pad ? 0 : 5 + (int)r.below(V - 5);
      s.ids.push_back(id);
      s.types.push_back(!pad && t > T / 2);
      s.targets.push_back(!pad && t > 0 && r.uniform() < 0.3f ? (int)r.below(V) : -1);
    }
  return s;
}

}  // namespace

// ===========================================================================
// Optimizer
// ===========================================================================

TEST(AdamW, OneStepMatchesReference) {
  const Fixture& fx = fixture();
  ASSERT_TRUE(fx.error.empty()) << fx.error;
  const auto& cf = fx.at("mlm/config").data;
  Config c{(int)cf[0], (int)cf[1], (int)cf[2], (int)cf[3], (int)cf[4], (int)cf[5], (int)cf[6], (int)cf[7]};
  Model m;
  std::string err;
  ASSERT_TRUE(model_build(&m, c, 1, 1, &err)) << err;
  for (const TensorInfo& t : m.table) {
    if (!t.count) continue;
    for (size_t i = 0; i < t.count; i++) {
      m.params_mem[t.offset + i] = (float)fx.at(std::string("mlm/param/") + t.name).data[i];
      m.grads_mem[t.offset + i] = (float)fx.at(std::string("mlm/grad/") + t.name).data[i];
    }
  }
  const auto& hp = fx.at("adamw/hparams").data;  // lr, beta1, beta2, eps, weight decay
  AdamW o{hp[1], hp[2], hp[3], hp[4]};
  std::vector<float> m1(m.num_params, 0.0f), m2(m.num_params, 0.0f);
  adamw_step(m, m1, m2, (float)hp[0], o, 1);
  for (const TensorInfo& t : m.table) {
    if (!t.count) continue;
    std::string k = std::string("adamw/param/") + t.name;
    EXPECT_TRUE(close_to(k, m.params_mem.data() + t.offset, fx.at(k).data, 1e-6, 1e-5));
  }
}

TEST(AdamW, DecayMaskSkipsBiasesAndLayerNorm) {
  Config c = small_config();
  for (const TensorInfo& t : param_table(c)) {
    std::string n = t.name;
    bool is_bias = n.size() > 2 && (n.substr(n.size() - 2) == "_b" || n == "head_bias");
    bool is_ln = n.find("ln_") != std::string::npos;
    EXPECT_EQ(t.decay, !is_bias && !is_ln) << n;
  }
}

TEST(Schedule, ValuesAtChosenSteps) {
  // Warmup 10 steps to peak 1, then the decay over steps 10..110. Update i
  // gets lr(i) of optax.linear_schedule(0, peak, 10) joined to the decay at
  // 10, as the authors' create_learning_rate_fn: i / 10 during warmup, so
  // the first update has LR 0.
  LrSchedule s{Schedule::Cosine, 1.0, 10, 110, 0.1};
  EXPECT_DOUBLE_EQ(lr_at(s, 0), 0.0);
  EXPECT_DOUBLE_EQ(lr_at(s, 4), 0.4);
  EXPECT_DOUBLE_EQ(lr_at(s, 9), 0.9);
  EXPECT_DOUBLE_EQ(lr_at(s, 10), 1.0);   // cosine at progress 0
  EXPECT_NEAR(lr_at(s, 60), 0.55, 1e-12);  // progress 1/2: 0.1 + 0.9 / 2
  EXPECT_NEAR(lr_at(s, 35), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI / 4)), 1e-12);
  EXPECT_NEAR(lr_at(s, 110), 0.1, 1e-12);
  EXPECT_NEAR(lr_at(s, 5000), 0.1, 1e-12);  // held after the end
  s.kind = Schedule::Linear;
  EXPECT_DOUBLE_EQ(lr_at(s, 9), 0.9);
  EXPECT_NEAR(lr_at(s, 60), 0.5, 1e-12);
  EXPECT_NEAR(lr_at(s, 110), 0.0, 1e-12);
  EXPECT_NEAR(lr_at(s, 200), 0.0, 1e-12);
  s.kind = Schedule::Constant;
  EXPECT_DOUBLE_EQ(lr_at(s, 3), 0.3);
  EXPECT_DOUBLE_EQ(lr_at(s, 10), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(s, 100000), 1.0);
  LrSchedule none{Schedule::Constant, 2e-5, 0, 100, 0};
  EXPECT_DOUBLE_EQ(lr_at(none, 0), 2e-5);  // no warmup: the peak at once
}

// ===========================================================================
// Masking
// ===========================================================================

TEST(Masking, RatesAndNeverSpecialTokens) {
  ShardHeader sp{};
  sp.pad_id = 0, sp.unk_id = 1, sp.cls_id = 2, sp.sep_id = 3, sp.mask_id = 4;
  const int T = 128, V = 1000, nseq = 3000;
  MaskSpec ms;  // 15%, at most 20
  long long maskable = 0, predicted = 0, as_mask = 0, as_random = 0, kept = 0;
  std::mt19937_64 g(5);
  for (int s = 0; s < nseq; s++) {
    int len = 20 + (int)(g() % (T - 20));  // content length incl. [CLS] and [SEP]
    std::vector<int> ids(T, 0), orig, tg(T);
    ids[0] = 2;
    for (int t = 1; t < len - 1; t++) ids[t] = 5 + (int)(g() % (V - 5));
    ids[len - 1] = 3;
    if (s % 7 == 0) ids[len / 2] = 3;  // a second [SEP], as in pairs
    orig = ids;
    int cand = 0;
    for (int t = 0; t < T; t++) cand += orig[t] > 4;
    Rng rng = mask_rng_train(99, s);
    int n = mask_sequence(ids.data(), tg.data(), T, V, sp, ms, rng);
    ASSERT_EQ(n, std::min(20, std::max(1, (int)std::lround(0.15 * cand))));
    int count = 0;
    for (int t = 0; t < T; t++) {
      if (tg[t] < 0) {
        ASSERT_EQ(ids[t], orig[t]) << "an unpredicted token changed";
        continue;
      }
      count++;
      ASSERT_GT(orig[t], 4) << "special or padding token " << orig[t] << " was masked";
      ASSERT_EQ(tg[t], orig[t]);
      if (ids[t] == 4) as_mask++;
      else if (ids[t] == orig[t]) kept++;
      else {
        as_random++;
        ASSERT_GT(ids[t], 4);
      }
    }
    ASSERT_EQ(count, n);
    maskable += cand;
    predicted += n;
  }
  // Rates over ~40k predictions; 4-sigma binomial bounds.
  auto within = [](long long k, long long n, double p) {
    double sd = std::sqrt(n * p * (1 - p));
    return std::fabs(k - n * p) <= 4 * sd;
  };
  EXPECT_TRUE(within(as_mask, predicted, 0.8)) << as_mask << " / " << predicted;
  // A random draw can equal the original (1 in ~1000): count it with "kept".
  EXPECT_TRUE(within(as_random, predicted, 0.1 * (1 - 1.0 / (V - 5)))) << as_random;
  EXPECT_TRUE(within(kept, predicted, 0.1 + 0.1 / (V - 5))) << kept;
  double rate = (double)predicted / maskable;
  EXPECT_GT(rate, 0.13);  // 15% before the cap of 20 per sequence bites
  EXPECT_LT(rate, 0.155);
}

TEST(Masking, CapOfMaxPredictions) {
  ShardHeader sp{};
  sp.pad_id = 0, sp.unk_id = 1, sp.cls_id = 2, sp.sep_id = 3, sp.mask_id = 4;
  std::vector<int> ids(128, 9), tg(128);
  ids[0] = 2, ids[127] = 3;
  MaskSpec ms{0.5, 20};  // half of 126 candidates would be 63
  Rng r = mask_rng_train(1, 1);
  EXPECT_EQ(mask_sequence(ids.data(), tg.data(), 128, 100, sp, ms, r), 20);
  EXPECT_EQ(std::count_if(tg.begin(), tg.end(), [](int t) { return t >= 0; }), 20);
}

TEST(Masking, FreshEachSightingFixedForValidation) {
  ShardHeader sp{};
  sp.pad_id = 0, sp.unk_id = 1, sp.cls_id = 2, sp.sep_id = 3, sp.mask_id = 4;
  std::vector<int> base(64, 7), a, b, ta(64), tb(64);
  base[0] = 2, base[63] = 3;
  MaskSpec ms;
  a = base, b = base;
  Rng r1 = mask_rng_train(1, 10), r2 = mask_rng_train(1, 11);
  mask_sequence(a.data(), ta.data(), 64, 100, sp, ms, r1);
  mask_sequence(b.data(), tb.data(), 64, 100, sp, ms, r2);
  EXPECT_NE(ta, tb) << "two sightings got the same mask";
  a = base, b = base;
  Rng v1 = mask_rng_val(3), v2 = mask_rng_val(3);
  mask_sequence(a.data(), ta.data(), 64, 100, sp, ms, v1);
  mask_sequence(b.data(), tb.data(), 64, 100, sp, ms, v2);
  EXPECT_EQ(ta, tb);
  EXPECT_EQ(a, b);
}

// The authors' rule (--masking static): BERT's create_pretraining_data.py
// counts round(0.15 x len(tokens)) with Python 3's round (half to even),
// len counting [CLS] and [SEP]; only those two are never picked; a random
// replacement is any id of the vocabulary.
TEST(Masking, AuthorsStaticRule) {
  ShardHeader sp{};
  sp.pad_id = 0, sp.unk_id = 1, sp.cls_id = 2, sp.sep_id = 3, sp.mask_id = 4;
  MaskSpec ms;
  ms.authors = true;
  // Python 3: round(0.15 * 10) = 2, round(0.15 * 30) = 4 (4.5 to even), round(0.15 * 50) = 8,
  // round(0.15 * 70) = 10 (10.5 to even), round(0.15 * 200) = 30, capped at 20; round(0.15 * 3) = 0 -> 1.
  const std::pair<int, int> want[] = {{10, 2}, {30, 4}, {50, 8}, {70, 10}, {200, 20}, {3, 1}};
  for (auto [len, n] : want) {
    const int T = 256;
    std::vector<int> ids(T, 0), tg(T);
    ids[0] = 2, ids[len - 1] = 3;
    for (int t = 1; t < len - 1; t++) ids[t] = t % 3 == 0 ? 1 : 7;  // [UNK]s are candidates too
    Rng r = mask_rng_static(5, (uint64_t)len);
    EXPECT_EQ(mask_sequence(ids.data(), tg.data(), T, 100, sp, ms, r), n) << "length " << len;
    EXPECT_EQ(tg[0], -1);
    EXPECT_EQ(tg[len - 1], -1);
    for (int t = len; t < T; t++) EXPECT_EQ(tg[t], -1) << "padding predicted";
  }
  // Replacements: 80% [MASK], 10% kept, 10% any of the V ids (the original and specials included).
  const int V = 10, T = 64;
  long long predicted = 0, as_mask = 0, same = 0, special = 0;
  for (int s = 0; s < 4000; s++) {
    std::vector<int> ids(T, 7), tg(T);
    ids[0] = 2, ids[T - 1] = 3;
    Rng r = mask_rng_static(9, (uint64_t)s);
    mask_sequence(ids.data(), tg.data(), T, V, sp, ms, r);
    for (int t = 0; t < T; t++) {
      if (tg[t] < 0) continue;
      predicted++;
      as_mask += ids[t] == 4;
      same += ids[t] == 7;
      special += ids[t] < 4;
    }
  }
  auto within = [](long long k, long long n, double p) { return std::fabs(k - n * p) <= 4 * std::sqrt(n * p * (1 - p)); };
  EXPECT_TRUE(within(as_mask, predicted, 0.8 + 0.1 / V)) << as_mask << " / " << predicted;  // a draw of [MASK] too
  EXPECT_TRUE(within(same, predicted, 0.1 + 0.1 / V)) << same;
  EXPECT_TRUE(within(special, predicted, 0.1 * 4 / V)) << special;  // [PAD], [UNK], [CLS], [SEP] drawn
}

// ===========================================================================
// Gradient accumulation and learning
// ===========================================================================

TEST(Training, AccumulationEqualsBigBatch) {
  Config c = small_config();
  const int B = 4;
  SmallBatch sb = small_batch(B, c.T, c.V, 7);
  Model big, small;
  std::string err;
  ASSERT_TRUE(model_build(&big, c, B, B * c.T, &err));
  ASSERT_TRUE(model_build(&small, c, B / 2, B / 2 * c.T, &err));
  model_init(&big, 3);
  small.params_mem = big.params_mem;
  int rows = 0;
  for (int t : sb.targets) rows += t >= 0;
  Loss loss;
  Batch all{B, sb.ids.data(), sb.types.data(), sb.targets.data(), nullptr};
  ASSERT_TRUE(model_forward(big, all, false, &loss, &err)) << err;
  model_zero_grad(big);
  model_backward(big, all, false, loss, 1.0f / rows);
  model_zero_grad(small);
  for (int k = 0; k < 2; k++) {
    size_t off = (size_t)k * (B / 2) * c.T;
    Batch half{B / 2, &sb.ids[off], &sb.types[off], &sb.targets[off], nullptr};
    ASSERT_TRUE(model_forward(small, half, false, &loss, &err)) << err;
    model_backward(small, half, false, loss, 1.0f / rows);
  }
  for (const TensorInfo& t : big.table) {
    std::vector<double> want(big.grads_mem.begin() + t.offset, big.grads_mem.begin() + t.offset + t.count);
    // fp32 sums in another order: the fixture's tolerance.
    EXPECT_TRUE(close_to(t.name, small.grads_mem.data() + t.offset, want, 1e-5, 1e-4));
  }
}

// One process adds each micro-batch's gradient, computed from zero, to the
// step's sum in micro-batch order: the order in which a shard's owner adds
// the ranks' gradients, so that K ranks reproduce one process bit for bit
// (README "Data-parallel training"; dev/test_mpi.py runs the ranks).
// train_step over three micro-batches, with dropout and clipping, against
// those gradients added by hand, then the same clipping and AdamW.
TEST(Training, MicroBatchGradientsAddInOrder) {
  Config c = small_config();
  const int B = 6, micro = 2, step = 3;
  SmallBatch sb = small_batch(B, c.T, c.V, 17);
  Batch all{B, sb.ids.data(), sb.types.data(), sb.targets.data(), nullptr};
  Model a, b;
  std::string err;
  ASSERT_TRUE(model_build(&a, c, micro, micro * c.T, &err));
  ASSERT_TRUE(model_build(&b, c, micro, micro * c.T, &err));
  model_init(&a, 3);
  b.params_mem = a.params_mem;
  for (Model* m : {&a, &b}) m->dropout = 0.1f, m->dropout_seed = 5;
  std::vector<float> m1a(a.num_params, 0.01f), m2a(a.num_params, 1e-4f), m1b = m1a, m2b = m2a;
  World one;
  DataParallel dp;
  ASSERT_TRUE(data_parallel_init(&dp, one, a, B / micro, &err)) << err;
  StepSettings s{micro, B / micro, 0.05, AdamW{}};  // a tight clip: it acts
  StepResult r;
  ASSERT_TRUE(train_step(a, dp, all, B, s, step, 1e-3, m1a, m2a, &r, &err)) << err;

  int count = 0;
  for (int t : sb.targets) count += t >= 0;
  std::vector<float> sum(b.num_params, 0.0f);
  double loss_sum = 0;
  for (int k = 0; k < B / micro; k++) {
    Batch mb = batch_slice(all, k * micro, micro, c.T);
    b.dropout_stream = (uint64_t)step * (B / micro) + k;
    Loss loss;
    model_zero_grad(b);
    ASSERT_TRUE(model_forward(b, mb, true, &loss, &err)) << err;
    model_backward(b, mb, true, loss, 1.0f / count);
    for (size_t i = 0; i < b.num_params; i++) sum[i] += b.grads_mem[i];
    loss_sum += loss.sum;
  }
  b.grads_mem = sum;
  double norm = clip_grad_norm(b, s.clip);
  adamw_step(b, m1b, m2b, 1e-3f, s.opt, step + 1);
  EXPECT_EQ(r.loss, loss_sum / count);
  EXPECT_EQ(r.grad_norm, norm);
  EXPECT_GT(norm, s.clip);
  EXPECT_TRUE(a.params_mem == b.params_mem && m1a == m1b && m2a == m2b) << "parameters or moments differ";
}

// The pieces of a data-parallel step that need no second rank: each rank's
// share of a batch, the shards and the norm's chunk sums over them.
TEST(Training, RankSharesAndShards) {
  for (int K : {1, 2, 3, 5}) {
    std::vector<int> seen(17, 0);
    for (int r = 0; r < K; r++) {
      World w;
      w.rank = r, w.size = K;
      for (int i : rank_sequences(w, 17, 2)) {
        seen[i]++;
        EXPECT_EQ(i / 2 % K, r) << "micro-batch " << i / 2 << " of " << K << " ranks";
      }
    }
    EXPECT_EQ(seen, std::vector<int>(17, 1)) << K << " ranks";
    for (size_t n : {(size_t)1, kNormChunk - 1, 3 * kNormChunk + 7, (size_t)524498}) {
      Shards sh = shards_of(n, K);
      EXPECT_EQ(sh.size % kNormChunk, 0u);
      EXPECT_EQ(sh.lo(0), 0u);
      EXPECT_EQ(sh.hi(K - 1), n);
      for (int r = 0; r + 1 < K; r++) EXPECT_EQ(sh.hi(r), sh.lo(r + 1));
      std::vector<float> g(n);
      for (size_t i = 0; i < n; i++) g[i] = (float)std::sin(0.1 * i);
      const size_t chunks = (n + kNormChunk - 1) / kNormChunk;
      // Each rank's partial sums, added up as world_reduce does: one rank's each.
      std::vector<double> whole(chunks, 0.0), gathered(chunks, 0.0);
      square_sums(g.data(), 0, n, whole.data());
      for (int r = 0; r < K; r++) {
        std::vector<double> mine(chunks, 0.0);
        square_sums(g.data(), sh.lo(r), sh.hi(r), mine.data());
        for (size_t c = 0; c < chunks; c++) gathered[c] += mine[c];
      }
      EXPECT_EQ(whole, gathered) << n << " elements on " << K << " ranks";
    }
  }
}

// The bucketed gradient exchange of a data-parallel step (exchange_buckets),
// with the transport done here: K ranks' gradient blocks packed, each part
// "sent" to its owner's inbox, unpacked and added. Every element of a shard
// must come out as one process adds it, start + g_0 + g_1 + ... bit for bit,
// whatever K, the layout (host or GPU) and where the shard boundaries fall.
TEST(Training, ExchangeBucketsAddEveryGradientOnceInRankOrder) {
  Config wide{30522, 16, 4096, 2, 4, 32, 2, 0};  // dev/test_mpi.py (b)'s model
  Config cls = small_config();
  cls.labels = 3;
  for (const Config& c : {small_config(), cls, wide})
    for (size_t align : {(size_t)1, kDevAlign})
      for (int K : {1, 2, 3, 5}) {
        const size_t n = table_total(param_table(c, align));
        const std::string what = strf("H %d I %d labels %d, align %zu, %d ranks", c.H, c.I, c.labels, align, K);
        // The buckets' pieces cover the block once, each bucket in block order.
        std::vector<int> seen(n, 0);
        for (const auto& spans : bucket_spans(c, align))
          for (size_t i = 0; i < spans.size(); i++) {
            if (i) {
              ASSERT_GE(spans[i].at, spans[i - 1].at + spans[i - 1].len) << what;
            }
            for (size_t j = 0; j < spans[i].len; j++) seen[spans[i].at + j]++;
          }
        ASSERT_EQ(seen, std::vector<int>(n, 1)) << what;

        Shards sh = shards_of(n, K);
        std::vector<std::vector<Bucket>> view(K);
        for (int r = 0; r < K; r++) view[r] = exchange_buckets(c, align, sh, r, K);
        std::vector<std::vector<float>> grad(K, std::vector<float>(n)), packed(K, std::vector<float>(n, NAN));
        Rng rng{(uint64_t)K * 7 + align};
        for (auto& g : grad)  // magnitudes from 1e-6 to 1e2: the order of the sum shows in the last bits
          for (float& x : g) x = (float)((rng.uniform() - 0.5) * std::pow(10.0, -6 + 8 * rng.uniform()));
        for (int q = 0; q < K; q++)
          for (const Bucket& b : view[q]) copy_pieces(b.pack, grad[q].data(), packed[q].data());
        bool layer_split = false;  // some layer's bucket has parts on two ranks
        for (int r = 0; r < K; r++) {
          const size_t lo = sh.lo(r), shard = sh.hi(r) - lo;
          std::vector<float> inbox(K * shard, NAN), sum(shard), want(shard);
          for (size_t i = 0; i < shard; i++) sum[i] = (float)std::sin(0.37 * i);  // an earlier round's sum
          size_t total = 0;
          for (size_t b = 0; b < view[r].size(); b++) {
            const Bucket& mine = view[r][b];
            ASSERT_EQ(mine.at, total) << what;
            ASSERT_EQ((size_t)mine.counts[r], mine.size) << what;
            total += mine.size;
            int parts = 0;
            for (int q = 0; q < K; q++) parts += mine.counts[q] > 0;
            layer_split |= b != (size_t)kHeadBucket && b != (size_t)embed_bucket(c) && parts > 1;
            for (int q = 0; q < K; q++) {  // sender q's part for r: q's view of the bucket
              const Bucket& theirs = view[q][b];
              ASSERT_EQ(theirs.counts, mine.counts) << what;
              ASSERT_EQ(mine.inbox_counts[q], theirs.counts[r]) << what;  // what r expects from q: what q sends r
              std::copy_n(packed[q].data() + theirs.offsets[r], theirs.counts[r], inbox.data() + mine.inbox_offsets[q]);
            }
          }
          ASSERT_EQ(total, shard) << what;
          for (const Bucket& b : view[r]) add_pieces(b.unpack, inbox.data(), shard, K, sum.data());
          for (size_t i = 0; i < shard; i++) {
            float x = (float)std::sin(0.37 * i);
            for (int q = 0; q < K; q++) x += grad[q][lo + i];
            want[i] = x;
          }
          ASSERT_TRUE(shard == 0 || memcmp(sum.data(), want.data(), shard * sizeof(float)) == 0)  // bit for bit
              << what << ", rank " << r;
        }
        if (c.I == wide.I && K == 3) {
          EXPECT_TRUE(layer_split) << what << ": no shard boundary in the layers";
        }
      }
}

TEST(Training, GradNormAndClipping) {
  Config c = small_config();
  Model m;
  std::string err;
  ASSERT_TRUE(model_build(&m, c, 1, 1, &err));
  double want = 0;
  for (size_t i = 0; i < m.num_params; i++) {
    m.grads_mem[i] = (float)std::sin(0.37 * i);
    want += (double)m.grads_mem[i] * m.grads_mem[i];
  }
  want = std::sqrt(want);
  EXPECT_NEAR(grad_norm(m), want, 1e-9 * want);
  std::vector<float> before = m.grads_mem;
  EXPECT_NEAR(clip_grad_norm(m, 2 * want), want, 1e-9 * want);  // below the bound: untouched
  EXPECT_EQ(m.grads_mem, before);
  EXPECT_NEAR(clip_grad_norm(m, want / 4), want, 1e-9 * want);  // returns the norm before clipping
  EXPECT_NEAR(grad_norm(m), want / 4, 1e-5 * want);
  EXPECT_NEAR(m.grads_mem[5], before[5] / 4, 1e-6);
  clip_grad_norm(m, 0.0);  // 0 = off
  EXPECT_NEAR(grad_norm(m), want / 4, 1e-5 * want);
}

// With dropout on, the whole model's gradient along a random direction must
// match central differences of its loss: the backward pass has to drop the
// same units as the forward did. fp32 model: eps 1e-3 and a 1% tolerance
// (the loss carries ~1e-7 relative rounding, i.e. ~1e-3 in the difference).
TEST(Training, DropoutGradientMatchesFiniteDifferences) {
  for (int labels : {0, 3}) {
    Config c = small_config();
    c.labels = labels;
    const int B = 3;
    SmallBatch sb = small_batch(B, c.T, c.V, 21);
    std::vector<float> y = {0, 2, 1};
    Model m;
    std::string err;
    ASSERT_TRUE(model_build(&m, c, B, B * c.T, &err));
    model_init(&m, 4);
    m.dropout = 0.1f, m.dropout_seed = 77, m.dropout_stream = 5;
    Batch bt{B, sb.ids.data(), sb.types.data(), labels ? nullptr : sb.targets.data(), labels ? y.data() : nullptr};
    Loss loss;
    ASSERT_TRUE(model_forward(m, bt, true, &loss, &err)) << err;
    model_zero_grad(m);
    model_backward(m, bt, true, loss, 1.0f / loss.count);
    Rng r{123};
    std::vector<float> dir(m.num_params), p0 = m.params_mem;
    double analytic = 0;
    for (size_t i = 0; i < m.num_params; i++) {
      dir[i] = r.normal() * (std::fabs(p0[i]) + 1e-3f);  // relative steps: the embeddings are tiny
      analytic += (double)m.grads_mem[i] * dir[i];
    }
    auto loss_at = [&](float eps) {
      for (size_t i = 0; i < m.num_params; i++) m.params_mem[i] = p0[i] + eps * dir[i];
      Loss l;
      EXPECT_TRUE(model_forward(m, bt, true, &l, &err)) << err;
      return l.sum / l.count;
    };
    const float eps = 1e-3f;
    double numeric = (loss_at(eps) - loss_at(-eps)) / (2.0 * eps);
    EXPECT_NEAR(numeric, analytic, 1e-2 * std::fabs(analytic) + 1e-3) << "labels " << labels;
    // And dropout is off outside training: the same as a model without it.
    m.params_mem = p0;
    Loss with, without;
    ASSERT_TRUE(model_forward(m, bt, false, &with, &err));
    m.dropout = 0;
    ASSERT_TRUE(model_forward(m, bt, false, &without, &err));
    EXPECT_EQ(with.sum, without.sum);
  }
}

TEST(Training, OverfitsOneBatch) {
  Config c = small_config();
  const int B = 4;
  SmallBatch sb = small_batch(B, c.T, c.V, 11);
  Model m;
  std::string err;
  ASSERT_TRUE(model_build(&m, c, B, B * c.T, &err));
  model_init(&m, 5);
  std::vector<float> m1(m.num_params, 0.0f), m2(m.num_params, 0.0f);
  AdamW o{0.9, 0.98, 1e-6, 0.0};
  Batch bt{B, sb.ids.data(), sb.types.data(), sb.targets.data(), nullptr};
  double first = 0, last = 0;
  for (int step = 1; step <= 300; step++) {
    Loss loss;
    ASSERT_TRUE(model_forward(m, bt, false, &loss, &err)) << err;
    last = loss.sum / loss.count;
    if (step == 1) first = last;
    if (last < 0.1) break;
    model_zero_grad(m);
    model_backward(m, bt, false, loss, 1.0f / loss.count);
    adamw_step(m, m1, m2, 3e-3f, o, step);
  }
  EXPECT_GT(first, 3.0);  // ~ln 50 at the start
  EXPECT_LT(last, 0.1) << "from " << first;
}

TEST(Training, ClassifierOverfitsOneBatch) {
  Config c = small_config();
  c.labels = 3;
  const int B = 6;
  SmallBatch sb = small_batch(B, c.T, c.V, 13);
  std::vector<float> labels = {0, 1, 2, 2, 1, 0};
  Model m;
  std::string err;
  ASSERT_TRUE(model_build(&m, c, B, 1, &err));
  model_init(&m, 9);
  std::vector<float> m1(m.num_params, 0.0f), m2(m.num_params, 0.0f);
  AdamW o{0.9, 0.999, 1e-6, 0.0};
  Batch bt{B, sb.ids.data(), sb.types.data(), nullptr, labels.data()};
  double last = 0;
  for (int step = 1; step <= 300; step++) {
    Loss loss;
    ASSERT_TRUE(model_forward(m, bt, false, &loss, &err)) << err;
    last = loss.sum / loss.count;
    if (last < 0.05) break;
    model_zero_grad(m);
    model_backward(m, bt, false, loss, 1.0f / loss.count);
    adamw_step(m, m1, m2, 3e-3f, o, step);
  }
  EXPECT_LT(last, 0.05);
}

// ===========================================================================
// The trainer as a user runs it: exact resume, checkpoints, bad input
// ===========================================================================

class Trainer : public ::testing::Test {
 protected:
  static std::string dir;
  static void SetUpTestSuite() {
    dir = "build/test_train_tmp";
    std::string out;
    // Shards of T = 32 from the first 400 lines of the demo corpus, BERT vocab.
    ASSERT_EQ(run("rm -rf " + dir + " && mkdir -p " + dir + " && head -400 data/kjv.txt > " + dir + "/text.txt", &out), 0);
    ASSERT_EQ(run("./data_prep pretrain --vocab data/bert-base-uncased-vocab.txt --seq 32 --out " + dir +
                      "/shards --val-fraction 0.2 " + dir + "/text.txt",
                  &out),
              0)
        << out;
    std::ofstream(dir + "/mini.cfg") << "# a model small enough for a test\nH 16\nI 24\nL 2\nN 4\n";
    std::ofstream(dir + "/small_vocab.txt") << "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nb\n";
  }
  std::string pretrain(const std::string& out_dir, const std::string& extra) {
    return "./build/bigs_cpu pretrain --train '" + dir + "/shards/train_*.bin' --val '" + dir +
           "/shards/val_*.bin' --config " + dir + "/mini.cfg --batch 8 --micro-batch 4 --steps 6 --warmup 2 " +
           "--eval-every 3 --eval-seqs 8 --log-every 1 --save-every 0 --threads 2 --out " + dir + "/" + out_dir + " " +
           extra;
  }
  static std::vector<std::string> losses(const std::string& log) {
    std::vector<std::string> v;
    std::istringstream in(slurp(log));
    for (std::string line; std::getline(in, line);)
      if (line.find("\"loss\"") != std::string::npos) v.push_back(line);
    return v;
  }
};
std::string Trainer::dir;

TEST_F(Trainer, ResumeInAFreshProcessIsBitIdentical) {
  std::string out;
  ASSERT_EQ(run(pretrain("straight", ""), &out), 0) << out;
  ASSERT_EQ(run(pretrain("sliced", "--stop-at 3"), &out), 0) << out;
  ASSERT_EQ(run(pretrain("sliced", "--resume " + dir + "/sliced/state.bin"), &out), 0) << out;
  std::vector<std::string> a = losses(dir + "/straight/log.jsonl"), b = losses(dir + "/sliced/log.jsonl");
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  for (int i = 0; i < 6; i++) EXPECT_EQ(a[i], b[i]) << "step " << i + 1;  // the loss printed as %.17g
  EXPECT_EQ(slurp(dir + "/straight/model.bin"), slurp(dir + "/sliced/model.bin")) << "final parameters differ";
}

TEST_F(Trainer, InterruptSavesAndResumes) {
  std::string out;
  // A run far too long to finish; SIGINT once it is training.
  std::string cmd = "( " + pretrain("sig", "--steps 1000000 --eval-every 0") +
                    " > " + dir + "/sig.log 2>&1 & pid=$!; for i in $(seq 100); do grep -q 'step 1/' " + dir +
                    "/sig.log 2>/dev/null && break; sleep 0.1; done; kill -INT $pid; wait $pid; echo rc=$? )";
  ASSERT_EQ(run(cmd, &out), 0) << out;
  EXPECT_NE(out.find("rc=130"), std::string::npos) << out << slurp(dir + "/sig.log");
  std::string log = slurp(dir + "/sig.log");
  EXPECT_NE(log.find("signal 2: stopping after step"), std::string::npos) << log;
  EXPECT_NE(log.find("interrupted; continue with --resume"), std::string::npos) << log;
  // The saved state resumes (to a nearer end).
  CkptHeader h;
  std::vector<float> data;
  std::string err;
  ASSERT_TRUE(checkpoint_read(dir + "/sig/state.bin", &h, &data, &err)) << err;
  EXPECT_GE(h.step, 1u);
  ASSERT_EQ(run(pretrain("sig", "--resume " + dir + "/sig/state.bin --steps " + std::to_string(h.step + 2)), &out), 0)
      << out;
  EXPECT_NE(out.find("resumed from"), std::string::npos) << out;
}

TEST_F(Trainer, FillMaskPrintsTopK) {
  std::string out;
  ASSERT_EQ(run(pretrain("fm", "--steps 2"), &out), 0) << out;
  ASSERT_EQ(run("./build/bigs_cpu fill-mask --ckpt " + dir + "/fm/model.bin --vocab data/bert-base-uncased-vocab.txt "
                "--top-k 3 'in the [MASK] god created' 'and [MASK] said [MASK]'",
                &out),
            0)
      << out;
  std::istringstream in(out);
  int lines = 0;
  double psum = 0;
  for (std::string line; std::getline(in, line); lines++) {
    size_t tab = line.find('\t');
    ASSERT_NE(tab, std::string::npos) << line;
    double p = std::stod(line.substr(tab + 1));
    EXPECT_GT(p, 0.0);
    EXPECT_LT(p, 1.0);
    EXPECT_GE(line.size() - tab - 1, 8u) << "at least 6 significant digits: " << line;
    psum += p;
  }
  EXPECT_EQ(lines, 9);  // three masks, three lines each
}

// --masking static keys a sequence's masks by its place in the corpus
// (DataOrder::read's `where`): in every epoch a place holds the same ids,
// and each place comes once an epoch.
TEST_F(Trainer, PlaceInTheCorpusIsTheSameEveryEpoch) {
  ShardSet tr;
  std::string err;
  ASSERT_TRUE(shards_open(dir + "/shards/train_*.bin", &tr, &err)) << err;
  DataOrder order;
  order.s = &tr, order.seed = 3;
  const int T = (int)tr.h.seq_len;
  std::map<uint64_t, std::vector<int>> seen;
  std::vector<int> count(tr.total, 0);
  for (uint64_t k = 0; k < 2 * tr.total; k++) {
    std::vector<int> ids(T);
    uint64_t where = ~0ull;
    ASSERT_TRUE(order.read(k, ids.data(), &err, &where)) << err;
    ASSERT_LT(where, tr.total);
    count[where]++;
    if (k < tr.total) seen[where] = ids;
    else EXPECT_EQ(seen[where], ids) << "place " << where << " holds other ids in epoch 2";
  }
  for (uint64_t i = 0; i < tr.total; i++) EXPECT_EQ(count[i], 2) << "place " << i;
}

// The authors' recipe by default: no clipping in pretrain and finetune
// (their JAX scripts never clip).
TEST_F(Trainer, NoClippingByDefault) {
  std::string out;
  ASSERT_EQ(run(pretrain("noclip", "--steps 1"), &out), 0) << out;
  EXPECT_NE(out.find("\n  grad-clip              0\n"), std::string::npos) << out;
}

// pretrain --init at a longer T: every weight but the new position rows
// comes over exactly, the new rows are the copies of row t mod T0, and the
// model starts at the longer T near the source model's loss on the same text.
TEST_F(Trainer, InitAtALongerT) {
  std::string out;
  // The source: T = 32, trained until it is well below uniform guessing (ln 30522 = 10.33).
  ASSERT_EQ(run(pretrain("src32", "--steps 40 --lr 1e-2 --warmup 4 --eval-every 0 --eval-seqs 64"), &out), 0) << out;
  auto val_loss = [](const std::string& o) {
    size_t at = o.rfind("val loss ");
    return at == std::string::npos ? NAN : std::stod(o.substr(at + 9));
  };
  const double src_loss = val_loss(out);
  ASSERT_EQ(run("./data_prep pretrain --vocab data/bert-base-uncased-vocab.txt --seq 64 --out " + dir +
                    "/shards64 --val-fraction 0.2 " + dir + "/text.txt",
                &out),
            0)
      << out;
  // --lr 0: the run's one update leaves the weights as --init made them.
  const std::string run64 = "./build/bigs_cpu pretrain --train '" + dir + "/shards64/train_*.bin' --val '" + dir +
                            "/shards64/val_*.bin' --init " + dir + "/src32/model.bin --batch 4 --micro-batch 4 " +
                            "--steps 1 --lr 0 --warmup 0 --eval-every 0 --eval-seqs 64 --threads 2 --out " + dir + "/init64";
  ASSERT_EQ(run(run64, &out), 0) << out;
  EXPECT_NE(out.find("position rows 32 to 63 copied from rows t mod 32"), std::string::npos) << out;
  const double init_loss = val_loss(out);
  CkptHeader ha, hb;
  std::vector<float> a, b;
  std::string err;
  ASSERT_TRUE(checkpoint_read(dir + "/src32/model.bin", &ha, &a, &err)) << err;
  ASSERT_TRUE(checkpoint_read(dir + "/init64/model.bin", &hb, &b, &err)) << err;
  ASSERT_EQ(hb.T, 64);
  EXPECT_EQ(hb.step, 1u);
  Config ca = ckpt_config(ha), cb = ckpt_config(hb);
  std::vector<TensorInfo> ta = param_table(ca), tb = param_table(cb);
  ASSERT_EQ(ta.size(), tb.size());
  for (size_t i = 0; i < ta.size(); i++) {
    ASSERT_STREQ(ta[i].name, tb[i].name);
    const float* x = a.data() + ta[i].offset;
    const float* y = b.data() + tb[i].offset;
    if (!strcmp(ta[i].name, "wpe")) {
      for (int t = 0; t < 64; t++)
        for (int h = 0; h < ca.H; h++)
          ASSERT_EQ(y[t * ca.H + h], x[(t % 32) * ca.H + h]) << "wpe row " << t;
    } else {
      ASSERT_EQ(ta[i].count, tb[i].count) << ta[i].name;
      for (size_t j = 0; j < ta[i].count; j++) ASSERT_EQ(x[j], y[j]) << ta[i].name << "[" << j << "]";
    }
  }
  // The same text at T = 64: sequences twice as long, each token with more
  // context, positions 32..63 with the embeddings of 0..31. The model is
  // not the one that was trained, but it keeps what the source learned: its
  // loss is within a quarter of the source's gain over uniform guessing of
  // the source's (a fresh model would be near ln V; measured: see the report).
  const double uniform = std::log(30522.0), gain = uniform - src_loss;
  ASSERT_GT(gain, 2.0) << "the source learned too little for the comparison to mean anything: " << src_loss;
  EXPECT_LT(std::fabs(init_loss - src_loss), 0.25 * gain) << "source " << src_loss << ", at T = 64 " << init_loss;
  // A longer T than the data's is refused; so are --init with --resume.
  EXPECT_NE(run("./build/bigs_cpu pretrain --train '" + dir + "/shards/train_*.bin' --init " + dir +
                    "/init64/model.bin --batch 4 --micro-batch 4 --steps 1 --out " + dir + "/bad",
                &out),
            0);
  EXPECT_NE(out.find("more than the data's T = 32"), std::string::npos) << out;
}

TEST(FillMask, JsonQuote) {
  EXPECT_EQ(json_quote("capital"), "\"capital\"");
  EXPECT_EQ(json_quote("a\"b\\c\n\x01\xc3\xa9"), "\"a\\\"b\\\\c\\u000a\\u0001\xc3\xa9\"");  // UTF-8 kept
}

// OpenMP waits passively unless the user chose a policy: libgomp's own report
// of its settings (OMP_DISPLAY_ENV) in the process that runs, the last one
// printed. GOMP_SPINCOUNT 0 is passive; 300000 the default; 30 billion active.
TEST_F(Trainer, OpenMpWaitsPassivelyUnlessTold) {
  auto last_spincount = [](const std::string& out) {
    size_t at = out.rfind("GOMP_SPINCOUNT = '");
    return at == std::string::npos ? std::string("none") : out.substr(at + 18, out.find('\'', at + 18) - at - 18);
  };
  std::string out;
  const std::string cmd = "env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT OMP_DISPLAY_ENV=VERBOSE ";
  ASSERT_EQ(run(cmd + "./build/bigs_cpu eval --help", &out), 0) << out;
  EXPECT_EQ(last_spincount(out), "0") << out;
  ASSERT_EQ(run(cmd + "OMP_WAIT_POLICY=active ./build/bigs_cpu eval --help", &out), 0) << out;
  EXPECT_EQ(last_spincount(out), "30000000000") << out;
  ASSERT_EQ(run(cmd + "GOMP_SPINCOUNT=1000 ./build/bigs_cpu eval --help", &out), 0) << out;
  EXPECT_EQ(last_spincount(out), "1000") << out;
}

TEST_F(Trainer, BadInputGetsAClearMessage) {
  std::string out;
  ASSERT_EQ(run(pretrain("ok", "--steps 1"), &out), 0) << out;
  struct Case {
    std::string cmd, expect;
  } cases[] = {
      {pretrain("x", "--train '" + dir + "/nothing_*.bin'"), "no file matches"},
      {pretrain("x", "--lr -1"), "--lr"},
      {pretrain("x", "--micro-batch 3"), "does not divide"},
      {pretrain("x", "--schedule cubic"), "--schedule"},
      {pretrain("x", "--device tpu"), "--device"},
      {pretrain("x", "--precision fp16"), "--precision"},
      {"./build/bigs_cpu bench --plan --config large --precision int8", "--precision"},
      {pretrain("x", "--resume " + dir + "/ok/model.bin"), "parameters only"},
      {pretrain("x", "--resume " + dir + "/mini.cfg"), "not a bigs checkpoint"},
      {pretrain("x", "--config " + dir + "/nope.cfg"), "not a preset"},
      {"./build/bigs_cpu fill-mask --ckpt " + dir + "/ok/model.bin --vocab " + dir + "/small_vocab.txt 'a [MASK]'",
       "tokens but the model"},
      {"./build/bigs_cpu fill-mask --ckpt " + dir + "/ok/model.bin --vocab data/bert-base-uncased-vocab.txt 'no mask'",
       "no [MASK]"},
      {"./build/bigs_cpu frobnicate", "unknown command"},
  };
  for (const Case& c : cases) {
    int rc = run(c.cmd, &out);
    EXPECT_NE(rc, 0) << c.cmd;
    EXPECT_NE(out.find(c.expect), std::string::npos) << c.cmd << "\nsaid: " << out;
  }
  // A truncated checkpoint is refused, and nothing was left half-written.
  std::string ck = slurp(dir + "/ok/model.bin");
  std::ofstream(dir + "/trunc.bin", std::ios::binary) << ck.substr(0, ck.size() - 10);
  EXPECT_NE(run(pretrain("x", "--resume " + dir + "/trunc.bin"), &out), 0);
  EXPECT_NE(out.find("truncated"), std::string::npos) << out;
  EXPECT_NE(run("ls " + dir + "/ok/*.tmp", &out), 0) << "a temporary checkpoint was left behind";
}

// The GPU memory plan needs no GPU: the CPU-only build prints it.
TEST_F(Trainer, BenchPlanRunsWithoutAGpu) {
  std::string out;
  ASSERT_EQ(run("./build/bigs_cpu bench --plan --config large --seq 4096 --batch 2 --memory-gb 80", &out), 0) << out;
  EXPECT_NE(out.find("GPU memory plan (bf16, batch 2, T 4096)"), std::string::npos) << out;
  EXPECT_NE(out.find("largest batch that fits in 80.0 GB"), std::string::npos) << out;
}

// The data-parallel prediction (README "Data-parallel training") from the
// one-GPU step it prints: 2 (K - 1) / K x 4 bytes a parameter on the links
// at 450 GB/s, plus the owner's adds ((K + 2) / K x 4 bytes a parameter at
// 3.8 TB/s), after the step as built and at best hidden behind it; the
// memory the data-parallel buffers take on each GPU.
TEST_F(Trainer, BenchPlanPredictsTheDataParallelStep) {
  std::string out, err;
  ASSERT_EQ(run("./build/bigs_cpu bench --plan --config large --seq 128 --batch 64 --ranks 8", &out), 0) << out;
  Config c;
  ASSERT_TRUE(config_load("large", &c, &err)) << err;
  c.T = 128;
  const double n = (double)table_total(param_table(c, kDevAlign)), K = 8;
  const double links_ms = 2 * (K - 1) / K * 4 * n / 450e9 * 1e3, adds_ms = (K + 2) / K * 4 * n / 3.8e12 * 1e3;
  auto number_after = [&](const std::string& key) {
    size_t at = out.find(key);
    EXPECT_NE(at, std::string::npos) << key << " in\n" << out;
    return at == std::string::npos ? 0.0 : std::stod(out.substr(at + key.size()));
  };
  const double one = number_after("predicted on an H200 ");
  EXPECT_NEAR(number_after("(512 a step): "), 2 * (K - 1) / K * 4 * n / 1e9, 0.006);
  EXPECT_NEAR(number_after("and parameter all-gather), "), links_ms, 0.006);
  // Serial: 25 buckets (the heads, 23 layers, the embeddings), each packed (read and written) and sent
  // after the backward pass, the copy of the shard's sum, 26 NCCL calls at 20 us, 4 us a launch; the
  // norm and AdamW over a shard (whole chunks of 65,536 floats) instead of the block, then the bf16
  // copy of the block.
  const double shard = std::ceil(n / K / 65536) * 65536;
  auto ms = [](const OpCost& o) {
    CostLedger l;
    l.add(o);
    return l.total().seconds * 1e3;
  };
  const double tail_one = ms(grad_norm_cost((size_t)n)) + ms(adamw_cost((size_t)n, true));
  const double tail_shard =
      ms(grad_norm_cost((size_t)shard)) + ms(adamw_cost((size_t)shard, true)) + ms(cast_cost((size_t)n, 4, 2));
  const double packs_ms = 8 * n / 3.8e12 * 1e3 + 25 * 0.004, copy_ms = 8 * shard / 3.8e12 * 1e3 + 0.004;
  const double serial =
      one - tail_one + tail_shard + links_ms + packs_ms + adds_ms + 25 * 0.004 + copy_ms + 26 * 0.020;
  EXPECT_NEAR(number_after("(the exchanges after the backward pass): "), serial, 0.02);
  // Bucketed: the all-gather, the copy and the shard's update cannot hide; the rest of the exchange
  // partly hides.
  const double built = number_after("(bucketed, overlapped with the backward pass): ");
  EXPECT_GT(built, one - tail_one + tail_shard + links_ms / 2 + copy_ms + 0.020);
  EXPECT_LT(built, serial - 1.0);
  // Each GPU holds a sum of one shard, an inbox of 8 and the packed block.
  EXPECT_NEAR(number_after("buffers on each of 8 GPUs: "), (9 * shard + n) * 4 / 1e9, 0.006);
}

TEST_F(Trainer, ShardsOfAnotherLengthAreRefused) {
  std::string out;
  ASSERT_EQ(run("./data_prep pretrain --vocab data/bert-base-uncased-vocab.txt --seq 24 --out " + dir + "/shards24 " +
                    dir + "/text.txt",
                &out),
            0)
      << out;
  std::string cmd = pretrain("x", "") + " --val '" + dir + "/shards24/val_*.bin'";
  EXPECT_NE(run(cmd, &out), 0);
  EXPECT_NE(out.find("T = 24"), std::string::npos) << out;
  ASSERT_EQ(run(pretrain("t32", "--steps 1"), &out), 0) << out;
  cmd = "./build/bigs_cpu pretrain --train '" + dir + "/shards24/train_*.bin' --resume " + dir + "/t32/state.bin --out " +
        dir + "/x";
  EXPECT_NE(run(cmd, &out), 0);
  EXPECT_NE(out.find("T = 32"), std::string::npos) << out;
}

// ===========================================================================
// GLUE: metrics, and fine-tune -> eval -> predict through the command line
// ===========================================================================

TEST(Metrics, HandComputedValues) {
  std::vector<double> p = {1, 1, 0, 0, 1, 0, 1, 1}, g = {1, 0, 0, 0, 1, 1, 1, 1};
  // tp 4, fp 1, fn 1, tn 2
  EXPECT_DOUBLE_EQ(metric_accuracy(p, g), 6.0 / 8);
  EXPECT_DOUBLE_EQ(metric_f1(p, g), 8.0 / 10);
  EXPECT_NEAR(metric_mcc(p, g), (4.0 * 2 - 1.0 * 1) / std::sqrt(5.0 * 5 * 3 * 3), 1e-15);
  std::vector<double> one(8, 1.0);
  EXPECT_EQ(metric_mcc(one, g), 0.0);  // undefined: 0, as scikit-learn
  EXPECT_EQ(metric_f1(std::vector<double>(8, 0.0), g), 0.0);
  std::vector<double> x = {1, 2, 2, 3}, y = {10, 20, 20, 40};
  EXPECT_NEAR(metric_spearman(x, y), 1.0, 1e-15);  // ties ranked 2.5 in both
  EXPECT_NEAR(metric_pearson({1, 2, 3}, {2, 4, 6.5}), 4.5 / std::sqrt(2 * 61.0 / 6), 1e-15);  // sxy / sqrt(sxx syy)
  std::vector<double> r = average_ranks({3, 1, 3, 2});
  EXPECT_EQ(r, (std::vector<double>{3.5, 1, 3.5, 2}));
}

// The metric that picks the best checkpoint is the authors' (run_glue.py's
// task_metrics): accuracy for MRPC and QQP, Spearman for STS-B.
TEST(Metrics, MainMetricIsTheAuthors) {
  std::vector<double> p = {1, 1, 0, 0, 1, 0, 1, 1}, g = {1, 0, 0, 0, 1, 1, 1, 1};
  EXPECT_EQ(task_metrics("mrpc", p, g).main, metric_accuracy(p, g));
  EXPECT_EQ(task_metrics("qqp", p, g).main, metric_accuracy(p, g));
  EXPECT_EQ(task_metrics("cola", p, g).main, metric_mcc(p, g));
  std::vector<double> x = {1, 2, 4, 3, 5}, y = {1.5, 2, 2.5, 9, 10};
  EXPECT_EQ(task_metrics("stsb", x, y).main, metric_spearman(x, y));
  EXPECT_NE(metric_spearman(x, y), metric_pearson(x, y));
}

// Cases written by dev/glue_metrics.py from scikit-learn and scipy
// (`make test` generates build/metric_cases.tsv): metric, predictions, golds, value.
TEST(Metrics, MatchScikitLearnAndScipy) {
  std::ifstream in("build/metric_cases.tsv");
  ASSERT_TRUE(in.good()) << "build/metric_cases.tsv is missing; run `make test` (dev/glue_metrics.py cases)";
  auto parse = [](const std::string& s) {
    std::vector<double> v;
    std::stringstream ss(s);
    for (std::string x; std::getline(ss, x, ',');) v.push_back(std::stod(x));
    return v;
  };
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    std::stringstream ss(line);
    std::string metric, ps, gs, want;
    std::getline(ss, metric, '\t'), std::getline(ss, ps, '\t'), std::getline(ss, gs, '\t'), std::getline(ss, want, '\t');
    std::vector<double> p = parse(ps), g = parse(gs);
    double got = metric == "accuracy" ? metric_accuracy(p, g)
                 : metric == "f1"     ? metric_f1(p, g)
                 : metric == "mcc"    ? metric_mcc(p, g)
                 : metric == "pearson" ? metric_pearson(p, g)
                 : metric == "spearman" ? metric_spearman(p, g)
                                        : NAN;
    ASSERT_FALSE(std::isnan(got)) << "unknown metric " << metric;
    EXPECT_NEAR(got, std::stod(want), 1e-12) << metric << " case " << n;
    n++;
  }
  EXPECT_GT(n, 20);
}

TEST_F(Trainer, FinetuneEvalPredict) {
  std::string out;
  ASSERT_EQ(run(pretrain("base", "--steps 1"), &out), 0) << out;
  ASSERT_EQ(run("./data_prep glue --task sst2 --vocab data/bert-base-uncased-vocab.txt --seq 32 --data-dir "
                "test/data/glue/SST-2 --out " + dir + "/sst2",
                &out),
            0)
      << out;
  std::string files = " --train " + dir + "/sst2/sst2_train.bin --dev " + dir + "/sst2/sst2_dev.bin";
  // 3 training examples in batches of 2: one step an epoch (the partial
  // batch dropped, as the authors do), evaluated once at each epoch's end
  // although --eval-every 1 also falls there; best.bin is the first best.
  ASSERT_EQ(run("./build/bigs_cpu finetune --task sst2 --init " + dir + "/base/model.bin" + files +
                    " --epochs 2 --batch 2 --micro-batch 2 --lr 1e-3 --eval-every 1 --threads 2 --out " + dir + "/ft",
                &out),
            0)
      << out;
  EXPECT_NE(out.find("new classification head with 2 labels"), std::string::npos) << out;
  EXPECT_NE(out.find("(epoch 2)"), std::string::npos) << out;
  EXPECT_NE(out.find("3 training examples, 1 dev; 2 steps of 2 (2 epochs)"), std::string::npos) << out;
  EXPECT_NE(out.find("\n  grad-clip              0\n"), std::string::npos) << out;
  {
    std::istringstream log(slurp(dir + "/ft/log.jsonl"));
    std::vector<std::pair<long long, double>> evals;  // step, dev_main
    for (std::string line; std::getline(log, line);) {
      long long st;
      double loss, main;
      if (sscanf(line.c_str(), "{\"step\": %lld, \"dev_loss\": %lf, \"dev_main\": %lf", &st, &loss, &main) == 3)
        evals.push_back({st, main});
    }
    ASSERT_EQ(evals.size(), 2u) << slurp(dir + "/ft/log.jsonl");
    EXPECT_EQ(evals[0].first, 1);
    EXPECT_EQ(evals[1].first, 2);
    CkptHeader h;
    std::vector<float> data;
    std::string err;
    ASSERT_TRUE(checkpoint_read(dir + "/ft/best.bin", &h, &data, &err)) << err;
    EXPECT_EQ((long long)h.step, evals[1].second > evals[0].second ? 2 : 1);
  }
  // A batch larger than the training set leaves no step: refused, with the way out.
  EXPECT_EQ(run("./build/bigs_cpu finetune --task sst2 --init " + dir + "/base/model.bin" + files +
                    " --epochs 1 --batch 4 --micro-batch 2 --threads 2 --out " + dir + "/ft4",
                &out),
            2)
      << out;
  EXPECT_NE(out.find("--partial-batch"), std::string::npos) << out;
  ASSERT_EQ(run("./build/bigs_cpu finetune --task sst2 --init " + dir + "/base/model.bin" + files +
                    " --epochs 1 --batch 4 --micro-batch 2 --partial-batch --threads 2 --out " + dir + "/ft4",
                &out),
            0)
      << out;
  EXPECT_NE(out.find("1 steps of 4 (1 epochs)"), std::string::npos) << out;
  ASSERT_EQ(run("./build/bigs_cpu eval --task sst2 --ckpt " + dir + "/ft/best.bin --dev " + dir + "/sst2/sst2_dev.bin",
                &out),
            0)
      << out;
  EXPECT_NE(out.find("accuracy"), std::string::npos) << out;
  ASSERT_EQ(run("./build/bigs_cpu predict --task sst2 --ckpt " + dir + "/ft/best.bin --test " + dir +
                    "/sst2/sst2_test.bin --out " + dir + "/sub",
                &out),
            0)
      << out;
  std::istringstream sub(slurp(dir + "/sub/SST-2.tsv"));
  std::string line;
  ASSERT_TRUE(std::getline(sub, line));
  EXPECT_EQ(line, "index\tprediction");
  int rows = 0;
  for (long prev = -1; std::getline(sub, line); rows++) {
    long idx = std::stol(line.substr(0, line.find('\t')));
    std::string p = line.substr(line.find('\t') + 1);
    EXPECT_GT(idx, prev) << "not in index order";
    EXPECT_TRUE(p == "0" || p == "1") << line;
    prev = idx;
  }
  EXPECT_GT(rows, 0);
  // Wrong task, a test file to eval, and an MLM checkpoint to eval: refused.
  EXPECT_NE(run("./build/bigs_cpu eval --task cola --ckpt " + dir + "/ft/best.bin --dev " + dir + "/sst2/sst2_dev.bin", &out), 0);
  EXPECT_NE(out.find("not 'cola'"), std::string::npos) << out;
  EXPECT_NE(run("./build/bigs_cpu eval --task sst2 --ckpt " + dir + "/ft/best.bin --dev " + dir + "/sst2/sst2_test.bin", &out), 0);
  EXPECT_NE(out.find("no labels"), std::string::npos) << out;
  EXPECT_NE(run("./build/bigs_cpu eval --task sst2 --ckpt " + dir + "/base/model.bin --dev " + dir + "/sst2/sst2_dev.bin", &out), 0);
  EXPECT_NE(out.find("fine-tune it first"), std::string::npos) << out;
}

// ===========================================================================
// Readers: the bugs the fuzz harnesses found (fuzz/, README "Reliability"),
// kept fixed here
// ===========================================================================

namespace {

std::string write_temp(const std::string& name, const std::string& bytes) {
  const std::string path = "build/test_train_readers_" + name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

}  // namespace

TEST(Readers, ConfigFilesAreWholeLinesOfKeyAndInteger) {
  Config c;
  std::string err;
  ASSERT_TRUE(config_load(write_temp("ok.cfg", "# a model\nH 64\n  I\t128 \r\nL 2\n\nN 16\n"), &c, &err)) << err;
  EXPECT_EQ(c.H, 64);
  EXPECT_EQ(c.I, 128);
  EXPECT_EQ(c.L, 2);
  EXPECT_EQ(c.N, 16);
  // Each was accepted before: the value's tail, or a number past int, was dropped without a word (fuzz/config.cpp).
  const std::string comment(300, 'x');
  for (const std::string& text : {std::string("H 1\xff\xff\xff\n"), std::string("H 64.5\n"), std::string("H 64 # hidden\n"),
                                  std::string("H 4294967360\n"), std::string("H 0x40\n"), std::string("H 6\0 4\n", 7),
                                  "#" + comment + " L 99\nH x\n"}) {
    EXPECT_FALSE(config_load(write_temp("bad.cfg", text), &c, &err)) << "accepted: " << text;
    EXPECT_NE(err.find("build/test_train_readers_bad.cfg:"), std::string::npos) << err;
  }
  // A long comment line is one line: the text after its 255th byte is no key (it was read as one).
  ASSERT_TRUE(config_load(write_temp("long.cfg", "#" + comment + " L 99\nL 3\n"), &c, &err)) << err;
  EXPECT_EQ(c.L, 3);
}

TEST(Readers, ACheckpointWithAHugeConfigIsRefusedWithoutOverflow) {
  // In range field by field, but a layer's dv_w has I x H = 2^32 elements: the parameter table
  // multiplied that in int (UB, found by fuzz/checkpoint.cpp under UBSan; out-of-range fields
  // reached the table as well).
  CkptHeader h{};
  h.magic = kCkptMagic, h.version = kCkptVersion, h.kind = kCkptModel;
  h.V = 30522, h.H = 1 << 14, h.I = 1 << 18, h.L = 1024, h.N = 4, h.T = 128, h.types = 2, h.labels = 0;
  for (int huge_field : {0, 1}) {
    if (huge_field) h.H = 65636;  // out of range
    seal_header(&h, crc32c(0, "", 0));
    const std::string path = write_temp("huge.bin", std::string(reinterpret_cast<const char*>(&h), sizeof h));
    std::vector<float> data;
    CkptHeader got;
    std::string err;
    EXPECT_FALSE(checkpoint_read(path, &got, &data, &err));
    EXPECT_NE(err.find(huge_field ? "H = 65636 is out of range" : "I x H = 4294967296 elements"),
              std::string::npos)
        << err;
  }
}

TEST(Readers, TaskFileRecordsAreChecked) {
  std::string out;
  ASSERT_EQ(run("./data_prep glue --task wnli --vocab data/bert-base-uncased-vocab.txt --seq 16 --data-dir "
                "test/data/glue/WNLI --out build/test_train_readers_glue",
                &out),
            0)
      << out;
  const std::string good = slurp("build/test_train_readers_glue/wnli_train.bin");
  TaskData d;
  std::string err;
  ASSERT_TRUE(task_load("build/test_train_readers_glue/wnli_train.bin", &d, &err)) << err;
  // Records rewritten with the checksum made valid again: a writer's bug, not a flipped bit.
  auto sealed = [&](std::string b) {
    TaskHeader th;
    memcpy(&th, b.data(), sizeof th);
    seal_header(&th, crc32c(0, b.data() + sizeof th, b.size() - sizeof th));
    memcpy(&b[0], &th, sizeof th);
    return write_temp("task.bin", b);
  };
  const size_t rec = sizeof(TaskHeader);  // example 0: ids (2T bytes), types (T), label, index
  // A type of 129 (found by fuzz/bigs_task.cpp: it loaded, and failed later inside a batch, nameless).
  std::string b = good;
  b[rec + 2 * 16 + 3] = char(129);
  EXPECT_FALSE(task_load(sealed(b), &d, &err));
  EXPECT_NE(err.find("task.bin: example 0 has the id"), std::string::npos) << err;
  EXPECT_NE(err.find("and type 129 at position 3"), std::string::npos) << err;
  // An id past V (0x77FF = 30719 >= 30522).
  b = good;
  b[rec + 2] = char(0xFF), b[rec + 3] = char(0x77);
  EXPECT_FALSE(task_load(sealed(b), &d, &err));
  EXPECT_NE(err.find("example 0 has the id 30719 and type 0 at position 1 (V = 30522"), std::string::npos) << err;
  // A label that is no class (7 of 2).
  b = good;
  const float seven = 7;
  memcpy(&b[rec + 3 * 16], &seven, 4);
  EXPECT_FALSE(task_load(sealed(b), &d, &err));
  EXPECT_NE(err.find("example 0 has the label 7, not a class index"), std::string::npos) << err;
  // A flipped bit, and version 1.
  b = good;
  b[b.size() - 1] ^= 0x40;
  EXPECT_FALSE(task_load(write_temp("task.bin", b), &d, &err));
  EXPECT_NE(err.find("task.bin: checksum mismatch"), std::string::npos) << err;
  b = good;
  b[4] = 1;
  memset(&b[offsetof(TaskHeader, payload_crc)], 0, 8);
  EXPECT_TRUE(task_load(write_temp("task.bin", b), &d, &err)) << err;
}
