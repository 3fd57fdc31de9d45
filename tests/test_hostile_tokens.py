"""Never crash, never lie: token counts (``keep_tokens``, ``tokens.npz``, ``top_features``,
``sparseopt inspect``) against tampered files, stale files, bad lines and careless calls.

A token file is untrusted input: every tampered file below must end ``sparseopt inspect``
with one line naming what is wrong (exit status 1, no traceback), in one child process that
runs the command for each. Hypothesis then edits the bytes of a saved file at random: each
edit is refused with a ValueError or loads exactly the saved tokens.
"""

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparseopt import FieldHasher, SparseLogisticRegression
from sparseopt import pipeline as P
from sparseopt.cli import main
from sparseopt.datasets import Tokens, load_tokens, sample_path
from sparseopt.inspect import top_features

BITS = ["--n-bits", "16"]


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):
    """2,000 rows of the packaged sample, as a file."""
    with gzip.open(sample_path("train"), "rt") as f:
        lines = [next(f) for _ in range(2000)]
    path = tmp_path_factory.mktemp("criteo") / "head.tsv"
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="module")
def run(criteo, tmp_path_factory):
    """A run folder trained with --keep-tokens."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", str(criteo), "--out", str(out), *BITS, "--keep-tokens"]) == 0
    return out


def _arrays(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _write(path, arrays, edit_meta=None):
    """A token file of ``arrays``, its metadata edited, written as Tokens.save does."""
    if edit_meta:
        meta = json.loads(arrays["meta"].tobytes())
        edit_meta(meta)
        arrays = dict(arrays, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _edited(good, key, change):
    arrays = _arrays(good)
    arrays[key] = change(arrays[key])
    return arrays


def _tampered_files(good, tmp):
    """name -> (path of a tampered token file, a fragment of the error it must give)."""
    a = _arrays(good)
    n_bits = json.loads(a["meta"].tobytes())["n_bits"]
    files = {}

    def add(name, fragment, arrays=None, raw=None, edit_meta=None):
        path = tmp / f"{len(files)}.npz"
        if raw is not None:
            path.write_bytes(raw)
        else:
            _write(path, arrays, edit_meta=edit_meta)
        files[name] = (path, fragment)

    add("0-byte file", "is not a token file", raw=b"")
    add("random bytes", "is not a token file", raw=os.urandom(300))
    add("text", "is not a token file", raw=b"field,value\n1,2\n")
    add("cut in half", "is not a token file", raw=good.read_bytes()[: good.stat().st_size // 2])
    add(
        "a model file",
        "is not a token file: it holds",
        raw=(good.parent / "model.npz").read_bytes(),
    )
    buf = io.BytesIO()
    np.savez_compressed(buf, **a)
    add("compressed", "compressed member", raw=buf.getvalue())
    add("a key missing", "expected", {k: v for k, v in a.items() if k != "count"})
    add("a key more", "expected", dict(a, extra=np.zeros(2)))
    add("old format", "older format", dict({k: v for k, v in a.items() if not k.startswith(
        "value")}, value=np.array(["x"] * a["field"].size)))  # fmt: skip
    add(
        "meta not JSON", "no sparseopt-tokens metadata", dict(a, meta=np.frombuffer(b"{", np.uint8))
    )
    add("meta of text dtype", "no sparseopt-tokens metadata", dict(a, meta=np.array("{}")))
    add("meta a list", "no sparseopt-tokens metadata", dict(a, meta=np.frombuffer(b"[]", np.uint8)))
    add("version 3", "version 3", a, edit_meta=lambda m: m.update(version=3))
    add("n_bits 0", "n_bits 0 is not in", a, edit_meta=lambda m: m.update(n_bits=0))
    add("n_bits 33", "n_bits 33 is not in", a, edit_meta=lambda m: m.update(n_bits=33))
    add("n_bits text", "'n_bits' is missing or of the wrong type", a,
        edit_meta=lambda m: m.update(n_bits="16"))  # fmt: skip
    add("n_bits true", "out of range", a, edit_meta=lambda m: m.update(n_bits=True))
    add(
        "n_bits smaller",
        "a column is not in [0, 2**15)",
        a,
        edit_meta=lambda m: m.update(n_bits=15),
    )
    add("max_tokens 0", "out of range", a, edit_meta=lambda m: m.update(max_tokens=0))
    add("field_names a string", "'field_names' is missing", a,
        edit_meta=lambda m: m.update(field_names="I1"))  # fmt: skip
    add("field_names repeated", "must be distinct names", a,
        edit_meta=lambda m: m.update(field_names=["I1"] * 39))  # fmt: skip
    add("field_names fewer", "a field index is not in [0, 3)", a,
        edit_meta=lambda m: m.update(field_names=["I1", "I2", "I3"]))  # fmt: skip
    add("field_aware flipped", "not the hash of their", a,
        edit_meta=lambda m: m.update(field_aware=True))  # fmt: skip
    add("model hash a number", "'model_sha256' is missing", a,
        edit_meta=lambda m: m.update(model_sha256=5))  # fmt: skip
    add("column beyond 2**n_bits", f"a column is not in [0, 2**{n_bits})",
        _edited(good, "column", lambda c: c + (1 << n_bits)))  # fmt: skip
    add("negative column", "a column is not in", _edited(good, "column", lambda c: -c - 1))
    add("column moved within range", "not the hash of their",
        _edited(good, "column", lambda c: (c + 1) % (1 << n_bits)))  # fmt: skip
    add("columns as floats", "column must hold integers", _edited(good, "column", np.float64))
    add("columns 2-D", "column must be a 1-D array", _edited(good, "column", lambda c: c[:, None]))
    add("field 2-D", "field must be a 1-D array", _edited(good, "field", lambda f: f[:, None]))
    add("field short", "value_offsets must rise", _edited(good, "field", lambda f: f[:-1]))
    add("count short", "count has", _edited(good, "count", lambda c: c[:-1]))
    add("column short", "column has", _edited(good, "column", lambda c: c[:-1]))
    add(
        "offsets short", "value_offsets must rise", _edited(good, "value_offsets", lambda o: o[:-1])
    )
    add("offsets falling", "value_offsets must rise",
        _edited(good, "value_offsets", lambda o: o[::-1].copy()))  # fmt: skip
    add("offsets past the bytes", "value_offsets must rise",
        _edited(good, "value_offsets", lambda o: o + 1))  # fmt: skip
    add("offsets as floats", "value_offsets must be 1-D integers",
        _edited(good, "value_offsets", np.float64))  # fmt: skip
    add("bytes not uint8", "value_bytes 1-D uint8", _edited(good, "value_bytes", np.int16))
    add(
        "bytes not UTF-8",
        "a value is not UTF-8 text",
        _edited(good, "value_bytes", lambda b: np.where(b == b[0], 0xFF, b).astype(np.uint8)),
    )
    add("field out of range", "a field index is not in [0, 39)",
        _edited(good, "field", lambda f: f + 39))  # fmt: skip
    add("negative field", "a field index is not in", _edited(good, "field", lambda f: f - 1))
    add(
        "field as text", "field must hold integers", _edited(good, "field", lambda f: f.astype(str))
    )
    add("negative count", "a count is negative", _edited(good, "count", lambda c: -c))
    add("value changed", "not the hash of their", _edited(good, "value_bytes", lambda b: np.where(
        b == ord("a"), ord("b"), b).astype(np.uint8)))  # fmt: skip
    return files


CHILD = r"""
import contextlib, io, json, sys
from sparseopt.cli import main
for name, argv in json.loads(sys.argv[1]).items():
    print(json.dumps(["start", name]), flush=True)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except BaseException as exc:
            status = f"{type(exc).__name__}: {exc}"
    print(json.dumps([name, [status, err.getvalue()]]), flush=True)
"""


def test_tampered_token_files_end_inspect_with_one_clear_error(run, tmp_path):
    files = _tampered_files(run / P.TOKENS_FILE, tmp_path)
    model = str(run / "model.npz")
    argv = {name: ["inspect", model, "--tokens", str(path)] for name, (path, _) in files.items()}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    running = lines[-1][1] if lines and lines[-1][0] == "start" else None
    assert proc.returncode == 0, f"status {proc.returncode} in case {running!r}\n{proc.stderr}"
    results = {name: out for name, out in lines if name != "start"}
    assert set(results) == set(files)
    wrong = {}
    for name, (status, err) in results.items():
        fragment = files[name][1]
        if status != 1 or fragment not in err or "Traceback" in err or err.count("\n") != 1:
            wrong[name] = f"status {status}: {err.strip()} (expected ...{fragment}...)"
    assert not wrong, "\n".join(f"{k}: {v}" for k, v in wrong.items())
    # and the untouched file names the features
    assert main(["inspect", model, "--tokens", str(run / P.TOKENS_FILE), "--top", "3"]) == 0


def test_a_token_file_names_only_the_model_saved_with_it(criteo, run, tmp_path, capsys):
    assert load_tokens(run / P.TOKENS_FILE).model_sha256 == P.file_sha256(run / "model.npz")
    other = tmp_path / "other"
    other.mkdir()
    (other / P.TOKENS_FILE).write_bytes((run / P.TOKENS_FILE).read_bytes())
    # a new model in a folder that holds another model's tokens
    assert main(["train", str(criteo), "--out", str(other), *BITS, "--epochs", "2"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(other / "model.npz")]) == 0
    out, err = capsys.readouterr()
    assert "holds the token counts of another model" in err and "column" in out.splitlines()[0]
    assert "I1" not in out and "C1" not in out  # no field names on the new weights
    assert main(["inspect", str(other / "model.npz"), "--tokens", str(other / P.TOKENS_FILE)]) == 1
    assert "another model" in capsys.readouterr().err
    # trained again with --keep-tokens: named again
    assert main(["train", str(criteo), "--out", str(other), *BITS, "--keep-tokens"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(other / "model.npz"), "--top", "5"]) == 0
    assert "collisions" in capsys.readouterr().out


def _with_bad_lines(criteo, tmp_path):
    """The sample with a count that is not a number on line 1234, and lines that the reader
    refuses but Arrow's CSV reader would take: a categorical that is not UTF-8 (line 1500), a
    separator inside quotes (line 1700), a label 2 (line 1800) and a count 1e16 (line 1900)."""
    lines = criteo.read_bytes().splitlines(keepends=True)
    for number, column, value in (
        (1234, 3, b"x7"),
        (1500, 20, b"ab\xffcd"),
        (1700, 30, b'"a\tb"'),
        (1800, 0, b"2"),
        (1900, 5, b"1e16"),
    ):
        fields = lines[number - 1].split(b"\t")
        fields[column] = value
        lines[number - 1] = b"\t".join(fields)
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"".join(lines))
    return path


def test_bad_lines_stop_keep_tokens_before_any_model_naming_file_and_line(criteo, tmp_path, capsys):
    bad = _with_bad_lines(criteo, tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(bad), "--out", str(out), *BITS, "--keep-tokens"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}, line 1234: column 4: 'x7' is not an integer count" in err
    assert not (out / "model.npz").exists() and not (out / P.TOKENS_FILE).exists()
    # skipped, they are skipped by the counting too: every trained row counted once per field
    argv = ["train", str(bad), "--out", str(out), *BITS, "--keep-tokens", "--skip-bad-lines"]
    assert main(argv) == 0
    assert "5 bad lines skipped" in capsys.readouterr().out
    tokens = load_tokens(out / P.TOKENS_FILE)
    for field in (0, 20, 30, 38):
        assert tokens.count[tokens.field == field].sum() == 1995


def test_a_quoted_header_and_quoted_values_count_as_pandas_reads_them(tmp_path, capsys):
    rows = ['"y","site ""s""",n'] + [f'{i % 2},"v{i % 3}",{i % 5}' for i in range(1200)]
    path = tmp_path / "q.csv"
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    argv = ["train", str(path), "--format", "csv", "--label", "y", "--out", str(out)]
    assert main([*argv, *BITS, "--keep-tokens"]) == 0
    capsys.readouterr()
    tokens = load_tokens(out / P.TOKENS_FILE)
    assert tokens.field_names == ['site "s"', "n"]
    frame = pd.read_csv(path).drop(columns="y")
    kept = FieldHasher(16, numeric="categorical", keep_tokens=True).fit(frame).tokens_
    for name in ("field", "value", "count", "column"):
        assert np.array_equal(getattr(tokens, name), getattr(kept, name)), name


def test_tokens_save_is_atomic(tmp_path, monkeypatch):
    df = pd.DataFrame({"site": ["a", "b", "a"], "app": ["x", "y", None]})
    tokens = FieldHasher(n_bits=8, keep_tokens=True).fit(df).tokens_
    path = tmp_path / "tokens.npz"
    tokens.save(path)
    before = path.read_bytes()

    def fail(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError, match="disk full"):
        tokens.save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["tokens.npz"]


def test_long_values_and_nul_bytes_keep_their_own_length(tmp_path):
    long = "u" * 1_000_000
    df = pd.DataFrame({"url": [long, "a", "a\x00", "a\x00", "b"] * 2})
    hasher = FieldHasher(n_bits=12, keep_tokens=True).fit(df)
    tokens = hasher.tokens_
    assert tokens.value.dtype == object  # each value its own length, not the longest's
    assert dict(zip(tokens.value.tolist(), tokens.count.tolist(), strict=True)) == {
        long: 2, "a": 2, "a\x00": 4, "b": 2}  # fmt: skip
    tokens.save(tmp_path / "t.npz")
    assert (tmp_path / "t.npz").stat().st_size < 1_100_000
    back = load_tokens(tmp_path / "t.npz")
    assert back.value.tolist() == tokens.value.tolist()
    model = SparseLogisticRegression(max_iter=2).fit(hasher.transform(df), [0, 1, 1, 1, 0] * 2)
    top = top_features(model, back, n=None)
    assert sorted(top["value"]) == sorted(tokens.value.tolist())
    assert top.set_index("value").loc["a\x00", "count"] == 4


def test_top_features_refuses_a_bad_n_and_bad_tokens():
    df = pd.DataFrame({"site": ["a", "b", "a", "c"]})
    hasher = FieldHasher(n_bits=8, keep_tokens=True).fit(df)
    model = SparseLogisticRegression(max_iter=2).fit(hasher.transform(df), [0, 1, 0, 1])
    for n in (-5, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="n must be a number of rows"):
            top_features(model, hasher, n=n)
    assert len(top_features(model, hasher, n=0)) == 0
    assert len(top_features(model, hasher, n=10**9)) == 3
    t = hasher.tokens_
    for edit, message in (
        (dict(column=t.column - 300), "a column is not in"),
        (dict(field=t.field + 1), "a field index is not in"),
        (dict(count=t.count[:-1]), "count has 2 entries"),
    ):
        with pytest.raises(ValueError, match=message):
            top_features(model, Tokens(**{**t.__dict__, **edit}), n=None)


# -- Hypothesis: random byte edits of a token file --------------------------------------------
N_CASES = 300
FUZZ = settings(
    max_examples=N_CASES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@pytest.fixture(scope="module")
def saved_tokens(tmp_path_factory):
    df = pd.DataFrame({"site": ["a", "b", "a", "é", None], "n": [1.0, 2.0, 3.0, None, 5.0]})
    tokens = FieldHasher(n_bits=10, keep_tokens=True, numeric="bucket").fit(df).tokens_
    path = tmp_path_factory.mktemp("tokens") / "tokens.npz"
    tokens.save(path)
    return tokens, path.read_bytes()


EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "cut"]), st.integers(0, 10**6), st.integers(0, 255)
    ),
    min_size=1,
    max_size=4,
)


@FUZZ
@given(EDITS)
def test_random_byte_edits_are_refused_or_load_the_saved_tokens(
    saved_tokens, tmp_path_factory, edits
):
    tokens, data = saved_tokens
    data = bytearray(data)
    for op, where, byte in edits:
        i = where % (len(data) + 1)
        if op == "flip" and i < len(data):
            data[i] ^= byte or 1
        elif op == "insert":
            data[i:i] = bytes([byte])
        else:
            del data[i : i + 1 + byte % 8]
    path = tmp_path_factory.getbasetemp() / f"edit-{hashlib.sha1(bytes(data)).hexdigest()}.npz"
    path.write_bytes(bytes(data))
    try:
        back = load_tokens(path)
    except ValueError:
        return
    for name in ("field_names", "n_bits", "max_tokens", "field_aware", "model_sha256"):
        assert getattr(back, name) == getattr(tokens, name), name
    for name in ("field", "value", "count", "column"):
        assert np.array_equal(getattr(back, name), getattr(tokens, name)), name
