"""Linear model training on the GPU: deterministic minibatch steps with numba-cuda.

One batch is one optimizer step, as on the CPU (:mod:`sparseopt.models._linear`), in three
kernels:

1. catch-up (lazy optimizers only): one thread per column the batch touches brings its
   weights to step ``t - 1``;
2. forward: one thread per row computes its margins ``x_i^T W + b`` (float64) and
   ``s_i \\, \\partial \\ell / \\partial m_i``;
3. backward: one thread per touched column sums its gradient
   :math:`g_{jc} = \\sum_i s_i x_{ij} \\partial \\ell / \\partial m_{ic}` over the batch's rows
   in row order, through a column-sorted (CSC) copy of the batch, and applies the rule;
   the intercepts get one more thread.

No atomics: every weight is written by one thread with its gradient summed in the CPU
kernel's order, so the result is deterministic and equal to the CPU's up to rounding. The
per-coordinate math is :func:`sparseopt.optim._rules.update_coordinate` itself, compiled for
the device by numba-cuda from the same Python source.

The training data, targets and weights stay on the GPU across epochs (cached for the ``X``
object being fitted); the batches' CSC copies are built on the host once per epoch, and
reused while the row order does not change (``shuffle=False``).
"""

from __future__ import annotations

import math
import weakref

import numba
import numpy as np
from numba import cuda

from .._jit import JIT
from ..models import _linear as K_
from ..optim import _rules as R

THREADS = 128


@numba.njit(**JIT)
def epoch_clocks(hp, spec, clock, n_steps):
    """The clock after each of the next ``n_steps`` steps, (n_steps, CLOCK_SIZE); ok flag."""
    clocks = np.empty((n_steps, clock.size))
    current = clock.copy()
    for s in range(n_steps):
        if not R.tick(hp, spec, current):
            return clocks, False
        clocks[s] = current
    return clocks, True


@numba.njit(**JIT)
def batch_columns(indptr, indices, order, batch_size):
    """Column-sorted copy of each batch of rows ``order[lo:hi]``.

    Returns ``(batch_seg, seg_ptr, seg_col, ent_k, ent_i)``: batch ``b`` touches the columns
    ``seg_col[batch_seg[b]:batch_seg[b + 1]]``; column segment ``u`` has the entries
    ``seg_ptr[u]:seg_ptr[u + 1]``, each with its position ``ent_k`` in ``indices``/``data``
    and its row's position ``ent_i`` in the batch, in row order.
    """
    n_rows = order.size
    n_batches = (n_rows + batch_size - 1) // batch_size
    nnz = 0
    for i in range(n_rows):
        nnz += indptr[order[i] + 1] - indptr[order[i]]
    batch_seg = np.zeros(n_batches + 1, np.int64)
    seg_ptr = np.zeros(nnz + 1, np.int64)
    seg_col = np.empty(nnz, np.int64)
    ent_k = np.empty(nnz, np.int64)
    ent_i = np.empty(nnz, np.int32)
    e = 0
    n_seg = 0
    for b in range(n_batches):
        lo = b * batch_size
        hi = min(lo + batch_size, n_rows)
        start = e
        for i in range(lo, hi):
            row = order[i]
            for k in range(indptr[row], indptr[row + 1]):
                ent_k[e] = k
                ent_i[e] = i - lo
                e += 1
        cols = indices[ent_k[start:e]]
        perm = np.argsort(cols, kind="mergesort")  # stable: row order within a column
        ent_k[start:e] = ent_k[start:e][perm]
        ent_i[start:e] = ent_i[start:e][perm]
        for p in range(perm.size):
            j = cols[perm[p]]
            if p == 0 or j != seg_col[n_seg - 1]:
                seg_col[n_seg] = j
                seg_ptr[n_seg] = start + p
                n_seg += 1
        batch_seg[b + 1] = n_seg
    seg_ptr[n_seg] = e
    return batch_seg, seg_ptr[: n_seg + 1].copy(), seg_col[:n_seg].copy(), ent_k, ent_i


@cuda.jit
def _catch_up_kernel(rule, hp_array, spec, clock_row, s0, s1, seg_col, table, stamp, mark, K):
    u = s0 + cuda.grid(1)
    if u >= s1:
        return
    hp = R.unpack(hp_array)
    t_prev = clock_row[R.CLOCK_T] - 1.0
    j = seg_col[u]
    if stamp[j] < t_prev:
        for c in range(K):
            r = j * K + c
            table[r, 0] = R.catch_up(rule, hp, spec, table[r, 0], table, r, 1, stamp[j], t_prev,
                                     clock_row[R.CLOCK_LOG_DECAY_PREV], mark[j])  # fmt: skip
        stamp[j] = t_prev
        mark[j] = clock_row[R.CLOCK_LOG_DECAY_PREV]


@cuda.jit
def _forward_kernel(lo, hi, order, indptr, indices, data, y, weights, table, bias, loss, delta,
                    margins, dloss, row_loss):  # fmt: skip
    i = lo + cuda.grid(1)
    if i >= hi:
        return
    K = bias.shape[0]
    row = order[i]
    p = (i - lo) * K
    m = margins[p : p + K]
    for c in range(K):
        m[c] = bias[c, 0]
    for k in range(indptr[row], indptr[row + 1]):
        base = indices[k] * K
        for c in range(K):
            m[c] += data[k] * table[base + c, 0]
    d = dloss[p : p + K]
    row_loss[i] = weights[row] * K_._loss_derivative(loss, m, y[row], delta, d)
    for c in range(K):
        d[c] *= weights[row]


@cuda.jit
def _backward_kernel(rule, hp_array, spec, clock_row, s0, s1, seg_ptr, seg_col, ent_k, ent_i,
                     data, dloss, table, stamp, mark, lazy, bias, n_batch_rows,
                     fit_intercept):  # fmt: skip
    u = s0 + cuda.grid(1)
    if u > s1:
        return
    hp = R.unpack(hp_array)
    clock = R.unpack(clock_row)
    t = clock[R.CLOCK_T]
    K = bias.shape[0]
    if u == s1:  # the intercepts: one more thread
        if fit_intercept:
            for c in range(K):
                g = 0.0
                for i in range(n_batch_rows):
                    g += dloss[i * K + c]
                last = t - 1.0
                marked = clock[R.CLOCK_LOG_DECAY_PREV]
                bias[c, 0] = R.update_coordinate(
                    rule, hp, spec, clock, bias[c, 0], g, bias, c, 1, last, marked
                )
        return
    j = seg_col[u]
    last = stamp[j] if lazy else t - 1.0
    marked = mark[j] if lazy else 0.0
    for c in range(K):
        g = 0.0
        for e in range(seg_ptr[u], seg_ptr[u + 1]):
            g += data[ent_k[e]] * dloss[ent_i[e] * K + c]
        r = j * K + c
        table[r, 0] = R.update_coordinate(rule, hp, spec, clock, table[r, 0], g, table, r, 1,
                                          last, marked)  # fmt: skip
    if lazy:
        stamp[j] = t
        mark[j] = clock[R.CLOCK_LOG_DECAY]


def _blocks(n):
    return max((n + THREADS - 1) // THREADS, 1)


class _Resident:
    """Device copies of the data being fitted, kept while the same arrays are passed."""

    def __init__(self):
        self.refs = ()
        self.arrays = None
        self.order = None
        self.plan = None

    def data(self, X, targets, weights):
        objects = (X, targets, weights)
        same = self.arrays is not None and all(
            r() is o for r, o in zip(self.refs, objects, strict=True)
        )
        if not same:
            self.arrays = tuple(cuda.to_device(a) for a in
                                (X.indptr, X.indices, X.data, targets, weights))  # fmt: skip
            self.refs = tuple(weakref.ref(o) for o in objects)
            self.order = self.plan = None
        return self.arrays

    def batches(self, X, order, batch_size):
        key = (batch_size, order)
        if (
            self.plan is None
            or self.order[0] != batch_size
            or not np.array_equal(self.order[1], order)
        ):
            host = batch_columns(X.indptr, X.indices, order, batch_size)
            self.plan = (host[0],) + tuple(cuda.to_device(a) for a in (order, *host[1:]))
            self.order = (key[0], order.copy())
        return self.plan


_resident = _Resident()


def train_epoch(rule, X, targets, weights, order, batch_size, loss, delta, hp, spec, state,
                fit_intercept):  # fmt: skip
    """One epoch on the GPU, updating ``state`` (a LinearState on the host) in place.

    Returns ``(status, loss sum)`` as :func:`sparseopt.models._linear.linear_train_epoch`.
    """
    n_rows = order.size
    n_batches = -(-n_rows // batch_size)
    clocks, ok = epoch_clocks(hp, spec, state.clock, n_batches)
    if not ok:
        return K_.DIVERGED, 0.0
    indptr, indices, data, y, w = _resident.data(X, targets, weights)
    batch_seg, d_order, seg_ptr, seg_col, ent_k, ent_i = _resident.batches(X, order, batch_size)
    K = state.bias.shape[0]
    lazy = state.stamp.size > 0
    d_hp, d_spec, d_clocks = cuda.to_device(hp), cuda.to_device(spec), cuda.to_device(clocks)
    table, bias = cuda.to_device(state.table), cuda.to_device(state.bias)
    # kernels index stamp/mark only when lazy; an empty array would not reach the device
    stamp = cuda.to_device(state.stamp if lazy else np.zeros(1))
    mark = cuda.to_device(state.mark if lazy else np.zeros(1))
    margins = cuda.device_array(batch_size * K)
    dloss = cuda.device_array(batch_size * K)
    row_loss = cuda.device_array(n_rows)
    for b in range(n_batches):
        lo, hi = b * batch_size, min((b + 1) * batch_size, n_rows)
        s0, s1 = int(batch_seg[b]), int(batch_seg[b + 1])
        clock_row = d_clocks[b]
        if lazy and s1 > s0:
            _catch_up_kernel[_blocks(s1 - s0), THREADS](
                rule, d_hp, d_spec, clock_row, s0, s1, seg_col, table, stamp, mark, K
            )
        _forward_kernel[_blocks(hi - lo), THREADS](
            lo, hi, d_order, indptr, indices, data, y, w, table, bias, loss, delta,
            margins, dloss, row_loss,
        )  # fmt: skip
        _backward_kernel[_blocks(s1 - s0 + 1), THREADS](
            rule, d_hp, d_spec, clock_row, s0, s1, seg_ptr, seg_col, ent_k, ent_i, data, dloss,
            table, stamp, mark, lazy, bias, hi - lo, fit_intercept,
        )  # fmt: skip
    table.copy_to_host(state.table)
    bias.copy_to_host(state.bias)
    if lazy:
        stamp.copy_to_host(state.stamp)
        mark.copy_to_host(state.mark)
    state.clock[:] = clocks[-1]
    losses = row_loss.copy_to_host()
    total = float(np.sum(losses))
    return (0 if math.isfinite(total) else K_.DIVERGED), total
