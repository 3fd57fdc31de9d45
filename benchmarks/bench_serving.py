"""Serving exported models: ONNX Runtime (one thread) beside predict_proba on the same rows.

For logistic regression and a factorization machine on Criteo-like rows (39 fields hashed
into 2**22 columns), trained on ``--train`` rows:

- single-row latency (p50, p99 over ``--calls`` calls, one row per call),
- rows per second in batches of 1,000,
- the ONNX graph's two input forms (padded batch, CSR offsets), ``sparseopt.serving``
  (NumPy) and the estimator's ``predict_proba`` (Numba, one thread),
- file sizes of the ONNX and JSON exports,
- the export time of a model of 2**24 columns (logistic regression and FM).

Run: ``python benchmarks/bench_serving.py`` (about two minutes once the kernels are compiled).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import onnxruntime as ort

from sparseopt import FMClassifier, SparseLogisticRegression, serving
from sparseopt.datasets import make_ctr


def padded(X):
    counts = np.diff(X.indptr)
    width = max(1, counts.max())
    indices = np.zeros((X.shape[0], width), np.int64)
    values = np.zeros((X.shape[0], width), np.float32)
    filled = np.arange(width) < counts[:, None]
    indices[filled], values[filled] = X.indices, X.data
    return indices, values


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def scorers(model, folder):
    """name -> (prepare, run): ``prepare`` turns a CSR batch into the input of ``run``
    (outside the timing: a server builds its input form directly), ``run`` scores it."""
    model.export(folder / "padded.onnx")
    model.export(folder / "offsets.onnx", input_form="offsets")
    model.export(folder / "model.json", format="json")
    pad, off = session(folder / "padded.onnx"), session(folder / "offsets.onnx")
    numpy_model = serving.load(folder / "model.json")

    def padded_feed(X):
        indices, values = padded(X)
        return {"indices": indices, "values": values}

    def offsets_feed(X):
        return {"indices": X.indices.astype(np.int64), "values": X.data,
                "offsets": X.indptr.astype(np.int64)}  # fmt: skip

    return {
        "onnxruntime, padded": (padded_feed, lambda feed: pad.run(None, feed)[0][:, 1]),
        "onnxruntime, offsets": (offsets_feed, lambda feed: off.run(None, feed)[0][:, 1]),
        "sparseopt.serving (NumPy)": (
            lambda X: X, lambda X: numpy_model.score(X.indptr, X.indices, X.data)[:, 1]
        ),
        "predict_proba (Numba)": (lambda X: X, lambda X: model.predict_proba(X)[:, 1]),
    }


def latencies(contenders, rows, calls):
    """Per contender, p50 and p99 of one-row calls in microseconds; the contenders take
    turns on each row (their order rotating), so that they share the machine's moods."""
    names = list(contenders)
    feeds = {name: [prepare(rows[i : i + 1]) for i in range(min(calls, rows.shape[0]))]
             for name, (prepare, _) in contenders.items()}  # fmt: skip
    times = {name: np.empty(calls) for name in names}
    for i in range(calls):
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            feed = feeds[name][i % len(feeds[name])]
            start = time.perf_counter()
            contenders[name][1](feed)
            times[name][i] = time.perf_counter() - start
    return {name: np.percentile(t, [50, 99]) * 1e6 for name, t in times.items()}


def throughputs(contenders, rows, batch=1000, repeats=6):
    """Per contender, rows per second in batches of ``batch``: the best of ``repeats`` passes,
    the contenders taking turns pass by pass (order alternating)."""
    names = list(contenders)
    feeds = {name: [prepare(rows[s : s + batch]) for s in range(0, rows.shape[0], batch)]
             for name, (prepare, _) in contenders.items()}  # fmt: skip
    best = dict.fromkeys(names, np.inf)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            for feed in feeds[name]:
                contenders[name][1](feed)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: rows.shape[0] / t for name, t in best.items()}


def size(path):
    """Bytes of an export with the file beside it (JSON: .npz, ONNX: .data)."""
    path = Path(path)
    beside = [path.with_name(path.name + ".npz"), path.with_name(path.name + ".data")]
    return path.stat().st_size + sum(p.stat().st_size for p in beside if p.exists())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--score", type=int, default=20_000, help="rows of the batch runs")
    args = parser.parse_args()
    numba.set_num_threads(1)
    data = make_ctr(args.train + args.score, n_fields=39, n_bits=22, random_state=0)
    X, y = data.X, data.y
    train, test = X[: args.train], X[args.train :]
    print(f"onnxruntime {ort.__version__}, 1 thread; {args.train:,} training rows, 39 fields, "
          f"2^22 columns")  # fmt: skip
    models = {
        "logistic regression": SparseLogisticRegression(max_iter=1),
        "FM (k=16)": FMClassifier(max_iter=1, random_state=0),
    }
    for name, model in models.items():
        model.fit(train, y[: args.train])
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            contenders = scorers(model, folder)
            reference = model.predict_proba(test)[:, 1]
            print(f"\n{name}: onnx {size(folder / 'padded.onnx') / 2**20:.1f} MiB, "
                  f"json+npz {size(folder / 'model.json') / 2**20:.1f} MiB")  # fmt: skip
            for prepare, run in contenders.values():
                run(prepare(test[:1000]))  # warm up
            lat = latencies(contenders, test, args.calls)
            rate = throughputs(contenders, test)
            print(f"{'':28} {'p50 us':>8} {'p99 us':>8} {'rows/s (1,000)':>15} {'max |diff|':>11}")
            for label, (prepare, run) in contenders.items():
                diff = np.abs(run(prepare(test)) - reference).max()
                p50, p99 = lat[label]
                print(f"{label:28} {p50:8.0f} {p99:8.0f} {rate[label]:15,.0f} {diff:11.1e}")
    print("\nexport of a model of 2^24 columns (fitted on 20,000 rows):")
    big = make_ctr(20_000, n_fields=39, n_bits=24, random_state=0)
    for name, model in [("logistic regression", SparseLogisticRegression(max_iter=1)),
                        ("FM (k=16)", FMClassifier(max_iter=1, random_state=0))]:  # fmt: skip
        model.fit(big.X, big.y)
        with tempfile.TemporaryDirectory() as tmp:
            for fmt, file in (("onnx", "model.onnx"), ("json", "model.json")):
                start = time.perf_counter()
                model.export(Path(tmp) / file, format=fmt)
                took = time.perf_counter() - start
                mib = size(Path(tmp) / file) / 2**20
                print(f"  {name:20} {fmt:5} {took:6.2f} s  {mib:7.1f} MiB")


if __name__ == "__main__":
    main()
