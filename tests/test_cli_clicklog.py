"""``sparseopt train --interactions --weight-column --negative-rate`` (issue 25)."""

import json
import math
import re

import numpy as np
import pytest

import sparseopt
from sparseopt import SparseLogisticRegression, _io
from sparseopt import pipeline as P
from sparseopt.cli import main
from sparseopt.datasets import read_csv

FIELDS = ("site", "app", "dev", "hour")
SIZES = (40, 15, 8, 24)


def _write_log(path, n_rows, seed, weights=True):
    """A click log at about 8% clicks from a known logistic model with a site x app effect."""
    model = np.random.default_rng(100)
    field_weights = [model.normal(0, 0.8, v) for v in SIZES]
    pair = model.normal(0, 0.8, SIZES[:2])
    rng = np.random.default_rng(seed)
    values = np.column_stack([rng.integers(0, v, n_rows) for v in SIZES])
    logit = -3.2 + sum(w[values[:, f]] for f, w in enumerate(field_weights))
    logit += pair[values[:, 0], values[:, 1]]
    y = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(int)
    w = rng.choice([0.5, 1.0, 3.0], n_rows)
    with open(path, "w") as f:
        f.write(",".join(["click", *FIELDS] + (["w"] if weights else [])) + "\n")
        for row, label, weight in zip(values, y, w, strict=True):
            text = [str(label)] + [f"{name[0]}{v}" for name, v in zip(FIELDS, row, strict=True)]
            f.write(",".join(text + ([f"{weight:g}"] if weights else [])) + "\n")
    return y


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clicklog")
    train, test = folder / "train.csv", folder / "test.csv"
    y_train = _write_log(train, 60_000, 1)
    _write_log(test, 10_000, 2)
    return train, test, y_train


CSV = ["--format", "csv", "--label", "click", "--no-cache", "--epochs", "1"]
UNWEIGHTED = [*CSV, "--exclude", "w"]


def test_weight_column_trains_as_partial_fit_with_sample_weight(logs, tmp_path, capsys):
    train, _, _ = logs
    out = tmp_path / "run"
    argv = ["train", str(train), *CSV, "--weight-column", "w", "--chunk-size", "7000"]
    assert main([*argv, "--interactions", "site*app", "--out", str(out)]) == 0
    cli = sparseopt.load(out / "model.npz")
    model = SparseLogisticRegression()
    reader = read_csv(train, "click", weight_column="w", chunk_size=7000, interactions="site*app")
    for X, y, w in reader:
        model.partial_fit(X, y, classes=[0, 1], sample_weight=w)
    assert np.array_equal(cli.coef_, model.coef_) and np.array_equal(
        cli.intercept_, model.intercept_
    )
    unweighted = SparseLogisticRegression()
    for X, y, _ in reader:
        unweighted.partial_fit(X, y, classes=[0, 1])
    assert not np.array_equal(cli.coef_, unweighted.coef_)  # the weights were used
    meta = _io.read_metadata(out / "model.npz")
    assert meta["data"]["interactions"] == ["site*app"] and meta["data"]["weight_column"] == "w"


def test_predict_and_evaluate_apply_the_models_crosses(logs, tmp_path, capsys):
    train, test, _ = logs
    out = tmp_path / "run"
    spec = "site*app,dev*"
    assert main(["train", str(train), *UNWEIGHTED, "--interactions", spec, "--out", str(out)]) == 0
    assert main(["predict", str(out / "model.npz"), str(test), "--out", str(tmp_path / "p")]) == 0
    model = sparseopt.load(out / "model.npz")
    X, _ = read_csv(test, "click", exclude=["w"], interactions=spec).read()
    assert np.allclose(np.loadtxt(tmp_path / "p"), model.predict_proba(X)[:, 1], rtol=1e-5)
    capsys.readouterr()
    assert main(["evaluate", str(out / "model.npz"), str(test), "--interactions", "site*app"]) == 1
    assert "--interactions ['site*app'] differs from the model's" in capsys.readouterr().err


def _mean_prediction(model_path, path):
    X, _ = read_csv(path, "click", exclude=["w"]).read()
    return float(sparseopt.load(model_path).predict_proba(X)[:, 1].mean())


def test_negative_rate_keeps_predictions_calibrated(logs, tmp_path, capsys):
    """The mean predicted probability on held-out rows within 2% of their click rate.

    The shift by log r is exact for a model near its optimum; one pass of a shrunk online
    model under-predicts by a few percent (benchmarks/README.md), so the run trains 10 epochs.
    """
    train, test, _ = logs
    out = tmp_path / "run"
    argv = ["train", str(train), *UNWEIGHTED, "--negative-rate", "0.2", "--epochs", "10"]
    assert main([*argv, "--out", str(out), "--validation", str(test)]) == 0
    assert "intercept is shifted by log(0.2) = -1.6094" in capsys.readouterr().out
    X, y = read_csv(test, "click", exclude=["w"]).read()
    mean = sparseopt.load(out / "model.npz").predict_proba(X)[:, 1].mean()
    assert abs(mean / y.mean() - 1) < 0.02, (mean, y.mean())
    meta = _io.read_metadata(out / "model.npz")
    assert meta["data"]["negative_rate"] == 0.2
    assert meta["downsampling"]["intercept_correction"] == pytest.approx(math.log(0.2))
    # the validation metrics of the run are those of the saved (corrected) model
    summary = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(out / "model.npz"), str(test), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["logloss"] == pytest.approx(summary["validation"]["logloss"], rel=1e-6)
    # without the correction (the intercept trained to), predictions are far above the rate
    state, _ = P.load_model(out / "model.npz")
    P.restore_training_intercept(state, out / "model.npz")
    assert state.predict_proba(X)[:, 1].mean() > 1.5 * y.mean()


def test_downsampled_run_saves_its_model_once_and_resumes_from_it(logs, tmp_path):
    """The last checkpoint of a downsampled run is its corrected model (one file, linked);
    resumed for more epochs from it, the run ends as one that ran them all, bit for bit."""
    train, _, _ = logs
    argv = ["train", str(train), *UNWEIGHTED, "--negative-rate", "0.3"]
    run, whole = tmp_path / "run", tmp_path / "whole"
    assert main([*argv, "--out", str(run)]) == 0
    (checkpoint,) = run.glob("checkpoint-*.npz")
    assert checkpoint.read_bytes() == (run / "model.npz").read_bytes()
    meta = _io.read_metadata(checkpoint)
    model = sparseopt.load(checkpoint)
    assert meta["training_intercept"] == pytest.approx(
        model.state_.bias[:, 0] - math.log(0.3), abs=1e-6
    )
    assert main([*argv, "--epochs", "2", "--out", str(run), "--resume"]) == 0
    assert main([*argv, "--epochs", "2", "--out", str(whole)]) == 0
    resumed, uninterrupted = (sparseopt.load(p / "model.npz") for p in (run, whole))
    np.testing.assert_array_equal(resumed.coef_, uninterrupted.coef_)
    np.testing.assert_array_equal(resumed.intercept_, uninterrupted.intercept_)
    # a damaged record of the training intercept is refused, not trained on
    with pytest.raises(P.PipelineError, match="training intercept"):
        P.restore_training_intercept(model, _with_metadata(tmp_path, model, meta))


def _with_metadata(tmp_path, model, meta):
    path = tmp_path / "damaged.npz"
    with _io.model_metadata({**meta, "training_intercept": ["nan"]}):
        model.save(path)
    return path


@pytest.mark.parametrize(
    "options, message",
    [
        (["--interactions", "site*nope"], "unknown field 'nope'"),
        (["--interactions", "app*app"], "crosses the field 'app' with itself"),
        (["--negative-rate", "0"], r"--negative-rate must be in \(0, 1\]"),
        (["--negative-rate", "1.5"], r"--negative-rate must be in \(0, 1\]"),
        (["--negative-rate", "nan"], r"--negative-rate must be in \(0, 1\]"),
        (["--weight-column", "nope"], "no weight column 'nope'"),
    ],
)
def test_bad_options_give_one_clear_error(logs, tmp_path, capsys, options, message):
    train, _, _ = logs
    assert main(["train", str(train), *CSV, *options, "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sparseopt: error:") and len(err.strip().splitlines()) == 1
    assert re.search(message, err)


@pytest.mark.parametrize("weight", ["-2", "nan", "x"])
def test_bad_weight_names_the_line(tmp_path, capsys, weight):
    path = tmp_path / "log.csv"
    path.write_text(f"click,site,w\n1,a,1\n0,b,1\n0,c,{weight}\n")
    argv = ["train", str(path), *CSV, "--weight-column", "w", "--out", str(tmp_path / "r")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"log.csv, line 4: column 3: the weight '{weight}' is not a finite number >= 0" in err


def test_weight_column_and_crosses_need_their_formats(tmp_path, capsys):
    from sparseopt.datasets import sample_path

    argv = ["train", str(sample_path("train")), "--out", str(tmp_path / "r"), "--epochs", "1"]
    assert main([*argv, "--weight-column", "w"]) == 1
    assert "--weight-column needs --format csv" in capsys.readouterr().err


def test_inspect_names_crosses(logs, tmp_path, capsys):
    train, _, _ = logs
    out = tmp_path / "run"
    argv = ["train", str(train), *UNWEIGHTED, "--interactions", "site*app", "--keep-tokens"]
    assert main([*argv, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out / "model.npz"), "--field", "site x app", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["field"] == "site x app" and " x " in r["value"] for r in rows)


@pytest.mark.parametrize(
    "option", [["--negative-rate", "0.5"], ["--interactions", "a*b"], ["--weight-column", "w"]]
)
def test_mf_refuses_the_click_log_options(tmp_path, capsys, option):
    path = tmp_path / "ratings.csv"
    path.write_text("1,2,5\n2,3,4\n")
    assert main(["train", str(path), "--model", "mf", *option, "--out", str(tmp_path / "r")]) == 1
    assert f"{option[0]} does not apply to --model mf" in capsys.readouterr().err
