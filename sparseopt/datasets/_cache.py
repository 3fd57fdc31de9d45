"""Where downloaded files and parsed-chunk caches live, and the chunk cache itself."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

# bump when the parsed representation (hash, transforms, file layout) changes
CACHE_VERSION = 1


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


def _save_chunk(path, X, y):
    atomic_write(
        path,
        lambda f: np.savez(
            f, indptr=X.indptr, indices=X.indices, data=X.data, y=y, shape=np.array(X.shape)
        ),
    )


def _load_chunk(path):
    with np.load(path, allow_pickle=False) as z:
        X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        X.has_canonical_format = True
        return X, z["y"]


class ChunkCache:
    """A folder of parsed chunks (``chunk_00000.npz`` ...) plus a ``manifest.json`` written
    last, keyed by the reader's parameters (folder name) and the source's size and mtime
    (manifest), so that a cache of another file version or other hashing is never used."""

    def __init__(self, root, source, params):
        source = Path(source).resolve()
        ident = json.dumps(
            {"version": CACHE_VERSION, "source": str(source), "params": params}, sort_keys=True
        )
        key = hashlib.sha256(ident.encode()).hexdigest()[:20]
        self.dir = Path(root) / f"{source.name}-{key}"
        self.source = source
        self.manifest = self.dir / "manifest.json"

    def _source_stamp(self):
        st = os.stat(self.source)
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def load_manifest(self):
        """The manifest if the cache is complete and matches the source as it is now."""
        try:
            manifest = json.loads(self.manifest.read_text())
        except (OSError, ValueError):
            return None
        if manifest.get("source") != self._source_stamp():
            return None
        names = manifest.get("chunks", [])
        if not all((self.dir / name).is_file() for name in names):
            return None
        return manifest

    def read(self, manifest):
        for name in manifest["chunks"]:
            yield _load_chunk(self.dir / name)

    def write(self, chunks, get_stats):
        """Yield ``chunks`` while saving them; the manifest (with ``get_stats()``, the
        reader's statistics of the pass) is written once all are saved."""
        stamp = self._source_stamp()
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.manifest.exists():
            self.manifest.unlink()
        for old in self.dir.glob("chunk_*.npz"):
            old.unlink()
        names = []
        for i, (X, y) in enumerate(chunks):
            name = f"chunk_{i:05d}.npz"
            _save_chunk(self.dir / name, X, y)
            names.append(name)
            yield X, y
        if self._source_stamp() != stamp:
            return  # the file changed while it was read: keep no cache of it
        manifest = {"source": stamp, "chunks": names, "stats": get_stats()}
        atomic_write(self.manifest, lambda f: f.write(json.dumps(manifest).encode()))


def _is_chunk_file(path):
    # what ChunkCache writes: chunks, the manifest, and atomic_write's temporary files
    name = path.name
    return (
        (name.startswith("chunk_") and name.endswith(".npz"))
        or name == "manifest.json"
        or (name.startswith(".") and name.endswith(".tmp"))
    )


def chunk_sets(root):
    """The chunk caches (folders written by :class:`ChunkCache`) under ``root``.

    A folder counts only if it holds nothing but chunk files, so that a ``root`` given by
    mistake (a home folder) is never taken for a cache.

    Parameters
    ----------
    root : str or path-like
        The cache folder (the readers' ``cache_dir``; default ``data_home() / "chunks"``).

    Returns
    -------
    sets : list of dict
        One per cache, by name: ``path``, ``bytes`` (their total size) and ``complete``
        (a manifest was written: the pass that made it went to the end of the file).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    sets = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.is_symlink():
            continue
        files = list(folder.iterdir())
        if not all(f.is_file() and _is_chunk_file(f) for f in files):
            continue
        sets.append(
            {
                "path": folder,
                "bytes": sum(f.stat().st_size for f in files),
                "complete": (folder / "manifest.json").is_file(),
            }
        )
    return sets


def clear_chunk_sets(root):
    """Delete the chunk caches under ``root`` (see :func:`chunk_sets`); other files stay.

    Parameters
    ----------
    root : str or path-like

    Returns
    -------
    removed : list of dict
        The caches deleted, as :func:`chunk_sets` lists them.
    """
    removed = chunk_sets(root)
    for entry in removed:
        folder = entry["path"]
        # the manifest first: a reader that meets a half-deleted folder then parses again
        (folder / "manifest.json").unlink(missing_ok=True)
        for f in folder.iterdir():
            f.unlink(missing_ok=True)
        folder.rmdir()
    return removed
