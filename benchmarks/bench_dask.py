"""Data-parallel training on Dask against one process, on Criteo-like data or ratings.

    python benchmarks/bench_dask.py [--model lr] [--data ctr] [--rows 1000000] [--bits 20]
                                    [--blocks 4] [--workers 2] [--epochs 3]
                                    [--merge-every none,5000] [--repeat 3] [--threads]
    python benchmarks/bench_dask.py --model mf [--ratings 20000000] [--users 140000]
                                    [--items 27000] [--merge-every none,auto] ...

Generates ``sparseopt.datasets.make_ctr`` data (with planted pairwise interactions for
``--model fm``), scatters it in ``--blocks`` row blocks to a ``distributed.LocalCluster`` of
``--workers`` single-thread worker processes, and trains ``SparseLogisticRegression``
(``--model lr``) or ``FMClassifier`` (``--model fm``, k = 8, per-row AdaGrad) with their
defaults (AdaGrad, batch_size 1) for the same epochs with ``sparseopt.dask.fit`` (once per
``--merge-every`` value; ``none`` merges once per epoch) and with plain ``fit`` in this
process. ``--data zipf`` takes instead the Zipf click log of ``bench_linear.py``
(``click_log``: 45 fields, vocabularies from 10 to 400,000 values, 2^22 columns; ``--bits``
is ignored), whose hot values most rows share and whose rare ones few rows touch; its last
``--test-rows`` rows are the test set (no planted interactions). Kernels are compiled and
loaded in every process before the timing; data placement is not timed. Each system runs
``--repeat`` times, the systems in turn, and the fastest run counts (this machine is shared).
Prints one table: seconds, rows per second, speed-up over the single process, test logloss
and its gap to the single process, then the median of the turns' speed-ups. A last line
gives this machine's ceiling for data parallelism: the bare gather/scatter loop
(``floor.py``) over the same blocks and epochs, in this process and in the workers at once
(each on its own blocks, with its own table, as each worker has its model).

``--model mf``: ``MatrixFactorization(n_components=32, random_state=0)`` with its defaults
(squared loss, AdaGrad with per-row factor state, ``max_iter="auto"``: 5 epochs, or
``--epochs``) on synthetic ratings from :func:`make_ratings` (below: a low-rank model plus
biases plus noise, rounded to 1..5, skewed users and items), 2% of each user's ratings
(in expectation) held out for the test RMSE. The X of ratings is split into ``--blocks``
blocks of users; ``sparseopt.dask.fit`` trains each user's rows on the worker holding them
and merges the item rows. ``--merge-every`` counts ratings (one optimizer step each; ``auto``:
ten merges per epoch, ``sparseopt.dask.fit``'s default). The
ceiling line is then the same local ``fit`` run in every worker at once on the blocks it
holds (no Dask protocol, no merges), against the whole fit in this process.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.sparse as sp
from bench_linear import click_log
from floor import floor_epochs
from sklearn.metrics import log_loss

from sparseopt import FMClassifier, MatrixFactorization, SparseLogisticRegression
from sparseopt.datasets import make_ctr

MODELS = {"lr": SparseLogisticRegression, "fm": FMClassifier, "mf": MatrixFactorization}


def make_ratings(n_ratings, n_users, n_items, *, rank=8, noise=0.5, test_fraction=0.02,
                 random_state=0):  # fmt: skip
    """Synthetic explicit ratings: (train, test), CSR matrices of shape (n_users, n_items).

    A rating is ``round(3.5 + b_u + b_i + p_u . q_i + e)`` clipped to 1..5, with
    ``b_u ~ N(0, 0.3^2)``, ``b_i ~ N(0, 0.4^2)``, ``rank``-dimensional normal factors scaled
    so that ``p_u . q_i`` has standard deviation 0.8, and noise ``e ~ N(0, noise^2)``. Users
    rate lognormally many items (sigma 1, at least 5, at most ``n_items // 4``; MovieLens'
    counts are about as skewed); items are drawn by a Zipf-like popularity
    ``p_i ~ (i + 10)^-0.9`` (item ids shuffled), without repeats within a user (pairs drawn
    twice are dropped and drawn again, three times; then cut to ``n_ratings``); each is
    held out for ``test`` with probability ``test_fraction``.
    """
    rng = np.random.default_rng(random_state)
    counts = rng.lognormal(0.0, 1.0, n_users)
    counts = np.clip(np.round(counts * n_ratings / counts.sum()), 5, n_items // 4).astype(np.int64)
    popularity = 1.0 / (np.arange(n_items) + 10.0) ** 0.9
    cdf = np.cumsum(rng.permutation(popularity))
    cdf /= cdf[-1]
    keys, want = np.empty(0, np.int64), counts
    for _ in range(3):  # draw, drop repeated (user, item) pairs, draw the missing ones again
        users = np.repeat(np.arange(n_users, dtype=np.int64), want)
        items = np.minimum(np.searchsorted(cdf, rng.random(users.size), side="right"), n_items - 1)
        keys = np.sort(np.concatenate([keys, users * n_items + items]))
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]  # np.unique, 100x faster
        want = np.maximum(counts - np.bincount(keys // n_items, minlength=n_users), 0)
    if keys.size > n_ratings:
        keys = np.sort(rng.choice(keys, n_ratings, replace=False))
    users, items = (keys // n_items).astype(np.int32), (keys % n_items).astype(np.int32)
    del keys
    scale = (0.8**2 / rank) ** 0.25
    P = rng.normal(0.0, scale, (n_users, rank)).astype(np.float32)
    Q = rng.normal(0.0, scale, (n_items, rank)).astype(np.float32)
    b_u = rng.normal(0.0, 0.3, n_users).astype(np.float32)
    b_i = rng.normal(0.0, 0.4, n_items).astype(np.float32)
    ratings = np.empty(users.size, np.float32)
    for lo in range(0, users.size, 1 << 21):
        u, i = users[lo : lo + (1 << 21)], items[lo : lo + (1 << 21)]
        r = 3.5 + b_u[u] + b_i[i] + np.einsum("ij,ij->i", P[u], Q[i])
        r += rng.normal(0.0, noise, u.size).astype(np.float32)
        ratings[lo : lo + u.size] = np.clip(np.round(r), 1, 5)
    test = rng.random(users.size) < test_fraction

    def matrix(mask):
        indptr = np.concatenate([[0], np.cumsum(np.bincount(users[mask], minlength=n_users))])
        return sp.csr_matrix((ratings[mask], items[mask], indptr), shape=(n_users, n_items))

    return matrix(~test), matrix(test)


def cpu_seconds(client, threads):
    """CPU time used so far by this process and (if they are processes) the workers."""
    if threads:
        return time.process_time()
    return time.process_time() + sum(client.run(time.process_time).values())


def floor_ceiling(client, blocks, xs, args):
    """Fastest seconds of the bare loop over all ``blocks`` in this process, and in the
    workers at once, each over the scattered blocks ``xs`` it holds (``--repeat`` runs each)."""
    alone = min(floor_epochs(blocks, args.epochs) for _ in range(args.repeat))
    who_has = client.who_has(xs)
    held = {}
    for future in xs:
        held.setdefault(who_has[future.key][0], []).append(future)

    def together(epochs):
        futures = [
            client.submit(floor_epochs, blocks, epochs, workers=[worker], pure=False)
            for worker, blocks in held.items()
        ]  # fmt: skip
        start = time.perf_counter()
        client.gather(futures)
        return time.perf_counter() - start

    together(0)  # load the compiled loop in every worker
    return alone, min(together(args.epochs) for _ in range(args.repeat)), len(held)


def in_turn(systems, repeat):
    """``{name: [(seconds, CPU seconds, model)] * repeat}``: each of ``systems`` (``{name:
    (train, cpu_now)}``) run once per turn, ``repeat`` turns, so that every system meets
    the machine's slow and fast minutes alike (a shared machine's cores changed speed by
    1.5x from one minute to the next, issue 32)."""
    runs = {name: [] for name in systems}
    for _ in range(repeat):
        for name, (train, cpu_now) in systems.items():
            start, cpu = time.perf_counter(), cpu_now()
            model = train()
            runs[name].append((time.perf_counter() - start, cpu_now() - cpu, model))
    return runs


def print_paired(runs):
    """The median over turns of each system's speed-up on the first system of its turn."""
    (first, alone), *others = runs.items()
    for name, taken in others:
        ratios = [a[0] / b[0] for a, b in zip(alone, taken, strict=True)]
        print(f"{name}: median of its {len(ratios)} turns' speed-ups {np.median(ratios):.2f}x "
              f"({min(ratios):.2f}x-{max(ratios):.2f}x)")  # fmt: skip


def fastest(train, cpu_now, repeat):
    """(seconds, CPU seconds, model) of the fastest of ``repeat`` runs of ``train``."""
    runs = []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), cpu_now()
        model = train()
        runs.append((time.perf_counter() - start, cpu_now() - cpu, model))
    return min(runs, key=lambda run: run[0])


def print_table(rows, total, unit, metric):
    """The table of ``rows`` (name, seconds, CPU s, metric, load), the first the baseline;
    ``total`` ``unit``s trained by each."""
    print(
        f"\n{os.cpu_count()} CPUs. CPU s: CPU time of the driver and the workers together; "
        f"load: the 1-minute load average after each run"
    )
    print(f"\n| system | seconds | {unit}/s | vs 1 process | CPU s | {metric} | gap | load |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base_s, base_metric = rows[0][1], rows[0][3]
    for name, seconds, cpu, value, load in rows:
        print(
            f"| {name} | {seconds:.2f} | {total / seconds / 1e6:.2f} M | "
            f"{base_s / seconds:.2f}x | {cpu:.2f} | {value:.4f} | {value - base_metric:+.4f} | "
            f"{load:.1f} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="lr")
    parser.add_argument(
        "--data", choices=("ctr", "zipf"), default="ctr",
        help="make_ctr's data, or bench_linear.py's Zipf click log (2^22 columns)",
    )  # fmt: skip
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--test-rows", type=int, default=200_000)
    parser.add_argument("--bits", type=int, default=20)
    parser.add_argument("--ratings", type=int, default=20_000_000, help="--model mf")
    parser.add_argument("--users", type=int, default=140_000, help="--model mf")
    parser.add_argument("--items", type=int, default=27_000, help="--model mf")
    parser.add_argument(
        "--movielens", metavar="ML100K_DIR",
        help="--model mf: test RMSE on MovieLens 100K's u1..u5 splits instead (no timing)",
    )  # fmt: skip
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--epochs", type=int, default=None, help="default: 3; the model's max_iter for mf"
    )
    parser.add_argument(
        "--merge-every", default=None,
        help="comma-separated values, 'none' for once per epoch; default: none,5000 "
        "(batches); mf: none,auto (ratings; auto: ten merges per epoch)",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=3,
        help="runs of each system; the table shows the fastest (the machine is shared)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", action="store_true",
        help="workers as threads of one process (processes=False): no serialization",
    )  # fmt: skip
    args = parser.parse_args()
    if args.model == "mf":
        return main_mf(args)
    args.epochs = args.epochs or 3
    args.merge_every = args.merge_every or "none,5000"

    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    import sparseopt.dask as sd

    Model = MODELS[args.model]
    interactions = 1.0 if args.model == "fm" and args.data == "ctr" else 0.0
    if args.data == "zipf":
        log = click_log(args.rows + args.test_rows)
        n = args.rows
        data = dict(X=log.X[:n], y=log.y[:n], X_test=log.X[n:], y_test=log.y[n:],
                    proba_test=log.proba[n:])  # fmt: skip
        data, name = argparse.Namespace(**data), "Zipf click log (bench_linear.click_log)"
    else:
        data = make_ctr(
            args.rows, n_bits=args.bits, interactions=interactions, n_test=args.test_rows,
            random_state=0,
        )  # fmt: skip
        name = "make_ctr"
    X, y = data.X, data.y
    floor = log_loss(data.y_test, data.proba_test)
    print(
        f"{Model.__name__}; {name}, {args.rows:,} rows in {args.blocks} blocks, "
        f"{X.nnz / args.rows:.0f} nonzeros per row, interactions {interactions}, "
        f"2^{int(np.log2(X.shape[1]))} columns, {args.epochs} epochs; {args.workers} "
        f"single-thread workers; Bayes floor logloss {floor:.4f}"
    )
    params = dict(max_iter=args.epochs, tol=None, random_state=0)

    def score(model):
        return log_loss(data.y_test, model.predict_proba(data.X_test)[:, 1])

    Model(**params).fit(X[:1000], y[:1000])  # compile outside the timing

    # the workers' statistical profiler samples every 10 ms: a cost on a loaded machine
    dask.config.set({"distributed.worker.profile.enabled": False})
    with LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=not args.threads,
        dashboard_address=":0",
    ) as cluster, Client(cluster) as client:  # fmt: skip
        bounds = np.linspace(0, args.rows, args.blocks + 1).astype(int)
        chunks = tuple(np.diff(bounds))
        blocks = [X[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        xs = client.scatter(blocks)
        ys = client.scatter([y[a:b] for a, b in zip(bounds, bounds[1:], strict=False)])
        Xd = da.concatenate([
            da.from_delayed(f, shape=(n, X.shape[1]), dtype=X.dtype, meta=X[:0])
            for f, n in zip(xs, chunks, strict=True)
        ])  # fmt: skip
        yd = da.concatenate([
            da.from_delayed(f, shape=(n,), dtype=y.dtype) for f, n in zip(ys, chunks, strict=True)
        ])  # fmt: skip
        Xd, yd = client.persist([Xd, yd])
        # load the kernels in every worker process
        warm = da.from_array(X[:4000], chunks=(1000, -1), asarray=False)
        sd.fit(Model(max_iter=1), warm, da.from_array(y[:4000], chunks=1000))
        kind = "threads" if args.threads else "processes"
        systems = {"1 process (fit)": (lambda: Model(**params).fit(X, y), time.process_time)}
        for value in args.merge_every.split(","):
            merge_every = None if value == "none" else int(value)
            label = "per epoch" if merge_every is None else f"every {merge_every:,} batches"
            systems[f"dask, {args.workers} worker {kind}, merge {label}"] = (
                lambda m=merge_every: sd.fit(Model(**params), Xd, yd, merge_every=m),
                lambda: cpu_seconds(client, args.threads),
            )  # fmt: skip
        runs = in_turn(systems, args.repeat)
        rows = []
        for name, taken in runs.items():
            seconds, cpu, model = min(taken, key=lambda run: run[0])
            rows.append((name, seconds, cpu, score(model), os.getloadavg()[0]))
        ceiling = floor_ceiling(client, blocks, xs, args)

    print_table(rows, args.rows * args.epochs, "rows", "test logloss")
    print_paired(runs)
    alone, together, n = ceiling
    print(
        f"\nCeiling: the bare gather/scatter loop over the same blocks and epochs took "
        f"{alone:.2f} s in this process and {together:.2f} s in {n} workers at once: "
        f"{alone / together:.2f}x."
    )


def rmse(model, test):
    """Root mean squared error of ``model`` on the stored ratings of ``test``."""
    coo = test.tocoo()
    return float(np.sqrt(np.mean((model.predict(coo.row, coo.col) - coo.data) ** 2)))


def fit_blocks(params, *blocks):
    """Seconds of a local ``MatrixFactorization(**params).fit`` on ``blocks`` stacked."""
    X = sp.vstack(blocks, format="csr")
    start = time.perf_counter()
    MatrixFactorization(**params).fit(X)
    return time.perf_counter() - start


def merge_setting(value):
    """A ``--merge-every`` value as ``sparseopt.dask.fit`` takes it, and its table label."""
    merge_every = {"none": None, "auto": "auto"}[value] if value.isalpha() else int(value)
    label = (
        "per epoch" if merge_every is None
        else "auto (10 per epoch)" if merge_every == "auto"
        else f"every {merge_every:,} ratings"
    )  # fmt: skip
    return merge_every, label


def movielens_mf(args):
    """``--model mf --movielens DIR``: the test RMSE of the local and the Dask fits on each
    of MovieLens 100K's u1..u5 splits (4 blocks of users), per ``--merge-every`` value."""
    import dask.array as da
    from distributed import Client, LocalCluster

    import sparseopt.dask as sd
    from sparseopt.datasets import load_movielens_split

    params = dict(n_components=32, random_state=0)
    settings = [merge_setting(v) for v in (args.merge_every or "none,auto").split(",")]
    print(f"MatrixFactorization(n_components=32, random_state=0), defaults; MovieLens 100K, "
          f"{args.blocks} blocks of users, {args.workers} single-thread workers")  # fmt: skip
    print("\n| split | 1 process | " + " | ".join(f"merge {label}" for _, label in settings) + " |")
    print("| --- | ---: |" + " ---: |" * len(settings))
    with LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=not args.threads,
        dashboard_address=":0",
    ) as cluster, Client(cluster) as client:  # fmt: skip
        for split in ("u1", "u2", "u3", "u4", "u5"):
            train, test = load_movielens_split(args.movielens, split)
            local = rmse(MatrixFactorization(**params).fit(train), test)
            Xd = da.from_array(train, chunks=(-(-train.shape[0] // args.blocks), -1), asarray=False)
            Xd = client.persist(Xd)
            cells = []
            for merge_every, _ in settings:
                model = sd.fit(MatrixFactorization(**params), Xd, merge_every=merge_every)
                cells.append(f"{rmse(model, test):.4f} ({rmse(model, test) - local:+.4f})")
            print(f"| {split} | {local:.4f} | " + " | ".join(cells) + " |", flush=True)


def main_mf(args):
    """``--model mf``: see the module docstring."""
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    import sparseopt.dask as sd

    if args.movielens:
        return movielens_mf(args)
    began = time.perf_counter()
    X, test = make_ratings(args.ratings, args.users, args.items, random_state=0)
    made = time.perf_counter() - began
    params = dict(n_components=32, random_state=0)
    if args.epochs:
        params["max_iter"] = args.epochs
    merge_values = args.merge_every or "none,auto"

    MatrixFactorization(**params).fit(X[:2000])  # compile outside the timing
    base_s, base_cpu, local = fastest(
        lambda: MatrixFactorization(**params).fit(X), time.process_time, args.repeat
    )
    epochs = local.n_iter_
    print(
        f"MatrixFactorization(n_components=32), defaults, {epochs} epochs; {X.nnz:,} training "
        f"and {test.nnz:,} test ratings (make_ratings, {made:.0f} s) of {args.users:,} users x "
        f"{args.items:,} items in {args.blocks} blocks of users; {args.workers} single-thread "
        f"workers"
    )
    rows = [("1 process (fit)", base_s, base_cpu, rmse(local, test), os.getloadavg()[0])]

    dask.config.set({"distributed.worker.profile.enabled": False})
    with LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=not args.threads,
        dashboard_address=":0",
    ) as cluster, Client(cluster) as client:  # fmt: skip
        bounds = np.linspace(0, X.shape[0], args.blocks + 1).astype(int)
        blocks = [X[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        xs = client.scatter(blocks)
        Xd = da.concatenate([
            da.from_delayed(f, shape=b.shape, dtype=X.dtype, meta=X[:0])
            for f, b in zip(xs, blocks, strict=True)
        ])  # fmt: skip
        Xd = client.persist(Xd)
        del blocks
        # load the kernels in every worker process
        warm = da.from_array(X[:4000], chunks=(1000, -1), asarray=False)
        sd.fit(MatrixFactorization(**{**params, "max_iter": 1}), warm)
        for value in merge_values.split(","):
            merge_every, label = merge_setting(value)
            seconds, cpu, model = fastest(
                lambda: sd.fit(MatrixFactorization(**params), Xd, merge_every=merge_every),  # noqa: B023
                lambda: cpu_seconds(client, args.threads),
                args.repeat,
            )
            kind = "threads" if args.threads else "processes"
            name = f"dask, {args.workers} worker {kind}, merge {label}"
            rows.append((name, seconds, cpu, rmse(model, test), os.getloadavg()[0]))
            del model
        who_has = client.who_has(xs)
        held = {}
        for future in xs:
            held.setdefault(who_has[future.key][0], []).append(future)

        def together():
            futures = [
                client.submit(fit_blocks, params, *fs, workers=[w], pure=False)
                for w, fs in held.items()
            ]  # fmt: skip
            start = time.perf_counter()
            client.gather(futures)
            return time.perf_counter() - start

        ceiling = min(together() for _ in range(args.repeat))

    print_table(rows, X.nnz * epochs, "ratings", "test RMSE")
    print(
        f"\nCeiling: a local fit of each worker's own blocks, in the {len(held)} workers at "
        f"once (no merges), took {ceiling:.2f} s against {base_s:.2f} s for the whole fit in "
        f"this process: {base_s / ceiling:.2f}x."
    )


if __name__ == "__main__":
    main()
