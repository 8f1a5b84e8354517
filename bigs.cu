// bigs.cu: BiGS, the attention-free BERT of "Pretraining Without Attention"
// (Wang, Yan, Gu, Rush, 2022), trained from one file.
//
// What BiGS is. A BERT-style masked language model in which every attention
// block is replaced by a bidirectional gated state-space layer. Per layer,
// with h = LayerNorm(x):
//   v  = gelu(h Wv + bv)                        (T, I)  the gate's value branch
//   uf = gelu(h Wuf + buf), ub = gelu(h Wub + bub)
//   sf = SSM_forward(uf), sb = SSM_backward(ub)  long convolutions over the
//        whole sequence, left to right and right to left, each with a kernel
//        K computed from N complex modes (S4D) for any length T
//   g  = gelu(((sf Wcf + bcf) * (sb Wcb + bcb)) Wol + bol)   (T, I)
//   x  = x + (g * v) Wo + bo
// so tokens meet only through the two convolutions, in O(T log T) (or as
// Toeplitz products for short T), and the rest is dense layers and
// elementwise gates. Embeddings below, an MLM or classification head above.
// docs/MODEL.md goes through it equation by equation and names the function
// here that computes each line.
//
// Read it top to bottom. The parts, in order:
//   Config, parameter and activation tables   shapes, one X-macro table each
//   Model                                     Model, Batch, Loss, the device-generic
//                                             model: layer_forward, layer_backward,
//                                             the encoder and both heads
//   Initialisation                            HiPPO-LegS for the SSM modes
//   Layers, in the order layer_forward calls them: for each the plain CPU
//                                             reference (*_cpu), its CUDA kernel and
//                                             launcher, and its cost formula (*_cost)
//   Devices                                   Cpu, the GPU's memory plan, GpuModel,
//                                             Gpu<S>; with_device picks one
//   Optimizer                                 AdamW, schedules, clipping, train_step
//   Checkpoints, Commands                     pretrain, fill-mask; main at the end
// What it stands on lives in bigsc/, as llm.c's llmc/ does for train_gpt2.cu.
// Included here at the top (each names nothing from this file): common.h
// (errors, random numbers), cuda_common.cuh (checked calls, CudaCtx, the
// launch helper, reductions), cublaslt.cuh, ssm_toeplitz.cuh (the GPU's
// Toeplitz plans), cli.h, formats.h. Included further down, continuing this
// file where they stand: cpu_fast.h (the fast CPU twins of the layers),
// world.h (MPI/NCCL data parallelism), dataloader.h (shards, order,
// masking), commands.h (what every command stands on), cost.h (the cost
// device and bench), glue.h (finetune, eval, predict).
//
// Dimension legend used in every shape comment:
//   B batch (sequences)     T sequence length (= max positions of the model)
//   H hidden                I intermediate       V vocabulary
//   N SSM modes (complex)   L layers             P predicted rows (MLM head)
//   Y classifier outputs (labels)
//
// It builds three ways: `nvcc bigs.cu` (CPU and CUDA paths), `g++ -x c++
// bigs.cu` (CPU only), and included by the tests with BIGS_NO_MAIN defined;
// with -DBIGS_MPI (an MPI compiler wrapper) it also runs as one rank of a
// data-parallel job, and with -DBIGS_NCCL its GPUs exchange through NCCL.

#include "bigsc/common.h"
#include "bigsc/cuda_common.cuh"
#include "bigsc/cublaslt.cuh"
#include "bigsc/ssm_toeplitz.cuh"
#include "bigsc/cli.h"
#include "bigsc/formats.h"
#include "tokenizer.h"

namespace bigs {

// ============================================================================
// Config
// ============================================================================

// One table (an X-macro) holds the config's fields: it generates the struct,
// the presets, the config-file keys, the range checks, the checkpoint
// header's fields and the start-up line, so a new field is one new row.
//   X(name, default, tiny, base, large, lo, hi, meaning)
// large is the released BiGS-large (docs/MODEL.md section 1); base is a
// BERT-base sized sibling; tiny trains on two CPU cores in minutes. A preset
// V of 0 means "from the vocabulary"; T is always the data's.
#define BIGS_CONFIG(X)                                                              \
  X(V, 0, 0, 30522, 30522, 8, 65535, "vocabulary")                                  \
  X(H, 0, 64, 768, 1024, 1, 1 << 16, "hidden")                                      \
  X(I, 0, 128, 2304, 3072, 1, 1 << 18, "intermediate")                              \
  X(L, 0, 2, 12, 23, 1, 1024, "layers")                                             \
  X(N, 0, 16, 64, 64, 1, 4096, "SSM modes per SSM")                                 \
  X(T, 0, 128, 128, 128, 1, 1 << 16, "sequence length = max position embeddings") \
  X(types, 2, 2, 2, 2, 1, 16, "token type vocabulary")                              \
  X(labels, 0, 0, 0, 0, 0, 64, "classifier outputs: 0 = MLM model only, 1 = regression")

struct Config {
#define X(name, dflt, tiny, base, large, lo, hi, what) int name = dflt;
  BIGS_CONFIG(X)
#undef X
};

static bool config_preset(const std::string& name, Config* c) {
#define X(f, dflt, tiny, base, large, lo, hi, what) \
  c->f = name == "tiny" ? tiny : name == "base" ? base : large;
  if (name != "tiny" && name != "base" && name != "large") return false;
  BIGS_CONFIG(X)
#undef X
  return true;
}

static std::string config_check(const Config& c) {
  std::string e;
#define X(f, dflt, tiny, base, large, lo, hi, what) \
  if (c.f < lo || c.f > hi) e += strf("config: %s = %d is out of range [%d, %d]\n", #f, c.f, lo, hi);
  BIGS_CONFIG(X)
#undef X
  if (!e.empty()) return e;
  // The parameter table (BIGS_PARAMS) multiplies these in int: each of its
  // tensors (each layer's slice) must have fewer than 2^31 elements.
  const long long V = c.V, H = c.H, I = c.I, T = c.T;
  const std::pair<const char*, long long> big[] = {
      {"V x H", V * H}, {"T x H", T * H}, {"H x H", H * H}, {"I x H", I * H}};
  for (const auto& [what, n] : big)
    if (e.empty() && n > 0x7FFFFFFFLL)
      e = strf("config: %s = %lld elements, more than 2^31 - 1 in one tensor\n", what, n);
  return e;
}

// "V 30522  H 1024  ...", for start-up lines and messages.
static std::string config_line(const Config& c) {
  std::string s;
#define X(f, dflt, tiny, base, large, lo, hi, what) s += strf("%s%s %d", s.empty() ? "" : "  ", #f, c.f);
  BIGS_CONFIG(X)
#undef X
  return s;
}

// ============================================================================
// Parameter and activation tables
// ============================================================================
// One table each (X-macros) generates the struct of pointers, the sizes, the
// names printed in checkpoints and tests, the weight-decay mask, each
// tensor's initialisation and the per-layer slices, so that zeroing,
// clipping, AdamW, init and checkpoint I/O are one loop over one block and
// no tensor is named twice by hand. Per-layer tensors are stacked over L
// first. Dense weights are (out, in), as torch.nn.Linear: y = x W^T + b.
//
//   X(name, layers, elements per layer, weight decay?, init, shape)

// How a tensor starts (docs/MODEL.md section 9). Normal draws one Rng::normal()
// per element, LogUniform one Rng::uniform(), the others draw nothing, so
// the stream of random numbers is the table's order.
struct Init {
  enum Kind { Normal, Const, HippoAIm, LogUniform, TruncNormal } kind;
  double a, b;  // Normal: std; Const: the value; LogUniform: [a, b] in log space;
                // TruncNormal: a x (a standard normal truncated to [-b, b])
};
constexpr Init init_normal(double std) { return {Init::Normal, std, 0}; }
// Flax's default for a Dense kernel, lecun_normal(), is JAX's
// variance_scaling(1, "fan_in", "truncated_normal"): a standard normal
// truncated to [-2, 2], times sqrt(1 / fan_in) / 0.87962566103423978, the
// standard deviation of that truncated normal, so that the variance is
// exactly 1 / fan_in (jax.nn.initializers.variance_scaling). The official
// model creates two layers without an explicit initializer, the MLM
// transform dense and the classifier; every other kernel is N(0, 0.02).
constexpr double kTrunc2Std = 0.87962566103423978;  // std of N(0, 1) truncated to [-2, 2]
inline Init init_lecun(int fan_in) { return {Init::TruncNormal, 1.0 / std::sqrt((double)fan_in) / kTrunc2Std, 2.0}; }
constexpr Init init_const(double v) { return {Init::Const, v, 0}; }
constexpr Init init_hippo() { return {Init::HippoAIm, 0, 0}; }  // A_im from HiPPO-LegS, every layer alike
constexpr Init init_log_uniform(double lo, double hi) { return {Init::LogUniform, lo, hi}; }

#define BIGS_EMBED_PARAMS(X)                                                                           \
  X(wte, 1, c.V* c.H, 1, init_normal(0.02), "(V, H) word embeddings; the MLM decoder is tied to them") \
  X(wpe, 1, c.T* c.H, 1, init_normal(0.02), "(T, H) position embeddings")                              \
  X(wtt, 1, c.types* c.H, 1, init_normal(0.02), "(types, H) token type embeddings")                    \
  X(ln_emb_w, 1, c.H, 0, init_const(1), "(H) embedding LayerNorm scale")                               \
  X(ln_emb_b, 1, c.H, 0, init_const(0), "(H) embedding LayerNorm bias")

// The SSMs: C ~ N(0, 1/2) per component, D = 1, log_step ~ U(log 0.01, log 1).
#define BIGS_LAYER_PARAMS(X)                                                                                \
  X(ln_w, c.L, c.H, 0, init_const(1), "(L, H) pre-norm scale")                                             \
  X(ln_b, c.L, c.H, 0, init_const(0), "(L, H) pre-norm bias")                                              \
  X(dv_w, c.L, c.I* c.H, 1, init_normal(0.02), "(L, I, H) dv: the value branch")                           \
  X(dv_b, c.L, c.I, 0, init_const(0), "(L, I)")                                                             \
  X(duf_w, c.L, c.H* c.H, 1, init_normal(0.02), "(L, H, H) du_forward")                                    \
  X(duf_b, c.L, c.H, 0, init_const(0), "(L, H)")                                                            \
  X(dub_w, c.L, c.H* c.H, 1, init_normal(0.02), "(L, H, H) du_backward")                                   \
  X(dub_b, c.L, c.H, 0, init_const(0), "(L, H)")                                                            \
  X(fs_a_re, c.L, c.N, 1, init_const(-0.5), "(L, N) fs4: real part of A (clipped at -1e-4)")               \
  X(fs_a_im, c.L, c.N, 1, init_hippo(), "(L, N) fs4: imaginary part of A")                                 \
  X(fs_c, c.L, c.N * 2, 1, init_normal(0.70710678), "(L, N, 2) fs4: C, real and imaginary")                \
  X(fs_d, c.L, 1, 1, init_const(1), "(L) fs4: skip term D")                                                \
  X(fs_log_step, c.L, 1, 1, init_log_uniform(0.01, 1), "(L) fs4: log of the step dt")                      \
  X(bs_a_re, c.L, c.N, 1, init_const(-0.5), "(L, N) bs4")                                                  \
  X(bs_a_im, c.L, c.N, 1, init_hippo(), "(L, N) bs4")                                                      \
  X(bs_c, c.L, c.N * 2, 1, init_normal(0.70710678), "(L, N, 2) bs4")                                       \
  X(bs_d, c.L, 1, 1, init_const(1), "(L) bs4")                                                             \
  X(bs_log_step, c.L, 1, 1, init_log_uniform(0.01, 1), "(L) bs4")                                          \
  X(ducf_w, c.L, c.H* c.H, 1, init_normal(0.02), "(L, H, H) duc_forward")                                  \
  X(ducf_b, c.L, c.H, 0, init_const(0), "(L, H)")                                                           \
  X(ducb_w, c.L, c.H* c.H, 1, init_normal(0.02), "(L, H, H) duc_backward")                                 \
  X(ducb_b, c.L, c.H, 0, init_const(0), "(L, H)")                                                           \
  X(dol_w, c.L, c.I* c.H, 1, init_normal(0.02), "(L, I, H) dol: the gate projection")                      \
  X(dol_b, c.L, c.I, 0, init_const(0), "(L, I)")                                                            \
  X(do_w, c.L, c.H* c.I, 1, init_normal(0.02), "(L, H, I) do: the output projection")                      \
  X(do_b, c.L, c.H, 0, init_const(0), "(L, H)")

#define BIGS_HEAD_PARAMS(X)                                                                                  \
  X(head_w, 1, c.H* c.H, 1, init_lecun(c.H), "(H, H) MLM transform dense")                                  \
  X(head_b, 1, c.H, 0, init_const(0), "(H)")                                                                 \
  X(head_ln_w, 1, c.H, 0, init_const(1), "(H) MLM transform LayerNorm scale")                               \
  X(head_ln_b, 1, c.H, 0, init_const(0), "(H) MLM transform LayerNorm bias")                                \
  X(head_bias, 1, c.V, 0, init_const(0), "(V) MLM decoder bias")                                            \
  X(pool_w, 1, (c.labels ? c.H * c.H : 0), 1, init_normal(0.02), "(H, H) pooler dense (classification only)") \
  X(pool_b, 1, (c.labels ? c.H : 0), 0, init_const(0), "(H)")                                               \
  X(cls_w, 1, c.labels* c.H, 1, init_lecun(c.H), "(Y, H) classifier")                                       \
  X(cls_b, 1, c.labels, 0, init_const(0), "(Y)")

#define BIGS_PARAMS(X) BIGS_EMBED_PARAMS(X) BIGS_LAYER_PARAMS(X) BIGS_HEAD_PARAMS(X)

template <class W>
struct ParamsT {
#define X(name, layers, count, decay, init, shape) W* name;
  BIGS_PARAMS(X)
#undef X
};
using Params = ParamsT<float>;

// One layer's slice of a parameter (or gradient) block; W is float, or
// bf16 for the GPU's copy of the weights that the dense layers read.
template <class W>
struct LayerWeightsT {
#define X(name, layers, count, decay, init, shape) W* name;
  BIGS_LAYER_PARAMS(X)
#undef X
};
using LayerWeights = LayerWeightsT<float>;

template <class W>
static LayerWeightsT<W> layer_weights(const ParamsT<W>& p, const Config& c, int l) {
  LayerWeightsT<W> w;
#define X(name, layers, count, decay, init, shape) w.name = p.name + (size_t)l * (size_t)(count);
  BIGS_LAYER_PARAMS(X)
#undef X
  return w;
}

// One SSM's parameters, as the S4D kernel and the convolution take them.
template <class W>
struct SsmT {
  W *a_re, *a_im, *c, *d, *log_step;  // (N), (N), (N, 2), (1), (1)
};
using Ssm = SsmT<float>;
template <class W>
static SsmT<W> forward_ssm(const LayerWeightsT<W>& w) {
  return {w.fs_a_re, w.fs_a_im, w.fs_c, w.fs_d, w.fs_log_step};
}
template <class W>
static SsmT<W> backward_ssm(const LayerWeightsT<W>& w) {
  return {w.bs_a_re, w.bs_a_im, w.bs_c, w.bs_d, w.bs_log_step};
}

// One row of a table, for the loops that treat every tensor alike.
struct TensorInfo {
  const char* name;
  size_t offset;  // in elements, from the start of the block
  size_t count;   // layers x per
  bool decay;
  Init init;
  const char* shape;
};

static size_t round_up(size_t n, size_t align) { return (n + align - 1) / align * align; }

// The parameter table. Host blocks and checkpoints are packed (align 1);
// the GPU's blocks start every tensor at a multiple of `align` elements, so
// that the dense layers' operands are aligned the way cuBLASLt's fastest
// kernels want (the packed layout leaves them at odd offsets after the
// (L)-sized SSM tensors).
static std::vector<TensorInfo> param_table(const Config& c, size_t align = 1) {
  std::vector<TensorInfo> t;
  size_t off = 0;
#define X(name, layers, count, decay, init, shape)               \
  {                                                             \
    size_t n = (size_t)(layers) * (size_t)(count);              \
    t.push_back({#name, off, n, decay, init, shape});           \
    off = round_up(off + n, align);                             \
  }
  BIGS_PARAMS(X)
#undef X
  return t;
}

static size_t table_total(const std::vector<TensorInfo>& t) { return t.empty() ? 0 : t.back().offset + t.back().count; }

// The buckets of a gradient block, in the order the backward pass finishes
// them, so that a data-parallel step can send each to the other ranks while
// the backward pass goes on (train_step): the heads (bucket 0: the MLM
// transform, decoder bias, pooler, classifier), layer L-1 down to layer 0
// (buckets 1 .. L), then the embedding tables and their LayerNorm (L + 1;
// the tied decoder adds to wte's gradient first, the embedding backward
// last). A layer's bucket is its slice of each of the stacked per-layer
// tensors, so it is made of pieces of the block (Span). The buckets cover
// the block once, padding included (a tensor's padding goes with the piece
// before it), and each lists its pieces in block order.
constexpr int kHeadBucket = 0;
static int layer_bucket(const Config& c, int l) { return c.L - l; }
static int embed_bucket(const Config& c) { return c.L + 1; }

struct Span {
  size_t at, len;  // elements [at, at + len) of a block
};
struct Piece {           // what a bucket's exchange copies (exchange_buckets)
  size_t from, to, len;  // elements [from, from + len) of a source to [to, to + len) of a destination
};

#define X(name, layers, count, decay, init, shape) +1
constexpr int kEmbedTensors = 0 BIGS_EMBED_PARAMS(X), kLayerTensors = 0 BIGS_LAYER_PARAMS(X);
#undef X

static std::vector<std::vector<Span>> bucket_spans(const Config& c, size_t align = 1) {
  const std::vector<TensorInfo> t = param_table(c, align);
  const size_t n = table_total(t);
  std::vector<std::vector<Span>> b(c.L + 2);
  auto add = [&](int bucket, size_t at, size_t end) {
    if (end > at) b[bucket].push_back({at, end - at});
  };
  for (size_t i = 0; i < t.size(); i++) {
    const size_t at = t[i].offset, end = i + 1 < t.size() ? t[i + 1].offset : n;
    if (i < (size_t)kEmbedTensors) {
      add(embed_bucket(c), at, end);
    } else if (i < (size_t)(kEmbedTensors + kLayerTensors)) {
      const size_t per = t[i].count / c.L;
      for (int l = 0; l < c.L; l++) add(layer_bucket(c, l), at + l * per, l + 1 < c.L ? at + (l + 1) * per : end);
    } else {
      add(kHeadBucket, at, end);
    }
  }
  return b;
}

template <class W>
static void point_params(ParamsT<W>* p, W* base, const Config& c, size_t align = 1) {
  size_t off = 0;
#define X(name, layers, count, decay, init, shape) \
  p->name = base + off;                            \
  off = round_up(off + (size_t)(layers) * (size_t)(count), align);
  BIGS_PARAMS(X)
#undef X
}

// The row stride of the MLM logits on the GPU: V rounded up to 8 elements
// (16 bytes in bf16), so that every row of the (R, V) logits and their
// gradient starts aligned, as cuBLASLt's tensor-core kernels want. V =
// 30522 is not a multiple of 8. The padding columns stay 0 and are never
// read. (The CPU keeps stride V and leaves the padding unused.)
static size_t logit_stride(const Config& c) { return round_up((size_t)c.V, 8); }

// Activations saved by the forward pass for the backward pass, for a batch of
// B sequences and up to R rows through the MLM head.
//   X(name, layers, elements per layer, type, host, shape)
// The type column: F tensors are always fp32 (statistics, SSM kernels,
// logits and losses, the small classification head, the residual stream
// and the gradients that are sums over many terms); A tensors have the
// activation precision S: fp32 on the CPU and in the GPU's fp32 mode, bf16
// in its bf16 mode. host = 1: a result that a model on the GPU copies back
// to the host (Model::a keeps only these there).
// The residual stream is fp32 everywhere: a layer's update smaller than
// 2^-9 of the stream would vanish in a bf16 sum, 23 times over.
#define BIGS_EMBED_ACTS(X)                                                                         \
  X(emb, 1, B* T* c.H, F, 0, "(B, T, H) word + position + type embedding, before LayerNorm")      \
  X(emb_mean, 1, B* T, F, 0, "(B, T) its LayerNorm statistics")                                   \
  X(emb_rstd, 1, B* T, F, 0, "(B, T)")                                                            \
  X(emb_ln, 1, B* T* c.H, F, 0, "(B, T, H) after LayerNorm, before dropout")                      \
  X(res, c.L + 1, B* T* c.H, F, 0, "(L+1, B, T, H) residual stream; res[0] = embeddings")

#define BIGS_LAYER_ACTS(X)                                                           \
  X(ln, c.L, B* T* c.H, A, 0, "(L, B, T, H) h = LayerNorm_l(x)")                    \
  X(ln_mean, c.L, B* T, F, 0, "(L, B, T)")                                          \
  X(ln_rstd, c.L, B* T, F, 0, "(L, B, T)")                                          \
  X(v_pre, c.L, B* T* c.I, A, 0, "(L, B, T, I) h Wv + bv")                          \
  X(v, c.L, B* T* c.I, A, 0, "(L, B, T, I) gelu_tanh(v_pre)")                       \
  X(uf_pre, c.L, B* T* c.H, A, 0, "(L, B, T, H)")                                   \
  X(uf, c.L, B* T* c.H, A, 0, "(L, B, T, H) forward SSM input")                     \
  X(ub_pre, c.L, B* T* c.H, A, 0, "(L, B, T, H) in original time order")            \
  X(ub, c.L, B* T* c.H, A, 0, "(L, B, T, H) backward SSM input, original time order") \
  X(kf, c.L, T, F, 0, "(L, T) forward SSM kernel K")                                \
  X(kb, c.L, T, F, 0, "(L, T) backward SSM kernel K")                               \
  X(sf, c.L, B* T* c.H, A, 0, "(L, B, T, H) forward SSM output")                    \
  X(sb, c.L, B* T* c.H, A, 0, "(L, B, T, H) backward SSM output, original time order") \
  X(cf, c.L, B* T* c.H, A, 0, "(L, B, T, H)")                                       \
  X(cb, c.L, B* T* c.H, A, 0, "(L, B, T, H)")                                       \
  X(gate, c.L, B* T* c.H, A, 0, "(L, B, T, H) cf * cb")                             \
  X(g_pre, c.L, B* T* c.I, A, 0, "(L, B, T, I)")                                    \
  X(g, c.L, B* T* c.I, A, 0, "(L, B, T, I) gelu_tanh(g_pre)")                       \
  X(gv, c.L, B* T* c.I, A, 0, "(L, B, T, I) g * v")

#define BIGS_HEAD_ACTS(X)                                                                                        \
  X(head_in, 1, R* c.H, A, 0, "(R, H) final hidden states of the predicted rows")                               \
  X(head_pre, 1, R* c.H, A, 0, "(R, H)")                                                                         \
  X(head_act, 1, R* c.H, F, 0, "(R, H) gelu_erf(head_pre)")                                                      \
  X(head_ln, 1, R* c.H, A, 0, "(R, H)")                                                                          \
  X(head_mean, 1, R, F, 0, "(R)")                                                                                \
  X(head_rstd, 1, R, F, 0, "(R)")                                                                                \
  X(logits, 1, R* logit_stride(c), F, 1, "(R, V) MLM logits of the predicted rows (rows padded, see logit_stride)") \
  X(row_loss, 1, R, F, 1, "(R) cross-entropy of each predicted row")                                             \
  X(pooled, 1, B* c.H, F, 0, "(B, H) mean of the final states over each example's tokens")                       \
  X(pool_pre, 1, B* c.H, F, 0, "(B, H) pooled Wp + bp")                                                          \
  X(pool, 1, B* c.H, F, 0, "(B, H) tanh(pool_pre)")                                                              \
  X(pool_drop, 1, B* c.H, F, 0, "(B, H) pool after dropout")                                                     \
  X(cls_logits, 1, B* c.labels, F, 1, "(B, Y)")                                                                  \
  X(cls_loss, 1, B, F, 1, "(B) loss of each sequence")

#define BIGS_ACTS(X) BIGS_EMBED_ACTS(X) BIGS_LAYER_ACTS(X) BIGS_HEAD_ACTS(X)

// Per-layer scratch for the backward pass: reused by every layer.
#define BIGS_SCRATCH(X)                                                                               \
  X(dres, 1, B* T* c.H, F, 0, "(B, T, H) gradient of the residual stream")                            \
  X(dres_a, 1, B* T* c.H, A, 0, "(B, T, H) dres rounded to A: the operand of the layer's last dense") \
  X(dh, 1, B* T* c.H, F, 0, "(B, T, H)")                                                              \
  X(duf, 1, B* T* c.H, A, 0, "(B, T, H)")                                                             \
  X(dub, 1, B* T* c.H, A, 0, "(B, T, H)")                                                             \
  X(dsf, 1, B* T* c.H, A, 0, "(B, T, H)")                                                             \
  X(dsb, 1, B* T* c.H, A, 0, "(B, T, H)")                                                             \
  X(dcf, 1, B* T* c.H, A, 0, "(B, T, H)")                                                             \
  X(dcb, 1, B* T* c.H, A, 0, "(B, T, H)")                                                             \
  X(dgate, 1, B* T* c.H, A, 0, "(B, T, H)")                                                           \
  X(dv, 1, B* T* c.I, A, 0, "(B, T, I)")                                                              \
  X(dg, 1, B* T* c.I, A, 0, "(B, T, I)")                                                              \
  X(dgv, 1, B* T* c.I, A, 0, "(B, T, I)")                                                             \
  X(dk, 1, T, F, 0, "(T) gradient of one SSM kernel")                                                 \
  X(dhead, 1, R* c.H, F, 0, "(R, H)")                                                                 \
  X(dhead2, 1, R* c.H, A, 0, "(R, H)")                                                                \
  X(dlogits, 1, R* logit_stride(c), A, 0, "(R, V), rows padded")                                      \
  X(dpool, 1, B* c.H, F, 0, "(B, H)")                                                                 \
  X(dpooled, 1, B* c.H, F, 0, "(B, H)")                                                               \
  X(dcls_logits, 1, B* c.labels, F, 1, "(B, Y) from the host")

template <class S>
struct ActsT {
  using A = S;
  using F = float;
#define X(name, layers, count, type, host, shape) type* name;
  BIGS_ACTS(X)
  BIGS_SCRATCH(X)
#undef X
  int* rows = nullptr;        // (R) flat index b * T + t of each predicted row (host)
  int* row_target = nullptr;  // (R) its target token (host)
};
using Acts = ActsT<float>;

// Lays the activation tables out in one block of bytes, each tensor at a
// multiple of `align` bytes, and returns the block's size; a null base only
// counts. The CPU packs (align 4: the floats follow one another); the GPU
// aligns every tensor to 256 bytes. host_only lays out just the host = 1
// results (all fp32), for a model on the GPU (Model::a).
template <class S>
static size_t layout_acts(ActsT<S>* a, char* base, const Config& c, size_t B, size_t R, size_t align,
                          bool host_only = false) {
  using A = S;
  using F = float;
  size_t T = (size_t)c.T, off = 0;
#define X(name, layers, count, type, host, shape)                                  \
  if (!host_only || host) {                                                        \
    if (a) a->name = base ? (type*)(base + off) : nullptr;                         \
    off = round_up(off + (size_t)(layers) * (size_t)(count) * sizeof(type), align); \
  }
  BIGS_ACTS(X)
  BIGS_SCRATCH(X)
#undef X
  return off;
}

// One layer's slice of the activation block (types as in BIGS_LAYER_ACTS),
// with its view of the residual stream: x in, x_out = x + the layer's y.
template <class S>
struct LayerActsT {
  using A = S;
  using F = float;
  float *x, *x_out;  // (B, T, H)
#define X(name, layers, count, type, host, shape) type* name;
  BIGS_LAYER_ACTS(X)
#undef X
};
using LayerActs = LayerActsT<float>;

// Bcap: the batch capacity the block was laid out for.
template <class S>
static LayerActsT<S> layer_acts(const ActsT<S>& a, const Config& c, int Bcap, int l) {
  size_t B = (size_t)Bcap, T = (size_t)c.T;
  LayerActsT<S> s;
  s.x = a.res + l * B * T * c.H, s.x_out = a.res + (l + 1) * B * T * c.H;
#define X(name, layers, count, type, host, shape) s.name = a.name + (size_t)l * (size_t)(count);
  BIGS_LAYER_ACTS(X)
#undef X
  return s;
}

enum class Act { GeluTanh, GeluErf, Tanh };  // the activations (see below)

// Whether a backward pass adds its input gradient to what dinp holds (Add,
// the "+=" of the comments) or sets it (Set: a buffer this is the first
// contribution to, so that nothing has to zero it first).
enum class Acc { Add, Set };

// ============================================================================
// Model
// ============================================================================

struct GpuModel;  // the device side, defined with the CUDA model below
struct World;     // the ranks of a job (Data parallelism)

// How the GPU computes (the CPU is always fp32):
//   Fp32  fp32 everywhere, exact fp32 products: the mode the tests check tightly
//   Tf32  fp32 storage, dense products on TF32 tensor cores
//   Bf16  fp32 master weights, gradients and AdamW moments; a bf16 copy of
//         the weights for the dense layers; bf16 activations and dense
//         operands with fp32 accumulation; the residual stream, LayerNorm
//         statistics, the SSM kernel, the FFT, softmax and losses in fp32
enum class Precision { Fp32, Tf32, Bf16 };

static bool parse_precision(const std::string& s, Precision* p, std::string* err) {
  if (s == "fp32")
    *p = Precision::Fp32;
  else if (s == "tf32")
    *p = Precision::Tf32;
  else if (s == "bf16")
    *p = Precision::Bf16;
  else {
    *err = strf("--precision %s: expected bf16, tf32 or fp32", s.c_str());
    return false;
  }
  return true;
}
static const char* precision_name(Precision p) {
  return p == Precision::Bf16 ? "bf16" : p == Precision::Tf32 ? "tf32" : "fp32";
}

struct Model {
  Config c;
  int B = 0;                      // batch capacity (sequences)
  int R = 0;                      // MLM head row capacity (predicted positions per batch)
  std::vector<TensorInfo> table;  // the parameter table, also valid for grads
  std::vector<float> params_mem, grads_mem, acts_mem;
  std::vector<int> rows_mem;
  Params p;  // parameters, one block
  Params g;  // their gradients, one block of the same layout
  // Activations and backward scratch, one block. On the host it is
  // allocated by the first CPU forward (a model bound for the GPU never
  // needs it: at T = 4096 it would not fit in the host's memory); a model
  // on the GPU keeps here only the results that come back to the host (the
  // host = 1 rows of the activation tables).
  Acts a;
  size_t num_params = 0, num_acts = 0;
  // Dropout (docs/MODEL.md section 12: 0.1 after the embeddings and before the classifier);
  // the mask streams are set by the trainer for each micro-batch.
  float dropout = 0.0f;
  uint64_t dropout_seed = 0, dropout_stream = 0;
  // Read by model_to_device. fp32 here, so that library users and the
  // tests get exact arithmetic unless they ask; the commands' default is
  // --precision bf16.
  Precision precision = Precision::Fp32;
  // Set by model_to_device: the model then lives on the GPU, and
  // model_forward, model_backward, adamw_step, grad_norm, ... run there. The
  // host blocks above keep the host's copy (checkpoints, the tests) and the
  // host-side results (the MLM rows, loss rows, evaluation logits).
  std::shared_ptr<GpuModel> gpu;
};

// What the backward pass calls as each bucket of the gradient block
// (exchange_buckets) becomes final, for whoever asked (the trainer starts
// that bucket's exchange between the ranks while the backward pass goes
// on). Empty: nothing is called.
using BucketDone = std::function<void(int bucket)>;

// Sizes a model from its config without allocating its blocks (only the
// MLM row lists, which are small): what the cost device needs.
static bool model_shape(Model* m, const Config& c, int B, int R, std::string* err) {
  std::string e = config_check(c);
  if (B < 1 || R < 1) e += strf("model: batch capacity %d and row capacity %d must be >= 1\n", B, R);
  if (!e.empty()) {
    *err = e;
    return false;
  }
  m->gpu.reset();  // a rebuilt model starts on the host; a device copy would have the old layout
  m->c = c;
  m->B = B;
  m->R = R;
  m->table = param_table(c);
  m->num_params = table_total(m->table);
  m->num_acts = layout_acts<float>(nullptr, nullptr, c, B, R, sizeof(float)) / sizeof(float);
  m->params_mem.clear(), m->grads_mem.clear(), m->acts_mem.clear();
  m->a = Acts{};
  m->rows_mem.assign(2 * (size_t)R, 0);
  m->a.rows = m->rows_mem.data();
  m->a.row_target = m->rows_mem.data() + R;
  return true;
}

// Sizes everything from the config, allocates the parameter and gradient
// blocks once (the activations: see Model::a).
static bool model_build(Model* m, const Config& c, int B, int R, std::string* err) {
  if (!model_shape(m, c, B, R, err)) return false;
  m->params_mem.assign(m->num_params, 0.0f);
  m->grads_mem.assign(m->num_params, 0.0f);
  point_params(&m->p, m->params_mem.data(), c);
  point_params(&m->g, m->grads_mem.data(), c);
  return true;
}

// The host's activation block, for the CPU path (once).
static void host_acts_alloc(Model& m) {
  if (m.acts_mem.size() == m.num_acts) return;
  try {
    m.acts_mem.assign(m.num_acts, 0.0f);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error(strf("out of memory: the activations of a micro-batch of %d sequences of T = %d need "
                                  "%.2f GB, which this machine cannot allocate; lower --micro-batch (or --batch)",
                                  m.B, m.c.T, m.num_acts * 4.0 / 1e9));
  }
  layout_acts(&m.a, (char*)m.acts_mem.data(), m.c, m.B, m.R, sizeof(float));
}

// A batch of B sequences, each padded to the model's T (docs/MODEL.md section 10).
struct Batch {
  int B = 0;
  const int* ids = nullptr;       // (B, T)
  const int* types = nullptr;     // (B, T)
  const int* targets = nullptr;   // (B, T) MLM target, -1 where not predicted
  const float* labels = nullptr;  // (B) class index or regression score
};

// Sequences first .. first + count - 1 of a batch of rows of T tokens.
static Batch batch_slice(const Batch& bt, int first, int count, int T) {
  size_t at = (size_t)first * T;
  return Batch{count, bt.ids + at, bt.types + at, bt.targets ? bt.targets + at : nullptr,
               bt.labels ? bt.labels + first : nullptr};
}

// The summed loss of a batch and what it is a sum over (predicted rows for
// MLM, sequences for classification); the mean is sum / count. The trainer
// divides by the count of a whole optimizer batch, so that gradient
// accumulation over micro-batches equals one big batch.
struct Loss {
  double sum = 0;
  int count = 0;
};

constexpr int kPadId = 0;  // [PAD] in every BERT vocabulary (docs/MODEL.md section 1)

// The rows that go through the MLM head (docs/MODEL.md section 5): those with a
// target. Listed on the host, for every device: their flat positions in
// m.a.rows, their targets in m.a.row_target, their number in *P.
// The softmax cross-entropy (Layers) that cls_loss and cls_dlogits run on the host.
template <class F>
void crossentropy_forward_cpu(F* losses, const F* logits, const int* targets, int rows, int V);
template <class F>
void crossentropy_backward_cpu(F* dlogits, const F* logits, const int* targets, F scale, int rows, int V);

static bool mlm_rows(Model& m, const Batch& bt, int* P_out, std::string* err) {
  const Config& c = m.c;
  Acts& a = m.a;
  int P = 0;
  for (int i = 0; i < bt.B * c.T; i++) {
    if (bt.targets[i] < 0) continue;
    if (bt.targets[i] >= c.V) {
      *err = strf("MLM target %d at row %d is outside the vocabulary (V = %d)", bt.targets[i], i, c.V);
      return false;
    }
    if (P == m.R) {
      *err = strf("batch has more than %d predicted positions (the model's row capacity)", m.R);
      return false;
    }
    a.rows[P] = i;
    a.row_target[P++] = bt.targets[i];
  }
  *P_out = P;
  return true;
}

// The classification loss and its gradient w.r.t. the (B, Y) logits, on the
// host for every device, from m.a.cls_logits: cross-entropy, or squared
// error for Y = 1 (docs/MODEL.md section 7).
static bool cls_loss(Model& m, const Batch& bt, Loss* loss, std::string* err) {
  Acts& a = m.a;
  int B = bt.B, Y = m.c.labels;
  loss->sum = 0;
  loss->count = B;
  if (!bt.labels) return true;  // prediction only
  for (int b = 0; b < B; b++) {
    float y = bt.labels[b];
    if (Y == 1) {
      float d = a.cls_logits[b] - y;
      a.cls_loss[b] = d * d;
    } else {
      if (!(y >= 0 && y < Y && y == std::floor(y))) {
        *err = strf("label %g of sequence %d is not a class index in [0, %d)", y, b, Y);
        return false;
      }
      int t = (int)y;
      crossentropy_forward_cpu(a.cls_loss + b, a.cls_logits + (size_t)b * Y, &t, 1, Y);
    }
    loss->sum += a.cls_loss[b];
  }
  return true;
}

static void cls_dlogits(Model& m, const Batch& bt, float scale) {  // m.a.dcls_logits (B, Y) =
  Acts& a = m.a;
  int Y = m.c.labels;
  for (int b = 0; b < bt.B; b++) {
    if (Y == 1) {
      a.dcls_logits[b] = scale * 2 * (a.cls_logits[b] - bt.labels[b]);
    } else {
      int t = (int)bt.labels[b];
      crossentropy_backward_cpu(a.dcls_logits + (size_t)b * Y, a.cls_logits + (size_t)b * Y, &t, scale, 1, Y);
    }
  }
}

static bool batch_check(const Model& m, const Batch& bt, std::string* err) {
  const Config& c = m.c;
  if (bt.B < 1 || bt.B > m.B) {
    *err = strf("batch of %d sequences; the model was built for 1 to %d", bt.B, m.B);
    return false;
  }
  if (!bt.targets && !bt.labels && c.labels == 0) {
    *err = "an MLM batch needs targets";
    return false;
  }
  for (int i = 0; i < bt.B * c.T; i++) {
    if (bt.ids[i] < 0 || bt.ids[i] >= c.V || bt.types[i] < 0 || bt.types[i] >= c.types) {
      *err = strf("token %d of the batch has id %d (V = %d) and type %d (types = %d)", i, bt.ids[i], c.V, bt.types[i],
                  c.types);
      return false;
    }
  }
  return true;
}

// ---------------------------------------------------------------------------
// The model, written once for every device
// ---------------------------------------------------------------------------
// Each function below is a template over a device context D that supplies
// the layers' operations under one set of names: Cpu (the reference
// functions above), Gpu<S> (their CUDA launchers, activations stored as S)
// and Cost<S> (each operation's FLOPs, bytes and launches, computing
// nothing: `bigs bench --plan` prints what it predicts). So the code the CPU
// tests prove against the oracle is the code the GPU runs. A device holds
// the model's blocks as it sees them:
//   d.a      the activation block, ActsT<D::A>
//   d.p      the fp32 parameters: LayerNorm, SSMs, the classification head,
//            and the biases of fp32 outputs
//   d.w      the weights the dense layers read: d.p itself, or the GPU's
//            bf16 copy (ParamsT<D::W>)
//   d.g      the fp32 gradient block
//   d.ids(bt), d.types(bt), d.rows(m), d.row_target(m): where the device
//            reads the batch and the MLM rows (copied in by upload_batch,
//            upload_rows)
// and the operations are named after the layers: d.dense_forward is
// dense_forward_cpu on the CPU and the cuBLASLt launcher on the GPU.

// One BiGS layer (docs/MODEL.md section 3), x_out = x + y, in original time order:
// the backward branch's flip -> causal SSM -> flip is the anti-causal SSM.
// w: the layer's fp32 parameters; wd: the weights its dense layers read.
// Each GELU comes with the dense layer before it (the GPU fuses the two
// where cuBLASLt can), and the residual add with the last one.
template <class D>
static void layer_forward(D& d, const LayerActsT<typename D::A>& s, const LayerWeights& w,
                          const LayerWeightsT<typename D::W>& wd, const Config& c, int B) {
  int T = c.T, H = c.H, I = c.I, BT = B * T;
  size_t nH = (size_t)BT * H, nI = (size_t)BT * I;
  d.layernorm_forward(s.ln, s.ln_mean, s.ln_rstd, s.x, w.ln_w, w.ln_b, BT, H);
  d.dense_gelu_forward(s.v, s.v_pre, s.ln, wd.dv_w, wd.dv_b, BT, H, I);
  d.dense_gelu_forward(s.uf, s.uf_pre, s.ln, wd.duf_w, wd.duf_b, BT, H, H);
  d.dense_gelu_forward(s.ub, s.ub_pre, s.ln, wd.dub_w, wd.dub_b, BT, H, H);
  d.s4d_kernel_forward(s.kf, forward_ssm(w), c.N, T);
  d.ssm_conv_forward(s.sf, s.uf, s.kf, w.fs_d, B, T, H, false);
  d.s4d_kernel_forward(s.kb, backward_ssm(w), c.N, T);
  d.ssm_conv_forward(s.sb, s.ub, s.kb, w.bs_d, B, T, H, true);
  d.dense_forward(s.cf, s.sf, wd.ducf_w, wd.ducf_b, BT, H, H);
  d.dense_forward(s.cb, s.sb, wd.ducb_w, wd.ducb_b, BT, H, H);
  d.gate_forward(s.gate, s.cf, s.cb, nH);
  d.dense_gelu_forward(s.g, s.g_pre, s.gate, wd.dol_w, wd.dol_b, BT, H, I);
  d.gate_forward(s.gv, s.g, s.v, nI);
  // x_out = x + gv Wo + bo: the stream is fp32, so this product writes fp32
  // and takes the fp32 bias.
  d.dense_residual_forward(s.x_out, s.gv, wd.do_w, w.do_b, s.x, BT, I, H);
}

// dres: on entry d loss / d x_out, on exit d loss / d x (the residual path
// passes it through unchanged, the LayerNorm adds its part). dw +=. The
// backward scratch is the activation block's BIGS_SCRATCH part, d.a.
template <class D>
static void layer_backward(D& d, float* dres, const LayerWeights& dw, const LayerActsT<typename D::A>& s,
                           const LayerWeights& w, const LayerWeightsT<typename D::W>& wd, const Config& c, int B) {
  using A = typename D::A;
  auto& k = d.a;
  int T = c.T, H = c.H, I = c.I, BT = B * T;
  size_t nH = (size_t)BT * H, nI = (size_t)BT * I;
  const A* dout = d.as_operand(k.dres_a, dres, nH);  // dres (fp32) as the last dense layer's operand
  d.dense_backward(k.dgv, dw.do_w, dw.do_b, dout, s.gv, wd.do_w, BT, I, H, Acc::Set);
  d.gate_gelu_backward(k.dg, k.dv, k.dgv, s.g, s.v, s.g_pre, s.v_pre, nI);  // through both GELUs
  d.dense_backward(k.dgate, dw.dol_w, dw.dol_b, k.dg, s.gate, wd.dol_w, BT, H, I, Acc::Set);
  d.gate_backward(k.dcf, k.dcb, k.dgate, s.cf, s.cb, nH);
  d.dense_backward(k.dsf, dw.ducf_w, dw.ducf_b, k.dcf, s.sf, wd.ducf_w, BT, H, H, Acc::Set);
  d.dense_backward(k.dsb, dw.ducb_w, dw.ducb_b, k.dcb, s.sb, wd.ducb_w, BT, H, H, Acc::Set);
  // Each SSM: the convolution gives du, dD and dK; the kernel turns dK into
  // the gradients of A_re, A_im, C and log_step.
  struct {
    Ssm w, dw;
    A *du, *ds, *u;
    float* K;
    bool anticausal;
  } ssms[2] = {{forward_ssm(w), forward_ssm(dw), k.duf, k.dsf, s.uf, s.kf, false},
               {backward_ssm(w), backward_ssm(dw), k.dub, k.dsb, s.ub, s.kb, true}};
  for (auto& q : ssms) {
    d.zero(k.dk, T);
    d.ssm_conv_backward(q.du, k.dk, q.dw.d, q.ds, q.u, q.K, q.w.d, B, T, H, q.anticausal);
    d.s4d_kernel_backward(q.dw, k.dk, q.w, c.N, T);
  }
  d.activation_backward(k.duf, k.duf, s.uf_pre, nH, Act::GeluTanh);
  d.activation_backward(k.dub, k.dub, s.ub_pre, nH, Act::GeluTanh);
  d.dense_backward(k.dh, dw.duf_w, dw.duf_b, k.duf, s.ln, wd.duf_w, BT, H, H, Acc::Set);
  d.dense_backward(k.dh, dw.dub_w, dw.dub_b, k.dub, s.ln, wd.dub_w, BT, H, H);
  d.dense_backward(k.dh, dw.dv_w, dw.dv_b, k.dv, s.ln, wd.dv_w, BT, H, I);
  d.layernorm_backward(dres, dw.ln_w, dw.ln_b, k.dh, s.x, w.ln_w, s.ln_mean, s.ln_rstd, BT, H);
}

// Embeddings, LayerNorm, dropout, then the L layers; res[L] holds the final
// hidden states. train = dropout on.
template <class D>
static void encoder_forward(D& d, const Model& m, const Batch& bt, bool train) {
  const Config& c = m.c;
  auto& a = d.a;
  int BT = bt.B * c.T;
  d.upload_batch(bt);
  d.embedding_forward(a.emb, d.ids(bt), d.types(bt), d.p.wte, d.p.wpe, d.p.wtt, bt.B, c.T, c.H);
  d.layernorm_forward(a.emb_ln, a.emb_mean, a.emb_rstd, a.emb, d.p.ln_emb_w, d.p.ln_emb_b, BT, c.H);
  d.dropout_forward(a.res, a.emb_ln, (size_t)BT * c.H, train ? m.dropout : 0.0f, m.dropout_seed,
                    2 * m.dropout_stream);
  for (int l = 0; l < c.L; l++)
    layer_forward(d, layer_acts(a, c, m.B, l), layer_weights(d.p, c, l), layer_weights(d.w, c, l), c, bt.B);
}

// From d.a.dres = d loss / d res[L] (which the head wrote) down to the
// embedding tables. dw +=.
template <class D>
static void encoder_backward(D& d, const Model& m, const Batch& bt, bool train, const BucketDone& done) {
  const Config& c = m.c;
  auto& a = d.a;
  int BT = bt.B * c.T;
  for (int l = c.L - 1; l >= 0; l--) {
    layer_backward(d, a.dres, layer_weights(d.g, c, l), layer_acts(a, c, m.B, l), layer_weights(d.p, c, l),
                   layer_weights(d.w, c, l), c, bt.B);
    if (done) done(layer_bucket(c, l));
  }
  d.dropout_backward(a.dres, a.dres, (size_t)BT * c.H, train ? m.dropout : 0.0f, m.dropout_seed,
                     2 * m.dropout_stream);
  d.layernorm_backward(a.dh, d.g.ln_emb_w, d.g.ln_emb_b, a.dres, a.emb, d.p.ln_emb_w, a.emb_mean, a.emb_rstd, BT,
                       c.H, Acc::Set);
  d.embedding_backward(d.g.wte, d.g.wpe, d.g.wtt, a.dh, bt.ids, bt.types, bt.B, c.T, c.H);  // host ids
  if (done) done(embed_bucket(c));
}

// The MLM head on the rows that have a target (docs/MODEL.md section 5):
//   z = LayerNorm_head(gelu_erf(x Wt + bt)),  logits = z wte^T + bias_V
// Only those rows go through the V-wide projection; its logits are fp32
// whatever the activation type (the decoder bias is the fp32 master's).
// The per-row losses are summed on the host in one fixed order; without
// train (evaluation, fill-mask) the logits come back to m.a.logits too.
template <class D>
static bool mlm_head_forward(D& d, Model& m, const Batch& bt, bool train, Loss* loss, std::string* err) {
  const Config& c = m.c;
  auto& a = d.a;
  int P = 0;
  if (!mlm_rows(m, bt, &P, err)) return false;
  d.upload_rows(m.a.rows, m.a.row_target, P);
  const float* final_x = a.res + (size_t)c.L * m.B * c.T * c.H;
  d.gather_rows(a.head_in, final_x, d.rows(m), P, c.H);
  d.dense_forward(a.head_pre, a.head_in, d.w.head_w, d.w.head_b, P, c.H, c.H);
  d.activation_forward(a.head_act, a.head_pre, (size_t)P * c.H, Act::GeluErf);
  d.layernorm_forward(a.head_ln, a.head_mean, a.head_rstd, a.head_act, d.p.head_ln_w, d.p.head_ln_b, P, c.H);
  int ldv = d.logit_ld(c);
  d.dense_forward(a.logits, a.head_ln, d.w.wte, d.p.head_bias, P, c.H, c.V, ldv);
  d.crossentropy_forward(a.row_loss, a.logits, d.row_target(m), P, c.V, ldv);
  if (!train) d.logits_to_host(m.a.logits, a.logits, P, c.V, ldv);
  loss->sum = d.sum_to_host(m.a.row_loss, a.row_loss, P);
  loss->count = P;
  return true;
}

// P: the rows of the forward; the gradient of scale * loss.sum.
template <class D>
static void mlm_head_backward(D& d, const Model& m, const Batch& bt, int P, float scale) {
  const Config& c = m.c;
  auto& a = d.a;
  int ldv = d.logit_ld(c);
  d.crossentropy_backward(a.dlogits, a.logits, d.row_target(m), scale, P, c.V, ldv);
  d.dense_backward(a.dhead, d.g.wte, d.g.head_bias, a.dlogits, a.head_ln, d.w.wte, P, c.H, c.V, Acc::Set, ldv);
  d.layernorm_backward(a.dhead2, d.g.head_ln_w, d.g.head_ln_b, a.dhead, a.head_act, d.p.head_ln_w, a.head_mean,
                       a.head_rstd, P, c.H, Acc::Set);
  d.activation_backward(a.dhead2, a.dhead2, a.head_pre, (size_t)P * c.H, Act::GeluErf);
  d.dense_backward(a.dhead, d.g.head_w, d.g.head_b, a.dhead2, a.head_in, d.w.head_w, P, c.H, c.H, Acc::Set);
  d.zero(a.dres, (size_t)bt.B * c.T * c.H);
  d.scatter_rows(a.dres, a.dhead, d.rows(m), P, c.H);
}

// The classification head (docs/MODEL.md section 6): p = tanh(mean(x) Wp + bp),
// logits = dropout(p) Wc + bc, up to the (B, Y) logits, which come back to
// the host for the loss (cls_loss). The head is (B, H)-sized, so it runs in
// fp32 with the master weights on every device.
template <class D>
static bool cls_head_forward(D& d, Model& m, const Batch& bt, bool train, Loss* loss, std::string* err) {
  const Config& c = m.c;
  auto& a = d.a;
  int B = bt.B, Y = c.labels;
  const float* final_x = a.res + (size_t)c.L * m.B * c.T * c.H;
  d.meanpool_forward(a.pooled, final_x, d.ids(bt), kPadId, B, c.T, c.H);
  d.dense_forward(a.pool_pre, a.pooled, d.p.pool_w, d.p.pool_b, B, c.H, c.H);
  d.activation_forward(a.pool, a.pool_pre, (size_t)B * c.H, Act::Tanh);
  d.dropout_forward(a.pool_drop, a.pool, (size_t)B * c.H, train ? m.dropout : 0.0f, m.dropout_seed,
                    2 * m.dropout_stream + 1);
  d.dense_forward(a.cls_logits, a.pool_drop, d.p.cls_w, d.p.cls_b, B, c.H, Y);
  d.to_host(m.a.cls_logits, a.cls_logits, (size_t)B * Y);
  return cls_loss(m, bt, loss, err);
}

template <class D>
static void cls_head_backward(D& d, Model& m, const Batch& bt, bool train, float scale) {
  const Config& c = m.c;
  auto& a = d.a;
  int B = bt.B, Y = c.labels;
  cls_dlogits(m, bt, scale);
  d.to_device(a.dcls_logits, m.a.dcls_logits, (size_t)B * Y);
  d.dense_backward(a.dpool, d.g.cls_w, d.g.cls_b, a.dcls_logits, a.pool_drop, d.p.cls_w, B, c.H, Y, Acc::Set);
  d.dropout_backward(a.dpool, a.dpool, (size_t)B * c.H, train ? m.dropout : 0.0f, m.dropout_seed,
                     2 * m.dropout_stream + 1);
  d.activation_backward(a.dpool, a.dpool, a.pool_pre, (size_t)B * c.H, Act::Tanh);
  d.dense_backward(a.dpooled, d.g.pool_w, d.g.pool_b, a.dpool, a.pooled, d.p.pool_w, B, c.H, c.H, Acc::Set);
  d.zero(a.dres, (size_t)B * c.T * c.H);
  d.meanpool_backward(a.dres, a.dpooled, d.ids(bt), kPadId, B, c.T, c.H);
}

// The whole model on one device: MLM loss when the batch has targets, else
// the classification head.
template <class D>
static bool forward_on(D& d, Model& m, const Batch& bt, bool train, Loss* loss, std::string* err) {
  encoder_forward(d, m, bt, train);
  return bt.targets ? mlm_head_forward(d, m, bt, train, loss, err) : cls_head_forward(d, m, bt, train, loss, err);
}

template <class D>
static void backward_on(D& d, Model& m, const Batch& bt, bool train, const Loss& loss, float scale,
                        const BucketDone& done = {}) {
  if (bt.targets)
    mlm_head_backward(d, m, bt, loss.count, scale);
  else
    cls_head_backward(d, m, bt, train, scale);
  if (done) done(kHeadBucket);
  encoder_backward(d, m, bt, train, done);
}


// ============================================================================
// Initialisation
// ============================================================================

// ---------------------------------------------------------------------------
// HiPPO-LegS initialisation of A_im (docs/MODEL.md section 9)
// ---------------------------------------------------------------------------
// S = -M + p p^T is -1/2 on the diagonal plus a real skew-symmetric part W.
// The imaginary parts of S's eigenvalues are the eigenvalues of the
// Hermitian matrix -iW. A Hermitian X + iY has the same eigenvalues, each
// twice, as the real symmetric [[X, -Y], [Y, X]]; here X = 0 and Y = -W, so
// a plain Jacobi solver on a 2N x 2N real matrix is all we need.

static std::vector<double> symmetric_eigenvalues(std::vector<double> a, int n) {
  for (int sweep = 0; sweep < 100; sweep++) {
    double off = 0;
    for (int i = 0; i < n; i++)
      for (int j = i + 1; j < n; j++) off += a[i * n + j] * a[i * n + j];
    if (off < 1e-22) break;
    for (int p = 0; p < n; p++)
      for (int q = p + 1; q < n; q++) {
        double apq = a[p * n + q];
        if (std::fabs(apq) < 1e-300) continue;
        // The rotation that zeroes a[p][q] (Golub & Van Loan, alg. 8.5.1).
        double tau = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        double t = (tau >= 0 ? 1 : -1) / (std::fabs(tau) + std::sqrt(1 + tau * tau));
        double cs = 1 / std::sqrt(1 + t * t), sn = t * cs;
        for (int k = 0; k < n; k++) {  // columns p and q
          double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = cs * akp - sn * akq;
          a[k * n + q] = sn * akp + cs * akq;
        }
        for (int k = 0; k < n; k++) {  // rows p and q
          double apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = cs * apk - sn * aqk;
          a[q * n + k] = sn * apk + cs * aqk;
        }
      }
  }
  std::vector<double> ev(n);
  for (int i = 0; i < n; i++) ev[i] = a[i * n + i];
  std::sort(ev.begin(), ev.end());
  return ev;
}

// A_im for N modes, ascending.
static std::vector<double> hippo_a_im(int N) {
  auto S = [](int n, int k) {  // S = -M + p p^T, with p_n = sqrt(n + 1/2)
    double M = n > k ? std::sqrt(2.0 * n + 1) * std::sqrt(2.0 * k + 1) : n == k ? n + 1.0 : 0.0;
    return -M + std::sqrt(n + 0.5) * std::sqrt(k + 0.5);
  };
  int n2 = 2 * N;
  std::vector<double> a((size_t)n2 * n2, 0.0);
  for (int i = 0; i < N; i++)
    for (int j = 0; j < N; j++) {
      double w = 0.5 * (S(i, j) - S(j, i));  // the skew-symmetric part W
      a[(size_t)i * n2 + (N + j)] = w;       // -Y = W
      a[(size_t)(N + i) * n2 + j] = -w;      //  Y = -W
    }
  std::vector<double> ev = symmetric_eigenvalues(a, n2), out(N);
  for (int i = 0; i < N; i++) out[i] = ev[2 * i];  // each eigenvalue appears twice
  return out;
}

// Fills one tensor as its table row says (docs/MODEL.md section 9). a_im: the
// HiPPO-LegS imaginary parts for N modes.
static void init_tensor(float* x, const TensorInfo& t, Rng& rng, const std::vector<double>& a_im) {
  const Init& in = t.init;
  switch (in.kind) {
    case Init::Normal:
      for (size_t i = 0; i < t.count; i++) x[i] = rng.normal() * (float)in.a;
      break;
    case Init::TruncNormal:  // by rejection: a draw outside [-b, b] is drawn again
      for (size_t i = 0; i < t.count; i++) {
        float z;
        do z = rng.normal();
        while (std::fabs(z) > (float)in.b);
        x[i] = z * (float)in.a;
      }
      break;
    case Init::Const:
      std::fill(x, x + t.count, (float)in.a);
      break;
    case Init::HippoAIm:
      for (size_t i = 0; i < t.count; i++) x[i] = (float)a_im[i % a_im.size()];
      break;
    case Init::LogUniform: {
      float lo = logf((float)in.a), hi = logf((float)in.b);
      for (size_t i = 0; i < t.count; i++) x[i] = lo + rng.uniform() * (hi - lo);
      break;
    }
  }
}

// Every tensor as the parameter table says, from one seeded stream.
static void model_init(Model* m, uint64_t seed) {
  Rng rng{seed};
  std::vector<double> a_im = hippo_a_im(m->c.N);
  for (const TensorInfo& t : m->table) init_tensor(m->params_mem.data() + t.offset, t, rng, a_im);
}


// ============================================================================
// Layers
// ============================================================================
// Every layer has one signature shape: outputs, inputs, weights, dimensions.
// A backward pass takes the d-prefixed gradient of the forward's output and
// the statistics the forward saved; "+=" in its comment means it accumulates
// into its outputs (the caller zeroes them), "=" that it overwrites.
// The CPU versions are templates so the tests can run them in double
// precision for finite differences; the model instantiates them with float.
// ---------------------------------------------------------------------------
// Embeddings: e = wte[id] + wpe[t] + wtt[type]
// ---------------------------------------------------------------------------

template <class F>
void embedding_forward_cpu(F* out, const int* ids, const int* types, const F* wte, const F* wpe, const F* wtt, int B,
                           int T, int H) {  // out (B, T, H) =
#pragma omp parallel for collapse(2)
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const F* w = wte + (size_t)ids[b * T + t] * H;
      const F* p = wpe + (size_t)t * H;
      const F* y = wtt + (size_t)types[b * T + t] * H;
      F* o = out + ((size_t)b * T + t) * H;
      for (int h = 0; h < H; h++) o[h] = w[h] + p[h] + y[h];
    }
}

// dwte, dwpe, dwtt +=. Rows of dwte are shared between tokens, so the
// parallel loop runs over channels: every sum then has one fixed order and
// the result is bit-reproducible for any thread count.
template <class F>
void embedding_backward_cpu(F* dwte, F* dwpe, F* dwtt, const F* dout, const int* ids, const int* types, int B, int T,
                            int H) {
#pragma omp parallel for
  for (int h = 0; h < H; h++)
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++) {
        F d = dout[((size_t)b * T + t) * H + h];
        dwte[(size_t)ids[b * T + t] * H + h] += d;
        dwpe[(size_t)t * H + h] += d;
        dwtt[(size_t)types[b * T + t] * H + h] += d;
      }
}

// Appends to v the groups of the n positions by key (a stable counting
// sort; the GPU's embedding backward sums each group in this order):
// order (n) the positions key by key, start (groups + 1) where each group
// begins in order, dest (groups) its key. Returns the number of groups.
inline int group_by_key(std::vector<int>* v, const int* key, int n) {
  int nkeys = 0;
  for (int i = 0; i < n; i++) nkeys = std::max(nkeys, key[i] + 1);
  std::vector<int> count(nkeys + 1, 0);
  for (int i = 0; i < n; i++) count[key[i] + 1]++;
  for (int k = 0; k < nkeys; k++) count[k + 1] += count[k];  // count[k] = first slot of key k
  size_t at = v->size();
  v->resize(at + n);
  std::vector<int> next(count.begin(), count.end() - 1);
  for (int i = 0; i < n; i++) (*v)[at + next[key[i]]++] = i;
  std::vector<int> start, dest;
  for (int k = 0; k < nkeys; k++)
    if (count[k + 1] > count[k]) start.push_back(count[k]), dest.push_back(k);
  start.push_back(n);
  v->insert(v->end(), start.begin(), start.end());
  v->insert(v->end(), dest.begin(), dest.end());
  return (int)dest.size();
}

#ifdef BIGS_CUDA
__global__ void embedding_forward_kernel(float* out, const int* ids, const int* types, const float* wte,
                                         const float* wpe, const float* wtt, int B, int T, int H) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;  // one thread per output element
  if (i >= (size_t)B * T * H) return;
  size_t bt = i / H;
  int h = (int)(i % H), t = (int)(bt % T);
  out[i] = wte[(size_t)ids[bt] * H + h] + wpe[(size_t)t * H + h] + wtt[(size_t)types[bt] * H + h];
}

// The gradient of a table row is a sum over the tokens that use it. The
// host groups the positions by key (a stable counting sort: groups in key
// order, positions in order within each), and one thread per (group,
// channel) sums its group in that order: deterministic, no atomics, and
// every group's threads read consecutive channels.
//   dst[dest[k]] += sum of src rows order[start[k]] .. order[start[k+1] - 1]
__global__ void group_rowsum_kernel(float* dst, const float* src, const int* order, const int* start, const int* dest,
                                    int groups, int H) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= (size_t)groups * H) return;
  int k = (int)(i / H), h = (int)(i % H);
  float s = 0;
  for (int j = start[k]; j < start[k + 1]; j++) s += src[(size_t)order[j] * H + h];
  dst[(size_t)dest[k] * H + h] += s;
}

// dwpe[t] += sum over b of dout[b, t]: one thread per (t, channel).
__global__ void position_grad_kernel(float* dwpe, const float* dout, int B, int T, int H) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= (size_t)T * H) return;
  float s = 0;
  for (int b = 0; b < B; b++) s += dout[(size_t)b * T * H + i];
  dwpe[i] += s;
}

static void embedding_forward(CudaCtx& ctx, float* out, const int* ids, const int* types, const float* wte,
                              const float* wpe, const float* wtt, int B, int T, int H) {  // out (B, T, H) =
  launchKernel(embedding_forward_kernel, grid_for((size_t)B * T * H), kThreads, 0, ctx.stream, out, ids, types, wte,
               wpe, wtt, B, T, H);
}

// dwte, dwpe, dwtt +=. ids and types are the batch's, on the host (the
// forward uploaded its own copy).
static void embedding_backward(CudaCtx& ctx, float* dwte, float* dwpe, float* dwtt, const float* dout,
                               const int* host_ids, const int* host_types, int B, int T, int H) {
  int n = B * T;
  std::vector<int> v;
  int g_ids = group_by_key(&v, host_ids, n);
  size_t at_types = v.size();
  int g_types = group_by_key(&v, host_types, n);
  scratch_reserve(ctx, &ctx.idx, &ctx.idx_cap, v.size());
  cudaCheck(cudaMemcpyAsync(ctx.idx, v.data(), v.size() * sizeof(int), cudaMemcpyHostToDevice, ctx.stream));
  const int* q = ctx.idx;  // order, start, dest for the ids; then for the types
  launchKernel(group_rowsum_kernel, grid_for((size_t)g_ids * H), kThreads, 0, ctx.stream, dwte, dout, q, q + n,
               q + n + g_ids + 1, g_ids, H);
  q = ctx.idx + at_types;
  launchKernel(group_rowsum_kernel, grid_for((size_t)g_types * H), kThreads, 0, ctx.stream, dwtt, dout, q, q + n,
               q + n + g_types + 1, g_types, H);
  launchKernel(position_grad_kernel, grid_for((size_t)T * H), kThreads, 0, ctx.stream, dwpe, dout, B, T, H);
}
#endif

// The launchers' costs (see OpCost). The forward gathers three table rows
// per token; the backward reads dout three times (the word, type and
// position sums), updates at most min(V, B T) word rows and uploads the
// host's index lists.
static OpCost embedding_forward_cost(size_t B, size_t T, size_t H) {
  double bt = (double)B * T;
  return {{"embedding", 2 * bt * H, false, 8 * bt + 4 * bt * H * 4}};
}
static OpCost embedding_backward_cost(size_t B, size_t T, size_t H, size_t V, size_t types) {
  double bt = (double)B * T, words = std::min((double)V, bt);
  return {{"embedding", 0, false, 4 * (6 * bt + 4)},                             // the index lists, host to device
          {"embedding", bt * H, false, bt * H * 4 + 8 * bt + words * H * 8},     // word rows
          {"embedding", bt * H, false, bt * H * 4 + 8 * bt + types * H * 8.0},  // type rows
          {"embedding", bt * H, false, bt * H * 4 + T * H * 8.0}};             // position rows
}

// ---------------------------------------------------------------------------
// LayerNorm over the last axis (eps = 1e-12, docs/MODEL.md section 1)
// ---------------------------------------------------------------------------

constexpr double kLayerNormEps = 1e-12;

template <class F>
void layernorm_forward_cpu(F* out, F* mean, F* rstd, const F* inp, const F* w, const F* b, int rows,
                           int C) {  // out (rows, C), mean, rstd (rows) =
#pragma omp parallel for
  for (int r = 0; r < rows; r++) {
    const F* x = inp + (size_t)r * C;
    F m = 0;
    for (int i = 0; i < C; i++) m += x[i];
    m /= C;
    F var = 0;  // two passes: no cancellation when |mean| >> std
    for (int i = 0; i < C; i++) var += (x[i] - m) * (x[i] - m);
    var /= C;
    F s = (F)1 / std::sqrt(var + (F)kLayerNormEps);
    F* o = out + (size_t)r * C;
    for (int i = 0; i < C; i++) o[i] = (x[i] - m) * s * w[i] + b[i];
    mean[r] = m;
    rstd[r] = s;
  }
}

// dinp, dw, db +=.
template <class F>
void layernorm_backward_cpu(F* dinp, F* dw, F* db, const F* dout, const F* inp, const F* w, const F* mean,
                            const F* rstd, int rows, int C) {
#pragma omp parallel for
  for (int r = 0; r < rows; r++) {
    const F* x = inp + (size_t)r * C;
    const F* d = dout + (size_t)r * C;
    F m = mean[r], s = rstd[r];
    // dx = s * (dn - mean(dn) - n * mean(dn * n)), with n the normalised
    // input and dn = dout * w: the two means are the gradient flowing back
    // through the mean and through the variance.
    F mean_dn = 0, mean_dn_n = 0;
    for (int i = 0; i < C; i++) {
      F dn = d[i] * w[i];
      mean_dn += dn;
      mean_dn_n += dn * (x[i] - m) * s;
    }
    mean_dn /= C;
    mean_dn_n /= C;
    F* dx = dinp + (size_t)r * C;
    for (int i = 0; i < C; i++) {
      F n = (x[i] - m) * s;
      dx[i] += s * (d[i] * w[i] - mean_dn - n * mean_dn_n);
    }
  }
#pragma omp parallel for
  for (int i = 0; i < C; i++) {
    F sw = 0, sb = 0;
    for (int r = 0; r < rows; r++) {
      F d = dout[(size_t)r * C + i];
      sw += d * (inp[(size_t)r * C + i] - mean[r]) * rstd[r];
      sb += d;
    }
    dw[i] += sw;
    db[i] += sb;
  }
}

#ifdef BIGS_CUDA
// One block per row; the statistics are fp32 block sums, two passes as on
// the CPU (no E[x^2] - E[x]^2 cancellation).
template <class TO, class TI>
__global__ void layernorm_forward_kernel(TO* out, float* mean, float* rstd, const TI* inp, const float* w,
                                         const float* b, int C) {
  const TI* x = inp + (size_t)blockIdx.x * C;
  float s = 0;
  for (int i = threadIdx.x; i < C; i += blockDim.x) s += ld(x[i]);
  float m = block_sum(s) / C;
  float v = 0;
  for (int i = threadIdx.x; i < C; i += blockDim.x) v += (ld(x[i]) - m) * (ld(x[i]) - m);
  float r = 1.0f / sqrtf(block_sum(v) / C + (float)kLayerNormEps);
  TO* o = out + (size_t)blockIdx.x * C;
  for (int i = threadIdx.x; i < C; i += blockDim.x) st(o + i, (ld(x[i]) - m) * r * w[i] + b[i]);
  if (threadIdx.x == 0) mean[blockIdx.x] = m, rstd[blockIdx.x] = r;
}

// dinp += (or =) per row (one block each), the same formula as the CPU's.
template <class TD, class TO, class TI>
__global__ void layernorm_backward_dinp_kernel(TD* dinp, const TO* dout, const TI* inp, const float* w,
                                               const float* mean, const float* rstd, int C, Acc acc) {
  size_t r = blockIdx.x;
  const TI* x = inp + r * C;
  const TO* d = dout + r * C;
  float m = mean[r], s = rstd[r], a = 0, c = 0;
  for (int i = threadIdx.x; i < C; i += blockDim.x) {
    float dn = ld(d[i]) * w[i];
    a += dn;
    c += dn * (ld(x[i]) - m) * s;
  }
  float mean_dn = block_sum(a) / C, mean_dn_n = block_sum(c) / C;
  for (int i = threadIdx.x; i < C; i += blockDim.x) {
    float n = (ld(x[i]) - m) * s;
    float g = s * (ld(d[i]) * w[i] - mean_dn - n * mean_dn_n);
    st(dinp + r * C + i, acc == Acc::Add ? ld(dinp[r * C + i]) + g : g);
  }
}

// The first stage of dw, db: slice blockIdx.y of the rows, one thread per
// column, into part[slice][0 .. C) (dw) and part[slice][C .. 2C) (db).
template <class TO, class TI>
__global__ void layernorm_dw_partial_kernel(float* part, const TO* dout, const TI* inp, const float* mean,
                                            const float* rstd, int rows, int C) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= C) return;
  int per = (rows + kColChunks - 1) / kColChunks, r0 = blockIdx.y * per, r1 = min(rows, r0 + per);
  float sw = 0, sb = 0;
  for (int r = r0; r < r1; r++) {
    float d = ld(dout[(size_t)r * C + i]);
    sw += d * (ld(inp[(size_t)r * C + i]) - mean[r]) * rstd[r];
    sb += d;
  }
  part[(size_t)blockIdx.y * 2 * C + i] = sw;
  part[(size_t)blockIdx.y * 2 * C + C + i] = sb;
}

// The second stage of every column sum: dst[i] += the slices' partials
// part[k * stride + i], added in slice order.
__global__ void colsum_finish_kernel(float* dst, const float* part, int C, size_t stride) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= C) return;
  float s = 0;
  for (int k = 0; k < kColChunks; k++) s += part[k * stride + i];
  dst[i] += s;
}

template <class TO, class TI>
static void layernorm_forward(CudaCtx& ctx, TO* out, float* mean, float* rstd, const TI* inp, const float* w,
                              const float* b, int rows, int C) {  // out (rows, C), mean, rstd (rows) =
  if (rows == 0) return;
  launchKernel(layernorm_forward_kernel, rows, kThreads, 0, ctx.stream, out, mean, rstd, inp, w, b, C);
}

// dw, db +=; dinp += (acc = Add) or = (Set).
template <class TD, class TO, class TI>
static void layernorm_backward(CudaCtx& ctx, TD* dinp, float* dw, float* db, const TO* dout, const TI* inp,
                               const float* w, const float* mean, const float* rstd, int rows, int C,
                               Acc acc = Acc::Add) {
  if (rows == 0) return;
  launchKernel(layernorm_backward_dinp_kernel, rows, kThreads, 0, ctx.stream, dinp, dout, inp, w, mean, rstd, C, acc);
  scratch_reserve(ctx, &ctx.colsum, &ctx.colsum_cap, (size_t)kColChunks * 2 * C);
  launchKernel(layernorm_dw_partial_kernel, dim3(grid_for(C), kColChunks), kThreads, 0, ctx.stream, ctx.colsum, dout,
               inp, mean, rstd, rows, C);
  launchKernel(colsum_finish_kernel, grid_for(C), kThreads, 0, ctx.stream, dw, ctx.colsum, C, 2 * (size_t)C);
  launchKernel(colsum_finish_kernel, grid_for(C), kThreads, 0, ctx.stream, db, ctx.colsum + C, C, 2 * (size_t)C);
}
#endif

// The forward reads its input once per row (the row stays in cache for the
// second pass); the backward's dinp is read and written (+=), and dw, db
// go through the two-stage column sums.
static OpCost layernorm_forward_cost(size_t rows, size_t C, size_t si, size_t so) {
  double n = (double)rows * C;
  return {{"layernorm", 7 * n, false, n * (si + so) + 8.0 * C + 8.0 * rows}};
}
static OpCost layernorm_backward_cost(size_t rows, size_t C, size_t sd, size_t so, size_t si, bool add) {
  double n = (double)rows * C, part = (double)kColChunks * 2 * C * 4;
  return {{"layernorm", 10 * n, false, n * (so + si + (add ? 2 : 1) * sd) + 8.0 * rows + 4.0 * C},  // dinp
          {"column sums", 4 * n, false, n * (so + si) + 8.0 * rows + part},            // dw, db partials
          {"column sums", kColChunks * (double)C, false, part / 2 + 8.0 * C},          // dw
          {"column sums", kColChunks * (double)C, false, part / 2 + 8.0 * C}};         // db
}

// ---------------------------------------------------------------------------
// Dense: out = inp W^T + b, W (out_dim, in_dim)
// ---------------------------------------------------------------------------

// Rows go four at a time so each weight row, once loaded, serves four dot
// products: the loop is then bound by arithmetic rather than by re-reading W.
template <class F>
void dense_forward_cpu(F* out, const F* inp, const F* w, const F* bias, int rows, int in_dim,
                       int out_dim) {  // out (rows, out_dim) =
  const int R4 = (rows + 3) / 4;
#pragma omp parallel for collapse(2) schedule(static)
  for (int rb = 0; rb < R4; rb++)
    for (int o = 0; o < out_dim; o++) {
      const F* wr = w + (size_t)o * in_dim;
      int r0 = rb * 4, nr = std::min(4, rows - r0);
      // Rows past the end repeat the last one; their sums are not stored.
      const F* x0 = inp + (size_t)r0 * in_dim;
      const F* x1 = inp + (size_t)(r0 + std::min(1, nr - 1)) * in_dim;
      const F* x2 = inp + (size_t)(r0 + std::min(2, nr - 1)) * in_dim;
      const F* x3 = inp + (size_t)(r0 + std::min(3, nr - 1)) * in_dim;
      F s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int i = 0; i < in_dim; i++) {
        s0 += x0[i] * wr[i];
        s1 += x1[i] * wr[i];
        s2 += x2[i] * wr[i];
        s3 += x3[i] * wr[i];
      }
      F b = bias ? bias[o] : (F)0, s[4] = {s0, s1, s2, s3};
      for (int k = 0; k < nr; k++) out[(size_t)(r0 + k) * out_dim + o] = s[k] + b;
    }
}

// dinp, dw, db += (dinp may be null when the input needs no gradient).
// dw walks the rows in blocks that stay in cache while every output row of
// dw this thread owns is updated from them.
template <class F>
void dense_backward_cpu(F* dinp, F* dw, F* db, const F* dout, const F* inp, const F* w, int rows, int in_dim,
                        int out_dim) {
  if (dinp) {  // four rows at a time again, sharing each weight row
#pragma omp parallel for schedule(static)
    for (int r0 = 0; r0 < rows; r0 += 4) {
      int nr = std::min(4, rows - r0);
      for (int o = 0; o < out_dim; o++) {
        const F* wr = w + (size_t)o * in_dim;
        F d[4] = {0, 0, 0, 0};
        for (int k = 0; k < nr; k++) d[k] = dout[(size_t)(r0 + k) * out_dim + o];
        F* dx0 = dinp + (size_t)r0 * in_dim;
        if (nr == 4) {
          F *dx1 = dx0 + in_dim, *dx2 = dx1 + in_dim, *dx3 = dx2 + in_dim;
#pragma omp simd
          for (int i = 0; i < in_dim; i++) {
            dx0[i] += d[0] * wr[i];
            dx1[i] += d[1] * wr[i];
            dx2[i] += d[2] * wr[i];
            dx3[i] += d[3] * wr[i];
          }
        } else {
          for (int k = 0; k < nr; k++)
            for (int i = 0; i < in_dim; i++) dx0[(size_t)k * in_dim + i] += d[k] * wr[i];
        }
      }
    }
  }
  const int kBlock = 32;
#pragma omp parallel for schedule(static)
  for (int o = 0; o < out_dim; o++) {
    F sb = 0;
    for (int r = 0; r < rows; r++) sb += dout[(size_t)r * out_dim + o];
    if (db) db[o] += sb;
  }
#pragma omp parallel
  {
    for (int r0 = 0; r0 < rows; r0 += kBlock) {
      int r1 = std::min(rows, r0 + kBlock);
#pragma omp for schedule(static) nowait
      for (int o = 0; o < out_dim; o++) {
        F* dwr = dw + (size_t)o * in_dim;
        for (int r = r0; r < r1; r++) {
          F d = dout[(size_t)r * out_dim + o];
          const F* x = inp + (size_t)r * in_dim;
#pragma omp simd
          for (int i = 0; i < in_dim; i++) dwr[i] += d * x[i];
        }
      }
    }
  }
}


// Whether the GPU's dense_forward fuses a GELU into cuBLASLt's epilogue
// (GELU_AUX_BIAS, which also stores the pre-GELU values): for bf16 output
// only, so that the fp32 mode computes exactly the CPU's GELU, and for a
// row stride that is a multiple of 8, as the aux buffer needs.
static bool gelu_fusable(size_t out_elem_size, bool fuse_epilogues, int ld) {
  return out_elem_size == 2 && fuse_epilogues && ld % 8 == 0;
}

#ifdef BIGS_CUDA

template <class X>
__global__ void add_bias_kernel(X* out, const X* bias, int rows, int out_dim, int ld_out) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < (size_t)rows * ld_out && (int)(i % ld_out) < out_dim) st(out + i, ld(out[i]) + ld(bias[i % ld_out]));
}

// The first stage of db: slice blockIdx.y of the rows, one thread per column.
template <class X>
__global__ void bias_partial_kernel(float* part, const X* dout, int rows, int out_dim, int ld_out) {
  int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= out_dim) return;
  int per = (rows + kColChunks - 1) / kColChunks, r0 = blockIdx.y * per, r1 = min(rows, r0 + per);
  float s = 0;
  for (int r = r0; r < r1; r++) s += ld(dout[(size_t)r * ld_out + o]);
  part[(size_t)blockIdx.y * out_dim + o] = s;
}

template <class X>
static void bias_backward(CudaCtx& ctx, float* db, const X* dout, int rows, int out_dim, int ld_out) {  // db +=
  scratch_reserve(ctx, &ctx.colsum, &ctx.colsum_cap, (size_t)kColChunks * out_dim);
  launchKernel(bias_partial_kernel, dim3(grid_for(out_dim), kColChunks), kThreads, 0, ctx.stream, ctx.colsum, dout,
               rows, out_dim, ld_out);
  launchKernel(colsum_finish_kernel, grid_for(out_dim), kThreads, 0, ctx.stream, db, ctx.colsum, out_dim,
               (size_t)out_dim);
}

template <class TO, class TI>
static void activation_forward(CudaCtx& ctx, TO* out, const TI* inp, size_t n, Act act);

// out (rows, out_dim) = inp W^T + b [+ residual]: in column-major terms
// out' = W'^T inp', with W' = W seen as (in_dim, out_dim) and inp' = inp seen
// as (in_dim, rows). With `pre`, the layer ends in GELU (tanh form): pre =
// inp W^T + b and out = gelu(pre), fused into the product when cuBLASLt can
// (bf16, ctx.fuse_epilogues, a row stride that is a multiple of 8, as its
// aux buffer needs), else by a separate kernel. In fp32 the GELU is always ours, so the
// fp32 mode computes exactly the CPU's formula. The bias is fused whenever
// cuBLASLt offers it, else added by a kernel.
// ld_out: the row stride of out (and of pre and residual); 0 means out_dim.
template <class TA, class TD>
static void dense_forward(CudaCtx& ctx, TD* out, const TA* inp, const TA* w, const nd<TD>* bias, int rows, int in_dim,
                          int out_dim, nd<TD>* pre = nullptr, const nd<TD>* residual = nullptr, int ld_out = 0) {
  if (rows == 0) return;
  int ld = ld_out ? ld_out : out_dim;
  float beta = residual ? 1.0f : 0.0f;
  if (pre && bias && gelu_fusable(sizeof(TD), ctx.fuse_epilogues, ld) &&
      matmul(ctx, out, w, inp, true, false, out_dim, rows, in_dim, in_dim, in_dim, ld, beta, residual, Epi::GeluBias,
             bias, pre))
    return;
  TD* y = pre ? pre : out;
  if (!bias || !matmul(ctx, y, w, inp, true, false, out_dim, rows, in_dim, in_dim, in_dim, ld, beta, residual,
                       Epi::Bias, bias)) {
    matmul(ctx, y, w, inp, true, false, out_dim, rows, in_dim, in_dim, in_dim, ld, beta, residual);
    if (bias) {
      launchKernel(add_bias_kernel, grid_for((size_t)rows * ld), kThreads, 0, ctx.stream, y, bias, rows, out_dim, ld);
    }
  }
  if (pre) activation_forward(ctx, out, (const TD*)pre, (size_t)rows * ld, Act::GeluTanh);
}

// dw, db += (dinp and db may be null), dinp += (acc = Add) or = (Set:
// beta 0, so that it needs no zeroing first). dw and db are fp32 (the
// gradient block); dinp has its own type.
//   dinp' (in, rows) += W' dout'          dout' = dout seen as (out_dim, rows)
//   dW'   (in, out)  += inp' dout'^T
// ld_out: the row stride of dout; 0 means out_dim.
template <class TA, class TI>
static void dense_backward(CudaCtx& ctx, TI* dinp, float* dw, float* db, const TA* dout, const TA* inp, const TA* w,
                           int rows, int in_dim, int out_dim, Acc acc = Acc::Add, int ld_out = 0) {
  if (rows == 0) return;
  int ld = ld_out ? ld_out : out_dim;
  float beta = acc == Acc::Add ? 1.0f : 0.0f;
  if (dinp) matmul(ctx, dinp, w, dout, false, false, in_dim, rows, out_dim, in_dim, ld, in_dim, beta);
  matmul(ctx, dw, inp, dout, false, true, in_dim, out_dim, rows, in_dim, ld, in_dim, 1.0f);
  if (db) bias_backward(ctx, db, dout, rows, out_dim, ld);
}
#endif

// A product of bf16 operands runs on tensor cores; fp32 operands (the
// fp32 mode) on CUDA cores. The forward reads both operands and writes
// out (ld-strided rows), plus pre when a GELU follows (a separate kernel
// then reads it and writes out again) and the residual as C. The backward's
// dinp and dW are accumulated (beta = 1: read and written), db goes through
// the column sums.
static OpCost dense_forward_cost(size_t rows, size_t in, size_t out, size_t ld, size_t sa, size_t sd, bool gelu,
                                 bool fused, bool residual) {
  double y = (double)rows * ld * sd;
  double gemm = ((double)rows * in + (double)out * in) * sa + y + (double)out * sd + (residual ? y : 0) +
                (gelu ? y : 0);
  OpCost c = {{gelu && fused ? "dense + GELU" : "dense", 2.0 * rows * in * out, sa == 2, gemm}};
  if (gelu && !fused) c.push_back({"activation", 20.0 * rows * out, false, 2 * y});  // GELU by our kernel
  return c;
}
static OpCost dense_backward_cost(size_t rows, size_t in, size_t out, size_t ld, size_t sa, size_t si, bool dinp,
                                  bool db, bool add) {
  double dy = (double)rows * ld * sa, w = (double)out * in, mac = (double)rows * in * out;
  OpCost c;
  if (dinp) c.push_back({"dense backward", 2 * mac, sa == 2, w * sa + dy + (add ? 2.0 : 1.0) * rows * in * si});
  c.push_back({"dense backward", 2 * mac, sa == 2, (double)rows * in * sa + dy + 2 * w * 4});        // dW +=
  if (db) {                                                                                           // db +=
    c.push_back({"column sums", (double)rows * out, false, dy + kColChunks * out * 4.0});
    c.push_back({"column sums", kColChunks * (double)out, false, kColChunks * out * 4.0 + 8.0 * out});
  }
  return c;
}

// ---------------------------------------------------------------------------
// Activations: GELU (tanh form in the layers, erf form in the MLM head), tanh
// ---------------------------------------------------------------------------

// tanh through exp: 1 - 2 / (1 + e^2u). glibc's expf is several times faster
// than its tanhf and this form is exact at both tails; near 0 the absolute
// error stays at rounding level, which is all 1 + tanh needs.
template <class F>
BIGS_HD F fast_tanh(F u) {
  return (F)1 - (F)2 / ((F)1 + std::exp((F)2 * u));
}
template <class F>
BIGS_HD F gelu_tanh(F x) {
  const F k = (F)0.7978845608028654;  // sqrt(2 / pi)
  return (F)0.5 * x * ((F)1 + fast_tanh(k * (x + (F)0.044715 * x * x * x)));
}
template <class F>
BIGS_HD F gelu_tanh_grad(F x) {
  const F k = (F)0.7978845608028654;
  F th = fast_tanh(k * (x + (F)0.044715 * x * x * x));
  return (F)0.5 * ((F)1 + th) + (F)0.5 * x * ((F)1 - th * th) * k * ((F)1 + (F)0.134145 * x * x);
}
template <class F>
BIGS_HD F gelu_erf(F x) {
  return (F)0.5 * x * ((F)1 + std::erf(x * (F)0.7071067811865476));
}
template <class F>
BIGS_HD F gelu_erf_grad(F x) {
  return (F)0.5 * ((F)1 + std::erf(x * (F)0.7071067811865476)) +
         x * (F)0.3989422804014327 * std::exp((F)-0.5 * x * x);  // x * pdf(x)
}

template <class F>
void activation_forward_cpu(F* out, const F* inp, size_t n, Act act) {  // out =
#pragma omp parallel for
  for (size_t i = 0; i < n; i++)
    out[i] = act == Act::GeluTanh ? gelu_tanh(inp[i]) : act == Act::GeluErf ? gelu_erf(inp[i]) : std::tanh(inp[i]);
}

// dinp = dout * act'(inp). dinp may alias dout.
template <class F>
void activation_backward_cpu(F* dinp, const F* dout, const F* inp, size_t n, Act act) {
#pragma omp parallel for
  for (size_t i = 0; i < n; i++) {
    F g = act == Act::GeluTanh  ? gelu_tanh_grad(inp[i])
          : act == Act::GeluErf ? gelu_erf_grad(inp[i])
                                : (F)1 - std::tanh(inp[i]) * std::tanh(inp[i]);
    dinp[i] = dout[i] * g;
  }
}

#ifdef BIGS_CUDA
// The same formulas as the CPU (gelu_tanh and friends are host-device).
template <class TO, class TI>
__global__ void activation_forward_kernel(TO* out, const TI* inp, size_t n, Act act) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= n) return;
  float x = ld(inp[i]);
  st(out + i, act == Act::GeluTanh ? gelu_tanh(x) : act == Act::GeluErf ? gelu_erf(x) : tanhf(x));
}

template <class TD, class TO, class TI>
__global__ void activation_backward_kernel(TD* dinp, const TO* dout, const TI* inp, size_t n, Act act) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= n) return;
  float x = ld(inp[i]);
  float g = act == Act::GeluTanh  ? gelu_tanh_grad(x)
            : act == Act::GeluErf ? gelu_erf_grad(x)
                                  : 1.0f - tanhf(x) * tanhf(x);
  st(dinp + i, ld(dout[i]) * g);
}

template <class TO, class TI>
static void activation_forward(CudaCtx& ctx, TO* out, const TI* inp, size_t n, Act act) {  // out =
  launchKernel(activation_forward_kernel, grid_for(n), kThreads, 0, ctx.stream, out, inp, n, act);
}

// dinp = dout * act'(inp). dinp may alias dout.
template <class TD, class TO, class TI>
static void activation_backward(CudaCtx& ctx, TD* dinp, const TO* dout, const TI* inp, size_t n, Act act) {
  launchKernel(activation_backward_kernel, grid_for(n), kThreads, 0, ctx.stream, dinp, dout, inp, n, act);
}

// out = in, rounded to out's type.
template <class TO, class TI>
__global__ void cast_kernel(TO* out, const TI* in, size_t n) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < n) st(out + i, ld(in[i]));
}

// x as a dense operand of type S: x itself when S is float, else rounded
// into tmp.
static const float* as_operand(CudaCtx&, float*, const float* x, size_t) { return x; }
static const bf16* as_operand(CudaCtx& ctx, bf16* tmp, const float* x, size_t n) {
  launchKernel(cast_kernel, grid_for(n), kThreads, 0, ctx.stream, tmp, x, n);
  return tmp;
}
#endif

// Elementwise passes: n elements read from each input and written to each
// output (the test of the cost device checks exactly this).
static OpCost activation_forward_cost(size_t n, size_t si, size_t so) {
  return {{"activation", 20.0 * n, false, (double)n * (si + so)}};
}
static OpCost activation_backward_cost(size_t n, size_t sd, size_t so, size_t si) {
  return {{"activation", 25.0 * n, false, (double)n * (sd + so + si)}};
}
static OpCost cast_cost(size_t n, size_t si, size_t so) { return {{"cast", (double)n, false, (double)n * (si + so)}}; }

// ---------------------------------------------------------------------------
// Multiplicative gate: out = a * b, elementwise
// ---------------------------------------------------------------------------

template <class F>
void gate_forward_cpu(F* out, const F* a, const F* b, size_t n) {  // out =
#pragma omp parallel for
  for (size_t i = 0; i < n; i++) out[i] = a[i] * b[i];
}

template <class F>
void gate_backward_cpu(F* da, F* db, const F* dout, const F* a, const F* b, size_t n) {  // da, db =
#pragma omp parallel for
  for (size_t i = 0; i < n; i++) {
    da[i] = dout[i] * b[i];
    db[i] = dout[i] * a[i];
  }
}


#ifdef BIGS_CUDA
template <class X>
__global__ void gate_forward_kernel(X* out, const X* a, const X* b, size_t n) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < n) st(out + i, ld(a[i]) * ld(b[i]));
}

template <class X>
__global__ void gate_backward_kernel(X* da, X* db, const X* dout, const X* a, const X* b, size_t n) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= n) return;
  float d = ld(dout[i]);  // read before writing: da may alias dout
  st(da + i, d * ld(b[i]));
  st(db + i, d * ld(a[i]));
}

template <class X>
static void gate_forward(CudaCtx& ctx, X* out, const X* a, const X* b, size_t n) {  // out =
  launchKernel(gate_forward_kernel, grid_for(n), kThreads, 0, ctx.stream, out, a, b, n);
}

template <class X>
static void gate_backward(CudaCtx& ctx, X* da, X* db, const X* dout, const X* a, const X* b, size_t n) {  // da, db =
  launchKernel(gate_backward_kernel, grid_for(n), kThreads, 0, ctx.stream, da, db, dout, a, b, n);
}

// The value branch's backward in one pass (layer_backward): the gate gv = g
// v of g = gelu(g_pre) and v = gelu(v_pre) back to both pre-activations,
//   dg = dgv v gelu'(g_pre),   dv = dgv g gelu'(v_pre)      (=)
// which the CPU computes as gate_backward and then activation_backward on
// each (the same products in the same order). Fused, it reads five tensors
// and writes two, where the three passes read eight and wrote four.
template <class X>
__global__ void gate_gelu_backward_kernel(X* dg, X* dv, const X* dgv, const X* g, const X* v, const X* g_pre,
                                          const X* v_pre, size_t n) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= n) return;
  float d = ld(dgv[i]);
  st(dg + i, d * ld(v[i]) * gelu_tanh_grad(ld(g_pre[i])));
  st(dv + i, d * ld(g[i]) * gelu_tanh_grad(ld(v_pre[i])));
}

template <class X>
static void gate_gelu_backward(CudaCtx& ctx, X* dg, X* dv, const X* dgv, const X* g, const X* v, const X* g_pre,
                               const X* v_pre, size_t n) {  // dg, dv =
  launchKernel(gate_gelu_backward_kernel, grid_for(n), kThreads, 0, ctx.stream, dg, dv, dgv, g, v, g_pre, v_pre, n);
}
#endif

static OpCost gate_forward_cost(size_t n, size_t s) { return {{"gate", (double)n, false, 3.0 * n * s}}; }
static OpCost gate_backward_cost(size_t n, size_t s) { return {{"gate", 2.0 * n, false, 5.0 * n * s}}; }
static OpCost gate_gelu_backward_cost(size_t n, size_t s) { return {{"gate", 52.0 * n, false, 7.0 * n * s}}; }

// ---------------------------------------------------------------------------
// S4D kernel (docs/MODEL.md section 4), one kernel shared by all H channels:
//   dt = exp(log_step),  A_n = min(A_re_n, -1e-4) + i A_im_n
//   Ct_n = C_n (exp(dt A_n) - 1) / A_n        (zero-order hold)
//   K[l] = Re sum_n Ct_n exp(l dt A_n)
// ---------------------------------------------------------------------------

constexpr double kMaxARe = -1e-4;

// The complex arithmetic runs in double whatever F is: it is O(N T), a
// vanishing share of the step, and the kernel sums N terms that can cancel.
template <class F>
void s4d_kernel_forward_cpu(F* K, const F* a_re, const F* a_im, const F* c, F log_step, int N,
                            int T) {  // K (T) =
  using Cx = std::complex<double>;
  double dt = std::exp((double)log_step);
  std::vector<double> acc(T, 0.0);
  for (int n = 0; n < N; n++) {
    Cx A(std::min((double)a_re[n], kMaxARe), (double)a_im[n]);
    Cx ct = Cx(c[2 * n], c[2 * n + 1]) * (std::exp(dt * A) - 1.0) / A;
    // exp(l dt A) directly rather than by repeated multiplication: no error
    // growth with l, which matters at T = 4096.
    for (int l = 0; l < T; l++) acc[l] += std::real(ct * std::exp((double)l * dt * A));
  }
  for (int l = 0; l < T; l++) K[l] = (F)acc[l];
}

// da_re, da_im, dc, dlog_step += the gradient of sum_l dK[l] K[l].
// With z_n = exp(dt A_n), E_n = (z_n - 1) / A_n, Ct_n = C_n E_n, and the
// complex gradient of a real loss written g_w = dL/dRe(w) + i dL/dIm(w),
// a holomorphic step w -> f(w) sends g back as g conj(f'(w)):
//   g_Ct = conj(G0),            G0 = sum_l dK[l] z^l,  G1 = sum_l l dK[l] z^l
//   g_C  = g_Ct conj(E),  g_E = g_Ct conj(C)
//   g_A  = conj(Ct dt G1) + g_E conj(dE/dA),   dE/dA = (dt z - E) / A
//   dL/ddt = Re(Ct A G1) + Re(conj(g_E) z)
// and dlog_step = dt dL/ddt; the clip passes g_A's real part only where
// A_re < -1e-4.
template <class F>
void s4d_kernel_backward_cpu(F* da_re, F* da_im, F* dc, F* dlog_step, const F* dK, const F* a_re, const F* a_im,
                             const F* c, F log_step, int N, int T) {
  using Cx = std::complex<double>;
  double dt = std::exp((double)log_step), ddt = 0;
  for (int n = 0; n < N; n++) {
    bool clipped = !((double)a_re[n] < kMaxARe);
    Cx A(clipped ? kMaxARe : (double)a_re[n], (double)a_im[n]);
    Cx C(c[2 * n], c[2 * n + 1]);
    Cx z = std::exp(dt * A);
    Cx E = (z - 1.0) / A;
    Cx ct = C * E;
    Cx G0 = 0, G1 = 0;
    for (int l = 0; l < T; l++) {
      Cx zl = std::exp((double)l * dt * A);
      G0 += (double)dK[l] * zl;
      G1 += ((double)l * dK[l]) * zl;
    }
    Cx g_ct = std::conj(G0);
    Cx g_c = g_ct * std::conj(E);
    Cx g_e = g_ct * std::conj(C);
    Cx g_a = std::conj(ct * dt * G1) + g_e * std::conj((dt * z - E) / A);
    ddt += std::real(ct * A * G1) + std::real(std::conj(g_e) * z);
    if (!clipped) da_re[n] += (F)std::real(g_a);
    da_im[n] += (F)std::imag(g_a);
    dc[2 * n] += (F)std::real(g_c);
    dc[2 * n + 1] += (F)std::imag(g_c);
  }
  *dlog_step += (F)(ddt * dt);
}


#ifdef BIGS_CUDA
// Double precision on the GPU too, for the CPU's reason (cancellation among
// the N terms); the work is O(N T) per SSM, negligible next to the layer.
struct Cd {
  double re, im;
};
__device__ Cd cd_mul(Cd a, Cd b) { return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re}; }
__device__ Cd cd_div(Cd a, Cd b) {
  double d = b.re * b.re + b.im * b.im;
  return {(a.re * b.re + a.im * b.im) / d, (a.im * b.re - a.re * b.im) / d};
}
__device__ Cd cd_exp(Cd a) {
  double e = exp(a.re);
  return {e * cos(a.im), e * sin(a.im)};
}
__device__ Cd cd_conj(Cd a) { return {a.re, -a.im}; }
__device__ Cd cd_scale(Cd a, double s) { return {a.re * s, a.im * s}; }

// One thread per lag l; log_step is read from device memory (it is a
// parameter, so it lives in the parameter block).
__global__ void s4d_kernel_forward_kernel(float* K, const float* a_re, const float* a_im, const float* c,
                                          const float* log_step, int N, int T) {
  int l = blockIdx.x * blockDim.x + threadIdx.x;
  if (l >= T) return;
  double dt = exp((double)*log_step), acc = 0;
  for (int n = 0; n < N; n++) {
    Cd A = {(double)a_re[n] < kMaxARe ? (double)a_re[n] : kMaxARe, (double)a_im[n]};
    Cd z = cd_exp(cd_scale(A, dt));
    Cd ct = cd_mul({c[2 * n], c[2 * n + 1]}, cd_div({z.re - 1.0, z.im}, A));
    acc += cd_mul(ct, cd_exp(cd_scale(A, (double)l * dt))).re;
  }
  K[l] = (float)acc;
}

// One block per mode n: the block sums G0 and G1 over the lags, then its
// first thread applies the CPU's formulas. Each mode's share of dL/ddt goes
// to ddt_part[n]; s4d_dlogstep_kernel adds them in order.
__global__ void s4d_kernel_backward_kernel(float* da_re, float* da_im, float* dc, double* ddt_part, const float* dK,
                                           const float* a_re, const float* a_im, const float* c, const float* log_step,
                                           int T) {
  int n = blockIdx.x;
  double dt = exp((double)*log_step);
  bool clipped = !((double)a_re[n] < kMaxARe);
  Cd A = {clipped ? kMaxARe : (double)a_re[n], (double)a_im[n]};
  double g0r = 0, g0i = 0, g1r = 0, g1i = 0;
  for (int l = threadIdx.x; l < T; l += blockDim.x) {
    Cd zl = cd_exp(cd_scale(A, (double)l * dt));
    double k = dK[l], lk = (double)l * dK[l];
    g0r += k * zl.re, g0i += k * zl.im;
    g1r += lk * zl.re, g1i += lk * zl.im;
  }
  Cd G0 = {block_sum(g0r), block_sum(g0i)}, G1 = {block_sum(g1r), block_sum(g1i)};
  if (threadIdx.x != 0) return;
  Cd C = {c[2 * n], c[2 * n + 1]};
  Cd z = cd_exp(cd_scale(A, dt));
  Cd E = cd_div({z.re - 1.0, z.im}, A);
  Cd ct = cd_mul(C, E);
  Cd g_ct = cd_conj(G0);
  Cd g_c = cd_mul(g_ct, cd_conj(E));
  Cd g_e = cd_mul(g_ct, cd_conj(C));
  Cd dEdA = cd_div({dt * z.re - E.re, dt * z.im - E.im}, A);
  Cd t1 = cd_conj(cd_mul(cd_scale(ct, dt), G1)), t2 = cd_mul(g_e, cd_conj(dEdA));
  Cd g_a = {t1.re + t2.re, t1.im + t2.im};
  ddt_part[n] = cd_mul(cd_mul(ct, A), G1).re + cd_mul(cd_conj(g_e), z).re;
  if (!clipped) da_re[n] += (float)g_a.re;
  da_im[n] += (float)g_a.im;
  dc[2 * n] += (float)g_c.re;
  dc[2 * n + 1] += (float)g_c.im;
}

__global__ void s4d_dlogstep_kernel(float* dlog_step, const double* ddt_part, const float* log_step, int N) {
  double ddt = 0;
  for (int n = 0; n < N; n++) ddt += ddt_part[n];
  *dlog_step += (float)(ddt * exp((double)*log_step));
}

static void s4d_kernel_forward(CudaCtx& ctx, float* K, const float* a_re, const float* a_im, const float* c,
                               const float* log_step, int N, int T) {  // K (T) =
  launchKernel(s4d_kernel_forward_kernel, grid_for(T), kThreads, 0, ctx.stream, K, a_re, a_im, c, log_step, N, T);
}

// da_re, da_im, dc, dlog_step +=.
static void s4d_kernel_backward(CudaCtx& ctx, float* da_re, float* da_im, float* dc, float* dlog_step, const float* dK,
                                const float* a_re, const float* a_im, const float* c, const float* log_step, int N,
                                int T) {
  if ((size_t)N > ctx.red_cap) throw CudaError(strf("s4d_kernel_backward: N = %d exceeds the scratch", N));
  launchKernel(s4d_kernel_backward_kernel, N, kThreads, 0, ctx.stream, da_re, da_im, dc, ctx.red, dK, a_re, a_im, c,
               log_step, T);
  launchKernel(s4d_dlogstep_kernel, 1, 1, 0, ctx.stream, dlog_step, ctx.red, log_step, N);
}
#endif

// O(N T) complex exponentials in double; counted as CUDA-core work.
static OpCost s4d_kernel_forward_cost(size_t N, size_t T) {
  return {{"S4D kernel", 40.0 * N * T, false, 16.0 * N + 8 + 4.0 * T}};
}
static OpCost s4d_kernel_backward_cost(size_t N, size_t T) {
  return {{"S4D kernel", 60.0 * N * T, false, 4.0 * T + 24.0 * N}, {"S4D kernel", 2.0 * N, false, 8.0 * N + 8}};
}

// ---------------------------------------------------------------------------
// SSM convolution with skip term, per channel, over (B, T, H):
//   causal      y[t] = sum_{s <= t} K[t - s] u[s] + D u[t]     (forward SSM)
//   anti-causal y[t] = sum_{s >= t} K[s - t] u[s] + D u[t]     (backward SSM)
// The anti-causal form is the backward SSM of docs/MODEL.md section 3 read in original time
// order: flip, causal convolution, flip back. Computing it directly means
// nothing is ever flipped in memory. Each direction's backward pass is the
// other direction's forward, so two functions cover all four cases.
// Two implementations: the direct sum (O(T^2), the reference) and an FFT of
// length >= 2T (zero padding makes the circular product linear).
// ---------------------------------------------------------------------------

template <class F>
void ssm_conv_direct_cpu(F* out, const F* inp, const F* K, F D, int B, int T, int H,
                         bool anticausal) {  // out (B, T, H) =
#pragma omp parallel for collapse(2)
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      F* y = out + ((size_t)b * T + t) * H;
      const F* u0 = inp + (size_t)b * T * H;
      for (int h = 0; h < H; h++) y[h] = D * u0[(size_t)t * H + h];
      int s0 = anticausal ? t : 0, s1 = anticausal ? T : t + 1;
      for (int s = s0; s < s1; s++) {
        F k = K[anticausal ? s - t : t - s];
        const F* u = u0 + (size_t)s * H;
#pragma omp simd
        for (int h = 0; h < H; h++) y[h] += k * u[h];
      }
    }
}

// In-place iterative radix-2 FFT; n must be a power of two. tw holds the n/2
// twiddles exp(-2 pi i k / n), computed once per size in double (error then
// stays at rounding level); inverse = true gives the unscaled inverse.
template <class F>
void fft_cpu(std::complex<F>* x, int n, const std::complex<F>* tw, bool inverse) {
  for (int i = 1, j = 0; i < n; i++) {  // bit-reversal permutation
    int bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) std::swap(x[i], x[j]);
  }
  for (int len = 2; len <= n; len <<= 1) {
    int stride = n / len;
    for (int i = 0; i < n; i += len)
      for (int k = 0; k < len / 2; k++) {
        std::complex<F> w = inverse ? std::conj(tw[k * stride]) : tw[k * stride];
        std::complex<F> a = x[i + k], b = x[i + k + len / 2] * w;
        x[i + k] = a + b;
        x[i + k + len / 2] = a - b;
      }
  }
}

template <class F>
std::vector<std::complex<F>> fft_twiddles(int n) {
  std::vector<std::complex<F>> tw(n / 2);
  for (int k = 0; k < n / 2; k++)
    tw[k] = std::complex<F>((F)std::cos(-2 * M_PI * k / n), (F)std::sin(-2 * M_PI * k / n));
  return tw;
}

static int fft_size(int T) {  // smallest power of two >= 2T
  int n = 1;
  while (n < 2 * T) n <<= 1;
  return n;
}

template <class F>
void ssm_conv_fft_cpu(F* out, const F* inp, const F* K, F D, int B, int T, int H,
                      bool anticausal) {  // out (B, T, H) =
  using Cx = std::complex<F>;
  int n = fft_size(T);
  // The kernel's spectrum once; the anti-causal sum is a correlation, whose
  // spectrum is the conjugate of the kernel's.
  std::vector<Cx> tw = fft_twiddles<F>(n), kf(n, Cx(0));
  for (int l = 0; l < T; l++) kf[l] = K[l];
  fft_cpu(kf.data(), n, tw.data(), false);
  if (anticausal)
    for (auto& v : kf) v = std::conj(v);
#pragma omp parallel
  {
    std::vector<Cx> buf(n);
#pragma omp for collapse(2)
    for (int b = 0; b < B; b++)
      for (int h = 0; h < H; h++) {
        const F* u = inp + (size_t)b * T * H + h;
        F* y = out + (size_t)b * T * H + h;
        std::fill(buf.begin(), buf.end(), Cx(0));
        for (int t = 0; t < T; t++) buf[t] = u[(size_t)t * H];
        fft_cpu(buf.data(), n, tw.data(), false);
        for (int i = 0; i < n; i++) buf[i] *= kf[i];
        fft_cpu(buf.data(), n, tw.data(), true);
        for (int t = 0; t < T; t++) y[(size_t)t * H] = buf[t].real() / (F)n + D * u[(size_t)t * H];
      }
  }
}

// Above this length the FFT is cheaper than the direct sum on a CPU (measured
// on 2 cores: at T = 128 the direct sum is 6x faster than this radix-2 FFT).
// maybe_unused: the model runs ssm_conv_forward_fast, so a build without the
// tests instantiates no reference that reads this.
[[maybe_unused]] constexpr int kFftMinT = 1024;

template <class F>
void ssm_conv_forward_cpu(F* out, const F* inp, const F* K, F D, int B, int T, int H, bool anticausal) {
  if (T >= kFftMinT)
    ssm_conv_fft_cpu(out, inp, K, D, B, T, H, anticausal);
  else
    ssm_conv_direct_cpu(out, inp, K, D, B, T, H, anticausal);
}

// dinp = the opposite-direction convolution of dout (overwrites);
// dK[l] += sum over b, h, t of dout[t] inp[t -+ l]; dD += sum dout * inp.
template <class F>
void ssm_conv_backward_cpu(F* dinp, F* dK, F* dD, const F* dout, const F* inp, const F* K, F D, int B, int T, int H,
                           bool anticausal) {
  ssm_conv_forward_cpu(dinp, dout, K, D, B, T, H, !anticausal);
  // dK: the lag-l correlation of dout with inp, summed over every channel.
  // Parallel over lags, so each sum has one fixed order.
#pragma omp parallel for
  for (int l = 0; l < T; l++) {
    F sum = 0;
    for (int b = 0; b < B; b++)
      for (int t = anticausal ? 0 : l; t < (anticausal ? T - l : T); t++) {
        const F* d = dout + ((size_t)b * T + t) * H;
        const F* u = inp + ((size_t)b * T + (anticausal ? t + l : t - l)) * H;
#pragma omp simd reduction(+ : sum)
        for (int h = 0; h < H; h++) sum += d[h] * u[h];
      }
    dK[l] += sum;
  }
  // dD: per-sequence partial sums, then a serial total; an OpenMP float
  // reduction would combine partials in arrival order, and bit-exact resume
  // needs one fixed order.
  std::vector<F> part(B, (F)0);
#pragma omp parallel for
  for (int b = 0; b < B; b++) {
    const F* d = dout + (size_t)b * T * H;
    const F* u = inp + (size_t)b * T * H;
    F sum = 0;
    for (size_t i = 0; i < (size_t)T * H; i++) sum += d[i] * u[i];
    part[b] = sum;
  }
  for (int b = 0; b < B; b++) *dD += part[b];
}

// ---------------------------------------------------------------------------
// SSM convolution on the GPU as Toeplitz products (version 3 of the kernel
// lab, dev/cuda/ssm_conv.cu; version 2 for T <= kGpuToeplitzChunk), for bf16
// up to T = kGpuToeplitzMaxT and fp32 below 512; the FFT (further below)
// beyond. The plans and the orchestration are host code over an executor,
// so that the lab's CPU twin (test_lab) replays exactly what the GPU runs.
// ---------------------------------------------------------------------------
// cuBLASLt is column-major, so a sequence u_b, row-major (T, H), is the
// column-major U' (H x T) with ld H, and y_b likewise Y'. The causal
// product y[t] = sum_s N(s, t) u[s] is then Y' = U' N, N column-major
// (T x T, ld ldT), shared by every sequence through a zero batch stride:
//   N(s, t) = K[t - s] for s <= t (plus D at s = t), 0 for s > t;
// the anti-causal product is Y' = U' N^T, the same matrix. Upper
// triangular, so output column t needs input columns s <= t (causal) or
// s >= t (anti-causal) only: version 3 runs one product per block of C
// output columns over just the input columns it needs, skipping the zero
// triangle. Costs (dev/cuda/README.md): at T = 128 the forward moves 16x
// fewer bytes than the FFT route, and in bf16 the FFT wins again only from
// T ~ 7000; in exact fp32 the products run on CUDA cores and the FFT wins
// from T = 512.
constexpr int kGpuToeplitzChunk = 512;  // version 3's block of output columns
constexpr int kGpuToeplitzMaxT = 4096;  // bf16 (and TF32 storage): Toeplitz up to here
constexpr int kGpuToeplitzMaxTFp32 = 511;

// Whether the GPU convolves by Toeplitz products for storage elements of
// elem bytes (2: bf16) at length T; else by FFT.
static bool gpu_toeplitz_route(size_t elem, int T) {
  return T <= (elem == 2 ? kGpuToeplitzMaxT : kGpuToeplitzMaxTFp32);
}

// One cuBLASLt product as numbers, column-major as cuBLASLt sees memory:
#ifdef BIGS_CUDA
// The GPU's FFT route, for long T (see gpu_toeplitz_route): cuFFT, fp32
// whatever the storage type. Each of the B x H channels is copied into a zero-padded row of
// length n (cuFFT's batched layout wants each signal contiguous; ours have
// stride H), transformed, multiplied by the kernel's spectrum (conjugated
// for the anti-causal direction, as in ssm_conv_fft_cpu), transformed back
// and copied out. The copies are transposes of each sequence's (T, H)
// block, done through 32 x 32 tiles in shared memory so that both the reads
// and the writes are coalesced. Blocks are (32, 8) threads; grid z is b.
constexpr int kTile = 32;

// buf (B*H, n) = inp (B, T, H) by channel, zero-padded from T to n.
template <class X>
__global__ void ssm_pack_kernel(float* buf, const X* inp, int T, int H, int n) {
  __shared__ float tile[kTile][kTile + 1];  // +1: no bank conflicts on the transposed read
  int b = blockIdx.z, t0 = blockIdx.x * kTile, h0 = blockIdx.y * kTile, tx = threadIdx.x;
  for (int k = threadIdx.y; k < kTile; k += blockDim.y) {  // tile[t][h]
    int t = t0 + k, h = h0 + tx;
    tile[k][tx] = (t < T && h < H) ? ld(inp[((size_t)b * T + t) * H + h]) : 0.0f;
  }
  __syncthreads();
  for (int k = threadIdx.y; k < kTile; k += blockDim.y) {
    int h = h0 + k, t = t0 + tx;
    if (h < H && t < n) buf[((size_t)b * H + h) * n + t] = tile[tx][k];
  }
}

// out (B, T, H) = the first T values of each row of buf / n (cuFFT's
// inverse is unscaled) + D inp.
template <class X>
__global__ void ssm_unpack_kernel(X* out, const float* buf, const X* inp, const float* D, int T, int H, int n) {
  __shared__ float tile[kTile][kTile + 1];
  int b = blockIdx.z, t0 = blockIdx.x * kTile, h0 = blockIdx.y * kTile, tx = threadIdx.x;
  for (int k = threadIdx.y; k < kTile; k += blockDim.y) {  // tile[h][t]
    int h = h0 + k, t = t0 + tx;
    tile[k][tx] = (h < H && t < T) ? buf[((size_t)b * H + h) * n + t] : 0.0f;
  }
  __syncthreads();
  float d = *D;
  for (int k = threadIdx.y; k < kTile; k += blockDim.y) {
    int t = t0 + k, h = h0 + tx;
    if (t < T && h < H) {
      size_t i = ((size_t)b * T + t) * H + h;
      st(out + i, tile[tx][k] / (float)n + d * ld(inp[i]));
    }
  }
}

// spec (channels, nf) *= k (nf), or by conj(k).
__global__ void ssm_spec_mul_kernel(cufftComplex* spec, const cufftComplex* k, size_t channels, int nf,
                                    bool conjugate) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= channels * nf) return;
  cufftComplex a = spec[i], b = k[i % nf];
  if (conjugate) b.y = -b.y;
  spec[i] = make_cuComplex(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}

// The cross spectrum whose inverse transform is the lag correlation
// dK[l] = sum_t dout[t] inp[t -+ l], summed over the channels: Fd conj(Fu)
// for the causal direction, conj(Fd) Fu for the anti-causal one. Two
// deterministic stages, as the column sums: slice blockIdx.y of the
// channels, one thread per frequency (consecutive threads read consecutive
// frequencies), then the slices in order.
__global__ void ssm_dk_partial_kernel(float2* part, const cufftComplex* fd, const cufftComplex* fu, size_t channels,
                                      int nf, bool anticausal) {
  int f = blockIdx.x * blockDim.x + threadIdx.x;
  if (f >= nf) return;
  size_t per = (channels + kColChunks - 1) / kColChunks, c0 = blockIdx.y * per, c1 = min(channels, c0 + per);
  float re = 0, im = 0;
  for (size_t ch = c0; ch < c1; ch++) {
    cufftComplex d = fd[ch * nf + f], u = fu[ch * nf + f];
    if (anticausal)
      d.y = -d.y;
    else
      u.y = -u.y;
    re += d.x * u.x - d.y * u.y;
    im += d.x * u.y + d.y * u.x;
  }
  part[(size_t)blockIdx.y * nf + f] = make_float2(re, im);
}

__global__ void ssm_dk_finish_kernel(cufftComplex* S, const float2* part, int nf) {
  int f = blockIdx.x * blockDim.x + threadIdx.x;
  if (f >= nf) return;
  float re = 0, im = 0;
  for (int k = 0; k < kColChunks; k++) re += part[(size_t)k * nf + f].x, im += part[(size_t)k * nf + f].y;
  S[f] = make_cuComplex(re, im);
}

__global__ void ssm_dk_accumulate_kernel(float* dK, const float* corr, int T, int n) {
  int l = blockIdx.x * blockDim.x + threadIdx.x;
  if (l < T) dK[l] += corr[l] / (float)n;
}

template <class X>
static void ssm_pack(CudaCtx& ctx, float* buf, const X* inp, int B, int T, int H, int n) {
  dim3 grid((n + kTile - 1) / kTile, (H + kTile - 1) / kTile, B);
  launchKernel(ssm_pack_kernel, grid, dim3(kTile, 8), 0, ctx.stream, buf, inp, T, H, n);
}

// spec (B*H, nf) = the spectra of inp's zero-padded channels; uses fft_real.
template <class X>
static void ssm_spectra(CudaCtx& ctx, cufftComplex* spec, const X* inp, int B, int T, int H, int n) {
  ssm_pack(ctx, ctx.fft_real, inp, B, T, H, n);
  cufftCheck(cufftExecR2C(fft_plan(ctx, n, B * H).r2c, ctx.fft_real, spec));
}

template <class X>
static void ssm_conv_fft_forward(CudaCtx& ctx, X* out, const X* inp, const float* K, const float* D, int B, int T,
                                 int H, bool anticausal) {  // out (B, T, H) =
  int n = fft_size(T), nf = n / 2 + 1;
  size_t channels = (size_t)B * H;
  fft_reserve(ctx, channels, n);
  // The kernel's spectrum: K padded into row 0 of fft_real, one transform.
  ssm_pack(ctx, ctx.fft_real, K, 1, T, 1, n);
  cufftCheck(cufftExecR2C(fft_plan(ctx, n, 1).r2c, ctx.fft_real, ctx.fft_k));
  ssm_spectra(ctx, ctx.fft_spec, inp, B, T, H, n);
  launchKernel(ssm_spec_mul_kernel, grid_for(channels * nf), kThreads, 0, ctx.stream, ctx.fft_spec, ctx.fft_k, channels,
               nf, anticausal);
  cufftCheck(cufftExecC2R(fft_plan(ctx, n, B * H).c2r, ctx.fft_spec, ctx.fft_real));
  dim3 grid((T + kTile - 1) / kTile, (H + kTile - 1) / kTile, B);
  launchKernel(ssm_unpack_kernel, grid, dim3(kTile, 8), 0, ctx.stream, out, ctx.fft_real, inp, D, T, H, n);
}

// dinp = the opposite-direction convolution of dout (overwrites); dK, dD +=.
template <class X>
static void ssm_conv_fft_backward(CudaCtx& ctx, X* dinp, float* dK, float* dD, const X* dout, const X* inp,
                                  const float* K, const float* D, int B, int T, int H, bool anticausal) {
  ssm_conv_fft_forward(ctx, dinp, dout, K, D, B, T, H, !anticausal);
  int n = fft_size(T), nf = n / 2 + 1;
  size_t channels = (size_t)B * H;
  ssm_spectra(ctx, ctx.fft_spec, dout, B, T, H, n);
  ssm_spectra(ctx, ctx.fft_spec2, inp, B, T, H, n);
  scratch_reserve(ctx, &ctx.colsum, &ctx.colsum_cap, (size_t)kColChunks * 2 * nf);
  launchKernel(ssm_dk_partial_kernel, dim3(grid_for(nf), kColChunks), kThreads, 0, ctx.stream, (float2*)ctx.colsum,
               ctx.fft_spec, ctx.fft_spec2, channels, nf, anticausal);
  launchKernel(ssm_dk_finish_kernel, grid_for(nf), kThreads, 0, ctx.stream, ctx.fft_k, (const float2*)ctx.colsum, nf);
  cufftCheck(cufftExecC2R(fft_plan(ctx, n, 1).c2r, ctx.fft_k, ctx.fft_real));
  launchKernel(ssm_dk_accumulate_kernel, grid_for(T), kThreads, 0, ctx.stream, dK, ctx.fft_real, T, n);
  dot_reduce(ctx, dD, dout, inp, (size_t)B * T * H);
}

#endif  // BIGS_CUDA

#ifdef BIGS_CUDA
// The launchers the model calls: the Toeplitz route where it is the cheaper
// (gpu_toeplitz_route), the FFT route beyond.
template <class X>
static void ssm_conv_forward(CudaCtx& ctx, X* out, const X* inp, const float* K, const float* D, int B, int T, int H,
                             bool anticausal) {  // out (B, T, H) =
  if (!gpu_toeplitz_route(sizeof(X), T)) return ssm_conv_fft_forward(ctx, out, inp, K, D, B, T, H, anticausal);
  ToeplitzExec ex{ctx};
  toeplitz_forward(ex, out, inp, K, D, B, T, H, anticausal, kGpuToeplitzChunk);
}

// dinp = the opposite-direction convolution of dout (overwrites); dK, dD +=.
template <class X>
static void ssm_conv_backward(CudaCtx& ctx, X* dinp, float* dK, float* dD, const X* dout, const X* inp, const float* K,
                              const float* D, int B, int T, int H, bool anticausal) {
  if (!gpu_toeplitz_route(sizeof(X), T))
    return ssm_conv_fft_backward(ctx, dinp, dK, dD, dout, inp, K, D, B, T, H, anticausal);
  ToeplitzExec ex{ctx};
  toeplitz_backward(ex, dinp, dK, dD, dout, inp, K, D, B, T, H, anticausal, kGpuToeplitzChunk,
                    ctx.gram_group_bytes ? ctx.gram_group_bytes : kGramCapBytes);
}
#endif

// The FFT route step by step (launch for launch): the kernel padded and
// transformed, the input packed into n-long rows, transformed, multiplied,
// transformed back and unpacked with D u added. A real transform of length
// n counts 2.5 n log2 n FLOPs (CUDA cores). The backward is the forward
// again (dinp), two more spectra, the dK cross-spectrum in two stages, one
// more inverse transform, and the dD dot product.
static OpCost ssm_conv_fft_forward_cost(size_t B, size_t T, size_t H, size_t sx) {
  double n = fft_size((int)T), nf = n / 2 + 1, ch = (double)B * H, bth = (double)B * T * H;
  double fft = 2.5 * n * std::log2(n);
  const char* op = "SSM convolution (FFT)";
  return {{op, 0, false, 4.0 * T + 4 * n},                      // K padded
          {op, fft, false, 4 * n + 8 * nf},                     // its spectrum
          {op, 0, false, bth * sx + ch * n * 4},                // the input packed
          {op, ch * fft, false, ch * n * 4 + ch * nf * 8},      // R2C
          {op, 6 * ch * nf, false, 2 * ch * nf * 8 + nf * 8},   // times the kernel's spectrum
          {op, ch * fft, false, ch * nf * 8 + ch * n * 4},      // C2R
          {op, 2 * bth, false, ch * T * 4 + 2 * bth * sx}};     // unpacked, + D u
}
static OpCost ssm_conv_fft_backward_cost(size_t B, size_t T, size_t H, size_t sx) {
  OpCost c = ssm_conv_fft_forward_cost(B, T, H, sx);  // dinp
  double n = fft_size((int)T), nf = n / 2 + 1, ch = (double)B * H, bth = (double)B * T * H;
  double fft = 2.5 * n * std::log2(n);
  const char* op = c[0].op;
  for (int k = 0; k < 2; k++) {  // the spectra of dout and of inp
    c.push_back({op, 0, false, bth * sx + ch * n * 4});
    c.push_back({op, ch * fft, false, ch * n * 4 + ch * nf * 8});
  }
  c.push_back({op, 8 * ch * nf, false, 2 * ch * nf * 8 + kColChunks * nf * 8});  // cross-spectrum partials
  c.push_back({op, 2 * kColChunks * nf, false, kColChunks * nf * 8 + nf * 8});   // ... summed
  c.push_back({op, fft, false, nf * 8 + n * 4});                                  // back to lags
  c.push_back({op, (double)T, false, n * 4 + 8.0 * T});                           // dK +=
  c.push_back({op, 2 * bth, false, 2 * bth * sx + kRedBlocks * 8.0});             // dD: dot product
  c.push_back({op, (double)kRedBlocks, false, kRedBlocks * 8.0});                 // ... summed
  return c;
}

// The Toeplitz route as the cost device counts it: the same orchestration
// (toeplitz_forward, toeplitz_backward) run by an executor that records
// each launch. A product reads each operand once (a shared one, stride 0,
// once for the whole batch) and writes D (reading it too when beta != 0);
// the lag sums read Gx's lower triangle.
static Launch gemm_launch(const char* op, const GemmSpec& s, size_t ea, size_t ed) {
  double q = s.batch;
  return {op, 2.0 * s.m * s.n * s.k * q, ea == 2,
          ea * ((double)s.m * s.k * (s.sa ? q : 1) + (double)s.k * s.n * (s.sb ? q : 1)) +
              ed * (double)s.m * s.n * q * (s.beta != 0 ? 2 : 1)};
}

struct ToeplitzCostExec {
  OpCost& c;
  const char* op = "SSM convolution (Toeplitz)";
  char* nowhere = reinterpret_cast<char*>(uintptr_t{1} << 20);  // see Cost
  template <class X>
  X* matrix(size_t) {
    return (X*)nowhere;
  }
  float* gram(size_t) { return (float*)nowhere; }
  float* partials(size_t) { return (float*)nowhere; }
  template <class X>
  void build(X*, const float*, const float*, int T, int ldT) {
    c.push_back({op, 0, false, (double)T * ldT * sizeof(X) + 4.0 * T});
  }
  template <class X>
  void conv_gemm(const GemmSpec& s, const X*, const X*, X*) {
    c.push_back(gemm_launch(op, s, sizeof(X), sizeof(X)));
  }
  template <class X>
  void gram_gemm(const GemmSpec& s, const X*, const X*, float*) {
    c.push_back(gemm_launch(op, s, sizeof(X), sizeof(float)));
  }
  void diag(float*, const float*, int T, int, int nseq, int slices) {
    double tri = (double)nseq * T * (T + 1) / 2;
    c.push_back({op, tri, false, 4 * tri + 4.0 * slices * T});
  }
  void finish(float*, float*, const float*, int T, int slices) {
    c.push_back({op, (double)slices * T, false, 4.0 * slices * T + 8.0 * T + 8});
  }
};

// The SSM convolution's cost by the route the GPU takes (gpu_toeplitz_route).
static OpCost ssm_conv_forward_cost(size_t B, size_t T, size_t H, size_t sx) {
  if (!gpu_toeplitz_route(sx, (int)T)) return ssm_conv_fft_forward_cost(B, T, H, sx);
  OpCost c;
  ToeplitzCostExec ex{c};
  char* nowhere = ex.nowhere;
  if (sx == 2)
    toeplitz_forward(ex, (uint16_t*)nowhere, (uint16_t*)nowhere, (float*)nowhere, (float*)nowhere, (int)B, (int)T,
                     (int)H, false, kGpuToeplitzChunk);
  else
    toeplitz_forward(ex, (float*)nowhere, (float*)nowhere, (float*)nowhere, (float*)nowhere, (int)B, (int)T, (int)H,
                     false, kGpuToeplitzChunk);
  return c;
}
static OpCost ssm_conv_backward_cost(size_t B, size_t T, size_t H, size_t sx) {
  if (!gpu_toeplitz_route(sx, (int)T)) return ssm_conv_fft_backward_cost(B, T, H, sx);
  OpCost c;
  ToeplitzCostExec ex{c};
  char* nowhere = ex.nowhere;
  float* f = (float*)nowhere;
  if (sx == 2)
    toeplitz_backward(ex, (uint16_t*)nowhere, f, f, (uint16_t*)nowhere, (uint16_t*)nowhere, f, f, (int)B, (int)T,
                      (int)H, false, kGpuToeplitzChunk, kGramCapBytes);
  else
    toeplitz_backward(ex, f, f, f, (float*)nowhere, (float*)nowhere, f, f, (int)B, (int)T, (int)H, false,
                      kGpuToeplitzChunk, kGramCapBytes);
  return c;
}

// ---------------------------------------------------------------------------
// Dropout. The keep mask is a pure function of (seed, stream, element), so
// the backward pass recomputes it instead of storing it.
// ---------------------------------------------------------------------------

template <class F>
void dropout_forward_cpu(F* out, const F* inp, size_t n, float p, uint64_t seed, uint64_t stream) {
  F scale = (F)1 / ((F)1 - (F)p);  // out = inp * mask / (1 - p)
#pragma omp parallel for
  for (size_t i = 0; i < n; i++)
    out[i] = (p > 0 && uniform_at(seed, stream, i) < p) ? (F)0 : (p > 0 ? inp[i] * scale : inp[i]);
}

// dinp = dout through the same mask. dinp may alias dout.
template <class F>
void dropout_backward_cpu(F* dinp, const F* dout, size_t n, float p, uint64_t seed, uint64_t stream) {
  dropout_forward_cpu(dinp, dout, n, p, seed, stream);
}

#ifdef BIGS_CUDA
// The CPU's expression with the same uniform_at: the masks agree bit for bit.
template <class TO, class TI>
__global__ void dropout_forward_kernel(TO* out, const TI* inp, size_t n, float p, uint64_t seed, uint64_t stream) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= n) return;
  float scale = 1.0f / (1.0f - p), x = ld(inp[i]);
  st(out + i, (p > 0 && uniform_at(seed, stream, i) < p) ? 0.0f : (p > 0 ? x * scale : x));
}

template <class TO, class TI>
static void dropout_forward(CudaCtx& ctx, TO* out, const TI* inp, size_t n, float p, uint64_t seed,
                            uint64_t stream) {  // out = inp * mask / (1 - p)
  launchKernel(dropout_forward_kernel, grid_for(n), kThreads, 0, ctx.stream, out, inp, n, p, seed, stream);
}

// dinp = dout through the same mask. dinp may alias dout.
template <class X>
static void dropout_backward(CudaCtx& ctx, X* dinp, const X* dout, size_t n, float p, uint64_t seed, uint64_t stream) {
  dropout_forward(ctx, dinp, dout, n, p, seed, stream);
}
#endif

static OpCost dropout_cost(size_t n, size_t si, size_t so) {
  return {{"dropout", 4.0 * n, false, (double)n * (si + so)}};
}

// ---------------------------------------------------------------------------
// Softmax cross-entropy over rows of logits
// ---------------------------------------------------------------------------

template <class F>
void crossentropy_forward_cpu(F* losses, const F* logits, const int* targets, int rows,
                              int V) {  // losses (rows) =
#pragma omp parallel for
  for (int r = 0; r < rows; r++) {
    const F* x = logits + (size_t)r * V;
    F mx = x[0];
    for (int v = 1; v < V; v++) mx = std::max(mx, x[v]);
    F sum = 0;
    for (int v = 0; v < V; v++) sum += std::exp(x[v] - mx);
    losses[r] = std::log(sum) + mx - x[targets[r]];
  }
}

// dlogits = scale * (softmax(logits) - onehot(target)).
template <class F>
void crossentropy_backward_cpu(F* dlogits, const F* logits, const int* targets, F scale, int rows, int V) {
#pragma omp parallel for
  for (int r = 0; r < rows; r++) {
    const F* x = logits + (size_t)r * V;
    F* d = dlogits + (size_t)r * V;
    F mx = x[0];
    for (int v = 1; v < V; v++) mx = std::max(mx, x[v]);
    F sum = 0;
    for (int v = 0; v < V; v++) sum += std::exp(x[v] - mx);
    for (int v = 0; v < V; v++) d[v] = scale * (std::exp(x[v] - mx) / sum - (v == targets[r]));
  }
}


#ifdef BIGS_CUDA
// One block per row, fp32 max and sum in a fixed tree order. The logits of
// only the R predicted rows ever exist, so nothing bigger is materialised.
__global__ void crossentropy_forward_kernel(float* losses, const float* logits, const int* targets, int V, int ld) {
  const float* x = logits + (size_t)blockIdx.x * ld;
  float mx = -INFINITY;
  for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, x[v]);
  mx = block_max(mx);
  float s = 0;
  for (int v = threadIdx.x; v < V; v += blockDim.x) s += expf(x[v] - mx);
  s = block_sum(s);
  if (threadIdx.x == 0) losses[blockIdx.x] = logf(s) + mx - x[targets[blockIdx.x]];
}

template <class X>
__global__ void crossentropy_backward_kernel(X* dlogits, const float* logits, const int* targets, float scale, int V,
                                             int ld) {
  const float* x = logits + (size_t)blockIdx.x * ld;
  X* d = dlogits + (size_t)blockIdx.x * ld;
  float mx = -INFINITY;
  for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, x[v]);
  mx = block_max(mx);
  float s = 0;
  for (int v = threadIdx.x; v < V; v += blockDim.x) s += expf(x[v] - mx);
  s = block_sum(s);
  int target = targets[blockIdx.x];
  for (int v = threadIdx.x; v < V; v += blockDim.x) st(d + v, scale * (expf(x[v] - mx) / s - (v == target)));
}

static void crossentropy_forward(CudaCtx& ctx, float* losses, const float* logits, const int* targets, int rows, int V,
                                 int ld = 0) {  // losses (rows) =; rows of logits ld apart (0: V)
  if (rows == 0) return;
  launchKernel(crossentropy_forward_kernel, rows, kThreads, 0, ctx.stream, losses, logits, targets, V, ld ? ld : V);
}

// dlogits = scale * (softmax(logits) - onehot(target)).
template <class X>
static void crossentropy_backward(CudaCtx& ctx, X* dlogits, const float* logits, const int* targets, float scale,
                                  int rows, int V, int ld = 0) {
  if (rows == 0) return;
  launchKernel(crossentropy_backward_kernel, rows, kThreads, 0, ctx.stream, dlogits, logits, targets, scale, V,
               ld ? ld : V);
}
#endif

// One row per block: the logits read once (the row stays in cache for the
// second and third passes).
static OpCost crossentropy_forward_cost(size_t rows, size_t V) {
  return {{"cross-entropy", 3.0 * rows * V, false, 4.0 * rows * V + 8.0 * rows}};
}
static OpCost crossentropy_backward_cost(size_t rows, size_t V, size_t sx) {
  return {{"cross-entropy", 4.0 * rows * V, false, (double)rows * V * (4 + sx) + 4.0 * rows}};
}

// ---------------------------------------------------------------------------
// Pooler input: the mean of the final hidden states over the example's tokens
// ---------------------------------------------------------------------------

// The example's length: one past its last token that is not [PAD]. This is
// the tokenizer's attention mask ([CLS] ... the last [SEP]; the padding all
// follows it), so a literal "[PAD]" inside a text, which the tokenizer turns
// into the [PAD] id, is a token of the example like any other.
BIGS_HD static inline int example_length(const int* ids, int pad_id, int T) {  // ids (T)
  int n = T;
  while (n > 0 && ids[n - 1] == pad_id) n--;
  return n;
}

template <class F>
void meanpool_forward_cpu(F* out, const F* inp, const int* ids, int pad_id, int B, int T,
                          int H) {  // out (B, H) =
#pragma omp parallel for
  for (int b = 0; b < B; b++) {
    F* o = out + (size_t)b * H;
    for (int h = 0; h < H; h++) o[h] = 0;
    const int n = example_length(ids + (size_t)b * T, pad_id, T);
    for (int t = 0; t < n; t++) {
      const F* x = inp + ((size_t)b * T + t) * H;
      for (int h = 0; h < H; h++) o[h] += x[h];
    }
    for (int h = 0; h < H; h++) o[h] /= (F)std::max(n, 1);  // all-padding rows pool to 0
  }
}

// dinp +=.
template <class F>
void meanpool_backward_cpu(F* dinp, const F* dout, const int* ids, int pad_id, int B, int T, int H) {
#pragma omp parallel for
  for (int b = 0; b < B; b++) {
    const int n = example_length(ids + (size_t)b * T, pad_id, T);
    F inv = (F)1 / (F)std::max(n, 1);
    for (int t = 0; t < n; t++) {
      F* dx = dinp + ((size_t)b * T + t) * H;
      for (int h = 0; h < H; h++) dx[h] += dout[(size_t)b * H + h] * inv;
    }
  }
}

#ifdef BIGS_CUDA
// One thread per (b, h) walking t in order, as the CPU sums.
template <class TO, class TI>
__global__ void meanpool_forward_kernel(TO* out, const TI* inp, const int* ids, int pad_id, int B, int T, int H) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= (size_t)B * H) return;
  int b = (int)(i / H), h = (int)(i % H), n = example_length(ids + (size_t)b * T, pad_id, T);
  float s = 0;
  for (int t = 0; t < n; t++) s += ld(inp[((size_t)b * T + t) * H + h]);
  st(out + i, s / (float)max(n, 1));
}

__global__ void meanpool_backward_kernel(float* dinp, const float* dout, const int* ids, int pad_id, int B, int T,
                                         int H) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= (size_t)B * H) return;
  int b = (int)(i / H), h = (int)(i % H), n = example_length(ids + (size_t)b * T, pad_id, T);
  float d = dout[i] * (1.0f / (float)max(n, 1));
  for (int t = 0; t < n; t++) dinp[((size_t)b * T + t) * H + h] += d;
}

template <class TO, class TI>
static void meanpool_forward(CudaCtx& ctx, TO* out, const TI* inp, const int* ids, int pad_id, int B, int T,
                             int H) {  // out (B, H) =
  launchKernel(meanpool_forward_kernel, grid_for((size_t)B * H), kThreads, 0, ctx.stream, out, inp, ids, pad_id, B, T,
               H);
}

// dinp +=.
static void meanpool_backward(CudaCtx& ctx, float* dinp, const float* dout, const int* ids, int pad_id, int B, int T,
                              int H) {
  launchKernel(meanpool_backward_kernel, grid_for((size_t)B * H), kThreads, 0, ctx.stream, dinp, dout, ids, pad_id, B,
               T, H);
}
#endif

static OpCost meanpool_forward_cost(size_t B, size_t T, size_t H, size_t si, size_t so) {
  return {{"mean pool", (double)B * T * H, false, (double)B * T * H * si + 4.0 * B * T + (double)B * H * so}};
}
static OpCost meanpool_backward_cost(size_t B, size_t T, size_t H) {
  return {{"mean pool", (double)B * T * H, false, 4.0 * B * H + 4.0 * B * T + 8.0 * B * T * H}};
}


// ---------------------------------------------------------------------------
// AdamW, and the gradient's sums of squares (the norm) and scaling (clipping)
// ---------------------------------------------------------------------------
// The optimizer's arithmetic, like a layer's: the CPU's loops, the CUDA
// kernels, the cost formulas. The step that uses them is in Optimizer.

struct AdamW {
  double beta1 = 0.9, beta2 = 0.98, eps = 1e-6, weight_decay = 0.05;  // docs/MODEL.md section 12, pretraining
};

// One AdamW step on n parameters (step counts from 1), decoupled weight decay
// (Loshchilov & Hutter): p -= lr (mhat / (sqrt(vhat) + eps) + wd p).
static void adamw_update_cpu(float* p, const float* g, float* m, float* v, size_t n, float lr, const AdamW& o, float wd,
                             long long step) {
  float b1 = (float)o.beta1, b2 = (float)o.beta2, eps = (float)o.eps;
  float c1 = 1.0f - powf(b1, (float)step), c2 = 1.0f - powf(b2, (float)step);  // bias corrections
#pragma omp parallel for
  for (size_t i = 0; i < n; i++) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    p[i] -= lr * ((m[i] / c1) / (sqrtf(v[i] / c2) + eps) + wd * p[i]);
  }
}

#ifdef BIGS_CUDA
// The CPU's expressions; the bias corrections come from the host, computed
// with the CPU's powf, so both paths use the same constants. One launch
// covers the whole parameter block: each element finds its tensor's decay
// flag by binary search in seg (offset << 1 | decay, ascending; nseg = 0:
// decay wd everywhere). With p16 the bf16 copy of the weights is rewritten
// in the same pass. Element i is element base + i of the parameter block (a
// rank's shard starts at base).
__global__ void adamw_kernel(float* p, bf16* p16, const float* g, float* m, float* v, size_t n, float lr, float b1,
                             float b2, float eps, float wd, float c1, float c2, const uint64_t* seg, int nseg,
                             size_t base) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i >= n) return;
  float decay = wd;
  if (nseg > 0) {
    int lo = 0, hi = nseg - 1;  // the last segment starting at or before base + i
    while (lo < hi) {
      int mid = (lo + hi + 1) / 2;
      if ((seg[mid] >> 1) <= base + i)
        lo = mid;
      else
        hi = mid - 1;
    }
    decay = (seg[lo] & 1) ? wd : 0.0f;
  }
  m[i] = b1 * m[i] + (1.0f - b1) * g[i];
  v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
  p[i] -= lr * ((m[i] / c1) / (sqrtf(v[i] / c2) + eps) + decay * p[i]);
  if (p16) p16[i] = __float2bfloat16(p[i]);
}

// One AdamW step on n parameters with decay wd (and the tensor table seg,
// when given, deciding per element whether it applies; p is element base of
// the block seg describes).
static void adamw_update(CudaCtx& ctx, float* p, const float* g, float* m, float* v, size_t n, float lr, const AdamW& o,
                         float wd, long long step, bf16* p16 = nullptr, const uint64_t* seg = nullptr, int nseg = 0,
                         size_t base = 0) {
  if (n == 0) return;
  float b1 = (float)o.beta1, b2 = (float)o.beta2, eps = (float)o.eps;
  float c1 = 1.0f - powf(b1, (float)step), c2 = 1.0f - powf(b2, (float)step);
  launchKernel(adamw_kernel, grid_for(n), kThreads, 0, ctx.stream, p, p16, g, m, v, n, lr, b1, b2, eps, wd, c1, c2, seg,
               nseg, base);
}

__global__ void scale_kernel(float* x, float s, size_t n) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < n) x[i] *= s;
}
#endif

// The optimizer's launches, for the cost device: zeroing the gradient; its
// norm (read once, two stages, the total copied to the host); the fused
// AdamW, which reads weights, gradients and both moments and writes three
// of them back, plus the bf16 copy.
constexpr const char* kOptimizerOp = "zero grad, grad norm, AdamW";
static OpCost zero_grad_cost(size_t n) { return {{kOptimizerOp, 0, false, 4.0 * n}}; }
static OpCost grad_norm_cost(size_t n) {
  return {{kOptimizerOp, 2.0 * n, false, 4.0 * n + 8.0 * kRedBlocks},
          {kOptimizerOp, kRedBlocks, false, 8.0 * kRedBlocks},
          {kOptimizerOp, 0, false, 8}};
}
static OpCost adamw_cost(size_t n, bool bf16_copy) {
  return {{kOptimizerOp, 15.0 * n, false, 28.0 * n + (bf16_copy ? 2.0 * n : 0.0)}};
}

// The gradient norm's sums of squares go in chunks of kNormChunk elements,
// added in order, so the norm is the same bits however the block is cut
// into shards (a shard is a whole number of chunks: Shards).
constexpr size_t kNormChunk = 1 << 16;

// part[c] = the sum of squares of g over chunk c, [c, c + 1) x kNormChunk cut
// to [lo, hi), for every chunk of [lo, hi) (lo a multiple of kNormChunk, or
// lo = hi: an empty shard has none).
static void square_sums(const float* g, size_t lo, size_t hi, double* part) {
  if (lo >= hi) return;
  const size_t c0 = lo / kNormChunk, c1 = (hi + kNormChunk - 1) / kNormChunk;
#pragma omp parallel for
  for (size_t c = c0; c < c1; c++) {
    double s = 0;
    for (size_t i = c * kNormChunk; i < std::min(hi, (c + 1) * kNormChunk); i++) s += (double)g[i] * g[i];
    part[c] = s;
  }
}

#include "bigsc/cpu_fast.h"
#include "bigsc/world.h"

// ============================================================================
// Devices
// ============================================================================

// ---------------------------------------------------------------------------
// Cpu: fp32. The dense products, GELU-tanh, the SSM and its kernel and the
// MLM cross-entropy run the fast CPU paths (each tested against its plain
// reference, which the other operations use directly). Its activation block
// is the host's (Model::a), so moving results to and from the host is
// nothing.
// ---------------------------------------------------------------------------

struct Cpu {
  using A = float;  // activations
  using W = float;  // the weights the dense layers read: the parameters themselves
  Acts& a;
  const Params &p, &w, &g;

  void upload_batch(const Batch&) {}  // read where they are
  void upload_rows(const int*, const int*, int) {}
  const int* ids(const Batch& bt) const { return bt.ids; }
  const int* types(const Batch& bt) const { return bt.types; }
  const int* rows(const Model& m) const { return m.a.rows; }
  const int* row_target(const Model& m) const { return m.a.row_target; }
  void to_host(float*, const float*, size_t) {}    // the same memory
  void to_device(float*, const float*, size_t) {}  // the same memory
  void logits_to_host(float*, const float*, int, int, int) {}
  double sum_to_host(float*, const float* x, int n) {  // sum of x[0 .. n), in order
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    return s;
  }
  int logit_ld(const Config& c) const { return c.V; }  // the CPU's logits rows are dense
  template <class X>
  void zero(X* x, size_t n) {
    std::fill(x, x + n, X(0));
  }
  const float* as_operand(float*, const float* x, size_t) { return x; }

  void embedding_forward(float* out, const int* ids, const int* types, const float* wte, const float* wpe,
                         const float* wtt, int B, int T, int H) {
    embedding_forward_cpu(out, ids, types, wte, wpe, wtt, B, T, H);
  }
  void embedding_backward(float* dwte, float* dwpe, float* dwtt, const float* dout, const int* ids, const int* types,
                          int B, int T, int H) {
    embedding_backward_cpu(dwte, dwpe, dwtt, dout, ids, types, B, T, H);
  }
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                         int rows, int C) {
    layernorm_forward_cpu(out, mean, rstd, inp, w, b, rows, C);
  }
  void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                          const float* mean, const float* rstd, int rows, int C, Acc acc = Acc::Add) {
    if (acc == Acc::Set) zero(dinp, (size_t)rows * C);  // the reference only adds
    layernorm_backward_cpu(dinp, dw, db, dout, inp, w, mean, rstd, rows, C);
  }
  void dense_forward(float* out, const float* inp, const float* w, const float* b, int rows, int in, int out_dim,
                     int = 0) {
    dense_forward_fast(out, inp, w, b, rows, in, out_dim);
  }
  void dense_gelu_forward(float* out, float* pre, const float* inp, const float* w, const float* b, int rows, int in,
                          int out_dim) {
    dense_forward_fast(pre, inp, w, b, rows, in, out_dim);
    activation_forward_fast(out, pre, (size_t)rows * out_dim, Act::GeluTanh);
  }
  void dense_residual_forward(float* out, const float* inp, const float* w, const float* b, const float* res,
                              int rows, int in, int out_dim) {
    dense_forward_fast(out, inp, w, b, rows, in, out_dim);
#pragma omp parallel for
    for (size_t i = 0; i < (size_t)rows * out_dim; i++) out[i] += res[i];
  }
  void dense_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                      int rows, int in, int out_dim, Acc acc = Acc::Add, int = 0) {
    if (dinp && acc == Acc::Set) zero(dinp, (size_t)rows * in);  // the product only adds
    dense_backward_fast(dinp, dw, db, dout, inp, w, rows, in, out_dim);
  }
  void activation_forward(float* out, const float* inp, size_t n, Act act) {
    activation_forward_fast(out, inp, n, act);
  }
  void activation_backward(float* dinp, const float* dout, const float* inp, size_t n, Act act) {
    activation_backward_fast(dinp, dout, inp, n, act);
  }
  void gate_forward(float* out, const float* a, const float* b, size_t n) { gate_forward_cpu(out, a, b, n); }
  void gate_backward(float* da, float* db, const float* dout, const float* a, const float* b, size_t n) {
    gate_backward_cpu(da, db, dout, a, b, n);
  }
  void gate_gelu_backward(float* dg, float* dv, const float* dgv, const float* g, const float* v, const float* g_pre,
                          const float* v_pre, size_t n) {
    gate_backward_cpu(dg, dv, dgv, g, v, n);
    activation_backward(dg, dg, g_pre, n, Act::GeluTanh);
    activation_backward(dv, dv, v_pre, n, Act::GeluTanh);
  }
  void s4d_kernel_forward(float* K, const Ssm& s, int N, int T) {
    s4d_kernel_forward_fast(K, s.a_re, s.a_im, s.c, *s.log_step, N, T);
  }
  void s4d_kernel_backward(const Ssm& ds, const float* dK, const Ssm& s, int N, int T) {
    s4d_kernel_backward_fast(ds.a_re, ds.a_im, ds.c, ds.log_step, dK, s.a_re, s.a_im, s.c, *s.log_step, N, T);
  }
  void ssm_conv_forward(float* out, const float* inp, const float* K, const float* D, int B, int T, int H,
                        bool anticausal) {
    ssm_conv_forward_fast(out, inp, K, *D, B, T, H, anticausal);
  }
  void ssm_conv_backward(float* dinp, float* dK, float* dD, const float* dout, const float* inp, const float* K,
                         const float* D, int B, int T, int H, bool anticausal) {
    ssm_conv_backward_fast(dinp, dK, dD, dout, inp, K, *D, B, T, H, anticausal);
  }
  void dropout_forward(float* out, const float* inp, size_t n, float prob, uint64_t seed, uint64_t stream) {
    dropout_forward_cpu(out, inp, n, prob, seed, stream);
  }
  void dropout_backward(float* dinp, const float* dout, size_t n, float prob, uint64_t seed, uint64_t stream) {
    dropout_backward_cpu(dinp, dout, n, prob, seed, stream);
  }
  void crossentropy_forward(float* losses, const float* logits, const int* targets, int rows, int V, int) {
    crossentropy_forward_fast(losses, logits, targets, rows, V);
  }
  void crossentropy_backward(float* dlogits, const float* logits, const int* targets, float scale, int rows, int V,
                             int) {
    crossentropy_backward_fast(dlogits, logits, targets, scale, rows, V);
  }
  void meanpool_forward(float* out, const float* inp, const int* ids, int pad_id, int B, int T, int H) {
    meanpool_forward_cpu(out, inp, ids, pad_id, B, T, H);
  }
  void meanpool_backward(float* dinp, const float* dout, const int* ids, int pad_id, int B, int T, int H) {
    meanpool_backward_cpu(dinp, dout, ids, pad_id, B, T, H);
  }
  // out (P, H) = rows[r] of x; and dres += dhead scattered back (the rows are
  // distinct positions).
  void gather_rows(float* out, const float* x, const int* r, int P, int H) {
    for (int i = 0; i < P; i++) std::copy_n(x + (size_t)r[i] * H, H, out + (size_t)i * H);
  }
  void scatter_rows(float* dres, const float* dhead, const int* r, int P, int H) {
    for (int i = 0; i < P; i++)
      for (int h = 0; h < H; h++) dres[(size_t)r[i] * H + h] += dhead[(size_t)i * H + h];
  }

  // Whole-block operations: the optimizer and the data-parallel exchange see
  // the parameter and gradient blocks as flat arrays of block_size() floats
  // (the host's packed layout, Model::table), [lo, hi) a rank's shard.
  Model& m;
  static constexpr size_t kBlockAlign = 1;
  static constexpr const char* kWhere = "host";  // where the blocks are, in a command's words
  size_t block_size() const { return m.num_params; }
  void zero_grads() { std::fill(m.grads_mem.begin(), m.grads_mem.end(), 0.0f); }
  // The sums of squares of the gradient's chunks (kNormChunk elements each,
  // by chunk index) that lie in [lo, hi); the caller adds them in order.
  std::vector<double> grad_square_sums(size_t lo, size_t hi, int, int) {
    std::vector<double> part((m.num_params + kNormChunk - 1) / kNormChunk, 0.0);
    square_sums(m.grads_mem.data(), lo, hi, part.data());
    return part;
  }
  void scale_grads(size_t lo, size_t hi, float s) {
    float* g = m.grads_mem.data();
#pragma omp parallel for
    for (size_t i = lo; i < hi; i++) g[i] *= s;
  }
  // The decay mask of docs/MODEL.md section 12 lives in the parameter table:
  // biases and LayerNorm parameters have decay = 0.
  void adamw(float lr, const AdamW& o, long long step, size_t lo, size_t hi, std::vector<float>& mom1,
             std::vector<float>& mom2) {
    for (const TensorInfo& t : m.table) {
      const size_t a = std::max(lo, t.offset), b = std::min(hi, t.offset + t.count);
      if (a < b)
        adamw_update_cpu(m.params_mem.data() + a, m.grads_mem.data() + a, mom1.data() + a, mom2.data() + a, b - a, lr,
                         o, t.decay ? (float)o.weight_decay : 0.0f, step);
    }
  }
  // The data-parallel step (bigsc/world.h) over the host's blocks, through MPI.
  bool dp_init(DataParallel* dp, std::string*) {
    host_exchange_init(dp);
    return true;
  }
  void dp_zero(DataParallel& dp) { std::fill(dp.gsum.begin(), dp.gsum.end(), 0.0f); }
  void dp_add_own(DataParallel& dp) {  // a world of one that sums its micro-batches: gsum += the gradient
    const size_t n = dp.hi() - dp.lo();
    float* s = dp.gsum.data();
    const float* g = m.grads_mem.data();
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) s[i] += g[i];
  }
  void dp_send(DataParallel& dp, int b) { host_exchange_bucket(dp, m.grads_mem.data(), b); }
  void dp_wait(DataParallel& dp) { host_exchange_wait(dp); }
  void dp_to_grads(DataParallel& dp) { std::copy_n(dp.gsum.data(), dp.hi() - dp.lo(), m.grads_mem.data() + dp.lo()); }
  void dp_share_params(DataParallel& dp) { host_all_gather(dp, m.params_mem.data()); }
  void dp_share_moments(DataParallel& dp, std::vector<float>& mom1, std::vector<float>& mom2) {
    host_all_gather(dp, mom1.data());
    host_all_gather(dp, mom2.data());
  }
};

// ---------------------------------------------------------------------------
// The GPU's memory plan: what model_to_device allocates, computed on the
// host (it needs no GPU), so that start-up can print it and `bigs bench
// --plan` can say which batch fits before anything is allocated.
// ---------------------------------------------------------------------------

constexpr size_t kDevAlign = 128;  // elements: every device tensor starts 512 (fp32) or 256 (bf16) bytes aligned
constexpr size_t kActAlign = 256;  // bytes: every activation tensor starts aligned so
constexpr size_t kGpuWorkspace = 32u << 20;  // cuBLASLt's workspace (its recommendation for Hopper)

struct GpuPlan {
  size_t params = 0;     // fp32 master weights, their gradients and the two AdamW moments
  size_t weights16 = 0;  // the bf16 copy of the weights (bf16 mode)
  size_t acts = 0;       // the activation block
  size_t ssm =
      0;  // the SSM convolution's scratch: Toeplitz matrix and Gx, or FFT signals, spectra and cuFFT's work area
  size_t other = 0;      // cuBLASLt workspace, reduction scratch, batch indices
  size_t total() const { return params + weights16 + acts + ssm + other; }
};

// The context's scratch, sized once by model_to_device for a full batch: the
// column-sum partials (the widest sum: V, I, H columns or nf frequencies,
// two outputs each) in floats, and the embedding backward's index lists
// (two groupings of the B T positions: order, start, dest) in ints.
static size_t colsum_capacity(const Config& c) {
  size_t nf = (size_t)fft_size(c.T) / 2 + 1;
  return (size_t)kColChunks * 2 * std::max({(size_t)c.V, (size_t)c.I, (size_t)c.H, nf});
}
static size_t idx_capacity(size_t BT) { return 6 * BT + 4; }

// cuFFT's work area for the batched plans, as the plan estimates it: one
// more set of spectra (model_to_device reports the size cuFFT asked for).
static size_t fft_work_estimate(const Config& c, int B) {
  return (size_t)B * c.H * ((size_t)fft_size(c.T) / 2 + 1) * 8;
}

static GpuPlan gpu_plan(const Config& c, int B, int R, Precision prec) {
  GpuPlan p;
  size_t n = table_total(param_table(c, kDevAlign)), H = c.H, BT = (size_t)B * c.T;
  p.params = 4 * n * sizeof(float);
  p.weights16 = prec == Precision::Bf16 ? n * 2 : 0;
  // Only the element size matters to the layout: any 2-byte type sizes the bf16 block.
  p.acts = prec == Precision::Bf16 ? layout_acts<uint16_t>(nullptr, nullptr, c, B, R, kActAlign)
                                   : layout_acts<float>(nullptr, nullptr, c, B, R, kActAlign);
  size_t nfft = (size_t)fft_size(c.T), nf = nfft / 2 + 1, elem = prec == Precision::Bf16 ? 2 : 4;
  if (gpu_toeplitz_route(elem, c.T)) {  // the matrix, one group's Gx, the lag partials
    ToeplitzScratch t = toeplitz_scratch(elem, B, c.T);
    p.ssm = t.matrix_bytes + (t.gram_floats + t.part_floats) * 4;
  } else {  // fft_real, fft_spec, fft_spec2, fft_k and the work area
    p.ssm = (size_t)B * H * nfft * 4 + 2 * (size_t)B * H * nf * 8 + nf * 8 + fft_work_estimate(c, B);
  }
  // Plus the batch's ids and types (2 BT ints) and MLM rows and targets (2 R).
  p.other = kGpuWorkspace + (1 << 16) * 8 + colsum_capacity(c) * 4 + (idx_capacity(BT) + 2 * BT + 2 * (size_t)R) * 4;
  return p;
}

// The largest batch (up to kMaxGpuBatch) whose plan fits in 95% of `bytes`; 0
// if none. The 5% is left for what the plan cannot see: the CUDA context,
// cuFFT's work areas beyond the estimate, the allocator's rounding.
constexpr double kPlanShare = 0.95;
constexpr int kMaxGpuBatch = 65535;  // the FFT copies put b in grid z, which CUDA limits to 65535
static int gpu_max_batch(const Config& c, int per_seq, Precision prec, double bytes) {
  int lo = 0, hi = kMaxGpuBatch;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if ((double)gpu_plan(c, mid, mid * per_seq, prec).total() <= kPlanShare * bytes)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

static void print_gpu_plan(const GpuPlan& p, Precision prec, int B, int T) {
  auto gb = [](size_t x) { return x / 1e9; };
  printf(
      "GPU memory plan (%s, batch %d, T %d): %.2f GB = parameters, gradients and AdamW moments %.2f + bf16 "
      "weights %.2f + activations %.2f + SSM scratch %.2f + workspace and scratch %.2f\n",
      precision_name(prec), B, T, gb(p.total()), gb(p.params), gb(p.weights16), gb(p.acts), gb(p.ssm), gb(p.other));
}

// Copies between the host and a device, as the cost device counts them:
// one call, the bytes moved.
static OpCost copy_cost(size_t bytes) { return {{"host copies", 0, false, (double)bytes}}; }
// cudaMemsetAsync of n elements of s bytes.
static OpCost memset_cost(size_t n, size_t s) { return {{"memset", 0, false, (double)(n * s)}}; }
// The MLM head's gather of P rows (reads them, writes them) and the
// scatter of their gradient back (+= into dres).
static OpCost gather_rows_cost(size_t P, size_t H, size_t si, size_t so) {
  return {{"MLM rows gather/scatter", 0, false, (double)(P * H * (si + so) + P * 4)}};
}
static OpCost scatter_rows_cost(size_t P, size_t H) {
  return {{"MLM rows gather/scatter", (double)(P * H), false, (double)(P * H * 12 + P * 4)}};
}

#ifdef BIGS_CUDA
// ---------------------------------------------------------------------------
// The model on the GPU: the same tables, one device allocation per block.
// The parameter blocks use the aligned device layout (param_table(c,
// kDevAlign)); copies to and from the host's packed blocks go tensor by
// tensor.
// ---------------------------------------------------------------------------

struct GpuModel {
  CudaCtx ctx;
  Config c;
  Precision prec = Precision::Fp32;
  std::vector<TensorInfo> table;  // the device layout
  size_t n = 0;                   // elements per parameter block, padding included (zeros)
  float* params = nullptr;        // (n) fp32 master weights
  float* grads = nullptr;         // (n)
  float* mom1 = nullptr;          // (n) AdamW's first moment
  float* mom2 = nullptr;          // (n) AdamW's second moment
  bf16* params16 = nullptr;       // (n) bf16 mode: the weights the dense layers read, rewritten by each AdamW step
  uint64_t* segments = nullptr;   // (tensors) offset << 1 | decay: the fused AdamW's decay mask
  GpuExchange x;                  // the data-parallel exchange's buffers, stream and events (bigsc/world.h)
  char* acts = nullptr;           // the activation block
  int* ids = nullptr;             // (B, T) the batch, copied in by each forward
  int* types = nullptr;           // (B, T)
  int* rows = nullptr;            // (R) copied from Model::a.rows
  int* row_target = nullptr;      // (R)
  Params p, g;                    // device pointers into params and grads
  ParamsT<bf16> p16;              // ... into params16
  Acts a;                         // the activation block in fp32 and tf32 modes
  ActsT<bf16> a16;                // ... in bf16 mode
};

// A destructor must not throw: a failure while freeing is reported instead.
static void gpu_model_delete(GpuModel* g) {
  try {
    gpu_exchange_drain(g->x, g->ctx.stream);  // a NCCL kernel whose peer is gone would spin forever
    for (void* p : {(void*)g->params, (void*)g->grads, (void*)g->mom1, (void*)g->mom2, (void*)g->params16,
                    (void*)g->segments, (void*)g->acts, (void*)g->ids, (void*)g->types, (void*)g->rows,
                    (void*)g->row_target})
      cudaCheck(cudaFree(p));
    gpu_exchange_free(&g->x);
    cuda_ctx_destroy(&g->ctx);
  } catch (const CudaError& e) {
    fprintf(stderr, "bigs: while freeing the GPU model: %s\n", e.what());
  }
  delete g;
}

// Host packed layout <-> device aligned layout, one tensor at a time.
static std::vector<float> to_device_layout(const Model& m, const GpuModel& g, const float* host) {
  std::vector<float> d(g.n, 0.0f);
  for (size_t i = 0; i < m.table.size(); i++)
    std::copy_n(host + m.table[i].offset, m.table[i].count, d.data() + g.table[i].offset);
  return d;
}
static void from_device_layout(const Model& m, const GpuModel& g, const std::vector<float>& d, float* host) {
  for (size_t i = 0; i < m.table.size(); i++)
    std::copy_n(d.data() + g.table[i].offset, m.table[i].count, host + m.table[i].offset);
}
static std::vector<float> fetch_block(GpuModel& g, const float* dev) {
  std::vector<float> d(g.n);
  cudaCheck(cudaStreamSynchronize(g.ctx.stream));
  cudaCheck(cudaMemcpy(d.data(), dev, g.n * sizeof(float), cudaMemcpyDeviceToHost));
  return d;
}

// The host-side results of a model on the GPU: the host = 1 rows of the
// activation tables, fp32, packed (see Model::a).
static void host_results_alloc(Model& m) {
  size_t bytes = layout_acts<float>(nullptr, nullptr, m.c, m.B, m.R, sizeof(float), true);
  m.acts_mem.assign(bytes / sizeof(float), 0.0f);
  Acts a{};
  layout_acts(&a, (char*)m.acts_mem.data(), m.c, m.B, m.R, sizeof(float), true);
  a.rows = m.a.rows, a.row_target = m.a.row_target;
  m.a = a;
}

// Moves a built model to the GPU in m->precision: parameters (and the
// AdamW moments, when given) are copied in, gradients and activations
// zeroed. Everything a step needs is allocated here, once: the cuFFT plans
// and their work area are made for the full batch (a plan for more signals
// serves fewer), so device memory does not grow after start-up.
static bool model_to_device(Model* m, const std::vector<float>* mom1, const std::vector<float>* mom2,
                            std::string* err) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    *err = strf("no CUDA device (%s); use --device cpu", e != cudaSuccess ? cudaGetErrorString(e) : "count is 0");
    return false;
  }
#ifdef BIGS_NCCL
  if (world_gpu >= 0 && (e = cudaSetDevice(world_gpu % count)) != cudaSuccess) {
    *err =
        strf("taking GPU %d of %d for local rank %d: %s", world_gpu % count, count, world_gpu, cudaGetErrorString(e));
    return false;
  }
#endif
  const Config& c = m->c;
  if (m->precision == Precision::Bf16 && (c.H % 8 || c.I % 8)) {
    *err = strf(
        "--precision bf16 needs H and I to be multiples of 8 (cuBLASLt's bf16 kernels want 16-byte aligned "
        "rows); this config has H %d and I %d: use --precision fp32",
        c.H, c.I);
    return false;
  }
  if (m->B > kMaxGpuBatch) {
    *err = strf("a batch of %d sequences is more than the GPU path's %d", m->B, kMaxGpuBatch);
    return false;
  }
  GpuPlan plan = gpu_plan(c, m->B, m->R, m->precision);
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess && plan.total() > free_bytes) {
    *err = strf(
        "the model needs %.2f GB on the GPU for batch %d at T = %d (%s), and %.2f GB are free; lower "
        "--micro-batch (bigs bench --plan shows what fits)",
        plan.total() / 1e9, m->B, c.T, precision_name(m->precision), free_bytes / 1e9);
    return false;
  }
  try {
    std::shared_ptr<GpuModel> g(new GpuModel, gpu_model_delete);
    g->c = c;
    g->prec = m->precision;
    g->table = param_table(c, kDevAlign);
    g->n = table_total(g->table);
    size_t BT = (size_t)m->B * c.T, bytes = g->n * sizeof(float);
    cuda_ctx_create(&g->ctx);
    if (g->prec == Precision::Tf32) g->ctx.compute = CUBLAS_COMPUTE_32F_FAST_TF32;
    for (float** x : {&g->params, &g->grads, &g->mom1, &g->mom2}) cudaCheck(cudaMalloc(x, bytes));
    cudaCheck(
        cudaMemcpy(g->params, to_device_layout(*m, *g, m->params_mem.data()).data(), bytes, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemset(g->grads, 0, bytes));
    if (mom1 && mom2 && mom1->size() == m->num_params && mom2->size() == m->num_params) {
      cudaCheck(cudaMemcpy(g->mom1, to_device_layout(*m, *g, mom1->data()).data(), bytes, cudaMemcpyHostToDevice));
      cudaCheck(cudaMemcpy(g->mom2, to_device_layout(*m, *g, mom2->data()).data(), bytes, cudaMemcpyHostToDevice));
    } else {
      cudaCheck(cudaMemset(g->mom1, 0, bytes));
      cudaCheck(cudaMemset(g->mom2, 0, bytes));
    }
    std::vector<uint64_t> seg;
    for (const TensorInfo& t : g->table) seg.push_back((uint64_t)t.offset << 1 | (t.decay ? 1 : 0));
    cudaCheck(cudaMalloc(&g->segments, seg.size() * sizeof(uint64_t)));
    cudaCheck(cudaMemcpy(g->segments, seg.data(), seg.size() * sizeof(uint64_t), cudaMemcpyHostToDevice));
    point_params(&g->p, g->params, c, kDevAlign);
    point_params(&g->g, g->grads, c, kDevAlign);
    if (g->prec == Precision::Bf16) {
      cudaCheck(cudaMalloc(&g->params16, g->n * sizeof(bf16)));
      launchKernel(cast_kernel, grid_for(g->n), kThreads, 0, g->ctx.stream, g->params16, g->params, g->n);
      point_params(&g->p16, g->params16, c, kDevAlign);
    }
    // Zeroed so that no kernel ever reads uninitialised memory, even padding
    // rows of a short batch.
    cudaCheck(cudaMalloc(&g->acts, plan.acts));
    cudaCheck(cudaMemset(g->acts, 0, plan.acts));
    if (g->prec == Precision::Bf16)
      layout_acts(&g->a16, g->acts, c, m->B, m->R, kActAlign);
    else
      layout_acts(&g->a, g->acts, c, m->B, m->R, kActAlign);
    cudaCheck(cudaMalloc(&g->ids, BT * sizeof(int)));
    cudaCheck(cudaMalloc(&g->types, BT * sizeof(int)));
    cudaCheck(cudaMalloc(&g->rows, (size_t)m->R * sizeof(int)));
    cudaCheck(cudaMalloc(&g->row_target, (size_t)m->R * sizeof(int)));
    // The SSM route's scratch (and FFT plans) and every other buffer of a
    // full batch now, not inside step 1.
    size_t elem = g->prec == Precision::Bf16 ? 2 : 4;
    if (gpu_toeplitz_route(elem, c.T)) {
      ToeplitzScratch t = toeplitz_scratch(elem, m->B, c.T);
      scratch_reserve(g->ctx, &g->ctx.toep, &g->ctx.toep_cap, t.matrix_bytes);
      scratch_reserve(g->ctx, &g->ctx.gram, &g->ctx.gram_cap, t.gram_floats);
      scratch_reserve(g->ctx, &g->ctx.lagpart, &g->ctx.lagpart_cap, t.part_floats);
    } else {
      int n = fft_size(c.T);
      fft_reserve(g->ctx, (size_t)m->B * c.H, n);
      fft_plan(g->ctx, n, 1);
      fft_plan(g->ctx, n, m->B * c.H);
    }
    scratch_reserve(g->ctx, &g->ctx.colsum, &g->ctx.colsum_cap, colsum_capacity(c));
    scratch_reserve(g->ctx, &g->ctx.idx, &g->ctx.idx_cap, idx_capacity(BT));
    cudaCheck(cudaStreamSynchronize(g->ctx.stream));
    host_results_alloc(*m);
    m->gpu = g;
  } catch (const CudaError& ex) {
    *err = strf("moving the model to the GPU: %s", ex.what());
    return false;
  }
  return true;
}

// Copies the parameters (and the moments, when given) back to the host
// blocks, e.g. before a checkpoint, which is thereby device-independent.
static void model_to_host(Model& m, std::vector<float>* mom1, std::vector<float>* mom2) {
  if (!m.gpu) return;
  GpuModel& g = *m.gpu;
  from_device_layout(m, g, fetch_block(g, g.params), m.params_mem.data());
  if (mom1 && mom2) {
    mom1->resize(m.num_params), mom2->resize(m.num_params);
    from_device_layout(m, g, fetch_block(g, g.mom1), mom1->data());
    from_device_layout(m, g, fetch_block(g, g.mom2), mom2->data());
  }
}

// The gradient block into m.grads_mem (the tests compare it with the CPU's).
inline void model_grads_to_host(Model& m) {
  if (m.gpu) from_device_layout(m, *m.gpu, fetch_block(*m.gpu, m.gpu->grads), m.grads_mem.data());
}

// head_in (P, H) = the final states of the predicted rows.
template <class TO, class TI>
__global__ void gather_rows_kernel(TO* out, const TI* x, const int* rows, int P, int H) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < (size_t)P * H) st(out + i, ld(x[(size_t)rows[i / H] * H + i % H]));
}

// dres += dhead scattered back; the rows are distinct positions, so no two
// threads write one address.
__global__ void scatter_rows_kernel(float* dres, const float* dhead, const int* rows, int P, int H) {
  size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  if (i < (size_t)P * H) dres[(size_t)rows[i / H] * H + i % H] += dhead[i];
}

template <class X>
static void zero_async(CudaCtx& ctx, X* x, size_t n) {
  cudaCheck(cudaMemsetAsync(x, 0, n * sizeof(X), ctx.stream));
}

// ---------------------------------------------------------------------------
// Gpu<S>: the CUDA launchers, activations stored as S (float, or bf16 in the
// bf16 mode). upload_* copy the batch and the MLM rows in; to_host and
// sum_to_host bring results back and wait for the stream. D and log_step
// are read by the kernels from the parameter block, so nothing else waits.
// ---------------------------------------------------------------------------

template <class S>
struct Gpu {
  using A = S;
  using W = S;
  GpuModel& gm;
  CudaCtx& ctx;
  ActsT<S>& a;
  const Params& p;
  const ParamsT<S>& w;
  const Params& g;

  Gpu(GpuModel& m, ActsT<S>& acts, const ParamsT<S>& weights)
      : gm(m), ctx(m.ctx), a(acts), p(m.p), w(weights), g(m.g) {}

  void upload_batch(const Batch& bt) {
    size_t bytes = (size_t)bt.B * gm.c.T * sizeof(int);
    cudaCheck(cudaMemcpyAsync(gm.ids, bt.ids, bytes, cudaMemcpyHostToDevice, ctx.stream));
    cudaCheck(cudaMemcpyAsync(gm.types, bt.types, bytes, cudaMemcpyHostToDevice, ctx.stream));
  }
  void upload_rows(const int* r, const int* t, int P) {
    cudaCheck(cudaMemcpyAsync(gm.rows, r, (size_t)P * sizeof(int), cudaMemcpyHostToDevice, ctx.stream));
    cudaCheck(cudaMemcpyAsync(gm.row_target, t, (size_t)P * sizeof(int), cudaMemcpyHostToDevice, ctx.stream));
  }
  const int* ids(const Batch&) const { return gm.ids; }
  const int* types(const Batch&) const { return gm.types; }
  const int* rows(const Model&) const { return gm.rows; }
  const int* row_target(const Model&) const { return gm.row_target; }
  void to_host(float* host, const float* dev, size_t n) {
    cudaCheck(cudaMemcpyAsync(host, dev, n * sizeof(float), cudaMemcpyDeviceToHost, ctx.stream));
    cudaCheck(cudaStreamSynchronize(ctx.stream));
  }
  void to_device(float* dev, const float* host, size_t n) {
    cudaCheck(cudaMemcpyAsync(dev, host, n * sizeof(float), cudaMemcpyHostToDevice, ctx.stream));
  }
  // Into the host's (P, V), dropping the row padding.
  void logits_to_host(float* host, const float* dev, int P, int V, int ldv) {
    if (P > 0)
      cudaCheck(cudaMemcpy2DAsync(host, (size_t)V * sizeof(float), dev, (size_t)ldv * sizeof(float),
                                  (size_t)V * sizeof(float), P, cudaMemcpyDeviceToHost, ctx.stream));
  }
  double sum_to_host(float* host, const float* dev, int n) {  // summed on the host, in the CPU's order
    to_host(host, dev, (size_t)n);
    double s = 0;
    for (int i = 0; i < n; i++) s += host[i];
    return s;
  }
  int logit_ld(const Config& c) const { return (int)logit_stride(c); }
  template <class X>
  void zero(X* x, size_t n) {
    zero_async(ctx, x, n);
  }
  const S* as_operand(S* tmp, const float* x, size_t n) { return bigs::as_operand(ctx, tmp, x, n); }

  void embedding_forward(float* out, const int* i, const int* t, const float* wte, const float* wpe, const float* wtt,
                         int B, int T, int H) {
    bigs::embedding_forward(ctx, out, i, t, wte, wpe, wtt, B, T, H);
  }
  void embedding_backward(float* dwte, float* dwpe, float* dwtt, const float* dout, const int* host_ids,
                          const int* host_types, int B, int T, int H) {
    bigs::embedding_backward(ctx, dwte, dwpe, dwtt, dout, host_ids, host_types, B, T, H);
  }
  template <class TO, class TI>
  void layernorm_forward(TO* out, float* mean, float* rstd, const TI* inp, const float* lw, const float* lb, int n,
                         int C) {
    bigs::layernorm_forward(ctx, out, mean, rstd, inp, lw, lb, n, C);
  }
  template <class TD, class TO, class TI>
  void layernorm_backward(TD* dinp, float* dw, float* db, const TO* dout, const TI* inp, const float* lw,
                          const float* mean, const float* rstd, int n, int C, Acc acc = Acc::Add) {
    bigs::layernorm_backward(ctx, dinp, dw, db, dout, inp, lw, mean, rstd, n, C, acc);
  }
  template <class TA, class TD>
  void dense_forward(TD* out, const TA* inp, const TA* wt, const TD* b, int n, int in, int out_dim, int ld = 0) {
    bigs::dense_forward(ctx, out, inp, wt, b, n, in, out_dim, nullptr, nullptr, ld);
  }
  template <class TA, class TD>
  void dense_gelu_forward(TD* out, TD* pre, const TA* inp, const TA* wt, const TD* b, int n, int in, int out_dim) {
    bigs::dense_forward(ctx, out, inp, wt, b, n, in, out_dim, pre);
  }
  template <class TA, class TD>
  void dense_residual_forward(TD* out, const TA* inp, const TA* wt, const TD* b, const TD* res, int n, int in,
                              int out_dim) {
    bigs::dense_forward(ctx, out, inp, wt, b, n, in, out_dim, nullptr, res);
  }
  template <class TA, class TI>
  void dense_backward(TI* dinp, float* dw, float* db, const TA* dout, const TA* inp, const TA* wt, int n, int in,
                      int out_dim, Acc acc = Acc::Add, int ld = 0) {
    bigs::dense_backward(ctx, dinp, dw, db, dout, inp, wt, n, in, out_dim, acc, ld);
  }
  template <class TO, class TI>
  void activation_forward(TO* out, const TI* inp, size_t n, Act act) {
    bigs::activation_forward(ctx, out, inp, n, act);
  }
  template <class TD, class TO, class TI>
  void activation_backward(TD* dinp, const TO* dout, const TI* inp, size_t n, Act act) {
    bigs::activation_backward(ctx, dinp, dout, inp, n, act);
  }
  template <class X>
  void gate_forward(X* out, const X* x, const X* y, size_t n) {
    bigs::gate_forward(ctx, out, x, y, n);
  }
  template <class X>
  void gate_backward(X* dx, X* dy, const X* dout, const X* x, const X* y, size_t n) {
    bigs::gate_backward(ctx, dx, dy, dout, x, y, n);
  }
  template <class X>
  void gate_gelu_backward(X* dg, X* dv, const X* dgv, const X* g, const X* v, const X* g_pre, const X* v_pre,
                          size_t n) {
    bigs::gate_gelu_backward(ctx, dg, dv, dgv, g, v, g_pre, v_pre, n);
  }
  void s4d_kernel_forward(float* K, const Ssm& s, int N, int T) {
    bigs::s4d_kernel_forward(ctx, K, s.a_re, s.a_im, s.c, s.log_step, N, T);
  }
  void s4d_kernel_backward(const Ssm& ds, const float* dK, const Ssm& s, int N, int T) {
    bigs::s4d_kernel_backward(ctx, ds.a_re, ds.a_im, ds.c, ds.log_step, dK, s.a_re, s.a_im, s.c, s.log_step, N, T);
  }
  template <class X>
  void ssm_conv_forward(X* out, const X* inp, const float* K, const float* D, int B, int T, int H, bool anti) {
    bigs::ssm_conv_forward(ctx, out, inp, K, D, B, T, H, anti);
  }
  template <class X>
  void ssm_conv_backward(X* dinp, float* dK, float* dD, const X* dout, const X* inp, const float* K, const float* D,
                         int B, int T, int H, bool anti) {
    bigs::ssm_conv_backward(ctx, dinp, dK, dD, dout, inp, K, D, B, T, H, anti);
  }
  template <class TO, class TI>
  void dropout_forward(TO* out, const TI* inp, size_t n, float prob, uint64_t seed, uint64_t stream) {
    bigs::dropout_forward(ctx, out, inp, n, prob, seed, stream);
  }
  template <class X>
  void dropout_backward(X* dinp, const X* dout, size_t n, float prob, uint64_t seed, uint64_t stream) {
    bigs::dropout_backward(ctx, dinp, dout, n, prob, seed, stream);
  }
  void crossentropy_forward(float* losses, const float* logits, const int* targets, int n, int V, int ld) {
    bigs::crossentropy_forward(ctx, losses, logits, targets, n, V, ld);
  }
  template <class X>
  void crossentropy_backward(X* dlogits, const float* logits, const int* targets, float scale, int n, int V, int ld) {
    bigs::crossentropy_backward(ctx, dlogits, logits, targets, scale, n, V, ld);
  }
  template <class TO, class TI>
  void meanpool_forward(TO* out, const TI* inp, const int* i, int pad_id, int B, int T, int H) {
    bigs::meanpool_forward(ctx, out, inp, i, pad_id, B, T, H);
  }
  void meanpool_backward(float* dinp, const float* dout, const int* i, int pad_id, int B, int T, int H) {
    bigs::meanpool_backward(ctx, dinp, dout, i, pad_id, B, T, H);
  }
  template <class TO, class TI>
  void gather_rows(TO* out, const TI* x, const int* r, int P, int H) {
    if (P == 0) return;
    launchKernel(gather_rows_kernel, grid_for((size_t)P * H), kThreads, 0, ctx.stream, out, x, r, P, H);
  }
  void scatter_rows(float* dres, const float* dhead, const int* r, int P, int H) {
    if (P == 0) return;
    launchKernel(scatter_rows_kernel, grid_for((size_t)P * H), kThreads, 0, ctx.stream, dres, dhead, r, P, H);
  }

  // Whole-block operations, as Cpu's, over the device's aligned blocks
  // (their padding stays 0) on the model's stream.
  static constexpr size_t kBlockAlign = kDevAlign;
  static constexpr const char* kWhere = "GPU";
  size_t block_size() const { return gm.n; }
  void zero_grads() { zero_async(ctx, gm.grads, gm.n); }
  // One partial sum, this rank's (dot_reduce's fixed two stages over [lo, hi)).
  std::vector<double> grad_square_sums(size_t lo, size_t hi, int rank, int ranks) {
    std::vector<double> part(ranks, 0.0);
    dot_reduce(ctx, nullptr, gm.grads + lo, nullptr, hi - lo);
    cudaCheck(cudaMemcpyAsync(&part[rank], ctx.red + kRedBlocks, sizeof(double), cudaMemcpyDeviceToHost, ctx.stream));
    cudaCheck(cudaStreamSynchronize(ctx.stream));
    return part;
  }
  void scale_grads(size_t lo, size_t hi, float s) {
    launchKernel(scale_kernel, grid_for(hi - lo), kThreads, 0, ctx.stream, gm.grads + lo, s, hi - lo);
  }
  // One fused launch with the device's own moments (mom1, mom2 are then
  // only read back by model_to_host) and the bf16 copy of the weights.
  void adamw(float lr, const AdamW& o, long long step, size_t lo, size_t hi, std::vector<float>&,
             std::vector<float>&) {
    adamw_update(ctx, gm.params + lo, gm.grads + lo, gm.mom1 + lo, gm.mom2 + lo, hi - lo, lr, o,
                 (float)o.weight_decay, step, gm.params16 ? gm.params16 + lo : nullptr, gm.segments,
                 (int)gm.table.size(), lo);
  }
  // The data-parallel step (bigsc/world.h) over the device's blocks, through NCCL.
  bool dp_init(DataParallel* dp, std::string* err) { return gpu_exchange_init(dp, &gm.x, err); }
  void dp_zero(DataParallel& dp) { zero_async(ctx, gm.x.gsum, dp.hi() - dp.lo()); }
  void dp_add_own(DataParallel& dp) {
    const size_t n = dp.hi() - dp.lo();
    if (n == 0) return;
    launchKernel(add_kernel, grid_for(n), kThreads, 0, ctx.stream, gm.x.gsum, gm.grads, n);
  }
  void dp_send(DataParallel& dp, int b) { gpu_exchange_bucket(dp, gm.x, ctx.stream, gm.grads, b); }
  void dp_wait(DataParallel& dp) { gpu_exchange_wait(*dp.w, gm.x, ctx.stream); }
  void dp_to_grads(DataParallel& dp) {
    const size_t shard = dp.hi() - dp.lo();
    if (shard)
      cudaCheck(cudaMemcpyAsync(gm.grads + dp.lo(), gm.x.gsum, shard * sizeof(float), cudaMemcpyDeviceToDevice,
                                ctx.stream));
  }
  void dp_share_params(DataParallel& dp) {  // and the bf16 copy of the weights made again from them
    gpu_all_gather(dp, ctx.stream, gm.params);
    if (gm.params16) {
      launchKernel(cast_kernel, grid_for(gm.n), kThreads, 0, ctx.stream, gm.params16, gm.params, gm.n);
    }
  }
  void dp_share_moments(DataParallel& dp, std::vector<float>&, std::vector<float>&) {
    gpu_all_gather(dp, ctx.stream, gm.mom1);
    gpu_all_gather(dp, ctx.stream, gm.mom2);
  }
};

static bool cuda_device_present() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}
#else
// Without CUDA the model stays on the host.
static bool cuda_device_present() { return false; }
static bool model_to_device(Model*, const std::vector<float>*, const std::vector<float>*, std::string* err) {
  *err = "this build has no CUDA path (it was compiled without nvcc); use --device cpu";
  return false;
}
static void model_to_host(Model&, std::vector<float>*, std::vector<float>*) {}
inline void model_grads_to_host(Model&) {}  // the gradient block is the host's
#endif

// The third device, Cost<S>, which prices a step without running it, is in
// bigsc/cost.h with the bench command that prints its prediction.

// ---------------------------------------------------------------------------
// Which device runs a command, and the model's entry points on it
// ---------------------------------------------------------------------------

// Where a command runs: --device and --precision.
struct Device {
  std::string name = "auto";       // cpu, cuda, or auto (cuda when a GPU is present)
  std::string precision = "bf16";  // on the GPU: bf16, tf32 or fp32 (see Precision)
};

// Puts a built model where --device says: cpu keeps it on the host, cuda
// moves it to the GPU (an error if there is none), auto moves it when a GPU
// is present. Call it once, after the parameters (and moments) are loaded.
static bool model_use_device(Model* m, const Device& d, const std::vector<float>* mom1, const std::vector<float>* mom2,
                             std::string* err) {
  if (d.name == "cpu" || (d.name == "auto" && !cuda_device_present())) return true;
  return parse_precision(d.precision, &m->precision, err) && model_to_device(m, mom1, mom2, err);
}

// fn(device) on the device the model lives on: the one place that chooses.
template <class Fn>
static auto with_device(Model& m, Fn&& fn) {
#ifdef BIGS_CUDA
  if (m.gpu) {
    GpuModel& g = *m.gpu;
    if (g.prec == Precision::Bf16) {
      Gpu<bf16> d(g, g.a16, g.p16);
      return fn(d);
    }
    Gpu<float> d(g, g.a, g.p);
    return fn(d);
  }
#endif
  host_acts_alloc(m);
  Cpu d{m.a, m.p, m.p, m.g, m};
  return fn(d);
}

// The whole model forward: MLM loss when the batch has targets, else the
// classification head (loss when it has labels). train = dropout on.
static bool model_forward(Model& m, const Batch& bt, bool train, Loss* loss, std::string* err) {
  if (!batch_check(m, bt, err)) return false;
  if (!bt.targets && m.c.labels == 0) {
    *err = "this model has no classification head (labels = 0)";
    return false;
  }
  return with_device(m, [&](auto& d) { return forward_on(d, m, bt, train, loss, err); });
}

// Accumulates into m.g the gradient of scale * loss.sum of the last forward
// (which must have been on the same batch, with the same train flag); done,
// if given, hears of each bucket of the gradient as it becomes final.
static void model_backward(Model& m, const Batch& bt, bool train, const Loss& loss, float scale,
                           const BucketDone& done = {}) {
  with_device(m, [&](auto& d) { backward_on(d, m, bt, train, loss, scale, done); });
}

static void model_zero_grad(Model& m) {
  with_device(m, [](auto& d) { d.zero_grads(); });
}

// What the commands say of the device a model runs on.
static std::string device_name(const Cpu&) { return "cpu"; }
static void print_device_plan(const Cpu&, const Model& m) {
  printf("device: cpu; activations %.1f MB for batch %d\n", m.num_acts * 4 / 1e6, m.B);
}
#ifdef BIGS_CUDA
template <class S>
static std::string device_name(const Gpu<S>& d) {
  return strf("cuda %s", precision_name(d.gm.prec));
}
template <class S>
static void print_device_plan(const Gpu<S>& d, const Model& m) {
  printf("device: cuda, %s\n", precision_name(d.gm.prec));
  print_gpu_plan(gpu_plan(m.c, m.B, m.R, d.gm.prec), d.gm.prec, m.B, m.c.T);
  if (d.ctx.fft_work_size)
    printf("cuFFT work area: %.3f GB, as cuFFT asked (planned %.3f GB)\n", d.ctx.fft_work_size / 1e9,
           fft_work_estimate(m.c, m.B) / 1e9);
}
#endif
static std::string device_name(Model& m) {
  return with_device(m, [](auto& d) { return device_name(d); });
}

// ============================================================================
// Optimizer: AdamW, learning-rate schedules, global-norm clipping
// ============================================================================

// The part of the parameter block a step updates: this rank's shard (dp),
// or all of it (n elements).
static size_t part_lo(const DataParallel* dp) { return dp ? dp->lo() : 0; }
static size_t part_hi(const DataParallel* dp, size_t n) { return dp ? dp->hi() : n; }

// One AdamW step on the device where the model lives (Cpu::adamw,
// Gpu::adamw). On the GPU the moments are the device's (mom1, mom2 are then
// only read back by model_to_host). With dp, only this rank's shard (ZeRO
// stage 1); the update of each element is the same whatever the shards are.
static void adamw_step(Model& m, std::vector<float>& mom1, std::vector<float>& mom2, float lr, const AdamW& o,
                       long long step, const DataParallel* dp = nullptr) {
  with_device(m, [&](auto& d) { d.adamw(lr, o, step, part_lo(dp), part_hi(dp, d.block_size()), mom1, mom2); });
}

// The global L2 norm of the gradient, in double, in a fixed order so that it
// is bit-reproducible: sums of squares over chunks of kNormChunk elements,
// added in order (on the GPU dot_reduce's fixed two stages, not the CPU's
// chunks). With dp, each rank sums its shard's chunks (on the GPU: its shard)
// and the partial sums are gathered first, so that on the host any number of
// ranks gets the single process's norm exactly.
static double grad_norm(Model& m, const DataParallel* dp = nullptr) {
  std::vector<double> part = with_device(m, [&](auto& d) {
    return d.grad_square_sums(part_lo(dp), part_hi(dp, d.block_size()), dp ? dp->w->rank : 0, dp ? dp->w->size : 1);
  });
  if (dp) world_reduce(*dp->w, part.data(), part.size());
  double s = 0;
  for (double x : part) s += x;
  return std::sqrt(s);
}

static void grad_scale(Model& m, float s, const DataParallel* dp = nullptr) {
  with_device(m, [&](auto& d) { d.scale_grads(part_lo(dp), part_hi(dp, d.block_size()), s); });
}

// Global-norm clipping: scales the gradient down to norm `clip` when it is
// above (clip <= 0: never). Returns the norm before clipping.
static double clip_grad_norm(Model& m, double clip, const DataParallel* dp = nullptr) {
  double norm = grad_norm(m, dp);
  if (clip > 0 && norm > clip) grad_scale(m, (float)(clip / norm), dp);
  return norm;
}

enum class Schedule { Cosine, Linear, Constant };

struct LrSchedule {
  Schedule kind = Schedule::Cosine;
  double peak = 6e-4;
  long long warmup = 2000;   // linear warmup steps
  long long total = 100000;  // end of the decay
  double alpha = 0.1;        // cosine: final LR as a fraction of the peak
};

// The learning rate of update number `step` (0-based), as the authors'
// optax schedule gives it: optax.join_schedules of linear_schedule(0, peak,
// warmup) and the decay, evaluated at the optimizer's count before the
// update, so update 0 has LR 0 and the peak comes at update `warmup`. After
// warmup: cosine from peak down to alpha x peak at `total` (then held),
// linear down to 0 at `total`, or constant.
static double lr_at(const LrSchedule& s, long long step) {
  if (step < s.warmup) return s.peak * (double)step / (double)s.warmup;
  double span = (double)std::max(1LL, s.total - s.warmup);
  double progress = std::min(1.0, (double)(step - s.warmup) / span);
  switch (s.kind) {
    case Schedule::Cosine:
      return s.peak * (s.alpha + (1 - s.alpha) * 0.5 * (1 + std::cos(M_PI * progress)));
    case Schedule::Linear:
      return s.peak * (1 - progress);
    case Schedule::Constant:
      return s.peak;
  }
  return s.peak;
}

// One optimizer step, what pretrain, finetune and bench share, on one rank's
// share of a global batch: forward and backward over its micro-batches, each
// loss scaled by the whole batch's count (its predicted rows for MLM, its
// sequences for classification), so that accumulation equals one big batch;
// each micro-batch's gradient into the step's sum (see "Data parallelism");
// clip the global gradient norm; check that loss and norm are finite; AdamW
// on this rank's shard, then the shards to every rank.
// The data-parallel step's operations (bigsc/world.h) on the device where
// the model lives: the device's dp_* operations, which run the host's MPI
// exchange or the GPU's NCCL one over their own blocks.

// Sets dp up for a model where it trains (after model_use_device), for steps
// of up to `rounds` micro-batches per rank.
static bool data_parallel_init(DataParallel* dp, World& w, Model& m, int rounds, std::string* err) {
  return with_device(m, [&](auto& d) {
    return data_parallel_plan(dp, w, m.c, d.block_size(), d.kBlockAlign, rounds, err) &&
           (!dp->sums || d.dp_init(dp, err));
  });
}

// The step's gradient sum starts at zero.
static void data_parallel_zero(DataParallel& dp, Model& m) {
  with_device(m, [&](auto& d) { d.dp_zero(dp); });
}

// A world of one that sums its micro-batches: the step's sum += this
// micro-batch's gradient.
static void add_own_gradient(DataParallel& dp, Model& m) {
  with_device(m, [&](auto& d) { d.dp_add_own(dp); });
}

// Bucket b of this rank's micro-batch gradient is final (train_step hands
// this to the backward pass): each rank's part of it to that rank, now,
// while the backward pass goes on.
static void world_exchange_bucket(DataParallel& dp, Model& m, int b) {
  dp.in_flight = true;
  with_device(m, [&](auto& d) { d.dp_send(dp, b); });
}

// The exchanges started so far have arrived and are added, in rank order,
// to the step's sum.
static void world_exchange_wait(DataParallel& dp, Model& m) {
  if (!dp.in_flight) return;
  dp.in_flight = false;
  with_device(m, [&](auto& d) { d.dp_wait(dp); });
}

// The step's gradient of this rank's shard into the gradient block, where
// the optimizer reads it.
static void data_parallel_gradient(DataParallel& dp, Model& m) {
  with_device(m, [&](auto& d) { d.dp_to_grads(dp); });
}

// After the shards' AdamW: the updated shards to every rank.
static void world_share_params(DataParallel& dp, Model& m) {
  if (!dp.w->mpi) return;
  with_device(m, [&](auto& d) { d.dp_share_params(dp); });
}

// Before a checkpoint: every rank's shard of the AdamW moments to all, so
// that the whole blocks are the single process's (model_to_host then reads
// them from the GPU).
static void world_share_moments(DataParallel& dp, Model& m, std::vector<float>& mom1, std::vector<float>& mom2) {
  if (!dp.w->mpi) return;
  with_device(m, [&](auto& d) { d.dp_share_moments(dp, mom1, mom2); });
}

struct StepSettings {
  int micro = 1;    // sequences per forward and backward
  int accum = 1;    // micro-batches in a full global batch: dropout streams per step
  double clip = 0;  // global-norm clipping; 0 = off
  AdamW opt;
};

struct StepResult {
  double loss = 0, grad_norm = 0;  // the mean loss; the norm before clipping
  bool finite = true;
};

// Update number `step` (0-based) at learning rate lr. `mine`: this rank's
// micro-batches of a global batch of B sequences, one after another, as
// rank_sequences lists them. mom1, mom2: the host's AdamW moments (a model
// on the GPU keeps its own).
static bool train_step(Model& m, DataParallel& dp, const Batch& mine, int B, const StepSettings& s, uint64_t step,
                       double lr, std::vector<float>& mom1, std::vector<float>& mom2, StepResult* r,
                       std::string* err) {
  World& w = *dp.w;
  const int T = m.c.T, M = (B + s.micro - 1) / s.micro, rounds = (M + w.size - 1) / w.size;
  double count = mine.B;
  if (mine.targets) {
    count = 0;
    for (size_t i = 0; i < (size_t)mine.B * T; i++) count += mine.targets[i] >= 0;
  }
  world_reduce(w, &count, 1);
  std::vector<double> losses(M, 0.0);  // by global micro-batch
  if (dp.sums) data_parallel_zero(dp, m);
  // Through MPI, each bucket of a micro-batch's gradient leaves as the
  // backward pass finishes it; a round's exchanges are waited for before
  // the next round's backward pass (which packs over them) and at the end.
  const bool exchange = !dp.buckets.empty();
  BucketDone send;
  if (exchange) send = [&](int b) { world_exchange_bucket(dp, m, b); };
  for (int k = 0, first = 0; k < rounds; k++) {
    const int g = k * w.size + w.rank;  // this rank's micro-batch of round k; past M it has none and sends zeros
    model_zero_grad(m);
    if (g < M) {
      const int b = std::min(s.micro, B - g * s.micro);
      Batch mb = batch_slice(mine, first, b, T);
      first += b;
      m.dropout_stream = step * (uint64_t)s.accum + (uint64_t)g;  // a fresh mask per micro-batch, on any number of ranks
      Loss loss;
      if (!model_forward(m, mb, true, &loss, err)) return false;
      if (exchange) world_exchange_wait(dp, m);
      model_backward(m, mb, true, loss, 1.0f / (float)count, send);
      losses[g] = loss.sum;
    } else if (exchange) {
      world_exchange_wait(dp, m);
      for (int bucket = 0; bucket < (int)dp.buckets.size(); bucket++) world_exchange_bucket(dp, m, bucket);
    }
    if (dp.sums && !exchange) add_own_gradient(dp, m);
  }
  if (exchange) world_exchange_wait(dp, m);
  world_reduce(w, losses.data(), losses.size());
  double loss_sum = 0;
  for (double l : losses) loss_sum += l;
  r->loss = loss_sum / count;
  if (dp.sums) data_parallel_gradient(dp, m);
  r->grad_norm = clip_grad_norm(m, s.clip, &dp);
  r->finite = std::isfinite(r->loss) && std::isfinite(r->grad_norm);
  if (!r->finite) {
    *err = strf("the loss is %g and the gradient norm %g", r->loss, r->grad_norm);
    w.agreed = true;  // both are the whole batch's: every rank stops here
    return false;
  }
  adamw_step(m, mom1, mom2, (float)lr, s.opt, (long long)step + 1, &dp);
  world_share_params(dp, m);
  return true;
}

// ============================================================================
// Checkpoints
// ============================================================================
// CkptHeader (256 bytes), then the parameters in the order of the parameter
// table (fp32, little-endian); a training state then holds AdamW's first and
// second moments in the same order. Saved durably (formats.h AtomicFile:
// NAME.tmp, fsync, rename, fsync of the directory), so a crash, a kill or a
// full disk never leaves a broken file under the final name. Version 2 adds
// CRC-32C checksums of the payload and of the header (formats.h), verified on
// every read; version 1 still loads, with a note. Version 3 adds what the
// model is for (the task it was fine-tuned on, the hash of its vocabulary)
// and, in a training state, the run's settings, which --resume takes; a
// version-1 or -2 file reads with these unknown (zero).

constexpr uint32_t kCkptMagic = 0x4B434742;  // "BGCK" as bytes on disk
constexpr uint32_t kCkptVersion = 3;
enum : uint32_t { kCkptModel = 1, kCkptTrainState = 2 };
enum : uint32_t { kRunNone = 0, kRunPretrain = 1, kRunFinetune = 2 };

// The settings that decide a training run's numbers (version 3), stored in
// its state.bin so that --resume continues the same run whatever today's
// flags say (a flag that contradicts them is refused).
struct RunSettings {
  double lr, alpha, dropout, clip, beta1, beta2, eps, weight_decay, mask_prob;
  double best;  // finetune: the best dev score so far (-1e300: none yet)
  int64_t warmup, decay_steps, steps, batch, eval_every;
  int16_t schedule, masking;  // Schedule; pretrain: 1 = --masking static (MaskSpec::authors)
  int32_t max_predictions, epochs;
  uint32_t data_id;    // finetune: CRC-32C of the training set, so that a resume reads the same one
  double warmup_frac;  // finetune
};
static_assert(sizeof(RunSettings) == 144, "RunSettings must be 144 bytes");

struct CkptHeader {
  uint32_t magic;    // kCkptMagic
  uint32_t version;  // kCkptVersion
  uint32_t kind;     // kCkptModel or kCkptTrainState
  uint32_t micro;    // version 3, with run: the run's --micro-batch (it keys dropout and the order of the
                     // gradient's sum); 0 = unknown
#define X(f, dflt, tiny, base, large, lo, hi, what) int32_t f;
  BIGS_CONFIG(X)  // the Config, field by field
#undef X
  uint64_t num_params;                      // floats per block
  uint64_t step;                            // optimizer updates done
  uint64_t samples_seen;                    // training sequences consumed: the data position
  uint64_t seed;                            // the run's seed: data order, masks, dropout
  uint32_t payload_crc;                     // CRC-32C of the floats (version 2; 0 in version 1)
  uint32_t header_crc;                      // CRC-32C of this header with header_crc = 0
  char task[16];        // version 3: the task its classifier was fine-tuned on ("rte"); "" = none or unknown
  uint32_t vocab_hash;  // version 3: formats.h vocab_hash_of of its vocabulary; 0 = unknown
  uint32_t run_kind;    // version 3: kRunPretrain or kRunFinetune when run holds the run's settings
  RunSettings run;
};
static_assert(sizeof(CkptHeader) == 256, "CkptHeader must be 256 bytes");

static Config ckpt_config(const CkptHeader& h) {
  Config c;
#define X(f, dflt, tiny, base, large, lo, hi, what) c.f = h.f;
  BIGS_CONFIG(X)
#undef X
  return c;
}

// What a checkpoint says about itself beyond the model (version 3).
struct CkptMeta {
  std::string task;         // "" for a pretrained model
  uint32_t vocab_hash = 0;  // 0 = unknown
  uint32_t run_kind = kRunNone;
  RunSettings run{};
  uint32_t micro = 0;  // the run's --micro-batch, with run
};

static bool checkpoint_save(const std::string& path, const Model& m, const std::vector<float>* mom1,
                            const std::vector<float>* mom2, uint64_t step, uint64_t samples_seen, uint64_t seed,
                            std::string* err, const CkptMeta& meta = CkptMeta{}) {
  CkptHeader h;
  memset(&h, 0, sizeof h);
  snprintf(h.task, sizeof h.task, "%s", meta.task.c_str());
  h.vocab_hash = meta.vocab_hash;
  h.run_kind = meta.run_kind;
  h.run = meta.run;
  h.micro = meta.micro;
  h.magic = kCkptMagic;
  h.version = kCkptVersion;
  h.kind = mom1 ? kCkptTrainState : kCkptModel;
  const Config& c = m.c;
#define X(f, dflt, tiny, base, large, lo, hi, what) h.f = c.f;
  BIGS_CONFIG(X)
#undef X
  h.num_params = m.num_params;
  h.step = step;
  h.samples_seen = samples_seen;
  h.seed = seed;
  AtomicFile out;
  if (!out.open(path, err)) return false;
  const size_t bytes = m.num_params * sizeof(float);
  fwrite(&h, sizeof h, 1, out.f);  // a placeholder until the checksum is known
  out.write(m.params_mem.data(), bytes);
  if (mom1) {
    out.write(mom1->data(), bytes);
    out.write(mom2->data(), bytes);
  }
  seal_header(&h, out.crc());
  out.rewrite_header(&h, sizeof h);
  return out.commit(err);  // checks every write
}

// The first non-finite float of a checkpoint's blocks, named by tensor
// ("parameter dv_w[3] is nan"), or "" when all are finite.
static std::string first_non_finite(const std::vector<float>& data, const Config& c, uint64_t blocks) {
  const std::vector<TensorInfo> table = param_table(c);
  const size_t P = table_total(table);
  const char* block_name[3] = {"parameter", "AdamW first moment of", "AdamW second moment of"};
  for (uint64_t b = 0; b < blocks; b++) {
    const float* x = data.data() + b * P;
    for (const TensorInfo& t : table)
      for (size_t i = 0; i < t.count; i++)
        if (!std::isfinite(x[t.offset + i]))
          return strf("%s %s[%zu] is %s", block_name[b], t.name, i, std::isnan(x[t.offset + i]) ? "nan" : "inf");
  }
  return "";
}

// Reads a checkpoint of either kind: the header, and the floats after it
// (parameters, then the two moments for a training state). Every float is
// checked: a flipped bit (version 2) or a non-finite value is an error
// naming the file, never a model.
static bool checkpoint_read(const std::string& path, CkptHeader* h, std::vector<float>* data, std::string* err) {
  const char* what = "bigs checkpoint";
  const char* fix = "pass a checkpoint written by `bigs pretrain` or `bigs finetune` (or dev/convert_hf.py)";
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) {
    *err = strf("cannot open checkpoint %s: %s", path.c_str(), strerror(errno));
    return false;
  }
  int64_t size = file_size_of(f);
  bool ok = read_header(f, path.c_str(), h, kCkptMagic, kCkptVersion, what, fix, err);
  if (ok && h->version < 3) {  // fields that were reserved (zero) before version 3
    memset(h->task, 0, sizeof h->task);
    h->vocab_hash = 0, h->run_kind = kRunNone;
    memset(&h->run, 0, sizeof h->run);
  }
  if (ok && h->kind != kCkptModel && h->kind != kCkptTrainState) {
    *err = strf("%s has unknown checkpoint kind %u; %s", path.c_str(), h->kind, fix);
    ok = false;
  } else if (ok && (memchr(h->task, 0, sizeof h->task) == nullptr || h->run_kind > kRunFinetune)) {
    *err = strf("%s: damaged header (task or run kind); %s", path.c_str(), fix);
    ok = false;
  } else if (ok) {
    std::string e = config_check(ckpt_config(*h));
    size_t want = e.empty() ? table_total(param_table(ckpt_config(*h))) : 0;  // no table for a bad config
    uint64_t blocks = h->kind == kCkptTrainState ? 3 : 1;
    if (!e.empty()) {
      *err = path + ": damaged header: " + e;
      ok = false;
    } else if (h->num_params != want) {
      *err = strf("%s: header says %" PRIu64 " parameters, its config needs %zu; the file is damaged", path.c_str(),
                  h->num_params, want);
      ok = false;
    } else if ((uint64_t)size != sizeof *h + blocks * want * sizeof(float)) {
      *err = strf("%s is %" PRId64 " bytes, expected %" PRIu64 "; it is truncated or damaged", path.c_str(), size,
                  (uint64_t)(sizeof *h + blocks * want * sizeof(float)));
      ok = false;
    } else {
      data->resize(blocks * want);
      ok = fread(data->data(), sizeof(float), data->size(), f) == data->size();
      const uint32_t crc = ok && has_checksums(h->version) ? crc32c(0, data->data(), data->size() * sizeof(float)) : 0;
      const std::string bad = ok ? first_non_finite(*data, ckpt_config(*h), blocks) : "";
      if (!ok) {
        *err = strf("cannot read %s: %s", path.c_str(), strerror(errno));
      } else if (has_checksums(h->version) && crc != h->payload_crc) {
        *err = checksum_error(path.c_str(), what, crc, h->payload_crc, fix);
        ok = false;
      } else if (!bad.empty()) {
        *err = path + ": " + bad + "; the checkpoint holds a diverged or damaged model: use an earlier one";
        ok = false;
      } else if (!has_checksums(h->version)) {
        fprintf(stderr, "%s\n", unchecked_note(path.c_str(), what, "save it again with bigs").c_str());
      }
    }
  }
  fclose(f);
  return ok;
}

// Reads only a checkpoint's header (checked as checkpoint_read checks it), to
// learn a run's settings before the model is built.
static bool checkpoint_peek(const std::string& path, CkptHeader* h, std::string* err) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) {
    *err = strf("cannot open checkpoint %s: %s", path.c_str(), strerror(errno));
    return false;
  }
  bool ok = read_header(f, path.c_str(), h, kCkptMagic, kCkptVersion, "bigs checkpoint",
                        "pass a checkpoint written by `bigs pretrain` or `bigs finetune` (or dev/convert_hf.py)", err);
  fclose(f);
  if (ok && h->version < 3) {
    memset(h->task, 0, sizeof h->task);
    h->vocab_hash = 0, h->run_kind = kRunNone;
    memset(&h->run, 0, sizeof h->run);
  }
  return ok;
}

#include "bigsc/dataloader.h"

// ============================================================================
// Commands
// ============================================================================

#include "bigsc/commands.h"


static void print_model_plan(Model& m) {
  printf("model: %s\n", config_line(m.c).c_str());
  printf("parameters: %zu (%.1f MB fp32)\n", m.num_params, m.num_params * 4 / 1e6);
  with_device(m, [&](auto& d) { print_device_plan(d, m); });
}

// Builds a model from a checkpoint. T_override > 0 runs it on shorter
// sequences (the first rows of the position table). Tensors are matched by
// name; with labels_override >= 0 a classification head of another size is
// left for the caller to initialise (its names are returned in *fresh).
static bool model_from_checkpoint(const std::string& path, int B, int R, int T_override, int labels_override, Model* m,
                                  CkptHeader* h, std::vector<float>* data, std::vector<std::string>* fresh,
                                  std::string* err) {
  if (!checkpoint_read(path, h, data, err)) return false;
  Config old = ckpt_config(*h), c = old;
  if (T_override > 0) {
    if (T_override > old.T) {
      *err = strf("--seq %d is longer than the checkpoint's T = %d", T_override, old.T);
      return false;
    }
    c.T = T_override;
  }
  if (labels_override >= 0) c.labels = labels_override;
  if (!model_build(m, c, B, R, err)) return false;
  std::vector<TensorInfo> src = param_table(old);
  for (const TensorInfo& t : m->table) {
    auto it = std::find_if(src.begin(), src.end(), [&](const TensorInfo& s) { return !strcmp(s.name, t.name); });
    bool prefix_ok = !strcmp(t.name, "wpe") && t.count <= it->count;  // a shorter position table
    if (it->count == t.count || prefix_ok)
      std::copy_n(data->data() + it->offset, t.count, &m->params_mem[t.offset]);
    else if (fresh)
      fresh->push_back(t.name);
  }
  return true;
}

// pretrain --init: a pretraining model of T positions (T at least the
// checkpoint's T0) from a checkpoint's weights, for a new run. Every tensor
// comes over as it is, but a classification head, which pretraining drops,
// and the position table, whose rows t >= T0 are copies of row t mod T0
// (Longformer's rule, Beltagy, Peters and Cohan 2020, section 5: the learned
// table copied over and over; docs/MODEL.md section 12 says why this rule).
// The S4D kernels need nothing: they are computed for any T.
static bool model_for_longer_t(const std::string& path, int B, int R, int T, Model* m, CkptHeader* h,
                               std::string* err) {
  std::vector<float> data;
  if (!checkpoint_read(path, h, &data, err)) return false;
  Config old = ckpt_config(*h), c = old;
  if (T < old.T) {
    *err = strf("--init %s has T = %d, more than the data's T = %d: a run continues at the same or a longer T",
                path.c_str(), old.T, T);
    return false;
  }
  c.T = T, c.labels = 0;
  if (!model_build(m, c, B, R, err)) return false;
  std::vector<TensorInfo> src = param_table(old);
  for (const TensorInfo& t : m->table) {
    auto it = std::find_if(src.begin(), src.end(), [&](const TensorInfo& x) { return !strcmp(x.name, t.name); });
    float* to = &m->params_mem[t.offset];
    if (!strcmp(t.name, "wpe")) {
      const size_t H = (size_t)c.H;
      for (int r = 0; r < T; r++) std::copy_n(data.data() + it->offset + (size_t)(r % old.T) * H, H, to + (size_t)r * H);
    } else {
      std::copy_n(data.data() + it->offset, t.count, to);
    }
  }
  return true;
}

struct EvalResult {
  double loss = 0, accuracy = 0;
  long long rows = 0;
};

// MLM loss and masked-token accuracy on the first max_seqs sequences of a
// shard set, with fixed masks, dropout off, in batches of the model's batch
// capacity. Rank r evaluates batches r, r + ranks, ...; each batch's sums
// are gathered by batch, so the result is one process's exactly.
static bool evaluate_mlm(Model& m, World& w, const ShardSet& val, long long max_seqs, const MaskSpec& ms,
                         EvalResult* r, std::string* err) {
  const int T = m.c.T;
  std::vector<int> ids((size_t)m.B * T), types((size_t)m.B * T, 0), targets((size_t)m.B * T);
  const long long total = std::min<long long>(max_seqs, (long long)val.total), batches = (total + m.B - 1) / m.B;
  std::vector<double> part(3 * batches, 0.0);  // by batch: loss sum, predictions, correct ones
  size_t shard = 0;
  uint64_t shard_start = 0;  // the number of the shard's first sequence
  FILE* f = nullptr;
  bool ok = true;
  for (long long q = w.rank; ok && q < batches; q += w.size) {
    const int B = (int)std::min<long long>(m.B, total - q * m.B);
    for (int b = 0; ok && b < B; b++) {
      const uint64_t k = (uint64_t)(q * m.B + b);
      while (k >= shard_start + val.counts[shard]) shard_start += val.counts[shard++], f = f ? (fclose(f), nullptr) : nullptr;
      ok = (f || (f = shard_open(val, shard, err))) &&
           DataOrder::read_row(f, val.paths[shard], T, val.h.vocab_size, k - shard_start, &ids[(size_t)b * T], err);
      Rng rng = mask_rng_val(k);
      if (ok) mask_sequence(&ids[(size_t)b * T], &targets[(size_t)b * T], T, m.c.V, val.h, ms, rng);
    }
    Batch bt{B, ids.data(), types.data(), targets.data(), nullptr};
    Loss loss;
    ok = ok && model_forward(m, bt, false, &loss, err);
    if (!ok) break;
    long long correct = 0;
    for (int r2 = 0; r2 < loss.count; r2++) {
      const float* x = m.a.logits + (size_t)r2 * m.c.V;
      correct += std::max_element(x, x + m.c.V) - x == m.a.row_target[r2];
    }
    part[3 * q] = loss.sum, part[3 * q + 1] = loss.count, part[3 * q + 2] = (double)correct;
  }
  if (f) fclose(f);
  if (!ok) return false;
  world_reduce(w, part.data(), part.size());
  double loss_sum = 0;
  long long rows = 0, correct = 0;
  for (long long q = 0; q < batches; q++)
    loss_sum += part[3 * q], rows += (long long)part[3 * q + 1], correct += (long long)part[3 * q + 2];
  r->rows = rows;
  r->loss = rows ? loss_sum / rows : 0;
  r->accuracy = rows ? (double)correct / rows : 0;
  return true;
}

static bool device_check(const Device& d, std::string* err) {
  Precision p;
  if (!parse_precision(d.precision, &p, err)) return false;
  if (d.name == "cpu" || d.name == "auto") return true;
#ifdef BIGS_CUDA
  if (d.name == "cuda") return true;  // whether a GPU is there, model_use_device finds out
#else
  if (d.name == "cuda") *err = "--device cuda: this build has no CUDA path (built without nvcc); use --device cpu";
#endif
  else
    *err = strf("--device %s: expected cpu, cuda or auto", d.name.c_str());
  return false;
}

// The two flags of every command that runs the model.
static void device_flags(std::vector<Flag>* f, Device* d) {
  f->push_back({Flag::Str, "device", &d->name, 0, 0, "cpu, cuda or auto"});
  f->push_back({Flag::Str, "precision", &d->precision, 0, 0, "on the GPU: bf16 (mixed), tf32 or fp32"});
}

// How the threads wait between parallel regions: openmp_wait_passively, before main.
static void set_threads(long long threads) {
#ifdef _OPENMP
  if (threads > 0) omp_set_num_threads((int)threads);
#else
  (void)threads;
#endif
}

// The AdamW and clipping flags that pretrain and finetune share (their
// defaults differ: each recipe of docs/MODEL.md section 12 sets its own).
static void optimizer_flags(std::vector<Flag>* f, AdamW* opt, double* clip) {
  f->push_back({Flag::Num, "beta1", &opt->beta1, 0, 0.999999, "AdamW beta1"});
  f->push_back({Flag::Num, "beta2", &opt->beta2, 0, 0.999999, "AdamW beta2"});
  f->push_back({Flag::Num, "eps", &opt->eps, 0, 1, "AdamW epsilon"});
  f->push_back(
      {Flag::Num, "weight-decay", &opt->weight_decay, 0, 10, "decoupled weight decay (not on biases, LayerNorm)"});
  f->push_back({Flag::Num, "grad-clip", clip, 0, 1e9,
                "clip the global gradient norm to this; 0 = off, the authors' JAX recipe (1.0 is the PyTorch "
                "port's, the Hugging Face Trainer's default)"});
}

// The flags both training commands add to their own: the device, AdamW and
// clipping (optimizer_flags), and for a run on several ranks the timeout.
static void training_flags(std::vector<Flag>* f, Device* device, AdamW* opt, double* clip, double* timeout) {
  device_flags(f, device);
  optimizer_flags(f, opt, clip);
  f->push_back({Flag::Num, "timeout", timeout, 0, 1e9,
                "several ranks: seconds one waits for the others in a collective before it ends the job; 0 = forever"});
}

// A failure of a training command that every rank meets alike: said once,
// by rank 0, and the job ends cleanly (no MPI_Abort).
static int fail_all(World& w, const char* cmd, const std::string& msg, int status) {
  w.agreed = true;
  return w.rank == 0 ? fail(cmd, msg, status) : status;
}

// The first collective of a training command: whether every rank was started
// with the same flags (--threads aside: it changes no result).
static bool world_same_flags(World& w, const std::vector<Flag>& flags) {
  std::string s;
  for (const Flag& f : flags)
    if (strcmp(f.name, "threads"))
      s += std::string(f.name) + "=" + (f.kind == Flag::Num ? strf("%.17g", *(double*)f.value) : flag_value(f)) + "\n";
  return world_same(w, crc32c(0, s.data(), s.size()));
}

// Parses a training command's flags on every rank (world_parse_command),
// then checks that the ranks were started alike. -1: go on; else the exit
// status.
static int training_parse(World& w, const char* cmd, int argc, char** argv, const std::vector<Flag>& flags,
                          const char* usage, const double* timeout) {
  if (int rc = world_parse_command(w, cmd, argc, argv, flags, usage); rc >= 0) return rc;
  w.timeout = *timeout;
  if (!world_same_flags(w, flags))
    return fail_all(w, cmd, "the ranks were started with different flags: start every rank with the same command line",
                    2);
  return -1;
}

// Every rank takes as many micro-batches of each batch.
static bool batch_splits(const World& w, long long batch, long long micro, std::string* err) {
  if (batch % (micro * w.size) == 0) return true;
  if (w.size == 1)
    *err = strf("--micro-batch %lld does not divide --batch %lld", micro, batch);
  else
    *err = strf(
        "%d ranks x --micro-batch %lld = %lld does not divide --batch %lld (each rank takes as many micro-batches "
        "of every batch): change --batch or --micro-batch, or start a number of ranks that divides --batch / "
        "--micro-batch",
        w.size, micro, micro * w.size, batch);
  return false;
}

// After loading, each rank from its own files: whether every rank has the
// same data (a checksum the caller made of it), the same starting
// parameters and moments, and the same device.
static bool world_same_start(World& w, uint32_t data, const Model& m, const std::vector<float>* mom1,
                             const std::vector<float>* mom2, std::string* err) {
  if (!w.mpi) return true;  // one process: nothing to compare, so no checksums (4 GB of state for large)
  uint32_t model = crc32c(0, m.params_mem.data(), m.num_params * sizeof(float));
  if (mom1) model = crc32c(crc32c(model, mom1->data(), mom1->size() * 4), mom2->data(), mom2->size() * 4);
  const bool same_data = world_same(w, data), same_model = world_same(w, model);
  if (!same_data)
    *err = "the ranks read different data (the files' names, sizes or contents differ): every rank must see the same files";
  else if (!same_model)
    *err = "the ranks start from different parameters (another checkpoint on some rank): every rank must read the same one";
  return same_data && same_model;
}

// Checked as soon as the model is on its device, before data_parallel_init:
// GPU ranks go on to NCCL's collectives and CPU ranks to MPI's, which would
// not match (--device auto on machines with and without a GPU).
static bool world_same_device(World& w, Model& m, std::string* err) {
  const std::string where = device_name(m);
  if (world_same(w, crc32c(0, where.data(), where.size()))) return true;
  *err = "the ranks run on different devices (some on a GPU, some on the CPU): choose one with --device";
  return false;
}

// Every rank's checksum of its parameters (the host block), printed by rank
// 0. The all-gather after every step makes them equal; a difference is a bug
// and stops the run (on every rank: they all see it).
static bool world_same_params(World& w, const Model& m, std::string* err) {
  std::vector<double> crc(w.size, 0.0);
  crc[w.rank] = crc32c(0, m.params_mem.data(), m.num_params * sizeof(float));
  world_reduce(w, crc.data(), crc.size());
  std::string line;
  bool same = true;
  for (double c : crc) line += strf(" %08x", (uint32_t)c), same = same && c == crc[0];
  printf("parameters on the %d ranks (CRC-32C):%s\n", w.size, line.c_str());
  if (!same) {
    *err = "the ranks' parameters differ, which the all-gather after every step rules out: a bug in bigs";
    w.agreed = true;
  }
  return same;
}

// The job's lines in a training command's header (rank 0's: the others
// print nothing): who does what, and the exchange's buffers (the gradient
// sum of a shard, the inbox of K shards, the packed block), which the
// memory plan above does not list.
static void print_world(const World& w, Model& m, const DataParallel& dp) {
  if (!w.mpi) return;
  const std::string where = with_device(m, [](auto& d) { return std::string(d.kWhere); });
  printf("world: %d ranks through MPI%s; rank r takes micro-batches r, r + %d, r + %d, ... of each batch; rank 0 "
         "logs and saves\n",
         w.size, where == "GPU" ? " and NCCL" : "", w.size, 2 * w.size);
  printf("the gradient exchange: %zu buckets; %.2f GB of buffers on each rank's %s\n", dp.buckets.size(),
         exchange_buffer_bytes(dp.sh.n, w.size) / 1e9, where.c_str());
}

static double bench_flops(const Config& c, int B, int P);  // bigsc/cost.h

// --resume: the run's settings from its state.bin (version 3) into the
// flags and the strings that hold them (take_setting: a flag given on the
// command line must agree), --steps checked against the run's step, and
// --config against its model. An older state.bin records none: today's
// flags are used, with a note. Returns 0, or the exit status for *err.
static int pretrain_resume_settings(const std::string& resume, const std::vector<Flag>& flags, std::string* schedule,
                                    std::string* masking, long long* steps, long long seed, std::string* config,
                                    bool* at_end, std::string* err) {
  if (resume.empty()) return 0;
  CkptHeader rh{};
  if (!checkpoint_peek(resume, &rh, err)) return 1;
  if (rh.run_kind == kRunFinetune) {
    *err = strf("--resume %s is the state of a `bigs finetune` run (task %s): continue it with bigs finetune --resume",
                resume.c_str(), rh.task);
    return 2;
  }
  if (rh.run_kind == kRunPretrain) {
    const RunSettings& r = rh.run;
    const std::pair<const char*, double> taken[] = {
        {"lr", r.lr},           {"alpha", r.alpha},     {"dropout", r.dropout},
        {"grad-clip", r.clip},  {"beta1", r.beta1},     {"beta2", r.beta2},
        {"eps", r.eps},         {"weight-decay", r.weight_decay}, {"mask-prob", r.mask_prob},
        {"warmup", (double)r.warmup}, {"decay-steps", (double)r.decay_steps}, {"batch", (double)r.batch},
        {"max-predictions", (double)r.max_predictions}};
    for (const auto& [name, v] : taken)
      if (!take_setting(flags, name, v, resume, err)) return 2;
    if (rh.micro && !take_setting(flags, "micro-batch", rh.micro, resume, err)) return 2;
    const char* kSchedules[] = {"cosine", "linear", "constant"};  // as Schedule's values
    const std::pair<const char*, std::string> strings[] = {
        {"schedule", kSchedules[std::min<int32_t>(std::max<int32_t>(r.schedule, 0), 2)]},
        {"masking", r.masking ? "static" : "dynamic"}};
    std::string* values[] = {schedule, masking};
    for (int k = 0; k < 2; k++) {
      if (find_flag(flags, strings[k].first)->given && *values[k] != strings[k].second) {
        *err = contradicts(strings[k].first, *values[k], strings[k].second, resume);
        return 2;
      }
      *values[k] = strings[k].second;
    }
    if (!find_flag(flags, "steps")->given) *steps = r.steps;
  } else {
    printf("note: %s (version %u) does not record its run's settings: today's flags are used, and must be that "
           "run's own for an exact continuation\n",
           resume.c_str(), rh.version);
  }
  if (find_flag(flags, "seed")->given && (uint64_t)seed != rh.seed) {
    *err = contradicts("seed", strf("%lld", seed), strf("%" PRIu64, rh.seed), resume);
    return 2;
  }
  if ((uint64_t)*steps < rh.step) {
    *err = strf("--steps %lld is below the step of %s, %" PRIu64 ": that run is past it; give --steps above %" PRIu64
                " to train it further",
                *steps, resume.c_str(), rh.step, rh.step);
    return 2;
  }
  *at_end = (uint64_t)*steps == rh.step;
  if (find_flag(flags, "config")->given) {
    Config c;
    if (!config_load(*config, &c, err)) return 2;
    c.V = rh.V, c.T = rh.T, c.labels = rh.labels;
    if (config_line(c) != config_line(ckpt_config(rh))) {
      *err = strf("--config %s (%s) contradicts the model in %s (%s): leave --config out to continue that run, or "
                  "start a new run",
                  config->c_str(), config_line(c).c_str(), resume.c_str(), config_line(ckpt_config(rh)).c_str());
      return 2;
    }
  }
  *config = "as in " + resume;
  return 0;
}

// The model a pretraining run starts from: a state.bin to continue
// (--resume: its parameters, moments, step, data position and seed), a
// checkpoint's weights at the data's T (--init: a new run), or a fresh model
// of --config. sh: the data's header (T, V, vocabulary hash). Returns 0, or
// the exit status for *err: 2 for a bad --config, 1 for the rest.
static int pretrain_model(const std::string& resume, const std::string& init, const std::string& config, int micro,
                          int R, const ShardHeader& sh, const std::string& train, Model* m, std::vector<float>* mom1,
                          std::vector<float>* mom2, uint64_t* step, uint64_t* samples, long long* seed,
                          std::string* err) {
  const int T = (int)sh.seq_len;
  if (!resume.empty()) {
    CkptHeader h;
    std::vector<float> data;
    if (!model_from_checkpoint(resume, micro, R, 0, -1, m, &h, &data, nullptr, err)) return 1;
    if (h.kind != kCkptTrainState) {
      *err = strf("--resume %s holds parameters only; resume from a state.bin", resume.c_str());
      return 1;
    }
    if (h.T != T || h.V != (int)sh.vocab_size) {
      *err = strf("%s has T = %d, V = %d but the shards have T = %u, V = %u", resume.c_str(), h.T, h.V, sh.seq_len,
                  sh.vocab_size);
      return 1;
    }
    if (h.vocab_hash && sh.vocab_hash && h.vocab_hash != sh.vocab_hash) {
      *err = strf("%s was trained with another vocabulary than the shards '%s' (vocabulary hash %08x, the shards' "
                  "%08x): resume on the run's own shards",
                  resume.c_str(), train.c_str(), h.vocab_hash, sh.vocab_hash);
      return 1;
    }
    mom1->assign(data.begin() + m->num_params, data.begin() + 2 * m->num_params);
    mom2->assign(data.begin() + 2 * m->num_params, data.end());
    *step = h.step, *samples = h.samples_seen, *seed = (long long)h.seed;
    printf("resumed from %s at step %" PRIu64 " (%" PRIu64 " sequences seen)\n", resume.c_str(), *step, *samples);
    return 0;
  }
  if (!init.empty()) {
    CkptHeader h;
    if (!model_for_longer_t(init, micro, R, T, m, &h, err)) return 1;
    if (h.V != (int)sh.vocab_size) {
      *err = strf("--init %s has V = %d but the data V = %u", init.c_str(), h.V, sh.vocab_size);
      return 1;
    }
    printf("a new run from the weights of %s (T = %d%s)\n", init.c_str(), h.T,
           h.T < T ? strf(", position rows %d to %d copied from rows t mod %d", h.T, T - 1, h.T).c_str() : "");
  } else {
    Config c;
    if (!config_load(config, &c, err)) return 2;
    c.V = (int)sh.vocab_size, c.T = T;
    if (!model_build(m, c, micro, R, err)) return 1;
    model_init(m, (uint64_t)*seed);
  }
  mom1->assign(m->num_params, 0.0f);
  mom2->assign(m->num_params, 0.0f);
  return 0;
}

static const char* kPretrainUsage =
    "usage: bigs pretrain --train 'DIR/train_*.bin' [--val DIR/val_000000.bin] [options]\n"
    "Masked-language-model pretraining of BiGS (docs/MODEL.md section 12); defaults are the paper's recipe.\n"
    "Writes OUT/model.bin (parameters), OUT/state.bin (to --resume) and OUT/log.jsonl.";

static int cmd_pretrain(World& w, int argc, char** argv) {
  const char* cmd = "pretrain";
  std::string train, val, config = "tiny", out = "out", resume, init, batches, schedule = "cosine", masking = "dynamic";
  bool overwrite = false;
  Device device;
  long long batch = 1048, micro = 8, steps = 100000, warmup = 2000, decay_steps = 0, eval_every = 1000,
            eval_seqs = 2048, log_every = 10, save_every = 1000, seed = 1, threads = 0, stop_at = 0;
  double lr = 6e-4, alpha = 0.1, clip = 0, dropout = 0.1, timeout = w.timeout;
  AdamW opt;
  MaskSpec ms;
  std::vector<Flag> flags = {
      {Flag::Str, "train", &train, 0, 0, "training shards, a glob (quote it)"},
      {Flag::Str, "val", &val, 0, 0, "validation shards, a glob"},
      {Flag::Str, "config", &config, 0, 0, "tiny, base, large, or a file of 'key value' lines"},
      {Flag::Str, "out", &out, 0, 0, "directory for checkpoints and the log"},
      {Flag::Str, "resume", &resume, 0, 0, "a state.bin to continue from, exactly (with the run's settings)"},
      {Flag::Switch, "overwrite", &overwrite, 0, 0, "replace the run already in --out (else refused)"},
      {Flag::Str, "init", &init, 0, 0,
       "a new run (fresh AdamW moments and schedule, step 0) from this checkpoint's weights, at the data's T, "
       "which may be longer: new position rows copy the learned ones (row t = row t mod the old T); --config "
       "is then the checkpoint's"},
      {Flag::Str, "batches", &batches, 0, 0,
       "train on these already-masked batches (docs/FORMATS.md) instead of --train's shards"},
      {Flag::Str, "masking", &masking, 0, 0,
       "dynamic (fresh masks at every sighting; 15% of the non-special tokens, random replacements among them) "
       "or static (the authors': one fixed mask per sequence, round(0.15 x its length with [CLS] and [SEP]), "
       "replacements from the whole vocabulary); docs/MODEL.md section 12"},
      {Flag::Int, "batch", &batch, 1, 1 << 24, "sequences per optimizer step"},
      {Flag::Int, "micro-batch", &micro, 1, 1 << 20, "sequences per forward/backward; must divide --batch"},
      {Flag::Int, "steps", &steps, 1, 1LL << 40, "optimizer steps in all"},
      {Flag::Int, "stop-at", &stop_at, 0, 1LL << 40, "save and stop at this step (a time slice); 0 = --steps"},
      {Flag::Num, "lr", &lr, 0, 10, "peak learning rate"},
      {Flag::Str, "schedule", &schedule, 0, 0, "cosine, linear or constant (after warmup)"},
      {Flag::Int, "warmup", &warmup, 0, 1LL << 40, "linear warmup steps"},
      {Flag::Int, "decay-steps", &decay_steps, 0, 1LL << 40, "step where the decay ends; 0 = --steps"},
      {Flag::Num, "alpha", &alpha, 0, 1, "cosine: final LR as a fraction of the peak"},
      {Flag::Num, "dropout", &dropout, 0, 0.9, "dropout after the embeddings"},
      {Flag::Num, "mask-prob", &ms.prob, 0.001, 1, "fraction of tokens to predict"},
      {Flag::Int, "max-predictions", &ms.max_predictions, 1, 1 << 16, "predicted tokens per sequence, at most"},
      {Flag::Int, "eval-every", &eval_every, 0, 1LL << 40, "validate every this many steps; 0 = only at the end"},
      {Flag::Int, "eval-seqs", &eval_seqs, 1, 1LL << 40, "validation sequences per evaluation"},
      {Flag::Int, "log-every", &log_every, 1, 1LL << 40, "print progress every this many steps"},
      {Flag::Int, "save-every", &save_every, 0, 1LL << 40, "checkpoint every this many steps; 0 = only at the end"},
      {Flag::Int, "seed", &seed, 0, 1LL << 62, "seed of the init, data order, masks and dropout"},
      {Flag::Int, "threads", &threads, 0, 4096, "CPU threads; 0 = all"},
  };
  training_flags(&flags, &device, &opt, &clip, &timeout);
  if (int rc = training_parse(w, cmd, argc, argv, flags, kPretrainUsage, &timeout); rc >= 0) return rc;
  if (train.empty() && batches.empty())
    return fail_all(w, cmd, "--train is required (a glob of shards from `data_prep pretrain`), or --batches", 2);
  if (!train.empty() && !batches.empty()) return fail_all(w, cmd, "give --train or --batches, not both", 2);
  if (!init.empty() && !resume.empty())
    return fail_all(w, cmd, "--init starts a new run and --resume continues one: give one of them", 2);
  if (masking != "dynamic" && masking != "static")
    return fail_all(w, cmd, "--masking: expected dynamic or static", 2);
  std::string err;
  if (!out_dir_named(out, &err)) return fail_all(w, cmd, err, 2);
  if (schedule != "cosine" && schedule != "linear" && schedule != "constant")
    return fail_all(w, cmd, "--schedule: expected cosine, linear or constant", 2);
  // A resumed run takes its settings from state.bin (version 3).
  bool resume_at_end = false;
  if (int rc = pretrain_resume_settings(resume, flags, &schedule, &masking, &steps, seed, &config, &resume_at_end, &err))
    return fail_all(w, cmd, err, rc);
  ms.authors = masking == "static";
  if (!batch_splits(w, batch, micro, &err)) return fail_all(w, cmd, err, 2);
  LrSchedule sched{Schedule::Cosine, lr, warmup, decay_steps ? decay_steps : steps, alpha};
  if (schedule == "linear")
    sched.kind = Schedule::Linear;
  else if (schedule == "constant")
    sched.kind = Schedule::Constant;
  if (!device_check(device, &err)) return fail_all(w, cmd, err, 2);
  set_threads(threads);

  ShardSet tr, va;
  BatchFile bf;
  if (!batches.empty()) {
    if (!batch_file_read(batches, 16, &bf, &err)) return fail(cmd, err);  // the model's types: checked below
    if (bf.B != (uint32_t)batch || bf.steps < (uint64_t)steps)
      return fail(cmd, strf("%s holds %u steps of %u sequences; --batch is %lld and --steps %lld", batches.c_str(),
                            bf.steps, bf.B, batch, steps));
    tr.h.seq_len = bf.T, tr.h.vocab_size = bf.V;  // the data's T and V, as shards would give them
  } else if (!shards_open(train, &tr, &err)) {
    return fail(cmd, err);
  }
  if (!val.empty() && !shards_open(val, &va, &err)) return fail(cmd, err);
  if (!val.empty() && (va.h.seq_len != tr.h.seq_len || va.h.vocab_size != tr.h.vocab_size))
    return fail(cmd, strf("--val shards have T = %u, V = %u but the training data T = %u, V = %u", va.h.seq_len,
                          va.h.vocab_size, tr.h.seq_len, tr.h.vocab_size));
  if (!val.empty() && tr.h.set_id && va.h.set_id && tr.h.set_id != va.h.set_id)
    return fail(cmd, strf("%s and %s come from two different `data_prep pretrain` runs (shard set %016" PRIx64
                          " and %016" PRIx64 "): give the train and val shards of one run",
                          tr.paths[0].c_str(), va.paths[0].c_str(), tr.h.set_id, va.h.set_id));
  const int T = (int)tr.h.seq_len;
  // Rows through the MLM head per micro-batch: at most max_predictions per
  // sequence, or any number of a given batch's.
  const int R = (int)(micro * (batches.empty() ? std::min<long long>(ms.max_predictions, T) : T));
  Model m;
  std::vector<float> mom1, mom2;
  uint64_t step = 0, samples = 0;
  if (int rc = pretrain_model(resume, init, config, (int)micro, R, tr.h, train, &m, &mom1, &mom2, &step, &samples, &seed,
                              &err))
    return fail(cmd, err, rc);
  m.dropout = (float)dropout;
  m.dropout_seed = (uint64_t)seed;
  for (uint32_t s = 0; s < bf.steps; s++)  // --batches: every token type within the model's
    for (size_t i = 0; i < (size_t)bf.B * bf.T; i++)
      if (bf.types(s)[i] >= m.c.types)
        return fail(cmd, strf("%s: step %u has the token type %d, but the model has %d types", batches.c_str(), s,
                              bf.types(s)[i], m.c.types));
  DataParallel dp;
  if (!model_use_device(&m, device, &mom1, &mom2, &err)) return fail(cmd, err);
  if (!world_same_device(w, m, &err)) return fail_all(w, cmd, err, 2);
  if (!data_parallel_init(&dp, w, m, (int)(batch / micro / w.size), &err)) return fail(cmd, err);
  uint32_t data_id = batches.empty() ? 0 : crc32c(0, bf.data.data(), bf.data.size() * 4);
  for (const ShardSet* set : {&tr, &va})
    for (size_t i = 0; i < set->paths.size(); i++) {
      data_id = crc32c(data_id, set->paths[i].data(), set->paths[i].size() + 1);
      data_id = crc32c(crc32c(data_id, &set->counts[i], 8), &set->payload_crcs[i], 4);
    }
  if (!world_same_start(w, data_id, m, &mom1, &mom2, &err)) return fail_all(w, cmd, err, 2);
  print_model_plan(m);
  print_world(w, m, dp);
  if (device_name(m) == "cpu") device.precision = "fp32";  // what the CPU computes in (--precision is the GPU's)
  printf("settings:\n");
  print_settings(stdout, flags);
  if (batches.empty())
    printf("data: %zu training shards, %" PRIu64 " sequences of T = %d; %" PRIu64 " validation sequences\n",
           tr.paths.size(), tr.total, T, va.total);
  else
    printf("data: %s, %u masked batches of %u sequences of T = %d; %" PRIu64 " validation sequences\n",
           batches.c_str(), bf.steps, bf.B, T, va.total);
  // Rank 0 alone writes OUT: it holds the lock and the log (the other ranks
  // write their log lines nowhere).
  DirLock lock;  // one run per --out, for as long as this one lives
  if (!make_dir(out, &err) || (w.rank == 0 && !lock.acquire(out, &err))) return fail(cmd, err);
  if (w.rank == 0 && !out_dir_claim(out, {"state.bin", "model.bin"}, !resume.empty(), overwrite, &err))
    return fail(cmd, err);
  if (w.rank == 0 && !resume.empty() && !log_keep_until(out + "/log.jsonl", step, &err)) return fail(cmd, err);
  std::string log_path = w.rank == 0 ? out + "/log.jsonl" : "/dev/null";
  FILE* log = fopen(log_path.c_str(), resume.empty() ? "w" : "a");
  if (!log) return fail(cmd, strf("cannot write %s: %s", log_path.c_str(), strerror(errno)));
  // A save that fails (a full disk, a write error) stops the run: its
  // previous checkpoint is intact, and training on without a way to save
  // would spend hours that the next crash would lose.
  int64_t saved_step = resume.empty() ? -1 : (int64_t)step;  // what state.bin holds
  CkptMeta run_meta;  // what every checkpoint of this run records
  run_meta.vocab_hash = tr.h.vocab_hash;
  run_meta.run_kind = kRunPretrain;
  run_meta.micro = (uint32_t)micro;
  run_meta.run = RunSettings{lr, alpha, dropout, clip, opt.beta1, opt.beta2, opt.eps, opt.weight_decay, ms.prob, 0,
                             warmup, sched.total, steps, batch, 0, (int16_t)sched.kind, (int16_t)ms.authors,
                             (int32_t)ms.max_predictions, 0, 0, 0};
  auto save = [&](const char* why) {
    world_share_moments(dp, m, mom1, mom2);  // every rank: the moments are sharded
    model_to_host(m, &mom1, &mom2);          // from the GPU, when the model is there
    if (w.mpi && !world_same_params(w, m, &err)) {
      if (w.rank == 0) fail(cmd, err);
      return false;
    }
    if (w.rank > 0) return true;
    fflush(log);  // the log holds every step the checkpoint does
    bool ok = checkpoint_save(out + "/state.bin", m, &mom1, &mom2, step, samples, (uint64_t)seed, &err, run_meta);
    if (ok) saved_step = (int64_t)step;
    ok = ok && checkpoint_save(out + "/model.bin", m, nullptr, nullptr, step, samples, (uint64_t)seed, &err,
                               CkptMeta{"", run_meta.vocab_hash});
    if (ok)
      printf("saved %s/state.bin and %s/model.bin at step %" PRIu64 " (%s)\n", out.c_str(), out.c_str(), step, why);
    else if (saved_step >= 0)
      fail(cmd, strf("%s\nbigs %s: stopping; %s/state.bin still holds step %" PRId64
                     ": fix the cause (free some space?) and continue with --resume %s/state.bin",
                     err.c_str(), cmd, out.c_str(), saved_step, out.c_str()));
    else
      fail(cmd, err + "\nbigs " + cmd + ": stopping; no checkpoint was saved");
    return ok;
  };
  auto validate = [&]() {
    if (val.empty()) return true;
    EvalResult r;
    if (!evaluate_mlm(m, w, va, eval_seqs, ms, &r, &err)) return false;
    printf("step %" PRIu64 " | val loss %.4f | val accuracy %.4f (%lld predictions)\n", step, r.loss, r.accuracy,
           r.rows);
    fprintf(log, "{\"step\": %" PRIu64 ", \"val_loss\": %.6f, \"val_accuracy\": %.6f}\n", step, r.loss, r.accuracy);
    fflush(log);
    return true;
  };

  stop_on_signals();
  StepSettings ss{(int)micro, (int)(batch / micro), clip, opt};
  const std::vector<int> mine = rank_sequences(w, (int)batch, (int)micro);  // of every batch
  std::vector<int> ids(mine.size() * T), types(mine.size() * T, 0), targets(mine.size() * T);
  DataOrder order;  // keeps the current shard open across steps
  order.s = &tr, order.seed = (uint64_t)seed;
  double t_start = now_seconds(), t_last = t_start;  // t_last, last_logged: the current tokens/s interval
  uint64_t last_logged = step;
  uint64_t step0 = step;
  int status = 0;
  const uint64_t last = stop_at ? std::min<uint64_t>(stop_at, steps) : steps;
  while (step < last) {
    // This rank's sequences of one optimizer batch, read and masked (each
    // by its number in the run, whichever rank reads it).
    for (size_t i = 0; i < mine.size(); i++) {
      if (!batches.empty()) {  // this step's batch from the file, as it is
        const size_t at = (size_t)mine[i] * T;
        std::copy_n(bf.ids(step) + at, T, &ids[i * T]);
        std::copy_n(bf.types(step) + at, T, &types[i * T]);
        std::copy_n(bf.targets(step) + at, T, &targets[i * T]);
        continue;
      }
      const uint64_t k = samples + (uint64_t)mine[i];
      uint64_t where = 0;
      if (!order.read(k, &ids[i * T], &err, &where)) return fail(cmd, err);
      Rng rng = ms.authors ? mask_rng_static((uint64_t)seed, where) : mask_rng_train((uint64_t)seed, k);
      mask_sequence(&ids[i * T], &targets[i * T], T, m.c.V, tr.h, ms, rng);
    }
    double lr_now = lr_at(sched, (long long)step);
    StepResult r;
    if (!train_step(m, dp, Batch{(int)mine.size(), ids.data(), types.data(), targets.data(), nullptr}, (int)batch, ss,
                    step, lr_now, mom1, mom2, &r, &err)) {
      fclose(log);
      if (r.finite) return fail(cmd, strf("step %" PRIu64 ": %s", step + 1, err.c_str()));
      return fail_all(w, cmd, strf("step %" PRIu64 ": %s; stopping. The last good checkpoint is %s/state.bin; try a lower "
                           "--lr or a tighter --grad-clip",
                           step + 1, err.c_str(), out.c_str()),
                      1);
    }
    step++;
    samples += batch;
    // %.17g: the exact double, so runs can be compared bit for bit.
    fprintf(log, "{\"step\": %" PRIu64 ", \"loss\": %.17g, \"lr\": %.9g, \"grad_norm\": %.9g}\n", step, r.loss, lr_now,
            r.grad_norm);
    if (step % log_every == 0 || step == (uint64_t)steps) {
      double t = now_seconds(), per_step = (t - t_start) / (double)(step - step0);
      double tokens_per_s = (double)batch * T * (double)(step - last_logged) / (t - t_last);
      // MFU where a peak is known: a GPU's, against the 989 TFLOP/s dense bf16 peak of an H100/H200 (bench's).
      const double mfu = device_name(m) == "cpu" ? 0
                         : bench_flops(m.c, (int)batch, (int)(batch * std::min<long long>(ms.max_predictions,
                                                                                         std::llround(ms.prob * T)))) *
                               (double)(step - last_logged) / (t - t_last) / (989e12 * w.size);
      printf("step %" PRIu64 "/%lld | loss %.4f | lr %.3g | grad norm %.3f | %.0f tokens/s%s%s | %s left\n", step, steps,
             r.loss, lr_now, r.grad_norm, tokens_per_s,
             w.mpi ? strf(" (%d ranks, %.0f each)", w.size, tokens_per_s / w.size).c_str() : "",
             mfu > 0 ? strf(" | MFU %.1f%% (of 989 TFLOP/s)", 100 * mfu).c_str() : "",
             format_duration(per_step * (double)(steps - step)).c_str());
      t_last = t, last_logged = step;
      fflush(stdout);
      fflush(log);
    }
    bool paused = false;  // evaluating or saving: not part of the training speed
    if (eval_every && step % eval_every == 0 && step != (uint64_t)steps) {
      if (!validate()) {
        if (w.mpi) return fail(cmd, err);  // this rank alone: no collective may follow
        status = 1;
        break;
      }
      paused = true;
    }
    if (save_every && step % save_every == 0 && step != (uint64_t)steps) {
      if (!save("periodic")) return 1;
      paused = true;
    }
    if (paused) t_last = now_seconds(), last_logged = step;
    if (int sig = agreed_stop_signal(w)) {
      printf("signal %d: stopping after step %" PRIu64 "\n", sig, step);
      status = 128 + sig;
      break;
    }
  }
  // The end of the run validates (a --stop-at slice does not: the run goes
  // on, and its log must match one never stopped); a resumed run that was
  // already at its end has that line in its log.
  if (status == 0 && step == (uint64_t)steps && !resume_at_end && !validate()) {
    if (w.mpi) return fail(cmd, err);
    status = 1;
  }
  if (resume_at_end)
    printf("%s is already at step %lld, the run's last: nothing to train; its checkpoints are saved again\n",
           resume.c_str(), steps);
  if (status == 1) fail(cmd, err);
  const bool saved = save(status                   ? "interrupted; continue with --resume"
                          : step < (uint64_t)steps ? "--stop-at"
                                                   : "final");
  fclose(log);
  return saved ? status : 1;
}

static const char* kFillMaskUsage =
    "usage: bigs fill-mask --ckpt CKPT --vocab VOCAB [--top-k K] [--seq T] [--json] \"text with [MASK]\" ...\n"
    "For each [MASK] of each text, prints K lines: token<TAB>probability. With --json, one JSON object per\n"
    "text instead: {\"text\", \"masks\": [{\"position\", \"candidates\": [{\"id\", \"token\", \"probability\"}]}]},\n"
    "probabilities at full precision (%.17g), positions counted from [CLS] = 0.";

// s as a JSON string: quotes, backslashes and control characters escaped,
// UTF-8 passed through.
static std::string json_quote(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\')
      o += '\\', o += (char)c;
    else if (c < 0x20)
      o += strf("\\u%04x", c);
    else
      o += (char)c;
  }
  return o + "\"";
}

static int cmd_fill_mask(int argc, char** argv) {
  const char* cmd = "fill-mask";
  std::string ckpt, vocab;
  Device device;
  long long top_k = 5, seq = 0, threads = 0;
  bool json = false;
  std::vector<Flag> flags = {
      {Flag::Str, "ckpt", &ckpt, 0, 0, "a model.bin or state.bin"},
      {Flag::Str, "vocab", &vocab, 0, 0, "the vocab.txt the model was trained with"},
      {Flag::Int, "top-k", &top_k, 1, 65536, "candidates per [MASK]"},
      {Flag::Int, "seq", &seq, 0, 1 << 20, "pad to this length; 0 = the model's T (as it was trained)"},
      {Flag::Int, "threads", &threads, 0, 4096, "CPU threads; 0 = all"},
      {Flag::Switch, "json", &json, 0, 0, "one JSON object per text (ids, tokens, full-precision probabilities)"},
  };
  device_flags(&flags, &device);
  std::vector<std::string> texts;
  if (int rc = parse_command(cmd, argc, argv, flags, kFillMaskUsage, &texts); rc >= 0) return rc;
  if (ckpt.empty() || vocab.empty()) return fail(cmd, "--ckpt and --vocab are required", 2);
  if (texts.empty()) return fail(cmd, "give at least one text with [MASK] in it", 2);
  std::string err;
  if (!device_check(device, &err)) return fail(cmd, err, 2);
  set_threads(threads);
  Tokenizer tok;
  if (!tok.load(vocab, &err)) return fail(cmd, err);
  CkptHeader h;
  std::vector<float> data;
  Model m;
  if (!checkpoint_read(ckpt, &h, &data, &err)) return fail(cmd, err);
  int T = seq ? (int)seq : h.T;
  if (!model_from_checkpoint(ckpt, 1, T, T, -1, &m, &h, &data, nullptr, &err)) return fail(cmd, err);
  if (tok.vocab_size() != m.c.V)
    return fail(cmd, strf("%s has %d tokens but the model's vocabulary has %d; use the vocab it was trained with",
                          vocab.c_str(), tok.vocab_size(), m.c.V));
  if (!model_use_device(&m, device, nullptr, nullptr, &err)) return fail(cmd, err);
  for (const std::string& text : texts) {
    std::vector<int> ids, types, targets(T, -1);
    tok.encode_model_input(text, nullptr, T, true, &ids, &types);
    int masks = 0;
    for (int t = 0; t < T; t++)
      if (ids[t] == tok.mask_id()) targets[t] = 0, masks++;  // any target: only the logits are used
    if (masks == 0) return fail(cmd, strf("no [MASK] in \"%s\" (within the first %d tokens)", text.c_str(), T));
    Batch bt{1, ids.data(), types.data(), targets.data(), nullptr};
    Loss loss;
    if (!model_forward(m, bt, false, &loss, &err)) return fail(cmd, err);
    std::vector<int> positions;  // the logits rows are the [MASK] positions in order
    for (int t = 0; t < T; t++)
      if (targets[t] >= 0) positions.push_back(t);
    if (json) printf("{\"text\": %s, \"masks\": [", json_quote(text).c_str());
    for (int r = 0; r < loss.count; r++) {
      const float* x = m.a.logits + (size_t)r * m.c.V;
      float mx = *std::max_element(x, x + m.c.V);
      double z = 0;
      for (int v = 0; v < m.c.V; v++) z += std::exp((double)x[v] - mx);
      std::vector<int> order(m.c.V);
      for (int v = 0; v < m.c.V; v++) order[v] = v;
      int k = (int)std::min<long long>(top_k, m.c.V);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) { return x[a] > x[b]; });
      if (json) printf("%s{\"position\": %d, \"candidates\": [", r ? ", " : "", positions[r]);
      for (int i = 0; i < k; i++) {
        double p = std::exp((double)x[order[i]] - mx) / z;
        if (json)
          printf("%s{\"id\": %d, \"token\": %s, \"probability\": %.17g}", i ? ", " : "", order[i],
                 json_quote(tok.token(order[i])).c_str(), p);
        else
          printf("%s\t%.9f\n", tok.token(order[i]).c_str(), p);
      }
      if (json) printf("]}");
    }
    if (json) printf("]}\n");
  }
  return 0;
}


#include "bigsc/cost.h"
#include "bigsc/glue.h"

// ============================================================================
// main
// ============================================================================

static const char* kUsage =
    "usage: bigs COMMAND [options]   (bigs COMMAND --help for each)\n"
    "  pretrain    masked-language-model pretraining on shards from `data_prep pretrain`\n"
    "  fill-mask   the model's top guesses for each [MASK] in a text\n"
    "  finetune    fine-tune a classifier on a GLUE task file from `data_prep glue`\n"
    "  eval        a fine-tuned model's GLUE metrics on labelled task files\n"
    "  predict     a GLUE submission file from a test task file\n"
    "  bench       training-step throughput (tokens/s, MFU) on random tokens\n";

// srun without an MPI plugin (MpiDefault=none and no --mpi=pmix) starts its
// tasks as separate processes that no PMI variable joins, and with a plugin
// that this MPI cannot use each task comes up as a world of one: either
// way each would run the whole command alone. The tasks of such an srun
// step, and their number.
static int srun_tasks_alone(const World& w) {
  const char *tasks = getenv("SLURM_STEP_NUM_TASKS"), *step = getenv("SLURM_STEP_ID");
  if (w.size > 1 || !tasks || !step || !isdigit((unsigned char)step[0])) return 0;  // not a task of an srun step
  return atoi(tasks);
}

static int run_command(World& w, const std::string& cmd, int argc, char** argv) {
  if (int tasks = srun_tasks_alone(w); tasks > 1 && (cmd == "pretrain" || cmd == "finetune")) {
    const char* id = getenv("SLURM_PROCID");
    if (id && atoi(id) != 0) return 2;  // said once, by task 0
#ifdef BIGS_MPI
    return fail(cmd.c_str(),
                strf("srun started %d tasks that are not ranks of one MPI job (%s), so each would train alone: use "
                     "srun --mpi=pmix (srun --mpi=list shows the plugins), or mpirun inside the allocation",
                     tasks, w.mpi ? "MPI made each a world of one: its PMI is not the one srun offers" : "no PMI variables"),
                2);
#else
    return fail(cmd.c_str(),
                strf("srun started %d tasks, and this bigs was built without MPI, so each would train alone: "
                     "build it where mpicxx is (README \"Data-parallel training\") and use srun --mpi=pmix",
                     tasks),
                2);
#endif
  }
  if (cmd == "pretrain") return cmd_pretrain(w, argc - 1, argv + 1);
  if (cmd == "finetune") return cmd_finetune(w, argc - 1, argv + 1);
  if (w.size > 1 && (cmd == "fill-mask" || cmd == "eval" || cmd == "predict" || cmd == "bench")) {
    // every rank would do the same work and write the same files
    w.agreed = true;
    const char* why = "runs in one process: start it without mpirun (pretrain and finetune run on several ranks)";
    return w.rank == 0 ? fail(cmd.c_str(), why, 2) : 2;
  }
  if (cmd == "fill-mask") return cmd_fill_mask(argc - 1, argv + 1);
  if (cmd == "eval") return cmd_eval(argc - 1, argv + 1);
  if (cmd == "predict") return cmd_predict(argc - 1, argv + 1);
  if (cmd == "bench") return cmd_bench(argc - 1, argv + 1);
  fprintf(stderr, "bigs: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return 2;
}

int bigs_main(int argc, char** argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    printf("%s", kUsage);
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  World w;  // one rank, unless a launcher started this process (world_init)
  world_init(&w, &argc, &argv);
  // A CUDA, NCCL or allocation error on one rank still ends the job through
  // world_finish (MPI_Abort), not by leaving the other ranks waiting in a
  // collective until --timeout (srun does not end them the way mpirun does).
  int status = 2;
  try {
    status = run_command(w, cmd, argc, argv);
  } catch (const std::exception& e) {
    fprintf(stderr, "bigs: %s\n", e.what());
    status = 1;
  }
  return world_finish(w, status);
}

}  // namespace bigs

#ifndef BIGS_NO_MAIN
// libgomp's threads spin (busy-wait, 300,000 rounds by default) at every
// barrier before they sleep, so the kernel sees them as CPU-bound. When
// another process holds one of the cores, the thread that shares it then
// waits out whole time slices behind that process at every one of the many
// small parallel regions of a step: a small fine-tuning ran 5 to 20 times
// slower with 2 threads than with 1 (README "Threads on a busy machine").
// A thread that sleeps at once is woken as soon as work comes. libgomp reads
// OMP_WAIT_POLICY when it is loaded, before main, so bigs sets it and runs
// itself again, once; a policy the user chose (OMP_WAIT_POLICY or
// GOMP_SPINCOUNT) is kept. If the exec fails, bigs goes on as it is.
static void openmp_wait_passively(char** argv) {
#if defined(_OPENMP) && defined(__linux__)
  if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0) execv("/proc/self/exe", argv);
#else
  (void)argv;
#endif
}

// A failed CUDA call (CudaError) or an allocation failure ends here, with
// its message, instead of in std::terminate.
int main(int argc, char** argv) {
  openmp_wait_passively(argv);
  try {
    return bigs::bigs_main(argc, argv);
  } catch (const std::exception& e) {
    fprintf(stderr, "bigs: %s\n", e.what());
    return 1;
  }
}
#endif
