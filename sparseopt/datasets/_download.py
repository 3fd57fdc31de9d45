"""Downloads of public data sets, checked against SHA-256 checksums and cached locally."""

import hashlib
import shutil
import urllib.error
import urllib.request

from . import _cache
from ._readers import AvazuReader, CriteoReader, LibSVMReader

_LIBSVM = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/binary/"
_DEEPCTR = "https://raw.githubusercontent.com/shenweichen/DeepCTR/master/examples/"

#: file name -> (URL, SHA-256 of the file)
REMOTE_FILES = {
    "a9a": (
        _LIBSVM + "a9a",
        "f5d5ffd8d865ff41328e7ee043e4b020816914ff6843ff15b98905ddbedce906",
    ),
    "a9a.t": (
        _LIBSVM + "a9a.t",
        "1f448a153f0320399a7e40836eb207655b0bde0f21fc941cc472193daa9f5de9",
    ),
    # 200 Criteo rows (comma-separated, header line) from DeepCTR's examples
    "criteo_sample.txt": (
        _DEEPCTR + "criteo_sample.txt",
        "08b84f12a22438fb534e989a5e4fa245726b2bda001983556bc2aea2f094f724",
    ),
    # 100 Avazu rows from DeepCTR's examples
    "avazu_sample.txt": (
        _DEEPCTR + "avazu_sample.txt",
        "43daa44dde764bf2c0dacf80002a73da4441088a53d40a3629094d3a2b1592f3",
    ),
}


class ChecksumError(ValueError):
    """A downloaded or cached file does not have the expected SHA-256."""


def sha256_of(path):
    """SHA-256 of a file, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url, path, sha256, timeout=60.0):
    """Download ``url`` to ``path`` atomically, keeping it only if its SHA-256 is ``sha256``.

    Raises
    ------
    ChecksumError
        The download has another checksum (nothing is left at ``path``).
    OSError
        The download failed (no network...): the message says where to put the file.
    """

    def write(f):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, f)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise OSError(
                f"could not download {url} ({exc}); download it by hand to {path}"
            ) from exc
        f.flush()
        actual = sha256_of(f.name)
        if actual != sha256:
            raise ChecksumError(
                f"the download of {url} has SHA-256 {actual}, which does not match "
                f"the expected {sha256}"
            )

    _cache.atomic_write(path, write)


def fetch_file(name, data_home=None, download_if_missing=True):
    """Path of a local, checksum-verified copy of one of :data:`REMOTE_FILES`.

    The file is looked up in ``data_home`` (``$SPARSEOPT_DATA`` or ``~/.cache/sparseopt``)
    and downloaded there if absent (to a temporary file, verified, then renamed). Its
    SHA-256 is checked on every call, so a corrupted or different file is never used.

    Parameters
    ----------
    name : str
        A key of :data:`REMOTE_FILES`, e.g. ``"a9a"``.
    data_home : str or path-like, default=None
        Folder of the downloads.
    download_if_missing : bool, default=True
        If False, raise ``FileNotFoundError`` instead of downloading.

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    ChecksumError (a ValueError)
        The local or downloaded file does not have the expected checksum.
    OSError
        The download failed (no network...): the message says where to put the file.
    """
    if name not in REMOTE_FILES:
        raise ValueError(f"unknown file {name!r}; known: {sorted(REMOTE_FILES)}")
    url, expected = REMOTE_FILES[name]
    path = _cache.data_home(data_home) / name
    if not path.exists():
        if not download_if_missing:
            raise FileNotFoundError(
                f"{path} is missing and download_if_missing=False; download {url} there"
            )
        download(url, path, expected)
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(
            f"{path} has SHA-256 {actual}, expected {expected} (the file of {url}); "
            "delete it to download it again"
        )
    return path


def fetch_a9a(subset="train", data_home=None, download_if_missing=True, chunk_size=100_000):
    """The a9a data set (binarised UCI Adult, 123 binary features) from the LIBSVM site.

    Parameters
    ----------
    subset : {"train", "test"}, default="train"
        ``a9a`` (32,561 rows) or ``a9a.t`` (16,281 rows).
    data_home, download_if_missing
        As in :func:`fetch_file`.
    chunk_size : int, default=100_000
        Rows per chunk of the reader.

    Returns
    -------
    reader : LibSVMReader
        123 features, one-based indices, labels 0/1; ``.read()`` gives ``(X, y)``.

    References
    ----------
    Chang and Lin, LIBSVM data sets; Kohavi, UCI Adult.
    """
    names = {"train": "a9a", "test": "a9a.t"}
    if subset not in names:
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    path = fetch_file(names[subset], data_home, download_if_missing)
    return LibSVMReader(path, n_features=123, zero_based=False, chunk_size=chunk_size)


def fetch_criteo_sample(data_home=None, download_if_missing=True, n_bits=20, **kwargs):
    """200 rows of the Criteo Display Advertising Challenge (DeepCTR's example file).

    The file is comma-separated with a header line; counts are written as floats
    (``260.0``), which :class:`CriteoReader` accepts. Criteo's terms allow non-commercial
    use only.

    Returns
    -------
    reader : CriteoReader
        ``kwargs`` (``chunk_size``, ``field_aware``...) are passed to it.
    """
    path = fetch_file("criteo_sample.txt", data_home, download_if_missing)
    return CriteoReader(path, n_bits=n_bits, sep=",", header=True, **kwargs)


def fetch_avazu_sample(data_home=None, download_if_missing=True, n_bits=20, **kwargs):
    """100 rows of the Avazu CTR data (DeepCTR's example file).

    Returns
    -------
    reader : AvazuReader
        ``kwargs`` are passed to it.
    """
    path = fetch_file("avazu_sample.txt", data_home, download_if_missing)
    return AvazuReader(path, n_bits=n_bits, **kwargs)
