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
    if data_home is None:
        data_home = os.environ.get("SPARSEOPT_DATA") or Path.home() / ".cache" / "sparseopt"
    path = Path(data_home).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


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
