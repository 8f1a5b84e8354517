// bigsc/dataloader.h continues bigs.cu (included before the commands): pretraining shards, the
// order sequences are seen in, masking, and the already-masked batches of pretrain --batches.

#pragma once

// ============================================================================
// Data: pretraining shards, the order sequences are seen in, and masking
// ============================================================================

struct ShardSet {
  std::vector<std::string> paths;
  std::vector<uint64_t> counts;  // sequences per shard
  uint64_t total = 0;
  ShardHeader h;  // of the first; every shard must agree on T, V and the ids
  std::vector<uint32_t> versions, payload_crcs;  // per shard
  // Shards whose checksum this process has verified. The readers open them
  // through shard_open, which verifies each in full the first time: when the
  // training order reaches it (it then reads every row of it, in a shuffled
  // order) or the first evaluation reads it. One sequential pass per shard
  // and run, instead of one over the whole corpus at start-up.
  mutable std::vector<char> verified;
};

static bool shards_open(const std::string& pattern, ShardSet* s, std::string* err) {
  glob_t g;
  int rc = glob(pattern.c_str(), 0, nullptr, &g);
  if (rc != 0) {
    *err = strf("no file matches '%s'; run `data_prep pretrain` to make shards", pattern.c_str());
    if (rc != GLOB_NOMATCH) globfree(&g);
    return false;
  }
  s->paths.assign(g.gl_pathv, g.gl_pathv + g.gl_pathc);  // sorted by glob
  globfree(&g);
  for (const std::string& p : s->paths) {
    FILE* f = fopen(p.c_str(), "rb");
    if (!f) {
      *err = strf("cannot open %s: %s", p.c_str(), strerror(errno));
      return false;
    }
    ShardHeader h;
    bool ok = read_shard_header(f, p.c_str(), &h, err);
    fclose(f);
    if (!ok) return false;
    if (s->counts.empty()) s->h = h;
    if (h.seq_len != s->h.seq_len || h.vocab_size != s->h.vocab_size || h.pad_id != s->h.pad_id ||
        h.cls_id != s->h.cls_id || h.sep_id != s->h.sep_id || h.mask_id != s->h.mask_id) {
      *err = strf(
          "%s has T = %u, V = %u, but %s has T = %u, V = %u; shards of one run must come from one "
          "`data_prep pretrain`",
          p.c_str(), h.seq_len, h.vocab_size, s->paths[0].c_str(), s->h.seq_len, s->h.vocab_size);
      return false;
    }
    s->counts.push_back(h.num_sequences);
    s->total += h.num_sequences;
    s->versions.push_back(h.version);
    s->payload_crcs.push_back(h.payload_crc);
    s->verified.push_back(0);
  }
  // Version 3: one shard set, whole (a kill during `data_prep pretrain`'s
  // renames leaves old and new shards side by side).
  std::vector<uint32_t> indices;  // of the shards found (not sized by a header's set_shards: it may be damaged)
  for (size_t i = 0; i < s->paths.size(); i++) {
    FILE* f = fopen(s->paths[i].c_str(), "rb");
    ShardHeader h;
    const bool ok = f && read_shard_header(f, s->paths[i].c_str(), &h, err);
    if (f) fclose(f);
    if (!ok) return false;
    const bool v3 = h.version >= 3, first_v3 = s->h.version >= 3;
    if (v3 != first_v3 || (v3 && h.set_id != s->h.set_id)) {
      *err = strf("%s and %s come from two different `data_prep pretrain` runs (shard set %016" PRIx64
                  " and %016" PRIx64 "): the folder holds a mix of two sets, as a run stopped while it renamed its "
                  "shards leaves; re-run `data_prep pretrain` into it, or into an empty folder",
                  s->paths[0].c_str(), s->paths[i].c_str(), s->h.set_id, h.set_id);
      return false;
    }
    if (v3) {
      if (h.set_shards != s->h.set_shards || h.shard_index >= h.set_shards) {
        *err = strf("%s: pretraining shard has a damaged header (shard %u of %u); %s", s->paths[i].c_str(),
                    h.shard_index, h.set_shards, kShardFix);
        return false;
      }
      indices.push_back(h.shard_index);
    }
  }
  // A glob of part of a set (one shard, say) is allowed, with a note: it is
  // also what a first run stopped while it renamed its shards leaves.
  std::sort(indices.begin(), indices.end());
  const bool whole = s->paths.size() == s->h.set_shards &&
                     std::adjacent_find(indices.begin(), indices.end()) == indices.end();  // each index once
  if (s->h.version >= 3 && !whole)
    fprintf(stderr,
            "note: '%s' matches %zu of the %u shards of its set (%016" PRIx64 ", made by one `data_prep pretrain`): "
            "training on part of it; if shards are missing (a run stopped while it renamed them), re-run `data_prep "
            "pretrain`\n",
            pattern.c_str(), s->paths.size(), s->h.set_shards, s->h.set_id);
  if (s->total == 0) {
    *err = strf("the shards matching '%s' hold no sequences", pattern.c_str());
    return false;
  }
  const long old = std::count_if(s->versions.begin(), s->versions.end(), [](uint32_t v) { return !has_checksums(v); });
  if (old)
    fprintf(stderr, "%s%s\n", unchecked_note(s->paths[0].c_str(), kShardWhat, kShardFix).c_str(),
            old > 1 ? strf(" (and %ld more of '%s')", old - 1, pattern.c_str()).c_str() : "");
  return true;
}

// Opens shard i for reading rows; the first time, verifies its checksum.
static FILE* shard_open(const ShardSet& s, size_t i, std::string* err) {
  const char* path = s.paths[i].c_str();
  FILE* f = fopen(path, "rb");
  if (!f) {
    *err = strf("cannot open %s: %s", path, strerror(errno));
    return nullptr;
  }
  if (!s.verified[i] && has_checksums(s.versions[i]) &&
      !verify_payload(f, path, sizeof(ShardHeader), s.payload_crcs[i], kShardWhat, kShardFix, err)) {
    fclose(f);
    return nullptr;
  }
  s.verified[i] = 1;
  return f;
}

// Which sequence is the k-th one a run sees. Every epoch visits the shards in
// a fresh seeded order and each shard's sequences in a fresh seeded order, so
// the data position of a run is one number (samples seen) and a resumed run
// continues exactly. Memory is one shard's permutation, not the corpus's.
struct DataOrder {
  const ShardSet* s = nullptr;
  uint64_t seed = 0;
  int64_t cached_epoch = -1, cached_shard = -1;
  std::vector<uint32_t> perm;  // the cached shard's sequence order
  FILE* f = nullptr;           // the cached shard, open

  ~DataOrder() {
    if (f) fclose(f);
  }

  static std::vector<uint32_t> permutation(uint64_t n, uint64_t seed) {  // Fisher-Yates
    std::vector<uint32_t> p(n);
    for (uint64_t i = 0; i < n; i++) p[i] = (uint32_t)i;
    Rng r{seed};
    for (uint64_t i = n; i > 1; i--) std::swap(p[i - 1], p[r.below((uint32_t)i)]);
    return p;
  }

  // Reads sequence k (T ids) into out; *where, when given, gets the
  // sequence's place in the corpus (its row, counting the shards in their
  // sorted order), the same in every epoch.
  bool read(uint64_t k, int* out, std::string* err, uint64_t* where = nullptr) {
    uint64_t epoch = k / s->total, r = k % s->total;
    std::vector<uint32_t> shard_order = permutation(s->paths.size(), splitmix64(seed ^ (epoch * 2 + 1)));
    size_t i = 0;
    while (r >= s->counts[shard_order[i]]) r -= s->counts[shard_order[i++]];
    int64_t shard = shard_order[i];
    if ((int64_t)epoch != cached_epoch || shard != cached_shard) {
      perm = permutation(s->counts[shard], splitmix64(seed ^ splitmix64(epoch * 1000003 + shard)));
      if (f) fclose(f);
      cached_epoch = cached_shard = -1;
      if (!(f = shard_open(*s, shard, err))) return false;
      cached_epoch = epoch, cached_shard = shard;
    }
    if (where) {
      *where = perm[r];
      for (int64_t j = 0; j < shard; j++) *where += s->counts[j];
    }
    return read_row(f, s->paths[shard], s->h.seq_len, s->h.vocab_size, perm[r], out, err);
  }

  // Reads row `row` (T ids) of an open shard; an id >= V is an error that
  // says where it is (masking would make it a target past the logits).
  static bool read_row(FILE* f, const std::string& path, int T, uint32_t V, uint64_t row, int* out, std::string* err) {
    std::vector<uint16_t> buf(T);
    if (fseek(f, (long)(sizeof(ShardHeader) + row * T * 2), SEEK_SET) != 0 || fread(buf.data(), 2, T, f) != (size_t)T) {
      *err = strf("cannot read sequence %" PRIu64 " of %s", row, path.c_str());
      return false;
    }
    for (int t = 0; t < T; t++) {
      if (buf[t] >= V) {
        *err = strf("%s: sequence %" PRIu64 " has the id %u at position %d, but the vocabulary has %u tokens; %s",
                    path.c_str(), row, buf[t], t, V, kShardFix);
        return false;
      }
      out[t] = buf[t];
    }
    return true;
  }
};

struct MaskSpec {
  double prob = 0.15;              // of the maskable tokens
  long long max_predictions = 20;  // per sequence
  bool authors = false;            // --masking static: the authors' rule (mask_sequence)
};

// BERT's masking (docs/MODEL.md section 12), in place; targets gets the
// original id at each predicted position and -1 elsewhere. Returns the
// number of predicted positions. Two rules:
//  - dynamic (bigs's default): round(prob x maskable) positions (at least 1,
//    at most max_predictions) among the tokens that are not [CLS], [SEP],
//    [PAD] or [MASK]; of those 80% become [MASK], 10% a random token that is
//    not special and not [UNK], 10% stay (one uniform draw decides).
//  - the authors' (ms.authors): BERT's create_pretraining_data.py
//    (github.com/google-research/bert, create_masked_lm_predictions), which
//    made the authors' corpus (academic-budget-bert's data tools): Python 3's
//    round (half to even) of prob x the sequence's length counting [CLS] and
//    [SEP] (its non-[PAD] tokens), at least 1 and at most max_predictions;
//    every non-[PAD] token but [CLS] and [SEP] may be picked; 80% [MASK],
//    else one more draw: half stay, half become a token drawn from the whole
//    vocabulary (specials and the original included).
// Either way the positions are a uniformly random subset of the candidates.
static int mask_sequence(int* ids, int* targets, int T, int V, const ShardHeader& sp, const MaskSpec& ms, Rng& rng) {
  auto special = [&](int id) {
    return id == (int)sp.cls_id || id == (int)sp.sep_id || id == (int)sp.pad_id || id == (int)sp.mask_id;
  };
  auto candidate = [&](int id) {
    return ms.authors ? id != (int)sp.cls_id && id != (int)sp.sep_id && id != (int)sp.pad_id : !special(id);
  };
  std::vector<int> cand;
  int length = 0;  // non-[PAD] tokens, [CLS] and [SEP] included
  for (int t = 0; t < T; t++) {
    targets[t] = -1;
    length += ids[t] != (int)sp.pad_id;
    if (candidate(ids[t])) cand.push_back(t);
  }
  // nearbyint rounds half to even in the default rounding mode, as Python 3's round.
  const double want = ms.authors ? std::nearbyint(ms.prob * length) : (double)std::lround(ms.prob * cand.size());
  int n = (int)std::min<double>((double)ms.max_predictions, std::max(1.0, want));
  n = std::min(n, (int)cand.size());
  for (int i = 0; i < n; i++) {  // a partial Fisher-Yates shuffle picks n distinct positions
    std::swap(cand[i], cand[i + rng.below((uint32_t)(cand.size() - i))]);
    int t = cand[i];
    targets[t] = ids[t];
    float u = rng.uniform();
    if (u < 0.8f) {
      ids[t] = (int)sp.mask_id;
    } else if (ms.authors) {
      if (rng.uniform() >= 0.5f) ids[t] = (int)rng.below((uint32_t)V);
    } else if (u < 0.9f) {
      int r;
      do r = (int)rng.below((uint32_t)V);
      while (special(r) || r == (int)sp.unk_id);
      ids[t] = r;
    }
  }
  return n;
}

// The masks of training sequence k (its k-th sighting) and of validation
// sequence i come from their own seeded streams: fresh every time a training
// sequence is seen, identical at every evaluation.
static Rng mask_rng_train(uint64_t seed, uint64_t k) { return Rng{splitmix64(seed ^ splitmix64(k * 2 + 1))}; }
static Rng mask_rng_val(uint64_t i) { return Rng{splitmix64(0x5EEDull ^ splitmix64(i * 2))}; }
// --masking static: the masks of the training sequence at place `where` in
// the corpus (DataOrder::read), the same at every sighting, as in a corpus
// masked once when it was made.
static Rng mask_rng_static(uint64_t seed, uint64_t where) {
  return Rng{splitmix64(seed ^ splitmix64(where * 2 + 0x57A71Cull))};
}

// pretrain --batches: optimizer batches already masked, to train on instead
// of reading and masking shards (a seam for tests against other trainers).
// The file: a header of eight little-endian uint32, "BGBT" (0x54424742),
// version 1, V, T, B (sequences per step), steps, the CRC-32C of the payload,
// 0; then for each step three int32 arrays of (B, T): ids, token types, and
// targets (the original id at a predicted position, -1 elsewhere).
// docs/FORMATS.md describes it; dev/test_optimizer.py writes one.
struct BatchFile {
  uint32_t V = 0, T = 0, B = 0, steps = 0;
  std::vector<int32_t> data;  // steps x 3 x (B, T)
  const int32_t* ids(uint64_t step) const { return &data[(size_t)step * 3 * B * T]; }
  const int32_t* types(uint64_t step) const { return ids(step) + (size_t)B * T; }
  const int32_t* targets(uint64_t step) const { return ids(step) + (size_t)2 * B * T; }
};

static bool batch_file_read(const std::string& path, int types, BatchFile* bf, std::string* err) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) {
    *err = strf("cannot open --batches %s: %s", path.c_str(), strerror(errno));
    return false;
  }
  uint32_t h[8] = {0};
  const bool got = fread(h, 4, 8, f) == 8;
  const int64_t size = file_size_of(f);
  bool ok = got && h[0] == 0x54424742u && h[1] == 1;
  if (!ok)
    *err = strf("%s is not a batches file (version 1: magic \"BGBT\"; docs/FORMATS.md)", path.c_str());
  bf->V = h[2], bf->T = h[3], bf->B = h[4], bf->steps = h[5];
  const uint64_t n = (uint64_t)bf->steps * 3 * bf->B * bf->T;
  if (ok && (bf->V < 8 || bf->V > 65535 || bf->T < 1 || bf->T > (1 << 16) || bf->B < 1 || bf->steps < 1 ||
             (uint64_t)size != 32 + 4 * n)) {
    *err = strf("%s: V = %u, T = %u, B = %u, %u steps and %" PRId64 " bytes do not fit together; the file is damaged",
                path.c_str(), bf->V, bf->T, bf->B, bf->steps, size);
    ok = false;
  }
  if (ok) {
    bf->data.resize(n);
    ok = fread(bf->data.data(), 4, n, f) == n;
    if (!ok) *err = strf("cannot read %s: truncated", path.c_str());
  }
  fclose(f);
  if (ok && crc32c(0, bf->data.data(), n * 4) != h[6]) {
    *err = strf("%s: checksum mismatch: the file is damaged", path.c_str());
    ok = false;
  }
  for (uint32_t s = 0; ok && s < bf->steps; s++) {
    int predicted = 0;
    for (size_t i = 0; ok && i < (size_t)bf->B * bf->T; i++) {
      const int32_t id = bf->ids(s)[i], ty = bf->types(s)[i], tg = bf->targets(s)[i];
      predicted += tg >= 0;
      if (id < 0 || (uint32_t)id >= bf->V || ty < 0 || ty >= types || tg < -1 || (tg >= 0 && (uint32_t)tg >= bf->V)) {
        *err = strf("%s: step %u, sequence %zu, position %zu: id %d, type %d, target %d; ids and targets must be "
                    "below V = %u (targets -1 where nothing is predicted), types below %d",
                    path.c_str(), s, i / bf->T, i % bf->T, id, ty, tg, bf->V, types);
        ok = false;
      }
    }
    if (ok && predicted == 0) {
      *err = strf("%s: step %u predicts nothing (every target is -1)", path.c_str(), s);
      ok = false;
    }
  }
  return ok;
}
