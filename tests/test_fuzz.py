"""Property tests (Hypothesis): random sparse inputs and random edits of model files.

Each estimator meets 1,000 random CSR matrices (random shapes, int32 or int64 indices,
repeated and unsorted columns, empty rows, extreme and non-finite values, sometimes index
arrays that contradict the shape) through ``fit``, ``partial_fit`` and ``predict``, and
1,000 random edits of a saved model file (bytes flipped, inserted or cut, or the metadata
and arrays edited with their checksums recomputed) through ``load`` and ``predict``. Every
call must end in a ValueError or a right answer: predictions of the right shape, and a file
that loads holds exactly the saved model (so it predicts what the saved model did). A failed
``partial_fit`` leaves the model as it was. The models keep one dtype and one optimizer, so
the fuzzing reuses the kernels other tests compile; the crash-prone cases also run in child
processes in ``test_safety.py``.
"""

import copy
import functools
import hashlib
import inspect
import io
import json
import warnings
from typing import NamedTuple

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparseopt
from sparseopt import (
    FFMClassifier,
    FMClassifier,
    MatrixFactorization,
    SparseLinearRegression,
    SparseLogisticRegression,
)

N_CASES = 1000
FUZZ = settings(
    max_examples=N_CASES,
    deadline=None,
    derandomize=True,  # the same cases on every run: CI stays reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
WIDTH = 12
VALUES = [0.0, 1.0, -1.0, 0.5, 3.0, 1e-30, -1e-30, 1e6, -1e6, 1e30, 3e38, 1e300, -1e300]
FIELDS = np.arange(WIDTH, dtype=np.int32) % 3


def base_problem(classifier: bool):
    rng = np.random.default_rng(0)
    X = sp.random(200, WIDTH, density=0.3, format="csr", random_state=0)
    margins = X @ rng.normal(size=WIDTH)
    return X, ((margins > np.median(margins)).astype(int) if classifier else margins)


MODELS = {
    "lr": (lambda: SparseLogisticRegression(max_iter=2, random_state=0), True),
    "linreg": (lambda: SparseLinearRegression(max_iter=2, random_state=0), False),
    "fm": (lambda: FMClassifier(n_components=4, max_iter=2, random_state=0), True),
    "ffm": (lambda: FFMClassifier(fields=FIELDS, max_iter=2, random_state=0), True),
}


class Fitted(tuple):
    """(name, fitted model, its training X, y, its predictions, its saved file's bytes)."""

    def __repr__(self):
        return f"Fitted({self[0]})"


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, tmp_path_factory):
    make, classifier = MODELS[request.param]
    X, y = base_problem(classifier)
    model = make().fit(X, y)
    path = tmp_path_factory.mktemp("fuzz") / f"{request.param}.npz"
    model.save(path)
    return Fitted((request.param, model, X, y, model.predict(X), path.read_bytes()))


@st.composite
def csr_inputs(draw, width=None):
    """(X, labels, targets): a CSR matrix from random (row, column, value) triples."""
    n_rows = draw(st.integers(0, 12))
    n_cols = width if width is not None else draw(st.integers(1, 20))
    nnz = draw(st.integers(0, 40)) if n_rows else 0
    rows = np.array(draw(st.lists(st.integers(0, max(n_rows - 1, 0)), min_size=nnz,
                                  max_size=nnz)), dtype=np.int64)  # fmt: skip
    cols = draw(st.lists(st.integers(0, n_cols - 1), min_size=nnz, max_size=nnz))
    extreme = st.sampled_from(VALUES + [np.nan, np.inf, -np.inf])
    finite = draw(st.booleans())
    data = draw(st.lists(st.sampled_from(VALUES) if finite else extreme, min_size=nnz,
                         max_size=nnz))  # fmt: skip
    order = np.argsort(rows, kind="stable")  # CSR by rows; columns unsorted and repeated
    indptr = np.searchsorted(rows[order], np.arange(n_rows + 1))
    dtype = draw(st.sampled_from([np.int32, np.int64]))
    X = sp.csr_matrix(
        (np.array(data, float)[order], np.array(cols, dtype)[order], indptr.astype(dtype)),
        shape=(n_rows, n_cols),
    )
    corrupt = draw(st.integers(0, 9)) == 0 and nnz > 0
    if corrupt:  # an index array that contradicts the shape
        bad = draw(st.sampled_from([-1, n_cols, 2**31 - 1, 2**40]))
        if X.indices.dtype == np.int32 and bad == 2**40:
            bad = -(2**31)
        X.indices[draw(st.integers(0, nnz - 1))] = bad
    labels = np.array(draw(st.lists(st.integers(0, 1), min_size=n_rows, max_size=n_rows)))
    targets = np.array(draw(st.lists(st.sampled_from(VALUES), min_size=n_rows,
                                     max_size=n_rows)))  # fmt: skip
    return Drawn(X, labels, targets, not corrupt)


class Drawn(NamedTuple):
    """A drawn input; ``well_formed``: its index arrays fit its shape."""

    X: sp.csr_matrix
    labels: np.ndarray
    targets: np.ndarray
    well_formed: bool


def refused_or(call):
    """``call()``, or None when it raises a ValueError (with a message)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()
    except ValueError as exc:
        assert str(exc)
        return None


def dense_decision(model, X, magnitude=False) -> np.ndarray:
    """The decision function of a fitted linear model, FM or FFM computed densely in NumPy
    from its public attributes: ``x.w + b``, plus ``sum_{i<j} <v_i, v_j> x_i x_j`` (FM) or
    ``sum_{i<j} <v_{i,f(j)}, v_{j,f(i)}> x_i x_j`` (FFM). ``magnitude``: the same sums of
    absolute values, the scale of the rounding error of the result."""
    D = canonical(X).toarray()  # duplicates summed in the order the estimators sum them
    w, b = model.coef_[0], model.intercept_[0]
    V = model.factors_.astype(np.float64) if hasattr(model, "factors_") else None
    if magnitude:
        D, w, b = np.abs(D), np.abs(w), np.abs(b)
        V = None if V is None else np.abs(V)
    out = D @ w + b
    if V is None:
        return out
    if V.ndim == 2:  # FM: half of (sum_i v_i x_i)^2 - sum_i v_i^2 x_i^2
        sign = -1 if not magnitude else 1
        return out + 0.5 * ((D @ V) ** 2 + sign * (D**2) @ (V**2)).sum(axis=1)
    for r, row in enumerate(D):
        nz = np.flatnonzero(row)
        for a, i in enumerate(nz):
            for j in nz[a + 1 :]:
                out[r] += row[i] * row[j] * (V[i, FIELDS[j]] @ V[j, FIELDS[i]])
    return out


def decision(model, X):
    return model.decision_function(X) if hasattr(model, "decision_function") else model.predict(X)


def canonical(X):
    """``X`` with its duplicate entries summed and its columns sorted: the same matrix."""
    X = X.copy()
    X.sum_duplicates()
    return X


def assert_answers_right(model, X):
    """``model`` accepts ``X`` and answers what the dense computation and the canonical form
    of ``X`` give."""
    out = decision(model, X)
    assert out.shape == (X.shape[0],)
    np.testing.assert_array_equal(out, decision(model, canonical(X)))
    with np.errstate(all="ignore"):  # extreme inputs overflow the reference's sums
        reference = dense_decision(model, X)
        scale = dense_decision(model, X, magnitude=True)
    finite = scale < 1e200  # beyond, intermediate sums overflow in one order, not another
    with np.errstate(invalid="ignore"):
        error = np.abs(out - reference)[finite]
    assert (error <= 1e-9 * (1 + scale[finite])).all(), (out, reference)


@FUZZ
@given(data=st.data())
def test_random_inputs_to_fit_partial_fit_and_predict(fitted, data):
    """Valid input is accepted and answered right (against the dense computation and the
    canonical matrix); input that is non-finite, of another width or with indices outside its
    shape is refused; a refused partial_fit leaves the model as it was."""
    name, model, X0, y0, expected, _ = fitted
    same_width = data.draw(st.booleans())
    X, labels, targets, well_formed = data.draw(csr_inputs(WIDTH if same_width else None))
    y = labels if MODELS[name][1] else targets
    finite = bool(np.isfinite(X.data).all())
    valid = well_formed and finite
    out = refused_or(lambda: model.predict(X))
    if valid and X.shape[1] == WIDTH and X.shape[0] > 0:
        assert out is not None, "valid input refused"
        assert_answers_right(model, X)
    elif X.shape[0] > 0:  # no rows: refused as scikit-learn refuses them, or an empty answer
        assert out is None, "invalid input answered"
    trained = copy.deepcopy(model)
    if refused_or(lambda: trained.partial_fit(X, y)) is None:  # the model is as it was
        assert trained.n_features_in_ == model.n_features_in_
        for key, value in model.state_.arrays().items():
            np.testing.assert_array_equal(getattr(trained.state_, key), value)
    else:
        assert valid and X.shape[1] == WIDTH, "invalid input trained on"
    fresh = MODELS[name][0]()
    if refused_or(lambda: fresh.fit(X, y)) is not None:
        assert valid, "invalid input trained on"
        assert_answers_right(fresh, X)
        # the same fit from the canonical matrix: the same model
        again = MODELS[name][0]().fit(canonical(X), y)
        np.testing.assert_array_equal(again.state_.table, fresh.state_.table)
        np.testing.assert_array_equal(decision(again, X), decision(fresh, X))
    else:
        moderate = np.abs(X.data).max(initial=0) <= 1e6 and np.abs(y).max(initial=0) <= 1e6
        learnable = (
            X.shape[0] > 0
            and (np.unique(y).size == 2 if MODELS[name][1] else True)
            and (name != "ffm" or X.shape[1] == WIDTH)  # its fields name WIDTH columns
        )
        assert not (valid and moderate and learnable), "valid input refused by fit"


def _edited_file(blob: bytes, edits) -> bytes:
    out = bytearray(blob)
    for kind, position, value in edits:
        i = position % max(len(out), 1)
        if kind == "flip" and out:
            out[i] ^= value or 1
        elif kind == "insert" or not out:
            out[i:i] = bytes([value])
        else:  # cut
            del out[i:]
    return bytes(out)


@FUZZ
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "flip", "flip", "insert", "cut"]),
            st.integers(0, 2**20),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_random_byte_edits_of_a_model_file(fitted, tmp_path_factory, edits):
    name, blob = fitted[0], fitted[5]
    path = tmp_path_factory.getbasetemp() / f"edited-{name}.npz"
    path.write_bytes(_edited_file(blob, edits))
    loaded = refused_or(lambda: sparseopt.load(path))
    if loaded is not None:  # the metadata's checksum held: the parameters are the saved ones
        assert_same_model(loaded, fitted[1], fitted[2], fitted[1].get_params())


def _same_value(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if type(a) is not type(b):
        return False
    return repr(a) == repr(b) if hasattr(a, "hyperparameters") else a == b


def assert_same_model(loaded, model, X, params):
    """``loaded`` holds the fitted state of ``model`` (so it predicts the same on ``X``,
    kernel for kernel) and exactly the parameters ``params``."""
    assert loaded.n_features_in_ == model.n_features_in_
    np.testing.assert_array_equal(getattr(loaded, "classes_", 0), getattr(model, "classes_", 0))
    for key, value in model.state_.arrays().items():
        np.testing.assert_array_equal(getattr(loaded.state_, key), value)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    got = loaded.get_params()
    wrong = {k: (got[k], params[k]) for k in params if not _same_value(got[k], params[k])}
    assert set(got) == set(params) and not wrong, f"parameters (loaded, file): {wrong}"


def _written_params(path, cls) -> dict:
    """The parameters a model file holds, the defaults of ``cls`` for those it lacks."""
    _, params, _, _ = sparseopt._io.read_model(path)
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
    return {**defaults, **params}


def _json_values():
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
        st.text(max_size=8), st.sampled_from(["AdaGrad", "Adam", "class", "ndarray", "dict"]),
    )  # fmt: skip
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(
                st.sampled_from(["class", "params", "ndarray", "dtype", "dict", "x"]),
                inner,
                max_size=3,
            ),
        ),
        max_leaves=6,
    )


def _paths(tree, prefix=()):
    """Every path (tuple of keys and indices) into a JSON tree."""
    yield prefix
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, (*prefix, i))


@functools.cache
def _saved_arrays(blob: bytes) -> dict:
    with np.load(io.BytesIO(blob)) as z:
        return {k: z[k] for k in z.files}


def _rewritten(saved: dict, meta_edit, array_edit) -> bytes:
    """A model file's ``saved`` arrays, its metadata and arrays edited and every checksum
    recomputed."""
    arrays = dict(saved)
    meta = json.loads(arrays.pop("__meta__").tobytes())
    arrays.pop("__meta_sha256__")
    array_edit(arrays)
    meta["sha256"] = {
        k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in arrays.items()
    }
    meta = meta_edit(meta)
    text = json.dumps(meta).encode()
    digest = np.frombuffer(hashlib.sha256(text).hexdigest().encode(), np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays, __meta__=np.frombuffer(text, np.uint8), __meta_sha256__=digest)
    return out.getvalue()


@settings(FUZZ, max_examples=N_CASES // 2)  # on top of the 1,000 byte edits
@given(data=st.data())
def test_random_edits_of_metadata_and_arrays_with_checksums_recomputed(
    fitted, tmp_path_factory, data
):
    """What a deliberate editor could write: only the shape checks stand in the way."""
    name, blob = fitted[0], fitted[5]
    saved = _saved_arrays(blob)
    meta = json.loads(saved["__meta__"].tobytes())
    names = sorted(k for k in saved if not k.startswith("__"))
    paths = [p for p in _paths(meta) if p[:1] != ("sha256",)]
    where = data.draw(st.sampled_from(paths))
    action = data.draw(st.sampled_from(["replace", "delete"]))
    value = data.draw(_json_values())

    def meta_edit(tree):
        if not where:
            return value if action == "replace" else {}
        node = tree
        for key in where[:-1]:
            node = node[key]
        if action == "delete" and isinstance(node, dict):
            del node[where[-1]]
        else:
            node[where[-1]] = value
        return tree

    target = data.draw(st.sampled_from([None, *names]))
    how = data.draw(st.sampled_from(["drop", "shorter", "longer", "ravel", "T", "f4", "i8", "u1"]))

    def array_edit(arrays):
        if target is None:
            return
        a = arrays[target]
        arrays[target] = {
            "drop": None,
            "shorter": a[:-1],
            "longer": np.concatenate([a, a[:1]]) if a.ndim else a,
            "ravel": a.ravel(),
            "T": a.T.copy(),
            "f4": a.astype(np.float32),
            "i8": a.astype(np.int64) if a.dtype.kind in "iu" else a.astype(np.float32),
            "u1": a.astype(np.uint8) if a.dtype.kind in "iu" else a.astype(">f8"),
        }[how]
        if arrays[target] is None:
            del arrays[target]

    edits = data.draw(st.sampled_from(["meta", "array", "both"]))
    path = tmp_path_factory.getbasetemp() / f"rewritten-{name}.npz"
    path.write_bytes(
        _rewritten(
            saved,
            meta_edit if edits != "array" else (lambda tree: tree),
            array_edit if edits != "meta" else (lambda arrays: None),
        )
    )
    loaded = refused_or(lambda: sparseopt.load(path))
    if loaded is not None:  # the fitted state as saved, the parameters as written
        assert_same_model(loaded, fitted[1], fitted[2], _written_params(path, type(loaded)))


@pytest.mark.parametrize(
    "edit", [{"loss": "huber"}, {"device": "cuda"}, {"fit_intercept": False}, {"n_jobs": 2}]
)
def test_parameters_edited_in_a_file_load_as_written(fitted, tmp_path, edit):
    """A file whose parameters were edited (or set with set_params before saving) loads
    with those parameters and the fitted state as saved, or is refused."""
    model, X = fitted[1:3]
    saved = _saved_arrays(fitted[5])

    def meta_edit(meta):
        meta["params"].update(edit)
        return meta

    path = tmp_path / "edited.npz"
    path.write_bytes(_rewritten(saved, meta_edit, lambda arrays: None))
    loaded = refused_or(lambda: sparseopt.load(path))
    known = model.get_params()
    if loaded is None:
        assert not set(edit) <= set(known), "a file with a valid parameter refused"
    else:
        assert set(edit) <= set(known), "a file with an unknown parameter loaded"
        assert_same_model(loaded, model, X, {**known, **edit})


# -- matrix factorization ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def mf():
    rng = np.random.default_rng(0)
    X = sp.random(30, 20, density=0.3, format="csr", random_state=0)
    X.data = rng.integers(1, 6, X.nnz).astype(np.float64)
    return MatrixFactorization(n_components=4, max_iter=2, random_state=0).fit(X)


@FUZZ
@given(inputs=csr_inputs(), users=st.lists(st.integers(-3, 40), max_size=5))
def test_matrix_factorization_random_inputs(mf, inputs, users):
    X = inputs.X
    X.data = np.abs(X.data)
    items = [u % 25 - 2 for u in users]
    expected = mf.predict(np.arange(10), np.arange(10))
    out = refused_or(lambda: mf.predict(users, items))
    assert out is None or out.shape == (len(users),)
    trained = copy.deepcopy(mf)
    if refused_or(lambda: trained.partial_fit(X)) is None:
        np.testing.assert_array_equal(trained.predict(np.arange(10), np.arange(10)), expected)
    fresh = MatrixFactorization(n_components=4, max_iter=1, random_state=0)
    if refused_or(lambda: fresh.fit(X)) is not None:
        assert fresh.predict([0], [0]).shape == (1,)
