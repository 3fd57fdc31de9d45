"""Sparse logistic regression, one epoch on Criteo-like data: sparseopt and its peers.

    python benchmarks/bench_linear.py [--rows 1000000] [--bits 22]
    python benchmarks/bench_linear.py --optimizers [--rows 200000]
    python benchmarks/bench_linear.py --threads [--model fm] [--repeats 5]

Generates ``sparseopt.datasets.make_ctr`` data (39 Zipf-distributed one-hot fields hashed into
2**bits columns, a known logistic model, about 27% positives), trains each system for one epoch
on one thread (unless stated; sparseopt's epochs and the bare loop are timed best of 3, the
peers' once, as they take longer) and prints one table: train seconds, million nonzeros per
second, test logloss and AUC, and each system's speed relative to sparseopt. Peers that are not
installed (``pip install -e ".[bench]"``) are skipped. A line sets Hogwild's two-thread
speed-up beside the bare loop's, run in two threads on one table: what this machine allows a
memory-bound loop in that minute. A last section measures sparseopt's memory: optimizer state
per coordinate and the peak resident memory of ``fit`` against its input plus model state, in
a fresh process.

``--optimizers`` prints instead one epoch's rows per second for every optimizer and each of
Adam's and AMSGrad's ``lazy`` modes, side by side with AdaGrad in the same run (best of two
epochs after a warm-up fit), on this data and on a Zipf click log (45 fields, vocabularies
from 10 to 400,000 values, 2^22 columns).

``--threads`` times one epoch with ``n_jobs=1`` and ``n_jobs=2`` (Hogwild) on this data and
on the Zipf click log, alternating, and in the same rounds the bare loop in one thread and in
two threads on one table, each on a contiguous half of the rows (this machine's two-thread
ceiling for a memory-bound loop in that minute). Prints each one's best and range, the
``n_jobs=2`` / ``n_jobs=1`` speed-up against the ceiling's and the target min(1.5x, 0.9x the
ceiling), and the test logloss of each. ``--model fm``: FMClassifier instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import numpy as np
from floor import floor_epochs, floor_threads
from sklearn.metrics import log_loss, roc_auc_score

from sparseopt import DivergenceError, SparseLogisticRegression
from sparseopt.datasets import make_ctr


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def best_of_3(fn):
    """Seconds of the fastest of three runs of ``fn``."""
    return min(timed(fn)[1] for _ in range(3))


def run_sparseopt(data, n_jobs, shuffle=False):
    model = SparseLogisticRegression(max_iter=1, n_jobs=n_jobs, shuffle=shuffle, random_state=0)
    model.fit(data.X[:1000], data.y[:1000])  # compile (or load the cache) outside the timing
    seconds = best_of_3(lambda: model.fit(data.X, data.y))
    return seconds, model.predict_proba(data.X_test)[:, 1]


def run_sklearn(data):
    from sklearn.linear_model import SGDClassifier

    model = SGDClassifier(loss="log_loss", alpha=1e-4, max_iter=1, tol=None, random_state=0)
    X = data.X.copy()
    X.indices = X.indices.astype(np.int32)  # SGDClassifier refuses int64 indices
    X.indptr = X.indptr.astype(np.int32)
    _, seconds = timed(lambda: model.fit(X, data.y))
    return seconds, model.predict_proba(data.X_test)[:, 1]


def write_vw(path, X, y):
    """Vowpal Wabbit's text format, one namespace, the hashed column ids as feature names."""
    with open(path, "w") as f:
        for i in range(X.shape[0]):
            cols = X.indices[X.indptr[i] : X.indptr[i + 1]]
            f.write(("1 |f " if y[i] > 0 else "-1 |f ") + " ".join(map(str, cols)) + "\n")


def run_vw(data, bits, workdir):
    import vowpalwabbit

    train, test = os.path.join(workdir, "train.vw"), os.path.join(workdir, "test.vw")
    write_vw(train, data.X, data.y)
    write_vw(test, data.X_test, data.y_test)
    cache, model, preds = (os.path.join(workdir, n) for n in ("train.cache", "m.vw", "p.txt"))
    common = ["--loss_function", "logistic", "-b", str(bits), "--quiet"]
    vowpalwabbit.Workspace(arg_list=["-d", train, "--cache_file", cache, *common]).finish()
    _, seconds = timed(
        lambda: vowpalwabbit.Workspace(
            arg_list=["-d", train, "--cache_file", cache, "-f", model, *common]
        ).finish()
    )  # second pass over the binary cache: training time without text parsing
    vowpalwabbit.Workspace(
        arg_list=["-t", "-d", test, "-i", model, "-p", preds, "--link", "logistic", "--quiet"]
    ).finish()
    return seconds, np.loadtxt(preds)


def run_torch(data, batch_size=256):
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    n_features = data.X.shape[1]
    emb = torch.nn.EmbeddingBag(n_features, 1, mode="sum", sparse=True)
    torch.nn.init.zeros_(emb.weight)
    bias = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adagrad(list(emb.parameters()) + [bias], lr=0.1)
    X = data.X
    indptr = torch.from_numpy(X.indptr.astype(np.int64))
    indices = torch.from_numpy(X.indices.astype(np.int64))
    y = torch.from_numpy(data.y.astype(np.float32))
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="sum")

    def train():
        order = np.random.default_rng(0).permutation(X.shape[0])
        for lo in range(0, X.shape[0], batch_size):
            rows = torch.from_numpy(np.sort(order[lo : lo + batch_size]))
            starts, ends = indptr[rows], indptr[rows + 1]
            lengths = ends - starts
            flat = torch.cat(
                [indices[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
            )
            offsets = torch.cumsum(lengths, 0) - lengths
            opt.zero_grad()
            margin = emb(flat, offsets).squeeze(1) + bias
            loss_fn(margin, y[rows]).backward()
            opt.step()

    _, seconds = timed(train)
    Xt = data.X_test
    with torch.no_grad():
        flat = torch.from_numpy(Xt.indices.astype(np.int64))
        offsets = torch.from_numpy(Xt.indptr[:-1].astype(np.int64))
        proba = torch.sigmoid(emb(flat, offsets).squeeze(1) + bias).numpy()
    return seconds, proba


def run_floor(data):
    seconds = min(floor_epochs([data.X], 1) for _ in range(3))
    return seconds, None


def run_floor_threads(data):
    return min(floor_threads(data.X, 2) for _ in range(3)), None


def _status_bytes(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def memory_child(path):
    """In a fresh process: the peak memory of fit, as its input plus what fit allocates.

    The input is loaded first; then the kernel's peak RSS counter is reset (Linux's
    ``/proc/self/clear_refs``) so that loading's temporaries do not count, and the peak above
    the RSS at that point is what fit adds. Run after the other systems so that the kernels
    are compiled and cached.
    """
    from scipy.sparse import csr_matrix, random

    small = random(20, 10, density=0.3, format="csr", dtype=np.float32, random_state=0)
    SparseLogisticRegression(max_iter=1).fit(small, np.arange(20) % 2)  # load the kernels
    with np.load(path) as f:
        X = csr_matrix((f["data"], f["indices"], f["indptr"]), shape=tuple(f["shape"]))
        y = f["y"]
    input_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes + y.nbytes
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_bytes("VmRSS:")
    model = SparseLogisticRegression(max_iter=1, random_state=0).fit(X, y)
    peak = input_bytes + _status_bytes("VmHWM:") - before
    state = sum(a.nbytes for a in model.state_.arrays().values())
    print(input_bytes, state, peak, model.state_.table.nbytes / X.shape[1])


def measure_memory(data, workdir):
    path = os.path.join(workdir, "train.npz")
    X = data.X
    np.savez(path, data=X.data, indices=X.indices, indptr=X.indptr, shape=X.shape, y=data.y)
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", path], capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(out.stderr)
    input_bytes, state, peak, per_coord = map(float, out.stdout.split()[-4:])
    return input_bytes, state, peak, per_coord


def optimizer_cases():
    """(name, optimizer) for every optimizer, and Adam's and AMSGrad's lazy modes."""
    from sparseopt.optim import FTRL, SGD, AdaGrad, Adam, AMSGrad, Momentum, RMSProp

    return (
        [("adagrad", AdaGrad)]
        + [
            (name, cls)
            for name, cls in [
                ("sgd", SGD),
                ("momentum", Momentum),
                ("rmsprop", RMSProp),
                ("ftrl", FTRL),
            ]  # fmt: skip
        ]
        + [
            (f"{cls.__name__.lower()}, lazy={lazy!r}", lambda cls=cls, lazy=lazy: cls(lazy=lazy))
            for cls in (Adam, AMSGrad)
            for lazy in ("exact", "decay", "skip")
        ]
    )


def click_log(n_rows, random_state=0, field_aware=False):
    """A click log with Zipf-distributed values: 45 fields, vocabularies 10 to 400,000."""
    n_values = np.geomspace(10, 400_000, 45).astype(np.int64)
    return make_ctr(n_rows, n_fields=45, n_values=n_values, n_bits=22, field_aware=field_aware,
                    random_state=random_state)  # fmt: skip


def optimizer_table(make_model, datasets):
    """Print one epoch's rows/s of ``make_model(optimizer)`` for every optimizer case (each at
    its class's default hyperparameters) on each (name, X, y) dataset, and its ratio to
    AdaGrad's in the same run."""
    for data_name, X, y in datasets:
        print(f"\n{data_name}: {X.shape[0]:,} rows, {X.nnz / X.shape[0]:.0f} nonzeros per row")
        print(f"{'optimizer':28s} {'epoch s':>8s} {'k rows/s':>9s} {'vs AdaGrad':>11s}")
        base = None
        for name, make in optimizer_cases():
            model = make_model(make())
            try:
                model.fit(X[:2000], y[:2000])  # compile (or load the cache) outside the timing
                seconds = min(timed(lambda m=model, X=X, y=y: m.fit(X, y))[1] for _ in range(2))
            except DivergenceError:  # at the optimizer's own default rate (a speed table)
                print(f"{name:28s} diverged at learning_rate={model.optimizer.learning_rate}")
                continue
            except ValueError as exc:  # a model that refuses the optimizer (FM and FTRL)
                print(f"{name:28s} refused: {str(exc).split(':')[0]}")
                continue
            base = base or seconds
            print(f"{name:28s} {seconds:8.3f} {X.shape[0] / seconds / 1e3:9.0f} "
                  f"{base / seconds:10.2f}x", flush=True)  # fmt: skip


def threads_rounds(make, data, repeats):
    """Seconds of each round's epoch (``n_jobs=1``, ``n_jobs=2`` alternating, then the bare
    loop in one and two threads) and the two models' test logloss."""
    models = {"one": make(max_iter=1, random_state=0),
              "two": make(max_iter=1, n_jobs=2, random_state=0)}  # fmt: skip
    for model in models.values():
        model.fit(data.X[:1000], data.y[:1000])  # compile (or load the cache) untimed
    times = {key: [] for key in ("one", "two", "floor one", "floor two")}
    for r in range(repeats):
        for key in ("one", "two") if r % 2 == 0 else ("two", "one"):
            times[key].append(timed(lambda m=models[key]: m.fit(data.X, data.y))[1])
        times["floor one"].append(floor_epochs([data.X], 1))
        times["floor two"].append(floor_threads(data.X, 2))
    losses = {key: log_loss(data.y_test, m.predict_proba(data.X_test)[:, 1])
              for key, m in models.items()}  # fmt: skip
    return times, losses


def threads_table(model_name, datasets, repeats):
    """Print, for each (name, data) dataset, ``n_jobs=2`` against ``n_jobs=1`` and the bare
    loop's two threads against its one (:func:`threads_rounds`)."""
    from sparseopt import FMClassifier

    make = {"lr": SparseLogisticRegression, "fm": FMClassifier}[model_name]
    print(f"{model_name}, one epoch: seconds, best (+ worst - best) of {repeats} rounds")
    print(f"{'data':10s} {'n_jobs=1':>18s} {'n_jobs=2':>18s} {'speed-up':>9s} "
          f"{'ceiling':>8s} {'target':>7s} {'logloss 1':>10s} {'logloss 2':>10s}")  # fmt: skip
    for name, data in datasets:
        times, losses = threads_rounds(make, data, repeats)
        best = {key: min(values) for key, values in times.items()}
        speed_up, ceiling = best["one"] / best["two"], best["floor one"] / best["floor two"]
        one, two = (f"{min(times[k]):.3f} ({max(times[k]) - min(times[k]):+.2f})"
                    for k in ("one", "two"))  # fmt: skip
        print(f"{name:10s} {one:>18s} {two:>18s} {speed_up:8.2f}x {ceiling:7.2f}x "
              f"{min(1.5, 0.9 * ceiling):6.2f}x {losses['one']:10.4f} {losses['two']:10.4f}",
              flush=True)  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--test-rows", type=int, default=200_000)
    parser.add_argument("--bits", type=int, default=22)
    parser.add_argument("--memory-child")
    parser.add_argument("--optimizers", action="store_true")
    parser.add_argument("--threads", action="store_true")
    parser.add_argument("--model", choices=["lr", "fm"], default="lr")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child)
    if args.optimizers:
        ctr = make_ctr(args.rows, n_bits=args.bits, random_state=0)
        log = click_log(args.rows)
        return optimizer_table(
            lambda opt: SparseLogisticRegression(optimizer=opt, max_iter=1, random_state=0),
            [("make_ctr (this benchmark's data)", ctr.X, ctr.y), ("Zipf click log", log.X, log.y)],
        )

    if args.threads:
        log = click_log(args.rows + args.test_rows)
        n = args.rows
        log = SimpleNamespace(X=log.X[:n], y=log.y[:n], X_test=log.X[n:], y_test=log.y[n:])
        ctr = make_ctr(args.rows, n_bits=args.bits, n_test=args.test_rows, random_state=0)
        return threads_table(args.model, [("make_ctr", ctr), ("Zipf log", log)], args.repeats)

    data = make_ctr(args.rows, n_bits=args.bits, n_test=args.test_rows, random_state=0)
    nnz = data.X.nnz
    floor = log_loss(data.y_test, data.proba_test)
    print(
        f"{args.rows:,} training rows, {nnz / args.rows:.0f} nonzeros per row, "
        f"2^{args.bits} columns, {data.y.mean():.1%} positives; "
        f"{args.test_rows:,} test rows; Bayes floor logloss {floor:.4f}, "
        f"AUC {roc_auc_score(data.y_test, data.proba_test):.4f}"
    )
    systems = [
        ("sparseopt AdaGrad, 1 thread", lambda: run_sparseopt(data, 1)),
        ("sparseopt AdaGrad, n_jobs=2 (Hogwild)", lambda: run_sparseopt(data, 2)),
        ("sparseopt AdaGrad, 1 thread, shuffled", lambda: run_sparseopt(data, 1, True)),
        ("scikit-learn SGDClassifier(log_loss)", lambda: run_sklearn(data)),
        ("Vowpal Wabbit, from its binary cache", None),
        ("torch EmbeddingBag + sparse Adagrad, b=256", lambda: run_torch(data)),
        ("bare gather/scatter loop (memory floor)", lambda: run_floor(data)),
        ("bare loop, 2 threads on one table (ceiling)", lambda: run_floor_threads(data)),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name, fn in systems:
            if fn is None:
                fn = lambda: run_vw(data, args.bits, workdir)  # noqa: E731
            try:
                seconds, proba = fn()
            except ImportError as exc:
                print(f"skipped {name}: {exc}")
                continue
            rows.append((name, seconds, proba))
        memory = measure_memory(data, workdir)
    base = rows[0][1]
    print(f"\n{'system':44s} {'train s':>8s} {'M nnz/s':>8s} {'vs sparseopt':>13s} "
          f"{'logloss':>8s} {'AUC':>7s}")  # fmt: skip
    for name, seconds, proba in rows:
        quality = (
            f"{log_loss(data.y_test, proba):8.4f} {roc_auc_score(data.y_test, proba):7.4f}"
            if proba is not None
            else f"{'':8s} {'':7s}"
        )
        print(f"{name:44s} {seconds:8.2f} {nnz / seconds / 1e6:8.1f} {base / seconds:12.2f}x "
              f"{quality}")  # fmt: skip
    one, two, *_, floor_one, floor_two = (seconds for _, seconds, _ in rows)
    hogwild, ceiling = one / two, floor_one / floor_two
    print(
        f"\ntwo threads against one: sparseopt (Hogwild) {hogwild:.2f}x, the bare loop "
        f"{ceiling:.2f}x (this machine's ceiling for a memory-bound loop in this minute)"
    )
    input_bytes, state, peak, per_coord = memory
    print(
        f"\nmemory: optimizer table {per_coord:.0f} bytes per coordinate (weight + state); "
        f"input {input_bytes / 2**20:.0f} MiB, model state {state / 2**20:.0f} MiB, "
        f"peak of fit {peak / 2**20:.0f} MiB = {peak / (input_bytes + state):.2f}x (input + state)"
    )


if __name__ == "__main__":
    main()
