"""Data: synthetic click data, feature hashing, streaming readers, downloads, a sample."""

from ._cache import data_home
from ._generators import make_ctr
from ._hashing import column_fields, hash_features
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

__all__ = [
    "AvazuReader",
    "CSVReader",
    "ChunkReader",
    "CriteoReader",
    "LibSVMReader",
    "column_fields",
    "data_home",
    "hash_features",
    "make_ctr",
    "read_avazu",
    "read_criteo",
    "read_csv",
    "read_libsvm",
]
