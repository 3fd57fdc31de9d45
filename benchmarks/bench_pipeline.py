"""End to end, text file to trained model: ``sparseopt train`` against Vowpal Wabbit.

    python benchmarks/bench_pipeline.py [--rows 1000000] [--bits 22]

Draws Criteo-format rows from the model of the packaged sample (``sparseopt.datasets``'s
sample machinery: 13 counts and 26 hex categoricals, Zipf-distributed values, empty fields)
and writes the same rows twice: as Criteo TSV for sparseopt and in Vowpal Wabbit's own text
format for VW (one token ``<field>_<value>`` per field, the value being the count's bucket,
the categorical's hex text, or nothing for an empty field, so both see the same features). Each
system then
goes from its text file to a saved model in one pass and scores a held-out file: sparseopt
trains on one thread while ``--parse-threads`` threads parse (by default the cores but one, 1
or 2; the script also runs 2); VW, as always, parses in one thread and learns in another.
Parse-and-hash throughput (one thread reading the TSV into CSR chunks, no training) is
reported separately. sparseopt is timed in-process after a warm-up on a small file (its
compiled kernels are loaded from Numba's cache once per process), and also as a fresh
``python -m sparseopt train`` process, start-up included.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from sparseopt.cli import main as sparseopt_main
from sparseopt.datasets import read_criteo
from sparseopt.datasets._generators import _simulate_ctr
from sparseopt.datasets._sample import N_COUNTS, SAMPLE_MODEL, _hex_token, write_criteo_tsv

BLOCK = 100_000


def write_files(values, y, tsv, vw):
    """The same rows as Criteo TSV and as VW text, written block by block."""
    with open(tsv, "wb") as f_tsv, open(vw, "w") as f_vw:
        for start in range(0, len(y), BLOCK):
            v, t = values[start : start + BLOCK], y[start : start + BLOCK]
            write_criteo_tsv(f_tsv, v, t)
            columns = []
            for field in range(v.shape[1]):
                text = (
                    v[:, field].astype(str) if field < N_COUNTS else _hex_token(v[:, field], field)
                )
                # an empty field is a feature of its own, as sparseopt's readers hash it
                columns.append(np.char.add(f"{field}_", np.where(v[:, field] >= 0, text, "")))
            labels = np.where(t > 0, "1 |f", "-1 |f")
            f_vw.writelines(
                " ".join([label, *row]) + "\n"
                for label, row in zip(labels, zip(*columns, strict=True), strict=True)
            )


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_sparseopt(train, test, bits, workdir, extra=()):
    out = os.path.join(workdir, "run")
    argv = ["train", train, "--out", out, "--n-bits", str(bits), "--no-cache", *extra]
    code, seconds = timed(lambda: sparseopt_main(argv))
    assert code == 0
    import sparseopt

    X, y = read_criteo(test, n_bits=bits).read()
    return seconds, sparseopt.load(os.path.join(out, "model.npz")).predict_proba(X)[:, 1]


def run_sparseopt_process(train, bits, workdir):
    argv = [
        sys.executable,
        "-m",
        "sparseopt",
        "train",
        train,
        "--n-bits",
        str(bits),
        "--out",
        os.path.join(workdir, "proc"),
        "--no-cache",
    ]
    _, seconds = timed(lambda: subprocess.run(argv, check=True, capture_output=True))
    return seconds


def run_vw(train, test, bits, workdir):
    import vowpalwabbit

    model, preds = os.path.join(workdir, "m.vw"), os.path.join(workdir, "p.txt")
    common = ["--loss_function", "logistic", "-b", str(bits), "--quiet"]
    _, seconds = timed(
        lambda: vowpalwabbit.Workspace(arg_list=["-d", train, "-f", model, *common]).finish()
    )
    vowpalwabbit.Workspace(
        arg_list=["-t", "-d", test, "-i", model, "-p", preds, "--link", "logistic", "--quiet"]
    ).finish()
    return seconds, np.loadtxt(preds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--test-rows", type=int, default=200_000)
    parser.add_argument("--bits", type=int, default=22)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        _, (train_part, test_part) = _simulate_ctr(
            args.rows, args.test_rows, **dict(SAMPLE_MODEL, random_state=7)
        )
        paths = {}
        for name, (values, y, _) in [("train", train_part), ("test", test_part)]:
            paths[name] = (
                os.path.join(workdir, f"{name}.tsv"),
                os.path.join(workdir, f"{name}.vw"),
            )
            write_files(values, y, *paths[name])
        y_test = test_part[1]
        size_mb = os.path.getsize(paths["train"][0]) / 1e6
        print(
            f"{args.rows:,} training rows ({size_mb:.0f} MB of Criteo TSV), "
            f"{args.test_rows:,} test rows, 2^{args.bits} columns, one pass\n"
        )

        # warm-up: load the compiled parser and kernels once, outside the timings
        with tempfile.TemporaryDirectory() as warm:
            small = os.path.join(warm, "small.tsv")
            write_files(test_part[0][:1000], y_test[:1000], small, os.path.join(warm, "s.vw"))
            run_sparseopt(small, small, args.bits, warm)

        def parse():
            n = 0
            for X, _ in read_criteo(paths["train"][0], n_bits=args.bits):
                n += X.shape[0]
            return n

        n, parse_s = timed(parse)
        rows = []
        so_s, p_so = run_sparseopt(paths["train"][0], paths["test"][0], args.bits, workdir)
        rows.append(("sparseopt train (in-process, warm)", so_s, p_so))
        two = ("--parse-threads", "2")
        so2_s, p_so2 = run_sparseopt(paths["train"][0], paths["test"][0], args.bits, workdir, two)
        rows.append(("sparseopt train --parse-threads 2", so2_s, p_so2))
        vw_s, p_vw = run_vw(paths["train"][1], paths["test"][1], args.bits, workdir)
        rows.append(("Vowpal Wabbit (its text format)", vw_s, p_vw))
        proc_s = run_sparseopt_process(paths["train"][0], args.bits, workdir)

        print("| system | end-to-end s | rows/s | test logloss | AUC | time vs VW |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, seconds, p in rows:
            print(
                f"| {name} | {seconds:.2f} | {args.rows / seconds:,.0f} | "
                f"{log_loss(y_test, p):.4f} | {roc_auc_score(y_test, p):.4f} | "
                f"{seconds / vw_s:.2f}x |"
            )
        print(
            f"| sparseopt train (fresh process, start-up included) | {proc_s:.2f} | "
            f"{args.rows / proc_s:,.0f} | | | {proc_s / vw_s:.2f}x |"
        )
        print(
            f"\nparse and hash only (read_criteo, {n:,} rows): {parse_s:.2f} s, "
            f"{n / parse_s:,.0f} rows/s, {size_mb / parse_s:.0f} MB/s"
        )


if __name__ == "__main__":
    main()
