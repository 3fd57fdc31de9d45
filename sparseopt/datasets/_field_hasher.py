"""FieldHasher: tables (pandas, polars, Arrow, mappings of columns) to hashed CSR features.

The columns are hashed exactly as the file readers hash the fields of a line (see
:mod:`._hashing` and :mod:`._readers`), so that a model trained from files scores a table of
the same rows with the same columns. Every column goes through Arrow: pandas and polars
columns are converted one at a time (pandas and polars are never imported here), and the
hash kernels read Arrow's buffers directly.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted

from .._io import _ERRORS, _read_npz
from .._jit import JIT
from ._crosses import (
    CROSS_VALUE_SEP,
    add_crosses,
    cross_name,
    cross_table,
    parse_interactions,
)
from ._hashing import (
    NO_HASHES,
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
    mix_block,
    slice_size,
    to_column,
)
from ._parsers import _N_BUCKETS, count_bucket

if TYPE_CHECKING:
    from .._typing import TableLike

KINDS = ("categorical", "bucket", "value")
# the largest count read_criteo takes: its integer part is exact in a float64
MAX_COUNT = 9e15
# fields_ of 2**28 columns takes 1 GiB; field-aware factors of more do not fit in memory
MAX_FIELD_AWARE_BITS = 28


@numba.njit(**JIT)
def _hash_bucket_column(values, valid, field, n_bits, size, out_cols, out_hashes):
    """Columns of a numeric column under Criteo's count transform: the decimal text of
    ``count_bucket(x)`` is hashed, a null as the empty text (as ``parse_delimited`` does);
    the 32-bit hashes too when ``out_hashes`` is not empty (for crosses).
    Returns -1, or the row of the first count beyond ``MAX_COUNT``, where it stopped (its
    integer part could not be written: the caller refuses the column)."""
    scratch = np.empty(24, dtype=np.uint8)
    keep_hashes = out_hashes.shape[0] > 0
    known = np.full(_N_BUCKETS, -1, dtype=np.int64)  # most buckets are small: hash each once
    known_hash = np.zeros(_N_BUCKETS, dtype=np.uint32)
    small = np.empty(_N_BUCKETS, dtype=np.int64)  # and most counts too: no logarithm
    for x in range(_N_BUCKETS):
        small[x] = count_bucket(float(x))
    empty_hash = finish_hash(np.uint32(field), np.uint32(0), 0)
    empty = to_column(empty_hash, field, n_bits, size)
    for i in range(values.shape[0]):
        if not valid[i]:
            out_cols[i] = empty
            if keep_hashes:
                out_hashes[i] = empty_hash
            continue
        x = values[i]
        if not abs(x) <= MAX_COUNT:
            return i
        b = small[np.int64(x)] if 0 <= x < _N_BUCKETS and x == np.floor(x) else count_bucket(x)
        col = known[b] if 0 <= b < _N_BUCKETS else -1
        if col >= 0:
            h = known_hash[b]
        else:
            h = hash_int(b, np.uint32(field), scratch)
            col = to_column(h, field, n_bits, size)
            if 0 <= b < _N_BUCKETS:
                known[b] = col
                known_hash[b] = h
        out_cols[i] = col
        if keep_hashes:
            out_hashes[i] = h
    return -1


@numba.njit(**JIT)
def _combine_hashes(parts, seed, out):
    """Cross hashes of token values from their fields' hashes (``parts``: one row per field
    of the cross), as :func:`._crosses.cross_hash` computes them."""
    for i in range(parts.shape[1]):
        h = np.uint32(seed)
        for j in range(parts.shape[0]):
            h = mix_block(h, parts[j, i])
        out[i] = finish_hash(h, np.uint32(0), 4 * parts.shape[0])


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
    """ "categorical" for text-like types (a category is one whatever its values' type),
    "numeric" for numbers, "null" for a column of nulls only, None if unsupported."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        return "categorical" if _kind_of_type(t.value_type) is not None else None
    if pa.types.is_null(t):
        return "null"
    text = (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_string_view(t)
        or pa.types.is_boolean(t)
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
    except OverflowError as exc:
        raise ValueError(
            f"column {name!r} holds an integer beyond 64 bits: give such values as text"
        ) from exc


def _table_columns(X) -> list[tuple[Any, Any]]:
    """``[(name, column)]`` of a table, mapping, or 2-D array (names 0, 1, ...); a mapping of
    single values is one row. Names must be unique: columns are found by name."""
    if sp.issparse(X):  # first: a DOK matrix is a Mapping
        raise TypeError(
            "FieldHasher hashes tables of raw values; it does not accept a sparse matrix"
        )
    if isinstance(X, pa.Table | pa.RecordBatch):
        columns = list(zip(X.column_names, X.columns, strict=True))
    elif hasattr(X, "columns") and hasattr(X, "iloc"):  # pandas, by duck typing: no import
        columns = [(name, X.iloc[:, j]) for j, name in enumerate(X.columns)]
    elif hasattr(X, "columns") and hasattr(X, "get_column"):  # polars
        columns = [(name, X.get_column(name)) for name in X.columns]
    elif isinstance(X, Mapping):
        columns = _mapping_columns(X)
    else:
        # scikit-learn's checks and messages for arrays: 2-D, not empty, not complex
        X = check_array(X, dtype=None, ensure_all_finite=False)
        columns = [(j, X[:, j]) for j in range(X.shape[1])]
    # by their text too: fields are named by it (tokens, feature names), 0 and "0" alike
    repeated = [name for name, n in Counter(str(name) for name, _ in columns).items() if n > 1]
    if repeated:
        raise ValueError(
            f"X has several columns named {repeated[:10]}: FieldHasher finds its fields by "
            f"name, so rename them (or drop the copies)"
        )
    return columns


def _mapping_columns(X: Mapping) -> list[tuple[Any, Any]]:
    """A mapping of name to column, or of name to one value (one record, one row)."""
    single = [np.ndim(value) == 0 for value in X.values()]
    if not any(single):
        return list(X.items())
    if not all(single):
        names = [name for name, one in zip(X, single, strict=True) if one][:10]
        raise ValueError(
            f"X maps {names} to single values and other names to columns: give every name "
            f"a column (a list of values), or every name one value (one row)"
        )
    return [(name, [value]) for name, value in X.items()]


def _numbers(chunk) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, validity) of a numeric Arrow array (a NaN counts as a null)."""
    if pa.types.is_null(chunk.type):
        return np.zeros(len(chunk)), np.zeros(len(chunk), dtype=np.bool_)
    if chunk.null_count:
        values = np.asarray(pc.fill_null(chunk, 0).cast(pa.float64()))
        valid = np.asarray(chunk.is_valid())
    else:
        values = chunk.to_numpy().astype(np.float64, copy=False)
        valid = np.ones(len(values), dtype=np.bool_)
    return values, valid & ~np.isnan(values)


def _check_numbers(values, valid, name, kind, dtype):
    """Refuse the numbers that the file readers refuse: a count beyond ``MAX_COUNT`` (whose
    integer part a kernel could not write), a value that is infinite or overflows ``dtype``."""
    magnitude = np.abs(values[valid])
    if kind == "bucket":
        limit, what = MAX_COUNT, "count (read_criteo refuses larger ones too)"
    else:
        limit, what = float(np.finfo(dtype).max), f"value of the output's {np.dtype(dtype).name}"
    if magnitude.size and not magnitude.max() <= limit:
        bad = float(values[valid][np.argmax(~(magnitude <= limit))])
        raise ValueError(f"column {name!r} holds {bad:g}, beyond {limit:g}, the largest {what}")


def _text(chunk, name) -> pa.Array:
    """A categorical Arrow array as a string or binary array, each value as the text a file
    holds for it: numbers as Arrow writes them (``5``, ``2`` for 2.0, ``1.5``), booleans as
    ``True`` and ``False`` (as pandas and Python write them, and read them back), nulls kept."""
    if pa.types.is_dictionary(chunk.type):
        chunk = chunk.dictionary_decode()
    t = chunk.type
    if pa.types.is_string_view(t):
        return chunk.cast(pa.large_string())
    if pa.types.is_boolean(t):
        return pc.if_else(chunk, "True", "False")
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


TOKENS_FORMAT = "sparseopt-tokens"
TOKENS_VERSION = 2  # 1: values as a fixed-width array, compressed (refused: count again)


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
    value : ndarray of object (str), shape (n_tokens,)
        The value's text as hashed (``""`` for a null or empty value). Each is a Python
        string of its own length, so the memory is that of the text kept, however long the
        longest value.
    count : ndarray of int64, shape (n_tokens,)
        Rows holding the pair in the data the hasher was fitted on.
    column : ndarray of int64, shape (n_tokens,)
        The hashed column of the pair.
    n_bits : int
        The hasher's ``n_bits``.
    max_tokens : int
        The cap on pairs kept per field.
    field_aware : bool, default=False
        The hasher's ``field_aware`` (the column layout).
    model_sha256 : str or None, default=None
        SHA-256 of the model file the tokens were saved with (``sparseopt train
        --keep-tokens`` records it, so that ``sparseopt inspect`` never names another model's
        weights with them); None: not tied to a file.
    crosses : list of lists of int, default=()
        The hasher's crosses (field indices). They are the last ``len(crosses)`` fields of
        ``field_names`` (named ``"a x b"``); a cross's value is its fields' texts joined by
        the byte 0x1F.
    """

    field_names: list
    field: np.ndarray
    value: np.ndarray
    count: np.ndarray
    column: np.ndarray
    n_bits: int
    max_tokens: int
    field_aware: bool = False
    model_sha256: str | None = None
    crosses: list = ()

    def save(self, path: str | PathLike) -> None:
        """Write the tokens to ``path`` atomically (a temporary file renamed into place).

        The ``.npz`` holds arrays and JSON text, no pickle, uncompressed (so that
        :func:`load_tokens` reads a file from anyone safely, in memory bounded by its size):
        the values as their UTF-8 bytes end to end (``value_bytes``) and where each starts
        (``value_offsets``, one more than the values).
        """
        self.check()
        meta = {
            "format": TOKENS_FORMAT,
            "version": TOKENS_VERSION,
            "field_names": [str(n) for n in self.field_names],
            "n_bits": int(self.n_bits),
            "max_tokens": int(self.max_tokens),
            "field_aware": bool(self.field_aware),
            "model_sha256": self.model_sha256,
            "crosses": [[int(f) for f in c] for c in self.crosses],
        }
        values = pa.array(self.value, type=pa.large_string())
        offsets, data, _ = _string_buffers(values)
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                    field=self.field.astype(np.int32),
                    count=self.count.astype(np.int64),
                    column=self.column.astype(np.int64),
                    value_offsets=offsets,
                    value_bytes=data[: offsets[-1]],
                )
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def check(self, where: str = "tokens") -> None:
        """Raise ValueError unless the arrays agree with each other and the hashing space:
        1-D integer arrays of one length, fields among ``field_names``, columns in
        ``[0, 2**n_bits)``, counts >= 0, values text."""
        n_bits = self.n_bits
        if isinstance(n_bits, bool) or not isinstance(n_bits, Integral) or not 1 <= n_bits <= 32:
            raise ValueError(f"{where}: n_bits must be an integer in [1, 32], got {n_bits!r}")
        names = self.field_names
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}: field_names must be a non-empty list of names")
        n = None
        for attr in ("field", "value", "count", "column"):
            array = getattr(self, attr)
            if not isinstance(array, np.ndarray) or array.ndim != 1:
                raise ValueError(f"{where}: {attr} must be a 1-D array")
            if attr != "value" and array.dtype.kind not in "iu":
                raise ValueError(f"{where}: {attr} must hold integers, not {array.dtype}")
            if n is not None and array.size != n:
                raise ValueError(f"{where}: {attr} has {array.size} entries, field has {n}")
            n = array.size
        if n and not (0 <= self.field.min() and self.field.max() < len(names)):
            raise ValueError(f"{where}: a field index is not in [0, {len(names)})")
        if n and not (0 <= self.column.min() and self.column.max() < 1 << n_bits):
            raise ValueError(f"{where}: a column is not in [0, 2**{n_bits})")
        if n and self.count.min() < 0:
            raise ValueError(f"{where}: a count is negative")
        if not all(isinstance(v, str) for v in self.value.tolist()):
            raise ValueError(f"{where}: every value must be a str")
        n_inputs = len(names) - len(self.crosses)
        for cross in self.crosses:
            if not (
                isinstance(cross, list | tuple)
                and 2 <= len(cross) <= 3
                and all(isinstance(f, Integral) and 0 <= f < n_inputs for f in cross)
                and len(set(cross)) == len(cross)
            ):
                raise ValueError(
                    f"{where}: a cross must be 2 or 3 distinct input fields, got {cross!r}"
                )


def load_tokens(path: str | PathLike) -> Tokens:
    """Read tokens written by :meth:`Tokens.save`, as untrusted input.

    No pickle is loaded, and every array is checked: its type and length, each field
    among the named fields, each value valid UTF-8, and each column the hash of its
    (field, value) pair, so an edited file is refused rather than naming the wrong weights.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    tokens : Tokens

    Raises
    ------
    ValueError
        If ``path`` is not a token file of this format, naming what is wrong.
    """
    path = Path(path)
    arrays = _token_arrays(path)
    meta = _token_meta(path, arrays.pop("meta"))
    values = _token_values(path, arrays)
    tokens = Tokens(
        field_names=meta["field_names"],
        field=arrays["field"],
        value=values.to_numpy(zero_copy_only=False),
        count=arrays["count"],
        column=arrays["column"],
        n_bits=meta["n_bits"],
        max_tokens=meta["max_tokens"],
        field_aware=meta["field_aware"],
        model_sha256=meta["model_sha256"],
        crosses=meta.get("crosses", []),
    )
    _check_token_columns(path, tokens, values)
    tokens.field = tokens.field.astype(np.int32)
    tokens.count = tokens.count.astype(np.int64)
    tokens.column = tokens.column.astype(np.int64)
    return tokens


def _token_arrays(path: Path) -> dict:
    """The arrays of a token file, refused unless they are exactly those of this format."""
    try:
        arrays = _read_npz(path)
    except FileNotFoundError:
        raise
    except _ERRORS as exc:
        raise ValueError(f"{path} is not a token file (an .npz of Tokens.save): {exc}") from None
    wanted = {"meta", "field", "count", "column", "value_offsets", "value_bytes"}
    if "value" in arrays and "value_offsets" not in arrays:
        raise ValueError(
            f"{path} is a token file of an older format: count the tokens again "
            f"(sparseopt train --keep-tokens, or FieldHasher(keep_tokens=True))"
        )
    if set(arrays) != wanted:
        raise ValueError(
            f"{path} is not a token file: it holds {sorted(arrays)}, expected {sorted(wanted)}"
        )
    return arrays


def _token_values(path: Path, arrays: dict):
    """The values of a token file as an Arrow string array, its offsets and UTF-8 checked."""
    offsets, data = arrays["value_offsets"], arrays["value_bytes"]
    if (
        offsets.ndim != 1
        or offsets.dtype.kind not in "iu"
        or data.ndim != 1
        or data.dtype != np.uint8
    ):
        raise ValueError(f"{path}: value_offsets must be 1-D integers, value_bytes 1-D uint8")
    if arrays["field"].ndim != 1:
        raise ValueError(f"{path}: field must be a 1-D array")
    n = arrays["field"].size
    offsets = offsets.astype(np.int64)
    if (
        offsets.size != n + 1
        or offsets[0] != 0
        or offsets[-1] != data.size
        or np.any(np.diff(offsets) < 0)
    ):
        raise ValueError(
            f"{path}: value_offsets must rise from 0 to the {data.size} value bytes, one more "
            f"than the {n} fields"
        )
    try:
        values = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
        values.validate(full=True)  # UTF-8 and offsets
    except (pa.ArrowInvalid, ValueError) as exc:
        raise ValueError(f"{path}: a value is not UTF-8 text ({exc})") from None
    return values


def _check_token_columns(path: Path, tokens: Tokens, values) -> None:
    """Refuse tokens whose fields, counts or columns do not hold, or whose column is not
    the hash of its (field, value) pair."""
    tokens.check(str(path))
    size = slice_size(tokens.n_bits, len(tokens.field_names), tokens.field_aware)
    expected = _token_columns(
        tokens.field.astype(np.int64), values, tokens.n_bits, size, tokens.crosses,
        len(tokens.field_names),
    )  # fmt: skip
    wrong = np.flatnonzero(expected != tokens.column)
    if wrong.size:
        i = wrong[0]
        raise ValueError(
            f"{path}: {wrong.size} columns are not the hash of their (field, value) pair "
            f"(the first: field {tokens.field[i]}, value {tokens.value[i]!r}, column "
            f"{tokens.column[i]}, its hash {expected[i]}): the file was edited"
        )


def _token_meta(path, raw) -> dict:
    """The checked JSON metadata of a token file."""
    try:
        meta = json.loads(raw.tobytes().decode()) if raw.dtype == np.uint8 else None
    except (ValueError, UnicodeError, RecursionError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != TOKENS_FORMAT:
        raise ValueError(f"{path} is not a token file (no sparseopt-tokens metadata)")
    if meta.get("version") != TOKENS_VERSION:
        raise ValueError(f"{path}: token file version {meta.get('version')!r}, expected 2")
    kinds = {
        "field_names": list,
        "n_bits": int,
        "max_tokens": int,
        "field_aware": bool,
        "model_sha256": (str, type(None)),
    }
    for key, kind in kinds.items():
        if key not in meta or not isinstance(meta[key], kind):
            raise ValueError(f"{path}: the token file's {key!r} is missing or of the wrong type")
    if meta["max_tokens"] < 1 or isinstance(meta["n_bits"], bool):
        raise ValueError(f"{path}: the token file's max_tokens or n_bits is out of range")
    if not 1 <= meta["n_bits"] <= 32:
        raise ValueError(f"{path}: the token file's n_bits {meta['n_bits']} is not in [1, 32]")
    if not isinstance(meta.get("crosses", []), list):
        raise ValueError(f"{path}: the token file's 'crosses' must be a list")
    names = meta["field_names"]
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError(f"{path}: the token file's field_names must be distinct names")
    if names and meta["field_aware"]:
        slice_size(meta["n_bits"], len(names), True)
    return meta


def _token_columns(field, values, n_bits, size, crosses=(), n_fields=0) -> np.ndarray:
    """The hashed column of each (field, value) pair (``field`` sorted, ``values`` an Arrow
    large_string array), by the transform's own kernels; a cross's value (its fields' texts
    joined by 0x1F) is hashed as the transform hashes the cross, -1 if it has not as many
    parts as the cross has fields."""
    column = np.empty(len(values), dtype=np.int64)
    bounds = np.flatnonzero(np.r_[True, field[1:] != field[:-1], True]) if field.size else []
    n_inputs = n_fields - len(crosses)
    for start, stop in itertools.pairwise(bounds):
        f = int(field[start])
        part = values.slice(start, stop - start)
        if f < n_inputs or not crosses:
            offsets, data, valid = _string_buffers(part)
            _hash_string_column(offsets, data, valid, f, n_bits, size, column[start:stop],
                                NO_HASHES)  # fmt: skip
            continue
        cross = crosses[f - n_inputs]
        pieces = pc.split_pattern(part, CROSS_VALUE_SEP)
        whole = pc.list_value_length(pieces).to_numpy(zero_copy_only=False) == len(cross)
        hashes = np.zeros((len(cross), len(part)), dtype=np.uint32)
        unused = np.empty(len(part), dtype=np.int64)
        for j, g in enumerate(cross):
            text = pc.list_element(pc.if_else(whole, pieces, pa.scalar([""] * len(cross),
                                   pieces.type)), j)  # fmt: skip
            offsets, data, valid = _string_buffers(text.cast(pa.large_string()))
            _hash_string_column(offsets, data, valid, g, n_bits, size, unused, hashes[j])
        h = np.empty(len(part), dtype=np.uint32)
        _combine_hashes(hashes, f, h)
        cols = _columns_of_hashes(h, f, n_bits, size)
        column[start:stop] = np.where(whole, cols, -1)
    return column


def _columns_of_hashes(h, field, n_bits, size) -> np.ndarray:
    """``to_column`` of 32-bit hashes, vectorized."""
    h = h.astype(np.int64)
    if size > 0:
        return field * size + h % size
    return h & ((1 << n_bits) - 1)


class FieldHasher(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Hash the columns of a table into sparse features, as the file readers do.

    Column ``f`` of the table (0-based, in the order seen by :meth:`fit`) is field ``f``,
    and each value becomes the column ``murmurhash3_32(text, seed=f) mod 2**n_bits`` of the
    (field, value) pair (see :func:`hash_features`), with the readers' conventions:

    - a categorical value is hashed as the text a file holds for it, so that a file and the
      DataFrame ``pandas.read_csv`` makes of it hash alike: a string as its UTF-8 bytes
      (bytes as they are), a boolean as ``True`` or ``False`` (as pandas writes it; a file
      spelling it ``true`` hashes otherwise), a category as its value's text whatever the
      categories' type (integer category 3 as ``"3"``); a null as the empty text, like an
      empty field of a file: whether a field is missing is a feature of its own;
    - a numeric column is, by its kind (``numeric`` and ``column_kinds``):

      * ``"value"``: one column per field (the pair (field, empty text)) holding the
        number, no feature when null (``read_csv(..., numeric=[...])``); an infinite value
        or one beyond ``dtype``'s range is refused;
      * ``"bucket"``: Criteo's count transform, the decimal text of
        :math:`\\lfloor \\ln(x)^2 \\rfloor` for :math:`x > 2` and of the integer part of
        :math:`x` otherwise, a null as the empty text (``read_criteo``'s counts); a count
        of magnitude beyond 9e15 is refused, as ``read_criteo`` refuses it;
      * ``"categorical"``: the value's text (integer 5 as ``"5"``), as ``read_avazu`` and
        ``read_csv`` hash integer-coded columns. A float is written as Arrow writes it:
        an integral one as an integer (``2.0`` as ``"2"``, so an integer column that pandas
        made float for its missing values hashes as in the file), others in their shortest
        form (``1.5``), which may differ from a file's text (``1.50``).

    A column of nulls only (pandas: all None) is numeric at :meth:`fit`, of the kind
    ``numeric`` gives, unless ``column_kinds`` names it; at :meth:`transform` such a column
    is accepted for any kind. Columns are found by name, so X may not repeat a name; a
    mapping of names to single values is one row.

    So ``FieldHasher(numeric="bucket").fit_transform(df)`` on a DataFrame of Criteo's 13
    counts and 26 categoricals gives the columns of ``read_criteo`` on the same rows, and
    ``FieldHasher(numeric="categorical")`` on ``pd.read_csv(path)`` those of
    ``read_csv(path, ...)`` (``column_kinds={name: "value"}`` for its ``numeric`` columns).
    Text that pandas turns into something else does not: values it reads as missing
    (``NA``, ``null``...: pass ``keep_default_na=False, na_values=[""]``), numbers written
    in another form (``007``, ``1.50``, ``1e3``), ``true``/``TRUE``.

    Parameters
    ----------
    n_bits : int, default=20
        The output has ``2**n_bits`` columns (1 to 32; at most 28 with ``field_aware``).
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
    interactions : str or list, default=None
        Feature crosses by column name, as the file readers take them (``"site*app"``,
        ``"a*b*c"``, ``"all"``, ``"site*"``; see
        :func:`~sparseopt.datasets._crosses.parse_interactions`): each cross is a field of
        its own, numbered after the columns, hashed from its values' hashes in the compiled
        pass (no string is built per row); ``keep_tokens`` counts its values too (``"a x b"``
        in :func:`~sparseopt.inspect.top_features`).

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
    crosses_ : tuple of tuples of int
        The crosses, as column indices (field ``n_features_in_ + k`` is cross ``k``).

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
        "interactions": [str, list, tuple, None],
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
        interactions: str | list | None = None,
    ):
        self.n_bits = n_bits
        self.numeric = numeric
        self.column_kinds = column_kinds
        self.field_aware = field_aware
        self.keep_tokens = keep_tokens
        self.max_tokens = max_tokens
        self.dtype = dtype
        self.interactions = interactions

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
            # a column of nulls only (pandas: all None) is numeric unless said otherwise
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
        self._check_lengths(names, arrays, len(arrays[0]))
        crosses = parse_interactions(self.interactions, [str(n) for n in names])
        n_fields = len(names) + len(crosses)
        slice_size(self.n_bits, n_fields, self.field_aware)  # every field must fit
        if self.field_aware and self.n_bits > MAX_FIELD_AWARE_BITS:
            raise ValueError(
                f"field_aware=True needs n_bits <= {MAX_FIELD_AWARE_BITS}, got {self.n_bits}: "
                f"fields_ takes 4 bytes per column (2**{self.n_bits} columns: "
                f"{2 ** (self.n_bits + 2) / 2**30:g} GiB), and a field-aware model n_fields "
                f"factors per column"
            )
        # everything that can fail comes before the first attribute is set: a refused fit
        # leaves a fitted hasher as it was
        tokens = self._count_tokens(arrays, names, kinds, crosses) if self.keep_tokens else None
        self.n_features_in_ = len(names)
        if all(isinstance(n, str) for n in names):
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self._names = names
        self.kinds_ = np.asarray(kinds)
        self._n_features_out = 1 << self.n_bits
        self.crosses_ = crosses
        self.fields_ = column_fields(self.n_bits, n_fields) if self.field_aware else None
        self.tokens_ = tokens
        return self

    def fit_transform(self, X: TableLike, y: None = None) -> sp.csr_matrix:
        """:meth:`fit`, then :meth:`transform` of the same X; if either refuses X, the hasher
        is left as it was before the call.

        Parameters
        ----------
        X : pandas or polars DataFrame, pyarrow Table, mapping of name to array, or 2-D array
        y : ignored

        Returns
        -------
        Xt : scipy.sparse.csr_matrix of shape (n_rows, 2**n_bits)
        """
        before = dict(self.__dict__)
        try:
            return self.fit(X).transform(X)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

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
            new = _count_table(arrays, self._names, self.kinds_, self.max_tokens, self.crosses_)
            old = self.tokens_
            seen = pa.table(
                {
                    "field": pa.array(old.field, pa.int32()),
                    "value": pa.array(old.value, pa.large_string()),
                    "count": pa.array(old.count, pa.int64()),
                }
            )
            merged = _sum_and_cap(pa.concat_tables([seen, new]), self.max_tokens)
            self.tokens_ = self._tokens(merged, self._names, self.crosses_)
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
        crosses = getattr(self, "crosses_", ())
        n_fields = len(arrays) + len(crosses)
        size = slice_size(n_bits, n_fields, self.field_aware)
        n_features = 1 << n_bits
        # row r's columns land in row r of this buffer, which then becomes the CSR indices;
        # the values' buffer becomes the CSR data: the output is all the memory used
        indices = np.empty(n_rows * n_fields, dtype=index_dtype(n_features))
        with_values = "value" in self.kinds_
        data = (np.ones if with_values else np.empty)(n_rows * n_fields, dtype=self.dtype)
        cols, vals = indices.reshape(n_rows, n_fields), data.reshape(n_rows, n_fields)
        longest = max((len(c) for a in arrays for c in self._chunks(a)), default=0)
        out = np.empty(longest, np.int64)
        # the fields' 32-bit hashes, which crosses are hashed from (field-major: contiguous)
        hashes = np.empty((len(arrays), n_rows if crosses else 0), dtype=np.uint32)
        for f, (array, kind) in enumerate(zip(arrays, self.kinds_, strict=True)):
            self._hash_column(array, kind, f, n_bits, size, cols, vals, out, hashes[f])
        if crosses:
            # row-major, as the reader's: a row's hashes side by side, and one compiled
            # add_crosses for both (a transposed view would be a second signature)
            by_row = np.ascontiguousarray(hashes.T)
            add_crosses(by_row, cols, vals, cross_table(crosses), n_rows, n_bits, size,
                        with_values)  # fmt: skip
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
            if found is None or (kind != "categorical" and found == "categorical"):
                raise ValueError(
                    f"column {name!r} has type {array.type} but was hashed as {str(kind)!r} at "
                    f"fit (a column of nulls only at fit is numeric: name its kind in "
                    f"column_kinds)"
                )
            arrays.append(array)
        self._check_lengths(self._names, arrays, len(arrays[0]))
        return arrays

    @staticmethod
    def _chunks(array):
        return array.chunks if isinstance(array, pa.ChunkedArray) else [array]

    def _hash_column(self, array, kind, f, n_bits, size, cols, vals, out, hashes):
        """Write field ``f``'s columns into ``cols[:, f]`` (values into ``vals[:, f]``),
        through ``out``: the kernels write contiguous memory, twice as fast as a column.
        ``hashes`` (empty: not kept) receives the 32-bit hashes, for crosses."""
        name = self._names[f]
        start = 0
        for chunk in self._chunks(array):
            rows = slice(start, start + len(chunk))
            start += len(chunk)
            hashed = out[: len(chunk)]
            kept = hashes[rows] if hashes.size else NO_HASHES
            if kind == "categorical":
                offsets, data, valid = _string_buffers(_text(chunk, name))
                _hash_string_column(offsets, data, valid, f, n_bits, size, hashed, kept)
                cols[rows, f] = hashed
            elif kind == "bucket":
                values, valid = _numbers(chunk)
                if _hash_bucket_column(values, valid, f, n_bits, size, hashed, kept) >= 0:
                    _check_numbers(values, valid, name, kind, self.dtype)  # names the count
                cols[rows, f] = hashed
            else:  # one column, the pair (field, empty text), holds the value
                values, valid = _numbers(chunk)
                _check_numbers(values, valid, name, kind, self.dtype)
                empty_hash = finish_hash(np.uint32(f), np.uint32(0), 0)
                col = to_column(empty_hash, f, n_bits, size)
                cols[rows, f] = np.where(valid, col, 1 << n_bits)
                vals[rows, f] = values
                if hashes.size:
                    kept[:] = empty_hash

    def _count_tokens(self, arrays, names, kinds, crosses) -> Tokens:
        """The ``max_tokens`` most frequent values of each column and cross, counted
        exactly."""
        table = _count_table(arrays, names, kinds, self.max_tokens, crosses)
        return self._tokens(table, names, crosses)

    def _tokens(self, table, names, crosses) -> Tokens:
        """Tokens of a (field, value, count) table sorted by field."""
        field = table["field"].to_numpy().astype(np.int32)
        values = table["value"].combine_chunks()
        field_names = [str(n) for n in names] + [cross_name(c, names) for c in crosses]
        size = slice_size(self.n_bits, len(field_names), self.field_aware)
        return Tokens(
            field_names=field_names,
            field=field,
            value=values.to_numpy(zero_copy_only=False),
            count=table["count"].to_numpy().astype(np.int64),
            column=_token_columns(
                field.astype(np.int64), values, self.n_bits, size, crosses, len(field_names)
            ),  # fmt: skip
            n_bits=int(self.n_bits),
            max_tokens=int(self.max_tokens),
            field_aware=bool(self.field_aware),
            crosses=[list(c) for c in crosses],
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a null or NaN is a missing value, as in the files
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.input_tags.sparse = False
        tags.transformer_tags.preserves_dtype = []
        return tags


def _count_table(arrays, names, kinds, cap, crosses=()) -> pa.Table:
    """(field, value, count) of each column's and each cross's ``cap`` most frequent values,
    in Arrow: the values stay variable-length text, so memory follows their total size. A
    cross's value is its fields' texts joined by 0x1F (rows where a field is absent, a null
    numeric value, have none)."""
    parts = []
    for f, (array, kind, name) in enumerate(zip(arrays, kinds, names, strict=True)):
        if kind == "value":
            n = sum(int(_numbers(chunk)[1].sum()) for chunk in FieldHasher._chunks(array))
            values, counts = pa.array([""], pa.large_string()), pa.array([n], pa.int64())
        else:
            vc = pc.value_counts(_token_keys(array, kind, name))
            values, counts = vc.field("values"), vc.field("counts").cast(pa.int64())
            if kind == "bucket":  # the few distinct buckets become text, a null the empty one
                values = pc.fill_null(values.cast(pa.large_string()), "")
        parts.append(_most_frequent(f, values, counts, cap))
    for k, cross in enumerate(crosses):
        keys = [_cross_keys(arrays[g], kinds[g], names[g]) for g in cross]
        separator = pa.scalar(CROSS_VALUE_SEP, pa.large_string())
        joined = pc.binary_join_element_wise(*keys, separator).drop_null()
        vc = pc.value_counts(joined)
        values, counts = vc.field("values"), vc.field("counts").cast(pa.int64())
        parts.append(_most_frequent(len(arrays) + k, values, counts, cap))
    return pa.concat_tables(parts)


def _most_frequent(field, values, counts, cap) -> pa.Table:
    table = pa.table({"field": pa.array(np.full(len(values), field, np.int32)),
                      "value": values.cast(pa.large_string()), "count": counts})  # fmt: skip
    order = pc.sort_indices(table, [("count", "descending"), ("value", "ascending")])
    return table.take(order[:cap])


def _cross_keys(array, kind, name) -> pa.ChunkedArray:
    """A field's values as a cross's token counts join them: the text each is hashed as,
    null where the field is absent (a null numeric value)."""
    if kind == "value":
        valid = np.concatenate(
            [_numbers(chunk)[1] for chunk in FieldHasher._chunks(array)] or [np.zeros(0, bool)]
        )
        return pa.chunked_array([pa.array(np.full(valid.size, ""), pa.large_string(),
                                          mask=~valid)])  # fmt: skip
    keys = _token_keys(array, kind, name)
    if kind == "bucket":
        keys = pc.fill_null(keys.cast(pa.large_string()), "")
    return keys


def _token_keys(array, kind, name) -> pa.ChunkedArray:
    """What a column's values are counted by: the text each is hashed as (UTF-8; a null as the
    empty text), or for a count its bucket (an integer; a null stays null)."""
    chunks = []
    for chunk in FieldHasher._chunks(array):
        if kind == "bucket":
            values, valid = _numbers(chunk)
            _check_numbers(values, valid, name, kind, np.float64)
            chunks.append(pa.array(_buckets(np.where(valid, values, 0.0)), mask=~valid))
            continue
        try:
            chunks.append(pc.fill_null(_text(chunk, name).cast(pa.large_string()), ""))
        except pa.ArrowInvalid:
            raise ValueError(
                f"column {name!r} holds bytes that are not UTF-8 text, which keep_tokens cannot "
                f"keep as values: decode them (or fit without keep_tokens; they hash as bytes)"
            ) from None
    return pa.chunked_array(chunks, type=pa.int64() if kind == "bucket" else pa.large_string())


def _sum_and_cap(table: pa.Table, cap: int) -> pa.Table:
    """Sum the counts of equal (field, value) pairs (a null and the empty text are both
    ``""``: one value, as they hash alike) and keep each field's ``cap`` most frequent,
    ordered by field, then count (descending), then text (by its bytes)."""
    table = table.set_column(1, "value", pc.fill_null(table["value"], ""))
    summed = table.group_by(["field", "value"]).aggregate([("count", "sum")])
    summed = summed.rename_columns({"count_sum": "count"}).select(["field", "value", "count"])
    summed = summed.sort_by([("field", "ascending"), ("count", "descending"),
                             ("value", "ascending")])  # fmt: skip
    field = summed["field"].to_numpy()
    rank = np.arange(field.size) - np.searchsorted(field, field)
    return summed.filter(pa.array(rank < cap))
