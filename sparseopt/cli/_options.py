"""Argument types, option groups and exit statuses that the commands of ``sparseopt`` share."""

from __future__ import annotations

import argparse
import json

from ..pipeline import FORMATS

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
CHUNK_SIZE = 100_000
SAMPLE_CHUNK_SIZE = 2_000  # the sample's 20,000 rows in 10 chunks: 10 points per epoch


def csv_list(text):
    return [t for t in text.split(",") if t]


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def epochs_count(text):
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        message = f"expected 'auto' or a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def key_value(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_data_options(parser, defaults: bool):
    """Options that define how a file becomes columns, and how it is read; None means "as
    the model says"."""
    g = parser.add_argument_group("data")
    g.add_argument(
        "--format",
        choices=FORMATS,
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
    g.add_argument("--label", help="csv: the label column (default: none; --format csv needs it)")
    g.add_argument(
        "--features",
        type=csv_list,
        help="csv: feature columns, comma separated (default: every column but the label and "
        "--exclude)",
    )
    g.add_argument(
        "--numeric",
        type=csv_list,
        help="csv: feature columns kept as numbers (default: none, every value hashed as text)",
    )
    g.add_argument(
        "--exclude",
        type=csv_list,
        help="csv: columns left out when --features is not given, an id... (default: none)",
    )
    g.add_argument("--sep", help="column separator (default: tab for criteo, comma for csv)")
    g.add_argument(
        "--n-features",
        type=int,
        help="libsvm: number of columns (default: one more than the largest index in the file)",
    )
    g.add_argument(
        "--interactions",
        type=csv_list,
        help="hashed formats: feature crosses, each a field of its own: 'site_id*app_id,"
        "device_model*hour', a triple 'a*b*c', 'all' (every pair), 'a*' (a with every other "
        "field) (default: none; predict and evaluate apply the model's)",
    )
    g.add_argument(
        "--weight-column",
        help="csv: a column of sample weights (finite, >= 0) for training; scoring leaves it "
        "out (default: none)",
    )
    _add_reading_options(g, defaults)


def _add_reading_options(g, defaults: bool) -> None:
    """How a file is read: chunk size, parsing threads, bad lines (``defaults``: train's,
    where the packaged sample takes smaller chunks)."""
    g.add_argument(
        "--chunk-size",
        type=positive_int,
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


# the options of a DataSpec, and the estimator parameters with an option of their own
_DATA_OPTIONS = ("format", "n_bits", "field_aware", "label", "features", "numeric", "exclude",
                 "sep", "n_features", "interactions", "weight_column")  # fmt: skip
_MODEL_OPTIONS = ("optimizer", "learning_rate", "alpha", "l1", "batch_size", "n_jobs")


def data_options(args) -> dict:
    return {name: getattr(args, name) for name in _DATA_OPTIONS}


def model_params(args) -> dict:
    """The options given of :data:`_MODEL_OPTIONS`, then ``--set``'s."""
    params = {k: getattr(args, k) for k in _MODEL_OPTIONS if getattr(args, k) is not None}
    return params | dict(args.set or [])
