"""The training of the linear models: the kernels of :mod:`sparseopt.models._linear` (or of
:mod:`sparseopt.cuda._linear` on the GPU) on a :class:`LinearState`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import cuda as gpu
from ..models import _linear as kernels
from ..optim import Optimizer
from ..optim import _rules as R
from . import _safety
from ._base import Rows, check_order
from ._rowtraining import RowTraining


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

    scratch_fill = np.nan

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

        def arguments(clock, bias, batch_size):
            tables = (state.table, bias, state.stamp, state.mark, clock, self.scratch)
            return data, tables, hp, spec, (batch_size, self.delta, self.fit_intercept)

        return self.run_pass(train, arguments, hp, spec, order.size)

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
