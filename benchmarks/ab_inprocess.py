"""One estimator's epoch against an earlier commit's, both in one interpreter, alternated.

    python benchmarks/ab_inprocess.py REV [--model lr|fm-row|fm-element|fm-batch]
        [--optimizer adagrad] [--rows 300000] [--repeats 7]

Steadier than two processes on a shared machine: the earlier commit's ``sparseopt`` (a
worktree, as ``benchmarks/ab.py`` keeps it) is imported under the name ``sparseopt_old``
(its imports are relative), the same ``make_ctr`` data (2^22 columns) goes to both, and
their one-epoch fits alternate, each side first in every other pair; it prints the best
and the median CPU seconds of each. Run
it with an empty ``NUMBA_CACHE_DIR`` after editing ``optim/_rules.py``: a cached kernel does
not notice a change in another file.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODELS = {
    "lr": ("SparseLogisticRegression", {}),
    "fm-row": ("FMClassifier", {"n_components": 8, "factor_state": "row"}),
    "fm-element": ("FMClassifier", {"n_components": 8, "factor_state": "element"}),
    "fm-batch": ("FMClassifier", {"n_components": 8, "factor_state": "element",
                                  "batch_size": 256, "learning_rate": 0.1}),
}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rev")
    parser.add_argument("--model", choices=sorted(MODELS), default="lr")
    parser.add_argument("--optimizer", default="adagrad")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.rev],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    tree = Path(tempfile.gettempdir()) / f"sparseopt-ab-{rev}"
    if not tree.exists():
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", tree, rev],
                       check=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as parent:
        shutil.copytree(tree / "sparseopt", Path(parent) / "sparseopt_old")
        sys.path.insert(0, parent)
        sys.path.insert(0, str(ROOT))
        from sparseopt.datasets import make_ctr

        data = make_ctr(n_samples=args.rows, n_bits=22, random_state=0)
        name, params = MODELS[args.model]
        params = dict(params, optimizer=args.optimizer, max_iter=1, random_state=0)
        models = {
            label: getattr(importlib.import_module(package), name)(**params)
            for label, package in [("this tree", "sparseopt"), (args.rev, "sparseopt_old")]
        }
        for model in models.values():  # compile or load the kernels outside the timing
            model.fit(data.X[:2000], data.y[:2000])
        seconds = {label: [] for label in models}
        for repeat in range(args.repeats):
            # each side first in every other pair: with a fixed order, the first fit of a
            # pair paid up to 0.2 s more system time in the same code (a temporary array's
            # page faults), whichever tree it ran
            pairs = list(models.items())
            for label, model in pairs if repeat % 2 == 0 else pairs[::-1]:
                started = time.process_time()
                model.fit(data.X, data.y)
                seconds[label].append(time.process_time() - started)
    for label, times in seconds.items():
        times.sort()
        print(f"{args.model} ({args.optimizer}), {label}: best {times[0]:.3f} s, "
              f"median {times[len(times) // 2]:.3f} s CPU")  # fmt: skip


if __name__ == "__main__":
    main()
