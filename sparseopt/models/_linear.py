"""Linear model kernels over CSR minibatches: logistic, softmax, squared and Huber losses.

The model has ``K`` outputs (1 for binary and regression, one per class for softmax). Its
weights live in one table with a row per (feature, output), ``r = j * K + c``: column 0 holds
the weight and the columns after it the optimizer's slots, so that a coordinate's weight and
state share a cache line. The intercepts have a table of their own with one row per output.

One batch is one optimizer step: margins are computed with the weights at the start of the
step (summed in float64), then each touched coordinate gets the gradient summed over the
batch's rows, :math:`g_{jc} = \\sum_i s_i x_{ij} \\, \\partial \\ell / \\partial m_{ic}`,
through :func:`sparseopt.optim._rules.update_coordinate`.

Kernels are made per (rule, loss, lazy) by the factories below and compiled on first use.
"""

import functools
import math

import numba
import numpy as np

from .._jit import JIT, PARALLEL_JIT, borrowed, prefetch, prefetch_ahead
from ..optim import _rules as R
from ._losses import BAD_STEP, NON_FINITE, OK, loss_derivative


@functools.cache
def linear_train_pass(rule, loss, lazy):
    """The training kernel for one optimizer rule, loss and laziness (compile-time constants,
    so each fit compiles only its own; the disk cache serves later processes).

    ``train(start, stop, pace, rows, state, hp, spec, config)`` trains on the rows
    ``order[start:stop]``, in batches of ``batch_size`` from ``start``, and returns (status,
    summed loss), where

    - ``rows = (indptr, indices, data, y, weights, order)``: CSR rows, targets (class index
      for softmax), sample weights and the epoch's row order;
    - ``state = (table, bias, stamp, mark, clock, scratch)``: ``scratch`` a NaN-filled
      float64 array of ``table``'s rows (the sparse accumulator of a minibatch; NaN again on
      return), empty for single rows; ``stamp``, ``mark`` empty unless ``lazy``;
    - ``config = (batch_size, delta, fit_intercept)``, ``delta`` Huber's threshold.

    Each batch is one step of ``clock``, which ticks ``pace`` times between steps (1 serially;
    :mod:`._hogwild` says why threads pass their number) and is left at the last step.
    """
    RULE, LOSS, LAZY = rule, loss, lazy

    @numba.njit(**JIT)
    def train(start, stop, pace, rows, state, hp_array, spec, config):
        indptr, indices, data, y, weights, order = rows
        table, bias, stamp, mark, clock_array, scratch = state
        batch_size, delta, fit_intercept = config
        K = bias.shape[0]
        n_rows = order.size
        hp = R.unpack(hp_array)
        margins = np.empty(batch_size * K)
        dloss = np.empty(batch_size * K)
        bias_grad = np.zeros(K)
        touched = np.empty(0 if batch_size == 1 else indices.size, np.int64)
        loss_sum = 0.0
        clock = R.unpack(clock_array)
        # catch_up_row's arrays; (weights, factors): a linear row has no factors
        schedule, tables = borrowed(spec), (borrowed(table), borrowed(table))
        step, upto = 0, -pace  # ticks made, and the index of the last tick of the batch's step
        for lo in range(start, stop, batch_size):
            upto += pace  # the batch's step: pace ticks after the previous batch's
            step, clock = R.tick_through(hp, spec, clock, step, upto)
            if step < 0:
                return BAD_STEP, loss_sum
            t = clock[R.CLOCK_T]
            hi = min(lo + batch_size, stop)
            # forward: margins and loss derivatives with the weights of step t - 1
            for i in range(lo, hi):
                prefetch_ahead(i, order, indptr, indices, data, y, weights, table, K)
                if LAZY and i + 2 < n_rows:  # and their steps (two more cache misses)
                    soon = order[i + 2]
                    for k in range(indptr[soon], indptr[soon + 1]):
                        prefetch(stamp, indices[k])
                        prefetch(mark, indices[k])
                row = order[i]
                if LAZY:  # bring the row's coordinates to step t - 1: margins see dense weights
                    for k in range(indptr[row], indptr[row + 1]):
                        j = indices[k]
                        if stamp[j] < t - 1.0:
                            log_decay_prev = clock[R.CLOCK_LOG_DECAY_PREV]
                            R.catch_up_row(RULE, hp, schedule, tables, (j * K, j * K + K, 0, 0, 0),
                                           (stamp[j], t - 1.0, log_decay_prev, mark[j]))
                            stamp[j] = t - 1.0
                            mark[j] = log_decay_prev
                m = margins[(i - lo) * K : (i - lo + 1) * K]
                if K == 1:  # one output: the sum stays in a register
                    s = np.float64(bias[0, 0])
                    for k in range(indptr[row], indptr[row + 1]):
                        s += data[k] * table[indices[k], 0]
                    m[0] = s
                else:
                    for c in range(K):
                        m[c] = bias[c, 0]
                    for k in range(indptr[row], indptr[row + 1]):
                        base = indices[k] * K
                        for c in range(K):
                            m[c] += data[k] * table[base + c, 0]
                d = dloss[(i - lo) * K : (i - lo + 1) * K]
                row_loss = loss_derivative(LOSS, m, y[row], delta, d)
                if not math.isfinite(row_loss):
                    return NON_FINITE, loss_sum
                loss_sum += weights[row] * row_loss
                for c in range(K):
                    d[c] *= weights[row]
                    bias_grad[c] += d[c]
            # backward: one update per touched coordinate, its gradient summed over the batch;
            # the forward pass caught every one up to step t - 1 (a catch-up left in the
            # update would cost reference counts on every coordinate, 100 ns)
            log_decay_prev = clock[R.CLOCK_LOG_DECAY_PREV]
            if batch_size == 1:  # rows are canonical (no repeated column): update in place
                row = order[lo]
                for k in range(indptr[row], indptr[row + 1]):
                    j = indices[k]
                    for c in range(K):
                        r = j * K + c
                        table[r, 0] = R.update_coordinate(RULE, hp, spec, clock, table[r, 0],
                                                          data[k] * dloss[c], table, r, 1,
                                                          (t - 1.0, log_decay_prev))  # fmt: skip
                    if LAZY:
                        stamp[j] = t
                        mark[j] = clock[R.CLOCK_LOG_DECAY]
            else:
                n_touched = 0
                for i in range(lo, hi):
                    row = order[i]
                    for k in range(indptr[row], indptr[row + 1]):
                        j = indices[k]
                        if math.isnan(scratch[j * K]):
                            touched[n_touched] = j
                            n_touched += 1
                            for c in range(K):
                                scratch[j * K + c] = 0.0
                        for c in range(K):
                            scratch[j * K + c] += data[k] * dloss[(i - lo) * K + c]
                for u in range(n_touched):
                    j = touched[u]
                    for c in range(K):
                        r = j * K + c
                        table[r, 0] = R.update_coordinate(RULE, hp, spec, clock, table[r, 0],
                                                          scratch[r], table, r, 1,
                                                          (t - 1.0, log_decay_prev))  # fmt: skip
                        scratch[r] = np.nan
                    if LAZY:
                        stamp[j] = t
                        mark[j] = clock[R.CLOCK_LOG_DECAY]
            if fit_intercept:
                for c in range(K):
                    bias[c, 0] = R.update_coordinate(RULE, hp, spec, clock, bias[c, 0],
                                                     bias_grad[c], bias, c, 1,
                                                     (t - 1.0, log_decay_prev))  # fmt: skip
            bias_grad[:] = 0.0
        R.store_clock(clock, clock_array)
        return OK, loss_sum

    return train


@functools.cache
def linear_catch_up(rule):
    """The kernel ``catch_up(hp, spec, clock, table, stamp, mark)`` that applies every pending
    zero-gradient step of ``rule`` to the weights (before they are read)."""
    RULE = rule

    @numba.njit(**JIT)
    def catch_up(hp, spec, clock, table, stamp, mark):
        hp = R.unpack(hp)
        clock = R.unpack(clock)
        t = clock[R.CLOCK_T]
        K = table.shape[0] // max(stamp.size, 1)
        log_decay = clock[R.CLOCK_LOG_DECAY]
        schedule, tables = borrowed(spec), (borrowed(table), borrowed(table))
        for j in range(stamp.size):
            # a row all zeros (most of a hashed table: never touched) stays so under every
            # rule's zero-gradient steps: left alone, it costs a read instead of two writes
            if stamp[j] < t and not R.rows_zero(tables[0], j * K, j * K + K):
                R.catch_up_row(RULE, hp, schedule, tables, (j * K, j * K + K, 0, 0, 0),
                               (stamp[j], t, log_decay, mark[j]))
                stamp[j] = t
                mark[j] = log_decay

    return catch_up


@numba.njit(**PARALLEL_JIT)
def linear_decision(indptr, indices, data, table, bias):
    """Margins ``X @ W + b`` for CSR rows, shape (n_rows, K), summed in float64."""
    K = bias.shape[0]
    n_rows = indptr.size - 1
    out = np.empty((n_rows, K))
    for i in numba.prange(n_rows):
        for c in range(K):
            out[i, c] = bias[c, 0]
        for k in range(indptr[i], indptr[i + 1]):
            base = indices[k] * K
            for c in range(K):
                out[i, c] += data[k] * table[base + c, 0]
    return out
