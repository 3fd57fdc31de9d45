"""MatrixFactorization with side features (issue 27): the hybrid update against NumPy, the
identity-only model against plain matrix factorization, cold users and items, bad input."""

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose

import sparseopt
from sparseopt import MatrixFactorization
from sparseopt.optim import SGD, AdaGrad, Adam

K = 3


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _reference(loss, A, C, x, n_epochs, lr, alpha_f, alpha_b, init_std, seed, rule="sgd"):
    """Plain NumPy steps of the hybrid model for one interaction (user 0, item 0, value x),
    repeated ``n_epochs`` times; for BPR the negative is item 1 (the only other item).
    ``A``, ``C``: dense feature maps (identity included). ``rule``: "sgd", or "adagrad" with
    per-coordinate accumulators on the biases and one per factor row (fed ``|g|^2 / K``),
    all starting at 1. Returns the tables."""
    rng = np.random.RandomState(seed)
    E = rng.normal(0.0, init_std, A.shape[1] * K).reshape(-1, K)
    D = rng.normal(0.0, init_std, C.shape[1] * K).reshape(-1, K)
    beta, gamma = np.zeros(A.shape[1]), np.zeros(C.shape[1])
    acc = {name: np.ones(n) for name, n in (("beta", A.shape[1]), ("gamma", C.shape[1]),
                                             ("E", A.shape[1]), ("D", C.shape[1]))}  # fmt: skip

    def step(name, w, g, rows):
        if rule == "sgd":
            return w - lr * g
        if w.ndim == 2:  # one accumulator per factor row
            acc[name] += rows * (g**2).sum(axis=1) / K
            return w - lr * g / (np.sqrt(acc[name]) + 1e-10)[:, None]
        acc[name] += rows * g**2
        return w - lr * g / (np.sqrt(acc[name]) + 1e-10)

    mu = x if loss == "squared" else 0.0
    for _ in range(n_epochs):
        p, qi, qj = A[0] @ E, C[0] @ D, C[1] @ D
        si = A[0] @ beta + C[0] @ gamma + p @ qi
        if loss == "squared":
            di, dj, user_grad = si + mu - x, 0.0, (si + mu - x) * qi
            beta_grad = A[0] * di + alpha_b * beta * (A[0] != 0)
        else:  # bpr: s_ui - s_uj, the user biases cancel
            d = x * _sigmoid(-(si - (A[0] @ beta + C[1] @ gamma + p @ qj)))
            di, dj, user_grad = -d, d, -d * qi + d * qj
            beta_grad = np.zeros_like(beta)
        coef = C[0] * di + C[1] * dj  # a feature of both items: one summed gradient
        item_rows = (C[0] != 0) | ((C[1] != 0) & (dj != 0.0))
        user_rows = A[0] != 0
        E_grad = np.outer(A[0], user_grad) + alpha_f * E * user_rows[:, None]
        D_grad = (np.outer(coef, p) + alpha_f * D) * item_rows[:, None]
        gamma_grad = (coef + alpha_b * gamma) * item_rows
        bias_rows = user_rows if loss == "squared" else np.zeros_like(user_rows)
        E, D = step("E", E, E_grad, user_rows), step("D", D, D_grad, item_rows)
        beta = step("beta", beta, beta_grad, bias_rows)
        gamma = step("gamma", gamma, gamma_grad, item_rows)
    return beta, E, gamma, D


def _factor_rows(side):
    """A side's factors as (n_rows, K), per-element or per-row state."""
    if side.factors.shape[1] == K + 1:
        return side.factors[:, :K]
    return side.factors[:, 0].reshape(-1, K)


@pytest.mark.parametrize("rule", ["sgd", "adagrad"])
@pytest.mark.parametrize("loss", ["squared", "bpr"])
def test_hybrid_steps_match_a_dense_numpy_reference(loss, rule):
    # one user with two weighted features, two items sharing feature 0: the shared feature
    # takes one step with the summed gradient (BPR), weights scale every gradient
    U = sp.csr_matrix([[0.5, 2.0]])
    I = sp.csr_matrix([[1.0, 0.5], [0.3, 0.0]])
    X = sp.csr_matrix(([4.0], ([0], [0])), shape=(1, 2))
    params = dict(lr=0.1, alpha_f=0.05, alpha_b=0.02, init_std=0.5, seed=3)
    optimizer = (SGD(learning_rate=params["lr"]) if rule == "sgd" else
                 AdaGrad(learning_rate=params["lr"], initial_accumulator_value=1.0))  # fmt: skip
    mf = MatrixFactorization(
        K, loss=loss, optimizer=optimizer,
        alpha_factors=params["alpha_f"], alpha_biases=params["alpha_b"], max_iter=4,
        init_std=params["init_std"], random_state=params["seed"],
    ).fit(X, user_features=U, item_features=I)  # fmt: skip
    A = np.hstack([U.toarray(), np.eye(1)])
    C = np.hstack([I.toarray(), np.eye(2)])
    beta, E, gamma, D = _reference(loss, A, C, 4.0, 4, rule=rule, **params)
    tables = mf.tables_  # one row per feature, then the identities
    for side, bias, factors in (("user", beta, E), ("item", gamma, D)):
        assert_allclose(tables[side].bias[:, 0], bias, rtol=1e-5, atol=1e-7)
        assert_allclose(_factor_rows(tables[side]), factors, rtol=1e-5, atol=1e-7)
    initial = _reference(loss, A, C, 4.0, 0, rule=rule, **params)
    assert np.abs(D - initial[3]).max() > 1e-3 and np.abs(E - initial[1]).max() > 1e-3


@pytest.mark.parametrize(
    ("loss", "history", "alpha_factors"),
    [("squared", False, 0.1), ("warp", False, 0.1), ("warp", True, 0.0), ("squared", True, 0.0)],
)
def test_identity_features_alone_are_plain_matrix_factorization(loss, history, alpha_factors):
    # with user histories the two put the factor penalty on different vectors (the whole
    # user vector, or the features' rows alone): without it, they take the same steps
    X = sp.random(30, 20, density=0.25, format="csr", random_state=0)
    X.data = 1 + 4 * X.data
    params = dict(n_components=4, loss=loss, max_iter=3, random_state=0, user_history=history,
                  alpha_factors=alpha_factors)  # fmt: skip
    plain = MatrixFactorization(**params).fit(X)
    hybrid = MatrixFactorization(**params).fit(
        X, user_features=sp.csr_matrix((30, 0)), item_features=sp.csr_matrix((20, 0))
    )
    users, items = np.divmod(np.arange(600), 20)
    assert_allclose(hybrid.predict(users, items), plain.predict(users, items), rtol=1e-5)
    assert_allclose(hybrid.item_factors_, plain.item_factors_, rtol=1e-5, atol=1e-7)
    active = np.diff(X.indptr) > 0  # (plain MF's user_factors_ keep the initial vectors)
    assert_allclose(hybrid.user_factors_[active], plain.user_factors_[active], rtol=1e-5,
                    atol=1e-7)  # fmt: skip
    if history:
        assert_allclose(hybrid.history_factors_, plain.history_factors_, rtol=1e-5, atol=1e-7)


def _two_tastes(n_users=80, n_items=60, seed=0):
    """Users of taste 0 or 1 interact with items of the same genre: the features explain
    everything. Returns X, user features (taste one-hot), item features (genre one-hot)."""
    rng = np.random.RandomState(seed)
    taste, genre = rng.randint(2, size=n_users), rng.randint(2, size=n_items)
    likes = (taste[:, None] == genre[None, :]) & (rng.rand(n_users, n_items) < 0.3)
    onehot = lambda v: sp.csr_matrix(np.eye(2)[v])  # noqa: E731
    return sp.csr_matrix(likes.astype(np.float32)), onehot(taste), onehot(genre), taste, genre


def test_cold_items_and_new_users_are_scored_from_their_features():
    X, U, I, taste, genre = _two_tastes()
    warm = np.arange(40)  # items 40..59 never appear in training
    mf = MatrixFactorization(8, loss="warp", max_iter=5, random_state=0)
    mf.fit(X[:, warm], user_features=U, item_features=I[warm])
    cold = I[40:]
    top = mf.recommend(np.arange(80), n=5, item_features=cold)  # rows of `cold`
    assert (genre[40:][top] == taste[:, None]).mean() > 0.95
    scores = mf.predict(np.repeat(np.arange(80), 20), np.tile(np.arange(20), 80),
                        item_features=cold)  # fmt: skip
    match = (taste[:, None] == genre[None, 40:]).ravel()
    assert scores[match].mean() > scores[~match].mean() + 0.5
    # users never seen, from their taste alone, among the fitted items
    new_users = sp.csr_matrix(np.eye(2))
    top_new = mf.recommend(user_features=new_users, n=5)
    assert (genre[top_new] == np.arange(2)[:, None]).all()


def test_hogwild_threads_train_the_feature_rows_too():
    X, U, I, taste, genre = _two_tastes()
    mf = MatrixFactorization(8, loss="warp", max_iter=5, random_state=0, n_jobs=2)
    mf.fit(X[:, :40], user_features=U, item_features=I[:40])
    top = mf.recommend(np.arange(80), n=5, item_features=I[40:])
    assert (genre[40:][top] == taste[:, None]).mean() > 0.9


def test_features_reach_only_models_fitted_with_them():
    X, U, I, *_ = _two_tastes(20, 15)
    plain = MatrixFactorization(4, max_iter=1, random_state=0).fit(X)
    with pytest.raises(ValueError, match="fitted without side features"):
        plain.predict([0], [0], item_features=I[:1])
    hybrid = MatrixFactorization(4, max_iter=1, random_state=0).fit(X, item_features=I)
    with pytest.raises(ValueError, match="fitted with 0 user feature columns"):
        hybrid.recommend(user_features=U[:1])  # users had their identity alone
    with pytest.raises(ValueError, match="has 3 columns, but the model was fitted with 2"):
        hybrid.predict([0], [0], item_features=sp.csr_matrix((1, 3)))
    with pytest.raises(ValueError, match="fitted without side features: call fit"):
        plain.partial_fit(X, item_features=I)
    with pytest.raises(ValueError, match="has 3 columns, but the model was fitted with 2"):
        hybrid.partial_fit(X, item_features=sp.csr_matrix((15, 3)))


def test_a_model_with_features_saves_loads_and_refuses_a_damaged_map(tmp_path):
    X, U, I, *_ = _two_tastes(20, 15)
    mf = MatrixFactorization(4, max_iter=2, random_state=0, user_history=True).fit(
        X, user_features=U, item_features=I)  # fmt: skip
    mf.save(tmp_path / "mf.npz")
    loaded = sparseopt.load(tmp_path / "mf.npz")
    users, items = np.divmod(np.arange(300), 15)
    assert_allclose(loaded.predict(users, items), mf.predict(users, items))
    assert_allclose(loaded.recommend(user_features=U[:3]), mf.recommend(user_features=U[:3]))
    loaded.partial_fit(X, user_features=U)
    arrays, attributes = mf._saved()
    damages = {"item_map_indices": (lambda a: a + 100, "out of range"),
               "user_map_data": (lambda a: -a, "user feature map is damaged"),
               "feature_columns": (lambda a: a + 1, "does not fit 20 users")}  # fmt: skip
    for key, (damage, match) in damages.items():
        bad = dict(arrays, **{key: damage(arrays[key])})
        with pytest.raises(ValueError, match=match):
            MatrixFactorization._from_file(mf.get_params(), dict(attributes), bad)


def test_partial_fit_folds_in_new_users_and_items():
    X, U, I, taste, genre = _two_tastes()
    mf = MatrixFactorization(8, loss="warp", max_iter=5, random_state=0)
    mf.fit(X[:60, :40], user_features=U[:60], item_features=I[:40])
    before = mf.predict([0, 1], [2, 3])
    # users 60..79 and items 40..59 arrive with their interactions and features
    mf.partial_fit(X, user_features=U, item_features=I)
    assert (mf.n_users_, mf.n_items_) == (80, 60)
    assert mf.tables_["user"].n_rows == 2 + 80  # feature rows, then one identity per user
    assert not np.allclose(mf.predict([0, 1], [2, 3]), before)
    top = mf.recommend(np.arange(60, 80), n=5)
    assert (genre[top] == taste[60:, None]).mean() > 0.9
    # without features, new users have their identity alone
    wider = sp.vstack([X, X[:5]], format="csr")
    mf.partial_fit(wider)
    assert mf.n_users_ == 85 and mf.tables_["user"].n_rows == 2 + 85
    assert mf.user_factors_.shape == (85, 8) and mf.item_biases_.shape == (60,)


@pytest.mark.parametrize(
    ("user_features", "params", "match"),
    [
        (sp.csr_matrix(np.ones((19, 2))), {}, "user_features has 19 rows, but X has 20 users"),
        (np.full((20, 2), np.nan), {}, "NaN"),
        (sp.csr_matrix(-np.ones((20, 2))), {}, "user_features has negative weights"),
        (sp.csr_matrix((20, 2)), {"user_identity": False}, "user 0 has no features"),
    ],
)
def test_bad_side_features_are_refused_and_leave_the_model_as_it_was(user_features, params,
                                                                     match):  # fmt: skip
    X, *_ = _two_tastes(20, 15)
    mf = MatrixFactorization(4, max_iter=1, random_state=0, **params)
    with pytest.raises(ValueError, match=match):
        mf.fit(X, user_features=user_features)
    assert not hasattr(mf, "tables_")


def test_command_line_features_files_and_unknown_users(tmp_path, capsys):
    from sparseopt.cli import main

    X, _, _, taste, genre = _two_tastes(40, 30)
    users, items = X.nonzero()
    (tmp_path / "r.csv").write_text("user,item,rating\n" + "".join(
        f"{u + 100},{i + 500},1\n" for u, i in zip(users, items, strict=True)))  # fmt: skip
    (tmp_path / "u.csv").write_text("user,taste\n" + "".join(
        f"{u + 100},t{t}\n" for u, t in enumerate(taste)))  # fmt: skip
    (tmp_path / "i.csv").write_text("item,genre,empty\n" + "".join(
        f"{i + 500},g{g},\n" for i, g in enumerate(genre)))  # fmt: skip
    (tmp_path / "new.csv").write_text("user,taste\n999,t0\n998,t1\n")
    model = tmp_path / "run" / "model.npz"
    train = ["train", str(tmp_path / "r.csv"), "--model", "mf", "--loss", "warp", "--epochs",
             "5", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main([*train, "--user-features", str(tmp_path / "u.csv"),
                 "--item-features", str(tmp_path / "i.csv")]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["recommend", str(model), "--users", "999,998,12345", "--n", "3",
                 "--user-features", str(tmp_path / "new.csv")]) == 0  # fmt: skip
    captured = capsys.readouterr()
    lines = [line.split(",") for line in captured.out.splitlines()[1:]]
    for user, want in (("999", 0), ("998", 1)):
        assert [genre[int(i) - 500] for u, _, i, _ in lines if u == user] == [want] * 3
    assert "1 unknown users given the items of largest bias" in captured.err
    # new items scored from their features: by predict, and as candidates of recommend
    (tmp_path / "new_items.csv").write_text("item,genre\n900,g0\n901,g1\n")
    (tmp_path / "pairs.csv").write_text("999,900\n999,901\n998,900\n998,901\n12345,901\n")
    features = ["--user-features", str(tmp_path / "new.csv"),
                "--item-features", str(tmp_path / "new_items.csv")]  # fmt: skip
    out = tmp_path / "scores.txt"
    assert main(["predict", str(model), str(tmp_path / "pairs.csv"), "--out", str(out),
                 *features]) == 0  # fmt: skip
    assert "(1 pairs with an unknown id" in capsys.readouterr().out
    s = np.loadtxt(out)
    assert s[0] > s[1] and s[3] > s[2]  # taste 0 likes genre 0, taste 1 genre 1
    user = next(u for u in range(40) if taste[u] == 1)
    assert main(["recommend", str(model), "--users", str(user + 100), "--n", "40",
                 features[2], features[3]]) == 0  # fmt: skip
    ranked = [line.split(",")[2] for line in capsys.readouterr().out.splitlines()[1:]]
    assert ranked.index("901") < ranked.index("900")
    assert main(["evaluate", str(model), str(tmp_path / "pairs.csv"), *features]) == 1
    assert "ranking metrics of an implicit model" in capsys.readouterr().err
    bad_files = {"user,taste\n100,t0\n100,t1\n": "user id 100 has more than one",
                 "user,taste\n100,t0\n7777,t1\n": "user id 7777 does not appear"}
    for text, match in bad_files.items():
        (tmp_path / "bad.csv").write_text(text)
        assert main([*train, "--user-features", str(tmp_path / "bad.csv")]) == 1
        assert match in capsys.readouterr().err


def test_dask_fit_takes_side_features():
    # an in-process cluster: the workers may share the tables, so this runs the path (tables,
    # touched rows, merges) without proving the merge's arithmetic
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    import sparseopt.dask as sd

    X, U, I, taste, genre = _two_tastes()
    Xd = da.from_array(X[:, :40], chunks=(20, -1), asarray=False)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster, distributed.Client(cluster) as client:  # fmt: skip
        mf = sd.fit(MatrixFactorization(8, loss="warp", max_iter=5, random_state=0), Xd,
                    user_features=U, item_features=I[:40], client=client)  # fmt: skip
    assert mf.tables_["user"].n_rows == 2 + 80
    top = mf.recommend(np.arange(80), n=5, item_features=I[40:])
    assert (genre[40:][top] == taste[:, None]).mean() > 0.9


def test_dask_merge_of_feature_tables_is_the_accumulator_weighted_mean():
    # two workers train copies of one training on their own users; every table (user and
    # item features, item histories) is shared, so each row merges as the mean of the
    # copies' vectors weighted by their AdaGrad accumulators, the accumulators averaged
    import copy

    import sparseopt.dask as sd

    X, U, I, *_ = _two_tastes(30, 20)
    training = MatrixFactorization(K, loss="warp", random_state=0).start_training(
        X, user_features=U, item_features=I
    )
    before = {name: training.table(name).copy() for name in training.tables()}
    results = []
    for block, (lo, hi) in enumerate(((0, 15), (15, 30))):
        worker = copy.deepcopy(training)
        segment = (block, lo, 0, X[lo:hi].nnz, 7 + block, 0)
        steps, _, touched, changed = sd._train_segments(worker, [X[lo:hi], None], [segment],
                                                        "features-merge")  # fmt: skip
        results.append({"touched": touched, "changed": changed, "clock_steps": steps})
    sd._merge(training, results)
    assert set(training.tables()) == {f"{side}.{part}" for side in ("user", "item", "history")
                                      for part in ("bias", "factors")}  # fmt: skip
    for name in training.tables():
        n_params = 1 if name.endswith("bias") else K  # per-row AdaGrad: one accumulator a row
        copies = np.stack([r["changed"][name][1] for r in results]).astype(np.float64)
        weights = copies[:, :, n_params]
        expected = (weights[:, :, None] * copies[:, :, :n_params]).sum(0) / weights.sum(0)[:, None]
        merged = training.table(name)
        assert_allclose(merged[:, :n_params], expected, rtol=1e-5, atol=1e-8)
        assert_allclose(merged[:, n_params], weights.mean(0), rtol=1e-6)
        if name not in ("user.bias", "history.bias"):  # WARP steps neither
            assert not np.allclose(merged, before[name])


def test_user_histories_with_fewer_user_feature_rows_than_users():
    # users are their 2 taste features alone: the epoch's user-by-user order must count the
    # 80 users, not the 2 rows of the user table
    X, U, I, taste, genre = _two_tastes()
    mf = MatrixFactorization(8, loss="warp", max_iter=5, user_identity=False, random_state=0)
    mf.fit(X, user_features=U, item_features=I)
    assert mf.tables_["user"].n_rows == 2 and mf.tables_["history"].n_rows == 60
    assert (genre[mf.recommend(np.arange(80), n=5)] == taste[:, None]).mean() > 0.9


@pytest.mark.parametrize(("opt", "tables_of"), [(Adam(), AdaGrad()), (AdaGrad(), Adam())])
def test_the_kernel_refuses_stamps_that_disagree_with_its_lazy_flag(opt, tables_of):
    """As plain MF's kernel: every catch-up sits under the kernel's lazy flag, so the
    tables of a rule of the other kind (stamps or none) are refused before any step."""
    from sparseopt.estimators._mf import _new_side
    from sparseopt.estimators._mf_features import csr_tuple
    from sparseopt.models._mf import LOSSES
    from sparseopt.models._mf_features import mf_features_train_range
    from sparseopt.optim import _rules as R

    X = sp.csr_matrix(np.eye(4, dtype=np.float32))
    rng = np.random.RandomState(0)
    tables = (_new_side(n, K, tables_of, rng, 0.3, False).kernel_view() for n in (4, 4, 0))
    rows = (csr_tuple(sp.identity(4, format="csr")),) * 2
    coo = X.tocoo()
    data = (coo.row.astype(np.int32), coo.col.astype(np.int32), coo.data,
            X.indptr.astype(np.int64), X.indices.astype(np.int32), np.arange(X.nnz))  # fmt: skip
    train = mf_features_train_range(opt.rule, LOSSES["squared"], opt.needs_stamp, False, False)
    optimizer = (opt.hyperparameters(), opt.schedule_spec(), np.zeros(R.CLOCK_SIZE))
    with pytest.raises(ValueError, match="stamps do not match the kernel's lazy flag"):
        train(0, X.nnz, 1, 0, (*tables, *rows), data, (0.0, 0.0, 0.0, K, 1, 30, False),
              optimizer)  # fmt: skip
