"""Compiled parsers: one call turns a block of whole text lines into feature tables or CSR.

The parsers run over the raw bytes of a block, so each line costs no Python work. Every
malformed line is either reported (its index in the block, an error code and the byte range
of the offending field, so the caller can name the file, line and text) or skipped and
listed, when ``skip_bad`` is set.
"""

import numba
import numpy as np

from .._jit import JIT
from ._hashing import finish_hash, finish_row, hash_int, load_block, mix_block, to_column

# error codes, explained to the user by the readers
WRONG_FIELD_COUNT = 1
BAD_LABEL = 2
BAD_COUNT = 3
BAD_NUMBER = 4
BAD_ENCODING = 5
BAD_TOKEN = 6
BAD_INDEX = 7
BAD_WEIGHT = 8

# column kinds of the delimited parser
SKIP = 0
LABEL = 1
CATEGORICAL = 2
COUNT = 3
NUMERIC = 4
WEIGHT = 5

_NL = 10
_CR = 13
_QUOTE = 34

# count buckets floor(ln(x)**2) of the counts parse_number accepts (|x| <= 9e15) are below this
_N_BUCKETS = 1350


@numba.njit(**JIT)
def parse_number(buf, s, e):
    """Parse ``[+-]digits[.digits][(e|E)[+-]digits]`` in ``buf[s:e]``; return (ok, value)."""
    i = s
    neg = False
    if i < e and (buf[i] == 43 or buf[i] == 45):
        neg = buf[i] == 45
        i += 1
    mant = np.int64(0)
    exp10 = 0
    n_digits = 0
    while i < e and 48 <= buf[i] <= 57:
        if mant < 100_000_000_000_000_000:
            mant = mant * 10 + (buf[i] - 48)
        else:
            exp10 += 1
        n_digits += 1
        i += 1
    if i < e and buf[i] == 46:
        i += 1
        while i < e and 48 <= buf[i] <= 57:
            if mant < 100_000_000_000_000_000:
                mant = mant * 10 + (buf[i] - 48)
                exp10 -= 1
            n_digits += 1
            i += 1
    if n_digits == 0:
        return False, 0.0
    if i < e and (buf[i] == 101 or buf[i] == 69):
        i += 1
        eneg = False
        if i < e and (buf[i] == 43 or buf[i] == 45):
            eneg = buf[i] == 45
            i += 1
        ev = 0
        n_exp = 0
        while i < e and 48 <= buf[i] <= 57:
            if ev < 10_000:
                ev = ev * 10 + (buf[i] - 48)
            n_exp += 1
            i += 1
        if n_exp == 0:
            return False, 0.0
        exp10 += -ev if eneg else ev
    if i != e:
        return False, 0.0
    value = float(mant)
    if exp10 > 0:
        value *= 10.0**exp10
    elif exp10 < 0:
        value /= 10.0**-exp10
    return True, -value if neg else value


@numba.njit(**JIT)
def unquote(buf, s, e):
    """``(s, e)`` without the enclosing double quotes of a quoted value ``"..."``."""
    if e - s >= 2 and buf[s] == _QUOTE and buf[e - 1] == _QUOTE:
        return s + 1, e - 1
    return s, e


@numba.njit(**JIT)
def hash_unquoted(buf, s, e, seed):
    """MurmurHash3 x86_32 of the text of a quoted value's inside ``buf[s:e]``, in which a
    doubled quote ``""`` stands for one quote (RFC 4180, as pandas and Arrow read it)."""
    h = np.uint32(seed)
    block = np.uint32(0)
    k = 0
    n = 0
    i = s
    while i < e:
        b = buf[i]
        if b == _QUOTE and i + 1 < e and buf[i + 1] == _QUOTE:
            i += 1
        block |= np.uint32(b) << np.uint32(8 * k)
        k += 1
        n += 1
        i += 1
        if k == 4:
            h = mix_block(h, block)
            block = np.uint32(0)
            k = 0
    return finish_hash(h, block, n)


@numba.njit(**JIT)
def _valid_utf8(buf, s, e):
    i = s
    while i < e:
        b = buf[i]
        if b < 0x80:
            i += 1
            continue
        if 0xC2 <= b <= 0xDF:
            n = 1
        elif 0xE0 <= b <= 0xEF:
            n = 2
        elif 0xF0 <= b <= 0xF4:
            n = 3
        else:
            return False
        if i + n >= e:
            return False
        for j in range(1, n + 1):
            if buf[i + j] & 0xC0 != 0x80:
                return False
        i += n + 1
    return True


@numba.njit(**JIT)
def count_bucket(x):
    """Criteo's count transform: ``floor(ln(x)**2)`` for ``x > 2``, else ``x`` itself."""
    if x > 2:
        return np.int64(np.floor(np.log(x) ** 2))
    return np.int64(x)


@numba.njit(**JIT)
def count_lines(buf):
    """Number of newline bytes in ``buf`` (a vectorized loop: 10x NumPy's ``buf == 10``)."""
    n = 0
    for i in range(buf.shape[0]):
        n += buf[i] == _NL
    return n


@numba.njit(**JIT)
def _line_end(buf, pos):
    end = pos
    n = buf.shape[0]
    while end < n and buf[end] != _NL:
        end += 1
    return end


@numba.njit(**JIT)
def _has_byte(block, pattern):
    """Whether a byte of the uint32 ``block`` equals that of ``pattern`` (one byte, 4 times)."""
    x = np.uint32(block ^ pattern)
    return np.uint32((x - np.uint32(0x01010101)) & ~x & np.uint32(0x80808080)) != 0


@numba.njit(**JIT)
def _newline_at(buf, p):
    """Offset of the first newline in ``buf[p:p + 8]``, 8 if none (``p`` unsigned: one
    8-byte read, no loop over its bytes).

    ``(x - 0x01..01) & ~x & 0x80..80``, x the word XOR newlines, sets the top bit of every
    zero byte of x (and of none below the first: a borrow only runs upwards); the lowest set
    bit, ``2^(8k + 7)``, gives k: ``2^(8k)`` times ``0x0001020304050607`` has k in its top
    byte.
    """
    x = np.uint64(0)
    for i in range(8):
        x |= np.uint64(buf[p + np.uint64(i)]) << np.uint64(8 * i)
    x ^= np.uint64(0x0A0A0A0A0A0A0A0A)
    found = (x - np.uint64(0x0101010101010101)) & ~x & np.uint64(0x8080808080808080)
    if found == np.uint64(0):
        return 8
    lowest = found & (~found + np.uint64(1))
    return np.int64(((lowest >> np.uint64(7)) * np.uint64(0x0001020304050607)) >> np.uint64(56))


@numba.njit(**JIT)
def parse_delimited(buf, columns, hashing, checks, table, errors, sampling):
    """Parse delimited lines into a table of hashed columns.

    The bundles: ``columns = (sep, kinds, slots)`` (the separator byte and how each column is
    read), ``hashing = (n_bits, slice_size)``, ``checks = (binary_label, skip_bad)``, the
    outputs ``table = (cols, vals, y, w, hashes)`` and ``errors = (bad, err)``.

    Column ``c`` of a line is handled by ``kinds[c]`` (SKIP, LABEL, CATEGORICAL, COUNT,
    NUMERIC or WEIGHT) and, for features, stored in slot ``slots[c]`` of the row, the slot
    being the field index and the hash seed. ``cols[r, slot]`` receives the hashed column (or
    ``2**n_bits`` for an empty numeric value: an empty categorical or count is hashed as the
    empty text) and ``vals[r, slot]`` the value. When ``hashes`` has rows, ``hashes[r, slot]``
    receives the field's 32-bit hash too (for crosses, :mod:`._crosses`). A WEIGHT column's
    number goes to ``w[r]``; it must be finite and >= 0. A value in double quotes is read
    without them (``"a""b"`` is ``a"b``, as pandas and Arrow read it; the separator may not
    occur inside it). Blank lines are ignored.

    Negative downsampling: ``sampling`` = (rate, seed, label column, number of the block's
    first line in the file), floats. With rate < 1 a line whose label is 0 is kept with
    probability rate, by a hash of (seed, line number), so the same lines are kept whatever
    the block size; a dropped line is skipped right after its label is read, before any
    field is hashed or checked.

    Returns ``(n_rows, n_bad, n_dropped)``; ``bad`` receives the block's line index of each
    malformed line, and the first one when not ``skip_bad`` is described in ``err`` = (line
    index in block, code, 1-based column, detail, start, end).

    Speed (this loop is most of the time from text to model): line ends are found eight
    bytes at a time; a categorical's bytes are read once, four at a time, to find its end and
    hash it together; a count's column is looked up by (slot, bucket) once computed; UTF-8 is
    checked per field only when the block has a non-ASCII byte; the buffer goes to no call per
    field (see ``_hashing``).
    """
    sep, kinds, slots = columns
    n_bits, slice_size = hashing
    binary_label, skip_bad = checks
    cols, vals, y, w, hashes = table
    bad, err = errors
    n_cols = kinds.shape[0]
    absent = cols.dtype.type(np.int64(1) << n_bits)
    scratch = np.empty(24, dtype=np.uint8)
    keep_hashes = hashes.shape[0] > 0
    n_slots = hashes.shape[1] if keep_hashes else cols.shape[1]
    count_cols = np.full((n_slots, _N_BUCKETS), -1, dtype=np.int64)
    count_hashes = np.zeros((n_slots, _N_BUCKETS), dtype=np.uint32)
    rate = sampling[0]
    seed = np.uint64(sampling[1])
    label_col = np.int64(sampling[2])
    first_line = np.int64(sampling[3])
    small_buckets = np.empty(_N_BUCKETS, dtype=np.int64)  # most counts are small: no log
    for x in range(_N_BUCKETS):
        small_buckets[x] = count_bucket(float(x))
    seps = np.uint32(sep * 0x01010101)
    n = buf.shape[0]
    high = np.uint8(0)
    for i in range(n):
        high |= buf[i]
    ascii_only = high < 128
    pos = 0
    line = 0
    row = 0
    n_bad = 0
    n_dropped = 0
    while pos < n:
        end = pos
        while end + 8 <= n:
            k = _newline_at(buf, np.uint64(end))
            end += k
            if k < 8:
                break
        else:
            while end < n and buf[end] != _NL:
                end += 1
        stop = end
        if stop > pos and buf[stop - 1] == _CR:
            stop -= 1
        if stop > pos and rate < 1.0 and _is_negative(buf, pos, stop, sep, label_col):
            if _uniform(seed, first_line + line) >= rate:
                n_dropped += 1
                stop = pos  # skipped: nothing of the line is hashed
        if stop > pos:
            code = 0
            for k in range(cols.shape[1]):
                cols[row, k] = absent
                vals[row, k] = 1.0
            c = 0
            s = pos
            while True:
                checked = code == 0 and c < n_cols
                kind = kinds[c] if checked else SKIP
                if kind == CATEGORICAL:
                    # find the end while hashing the whole 4-byte blocks before it
                    f = slots[c]
                    h = np.uint32(f)
                    p = np.uint64(s)
                    last = np.uint64(stop)
                    while p + np.uint64(4) <= last:
                        block = load_block(buf, p)
                        if _has_byte(block, seps):
                            break
                        h = mix_block(h, block)
                        p += np.uint64(4)
                    tail = np.uint32(0)
                    shift = np.uint32(0)
                    while p < last and buf[p] != sep:
                        tail |= np.uint32(buf[p]) << shift
                        shift += np.uint32(8)
                        p += np.uint64(1)
                    e = np.int64(p)
                    if e > s and not ascii_only and not _valid_utf8(buf, s, e):
                        code = BAD_ENCODING
                    else:  # an empty value is hashed too: the empty text
                        if e - s >= 2 and buf[s] == _QUOTE and buf[e - 1] == _QUOTE:
                            h = hash_unquoted(buf, s + 1, e - 1, np.uint32(f))
                        else:
                            h = finish_hash(h, tail, e - s)
                        cols[row, f] = to_column(h, f, n_bits, slice_size)
                        if keep_hashes:
                            hashes[row, f] = h
                elif kind == COUNT:
                    # plain digits (nearly every count) need no float parsing
                    e = s
                    x = np.int64(0)
                    digits = True
                    while e < stop and buf[e] != sep:
                        d = np.int64(buf[e]) - 48
                        if 0 <= d <= 9:
                            x = x * 10 + d
                        else:
                            digits = False
                        e += 1
                    if e > s:
                        if digits and e - s <= 15:
                            v = float(x)
                            b = small_buckets[x] if x < _N_BUCKETS else count_bucket(v)
                        else:
                            qs, qe = unquote(buf, s, e)
                            ok, v = parse_number(buf, qs, qe)
                            if not ok or v != np.floor(v) or abs(v) > 9e15:
                                code = BAD_COUNT
                            b = count_bucket(v)
                        if code == 0:
                            f = slots[c]
                            col = count_cols[f, b] if 0 <= b < _N_BUCKETS else -1
                            if col >= 0:
                                h = count_hashes[f, b]
                            else:
                                h = hash_int(b, np.uint32(f), scratch)
                                col = to_column(h, f, n_bits, slice_size)
                                if 0 <= b < _N_BUCKETS:
                                    count_cols[f, b] = col
                                    count_hashes[f, b] = h
                            cols[row, f] = col
                            if keep_hashes:
                                hashes[row, f] = h
                    else:  # an empty count is hashed as the empty text
                        f = slots[c]
                        h = finish_hash(np.uint32(f), np.uint32(0), 0)
                        cols[row, f] = to_column(h, f, n_bits, slice_size)
                        if keep_hashes:
                            hashes[row, f] = h
                else:
                    e = s
                    while e < stop and buf[e] != sep:
                        e += 1
                    if kind == LABEL:
                        if e == s + 1 and (buf[s] == 48 or buf[s] == 49):
                            y[row] = buf[s] - 48
                        else:
                            qs, qe = unquote(buf, s, e)
                            ok, v = parse_number(buf, qs, qe)
                            if not ok or (binary_label and v != 0.0 and v != 1.0):
                                code = BAD_LABEL
                            else:
                                y[row] = v
                    elif e > s and kind == NUMERIC:
                        qs, qe = unquote(buf, s, e)
                        ok, v = parse_number(buf, qs, qe)
                        if not ok:
                            code = BAD_NUMBER
                        else:
                            f = slots[c]
                            h = finish_hash(np.uint32(f), np.uint32(0), 0)  # the empty text
                            cols[row, f] = to_column(h, f, n_bits, slice_size)
                            vals[row, f] = v
                            if keep_hashes:
                                hashes[row, f] = h
                    elif kind == WEIGHT:
                        qs, qe = unquote(buf, s, e)
                        ok, v = parse_number(buf, qs, qe)
                        if not ok or not (0.0 <= v < np.inf):
                            code = BAD_WEIGHT
                        else:
                            w[row] = v
                if checked and code != 0:
                    err[2] = c + 1
                    err[4] = s
                    err[5] = e
                c += 1
                if e >= stop:
                    break
                s = e + 1
            if code == 0 and c != n_cols:
                code = WRONG_FIELD_COUNT
                err[3] = c
            if code == 0:
                row += 1
            else:
                bad[n_bad] = line
                n_bad += 1
                if not skip_bad:
                    err[0] = line
                    err[1] = code
                    return row, n_bad, n_dropped
        line += 1
        pos = end + 1
    return row, n_bad, n_dropped


@numba.njit(**JIT)
def _is_negative(buf, pos, stop, sep, label_col):
    """Whether the label (column ``label_col``) of the line ``buf[pos:stop]`` reads 0."""
    c = 0
    s = pos
    while c < label_col:
        while s < stop and buf[s] != sep:
            s += 1
        if s >= stop:
            return False  # too few fields: the parser reports the line
        s += 1
        c += 1
    e = s
    while e < stop and buf[e] != sep:
        e += 1
    if e == s + 1:
        return buf[s] == 48
    qs, qe = unquote(buf, s, e)
    ok, v = parse_number(buf, qs, qe)
    return ok and v == 0.0


@numba.njit(**JIT)
def _uniform(seed, line):
    """A uniform number in [0, 1) from (seed, line number): SplitMix64's output function."""
    z = np.uint64(seed + np.uint64(line) * np.uint64(0x9E3779B97F4A7C15))
    z = np.uint64((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9))
    z = np.uint64((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB))
    z = np.uint64(z ^ (z >> np.uint64(31)))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(**JIT)
def _skip_blanks(buf, i, stop):
    while i < stop and (buf[i] == 32 or buf[i] == 9):
        i += 1
    return i


@numba.njit(**JIT)
def parse_libsvm(buf, indexing, checks, csr, errors, minmax):
    """Parse LIBSVM lines ``label [qid:q] index:value ... [# comment]`` into CSR arrays.

    ``indexing = (offset, n_features)``: ``offset`` (0 or 1) is subtracted from each index;
    ``n_features < 0`` means unbounded. ``checks = (binary, skip_bad)``: with ``binary`` the
    label must be -1, 0 or 1 (stored as 0, 0, 1). The rows go to ``csr = (indptr, indices,
    data, y)``, the malformed lines to ``errors = (bad, err)`` as for
    :func:`parse_delimited`, and ``minmax`` receives the smallest and largest raw index
    seen. Returns ``(n_rows, nnz, n_bad)``.
    """
    offset, n_features = indexing
    binary, skip_bad = checks
    indptr, indices, data, y = csr
    bad, err = errors
    n = buf.shape[0]
    pos = 0
    line = 0
    row = 0
    nnz = 0
    n_bad = 0
    indptr[0] = 0
    while pos < n:
        end = _line_end(buf, pos)
        stop = end
        if stop > pos and buf[stop - 1] == _CR:
            stop -= 1
        for i in range(pos, stop):
            if buf[i] == 35:  # '#': comment to the end of the line
                stop = i
                break
        i = _skip_blanks(buf, pos, stop)
        if i < stop:
            code = 0
            start = nnz
            e = i
            while e < stop and buf[e] != 32 and buf[e] != 9:
                e += 1
            ok, v = parse_number(buf, i, e)
            if not ok or (binary and v != -1.0 and v != 0.0 and v != 1.0):
                code = BAD_LABEL
                err[4] = i
                err[5] = e
            else:
                y[row] = (v > 0) if binary else v
            i = _skip_blanks(buf, e, stop)
            while code == 0 and i < stop:
                e = i
                colon = -1
                while e < stop and buf[e] != 32 and buf[e] != 9:
                    if buf[e] == 58 and colon < 0:
                        colon = e
                    e += 1
                err[4] = i
                err[5] = e
                if colon - i == 3 and buf[i] == 113 and buf[i + 1] == 105 and buf[i + 2] == 100:
                    pass  # qid:q, the query id of ranking files: ignored
                elif colon <= i:
                    code = BAD_TOKEN
                else:
                    idx = np.int64(0)
                    for j in range(i, colon):
                        d = buf[j] - 48
                        if d < 0 or d > 9 or idx > 1_000_000_000_000_000:
                            code = BAD_TOKEN
                            break
                        idx = idx * 10 + d
                    ok, v = parse_number(buf, colon + 1, e)
                    if code == 0 and not ok:
                        code = BAD_TOKEN
                    if code == 0:
                        if idx < minmax[0]:
                            minmax[0] = idx
                        if idx > minmax[1]:
                            minmax[1] = idx
                        col = idx - offset
                        if col < 0 or (n_features >= 0 and col >= n_features):
                            code = BAD_INDEX
                            err[3] = idx
                        else:
                            indices[nnz] = col
                            data[nnz] = v
                            nnz += 1
                i = _skip_blanks(buf, e, stop)
            if code == 0:
                nnz = finish_row(indices, data, start, nnz)
                row += 1
                indptr[row] = nnz
            else:
                nnz = start
                bad[n_bad] = line
                n_bad += 1
                if not skip_bad:
                    err[0] = line
                    err[1] = code
                    return row, nnz, n_bad
        line += 1
        pos = end + 1
    return row, nnz, n_bad
