"""Export fitted models for serving without sparseopt: ONNX graphs, JSON weights, hashing spec.

- :func:`export` writes a fitted estimator as an ONNX graph (standard operators only, for
  ONNX Runtime and any other ONNX runtime) or as JSON weights with their formula (large tables
  in an ``.npz`` beside it), from the estimator's public fitted attributes (``coef_``,
  ``intercept_``, ``factors_``, the user and item factors and biases...).
- :func:`hashing_spec` writes the readers' rules that turn a raw text row into columns, with
  test vectors, so that a server in another language hashes rows as training did.
- :mod:`sparseopt.serving` scores JSON exports and raw rows in plain NumPy.

Tables are exported in the model's own precision (float32, from float32 features, or
float64); every score is accumulated in float64, as the estimators do, so an export scores as
``predict_proba`` / ``predict`` to about 1e-7 or better.

The ONNX graphs take a **padded batch** by default: ``indices`` (int64, shape
``(n_rows, width)``) and ``values`` (same shape; float32, float64 for a model fitted on float64
features), each row's entries first, then
padding entries of index 0 and value 0 (any valid index with value 0 adds nothing, as long as
the row's real entries have distinct columns). ONNX Runtime serves it faster than the CSR form
(``input_form="offsets"``: ``indices`` and ``values`` of shape ``(nnz,)`` and ``offsets`` of
shape ``(n_rows + 1,)``), see ``benchmarks/bench_serving.py``. Outputs, float64:
``probabilities`` of shape ``(n_rows, n_classes)`` for classifiers (as ``predict_proba``),
``predictions`` of shape ``(n_rows,)`` for regressors; matrix factorization takes
``user_ids`` and ``item_ids`` (int64, ``(n_pairs,)``) and gives ``scores`` (as ``predict``),
or with ``graph="recommend"`` each user's top ``k`` items (as ``recommend``). The graphs check
no more than ONNX Runtime does: an index beyond a table is an error, but a negative one counts
from its end (ONNX's ``Gather``), and offsets are taken as given (0 first, never decreasing,
``nnz`` last): check rows before scoring them, as :mod:`sparseopt.serving` does. The model's
``metadata_props`` hold ``sparseopt``: the kind, formula, classes and data section as JSON.

A JSON export holds ``format``, ``version``, ``kind``, ``formula`` (:data:`FORMULAS`), ``rows``
(what x is), ``n_features``, ``classes`` (classifiers), ``global_mean`` and ``clip`` (matrix
factorization), ``data`` (the hashing spec's data section, when known), ``downsampling``
(a model trained on a fraction of the negatives: its rate and the correction of the intercept,
already applied) and ``tables``: per
table ``shape``, ``dtype`` and ``sparse``; a sparse table lists only its rows with a nonzero
(``rows``, others are 0), a dense one all of them; the values are inline (``values``, nested
lists in row order) or in the ``.npz`` named by ``npz`` as arrays ``<table>_values`` and
``<table>_rows``. FFM's ``factors`` has shape ``(n_features, n_fields, k)`` and ``fields`` the
field of each column (-1: no pairs).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .serving import FORMAT, VERSION

FORMATS = ("onnx", "json")
INPUT_FORMS = ("padded", "offsets")
GRAPHS = ("score", "recommend")  # matrix factorization's ONNX graphs
# tables holding more values than this go to the .npz beside a JSON export
INLINE_VALUES = 1 << 16
# ONNX files keep their tensors inside up to this size (protobuf's limit is 2 GiB)
ONNX_INLINE_BYTES = 1 << 30
OPSET = 17

FORMULAS = {
    "logistic": "p = 1 / (1 + exp(-m)), m = intercept[0] + sum_j x_j coef[j, 0]; "
    "probabilities = [1 - p, p] for classes [classes[0], classes[1]]",
    "multinomial": "m_c = intercept[c] + sum_j x_j coef[j, c]; "
    "probabilities_c = exp(m_c) / sum_d exp(m_d) for class classes[c]",
    "linear": "prediction = intercept[0] + sum_j x_j coef[j, 0]",
    "fm": "m = intercept[0] + sum_j x_j coef[j, 0] + sum_{j<l} <factors[j], factors[l]> x_j x_l "
    "= ... + 0.5 * sum_f ((sum_j x_j factors[j, f])^2 - sum_j (x_j factors[j, f])^2); "
    "p = 1 / (1 + exp(-m)); probabilities = [1 - p, p]",
    "fm_regressor": "prediction = intercept[0] + sum_j x_j coef[j, 0] "
    "+ sum_{j<l} <factors[j], factors[l]> x_j x_l",
    "ffm": "m = intercept[0] + sum_j x_j coef[j, 0] + sum_{j<l, fields[j] >= 0, fields[l] >= 0} "
    "<factors[j, fields[l]], factors[l, fields[j]]> x_j x_l; p = 1 / (1 + exp(-m)); "
    "probabilities = [1 - p, p]",
    "mf": "score(u, i) = global_mean + user_biases[u] + item_biases[i] "
    "+ <user_factors[u], item_factors[i]>, clipped to clip = [low, high] unless null; "
    "recommend(u) = items by decreasing item_biases[i] + <user_factors[u], item_factors[i]> "
    "(ties: smaller id first), without seen_indices[seen_indptr[u]:seen_indptr[u + 1]]",
}
ROWS = (
    "x: one row of hashed features, columns sorted and distinct (the values of repeated "
    "columns summed), as the hashing spec's rules give them; absent columns are 0"
)


class ExportError(ValueError):
    """A model that cannot be exported as asked (the message says why and what to do)."""


# -- what a model is, from its public attributes -----------------------------------------------
def model_tables(model) -> tuple[str, dict, dict]:
    """``(kind, tables, scalars)`` of a fitted estimator: its tables by name (float32 or
    float64, as fitted: see :func:`_real`), and the
    scalars of its formula (:data:`FORMULAS`).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        ``model`` is not fitted.
    ExportError
        ``model`` is not a sparseopt estimator this module knows.
    """
    kind = getattr(type(model), "export_kind", None)
    if kind is None:
        raise ExportError(
            f"cannot export a {type(model).__name__}: export takes a fitted sparseopt "
            "estimator (SparseLogisticRegression, SparseLinearRegression, FMClassifier, "
            "FMRegressor, FFMClassifier or MatrixFactorization)"
        )
    check_is_fitted(model)
    if kind == "mf":
        return "mf", _mf_tables(model), _mf_scalars(model)
    scalars = {}
    coef = np.ascontiguousarray(_real(model.coef_.T))  # (n_features, n_outputs)
    tables = {"coef": coef, "intercept": _real(model.intercept_)}
    if hasattr(model, "classes_"):
        scalars["classes"] = model.classes_.tolist()
    if kind in ("fm", "fm_regressor", "ffm"):
        tables["factors"] = _real(model.factors_)
    if kind == "ffm":
        # each column's field, as fitted (the estimator's fields parameter may be "auto")
        tables["fields"] = model.state_.fields.astype(np.int32, copy=False)
    if kind == "logistic" and coef.shape[1] > 1:
        kind = "multinomial"
    return kind, tables, scalars


def _real(table: np.ndarray) -> np.ndarray:
    """A table as float32 if it is, else float64 (no copy when it is either already)."""
    return table.astype(np.float32 if table.dtype == np.float32 else np.float64, copy=False)


def _mf_tables(model) -> dict:
    users, items = model.user_factors_.copy(), model.item_factors_.copy()
    # cold users and items (no interaction) are scored by their biases alone
    users[model.tables_["user"].counts == 0] = 0.0
    items[model.tables_["item"].counts == 0] = 0.0
    seen = model.tables_["seen"]
    return {
        "user_factors": _real(users),
        "item_factors": _real(items),
        "user_biases": _real(model.user_biases_),
        "item_biases": _real(model.item_biases_),
        "seen_indptr": np.asarray(seen.indptr, np.int64),
        "seen_indices": np.asarray(seen.indices, np.int32),
    }


def _mf_scalars(model) -> dict:
    clip = [float(v) for v in model.rating_range_] if model.loss == "squared" else None
    return {"global_mean": float(model.global_mean_), "clip": clip}


# -- writing files atomically ----------------------------------------------------------------
def _write_atomically(path: Path, write) -> list[Path]:
    """Run ``write(folder)``, which writes files into a temporary folder beside ``path`` and
    returns their names, ``path.name`` among them; then move each into place (``path`` last),
    so that a reader never meets a partly written file and a failure leaves none."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=parent, prefix=f".{path.name}.") as tmp:
            names = write(Path(tmp))
            for name in sorted(names, key=lambda n: n == path.name):
                os.replace(Path(tmp) / name, parent / name)
    except OSError as exc:
        raise OSError(
            f"cannot write the export to {path}: {exc.strerror or exc}; choose a writable folder"
        ) from exc
    return [parent / name for name in names]


def _check_path(path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise OSError(f"cannot write the export to {path}: it is a folder; give a file name")
    return path


# -- JSON ------------------------------------------------------------------------------------
def _json_table(name, table, arrays, sparse) -> dict:
    """A table's JSON entry: its listed rows (sparse: the rows with a nonzero, others 0) or
    all its values, inline or in the npz (``arrays``)."""
    entry = {"shape": list(table.shape), "dtype": str(table.dtype), "sparse": bool(sparse)}
    rows = None
    if sparse:
        rows = np.flatnonzero(table.reshape(table.shape[0], -1).any(axis=1))
        values = table[rows]
    else:
        values = table
    if values.size > INLINE_VALUES:
        entry["npz"] = name
        arrays[f"{name}_values"] = values
        if rows is not None:
            arrays[f"{name}_rows"] = rows
    else:
        entry["values"] = values.tolist()  # float32 to Python's float and back: exact
        if rows is not None:
            entry["rows"] = rows.tolist()
    return entry


def _export_json(path, kind, tables, scalars, data) -> list[Path]:
    arrays: dict = {}
    # the per-feature tables are mostly zero rows (features never seen): listed rows only
    per_feature = {"coef", "factors"}
    entries = {name: _json_table(name, table, arrays, name in per_feature)
               for name, table in tables.items()}  # fmt: skip
    npz = f"{path.name}.npz" if arrays else None  # never model.npz, a model file's name
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "formula": FORMULAS[kind],
        "rows": ROWS if kind != "mf" else None,
        "n_features": int(tables["coef"].shape[0]) if "coef" in tables else None,
        **scalars,
        "data": data,
        "npz": npz,
        "tables": entries,
    }

    def write(folder):
        if npz:
            with open(folder / npz, "wb") as f:
                np.savez(f, **arrays)
        (folder / path.name).write_text(json.dumps(meta))
        return [path.name] + ([npz] if npz else [])

    return _write_atomically(path, write)


# -- ONNX ------------------------------------------------------------------------------------
def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "export(format='onnx') needs the onnx package: pip install 'sparseopt[onnx]' "
            "(or format='json', which needs nothing)"
        ) from None
    return onnx


class _Graph:
    """A small builder of ONNX nodes with generated names."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.h = onnx.helper
        self.nodes, self.inits = [], []
        self.large = {}  # name -> array of the model's tables, filled in after building
        self.count = 0

    def const(self, value, name=None, dtype=None, table=False):
        """A constant; ``table``: one of the model's tables, named ``name``."""
        self.count += 1
        name = name or f"c{self.count}"
        array = np.asarray(value, dtype=dtype)
        if not table:
            self.inits.append(self.onnx.numpy_helper.from_array(array, name))
            return name
        # a table's bytes go in once the model is built (_fill_tables): protobuf copies a
        # tensor each time it is added to a graph or a model (seconds per GiB)
        tensor = self.onnx.TensorProto(name=name, dims=array.shape)
        tensor.data_type = self.h.np_dtype_to_tensor_dtype(array.dtype)
        self.inits.append(tensor)
        self.large[name] = np.ascontiguousarray(array)
        return name

    def op(self, op_type, *inputs, **attrs):
        self.count += 1
        out = f"{op_type.lower()}{self.count}"
        self.nodes.append(self.h.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def ints(self, value):
        """An int64 constant (axes, shapes, indices)."""
        return self.const(value, dtype=np.int64)

    def filled(self, shape, value):
        """A tensor of shape ``shape`` (a tensor name) filled with the scalar ``value``."""
        fill = self.onnx.numpy_helper.from_array(np.asarray([value]))
        return self.op("ConstantOfShape", shape, value=fill)

    def double(self, x):
        return self.op("Cast", x, to=self.onnx.TensorProto.DOUBLE)

    def sum(self, x, axes, keepdims=0):
        return self.op("ReduceSum", x, self.const(axes, dtype=np.int64), keepdims=keepdims)


def _linear_margin(g, form, n_outputs):
    """(margins of shape (n_rows, n_outputs), gathered helpers) of the linear part."""
    coef, bias = "coef", "intercept"
    if form == "padded":
        # sums over a row's entries as batched products (N, 1, L) @ (N, L, ...): 1.3-1.5x
        # the rows per second of Mul then ReduceSum in ONNX Runtime 1.32 (FM, one thread)
        x = g.op("Unsqueeze", g.double("values"), g.ints([1]))  # (N, 1, L)
        m = g.op("MatMul", x, g.double(g.op("Gather", coef, "indices")))  # (N, 1, K)
        return g.op("Add", g.op("Squeeze", m, g.ints([1])), bias), x
    x = g.op("Unsqueeze", g.double("values"), g.ints([1]))  # (nnz, 1)
    contrib = g.op("Mul", g.double(g.op("Gather", coef, "indices")), x)
    return g.op("Add", _segment_sum(g, contrib, rank=2), bias), x


def _segment_sum(g, values, rank):
    """Sum of ``values`` (nnz, ...), of ``rank`` dimensions, over each row's entries:
    (n_rows, ...), as differences of the running sum at the row bounds ``offsets``.

    Not a scatter-add of each entry into its row: with ONNX Runtime's default threads, a
    ScatterND with ``reduction="add"`` over repeated rows gave sums that varied from run to run
    (once 0.018 off, in tests/test_export.py's multinomial case).
    """
    running = g.op("CumSum", values, g.ints(0))
    pads = [1] + [0] * (rank - 1) + [0] * rank  # one zero row before the first entry
    running = g.op("Pad", running, g.ints(pads))
    starts = g.op("Slice", "offsets", g.ints([0]), g.ints([-1]))
    stops = g.op("Slice", "offsets", g.ints([1]), g.ints([np.iinfo(np.int64).max]))
    return g.op("Sub", g.op("Gather", running, stops), g.op("Gather", running, starts))


def _fm_pairs(g, form, x):
    """The FM pairwise term, (n_rows,)."""
    v = g.double(g.op("Gather", "factors", "indices"))  # (N, L, k) | (nnz, k)
    if form == "padded":  # x: (N, 1, L)
        s = g.op("MatMul", x, v)  # (N, 1, k)
        norms = g.op("ReduceSumSquare", v, axes=[2], keepdims=1)  # (N, L, 1)
        sq = g.op("Reshape", g.op("MatMul", g.op("Mul", x, x), norms), g.ints([-1]))
        pairs = g.op("ReduceSumSquare", s, axes=[1, 2], keepdims=0)
    else:
        xv = g.op("Mul", v, x)
        pairs = g.op("ReduceSumSquare", _segment_sum(g, xv, rank=2), axes=[1], keepdims=0)
        sq = _segment_sum(g, g.op("ReduceSumSquare", xv, axes=[1], keepdims=0), rank=1)
    return g.op("Mul", g.op("Sub", pairs, sq), g.const(0.5))


def _ffm_pairs(g, x):
    """The FFM pairwise term of a padded batch, (n_rows,)."""
    F = g.n_fields
    field = g.op("Gather", "fields", "indices")  # (N, L), -1: no interactions
    valid = g.double(g.op("GreaterOrEqual", field, g.ints(0)))
    field = g.op("Max", field, g.ints(0))
    # vector of entry a for the field of entry b: factors[indices[a] * F + field[b]]
    rows = g.op("Mul", "indices", g.ints(F))
    pair_rows = g.op("Add", g.op("Unsqueeze", rows, g.ints([2])),
                     g.op("Unsqueeze", field, g.ints([1])))  # fmt: skip
    v = g.double(g.op("Gather", "factors", pair_rows))  # (N, L, L, k)
    dots = g.sum(g.op("Mul", v, g.op("Transpose", v, perm=[0, 2, 1, 3])), [3])  # (N, L, L)
    w = g.op("Mul", g.op("Squeeze", x, g.ints([1])), valid)  # (N, L)
    ww = g.op("Mul", g.op("Unsqueeze", w, g.ints([2])),
              g.op("Unsqueeze", w, g.ints([1])))  # fmt: skip
    width = g.op("Slice", g.op("Shape", "indices"), g.ints([1]),
                 g.ints([2]))  # fmt: skip
    square = g.op("Concat", width, width, axis=0)
    upper = g.op("Trilu", g.filled(square, 1.0), g.ints(1), upper=1)  # pairs a < b
    return g.sum(g.op("Mul", g.op("Mul", dots, ww), upper), [1, 2])


def _build_onnx(kind, tables, scalars, form, data):
    """The ONNX model of ``kind``'s graph, its metadata in the ``sparseopt`` property, and
    the tables to fill in (:func:`_fill_tables`)."""
    onnx = _onnx()
    g = _Graph(onnx)
    T = onnx.TensorProto
    h = onnx.helper
    if kind == "mf" and form == "recommend":
        inputs, out, outputs = _mf_recommend_graph(g, tables)
    elif kind == "mf":
        inputs, out, outputs = _mf_score_graph(g, tables, scalars)
    else:
        inputs, out, outputs = _row_model_graph(g, kind, tables, form)
    name, shape = outputs[0]
    g.nodes.append(h.make_node("Identity", [out], [name]))
    out_type = T.INT64 if name == "items" else T.DOUBLE
    graph = h.make_graph(
        g.nodes,
        f"sparseopt_{kind}",
        inputs,
        [h.make_tensor_value_info(name, out_type, shape)],
        initializer=g.inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)],
                         producer_name="sparseopt")  # fmt: skip
    model.ir_version = 8  # what ONNX Runtime 1.16 and later read
    about = {"format": FORMAT, "version": VERSION, "kind": kind, "formula": FORMULAS[kind],
             "input_form": form if kind != "mf" else None,
             "graph": form if kind == "mf" else "score", **scalars, "data": data}  # fmt: skip
    h.set_model_props(model, {"sparseopt": json.dumps(about)})
    return model, g.large


def _mf_recommend_graph(g, tables):
    """MF's top-k graph: (user ids, k, an (n, n_items) mask of excluded items) to the k best
    items per user, -1 where fewer than k items are left."""
    T, h = g.onnx.TensorProto, g.h
    inputs = [
        h.make_tensor_value_info("user_ids", T.INT64, ["n"]),
        h.make_tensor_value_info("k", T.INT64, [1]),
        h.make_tensor_value_info("exclude", T.BOOL, ["n", tables["item_biases"].size]),
    ]
    g.const(tables["user_factors"], "user_factors", table=True)
    # float64 item tables: the ranking is that of float64 scores, ties by item id
    g.const(tables["item_factors"].astype(np.float64), "item_factors", table=True)
    g.const(tables["item_biases"].astype(np.float64)[None, :], "item_biases", table=True)
    users = g.double(g.op("Gather", "user_factors", "user_ids"))
    scores = g.op("Gemm", users, "item_factors", "item_biases", transB=1)  # (n, n_items)
    scores = g.op("Where", "exclude", g.const(-np.inf), scores)
    top, items = (f"top{g.count}", f"items{g.count}")
    g.nodes.append(h.make_node("TopK", [scores, "k"], [top, items], axis=1, largest=1,
                               sorted=1))  # fmt: skip
    out = g.op("Where", g.op("Equal", top, g.const(-np.inf)), g.ints(-1), items)
    outputs = [("items", ["n", "k"])]
    return inputs, out, outputs


def _mf_score_graph(g, tables, scalars):
    """MF's score graph: (user ids, item ids) to ``mu + b_u + b_i + <p_u, q_i>``, clipped to
    the rating range when the model clips."""
    T, h = g.onnx.TensorProto, g.h
    inputs = [h.make_tensor_value_info(n, T.INT64, ["n"]) for n in ("user_ids", "item_ids")]
    for name in ("user_factors", "item_factors", "user_biases", "item_biases"):
        g.const(tables[name], name, table=True)
    dot = g.sum(g.op("Mul", g.double(g.op("Gather", "user_factors", "user_ids")),
                     g.double(g.op("Gather", "item_factors", "item_ids"))), [1])  # fmt: skip
    biases = g.op("Add", g.double(g.op("Gather", "user_biases", "user_ids")),
                  g.double(g.op("Gather", "item_biases", "item_ids")))  # fmt: skip
    out = g.op("Add", g.op("Add", dot, biases), g.const(scalars["global_mean"]))
    if scalars["clip"] is not None:
        out = g.op("Clip", out, g.const(scalars["clip"][0]), g.const(scalars["clip"][1]))
    outputs = [("scores", ["n"])]
    return inputs, out, outputs


def _row_model_graph(g, kind, tables, form):
    """The graph of a linear model or factorization machine: rows (padded or CSR offsets)
    to probabilities or predictions; the pairwise term added to the margin for FM and FFM."""
    T, h = g.onnx.TensorProto, g.h
    n_outputs = tables["coef"].shape[1]
    g.const(tables["coef"], "coef", table=True)
    g.const(tables["intercept"].astype(np.float64), "intercept", table=True)
    # values as precise as the tables: float32, or float64 for a model fitted on float64
    values = T.DOUBLE if tables["coef"].dtype == np.float64 else T.FLOAT
    if form == "padded":
        inputs = [h.make_tensor_value_info("indices", T.INT64, ["n", "width"]),
                  h.make_tensor_value_info("values", values, ["n", "width"])]  # fmt: skip
    else:
        inputs = [h.make_tensor_value_info("indices", T.INT64, ["nnz"]),
                  h.make_tensor_value_info("values", values, ["nnz"]),
                  h.make_tensor_value_info("offsets", T.INT64, ["n_plus_1"])]  # fmt: skip
    m, x = _linear_margin(g, form, n_outputs)
    if kind in ("fm", "fm_regressor", "ffm"):
        factors = tables["factors"]
        g.k = factors.shape[-1]
        if kind == "ffm":
            g.n_fields = factors.shape[1]
            g.const(factors.reshape(-1, g.k), "factors", table=True)
            g.const(tables["fields"].astype(np.int64), "fields", table=True)
            pairs = _ffm_pairs(g, x)
        else:
            g.const(factors, "factors", table=True)
            pairs = _fm_pairs(g, form, x)
        m = g.op("Add", m, g.op("Unsqueeze", pairs, g.ints([1])))
    if kind == "multinomial":
        out, outputs = g.op("Softmax", m, axis=1), [("probabilities", ["n", n_outputs])]
    elif kind in ("linear", "fm_regressor"):
        out = g.op("Squeeze", m, g.ints([1]))
        outputs = [("predictions", ["n"])]
    else:
        p = g.op("Sigmoid", m)
        out = g.op("Concat", g.op("Sub", g.const([[1.0]]), p), p, axis=1)
        outputs = [("probabilities", ["n", 2])]
    return inputs, out, outputs


def _fill_tables(model, large, data_file=None):
    """Put the large tables' bytes into ``model``, or write them to ``data_file`` (an open
    binary file named as the model's external data, beside the model) and point to it."""
    for tensor in model.graph.initializer:
        array = large.get(tensor.name)
        if array is None:
            continue
        if data_file is None:
            tensor.raw_data = array.tobytes()
            continue
        offset = data_file.tell()
        array.tofile(data_file)
        where = {"location": Path(data_file.name).name, "offset": offset, "length": array.nbytes}
        for key, value in where.items():
            tensor.external_data.add(key=key, value=str(value))
        tensor.data_location = tensor.EXTERNAL


def _export_onnx(path, kind, tables, scalars, form, data) -> list[Path]:
    onnx = _onnx()
    if kind == "ffm" and form != "padded":
        raise ExportError(
            "a field-aware factorization machine exports to ONNX with input_form='padded' only "
            "(its pairs need each row's entries side by side)"
        )
    model, large = _build_onnx(kind, tables, scalars, form, data)
    n_bytes = sum(t.nbytes for t in large.values())

    def write(folder):
        if n_bytes <= ONNX_INLINE_BYTES:
            _fill_tables(model, large)
            onnx.save_model(model, str(folder / path.name))
            return [path.name]
        location = f"{path.name}.data"  # read by the runtime from beside the model
        with open(folder / location, "wb") as data_file:
            _fill_tables(model, large, data_file)
        onnx.save_model(model, str(folder / path.name))
        return [path.name, location]

    return _write_atomically(path, write)


def export(model, path, format="onnx", *, data=None, input_form="padded",
           graph="score", downsampling=None) -> list[Path]:  # fmt: skip
    """Write a fitted estimator for serving without sparseopt.

    Parameters
    ----------
    model : sparseopt estimator, fitted
        SparseLogisticRegression (binary or multinomial), SparseLinearRegression,
        FMClassifier, FMRegressor, FFMClassifier or MatrixFactorization.
    path : str or path-like
        The file to write (its folder is created). JSON exports with large tables write
        ``<name>.npz`` beside it; ONNX models over 1 GiB keep their tensors in
        ``<name>.data`` beside it. Every file is written to a temporary name and renamed.
    format : {"onnx", "json"}, default="onnx"
        ``"onnx"``: a graph of standard operators (opset 17), needs the ``onnx`` package
        (``pip install 'sparseopt[onnx]'``). ``"json"``: the tables and the formula that
        scores them (:data:`FORMULAS`), read by :mod:`sparseopt.serving` or any language.
    data : dict, default=None
        How rows were hashed for training (a hashing spec's ``data`` section, as
        ``sparseopt train`` stores it in its model files), stored with the export.
    downsampling : dict, default=None
        The model file's note on negative downsampling (``sparseopt train --negative-rate``
        writes it: the rate, the intercept's correction ``log r`` already applied, in words),
        stored with the export as ``downsampling``: a scorer applies nothing.
    input_form : {"padded", "offsets"}, default="padded"
        ONNX input of the click models (see the module notes); FFM: "padded" only.
    graph : {"score", "recommend"}, default="score"
        Matrix factorization's ONNX graph. "score": ``user_ids`` and ``item_ids`` (int64,
        ``(n,)``) to ``scores`` (float64, as ``predict``). "recommend": ``user_ids``, ``k``
        (int64, shape ``(1,)``, at most the number of items) and ``exclude`` (bool,
        ``(n, n_items)``: True for the items not to recommend, such as those the user has
        seen) to ``items`` (int64, ``(n, k)``): the ``k`` best-ranked by :math:`b_i + p_u^T
        q_i`, ties to the smaller id, -1 where fewer remain; as ``recommend`` with
        ``exclude`` built from the JSON export's ``seen_indptr`` and ``seen_indices``.

    Returns
    -------
    list of pathlib.Path
        The files written, ``path`` first.

    Examples
    --------
    >>> from sparseopt import SparseLogisticRegression
    >>> from sparseopt.datasets import make_ctr
    >>> data = make_ctr(2_000, n_fields=5, n_bits=12, random_state=0)
    >>> model = SparseLogisticRegression(max_iter=1).fit(data.X, data.y)
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> [p.name for p in export(model, folder / "model.json", format="json")]
    ['model.json']
    >>> from sparseopt import serving
    >>> exported = serving.load(folder / "model.json")
    >>> X = data.X[:5]
    >>> bool(abs(exported.score(X.indptr, X.indices, X.data) - model.predict_proba(X)).max() < 1e-6)
    True
    """
    if format not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}, got {format!r}")
    if input_form not in INPUT_FORMS:
        raise ExportError(f"input_form must be one of {INPUT_FORMS}, got {input_form!r}")
    if graph not in GRAPHS:
        raise ExportError(f"graph must be one of {GRAPHS}, got {graph!r}")
    if format == "onnx":
        _onnx()  # says what to install before any work
    path = _check_path(path)
    kind, tables, scalars = model_tables(model)
    if downsampling is not None:
        scalars["downsampling"] = downsampling
    if graph != "score" and (kind != "mf" or format != "onnx"):
        raise ExportError(
            f"graph={graph!r} is an ONNX graph of matrix factorization; a {kind} model exports "
            "its score (graph='score')"
        )
    if format == "json":
        written = _export_json(path, kind, tables, scalars, data)
    else:
        written = _export_onnx(path, kind, tables, scalars, graph if kind == "mf" else input_form,
                               data)  # fmt: skip
    return sorted(written, key=lambda p: p != path)


# -- the hashing spec ------------------------------------------------------------------------
SPEC_FORMAT = "sparseopt-hashing-spec"
HASHED_FORMATS = ("criteo", "avazu", "csv")
# how the readers (sparseopt.datasets) turn a line into columns, in words a person can
# implement; test_export.py implements them from this text and the "data" section alone
SPEC_RULES = {
    "hash": "MurmurHash3 x86_32 (Austin Appleby's, 32-bit, x86 variant) of the value's bytes, "
    "seed = the field index f (0-based), read as an unsigned 32-bit integer h; blocks of 4 "
    "bytes little-endian, the 1-3 tail bytes likewise. Equal to "
    "sklearn.utils.murmurhash3_32(value_bytes, seed=f, positive=True).",
    "column": "field_aware false: column = h mod 2**n_bits. field_aware true: s = "
    "floor(2**n_bits / n_fields), n_fields counting the crosses, column = f * s + (h mod s) "
    "(field f owns columns f*s .. f*s + s - 1; the last 2**n_bits - n_fields*s columns are "
    "never used).",
    "value_bytes": "the field's text exactly as in the line, UTF-8 (a line whose categorical "
    "field is not valid UTF-8 is malformed); a value enclosed in double quotes is read "
    'without them, a doubled quote inside as one ("a""b" is a"b); the separator and line '
    "breaks never occur inside a value.",
    "lines": "lines end with \\n (a \\r before it is dropped); blank lines are skipped; a line "
    "splits at every separator into exactly as many fields as the layout has columns, "
    "else it is malformed. CSV and Avazu files start with a header line naming the columns.",
    "label": "0 or 1 (binary models); any number for regression; libsvm: -1, 0 or 1, read as "
    "0, 0 and 1.",
    "categorical": "one feature of value 1.0 in the column of (f, value_bytes); an empty field "
    "is the empty text, so a missing value is a feature of its own.",
    "count": "Criteo's integer counts: x parsed as a number that must be integral with "
    "|x| <= 9e15 (260 and 260.0 alike); bucket b = floor(ln(x)**2) if x > 2 else x (as an "
    "integer, so -1 stays -1); one feature of value 1.0 in the column of (f, decimal text of "
    "b, e.g. '30' or '-1'). An empty count is the empty text, as a categorical.",
    "numeric": "CSV columns named in data.numeric: the column of (f, empty text) with the "
    "number as its value (float32); an empty numeric value gives no feature.",
    "numbers": "[+-]digits[.digits][(e|E)[+-]digits] (digits on one side of the point "
    "suffice); nothing else (no spaces, inf or nan).",
    "row": "the features of a line, columns sorted, repeated columns merged by adding their "
    "values (two fields hashed to one column give 2.0): the x of the model's formula.",
    "field_hasher": "sparseopt.datasets.FieldHasher hashes a table's columns by the same "
    "rules: column k (in the fitted order) is field k; kind 'categorical' as a categorical "
    "(numbers as their text as Arrow writes it: 5, 2 for 2.0, 1.5; booleans as True and "
    "False; a null as the empty text), 'bucket' as a count (a null as the empty text), "
    "'value' as a numeric column (a null gives no feature).",
    "fields": "criteo: columns 0..39 are label, I1..I13 (counts, fields 0..12), C1..C26 "
    "(categoricals, fields 13..38), tab-separated. avazu: CSV with label 'click', column "
    "'id' skipped, every other column categorical, fields numbered in header order. csv: the "
    "label column; features = data.features in that order, or when null every header column "
    "but the label, data.weight_column and data.exclude in header order; feature k is "
    "field k. libsvm: no hashing, 'label index:value ...' with index - (0 if zero_based "
    "else 1) as the column. Crosses (data.interactions) are fields n_inputs, n_inputs + 1, "
    "... after the n_inputs input fields.",
    "interactions": "data.interactions, a list of items naming the crosses (null: none), by "
    "the fields' names (criteo: I1..I13, C1..C26; avazu and csv: the feature columns): "
    "'a*b' crosses fields a and b, 'a*b*c' three fields, in the order written; 'all' is every "
    "pair (f, g) with f < g, in order of f then g; 'a*' is a with every other field g, each "
    "pair written with the smaller field first, in order of g. The crosses are numbered in "
    "the order of the list: cross k is field n_inputs + k (the spec's 'crosses' lists them "
    "resolved when the field names are known).",
    "cross": "a cross of fields (f1, f2[, f3]), numbered field c, has hash h = MurmurHash3 "
    "x86_32 of the 8 (12) bytes h_f1, h_f2[, h_f3], each the hash of that field's pair in the "
    "row as a little-endian uint32, seed c (= sklearn.utils.murmurhash3_32(struct.pack("
    "'<2I', h_f1, h_f2), seed=c, positive=True)); its column by the rule 'column' with f = c. "
    "Its value is the product of its fields' values (each as float32, multiplied in "
    "float64 in the order of the cross, stored as float32; 1.0 for categoricals and "
    "counts). A cross is absent from a row where one of its fields is (an empty numeric "
    "value); an empty categorical or count is present (its hash is the empty text's).",
    "weight_column": "csv: data.weight_column names a column of training weights: not a "
    "feature and not a field; a scorer skips it, whatever it holds.",
    "negative_rate": "training kept every positive line and this fraction r of the negative "
    "ones; the saved model's intercept was shifted by log(r) so that its scores are on the "
    "true scale. Scoring does nothing with it: every line is read and scored.",
}


def _reader(data: dict, path):
    """The reader ``sparseopt train`` uses for files under the ``data`` section."""
    from .datasets import CriteoReader, CSVReader, LibSVMReader

    hashed = dict(n_bits=data["n_bits"], field_aware=data["field_aware"],
                  interactions=data["interactions"])  # fmt: skip
    if data["format"] == "criteo":
        return CriteoReader(path, sep=data.get("sep") or "\t", **hashed)
    if data["format"] == "avazu":
        return CSVReader(path, "click", exclude=["id"], sep=data.get("sep") or ",", **hashed)
    if data["format"] == "csv":
        # as the scoring readers of sparseopt train: the weight column skipped
        weight = data.get("weight_column")
        exclude = list(data.get("exclude") or ()) + ([weight] if weight else [])
        return CSVReader(path, data["label"], data.get("features"),
                         numeric=data.get("numeric") or (), exclude=exclude,
                         sep=data.get("sep") or ",", **hashed)  # fmt: skip
    return LibSVMReader(path, data.get("n_features"), data.get("zero_based", "auto"))


def _data_section(data: dict | None) -> dict:
    """The data section with every default filled in (criteo, 2**20 columns by default)."""
    section = {"format": "criteo", "n_bits": 20, "field_aware": False, "label": None,
               "features": None, "numeric": [], "exclude": [], "sep": None,
               "n_features": None, "zero_based": "auto", "interactions": None,
               "weight_column": None, "negative_rate": 1.0}  # fmt: skip
    unknown = sorted(set(data or {}) - set(section))
    if unknown:
        raise ExportError(f"unknown data options {unknown}; known: {sorted(section)}")
    section.update({k: v for k, v in (data or {}).items() if v is not None})
    if section["format"] not in (*HASHED_FORMATS, "libsvm"):
        raise ExportError(f"unknown data format {section['format']!r}")
    if section["format"] == "csv" and not section["label"]:
        raise ExportError("a csv data section needs its label column")
    if section["weight_column"] is not None and section["format"] != "csv":
        raise ExportError("a weight_column needs the csv format (a named column)")
    rate = section["negative_rate"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
        raise ExportError(f"negative_rate must be a number in (0, 1], got {rate!r}")
    if isinstance(section["interactions"], str):  # "a*b,c*d", as --interactions takes it
        section["interactions"] = [i.strip() for i in section["interactions"].split(",")]
    if section["interactions"] and section["format"] == "libsvm":
        raise ExportError("interactions need a hashed format (criteo, avazu, csv)")
    return section


def _pair_texts(n_pairs, rng) -> list[bytes]:
    """Values of every kind a reader meets: empty, short, long, digits, hex, non-ASCII."""
    fixed = ["", "0", "-1", "1", "30", "a", "ab", "abc", "abcd", "abcde", "68fd1e64",
             "é", "日本語", "🙂", 'a"b', " ", "x" * 40]  # fmt: skip
    texts = [t.encode() for t in fixed]
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789-_é"))
    while len(texts) < n_pairs:
        texts.append("".join(rng.choice(alphabet, rng.integers(0, 24))).encode())
    return texts[:n_pairs]


def _pairs(texts, n_inputs, n_fields, n_bits, field_aware, rng) -> list:
    """[field, text, h, column] of each text in one of the ``n_inputs`` input fields, hashed
    by the readers' compiled kernels (column null when the number of fields, which a
    field-aware column needs, is not known)."""
    from .datasets._hashing import murmurhash3_32, slice_size, to_column

    known = n_fields is not None or not field_aware
    size = slice_size(n_bits, n_fields, field_aware) if known else 0
    out = []
    for text in texts:
        f = int(rng.integers(n_inputs or 10))
        buf = np.frombuffer(text, np.uint8) if text else np.zeros(0, np.uint8)
        h = int(murmurhash3_32(buf, 0, len(text), np.uint32(f)))
        column = int(to_column(np.uint32(h), f, n_bits, size)) if known else None
        out.append([f, text.decode(), h, column])
    return out


def _cross_vectors(crosses, n_inputs, n_bits, field_aware, n_vectors, rng) -> list:
    """[field, hashes, h, column] of ``n_vectors`` crosses of random field hashes (0 and
    2**32 - 1 among them): each cross's field number, its fields' hashes, its own hash and its
    column, as the readers' compiled cross kernel computes it."""
    from .datasets._crosses import add_crosses, cross_table
    from .datasets._hashing import index_dtype, murmurhash3_32, slice_size

    n_fields = n_inputs + len(crosses)
    n_rows = -(-n_vectors // len(crosses))
    hashes = rng.integers(0, 1 << 32, (n_rows, n_inputs), dtype=np.uint64).astype(np.uint32)
    hashes[0], hashes[-1] = 0, 0xFFFFFFFF
    # every input field present; the readers' index type, so their compiled kernel serves
    cols = np.zeros((n_rows, n_fields), index_dtype(1 << n_bits))
    vals = np.ones((n_rows, n_fields), np.float32)
    size = slice_size(n_bits, n_fields, field_aware)
    add_crosses(hashes, cols, vals, cross_table(crosses), n_rows, n_bits, size, False)
    out = []
    for r in range(n_rows):
        for k, cross in enumerate(crosses):
            packed = hashes[r, list(cross)].astype("<u4").view(np.uint8)
            h = int(murmurhash3_32(packed, 0, packed.size, np.uint32(n_inputs + k)))
            out.append([n_inputs + k, hashes[r, list(cross)].tolist(), h,
                        int(cols[r, n_inputs + k])])  # fmt: skip
    return out[:n_vectors]


def _criteo_edge_lines() -> list[str]:
    """Criteo lines that reach every rule: empty fields, count buckets, quotes."""
    counts = ["", "0", "2", "3", "260", "260.0", "1e3", "-1", "+7", "999999999999999",
              '"42"', "8", "15"]  # fmt: skip
    cats = ["", "68fd1e64", '"quoted"', '"a""b"', "é", "日本", "x" * 30] + [""] * 19
    lines = ["\t".join(["1", *counts, *cats])]
    lines.append("\t".join(["0", *([""] * 13), *([""] * 26)]))
    lines.append("\t".join(["0", *counts[::-1], *cats[::-1]]))
    return lines


def _row_vectors(data, lines, header) -> tuple[list, object]:
    """([{"line", "label", "columns", "values"}] of ``lines`` as the spec's reader reads them,
    the reader); the lines that hold no row (blank, a LIBSVM comment) are left out."""
    if data["format"] == "libsvm":
        lines = [line for line in lines if line.split("#")[0].strip(" \t\r")]
    else:
        lines = [line for line in lines if line.rstrip("\r")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.txt"
        text = [header] if header is not None else []
        path.write_text("\n".join(text + lines) + "\n", encoding="utf-8")
        reader = _reader(data, path)
        X, y = reader.read()
    return [{"line": line, "label": float(y[r]),
             "columns": X.indices[X.indptr[r]:X.indptr[r + 1]].tolist(),
             "values": X.data[X.indptr[r]:X.indptr[r + 1]].tolist()}
            for r, line in enumerate(lines)], reader  # fmt: skip


def _sample_lines(path, n_lines) -> list[str]:
    """The first ``n_lines`` lines of a text file (``.gz`` accepted)."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return [line.rstrip("\r\n") for _, line in zip(range(n_lines), f, strict=False)]


def hashing_spec(path=None, data: dict | None = None, *, sample=None, n_pairs=2000,
                 n_rows=200) -> dict:  # fmt: skip
    """The readers' rules from raw text lines to columns, as JSON with test vectors.

    Another implementation (a Java or Go ad server) hashes rows by ``rules`` and the
    ``data`` section, then checks itself on ``test_vectors``: ``pairs`` of
    ``[field, text, hash, column]``, ``crosses`` of ``[field, its fields' hashes, hash,
    column]`` and whole ``rows`` (a line, its label, its sorted columns and values), all
    computed by the readers of :mod:`sparseopt.datasets`. When the fields are known (Criteo,
    or a header), ``n_fields``, ``field_names`` and ``crosses`` (each cross's field number,
    the input fields it crosses, its name) say them.

    Parameters
    ----------
    path : str or path-like, default=None
        Write the spec there (atomically) as JSON.
    data : dict, default=None
        The data section: ``format`` ("criteo", "avazu", "csv", "libsvm"), ``n_bits``,
        ``field_aware``, ``sep``, ``interactions`` (the crosses), ``negative_rate`` (recorded,
        nothing to apply), and for CSV ``label``, ``features``, ``numeric``, ``exclude``,
        ``weight_column`` (``sparseopt train``'s options; its model files store them). None:
        Criteo hashed into 2**20 columns.
    sample : str or path-like, default=None
        A file of that format whose first ``n_rows`` lines become row vectors (CSV and Avazu:
        after its header). None: for Criteo, the packaged sample and lines that reach every
        rule; for CSV, lines of random values when ``data["features"]`` names the columns.
    n_pairs : int, default=2000
        Number of (field, value) test vectors.
    n_rows : int, default=200
        Number of row vectors (at most: a sample may be shorter).

    Returns
    -------
    dict
        The spec, as written.
    """
    data = _data_section(data)
    rng = np.random.default_rng(26)
    spec = {"format": SPEC_FORMAT, "version": VERSION, "data": data, "rules": SPEC_RULES}
    header, lines = _spec_lines(data, sample, n_rows, rng)
    rows, reader = _row_vectors(data, lines, header) if lines else ([], None)
    spec["header"] = header
    spec.update(_spec_fields(reader))
    crosses = getattr(reader, "crosses", None)
    n_inputs = spec["n_fields"] - len(crosses) if crosses is not None else None
    pairs, cross_vectors = [], []
    if data["format"] != "libsvm":
        pairs = _pairs(_pair_texts(n_pairs, rng), n_inputs, spec["n_fields"], data["n_bits"],
                       data["field_aware"], rng)  # fmt: skip
    if crosses:
        cross_vectors = _cross_vectors(crosses, n_inputs, data["n_bits"], data["field_aware"],
                                       max(n_pairs // 4, 1), rng)  # fmt: skip
    spec["test_vectors"] = {"pairs": pairs, "crosses": cross_vectors, "rows": rows}
    if path is not None:
        path = _check_path(path)

        def write(folder):
            (folder / path.name).write_text(json.dumps(spec, ensure_ascii=False), "utf-8")
            return [path.name]

        _write_atomically(path, write)
    return spec


def _spec_lines(data: dict, sample, n_rows: int, rng) -> tuple[str | None, list[str]]:
    """The header (CSV and Avazu) and the lines that :func:`hashing_spec` turns into row
    vectors: ``sample``'s first ``n_rows``; else for Criteo the packaged sample's and lines
    that reach every rule, for CSV with named features random values; else none."""
    header, lines = None, []
    if sample is not None:
        lines = _sample_lines(sample, n_rows + 1)
        if data["format"] in ("avazu", "csv"):
            header, lines = lines[0], lines[1:]
        else:
            lines = lines[:n_rows]
    elif data["format"] == "criteo":
        from .datasets import sample_path

        lines = _sample_lines(sample_path("valid"), n_rows) + _criteo_edge_lines()
    elif data["format"] == "csv" and data["features"]:
        weight = [data["weight_column"]] if data["weight_column"] else []
        header = (data["sep"] or ",").join([data["label"], *data["features"], *weight])
        texts = ["", "a", "b", "7", "3.5", "-2", "é", '"q"', '"a""b"']
        numbers = ["", "7", "3.5", "-2", "1e2", '"4"']
        for _ in range(n_rows):
            row = [str(rng.integers(2))] + [
                rng.choice(numbers) if n in data["numeric"] else rng.choice(texts)
                for n in data["features"]
            ] + [rng.choice(["1", "0.5", "0", "3"]) for _ in weight]  # fmt: skip
            lines.append((data["sep"] or ",").join(row))
    return header, lines


def _spec_fields(reader) -> dict:
    """``n_fields``, ``field_names`` and ``crosses`` (each cross's field number, the input
    fields it crosses, its name) of the spec; CSV and Avazu: null when no header is known."""
    spec = {"n_fields": getattr(reader, "n_fields", None),
            "field_names": getattr(reader, "field_names", None)}  # fmt: skip
    crosses = getattr(reader, "crosses", None)
    n_inputs = spec["n_fields"] - len(crosses) if crosses is not None else None
    spec["crosses"] = None if crosses is None else [
        {"field": n_inputs + k, "of": list(cross), "name": spec["field_names"][n_inputs + k]}
        for k, cross in enumerate(crosses)
    ]  # fmt: skip
    return spec
