import numpy as np
import pytest
from sklearn.metrics import log_loss
from sklearn.utils import murmurhash3_32 as reference_hash

from sparseopt.datasets import FieldHasher, column_fields, make_ctr


@pytest.fixture(scope="module")
def data():
    return make_ctr(50_000, n_bits=20, n_test=20_000, random_state=0)


def test_shapes_dtypes_and_canonical_csr(data):
    X, y = data.X, data.y
    assert X.shape == (50_000, 2**20) and data.X_test.shape == (20_000, 2**20)
    assert X.format == "csr" and X.dtype == np.float32
    assert X.indices.dtype == np.int32 and X.indptr.dtype == np.int32
    assert X.has_canonical_format
    assert np.all(np.diff(X.indptr) <= 39)
    # one value per field: the row sums are 39 even where two fields collide
    np.testing.assert_array_equal(np.asarray(X.sum(axis=1)).ravel(), 39)
    check = X.copy()
    check.has_canonical_format = False
    check.sum_duplicates()
    assert (check != X).nnz == 0
    assert set(np.unique(y)) == {0.0, 1.0} and y.dtype == np.float32
    assert data.proba.shape == (50_000,) and data.proba_test.shape == (20_000,)


def test_base_rate(data):
    assert abs(data.proba.mean() - 0.27) < 0.01
    assert abs(data.y.mean() - 0.27) < 0.015
    other = make_ctr(20_000, n_fields=5, n_bits=16, base_rate=0.05, random_state=1)
    assert abs(other.y.mean() - 0.05) < 0.01


def test_labels_follow_the_true_probabilities(data):
    # E[log loss of the true p] = mean binary entropy of p; the deviation has std ~ 0.004
    p = data.proba_test
    entropy = -np.mean(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert abs(log_loss(data.y_test, p) - entropy) < 0.02
    # calibration by decile
    deciles = np.quantile(p, np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(deciles, p, side="right") - 1, 0, 9)
    for b in range(10):
        in_bin = bins == b
        assert abs(data.y_test[in_bin].mean() - p[in_bin].mean()) < 0.03


def test_true_model_reproduces_the_probabilities():
    # logit = intercept + sum of the weights of the row's values, the column of (field f,
    # value v) being the reference hash of str(v) seeded by f. Small vocabularies in a wide
    # space, so that each row's values can be read back from its columns.
    data = make_ctr(200, n_fields=10, n_values=50, n_bits=20, random_state=7)
    offsets = data.value_offsets
    for f in range(10):
        cols = data.value_columns[offsets[f] : offsets[f + 1]]
        expected = [
            reference_hash(str(v).encode(), seed=f, positive=True) % 2**20 for v in range(50)
        ]
        assert cols.tolist() == expected
    for r in range(200):
        row_cols = data.X[r].indices
        logit = data.intercept
        for f in range(10):
            cols = data.value_columns[offsets[f] : offsets[f + 1]]
            (v,) = np.flatnonzero(np.isin(cols, row_cols))
            logit += data.weights[offsets[f] + v]
        assert abs(1 / (1 + np.exp(-logit)) - data.proba[r]) < 1e-9


def test_deterministic_and_model_independent_of_sizes():
    a = make_ctr(3_000, n_fields=6, n_bits=14, n_test=500, random_state=42)
    b = make_ctr(3_000, n_fields=6, n_bits=14, random_state=42)
    c = make_ctr(1_000, n_fields=6, n_bits=14, random_state=42)
    assert (a.X != b.X).nnz == 0 and np.array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.weights, c.weights)
    assert a.intercept == c.intercept
    assert "X_test" not in b
    d = make_ctr(3_000, n_fields=6, n_bits=14, random_state=43)
    assert not np.array_equal(a.weights, d.weights)


def test_interactions_add_signal_beyond_the_linear_part():
    flat = make_ctr(20_000, n_fields=10, n_bits=16, random_state=3)
    inter = make_ctr(20_000, n_fields=10, n_bits=16, interactions=2.0, random_state=3)
    assert flat.factors.shape[1] == 0 and inter.factors.shape == (flat.weights.size, 4)
    logit = np.log(inter.proba / (1 - inter.proba))
    linear = np.log(flat.proba / (1 - flat.proba)) - flat.intercept + inter.intercept
    residual = logit - linear  # the pairwise term (same weights: same seed)
    assert 1.0 < residual.std() < 3.0


def test_missing_rate_and_field_aware_layout():
    data = make_ctr(
        10_000, n_fields=8, n_bits=12, missing_rate=0.3, field_aware=True, random_state=5
    )
    nnz_per_row = np.diff(data.X.indptr)
    assert abs(nnz_per_row.mean() - 8 * 0.7) < 0.1
    fields = column_fields(12, 8)
    for r in range(50):
        f = fields[data.X[r].indices]
        assert np.all(f >= 0) and len(set(f.tolist())) == len(f)


def test_int64_indices_for_wide_spaces():
    data = make_ctr(100, n_fields=3, n_bits=32, random_state=0)
    assert data.X.shape[1] == 2**32 and data.X.indices.dtype == np.int64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(base_rate=1.5), "base_rate"),
        (dict(n_samples=-1), "n_samples"),
        (dict(n_values=[3, 4]), "one entry per field"),
        (dict(missing_rate=1.0), "missing_rate"),
        (dict(interactions=-1.0), "interactions"),
        (dict(n_bits=0), "n_bits"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_ctr(**{"n_samples": 10, "n_fields": 3, **kwargs})


def test_planted_pairs_and_the_frame():
    plain = make_ctr(3_000, n_fields=6, n_bits=14, missing_rate=0.0, random_state=3)
    data = make_ctr(3_000, n_fields=6, n_bits=14, n_planted=4, as_frame=True, random_state=3)
    assert np.abs(data.planted_weights).tolist() == [2.5, 2.1875, 1.875, 1.5625]
    at = data.value_offsets[data.planted_fields] + data.planted_values
    assert np.array_equal(data.weights[at], data.planted_weights)
    others = np.setdiff1d(np.arange(data.weights.size), at)
    assert np.array_equal(data.weights[others], plain.weights[others])  # the same model else
    assert plain.planted_fields.size == 0
    assert list(data.frame.columns) == [f"f{f}" for f in range(6)]
    assert (FieldHasher(n_bits=14).fit_transform(data.frame) != data.X).nnz == 0
    with pytest.raises(ValueError, match="n_planted"):
        make_ctr(10, n_fields=2, n_values=3, n_planted=7)
