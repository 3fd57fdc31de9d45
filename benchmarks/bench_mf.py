"""Matrix factorization on MovieLens 100K: sparseopt against its peers, in one run.

    PYTHONPATH=. python benchmarks/bench_mf.py [--data ../shared/data/ml-100k]

Explicit ratings: mean RMSE over the official folds u1..u5 and fit seconds per fold.
Implicit feedback: official ``ua`` split, positives = rating >= 4, precision@10 on the test
positives with each user's training positives excluded (with the 95% interval of 2,000
bootstrap resamples of the users), and fit seconds. Peers that are not
installed (Surprise, LightFM, implicit) are skipped. sparseopt's kernels are warmed up first
(loaded from Numba's cache), so fit times exclude compilation.

    PYTHONPATH=. python benchmarks/bench_mf.py --cold-start [--data ...]
    PYTHONPATH=. python benchmarks/bench_mf.py --history-validation [--data ...]

Side features (issue 27), alone: items of genres and release decade (u.item), users of age
bucket, gender and occupation (u.user), one-hot with weight 1 (on validation splits cut from
the training data, this beat rows normalized to sum 1, LightFM's ``Dataset`` default: cold
AUC 0.739 against 0.722). Cold start: positives (rating >= 4) of all 100,000 ratings, 20% of the
items (random, seed 0) held out entirely; each user's test AUC and precision@10 rank the cold
items alone, scored from their features. Warm: the ``ua`` split as above, with features.
``--history-validation`` compares user histories on and off with features on validation
splits cut from the training data (:func:`history_validation`), which chose the default.
sparseopt's WARP defaults (32 factors, 20 epochs, user histories, ``max_sampled`` 50) face
LightFM's hybrid model with the same feature matrices (each id one more column), factors and
epochs, WARP, one thread (``num_threads=1``; run the script with ``NUMBA_NUM_THREADS=1``, as
sparseopt's ``n_jobs`` default is one thread); each side also runs with the other's
``max_sampled`` (LightFM's default is 10), and LightFM with rows normalized to sum 1. Fit
seconds: the best of 3 fits (the same seed, so the same model).

LightFM 1.17 does not install from PyPI on Python 3.11 with a current setuptools: its
``setup.py`` runs ``__builtins__.__LIGHTFM_SETUP__ = True``, and ``__builtins__`` is a dict
there (``AttributeError``). It was built from the sdist with that one line patched (its OpenMP
extension built; the script asks it for one thread)::

    pip download --no-deps --no-binary :all: lightfm==1.17 && tar xzf lightfm-1.17.tar.gz
    # in lightfm-1.17/setup.py, replace the line  __builtins__.__LIGHTFM_SETUP__ = True
    # by the two lines  import builtins  and  builtins.__LIGHTFM_SETUP__ = True
    pip install cython && pip install --no-build-isolation ./lightfm-1.17
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit warns otherwise

import numpy as np
import scipy.sparse as sp

from sparseopt.datasets._movielens import implicit_positives, load_movielens_split
from sparseopt.estimators._mf import MatrixFactorization
from sparseopt.metrics import precision_at_k, rmse

FOLDS = ["u1", "u2", "u3", "u4", "u5"]


def timed(fit):
    start = time.perf_counter()
    model = fit()
    return model, time.perf_counter() - start


def best_of(fit, repeats=3):
    """``timed(fit)`` ``repeats`` times (the same seed: the same model); the last model and
    the shortest time."""
    runs = [timed(fit) for _ in range(repeats)]
    return runs[-1][0], min(seconds for _, seconds in runs)


def sparseopt_explicit(**params):
    def run(train, test):
        mf, seconds = timed(lambda: MatrixFactorization(random_state=0, **params).fit(train))
        coo = test.tocoo()
        return rmse(coo.data, mf.predict(coo.row, coo.col)), seconds

    return run


def surprise_svd(train, test):
    import pandas as pd
    from surprise import SVD, Dataset, Reader

    coo = train.tocoo()
    frame = pd.DataFrame({"u": coo.row, "i": coo.col, "r": coo.data})
    trainset = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5))).build_full_trainset()
    algo, seconds = timed(lambda: SVD(random_state=0).fit(trainset))
    t = test.tocoo()
    pred = [algo.predict(u, i).est for u, i in zip(t.row, t.col, strict=True)]
    return rmse(t.data, pred), seconds


def sparseopt_implicit(seeds=(0,), **params):
    """Per-user p@10 (averaged over the random states ``seeds``) and the mean fit time."""

    def run(train, test):
        per_user, fit = [], []
        for seed in seeds:
            mf = MatrixFactorization(random_state=seed, **params)
            mf, seconds = timed(lambda mf=mf: mf.fit(train))
            recommended = mf.recommend(np.arange(train.shape[0]), n=10)
            per_user.append(precision_at_k(test, recommended, 10, average=False))
            fit.append(seconds)
        return np.mean(per_user, axis=0), np.mean(fit)

    return run


def lightfm(loss):
    def run(train, test):
        from lightfm import LightFM

        model = LightFM(no_components=30, loss=loss, random_state=0)
        model, seconds = timed(lambda: model.fit(sp.coo_matrix(train), epochs=30, num_threads=1))
        items = np.arange(train.shape[1], dtype=np.int32)
        scores = np.vstack([model.predict(np.full_like(items, u), items)
                            for u in range(train.shape[0])])  # fmt: skip
        per_user = precision_at_k(test, scores.astype(np.float64), 10, train=train, average=False)
        return per_user, seconds

    return run


def implicit_model(name):
    def run(train, test):
        from implicit.als import AlternatingLeastSquares
        from implicit.bpr import BayesianPersonalizedRanking

        if name == "als":
            model = AlternatingLeastSquares(factors=32, iterations=15, random_state=0)
        else:
            model = BayesianPersonalizedRanking(
                factors=32, iterations=100, num_threads=1, random_state=0
            )
        user_items = sp.csr_matrix(train)
        _, seconds = timed(lambda: model.fit(user_items, show_progress=False))
        users = np.arange(train.shape[0])
        ids, _ = model.recommend(users, user_items, N=10, filter_already_liked_items=True)
        return precision_at_k(test, ids.astype(np.int64), 10, average=False), seconds

    return run


def side_features(folder):
    """(user features, item features): CSR of 0/1, one row per id - 1."""
    import pandas as pd

    items = pd.read_csv(Path(folder) / "u.item", sep="|", header=None, encoding="latin-1")
    genres = items.iloc[:, 5:].to_numpy(np.float64)
    year = pd.to_datetime(items[2], format="%d-%b-%Y", errors="coerce").dt.year
    decade = pd.get_dummies((year // 10).fillna(0).astype(int)).to_numpy(np.float64)
    users = pd.read_csv(Path(folder) / "u.user", sep="|", header=None)
    age = pd.get_dummies(pd.cut(users[1], [0, 18, 25, 35, 45, 50, 56, 200])).to_numpy(np.float64)
    categories = pd.get_dummies(users[[2, 3]].astype(str)).to_numpy(np.float64)

    return sp.csr_matrix(np.hstack([age, categories])), sp.csr_matrix(np.hstack([genres, decade]))


def cold_start_split(folder, fraction=0.2, seed=0):
    """Positives of every rating; (train on the warm items, test on the cold ones, cold ids)."""
    train, test = load_movielens_split(folder, "ua")
    positives = implicit_positives(train + test)
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.choice(positives.shape[1], int(fraction * positives.shape[1]), False))
    warm = np.setdiff1d(np.arange(positives.shape[1]), cold)
    return positives[:, warm], positives[:, cold], warm, cold


SIDE_PARAMS = dict(loss="warp", n_components=32)  # and max_iter "auto": 20 epochs with WARP


def sparseopt_hybrid(**params):
    """Fit sparseopt's model (``SIDE_PARAMS`` and ``params``); (scores of every user x
    ``new_items`` from their feature rows, or recommendations of the fitted items without
    ``new_items``; fit seconds)."""

    def run(train, user_features, item_features, new_items=None):
        mf, seconds = best_of(lambda: MatrixFactorization(random_state=0, **SIDE_PARAMS,
                                                          **params).fit(
            train, user_features=user_features, item_features=item_features))  # fmt: skip
        if new_items is None:
            return mf.recommend(np.arange(train.shape[0]), n=10), seconds
        users = np.repeat(np.arange(train.shape[0]), new_items.shape[0])
        items = np.tile(np.arange(new_items.shape[0]), train.shape[0])
        scores = mf.predict(users, items, item_features=new_items)
        return scores.reshape(train.shape[0], new_items.shape[0]), seconds

    return run


def lightfm_hybrid(normalize=False, max_sampled=10):
    """LightFM's hybrid model with sparseopt's features, factors and epochs (WARP, one
    thread; ``max_sampled`` 10 is LightFM's default, 50 sparseopt's): each id one more feature
    column, as sparseopt's identity; ``normalize``: feature rows scaled to sum 1 (the default
    of LightFM's ``Dataset``)."""

    def run(train, user_features, item_features, new_items=None):
        from lightfm import LightFM

        def with_identity(F, n_identity):
            F = sp.hstack([sp.identity(F.shape[0], format="csr")[:, :n_identity], F])
            if normalize:
                F = sp.diags(1.0 / np.asarray(F.sum(axis=1)).ravel()) @ F
            return sp.csr_matrix(F, dtype=np.float32)

        n_users, n_items = train.shape
        users = with_identity(sp.csr_matrix((n_users, 0)) if user_features is None
                              else user_features, n_users)  # fmt: skip
        items = with_identity(item_features, n_items)
        interactions = sp.coo_matrix(train)
        fit = dict(user_features=users, item_features=items, epochs=20, num_threads=1)
        model, seconds = best_of(lambda: LightFM(
            no_components=SIDE_PARAMS["n_components"], loss="warp", max_sampled=max_sampled,
            random_state=0).fit(interactions, **fit))  # fmt: skip
        if new_items is None:
            new_items, exclude = items, train
        else:
            new_items, exclude = with_identity(new_items, 0), None
            new_items = sp.hstack([sp.csr_matrix((new_items.shape[0], n_items)), new_items],
                                  format="csr")  # fmt: skip
        pairs = (np.repeat(np.arange(n_users), new_items.shape[0]).astype(np.int32),
                 np.tile(np.arange(new_items.shape[0]), n_users).astype(np.int32))  # fmt: skip
        scores = model.predict(*pairs, item_features=new_items, user_features=users)
        scores = scores.reshape(n_users, new_items.shape[0]).astype(np.float64)
        if exclude is not None:  # recommendations among the items unseen in training
            scores[exclude.nonzero()] = -np.inf
            return np.argsort(-scores, axis=1, kind="stable")[:, :10], seconds
        return scores, seconds

    return run


def cold_start(folder):
    """Rows of the side-feature cases: cold items, then warm items on ua."""
    from sparseopt.metrics import auc_score

    U, I = side_features(folder)
    train, test, warm, cold = cold_start_split(folder)
    MatrixFactorization(max_iter=1, **SIDE_PARAMS).fit(train, user_features=U,
                                                        item_features=I[warm])  # fmt: skip
    systems = {
        "sparseopt MF WARP, user and item features": (sparseopt_hybrid(), True),
        "sparseopt MF WARP, item features only": (sparseopt_hybrid(), False),
        "sparseopt MF WARP, user and item features, max_sampled=10 (LightFM's default)": (
            sparseopt_hybrid(max_sampled=10), True),
        "LightFM WARP hybrid, user and item features": (lightfm_hybrid(), True),
        "LightFM WARP hybrid, user and item features, rows normalized": (
            lightfm_hybrid(normalize=True), True),
        "LightFM WARP hybrid, user and item features, max_sampled=50 (sparseopt's default)": (
            lightfm_hybrid(max_sampled=50), True),
    }  # fmt: skip
    rows = []
    for name, (run, with_users) in systems.items():
        result = try_run(run, train, U if with_users else None, I[warm], I[cold])
        if isinstance(result, str):
            rows.append(("cold items (20%)", name, result, "", "", ""))
            continue
        scores, seconds = result
        per_user = precision_at_k(test, scores, 10, average=False)
        low, high = user_interval(per_user)
        quality = (f"AUC {auc_score(test, scores):.4f}, p@10 {np.nanmean(per_user):.4f} "
                   f"({low:.3f}-{high:.3f})")  # fmt: skip
        rows.append(("cold items (20%)", name, quality, f"{seconds:.3f}", "", ""))
    rows.append(("cold items (20%)", "no features: every cold item scored alike",
                 "AUC 0.5000, p@10 undefined (ties)", "", "", ""))  # fmt: skip
    train, test = load_movielens_split(folder, "ua")
    train, test = implicit_positives(train), implicit_positives(test)
    for name, (run, with_users) in systems.items():
        result = try_run(run, train, U if with_users else None, I)
        if isinstance(result, str):
            rows.append(("warm ua, features", name, result, "", "", ""))
            continue
        recommended, seconds = result
        per_user = precision_at_k(test, recommended, 10, average=False)
        low, high = user_interval(per_user)
        quality = f"p@10 {np.nanmean(per_user):.4f} ({low:.3f}-{high:.3f})"
        rows.append(("warm ua, features", name, quality, f"{seconds:.3f}", "", ""))
    return rows


def history_validation(folder, seeds=(0, 1)):
    """Rows of ``--history-validation``: WARP with side features, user histories on or off,
    judged on validation splits cut from the training data alone (the test sets unread):
    warm, 10% of ``ua.base``'s positives (seed 1) held out; cold, 20% of the cold-start
    split's training items (seed 1) held out again and scored from their features. Means
    over the random states ``seeds``."""
    from sparseopt.metrics import auc_score

    U, I = side_features(folder)
    train = implicit_positives(load_movielens_split(folder, "ua")[0]).tocoo()
    held = np.random.default_rng(1).random(train.nnz) < 0.1
    fit, valid = (sp.csr_matrix((train.data[m], (train.row[m], train.col[m])), train.shape)
                  for m in (~held, held))  # fmt: skip
    cold_train, _, warm, _ = cold_start_split(folder)
    n_users, n_items = cold_train.shape
    cold = np.sort(np.random.default_rng(1).choice(n_items, int(0.2 * n_items), False))
    kept = np.setdiff1d(np.arange(n_items), cold)
    rows = []
    for history in (True, False):
        name = f"sparseopt MF WARP, user and item features, user_history={history}"
        warm_p, cold_auc, cold_p = [], [], []
        for seed in seeds:
            mf = MatrixFactorization(random_state=seed, user_history=history, **SIDE_PARAMS)
            mf.fit(fit, user_features=U, item_features=I)
            warm_p.append(precision_at_k(valid, mf.recommend(np.arange(n_users), n=10), 10))
            mf.fit(cold_train[:, kept], user_features=U, item_features=I[warm][kept])
            pairs = np.repeat(np.arange(n_users), cold.size), np.tile(np.arange(cold.size),
                                                                     n_users)  # fmt: skip
            scores = mf.predict(*pairs, item_features=I[warm][cold]).reshape(n_users, -1)
            cold_auc.append(auc_score(cold_train[:, cold], scores))
            cold_p.append(precision_at_k(cold_train[:, cold], scores, 10))
        rows.append(("validation, warm", name, f"p@10 {np.mean(warm_p):.4f}", "", "", ""))
        quality = f"AUC {np.mean(cold_auc):.4f}, p@10 {np.mean(cold_p):.4f}"
        rows.append(("validation, cold items", name, quality, "", "", ""))
    return rows


def user_interval(per_user, resamples=2000, seed=0):
    """95% bootstrap interval of the mean over the users with test items."""
    values = per_user[~np.isnan(per_user)]
    rows = np.random.default_rng(seed).integers(0, values.size, (resamples, values.size))
    return np.percentile(values[rows].mean(axis=1), [2.5, 97.5])


def try_run(run, *args):
    try:
        return run(*args)
    except ImportError as exc:
        return f"skipped ({exc.name} not installed)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
    parser.add_argument("--data", default=str(default))
    parser.add_argument("--cold-start", action="store_true",
                        help="only the side-feature cases (issue 27)")  # fmt: skip
    parser.add_argument("--history-validation", action="store_true",
                        help="only user histories with features, on validation splits")  # fmt: skip
    args = parser.parse_args()
    if args.cold_start or args.history_validation:
        print_table(cold_start(args.data) if args.cold_start else
                    history_validation(args.data))  # fmt: skip
        return

    folds = [load_movielens_split(args.data, f) for f in FOLDS]
    train, test = load_movielens_split(args.data, "ua")
    train, test = implicit_positives(train), implicit_positives(test)
    # warm-up: every configuration timed below compiles (or loads) its kernels here (each
    # loss and factor state has kernels of its own; sparseopt before 2026-12-03 had a
    # separate kernel for threads)
    for params in ({}, {"n_jobs": 2}, {"factor_state": "element"}):
        MatrixFactorization(max_iter=1, **params).fit(folds[0][0])
    for params in ({"loss": "warp"}, {"loss": "warp", "n_jobs": 2},
                   {"loss": "warp", "user_history": False}, {"loss": "bpr"},
                   {"loss": "logistic"}):  # fmt: skip
        MatrixFactorization(max_iter=1, **params).fit(train)

    rows = []
    explicit = {
        "Surprise SVD (100 factors, 20 epochs)": surprise_svd,
        "sparseopt MF squared, defaults (32 factors, per-row AdaGrad, rate 0.08, 5 epochs)": (
            sparseopt_explicit()
        ),
        "sparseopt MF squared, defaults, n_jobs=2 (Hogwild)": sparseopt_explicit(n_jobs=2),
        "sparseopt MF squared, previous defaults (per-element AdaGrad, rate 0.05, init_std "
        "0.05, 15 epochs)": sparseopt_explicit(
            factor_state="element", learning_rate=0.05, init_std=0.05, max_iter=15
        ),
    }
    surprise_fit = None
    for name, run in explicit.items():
        results = [try_run(run, tr, te) for tr, te in folds]
        if isinstance(results[0], str):
            rows.append(("explicit u1-u5", name, results[0], "", "", ""))
            continue
        fit = np.mean([s for _, s in results])
        surprise_fit = surprise_fit or fit  # the first row, when Surprise is installed
        per_fold = " ".join(f"{r:.3f}" for r, _ in results)
        rows.append(
            (
                "explicit u1-u5",
                name,
                f"RMSE {np.mean([r for r, _ in results]):.4f}",
                f"{fit:.3f}",
                f"{fit / surprise_fit:.2f}",
                per_fold,
            )
        )
    implicit = {
        "sparseopt MF WARP, defaults (user histories, rate 0.04, 20 epochs)": (
            sparseopt_implicit(loss="warp")
        ),
        "sparseopt MF WARP, defaults, mean of random states 0-4": sparseopt_implicit(
            range(5), loss="warp"
        ),
        "sparseopt MF WARP, defaults, n_jobs=2 (Hogwild)": sparseopt_implicit(
            loss="warp", n_jobs=2
        ),
        "sparseopt MF WARP without user histories (previous defaults: rate 0.07, 15 epochs)": (
            sparseopt_implicit(loss="warp", user_history=False, learning_rate=0.07, max_iter=15)
        ),
        "sparseopt MF BPR, defaults": sparseopt_implicit(loss="bpr"),
        "sparseopt MF logistic, 3 negatives": sparseopt_implicit(loss="logistic", n_negatives=3),
        "LightFM WARP (30 factors, 30 epochs)": lightfm("warp"),
        "LightFM BPR (30 factors, 30 epochs)": lightfm("bpr"),
        "implicit BPR (32 factors, 100 iterations)": implicit_model("bpr"),
        "implicit ALS (32 factors, 15 iterations)": implicit_model("als"),
    }
    for name, run in implicit.items():
        result = try_run(run, train, test)
        if isinstance(result, str):
            rows.append(("implicit ua", name, result, "", "", ""))
        else:
            per_user, seconds = result
            low, high = user_interval(per_user)
            quality = f"p@10 {np.nanmean(per_user):.4f} ({low:.3f}-{high:.3f})"
            rows.append(("implicit ua", name, quality, f"{seconds:.3f}", "", ""))
    print_table(rows)


def print_table(rows):
    print("| task | system | quality | fit s | fit / Surprise SVD | per fold |")
    print("| --- | --- | --- | ---: | ---: | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
