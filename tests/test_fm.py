import copy
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone, is_regressor
from sklearn.metrics import log_loss
from sklearn.utils.estimator_checks import parametrize_with_checks

import sparseopt
from sparseopt import (
    DivergenceError,
    FFMClassifier,
    FMClassifier,
    FMRegressor,
    SparseLogisticRegression,
)
from sparseopt.datasets import column_fields, make_ctr
from sparseopt.estimators import FMTraining
from sparseopt.optim import Adam, RMSProp


# Full-batch learners for scikit-learn's checks, as in test_linear.py: the sample-weight checks
# compare integer weights with repeated rows, an identity of full-batch training.
@parametrize_with_checks(
    [
        FMClassifier(
            n_components=2, batch_size=256, max_iter=100, learning_rate=0.5, random_state=0
        ),
        FMRegressor(
            n_components=2, batch_size=256, max_iter=200, learning_rate=0.2, random_state=0
        ),
        FFMClassifier(
            n_components=2, batch_size=256, max_iter=100, learning_rate=0.2, random_state=0
        ),
    ]  # fmt: skip
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def sparse_rows(n_rows=40, n_features=7, density=0.5, seed=0):
    X = sp.random(n_rows, n_features, density=density, format="csr", random_state=seed)
    X.data = np.random.default_rng(seed).normal(size=X.nnz)
    return X


def naive_margins(model, X):
    """The FM / FFM margin as the plain double sum over feature pairs."""
    w, b = model.coef_[0], model.intercept_[0]
    V = model.factors_
    fields = model.state_.fields
    X = X.toarray()
    out = np.empty(X.shape[0])
    for i, x in enumerate(X):
        m = b + x @ w
        nz = np.flatnonzero(x)
        for a, j in enumerate(nz):
            for l in nz[a + 1 :]:
                if fields.size:
                    if fields[j] < 0 or fields[l] < 0:
                        continue
                    dot = V[j, fields[l]] @ V[l, fields[j]]
                else:
                    dot = V[j] @ V[l]
                m += dot * x[j] * x[l]
        out[i] = m
    return out


FIELDS = np.array([0, 0, 1, 2, -1, 2, 1])


@pytest.mark.parametrize(
    "model",
    [
        FMClassifier(n_components=3, init_std=0.3),
        FMClassifier(n_components=3, init_std=0.3, factor_state="row"),
        FFMClassifier(fields=FIELDS, n_components=3, init_std=0.3),
    ],
    ids=["fm", "fm-row", "ffm"],
)
def test_prediction_equals_the_naive_pairwise_sum(model):
    X = sparse_rows()
    y = np.arange(X.shape[0]) % 2
    model.set_params(max_iter=2, random_state=0).fit(X, y)
    np.testing.assert_allclose(model.decision_function(X), naive_margins(model, X), rtol=1e-10)


def objective(model, state, X, y, sw):
    """Sum over rows of s_i (loss + per-occurrence L2), as the kernels' docstring states."""
    m = FMTraining.decision(state, X)[:, 0]
    if isinstance(model, FMRegressor):
        loss = 0.5 * (m - y) ** 2
    else:
        loss = np.logaddexp(0.0, -np.where(y > 0, m, -m))
    k, F, per_row = state.layout[:3]
    table, V = state.table[:, 0], state.factors
    V = (V[:, :k] if per_row else V[:, 0]).reshape(-1, F, k)
    penalty = np.zeros(X.shape[0])
    for i in range(X.shape[0]):
        cols = X.indices[X.indptr[i] : X.indptr[i + 1]]
        penalty[i] = 0.5 * model.alpha_linear * (table[cols] ** 2).sum()
        if state.fields.size:
            used = {(j, state.fields[l]) for j in cols for l in cols
                    if l != j and state.fields[j] >= 0 and state.fields[l] >= 0}  # fmt: skip
            penalty[i] += 0.5 * model.alpha_factors * sum((V[j, G] ** 2).sum() for j, G in used)
        else:
            penalty[i] += 0.5 * model.alpha_factors * (V[cols, 0] ** 2).sum()
    return (sw * (loss + penalty)).sum()


@pytest.mark.parametrize(
    "model",
    [
        FMClassifier(n_components=3),
        FMRegressor(n_components=3),
        FFMClassifier(fields=FIELDS, n_components=2),
    ],
    ids=["fm-logistic", "fm-squared", "ffm-logistic"],
)
def test_gradient_equals_finite_differences(model):
    """One full-batch SGD step moves every parameter by -eta times the objective's gradient."""
    X = sparse_rows()
    y = (np.arange(X.shape[0]) % 3 == 0).astype(float)
    sw = np.random.default_rng(1).uniform(0.5, 2.0, X.shape[0])
    eta = 1e-3
    model.set_params(optimizer="sgd", learning_rate=eta, batch_size=X.shape[0], init_std=0.5,
                     alpha_linear=0.1, alpha_factors=0.2, shuffle=False, tol=None,
                     random_state=0)  # fmt: skip
    classes = {} if is_regressor(model) else {"classes": [0, 1]}
    model.partial_fit(X, y, sample_weight=sw, **classes)
    before = copy.deepcopy(model.state_)
    model.partial_fit(X, y, sample_weight=sw)
    params = [("table", before.table), ("factors", before.factors)]
    for name, array in params:
        step = (array[:, 0] - getattr(model.state_, name)[:, 0]) / eta
        numeric = np.empty_like(step)
        for r in range(array.shape[0]):
            diffs = []
            for h in (1e-6, -1e-6):
                state = copy.deepcopy(before)
                getattr(state, name)[r, 0] += h
                diffs.append(objective(model, state, X, y, sw))
            numeric[r] = (diffs[0] - diffs[1]) / 2e-6
        np.testing.assert_allclose(step, numeric, rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.abs(step).max() > 1e-3  # the comparison is not between zeros
    assert int(before.layout[0]) == model.n_components  # the factors compared are k-wide


def test_fm_learns_planted_interactions_near_the_bayes_floor():
    data = make_ctr(40_000, n_fields=8, n_values=40, n_bits=14, interactions=1.5,
                    n_test=10_000, random_state=0)  # fmt: skip
    floor = log_loss(data.y_test, data.proba_test)
    lr = SparseLogisticRegression(max_iter=4, random_state=0).fit(data.X, data.y)
    lr_loss = log_loss(data.y_test, lr.predict_proba(data.X_test))
    for state in ("element", "row"):
        fm = FMClassifier(max_iter=4, factor_state=state, random_state=0).fit(data.X, data.y)
        fm_loss = log_loss(data.y_test, fm.predict_proba(data.X_test))
        # LR stays 0.12 above the floor; FM gets within 0.04-0.045 (0.028-0.033 with the
        # factors' accumulators starting at 10 instead of 30: slower on small data, safer
        # on the Criteo head, see FACTOR_ACCUMULATOR_START)
        assert fm_loss < lr_loss - 0.06, (state, fm_loss, lr_loss, floor)
        assert fm_loss < floor + 0.05, (state, fm_loss, lr_loss, floor)


def test_hogwild_threads_learn_as_well():
    data = make_ctr(20_000, n_fields=6, n_values=30, n_bits=12, interactions=1.5,
                    random_state=1)  # fmt: skip
    kw = dict(max_iter=2, tol=None, random_state=0)
    serial = FMClassifier(**kw).fit(data.X, data.y)
    threaded = FMClassifier(n_jobs=2, **kw).fit(data.X, data.y)
    assert threaded.t_ == serial.t_ == 2 * 20_000
    loss = [log_loss(data.y, m.predict_proba(data.X)) for m in (serial, threaded)]
    assert abs(loss[0] - loss[1]) < 0.01
    ffm = FFMClassifier(fields=column_fields(12, 6), n_jobs=2, **kw)
    data = make_ctr(5_000, n_fields=6, n_values=30, n_bits=12, field_aware=True, random_state=1)
    assert ffm.fit(data.X, data.y).score(data.X, data.y) > 0.7


def test_lazy_rules_with_decay_and_float32():
    X = sparse_rows(200, 30, density=0.1).astype(np.float32)
    y = (np.asarray(X.sum(axis=1)).ravel() > 0).astype(int)
    for opt in (RMSProp(0.01, weight_decay=0.01), Adam(0.01, lazy="exact")):
        model = FMClassifier(optimizer=opt, max_iter=3, random_state=0).fit(X, y)
        assert model.state_.factors.dtype == np.float32
        assert model.state_.stamp.size == X.shape[1]
        assert (model.state_.stamp == model.t_).all()  # every feature caught up
        assert model.score(X, y) > 0.8


def test_minibatches_and_deterministic_seeds():
    X = sparse_rows(300, 20, density=0.2)
    y = (np.asarray(X.sum(axis=1)).ravel() > 0).astype(int)
    a = FMClassifier(batch_size=16, max_iter=10, random_state=3).fit(X, y)
    b = FMClassifier(batch_size=16, max_iter=10, random_state=3).fit(X, y)
    c = FMClassifier(batch_size=16, max_iter=10, random_state=4).fit(X, y)
    np.testing.assert_array_equal(a.factors_, b.factors_)
    assert not np.array_equal(a.factors_, c.factors_)
    assert a.t_ == a.n_iter_ * -(-300 // 16)


# -- bad input -------------------------------------------------------------------------------
def test_fields_must_match_the_columns():
    X = sparse_rows()
    y = np.arange(X.shape[0]) % 2
    with pytest.raises(ValueError, match=r"fields has shape \(3,\) but X has 7 columns"):
        FFMClassifier(fields=[0, 1, 2]).fit(X, y)
    with pytest.raises(ValueError, match="integer field ids"):
        FFMClassifier(fields=np.full(7, 0.5)).fit(X, y)
    with pytest.raises(ValueError, match="pass fields"):
        FFMClassifier().fit(sp.random(5, 2000, density=0.01, format="csr"), np.arange(5) % 2)
    model = FFMClassifier(fields=FIELDS, random_state=0).fit(X, y)
    before = pickle.dumps(model.state_)
    model.set_params(fields=np.zeros(7, int))
    with pytest.raises(ValueError, match="fields differ"):
        model.partial_fit(X, y)
    assert pickle.dumps(model.state_) == before


def test_bad_parameters_and_inputs_are_clear_errors():
    X = sparse_rows()
    y = np.arange(X.shape[0]) % 2
    with pytest.raises(ValueError, match="Only binary classification"):
        FMClassifier().fit(X, np.arange(X.shape[0]) % 3)
    with pytest.raises(ValueError, match="factor_state='row'.*AdaGrad"):
        FMClassifier(factor_state="row", optimizer="adam").fit(X, y)
    with pytest.raises(ValueError, match="optimizer"):
        FMClassifier(optimizer="ftrl").fit(X, y)
    bad = X.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        FMClassifier().fit(bad, y)
    model = FMClassifier(random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        model.predict(X[:, :3])
    before = pickle.dumps(model.state_)
    with pytest.raises(ValueError, match="n_components=3"):
        model.set_params(n_components=3).partial_fit(X, y)
    assert pickle.dumps(model.state_) == before


def test_divergence_names_the_learning_rate_and_keeps_state():
    X = sparse_rows(100, 10)
    y = np.asarray(X.sum(axis=1)).ravel()
    model = FMRegressor(optimizer="sgd", learning_rate=0.01, random_state=0).fit(X, y)
    before = pickle.dumps(model.state_)
    model.set_params(learning_rate=10.0)
    with pytest.raises(DivergenceError, match="learning_rate=10.0"):
        model.partial_fit(X * 1e3, y * 1e6)
    assert pickle.dumps(model.state_) == before
    assert np.isfinite(model.predict(X)).all()


# -- persistence -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model",
    [
        FMClassifier(optimizer=Adam(0.01), n_components=3),
        FMRegressor(factor_state="row"),
        FFMClassifier(fields=FIELDS, batch_size=4),
    ],
    ids=["fm-adam", "fm-row", "ffm"],
)
def test_save_load_round_trip_and_resume(tmp_path, model):
    X = sparse_rows()
    y = np.arange(X.shape[0]) % 2
    model.set_params(random_state=0, shuffle=False).fit(X, y)
    path = tmp_path / "fm.npz"
    model.save(path)
    loaded = sparseopt.load(path)
    assert type(loaded) is type(model) and repr(loaded) == repr(model)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    model.partial_fit(X, y)
    loaded.partial_fit(X, y)
    np.testing.assert_allclose(loaded.factors_, model.factors_, rtol=1e-12)
    assert loaded.t_ == model.t_
    copied = pickle.loads(pickle.dumps(clone(model).fit(X, y)))
    assert copied.predict(X).shape == y.shape


def test_factors_are_drawn_for_the_columns_training_meets():
    X = sparse_rows()
    X = sp.hstack([X, sp.csr_matrix((X.shape[0], 5))]).tocsr()  # 5 columns never used
    y = np.arange(X.shape[0]) % 2
    for state in ("element", "row"):
        fm = FMClassifier(n_components=4, max_iter=1, factor_state=state, random_state=0)
        factors = fm.fit(X, y).state_.factors
        per_column = factors[:, :4].reshape(X.shape[1], -1) if state == "row" else (
            factors[:, 0].reshape(X.shape[1], -1))  # fmt: skip
        used = np.diff(X.tocsc().indptr) > 0
        assert (np.abs(per_column[used]).sum(axis=1) > 0).all()
        assert (per_column[~used] == 0).all()
        # the draw of a column depends on the seed and the column, not on the rows' order
        other = FMClassifier(n_components=4, max_iter=1, factor_state=state, random_state=0)
        other.set_params(max_iter=1, learning_rate=1e-12).fit(X[::-1], y[::-1])
        first = FMClassifier(n_components=4, max_iter=1, factor_state=state, random_state=0)
        first.set_params(learning_rate=1e-12).fit(X, y)
        np.testing.assert_allclose(other.state_.factors, first.state_.factors, atol=1e-9)


# -- the defaults: init_std="auto" and the settings max_iter="auto" chooses (issue 29) -------
def test_auto_init_std_gives_the_pairwise_term_its_planned_spread():
    from sparseopt.estimators._fm_training import INIT_PAIRS_STD, auto_init_std

    rng = np.random.default_rng(0)
    for k, m in ((4, 10), (16, 39)):
        sigma = auto_init_std(k, m)
        V = rng.normal(0.0, sigma, (20_000, m, k))  # rows of m one-hot features
        s = V.sum(axis=1)
        pairs = 0.5 * ((s * s).sum(axis=1) - (V * V).sum(axis=(1, 2)))
        assert abs(pairs.std() / INIT_PAIRS_STD - 1) < 0.03, (k, m)
    model = FMClassifier(max_iter=1, random_state=0).fit(sparse_rows(), np.arange(40) % 2)
    assert model.init_std_ == auto_init_std(16, sparse_rows().nnz / 40)


def test_auto_chooses_among_the_candidates_and_keeps_the_chosen_run(monkeypatch, capsys):
    import sparseopt.estimators._fm_training as fm_module

    data = make_ctr(4000, n_fields=6, n_values=30, n_bits=12, interactions=2.0, random_state=0)
    # a candidate that diverges loses instead of failing the fit
    candidates = (*fm_module.AUTO_CANDIDATES, (1e300, 0.0, 1e3))
    monkeypatch.setattr(fm_module, "AUTO_CANDIDATES", candidates)
    auto = FMClassifier(verbose=1, random_state=0).fit(data.X, data.y)
    report = [line for line in capsys.readouterr().err.splitlines() if "epoch(s)" in line]
    assert len(report) == len(candidates) and sum(" kept" in line for line in report) == 1
    assert "learning_rate=1e+300" in report[-1] and "diverged: dropped" in report[-1]
    kept = next(line for line in report if " kept" in line)
    learning_rate, acc0, _ = next(c for c in candidates if f"learning_rate={c[0]!r}," in kept
                                  and f"accumulators from {c[1]:g}:" in kept)  # fmt: skip
    assert (auto.learning_rate_, auto.factor_accumulator_start_) == (learning_rate, acc0)
    # warm-started halving: the kept run is the fit with its settings, nothing chosen
    monkeypatch.setattr(fm_module, "FACTOR_ACCUMULATOR_START", acc0)
    alone = FMClassifier(learning_rate=learning_rate, init_std=auto.init_std_, random_state=0)
    alone.fit(data.X, data.y)
    assert alone.n_iter_ == auto.n_iter_ and alone.t_ == auto.t_
    np.testing.assert_array_equal(alone.factors_, auto.factors_)
    np.testing.assert_array_equal(alone.validation_scores_, auto.validation_scores_)
    # continued training goes on with the chosen settings, the factors kept
    auto.set_params(warm_start=True, verbose=0).fit(data.X, data.y)
    assert auto.factor_accumulator_start_ == acc0 and auto.t_ > alone.t_
    assert auto.partial_fit(data.X, data.y).optimizer_.learning_rate == learning_rate


def test_the_race_keeps_a_run_that_catches_up_with_the_leader():
    from sparseopt.estimators._rowmodel import _Run

    def run(scores, stopped=False, diverged=False):
        r = _Run(None, {"best": min(scores)}, None)
        r.scores, r.stopped, r.diverged = list(scores), stopped, diverged
        return r

    leader = run([0.50, 0.49])
    fast = run([0.53, 0.51])  # 0.02 behind, 0.02 an epoch: one epoch away
    slow = run([0.515, 0.51])  # 0.02 behind, 0.005 an epoch: four epochs away
    first = run([0.60])  # one epoch: no pace yet
    fm, ffm = FMClassifier(), FFMClassifier()
    assert fm._race_catch_up_epochs == 2 and ffm._race_catch_up_epochs == 0
    assert fm._halve([fast, leader]) == [leader, fast]
    assert fm._halve([slow, leader]) == [leader]
    assert fm._halve([first, leader]) == [leader, first]
    assert fm._halve([run([0.53, 0.51], stopped=True), leader]) == [leader]
    assert fm._halve([run([0.53, 0.51], diverged=True), leader]) == [leader]
    second = run([0.6, 0.5])
    assert fm._halve([second, fast, leader, slow]) == [leader, second, fast]
    # plain halving (FFM): the better half, rounded up, whatever the pace
    assert ffm._halve([fast, leader]) == [leader]
    assert ffm._halve([fast, slow, leader]) == [leader, fast]


def test_nothing_is_chosen_when_a_setting_is_given():
    data = make_ctr(2000, n_fields=6, n_values=30, n_bits=12, interactions=2.0, random_state=0)
    for params in ({"max_iter": 2}, {"learning_rate": 0.05}, {"init_std": 0.01},
                   {"optimizer": "sgd", "learning_rate": 0.01}):  # fmt: skip
        model = FMClassifier(random_state=0, **params).fit(data.X, data.y)
        assert model.learning_rate_ == params.get("learning_rate", 0.05)
        acc0 = 30.0 if "optimizer" not in params else 0.0
        assert model.factor_accumulator_start_ == acc0


def test_a_file_saved_before_the_state_kept_its_init_loads(tmp_path):
    from sparseopt._io import save_model

    X, y = sparse_rows(), np.arange(40) % 2
    model = FMClassifier(init_std=0.02, max_iter=1, random_state=0).fit(X, y)
    arrays, attributes = model._saved()
    del arrays["init"]
    save_model(tmp_path / "old.npz", model, arrays, attributes)
    loaded = sparseopt.load(tmp_path / "old.npz")
    assert loaded.init_std_ == 0.02 and loaded.factor_accumulator_start_ == 30.0
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    auto = FMClassifier(max_iter=1, random_state=0).fit(X, y)  # files since have the array
    arrays, attributes = auto._saved()
    del arrays["init"]
    save_model(tmp_path / "edited.npz", auto, arrays, attributes)
    with pytest.raises(ValueError, match="no array 'init'"):
        sparseopt.load(tmp_path / "edited.npz")


# -- alpha_factors="auto": FFM's penalty chosen on the held-out rows (issue 29) --------------
def ffm_race(n_rows, interactions, **kw):
    data = make_ctr(n_rows, n_fields=6, n_values=30, n_bits=12, interactions=interactions,
                    field_aware=True, random_state=0, **kw)  # fmt: skip
    return data, FFMClassifier(fields=column_fields(12, 6), random_state=0)


@pytest.mark.parametrize(
    "n_rows, interactions, kw, follow_up_kept",
    [
        (3000, 0.0, {}, True),  # no interactions: the factors overfit at 3e-3
        (8000, 3.0, {"weight_scale": 0.5}, False),  # strong pairs: 3e-2 learns too little
    ],
)
def test_the_held_out_rows_choose_ffm_s_penalty(n_rows, interactions, kw, follow_up_kept,
                                                 capsys):  # fmt: skip
    from sparseopt.estimators._fm import FFM_ALPHA_FACTORS, FFM_PENALTY_FOLLOW_UPS

    ((alpha_factors, learning_rate),) = FFM_PENALTY_FOLLOW_UPS
    data, model = ffm_race(n_rows, interactions, **kw)
    auto = clone(model).set_params(verbose=1).fit(data.X, data.y)
    # the race alone: the fit with the penalty set
    race = clone(model).set_params(alpha_factors=FFM_ALPHA_FACTORS).fit(data.X, data.y)
    report = [line for line in capsys.readouterr().err.splitlines() if "epoch(s)" in line]
    assert len(report) == 3 and sum(line.endswith(": kept") for line in report) == 1
    assert report[-1].startswith(f"FFMClassifier: alpha_factors={alpha_factors:g}, "
                                 f"learning_rate={learning_rate!r},")  # fmt: skip
    assert auto.alpha_factors == "auto"
    if follow_up_kept:
        assert report[-1].endswith(": kept")
        assert (auto.alpha_factors_, auto.learning_rate_) == (alpha_factors, learning_rate)
        # it went on from the race's best epoch, and lower
        best = int(np.argmin(race.validation_scores_)) + 1
        assert auto.validation_scores_[:best] == race.validation_scores_[:best]
        assert min(auto.validation_scores_) < min(race.validation_scores_)
        assert auto.n_iter_ > best
    else:
        assert report[-1].endswith(": dropped")
        assert (auto.alpha_factors_, auto.learning_rate_) == (FFM_ALPHA_FACTORS, 0.05)
        np.testing.assert_array_equal(auto.factors_, race.factors_)
        assert (auto.n_iter_, auto.t_) == (race.n_iter_, race.t_)


def test_a_chosen_penalty_is_kept_by_continued_training_and_saved_models(tmp_path):
    data, model = ffm_race(3000, 0.0)
    auto = clone(model).fit(data.X, data.y)
    assert auto.alpha_factors_ == 3e-2
    path = tmp_path / "ffm.npz"
    auto.save(path)
    loaded = sparseopt.load(path)
    assert (loaded.alpha_factors_, loaded.learning_rate_) == (3e-2, 0.2)
    assert loaded.alpha_factors == "auto"
    np.testing.assert_array_equal(loaded.predict_proba(data.X), auto.predict_proba(data.X))
    # partial_fit and warm_start go on at the chosen penalty and rate: as with them set
    chosen = {"alpha_factors": 3e-2, "learning_rate": 0.2}
    for fitted in (loaded, copy.deepcopy(auto).set_params(**chosen)):
        fitted.partial_fit(data.X, data.y)
        np.testing.assert_array_equal(fitted.factors_, loaded.factors_)
    warm = copy.deepcopy(auto).set_params(warm_start=True).fit(data.X, data.y)
    assert (warm.alpha_factors_, warm.learning_rate_) == (3e-2, 0.2) and warm.t_ > auto.t_
    # a penalty set for continued training replaces the chosen one
    assert auto.set_params(alpha_factors=1e-3).partial_fit(data.X, data.y).alpha_factors_ == 1e-3


def test_a_follow_up_that_diverges_drops_out(monkeypatch, capsys):
    data, model = ffm_race(3000, 0.0)
    diverging = {**FFMClassifier._family_params, "penalty_follow_ups": ((3e-2, 1e300),)}
    monkeypatch.setattr(FFMClassifier, "_family_params", diverging)
    auto = clone(model).set_params(verbose=1).fit(data.X, data.y)
    report = [line for line in capsys.readouterr().err.splitlines() if "epoch(s)" in line]
    assert report[-1].endswith("diverged: dropped") and "learning_rate=1e+300" in report[-1]
    race = clone(model).set_params(alpha_factors=3e-3).fit(data.X, data.y)
    assert auto.alpha_factors_ == 3e-3 and auto.t_ == race.t_
    np.testing.assert_array_equal(auto.factors_, race.factors_)


def test_a_penalty_is_raced_only_when_left_to_auto():
    data, model = ffm_race(3000, 0.0)
    for params, alpha in (({"alpha_factors": 3e-3}, 3e-3), ({"learning_rate": 0.05}, 3e-3),
                          ({"max_iter": 2}, 3e-3)):  # fmt: skip
        assert clone(model).set_params(**params).fit(data.X, data.y).alpha_factors_ == alpha
    # FMClassifier and FMRegressor have no follow-up: "auto" is their one default penalty
    fm = FMClassifier(alpha_factors="auto", random_state=0).fit(data.X, data.y)
    assert fm.alpha_factors_ == FMClassifier().alpha_factors == 1e-2
    assert FMRegressor(max_iter=1).fit(data.X, data.y).alpha_factors_ == 1e-4


def test_a_model_file_s_penalty_is_checked(tmp_path):
    from sparseopt._io import save_model

    data, model = ffm_race(1000, 0.0)
    auto = clone(model).fit(data.X, data.y)
    for init, match in (([0.02, 1.0, -1.0], "alpha_factors >= 0"),
                        ([0.02, 1.0, np.nan], "alpha_factors >= 0"),
                        ([0.02, 1.0, 3e-3, 1.0], "state_.init"),
                        ([0.02, 1.0], "'init' has no alpha_factors")):  # fmt: skip
        arrays, attributes = auto._saved()
        save_model(tmp_path / "bad.npz", auto, {**arrays, "init": np.array(init)}, attributes)
        with pytest.raises(ValueError, match=match):
            sparseopt.load(tmp_path / "bad.npz")
    # a file of [init_std, start] from before the penalty was kept: the parameter's
    fixed = clone(model).set_params(alpha_factors=1e-3).fit(data.X, data.y)
    arrays, attributes = fixed._saved()
    save_model(tmp_path / "old.npz", fixed, {**arrays, "init": arrays["init"][:2]}, attributes)
    loaded = sparseopt.load(tmp_path / "old.npz")
    assert loaded.alpha_factors_ == 1e-3
    np.testing.assert_array_equal(loaded.predict_proba(data.X), fixed.predict_proba(data.X))
