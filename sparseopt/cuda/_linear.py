"""Linear model training on the GPU: deterministic minibatch steps with numba-cuda.

One batch is one optimizer step, as on the CPU (:mod:`sparseopt.models._linear`), in three
kernels:

1. catch-up (lazy optimizers only): one thread per column the batch touches brings its
   weights to step ``t - 1``;
2. forward: a group of ``GROUP`` lanes per row computes its margins ``x_i^T W + b``
   (float64) and ``s_i \\, \\partial \\ell / \\partial m_i``;
3. backward: a group of lanes per touched column sums its gradient
   :math:`g_{jc} = \\sum_i s_i x_{ij} \\partial \\ell / \\partial m_{ic}` over the batch's
   rows through a column-sorted (CSC) copy of the batch, and one lane applies the rule; one
   more group does the intercepts.

No atomics: every weight is written by one thread, with its gradient summed in a fixed order
(a tree over the lanes), so the result is deterministic and equal to the CPU's up to
rounding. The per-coordinate math is :func:`sparseopt.optim._rules.update_coordinate`
itself, compiled for the device by numba-cuda from the same Python source.

The training data, targets and weights stay on the GPU across epochs (cached for the ``X``
object being fitted); the batches' CSC copies are built on the host (all CPU threads) once
per epoch and uploaded, or reused while the row order does not change (``shuffle=False``).
"""

from __future__ import annotations

import functools
import math
import weakref

import numba
import numpy as np
from numba import cuda

from .._jit import JIT, PARALLEL_JIT
from ..models import _losses as L
from ..optim import _rules as R

# threads per block; the simulator runs each as a Python thread, so it gets small blocks
THREADS = 64 if numba.config.ENABLE_CUDASIM else 128
GROUP = 8  # lanes that share one row (forward) or one column segment (backward)


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


@numba.njit(inline="always", **JIT)
def _group_batch(indptr, indices, order, rows, slot, plan, start):
    """Group the entries of rows ``order[lo:hi]`` (``rows = (lo, hi)``) by column into
    ``plan = (seg_ptr, seg_col, ent_k, ent_i)`` from segment ``s`` and entry ``e`` on
    (``start = (s, e)``); returns the next free segment. ``slot`` is -1 everywhere, on entry
    and return."""
    lo, hi = rows
    seg_ptr, seg_col, ent_k, ent_i = plan
    s, e = start
    first = s
    for i in range(lo, hi):  # count each column's entries; segments in first-seen order
        row = order[i]
        for k in range(indptr[row], indptr[row + 1]):
            j = indices[k]
            if slot[j] < 0:
                slot[j] = s
                seg_col[s] = j
                seg_ptr[s] = 0
                s += 1
            seg_ptr[slot[j]] += 1
    for u in range(first, s):  # counts to start offsets; slot = the column's next entry
        count = seg_ptr[u]
        seg_ptr[u] = e
        slot[seg_col[u]] = e
        e += count
    for i in range(lo, hi):  # place the entries, rows in order within each column
        row = order[i]
        for k in range(indptr[row], indptr[row + 1]):
            p = slot[indices[k]]
            ent_k[p] = k
            ent_i[p] = i - lo
            slot[indices[k]] = p + 1
    for u in range(first, s):
        slot[seg_col[u]] = -1
    return s


@numba.njit(**PARALLEL_JIT)
def batch_columns(indptr, indices, order, batch_size, n_columns, n_chunks):
    """Column-grouped copy of each batch of rows ``order[lo:hi]``, by counting sort: O(nnz).

    Returns ``(batch_seg, seg_ptr, seg_col, ent_k, ent_i)``: batch ``b`` touches the columns
    ``seg_col[batch_seg[b]:batch_seg[b + 1]]`` (in order of first appearance); column segment
    ``u`` has the entries ``seg_ptr[u]:seg_ptr[u + 1]``, each with its position ``ent_k`` in
    ``indices``/``data`` and its row's position ``ent_i`` in the batch, in row order.
    Threads take ``n_chunks`` runs of batches: a first pass counts each batch's entries and
    columns, a second fills them in at their offsets.
    """
    n_rows = order.size
    n_batches = (n_rows + batch_size - 1) // batch_size
    per_chunk = (n_batches + n_chunks - 1) // n_chunks
    n_ent = np.zeros(n_batches + 1, np.int64)
    n_seg = np.zeros(n_batches + 1, np.int64)
    for c in numba.prange(n_chunks):
        slot = np.full(n_columns, -1, np.int64)
        for b in range(c * per_chunk, min((c + 1) * per_chunk, n_batches)):
            lo = b * batch_size
            hi = min(lo + batch_size, n_rows)
            count = 0
            for i in range(lo, hi):
                row = order[i]
                for k in range(indptr[row], indptr[row + 1]):
                    if slot[indices[k]] < 0:
                        slot[indices[k]] = 0
                        count += 1
                    n_ent[b + 1] += 1
            n_seg[b + 1] = count
            for i in range(lo, hi):
                row = order[i]
                for k in range(indptr[row], indptr[row + 1]):
                    slot[indices[k]] = -1
    ent_base = np.cumsum(n_ent)
    batch_seg = np.cumsum(n_seg)
    nnz = ent_base[-1]
    seg_ptr = np.empty(batch_seg[-1] + 1, np.int64)
    seg_col = np.empty(batch_seg[-1], np.int64)
    ent_k = np.empty(nnz, np.int64)
    ent_i = np.empty(nnz, np.int32)
    plan = (seg_ptr, seg_col, ent_k, ent_i)
    for c in numba.prange(n_chunks):
        slot = np.full(n_columns, -1, np.int64)
        for b in range(c * per_chunk, min((c + 1) * per_chunk, n_batches)):
            lo = b * batch_size
            hi = min(lo + batch_size, n_rows)
            _group_batch(indptr, indices, order, (lo, hi), slot, plan,
                         (batch_seg[b], ent_base[b]))  # fmt: skip
    seg_ptr[-1] = nnz
    return batch_seg, seg_ptr, seg_col, ent_k, ent_i


@functools.cache
def catch_up_kernel(rule):
    """The kernel ``catch_up(optimizer, batch, seg_col, table, stamp, mark, K)`` for one rule
    (a compile-time constant, as in the CPU kernels): one thread per column of segments
    ``s0 .. s1 - 1`` brings its K weights to the step before batch ``b``, where
    ``optimizer = (hp, spec, clocks)`` and ``batch = (b, s0, s1)``."""
    RULE = rule

    @cuda.jit
    def catch_up(optimizer, batch, seg_col, table, stamp, mark, K):
        hp_array, spec, clocks = optimizer
        b, s0, s1 = batch
        u = s0 + cuda.grid(1)
        if u >= s1:
            return
        hp = R.unpack(hp_array)
        clock_row = clocks[b]
        t_prev = clock_row[R.CLOCK_T] - 1.0
        j = seg_col[u]
        if stamp[j] < t_prev:
            for c in range(K):
                r = j * K + c
                table[r, 0] = R.catch_up(RULE, hp, spec, table[r, 0], table, r, 1,
                                         (stamp[j], t_prev, clock_row[R.CLOCK_LOG_DECAY_PREV],
                                          mark[j]))  # fmt: skip
            stamp[j] = t_prev
            mark[j] = clock_row[R.CLOCK_LOG_DECAY_PREV]

    return catch_up


@cuda.jit(device=True)
def _group_sum(value, buf):
    """Sum of ``value`` over the ``GROUP`` lanes of this thread's group, in a fixed order.

    A tree in shared memory (``buf``, one slot per thread): deterministic, and it runs on the
    simulator, which has no warp shuffles. Every thread of the block must call it.
    """
    tid = cuda.threadIdx.x
    lane = tid % GROUP
    cuda.syncthreads()  # the previous call's result has been read
    buf[tid] = value
    cuda.syncthreads()
    half = GROUP // 2
    while half > 0:
        if lane < half:
            buf[tid] += buf[tid + half]
        cuda.syncthreads()
        half //= 2
    return buf[tid - lane]


@functools.cache
def forward_kernel(loss):
    """The kernel ``forward(rows, batch, model, delta, out)`` for one loss (a compile-time
    constant): a group of lanes per row of ``order[lo:hi]`` computes its margins and weighted
    loss derivatives, where ``rows = (order, indptr, indices, data, y, weights)``,
    ``batch = (lo, hi)``, ``model = (table, bias)`` and ``out = (margins, dloss, row_loss)``;
    ``delta`` is Huber's threshold."""
    LOSS = loss

    @cuda.jit
    def forward(rows, batch, model, delta, out):
        order, indptr, indices, data, y, weights = rows
        lo, hi = batch
        table, bias = model
        margins, dloss, row_loss = out
        buf = cuda.shared.array(THREADS, numba.float64)
        i = lo + cuda.grid(1) // GROUP
        lane = cuda.threadIdx.x % GROUP
        active = i < hi
        row = order[i] if active else 0
        start = indptr[row] if active else 0
        stop = indptr[row + 1] if active else 0
        K = bias.shape[0]
        p = (i - lo) * K
        for c in range(K):
            partial = 0.0
            for k in range(start + lane, stop, GROUP):
                partial += data[k] * table[indices[k] * K + c, 0]
            total = _group_sum(partial, buf)
            if active and lane == 0:
                margins[p + c] = bias[c, 0] + total
        if active and lane == 0:
            d = dloss[p : p + K]
            row_loss[i] = weights[row] * L.loss_derivative(LOSS, margins[p : p + K], y[row],
                                                           delta, d)  # fmt: skip
            for c in range(K):
                d[c] *= weights[row]

    return forward


@functools.cache
def backward_kernel(rule):
    """The kernel ``backward(optimizer, batch, plan, data, dloss, model, lazy, fit_intercept)``
    for one rule (a compile-time constant): a group of lanes per column segment ``s0 .. s1 -
    1`` sums the column's gradient and one lane applies the rule; group ``s1`` does the
    intercepts. ``optimizer = (hp, spec, clocks)``, ``batch = (b, s0, s1, n_batch_rows)``,
    ``plan = (seg_ptr, seg_col, ent_k, ent_i)`` (:func:`batch_columns`) and ``model =
    (table, bias, stamp, mark)``."""
    RULE = rule

    @cuda.jit
    def backward(optimizer, batch, plan, data, dloss, model, lazy, fit_intercept):
        hp_array, spec, clocks = optimizer
        b, s0, s1, n_batch_rows = batch
        seg_ptr, seg_col, ent_k, ent_i = plan
        table, bias, stamp, mark = model
        buf = cuda.shared.array(THREADS, numba.float64)
        u = s0 + cuda.grid(1) // GROUP
        lane = cuda.threadIdx.x % GROUP
        active = u < s1  # a column segment; group s1 does the intercepts
        intercept = u == s1 and fit_intercept
        e0 = seg_ptr[u] if active else 0
        e1 = seg_ptr[u + 1] if active else (n_batch_rows if intercept else 0)
        j = seg_col[u] if active else 0
        hp = R.unpack(hp_array)
        clock = R.unpack(clocks[b])
        t = clock[R.CLOCK_T]
        last = stamp[j] if active and lazy else t - 1.0
        marked = mark[j] if active and lazy else clock[R.CLOCK_LOG_DECAY_PREV]
        K = bias.shape[0]
        for c in range(K):
            partial = 0.0
            for e in range(e0 + lane, e1, GROUP):
                if active:
                    partial += data[ent_k[e]] * dloss[ent_i[e] * K + c]
                else:
                    partial += dloss[e * K + c]
            g = _group_sum(partial, buf)
            if lane == 0 and active:
                r = j * K + c
                table[r, 0] = R.update_coordinate(RULE, hp, spec, clock, table[r, 0], g, table,
                                                  r, 1, (last, marked))  # fmt: skip
            elif lane == 0 and intercept:
                bias[c, 0] = R.update_coordinate(RULE, hp, spec, clock, bias[c, 0], g, bias, c,
                                                 1, (last, marked))  # fmt: skip
        if lane == 0 and active and lazy:
            stamp[j] = t
            mark[j] = clock[R.CLOCK_LOG_DECAY]

    return backward


def _blocks(n_items, lanes=GROUP):
    """Blocks for ``n_items`` rows or columns of ``lanes`` threads each."""
    return max((n_items * lanes + THREADS - 1) // THREADS, 1)


class _Resident:
    """Device copies of the data being fitted: reused while the same X, targets and weights
    come back (the epochs of one fit), freed when that X is garbage-collected."""

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
            weakref.finalize(X, self._release)
        return self.arrays

    def _release(self):
        """Free the device copies once the X they copy is gone."""
        if self.refs and self.refs[0]() is None:
            self.refs, self.arrays, self.order, self.plan = (), None, None, None

    def batches(self, X, order, batch_size):
        """Device copies of ``order`` and of its batches' CSC plan, rebuilt when it changes."""
        same = (
            self.plan is not None
            and self.order[0] == batch_size
            and np.array_equal(self.order[1], order)
        )
        if not same:
            n_chunks = min(numba.config.NUMBA_NUM_THREADS, -(-order.size // batch_size))
            host = batch_columns(X.indptr, X.indices, order, batch_size, X.shape[1], n_chunks)
            self.plan = (host[0],) + tuple(cuda.to_device(a) for a in (order, *host[1:]))
            self.order = (batch_size, order.copy())
        return self.plan


_resident = _Resident()


def train_epoch(rule, X, targets, weights, order, batch_size, loss, delta, hp, spec, state,
                fit_intercept):  # fmt: skip
    """One epoch on the GPU, updating ``state`` (a LinearState on the host) in place.

    Returns ``(status, loss sum)`` as the CPU kernels of
    :func:`sparseopt.models._linear.linear_train_pass`.
    """
    n_rows = order.size
    n_batches = -(-n_rows // batch_size)
    clocks, ok = epoch_clocks(hp, spec, state.clock, n_batches)
    if not ok:
        return L.BAD_STEP, 0.0
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
    catch_up, forward, backward = catch_up_kernel(rule), forward_kernel(loss), backward_kernel(rule)
    optimizer = (d_hp, d_spec, d_clocks)
    rows = (d_order, indptr, indices, data, y, w)
    plan = (seg_ptr, seg_col, ent_k, ent_i)
    out = (margins, dloss, row_loss)
    for b in range(n_batches):
        lo, hi = b * batch_size, min((b + 1) * batch_size, n_rows)
        s0, s1 = int(batch_seg[b]), int(batch_seg[b + 1])
        if lazy and s1 > s0:
            catch_up[_blocks(s1 - s0, 1), THREADS](optimizer, (b, s0, s1), seg_col, table, stamp,
                                                   mark, K)  # fmt: skip
        forward[_blocks(hi - lo), THREADS](rows, (lo, hi), (table, bias), delta, out)
        backward[_blocks(s1 - s0 + 1), THREADS](optimizer, (b, s0, s1, hi - lo), plan, data,
                                                dloss, (table, bias, stamp, mark), lazy,
                                                fit_intercept)  # fmt: skip
    table.copy_to_host(state.table)
    bias.copy_to_host(state.bias)
    if lazy:
        stamp.copy_to_host(state.stamp)
        mark.copy_to_host(state.mark)
    state.clock[:] = clocks[-1]
    losses = row_loss.copy_to_host()
    total = float(np.sum(losses))
    return (L.OK if math.isfinite(total) else L.NON_FINITE), total
