"""The memory floor of sparse AdaGrad: a loop that only gathers and scatters the weights.

Shared by ``bench_linear.py`` (sparseopt's one-thread speed against it, and Hogwild's
two-thread speed-up against the loop's own in threads on one table) and ``bench_dask.py`` (how
far two processes running it at once fall short of 2x on this machine: the ceiling for
data-parallel training of a memory-bound model).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def gather_scatter(indptr, indices, table):
    """Read every row's weights, then write each weight and accumulator (rows in file order,
    as Vowpal Wabbit and sparseopt by default take them), in sparseopt's layout: weight and
    accumulator side by side, one cache line per feature."""
    for i in range(indptr.size - 1):
        m = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            m += table[indices[k], 0]
        d = 1e-3 * (m > 0)
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            table[j, 1] += d
            table[j, 0] -= d


def floor_epochs(blocks, epochs):
    """Run the loop over CSR ``blocks`` for ``epochs`` with one table; return its seconds."""
    table = np.full((blocks[0].shape[1], 2), 0.0, np.float32)  # written: no page faults timed
    gather_scatter(blocks[0].indptr[:2], blocks[0].indices, table)  # load the compiled loop
    start = time.perf_counter()
    for _ in range(epochs):
        for X in blocks:
            gather_scatter(X.indptr, X.indices, table)
    return time.perf_counter() - start


def floor_threads(X, n_threads):
    """Seconds of one pass of the loop over CSR ``X`` in ``n_threads`` threads at once, each
    on a contiguous block of the rows, all on one table (as Hogwild shares its weights)."""
    table = np.full((X.shape[1], 2), 0.0, np.float32)
    gather_scatter(X.indptr[:2], X.indices, table)
    bounds = np.linspace(0, X.shape[0], n_threads + 1).astype(np.int64)
    blocks = [X.indptr[lo : hi + 1] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    with ThreadPoolExecutor(n_threads) as pool:
        start = time.perf_counter()
        list(pool.map(lambda indptr: gather_scatter(indptr, X.indices, table), blocks))
        return time.perf_counter() - start
