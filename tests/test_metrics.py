import math

import numpy as np
import pytest
import scipy.sparse as sp

from sparseopt.metrics import auc_score, mae, ndcg_at_k, precision_at_k, recall_at_k, rmse

# --------------------------------------------------------------------------------------
# Brute-force references: one Python loop per user, written straight from the formulas.
# --------------------------------------------------------------------------------------


def _test_sets(test):
    test = sp.csr_array(test)
    return [set(np.flatnonzero(test[[u]].toarray().ravel())) for u in range(test.shape[0])]


def _ref_lists(test, recommended, k, train=None):
    """Per-user top-k lists: from item ids (dropping train items) or from scores."""
    rec = np.asarray(recommended)
    n_items = test.shape[1]
    train_sets = _test_sets(train) if train is not None else [set()] * test.shape[0]
    lists = []
    for u in range(rec.shape[0]):
        if np.issubdtype(rec.dtype, np.integer):
            items = [int(i) for i in rec[u] if i >= 0 and i not in train_sets[u]]
        else:
            cand = [i for i in range(n_items) if i not in train_sets[u] and rec[u, i] > -np.inf]
            items = sorted(cand, key=lambda i: (-rec[u, i], i))
        lists.append(items[:k])
    return lists


def _ref_metric(name, test, recommended, k, train=None):
    rel = _test_sets(test)
    lists = _ref_lists(test, recommended, k, train)
    vals = []
    for u, items in enumerate(lists):
        t = rel[u]
        if not t:
            vals.append(np.nan)
            continue
        h = [i in t for i in items]
        if name == "precision":
            vals.append(sum(h) / k)
        elif name == "recall":
            vals.append(sum(h) / len(t))
        else:
            dcg = sum(1 / math.log2(r + 2) for r, x in enumerate(h) if x)
            idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(t))))
            vals.append(dcg / idcg)
    return np.array(vals)


def _ref_auc(test, scores, train=None):
    rel = _test_sets(test)
    train_sets = _test_sets(train) if train is not None else [set()] * test.shape[0]
    vals = []
    for u in range(scores.shape[0]):
        cand = [i for i in range(test.shape[1]) if i not in train_sets[u]]
        pos = [i for i in cand if i in rel[u]]
        neg = [i for i in cand if i not in rel[u]]
        if not pos or not neg:
            vals.append(np.nan)
            continue
        tot = 0.0
        for i in pos:
            for j in neg:
                tot += (
                    1.0
                    if scores[u, i] > scores[u, j]
                    else 0.5
                    if scores[u, i] == scores[u, j]
                    else 0
                )
        vals.append(tot / (len(pos) * len(neg)))
    return np.array(vals)


FUNCS = {"precision": precision_at_k, "recall": recall_at_k, "ndcg": ndcg_at_k}


# --------------------------------------------------------------------------------------
# Rating metrics
# --------------------------------------------------------------------------------------


def test_rmse_mae_hand():
    y = [1.0, 2.0, 3.0, 4.0]
    p = [2.0, 2.0, 1.0, 4.0]
    assert rmse(y, p) == pytest.approx(math.sqrt((1 + 0 + 4 + 0) / 4))
    assert mae(y, p) == pytest.approx(3 / 4)


def test_rmse_mae_match_sklearn():
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    rng = np.random.default_rng(0)
    y, p = rng.normal(size=1000), rng.normal(size=1000).astype(np.float32)
    assert rmse(y, p) == pytest.approx(math.sqrt(mean_squared_error(y, p)))
    assert mae(y, p) == pytest.approx(mean_absolute_error(y, p))


@pytest.mark.parametrize(
    "y,p,msg",
    [
        ([1.0, 2.0], [1.0], "differ in length"),
        ([], [], "empty"),
        ([[1.0]], [[1.0]], "1-d"),
        ([1.0, np.nan], [1.0, 2.0], "finite"),
    ],
)
def test_rmse_mae_errors(y, p, msg):
    for f in (rmse, mae):
        with pytest.raises(ValueError, match=msg):
            f(y, p)


# --------------------------------------------------------------------------------------
# Ranking metrics: hand-computed examples
# --------------------------------------------------------------------------------------

TEST = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]]))
SCORES = np.array([[0.9, 0.8, 0.7, 0.1], [0.0, 0.0, 0.0, 0.0], [0.5, 0.4, 0.6, 0.1]])
TRAIN = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]))


def test_hand_item_lists():
    rec = np.array([[0, 1], [2, 3], [3, 2]])
    # user 0: one hit of 2; user 1 has no test item (not counted); user 2: no hit.
    assert precision_at_k(TEST, rec, k=2) == pytest.approx((0.5 + 0.0) / 2)
    assert recall_at_k(TEST, rec, k=2) == pytest.approx((0.5 + 0.0) / 2)
    ndcg0 = 1.0 / (1.0 + 1.0 / math.log2(3))
    assert ndcg_at_k(TEST, rec, k=2) == pytest.approx(ndcg0 / 2)
    per = precision_at_k(TEST, rec, k=2, average=False)
    assert per[0] == 0.5 and np.isnan(per[1]) and per[2] == 0.0
    # k=1 uses only the first column
    assert precision_at_k(TEST, rec, k=1, average=False)[[0, 2]].tolist() == [1.0, 0.0]


def test_hand_scores_and_train():
    # top-2 from scores: user 0 -> [0, 1], user 2 -> [2, 0]
    assert precision_at_k(TEST, SCORES, k=2) == pytest.approx(0.25)
    # training items removed: user 0 -> [0, 2] (2 hits), user 2 -> [0, 1] (1 hit)
    assert precision_at_k(TEST, SCORES, k=2, train=TRAIN) == pytest.approx((1.0 + 0.5) / 2)
    assert recall_at_k(TEST, SCORES, k=2, train=TRAIN) == pytest.approx((1.0 + 1.0) / 2)
    # lists: train items dropped, later items move up
    rec = np.array([[1, 0, 3], [0, 1, 2], [2, 3, 1]])
    assert precision_at_k(TEST, rec, k=1, train=TRAIN, average=False)[[0, 2]].tolist() == [
        1.0,
        0.0,
    ]
    assert precision_at_k(TEST, rec, k=2, train=TRAIN, average=False)[[0, 2]].tolist() == [
        0.5,
        0.5,
    ]


def test_hand_auc():
    # user 0: positives {0 (.9), 2 (.7)} vs negatives {1 (.8), 3 (.1)}: 3 of 4 pairs right.
    # user 2: positive 1 (.4) vs {0 (.5), 2 (.6), 3 (.1)}: 1 of 3.
    assert auc_score(TEST, SCORES) == pytest.approx((3 / 4 + 1 / 3) / 2)
    # with train: user 0 negatives {3} -> 1; user 2 negatives {0, 3} -> 1/2
    assert auc_score(TEST, SCORES, train=TRAIN) == pytest.approx(0.75)
    # ties count one half
    s = np.zeros((3, 4))
    assert auc_score(TEST, s) == pytest.approx(0.5)


def test_ties_broken_by_item_id():
    test = sp.csr_matrix(np.array([[0, 1, 1, 0, 0]]))
    s = np.array([[1.0, 1.0, 1.0, 1.0, 1.0]])
    # all tied: top-2 = items [0, 1]
    assert precision_at_k(test, s, k=2) == 0.5
    s = np.array([[0.0, 2.0, 1.0, 1.0, 2.0]])
    # order: 1, 4 (score 2), then 2, 3 (score 1)
    assert precision_at_k(test, s, k=3, average=False).tolist() == [2 / 3]
    assert ndcg_at_k(test, s, k=3) == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))


def test_neg_inf_scores_never_recommended():
    test = sp.csr_matrix(np.array([[1, 0, 0]]))
    s = np.array([[-np.inf, -np.inf, 0.0]])
    assert precision_at_k(test, s, k=3) == 0.0


def test_padding_and_user_ids():
    # rows are users 2 (test {1}) and 0 (test {0, 2}); -1 marks empty slots
    rec = np.array([[0, -1, -1], [1, -1, -1]])
    per = precision_at_k(TEST, rec, k=3, user_ids=[2, 0], average=False)
    assert per.tolist() == [0.0, 0.0]
    rec = np.array([[1, -1, -1], [0, -1, -1]])
    per = precision_at_k(TEST, rec, k=3, user_ids=[2, 0], average=False)
    assert per.tolist() == [1 / 3, 1 / 3]
    assert recall_at_k(TEST, rec, k=3, user_ids=np.array([2, 0])) == pytest.approx(0.75)
    # a subset without test items
    with pytest.raises(ValueError, match="no user"):
        recall_at_k(TEST, rec[:1], k=3, user_ids=[1])


def test_sparse_array_and_explicit_zeros():
    t = sp.csr_array((np.array([1.0, 0.0]), np.array([0, 1]), np.array([0, 2])), shape=(1, 3))
    # item 1 is an explicit zero: not relevant
    assert precision_at_k(t, np.array([[1, 0]]), k=1) == 0.0
    assert precision_at_k(t.tocoo(), np.array([[0, 1]]), k=1) == 1.0


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(recommended=np.array([[0, 9]]), user_ids=[0]), r"\[0, 4\)"),
        (dict(recommended=np.array([[0, 0]]), user_ids=[0]), "repeated"),
        (dict(recommended=np.array([[0, 1]]), user_ids=[0], k=3), "fewer than k"),
        (dict(recommended=np.array([[0, 1]]), k=0), "positive integer"),
        (dict(recommended=np.array([[0, 1], [1, 2]])), "pass user_ids"),
        (dict(recommended=np.array([[0, 1]]), user_ids=[5]), r"\[0, 3\)"),
        (dict(recommended=np.zeros((3, 5))), "5 columns"),
        (dict(recommended=np.full((3, 4), np.nan)), "NaN"),
        (dict(recommended=np.zeros((3, 4)), k=5), "exceeds"),
        (dict(recommended=np.array([0, 1])), "2-d"),
        (dict(recommended=np.array([["a"]]), user_ids=[0]), "dtype"),
        (dict(recommended=np.zeros((3, 4)), train=sp.csr_matrix((2, 4))), "shape"),
        (dict(test=np.zeros((3, 4)), recommended=np.zeros((3, 4))), "sparse"),
        (dict(test=sp.csr_matrix((3, 4)), recommended=np.zeros((3, 4))), "no user"),
    ],
)
def test_ranking_errors(kwargs, msg):
    kw = dict(test=TEST, k=2)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        precision_at_k(**kw)


def test_auc_errors():
    with pytest.raises(ValueError, match="score matrix"):
        auc_score(TEST, np.array([[0, 1], [1, 2], [2, 3]]))
    with pytest.raises(ValueError, match="no user"):
        auc_score(sp.csr_matrix((3, 4)), SCORES)


# --------------------------------------------------------------------------------------
# Random data against the brute-force references
# --------------------------------------------------------------------------------------


def _random_interactions(rng, shape, density):
    dense = (rng.random(shape) < density) * (1 + rng.random(shape))
    return sp.csr_matrix(dense)


def _random_case(seed, n_users=40, n_items=30):
    rng = np.random.default_rng(seed)
    test = _random_interactions(rng, (n_users, n_items), 0.1)
    train = _random_interactions(rng, (n_users, n_items), 0.2)
    # coarse scores so that ties happen
    scores = rng.integers(0, 6, size=(n_users, n_items)).astype(np.float64)
    scores[rng.random(scores.shape) < 0.05] = -np.inf
    return rng, test, train, scores


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", ["precision", "recall", "ndcg"])
@pytest.mark.parametrize("use_train", [False, True])
def test_random_scores_vs_reference(seed, name, use_train):
    _, test, train, scores = _random_case(seed)
    train = train if use_train else None
    for k in (1, 5, 30):
        got = FUNCS[name](test, scores, k=k, train=train, average=False)
        ref = _ref_metric(name, test, scores, k, train)
        np.testing.assert_allclose(got, ref, equal_nan=True)
        mean = FUNCS[name](test, scores.astype(np.float32), k=k, train=train)
        assert mean == pytest.approx(np.nanmean(ref))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", ["precision", "recall", "ndcg"])
@pytest.mark.parametrize("use_train", [False, True])
def test_random_lists_vs_reference(seed, name, use_train):
    rng, test, train, _ = _random_case(seed)
    train = train if use_train else None
    n_users, n_items = test.shape
    rec = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :12]
    rec[rng.random(rec.shape) < 0.1] = -1
    for k in (1, 4, 12):
        got = FUNCS[name](test, rec, k=k, train=train, average=False)
        ref = _ref_metric(name, test, rec, k, train)
        np.testing.assert_allclose(got, ref, equal_nan=True)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("use_train", [False, True])
def test_random_auc_vs_reference(seed, use_train):
    _, test, train, scores = _random_case(seed)
    train = train if use_train else None
    got = auc_score(test, scores, train=train, average=False)
    ref = _ref_auc(test, scores, train)
    np.testing.assert_allclose(got, ref, equal_nan=True)
    assert auc_score(test, scores, train=train) == pytest.approx(np.nanmean(ref))


def test_chunking_matches(monkeypatch):
    import sparseopt.metrics as m

    _, test, train, scores = _random_case(7, n_users=50, n_items=20)
    full = [f(test, scores, k=5, train=train, average=False) for f in FUNCS.values()]
    full.append(auc_score(test, scores, train=train, average=False))
    monkeypatch.setattr(m, "_CHUNK_CELLS", 45)  # 2 users per chunk
    chunked = [f(test, scores, k=5, train=train, average=False) for f in FUNCS.values()]
    chunked.append(auc_score(test, scores, train=train, average=False))
    for a, b in zip(full, chunked, strict=True):
        np.testing.assert_array_equal(a, b)


def test_auc_matches_sklearn_per_user():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    test = _random_interactions(rng, (10, 50), 0.2)
    scores = rng.normal(size=(10, 50))
    per = auc_score(test, scores, average=False)
    for u in range(10):
        y = test[[u]].toarray().ravel() != 0
        if 0 < y.sum() < 50:
            assert per[u] == pytest.approx(roc_auc_score(y, scores[u]))
