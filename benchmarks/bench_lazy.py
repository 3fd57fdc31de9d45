"""Adam's lazy modes judged as the defaults are: cross-validation on the real sets.

    python benchmarks/bench_lazy.py [--models lr fm]

For each real set in ../shared/data (a9a; the Criteo and Avazu heads, train + dev + test, 39
fields hashed into 2^18 columns) and each model (``lr``: SparseLogisticRegression, ``fm``:
FMClassifier, both with their defaults but the optimizer), Adam and AMSGrad at the
estimators' default learning rate (0.005) with each ``lazy`` mode: the mean logloss and AUC
of 5-fold stratified cross-validation (folds fixed by ``random_state=0``, fold i fitted with
``random_state=i``), and how many folds raised an error (DivergenceError). A last table fits
FM and logistic regression on 20,000 rows of ``bench_linear.py``'s Zipf click log and prints
the training loss, or the error, of each mode: the issue-28 case where dense Adam diverged.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from bench_linear import click_log
from sklearn.datasets import load_svmlight_file
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from sparseopt import FMClassifier, SparseLogisticRegression
from sparseopt.datasets import read_avazu, read_criteo
from sparseopt.estimators._linear import DEFAULT_LEARNING_RATE
from sparseopt.optim import Adam, AMSGrad

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MODELS = {"lr": SparseLogisticRegression, "fm": FMClassifier}
MODES = ("exact", "decay", "skip")


def read_head(name, n_bits=18):
    """Train, dev and test of a head set, stacked (the folds are drawn from all of it)."""
    reader, pattern = {
        "criteo": (read_criteo, "criteo_wideresdnn_{}.txt"),
        "avazu": (read_avazu, "avazu_wideresdnn_{}.csv"),
    }[name]
    folder = DATA / name
    header = (folder / pattern.format("train")).open().readline() if name == "avazu" else ""
    parts = []
    for split in ("train", "dev", "test"):
        path = folder / pattern.format(split)
        with tempfile.NamedTemporaryFile("w", suffix=path.suffix) as tmp:
            if header and path.open().readline() != header:
                # the Avazu dev and test splits have no header line: read them behind the
                # train file's (a temporary file outside the repository)
                tmp.write(header + path.read_text())
                tmp.flush()
                path = tmp.name
            parts.append(reader(path, n_bits=n_bits).read())
    X = sp.vstack([p[0] for p in parts]).tocsr()
    return X, np.concatenate([p[1] for p in parts])


def real_sets():
    X, y = load_svmlight_file(str(DATA / "libsvm" / "a9a"), n_features=123)
    yield "a9a", X.astype(np.float32).tocsr(), (y > 0).astype(int)
    for name in ("criteo", "avazu"):
        yield f"{name} head", *read_head(name)


def make(model, cls, lazy, seed):
    opt = cls(learning_rate=DEFAULT_LEARNING_RATE[cls.__name__.lower()], lazy=lazy)
    return MODELS[model](optimizer=opt, random_state=seed)


def cross_validation(models):
    print("| set | model | optimizer | lazy | CV logloss | CV AUC | failed folds |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: |")
    for set_name, X, y in real_sets():
        folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y))
        for model in models:
            for cls in (Adam, AMSGrad):
                for lazy in MODES:
                    losses, aucs, failed = [], [], 0
                    for seed, (train, test) in enumerate(folds):
                        try:
                            est = make(model, cls, lazy, seed).fit(X[train], y[train])
                        except Exception:  # noqa: BLE001 (counted and shown)
                            failed += 1
                            continue
                        proba = est.predict_proba(X[test])[:, 1]
                        losses.append(log_loss(y[test], proba))
                        aucs.append(roc_auc_score(y[test], proba))
                    print(f"| {set_name} | {model} | {cls.__name__} | {lazy} | "
                          f"{np.mean(losses):.4f} | {np.mean(aucs):.4f} | {failed} |",
                          flush=True)  # fmt: skip


def zipf_log(models, n_rows=20_000):
    data = click_log(n_rows)
    constant = log_loss(data.y, np.full(data.y.size, data.y.mean()))
    print(f"\nZipf click log, {n_rows:,} rows, one epoch; a constant prediction's training "
          f"loss {constant:.4f}\n")  # fmt: skip
    print("| model | optimizer | lazy | training loss |")
    print("| --- | --- | --- | ---: |")
    for model in models:
        for cls in (Adam, AMSGrad):
            for lazy in MODES:
                est = make(model, cls, lazy, 0).set_params(max_iter=1)
                try:
                    est.fit(data.X, data.y)
                    out = f"{log_loss(data.y, est.predict_proba(data.X)[:, 1]):.4f}"
                except Exception as exc:  # noqa: BLE001 (shown)
                    out = type(exc).__name__
                print(f"| {model} | {cls.__name__} | {lazy} | {out} |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lr", "fm"], choices=list(MODELS))
    args = parser.parse_args()
    cross_validation(args.models)
    zipf_log(args.models)


if __name__ == "__main__":
    main()
