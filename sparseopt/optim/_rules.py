"""Per-coordinate update rules and their lazy catch-up, compiled with Numba.

Every model kernel in sparseopt calls two functions of this module: :func:`next_clock` once
per optimizer step, then :func:`update_coordinate` for each coordinate that the batch touches,
which brings the coordinate from its last step to the current one (the zero-gradient steps
it skipped) and applies its gradient.

The rule is an integer code (``SGD`` ... ``FTRL``), the first argument of every function here.
Every kernel is made for one rule by a factory (``functools.cache`` over a closure whose
constants are the rule and the like): Numba prunes the other rules' branches before it types
the kernel, so a fit compiles only its own rule, and the constants are part of the on-disk
cache's key, so the next process loads the kernel instead of compiling it. The dispatchers
here are inlined into the kernels: :func:`gradient_step` holds every rule's step as code
(the hot path: a call per step, even one LLVM inlined, cost 40% of an FM epoch), while
:func:`catch_up` calls small compiled functions (Numba inlines a callee before it prunes
branches, so every inlined line costs compile time at every call site).

Arrays shared with the kernels
------------------------------
hp : float64 array, or the tuple :func:`unpack` makes of it
    Hyperparameters, laid out by the ``HP_*`` indices below. The per-coordinate functions take
    the tuple: values in registers, where an array would be reloaded after every store (Numba
    cannot prove the arrays do not alias), which made the loop four times slower.
spec : float64 array
    The packed learning-rate schedule (see :mod:`sparseopt.optim._schedules`).
clock : float64 array (a tuple in the per-coordinate functions)
    The global step: ``[t, eta_t, eta_{t-1}, shrink_t, log_decay_t, log_decay_{t-1}]`` where
    ``shrink_t = 1 - eta_t * weight_decay`` and ``log_decay_t = sum_{s<=t} log(shrink_s)``.
    The tuple adds Adam's bias corrections ``1 - beta_1^t`` and ``1 - beta_2^t``
    (``CLOCK_BIAS_1``, ``CLOCK_BIAS_2``), computed once per step by :func:`next_clock` rather
    than twice per coordinate (two exponentials, a third of a lazy Adam update); 0 where the
    tuple was unpacked from the array, and then computed per coordinate.
    A coordinate last updated at step ``t0`` with ``mark = log_decay_{t0}`` catches up on the
    decoupled weight decay of the steps it skipped by the factor ``exp(log_decay_t - mark)``,
    exact for any schedule.
S, r, o : 2-D float array, row, offset
    One coordinate's optimizer state is ``S[r, o:o + n_slots]``: the standalone optimizers keep
    it in its own array (``o = 0``), the model kernels beside the weight in one table row
    (weight at column 0, ``o = 1``) so that a coordinate's values share a cache line.
    Indexing the table directly, rather than through a row view, kept the loop 1.5x faster.
"""

import functools
import math

import numba
import numpy as np

from .._jit import JIT
from ._registry import FIRST_CODE, registered_catch_up, registered_step
from ._schedules import CONSTANT, constant_rate, rate, rate_bound

# the rules written out here; the codes from FIRST_CODE on are rules of their own modules
SGD, MOMENTUM, ADAGRAD, RMSPROP, ADAM, AMSGRAD, FTRL = range(FIRST_CODE)
SKIP, DECAY, EXACT = range(3)  # Adam / AMSGrad lazy modes

# hp layout
(HP_RULE, HP_WEIGHT_DECAY, HP_EPSILON, HP_BETA_1, HP_BETA_2, HP_MODE, HP_L1, HP_L2, HP_BETA) = (
    range(9)
)
HP_SIZE = 9
# HP_BETA_1 doubles as `momentum` (Momentum) and `rho` (RMSProp); HP_MODE as `nesterov`.
# The tuple that unpack makes of hp adds log(beta_1) and log(beta_2): computed once per kernel
# call, they turn every power beta^k of a catch-up into one exponential.
HP_LOG_BETA_1, HP_LOG_BETA_2 = 9, 10

# clock layout
CLOCK_T, CLOCK_ETA, CLOCK_ETA_PREV, CLOCK_SHRINK, CLOCK_LOG_DECAY, CLOCK_LOG_DECAY_PREV = range(6)
CLOCK_SIZE = 6
CLOCK_BIAS_1, CLOCK_BIAS_2 = 6, 7  # in the tuple only

# The exact catch-up of a drifting rule (Momentum with weight decay, Adam and AMSGrad) brings
# the weight to within DRIFT_TOL of the drift it sums (relative; float32 rounds at 6e-8), see
# _adam_drift. Rules whose drift does not shrink (beta_1 >= sqrt(beta_2)) replay at most
# MAX_DRIFT_STEPS steps.
DRIFT_TOL = 2.0**-30
MAX_DRIFT_STEPS = 100_000
EPSILON_TERMS = 12  # most terms of the epsilon series (then replay)
BIAS_TERMS = 64  # most terms of the bias-correction series
BIAS_SERIES_MAX = 0.5  # the series is used once beta_2^s is below this (else replay)
_LOG_TOL_8 = math.log(DRIFT_TOL / 8.0)
_LOG_TOL_1024 = math.log(DRIFT_TOL / 1024.0)
_TINY = 1.1754943508222875e-38  # float32's smallest normal number
_LOG_BIAS_SERIES_MAX = math.log(BIAS_SERIES_MAX)


@numba.njit(inline="always", **JIT)
def unpack(values):
    """The hyperparameter or clock array as a tuple of 11 (see the module docstring): the
    hyperparameters with ``log(beta_1)``, ``log(beta_2)`` after them, the clock padded with
    zeros."""
    if values.size == CLOCK_SIZE:
        return (values[0], values[1], values[2], values[3], values[4], values[5], 0.0, 0.0, 0.0,
                0.0, 0.0)  # fmt: skip
    return (
        values[0], values[1], values[2], values[3], values[4], values[5], values[6], values[7],
        values[8], _log(values[HP_BETA_1]), _log(values[HP_BETA_2]),
    )  # fmt: skip


@numba.njit(inline="always", **JIT)
def _log(x):
    """``log(x)``, -inf at 0."""
    return math.log(x) if x > 0.0 else -math.inf


@numba.njit(inline="always", **JIT)
def next_clock(hp, spec, clock):
    """The clock tuple one step later, and whether its rate and shrink are usable.

    Kernels carry the clock as a tuple through their batch loop: in registers, a step costs
    a few nanoseconds, where ticking an array in memory cost 40 ns (15% of a linear epoch).
    The tuple has :func:`unpack`'s eleven entries: the six of the array, Adam's two bias
    corrections (0 for other rules), three zeros.
    """
    t = clock[CLOCK_T] + 1.0
    eta = rate(spec, t)
    shrink = 1.0 - eta * hp[HP_WEIGHT_DECAY]
    log_decay = clock[CLOCK_LOG_DECAY]
    if shrink > 0.0 and shrink != 1.0:  # log(1) = 0: no decay without weight decay
        log_decay += math.log(shrink)
    usable = math.isfinite(eta) and eta > 0.0 and shrink > 0.0
    bias_1 = bias_2 = 0.0
    if hp[HP_RULE] == ADAM or hp[HP_RULE] == AMSGRAD:
        bias_1 = 1.0 - _power(hp[HP_LOG_BETA_1], t)
        bias_2 = 1.0 - _power(hp[HP_LOG_BETA_2], t)
    return usable, (t, eta, clock[CLOCK_ETA], shrink, log_decay, clock[CLOCK_LOG_DECAY],
                    bias_1, bias_2, 0.0, 0.0, 0.0)  # fmt: skip


@numba.njit(inline="always", **JIT)
def store_clock(ticked, clock):
    """Write a clock tuple back into the clock array."""
    for i in range(CLOCK_SIZE):
        clock[i] = ticked[i]


@numba.njit(**JIT)
def tick(hp, spec, clock):
    """Advance the clock array by one step; returns False if the new rate or shrink is unusable."""
    usable, ticked = next_clock(unpack(hp), spec, unpack(clock))
    store_clock(ticked, clock)
    return usable


@numba.njit(inline="always", **JIT)
def tick_through(hp, spec, clock, step, last):
    """Tick the clock tuple once for each global step from ``step`` to ``last``; returns the
    next step (-1 if the schedule became unusable) and the clock."""
    while step <= last:
        usable, clock = next_clock(hp, spec, clock)
        if not usable:
            return -1, clock
        step += 1
    return step, clock


@numba.njit(**JIT)
def advance_clock(hp, spec, clock, n_steps):
    """Tick the clock array ``n_steps`` times (after a Hogwild epoch or a Dask round); False
    if unusable.

    Without weight decay a tick changes only ``t`` and the rates, so the clock jumps to two
    steps before the end and ticks those two: the same clock, in O(1) instead of 40 ns a
    step. Skipping the rate checks in between is safe: every schedule's rate is positive or
    monotone in ``t``, so it was usable all along if it is usable at the end.
    """
    if hp[HP_WEIGHT_DECAY] == 0.0 and n_steps > 2:
        clock[CLOCK_T] += n_steps - 2
        n_steps = 2
    step, ticked = tick_through(unpack(hp), spec, unpack(clock), 0, n_steps - 1)
    store_clock(ticked, clock)
    return step >= 0


@numba.njit(**JIT)
def ftrl_weight(z, n, alpha, hp):
    """FTRL-Proximal's closed-form weight from its state ``(z, n)``."""
    l1 = hp[HP_L1]
    if abs(z) <= l1:
        return 0.0
    return -(z - math.copysign(l1, z)) / ((hp[HP_BETA] + math.sqrt(n)) / alpha + hp[HP_L2])


@numba.njit(inline="always", **JIT)
def catch_up(rule, hp, spec, w, S, r, o, steps):
    """Apply the zero-gradient steps ``last + 1 .. t`` to one coordinate; returns its weight.

    ``steps = (last, t, log_decay_t, mark)``: ``mark`` is the coordinate's ``log_decay`` at
    step ``last`` and ``log_decay_t`` the global one at step ``t``. ``rule`` is a compile-time
    constant in every kernel: only its own branch is compiled; the branches call small
    compiled functions (inlining whole rules into every call site multiplied compile time).
    Kernels call it through :func:`catch_up_row`, which holds no reference counts.
    """
    last, t, log_decay_t, mark = steps
    k = t - last
    if k <= 0.0:
        return w
    wd = hp[HP_WEIGHT_DECAY]
    if rule >= FIRST_CODE:  # a rule of its own module: its weight does not drift
        return registered_catch_up(rule, hp, w, S, r, o, k) * _decay_factor(wd, log_decay_t, mark)
    if rule == SGD or rule == ADAGRAD:
        return w * _decay_factor(wd, log_decay_t, mark)
    if rule == MOMENTUM and wd == 0.0:
        w, S[r, o] = _momentum_catch_up(hp, w, S[r, o], k)
        return w
    if rule == RMSPROP:
        S[r, o] = _decayed(S[r, o], hp[HP_LOG_BETA_1], k)
        return w * _decay_factor(wd, log_decay_t, mark)
    if rule == ADAM or rule == AMSGRAD:
        mode = int(hp[HP_MODE])
        if mode != EXACT:
            if mode == DECAY:
                S[r, o] = _decayed(S[r, o], hp[HP_LOG_BETA_1], k)
                S[r, o + 1] = _decayed(S[r, o + 1], hp[HP_LOG_BETA_2], k)
            return w * _decay_factor(wd, log_decay_t, mark)
    if rule == FTRL:  # the decay shrinks z, and the weight follows from the state
        S[r, o] *= _decay_factor(wd, log_decay_t, mark)
        return ftrl_weight(S[r, o], S[r, o + 1], rate(spec, t), hp)
    # drifting rules: Momentum with weight decay, exact Adam and AMSGrad. Written out here,
    # with scalar-only helpers: an inlined helper that takes arrays costs reference count
    # updates on every call (atomic, 80 ns a catch-up in the linear kernel)
    m = S[r, o]
    v = S[r, o + 1] if rule != MOMENTUM else 0.0
    vmax = S[r, o + 2] if rule == AMSGRAD else 0.0
    eta = spec[2] if spec[0] == CONSTANT and last + 1.0 > spec[1] else -1.0  # constant rate
    ok, w_t, m, v = _closed_catch_up(rule, hp, eta, w, (m, v, vmax), steps)
    if not ok:
        w_t, m, v = _replay(rule, hp, spec, w, (m, v, vmax), steps)
    S[r, o] = m
    if rule != MOMENTUM:
        S[r, o + 1] = v
    return w_t


@numba.njit(inline="always", **JIT)
def catch_up_row(rule, hp, spec, tables, spans, steps):
    """Bring one row of a model (a feature, a user, an item) from step ``last`` to ``t``: the
    zero-gradient steps of :func:`catch_up` on each of its coordinates.

    ``tables = (weights, factors)`` and ``spans = (lo, hi, f_lo, f_hi, k_row)``: the row owns
    rows ``lo .. hi - 1`` of ``weights`` and ``f_lo .. f_hi - 1`` of ``factors``, each with its
    value in column 0 and its slots after it; with ``k_row > 0`` its factor rows are vectors of
    per-row AdaGrad instead (``k_row`` values, then one accumulator shared by them), whose
    catch-up is the weight decay alone. ``steps = (last, t, log_decay_t, mark)``.

    Every model kernel catches its rows up through this one helper, inlined. The linear and
    FM kernels pass it :func:`~sparseopt._jit.borrowed` arrays (``spec`` and the tables):
    taken as they are, they cost an atomic increment and decrement of their reference counts
    per call. A helper that is called rather than inlined cost more than the catch-up itself
    (benchmarks/README.md, issue 28's third pass).
    """
    weights, factors = tables
    lo, hi, f_lo, f_hi, k_row = spans
    for r in range(lo, hi):
        weights[r, 0] = catch_up(rule, hp, spec, weights[r, 0], weights, r, 1, steps)
    if k_row > 0:
        shrink = _decay_factor(hp[HP_WEIGHT_DECAY], steps[2], steps[3])
        if shrink != 1.0:
            for u in range(f_lo, f_hi):
                for f in range(k_row):
                    factors[u, f] *= shrink
    else:
        for r in range(f_lo, f_hi):
            factors[r, 0] = catch_up(rule, hp, spec, factors[r, 0], factors, r, 1, steps)


@numba.njit(inline="always", **JIT)
def rows_zero(S, lo, hi):
    """Whether rows ``lo .. hi - 1`` of ``S`` (values and slots) are all zero: their
    zero-gradient steps change nothing under any rule, whatever their stamps say."""
    for r in range(lo, hi):
        for c in range(S.shape[1]):
            if S[r, c] != 0.0:
                return False
    return True


@numba.njit(**JIT)
def _power(log_base, k):
    """``base ** k`` from ``log(base)``: one exponential (a float power cost 50 ns), and an
    exact 0 below float64's range (an exponential that ends in subnormals is slow)."""
    x = k * log_base
    # exp's argument clamped too: LLVM may compute it before the test, and an exponential
    # that underflows takes glibc's slow path (a third of a decay epoch once, perf)
    return math.exp(max(x, -745.0)) if x > -745.0 else 0.0


@numba.njit(**JIT)
def _decayed(value, log_base, k):
    """A moment ``value * base ** k`` as it is stored: 0 below float32's smallest normal number,
    so that no table holds a subnormal (an operation on one, or a float32 store that makes
    one, costs about 100 ns); 1e-38 is far below anything a moment adds to (epsilon^2)."""
    x = k * log_base
    # below e^-160 every moment under 1e31 ends below 1e-38 (and exp is slow); a zero moment
    # (a coordinate never touched: most of the table when a fit ends) needs no exponential
    if x < -160.0 or value == 0.0:
        return 0.0
    decayed = value * math.exp(max(x, -160.0))  # clamped as in _power
    return decayed if abs(decayed) >= _TINY else 0.0


# for the rules of their own modules
decayed = _decayed


@numba.njit(**JIT)
def _decay_factor(wd, log_decay_t, mark):
    """The decoupled weight decay of the skipped steps, ``exp(log_decay_t - mark)``."""
    return math.exp(log_decay_t - mark) if wd > 0.0 else 1.0


@numba.njit(**JIT)
def _momentum_catch_up(hp, w, v, k):
    """Momentum's ``k`` zero-gradient steps without weight decay: ``v_i = gamma^i v_0`` and
    w moves by ``c sum_{i=1..k} v_i`` (``c = gamma`` for Nesterov); returns (w, v)."""
    gamma = hp[HP_BETA_1]
    c = gamma if hp[HP_MODE] != 0.0 else 1.0
    return w - c * v * gamma * (1.0 - gamma**k) / (1.0 - gamma), v * gamma**k


@numba.njit(**JIT)
def _geometric(r, log_r, sigma, log_sigma, sigma_k, k):
    """``H = sum_{i=1..k} r^i sigma^(k-i)`` for ``0 < r < 1``, ``0 < sigma <= 1``, ``k >= 1``,
    given the logs and ``sigma_k = sigma^k``.

    :math:`H = r (r^k - \\sigma^k) / (r - \\sigma)`; the difference is taken through
    ``expm1`` (nothing cancels when r is close to sigma) and needs no exponential at all once
    :math:`(r / \\sigma)^k` is below float64 precision (a long gap).
    """
    d = log_r - log_sigma
    if d == 0.0:
        return k * sigma_k
    x = k * d
    if d < 0.0:  # sigma^k ((r / sigma)^k - 1)
        difference = sigma_k * (math.expm1(x) if x > -40.0 else -1.0)
    else:  # r^k (1 - (sigma / r)^k)
        difference = -_power(log_r, k) * math.expm1(-x)
    gap = r - sigma
    if abs(gap) < 1e-3 * sigma:
        gap = sigma * math.expm1(d)
    return r * difference / gap


@numba.njit(inline="always", **JIT)
def _flat_geometric(r, log_r, r_k, k):
    """:func:`_geometric` without weight decay (``sigma = 1``) given ``r_k = r^k``:
    :math:`H = r (1 - r^k) / (1 - r)`, no exponential; for r within 1e-3 of 1 both
    differences go through ``expm1`` (nothing cancels)."""
    if log_r > -1e-3:
        return r * math.expm1(k * log_r) / math.expm1(log_r)
    return r * (1.0 - r_k) / (1.0 - r)


@numba.njit(inline="always", **JIT)
def _powers(hp, k):
    """``(beta_1^k, beta_2^k)``: two exponentials that a drifting catch-up shares between the
    moments' decay and its geometric sums."""
    return _power(hp[HP_LOG_BETA_1], k), _power(hp[HP_LOG_BETA_2], k)


@numba.njit(inline="always", **JIT)
def _decayed_by(value, power, log_power):
    """:func:`_decayed` with the power known (``log_power`` its log): the same value."""
    if log_power < -160.0 or value == 0.0:
        return 0.0
    decayed = value * power
    return decayed if abs(decayed) >= _TINY else 0.0


@numba.njit(**JIT)
def _adam_drift(amsgrad, hp, m, V, step, rest, sigma, log_sigma, powers):
    """The drift of Adam's (or AMSGrad's) zero-gradient steps ``step + 1 .. step + rest`` at a
    constant rate, divided by the rate, in closed form; returns (ok, drift). ``powers`` is
    :func:`_powers` over ``rest``.

    Let :math:`m, V` be the moments at ``step`` (V: ``v``, or AMSGrad's ``v_max``),
    :math:`B = \\sqrt V`, :math:`E = \\epsilon / B`, :math:`\\sigma` the weight-decay shrink
    of a step and :math:`s = \\text{step} + i`. Step i moves the weight by

    .. math::
        d_i = \\eta \\frac{\\beta_1^i m / c_1(s)}{\\sqrt{V_i / c_2(s)} + \\epsilon}
            = \\eta \\frac{m}{B} \\frac{\\beta_1^i}{c_1(s)}
              \\sum_{n \\ge 0} (-E)^n \\, u^{-(n+1) i} \\, c_2(s)^{(n+1)/2},

    with :math:`c_1(s) = 1 - \\beta_1^s`, :math:`c_2(s) = 1 - \\beta_2^s`,
    :math:`V_i = \\beta_2^i V` and :math:`u = \\sqrt{\\beta_2}` for Adam,
    :math:`V_i = V` and :math:`u = 1` for AMSGrad (the series is the expansion of
    :math:`1 / (1 + x)` in :math:`x = E \\sqrt{c_2(s)} u^{-i}`). The caller ensures
    :math:`\\beta_1^{s} \\le \\tau / 8` (``tau = DRIFT_TOL``), so :math:`1/c_1 = 1` to
    :math:`\\tau / 4`. With :math:`y = \\beta_2^{\\text{step}}` the binomial series
    :math:`c_2(s)^a = \\sum_j \\binom{a}{j} (-y)^j \\beta_2^{j i}` turns every term into a
    geometric sum, and the weight at the end is
    :math:`\\sigma^{rest} w - \\eta \\frac{m}{B} \\sum_{n, j} (-E)^n \\binom{(n+1)/2}{j}
    (-y)^j H(r_{nj})` with :math:`r_{nj} = \\beta_1 u^{-(n+1)} \\beta_2^j` and
    :math:`H(r) = \\sum_{i=1}^{rest} r^i \\sigma^{rest - i}` (:func:`_geometric`). Once
    :math:`y < \\tau / 1024` the bias series is left out: it changes the result by less than
    :math:`(n + 1) y / (2 (1 - y)) < \\tau / 100` for the ``EPSILON_TERMS`` terms kept.

    Error bound. Truncating :math:`1/(1+x)` after N terms leaves at most :math:`x^N` per step,
    so the omitted epsilon terms sum to at most :math:`E^N H(r_{N0})` (as
    :math:`c_2 \\le 1`); truncating the binomial series after J terms (:math:`J \\ge a`,
    from where its coefficients shrink) leaves at most
    :math:`|\\binom{a}{J}| y^J / (1 - y) \\, H(r_{n0})`, since
    :math:`H(r_{nj}) \\le H(r_{n0})`. Terms are added until these bounds, summed, are below
    :math:`\\tau / 2` of the result; if that cannot happen within ``EPSILON_TERMS`` and
    ``BIAS_TERMS`` terms (epsilon dominates a tiny second moment, :math:`y` near 1, or a
    ratio :math:`r_{n0} \\ge 1`) ok is False and the caller replays the steps instead.

    Cost. Without weight decay (:math:`\\sigma = 1`, the usual case)
    :math:`H(r) = r (1 - r^{rest}) / (1 - r)` and every power it needs is a product of the
    two the moments' decay takes anyway: :math:`r_{nj}^{rest} = \\beta_1^{rest}
    (\\beta_2^{rest})^{j - (n + 1)/2}` (AMSGrad: :math:`(\\beta_2^{rest})^j`), built term
    by term with one square root, so the sums cost no exponential (a third of an exact epoch
    before, 5 to 6 per catch-up). A power is at most ``EPSILON_TERMS + BIAS_TERMS``
    products from the two exponentials, so within :math:`2^{-46}` of its value (relative),
    and :math:`H` within :math:`2^{-46} / (1 - r) \\le 2^{-36}` (the products serve only
    ratios below :math:`e^{-0.001}`; closer to 1 both differences take ``expm1``): below
    :math:`\\tau / 8`, on top of the truncation bound. Where a power leaves float64's normal
    range (a gap beyond about 6,600 steps with the default betas) the sums take
    :func:`_geometric`, which needs no exponential there either.
    """
    b1, b2, eps = hp[HP_BETA_1], hp[HP_BETA_2], hp[HP_EPSILON]
    lb2 = hp[HP_LOG_BETA_2]
    B = math.sqrt(V)
    if not B > 0.0:
        return False, 0.0
    E = eps / B
    y = math.exp(step * lb2) if step * lb2 > _LOG_TOL_1024 else 0.0
    sigma_k = _power(log_sigma, rest) if log_sigma != 0.0 else 1.0
    shrink_r = 1.0 if amsgrad else 1.0 / math.sqrt(b2)  # r_{n+1,0} / r_{n,0}
    r = b1 * shrink_r
    log_r = hp[HP_LOG_BETA_1] - (0.0 if amsgrad else 0.5 * lb2)
    if log_r >= 0.0:
        return False, 0.0
    # without weight decay, r^rest for every ratio from the powers (see Cost above)
    p1, p2 = powers
    flat = log_sigma == 0.0 and rest * hp[HP_LOG_BETA_1] > -700.0 and rest * lb2 > -700.0
    shrink_k = 1.0 if amsgrad or not flat else 1.0 / math.sqrt(p2)  # shrink_r^rest
    r_k = p1 * shrink_k  # r^rest
    if flat:
        h0 = _flat_geometric(r, log_r, r_k, rest)
    else:
        h0 = _geometric(r, log_r, sigma, log_sigma, sigma_k, rest)
    total = 0.0
    err = 0.0
    e_n = 1.0  # (-E)^n
    for n in range(EPSILON_TERMS):
        a = 0.5 * (n + 1)
        part = h0
        c = 1.0  # binom(a, j) (-y)^j
        r_j = r
        r_jk = r_k  # r_j^rest
        j = 0
        while y > 0.0:
            c *= (a - j) / (j + 1) * -y
            j += 1
            if c == 0.0:  # a is an integer: the binomial series ends
                break
            remainder = abs(e_n * c) / (1.0 - y) * h0
            if j >= a and remainder <= DRIFT_TOL / 8.0 * abs(total + e_n * part):
                err += remainder
                break
            if j >= BIAS_TERMS:
                return False, 0.0
            r_j *= b2
            if flat:
                r_jk *= p2
                part += c * _flat_geometric(r_j, log_r + j * lb2, r_jk, rest)
            else:
                part += c * _geometric(r_j, log_r + j * lb2, sigma, log_sigma, sigma_k, rest)
        total += e_n * part
        e_n *= -E
        if not amsgrad:  # the next epsilon term's ratio
            r *= shrink_r
            log_r -= 0.5 * lb2
            if log_r >= 0.0:
                return False, 0.0
            if flat:
                r_k *= shrink_k
                h0 = _flat_geometric(r, log_r, r_k, rest)
            else:
                h0 = _geometric(r, log_r, sigma, log_sigma, sigma_k, rest)
        tail = abs(e_n) * h0
        if tail <= DRIFT_TOL / 8.0 * abs(total):
            return err + tail <= DRIFT_TOL / 2.0 * abs(total), m / B * total
    return False, 0.0


@numba.njit(**JIT)
def _closed_drift(rule, hp, eta, m, V, step, t, powers):
    """The drift of the zero-gradient steps ``step + 1 .. t`` at the constant rate ``eta``,
    shrunk by their weight decay, in closed form (see :func:`_closed_catch_up`); returns
    (ok, drift). ``powers``: :func:`_powers` over ``t - step``."""
    wd = hp[HP_WEIGHT_DECAY]
    sigma = 1.0 - eta * wd
    log_sigma = math.log1p(-eta * wd) if wd > 0.0 else 0.0
    rest = t - step
    if rule == MOMENTUM:  # d_i = c gamma^i v
        c = hp[HP_BETA_1] if hp[HP_MODE] != 0.0 else 1.0
        sigma_k = _power(log_sigma, rest)
        return True, c * m * _geometric(hp[HP_BETA_1], hp[HP_LOG_BETA_1], sigma, log_sigma,
                                        sigma_k, rest)  # fmt: skip
    ok, drift = _adam_drift(rule == AMSGRAD, hp, m, V, step, rest, sigma, log_sigma, powers)
    return ok, eta * drift


@numba.njit(inline="always", **JIT)
def _closed_form_fits(rule, hp, step):
    """Whether :func:`_closed_drift` may sum the steps after ``step`` (at a constant rate):
    for Adam, small bias corrections (``beta_1^(step+1) <= DRIFT_TOL / 8``) and a bias series
    that converges fast (``beta_2^step <= BIAS_SERIES_MAX``)."""
    return rule == MOMENTUM or (
        (step + 1.0) * hp[HP_LOG_BETA_1] <= _LOG_TOL_8
        and step * hp[HP_LOG_BETA_2] <= _LOG_BIAS_SERIES_MAX
    )


@numba.njit(**JIT)
def _closed_catch_up(rule, hp, eta, w, moments, steps):
    """Zero-gradient steps ``last + 1 .. t`` of a drifting rule (Momentum with weight decay,
    Adam, AMSGrad) in constant time, where the closed form holds: returns (ok, w, m, v), ok
    False if the caller must replay them (:func:`_replay`). ``eta > 0`` is the rate if it is
    constant over the steps; ``moments = (m, v, vmax)``, ``v`` Adam's second moment, ``vmax``
    AMSGrad's maximum; ``steps = (last, t, log_decay_t, mark)`` as for :func:`catch_up`.

    Dense steps shrink the weight by :math:`\\sigma_s = 1 - \\eta_s \\lambda`, decay the
    moments and move the weight by a drift :math:`d_s` that shrinks geometrically (Momentum:
    :math:`\\gamma^i v`; Adam: about :math:`(\\beta_1 / \\sqrt{\\beta_2})^i \\eta m / \\sqrt v`).
    Where the rate is constant to the end (and, for Adam, :math:`\\beta_1^s` and
    :math:`\\beta_2^s` are small enough for the series of :func:`_adam_drift`), the steps are
    summed in closed form, in constant time whatever the gap, to ``DRIFT_TOL`` of the drift.
    Elsewhere (the first steps of a run, where the bias corrections change fast; a schedule
    that is not constant) :func:`_replay` takes the steps one by one until the drift still to
    come is provably below ``DRIFT_TOL`` of the drift so far: with :math:`\\eta_{max}` the
    schedule's bound and :math:`\\sigma_{min} = 1 - \\eta_{max} \\lambda`, what is left is at
    most :math:`\\eta_{max} |m| / c_1(s + 1) \\cdot \\min(\\frac{\\rho_q}{(1 - \\rho_q) \\sqrt V},
    \\frac{\\rho_1}{(1 - \\rho_1) \\epsilon})` with :math:`\\rho_q = \\beta_1 / (u \\sigma_{min})`,
    :math:`\\rho_1 = \\beta_1 / \\sigma_{min}` (Momentum: :math:`|c v| \\rho / (1 - \\rho)`,
    :math:`\\rho = \\gamma / \\sigma_{min}`), relative to the shrink of the steps to come,
    and the closed form takes over where it holds. Then the moments decay by
    :math:`\\beta^k` and the weight by the rest of the decay.
    """
    m, v, vmax = moments
    last, t, log_decay_t, mark = steps
    if m == 0.0 or hp[HP_BETA_1] == 0.0:
        w, m, v = _finish(hp, w, m, v, t - last, log_decay_t, mark)
        return True, w, m, v
    if not (eta > 0.0 and _closed_form_fits(rule, hp, last)):
        return False, w, m, v
    powers = _powers(hp, t - last)
    ok, tail = _closed_drift(rule, hp, eta, m, vmax if rule == AMSGRAD else v, last, t, powers)
    if not ok:
        return False, w, m, v
    w, m, v = _finish_by(hp, w, m, v, (t - last, powers), log_decay_t, mark)
    return True, w - tail, m, v


@numba.njit(inline="always", **JIT)
def _finish(hp, w, m, v, rest, log_decay_t, log_sim):
    """The moments' decay over the last ``rest`` steps and the weight decay still due."""
    if rest > 0.0:
        m = _decayed(m, hp[HP_LOG_BETA_1], rest)
        v = _decayed(v, hp[HP_LOG_BETA_2], rest)
    return w * _decay_factor(hp[HP_WEIGHT_DECAY], log_decay_t, log_sim), m, v


@numba.njit(inline="always", **JIT)
def _finish_by(hp, w, m, v, decay, log_decay_t, log_sim):
    """:func:`_finish` with ``decay = (rest, powers)``, the powers :func:`_powers` over
    ``rest``: no exponential of its own."""
    rest, (p1, p2) = decay
    if rest > 0.0:
        m = _decayed_by(m, p1, rest * hp[HP_LOG_BETA_1])
        v = _decayed_by(v, p2, rest * hp[HP_LOG_BETA_2])
    return w * _decay_factor(hp[HP_WEIGHT_DECAY], log_decay_t, log_sim), m, v


@numba.njit(**JIT)
def _replay(rule, hp, spec, w, moments, steps):
    """:func:`_closed_catch_up` step by step from ``last``, until the drift still to come is
    negligible or the closed form takes over; returns (w, m, v) at step t."""
    m, v, vmax = moments
    step, t, log_decay_t, log_sim = steps
    wd = hp[HP_WEIGHT_DECAY]
    b1, b2, eps = hp[HP_BETA_1], hp[HP_BETA_2], hp[HP_EPSILON]
    momentum = rule == MOMENTUM
    amsgrad = rule == AMSGRAD
    c = b1 if momentum and hp[HP_MODE] != 0.0 else 1.0  # Nesterov moves by gamma * v
    sqrt_vmax = math.sqrt(vmax)
    eta_max = rate_bound(spec, step + 1.0)
    sigma_min = 1.0 - eta_max * wd
    # the ratio by which each later step's drift (relative to the shrink still to come) falls
    ratio = b1 / sigma_min
    ratio_q = ratio if momentum or amsgrad else ratio / math.sqrt(b2)
    p1 = _power(hp[HP_LOG_BETA_1], step)  # beta_1^step, beta_2^step
    p2 = _power(hp[HP_LOG_BETA_2], step)
    drift = 0.0  # the replayed drift, shrunk to step `step`
    tail = 0.0  # the closed form's drift of the steps after `step`, at step t
    tried = False
    n_sim = 0
    while step < t and n_sim < MAX_DRIFT_STEPS and m != 0.0:
        if not tried and _closed_form_fits(rule, hp, step) and constant_rate(spec, step + 1.0, t):
            tried = True
            powers = _powers(hp, t - step)
            V = vmax if amsgrad else v
            ok, tail = _closed_drift(rule, hp, rate(spec, t), m, V, step, t, powers)
            if ok:
                w, m, v = _finish_by(hp, w, m, v, (t - step, powers), log_decay_t, log_sim)
                return w - tail, m, v
            tail = 0.0
        step += 1.0
        n_sim += 1
        eta = rate(spec, step)
        if wd > 0.0:
            shrink = 1.0 - eta * wd
            w *= shrink
            drift *= shrink
            log_sim += math.log(shrink)
        m *= b1
        p1 *= b1
        if momentum:
            d = c * m
            left = abs(d) * ratio / (1.0 - ratio) if ratio < 1.0 else math.inf
        else:
            v *= b2
            p2 *= b2
            sqrt_v = sqrt_vmax if amsgrad else math.sqrt(v)
            d = eta * (m / (1.0 - p1)) / (sqrt_v / math.sqrt(1.0 - p2) + eps)
            scale = eta_max * abs(m) / (1.0 - p1 * b1)
            by_v = ratio_q / ((1.0 - ratio_q) * sqrt_v) if ratio_q < 1.0 else math.inf
            by_eps = ratio / ((1.0 - ratio) * eps) if ratio < 1.0 else math.inf
            left = scale * min(by_v, by_eps)
        w -= d
        drift += d
        if left <= DRIFT_TOL * abs(drift):
            break
    w, m, v = _finish(hp, w, m, v, t - step, log_decay_t, log_sim)
    return w - tail, m, v


@numba.njit(inline="always", **JIT)
def gradient_step(rule, hp, clock, w, g, S, r, o):
    """One step of the rule with gradient ``g`` at the clock's step and rate; returns w.

    The math is written here, not in a function per rule: a call, even one LLVM inlines,
    made the per-row AdaGrad FM loop 40% slower (the kernels pass ``rule`` as a constant, so
    only its own branch is compiled).
    """
    if rule >= FIRST_CODE:
        return registered_step(rule, hp, clock, w, g, S, r, o)
    eps = hp[HP_EPSILON]
    eta = clock[CLOCK_ETA]
    if rule == SGD:
        return w - eta * g
    if rule == MOMENTUM:
        gamma = hp[HP_BETA_1]
        v = gamma * S[r, o] + eta * g
        S[r, o] = v
        return w - (eta * g + gamma * v) if hp[HP_MODE] != 0.0 else w - v
    if rule == ADAGRAD:
        acc = S[r, o] + g * g
        S[r, o] = acc
        return w - eta * g / (math.sqrt(acc) + eps)
    if rule == RMSPROP:
        rho = hp[HP_BETA_1]
        acc = rho * S[r, o] + (1.0 - rho) * g * g
        S[r, o] = acc
        return w - eta * g / (math.sqrt(acc) + eps)
    if rule == ADAM or rule == AMSGRAD:
        b1 = hp[HP_BETA_1]
        b2 = hp[HP_BETA_2]
        m = b1 * S[r, o] + (1.0 - b1) * g
        v = b2 * S[r, o + 1] + (1.0 - b2) * g * g
        S[r, o] = m
        S[r, o + 1] = v
        if rule == AMSGRAD:
            v = max(S[r, o + 2], v)
            S[r, o + 2] = v
        bias_1 = clock[CLOCK_BIAS_1]
        bias_2 = clock[CLOCK_BIAS_2]
        if bias_1 == 0.0:  # a clock unpacked from its array (see the module docstring)
            bias_1 = 1.0 - _power(hp[HP_LOG_BETA_1], clock[CLOCK_T])
            bias_2 = 1.0 - _power(hp[HP_LOG_BETA_2], clock[CLOCK_T])
        m_hat = m / bias_1
        v_hat = v / bias_2
        return w - eta * m_hat / (math.sqrt(v_hat) + eps)
    # FTRL-Proximal
    n = S[r, o + 1]
    n_new = n + g * g
    sigma = (math.sqrt(n_new) - math.sqrt(n)) / eta
    z = S[r, o] + g - sigma * w
    S[r, o] = z
    S[r, o + 1] = n_new
    return ftrl_weight(z, n_new, eta, hp)


@numba.njit(inline="always", **JIT)
def step_caught_up(rule, hp, clock, S, r, g):
    """The rule's step on ``S[r, 0]`` (weight in column 0, slots after it), already caught up
    to step t - 1, with gradient g; returns the new weight.

    :func:`update_coordinate` with ``last = t - 1`` (its catch-up is then a no-op) for the
    models that catch a row up before their forward pass, and without FTRL (which they do not
    offer): decoupled weight decay, then the rule's gradient step.
    """
    w = S[r, 0]
    if hp[HP_WEIGHT_DECAY] > 0.0:
        w *= clock[CLOCK_SHRINK]
    return gradient_step(rule, hp, clock, w, g, S, r, 1)


@numba.njit(inline="always", **JIT)
def row_adagrad_scale(hp, clock, factors, x, k, sum_sq):
    """Per-row AdaGrad for a factor vector: add ``sum_sq / k`` to row x's accumulator (its
    column ``k``); returns the step's scale.

    With :math:`G_x \\leftarrow G_x + \\lVert g_x \\rVert^2 / k`, the vector moves by
    :math:`-\\eta_t g_x / (\\sqrt{G_x} + \\epsilon)`: one square root per vector, and the
    k-loops run over contiguous floats.
    """
    acc = factors[x, k] + sum_sq / k
    factors[x, k] = acc
    return clock[CLOCK_ETA] / (math.sqrt(acc) + hp[HP_EPSILON])


@numba.njit(inline="always", **JIT)
def update_coordinate(rule, hp, spec, clock, w, g, S, r, o, since):
    """Catch a coordinate up from step ``last`` to ``t - 1``, then apply gradient ``g`` at t.

    ``since = (last, mark)``, the coordinate's step and ``log_decay`` at its last update; the
    caller records ``t`` and ``clock[CLOCK_LOG_DECAY]`` as the new ones. Decoupled weight
    decay shrinks the weight (FTRL: its ``z``) by ``shrink_t`` before the rule's step, as in
    AdamW.
    """
    t = clock[CLOCK_T]
    last, mark = since
    w = catch_up(rule, hp, spec, w, S, r, o, (last, t - 1.0, clock[CLOCK_LOG_DECAY_PREV], mark))
    ftrl = rule == FTRL
    if ftrl and t > 1.0:
        # the weight of the previous step, also when a schedule changed the rate since
        w = ftrl_weight(S[r, o], S[r, o + 1], clock[CLOCK_ETA_PREV], hp)
    if hp[HP_WEIGHT_DECAY] > 0.0:
        if ftrl:
            S[r, o] *= clock[CLOCK_SHRINK]
        else:
            w *= clock[CLOCK_SHRINK]
    return gradient_step(rule, hp, clock, w, g, S, r, o)


@functools.cache
def sparse_step(rule):
    """The kernel ``step(hp, spec, clock, state, indices, grads)`` of one optimizer step of
    ``rule`` on the coordinates ``indices`` (repeats summed), in place.

    ``state`` is ``(params, slots, stamp, mark, scratch)``; ``scratch`` a NaN-filled float64
    array as long as ``params``: the sparse accumulator that sums repeated indices in
    O(len(indices)); it is NaN again on return.
    """
    RULE = rule

    @numba.njit(**JIT)
    def step(hp, spec, clock, state, indices, grads):
        params, slots, stamp, mark, scratch = state
        unique = np.empty(indices.size, np.int64)
        n_unique = 0
        for i in range(indices.size):
            j = indices[i]
            if math.isnan(scratch[j]):
                scratch[j] = grads[i]
                unique[n_unique] = j
                n_unique += 1
            else:
                scratch[j] += grads[i]
        hp = unpack(hp)
        clock = unpack(clock)
        t = clock[CLOCK_T]
        lazy = stamp.size > 0
        for u in range(n_unique):
            j = unique[u]
            g = scratch[j]
            scratch[j] = np.nan
            last = stamp[j] if lazy else t - 1.0
            marked = mark[j] if lazy else 0.0
            params[j] = update_coordinate(RULE, hp, spec, clock, params[j], g, slots, j, 0,
                                          (last, marked))  # fmt: skip
            if lazy:
                stamp[j] = t
                mark[j] = clock[CLOCK_LOG_DECAY]

    return step


@functools.cache
def catch_up_all(rule):
    """The kernel ``catch_up(hp, spec, clock, params, slots, stamp, mark)`` that applies every
    pending zero-gradient step of ``rule``, so that params equal the dense optimizer's."""
    RULE = rule

    @numba.njit(**JIT)
    def catch_up_kernel(hp, spec, clock, params, slots, stamp, mark):
        hp = unpack(hp)
        clock = unpack(clock)
        t = clock[CLOCK_T]
        lazy = stamp.size > 0
        for j in range(params.size):
            if lazy:
                if stamp[j] < t:
                    steps = (stamp[j], t, clock[CLOCK_LOG_DECAY], mark[j])
                    params[j] = catch_up(RULE, hp, spec, params[j], slots, j, 0, steps)
                    stamp[j] = t
                    mark[j] = clock[CLOCK_LOG_DECAY]
            elif RULE == FTRL and t > 0.0:
                params[j] = ftrl_weight(slots[j, 0], slots[j, 1], clock[CLOCK_ETA], hp)

    return catch_up_kernel
