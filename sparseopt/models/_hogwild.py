"""Lock-free multi-threaded epochs (Hogwild, Recht et al. 2011): one driver for every model.

Every training kernel takes ``(start, stop, pace, ...)``: it trains the positions
``start .. stop - 1`` of the epoch's order (rows, or interactions for matrix factorization),
ticks its clock ``pace`` times per optimizer step after the first, and leaves the clock it was
given at its last step. :func:`run_threads` runs one such call serially, or one per thread on
contiguous ranges of the order, or threads that take more ranges in turn, each the next not
yet taken (the kernels release the GIL): a thread slowed by a busy core trains fewer ranges
instead of holding the others up at the end. The threads write the shared tables
unsynchronized: fast and nondeterministic. No ``parallel=True`` kernel is involved, so
threads cost no compile time of their own: the serial kernel serves both.

The schedule
------------
In a serial pass the ``u``-th update of the epoch is step :math:`t_0 + u + 1` of the clock
(its learning rate, Adam's bias corrections, the weight decay's running product). With ``P``
threads, thread ``p`` gets a copy of the clock ticked ``p`` times and ticks it ``P`` times per
update, so its ``u``-th update is step :math:`t_0 + p + uP + 1`: the threads' updates interleave
in the schedule as if they took turns, each step is one thread's, and at any moment the
threads' clocks are within ``P`` steps of each other. The lazy rules need that: a coordinate
stamped at step ``s`` by one thread and touched at step ``t`` by another catches up ``t - s``
zero-gradient steps, a handful. (A thread that started at the step of its first position, as
a serial pass would reach it, would stamp coordinates half an epoch ahead of the other: every
touch by the thread behind would skip the catch-up and stamp them back, and the next touch by
the thread ahead would apply half an epoch of decay again.) After the threads the shared clock
has advanced by the number of updates made, as after a serial pass.

Rows written on every step (the intercepts) are the exception to sharing: each thread trains
its own copy, and the copies are averaged at the end of the epoch, since a row written by all
threads on every step would move between cores each time.
"""

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..optim import _rules as R
from ._losses import BAD_STEP, OK


def thread_ranges(size, n_threads, block_of=None):
    """Edges ``e_0 = 0 <= e_1 <= ... <= e_P = size`` of ``n_threads`` contiguous ranges of
    about ``size / n_threads`` positions; ``block_of(e)`` (optional): a key of position ``e``,
    an edge then moves forward until it separates two keys (a block stays in one thread)."""
    chunk = -(-size // n_threads)
    edges = []
    for p in range(n_threads + 1):
        e = min(p * chunk, size)
        while block_of is not None and 0 < e < size and block_of(e) == block_of(e - 1):
            e += 1
        edges.append(e)
    return edges


def map_threads(work, n_threads):
    """``[work(p) for p in range(n_threads)]``, each call on a thread of its own."""
    with ThreadPoolExecutor(n_threads) as pool:
        return list(pool.map(work, range(n_threads)))


def _own(arguments, copies):
    """``arguments`` (nested tuples) with each array keyed by id in ``copies`` swapped for
    its value."""
    return tuple(_own(a, copies) if isinstance(a, tuple) else copies.get(id(a), a)
                 for a in arguments)  # fmt: skip


def run_threads(train, edges, arguments, clock, hp, spec, private=None, n_threads=None):
    """Train the ranges ``edges[i] .. edges[i + 1] - 1`` of an epoch's order on ``n_threads``
    threads (default: one per range; serially for one range); returns the worst status and
    the summed loss.

    Range ``i`` is ``train(edges[i], edges[i + 1], pace, *arguments[i])``, called by the next
    free thread. Thread ``p`` calls it with the shared ``clock`` and ``private`` arrays,
    wherever they stand in ``arguments[i]`` (nested tuples too), swapped for its own copies: its
    clock ticked as the module docstring says, and its copy of ``private`` (the rows every
    step writes; None for none) on cache lines of its own, which ends as the mean of the
    copies. One range trains on the arrays themselves. ``hp``, ``spec``: the optimizer's, to
    advance the shared clock by the updates made.

    More ranges than threads are taken in turn: on a 2-core machine whose cores ran at
    unequal speeds (another tenant on one of them), the thread on the slow core took 1.5-1.7
    times as long over its half of an epoch, and the other waited for it (issue 32). A thread
    that takes more ranges than the others ends with its clock past the shared one (by P
    steps per update more than its share): harmless without stamps, so the row models take
    ranges in turn only for rules that keep none.
    """
    n_threads = n_threads or len(edges) - 1
    if len(edges) == 2:
        return train(edges[0], edges[1], 1, *arguments[0])
    clocks = [clock.copy() for _ in range(n_threads)]
    usable = all([R.advance_clock(hp, spec, clocks[p], p) for p in range(n_threads)])
    copies = [{id(clock): clocks[p]} for p in range(n_threads)]
    if private is not None:
        padded = private.shape[0] + 64 // private.itemsize  # a cache line between copies
        block = np.empty((n_threads, padded) + private.shape[1:], private.dtype)
        for p in range(n_threads):
            block[p, : private.shape[0]] = private
            copies[p][id(private)] = block[p, : private.shape[0]]

    n_ranges, taken = len(edges) - 1, itertools.count()  # next() is atomic under the GIL

    def ranges(p):  # one range per thread: its own; more: the next not yet taken
        if n_ranges == n_threads:
            yield p
            return
        while (i := next(taken)) < n_ranges:
            yield i

    def work(p):
        status, total, usable = OK, 0.0, True
        for i in ranges(p):
            if edges[i] == edges[i + 1]:
                continue
            if clocks[p][R.CLOCK_T] > t0 + p:  # a range done: the next update is P steps on,
                usable &= R.advance_clock(hp, spec, clocks[p], n_threads - 1)  # the kernel ticks 1
            s, loss = train(edges[i], edges[i + 1], n_threads, *_own(arguments[i], copies[p]))
            status, total = max(status, s), total + loss
        return status, total, usable

    t0 = clock[R.CLOCK_T]
    results = map_threads(work, n_threads)
    usable &= all(r[2] for r in results)
    if private is not None:
        private[...] = np.mean([c[id(private)] for c in copies], axis=0, dtype=np.float64)
    # thread p's u-th update is step t0 + p + u P + 1: its clock tells how many it made
    n_updates = sum(int(c[R.CLOCK_T] - t0 - p - 1) // n_threads + 1 for p, c in enumerate(clocks))
    usable &= R.advance_clock(hp, spec, clock, n_updates)
    worst = max(r[0] for r in results)
    return (worst if usable else max(worst, BAD_STEP)), sum(r[1] for r in results)
