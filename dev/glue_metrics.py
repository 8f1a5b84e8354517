#!/usr/bin/env python3
"""Reference GLUE metrics (scikit-learn / scipy) for checking bigs' C++ ones.

    glue_metrics.py TASK PRED_FILE GOLD_FILE     prints the task's metrics, one "name value" a line
    glue_metrics.py cases --out FILE [--seed S]  writes test vectors for the C++ test

Metrics (docs/MODEL.md section 12) and their conventions:

    accuracy   fraction of pred == gold
    f1         binary F1 of the positive class 1: sklearn f1_score(gold, pred,
               pos_label=1, zero_division=0); it is 0 whenever there is no
               true positive (nothing predicted positive, no positive gold)
    mcc        sklearn matthews_corrcoef(gold, pred): 0 when undefined (a
               constant prediction or constant gold)
    pearson    scipy.stats.pearsonr(pred, gold); a constant input (undefined,
               scipy gives nan) counts as 0, as bigs.cu does
    spearman   scipy.stats.spearmanr(pred, gold): Pearson of the average ranks
               (ties share their mean rank); constant input counts as 0

Tasks: cola (mcc, accuracy), sst2 (accuracy), mrpc and qqp (f1, accuracy),
stsb (pearson, spearman), mnli, mnli-m, mnli-mm, qnli, rte, wnli (accuracy).

Files: one value a line; or a GLUE submission TSV ("index<TAB>prediction"
header: the prediction column); or a GLUE dev TSV of the task (the label
column of docs/MODEL.md section 12 by header name; CoLA: no header, column 1).
Values are numbers or the task's label names (entailment, neutral,
contradiction, not_entailment) mapped to their class index. Rows with the
wrong number of fields are skipped and counted.

`cases` writes one case a line, tab-separated:

    metric<TAB>comma-separated preds<TAB>comma-separated golds<TAB>expected value (%.17g)

with metric one of accuracy, f1, mcc, pearson, spearman; values are written
with %.17g (integers for classes), so they parse back exactly. The expected
values come from sklearn/scipy; a C++ implementation that sums in another
order can differ in the last bits, so compare with a tolerance of ~1e-12.
"""

import argparse
import math
import sys
import warnings

import numpy as np

LABEL_NAMES = {
    "mnli": ["entailment", "neutral", "contradiction"],
    "qnli": ["entailment", "not_entailment"],
    "rte": ["entailment", "not_entailment"],
}
for _t in ("mnli-m", "mnli-mm", "ax"):
    LABEL_NAMES[_t] = LABEL_NAMES["mnli"]

TASK_METRICS = {
    "cola": ["mcc", "accuracy"],
    "sst2": ["accuracy"],
    "mrpc": ["f1", "accuracy"],
    "qqp": ["f1", "accuracy"],
    "stsb": ["pearson", "spearman"],
    "mnli": ["accuracy"],
    "mnli-m": ["accuracy"],
    "mnli-mm": ["accuracy"],
    "qnli": ["accuracy"],
    "rte": ["accuracy"],
    "wnli": ["accuracy"],
}
TASK_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli_matched": "mnli-m", "mnli_mismatched": "mnli-mm"}
# The label column of each task's dev TSV, by header name (docs/MODEL.md section 12).
GOLD_COLUMN = {"sst2": "label", "mrpc": "Quality", "stsb": "score", "qqp": "is_duplicate", "mnli": "gold_label",
               "mnli-m": "gold_label", "mnli-mm": "gold_label", "qnli": "label", "rte": "label", "wnli": "label"}

# ----------------------------------------------------------------------------
# The metrics


def accuracy(pred, gold):
    pred, gold = np.asarray(pred, float), np.asarray(gold, float)
    return float(np.mean(pred == gold)) if len(pred) else 0.0


def f1(pred, gold):
    from sklearn.metrics import f1_score

    return float(f1_score(np.asarray(gold, int), np.asarray(pred, int), pos_label=1, average="binary",
                          labels=[0, 1], zero_division=0))


def mcc(pred, gold):
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(np.asarray(gold, int), np.asarray(pred, int)))


def _defined(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    return len(x) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0


def pearson(pred, gold):
    from scipy.stats import pearsonr

    if not _defined(pred, gold):
        return 0.0
    return float(pearsonr(np.asarray(pred, float), np.asarray(gold, float))[0])


def spearman(pred, gold):
    from scipy.stats import spearmanr

    if not _defined(pred, gold):
        return 0.0
    return float(spearmanr(np.asarray(pred, float), np.asarray(gold, float))[0])


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}


def task_metrics(task, pred, gold):
    return [(name, METRICS[name](pred, gold)) for name in TASK_METRICS[task]]


# ----------------------------------------------------------------------------
# Reading prediction and gold files


def _value(text, task):
    names = LABEL_NAMES.get(task, [])
    if text in names:
        return float(names.index(text))
    return float(text)


def _is_value(text, task):
    try:
        _value(text, task)
        return True
    except ValueError:
        return False


def read_values(path, task):
    """The values of a file (see the module doc). Returns (values, skipped rows)."""
    with open(path, encoding="utf-8") as f:
        lines = [ln.rstrip("\r\n") for ln in f]
    lines = [ln for ln in lines if ln.strip()]
    if lines and lines[0].startswith("\ufeff"):  # MRPC's files start with a byte-order mark
        lines[0] = lines[0][1:]
    if not lines:
        return [], 0
    first = lines[0].split("\t")
    col, body = None, lines
    if all(_is_value(x.strip(), task) for x in first) and len(first) == 1:
        col = 0
    elif task == "cola" and len(first) == 4 and _is_value(first[1], task):
        col = 1  # CoLA train/dev: no header, label in column 1
    else:
        header, body = first, lines[1:]
        for name in ("prediction", GOLD_COLUMN.get(task), "label"):
            if name and name in header:
                col = header.index(name)
                break
        if col is None:
            if all(_is_value(x.strip(), task) for x in first):
                header, body, col = None, lines, len(first) - 1
            else:
                raise ValueError("%s: cannot tell which column holds the values (header: %s)" % (path, first))
    width = len(lines[0].split("\t"))
    values, skipped = [], 0
    for ln in body:
        fields = ln.split("\t")
        if len(fields) != width:
            skipped += 1
            continue
        try:
            values.append(_value(fields[col].strip(), task))
        except ValueError:
            skipped += 1
    return values, skipped


# ----------------------------------------------------------------------------
# Test vectors


def _fmt(v):
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else "%.17g" % v


def make_cases(seed):
    rng = np.random.default_rng(seed)
    cases = []

    def add(metric, pred, gold):
        pred, gold = [float(x) for x in pred], [float(x) for x in gold]
        cases.append((metric, pred, gold, METRICS[metric](pred, gold)))

    def binary(n, p=0.5):
        return (rng.random(n) < p).astype(int)

    # accuracy: binary and 3-class, small and large, all right and all wrong
    for n in (1, 2, 5, 17, 300):
        add("accuracy", binary(n), binary(n))
    for n in (7, 100, 1000):
        add("accuracy", rng.integers(0, 3, n), rng.integers(0, 3, n))
    g = rng.integers(0, 3, 50)
    add("accuracy", g, g)
    add("accuracy", (g + 1) % 3, g)
    # f1 (positive class 1)
    for n in (3, 10, 64, 500):
        add("f1", binary(n), binary(n))
    add("f1", binary(200, 0.9), binary(200, 0.3))
    g = binary(40)
    add("f1", g, g)  # 1
    add("f1", np.zeros(12), binary(12))  # nothing predicted positive: 0
    add("f1", binary(12), np.zeros(12))  # no positive gold: 0
    add("f1", np.zeros(8), np.zeros(8))  # no positives at all: 0
    add("f1", np.ones(9), binary(9))  # all predicted positive
    add("f1", 1 - g, g)  # tp = 0: 0
    # mcc (CoLA)
    for n in (4, 20, 137, 1043):
        add("mcc", binary(n), binary(n))
    add("mcc", binary(300, 0.8), binary(300, 0.7))
    g = binary(30)
    add("mcc", g, g)  # 1
    add("mcc", 1 - g, g)  # -1
    add("mcc", np.ones(25), binary(25))  # all-one-class predictions: 0
    add("mcc", np.zeros(25), binary(25))  # the other class: 0
    add("mcc", binary(25), np.ones(25))  # constant gold: 0
    add("mcc", np.ones(6), np.ones(6))  # everything one class: 0
    # pearson / spearman (STS-B scores 0..5)
    for n in (2, 3, 10, 100, 1500):
        x = rng.uniform(0, 5, n)
        y = np.clip(x + rng.normal(0, 1.0, n), 0, 5)
        add("pearson", x, y)
        add("spearman", x, y)
    for n in (6, 40, 400):  # many ties: scores on a 0.2 grid, and integers
        x = np.round(rng.uniform(0, 5, n) * 5) / 5
        y = np.round(np.clip(x + rng.normal(0, 1, n), 0, 5))
        add("pearson", x, y)
        add("spearman", x, y)
        add("spearman", np.round(x), y)
    x = rng.normal(size=30)
    add("pearson", x, 3 * x + 1)  # 1 up to rounding
    add("spearman", x, np.exp(x))  # monotone: 1
    add("spearman", x, -x)  # -1
    add("spearman", [1, 2, 2, 3, 3, 3, 4], [1, 1, 2, 2, 3, 3, 3])  # ties on both sides
    add("pearson", np.full(10, 2.5), rng.uniform(0, 5, 10))  # constant input: 0 by convention
    add("spearman", np.full(10, 2.5), rng.uniform(0, 5, 10))
    add("pearson", rng.uniform(0, 5, 10), np.full(10, 4.0))
    add("spearman", [3.0], [1.0])  # a single pair: 0
    return cases


def write_cases(path, cases):
    with open(path, "w") as f:
        for metric, pred, gold, value in cases:
            if not math.isfinite(value):
                raise ValueError("%s case has a non-finite expected value" % metric)
            f.write("%s\t%s\t%s\t%.17g\n" % (metric, ",".join(_fmt(v) for v in pred), ",".join(_fmt(v) for v in gold),
                                            value))


def read_cases(path):
    cases = []
    with open(path) as f:
        for ln in f:
            metric, pred, gold, value = ln.rstrip("\n").split("\t")
            cases.append((metric, [float(v) for v in pred.split(",")], [float(v) for v in gold.split(",")],
                          float(value)))
    return cases


# ----------------------------------------------------------------------------


def main(argv):
    if argv and argv[0] == "cases":
        p = argparse.ArgumentParser(prog="glue_metrics.py cases", description="write the test vectors")
        p.add_argument("--out", required=True)
        p.add_argument("--seed", type=int, default=2023)
        args = p.parse_args(argv[1:])
        cases = make_cases(args.seed)
        write_cases(args.out, cases)
        # self-check: the file parses back to the same numbers
        back = read_cases(args.out)
        for (m, p1, g1, v1), (m2, p2, g2, v2) in zip(cases, back):
            assert (m, p1, g1, v1) == (m2, p2, g2, v2), "case file does not read back exactly"
            assert METRICS[m](p2, g2) == v2
        print("wrote %s: %d cases" % (args.out, len(cases)))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", help="cola, sst2, mrpc, stsb, qqp, mnli, mnli-m, mnli-mm, qnli, rte, wnli (or 'cases')")
    p.add_argument("pred_file")
    p.add_argument("gold_file")
    args = p.parse_args(argv)
    task = TASK_ALIASES.get(args.task.lower(), args.task.lower())
    if task not in TASK_METRICS:
        print("glue_metrics: unknown task %r" % args.task, file=sys.stderr)
        return 2
    try:
        pred, ps = read_values(args.pred_file, task)
        gold, gs = read_values(args.gold_file, task)
    except (OSError, ValueError) as e:
        print("glue_metrics: %s" % e, file=sys.stderr)
        return 1
    for path, n in ((args.pred_file, ps), (args.gold_file, gs)):
        if n:
            print("glue_metrics: %s: %d rows skipped" % (path, n), file=sys.stderr)
    if len(pred) != len(gold):
        print("glue_metrics: %d predictions but %d gold labels" % (len(pred), len(gold)), file=sys.stderr)
        return 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, value in task_metrics(task, pred, gold):
            print("%s %.17g" % (name, value))
    print("examples %d" % len(pred))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
