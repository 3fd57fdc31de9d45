"""Data-parallel training on Dask against one process, on Criteo-like data.

    python benchmarks/bench_dask.py [--model lr] [--rows 1000000] [--bits 20] [--blocks 4]
                                    [--workers 2] [--epochs 3] [--merge-every none,5000]
                                    [--repeat 3] [--threads]

Generates ``sparseopt.datasets.make_ctr`` data (with planted pairwise interactions for
``--model fm``), scatters it in ``--blocks`` row blocks to a ``distributed.LocalCluster`` of
``--workers`` single-thread worker processes, and trains ``SparseLogisticRegression``
(``--model lr``) or ``FMClassifier`` (``--model fm``, k = 8, per-row AdaGrad) with their
defaults (AdaGrad, batch_size 1) for the same epochs with ``sparseopt.dask.fit`` (once per
``--merge-every`` value; ``none`` merges once per epoch) and with plain ``fit`` in this
process. Kernels are compiled and loaded in every process before the
timing; data placement is not timed. Each system runs ``--repeat`` times and the fastest run
counts (this machine is shared). Prints one table: seconds, rows per second, speed-up over the
single process, test logloss and its gap to the single process. A last line gives this
machine's ceiling for data parallelism: the bare gather/scatter loop (``floor.py``) over the
same blocks and epochs, in this process and in the workers at once (each on its own blocks).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from floor import floor_epochs
from sklearn.metrics import log_loss

from sparseopt import FMClassifier, SparseLogisticRegression
from sparseopt.datasets import make_ctr

MODELS = {"lr": SparseLogisticRegression, "fm": FMClassifier}


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="lr")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--test-rows", type=int, default=200_000)
    parser.add_argument("--bits", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--merge-every", default="none,5000")
    parser.add_argument(
        "--repeat", type=int, default=3,
        help="runs of each system; the table shows the fastest (the machine is shared)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", action="store_true",
        help="workers as threads of one process (processes=False): no serialization",
    )  # fmt: skip
    args = parser.parse_args()

    import dask
    import dask.array as da
    from distributed import Client, LocalCluster

    import sparseopt.dask as sd

    Model = MODELS[args.model]
    interactions = 1.0 if args.model == "fm" else 0.0
    data = make_ctr(
        args.rows, n_bits=args.bits, interactions=interactions, n_test=args.test_rows,
        random_state=0,
    )  # fmt: skip
    X, y = data.X, data.y
    floor = log_loss(data.y_test, data.proba_test)
    print(
        f"{Model.__name__}; {args.rows:,} rows in {args.blocks} blocks, "
        f"{X.nnz / args.rows:.0f} nonzeros per row, interactions {interactions}, "
        f"2^{args.bits} columns, {args.epochs} epochs; {args.workers} single-thread workers; "
        f"Bayes floor logloss {floor:.4f}"
    )
    params = dict(max_iter=args.epochs, tol=None, random_state=0)

    def score(model):
        return log_loss(data.y_test, model.predict_proba(data.X_test)[:, 1])

    def fastest(train, cpu_now):
        """(seconds, CPU seconds, model) of the fastest of ``--repeat`` runs of ``train``."""
        runs = []
        for _ in range(args.repeat):
            start, cpu = time.perf_counter(), cpu_now()
            model = train()
            runs.append((time.perf_counter() - start, cpu_now() - cpu, model))
        return min(runs, key=lambda run: run[0])

    Model(**params).fit(X[:1000], y[:1000])  # compile outside the timing
    base_s, base_cpu, local = fastest(lambda: Model(**params).fit(X, y), time.process_time)
    base_loss = score(local)
    rows = [("1 process (fit)", base_s, base_cpu, base_loss, os.getloadavg()[0])]

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
        for value in args.merge_every.split(","):
            merge_every = None if value == "none" else int(value)
            seconds, cpu, model = fastest(
                lambda: sd.fit(Model(**params), Xd, yd, merge_every=merge_every),  # noqa: B023
                lambda: cpu_seconds(client, args.threads),
            )
            label = "per epoch" if merge_every is None else f"every {merge_every:,} batches"
            kind = "threads" if args.threads else "processes"
            name = f"dask, {args.workers} worker {kind}, merge {label}"
            rows.append((name, seconds, cpu, score(model), os.getloadavg()[0]))
        ceiling = floor_ceiling(client, blocks, xs, args)

    print(
        f"\n{os.cpu_count()} CPUs. CPU s: CPU time of the driver and the workers together; "
        f"load: the 1-minute load average after each run"
    )
    print("\n| system | seconds | rows/s | vs 1 process | CPU s | test logloss | gap | load |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    total = args.rows * args.epochs
    for name, seconds, cpu, loss, load in rows:
        print(
            f"| {name} | {seconds:.2f} | {total / seconds / 1e6:.2f} M | "
            f"{base_s / seconds:.2f}x | {cpu:.2f} | {loss:.4f} | {loss - base_loss:+.4f} | "
            f"{load:.1f} |"
        )
    alone, together, n = ceiling
    print(
        f"\nCeiling: the bare gather/scatter loop over the same blocks and epochs took "
        f"{alone:.2f} s in this process and {together:.2f} s in {n} workers at once: "
        f"{alone / together:.2f}x."
    )


if __name__ == "__main__":
    main()
