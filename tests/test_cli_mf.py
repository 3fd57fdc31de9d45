"""The sparseopt command with --model mf: ratings files, raw ids, predict and recommend."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import sparseopt
from sparseopt import MatrixFactorization
from sparseopt import pipeline as P
from sparseopt.cli import _ratings_files as R
from sparseopt.cli import main
from sparseopt.metrics import mae, rmse

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
needs_ml100k = pytest.mark.shared_data("ml-100k/u1.base")
SMALL = ["--epochs", "2", "--set", "n_components=4"]


def _synthetic(n_users=60, n_items=40, n=900, seed=0):
    """Distinct (user, item, rating) triples with ids that have gaps (not 0 .. n-1)."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(n_users * n_items, size=n, replace=False)
    users, items = 1000 + 7 * (cells // n_items), 50 + 3 * (cells % n_items)
    ratings = rng.integers(1, 6, size=n).astype(np.float32)
    return users, items, ratings


def _write(path, users, items, ratings=None, sep="\t", header=None):
    lines = [] if header is None else [header]
    for k in range(users.size):
        fields = [str(users[k]), str(items[k])]
        if ratings is not None:
            fields.append(f"{ratings[k]:g}")
        lines.append(sep.join(fields))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A squared-loss model trained on a synthetic TSV (train/validation split)."""
    root = tmp_path_factory.mktemp("mf")
    users, items, ratings = _synthetic()
    train = _write(root / "train.tsv", users[:800], items[:800], ratings[:800])
    valid = _write(root / "valid.tsv", users[800:], items[800:], ratings[800:])
    out = root / "run"
    argv = ["train", str(train), "--model", "mf", "--out", str(out), "--validation", str(valid)]
    assert main([*argv, *SMALL, "--seed", "3"]) == 0
    return {"root": root, "train": train, "valid": valid, "out": out, "model": out / "model.npz"}


def _estimator(users, items, ratings, **params):
    """The estimator fitted as the command fits it: ids numbered in increasing order."""
    user_ids, rows = np.unique(users, return_inverse=True)
    item_ids, cols = np.unique(items, return_inverse=True)
    X = sp.csr_matrix((ratings, (rows, cols)), shape=(user_ids.size, item_ids.size))
    return MatrixFactorization(**params).fit(X), user_ids, item_ids


def test_train_is_the_estimators_fit_with_raw_ids(run, capsys):
    users, items, ratings = _synthetic()
    mf, user_ids, item_ids = _estimator(
        users[:800], items[:800], ratings[:800], n_components=4, max_iter=2, random_state=3
    )
    rm = R.load(run["model"])
    np.testing.assert_array_equal(rm.users.ids, user_ids)
    np.testing.assert_array_equal(rm.items.ids, item_ids)
    np.testing.assert_array_equal(rm.model.item_factors_, mf.item_factors_)
    assert rm.model.get_params()["verbose"] == 0
    summary = json.loads((run["out"] / "metrics.json").read_text())
    u = np.searchsorted(user_ids, users[800:])
    i = np.searchsorted(item_ids, items[800:])
    known = (user_ids[np.minimum(u, user_ids.size - 1)] == users[800:]) & (
        item_ids[np.minimum(i, item_ids.size - 1)] == items[800:]
    )
    valid = summary["validation"]
    assert valid["n_ratings"] == 100 and valid["n_unknown"] == int((~known).sum())
    expected = mf.predict(u[known], i[known])
    got, _ = rm.score(users[800:][known], items[800:][known])
    np.testing.assert_allclose(got, expected)
    assert summary["epochs"] == 2 and summary["n_ratings"] == 800 and summary["loss"] == "squared"

    assert main(["evaluate", str(run["model"]), str(run["valid"]), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["rmse"] == pytest.approx(valid["rmse"], abs=1e-12)


def test_predict_scores_pairs_and_unknown_ids_by_biases(run, tmp_path, capsys):
    rm = R.load(run["model"])
    m = rm.model
    u0, i0 = rm.users.ids[0], rm.items.ids[1]
    pairs = _write(tmp_path / "pairs.csv", np.array([u0, u0, 5, 5]), np.array([i0, 7, i0, 7]),
                   sep=",", header="user,item")  # fmt: skip
    out = tmp_path / "scores.txt"
    assert main(["predict", str(run["model"]), str(pairs), "--out", str(out)]) == 0
    assert "3 pairs with an unknown id" in capsys.readouterr().out
    got = np.loadtxt(out)
    mu, bu, bi = m.global_mean_, m.user_biases_[0], m.item_biases_[1]
    lo, hi = m.rating_range_
    expected = [m.predict([0], [1])[0], mu + bu, mu + bi, mu]
    np.testing.assert_allclose(got, np.clip(expected, lo, hi), rtol=1e-5)


def test_recommend_raw_ids_excluding_seen(run, tmp_path):
    rm = R.load(run["model"])
    users = rm.users.ids[:3]
    out = tmp_path / "rec.csv"
    argv = ["recommend", str(run["model"]), "--users", ",".join(map(str, users)), "--n", "5"]
    assert main([*argv, "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "user,rank,item,score" and len(lines) == 1 + 15
    rows = [line.split(",") for line in lines[1:]]
    expected = rm.items.ids[rm.model.recommend(np.arange(3), n=5)]
    got = np.array([int(r[2]) for r in rows]).reshape(3, 5)
    np.testing.assert_array_equal(got, expected)
    train_users, train_items, _ = _synthetic()
    seen = set(zip(train_users[:800].tolist(), train_items[:800].tolist(), strict=True))
    assert not any((int(r[0]), int(r[2])) in seen for r in rows)

    ids = tmp_path / "users.txt"
    ids.write_text(f"{users[0]}\n424242\n")
    assert main(["recommend", str(run["model"]), "--users-file", str(ids), "--n", "3",
                 "--include-seen", "--out", str(out)]) == 0  # fmt: skip
    rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
    cold = [int(r[2]) for r in rows if r[0] == "424242"]
    by_bias = rm.items.ids[np.argsort(-rm.model.item_biases_, kind="stable")[:3]]
    np.testing.assert_array_equal(cold, by_bias)


def test_inspect_summarizes_an_mf_model(run, capsys):
    assert main(["inspect", str(run["model"]), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "MatrixFactorization (squared loss, 4 components" in out and "800 interactions" in out
    assert main(["inspect", str(run["model"]), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_interactions"] == 800 and len(summary["top_items"]) == 20


def test_text_ids_csv_with_header(tmp_path, capsys):
    users = np.array(["ann", "ann", "bob", "bob", "cy", "cy", "dee"])
    items = np.array(["m1", "m2", "m2", "m3", "m1", "m3", "m2"])
    ratings = np.array([5, 3, 4, 2, 1, 4, 5], dtype=np.float32)
    data = _write(tmp_path / "r.csv", users, items, ratings, sep=",", header="user,item,rating")
    out = tmp_path / "run"
    assert main(["train", str(data), "--model", "mf", "--out", str(out), *SMALL]) == 0
    rm = R.load(out / "model.npz")
    assert rm.users.ids.tolist() == ["ann", "bob", "cy", "dee"]
    capsys.readouterr()
    assert main(["recommend", str(out / "model.npz"), "--users", "ann"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [r.split(",")[2] for r in rows] == ["m3"]  # m1 and m2 seen; -1 places left out


def test_movielens_latest_csv_maps_ids_as_load_movielens(tmp_path):
    from sparseopt.datasets import load_movielens

    users, items, ratings = _synthetic(n=300)
    lines = ["userId,movieId,rating,timestamp"]
    rows = zip(users, items, ratings, strict=True)
    lines += [f"{u},{i},{r:.1f},{1000 + k}" for k, (u, i, r) in enumerate(rows)]
    data = tmp_path / "ratings.csv"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert main(["train", str(data), "--model", "mf", "--out", str(out), *SMALL]) == 0
    X, user_ids, item_ids = load_movielens(data, return_ids=True)
    rm = R.load(out / "model.npz")
    np.testing.assert_array_equal(rm.users.ids, user_ids)
    np.testing.assert_array_equal(rm.items.ids, item_ids)
    mf = MatrixFactorization(n_components=4, max_iter=2, random_state=0).fit(X)
    np.testing.assert_array_equal(rm.model.user_factors_, mf.user_factors_)


def test_implicit_loss_reports_ranking_metrics(run, tmp_path, capsys):
    out = tmp_path / "warp"
    argv = ["train", str(run["train"]), "--model", "mf", "--loss", "warp", "--min-rating", "4"]
    assert main([*argv, "--out", str(out), "--validation", str(run["valid"]), *SMALL]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("validation: precision@10 ") and "ndcg@10" in line
    summary = json.loads((out / "metrics.json").read_text())["validation"]
    # recomputed by hand: the saved model's top 10 (training items left out) against each
    # known validation user's positives (ratings >= 4)
    rm = R.load(out / "model.npz")
    valid = np.loadtxt(run["valid"], delimiter="\t")
    positives = {}
    for user, item, rating in valid:
        if rating >= 4 and user in rm.users.ids and item in rm.items.ids:
            row = int(np.searchsorted(rm.users.ids, user))
            positives.setdefault(row, set()).add(int(np.searchsorted(rm.items.ids, item)))
    hits = [len(positives[u] & set(rm.model.recommend([u], n=10)[0].tolist())) for u in positives]
    assert summary["n_users"] == len(positives) > 0
    assert summary["precision@10"] == pytest.approx(np.mean(hits) / 10)
    assert summary["precision@10"] > 0  # the model ranks some positives in its top 10
    assert main(["evaluate", str(out / "model.npz"), str(run["valid"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recall@10"] == summary["recall@10"]


def test_bad_lines_are_reported_or_skipped(tmp_path, capsys):
    data = tmp_path / "r.tsv"
    data.write_text("1\t2\t3\n1\t3\n2\t2\t4\n3\t\t5\n3\t1\t1\n")
    argv = ["train", str(data), "--model", "mf", "--out", str(tmp_path / "run"), *SMALL]
    assert main(argv) == 1
    assert "has 2 fields, expected 3" in capsys.readouterr().err
    assert main([*argv, "--skip-bad-lines"]) == 0
    assert "2 bad lines skipped" in capsys.readouterr().out
    assert R.load(tmp_path / "run" / "model.npz").n_interactions == 3

    data.write_text("1\t2\t3\n1\t2\t4\n")
    assert main(argv) == 1
    assert "1 repeated (user, item) pairs" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n-bits", "18"], "--n-bits does not apply to --model mf"),
        (["--field-aware"], "--field-aware does not apply"),
        (["--format", "csv"], "--format does not apply"),
        (["--alpha", "0.1"], "--set alpha_factors"),
        (["--resume"], "--resume does not apply to --model mf"),
        (["--chunk-size", "10"], "--chunk-size does not apply"),
        (["--parse-threads", "2"], "--parse-threads does not apply"),
        # every option mf does not take, a click-only one added later too
        (["--max-tokens", "5"], "--max-tokens does not apply to --model mf"),
        (["--set", "max_iter=3"], "--set max_iter is set by --epochs"),
        (["--set", "bogus=1"], "bad model parameter for MatrixFactorization"),
        (["--min-rating", "4"], "--min-rating applies to the implicit losses"),
    ],
)
def test_options_that_do_not_apply_to_mf(run, tmp_path, capsys, extra, message):
    argv = ["train", str(run["train"]), "--model", "mf", "--out", str(tmp_path / "r"), *extra]
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_mf_and_click_models_in_each_others_commands(run, tmp_path, capsys):
    X = sp.random(200, 64, density=0.1, format="csr", random_state=0)
    y = (np.arange(200) % 3 == 0).astype(float)
    click = tmp_path / "lr.npz"
    lr = sparseopt.SparseLogisticRegression(max_iter=1).fit(X, y)
    P.save_model(lr, click, "lr", P.DataSpec(format="libsvm", n_features=64))
    assert main(["recommend", str(click), "--users", "1"]) == 1
    assert "recommend needs a model of sparseopt train --model mf" in capsys.readouterr().err
    assert main(["train", str(run["train"]), "--model", "lr", "--loss", "warp"]) == 1
    assert "--loss applies to --model mf" in capsys.readouterr().err
    argv = ["predict", str(run["model"]), str(run["valid"]), "--out", str(tmp_path / "p")]
    assert main([*argv, "--format", "criteo"]) == 1
    assert "--format does not apply to an mf model" in capsys.readouterr().err
    assert main(["inspect", str(run["model"]), "--field", "C1"]) == 1
    assert "an mf model has none" in capsys.readouterr().err
    assert main(["train", "--model", "mf"]) == 1
    assert "--model mf needs a ratings file" in capsys.readouterr().err


def test_estimator_saved_model_takes_indices_and_damaged_maps_are_refused(run, tmp_path):
    from sparseopt import _io

    rm = R.load(run["model"])
    plain = tmp_path / "plain.npz"
    rm.model.save(plain)
    loaded = R.load(plain)
    assert loaded.users.ids.tolist() == list(range(rm.model.n_users_))
    bad = tmp_path / "bad.npz"
    maps = {"users": [3, 1], "items": [], "min_rating": None, "n_interactions": 1}
    meta = {"version": 1, "model": "mf", "ratings": maps}
    with _io.model_metadata(meta):
        rm.model.save(bad)
    with pytest.raises(P.PipelineError, match="id maps in the file are damaged"):
        R.load(bad)


@needs_ml100k
def test_u1_rmse_equals_the_estimators(tmp_path, capsys):
    """The issue's target: the command on u1.base gives the estimator's RMSE on u1.test."""
    from sparseopt.datasets import load_movielens_split

    train, test = load_movielens_split(ML100K, "u1")
    mf = MatrixFactorization(n_components=8, max_iter=3, random_state=0).fit(train)
    test = test.tocoo()
    predicted = mf.predict(test.row, test.col)
    out = tmp_path / "run"
    argv = ["train", str(ML100K / "u1.base"), "--model", "mf", "--out", str(out)]
    argv += ["--validation", str(ML100K / "u1.test"), "--epochs", "3"]
    assert main([*argv, "--set", "n_components=8"]) == 0
    valid = json.loads((out / "metrics.json").read_text())["validation"]
    assert valid["n_ratings"] == test.nnz and valid["n_unknown"] == 0
    assert abs(valid["rmse"] - rmse(test.data, predicted)) < 1e-6
    assert abs(valid["mae"] - mae(test.data, predicted)) < 1e-6


def test_movielens_100k_folder_ids_are_offset_with_or_without_bad_lines(tmp_path):
    """Beside u.info, ids map to id - 1 for every user and item the folder counts, as
    load_movielens_split maps them, also when --skip-bad-lines reads the file."""
    from sparseopt.datasets import load_movielens

    (tmp_path / "u.info").write_text("9 users\n12 items\n100 ratings\n")
    lines = ["1\t3\t4\t100", "2\t5\t3\t101", "4\t3\t5\t102", "4\t10\t1\t103"]
    data = tmp_path / "u1.base"
    data.write_text("\n".join(lines) + "\n")
    expected = load_movielens(data, ids="offset")
    for extra, text in (([], lines), (["--skip-bad-lines"], [*lines[:2], "7", *lines[2:]])):
        data.write_text("\n".join(text) + "\n")
        out = tmp_path / f"run{len(extra)}"
        assert main(["train", str(data), "--model", "mf", "--out", str(out), *SMALL, *extra]) == 0
        rm = R.load(out / "model.npz")
        assert rm.users.ids.tolist() == list(range(1, 10))
        assert rm.items.ids.tolist() == list(range(1, 13))
        X, *_ = R.ratings_matrix(data, skip_bad_lines=bool(extra))
        assert (X != expected).nnz == 0


def test_dat_and_semicolon_files(tmp_path):
    dat = tmp_path / "ratings.dat"
    dat.write_text("5::10::4::1\n5::11::2::2\n6::10::5::3\n")
    cols = R.read_ratings(dat)
    assert cols.users.tolist() == [5, 5, 6] and cols.items.tolist() == [10, 11, 10]
    generic = R.read_ratings(dat, skip_bad_lines=True)  # the pyarrow path reads it alike
    np.testing.assert_array_equal(generic.values, cols.values)
    semi = tmp_path / "r.txt"
    semi.write_text("user_id;item_id\na;x\nb;y\n")  # text ids: the header by its name
    cols = R.read_ratings(semi)
    assert cols.users.tolist() == ["a", "b"] and cols.values.tolist() == [1.0, 1.0]


def test_epochs_auto_with_validation_keeps_the_best_epoch(run, tmp_path, capsys):
    """--epochs auto with --validation: an epoch line each, stop PATIENCE epochs after the
    best validation RMSE, and the saved model is that epoch's (the estimator after as many
    epochs)."""
    out = tmp_path / "auto"
    argv = ["train", str(run["train"]), "--model", "mf", "--out", str(out)]
    argv += ["--validation", str(run["valid"]), "--epochs", "auto", "--set", "n_components=4"]
    argv += ["--learning-rate", "0.3", "--seed", "3"]  # overfits 800 ratings within epochs
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = json.loads((out / "metrics.json").read_text())
    history, kept = summary["history"], summary["kept_epoch"]
    rmses = [h["validation"]["rmse"] for h in history]
    assert sum(line.startswith("epoch ") for line in lines) == len(history)
    assert kept == 1 + int(np.argmin(rmses)) and len(history) <= P.AUTO_MAX_EPOCHS
    assert len(history) == P.AUTO_MAX_EPOCHS or len(history) - kept == P.PATIENCE
    assert summary["validation"]["rmse"] == min(rmses)
    users, items, ratings = _synthetic()
    mf, _, _ = _estimator(users[:800], items[:800], ratings[:800], n_components=4,
                          learning_rate=0.3, max_iter=kept, random_state=3)  # fmt: skip
    np.testing.assert_array_equal(R.load(out / "model.npz").model.item_factors_, mf.item_factors_)


def test_a_validation_rmse_equal_to_the_best_is_no_improvement(run, tmp_path):
    """As for the click models: steps of 1e-30 score every epoch alike, so --epochs auto stops
    PATIENCE epochs after the first and keeps it."""
    out = tmp_path / "tie"
    argv = ["train", str(run["train"]), "--model", "mf", "--out", str(out)]
    assert main([*argv, "--validation", str(run["valid"]), "--learning-rate", "1e-30"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    rmses = [h["validation"]["rmse"] for h in summary["history"]]
    assert len(set(rmses)) == 1 and len(rmses) == 1 + P.PATIENCE and summary["kept_epoch"] == 1

