"""Factorization machines with nothing set against tuned ones: do the defaults find the
interactions where the data hold them, and leave them alone where they do not?

    python benchmarks/bench_fm_quality.py [--sets movielens planted criteo avazu a9a]
                                          [--ml-folds 5] [--folds 5] [--fit-times R]
                                          [--runs LR FM FFM ...] [--schedules]

Data (``../shared/data`` and ``make_ctr``):

- ``movielens``: :func:`sparseopt.datasets.load_movielens_clicks`, the official folds
  u1 .. u``--ml-folds`` (train on uN.base, score uN.test), predictions pooled;
- ``planted``: ``make_ctr`` rows with pairwise interactions of rank 4 (10 fields of 200
  values, 50,000 training and 20,000 test rows), strength 3 (``planted3``, weak linear part)
  and 1 (``planted1``);
- ``criteo``, ``avazu``: the heads (train, dev and test pooled, 8,000 and 9,000 rows),
  ``--folds`` contiguous folds pooled, features as in ``bench_defaults.py``;
- ``a9a``: train on a9a, score a9a.t.

Models, on the same folds: ``SparseLogisticRegression()``, on FM's columns and on FFM's;
``FMClassifier`` and ``FFMClassifier`` (the readers' field-aware layout, in 2^HEAD_FFM_BITS
columns on the heads) with
nothing set, with the defaults of f70d8d3 ("prev": ``alpha_factors=PREV_ALPHA_FACTORS``), and
with the defaults before issue 29 (FM: ``n_components=8, init_std=0.01``; FFM:
``init_std=0.01``; both at learning rate 0.05 with the factors' accumulators from 30 and
``alpha_factors=1e-4``); the same estimator
tuned: every point of ``GRID`` (learning rate, start of the factors' AdaGrad accumulators,
``init_std``; epochs by ``max_iter="auto"``) fitted on the first 80% of the training rows and
scored on the rest, the best refitted on all of them; and a PyTorch FM written the usual
way (``TorchFM``: minibatches of 256, ``SparseAdam``, L2 on the batch's rows, k = 16), its
learning rate, L2 and epoch count picked on the same inner split, and its field-aware
counterpart on FFM's columns (``TorchFFM``, k = 4), tuned alike. Printed: pooled logloss
(AUC) of each, the fit seconds of FM and FFM with the new and the old defaults (summed over
folds; a shared machine: compare within a row), and the targets of issue 29.

``--fit-times R``: only the fit seconds of FM and FFM with the defaults against those before
issue 29 (``BEFORE``) and, FM, against the race by plain halving (``PlainHalvingFM``), FFM,
against the race at one penalty (``alpha_factors=FFM_ALPHA_FACTORS``), in turns, median of R
rounds. ``--runs LABEL ...``: only the named rows' models.
``--schedules``: FM's and FFM's pooled logloss under other schedules of the race of
``max_iter="auto"`` (``SCHEDULES``), emulated from each candidate's fit alone.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import KFold

import sparseopt.estimators._fm as fm_module
import sparseopt.estimators._fm_training as fm_training
from sparseopt import DivergenceError, FFMClassifier, FMClassifier, SparseLogisticRegression
from sparseopt.datasets import column_fields, load_movielens_clicks, make_ctr
from sparseopt.estimators._rowmodel import AUTO_MAX_ITER

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_defaults import DATA, FFM_BITS, load  # noqa: E402

# (learning rate, factors' accumulator start, init_std) tried by the tuned grid
GRID = list(itertools.product([0.02, 0.05, 0.1, 0.2], [1.0, 30.0], [0.01, 0.03]))
# FFM's columns on the Criteo and Avazu heads: at bench_defaults' 2^16 the 39 Criteo fields get
# 1,680 columns each, and logistic regression on them scored 0.4620 against 0.4604 on 2^20
# plain hashed columns; at 2^18 (6,721 a field) 0.4604 (benchmarks/README.md, issue 29)
HEAD_FFM_BITS = 18
# the PyTorch reference: (learning rate, L2) tried, epochs up to REFERENCE_EPOCHS
REFERENCE_GRID = list(itertools.product([0.001, 0.003, 0.01], [0.0, 1e-4, 1e-3]))
REFERENCE_EPOCHS = 15
# the factors' penalty of FM and FFM at f70d8d3, before it became FM_ALPHA_FACTORS and
# FFM_ALPHA_FACTORS ("prev": those defaults, for quality and fit time)
PREV_ALPHA_FACTORS = 1e-4
# the defaults before issue 29 ("before"; FM also had 8 components), the factors'
# accumulators from 30 (FACTOR_ACCUMULATOR_START) and nothing chosen in the fit
BEFORE = dict(learning_rate=0.05, init_std=0.01, alpha_factors=1e-4)


@contextlib.contextmanager
def candidates(settings):
    """``max_iter="auto"`` races ``settings`` (``AUTO_CANDIDATES``) meanwhile."""
    saved = fm_training.AUTO_CANDIDATES
    fm_training.AUTO_CANDIDATES = settings
    try:
        yield
    finally:
        fm_training.AUTO_CANDIDATES = saved


@contextlib.contextmanager
def accumulator_start(value):
    """The factors' AdaGrad accumulators start at ``value`` (a module constant) meanwhile."""
    saved = fm_training.FACTOR_ACCUMULATOR_START
    fm_training.FACTOR_ACCUMULATOR_START = value
    try:
        yield
    finally:
        fm_training.FACTOR_ACCUMULATOR_START = saved


# -- data ------------------------------------------------------------------------------------
def movielens(root, n_folds):
    """(X, y, splits, fields): the folds stacked, each fold's rows its own block."""
    blocks, splits, start = [], [], 0
    for fold in range(1, n_folds + 1):
        d = load_movielens_clicks(root / "ml-100k", f"u{fold}")
        n_train, n_test = d.X_train.shape[0], d.X_test.shape[0]
        blocks += [(d.X_train, d.y_train), (d.X_test, d.y_test)]
        splits.append((np.arange(start, start + n_train),
                       np.arange(start + n_train, start + n_train + n_test)))  # fmt: skip
        start += n_train + n_test
    X = sp.vstack([b[0] for b in blocks]).tocsr()
    y = np.concatenate([b[1] for b in blocks])
    return X, y, splits, d.fields


def planted(strength, field_aware):
    bits = FFM_BITS if field_aware else 18
    d = make_ctr(50_000, n_fields=10, n_values=200, n_bits=bits, interactions=strength,
                 weight_scale=0.5 if strength > 2 else 1.25, n_test=20_000,
                 field_aware=field_aware, random_state=0)  # fmt: skip
    X, y = sp.vstack([d.X, d.X_test]).tocsr(), np.concatenate([d.y, d.y_test])
    splits = [(np.arange(50_000), np.arange(50_000, 70_000))]
    return X, y, splits, column_fields(bits, 10) if field_aware else None


def dataset(name, root, n_folds, ml_folds, field_aware, head_ffm_bits=HEAD_FFM_BITS):
    """(X, y, splits, fields) of a set; ``fields`` with ``field_aware`` (FFM), the heads in
    2^head_ffm_bits columns."""
    if name == "movielens":
        return movielens(root, ml_folds)  # one-hot in field slices already
    if name.startswith("planted"):
        return planted(float(name[len("planted") :]), field_aware)
    X, y, splits, fields = load(name, root, field_aware=field_aware, ffm_bits=head_ffm_bits)
    if name == "a9a":
        fields = np.arange(X.shape[1]) if field_aware else None
    return X, y, splits or list(KFold(n_folds).split(X)), fields


# -- the PyTorch reference FM ----------------------------------------------------------------
class TorchFM:
    """FM written the usual way in PyTorch: bias, ``EmbeddingBag`` linear weights, ``Embedding``
    factors (sparse gradients), minibatches of ``batch_size`` rows in a new random order each
    epoch, ``SparseAdam``; L2 on the weights and factors of the batch's features (their
    squares times ``l2 / 2``, per occurrence, summed with the batch's losses and divided by
    its size), as sparse embeddings are penalized: only the rows a batch touches."""

    def __init__(self, learning_rate, l2, k=16, batch_size=256, init_std=0.01, seed=0):
        self.learning_rate, self.l2, self.k = learning_rate, l2, k
        self.batch_size, self.init_std, self.seed = batch_size, init_std, seed

    def start(self, n_features):
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(self.seed)
        self.rng = np.random.default_rng(self.seed)
        self.linear = torch.nn.Embedding(n_features, 1, sparse=True)
        torch.nn.init.zeros_(self.linear.weight)
        self.factors = torch.nn.Embedding(n_features, self.k, sparse=True)
        torch.nn.init.normal_(self.factors.weight, std=self.init_std)
        self.bias = torch.zeros(1, requires_grad=True)
        self.sparse_opt = torch.optim.SparseAdam(
            [self.linear.weight, self.factors.weight], lr=self.learning_rate
        )
        self.dense_opt = torch.optim.Adam([self.bias], lr=self.learning_rate)
        return self

    @staticmethod
    def _tensors(X):
        import torch

        X = X.tocsr()
        row = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        return (torch.from_numpy(X.indices.astype(np.int64)),
                torch.from_numpy(X.data.astype(np.float32)),
                torch.from_numpy(row.astype(np.int64)), X.shape[0])  # fmt: skip

    def _margins(self, columns, values, row, n_rows):
        """Margins and the batch's L2 term: ``0.5 * ((sum x v)^2 - sum x^2 v^2)`` per row."""
        import torch

        w, V = self.linear(columns).squeeze(1), self.factors(columns)
        xv = V * values[:, None]
        s = torch.zeros(n_rows, self.k).index_add_(0, row, xv)
        q = torch.zeros(n_rows, self.k).index_add_(0, row, xv * xv)
        lin = torch.zeros(n_rows).index_add_(0, row, w * values)
        penalty = 0.5 * self.l2 * ((w * w).sum() + (V * V).sum())
        return self.bias + lin + 0.5 * (s * s - q).sum(1), penalty

    def epoch(self, X, y):
        import torch

        order = self.rng.permutation(X.shape[0])
        X, y = X[order], torch.from_numpy(y[order].astype(np.float32))
        loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")
        for lo in range(0, X.shape[0], self.batch_size):
            hi = min(lo + self.batch_size, X.shape[0])
            margin, penalty = self._margins(*self._tensors(X[lo:hi]))
            loss = (loss_fn(margin, y[lo:hi]) + penalty) / (hi - lo)
            self.sparse_opt.zero_grad()
            self.dense_opt.zero_grad()
            loss.backward()
            self.sparse_opt.step()
            self.dense_opt.step()
        return self

    def predict(self, X):
        import torch

        with torch.no_grad():
            return torch.sigmoid(self._margins(*self._tensors(X))[0]).numpy().astype(np.float64)


class TorchFFM(TorchFM):
    """The field-aware counterpart of ``TorchFM`` on FFM's hashed layout: column j keeps a
    vector per field, row ``j * F + f`` of one ``Embedding``, and a pair of features j, l in
    a row adds ``<v[j, field(l)], v[l, field(j)]> x_j x_l`` (columns of field -1: linear
    only); L2 on the vectors each pair uses, per use. k = 4, as ``FFMClassifier``'s default."""

    def __init__(self, learning_rate, l2, fields, k=4, **kwargs):
        super().__init__(learning_rate, l2, k=k, **kwargs)
        self.fields = np.asarray(fields, np.int64)
        self.n_fields = int(self.fields.max()) + 1

    def start(self, n_features):
        import torch

        super().start(n_features)
        self.factors = torch.nn.Embedding(n_features * self.n_fields, self.k, sparse=True)
        torch.nn.init.normal_(self.factors.weight, std=self.init_std)
        self.sparse_opt = torch.optim.SparseAdam(
            [self.linear.weight, self.factors.weight], lr=self.learning_rate
        )
        return self

    def _tensors(self, X):
        import torch

        X = X.tocsr()
        counts = np.diff(X.indptr)
        a, b = [], []  # the nonzeros' positions of every pair within a row
        for m in np.unique(counts[counts > 1]):
            first, second = np.triu_indices(m, 1)
            starts = X.indptr[:-1][counts == m, None]
            a.append((starts + first).ravel())
            b.append((starts + second).ravel())
        a = np.concatenate(a) if a else np.zeros(0, np.int64)
        b = np.concatenate(b) if b else np.zeros(0, np.int64)
        field = self.fields[X.indices]
        keep = (field[a] >= 0) & (field[b] >= 0)
        a, b = a[keep], b[keep]
        row = np.repeat(np.arange(X.shape[0]), counts)
        pairs = (X.indices[a] * self.n_fields + field[b], X.indices[b] * self.n_fields + field[a],
                 X.data[a] * X.data[b], row[a])  # fmt: skip
        as_long = [torch.from_numpy(np.asarray(v, np.int64)) for v in (*pairs[:2], pairs[3])]
        return (*super()._tensors(X), *as_long[:2],
                torch.from_numpy(pairs[2].astype(np.float32)), as_long[2])  # fmt: skip

    def _margins(self, columns, values, row, n_rows, va, vb, product, pair_row):
        import torch

        w, left, right = self.linear(columns).squeeze(1), self.factors(va), self.factors(vb)
        lin = torch.zeros(n_rows).index_add_(0, row, w * values)
        pair = torch.zeros(n_rows).index_add_(0, pair_row, (left * right).sum(1) * product)
        penalty = 0.5 * self.l2 * ((w * w).sum() + (left * left).sum() + (right * right).sum())
        return self.bias + lin + pair, penalty


def inner_split(n):
    cut = int(0.8 * n)
    return np.arange(cut), np.arange(cut, n)


def reference_runner(make=TorchFM):
    """A runner of the reference ``make(learning_rate, l2)`` (``TorchFM``, or ``TorchFFM``
    with its fields), tuned on the inner split (learning rate, L2, epochs) and refitted on
    all the rows."""

    def run(X, y, X_test):
        fit_rows, val_rows = inner_split(X.shape[0])
        best = (np.inf, None, None)
        for learning_rate, l2 in REFERENCE_GRID:
            ref = make(learning_rate, l2).start(X.shape[1])
            for epoch in range(1, REFERENCE_EPOCHS + 1):
                ref.epoch(X[fit_rows], y[fit_rows])
                loss = log_loss(y[val_rows], ref.predict(X[val_rows]), labels=[0, 1])
                if loss < best[0]:
                    best = (loss, (learning_rate, l2), epoch)
                elif epoch > best[2] + 1 and best[1] == (learning_rate, l2):
                    break
        (learning_rate, l2), epochs = best[1], best[2]
        print(f"  reference picked learning rate {learning_rate}, L2 {l2}, {epochs} epochs",
              file=sys.stderr, flush=True)  # fmt: skip
        ref = make(learning_rate, l2).start(X.shape[1])
        for _ in range(epochs):
            ref.epoch(X, y)
        return ref.predict(X_test)

    return run


# -- sparseopt runners -----------------------------------------------------------------------
def fit_predict(model, X, y, X_test, acc0=None):
    with accumulator_start(acc0) if acc0 is not None else contextlib.nullcontext():
        return clone(model).fit(X, y).predict_proba(X_test)[:, 1]


def fixed_runner(model, acc0=None):
    def run(X, y, X_test):
        return fit_predict(model, X, y, X_test, acc0)

    return run


def tuned_runner(model):
    """``GRID`` on the inner split, then the best point refitted on all the rows."""

    def run(X, y, X_test):
        fit_rows, val_rows = inner_split(X.shape[0])
        scores = {}
        for learning_rate, acc0, init_std in GRID:
            m = clone(model).set_params(learning_rate=learning_rate, init_std=init_std)
            try:
                p = fit_predict(m, X[fit_rows], y[fit_rows], X[val_rows], acc0)
            except DivergenceError:  # a point of the grid that diverges loses
                continue
            scores[(learning_rate, acc0, init_std)] = log_loss(y[val_rows], p, labels=[0, 1])
        learning_rate, acc0, init_std = min(scores, key=scores.get)
        m = clone(model).set_params(learning_rate=learning_rate, init_std=init_std)
        return fit_predict(m, X, y, X_test, acc0)

    return run


def evaluate(X, y, splits, runner):
    """(logloss, AUC, fit seconds summed over folds) of ``runner`` pooled over ``splits``."""
    p = np.full(y.size, np.nan)
    seconds = 0.0
    for train, test in splits:
        start = time.perf_counter()
        p[test] = runner(X[train], y[train], X[test])
        seconds += time.perf_counter() - start
    rows = np.concatenate([t for _, t in splits])
    return log_loss(y[rows], p[rows]), roc_auc_score(y[rows], p[rows]), seconds


class PlainHalvingFM(FMClassifier):
    """``FMClassifier`` whose ``max_iter="auto"`` race drops the worse half after every epoch
    (the schedule before the catch-up rule of ``FM_RACE_CATCH_UP_EPOCHS``)."""

    _race_catch_up_epochs = 0


def fit_times(name, root, n_folds, ml_folds, repeats):
    """Median seconds of the folds' fits (summed) of FM and FFM with the defaults, with the
    defaults before issue 29 (``BEFORE``) and, FM, with the plain halving race
    (``PlainHalvingFM``), FFM, with one penalty (``alpha_factors=FFM_ALPHA_FACTORS``, not
    raced), in a new order each round, ``repeats`` rounds after one warm-up: a row of the
    fit-time table."""
    cells = []
    for field_aware, model in ((False, FMClassifier), (True, FFMClassifier)):
        X, y, splits, fields = dataset(name, root, n_folds, ml_folds, field_aware)
        kw = dict(fields=fields) if field_aware else {}
        before = dict(BEFORE, n_components=8) if not field_aware else BEFORE
        fits = [model(random_state=0, **kw), model(random_state=0, **before, **kw)]
        if not field_aware:
            fits.append(PlainHalvingFM(random_state=0))
        else:  # the race at one penalty, as before alpha_factors="auto"
            fits.append(model(random_state=0, alpha_factors=fm_module.FFM_ALPHA_FACTORS, **kw))
        seconds = [[] for _ in fits]
        for rep in range(repeats + 1):
            for i in np.roll(np.arange(len(fits)), rep):
                start = time.perf_counter()
                for train, _ in splits:
                    clone(fits[i]).fit(X[train], y[train])
                if rep:  # the first round compiles
                    seconds[i].append(time.perf_counter() - start)
        median = [float(np.median(t)) for t in seconds]
        cells += [f"{t:.2f}" for t in median[1:]] + [f"{median[0]:.2f}"]
        cells += [f"{median[0] / t:.2f}" for t in median[1:]]
    print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


# -- race schedules emulated from each candidate's fit alone (--schedules) ----------------
def at_least(n_epochs):
    """Every run still training stays for the first ``n_epochs``, then the leader alone."""
    return lambda curves, stopped, epoch, leader: [
        i for i in range(len(curves)) if i == leader or (epoch < n_epochs and not stopped[i])
    ]


def within(margin):
    """A run still training stays while its best is within ``margin`` of the leader's."""
    return lambda curves, stopped, epoch, leader: [
        i for i in range(len(curves))
        if i == leader or (not stopped[i] and min(curves[i]) <= min(curves[leader]) + margin)
    ]  # fmt: skip


def catching_up(n_epochs):
    """``RowModel._catching_up`` with ``_race_catch_up_epochs = n_epochs`` (two candidates:
    the better half is the leader)."""

    def keep(curves, stopped, epoch, leader):
        gap = [min(c) - min(curves[leader]) for c in curves]
        return [
            i for i, c in enumerate(curves)
            if i == leader or (n_epochs and not stopped[i]
                               and (len(c) < 2 or gap[i] <= n_epochs * (c[-2] - c[-1])))
        ]  # fmt: skip

    return keep


SCHEDULES = {
    "halving (before)": catching_up(0),
    "at least 2 epochs": at_least(2),
    "at least 3 epochs": at_least(3),
    "within 0.001": within(1e-3),
    "until each stops": at_least(AUTO_MAX_ITER),
    "catch-up 1": catching_up(1),
    "catch-up 2 (FM now)": catching_up(2),
    "catch-up 3": catching_up(3),
    "catch-up 5": catching_up(5),
}


def emulate(schedule, curves):
    """(chosen run, epochs trained by all) of a race under ``schedule`` whose runs would score
    ``curves`` (each run's held-out losses, ending where its own stopper stopped it)."""
    alive, left_at, epoch = list(range(len(curves))), {}, 0
    while len(alive) > 1:
        epoch += 1
        upto = [curves[i][:epoch] for i in alive]
        stopped = [len(curves[i]) <= epoch for i in alive]
        leader = min(range(len(alive)), key=lambda j: min(upto[j]))
        kept = [alive[j] for j in schedule(upto, stopped, epoch, leader)]
        left_at.update({i: epoch for i in alive if i not in kept})
        alive = kept
    (chosen,) = alive
    epochs = sum(min(len(c), left_at.get(i, len(c))) for i, c in enumerate(curves))
    return chosen, epochs


def race_schedules(name, root, n_folds, ml_folds):
    """Rows of the schedules' table for ``name``: FM's and FFM's pooled logloss and epochs
    when the race follows each of ``SCHEDULES``, emulated: each of ``AUTO_CANDIDATES`` fitted
    alone per fold gives its held-out curve and test predictions, and the candidate a
    schedule picks from the curves is scored. (In a real race the runs draw their epochs'
    orders from one generator in turns, so its figures may differ slightly.)"""
    for field_aware, model in ((False, FMClassifier), (True, FFMClassifier)):
        X, y, splits, fields = dataset(name, root, n_folds, ml_folds, field_aware)
        model = model(random_state=0, **(dict(fields=fields) if field_aware else {}))
        folds = []
        for train, test in splits:
            alone = []
            for candidate in fm_training.AUTO_CANDIDATES:
                with candidates((candidate,)):
                    fitted = clone(model).fit(X[train], y[train])
                alone.append((fitted.validation_scores_, fitted.predict_proba(X[test])[:, 1]))
            folds.append(alone)
        rows = np.concatenate([test for _, test in splits])
        cells = []
        for schedule in SCHEDULES.values():
            p, epochs = np.full(y.size, np.nan), 0
            for (_, test), alone in zip(splits, folds, strict=True):
                chosen, n = emulate(schedule, [curve for curve, _ in alone])
                p[test], epochs = alone[chosen][1], epochs + n
            cells.append(f"{log_loss(y[rows], p[rows]):.4f} ({epochs})")
        label = "FFM" if field_aware else "FM"
        print(f"| {name} | {label} | " + " | ".join(cells) + " |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--ml-folds", type=int, default=5)
    parser.add_argument(
        "--sets", nargs="+", default=["movielens", "planted3", "planted1", "criteo", "avazu", "a9a"]
    )
    parser.add_argument(
        "--fit-times",
        type=int,
        default=0,
        metavar="REPEATS",
        help="only time the defaults' fits against the previous ones",
    )
    parser.add_argument(
        "--runs",
        nargs="+",
        metavar="LABEL",
        help="only these rows' models (e.g. LR FM FFM), the gaps to those not run left out",
    )
    parser.add_argument(
        "--schedules",
        action="store_true",
        help="only the race schedules' figures, emulated from each candidate's fit alone",
    )
    parser.add_argument(
        "--head-ffm-bits",
        type=int,
        default=HEAD_FFM_BITS,
        metavar="BITS",
        help="FFM's columns on the Criteo and Avazu heads: 2^BITS (the table's rows)",
    )
    args = parser.parse_args()  # fmt: skip
    root = Path(args.data)
    if args.schedules:
        print("| set | model | " + " | ".join(SCHEDULES) + " |")
        print("|---" * (len(SCHEDULES) + 2) + "|")
        for name in args.sets:
            race_schedules(name, root, args.folds, args.ml_folds)
        return
    if args.fit_times:
        print("| set | FM before s | FM halving s | FM s | FM / before | FM / halving "
              "| FFM before s | FFM one penalty s | FFM s | FFM / before "
              "| FFM / one penalty |")  # fmt: skip
        print("|---" * 11 + "|")
        for name in args.sets:
            fit_times(name, root, args.folds, args.ml_folds, args.fit_times)
        return
    header = None
    start = time.perf_counter()
    for name in args.sets:
        X, y, splits, _ = dataset(name, root, args.folds, args.ml_folds, field_aware=False)
        Xf, _, _, fields = dataset(name, root, args.folds, args.ml_folds, True, args.head_ffm_bits)
        fm, ffm = FMClassifier(random_state=0), FFMClassifier(fields=fields, random_state=0)
        lr = SparseLogisticRegression(random_state=0)
        runs = {
            "LR": (X, fixed_runner(lr)),
            "LR, FFM's columns": (Xf, fixed_runner(lr)),
            "FM before": (X, fixed_runner(clone(fm).set_params(n_components=8, **BEFORE), 30.0)),
            "FM prev": (X, fixed_runner(clone(fm).set_params(alpha_factors=PREV_ALPHA_FACTORS))),
            "FM": (X, fixed_runner(fm)),
            "FM tuned": (X, tuned_runner(fm)),
            "torch FM tuned": (X, reference_runner()),
            "FFM before": (Xf, fixed_runner(clone(ffm).set_params(**BEFORE), 30.0)),
            "FFM prev": (Xf, fixed_runner(clone(ffm).set_params(alpha_factors=PREV_ALPHA_FACTORS))),
            "FFM": (Xf, fixed_runner(ffm)),
            "FFM tuned": (Xf, tuned_runner(ffm)),
            "torch FFM tuned": (Xf, reference_runner(partial(TorchFFM, fields=ffm.fields))),
        }
        if args.runs:
            if unknown := set(args.runs) - set(runs):
                parser.error(f"--runs: no row {sorted(unknown)}; the rows are {list(runs)}")
            runs = {label: runs[label] for label in args.runs}
        got = {}
        for label, (data, runner) in runs.items():
            got[label] = evaluate(data, y, splits, runner)
            loss, auc, seconds = got[label]
            print(f"{name:10s} {label:17s} logloss {loss:.4f}  AUC {auc:.4f}  fit {seconds:.1f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
        loss = {k: v[0] for k, v in got.items()}
        gaps = {
            f"{a} - {b_short}": loss[a] - loss[b]
            for a, b, b_short in [
                ("FM", "FM tuned", "tuned"), ("FFM", "FFM tuned", "tuned"),
                ("FM", "torch FM tuned", "torch"), ("FFM", "torch FM tuned", "torch"),
                ("FFM", "torch FFM tuned", "torch FFM"),
                ("FM", "FM before", "before"), ("FFM", "FFM before", "before"),
                ("FM", "LR", "LR"), ("FFM", "LR", "LR"),
                ("FFM", "LR, FFM's columns", "LR, FFM's columns"),
            ]
            if a in loss and b in loss  # all of them unless --runs leaves some out
        }  # fmt: skip
        times = ", ".join(
            " / ".join(f"{got[label][2]:.1f}" for label in (m, f"{m} prev", f"{m} before")
                       if label in got)
            for m in ("FM", "FFM")
        )  # fmt: skip
        if header is None:
            header = [*runs, *gaps, "fit s: FM / prev / before, FFM / prev / before"]
            print("| set | " + " | ".join(header) + " |")
            print("|---" * (len(header) + 1) + "|")
        cells = [f"{v:.4f}" for v in loss.values()] + [f"{v:+.4f}" for v in gaps.values()]
        print(f"| {name} | " + " | ".join(cells) + f" | {times} |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
