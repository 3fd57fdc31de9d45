"""Training, prediction and evaluation on files: the engine behind the ``sparseopt`` command.

Training streams a file as CSR chunks (:mod:`sparseopt.datasets` readers, memory bounded by
one read block plus one chunk) into an estimator's ``partial_fit``, one call per chunk, so a
file larger than memory trains out of core; with a chunk cache, epochs after the first load
the parsed chunks instead of parsing the text again. The calls train the model in place,
without the copy of the whole model that makes a failed ``partial_fit`` change nothing: here
the checkpoints are what a failure goes back to.

Every model file written here stores, beside the estimator, how its data was read
(:class:`DataSpec`: format, hashing bits, field-aware layout, CSV columns...), so that
:func:`predict` and :func:`evaluate` read new files into the same columns and refuse options
that would not.

Checkpoints
-----------
Every ``checkpoint_every`` chunks (when another chunk follows) and at the end of every epoch,
after checking that the weights are finite, the run folder receives a
model file ``checkpoint-<n>.npz`` (with the optimizer state) and then ``checkpoint.json``
(epoch, chunks done in it, rows seen, the seed, the history), each written atomically, the
record last: a crash leaves the previous checkpoint intact. ``resume=True`` reloads it and
skips the chunks already trained. Rows train in file order unless the estimator shuffles
(``shuffle=True``); each chunk's random draws use a seed derived from ``(seed, epoch, chunk)``,
so a resumed run trains on exactly the same sequence of rows and, in
serial mode (``n_jobs=1``), ends with the same model bit for bit. Ctrl-C (or SIGTERM) during
a chunk takes effect once the chunk is trained, and checkpoints the chunks done; on divergence
the last checkpoint stands. Divergence is a weight that is not finite or beyond any sane range
(checked at every checkpoint), or an epoch whose training logloss ends far worse than the base
rate's (checked at the end of every epoch, and on the first chunk).
With negative downsampling, the checkpoints hold the training state; the last one, when it is
the model kept, is saved once as the run's corrected model (``model.npz`` linked to it), with
the intercept before the correction in its metadata, which a resume puts back.

Epochs
------
``epochs="auto"`` (the command's default) follows the estimators' ``max_iter="auto"`` in
spirit. With a validation file, epochs run until its logloss has not improved for
``PATIENCE`` epochs (the estimators' ``n_iter_no_change``; a logloss equal to the best is
no improvement: :class:`sparseopt._epochs.Stopper` with ``tie_is_stale``, restored from the
checkpoint on resume), at most ``AUTO_MAX_EPOCHS``, and
the saved model is the best epoch's: each new best epoch's checkpoint is linked (or copied) to
``best-<epoch>.npz`` and named in the record, so the best so far survives a resume. Without
one, ``"auto"`` is one epoch: a file read out of core cannot hold rows out cheaply, and one
pass is what click logs want (the README's measurements). An integer runs that many epochs
and saves the last; with a validation file the summary still names the best.

Every epoch's history records the progressive training loss within it: the running mean
after each chunk, for the report's learning curve.

The run folder is one run's (:mod:`sparseopt._runs`): :meth:`Trainer.start` takes an
exclusive lock on its ``run.lock``
(which records the process id) for the whole run, so a second run into the same folder is
refused, naming the first's process; a process killed with ``kill -9`` drops its lock with it.
Under the lock, temporary files and checkpoints left by a killed run are removed.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import queue
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from pyarrow import csv

from . import _io, _runs
from ._epochs import Stopper
from ._jit import announce_compile, compile_seconds
from ._report import EpochBar, fit_terminal, format_click_metrics
from ._runs import PipelineError
from .datasets import (
    CriteoReader,
    CSVReader,
    FieldHasher,
    LibSVMReader,
    column_fields,
    sample_path,
)
from .datasets._cache import atomic_write
from .metrics import ClickMetrics

FORMATS = ("criteo", "avazu", "libsvm", "csv")
# --model kinds of the click models (mf trains on ratings files: sparseopt.cli._ratings)
MODELS = {"lr": "SparseLogisticRegression", "fm": "FMClassifier", "ffm": "FFMClassifier"}
METADATA_VERSION = 1
AUTO_MAX_EPOCHS = 20  # epochs="auto" with a validation file: the most epochs run
PATIENCE = 2  # ... stopping when the validation logloss has not improved for this many
# estimator options that steer epochs or hold rows out: each chunk is one partial_fit call,
# which ignores the first ones and would hold out a slice of every chunk for the second
_UNSUPPORTED = {
    "max_iter": "--epochs",
    "tol": "--epochs",
    "n_iter_no_change": "--epochs",
    "early_stopping": "--validation FILE (with --epochs auto, it keeps the best epoch)",
    "validation_fraction": "--validation FILE",
    "warm_start": "--resume",
}


# --- data ----------------------------------------------------------------------------------
@dataclass
class DataSpec:
    """How a file becomes columns: everything that must match between training and scoring.

    Parameters
    ----------
    format : {"criteo", "avazu", "libsvm", "csv"}
    n_bits : int
        Hashed formats: ``2**n_bits`` columns.
    field_aware : bool
        Hashed formats: each field owns a slice of the columns (needed by ``ffm``).
    label, features, numeric, exclude, sep
        CSV columns (see :class:`~sparseopt.datasets.CSVReader`).
    n_features, zero_based
        LIBSVM indexing, fixed from the training file.
    interactions : list of str or None
        Hashed formats: feature crosses (``["site_id*app_id", "all", "C1*"]``; see
        :class:`~sparseopt.datasets.CSVReader`), applied by every reader of the model.
    weight_column : str or None
        CSV: the column of sample weights read in training (scoring readers leave it out).
    negative_rate : float
        Training kept this fraction of the negative lines (1: all). Only the training file is
        downsampled; validation and scoring read every line, and the saved model's intercept
        is corrected by ``log(negative_rate)`` (:func:`correct_for_downsampling`).
    """

    format: str = "criteo"
    n_bits: int = 20
    field_aware: bool = False
    label: str | None = None
    features: list | None = None
    numeric: list = field(default_factory=list)
    exclude: list = field(default_factory=list)
    sep: str | None = None
    n_features: int | None = None
    zero_based: bool | str = "auto"
    interactions: list | None = None
    weight_column: str | None = None
    negative_rate: float = 1.0

    def __post_init__(self):
        def names(v):
            return isinstance(v, list) and all(isinstance(x, str) for x in v)

        checks = {
            "format": (lambda v: isinstance(v, str), "a string"),
            "n_bits": (lambda v: type(v) is int and 1 <= v <= 32, "an integer in [1, 32]"),
            "field_aware": (lambda v: isinstance(v, bool), "true or false"),
            "label": (lambda v: v is None or isinstance(v, str), "a column name"),
            "features": (lambda v: v is None or names(v), "a list of column names"),
            "numeric": (names, "a list of column names"),
            "exclude": (names, "a list of column names"),
            "sep": (lambda v: v is None or isinstance(v, str) and len(v) == 1, "one character"),
            "n_features": (lambda v: v is None or type(v) is int and v >= 0, "a count"),
            "zero_based": (lambda v: v in (True, False, "auto"), "true, false or 'auto'"),
            "interactions": (lambda v: v is None or names(v), "a list of crosses"),
            "weight_column": (lambda v: v is None or isinstance(v, str), "a column name"),
            "negative_rate": (
                lambda v: type(v) in (int, float) and 0 < v <= 1,
                "a number in (0, 1], the fraction of negatives kept",
            ),
        }
        for name, (test, what) in checks.items():
            value = getattr(self, name)
            if isinstance(value, tuple):
                value = list(value)
                setattr(self, name, value)
            if not test(value):
                raise PipelineError(f"data option {name} must be {what}, got {value!r:.60}")
        if self.format not in FORMATS:
            raise PipelineError(f"unknown format {self.format!r}; choose one of {FORMATS}")
        if self.format == "csv" and not self.label:
            raise PipelineError("--format csv needs --label, the name of the label column")
        if self.weight_column is not None and self.format != "csv":
            raise PipelineError("--weight-column needs --format csv (a named column)")
        if self.format == "libsvm" and (self.interactions or self.negative_rate != 1):
            flag = "--interactions" if self.interactions else "--negative-rate"
            raise PipelineError(f"{flag} needs a hashed format (criteo, avazu, csv)")
        self.negative_rate = float(self.negative_rate)

    def reader(self, path, chunk_size=100_000, skip_bad_lines=False, training=False, seed=0):
        """A chunk reader of ``path`` under this spec: with ``training``, the weights and the
        downsampling (drawn from ``seed``) of the training file (chunks ``(X, y, w)`` with a
        weight column); else every line, the weight column left out (chunks ``(X, y)``)."""
        common = dict(chunk_size=chunk_size, skip_bad_lines=skip_bad_lines)
        hashed = dict(n_bits=self.n_bits, field_aware=self.field_aware, **common)
        if self.interactions:
            hashed["interactions"] = self.interactions
        if training and self.negative_rate != 1:
            hashed.update(negative_rate=self.negative_rate, random_state=seed)
        if self.format == "criteo":
            return CriteoReader(path, sep=self.sep or "\t", **hashed)
        if self.format == "avazu":
            return CSVReader(path, "click", exclude=["id"], sep=self.sep or ",", **hashed)
        if self.format == "csv":
            weights = {"weight_column": self.weight_column} if training else {}
            excluded = self.exclude + ([self.weight_column] if self.weight_column else [])
            return CSVReader(
                path,
                self.label,
                self.features,
                numeric=self.numeric,
                exclude=self.exclude if training else excluded,
                sep=self.sep or ",",
                **weights,
                **hashed,
            )
        return LibSVMReader(path, self.n_features, self.zero_based, **common)

    def fixed_by(self, reader) -> DataSpec:
        """This spec with what the training file decided (LIBSVM width and index base)."""
        if self.format != "libsvm":
            return self
        return DataSpec(
            **dict(asdict(self), n_features=reader.n_features, zero_based=reader.zero_based)
        )

    def describe(self) -> str:
        if self.format == "libsvm":
            return f"libsvm with {self.n_features} features"
        layout = ", field-aware" if self.field_aware else ""
        return f"{self.format} hashed into 2^{self.n_bits} columns{layout}"


def check_spec(model_spec: DataSpec, options: dict) -> DataSpec:
    """The model's spec, after checking that no option given on the command line differs."""
    for name, value in options.items():
        if value is None:
            continue
        stored = getattr(model_spec, name)
        if isinstance(stored, list):
            value = list(value)
        if value != stored:
            flag = "--" + name.replace("_", "-")
            raise PipelineError(
                f"{flag} {value!r} differs from the model's {name}={stored!r} "
                f"(it was trained on {model_spec.describe()}); omit {flag} to read the data "
                "as the model expects, or retrain"
            )
    return model_spec


# --- models --------------------------------------------------------------------------------
def model_class(kind: str):
    """The estimator class behind ``--model kind``."""
    import sparseopt

    if kind not in MODELS:
        raise PipelineError(f"unknown model {kind!r}; choose one of {sorted(MODELS)}")
    return getattr(sparseopt, MODELS[kind])


def make_model(kind: str, spec: DataSpec, n_fields: int, params: dict):
    """A new estimator for ``--model kind`` (FFM gets each column's field from ``spec``)."""
    cls = model_class(kind)
    params = dict(params)
    for name in params:
        if name in _UNSUPPORTED:
            raise PipelineError(
                f"the command line cannot honour --set {name}: it trains chunk by chunk, one "
                f"epoch at a time; use {_UNSUPPORTED[name]} instead"
            )
    if kind == "ffm":
        if not spec.field_aware or spec.format == "libsvm":
            raise PipelineError(
                "--model ffm needs field-aware hashing: add --field-aware (criteo, avazu, csv)"
            )
        params.setdefault("fields", column_fields(spec.n_bits, n_fields))
    try:
        return cls(**params)
    except TypeError as exc:
        raise PipelineError(f"bad model parameter for {cls.__name__}: {exc}") from None


def save_model(model, path, kind: str, spec: DataSpec, extra=None) -> None:
    """``model.save(path)`` with the model kind and the data spec in the file's metadata
    (and ``extra``, more keys)."""
    metadata = {"version": METADATA_VERSION, "model": kind, "data": asdict(spec), **(extra or {})}
    with _io.model_metadata(metadata):
        model.save(path)


def correct_for_downsampling(model, negative_rate: float) -> dict:
    """Shift the fitted ``model``'s intercept by ``log(negative_rate)``; returns the note its
    file records.

    Trained on every positive and a fraction ``r`` of the negatives, a model estimates odds
    ``1 / r`` times the true ones: its margin is the true logit minus ``log r``. Adding
    ``log r`` to the intercept makes ``predict_proba`` the true scale (He et al., "Practical
    lessons from predicting clicks on ads at Facebook", 2014: ``q = p / (p + (1 - p) / r)``).
    The shift goes through the model's public fitted state, ``state_.bias`` (the intercept
    of every model the command line trains is column 0 of its bias row), and the fitted
    ``intercept_`` reads it back.
    """
    shift = math.log(negative_rate)
    model.state_.bias[:, 0] += shift
    return {
        "negative_rate": negative_rate,
        "intercept_correction": shift,
        "note": f"trained on all positives and {negative_rate:g} of the negatives; the "
        f"intercept was shifted by log({negative_rate:g}) = {shift:.6g} so that predictions "
        "are on the true scale (the intercept before the shift: 'training_intercept')",
    }


def restore_training_intercept(model, path) -> None:
    """Undo the downsampling correction of ``model``, read from the model file ``path``, if
    its metadata records one: its intercept back to the ``training_intercept`` it was trained
    to, bit for bit (a run resumed from a corrected checkpoint trains on from there)."""
    meta = _io.read_metadata(path) or {}
    if "downsampling" not in meta:
        return
    values = meta.get("training_intercept")
    bias = model.state_.bias
    if not (
        _io.NUMBERS[0](values)
        and len(values) == bias.shape[0]
        and all(math.isfinite(v) for v in values)
    ):
        raise PipelineError(f"{path}: the training intercept in the file is damaged")
    bias[:, 0] = values


def true_scale(p, negative_rate: float):
    """Probabilities of a model trained on downsampled negatives, on the true scale:
    ``r p / (r p + 1 - p)``, which is the sigmoid of the margin plus ``log r``."""
    if negative_rate == 1:
        return p
    return negative_rate * p / (negative_rate * p + (1.0 - p))


def load_model(path):
    """Load a click model file; returns ``(model, spec)``, spec None when the file has none."""
    import sparseopt

    try:
        model = sparseopt.load(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such model file") from None
    meta = _io.read_metadata(path) or {}
    version = meta.get("version", METADATA_VERSION)
    if type(version) is int and version > METADATA_VERSION:
        raise PipelineError(f"{path} was written by a newer sparseopt; upgrade sparseopt")
    if type(version) is not int or version < 1 or not isinstance(meta.get("data", {}), dict):
        raise PipelineError(f"{path}: the data description in the file is damaged")
    try:
        spec = DataSpec(**meta["data"]) if "data" in meta else None
    except (TypeError, PipelineError) as exc:
        raise PipelineError(f"{path}: the data description in the file is damaged: {exc}") from None
    if not hasattr(model, "predict_proba") or not np.array_equal(
        getattr(model, "classes_", []), [0, 1]
    ):
        raise PipelineError(
            f"{path} holds a {type(model).__name__}; predict and evaluate need a binary "
            "click model (sparseopt train --model lr, fm or ffm)"
        )
    return model, spec


def open_data(model, spec, path, options, chunk_size, skip_bad_lines):
    """A reader of ``path`` that yields the columns ``model`` was trained on."""
    if spec is None:
        if options.get("format") is None:
            raise PipelineError(
                "the model file does not say how its data was read (saved by an estimator's "
                "save): give --format and the hashing options used in training"
            )
        spec = DataSpec(**{k: v for k, v in options.items() if v is not None})
    else:
        spec = check_spec(spec, options)
    reader = spec.reader(path, chunk_size, skip_bad_lines)
    expected = getattr(model, "n_features_in_", reader.n_features)
    if reader.n_features != expected:
        raise PipelineError(
            f"{path} reads as {reader.n_features} columns but the model expects {expected}"
        )
    return reader


# --- scoring -------------------------------------------------------------------------------
def score(model, chunks, negative_rate=1.0) -> ClickMetrics:
    """Metrics of ``model`` on an iterable of ``(X, y)`` chunks; ``negative_rate``: the
    model is a training state on downsampled negatives, scored on the true scale."""
    metrics = ClickMetrics()
    for X, y in chunks:
        metrics.update(y, true_scale(model.predict_proba(X)[:, 1], negative_rate))
    return metrics


# --- training ------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Everything a run depends on; a checkpoint resumes only under the same config."""

    data: str
    validation: str | None
    model: str
    spec: dict
    params: dict
    chunk_size: int
    skip_bad_lines: bool
    seed: int


class _Failed:
    def __init__(self, exc):
        self.exc = exc


_DONE = object()


def prefetch(chunks):
    """Iterate ``chunks`` while a background thread reads the next one.

    The compiled parser and training kernels release the GIL, so parsing chunk k+1 overlaps
    training on chunk k; at most two chunks are in memory beyond the one being trained.
    Errors of the reader are raised here, in the caller's thread.
    """
    items = queue.Queue(maxsize=1)
    stop = threading.Event()

    def work():
        try:
            for item in chunks:
                items.put(item)
                if stop.is_set():
                    return
            items.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            items.put(_Failed(exc))
        finally:
            chunks.close()

    thread = threading.Thread(target=work, name="sparseopt-reader", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a pending put, then let the thread end
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(0.01)


def default_parse_threads() -> int:
    """Parsing threads when none are asked for: the cores left by the training thread, 1 or 2.

    Training takes one core; on 2 cores a second parser only competes with it (1 thread was
    the faster in 5 of 8 paired runs, within the noise of a shared machine).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(2, max(1, (cores or 1) - 1))


# the keys of a checkpoint record's state added in later versions, and their values in a
# record from before (epoch_positives None: the epoch's positives were not counted)
_ADDED_LATER = {"epoch_positives": None, "epoch_curve": [], "best": None, "stopped": None}


def _chunk_seed(seed, epoch, chunk):
    return int(np.random.SeedSequence([seed, epoch, chunk]).generate_state(1)[0])


class Trainer:
    """One training run in ``out_dir``: see the module docstring for checkpoints and epochs.

    ``epochs``: ``"auto"`` or a positive integer.

    ``after_chunk(epoch, chunk)`` is called after each trained chunk (a test hook: raising
    there simulates an interruption).
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir,
        *,
        epochs="auto",
        checkpoint_every=10,
        cache_dir=None,
        use_cache=True,
        parse_threads=None,
        progress=False,
        log=print,
        after_chunk=None,
    ):
        if epochs != "auto" and not (type(epochs) is int and epochs >= 1):
            raise PipelineError(f"--epochs must be 'auto' or at least 1, got {epochs!r}")
        if checkpoint_every < 1:
            raise PipelineError(f"--checkpoint-every must be at least 1, got {checkpoint_every}")
        if parse_threads is None:
            parse_threads = default_parse_threads()
        if parse_threads < 1:
            raise PipelineError(f"--parse-threads must be at least 1, got {parse_threads}")
        self.config = config
        self.out = Path(out_dir)
        # epochs="auto": stop on the validation file and keep the best epoch; one without it
        self.keep_best = epochs == "auto" and config.validation is not None
        self.epochs = (AUTO_MAX_EPOCHS if self.keep_best else 1) if epochs == "auto" else epochs
        self.checkpoint_every = checkpoint_every
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.parse_threads = parse_threads
        self.log = log
        self.after_chunk = after_chunk
        self.spec = DataSpec(**config.spec)
        self.reader = self.spec.reader(
            config.data, config.chunk_size, config.skip_bad_lines, training=True, seed=config.seed
        )
        self.spec = self.spec.fixed_by(self.reader)
        self.valid_reader = None
        if config.validation is not None:
            self.valid_reader = self.spec.reader(
                config.validation, config.chunk_size, config.skip_bad_lines
            )
        n_fields = getattr(self.reader, "n_fields", 0)
        self.model = make_model(config.model, self.spec, n_fields, config.params)
        self.state = dict(epoch=0, chunk=0, rows_seen=0, epoch_loss=0.0, epoch_rows=0,
                          n_bad_lines=0, history=[], checkpoint=None, finished=False,
                          n_rows_epoch=None, epoch_positives=0.0, epoch_curve=[], best=None,
                          stopped=None)  # fmt: skip
        # a validation logloss equal to the best is no improvement
        self.stopper = Stopper(0.0, PATIENCE, tie_is_stale=True)
        self.calibration = None
        self.training = None  # the model's training (sparseopt.estimators._base), from run
        self.bar = EpochBar(progress, log)
        self._in_chunk = False  # a chunk is being trained: the model is not fit to save
        self._lock = None

    # -- the run folder --
    def _record(self):
        return self.out / _runs.CHECKPOINT

    def _take_lock(self) -> None:
        """Hold ``run.lock`` in the run folder until :meth:`release` (or this process ends),
        or raise PipelineError naming the process that holds it."""
        if self._lock is None:
            self._lock = _runs.lock_run_folder(self.out)

    def release(self) -> None:
        """Drop the run folder's lock (idempotent; :meth:`run` does it when it returns)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _read_record(self) -> dict:
        """``checkpoint.json``, checked; PipelineError naming the file if it is damaged."""
        return _runs.read_checkpoint(self.out, self.state, _ADDED_LATER)

    def start(self, resume: bool) -> None:
        """Prepare ``out_dir``: fresh, or loaded from its checkpoint with ``resume``.

        Takes the folder's lock first (held until :meth:`run` ends or :meth:`release`).
        """
        record = self._record()
        if resume and not record.is_file():
            raise PipelineError(f"nothing to resume: {record} does not exist")
        self._take_lock()
        try:
            self._start(resume)
        except BaseException:
            self.release()
            raise

    def _start(self, resume: bool) -> None:
        record = self._record()
        _runs.check_model_kind(self.out, self.config.model)
        if not resume:
            if record.is_file():
                old = self._read_record()["state"]
                if not old["finished"]:
                    raise PipelineError(
                        f"{self.out} holds an unfinished run: add --resume to continue it, or "
                        "choose another --out (or delete that folder) to start over"
                    )
                record.unlink()  # a finished run is replaced by this one
            _runs.remove_leftovers(self.out, _runs.CLICK_RUNS)
            return
        saved = self._read_record()
        best = saved["state"].get("best")
        keep = (saved["state"]["checkpoint"], best and best["file"])
        _runs.remove_leftovers(self.out, _runs.CLICK_RUNS, keep)
        if saved["config"] != asdict(self.config):
            changed = sorted(
                k for k, v in saved["config"].items() if asdict(self.config).get(k) != v
            )
            raise PipelineError(
                f"the checkpoint in {self.out} was made with other settings ({', '.join(changed)}"
                "); resume with the same data and options, or train into another --out"
            )
        self.state = saved["state"]
        for key, value in _ADDED_LATER.items():
            self.state.setdefault(key, copy.copy(value))
        if self.state["checkpoint"] is None:
            raise PipelineError(f"{record} names no checkpoint; delete {self.out} to start over")
        checkpoint = self.out / self.state["checkpoint"]
        self.model, _ = load_model(checkpoint)
        restore_training_intercept(self.model, checkpoint)
        self.training = None
        best = self.state["best"]
        if best is not None:  # the stopper's record: the best loss, the epochs since
            self.stopper.restore(best["logloss"], self.state["epoch"] - best["epoch"])

    def checkpoint(self, best=None) -> None:
        """Save the model, then the record pointing at it; drop the previous model file.

        ``best``: this model is the best epoch so far, recorded as ``state["best"]`` (its
        ``file``, ``best-<epoch>.npz``, linked to the checkpoint before the record names it).
        Raises DivergenceError, saving nothing, if a weight is not finite (chunks are trained
        in place, unchecked: a diverged run stays at its last checkpoint).

        The last checkpoint of a downsampled run whose last epoch is the one kept is the run's
        model itself, saved once: corrected (:meth:`_save_corrected`), its training intercept
        recorded for a resume; ``model.npz`` is then linked to it.
        """
        self._settle()
        name = _runs.next_checkpoint(self.state["checkpoint"])
        earlier_best_kept = self.keep_best and best is None and self.state["best"] is not None
        if self.spec.negative_rate != 1 and self.state["finished"] and not earlier_best_kept:
            self._save_corrected(self.model, self.out / name)
        else:
            self._save(self.model, self.out / name)
        _runs.commit_checkpoint(self.out, asdict(self.config), self.state, name, best)

    def _save(self, model, path, extra=None):
        model.set_params(random_state=self.config.seed)
        save_model(model, path, self.config.model, self.spec, extra)

    # -- the loop --
    def _chunks(self):
        n = self.parse_threads
        if self.use_cache:
            return prefetch(self.reader.cached(self.cache_dir, n))
        return prefetch(self.reader.chunks(n))

    def run(self) -> dict:
        """Train the remaining epochs; returns the summary (also in ``metrics.json``)."""
        classes = np.array([0.0, 1.0])
        state = self.state
        started, rows_at_start = time.perf_counter(), state["rows_seen"]
        compiling = compile_seconds()
        optimizer = self.model.get_params()["optimizer"]
        name = optimizer if isinstance(optimizer, str) else type(optimizer).__name__
        what = f"{type(self.model).__name__} ({name})"
        self._take_lock()
        # the run holds its chunk set between epochs too (each pass holds it within)
        hold = self.reader.hold_cache(self.cache_dir) if self.use_cache else nullcontext()
        try:
            noticed = announce_compile(what, self.bar.notice)
            try:
                with hold, self._interrupts_between_chunks(), noticed:
                    self._epochs(classes)
            except KeyboardInterrupt:
                # a chunk cut short (by an interrupt that could not be held) left the model
                # partly trained: the last checkpoint stands
                if not self._in_chunk and (state["epoch_rows"] or state["epoch"]):
                    self.checkpoint()
                raise
            # rates count training, not the first run's compiling
            seconds = time.perf_counter() - started - (compile_seconds() - compiling)
            return self._finish(seconds, state["rows_seen"] - rows_at_start)
        finally:
            self.release()

    @contextmanager
    def _interrupts_between_chunks(self):
        """Hold Ctrl-C (and SIGTERM made into it) that comes during a chunk until the chunk is
        trained: chunks train in place, so one cut short could not be saved."""
        self._interrupted = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if not self._in_chunk:
                raise KeyboardInterrupt
            self._interrupted = True

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is signal.default_int_handler:
                previous[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _start_training(self, classes):
        """The model's training, in place (chunks are not copied: checkpoints are the way
        back), from the loaded checkpoint or a new model."""
        fresh = not hasattr(self.model, "state_")
        if fresh:  # a factorization machine draws its factors from this seed
            self.model.set_params(random_state=_chunk_seed(self.config.seed, 0, 0))
        template = sp.csr_matrix((0, self.reader.n_features), dtype=np.float32)
        self.training = self.model.start_training(
            template, classes=classes, reset=fresh, in_place=True
        )
        # the model's epochs are the run's (its history), whichever process trained them: a
        # resumed run's loss_curve_ and n_iter_ then equal an uninterrupted run's
        self.training.n_iter_start = 0
        self._unsettled = False
        self._check_first_chunk = fresh

    def _settle(self, this_epoch=()) -> None:
        """Bring the model up to date with the chunks trained (lazy coordinates caught up,
        weights checked, fitted attributes set), to save or score it; ``this_epoch``: the
        training logloss of an epoch that just ended and is not in the history yet."""
        if self.training is None or not self._unsettled:
            return
        self.training.catch_up()
        history = self.state["history"]
        self.training.finish([h["train_logloss"] for h in history] + list(this_epoch))
        self._unsettled = False

    def _train_chunk(self, X, y, seed, sample_weight=None) -> float:
        """Train the chunk ``X, y`` (shuffled with ``seed`` if the model shuffles); returns
        its mean loss."""
        training = self.training
        rows = training.rows(X, y, sample_weight)
        loss = training.epoch(rows, training.order(rows, np.random.default_rng(seed)))
        loss /= max(X.shape[0], 1)
        self._unsettled = True
        if self._check_first_chunk:  # a learning rate that diverges at once: stop here
            training.check(rows, loss)
            self._check_first_chunk = False
        return loss

    def _epochs(self, classes):
        state = self.state
        if self.training is None:
            self._start_training(classes)
        while state["epoch"] < self.epochs and not (self.keep_best and state["stopped"]):
            epoch, skip = state["epoch"], state["chunk"]
            epoch_started, epoch_rows = time.perf_counter(), state["epoch_rows"]
            compiling = compile_seconds()
            desc, total = f"epoch {epoch + 1}/{self.epochs}", state["n_rows_epoch"]
            with self.bar.start(self.reader, desc, total, epoch_rows, self._mean_loss()):
                due = False
                for k, (X, y, *weights) in enumerate(self._chunks()):
                    if k < skip:
                        continue
                    if due:  # deferred until another chunk follows: the epoch's end saves
                        self.checkpoint()
                    self._in_chunk = True
                    with self.bar.moving(X.shape[0]):
                        seed = _chunk_seed(self.config.seed, epoch, k)
                        loss = self._train_chunk(X, y, seed, *weights)
                    state["epoch_loss"] += loss * X.shape[0]
                    if state["epoch_positives"] is not None:
                        state["epoch_positives"] += float(np.sum(y))
                    state["epoch_rows"] += X.shape[0]
                    state["rows_seen"] += X.shape[0]
                    state["chunk"] = k + 1
                    state["epoch_curve"].append(
                        [state["epoch_rows"], state["epoch_loss"] / state["epoch_rows"]]
                    )
                    self._in_chunk = False
                    if self._interrupted:
                        raise KeyboardInterrupt
                    self.bar.advance(state["epoch_rows"], self._mean_loss())
                    if self.after_chunk is not None:
                        self.after_chunk(epoch, k)
                    due = state["chunk"] % self.checkpoint_every == 0
            seconds = time.perf_counter() - epoch_started - (compile_seconds() - compiling)
            rate = (state["epoch_rows"] - epoch_rows) / max(seconds, 1e-9)
            self._end_epoch(rate)

    def _mean_loss(self) -> str:
        """The epoch's mean training loss so far, for the bar ("-" before any row)."""
        rows = self.state["epoch_rows"]
        return f"{self.state['epoch_loss'] / rows:.4f}" if rows else "-"

    def _end_epoch(self, rows_per_second):
        state = self.state
        if state["epoch_rows"] == 0:
            raise PipelineError(f"{self.config.data} has no rows to train on")
        state["n_bad_lines"] = self.reader.stats["n_bad_lines"]
        entry = {
            "epoch": state["epoch"] + 1,
            "train_logloss": state["epoch_loss"] / state["epoch_rows"],
            "rows": state["epoch_rows"],
            # the progressive loss within the epoch: [rows trained, their mean loss] per chunk
            "train_curve": state["epoch_curve"],
        }
        self._check_useful(entry["train_logloss"])
        self._settle([entry["train_logloss"]])
        line = (
            f"epoch {entry['epoch']}/{self.epochs}: {rows_per_second:,.0f} rows/s, "
            f"train logloss {entry['train_logloss']:.4f}"
        )
        best, stop = None, False
        if self.valid_reader is not None:
            metrics = score(
                self.model, self.valid_reader.chunks(self.parse_threads), self.spec.negative_rate
            )
            entry["validation"] = metrics.result()
            self.calibration = metrics.calibration()
            line += "  |  validation " + format_click_metrics(entry["validation"])
            stop = self.stopper.update(entry["validation"]["logloss"])
            if self.stopper.improved:
                best = {
                    "epoch": entry["epoch"],
                    "logloss": entry["validation"]["logloss"],
                    "file": f"best-{entry['epoch']:06d}.npz",
                    "calibration": self.calibration,
                }
        self.log(fit_terminal(line))
        state["history"].append(entry)
        state["n_rows_epoch"] = state["epoch_rows"]
        state.update(
            epoch=state["epoch"] + 1,
            chunk=0,
            epoch_loss=0.0,
            epoch_rows=0,
            epoch_positives=0.0,
            epoch_curve=[],
        )
        if self.keep_best and stop:
            state["stopped"] = f"stopped after {PATIENCE} epochs without improvement"
        state["finished"] = state["epoch"] >= self.epochs or bool(
            self.keep_best and state["stopped"]
        )
        self.checkpoint(best)

    def _check_useful(self, logloss):
        """Raise DivergenceError if the epoch's training logloss is far worse than the base
        rate's (the estimators' rule, :func:`sparseopt.estimators._safety.useless_fit`)."""
        from .estimators import _safety

        positives, rows = self.state["epoch_positives"], self.state["epoch_rows"]
        if positives is None:  # resumed from a record that did not count them
            return
        p = min(max(positives / rows, 0.0), 1.0)
        base = -sum(q * math.log(q) for q in (p, 1.0 - p) if q > 0)
        # an epoch is judged at any size (the estimators wait for 1,000 rows, for
        # scikit-learn's checks of random labels on unscaled features): rows trained at a
        # sane rate stay near the all-zero model's ln 2, even a few of them
        if _safety.useless_fit(logloss, rows, math.log(2.0), base, min_rows=1):
            self.training.refuse(
                f"epoch {self.state['epoch'] + 1} ended with a training logloss of "
                f"{logloss:.4g}, far worse than the base rate's {base:.4g}",
            )

    def _finish(self, seconds, rows):
        model_path = self.out / _runs.MODEL
        history, best = self.state["history"], self.state["best"]
        kept = self._kept()
        # the kept epoch's checkpoint holds this very model: link it into place
        saved = best["file"] if best and kept["epoch"] == best["epoch"] else None
        kept_file = self.out / (saved or self.state["checkpoint"])
        if self.spec.negative_rate == 1 or "downsampling" in (_io.read_metadata(kept_file) or {}):
            _runs.link_or_copy(kept_file, model_path)
        else:  # an uncorrected training state (a best epoch's, an earlier sparseopt's)
            self._save_corrected(load_model(kept_file)[0], model_path)
        validation = history[kept["epoch"] - 1].get("validation") if history else None
        calibration = best["calibration"] if saved else self.calibration
        summary = {
            "model": str(model_path),
            "model_type": self.config.model,
            "data": asdict(self.spec),
            "epochs": len(history),
            "rows_seen": self.state["rows_seen"],
            "n_bad_lines": self.state["n_bad_lines"],
            "seconds": seconds,
            "rows_per_second": rows / seconds if seconds > 0 else None,
            "history": history,
            "kept_epoch": kept["epoch"],
            "kept_because": kept["because"],
            "best_epoch": best and best["epoch"],
            "data_file": self.config.data,
            "validation_file": self.config.validation,
            "validation": validation,
            "calibration": calibration,
        }
        _runs.write_json(self.out / _runs.METRICS, summary)
        return summary

    def _save_corrected(self, model, path) -> None:
        """Save ``model`` to ``path`` with its intercept corrected for the downsampling and
        the intercept before the correction recorded (``training_intercept``, which
        :func:`restore_training_intercept` puts back); ``model`` is left as it was."""
        bias = model.state_.bias.copy()
        try:
            correction = correct_for_downsampling(model, self.spec.negative_rate)
            extra = {"downsampling": correction, "training_intercept": bias[:, 0].tolist()}
            self._save(model, path, extra)
        finally:
            model.state_.bias[...] = bias

    def _kept(self) -> dict:
        """Which epoch ``model.npz`` is, and why (for the summary line and metrics.json)."""
        state, best = self.state, self.state["best"]
        last = len(state["history"])
        if self.keep_best and best is not None:
            why = state["stopped"] or f"the cap of {self.epochs} epochs reached"
            return {"epoch": best["epoch"], "because": f"best validation logloss; {why}"}
        if self.keep_best or self.epochs > 1:
            return {"epoch": last, "because": f"the last of --epochs {self.epochs}"}
        why = "without --validation" if self.config.validation is None else "--epochs 1"
        return {"epoch": last, "because": f"one epoch ({why})"}


def default_data() -> tuple[Path, Path]:
    """The packaged sample: training and validation files."""
    return sample_path("train"), sample_path("valid")


# --- token counts (names of hashed columns) ------------------------------------------------
TOKENS_FILE = "tokens.npz"


# the number syntax of the readers' parser (``parse_number``): [+-]digits[.digits][e[+-]digits]
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


def feature_tables(spec: DataSpec, path, skip_bad_lines=False, block_size=1 << 24):
    """The feature columns of ``path`` as Arrow record batches, as ``spec``'s reader sees them.

    Columns are named (Criteo's ``I1``..``I13``, ``C1``..``C26``; a CSV file's header) and
    in field order, typed as the reader hashes them: text for categoricals, numbers for
    Criteo's counts and CSV ``numeric`` columns. Like the readers, quotes around a value are
    removed, and a number is taken in the readers' syntax (a count must be an integer of magnitude
    at most 9e15). With ``skip_bad_lines`` the lines the reader skips are skipped (the wrong
    number of fields, a count or number it refuses); otherwise the first such line stops the
    read with the reader's error, naming the file and the line.

    Yields
    ------
    batch : pyarrow.RecordBatch
    """
    if spec.format == "libsvm":
        raise PipelineError("token counts need a hashed format (criteo, avazu, csv), not libsvm")
    reader = spec.reader(path)
    if spec.format == "criteo":
        counts = [f"I{i + 1}" for i in range(reader.N_COUNTS)]
        features = counts + [f"C{i + 1}" for i in range(reader.N_CATEGORICALS)]
        names = ["label", *features]
        read = csv.ReadOptions(column_names=names, block_size=block_size)
    else:
        counts = []
        features, names = reader.features, reader.columns
        read = csv.ReadOptions(block_size=block_size)
    numeric = set(counts) | set(spec.numeric if spec.format == "csv" else ())
    parse = csv.ParseOptions(
        delimiter=reader.sep,
        quote_char='"',
        invalid_row_handler=(lambda row: "skip") if skip_bad_lines else None,
    )
    # every column as bytes, checked below by the readers' rules
    convert = csv.ConvertOptions(column_types=dict.fromkeys(names, pa.binary()))
    try:
        with csv.open_csv(str(path), read, parse, convert) as stream:
            for batch in stream:
                batch, ok = _as_read(batch, features, numeric, set(counts), reader)
                if not ok.all():
                    if not skip_bad_lines:
                        raise pa.ArrowInvalid("a line the reader refuses")
                    batch = batch.filter(pa.array(ok))
                yield batch
    except pa.ArrowInvalid as exc:
        raise PipelineError(_first_bad_line(spec, path, skip_bad_lines, exc)) from None


def _as_read(batch, features, numeric, counts, reader):
    """The ``features`` of a batch of byte columns as ``reader`` takes them, and which rows
    it takes: text columns as UTF-8 text, ``numeric`` ones as float64 (empty: null), in the
    readers' number syntax (a count: an integer of magnitude at most 9e15). A row is refused
    for a value that is not UTF-8 or not such a number, a label the reader refuses, or a
    separator inside quotes in any column (the reader splits there)."""
    ok = np.ones(batch.num_rows, dtype=bool)
    for column in batch.columns:
        ok &= ~pc.match_substring(column, reader.sep).to_numpy(zero_copy_only=False)
    label = "label" if isinstance(reader, CriteoReader) else reader.label
    text, utf8 = _text_of(batch.column(label))
    labels, valid = _numbers_of(text)
    labels = labels.to_numpy(zero_copy_only=False)
    ok &= utf8 & valid & ~np.isnan(labels)
    if reader.binary_label:
        ok &= (labels == 0) | (labels == 1)
    columns = []
    for name in features:
        column, utf8 = _text_of(batch.column(name))
        ok &= utf8
        if name in numeric:
            column, valid = _numbers_of(column)
            ok &= valid
            if name in counts:
                values = column.to_numpy(zero_copy_only=False)
                with np.errstate(invalid="ignore"):
                    ok &= np.isnan(values) | ((values == np.floor(values)) & (abs(values) <= 9e15))
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=features), ok


def _numbers_of(column):
    """(float64 numbers of a text column, empty: null; which values the readers take)."""
    empty = pc.fill_null(pc.equal(column, ""), False)  # a null: a value that is not UTF-8
    text = pc.if_else(empty, pa.scalar(None, pa.string()), column)
    try:  # Arrow's parser, the fast way, takes every number in the readers' syntax...
        numbers = pc.cast(text, pa.float64())
        values = numbers.to_numpy(zero_copy_only=False)
        if np.all(np.isfinite(values) | np.isnan(values) & empty.to_numpy(zero_copy_only=False)):
            return numbers, np.ones(len(column), dtype=bool)
    except pa.ArrowInvalid:
        pass
    # ...and more ("inf", "nan"): where it refuses one or reads a non-finite number, the
    # readers' syntax decides
    valid = pc.fill_null(pc.or_(empty, pc.match_substring_regex(column, _NUMBER)), False)
    text = pc.if_else(pc.and_not(valid, empty), column, pa.scalar(None, pa.string()))
    return pc.cast(text, pa.float64()), valid.to_numpy(zero_copy_only=False)


def _text_of(column):
    """(a byte column as text, which values are UTF-8: the others are nulls)."""
    try:
        return column.cast(pa.string()), np.ones(len(column), dtype=bool)
    except pa.ArrowInvalid:  # rare: find the values that are not UTF-8, one by one
        values = [_utf8_or_none(v) for v in column.to_pylist()]
        return pa.array(values, pa.string()), np.array([v is not None for v in values])


def _utf8_or_none(value: bytes):
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def _first_bad_line(spec, path, skip_bad_lines, exc) -> str:
    """The reader's error (file, line, what) on the line the Arrow reading stopped at: the
    reader parses the file again, up to it."""
    try:
        for _ in spec.reader(path, skip_bad_lines=skip_bad_lines).chunks():
            pass
    except ValueError as error:
        return str(error).replace("(skip_bad_lines=True skips", "(--skip-bad-lines skips")
    return f"{path}: cannot count its tokens: {exc}"


def file_hasher(spec: DataSpec, max_tokens=10_000):
    """The FieldHasher that hashes :func:`feature_tables` into the columns of ``spec``'s reader,
    keeping token counts (Criteo's counts are bucketed, CSV ``numeric`` columns kept as values)."""
    return FieldHasher(
        spec.n_bits,
        numeric="bucket" if spec.format == "criteo" else "value",
        field_aware=spec.field_aware,
        keep_tokens=True,
        max_tokens=max_tokens,
        interactions=spec.interactions,
    )


def count_tokens(spec: DataSpec, path, skip_bad_lines=False, max_tokens=10_000):
    """The (field, value) pairs of ``path`` and their counts, hashed as ``spec`` hashes them.

    Returns
    -------
    tokens : sparseopt.datasets.Tokens
        At most ``max_tokens`` pairs per field, the most frequent (see
        :meth:`FieldHasher.partial_fit <sparseopt.FieldHasher.partial_fit>`).
    """
    hasher = file_hasher(spec, max_tokens)
    for batch in feature_tables(spec, path, skip_bad_lines):
        try:
            hasher.partial_fit(batch)
        except ValueError as exc:
            raise PipelineError(f"{path}: cannot count its tokens: {exc}") from None
    if not hasattr(hasher, "tokens_"):
        raise PipelineError(f"{path} has no rows to count tokens in")
    return hasher.tokens_


def save_tokens(tokens, out_dir, model_path) -> Path:
    """Save ``tokens`` in ``out_dir`` with the SHA-256 of the model file they name, so that
    ``sparseopt inspect`` refuses them beside any other model."""
    tokens.model_sha256 = file_sha256(model_path)
    path = Path(out_dir) / TOKENS_FILE
    tokens.save(path)
    return path


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- prediction ----------------------------------------------------------------------------
def predict_file(model, chunks, out) -> int:
    """Write one click probability per row of ``chunks`` to ``out``; returns rows."""
    out = Path(out)
    n = 0

    def write(f):
        nonlocal n
        for X, _ in chunks:
            p = model.predict_proba(X)[:, 1]
            f.write(("\n".join(f"{v:.6g}" for v in p) + "\n").encode())
            n += len(p)

    if out.parent != Path(""):
        out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, write)
    return n


@contextmanager
def sigterm_as_interrupt():
    """Within the block, ``kill`` (SIGTERM) raises KeyboardInterrupt, so it checkpoints like
    Ctrl-C; the previous handler is restored after. Only the main thread can set handlers."""
    if os.name != "posix" or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
