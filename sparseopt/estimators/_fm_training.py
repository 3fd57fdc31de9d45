"""The training of the factorization machines: the kernels of :mod:`sparseopt.models._fm` on
an :class:`FMState`, and the settings that ``max_iter="auto"`` races."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..models import _fm as kernels
from ..optim import Optimizer
from ..optim import _rules as R
from . import _safety
from ._base import Rows, check_order
from ._optimizer_param import named_optimizer, per_row, refuse_ftrl, validated
from ._rowtraining import (
    DEFAULT_LEARNING_RATE,
    RowTraining,
    check_continued,
    check_tables,
    continued_state,
)

# By name, AdaGrad's factor accumulators start at 30 (the linear weights' at 0), or at what
# max_iter="auto" chooses (AUTO_CANDIDATES). A factor's gradient is the loss derivative times
# the other features' vectors, of the order of init_std: from 0, a feature's first step would
# be learning_rate * sign(g), several times the vector itself. Starting at 30 damps a
# feature's factors until its squared gradients have added up to as much, i.e. until it has
# been seen often. Picked on the dev splits: on the Criteo and Avazu heads (7,200 and 8,000
# rows) FM is then level with logistic regression or above it (at 1 and 10 it fell 0.009 and
# 0.003 AUC below on the Criteo dev split), and on 200,000 rows of planted interactions it
# keeps most of its lead (logloss 0.508, against 0.506 at 10 and 0.521 for logistic
# regression); see benchmarks/README.md.
FACTOR_ACCUMULATOR_START = 30.0

# init_std="auto" draws factors of standard deviation sigma such that the pairwise term of a
# row of m active features starts with a standard deviation of about INIT_PAIRS_STD: that term
# sums m (m - 1) / 2 dot products of k products of two N(0, sigma^2) draws, so its standard
# deviation is sigma^2 sqrt(k m (m - 1) / 2). Small against the linear part, so that the first
# epochs are those of logistic regression, and the same whatever k and the number of fields.
INIT_PAIRS_STD = 0.005

# Rows with m active features that a training started on a matrix without rows assumes
# (init_std="auto"): Criteo's 39 fields.
ASSUMED_ACTIVE = 39

# max_iter="auto" with learning_rate and init_std left to "auto" and AdaGrad by name: (learning
# rate, start of the factors' accumulators, init_std relative to "auto"'s) of the candidates
# tried on the held-out rows by successive halving, the damped default first. The "hot"
# setting of issue 29 (0.2, 0.1) lost on every set of benchmarks/bench_fm_quality.py and, as a
# third candidate, took the Criteo head's fit time to 3-4x that of one setting.
AUTO_CANDIDATES = ((0.05, FACTOR_ACCUMULATOR_START, 1.0), (0.05, 1.0, 1.0))

# fields=None gives every column a field of its own: n_features**2 * k factors
MAX_COLUMNS_WITHOUT_FIELDS = 1024


def auto_init_std(n_components: int, n_active: float) -> float:
    """``init_std="auto"``: the factors' standard deviation for rows of ``n_active`` features
    (see ``INIT_PAIRS_STD``)."""
    pairs = max(n_active * (n_active - 1.0) / 2.0, 1.0)
    return float(np.sqrt(INIT_PAIRS_STD / np.sqrt(n_components * pairs)))


def checked_fields(params, n_features, carried=None) -> np.ndarray:
    """int32 field of each column for an FFM (its ``fields`` parameter; ``carried``: the
    fields X brought, its attribute ``column_fields``, for "auto"), empty for an FM."""
    if "fields" not in params:
        return np.zeros(0, np.int32)
    fields = params["fields"]
    if isinstance(fields, str):  # "auto"
        fields = carried
    if fields is None:
        if n_features > MAX_COLUMNS_WITHOUT_FIELDS:
            raise ValueError(
                f"fields=None gives each of the {n_features} columns a field of its own "
                f"(n_features**2 * n_components factors); pass fields, the field of each "
                f"column (for the readers' field_aware=True layout: "
                f"sparseopt.datasets.column_fields(n_bits, n_fields))"
            )
        return np.arange(n_features, dtype=np.int32)
    fields = np.asarray(fields)
    if fields.ndim != 1 or fields.shape[0] != n_features:
        raise ValueError(
            f"fields has shape {fields.shape} but X has {n_features} columns: fields needs "
            f"one entry per column (the field of column j at fields[j])"
        )
    if fields.size and not np.issubdtype(fields.dtype, np.integer):
        if not (np.isfinite(fields).all() and (fields == np.round(fields)).all()):
            raise ValueError("fields must hold integer field ids (0, 1, ..., or -1)")
    fields = fields.astype(np.int64)
    if fields.size and (fields.min() < -1 or fields.max() >= n_features):
        raise ValueError(
            f"fields must be field ids from 0 (or -1 for a column without interactions) "
            f"up to at most n_features - 1; got values from {fields.min()} to {fields.max()}"
        )
    return fields.astype(np.int32)


def factor_init(params, opt, X) -> list:
    """``[init_std, first value of the factors' first slot, alpha_factors]`` for a new
    model of X."""
    init_std = params["init_std"]
    if init_std == "auto":
        n_active = X.nnz / X.shape[0] if X.shape[0] else ASSUMED_ACTIVE
        init_std = auto_init_std(params["n_components"], n_active)
    adagrad = params["optimizer"] == "adagrad"
    acc0 = FACTOR_ACCUMULATOR_START if adagrad else opt.initial_slots()[:1].sum()
    return [float(init_std), float(acc0), new_alpha_factors(params)]


def new_alpha_factors(params) -> float:
    """The factors' penalty of a new model: ``alpha_factors``, or the one "auto" starts
    with."""
    alpha = params["alpha_factors"]
    return float(params["auto_alpha_factors"] if alpha == "auto" else alpha)


def _int32_indices(X):
    """CSR ``X`` with int32 index arrays where they fit: one compiled signature fewer."""
    if X.indices.dtype == np.int32 or max(X.nnz, X.shape[1]) >= 2**31:
        return X
    return sp.csr_matrix(
        (X.data, X.indices.astype(np.int32), X.indptr.astype(np.int32)), shape=X.shape
    )


def _fresh_copy(state):
    """A copy of a state that has not trained yet (its factor table all zeros)."""
    fresh = copy.deepcopy(dataclasses.replace(state, factors=np.zeros(0)))
    fresh.factors = np.zeros(state.factors.shape, state.factors.dtype)  # pages mapped on use
    return fresh


@dataclass
class FMState:
    """What a factorization machine learns (layout in :mod:`sparseopt.models._fm`)."""

    table: np.ndarray  # (n_features, 1 + n_slots): linear weights, then slots
    bias: np.ndarray  # (1, 1 + n_slots)
    factors: np.ndarray  # (n_features * F * k, 1 + n_slots), or (n_features * F, k + 1) per row
    stamp: np.ndarray  # (n_features,) or (0,)
    mark: np.ndarray  # (n_features,) or (0,)
    clock: np.ndarray  # (CLOCK_SIZE,)
    fields: np.ndarray  # (n_features,) int32 field of each column (FFM), or (0,) (FM)
    layout: np.ndarray  # [k, F, per_row, seed]
    # [init_std, first value of the factors' first slot] of new vectors, alpha_factors
    init: np.ndarray

    @classmethod
    def new(cls, opt, n_features, k, fields, per_row, rng, dtype, init) -> FMState:
        slots = opt.initial_slots()
        row = np.concatenate([[0.0], slots]).astype(dtype)
        F = int(fields.max()) + 1 if fields.size else 1
        n_vectors = n_features * F
        # zeros: the kernels draw a feature's vectors when a row first holds it
        shape = (n_vectors, k + 1) if per_row else (n_vectors * k, 1 + slots.size)
        factors = np.zeros(shape, dtype)
        stamped = n_features if opt.needs_stamp else 0
        return cls(
            table=np.tile(row, (n_features, 1)),
            bias=row[None, :].copy(),
            factors=factors,
            stamp=np.zeros(stamped),
            mark=np.zeros(stamped),
            clock=np.zeros(R.CLOCK_SIZE),
            fields=fields,
            layout=np.array([k, F, int(per_row), rng.integers(2**31)], np.int64),
            init=np.array(init, np.float64),
        )

    @staticmethod
    def nbytes(opt, n_features, k, fields, per_row, dtype) -> int:
        """Bytes of a new state, counted before allocating it."""
        F = int(fields.max()) + 1 if fields.size else 1
        n_slots, itemsize = opt.initial_slots().size, np.dtype(dtype).itemsize
        per_vector = k + 1 if per_row else k * (1 + n_slots)
        linear = (n_features + 1) * (1 + n_slots) * itemsize + (
            16 * n_features if opt.needs_stamp else 0
        )
        return linear + n_features * F * per_vector * itemsize

    def check(self, n_features, n_outputs, n_slots=None, scan=True) -> None:
        """:func:`check_tables`, then the layout, fields, factors and ``init`` (``scan``: the
        fields' values too)."""
        check_tables(self, n_features, n_outputs, n_slots)
        if n_outputs != 1:
            raise ValueError(f"a factorization machine has one output, not {n_outputs}")
        layout = _safety.check_array("state_.layout", self.layout, (4,), np.int64)
        fields = _safety.check_array("state_.fields", self.fields, None, np.int32)
        k, F, per_row = (int(v) for v in layout[:3])
        width = self.table.shape[1]
        if (
            fields.shape not in ((0,), (n_features,))
            or k < 1
            or per_row not in (0, 1)
            or (per_row and width != 2)  # one AdaGrad accumulator per vector
            or (F != 1 and not fields.size)
            or F < 0
            or (scan and fields.size and (fields.min() < -1 or fields.max() >= F))
        ):
            raise ValueError(
                f"state_.layout {layout.tolist()} and state_.fields (shape {fields.shape}) do "
                f"not describe a factorization machine of {n_features} columns"
            )
        shape = (n_features * F, k + 1) if per_row else (n_features * F * k, width)
        _safety.check_array("state_.factors", self.factors, shape, self.table.dtype)
        init = _safety.check_array("state_.init", self.init, (3,), np.float64)
        if not (np.isfinite(init).all() and init[0] > 0 and init[1] >= 0 and init[2] >= 0):
            raise ValueError(
                f"state_.init {init.tolist()} must be [init_std > 0, accumulator start >= 0, "
                f"alpha_factors >= 0]"
            )

    # the layout decoded, for the kernels' arguments (checked by ``check`` when loaded)
    @property
    def n_components(self) -> int:
        return int(self.layout[0])

    @property
    def n_fields(self) -> int:
        """F: 1 for a plain FM."""
        return int(self.layout[1])

    @property
    def per_row(self) -> bool:
        """Whether each factor vector keeps one AdaGrad accumulator (else one per element)."""
        return bool(self.layout[2])

    @property
    def seed(self) -> int:
        """Seed of the factor vectors' draws (each drawn from it and its feature alone)."""
        return int(self.layout[3])

    def arrays(self) -> dict:
        names = ("table", "bias", "factors", "stamp", "mark", "clock", "fields", "layout", "init")
        return {name: getattr(self, name) for name in names}

    def cast(self, dtype) -> None:
        """The weights, factors and slots as ``dtype`` (the type of the rows trained on)."""
        for name in ("table", "bias", "factors"):
            setattr(self, name, getattr(self, name).astype(dtype, copy=False))

    def weights(self) -> tuple:
        """The linear weights and the factors, without the optimizer slots."""
        k = self.n_components
        factors = self.factors[:, :k] if self.per_row else self.factors[:, 0]
        return self.table[:, 0], self.bias[:, 0], factors

    def is_finite(self) -> bool:
        return _safety.all_finite(self.table, self.bias, self.factors)


class FMTraining(RowTraining):
    """A training of a factorization machine: the kernels of :mod:`sparseopt.models._fm`
    on an :class:`FMState`, with the constants they take (``consts``) read once: the
    factors' penalty is the state's (``init[2]``).

    ``settings``: the ``(learning rate, init)`` that ``max_iter="auto"`` races on a new
    model (:meth:`candidates`); ``follow_ups``: the ``(alpha_factors, learning rate)`` that
    then train the kept run on from its best epoch, in turn (:meth:`follow_up`).
    """

    state_type = FMState

    def __init__(self, estimator, params, optimizer, state, n_features, classes,
                 n_iter_start, n_threads, *, settings=(), follow_ups=()):  # fmt: skip
        super().__init__(estimator, params, optimizer, state, n_features, classes,
                         n_iter_start, n_threads)  # fmt: skip
        self.settings, self.follow_ups = settings, follow_ups
        self.model = kernels.FFM if state.fields.size else kernels.FM
        init_std, acc0, alpha_factors = (float(v) for v in state.init)
        self.consts = kernels.fm_consts(
            n_components=state.n_components, alpha_linear=params["alpha_linear"],
            alpha_factors=alpha_factors, n_fields=state.n_fields,
            per_row=state.per_row, init_std=init_std, seed=state.seed, initial_slot=acc0,
        )  # fmt: skip

    def _variant(self, learning_rate, state) -> FMTraining:
        """This training on ``state`` at ``learning_rate`` (its follow-ups kept)."""
        opt = copy.deepcopy(self.optimizer)
        opt.learning_rate = learning_rate
        t = self
        return FMTraining(t.estimator, t.params, opt, state, t.n_features, t.classes,
                          t.n_iter_start, t.n_threads, follow_ups=t.follow_ups)  # fmt: skip

    @staticmethod
    def make_optimizer(params: dict) -> Optimizer:
        """The optimizer of the parameters (not FTRL; ``factor_state="row"``: AdaGrad)."""
        opt = named_optimizer(params["optimizer"], params["learning_rate"], DEFAULT_LEARNING_RATE)
        refuse_ftrl(opt, params["owner"])
        per_row(params["factor_state"], opt)
        return validated(opt)

    @classmethod
    def start(cls, estimator, params, X, fitted, classes, n_iter_start, n_threads):
        """As :meth:`LinearTraining.start`, the fitted state also checked against
        ``n_components``, ``factor_state`` and ``fields``; with AdaGrad by name and the
        learning rate and ``init_std`` left to "auto", the settings ``max_iter="auto"`` races
        (``AUTO_CANDIDATES``)."""
        if classes is not None and classes.size > 2:
            raise ValueError(
                f"Only binary classification is supported. The type of the target is "
                f"multiclass ({classes.size} classes): wrap {params['owner']} in "
                f"sklearn.multiclass.OneVsRestClassifier for more classes"
            )
        opt = cls.make_optimizer(params)
        n, k = X.shape[1], params["n_components"]
        one_slot = per_row(params["factor_state"], opt)  # one accumulator per factor vector
        chooses = (params["optimizer"] == "adagrad" and params["learning_rate"] == "auto"
                   and isinstance(params["init_std"], str))  # fmt: skip
        if fitted is None:
            fields = checked_fields(params, n, getattr(X, "column_fields", None))
            nbytes = FMState.nbytes(opt, n, k, fields, one_slot, X.dtype)
            _safety.check_table_size(nbytes, "the model")
            seed = params["random_state"]
            if isinstance(seed, np.random.RandomState):
                seed = seed.randint(2**31)
            rng, init = np.random.default_rng(seed), factor_init(params, opt, X)
            state = FMState.new(opt, n, k, fields, one_slot, rng, X.dtype, init)
        else:
            check_continued(fitted, FMState, n, 1, opt)
            fitted_state, fitted_opt = fitted[:2]
            if (fitted_state.n_components, fitted_state.per_row) != (k, one_slot):
                raise ValueError(
                    f"n_components={k}, factor_state={params['factor_state']!r} differ from the "
                    f"fitted model's ({fitted_state.n_components}, "
                    f"{'row' if fitted_state.per_row else 'element'!r}): set them back to "
                    f"continue training, or call fit to start over"
                )
            if not np.array_equal(
                checked_fields(params, n, fitted_state.fields), fitted_state.fields
            ):
                raise ValueError(
                    "fields differ from those the model was fitted with: set them back to "
                    "continue training, or call fit to start over"
                )
            state = continued_state(fitted, X.dtype)
            if chooses and fitted_opt is not None:  # going on at the rate the fit chose
                opt.learning_rate = fitted_opt.learning_rate
            if params["alpha_factors"] != "auto":  # and the chosen penalty unless one is set
                state.init[2] = params["alpha_factors"]
        settings = ()
        if chooses:
            base, alpha_factors = float(state.init[0]), new_alpha_factors(params)
            settings = tuple((learning_rate, (scale * base, acc0, alpha_factors))
                             for learning_rate, acc0, scale in AUTO_CANDIDATES)  # fmt: skip
        follow_ups = params["penalty_follow_ups"] if params["alpha_factors"] == "auto" else ()
        return cls(estimator, params, opt, state, n, classes, n_iter_start, n_threads,
                   settings=settings, follow_ups=follow_ups)  # fmt: skip

    @staticmethod
    def decision(state, X) -> np.ndarray:
        """Margins of canonical CSR rows, shape (n_samples, 1)."""
        X, dtype = _int32_indices(X), X.dtype
        margins = kernels.fm_decision(
            (X.indptr, X.indices, X.data),
            (state.table.astype(dtype, copy=False), state.bias.astype(dtype, copy=False),
             state.factors.astype(dtype, copy=False), state.fields),
            (kernels.FFM if state.fields.size else kernels.FM, state.n_components,
             state.n_fields, state.per_row),
        )  # fmt: skip
        return margins[:, None]

    def candidates(self) -> list:
        """A training for each of ``settings`` when the model is new, the first on this
        state, the others on copies of it (it has not trained yet)."""
        if not self.settings or self.state.clock[R.CLOCK_T] != 0:
            return [self]  # continued training (warm_start) keeps its settings
        out = []
        for learning_rate, init in self.settings:
            state = _fresh_copy(self.state) if out else self.state
            state.init[:] = init
            out.append(self._variant(learning_rate, state))
        return out

    def follow_up(self, best_state, done):
        """A training of a copy of ``best_state`` at the penalty and learning rate of
        ``follow_ups[done]``, or None when there are no more."""
        if done >= len(self.follow_ups):
            return None
        alpha_factors, learning_rate = self.follow_ups[done]
        state = copy.deepcopy(best_state)
        state.init[2] = alpha_factors
        return self._variant(learning_rate, state)

    def setting(self) -> str:
        init_std, acc0, alpha_factors = self.state.init
        return (f"alpha_factors={alpha_factors:g}, "
                f"learning_rate={self.optimizer.learning_rate!r}, init_std={init_std:.3g}, "
                f"factor accumulators from {acc0:g}")  # fmt: skip

    _kernel_rows = staticmethod(_int32_indices)

    scratch_fill = np.int64(-1)

    def epoch(self, rows: Rows, order: np.ndarray) -> float:
        """One pass of the kernels over the rows in ``order``."""
        check_order(order, self.count(rows))
        X, targets, weights = rows
        opt, state = self.optimizer, self.state
        hp, spec = opt.hyperparameters(), opt.schedule_spec()
        train = kernels.fm_train_pass(self.model, opt.rule, self.loss, state.stamp.size > 0,
                                      state.per_row)  # fmt: skip
        data = (X.indptr, X.indices, X.data, targets, weights, order)
        tables = (state.table, state.bias, state.factors, state.stamp, state.mark, state.clock,
                  self.scratch)  # fmt: skip
        config = (self.step_rows, self.delta, self.fit_intercept, state.fields, self.consts)
        return self.run_pass(train, (data, tables, hp, spec, config), hp, spec, order.size)

    def catch_up(self) -> None:
        state = self.state
        if state.stamp.size == 0:  # no rule with pending steps: nothing to compile or run
            return
        catch_up = kernels.fm_catch_up(self.optimizer.rule, state.per_row)
        catch_up(self.optimizer.hyperparameters(), self.optimizer.schedule_spec(), state.clock,
                 state.table, state.factors, state.stamp, state.mark, state.n_components,
                 state.n_fields)  # fmt: skip

    def _merge_layout(self):
        """The linear tables, and the factors: F vectors per feature, each one row of
        ``[v, G]`` with per-row state (its accumulator weights all k elements) or k rows of
        ``[v_f, slots]``."""
        state = self.state
        k, F = state.n_components, state.n_fields
        accumulator = self.optimizer.accumulator_slot
        factors = (F, k, 0) if state.per_row else (F * k, 1, accumulator)
        return {"table": (1, 1, accumulator), "bias": (None, 1, accumulator), "factors": factors}

    def prepare_merge(self, touched) -> None:
        """Draw every vector a copy drew: factor vectors are drawn when a row first holds
        their feature, from the seed and the feature alone, so a copy that never met the
        feature counts with the vector it would have drawn, not with zeros."""
        for rows in touched:  # a vector met by several copies is drawn once
            kernels.fm_draw(self.state.factors, np.asarray(rows["table"], np.int64), self.consts)


__all__ = ["FMState", "FMTraining"]
