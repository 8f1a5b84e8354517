// bigsc/glue.h continues bigs.cu (included after the cost device and bench): GLUE task files,
// metrics, and the finetune, eval and predict commands.

#pragma once

// ============================================================================
// GLUE: task files, metrics, fine-tuning, evaluation, submission files
// ============================================================================

// A GLUE task file (formats.h), loaded whole: even MNLI's training set is a
// few hundred MB at T = 128.
struct TaskData {
  TaskHeader h;
  int T = 0;
  size_t n = 0;
  std::vector<int> ids, types;  // (n, T)
  std::vector<float> labels;    // (n) class index or score; -1 without labels
  std::vector<uint32_t> index;  // (n) the row index, for submission files
  std::string task, split, path;
};

// Verifies the checksum (version 2) and every record: ids < V, types 0 or 1,
// labels that are class indices (or finite scores, or -1 in a test split).
static bool task_load(const std::string& path, TaskData* d, std::string* err) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) {
    *err = strf("cannot open %s: %s; make task files with `data_prep glue`", path.c_str(), strerror(errno));
    return false;
  }
  bool ok = read_task_header(f, path.c_str(), &d->h, err);
  uint32_t crc = 0;
  if (ok && !has_checksums(d->h.version))
    fprintf(stderr, "%s\n", unchecked_note(path.c_str(), kTaskWhat, kTaskFix).c_str());
  if (ok) {
    d->T = (int)d->h.seq_len, d->n = d->h.num_examples, d->path = path;
    d->task = d->h.task, d->split = d->h.split;
    size_t rs = task_record_size(d->h.seq_len);
    std::vector<uint8_t> rec(rs);
    std::vector<uint16_t> ids(d->T);
    std::vector<uint8_t> types(d->T);
    d->ids.resize(d->n * d->T), d->types.resize(d->n * d->T), d->labels.resize(d->n), d->index.resize(d->n);
    const uint32_t V = d->h.vocab_size, Y = d->h.num_labels;
    for (size_t i = 0; ok && i < d->n; i++) {
      ok = fread(rec.data(), 1, rs, f) == rs;
      if (!ok) {
        *err = strf("cannot read %s: truncated", path.c_str());
        break;
      }
      crc = crc32c(crc, rec.data(), rs);
      float& y = d->labels[i];
      unpack_task_record(rec.data(), d->h.seq_len, ids.data(), types.data(), &y, &d->index[i]);
      for (int t = 0; ok && t < d->T; t++) {
        d->ids[i * d->T + t] = ids[t], d->types[i * d->T + t] = types[t];
        if (ids[t] >= V || types[t] > 1) {
          *err = strf("%s: example %zu has the id %u and type %u at position %d (V = %u, types 0 or 1); %s",
                      path.c_str(), i, ids[t], types[t], t, V, kTaskFix);
          ok = false;
        }
      }
      const bool label_ok = !d->h.has_labels ? y == -1
                                             : Y == 1 ? std::isfinite(y) : y >= 0 && y < Y && y == std::floor(y);
      if (ok && !label_ok) {
        *err = strf("%s: example %zu has the label %g, not %s; %s", path.c_str(), i, y,
                    !d->h.has_labels ? "-1 (a test split)" : Y == 1 ? "a finite score" : "a class index", kTaskFix);
        ok = false;
      }
    }
    if (ok && has_checksums(d->h.version) && crc != d->h.payload_crc) {
      *err = checksum_error(path.c_str(), kTaskWhat, crc, d->h.payload_crc, kTaskFix);
      ok = false;
    }
  }
  fclose(f);
  return ok;
}

// The metrics of docs/MODEL.md section 12. Predictions are class indices (or the
// score for STS-B). Conventions follow scikit-learn / scipy: MCC and F1 are
// 0 where undefined (a constant prediction); Spearman ranks ties by their
// average rank; Pearson is 0 for a constant input.
static double metric_accuracy(const std::vector<double>& p, const std::vector<double>& g) {
  size_t k = 0;
  for (size_t i = 0; i < p.size(); i++) k += p[i] == g[i];
  return p.empty() ? 0 : (double)k / p.size();
}

static double metric_f1(const std::vector<double>& p, const std::vector<double>& g) {  // positive class 1
  double tp = 0, fp = 0, fn = 0;
  for (size_t i = 0; i < p.size(); i++)
    tp += p[i] == 1 && g[i] == 1, fp += p[i] == 1 && g[i] != 1, fn += p[i] != 1 && g[i] == 1;
  return tp == 0 ? 0 : 2 * tp / (2 * tp + fp + fn);
}

static double metric_mcc(const std::vector<double>& p, const std::vector<double>& g) {  // binary
  double tp = 0, tn = 0, fp = 0, fn = 0;
  for (size_t i = 0; i < p.size(); i++) {
    bool pp = p[i] == 1, gg = g[i] == 1;
    tp += pp && gg, tn += !pp && !gg, fp += pp && !gg, fn += !pp && gg;
  }
  double den = std::sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn));
  return den == 0 ? 0 : (tp * tn - fp * fn) / den;
}

static double metric_pearson(const std::vector<double>& x, const std::vector<double>& y) {
  size_t n = x.size();
  if (n == 0) return 0;
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; i++) mx += x[i], my += y[i];
  mx /= n, my /= n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; i++)
    sxy += (x[i] - mx) * (y[i] - my), sxx += (x[i] - mx) * (x[i] - mx), syy += (y[i] - my) * (y[i] - my);
  return sxx == 0 || syy == 0 ? 0 : sxy / std::sqrt(sxx * syy);
}

static std::vector<double> average_ranks(const std::vector<double>& x) {
  std::vector<size_t> o(x.size());
  for (size_t i = 0; i < o.size(); i++) o[i] = i;
  std::sort(o.begin(), o.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> r(x.size());
  for (size_t i = 0; i < o.size();) {
    size_t j = i;
    while (j + 1 < o.size() && x[o[j + 1]] == x[o[i]]) j++;
    for (size_t k = i; k <= j; k++) r[o[k]] = 0.5 * (double)(i + j) + 1;  // ties share their mean rank
    i = j + 1;
  }
  return r;
}

static double metric_spearman(const std::vector<double>& x, const std::vector<double>& y) {
  return metric_pearson(average_ranks(x), average_ranks(y));
}

// The metrics a task reports and the one that picks the best checkpoint
// (main): the authors' run_glue.py chooses by accuracy for MRPC and QQP, by
// Spearman's correlation for STS-B, by Matthews' for CoLA and by accuracy
// for the rest; the leaderboard's other metric is reported beside it.
struct TaskMetrics {
  std::string text;  // "accuracy 0.8123  f1 0.7789"
  double main = 0;
};

static TaskMetrics task_metrics(const std::string& task, const std::vector<double>& pred,
                                const std::vector<double>& gold) {
  TaskMetrics m;
  double acc = metric_accuracy(pred, gold);
  if (task == "cola") {
    m.main = metric_mcc(pred, gold);
    m.text = strf("mcc %.4f  accuracy %.4f", m.main, acc);
  } else if (task == "mrpc" || task == "qqp") {
    double f1 = metric_f1(pred, gold);
    m.main = acc;
    m.text = strf("f1 %.4f  accuracy %.4f", f1, acc);
  } else if (task == "stsb") {
    double p = metric_pearson(pred, gold), s = metric_spearman(pred, gold);
    m.main = s;
    m.text = strf("pearson %.4f  spearman %.4f", p, s);
  } else {
    m.main = acc;
    m.text = strf("accuracy %.4f", acc);
  }
  return m;
}

// Runs the classifier over a task file: predictions (class index, or the
// score) and the mean loss where labels exist. With a world, rank r runs
// batches r, r + ranks, ... and the predictions and each batch's loss are
// gathered: the result is one process's exactly.
static bool task_predict(Model& m, const TaskData& d, std::vector<double>* pred, double* mean_loss, std::string* err,
                         std::vector<float>* logits = nullptr,  // logits (n, labels), when asked (one process)
                         World* w = nullptr) {
  pred->assign(d.n, 0.0);
  if (logits) logits->assign(d.n * m.c.labels, 0.0f);
  const int T = m.c.T, Y = m.c.labels;
  const size_t batches = (d.n + m.B - 1) / m.B;
  std::vector<double> losses(batches, 0.0);
  for (size_t q = w ? w->rank : 0; q < batches; q += w ? w->size : 1) {
    const size_t i = q * m.B;
    int B = (int)std::min<size_t>(m.B, d.n - i);
    Batch bt{B, &d.ids[i * T], &d.types[i * T], nullptr, d.h.has_labels ? &d.labels[i] : nullptr};
    Loss loss;
    if (!model_forward(m, bt, false, &loss, err)) return false;
    losses[q] = loss.sum;
    for (int b = 0; b < B; b++) {
      const float* x = m.a.cls_logits + (size_t)b * Y;
      (*pred)[i + b] = Y == 1 ? x[0] : (double)(std::max_element(x, x + Y) - x);
      if (logits) std::copy(x, x + Y, logits->begin() + (i + b) * Y);
    }
  }
  if (w) world_reduce(*w, pred->data(), pred->size()), world_reduce(*w, losses.data(), losses.size());
  double loss_sum = 0;
  for (double l : losses) loss_sum += l;
  *mean_loss = d.n ? loss_sum / d.n : 0;
  return true;
}

static bool task_evaluate(Model& m, const TaskData& d, TaskMetrics* tm, double* loss, std::string* err,
                          World* w = nullptr) {
  if (!d.h.has_labels) {
    *err = d.split + " of " + d.task + " has no labels (a test split); use `bigs predict`";
    return false;
  }
  std::vector<double> pred;
  if (!task_predict(m, d, &pred, loss, err, nullptr, w)) return false;
  *tm = task_metrics(d.task, pred, std::vector<double>(d.labels.begin(), d.labels.end()));
  return true;
}

// Loads a classification model for a task file from a checkpoint. A head of
// the wrong size (or none: a pretrained MLM checkpoint) is initialised anew
// as the parameter table says (docs/MODEL.md section 9): the pooler N(0,
// 0.02), the classifier lecun normal, zero biases.
static bool task_model(const std::string& ckpt, const TaskData& d, int B, uint64_t seed, bool allow_new_head, Model* m,
                       std::string* err, CkptMeta* meta = nullptr) {
  CkptHeader h;
  std::vector<float> data;
  std::vector<std::string> fresh;
  if (!model_from_checkpoint(ckpt, B, 1, 0, (int)d.h.num_labels, m, &h, &data, &fresh, err)) return false;
  if (h.vocab_hash && d.h.vocab_hash && h.vocab_hash != d.h.vocab_hash) {
    *err = strf("%s was trained with another vocabulary than the task file %s (vocabulary hash %08x, the file's "
                "%08x): make the task files with the model's vocab.txt (`data_prep glue --vocab`)",
                ckpt.c_str(), d.path.c_str(), h.vocab_hash, d.h.vocab_hash);
    return false;
  }
  if (!allow_new_head && h.task[0] && d.task != h.task && !(d.task == "ax" && !strcmp(h.task, "mnli"))) {
    *err = strf("%s was fine-tuned on %s, not %s (the task of %s): use a checkpoint fine-tuned on %s", ckpt.c_str(),
                h.task, d.task.c_str(), d.path.c_str(), d.task == "ax" ? "mnli" : d.task.c_str());
    return false;
  }
  if (!allow_new_head && !h.task[0] && h.labels > 0)
    printf("note: %s does not record the task it was fine-tuned on (a version-%u or converted checkpoint): make sure "
           "it is a %s model\n",
           ckpt.c_str(), h.version, d.task.c_str());
  if (allow_new_head && h.task[0] && d.task != h.task)
    printf("starting from a model fine-tuned on %s (%s)\n", h.task, ckpt.c_str());
  if (meta) meta->vocab_hash = h.vocab_hash ? h.vocab_hash : d.h.vocab_hash;
  if (m->c.T != d.T) {
    *err = strf(
        "%s has T = %d but the task file has T = %d: inputs are padded to the checkpoint's T (docs/MODEL.md "
        "section 10); rebuild the file with `data_prep glue --seq %d`, or with dev/glue.sh pass --seq %d (or "
        "leave --seq out: it then takes the checkpoint's)",
        ckpt.c_str(), m->c.T, d.T, m->c.T, m->c.T);
    return false;
  }
  if (m->c.V != (int)d.h.vocab_size) {
    *err = strf("%s has a vocabulary of %d but the task file was made with %u tokens; use the model's vocab",
                ckpt.c_str(), m->c.V, d.h.vocab_size);
    return false;
  }
  if (!fresh.empty()) {
    if (!allow_new_head) {
      *err = strf("%s has no classification head with %u labels; fine-tune it first (`bigs finetune`)", ckpt.c_str(),
                  d.h.num_labels);
      return false;
    }
    Rng rng{seed ^ 0xC1A55ull};
    for (const TensorInfo& t : m->table)
      if (std::find(fresh.begin(), fresh.end(), t.name) != fresh.end())
        init_tensor(&m->params_mem[t.offset], t, rng, {});
    printf("new classification head with %u labels: %s\n", d.h.num_labels,
           fresh.size() == 4 ? "pool_w, pool_b, cls_w, cls_b" : "");
  }
  return true;
}

// --task in any case, and GLUE's spellings (SST-2, STS-B): the name bigs
// uses, or an error that suggests the nearest.
static bool task_name(std::string* task, std::string* err) {
  static const std::vector<std::string> kTasks = {"cola", "sst2", "mrpc", "stsb", "qqp",
                                                  "mnli", "qnli", "rte",  "wnli", "ax"};
  std::string key;
  for (char c : *task)
    if (c != '-') key += (char)std::tolower((unsigned char)c);
  if (std::find(kTasks.begin(), kTasks.end(), key) != kTasks.end()) {
    *task = key;
    return true;
  }
  const std::string near = nearest(key, kTasks);
  *err = strf("--task %s: unknown task%s; expected cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli or ax",
              task->c_str(), near.empty() ? "" : ("; did you mean " + near + "?").c_str());
  return false;
}

static bool task_matches(const TaskData& d, const std::string& task, std::string* err) {
  if (d.task != task) {
    *err = strf("%s is a '%s' task file (%s), not '%s'", d.path.c_str(), d.task.c_str(), d.split.c_str(), task.c_str());
    return false;
  }
  return true;
}

// The model of a fine-tuned checkpoint for a labelled or test task file, on
// the chosen device: what eval and predict both start from.
static bool task_model_for(const std::string& ckpt, const std::string& file, const std::string& task,
                           const Device& device, int batch, TaskData* d, Model* m, std::string* err) {
  return task_load(file, d, err) && task_matches(*d, task, err) && task_model(ckpt, *d, batch, 0, false, m, err) &&
         model_use_device(m, device, nullptr, nullptr, err);
}

// The flags every inference command shares.
static void inference_flags(std::vector<Flag>* f, Device* device, long long* batch, long long* threads) {
  device_flags(f, device);
  f->push_back({Flag::Int, "batch", batch, 1, 1 << 20, "sequences per forward pass"});
  f->push_back({Flag::Int, "threads", threads, 0, 4096, "CPU threads; 0 = all"});
}

static const char* kFinetuneUsage =
    "usage: bigs finetune --task TASK --init CKPT --train F --dev F [--dev2 F] [options]\n"
    "Fine-tunes a classifier on a GLUE task file (from `data_prep glue`) with the recipe of docs/MODEL.md\n"
    "section 12; evaluates on --dev (and --dev2, e.g. MNLI mismatched) every --eval-every steps and at\n"
    "the end of every epoch, as the authors' run_glue.py does, and keeps the best checkpoint by the task's\n"
    "main metric (accuracy for MRPC and QQP, Spearman for STS-B) in OUT/best.bin (the last in OUT/last.bin).";

static int cmd_finetune(World& w, int argc, char** argv) {
  const char* cmd = "finetune";
  std::string task, init, train, dev, dev2, out = "out/finetune", resume;
  bool overwrite = false;
  Device device;
  long long epochs = 3, batch = 16, micro = 16, eval_every = 500, seed = 1, threads = 0, log_every = 50, max_steps = 0,
            save_every = 0;
  bool partial_batch = false;
  double lr = 2e-5, warmup_frac = 0.1, dropout = 0.1, clip = 0, timeout = w.timeout;
  AdamW opt{0.9, 0.999, 1e-6, 0.01};
  std::vector<Flag> flags = {
      {Flag::Str, "task", &task, 0, 0, "cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte or wnli"},
      {Flag::Str, "init", &init, 0, 0, "checkpoint to start from (pretrained, or fine-tuned on MNLI)"},
      {Flag::Str, "train", &train, 0, 0, "training task file"},
      {Flag::Str, "dev", &dev, 0, 0, "dev task file, evaluated every --eval-every steps and at each epoch's end"},
      {Flag::Str, "dev2", &dev2, 0, 0, "a second dev file (MNLI mismatched)"},
      {Flag::Str, "out", &out, 0, 0, "directory for best.bin, last.bin, state.bin and log.jsonl"},
      {Flag::Str, "resume", &resume, 0, 0, "an OUT/state.bin to continue from, exactly (with the run's settings)"},
      {Flag::Switch, "overwrite", &overwrite, 0, 0, "replace the run already in --out (else refused)"},
      {Flag::Int, "epochs", &epochs, 1, 1000, "passes over the training set"},
      {Flag::Int, "max-steps", &max_steps, 0, 1LL << 40,
       "save and stop after this step (a time slice; --resume goes on); 0 = all"},
      {Flag::Int, "save-every", &save_every, 0, 1LL << 40,
       "also save OUT/state.bin every this many steps (it is saved at every evaluation); 0 = no more"},
      {Flag::Int, "batch", &batch, 1, 1 << 20, "sequences per optimizer step"},
      {Flag::Int, "micro-batch", &micro, 1, 1 << 20, "sequences per forward/backward; must divide --batch"},
      {Flag::Num, "lr", &lr, 0, 10, "peak learning rate"},
      {Flag::Num, "warmup-frac", &warmup_frac, 0, 1,
       "linear warmup over this fraction of the steps, then linear decay to 0"},
      {Flag::Num, "dropout", &dropout, 0, 0.9, "dropout after the embeddings and before the classifier"},
      {Flag::Int, "eval-every", &eval_every, 0, 1LL << 40,
       "also evaluate every this many steps (the authors' 500); 0 = only at each epoch's end"},
      {Flag::Switch, "partial-batch", &partial_batch, 0, 0,
       "also train on each epoch's last, partial batch: ceil(n / batch) steps an epoch (by default it is "
       "dropped, floor(n / batch), as the authors' run_glue.py does)"},
      {Flag::Int, "log-every", &log_every, 1, 1LL << 40, "print progress every this many steps"},
      {Flag::Int, "seed", &seed, 0, 1LL << 62, "seed of the head init, data order and dropout"},
      {Flag::Int, "threads", &threads, 0, 4096, "CPU threads; 0 = all"},
  };
  training_flags(&flags, &device, &opt, &clip, &timeout);
  if (int rc = training_parse(w, cmd, argc, argv, flags, kFinetuneUsage, &timeout); rc >= 0) return rc;
  if (task.empty() || (init.empty() && resume.empty()) || train.empty() || dev.empty())
    return fail_all(w, cmd, "--task, --init (or --resume), --train and --dev are required", 2);
  std::string err;
  if (!task_name(&task, &err) || !out_dir_named(out, &err)) return fail_all(w, cmd, err, 2);
  // A resumed run takes its settings from state.bin.
  CkptHeader rh{};
  if (!resume.empty()) {
    if (!checkpoint_peek(resume, &rh, &err)) return fail_all(w, cmd, err, 1);
    if (rh.kind != kCkptTrainState || rh.run_kind != kRunFinetune)
      return fail_all(w, cmd, strf("--resume %s is not the state.bin of a `bigs finetune` run%s", resume.c_str(),
                                   rh.kind != kCkptTrainState ? " (it holds parameters only)" : ""), 2);
    if (task != rh.task)
      return fail_all(w, cmd, strf("--task %s contradicts the run in %s, which fine-tunes %s", task.c_str(),
                                   resume.c_str(), rh.task), 2);
    const RunSettings& r = rh.run;
    const std::pair<const char*, double> taken[] = {
        {"lr", r.lr},         {"warmup-frac", r.warmup_frac}, {"dropout", r.dropout},
        {"grad-clip", r.clip}, {"beta1", r.beta1},             {"beta2", r.beta2},
        {"eps", r.eps},       {"weight-decay", r.weight_decay}, {"batch", (double)r.batch},
        {"epochs", (double)r.epochs}, {"eval-every", (double)r.eval_every}};
    for (const auto& [name, v] : taken)
      if (!take_setting(flags, name, v, resume, &err)) return fail_all(w, cmd, err, 2);
    if (rh.micro && !take_setting(flags, "micro-batch", rh.micro, resume, &err)) return fail_all(w, cmd, err, 2);
    if (find_flag(flags, "seed")->given && (uint64_t)seed != rh.seed)
      return fail_all(w, cmd, contradicts("seed", strf("%lld", seed), strf("%" PRIu64, rh.seed), resume), 2);
    seed = (long long)rh.seed;
    if (!init.empty()) printf("note: --init %s is not read: the run continues from %s\n", init.c_str(), resume.c_str());
  }
  if (!batch_splits(w, batch, micro, &err) || !device_check(device, &err)) return fail_all(w, cmd, err, 2);
  set_threads(threads);
  TaskData tr, dv, dv2;
  Model m;
  // Every input is checked before any work, each named: its task, labels,
  // size, and (once the model is read) its T, V and vocabulary.
  bool ok = task_load(train, &tr, &err) && task_matches(tr, task, &err) && task_load(dev, &dv, &err) &&
            task_matches(dv, task, &err) &&
            (dev2.empty() || (task_load(dev2, &dv2, &err) && task_matches(dv2, task, &err)));
  if (ok && !tr.h.has_labels) err = train + " has no labels (a test split)", ok = false;
  if (ok && tr.n == 0) err = train + " holds no examples", ok = false;
  for (const TaskData* d : {&dv, &dv2}) {
    if (!ok || d->path.empty()) continue;
    if (!d->h.has_labels)
      err = strf("%s is the %s split, without labels (a test split): a dev file must have labels; give the dev split "
                 "(data_prep writes %s_dev*.bin)",
                 d->path.c_str(), d->split.c_str(), task.c_str()),
      ok = false;
    else if (d->n == 0)
      err = d->path + " holds no examples: give a dev file with some", ok = false;
    else if (d->T != tr.T || d->h.vocab_size != tr.h.vocab_size || d->h.num_labels != tr.h.num_labels ||
             (d->h.vocab_hash && tr.h.vocab_hash && d->h.vocab_hash != tr.h.vocab_hash))
      err = strf("%s has T = %d, V = %u, %u labels, vocabulary hash %08x, but the training file %s has T = %d, V = %u, "
                 "%u labels, vocabulary hash %08x: make every task file of a run with one `data_prep glue` "
                 "(the same --vocab and --seq)",
                 d->path.c_str(), d->T, d->h.vocab_size, d->h.num_labels, d->h.vocab_hash, train.c_str(), tr.T,
                 tr.h.vocab_size, tr.h.num_labels, tr.h.vocab_hash),
      ok = false;
  }
  uint32_t train_id = 0;
  if (ok) {
    train_id = crc32c(0, tr.ids.data(), tr.ids.size() * sizeof(int));
    train_id = crc32c(train_id, tr.types.data(), tr.types.size() * sizeof(int));
    train_id = crc32c(train_id, tr.labels.data(), tr.labels.size() * sizeof(float));
  }
  if (ok && !resume.empty() && rh.run.data_id != train_id)
    err = strf("--train %s is not the training set of the run in %s: resume with the run's own files", train.c_str(),
               resume.c_str()),
    ok = false;
  CkptMeta meta;  // what this run's checkpoints record
  ok = ok && task_model(resume.empty() ? init : resume, tr, (int)micro, (uint64_t)seed, resume.empty(), &m, &err, &meta);
  if (!ok) return fail(cmd, err);
  meta.task = task;
  if (!meta.vocab_hash) meta.vocab_hash = tr.h.vocab_hash;
  m.dropout = (float)dropout;
  m.dropout_seed = (uint64_t)seed;
  std::vector<float> mom1(m.num_params, 0.0f), mom2(m.num_params, 0.0f);
  long long step = 0;
  double best = -1e300;  // the best dev score so far (none yet)
  if (!resume.empty()) {
    CkptHeader h;
    std::vector<float> data;
    if (!checkpoint_read(resume, &h, &data, &err)) return fail(cmd, err);
    mom1.assign(data.begin() + m.num_params, data.begin() + 2 * m.num_params);
    mom2.assign(data.begin() + 2 * m.num_params, data.end());
    step = (long long)h.step, best = h.run.best;
    printf("resumed from %s at step %lld, with the run's settings\n", resume.c_str(), step);
  }
  DataParallel dp;
  if (!model_use_device(&m, device, &mom1, &mom2, &err)) return fail(cmd, err);
  if (!world_same_device(w, m, &err)) return fail_all(w, cmd, err, 2);
  if (!data_parallel_init(&dp, w, m, (int)(batch / micro / w.size), &err)) return fail(cmd, err);
  uint32_t data_id = 0;
  for (const TaskData* d : {&tr, &dv, &dv2}) {
    data_id = crc32c(data_id, d->ids.data(), d->ids.size() * sizeof(int));
    data_id = crc32c(data_id, d->types.data(), d->types.size() * sizeof(int));
    data_id = crc32c(data_id, d->labels.data(), d->labels.size() * sizeof(float));
  }
  if (!world_same_start(w, data_id, m, &mom1, &mom2, &err)) return fail_all(w, cmd, err, 2);
  const int T = m.c.T;
  const long long steps_per_epoch = (long long)((tr.n + (partial_batch ? batch - 1 : 0)) / batch),
                  total = steps_per_epoch * epochs;
  if (steps_per_epoch == 0)
    return fail_all(w, cmd,
                    strf("--batch %lld is more than the %zu training examples, and an epoch drops its partial "
                         "batch: lower --batch, or pass --partial-batch",
                         batch, tr.n),
                    2);
  // A resumed run keeps its length: --partial-batch (which state.bin does not
  // record), --epochs and --batch must give the run's number of steps.
  if (!resume.empty() && total != rh.run.steps)
    return fail_all(w, cmd,
                    strf("these flags give %lld steps, but the run in %s has %" PRId64 " (%s --partial-batch?): "
                         "continue it with its own settings",
                         total, resume.c_str(), rh.run.steps, partial_batch ? "without" : "with"),
                    2);
  LrSchedule sched{Schedule::Linear, lr, (long long)std::llround(warmup_frac * total), total, 0};
  meta.run_kind = kRunFinetune;
  meta.micro = (uint32_t)micro;
  meta.run = RunSettings{lr, 0, dropout, clip, opt.beta1, opt.beta2, opt.eps, opt.weight_decay, 0, best,
                         sched.warmup, total, total, batch, eval_every, (int16_t)Schedule::Linear, 0, 0, (int32_t)epochs,
                         train_id, warmup_frac};
  const std::string main_name = task == "cola"                   ? "mcc"
                                : task == "stsb" ? "spearman"
                                                 : "accuracy";  // as task_metrics chooses
  print_model_plan(m);
  print_world(w, m, dp);
  printf("task %s: %zu training examples, %zu dev; %lld steps of %lld (%lld epochs); best.bin is chosen by %s\n"
         "settings:\n",
         task.c_str(), tr.n, dv.n, total, batch, epochs, main_name.c_str());
  if (device_name(m) == "cpu") device.precision = "fp32";  // what the CPU computes in (--precision is the GPU's)
  print_settings(stdout, flags);
  // Rank 0 alone writes OUT: the lock, the log and the checkpoints.
  DirLock lock;
  if (!make_dir(out, &err) || (w.rank == 0 && !lock.acquire(out, &err))) return fail(cmd, err);
  if (w.rank == 0 && !out_dir_claim(out, {"state.bin", "best.bin", "last.bin"}, !resume.empty(), overwrite, &err))
    return fail(cmd, err);
  if (w.rank == 0 && !resume.empty() && !log_keep_until(out + "/log.jsonl", (uint64_t)step, &err))
    return fail(cmd, err);
  std::string log_path = w.rank == 0 ? out + "/log.jsonl" : "/dev/null";  // rank 0 alone writes OUT
  FILE* log = fopen(log_path.c_str(), resume.empty() ? "w" : "a");
  if (!log) return fail(cmd, strf("cannot write %s: %s", log_path.c_str(), strerror(errno)));
  StepSettings ss{(int)micro, (int)(batch / micro), clip, opt};
  const std::string best_path = out + "/best.bin", state_path = out + "/state.bin";
  bool best_saved = !resume.empty() && best > -1e300;  // a resumed run's best.bin is on disk
  long long state_step = resume.empty() ? -1 : step;  // what state.bin holds
  auto evaluate = [&](const char* when) {
    TaskMetrics a, b;
    double la, lb = 0;
    if (!task_evaluate(m, dv, &a, &la, &err, &w) || (!dev2.empty() && !task_evaluate(m, dv2, &b, &lb, &err, &w)))
      return false;
    printf("step %lld (%s) | dev loss %.4f | %s%s%s\n", step, when, la, a.text.c_str(), dev2.empty() ? "" : " | dev2 ",
           dev2.empty() ? "" : b.text.c_str());
    fprintf(log, "{\"step\": %lld, \"dev_loss\": %.6f, \"dev_main\": %.6f%s}\n", step, la, a.main,
            dev2.empty() ? "" : strf(", \"dev2_main\": %.6f", b.main).c_str());
    fflush(log);
    if (a.main > best) {
      best = a.main;
      if (w.rank > 0) return true;  // every rank holds the same parameters; rank 0 saves them
      model_to_host(m, nullptr, nullptr);  // checkpoints come from the host block
      CkptMeta model_meta{meta.task, meta.vocab_hash};
      if (!checkpoint_save(best_path, m, nullptr, nullptr, (uint64_t)step, 0, (uint64_t)seed, &err, model_meta))
        return false;
      best_saved = true;
      printf("new best %.4f (%s): saved %s\n", best, main_name.c_str(), best_path.c_str());
    }
    return true;
  };
  // state.bin: parameters, moments, step and the best score, for --resume.
  auto save_state = [&]() {
    world_share_moments(dp, m, mom1, mom2);  // every rank: the moments are sharded
    model_to_host(m, &mom1, &mom2);
    if (w.rank > 0) return true;
    fflush(log);  // the log holds every step the state does
    meta.run.best = best;
    if (!checkpoint_save(state_path, m, &mom1, &mom2, (uint64_t)step, 0, (uint64_t)seed, &err, meta)) return false;
    state_step = step;
    return true;
  };
  // What is on disk, for every message that ends the run.
  auto on_disk = [&]() {
    std::string s = best_saved ? strf("best dev %.4f (%s) in %s", best, main_name.c_str(), best_path.c_str())
                               : std::string("no best.bin yet (no evaluation finished)");
    if (state_step >= 0) s += strf("; %s holds step %lld", state_path.c_str(), state_step);
    return s;
  };
  stop_on_signals();
  double t0 = now_seconds();
  const long long step0 = step, last = max_steps ? std::min(max_steps, total) : total;
  int status = 0, sig = 0;
  std::vector<uint32_t> order;
  long long order_epoch = -1;
  while (step < last && !status) {
    const long long epoch = step / steps_per_epoch, s = step % steps_per_epoch;
    if (epoch != order_epoch)
      order = DataOrder::permutation(tr.n, splitmix64((uint64_t)seed ^ splitmix64(epoch + 77))), order_epoch = epoch;
    size_t first = (size_t)(s * batch), count = std::min<size_t>((size_t)batch, tr.n - first);
    const std::vector<int> mine = rank_sequences(w, (int)count, (int)micro);  // this rank's part of the batch
    std::vector<int> ids(mine.size() * T), types(mine.size() * T);
    std::vector<float> labels(mine.size());
    for (size_t k = 0; k < mine.size(); k++) {
      size_t e = order[first + mine[k]];
      std::copy_n(&tr.ids[e * T], T, &ids[k * T]);
      std::copy_n(&tr.types[e * T], T, &types[k * T]);
      labels[k] = tr.labels[e];
    }
    double lr_now = lr_at(sched, step);
    StepResult r;
    if (!train_step(m, dp, Batch{(int)mine.size(), ids.data(), types.data(), nullptr, labels.data()}, (int)count,
                    ss, (uint64_t)step, lr_now, mom1, mom2, &r, &err)) {
      fclose(log);
      if (r.finite) return fail(cmd, strf("step %lld: %s", step + 1, err.c_str()));
      return fail_all(w, cmd,
                      strf("step %lld: %s; stopping (%s); try a lower --lr or --grad-clip", step + 1, err.c_str(),
                           on_disk().c_str()),
                      1);
    }
    step++;
    fprintf(log, "{\"step\": %lld, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g}\n", step, r.loss, lr_now,
            r.grad_norm);
    if (step % log_every == 0) {
      double t = now_seconds();
      printf("step %lld/%lld | loss %.4f | lr %.3g | grad norm %.3f | %s left\n", step, total, r.loss, lr_now,
             r.grad_norm, format_duration((t - t0) / (step - step0) * (last - step)).c_str());
      fflush(stdout);
    }
    bool evaluated = false;
    // At an epoch's end the epoch's evaluation is the one (the authors evaluate once at such a step).
    if (eval_every && step % eval_every == 0 && step % steps_per_epoch != 0) {
      if (!evaluate("periodic")) status = 1;
      evaluated = true;
    }
    if (!status && step % steps_per_epoch == 0) {
      if (!evaluate(strf("epoch %lld", step / steps_per_epoch).c_str())) status = 1;
      evaluated = true;
    }
    if (!status && step < last && (evaluated || (save_every && step % save_every == 0)) && !save_state()) status = 1;
    if (!status && (sig = agreed_stop_signal(w))) status = 128 + sig;
  }
  fclose(log);
  if (status == 1) {
    fail(cmd, strf("%s\nbigs %s: stopping (%s)", err.c_str(), cmd, on_disk().c_str()));
    return 1;
  }
  model_to_host(m, nullptr, nullptr);
  if (w.mpi && (status == 0 || w.agreed) && !world_same_params(w, m, &err)) return fail_all(w, cmd, err, 1);
  const bool early = step < total;
  if (!save_state()) return fail(cmd, strf("%s\nbigs %s: stopping (%s)", err.c_str(), cmd, on_disk().c_str()));
  if (w.rank > 0) return status;
  if (!checkpoint_save(out + "/last.bin", m, nullptr, nullptr, (uint64_t)step, 0, (uint64_t)seed, &err,
                       CkptMeta{meta.task, meta.vocab_hash}))
    return fail(cmd, strf("%s\nbigs %s: stopping (%s)", err.c_str(), cmd, on_disk().c_str()));
  if (early)
    printf("stopped early at step %lld of %lld (%s): %s; %s/last.bin holds step %lld; continue with --resume %s\n",
           step, total, sig ? strf("signal %d", sig).c_str() : "--max-steps", on_disk().c_str(), out.c_str(), step,
           state_path.c_str());
  else
    printf("done: %lld steps; %s; the last model in %s/last.bin\n", step, on_disk().c_str(), out.c_str());
  return status;
}

static const char* kEvalUsage =
    "usage: bigs eval --task TASK --ckpt CKPT --dev F [--dev F2 ...]\n"
    "Prints the task's metrics (docs/MODEL.md section 12) on each labelled task file.";

static int cmd_eval(int argc, char** argv) {
  const char* cmd = "eval";
  std::string task, ckpt, dev;
  Device device;
  long long batch = 32, threads = 0;
  std::vector<Flag> flags = {
      {Flag::Str, "task", &task, 0, 0, "the task the files belong to"},
      {Flag::Str, "ckpt", &ckpt, 0, 0, "a fine-tuned checkpoint"},
      {Flag::Str, "dev", &dev, 0, 0, "a labelled task file (more may follow as arguments)"},
  };
  inference_flags(&flags, &device, &batch, &threads);
  std::vector<std::string> files;
  if (int rc = parse_command(cmd, argc, argv, flags, kEvalUsage, &files); rc >= 0) return rc;
  if (!dev.empty()) files.insert(files.begin(), dev);
  if (task.empty() || ckpt.empty() || files.empty()) return fail(cmd, "--task, --ckpt and --dev are required", 2);
  std::string err;
  if (!task_name(&task, &err)) return fail(cmd, err, 2);
  if (!device_check(device, &err)) return fail(cmd, err, 2);
  set_threads(threads);
  for (const std::string& f : files) {
    TaskData d;
    Model m;
    TaskMetrics tm;
    double loss;
    if (!task_model_for(ckpt, f, task, device, (int)batch, &d, &m, &err) || !task_evaluate(m, d, &tm, &loss, &err))
      return fail(cmd, err);
    printf("%s %s (%zu examples): %s  loss %.4f\n", task.c_str(), d.split.c_str(), d.n, tm.text.c_str(), loss);
  }
  return 0;
}

// The submission file's name for a task and split (docs/MODEL.md section 12).
static std::string submission_name(const std::string& task, const std::string& split) {
  if (task == "mnli") return split.find("mismatched") != std::string::npos ? "MNLI-mm" : "MNLI-m";
  const char* names[][2] = {{"cola", "CoLA"}, {"sst2", "SST-2"}, {"mrpc", "MRPC"}, {"stsb", "STS-B"}, {"qqp", "QQP"},
                            {"qnli", "QNLI"}, {"rte", "RTE"},    {"wnli", "WNLI"}, {"ax", "AX"}};
  for (auto& n : names)
    if (task == n[0]) return n[1];
  return task;
}

static const char* kPredictUsage =
    "usage: bigs predict --task TASK --ckpt CKPT --test F [--out DIR] [--probs FILE]\n"
    "Writes the GLUE submission file DIR/<Task>.tsv (\"index<TAB>prediction\", in index order) for a test\n"
    "split. --probs FILE also writes each example's output at full precision: index, then each class's\n"
    "probability (or the STS-B score). A split with labels (dev) makes no submission file: give it\n"
    "--probs alone. For ax, pass --task ax and the MNLI-fine-tuned checkpoint.";

// Per example, in the given order: the index, then each class's softmax
// probability (or the regression score). The doubles as %.17g and the score
// (a float) as %.9g read back exactly.
static bool write_probs(const std::string& path, const TaskData& d, int Y, const std::vector<float>& logits,
                        const std::vector<size_t>& order, std::string* err) {  // logits (n, Y)
  AtomicFile f;
  if (!f.open(path, err)) return false;
  fprintf(f.f, "index");
  for (int y = 0; y < Y; y++) fprintf(f.f, "\t%s", Y == 1 ? "score" : d.h.label_names[y]);
  fprintf(f.f, "\n");
  for (size_t i : order) {
    const float* x = &logits[i * Y];
    fprintf(f.f, "%u", d.index[i]);
    if (Y == 1) {
      fprintf(f.f, "\t%.9g\n", x[0]);
      continue;
    }
    float mx = *std::max_element(x, x + Y);
    double z = 0;
    for (int y = 0; y < Y; y++) z += std::exp((double)x[y] - mx);
    for (int y = 0; y < Y; y++) fprintf(f.f, "\t%.17g", std::exp((double)x[y] - mx) / z);
    fprintf(f.f, "\n");
  }
  return f.commit(err);
}

static int cmd_predict(int argc, char** argv) {
  const char* cmd = "predict";
  std::string task, ckpt, test, out = "submission", probs;
  Device device;
  long long batch = 32, threads = 0;
  std::vector<Flag> flags = {
      {Flag::Str, "task", &task, 0, 0, "the task of the test file"},
      {Flag::Str, "ckpt", &ckpt, 0, 0, "a fine-tuned checkpoint"},
      {Flag::Str, "test", &test, 0, 0, "the test task file (or, with --probs alone, a labelled one)"},
      {Flag::Str, "out", &out, 0, 0, "directory for the submission files"},
      {Flag::Str, "probs", &probs, 0, 0, "also write each example's class probabilities (or score) here"},
  };
  inference_flags(&flags, &device, &batch, &threads);
  if (int rc = parse_command(cmd, argc, argv, flags, kPredictUsage, nullptr); rc >= 0) return rc;
  if (task.empty() || ckpt.empty() || test.empty()) return fail(cmd, "--task, --ckpt and --test are required", 2);
  std::string err;
  if (!task_name(&task, &err)) return fail(cmd, err, 2);
  if (!device_check(device, &err)) return fail(cmd, err, 2);
  set_threads(threads);
  TaskData d;
  Model m;
  std::vector<double> pred;
  std::vector<float> logits;
  double loss;
  if (!task_model_for(ckpt, test, task, device, (int)batch, &d, &m, &err)) return fail(cmd, err);
  // A submission from a labelled split would be a dev set's predictions
  // under a test set's name.
  if (d.h.has_labels && probs.empty())
    return fail(cmd, strf("%s is the %s split, with labels: a GLUE submission is made from a test split "
                          "(data_prep writes %s_test*.bin); for this split's metrics run `bigs eval`, for its "
                          "per-example outputs `bigs predict --probs FILE`, which writes no submission file from "
                          "a labelled split",
                          test.c_str(), d.split.c_str(), task.c_str()));
  if (!task_predict(m, d, &pred, &loss, &err, &logits)) return fail(cmd, err);
  std::vector<size_t> order(d.n);
  for (size_t i = 0; i < d.n; i++) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return d.index[a] < d.index[b]; });
  if (!probs.empty()) {
    if (!write_probs(probs, d, m.c.labels, logits, order, &err)) return fail(cmd, err);
    printf("wrote %s: %zu examples, %s\n", probs.c_str(), d.n, m.c.labels == 1 ? "score" : "class probabilities");
  }
  if (d.h.has_labels) {
    printf("no submission file: %s is the %s split, with labels\n", test.c_str(), d.split.c_str());
    return 0;
  }
  std::string path = out + "/" + submission_name(task, d.split) + ".tsv";
  struct stat st;
  const bool replacing = stat(path.c_str(), &st) == 0;
  AtomicFile f;
  if (!make_dir(out, &err) || !f.open(path, &err)) return fail(cmd, err);
  fprintf(f.f, "index\tprediction\n");
  for (size_t i : order) {
    if (m.c.labels == 1)
      fprintf(f.f, "%u\t%.3f\n", d.index[i], std::min(5.0, std::max(0.0, pred[i])));  // STS-B
    else
      fprintf(f.f, "%u\t%s\n", d.index[i], d.h.label_names[(int)pred[i]]);
  }
  if (!f.commit(&err)) return fail(cmd, err);
  printf("wrote %s: %zu predictions%s\n", path.c_str(), d.n, replacing ? " (replaced the file that was there)" : "");
  return 0;
}
