"""FieldHasher: tables (pandas, polars, Arrow, mappings of columns) to hashed CSR features.

The columns are hashed exactly as the file readers hash the fields of a line (see
:mod:`._hashing` and :mod:`._readers`), so that a model trained from files scores a table of
the same rows with the same columns. Every column goes through Arrow: pandas and polars
columns are converted one at a time (pandas and polars are never imported here), and the
hash kernels read Arrow's buffers directly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral
from os import PathLike
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted

from .._jit import JIT
from ._hashing import (
    _hash_string_column,
    _pack_sorted_rows,
    _string_buffers,
    check_n_bits,
    column_fields,
    finish_hash,
    finish_row,
    hash_int,
    index_dtype,
    make_csr,
    slice_size,
    to_column,
)
from ._parsers import _N_BUCKETS, count_bucket

if TYPE_CHECKING:
    from .._typing import TableLike

KINDS = ("categorical", "bucket", "value")


@numba.njit(**JIT)
def _hash_bucket_column(values, valid, field, n_bits, size, out_cols):
    """Columns of a numeric column under Criteo's count transform: the decimal text of
    ``count_bucket(x)`` is hashed, a null as the empty text (as ``parse_delimited`` does)."""
    scratch = np.empty(24, dtype=np.uint8)
    known = np.full(_N_BUCKETS, -1, dtype=np.int64)  # most buckets are small: hash each once
    small = np.empty(_N_BUCKETS, dtype=np.int64)  # and most counts too: no logarithm
    for x in range(_N_BUCKETS):
        small[x] = count_bucket(float(x))
    empty = to_column(finish_hash(np.uint32(field), np.uint32(0), 0), field, n_bits, size)
    for i in range(values.shape[0]):
        if not valid[i]:
            out_cols[i] = empty
            continue
        x = values[i]
        b = small[np.int64(x)] if 0 <= x < _N_BUCKETS and x == np.floor(x) else count_bucket(x)
        col = known[b] if 0 <= b < _N_BUCKETS else -1
        if col < 0:
            col = to_column(hash_int(b, np.uint32(field), scratch), field, n_bits, size)
            if 0 <= b < _N_BUCKETS:
                known[b] = col
        out_cols[i] = col


@numba.njit(**JIT)
def _pack_values_in_place(cols, vals, absent, indptr):
    """As :func:`_pack_sorted_in_place` for unsorted rows with values (``vals``, packed in
    its own memory too): each row is sorted in a scratch copy, then written back."""
    n_rows, n_fields = cols.shape
    flat_c = cols.reshape(-1)
    flat_v = vals.reshape(-1)
    row_c = np.empty(n_fields, dtype=cols.dtype)
    row_v = np.empty(n_fields, dtype=vals.dtype)
    nnz = 0
    indptr[0] = 0
    for r in range(n_rows):
        k = 0
        for f in range(n_fields):
            c = flat_c[r * n_fields + f]
            if c != absent:
                row_c[k] = c
                row_v[k] = flat_v[r * n_fields + f]
                k += 1
        k = finish_row(row_c, row_v, 0, k)
        for i in range(k):
            flat_c[nnz] = row_c[i]
            flat_v[nnz] = row_v[i]
            nnz += 1
        indptr[r + 1] = nnz
    return nnz


@numba.njit(**JIT)
def _buckets(values):
    """``count_bucket`` of each value, as the kernel computes it."""
    out = np.empty(values.shape[0], dtype=np.int64)
    for i in range(values.shape[0]):
        out[i] = count_bucket(values[i])
    return out


def _kind_of_type(arrow_type) -> str | None:
    """ "categorical" for text-like types, "numeric" for numbers, None if unsupported."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    text = (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_string_view(t)
        or pa.types.is_boolean(t)
        or pa.types.is_null(t)
    )
    if text:
        return "categorical"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "numeric"
    return None


def _to_arrow(column, name) -> pa.Array | pa.ChunkedArray:
    """One column as Arrow, without copying where Arrow can share the buffers."""
    if isinstance(column, pa.Array | pa.ChunkedArray):
        return column
    if hasattr(column, "to_arrow"):  # a polars Series
        return column.to_arrow()
    try:  # not through NumPy, which would turn [1, "a"] into strings; NaN is a null
        return pa.array(column, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ValueError(
            f"column {name!r} cannot be hashed: its values mix types or are not text or "
            f"numbers ({exc})"
        ) from exc


def _table_columns(X) -> list[tuple[Any, Any]]:
    """``[(name, column)]`` of a table, mapping, or 2-D array (names 0, 1, ...)."""
    if sp.issparse(X):  # first: a DOK matrix is a Mapping
        raise TypeError(
            "FieldHasher hashes tables of raw values; it does not accept a sparse matrix"
        )
    if isinstance(X, pa.Table | pa.RecordBatch):
        return list(zip(X.column_names, X.columns, strict=True))
    if hasattr(X, "columns") and hasattr(X, "iloc"):  # pandas, by duck typing: no import
        return [(name, X.iloc[:, j]) for j, name in enumerate(X.columns)]
    if hasattr(X, "columns") and hasattr(X, "get_column"):  # polars
        return [(name, X.get_column(name)) for name in X.columns]
    if isinstance(X, Mapping):
        return list(X.items())
    # scikit-learn's checks and messages for arrays: 2-D, not empty, not complex
    X = check_array(X, dtype=None, ensure_all_finite=False)
    return [(j, X[:, j]) for j in range(X.shape[1])]


def _numbers(chunk) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, validity) of a numeric Arrow array (a NaN counts as a null)."""
    if chunk.null_count:
        values = np.asarray(pc.fill_null(chunk, 0).cast(pa.float64()))
        valid = np.asarray(chunk.is_valid())
    else:
        values = chunk.to_numpy().astype(np.float64, copy=False)
        valid = np.ones(len(values), dtype=np.bool_)
    return values, valid & ~np.isnan(values)


def _text(chunk, name) -> pa.Array:
    """A categorical Arrow array as a string or binary array: numbers as their text."""
    if pa.types.is_dictionary(chunk.type):
        chunk = chunk.dictionary_decode()
    t = chunk.type
    if pa.types.is_string_view(t):
        return chunk.cast(pa.large_string())
    if not (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ):
        try:
            chunk = pc.cast(chunk, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"column {name!r} of type {t} cannot be hashed as text") from exc
    return chunk


@dataclass
class Tokens:
    """The (field, value) pairs a :class:`FieldHasher` saw, with their counts and columns.

    One entry per kept pair, grouped by field, most frequent first within a field.
    Numeric columns kept as values have one entry (value ``""``): their single column.

    Attributes
    ----------
    field_names : list of str
        Name of each field (input column), in field order.
    field : ndarray of int32, shape (n_tokens,)
        Field index of each pair.
    value : ndarray of str, shape (n_tokens,)
        The value's text as hashed (``""`` for a null or empty value).
    count : ndarray of int64, shape (n_tokens,)
        Rows holding the pair in the data the hasher was fitted on.
    column : ndarray of int64, shape (n_tokens,)
        The hashed column of the pair.
    n_bits : int
        The hasher's ``n_bits``.
    max_tokens : int
        The cap on pairs kept per field.
    """

    field_names: list
    field: np.ndarray
    value: np.ndarray
    count: np.ndarray
    column: np.ndarray
    n_bits: int
    max_tokens: int

    def save(self, path: str | PathLike) -> None:
        """Write the tokens to ``path`` (``.npz``: arrays, and the names as JSON text; no
        pickle, so that :func:`load_tokens` reads a file from anyone safely)."""
        meta = {
            "field_names": [str(n) for n in self.field_names],
            "n_bits": self.n_bits,
            "max_tokens": self.max_tokens,
        }
        with open(path, "wb") as f:  # np.savez_compressed would append ".npz" to a str path
            np.savez_compressed(
                f,
                meta=np.array(json.dumps(meta)),
                field=self.field,
                value=self.value.astype(str),
                count=self.count,
                column=self.column,
            )


def load_tokens(path: str | PathLike) -> Tokens:
    """Read tokens written by :meth:`Tokens.save` (no pickle is loaded).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    tokens : Tokens
    """
    with np.load(path, allow_pickle=False) as arrays:
        meta = json.loads(str(arrays["meta"]))
        return Tokens(
            field_names=meta["field_names"],
            field=arrays["field"],
            value=arrays["value"],
            count=arrays["count"],
            column=arrays["column"],
            n_bits=int(meta["n_bits"]),
            max_tokens=int(meta["max_tokens"]),
        )


class FieldHasher(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Hash the columns of a table into sparse features, as the file readers do.

    Column ``f`` of the table (0-based, in the order seen by :meth:`fit`) is field ``f``,
    and each value becomes the column ``murmurhash3_32(text, seed=f) mod 2**n_bits`` of the
    (field, value) pair (see :func:`hash_features`), with the readers' conventions:

    - a categorical (string, category, boolean) value is hashed as its UTF-8 text; a null
      as the empty text, like an empty field of a file: whether a field is missing is a
      feature of its own;
    - a numeric column is, by its kind (``numeric`` and ``column_kinds``):

      * ``"value"``: one column per field (the pair (field, empty text)) holding the
        number, no feature when null (``read_csv(..., numeric=[...])``);
      * ``"bucket"``: Criteo's count transform, the decimal text of
        :math:`\\lfloor \\ln(x)^2 \\rfloor` for :math:`x > 2` and of the integer part of
        :math:`x` otherwise, a null as the empty text (``read_criteo``'s counts);
      * ``"categorical"``: the value's text (integer 5 as ``"5"``), as ``read_avazu`` and
        ``read_csv`` hash integer-coded columns. A float is written as Arrow writes it:
        an integral one as an integer (``2.0`` as ``"2"``, so an integer column that pandas
        made float for its missing values hashes as in the file), others in their shortest
        form (``1.5``), which may differ from a file's text.

    So ``FieldHasher(numeric="bucket").fit_transform(df)`` on a DataFrame of Criteo's 13
    counts and 26 categoricals gives the columns of ``read_criteo`` on the same rows.

    Parameters
    ----------
    n_bits : int, default=20
        The output has ``2**n_bits`` columns (1 to 32).
    numeric : {"value", "bucket", "categorical"}, default="value"
        How numeric (integer and float) columns are hashed (see above).
    column_kinds : dict of str to {"value", "bucket", "categorical"}, default=None
        Kind of particular columns, overriding ``numeric`` (a text column can only be
        categorical).
    field_aware : bool, default=False
        Give each field its own slice of columns (:func:`column_fields`), as
        :class:`~sparseopt.FFMClassifier` needs. The output matrix then carries the field of
        each column as its attribute ``column_fields``, which ``FFMClassifier(fields="auto")``
        (the default) reads: ``make_pipeline(FieldHasher(field_aware=True), FFMClassifier())``
        needs no other argument.
    keep_tokens : bool, default=False
        Keep the most frequent (field, value) pairs seen by :meth:`fit`, with their counts,
        in ``tokens_``, to name the features of a model (:func:`sparseopt.inspect.top_features`).
    max_tokens : int, default=10_000
        Pairs kept per field with ``keep_tokens`` (the most frequent; ties by text): the
        hasher keeps at most ``n_fields * max_tokens`` pairs whatever the vocabulary, and
        the count of each kept pair is exact (``fit`` counts one column at a time, Arrow's
        ``value_counts``, so its memory holds one column's distinct values at once).
    dtype : {np.float32, np.float64}, default=np.float32
        Dtype of the output's values.

    Attributes
    ----------
    n_features_in_ : int
        Number of columns (fields).
    feature_names_in_ : ndarray of str, shape (n_features_in_,)
        Column names, when they are all strings.
    kinds_ : ndarray of str, shape (n_features_in_,)
        Kind of each column: "categorical", "bucket" or "value".
    fields_ : ndarray of int32, shape (2**n_bits,) or None
        With ``field_aware=True``, the field of each output column
        (``column_fields(n_bits, n_features_in_)``); None otherwise.
    tokens_ : Tokens or None
        With ``keep_tokens=True``, the pairs seen by :meth:`fit`; None otherwise.

    See Also
    --------
    sparseopt.datasets.hash_features : the same hashing as a function, categorical only.
    sklearn.feature_extraction.FeatureHasher : one hash space for tokens without fields.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn.pipeline import make_pipeline
    >>> from sparseopt import FieldHasher, SparseLogisticRegression
    >>> df = pd.DataFrame({"site": ["a", "b", "a", None], "price": [1.0, 2.5, None, 4.0]})
    >>> X = FieldHasher(n_bits=10).fit_transform(df)
    >>> X.shape, X.nnz
    ((4, 1024), 7)
    >>> model = make_pipeline(FieldHasher(n_bits=16), SparseLogisticRegression(max_iter=2))
    >>> model.fit(df, [0, 1, 0, 1]).predict_proba(df).shape
    (4, 2)
    """

    _parameter_constraints: dict = {
        "n_bits": [Interval(Integral, 1, 32, closed="both")],
        "numeric": [StrOptions(set(KINDS))],
        "column_kinds": [dict, None],
        "field_aware": ["boolean"],
        "keep_tokens": ["boolean"],
        "max_tokens": [Interval(Integral, 1, None, closed="left")],
        "dtype": "no_validation",
    }

    def __init__(
        self,
        n_bits: int = 20,
        *,
        numeric: str = "value",
        column_kinds: dict | None = None,
        field_aware: bool = False,
        keep_tokens: bool = False,
        max_tokens: int = 10_000,
        dtype=np.float32,
    ):
        self.n_bits = n_bits
        self.numeric = numeric
        self.column_kinds = column_kinds
        self.field_aware = field_aware
        self.keep_tokens = keep_tokens
        self.max_tokens = max_tokens
        self.dtype = dtype

    def fit(self, X: TableLike, y: None = None) -> FieldHasher:
        """Learn the columns (names, order, kinds), and with ``keep_tokens`` their values.

        Parameters
        ----------
        X : pandas or polars DataFrame, pyarrow Table, mapping of name to array, or 2-D array
            The raw columns.
        y : ignored

        Returns
        -------
        self
        """
        self._validate_params()
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be np.float32 or np.float64, got {self.dtype!r}")
        columns = _table_columns(X)
        if not columns:
            raise ValueError("FieldHasher needs at least one column")
        names = [name for name, _ in columns]
        overrides = dict(self.column_kinds or {})
        unknown = sorted(map(str, set(overrides) - set(names)))
        if unknown:
            raise ValueError(f"column_kinds names columns that X does not have: {unknown}")
        arrays, kinds = [], []
        for name, column in columns:
            array = _to_arrow(column, name)
            kind = _kind_of_type(array.type)
            if kind is None:
                raise ValueError(
                    f"column {name!r} has type {array.type}, which FieldHasher cannot hash: "
                    f"convert it to strings or numbers"
                )
            wanted = overrides.get(name, "categorical" if kind == "categorical" else self.numeric)
            if wanted not in KINDS:
                raise ValueError(f"column_kinds[{name!r}] must be one of {KINDS}, got {wanted!r}")
            if kind == "categorical" and wanted != "categorical":
                raise ValueError(
                    f"column {name!r} holds {array.type} values, which can only be "
                    f"categorical, not {wanted!r}"
                )
            arrays.append(array)
            kinds.append(wanted)
        n_rows = len(arrays[0])
        self._check_lengths(names, arrays, n_rows)
        self.n_features_in_ = len(names)
        if all(isinstance(n, str) for n in names):
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self._names = names
        self.kinds_ = np.asarray(kinds)
        self._n_features_out = 1 << self.n_bits
        slice_size(self.n_bits, len(names), self.field_aware)  # every field must fit
        self.fields_ = column_fields(self.n_bits, len(names)) if self.field_aware else None
        self.tokens_ = self._count_tokens(arrays) if self.keep_tokens else None
        return self

    def partial_fit(self, X: TableLike, y: None = None) -> FieldHasher:
        """:meth:`fit` on the first call; later calls add X's pairs to ``tokens_``.

        For the token counts of data read in chunks. The columns and their kinds are those
        of the first call. Memory stays bounded: after each call a field keeps its
        ``max_tokens`` most frequent pairs, so a count is exact for a pair that was never
        dropped; one dropped and seen again is counted from its return.

        Parameters
        ----------
        X : pandas or polars DataFrame, pyarrow Table, mapping of name to array, or 2-D array
        y : ignored

        Returns
        -------
        self
        """
        if not hasattr(self, "kinds_"):
            return self.fit(X)
        arrays = self._arrays(X)
        if self.tokens_ is not None:
            new = self._count_tokens(arrays)
            old = self.tokens_
            merged = _sum_and_cap(
                np.concatenate([old.field, new.field]),
                np.concatenate([old.value, new.value]),
                np.concatenate([old.count, new.count]),
                self.max_tokens,
            )
            self.tokens_ = self._tokens(*merged)
        return self

    def transform(self, X: TableLike) -> sp.csr_matrix:
        """Hash the columns seen by :meth:`fit` (found by name; other columns are ignored).

        Parameters
        ----------
        X : pandas or polars DataFrame, pyarrow Table, mapping of name to array, or 2-D array

        Returns
        -------
        Xt : scipy.sparse.csr_matrix of shape (n_rows, 2**n_bits)
            Canonical (sorted indices, no repeats; two fields of a row that hash to the same
            column sum their values), int32 indices when ``n_bits <= 30``. With
            ``field_aware=True`` it has the attribute ``column_fields`` (``fields_``).
        """
        check_is_fitted(self, "kinds_")
        arrays = self._arrays(X)
        n_rows = len(arrays[0])
        n_bits = check_n_bits(self.n_bits)
        n_fields = len(arrays)
        size = slice_size(n_bits, n_fields, self.field_aware)
        n_features = 1 << n_bits
        # row r's columns land in row r of this buffer, which then becomes the CSR indices;
        # the values' buffer becomes the CSR data: the output is all the memory used
        indices = np.empty(n_rows * n_fields, dtype=index_dtype(n_features))
        with_values = "value" in self.kinds_
        data = (np.ones if with_values else np.empty)(n_rows * n_fields, dtype=self.dtype)
        cols, vals = indices.reshape(n_rows, n_fields), data.reshape(n_rows, n_fields)
        out = np.empty(max((len(c) for a in arrays for c in self._chunks(a)), default=0), np.int64)
        for f, (array, kind) in enumerate(zip(arrays, self.kinds_, strict=True)):
            self._hash_column(array, kind, f, n_bits, size, cols, vals, out)
        indptr = np.empty(n_rows + 1, dtype=np.int64)
        absent = cols.dtype.type(n_features)
        if with_values:
            nnz = _pack_values_in_place(cols, vals, absent, indptr)
        else:
            cols.sort(axis=1)  # NumPy's vectorized row sort: see csr_from_columns
            # into cols' own buffer: an entry is written at or before the place it is read from
            nnz = _pack_sorted_rows(cols, absent, indptr, indices, data)
        del cols, vals  # the views go before the buffers shrink in place
        indices.resize(nnz, refcheck=False)
        data.resize(nnz, refcheck=False)
        Xt = make_csr(indptr, indices, data, (n_rows, n_features))
        if self.field_aware:
            Xt.column_fields = self.fields_
        return Xt

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _check_lengths(names, arrays, n_rows):
        for name, array in zip(names, arrays, strict=True):
            if len(array) != n_rows:
                raise ValueError(f"column {name!r} has {len(array)} rows, expected {n_rows}")

    def _arrays(self, X) -> list:
        """The fitted columns of ``X`` as Arrow arrays, in field order, checked."""
        columns = dict(_table_columns(X))
        if not hasattr(self, "feature_names_in_") and len(columns) != self.n_features_in_:
            raise ValueError(
                f"X has {len(columns)} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        missing = [n for n in self._names if n not in columns]
        if missing:
            raise ValueError(
                f"columns {missing} were present at fit but are missing from X "
                f"(it has {list(columns)[:20]})"
            )
        arrays = []
        for name, kind in zip(self._names, self.kinds_, strict=True):
            array = _to_arrow(columns[name], name)
            found = _kind_of_type(array.type)
            if found is None or (kind != "categorical" and found != "numeric"):
                raise ValueError(
                    f"column {name!r} has type {array.type} but was hashed as {str(kind)!r} at fit"
                )
            arrays.append(array)
        self._check_lengths(self._names, arrays, len(arrays[0]))
        return arrays

    @staticmethod
    def _chunks(array):
        return array.chunks if isinstance(array, pa.ChunkedArray) else [array]

    def _hash_column(self, array, kind, f, n_bits, size, cols, vals, out):
        """Write field ``f``'s columns into ``cols[:, f]`` (values into ``vals[:, f]``),
        through ``out``: the kernels write contiguous memory, twice as fast as a column."""
        name = self._names[f]
        start = 0
        for chunk in self._chunks(array):
            rows = slice(start, start + len(chunk))
            start += len(chunk)
            hashed = out[: len(chunk)]
            if kind == "categorical":
                offsets, data, valid = _string_buffers(_text(chunk, name))
                _hash_string_column(offsets, data, valid, f, n_bits, size, hashed)
                cols[rows, f] = hashed
            elif kind == "bucket":
                values, valid = _numbers(chunk)
                if np.isinf(values).any():
                    raise ValueError(f"column {name!r} holds an infinite count")
                _hash_bucket_column(values, valid, f, n_bits, size, hashed)
                cols[rows, f] = hashed
            else:  # one column, the pair (field, empty text), holds the value
                values, valid = _numbers(chunk)
                col = to_column(finish_hash(np.uint32(f), np.uint32(0), 0), f, n_bits, size)
                cols[rows, f] = np.where(valid, col, 1 << n_bits)
                vals[rows, f] = values

    def _count_tokens(self, arrays) -> Tokens:
        """The ``max_tokens`` most frequent values of each column, counted exactly."""
        parts = []
        for f, (array, kind) in enumerate(zip(arrays, self.kinds_, strict=True)):
            if kind == "value":
                n = sum(int(_numbers(chunk)[1].sum()) for chunk in self._chunks(array))
                values, counts = np.array([""]), np.array([n], dtype=np.int64)
            else:
                vc = pc.value_counts(self._token_text(array, kind, self._names[f]))
                values = vc.field("values").to_numpy(zero_copy_only=False)
                values = np.array(["" if v is None else v for v in values], dtype=str)
                counts = vc.field("counts").to_numpy().astype(np.int64)
            parts.append(_sum_and_cap(np.full(values.size, f, np.int32), values, counts,
                                      self.max_tokens))  # fmt: skip
        return self._tokens(*(np.concatenate(p) for p in zip(*parts, strict=True)))

    def _tokens(self, field, value, count) -> Tokens:
        return Tokens(
            field_names=[str(n) for n in self._names],
            field=field,
            value=value.astype(str),
            count=count,
            column=self._token_columns(field, value.astype(str)),
            n_bits=int(self.n_bits),
            max_tokens=int(self.max_tokens),
        )

    def _token_text(self, array, kind, name) -> pa.ChunkedArray:
        """The text each value of a column is hashed as (nulls stay null)."""
        chunks = []
        for chunk in self._chunks(array):
            if kind == "bucket":
                values, valid = _numbers(chunk)
                buckets = _buckets(np.where(valid, values, 0.0))
                chunks.append(pa.array(buckets.astype(str), mask=~valid, type=pa.large_string()))
            else:
                chunks.append(_text(chunk, name).cast(pa.large_string()))
        return pa.chunked_array(chunks, type=pa.large_string())

    def _token_columns(self, field, value) -> np.ndarray:
        """The hashed column of each (field, value) pair, by the transform's own kernel."""
        size = slice_size(self.n_bits, len(self._names), self.field_aware)
        column = np.empty(len(value), dtype=np.int64)
        for f in np.unique(field):
            idx = np.flatnonzero(field == f)
            offsets, data, valid = _string_buffers(pa.array(value[idx], type=pa.large_string()))
            out = np.empty(idx.size, dtype=np.int64)
            _hash_string_column(offsets, data, valid, int(f), self.n_bits, size, out)
            column[idx] = out
        return column

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a null or NaN is a missing value, as in the files
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.input_tags.sparse = False
        tags.transformer_tags.preserves_dtype = []
        return tags


def _sum_and_cap(field, value, count, cap):
    """Sum the counts of equal (field, value) pairs (a null and the empty text are both
    ``""``: one value, as they hash alike) and keep each field's ``cap`` most frequent,
    ordered by field, then count (descending), then text."""
    if field.size == 0:
        return field, value, count
    order = np.lexsort((value, field))
    field, value, count = field[order], value[order], count[order]
    starts = np.flatnonzero(np.r_[True, (field[1:] != field[:-1]) | (value[1:] != value[:-1])])
    field, value, count = field[starts], value[starts], np.add.reduceat(count, starts)
    order = np.lexsort((value, -count, field))
    field, value, count = field[order], value[order], count[order]
    rank = np.arange(field.size) - np.searchsorted(field, field)
    keep = rank < cap
    return field[keep], value[keep], count[keep]
