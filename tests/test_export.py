"""Export for serving: ONNX Runtime and sparseopt.serving score as the estimators do, the
hashing spec is implementable from its JSON, bad input gets one clear error."""

import gzip
import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError
from sklearn.utils import Bunch, murmurhash3_32

from sparseopt import (
    FFMClassifier,
    FMClassifier,
    FMRegressor,
    MatrixFactorization,
    SparseLinearRegression,
    SparseLogisticRegression,
    serving,
)
from sparseopt import export as E
from sparseopt.cli import main
from sparseopt.datasets import column_fields, make_ctr, read_criteo, read_csv, sample_path

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

N_BITS, N_FIELDS = 12, 39  # the packaged sample's 39 fields, each its own slice (FFM)
TOLERANCE = 1e-6  # the parity target, float32 tables


def padded(X):
    """A CSR matrix as the padded batch of the ONNX graphs: (indices, values)."""
    counts = np.diff(X.indptr)
    width = max(1, counts.max())
    indices = np.zeros((X.shape[0], width), np.int64)
    values = np.zeros((X.shape[0], width), X.dtype)
    filled = np.arange(width) < counts[:, None]
    indices[filled], values[filled] = X.indices, X.data
    return indices, values


def run_onnx(path, X, form, chunk=2_000):
    """The ONNX model's output for CSR rows ``X``, ``chunk`` rows at a time (FFM's padded
    graph holds (rows, width, width, k) products)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = []
    for start in range(0, X.shape[0], chunk):
        part = X[start : start + chunk]
        if form == "padded":
            indices, values = padded(part)
            feed = {"indices": indices, "values": values}
        else:
            feed = {"indices": part.indices.astype(np.int64), "values": part.data,
                    "offsets": part.indptr.astype(np.int64)}  # fmt: skip
        out.append(session.run(None, feed)[0])
    return np.concatenate(out)


@pytest.fixture(scope="module")
def data():
    """The packaged sample's first 3,000 training rows to fit; to score, its 5,000 validation
    rows and 100,000 synthetic rows of the same layout (39 fields, 2**12 columns, each field
    its own slice)."""
    X, y = read_criteo(sample_path("train"), n_bits=N_BITS, field_aware=True).read()
    valid, _ = read_criteo(sample_path("valid"), n_bits=N_BITS, field_aware=True).read()
    synthetic = make_ctr(100_000, n_fields=N_FIELDS, n_bits=N_BITS, field_aware=True,
                         random_state=1).X  # fmt: skip
    return Bunch(X=X[:3_000], y=y[:3_000]), sp.vstack([valid, synthetic]).tocsr()


MODELS = {
    "logistic": lambda: SparseLogisticRegression(max_iter=2),
    "multinomial": lambda: SparseLogisticRegression(max_iter=2),
    "linear": lambda: SparseLinearRegression(max_iter=2),
    "fm": lambda: FMClassifier(max_iter=2, random_state=0),
    "fm_regressor": lambda: FMRegressor(max_iter=2, random_state=0),
    "ffm": lambda: FFMClassifier(fields=column_fields(N_BITS, N_FIELDS), max_iter=2,
                                 random_state=0),  # fmt: skip
}


def fitted(kind, train):
    y = train.y
    if kind == "multinomial":
        y = (train.y + (np.arange(y.size) % 3 == 0)).astype(int)  # three classes
    elif kind in ("linear", "fm_regressor"):
        y = 3.0 * train.y - 1.0
    return MODELS[kind]().fit(train.X, y)


def expected(model, X):
    return model.predict_proba(X) if hasattr(model, "predict_proba") else model.predict(X)


@pytest.mark.parametrize("kind", list(MODELS))
def test_onnx_and_serving_score_as_the_estimator(kind, data, tmp_path):
    train, X = data
    if kind == "ffm":  # its pairs cost O(width**2 k) a row in the graph and in NumPy: 24 s
        X = X[:10_000]  # for all rows (within 1.2e-15, checked once), 3 s for these
    model = fitted(kind, train)
    want = expected(model, X)
    assert E.model_tables(model)[0] == kind
    forms = ["padded"] if kind == "ffm" else ["padded", "offsets"]
    for form in forms:
        path = tmp_path / f"{form}.onnx"
        assert model.export(path, input_form=form) == [path]
        onnx.checker.check_model(str(path), full_check=True)  # standard operators, typed
        got = run_onnx(path, X, form)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= TOLERANCE, form
    model.export(tmp_path / "model.json", format="json")
    exported = serving.load(tmp_path / "model.json")
    got = exported.score(X.indptr, X.indices, X.data)
    assert np.abs(got - want).max() <= TOLERANCE
    # the JSON keeps the formula and the classes
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["formula"] == E.FORMULAS[kind]
    assert meta.get("classes") == getattr(model, "classes_", np.array([])).tolist() or not hasattr(
        model, "classes_"
    )


def test_a_model_fitted_on_float64_exports_float64_tables(data, tmp_path):
    """Large targets (scores near 1,000): the float64 tables score as predict to 1e-9."""
    train, X = data
    X64 = X[:5_000].astype(np.float64)
    model = SparseLinearRegression(max_iter=2).fit(train.X.astype(np.float64), 1e3 * train.y)
    for form in ("padded", "offsets"):
        model.export(tmp_path / "m.onnx", input_form=form)
        assert np.abs(run_onnx(tmp_path / "m.onnx", X64, form) - model.predict(X64)).max() <= 1e-9
    model.export(tmp_path / "m.json", format="json")
    exported = serving.load(tmp_path / "m.json")
    assert exported.tables["coef"].dtype == np.float64
    got = exported.score(X64.indptr, X64.indices, X64.data)
    assert np.abs(got - model.predict(X64)).max() <= 1e-9


def test_large_tables_go_beside_the_json_and_the_onnx_model(data, tmp_path, monkeypatch):
    train, X = data
    model = fitted("fm", train)
    monkeypatch.setattr(E, "INLINE_VALUES", 100)
    written = E.export(model, tmp_path / "fm.json", format="json")
    assert written == [tmp_path / "fm.json", tmp_path / "fm.json.npz"]
    meta = json.loads(written[0].read_text())
    assert meta["npz"] == "fm.json.npz" and meta["tables"]["factors"]["npz"] == "factors"
    with np.load(written[1], allow_pickle=False) as npz:
        assert {"coef_rows", "coef_values", "factors_rows", "factors_values"} <= set(npz.files)
    X = X[:5_000]
    got = serving.load(written[0]).score(X.indptr, X.indices, X.data)
    assert np.abs(got - model.predict_proba(X)).max() <= TOLERANCE
    # ONNX: tables beyond ONNX_INLINE_BYTES go to <name>.data, which the runtime reads
    monkeypatch.setattr(E, "ONNX_INLINE_BYTES", 100)
    written = E.export(model, tmp_path / "fm.onnx")
    assert written == [tmp_path / "fm.onnx", tmp_path / "fm.onnx.data"]
    assert written[0].stat().st_size < 10_000
    assert np.abs(run_onnx(written[0], X, "padded") - model.predict_proba(X)).max() <= TOLERANCE


def test_matrix_factorization_scores_and_recommends(tmp_path):
    rng = np.random.default_rng(0)
    X = sp.random(60, 40, density=0.2, format="csr", random_state=rng)
    X.data = np.ceil(5 * X.data)
    X = sp.vstack([X, sp.csr_matrix((2, 40))]).tocsr()  # two cold users
    users, items = np.divmod(np.arange(62 * 40), 40)
    for loss in ("squared", "bpr"):
        model = MatrixFactorization(n_components=4, loss=loss, max_iter=3, random_state=0).fit(X)
        model.export(tmp_path / "mf.onnx")
        model.export(tmp_path / "mf.json", format="json")
        want = model.predict(users, items)
        session = ort.InferenceSession(str(tmp_path / "mf.onnx"))
        got = session.run(None, {"user_ids": users, "item_ids": items})[0]
        assert np.abs(got - want).max() <= TOLERANCE
        exported = serving.load(tmp_path / "mf.json")
        assert np.abs(exported.score_pairs(users, items) - want).max() <= TOLERANCE
        everyone = np.arange(62)
        assert np.array_equal(exported.recommend(everyone, 5), model.recommend(everyone, 5))
        assert np.array_equal(exported.recommend(everyone, 45, exclude_seen=False),
                              model.recommend(everyone, 45, exclude_seen=False))  # fmt: skip
        # the top-k graph, seen items excluded by the mask the JSON's seen lists give
        model.export(tmp_path / "top.onnx", graph="recommend")
        top = ort.InferenceSession(str(tmp_path / "top.onnx"))
        seen = sp.csr_matrix((np.ones(exported.tables["seen_indices"].size, bool),
                              exported.tables["seen_indices"], exported.tables["seen_indptr"]),
                             shape=(62, 40)).toarray()  # fmt: skip
        for k, exclude in [(40, seen), (10, np.zeros_like(seen))]:
            got = top.run(None, {"user_ids": everyone, "k": np.array([k]), "exclude": exclude})[0]
            assert np.array_equal(got, model.recommend(everyone, k, exclude_seen=exclude.any()))


# -- the hashing spec ------------------------------------------------------------------------
# crosses of every kind: pairs of categoricals, a count with a categorical, a triple, a field
# with every other one
CRITEO_CROSSES = "C1*C2,I1*C3,C4*C5*C6,I2*"


@pytest.mark.parametrize("interactions", [None, CRITEO_CROSSES])
def test_hashing_spec_reimplemented_from_its_json_matches_the_readers(interactions, tmp_path):
    """serving.RowHasher implements the spec's rules in plain Python; given only the JSON's
    data section it reads the packaged sample as read_criteo does, and passes every test
    vector."""
    path = tmp_path / "spec.json"
    data = {"n_bits": 16, "field_aware": True, "interactions": interactions}
    E.hashing_spec(path, data, n_pairs=500, n_rows=50)
    spec = json.loads(path.read_text())
    n_crosses = 3 + 38 if interactions else 0
    assert spec["rules"] == E.SPEC_RULES and spec["n_fields"] == 39 + n_crosses
    hasher = serving.RowHasher(spec["data"])
    assert hasher.n_fields == spec["n_fields"]
    assert [tuple(c["of"]) for c in spec["crosses"]] == hasher.crosses
    if interactions:  # the first crosses as named, then I2 (field 1) with each other field
        assert spec["crosses"][:4] == [
            {"field": 39, "of": [13, 14], "name": "C1 x C2"},
            {"field": 40, "of": [0, 15], "name": "I1 x C3"},
            {"field": 41, "of": [16, 17, 18], "name": "C4 x C5 x C6"},
            {"field": 42, "of": [0, 1], "name": "I1 x I2"},
        ]
    for field, text, h, column in spec["test_vectors"]["pairs"]:
        assert serving.murmurhash3_32(text.encode(), field) == h
        assert murmurhash3_32(text.encode(), seed=field, positive=True) == h  # the named hash
        assert hasher.column(field, text.encode()) == column
    crosses = spec["test_vectors"]["crosses"]
    assert len(crosses) == (125 if interactions else 0)
    for field, hashes, h, column in crosses:
        packed = struct.pack(f"<{len(hashes)}I", *hashes)  # the rule's words, with sklearn
        assert murmurhash3_32(packed, seed=field, positive=True) == h
        assert hasher.cross_column(field, hashes) == (h, column)
    rows = spec["test_vectors"]["rows"]
    assert len(rows) == 53  # 50 of the sample, 3 that reach every rule
    for row in rows:
        assert hasher.row(row["line"]) == (row["label"], row["columns"], row["values"])
    # the whole validation sample, raw text through the spec, as the reader reads it
    with gzip.open(sample_path("valid"), "rb") as f:
        indptr, indices, values, labels = hasher.rows(f)
    X, y = read_criteo(sample_path("valid"), n_bits=16, field_aware=True,
                       interactions=interactions).read()  # fmt: skip
    assert np.array_equal(indptr, X.indptr) and np.array_equal(indices, X.indices)
    assert np.array_equal(values, X.data) and np.array_equal(labels, y)


def test_hashing_spec_of_csv_with_numeric_columns_weights_and_crosses(tmp_path):
    """Crosses of numbers carry the product of the values and are absent where a number is;
    the weight column is in the lines but is no field."""
    crosses = ["a*n", "n*m*b", "b*a"]
    data = {"format": "csv", "label": "y", "features": ["a", "n", "b", "m"],
            "numeric": ["n", "m"], "n_bits": 10, "field_aware": True, "weight_column": "w",
            "interactions": crosses}  # fmt: skip
    spec = E.hashing_spec(None, data, n_pairs=100, n_rows=100)
    assert spec["header"] == "y,a,n,b,m,w" and spec["n_fields"] == 4 + 3
    assert [c["of"] for c in spec["crosses"]] == [[0, 1], [1, 3, 2], [2, 0]]
    hasher = serving.RowHasher(spec["data"], spec["header"].split(","))
    for row in spec["test_vectors"]["rows"]:
        assert hasher.row(row["line"]) == (row["label"], row["columns"], row["values"])
    for field, hashes, h, column in spec["test_vectors"]["crosses"]:
        assert hasher.cross_column(field, hashes) == (h, column)
    rows = spec["test_vectors"]["rows"]
    numeric = [r for r in rows if any(v not in (1, 2) for v in r["values"])]
    assert numeric  # the numeric column's values are in the vectors
    # an empty n: no n, and neither cross with n (at most 7 - 3 columns, fewer if two collide)
    without_n = [r for r in rows if r["line"].split(",")[2] == ""]
    assert without_n and all(len(r["columns"]) <= 4 for r in without_n)
    # n x m x b's value is n * m where both are given: '1,3.5,-2,b,3.5,1' has -7
    line = "1,3.5,-2,b,3.5,1"
    _, cols, vals = hasher.row(line)
    n_m_b = hasher.cross_column(5, [murmurhash3_32(b"", seed=f, positive=True) for f in (1, 3)]
                                + [murmurhash3_32(b"b", seed=2, positive=True)])[1]  # fmt: skip
    assert vals[cols.index(n_m_b)] == -7.0
    # and read_csv agrees on a file of those lines
    path = tmp_path / "rows.csv"
    path.write_text("\n".join([spec["header"], line] + [r["line"] for r in rows]))
    X, _ = read_csv(path, "y", ["a", "n", "b", "m"], numeric=["n", "m"], n_bits=10,
                    field_aware=True, interactions=crosses).read()  # fmt: skip
    assert X[0].indices.tolist() == cols and X[0].data.tolist() == vals
    X = X[1:]
    indptr, indices, values, _ = hasher.rows(r["line"] for r in rows)
    assert np.array_equal(indices, X.indices) and np.array_equal(values, X.data)


def test_hashing_spec_of_libsvm_rows(tmp_path):
    path = tmp_path / "rows.svm"
    path.write_text("1 3:0.5 1:2 # a comment\n-1 qid:4 2:1e-3 2:1\n\n0 5:-7\n")
    data = {"format": "libsvm", "n_features": 6, "zero_based": False}
    spec = E.hashing_spec(None, data, sample=path)
    assert spec["test_vectors"]["pairs"] == [] and len(spec["test_vectors"]["rows"]) == 3
    hasher = serving.RowHasher(spec["data"])
    for row in spec["test_vectors"]["rows"]:
        assert hasher.row(row["line"]) == (row["label"], row["columns"], row["values"])
    with pytest.raises(serving.FormatError, match="outside the model's columns"):
        hasher.row("1 7:1")


# -- raw rows through the spec and the export, against `sparseopt predict` -------------------
def spec_and_export_score_as_predict(files, options, section, read, header=None):
    """Train on ``files["train"]`` with ``options``, then score ``files["valid"]`` by
    ``sparseopt predict``, by its raw lines through the exported hashing spec and JSON model
    (sparseopt.serving), by the estimator on ``read(path)`` and by the ONNX export: all equal.
    ``section``: what the data section holds beside its defaults. Returns the JSON export."""
    tmp_path = files["train"].parent
    run = tmp_path / "run"
    assert main(["train", str(files["train"]), "--out", str(run), "--epochs", "1", *options]) == 0
    model = run / "model.npz"
    assert main(["predict", str(model), str(files["valid"]), "--out", str(tmp_path / "p")]) == 0
    predicted = np.loadtxt(tmp_path / "p")
    spec = tmp_path / "spec.json"
    out = tmp_path / "model.json"
    assert main(["export", str(model), "--format", "json", "--out", str(out),
                 "--hashing-spec", str(spec)]) == 0  # fmt: skip
    exported = serving.load(out)
    data = {**E._data_section(None), **section}
    assert json.loads(spec.read_text())["data"] == exported.meta["data"] == data
    lines = files["valid"].read_text().splitlines()
    lines, header = (lines[1:], lines[0].split(",")) if header else (lines, None)
    scores = exported.score_lines(lines, header)[:, 1]
    assert np.allclose(scores, predicted, rtol=5e-6, atol=0)  # predict writes 6 digits
    X = read(files["valid"])
    from sparseopt import load

    assert np.abs(scores - load(model).predict_proba(X)[:, 1]).max() <= TOLERANCE
    # and the ONNX export of the same file
    assert main(["export", str(model), "--out", str(tmp_path / "model.onnx")]) == 0
    got = run_onnx(tmp_path / "model.onnx", X, "padded")[:, 1]
    assert np.abs(got - scores).max() <= TOLERANCE
    about = json.loads(onnx.load(str(tmp_path / "model.onnx")).metadata_props[0].value)
    assert about["data"] == data and about.get("downsampling") == exported.meta.get("downsampling")
    return exported


CROSSES = ["C1*C2", "I1*C3", "C4*C5*C6"]


@pytest.mark.parametrize(
    ("kind", "options", "section"),
    [
        ("lr", [], {}),
        ("fm", [], {}),
        ("ffm", ["--field-aware"], {"field_aware": True}),
        # crosses in FFM: each its own field and slice of columns
        ("ffm", ["--field-aware", "--interactions", ",".join(CROSSES)],
         {"field_aware": True, "interactions": CROSSES}),
        # a model of downsampled negatives: predict and the exports use the corrected intercept
        ("lr", ["--interactions", "I2*", "--negative-rate", "0.3"],
         {"interactions": ["I2*"], "negative_rate": 0.3}),
    ],
)  # fmt: skip
def test_raw_rows_through_spec_and_export_equal_sparseopt_predict(
    kind, options, section, tmp_path, monkeypatch
):
    monkeypatch.setenv("SPARSEOPT_DATA", str(tmp_path / "data_home"))
    files = {}
    for subset, n in [("train", 2000), ("valid", 500)]:
        with gzip.open(sample_path(subset), "rt") as f:
            files[subset] = tmp_path / f"{subset}.tsv"
            files[subset].write_text("".join(next(f) for _ in range(n)))
    section = {"n_bits": 16, **section}
    options = ["--n-bits", "16", "--model", kind, *options]

    def read(path):
        return read_criteo(path, n_bits=16, field_aware=section.get("field_aware", False),
                           interactions=section.get("interactions")).read()[0]  # fmt: skip

    exported = spec_and_export_score_as_predict(files, options, section, read)
    spec = json.loads((tmp_path / "spec.json").read_text())
    assert len(spec["test_vectors"]["crosses"]) == (500 if "interactions" in section else 0)
    if "negative_rate" in section:
        note = exported.meta["downsampling"]
        assert note["negative_rate"] == 0.3
        assert note["intercept_correction"] == pytest.approx(np.log(0.3))
    else:
        assert "downsampling" not in exported.meta


def test_raw_csv_rows_with_a_weight_column_and_crosses_equal_sparseopt_predict(
    tmp_path, monkeypatch
):
    """A CSV file with weights (not a feature), a numeric column crossed with a categorical,
    empty numbers: the spec and the export score its lines as ``sparseopt predict``."""
    monkeypatch.setenv("SPARSEOPT_DATA", str(tmp_path / "data_home"))
    rng = np.random.default_rng(0)
    files = {}
    for subset, n in [("train", 1500), ("valid", 300)]:
        a, b = rng.integers(20, size=n), rng.integers(5, size=n)
        x = np.round(rng.normal(size=n), 2)
        y = (rng.random(n) < 1 / (1 + np.exp(-(a % 3 - 1) * x - (b == 2)))).astype(int)
        lines = ["y,w,a,b,x"] + [
            f"{y[i]},{rng.choice(['1', '0.5', '2'])},s{a[i]},{b[i]},{'' if i % 7 == 0 else x[i]}"
            for i in range(n)
        ]  # fmt: skip
        files[subset] = tmp_path / f"{subset}.csv"
        files[subset].write_text("\n".join(lines) + "\n")
    options = ["--format", "csv", "--label", "y", "--numeric", "x", "--weight-column", "w",
               "--interactions", "a*x,a*b", "--n-bits", "12", "--model", "fm"]  # fmt: skip
    section = {"format": "csv", "label": "y", "numeric": ["x"], "weight_column": "w",
               "interactions": ["a*x", "a*b"], "n_bits": 12}  # fmt: skip

    def read(path):  # as a scorer reads it: the weight column left out
        return read_csv(path, "y", numeric=["x"], exclude=["w"], n_bits=12,
                        interactions=["a*x", "a*b"]).read()[0]  # fmt: skip

    spec_and_export_score_as_predict(files, options, section, read, header=True)


def test_hashing_spec_command_without_a_model(tmp_path, capsys):
    path = tmp_path / "spec.json"
    assert main(["export", "--hashing-spec", str(path), "--n-bits", "12", "--field-aware"]) == 0
    assert "2000 pairs, 203 rows" in capsys.readouterr().out
    spec = json.loads(path.read_text())
    assert spec["data"]["n_bits"] == 12 and spec["data"]["field_aware"] is True
    assert main(["export"]) == 1
    assert "give a MODEL file to export, --hashing-spec PATH, or both" in capsys.readouterr().err
    assert main(["export", str(path), "--out", str(path)]) == 1
    assert "--out names the model file itself" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "none.npz"), "--out", str(path)]) == 1
    assert "none.npz: no such model file" in capsys.readouterr().err


# -- bad input -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model(data):
    return fitted("logistic", make_ctr(300, n_fields=3, n_bits=N_BITS, random_state=0))


def test_unfitted_unknown_kind_and_format_are_refused(small_model, tmp_path):
    with pytest.raises(NotFittedError):
        SparseLogisticRegression().export(tmp_path / "m.onnx")
    with pytest.raises(E.ExportError, match="fitted sparseopt estimator"):
        E.export(object(), tmp_path / "m.onnx")
    with pytest.raises(E.ExportError, match="format must be one of"):
        small_model.export(tmp_path / "m.pmml", format="pmml")
    ffm = FFMClassifier(fields=column_fields(4, 2), max_iter=1)
    ffm.fit(make_ctr(50, n_fields=2, n_bits=4, field_aware=True, random_state=0).X, [0, 1] * 25)
    with pytest.raises(E.ExportError, match="graph='recommend' is an ONNX graph of matrix"):
        small_model.export(tmp_path / "m.onnx", graph="recommend")
    with pytest.raises(E.ExportError, match="input_form='padded' only"):
        ffm.export(tmp_path / "m.onnx", input_form="offsets")
    assert not list(tmp_path.iterdir())  # nothing written by a refused call


def test_unwritable_path_one_clear_error_and_atomic_writes(small_model, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="cannot write the export to .*choose a writable folder"):
        small_model.export(blocker / "model.onnx")
    with pytest.raises(OSError, match="is a folder"):
        small_model.export(tmp_path)
    # a write that fails midway leaves the previous export as it was, and no stray file
    path = tmp_path / "model.json"
    small_model.export(path, format="json")
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(E.Path, "write_text", broken)
    with pytest.raises(OSError, match="No space left on device"):
        small_model.export(path, format="json")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "model.json"]


def test_without_onnx_import_works_and_onnx_export_says_what_to_install(tmp_path):
    code = (
        "import sys; sys.modules['onnx'] = None\n"  # as if onnx were not installed
        "import sparseopt, numpy as np\n"
        "from sparseopt.datasets import make_ctr\n"
        "d = make_ctr(200, n_fields=3, n_bits=8, random_state=0)\n"
        "m = sparseopt.SparseLinearRegression(max_iter=1).fit(d.X, d.y.astype(float))\n"
        f"m.export({str(tmp_path / 'm.json')!r}, format='json')\n"
        "try:\n"
        f"    m.export({str(tmp_path / 'm.onnx')!r})\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'sparseopt[onnx]'" in out.stdout
    assert (tmp_path / "m.json").is_file() and not (tmp_path / "m.onnx").exists()


def test_serving_imports_neither_numba_nor_scikit_learn():
    code = (
        "import sys, sparseopt.serving\n"
        "print(sorted(m for m in ('numba', 'sklearn', 'scipy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_serving_refuses_bad_rows_and_indices(small_model, tmp_path):
    small_model.export(tmp_path / "m.json", format="json")
    exported = serving.load(tmp_path / "m.json")
    with pytest.raises(ValueError, match="outside 0 .. 4095"):
        exported.score([0, 1], [4096], [1.0])
    with pytest.raises(ValueError, match="indptr"):
        exported.score([0, 2], [1], [1.0])
    hasher = serving.RowHasher({"format": "criteo", "n_bits": 10})
    with pytest.raises(serving.FormatError, match="3 fields, expected 40"):
        hasher.row("1\t2\t3")
    with pytest.raises(serving.FormatError, match="not an integer"):
        hasher.row("\t".join(["1", "2.5"] + [""] * 38))
