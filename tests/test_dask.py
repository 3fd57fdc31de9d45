"""sparseopt.dask on an in-process LocalCluster of 2 single-thread workers."""

import copy
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import log_loss, mean_squared_error

from sparseopt import (
    FFMClassifier,
    FMClassifier,
    FMRegressor,
    MatrixFactorization,
    SparseLinearRegression,
    SparseLogisticRegression,
    load,
)
from sparseopt.datasets import (
    column_fields,
    load_movielens_split,
    make_ctr,
    read_criteo,
    sample_path,
)

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
sd = pytest.importorskip("sparseopt.dask")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster, distributed.Client(cluster) as c:  # fmt: skip
        yield c


@pytest.fixture(scope="module")
def ctr():
    data = make_ctr(4000, n_fields=8, n_bits=10, n_test=2000, random_state=0, dtype=np.float64)
    X = sp.csr_matrix(data.X)
    return data, X


@pytest.fixture(scope="module")
def ctr_pairs():
    """make_ctr with planted interactions, in the FM layout and the field-aware one."""
    kw = dict(n_fields=8, n_bits=12, interactions=1.0, n_test=4000, random_state=0)
    return make_ctr(8000, **kw), make_ctr(8000, field_aware=True, **kw)


def _dask(X, y, n_blocks):
    rows = -(-X.shape[0] // n_blocks)
    Xd = da.from_array(X, chunks=(rows, -1), asarray=False)
    return Xd.persist(), da.from_array(np.asarray(y), chunks=(rows,)).persist()


def _logloss(model, data):
    return log_loss(data.y_test, model.predict_proba(data.X_test)[:, 1])


def test_import_sparseopt_does_not_import_dask():
    code = "import sparseopt, sys; assert not {'dask', 'distributed'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_merge_table_weights_by_accumulator():
    base = np.array([[1.0, 1.0], [0.0, 2.0], [5.0, 1.0]])
    # worker 0 moves rows 0 and 1, worker 1 row 0 only; row 2 untouched
    updates = [
        (np.array([0, 1]), np.array([[3.0, 3.0], [4.0, 6.0]])),
        (np.array([0]), np.array([[-1.0, 2.0]])),
    ]
    merged = sd.merge_table(base, updates, accumulator=0)
    assert merged[0, 0] == pytest.approx((3 * 3 + 2 * -1) / (3 + 2))
    assert merged[0, 1] == pytest.approx((3 + 2) / 2)
    assert merged[1, 0] == pytest.approx((6 * 4 + 2 * 0) / (6 + 2))
    assert merged[1, 1] == pytest.approx((6 + 2) / 2)
    np.testing.assert_array_equal(merged[2], base[2])
    plain = sd.merge_table(base, updates, accumulator=None)
    np.testing.assert_allclose(plain[0], [1.0, 2.5])
    np.testing.assert_allclose(plain[1], [2.0, 4.0])
    alone = sd.merge_table(base, updates[:1], accumulator=0)
    np.testing.assert_array_equal(alone[:2], updates[0][1])


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("accumulator", [None, 0])
def test_merge_table_equals_its_formula_on_many_rows(accumulator, ordered, threads, monkeypatch):
    # three workers, their rows in any order or increasing (as a worker reports them), merged
    # in one thread or in three ranges of rows; factor-vector rows: 3 parameters, then the
    # slots (the accumulator first)
    monkeypatch.setattr(sd, "_SPLIT_MERGE", 1 if threads > 1 else 1 << 40)
    monkeypatch.setattr(sd.numba, "get_num_threads", lambda: threads)
    rng = np.random.default_rng(0)
    base = rng.random((5000, 5)).astype(np.float32)
    updates = []
    for _ in range(3):
        rows = rng.choice(5000, 3000, replace=False)
        rows = np.sort(rows) if ordered else rows
        updates.append((rows, rng.random((rows.size, 5)).astype(np.float32)))
    merged = sd.merge_table(base, updates, accumulator=accumulator, n_params=3)
    copies = np.repeat(base[None].astype(np.float64), 3, axis=0)
    for k, (rows, values) in enumerate(updates):
        copies[k, rows] = values
    expected = copies.mean(axis=0)
    if accumulator is not None:
        G = copies[:, :, 3:4]
        expected[:, :3] = (G * copies[:, :, :3]).sum(axis=0) / G.sum(axis=0)
    assert merged.dtype == np.float32
    np.testing.assert_allclose(merged, expected, rtol=1e-5)


def test_merge_table_refuses_bad_updates():
    base = np.zeros((4, 2))
    good = (np.array([0, 1]), np.ones((2, 2)))
    for rows, values, message in [
        (np.array([2, 0, 2]), np.ones((3, 2)), "twice"),
        (np.array([1, 4]), np.ones((2, 2)), "outside 0 .. 3"),
        (np.array([-1]), np.ones((1, 2)), "outside 0 .. 3"),
        (np.array([1, 2]), np.ones((2, 3)), "shape"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            sd.merge_table(base, [good, (rows, values)], accumulator=0)
    for n_params, accumulator in [(0, None), (2, 0), (1, 1), (1, -1)]:  # columns outside the rows
        with pytest.raises(ValueError, match="do not fit a table of 2 columns"):
            sd.merge_table(base, [good], accumulator=accumulator, n_params=n_params)
    for update, message in [((None, np.ones((4, 2))), "mix"), ((None, np.ones((4, 3))), "shape"),
                            ((None, np.ones((4, 2), np.float32)), "dtype")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            sd.merge_table(base, [update] if message != "mix" else [good, update], accumulator=0)


def test_take_and_put_rows_equal_fancy_indexing():
    rng = np.random.default_rng(0)
    table = rng.random((50, 3)).astype(np.float32)
    rows = np.sort(rng.choice(50, 20, replace=False))
    np.testing.assert_array_equal(sd._take_rows(table, rows), table[rows])
    values = rng.random((20, 3)).astype(np.float32)
    expected = table.copy()
    expected[rows] = values
    sd._put_rows(table, rows, values)
    np.testing.assert_array_equal(table, expected)
    for bad in (np.array([3, 50]), np.array([-1, 3])):
        with pytest.raises(IndexError, match="outside 0 .. 49"):
            sd._take_rows(table, bad)
        with pytest.raises(IndexError, match="outside 0 .. 49"):
            sd._put_rows(table, bad, values[:2])
        np.testing.assert_array_equal(table, expected)  # nothing written
    with pytest.raises(ValueError, match="shape"):
        sd._put_rows(table, rows, values[:, :2])


def test_union_is_sorted_and_distinct():
    rng = np.random.default_rng(0)
    parts = [np.sort(rng.choice(1000, 300, replace=False)) for _ in range(3)]
    parts += [np.empty(0, np.int64), np.array([999, 0, 0, 5])]
    np.testing.assert_array_equal(sd._union(parts), np.unique(np.concatenate(parts)))
    assert sd._union([np.empty(0, np.int64)]).size == 0


@pytest.mark.parametrize("classes", [[0, 1], [0, 1, 2]])
def test_touched_rows_of_a_whole_block_and_of_some_rows(ctr, classes):
    # a whole block's stored entries are marked at once, a part of it row by row: both give
    # the table rows of the columns the rows hold (K per feature for K outputs)
    data, X = ctr
    y = np.arange(600) % len(classes)
    training = SparseLogisticRegression().start_training(X[:0], classes=classes)
    rows = training.rows(X[:600], y)
    K = 1 if len(classes) == 2 else len(classes)
    order = np.random.default_rng(0).permutation(600)
    for part in (order, order[:250], order[:0]):
        columns = np.unique(X[:600][part].indices)
        expected = (columns[:, None] * K + np.arange(K)).ravel()
        touched = training.touched(rows, part)
        np.testing.assert_array_equal(touched["table"], expected)
        assert touched["bias"] is None


def test_persisted_collections_are_not_persisted_again(client, ctr):
    data, X = ctr
    Xd, yd = _dask(X, data.y, 4)
    (X2, y2), futures = sd._persisted(client, [Xd, yd])
    assert X2 is Xd and y2 is yd
    assert sorted(futures) == sorted([k[0] for k in Xd.__dask_keys__()] + yd.__dask_keys__())
    lazy = da.from_array(X, chunks=(1000, -1), asarray=False)
    [persisted], futures = sd._persisted(client, [lazy])
    assert persisted is not lazy and len(futures) == 4


def test_touched_rows_merge_like_whole_tables(ctr):
    # two workers' copies trained on their blocks: the rows each reports as changed hold every
    # row it moved, so merging only those rows equals merging the whole tables
    data, X = ctr
    training = SparseLogisticRegression(random_state=0).start_training(X[:0], classes=[0, 1])
    start = {name: training.table(name).copy() for name in training.tables()}
    reports = []
    for k, (lo, hi) in enumerate([(0, 1500), (1500, 4000)]):
        copy_k = copy.deepcopy(training)
        fit_id = f"test-touched-{k}"
        try:
            segments = [(0, lo, 0, hi - lo, 0, 0)]
            *_, changed = sd._train_segments(
                copy_k, [X[lo:hi], data.y[lo:hi]], segments, fit_id, False
            )
        finally:
            sd._forget(fit_id)
        reports.append((copy_k, changed))
    for name, (n_params, accumulator, _) in training.tables().items():
        whole = [(np.arange(start[name].shape[0]), c.table(name)) for c, _ in reports]
        deltas = [changed[name] for _, changed in reports]
        for (rows, _), (_, table) in zip(deltas, whole, strict=True):
            moved = np.flatnonzero((table != start[name]).any(axis=1))
            assert moved.size and np.isin(moved, rows).all()
        merged = sd.merge_table(start[name], deltas, accumulator, n_params)
        np.testing.assert_array_equal(merged, sd.merge_table(start[name], whole, accumulator,
                                                             n_params))  # fmt: skip
        tables = [(None, c.table(name)) for c, _ in reports]  # as workers in this process send
        np.testing.assert_array_equal(merged, sd.merge_table(start[name], tables, accumulator,
                                                             n_params))  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("n_workers", [1, 2, 3, 9])  # 9: a 64-bit mark of workers per row
@pytest.mark.parametrize("accumulator", [None, 0])
def test_whole_tables_merge_like_their_changed_rows(accumulator, n_workers, threads, dtype,
                                                    monkeypatch):  # fmt: skip
    # workers in the driver's process send whole tables: the merge finds the rows each changed
    # (any bit of the row) and gives, bit for bit, what the list of those rows gives
    monkeypatch.setattr(sd, "_SPLIT_MERGE", 1 if threads > 1 else 1 << 40)
    monkeypatch.setattr(sd.numba, "get_num_threads", lambda: threads)
    rng = np.random.default_rng(1)
    base = rng.random((5000, 5)).astype(dtype)
    base[rng.choice(5000, 500, replace=False)] = 0.0
    tables, updates = [], []
    for _ in range(n_workers):
        table = base.copy()
        rows = np.sort(rng.choice(5000, 3000, replace=False))
        table[rows, rng.integers(0, 5, rows.size)] = rng.random(rows.size)
        table[rows[:5], 3] = -0.0  # a sign bit alone changes a row too
        tables.append((None, table))
        updates.append((np.flatnonzero((table.view(np.uint8) != base.view(np.uint8)).any(1)),
                        None))  # fmt: skip
    updates = [(rows, t[rows]) for (rows, _), (_, t) in zip(updates, tables, strict=True)]
    expected = sd.merge_table(base, updates, accumulator=accumulator, n_params=3)
    merged = base.copy()
    delta = sd._merge_rows(merged, tables, accumulator, n_params=3)
    assert merged.dtype == dtype and delta == [(None, merged)]
    np.testing.assert_array_equal(merged.view(np.uint8), expected.view(np.uint8))


def test_workers_in_this_process_send_whole_tables(client, ctr, monkeypatch):
    # the client's workers are threads of this process: a linear fit finds no touched rows
    # (its workers send their whole tables), and learns as the rows would have it
    data, X = ctr
    Xd, yd = _dask(X, data.y, 4)
    params = dict(max_iter=2, tol=None, random_state=0)
    sent, found, merge, touched = [], [], sd._merge_tables, sd._touched
    monkeypatch.setattr(sd, "_merge_tables", lambda *a: sent.append(1) or merge(*a))
    monkeypatch.setattr(sd, "_touched", lambda *a: found.append(1) or touched(*a))
    model = sd.fit(SparseLogisticRegression(**params), Xd, yd, merge_every=None)
    assert not found
    assert len(sent) == 2 * 2  # two epochs, two tables (weights and intercepts)
    local = SparseLogisticRegression(**params).fit(X, data.y)
    assert abs(model.score(X, data.y) - local.score(X, data.y)) < 0.02
    for _ in range(100):  # the workers forget the fit (not waited for by fit)
        if not any((sd._MODELS, sd._ROWS, sd._ORDERS)):
            break
        time.sleep(0.05)
    assert not any((sd._MODELS, sd._ROWS, sd._ORDERS))


def test_one_block_equals_local_training(client, ctr):
    data, X = ctr
    params = dict(max_iter=2, tol=None, shuffle=False, batch_size=4)
    local = SparseLogisticRegression(**params).fit(X, data.y)
    Xd, yd = _dask(X, data.y, 1)
    model = sd.fit(SparseLogisticRegression(**params), Xd, yd, merge_every=None)
    np.testing.assert_array_equal(model.state_.table, local.state_.table)
    np.testing.assert_array_equal(model.state_.bias, local.state_.bias)
    assert model.t_ == local.t_ == 2 * 1000
    np.testing.assert_allclose(model.loss_curve_, local.loss_curve_, rtol=1e-12)


def test_learns_like_sequential_and_predicts_lazily(client, ctr, tmp_path):
    data, X = ctr
    params = dict(max_iter=3, tol=None, random_state=0)
    local = SparseLogisticRegression(**params).fit(X, data.y)
    Xd, yd = _dask(X, data.y, 4)
    model = sd.fit(SparseLogisticRegression(**params), Xd, yd, merge_every=200)
    start = log_loss(data.y_test, np.full(data.y_test.size, data.y.mean()))
    assert _logloss(model, data) < start - 0.02
    assert abs(_logloss(model, data) - _logloss(local, data)) < 0.01
    assert model.t_ == local.t_ and model.n_iter_ == 3
    proba = sd.predict(model, Xd, "predict_proba")
    assert isinstance(proba, da.Array)
    np.testing.assert_allclose(proba.compute(), model.predict_proba(X))
    labels = sd.predict(model, Xd)
    np.testing.assert_array_equal(labels.compute(), model.predict(X))
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(load(tmp_path / "m.npz").predict(X), model.predict(X))
    assert model.partial_fit(X[:100], data.y[:100]).t_ == local.t_ + 100


def test_multinomial(client, ctr):
    data, X = ctr
    y = np.digitize(data.proba, [0.2, 0.35]).astype(np.int64)  # 3 classes
    params = dict(max_iter=2, tol=None, random_state=0, batch_size=8)
    local = SparseLogisticRegression(**params).fit(X, y)
    model = sd.fit(SparseLogisticRegression(**params), *_dask(X, y, 4), merge_every=50)
    assert model.coef_.shape == (3, X.shape[1]) and list(model.classes_) == [0, 1, 2]
    assert model.score(X, y) > local.score(X, y) - 0.03


def test_regression_float32(client):
    rng = np.random.default_rng(0)
    X = sp.random(2000, 30, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    y = X @ rng.normal(size=30) + 0.5
    Xd, yd = _dask(X, y, 4)
    model = sd.fit(
        SparseLinearRegression(learning_rate=0.5, max_iter=5, random_state=0), Xd, yd,
        merge_every=50,
    )  # fmt: skip
    assert model.state_.table.dtype == np.float32
    assert model.score(X, y) > 0.95


FM_CASES = {
    "FMClassifier": lambda **p: FMClassifier(**p),
    "FMClassifier-element": lambda **p: FMClassifier(factor_state="element", **p),
    "FMRegressor": lambda **p: FMRegressor(learning_rate=0.02, **p),  # 0/1 targets, 3 epochs
    "FFMClassifier": lambda **p: FFMClassifier(fields=column_fields(12, 8), **p),
}


@pytest.mark.parametrize("name", FM_CASES)
def test_fm_learns_like_sequential(client, ctr_pairs, name, tmp_path):
    data = ctr_pairs[name.startswith("FFM")]
    params = dict(max_iter=3, tol=None, random_state=0)
    local = FM_CASES[name](**params).fit(data.X, data.y)
    Xd, yd = _dask(data.X, data.y, 4)
    model = sd.fit(FM_CASES[name](**params), Xd, yd, merge_every=200)
    assert model.t_ == local.t_ == 3 * 8000 and model.n_iter_ == 3
    if name == "FMRegressor":
        mse = [mean_squared_error(data.y_test, m.predict(data.X_test)) for m in (local, model)]
        assert mse[1] < np.var(data.y_test) - 0.01 and mse[1] < mse[0] + 0.005
    else:
        start = log_loss(data.y_test, np.full(data.y_test.size, data.y.mean()))
        assert _logloss(model, data) < start - 0.03
        assert abs(_logloss(model, data) - _logloss(local, data)) < 0.01, (
            _logloss(model, data),
            _logloss(local, data),
        )
    np.testing.assert_allclose(sd.predict(model, Xd).compute(), model.predict(data.X))
    model.save(tmp_path / "m.npz")
    loaded = load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(data.X_test), model.predict(data.X_test))


def test_fm_one_block_equals_local_training(client, ctr_pairs):
    data = ctr_pairs[0]
    # init_std given: "auto" reads the rows' mean number of features, which the Dask front
    # end, starting from a template without rows, does not have (it assumes 39)
    params = dict(max_iter=2, tol=None, shuffle=False, batch_size=4, init_std=0.01,
                  random_state=0)  # fmt: skip
    local = FMClassifier(**params).fit(data.X, data.y)
    model = sd.fit(FMClassifier(**params), *_dask(data.X, data.y, 1), merge_every=None)
    for name in ("table", "bias", "factors"):
        np.testing.assert_array_equal(getattr(model.state_, name), getattr(local.state_, name))


def test_fm_merge_counts_undrawn_vectors_as_drawn():
    """A worker that never met a feature counts with the vector it would have drawn."""
    est = FMClassifier(n_components=3, random_state=0)
    training = est.start_training(sp.csr_matrix((0, 10)), classes=[0, 1])
    state = training.state
    drawer = copy.deepcopy(training)
    drawer.prepare_merge([{"table": [4]}])
    worker = drawer.state
    drawn = worker.factors[4].copy()  # [v_1, v_2, v_3, G0]
    g0 = drawn[3]
    worker.factors[4] += [0.5, 0.5, 0.5, 3.0]
    moved = {"table": (np.array([4]), worker.table[[4]]), "bias": (np.array([0]), worker.bias),
             "factors": (np.array([4]), worker.factors[[4]])}  # fmt: skip
    idle = {name: (np.zeros(0, np.int64), v[:0]) for name, (_, v) in moved.items()}
    results = [
        {"touched": {"table": np.array([4])}, "changed": moved, "clock_steps": 1},
        {"touched": {"table": np.zeros(0, np.int64)}, "changed": idle, "clock_steps": 1},
    ]
    delta = sd._merge(training, results)
    # G = G0 + 3 for the worker that moved it, G0 for the one that holds the drawn vector
    moved_share = (g0 + 3) / (2 * g0 + 3)
    np.testing.assert_allclose(state.factors[4, :3], drawn[:3] + 0.5 * moved_share, rtol=1e-6)
    assert state.factors[4, 3] == pytest.approx((2 * g0 + 3) / 2)
    assert not state.factors[np.arange(10) != 4].any()  # nothing drawn that no one met
    [(rows, _)] = delta["tables"]["factors"]
    np.testing.assert_array_equal(rows, [4])


def test_from_files(client):
    paths = [sample_path("train"), sample_path("valid")]
    X, y = sd.from_files(paths, read_criteo, n_bits=12)
    assert X.numblocks == (2, 1) and X.dtype == np.float32
    model = sd.fit(SparseLogisticRegression(max_iter=1, tol=None), X, y, merge_every=2000)
    assert model.t_ == 25_000 and list(model.classes_) == [0.0, 1.0]
    X_valid, y_valid = read_criteo(paths[1], n_bits=12).read()
    assert log_loss(y_valid, model.predict_proba(X_valid)) < log_loss(
        y_valid, np.full(y_valid.size, y_valid.mean())
    )
    np.testing.assert_array_equal(sd.predict(model, X).compute()[-5000:], model.predict(X_valid))
    proba = sd.predict(model, X, "predict_proba")  # X's row counts were unknown: now known
    assert proba.chunks[0] == (20_000, 5_000)
    X_train, _ = read_criteo(paths[0], n_bits=12).read()
    np.testing.assert_allclose(proba[:5].compute(), model.predict_proba(X_train[:5]))


def test_large_model_and_labels_are_scattered_not_in_the_graph(client):
    data = make_ctr(2000, n_fields=4, n_bits=21, random_state=0, dtype=np.float64)
    model = SparseLogisticRegression(max_iter=1, tol=None).fit(data.X, data.y)  # 32 MiB
    Xd = da.from_array(data.X, chunks=(500, -1), asarray=False).persist()
    y = np.tile(data.y, 2000)  # labels of 16 MiB
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*large graph")
        proba = sd.predict(model, Xd, "predict_proba").compute()
        np.testing.assert_array_equal(proba, model.predict_proba(data.X))
        yd = sd._scatter_rows(client, y, (y.size // 2, y.size // 2))
        np.testing.assert_array_equal(yd[-2000:].compute(), data.y)
    assert sd.fit(SparseLogisticRegression(max_iter=1), Xd, data.y).t_ == 2000  # y: NumPy


def test_failed_task_is_retried(client, ctr, monkeypatch):
    data, X = ctr
    Xd, yd = _dask(X, data.y, 4)
    params = dict(max_iter=1, tol=None, shuffle=False)
    clean = sd.fit(SparseLogisticRegression(**params), Xd, yd, merge_every=300)
    # tasks get a pickled copy of the function: keep its memory in the (imported) module
    monkeypatch.setattr(sd, "_test_memory", [sd._train_round], raising=False)

    def flaky(*args):
        sd._test_memory.append(1)
        if len(sd._test_memory) == 3:
            raise OSError("simulated failure")
        return sd._test_memory[0](*args)

    monkeypatch.setattr(sd, "_train_round", flaky)
    model = sd.fit(SparseLogisticRegression(**params), Xd, yd, merge_every=300)
    assert len(sd._test_memory) > 3
    np.testing.assert_allclose(model.state_.table, clean.state_.table, rtol=1e-12)
    assert model.t_ == clean.t_ == 4000


def test_slow_scheduler_is_not_a_lost_worker(client, ctr, monkeypatch):
    """A round outlasts the waits' timeouts while the client's cached view of the scheduler
    lists no workers (``Client.scheduler_info`` when the scheduler is slow to answer, as while
    a worker thread compiles the kernels): the round is waited for, not retried."""
    data, X = ctr
    Xd, yd = _dask(X, data.y, 2)
    monkeypatch.setattr(type(client), "scheduler_info", lambda self, **kw: {"workers": {}})
    monkeypatch.setattr(sd, "_test_memory", [sd._train_round], raising=False)

    def slow(*args):
        sd._test_memory.append(1)
        time.sleep(1.2)  # past the first two waits (0.5 s, then 0.5 s more)
        return sd._test_memory[0](*args)

    monkeypatch.setattr(sd, "_train_round", slow)
    model = sd.fit(SparseLogisticRegression(max_iter=1, tol=None), Xd, yd, client=client)
    assert len(sd._test_memory) == 3  # one round of two tasks, none retried
    assert model.t_ == 4000


def test_unreachable_scheduler_loses_no_worker():
    class Unreachable:
        scheduler = SimpleNamespace(identity=None)

        def sync(self, *args, **kwargs):
            raise OSError("Timed out trying to connect")

    assert sd._live_workers(Unreachable(), ["tcp://w:1"]) == {"tcp://w:1"}


def test_lost_worker_round_is_rerun(ctr, monkeypatch):
    """A worker leaves mid-round: its blocks are recomputed elsewhere and the round rerun."""
    data, X = ctr
    with distributed.LocalCluster(
        n_workers=3, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster, distributed.Client(cluster) as c:  # fmt: skip
        Xd, yd = _dask(X, data.y, 6)
        monkeypatch.setattr(sd, "_test_memory", [sd._train_round], raising=False)

        def dying(*args):
            if len(sd._test_memory) == 1:
                sd._test_memory.append(1)
                worker = distributed.get_worker()
                threading.Thread(target=worker.loop.add_callback, args=(worker.close,)).start()
                time.sleep(3)
            return sd._test_memory[0](*args)

        monkeypatch.setattr(sd, "_train_round", dying)
        model = sd.fit(SparseLogisticRegression(max_iter=1, tol=None), Xd, yd, client=c)
        assert len(sd._test_memory) == 2 and len(c.scheduler_info(n_workers=-1)["workers"]) == 2
        assert model.t_ == 4000  # every block's rows trained once
        assert _logloss(model, data) < log_loss(data.y_test, np.full(2000, data.y.mean()))


def test_killed_worker_process_round_is_rerun(ctr, monkeypatch):
    """Worker processes die (os._exit) in a round, once while training and once holding its
    result: their blocks are recomputed, the round is rerun, every row is trained once."""
    data, X = ctr
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster, distributed.Client(cluster) as c:  # fmt: skip
        Xd, yd = _dask(X, data.y, 4)
        gather, calls, killed, lost = sd._gather_round, [], [], []

        async def die():  # runs in the worker's event loop, beside the training task
            os._exit(1)

        def kill(client, address):
            """Kill the worker and wait until the scheduler has dropped it: a kill that lands
            late (a loaded machine) would otherwise hit a later round, or none."""
            client.run(die, workers=[address], wait=False)
            deadline = time.monotonic() + 120
            while address in client.sync(client.scheduler.identity, n_workers=-1)["workers"]:
                assert time.monotonic() < deadline, f"worker {address} still alive after 120 s"
                time.sleep(0.05)
            killed.append(address)

        def kill_then_gather(client, futures, workers):
            calls.append(len(calls))
            if len(calls) in (1, 4):  # a round's tasks are submitted: kill one of its workers
                if len(calls) == 4:
                    distributed.wait(futures)  # its result is computed, not yet gathered
                kill(client, sorted(workers)[0])
            try:
                return gather(client, futures, workers)
            except Exception:
                lost.append(len(calls))
                raise

        monkeypatch.setattr(sd, "_gather_round", kill_then_gather)
        params = dict(max_iter=1, tol=None, random_state=0)  # rounds of 2 x 300 rows
        model = sd.fit(SparseLogisticRegression(**params), Xd, yd, merge_every=300, client=c)
        assert {1, 4} <= set(lost)  # both kills cost their round an attempt: the rounds reran
    assert model.t_ == 4000  # no block skipped, none trained twice
    local = SparseLogisticRegression(**params).fit(X, data.y)
    assert abs(_logloss(model, data) - _logloss(local, data)) < 0.01


def test_errors(client, ctr):
    data, X = ctr
    Xd, yd = _dask(X, data.y, 2)
    with pytest.raises(ValueError, match="ftrl"):
        sd.fit(SparseLogisticRegression(optimizer="ftrl"), Xd, yd)
    with pytest.raises(ValueError, match="Only binary"):  # the FM's own check, on the driver
        sd.fit(FMClassifier(), Xd, da.from_array(np.arange(4000) % 3, chunks=2000))
    with pytest.raises(ValueError, match="early_stopping"):
        sd.fit(SparseLogisticRegression(early_stopping=True), Xd, yd)
    with pytest.raises(ValueError, match="merge_every"):
        sd.fit(SparseLogisticRegression(), Xd, yd, merge_every=0)
    with pytest.raises(ValueError, match="same row blocks"):
        sd.fit(SparseLogisticRegression(), Xd, da.from_array(data.y, chunks=1000))
    model = SparseLogisticRegression(max_iter=1)
    with pytest.raises(ValueError, match="at least two classes"):
        sd.fit(model, Xd, da.zeros(4000, chunks=2000))
    with pytest.raises(ValueError, match="not in classes"):  # raised on a worker
        sd.fit(model, Xd, yd, classes=[0, 2], retries=0)
    assert not hasattr(model, "state_")


@pytest.mark.parametrize("retries", [0, 2])
def test_rounds_that_keep_losing_workers_give_up_after_the_retries(client, ctr, monkeypatch,
                                                                  retries):  # fmt: skip
    """A round whose workers are lost on every try is tried ``retries + 1`` times, then the
    fit raises WorkerLostError saying so; the estimator is left unfitted."""
    data, X = ctr
    Xd, yd = _dask(X, data.y, 2)
    tries = []

    def lose(client, futures, workers):
        tries.append(sorted(workers))
        client.cancel(futures)
        raise sd.WorkerLostError(f"worker {sorted(workers)[0]} left")

    monkeypatch.setattr(sd, "_gather_round", lose)
    model = SparseLogisticRegression(max_iter=1, random_state=0)
    with pytest.raises(sd.WorkerLostError, match=f"lost workers {retries + 1} times in a row"):
        sd.fit(model, Xd, yd, retries=retries, client=client)
    assert len(tries) == retries + 1
    assert not hasattr(model, "state_")


# -- matrix factorization: users split by block, item (and history) rows merged -------------
def _ratings(n_users=600, n_items=120, seed=0, noise=0.7):
    """Low-rank ratings 1..5 on 20% of the pairs, a fifth of them held out: (train, test)."""
    rng = np.random.default_rng(seed)
    P, Q = rng.normal(0, 0.6, (n_users, 3)), rng.normal(0, 0.6, (n_items, 3))
    R = 3.5 + rng.normal(0, 0.4, (n_users, 1)) + rng.normal(0, 0.5, n_items) + P @ Q.T
    R = np.clip(np.round(R + rng.normal(0, noise, R.shape)), 1, 5).astype(np.float32)
    observed = rng.random(R.shape) < 0.2
    held = observed & (rng.random(R.shape) < 0.2)
    return sp.csr_matrix(R * (observed & ~held)), sp.csr_matrix(R * held)


def _interactions(n_users=240, n_items=90, seed=0):
    """Implicit positives, likelier for pairs of high low-rank affinity, a fifth held out:
    (train, test positives, test negatives as (users, items) never interacted with)."""
    rng = np.random.default_rng(seed)
    P, Q = rng.normal(0, 1, (n_users, 3)), rng.normal(0, 1, (n_items, 3))
    positive = rng.random((n_users, n_items)) < 1 / (1 + np.exp(-(1.5 * P @ Q.T - 2.5)))
    held = positive & (rng.random(positive.shape) < 0.2)
    negatives = np.argwhere(~positive)
    negatives = negatives[rng.choice(len(negatives), held.sum(), replace=False)]
    return sp.csr_matrix((positive & ~held).astype(np.float32)), held, negatives.T


def _rmse(model, test):
    c = test.tocoo()
    return np.sqrt(mean_squared_error(c.data, model.predict(c.row, c.col)))


def _auc(model, held, negatives):
    """AUC of held-out positives against never-seen pairs."""
    pos, neg = model.predict(*np.nonzero(held)), model.predict(*negatives)
    return (pos[:, None] > neg[None, :]).mean()


def _rows_of(X, n_blocks):
    return da.from_array(X, chunks=(-(-X.shape[0] // n_blocks), -1), asarray=False).persist()


def test_mf_learns_like_local_fit(client):
    train, test = _ratings()
    params = dict(n_components=4, random_state=0)
    local = MatrixFactorization(**params).fit(train)
    model = sd.fit(MatrixFactorization(**params), _rows_of(train, 4), merge_every=1000)
    constant = np.sqrt(np.mean((test.data - train.data.mean()) ** 2))
    assert _rmse(local, test) < constant - 0.15  # the fits learn (1.07 -> 0.87)...
    # ...and the same: local fits with other seeds spread by 0.013 here
    assert abs(_rmse(model, test) - _rmse(local, test)) < 0.02
    assert model.n_iter_ == 5 and len(model.loss_curve_) == 5
    assert model.loss_curve_[-1] < model.loss_curve_[0]
    # one step per rating, as in the local fit: the clock counts the data seen
    assert model.tables_["clock"][0] == local.tables_["clock"][0] == 5 * train.nnz


def test_mf_implicit_with_user_history_learns_like_local_fit(client):
    train, held, negatives = _interactions()
    params = dict(n_components=4, loss="warp", random_state=0)  # 20 epochs
    local = MatrixFactorization(**params).fit(train)
    model = sd.fit(MatrixFactorization(**params), _rows_of(train, 4), merge_every=None)
    assert model.history_factors_ is not None  # loss="warp" adds the history rows (merged)
    assert _auc(local, held, negatives) > 0.8  # 0.5: chance
    assert abs(_auc(model, held, negatives) - _auc(local, held, negatives)) < 0.03
    assert model.n_iter_ == 20


@pytest.mark.parametrize("optimizer", ["adagrad", "momentum"])
def test_mf_user_rows_come_from_their_worker(client, optimizer):
    """One block per worker, one merge per epoch: a user's row is what the worker holding
    the user trained, even where the other worker's catch-up (momentum) moved its copy."""
    train, _ = _ratings()
    params = dict(n_components=4, max_iter=1, random_state=0, optimizer=optimizer,
                  learning_rate=0.02)  # fmt: skip
    half = train.shape[0] // 2
    workers = sorted(client.scheduler_info()["workers"])
    blocks = [train[:half], train[half:]]
    # hash=False: the [momentum] case scatters the same blocks as [adagrad], whose release
    # of the same keys would cancel them
    futures = [
        client.scatter(b, workers=[w], hash=False)
        for b, w in zip(blocks, workers, strict=True)
    ]  # fmt: skip
    Xd = da.concatenate([
        da.from_delayed(f, shape=b.shape, dtype=b.dtype, meta=b[:0])
        for f, b in zip(futures, blocks, strict=True)
    ])  # fmt: skip
    model = sd.fit(MatrixFactorization(**params), Xd, merge_every=None)
    per_user = 1 if optimizer == "adagrad" else 4  # factor rows: one vector, or one per element
    for b, block in enumerate(blocks):  # each worker's round, as sparseopt.dask runs it
        training = MatrixFactorization(**params).start_training(train)
        rows = training.rows(block, first_row=b * half)
        training.epoch(rows, training.order(rows, np.random.default_rng([0, 0, b])))
        training.catch_up()
        trained, merged = training.state["user"], model.tables_["user"]
        mine = np.arange(b * half, b * half + block.shape[0])
        np.testing.assert_array_equal(merged.bias[mine], trained.bias[mine])
        factor_rows = (mine[:, None] * per_user + np.arange(per_user)).ravel()
        np.testing.assert_array_equal(merged.factors[factor_rows], trained.factors[factor_rows])


def test_mf_refuses_y(client):
    train, _ = _ratings()
    Xd = _rows_of(train, 2)
    with pytest.raises(ValueError, match="X alone: leave y out"):
        sd.fit(MatrixFactorization(), Xd, da.ones(train.shape[0], chunks=Xd.chunks[0]))
    with pytest.raises(ValueError, match="merge_every"):
        sd.fit(MatrixFactorization(), Xd, merge_every="often")


ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


@pytest.mark.shared_data("ml-100k/u1.base", "ml-100k/u1.test")
def test_mf_movielens_u1_within_0005_of_local_fit(client):
    train, test = load_movielens_split(ML100K, "u1")
    params = dict(n_components=32, random_state=0)
    local = MatrixFactorization(**params).fit(train)
    model = sd.fit(MatrixFactorization(**params), _rows_of(train, 4))  # merge_every="auto"
    assert _rmse(local, test) < 0.95
    assert abs(_rmse(model, test) - _rmse(local, test)) <= 0.005
