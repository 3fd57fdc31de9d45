import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sparseopt.datasets import data_home
from sparseopt.datasets._movielens import (
    MOVIELENS_ARCHIVES,
    ChecksumError,
    fetch_movielens,
    implicit_positives,
    load_movielens,
    load_movielens_split,
    read_movielens_ratings,
)

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
needs_ml100k = pytest.mark.shared_data("ml-100k/u.data")


# --------------------------------------------------------------------------------------
# Small synthetic files in each format
# --------------------------------------------------------------------------------------

ROWS = [(1, 10, 4.0, 100), (1, 3, 2.5, 101), (3, 7, 5.0, 102), (2, 10, 1.0, 103)]


def _write(tmp_path, name, fmt):
    if fmt == "tab":
        text = "".join(f"{u}\t{i}\t{int(r) if r.is_integer() else r}\t{t}\n" for u, i, r, t in ROWS)
    elif fmt == "dat":
        text = "".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in ROWS)
    else:
        text = "userId,movieId,rating,timestamp\n" + "".join(
            f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS
        )
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "name,fmt", [("u.data", "tab"), ("ratings.dat", "dat"), ("ratings.csv", "csv")]
)
def test_read_columns(tmp_path, name, fmt):
    cols = read_movielens_ratings(_write(tmp_path, name, fmt))
    assert cols["user"].tolist() == [r[0] for r in ROWS]
    assert cols["item"].tolist() == [r[1] for r in ROWS]
    assert cols["rating"].dtype == np.float32
    np.testing.assert_array_equal(cols["rating"], [r[2] for r in ROWS])
    assert cols["timestamp"].tolist() == [r[3] for r in ROWS]


@pytest.mark.parametrize("name,fmt", [("u.data", "tab"), ("ratings.dat", "dat")])
def test_offset_ids(tmp_path, name, fmt):
    p = _write(tmp_path, name, fmt)
    m = load_movielens(p)
    assert isinstance(m, sp.csr_matrix) and m.dtype == np.float32
    assert m.shape == (3, 10)  # largest ids
    assert m[0, 9] == 4.0 and m[0, 2] == 2.5 and m[2, 6] == 5.0 and m[1, 9] == 1.0
    assert m.nnz == 4 and m.has_sorted_indices
    # the folder works too, and an explicit shape
    assert load_movielens(tmp_path, shape=(5, 20)).shape == (5, 20)
    m2, users, items = load_movielens(p, return_ids=True)
    assert users.tolist() == [1, 2, 3] and items.tolist() == list(range(1, 11))


def test_u_info_sets_shape(tmp_path):
    p = _write(tmp_path, "u1.base", "tab")
    (tmp_path / "u.info").write_text("4 users\n12 items\n4 ratings\n")
    assert load_movielens(p).shape == (4, 12)


def test_compact_ids_csv(tmp_path):
    m, users, items = load_movielens(_write(tmp_path, "ratings.csv", "csv"), return_ids=True)
    assert users.tolist() == [1, 2, 3] and items.tolist() == [3, 7, 10]
    assert m.shape == (3, 3)
    dense = m.toarray()
    assert dense[0].tolist() == [2.5, 0, 4.0] and dense[2].tolist() == [0, 5.0, 0]
    # offset ids can be asked for explicitly
    assert load_movielens(tmp_path / "ratings.csv", ids="offset").shape == (3, 10)


def test_implicit_positives():
    r = sp.csr_matrix(np.array([[4.0, 3.5, 0.0], [5.0, 1.0, 4.5]], dtype=np.float32))
    p = implicit_positives(r)
    assert p.dtype == np.float32 and p.nnz == 3
    assert p.toarray().tolist() == [[1, 0, 0], [1, 0, 1]]
    assert implicit_positives(r, threshold=1.0).nnz == 5
    with pytest.raises(ValueError, match="sparse"):
        implicit_positives(r.toarray())


def test_reader_errors(tmp_path):
    (tmp_path / "empty.data").write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_movielens_ratings(tmp_path / "empty.data")
    (tmp_path / "bad.data").write_text("1\t2\tfive\t3\n")
    with pytest.raises(ValueError, match="malformed"):
        read_movielens_ratings(tmp_path / "bad.data")
    (tmp_path / "odd.txt").write_text("1 2 3 4\n")
    with pytest.raises(ValueError, match="unrecognised"):
        read_movielens_ratings(tmp_path / "odd.txt")
    (tmp_path / "dup.data").write_text("1\t2\t3\t4\n1\t2\t4\t5\n")
    with pytest.raises(ValueError, match="repeated"):
        load_movielens(tmp_path / "dup.data")
    p = _write(tmp_path, "u.data", "tab")
    with pytest.raises(ValueError, match="do not fit"):
        load_movielens(p, shape=(2, 10))
    with pytest.raises(ValueError, match="ids must be"):
        load_movielens(p, ids="raw")
    with pytest.raises(FileNotFoundError):
        load_movielens(tmp_path / "nope.data")
    with pytest.raises(ValueError, match="split"):
        load_movielens_split(tmp_path, "u9")
    with pytest.raises(FileNotFoundError):
        load_movielens_split(tmp_path, "u1")


# --------------------------------------------------------------------------------------
# The real MovieLens 100K (skipped when ../shared/data is absent)
# --------------------------------------------------------------------------------------


@needs_ml100k
def test_ml100k_full():
    m = load_movielens(ML100K)
    assert m.shape == (943, 1682) and m.nnz == 100_000 and m.dtype == np.float32
    assert m.data.mean() == pytest.approx(3.52986, abs=1e-5)
    assert m[195, 241] == 3.0  # first line of u.data: 196 242 3
    ref = np.loadtxt(ML100K / "u.data", dtype=np.int64)
    np.testing.assert_array_equal(m[ref[:, 0] - 1, ref[:, 1] - 1].A1, ref[:, 2])
    assert implicit_positives(m).nnz == int((ref[:, 2] >= 4).sum())


@needs_ml100k
@pytest.mark.parametrize("split", ["u1", "u2", "u3", "u4", "u5", "ua", "ub"])
def test_ml100k_splits(split):
    train, test = load_movielens_split(ML100K, split)
    full = load_movielens(ML100K / "u.data")
    assert train.shape == test.shape == (943, 1682)
    assert train.nnz + test.nnz == 100_000
    assert train.multiply(test).nnz == 0  # disjoint
    assert (train + test != full).nnz == 0  # together they are u.data
    if split in ("ua", "ub"):
        assert np.all(np.diff(test.indptr) == 10)  # ten ratings per user held out
    else:
        assert test.nnz == 20_000


@needs_ml100k
def test_ml100k_by_name_from_cache(tmp_path, monkeypatch):
    # a cache that already holds the extracted folder: no network is touched
    (tmp_path / "movielens").mkdir()
    (tmp_path / "movielens" / "ml-100k").symlink_to(ML100K, target_is_directory=True)
    monkeypatch.setenv("SPARSEOPT_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)

    def no_network(*a, **k):
        raise AssertionError("network used")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    assert load_movielens("ml-100k").nnz == 100_000
    train, test = load_movielens_split("ml-100k", "ua")
    assert test.nnz == 9430


# --------------------------------------------------------------------------------------
# fetch_movielens without a network: cache hits, local file:// downloads, checksums
# --------------------------------------------------------------------------------------


def _fake_zip(path: Path) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ml-100k/u.data", "1\t1\t5\t1\n2\t3\t4\t2\n")
        z.writestr("ml-100k/u.info", "2 users\n3 items\n2 ratings\n")
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def test_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEOPT_DATA", str(tmp_path / "env"))
    assert data_home() == tmp_path / "env" and (tmp_path / "env").is_dir()
    assert data_home(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("SPARSEOPT_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_home() == tmp_path / "home" / ".cache" / "sparseopt"


def test_fetch_cache_hit_extracted(tmp_path):
    folder = tmp_path / "movielens" / "ml-100k"
    folder.mkdir(parents=True)
    assert fetch_movielens("ml-100k", data_home=tmp_path, download_if_missing=False) == folder


def test_fetch_cached_zip_checksum_mismatch(tmp_path):
    (tmp_path / "movielens").mkdir()
    fake = tmp_path / "movielens" / "ml-100k.zip"
    _fake_zip(fake)  # not the official archive: its SHA-256 differs
    with pytest.raises(ChecksumError, match="does not match"):
        fetch_movielens("ml-100k", data_home=tmp_path, download_if_missing=False)
    assert not fake.exists()  # deleted so that the next call downloads anew
    assert not (tmp_path / "movielens" / "ml-100k").exists()


def test_fetch_cached_zip_extracts(tmp_path):
    (tmp_path / "movielens").mkdir()
    digest = _fake_zip(tmp_path / "movielens" / "ml-100k.zip")
    folder = fetch_movielens("ml-100k", data_home=tmp_path, sha256=digest)
    assert folder == tmp_path / "movielens" / "ml-100k"
    assert load_movielens(folder).shape == (2, 3)
    leftovers = [p.name for p in (tmp_path / "movielens").iterdir()]
    assert sorted(leftovers) == ["ml-100k", "ml-100k.zip"]


def test_fetch_download_file_url(tmp_path):
    src = tmp_path / "mirror.zip"
    digest = _fake_zip(src)
    home = tmp_path / "cache"
    folder = fetch_movielens("ml-100k", data_home=home, url=src.as_uri(), sha256=digest)
    assert (folder / "u.data").is_file()
    assert (home / "movielens" / "ml-100k.zip").read_bytes() == src.read_bytes()
    # a second call is a cache hit even with the source gone
    src.unlink()
    assert fetch_movielens("ml-100k", data_home=home, url=src.as_uri()) == folder


def test_fetch_download_checksum_mismatch(tmp_path):
    src = tmp_path / "mirror.zip"
    _fake_zip(src)
    home = tmp_path / "cache"
    with pytest.raises(ChecksumError):
        fetch_movielens("ml-100k", data_home=home, url=src.as_uri())  # official checksum
    assert os.listdir(home / "movielens") == []  # no partial file, no folder


def test_fetch_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        fetch_movielens("ml-7k", data_home=tmp_path)
    with pytest.raises(FileNotFoundError):
        fetch_movielens("ml-1m", data_home=tmp_path, download_if_missing=False)


def test_archive_table():
    for name, spec in MOVIELENS_ARCHIVES.items():
        assert spec.url.endswith(f"/{name}.zip") and spec.url.startswith("https://")
        assert len(spec.sha256) == 64 and set(spec.sha256) <= set("0123456789abcdef")


# --------------------------------------------------------------------------------------
# The click task with side features
# --------------------------------------------------------------------------------------

USERS = "1|24|M|technician|85711\n2|53|F|other|94043\n3|17|M|writer|T8H1N\n"
ITEMS = [
    "1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(["0", "0", "0", "1", "1"] + ["0"] * 14),
    "2|GoldenEye (1995)|01-Jan-1995||http://x|" + "|".join(["0", "1"] + ["0"] * 17),
    "3|unknown||||" + "|".join(["1"] + ["0"] * 18),
]


def _click_folder(tmp_path, base, test="1\t2\t5\t3\n"):
    (tmp_path / "u.user").write_text(USERS)
    (tmp_path / "u.item").write_text("\n".join(ITEMS) + "\n")
    (tmp_path / "u1.base").write_text(base)
    (tmp_path / "u1.test").write_text(test)
    return tmp_path


def test_clicks_rows_and_fields(tmp_path):
    from sparseopt.datasets import load_movielens_clicks

    base = "1\t3\t2\t10\n3\t2\t5\t20\n2\t1\t4\t30\n"
    data = load_movielens_clicks(_click_folder(tmp_path, base), "u1", random_state=0)
    order = np.random.default_rng(0).permutation(3)  # the rows' random order
    # columns: 3 users, 3 items, 7 ages, 2 genders, 3 occupations, 3 zips, 19 genres, 1 decade
    sizes = np.bincount(data.fields)
    assert sizes.tolist() == [3, 3, 7, 2, 3, 3, 19, 1]
    assert data.y_train.tolist() == [[0.0, 1.0, 1.0][i] for i in order]  # ratings 2, 5, 4
    starts = np.concatenate([[0], np.cumsum(sizes)])
    X = data.X_train.toarray()[np.argsort(order)]  # back in file order
    first = np.flatnonzero(X[0])  # user 1 (24, M, technician, 85...), item 3: genre 0, no date
    assert first.tolist() == [
        starts[0] + 0, starts[1] + 2, starts[2] + 1, starts[3] + 1, starts[4] + 1,
        starts[5] + 0, starts[6] + 0,
    ]  # fmt: skip
    second = np.flatnonzero(X[1])  # user 3 (17: under 18, Canadian zip), item 2 (Action, 1990s)
    assert second.tolist() == [
        starts[0] + 2, starts[1] + 1, starts[2] + 0, starts[3] + 1, starts[4] + 2,
        starts[5] + 2, starts[6] + 1, starts[7] + 0,
    ]  # fmt: skip
    assert X[2, starts[6] + 3] == X[2, starts[6] + 4] == 1  # multi-hot genres of item 1
    assert data.X_test.shape == (1, X.shape[1]) and data.y_test.tolist() == [1.0]


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda p: (p / "u.user").write_text("1|24|M|technician\n"), "expected 5"),
        (lambda p: (p / "u.user").write_text("2|24|M|x|1\n"), "ids must run"),
        (lambda p: (p / "u.user").write_text("1|old|M|x|1\n"), "age"),
        (lambda p: (p / "u1.base").write_text("4\t1\t4\t1\n"), "user ids outside"),
        (lambda p: (p / "u1.base").write_text("1\t9\t4\t1\n"), "item ids outside"),
        (lambda p: (p / "u.item").unlink(), "not found"),
    ],
)
def test_clicks_refuse_bad_files(tmp_path, break_it, message):
    from sparseopt.datasets import load_movielens_clicks

    folder = _click_folder(tmp_path, "1\t1\t4\t1\n")
    break_it(folder)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_movielens_clicks(folder, "u1")


@needs_ml100k
def test_clicks_on_movielens_100k():
    from sparseopt.datasets import load_movielens_clicks

    data = load_movielens_clicks(ML100K, "u1")
    assert data.X_train.shape == (80_000, 2779) and data.X_test.shape[0] == 20_000
    assert (data.X_train.getnnz(axis=1) >= 7).all()  # user, item, 4 user fields, a genre
    assert 0.5 < data.y_train.mean() < 0.6
