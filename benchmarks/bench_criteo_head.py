"""Logistic regression on the Criteo head, one epoch: sparseopt against Vowpal Wabbit, with
the uncertainty of an AUC measured on 800 rows.

    python benchmarks/bench_criteo_head.py [--resamples 2000]

Reads ``../shared/data/criteo`` (train 7,200 rows; evaluate on dev + test, 800 rows) with
``read_criteo`` (2^20 columns, ANCHORS.md's features), trains ``SparseLogisticRegression``
with its defaults for one epoch and Vowpal Wabbit for one pass with its defaults on the same
columns (bench_linear's text format: the column ids as feature names), and prints each
system's logloss and AUC with a 95% bootstrap interval, and the paired bootstrap interval of
the AUC difference (the same resampled rows for both systems).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp
from bench_linear import run_vw
from sklearn.metrics import log_loss, roc_auc_score

from sparseopt import SparseLogisticRegression
from sparseopt.datasets import read_criteo

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "criteo"
ANCHOR = ("Vowpal Wabbit, ANCHORS.md (its own hashing)", 0.4793, 0.7246)


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
    print(f"| {ANCHOR[0]} | {ANCHOR[1]:.4f} | {ANCHOR[2]:.4f} | |")
    for i in range(1, len(names)):
        diff = aucs[:, 0] - aucs[:, i]
        low, high = np.percentile(diff, [2.5, 97.5])
        point = points[0] - points[i]
        below = np.mean(diff < 0)
        print(f"\nAUC of {names[0]} minus {names[i]}: {point:+.4f}, paired 95% interval "
              f"{low:+.4f} to {high:+.4f}; {below:.0%} of resamples below zero")  # fmt: skip
    low, high = np.percentile(aucs[:, 0] - ANCHOR[2], [2.5, 97.5])
    print(
        f"AUC of {names[0]} minus the ANCHORS figure {ANCHOR[2]}: {points[0] - ANCHOR[2]:+.4f}, "
        f"95% interval {low:+.4f} to {high:+.4f} (the anchor's own uncertainty not counted)"
    )


if __name__ == "__main__":
    main()
