"""The rows' half of the training protocol (:mod:`._base`), shared by the linear models and
the factorization machines: rows checked and encoded, their order, the divergence checks,
the fitted attributes and the merge calls. A family's training (``LinearTraining``,
``FMTraining``) adds its kernels."""

from __future__ import annotations

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


class RowTraining(Training):
    """A training of a row model (the protocol of :mod:`._base`): what the linear models'
    and the factorization machines' trainings share.

    It holds the optimizer, the model's ``state`` (its tables), the kernels' scratch and the
    estimator's parameters that training reads, read once here. A family's training gives
    its kernels (``epoch``, ``catch_up``, ``prepare_merge``), ``scratch_fill``, its merge
    layout (``_merge_layout``) and the settings ``max_iter="auto"`` races (``candidates``,
    ``follow_up``, ``setting``); its state gives ``weights()`` and ``is_finite()``.
    """

    def __init__(self, estimator, optimizer, state, n_features, classes, n_iter_start,
                 n_threads):  # fmt: skip
        self.estimator = estimator  # whose fitted model finish sets
        self.optimizer = optimizer
        self.state = state
        self.n_features = n_features
        self.classes = classes
        self.n_iter_start = n_iter_start
        self.n_threads = n_threads
        self.n_outputs = n_outputs_of(classes)
        # the parameters training reads, once
        self.batch_size = int(estimator.batch_size)
        self.fit_intercept = bool(estimator.fit_intercept)
        self.shuffle = estimator.shuffle
        self.max_iter = estimator.max_iter
        self.device = estimator.device
        self.class_weight = getattr(estimator, "class_weight", None)
        self.delta = float(getattr(estimator, "epsilon", 0.0))  # Huber's threshold
        self.regressor = is_regressor(estimator)
        if self.regressor:
            self.loss_name = estimator.loss
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
        owner = type(self.estimator).__name__
        X = canonical_rows(X, self.n_features, self.state.table.dtype, owner)
        y = np.asarray(y).reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} values")
        return self._rows(self._kernel_rows(X), y, sample_weight)

    @staticmethod
    def _kernel_rows(X):
        """Canonical CSR ``X`` as the family's kernels take it."""
        return X

    def _rows(self, X, y, sample_weight) -> Rows:
        """:meth:`rows` of an X already validated and canonical."""
        targets = encode_targets(y, self.classes)
        weights = row_weights(X, targets, sample_weight, self.classes, self.class_weight)
        return Rows(X, targets, weights)

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
        """Run the kernel ``train`` over an epoch's order of ``n_rows`` rows and return its
        summed loss; a bad status is refused. Serially in batches of ``batch_size``, or over
        ``n_threads`` Hogwild threads, one row a step, each on a contiguous range of the
        order with its own clock and intercepts (:func:`run_threads`): thread ``p`` calls
        ``train(start, stop, pace, *arguments(clock, bias, batch_size))``."""
        batch_size = 1 if self.n_threads > 1 else self.batch_size
        status, total = run_threads(
            train, thread_ranges(n_rows, self.n_threads),
            lambda p, clock, bias: arguments(clock, bias, batch_size),
            self.state.clock, hp, spec, self.state.bias,
        )  # fmt: skip
        self.refuse_status(status)
        return total

    def refuse_status(self, status: int) -> None:
        """Raise DivergenceError unless the kernels' ``status`` is OK."""
        if status != losses.OK:
            diverged(self.optimizer)

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
