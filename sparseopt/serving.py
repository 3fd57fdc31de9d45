"""Score exported models in plain NumPy: no Numba, no scikit-learn, no compiler.

What a batch job or a service without sparseopt's compiled kernels uses, and the reference
that the export's parity tests hold ONNX Runtime and the estimators to. It reads what
:func:`sparseopt.export.export` writes with ``format="json"`` (a JSON file, and an ``.npz``
beside it for large tables) and the hashing spec of :func:`sparseopt.export.hashing_spec`,
and turns raw text rows into scores by the spec's rules, implemented here from the spec's
own words (see ``docs`` of the JSON) rather than by calling the readers.

Examples
--------
>>> from sparseopt import serving  # doctest: +SKIP
>>> model = serving.load("model.json")  # doctest: +SKIP
>>> model.score_lines(["0\\t1\\t\\t5\\t..."])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

FORMAT = "sparseopt-export"
VERSION = 1
KINDS = ("logistic", "multinomial", "linear", "fm", "fm_regressor", "ffm", "mf")

# MurmurHash3 x86_32 constants
_C1, _C2, _MASK = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
# a number as the readers accept it: digits with an optional fraction and exponent
_NUMBER = re.compile(rb"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# rows scored at once (8.2 s -> 1.6 s for 100,000 FM rows of 39 entries, k = 16, against all
# rows at once: the gathered blocks stay in the cache)
BLOCK_ROWS = 4096
# the largest count whose integer part is exact in a float64, as the readers take it
_MAX_COUNT = 9e15


def _rotl(x, r):
    return ((x << r) | (x >> (32 - r))) & _MASK


def murmurhash3_32(data: bytes, seed: int) -> int:
    """MurmurHash3 x86_32 of ``data`` with ``seed``, as an unsigned 32-bit integer.

    Blocks of 4 bytes are read little-endian; the tail (``len % 4`` bytes) likewise.

    >>> murmurhash3_32(b"", 0), murmurhash3_32(b"hello", 1)
    (0, 3142237357)
    """
    h = seed & _MASK
    n = len(data)
    whole = n - n % 4
    for p in range(0, whole, 4):
        k = int.from_bytes(data[p : p + 4], "little")
        k = (_rotl((k * _C1) & _MASK, 15) * _C2) & _MASK
        h = (_rotl(h ^ k, 13) * 5 + 0xE6546B64) & _MASK
    if n % 4:
        k = int.from_bytes(data[whole:], "little")
        h ^= (_rotl((k * _C1) & _MASK, 15) * _C2) & _MASK
    h ^= n & _MASK
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    return h ^ (h >> 16)


class FormatError(ValueError):
    """A raw row that does not follow the hashing spec (the message names it and why)."""


# -- the hashing spec ------------------------------------------------------------------------
def _unquoted(value: bytes) -> bytes:
    """A value without enclosing double quotes, a doubled quote inside read as one."""
    if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
        return value[1:-1].replace(b'""', b'"')
    return value


def _number(value: bytes, quoted: bool = True) -> float | None:
    """The number a field holds (``quoted``: enclosing quotes removed first, as in delimited
    files), or None if it is not one."""
    value = _unquoted(value) if quoted else value
    return float(value) if _NUMBER.fullmatch(value) else None


def count_bucket(x: float) -> int:
    """Criteo's count transform: ``floor(ln(x)**2)`` for ``x > 2``, else ``x`` itself."""
    return int(math.floor(math.log(x) ** 2)) if x > 2 else int(x)


CRITEO_FIELDS = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
MAX_CROSS_ORDER = 3


def crosses(interactions, field_names: list[str]) -> list[tuple[int, ...]]:
    """The crosses that ``interactions`` names (the spec's rule ``interactions``), as tuples
    of input field indices, in the order their fields are numbered.

    >>> crosses(["b*a", "c*"], ["a", "b", "c"])
    [(1, 0), (0, 2), (1, 2)]
    """
    if isinstance(interactions, str):
        interactions = interactions.split(",")
    n = len(field_names)
    out, seen = [], set()
    for item in interactions or []:
        # a list item is a cross of the fields it names (names holding '*' or ',')
        names = item.strip().split("*") if isinstance(item, str) else list(item)
        names = [str(name).strip() for name in names]
        if names == [""]:
            continue
        if names == ["all"] and isinstance(item, str):
            named = [(f, g) for f in range(n) for g in range(f + 1, n)]
        elif len(names) == 2 and names[0] and not names[1] and isinstance(item, str):
            f = _field(names[0], field_names)
            named = [(min(f, g), max(f, g)) for g in range(n) if g != f]
        else:
            named = [tuple(_field(name, field_names) for name in names)]
            if not 2 <= len(names) <= MAX_CROSS_ORDER or len(set(named[0])) < len(names):
                raise ValueError(f"interactions: {item!r} is not a cross of 2 or 3 fields")
        for cross in named:
            if tuple(sorted(cross)) in seen:
                raise ValueError(f"interactions: {item!r} names a cross twice")
            seen.add(tuple(sorted(cross)))
            out.append(cross)
    return out


def _field(name: str, field_names: list[str]) -> int:
    if name not in field_names:
        raise ValueError(f"interactions: unknown field {name!r}; the fields are {field_names}")
    return field_names.index(name)


class RowHasher:
    """Raw text rows to hashed columns, by the rules of a hashing spec's ``data`` section.

    Parameters
    ----------
    data : dict
        ``format`` ("criteo", "avazu", "csv" or "libsvm"), ``n_bits``, ``field_aware``,
        ``sep``, ``interactions`` (crosses) and, for CSV, ``label``, ``features``, ``numeric``,
        ``exclude``, ``weight_column`` (skipped); for LIBSVM ``n_features`` and
        ``zero_based``. ``negative_rate`` changes nothing here (see the spec's rules).
    header : list of str, default=None
        CSV and Avazu: the column names of the file's first line (split at the separator,
        enclosing quotes removed).
    """

    def __init__(self, data: dict, header: list[str] | None = None):
        self.format = data["format"]
        self.n_bits = int(data.get("n_bits") or 0)
        self.field_aware = bool(data.get("field_aware", False))
        self._cache: dict = {}
        if self.format == "libsvm":
            self.n_features = data.get("n_features")
            if data.get("zero_based") not in (True, False):
                raise ValueError("a libsvm data section needs zero_based true or false")
            self.offset = 0 if data["zero_based"] else 1
            return
        self.n_features = 1 << self.n_bits
        if self.format == "criteo":
            self.sep = (data.get("sep") or "\t").encode()
            self.roles = ["label"] + ["count"] * 13 + ["categorical"] * 26
            self.slots = [-1] + list(range(39))
            names = CRITEO_FIELDS
        else:
            if header is None:
                raise ValueError(f"format {self.format!r} needs the file's header line")
            self.sep = (data.get("sep") or ",").encode()
            label = "click" if self.format == "avazu" else data["label"]
            exclude = ["id"] if self.format == "avazu" else list(data.get("exclude") or [])
            if self.format == "csv" and data.get("weight_column"):
                exclude.append(data["weight_column"])  # a weight, not a feature
            features = data.get("features") if self.format == "csv" else None
            if features is None:
                features = [n for n in header if n != label and n not in exclude]
            numeric = set(data.get("numeric") or []) if self.format == "csv" else set()
            missing = [n for n in [label, *features] if n not in header]
            if missing:
                raise ValueError(f"columns {missing} are not in the header {header}")
            self.roles = [
                "label" if n == label
                else ("numeric" if n in numeric else "categorical") if n in features
                else "skip"
                for n in header
            ]  # fmt: skip
            self.slots = [features.index(n) if n in features else -1 for n in header]
            names = list(features)
        self.n_inputs = sum(r not in ("label", "skip") for r in self.roles)
        self.crosses = crosses(data.get("interactions"), names)
        self.n_fields = self.n_inputs + len(self.crosses)  # cross k is field n_inputs + k
        self.slice = (1 << self.n_bits) // self.n_fields if self.field_aware else 0

    def _to_column(self, field: int, h: int) -> int:
        return field * self.slice + h % self.slice if self.slice else h & (self.n_features - 1)

    def _hash(self, field: int, text: bytes) -> tuple[int, int]:
        """(hash, column) of the pair (``field``, ``text``)."""
        key = (field, text)
        found = self._cache.get(key)
        if found is None:
            h = murmurhash3_32(text, field)
            found = h, self._to_column(field, h)
            if len(self._cache) < 1 << 20:
                self._cache[key] = found
        return found

    def column(self, field: int, text: bytes) -> int:
        """The column of the pair (``field``, ``text``)."""
        return self._hash(field, text)[1]

    def cross_column(self, field: int, hashes: list[int]) -> tuple[int, int]:
        """(hash, column) of the cross numbered ``field`` whose fields' pairs hash to
        ``hashes``: MurmurHash3 of the hashes as little-endian uint32, seeded by ``field``."""
        h = murmurhash3_32(b"".join(x.to_bytes(4, "little") for x in hashes), field)
        return h, self._to_column(field, h)

    def row(self, line: bytes | str) -> tuple[float, list[int], list[float]] | None:
        """(label, columns, values) of one line, None for a blank line; columns sorted and
        distinct (the values of repeated columns summed, in float32)."""
        if isinstance(line, str):
            line = line.encode()
        line = line.rstrip(b"\n")
        line = line[:-1] if line.endswith(b"\r") else line
        parsed = self._libsvm(line) if self.format == "libsvm" else self._delimited(line)
        if parsed is None:
            return None
        label, cols, vals = parsed
        summed: dict[int, np.float32] = {}
        for c, v in zip(cols, vals, strict=True):
            summed[c] = np.float32(summed.get(c, np.float32(0)) + np.float32(v))
        order = sorted(summed)
        return label, order, [float(summed[c]) for c in order]

    def _delimited(self, line):
        if not line:
            return None
        parts = line.split(self.sep)
        if len(parts) != len(self.roles):
            raise FormatError(f"{len(parts)} fields, expected {len(self.roles)}: {line[:80]!r}")
        label, cols, vals = math.nan, [], []
        hashes = {}  # field -> (hash, value) of the fields present, for the crosses
        for value, role, f in zip(parts, self.roles, self.slots, strict=True):
            if role == "label":
                label = _number(value)
                if label is None:
                    raise FormatError(f"label {value!r} is not a number")
            elif role == "categorical":
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    raise FormatError(f"field {f} is not UTF-8: {value!r}") from None
                h, col = self._hash(f, _unquoted(value))
                hashes[f] = h, 1.0
                cols.append(col)
                vals.append(1.0)
            elif role == "count":
                text = b""
                if value:
                    x = _number(value)
                    if x is None or x != math.floor(x) or abs(x) > _MAX_COUNT:
                        raise FormatError(f"count {value!r} of field {f} is not an integer")
                    text = str(count_bucket(x)).encode()
                h, col = self._hash(f, text)
                hashes[f] = h, 1.0
                cols.append(col)
                vals.append(1.0)
            elif role == "numeric" and value:
                x = _number(value)
                if x is None:
                    raise FormatError(f"field {f}: {value!r} is not a number")
                h, col = self._hash(f, b"")
                hashes[f] = h, float(np.float32(x))
                cols.append(col)
                vals.append(x)
        for k, cross in enumerate(self.crosses):
            if all(f in hashes for f in cross):  # absent where one of its fields is
                cols.append(self.cross_column(self.n_inputs + k, [hashes[f][0] for f in cross])[1])
                # the product of the fields' float32 values in float64, stored as float32
                vals.append(float(np.float32(math.prod(hashes[f][1] for f in cross))))
        return label, cols, vals

    def _libsvm(self, line):
        line = line.split(b"#", 1)[0].split()
        if not line:
            return None
        label = _number(line[0], quoted=False)
        if label not in (-1.0, 0.0, 1.0):
            raise FormatError(f"label {line[0]!r} is not -1, 0 or 1")
        label = float(label > 0)
        cols, vals = [], []
        for token in line[1:]:
            index, _, value = token.partition(b":")
            if index == b"qid":
                continue
            x = _number(value, quoted=False)
            if not index.isdigit() or x is None:
                raise FormatError(f"token {token!r} is not index:value")
            col = int(index) - self.offset
            if col < 0 or (self.n_features is not None and col >= self.n_features):
                raise FormatError(f"index {int(index)} is outside the model's columns")
            cols.append(col)
            vals.append(x)
        return label, cols, vals

    def rows(self, lines) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(indptr, indices, values, labels)``: the CSR arrays of ``lines``."""
        indptr, indices, values, labels = [0], [], [], []
        for line in lines:
            parsed = self.row(line)
            if parsed is None:
                continue
            label, cols, vals = parsed
            indices += cols
            values += vals
            labels.append(label)
            indptr.append(len(indices))
        return (np.asarray(indptr, np.int64), np.asarray(indices, np.int64),
                np.asarray(values, np.float32), np.asarray(labels, np.float64))  # fmt: skip


# -- models ----------------------------------------------------------------------------------
def _table(entry: dict, arrays) -> np.ndarray:
    """A table of the export: dense, or the rows listed (others zero)."""
    shape = tuple(entry["shape"])
    dtype = np.dtype(entry.get("dtype", "float32"))
    if "npz" in entry:
        values = np.asarray(arrays[entry["npz"] + "_values"], dtype)
        rows = arrays[entry["npz"] + "_rows"] if entry.get("sparse") else None
    else:
        values = np.asarray(entry["values"], dtype)
        rows = np.asarray(entry["rows"], np.int64) if entry.get("sparse") else None
    if rows is None:
        return values.reshape(shape)
    table = np.zeros(shape, dtype)
    if rows.size:
        if rows.min() < 0 or rows.max() >= shape[0]:
            raise ValueError("a table lists rows outside its shape")
        table[rows] = values.reshape((rows.size, *shape[1:]))
    return table


def _row_sums(a, indptr):
    """Sums of ``a``'s entries (first axis) over each CSR row, in order: (n_rows, ...)."""
    out = np.zeros((indptr.size - 1, *a.shape[1:]))
    starts = indptr[:-1][np.diff(indptr) > 0]
    if starts.size:  # between two rows with entries, empty rows add nothing
        out[np.diff(indptr) > 0] = np.add.reduceat(a, starts, axis=0)
    return out


class Model:
    """An exported model in NumPy: ``kind``, ``tables`` (float32 arrays), ``meta``.

    Scores follow the formulas written in the export's ``formula`` entry, accumulated in
    float64.
    """

    def __init__(self, meta: dict, tables: dict):
        if meta.get("format") != FORMAT or meta.get("kind") not in KINDS:
            raise ValueError("not a sparseopt export (format or kind unknown)")
        if meta.get("version", 0) > VERSION:
            raise ValueError("the export was written by a newer sparseopt: upgrade it")
        self.meta = meta
        self.kind = meta["kind"]
        self.tables = tables
        self.classes = meta.get("classes")

    @classmethod
    def load(cls, path) -> Model:
        """Read a JSON export (and its ``.npz`` of large tables, with ``allow_pickle=False``)."""
        path = Path(path)
        meta = json.loads(path.read_text())
        arrays = {}
        if meta.get("npz"):
            with np.load(path.parent / meta["npz"], allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        tables = {name: _table(entry, arrays) for name, entry in meta["tables"].items()}
        return cls(meta, tables)

    @property
    def n_features(self) -> int:
        return int(self.meta["n_features"])

    def hasher(self, header=None) -> RowHasher:
        """The :class:`RowHasher` of the data the model was trained on."""
        if not self.meta.get("data"):
            raise ValueError("the export does not say how its rows were hashed")
        return RowHasher(self.meta["data"], header)

    # -- scoring CSR rows --------------------------------------------------------------------
    def _check(self, indptr, indices, values):
        indptr = np.asarray(indptr, np.int64)
        indices = np.asarray(indices, np.int64)
        values = np.asarray(values, np.float64)
        if indptr.ndim != 1 or indptr.size < 1 or indptr[0] != 0 or indptr[-1] != indices.size:
            raise ValueError("indptr must start at 0 and end at the number of entries")
        if np.any(np.diff(indptr) < 0) or indices.shape != values.shape:
            raise ValueError("indptr must not decrease; indices and values must match")
        if indices.size and (indices.min() < 0 or indices.max() >= self.n_features):
            raise ValueError(f"a column index is outside 0 .. {self.n_features - 1}")
        return indptr, indices, values

    def margins(self, indptr, indices, values) -> np.ndarray:
        """Margins of CSR rows (sorted, distinct columns per row), float64: (n_rows,) or
        (n_rows, n_classes) for a multinomial model."""
        if self.kind == "mf":
            raise ValueError("a matrix factorization scores (user, item) pairs: use score_pairs")
        indptr, indices, values = self._check(indptr, indices, values)
        # a block of rows at a time: the rows of the tables it gathers stay in the cache
        n_rows, blocks = indptr.size - 1, []
        for start in range(0, n_rows, BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, n_rows)
            entries = slice(indptr[start], indptr[stop])
            block = indptr[start : stop + 1] - indptr[start]
            blocks.append(self._block_margins(block, indices[entries], values[entries]))
        m = np.concatenate(blocks) if blocks else np.zeros((0, self.tables["coef"].shape[1]))
        return m if self.kind == "multinomial" else m[:, 0]

    def _block_margins(self, indptr, indices, values):
        t = self.tables
        # gathered, then widened: the tables stay float32, the sums are float64
        m = _row_sums(values[:, None] * t["coef"][indices].astype(np.float64), indptr)
        m += t["intercept"].astype(np.float64)
        if self.kind in ("fm", "fm_regressor"):
            xv = values[:, None] * t["factors"][indices].astype(np.float64)
            s = _row_sums(xv, indptr)
            sq = _row_sums((xv * xv).sum(axis=1), indptr)
            m[:, 0] += 0.5 * ((s * s).sum(axis=1) - sq)
        elif self.kind == "ffm":
            m[:, 0] += self._ffm_pairs(indptr, indices, values)
        return m

    def _ffm_pairs(self, indptr, indices, values, chunk=1_000):
        """FFM's pairwise term, rows padded ``chunk`` at a time: entry a of a row meets
        entry b through ``factors[j_a, fields[j_b]] . factors[j_b, fields[j_a]]``."""
        v = self.tables["factors"]  # (n_features, n_fields, k)
        fields = self.tables["fields"].astype(np.int64)
        counts = np.diff(indptr)
        out = np.zeros(counts.size)
        for start in range(0, counts.size, chunk):
            n = counts[start : start + chunk]
            width = int(n.max(initial=0))
            if width < 2:
                continue
            filled = np.arange(width) < n[:, None]
            j = np.zeros(filled.shape, np.int64)
            x = np.zeros(filled.shape)
            j[filled] = indices[indptr[start] : indptr[start + n.size]]
            x[filled] = values[indptr[start] : indptr[start + n.size]]
            g = fields[j]
            x[g < 0] = 0.0  # a column without a field has no pairs
            g = np.maximum(g, 0)
            pair = v[j[:, :, None], g[:, None, :]].astype(np.float64)  # (rows, a, b, k)
            dots = np.einsum("rabk,rbak->rab", pair, pair)
            upper = np.triu(np.ones((width, width), bool), 1)
            out[start : start + n.size] = np.einsum("rab,ra,rb->r", dots * upper, x, x)
        return out

    def score(self, indptr, indices, values) -> np.ndarray:
        """What the estimator's ``predict_proba`` (classifiers: (n_rows, n_classes)) or
        ``predict`` (regressors: (n_rows,)) gives for these CSR rows."""
        m = self.margins(indptr, indices, values)
        if self.kind in ("linear", "fm_regressor"):
            return m
        if self.kind == "multinomial":
            e = np.exp(m - m.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        with np.errstate(over="ignore"):
            p = 1.0 / (1.0 + np.exp(-m))
        return np.column_stack([1.0 - p, p])

    def score_lines(self, lines, header=None) -> np.ndarray:
        """:meth:`score` of raw text rows, hashed by the export's data spec."""
        indptr, indices, values, _ = self.hasher(header).rows(lines)
        return self.score(indptr, indices, values)

    # -- matrix factorization ----------------------------------------------------------------
    def _ids(self, ids, n, name):
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise ValueError(f"{name} must be in 0 .. {n - 1}")
        return ids

    def score_pairs(self, users, items) -> np.ndarray:
        """Matrix factorization: the score of the pairs ``(users[n], items[n])``."""
        t = self.tables
        users = self._ids(users, t["user_biases"].size, "user ids")
        items = self._ids(items, t["item_biases"].size, "item ids")
        p, q = t["user_factors"].astype(np.float64), t["item_factors"].astype(np.float64)
        s = (self.meta["global_mean"] + t["user_biases"][users].astype(np.float64)
             + t["item_biases"][items] + np.einsum("ij,ij->i", p[users], q[items]))  # fmt: skip
        if self.meta.get("clip") is not None:
            s = np.clip(s, *self.meta["clip"])
        return s

    def recommend(self, users, n=10, exclude_seen=True) -> np.ndarray:
        """Matrix factorization: each user's ``n`` best-scored items (-1 beyond its
        candidates), ranked by :math:`b_i + p_u^T q_i`, ties by item id."""
        t = self.tables
        users = self._ids(users, t["user_biases"].size, "user ids")
        scores = t["user_factors"].astype(np.float64)[users] @ t["item_factors"].T.astype(
            np.float64
        ) + t["item_biases"].astype(np.float64)
        if exclude_seen:
            indptr, indices = t["seen_indptr"].astype(np.int64), t["seen_indices"]
            for r, u in enumerate(users):
                scores[r, indices[indptr[u] : indptr[u + 1]]] = -np.inf
        order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores))
        top = order[:, :n]
        top = np.where(np.take_along_axis(scores, top, 1) == -np.inf, -1, top)
        out = np.full((users.size, n), -1, np.int64)
        out[:, : top.shape[1]] = top
        return out


def load(path) -> Model:
    """Load a JSON export of :func:`sparseopt.export.export` (``format="json"``)."""
    return Model.load(path)
