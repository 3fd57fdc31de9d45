"""The training of the factorization machines: the kernels of :mod:`sparseopt.models._fm` on
an :class:`FMState`, and the settings that ``max_iter="auto"`` races."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..models import _fm as kernels
from ..optim import _rules as R
from . import _safety
from ._base import Rows, check_order
from ._rowtraining import RowTraining


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

    # the layout decoded, for the kernels' arguments (checked by _check_tables when loaded)
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

    def __init__(self, estimator, optimizer, state, n_features, classes, n_iter_start,
                 n_threads, *, settings=(), follow_ups=()):  # fmt: skip
        super().__init__(estimator, optimizer, state, n_features, classes, n_iter_start,
                         n_threads)  # fmt: skip
        self.settings, self.follow_ups = settings, follow_ups
        self.model = kernels.FFM if state.fields.size else kernels.FM
        init_std, acc0, alpha_factors = (float(v) for v in state.init)
        self.consts = kernels.fm_consts(
            n_components=state.n_components, alpha_linear=estimator.alpha_linear,
            alpha_factors=alpha_factors, n_fields=state.n_fields,
            per_row=state.per_row, init_std=init_std, seed=state.seed, initial_slot=acc0,
        )  # fmt: skip

    def _variant(self, learning_rate, state) -> FMTraining:
        """This training on ``state`` at ``learning_rate`` (its follow-ups kept)."""
        opt = copy.deepcopy(self.optimizer)
        opt.learning_rate = learning_rate
        t = self
        return FMTraining(t.estimator, opt, state, t.n_features, t.classes, t.n_iter_start,
                          t.n_threads, follow_ups=t.follow_ups)  # fmt: skip

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

        def arguments(clock, bias, batch_size):
            tables = (state.table, bias, state.factors, state.stamp, state.mark, clock,
                      self.scratch)  # fmt: skip
            config = (batch_size, self.delta, self.fit_intercept, state.fields, self.consts)
            return data, tables, hp, spec, config

        return self.run_pass(train, arguments, hp, spec, order.size)

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
