"""Where downloaded files and parsed-chunk caches live, and the chunk cache itself."""

import hashlib
import json
import os
import re
import stat
import sys
import threading
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.sparse as sp

try:
    import fcntl
except ImportError:  # not POSIX: chunk sets are not locked
    fcntl = None

# bump when the parsed representation (hash, transforms, file layout) changes; 2: chunk sets
# carry a marker file (the sets of version 1, without one, are no longer counted as caches)
CACHE_VERSION = 2
# the files of a chunk set: what ChunkCache writes, and all that clear_chunk_sets deletes
MARKER = ".sparseopt-chunk-set"  # written first: the folder is a chunk set of sparseopt
_LOCK = ".lock"  # flock: shared while a pass reads or writes, exclusive to clear
_USER = re.compile(r"\.in-use-(\d+)-\d+")  # a hold of the set: pid, number; holds the command
_CHUNK = re.compile(r"chunk_\d{5,}\.npz")
_MANIFEST = "manifest.json"
_OLDER_SET = re.compile(r".+-[0-9a-f]{20}")  # a set's folder name: source, hash of the key
_TEMPORARY = re.compile(r"\..+\.\d+\.tmp")  # atomic_write's temporary files
_MAX_MANIFEST_BYTES = 1 << 24
_MAX_BAD_LINES_KEPT = 1000  # the line numbers of bad lines a reader keeps (and a manifest)
_held = 0  # sets held by this process, to name each hold's file
# the sets this process holds: folder -> [lock file, in-use file, number of holds], so that a
# run's hold and its passes' share one lock (two would conflict with each other)
_HOLDS = {}
_HOLDS_LOCK = threading.Lock()


def data_home(data_home=None):
    """The folder for downloads and caches, created if needed.

    Parameters
    ----------
    data_home : str or path-like, default=None
        None: ``$SPARSEOPT_DATA`` if set, else ``~/.cache/sparseopt``.

    Returns
    -------
    path : pathlib.Path
    """
    path = default_data_home() if data_home is None else Path(data_home).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_data_home():
    """``$SPARSEOPT_DATA`` if set, else ``~/.cache/sparseopt``; not created.

    Returns
    -------
    path : pathlib.Path
    """
    return Path(
        os.environ.get("SPARSEOPT_DATA") or Path.home() / ".cache" / "sparseopt"
    ).expanduser()


def atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place,
    so a reader never sees a half-written file (os.replace is atomic on one file system)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_chunk(path, X, y, *weights):
    """Save a chunk ``(X, y)`` or ``(X, y, w)`` (sample weights of ``read_csv``)."""
    extra = {"w": weights[0]} if weights else {}
    atomic_write(
        path,
        lambda f: np.savez(
            f,
            indptr=X.indptr,
            indices=X.indices,
            data=X.data,
            y=y,
            shape=np.array(X.shape),
            **extra,
        ),
    )


def _load_chunk(path, n_columns):
    """A chunk saved by :func:`_save_chunk`, checked as untrusted input (a chunk reaches the
    kernels, which do not check bounds): ValueError saying what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        # not an npz, truncated, object arrays...
        raise ValueError(f"unreadable ({type(exc).__name__}: {exc})") from None
    weights = arrays.pop("w", None)
    if sorted(arrays) != ["data", "indices", "indptr", "shape", "y"]:
        raise ValueError(f"arrays {sorted(arrays)}")
    shape, y = arrays["shape"], arrays["y"]
    indptr, indices, data = arrays["indptr"], arrays["indices"], arrays["data"]
    if shape.shape != (2,) or shape.dtype.kind not in "iu" or shape[1] != n_columns:
        raise ValueError(f"shape {shape.tolist()} is not (rows, {n_columns})")
    n_rows = int(shape[0])
    if (
        data.dtype != np.float32
        or y.dtype != np.float32
        or indices.dtype not in (np.int32, np.int64)
        or indptr.dtype not in (np.int32, np.int64)
        or data.ndim != 1
        or y.shape != (n_rows,)
        or indptr.shape != (n_rows + 1,)
    ):
        raise ValueError("arrays of the wrong type or length")
    X = sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_columns), copy=False)
    from ..estimators._safety import all_finite, check_sparse_structure

    check_sparse_structure(X)
    if X.nnz != indices.size or not all_finite(data, y):
        raise ValueError("unused or non-finite entries")
    # canonical: columns strictly increasing within each row (duplicates would be summed)
    steps = np.diff(indices)  # no overflow: the indices are checked to lie in 0 .. n_columns
    row_starts = indptr[1:-1][(indptr[1:-1] > 0) & (indptr[1:-1] < indices.size)] - 1
    steps[row_starts] = 1
    if steps.size and steps.min() <= 0:
        raise ValueError("columns not sorted and distinct within a row")
    X.has_canonical_format = True
    if weights is None:
        return X, y
    if weights.dtype != np.float32 or weights.shape != (n_rows,) or not np.all(weights >= 0):
        raise ValueError("sample weights of the wrong type or length, or negative")
    if not all_finite(weights):
        raise ValueError("non-finite sample weights")
    return X, y, weights


def _open_lock(path):
    """The set's lock file, opened (made if needed) without following a link: a link put
    there leads nowhere else."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    return os.fdopen(fd, "a+b")


def _command() -> str:
    """This process's command line, to name a run holding a chunk set."""
    first = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if first in ("__main__.py", "sparseopt"):
        first = "sparseopt"
    return " ".join([first, *sys.argv[1:]])[:500]


def _small_file(path, most: int) -> bool:
    """Whether ``path`` is a regular file (not a link, a FIFO that would block a read...) of
    at most ``most`` bytes."""
    st = path.lstat()
    return stat.S_ISREG(st.st_mode) and st.st_size <= most


def _is_marker(path) -> bool:
    """Whether ``path`` is the marker that ChunkCache writes into each chunk set."""
    try:
        if not _small_file(path, 1000):
            return False
        return json.loads(path.read_text()).get("made_by") == "sparseopt"
    except (OSError, ValueError, AttributeError):
        return False


class ChunkCache:
    """A folder of parsed chunks (``chunk_00000.npz`` ...) plus a ``manifest.json`` written
    last, keyed by the reader's parameters (folder name) and the source's size and mtime
    (manifest), so that a cache of another file version or other hashing is never used.

    The folder is a chunk set only with the marker file written when it is made
    (:data:`MARKER`): a folder that lacks it is never read, written into nor cleared. A pass,
    and a run around its passes (:meth:`hold`), holds the set (a shared ``flock`` on its
    ``.lock``, and a ``.in-use-<pid>-<n>`` file naming the command) so that
    :func:`clear_chunk_sets` skips it; the kernel drops the lock of a process that dies, so a
    killed run blocks nothing. A pass that would rewrite a set that
    another process holds, or meets a set being cleared, parses the file without caching.
    Manifests and chunks are read as untrusted files: a manifest that does not check out is a
    cache to rewrite, and a damaged chunk makes the rest of the pass parse the file.
    """

    def __init__(self, root, source, params):
        source = Path(source).resolve()
        ident = json.dumps(
            {"version": CACHE_VERSION, "source": str(source), "params": params}, sort_keys=True
        )
        key = hashlib.sha256(ident.encode()).hexdigest()[:20]
        self.dir = Path(root) / f"{source.name}-{key}"
        self.source = source
        self.manifest = self.dir / _MANIFEST

    def _source_stamp(self):
        st = os.stat(self.source)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def load_manifest(self):
        """The manifest if the cache is complete, well formed and matches the source as it
        is now; else None."""
        try:
            if not _small_file(self.manifest, _MAX_MANIFEST_BYTES):
                return None
            manifest = json.loads(self.manifest.read_text())
        except (OSError, ValueError):
            return None
        if not _valid_manifest(manifest) or manifest["source"] != self._source_stamp():
            return None
        if not all((self.dir / name).is_file() for name in manifest["chunks"]):
            return None
        return manifest

    def chunks(self, parse, reader, n_columns):
        """Yield the chunks of ``parse()``: from the set when it is valid (``reader.stats``
        then set from its manifest), else parsed and saved into it, else (the set is held or
        being cleared by another process) parsed alone."""
        with self.hold() as held:
            if not held:
                yield from parse()
                return
            manifest = self.load_manifest()
            if manifest is None:
                if self._exclusive(held):
                    try:
                        yield from self.write(parse(), lambda: reader.stats)
                    finally:
                        self._shared(held)
                else:
                    yield from parse()
                return
            stats = manifest["stats"]
            # the rows are counted as they are loaded, as a parse counts them
            reader.stats = dict(stats, n_rows=0, bad_lines=list(stats["bad_lines"]))
            yield from self.read(manifest, parse, n_columns, reader)

    @contextmanager
    def hold(self):
        """Hold the set, shared, for the block (made if needed): a pass holds it, and a run
        holds it for all its epochs (the holds of one process share one lock). Yields the
        lock's file, or None where the set cannot be held (being cleared or rewritten by
        another process, or a folder not made here)."""
        key = str(self.dir)
        with _HOLDS_LOCK:
            entry = _HOLDS.get(key)
            if entry is None:
                entry = self._take()
                if entry is None:
                    lock = None
                else:
                    _HOLDS[key] = entry
            if entry is not None:
                entry[2] += 1
                lock = entry[0]
        try:
            yield lock
        finally:
            if entry is not None:
                with _HOLDS_LOCK:
                    entry[2] -= 1
                    if entry[2] == 0:
                        del _HOLDS[key]
                        if entry[1] is not None:
                            entry[1].unlink(missing_ok=True)
                        if fcntl is not None:
                            entry[0].close()

    def _take(self):
        """``[lock file, in-use file, 0]``: the set held shared by this process, or None."""
        global _held
        if fcntl is None:
            return ["unlocked", None, 0] if self._make() else None
        lock = None
        for _ in range(3):  # a set cleared between opening its lock and taking it: again
            if not self._make():
                break
            try:
                lock = _open_lock(self.dir / _LOCK)
            except OSError:
                lock = None
                continue
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:  # being cleared, or rewritten by another process
                lock.close()
                lock = None
                break
            try:
                same = os.stat(self.dir / _LOCK).st_ino == os.fstat(lock.fileno()).st_ino
            except OSError:
                same = False
            if same:
                break
            lock.close()
            lock = None
        if lock is None:
            return None
        _held += 1
        user = self.dir / f".in-use-{os.getpid()}-{_held}"
        try:
            user.write_text(_command())
        except OSError:
            user = None  # it only names the run in clear's report
        return [lock, user, 0]

    def _exclusive(self, lock) -> bool:
        """Turn this process's shared hold into the exclusive one that rewriting needs, if no
        other process holds the set; else keep the shared one (flock converts a lock by
        dropping it first)."""
        if fcntl is None:
            return True
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._shared(lock)
            return False
        return True

    def _shared(self, lock) -> None:
        """Back to a shared hold (after rewriting), unless a clear took the set meanwhile."""
        if fcntl is not None:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                pass

    def _make(self) -> bool:
        """Make the set's folder and marker if needed; False if the folder exists without
        the marker (not a set of this package: left alone)."""
        marker = self.dir / MARKER
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if _is_marker(marker):
                return True
            if any(self.dir.iterdir()):
                return False
            text = json.dumps({"made_by": "sparseopt", "cache_version": CACHE_VERSION})
            atomic_write(marker, lambda f: f.write(text.encode()))
        except OSError as exc:  # a read-only or full cache folder: the run goes on
            warnings.warn(
                f"the chunk cache {self.dir} cannot be made ({exc}): epochs parse the file",
                stacklevel=2,
            )
            return False
        return True

    def read(self, manifest, parse, n_columns, reader):
        """Yield the chunks the manifest names, checked, counting their rows into
        ``reader.stats``; from a damaged one on, the chunks of ``parse()`` (the same rows: a
        chunk is the same whether parsed or loaded; the parse counts them all again)."""
        for i, name in enumerate(manifest["chunks"]):
            try:
                chunk = _load_chunk(self.dir / name, n_columns)
            except ValueError as exc:
                warnings.warn(
                    f"the chunk cache {self.dir} is damaged ({name}: {exc}): the file is parsed "
                    "instead, and the cache rewritten on the next pass",
                    stacklevel=2,
                )
                self.manifest.unlink(missing_ok=True)
                for j, chunk in enumerate(parse()):
                    if j >= i:
                        yield chunk
                return
            reader.stats["n_rows"] += chunk[0].shape[0]
            yield chunk

    def write(self, chunks, get_stats):
        """Yield ``chunks`` while saving them; the manifest (with ``get_stats()``, the
        reader's statistics of the pass) is written once all are saved."""
        stamp = self._source_stamp()
        self.manifest.unlink(missing_ok=True)
        for old in self.dir.iterdir():
            if _CHUNK.fullmatch(old.name) and old.is_file():
                old.unlink()
        names, saving = [], True
        for i, chunk in enumerate(chunks):
            name = f"chunk_{i:05d}.npz"
            try:
                if saving:
                    _save_chunk(self.dir / name, *chunk)
            except OSError as exc:  # a full disk, a folder in the way: the run goes on
                saving = False
                warnings.warn(
                    f"the chunk cache {self.dir} cannot be written ({exc}): this pass is not "
                    "cached",
                    stacklevel=2,
                )
            names.append(name)
            yield chunk
        if not saving or self._source_stamp() != stamp:
            return  # the file changed while it was read: keep no cache of it
        manifest = {"source": stamp, "chunks": names, "stats": get_stats()}
        atomic_write(self.manifest, lambda f: f.write(json.dumps(manifest).encode()))


def _count(value) -> bool:
    return type(value) is int and value >= 0


def _valid_manifest(m) -> bool:
    """Whether ``m`` (a manifest as read) has the form that :meth:`ChunkCache.write` gives."""
    if not isinstance(m, dict) or set(m) != {"source", "chunks", "stats"}:
        return False
    source, chunks, stats = m["source"], m["chunks"], m["stats"]
    return (
        isinstance(source, dict)
        and set(source) == {"size", "mtime_ns"}
        and all(type(v) is int for v in source.values())
        and isinstance(chunks, list)
        and chunks == [f"chunk_{i:05d}.npz" for i in range(len(chunks))]
        and isinstance(stats, dict)
        and set(stats) == {"n_rows", "n_bad_lines", "bad_lines", "n_dropped"}
        and _count(stats["n_rows"])
        and _count(stats["n_dropped"])
        and _count(stats["n_bad_lines"])
        and isinstance(stats["bad_lines"], list)
        and all(_count(v) and v > 0 for v in stats["bad_lines"])
        # the readers keep the first _MAX_BAD_LINES_KEPT line numbers, in increasing order
        and len(stats["bad_lines"]) == min(stats["n_bad_lines"], _MAX_BAD_LINES_KEPT)
        and stats["bad_lines"] == sorted(set(stats["bad_lines"]))
    )


def _own_file(path) -> bool:
    """Whether ``path``, in a chunk set, is one of the files that the package writes there."""
    name = path.name
    return (
        name in (MARKER, _LOCK, _MANIFEST)
        or bool(_CHUNK.fullmatch(name) or _USER.fullmatch(name) or _TEMPORARY.fullmatch(name))
    ) and (path.is_file() or path.is_symlink())


def _holders(folder) -> list[str]:
    """The live processes that hold a set, as ``process <pid>: <command>``."""
    names = []
    for path in sorted(folder.iterdir()):
        match = _USER.fullmatch(path.name)
        if not match:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue  # its holder died (kill -9): a stale name
        except (PermissionError, OverflowError):
            pass
        try:
            command = path.read_text(errors="replace")[:200] if _small_file(path, 1000) else "?"
        except OSError:
            command = "?"
        names.append(f"process {pid}: {command}")
    return names or ["a process that is starting"]


def chunk_sets(root):
    """The chunk caches (folders written by :class:`ChunkCache`) under ``root``.

    A folder counts only if it holds the marker file that :class:`ChunkCache` writes into
    each set, so that a ``root`` given by mistake (a home folder, with its empty folders or
    its own ``manifest.json``) is never taken for a cache.

    Parameters
    ----------
    root : str or path-like
        The cache folder (the readers' ``cache_dir``; default ``data_home() / "chunks"``).

    Returns
    -------
    sets : list of dict
        One per cache, by name: ``path``, ``bytes`` (the total size of its files) and
        ``complete`` (a manifest was written: the pass that made it went to the end of the
        file).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    sets = []
    for folder in sorted(root.iterdir()):
        if folder.is_symlink() or not folder.is_dir() or not _is_marker(folder / MARKER):
            continue
        files = [f for f in folder.iterdir() if _own_file(f)]
        sets.append(
            {
                "path": folder,
                "bytes": sum(f.lstat().st_size for f in files),
                "complete": (folder / _MANIFEST).is_file(),
            }
        )
    return sets


def older_chunk_sets(root) -> list[str]:
    """The names of the folders under ``root`` that look like chunk sets of a sparseopt
    that wrote no marker (a ``<file>-<20 hex digits>`` folder with chunks or a manifest):
    never counted nor cleared as sets, only named, for their owner to delete.

    Parameters
    ----------
    root : str or path-like

    Returns
    -------
    names : list of str
    """
    root = Path(root)
    if not root.is_dir():
        return []
    return [
        folder.name
        for folder in sorted(root.iterdir())
        if _OLDER_SET.fullmatch(folder.name)
        and folder.is_dir()
        and not folder.is_symlink()
        and not (folder / MARKER).exists()
        and any(_CHUNK.fullmatch(f.name) or f.name == _MANIFEST for f in folder.iterdir())
    ]


def clear_chunk_sets(root):
    """Delete the chunk caches under ``root`` (see :func:`chunk_sets`) that no process
    holds; the files that the package did not write stay, with their folder.

    Parameters
    ----------
    root : str or path-like

    Returns
    -------
    removed : list of dict
        The caches deleted, as :func:`chunk_sets` lists them.
    in_use : list of dict
        The caches left because a run reads or writes them: as :func:`chunk_sets` lists them,
        with ``holders``, the processes that hold each (``process <pid>: <command>``).
    """
    removed, in_use = [], []
    for entry in chunk_sets(root):
        folder = entry["path"]
        try:
            if (folder / _LOCK).is_symlink():  # not ours to follow: no pass can hold it
                (folder / _LOCK).unlink()
            lock = _open_lock(folder / _LOCK) if fcntl is not None else None
        except OSError:
            continue
        try:
            if lock is not None:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    in_use.append(dict(entry, holders=_holders(folder)))
                    continue
            # the manifest first (a reader that meets a half-deleted set parses again), the
            # marker last (until then the folder is still known as a set)
            (folder / _MANIFEST).unlink(missing_ok=True)
            for f in folder.iterdir():
                if _own_file(f) and f.name != MARKER:
                    f.unlink(missing_ok=True)
            (folder / MARKER).unlink(missing_ok=True)
            if not any(folder.iterdir()):
                folder.rmdir()
            removed.append(entry)
        finally:
            if lock is not None:
                lock.close()
    return removed, in_use
