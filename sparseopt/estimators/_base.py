"""What every sparseopt estimator shares, and the training protocol that drives them all.

The training protocol
---------------------
``fit`` and ``partial_fit``, the command line (:mod:`sparseopt.pipeline`,
``sparseopt train --model mf``) and the Dask front end (:mod:`sparseopt.dask`) train every
model through these calls and no other::

    training = estimator.start_training(X, classes=None, reset=True)  # a Training
    rows = training.rows(X, y)              # checked and encoded once
    order = training.order(rows, rng)       # an epoch's order (shuffle, threads)
    loss = training.epoch(rows, order)      # one pass over the rows in ``order``, in place
    training.catch_up()                     # bring lazily updated coordinates up to date
    training.finish(curve)                  # check the model, then hand it to the estimator

``X`` given to ``start_training`` fixes the columns and the value type (for a linear model or
factorization machine, a matrix of zero rows will do; matrix factorization takes every
interaction, which its model keeps). ``order`` may also come from the caller: a Dask worker
trains its share ``order[start:stop]`` of a block. A data-parallel trainer merges copies of
the model as well: :meth:`Training.tables` names the tables and how each merges,
:meth:`Training.touched` the rows an order may change, :meth:`Training.table` reads one, and
:meth:`Training.prepare_merge`, :meth:`Training.advance` and :meth:`Training.set_clock` keep
the copies consistent. :class:`Training` implements it for the linear models and factorization
machines through their estimator's hooks, ``_MFTraining`` (:mod:`._mf`) for matrix
factorization; a model whose ``start_training`` returns such an object runs everywhere.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, NamedTuple

import numba
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .._io import save_model
from .._jit import JIT
from ..models._hogwild import hogwild_order
from ..optim import FTRL, OPTIMIZERS, AdaGrad, Adam, Optimizer
from ..optim import _rules as R
from ..optim._optimizers import ACCUMULATOR_SLOT  # noqa: F401 (moved; t31 drops it)

if TYPE_CHECKING:
    from .._typing import FilePath


# optimizer="adam" or "amsgrad": the lazy mode, chosen by 5-fold cross-validation at the
# default learning rate on a9a and the Criteo and Avazu heads, logistic regression and FM
# (benchmarks/README.md, "Adam's lazy modes"): "decay" had the lowest logloss and the highest
# AUC in all 12 cases; "exact" (dense Adam) the worst, and FM with it overshot on Criteo
DEFAULT_LAZY = "decay"


class DivergenceError(ValueError):
    """Training produced non-finite or absurd values (weights beyond any sane range, a loss
    far worse than a constant prediction): the learning rate is too large for the data."""


class Rows(NamedTuple):
    """Training rows as the kernels take them: canonical CSR, encoded targets, weights."""

    X: object
    targets: np.ndarray
    weights: np.ndarray


class SparseEstimator(BaseEstimator):
    """Base of every sparseopt estimator: optimizer and learning rate, threads, device,
    divergence, saving.

    A subclass gives ``_default_learning_rate(name)``, ``_configure(opt)`` (its own penalties
    and refusals), ``_has_gpu_path``, ``_saved()`` and ``_from_file``, and
    ``start_training``, which returns its :class:`Training`.
    """

    _has_gpu_path = False  # device="cuda" trains on the GPU (else it is refused)

    # -- optimizer ---------------------------------------------------------------------------
    def _make_optimizer(self) -> Optimizer:
        """A fresh copy of the configured optimizer: the named one at this estimator's default
        learning rate (Adam and AMSGrad with ``lazy=DEFAULT_LAZY``), or a copy of the given
        object, with ``learning_rate`` applied unless "auto", then the estimator's own
        settings (``_configure``), validated."""
        if isinstance(self.optimizer, Optimizer):
            opt = copy.deepcopy(self.optimizer)
        else:
            opt = OPTIMIZERS[self.optimizer]()
            opt.learning_rate = self._default_learning_rate(self.optimizer)
            if isinstance(opt, Adam):
                opt.lazy = DEFAULT_LAZY
        if self.learning_rate != "auto":
            opt.learning_rate = self.learning_rate
        self._configure(opt)
        opt.hyperparameters()  # validate now, before any state changes
        opt.schedule_spec()
        return opt

    def _configure(self, opt: Optimizer) -> None:
        """Apply the estimator's own settings to ``opt`` (penalties), or refuse it."""

    def _refuse_ftrl(self, opt: Optimizer) -> None:
        """Factor models: FTRL's closed-form weights would discard the random factors."""
        if isinstance(opt, FTRL):
            raise ValueError(
                f"{type(self).__name__} cannot use FTRL: its closed-form weights discard the "
                f"factors' random initialization; use optimizer='adagrad'"
            )

    def _per_row(self, opt: Optimizer) -> bool:
        """Whether factor vectors keep one AdaGrad accumulator each (``factor_state``)."""
        if self.factor_state == "auto":
            return isinstance(opt, AdaGrad)
        if self.factor_state == "row" and not isinstance(opt, AdaGrad):
            raise ValueError(
                f"factor_state='row' (one accumulator per factor vector) needs AdaGrad; got "
                f"{type(opt).__name__}: use factor_state='element' or optimizer='adagrad'"
            )
        return self.factor_state == "row"

    # -- where it runs -----------------------------------------------------------------------
    def _n_threads(self) -> int:
        """Training threads from ``n_jobs`` (None: 1; -1: all, -2: all but one...), after
        checking ``device``."""
        if self.device == "cuda" and not self._has_gpu_path:
            raise ValueError(
                f"device='cuda': {type(self).__name__} has no GPU path yet (the linear "
                f"estimators have one); use device='cpu' or 'auto' (the CPU)"
            )
        n, most = self.n_jobs, numba.config.NUMBA_NUM_THREADS
        if n is None:
            return 1
        if n == 0:
            raise ValueError("n_jobs=0: give a positive number of threads, -1 (all) or None")
        return max(1, min(most + 1 + n if n < 0 else n, most))

    # -- divergence --------------------------------------------------------------------------
    def _diverged(self, opt: Optimizer, what: str = "non-finite loss or weights"):
        """Raise DivergenceError: training diverged because of ``what``."""
        raise DivergenceError(
            f"training diverged ({what}) with optimizer {type(opt).__name__} and "
            f"learning_rate={opt.learning_rate!r}: try a smaller learning_rate, or scale the "
            f"features"
        )

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: FilePath) -> None:
        """Save to ``path`` (.npz of arrays and JSON metadata, no pickle), atomically.

        The optimizer state is saved too: a loaded model can go on with ``partial_fit``.
        Load it with :func:`sparseopt.load`.
        """
        check_is_fitted(self)
        arrays, attributes = self._saved()
        save_model(path, self, arrays, attributes)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class Training:
    """One training of a linear model or factorization machine, in progress (the protocol
    of the module docstring).

    It holds the optimizer, the model's ``state`` (its tables) and the kernels' scratch;
    :meth:`finish` hands the state to the estimator, whose fitted attributes change nowhere
    else. Started with ``in_place`` it trains the fitted state itself (no copy: a failure
    leaves it partly trained, for callers that keep checkpoints).
    """

    def __init__(self, estimator, optimizer, state, n_features, classes, reset):
        self.estimator = estimator
        self.optimizer = optimizer
        self.state = state
        self.n_features = n_features
        self.classes = classes
        self.n_iter_start = 0 if reset else getattr(estimator, "n_iter_", 0)
        self.n_outputs = 1 if classes is None or len(classes) == 2 else len(classes)
        self.n_threads = estimator._n_threads()
        self.loss = estimator._loss_code(self.n_outputs)
        self.scratch = estimator._new_scratch(state)

    def __getstate__(self):  # sent to Dask workers: the scratch is made anew there
        return {**vars(self), "scratch": None}

    def __setstate__(self, values):
        vars(self).update(values)
        self.scratch = self.estimator._new_scratch(self.state)

    # -- rows --------------------------------------------------------------------------------
    def rows(self, X, y, sample_weight=None, *, first_row=0) -> Rows:
        """Check ``X`` and ``y`` and encode them for :meth:`epoch`.

        ``X``: SciPy sparse rows of the training's columns (float32 or float64: the state's
        type is used); ``y``: labels or values; ``sample_weight``: non-negative, or None;
        ``first_row``: where X starts in the whole data (a block's offset), which matters to
        models whose rows are entities (matrix factorization's users), not here.
        """
        est = self.estimator
        X = est._canonical(X, self.n_features, self.state.table.dtype)
        y = np.asarray(y).reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} values")
        return self._rows(X, y, sample_weight)

    def _rows(self, X, y, sample_weight) -> Rows:
        """:meth:`rows` of an X already validated and canonical."""
        est = self.estimator
        targets = est._encode_targets(y, self.classes)
        weights = est._sample_weight(X, targets, sample_weight, self.classes)
        return Rows(X, targets, weights)

    def max_epochs(self) -> int:
        """Epochs a fit without held-out rows runs (a Dask fit): ``max_iter``, one for
        "auto" (on click logs one pass is what held-out rows pick)."""
        max_iter = self.estimator.max_iter
        return 1 if max_iter == "auto" else max_iter

    def count(self, rows: Rows) -> int:
        """How many updates ``rows`` hold (what an order indexes): here, rows of X."""
        return rows.X.shape[0]

    def order(self, rows: Rows, rng) -> np.ndarray:
        """An epoch's order of ``rows``: shuffled with ``rng`` (a Generator or RandomState)
        if the estimator shuffles, laid out for its threads."""
        n_rows = self.count(rows)
        order = rng.permutation(n_rows) if self.estimator.shuffle else np.arange(n_rows)
        return hogwild_order(order, self.n_threads) if self.n_threads > 1 else order

    # -- training ----------------------------------------------------------------------------
    def epoch(self, rows: Rows, order: np.ndarray) -> float:
        """Train the state in place on ``rows`` in ``order`` (indices of rows, each one
        update, ``batch_size`` at a time); returns the sum of the rows' weighted losses,
        each taken before its update. Raises DivergenceError on a non-finite loss."""
        X, targets, weights = rows
        if order.size and (order.min() < 0 or order.max() >= X.shape[0]):
            raise ValueError(f"order holds a row index outside 0 .. {X.shape[0] - 1}")
        return self.estimator._run_epoch(self, X, targets, weights, order)

    def catch_up(self) -> None:
        """Apply every coordinate's pending lazy steps (weight decay, momentum): the state is
        then the same as after dense updates."""
        self.estimator._catch_up(self.optimizer, self.state)

    def check(self, rows: Rows | None = None, loss: float | None = None) -> None:
        """Raise DivergenceError if a weight is not finite or beyond any sane range, or if
        ``loss`` (a mean training loss over ``rows``) is far worse than a constant
        prediction's."""
        est = self.estimator
        if not est._is_finite(self.state):
            est._diverged(self.optimizer)
        targets, weights = (None, None) if rows is None else rows[1:]
        est._refuse_useless(self.optimizer, self.state, loss, targets, weights, self.classes)

    def refuse(self, what: str):
        """Raise DivergenceError, naming ``what`` went wrong and the learning rate."""
        self.estimator._diverged(self.optimizer, what)

    def finish(self, curve, *, scores=(), rows: Rows | None = None):
        """Check the state (see :meth:`check`; ``rows``: also the last loss of ``curve`` on
        them), then make it the estimator's fitted model; ``curve``: the mean training loss
        of each epoch of this training, ``scores`` their held-out losses. Returns the
        estimator."""
        self.check(rows, curve[-1] if rows is not None and len(curve) else None)
        est = self.estimator
        est.state_ = self.state
        est.optimizer_ = self.optimizer
        if self.classes is not None:
            est.classes_ = self.classes
        est.n_features_in_ = self.n_features
        est.n_iter_ = self.n_iter_start + len(curve)
        est.t_ = int(self.state.clock[R.CLOCK_T])
        est.loss_curve_ = list(curve)
        est.validation_scores_ = list(scores)
        return est

    # -- merging copies (sparseopt.dask) ---------------------------------------------------
    def tables(self) -> dict:
        """``{name: (parameter columns, accumulator slot, shared)}``: the state's tables, each
        row ``[parameters..., slots...]``. Rows of a shared table merge across copies by
        :func:`sparseopt.dask.merge_table`, weighted by the accumulator slot (None:
        averaged); a table that is not shared has each row trained by one copy only."""
        return {name: (n_params, accumulator, True) for name, (_, n_params, accumulator)
                in self.estimator._merge_layout(self.state, self.optimizer).items()}  # fmt: skip

    def table(self, name: str) -> np.ndarray:
        """The table ``name`` of :meth:`tables`, to read or write in place."""
        if name not in self.tables():
            raise KeyError(name)
        return getattr(self.state, name)

    def touched(self, rows: Rows, order: np.ndarray) -> dict:
        """``{name: rows of the table, or None for all}`` that training on ``rows`` in
        ``order`` may change (before a catch-up, which moves every row of a lazy model):
        those of the features the rows hold."""
        X = rows.X
        seen = np.zeros(X.shape[1], bool)
        _mark_columns(X.indptr, X.indices, order, seen)
        features = np.flatnonzero(seen)
        layout = self.estimator._merge_layout(self.state, self.optimizer)
        return {name: None if r is None else (features[:, None] * r + np.arange(r)).ravel()
                for name, (r, _, _) in layout.items()}  # fmt: skip

    def prepare_merge(self, touched) -> None:
        """Make the state what every copy started from on the rows each copy touched
        (``touched``: one :meth:`touched` result per copy), before merging them."""
        self.estimator._prepare_merge(self.optimizer, self.state, touched)

    def lazy(self) -> bool:
        """Whether coordinates keep pending steps (then :meth:`catch_up` moves every row)."""
        return self.state.stamp.size > 0

    def clock(self) -> np.ndarray:
        """The optimizer's clock (its step count is ``clock()[CLOCK_T]``)."""
        return self.state.clock

    def advance(self, steps: int) -> None:
        """Move the clock ``steps`` optimizer steps on, every coordinate up to date with it
        (after merging copies that took ``steps`` steps in all, each caught up)."""
        clock = self.clock()
        R.advance_clock(self.optimizer.hyperparameters(), self.optimizer.schedule_spec(),
                        clock, steps)  # fmt: skip
        self.set_clock(clock)

    def set_clock(self, clock) -> None:
        """Set the clock to ``clock``, every coordinate up to date with it."""
        self.state.clock[:] = clock
        self.state.stamp[:] = clock[R.CLOCK_T]
        self.state.mark[:] = clock[R.CLOCK_LOG_DECAY]


@numba.njit(**JIT)
def _mark_columns(indptr, indices, rows, seen):
    """``seen[j] = True`` for every column j of the CSR ``rows``.

    The rows are visited in storage order: in the shuffled order of ``rows`` every row read
    misses the cache, which made this cost 60% of a linear model's training (on Dask).
    """
    take = np.zeros(indptr.size - 1, np.bool_)
    for r in rows:
        take[r] = True
    for r in range(take.size):
        if take[r]:
            for p in range(indptr[r], indptr[r + 1]):
                seen[indices[p]] = True


__all__ = ["DivergenceError", "Rows", "SparseEstimator", "Training"]
