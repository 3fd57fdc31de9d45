"""MovieLens ratings: readers, official splits, implicit feedback and a cached downloader.

Supported files (the format is detected from the first line):

* MovieLens 100K ``u.data``, ``u1.base`` ... ``u5.test``, ``ua/ub.base/.test``: tab
  separated ``user item rating timestamp``, 1-based ids.
* MovieLens 1M / 10M ``ratings.dat``: ``user::item::rating::timestamp``.
* MovieLens 20M / 25M / latest(-small) ``ratings.csv``: header
  ``userId,movieId,rating,timestamp``.

Files are parsed by pyarrow's multithreaded CSV reader (no Python loop per line).

The data are owned by GroupLens (research use, no redistribution; cite Harper & Konstan,
"The MovieLens Datasets: History and Context", ACM TiiS 2015). Nothing of it ships with
sparseopt: :func:`fetch_movielens` downloads the official archive.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import scipy.sparse as sp

from . import _cache
from ._download import ChecksumError, download, sha256_of

__all__ = [
    "MOVIELENS_ARCHIVES",
    "ChecksumError",
    "fetch_movielens",
    "implicit_positives",
    "load_movielens",
    "load_movielens_clicks",
    "load_movielens_split",
    "read_movielens_ratings",
]


@dataclass(frozen=True)
class _Archive:
    url: str
    size: int
    sha256: str
    ratings: str  # the ratings file inside the extracted folder


_BASE = "https://files.grouplens.org/datasets/movielens/"

#: Official MovieLens archives: URL, size in bytes, SHA-256 and ratings file name.
#: ``ml-latest`` (the full one) is left out: GroupLens republishes it, so it has no
#: stable checksum. ``ml-latest-small`` is the September 2018 release.
MOVIELENS_ARCHIVES: dict[str, _Archive] = {
    "ml-100k": _Archive(
        _BASE + "ml-100k.zip",
        4924029,
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        "u.data",
    ),
    "ml-1m": _Archive(
        _BASE + "ml-1m.zip",
        5917549,
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        "ratings.dat",
    ),
    "ml-latest-small": _Archive(
        _BASE + "ml-latest-small.zip",
        978202,
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        "ratings.csv",
    ),
    "ml-20m": _Archive(
        _BASE + "ml-20m.zip",
        198702078,
        "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
        "ratings.csv",
    ),
    "ml-25m": _Archive(
        _BASE + "ml-25m.zip",
        261978986,
        "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
        "ratings.csv",
    ),
}

_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        first = f.readline()
    if not first.strip():
        raise ValueError(f"{path}: empty file, expected MovieLens ratings")
    if b"::" in first:
        return "dat"
    if b"\t" in first:
        return "tab"
    if b"," in first:
        return "csv"
    raise ValueError(
        f"{path}: unrecognised format (first line {first[:80]!r}); expected tab-separated "
        "u.data, '::'-separated ratings.dat or comma-separated ratings.csv"
    )


def read_movielens_ratings(path) -> dict[str, np.ndarray]:
    """Read one MovieLens ratings file into columns, ids as in the file.

    Parameters
    ----------
    path : str or path-like
        ``u.data`` / ``uN.base`` / ``uN.test`` (tab separated), ``ratings.dat``
        (``::`` separated) or ``ratings.csv`` (with header); detected from the first line.

    Returns
    -------
    dict
        ``"user"`` (int64), ``"item"`` (int64), ``"rating"`` (float32) and
        ``"timestamp"`` (int64) arrays of equal length, in file order, original ids.

    Raises
    ------
    ValueError
        If the file is empty, of an unknown format, or has malformed rows.
    """
    path = Path(path)
    kind = _sniff(path)
    types = {"user": pa.int64(), "item": pa.int64(), "rating": pa.float32()}
    types["timestamp"] = pa.int64()
    if kind == "csv":
        names = ["user", "item", "rating", "timestamp"]
        read = pacsv.ReadOptions(column_names=names, skip_rows=1)
        parse = pacsv.ParseOptions(delimiter=",")
        include = names
    elif kind == "tab":
        names = ["user", "item", "rating", "timestamp"]
        read = pacsv.ReadOptions(column_names=names)
        parse = pacsv.ParseOptions(delimiter="\t")
        include = names
    else:  # "a::b::c::d" split on ':' gives a, '', b, '', c, '', d
        names = ["user", "_1", "item", "_2", "rating", "_3", "timestamp"]
        read = pacsv.ReadOptions(column_names=names)
        parse = pacsv.ParseOptions(delimiter=":")
        include = ["user", "item", "rating", "timestamp"]
    convert = pacsv.ConvertOptions(column_types=types, include_columns=include)
    try:
        table = pacsv.read_csv(
            path, read_options=read, parse_options=parse, convert_options=convert
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(f"{path}: malformed MovieLens ratings: {e}") from e
    out = {}
    for name in ("user", "item", "rating", "timestamp"):
        col = table.column(name)
        if col.null_count:
            raise ValueError(f"{path}: missing values in column {name!r}")
        out[name] = col.to_numpy()
    return out


def _read_info(directory: Path) -> tuple[int, int] | None:
    """(n_users, n_items) from a MovieLens 100K ``u.info``, or None when absent."""
    info = directory / "u.info"
    if not info.is_file():
        return None
    counts = {}
    for line in info.read_text(encoding="latin-1").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            counts[parts[1]] = int(parts[0])
    if "users" in counts and "items" in counts:
        return counts["users"], counts["items"]
    return None


def _resolve_ratings_file(path_or_name, data_home) -> Path:
    if isinstance(path_or_name, str) and path_or_name in MOVIELENS_ARCHIVES:
        p = Path(path_or_name)
        if not p.exists():  # a dataset name, not a local folder of that name
            folder = fetch_movielens(path_or_name, data_home=data_home)
            return folder / MOVIELENS_ARCHIVES[path_or_name].ratings
    p = Path(path_or_name).expanduser()
    if p.is_dir():
        for name in ("u.data", "ratings.dat", "ratings.csv"):
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"{p}: no u.data, ratings.dat or ratings.csv in this folder")
    if not p.is_file():
        raise FileNotFoundError(
            f"{p}: no such file or folder (known dataset names: {sorted(MOVIELENS_ARCHIVES)})"
        )
    return p


def _to_csr(users, items, ratings, shape, dtype, source) -> sp.csr_matrix:
    n_users, n_items = shape
    if users.size:
        if users.min() < 0 or items.min() < 0:
            raise ValueError(f"{source}: ids below the first id")
        if users.max() >= n_users or items.max() >= n_items:
            raise ValueError(
                f"{source}: ids up to ({users.max() + 1}, {items.max() + 1}) do not fit "
                f"shape={shape}"
            )
    m = sp.coo_matrix((ratings.astype(dtype), (users, items)), shape=shape).tocsr()
    # tocsr() sums duplicates; a repeated (user, item) pair would silently add ratings.
    if m.nnz != users.size:
        raise ValueError(f"{source}: {users.size - m.nnz} repeated (user, item) pairs")
    m.sort_indices()
    return m


def load_movielens(
    path_or_name,
    *,
    shape: tuple[int, int] | None = None,
    ids: str = "auto",
    dtype=np.float32,
    return_ids: bool = False,
    data_home=None,
):
    """Load MovieLens ratings as a users x items CSR matrix.

    Parameters
    ----------
    path_or_name : str or path-like
        A ratings file (``u.data``, ``u1.base``, ``ua.test``, ``ratings.dat``,
        ``ratings.csv``), a folder holding one of ``u.data`` / ``ratings.dat`` /
        ``ratings.csv``, or a dataset name from :data:`MOVIELENS_ARCHIVES` (``"ml-100k"``,
        ``"ml-1m"``, ``"ml-latest-small"``, ...), which is fetched with
        :func:`fetch_movielens` unless a local folder of that name exists.
    shape : (int, int), optional
        Matrix shape. Default: for ``ids="offset"``, the counts in ``u.info`` beside the
        file (MovieLens 100K: 943 x 1682), else the largest ids; for ``ids="compact"``,
        the numbers of distinct users and items. Must hold every id.
    ids : {"auto", "offset", "compact"}, default "auto"
        ``"offset"``: row = user id - 1, column = item id - 1, so files of one dataset
        (``u1.base`` and ``u1.test``) share indices. ``"compact"``: rows and columns
        number the distinct ids in increasing order (for ``ratings.csv``, whose movie ids
        run to ~200,000 with gaps). ``"auto"``: compact for ``ratings.csv``, offset
        otherwise.
    dtype : numpy dtype, default float32
        Dtype of the ratings.
    return_ids : bool, default False
        Also return the original user and item id of each row and column.
    data_home : str or path-like, optional
        Cache folder for a dataset name; see :func:`sparseopt.datasets.data_home`.

    Returns
    -------
    ratings : scipy.sparse.csr_matrix of shape (n_users, n_items)
        Explicit ratings, sorted indices; unrated pairs are not stored.
    user_ids, item_ids : ndarray of int64
        Only with ``return_ids=True``: original ids of the rows and columns (for
        ``"offset"``, ``arange(1, n + 1)``).

    Raises
    ------
    FileNotFoundError
        If nothing is found at ``path_or_name``.
    ValueError
        On a malformed file, repeated (user, item) pairs, or ids that do not fit ``shape``.
    """
    path = _resolve_ratings_file(path_or_name, data_home)
    cols = read_movielens_ratings(path)
    if ids == "auto":
        ids = "compact" if _sniff(path) == "csv" else "offset"
    if ids == "offset":
        users, items = cols["user"] - 1, cols["item"] - 1
        if shape is None:
            shape = _read_info(path.parent)
        if shape is None:
            n_u = int(users.max()) + 1 if users.size else 0
            n_i = int(items.max()) + 1 if items.size else 0
            shape = (n_u, n_i)
        user_ids = np.arange(1, shape[0] + 1, dtype=np.int64)
        item_ids = np.arange(1, shape[1] + 1, dtype=np.int64)
    elif ids == "compact":
        user_ids, users = np.unique(cols["user"], return_inverse=True)
        item_ids, items = np.unique(cols["item"], return_inverse=True)
        if shape is None:
            shape = (user_ids.size, item_ids.size)
    else:
        raise ValueError(f"ids must be 'auto', 'offset' or 'compact', got {ids!r}")
    shape = (int(shape[0]), int(shape[1]))
    m = _to_csr(users, items, cols["rating"], shape, dtype, path)
    if return_ids:
        return m, user_ids, item_ids
    return m


def load_movielens_split(
    root,
    split: str = "u1",
    *,
    shape: tuple[int, int] | None = None,
    dtype=np.float32,
    data_home=None,
):
    """Load an official MovieLens 100K train/test split.

    Parameters
    ----------
    root : str or path-like
        The ``ml-100k`` folder, or the name ``"ml-100k"`` (fetched with
        :func:`fetch_movielens` when no such local folder exists).
    split : {"u1", "u2", "u3", "u4", "u5", "ua", "ub"}, default "u1"
        ``u1``..``u5``: the five disjoint 80/20 folds; ``ua``/``ub``: ten ratings per user
        held out.
    shape : (int, int), optional
        Default: from ``u.info`` (943 x 1682), else the largest ids over both files.
    dtype : numpy dtype, default float32
    data_home : str or path-like, optional
        Cache folder for a dataset name.

    Returns
    -------
    train, test : scipy.sparse.csr_matrix
        Ratings from ``<split>.base`` and ``<split>.test``, same shape, indices = ids - 1.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    root_path = Path(root).expanduser()
    if not root_path.is_dir() and str(root) == "ml-100k":
        root_path = fetch_movielens("ml-100k", data_home=data_home)
    base, test = root_path / f"{split}.base", root_path / f"{split}.test"
    for p in (base, test):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: not found (expected a MovieLens 100K folder)")
    if shape is None:
        shape = _read_info(root_path)
    if shape is None:
        cols = [read_movielens_ratings(p) for p in (base, test)]
        shape = (
            int(max(c["user"].max(initial=0) for c in cols)),
            int(max(c["item"].max(initial=0) for c in cols)),
        )
    tr = load_movielens(base, shape=shape, ids="offset", dtype=dtype)
    te = load_movielens(test, shape=shape, ids="offset", dtype=dtype)
    return tr, te


def implicit_positives(ratings, threshold: float = 4.0, dtype=np.float32) -> sp.csr_matrix:
    """Binarise explicit ratings: 1 where ``rating >= threshold``, nothing stored elsewhere.

    Parameters
    ----------
    ratings : scipy sparse matrix of shape (n_users, n_items)
        Explicit ratings (as returned by :func:`load_movielens`).
    threshold : float, default 4.0
        Smallest rating that counts as a positive (MovieLens convention: 4 of 5 stars).
    dtype : numpy dtype, default float32

    Returns
    -------
    scipy.sparse.csr_matrix
        Same shape, ones at the positives, sorted indices, no explicit zeros.
    """
    if not sp.issparse(ratings):
        raise ValueError(f"ratings must be a scipy sparse matrix, got {type(ratings).__name__}")
    m = sp.csr_matrix(ratings, dtype=np.float64, copy=True)
    m.sum_duplicates()
    m.data = (m.data >= threshold).astype(dtype)
    m.eliminate_zeros()
    return m


# --------------------------------------------------------------------------------------
# A click task with side features
# --------------------------------------------------------------------------------------

#: Fields of :func:`load_movielens_clicks`, in the order of their column slices.
CLICK_FIELDS = ("user", "item", "age", "gender", "occupation", "zip", "genre", "decade")

# age buckets of MovieLens 1M's users file (under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+)
_AGE_EDGES = np.array([18, 25, 35, 45, 50, 56])
_N_GENRES = 19  # u.item's genre flags: unknown, Action, ..., Western


@dataclass(frozen=True)
class MovieLensClicks:
    """A MovieLens 100K click task (see :func:`load_movielens_clicks`).

    Attributes
    ----------
    X_train, X_test : scipy.sparse.csr_matrix of float32
        One row per rating, in a random order, one column per (field, value).
    y_train, y_test : ndarray of float64
        1 where the rating is at least ``threshold``, else 0.
    fields : ndarray of int32, shape (n_features,)
        Field of each column, an index into ``field_names`` (for ``FFMClassifier(fields=...)``).
    field_names : tuple of str
        :data:`CLICK_FIELDS`.
    """

    X_train: sp.csr_matrix
    y_train: np.ndarray
    X_test: sp.csr_matrix
    y_test: np.ndarray
    fields: np.ndarray
    field_names: tuple


def _read_table(path: Path, n_columns: int) -> list[list[str]]:
    """The ``|``-separated lines of ``path`` (latin-1), each checked to hold ``n_columns``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected a MovieLens 100K folder)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != n_columns:
            raise ValueError(
                f"{path}, line {number}: {len(parts)} '|'-separated values, expected "
                f"{n_columns}; is this MovieLens 100K's {path.name}?"
            )
        rows.append(parts)
    if not rows:
        raise ValueError(f"{path}: empty file")
    return rows


def _ids(path: Path, rows: list[list[str]]) -> np.ndarray:
    """The first column of ``rows`` as ids 1, 2, ..., n in order (as u.user and u.item have
    them), else ValueError."""
    try:
        ids = np.array([int(r[0]) for r in rows])
    except ValueError as e:
        raise ValueError(f"{path}: an id that is not an integer ({e})") from e
    if not np.array_equal(ids, np.arange(1, ids.size + 1)):
        raise ValueError(f"{path}: ids must run 1, 2, ..., n in order")
    return ids


def _codes(values: list[str]) -> np.ndarray:
    """Each value's index among the sorted distinct values."""
    return np.unique(np.asarray(values), return_inverse=True)[1].reshape(-1)


def _user_features(path: Path):
    """Per user (0-based): (age bucket, gender, occupation, zip prefix) codes, and their
    numbers of values."""
    rows = _read_table(path, 5)
    _ids(path, rows)
    try:
        ages = np.array([int(r[1]) for r in rows])
    except ValueError as e:
        raise ValueError(f"{path}: an age that is not an integer ({e})") from e
    age = np.searchsorted(_AGE_EDGES, ages, side="right")
    gender = _codes([r[2] for r in rows])
    occupation = _codes([r[3] for r in rows])
    # the first two digits of a US zip code (a region); other codes (Canada's) as one value
    zips = [r[4][:2] if r[4][:2].isdigit() and len(r[4][:2]) == 2 else "other" for r in rows]
    zip_prefix = _codes(zips)
    columns = (age, gender, occupation, zip_prefix)
    sizes = (_AGE_EDGES.size + 1, *(int(c.max()) + 1 for c in columns[1:]))
    return columns, sizes


def _item_features(path: Path):
    """Per item (0-based): its genre flags (n_items, 19) and release decade code (-1 when
    the date is missing), and the number of decades."""
    rows = _read_table(path, 5 + _N_GENRES)
    _ids(path, rows)
    try:
        genres = np.array([[int(g) for g in r[5:]] for r in rows])
    except ValueError as e:
        raise ValueError(f"{path}: a genre flag that is not 0 or 1 ({e})") from e
    if not np.isin(genres, (0, 1)).all():
        raise ValueError(f"{path}: genre flags must be 0 or 1")
    years = np.array([int(r[2][-4:]) if r[2][-4:].isdigit() else -1 for r in rows])
    decade = np.where(years >= 0, years // 10, -1)
    known = np.unique(decade[decade >= 0])
    code = np.where(decade >= 0, np.searchsorted(known, decade), -1)
    return genres, code, known.size


def load_movielens_clicks(
    root, split: str = "u1", *, threshold: float = 4.0, random_state=0, data_home=None
):
    """MovieLens 100K as a click task with side features: one row per rating, label
    ``rating >= threshold``.

    Each row holds one-hot features of the fields :data:`CLICK_FIELDS`: the user, the item,
    the user's age bucket (MovieLens 1M's seven), gender, occupation and zip-code prefix (the
    first two digits; other codes as one value), the item's genres (multi-hot, a column per
    genre it has) and its release decade (no feature when the date is missing). Each field
    owns a contiguous slice of columns, so ``fields`` serves a field-aware FM. The rows are
    in a random order drawn from ``random_state``: the official splits are random draws of
    ratings, and the files' order (by user) or an order by time would make the last rows,
    which ``max_iter="auto"`` holds out, ratings of users the other rows barely know.

    Parameters
    ----------
    root : str or path-like
        The ``ml-100k`` folder (with ``u.user``, ``u.item`` and the split's files), or the
        name ``"ml-100k"`` (fetched with :func:`fetch_movielens` when no such local folder
        exists).
    split : {"u1", "u2", "u3", "u4", "u5", "ua", "ub"}, default "u1"
        Official split: train on ``<split>.base``, test on ``<split>.test``.
    threshold : float, default 4.0
        Smallest rating that is a click.
    random_state : int, Generator or None, default=0
        Seeds the order of the rows (``numpy.random.default_rng``).
    data_home : str or path-like, optional
        Cache folder for a dataset name.

    Returns
    -------
    MovieLensClicks
        ``X_train, y_train, X_test, y_test, fields, field_names``.

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    ValueError
        If a file is malformed, or a rating names a user or item the side files lack.

    Examples
    --------
    >>> from sparseopt.datasets import load_movielens_clicks
    >>> data = load_movielens_clicks("ml-100k", "u1")  # doctest: +SKIP
    >>> data.X_train.shape, data.y_train.mean().round(3)  # doctest: +SKIP
    ((80000, 2847), 0.553)
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    folder = Path(root).expanduser()
    if not folder.is_dir() and str(root) == "ml-100k":
        folder = fetch_movielens("ml-100k", data_home=data_home)
    users, user_sizes = _user_features(folder / "u.user")
    genres, decade, n_decades = _item_features(folder / "u.item")
    n_users, n_items = users[0].size, genres.shape[0]
    sizes = (n_users, n_items, *user_sizes, _N_GENRES, n_decades)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    fields = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)

    rng = np.random.default_rng(random_state)
    tables = (users, genres, decade, starts)
    X_train, y_train = _click_rows(folder / f"{split}.base", tables, threshold, rng)
    X_test, y_test = _click_rows(folder / f"{split}.test", tables, threshold, rng)
    return MovieLensClicks(X_train, y_train, X_test, y_test, fields, CLICK_FIELDS)


def _click_rows(path, tables, threshold, rng):
    """The rows of one ratings file of :func:`load_movielens_clicks`, shuffled by ``rng``:
    ``tables`` are the users' feature codes, the items' genre flags and decades, and the
    first column of each field."""
    users, genres, decade, starts = tables
    n_users, n_items = users[0].size, genres.shape[0]
    cols = read_movielens_ratings(path)
    order = rng.permutation(cols["user"].size)
    user, item = cols["user"][order] - 1, cols["item"][order] - 1
    if user.size and (user.min() < 0 or user.max() >= n_users):
        raise ValueError(f"{path}: user ids outside 1 .. {n_users} (u.user)")
    if item.size and (item.min() < 0 or item.max() >= n_items):
        raise ValueError(f"{path}: item ids outside 1 .. {n_items} (u.item)")
    one_hot = [user, item, *(c[user] for c in users)]
    columns = [starts[f] + codes for f, codes in enumerate(one_hot)]
    row_of = [np.arange(user.size)] * len(columns)
    g_row, g = np.nonzero(genres[item])  # multi-hot: one column per genre flag set
    columns.append(starts[6] + g)
    row_of.append(g_row)
    has_decade = decade[item] >= 0
    columns.append(starts[7] + decade[item][has_decade])
    row_of.append(np.flatnonzero(has_decade))
    rows, cols_ = np.concatenate(row_of), np.concatenate(columns)
    X = sp.csr_matrix(
        (np.ones(rows.size, np.float32), (rows, cols_)), shape=(user.size, starts[-1])
    )
    X.sort_indices()
    y = (cols["rating"][order] >= threshold).astype(np.float64)
    return X, y


# --------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------


def _extract(archive: Path, dest: Path, name: str) -> None:
    """Extract ``archive`` so that ``dest`` appears complete or not at all."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest.parent))
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)  # zipfile drops absolute paths and '..' components
        inner = tmp / name
        src = inner if inner.is_dir() else tmp
        try:
            os.replace(src, dest)
        except OSError:
            if not dest.is_dir():  # not a concurrent extraction that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_movielens(
    name: str = "ml-100k",
    data_home=None,
    *,
    download_if_missing: bool = True,
    url: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download (once) and extract an official MovieLens archive; return its folder.

    The zip is saved as ``<data_home>/movielens/<name>.zip``, its SHA-256 checked, and
    extracted to ``<data_home>/movielens/<name>/`` through a temporary folder renamed
    into place, so an interrupted run never leaves a half-extracted dataset. When that
    folder exists, it is returned without any network access.

    Parameters
    ----------
    name : str, default "ml-100k"
        A key of :data:`MOVIELENS_ARCHIVES`: ``"ml-100k"``, ``"ml-1m"``,
        ``"ml-latest-small"``, ``"ml-20m"``, ``"ml-25m"``.
    data_home : str or path-like, optional
        Cache root; default ``$SPARSEOPT_DATA`` or ``~/.cache/sparseopt``.
    download_if_missing : bool, default True
        If False, raise ``FileNotFoundError`` instead of downloading.
    url, sha256 : str, optional
        Override the official URL (a mirror, or a ``file://`` URL) and its checksum.
    timeout : float, default 60
        Socket timeout in seconds.

    Returns
    -------
    pathlib.Path
        The extracted folder (for ``ml-100k``: the one with ``u.data``, ``u1.base``, ...).

    Raises
    ------
    ChecksumError
        If the downloaded or cached zip has the wrong SHA-256 (a cached one is deleted,
        so the next call downloads it again).
    FileNotFoundError
        If the data are missing and ``download_if_missing`` is False.
    """
    if name not in MOVIELENS_ARCHIVES:
        raise ValueError(f"unknown MovieLens dataset {name!r}; known: {sorted(MOVIELENS_ARCHIVES)}")
    spec = MOVIELENS_ARCHIVES[name]
    url = url or spec.url
    sha256 = (sha256 or spec.sha256).lower()
    root = _cache.data_home(data_home) / "movielens"
    root.mkdir(exist_ok=True)
    folder, archive = root / name, root / f"{name}.zip"
    if folder.is_dir():
        return folder
    if not archive.is_file():
        if not download_if_missing:
            raise FileNotFoundError(f"{folder}: not cached and download_if_missing=False")
        download(url, archive, sha256, timeout)
    else:
        got = sha256_of(archive)
        if got != sha256:
            archive.unlink()
            raise ChecksumError(
                f"{archive}: SHA-256 {got} does not match the expected {sha256}; "
                "the file was deleted, call again to download it anew"
            )
    _extract(archive, folder, name)
    return folder
