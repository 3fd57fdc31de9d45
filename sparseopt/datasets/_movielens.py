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
