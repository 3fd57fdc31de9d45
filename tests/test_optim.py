import numpy as np
import pytest
from reference import DENSE_STEPS, dense_run

from sparseopt.optim import (
    FTRL,
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    AMSGrad,
    DecayedAdaGrad,
    Exponential,
    InverseScaling,
    Momentum,
    PiecewiseConstant,
    RMSProp,
    Warmup,
)


def dense_decayed_adagrad(opt, w, a, g, eta):
    """DecayedAdaGrad's textbook step on every coordinate: ``G <- decay G + g^2``,
    ``w <- w - eta g / (sqrt(G) + eps)`` (absent coordinates have g = 0: their G decays)."""
    a = opt.decay * a + g * g
    return w - eta * g / (np.sqrt(a) + opt.epsilon), a


DENSE_STEPS[DecayedAdaGrad] = dense_decayed_adagrad

# (optimizer, exact): exact rules must equal the dense reference; the others equal the
# reference of their documented lazy semantics, which dense_run spells out too.
CASES = [
    SGD(0.1),
    SGD(InverseScaling(0.2, power=0.5), weight_decay=0.05),
    Momentum(0.05, momentum=0.9),
    Momentum(0.05, momentum=0.9, nesterov=True),
    Momentum(Exponential(0.05, 0.02), momentum=0.8),
    Momentum(0.05, momentum=0.8, weight_decay=0.1),
    Momentum(Exponential(0.05, 0.01), momentum=0.9, nesterov=True, weight_decay=0.05),
    AdaGrad(0.1),
    AdaGrad(0.3, initial_accumulator_value=0.1, epsilon=1e-6),
    AdaGrad(Warmup(5, 0.1), weight_decay=0.05),
    RMSProp(0.01, rho=0.9),
    RMSProp(PiecewiseConstant([10, 20], [0.02, 0.01, 0.005]), rho=0.8, weight_decay=0.02),
    Adam(0.01),
    Adam(0.01, lazy="decay"),
    Adam(0.01, lazy="skip"),
    Adam(InverseScaling(0.02, power=0.3, offset=2.0), weight_decay=0.05),
    Adam(
        Warmup(3, Exponential(0.02, 0.01)), beta_1=0.8, beta_2=0.99, lazy="decay", weight_decay=0.1
    ),
    Adam(0.01, lazy="skip", weight_decay=0.1),
    AMSGrad(0.01),
    AMSGrad(0.01, lazy="decay"),
    AMSGrad(0.01, lazy="skip", weight_decay=0.05),
    AMSGrad(Exponential(0.02, 0.01), weight_decay=0.05),
    FTRL(0.1, beta=1.0, l1=0.01, l2=0.1),
    FTRL(InverseScaling(0.2, power=0.5), l1=0.0, l2=0.0, weight_decay=0.05),
    DecayedAdaGrad(0.1, decay=0.9),
    DecayedAdaGrad(
        InverseScaling(0.2, power=0.5), decay=0.8, initial_accumulator_value=0.1, weight_decay=0.05
    ),
]


def random_steps(rng, n, n_steps):
    """Sparse steps with repeated indices, empty steps, and rarely touched coordinates."""
    popularity = 1.0 / np.arange(1, n + 1) ** 1.2  # Zipf: the tail is touched rarely
    popularity /= popularity.sum()
    steps = []
    for _ in range(n_steps):
        size = rng.integers(0, 12)  # 0: an empty step
        indices = rng.choice(n, size=size, p=popularity)
        grads = rng.normal(size=size) * rng.choice([0.1, 1.0, 10.0])
        steps.append((indices, grads))
    return steps


@pytest.mark.parametrize("opt", CASES, ids=repr)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lazy_equals_dense(opt, dtype):
    rng = np.random.default_rng(0)
    n = 40
    start = rng.normal(size=n).astype(dtype)
    steps = random_steps(rng, n, 60)
    expected = dense_run(opt, start, steps)

    params = start.copy()
    state = opt.init(params)
    for k, (indices, grads) in enumerate(steps):
        opt.update(params, state, indices, grads)
        if k == 30:  # a mid-run catch-up must not change the outcome
            opt.catch_up(params, state)
    opt.catch_up(params, state)
    assert state.step == len(steps)
    rtol, atol = (1e-6, 1e-9) if dtype == np.float64 else (2e-4, 2e-5)
    np.testing.assert_allclose(params, expected, rtol=rtol, atol=atol)


def test_touched_entries_are_current():
    """Between catch-ups, touched coordinates already hold the dense value."""
    opt = Adam(0.05)
    rng = np.random.default_rng(1)
    steps = random_steps(rng, 30, 25)
    params = np.zeros(30)
    state = opt.init(params)
    for indices, grads in steps:
        opt.update(params, state, indices, grads)
    last = steps[-1][0]
    np.testing.assert_allclose(params[last], dense_run(opt, np.zeros(30), steps)[last], rtol=1e-9)


def minimize_quadratic(opt, n_steps=20):
    """f(x) = 0.1 x1^2 + 2 x2^2 from (-5, -2): the classic ill-conditioned example."""
    x = np.array([-5.0, -2.0])
    state = opt.init(x)
    for _ in range(n_steps):
        opt.update(x, state, np.array([0, 1]), np.array([0.2 * x[0], 4 * x[1]]))
    return x


@pytest.mark.parametrize(
    "opt, expected",
    [
        (SGD(0.4), (-0.943467, -0.000073)),
        (Momentum(0.4, momentum=0.5), (-0.062843, 0.001202)),
        (AdaGrad(0.4), (-2.382563, -0.158591)),
        (AdaGrad(2.0), (-0.002295, -0.000000)),
    ],
    ids=repr,
)
def test_classic_quadratic(opt, expected):
    np.testing.assert_allclose(minimize_quadratic(opt), expected, atol=1e-5)


def test_adam_exact_mode_differs_from_skip():
    """The lazy modes are genuinely different rules (guards against a no-op mode flag)."""
    steps = [(np.array([0, 1]), np.array([1.0, 1.0]))] + [(np.array([1]), np.array([1.0]))] * 5
    results = {}
    for mode in ("exact", "decay", "skip"):
        params = np.zeros(2)
        opt = Adam(0.1, lazy=mode)
        state = opt.init(params)
        for indices, grads in steps:
            opt.update(params, state, indices, grads)
        opt.catch_up(params, state)
        results[mode] = params[0]
    assert results["exact"] < results["decay"] < 0
    assert results["decay"] == results["skip"]  # no drift in either; they differ in moments


@pytest.mark.parametrize(
    "indices, grads, message",
    [
        (np.array([0, 1]), np.array([1.0]), "same length"),
        (np.array([0, 10]), np.array([1.0, 1.0]), "out of range"),
        (np.array([-1]), np.array([1.0]), "out of range"),
        (np.array([0.5]), np.array([1.0]), "integers"),
        (np.array([1]), np.array([np.nan]), "NaN or infinite"),
        (np.array([1]), np.array([np.inf]), "NaN or infinite"),
        (np.array([[1]]), np.array([[1.0]]), "1-D"),
    ],
)
@pytest.mark.parametrize("opt", [AdaGrad(0.1), Adam(0.1, weight_decay=0.1), FTRL(0.1)], ids=repr)
def test_bad_input_leaves_state_unchanged(opt, indices, grads, message):
    params = np.arange(10, dtype=np.float64)
    state = opt.init(params)
    opt.update(params, state, np.array([2, 3]), np.array([1.0, -1.0]))
    before = (params.copy(), state.slots.copy(), state.stamp.copy(), state.clock.copy())
    with pytest.raises(ValueError, match=message):
        opt.update(params, state, indices, grads)
    after = (params, state.slots, state.stamp, state.clock)
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)
    assert np.isnan(state.scratch).all()


@pytest.mark.parametrize(
    "params, message",
    [
        (np.zeros(10, dtype=np.int64), "float32 or float64"),
        (np.zeros((10, 1)), "1-D"),
        (np.zeros(11), "do not match"),
        (np.zeros(10, dtype=np.float32), "do not match"),
        ([0.0] * 10, "float32 or float64"),
    ],
)
def test_bad_params(params, message):
    opt = AdaGrad(0.1)
    state = opt.init(np.zeros(10))
    with pytest.raises(ValueError, match=message):
        opt.update(params, state, np.array([1]), np.array([1.0]))


def test_diverging_rate_is_an_error():
    opt = SGD(2.0, weight_decay=1.0)  # learning_rate * weight_decay >= 1
    params = np.ones(3)
    state = opt.init(params)
    with pytest.raises(ValueError, match="weight_decay"):
        opt.update(params, state, np.array([0]), np.array([1.0]))
    assert state.step == 0
    np.testing.assert_array_equal(params, 1.0)


@pytest.mark.parametrize(
    "opt, message",
    [
        (Adam(beta_1=1.0), "beta_1"),
        (Adam(lazy="sometimes"), "lazy"),
        (Momentum(momentum=-0.1), "momentum"),
        (AdaGrad(learning_rate=-1.0), "learning_rate"),
        (AdaGrad(learning_rate="fast"), "learning_rate"),
        (PiecewiseConstant([5, 3], [1.0, 0.5, 0.1]), "increasing"),
    ],
    ids=repr,
)
def test_bad_hyperparameters(opt, message):
    with pytest.raises((ValueError, TypeError), match=message):
        if isinstance(opt, PiecewiseConstant):
            opt.spec()
        else:
            opt.init(np.zeros(3))


def test_schedules():
    np.testing.assert_allclose(InverseScaling(1.0, power=0.5)([1, 4]), [1.0, 0.5])
    np.testing.assert_allclose(Exponential(2.0, 0.5)(2), 2.0 * np.exp(-1.0))
    np.testing.assert_allclose(PiecewiseConstant([2], [1.0, 0.1])([1, 2, 3]), [1.0, 1.0, 0.1])
    np.testing.assert_allclose(Warmup(3, 0.8)([1, 2, 3, 4, 5]), [0.2, 0.4, 0.6, 0.8, 0.8])


def test_optimizers_are_cloneable_parameter_objects():
    from sklearn.base import clone

    opt = Adam(InverseScaling(0.1), beta_2=0.99, lazy="decay")
    copy = clone(opt)
    assert copy is not opt and copy.get_params()["lazy"] == "decay"
    assert repr(copy) == repr(opt)


@pytest.mark.parametrize("opt", CASES, ids=repr)
@pytest.mark.parametrize("n_steps", [1, 2, 3, 250])
def test_advance_clock_equals_ticking(opt, n_steps):
    # advance_clock (after a Hogwild epoch or a Dask round) skips the ticks it can; the
    # clock it leaves must be the one n_steps single ticks leave, from any starting step
    from sparseopt.optim import _rules as R
    from sparseopt.optim._rules import advance_clock

    hp, spec = opt.hyperparameters(), opt.schedule_spec()
    for start in (0, 7):
        ticked = np.zeros(R.CLOCK_SIZE)
        for _ in range(start):
            R.tick(hp, spec, ticked)
        jumped = ticked.copy()
        for _ in range(n_steps):
            assert R.tick(hp, spec, ticked)
        assert advance_clock(hp, spec, jumped, n_steps)
        np.testing.assert_allclose(jumped, ticked, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "opt",
    [
        Adam(0.01),
        Adam(0.01, weight_decay=1e-3),
        AMSGrad(0.01, weight_decay=1e-3),
        Adam(0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-6),
        Adam(PiecewiseConstant([200_000], [0.01, 0.002]), weight_decay=1e-3),
    ],
    ids=repr,
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exact_catch_up_over_long_gaps(opt, dtype):
    """Gaps of 10^5 steps and more, weights from 1e-6 to 1e3 and gradients from 1e-9 (where
    epsilon dominates the second moment) to 1e2: the lazy weights equal dense Adam's."""
    from reference import DenseOptimizer

    from sparseopt.optim._rules import advance_clock

    n = 10
    start = (np.logspace(-6, 3, n) * np.resize([1.0, -1.0], n)).astype(dtype)
    # each gradient pushes its weight away from zero: no cancellation hides an error
    scale = -np.sign(start) * np.logspace(-9, 2, n)[::-1]
    rng = np.random.default_rng(0)
    # (steps without gradient before the event, coordinates touched)
    events = [(0, np.arange(n)), (0, np.arange(n)), (0, np.arange(0, n, 2)),
              (1_500, np.arange(n)), (120_000, np.arange(1, n, 2)), (130_000, np.arange(n)),
              (150_000, None)]  # fmt: skip
    params = start.copy()
    state = opt.init(params)
    dense = DenseOptimizer(opt, start)
    hp, spec = opt.hyperparameters(), opt.schedule_spec()
    for gap, touched in events:
        assert advance_clock(hp, spec, state.clock, gap)
        dense.idle(gap)
        if touched is not None:
            grads = scale[touched] * rng.uniform(0.5, 1.5, touched.size)
            opt.update(params, state, touched, grads)
            dense.step(touched, grads)
    opt.catch_up(params, state)
    assert state.step == dense.t
    np.testing.assert_allclose(params, dense.w, rtol=1e-8 if dtype == np.float64 else 1e-6)


def test_rule_and_accumulator_slot():
    """Each optimizer has its own rule code; the accumulator slot is the squared-gradient
    sum's (what a Dask merge weights the copies by), None where the rule keeps none."""
    assert len({cls().rule for cls in OPTIMIZERS.values()}) == len(OPTIMIZERS)
    slots = {name: cls().accumulator_slot for name, cls in OPTIMIZERS.items()}
    assert slots["adagrad"] == slots["rmsprop"] == 0
    assert slots["adam"] == slots["amsgrad"] == 1  # after the first moment
    assert slots["sgd"] is None and slots["momentum"] is None and slots["ftrl"] is None


def test_decayed_adagrad_trains_an_estimator():
    """A rule of its own module reaches the model kernels by its name: with ``decay=1`` it is
    AdaGrad, and the fit says so (to rounding: its accumulator is a product, then a sum)."""
    import scipy.sparse as sp

    from sparseopt import SparseLogisticRegression

    X = sp.random(200, 30, density=0.2, format="csr", random_state=0)
    y = np.arange(200) % 2
    coefs = []
    for opt in (AdaGrad(0.1), DecayedAdaGrad(0.1, decay=1.0)):
        model = SparseLogisticRegression(optimizer=opt, max_iter=2, tol=None, random_state=0)
        coefs.append(model.fit(X, y).coef_)
    np.testing.assert_allclose(coefs[1], coefs[0], rtol=1e-6, atol=1e-9)
    assert np.abs(coefs[0]).max() > 1e-3  # it learnt something
    named = SparseLogisticRegression(optimizer="decayed_adagrad", max_iter=2, random_state=0)
    assert np.isfinite(named.fit(X, y).coef_).all()
    with pytest.raises(ValueError, match="decay"):
        DecayedAdaGrad(decay=0.0).init(np.zeros(3))
