"""Logistic regression on the Criteo head, one epoch: sparseopt against Vowpal Wabbit, with
the uncertainty of an AUC measured on 800 rows.

    python benchmarks/bench_criteo_head.py [--resamples 2000] [--hash-seeds 20]

Reads ``../shared/data/criteo`` (train 7,200 rows; evaluate on dev + test, 800 rows) with
``read_criteo`` (2^20 columns, ANCHORS.md's features), trains ``SparseLogisticRegression``
with its defaults for one epoch and Vowpal Wabbit for one pass with its defaults on the same
columns (bench_linear's text format: the column ids as feature names), and prints each
system's logloss and AUC with a 95% bootstrap interval, and the paired bootstrap interval of
the AUC difference (the same resampled rows for both systems).

Then the same comparison over ``--hash-seeds`` hashings of the same tokens, each system with
its own hash: sparseopt's (MurmurHash3 of each value seeded by its field, the seed offset by
``39 * s`` for hashing ``s``; ``s = 0`` is ``read_criteo``'s, which is checked) and VW's
(``--hash_seed s`` on ``f<field>=<value>`` tokens, an empty field its own token). Which
features collide changes the AUC of one hashing by about 0.001; the mean over hashings does
not depend on one draw. Last, VW's AUC under a few tokenizations and hash widths.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp
from bench_linear import run_vw
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.utils import murmurhash3_32

from sparseopt import SparseLogisticRegression
from sparseopt.datasets import read_criteo

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "criteo"
N_BITS, N_COUNTS, N_FIELDS = 20, 13, 39
NAMES = [f"I{i}" for i in range(1, N_COUNTS + 1)] + [f"C{i}" for i in range(1, 27)]


def read_tokens(path):
    """Rows of ANCHORS.md's 39 value texts (a count x > 2 as floor(ln(x)^2), an empty field
    as ""), and the labels."""
    rows, labels = [], []
    with open(path) as f:
        for line in f:
            label, *values = line.rstrip("\n").split("\t")
            for i in range(N_COUNTS):
                if values[i] and int(values[i]) > 2:
                    values[i] = str(math.floor(math.log(int(values[i])) ** 2))
            rows.append(values)
            labels.append(int(label))
    return rows, np.array(labels, dtype=np.float64)


def hash_tokens(rows, seed):
    """sparseopt's hashing of ``rows`` with every field's seed offset by ``N_FIELDS * seed``."""
    cols = np.array(
        [[murmurhash3_32(v, seed=N_FIELDS * seed + i, positive=True) for i, v in enumerate(r)]
         for r in rows], dtype=np.int64,
    ) % (1 << N_BITS)  # fmt: skip
    indptr = np.arange(0, cols.size + 1, N_FIELDS)
    X = sp.csr_matrix((np.ones(cols.size, np.float32), cols.ravel(), indptr),
                      shape=(len(rows), 1 << N_BITS))  # fmt: skip
    X.sum_duplicates()
    return X


def write_vw_files(workdir, token, train_rows, y, eval_rows, y_eval):
    """Write the rows in VW's text format, ``token(row)`` after each label; returns paths."""
    paths = {name: os.path.join(workdir, name) for name in ("train", "eval", "model", "p")}
    for name, rows, labels in (("train", train_rows, y), ("eval", eval_rows, y_eval)):
        with open(paths[name], "w") as f:
            for r, label in zip(rows, labels, strict=True):
                f.write(("1 " if label > 0 else "-1 ") + token(r) + "\n")
    return paths


def vw_scores(paths, y_eval, args):
    """AUC and logloss of VW (one pass, defaults, ``args``) on the files at ``paths``."""
    import vowpalwabbit

    common = ["--loss_function", "logistic", "--quiet", *args]
    vowpalwabbit.Workspace(arg_list=["-d", paths["train"], "-f", paths["model"], *common]).finish()
    test = ["-t", "-d", paths["eval"], "-i", paths["model"], "-p", paths["p"], "--link", "logistic"]
    vowpalwabbit.Workspace(arg_list=[*test, "--quiet"]).finish()
    p = np.loadtxt(paths["p"])
    return roc_auc_score(y_eval, p), log_loss(y_eval, p)


def one_namespace(r):
    return "|f " + " ".join(f"f{i}={v}" for i, v in enumerate(r))


VW_TOKENS = {
    "one namespace, f<i>=<value>": one_namespace,
    "one namespace, I1=<value> ... C26=<value>": lambda r: "|f " + " ".join(
        f"{NAMES[i]}={v}" for i, v in enumerate(r)),
    "one namespace, I1_<value> ... C26_<value>": lambda r: "|f " + " ".join(
        f"{NAMES[i]}_{v}" for i, v in enumerate(r)),
    "a namespace per field, I1 ... C26": lambda r: " ".join(
        f"|{NAMES[i]} {v or '_'}" for i, v in enumerate(r)),
    "default namespace, <i>_<value>": lambda r: "| " + " ".join(
        f"{i}_{v}" for i, v in enumerate(r)),
}  # fmt: skip


def over_hash_seeds(root, n_seeds, X_first):
    """sparseopt and VW, each with its own hashing, over ``n_seeds`` hash seeds."""
    train_rows, y = read_tokens(root / "criteo_wideresdnn_train.txt")
    eval_rows, y_eval = [], []
    for s in ("dev", "test"):
        rows, labels = read_tokens(root / f"criteo_wideresdnn_{s}.txt")
        eval_rows += rows
        y_eval.append(labels)
    y_eval = np.concatenate(y_eval)
    if (hash_tokens(train_rows, 0) != X_first).nnz:
        raise SystemExit("hash seed 0 does not reproduce read_criteo's columns")
    scores = np.empty((n_seeds, 2, 2))  # seed, system, (AUC, logloss)
    with tempfile.TemporaryDirectory() as workdir:
        rows = (train_rows, y, eval_rows, y_eval)
        paths = write_vw_files(workdir, one_namespace, *rows)
        for s in range(n_seeds):
            model = SparseLogisticRegression(max_iter=1).fit(hash_tokens(train_rows, s), y)
            p = model.predict_proba(hash_tokens(eval_rows, s))[:, 1]
            scores[s, 0] = roc_auc_score(y_eval, p), log_loss(y_eval, p)
            scores[s, 1] = vw_scores(paths, y_eval, ["-b", str(N_BITS), "--hash_seed", str(s)])
        print(f"\nOver {n_seeds} hash seeds (one epoch, defaults, 2^{N_BITS} columns):\n")
        print("| system | mean AUC | sd | min | max | mean logloss |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for i, name in enumerate(("sparseopt", "Vowpal Wabbit (--hash_seed)")):
            a = scores[:, i, 0]
            print(f"| {name} | {a.mean():.4f} | {a.std(ddof=1):.4f} | {a.min():.4f} | "
                  f"{a.max():.4f} | {scores[:, i, 1].mean():.4f} |")  # fmt: skip
        diff = scores[:, 0, 0] - scores[:, 1, 0]
        print(f"\nsparseopt minus VW: mean {diff.mean():+.4f} (standard error "
              f"{diff.std(ddof=1) / math.sqrt(n_seeds):.4f}); sparseopt ahead on "
              f"{np.sum(diff > 0)} of {n_seeds} seeds")  # fmt: skip
        print("\nVowpal Wabbit (one pass, defaults, hash seed 0) by tokenization and width:\n")
        print("| tokens | -b 18 | -b 20 | -b 22 |")
        print("| --- | ---: | ---: | ---: |")
        for name, token in VW_TOKENS.items():
            paths = write_vw_files(workdir, token, *rows)
            cells = [vw_scores(paths, y_eval, ["-b", str(b)]) for b in (18, 20, 22)]
            print(f"| {name} | " + " | ".join(f"{a:.4f}" for a, _ in cells) + " |")


def bootstrap_aucs(y, probas, resamples, seed=0):
    """AUC of each column of ``probas`` on ``resamples`` resamples of the rows, shape
    (resamples, n_systems); every system sees the same resampled rows."""
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, len(probas)))
    for b in range(resamples):
        rows = rng.integers(0, y.size, y.size)
        out[b] = [roc_auc_score(y[rows], p[rows]) for p in probas]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--hash-seeds", type=int, default=20)
    args = parser.parse_args()
    root = Path(args.data)
    if not root.exists():
        raise SystemExit(f"{root} not found: this benchmark needs the Criteo head")

    X, y = read_criteo(root / "criteo_wideresdnn_train.txt").read()
    parts = [read_criteo(root / f"criteo_wideresdnn_{s}.txt").read() for s in ("dev", "test")]
    X_eval = sp.vstack([p[0] for p in parts]).tocsr()
    y_eval = np.concatenate([p[1] for p in parts])
    print(f"Criteo head: {X.shape[0]:,} training rows, {y_eval.size} evaluation rows, "
          f"2^20 columns, {y_eval.mean():.1%} positives in evaluation")  # fmt: skip

    systems = {
        "sparseopt, defaults, max_iter=1": SparseLogisticRegression(max_iter=1)
        .fit(X, y)
        .predict_proba(X_eval)[:, 1]
    }
    try:
        data = SimpleNamespace(X=X, y=y, X_test=X_eval, y_test=y_eval)
        with tempfile.TemporaryDirectory() as workdir:
            systems["Vowpal Wabbit, one pass, defaults, -b 20"] = run_vw(data, 20, workdir)[1]
    except ImportError as exc:
        print(f"skipped Vowpal Wabbit: {exc}")

    names, probas = list(systems), list(systems.values())
    points = [roc_auc_score(y_eval, p) for p in probas]
    aucs = bootstrap_aucs(y_eval, probas, args.resamples)
    print(f"\n95% intervals: percentiles of {args.resamples} bootstrap resamples of the "
          f"evaluation rows\n")  # fmt: skip
    print("| system | logloss | AUC | AUC 95% interval |")
    print("| --- | ---: | ---: | --- |")
    for i, (name, p) in enumerate(systems.items()):
        low, high = np.percentile(aucs[:, i], [2.5, 97.5])
        print(f"| {name} | {log_loss(y_eval, p):.4f} | {points[i]:.4f} | "
              f"{low:.4f}-{high:.4f} |")  # fmt: skip
    for i in range(1, len(names)):
        diff = aucs[:, 0] - aucs[:, i]
        low, high = np.percentile(diff, [2.5, 97.5])
        point = points[0] - points[i]
        below = np.mean(diff < 0)
        print(f"\nAUC of {names[0]} minus {names[i]}: {point:+.4f}, paired 95% interval "
              f"{low:+.4f} to {high:+.4f}; {below:.0%} of resamples below zero")  # fmt: skip
    if args.hash_seeds and len(names) > 1:
        over_hash_seeds(root, args.hash_seeds, X)


if __name__ == "__main__":
    main()
