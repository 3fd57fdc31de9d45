"""Factorization machine kernels over CSR minibatches: FM (Rendle 2010) and field-aware FM.

The margin of a row :math:`x` is

.. math::

    m(x) = b + \\sum_j w_j x_j + \\sum_{j < l} \\langle v_j, v_l \\rangle x_j x_l
         = b + \\sum_j w_j x_j + \\tfrac12 \\sum_{f=1}^k \\Big[\\big(\\sum_j v_{jf} x_j\\big)^2
           - \\sum_j v_{jf}^2 x_j^2\\Big]

for an FM, computed by the second form in O(k nnz). Its gradient in :math:`v_{jf}` is
:math:`x_j (s_f - v_{jf} x_j)` with :math:`s_f = \\sum_l v_{lf} x_l`. A field-aware FM (Juan et
al. 2016) keeps one vector per (feature, field) and uses
:math:`\\langle v_{j, \\phi(l)}, v_{l, \\phi(j)} \\rangle` for the pair, where :math:`\\phi(j)` is
column j's field; that sum has no shortcut, O(k nnz^2) per row.

Tables (``F`` vectors per feature: 1 for an FM, the number of fields for an FFM; vector
``u = j * F + G`` is feature j's vector for field G):

table : (n_features, 1 + n_slots)
    Linear weight in column 0, the optimizer's slots after it (as in :mod:`._linear`).
bias : (1, 1 + n_slots)
factors : per-element state, (n_features * F * k, 1 + n_slots)
    Row ``u * k + f`` holds element f of vector u in column 0 and its own slots after it.
factors : per-row state (AdaGrad only), (n_features * F, k + 1)
    Row u holds the k elements of vector u, then one AdaGrad accumulator shared by them.
stamp, mark : (n_features,) or (0,)
    Step of feature j's last update and the clock's log weight decay then, shared by its
    linear weight and its factors (they are touched together).

One batch is one optimizer step. Margins use the weights of step t - 1; each touched
coordinate's gradient is summed over the batch's rows (a sparse accumulator indexed by the
batch's distinct features), plus the L2 terms, then handed to the rule once. The L2 penalty
is per occurrence, as in libFM and libFFM: row i adds
:math:`s_i (\\tfrac{\\alpha_w}{2} w_j^2 + \\tfrac{\\alpha_v}{2} \\lVert v_{j,G} \\rVert^2)` for
each feature j it holds and each vector it uses (``s_i`` its sample weight), so that a
feature's penalty grows with its use and absent features are untouched.

Factor vectors are drawn lazily: the tables start at zero (pages the system maps on first
write) and a feature's vectors are drawn from :math:`N(0, \\sigma^2)` the first time a training
row holds it, each element a function of (seed, its index) only (SplitMix64 and Box-Muller),
so the draw does not depend on the order rows arrive in or the thread that meets them. Fitting
on 2^22 hashed columns then costs nothing for the columns the data never uses, and a feature
met only at prediction time has zero factors (no random interactions).
"""

import functools
import math

import numba
import numpy as np

from .._jit import JIT, PARALLEL_JIT, borrowed, prefetch, prefetch_ahead
from ..optim import _rules as R
from ._losses import BAD_STEP, NON_FINITE, OK, loss_derivative

FM, FFM = 0, 1

# ``consts``: a fit's constants, one float tuple (made by fm_consts), read by these indices
(C_K, C_ALPHA_LINEAR, C_ALPHA_FACTORS, C_FIELDS, C_PER_ROW, C_INIT_STD, C_SEED, C_SLOT_0) = range(8)


def fm_consts(*, n_components, alpha_linear, alpha_factors, n_fields, per_row, init_std, seed,
              initial_slot):  # fmt: skip
    """The kernels' ``consts`` tuple: the factors' length k, the L2 strengths of the linear
    weights and of the factors, the number of fields F (1 for an FM), the per-row flag, the
    standard deviation and seed of the factors' draw, and the initial value of a drawn
    element's first optimizer slot; in the order of the ``C_*`` indices."""
    return (float(n_components), float(alpha_linear), float(alpha_factors), float(n_fields),
            float(per_row), float(init_std), float(seed), float(initial_slot))  # fmt: skip


@numba.njit(inline="always", **JIT)
def _splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(inline="always", **JIT)
def _normal(seed, index):
    """A standard normal draw determined by ``(seed, index)`` alone."""
    a = _splitmix64(np.uint64(seed) * np.uint64(0x100000001B3) + np.uint64(index))
    b = _splitmix64(a)
    u1 = (np.float64(a >> np.uint64(11)) + 1.0) * 2.0**-53  # in (0, 1]
    u2 = np.float64(b >> np.uint64(11)) * 2.0**-53
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@numba.njit(inline="always", **JIT)
def _draw_if_new(factors, j, k, F, rm, init_std, seed, acc0):
    """Draw feature j's F vectors (and set their state) unless it has been drawn before.

    An undrawn feature's first vector is all zeros; a drawn one is (almost surely) not.
    """
    for f in range(k):
        if _get(factors, j * F, f, k, rm) != 0.0:
            return
    for v in range(j * F, j * F + F):
        for f in range(k):
            value = init_std * _normal(seed, v * k + f)
            if rm:
                factors[v, f] = value
            else:
                factors[v * k + f, 0] = value
                if factors.shape[1] > 1:
                    factors[v * k + f, 1] = acc0
        if rm:
            factors[v, k] = acc0


@numba.njit(inline="always", **JIT)
def _get(factors, u, f, k, row_mode):
    """Element f of vector u."""
    return factors[u, f] if row_mode else factors[u * k + f, 0]


@numba.njit(inline="always", **JIT)
def _feature_rows(j, k, F, rm):
    """Feature j's rows for :func:`sparseopt.optim._rules.catch_up_row`: its linear weight's
    and its F vectors' (per-row AdaGrad: F rows of k values; else F * k rows)."""
    n = F if rm else F * k
    return (j, j + 1, j * n, j * n + n, k if rm else 0)


@numba.njit(inline="always", **JIT)
def _margin(model, X, row, tables, dims, rm, s):
    """Margin of one row, in float64; for an FM, ``s`` receives the sums ``s_f``.

    ``X = (indptr, indices, data)``, ``tables = (table, bias, factors, fields)`` and
    ``dims = (k, F)``.
    """
    indptr, indices, data = X
    table, bias, factors, fields = tables
    k, F = dims
    m = np.float64(bias[0, 0])
    lo, hi = indptr[row], indptr[row + 1]
    for p in range(lo, hi):
        m += data[p] * np.float64(table[indices[p], 0])
    if model == FM:
        for f in range(k):
            s[f] = 0.0
        sq = 0.0
        for p in range(lo, hi):
            j = indices[p]
            x = np.float64(data[p])
            for f in range(k):
                xv = x * _get(factors, j, f, k, rm)
                s[f] += xv
                sq += xv * xv
        pairs = 0.0
        for f in range(k):
            pairs += s[f] * s[f]
        return m + 0.5 * (pairs - sq)
    for a in range(lo, hi):
        ja, ga = indices[a], fields[indices[a]]
        if ga < 0:
            continue
        for b in range(a + 1, hi):
            jb, gb = indices[b], fields[indices[b]]
            if gb < 0:
                continue
            ua, ub = ja * F + gb, jb * F + ga
            dot = 0.0
            for f in range(k):
                dot += np.float64(_get(factors, ua, f, k, rm)) * _get(factors, ub, f, k, rm)
            m += data[a] * np.float64(data[b]) * dot
    return m


@numba.njit(inline="always", **JIT)
def _slot(pos, j, p, start, batch1):
    """Index of feature j in the batch's accumulator (its position in the row for one row)."""
    return p - start if batch1 else pos[j]


@numba.njit(inline="always", **JIT)
def _accumulate(model, X, term, tables, dims, rm, alphas, s, accumulator, batch1):
    """Add a row's gradient to the batch's accumulator ``(pos, grad, used)``, where ``term =
    (row, tag, d, sw)``: the row, its tag, its loss derivative and sample weight; ``alphas =
    (alpha_w, alpha_v)``; the rest as for :func:`_margin`.

    ``grad[u, 0]`` is the linear weight's and ``grad[u, 1 + G * k + f]`` element f of vector
    G's gradient of the batch's u-th feature; ``used[u, G] >= first row tag of the batch``
    marks the vectors the batch uses, and ``used[u, G] == tag`` those this row already
    penalized.
    """
    indptr, indices, data = X
    row, tag, d, sw = term
    table, _, factors, fields = tables
    k, F = dims
    alpha_w, alpha_v = alphas
    pos, grad, used = accumulator
    lo, hi = indptr[row], indptr[row + 1]
    for p in range(lo, hi):
        j = indices[p]
        u = _slot(pos, j, p, lo, batch1)
        grad[u, 0] += d * data[p] + sw * alpha_w * table[j, 0]
    if model == FM:
        for p in range(lo, hi):
            j = indices[p]
            u = _slot(pos, j, p, lo, batch1)
            x = np.float64(data[p])
            used[u, 0] = tag
            for f in range(k):
                v = np.float64(_get(factors, j, f, k, rm))
                grad[u, 1 + f] += d * x * (s[f] - v * x) + sw * alpha_v * v
        return
    for a in range(lo, hi):
        ja, ga = indices[a], fields[indices[a]]
        if ga < 0:
            continue
        na = _slot(pos, ja, a, lo, batch1)
        for b in range(lo, hi):
            jb, gb = indices[b], fields[indices[b]]
            if b == a or gb < 0:
                continue
            ua, ub = ja * F + gb, jb * F + ga
            c = d * data[a] * np.float64(data[b])
            first = used[na, gb] != tag
            used[na, gb] = tag
            base = 1 + gb * k
            for f in range(k):
                va = np.float64(_get(factors, ua, f, k, rm))
                g = c * _get(factors, ub, f, k, rm)
                if first:
                    g += sw * alpha_v * va
                grad[na, base + f] += g


@numba.njit(inline="always", **JIT)
def _apply(rule, hp, clock, feature, tables, steps, dims, rm, accumulator):
    """One optimizer step on feature j's weight and the vectors the batch used; zero grad.

    ``feature = (j, u, first_tag)``: the feature, its row in the accumulator and the batch's
    first row tag; ``steps = (stamp, mark)``; the rest as for :func:`_accumulate`.
    """
    j, u, first_tag = feature
    table, _, factors, _ = tables
    stamp, mark = steps
    k, F = dims
    _, grad, used = accumulator
    table[j, 0] = R.step_caught_up(rule, hp, clock, table, j, grad[u, 0])
    grad[u, 0] = 0.0
    for G in range(F):
        if used[u, G] < first_tag:
            continue
        v = j * F + G
        base = 1 + G * k
        if rm:
            # per-row AdaGrad: one accumulator of the mean squared element gradient
            g2 = 0.0
            for f in range(k):
                g2 += grad[u, base + f] * grad[u, base + f]
            scale = R.row_adagrad_scale(hp, clock, factors, v, k, g2)
            shrink = clock[R.CLOCK_SHRINK] if hp[R.HP_WEIGHT_DECAY] > 0.0 else 1.0
            for f in range(k):
                factors[v, f] = factors[v, f] * shrink - scale * grad[u, base + f]
                grad[u, base + f] = 0.0
        else:
            for f in range(k):
                r = v * k + f
                factors[r, 0] = R.step_caught_up(rule, hp, clock, factors, r, grad[u, base + f])
                grad[u, base + f] = 0.0
    if stamp.size > 0:
        stamp[j] = clock[R.CLOCK_T]
        mark[j] = clock[R.CLOCK_LOG_DECAY]


@functools.cache
def fm_train_pass(model, rule, loss, lazy, per_row):
    """The training kernel for one model (``FM`` or ``FFM``), rule, loss, laziness and factor
    state (per-row AdaGrad or per element), all compile-time constants.

    ``train(start, stop, pace, rows, state, hp, spec, config)`` trains on the rows
    ``order[start:stop]``, in batches of ``batch_size`` from ``start``, and returns (status,
    summed loss), where

    - ``rows = (indptr, indices, data, y, weights, order)`` as for the linear kernels;
    - ``state = (table, bias, factors, stamp, mark, clock, pos)``: ``pos`` a -1-filled int64
      array of n_features (the accumulator's index of each feature; -1 again on return),
      empty for single rows;
    - ``config = (batch_size, delta, fit_intercept, fields, consts)``: ``fields`` the field
      of each column (FFM) or empty (FM); ``consts`` from :func:`fm_consts`.

    Each batch is one step of ``clock``, ticked ``pace`` times between steps as the linear
    kernels tick it (:func:`sparseopt.models._linear.linear_train_pass`).
    """
    MODEL, RULE, LOSS, LAZY, RM = model, rule, loss, lazy, per_row

    @numba.njit(**JIT)
    def train(start, stop, pace, rows, state, hp_array, spec, config):
        indptr, indices, data, y, weights, order = rows
        table, bias, factors, stamp, mark, clock_array, pos = state
        batch_size, delta, fit_intercept, fields, consts = config
        k, F = int(consts[C_K]), int(consts[C_FIELDS])
        init_std, seed, acc0 = consts[C_INIT_STD], int(consts[C_SEED]), consts[C_SLOT_0]
        n_rows = order.size
        batch1 = batch_size == 1
        hp = R.unpack(hp_array)
        max_row = 0
        for i in range(indptr.size - 1):
            max_row = max(max_row, indptr[i + 1] - indptr[i])
        width = max_row if batch1 else min(table.shape[0], max_row * batch_size)
        grad = np.zeros((width, 1 + F * k))
        used = np.full((width, F), -1, np.int64)
        touched = np.empty(width, np.int64)
        sums = np.empty((batch_size, k))
        dloss = np.empty(batch_size)
        out = np.empty(1)
        margin = np.empty(1)
        # the bundles the helpers take (built once: a bundle costs nothing once inlined)
        X, tables, dims = (indptr, indices, data), (table, bias, factors, fields), (k, F)
        steps, accumulator = (stamp, mark), (pos, grad, used)
        schedule, own = borrowed(spec), (borrowed(table), borrowed(factors))  # catch_up_row's
        alphas = (consts[C_ALPHA_LINEAR], consts[C_ALPHA_FACTORS])
        loss_sum = 0.0
        clock = R.unpack(clock_array)
        step, upto = 0, -pace  # ticks made, and the index of the last tick of the batch's step
        for lo in range(start, stop, batch_size):
            upto += pace  # the batch's step: pace ticks after the previous batch's
            step, clock = R.tick_through(hp, spec, clock, step, upto)
            if step < 0:
                return BAD_STEP, loss_sum
            t = clock[R.CLOCK_T]
            hi = min(lo + batch_size, stop)
            # forward with the weights of step t - 1
            bias_grad = 0.0
            for i in range(lo, hi):
                prefetch_ahead(i, order, indptr, indices, data, y, weights, table, 1)
                if i + 2 < n_rows:  # and the factor vectors of the row after next
                    nxt = order[i + 2]
                    for p in range(indptr[nxt], indptr[nxt + 1]):
                        if RM:
                            prefetch(factors, indices[p] * F)
                        else:
                            for f in range(0, k, 8):
                                prefetch(factors, indices[p] * F * k + f)
                row = order[i]
                for p in range(indptr[row], indptr[row + 1]):
                    _draw_if_new(factors, indices[p], k, F, RM, init_std, seed, acc0)
                if LAZY:  # the row's features (weight and vectors) to step t - 1
                    for p in range(indptr[row], indptr[row + 1]):
                        j = indices[p]
                        if stamp[j] < t - 1.0:
                            log_decay = clock[R.CLOCK_LOG_DECAY_PREV]
                            R.catch_up_row(RULE, hp, schedule, own, _feature_rows(j, k, F, RM),
                                           (stamp[j], t - 1.0, log_decay, mark[j]))
                            stamp[j] = t - 1.0
                            mark[j] = log_decay
                s = sums[i - lo]
                margin[0] = _margin(MODEL, X, row, tables, dims, RM, s)
                row_loss = loss_derivative(LOSS, margin, y[row], delta, out)
                if not math.isfinite(row_loss):
                    return NON_FINITE, loss_sum
                loss_sum += weights[row] * row_loss
                dloss[i - lo] = out[0] * weights[row]
                bias_grad += dloss[i - lo]
            # backward: sum each coordinate's gradient over the batch, then one step each
            n_touched = 0
            for i in range(lo, hi):
                row = order[i]
                if not batch1:
                    for p in range(indptr[row], indptr[row + 1]):
                        j = indices[p]
                        if pos[j] < 0:
                            pos[j] = n_touched
                            touched[n_touched] = j
                            n_touched += 1
                _accumulate(MODEL, X, (row, i, dloss[i - lo], weights[row]), tables, dims, RM,
                            alphas, sums[i - lo], accumulator, batch1)  # fmt: skip
            if batch1:
                row = order[lo]
                for p in range(indptr[row], indptr[row + 1]):
                    _apply(RULE, hp, clock, (indices[p], p - indptr[row], lo), tables, steps,
                           dims, RM, accumulator)  # fmt: skip
            else:
                for u in range(n_touched):
                    j = touched[u]
                    _apply(RULE, hp, clock, (j, u, lo), tables, steps, dims, RM, accumulator)
                    pos[j] = -1
            if fit_intercept:
                bias[0, 0] = R.step_caught_up(RULE, hp, clock, bias, 0, bias_grad)
        R.store_clock(clock, clock_array)
        return OK, loss_sum

    return train


@numba.njit(**PARALLEL_JIT)
def fm_draw(factors, features, consts):
    """Draw the vectors of ``features`` (distinct) not drawn yet (``consts`` as in
    :func:`fm_train_pass`), in parallel over the features.

    The draw is the one training makes when a row first holds the feature: a function of the
    seed and the feature alone, so a merge of models trained apart can start from it.
    """
    k, F, rm = int(consts[C_K]), int(consts[C_FIELDS]), consts[C_PER_ROW] != 0.0
    init_std, seed, acc0 = consts[C_INIT_STD], int(consts[C_SEED]), consts[C_SLOT_0]
    for i in numba.prange(features.size):
        _draw_if_new(factors, features[i], k, F, rm, init_std, seed, acc0)


@functools.cache
def fm_catch_up(rule, per_row):
    """The kernel ``catch_up(hp, spec, clock, table, factors, stamp, mark, k, F)`` that
    applies every pending zero-gradient step of ``rule`` (before the weights are read)."""
    RULE, RM = rule, per_row

    @numba.njit(**JIT)
    def catch_up(hp, spec, clock, table, factors, stamp, mark, k, F):
        hp = R.unpack(hp)
        t = clock[R.CLOCK_T]
        log_decay = clock[R.CLOCK_LOG_DECAY]
        schedule, own = borrowed(spec), (borrowed(table), borrowed(factors))
        for j in range(stamp.size):
            if stamp[j] < t:
                rows = _feature_rows(j, k, F, RM)
                # a feature all zeros (never met) stays so: left alone, as in linear_catch_up
                if R.rows_zero(own[0], j, j + 1) and R.rows_zero(own[1], rows[2], rows[3]):
                    continue
                R.catch_up_row(RULE, hp, schedule, own, rows, (stamp[j], t, log_decay, mark[j]))
                stamp[j] = t
                mark[j] = log_decay

    return catch_up


@numba.njit(**PARALLEL_JIT)
def fm_decision(X, tables, layout):
    """Margins of CSR rows, shape (n_rows,), in float64.

    ``X = (indptr, indices, data)``, ``tables = (table, bias, factors, fields)`` and
    ``layout = (model, k, F, per_row)``.
    """
    model, k, F, per_row = layout
    n_rows = X[0].size - 1
    out = np.empty(n_rows)
    for i in numba.prange(n_rows):
        s = np.empty(k)
        out[i] = _margin(model, X, i, tables, (k, F), per_row, s)
    return out
