"""The training of the linear models: the kernels of :mod:`sparseopt.models._linear` (or of
:mod:`sparseopt.cuda._linear` on the GPU) on a :class:`LinearState`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import cuda as gpu
from ..models import _linear as kernels
from ..optim import FTRL, Optimizer
from ..optim import _rules as R
from . import _safety
from ._base import Rows, check_order
from ._optimizer_param import named_optimizer, validated
from ._rowtraining import (
    DEFAULT_LEARNING_RATE,
    RowTraining,
    check_continued,
    check_tables,
    continued_state,
    n_outputs_of,
)


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

    @staticmethod
    def nbytes(opt: Optimizer, n_features: int, n_outputs: int, dtype) -> int:
        """Bytes of a new state, counted before allocating it."""
        n, width = n_features, 1 + opt.initial_slots().size
        itemsize = np.dtype(dtype).itemsize
        return (n + 1) * n_outputs * width * itemsize + (16 * n if opt.needs_stamp else 0)

    check = check_tables

    def arrays(self) -> dict:
        return {k: getattr(self, k) for k in ("table", "bias", "stamp", "mark", "clock")}

    def cast(self, dtype) -> None:
        """The weights and slots as ``dtype`` (the type of the rows trained on)."""
        self.table = self.table.astype(dtype, copy=False)
        self.bias = self.bias.astype(dtype, copy=False)

    def weights(self) -> tuple:
        """The weights, without the optimizer slots."""
        return self.table[:, 0], self.bias[:, 0]

    def is_finite(self) -> bool:
        return _safety.all_finite(self.table[:, 0], self.bias[:, 0])


class LinearTraining(RowTraining):
    """A training of a linear model: the kernels of :mod:`sparseopt.models._linear` (or of
    :mod:`sparseopt.cuda._linear` on the GPU) on a :class:`LinearState`."""

    state_type = LinearState
    scratch_fill = np.nan
    needs_touched = False  # every table shared, and nothing to prepare

    @staticmethod
    def make_optimizer(params: dict) -> Optimizer:
        """The optimizer of the parameters: the named one (or a copy of the object), with
        weight decay ``alpha`` and, for FTRL only, ``l1``."""
        opt = named_optimizer(params["optimizer"], params["learning_rate"], DEFAULT_LEARNING_RATE)
        if params["alpha"]:
            opt.weight_decay = params["alpha"]
        if params["l1"]:
            if not isinstance(opt, FTRL):
                raise ValueError(
                    f"l1={params['l1']} needs optimizer='ftrl', whose closed form applies L1 "
                    f"exactly to lazily updated coordinates; got {type(opt).__name__}"
                )
            opt.l1 = params["l1"]
        return validated(opt)

    @classmethod
    def start(cls, estimator, params, X, fitted, classes, n_iter_start, n_threads):
        """The training of ``X``'s columns for ``estimator`` of ``params``: a new state (its
        size checked), or the fitted one of ``fitted`` (checked, see :func:`check_continued`)."""
        opt = cls.make_optimizer(params)
        n_features, n_outputs = X.shape[1], n_outputs_of(classes)
        if fitted is None:
            nbytes = LinearState.nbytes(opt, n_features, n_outputs, X.dtype)
            _safety.check_table_size(nbytes, "the model")
            state = LinearState.new(opt, n_features, n_outputs, X.dtype)
        else:
            check_continued(fitted, LinearState, n_features, n_outputs, opt)
            state = continued_state(fitted, X.dtype)
        return cls(estimator, params, opt, state, n_features, classes, n_iter_start, n_threads)

    @staticmethod
    def decision(state, X) -> np.ndarray:
        """Margins of canonical CSR rows, shape (n_samples, n_outputs)."""
        table = state.table.astype(X.dtype, copy=False)
        return kernels.linear_decision(X.indptr, X.indices, X.data, table, state.bias)

    def epoch(self, rows: Rows, order: np.ndarray) -> float:
        """One pass of the kernels over the rows in ``order``."""
        check_order(order, self.count(rows))
        X, targets, weights = rows
        opt, state = self.optimizer, self.state
        hp, spec = opt.hyperparameters(), opt.schedule_spec()
        if gpu.use_gpu(self.device, X.nnz, self.batch_size):
            from ..cuda import _linear as gpu_kernels  # imports numba.cuda: only when used

            status, total = gpu_kernels.train_epoch(
                opt.rule, X, targets, weights, order, self.batch_size, self.loss, self.delta,
                hp, spec, state, self.fit_intercept,
            )  # fmt: skip
            self.refuse_status(status)
            return total
        train = kernels.linear_train_pass(opt.rule, self.loss, state.stamp.size > 0)
        data = (X.indptr, X.indices, X.data, targets, weights, order)
        tables = (state.table, state.bias, state.stamp, state.mark, state.clock, self.scratch)
        config = (self.step_rows, self.delta, self.fit_intercept)
        return self.run_pass(train, (data, tables, hp, spec, config), hp, spec, order.size)

    def catch_up(self) -> None:
        state = self.state
        if state.stamp.size == 0:  # no rule with pending steps: nothing to compile or run
            return
        catch_up = kernels.linear_catch_up(self.optimizer.rule)
        catch_up(self.optimizer.hyperparameters(), self.optimizer.schedule_spec(), state.clock,
                 state.table, state.stamp, state.mark)  # fmt: skip

    def _merge_layout(self):
        """Feature j owns rows ``j * K .. j * K + K - 1`` of the table (one per output); the
        intercepts are shared."""
        accumulator = self.optimizer.accumulator_slot
        K = self.state.bias.shape[0]
        return {"table": (K, 1, accumulator), "bias": (None, 1, accumulator)}

    def prepare_merge(self, touched) -> None:
        """Nothing: a linear model's untouched rows are what every copy started from."""
