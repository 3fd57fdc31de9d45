"""FieldHasher: the readers' columns from tables, in scikit-learn's tools, and its errors."""

import gzip

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import scipy.sparse as sp
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks, murmurhash3_32
from sklearn.utils.estimator_checks import parametrize_with_checks

from sparseopt import FFMClassifier, FieldHasher, SparseLogisticRegression
from sparseopt.datasets import (
    column_fields,
    hash_features,
    load_tokens,
    read_avazu,
    read_criteo,
    read_csv,
    sample_path,
)

N_ROWS = 3_000  # of the packaged sample: every kind of value and empty field occurs


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):
    """The sample's first rows as a file, and as a pandas DataFrame read the usual way."""
    with gzip.open(sample_path("train"), "rt") as f:
        lines = [next(f) for _ in range(N_ROWS)]
    path = tmp_path_factory.mktemp("criteo") / "head.tsv"
    path.write_text("".join(lines))
    names = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    df = pd.read_csv(path, sep="\t", header=None, names=names)
    return path, df


def _same(A, B):
    assert A.shape == B.shape
    assert (A != B).nnz == 0
    assert np.array_equal(A.indptr, B.indptr) and np.array_equal(A.indices, B.indices)


@pytest.mark.parametrize("field_aware", [False, True])
def test_criteo_columns_from_pandas_polars_and_arrow(criteo, field_aware):
    path, df = criteo
    X_file, _ = read_criteo(path, n_bits=18, field_aware=field_aware).read()
    features = df.drop(columns="label")
    hasher = FieldHasher(n_bits=18, numeric="bucket", field_aware=field_aware)
    _same(hasher.fit_transform(features), X_file)
    _same(hasher.fit_transform(pl.from_pandas(features)), X_file)
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=list(df.columns)),
        parse_options=pacsv.ParseOptions(delimiter="\t"),
    ).drop_columns(["label"])
    _same(hasher.fit_transform(table), X_file)
    chunked = pa.concat_tables([table.slice(0, 1000), table.slice(1000, 5), table.slice(1005)])
    _same(hasher.transform(chunked), X_file)  # columns of several Arrow chunks
    _same(hasher.fit_transform({c: features[c].to_numpy() for c in features}), X_file)
    if field_aware:
        assert np.array_equal(hasher.fields_, column_fields(18, 39))


def _write_csv(path, df):
    """CSV as a user would write it: empty text for a missing value."""
    df.to_csv(path, index=False, na_rep="")
    return path


def test_avazu_and_csv_columns(criteo, tmp_path):
    path, df = criteo
    text = pd.read_csv(path, sep="\t", header=None, names=df.columns, dtype=str)
    text = text.drop(columns="label")  # the sample's values in Avazu's layout
    avazu = pd.concat([pd.Series(range(len(df)), name="id"), df["label"].rename("click"), text],
                      axis=1)  # fmt: skip
    path = _write_csv(tmp_path / "avazu.csv", avazu)
    X_file, _ = read_avazu(path, n_bits=16).read()
    # read back by pandas: integer columns as numbers, hashed as their decimal text, also
    # those that their empty values turned into floats (21.0 is hashed as "21")
    read_back = pd.read_csv(path).drop(columns=["id", "click"])
    assert read_back["I1"].dtype.kind == "f"
    _same(FieldHasher(n_bits=16, numeric="categorical").fit_transform(read_back), X_file)
    # read_csv: counts kept as numbers, the label and the id left out
    numeric = [f"I{i}" for i in range(1, 14)]
    reader = read_csv(path, label="click", exclude=["id"], numeric=numeric, n_bits=16)
    X_csv, _ = reader.read()
    kinds = {c: "value" for c in numeric}
    hasher = FieldHasher(n_bits=16, numeric="categorical", column_kinds=kinds)
    _same(hasher.fit_transform(read_back), X_csv)
    batches = pa.Table.from_pandas(read_back).to_batches(max_chunksize=700)
    _same(hasher.transform(pa.Table.from_batches(batches)), X_csv)


def test_a_model_from_files_scores_a_dataframe_identically(criteo):
    path, df = criteo
    X, y = read_criteo(path, n_bits=18).read()
    model = SparseLogisticRegression(max_iter=2, random_state=0).fit(X, y)
    hasher = FieldHasher(n_bits=18, numeric="bucket").fit(df.drop(columns="label"))
    expected = model.predict_proba(X)
    assert np.array_equal(model.predict_proba(hasher.transform(df)), expected)


def test_pipeline_column_transformer_and_ffm(criteo):
    _, df = criteo
    X, y = df.drop(columns="label"), df["label"]
    pipe = make_pipeline(FieldHasher(n_bits=16, numeric="bucket"),
                         SparseLogisticRegression(max_iter=2))  # fmt: skip
    assert pipe.fit(X, y).predict_proba(X).shape == (len(X), 2)
    categorical = [c for c in X if c.startswith("C")]
    ct = ColumnTransformer([("hash", FieldHasher(n_bits=12), categorical)])
    Xt = ct.fit_transform(X)
    _same(sp.csr_matrix(Xt), hash_features(X[categorical], n_bits=12))
    assert ct.get_feature_names_out()[:2].tolist() == ["hash__fieldhasher0", "hash__fieldhasher1"]
    # field-aware: the hasher's output tells FFMClassifier the field of each column
    ffm = make_pipeline(FieldHasher(n_bits=14, numeric="bucket", field_aware=True),
                        FFMClassifier(max_iter=1, random_state=0))  # fmt: skip
    ffm.fit(X, y)
    assert np.array_equal(ffm[-1].state_.fields, column_fields(14, 39))
    assert ffm.predict_proba(X).shape == (len(X), 2)
    ffm[-1].partial_fit(ffm[0].transform(X), y)  # continued training keeps its fields


def _col(text, field, n_bits=10):
    return murmurhash3_32(text.encode(), seed=field, positive=True) % 2**n_bits


def test_nulls_and_values_as_the_readers_treat_empty_fields():
    df = pd.DataFrame({"site": ["a", "", None], "price": [2.5, None, np.nan]})
    X = FieldHasher(n_bits=10).fit_transform(df)
    price = _col("", 1)  # a number is the value of the pair (field, empty text)
    expected = [{_col("a", 0): 1.0, price: 2.5}, {_col("", 0): 1.0}, {_col("", 0): 1.0}]
    for r, row in enumerate(expected):  # a null number gives no feature; a null text, one
        assert dict(zip(X[r].indices.tolist(), X[r].data.tolist(), strict=True)) == row


def test_bad_input_names_the_column():
    df = pd.DataFrame({"site": ["a", "b"], "n": [1, 2]})
    hasher = FieldHasher(n_bits=8).fit(df)
    with pytest.raises(ValueError, match=r"columns \['site'\] were present at fit"):
        hasher.transform(df[["n"]])
    with pytest.raises(ValueError, match="column 'when' has type timestamp"):
        FieldHasher().fit(pd.DataFrame({"when": pd.to_datetime(["2024-01-01"])}))
    with pytest.raises(ValueError, match="column 'mixed' cannot be hashed: its values mix"):
        FieldHasher().fit(pd.DataFrame({"mixed": ["a", 1]}, dtype=object))
    with pytest.raises(ValueError, match="column 'mixed' cannot be hashed"):
        FieldHasher().fit({"mixed": [1, "a"]})
    with pytest.raises(ValueError, match="column 'n' has type .*string but was hashed as 'value'"):
        hasher.transform(pd.DataFrame({"site": ["a"], "n": ["1"]}))
    with pytest.raises(ValueError, match="column 'site' holds .*string values, which can only"):
        FieldHasher(column_kinds={"site": "bucket"}).fit(df)
    with pytest.raises(ValueError, match="column 'n' holds inf, beyond 9e"):
        FieldHasher(numeric="bucket").fit_transform({"n": [1.0, np.inf]})
    with pytest.raises(TypeError, match="does not accept a sparse matrix"):
        FieldHasher().fit(sp.csr_matrix(np.eye(2)))


def test_estimators_given_text_say_to_use_field_hasher():
    df = pd.DataFrame({"C1": ["6b30c120", "52e511da"], "C2": ["x", "y"]})
    with pytest.raises(ValueError, match=r"hash the columns with sparseopt.FieldHasher"):
        SparseLogisticRegression().fit(df, [0, 1])
    with pytest.raises(ValueError, match=r"make_pipeline\(FieldHasher\(\), FFMClassifier"):
        FFMClassifier().fit(pl.from_pandas(df), [0, 1])


def test_tokens_are_counted_capped_and_saved_without_pickle(tmp_path):
    df = pd.DataFrame({"site": ["a"] * 5 + ["b"] * 3 + ["c", None, ""], "age": np.arange(11.0)})
    hasher = FieldHasher(n_bits=12, keep_tokens=True, max_tokens=3).fit(df)
    tokens = hasher.tokens_
    site = tokens.field == 0
    assert tokens.value[site].tolist() == ["a", "b", ""]  # null and "" counted together
    assert tokens.count[site].tolist() == [5, 3, 2]
    assert tokens.value[~site].tolist() == [""] and tokens.count[~site].tolist() == [11]
    X = hasher.transform(pd.DataFrame({"site": ["a", "b", ""], "age": [np.nan] * 3}))
    assert X.indices.tolist() == tokens.column[site].tolist()
    tokens.save(tmp_path / "tokens.npz")
    back = load_tokens(tmp_path / "tokens.npz")
    assert back.field_names == ["site", "age"] and back.max_tokens == 3
    for name in ("field", "value", "count", "column"):
        assert np.array_equal(getattr(back, name), getattr(tokens, name))
    # in chunks: the same counts while no pair drops out of a field's top max_tokens
    chunked = FieldHasher(n_bits=12, keep_tokens=True, max_tokens=3)
    for start in range(0, len(df), 4):
        chunked.partial_fit(df.iloc[start : start + 4])
    for name in ("field", "value", "count", "column"):
        assert np.array_equal(getattr(chunked.tokens_, name), getattr(tokens, name))
    buckets = FieldHasher(n_bits=12, numeric="bucket", keep_tokens=True).fit(df).tokens_
    age = buckets.field == 1  # ages 0..10 in Criteo's buckets
    assert buckets.value[age].tolist() == ["1", "2", "3", "4", "0", "5"]
    assert buckets.count[age].tolist() == [3, 2, 2, 2, 1, 1]


@parametrize_with_checks(
    [FieldHasher(n_bits=8), FieldHasher(n_bits=8, numeric="bucket", keep_tokens=True)]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize(
    "check",
    [
        estimator_checks.check_transformer_get_feature_names_out,
        estimator_checks.check_transformer_get_feature_names_out_pandas,
        estimator_checks.check_set_output_transform,
    ],
)
def test_sklearn_feature_names_checks(check):
    """The checks for names that parametrize_with_checks does not run. Two do not apply, as
    columns are found by name: check_dataframe_column_names_consistency (a table with its
    columns reordered is accepted) and check_global_output_transform_pandas (an array
    without names cannot stand for a table fitted with names)."""
    check("FieldHasher", FieldHasher(n_bits=8))
