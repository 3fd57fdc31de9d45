"""Data: synthetic click data, feature hashing, streaming readers, downloads, a sample.

- :func:`make_ctr`: Criteo-like click data drawn from a known logistic (+ pairwise) model.
- :class:`FieldHasher`: the readers' hashing as a scikit-learn transformer of tables (pandas,
  polars, Arrow, mappings of columns), keeping the values seen if asked (:class:`Tokens`,
  :func:`load_tokens`).
- :func:`hash_features`, :func:`column_fields`: MurmurHash3 of (field, value) pairs into
  ``2**n_bits`` columns, the same on every platform; ``field_aware=True`` gives each field a
  contiguous slice of columns.
- :func:`read_criteo`, :func:`read_avazu`, :func:`read_libsvm`, :func:`read_csv`: readers
  (:class:`CriteoReader`...) that iterate as ``(X, y)`` CSR chunks, ``.read()`` everything,
  or ``.cached(dir)`` to skip parsing in later epochs; feature crosses hashed in the parsing
  pass (``interactions=``), a weight column (``read_csv(..., weight_column=)``) and negative
  downsampling (``negative_rate=``).
- :func:`fetch_a9a`, :func:`fetch_criteo_sample`, :func:`fetch_avazu_sample`: checksummed
  downloads into :func:`data_home`.
- :func:`load_movielens`, :func:`load_movielens_split`, :func:`fetch_movielens`: MovieLens
  ratings as users x items CSR matrices; :func:`load_movielens_clicks`: MovieLens 100K as a
  click task with user and item side features (one row per rating).
- :func:`sample_path`: a small synthetic Criteo-format sample shipped with the package.

Examples
--------
>>> from sparseopt.datasets import read_criteo, sample_path
>>> reader = read_criteo(sample_path("train"), n_bits=20, chunk_size=10_000)
>>> for epoch in range(2):
...     for X, y in reader.cached():
...         pass  # model.partial_fit(X, y)
"""

from ._cache import data_home
from ._download import (
    REMOTE_FILES,
    ChecksumError,
    fetch_a9a,
    fetch_avazu_sample,
    fetch_criteo_sample,
    fetch_file,
)
from ._field_hasher import FieldHasher, Tokens, load_tokens
from ._generators import make_ctr
from ._hashing import column_fields, hash_features
from ._movielens import (
    fetch_movielens,
    implicit_positives,
    load_movielens,
    load_movielens_clicks,
    load_movielens_split,
)
from ._readers import (
    AvazuReader,
    ChunkReader,
    CriteoReader,
    CSVReader,
    LibSVMReader,
    read_avazu,
    read_criteo,
    read_csv,
    read_libsvm,
)
from ._sample import sample_path

__all__ = [
    "AvazuReader",
    "ChecksumError",
    "CSVReader",
    "ChunkReader",
    "CriteoReader",
    "FieldHasher",
    "LibSVMReader",
    "Tokens",
    "REMOTE_FILES",
    "column_fields",
    "data_home",
    "fetch_a9a",
    "fetch_avazu_sample",
    "fetch_criteo_sample",
    "fetch_file",
    "fetch_movielens",
    "hash_features",
    "implicit_positives",
    "load_movielens",
    "load_movielens_clicks",
    "load_movielens_split",
    "load_tokens",
    "make_ctr",
    "read_avazu",
    "read_criteo",
    "read_csv",
    "read_libsvm",
    "sample_path",
]
