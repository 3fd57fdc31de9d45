"""Model files: arrays plus JSON metadata in one ``.npz``, loaded without pickle.

Layout of a file: one array per fitted array attribute, ``__meta__``, a uint8 array holding
UTF-8 JSON with the format name and version, the estimator class, its constructor parameters
(optimizer and schedule objects as ``{"class": ..., "params": ...}``), its scalar fitted
attributes and the SHA-256 of every array, and ``__meta_sha256__``, the SHA-256 of that JSON
(format version 2; version 1 files, without it, still load). A damaged or edited file is
refused, and a model file is untrusted input: every field of the metadata is checked, and the
estimator checks every array against the shapes its metadata implies before anything can
reach a compiled kernel (a checksum can be recomputed by whoever edits a file; the shape
checks are what keep a crafted file from reading or writing out of bounds).
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
import struct
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from numbers import Integral, Real
from pathlib import Path

import numpy as np

FORMAT = "sparseopt-model"
VERSION = 2  # 2: the metadata has its own checksum
READABLE_VERSIONS = (1, 2)
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
        cls = getattr(optim, value["class"], None) if isinstance(value["class"], str) else None
        if not (isinstance(cls, type) and issubclass(cls, optim.Optimizer | optim.Schedule)):
            raise ValueError(f"unknown class {value['class']!r}")
        if set(value) != {"class", "params"} or not isinstance(value["params"], dict):
            raise ValueError(f"{value['class']} needs exactly 'class' and 'params'")
        try:
            return cls(**{k: _decode(v) for k, v in value["params"].items()})
        except TypeError as exc:
            raise ValueError(f"bad parameters for {value['class']}: {exc}") from None
    if isinstance(value, dict) and "ndarray" in value:
        dtype = np.dtype(value["dtype"]) if isinstance(value.get("dtype"), str) else None
        if dtype is None or dtype.kind not in "biuf" or dtype.fields is not None:
            raise ValueError(f"unsupported array dtype {value.get('dtype')!r}")
        if not isinstance(value["ndarray"], list):
            raise ValueError("an array must be stored as a list")
        return np.array(value["ndarray"], dtype=dtype)
    if isinstance(value, dict) and "dict" in value:
        if not all(isinstance(p, list) and len(p) == 2 for p in value["dict"]):
            raise ValueError("a dict must be stored as [key, value] pairs")
        return {_decode(k): _decode(v) for k, v in value["dict"]}
    if isinstance(value, dict):
        raise ValueError(f"unknown encoded value {value!r:.80}")
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _decode_field(path, field: str, value):
    """``_decode(value)``, any error made a ValueError that names the metadata field."""
    try:
        return _decode(value)
    except (ValueError, TypeError, KeyError, RecursionError, OverflowError) as exc:
        raise ValueError(f"{path}: model file field {field!r} is invalid: {exc}") from None


def _digest(array: np.ndarray) -> str:
    # hashed from the array's buffer: ``tobytes()`` first would copy it (a 2^22-column
    # model's tables are tens of MB, saved at every checkpoint)
    return hashlib.sha256(np.ascontiguousarray(array)).hexdigest()


def save_model(path, estimator, arrays: dict, attributes: dict) -> None:
    """Write ``estimator`` (its parameters, ``arrays`` and scalar ``attributes``) to ``path``.

    The arrays' digests are taken on a second thread while the arrays are written (both
    release the GIL), the metadata that records them last.
    """
    path = Path(path)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "class": type(estimator).__name__,
        "params": {k: _encode(v) for k, v in estimator.get_params(deep=False).items()},
        "attributes": {k: _encode(v) for k, v in attributes.items()},
        "sha256": None,
    }
    if _METADATA.get() is not None:
        meta["metadata"] = _METADATA.get()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with ThreadPoolExecutor(1) as pool, os.fdopen(fd, "wb") as f:
            digests = pool.submit(lambda: {k: _digest(v) for k, v in arrays.items()})
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as npz:
                for name, array in arrays.items():
                    _write_member(npz, name, array)
                meta["sha256"] = digests.result()
                text = json.dumps(meta).encode()
                _write_member(npz, "__meta__", np.frombuffer(text, dtype=np.uint8))
                digest = hashlib.sha256(text).hexdigest().encode()
                _write_member(npz, "__meta_sha256__", np.frombuffer(digest, dtype=np.uint8))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_member(npz: zipfile.ZipFile, name: str, array) -> None:
    """``array`` as the member ``name.npy`` of an open ``.npz``, as ``np.savez`` writes it."""
    with npz.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


# what a model file's JSON holds: field -> (type, required)
_FIELDS = {
    "format": (str, True),
    "version": (int, True),
    "class": (str, True),
    "params": (dict, True),
    "attributes": (dict, True),
    "sha256": (dict, True),
    "metadata": (dict, False),
}
# what reading a damaged zip or .npy can raise (zipfile: NotImplementedError for an unknown
# zip version or compression, RuntimeError for an "encrypted" member, struct.error...)
_ERRORS = (
    zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError, UnicodeError, MemoryError,
    RecursionError, NotImplementedError, RuntimeError, struct.error,
)  # fmt: skip


def _read_npz(path, names=None) -> dict:
    """The arrays of an ``.npz`` (only ``names`` if given, read alone from the open file: a
    model's metadata without its tens of MB of arrays), refusing compressed members: a model
    file is written uncompressed, and a compressed member could expand without bound."""
    with open(path, "rb") as f:  # one open file: a file renamed over ``path`` meanwhile is not read
        data = io.BytesIO(f.read()) if names is None else f
        with zipfile.ZipFile(data) as zf:
            for info in zf.infolist():
                if info.compress_type != zipfile.ZIP_STORED:
                    raise ValueError(f"compressed member {info.filename!r}")
        data.seek(0)
        with np.load(data, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files if names is None or k in names}


def _read_meta(path, arrays: dict) -> dict:
    """Pop and check the metadata of a file's ``arrays``: format, version, checksum, fields."""
    if "__meta__" not in arrays:
        raise ValueError(f"{path} is not a sparseopt model file (no metadata)")
    text = arrays.pop("__meta__").tobytes()
    digest = arrays.pop("__meta_sha256__", None)
    try:
        meta = json.loads(text.decode())
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise ValueError(f"{path}: the model file's metadata is not valid JSON") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a sparseopt model file")
    if "version" not in meta:
        raise ValueError(f"{path}: model file field 'version' is missing")
    version = meta["version"]
    if type(version) is int and version > VERSION:
        raise ValueError(
            f"{path} has format version {version}, newer than this sparseopt reads "
            f"({VERSION}); upgrade sparseopt"
        )
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ValueError(
            f"{path}: model file field 'version' is {version!r}; this sparseopt reads format "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    if version >= 2 and (
        digest is None or digest.tobytes() != hashlib.sha256(text).hexdigest().encode()
    ):
        raise ValueError(
            f"{path}: the metadata checksum does not match; the file is corrupted or edited"
        )
    for name, (kind, required) in _FIELDS.items():
        if name not in meta:
            if required:
                raise ValueError(f"{path}: model file field {name!r} is missing")
        elif not isinstance(meta[name], kind):
            raise ValueError(
                f"{path}: model file field {name!r} must be a {kind.__name__}, got "
                f"{type(meta[name]).__name__}"
            )
    unknown = sorted(set(meta) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{path}: unknown model file fields {unknown}")
    return meta


def read_model(path):
    """Read a model file; returns (class name, params, attributes, arrays).

    Everything read is checked before it is returned: the file's structure, the format
    version, the SHA-256 of the metadata and of every array, and the type of every metadata
    field (a ValueError names what is wrong). What the arrays must look like is the
    estimator's to check (its ``_from_file``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        arrays = _read_npz(path)
    except _ERRORS as exc:
        raise ValueError(
            f"{path} is not a readable sparseopt model file (truncated or corrupted)"
        ) from exc
    meta = _read_meta(path, arrays)
    digests = meta["sha256"]
    if set(digests) != set(arrays) or any(_digest(arrays[k]) != d for k, d in digests.items()):
        raise ValueError(f"{path}: array checksums do not match; the file is corrupted or edited")
    for field in ("params", "attributes"):
        bad = [k for k in meta[field] if not k.isidentifier()]
        if bad:
            raise ValueError(f"{path}: model file field {field!r} has invalid names {bad}")
    params = {k: _decode_field(path, f"params.{k}", v) for k, v in meta["params"].items()}
    attributes = {
        k: _decode_field(path, f"attributes.{k}", v) for k, v in meta["attributes"].items()
    }
    return meta["class"], params, attributes, arrays


def read_metadata(path) -> dict | None:
    """The metadata stored with :func:`model_metadata` in a model file, or None."""
    path = Path(path)
    try:
        arrays = _read_npz(path, names={"__meta__", "__meta_sha256__"})
    except _ERRORS as exc:
        raise ValueError(f"{path} is not a readable sparseopt model file") from exc
    return _read_meta(path, arrays).get("metadata")


# checks of decoded attributes for the estimators' _from_file: (test, what it must be)
COUNT = (lambda v: isinstance(v, Integral) and not isinstance(v, bool) and v >= 0,
         "a non-negative integer")  # fmt: skip
NUMBER = (lambda v: isinstance(v, Real) and not isinstance(v, bool), "a number")
NUMBERS = (lambda v: isinstance(v, list) and all(NUMBER[0](x) for x in v), "a list of numbers")


def instance_of(cls):
    return (lambda v: isinstance(v, cls), f"a {cls.__name__}")


def check_attributes(attributes: dict, required: dict, optional: dict | None = None) -> dict:
    """``attributes`` if they hold every name of ``required`` and otherwise only names of
    ``optional`` (both: name -> (test, description)), each passing its test."""
    optional = optional or {}
    missing = sorted(set(required) - set(attributes))
    unknown = sorted(set(attributes) - set(required) - set(optional))
    if missing or unknown:
        raise ValueError(f"attributes missing: {missing}, unknown: {unknown}")
    for name, value in attributes.items():
        test, what = {**required, **optional}[name]
        if not test(value):
            raise ValueError(f"attribute {name} must be {what}, got {value!r:.80}")
    return attributes


def check_classes(classes) -> np.ndarray:
    """A fitted ``classes_`` array: 1-D, at least two labels, sorted and distinct."""
    if (
        not isinstance(classes, np.ndarray)
        or classes.ndim != 1
        or classes.size < 2
        or classes.dtype.kind not in "biufUS"
        or not np.array_equal(np.unique(classes), classes)
    ):
        raise ValueError(
            f"classes_ must be a 1-D array of at least two sorted, distinct labels, got "
            f"{classes!r:.80}"
        )
    return classes
