"""Feature hashing: MurmurHash3 (x86, 32-bit) of (field, value) pairs, compiled with Numba.

The hash is fixed and platform independent so that a model trained on one machine reads
another machine's files:

* a value is hashed as the bytes of its text (UTF-8, exactly as written in the file; integers
  produced by the library itself, such as Criteo's count buckets or ``make_ctr``'s value ids,
  as their decimal representation, e.g. ``b"-1"``, ``b"42"``);
* a missing value (an empty field in a file, a null) is hashed as the empty text, so that
  whether a field is missing is a feature of its own (informative in click logs: Criteo's
  empty counts); only a numeric column's empty value gives no feature;
* the seed is the 0-based index of the field (column) the value belongs to, so the same text
  in two fields gives two unrelated columns;
* the 32-bit hash ``h`` (unsigned) becomes a column index:

  - ``field_aware=False``: ``h mod 2**n_bits`` (all fields share the whole space);
  - ``field_aware=True``: field ``f`` owns the contiguous slice of ``s = 2**n_bits // n_fields``
    columns starting at ``f * s`` and the column is ``f * s + (h mod s)``, so the field of any
    column is ``j // s`` (see :func:`column_fields`), which field-aware factorization machines
    need. The last ``2**n_bits - n_fields * s`` columns are never used.

``h`` equals ``sklearn.utils.murmurhash3_32(value_bytes, seed=field, positive=True)``.
"""

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from .._jit import JIT


# MurmurHash3 x86_32 in uint32 arithmetic (the products wrap as in C). The helpers take and
# return scalars only: a compiled call that receives an array costs two atomic reference count
# updates, as much as hashing a short value, so the parser hashes fields in its own loop with
# these (see ``parse_delimited``) and never passes its buffer to a call per field.
@numba.njit(**JIT)
def _mix_k(k):
    k = np.uint32(k * np.uint32(0xCC9E2D51))
    k = np.uint32((k << np.uint32(15)) | (k >> np.uint32(17)))
    return np.uint32(k * np.uint32(0x1B873593))


@numba.njit(**JIT)
def mix_block(h, k):
    """The hash state ``h`` after the 4-byte little-endian block ``k`` (both uint32)."""
    h = np.uint32(h ^ _mix_k(k))
    h = np.uint32((h << np.uint32(13)) | (h >> np.uint32(19)))
    return np.uint32(h * np.uint32(5) + np.uint32(0xE6546B64))


@numba.njit(**JIT)
def finish_hash(h, tail, n):
    """The hash of ``n`` bytes from the state ``h`` after their whole blocks and ``tail``,
    the last ``n % 4`` bytes as a little-endian uint32."""
    if n & 3:
        h = np.uint32(h ^ _mix_k(tail))
    h = np.uint32(h ^ np.uint32(n & 0xFFFFFFFF))
    h = np.uint32(h ^ (h >> np.uint32(16)))
    h = np.uint32(h * np.uint32(0x85EBCA6B))
    h = np.uint32(h ^ (h >> np.uint32(13)))
    h = np.uint32(h * np.uint32(0xC2B2AE35))
    return np.uint32(h ^ (h >> np.uint32(16)))


@numba.njit(**JIT)
def load_block(buf, p):
    """``buf[p:p + 4]`` as a little-endian uint32 (``p`` unsigned: no negative-index check,
    so the compiler reads the four bytes at once)."""
    return (
        np.uint32(buf[p])
        | (np.uint32(buf[p + np.uint64(1)]) << np.uint32(8))
        | (np.uint32(buf[p + np.uint64(2)]) << np.uint32(16))
        | (np.uint32(buf[p + np.uint64(3)]) << np.uint32(24))
    )


@numba.njit(**JIT)
def murmurhash3_32(buf, start, end, seed):
    """MurmurHash3 x86_32 of ``buf[start:end]`` (uint8) with an unsigned 32-bit ``seed``."""
    h = np.uint32(seed)
    p = np.uint64(start)
    stop = np.uint64(end)
    while p + np.uint64(4) <= stop:
        h = mix_block(h, load_block(buf, p))
        p += np.uint64(4)
    tail = np.uint32(0)
    shift = np.uint32(0)
    while p < stop:
        tail |= np.uint32(buf[p]) << shift
        shift += np.uint32(8)
        p += np.uint64(1)
    return finish_hash(h, tail, end - start)


@numba.njit(**JIT)
def _write_decimal(value, scratch):
    """Write the decimal text of int ``value`` at the start of ``scratch``; return its length."""
    v = np.int64(value)
    neg = v < 0
    if neg:
        v = -v
    n = 0
    while True:
        scratch[n] = np.uint8(48 + v % 10)
        v //= 10
        n += 1
        if v == 0:
            break
    if neg:
        scratch[n] = np.uint8(45)
        n += 1
    for i in range(n // 2):
        t = scratch[i]
        scratch[i] = scratch[n - 1 - i]
        scratch[n - 1 - i] = t
    return n


@numba.njit(**JIT)
def hash_int(value, seed, scratch):
    """Hash of the decimal text of an integer (``scratch``: a uint8 array of length >= 24)."""
    n = _write_decimal(value, scratch)
    return murmurhash3_32(scratch, 0, n, seed)


@numba.njit(**JIT)
def to_column(h, field, n_bits, slice_size):
    """Column of hash ``h`` of a value in ``field`` (``slice_size`` 0: not field-aware)."""
    if slice_size > 0:
        return np.int64(field) * slice_size + np.int64(h % np.uint64(slice_size))
    return np.int64(h & ((np.uint64(1) << np.uint64(n_bits)) - np.uint64(1)))


@numba.njit(**JIT)
def finish_row(indices, data, start, end):
    """Sort ``indices[start:end]`` (with ``data``) and sum duplicates; return the new end.

    Rows hold tens of entries, so insertion sort beats any call into a general sort.
    """
    for i in range(start + 1, end):
        key = indices[i]
        val = data[i]
        j = i - 1
        while j >= start and indices[j] > key:
            indices[j + 1] = indices[j]
            data[j + 1] = data[j]
            j -= 1
        indices[j + 1] = key
        data[j + 1] = val
    if end - start < 2:
        return end
    out = start
    for i in range(start + 1, end):
        if indices[i] == indices[out]:
            data[out] += data[i]
        else:
            out += 1
            indices[out] = indices[i]
            data[out] = data[i]
    return out + 1


@numba.njit(**JIT)
def _hash_string_column(offsets, data, valid, field, n_bits, slice_size, out_cols, out_hashes):
    """Columns of one Arrow string column (a null is hashed as the empty text), and when
    ``out_hashes`` is not empty the 32-bit hashes too (for crosses)."""
    keep_hashes = out_hashes.shape[0] > 0
    for i in range(out_cols.shape[0]):
        s = offsets[i]
        e = offsets[i + 1] if valid[i] else s
        h = murmurhash3_32(data, s, e, np.uint32(field))
        out_cols[i] = to_column(h, field, n_bits, slice_size)
        if keep_hashes:
            out_hashes[i] = h


@numba.njit(**JIT)
def pack_rows(cols, vals, absent, indptr, indices, data):
    """Pack rows of unsorted columns and values (``absent``: none) into canonical CSR."""
    nnz = 0
    indptr[0] = 0
    for r in range(cols.shape[0]):
        start = nnz
        for f in range(cols.shape[1]):
            if cols[r, f] != absent:
                indices[nnz] = cols[r, f]
                data[nnz] = vals[r, f]
                nnz += 1
        nnz = finish_row(indices, data, start, nnz)
        indptr[r + 1] = nnz
    return nnz


@numba.njit(**JIT)
def _pack_sorted_rows(cols, absent, indptr, indices, data):
    """Pack rows of sorted columns (``absent`` last) into CSR, summing duplicates."""
    nnz = 0
    indptr[0] = 0
    for r in range(cols.shape[0]):
        prev = -1
        for f in range(cols.shape[1]):
            c = cols[r, f]
            if c == absent:
                break
            if c == prev:
                data[nnz - 1] += 1
            else:
                indices[nnz] = c
                data[nnz] = 1
                nnz += 1
                prev = c
        indptr[r + 1] = nnz
    return nnz


# the kernels' ``out_hashes`` when no hash is kept
NO_HASHES = np.empty(0, dtype=np.uint32)


def check_n_bits(n_bits):
    """Validate ``n_bits`` and return it as an int."""
    if isinstance(n_bits, bool) or not isinstance(n_bits, int | np.integer):
        raise TypeError(f"n_bits must be an integer, got {n_bits!r}")
    if not 1 <= n_bits <= 32:
        raise ValueError(f"n_bits must be in [1, 32] (the hash has 32 bits), got {n_bits}")
    return int(n_bits)


def slice_size(n_bits, n_fields, field_aware):
    """Columns per field when ``field_aware`` (0 otherwise); checks that every field fits."""
    if not field_aware:
        return 0
    size = (1 << n_bits) // n_fields
    if size < 1:
        raise ValueError(
            f"field_aware=True needs at least one column per field: 2**{n_bits} < {n_fields} fields"
        )
    return size


def index_dtype(n_features):
    """int32 when every column index and the shape fit (as scipy requires), else int64."""
    return np.int32 if n_features <= np.iinfo(np.int32).max else np.int64


def column_fields(n_bits, n_fields):
    """Field of every column under the ``field_aware=True`` layout.

    Parameters
    ----------
    n_bits : int
        The hashing space has ``2**n_bits`` columns.
    n_fields : int
        Number of fields.

    Returns
    -------
    fields : ndarray of int32, shape (2**n_bits,)
        ``fields[j] = j // (2**n_bits // n_fields)``, and -1 for the unused last columns.

    Examples
    --------
    >>> from sparseopt.datasets import column_fields
    >>> column_fields(3, 3)
    array([ 0,  0,  1,  1,  2,  2, -1, -1], dtype=int32)
    """
    n_bits = check_n_bits(n_bits)
    size = slice_size(n_bits, n_fields, True)
    fields = np.arange(1 << n_bits, dtype=np.int64) // size
    fields[fields >= n_fields] = -1
    return fields.astype(np.int32)


def _as_string_array(column, name):
    """One column as a pyarrow (large_)string array; numbers are cast to their text."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not isinstance(column, pa.Array):
        values = np.asarray(column, dtype=object) if not hasattr(column, "dtype") else column
        try:
            column = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise TypeError(f"column {name!r} is not convertible to Arrow: {exc}") from exc
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_boolean(column.type):  # as a file (and pandas) writes it, as FieldHasher
        return pc.if_else(column, "True", "False")
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            return column
        try:
            column = pc.cast(column, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise TypeError(f"column {name!r} of type {column.type} cannot be hashed") from exc
    return column


def _string_buffers(column):
    """(offsets int64, data uint8, valid bool) of an Arrow string or binary array, zero-copy."""
    large = pa.types.is_large_string(column.type) or pa.types.is_large_binary(column.type)
    bufs = column.buffers()
    n = len(column)
    off_type = np.int64 if large else np.int32
    offsets = np.frombuffer(bufs[1], dtype=off_type, count=column.offset + n + 1)[column.offset :]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    if column.null_count:
        valid = column.is_valid().to_numpy(zero_copy_only=False)
    else:
        valid = np.ones(n, dtype=np.bool_)
    return offsets.astype(np.int64, copy=False), data, valid


def hash_features(columns, n_bits=20, field_aware=False, dtype=np.float32):
    """Hash categorical columns into a CSR matrix with one nonzero per value.

    Column ``f`` (0-based, in the given order) is field ``f``: each value is hashed as the
    (field, value) pair with MurmurHash3 x86_32 of the value's UTF-8 bytes, seeded by ``f``
    (see the module notes for the column layout). A null is hashed as the empty text, as
    the readers hash an empty field. Strings are hashed straight from Arrow's offsets and data
    buffers by a compiled kernel, with no Python loop over rows.

    Parameters
    ----------
    columns : mapping of name to array-like, pyarrow.Table, or sequence of array-likes
        The categorical columns, all of the same length: pyarrow arrays, pandas Series,
        NumPy arrays or lists. Non-string columns are cast to their text (integer 5 is
        hashed as ``"5"``, a boolean as ``"True"`` or ``"False"``).
    n_bits : int, default=20
        The output has ``2**n_bits`` columns (1 to 32).
    field_aware : bool, default=False
        Give each field its own contiguous slice of columns (see :func:`column_fields`).
    dtype : numpy dtype, default=np.float32
        Dtype of the values (all 1, or 2 where two fields of a row collide).

    Returns
    -------
    X : scipy.sparse.csr_matrix of shape (n_rows, 2**n_bits)
        Canonical (sorted indices, no duplicates); int32 indices when ``n_bits <= 30``.

    Examples
    --------
    >>> from sparseopt.datasets import hash_features
    >>> X = hash_features({"site": ["a", "b", None], "app": ["x", "", "x"]}, n_bits=10)
    >>> X.shape, X.nnz
    ((3, 1024), 6)
    """
    n_bits = check_n_bits(n_bits)
    if isinstance(columns, pa.Table):
        items = list(zip(columns.column_names, columns.columns, strict=True))
    elif hasattr(columns, "items"):
        items = list(columns.items())
    else:
        items = [(i, c) for i, c in enumerate(columns)]
    if not items:
        raise ValueError("hash_features needs at least one column")
    arrays = [_as_string_array(col, name) for name, col in items]
    n_rows = len(arrays[0])
    for (name, _), arr in zip(items, arrays, strict=True):
        if len(arr) != n_rows:
            raise ValueError(f"column {name!r} has {len(arr)} rows, expected {n_rows}")
    n_fields = len(arrays)
    size = slice_size(n_bits, n_fields, field_aware)
    n_features = 1 << n_bits
    cols = np.empty((n_rows, n_fields), dtype=index_dtype(n_features))
    out = np.empty(n_rows, dtype=np.int64)
    for f, arr in enumerate(arrays):
        offsets, data, valid = _string_buffers(arr)
        _hash_string_column(offsets, data, valid, f, n_bits, size, out, NO_HASHES)
        cols[:, f] = out
    return csr_from_columns(cols, n_features, dtype=dtype)


def csr_from_columns(cols, n_features, dtype=np.float32):
    """Canonical CSR (all values 1, summed on collisions) from an (n_rows, n_fields) array of
    column indices in which ``n_features`` marks an absent value. Sorts ``cols`` in place.

    Rows are sorted by NumPy's vectorized sort, then packed by a compiled pass: 3x faster than
    sorting inside the packing loop (the branches of a small-array sort mispredict).
    """
    cols.sort(axis=1)
    n_rows = cols.shape[0]
    indptr = np.empty(n_rows + 1, dtype=np.int64)
    indices = np.empty(cols.size, dtype=index_dtype(n_features))
    data = np.empty(cols.size, dtype=dtype)
    nnz = _pack_sorted_rows(cols, cols.dtype.type(n_features), indptr, indices, data)
    indices.resize(nnz, refcheck=False)  # shrinks in place: no copy of tens of millions
    data.resize(nnz, refcheck=False)
    return make_csr(indptr, indices, data, (n_rows, n_features))


def make_csr(indptr, indices, data, shape):
    """A canonical csr_matrix from arrays already sorted and deduplicated per row."""
    if indptr[-1] <= np.iinfo(np.int32).max and indices.dtype == np.int32:
        indptr = indptr.astype(np.int32)
    X = sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)
    X.has_sorted_indices = True
    X.has_canonical_format = True
    return X
