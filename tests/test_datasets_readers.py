import gzip
import math
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_svmlight_file
from sklearn.utils import murmurhash3_32 as reference_hash

from sparseopt.datasets import (
    CriteoReader,
    read_avazu,
    read_criteo,
    read_csv,
    read_libsvm,
    sample_path,
)
from sparseopt.datasets._sample import SAMPLE_ROWS, sample_rows

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _column(text, field, n_bits):
    return reference_hash(text.encode(), seed=field, positive=True) % 2**n_bits


def _criteo_reference(lines, n_bits):
    """Plain-Python Criteo features: the specification the compiled parser must meet."""
    rows, labels = [], []
    for line in lines:
        parts = line.split("\t")
        cols = {}
        for f, value in enumerate(parts[1:]):
            if f < 13 and value != "":  # an empty field is hashed as the empty text
                x = int(float(value))
                value = str(math.floor(math.log(x) ** 2) if x > 2 else x)
            c = _column(value, f, n_bits)
            cols[c] = cols.get(c, 0) + 1
        rows.append(cols)
        labels.append(float(parts[0]))
    return rows, np.array(labels)


def _count(rng):
    if rng.random() < 0.2:
        return ""
    return str(rng.integers(-2, 4) if rng.random() < 0.5 else rng.integers(0, 5000))


def _criteo_lines(n, seed=0):
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        label = str(rng.integers(0, 2))
        counts = [_count(rng) for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else f"{rng.integers(0, 40):08x}" for _ in range(26)]
        lines.append("\t".join([label, *counts, *cats]))
    return lines


def _write(path, lines, newline="\n"):
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


def _assert_rows(X, rows):
    assert X.shape[0] == len(rows)
    for r, expected in enumerate(rows):
        got = dict(zip(X[r].indices.tolist(), X[r].data.tolist(), strict=True))
        assert got == expected, r


def test_criteo_matches_the_reference(tmp_path):
    lines = _criteo_lines(300)
    path = _write(tmp_path / "train.txt", lines)
    X, y = read_criteo(path, n_bits=16).read()
    rows, labels = _criteo_reference(lines, 16)
    _assert_rows(X, rows)
    np.testing.assert_array_equal(y, labels)
    assert X.dtype == np.float32 and y.dtype == np.float32 and X.indices.dtype == np.int32
    assert X.has_canonical_format and X.shape[1] == 2**16


def test_criteo_fast_paths_match_the_reference(tmp_path):
    """The parser's shortcuts (counts of plain digits, categoricals hashed four bytes at a
    time, UTF-8 checked only in non-ASCII blocks) against the spelled-out specification."""
    counts = ["7", "07", "+7", "7.0", "7e0", "-1", "0", "2", "3", "4999", "123456789012345"]
    counts += ["9000000000000000", "1e15"]
    cats = ["a", "ab", "abc", "abcd", "abcde", "0123456", "01234567", "012345678", "é", "日本語"]
    cats += ["x" * 13]
    lines = []
    for i in range(60):
        fields = [str(i % 2)] + [counts[(i + f) % len(counts)] for f in range(13)]
        fields += [cats[(i + f) % len(cats)] for f in range(26)]
        lines.append("\t".join(fields))
    # block_size 200 puts ASCII-only blocks and blocks with multi-byte characters side by side
    for block_size in (200, 1 << 20):
        path = _write(tmp_path / f"fast{block_size}.txt", lines)
        X, y = CriteoReader(path, n_bits=18, block_size=block_size).read()
        rows, labels = _criteo_reference(lines, 18)
        _assert_rows(X, rows)
        np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize(
    "chunk_size, block_size", [(1, 1 << 20), (7, 1 << 20), (64, 97), (1000, 5000)]
)
def test_chunks_are_the_same_rows_whatever_the_sizes(tmp_path, chunk_size, block_size):
    lines = _criteo_lines(150, seed=1)
    path = _write(tmp_path / "train.txt", lines)
    X_ref, y_ref = read_criteo(path, n_bits=12).read()
    reader = CriteoReader(path, n_bits=12, chunk_size=chunk_size, block_size=block_size)
    chunks = list(reader)
    assert [c[0].shape[0] for c in chunks[:-1]] == [chunk_size] * (len(chunks) - 1)
    assert 1 <= chunks[-1][0].shape[0] <= chunk_size
    assert all(c[0].has_canonical_format for c in chunks)
    X = sp.vstack([c[0] for c in chunks]).tocsr()
    assert (X != X_ref).nnz == 0
    np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]), y_ref)
    assert reader.stats["n_rows"] == 150 and reader.n_bad_lines == 0


def test_crlf_gzip_blank_lines_and_no_final_newline(tmp_path):
    lines = _criteo_lines(20, seed=2)
    X_ref, y_ref = read_criteo(_write(tmp_path / "a.txt", lines), n_bits=12).read()
    crlf = _write(tmp_path / "b.txt", lines, newline="\r\n")
    gz = tmp_path / "c.txt.gz"
    gz.write_bytes(gzip.compress(("\n".join(lines[:10] + [""] + lines[10:])).encode()))
    for path in (crlf, gz):
        X, y = read_criteo(path, n_bits=12).read()
        assert (X != X_ref).nnz == 0 and np.array_equal(y, y_ref)


def _bad_file(tmp_path, bad_line, position=3):
    lines = _criteo_lines(6, seed=3)
    lines.insert(position, bad_line)
    return _write(tmp_path / "bad.txt", lines)


GOOD = _criteo_lines(1, seed=9)[0].split("\t")


def _with(column, value):
    fields = list(GOOD)
    fields[column] = value
    return "\t".join(fields)


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("\t".join(GOOD[:20]), "expected 40 fields separated by '\\\\t', found 20"),
        ("\t".join(GOOD + ["x"]), "expected 40 fields separated by '\\\\t', found 41"),
        (_with(0, "2"), "the label '2' is not 0 or 1"),
        (_with(0, ""), "the label '' is not 0 or 1"),
        (_with(3, "abc"), "column 4: 'abc' is not an integer count"),
        (_with(3, "1.5"), "column 4: '1.5' is not an integer count"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, bad_line, message):
    path = _bad_file(tmp_path, bad_line)
    with pytest.raises(ValueError, match=f"bad.txt, line 4: {message}"):
        read_criteo(path, n_bits=10).read()
    reader = read_criteo(path, n_bits=10, skip_bad_lines=True)
    X, y = reader.read()
    assert X.shape[0] == 6 and reader.n_bad_lines == 1
    assert reader.stats == {"n_rows": 6, "n_bad_lines": 1, "bad_lines": [4], "n_dropped": 0}


def test_bad_encoding(tmp_path):
    path = tmp_path / "bad.txt"
    good = _criteo_lines(2, seed=4)
    bad = _with(20, "ab").encode().replace(b"ab", b"a\xff")
    path.write_bytes(good[0].encode() + b"\n" + bad + b"\n" + good[1].encode() + b"\n")
    with pytest.raises(ValueError, match="line 2: column 21: the value is not valid UTF-8"):
        read_criteo(path).read()
    reader = read_criteo(path, skip_bad_lines=True)
    assert reader.read()[0].shape[0] == 2 and reader.stats["bad_lines"] == [2]


def test_line_numbers_across_blocks_and_header(tmp_path):
    lines = _criteo_lines(500, seed=5)
    lines[417] = _with(0, "7")
    path = _write(tmp_path / "big.txt", lines)
    with pytest.raises(ValueError, match="line 418:"):
        CriteoReader(path, block_size=1000).read()
    header = _write(tmp_path / "header.txt", ["label\tI1"] + lines)
    with pytest.raises(ValueError, match="line 419:"):
        CriteoReader(header, header=True, block_size=777).read()
    reader = CriteoReader(header, header=True, block_size=777, skip_bad_lines=True)
    assert reader.read()[0].shape[0] == 499 and reader.stats["bad_lines"] == [419]


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_criteo(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    for read in (read_criteo, read_avazu, read_libsvm):
        with pytest.raises(ValueError, match="is empty"):
            read(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError):
        read_csv(tmp_path / "nope.csv", label="y")


AVAZU = [
    "id,click,hour,C1,banner_pos,site_id",
    "1001,0,14102100,1005,0,1fbe01fe",
    "1002,1,14102101,1005,1,",
    "1003,0,14102100,1002,0,85f751fd",
]


def test_avazu(tmp_path):
    path = _write(tmp_path / "avazu.csv", AVAZU)
    reader = read_avazu(path, n_bits=14)
    X, y = reader.read()
    assert reader.n_fields == 4 and y.tolist() == [0, 1, 0]
    rows = []
    for line in AVAZU[1:]:
        values = line.split(",")[2:]
        cols = {}
        for f, v in enumerate(values):  # an empty value is hashed as the empty text
            c = _column(v, f, 14)
            cols[c] = cols.get(c, 0) + 1
        rows.append(cols)
    _assert_rows(X, rows)
    bad = _write(tmp_path / "bad.csv", AVAZU[:2] + ["1002,yes,1,2,3,4"] + AVAZU[2:])
    with pytest.raises(ValueError, match="bad.csv, line 3: the label 'yes' is not 0 or 1"):
        read_avazu(bad).read()
    with pytest.raises(ValueError, match="no label column 'click'"):
        read_avazu(_write(tmp_path / "nolabel.csv", ["id,x", "1,2"]))


def test_csv_numeric_and_categorical(tmp_path):
    path = _write(
        tmp_path / "d.tsv",
        ["y\tcity\tage\tjunk", "1\tparis\t31.5\tz", "0\t\t\tz", "1\trome\t-2e1\tz"],
    )
    reader = read_csv(
        path, label="y", features=["age", "city"], numeric=["age"], sep="\t", n_bits=12
    )
    X, y = reader.read()
    assert y.tolist() == [1, 0, 1] and reader.n_fields == 2
    age_col = reference_hash(b"", seed=0, positive=True) % 2**12  # field 0: (age, "")
    _assert_rows(
        X,
        [
            {age_col: 31.5, _column("paris", 1, 12): 1},
            {_column("", 1, 12): 1},  # empty number: no feature; empty category: its own
            {age_col: -20.0, _column("rome", 1, 12): 1},
        ],
    )
    bad = _write(tmp_path / "bad.tsv", ["y\tcity\tage", "1\tparis\told"])
    with pytest.raises(ValueError, match="line 2: column 3: 'old' is not a number"):
        read_csv(bad, label="y", numeric=["age"], sep="\t").read()
    with pytest.raises(ValueError, match=r"columns \['nope'\] are not in the header"):
        read_csv(path, label="y", features=["nope"], sep="\t")
    regression = _write(tmp_path / "r.csv", ["target,a", "2.5,x"])
    assert read_csv(regression, label="target", binary_label=False).read()[1].tolist() == [2.5]
    with pytest.raises(ValueError, match="the label '2.5' is not 0 or 1"):
        read_csv(regression, label="target").read()


LIBSVM = [
    "+1 3:1 11:0.5 14:1",
    "-1 1:2.5e-1 5:1 # a comment",
    "",
    "1 qid:3 2:1 123:1",
    "0",
]


def test_libsvm_matches_scikit_learn(tmp_path):
    path = _write(tmp_path / "a.svm", LIBSVM)
    X, y = read_libsvm(path, chunk_size=2).read()
    X_ref, y_ref = load_svmlight_file(str(path), n_features=123)
    assert X.shape == (4, 123) and X.dtype == np.float32
    np.testing.assert_allclose(X.toarray(), X_ref.toarray())
    np.testing.assert_array_equal(y, (y_ref > 0).astype(np.float32))
    zero = _write(tmp_path / "z.svm", ["1 0:1 4:2", "0 2:1"])
    reader = read_libsvm(zero)
    assert reader.zero_based and reader.n_features == 5
    assert reader.read()[0].toarray().tolist() == [[1, 0, 0, 0, 2], [0, 0, 1, 0, 0]]
    one = read_libsvm(zero, zero_based=True, n_features=10)
    assert one.read()[0].shape == (2, 10)


@pytest.mark.parametrize(
    "line, message",
    [
        ("2 1:1", "the label '2' is not -1, 0 or 1"),
        ("1 1:x", "'1:x' is not an index:value pair"),
        ("1 a:1", "'a:1' is not an index:value pair"),
        ("1 1", "'1' is not an index:value pair"),
        ("1 200:1", "feature index 200 is out of range for 123 features indexed from 1"),
        ("1 0:1", "feature index 0 is out of range"),
    ],
)
def test_libsvm_errors(tmp_path, line, message):
    path = _write(tmp_path / "bad.svm", ["1 1:1", "-1 123:1", line, "1 2:1"])
    with pytest.raises(ValueError, match=f"bad.svm, line 3: {message}"):
        read_libsvm(path, n_features=123, zero_based=False).read()
    reader = read_libsvm(path, n_features=123, zero_based=False, skip_bad_lines=True)
    assert reader.read()[0].shape[0] == 3 and reader.stats["bad_lines"] == [3]


def test_cache_hits_and_invalidation(tmp_path, monkeypatch):
    path = _write(tmp_path / "train.txt", _criteo_lines(40, seed=6))
    cache = tmp_path / "cache"
    reader = CriteoReader(path, n_bits=12, chunk_size=15)
    first = list(reader.cached(cache))
    (folder,) = cache.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == [
        ".lock",  # held by a pass; no ".in-use-*" file once it has ended
        ".sparseopt-chunk-set",
        "chunk_00000.npz",
        "chunk_00001.npz",
        "chunk_00002.npz",
        "manifest.json",
    ]

    def no_parsing(self):
        raise AssertionError("parsed although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(CriteoReader, "chunks", no_parsing)
        second = list(reader.cached(cache))
    assert len(second) == 3 and reader.stats["n_rows"] == 40
    for (X1, y1), (X2, y2) in zip(first, second, strict=True):
        assert (X1 != X2).nnz == 0 and np.array_equal(y1, y2)
        assert X2.dtype == np.float32 and X2.indices.dtype == np.int32

    # other hashing parameters: another cache entry, never the first one
    other = list(CriteoReader(path, n_bits=13, chunk_size=15).cached(cache))
    assert other[0][0].shape[1] == 2**13 and len(list(cache.iterdir())) == 2

    # the file changes (size and mtime): parsed again, cache rewritten
    _write(path, _criteo_lines(10, seed=7))
    os.utime(path, ns=(1, 1))
    changed = list(reader.cached(cache))
    assert sum(X.shape[0] for X, _ in changed) == 10
    X_new, _ = CriteoReader(path, n_bits=12).read()
    assert (sp.vstack([X for X, _ in changed]) != X_new).nnz == 0

    # a pass stopped early leaves no manifest: the next pass parses
    _write(path, _criteo_lines(40, seed=8))
    next(iter(reader.cached(cache)))
    calls = []
    original = CriteoReader.chunks

    def counting(self, *args):
        calls.append(1)
        return original(self, *args)

    with monkeypatch.context() as m:
        m.setattr(CriteoReader, "chunks", counting)
        assert sum(X.shape[0] for X, _ in reader.cached(cache)) == 40
    assert calls == [1]


def test_shipped_sample_reads_back_the_generated_rows():
    assert sample_path("train").name.endswith(".tsv.gz")
    with pytest.raises(ValueError, match="subset"):
        sample_path("test")
    _, rows = sample_rows()
    for subset in ("train", "valid"):
        reader = read_criteo(sample_path(subset), n_bits=18)
        X, y = reader.read()
        values, labels, _ = rows[subset]
        assert X.shape == (SAMPLE_ROWS[subset], 2**18) and reader.n_bad_lines == 0
        np.testing.assert_array_equal(y, labels)
        # every field counts, an empty one as the empty text (collisions are summed)
        np.testing.assert_array_equal(np.asarray(X.sum(axis=1)).ravel(), values.shape[1])
        assert ((values < 0).sum() > 0) and X.nnz > (values >= 0).sum()


@pytest.mark.shared_data("criteo", "avazu", "libsvm/a9a")
def test_real_files():
    criteo = SHARED / "criteo" / "criteo_wideresdnn_train.txt"
    lines = criteo.read_text().splitlines()
    reader = read_criteo(criteo, chunk_size=1000)
    X, y = reader.read()
    assert X.shape == (7200, 2**20) and reader.n_bad_lines == 0
    assert abs(y.mean() - 0.2151) < 1e-3
    rows, labels = _criteo_reference(lines[:200], 20)
    _assert_rows(X[:200], rows)
    sample, _ = read_criteo(SHARED / "criteo" / "criteo_sample.txt", sep=",", header=True).read()
    assert sample.shape[0] == 200
    X, y = read_avazu(SHARED / "avazu" / "avazu_wideresdnn_train.csv").read()
    assert X.shape[0] == 8087 and np.all(np.diff(X.indptr) <= 22)
    X, y = read_libsvm(SHARED / "libsvm" / "a9a").read()
    X_ref, y_ref = load_svmlight_file(str(SHARED / "libsvm" / "a9a"))
    assert X.shape == X_ref.shape == (32561, 123)
    assert abs(X - X_ref).max() == 0 and np.array_equal(y, (y_ref > 0))
