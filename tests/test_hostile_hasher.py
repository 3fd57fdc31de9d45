"""Never crash, never lie: FieldHasher against hostile and careless tables.

The hash kernels write the columns of values they are given, without bounds checks, so the
cases run in one child process: a crash there is a negative status that fails the test and
names the case that was running. Each case ends in a refusal whose message names what is
wrong, or in its right answer, checked here against an independent computation
(scikit-learn's MurmurHash3 of the value's text). Then: a model trained from a CSV file by
the command line scores the rows of ``pd.read_csv`` of the same file identically, for every
kind of column a CSV holds; and Hypothesis draws random tables (column types, nulls, extreme
numbers, random bytes in strings, repeated names) against the same reference.
"""

import math
import textwrap

import child
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.utils import murmurhash3_32

from sparseopt import FieldHasher
from sparseopt import pipeline as P
from sparseopt.cli import main
from sparseopt.datasets import load_tokens, read_csv

PRELUDE = r'''
import json, math, warnings
import numpy as np, pandas as pd, pyarrow as pa, polars as pl
from sklearn.utils import murmurhash3_32
from sparseopt import FieldHasher
from sparseopt.datasets import hash_features
warnings.simplefilter("ignore")

def case(name, fn):
    """Run one case; print [name, [outcome, value or message]]."""
    print(json.dumps(["start", name]), flush=True)
    try:
        out = ["ok", fn()]
    except Exception as exc:
        out = [type(exc).__name__, str(exc)]
    print(json.dumps([name, out], default=repr), flush=True)

def col(text, field, n_bits=12):
    """The column of (field, text) as documented: MurmurHash3 of the UTF-8 bytes."""
    data = text if isinstance(text, bytes) else text.encode()
    return murmurhash3_32(data, seed=field, positive=True) % (1 << n_bits)

def columns_of(X):
    return [sorted(X.indices[X.indptr[r]:X.indptr[r + 1]].tolist()) for r in range(X.shape[0])]
'''


def run_cases(body: str) -> dict:
    return child.run_cases(PRELUDE + textwrap.dedent(body), timeout=600)


# case name -> what it must end in: True (its right answer, computed in the child) or a
# refusal: (exception name, a fragment of the message, which names what is wrong)
EXPECTED = {
    "bucket float -1e19": ("ValueError", "column 'n' holds -1e+19, beyond 9e+15"),
    "bucket int64 min": ("ValueError", "column 'n' holds -9.22337e+18"),
    "bucket int64 max": ("ValueError", "column 'n' holds 9.22337e+18"),
    "bucket uint64 max": ("ValueError", "column 'n' holds 1.84467e+19"),
    "bucket 1e300": ("ValueError", "column 'n' holds 1e+300"),
    "bucket -inf": ("ValueError", "column 'n' holds -inf"),
    "bucket 9e15 and -9e15": True,
    "bucket NaN is a null": True,
    "bucket count in a second chunk": ("ValueError", "column 'n' holds -1e+19"),
    "value 1e39 in float32": ("ValueError", "column 'v' holds 1e+39, beyond 3.40282e+38"),
    "value inf": ("ValueError", "column 'v' holds inf"),
    "value 1e39 in float64": True,
    "categorical int64 min as text": True,
    "pandas duplicate names": ("ValueError", "several columns named ['a']"),
    "arrow duplicate names": ("ValueError", "several columns named ['a']"),
    "duplicate names at transform": ("ValueError", "several columns named ['b']"),
    "names 0 and '0'": ("ValueError", "several columns named ['0']"),
    "mapping of scalars is one row": True,
    "mapping mixing scalars and columns": ("ValueError", "maps ['a'] to single values"),
    "NUL bytes are values of their own": True,
    "booleans as True and False": True,
    "integer categories as text": True,
    "all-null column at transform": True,
    "all-null column at fit is numeric": True,
    "all-null column at fit, text later": ("ValueError", "name its kind in column_kinds"),
    "field_aware n_bits=32": ("ValueError", "field_aware=True needs n_bits <= 28"),
    "field_aware n_bits=29": ("ValueError", "field_aware=True needs n_bits <= 28"),
    "non-UTF-8 bytes with keep_tokens": ("ValueError", "column 'raw' holds bytes that are not"),
    "non-UTF-8 bytes hashed as bytes": True,
    "refused fit leaves the hasher": True,
    "refused fit_transform leaves the hasher": True,
    "refused transform leaves the hasher": True,
    "no rows": True,
    "n_bits=32 gives int64 indices": True,
    "integer beyond 64 bits": ("ValueError", "column 'i' holds an integer beyond 64 bits"),
    "decimal column": ("ValueError", "column 'd' has type decimal128"),
    "list column": ("ValueError", "column 'l' has type list"),
    "a sparse matrix": ("TypeError", "does not accept a sparse matrix"),
    "polars booleans and categories": True,
}

CASES = r"""
def bucket(values, chunks=None):
    h = FieldHasher(12, numeric="bucket").fit({"n": [1.0]})
    return h.transform(chunks if chunks is not None else {"n": values})

case("bucket float -1e19", lambda: bucket(np.array([1.0, -1e19])))
case("bucket int64 min", lambda: bucket(np.array([3, np.iinfo(np.int64).min])))
case("bucket int64 max", lambda: bucket(np.array([np.iinfo(np.int64).max])))
case("bucket uint64 max", lambda: bucket(np.array([np.iinfo(np.uint64).max])))
case("bucket 1e300", lambda: bucket(np.array([1e300])))
case("bucket -inf", lambda: bucket(np.array([-np.inf])))
case("bucket 9e15 and -9e15", lambda: columns_of(bucket(np.array([9e15, -9e15])))
     == [[col(str(math.floor(math.log(9e15) ** 2)), 0)], [col("-9000000000000000", 0)]])
case("bucket NaN is a null", lambda: columns_of(bucket(np.array([np.nan]))) == [[col("", 0)]])
chunked = pa.table({"n": pa.chunked_array([[1.0, 2.0], [-1e19]])})
case("bucket count in a second chunk", lambda: bucket(None, chunked))

def values(v, dtype):
    h = FieldHasher(12, dtype=dtype).fit({"v": [1.0]})
    X = h.transform({"v": np.array([v])})
    return X.data.tolist() == [v] and X.indices.tolist() == [col("", 0)]

case("value 1e39 in float32", lambda: values(1e39, np.float32))
case("value inf", lambda: values(np.inf, np.float64))
case("value 1e39 in float64", lambda: values(1e39, np.float64))
case("categorical int64 min as text", lambda: columns_of(
    FieldHasher(12, numeric="categorical").fit_transform({"n": np.array([-2**63])}))
    == [[col(str(-2**63), 0)]])

def duplicates_pandas():
    df = pd.DataFrame([[1, "x", "y"]], columns=["a", "b", "a"])
    return FieldHasher().fit(df)

case("pandas duplicate names", duplicates_pandas)
case("arrow duplicate names", lambda: FieldHasher().fit(
    pa.Table.from_arrays([pa.array(["x"]), pa.array(["y"])], names=["a", "a"])))
def duplicates_later():
    h = FieldHasher().fit(pd.DataFrame({"a": ["x"], "b": ["y"]}))
    return h.transform(pd.DataFrame([["x", "y", "z"]], columns=["a", "b", "b"]))
case("duplicate names at transform", duplicates_later)
case("names 0 and '0'", lambda: FieldHasher().fit(pd.DataFrame([[1, 2]], columns=[0, "0"])))

def one_record():
    h = FieldHasher(12, numeric="categorical").fit({"site": ["abc"], "n": [5]})
    X = h.transform({"site": "abc", "n": 5})
    return X.shape[0] == 1 and columns_of(X) == [sorted([col("abc", 0), col("5", 1)])]

case("mapping of scalars is one row", one_record)
case("mapping mixing scalars and columns", lambda: FieldHasher().fit({"a": "x", "b": ["y"]}))

def nul_bytes():
    df = pd.DataFrame({"s": ["a", "a\x00", "a\x00", "a\x00\x00"]})
    h = FieldHasher(16, keep_tokens=True).fit(df)
    t = h.tokens_
    pairs = sorted(zip(t.value.tolist(), t.count.tolist(), t.column.tolist()))
    expected = sorted([("a", 1, col("a", 0, 16)), ("a\x00", 2, col("a\x00", 0, 16)),
                       ("a\x00\x00", 1, col("a\x00\x00", 0, 16))])
    return pairs == expected and columns_of(h.transform(df)) == [[p[2]] for p in [
        expected[0], expected[1], expected[1], expected[2]]]

case("NUL bytes are values of their own", nul_bytes)

def booleans():
    X = FieldHasher(12).fit_transform(pd.DataFrame({"b": [True, False, None]}))
    objects = pd.DataFrame({"b": pd.Series([True, False, None], dtype=object)})
    Y = FieldHasher(12).fit_transform(objects)
    Z = hash_features({"b": [True, False, None]}, n_bits=12)
    return columns_of(X) == columns_of(Y) == columns_of(Z) == [
        [col("True", 0)], [col("False", 0)], [col("", 0)]]

case("booleans as True and False", booleans)

def categories():
    df = pd.DataFrame({"c": pd.Categorical([3, 5, None]), "f": pd.Categorical([1.5, 2.0, 1.5])})
    h = FieldHasher(12, keep_tokens=True).fit(df)
    X = h.transform(df)
    want = [sorted([col("3", 0), col("1.5", 1)]), sorted([col("5", 0), col("2", 1)]),
            sorted([col("", 0), col("1.5", 1)])]
    return h.kinds_.tolist() == ["categorical"] * 2 and columns_of(X) == want and (
        sorted(h.tokens_.value[h.tokens_.field == 0].tolist()) == ["", "3", "5"])

case("integer categories as text", categories)

def null_at_transform():
    h = FieldHasher(12, column_kinds={"b": "bucket", "c": "categorical"}).fit(
        pd.DataFrame({"v": [1.0], "b": [4], "c": ["x"]}))
    X = h.transform(pd.DataFrame({"v": [None], "b": [None], "c": [None]}, dtype=object))
    return columns_of(X) == [sorted([col("", 1), col("", 2)])]

case("all-null column at transform", null_at_transform)

def null_at_fit():
    h = FieldHasher(12, numeric="bucket").fit(pd.DataFrame({"n": [None, None]}))
    return h.kinds_.tolist() == ["bucket"] and columns_of(h.transform({"n": [7]})) == [
        [col(str(math.floor(math.log(7) ** 2)), 0)]]

case("all-null column at fit is numeric", null_at_fit)
case("all-null column at fit, text later", lambda: FieldHasher().fit(
    pd.DataFrame({"n": [None]})).transform(pd.DataFrame({"n": ["x"]})))
case("field_aware n_bits=32", lambda: FieldHasher(32, field_aware=True).fit({"a": ["x"]}))
case("field_aware n_bits=29", lambda: FieldHasher(29, field_aware=True).fit({"a": ["x"]}))
raw = pa.table({"raw": pa.array([b"\xff\xfe", b"ok"], pa.binary())})
case("non-UTF-8 bytes with keep_tokens", lambda: FieldHasher(keep_tokens=True).fit(raw))
case("non-UTF-8 bytes hashed as bytes", lambda: columns_of(FieldHasher(12).fit_transform(raw))
     == [[col(b"\xff\xfe", 0)], [col("ok", 0)]])

good = pd.DataFrame({"s": ["a", "b"], "n": [1.0, 2.0]})
def unchanged(call):
    h = FieldHasher(12, numeric="bucket", keep_tokens=True).fit(good)
    before = (columns_of(h.transform(good)), h.tokens_.value.tolist(), h.kinds_.tolist())
    try:
        call(h)
    except ValueError:
        pass
    else:
        return "not refused"
    after = (columns_of(h.transform(good)), h.tokens_.value.tolist(), h.kinds_.tolist())
    return before == after

case("refused fit leaves the hasher", lambda: unchanged(lambda h: h.fit(
    pd.DataFrame([["x", "y"]], columns=["s", "s"]))))
case("refused fit_transform leaves the hasher", lambda: unchanged(lambda h: h.fit_transform(
    pd.DataFrame({"t": ["x"], "n": [-1e19]}))))
case("refused transform leaves the hasher", lambda: unchanged(lambda h: h.transform(
    pd.DataFrame({"s": ["x"], "n": [1e300]}))))
case("no rows", lambda: FieldHasher(12).fit(good).transform(good.iloc[:0]).shape == (0, 4096))
case("n_bits=32 gives int64 indices", lambda: FieldHasher(32).fit_transform(good).indices.dtype
     == np.int64)
case("integer beyond 64 bits", lambda: FieldHasher().fit({"i": [2**70, 1]}))
case("decimal column", lambda: FieldHasher().fit(pa.table({"d": pa.array([1], pa.decimal128(5))})))
case("list column", lambda: FieldHasher().fit(pa.table({"l": pa.array([[1, 2]])})))
case("a sparse matrix", lambda: FieldHasher().fit(__import__("scipy.sparse").sparse.eye(2)))

def polars_frame():
    frame = pl.DataFrame({"b": [True, None], "c": ["3", "x"]}).with_columns(
        pl.col("c").cast(pl.Categorical))
    X = FieldHasher(12).fit_transform(frame)
    return columns_of(X) == [sorted([col("True", 0), col("3", 1)]),
                             sorted([col("", 0), col("x", 1)])]

case("polars booleans and categories", polars_frame)
"""


def test_hostile_tables_end_in_a_clear_error_or_the_right_columns():
    results = run_cases(CASES)
    assert set(results) == set(EXPECTED), set(results) ^ set(EXPECTED)
    wrong = {}
    for name, want in EXPECTED.items():
        outcome, payload = results[name]
        if want is True:
            if outcome != "ok" or payload is not True:
                wrong[name] = f"{outcome}: {payload}"
        elif outcome != want[0] or want[1] not in payload:
            wrong[name] = f"{outcome}: {payload} (expected {want[0]}: ...{want[1]}...)"
    assert not wrong, "\n".join(f"{k}: {v}" for k, v in wrong.items())


# -- a model trained from a file scores the DataFrame of pd.read_csv alike --------------------
def _csv_of_every_kind(path, n=1200, seed=0):
    """A CSV with every kind of column a CSV holds: booleans (some missing), integers (one
    column of them with some missing, which pandas makes float), floats in their shortest
    form, text, an empty column, quoted text with doubled quotes, and a numeric column."""
    rng = np.random.default_rng(seed)
    words = np.array(["alpha", "beta", "gamma", "delta", "x y", "é"])
    quoted = np.array(['"plain"', '"say ""hi"""', '""', '"a;b"', "bare"])
    lines = ["y,flag,count,gaps,price,word,empty,quoted,amount"]
    for _ in range(n):
        flag = rng.choice(["True", "False", ""])
        count = str(rng.integers(-5, 50))
        gaps = rng.choice(["", str(rng.integers(0, 9))])
        price = rng.choice(["1.5", "0.25", "-3.75", "2", "100.125"])
        word, q = rng.choice(words), rng.choice(quoted)
        amount = rng.choice(["", f"{rng.normal():.3f}"])
        label = int((flag == "True") ^ (word in ("alpha", "é")) ^ (rng.random() < 0.1))
        lines.append(f"{label},{flag},{count},{gaps},{price},{word},,{q},{amount}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_model_trained_from_a_csv_scores_pd_read_csv_rows_identically(tmp_path, capsys):
    data = _csv_of_every_kind(tmp_path / "data.csv")
    run = tmp_path / "run"
    argv = ["train", str(data), "--format", "csv", "--label", "y", "--numeric", "amount"]
    assert main([*argv, "--n-bits", "14", "--epochs", "2", "--out", str(run), "--keep-tokens"]) == 0
    capsys.readouterr()
    model, spec = P.load_model(run / "model.npz")
    X_file, _ = read_csv(data, "y", numeric=["amount"], n_bits=spec.n_bits).read()

    frame = pd.read_csv(data).drop(columns="y")
    assert frame["flag"].dtype == object and frame["gaps"].dtype == float  # as pandas reads them
    assert frame["empty"].isna().all()
    hasher = FieldHasher(spec.n_bits, numeric="categorical", column_kinds={"amount": "value"})
    X_frame = hasher.fit_transform(frame)
    assert (X_file != X_frame).nnz == 0
    p_file, p_frame = model.predict_proba(X_file)[:, 1], model.predict_proba(X_frame)[:, 1]
    assert np.array_equal(p_file, p_frame)
    assert np.ptp(p_file) > 0.1  # the model learned something that the columns decide

    # the token counts of --keep-tokens are those of the DataFrame's values
    tokens = load_tokens(run / P.TOKENS_FILE)
    kept = FieldHasher(spec.n_bits, numeric="categorical", column_kinds={"amount": "value"},
                       keep_tokens=True).fit(frame).tokens_  # fmt: skip
    for name in ("field", "value", "count", "column"):
        assert np.array_equal(getattr(tokens, name), getattr(kept, name)), name
    assert {'say "hi"', "a;b", ""} <= set(tokens.value[tokens.field == 6].tolist())


# -- Hypothesis: random tables against the reference ------------------------------------------
N_CASES = 300
FUZZ = settings(
    max_examples=N_CASES,
    deadline=None,
    derandomize=True,  # the same cases on every run: CI stays reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
N_BITS = 6  # few columns: fields collide within rows, and their values must sum
NUMBERS = [0.0, 1.0, -1.0, 2.5, 3.0, 7.0, 1e6, -2.0, 9e15, -9e15, 1e16, -1e19, 1e300,
           math.inf, -math.inf, math.nan, 2.0**63, -(2.0**63)]  # fmt: skip
TEXT = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", "a", "a\x00", "\x00", "True", "é", "3"]),
)
BYTES = st.binary(max_size=6)


@st.composite
def tables(draw):
    """A dict of name -> (kind, python values) for 1 to 4 columns of one length."""
    n_rows = draw(st.integers(0, 5))
    n_cols = draw(st.integers(1, 4))
    columns = []
    for _ in range(n_cols):
        kind = draw(st.sampled_from(["text", "bytes", "bool", "int", "value", "bucket", "null"]))
        element = {
            "text": TEXT,
            "bytes": BYTES,
            "bool": st.booleans(),
            "int": st.integers(-(2**63), 2**63 - 1),
            "value": st.sampled_from(NUMBERS),
            "bucket": st.sampled_from(NUMBERS),
            "null": st.none(),
        }[kind]
        if kind != "null":
            element = st.one_of(st.none(), element) if draw(st.booleans()) else element
        columns.append((kind, draw(st.lists(element, min_size=n_rows, max_size=n_rows))))
    names = draw(st.lists(st.sampled_from("abcde"), min_size=n_cols, max_size=n_cols))
    return names, columns


def _arrow(kind, values):
    types = {"text": pa.string(), "bytes": pa.binary(), "bool": pa.bool_(), "int": pa.int64(),
             "value": pa.float64(), "bucket": pa.float64(), "null": pa.null()}  # fmt: skip
    return pa.array(values, type=types[kind], from_pandas=True)


def _reference_text(kind, v):
    """The bytes hashed for one value, as documented (None: no feature)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None if kind == "value" else b""
    if kind == "text":
        return v.encode()
    if kind == "bytes":
        return v
    if kind == "bool":
        return b"True" if v else b"False"
    if kind == "int":
        return str(v).encode()
    if kind == "bucket":
        return str(math.floor(math.log(v) ** 2) if v > 2 else int(v)).encode()
    return b""  # a value's column: the pair (field, empty text)


def _reference(columns):
    """Rows of {column: value} as the documented hashing gives them, or the refusal."""
    for kind, values in columns:
        finite = [v for v in values if v is not None and not math.isnan(v)] if kind in (
            "value", "bucket") else []  # fmt: skip
        if kind == "bucket" and any(not abs(v) <= 9e15 for v in finite):
            return "refused"
        if kind == "value" and any(not abs(v) <= np.finfo(np.float32).max for v in finite):
            return "refused"
    n_rows = len(columns[0][1])
    rows = [{} for _ in range(n_rows)]
    for f, (kind, values) in enumerate(columns):
        for r, v in enumerate(values):
            text = _reference_text(kind, v)
            if text is None:
                continue
            c = murmurhash3_32(text, seed=f, positive=True) % (1 << N_BITS)
            x = np.float32(v) if kind == "value" else np.float32(1)
            rows[r][c] = rows[r].get(c, np.float32(0)) + x
    return rows


@FUZZ
@given(tables())
def test_random_tables_hash_as_documented_or_are_refused(table):
    names, columns = table
    kinds = {"value": "value", "bucket": "bucket", "int": "categorical", "null": "categorical"}
    column_kinds = {n: kinds[k] for n, (k, _) in zip(names, columns, strict=True) if k in kinds}
    arrays = [_arrow(kind, values) for kind, values in columns]
    frame = pa.Table.from_arrays(arrays, names=names)
    hasher = FieldHasher(N_BITS, numeric="categorical", column_kinds=column_kinds)
    if len(set(names)) < len(names):
        with pytest.raises(ValueError, match="several columns named"):
            hasher.fit(frame)
        return
    expected = _reference(columns)
    if expected == "refused":
        with pytest.raises(ValueError, match="beyond"):
            hasher.fit_transform(frame)
        assert not hasattr(hasher, "kinds_")  # a refused fit_transform leaves nothing
        return
    X = hasher.fit_transform(frame)
    assert X.shape == (len(expected), 1 << N_BITS) and X.has_canonical_format
    for r, row in enumerate(expected):
        got = dict(zip(X.indices[X.indptr[r] : X.indptr[r + 1]].tolist(),
                       X.data[X.indptr[r] : X.indptr[r + 1]], strict=True))  # fmt: skip
        assert got.keys() == row.keys()
        for c, x in row.items():
            assert got[c] == pytest.approx(x, rel=1e-6)
    # pandas, and one record as a mapping of scalars, hash alike
    if len(expected) >= 1 and all(k not in ("bytes", "null") for k, _ in columns):
        record = {n: values[0] for n, (_, values) in zip(names, columns, strict=True)}
        first = hasher.transform(record)
        assert first.shape[0] == 1 and (first != X[0]).nnz == 0
