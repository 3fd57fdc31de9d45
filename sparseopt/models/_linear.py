"""Linear model kernels over CSR minibatches: logistic, softmax, squared and Huber losses.

The model has ``K`` outputs (1 for binary and regression, one per class for softmax). Its
weights live in one table with a row per (feature, output), ``r = j * K + c``: column 0 holds
the weight and the columns after it the optimizer's slots, so that a coordinate's weight and
state share a cache line. The intercepts have a table of their own with one row per output.

One batch is one optimizer step: margins are computed with the weights at the start of the
step (summed in float64), then each touched coordinate gets the gradient summed over the
batch's rows, :math:`g_{jc} = \\sum_i s_i x_{ij} \\, \\partial \\ell / \\partial m_{ic}`,
through :func:`sparseopt.optim._rules.update_coordinate`.
"""

import math

import numba
import numpy as np

from .._jit import JIT, PARALLEL_JIT, prefetch
from ..optim import _rules as R

LOGISTIC, SOFTMAX, SQUARED, HUBER = range(4)
DIVERGED = -1  # status: a margin or loss was not finite


@numba.njit(inline="always", **JIT)
def _loss_derivative(loss, margins, target, delta, dloss):
    """Fill ``dloss`` with d loss / d margin for one row; returns the row's loss."""
    if loss == LOGISTIC:
        m = margins[0]
        # log(1 + exp(-y m)) written to stay finite for large |m|
        p = 1.0 / (1.0 + math.exp(-m)) if m >= 0 else math.exp(m) / (1.0 + math.exp(m))
        dloss[0] = p - target
        z = m if target > 0.5 else -m
        return math.log1p(math.exp(-z)) if z > 0 else -z + math.log1p(math.exp(z))
    if loss == SOFTMAX:
        top = margins[0]
        for c in range(1, margins.size):
            top = max(top, margins[c])
        total = 0.0
        for c in range(margins.size):
            dloss[c] = math.exp(margins[c] - top)
            total += dloss[c]
        label = int(target)
        for c in range(margins.size):
            dloss[c] = dloss[c] / total - (1.0 if c == label else 0.0)
        return math.log(total) + top - margins[label]
    r = margins[0] - target
    if loss == HUBER and abs(r) > delta:
        dloss[0] = math.copysign(delta, r)
        return delta * (abs(r) - 0.5 * delta)
    dloss[0] = r
    return 0.5 * r * r


@numba.njit(inline="always", **JIT)
def _catch_up_feature(rule, hp, spec, table, stamp, mark, j, K, t, log_decay):
    """Apply feature j's pending zero-gradient steps (its K weights) up to step ``t``."""
    if stamp[j] < t:
        for c in range(K):
            r = j * K + c
            table[r, 0] = R.catch_up(rule,
                hp, spec, table[r, 0], table, r, 1, stamp[j], t, log_decay, mark[j],
            )  # fmt: skip
        stamp[j] = t
        mark[j] = log_decay


@numba.njit(inline="always", **JIT)
def _catch_up_row(rule, hp, spec, clock, table, stamp, mark, indices, lo, hi, K):
    """Bring the coordinates of rows ``lo:hi`` up to step t - 1 so margins see dense weights."""
    for k in range(lo, hi):
        _catch_up_feature(rule, hp, spec, table, stamp, mark, indices[k], K,
                          clock[R.CLOCK_T] - 1.0, clock[R.CLOCK_LOG_DECAY_PREV])  # fmt: skip


@numba.njit(inline="always", **JIT)
def _prefetch_ahead(i, ahead, order, indptr, indices, data, y, weights, table, K):
    """Prefetch, for the rows this thread visits next: row 16's extent, row 8's nonzeros,
    label and weight, row 2's weights (each step needs the one before in cache)."""
    n = order.size
    if i + 16 * ahead < n:
        prefetch(indptr, order[i + 16 * ahead])
    if i + 8 * ahead < n:
        row = order[i + 8 * ahead]
        lo, hi = indptr[row], indptr[row + 1]
        for k in range(lo, hi, 16):  # one cache line holds 16 four-byte values
            prefetch(indices, k)
            prefetch(data, k)
        prefetch(y, row)
        prefetch(weights, row)
    if i + 2 * ahead < n:
        row = order[i + 2 * ahead]
        for k in range(indptr[row], indptr[row + 1]):
            prefetch(table, indices[k] * K)


@numba.njit(inline="always", **JIT)
def _train_batches(
    rule, first, stride, indptr, indices, data, y, weights, order, batch_size, loss, delta,
    hp_array, spec, clock_array, table, stamp, mark, scratch, bias, fit_intercept,
):  # fmt: skip
    """Train on batches ``first, first + stride, ...``; returns (status, loss sum)."""
    K = bias.shape[0]
    n_rows = order.size
    n_batches = (n_rows + batch_size - 1) // batch_size
    lazy = stamp.size > 0
    hp = R.unpack(hp_array)
    margins = np.empty(batch_size * K)
    dloss = np.empty(batch_size * K)
    bias_grad = np.zeros(K)
    touched = np.empty(0, np.int64) if batch_size == 1 else np.empty(indices.size, np.int64)
    loss_sum = 0.0
    clock = R.unpack(clock_array)
    step = 0
    ahead = stride if batch_size == 1 else 1  # positions in order between this thread's rows
    for b in range(first, n_batches, stride):
        step, clock = tick_through(hp, spec, clock, step, b)  # to the batch's global step
        if step < 0:
            return DIVERGED, loss_sum
        t = clock[R.CLOCK_T]
        lo = b * batch_size
        hi = min(lo + batch_size, n_rows)
        # forward: margins and loss derivatives with the weights of step t - 1
        for i in range(lo, hi):
            _prefetch_ahead(i, ahead, order, indptr, indices, data, y, weights, table, K)
            row = order[i]
            if lazy:
                _catch_up_row(rule, hp, spec, clock, table, stamp, mark, indices,
                              indptr[row], indptr[row + 1], K)  # fmt: skip
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
            row_loss = _loss_derivative(loss, m, y[row], delta, d)
            if not math.isfinite(row_loss):
                return DIVERGED, loss_sum
            loss_sum += weights[row] * row_loss
            for c in range(K):
                d[c] *= weights[row]
                bias_grad[c] += d[c]
        # backward: one update per touched coordinate with its gradient summed over the batch
        if batch_size == 1:  # rows are canonical (no repeated column): update in place
            row = order[lo]
            for k in range(indptr[row], indptr[row + 1]):
                j = indices[k]
                last = stamp[j] if lazy else t - 1.0
                marked = mark[j] if lazy else 0.0
                for c in range(K):
                    r = j * K + c
                    table[r, 0] = R.update_coordinate(
                        rule,
                        hp,
                        spec,
                        clock,
                        table[r, 0],
                        data[k] * dloss[c],
                        table,
                        r,
                        1,
                        last,
                        marked,
                    )
                if lazy:
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
                last = stamp[j] if lazy else t - 1.0
                marked = mark[j] if lazy else 0.0
                for c in range(K):
                    r = j * K + c
                    table[r, 0] = R.update_coordinate(
                        rule, hp, spec, clock, table[r, 0], scratch[r], table, r, 1, last, marked
                    )
                    scratch[r] = np.nan
                if lazy:
                    stamp[j] = t
                    mark[j] = clock[R.CLOCK_LOG_DECAY]
        if fit_intercept:
            for c in range(K):
                bias[c, 0] = R.update_coordinate(rule,
                    hp, spec, clock, bias[c, 0], bias_grad[c], bias, c, 1, t - 1.0,
                    clock[R.CLOCK_LOG_DECAY_PREV],
                )  # fmt: skip
        bias_grad[:] = 0.0
    if stride == 1:  # a serial pass leaves the clock at its last step (Hogwild callers tick it)
        R.store_clock(clock, clock_array)
    return 0, loss_sum


@numba.njit(**JIT)
def linear_train_epoch(
    rule, indptr, indices, data, y, weights, order, batch_size, loss, delta,
    hp, spec, clock, table, stamp, mark, scratch, bias, fit_intercept,
):  # fmt: skip
    """One serial, deterministic pass over ``order``; returns (status, summed loss).

    ``clock`` ends ticked once per batch, unless the pass diverged.
    """
    return _train_pass(
        rule, 0, 1, indptr, indices, data, y, weights, order, batch_size, loss, delta,
        hp, spec, clock, table, stamp, mark, scratch, bias, fit_intercept,
    )  # fmt: skip


@numba.njit(**JIT)
def _train_pass(
    rule, first, stride, indptr, indices, data, y, weights, order, batch_size, loss, delta,
    hp, spec, clock, table, stamp, mark, scratch, bias, fit_intercept,
):  # fmt: skip
    """:func:`_train_batches`, where the default rule gets a copy of the loop with the rule as
    a constant, so the compiler removes the dispatch from the inner loop (2.5x faster); the
    others share one copy. Compiled on its own, not inlined into the Hogwild kernel: Numba's
    parallel analysis fails on the loop's clock tuple.
    """
    if rule == R.ADAGRAD:
        return _train_batches(
            R.ADAGRAD, first, stride, indptr, indices, data, y, weights, order, batch_size,
            loss, delta, hp, spec, clock, table, stamp, mark, scratch, bias, fit_intercept,
        )  # fmt: skip
    return _train_batches(
        rule, first, stride, indptr, indices, data, y, weights, order, batch_size, loss,
        delta, hp, spec, clock, table, stamp, mark, scratch, bias, fit_intercept,
    )  # fmt: skip


@numba.njit(**PARALLEL_JIT)
def linear_train_epoch_hogwild(
    rule, n_threads, indptr, indices, data, y, weights, order, batch_size, loss, delta,
    hp, spec, clock, table, stamp, mark, scratch, bias, fit_intercept,
):  # fmt: skip
    """One pass with ``n_threads`` threads taking interleaved batches of ``order`` (laid out
    by :func:`hogwild_order`: a contiguous block each), without locks.

    Threads write shared weights unsynchronized (Hogwild, Recht et al. 2011): fast and
    nondeterministic. Each thread needs its own scratch, so batches are of one row. The
    intercepts, which every row updates, are the exception: each thread trains its own copy
    (on cache lines of its own) and the copies are averaged at the end of the epoch, since a
    row shared by all threads and written on every step would be moved between cores each
    time.
    """
    status = np.zeros(n_threads, np.int64)
    losses = np.zeros(n_threads)
    biases, padded = thread_copies(bias, n_threads)
    for p in numba.prange(n_threads):
        local = biases[p * padded : p * padded + bias.shape[0]]
        status[p], losses[p] = _train_pass(
            rule, p, n_threads, indptr, indices, data, y, weights, order, 1, loss, delta,
            hp, spec, clock, table, stamp, mark, scratch, local, fit_intercept,
        )  # fmt: skip
    average_copies(bias, biases, padded, n_threads)
    return status.min(), losses.sum()


def hogwild_order(order, n_threads):
    """``order`` laid out for the Hogwild kernels, whose thread ``p`` takes the positions
    ``p, p + n_threads, ...``: each thread gets one contiguous block of ``order``.

    A thread then streams its own stretch of the input instead of every ``n_threads``-th row
    (interleaved rows share cache lines of the CSR arrays, and each thread's hardware
    prefetcher sees a strided stream), and in a time-ordered log the rows trained at the same
    moment share fewer features. Position ``b`` still is the ``b``-th update overall, so the
    clock (a schedule's step ``t``) advances as in a serial pass.
    """
    out = np.empty_like(order)
    start = 0
    for p in range(n_threads):
        size = len(range(p, order.size, n_threads))
        out[p::n_threads] = order[start : start + size]
        start += size
    return out


@numba.njit(inline="always", **JIT)
def thread_copies(bias, n_threads):
    """One copy of ``bias`` per thread, each on cache lines of its own: (copies, stride)."""
    padded = bias.shape[0] + 64 // bias.itemsize
    copies = np.empty((n_threads * padded, bias.shape[1]), bias.dtype)
    for p in range(n_threads):
        copies[p * padded : p * padded + bias.shape[0]] = bias
    return copies, padded


@numba.njit(inline="always", **JIT)
def average_copies(bias, copies, padded, n_threads):
    """``bias`` = the mean of the threads' copies (weights and optimizer slots)."""
    for c in range(bias.shape[0]):
        for s in range(bias.shape[1]):
            total = 0.0
            for p in range(n_threads):
                total += copies[p * padded + c, s]
            bias[c, s] = total / n_threads


@numba.njit(**JIT)
def advance_clock(hp, spec, clock, n_steps):
    """Tick the global clock ``n_steps`` times (after a Hogwild epoch or a Dask round); False
    if unusable.

    Without weight decay a tick changes only ``t`` and the rates, so the clock jumps to two
    steps before the end and ticks those two: the same clock, in O(1) instead of 40 ns a
    step. Skipping the rate checks in between is safe: every schedule's rate is positive or
    monotone in ``t``, so it was usable all along if it is usable at the end.
    """
    if hp[R.HP_WEIGHT_DECAY] == 0.0 and n_steps > 2:
        clock[R.CLOCK_T] += n_steps - 2
        n_steps = 2
    step, ticked = tick_through(hp, spec, R.unpack(clock), 0, n_steps - 1)
    R.store_clock(ticked, clock)
    return step >= 0


@numba.njit(inline="always", **JIT)
def tick_through(hp, spec, clock, step, last):
    """Tick the clock tuple once for each global step from ``step`` to ``last``; returns the
    next step (-1 if the schedule became unusable) and the clock."""
    while step <= last:
        usable, clock = R.next_clock(hp, spec, clock)
        if not usable:
            return -1, clock
        step += 1
    return step, clock


@numba.njit(**JIT)
def linear_catch_up(rule, hp, spec, clock, table, stamp, mark):
    """Apply every pending zero-gradient step to the weights (before predicting)."""
    hp = R.unpack(hp)
    clock = R.unpack(clock)
    t = clock[R.CLOCK_T]
    K = table.shape[0] // max(stamp.size, 1)
    for j in range(stamp.size):
        _catch_up_feature(rule, hp, spec, table, stamp, mark, j, K, t, clock[R.CLOCK_LOG_DECAY])


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
