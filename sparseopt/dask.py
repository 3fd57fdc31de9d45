"""Data-parallel training on a Dask cluster: :func:`fit` and :func:`predict`.

Training runs in rounds. In each round every worker trains ``merge_every`` minibatches on the
blocks it already holds (tasks are pinned to those workers, so blocks never move), starting
from the current model, and sends back only the table rows it touched; the driver merges them
into the next model. Workers keep their model between rounds: the driver broadcasts
(``Client.scatter(..., broadcast=True)``) only the rows the merge changed, and the whole
model only when a worker has none (first round, idle last round, after a lost worker).
Workers that run in the driver's process (``LocalCluster(processes=False)``) share its memory:
a linear model's workers send their whole tables by reference instead, and the merge finds
the rows each changed by comparing them with the round's start.

The merge, per coordinate ``j`` over the ``K`` workers of the round (Vowpal Wabbit's rule)::

    w_j = sum_k G_kj w_kj / sum_k G_kj        G_j = (1/K) sum_k G_kj

where ``G`` is the optimizer's accumulator of squared gradients (AdaGrad's ``G``, RMSProp's
``s``, Adam's ``v``): a worker that saw more gradient on a coordinate has more say in its
weight. A worker that did not touch a coordinate counts with the round's starting values.
Averaging the accumulators keeps the step sizes of the sequential learner; summing them (or
summing weight deltas) was measured to shrink later steps (or diverge). Optimizers without an
accumulator (SGD, Momentum) average every column. The other slots (Adam's ``m``) are averaged.
A factorization machine's factor vectors with per-row AdaGrad merge as one row ``[v, G]``: the
vector's accumulator weights all its elements. Factor vectors are drawn lazily (a function of
the seed and the feature): before merging, the driver draws those the workers drew, so that
a worker that never met a feature counts with the vector it would have drawn, not with zeros.
The global step count after a round is the start's plus the sum of the workers' steps, so
``t_`` and learning-rate schedules advance with the data seen, as in sequential training.

Dask is imported when these functions run, never by ``import sparseopt``.
"""

from __future__ import annotations

import copy
import functools
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import scipy.sparse as sp
from sklearn.base import is_classifier, is_regressor

from ._epochs import Stopper, run_epochs
from ._jit import JIT
from .optim import FTRL
from .optim import _rules as R

__all__ = ["StaleModelError", "WorkerLostError", "fit", "from_files", "merge_table", "predict"]


class WorkerLostError(RuntimeError):
    """A round could not complete because workers kept leaving the cluster."""


def merge_table(base, updates, accumulator=None, n_params=1):
    """Merge the workers' copies of a parameter table into one.

    Parameters
    ----------
    base : ndarray of shape (n_rows, n_params + n_slots)
        The table every worker started the round from: rows of ``[params..., slots...]``.
    updates : list of (rows, values)
        One pair per worker of the round: the indices of the rows it changed and their new
        values, shape ``(len(rows), n_params + n_slots)``. Unlisted rows count as ``base``.
        ``rows`` None: ``values`` is the worker's whole table (then for every worker), and the
        rows it changed are those that differ from ``base``.
    accumulator : int or None
        Slot index (0 = first slot) of the squared-gradient accumulator that weights the
        parameter columns, or None to average every column.
    n_params : int, default=1
        Parameter columns sharing the row's slots (a factor vector with one accumulator).

    Returns
    -------
    ndarray like ``base``
    """
    merged = base.copy()
    _merge_rows(merged, updates, accumulator, n_params)
    return merged


def _merge_rows(table, updates, accumulator, n_params=1):
    """Merge ``updates`` into ``table`` (the round's start) in place; returns the rows any
    worker changed with their merged values, as a list of ``(rows, values)`` pieces (see
    :func:`merge_table`)."""
    # the merge kernels index columns n_params + accumulator (the slot) and 0 .. n_params - 1
    used = n_params + (0 if accumulator is None else accumulator + 1)
    if n_params < 1 or (accumulator is not None and accumulator < 0) or used > table.shape[1]:
        raise ValueError(f"n_params={n_params} and accumulator={accumulator} do not fit a "
                         f"table of {table.shape[1]} columns")  # fmt: skip
    whole = [rows is None for rows, _ in updates]
    if any(whole):
        if not all(whole):
            raise ValueError("updates mix whole tables and rows")
        return _merge_tables(table, [values for _, values in updates], accumulator, n_params)
    if len(updates) == 1:  # one worker: its values, bit for bit
        table[updates[0][0]] = updates[0][1]
        return [updates[0]]
    updates = [_increasing(rows, values, table) for rows, values in updates]
    rows = tuple(r for r, _ in updates)
    values = tuple(np.ascontiguousarray(v, table.dtype) for _, v in updates)
    slot = -1 if accumulator is None else n_params + accumulator
    size = sum(r.size for r in rows)
    parts = _row_ranges(rows, numba.get_num_threads() if size >= _SPLIT_MERGE else 1)
    if len(parts) == 1:
        return [_merge_walk(table, rows, values, *parts[0], slot, n_params)]
    with ThreadPoolExecutor(len(parts)) as pool:  # the kernel releases the GIL
        return list(pool.map(lambda p: _merge_walk(table, rows, values, *p, slot, n_params), parts))


def _merge_tables(table, tables, accumulator, n_params):
    """:func:`_merge_rows` of the workers' whole ``tables`` (workers in this process share
    its memory: their tables come by reference, issue 32); returns ``[(None, table)]``."""
    for t in tables:
        if t.shape != table.shape or t.dtype != table.dtype:
            raise ValueError(f"a whole table of shape {t.shape} and dtype {t.dtype}, not "
                             f"{table.shape} and {table.dtype}")  # fmt: skip
    if len(tables) == 1:  # one worker: its values, bit for bit
        np.copyto(table, tables[0])
        return [(None, table)]
    if len(tables) > _MAX_WHOLE:
        raise ValueError(f"whole tables of more than {_MAX_WHOLE} workers")
    slot = -1 if accumulator is None else n_params + accumulator
    words = np.uint64 if table.strides[0] % 8 == 0 else np.uint32  # a row's bits, as words
    bits = tuple(t.reshape(t.shape[0], -1).view(words) for t in tables)
    base_bits = table.reshape(table.shape[0], -1).view(words)
    # bit w of changed[r]: worker w changed row r
    changed = np.zeros(table.shape[0], np.uint8 if len(tables) <= 8 else np.uint64)
    tables = tuple(tables)

    def merge(lo, hi):
        _mark_changed(base_bits, bits, changed, lo, hi)
        _merge_changed(table, tables, changed, lo, hi, slot, n_params)

    n_threads = numba.get_num_threads() if table.shape[0] * len(tables) >= _SPLIT_MERGE else 1
    cuts = np.linspace(0, table.shape[0], n_threads + 1).astype(np.int64)
    with ThreadPoolExecutor(n_threads) as pool:  # the kernels release the GIL
        list(pool.map(merge, cuts[:-1], cuts[1:]))
    return [(None, table)]


_MAX_WHOLE = 64  # workers whose whole tables one merge takes (a bit each)


# Rows (of all updates together) from which the merge runs in threads, each over its range of
# table rows: 700,000 rows of two workers took 15-27 ms in one thread. Below, a thread's
# start can cost more than it saves on a busy machine (a thread waits for a time slice: 20-60
# ms per merge of MF's 10,000 item rows at load 3, with Numba's parallel loops).
_SPLIT_MERGE = 1 << 18


def _row_ranges(rows, n_ranges):
    """``n_ranges`` pairs ``(starts, stops)``: where each worker's rows (``rows[w]``,
    increasing) fall in consecutive ranges of table rows, cut at quantiles of the largest
    worker's rows (hashed features spread evenly over the table)."""
    mine = max(rows, key=len)
    cuts = mine[(np.arange(1, n_ranges) * mine.size) // n_ranges]
    at = [np.zeros(len(rows), np.int64)]
    at += [np.array([np.searchsorted(r, c) for r in rows], np.int64) for c in cuts]
    at.append(np.array([r.size for r in rows], np.int64))
    return [(a, b) for a, b in zip(at[:-1], at[1:], strict=True)]


# The merges' arithmetic is IEEE's, without fast-math: reassociated sums and reciprocals made
# the walk and the whole-table merge differ by an ulp on the same rows (the code around the
# same sums decides what LLVM rewrites).
_MERGE_JIT = dict(JIT, fastmath=False)


def _increasing(rows, values, base):
    """One worker's update ``(rows, values)`` checked, its rows in increasing order (a
    worker's touched rows come sorted: then nothing is copied)."""
    rows = np.ascontiguousarray(np.asarray(rows, np.int64).reshape(-1))
    values = np.asarray(values)
    if values.shape != (rows.size, base.shape[1]):
        raise ValueError(f"an update of {rows.size} rows has values of shape {values.shape}, "
                         f"not ({rows.size}, {base.shape[1]})")  # fmt: skip
    if not _strictly_increasing(rows):
        order = np.argsort(rows, kind="stable")
        rows, values = rows[order], values[order]
        if not _strictly_increasing(rows):
            raise ValueError("an update lists a row twice")
    if rows.size and (rows[0] < 0 or rows[-1] >= base.shape[0]):
        raise ValueError(f"an update lists a row outside 0 .. {base.shape[0] - 1}")
    return rows, values


@numba.njit(**JIT)
def _strictly_increasing(a):
    for i in range(1, a.size):
        if a[i] <= a[i - 1]:
            return False
    return True


@numba.njit(**_MERGE_JIT)
def _merge_walk(base, rows, values, starts, stops, slot, n_params):
    """:func:`merge_table` of worker ``w``'s rows ``rows[w][starts[w]:stops[w]]`` (strictly
    increasing) and their ``values[w]``, sums in float64. Each merged row is written into
    ``base`` (in place: the walk reads a row only before writing it, and threads walk
    disjoint ranges of rows) and returned with its values, for the workers.

    One walk over the touched rows in increasing order, a cursor in each worker's rows: every
    read of ``base``, ``rows`` and ``values`` moves forward (a table-sized index of positions,
    read and written at random, made the merge of two workers' 700,000 rows cost 40 ms).
    """
    n_workers, n_cols, size = starts.size, base.shape[1], (stops - starts).sum()
    n = float(n_workers)
    cursor = starts.copy()
    touched = np.empty(size, np.int64)
    merged = np.empty((size, n_cols), base.dtype)
    total, num = np.empty(n_cols), np.empty(n_params)
    m = 0
    while True:
        r = -1  # the next row: the smallest under any cursor
        for w in range(n_workers):
            q = cursor[w]
            if q < stops[w] and (r < 0 or rows[w][q] < r):
                r = rows[w][q]
        if r < 0:
            break
        den = _count_start(base, r, n, slot, n_params, total, num)
        for w in range(n_workers):  # those that changed the row swap it for theirs
            q = cursor[w]
            if q == stops[w] or rows[w][q] != r:
                continue
            cursor[w] = q + 1
            den = _swap_in(base, r, values[w], q, slot, n_params, total, num, den)
        _write_merged(base, r, n, slot, n_params, total, num, den)
        for c in range(n_cols):
            merged[m, c] = base[r, c]
        touched[m] = r
        m += 1
    return touched[:m], merged[:m]


@numba.njit(**JIT)
def _mark_changed(base, tables, changed, lo, hi):
    """Set bit ``w`` of ``changed[r]`` for each row ``r`` in ``lo .. hi - 1`` whose bits in
    ``tables[w]`` differ from ``base`` (each a table's rows as words)."""
    for w in range(len(tables)):
        mine = tables[w]
        bit = changed.dtype.type(1 << w)
        for r in range(lo, hi):
            d = base[r, 0] ^ mine[r, 0]
            for c in range(1, base.shape[1]):
                d |= base[r, c] ^ mine[r, c]
            changed[r] |= bit * (d != 0)  # no branch: half the time of an if


@numba.njit(**_MERGE_JIT)
def _merge_changed(base, tables, changed, lo, hi, slot, n_params):
    """:func:`merge_table` of the workers' whole ``tables`` on rows ``lo .. hi - 1``, in
    ``base`` in place: a worker changed the rows whose bit in ``changed`` is set
    (:func:`_mark_changed`), and rows no worker changed are left as they are, as
    :func:`_merge_walk` leaves the rows no worker lists."""
    n = float(len(tables))
    total, num = np.empty(base.shape[1]), np.empty(n_params)
    for r in range(lo, hi):
        mask = changed[r]
        if mask == 0:
            continue
        den = _count_start(base, r, n, slot, n_params, total, num)
        for w in range(len(tables)):
            if mask >> w & 1:
                den = _swap_in(base, r, tables[w], r, slot, n_params, total, num, den)
        _write_merged(base, r, n, slot, n_params, total, num, den)


@numba.njit(inline="always", **_MERGE_JIT)
def _count_start(base, r, n, slot, n_params, total, num):
    """Start a merged row: each of the ``n`` workers counts with the round's start (sums in
    float64); returns the accumulators' sum."""
    for c in range(base.shape[1]):
        total[c] = n * base[r, c]
    if slot < 0:
        return 0.0
    for c in range(n_params):
        num[c] = n * np.float64(base[r, slot]) * base[r, c]
    return n * base[r, slot]


@numba.njit(inline="always", **_MERGE_JIT)
def _swap_in(base, r, mine, q, slot, n_params, total, num, den):
    """A worker that changed row ``r`` swaps the start's values for its own ``mine[q]``;
    returns the accumulators' sum."""
    for c in range(base.shape[1]):
        total[c] += np.float64(mine[q, c]) - base[r, c]
    if slot < 0:
        return den
    den += np.float64(mine[q, slot]) - base[r, slot]
    for c in range(n_params):
        num[c] += np.float64(mine[q, slot]) * mine[q, c] - np.float64(base[r, slot]) * base[r, c]
    return den


@numba.njit(inline="always", **_MERGE_JIT)
def _write_merged(base, r, n, slot, n_params, total, num, den):
    """Write the merged row ``r`` into ``base``: parameters weighted by the accumulator
    (all-zero accumulators: a plain average), every other column averaged."""
    weighted = slot >= 0 and den > 0.0
    for c in range(base.shape[1]):
        base[r, c] = num[c] / den if weighted and c < n_params else total[c] / n


# -- what a Dask fit supports ---------------------------------------------------------------
def _check_supported(est):
    """Refuse the settings a data-parallel fit cannot honour, before any work."""
    if not hasattr(est, "start_training"):
        raise TypeError(f"sparseopt.dask.fit trains sparseopt estimators; got {type(est).__name__}")
    if getattr(est, "early_stopping", False):
        raise ValueError(
            "early_stopping=True is not supported by sparseopt.dask.fit (it would split "
            "every block); set early_stopping=False and evaluate on a held-out collection"
        )
    if est.n_jobs not in (None, 1):
        raise ValueError(
            f"n_jobs={est.n_jobs}: sparseopt.dask.fit trains one thread per Dask worker; "
            f"set n_jobs=None and start more workers instead"
        )
    if getattr(est, "class_weight", None) == "balanced":
        raise ValueError(
            "class_weight='balanced' would be computed per block by sparseopt.dask.fit; "
            "pass the class weights as a dict"
        )


def _check_mergeable(training):
    if isinstance(training.optimizer, FTRL):
        raise ValueError(
            "optimizer='ftrl' keeps each weight as a closed form of its (z, n) state, "
            "which sparseopt.dask.fit does not merge; use optimizer='adagrad' (with "
            "alpha for L2), or train FTRL (and its L1) with a local fit"
        )


def _train_segments(training, blocks, segments, fit_id, tables=False):
    """Train ``training`` in place on the row ``segments`` (see :func:`_segment_data`).

    Returns (optimizer steps taken, loss sum, {table name: rows touched, None for all},
    {table name: (rows, values)} of the rows it may have changed); with ``tables`` (the
    driver shares this process's memory) ``(None, table)``: the whole tables, by reference,
    and no touched rows.
    """
    if not segments:  # a worker done with its blocks this epoch: nothing to catch up or merge
        return 0, 0.0, {}, {}
    start, total, marked, whole = training.clock()[R.CLOCK_T], 0.0, {}, []
    for block, rows, order in _segment_data(training, blocks, segments, fit_id):
        total += training.epoch(rows, order)
        if tables:
            continue
        for name, r in _touched(training, rows, order, fit_id, block).items():
            marked.setdefault(name, []).append(r)
        whole.append(block if order.size == training.count(rows) else None)
    steps = int(training.clock()[R.CLOCK_T] - start)
    training.catch_up()
    if tables:
        return steps, total, {}, {name: (None, training.table(name)) for name in training.tables()}
    everything = training.lazy()  # the catch-up moved every coordinate
    touched, changed = {}, {}
    for name, marks in marked.items():
        rows = _worker_rows(marks, None if None in whole else (fit_id, name, tuple(whole)))
        touched[name] = rows
        if rows is None or everything:
            rows = np.arange(training.table(name).shape[0])
        changed[name] = (rows, _take_rows(training.table(name), rows))
    return steps, total, touched, changed


def _worker_rows(marks, key):
    """The distinct table rows of the blocks' ``marks`` (None: every row), kept under ``key``
    unless it is None: a round over the same whole blocks touches the same rows every epoch
    (their union cost 10-25 ms per round and worker on a Zipf click log, issue 32)."""
    if key in _UNIONS:
        return _UNIONS[key]
    rows = None if any(r is None for r in marks) else _union(marks)
    if key is not None:
        _UNIONS[key] = rows
    return rows


def _union(parts):
    """The sorted distinct values of the arrays ``parts`` of table rows (non-negative ints).

    Marked in a boolean array as long as the largest row: 3 ms for two workers' 500,000
    rows each below 2^22, against 7 ms for a sort of them and 0.38-0.65 s for ``np.unique``,
    which in numpy 2.4 finds an integer array's distinct values with a hash table (issue 32).
    """
    top = max((int(p.max()) + 1 for p in parts if p.size), default=0)
    seen = np.zeros(top, np.bool_)
    for p in parts:
        seen[p] = True
    return np.flatnonzero(seen)


def _apply_delta(training, delta):
    """Bring a worker's resident model to the driver's merged model."""
    for name, pieces in delta["tables"].items():
        for rows, values in pieces:
            if rows is None:  # the driver's whole table, by reference (see _train_segments)
                if values.shape != training.table(name).shape:
                    raise ValueError(f"a whole table of shape {values.shape}, not "
                                     f"{training.table(name).shape}")  # fmt: skip
                np.copyto(training.table(name), values)
            else:
                _put_rows(training.table(name), rows, values)
    training.set_clock(delta["clock"])


def _take_rows(table, rows):
    """``table[rows]``, ``rows`` int64 indices of ``table``'s rows."""
    _check_rows(table, rows)
    out = np.empty((rows.size, table.shape[1]), table.dtype)
    _take_kernel(table, rows, out)
    return out


def _put_rows(table, rows, values):
    """``table[rows] = values``, ``rows`` int64 indices of ``table``'s rows."""
    if values.shape != (rows.size, table.shape[1]):
        raise ValueError(f"{rows.size} rows with values of shape {values.shape}")
    _check_rows(table, rows)
    _put_kernel(table, rows, values)


def _check_rows(table, rows):
    """Refuse a row outside ``table`` before a copy loop indexes it (0.09 ms for 705,754)."""
    if rows.size and (rows.min() < 0 or rows.max() >= table.shape[0]):
        raise IndexError(f"a row index outside 0 .. {table.shape[0] - 1}")


# A worker's 705,754 changed rows of a Zipf click log's 2^22 x 2 table (issue 32): NumPy's
# fancy indexing took 4.4 ms to take them and 4.8 ms to put them, these loops 1.8 and 1.3 ms.
@numba.njit(**JIT)
def _take_kernel(table, rows, out):
    for i in range(rows.size):
        for c in range(table.shape[1]):
            out[i, c] = table[rows[i], c]


@numba.njit(**JIT)
def _put_kernel(table, rows, values):
    for i in range(rows.size):
        for c in range(table.shape[1]):
            table[rows[i], c] = values[i, c]


# -- worker side ----------------------------------------------------------------------------
_ROWS: dict = {}  # per-process cache of each block's checked rows: (fit id, block) -> rows
_ORDERS: dict = {}  # per-process cache of each block's epoch order: (fit id, block, epoch)
_TOUCHED: dict = {}  # per-process cache of the table rows a whole block touches
_UNIONS: dict = {}  # per-process cache of those of a round's whole blocks: (fit id, table, blocks)


def _block_order(training, rows, fit_id, block, seed, epoch):
    """The order of a block's rows in an epoch (:meth:`Training.order`), made once."""
    key = (fit_id, block, epoch)
    if key not in _ORDERS:
        for old in [k for k in _ORDERS if k[:2] == key[:2]]:
            del _ORDERS[old]
        rng = np.random.default_rng([seed, epoch, block] if seed is not None else 0)
        _ORDERS[key] = training.order(rows, rng)  # seed None: the estimator does not shuffle
    return _ORDERS[key]


def _touched(training, rows, order, fit_id, block):
    """:meth:`Training.touched`, found once per fit for a whole block (marking a block's
    columns row by row every epoch cost 10% of a linear worker's training)."""
    if order.size != training.count(rows):
        return training.touched(rows, order)
    if (fit_id, block) not in _TOUCHED:
        _TOUCHED[fit_id, block] = training.touched(rows, order)
    return _TOUCHED[fit_id, block]


def _segment_data(training, blocks, segments, fit_id):
    """Yield (block, rows, order) of each segment ``(block, first_row, start, stop, seed,
    epoch)``: its block's number and checked rows (:meth:`Training.rows`), and its share
    ``start:stop`` of the block's epoch order.

    The kernels visit only the rows in ``order``, so training a segment costs what its rows
    cost (copying them out of the block cost about as much as training a linear model). A
    block is checked and its targets encoded once per fit (scikit-learn's label checks cost
    20-100 ms per 250,000 rows).
    """
    for i, (block, first_row, start, stop, seed, epoch) in enumerate(segments):
        if (fit_id, block) not in _ROWS:
            X, y = blocks[2 * i], blocks[2 * i + 1]
            if not sp.issparse(X):
                raise TypeError(f"block {block} of X is a {type(X).__name__}, not a sparse matrix")
            if y is not None:
                y = np.asarray(y).reshape(-1)
                if X.shape[0] != y.shape[0]:
                    raise ValueError(
                        f"block {block}: X has {X.shape[0]} rows but y has {y.shape[0]}; "
                        f"chunk X and y alike along the rows"
                    )
            _ROWS[fit_id, block] = training.rows(X, y, first_row=first_row)
        rows = _ROWS[fit_id, block]
        order = _block_order(training, rows, fit_id, block, seed, epoch)[start:stop]
        yield block, rows, order


_MODELS: dict = {}  # resident models: (fit id, worker address) -> [version, state]


class StaleModelError(RuntimeError):
    """A worker's resident model is not the one the round starts from (send the full one)."""


def _train_round(fit_id, version, delta, full, tables, segments, *blocks):
    """A worker's share of round ``version``; returns the rows it changed (``tables``: its
    whole tables, see :func:`_train_segments`).

    The worker keeps its model (a :class:`~sparseopt.estimators._base.Training`) between
    rounds: round ``version`` applies ``delta`` (the rows the last merge changed) to the
    model the worker trained in round ``version - 1``, which makes it the merged model;
    ``full`` (the whole training) replaces it after a lost worker.
    """
    from distributed import get_worker

    key = (fit_id, get_worker().address)
    if full is not None:
        _MODELS[key] = [None, copy.deepcopy(full)]  # the scattered model is shared: copy
    else:
        entry = _MODELS.get(key)
        if entry is None or entry[0] != version - 1:
            raise StaleModelError(f"worker {key[1]} holds no model of round {version - 1}")
        entry[0] = None  # until this task succeeds
        _apply_delta(entry[1], delta)
    training = _MODELS[key][1]
    steps, loss, touched, changed = _train_segments(training, blocks, segments, fit_id, tables)
    _MODELS[key][0] = version
    return {"changed": changed, "touched": touched, "clock_steps": steps, "loss": loss}


def _forget(fit_id):
    for cache in (_MODELS, _ROWS, _ORDERS, _TOUCHED, _UNIONS):
        for key in [k for k in cache if k[0] == fit_id]:
            del cache[key]


async def _forget_soon(fit_id):
    """:func:`_forget` on the worker's event loop (``Client.run`` does not wait for a
    coroutine when told not to)."""
    _forget(fit_id)


def _rows_and_labels(x, y, labels):
    """Rows of the blocks ``x`` (of X) and ``y`` (of targets), and the distinct values of
    ``y`` if ``labels``."""
    return int(x.shape[0]), int(y.shape[0]), np.unique(np.asarray(y)) if labels else None


def _counts(block):
    """Rows and stored entries of a sparse block."""
    if not sp.issparse(block):
        raise TypeError(f"a block of X is a {type(block).__name__}, not a sparse matrix")
    return int(block.shape[0]), int(block.nnz)


def _trains_on_X_alone(est) -> bool:
    """Whether ``est.fit`` takes X alone (matrix factorization: the stored entries)."""
    import inspect

    y = inspect.signature(est.fit).parameters.get("y")
    return y is not None and y.default is None and not (is_classifier(est) or is_regressor(est))


# -- driver side --------------------------------------------------------------------------
def _client(client):
    if client is not None:
        return client
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        raise ValueError(
            "sparseopt.dask needs a running distributed.Client: create one "
            "(Client(cluster) or Client('scheduler-address')) or pass client="
        ) from None


def _blocks(client, X, y, labels=False):
    """Persisted blocks of X and y (None: X alone) as futures, pairwise by row block; each
    block's size in updates (rows, or stored entries for X alone), its first row, and with
    ``labels`` the distinct values of y (else None), all found in one round trip; and the
    futures of that round trip's tasks, to be held until the first round is sent (releasing
    them sends a message, which held the first round's back 5-6 ms: see
    :func:`_submit_pinned`)."""
    import dask.array as da
    from distributed import wait

    if not isinstance(X, da.Array) or X.ndim != 2:
        raise TypeError(f"X must be a 2-D dask.array.Array of sparse blocks; got {type(X)}")
    if len(X.chunks[1]) != 1:
        raise ValueError(
            f"X must be chunked along the rows only (one block of columns); got "
            f"{len(X.chunks[1])} column blocks: build it with chunks=(rows, -1)"
        )
    if y is None:
        [X], futures = _persisted(client, [X])
        xs = [futures[k[0]] for k in X.__dask_keys__()]
        wait(xs)
        counted = client.map(_counts, xs, pure=False)
        counts = client.gather(counted)
        rows = np.array([r for r, _ in counts], np.int64)
        sizes, ys = np.array([n for _, n in counts], np.int64), [None] * len(xs)
        first_rows = np.concatenate([[0], np.cumsum(rows)[:-1]])
        return X, None, xs, ys, sizes, first_rows, None, counted
    if not isinstance(y, da.Array):
        y = _scatter_rows(client, np.asarray(y), X.chunks[0])
    if y.ndim != 1 or len(y.chunks[0]) != len(X.chunks[0]):
        raise ValueError(
            f"y must be a 1-D dask array with the same row blocks as X; got y.ndim={y.ndim} "
            f"with {len(y.chunks[0])} blocks for X's {len(X.chunks[0])}"
        )
    (X, y), futures = _persisted(client, [X, y])
    xs = [futures[k[0]] for k in X.__dask_keys__()]
    ys = [futures[k] for k in y.__dask_keys__()]
    wait(xs + ys)
    # one task per block pair, sent in one message: the client sends a second message 10 ms
    # after the first (distributed's BatchedSend), which made 8 tasks cost 21-26 ms
    counted = client.map(_rows_and_labels, xs, ys, labels=labels, pure=False)
    found = client.gather(counted)
    for i, (a, b, _) in enumerate(found):
        if a != b:
            raise ValueError(f"block {i}: X has {a} rows but y has {b}")
    sizes = np.array([a for a, _, _ in found], np.int64)
    distinct = np.unique(np.concatenate([v for _, _, v in found])) if labels else None
    return X, y, xs, ys, sizes, np.concatenate([[0], np.cumsum(sizes)[:-1]]), distinct, counted


def _persisted(client, collections):
    """``client.persist(collections)`` and their blocks' futures by key; the collections as
    they are when every block already is a future (persisting again sends a message, which
    holds the client's next one back up to 10 ms: distributed's BatchedSend)."""
    from dask.core import flatten
    from distributed import futures_of

    futures = {f.key: f for c in collections for f in futures_of(c)}
    if not all(k in futures for c in collections for k in flatten(c.__dask_keys__())):
        collections = client.persist(collections)
        futures = {f.key: f for c in collections for f in futures_of(c)}
    return collections, futures


def _scatter_rows(client, a, chunks):
    """``a`` as a Dask array of row blocks ``chunks`` sent to the workers beforehand: inside
    the graph, a large array would go through the scheduler ("Sending large graph")."""
    import dask.array as da

    bounds = np.cumsum([0, *chunks])
    if np.isnan(bounds[-1]):  # unknown row counts: y cannot be cut like X
        raise ValueError(
            "y must be a dask array chunked like X when X's row counts are unknown "
            "(from_files returns one)"
        )
    bounds = bounds.astype(np.int64)
    pieces = [a[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    futures = client.scatter(pieces, hash=False)
    blocks = zip(futures, pieces, strict=True)
    return da.concatenate([da.from_delayed(f, shape=p.shape, dtype=a.dtype) for f, p in blocks])


def _owners(client, xs, ys, sizes):
    """One worker per block, among those holding both its X and y, balancing rows."""
    from distributed import wait

    ys = [f for f in ys if f is not None]
    wait(xs + ys)
    who = client.who_has(xs + ys)
    load: dict = {}
    owner = [None] * len(xs)
    for b in np.argsort(-sizes, kind="stable"):
        holders = set(who[xs[b].key])
        if ys:
            holders = holders & set(who[ys[b].key]) or holders
        if not holders:
            raise WorkerLostError(f"block {b} of X is on no worker")
        owner[b] = min(sorted(holders), key=lambda w: load.get(w, 0))
        load[owner[b]] = load.get(owner[b], 0) + sizes[b]
    return owner


def _plan(owner, sizes, first_rows, cursors, merge_every, batch_size, seed, epoch):
    """Each worker's segments for the round: up to ``merge_every`` minibatches of its blocks
    (see :func:`_segment_data`). A worker whose blocks are done this epoch gets no segment
    but still takes part (it applies the round's delta): the next round would otherwise send
    it the whole model."""
    plan: dict = {w: [] for w in owner}
    budget = {}
    for b in range(len(sizes)):
        w = owner[b]
        left = budget.setdefault(w, merge_every)
        if cursors[b] >= sizes[b] or left == 0:
            continue
        stop = int(min(sizes[b], cursors[b] + left * batch_size))
        budget[w] = left - -(-(stop - cursors[b]) // batch_size)
        plan[w].append((b, int(first_rows[b]), int(cursors[b]), stop, seed, epoch))
    return plan


def _live_workers(client, workers):
    """Addresses of the workers the scheduler holds; ``workers`` when it cannot answer now.

    ``Client.scheduler_info`` is not used: when the scheduler is slow to answer (an event
    loop starved by a compiling worker thread), it returns its last cached copy, which may
    list no workers at all, and every worker would look lost.
    """
    try:
        return set(client.sync(client.scheduler.identity, n_workers=-1)["workers"])
    except OSError:
        return set(workers)


# A broadcast scatter to a worker that dies during it can wait forever (seen in
# tests/test_dask.py::test_killed_worker_process_round_is_rerun: Client.scatter still waiting
# 13 minutes after the kill); past this many seconds the round is rerun on the live workers.
_SCATTER_TIMEOUT = 120


def _scatter(client, value, workers=None):
    """``client.scatter([value], broadcast=True)``'s future, bounded in time: TimeoutError
    after ``_SCATTER_TIMEOUT`` seconds (``Client.scatter``'s own timeout covers only the wait
    for workers, not the transfer)."""
    [future] = client.sync(
        client._scatter, [value], workers=workers, broadcast=True, hash=False,
        callback_timeout=_SCATTER_TIMEOUT,
    )  # fmt: skip
    return future


def _submit_pinned(client, calls, retries):
    """Futures of ``calls`` (``{worker: (function, *arguments)}``), each task pinned to its
    worker, all sent in one message: with ``Client.submit`` per task, the client held the
    second message back up to 10 ms (distributed's BatchedSend), and a round ended as late
    as its second worker started (12-17 ms after the first in the second round of 6 fits in
    9 on a Zipf click log, issue 32)."""
    import dask

    tasks = []
    for worker, (function, *arguments) in calls.items():
        with dask.annotate(workers=[worker], allow_other_workers=False, retries=retries):
            tasks.append(dask.delayed(function, pure=False)(*arguments))
    return client.compute(tasks, optimize_graph=False)


def _gather_round(client, futures, workers):
    """Results of the round's tasks; WorkerLostError if one of ``workers`` leaves first.

    Every wait has a timeout and checks the workers: a task pinned to a worker that left never
    runs, and Dask waits for it forever. Dask cancels a task whose inputs (a scattered model)
    or result were lost with a worker.
    """
    from distributed.client import FutureCancelledError

    results = []
    for future in futures:
        timeout = 0.5
        while True:
            try:
                results.append(future.result(timeout=timeout))
                break
            except TimeoutError:
                gone = set(workers) - _live_workers(client, workers)
                if gone:
                    raise WorkerLostError(f"workers {sorted(gone)} left") from None
                if future.done():  # computed, still in transfer: give it longer
                    timeout *= 2
            except FutureCancelledError as exc:
                raise WorkerLostError(f"{exc} (data lost with a worker)") from None
    return results


def fit(
    estimator, X, y=None, *, classes=None, merge_every="auto", retries=2, client=None, verbose=0,
    user_features=None, item_features=None,
):  # fmt: skip
    """Train ``estimator`` data-parallel on the Dask cluster holding ``X``'s blocks.

    Each of ``estimator.max_iter`` epochs (for the linear models and factorization machines
    one for ``max_iter="auto"``: no rows are held out here to decide more, and on click logs
    one pass is what held-out rows pick) runs in rounds: every worker trains ``merge_every``
    minibatches of its own blocks from the current model, then the models merge (see the
    module docstring). A task that fails is retried ``retries`` times; a round whose worker
    leaves is run again from its start on the blocks' new holders (recomputed by Dask from
    their graph), so no block is silently skipped.

    Parameters
    ----------
    estimator : SparseLogisticRegression, SparseLinearRegression, FMClassifier, FMRegressor,
        FFMClassifier or MatrixFactorization
        Its parameters configure training (``optimizer``, ``batch_size``, ``max_iter``,
        ``tol``, ``shuffle``, ``random_state``, ``warm_start``...). Fitted in place.
    X : dask.array.Array of shape (n_samples, n_features)
        Row blocks of SciPy sparse matrices (CSR), e.g. from :func:`from_files`. For
        MatrixFactorization, users x items: each worker trains the users of its blocks (a
        minibatch is one stored entry), and the driver first gathers every block (the model
        keeps all interactions).
    y : dask.array.Array of shape (n_samples,) or array-like
        Targets, chunked along the rows like X; None for MatrixFactorization.
    classes : array-like, default=None
        All class labels (classifiers); computed from y (one pass) when None.
    merge_every : int, None or "auto", default="auto"
        Minibatches each worker trains between merges; None merges once per epoch.
        ``"auto"``: 100,000; for MatrixFactorization ten merges per epoch (a tenth of the
        entries of the worker holding most). Merging MF once per epoch cost 0.003-0.005 of
        test RMSE on MovieLens 100K and 0.010 on 4 million synthetic ratings against the
        sequential fit, ten times 0.0005-0.0015 (``benchmarks/README.md``).
    retries : int, default=2
        Retries of a failed task, and re-runs of a round that lost a worker.
    client : distributed.Client, default=None
        The active client when None.
    verbose : int, default=0
        Print each epoch's loss, rounds and time.
    user_features, item_features : sparse matrix, default=None
        MatrixFactorization's side features (as its ``fit`` takes them): every feature row
        is shared by the users or items that have it, so each merges like an item row.

    Returns
    -------
    estimator
        Fitted, an ordinary local estimator (predict, save... as after ``fit``).
    """
    client = _client(client)
    alone = _check_arguments(estimator, y, merge_every)
    features = {} if user_features is None and item_features is None else dict(
        user_features=user_features, item_features=item_features)  # fmt: skip
    training, blocks = _start(client, estimator, X, y, classes, alone, features)
    seed = _shuffle_seed(estimator)
    batch_size = getattr(estimator, "batch_size", 1)
    run = _Run(client, *blocks, batch_size, retries)
    if merge_every == "auto":
        merge_every = _auto_merge_every(run, alone)
    merge_every = merge_every or int(-(-run.sizes.max() // batch_size)) * len(run.sizes)
    tol = getattr(estimator, "tol", None)  # the linear models and FMs have one, MF not
    stopper = Stopper(tol, estimator.n_iter_no_change if tol is not None else None)

    train_epoch = functools.partial(_train_epoch, run, training, merge_every, seed, verbose)
    try:
        curve = run_epochs(train_epoch, training.max_epochs(), stopper)
    finally:
        # not waited for: a round trip (5-8 ms) at the end of every fit (issue 32)
        client.run(_forget_soon, run.fit_id, on_error="ignore", wait=False)
    return training.finish(curve)


def _check_arguments(estimator, y, merge_every) -> bool:
    """Refuse what :func:`fit` cannot do before any work; returns whether ``estimator``
    trains on X alone (then ``y`` must be None)."""
    _check_supported(estimator)
    if merge_every not in (None, "auto") and (
        not isinstance(merge_every, int) or merge_every < 1
    ):  # fmt: skip
        raise ValueError(f"merge_every must be a positive int, None or 'auto', got {merge_every!r}")
    alone = _trains_on_X_alone(estimator)
    if (y is None) != alone:
        raise ValueError(
            f"{type(estimator).__name__} trains on "
            + ("X alone: leave y out" if alone else "X and y: pass y")
        )
    return alone


def _train_epoch(run, training, merge_every, seed, verbose, epoch):
    """Epoch ``epoch`` of ``training`` in rounds of ``merge_every`` minibatches per worker,
    each round's copies merged; returns the mean loss."""
    sizes = run.sizes
    began, cursors, loss, rounds = time.perf_counter(), np.zeros_like(sizes), 0.0, 0
    while (cursors < sizes).any():
        replan = functools.partial(run.plan, cursors, merge_every, seed, epoch)
        results, plan = run.round(training, replan(), replan)
        run.delta = _merge(training, results)
        for segments in plan.values():
            for b, _, _, stop, _, _ in segments:
                cursors[b] = stop
        loss += sum(r["loss"] for r in results)
        rounds += 1
    loss /= max(int(sizes.sum()), 1)
    if verbose:
        print(f"epoch {epoch + 1}: loss {loss:.5f}, {rounds} rounds, "
              f"{time.perf_counter() - began:.2f} s")  # fmt: skip
    return loss


def _start(client, estimator, X, y, classes, alone, features):
    """The estimator's training for the blocks of ``X`` and ``y`` (and MF's side
    ``features``), and the blocks ``(xs, ys, sizes, first_rows, counted)`` (see
    :func:`_blocks`)."""
    reset = not (getattr(estimator, "warm_start", False) and hasattr(estimator, "n_iter_"))
    find_classes = is_classifier(estimator) and reset and classes is None
    X, y, xs, ys, sizes, first_rows, labels, counted = _blocks(client, X, y, find_classes)
    if X.dtype not in (np.float32, np.float64):
        raise TypeError(f"X must hold float32 or float64 values, got {X.dtype}")
    if is_classifier(estimator):
        if not reset:
            classes = estimator.classes_
        elif classes is None:
            classes = labels
        classes = np.unique(np.asarray(classes))
    else:
        classes = None
    # the estimator checks the labels (two classes at least; FM: binary only) and its state
    if alone:  # the model keeps every interaction (negatives, histories): gather them
        template = sp.vstack(client.gather(xs), format="csr")
    else:
        template = sp.csr_matrix((0, X.shape[1]), dtype=X.dtype)
    training = estimator.start_training(template, classes=classes, reset=reset, **features)
    _check_mergeable(training)
    return training, (xs, ys, sizes, first_rows, counted)


def _shuffle_seed(estimator):
    """The seed of every epoch's shuffle (``random_state``; None: the estimator does not
    shuffle)."""
    if not getattr(estimator, "shuffle", True):
        return None
    rs = estimator.random_state
    return (
        rs if isinstance(rs, int)
        else rs.randint(2**31) if isinstance(rs, np.random.RandomState)
        else int(np.random.SeedSequence().entropy % 2**63)
    )  # fmt: skip


def _auto_merge_every(run, alone):
    """``merge_every="auto"``: 100,000 minibatches, or for a model trained on X alone
    (matrix factorization) a tenth of the largest worker's entries per epoch.

    MF's item rows drift apart on the workers with every entry they train, and the test RMSE
    gap to the sequential fit grew with the share of an epoch between merges (MovieLens 100K
    and synthetic ratings, benchmarks/README.md). Ten merges per epoch cost 2% more CPU
    time than one on 20 million ratings; each round costs about 0.1 s there.
    """
    if not alone:
        return 100_000
    run.owner = run.owner or _owners(run.client, run.xs, run.ys, run.sizes)
    load: dict = {}
    for b, w in enumerate(run.owner):
        load[w] = load.get(w, 0) + int(run.sizes[b])
    return max(1, -(-max(load.values()) // (10 * run.batch_size)))


class _Run:
    """The driver's side of one fit: block owners, the workers' model versions, the rounds."""

    def __init__(self, client, xs, ys, sizes, first_rows, counted, batch_size, retries):
        self.client, self.fit_id = client, uuid.uuid4().hex
        self.xs, self.ys, self.sizes, self.first_rows = xs, ys, sizes, first_rows
        self.counted = counted  # held for the fit (see _blocks)
        self.batch_size, self.retries = batch_size, retries
        self.owner = None  # looked up once, and again after a worker is lost
        self.version = 0  # rounds done
        self.versions = {}  # worker -> the last round it trained (its resident model)
        self.delta = None  # what the last merge changed

    def plan(self, cursors, merge_every, seed, epoch):
        """Each worker's segments of the next round (see :func:`_plan`)."""
        self.owner = self.owner or _owners(self.client, self.xs, self.ys, self.sizes)
        return _plan(self.owner, self.sizes, self.first_rows, cursors, merge_every,
                     self.batch_size, seed, epoch)  # fmt: skip

    def round(self, training, plan, replan):
        """Run one round to completion; returns (results in worker order, plan).

        Workers whose resident model is the last round's get the merge's delta; the others
        (first round, idle last round, replaced after a loss) get the whole model. Workers
        in this process (``LocalCluster(processes=False)``: ``inproc://`` addresses) share
        its memory: they send their whole tables, by reference, and the merge compares them
        row by row with the start, which costs less than finding, copying and sending the
        rows each worker touched (60-100 ms of a worker's first round on a Zipf click log,
        issue 32).
        """
        from distributed.comm import CommClosedError

        client, version = self.client, self.version + 1
        for _attempt in range(self.retries + 1):
            futures = []
            try:
                stale = [w for w in plan if self.versions.get(w) != version - 1]
                full = delta = None
                tables = not training.needs_touched and len(plan) <= _MAX_WHOLE and all(
                    w.startswith("inproc://") for w in plan)
                if stale:
                    full = _scatter(client, training, workers=stale)
                if len(stale) < len(plan):
                    delta = _scatter(client, self.delta)
                futures = _submit_pinned(client, {
                    w: (_train_round, self.fit_id, version, delta, full if w in stale else None,
                        tables, plan[w],
                        *[f for b, *_ in plan[w] for f in (self.xs[b], self.ys[b])])
                    for w in sorted(plan)
                }, self.retries)  # fmt: skip
                results = _gather_round(client, futures, plan)
            except (WorkerLostError, StaleModelError, CommClosedError, TimeoutError) as exc:
                client.cancel(futures)
                self.versions.clear()
                self.owner = None
                plan, lost = replan(), exc
                continue
            self.versions.update(dict.fromkeys(plan, version))
            self.version = version
            return results, plan
        raise WorkerLostError(
            f"a round lost workers {self.retries + 1} times in a row (the last time: "
            f"{type(lost).__name__}: {lost}); check the workers' logs, or raise retries"
        ) from lost


def _merge(training, results):
    """Merge the round's results into the driver's ``training`` in place; returns the delta
    for the workers."""
    training.prepare_merge([r["touched"] for r in results if r["touched"]])  # idle: {}
    tables = {}
    for name, (n_params, accumulator, shared) in training.tables().items():
        table = training.table(name)
        updates = [r["changed"][name] for r in results if name in r["changed"]]
        if not updates:
            continue
        if shared:
            tables[name] = _merge_rows(table, updates, accumulator, n_params)
            continue
        # each row trained by one worker: its values, over those of the workers whose catch-up
        # (a lazy rule's) moved the row without training it
        trained = [r["touched"].get(name) for r in results if name in r["changed"]]
        for rows, values in updates:
            table[rows] = values
        caught_up = False
        for (rows, values), mine in zip(updates, trained, strict=True):
            if mine is not None and mine.size < rows.size:
                table[mine] = values[np.searchsorted(rows, mine)]
                caught_up = True
        if caught_up:  # the workers' copies differ: send the merged rows
            rows = _union([r for r, _ in updates])
            tables[name] = [(rows, table[rows])]
        # else each worker holds the rows it trained, and never reads the others'
    training.advance(sum(r["clock_steps"] for r in results))
    return {"tables": tables, "clock": training.clock().copy()}


def predict(estimator, X, method="predict", *, client=None):
    """``estimator.<method>`` of every block of ``X``, lazily, as a Dask array.

    With a distributed client, the estimator is sent to the workers once beforehand (a
    large model inside the graph would go through the scheduler: "Sending large graph");
    otherwise it is one key of the graph, not one per block. The result's row counts are
    known, so that it can be sliced (``proba[:5]``): when X's are not (:func:`from_files`),
    X is persisted and its blocks' rows counted first.

    Parameters
    ----------
    estimator : fitted estimator
    X : dask.array.Array of shape (n_samples, n_features)
        Row blocks of sparse (or dense) matrices, one block of columns.
    method : str, default="predict"
        ``"predict"``, ``"predict_proba"``, ``"decision_function"``...
    client : distributed.Client, default=None
        None: the default client, if any.

    Returns
    -------
    result : dask.array.Array
    """
    import dask
    import dask.array as da

    if not hasattr(estimator, method):
        raise AttributeError(f"{type(estimator).__name__} has no method {method!r}")
    if len(X.chunks[1]) != 1:
        raise ValueError(
            f"X must be chunked along the rows only; got {len(X.chunks[1])} column blocks"
        )
    probe = getattr(estimator, method)(sp.csr_matrix((1, X.shape[1]), dtype=X.dtype))
    try:
        client = _client(client)
    except ValueError:  # no cluster: the local schedulers send no graph
        model = dask.delayed(estimator, pure=True)
    else:
        [model] = client.scatter([estimator], broadcast=True, hash=False)
    if np.isnan(X.shape[0]):
        X = X.persist()
        X.compute_chunk_sizes()
    if probe.ndim == 1:
        return da.map_blocks(_apply, X, model, method, drop_axis=1, dtype=probe.dtype,
                             meta=np.empty((0,), probe.dtype))  # fmt: skip
    return da.map_blocks(_apply, X, model, method, chunks=(X.chunks[0], (probe.shape[1],)),
                         dtype=probe.dtype, meta=np.empty((0, 0), probe.dtype))  # fmt: skip


def _apply(block, estimator, method):
    return getattr(estimator, method)(block)


def from_files(paths, reader, **kwargs):
    """X and y as Dask arrays with one row block per file, parsed on the workers.

    ``reader`` is a reader function of :mod:`sparseopt.datasets` (``read_criteo``,
    ``read_avazu``, ``read_libsvm``...), called as ``reader(path, **kwargs).read()``. Row
    counts are unknown until the files are read (NaN chunk sizes); :func:`fit` does not need
    them.
    """
    import dask
    import dask.array as da

    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("from_files needs at least one path")
    n_features = reader(paths[0], **kwargs).n_features
    parts = [dask.delayed(_read_file, nout=2)(p, reader, kwargs) for p in paths]
    meta = sp.csr_matrix((0, n_features), dtype=np.float32)
    X = da.concatenate([
        da.from_delayed(x, shape=(np.nan, n_features), dtype=np.float32, meta=meta)
        for x, _ in parts
    ])  # fmt: skip
    y = da.concatenate([
        da.from_delayed(t, shape=(np.nan,), dtype=np.float32) for _, t in parts
    ])  # fmt: skip
    return X, y


def _read_file(path, reader, kwargs):
    return reader(path, **kwargs).read()
