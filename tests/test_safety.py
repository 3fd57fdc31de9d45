"""Never crash, never lie: hostile calls, edited model files and absurd training.

The compiled kernels index their tables without bounds checks, so every case that could reach
one with a bad size runs in a child process: a crash there is a negative return code that
fails the test (naming the case that was running), not a dead test run. Each case must end in
a Python exception with a message (ValueError and its subclasses) or in the right answer, and
a failed call must leave the model's predictions exactly as they were. Many cases share one
child, which pays Numba's start-up and the loading of the cached kernels once.
"""

import json
import os
import subprocess
import sys
import textwrap

import child
import numpy as np
import pytest
import scipy.sparse as sp

from sparseopt import pipeline as P
from sparseopt.cli import main

# what a refused call may raise: ValueError and its subclasses (DivergenceError,
# scikit-learn's InvalidParameterError, the pipeline's PipelineError), or NotFittedError
REFUSALS = {"ValueError", "DivergenceError", "InvalidParameterError", "NotFittedError"}

PRELUDE = r'''
import hashlib, json, os, sys, warnings
import numpy as np, scipy.sparse as sp
import sparseopt
from sparseopt import (FFMClassifier, FMClassifier, FMRegressor, MatrixFactorization,
                       SparseLinearRegression, SparseLogisticRegression)
from sparseopt.optim import Adam, AdaGrad
warnings.simplefilter("ignore")

def case(name, fn):
    """Run one case; print [name, [outcome, value or message]] (outcome: ok or the error)."""
    print(json.dumps(["start", name]), flush=True)
    try:
        out = ["ok", fn()]
    except Exception as exc:
        out = [type(exc).__name__, str(exc)]
    print(json.dumps([name, out], default=repr), flush=True)

def problem(n=1500, d=40, classes=2, seed=0):
    """A sparse problem with a planted linear model: X, labels and real targets."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.15, format="csr", random_state=seed)
    w = rng.normal(size=(d, classes))
    margins = X @ w
    y = margins.argmax(1) if classes > 2 else (margins[:, 0] > np.median(margins[:, 0]))
    return X, y.astype(int), margins[:, 0]

def rewrite(src, dst, edit_meta=None, edit_arrays=None):
    """Copy a model file, editing its metadata and arrays, with every checksum recomputed
    (what a deliberate editor would do)."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    arrays.pop("__meta_sha256__")
    if edit_arrays:
        edit_arrays(arrays)
    meta["sha256"] = {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
                      for k, v in arrays.items()}
    if edit_meta:
        edit_meta(meta)
    text = json.dumps(meta).encode()
    digest = np.frombuffer(hashlib.sha256(text).hexdigest().encode(), np.uint8)
    np.savez(dst, **arrays, __meta__=np.frombuffer(text, np.uint8), __meta_sha256__=digest)
'''


def run_cases(body: str) -> dict:
    return child.run_cases(PRELUDE + textwrap.dedent(body))


# the cases that must return True wherever they appear
MUST_SUCCEED = ("answers as before", "still works", "a matching state works",
                "takes a new learning rate", "sums repeated entries", "as written")  # fmt: skip


def check_outcomes(results: dict, must_refuse=(), must_succeed=MUST_SUCCEED):
    """Every case refused with a message or returned True (its right answer); the cases
    named in ``must_refuse`` (prefixes) refused, those named in ``must_succeed`` (parts of
    their names) returned True: a refusal there fails, so a check such as "every method
    answers as before" cannot pass because a failed call wiped the model."""
    assert results
    wrong = {}
    for name, (outcome, payload) in results.items():
        refuse = any(name.startswith(p) for p in must_refuse)
        succeed = any(p in name for p in must_succeed)
        assert not (refuse and succeed), f"case {name!r} is both to refuse and to succeed"
        if outcome == "ok":
            if refuse or payload is not True:
                wrong[name] = "not refused" if refuse else payload
        elif succeed:
            wrong[name] = f"must succeed, raised {outcome}: {payload}"
        elif outcome not in REFUSALS or not payload:
            wrong[name] = f"{outcome}: {payload}"
    assert not wrong, "\n".join(f"{k}: {v}" for k, v in sorted(wrong.items()))



# -- a failed call changes nothing; no input reaches a kernel unchecked ----------------------
ESTIMATORS = """
fields = np.arange(40, dtype=np.int32) % 4
ESTIMATORS = {
    "lr": (lambda: SparseLogisticRegression(max_iter=2, random_state=0), 2),
    "lr3": (lambda: SparseLogisticRegression(max_iter=2, random_state=0), 3),
    "linreg": (lambda: SparseLinearRegression(max_iter=2, random_state=0), 0),
    "fm": (lambda: FMClassifier(max_iter=2, random_state=0), 2),
    "fmreg": (lambda: FMRegressor(max_iter=2, random_state=0), 0),
    "ffm": (lambda: FFMClassifier(fields=fields, max_iter=2, random_state=0), 2),
}

def data_for(classes):
    X, labels, values = problem(classes=max(classes, 2))
    return X, (values if classes == 0 else labels)

def outputs(m, X, tmp):
    \"\"\"Everything a fitted model answers about X, through every public method.\"\"\"
    out = [m.predict(X), m.score(X, y_of[id(m)]), m.coef_, m.intercept_, m.n_features_in_]
    if hasattr(m, "predict_proba"):
        out += [m.predict_proba(X), m.predict_log_proba(X), m.decision_function(X), m.classes_]
    if hasattr(m, "factors_"):
        out.append(m.factors_)
    m.save(tmp)
    out.append(sparseopt.load(tmp).predict(X))
    return out

def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
"""


def corrupted_inputs():
    """Source of (name, builder) pairs of sparse matrices with corrupted index arrays."""
    return """
def corrupted(X):
    \"\"\"Matrices whose index arrays contradict their shape (SciPy checks them only when a
    matrix is built).\"\"\"
    out = {}
    a = X.copy(); a.indices[3] = 10**6; out["column_too_large"] = a
    a = X.copy(); a.indices[3] = -1; out["column_negative"] = a
    a = X.copy(); a.indices = a.indices.astype(np.int64); a.indices[0] = 2**40
    out["column_int64_huge"] = a
    a = X.copy(); a.indptr[5] = a.indptr[6] + 3; out["indptr_decreasing"] = a
    a = X.copy(); a.indptr[-1] = a.indptr[-1] + 10; out["indptr_past_the_end"] = a
    a = X.copy(); a.indptr[0] = 2; out["indptr_not_from_zero"] = a
    a = X.tocsc(); a.indices[0] = 10**6; out["csc_row_too_large"] = a
    a = X.tocsc(); a.indptr[3] = a.indptr[-1] + 5; out["csc_indptr_bad"] = a
    a = X.tobsr(blocksize=(1, 1)); a.indices[0] = 10**6; out["bsr_column_too_large"] = a
    a = X.tocoo(copy=True); a.col[0] = 10**6; out["coo_column_too_large"] = a
    a = X.tocoo(copy=True); a.row[0] = -3; out["coo_row_negative"] = a
    return out
"""


def test_failed_calls_leave_linear_and_fm_models_unchanged():
    results = run_cases(
        ESTIMATORS
        + corrupted_inputs()
        + """
y_of = {}
wide = sp.csr_matrix((np.ones(1), [10**8 - 1], [0, 1]), shape=(1, 10**8))
for name, (make, classes) in ESTIMATORS.items():
    X, y = data_for(classes)
    m = make().fit(X, y)
    y_of[id(m)] = y
    tmp = f"/tmp/sparseopt-safety-{os.getpid()}-{name}.npz"
    before = outputs(m, X, tmp)
    X_nan = X.copy(); X_nan.data[0] = np.nan

    def fails(label, call):
        case(f"{name}: {label}", call)
        case(f"{name}: after {label}: every method answers as before",
             lambda: same(outputs(m, X, tmp), before))

    fails("fit on 10**8 columns, one row", lambda: m.fit(wide, [np.nan]))
    fails("fit on NaN", lambda: m.fit(X_nan, y))
    fails("partial_fit on 10**8 columns", lambda: m.partial_fit(wide, y[:1]))
    fails("warm-start fit on 10**8 columns",
          lambda: m.set_params(warm_start=True).fit(wide, y[:1]))
    m.set_params(warm_start=False)
    for label, bad in corrupted(X).items():
        fails(f"fit on {label}", lambda: m.fit(bad, y))
        fails(f"partial_fit on {label}", lambda: m.partial_fit(bad, y))
        case(f"{name}: predict on {label}", lambda: m.predict(bad))
    case(f"{name}: predict on 10**8 columns", lambda: m.predict(wide))
    case(f"{name}: predict on 39 columns", lambda: m.predict(X[:, :39]))
    m.set_params(optimizer="sgd", learning_rate=1e6)
    fails("fit at learning_rate=1e6 (diverges)", lambda: m.fit(X, y))
    m.set_params(learning_rate="auto", optimizer="adam")
    fails("partial_fit after optimizer='adam'", lambda: m.partial_fit(X, y))
    m.set_params(optimizer=AdaGrad(weight_decay=0.01))
    fails("partial_fit after adding weight decay", lambda: m.partial_fit(X, y))
    m.set_params(optimizer="adagrad")
    if hasattr(m, "n_components"):
        m.set_params(n_components=make().n_components + 1)
        fails("partial_fit after another n_components", lambda: m.partial_fit(X, y))
        m.set_params(n_components=make().n_components)
    if classes == 2:
        fails("partial_fit with an unknown label", lambda: m.partial_fit(X, y + 5))
        fails("partial_fit with other classes", lambda: m.partial_fit(X, y, classes=[0, 1, 2]))
    case(f"{name}: partial_fit still works", lambda: m.partial_fit(X, y) is m)

case("a table of 2**33 columns is refused before allocating",
     lambda: SparseLogisticRegression().fit(
         sp.csr_matrix((np.ones(2), [0, 2**33 - 1], [0, 1, 2]), shape=(2, 2**33)), [0, 1]))
"""
    )
    check_outcomes(
        results,
        must_refuse=[
            f"{n}: {label}"
            for n in ("lr", "lr3", "linreg", "fm", "fmreg", "ffm")
            for label in ("fit on", "partial_fit on", "warm-start", "predict on", "partial_fit a")
        ]
        + ["a table of 2**33"],
    )
    assert "bytes" in results["a table of 2**33 columns is refused before allocating"][1]
    diverged = results["lr: fit at learning_rate=1e6 (diverges)"]
    assert diverged[0] == "DivergenceError" and "learning_rate=1000000.0" in diverged[1]
    for name in ("fm", "ffm", "fmreg"):
        assert results[f"{name}: fit at learning_rate=1e6 (diverges)"][0] == "DivergenceError"
    assert "Adam differs from AdaGrad" in results["lr: partial_fit after optimizer='adam'"][1]


# -- model files: every field edited, every array reshaped -----------------------------------
def test_edited_model_files_are_refused_or_load_the_same_model():
    results = run_cases(
        ESTIMATORS
        + """
y_of = {}
BAD_VALUES = [None, "x", -1, 10**30, 1.5, True, [], {}, [1, 2], {"class": "AdaGrad"},
              {"class": "AdaGrad", "params": {"nope": 1}}, {"class": "LinearState", "params": {}},
              {"class": "__class__", "params": {}}, {"ndarray": [1], "dtype": "O"},
              {"ndarray": [2**70], "dtype": "<i4"}, {"ndarray": [[1], 2], "dtype": "<f8"},
              {"dict": [[1]]}]
for name, (make, classes) in ESTIMATORS.items():
    X, y = data_for(classes)
    m = make().fit(X, y)
    y_of[id(m)] = y
    src = f"/tmp/sparseopt-file-{os.getpid()}-{name}.npz"
    dst = src.replace(".npz", "-edited.npz")
    m.save(src)
    expected = m.predict(X)

    def loads_right(edit_meta=None, edit_arrays=None):
        rewrite(src, dst, edit_meta, edit_arrays)
        loaded = sparseopt.load(dst)
        return bool(np.array_equal(loaded.predict(X), expected))

    def edit(label, **kw):
        case(f"{name}: {label}", lambda: loads_right(**kw))

    with np.load(src) as z:
        meta = json.loads(z["__meta__"].tobytes())
        array_names = [k for k in z.files if not k.startswith("__")]
    for key in meta:
        edit(f"drop field {key}", edit_meta=lambda d, key=key: d.pop(key))
    for version in [0, -1, "2", "1", None, 1.5, True, 3, 99]:
        edit(f"version {version!r}", edit_meta=lambda d, v=version: d.update(version=v))
    for cls in ["SparseLogisticRegression", "SparseLinearRegression", "FMClassifier",
                "FMRegressor", "FFMClassifier", "MatrixFactorization", "load", "LinearState",
                "DivergenceError", "", 5, None]:
        if cls != type(m).__name__:
            edit(f"class {cls!r}", edit_meta=lambda d, c=cls: d.update({"class": c}))
    for field in ("params", "attributes", "sha256", "format"):
        for value in BAD_VALUES:
            edit(f"field {field} = {value!r}",
                 edit_meta=lambda d, f=field, v=value: d.update({f: v}))
    for section in ("params", "attributes"):
        for key in meta[section]:
            edit(f"drop {section}.{key}", edit_meta=lambda d, s=section, k=key: d[s].pop(k))
            for value in BAD_VALUES:
                edit(f"{section}.{key} = {value!r}",
                     edit_meta=lambda d, s=section, k=key, v=value: d[s].update({k: v}))
        edit(f"unknown {section} entry",
             edit_meta=lambda d, s=section: d[s].update(predict=1))
    n = m.n_features_in_
    for value in (0, n - 1, n + 1, 10**8):
        edit(f"n_features_in_ = {value}",
             edit_meta=lambda d, v=value: d["attributes"].update(n_features_in_=v))
    edit("optimizer Adam", edit_meta=lambda d: d["params"].update(optimizer="adam"))
    edit("alpha 0.1", edit_meta=lambda d: d["params"].update(alpha=0.1))
    edit("n_components 3", edit_meta=lambda d: d["params"].update(n_components=3))
    for key in array_names:
        def reshaped(a):
            yield "drop", None
            yield "first rows", a[:-1]
            yield "one more row", np.concatenate([a, a[:1]])
            yield "empty", a[:0]
            yield "flattened", a.ravel()
            yield "transposed", a.T.copy()
            if a.shape != (3, 2):  # else a valid table with other values
                yield "3x2", np.ones((3, 2), a.dtype)
            yield "float32", a.astype(np.float32)
            yield "int64", a.astype(np.int64)
            yield "int8", a.astype(np.int8)
            yield "big-endian", a.astype(a.dtype.newbyteorder(">"))
            yield "Fortran order", np.asfortranarray(np.atleast_2d(a))
            yield "NaN", np.full_like(a, np.nan) if a.dtype.kind == "f" else a
        with np.load(src) as z:
            original = z[key]
        for label, value in reshaped(original):
            def change(arrays, key=key, value=value):
                if value is None:
                    arrays.pop(key)
                else:
                    arrays[key] = value
            edit(f"array {key}: {label}", edit_arrays=change)
    edit("an extra array", edit_arrays=lambda arrays: arrays.update(extra=np.zeros(3)))
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    meta["attributes"]["n_features_in_"] = n + 1
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(dst, **arrays)
    case(f"{name}: metadata edited, its checksum kept", lambda: sparseopt.load(dst))
"""
    )
    check_outcomes(results)
    for name in ("lr", "lr3", "linreg", "fm", "fmreg", "ffm"):
        assert "metadata checksum" in results[f"{name}: metadata edited, its checksum kept"][1]
        version = results[f"{name}: version '2'"]
        assert version[0] == "ValueError" and "'version'" in version[1]
        assert results[f"{name}: array table: 3x2"][0] == "ValueError"


# -- matrix factorization ---------------------------------------------------------------------
def test_matrix_factorization_checks_its_tables_and_parameters():
    results = run_cases(
        corrupted_inputs()
        + """
rng = np.random.default_rng(0)
X = sp.random(60, 40, density=0.25, format="csr", random_state=0)
X.data = rng.integers(1, 6, X.nnz).astype(np.float64)
users, items = np.arange(40) % 60, np.arange(40)

def outputs(m):
    return [m.predict(users, items), m.recommend([0, 1, 2], n=5), m.similar_items([0, 3], n=4),
            m.user_factors_, m.item_factors_, m.user_biases_, m.item_biases_, m.n_features_in_]

def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))

m = MatrixFactorization(n_components=4, max_iter=3, random_state=0).fit(X)
sgd = MatrixFactorization(n_components=4, optimizer="sgd", learning_rate=0.01, random_state=0)
sgd.fit(X)
before = {id(m): outputs(m), id(sgd): outputs(sgd)}

def fails(label, call, model=m, **params):
    saved = model.get_params()
    model.set_params(**params)
    case(label, call)
    model.set_params(**saved)
    case(f"after {label}: every method answers as before",
         lambda: same(outputs(model), before[id(model)]))

fails("partial_fit with n_components=512", lambda: m.partial_fit(X), n_components=512)
fails("predict with n_components=2", lambda: m.predict(users, items), n_components=2)
fails("partial_fit with optimizer adam", lambda: m.partial_fit(X), optimizer="adam")
fails("partial_fit with weight decay", lambda: m.partial_fit(X),
      optimizer=AdaGrad(0.08, weight_decay=0.1))
fails("partial_fit diverging", lambda: sgd.partial_fit(X * 100), model=sgd, learning_rate=1e4)
fails("fit diverging", lambda: m.fit(X * 100), optimizer="sgd", learning_rate=50.0)
dup = sp.coo_matrix((np.array([3.0, 4.0, 5.0]), ([0, 0, 1], [2, 2, 3])), shape=(60, 40))
fails("fit with a repeated rating (COO)", lambda: m.fit(dup))
unsorted = sp.csr_matrix((np.array([3.0, 4.0]), np.array([2, 2]), np.array([0, 2] + [2] * 59)),
                         shape=(60, 40))
fails("partial_fit with a repeated rating (CSR)", lambda: m.partial_fit(unsorted))
for label, bad in corrupted(X).items():
    fails(f"fit on {label}", lambda: m.fit(bad))
    fails(f"partial_fit on {label}", lambda: m.partial_fit(bad))

def new_rate_applies():
    a = MatrixFactorization(n_components=4, max_iter=1, random_state=0).fit(X)
    b = MatrixFactorization(n_components=4, max_iter=1, random_state=0).fit(X)
    b.set_params(learning_rate=0.3)
    a.partial_fit(X); b.partial_fit(X)
    return not np.array_equal(a.predict(users, items), b.predict(users, items)) and (
        b.optimizer_.learning_rate == 0.3)
case("partial_fit takes a new learning rate", new_rate_applies)
huge = sp.csr_matrix((np.array([5.0]), (np.array([0]), np.array([2**36]))), shape=(1, 2**37))
fails("fit on 2**37 items", lambda: m.fit(huge))
fails("partial_fit on 2**37 items", lambda: m.partial_fit(huge))

def implicit_sums_repeats():
    # BPR on a COO matrix with a repeated entry fits the model of the summed matrix
    summed = sp.csr_matrix((np.array([7.0, 5.0]), ([0, 1], [2, 3])), shape=(60, 40))
    a, b = (MatrixFactorization(n_components=4, loss="bpr", max_iter=1, random_state=0)
            for _ in range(2))
    a.fit(dup)
    b.fit(summed)
    return all(np.array_equal(x, y) for x, y in zip(outputs(a), outputs(b)))
case("implicit feedback sums repeated entries", implicit_sums_repeats)

src = f"/tmp/sparseopt-mf-{os.getpid()}.npz"
dst = src.replace(".npz", "-edited.npz")

def saved_after_set_params():
    # a model whose optimizer was changed after fitting saves and loads as it stood
    a = MatrixFactorization(n_components=4, max_iter=1, random_state=0).fit(X)
    a.set_params(optimizer="adam")
    a.save(dst)
    b = sparseopt.load(dst)
    return b.optimizer == "adam" and all(np.array_equal(x, y)
                                         for x, y in zip(outputs(a), outputs(b)))
case("a model saved after set_params loads as written", saved_after_set_params)
m.save(src)
expected = m.predict(users, items)

def loads_right(edit_meta=None, edit_arrays=None):
    rewrite(src, dst, edit_meta, edit_arrays)
    loaded = sparseopt.load(dst)
    return bool(np.array_equal(loaded.predict(users, items), expected))

with np.load(src) as z:
    meta = json.loads(z["__meta__"].tobytes())
    names = [k for k in z.files if not k.startswith("__")]
mu, (lo, hi) = m.global_mean_, m.rating_range_
(bu, pu), (bi, qi) = m._weights("user"), m._weights("item")
scores = mu + bu[users] + bi[items] + np.einsum("ij,ij->i", pu[users], qi[items])  # unclipped

def loads_as_written(value):
    # a file whose global_mean_ was edited inside the rating range is another valid model
    # (a deliberate editor recomputes the checksums): it loads with that mean, its scores
    # shifted by the edit and clipped to the range
    rewrite(src, dst, edit_meta=lambda d: d["attributes"].update(global_mean_=value))
    loaded = sparseopt.load(dst)
    shifted = np.clip(scores + (value - mu), lo, hi)
    return loaded.global_mean_ == value and bool(
        np.allclose(loaded.predict(users, items), shifted, rtol=0, atol=1e-6))
for value in (lo, (lo + hi) / 2, hi):
    case(f"file: global_mean_ = {value!r}: loads as written", lambda v=value: loads_as_written(v))
for value in (lo - 1e-3, hi + 1, -1e30):
    case(f"file: global_mean_ outside the rating range ({value!r})",
         lambda v=value: loads_as_written(v))
for key in meta["attributes"]:
    case(f"file: drop attributes.{key}",
         lambda k=key: loads_right(edit_meta=lambda d: d["attributes"].pop(k)))
    for value in [None, "x", -1, 10**30, 1.5, [], [5, 1], {"class": "Adam", "params": {}}]:
        if key == "global_mean_" and value in (-1, 1.5):  # numbers: checked as written above
            continue
        case(f"file: attributes.{key} = {value!r}", lambda k=key, v=value: loads_right(
            edit_meta=lambda d: d["attributes"].update({k: v})))
for value in (2, 8, 512):
    case(f"file: n_components = {value}", lambda v=value: loads_right(
        edit_meta=lambda d: d["params"].update(n_components=v)))
for key in names:
    with np.load(src) as z:
        a = z[key]
    for label, value in [("drop", None), ("first rows", a[:-1]), ("3x2", np.ones((3, 2), a.dtype)),
                         ("one more row", np.concatenate([a, a[:1]])), ("flattened", a.ravel()),
                         ("int32", a.astype(np.int32)), ("float64", a.astype(np.float64)),
                         ("shuffled", rng.permutation(a)), ("big values", a * 0 + 10**6)]:
        def change(arrays, key=key, value=value):
            if value is None:
                arrays.pop(key)
            else:
                arrays[key] = value
        case(f"file: array {key}: {label}", lambda c=change: loads_right(edit_arrays=c))
"""
    )
    # edits that leave a valid model with other values (a permuted bias table, a new clock,
    # a new iteration count): the file loads and answers; only shapes must be refused (an
    # edited global_mean_ is checked exactly above)
    semantic = ("shuffled", "big values", "n_iter_", "clock")
    for name in [k for k in results if k.startswith("file:") and any(s in k for s in semantic)]:
        if results[name][0] == "ok":
            results.pop(name)
    check_outcomes(results, must_refuse=["partial_fit with", "predict with", "fit ",
                                         "file: global_mean_ outside"])  # fmt: skip
    assert "global_mean_" in results["file: global_mean_ outside the rating range (-1e+30)"][1]
    assert "repeats 1 (user, item)" in results["fit with a repeated rating (COO)"][1]
    assert results["partial_fit diverging"][0] in ("ValueError", "DivergenceError")
    assert "n_components=512" in results["partial_fit with n_components=512"][1]
    assert "bytes" in results["partial_fit on 2**37 items"][1]


# -- the command line --------------------------------------------------------------------------
@pytest.fixture
def sample(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEOPT_DATA", str(tmp_path / "data_home"))
    import gzip

    from sparseopt.datasets import sample_path

    with gzip.open(sample_path("train"), "rt") as f:
        lines = [next(f) for _ in range(3000)]
    path = tmp_path / "train.tsv"
    path.write_text("".join(lines))
    return path


def train_args(data, out, *extra):
    return ["train", str(data), "--out", str(out), "--n-bits", "14", "--chunk-size", "1000", *extra]


def test_train_refuses_absurd_learning_rates(sample, tmp_path, capsys):
    for optimizer in ("sgd", "adagrad"):
        run = tmp_path / optimizer
        argv = train_args(sample, run, "--learning-rate", "1e6", "--optimizer", optimizer)
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "diverged" in err and "learning_rate=1000000.0" in err
        assert not (run / "model.npz").exists()
    assert main(train_args(sample, tmp_path / "good")) == 0
    # chunks of 500 rows: too few to judge one, the epoch's 3,000 are judged at its end
    argv = train_args(sample, tmp_path / "epoch", "--learning-rate", "1e6", "--optimizer", "sgd")
    assert main([*argv, "--chunk-size", "500"]) == 1
    assert "epoch 1 ended with a training logloss" in capsys.readouterr().err


def test_run_folder_is_locked_for_one_run(sample, tmp_path, capsys):
    run = tmp_path / "run"
    config = P.TrainConfig(
        data=str(sample), validation=None, model="lr", spec={"format": "criteo", "n_bits": 14},
        params={}, chunk_size=1000, skip_bad_lines=False, seed=0,
    )  # fmt: skip
    first = P.Trainer(config, run, log=lambda line: None)
    first.start(resume=False)
    assert (run / "run.lock").read_text().strip() == str(os.getpid())
    assert main(train_args(sample, run)) == 1
    err = capsys.readouterr().err
    assert f"in use by another sparseopt train (process {os.getpid()})" in err
    first.run()  # releases the lock when it ends
    assert main(train_args(sample, run)) == 0


def test_resume_removes_what_a_killed_run_left(sample, tmp_path, capsys):
    run = tmp_path / "run"

    class Killed(Exception):
        pass

    def kill(epoch, chunk):
        if chunk == 1:
            raise Killed

    with pytest.raises(Killed):
        main(train_args(sample, run, "--checkpoint-every", "1"), after_chunk=kill)
    leftovers = [
        run / ".checkpoint-000009.npz.x1y2.tmp",  # a model file cut short (save_model)
        run / f".checkpoint.json.{os.getpid() + 1}.tmp",  # a record cut short
        run / "checkpoint-000099.npz",  # a checkpoint the record no longer names
    ]
    for path in leftovers:
        path.write_bytes(b"\0" * 1000)
    assert main(train_args(sample, run, "--checkpoint-every", "1", "--resume")) == 0
    assert not any(p.exists() for p in leftovers)
    # read after the resumed run: the record names the checkpoint it wrote, not the planted one
    record = json.loads((run / "checkpoint.json").read_text())
    assert record["state"]["checkpoint"] != "checkpoint-000099.npz"
    assert (run / record["state"]["checkpoint"]).is_file()
    names = sorted(p.name for p in run.iterdir())
    assert [n for n in names if n.endswith(".tmp")] == []


@pytest.mark.parametrize(
    "content", [b"", b"{not json", b"[]", b'{"state": {}, "config": {}}', b'{"state": 1}']
)
def test_a_damaged_checkpoint_record_is_named(sample, tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.json").write_bytes(content)
    for extra in ((), ("--resume",)):
        assert main(train_args(sample, run, *extra)) == 1
        err = capsys.readouterr().err
        assert str(run / "checkpoint.json") in err and "damaged" in err and err.count("\n") == 1


def test_command_line_reports_edited_model_files_in_one_line(sample, tmp_path):
    run = tmp_path / "run"
    assert main(train_args(sample, run)) == 0
    model = run / "model.npz"
    with np.load(model) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["version"] = "2"
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    edited = tmp_path / "edited.npz"
    np.savez(edited, **arrays)
    for command in ("predict", "evaluate"):
        extra = ["--out", str(tmp_path / "p.txt")] if command == "predict" else []
        proc = subprocess.run(
            [sys.executable, "-m", "sparseopt", command, str(edited), str(sample), *extra],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1
        assert proc.stderr.count("\n") == 1 and "sparseopt: error:" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_command_line_names_its_own_flag_for_bad_lines(sample, tmp_path, capsys):
    lines = sample.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.tsv"
    bad.write_text("".join(lines[:10] + ["1\tnot a number\n"] + lines[10:]))
    assert main(train_args(bad, tmp_path / "run")) == 1
    err = capsys.readouterr().err
    assert "--skip-bad-lines skips such lines" in err and "skip_bad_lines=True" not in err


def test_data_description_is_checked():
    for bad in ({"n_bits": "14"}, {"n_bits": 99}, {"sep": 5}, {"format": ["criteo"]}):
        spec = {"format": "criteo", "n_bits": 14, **bad}
        with pytest.raises(P.PipelineError, match="data option"):
            P.DataSpec(**spec)


def test_sparse_structure_check():
    from sparseopt.estimators._safety import check_sparse_structure

    X = sp.random(1000, 50, density=0.1, format="csr", random_state=0)
    check_sparse_structure(X)  # a valid matrix passes
    X.indices[0] = 50
    with pytest.raises(ValueError, match="column index 50"):
        check_sparse_structure(X)


def test_optimizer_state_must_fit_the_optimizer():
    results = run_cases(
        """
from sparseopt.optim import SGD, AdaGrad, Adam, Momentum
params = np.zeros(6)

def update(opt, state, indices=(1, 5), grads=(1.0, -1.0)):
    opt.update(params, state, np.array(indices), np.array(grads))
    return True

case("Adam with AdaGrad's state", lambda: update(Adam(0.1), AdaGrad(0.1).init(params)))
case("weight decay with a state made without it",
     lambda: update(SGD(0.1, weight_decay=0.1), SGD(0.1).init(params)))
state = Momentum(0.1).init(params)
state.scratch = state.scratch[:2]
case("a short scratch array", lambda: update(Momentum(0.1), state))
state = Adam(0.1).init(params)
state.slots = np.asfortranarray(state.slots)
case("Fortran-ordered slots", lambda: update(Adam(0.1), state))
case("an index past the end", lambda: update(AdaGrad(0.1), AdaGrad(0.1).init(params), [6], [1.0]))
case("catch_up with another optimizer's state",
     lambda: Adam(0.1).catch_up(params, Momentum(0.1).init(params)))
case("a matching state works", lambda: update(Adam(0.1), Adam(0.1).init(params)))
"""
    )
    check_outcomes(results, must_refuse=["Adam with", "weight decay", "a short", "Fortran",
                                         "an index", "catch_up"])  # fmt: skip


def test_format_version_1_files_still_load(tmp_path):
    import sparseopt

    X = sp.random(300, 20, density=0.2, format="csr", random_state=0)
    y = np.arange(300) % 2
    model = sparseopt.SparseLogisticRegression(max_iter=1).fit(X, y)
    model.save(tmp_path / "v2.npz")
    with np.load(tmp_path / "v2.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "__meta_sha256__"}
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["version"] = 1
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "v1.npz", **arrays)
    loaded = sparseopt.load(tmp_path / "v1.npz")
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
