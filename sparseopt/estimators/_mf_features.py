"""Side features for :class:`~sparseopt.MatrixFactorization`: checks, feature maps, training.

A *feature map* is a CSR matrix with one row per user (or item) and one column per row of the
side's table: the given feature columns first, then, with the identity, one column per user
(item). Scores read a side through its map (:func:`mapped_weights`); training runs the kernel
of :mod:`sparseopt.models._mf_features`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import check_array

from . import _safety


def check_features(F, name: str, n_rows=None, n_columns=None) -> sp.csr_matrix:
    """``F`` (``name`` in errors) as canonical CSR float32: no NaN, inf or negative weight,
    and ``n_rows`` rows and ``n_columns`` columns (the fitted ones) when given."""
    if sp.issparse(F):
        _safety.check_sparse_structure(F)
    F = check_array(F, accept_sparse="csr", dtype=(np.float64, np.float32),
                    ensure_all_finite=True, ensure_min_features=0, input_name=name)  # fmt: skip
    F = sp.csr_matrix(F, dtype=np.float32, copy=True)
    F.sum_duplicates()
    if (F.data < 0).any():
        raise ValueError(
            f"{name} has negative weights: a feature weight is a nonnegative strength "
            f"(one-hot 1, or a row normalized to sum 1); shift or drop those columns"
        )
    F.eliminate_zeros()
    if n_rows is not None and F.shape[0] != n_rows:
        what = name.split("_")[0]
        raise ValueError(
            f"{name} has {F.shape[0]} rows, but X has {n_rows} {what}s: give one feature row "
            f"per {what} (row n describes {what} n)"
        )
    if n_columns is not None and F.shape[1] != n_columns:
        raise ValueError(
            f"{name} has {F.shape[1]} columns, but the model was fitted with {n_columns} "
            f"{name.split('_')[0]} feature columns"
        )
    return F


def feature_map(F, name: str, n_rows: int, identity: bool) -> sp.csr_matrix:
    """The feature map of a side of ``n_rows`` users or items: ``F`` (None: no columns) with
    the identity appended (``identity``)."""
    F = sp.csr_matrix((n_rows, 0), dtype=np.float32) if F is None else check_features(
        F, name, n_rows)  # fmt: skip
    if identity:
        F = sp.hstack([F, sp.identity(n_rows, np.float32, format="csr")], format="csr")
    empty = np.flatnonzero(np.diff(F.indptr) == 0)
    if empty.size:
        what = name.split("_")[0]
        raise ValueError(
            f"{what} {empty[0]} has no features ({name} row {empty[0]} is empty and "
            f"{what}_identity=False): it could not be scored; give every {what} a feature, or "
            f"set {what}_identity=True"
        )
    F.sort_indices()
    return F


def new_rows_map(F, name: str, fitted_map: sp.csr_matrix, n_columns: int) -> sp.csr_matrix:
    """The map of users or items unknown to training, from their features ``F`` alone: the
    fitted map's ``n_columns`` feature columns, its identity columns left empty."""
    F = check_features(F, name, n_columns=n_columns)
    n_identity = fitted_map.shape[1] - n_columns
    return sp.hstack([F, sp.csr_matrix((F.shape[0], n_identity), dtype=np.float32)],
                     format="csr")  # fmt: skip


def grown_maps(tables: dict, features, n_users: int, n_items: int) -> dict:
    """The feature maps of a fitted model's ``tables`` grown to ``n_users`` x ``n_items``
    (``partial_fit``): ``features`` (user, item; None: the fitted rows, new rows without
    features) in place of the fitted feature columns; the identity, if fitted, extended."""
    out = {}
    for side, F, n in zip(("user", "item"), features, (n_users, n_items), strict=True):
        name = f"{side}_features"
        fitted = tables[f"{side}_map"]
        columns = int(tables["feature_columns"][int(side == "item")])
        identity = fitted.shape[1] > columns
        if F is None:
            F = fitted[:, :columns]
            F = sp.vstack([F, sp.csr_matrix((n - F.shape[0], columns), dtype=np.float32)])
        else:
            F = check_features(F, name, n, columns)
        out[f"{side}_map"] = feature_map(F, name, n, identity)
    out["feature_columns"] = tables["feature_columns"].copy()
    return out


def feature_counts(feature_map_: sp.csr_matrix, row_counts: np.ndarray) -> np.ndarray:
    """Interactions that reach each feature (table row): those of the users (items) that
    have it."""
    pattern = feature_map_.copy()
    pattern.data[:] = 1.0
    return np.rint(pattern.T @ row_counts.astype(np.float64)).astype(np.int64)


def mapped_weights(bias, factors, counts, feature_map_):
    """(biases, vectors) in float64 of the rows of ``feature_map_``: the weighted sums of the
    table rows' ``bias`` and ``factors``, rows that no interaction reached left out."""
    factors = factors.astype(np.float64)
    factors[counts == 0] = 0.0
    return feature_map_ @ bias.astype(np.float64), np.asarray(feature_map_ @ factors)


MAP_KEYS = ("feature_columns",) + tuple(
    f"{side}_map_{part}" for side in ("user", "item") for part in ("indptr", "indices", "data",
                                                                      "shape")
)  # fmt: skip


def saved_maps(tables: dict) -> dict:
    """The arrays of a model file that hold the feature maps (:data:`MAP_KEYS`)."""
    out = {"feature_columns": tables["feature_columns"]}
    for side in ("user", "item"):
        m = tables[f"{side}_map"]
        out.update({f"{side}_map_indptr": m.indptr, f"{side}_map_indices": m.indices,
                    f"{side}_map_data": m.data,
                    f"{side}_map_shape": np.array(m.shape, dtype=np.int64)})  # fmt: skip
    return out


def loaded_maps(arrays: dict, seen_shape) -> dict:
    """The feature maps of a model file's ``arrays``, every array checked (shapes against
    ``seen_shape``, the users x items) before any reaches a kernel."""
    check = _safety.check_array
    columns = check("feature_columns", arrays["feature_columns"], (2,), np.int64)
    out = {"feature_columns": columns.copy()}
    for n, side in enumerate(("user", "item")):
        key = f"{side}_map"
        shape = check(f"{key}_shape", arrays[f"{key}_shape"], (2,), np.int64).tolist()
        identity = shape[1] - int(columns[n])
        if shape[0] != seen_shape[n] or identity not in (0, shape[0]) or columns[n] < 0:
            raise ValueError(
                f"{key}_shape {shape} does not fit {seen_shape[n]} {side}s with "
                f"{int(columns[n])} feature columns"
            )
        indptr = check(f"{key}_indptr", arrays[f"{key}_indptr"], (shape[0] + 1,),
                       (np.int32, np.int64))  # fmt: skip
        indices = check(f"{key}_indices", arrays[f"{key}_indices"], None, (np.int32, np.int64))
        data = check(f"{key}_data", arrays[f"{key}_data"], indices.shape, np.float32)
        if indices.ndim != 1:
            raise ValueError(f"{key}_indices must be 1-D")
        m = sp.csr_matrix((data, indices, indptr), shape=tuple(shape))
        _safety.check_sparse_structure(m)
        if (m.nnz != indices.size or not m.has_canonical_format
                or not (np.isfinite(data) & (data > 0)).all()
                or (np.diff(indptr) == 0).any()):  # fmt: skip
            raise ValueError(
                f"the {side} feature map is damaged (unsorted or repeated columns, weights "
                f"that are not positive and finite, or a {side} without features)"
            )
        out[key] = m
    return out


def csr_tuple(m: sp.csr_matrix):
    """A map as the kernel reads it: ``(indptr int64, indices int32, weights float32)``."""
    return (m.indptr.astype(np.int64), m.indices.astype(np.int32),
            m.data.astype(np.float32))  # fmt: skip
