"""Streaming readers: text files to CSR chunks with bounded memory.

Each reader reads its file in blocks of whole lines (``block_size`` bytes), parses a block
with one compiled call (:mod:`._parsers`), and regroups the rows into chunks of exactly
``chunk_size`` rows (the last one shorter). Memory is bounded by one block plus one chunk.
"""

import gzip
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import _parsers as P
from ._cache import _MAX_BAD_LINES_KEPT, ChunkCache, data_home
from ._crosses import add_crosses, cross_name, cross_table, parse_interactions
from ._hashing import (
    check_n_bits,
    csr_from_columns,
    index_dtype,
    make_csr,
    pack_rows,
    slice_size,
)

_MESSAGES = {
    P.WRONG_FIELD_COUNT: "expected {n_cols} fields separated by {sep!r}, found {detail}",
    P.BAD_LABEL: "the label {text!r} is not {labels}",
    P.BAD_COUNT: "column {col}: {text!r} is not an integer count",
    P.BAD_NUMBER: "column {col}: {text!r} is not a number",
    P.BAD_ENCODING: "column {col}: the value is not valid UTF-8 ({text!r})",
    P.BAD_TOKEN: "{text!r} is not an index:value pair",
    P.BAD_INDEX: "feature index {detail} is out of range for {index_range}",
    P.BAD_WEIGHT: "column {col}: the weight {text!r} is not a finite number >= 0",
}


def _check_file(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty")
    return path


def _open(path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


class ChunkReader:
    """Base class of the readers: chunking, statistics, errors and the chunk cache.

    A reader is an iterable of ``(X, y)`` chunks: ``X`` a canonical
    ``scipy.sparse.csr_matrix`` of float32 values (int32 indices when they fit), ``y`` a
    float32 array; ``(X, y, w)`` with a weight column (:class:`CSVReader`), ``w`` the float32
    sample weights. Iterate it again for another epoch, or use :meth:`cached` to skip parsing.

    Attributes
    ----------
    path : pathlib.Path
        The file read (``.gz`` files are decompressed on the fly).
    n_features : int
        Number of columns of every chunk.
    stats : dict
        After (or during) a pass: ``n_rows`` (rows yielded), ``n_bad_lines`` (malformed
        lines skipped, with ``skip_bad_lines=True``), ``bad_lines`` (their 1-based line
        numbers, the first 1000) and ``n_dropped`` (negatives dropped by ``negative_rate``).
    """

    # how an error names the option that skips bad lines (the command line: its flag)
    skip_hint = "skip_bad_lines=True"

    def __init__(self, path, *, chunk_size=100_000, skip_bad_lines=False, block_size=1 << 23):
        self.path = _check_file(path)
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        if int(block_size) < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size}")
        self.chunk_size = int(chunk_size)
        self.skip_bad_lines = bool(skip_bad_lines)
        self.block_size = int(block_size)
        self.header_lines = 0
        self.stats = self._new_stats()

    # --- subclass interface -------------------------------------------------------------
    def _parse_block(self, buf, first_line):
        """Parse a block of whole lines; return ``(X, y, bad)`` (bad: 0-based line indices
        within the block of the lines skipped) or raise via :meth:`_raise`."""
        raise NotImplementedError

    def _params(self):
        """Everything the parsed result depends on, for the cache key."""
        return {
            "reader": type(self).__name__,
            "chunk_size": self.chunk_size,
            "skip_bad_lines": self.skip_bad_lines,
        }

    # --- public API ---------------------------------------------------------------------
    @property
    def n_bad_lines(self):
        """Malformed lines skipped in the last pass (see ``skip_bad_lines``)."""
        return self.stats["n_bad_lines"]

    def chunks(self, n_threads=1):
        """Parse the file and yield ``(X, y)`` chunks of ``chunk_size`` rows.

        Parameters
        ----------
        n_threads : int, default=1
            Threads parsing blocks at once (the compiled parser releases the GIL); the
            chunks, errors and statistics are the same for any number.

        Yields
        ------
        X : scipy.sparse.csr_matrix of shape (n_rows, n_features), float32
        y : ndarray of shape (n_rows,), float32
        """
        self.stats = self._new_stats()
        pending, n_pending = [], 0
        for block in self._parsed_blocks(n_threads):
            n_rows = block[0].shape[0]
            start = 0
            while n_rows - start + n_pending >= self.chunk_size:
                stop = start + self.chunk_size - n_pending
                pending.append(_rows(block, start, stop))
                yield self._count(_stack(pending))
                pending, n_pending, start = [], 0, stop
            if start < n_rows:
                pending.append(_rows(block, start, n_rows))
                n_pending += n_rows - start
        if n_pending:
            yield self._count(_stack(pending))

    __iter__ = chunks

    def read(self):
        """Parse the whole file into one matrix.

        Returns
        -------
        X : scipy.sparse.csr_matrix of shape (n_rows, n_features), float32
        y : ndarray of shape (n_rows,), float32
        """
        parts = list(self.chunks())
        if not parts:
            empty = np.zeros(0, np.float32)
            X = sp.csr_matrix((0, self.n_features), dtype=np.float32)
            return (X, empty, empty) if self._weighted else (X, empty)
        return _stack(parts)

    def cached(self, cache_dir=None, n_threads=1):
        """Yield the same chunks as :meth:`chunks`, from an on-disk cache when it is valid.

        The first pass parses the file and saves each chunk (``.npz``, written to a
        temporary file then renamed); later passes load them. The cache folder is keyed by
        the reader's parameters (hashing, columns, chunk size...) and the manifest records
        the source's size and modification time: if either changed, the file is parsed
        again and the cache rewritten. A pass stopped early leaves no manifest, so the next
        pass parses again. The pass holds its chunk set, so that ``sparseopt cache --clear``
        leaves it alone; a set held or being cleared by another process is not rewritten (the
        pass parses the file), and a damaged one is not used (see
        :class:`~sparseopt.datasets._cache.ChunkCache`).

        Parameters
        ----------
        cache_dir : str or path-like, default=None
            None: ``data_home() / "chunks"`` (``$SPARSEOPT_DATA`` or ``~/.cache/sparseopt``).
        n_threads : int, default=1
            Parsing threads when the file is parsed (see :meth:`chunks`).

        Yields
        ------
        X, y : as in :meth:`chunks`
        """
        cache = self._chunk_cache(cache_dir)
        yield from cache.chunks(lambda: self.chunks(n_threads), self, self.n_features)

    def hold_cache(self, cache_dir=None):
        """A context manager that holds this reader's chunk set (see :meth:`cached`) for
        its block, as each pass holds it: around all the epochs of a run, so that
        ``sparseopt cache --clear`` keeps the set between them too.

        Parameters
        ----------
        cache_dir : str or path-like, default=None
            As for :meth:`cached`.
        """
        return self._chunk_cache(cache_dir).hold()

    def _chunk_cache(self, cache_dir):
        root = Path(cache_dir) if cache_dir is not None else data_home() / "chunks"
        return ChunkCache(root, self.path, self._params())

    def __repr__(self):
        return f"{type(self).__name__}({str(self.path)!r}, chunk_size={self.chunk_size})"

    # --- helpers ------------------------------------------------------------------------
    # chunks are (X, y, w) with a weight column (read_csv), else (X, y)
    _weighted = False

    @staticmethod
    def _new_stats():
        return {"n_rows": 0, "n_bad_lines": 0, "bad_lines": [], "n_dropped": 0}

    def _count(self, chunk):
        self.stats["n_rows"] += chunk[0].shape[0]
        return chunk

    def _blocks(self):
        """Yield ``(bytes as a uint8 array, 1-based number of its first line)``."""
        with _open(self.path) as f:
            line_no = 1
            for _ in range(self.header_lines):
                f.readline()
                line_no += 1
            carry = np.empty(0, dtype=np.uint8)
            while True:
                # read after the carried partial line, in place: no copy of the block (and
                # an uninitialized buffer: zeroing 8 MB first costs about 1 ms)
                data = np.empty(carry.size + self.block_size, dtype=np.uint8)
                data[: carry.size] = carry
                n = carry.size + f.readinto(memoryview(data)[carry.size :])
                if n == carry.size:
                    if carry.size:
                        yield carry, line_no
                    return
                cut = _last_newline(data[:n])
                carry = data[cut + 1 : n].copy()
                if cut < 0:
                    continue
                block = data[: cut + 1]
                yield block, line_no
                line_no += P.count_lines(block)

    def _parsed_blocks(self, n_threads=1):
        for (*block, bad, n_dropped), first_line in self._parse_in_order(n_threads):
            self.stats["n_dropped"] += n_dropped
            if len(bad):
                self.stats["n_bad_lines"] += len(bad)
                room = _MAX_BAD_LINES_KEPT - len(self.stats["bad_lines"])
                self.stats["bad_lines"].extend(int(i) + first_line for i in bad[:room])
            if block[0].shape[0]:
                yield tuple(block)

    def _parse_in_order(self, n_threads):
        """``(parsed block, first line)`` in file order, up to ``n_threads`` blocks at once."""
        if n_threads <= 1:
            for buf, first_line in self._blocks():
                yield self._parse_block(buf, first_line), first_line
            return
        with ThreadPoolExecutor(n_threads, thread_name_prefix="sparseopt-parse") as pool:
            pending = deque()
            try:
                for buf, first_line in self._blocks():
                    pending.append((pool.submit(self._parse_block, buf, first_line), first_line))
                    if len(pending) > n_threads:
                        future, line = pending.popleft()
                        yield future.result(), line
                while pending:
                    future, line = pending.popleft()
                    yield future.result(), line
            finally:
                for future, _ in pending:
                    future.cancel()

    def _raise(self, buf, first_line, err, **context):
        line, code, col, detail, start, end = (int(v) for v in err)
        text = bytes(buf[start:end]).decode("utf-8", errors="replace")
        if len(text) > 60:
            text = text[:57] + "..."
        message = _MESSAGES[code].format(col=col, detail=detail, text=text, **context)
        hint = "" if self.skip_bad_lines else f" ({self.skip_hint} skips such lines)"
        raise ValueError(f"{self.path}, line {first_line + line}: {message}{hint}")


def _last_newline(data) -> int:
    """Index of the last newline in the uint8 array ``data``, -1 if none (searched in
    growing windows from the end: a line is short)."""
    end, window = data.size, 4096
    while end > 0:
        start = max(0, end - window)
        (found,) = np.nonzero(data[start:end] == ord("\n"))
        if found.size:
            return start + int(found[-1])
        end, window = start, window * 8
    return -1


def _row_slice(X, start, stop):
    """Rows ``start:stop`` of a canonical CSR matrix (views where possible)."""
    if start == 0 and stop == X.shape[0]:
        return X
    lo, hi = X.indptr[start], X.indptr[stop]
    indptr = X.indptr[start : stop + 1] - lo
    return make_csr(indptr, X.indices[lo:hi], X.data[lo:hi], (stop - start, X.shape[1]))


def _rows(chunk, start, stop):
    """Rows ``start:stop`` of a chunk ``(X, y[, w])``."""
    X, *arrays = chunk
    return (_row_slice(X, start, stop), *(a[start:stop] for a in arrays))


def _stack(parts):
    """Stack canonical CSR chunks by rows (and their labels and weights) without re-checking
    them."""
    if len(parts) == 1:
        return parts[0]
    Xs = [p[0] for p in parts]
    offsets = np.cumsum([0] + [X.nnz for X in Xs])
    indptr = np.concatenate([[0]] + [X.indptr[1:] + o for X, o in zip(Xs, offsets, strict=False)])
    dtype = np.result_type(*[X.indices.dtype for X in Xs])
    indices = np.concatenate([X.indices for X in Xs]).astype(dtype, copy=False)
    data = np.concatenate([X.data for X in Xs])
    shape = (len(indptr) - 1, Xs[0].shape[1])
    X = make_csr(indptr.astype(np.int64), indices, data, shape)
    return (X, *(np.concatenate(arrays) for arrays in list(zip(*parts, strict=True))[1:]))


class _DelimitedReader(ChunkReader):
    """Lines of ``sep``-separated columns (quotes around a value removed), each column a
    label, a skipped column, or a feature hashed as (field, value) with the field's index as
    seed."""

    def __init__(
        self,
        path,
        *,
        kinds,
        n_bits,
        field_aware,
        sep,
        chunk_size,
        skip_bad_lines,
        block_size,
        header_lines,
        field_names,
        binary_label=True,
        slots=None,
        interactions=None,
        negative_rate=1.0,
        random_state=0,
    ):
        super().__init__(
            path, chunk_size=chunk_size, skip_bad_lines=skip_bad_lines, block_size=block_size
        )
        self.n_bits = check_n_bits(n_bits)
        self.field_aware = bool(field_aware)
        if len(sep) != 1 or len(sep.encode()) != 1 or sep in "\r\n":
            raise ValueError(f"sep must be one ASCII character other than a newline, got {sep!r}")
        self.sep = sep
        self.header_lines = header_lines
        self.binary_label = bool(binary_label)
        self._kinds = np.asarray(kinds, dtype=np.int8)
        is_feature = np.isin(self._kinds, [P.CATEGORICAL, P.COUNT, P.NUMERIC])
        if slots is None:
            slots = np.where(is_feature, np.cumsum(is_feature) - 1, -1)
        self._slots = np.asarray(slots, dtype=np.int64)
        n_inputs = int(is_feature.sum())
        self.crosses = parse_interactions(interactions, field_names)
        self.field_names = [str(n) for n in field_names] + [
            cross_name(c, field_names) for c in self.crosses
        ]
        self.n_fields = n_inputs + len(self.crosses)  # a cross is a field of its own
        self._cross_table = cross_table(self.crosses)
        self.n_features = 1 << self.n_bits
        self._slice = slice_size(self.n_bits, self.n_fields, self.field_aware)
        self._numeric = bool(np.any(self._kinds == P.NUMERIC))
        self._weighted = bool(np.any(self._kinds == P.WEIGHT))
        self.negative_rate = _check_rate(negative_rate)
        if self.negative_rate < 1 and not self.binary_label:
            raise ValueError("negative_rate needs 0/1 labels (binary_label=True)")
        if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
            raise ValueError(f"random_state must be an integer seed, got {random_state!r}")
        if not 0 <= random_state < 2**53:  # a float64 carries it to the parser exactly
            raise ValueError(f"random_state must be in [0, 2**53), got {random_state}")
        self.random_state = int(random_state)

    def _params(self):
        return dict(
            super()._params(),
            n_bits=self.n_bits,
            field_aware=self.field_aware,
            sep=self.sep,
            header_lines=self.header_lines,
            binary_label=self.binary_label,
            quotes="removed",  # since issue 30: chunks cached before hashed the quotes
            kinds=self._kinds.tolist(),
            slots=self._slots.tolist(),
            crosses=[list(c) for c in self.crosses],
            negative_rate=self.negative_rate,
            random_state=self.random_state,
        )

    def _parse_block(self, buf, first_line):
        max_rows = P.count_lines(buf) + 1
        cols = np.empty((max_rows, self.n_fields), dtype=index_dtype(self.n_features))
        vals = np.empty((max_rows, self.n_fields), dtype=np.float32)
        y = np.empty(max_rows, dtype=np.float32)
        bad = np.empty(max_rows, dtype=np.int64)
        err = np.zeros(6, dtype=np.int64)
        n_inputs = self.n_fields - len(self.crosses)
        hashes = np.empty((max_rows if self.crosses else 0, n_inputs), dtype=np.uint32)
        w = np.empty(max_rows if self._weighted else 0, dtype=np.float32)
        label_col = int(np.flatnonzero(self._kinds == P.LABEL)[0])
        sampling = np.array(
            [self.negative_rate, self.random_state, label_col, first_line], dtype=np.float64
        )
        n_rows, n_bad, n_dropped = P.parse_delimited(
            buf,
            (ord(self.sep), self._kinds, self._slots),
            (self.n_bits, self._slice),
            (self.binary_label, self.skip_bad_lines),
            (cols, vals, y, w, hashes),
            (bad, err),
            sampling,
        )
        if err[1]:
            self._raise(
                buf,
                first_line,
                err,
                n_cols=len(self._kinds),
                sep=self.sep,
                labels="0 or 1" if self.binary_label else "a number",
            )
        if self.crosses:
            add_crosses(
                hashes, cols, vals, self._cross_table, n_rows, self.n_bits, self._slice,
                self._numeric,
            )  # fmt: skip
        cols = cols[:n_rows]
        if self._numeric:
            X = _pack_with_values(cols, vals[:n_rows], self.n_features)
        else:
            X = csr_from_columns(cols, self.n_features)
        labels = y[:n_rows].copy()
        if self._weighted:
            return X, labels, w[:n_rows].copy(), bad[:n_bad], n_dropped
        return X, labels, bad[:n_bad], n_dropped


def _check_rate(rate):
    """``negative_rate`` as a float in (0, 1]."""
    if isinstance(rate, bool) or not isinstance(rate, int | float | np.integer | np.floating):
        raise ValueError(f"negative_rate must be a number in (0, 1], got {rate!r}")
    if not 0 < rate <= 1:
        raise ValueError(
            f"negative_rate must be in (0, 1] (the fraction of negatives kept), got {rate}"
        )
    return float(rate)


def _pack_with_values(cols, vals, n_features):
    indptr = np.empty(cols.shape[0] + 1, dtype=np.int64)
    indices = np.empty(cols.size, dtype=cols.dtype)
    data = np.empty(cols.size, dtype=np.float32)
    nnz = pack_rows(cols, vals, cols.dtype.type(n_features), indptr, indices, data)
    return make_csr(indptr, indices[:nnz].copy(), data[:nnz].copy(), (cols.shape[0], n_features))


class CriteoReader(_DelimitedReader):
    """Reader of Criteo Display Advertising Challenge files.

    Each line holds a 0/1 label, 13 integer counts ``I1..I13`` and 26 categoricals
    ``C1..C26`` (8 hex digits), separated by tabs; any feature may be empty.
    Field ``f`` is the 0-based feature position (counts 0-12, categoricals 13-38). A count
    ``x`` becomes the bucket ``floor(ln(x)**2)`` when ``x > 2`` and ``x`` itself otherwise
    (Kaggle winners' transform; integral values such as ``260.0`` are accepted), and the pair
    (field, decimal text of the bucket) is hashed; a categorical is hashed as (field, its
    text); an empty field as (field, empty text), since whether a count or a category is
    missing predicts clicks (Criteo head: AUC 0.722 against 0.717 when empty fields give no
    feature). Hashing: :func:`hash_features`.

    Parameters
    ----------
    path : str or path-like
        The file (``.gz`` accepted).
    n_bits : int, default=20
        Number of columns is ``2**n_bits``.
    field_aware : bool, default=False
        Give each of the 39 fields its own slice of columns (:func:`column_fields`).
    sep : str, default="\\t"
        Column separator.
    header : bool, default=False
        Skip a first line of column names.
    chunk_size : int, default=100_000
        Rows per chunk.
    skip_bad_lines : bool, default=False
        Skip malformed lines (wrong field count, non-integer count, label not 0/1, invalid
        UTF-8) and count them in ``stats``; otherwise raise ``ValueError`` naming the file
        and the line.
    block_size : int, default=8 MiB
        Bytes read and parsed at once.
    interactions : str or list, default=None
        Feature crosses, each hashed in the parsing pass into a field of its own (numbered
        after the input fields) from its fields' hashes: ``"a*b,c*d"``, ``"a*b*c"`` (a triple),
        ``"all"`` (every pair), ``"a*"`` (``a`` with every other field); see
        :func:`~sparseopt.datasets._crosses.parse_interactions`.
    negative_rate : float, default=1.0
        Keep every positive line and this fraction of the negatives (label 0), chosen by a
        hash of (``random_state``, line number): the same lines for any block or chunk size.
        A dropped line is skipped as soon as its label is read. A model trained on the kept
        lines predicts odds ``1 / negative_rate`` times too high: add ``log(negative_rate)``
        to its intercept (``sparseopt train --negative-rate`` does).
    random_state : int, default=0
        Seed of the downsampling.

    Examples
    --------
    >>> from sparseopt.datasets import CriteoReader, sample_path
    >>> reader = CriteoReader(sample_path("train"), n_bits=18, chunk_size=5_000)
    >>> for X, y in reader:  # one epoch
    ...     pass
    >>> reader.stats["n_rows"]
    20000
    """

    N_COUNTS = 13
    N_CATEGORICALS = 26
    FIELD_NAMES = tuple(f"I{i}" for i in range(1, 14)) + tuple(f"C{i}" for i in range(1, 27))

    def __init__(
        self,
        path,
        n_bits=20,
        *,
        field_aware=False,
        sep="\t",
        header=False,
        chunk_size=100_000,
        skip_bad_lines=False,
        block_size=1 << 23,
        interactions=None,
        negative_rate=1.0,
        random_state=0,
    ):
        kinds = [P.LABEL] + [P.COUNT] * self.N_COUNTS + [P.CATEGORICAL] * self.N_CATEGORICALS
        super().__init__(
            path,
            field_names=self.FIELD_NAMES,
            interactions=interactions,
            negative_rate=negative_rate,
            random_state=random_state,
            kinds=kinds,
            n_bits=n_bits,
            field_aware=field_aware,
            sep=sep,
            chunk_size=chunk_size,
            skip_bad_lines=skip_bad_lines,
            block_size=block_size,
            header_lines=int(bool(header)),
        )


def _read_header(path, sep):
    with _open(path) as f:
        line = f.readline()
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValueError(f"{path}, line 1: the header is not valid UTF-8") from None
    if not text:
        raise ValueError(f"{path}, line 1: the header line is empty")
    return [_unquoted(name) for name in text.split(sep)]


def _unquoted(text):
    """A name as the parser reads a value: without enclosing quotes, ``""`` as one quote."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text


class CSVReader(_DelimitedReader):
    """Reader of delimited text with a header: a label column and hashed feature columns.

    Feature ``features[f]`` is field ``f``. A categorical value is hashed as the pair
    (field, its text), an empty one as (field, empty text); a column in ``numeric`` keeps its
    number as the value of one hashed column per field (the pair (field, empty text)) and
    gives no feature when empty. A value in double quotes is read without them, and a
    doubled quote inside as one (``"a""b"`` is ``a"b``), as ``pandas.read_csv`` reads it;
    the separator and line breaks may not occur inside a value.

    Parameters
    ----------
    path : str or path-like
        The file (``.gz`` accepted); its first line names the columns.
    label : str
        The label column.
    features : list of str, default=None
        Feature columns, in field order. None: every column but the label and ``exclude``.
    numeric : list of str, default=()
        Feature columns to keep as numbers.
    exclude : list of str, default=()
        Columns left out when ``features`` is None (an id, for instance).
    n_bits : int, default=20
        Number of columns is ``2**n_bits``.
    field_aware : bool, default=False
        Give each field its own slice of columns (:func:`column_fields`).
    sep : str, default=","
        Column separator.
    binary_label : bool, default=True
        Require labels 0 or 1; False accepts any number (regression).
    weight_column : str, default=None
        A column of sample weights (finite numbers >= 0; a line with another is refused,
        named): chunks are then ``(X, y, w)``, for ``partial_fit(X, y, sample_weight=w)``.
    chunk_size, skip_bad_lines, block_size, interactions, negative_rate, random_state
        As in :class:`CriteoReader`; the fields of ``interactions`` are named by ``features``.
    """

    def __init__(
        self,
        path,
        label,
        features=None,
        *,
        numeric=(),
        exclude=(),
        n_bits=20,
        field_aware=False,
        sep=",",
        binary_label=True,
        weight_column=None,
        chunk_size=100_000,
        skip_bad_lines=False,
        block_size=1 << 23,
        interactions=None,
        negative_rate=1.0,
        random_state=0,
    ):
        path = _check_file(path)
        names = _read_header(path, sep)
        self.columns = names
        if label not in names:
            raise ValueError(f"{path}: no label column {label!r} in the header {names}")
        if weight_column is not None and weight_column not in names:
            raise ValueError(f"{path}: no weight column {weight_column!r} in the header {names}")
        if weight_column == label:
            raise ValueError(f"the label {label!r} cannot also be the weight column")
        if features is None:
            features = [n for n in names if n not in (label, weight_column) and n not in exclude]
        features = list(features)
        missing = [n for n in [*features, *numeric] if n not in names]
        if missing:
            raise ValueError(f"{path}: columns {missing} are not in the header {names}")
        if label in features:
            raise ValueError(f"the label {label!r} cannot also be a feature")
        if weight_column in features:
            raise ValueError(f"the weight column {weight_column!r} cannot also be a feature")
        if len(set(features)) != len(features):
            raise ValueError("features must not repeat a column")
        if not features:
            raise ValueError("at least one feature column is needed")
        numeric = set(numeric)
        kinds = [
            P.LABEL
            if n == label
            else P.WEIGHT
            if n == weight_column
            else (P.NUMERIC if n in numeric else P.CATEGORICAL)
            if n in features
            else P.SKIP
            for n in names
        ]
        self.label = label
        self.features = features
        self.weight_column = weight_column
        super().__init__(
            path,
            field_names=features,
            interactions=interactions,
            negative_rate=negative_rate,
            random_state=random_state,
            kinds=kinds,
            n_bits=n_bits,
            field_aware=field_aware,
            sep=sep,
            chunk_size=chunk_size,
            skip_bad_lines=skip_bad_lines,
            block_size=block_size,
            header_lines=1,
            binary_label=binary_label,
            slots=[features.index(n) if n in features else -1 for n in names],
        )


class AvazuReader(CSVReader):
    """Reader of Avazu CTR files: CSV with a header (``id,click,hour,C1,banner_pos,...``).

    The label is ``click``, ``id`` is dropped and every other column is hashed as the pair
    (field, its text), field ``f`` being the ``f``-th such column (``hour`` is 0).

    Parameters
    ----------
    path : str or path-like
        The file (``.gz`` accepted).
    n_bits : int, default=20
        Number of columns is ``2**n_bits``.
    field_aware, chunk_size, skip_bad_lines, block_size
    interactions, negative_rate, random_state
        As in :class:`CriteoReader` (``interactions`` names fields by the header:
        ``"site_id*app_id"``).
    """

    def __init__(
        self,
        path,
        n_bits=20,
        *,
        field_aware=False,
        chunk_size=100_000,
        skip_bad_lines=False,
        block_size=1 << 23,
        interactions=None,
        negative_rate=1.0,
        random_state=0,
    ):
        super().__init__(
            path,
            "click",
            exclude=["id"],
            n_bits=n_bits,
            field_aware=field_aware,
            chunk_size=chunk_size,
            skip_bad_lines=skip_bad_lines,
            block_size=block_size,
            interactions=interactions,
            negative_rate=negative_rate,
            random_state=random_state,
        )


class LibSVMReader(ChunkReader):
    """Reader of LIBSVM / SVMlight files: ``label index:value ...`` per line.

    Parameters
    ----------
    path : str or path-like
        The file (``.gz`` accepted).
    n_features : int, default=None
        Number of columns. None: one more than the largest index (a first pass over the
        file finds it).
    zero_based : bool or "auto", default="auto"
        Whether indices start at 0. "auto": zero-based if any index 0 occurs in the file
        (as scikit-learn decides; this needs the same first pass).
    binary : bool, default=True
        Labels must be -1, 0 or 1 (+1); they are stored as 0/1. False keeps any number.
    chunk_size, skip_bad_lines, block_size
        As in :class:`CriteoReader`. ``qid:`` tokens and ``#`` comments are ignored.
    """

    def __init__(
        self,
        path,
        n_features=None,
        zero_based="auto",
        *,
        binary=True,
        chunk_size=100_000,
        skip_bad_lines=False,
        block_size=1 << 23,
    ):
        super().__init__(
            path, chunk_size=chunk_size, skip_bad_lines=skip_bad_lines, block_size=block_size
        )
        if zero_based not in (True, False, "auto"):
            raise ValueError(f"zero_based must be True, False or 'auto', got {zero_based!r}")
        if n_features is not None and int(n_features) < 0:
            raise ValueError(f"n_features must be >= 0, got {n_features}")
        self.binary = bool(binary)
        self.zero_based = zero_based
        self.n_features = None if n_features is None else int(n_features)
        if n_features is None or zero_based == "auto":
            lo, hi = self._index_range()
            if zero_based == "auto":
                self.zero_based = bool(lo == 0)
            if n_features is None:
                self.n_features = max(int(hi) + 1 - int(not self.zero_based), 0)

    def _params(self):
        return dict(
            super()._params(),
            n_features=self.n_features,
            zero_based=self.zero_based,
            binary=self.binary,
        )

    def _index_range(self):
        lo, hi = np.iinfo(np.int64).max, -1
        for buf, first_line in self._blocks():
            *_, minmax = self._parse_arrays(buf, first_line, 0, -1)
            lo, hi = min(lo, minmax[0]), max(hi, minmax[1])
        return lo, hi

    def _parse_arrays(self, buf, first_line, offset, n_features):
        max_rows = P.count_lines(buf) + 1
        max_nnz = int(np.count_nonzero(buf == 58))
        dtype = np.int64 if n_features < 0 else index_dtype(n_features)
        indptr = np.empty(max_rows + 1, dtype=np.int64)
        indices = np.empty(max_nnz, dtype=dtype)
        data = np.empty(max_nnz, dtype=np.float32)
        y = np.empty(max_rows, dtype=np.float32)
        bad = np.empty(max_rows, dtype=np.int64)
        err = np.zeros(6, dtype=np.int64)
        minmax = np.array([np.iinfo(np.int64).max, -1], dtype=np.int64)
        n_rows, nnz, n_bad = P.parse_libsvm(
            buf,
            (offset, n_features),
            (self.binary, self.skip_bad_lines),
            (indptr, indices, data, y),
            (bad, err),
            minmax,
        )
        if err[1]:
            index_range = f"{n_features} features indexed from {offset}"
            self._raise(
                buf,
                first_line,
                err,
                labels="-1, 0 or 1" if self.binary else "a number",
                index_range=index_range,
            )
        arrays = indptr[: n_rows + 1], indices[:nnz], data[:nnz], y[:n_rows]
        return arrays, bad[:n_bad], minmax

    def _parse_block(self, buf, first_line):
        offset = 0 if self.zero_based else 1
        (indptr, indices, data, y), bad, _ = self._parse_arrays(
            buf, first_line, offset, self.n_features
        )
        X = make_csr(indptr, indices.copy(), data.copy(), (len(y), self.n_features))
        return X, y.copy(), bad, 0


def read_criteo(path, chunk_size=100_000, n_bits=20, skip_bad_lines=False, **kwargs):
    """Stream a Criteo TSV file as CSR chunks: ``CriteoReader(path, ...)``.

    Returns
    -------
    reader : CriteoReader
        Iterate it for ``(X, y)`` chunks, or call ``.read()`` for one matrix.
    """
    return CriteoReader(
        path, n_bits=n_bits, chunk_size=chunk_size, skip_bad_lines=skip_bad_lines, **kwargs
    )


def read_avazu(path, chunk_size=100_000, n_bits=20, skip_bad_lines=False, **kwargs):
    """Stream an Avazu CSV file as CSR chunks: ``AvazuReader(path, ...)``.

    Returns
    -------
    reader : AvazuReader
    """
    return AvazuReader(
        path, n_bits=n_bits, chunk_size=chunk_size, skip_bad_lines=skip_bad_lines, **kwargs
    )


def read_libsvm(path, n_features=None, zero_based="auto", chunk_size=100_000, **kwargs):
    """Stream a LIBSVM file as CSR chunks: ``LibSVMReader(path, ...)``.

    Returns
    -------
    reader : LibSVMReader
    """
    return LibSVMReader(path, n_features, zero_based, chunk_size=chunk_size, **kwargs)


def read_csv(path, label, features=None, sep=",", **kwargs):
    """Stream a delimited file with a header as hashed CSR chunks: ``CSVReader(path, ...)``.

    Returns
    -------
    reader : CSVReader
    """
    return CSVReader(path, label, features, sep=sep, **kwargs)
