"""First use as a new user meets it: each case in a fresh process with an empty Numba cache.

    python benchmarks/bench_compile.py [--cases lr,fm] [--repeat 1]
    python benchmarks/bench_compile.py --cases readme   # the figures README.md quotes
    python benchmarks/bench_compile.py --against /tmp/base --only optimizer=adam [--repeat 2]

Each case fits one estimator with its defaults (or the options named; ``features``: MF with
one-hot user and item features) on 2,000 rows, in a new interpreter whose
``NUMBA_CACHE_DIR`` is a new empty folder, and reports the seconds of its first ``fit``
(kernels compiled) and of the whole process. The ``main job`` case runs
``sparseopt train`` (the README's first command) from a cold cache to its last line; the
``warm`` cases fit twice in a process that finds the cache filled and report the first fit's
extra cost over the second. Targets (issue 18): logistic regression at most 10 s with any
optimizer and input dtype, 20 s with ``n_jobs=2``; FM, FFM and each MF loss at most 20 s;
the main job at most 15 s; a warm first fit at most 1 s slower than the second.

``--against DIR`` times the cold first fits of the cases whose option is ``--only`` (all if
not given) with this tree's sparseopt and with the one in DIR (a worktree of another commit),
alternating, ``--repeat`` times each, and prints each side's best.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

FIT = """
import time
import numpy as np
import scipy.sparse as sp
from sklearn.base import is_regressor
from sklearn.datasets import make_classification, make_regression
from sparseopt import estimators

kind, option = {kind!r}, {option!r}
params = {{}}
for word in option.split():
    if word not in ("float32", "features"):
        key, value = word.split("=")
        params[key] = int(value) if value.isdigit() else value
if kind == "FFMClassifier":
    params["fields"] = np.arange(20) % 4
model = getattr(estimators, kind)(**params)
rng = np.random.default_rng(0)
sides = {{}}
if kind == "MatrixFactorization":
    X = sp.random(300, 200, density=0.05, format="csr", random_state=0)
    X.data[:] = rng.integers(1, 6, X.nnz)
    args = (X,)
    if "features" in option.split():  # each user in one of 7 groups, each item in one of 11
        onehot = lambda n, m: sp.csr_matrix((np.ones(n), (np.arange(n), np.arange(n) % m)))
        sides = dict(user_features=onehot(300, 7), item_features=onehot(200, 11))
else:
    make = make_regression if is_regressor(model) else make_classification
    X, y = make(2000, n_features=20, random_state=0)
    args = (X.astype(np.float32) if option == "float32" else X, y)
for _ in range({fits}):
    started = time.perf_counter()
    model.fit(*args, **sides)
    print(time.perf_counter() - started)
"""

CASES = [
    ("lr", "SparseLogisticRegression", ""),
    ("lr", "SparseLogisticRegression", "float32"),
    *[
        ("lr", "SparseLogisticRegression", f"optimizer={name}")
        for name in ("sgd", "momentum", "rmsprop", "adam", "amsgrad", "ftrl")
    ],  # fmt: skip
    ("lr", "SparseLogisticRegression", "n_jobs=2"),
    ("lr", "SparseLinearRegression", ""),
    ("fm", "FMClassifier", ""),
    ("fm", "FMClassifier", "optimizer=adam"),
    ("fm", "FMRegressor", ""),
    ("fm", "FFMClassifier", ""),
    *[
        ("mf", "MatrixFactorization", f"loss={loss}")
        for loss in ("squared", "logistic", "bpr", "warp")
    ],  # fmt: skip
    # with side features: the kernel of models/_mf_features.py, a lazy rule's too
    ("features", "MatrixFactorization", "features loss=squared"),
    ("features", "MatrixFactorization", "features loss=warp"),
    ("features", "MatrixFactorization", "features loss=warp optimizer=adam"),
]


def run(code_or_command, cache):
    """(stdout lines, process seconds, process CPU seconds) of a fresh interpreter on the
    given Numba cache. CPU seconds (user + system, the process and its threads) hardly move
    with the load of a shared machine; compiling is single-threaded, so on an idle machine
    the wall seconds of a fit are about its CPU seconds."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    command = code_or_command if isinstance(code_or_command, list) else [
        sys.executable, "-c", code_or_command]  # fmt: skip
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{command[:2]} failed:\n{done.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.stdout.split("\n"), time.perf_counter() - started, cpu


def cold_fit(kind, option):
    with tempfile.TemporaryDirectory() as cache:
        lines, seconds, cpu = run(FIT.format(kind=kind, option=option, fits=1), cache)
        return float(lines[0]), seconds, cpu


def warm_fits(kind, option):
    with tempfile.TemporaryDirectory() as cache:
        run(FIT.format(kind=kind, option=option, fits=1), cache)  # fill the cache
        lines, _, _ = run(FIT.format(kind=kind, option=option, fits=2), cache)
        return float(lines[0]) - float(lines[1])


def main_job():
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        lines, seconds, cpu = run(["sparseopt", "train", "--out", out], cache)
        return seconds, cpu, next((line for line in reversed(lines) if line.strip()), "")


def against(other, only, repeat):
    """Cold first fits of this tree and of ``other``, alternating; each side's best first fit
    seconds and process CPU seconds (the CPU seconds hardly move with the machine's load)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = [("this tree", here), (other, other)]
    best = {}
    for rep in range(repeat):
        for label, tree in trees if rep % 2 == 0 else trees[::-1]:
            os.environ["PYTHONPATH"] = tree
            for _, kind, option in CASES:
                if only is None or option == only:
                    fit, _, cpu = cold_fit(kind, option)
                    key = (kind + (f" ({option})" if option else ""), label)
                    best[key] = tuple(map(min, best.get(key, (fit, cpu)), (fit, cpu)))
                    print(f"{key[0]:<48} {label:<24} first fit {fit:6.1f} s, process CPU "
                          f"{cpu:6.1f} s, load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    print()
    for (case, label), (fit, cpu) in best.items():
        print(f"{case:<48} {label:<24} best {fit:6.1f} s, CPU {cpu:6.1f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="lr,fm,mf,main,warm",
                        help="comma-separated: lr, fm, mf, features (MF with side features), "
                             "main, warm, readme")  # fmt: skip
    parser.add_argument("--against", help="another tree's root, to compare cold first fits")
    parser.add_argument("--only", help="with --against: the cases with this option only")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if args.against:
        return against(args.against, args.only, args.repeat)
    wanted = set(args.cases.split(","))
    if "readme" in wanted:  # each model's default first fit, and the main job
        wanted |= {"main"}
    readme = {("SparseLogisticRegression", ""), ("FMClassifier", ""),
              ("MatrixFactorization", "loss=squared")}  # fmt: skip
    print(f"{'case':<52} {'first fit s':>11} {'process s':>10} {'process CPU s':>13}")
    for group, kind, option in CASES:
        if group in wanted or ("readme" in wanted and (kind, option) in readme):
            fit, process, cpu = cold_fit(kind, option)
            name = kind + (f" ({option})" if option else "")
            print(f"{name:<52} {fit:>11.1f} {process:>10.1f} {cpu:>13.1f}", flush=True)
    if "main" in wanted:
        seconds, cpu, last = main_job()
        name = "sparseopt train (main job), to its last line"
        print(f"{name:<52} {'':>11} {seconds:>10.1f} {cpu:>13.1f}")
        print(
            f"  load average after: {os.getloadavg()[0]:.1f} (on 2 cores, above 2 means "
            f"other jobs; an idle machine waits about the CPU seconds, at most)"
        )
        print(f"  last line: {last}")
    if "warm" in wanted:
        for kind, option in [("SparseLogisticRegression", ""), ("FMClassifier", ""),
                             ("MatrixFactorization", "loss=warp")]:  # fmt: skip
            extra = warm_fits(kind, option)
            print(f"warm cache, first fit minus second: {kind} {option}: {extra:+.2f} s")


if __name__ == "__main__":
    main()
