"""The memory floor of sparse AdaGrad: a loop that only gathers and scatters the weights.

Shared by ``bench_linear.py`` (sparseopt's one-thread speed against it) and ``bench_dask.py``
(how far two processes running it at once fall short of 2x on this machine: the ceiling for
data-parallel training of a memory-bound model).
"""

from __future__ import annotations

import time

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
