from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from reference import DenseOptimizer
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from sparseopt import MatrixFactorization, load
from sparseopt.optim import FTRL, SGD, AdaGrad, Adam, Momentum, RMSProp

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
needs_data = pytest.mark.shared_data("ml-100k")

# predict(X) scores the stored entries of X (a matrix shaped like the training one) and
# returns them in a matrix of X's shape; a row of X is the user whose id is its position.
ONE_SCORE_PER_ENTRY = (
    "predict(X) gives one score per stored entry, in a matrix of X's shape (n_users, "
    "n_items); the check asserts one prediction per row, shape (n_samples,). Fitting and "
    "predicting on each sparse format it builds: test_sparse_formats"
)
ROWS_ARE_USERS = (
    "a row of X is the user whose id is its position: a subset or a reordering of the rows "
    "is other users' interactions, scored with their own factors, not the same samples"
)
NOT_APPLICABLE = {
    "check_estimator_sparse_array": ONE_SCORE_PER_ENTRY,
    "check_estimator_sparse_matrix": ONE_SCORE_PER_ENTRY,
    "check_methods_subset_invariance": ROWS_ARE_USERS,
    "check_methods_sample_order_invariance": ROWS_ARE_USERS,
}


def ratings(n_users=60, n_items=40, density=0.25, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n_users, n_items, density=density, format="csr", random_state=seed)
    X.data = rng.integers(1, 6, X.nnz).astype(np.float64)
    return X


@parametrize_with_checks(
    [MatrixFactorization(n_components=4, max_iter=3, random_state=0)],
    expected_failed_checks=lambda est: NOT_APPLICABLE,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("loss", ["squared", "logistic", "bpr", "warp"])
def test_losses_fit_and_rank(loss):
    X = ratings()
    if loss != "squared":
        X.data[:] = 1.0
    mf = MatrixFactorization(n_components=8, loss=loss, max_iter=20, random_state=0).fit(X)
    assert np.isfinite(mf.user_factors_).all() and np.isfinite(mf.item_factors_).all()
    rec = mf.recommend(np.arange(X.shape[0]), n=5)
    assert rec.shape == (X.shape[0], 5)
    seen = X.tolil().rows
    for u, row in enumerate(rec):
        assert not set(row) & set(seen[u])
        assert len(set(row)) == 5


def test_squared_fits_training_data():
    X = ratings()
    mf = MatrixFactorization(n_components=8, max_iter=50, alpha_factors=0.0, random_state=0)
    mf.fit(X)
    coo = X.tocoo()
    train_rmse = np.sqrt(np.mean((mf.predict(coo.row, coo.col) - coo.data) ** 2))
    baseline = np.sqrt(np.mean((coo.data - coo.data.mean()) ** 2))
    assert train_rmse < 0.5 * baseline


def test_deterministic_under_random_state():
    X = ratings()
    a = MatrixFactorization(n_components=4, random_state=3).fit(X)
    b = MatrixFactorization(n_components=4, random_state=3).fit(X)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    np.testing.assert_array_equal(a.item_biases_, b.item_biases_)


@pytest.mark.parametrize(
    "opt",
    [
        SGD(0.01),
        AdaGrad(0.05, weight_decay=0.01),
        RMSProp(0.01),
        Momentum(0.005),
        Adam(0.01),
        Adam(0.01, lazy="decay", weight_decay=0.01),
    ],
    ids=repr,
)
def test_optimizers(opt):
    X = ratings()
    mf = MatrixFactorization(n_components=4, optimizer=opt, max_iter=10, random_state=0).fit(X)
    coo = X.tocoo()
    pred = mf.predict(coo.row, coo.col)
    assert np.isfinite(pred).all()
    assert np.sqrt(np.mean((pred - coo.data) ** 2)) < np.std(coo.data)
    if opt.needs_stamp:  # everything caught up: every row stamped with the final step
        t = mf.tables_["clock"][0]
        assert (mf.tables_["user"].stamp == t).all() and (mf.tables_["item"].stamp == t).all()


def test_hogwild_threads():
    X = ratings(200, 100, 0.2)
    mf = MatrixFactorization(n_components=8, max_iter=10, n_jobs=2, random_state=0).fit(X)
    assert mf.tables_["clock"][0] == 10 * X.nnz  # one step per rating, whichever thread's
    coo = X.tocoo()
    assert np.sqrt(np.mean((mf.predict(coo.row, coo.col) - coo.data) ** 2)) < np.std(coo.data)


def test_bad_input():
    X = ratings()
    with pytest.raises(ValueError, match="no interactions"):
        MatrixFactorization().fit(sp.csr_matrix((5, 4)))
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MatrixFactorization().fit(bad)
    with pytest.raises(ValueError, match="negative"):
        MatrixFactorization(loss="bpr").fit(-X)
    with pytest.raises(ValueError, match="device"):
        MatrixFactorization(device="cuda").fit(X)
    with pytest.raises(ValueError, match="FTRL"):
        MatrixFactorization(optimizer=FTRL()).fit(X)
    mf = MatrixFactorization(n_components=4, max_iter=2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="out of range"):
        mf.predict([0, X.shape[0]], [0, 1])
    with pytest.raises(ValueError, match="out of range"):
        mf.predict([0], [-1])
    with pytest.raises(ValueError, match="out of range"):
        mf.recommend([X.shape[0]])
    with pytest.raises(ValueError, match="integer"):
        mf.predict([0.5], [1])
    with pytest.raises(ValueError, match="differ in length"):
        mf.predict([0, 1], [0])


def test_cold_start_rows_use_biases():
    X = ratings().tolil()
    X[3, :] = 0  # an empty row: a user with no interactions
    X = X.tocsr()
    X.eliminate_zeros()
    mf = MatrixFactorization(n_components=4, max_iter=5, random_state=0).fit(X)
    items = np.arange(X.shape[1])
    expected = np.clip(mf.global_mean_ + mf.item_biases_, *mf.rating_range_)
    np.testing.assert_allclose(mf.predict(np.full(items.size, 3), items), expected, rtol=1e-6)
    by_bias = np.argsort(-mf.item_biases_, kind="stable")[:5]
    np.testing.assert_array_equal(mf.recommend([3], n=5)[0], by_bias)


def test_diverging_learning_rate_names_it():
    from sparseopt import DivergenceError

    X = ratings()
    with pytest.raises(DivergenceError, match="learning_rate"):
        MatrixFactorization(optimizer="sgd", learning_rate=50.0, random_state=0).fit(X * 100)


def test_failed_partial_fit_keeps_state():
    from sparseopt import DivergenceError

    X = ratings()
    mf = MatrixFactorization(n_components=4, optimizer="sgd", learning_rate=0.01, random_state=0)
    mf.fit(X)
    before = mf.predict(np.arange(10), np.arange(10))
    mf.set_params(learning_rate=1e4)
    with pytest.raises(DivergenceError, match="learning_rate=10000.0"):
        mf.partial_fit(X * 100)
    np.testing.assert_array_equal(mf.predict(np.arange(10), np.arange(10)), before)
    assert mf.n_users_ == X.shape[0]


def test_partial_fit_grows_tables():
    X = ratings(30, 20)
    mf = MatrixFactorization(n_components=4, max_iter=5, random_state=0).fit(X)
    Y = ratings(35, 24, seed=1)
    mf.partial_fit(Y)
    assert (mf.n_users_, mf.n_items_, mf.n_features_in_) == (35, 24, 24)
    assert mf.user_factors_.shape == (35, 4) and mf.item_biases_.shape == (24,)
    assert np.isfinite(mf.predict([34], [23])).all()
    fresh = MatrixFactorization(n_components=4, random_state=0).partial_fit(X)
    assert fresh.n_iter_ == 1 and fresh.max_iter == "auto"


def test_partial_fit_refuses_fewer_items():
    X = ratings(30, 20)
    mf = MatrixFactorization(n_components=4, max_iter=2, random_state=0).fit(X)
    before = mf.predict(X)
    with pytest.raises(ValueError, match="X has 19 features, but MatrixFactorization is "
                                         "expecting 20 features as input"):  # fmt: skip
        mf.partial_fit(X[:, :19])
    assert_same_matrix(mf.predict(X), before)
    mf.partial_fit(X[:10])  # fewer users: the others keep their rows
    assert mf.n_users_ == 30


def test_unfitted_partial_fit_leaves_max_iter(monkeypatch):
    """partial_fit on an unfitted model runs fit's path with one epoch: max_iter is never
    changed, not even during the call."""
    seen = []
    fit_epochs = MatrixFactorization._fit

    def spy(self, X, n_epochs, reset, **features):
        seen.append((self.max_iter, n_epochs))
        return fit_epochs(self, X, n_epochs, reset, **features)

    monkeypatch.setattr(MatrixFactorization, "_fit", spy)
    X = ratings()
    one = MatrixFactorization(n_components=4, max_iter=7, random_state=0).partial_fit(X)
    assert seen == [(7, 1)] and one.max_iter == 7 and one.n_iter_ == 1
    fit = MatrixFactorization(n_components=4, max_iter=1, random_state=0).fit(X)
    assert_same_matrix(one.predict(X), fit.predict(X))


def test_auto_defaults():
    X = ratings()
    for loss, rate, epochs in [("squared", 0.08, 5), ("warp", 0.04, 20), ("bpr", 0.05, 15)]:
        mf = MatrixFactorization(n_components=4, loss=loss, random_state=0)
        assert mf.learning_rate == "auto" and mf.max_iter == "auto"
        mf.fit(X)
        assert mf.optimizer_.learning_rate == rate and mf.n_iter_ == epochs
    mf = MatrixFactorization(n_components=4, optimizer=Adam(0.003), max_iter=1).fit(X)
    assert mf.optimizer_.learning_rate == 0.003  # "auto": the object's own rate
    with pytest.raises(ValueError, match="learning_rate"):
        MatrixFactorization(learning_rate=None).fit(X)


def test_file_with_none_parameters_loads(tmp_path):
    """Model files written before "auto" hold None for learning_rate and max_iter."""
    import hashlib
    import json

    X = ratings()
    mf = MatrixFactorization(n_components=4, max_iter=2, random_state=0).fit(X)
    mf.save(tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    arrays.pop("__meta_sha256__")
    meta["params"].update(learning_rate=None, max_iter=None)
    text = json.dumps(meta).encode()
    digest = np.frombuffer(hashlib.sha256(text).hexdigest().encode(), np.uint8)
    np.savez(tmp_path / "old.npz", **arrays, __meta__=np.frombuffer(text, np.uint8),
             __meta_sha256__=digest)  # fmt: skip
    old = load(tmp_path / "old.npz")
    assert old.learning_rate == "auto" and old.max_iter == "auto"
    assert_same_matrix(old.predict(X), mf.predict(X))


def assert_same_matrix(a, b):
    assert type(a) is type(b) and a.shape == b.shape
    if sp.issparse(a):
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        a, b = a.data, b.data
    np.testing.assert_array_equal(a, b)


def test_predict_matrix():
    X = ratings()
    mf = MatrixFactorization(n_components=4, max_iter=3, random_state=0).fit(X)
    coo = X.tocoo()
    pairs = mf.predict(coo.row, coo.col)
    out = mf.predict(X)
    assert isinstance(out, sp.csr_matrix) and out.dtype == np.float64
    np.testing.assert_array_equal(out.indptr, X.indptr)
    np.testing.assert_array_equal(out.indices, X.indices)
    np.testing.assert_array_equal(out.data, pairs)  # X's entries in CSR order
    assert isinstance(mf.predict(sp.csr_array(X)), sp.csr_array)
    assert_same_matrix(sp.csr_matrix(mf.predict(X.toarray())), out)
    np.testing.assert_array_equal(mf.predict(X.tocsc()).toarray(), out.toarray())
    assert_same_matrix(mf.predict(X[:10]), out[:10])  # the first ten users
    # a test matrix: its ratings and their predictions line up entry by entry
    rmse = np.sqrt(np.mean((out - X).data ** 2))
    assert rmse == pytest.approx(np.sqrt(np.mean((pairs - coo.data) ** 2)))
    # repeated pairs are scored once (SciPy sums duplicates); explicit zeros are entries
    dup = sp.coo_matrix(([3.0, 4.0, 0.0], ([0, 0, 1], [2, 2, 3])), shape=X.shape)
    scored = mf.predict(dup)
    assert scored.nnz == 2
    np.testing.assert_array_equal(scored.data, mf.predict([0, 1], [2, 3]))
    with pytest.raises(ValueError, match="X has 39 features, but MatrixFactorization is "
                                         "expecting 40 features as input"):  # fmt: skip
        mf.predict(X[:, :39])
    with pytest.raises(ValueError, match="61 rows.*60 users"):
        mf.predict(sp.vstack([X, X[:1]]))
    with pytest.raises(ValueError, match="Reshape your data.*item_ids"):
        mf.predict([0, 1, 2])
    bad = X.copy()
    bad.data[0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        mf.predict(bad)


def test_sparse_formats():
    """What check_estimator_sparse_{array,matrix} cover, with predict(X)'s shape: fit and
    predict on every sparse format and index width, as sparse matrices and arrays."""
    rng = np.random.RandomState(0)
    dense = rng.uniform(size=(40, 3))
    dense[dense < 0.6] = 0
    reference = MatrixFactorization(n_components=4, max_iter=3, random_state=0)
    expected = reference.fit(sp.csr_matrix(dense)).predict(sp.csr_matrix(dense))
    for container in (sp.csr_matrix, sp.csr_array):
        for fmt in ("csr", "csc", "coo", "dok", "lil", "dia", "bsr"):
            X = container(dense).asformat(fmt)
            widths = (np.int32, np.int64) if fmt in ("csr", "csc", "coo") else (None,)
            for width in widths:
                if width is not None:
                    X = X.copy()
                    if fmt == "coo":
                        X.coords = tuple(c.astype(width) for c in X.coords)
                    else:
                        X.indices, X.indptr = X.indices.astype(width), X.indptr.astype(width)
                mf = clone(reference).fit(X)
                out = mf.predict(X)
                assert out.shape == X.shape and isinstance(out, container), (fmt, width)
                np.testing.assert_array_equal(out.toarray(), expected.toarray(), (fmt, width))


def test_similar_items():
    X = ratings()
    mf = MatrixFactorization(n_components=4, max_iter=5, random_state=0).fit(X)
    sim = mf.similar_items([0, 5], n=3)
    assert sim.shape == (2, 3)
    assert 0 not in sim[0] and 5 not in sim[1]
    q = mf.item_factors_
    cos = q @ q[0] / (np.linalg.norm(q, axis=1) * np.linalg.norm(q[0]))
    cos[0] = -np.inf
    assert sim[0, 0] == np.argmax(cos)


def test_save_load_roundtrip_and_resume(tmp_path):
    X = ratings()
    mf = MatrixFactorization(
        n_components=4, optimizer=Adam(0.01, weight_decay=0.01), max_iter=3, random_state=0
    ).fit(X)
    path = tmp_path / "model.npz"
    mf.save(path)
    loaded = load(path)
    assert loaded.get_params()["n_components"] == 4
    users, items = np.arange(20), np.arange(20)
    np.testing.assert_array_equal(loaded.predict(users, items), mf.predict(users, items))
    np.testing.assert_array_equal(loaded.recommend(users), mf.recommend(users))
    mf.partial_fit(X)
    loaded.partial_fit(X)
    np.testing.assert_array_equal(loaded.predict(users, items), mf.predict(users, items))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_load_rejects_corrupt_files(tmp_path):
    mf = MatrixFactorization(n_components=4, max_iter=1, random_state=0).fit(ratings())
    path = tmp_path / "model.npz"
    mf.save(path)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load(truncated)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load(garbage)


def test_clone_and_pickle():
    import pickle

    mf = MatrixFactorization(n_components=4, optimizer=Adam(0.01), random_state=0)
    assert clone(mf).get_params()["optimizer__learning_rate"] == 0.01
    mf.fit(ratings())
    again = pickle.loads(pickle.dumps(mf))
    np.testing.assert_array_equal(again.predict([1, 2], [3, 4]), mf.predict([1, 2], [3, 4]))


@needs_data
def test_movielens_u1_rmse():
    from sparseopt.datasets._movielens import load_movielens_split

    train, test = load_movielens_split(DATA, "u1")
    mf = MatrixFactorization(random_state=0).fit(train)
    coo = test.tocoo()
    rmse = np.sqrt(np.mean((mf.predict(coo.row, coo.col) - coo.data) ** 2))
    # u1 is the hardest fold; the five-fold mean (benchmarks/bench_mf.py) is lower
    assert rmse < 0.93


@needs_data
def test_movielens_ua_precision_at_10():
    from sparseopt.datasets._movielens import implicit_positives, load_movielens_split
    from sparseopt.metrics import precision_at_k

    train, test = load_movielens_split(DATA, "ua")
    train, test = implicit_positives(train), implicit_positives(test)
    mf = MatrixFactorization(loss="warp", random_state=0).fit(train)
    rec = mf.recommend(np.arange(train.shape[0]), n=10)
    assert precision_at_k(test, rec, 10) >= 0.145  # 0.152 at this seed; LightFM WARP: 0.143


def _kernel_epoch(opt, loss, X, k=3, alpha_b=0.05, alpha_f=0.1, mu=0.0, seed=0, per_row=False,
                  history=False):  # fmt: skip
    """Initial flat weights, the kernel's weights after one epoch, and its interaction order.

    Flat layout: ``[b_u (n_users), b_i (n_items), P (n_users * k), Q (n_items * k)]``, then
    ``Y (n_items * k)`` with ``history``.
    """
    from sparseopt.estimators._mf import _new_side
    from sparseopt.models import _mf as K
    from sparseopt.optim import _rules as R

    rng = np.random.RandomState(seed)
    user = _new_side(X.shape[0], k, opt, rng, 0.3, per_row).kernel_view()
    item = _new_side(X.shape[1], k, opt, rng, 0.3, per_row).kernel_view()
    hist = _new_side(X.shape[1] if history else 0, k, opt, rng, 0.3, per_row).kernel_view()

    def flat():
        f = (lambda s: s[1][:, :k].ravel()) if per_row else (lambda s: s[1][:, 0])
        return np.concatenate([user[0][:, 0], item[0][:, 0], f(user), f(item), f(hist)])

    w0 = flat().astype(np.float64)
    coo = X.tocoo()
    data = (coo.row.astype(np.int32), coo.col.astype(np.int32), coo.data.astype(np.float32),
            X.indptr.astype(np.int64), X.indices.astype(np.int32))  # fmt: skip
    order = np.arange(X.nnz, dtype=np.int64)
    K.mf_epoch_order(order, data[0], X.shape[0], history, 7)
    train = K.mf_train_range(opt._rule, K.LOSSES[loss], user[2].size > 0, per_row, history)
    hp, spec, clock = opt.hyperparameters(), opt.schedule_spec(), np.zeros(R.CLOCK_SIZE)
    status, _ = K.mf_train_epoch(
        train, 1, 7, (user, item, hist), data + (order,),
        (mu, alpha_b, alpha_f, k, 1, 30, per_row), hp, spec, clock, True,
    )  # fmt: skip
    assert status == K.OK
    for side in (user, item, hist):  # a lazy rule's pending steps: the weights become dense
        if side[2].size:
            K.mf_catch_up(opt._rule, per_row)(hp, spec, clock, side, k)
    return w0, flat(), order, data


@pytest.mark.parametrize("opt", [SGD(learning_rate=0.05), AdaGrad(learning_rate=0.1)])
def test_squared_update_matches_dense_reference(opt):
    """Each rating is one dense optimizer step on the gradient of its penalized loss."""
    X = ratings(n_users=5, n_items=4, density=0.6)
    k, ab, af, mu = 3, 0.05, 0.1, 3.0
    w0, w, order, (users, items, values, _, _) = _kernel_epoch(opt, "squared", X, k, ab, af, mu)
    n_u, n_i = X.shape
    dense = DenseOptimizer(opt, w0)
    for n in order:
        u, i, x = users[n], items[n], values[n]
        bu, bi = u, n_u + i
        p = n_u + n_i + u * k + np.arange(k)
        q = n_u + n_i + n_u * k + i * k + np.arange(k)
        ref = dense.w
        d = mu + ref[bu] + ref[bi] + ref[p] @ ref[q] - x
        g = np.concatenate([[d + ab * ref[bu], d + ab * ref[bi]], d * ref[q] + af * ref[p],
                            d * ref[p] + af * ref[q]])  # fmt: skip
        dense.step(np.concatenate([[bu, bi], p, q]), g)
    np.testing.assert_allclose(w, dense.w, rtol=1e-4, atol=1e-6)
    assert not np.allclose(w, w0)


def _factor_positions(shape, k, u, i, j):
    """Positions of ``p_u``, ``q_i`` and ``q_j`` in :func:`_kernel_epoch`'s flat layout."""
    n_u, n_i = shape
    first_q = n_u + n_i + n_u * k
    return (n_u + n_i + u * k + np.arange(k), first_q + i * k + np.arange(k),
            first_q + j * k + np.arange(k))  # fmt: skip


def test_bpr_update_matches_dense_reference():
    """BPR: one dense AdaGrad step on ``log(1 + exp(-(s_ui - s_uj)))`` plus L2 per positive.

    Every user misses exactly one of three items, so the drawn negative is known.
    """
    X = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=np.float64))
    opt, k, ab, af = AdaGrad(learning_rate=0.1), 3, 0.05, 0.1
    w0, w, order, (users, items, values, _, _) = _kernel_epoch(opt, "bpr", X, k, ab, af)
    n_u, n_i = X.shape
    dense = DenseOptimizer(opt, w0)
    dense_X = X.toarray()
    for n in order:
        u, i, x = users[n], items[n], values[n]
        j = int(np.flatnonzero(dense_X[u] == 0)[0])
        p, qi, qj = _factor_positions(X.shape, k, u, i, j)
        r = dense.w
        diff = r[n_u + i] - r[n_u + j] + r[p] @ (r[qi] - r[qj])
        d = -x / (1.0 + np.exp(diff))  # derivative of x log(1 + e^{-diff}) in diff
        g = np.concatenate([[d + ab * r[n_u + i], -d + ab * r[n_u + j]],
                            d * (r[qi] - r[qj]) + af * r[p], d * r[p] + af * r[qi],
                            -d * r[p] + af * r[qj]])  # fmt: skip
        dense.step(np.concatenate([[n_u + i, n_u + j], p, qi, qj]), g)
    np.testing.assert_allclose(w, dense.w, rtol=1e-4, atol=1e-6)
    assert not np.allclose(w, w0)


@pytest.mark.parametrize("opt", [AdaGrad(learning_rate=0.1),
                                 Momentum(learning_rate=0.05, momentum=0.9, weight_decay=0.1)])
def test_warp_update_matches_dense_reference(opt):
    """WARP: with no violating negative, a step is a zero-gradient step for every row (a
    rule with momentum or weight decay still moves them); with one, a dense step on
    ``L(r) (1 - s_ui + s_uj)`` plus L2, the user bias absent.

    Users 1 and 3 hold every item (no negative can be drawn); the others miss exactly one of
    three items, drawn on the first trial, where it violates the margin (scores near 0).
    """
    X = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 0, 1]],
                               dtype=np.float64))  # fmt: skip
    k, ab, af = 3, 0.05, 0.1
    w0, w, order, (users, items, values, _, _) = _kernel_epoch(opt, "warp", X, k, ab, af)
    n_u, n_i = X.shape
    dense = DenseOptimizer(opt, w0)
    dense_X = X.toarray()
    for n in order:
        u, i, x = users[n], items[n], values[n]
        missing = np.flatnonzero(dense_X[u] == 0)
        if missing.size == 0:
            dense.step(np.zeros(0, np.int64), np.zeros(0))
            continue
        j = int(missing[0])
        p, qi, qj = _factor_positions(X.shape, k, u, i, j)
        r = dense.w
        s_ui = r[n_u + i] + r[p] @ r[qi]
        s_uj = r[n_u + j] + r[p] @ r[qj]
        assert s_uj > s_ui - 1.0  # the first draw violates the margin
        d = x * np.log(n_i - 1)  # L(r) with r = floor((n_items - 1) / 1)
        g = np.concatenate([[-d + ab * r[n_u + i], d + ab * r[n_u + j]],
                            d * (r[qj] - r[qi]) + af * r[p], -d * r[p] + af * r[qi],
                            d * r[p] + af * r[qj]])  # fmt: skip
        dense.step(np.concatenate([[n_u + i, n_u + j], p, qi, qj]), g)
    np.testing.assert_allclose(w, dense.w, rtol=1e-4, atol=1e-6)
    assert not np.allclose(w, w0)


@pytest.mark.parametrize("loss", ["squared", "bpr"])
def test_per_row_adagrad_matches_numpy_reference(loss):
    """``factor_state="row"``: per-element AdaGrad on the biases; on each factor vector
    ``G += |g|^2 / k`` and ``v -= eta g / (sqrt(G) + eps)``, all gradients at the old values."""
    if loss == "squared":
        X = ratings(n_users=5, n_items=4, density=0.6)
    else:  # every user misses exactly one of three items: the drawn negative is known
        X = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 0]], np.float64))
    opt = AdaGrad(learning_rate=0.1, initial_accumulator_value=0.5)
    k, ab, af, mu = 3, 0.05, 0.1, (3.0 if loss == "squared" else 0.0)
    w0, w, order, (users, items, values, _, _) = _kernel_epoch(
        opt, loss, X, k, ab, af, mu, per_row=True
    )
    n_u, n_i = X.shape
    eta, eps = opt.learning_rate, opt.epsilon
    b = w0[: n_u + n_i].copy()  # [b_u, b_i]
    P = w0[n_u + n_i : n_u + n_i + n_u * k].reshape(n_u, k).copy()
    Q = w0[n_u + n_i + n_u * k :].reshape(n_i, k).copy()
    Gb = np.full(b.size, 0.5)
    GP, GQ = np.full(n_u, 0.5), np.full(n_i, 0.5)
    dense_X = X.toarray()

    def bias_step(c, g):
        Gb[c] += g * g
        b[c] -= eta * g / (np.sqrt(Gb[c]) + eps)

    def row_step(V, G, r, g):
        G[r] += g @ g / k
        V[r] -= eta * g / (np.sqrt(G[r]) + eps)

    for n in order:
        u, i, x = users[n], items[n], values[n]
        if loss == "squared":
            d = mu + b[u] + b[n_u + i] + P[u] @ Q[i] - x
            gbu, gbi = d + ab * b[u], d + ab * b[n_u + i]
            gp, gq = d * Q[i] + af * P[u], d * P[u] + af * Q[i]
            bias_step(u, gbu)
            bias_step(n_u + i, gbi)
            row_step(P, GP, u, gp)
            row_step(Q, GQ, i, gq)
        else:
            j = int(np.flatnonzero(dense_X[u] == 0)[0])
            diff = b[n_u + i] - b[n_u + j] + P[u] @ (Q[i] - Q[j])
            d = -x / (1.0 + np.exp(diff))
            gbj, gbi = -d + ab * b[n_u + j], d + ab * b[n_u + i]
            gp = d * (Q[i] - Q[j]) + af * P[u]
            gi, gj = d * P[u] + af * Q[i], -d * P[u] + af * Q[j]
            bias_step(n_u + j, gbj)
            bias_step(n_u + i, gbi)
            row_step(P, GP, u, gp)
            row_step(Q, GQ, i, gi)
            row_step(Q, GQ, j, gj)
    expected = np.concatenate([b, P.ravel(), Q.ravel()])
    np.testing.assert_allclose(w, expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(w, w0)


def test_factor_state(tmp_path):
    X = ratings()
    row = MatrixFactorization(n_components=4, max_iter=5, random_state=0).fit(X)
    assert row.factor_state_ == "row" and row.tables_["item"].factors.shape == (40, 5)
    element = MatrixFactorization(n_components=4, max_iter=5, factor_state="element",
                                  random_state=0).fit(X)  # fmt: skip
    assert element.factor_state_ == "element"
    assert element.tables_["item"].factors.shape == (160, 2)
    for mf in (row, element):  # same initial draws, then each its own AdaGrad
        assert mf.item_factors_.shape == (40, 4)
    users, items = np.arange(20), np.arange(20)
    row.save(tmp_path / "row.npz")
    loaded = load(tmp_path / "row.npz")
    assert loaded.factor_state_ == "row"
    row.partial_fit(X)
    loaded.partial_fit(X)
    np.testing.assert_array_equal(loaded.predict(users, items), row.predict(users, items))
    adam = MatrixFactorization(n_components=4, optimizer="adam", max_iter=2).fit(X)
    assert adam.factor_state_ == "element"
    with pytest.raises(ValueError, match="factor_state='row'.*AdaGrad"):
        MatrixFactorization(optimizer="adam", factor_state="row").fit(X)


@pytest.mark.parametrize("per_row", [True, False], ids=["row", "element"])
def test_user_history_matches_numpy_reference(per_row):
    """User histories, BPR: per user block ``e = p_u + c (S - y_i)`` scores each positive
    ``i`` (``S`` the sum of the user's ``y``, ``c = (n_u - 1)^{-1/2}``); ``p_u`` moves as
    ``e`` does; after the block every ``y_m`` of the user steps on ``c sum(g_e) + alpha_f y_m``.
    Every user misses exactly one of four items, so the drawn negative is known."""
    X = sp.csr_matrix(
        np.array([[1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]], float)
    )
    opt = AdaGrad(learning_rate=0.1, initial_accumulator_value=0.5)
    k, ab, af = 3, 0.05, 0.1
    w0, w, order, (users, items, values, _, _) = _kernel_epoch(
        opt, "bpr", X, k, ab, af, per_row=per_row, history=True
    )
    blocks = users[order][np.r_[True, np.diff(users[order]) != 0]]
    assert sorted(blocks) == list(range(X.shape[0]))  # each user's entries in one block
    n_u, n_i = X.shape
    eta, eps = opt.learning_rate, opt.epsilon
    b = w0[: n_u + n_i].copy()
    P, Q, Y = np.split(w0[n_u + n_i :], [n_u * k, (n_u + n_i) * k])
    P, Q, Y = P.reshape(n_u, k).copy(), Q.reshape(n_i, k).copy(), Y.reshape(n_i, k).copy()
    Gb = np.full(b.size, 0.5)
    width = 1 if per_row else k  # AdaGrad accumulators per vector, or per element
    G = {name: np.full((rows, width), 0.5) for name, rows in (("P", n_u), ("Q", n_i), ("Y", n_i))}
    dense_X = X.toarray()

    def bias_step(c, g):
        Gb[c] += g * g
        b[c] -= eta * g / (np.sqrt(Gb[c]) + eps)

    def vector_step(name, V, r, g):
        G[name][r] += g @ g / k if per_row else g * g
        V[r] -= eta * g / (np.sqrt(G[name][r]) + eps)

    def end_block(u):
        for m in X[u].indices:
            vector_step("Y", Y, m, scale * g_sum + af * Y[m])

    current = -1
    for n in order:
        u, i, x = users[n], items[n], values[n]
        if u != current:
            if current >= 0:
                end_block(current)
            current, known = u, X[u].indices
            scale = 1.0 / np.sqrt(known.size - 1)
            S, g_sum = Y[known].sum(axis=0), np.zeros(k)
        j = int(np.flatnonzero(dense_X[u] == 0)[0])
        term = scale * (S - Y[i])
        e = P[u] + term
        diff = b[n_u + i] - b[n_u + j] + e @ (Q[i] - Q[j])
        d = -x / (1.0 + np.exp(diff))
        g_sum += d * (Q[i] - Q[j])
        gbj, gbi = -d + ab * b[n_u + j], d + ab * b[n_u + i]
        ge = d * (Q[i] - Q[j]) + af * e
        gi, gj = d * e + af * Q[i], -d * e + af * Q[j]
        bias_step(n_u + j, gbj)
        bias_step(n_u + i, gbi)
        vector_step("P", P, u, ge)  # the step on e moves p_u alike
        vector_step("Q", Q, i, gi)
        vector_step("Q", Q, j, gj)
    end_block(current)
    expected = np.concatenate([b, P.ravel(), Q.ravel(), Y.ravel()])
    np.testing.assert_allclose(w, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(w[-n_i * k :], w0[-n_i * k :])  # the history vectors learnt


def test_user_history_estimator(tmp_path):
    X = ratings()
    X.data[:] = 1.0
    mf = MatrixFactorization(n_components=4, loss="warp", max_iter=5, random_state=0).fit(X)
    assert mf.history_factors_.shape == (40, 4) and "history" in mf.tables_
    plain = MatrixFactorization(n_components=4, loss="warp", user_history=False).fit(X)
    assert plain.history_factors_ is None and "history" not in plain.tables_
    # the scored user vectors: p_u plus the scaled sum of the user's history vectors
    p = mf._factors("user")
    seen = mf.tables_["seen"].toarray()
    expected = p + (seen @ mf.history_factors_) / np.sqrt(seen.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(mf.user_factors_, expected, rtol=1e-5, atol=1e-6)
    scores = mf.user_factors_[2] @ mf.item_factors_[7] + mf.item_biases_[7] + mf.user_biases_[2]
    np.testing.assert_allclose(mf.predict([2], [7]), [scores], rtol=1e-5)
    # save, load, resume: identical
    mf.save(tmp_path / "mf.npz")
    loaded = load(tmp_path / "mf.npz")
    np.testing.assert_array_equal(loaded.history_factors_, mf.history_factors_)
    mf.partial_fit(X)
    loaded.partial_fit(X)
    np.testing.assert_array_equal(loaded.recommend(np.arange(10)), mf.recommend(np.arange(10)))
    # new users and items grow the history table too
    bigger = ratings(65, 44, seed=1)
    bigger.data[:] = 1.0
    mf.partial_fit(bigger)
    assert mf.history_factors_.shape == (44, 4) and np.isfinite(mf.user_factors_).all()
    # Hogwild: the threads split the epoch between users
    hog = MatrixFactorization(n_components=4, loss="warp", n_jobs=2, random_state=0).fit(X)
    assert np.isfinite(hog.user_factors_).all() and np.isfinite(hog.history_factors_).all()
    with pytest.raises(ValueError, match="weight_decay"):
        MatrixFactorization(loss="warp", optimizer=AdaGrad(0.1, weight_decay=0.01)).fit(X)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_user_history_other_losses(loss):
    X = ratings()
    if loss != "squared":
        X.data[:] = 1.0
    params = dict(n_components=4, loss=loss, user_history=True, max_iter=10,
                  factor_state="element", random_state=0)  # fmt: skip
    mf = MatrixFactorization(**params).fit(X)
    # the same fit at a rate that learns nothing: the starting point, for comparison
    still = MatrixFactorization(**params, learning_rate=1e-12).fit(X)
    assert np.isfinite(mf.user_factors_).all()
    assert np.abs(mf.history_factors_ - still.history_factors_).max() > 0.1
    coo = X.tocoo()
    if loss == "squared":  # the training ratings fitted far better than at the start
        def error(m):
            return np.sqrt(np.mean((m.predict(coo.row, coo.col) - coo.data) ** 2))

        assert error(mf) < 0.8 * error(still)
    else:  # the observed pairs scored above other pairs
        other = (coo.col + 7) % X.shape[1]
        margin = mf.predict(coo.row, coo.col).mean() - mf.predict(coo.row, other).mean()
        assert margin > 0.03


@pytest.mark.parametrize(("optimizer", "rate", "why"), [
    ("sgd", 2.0, "non-finite"),  # the loss overflows
    ("adagrad", 5.0, "far worse than predicting the mean rating"),  # finite but absurd
])  # fmt: skip
def test_absurd_learning_rate_raises_divergence_error(optimizer, rate, why):
    from sparseopt import DivergenceError

    rng = np.random.default_rng(0)
    X = sp.random(300, 200, density=0.1, format="csr", random_state=0)
    X.data[:] = rng.integers(1, 6, X.nnz)
    mf = MatrixFactorization(optimizer=optimizer, learning_rate=rate, max_iter=3, random_state=0)
    with pytest.raises(DivergenceError, match=why) as raised:
        mf.fit(X)
    assert f"learning_rate={rate!r}" in str(raised.value)
    assert not hasattr(mf, "tables_")  # the failed fit left nothing behind


@pytest.mark.parametrize(("opt", "tables_of"), [(Adam(), AdaGrad()), (AdaGrad(), Adam())])
def test_the_kernel_refuses_stamps_that_disagree_with_its_lazy_flag(opt, tables_of):
    """A lazy rule's kernel would read the stamps that tables of a rule without pending
    steps lack, the other kernel would leave a lazy rule's rows behind: both refuse the
    tables of the other kind before the first step (the kernels are those the rules' fits
    compile)."""
    from sparseopt.estimators._mf import _new_side
    from sparseopt.models import _mf as K
    from sparseopt.optim import _rules as R

    X = ratings(n_users=5, n_items=4, density=0.6)
    rng = np.random.RandomState(0)
    sides = tuple(_new_side(n, 3, tables_of, rng, 0.3, False).kernel_view() for n in (5, 4, 0))
    coo = X.tocoo()
    data = (coo.row.astype(np.int32), coo.col.astype(np.int32), coo.data.astype(np.float32),
            X.indptr.astype(np.int64), X.indices.astype(np.int32), np.arange(X.nnz))  # fmt: skip
    train = K.mf_train_range(opt.rule, K.LOSSES["squared"], opt.needs_stamp, False, False)
    optimizer = (opt.hyperparameters(), opt.schedule_spec(), np.zeros(R.CLOCK_SIZE))
    with pytest.raises(ValueError, match="stamps do not match the kernel's lazy flag"):
        train(0, X.nnz, 1, 0, sides, data, (0.0, 0.0, 0.0, 3, 1, 30, False), optimizer)
