"""Factorization machines, one epoch on Criteo-like data: sparseopt and torch side by side.

    python benchmarks/bench_fm.py [--rows 1000000] [--bits 22] [--k 8 16] [--real]
    python benchmarks/bench_fm.py --optimizers [--rows 100000]

Generates ``sparseopt.datasets.make_ctr`` data (39 Zipf-distributed one-hot fields hashed into
2**bits columns, about 27% positives, planted pairwise interactions of rank 4 and strength 1),
trains each system for one epoch and prints, for each factor dimension k, one table: wall and
CPU seconds of training (CPU time is the fairer single-thread measure on a shared machine; a
threaded run's CPU time sums its threads, so compare threads by wall time), million nonzeros
per CPU second, test logloss and AUC, and CPU time relative to torch's. Peers:
a torch FM written the usual way (``EmbeddingBag`` for the linear part, ``Embedding`` rows for
the factors, sparse gradients, ``torch.optim.Adagrad``, batches of 256, one thread). LightFM
is a user-item hybrid model (it scores (user, item) pairs from their feature sets, not a row
of arbitrary features) and is not installable here: it is left out.

``--real`` adds a quality table on the heads of Criteo and Avazu in ../shared/data (train on
train, evaluate on dev + test): logistic regression, FM and FFM, one epoch each (more epochs
overfit 7,200 rows), logloss and AUC as mean and standard deviation over ten seeds (shuffling
and factor draws): on 800 evaluation rows one seed's AUC is too noisy to rank models.

``--optimizers`` prints instead one epoch's rows per second of FM (k = 8) for every optimizer
and each of Adam's and AMSGrad's ``lazy`` modes, side by side with AdaGrad in the same run, on
``make_ctr`` data and on ``bench_linear.py``'s Zipf click log, and of FFM (k = 4) on a tenth
as many rows of the click log with its fields hashed apart.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp
from sklearn.metrics import log_loss, roc_auc_score

from sparseopt import FFMClassifier, FMClassifier, SparseLogisticRegression
from sparseopt.datasets import column_fields, make_ctr, read_avazu, read_criteo

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed(fn):
    """``fn()``, its wall seconds and the process's CPU seconds (all threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - start, time.process_time() - cpu)


def run_sparseopt(model, data):
    model.fit(data.X[:2000], data.y[:2000])  # compile (or load the cache) outside the timing
    _, seconds = timed(lambda: model.fit(data.X, data.y))
    return seconds, model.predict_proba(data.X_test)[:, 1]


def run_torch(data, k, batch_size=256, learning_rate=0.05):
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    n_features = data.X.shape[1]
    linear = torch.nn.EmbeddingBag(n_features, 1, mode="sum", sparse=True)
    torch.nn.init.zeros_(linear.weight)
    factors = torch.nn.Embedding(n_features, k, sparse=True)
    torch.nn.init.normal_(factors.weight, std=0.01)
    bias = torch.zeros(1, requires_grad=True)
    params = [linear.weight, factors.weight, bias]
    opt = torch.optim.Adagrad(params, lr=learning_rate)
    X = data.X
    indptr = torch.from_numpy(X.indptr.astype(np.int64))
    indices = torch.from_numpy(X.indices.astype(np.int64))
    values = torch.from_numpy(X.data.astype(np.float32))
    y = torch.from_numpy(data.y.astype(np.float32))
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")

    def margins(flat, vals, offsets, lengths):
        row = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
        xv = factors(flat) * vals[:, None]
        s = torch.zeros(lengths.numel(), k).index_add_(0, row, xv)
        sq = torch.zeros(lengths.numel(), k).index_add_(0, row, xv * xv)
        lin = linear(flat, offsets, per_sample_weights=vals).squeeze(1)
        return bias + lin + 0.5 * (s * s - sq).sum(1)

    def batch(rows):
        starts, ends = indptr[rows], indptr[rows + 1]
        lengths = ends - starts
        pos = torch.cat([torch.arange(s, e) for s, e in zip(starts.tolist(), ends.tolist())])  # noqa: B905
        offsets = torch.cumsum(lengths, 0) - lengths
        return indices[pos], values[pos], offsets, lengths

    def train():
        order = np.random.default_rng(0).permutation(X.shape[0])
        for lo in range(0, X.shape[0], batch_size):
            rows = torch.from_numpy(np.sort(order[lo : lo + batch_size]))
            opt.zero_grad()
            loss_fn(margins(*batch(rows)), y[rows]).backward()
            opt.step()

    _, seconds = timed(train)
    Xt = data.X_test
    with torch.no_grad():
        lengths = torch.from_numpy(np.diff(Xt.indptr).astype(np.int64))
        flat = torch.from_numpy(Xt.indices.astype(np.int64))
        vals = torch.from_numpy(Xt.data.astype(np.float32))
        offsets = torch.from_numpy(Xt.indptr[:-1].astype(np.int64))
        proba = torch.sigmoid(margins(flat, vals, offsets, lengths)).numpy()
    return seconds, proba


def speed_tables(args):
    data = make_ctr(args.rows, n_bits=args.bits, interactions=1.0, n_test=args.test,
                    random_state=0)  # fmt: skip
    nnz = data.X.nnz
    floor = log_loss(data.y_test, data.proba_test)
    print(f"\n{args.rows:,} rows x 2**{args.bits} columns, {nnz / args.rows:.1f} nonzeros per row; "
          f"{numba.config.NUMBA_NUM_THREADS} Numba threads. Bayes floor: logloss {floor:.4f}, "
          f"AUC {roc_auc_score(data.y_test, data.proba_test):.4f}")  # fmt: skip
    lr_seconds, lr_proba = run_sparseopt(SparseLogisticRegression(max_iter=1, random_state=0), data)
    for k in args.k:
        rows = [("sparseopt LR (reference, no factors)", lr_seconds, lr_proba)]
        configs = [
            ("sparseopt FM, per-element AdaGrad, 1 thread", {"factor_state": "element"}),
            ("sparseopt FM, per-row AdaGrad, 1 thread", {"factor_state": "row"}),
            ("sparseopt FM, per-element AdaGrad, n_jobs=2", {"factor_state": "element",
                                                              "n_jobs": 2}),
            ("sparseopt FM, per-row AdaGrad, n_jobs=2", {"factor_state": "row", "n_jobs": 2}),
            ("sparseopt FM, per-element AdaGrad, batch 256", {"factor_state": "element",
                                                               "batch_size": 256,
                                                               "learning_rate": 0.1}),
        ]  # fmt: skip
        for name, kw in configs:
            model = FMClassifier(n_components=k, max_iter=1, random_state=0, **kw)
            rows.append((name, *run_sparseopt(model, data)))
        if not args.no_torch:
            rows.append(("torch FM (EmbeddingBag + Embedding, sparse Adagrad, batch 256, "
                         "1 thread)", *run_torch(data, k)))  # fmt: skip
        torch_cpu = rows[-1][1][1] if not args.no_torch else None
        print(f"\nk = {k}\n")
        print("| system | wall s | CPU s | M nnz per CPU s | test logloss | AUC | CPU vs torch |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, (wall, cpu), proba in rows:
            ratio = f"{torch_cpu / cpu:.1f}x" if torch_cpu else ""
            print(f"| {name} | {wall:.2f} | {cpu:.2f} | {nnz / cpu / 1e6:.1f} | "
                  f"{log_loss(data.y_test, proba):.4f} | {roc_auc_score(data.y_test, proba):.4f} "
                  f"| {ratio} |")  # fmt: skip


def real_table(n_bits=18, seeds=range(10)):
    sets = {
        "criteo": (read_criteo, "criteo_wideresdnn_{}.txt"),
        "avazu": (read_avazu, "avazu_wideresdnn_{}.csv"),
    }
    print(f"\nMean (standard deviation) over random_state in {list(seeds)}:\n")
    print("| set | model | test logloss | AUC | AUC range |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, (reader, pattern) in sets.items():
        folder = DATA / name
        if not folder.exists():
            print(f"| {name} | skipped: {folder} missing | | | |")
            continue
        parts = {}
        header = (folder / pattern.format("train")).open().readline() if name == "avazu" else ""
        for split in ("train", "dev", "test"):
            path = folder / pattern.format(split)
            with tempfile.NamedTemporaryFile("w", suffix=path.suffix) as tmp:
                if header and path.open().readline() != header:
                    # the Avazu dev and test splits have no header line: read them behind
                    # the train file's (a temporary file outside the repository)
                    tmp.write(header + path.read_text())
                    tmp.flush()
                    path = tmp.name
                r = reader(path, n_bits=n_bits, field_aware=True)
                parts[split] = r.read()
        X, y = parts["train"]
        X_eval = sp.vstack([parts["dev"][0], parts["test"][0]]).tocsr()
        y_eval = np.concatenate([parts["dev"][1], parts["test"][1]])
        fields = column_fields(n_bits, r.n_fields)
        models = {
            "logistic regression": lambda s: SparseLogisticRegression(max_iter=1, random_state=s),
            "FM k=8 (defaults)": lambda s: FMClassifier(max_iter=1, random_state=s),
            "FM k=8, per-element AdaGrad": lambda s: FMClassifier(
                max_iter=1, factor_state="element", random_state=s
            ),
            "FFM k=4 (defaults)": lambda s, fields=fields: FFMClassifier(
                fields=fields, max_iter=1, random_state=s
            ),
        }
        for label, make in models.items():
            losses, aucs = [], []
            for seed in seeds:
                proba = make(seed).fit(X, y).predict_proba(X_eval)[:, 1]
                losses.append(log_loss(y_eval, proba))
                aucs.append(roc_auc_score(y_eval, proba))
            print(f"| {name} | {label} | {np.mean(losses):.4f} ({np.std(losses):.4f}) | "
                  f"{np.mean(aucs):.4f} ({np.std(aucs):.4f}) | "
                  f"{min(aucs):.4f}-{max(aucs):.4f} |")  # fmt: skip


def optimizer_tables(rows):
    from bench_linear import click_log, optimizer_table

    ctr = make_ctr(rows, random_state=0)
    log = click_log(rows)
    optimizer_table(
        lambda opt: FMClassifier(optimizer=opt, max_iter=1, random_state=0),
        [("FM, make_ctr", ctr.X, ctr.y), ("FM, Zipf click log", log.X, log.y)],
    )
    small = click_log(rows // 10, field_aware=True)
    fields = column_fields(22, 45)
    optimizer_table(
        lambda opt: FFMClassifier(fields=fields, optimizer=opt, max_iter=1, random_state=0),
        [("FFM, Zipf click log", small.X, small.y)],
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--test", type=int, default=200_000)
    parser.add_argument("--bits", type=int, default=22)
    parser.add_argument("--k", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--real", action="store_true")
    parser.add_argument("--optimizers", action="store_true")
    args = parser.parse_args()
    if args.optimizers:
        return optimizer_tables(args.rows)
    if not args.no_speed:
        speed_tables(args)
    if args.real:
        real_table()


if __name__ == "__main__":
    main()
