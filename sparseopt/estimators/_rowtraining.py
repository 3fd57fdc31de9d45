"""The rows' half of the training protocol (:mod:`._base`), shared by the linear models and
the factorization machines: rows checked and encoded, their order, the divergence checks,
the fitted attributes and the merge calls. A family's training (``LinearTraining``,
``FMTraining``) adds its kernels."""

from __future__ import annotations

import copy
from abc import abstractmethod

import numba
import numpy as np
import scipy.sparse as sp
from sklearn.base import is_regressor
from sklearn.utils import compute_class_weight
from sklearn.utils.validation import _check_sample_weight

from .._jit import JIT
from ..models import _losses as losses
from ..models._hogwild import run_threads, thread_ranges
from ..optim import _rules as R
from . import _safety
from ._base import Rows, Training, diverged

# the kernels' loss code of each loss a row model names
LOSS_CODES = {"logistic": losses.LOGISTIC, "softmax": losses.SOFTMAX,
              "squared": losses.SQUARED, "huber": losses.HUBER}  # fmt: skip


# learning rates that worked across the test problems when the user gives none (a rule of its
# own module, without a rate tuned here, runs at its class's default)
DEFAULT_LEARNING_RATE = {
    "sgd": 0.01,
    "momentum": 0.005,
    "adagrad": 0.05,
    "rmsprop": 0.005,
    "adam": 0.005,
    "amsgrad": 0.005,
    "ftrl": 0.1,
}


def n_outputs_of(classes) -> int:
    """A row model's outputs: one for a regressor or two classes, else one per class."""
    return 1 if classes is None or len(classes) == 2 else len(classes)


def _to_csr(X) -> sp.csr_matrix:
    """Canonical CSR (sorted, no repeated column in a row) without copying when it is one."""
    if not sp.issparse(X):
        X = sp.csr_matrix(X)
    X = X.tocsr() if X.format != "csr" else X
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    return X


def canonical_rows(X, n_features, dtype, owner: str):
    """Sparse rows from outside ``fit`` (the command line, a Dask block) checked as ``fit``
    checks them, as canonical CSR of values ``dtype`` (``owner`` names the model)."""
    if not sp.issparse(X):
        raise TypeError(f"X must be a SciPy sparse matrix, got {type(X).__name__}")
    _safety.check_sparse_structure(X, csr_indices=False)
    _safety.check_input_width(X, n_features, owner)
    if X.dtype not in (np.float32, np.float64):
        raise TypeError(f"X must hold float32 or float64 values, got {X.dtype}")
    X = _to_csr(X)
    _safety.check_nonzeros(X)
    return X if X.dtype == dtype else X.astype(dtype)


def encode_targets(y, classes) -> np.ndarray:
    """``y`` as the kernels' float64 targets: indices into the sorted ``classes`` of a
    classifier, or the values themselves (``classes`` None: a regressor)."""
    if classes is None:
        y = np.asarray(y, dtype=np.float64)
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinite values")
        return y
    y = np.asarray(y)
    if classes.size == 2 and y.dtype.kind in "biuf" and classes.dtype.kind in "biuf":
        upper = y == classes[1]  # two numeric classes: two comparisons, no search
        known = (upper | (y == classes[0])).all()
        index = upper
    else:
        index = np.clip(np.searchsorted(classes, y), 0, classes.size - 1)
        known = np.array_equal(classes[index], y)
    if not known:
        unknown = np.setdiff1d(y, classes)
        raise ValueError(f"y has labels {unknown!r} not in classes {classes!r}")
    return index.astype(np.float64)


def row_weights(X, targets, sample_weight, classes, class_weight) -> np.ndarray:
    """Each row's weight in the loss: ``sample_weight`` (None: 1) times its class's weight
    (``class_weight`` of a classifier: a dict, "balanced" or None)."""
    weights = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
    if not np.isfinite(weights).all():
        raise ValueError("sample_weight contains NaN or infinite values")
    if class_weight is None:
        return weights
    labels = targets.astype(np.int64)
    present = np.unique(labels)
    per_class = np.ones(classes.size)
    per_class[present] = compute_class_weight(
        class_weight, classes=classes[present], y=classes[labels]
    )
    return weights * per_class[labels]


def check_tables(state, n_features, n_outputs, n_slots=None, scan=True) -> None:
    """Raise ValueError unless ``state`` has exactly the tables the kernels index for
    ``n_features`` columns, ``n_outputs`` outputs and ``n_slots`` slots (None: any)."""
    table = _safety.check_array("state_.table", state.table, None, (np.float64, np.float32))
    if table.ndim != 2 or table.shape[1] < 1:
        raise ValueError(f"state_.table has shape {table.shape}, expected 2-D")
    width = table.shape[1] if n_slots is None else 1 + n_slots
    _safety.check_array("state_.table", table, (n_features * n_outputs, width), table.dtype)
    _safety.check_array("state_.bias", state.bias, (n_outputs, width), table.dtype)
    _safety.check_array("state_.clock", state.clock, (R.CLOCK_SIZE,), np.float64)
    stamped = state.stamp.shape if isinstance(state.stamp, np.ndarray) else None
    if stamped not in ((0,), (n_features,)):
        raise ValueError(f"state_.stamp has shape {stamped}, expected (0,) or ({n_features},)")
    _safety.check_array("state_.stamp", state.stamp, stamped, np.float64)
    _safety.check_array("state_.mark", state.mark, stamped, np.float64)


def check_state(state, state_type, n_features, n_outputs, n_slots=None, scan=True) -> None:
    """Raise ValueError unless ``state`` is a ``state_type`` whose ``check`` passes."""
    if not isinstance(state, state_type):
        raise ValueError(f"state_ must be a {state_type.__name__}")
    state.check(n_features, n_outputs, n_slots, scan)


def check_fitted(state, state_type, n_features, n_outputs, fitted) -> None:
    """A loaded state against itself and ``fitted``, the optimizer it was fitted with."""
    check_state(state, state_type, n_features, n_outputs, fitted.initial_slots().size)
    if state.stamp.size != (n_features if fitted.needs_stamp else 0):
        raise ValueError(
            f"the stamps ({state.stamp.size}) do not fit optimizer_ "
            f"{type(fitted).__name__} (with{'' if fitted.needs_stamp else 'out'} weight decay)"
        )


def check_continued(fitted, state_type, n_features, n_outputs, opt) -> None:
    """The state of ``fitted = (state, optimizer_ or None, in_place)`` against ``opt``,
    the optimizer of the parameters, before it trains on."""
    state, fitted_opt, _ = fitted
    n_slots = opt.initial_slots().size
    if (fitted_opt is not None and type(fitted_opt) is not type(opt)) or (
        getattr(state.table, "ndim", 0) == 2 and state.table.shape[1] != 1 + n_slots
    ):
        was = type(fitted_opt).__name__ if fitted_opt is not None else "another optimizer"
        raise ValueError(
            f"optimizer {type(opt).__name__} differs from {was}, which the model was "
            f"fitted with: its state does not carry over; set the optimizer back to "
            f"continue training, or call fit (warm_start=False) to start over"
        )
    check_state(state, state_type, n_features, n_outputs, n_slots)
    if state.stamp.size != (n_features if opt.needs_stamp else 0):
        raise ValueError(
            f"the model was fitted {'without' if opt.needs_stamp else 'with'} weight decay "
            f"(alpha or the optimizer's weight_decay): its state does not carry over; set "
            f"it back to continue training, or call fit (warm_start=False) to start over"
        )


def continued_state(fitted, dtype):
    """The checked state of ``fitted`` to train on, as ``dtype``: itself if ``in_place``,
    else a copy."""
    state, _, in_place = fitted
    state = state if in_place else copy.deepcopy(state)
    state.cast(dtype)
    return state


class RowTraining(Training):
    """What the linear models' and the factorization machines' trainings share (the
    protocol of :mod:`._base`): the optimizer, the ``state``, the kernels' scratch and the
    parameters training reads (``params``: the estimator's ``get_params()``), read once here.

    A family's training is made by its ``start(estimator, params, X, fitted, classes,
    n_iter_start, n_threads)`` and gives ``state_type``, ``make_optimizer(params)``,
    ``decision(state, X)`` (margins), its kernels (``epoch``, ``catch_up``,
    ``prepare_merge``), ``scratch_fill``, ``_merge_layout`` and the settings
    ``max_iter="auto"`` races (``candidates``, ``follow_up``, ``setting``); its state gives
    ``check``, ``weights()`` and ``is_finite()``.
    """

    def __init__(self, estimator, params, optimizer, state, n_features, classes,
                 n_iter_start, n_threads):  # fmt: skip
        self.estimator = estimator  # whose fitted model finish sets
        self.params = params
        self.optimizer, self.state, self.n_features = optimizer, state, n_features
        self.classes, self.n_iter_start, self.n_threads = classes, n_iter_start, n_threads
        self.n_outputs = n_outputs_of(classes)
        self.batch_size = int(params["batch_size"])
        self.step_rows = 1 if n_threads > 1 else self.batch_size  # Hogwild: single rows
        self.fit_intercept = bool(params["fit_intercept"])
        self.shuffle, self.max_iter = params["shuffle"], params["max_iter"]
        self.device = params["device"]
        self.class_weight = params.get("class_weight")
        self.delta = float(params.get("epsilon", 0.0))  # Huber's threshold
        self.regressor = is_regressor(estimator)
        if self.regressor:
            self.loss_name = params["loss"]
        else:
            self.loss_name = "logistic" if self.n_outputs == 1 else "softmax"
        self.loss = LOSS_CODES[self.loss_name]
        self.scratch = self._new_scratch()

    def __getstate__(self):  # sent to Dask workers: the scratch is made anew there
        return {**vars(self), "scratch": None}

    def __setstate__(self, values):
        vars(self).update(values)
        self.scratch = self._new_scratch()

    def _new_scratch(self) -> np.ndarray:
        """The kernels' scratch for the state (empty for single-row steps), filled with the
        family's ``scratch_fill``."""
        return np.full(self.state.table.shape[0] if self.batch_size > 1 else 0, self.scratch_fill)

    # -- rows --------------------------------------------------------------------------------
    def rows(self, X, y, sample_weight=None, *, first_row=0) -> Rows:
        """SciPy sparse rows ``X`` of the training's columns (float32 or float64: the state's
        type is used), labels or values ``y``, non-negative ``sample_weight`` or None;
        ``first_row`` does not matter here (rows are not entities)."""
        X = canonical_rows(X, self.n_features, self.state.table.dtype, self.params["owner"])
        y = np.asarray(y).reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} values")
        return self._rows(X, y, sample_weight)

    @staticmethod
    def _kernel_rows(X):
        """Canonical CSR ``X`` as the family's kernels take it."""
        return X

    def _rows(self, X, y, sample_weight) -> Rows:
        """:meth:`rows` of an X already validated and canonical."""
        targets = encode_targets(y, self.classes)
        weights = row_weights(X, targets, sample_weight, self.classes, self.class_weight)
        return Rows(self._kernel_rows(X), targets, weights)

    def max_epochs(self) -> int:
        """``max_iter``, one for "auto" (on click logs one pass is what held-out rows pick)."""
        return 1 if self.max_iter == "auto" else self.max_iter

    def count(self, rows: Rows) -> int:
        """Rows of X: each is one update (``batch_size`` of them one optimizer step)."""
        return rows.X.shape[0]

    def order(self, rows: Rows, rng) -> np.ndarray:
        """An epoch's order of ``rows``: shuffled with ``rng`` (a Generator or RandomState)
        with ``shuffle``; with threads, each takes a contiguous range of it."""
        n_rows = self.count(rows)
        return rng.permutation(n_rows) if self.shuffle else np.arange(n_rows)

    # -- the settings max_iter="auto" races ------------------------------------------------
    def candidates(self) -> list:
        """The trainings that ``max_iter="auto"`` races on the held-out rows, this one
        first: here, this one alone."""
        return [self]

    def follow_up(self, best_state, done: int):
        """After a race and ``done`` follow-ups: a training of a copy of ``best_state`` (the
        kept run's best) with another setting, to go on from its best epoch and be kept if
        its held-out loss goes lower; None when there are no more. Here none."""
        return None

    def setting(self) -> str:
        """What distinguishes this training among the candidates (for ``verbose``)."""
        return f"learning_rate={self.optimizer.learning_rate!r}"

    # -- checks ------------------------------------------------------------------------------
    def check(self, rows: Rows | None = None, loss: float | None = None) -> None:
        """Raise DivergenceError if a weight is not finite or beyond any sane range
        (``_safety.MAX_WEIGHT``, times the largest |y| for a regressor), or if ``loss`` (a
        mean training loss over ``rows``) is far worse than a constant prediction's."""
        if not self.state.is_finite():
            self.refuse("non-finite loss or weights")
        targets, weights = (None, None) if rows is None else rows[1:]
        bound = _safety.MAX_WEIGHT
        if self.regressor:
            scale = np.inf if targets is None else np.abs(targets).max(initial=1.0)
            with np.errstate(over="ignore"):  # targets near the float range: no bound (inf)
                bound *= max(1.0, scale)
        largest = _safety.largest_magnitude(*self.state.weights())
        if not largest <= bound:
            self.refuse(f"a weight reached {largest:.3g} (the limit is {bound:.3g})")
        if loss is not None:
            self._refuse_useless(loss, targets, weights)

    def _refuse_useless(self, loss, targets, weights):
        """Raise DivergenceError if ``loss`` on ``targets`` is far worse than a constant
        prediction's."""
        n_classes = 0 if self.classes is None else len(self.classes)
        kind, delta = self.loss_name, self.delta
        zero = _safety.zero_model_loss(kind, targets, weights, delta, n_classes)

        def constant():
            return _safety.constant_loss(kind, targets, weights, delta)

        if _safety.useless_fit(loss, len(targets), zero, constant):
            self.refuse(
                f"the training loss ended at {loss:.4g}, far worse than a constant "
                f"prediction's {constant():.4g}"
            )

    def run_pass(self, train, arguments, hp, spec, n_rows: int) -> float:
        """``train(start, stop, pace, *arguments)`` over an epoch's order of ``n_rows`` rows,
        serially or on ``n_threads`` Hogwild threads (:func:`run_threads`: each with its own
        clock and intercepts, on a contiguous range each, or for rules that keep no stamps
        taking the next of ``_RANGES_PER_THREAD`` ranges per thread in turn); returns the
        summed loss, a bad status refused."""
        n_ranges = self.n_threads
        if n_ranges > 1 and self.state.stamp.size == 0:
            n_ranges *= _RANGES_PER_THREAD
        status, total = run_threads(
            train, thread_ranges(n_rows, n_ranges), [arguments] * n_ranges,
            self.state.clock, hp, spec, self.state.bias, self.n_threads,
        )  # fmt: skip
        self.refuse_status(status)
        return total

    def refuse_status(self, status: int) -> None:
        """Raise DivergenceError unless the kernels' ``status`` is OK."""
        if status != losses.OK:
            diverged(self.optimizer)

    def finish(self, curve, *, scores=(), rows: Rows | None = None):
        """:meth:`check` the state (with ``rows``: the last loss of ``curve``, each epoch's
        mean training loss, too), then make it the estimator's fitted model (``scores``:
        the held-out losses); returns the estimator."""
        self.check(rows, curve[-1] if rows is not None and len(curve) else None)
        est = self.estimator
        est.state_, est.optimizer_ = self.state, self.optimizer
        if self.classes is not None:
            est.classes_ = self.classes
        est.n_features_in_ = self.n_features
        est.n_iter_ = self.n_iter_start + len(curve)
        est.t_ = int(self.state.clock[R.CLOCK_T])
        est.loss_curve_ = list(curve)
        est.validation_scores_ = list(scores)
        return est

    # -- merging copies (sparseopt.dask) ---------------------------------------------------
    @abstractmethod
    def _merge_layout(self) -> dict:
        """``{name: (rows per feature or None for all, parameter columns, accumulator
        slot)}`` of the state's tables."""

    def tables(self) -> dict:
        """Every table of the state is shared (see :meth:`Training.tables`)."""
        return {name: (n_params, accumulator, True)
                for name, (_, n_params, accumulator) in self._merge_layout().items()}  # fmt: skip

    def table(self, name: str) -> np.ndarray:
        if name not in self.tables():
            raise KeyError(name)
        return getattr(self.state, name)

    def touched(self, rows: Rows, order: np.ndarray) -> dict:
        """The table rows of the features that the rows in ``order`` hold (an ``order`` as
        long as the rows is a permutation of them, :meth:`order`: then every stored entry)."""
        X = rows.X
        seen = np.zeros(X.shape[1], bool)
        if order.size == X.shape[0]:
            _mark_entries(X.indices[X.indptr[0] : X.indptr[-1]], seen)
        else:
            _mark_columns(X.indptr, X.indices, order, seen)
        features = np.flatnonzero(seen)
        return {name: None if r is None else features if r == 1
                else (features[:, None] * r + np.arange(r)).ravel()
                for name, (r, _, _) in self._merge_layout().items()}  # fmt: skip

    def lazy(self) -> bool:
        return self.state.stamp.size > 0

    def clock(self) -> np.ndarray:
        return self.state.clock

    def set_clock(self, clock) -> None:
        self.state.clock[:] = clock
        self.state.stamp[:] = clock[R.CLOCK_T]
        self.state.mark[:] = clock[R.CLOCK_LOG_DECAY]


# Ranges of an epoch per Hogwild thread, taken in turn (see run_threads): 8 leaves a thread
# on a slow core at most an eighth of its share behind, at 16 kernel calls per epoch.
_RANGES_PER_THREAD = 8


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


@numba.njit(**JIT)
def _mark_entries(columns, seen):
    """``seen[j] = True`` for every j of ``columns`` (checked column indices). A whole block's
    touched rows (250,000 rows, 11.2 million entries of a Zipf click log, issue 32) took
    5.9 ms this way against 9.3 ms row by row through :func:`_mark_columns`."""
    for j in columns:
        seen[j] = True
