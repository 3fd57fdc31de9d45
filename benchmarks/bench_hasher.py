"""FieldHasher.transform on Criteo-like tables, against FeatureHasher and hash_features.

    python benchmarks/bench_hasher.py [--rows 200000] [--repeats 3]

The table has Criteo's columns: 13 integer counts (some missing) and 26 categoricals of 8
hex digits (some missing). Peers, on the same rows:

- ``FieldHasher(numeric="bucket").transform`` of the table as Arrow (pyarrow Table) and as
  pandas (pandas' default string columns);
- ``hash_features`` of the same 39 columns as Arrow text, the counts already bucketed (the
  hashing alone, with nothing to convert);
- scikit-learn's ``FeatureHasher(input_type="string")`` on ready "field=value" token lists,
  and counting the building of those tokens from the DataFrame, the usual way.

Memory: the peak traced by ``tracemalloc`` (NumPy's and Python's allocations) during one
``transform`` of the Arrow table, against the CSR output plus one column's working buffers
(int64 offsets, validity, and the text bytes). Targets (issue 21): FieldHasher at least 20x
FeatureHasher's rows/s with tokens built, and within 1.5x of hash_features' time.

Token counts (``keep_tokens=True``): the peak resident memory of a fresh process that fits
``FieldHasher(keep_tokens=True)`` on one column of 100,000 distinct URLs (about 60 bytes
each), with and without one value of 4 KB among them (``--tokens-rows`` changes the count,
0 leaves the case out). Target (issue 30): with the long value at most 1.5x the peak without it.

Crosses (issue 25): the same transform with 10 crossed pairs (``interactions=CROSSES``, each
hashed from its two fields' hashes into a field of its own): target at least 0.5x the rows/s
without them.
"""

import argparse
import json
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pyarrow as pa
from sklearn.feature_extraction import FeatureHasher

from sparseopt.datasets import FieldHasher, hash_features

N_COUNTS, N_CATEGORICALS, N_BITS = 13, 26, 20
CROSSES = "C1*C2,C3*C4,C5*C6,C7*C8,C9*C10,C11*C12,C13*C14,I1*C15,I2*C16,I3*C17"


def criteo_like(n_rows, seed=0):
    """A pyarrow Table of 13 int64 counts and 26 hex-string categoricals, 5% missing."""
    rng = np.random.default_rng(seed)
    columns = {}
    for i in range(N_COUNTS):
        counts = np.minimum(rng.zipf(1.3, n_rows), 100_000) - 1
        columns[f"I{i + 1}"] = pa.array(counts, mask=rng.random(n_rows) < 0.05)
    for i in range(N_CATEGORICALS):
        vocab = np.char.mod("%08x", rng.integers(0, 2**32, 10 ** (1 + i % 5)))
        ids = np.minimum(rng.zipf(1.2, n_rows), vocab.size) - 1
        columns[f"C{i + 1}"] = pa.array(vocab[ids], mask=rng.random(n_rows) < 0.05)
    return pa.table(columns)


def as_text(table):
    """The 39 columns as the text hash_features hashes: a count as its bucket's text."""
    text = []
    for f, name in enumerate(table.column_names):
        column = table.column(name).combine_chunks()
        if f < N_COUNTS:
            x = column.fill_null(0).to_numpy().astype(np.float64)
            bucket = np.where(x > 2, np.floor(np.log(np.maximum(x, 1)) ** 2), x).astype(np.int64)
            column = pa.array(bucket.astype(str), mask=column.is_null().to_numpy(False))
        text.append(column)
    return text


CLOCK = time.perf_counter  # --cpu-time: time.process_time


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = CLOCK()
        out = fn()
        times.append(CLOCK() - t)
    return min(times), out


def tokens_the_usual_way(frame):
    """["C1=6b30c120", ...] per row, as scikit-learn's FeatureHasher is usually fed."""
    names = list(frame.columns)
    return [
        [f"{c}={v}" for c, v in zip(names, row, strict=True)]
        for row in frame.astype(str).itertuples(index=False)
    ]


TOKENS_CHILD = r"""
import json, sys
import pyarrow as pa
from sparseopt import FieldHasher

def peak_rss():  # VmHWM: this process's peak resident memory (reset by exec, not inherited)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))

n_rows, long_value = int(sys.argv[1]), int(sys.argv[2])
urls = [f"https://example.com/item/{i:08d}?ref=campaign-{i % 977:04d}" for i in range(n_rows)]
if long_value:
    urls[n_rows // 2] = "https://example.com/" + "x" * (long_value - 20)
table = pa.table({"url": urls})
FieldHasher(n_bits=20, keep_tokens=True).fit(table.slice(0, 10))  # compile
before = peak_rss()
FieldHasher(n_bits=20, keep_tokens=True).fit(table)
print(json.dumps([before, peak_rss()]))
"""


def tokens_peak(n_rows, long_value):
    """(peak RSS before the fit, peak RSS at its end) of a fresh process, in bytes."""
    out = subprocess.run(
        [sys.executable, "-c", TOKENS_CHILD, str(n_rows), str(long_value)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens-rows", type=int, default=100_000, help="0: no token case")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by the process's CPU time, which the load of other processes disturbs less",
    )
    args = parser.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    n, r = args.rows, args.repeats

    table = criteo_like(n)
    frame = table.to_pandas()
    text = as_text(table)
    hasher = FieldHasher(N_BITS, numeric="bucket").fit(table)
    hasher.transform(table.slice(0, 100))  # compile
    hash_features(text, n_bits=N_BITS)

    feature_hasher = FeatureHasher(n_features=2**N_BITS, input_type="string")
    rows = []
    t_arrow, X = best_time(lambda: hasher.transform(table), r)
    rows.append(("FieldHasher.transform, Arrow table", t_arrow))
    rows.append(("FieldHasher.transform, pandas", best_time(lambda: hasher.transform(frame), r)[0]))
    crossed = FieldHasher(N_BITS, numeric="bucket", interactions=CROSSES).fit(table)
    crossed.transform(table.slice(0, 100))  # compile
    t_crossed = best_time(lambda: crossed.transform(table), r)[0]
    rows.append(("FieldHasher.transform, Arrow table, 10 crosses", t_crossed))
    t_hash, X_ref = best_time(lambda: hash_features(text, n_bits=N_BITS), r)
    assert (X != X_ref).nnz == 0, "FieldHasher and hash_features disagree"
    rows.append(("hash_features, Arrow text (counts bucketed)", t_hash))
    t_build, tokens = best_time(lambda: tokens_the_usual_way(frame), 1)
    t_fh = best_time(lambda: feature_hasher.transform(tokens), 1)[0]
    rows.append(("FeatureHasher, ready tokens", t_fh))
    rows.append(('FeatureHasher, building "field=value" tokens', t_build + t_fh))

    tracemalloc.start()
    X = hasher.transform(table)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    output = X.indices.nbytes + X.data.nbytes + X.indptr.nbytes
    widest = max(text[N_COUNTS:], key=lambda c: c.nbytes)
    column = n * (8 + 1) + widest.buffers()[2].size  # int64 offsets, validity, text bytes

    print(f"{n:,} rows, 13 counts + 26 categoricals, n_bits={N_BITS}, best of {r}")
    print(f"{'':46s} {'seconds':>8s} {'M rows/s':>9s} {'vs FeatureHasher':>17s}")
    slowest = rows[-1][1]
    for name, t in rows:
        print(f"{name:46s} {t:8.3f} {n / t / 1e6:9.3f} {slowest / t:16.1f}x")
    print(f"FieldHasher (Arrow) / hash_features time: {t_arrow / t_hash:.2f}")
    print(f"FieldHasher with 10 crosses / without, rows/s: {t_arrow / t_crossed:.2f} (target 0.5)")
    print(
        f"peak traced during transform {peak / 2**20:.1f} MiB; CSR output {output / 2**20:.1f} "
        f"MiB + one column's buffers {column / 2**20:.1f} MiB = "
        f"{(output + column) / 2**20:.1f} MiB"
    )

    m = args.tokens_rows
    if not m:
        return
    print(f"keep_tokens=True on {m:,} distinct URLs, peak RSS of a fresh process (MiB):")
    peaks = {}
    for label, long_value in (("without a long value", 0), ("with one 4 KB value", 4096)):
        before, after = tokens_peak(m, long_value)
        peaks[label] = after
        print(f"  {label:24s} {after / 2**20:8.1f} (before the fit {before / 2**20:.1f})")
    ratio = peaks["with one 4 KB value"] / peaks["without a long value"]
    print(f"  with / without: {ratio:.2f} (target: at most 1.5)")


if __name__ == "__main__":
    main()
