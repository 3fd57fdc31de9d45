import numpy as np
import pyarrow as pa
import pytest
from sklearn.utils import murmurhash3_32 as reference_hash

from sparseopt.datasets import column_fields, hash_features
from sparseopt.datasets._hashing import hash_int, murmurhash3_32

# (bytes, seed, hash): MurmurHash3 x86_32 of the reference algorithm, fixed forever
KNOWN = [
    (b"", 0, 0),
    (b"", 1, 1364076727),
    (b"a", 0, 1009084850),
    (b"abc", 0, 3017643002),
    (b"abcd", 0, 1139631978),
    (b"hello world", 0, 1586663183),
    (b"68fd1e64", 13, 3863465962),
    (b"5", 1, 781717054),
    (b"-1", 2, 1057552037),
    ("é".encode(), 38, 3896714844),
]


def _hash(data, seed):
    buf = np.frombuffer(data, dtype=np.uint8) if data else np.zeros(0, np.uint8)
    return int(murmurhash3_32(buf, 0, len(data), np.uint32(seed)))


@pytest.mark.parametrize("data, seed, expected", KNOWN)
def test_known_values(data, seed, expected):
    assert _hash(data, seed) == expected
    assert reference_hash(data, seed=seed, positive=True) == expected


def test_agrees_with_reference_on_random_bytes():
    rng = np.random.default_rng(0)
    for n in range(40):
        data = rng.integers(0, 256, n).astype(np.uint8).tobytes()
        for seed in (0, 7, 38, 2**31, 2**32 - 1):
            assert _hash(data, seed) == reference_hash(data, seed=seed, positive=True)


def test_hash_of_a_slice_ignores_the_rest_of_the_buffer():
    buf = np.frombuffer(b"xxabcyy", dtype=np.uint8)
    assert murmurhash3_32(buf, 2, 5, np.uint32(0)) == 3017643002


@pytest.mark.parametrize("value", [0, 1, 9, 10, -1, -10, 123456789, -(2**40)])
def test_integers_hash_as_their_decimal_text(value):
    scratch = np.zeros(24, np.uint8)
    expected = reference_hash(str(value).encode(), seed=5, positive=True)
    assert hash_int(value, np.uint32(5), scratch) == expected


def _expected_columns(row, n_bits, field_aware=False, n_fields=None):
    cols = {}
    for f, value in enumerate(row):
        text = "" if value is None else str(value)  # a null is hashed as the empty text
        h = reference_hash(text.encode(), seed=f, positive=True)
        if field_aware:
            size = 2**n_bits // n_fields
            c = f * size + h % size
        else:
            c = h % 2**n_bits
        cols[c] = cols.get(c, 0) + 1
    return cols


@pytest.mark.parametrize("field_aware", [False, True])
def test_hash_features_matches_reference(field_aware):
    site = ["a", "b", None, "a", "", "ü"]
    app = ["x", "", "x", None, "y", "z"]
    count = [1, 2, 3, None, 5, 6]
    X = hash_features({"site": site, "app": app, "count": count}, 8, field_aware)
    assert X.shape == (6, 256)
    assert X.dtype == np.float32 and X.indices.dtype == np.int32
    assert X.has_canonical_format
    for r, row in enumerate(zip(site, app, count, strict=True)):
        expected = _expected_columns(row, 8, field_aware, 3)
        got = dict(zip(X[r].indices.tolist(), X[r].data.tolist(), strict=True))
        assert got == expected


def test_hash_features_accepts_arrow_tables_slices_and_large_strings():
    table = pa.table({"a": ["p", "q", "r", "s"], "b": pa.array(["1", None, "3", "4"])})
    X = hash_features(table, 10)
    sliced = hash_features([table["a"].slice(1), table["b"].slice(1)], 10)
    assert (sliced != X[1:]).nnz == 0
    large = hash_features([table["a"].cast(pa.large_string()), table["b"]], 10)
    assert (large != X).nnz == 0
    dictionary = hash_features([table["a"].dictionary_encode(), table["b"]], 10)
    assert (dictionary != X).nnz == 0


def test_collisions_within_a_row_are_summed():
    # with 1 bit, three fields must collide
    X = hash_features([["a"], ["b"], ["c"]], 1)
    assert X.nnz <= 2 and X.sum() == 3


def test_hash_features_errors():
    with pytest.raises(ValueError, match="has 1 rows, expected 2"):
        hash_features({"a": ["x", "y"], "b": ["z"]})
    with pytest.raises(ValueError, match="at least one column"):
        hash_features({})
    with pytest.raises(ValueError, match="n_bits"):
        hash_features([["a"]], n_bits=33)
    with pytest.raises(ValueError, match="one column per field"):
        hash_features([["a"], ["b"], ["c"]], n_bits=1, field_aware=True)


def test_column_fields_layout():
    fields = column_fields(4, 3)
    assert fields.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [-1]
    X = hash_features([["a", "b"], ["c", "d"], ["e", "f"]], 4, field_aware=True)
    # each row's k-th nonzero belongs to field k (slices are in field order)
    for r in range(2):
        assert fields[X[r].indices].tolist() == [0, 1, 2]
