"""Estimators fitted with nothing set, against Vowpal Wabbit's defaults and against the best
fixed number of epochs picked with hindsight, on the small real sets in ``../shared/data``.

    python benchmarks/bench_defaults.py [--folds 10] [--sets criteo avazu a9a]

The Criteo and Avazu heads: train, dev and test files pooled in file order (8,000 and 9,000
rows), 10-fold cross-validation in contiguous folds, each row predicted by the fold that left
it out, and logloss and AUC computed once over all rows. Features from ``read_criteo`` /
``read_avazu``: every field hashed as a (field, value) pair into 2^20 columns (Criteo's counts
x > 2 as floor(ln(x)^2), ANCHORS.md). a9a: train on ``a9a``, score on ``a9a.t``.

For each set and model (``SparseLogisticRegression``, ``FMClassifier``, and
``FFMClassifier`` on the readers' field-aware layout in 2^16 columns, a9a's 123 columns each
its own field): the defaults, the same with ``early_stopping=True``, fixed epoch counts 1, 2,
3, 5 and 10 (``max_iter=n, tol=None``; the hindsight best of these is starred), and for
logistic regression Vowpal Wabbit with its defaults, one pass, on the same columns
(bench_linear's ``run_vw``). The last columns hold the targets of issue 19: defaults minus VW
(at most +0.001) and defaults minus the model's own hindsight best (at most +0.003).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.datasets import load_svmlight_file
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import KFold

from sparseopt import FFMClassifier, FMClassifier, SparseLogisticRegression
from sparseopt.datasets import column_fields, read_avazu, read_criteo

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EPOCHS = (1, 2, 3, 5, 10)
FFM_BITS = 16  # a vector per field and column: 39 x 2^16 x 4 floats for Criteo


def load(name, root, field_aware=False, ffm_bits=FFM_BITS):
    """(X, y, splits, fields): splits lists (train rows, test rows) pairs, or None for
    cross-validation; with ``field_aware``, the readers' field-aware layout in 2^ffm_bits
    columns and the field of each column (a9a: None, a field per column)."""
    if name == "a9a":
        X, y = load_svmlight_file(root / "libsvm" / "a9a", n_features=123)
        X_test, y_test = load_svmlight_file(root / "libsvm" / "a9a.t", n_features=123)
        n = X.shape[0]
        X, y = sp.vstack([X, X_test]).tocsr(), np.concatenate([y, y_test])
        splits = [(np.arange(n), np.arange(n, X.shape[0]))]
        return X, (y > 0).astype(np.float64), splits, None
    read, stem, ext = {
        "criteo": (read_criteo, "criteo/criteo_wideresdnn", "txt"),
        "avazu": (read_avazu, "avazu/avazu_wideresdnn", "csv"),
    }[name]
    header = (root / f"{stem}_train.{ext}").open().readline() if name == "avazu" else ""
    parts = []
    for split in ("train", "dev", "test"):
        path = root / f"{stem}_{split}.{ext}"
        with tempfile.NamedTemporaryFile("w", suffix=path.suffix) as tmp:
            if header and path.open().readline() != header:
                # the Avazu dev and test splits have no header line: read them behind the
                # train file's (a temporary file outside the repository)
                tmp.write(header + path.read_text())
                tmp.flush()
                path = tmp.name
            reader = read(path, n_bits=ffm_bits if field_aware else 20, field_aware=field_aware)
            parts.append(reader.read())
    X = sp.vstack([p[0] for p in parts]).tocsr()
    y = np.concatenate([p[1] for p in parts])
    return X, y, None, column_fields(ffm_bits, reader.n_fields) if field_aware else None


def sparseopt_runner(model):
    def fit_predict(X, y, X_test):
        return clone(model).fit(X, y).predict_proba(X_test)[:, 1]

    return fit_predict


def epochs_runner(model, epochs):
    """Predictions after each of ``epochs`` (one fit with warm starts, epoch by epoch)."""

    def fit_predict(X, y, X_test):
        m = clone(model).set_params(max_iter=1, tol=None, warm_start=True)
        out = {}
        for e in range(1, max(epochs) + 1):
            m.fit(X, y)
            if e in epochs:
                out[e] = m.predict_proba(X_test)[:, 1]
        return out

    return fit_predict


def vw_runner():
    from bench_linear import run_vw

    def fit_predict(X, y, X_test):
        data = SimpleNamespace(X=X, y=y, X_test=X_test, y_test=np.zeros(X_test.shape[0]))
        with tempfile.TemporaryDirectory() as workdir:  # a fresh cache file for each fold
            return run_vw(data, 20, workdir)[1]

    return fit_predict


def evaluate(X, y, splits, runner):
    """(logloss, AUC) of ``runner``, or a dict of them by epoch count."""
    out = {}
    for train, test in splits:
        got = runner(X[train], y[train], X[test])
        got = got if isinstance(got, dict) else {None: got}
        for k, p in got.items():
            out.setdefault(k, np.full(y.size, np.nan))[test] = p
    rows = np.concatenate([t for _, t in splits])
    scores = {k: (log_loss(y[rows], p[rows]), roc_auc_score(y[rows], p[rows]))
              for k, p in out.items()}  # fmt: skip
    return scores[None] if list(scores) == [None] else scores


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--sets", nargs="+", default=["criteo", "avazu", "a9a"])
    parser.add_argument("--models", nargs="+", default=["lr", "fm", "ffm"])
    args = parser.parse_args()
    root = Path(args.data)
    models = {
        "lr": ("SparseLogisticRegression", SparseLogisticRegression(random_state=0)),
        "fm": ("FMClassifier", FMClassifier(random_state=0)),
        "ffm": ("FFMClassifier", FFMClassifier(random_state=0)),
    }
    print("| set | model | fit | logloss | AUC | minus VW | minus best |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    start = time.perf_counter()
    for name in args.sets:
        X, y, splits, _ = load(name, root)
        if splits is None:
            splits = list(KFold(args.folds).split(X))
        vw = None
        if "lr" in args.models:
            try:
                vw = evaluate(X, y, splits, vw_runner())
            except ImportError:
                print(f"| {name} | Vowpal Wabbit | skipped: not installed | | | | |")
        for key in args.models:
            label, model = models[key]
            data = X, y, splits
            if key == "ffm":
                X_ffm, _, _, fields = load(name, root, field_aware=True)
                data = X_ffm, y, splits
                model = clone(model).set_params(fields=fields)
                label = f"{label} (2^{FFM_BITS} columns)" if fields is not None else label
            fixed = evaluate(*data, epochs_runner(model, EPOCHS))
            best = min(fixed, key=lambda e: fixed[e][0])
            rows = {"defaults": evaluate(*data, sparseopt_runner(model))}
            rows["early_stopping=True"] = evaluate(
                *data, sparseopt_runner(clone(model).set_params(early_stopping=True))
            )
            rows.update({f"{e} epochs{' *' if e == best else ''}": fixed[e] for e in EPOCHS})
            if key == "lr" and vw is not None:
                rows["Vowpal Wabbit, one pass"] = vw
            for fit, (loss, auc) in rows.items():
                gap_vw = f"{loss - vw[0]:+.4f}" if vw is not None and key == "lr" else ""
                print(f"| {name} | {label} | {fit} | {loss:.4f} | {auc:.4f} | {gap_vw} | "
                      f"{loss - fixed[best][0]:+.4f} |", flush=True)  # fmt: skip
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
