"""Linear estimators on sparse features: SparseLogisticRegression, SparseLinearRegression."""

from __future__ import annotations

import copy
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from sklearn.base import ClassifierMixin, RegressorMixin, is_classifier, is_regressor
from sklearn.metrics import log_loss, mean_squared_error
from sklearn.model_selection import train_test_split
from sklearn.utils import compute_class_weight
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
from tqdm.auto import tqdm

from .. import _io
from .. import cuda as gpu
from .._epochs import Stopper
from .._jit import compile_notice
from ..models import _linear as kernels
from ..models import _losses as losses
from ..models._hogwild import hogwild_order, run_threads
from ..optim import FTRL, OPTIMIZERS, Optimizer, Schedule
from ..optim import _rules as R
from . import _safety
from ._base import DivergenceError, Rows, SparseEstimator, Training

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from typing_extensions import Self

    from .._typing import MatrixLike

# learning rates that worked across the test problems when the user gives none
DEFAULT_LEARNING_RATE = {
    "sgd": 0.01,
    "momentum": 0.005,
    "adagrad": 0.05,
    "rmsprop": 0.005,
    "adam": 0.005,
    "amsgrad": 0.005,
    "ftrl": 0.1,
}


# max_iter="auto": the most epochs tried before the held-out rows have stopped improving
AUTO_MAX_ITER = 100


@dataclass
class LinearState:
    """What a linear estimator learns: weights beside optimizer slots, and the clock."""

    table: np.ndarray  # (n_features * K, 1 + n_slots): weight, then slots
    bias: np.ndarray  # (K, 1 + n_slots)
    stamp: np.ndarray  # (n_features,) or (0,): step of each feature's last update
    mark: np.ndarray  # (n_features,) or (0,): log weight decay at that step
    clock: np.ndarray  # (CLOCK_SIZE,)

    @classmethod
    def new(cls, opt: Optimizer, n_features: int, n_outputs: int, dtype) -> LinearState:
        row = np.concatenate([[0.0], opt.initial_slots()]).astype(dtype)
        stamped = n_features if opt.needs_stamp else 0
        return cls(
            table=np.tile(row, (n_features * n_outputs, 1)),
            bias=np.tile(row, (n_outputs, 1)),
            stamp=np.zeros(stamped),
            mark=np.zeros(stamped),
            clock=np.zeros(R.CLOCK_SIZE),
        )

    def arrays(self) -> dict:
        return {k: getattr(self, k) for k in ("table", "bias", "stamp", "mark", "clock")}


class _Run:
    """One training in a fit's epoch loop: its held-out rows' record (``held``, see
    ``_hold_out``), curves and stopping state."""

    def __init__(self, training, held, stopper):
        self.training, self.held, self.stopper = training, held, stopper
        self.curve, self.scores = [], []
        self.stopped = self.diverged = False


def _to_csr(X) -> sp.csr_matrix:
    """Canonical CSR (sorted, no repeated column in a row) without copying when it is one."""
    if not sp.issparse(X):
        X = sp.csr_matrix(X)
    X = X.tocsr() if X.format != "csr" else X
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    return X


def _holds_text(X) -> bool:
    """Whether X is a table or array of strings or categories, which must be hashed first."""
    if isinstance(X, np.ndarray):
        return X.dtype.kind in "OSU"
    dtypes = getattr(X, "dtypes", None)  # pandas and polars, without importing them
    if dtypes is None and hasattr(X, "schema"):  # pyarrow
        dtypes = X.schema.types
    text = ("object", "str", "category", "categorical", "enum", "utf8", "large_str", "dict")
    return dtypes is not None and any(str(d).lower().startswith(text) for d in list(dtypes))


@contextmanager
def _suggest_field_hasher(estimator, X):
    """Re-raise a failed conversion of raw text columns with the way out: FieldHasher."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        if not _holds_text(X):
            raise
        name = type(estimator).__name__
        raise type(exc)(
            f"{name} needs numeric features, and X holds text or categories ({exc}): hash "
            f"the columns with sparseopt.FieldHasher, e.g. make_pipeline(FieldHasher(), {name}())"
        ) from exc


class _SparseLinearModel(SparseEstimator):
    """Linear models' training loop: epochs of lazy minibatch updates over CSR rows, through
    the training protocol (:mod:`sparseopt.estimators._base`)."""

    _parameter_constraints: dict = {
        "optimizer": [StrOptions(set(OPTIMIZERS)), Optimizer],
        "learning_rate": [
            StrOptions({"auto"}),
            Interval(Real, 0, None, closed="neither"),
            Schedule,
        ],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "l1": [Interval(Real, 0, None, closed="left")],
        "fit_intercept": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left"), None],
        "shuffle": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
        "device": [StrOptions({"cpu", "auto", "cuda"})],
        "random_state": ["random_state"],
    }
    _has_gpu_path = True

    # -- configuration ---------------------------------------------------------------------
    def _default_learning_rate(self, name):
        # a rule without a rate tuned here (one of its own module) runs at its class's default
        return DEFAULT_LEARNING_RATE.get(name, OPTIMIZERS[name]().learning_rate)

    def _configure(self, opt):
        if self.alpha:
            opt.weight_decay = self.alpha
        if self.l1:
            if not isinstance(opt, FTRL):
                raise ValueError(
                    f"l1={self.l1} needs optimizer='ftrl', whose closed form applies L1 exactly "
                    f"to lazily updated coordinates; got {type(opt).__name__}"
                )
            opt.l1 = self.l1

    def _n_threads(self) -> int:
        if self.device == "cuda" and self._has_gpu_path:
            gpu.require()
            return 1
        n = super()._n_threads()
        if n > 1 and self.batch_size != 1:
            raise ValueError(
                f"n_jobs={self.n_jobs} trains lock-free threads on single rows; "
                f"set batch_size=1 (got {self.batch_size}) or n_jobs=1"
            )
        return n

    # -- input -----------------------------------------------------------------------------
    _ACCEPT = dict(accept_sparse=["csr", "csc", "coo"], dtype=[np.float64, np.float32])

    def _validate_X(self, X, reset: bool):
        """Checked X as canonical CSR."""
        _safety.check_sparse_structure(X)  # before SciPy converts it (BSR to CSR...)
        with _suggest_field_hasher(self, X):
            return _to_csr(validate_data(self, X, reset=reset, **self._ACCEPT))

    def _validate_X_y(self, X, y, reset: bool):
        """Checked X as canonical CSR and y as a 1-D array."""
        _safety.check_sparse_structure(X)
        with _suggest_field_hasher(self, X):
            X, y = validate_data(
                self, X, y, reset=reset, y_numeric=is_regressor(self), **self._ACCEPT
            )
        return _to_csr(X), y

    def _canonical(self, X, n_features, dtype):
        """Sparse rows from outside ``fit`` (the command line, a Dask block) checked as ``fit``
        checks them, as canonical CSR of values ``dtype``."""
        if not sp.issparse(X):
            raise TypeError(f"X must be a SciPy sparse matrix, got {type(X).__name__}")
        _safety.check_sparse_structure(X)
        _safety.check_input_width(X, n_features, type(self).__name__)
        if X.dtype not in (np.float32, np.float64):
            raise TypeError(f"X must hold float32 or float64 values, got {X.dtype}")
        X = _to_csr(X)
        if not np.isfinite(X.data).all():
            raise ValueError("X contains NaN or infinite values")
        return X if X.dtype == dtype else X.astype(dtype)

    def _sample_weight(self, X, targets, sample_weight, classes):
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        if not np.isfinite(weights).all():
            raise ValueError("sample_weight contains NaN or infinite values")
        return weights * self._class_weights(targets, classes)

    def _class_weights(self, targets, classes):
        return 1.0

    # -- training --------------------------------------------------------------------------
    def fit(self, X: MatrixLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> Self:
        """Fit the model with epochs of lazy minibatch updates (``max_iter``).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            CSR, CSC or COO (int32 or int64 indices), or dense; float32 stays float32.
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        self._validate_params()
        reset = not (self.warm_start and hasattr(self, "state_"))
        return self._fit(X, y, sample_weight, self.max_iter, reset, classes=None)

    def partial_fit(
        self,
        X: MatrixLike,
        y: ArrayLike,
        classes: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> Self:
        """One epoch over ``X``, continuing from the fitted state (starting one if none).

        A call that fails (bad input, divergence) leaves the fitted state as it was.
        """
        if not hasattr(self, "state_"):
            self._validate_params()
        reset = not hasattr(self, "state_")
        return self._fit(X, y, sample_weight, 1, reset, classes, check_loss=reset)

    def start_training(self, X, *, classes=None, reset=True, in_place=False) -> Training:
        """Begin training (the protocol of :mod:`sparseopt.estimators._base`).

        Parameters
        ----------
        X : sparse matrix
            The training data, or any matrix of its columns and value type (zero rows will
            do; a FieldHasher's output brings its fields).
        classes : array-like or None
            A classifier's sorted labels, all of them (None for a regressor).
        reset : bool
            Start from a new model; False: from the fitted one (checked against the
            parameters), trained on a copy unless ``in_place``.
        in_place : bool
            Train the fitted state itself: no copy, and a failure leaves it partly trained.
        """
        self._validate_params()
        return self._start(X, classes, reset, in_place)

    def _start(self, X, classes, reset, in_place=False) -> Training:
        """:meth:`start_training` with the parameters already validated."""
        opt = self._make_optimizer()
        self._n_threads()  # device and n_jobs refused before any work
        if X.dtype not in (np.float32, np.float64):
            raise TypeError(f"X must hold float32 or float64 values, got {X.dtype}")
        if classes is not None:
            classes = self._check_classes(np.asarray(classes), reset)
        n_features = X.shape[1]
        n_outputs = 1 if classes is None or len(classes) == 2 else len(classes)
        if reset:
            _safety.check_table_size(self._state_nbytes(opt, X, n_outputs), "the model")
            state = self._new_state(opt, X, n_outputs)
        else:
            check_is_fitted(self, "state_")
            if self.n_features_in_ != n_features:
                raise ValueError(
                    f"X has {n_features} features, but {type(self).__name__} was fitted with "
                    f"{self.n_features_in_}"
                )
            self._check_state(self.state_, n_features, n_outputs, opt)
            state = self.state_ if in_place else copy.deepcopy(self.state_)
            self._cast_state(state, X.dtype)
        return Training(self, opt, state, n_features, classes, reset)

    @_safety.unchanged_on_failure
    def _fit(self, X, y, sample_weight, n_epochs, reset, classes, check_loss=True):
        X, y = self._validate_X_y(X, y, reset)
        training = self._start(X, self._classes_of(y, classes, reset), reset)
        rows = training._rows(X, y, sample_weight)
        auto = n_epochs == "auto"
        n_epochs, rows, held = self._hold_out(n_epochs, rows)
        rng = np.random.default_rng(
            self.random_state if not isinstance(self.random_state, np.random.RandomState)
            else self.random_state.randint(2**31)
        )  # fmt: skip
        total_weight = max(rows.weights.sum(), np.finfo(float).tiny)
        # max_iter="auto" may try several settings on the held-out rows (_candidates)
        candidates = [training]
        if held is not None and auto:
            candidates = self._candidates(training, rows.X)
        runs = tried = [
            _Run(t, None if held is None else dict(held), Stopper(self.tol, self.n_iter_no_change))
            for t in candidates
        ]
        choosing = len(runs) > 1
        epochs = range(n_epochs)
        if self.verbose:
            epochs = tqdm(epochs, desc=type(self).__name__, unit="epoch")
        what = f"{type(self).__name__} ({type(training.optimizer).__name__})"
        with compile_notice(what, self.verbose):
            for _epoch in epochs:
                for run in runs:
                    if not run.stopped:
                        self._train_run(run, rows, rng, total_weight, several=len(runs) > 1)
                if len(runs) > 1:
                    runs = self._halve(runs)
                if self.verbose and runs[0].curve:
                    epochs.set_postfix(loss=f"{runs[0].curve[-1]:.5f}", refresh=False)
                if choosing and len(runs) == 1:
                    choosing = False
                    self._report_choice(tried, runs[0])
                if len(runs) == 1 and runs[0].stopped:
                    break
            run = runs[0]
            training, held, curve, scores = run.training, run.held, run.curve, run.scores
            if run.diverged:  # every candidate did
                training.refuse("non-finite loss or weights with every setting tried")
            if held is not None:
                curve = self._best_epoch(training, held, curve, auto)
            training.catch_up()
        return training.finish(curve, scores=scores, rows=rows if check_loss else None)

    def _train_run(self, run, rows, rng, total_weight, several):
        """One epoch of ``run`` and its held-out score; with ``several`` runs competing, a
        run that diverges stops with an infinite score instead of raising."""
        if run.held is not None and run.held["state"] is run.training.state:
            # the best state so far trains on: keep a copy (a run that stops or drops out
            # after its best epoch never pays for one)
            run.held["state"] = copy.deepcopy(run.training.state)
        try:
            loss = run.training.epoch(rows, run.training.order(rows, rng))
            run.curve.append(loss / total_weight)
            monitored = run.curve[-1]
            if run.held is not None:
                monitored = self._score_held_out(run.held, run.training.state, len(run.curve))
                run.scores.append(monitored)
        except DivergenceError:
            if not several:
                raise
            run.diverged = run.stopped = True
            return
        run.stopped = run.stopper.update(monitored)

    @staticmethod
    def _halve(runs):
        """Successive halving: the better half of ``runs`` (rounded up) by their best held-out
        loss so far; a diverged run is the worst."""
        ranked = sorted(runs, key=lambda run: np.inf if run.diverged else run.held["best"])
        return ranked[: (len(ranked) + 1) // 2]

    def _candidates(self, training, X) -> list:
        """The trainings that ``max_iter="auto"`` tries on the held-out rows (X: the rows
        trained on), the first of them ``training``: here, that one alone."""
        return [training]

    def _report_choice(self, tried, kept):
        """With ``verbose``, say on stderr what the held-out rows chose among ``tried`` (runs)."""
        if not self.verbose:
            return
        for run in tried:
            loss = "diverged" if run.diverged else f"best held-out loss {run.held['best']:.5f}"
            mark = "kept" if run is kept else "dropped"
            tqdm.write(f"{type(self).__name__}: {self._setting(run.training)}: "
                       f"{len(run.curve)} epoch(s), {loss}: {mark}", file=sys.stderr)  # fmt: skip

    def _setting(self, training) -> str:
        """What distinguishes ``training`` among the candidates (for ``verbose``)."""
        return f"learning_rate={training.optimizer.learning_rate!r}"

    # -- checks at the kernels' boundary (see sparseopt.estimators._safety) ----------------
    def _n_outputs(self) -> int:
        """Outputs of the fitted model: 1, or the number of classes beyond two."""
        classes = getattr(self, "classes_", None)
        return 1 if classes is None or len(classes) == 2 else len(classes)

    def _state_nbytes(self, opt, X, n_outputs) -> int:
        """Bytes of a new state for ``X``'s columns, counted before allocating it."""
        n, width = X.shape[1], 1 + opt.initial_slots().size
        return (n + 1) * n_outputs * width * X.dtype.itemsize + (16 * n if opt.needs_stamp else 0)

    def _check_tables(self, state, n_features, n_outputs, n_slots=None, scan=True):
        """Raise ValueError unless ``state`` has exactly the arrays the kernels index for
        ``n_features`` columns and ``n_outputs`` outputs (``n_slots`` optimizer slots per
        coordinate, or as many as the table has). ``scan``: also check the values that
        index (a pass over per-feature arrays: done on load and training, not per predict)."""
        if not isinstance(state, self._state_type):
            raise ValueError(f"state_ must be a {self._state_type.__name__}")
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

    def _check_state(self, state, n_features, n_outputs, opt):
        """The fitted ``state`` against the current parameters (``opt``) before training."""
        fitted = getattr(self, "optimizer_", None)
        n_slots = opt.initial_slots().size
        if (fitted is not None and type(fitted) is not type(opt)) or (
            getattr(state.table, "ndim", 0) == 2 and state.table.shape[1] != 1 + n_slots
        ):
            was = type(fitted).__name__ if fitted is not None else "another optimizer"
            raise ValueError(
                f"optimizer {type(opt).__name__} differs from {was}, which the model was "
                f"fitted with: its state does not carry over; set the optimizer back to "
                f"continue training, or call fit (warm_start=False) to start over"
            )
        self._check_tables(state, n_features, n_outputs, n_slots)
        if state.stamp.size != (n_features if opt.needs_stamp else 0):
            raise ValueError(
                f"the model was fitted {'without' if opt.needs_stamp else 'with'} weight decay "
                f"(alpha or the optimizer's weight_decay): its state does not carry over; set "
                f"it back to continue training, or call fit (warm_start=False) to start over"
            )

    def _check_fitted_state(self, state, n_features, n_outputs, fitted):
        """A loaded ``state`` against itself and ``fitted``, the optimizer it was fitted
        with (not against the current parameters, which :meth:`_check_state` compares before
        training)."""
        self._check_tables(state, n_features, n_outputs, fitted.initial_slots().size)
        if state.stamp.size != (n_features if fitted.needs_stamp else 0):
            raise ValueError(
                f"the stamps ({state.stamp.size}) do not fit optimizer_ "
                f"{type(fitted).__name__} (with{'' if fitted.needs_stamp else 'out'} weight decay)"
            )

    def _check_prediction_state(self, X):
        """The fitted tables against ``X``'s width and the fitted classes, before predicting."""
        self._check_tables(self.state_, X.shape[1], self._n_outputs(), scan=False)

    def _weight_arrays(self, state):
        """The weights (not the optimizer slots) of ``state``."""
        return state.table[:, 0], state.bias[:, 0]

    def _refuse_useless(self, opt, state, loss, targets, weights, classes):
        """Raise DivergenceError if a weight left the sane range (``_safety.MAX_WEIGHT``,
        times the largest |y| for a regressor) or if ``loss``, the last epoch's training
        loss on ``targets`` (None: not checked), is far worse than a constant prediction's."""
        bound = _safety.MAX_WEIGHT
        if is_regressor(self):
            scale = np.inf if targets is None else np.abs(targets).max(initial=1.0)
            with np.errstate(over="ignore"):  # targets near the float range: no bound (inf)
                bound *= max(1.0, scale)
        largest = _safety.largest_magnitude(*self._weight_arrays(state))
        if not largest <= bound:
            self._diverged(opt, f"a weight reached {largest:.3g} (the limit is {bound:.3g})")
        if loss is not None:
            n_classes = 0 if classes is None else len(classes)
            kind = self.loss if is_regressor(self) else "softmax" if n_classes > 2 else "logistic"
            delta = float(getattr(self, "epsilon", 0.0))
            zero = _safety.zero_model_loss(kind, targets, weights, delta, n_classes)

            def constant():
                return _safety.constant_loss(kind, targets, weights, delta)

            if _safety.useless_fit(loss, len(targets), zero, constant):
                self._diverged(
                    opt,
                    f"the training loss ended at {loss:.4g}, far worse than a constant "
                    f"prediction's {constant():.4g}",
                )

    # -- how many epochs: held-out rows decide (max_iter="auto", early_stopping=True) ------
    def _hold_out(self, n_epochs, rows):
        """Split off the rows that decide when to stop: ``(n_epochs, rows, held)``, ``held``
        None when no rows are held out (``n_epochs`` then an integer).

        ``early_stopping=True``: a random ``validation_fraction`` of the rows (stratified for
        a classifier), never trained on. ``max_iter="auto"``: the last ``validation_fraction``
        of the rows in the order given, learned once after the epochs (see ``_best_epoch``).
        """
        auto = n_epochs == "auto"
        n_epochs = AUTO_MAX_ITER if auto else n_epochs
        X, targets, weights = rows
        n_val = int(np.ceil(self.validation_fraction * X.shape[0]))
        if not (self.early_stopping or auto) or not 0 < n_val < X.shape[0]:
            return n_epochs, rows, None
        if self.early_stopping:
            split = train_test_split(
                X, targets, weights,
                test_size=self.validation_fraction,
                random_state=self.random_state,
                stratify=targets if is_classifier(self) else None,
            )  # fmt: skip
            X, X_val, targets, y_val, weights, w_val = split
        else:
            n = X.shape[0] - n_val
            X, X_val = X[:n], X[n:]
            targets, y_val, weights, w_val = targets[:n], targets[n:], weights[:n], weights[n:]
        held = {"rows": Rows(X_val, y_val, w_val), "best": np.inf, "state": None, "epochs": 0}
        return n_epochs, Rows(X, targets, weights), held

    def _score_held_out(self, held, state, epoch):
        """Loss of the held-out rows after ``epoch`` epochs; keeps the best state (``state``
        itself: copied only if it trains on, see ``_train_run``)."""
        loss = self._validation_loss(state, *held["rows"])
        if loss < held["best"] or held["state"] is None:
            held.update(best=loss, state=state, epochs=epoch)
        return loss

    def _best_epoch(self, training, held, curve, learn_held_out):
        """Go back to the state of the epoch whose held-out loss was lowest; returns the
        training curve up to it. With ``learn_held_out`` (``max_iter="auto"``) that state
        then learns the held-out rows once, in order, as the last rows of a first epoch: one
        epoch over the held-out rows at the end is exactly one epoch over all the rows."""
        training.state = held["state"]
        if learn_held_out:
            order = np.arange(held["rows"].X.shape[0])
            if training.n_threads > 1:
                order = hogwild_order(order, training.n_threads)
            training.epoch(held["rows"], order)
        return curve[: held["epochs"]]

    # -- hooks a model with other parameters (factorization machines) overrides -----------
    _state_type = LinearState

    def _new_state(self, opt, X, n_outputs):
        return LinearState.new(opt, X.shape[1], n_outputs, X.dtype)

    def _cast_state(self, state, dtype):
        state.table = state.table.astype(dtype, copy=False)
        state.bias = state.bias.astype(dtype, copy=False)

    def _new_scratch(self, state):
        return np.full(state.table.shape[0] if self.batch_size > 1 else 0, np.nan)

    def _catch_up(self, opt, state):
        if state.stamp.size == 0:  # no rule with pending steps: nothing to compile or run
            return
        catch_up = kernels.linear_catch_up(opt._rule)
        catch_up(opt.hyperparameters(), opt.schedule_spec(), state.clock, state.table,
                 state.stamp, state.mark)  # fmt: skip

    def _is_finite(self, state):
        return _safety.all_finite(state.table[:, 0], state.bias[:, 0])

    def _decision(self, state, X):
        """Margins of validated CSR rows, shape (n_samples, n_outputs)."""
        table = state.table.astype(X.dtype, copy=False)
        return kernels.linear_decision(X.indptr, X.indices, X.data, table, state.bias)

    def _run_epoch(self, training, X, targets, weights, order):
        """:meth:`Training.epoch`: one pass of the kernels over ``X``'s rows in ``order``."""
        opt, state, scratch = training.optimizer, training.state, training.scratch
        n_threads, hp, spec = training.n_threads, opt.hyperparameters(), opt.schedule_spec()
        loss, delta = training.loss, float(getattr(self, "epsilon", 0.0))
        if gpu.use_gpu(self.device, X.nnz, self.batch_size):
            from ..cuda import _linear as gpu_kernels  # imports numba.cuda: only when used

            status, total = gpu_kernels.train_epoch(
                opt._rule, X, targets, weights, order, self.batch_size, loss, delta, hp, spec,
                state, self.fit_intercept,
            )  # fmt: skip
        else:
            train = kernels.linear_train_pass(opt._rule, loss, state.stamp.size > 0)
            rows = (X.indptr, X.indices, X.data, targets, weights, order)

            def arguments(bias, batch_size):
                return (rows, (state.table, bias, state.stamp, state.mark, state.clock, scratch),
                        hp, spec, (batch_size, delta, bool(self.fit_intercept)))  # fmt: skip

            if n_threads > 1:
                status, total = run_threads(
                    train, n_threads, lambda bias: arguments(bias, 1), state.bias
                )
                if not R.advance_clock(hp, spec, state.clock, order.size):
                    status = max(status, losses.BAD_STEP)
            else:
                status, total = train(0, 1, *arguments(state.bias, int(self.batch_size)))
        if status != losses.OK:
            self._diverged(opt)
        return total

    def _validation_loss(self, state, X, y, w):
        margins = self._decision(state, X)
        if not np.isfinite(margins).all():  # diverged: no loss to compare
            self._diverged(self._make_optimizer())
        return self._loss_from_margins(margins, y, w)

    # -- prediction ------------------------------------------------------------------------
    def _margins(self, X):
        """Margins ``X @ coef_.T + intercept_``, (n_samples,) or (n_samples, n_outputs)."""
        check_is_fitted(self, "state_")
        X = self._validate_X(X, reset=False)
        self._check_prediction_state(X)
        margins = self._decision(self.state_, X)
        return margins[:, 0] if margins.shape[1] == 1 else margins

    @property
    def coef_(self) -> np.ndarray:
        """Weights, shape (n_outputs, n_features) (``(1, n_features)`` for binary)."""
        check_is_fitted(self, "state_")
        K = self.state_.bias.shape[0]
        return self.state_.table[:, 0].reshape(-1, K).T.copy()

    @property
    def intercept_(self) -> np.ndarray:
        """Intercepts, shape (n_outputs,)."""
        check_is_fitted(self, "state_")
        return self.state_.bias[:, 0].copy()

    # -- persistence -----------------------------------------------------------------------
    def _saved(self):
        """The arrays and scalar attributes that :meth:`save` writes."""
        attributes = {"n_features_in_": self.n_features_in_, "n_iter_": self.n_iter_,
                      "t_": self.t_, "loss_curve_": self.loss_curve_}  # fmt: skip
        if hasattr(self, "optimizer_"):
            attributes["optimizer_"] = self.optimizer_
        arrays = self.state_.arrays()
        if hasattr(self, "classes_"):
            arrays["classes_"] = self.classes_
        return arrays, attributes

    @classmethod
    def _from_file(cls, params, attributes, arrays):
        """The model a file describes, every part of it checked against the others."""
        model = cls(**params)
        model._validate_params()
        opt = model._make_optimizer()
        attributes = _io.check_attributes(attributes, {
            "n_features_in_": _io.COUNT, "n_iter_": _io.COUNT, "t_": _io.COUNT,
            "loss_curve_": _io.NUMBERS,
        }, optional={"optimizer_": _io.instance_of(Optimizer)})  # fmt: skip
        # the state is checked against the optimizer it was fitted with: parameters set after
        # fitting (set_params, then save) load as they were saved, as they stood in memory,
        # and partial_fit refuses them there as it did before saving
        fitted = attributes.get("optimizer_", opt)
        fitted.hyperparameters()
        expected = set(cls._state_type.__dataclass_fields__)
        if is_classifier(model):
            expected.add("classes_")
        if set(arrays) != expected:
            raise ValueError(
                f"arrays {sorted(arrays)} do not fit a {cls.__name__} (expected {sorted(expected)})"
            )
        if "classes_" in arrays:
            model.classes_ = _io.check_classes(arrays.pop("classes_"))
        model.state_ = cls._state_type(**{k: np.ascontiguousarray(v) for k, v in arrays.items()})
        for name, value in attributes.items():
            setattr(model, name, value)
        model._check_fitted_state(model.state_, model.n_features_in_, model._n_outputs(), fitted)
        if not model._is_finite(model.state_):
            raise ValueError("the weights are not all finite")
        return model

    # -- merging copies of the model (sparseopt.dask) ----------------------------------------
    def _merge_layout(self, state, opt):
        """:meth:`Training.tables`: feature j owns rows ``j * K .. j * K + K - 1`` of the
        table (one per output); the intercepts are shared."""
        accumulator = opt.accumulator_slot
        return {"table": (state.bias.shape[0], 1, accumulator), "bias": (None, 1, accumulator)}

    def _prepare_merge(self, opt, state, touched):
        """Nothing: a linear model's untouched rows are what every copy started from."""


class _LogisticOutput:
    """What a logistic model adds to its training loop: labels encoded as class indices,
    the logistic (two classes) or softmax loss, probabilities."""

    def _classes_of(self, y, classes, reset):
        """The sorted labels a fit trains on: the fitted ones, or those of ``classes`` or
        ``y``."""
        check_classification_targets(y)
        if classes is not None:
            return unique_labels(classes)
        return self.classes_ if not reset else unique_labels(y)

    def _check_classes(self, classes, reset):
        """``classes`` (sorted, distinct) if this model can learn them, else ValueError."""
        if not reset:
            if not np.array_equal(unique_labels(classes), self.classes_):
                raise ValueError(f"classes={classes!r} differs from classes_={self.classes_!r}")
            return self.classes_
        if classes.size < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least two classes; "
                f"got one class only ({classes[0] if classes.size else None!r})"
            )
        return classes

    def _encode_targets(self, y, classes):
        """``y`` as float64 indices into ``classes``."""
        index = np.clip(np.searchsorted(classes, y), 0, classes.size - 1)
        if not np.array_equal(classes[index], y):
            unknown = np.setdiff1d(y, classes)
            raise ValueError(f"y has labels {unknown!r} not in classes {classes!r}")
        return index.astype(np.float64)

    def _class_weights(self, targets, classes):
        if self.class_weight is None:
            return 1.0
        present = np.unique(targets.astype(np.int64))
        weights = np.ones(classes.size)
        weights[present] = compute_class_weight(
            self.class_weight, classes=classes[present], y=classes[targets.astype(np.int64)]
        )
        return weights[targets.astype(np.int64)]

    def _loss_code(self, n_outputs):
        return losses.LOGISTIC if n_outputs == 1 else losses.SOFTMAX

    def _loss_from_margins(self, margins, y, w):
        proba = self._proba_from_margins(margins)
        # labels as an array: scikit-learn's array API mode accepts no range
        labels = np.arange(proba.shape[1])
        return log_loss(y.astype(np.int64), proba, sample_weight=w, labels=labels)

    @staticmethod
    def _proba_from_margins(margins):
        if margins.ndim == 1 or margins.shape[1] == 1:
            # a margin below -709 overflows exp to inf, which gives p = 0 exactly: right,
            # and no cause for a RuntimeWarning in every evaluate of a confident model
            with np.errstate(over="ignore"):
                p = 1.0 / (1.0 + np.exp(-margins.reshape(-1)))
            return np.column_stack([1.0 - p, p])
        z = margins - margins.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def decision_function(self, X: MatrixLike) -> np.ndarray:
        """Margins ``X @ coef_.T + intercept_``, (n_samples,) or (n_samples, n_classes)."""
        return self._margins(X)

    def predict_proba(self, X: MatrixLike) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes)."""
        return self._proba_from_margins(self.decision_function(X))

    def predict_log_proba(self, X: MatrixLike) -> np.ndarray:
        """Log of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: MatrixLike) -> np.ndarray:
        """Most probable class of each row."""
        margins = self.decision_function(X)
        index = (margins > 0).astype(np.int64) if margins.ndim == 1 else margins.argmax(axis=1)
        return self.classes_[index]


class _RegressionOutput:
    """What a regression model adds to its training loop: float targets, the squared or
    Huber loss (``loss``, ``epsilon``)."""

    def _classes_of(self, y, classes, reset):
        return None

    def _encode_targets(self, y, classes):
        y = np.asarray(y, dtype=np.float64)
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinite values")
        return y

    def _loss_code(self, n_outputs):
        return losses.HUBER if self.loss == "huber" else losses.SQUARED

    def _loss_from_margins(self, margins, y, w):
        return 0.5 * mean_squared_error(y, margins[:, 0], sample_weight=w)

    def predict(self, X: MatrixLike) -> np.ndarray:
        """Predicted values, shape (n_samples,)."""
        return self._margins(X)


_COMMON_DOC = """
    optimizer : str or Optimizer, default="adagrad"
        ``"sgd"``, ``"momentum"``, ``"adagrad"``, ``"rmsprop"``, ``"adam"``, ``"amsgrad"``,
        ``"ftrl"``, or an optimizer object from :mod:`sparseopt.optim` carrying its own
        hyperparameters (``optimizer__beta_1`` etc. are then tunable in a grid search).
        ``"adam"`` and ``"amsgrad"`` are ``Adam(lazy="decay")`` and ``AMSGrad(lazy="decay")``
        (the best lazy mode in cross-validation on the real sets); pass ``Adam(lazy="exact")``
        for dense Adam's path.
    learning_rate : "auto", float or Schedule, default="auto"
        ``"auto"``: a per-optimizer default (AdaGrad 0.05), or the optimizer object's own.
    alpha : float, default=0.0
        L2 penalty, applied as decoupled weight decay: each step shrinks every weight by
        ``1 - eta_t * alpha`` (exact for lazily updated coordinates).
    l1 : float, default=0.0
        L1 penalty; needs ``optimizer="ftrl"`` (applied in FTRL-Proximal's closed form).
    fit_intercept : bool, default=True
    batch_size : int, default=1
        Rows per optimizer step; 1 is pure online learning.
    max_iter : "auto" or int, default="auto"
        Epochs. ``"auto"``: as many as help, decided by the data. The last
        ``validation_fraction`` of the rows (in the order given: the most recent, in a log)
        is held out; epochs run over the others until the held-out loss has not improved by
        ``tol`` for ``n_iter_no_change`` epochs (at most 100); the state of the best epoch is
        kept, and then learns the held-out rows once, in order. With one best epoch, as on
        large or time-ordered click logs, that is exactly one epoch over all the rows; sets
        that want more get more. Measured (``benchmarks/bench_defaults.py``, pooled 10-fold
        cross-validation): Criteo head logloss 0.4598 against 0.4596 for the best fixed
        epoch count (one) and 0.4970 for 10 epochs, Vowpal Wabbit 0.4624; Avazu head 0.4200
        (best, 3 epochs: 0.4190); a9a 0.3239 (the exact optimum 0.3242). It costs the epochs
        run after the best (``n_iter_no_change``) and a copy of the model while they run; set
        an integer to skip both, e.g. ``max_iter=1`` for a log too large to pass over twice.
        An integer: that many epochs, fewer if ``tol`` stops them.
    tol : float or None, default=1e-4
        Stop when the epoch's loss (training, or held-out with ``max_iter="auto"`` or early
        stopping) has not improved by ``tol`` for ``n_iter_no_change`` epochs.
    shuffle : bool, default=False
        Reshuffle the rows before each epoch. By default rows are taken in the order given,
        as online click-prediction learners (Vowpal Wabbit) take them: in a time-ordered log
        the last rows learned are the most recent, which predict the next rows best (Criteo
        head, one epoch: AUC 0.722 in file order, 0.717 shuffled). Shuffle data sorted by
        label or by any other key unrelated to time.
    early_stopping : bool, default=False
        Hold out a random, stratified ``validation_fraction`` of the rows, never trained
        on; stop on their loss (``tol``, ``n_iter_no_change``) and keep the state of the
        epoch where it was lowest. ``max_iter="auto"`` alone learns the held-out rows too,
        and is the better default (Criteo head: 0.4598 against 0.4628).
    validation_fraction : float, default=0.1
        Share of the rows held out by ``max_iter="auto"`` and ``early_stopping``.
    n_iter_no_change : int, default=2
    warm_start : bool, default=False
    n_jobs : int or None, default=None
        Threads; above 1, lock-free (Hogwild) updates on single rows: faster, not
        deterministic. ``None`` and 1 train serially and deterministically.
    verbose : int, default=0
        Show a progress bar with the running loss.
    device : {"cpu", "auto", "cuda"}, default="cpu"
        ``"cuda"``: train on the GPU with numba-cuda (``pip install 'sparseopt[cuda12]'``),
        deterministic minibatch steps equal to the CPU's up to rounding; ``n_jobs`` is
        ignored, use a large ``batch_size``. ``"auto"``: the GPU when one is usable and the
        data is large (see :mod:`sparseopt.cuda`), else the CPU.
    random_state : int, RandomState or None, default=None
"""


class SparseLogisticRegression(_LogisticOutput, ClassifierMixin, _SparseLinearModel):
    __doc__ = (
        """Logistic regression (binary, or multinomial softmax) trained with lazy sparse updates.

    Minimizes :math:`\\sum_i s_i \\ell(y_i, x_i^T W + b)` with the logistic (two classes) or
    softmax cross-entropy loss (more classes: one model, not one-vs-rest), one optimizer step
    per minibatch, touching only the coordinates present in it.

    Parameters
    ----------"""
        + _COMMON_DOC
        + """    class_weight : dict, "balanced" or None, default=None

    Attributes
    ----------
    classes_ : ndarray
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    state_ : LinearState
        Weights and optimizer state (resumable).
    n_iter_, t_ : int
        Epochs run (with held-out rows: up to the best epoch, whose state was kept) and
        optimizer steps taken.
    loss_curve_ : list of float
        Mean training loss of each epoch (each row scored before its update).
    validation_scores_ : list of float
        Held-out loss after each epoch run (``max_iter="auto"`` or ``early_stopping``).

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sparseopt import SparseLogisticRegression
    >>> X, y = make_classification(random_state=0)
    >>> SparseLogisticRegression(random_state=0).fit(X, y).score(X, y) > 0.8
    True
    """
    )

    _parameter_constraints = {
        **_SparseLinearModel._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        optimizer="adagrad",
        learning_rate="auto",
        alpha=0.0,
        l1=0.0,
        fit_intercept=True,
        batch_size=1,
        max_iter="auto",
        tol=1e-4,
        shuffle=False,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=2,
        class_weight=None,
        warm_start=False,
        n_jobs=None,
        verbose=0,
        device="cpu",
        random_state=None,
    ):
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.l1 = l1
        self.fit_intercept = fit_intercept
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.device = device
        self.random_state = random_state


class SparseLinearRegression(_RegressionOutput, RegressorMixin, _SparseLinearModel):
    __doc__ = (
        """Linear regression (squared or Huber loss) trained with lazy sparse updates.

    Minimizes :math:`\\sum_i s_i \\ell(y_i - x_i^T w - b)` with
    :math:`\\ell(r) = r^2/2` (``loss="squared"``) or Huber's loss with threshold
    ``epsilon``: :math:`r^2/2` for :math:`|r| \\le \\epsilon`, else
    :math:`\\epsilon (|r| - \\epsilon/2)`.

    Parameters
    ----------
    loss : {"squared", "huber"}, default="squared"
    epsilon : float, default=1.35
        Huber threshold."""
        + _COMMON_DOC
        + """
    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features)
    intercept_ : ndarray of shape (1,)
    state_ : LinearState
    n_iter_, t_ : int
    loss_curve_ : list of float

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from sparseopt import SparseLinearRegression
    >>> X, y = make_regression(n_features=5, noise=0.1, random_state=0)
    >>> SparseLinearRegression(learning_rate=2.0, max_iter=100, tol=None, random_state=0).fit(
    ...     X, y).score(X, y) > 0.99
    True
    """
    )

    _parameter_constraints = {
        **_SparseLinearModel._parameter_constraints,
        "loss": [StrOptions({"squared", "huber"})],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        loss="squared",
        epsilon=1.35,
        optimizer="adagrad",
        learning_rate="auto",
        alpha=0.0,
        l1=0.0,
        fit_intercept=True,
        batch_size=1,
        max_iter="auto",
        tol=1e-4,
        shuffle=False,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=2,
        warm_start=False,
        n_jobs=None,
        verbose=0,
        device="cpu",
        random_state=None,
    ):
        self.loss = loss
        self.epsilon = epsilon
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.l1 = l1
        self.fit_intercept = fit_intercept
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.device = device
        self.random_state = random_state
