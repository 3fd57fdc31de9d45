"""The ``sparseopt`` command for matrix factorization: ratings files in, raw ids out.

    sparseopt train RATINGS --model mf [--loss squared|logistic|bpr|warp] [--validation FILE]
    sparseopt predict MODEL PAIRS --out FILE
    sparseopt recommend MODEL --users ID[,ID...] | --users-file FILE [--n 10] [--out FILE]
    sparseopt evaluate MODEL RATINGS [--json]
    sparseopt inspect MODEL

The files these commands read and write: :mod:`sparseopt.cli._ratings_files`.

Training
--------
Epochs through the estimators' training protocol (:mod:`sparseopt.estimators._base`), the
calls that ``MatrixFactorization.fit`` makes: ``random_state`` set by ``--seed``, the same
computation as the estimator, so the same model for the same settings. ``--epochs N`` runs N
epochs; ``auto`` runs the estimator's default for the loss, or, with ``--validation``, epochs
until the validation metric (RMSE for the squared loss; NDCG at 10 of the recommendations,
training items excluded, for the implicit losses) has not improved for ``PATIENCE`` epochs, at
most ``AUTO_MAX_EPOCHS``, and keeps the best epoch's model, as for the click models. Each epoch
prints one line (mean loss, rate without compiling, validation). The run folder receives
``model.npz`` and ``metrics.json``; there are no checkpoints (a ratings file is read whole and
trains in seconds to minutes), and ``--resume`` is refused. ``--out`` is checked and locked
(as click runs lock theirs) before the file is read, and a folder holding a click model is
refused: a run folder holds one model. Divergence covers the optimizer's state (an
accumulator that a rating of 1e30 overflows), and the model file is loaded back, as any
command would load it, before it takes the place of ``model.npz``.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

from .. import _runs
from .._epochs import Stopper, run_epochs
from .._report import fit_terminal, format_ratings_metrics
from .._runs import PipelineError
from ..datasets._cache import atomic_write
from ..pipeline import AUTO_MAX_EPOCHS, PATIENCE
from ._ratings_files import (
    KIND,
    RatingsModel,
    _header_note,
    evaluate_ratings,
    is_int64,
    load,
    ratings_matrix,
    read_ratings,
    save_checked,
)
from ._side_features import scoring_features

LOSSES = ("squared", "logistic", "bpr", "warp")
# the options each mf command takes; any other one given is refused, the click models'
# options (and any added to them later) included
_TAKES = {
    "train": {"model", "out", "validation", "epochs", "sep", "skip_bad_lines", "optimizer",
              "learning_rate", "loss", "min_rating", "n_jobs", "set", "seed", "progress",
              "user_features", "item_features"},
    "predict": {"out", "sep", "skip_bad_lines", "user_features", "item_features"},
    "evaluate": {"json", "sep", "skip_bad_lines", "user_features", "item_features"},
}  # fmt: skip
_READS = "it reads user,item[,rating] lines without hashing (--sep and --skip-bad-lines apply)"
_WHY = {  # why an option does not apply, where more can be said than _READS
    "chunk_size": "ratings are read whole",
    "parse_threads": "pyarrow parses ratings with its own threads",
    "alpha": "use --set alpha_factors=... and --set alpha_biases=...",
    "l1": "matrix factorization has no L1 penalty",
    "batch_size": "every rating is one optimizer step",
    "checkpoint_every": "mf trains without checkpoints",
    "resume": "mf trains without checkpoints: train again",
    "no_cache": "there is no chunk cache for ratings",
    "cache_dir": "there is no chunk cache for ratings",
    "keep_tokens": "ratings are not hashed",
    "report": "the report draws click-model curves",
}
# estimator parameters the command sets itself
_OWN_PARAMS = {"max_iter": "--epochs", "random_state": "--seed", "loss": "--loss"}


# --- commands ------------------------------------------------------------------------------
def _refuse(args, command: str) -> None:
    """Refuse the options given (``args.given``) that this mf command does not take;
    ``command``: what the message says they do not apply to."""
    for name, flag in args.given.items():
        if name not in _TAKES[args.command]:
            raise PipelineError(f"{flag} does not apply to {command}: {_WHY.get(name, _READS)}")


def _params(args, loss: str) -> dict:
    params = dict(args.set or [])
    for name, flag in _OWN_PARAMS.items():
        if name in params:
            raise PipelineError(f"--set {name} is set by {flag} on the command line")
    params.update(loss=loss, random_state=args.seed)
    params["max_iter"] = args.epochs
    for name in ("optimizer", "learning_rate", "n_jobs"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    return params


def train(args) -> int:
    """``sparseopt train RATINGS --model mf``: one fit, the model saved with its id maps."""
    import sparseopt

    _refuse(args, "--model mf")
    if args.data is None:
        raise PipelineError("--model mf needs a ratings file: sparseopt train RATINGS --model mf")
    loss = args.loss or "squared"
    if args.min_rating is not None and loss == "squared":
        raise PipelineError("--min-rating applies to the implicit losses (logistic, bpr, warp)")
    params = _params(args, loss)
    try:
        model = sparseopt.MatrixFactorization(**params)
    except TypeError as exc:
        raise PipelineError(f"bad model parameter for MatrixFactorization: {exc}") from None
    out = Path(args.out)
    lock = _runs.lock_run_folder(out)  # before reading: a bad --out fails before any training
    try:
        _runs.check_model_kind(out, KIND)
        _runs.remove_leftovers(out, _runs.RATINGS_RUNS)  # under the lock: no writer runs
        return _train(args, model, params, loss, out)
    finally:
        if lock is not None:
            lock.close()


def _train(args, model, params, loss, out) -> int:
    duplicates = "refuse" if loss == "squared" else "sum"
    X, users, items, n_bad = ratings_matrix(
        args.data, sep=args.sep, skip_bad_lines=args.skip_bad_lines, duplicates=duplicates
    )
    if args.min_rating is not None:
        from ..datasets import implicit_positives

        X = implicit_positives(X, threshold=args.min_rating)
    valid = None
    if args.validation is not None:  # read before training: a bad file fails early
        valid = read_ratings(
            args.validation, sep=args.sep, id_type=users.kind, skip_bad_lines=args.skip_bad_lines
        )
    side = {"user": None, "item": None}
    vocabularies = None
    if args.user_features is not None or args.item_features is not None:
        from ._side_features import training_features

        vocabularies = {"user": None, "item": None}
        for name, path, ids in (("user", args.user_features, users),
                                ("item", args.item_features, items)):  # fmt: skip
            if path is not None:
                side[name], vocabularies[name] = training_features(path, ids, name)
    what = "ratings" if loss == "squared" else "interactions"
    print(
        f"training mf ({loss}) on {args.data}: {len(users):,} users x {len(items):,} items, "
        f"{X.nnz:,} {what}{_header_note(args.data, args.sep)}"
    )
    started = time.perf_counter()
    model, history, kept = _epochs(model, X, args.epochs, users, items, args.min_rating, valid,
                                   side)  # fmt: skip
    seconds = time.perf_counter() - started
    path = out / _runs.MODEL
    save_checked(model, path, users, items, args.min_rating, int(X.nnz), vocabularies)
    summary = {
        "model": str(path),
        "model_type": KIND,
        "loss": loss,
        "params": {k: v for k, v in params.items() if k != "verbose"},
        "data_file": str(Path(args.data).resolve()),
        "validation_file": None if valid is None else str(Path(args.validation).resolve()),
        "n_users": len(users),
        "n_items": len(items),
        "n_ratings": int(X.nnz),
        "n_bad_lines": n_bad,
        "epochs": len(history),
        "kept_epoch": kept,
        "history": history,
        "seconds": seconds,
        "validation": history[kept - 1].get("validation"),
    }
    if valid is not None:
        summary["validation"]["n_bad_lines"] = valid.n_bad_lines
    _runs.write_json(out / _runs.METRICS, summary)
    print(
        fit_terminal(
            f"done: {X.nnz:,} {what} over {len(history)} epoch"
            f"{'' if len(history) == 1 else 's'} in {seconds:.1f} s (compiling included), "
            f"epoch {kept} kept, {n_bad} bad lines skipped; model saved to {path}"
        )
    )
    if valid is not None:
        print("validation: " + format_ratings_metrics(summary["validation"]))
    return 0


def _epochs(model, X, epochs, users, items, min_rating, valid, side=None):
    """Train ``model`` on ``X`` epoch by epoch (the calls of its ``fit``), each epoch
    scored on ``valid`` if given; returns (the model kept, the epochs' records, the kept
    epoch). ``side``: the users' and items' side features (``{"user": ..., "item": ...}``)."""
    from .._jit import announce_compile, compile_seconds

    side = side or {}
    training = model.start_training(X, user_features=side.get("user"),
                                     item_features=side.get("item"))  # fmt: skip
    rows = training.rows(X)
    stopping = epochs == "auto" and valid is not None
    stopper = Stopper(0.0, PATIENCE, tie_is_stale=True) if stopping else None
    n_epochs = AUTO_MAX_EPOCHS if stopping else training.max_epochs()
    unit = "ratings" if model.loss == "squared" else "interactions"
    history, curve = [], []

    def train_epoch(epoch):
        start, compiling = time.perf_counter(), compile_seconds()
        loss = training.epoch(rows, training.order(rows, training.rng))
        curve.append(loss / max(X.nnz, 1))
        training.catch_up()
        training.finish(curve, rows=rows)  # checks the state, as fit does
        seconds = time.perf_counter() - start - (compile_seconds() - compiling)
        entry = {"epoch": epoch + 1, "train_loss": curve[-1]}
        line = (
            f"epoch {epoch + 1}/{n_epochs}: {X.nnz / max(seconds, 1e-9):,.0f} {unit}/s, "
            f"train loss {curve[-1]:.4f}"
        )
        score = None
        if valid is not None:
            rm = RatingsModel(model, users, items, min_rating, int(X.nnz))
            entry["validation"] = metrics = evaluate_ratings(rm, valid)
            line += "  |  validation " + format_ratings_metrics(metrics)
            # the stopper wants a loss: RMSE, or minus NDCG for the implicit losses
            score = metrics["rmse"] if model.loss == "squared" else -metrics["ndcg@10"]
        print(fit_terminal(line))
        history.append(entry)
        return score

    what = f"MatrixFactorization ({model.loss}, {type(training.optimizer).__name__})"
    with announce_compile(what, print):
        run_epochs(train_epoch, n_epochs, stopper, snapshot=lambda: copy.deepcopy(model))
    if stopper is None:
        return model, history, len(history)
    model = stopper.best_state
    model.loss_curve_ = curve[: stopper.best_epoch]
    return model, history, stopper.best_epoch


def _model_and_pairs(args):
    """The mf model of ``args.model`` and the pairs of ``args.data``, read with its ids."""
    _refuse(args, "an mf model")
    rm = load(args.model)
    cols = read_ratings(
        args.data, sep=args.sep, id_type=rm.users.kind, skip_bad_lines=args.skip_bad_lines
    )
    return rm, cols


def predict(args) -> int:
    """``sparseopt predict MODEL PAIRS --out FILE`` for an mf model: one score per line."""
    rm, cols = _model_and_pairs(args)
    if len(cols) == 0:
        raise PipelineError(f"{args.data} has no user,item pairs")
    scores, unknown = rm.score(cols.users, cols.items, *scoring_features(args, rm))
    _write(args.out, "".join(f"{v:.6g}\n" for v in scores))
    print(
        f"wrote {len(cols):,} predictions to {args.out} ({unknown:,} pairs with an unknown id "
        f"scored by the biases alone, {cols.n_bad_lines} bad lines skipped)"
        + _header_note(args.data, args.sep)
    )
    return 0


def evaluate(args) -> int:
    """``sparseopt evaluate MODEL RATINGS`` for an mf model."""
    rm, cols = _model_and_pairs(args)
    features = scoring_features(args, rm)
    if rm.loss != "squared" and features != (None, None):
        raise PipelineError(
            "--user-features and --item-features score the ratings of unknown ids (loss "
            "squared); the ranking metrics of an implicit model rank its known items for its "
            "known users: leave them out (sparseopt recommend takes them)"
        )
    result = dict(evaluate_ratings(rm, cols, features), n_bad_lines=cols.n_bad_lines)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.data}: {format_ratings_metrics(result)}, {cols.n_bad_lines} bad lines skipped"
            + _header_note(args.data, args.sep)
        )
    return 0


def _user_list(args, kind: str) -> np.ndarray:
    if (args.users is None) == (args.users_file is None):
        raise PipelineError("give the users with --users ID[,ID...] or --users-file FILE")
    if args.users is not None:
        raw = [t.strip() for t in args.users.split(",") if t.strip()]
        where = "--users"
    else:
        path = Path(args.users_file)
        if not path.is_file():
            raise PipelineError(f"{path}: no such file")
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PipelineError(f"{path} is not UTF-8 text ({exc.reason})") from None
        raw = [line.strip() for line in text.splitlines() if line.strip()]
        where = str(path)
    if not raw:
        raise PipelineError(f"{where} names no user")
    if kind == "str":
        return np.array(raw, dtype=object)
    for t in raw:
        if not is_int64(t):
            raise PipelineError(
                f"{where}: user id {t[:40]!r} is not a 64-bit integer, as the model's ids are"
            )
    return np.array([int(t) for t in raw], dtype=np.int64)


def recommend(args) -> int:
    """``sparseopt recommend MODEL --users ...`` for an mf model: CSV lines
    user,rank,item,score."""
    rm = load(args.model)
    users = _user_list(args, rm.users.kind)
    features = scoring_features(args, rm)
    top, unknown, candidates = rm.recommend(users, args.n, not args.include_seen, *features)
    n = top.shape[1]  # no more than the candidates
    rows = np.repeat(np.arange(users.size), n).reshape(top.shape)
    ranks = np.tile(np.arange(1, n + 1), (users.size, 1))
    valid = top >= 0
    items = candidates[top[valid]]
    scores, _ = rm.score(users[rows[valid]], items, *features)
    lines = ["user,rank,item,score"] + [
        f"{u},{r},{i},{s:.6g}"
        for u, r, i, s in zip(users[rows[valid]], ranks[valid], items, scores, strict=True)
    ]
    text = "\n".join(lines) + "\n"
    note = f"{unknown} unknown users given the items of largest bias" if unknown else ""
    if args.out is None:
        print(text, end="")
        if note:
            print(f"sparseopt: {note}", file=sys.stderr)
    else:
        _write(args.out, text)
        print(f"wrote {int(valid.sum()):,} recommendations for {users.size:,} users to "
              f"{args.out}" + (f" ({note})" if note else ""))  # fmt: skip
    return 0


def inspect(args) -> int:
    """A summary of an mf model: sizes, settings and the items of largest bias."""
    if args.field is not None or args.tokens is not None:
        raise PipelineError("--field and --tokens name hashed features; an mf model has none")
    rm = load(args.model)
    m = rm.model
    summary = {
        "model": "MatrixFactorization",
        "loss": rm.loss,
        "n_components": m.get_params()["n_components"],
        "optimizer": type(m.optimizer_).__name__,
        "n_users": int(m.n_users_),
        "n_items": int(m.n_items_),
        "n_interactions": rm.n_interactions,
        "global_mean": float(m.global_mean_),
        "rating_range": [float(v) for v in m.rating_range_],
        "epochs": int(m.n_iter_),
    }
    bias = m.item_biases_.astype(np.float64)
    top = np.lexsort((np.arange(bias.size), -bias))[: args.top]
    raw = rm.items.ids[top].tolist()
    table = [{"item": r, "bias": float(bias[c])} for r, c in zip(raw, top, strict=True)]
    if args.json:
        print(json.dumps(dict(summary, top_items=table)))
        return 0
    n = rm.n_interactions
    print(
        f"MatrixFactorization ({summary['loss']} loss, {summary['n_components']} components, "
        f"{summary['optimizer']}, {summary['epochs']} epochs): {summary['n_users']:,} users x "
        f"{summary['n_items']:,} items" + ("" if n is None else f", {n:,} interactions")
    )
    if rm.loss == "squared":
        lo, hi = summary["rating_range"]
        print(f"global mean rating {summary['global_mean']:.4f}, ratings from {lo:g} to {hi:g}")
    print(f"items of largest bias (top {len(table)}):")
    print(f"{'item':>12}  {'bias':>8}")
    for row in table:
        print(f"{row['item']!s:>12}  {row['bias']:>8.4f}")
    return 0


def _write(path, text: str) -> None:
    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"--out {path} is a folder: give the file to write")
    try:
        if path.parent != Path(""):
            path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(text.encode()))
    except OSError as exc:
        raise PipelineError(f"--out {path} cannot be written ({exc.strerror or exc})") from None
