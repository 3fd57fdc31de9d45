"""Lock-free multi-threaded epochs (Hogwild, Recht et al. 2011), for every model.

Each model's serial training kernel takes a ``(first, stride)`` pair and trains the batches
``first, first + stride, ...`` of the epoch's order; :func:`run_threads` runs ``n_threads``
of those passes at once on Python threads (the kernels release the GIL). The threads write
the shared tables unsynchronized: fast and nondeterministic. The rows that every step
writes (the intercepts) are the exception: each thread trains its own copy, and the copies
are averaged at the end of the epoch, since a row written by all threads on every step would
move between cores each time.

No ``parallel=True`` kernel is involved, so threads cost no compile time of their own: the
serial kernel serves both.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np


def hogwild_order(order, n_threads):
    """``order`` laid out for :func:`run_threads`, whose thread ``p`` takes the positions
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


def map_threads(work, n_threads):
    """``[work(p) for p in range(n_threads)]``, each call on a thread of its own."""
    with ThreadPoolExecutor(n_threads) as pool:
        return list(pool.map(work, range(n_threads)))


def run_threads(train_pass, n_threads, shared, bias):
    """``train_pass(p, n_threads, shared(local_bias))`` on ``n_threads`` threads; returns the
    worst status and the summed loss.

    ``shared(local)`` builds a thread's arguments around its own copy ``local`` of ``bias``
    (weights and optimizer slots, on cache lines of its own); ``bias`` ends as the mean of
    the copies.
    """
    padded = bias.shape[0] + 64 // bias.itemsize  # a cache line between copies
    block = np.empty((n_threads, padded) + bias.shape[1:], bias.dtype)
    copies = [block[p, : bias.shape[0]] for p in range(n_threads)]
    for copy in copies:
        copy[...] = bias

    results = map_threads(lambda p: train_pass(p, n_threads, *shared(copies[p])), n_threads)
    bias[...] = np.mean(copies, axis=0, dtype=np.float64)
    return max(r[0] for r in results), sum(r[1] for r in results)
