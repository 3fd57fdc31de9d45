"""The synthetic Criteo-format sample shipped with the package, and how it is made.

The files live inside the package (``sparseopt/datasets/data/``) so that a non-editable
install has them too; the repository's top-level ``datasets/`` folder holds their README and
the script that regenerates them (``python datasets/make_sample.py``).
"""

import gzip
import io
from pathlib import Path

import numpy as np

from ._generators import _simulate_ctr

DATA_DIR = Path(__file__).parent / "data"
SAMPLE_FILES = {"train": "ctr_train.tsv.gz", "valid": "ctr_valid.tsv.gz"}

N_COUNTS = 13
N_CATEGORICALS = 26
# The true model of the sample: _simulate_ctr's arguments (make_ctr's, without hashing).
SAMPLE_MODEL = dict(
    n_fields=N_COUNTS + N_CATEGORICALS,
    n_values=[24] * N_COUNTS
    + np.round(np.geomspace(3, 20_000, N_CATEGORICALS)).astype(int).tolist(),
    zipf_exponent=1.05,
    weight_scale=1.25,
    interactions=0.5,
    n_factors=4,
    missing_rate=[0.2] * N_COUNTS + [0.05] * N_CATEGORICALS,
    base_rate=0.25,
    random_state=20241121,
)
SAMPLE_ROWS = {"train": 20_000, "valid": 5_000}


def sample_path(subset="train"):
    """Path of the synthetic Criteo-format sample shipped with sparseopt.

    Parameters
    ----------
    subset : {"train", "valid"}, default="train"
        20,000 training rows or 5,000 validation rows (gzip-compressed TSV, Criteo's
        layout: label, 13 counts, 26 hex categoricals, empty fields). The true model is
        documented in the repository's ``datasets/README.md``.

    Returns
    -------
    path : pathlib.Path

    Examples
    --------
    >>> from sparseopt.datasets import read_criteo
    >>> X, y = read_criteo(sample_path("train"), n_bits=18).read()
    >>> X.shape
    (20000, 262144)
    """
    if subset not in SAMPLE_FILES:
        raise ValueError(f"subset must be one of {sorted(SAMPLE_FILES)}, got {subset!r}")
    path = DATA_DIR / SAMPLE_FILES[subset]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the package was installed without its data files; "
            "regenerate them with `python datasets/make_sample.py` from the repository"
        )
    return path


def _smallest_count(bucket):
    """The smallest count x >= 0 whose Criteo bucket is ``bucket`` (see CriteoReader)."""
    if bucket <= 2:
        return bucket
    x = 3
    while np.floor(np.log(x) ** 2) < bucket:
        x += 1
    return x


def _hex_token(values, field):
    """An 8-hex-digit token per value id, bijective within a field (like Criteo's hashes)."""
    mixed = (values.astype(np.uint64) * np.uint64(0x9E3779B1) + np.uint64(field * 0x85EBCA6B)) & (
        np.uint64(0xFFFFFFFF)
    )
    return np.char.mod("%08x", mixed)


def sample_rows():
    """The sample's rows: {subset: (values, y, proba)} with value ids (-1: empty)."""
    model, parts = _simulate_ctr(SAMPLE_ROWS["train"], SAMPLE_ROWS["valid"], **SAMPLE_MODEL)
    return model, dict(zip(["train", "valid"], parts, strict=True))


def write_criteo_tsv(fileobj, values, y):
    """Write value ids as Criteo TSV: counts (fields 0-12) as the smallest count of bucket
    ``value`` (so the reader's bucket is the value id), categoricals as hex tokens."""
    counts = np.array([_smallest_count(b) for b in range(int(values[:, :N_COUNTS].max()) + 1)])
    columns = [y.astype(np.int64).astype(str)]
    for f in range(values.shape[1]):
        v = values[:, f]
        text = counts[np.maximum(v, 0)].astype(str) if f < N_COUNTS else _hex_token(v, f)
        columns.append(np.where(v >= 0, text, ""))
    lines = ["\t".join(row) for row in zip(*columns, strict=True)]
    fileobj.write(("\n".join(lines) + "\n").encode())


def make_sample_files(out_dir=DATA_DIR):
    """Regenerate the sample files (byte-identical: gzip without a timestamp)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, rows = sample_rows()
    for subset, (values, y, _) in rows.items():
        raw = io.BytesIO()
        write_criteo_tsv(raw, values, y)
        with open(out_dir / SAMPLE_FILES[subset], "wb") as f:
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
                gz.write(raw.getvalue())
    return model, rows
