"""The command line as a person meets it: bare command, version, help, the chunk cache, the
progress bar, and feature names (train --keep-tokens, inspect)."""

import functools
import gzip
import json
import time

import numpy as np
import pyarrow as pa
import pytest
import tqdm.auto

import sparseopt
from sparseopt import _report
from sparseopt import pipeline as P
from sparseopt._report import fit_terminal
from sparseopt.cli import build_parser, main
from sparseopt.cli._commands import _size
from sparseopt.datasets import make_ctr, sample_path
from sparseopt.estimators import LinearTraining
from sparseopt.inspect import load_tokens

BITS = ["--n-bits", "16"]
COMMANDS = ["train", "predict", "recommend", "evaluate", "inspect", "cache"]


@pytest.fixture(autouse=True)
def _data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEOPT_DATA", str(tmp_path / "data_home"))


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):
    """2,000 rows of the packaged sample, as plain TSV."""
    path = tmp_path_factory.mktemp("criteo") / "train.tsv"
    with gzip.open(sample_path("train"), "rt") as f:
        path.write_text("".join(next(f) for _ in range(2000)))
    return path


def test_bare_command_prints_the_commands(capsys):
    assert main([]) == 2  # argparse's status for a missing argument
    err = capsys.readouterr().err
    assert err.startswith("usage: sparseopt")
    for name in COMMANDS:
        line = next(line for line in err.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split()) > 2  # the command and its one-line description


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"sparseopt {sparseopt.__version__}\n"


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help_has_no_markup(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":class:" not in out and ":func:" not in out
    assert build_parser().description.startswith("The sparseopt command")


def test_cache_shows_and_clears_the_chunk_cache(criteo, tmp_path, capsys):
    root = tmp_path / "data_home" / "chunks"
    assert main(["cache"]) == 0
    assert f"chunk cache: {root}" in capsys.readouterr().out
    for chunk_size in ("500", "1000"):
        argv = ["train", str(criteo), "--out", str(tmp_path / "run"), "--chunk-size", chunk_size]
        assert main([*argv, *BITS]) == 0
    (root / "notes").mkdir()  # not a cache: left alone
    (root / "notes" / "todo.txt").write_text("keep me")
    capsys.readouterr()

    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    size = sum(f.stat().st_size for f in root.glob("train.tsv-*/*"))
    assert "2 cached chunk sets" in out and _size(size) in out

    assert main(["cache", "--clear"]) == 0
    assert f"removed 2 cached chunk sets ({_size(size)}) from {root}" in (capsys.readouterr().out)
    assert [p.name for p in root.iterdir()] == ["notes"]
    assert main(["cache", "--cache-dir", str(root)]) == 0
    assert "0 cached chunk sets" in capsys.readouterr().out


def _position(frame):
    """The rows done in a frame of the bar ("1.25k/2.00k" gives 1250)."""
    done = frame.split("|")[2].split("/")[0].strip()
    return float(done[:-1]) * 1000 if done.endswith("k") else float(done)


def test_progress_bar_has_a_total_moves_within_a_chunk_and_shows_the_loss(
    criteo, tmp_path, monkeypatch, capsys
):
    draw_every_step = functools.partial(tqdm.auto.tqdm, mininterval=0, miniters=1)
    monkeypatch.setattr(tqdm.auto, "tqdm", draw_every_step)
    monkeypatch.setattr(_report, "TICK_SECONDS", 0.02)
    # the count compiles on an empty Numba cache: a loaded machine needs more than a second
    monkeypatch.setattr(_report, "COUNT_WAIT_SECONDS", 120)
    train_rows = LinearTraining.epoch  # the click model the command line trains

    def slow(training, rows, order):  # 0.2 s a chunk: time for the bar to move within it
        time.sleep(0.2)
        return train_rows(training, rows, order)

    monkeypatch.setattr(LinearTraining, "epoch", slow)
    argv = ["train", str(criteo), "--out", str(tmp_path / "run"), "--progress"]
    assert main([*argv, *BITS, "--chunk-size", "500", "--no-cache"]) == 0
    frames = [f for f in capsys.readouterr().err.split("\r") if "epoch 1/1" in f]
    assert all("/2.00k" in f for f in frames)  # the total, counted before the first row
    assert all("loss=" in f for f in frames)
    positions = [_position(f) for f in frames if f.count("|") == 2]
    assert positions == sorted(positions) and positions[-1] == 2000  # never ahead of the truth
    within = {p for p in positions if p % 500}
    assert len(within) >= 3  # moved within the chunks after the first


def test_epoch_lines_break_between_words_on_a_terminal(monkeypatch):
    line = "epoch 1/1: 43,000 rows/s, train logloss 0.5155  |  validation logloss 0.4873  AUC"
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    wrapped = fit_terminal(line).splitlines()
    assert max(map(len, wrapped)) < 40 and " ".join(wrapped).split() == line.split()
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert fit_terminal(line) == line


@pytest.mark.parametrize(
    "spec",
    [
        {"format": "criteo"},
        {"format": "criteo", "field_aware": True},
        {"format": "avazu"},
        {"format": "csv", "label": "y", "features": ["c", "a"], "numeric": ["n"]},
    ],
    ids=["criteo", "criteo-field-aware", "avazu", "csv"],
)
def test_token_tables_hash_to_the_readers_columns(spec, criteo, tmp_path):
    path = criteo
    if spec["format"] == "avazu":
        path = tmp_path / "avazu.csv"
        path.write_text(
            "id,click,hour,C1,site_id\n1,0,14102100,1005,1fbe01fe\n2,1,14102100,,e151e245\n"
            "3,0,14102101,1002,1fbe01fe\n"
        )
    elif spec["format"] == "csv":
        path = tmp_path / "data.csv"
        path.write_text("a,y,n,c,skip\nx,1,2.5,u,0\n,0,,v,1\nx,0,-1,,2\n")
    spec = P.DataSpec(n_bits=12, **spec)
    table = pa.Table.from_batches(list(P.feature_tables(spec, path)))
    X, _ = spec.reader(path).read()
    Xt = P.file_hasher(spec).fit_transform(table)
    assert (Xt != X).nnz == 0 and Xt.nnz == X.nnz
    if spec.format == "csv":
        assert table.column_names == ["c", "a"]  # field order, not the file's


def test_keep_tokens_then_inspect_names_the_strongest_features(criteo, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(criteo), "--out", str(run), *BITS, "--keep-tokens"]) == 0
    assert f"token counts: {run / 'tokens.npz'}" in capsys.readouterr().out
    tokens = load_tokens(run / "tokens.npz")
    assert tokens.field_names == [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    assert tokens.count[tokens.field == 0].sum() == 2000  # every row counted once per field

    assert main(["inspect", str(run / "model.npz"), "--top", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    weights = sparseopt.load(run / "model.npz").coef_[0]
    strongest = np.sort(np.abs(weights[tokens.column]))[::-1][:5]
    np.testing.assert_allclose([abs(r["weight"]) for r in rows], strongest, rtol=1e-6)
    for r in rows:  # named: the field and value hash to the column weighed
        assert r["field"] in tokens.field_names and weights[r["column"]] == pytest.approx(
            r["weight"]
        )

    assert main(["inspect", str(run / "model.npz"), "--field", "C9", "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["field", "value", "weight", "count", "collisions"]
    assert len(lines) == 4 and all(line.split()[0] == "C9" for line in lines[1:])


def test_inspect_without_tokens_lists_columns_and_says_how_to_name_them(criteo, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(criteo), "--out", str(run), *BITS]) == 0
    capsys.readouterr()
    assert main(["inspect", str(run / "model.npz"), "--top", "3"]) == 0
    out, err = capsys.readouterr()
    assert out.split()[:2] == ["column", "weight"] and len(out.splitlines()) == 4
    assert "--keep-tokens" in err
    assert main(["inspect", str(run / "model.npz"), "--field", "C1"]) == 1
    assert "--keep-tokens" in capsys.readouterr().err


def test_inspect_finds_planted_effects_by_name(tmp_path, capsys):
    data = make_ctr(100_000, n_fields=12, n_values=200, n_planted=10, as_frame=True,
                    random_state=0)  # fmt: skip
    path = tmp_path / "clicks.csv"
    data.frame.assign(click=data.y).to_csv(path, index=False)
    run = tmp_path / "run"
    argv = ["train", str(path), "--format", "csv", "--label", "click", "--out", str(run)]
    assert main([*argv, "--n-bits", "18", "--epochs", "3", "--keep-tokens"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(run / "model.npz"), "--json"]) == 0
    top = json.loads(capsys.readouterr().out)
    found = {(r["field"], r["value"]) for r in top}
    planted = zip(data.planted_fields, data.planted_values, strict=True)
    assert len(found & {(f"f{f}", str(v)) for f, v in planted}) >= 8


def test_inspect_errors_are_one_line(criteo, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    for argv in (["inspect", str(tmp_path / "missing.npz")], ["inspect", str(bad)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("sparseopt: error: ") and err.count("\n") == 1
    run = tmp_path / "run"
    assert main(["train", str(criteo), "--out", str(run), *BITS]) == 0
    for tokens in (tmp_path / "missing-tokens.npz", bad):
        assert main(["inspect", str(run / "model.npz"), "--tokens", str(tokens)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("sparseopt: error: ") and err.count("\n") == 1
