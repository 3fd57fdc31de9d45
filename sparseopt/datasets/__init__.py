"""Data: synthetic click data, feature hashing, streaming readers, downloads, a sample."""

from ._cache import data_home
from ._download import (
    REMOTE_FILES,
    fetch_a9a,
    fetch_avazu_sample,
    fetch_criteo_sample,
    fetch_file,
)
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
from ._sample import sample_path

__all__ = [
    "AvazuReader",
    "CSVReader",
    "ChunkReader",
    "CriteoReader",
    "LibSVMReader",
    "REMOTE_FILES",
    "column_fields",
    "data_home",
    "fetch_a9a",
    "fetch_avazu_sample",
    "fetch_criteo_sample",
    "fetch_file",
    "hash_features",
    "make_ctr",
    "read_avazu",
    "read_criteo",
    "read_csv",
    "read_libsvm",
    "sample_path",
]
