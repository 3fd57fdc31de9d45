"""The sparseopt command and the training pipeline behind it (small files, model lr)."""

import gzip
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

import sparseopt
from sparseopt import pipeline as P
from sparseopt.cli import main
from sparseopt.datasets import read_criteo, sample_path
from sparseopt.estimators import LinearTraining
from sparseopt.metrics import ClickMetrics

BITS = ["--n-bits", "16"]


@pytest.fixture(autouse=True)
def _data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEOPT_DATA", str(tmp_path / "data_home"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """2,000 training and 500 validation rows of the packaged sample, as plain TSV."""
    root = tmp_path_factory.mktemp("criteo")
    out = {}
    for subset, n in [("train", 2000), ("valid", 500)]:
        with gzip.open(sample_path(subset), "rt") as f:
            lines = [next(f) for _ in range(n)]
        out[subset] = root / f"{subset}.tsv"
        out[subset].write_text("".join(lines))
    return out


def train(files, out, *extra, after_chunk=None):
    argv = ["train", str(files["train"]), "--out", str(out), "--validation", str(files["valid"])]
    return main([*argv, *BITS, "--chunk-size", "500", *extra], after_chunk=after_chunk)


def weights(path):
    return sparseopt.load(path).state_.table


def test_train_default_sample_prints_metrics_and_writes_report(tmp_path, capsys):
    report = tmp_path / "report.png"
    assert main(["train", "--out", str(tmp_path / "run"), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "validation: logloss" in out and "AUC" in out and "base rate" in out
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # --epochs auto on the sample's validation file: epoch 1 is best, 2 more show it
    assert summary["history"][0]["rows"] == 20_000 and summary["rows_seen"] == 60_000
    assert summary["kept_epoch"] == summary["best_epoch"] == 1
    valid = summary["validation"]
    assert valid["n_rows"] == 5_000 and valid["logloss"] < 0.52 and valid["auc"] > 0.7
    assert abs(valid["mean_prediction"] - valid["base_rate"]) < 0.05
    assert report.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_epochs_checkpoints_and_evaluate_json(files, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(files, run, "--epochs", "2") == 0
    assert len(list((tmp_path / "data_home" / "chunks").glob("train.tsv-*/manifest.json"))) == 1
    summary = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert summary["rows_seen"] == 4000 and summary["data"]["n_bits"] == 16
    record = json.loads((run / "checkpoint.json").read_text())
    assert record["state"]["finished"] and (run / record["state"]["checkpoint"]).is_file()
    assert sorted(p.name for p in run.glob("checkpoint-*.npz")) == [record["state"]["checkpoint"]]
    capsys.readouterr()

    assert main(["evaluate", str(run / "model.npz"), str(files["valid"]), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    X, y = read_criteo(files["valid"], n_bits=16).read()
    p = sparseopt.load(run / "model.npz").predict_proba(X)[:, 1]
    assert metrics["n_rows"] == 500 and metrics["n_bad_lines"] == 0
    assert metrics["logloss"] == pytest.approx(log_loss(y, p), rel=1e-9)
    assert metrics["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-3)
    assert metrics["logloss"] == pytest.approx(summary["validation"]["logloss"])
    assert sum(b["n"] for b in metrics["calibration"]) == 500

    assert train(files, run) == 0  # a finished run's folder may be trained into again
    assert len(list(run.glob("checkpoint-*.npz"))) == 1


def test_predict_writes_one_probability_per_row(files, tmp_path):
    run = tmp_path / "run"
    assert train(files, run) == 0
    out = tmp_path / "pred" / "p.txt"
    argv = ["predict", str(run / "model.npz"), str(files["valid"]), "--out", str(out)]
    assert main([*argv, "--chunk-size", "64"]) == 0
    predicted = np.loadtxt(out)
    X, _ = read_criteo(files["valid"], n_bits=16).read()
    expected = sparseopt.load(run / "model.npz").predict_proba(X)[:, 1]
    np.testing.assert_allclose(predicted, expected, rtol=1e-5)


def test_click_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 3000)
    y = (rng.random(3000) < p).astype(float)
    m = ClickMetrics()
    m.update(y[:1000], p[:1000])
    m.update(y[1000:], p[1000:])
    r = m.result()
    assert r["logloss"] == pytest.approx(log_loss(y, p))
    assert r["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-4)
    assert r["mean_prediction"] == pytest.approx(p.mean()) and r["base_rate"] == y.mean()
    table = m.calibration(5)
    assert [b["n"] for b in table] == [600] * 5
    assert all(abs(b["mean_prediction"] - b["observed_rate"]) < 0.1 for b in table)


class Interrupt(Exception):
    """Stands for kill -9: no checkpoint is written on the way out."""


@pytest.mark.parametrize("error", [KeyboardInterrupt, Interrupt])
def test_resume_after_interruption_equals_uninterrupted(files, tmp_path, error, capsys):
    args = ("--epochs", "2", "--checkpoint-every", "2")
    assert train(files, tmp_path / "whole", *args) == 0

    def stop(epoch, chunk):  # in epoch 2, after its third chunk of four
        if (epoch, chunk) == (1, 2):
            raise error

    run = tmp_path / "cut"
    if error is KeyboardInterrupt:
        assert train(files, run, *args, after_chunk=stop) == 130
        assert "--resume" in capsys.readouterr().err
        done = 3  # Ctrl-C checkpoints the last finished chunk
    else:
        with pytest.raises(Interrupt):
            train(files, run, *args, after_chunk=stop)
        done = 2  # the last periodic checkpoint: the third chunk is lost
    assert json.loads((run / "checkpoint.json").read_text())["state"]["chunk"] == done
    assert not (run / "model.npz").exists()
    assert train(files, run, *args) == 1  # an unfinished run needs --resume
    assert "--resume" in capsys.readouterr().err

    assert train(files, run, *args, "--resume") == 0
    np.testing.assert_array_equal(
        weights(run / "model.npz"), weights(tmp_path / "whole" / "model.npz")
    )
    resumed, whole_model = (sparseopt.load(p / "model.npz") for p in (run, tmp_path / "whole"))
    assert len(resumed.loss_curve_) == resumed.n_iter_ == 2  # every epoch, not those after
    assert resumed.loss_curve_ == whole_model.loss_curve_  # the interruption
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert json.loads((run / "metrics.json").read_text())["history"] == whole["history"]


def stop_at_second_chunk(epoch, chunk):
    if chunk == 1:
        raise Interrupt


def test_diverged_chunk_leaves_the_last_checkpoint(files, tmp_path, capsys):
    """Chunks train in place, unchecked: a non-finite weight must stop the next checkpoint."""
    run = tmp_path / "run"

    def poison(epoch, chunk):  # after the third chunk, once the second one is saved
        if chunk == 2:
            model = sparseopt.load(run / record()["state"]["checkpoint"])
            assert np.isfinite(model.state_.table).all()
            trainer.model.state_.table[5, 0] = np.inf

    def record():
        return json.loads((run / "checkpoint.json").read_text())

    config = P.TrainConfig(
        data=str(files["train"]), validation=None, model="lr",
        spec={"format": "criteo", "n_bits": 16}, params={}, chunk_size=500,
        skip_bad_lines=False, seed=0,
    )  # fmt: skip
    trainer = P.Trainer(config, run, checkpoint_every=2, log=lambda line: None)
    trainer.after_chunk = poison
    trainer.start(resume=False)
    with pytest.raises(sparseopt.DivergenceError):
        trainer.run()
    assert record()["state"]["chunk"] == 2 and not (run / "model.npz").exists()


def test_ctrl_c_during_a_chunk_waits_for_it_then_checkpoints(files, tmp_path, monkeypatch):
    trained = []
    train_chunk = LinearTraining.epoch  # the click model the command line trains

    def interrupted(training, rows, order):
        if len(trained) == 1:
            signal.raise_signal(signal.SIGINT)  # during the second chunk
        loss = train_chunk(training, rows, order)
        trained.append(order.size)
        return loss

    monkeypatch.setattr(LinearTraining, "epoch", interrupted)
    # as in a terminal: a process started in the background of a script ignores SIGINT, and
    # the trainer then leaves it ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    run = tmp_path / "run"
    try:
        assert train(files, run) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert trained == [500, 500]
    assert json.loads((run / "checkpoint.json").read_text())["state"]["chunk"] == 2


def test_resume_errors(files, tmp_path, capsys):
    assert train(files, tmp_path / "none", "--resume") == 1
    assert "nothing to resume" in capsys.readouterr().err
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        train(files, run, "--checkpoint-every", "1", after_chunk=stop_at_second_chunk)
    assert train(files, run, "--checkpoint-every", "1", "--resume", "--learning-rate", "0.1") == 1
    assert "other settings (params)" in capsys.readouterr().err


def test_bad_line_is_named_or_skipped_and_counted(files, tmp_path, capsys):
    lines = files["train"].read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.tsv"
    bad.write_text("".join(lines[:2] + ["1\tnot enough fields\n"] + lines[2:]))
    argv = ["train", str(bad), "--out", str(tmp_path / "run"), *BITS]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}, line 3" in err and "Traceback" not in err
    assert main([*argv, "--skip-bad-lines"]) == 0
    assert "1 bad lines skipped" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["n_bad_lines"] == 1


def test_missing_and_empty_files(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.tsv"), "--out", str(tmp_path / "r")]) == 1
    assert "nope.tsv: no such file" in capsys.readouterr().err
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    assert main(["train", str(empty), "--out", str(tmp_path / "r")]) == 1
    assert "is empty" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "m.npz"), str(empty)]) == 1
    assert "no such model file" in capsys.readouterr().err


def test_options_must_match_the_model(files, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(files, run) == 0
    model = str(run / "model.npz")
    assert main(["evaluate", model, str(files["valid"]), "--n-bits", "18"]) == 1
    err = capsys.readouterr().err
    assert "--n-bits 18 differs from the model's n_bits=16" in err
    assert main(["evaluate", model, str(files["valid"]), "--format", "avazu"]) == 1
    assert "--format 'avazu' differs" in capsys.readouterr().err
    assert main(["evaluate", model, str(files["valid"]), "--n-bits", "16"]) == 0

    # saved by the estimator itself: no data spec, so the options must say it
    plain = tmp_path / "plain.npz"
    sparseopt.load(model).save(plain)
    assert main(["evaluate", str(plain), str(files["valid"])]) == 1
    assert "give --format" in capsys.readouterr().err
    criteo = ["--format", "criteo"]
    assert main(["evaluate", str(plain), str(files["valid"]), *criteo, "--n-bits", "18"]) == 1
    assert "expects 65536" in capsys.readouterr().err
    assert main(["evaluate", str(plain), str(files["valid"]), *criteo, *BITS]) == 0


def test_wrong_model_type_is_refused(files, tmp_path, capsys):
    X, y = read_criteo(files["valid"], n_bits=16).read()
    path = tmp_path / "reg.npz"
    sparseopt.SparseLinearRegression(max_iter=1).fit(X, y).save(path)
    assert main(["evaluate", str(path), str(files["valid"]), "--format", "criteo"]) == 1
    assert "holds a SparseLinearRegression" in capsys.readouterr().err


def test_console_entry_reports_one_line_and_exit_status(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sparseopt", "evaluate", str(tmp_path / "m.npz"), "x.tsv"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"sparseopt: error: {tmp_path / 'm.npz'}: no such model file"
    ]


@pytest.mark.parametrize("cores, threads", [(1, 1), (2, 1), (3, 2), (16, 2)])
def test_default_parse_threads_leave_a_core_to_training(monkeypatch, cores, threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert P.default_parse_threads() == threads


def test_threaded_parsing_gives_the_same_chunks_and_errors(files, tmp_path):
    def read(path, n_threads, **kw):
        reader = read_criteo(path, n_bits=16, chunk_size=300, block_size=4096, **kw)
        return list(reader.chunks(n_threads)), reader.stats

    serial, stats = read(files["train"], 1)
    threaded, threaded_stats = read(files["train"], 3)
    assert len(serial) == len(threaded) == 7 and threaded_stats == stats
    for (X1, y1), (X2, y2) in zip(serial, threaded, strict=True):
        assert (X1 != X2).nnz == 0 and np.array_equal(y1, y2)

    lines = files["train"].read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.tsv"
    bad.write_text("".join(lines[:900] + ["x\n"] + lines[900:1500] + ["y\n"] + lines[1500:]))
    with pytest.raises(ValueError, match="line 901"):
        read(bad, 3)
    _, stats = read(bad, 3, skip_bad_lines=True)
    assert stats["bad_lines"] == [901, 1502] and stats["n_rows"] == 2000


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_interrupts_training_like_ctrl_c():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), P.sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_train_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option, default in [
        ("--model", "(default: lr)"),
        ("--epochs", "(default: auto)"),
        ("--optimizer", "(default: adagrad)"),
        ("--learning-rate", "(default: auto, the optimizer's own: sgd 0.01"),
        ("--batch-size", "rows per update step (default: 1)"),
        ("--n-jobs", "(default: 1)"),
        ("--chunk-size", "(default: 100000"),
        ("--label", "(default: none; --format csv needs it)"),
        ("--features", "(default: every column but the label and --exclude)"),
        ("--numeric", "(default: none, every value hashed as text)"),
        ("--exclude", "(default: none)"),
        ("--n-features", "(default: one more than the largest index in the file)"),
    ]:
        assert option in out and default in out, default
    assert f"up to {P.AUTO_MAX_EPOCHS} epochs" in out and "auto without --validation: one" in out


LATE_BEST = ("--learning-rate", "0.03")  # validation logloss per epoch: best at 3, then worse


def test_epochs_auto_stops_on_validation_and_saves_the_best_epoch(files, tmp_path, capsys):
    assert train(files, tmp_path / "auto", *LATE_BEST) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    losses = [h["validation"]["logloss"] for h in summary["history"]]
    assert len(losses) == 5 and np.argmin(losses) == 2  # two epochs without improvement
    assert summary["kept_epoch"] == summary["best_epoch"] == 3
    assert summary["validation"] == summary["history"][2]["validation"]
    assert "model of epoch 3 saved" in out and "best validation logloss" in out
    assert sorted(p.name for p in (tmp_path / "auto").glob("best-*.npz")) == ["best-000003.npz"]

    # the saved model is the third epoch's: the same weights as a run of exactly 3 epochs
    assert train(files, tmp_path / "three", *LATE_BEST, "--epochs", "3") == 0
    np.testing.assert_array_equal(
        weights(tmp_path / "auto" / "model.npz"), weights(tmp_path / "three" / "model.npz")
    )
    X, _ = read_criteo(files["valid"], n_bits=16).read()
    np.testing.assert_array_equal(
        sparseopt.load(tmp_path / "auto" / "model.npz").predict_proba(X),
        sparseopt.load(tmp_path / "auto" / "best-000003.npz").predict_proba(X),
    )
    capsys.readouterr()

    # an integer runs that many epochs and saves the last, naming the best
    assert train(files, tmp_path / "five", *LATE_BEST, "--epochs", "5") == 0
    assert "model of epoch 5 saved" in capsys.readouterr().out.replace("\n", " ")
    five = json.loads((tmp_path / "five" / "metrics.json").read_text())
    assert five["kept_epoch"] == 5 and five["best_epoch"] == 3
    assert five["validation"] == five["history"][4]["validation"]


def test_a_validation_logloss_equal_to_the_best_is_no_improvement(files, tmp_path):
    """Steps of 1e-30 leave every prediction at 0.5: each epoch scores epoch 1's logloss, and
    --epochs auto stops PATIENCE epochs after epoch 1, which it keeps."""
    assert train(files, tmp_path / "run", "--learning-rate", "1e-30") == 0
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    losses = [h["validation"]["logloss"] for h in summary["history"]]
    assert len(set(losses)) == 1 and len(losses) == 1 + P.PATIENCE
    assert summary["kept_epoch"] == summary["best_epoch"] == 1


@pytest.mark.parametrize(
    "option, instead",
    [
        ("early_stopping=true", "--validation"),
        ("max_iter=5", "--epochs"),
        ("n_iter_no_change=3", "--epochs"),
        ("validation_fraction=0.2", "--validation"),
        ("warm_start=true", "--resume"),
    ],
)
def test_set_options_the_trainer_cannot_honour_are_refused(
    files, tmp_path, capsys, option, instead
):
    assert train(files, tmp_path / "run", "--set", option) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot honour --set " + option.split("=")[0] in err
    assert instead in err and "Traceback" not in err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_resume_keeps_the_best_epoch(files, tmp_path):
    assert train(files, tmp_path / "whole", *LATE_BEST) == 0

    def stop(epoch, chunk):  # in epoch 5, after the best (3) and a worse one (4)
        if (epoch, chunk) == (4, 1):
            raise Interrupt

    run = tmp_path / "cut"
    with pytest.raises(Interrupt):
        train(files, run, *LATE_BEST, after_chunk=stop)
    best = json.loads((run / "checkpoint.json").read_text())["state"]["best"]
    assert best["epoch"] == 3 and (run / best["file"]).is_file()

    assert train(files, run, *LATE_BEST, "--resume") == 0
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["kept_epoch"] == 3 and len(summary["history"]) == 5
    np.testing.assert_array_equal(
        weights(run / "model.npz"), weights(tmp_path / "whole" / "model.npz")
    )


def test_one_epoch_records_the_loss_within_it_for_the_report(files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run, report = tmp_path / "run", tmp_path / "report.png"
    argv = ["train", str(files["train"]), "--out", str(run), *BITS, "--chunk-size", "500"]
    assert main([*argv, "--report", str(report)]) == 0  # no --validation: auto is one epoch
    assert "one epoch (without --validation)" in capsys.readouterr().out
    (epoch,) = json.loads((run / "metrics.json").read_text())["history"]
    curve = np.array(epoch["train_curve"])
    np.testing.assert_array_equal(curve[:, 0], [500, 1000, 1500, 2000])
    assert curve[-1, 1] == pytest.approx(epoch["train_logloss"])
    assert len(set(curve[:, 1])) == 4  # a running mean, moving with every chunk
    assert report.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
