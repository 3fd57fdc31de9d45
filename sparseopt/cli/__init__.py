"""The ``sparseopt`` command: train models on files, predict, recommend, evaluate, inspect.

    sparseopt train [DATA] --format criteo --model lr --out DIR --validation FILE
    sparseopt train RATINGS --model mf [--loss warp] --out DIR --validation FILE
    sparseopt predict MODEL DATA --out FILE
    sparseopt recommend MODEL --users ID[,ID...] [--n 10] [--out FILE]
    sparseopt evaluate MODEL DATA [--json]
    sparseopt inspect MODEL [--field NAME] [--top N] [--json]
    sparseopt cache [--clear]
    sparseopt export MODEL --format onnx|json --out FILE [--hashing-spec FILE]

With no DATA, ``train`` fits the synthetic Criteo-format sample shipped with the package and
reports its validation metrics. ``--model mf`` trains MatrixFactorization on user,item[,rating]
files; predict, evaluate and inspect take either kind of model. Errors in the input (a
missing file, a malformed line, options that do not match the model) print one line to
stderr and exit with status 1.

The package: this module parses the command line; :mod:`~sparseopt.cli._commands` runs a
command through the model family that :mod:`~sparseopt.cli._registry` names, the click
models (:mod:`~sparseopt.cli._click`) or the ratings models (:mod:`~sparseopt.cli._ratings`,
reading files with :mod:`~sparseopt.cli._ratings_files`); options that several commands
share are in :mod:`~sparseopt.cli._options`.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from .. import pipeline as P
from ..estimators._linear import DEFAULT_LEARNING_RATE
from . import _commands as C
from ._options import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    add_data_options,
    epochs_count,
    key_value,
    positive_int,
)
from ._ratings import LOSSES
from ._registry import model_kinds

__all__ = ["build_parser", "main"]


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
    """The parser of every command; each one's ``run`` is the function that executes it."""
    parser = argparse.ArgumentParser(
        prog="sparseopt",
        description=_plain(__doc__.split("\n\n")[0]),
        formatter_class=_CommandsFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # not required: a bare `sparseopt` prints the whole help (see main), not only an error
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    for add_command in (_add_train, _add_predict, _add_evaluate, _add_inspect,
                        _add_recommend, _add_cache, _add_export):  # fmt: skip
        add_command(commands)
    return parser


def _add_train(commands) -> None:
    """``sparseopt train``: what to read and where the run goes, then the model and run
    option groups."""
    t = commands.add_parser("train", help=C.train.__doc__, description=C.train.__doc__)
    t.add_argument("data", nargs="?", help="training file (default: the packaged sample)")
    t.add_argument(
        "--model",
        choices=model_kinds(),
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
        type=epochs_count,
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
    add_data_options(t, defaults=True)
    t.add_argument(
        "--negative-rate",
        type=float,
        default=None,
        metavar="R",
        help="keep every positive line of DATA and this fraction of the negatives, drawn by "
        "--seed (0 < R <= 1; default: 1, all); the saved model's intercept is shifted by "
        "log(R), so predictions and validation metrics are on the true scale",
    )
    _add_model_options(t.add_argument_group("model"))
    _add_run_options(t.add_argument_group("run"))
    _set_command(t, C.train)


def _add_model_options(m) -> None:
    """``train``'s estimator parameters."""
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
        choices=LOSSES,
        help="mf: squared (explicit ratings) or an implicit loss (default: squared)",
    )
    m.add_argument(
        "--min-rating",
        type=float,
        help="mf, implicit losses: ratings from this one up are the positives, weight 1 "
        "(default: every line a positive weighted by its rating)",
    )
    for side in ("user", "item"):
        m.add_argument(
            f"--{side}-features",
            metavar="FILE",
            help=f"mf: CSV of {side} side features (header; {side} id, then one categorical "
            f"column each) to score {side}s unseen in training (default: none)",
        )
    m.add_argument("--batch-size", type=int, help="rows per update step (default: 1)")
    m.add_argument(
        "--n-jobs",
        type=int,
        help="threads; above 1, lock-free and not deterministic (default: 1)",
    )
    m.add_argument(
        "--set",
        type=key_value,
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
        help="seed of FM factor draws, of shuffling with --set shuffle=true, and of the lines "
        "--negative-rate keeps (default 0)",
    )


def _add_run_options(r) -> None:
    """``train``'s checkpoints, chunk cache, token counts and progress bar."""
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
        type=positive_int,
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


def _add_predict(commands) -> None:
    p = commands.add_parser("predict", help=C.predict.__doc__, description=C.predict.__doc__)
    p.add_argument("model", help="model file (model.npz of a run)")
    p.add_argument("data")
    p.add_argument("--out", required=True, help="output file")
    add_data_options(p, defaults=False)
    _add_feature_files(p, "pairs")
    _set_command(p, C.predict)


def _add_evaluate(commands) -> None:
    e = commands.add_parser("evaluate", help=C.evaluate.__doc__, description=C.evaluate.__doc__)
    e.add_argument("model")
    e.add_argument("data")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_data_options(e, defaults=False)
    _add_feature_files(e, "ratings (loss squared)")
    _set_command(e, C.evaluate)


def _add_inspect(commands) -> None:
    i = commands.add_parser("inspect", help=C.inspect.__doc__, description=C.inspect.__doc__)
    i.add_argument("model", help="model file (model.npz of a run)")
    i.add_argument("--field", help="only the values of this field (C1, I3, a CSV column...)")
    i.add_argument("--top", type=positive_int, default=20, metavar="N", help="rows printed (20)")
    i.add_argument(
        "--tokens", help=f"token file (default: {P.TOKENS_FILE} beside the model, if any)"
    )
    i.add_argument("--json", action="store_true", help="print the rows as JSON")
    _set_command(i, C.inspect)


def _add_recommend(commands) -> None:
    rc = commands.add_parser("recommend", help=C.recommend.__doc__, description=C.recommend.__doc__)
    rc.add_argument("model", help="model file of sparseopt train --model mf")
    rc.add_argument("--users", help="raw user ids, comma separated")
    rc.add_argument("--users-file", help="a file of raw user ids, one per line")
    rc.add_argument(
        "--n", type=positive_int, default=10, help="items per user (10; at most the model's)"
    )
    rc.add_argument("--out", help="output file (default: standard output)")
    rc.add_argument(
        "--user-features",
        metavar="FILE",
        help="CSV of user features (as for train): users unknown to the model that it names "
        "are recommended for from their features",
    )
    rc.add_argument(
        "--item-features",
        metavar="FILE",
        help="CSV of item features (as for train): the items unknown to the model that it "
        "names join the candidates, scored from their features",
    )
    rc.add_argument(
        "--include-seen",
        action="store_true",
        help="also recommend the items a user interacted with in training",
    )
    _set_command(rc, C.recommend)


def _add_cache(commands) -> None:
    c = commands.add_parser("cache", help=C.cache.__doc__, description=C.cache.__doc__)
    c.add_argument(
        "--cache-dir", help="the cache (default: $SPARSEOPT_DATA/chunks, ~/.cache/sparseopt/chunks)"
    )
    c.add_argument(
        "--clear",
        action="store_true",
        help="delete the cached chunk sets, except those a running train holds (named)",
    )
    _set_command(c, C.cache)


def _add_export(commands) -> None:
    from . import _export as X  # onnx is imported only when an ONNX export runs

    x = commands.add_parser("export", help=X.export_command.__doc__,
                            description=X.export_command.__doc__)  # fmt: skip
    X.add_arguments(x)
    _set_command(x, X.export_command)


def _for_the_command_line(exc) -> str:
    """An error's message, with the readers' Python option named as its command-line flag."""
    from ..datasets._readers import ChunkReader

    return str(exc).replace(f"({ChunkReader.skip_hint} skips", "(--skip-bad-lines skips")


def _add_feature_files(command: argparse.ArgumentParser, what: str) -> None:
    """``--user-features`` and ``--item-features`` of the mf commands that score pairs."""
    for side in ("user", "item"):
        command.add_argument(
            f"--{side}-features",
            metavar="FILE",
            help=f"mf models trained with side features: CSV of {side} features (as for "
            f"train); the {what} of {side}s unknown to the model that it names are scored "
            f"from their features",
        )


def _set_command(command: argparse.ArgumentParser, run) -> None:
    """Make ``run`` the function of ``command``, and record its options (``{dest: (flag,
    default)}``) so that :func:`main` can tell which ones were given."""
    options = {
        action.dest: (action.option_strings[0], action.default)
        for action in command._actions  # argparse keeps no public list of them
        if action.option_strings and action.default is not argparse.SUPPRESS
    }
    command.set_defaults(run=run, options=options)


def main(argv: list[str] | None = None, *, after_chunk=None) -> int:
    """Run the command; returns the exit status (``after_chunk``: a test hook, see Trainer)."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:  # as argparse treats a missing argument: help, status 2
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args.after_chunk = after_chunk
    # the options given (a value other than their default): a family refuses those it
    # does not take
    args.given = {
        name: flag
        for name, (flag, default) in args.options.items()
        if getattr(args, name) != default
    }
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
