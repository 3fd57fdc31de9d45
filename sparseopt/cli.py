"""The ``sparseopt`` command: train models on files, predict, recommend, evaluate, inspect.

    sparseopt train [DATA] --format criteo --model lr --out DIR --validation FILE
    sparseopt train RATINGS --model mf [--loss warp] --out DIR --validation FILE
    sparseopt predict MODEL DATA --out FILE
    sparseopt recommend MODEL --users ID[,ID...] [--n 10] [--out FILE]
    sparseopt evaluate MODEL DATA [--json]
    sparseopt inspect MODEL [--field NAME] [--top N] [--json]
    sparseopt cache [--clear]

With no DATA, ``train`` fits the synthetic Criteo-format sample shipped with the package and
reports its validation metrics. ``--model mf`` trains MatrixFactorization on user,item[,rating]
files (see sparseopt/_ratings_cli.py); predict, evaluate and inspect take either kind of
model. Errors in the input (a missing file, a malformed line, options
that do not match the model) print one line to stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from . import __version__
from . import _ratings_cli as ratings
from . import pipeline as P
from .datasets._cache import chunk_sets, clear_chunk_sets, default_data_home, older_chunk_sets
from .estimators._linear import DEFAULT_LEARNING_RATE
from .inspect import load_tokens, top_features

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
CHUNK_SIZE = 100_000
SAMPLE_CHUNK_SIZE = 2_000  # the sample's 20,000 rows in 10 chunks: 10 points per epoch


def _csv_list(text):
    return [t for t in text.split(",") if t]


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _epochs(text):
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        message = f"expected 'auto' or a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def _key_value(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _add_data_options(parser, defaults: bool):
    """Options that define how a file becomes columns; None means "as the model says"."""
    g = parser.add_argument_group("data")
    g.add_argument(
        "--format",
        choices=P.FORMATS,
        default=None,  # train: criteo, set in train() so that --model mf can refuse it
        help="file format (default: criteo for train; the model's otherwise)",
    )
    g.add_argument(
        "--n-bits",
        type=int,
        default=None,  # train: 20, set in train()
        help="hash (field, value) pairs into 2**N columns (default: 20)",
    )
    g.add_argument(
        "--field-aware",
        action="store_true",
        default=None,
        help="give each field its own slice of the columns (needed by ffm)",
    )
    g.add_argument(
        "--label", help="csv: the label column (default: none; --format csv needs it)"
    )
    g.add_argument(
        "--features",
        type=_csv_list,
        help="csv: feature columns, comma separated (default: every column but the label and "
        "--exclude)",
    )
    g.add_argument(
        "--numeric",
        type=_csv_list,
        help="csv: feature columns kept as numbers (default: none, every value hashed as text)",
    )
    g.add_argument(
        "--exclude",
        type=_csv_list,
        help="csv: columns left out when --features is not given, an id... (default: none)",
    )
    g.add_argument("--sep", help="column separator (default: tab for criteo, comma for csv)")
    g.add_argument(
        "--n-features",
        type=int,
        help="libsvm: number of columns (default: one more than the largest index in the file)",
    )
    g.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=None if defaults else CHUNK_SIZE,
        help=f"rows per chunk (default: {CHUNK_SIZE}"
        + (
            f"; {SAMPLE_CHUNK_SIZE} for the packaged sample, so that its report draws the "
            "loss within the epoch)"
            if defaults
            else ")"
        ),
    )
    g.add_argument(
        "--parse-threads",
        type=int,
        default=None,
        help="threads parsing the text (default: the cores but one, 1 or 2)",
    )
    g.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip malformed lines and count them, instead of stopping",
    )


def _data_options(args) -> dict:
    return {
        name: getattr(args, name)
        for name in (
            "format",
            "n_bits",
            "field_aware",
            "label",
            "features",
            "numeric",
            "exclude",
            "sep",
            "n_features",
        )
    }


def _model_params(args) -> dict:
    params = {
        "optimizer": args.optimizer,
        "learning_rate": args.learning_rate,
        "alpha": args.alpha,
        "l1": args.l1,
        "batch_size": args.batch_size,
        "n_jobs": args.n_jobs,
    }
    params = {k: v for k, v in params.items() if v is not None}
    params.update(dict(args.set or []))
    return params


def train(args) -> int:
    """Train a model on a file (default: the packaged sample) and save it."""
    if args.model == ratings.KIND:
        return ratings.train(args)
    for flag, value in (("--loss", args.loss), ("--min-rating", args.min_rating)):
        if value is not None:
            raise P.PipelineError(f"{flag} applies to --model mf; click models learn logloss")
    args.format = args.format or "criteo"
    args.n_bits = 20 if args.n_bits is None else args.n_bits
    if args.report:
        P.check_plotting()
    if args.keep_tokens and args.format == "libsvm":
        raise P.PipelineError("--keep-tokens needs a hashed format (criteo, avazu, csv)")
    data, validation = args.data, args.validation
    chunk_size = args.chunk_size or (CHUNK_SIZE if data is not None else SAMPLE_CHUNK_SIZE)
    if data is None:
        if args.format != "criteo":
            raise P.PipelineError("the packaged sample is in criteo format; give a DATA file")
        data, sample_valid = P.default_data()
        validation = validation or sample_valid
    options = {k: v for k, v in _data_options(args).items() if v is not None}
    config = P.TrainConfig(
        data=str(Path(data).resolve()),
        validation=None if validation is None else str(Path(validation).resolve()),
        model=args.model,
        spec={**options, "field_aware": bool(args.field_aware)},
        params=_model_params(args),
        chunk_size=chunk_size,
        skip_bad_lines=args.skip_bad_lines,
        seed=args.seed,
    )
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    trainer = P.Trainer(
        config,
        args.out,
        epochs=args.epochs,
        checkpoint_every=10 if args.checkpoint_every is None else args.checkpoint_every,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        parse_threads=args.parse_threads,
        progress=progress,
        after_chunk=getattr(args, "after_chunk", None),
    )
    # counted before training: a line the counting refuses stops the run before any model
    tokens = (
        P.count_tokens(trainer.spec, data, args.skip_bad_lines, args.max_tokens)
        if args.keep_tokens
        else None
    )
    trainer.start(resume=args.resume)
    print(f"training {args.model} on {data} ({trainer.spec.describe()})")
    try:
        with P.sigterm_as_interrupt():
            summary = trainer.run()
    except KeyboardInterrupt:
        print(
            f"sparseopt: interrupted; continue from the last checkpoint with "
            f"`sparseopt train ... --out {args.out} --resume`",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    rate = summary["rows_per_second"]
    kept, best = summary["kept_epoch"], summary["best_epoch"]
    print(
        P.fit_terminal(
            f"done: {summary['rows_seen']:,} rows over {summary['epochs']} epochs"
            + (f" ({rate:,.0f} rows/s)" if rate else "")
            + f", {summary['n_bad_lines']} bad lines skipped; model of epoch "
            + f"{kept} saved to {summary['model']}: {summary['kept_because']}"
            + (f"; best validation logloss at epoch {best}" if best not in (None, kept) else "")
        )
    )
    if summary["validation"]:
        print("validation: " + P.format_metrics(summary["validation"]))
    if tokens is not None:
        path = P.save_tokens(tokens, args.out, summary["model"])
        print(f"token counts: {path} (see `sparseopt inspect`)")
    if args.report:
        P.write_report(summary, args.report)
        print(f"report: {args.report}")
    return 0


def predict(args) -> int:
    """Write the click probability of every row of DATA (mf: the score of every user,item
    pair) to a file, one per line."""
    if ratings.is_ratings_model(args.model):
        return ratings.predict(args)
    model, spec = P.load_model(args.model)
    reader = P.open_data(
        model, spec, args.data, _data_options(args), args.chunk_size, args.skip_bad_lines
    )
    n = P.predict_file(model, reader.chunks(args.parse_threads), args.out)
    print(
        f"wrote {n:,} predictions to {args.out} ({reader.stats['n_bad_lines']} bad lines skipped)"
    )
    return 0


def evaluate(args) -> int:
    """Print the model's logloss, AUC and calibration on DATA (mf: RMSE and MAE, or
    precision, recall and NDCG at 10 for the implicit losses)."""
    if ratings.is_ratings_model(args.model):
        return ratings.evaluate(args)
    model, spec = P.load_model(args.model)
    reader = P.open_data(
        model, spec, args.data, _data_options(args), args.chunk_size, args.skip_bad_lines
    )
    metrics = P.score(model, reader.chunks(args.parse_threads))
    result = dict(metrics.result(), n_bad_lines=reader.stats["n_bad_lines"])
    if args.json:
        print(json.dumps(dict(result, calibration=metrics.calibration())))
    else:
        print(
            f"{args.data}: {result['n_rows']:,} rows, "
            + P.format_metrics(result)
            + f", {result['n_bad_lines']} bad lines skipped"
        )
    return 0


def inspect(args) -> int:
    """Print the strongest features of a model, by name with the token counts of --keep-tokens
    (mf: a summary and the items of largest bias)."""
    if ratings.is_ratings_model(args.model):
        return ratings.inspect(args)
    model, _ = P.load_model(args.model)
    tokens_path = Path(args.tokens or Path(args.model).parent / P.TOKENS_FILE)
    if args.tokens is None and not tokens_path.is_file():
        return _inspect_columns(model, args)
    try:
        tokens = load_tokens(tokens_path)
    except FileNotFoundError:
        raise P.PipelineError(f"{tokens_path}: no such token file") from None
    except ValueError as exc:
        raise P.PipelineError(str(exc)) from None
    if tokens.model_sha256 not in (None, P.file_sha256(args.model)):
        stale = f"{tokens_path} holds the token counts of another model than {args.model}"
        if args.tokens is not None:
            raise P.PipelineError(f"{stale}: give the token file saved with this model")
        why = f"{stale} (it was trained again since), so columns have no names"
        return _inspect_columns(model, args, why)
    try:
        table = top_features(model, tokens, n=args.top, field=args.field)
    except ImportError:
        raise P.PipelineError("sparseopt inspect needs pandas: pip install pandas") from None
    if args.json:
        print(table.to_json(orient="records"))
    else:
        print(table.drop(columns="column").to_string(index=False, float_format="{:.4f}".format))
    return 0


def _inspect_columns(model, args, why=None) -> int:
    """Without token counts: the hashed columns with the largest weights, unnamed (``why``:
    the note, when a token file is there but not this model's)."""
    if args.field is not None:
        raise P.PipelineError(
            f"--field needs the token counts beside the model ({P.TOKENS_FILE}): train with "
            "--keep-tokens"
        )
    weights = np.asarray(model.coef_)[0]
    top = np.argsort(-np.abs(weights), kind="stable")[: args.top]
    if args.json:
        print(json.dumps([{"column": int(c), "weight": float(weights[c])} for c in top]))
    else:
        print(f"{'column':>10}  {'weight':>9}")
        for c in top:
            print(f"{c:>10}  {weights[c]:>9.4f}")
    why = why or f"no token counts beside {args.model}, so columns have no names"
    print(
        f"sparseopt: {why}: train with --keep-tokens to save them ({P.TOKENS_FILE})",
        file=sys.stderr,
    )
    return 0


def cache(args) -> int:
    """Show the parsed-chunk cache (where, how large), or --clear it (the chunk sets that no
    run is reading or writing; only the files sparseopt wrote there)."""
    root = Path(args.cache_dir) if args.cache_dir else default_data_home() / "chunks"
    if root.exists() and not root.is_dir():
        raise P.PipelineError(f"--cache-dir {root} is a file, not the cache's folder")
    if args.clear:
        removed, in_use = clear_chunk_sets(root)
        freed = sum(entry["bytes"] for entry in removed)
        print(f"removed {_sets(len(removed))} ({_size(freed)}) from {root}")
        for entry in in_use:
            print(
                f"kept {entry['path'].name}, in use by {'; '.join(entry['holders'])}: clear "
                "again once that run has ended"
            )
        _older_sets(root)
        return 0
    sets = chunk_sets(root)
    incomplete = sum(not entry["complete"] for entry in sets)
    print(f"chunk cache: {root}")
    print(
        f"{_sets(len(sets))}, {_size(sum(e['bytes'] for e in sets))}"
        + (f" ({incomplete} incomplete: a pass stopped early, or is writing)" if incomplete else "")
    )
    if args.cache_dir is None and not os.environ.get("SPARSEOPT_DATA"):
        print("(the default place, as SPARSEOPT_DATA is unset; set it to move the cache)")
    _older_sets(root)
    return 0


def _older_sets(root) -> None:
    older = older_chunk_sets(root)
    if older:
        print(
            f"{len(older)} folder{'s look' if len(older) > 1 else ' looks'} like the chunk sets "
            f"of an older sparseopt, without the marker of a set ({', '.join(older[:3])}"
            f"{'...' if len(older) > 3 else ''}): not counted nor cleared; delete them by hand"
        )


def _sets(n) -> str:
    return f"{n} cached chunk set" + ("" if n == 1 else "s")


def _size(n_bytes) -> str:
    units = ["bytes", "KB", "MB", "GB", "TB"]
    k = 0
    while n_bytes >= 1000 and k < len(units) - 1:
        n_bytes, k = n_bytes / 1000, k + 1
    return f"{n_bytes} bytes" if k == 0 else f"{n_bytes:.1f} {units[k]}"


def _plain(text: str) -> str:
    """Help text without the reStructuredText markup of the docstrings it comes from."""
    return text.replace("``", "")


class _CommandsFormatter(argparse.HelpFormatter):
    """Help that keeps each command's description beside its name: before Python 3.13,
    argparse measures command names without their indent, so "recommend" would push its
    description to the next line."""

    def __init__(self, prog):
        super().__init__(prog)
        self._action_max_length = len("    recommend")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparseopt",
        description=_plain(__doc__.split("\n\n")[0]),
        formatter_class=_CommandsFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # not required: a bare `sparseopt` prints the whole help (see main), not only an error
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    t = commands.add_parser("train", help=train.__doc__, description=train.__doc__)
    t.add_argument("data", nargs="?", help="training file (default: the packaged sample)")
    t.add_argument(
        "--model",
        choices=sorted(P.MODELS),
        default="lr",
        help="lr (logistic regression), fm or ffm (factorization machines) on click data, "
        "mf (matrix factorization) on user,item[,rating] files (default: lr)",
    )
    t.add_argument("--out", default="sparseopt-run", help="run folder (default: sparseopt-run)")
    t.add_argument(
        "--validation",
        help="file scored after every epoch; with --epochs auto it decides when to stop "
        "(default: none; the sample's validation file when DATA is omitted)",
    )
    t.add_argument(
        "--epochs",
        type=_epochs,
        default="auto",
        metavar="{auto,N}",
        help=f"passes over the data (default: auto). auto with --validation: up to "
        f"{P.AUTO_MAX_EPOCHS} epochs, stopping when the validation logloss has not improved "
        f"for {P.PATIENCE} epochs, and the best epoch's model is saved; auto without "
        "--validation: one epoch (a file read chunk by chunk cannot hold rows out cheaply, "
        "and one pass is what click logs want). N: N epochs, the last one saved",
    )
    t.add_argument(
        "--report", help="write learning curves and calibration to this PNG (default: none)"
    )
    _add_data_options(t, defaults=True)
    m = t.add_argument_group("model")
    m.add_argument(
        "--optimizer",
        help="sgd, momentum, adagrad, rmsprop, adam, amsgrad, ftrl (default: adagrad)",
    )
    rates = ", ".join(f"{k} {v}" for k, v in DEFAULT_LEARNING_RATE.items())
    m.add_argument(
        "--learning-rate",
        type=float,
        help=f"step size (default: auto, the optimizer's own: {rates})",
    )
    m.add_argument(
        "--alpha",
        type=float,
        help="L2 penalty, decoupled weight decay (default: 0; fm and ffm take "
        "alpha_linear and alpha_factors with --set)",
    )
    m.add_argument("--l1", type=float, help="L1 penalty, with ftrl (default: 0)")
    m.add_argument(
        "--loss",
        choices=ratings.LOSSES,
        help="mf: squared (explicit ratings) or an implicit loss (default: squared)",
    )
    m.add_argument(
        "--min-rating",
        type=float,
        help="mf, implicit losses: ratings from this one up are the positives, weight 1 "
        "(default: every line a positive weighted by its rating)",
    )
    m.add_argument("--batch-size", type=int, help="rows per update step (default: 1)")
    m.add_argument(
        "--n-jobs",
        type=int,
        help="threads; above 1, lock-free and not deterministic (default: 1)",
    )
    m.add_argument(
        "--set",
        type=_key_value,
        action="append",
        metavar="KEY=VALUE",
        help="any other estimator parameter (JSON value), repeatable; those that steer "
        "epochs or hold rows out (max_iter, tol, n_iter_no_change, early_stopping, "
        "validation_fraction, warm_start) are refused: use --epochs, --validation, --resume",
    )
    m.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of FM factor draws, and of shuffling with --set shuffle=true (default 0)",
    )
    r = t.add_argument_group("run")
    r.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="N",
        help="checkpoint every N chunks, and after every epoch (default 10)",
    )
    r.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    r.add_argument(
        "--no-cache",
        action="store_true",
        help="parse the text every epoch instead of caching parsed chunks",
    )
    r.add_argument(
        "--cache-dir",
        help="chunk cache (default: $SPARSEOPT_DATA/chunks, else ~/.cache/sparseopt/chunks)",
    )
    r.add_argument(
        "--keep-tokens",
        action="store_true",
        help=f"save the counts of each (field, value) beside the model ({P.TOKENS_FILE}), "
        "to name features with `sparseopt inspect`",
    )
    r.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=10_000,
        metavar="N",
        help="with --keep-tokens, the N most frequent values kept per field (10000)",
    )
    r.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when stderr is a terminal)",
    )
    t.set_defaults(run=train)

    p = commands.add_parser("predict", help=predict.__doc__, description=predict.__doc__)
    p.add_argument("model", help="model file (model.npz of a run)")
    p.add_argument("data")
    p.add_argument("--out", required=True, help="output file")
    _add_data_options(p, defaults=False)
    p.set_defaults(run=predict)

    e = commands.add_parser("evaluate", help=evaluate.__doc__, description=evaluate.__doc__)
    e.add_argument("model")
    e.add_argument("data")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _add_data_options(e, defaults=False)
    e.set_defaults(run=evaluate)

    i = commands.add_parser("inspect", help=inspect.__doc__, description=inspect.__doc__)
    i.add_argument("model", help="model file (model.npz of a run)")
    i.add_argument("--field", help="only the values of this field (C1, I3, a CSV column...)")
    i.add_argument("--top", type=_positive_int, default=20, metavar="N", help="rows printed (20)")
    i.add_argument(
        "--tokens", help=f"token file (default: {P.TOKENS_FILE} beside the model, if any)"
    )
    i.add_argument("--json", action="store_true", help="print the rows as JSON")
    i.set_defaults(run=inspect)

    rc = commands.add_parser(
        "recommend", help=ratings.recommend.__doc__, description=ratings.recommend.__doc__
    )
    rc.add_argument("model", help="model file of sparseopt train --model mf")
    rc.add_argument("--users", help="raw user ids, comma separated")
    rc.add_argument("--users-file", help="a file of raw user ids, one per line")
    rc.add_argument(
        "--n", type=_positive_int, default=10, help="items per user (10; at most the model's)"
    )
    rc.add_argument("--out", help="output file (default: standard output)")
    rc.add_argument(
        "--include-seen",
        action="store_true",
        help="also recommend the items a user interacted with in training",
    )
    rc.set_defaults(run=ratings.recommend)

    c = commands.add_parser("cache", help=cache.__doc__, description=cache.__doc__)
    c.add_argument(
        "--cache-dir", help="the cache (default: $SPARSEOPT_DATA/chunks, ~/.cache/sparseopt/chunks)"
    )
    c.add_argument(
        "--clear",
        action="store_true",
        help="delete the cached chunk sets, except those a running train holds (named)",
    )
    c.set_defaults(run=cache)
    return parser


def _for_the_command_line(exc) -> str:
    """An error's message, with the readers' Python option named as its command-line flag."""
    from .datasets._readers import ChunkReader

    return str(exc).replace(f"({ChunkReader.skip_hint} skips", "(--skip-bad-lines skips")


def main(argv: list[str] | None = None, *, after_chunk=None) -> int:
    """Run the command; returns the exit status (``after_chunk``: a test hook, see Trainer)."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:  # as argparse treats a missing argument: help, status 2
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args.after_chunk = after_chunk
    args.explicit_parse_threads = getattr(args, "parse_threads", None)
    if getattr(args, "parse_threads", 0) is None:
        args.parse_threads = P.default_parse_threads()
    try:
        return args.run(args)
    except (ValueError, OSError) as exc:  # PipelineError, reader and model-file errors
        print(f"sparseopt: error: {_for_the_command_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:  # training handles its own, with a checkpoint
        print("sparseopt: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
