import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from sparseopt.datasets import (
    REMOTE_FILES,
    _download,
    data_home,
    fetch_a9a,
    fetch_avazu_sample,
    fetch_criteo_sample,
    fetch_file,
    read_avazu,
    read_criteo,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEOPT_DATA", str(tmp_path / "home"))
    return tmp_path / "home"


def _no_network(*args, **kwargs):
    raise AssertionError("tried to download")


def test_data_home(home, tmp_path):
    assert data_home() == home and home.is_dir()
    assert data_home(tmp_path / "other") == tmp_path / "other"


def test_cache_hit_uses_the_local_copy(home, monkeypatch):
    monkeypatch.setattr(_download.urllib.request, "urlopen", _no_network)
    content = b"1 1:1\n-1 2:1\n"
    monkeypatch.setitem(
        REMOTE_FILES,
        "tiny.svm",
        ("https://example.invalid/tiny", hashlib.sha256(content).hexdigest()),
    )
    data_home().joinpath("tiny.svm").write_bytes(content)
    assert fetch_file("tiny.svm") == home / "tiny.svm"


def test_checksum_mismatch_is_an_error(home, monkeypatch):
    monkeypatch.setattr(_download.urllib.request, "urlopen", _no_network)
    data_home().joinpath("a9a").write_bytes(b"1 1:1\n")
    with pytest.raises(ValueError, match=r"a9a has SHA-256 [0-9a-f]{64}, expected f5d5ffd8"):
        fetch_a9a()


def test_missing_file_without_download(home):
    with pytest.raises(FileNotFoundError, match="download_if_missing=False; download https://"):
        fetch_file("a9a.t", download_if_missing=False)
    with pytest.raises(ValueError, match="unknown file"):
        fetch_file("nope")
    with pytest.raises(ValueError, match="subset"):
        fetch_a9a("valid")


def test_failed_download_leaves_nothing(home, monkeypatch):
    def offline(*args, **kwargs):
        raise _download.urllib.error.URLError("no network")

    monkeypatch.setattr(_download.urllib.request, "urlopen", offline)
    with pytest.raises(OSError, match="could not download .*a9a.*download it by hand"):
        fetch_a9a()
    assert list(home.iterdir()) == []


@pytest.mark.shared_data("libsvm/a9a")
def test_fetch_a9a_from_a_verified_local_copy(home, monkeypatch):
    monkeypatch.setattr(_download.urllib.request, "urlopen", _no_network)
    shutil.copy(SHARED / "libsvm" / "a9a", data_home() / "a9a")
    X, y = fetch_a9a().read()
    assert X.shape == (32561, 123) and set(y.tolist()) == {0.0, 1.0}


def test_download_is_verified_before_it_is_kept(home, monkeypatch):
    content = b"1 1:1\n"
    monkeypatch.setitem(
        REMOTE_FILES,
        "tiny.svm",
        ("https://example.invalid/tiny", hashlib.sha256(content).hexdigest()),
    )
    served = [b"corrupted"]
    monkeypatch.setattr(
        _download.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(served[0])
    )
    with pytest.raises(
        ValueError, match="the download of https://example.invalid/tiny has SHA-256"
    ):
        fetch_file("tiny.svm")
    assert list(home.iterdir()) == []
    served[0] = content
    assert fetch_file("tiny.svm").read_bytes() == content


@pytest.mark.shared_data("criteo/criteo_sample.txt", "avazu/avazu_sample.txt")
@pytest.mark.parametrize(
    ("fetch", "name", "local", "read_local"),
    [
        (fetch_criteo_sample, "criteo_sample.txt", "criteo/criteo_sample.txt",
         lambda path: read_criteo(path, n_bits=12, sep=",", header=True)),
        (fetch_avazu_sample, "avazu_sample.txt", "avazu/avazu_sample.txt",
         lambda path: read_avazu(path, n_bits=12)),
    ],
)  # fmt: skip
def test_sample_downloaders_fetch_verify_and_read(home, monkeypatch, fetch, name, local,
                                                  read_local):  # fmt: skip
    """The sample downloaders ask for their file's URL once (served here from the local copy
    in ../shared/data, no network), keep it, and read what the local file reads."""
    asked = []

    def serve(url, timeout):
        asked.append(url)
        return io.BytesIO((SHARED / local).read_bytes())

    monkeypatch.setattr(_download.urllib.request, "urlopen", serve)
    X, y = fetch(n_bits=12).read()
    assert asked == [REMOTE_FILES[name][0]]
    assert (home / name).read_bytes() == (SHARED / local).read_bytes()
    X_ref, y_ref = read_local(SHARED / local).read()
    assert X.shape[0] == {"criteo_sample.txt": 200, "avazu_sample.txt": 100}[name]
    assert (X != X_ref).nnz == 0 and np.array_equal(y, y_ref)
    monkeypatch.setattr(_download.urllib.request, "urlopen", _no_network)
    X_again, _ = fetch(n_bits=12).read()  # the kept copy, no second download
    assert (X_again != X).nnz == 0
