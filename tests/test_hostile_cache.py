"""Never crash, never lie, never lose a file: the chunk cache and ``sparseopt cache``.

A folder is a chunk set only with the marker that sparseopt writes into it; ``--clear``
deletes only the files sparseopt wrote, and keeps (naming the run) a set that a pass holds,
also one held by a process in another interpreter, until that process ends, ``kill -9``
included. Manifests and chunks are untrusted files: whatever they hold, a pass yields the
chunks that parsing the file gives, and training from a damaged cache (in a child process: a
chunk reaches the kernels) gives the model that training without one gives.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from sparseopt.cli import main
from sparseopt.datasets import CriteoReader
from sparseopt.datasets._cache import MARKER, chunk_sets, clear_chunk_sets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


def _criteo(path, n=120, seed=0):
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        counts = [str(rng.integers(0, 50)) for _ in range(13)]
        cats = [f"{rng.integers(0, 30):08x}" for _ in range(26)]
        lines.append("\t".join([str(rng.integers(0, 2)), *counts, *cats]))
    path.write_text("\n".join(lines) + "\n")
    return path


def _same(chunks, expected):
    assert len(chunks) == len(expected)
    for (X, y), (X0, y0) in zip(chunks, expected, strict=True):
        assert X.shape == X0.shape and (X != X0).nnz == 0 and np.array_equal(y, y0)


@pytest.fixture
def data(tmp_path):
    return _criteo(tmp_path / "train.tsv")


def _reader(path):
    return CriteoReader(path, n_bits=10, chunk_size=50)


def test_a_users_folders_are_never_a_cache(tmp_path, data, capsys):
    cache = tmp_path / "cache"
    (cache / "empty").mkdir(parents=True)
    (cache / "mine").mkdir()
    (cache / "mine" / "manifest.json").write_text('{"mine": true}')
    (cache / "lookalike").mkdir()  # a chunk set's files, but not made by sparseopt
    for name in ("chunk_00000.npz", "manifest.json", ".lock"):
        (cache / "lookalike" / name).write_text("user's")
    (cache / "fake").mkdir()  # a marker of another program
    (cache / "fake" / MARKER).write_text('{"made_by": "someone else"}')
    older = cache / "train.tsv-0123456789abcdef0123"  # as sets were before markers
    older.mkdir()
    (older / "chunk_00000.npz").write_text("old")
    list(_reader(data).cached(cache))  # one real set
    (real,) = [p for p in cache.iterdir() if p.name.startswith("train.tsv-") and p != older]
    (real / "notes.txt").write_text("the user's, inside a set")
    (real / "sub").mkdir()

    assert [s["path"] for s in chunk_sets(cache)] == [real]
    assert main(["cache", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "1 cached chunk set," in out
    assert "1 folder looks like the chunk sets of an older sparseopt, " in out
    assert f"({older.name}): not counted nor cleared; delete them by hand" in out
    assert main(["cache", "--clear", "--cache-dir", str(cache)]) == 0
    assert "removed 1 cached chunk set" in capsys.readouterr().out
    # only what sparseopt wrote is gone: the user's files stay, with their folder
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        ["empty", "mine", "lookalike", "fake", older.name, real.name]
    )
    assert sorted(p.name for p in real.iterdir()) == ["notes.txt", "sub"]
    assert (cache / "mine" / "manifest.json").read_text() == '{"mine": true}'
    assert len(list((cache / "lookalike").iterdir())) == 3
    assert chunk_sets(cache) == [] and clear_chunk_sets(cache) == ([], [])
    assert main(["cache", "--cache-dir", str(data)]) == 1  # a file: refused, named
    assert f"--cache-dir {data} is a file" in capsys.readouterr().err
    # a pass never writes into a folder it did not make: it parses without caching
    (real / "notes.txt").unlink()
    (real / "sub").rmdir()
    (real / "keep.txt").write_text("mine")
    _same(list(_reader(data).cached(cache)), list(_reader(data)))
    assert sorted(p.name for p in real.iterdir()) == ["keep.txt"]


HOLDER = r"""
import sys, time
from sparseopt.datasets import CriteoReader
reader = CriteoReader(sys.argv[1], n_bits=10, chunk_size=50)
for mode in ("writing", "reading"):
    chunks = reader.cached(sys.argv[2])
    n = sum(1 for _ in [next(chunks)])
    print(mode, flush=True)
    sys.stdin.readline()  # the parent clears meanwhile
    n += sum(1 for _ in chunks)
    print(n, flush=True)
chunks = reader.cached(sys.argv[2])
next(chunks)
print("held", flush=True)
time.sleep(600)
"""


def test_clear_keeps_a_set_a_run_holds_and_a_killed_run_blocks_nothing(tmp_path, data, capsys):
    cache = tmp_path / "cache"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data), str(cache)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        for mode in ("writing", "reading"):
            assert holder.stdout.readline().strip() == mode
            assert main(["cache", "--clear", "--cache-dir", str(cache)]) == 0
            out = capsys.readouterr().out
            assert "removed 0 cached chunk sets" in out
            assert "kept train.tsv-" in out and f"in use by process {holder.pid}: " in out
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "3"  # every chunk, none lost
        assert holder.stdout.readline().strip() == "held"
        os.kill(holder.pid, signal.SIGKILL)  # dies holding the set: its lock goes with it
        holder.wait(timeout=60)
    finally:
        holder.kill()
        holder.wait()
    removed, in_use = clear_chunk_sets(cache)
    assert len(removed) == 1 and in_use == [] and list(cache.iterdir()) == []


def _edit_manifest(folder, edit):
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    edited = edit(manifest)
    path.write_text(edited if isinstance(edited, str) else json.dumps(edited))


def _edit_chunk(folder, edit, name="chunk_00001.npz"):
    with np.load(folder / name) as z:
        arrays = {k: z[k].copy() for k in z.files}
    edit(arrays)
    np.savez(folder / name, **arrays)


MANIFESTS = {
    "a list": lambda m: [1, 2],
    "not JSON": lambda m: "{",
    "a chunk outside the set": lambda m: dict(m, chunks=["../../../etc/passwd", *m["chunks"][1:]]),
    "chunks out of order": lambda m: dict(m, chunks=m["chunks"][::-1]),
    "a count as text": lambda m: dict(m, stats=dict(m["stats"], n_rows="120")),
    "bad lines not a list": lambda m: dict(m, stats=dict(m["stats"], bad_lines=7)),
    "another key": lambda m: dict(m, extra=1),
    "more bad lines than named": lambda m: dict(m, stats=dict(m["stats"], n_bad_lines=5)),
    "more rows than the chunks": lambda m: dict(m, stats=dict(m["stats"], n_rows=10**12)),
    "huge": lambda m: " " * (1 << 25) + json.dumps(m),
}


def _set(arrays, **values):
    arrays.update(values)


CHUNKS = {
    "a column out of range": lambda a: a["indices"].__setitem__(3, 1 << 20),
    "a negative column": lambda a: a["indices"].__setitem__(3, -1),
    "unsorted columns": lambda a: a["indices"].__setitem__(slice(0, 2), a["indices"][1::-1]),
    "indptr beyond the entries": lambda a: a["indptr"].__setitem__(-1, a["indptr"][-1] + 9),
    "decreasing indptr": lambda a: a["indptr"].__setitem__(1, a["indptr"][2] + 1),
    "a NaN value": lambda a: a["data"].__setitem__(0, np.nan),
    "an infinite label": lambda a: a["y"].__setitem__(0, np.inf),
    "more columns": lambda a: _set(a, shape=np.array([50, 1 << 11])),
    "more rows": lambda a: _set(a, shape=np.array([51, 1 << 10])),
    "float64 values": lambda a: _set(a, data=a["data"].astype(np.float64)),
    "a short label array": lambda a: _set(a, y=a["y"][:-1]),
    "2-D shape": lambda a: _set(a, shape=np.ones((2, 2), int)),
    "an object array": lambda a: _set(a, y=np.array([1, "x"], dtype=object)),
    "a missing array": lambda a: a.pop("indptr"),
}


def test_damaged_manifests_and_chunks_give_the_parsed_chunks(tmp_path, data):
    parsed = list(_reader(data))
    cache = tmp_path / "cache"
    cases = [("manifest", n, e) for n, e in MANIFESTS.items()]
    cases += [("chunk", n, e) for n, e in CHUNKS.items()]
    cases += [("chunk", "truncated", None), ("chunk", "a folder", None)]
    for kind, name, edit in cases:
        shutil.rmtree(cache, ignore_errors=True)
        reader = _reader(data)
        _same(list(reader.cached(cache)), parsed)
        (folder,) = cache.iterdir()
        if kind == "manifest":
            _edit_manifest(folder, edit)
        elif name == "truncated":
            chunk = folder / "chunk_00001.npz"
            chunk.write_bytes(chunk.read_bytes()[:300])
        elif name == "a folder":
            (folder / "chunk_00001.npz").unlink()
            (folder / "chunk_00001.npz").mkdir()
        else:
            _edit_chunk(folder, edit)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = list(reader.cached(cache))
        _same(again, parsed)
        assert reader.stats["n_rows"] == 120, name
        damaged = [w for w in caught if "is damaged (chunk_00001.npz" in str(w.message)]
        assert len(damaged) == (kind == "chunk" and name != "a folder"), (name, caught)
        if name == "a folder":  # the set cannot be rewritten: the pass goes on without it
            assert "cannot be written" in str(caught[0].message)
        assert outside_is_untouched(tmp_path), name


def outside_is_untouched(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir()) == ["cache", "train.tsv"]


TRAIN = r"""
import json, sys
import numpy as np
from sparseopt.cli import main
from sparseopt.datasets import CriteoReader
from sparseopt import load
data, cache = sys.argv[1], sys.argv[2]
argv = ["train", data, "--n-bits", "10", "--chunk-size", "50", "--epochs", "2"]
assert main([*argv, "--out", "plain", "--no-cache"]) == 0
reference = load("plain/model.npz").coef_
list(CriteoReader(data, n_bits=10, chunk_size=50).cached(cache))  # the set the runs read
import pathlib
(folder,) = pathlib.Path(cache).iterdir()
results = {}
for name, column in (("column beyond the model", 1 << 20), ("negative column", -5)):
    with np.load(folder / "chunk_00001.npz") as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["indices"][0] = column
    np.savez(folder / "chunk_00001.npz", **arrays)
    out = f"run_{column}"
    status = main([*argv, "--out", out, "--cache-dir", cache])
    results[name] = [status, bool(np.array_equal(load(f"{out}/model.npz").coef_, reference))]
print(json.dumps(results))
"""


def test_training_from_a_damaged_cache_gives_the_model_of_no_cache(tmp_path, data):
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN, str(data), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env=ENV,
    )
    assert proc.returncode == 0, f"status {proc.returncode} (negative: a crash)\n{proc.stderr}"
    results = json.loads(proc.stdout.splitlines()[-1])
    assert results == {"column beyond the model": [0, True], "negative column": [0, True]}


def test_a_chunk_set_cleared_between_passes_is_parsed_again(tmp_path, data):
    cache = tmp_path / "cache"
    reader = _reader(data)
    first = list(reader.cached(cache))
    chunks = reader.cached(cache)
    head = next(chunks)
    removed, in_use = clear_chunk_sets(cache)  # this process holds it: kept
    assert removed == [] and len(in_use) == 1 and str(os.getpid()) in in_use[0]["holders"][0]
    _same([head, *chunks], first)
    assert len(clear_chunk_sets(cache)[0]) == 1
    _same(list(reader.cached(cache)), first)
    assert sp.issparse(first[0][0]) and len(chunk_sets(cache)) == 1


def test_a_run_holds_its_chunk_set_between_epochs(tmp_path, data, monkeypatch, capsys):
    from sparseopt import pipeline as P

    cache, seen = tmp_path / "cache", []
    end_epoch = P.Trainer._end_epoch

    def clear_then_end(trainer, *args):  # between two epochs, another user clears
        seen.append(clear_chunk_sets(cache))
        return end_epoch(trainer, *args)

    monkeypatch.setattr(P.Trainer, "_end_epoch", clear_then_end)
    argv = ["train", str(data), "--n-bits", "10", "--chunk-size", "50", "--epochs", "2"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--cache-dir", str(cache)]) == 0
    assert [(len(removed), len(in_use)) for removed, in_use in seen] == [(0, 1), (0, 1)]
    assert f"process {os.getpid()}: " in seen[0][1][0]["holders"][0]
    (folder,) = cache.iterdir()
    assert not list(folder.glob(".in-use-*"))  # the run has ended: nothing names it
    assert [len(removed) for removed in clear_chunk_sets(cache)] == [1, 0]


def test_a_link_in_a_set_leads_nowhere(tmp_path, data):
    cache, outside = tmp_path / "cache", tmp_path / "outside.txt"
    outside.write_text("the user's")
    list(_reader(data).cached(cache))
    (folder,) = cache.iterdir()
    (folder / ".lock").unlink()
    (folder / ".lock").symlink_to(outside)
    (folder / "manifest.json").unlink()  # a pass would rewrite the set: it must not
    _same(list(_reader(data).cached(cache)), list(_reader(data)))
    assert (folder / ".lock").is_symlink()
    assert len(clear_chunk_sets(cache)[0]) == 1 and list(cache.iterdir()) == []
    assert outside.read_text() == "the user's"
