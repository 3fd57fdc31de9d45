"""The one Hogwild driver: contiguous ranges, and threads that take turns in the schedule."""

import numpy as np
import pytest

from sparseopt.models._hogwild import run_threads, thread_ranges
from sparseopt.models._losses import OK
from sparseopt.optim import SGD
from sparseopt.optim import _rules as R


@pytest.mark.parametrize("size", [0, 1, 7, 10])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_thread_ranges_cover_the_order_in_contiguous_ranges(size, n_threads):
    edges = thread_ranges(size, n_threads)
    assert len(edges) == n_threads + 1 and edges[0] == 0 and edges[-1] == size
    sizes = np.diff(edges)
    assert (sizes >= 0).all() and sizes.max(initial=0) <= -(-size // n_threads)


def test_thread_ranges_keep_a_block_in_one_thread():
    keys = np.repeat([5, 1, 1, 1, 1, 1, 4, 2], [1, 6, 1, 1, 1, 1, 3, 2])  # 16 positions
    edges = thread_ranges(keys.size, 3, lambda e: keys[e])
    assert edges[0] == 0 and edges[-1] == keys.size
    for e in edges[1:-1]:
        assert e == keys.size or keys[e] != keys[e - 1]


def recording_kernel(log):
    """A stand-in for a training kernel: ticks its clock as the kernels do (once for the first
    step, ``pace`` times for each later one) and records each position's step and clock."""
    hp, spec = SGD(0.1).hyperparameters(), SGD(0.1).schedule_spec()

    def train(start, stop, pace, i, clock, bias):
        for e in range(start, stop):
            R.advance_clock(hp, spec, clock, 1 if e == start else pace)
            log.append((i, e, clock[R.CLOCK_T], id(clock)))
        bias[0] += 1.0  # each thread's own copy
        return OK, float(stop - start)

    return train, hp, spec


@pytest.mark.parametrize("n_ranges", [1, 2, 5])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_threads_take_turns_in_the_schedule(n_threads, n_ranges):
    """Thread p's u-th update is step t0 + p + u P + 1, over every range it takes: the steps of
    the threads' first updates are t0 + 1 .. t0 + P, each step is one update's, and the shared
    clock ends at t0 + (updates made), as after a serial pass."""
    log = []
    train, hp, spec = recording_kernel(log)
    clock, bias = np.zeros(R.CLOCK_SIZE), np.zeros(1)
    clock[R.CLOCK_T] = 40.0
    ranges = n_threads * n_ranges if n_threads > 1 else 1
    edges = thread_ranges(10, ranges)
    arguments = [(i, clock, bias) for i in range(ranges)]  # each range's, as data
    status, total = run_threads(train, edges, arguments, clock, hp, spec, bias, n_threads)
    assert status == OK and total == 10
    assert sorted(e for _, e, _, _ in log) == list(range(10))  # each position once
    for i, e, _, _ in log:
        assert edges[i] <= e < edges[i + 1]
    steps = [t for *_, t, _ in log]
    assert len(set(steps)) == 10
    firsts = []
    for thread in {c for *_, c in log}:
        mine = sorted(t for *_, t, c in log if c == thread)
        assert np.all(np.diff(mine) == n_threads)  # its updates P steps apart
        firsts.append(mine[0])
    assert sorted(firsts) == list(range(41, 41 + len(firsts)))
    assert clock[R.CLOCK_T] == 50
    taken = sum(1 for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a)
    assert bias[0] == taken / n_threads if n_threads > 1 else bias[0] == 1.0  # mean of copies


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_the_nonzero_check_on_threads_finds_what_a_dense_check_finds(n_threads):
    """Past 2^20 nonzeros per thread the fit's check of X's columns and values splits over
    threads: a bad entry in any thread's share is found, and a sum that overflows is no
    error."""
    import scipy.sparse as sp

    from sparseopt.estimators._safety import check_nonzeros

    n_rows, per_row, n_cols = 400_000, 8, 1000
    rng = np.random.default_rng(0)
    indices = np.sort(rng.integers(0, n_cols, (n_rows, per_row)), axis=1).ravel()
    indptr = np.arange(0, indices.size + 1, per_row)
    X = sp.csr_matrix((np.ones(indices.size, np.float32), indices.astype(np.int32), indptr),
                      shape=(n_rows, n_cols))  # fmt: skip
    check_nonzeros(X, n_threads)
    for position in (0, indices.size // 2 + 1, indices.size - 1):
        for column, pattern in ((n_cols, "column index"), (-1, "column index")):
            bad = X.copy()
            bad.indices[position] = column
            with pytest.raises(ValueError, match=pattern):
                check_nonzeros(bad, n_threads)
        for value, pattern in ((np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "infinity")):
            bad = X.copy()
            bad.data[position] = value
            with pytest.raises(ValueError, match=pattern):
                check_nonzeros(bad, n_threads)
    big = X.copy()
    big.data[:] = np.finfo(np.float32).max  # finite values whose sum is not
    check_nonzeros(big, n_threads)
