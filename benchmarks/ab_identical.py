"""Are the fits of this tree bit-identical to an earlier commit's? The A/B of a refactoring.

    python benchmarks/ab_identical.py REV [--case NAME ...] [--dask] [--cli]

Fits every case (LR, FM, FFM, MF with the squared and the WARP loss, without and with user
and item features; one epoch and ``max_iter="auto"``; serial, ``random_state=0``, small
synthetic data) once in this tree and once in a worktree of commit REV (kept under the
temporary folder, as ``benchmarks/ab.py`` keeps it). Each side runs in its own process
with ``PYTHONPATH`` pointing at its tree and writes every fitted array (each attribute
ending in ``_``, and the arrays inside a fitted state, walked recursively) to an ``.npz``
file; the two files are then compared array by array with ``np.array_equal`` (NaN
unequal), names included. ``--dask`` adds a fit through ``sparseopt.dask.fit`` on an
in-process cluster, ``--cli`` the ``sparseopt train`` runs of ``CLI_CASES`` (lr and mf: a
number of epochs, ``--epochs auto`` stopping on a validation file, validation losses that
tie, and for lr a run interrupted and resumed). Prints one line per case and exits with
status 1 if any array differs or is missing on one side.

The first run in a fresh worktree of REV compiles its kernels (minutes); later runs load them
from the cache next to its sources. Run it with an empty ``NUMBA_CACHE_DIR`` after a change to
``optim/_rules.py``: a cached kernel does not notice a change in another file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# name -> (estimator class, constructor parameters); every fit is serial with random_state=0
CASES = {
    "lr-1": ("SparseLogisticRegression", {"max_iter": 1}),
    "lr-auto": ("SparseLogisticRegression", {"max_iter": "auto"}),
    "linreg-1": ("SparseLinearRegression", {"max_iter": 1}),
    "fm-1": ("FMClassifier", {"max_iter": 1}),
    "fm-auto": ("FMClassifier", {"max_iter": "auto"}),
    "fm-batch": ("FMClassifier", {"max_iter": 2, "batch_size": 64, "optimizer": "adam"}),
    "fmreg-1": ("FMRegressor", {"max_iter": 1}),
    "ffm-1": ("FFMClassifier", {"max_iter": 1}),
    "ffm-auto": ("FFMClassifier", {"max_iter": "auto"}),
    "mf-squared-1": ("MatrixFactorization", {"loss": "squared", "max_iter": 1}),
    "mf-squared-auto": ("MatrixFactorization", {"loss": "squared", "max_iter": "auto"}),
    "mf-warp-1": ("MatrixFactorization", {"loss": "warp", "max_iter": 1}),
    "mf-warp-auto": ("MatrixFactorization", {"loss": "warp", "max_iter": "auto"}),
    # a lazy rule: rows caught up on their pending steps (and the history's, for WARP)
    "mf-squared-adam": ("MatrixFactorization", {"loss": "squared", "optimizer": "adam",
                                                "max_iter": 2}),
    "mf-warp-adam": ("MatrixFactorization", {"loss": "warp", "optimizer": "adam",
                                             "max_iter": 2}),
    # with user and item features (one-hot categories; WARP's 'auto' keeps user histories)
    "mf-features-squared-1": ("MatrixFactorization", {"loss": "squared", "max_iter": 1}),
    "mf-features-warp-1": ("MatrixFactorization", {"loss": "warp", "max_iter": 1}),
    "mf-features-warp-auto": ("MatrixFactorization", {"loss": "warp", "max_iter": "auto"}),
    # ... with a lazy rule: the feature and history rows caught up in the kernel
    "mf-features-squared-adam": ("MatrixFactorization", {"loss": "squared",
                                                         "optimizer": "adam", "max_iter": 2}),
    "mf-features-warp-adam": ("MatrixFactorization", {"loss": "warp", "optimizer": "adam",
                                                      "max_iter": 2}),
    "mf-features-bpr-adam": ("MatrixFactorization", {"loss": "bpr", "optimizer": "adam",
                                                     "max_iter": 2}),
}  # fmt: skip


def arrays(value, name: str, found: dict, depth: int = 0) -> None:
    """Put every array reachable from ``value`` (states are objects, dicts and tuples of
    arrays) into ``found`` under a path-like name."""
    if depth > 6:
        return
    if isinstance(value, np.ndarray):
        found[name] = value
    elif isinstance(value, (bool, int, float, np.number)):
        found[name] = np.asarray(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            arrays(item, f"{name}[{key}]", found, depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            arrays(item, f"{name}[{i}]", found, depth + 1)
    elif hasattr(value, "__dict__") and type(value).__module__.startswith("sparseopt"):
        for key, item in vars(value).items():
            arrays(item, f"{name}.{key}", found, depth + 1)


def fitted(model) -> dict:
    """Every array of a fitted estimator, from its public attributes ending in ``_``."""
    found = {}
    for key, value in vars(model).items():
        if key.endswith("_") and not key.startswith("_"):
            arrays(value, key, found)
    return found


def fit_cases(names: list[str], out: Path) -> None:
    """One side's fits, in the ``sparseopt`` that ``PYTHONPATH`` names: one .npz per case."""
    import scipy.sparse as sp

    import sparseopt
    from sparseopt.datasets import column_fields, make_ctr

    click = make_ctr(3000, n_fields=8, n_bits=12, interactions=0.5, random_state=0)
    fields = make_ctr(3000, n_fields=8, n_bits=12, field_aware=True, random_state=0)
    rng = np.random.RandomState(0)
    users, items = rng.randint(0, 300, 6000), rng.randint(0, 200, 6000)
    pairs = np.unique(users * 200 + items)  # no repeated (user, item): MF refuses them
    ratings = sp.csr_matrix(
        (rng.randint(1, 6, pairs.size).astype(np.float32), (pairs // 200, pairs % 200)),
        shape=(300, 200),
    )
    features = {  # one-hot: each user in one of 7 groups, each item in one of 11
        f"{side}_features": sp.csr_matrix(
            (np.ones(n, np.float32), (np.arange(n), np.arange(n) % m)), shape=(n, m)
        )
        for side, n, m in [("user", 300, 7), ("item", 200, 11)]
    }
    for name in names:
        if name in CASES:
            cls, params = CASES[name]
            model = getattr(sparseopt, cls)(random_state=0, **params)
            if cls == "MatrixFactorization":
                model.fit(ratings, **(features if "features" in name else {}))
            elif cls == "FFMClassifier":
                model.set_params(fields=column_fields(12, 8)).fit(fields.X, fields.y)
            else:
                model.fit(click.X, click.y)
        elif name == "dask-lr":
            model = fit_dask(click)
        else:
            model = train_cli(name, ratings, out)
        np.savez(out / f"{name}.npz", **fitted(model))


def fit_dask(click):
    """LR fitted by ``sparseopt.dask.fit`` on an in-process cluster (one worker, 3 blocks)."""
    import dask.array as da
    from dask.distributed import Client, LocalCluster

    import sparseopt
    import sparseopt.dask

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False)
    with cluster, Client(cluster) as client:
        X = da.from_array(click.X, chunks=(1000, click.X.shape[1]), asarray=False)
        y = da.from_array(click.y, chunks=1000)
        model = sparseopt.SparseLogisticRegression(max_iter=2, random_state=0)
        sparseopt.dask.fit(model, X, y, client=client)
    return model


# name -> the options of `sparseopt train` (lr: on the packaged sample and its validation
# file; mf: on the ratings of fit_cases, the last 1,000 of them held out with "valid")
CLI_CASES = {
    "cli-lr": ["--model", "lr", "--epochs", "2", "--no-cache"],
    "cli-lr-auto": ["--model", "lr", "--no-cache"],  # stops 2 epochs after the best
    "cli-lr-tie": ["--model", "lr", "--no-cache", "--learning-rate", "1e-30"],  # equal losses
    "cli-lr-resume": ["--model", "lr", "--no-cache"],  # cut in epoch 3, then --resume
    "cli-mf": ["--model", "mf", "--epochs", "2"],
    "cli-mf-auto": ["--model", "mf", "valid"],
    "cli-mf-tie": ["--model", "mf", "valid", "--learning-rate", "1e-30"],
}


def train_cli(name: str, ratings, out: Path):
    """The model that ``sparseopt train`` saves for case ``name`` of :data:`CLI_CASES`; the
    runs go through ``python -m sparseopt``, but for the interrupted one (in this process)."""
    import sparseopt
    from sparseopt.cli import main

    folder = out / f"{name}-run"
    args = list(CLI_CASES[name])
    if "mf" in args:
        coo = ratings.tocoo()
        lines = [f"{u},{i},{r:g}\n" for u, i, r in zip(coo.row, coo.col, coo.data, strict=True)]
        (out / "ratings.csv").write_text("".join(lines if "valid" not in args else lines[:-1000]))
        (out / "valid.csv").write_text("".join(lines[-1000:]))
        args = [str(out / "ratings.csv"), *args]
        if "valid" in args:
            args[args.index("valid")] = "--validation"
            args.insert(args.index("--validation") + 1, str(out / "valid.csv"))
    command = ["train", "--seed", "0", "--no-progress", "--out", str(folder), *args]
    if name == "cli-lr-resume":

        def cut(epoch, chunk):
            if (epoch, chunk) == (2, 4):
                raise KeyboardInterrupt

        assert main(command, after_chunk=cut) == 130
        assert main([*command, "--resume"]) == 0
    else:
        subprocess.run([sys.executable, "-m", "sparseopt", *command], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    return sparseopt.load(folder / "model.npz")


def fit_side(tree: Path, names: list[str], out: Path) -> None:
    """Run :func:`fit_cases` in a process that imports ``sparseopt`` from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    subprocess.run([sys.executable, __file__, "--fit-into", str(out), "-", *names],
                   env=env, cwd=tree, check=True)  # fmt: skip


def compare(name: str, ours: Path, theirs: Path) -> list[str]:
    """The names of the arrays that differ (or exist on one side only) in case ``name``."""
    with np.load(ours / f"{name}.npz") as a, np.load(theirs / f"{name}.npz") as b:
        names = sorted(set(a.files) | set(b.files))
        return [n for n in names if n not in a.files or n not in b.files
                or a[n].dtype != b[n].dtype or not np.array_equal(a[n], b[n])]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rev")
    parser.add_argument("names", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    parser.add_argument("--dask", action="store_true")
    parser.add_argument("--cli", action="store_true")
    parser.add_argument("--fit-into", type=Path, help=argparse.SUPPRESS)  # one side's process
    args = parser.parse_args()
    if args.fit_into:
        fit_cases(args.names, args.fit_into)
        return 0
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.rev],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    tree = Path(tempfile.gettempdir()) / f"sparseopt-ab-{rev}"
    if not tree.exists():
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", tree, rev],
                       check=True)  # fmt: skip
    names = [*(args.case or CASES), *["dask-lr"] * args.dask, *list(CLI_CASES) * args.cli]
    with tempfile.TemporaryDirectory() as folder:
        ours, theirs = Path(folder, "ours"), Path(folder, "theirs")
        ours.mkdir(), theirs.mkdir()
        fit_side(ROOT, names, ours)
        fit_side(tree, names, theirs)
        failed = False
        for name in names:
            with np.load(ours / f"{name}.npz") as a:
                n_arrays = len(a.files)
            differ = compare(name, ours, theirs)
            failed |= bool(differ) or n_arrays == 0
            verdict = "identical" if not differ and n_arrays else "DIFFERENT"
            print(f"{name:22s} {n_arrays:3d} arrays  {verdict}  {' '.join(differ)}")
    print(f"this tree against {rev}: {'DIFFERENCES' if failed else 'all bit-identical'}")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
