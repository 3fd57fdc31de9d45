"""The training of matrix factorization: its tables, the interactions laid out for the
kernels, and :class:`MFTraining` (the protocol of :mod:`._base`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import check_array

from ..models import _mf as K
from ..models import _mf_features as KF
from ..optim import _rules as R
from . import _safety
from ._base import DivergenceError, Training, check_order
from ._mf_features import csr_tuple, feature_counts

# the epochs of max_iter="auto" by loss (see _mf._DEFAULT_LEARNING_RATE)
_DEFAULT_MAX_ITER = {"squared": 5, "warp": 20}
_IMPLICIT_MAX_ITER = 15
# X as fit and predict(X) accept it: scikit-learn's checks, any sparse format or dense
_ACCEPT = dict(accept_sparse="csr", dtype=(np.float64, np.float32), ensure_all_finite=True,
               input_name="X")  # fmt: skip
# the tables of a model: user rows, item rows and, with user_history, the item history rows
SIDES = ("user", "item", "history")


@dataclass
class _Side:
    """The tables of one side (users or items), laid out as :mod:`sparseopt.models._mf` reads.

    ``counts[x]`` is the number of known interactions of row ``x``: rows with none are
    cold and scored by their bias alone.
    """

    bias: np.ndarray
    factors: np.ndarray
    stamp: np.ndarray
    mark: np.ndarray
    counts: np.ndarray

    def kernel_view(self):
        return (self.bias, self.factors, self.stamp, self.mark)

    def copy(self) -> _Side:
        return _Side(*(getattr(self, f.name).copy() for f in fields(self)))

    @property
    def n_rows(self) -> int:
        return self.bias.shape[0]


def _new_side(n_rows, n_components, opt, rng, init_std, per_row) -> _Side:
    slots = opt.initial_slots().astype(np.float32)
    bias = np.zeros((n_rows, 1 + slots.size), np.float32)
    bias[:, 1:] = slots
    init = rng.normal(0.0, init_std, n_rows * n_components)
    if per_row:  # the k factors, then the shared AdaGrad accumulator
        factors = np.empty((n_rows, n_components + 1), np.float32)
        factors[:, :n_components] = init.reshape(n_rows, n_components)
        factors[:, n_components] = slots[0]
    else:
        factors = np.zeros((n_rows * n_components, 1 + slots.size), np.float32)
        factors[:, 1:] = slots
        factors[:, 0] = init
    size = n_rows if opt.needs_stamp else 0
    return _Side(bias, factors, np.zeros(size), np.zeros(size), np.zeros(n_rows, dtype=np.int64))


def _grow(side: _Side, n_rows, n_components, opt, rng, init_std, per_row, t, log_decay):
    """``side`` with fresh rows appended up to ``n_rows`` (stamped at the current step)."""
    extra = n_rows - side.n_rows
    if extra <= 0:
        return side
    new = _new_side(extra, n_components, opt, rng, init_std, per_row)
    new.stamp[:] = t
    new.mark[:] = log_decay
    return _Side(
        *(np.concatenate([getattr(side, f.name), getattr(new, f.name)]) for f in fields(side))
    )


class _MFRows(NamedTuple):
    """Interactions as the MF kernels take them: ``data`` is ``(users, items, values,
    indptr, indices)``, the entries as coordinates (global user ids) and the CSR pattern of
    every known interaction; ``X`` is the block they came from."""

    X: object
    data: tuple


class MFTraining(Training):
    """A training of :class:`MatrixFactorization` (the protocol of
    :mod:`sparseopt.estimators._base`). Its rows are interactions: an order indexes the
    stored entries of the rows' X. It holds the tables (``state``), the interactions'
    pattern (for negatives and user histories), the kernel made once for the optimizer's
    rule, the loss and the per-row flag, and the estimator's parameters that training reads,
    read once here."""

    def __init__(self, estimator, optimizer, state, per_row, mu, rating_range, n_iter, rng,
                 n_threads):  # fmt: skip
        self.estimator = estimator  # whose fitted model finish sets
        self.optimizer, self.state = optimizer, state
        self.per_row, self.mu, self.rating_range = per_row, mu, rating_range
        self.n_features = state["item"].n_rows
        self.classes, self.n_iter_start, self.n_threads = None, n_iter, n_threads
        self.rng = rng  # seeds each epoch's shuffle and negatives, after the tables' draws
        self._seed = None  # the seed of the last order made: its epoch goes on from it
        self.loss, self.k = estimator.loss, int(estimator.n_components)
        self.n_epochs = _max_epochs(estimator.max_iter, self.loss)
        self._consts = K.mf_consts(
            mu=mu, alpha_biases=estimator.alpha_biases, alpha_factors=estimator.alpha_factors,
            n_components=self.k, n_negatives=estimator.n_negatives,
            max_sampled=estimator.max_sampled, per_row=per_row,
        )  # fmt: skip
        self._train_range = self._kernel()
        if "history" in state:
            self._sides = tuple(state[n].kernel_view() for n in SIDES)
        else:  # no rows: the kernels skip the history term
            empty = _new_side(0, 1, optimizer, np.random.RandomState(0), 0.0, per_row)
            self._sides = (state["user"].kernel_view(), state["item"].kernel_view(),
                           empty.kernel_view())  # fmt: skip

    def _kernel(self):
        """The training kernel for the optimizer's rule, the loss, the per-row flag and the
        user histories (a history table) or none."""
        return K.mf_train_range(self.optimizer.rule, K.LOSSES[self.loss], self.lazy(),
                                bool(self.per_row), "history" in self.state)  # fmt: skip

    def __getstate__(self):  # sent to Dask workers: the kernel is made anew there
        return dict(vars(self), _train_range=None)

    def __setstate__(self, values):
        vars(self).update(values)
        self._train_range = self._kernel()

    # -- rows --------------------------------------------------------------------------------
    def rows(self, X, y=None, sample_weight=None, *, first_row=0) -> _MFRows:
        """Check the interactions ``X`` (users ``first_row ..`` of the training's, a block of
        its matrix) and lay them out for :meth:`epoch`; ``y`` and ``sample_weight`` must be
        None (the stored values are the ratings or weights)."""
        if y is not None or sample_weight is not None:
            raise ValueError("MatrixFactorization trains on X alone: y and sample_weight are None")
        X = _check_interactions(X, self.loss, self.estimator)
        seen = self.state["seen"]
        if first_row < 0 or first_row + X.shape[0] > seen.shape[0] or X.shape[1] > seen.shape[1]:
            raise ValueError(
                f"X of shape {X.shape} at row {first_row} lies outside the training's "
                f"{seen.shape[0]} users and {seen.shape[1]} items"
            )
        rows = self._rows(X, first_row)
        users, items = rows.data[:2]
        if not seen[users, items].all():
            raise ValueError("X holds interactions that start_training was not given")
        return rows

    def _rows(self, X, first_row=0) -> _MFRows:
        coo = X.tocoo()
        seen = self.state["seen"]
        data = ((coo.row + first_row).astype(np.int32), coo.col.astype(np.int32),
                coo.data.astype(np.float32), seen.indptr.astype(np.int64),
                seen.indices.astype(np.int32))  # fmt: skip
        return _MFRows(X, data)

    def max_epochs(self) -> int:
        return self.n_epochs

    def count(self, rows) -> int:
        return rows.data[0].size

    def order(self, rows, rng) -> np.ndarray:
        """The epoch's order of the interactions: shuffled, and with user histories grouped
        by user (users in a random order); ``rng``: a RandomState or Generator."""
        draw = rng.integers if isinstance(rng, np.random.Generator) else rng.randint
        self._seed = int(draw(np.iinfo(np.int32).max))
        order = np.arange(self.count(rows), dtype=np.int64)
        K.mf_epoch_order(order, rows.data[0], self.state["seen"].shape[0],
                         "history" in self.state, self._seed)  # fmt: skip
        return order

    # -- training ----------------------------------------------------------------------------
    def epoch(self, rows, order) -> float:
        """Train on the interactions in ``order``, each one step (and its negatives' steps);
        returns the summed loss. Right after :meth:`order` the epoch goes on from its seed
        (as ``fit`` does); else it draws one."""
        check_order(order, self.count(rows))
        seed, self._seed = self._seed, None
        continued = seed is not None
        if not continued:
            seed = int(self.rng.randint(np.iinfo(np.int32).max))
        opt = self.optimizer
        status, total = K.mf_train_epoch(
            self._train_range, self.n_threads, seed, self._sides, rows.data + (order,),
            self._consts, opt.hyperparameters(), opt.schedule_spec(), self.state["clock"],
            continued,
        )  # fmt: skip
        if status != K.OK or not math.isfinite(total):
            what = "learning rate" if status == K.BAD_STEP else "loss"
            self.refuse(f"a non-finite {what}")
        return total

    def catch_up(self) -> None:
        hp, spec = self.optimizer.hyperparameters(), self.optimizer.schedule_spec()
        catch_up = K.mf_catch_up(self.optimizer.rule, bool(self.per_row))
        for side in self._sides[:3]:  # users, items, histories (not the feature maps)
            if side[2].size:  # stamps: the rule has pending steps
                catch_up(hp, spec, self.state["clock"], side, self.k)

    def check(self, rows=None, loss=None) -> None:
        """Raise DivergenceError if a weight is not finite or beyond ``MAX_WEIGHT`` times the
        largest |rating|, if an optimizer slot (an accumulator) is not finite, or (squared
        loss) if ``loss``, a mean over ``rows``, is far worse than predicting the mean
        rating."""
        k = self.k
        lo, hi = self.rating_range
        bound = _safety.MAX_WEIGHT * max(1.0, abs(lo), abs(hi))
        for name in SIDES:
            if name in self.state:
                side = self.state[name]
                weights = side.factors[:, :k] if self.per_row else side.factors[:, 0]
                largest = _safety.largest_magnitude(side.bias[:, 0], weights)
                if not largest <= bound:  # NaN too
                    what = "non-finite" if not np.isfinite(largest) else f"{largest:.3g}"
                    self.refuse(f"a {name} weight reached {what} (the limit is {bound:.3g})")
                # the optimizer's slots too: an overflowed accumulator leaves the weights
                # finite but stops their learning, and the model file would not load
                if not _safety.all_finite(side.bias, side.factors):
                    self.refuse(f"the optimizer state of the {name}s overflowed")
        if loss is not None and rows is not None and self.loss == "squared":
            ratings = rows.data[2].astype(np.float64)
            constant = _safety.constant_loss("squared", ratings, 1.0)
            start = _safety.zero_model_loss("squared", ratings - self.mu, 1.0)
            if _safety.useless_fit(loss, ratings.size, start, constant):
                self.refuse(
                    f"the training loss ended at {loss:.4g}, far worse than predicting the "
                    f"mean rating ({constant:.4g})"
                )

    def refuse(self, what: str):
        raise DivergenceError(
            f"matrix factorization diverged ({what}) with optimizer "
            f"{type(self.optimizer).__name__} and learning_rate="
            f"{self.optimizer.learning_rate!r}: try a smaller learning_rate"
        )

    def finish(self, curve, *, scores=(), rows=None):
        self.check(rows, curve[-1] if rows is not None and len(curve) else None)
        est = self.estimator
        _set_fitted(est, self.state, self.optimizer, self.per_row, self.mu, self.rating_range,
                    self.n_iter_start + len(curve))  # fmt: skip
        est.loss_curve_ = list(curve)
        return est

    # -- merging copies (sparseopt.dask) ---------------------------------------------------
    def tables(self) -> dict:
        """Biases and factors of users, items and item histories. A user's rows are trained
        by the copy that holds the user's interactions alone (not shared); item and history
        rows merge, weighted by their accumulators."""
        accumulator = self.optimizer.accumulator_slot
        k = self.k
        factors = (k, 0) if self.per_row else (1, accumulator)
        return {f"{name}.{part}": (*layout, name != "user")
                for name in SIDES if name in self.state
                for part, layout in (("bias", (1, accumulator)), ("factors", factors))}  # fmt: skip

    def table(self, name: str) -> np.ndarray:
        side, part = name.split(".")
        return getattr(self.state[side], part)

    def touched(self, rows, order) -> dict:
        """Rows of each table that training on ``order`` may change: its users' rows, and
        every item and history row (negatives are drawn among all items)."""
        seen = np.zeros(self.state["user"].n_rows, bool)
        seen[rows.data[0][order]] = True  # np.unique sorts: 10x slower
        users = np.flatnonzero(seen)
        k = self.k
        factor_rows = users if self.per_row else (users[:, None] * k + np.arange(k)).ravel()
        return {name: None if not name.startswith("user.") else
                users if name == "user.bias" else factor_rows
                for name in self.tables()}  # fmt: skip

    def prepare_merge(self, touched) -> None:
        """Nothing: every factor was drawn when the tables were made."""

    def lazy(self) -> bool:
        return self.state["user"].stamp.size > 0

    def clock(self) -> np.ndarray:
        return self.state["clock"]

    def set_clock(self, clock) -> None:
        self.state["clock"][:] = clock
        for name in SIDES:
            if name in self.state and self.state[name].stamp.size:
                self.state[name].stamp[:] = clock[R.CLOCK_T]
                self.state[name].mark[:] = clock[R.CLOCK_LOG_DECAY]


def _check_interactions(X, loss, estimator):
    """The interactions ``X`` checked (``estimator``: the model, named in errors) as CSR of
    float32 values, duplicates summed (refused for ratings), explicit zeros of implicit
    weights dropped."""
    _safety.check_sparse_structure(X)
    if loss == "squared":
        _refuse_duplicates(X)
    X = check_array(X, estimator=estimator, **_ACCEPT)
    X = sp.csr_matrix(X, dtype=np.float32)
    X.sum_duplicates()
    if loss != "squared":
        if (X.data < 0).any():
            raise ValueError(
                f"loss={loss!r} reads X as positive interaction weights; X has negative values"
            )
        X.eliminate_zeros()
    if X.nnz == 0:
        raise ValueError(
            f"X of shape {X.shape} has no interactions (no stored entries to learn from)"
        )
    return X


def _max_epochs(max_iter, loss) -> int:
    """The epochs of ``max_iter`` ("auto": the default of ``loss``)."""
    if max_iter == "auto":
        return _DEFAULT_MAX_ITER.get(loss, _IMPLICIT_MAX_ITER)
    return max_iter


def _set_fitted(model, state, opt, per_row, mu, rating_range, n_iter):
    """Make ``state`` the fitted tables of ``model`` (a training's end, or a loaded file)."""
    model.tables_ = state
    model.optimizer_ = opt
    model.factor_state_ = "row" if per_row else "element"
    model.global_mean_ = mu
    model.rating_range_ = tuple(rating_range)
    model.n_iter_ = n_iter
    model.n_users_ = state["user_map"].shape[0] if "user_map" in state else state["user"].n_rows
    model.n_items_ = state["item_map"].shape[0] if "item_map" in state else state["item"].n_rows
    model.n_features_in_ = model.n_items_


def _refuse_duplicates(X):
    """Ratings hold one value per (user, item): refuse repeated entries, which would be
    summed (3 and 4 becoming 7)."""
    if not sp.issparse(X) or X.format not in ("coo", "csr", "csc"):
        return
    if X.format != "coo" and X.has_canonical_format:
        return
    canonical = X.tocsr() if X.format == "coo" else X.copy()
    canonical.sum_duplicates()
    if canonical.nnz != X.nnz:
        raise ValueError(
            f"X repeats {X.nnz - canonical.nnz} (user, item) entries: with loss='squared' each "
            f"pair holds one rating (repeats would be summed); keep one rating per pair (the "
            f"latest, or their mean) before fitting"
        )


def _resize(m, shape):
    """CSR ``m`` zero-padded to ``shape`` (at least as large)."""
    m = sp.csr_matrix(m)
    if m.shape == shape:
        return m
    indptr = np.concatenate([m.indptr, np.full(shape[0] - m.shape[0], m.indptr[-1])])
    return sp.csr_matrix((m.data, m.indices, indptr), shape=shape)


class FeatureMFTraining(MFTraining):
    """A training of :class:`~sparseopt.MatrixFactorization` with side features: the tables
    hold one row per feature, and the kernel reads users and items through their maps
    (``state["user_map"]``, ``state["item_map"]``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_features = self.state["item_map"].shape[0]
        self._sides = self._sides[:3] + (csr_tuple(self.state["user_map"]),
                                         csr_tuple(self.state["item_map"]))  # fmt: skip

    def _kernel(self):
        return KF.mf_features_train_range(self.optimizer.rule, K.LOSSES[self.loss],
                                          self.lazy(), bool(self.per_row),
                                          "history" in self.state)  # fmt: skip

    # -- merging copies (sparseopt.dask) ---------------------------------------------------
    def tables(self) -> dict:
        """:meth:`MFTraining.tables`, every table shared: a user feature row serves every
        user that has it, so it merges as an item row does (weighted by its accumulators)."""
        return {name: (*layout[:-1], True) for name, layout in super().tables().items()}

    def touched(self, rows, order) -> dict:
        """Every row of every table (a feature row is touched by any user or item)."""
        return dict.fromkeys(self.tables())


def _count_interactions(state: dict, X) -> None:
    """Add the pairs of X to the seen matrix of ``state`` and set the tables' counts."""
    n_users, n_items = state["seen"].shape
    seen = state["seen"] + _resize(X, (n_users, n_items))
    seen.data[:] = 1.0
    seen.sort_indices()
    state["seen"] = seen
    counts = _table_counts(seen, state)
    for name in SIDES:
        if name in state:
            state[name].counts[:] = counts[name]


def _table_counts(seen, maps) -> dict:
    """Each table's counts of interactions: per user or item in ``seen``, or with feature
    maps (in ``maps``) per feature row, summed over the ids holding the feature (the history
    rows stay one per item)."""
    item_counts = np.bincount(seen.indices, minlength=seen.shape[1])
    counts = {"user": np.diff(seen.indptr), "item": item_counts, "history": item_counts}
    if "user_map" in maps:
        counts["user"] = feature_counts(maps["user_map"], counts["user"])
        counts["item"] = feature_counts(maps["item_map"], item_counts)
    return counts
