"""Model files: arrays plus JSON metadata in one ``.npz``, loaded without pickle.

Layout of a file: one array per fitted array attribute, and ``__meta__``, a uint8 array holding
UTF-8 JSON with the format name and version, the estimator class, its constructor parameters
(optimizer and schedule objects as ``{"class": ..., "params": ...}``), its scalar fitted
attributes, and the SHA-256 of every array so that a damaged or tampered file is refused.
Files are written to a temporary name in the target folder and renamed into place, so a crash
never leaves a half-written model behind. Code that saves a model on a user's behalf (the
command line) can store extra JSON beside it with :func:`model_metadata` and read it back with
:func:`read_metadata`, whatever estimator's ``save`` writes the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator

FORMAT = "sparseopt-model"
VERSION = 1
_METADATA: ContextVar[dict | None] = ContextVar("sparseopt_model_metadata", default=None)


@contextmanager
def model_metadata(metadata: dict):
    """Store the JSON-serializable ``metadata`` in every model file saved inside the block."""
    json.dumps(metadata)  # fail here, not halfway through a save
    token = _METADATA.set(metadata)
    try:
        yield
    finally:
        _METADATA.reset(token)


def _encode(value):
    from .optim import Optimizer, Schedule

    if isinstance(value, Optimizer | Schedule):
        params = value.get_params(deep=False) if isinstance(value, Optimizer) else vars(value)
        return {"class": type(value).__name__, "params": {k: _encode(v) for k, v in params.items()}}
    if isinstance(value, dict):
        return {"dict": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, np.random.RandomState | np.random.Generator):
        return None  # a generator's state is not a parameter worth keeping: saved as None
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "biuf":
        return {"ndarray": value.tolist(), "dtype": value.dtype.str}  # e.g. FFM's fields
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot store a parameter of type {type(value).__name__} in a model file")


def _decode(value):
    from . import optim

    if isinstance(value, dict) and "class" in value:
        cls = getattr(optim, value["class"], None)
        if not isinstance(cls, type):
            raise ValueError(f"model file names an unknown class {value['class']!r}")
        return cls(**{k: _decode(v) for k, v in value["params"].items()})
    if isinstance(value, dict) and "ndarray" in value:
        return np.array(value["ndarray"], dtype=np.dtype(value["dtype"]))
    if isinstance(value, dict) and "dict" in value:
        return {_decode(k): _decode(v) for k, v in value["dict"]}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def save_model(path, estimator, arrays: dict, attributes: dict) -> None:
    """Write ``estimator`` (its parameters, ``arrays`` and scalar ``attributes``) to ``path``."""
    path = Path(path)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "class": type(estimator).__name__,
        "params": {k: _encode(v) for k, v in estimator.get_params(deep=False).items()},
        "attributes": {k: _encode(v) for k, v in attributes.items()},
        "sha256": {k: _digest(v) for k, v in arrays.items()},
    }
    if _METADATA.get() is not None:
        meta["metadata"] = _METADATA.get()
    payload = dict(arrays, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_model(path):
    """Read a model file; returns (class name, params, attributes, arrays)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    damaged = f"{path} is not a readable sparseopt model file (truncated or corrupted)"
    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, UnicodeError) as exc:
        raise ValueError(damaged) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a sparseopt model file")
    if meta.get("version", 0) > VERSION:
        raise ValueError(
            f"{path} has format version {meta['version']}, newer than this sparseopt reads "
            f"({VERSION}); upgrade sparseopt"
        )
    digests = meta.get("sha256", {})
    if set(digests) != set(arrays) or any(_digest(arrays[k]) != d for k, d in digests.items()):
        raise ValueError(f"{path}: array checksums do not match; the file is corrupted or edited")
    params = {k: _decode(v) for k, v in meta["params"].items()}
    attributes = {k: _decode(v) for k, v in meta["attributes"].items()}
    return meta["class"], params, attributes, arrays


def read_metadata(path) -> dict | None:
    """The metadata stored with :func:`model_metadata` in a model file, or None."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(npz["__meta__"].tobytes().decode())
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, UnicodeError) as exc:
        raise ValueError(f"{path} is not a readable sparseopt model file") from exc
    return meta.get("metadata") if isinstance(meta, dict) else None


def load(path: str | os.PathLike) -> BaseEstimator:
    """Load a model saved with an estimator's ``save`` (no pickle involved).

    Examples
    --------
    >>> import sparseopt
    >>> model = sparseopt.load("model.npz")  # doctest: +SKIP
    """
    from . import estimators

    name, params, attributes, arrays = read_model(path)
    cls = getattr(estimators, name, None)
    if cls is None or not hasattr(cls, "_from_file"):
        raise ValueError(f"{path} holds a {name!r}, which this sparseopt cannot load")
    return cls._from_file(params, attributes, arrays)
