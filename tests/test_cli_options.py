"""Each option of ``sparseopt train`` does what its help says: checked against a reference
(the estimator on the same rows, a file that differs only where the option says it looks
away) rather than by the exit status alone. Small files, the kernels other tests compile."""

import gzip
import json

import numpy as np
import pytest
from sklearn.metrics import log_loss

import sparseopt
from sparseopt.cli import main
from sparseopt.datasets import read_criteo, sample_path
from sparseopt.inspect import load_tokens


@pytest.fixture(autouse=True)
def _data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEOPT_DATA", str(tmp_path / "data_home"))


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):
    """1,000 training and 300 validation rows of the packaged sample, as plain TSV."""
    root = tmp_path_factory.mktemp("criteo")
    with gzip.open(sample_path("train"), "rt") as f:
        lines = [next(f) for _ in range(1300)]
    (root / "train.tsv").write_text("".join(lines[:1000]))
    (root / "valid.tsv").write_text("".join(lines[1000:]))
    return root / "train.tsv", root / "valid.tsv"


def _csv(path, sep=",", label="click", seed=0, scramble=()):
    """600 rows: an id, text columns a and b, a count n, the label in the middle. Columns
    named in ``scramble`` get other values (what an option that ignores them must not see)."""
    rng = np.random.default_rng(seed)
    n = 600
    a = rng.integers(0, 8, n)
    count = rng.integers(0, 60, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(a - 3.5) / 2 - (count - 30) / 30))).astype(int)
    other = np.random.default_rng(seed + 1)
    columns = {
        "id": np.arange(n) + (10_000 if "id" in scramble else 0),
        "a": [f"a{v}" for v in a],
        label: y,
        "b": [f"b{v}" for v in other.integers(0, 30, n)] if "b" in scramble else ["b"] * n,
        "n": count,
    }
    lines = [sep.join(columns)]
    lines += [sep.join(str(col[i]) for col in columns.values()) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _train(data, out, *extra):
    argv = ["train", str(data), "--out", str(out), "--epochs", "1", "--n-bits", "12", *extra]
    assert main(argv) == 0
    return sparseopt.load(out / "model.npz")


def _same(a, b):
    return np.array_equal(a.state_.table, b.state_.table) and np.array_equal(
        a.state_.bias, b.state_.bias
    )


CSV = ["--format", "csv", "--label", "click"]


def test_csv_column_options(tmp_path):
    """--features and --exclude choose the columns (the others may hold anything), --label
    finds the label by name, --sep splits the fields, --numeric keeps a column as one
    numeric feature instead of one hashed feature per value."""
    base = _train(_csv(tmp_path / "a.csv"), tmp_path / "base", *CSV, "--features", "a,n")
    scrambled = _csv(tmp_path / "b.csv", scramble=("id", "b"))
    assert _same(base, _train(scrambled, tmp_path / "f", *CSV, "--features", "a,n"))
    assert _same(base, _train(scrambled, tmp_path / "x", *CSV, "--exclude", "id,b"))
    assert not _same(base, _train(scrambled, tmp_path / "all", *CSV, "--exclude", "id"))
    semi = _csv(tmp_path / "c.csv", sep=";", label="y")
    argv = ["--format", "csv", "--label", "y", "--features", "a,n", "--sep", ";"]
    assert _same(base, _train(semi, tmp_path / "sep", *argv))
    numeric = _train(tmp_path / "a.csv", tmp_path / "num", *CSV, "--features", "a,n",
                     "--numeric", "n")  # fmt: skip
    # 8 values of a, 60 of n: hashed, n takes ~60 columns; numeric, one
    touched = np.count_nonzero(base.coef_), np.count_nonzero(numeric.coef_)
    assert touched[0] - touched[1] >= 40 and 8 <= touched[1] <= 10
    summary = json.loads((tmp_path / "num" / "metrics.json").read_text())
    assert summary["data"]["numeric"] == ["n"] and summary["data"]["features"] == ["a", "n"]


def test_libsvm_n_features(tmp_path):
    data = tmp_path / "d.svm"
    rows = [f"{i % 2} {1 + i % 7}:1 {8 + i % 3}:0.5" for i in range(400)]
    data.write_text("\n".join(rows) + "\n")
    model = _train(data, tmp_path / "run", "--format", "libsvm", "--n-features", "40")
    assert model.n_features_in_ == 40
    wide = tmp_path / "wide.svm"
    wide.write_text("1 39:1\n0 2:1\n")
    assert main(["predict", str(tmp_path / "run" / "model.npz"), str(wide), "--out",
                 str(tmp_path / "p.txt")]) == 0  # fmt: skip
    assert np.loadtxt(tmp_path / "p.txt").shape == (2,)


def test_l1_zeroes_weights(criteo, tmp_path):
    plain = _train(criteo[0], tmp_path / "plain", "--optimizer", "ftrl")
    sparse = _train(criteo[0], tmp_path / "l1", "--optimizer", "ftrl", "--l1", "2")
    assert sparse.optimizer_.l1 == 2.0 and plain.optimizer_.l1 == 0.0
    assert np.count_nonzero(sparse.coef_) < 0.5 * np.count_nonzero(plain.coef_)


def test_set_shuffle_true(criteo, tmp_path):
    first = _train(criteo[0], tmp_path / "a", "--set", "shuffle=true", "--seed", "1")
    again = _train(criteo[0], tmp_path / "b", "--set", "shuffle=true", "--seed", "1")
    ordered = _train(criteo[0], tmp_path / "c")
    assert first.shuffle is True and _same(first, again) and not _same(first, ordered)


def test_parse_threads_give_the_same_model(criteo, tmp_path):
    one = _train(criteo[0], tmp_path / "one", "--parse-threads", "1", "--no-cache")
    two = _train(criteo[0], tmp_path / "two", "--parse-threads", "2", "--no-cache")
    assert _same(one, two)


def test_max_tokens_caps_the_kept_values(criteo, tmp_path):
    run = tmp_path / "run"
    _train(criteo[0], run, "--keep-tokens", "--max-tokens", "5")
    tokens = load_tokens(run / "tokens.npz")
    per_field = np.bincount(tokens.field, minlength=len(tokens.field_names))
    assert per_field.max() == 5  # the sample's fields hold more than 5 values each


def test_progress_flags(criteo, tmp_path, capsys):
    _train(criteo[0], tmp_path / "quiet", "--no-progress")
    assert capsys.readouterr().err == ""
    _train(criteo[0], tmp_path / "bar", "--progress")
    err = capsys.readouterr().err
    assert "rows" in err or "%" in err


@pytest.mark.parametrize("model", ["fm", "ffm"])
def test_factorization_machines_train_predict_and_evaluate(criteo, tmp_path, capsys, model):
    train, valid = criteo
    run = tmp_path / model
    extra = ["--field-aware"] if model == "ffm" else []
    fitted = _train(train, run, "--model", model, *extra)
    expected_class = {"fm": "FMClassifier", "ffm": "FFMClassifier"}[model]
    assert type(fitted).__name__ == expected_class
    X, y = read_criteo(valid, n_bits=12, field_aware=model == "ffm").read()
    p = fitted.predict_proba(X)[:, 1]
    out = tmp_path / "p.txt"
    assert main(["predict", str(run / "model.npz"), str(valid), "--out", str(out)]) == 0
    np.testing.assert_allclose(np.loadtxt(out), p, rtol=1e-5)
    capsys.readouterr()
    assert main(["evaluate", str(run / "model.npz"), str(valid), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n_rows"] == 300
    assert metrics["logloss"] == pytest.approx(log_loss(y, p), rel=1e-6)
    assert metrics["logloss"] < log_loss(y, np.full(y.size, y.mean())) + 0.05


def test_a_small_file_that_diverges_is_not_saved(tmp_path, capsys):
    """200 rows at a learning rate that diverges: the epoch's training logloss is judged at
    any size on the command line (the estimators wait for 1,000 rows), so nothing is saved."""
    data = _csv(tmp_path / "a.csv")
    data.write_text("\n".join(data.read_text().splitlines()[:201]) + "\n")
    argv = ["train", str(data), *CSV, "--optimizer", "sgd", "--epochs", "1", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "bad"), "--learning-rate", "100"]) == 1
    err = capsys.readouterr().err
    assert "ended with a training logloss" in err and "learning_rate=100.0" in err
    assert not (tmp_path / "bad" / "model.npz").exists()
    assert main([*argv, "--out", str(tmp_path / "good"), "--learning-rate", "0.05"]) == 0


def test_compile_notice_is_not_written_into_the_progress_bar(monkeypatch):
    """On a terminal (stdout and stderr one stream) the notice clears the bar, takes a line
    of its own, and the bar is drawn again below it."""
    import io
    import re

    from tqdm.auto import tqdm

    from sparseopt._report import EpochBar

    terminal = io.StringIO()
    monkeypatch.setattr("sys.stdout", terminal)
    monkeypatch.setattr("sys.stderr", terminal)
    with tqdm(total=100, file=terminal, desc="epoch 1/1") as bar:
        bar.update(10)
        EpochBar(enabled=True, log=print).notice("compiling the kernels")
        bar.update(10)
    out = terminal.getvalue()
    assert re.search(r"\r +\rcompiling the kernels\n", out), repr(out)
    assert "20/100" in out.split("compiling the kernels\n")[1]
