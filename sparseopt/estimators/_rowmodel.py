"""The estimators' base of the linear models and the factorization machines, models of rows
of sparse features trained one row (or minibatch) per update (their trainings:
:mod:`._rowtraining`). :class:`RowModel`: the row checks, ``fit`` / ``partial_fit`` through
the training protocol, the held-out rows of ``max_iter="auto"`` and ``early_stopping`` and
the race of a family's settings. ``_LogisticOutput`` and ``_RegressionOutput``: the
classifiers' and regressors' targets and predictions.
"""

from __future__ import annotations

import copy
import sys
from contextlib import contextmanager
from numbers import Integral, Real
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import is_classifier, is_regressor
from sklearn.metrics import log_loss, mean_squared_error
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data
from tqdm.auto import tqdm

from .. import _io
from .. import cuda as gpu
from .._epochs import Stopper, run_epochs
from .._jit import compile_notice
from ..optim import Optimizer, Schedule
from . import _safety
from ._base import DivergenceError, Rows, SparseEstimator
from ._rowtraining import RowTraining, _to_csr, check_fitted, check_state, n_outputs_of

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from typing_extensions import Self

    from .._typing import MatrixLike

# max_iter="auto": the most epochs tried before the held-out rows have stopped improving
AUTO_MAX_ITER = 100


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


class _Run:
    """One training in a fit's epoch loop: its held-out rows' record (``held``, see
    ``_hold_out``), curves and stopping state."""

    def __init__(self, training, held, stopper):
        self.training, self.held, self.stopper = training, held, stopper
        self.curve, self.scores = [], []
        self.stopped = self.diverged = False


def _beats(run, other) -> bool:
    """Whether ``run`` ended with a lower best held-out loss than ``other`` (a diverged run
    loses; a tie keeps ``other``, the earlier)."""
    if run.diverged:
        return False
    return other.diverged or run.held["best"] < other.held["best"]


class RowModel(SparseEstimator):
    """Base of the estimators of row models: epochs of lazy minibatch updates over CSR rows,
    through the training protocol (:mod:`sparseopt.estimators._base`).

    A family gives its parameters' constraints, ``_training_type`` (its
    :class:`RowTraining`: ``start``, ``make_optimizer``, ``decision``) and the constants that
    reads beside the parameters (``_family_params``).
    """

    _family_params: dict = {}

    # max_iter="auto"'s race among several settings (candidates): how many epochs at its
    # last epoch's pace a run behind the leader may need to catch up and stay in the race
    # (_catching_up); 0: plain successive halving, the worse half out after every epoch
    _race_catch_up_epochs = 0

    # the parameters every row model has; a family adds "optimizer" and its own
    _parameter_constraints: dict = {
        "learning_rate": [
            StrOptions({"auto"}),
            Interval(Real, 0, None, closed="neither"),
            Schedule,
        ],
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

    def _validate_X_y(self, X, y, reset: bool, n_threads: int = 1):
        """Checked X as canonical CSR and y as a 1-D array; X's column indices and values
        in one pass on ``n_threads`` threads (:func:`_safety.check_nonzeros`)."""
        _safety.check_sparse_structure(X, csr_indices=False)
        with _suggest_field_hasher(self, X):
            X, y = validate_data(
                self, X, y, reset=reset, y_numeric=is_regressor(self), ensure_all_finite=False,
                **self._ACCEPT,
            )  # fmt: skip
        X = _to_csr(X)
        _safety.check_nonzeros(X, n_threads)
        return X, y

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

    def start_training(self, X, *, classes=None, reset=True, in_place=False) -> RowTraining:
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

    def _start(self, X, classes, reset, in_place=False) -> RowTraining:
        """:meth:`start_training` with the parameters already validated."""
        n_threads = self._n_threads()  # device and n_jobs refused before any work
        if X.dtype not in (np.float32, np.float64):
            raise TypeError(f"X must hold float32 or float64 values, got {X.dtype}")
        if classes is not None:
            classes = self._check_classes(np.asarray(classes), reset)
        fitted, n_iter_start = None, 0
        if not reset:
            check_is_fitted(self, "state_")
            if self.n_features_in_ != X.shape[1]:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with "
                    f"{self.n_features_in_}"
                )
            fitted = (self.state_, getattr(self, "optimizer_", None), in_place)
            n_iter_start = getattr(self, "n_iter_", 0)
        params = self._params()
        return self._training_type.start(self, params, X, fitted, classes, n_iter_start, n_threads)

    def _params(self) -> dict:
        """What the training reads: the parameters, the family's constants and the
        estimator's name (``owner``, for messages)."""
        return {**self.get_params(deep=False), **self._family_params, "owner": type(self).__name__}

    def _make_optimizer(self):
        return self._training_type.make_optimizer(self._params())

    @_safety.unchanged_on_failure
    def _fit(self, X, y, sample_weight, n_epochs, reset, classes, check_loss=True):
        X, y = self._validate_X_y(X, y, reset, self._n_threads())
        training = self._start(X, self._classes_of(y, classes, reset), reset)
        rows = training._rows(X, y, sample_weight)
        auto = n_epochs == "auto"
        n_epochs, rows, held = self._hold_out(n_epochs, rows)
        # max_iter="auto" may try several settings on the held-out rows (candidates)
        choosing = held is not None and auto
        candidates = training.candidates() if choosing else [training]
        runs = [
            _Run(t, None if held is None else dict(held), Stopper(self.tol, self.n_iter_no_change))
            for t in candidates
        ]
        what = f"{type(self).__name__} ({type(training.optimizer).__name__})"
        tried, run = [], None  # tried: what verbose reports of each run (the states freed)
        with compile_notice(what, self.verbose):
            done = 0  # follow-ups run
            while runs:  # the race, then each follow-up from the kept run's best epoch
                try:
                    last = self._run_epochs(runs, rows, n_epochs - len(runs[0].curve))
                except DivergenceError:
                    if run is None:  # the race's run left: nothing else to keep
                        raise
                    last = runs[0]  # a follow-up (alone): it drops out
                    last.diverged = True
                if choosing:
                    tried += [(r.training.setting(), len(r.curve),
                               None if r.diverged else r.held["best"]) for r in runs]  # fmt: skip
                if run is None or _beats(last, run):
                    run, kept = last, len(tried) - len(runs) + runs.index(last)
                more = len(candidates) > 1 and not run.diverged
                follow_up = run.training.follow_up(run.held["state"], done) if more else None
                runs = [] if follow_up is None else [self._continued_run(follow_up, run)]
                done += 1
            if len(tried) > 1:
                self._report_choice(tried, kept)
            training, held = run.training, run.held
            if run.diverged:  # every candidate did
                training.refuse("non-finite loss or weights with every setting tried")
            curve = run.curve
            if held is not None:
                curve = self._best_epoch(training, held, curve, auto)
            training.catch_up()
        return training.finish(curve, scores=run.scores, rows=rows if check_loss else None)

    def _continued_run(self, training, leader) -> _Run:
        """A run of ``training`` (on a copy of ``leader``'s best state) from ``leader``'s best
        epoch, with its curves up to it; it stops at its first epoch that does not improve
        its own best by ``tol`` (a new setting may start above the leader's best: a stronger
        penalty first shrinks the factors)."""
        epochs = leader.held["epochs"]
        run = _Run(training, {**leader.held, "state": training.state}, Stopper(self.tol, 1))
        run.curve, run.scores = leader.curve[:epochs], leader.scores[:epochs]
        return run

    def _run_epochs(self, runs, rows, n_epochs) -> _Run:
        """Up to ``n_epochs`` epochs of the ``runs``: with several, a race (each epoch trains
        every run in it once, then :meth:`_halve`), then the one left goes on with
        :func:`run_epochs` and its own stopper."""
        rng = np.random.default_rng(
            self.random_state if not isinstance(self.random_state, np.random.RandomState)
            else self.random_state.randint(2**31)
        )  # fmt: skip
        total_weight = max(rows.weights.sum(), np.finfo(float).tiny)
        bar = tqdm(total=n_epochs, desc=type(self).__name__, unit="epoch", disable=not self.verbose)
        epoch = 0

        def progress(run):
            bar.update()
            if run.curve:
                bar.set_postfix(loss=f"{run.curve[-1]:.5f}", refresh=False)

        while len(runs) > 1 and epoch < n_epochs:
            for run in runs:
                if not run.stopped:
                    loss = self._train_run(run, rows, rng, total_weight, several=True)
                    run.stopped = run.diverged or run.stopper.update(loss)
            runs, epoch = self._halve(runs), epoch + 1
            progress(runs[0])
        run = runs[0]  # the race is over (one run left, or n_epochs): its leader goes on

        def train_epoch(_epoch):
            loss = self._train_run(run, rows, rng, total_weight, several=False)
            progress(run)
            return loss

        if not run.stopped:
            run_epochs(train_epoch, n_epochs - epoch, run.stopper)
        bar.close()
        return run

    def _train_run(self, run, rows, rng, total_weight, several):
        """One epoch of ``run``; returns its monitored loss (held-out, else training). With
        ``several`` runs, a run that diverges is marked ``diverged`` instead of raising."""
        if run.held is not None and run.held["state"] is run.training.state:
            # the best state so far trains on: keep a copy (a run that stops or drops out
            # after its best epoch never pays for one)
            run.held["state"] = copy.deepcopy(run.training.state)
        try:
            loss = run.training.epoch(rows, run.training.order(rows, rng))
            run.curve.append(loss / total_weight)
            monitored = run.curve[-1]
            if run.held is not None:
                monitored = self._score_held_out(run.held, run.training, len(run.curve))
                run.scores.append(monitored)
        except DivergenceError:
            if not several:
                raise
            run.diverged = True
            return np.inf
        return monitored

    def _halve(self, runs):
        """Successive halving: the better half of ``runs`` (rounded up) by their best held-out
        loss so far (a diverged run is the worst), and the runs of the other half that
        :meth:`_catching_up` with the leader."""
        ranked = sorted(runs, key=lambda run: np.inf if run.diverged else run.held["best"])
        kept = ranked[: (len(ranked) + 1) // 2]
        leader = ranked[0].held["best"]
        return kept + [run for run in ranked[len(kept) :] if self._catching_up(run, leader)]

    def _catching_up(self, run, leader) -> bool:
        """Whether ``run``, behind the race's best held-out loss ``leader``, stays in the race:
        it is still training (neither stopped nor diverged) and, at the pace of its last
        epoch, would close the gap within ``_race_catch_up_epochs`` epochs,

        .. math:: \\text{best} - \\text{leader} \\le E \\, (s_{t-1} - s_t)

        (:math:`s_t` its held-out loss after epoch :math:`t`). After its first epoch it has no
        pace yet and stays. With :math:`E = 0`, plain halving."""
        if not self._race_catch_up_epochs or run.stopped or run.diverged:
            return False
        if len(run.scores) < 2:
            return True
        pace = run.scores[-2] - run.scores[-1]
        return run.held["best"] - leader <= self._race_catch_up_epochs * pace

    def _report_choice(self, tried, kept):
        """With ``verbose``, list on stderr ``tried``, ``(setting, epochs, best held-out loss
        or None if diverged)`` of each run, and which was kept."""
        if not self.verbose:
            return
        for i, (setting, n_epochs, best) in enumerate(tried):
            loss = "diverged" if best is None else f"best held-out loss {best:.5f}"
            mark = "kept" if i == kept else "dropped"
            tqdm.write(f"{type(self).__name__}: {setting}: {n_epochs} epoch(s), {loss}: {mark}",
                       file=sys.stderr)  # fmt: skip

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

    def _score_held_out(self, held, training, epoch):
        """Loss of the held-out rows after ``epoch`` epochs of ``training``; keeps the best
        state (itself: ``_train_run`` copies it if it trains on)."""
        X, y, w = held["rows"]
        margins = training.decision(training.state, X)
        if not np.isfinite(margins).all():  # diverged: no loss to compare
            training.refuse("non-finite loss or weights")
        loss = self._loss_from_margins(margins, y, w)
        if loss < held["best"] or held["state"] is None:
            held.update(best=loss, state=training.state, epochs=epoch)
        return loss

    def _best_epoch(self, training, held, curve, learn_held_out):
        """Go back to the state of the best held-out epoch; returns the curve up to it. With
        ``learn_held_out`` (``max_iter="auto"``) that state then learns the held-out rows
        once, in order: after one epoch that is exactly one epoch over all the rows."""
        training.state = held["state"]
        if learn_held_out:
            training.epoch(held["rows"], np.arange(held["rows"].X.shape[0]))
        return curve[: held["epochs"]]

    # -- prediction ------------------------------------------------------------------------
    def _margins(self, X):
        """Margins ``X @ coef_.T + intercept_``, (n_samples,) or (n_samples, n_outputs)."""
        check_is_fitted(self, "state_")
        X = self._validate_X(X, reset=False)
        outputs = n_outputs_of(getattr(self, "classes_", None))
        state_type = self._training_type.state_type
        check_state(self.state_, state_type, X.shape[1], outputs, scan=False)
        margins = self._training_type.decision(self.state_, X)
        return margins[:, 0] if margins.shape[1] == 1 else margins

    @property
    def coef_(self) -> np.ndarray:
        """Linear weights, shape (n_outputs, n_features) (``(1, n_features)`` for binary)."""
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
        state_type = cls._training_type.state_type
        expected = set(state_type.__dataclass_fields__)
        if is_classifier(model):
            expected.add("classes_")
        if set(arrays) != expected:
            raise ValueError(
                f"arrays {sorted(arrays)} do not fit a {cls.__name__} (expected {sorted(expected)})"
            )
        if "classes_" in arrays:
            model.classes_ = _io.check_classes(arrays.pop("classes_"))
        model.state_ = state_type(**{k: np.ascontiguousarray(v) for k, v in arrays.items()})
        for name, value in attributes.items():
            setattr(model, name, value)
        outputs = n_outputs_of(getattr(model, "classes_", None))
        check_fitted(model.state_, state_type, model.n_features_in_, outputs, fitted)
        if not model.state_.is_finite():
            raise ValueError("the weights are not all finite")
        return model


class _LogisticOutput:
    """What a logistic model adds to a row model: labels as classes, the logistic (two
    classes) or softmax loss, probabilities."""

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
    """What a regression model adds to a row model: float targets, the squared or Huber loss
    (``loss``, ``epsilon``)."""

    def _classes_of(self, y, classes, reset):
        return None

    def _loss_from_margins(self, margins, y, w):
        return 0.5 * mean_squared_error(y, margins[:, 0], sample_weight=w)

    def predict(self, X: MatrixLike) -> np.ndarray:
        """Predicted values, shape (n_samples,)."""
        return self._margins(X)
