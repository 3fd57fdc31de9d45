"""top_features: planted effects found by name; collisions, classes and factors reported."""

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import make_pipeline

from sparseopt import FFMClassifier, FieldHasher, FMClassifier, SparseLogisticRegression
from sparseopt.datasets import make_ctr
from sparseopt.inspect import load_tokens, top_features


@pytest.fixture(scope="module")
def planted():
    return make_ctr(100_000, n_fields=12, n_values=200, n_planted=10, as_frame=True,
                    random_state=0)  # fmt: skip


def test_top_features_finds_the_planted_pairs(planted, tmp_path):
    pipe = make_pipeline(FieldHasher(n_bits=18, keep_tokens=True),
                         SparseLogisticRegression(max_iter=3, random_state=0))  # fmt: skip
    pipe.fit(planted.frame, planted.y)
    top = top_features(pipe, n=20)
    assert list(top.columns) == ["field", "value", "weight", "count", "column", "collisions"]
    assert (np.diff(top.weight.abs()) <= 0).all()
    found = set(zip(top.field, top.value, strict=True))
    wanted = {(f"f{f}", str(v)) for f, v in zip(planted.planted_fields, planted.planted_values,
                                                strict=True)}  # fmt: skip
    assert len(found & wanted) >= 8
    # the same from tokens saved beside the model and read back
    pipe[0].tokens_.save(tmp_path / "tokens.npz")
    again = top_features(pipe[-1], load_tokens(tmp_path / "tokens.npz"), n=20)
    pd.testing.assert_frame_equal(again, top)
    one = top_features(pipe, n=None, field="f3")
    assert set(one.field) == {"f3"} and len(one) == planted.n_values[3]


def test_collisions_classes_and_factors_are_reported():
    df = pd.DataFrame({"a": list("xyzwxyzw"), "b": list("pqpqpqpq")})
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    hasher = FieldHasher(n_bits=2, keep_tokens=True)  # 6 pairs in 4 columns: collisions
    pipe = make_pipeline(hasher, SparseLogisticRegression(max_iter=2)).fit(df, y)
    top = top_features(pipe, n=None)
    assert [c for c in top.columns if c.startswith("weight")] == [
        "weight[0]",
        "weight[1]",
        "weight[2]",
    ]
    shared = top.groupby("column").size()
    assert (top.collisions == top.column.map(shared) - 1).all() and top.collisions.max() > 0
    fm = make_pipeline(FieldHasher(n_bits=6, keep_tokens=True),
                       FMClassifier(max_iter=2, random_state=0)).fit(df, y % 2)  # fmt: skip
    norms = top_features(fm, n=None)
    expected = np.linalg.norm(fm[-1].factors_[norms.column], axis=1)
    assert np.allclose(norms.factor_norm, expected)
    ffm = make_pipeline(FieldHasher(n_bits=6, field_aware=True, keep_tokens=True),
                        FFMClassifier(max_iter=2, random_state=0)).fit(df, y % 2)  # fmt: skip
    norms = top_features(ffm, n=None)
    vectors = ffm[-1].factors_[norms.column]  # (n, n_fields, n_components)
    assert np.allclose(norms.factor_norm, np.sqrt((vectors**2).sum(axis=(1, 2))))


def test_errors():
    df = pd.DataFrame({"a": list("xyxy")})
    model = make_pipeline(FieldHasher(n_bits=4), SparseLogisticRegression(max_iter=1))
    model.fit(df, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="keep_tokens=True"):
        top_features(model)
    other = FieldHasher(n_bits=5, keep_tokens=True).fit(df)
    with pytest.raises(ValueError, match="not trained together"):
        top_features(model[-1], other)
    with pytest.raises(ValueError, match="no field 'b'"):
        top_features(model[-1], FieldHasher(n_bits=4, keep_tokens=True).fit(df), field="b")
