"""Matrix factorization kernels: one epoch of per-interaction optimizer steps, in Numba.

The model scores a (user, item) pair as

.. math:: s_{ui} = \\mu + b_u + b_i + p_u^\\top q_i

(:math:`\\mu` is 0 for the implicit-feedback losses). Every interaction of an epoch, in a
shuffled order, is one optimizer step ``t`` (one ``R.next_clock``): its loss gradient goes to the
few coordinates it touches (two biases and ``2 k`` factor elements, or three rows for the
pairwise losses), each through :func:`sparseopt.optim._rules.update_coordinate`.

Tables
------
A *side* (users or items) is the tuple ``(bias, factors, stamp, mark)``:

bias : float32 array of shape (n_rows, 1 + n_slots)
    ``bias[x, 0]`` is the bias of row ``x``, ``bias[x, 1:]`` its optimizer slots.
factors : float32 array, per-element state: shape (n_rows * k, 1 + n_slots)
    Row ``x * k + f`` holds factor ``f`` of row ``x`` and its slots: every optimizer, one
    cache line per element.
factors : float32 array, per-row state (AdaGrad only): shape (n_rows, k + 1)
    Row ``x`` holds the ``k`` factors of row ``x``, then one AdaGrad accumulator shared by
    them, fed the mean of their squared gradients (``rm`` below, as in :mod:`._fm`):
    the k-loops run over contiguous floats and vectorize, with one square root per vector
    instead of ``k``.
stamp, mark : float64 arrays of shape (n_rows,), or (0,) when the rule needs no catch-up
    Step of the row's last update and the clock's ``log_decay`` then, shared by the row's bias
    and factors (they are always touched together).

A third side, ``history``, holds the item history vectors ``y`` of user histories (its
biases unused), or no rows. With rows, an epoch runs user by user: at the start of a user's
block the history term is added into the user's factors, which then serve every step of the
block as the user vector (:func:`_begin_user`); at its end the term is taken back out and
each ``y`` of the user's items takes one step (:func:`_end_user`).

Before a row enters a step it is caught up to step ``t - 1`` (:func:`_sync`), so that the
score and gradients use the weights a dense optimizer would hold; :func:`mf_catch_up` brings
every row to the current step before the weights are read from Python.

Randomness (shuffling, negative sampling) comes from Numba's generator, seeded per call: the
serial kernel is deterministic for a given seed. The Hogwild kernel splits the shuffled epoch
into one contiguous chunk per thread; the threads write the shared tables without locks and
each keeps its own copy of the clock, so one optimizer step holds one interaction per thread.
"""

import math

import numba
import numpy as np

from .._jit import JIT, PARALLEL_JIT
from ..optim import _rules as R

SQUARED, LOGISTIC, BPR, WARP = range(4)
LOSSES = {"squared": SQUARED, "logistic": LOGISTIC, "bpr": BPR, "warp": WARP}

# kernel status codes
OK, BAD_STEP, NON_FINITE = range(3)

# A negative is drawn uniformly among all items and redrawn if the user interacted with it;
# a user who interacted with (almost) every item gets no negative after this many draws.
MAX_REDRAWS = 32


@numba.njit(**JIT)
def _catch_up_row(h, spec, bias, factors, stamp, mark, x, k, rm, t, log_decay):
    """Apply row ``x``'s zero-gradient steps up to step ``t`` (bias and factors)."""
    last = stamp[x]
    m = mark[x]
    rule = int(h[R.HP_RULE])
    bias[x, 0] = R.catch_up(rule, h, spec, bias[x, 0], bias, x, 1, last, t, log_decay, m)
    if rm:  # per-row AdaGrad: the catch-up is the weight decay alone
        factor = math.exp(log_decay - m) if h[R.HP_WEIGHT_DECAY] > 0.0 else 1.0
        for f in range(k):
            factors[x, f] *= factor
    else:
        for r in range(x * k, x * k + k):
            factors[r, 0] = R.catch_up(
                rule, h, spec, factors[r, 0], factors, r, 1, last, t, log_decay, m
            )
    stamp[x] = t
    mark[x] = log_decay


@numba.njit(inline="always", **JIT)
def _sync(h, spec, c, lazy, bias, factors, stamp, mark, x, k, rm):
    """Bring row ``x`` to step ``t - 1`` before step ``t`` reads it."""
    if lazy and stamp[x] < c[R.CLOCK_T] - 1.0:
        t, log_decay = c[R.CLOCK_T] - 1.0, c[R.CLOCK_LOG_DECAY_PREV]
        _catch_up_row(h, spec, bias, factors, stamp, mark, x, k, rm, t, log_decay)


@numba.njit(inline="always", **JIT)
def _stamp(c, lazy, stamp, mark, x):
    """Record that row ``x`` was updated at the current step."""
    if lazy:
        stamp[x] = c[R.CLOCK_T]
        mark[x] = c[R.CLOCK_LOG_DECAY]


@numba.njit(inline="always", **JIT)
def _step(rule, h, c, table, r, w, g):
    """The rule's step on ``table[r]``, already caught up to ``t - 1``, with gradient g.

    This is ``R.update_coordinate`` with ``last = t - 1`` (its catch-up is then a no-op, and
    FTRL is not offered): decoupled weight decay, then the rule's gradient step. Calling
    ``gradient_step`` directly keeps each inlined copy small to compile.
    """
    if h[R.HP_WEIGHT_DECAY] > 0.0:
        w *= c[R.CLOCK_SHRINK]
    return R.gradient_step(rule, h, w, g, table, r, 1, c[R.CLOCK_T], c[R.CLOCK_ETA])


@numba.njit(inline="always", **JIT)
def _row_scale(h, c, factors, x, k, sum_sq):
    """Per-row AdaGrad: add ``sum_sq / k`` to row x's accumulator; the step's scale.

    With :math:`G_x \\leftarrow G_x + \\lVert g_x \\rVert^2 / k`, the vector moves by
    :math:`-\\eta_t g_x / (\\sqrt{G_x} + \\epsilon)`.
    """
    acc = factors[x, k] + sum_sq / k
    factors[x, k] = acc
    return c[R.CLOCK_ETA] / (math.sqrt(acc) + h[R.HP_EPSILON])


@numba.njit(inline="always", **JIT)
def _score(ub, uf, ib, itf, u, i, k, rm):
    """``b_u + b_i + p_u . q_i``, summed in float64."""
    s = np.float64(ub[u, 0]) + np.float64(ib[i, 0])
    if rm:
        for f in range(k):
            s += np.float64(uf[u, f]) * itf[i, f]
    else:
        ru, ri = u * k, i * k
        for f in range(k):
            s += np.float64(uf[ru + f, 0]) * itf[ri + f, 0]
    return s


@numba.njit(inline="always", **JIT)
def _apply(rule, h, c, ub, uf, ib, itf, u, i, j, di, dj, k, rm, alpha_b, alpha_f):
    """One optimizer step on the rows a loss term touches.

    Pointwise (``j < 0``): derivative ``di`` of the loss in ``s_ui``; steps on ``b_u, b_i,
    p_u, q_i`` with gradients ``di + alpha_b b``, ``di q_i + alpha_f p_u`` and
    ``di p_u + alpha_f q_i``. Pairwise: derivatives ``di, dj`` in ``s_ui, s_uj``; steps on
    ``b_i, b_j, p_u, q_i, q_j`` (the user bias cancels in ``s_ui - s_uj``), with
    ``di q_i + dj q_j + alpha_f p_u`` for ``p_u``. All gradients use the old values.
    """
    if j < 0:
        ub[u, 0] = _step(rule, h, c, ub, u, ub[u, 0], di + alpha_b * ub[u, 0])
    else:
        ib[j, 0] = _step(rule, h, c, ib, j, ib[j, 0], dj + alpha_b * ib[j, 0])
    ib[i, 0] = _step(rule, h, c, ib, i, ib[i, 0], di + alpha_b * ib[i, 0])
    if rm:
        _apply_rows(h, c, uf, itf, u, i, j, di, dj, k, alpha_f)
        return
    ru, ri = u * k, i * k
    if j < 0:
        for f in range(k):
            p = np.float64(uf[ru + f, 0])
            q = np.float64(itf[ri + f, 0])
            uf[ru + f, 0] = _step(rule, h, c, uf, ru + f, p, di * q + alpha_f * p)
            itf[ri + f, 0] = _step(rule, h, c, itf, ri + f, q, di * p + alpha_f * q)
    else:
        rj = j * k
        for f in range(k):
            p = np.float64(uf[ru + f, 0])
            qi = np.float64(itf[ri + f, 0])
            qj = np.float64(itf[rj + f, 0])
            uf[ru + f, 0] = _step(rule, h, c, uf, ru + f, p, di * qi + dj * qj + alpha_f * p)
            itf[ri + f, 0] = _step(rule, h, c, itf, ri + f, qi, di * p + alpha_f * qi)
            itf[rj + f, 0] = _step(rule, h, c, itf, rj + f, qj, dj * p + alpha_f * qj)


@numba.njit(inline="always", **JIT)
def _apply_rows(h, c, uf, itf, u, i, j, di, dj, k, alpha_f):
    """The factor steps of :func:`_apply` with per-row AdaGrad (``rm``).

    A first pass sums each vector's squared gradient for its accumulator, a second applies
    ``w <- shrink_t w - scale g`` (:func:`_row_scale`), recomputing ``g`` from the old values.
    """
    shrink = c[R.CLOCK_SHRINK] if h[R.HP_WEIGHT_DECAY] > 0.0 else 1.0
    if j < 0:
        su = 0.0
        si = 0.0
        for f in range(k):
            p = np.float64(uf[u, f])
            q = np.float64(itf[i, f])
            gp = di * q + alpha_f * p
            gq = di * p + alpha_f * q
            su += gp * gp
            si += gq * gq
        scale_u = _row_scale(h, c, uf, u, k, su)
        scale_i = _row_scale(h, c, itf, i, k, si)
        for f in range(k):
            p = np.float64(uf[u, f])
            q = np.float64(itf[i, f])
            uf[u, f] = shrink * p - scale_u * (di * q + alpha_f * p)
            itf[i, f] = shrink * q - scale_i * (di * p + alpha_f * q)
    else:
        su = 0.0
        si = 0.0
        sj = 0.0
        for f in range(k):
            p = np.float64(uf[u, f])
            qi = np.float64(itf[i, f])
            qj = np.float64(itf[j, f])
            gp = di * qi + dj * qj + alpha_f * p
            gi = di * p + alpha_f * qi
            gj = dj * p + alpha_f * qj
            su += gp * gp
            si += gi * gi
            sj += gj * gj
        scale_u = _row_scale(h, c, uf, u, k, su)
        scale_i = _row_scale(h, c, itf, i, k, si)
        scale_j = _row_scale(h, c, itf, j, k, sj)
        for f in range(k):
            p = np.float64(uf[u, f])
            qi = np.float64(itf[i, f])
            qj = np.float64(itf[j, f])
            uf[u, f] = shrink * p - scale_u * (di * qi + dj * qj + alpha_f * p)
            itf[i, f] = shrink * qi - scale_i * (di * p + alpha_f * qi)
            itf[j, f] = shrink * qj - scale_j * (dj * p + alpha_f * qj)


@numba.njit(inline="always", **JIT)
def _sample_negative(indptr, indices, u, n_items):
    """A uniformly drawn item that user ``u`` has no interaction with, or -1."""
    lo, hi = indptr[u], indptr[u + 1]
    for _ in range(MAX_REDRAWS):
        j = np.random.randint(0, n_items)  # noqa: NPY002 (Numba's generator)
        a, b = lo, hi
        while a < b:  # binary search in the user's sorted item ids
            mid = (a + b) // 2
            if indices[mid] < j:
                a = mid + 1
            else:
                b = mid
        if a == hi or indices[a] != j:
            return j
    return -1


@numba.njit(inline="always", **JIT)
def _add_row(vec, table, x, a, k, rm):
    """``vec += a v_x``, ``v_x`` the factors of row ``x`` of a table."""
    for f in range(k):
        vec[f] += a * (table[x, f] if rm else table[x * k + f, 0])


@numba.njit(inline="always", **JIT)
def _shift_row(table, x, a, vec, k, rm):
    """``v_x += a vec`` on the factors of row ``x`` of a table."""
    for f in range(k):
        if rm:
            table[x, f] += a * vec[f]
        else:
            table[x * k + f, 0] += a * vec[f]


@numba.njit(inline="always", **JIT)
def _shift_row_by_row(table, x, a, source, y, k, rm):
    """``v_x += a w_y``, ``w_y`` the factors of row ``y`` of ``source``."""
    for f in range(k):
        if rm:
            table[x, f] += a * source[y, f]
        else:
            table[x * k + f, 0] += a * source[y * k + f, 0]


@numba.njit(**JIT)
def _begin_user(h, spec, c, lazy, ub, uf, u_stamp, u_mark, hb, hf, h_stamp, h_mark, indptr,
                indices, u, k, rm, h_u, g_u):  # fmt: skip
    """Add user ``u``'s history term to its factors for the steps of its block; the scale.

    With ``N(u)`` the user's known items and ``n = |N(u)|``, row ``p_u`` becomes
    ``p_u + c S`` with ``S = sum_{m in N(u)} y_m`` and ``c = (n - 1)^{-1/2}`` (0 if n = 1):
    each step on a positive ``i`` takes ``c y_i`` out first (:func:`_shift_row_by_row`), so
    the positive never scores itself. ``g_u`` starts collecting the block's user gradients.
    """
    _sync(h, spec, c, lazy, ub, uf, u_stamp, u_mark, u, k, rm)
    lo, hi = indptr[u], indptr[u + 1]
    scale = 1.0 / math.sqrt(hi - lo - 1) if hi - lo > 1 else 0.0
    h_u[:] = 0.0
    g_u[:] = 0.0
    for t in range(lo, hi):
        m = indices[t]
        _sync(h, spec, c, lazy, hb, hf, h_stamp, h_mark, m, k, rm)
        _add_row(h_u, hf, m, scale, k, rm)
    _shift_row(uf, u, 1.0, h_u, k, rm)
    return scale


@numba.njit(**JIT)
def _end_user(rule, h, spec, c, lazy, uf, hb, hf, h_stamp, h_mark, indptr, indices, u, k, rm,
              alpha_f, scale, h_u, g_u):  # fmt: skip
    """Take the history term back out of ``p_u`` and step every ``y_m``, ``m in N(u)``.

    Each gets the gradient ``c g_u + alpha_f y_m``, ``g_u`` the sum over the block's steps of
    the loss gradients in the user vector (the history vectors move once per block).
    """
    _shift_row(uf, u, -1.0, h_u, k, rm)
    for t in range(indptr[u], indptr[u + 1]):
        m = indices[t]
        _sync(h, spec, c, lazy, hb, hf, h_stamp, h_mark, m, k, rm)
        if rm:
            sum_sq = 0.0
            for f in range(k):
                g = scale * g_u[f] + alpha_f * hf[m, f]
                sum_sq += g * g
            step = _row_scale(h, c, hf, m, k, sum_sq)
            for f in range(k):
                hf[m, f] -= step * (scale * g_u[f] + alpha_f * hf[m, f])
        else:
            for r in range(m * k, m * k + k):
                y = np.float64(hf[r, 0])
                hf[r, 0] = _step(rule, h, c, hf, r, y, scale * g_u[r - m * k] + alpha_f * y)
        _stamp(c, lazy, h_stamp, h_mark, m)


@numba.njit(inline="always", **JIT)
def _softplus(x):
    """``log(1 + exp(x))`` without overflow."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@numba.njit(inline="always", **JIT)
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@numba.njit(**JIT)
def _train_range(loss, hp, spec, clock, user, item, history, data, order, start, stop,
                 consts):  # fmt: skip
    """Train on the interactions ``order[start:stop]``; returns (status, summed loss).

    Losses, with ``x`` the interaction's value and ``s`` the score:

    - squared: ``(s + mu - x)^2 / 2``, one step per rating;
    - logistic: ``x log(1 + e^{-s_ui})`` for the interaction, then ``log(1 + e^{s_uj})``
      for each of ``n_negatives`` sampled items ``j``, one step each;
    - bpr: ``x log(1 + e^{-(s_ui - s_uj)})`` with one sampled ``j``;
    - warp: ``x L(r) max(0, 1 - s_ui + s_uj)`` for the first of up to ``max_sampled``
      sampled ``j`` that violates the margin, where ``r = floor((n_items - 1) / n_draws)``
      estimates the positive's rank and ``L(r) = log(max(1, r))``.
    """
    rule = int(hp[R.HP_RULE])
    lazy = user[2].size > 0
    if rule == R.ADAGRAD and not lazy:
        # the default (AdaGrad, no weight decay) with the rule and the absence of catch-up as
        # compile-time constants: LLVM removes the rule dispatch and the catch-up calls,
        # whose mere presence in the loop cost 130 ns per step (reference counting); the
        # squared loss gets its own copy too, without the other losses' branches (20 ns)
        if loss == SQUARED:
            return _train_loop(R.ADAGRAD, False, SQUARED, hp, spec, clock, user, item, history,
                               data, order, start, stop, consts)  # fmt: skip
        return _train_loop(R.ADAGRAD, False, loss, hp, spec, clock, user, item, history, data,
                           order, start, stop, consts)  # fmt: skip
    return _train_loop(rule, lazy, loss, hp, spec, clock, user, item, history, data, order,
                       start, stop, consts)  # fmt: skip


@numba.njit(inline="always", **JIT)
def _train_loop(rule, lazy, loss, hp, spec, clock, user, item, history, data, order, start,
                stop, consts):  # fmt: skip
    users, items, values, indptr, indices = data
    mu, alpha_b, alpha_f, k, n_negatives, max_sampled, rm = consts
    # the tables leave their tuples once, here: extracting an array inside the loop costs
    # two atomic reference-count updates per use, which were most of a step's time
    ub, uf, u_stamp, u_mark = user
    ib, itf, i_stamp, i_mark = item
    n_items = ib.shape[0]
    h = R.unpack(hp)
    c = R.unpack(clock)  # the clock in registers, stored back on return
    pointwise = loss == SQUARED or loss == LOGISTIC
    n_pairs = 1 + n_negatives if loss == LOGISTIC else 1
    total = 0.0
    # user history (``order`` then runs user by user): the block's user, its history term,
    # its summed gradient and the history scale (see _begin_user)
    hb, hf, h_stamp, h_mark = history
    with_history = hf.shape[0] > 0
    block_user, scale = -1, 0.0
    h_u, g_u = np.zeros(k), np.zeros(k)
    for e in range(start, stop):
        n = order[e]
        u, i, x = users[n], items[n], np.float64(values[n])
        if with_history:
            if u != block_user:
                if block_user >= 0:
                    _end_user(rule, h, spec, c, lazy, uf, hb, hf, h_stamp, h_mark, indptr,
                              indices, block_user, k, rm, alpha_f, scale, h_u, g_u)  # fmt: skip
                scale = _begin_user(h, spec, c, lazy, ub, uf, u_stamp, u_mark, hb, hf, h_stamp,
                                    h_mark, indptr, indices, u, k, rm, h_u, g_u)  # fmt: skip
                block_user = u
            _shift_row_by_row(uf, u, -scale, hf, i, k, rm)  # the positive leaves the history
        for pair in range(n_pairs):  # pointwise losses: the interaction, then negatives
            j = i
            if pair > 0 or loss == BPR:
                j = _sample_negative(indptr, indices, u, n_items)
                if j < 0:
                    break
            usable, c = R.next_clock(h, spec, c)
            if not usable:
                R.store_clock(c, clock)
                return BAD_STEP, total
            _sync(h, spec, c, lazy, ub, uf, u_stamp, u_mark, u, k, rm)
            _sync(h, spec, c, lazy, ib, itf, i_stamp, i_mark, i, k, rm)
            if j != i:
                _sync(h, spec, c, lazy, ib, itf, i_stamp, i_mark, j, k, rm)
            s = _score(ub, uf, ib, itf, u, j if pointwise else i, k, rm)
            if not math.isfinite(s):
                R.store_clock(c, clock)
                return NON_FINITE, total
            d = 0.0
            if pointwise:
                if pair > 0:
                    d = _sigmoid(s)
                    total += _softplus(s)
                elif loss == SQUARED:
                    d = s + mu - x
                    total += 0.5 * d * d
                else:
                    d = -x * _sigmoid(-s)
                    total += x * _softplus(-s)
                if with_history:
                    _add_row(g_u, itf, j, d, k, rm)
                _apply(rule, h, c, ub, uf, ib, itf, u, j, -1, d, 0.0, k, rm, alpha_b, alpha_f)
            else:
                if loss == BPR:
                    diff = s - _score(ub, uf, ib, itf, u, j, k, rm)
                    d = x * _sigmoid(-diff)
                    total += x * _softplus(-diff)
                else:  # WARP
                    j = -1
                    for trial in range(1, max_sampled + 1):
                        neg = _sample_negative(indptr, indices, u, n_items)
                        if neg < 0:
                            break
                        _sync(h, spec, c, lazy, ib, itf, i_stamp, i_mark, neg, k, rm)
                        sj = _score(ub, uf, ib, itf, u, neg, k, rm)
                        if sj > s - 1.0:
                            j = neg
                            d = x * math.log(max(1.0, math.floor((n_items - 1) / trial)))
                            total += d * (1.0 - s + sj)
                            break
                if j >= 0:
                    if with_history:
                        _add_row(g_u, itf, i, -d, k, rm)
                        _add_row(g_u, itf, j, d, k, rm)
                    _apply(rule, h, c, ub, uf, ib, itf, u, i, j, -d, d, k, rm, alpha_b, alpha_f)
                    _stamp(c, lazy, i_stamp, i_mark, i)
            _stamp(c, lazy, u_stamp, u_mark, u)
            if j >= 0:
                _stamp(c, lazy, i_stamp, i_mark, j)
        if with_history:
            _shift_row_by_row(uf, u, scale, hf, i, k, rm)
    if block_user >= 0:
        _end_user(rule, h, spec, c, lazy, uf, hb, hf, h_stamp, h_mark, indptr, indices,
                  block_user, k, rm, alpha_f, scale, h_u, g_u)  # fmt: skip
    R.store_clock(c, clock)
    return OK, total


@numba.njit(inline="always", **JIT)
def _shuffle(order):
    for a in range(order.size - 1, 0, -1):
        b = np.random.randint(0, a + 1)  # noqa: NPY002 (Numba's generator)
        order[a], order[b] = order[b], order[a]


@numba.njit(**JIT)
def _epoch_order(order, users, n_users, by_user):
    """Shuffle ``order`` in place; ``by_user``: then group it by user, in a random user order
    (a counting sort on each user's random rank, which keeps the shuffle within a user)."""
    _shuffle(order)
    if not by_user:
        return
    rank = np.random.permutation(n_users)  # noqa: NPY002 (Numba's generator)
    ends = np.zeros(n_users + 1, np.int64)
    for n in order:
        ends[rank[users[n]] + 1] += 1
    ends = np.cumsum(ends)
    grouped = np.empty_like(order)
    for n in order:
        r = rank[users[n]]
        grouped[ends[r]] = n
        ends[r] += 1
    order[:] = grouped


@numba.njit(**JIT)
def mf_train_epoch(loss, hp, spec, clock, user, item, history, data, order, consts, seed):
    """One epoch over ``order`` (shuffled in place first), serially; (status, summed loss).

    ``data`` is ``(users, items, values, indptr, indices)``: the interactions as coordinate
    arrays plus the CSR pattern of every known interaction (for negative sampling and the
    user histories); ``consts`` is ``(mu, alpha_biases, alpha_factors, k, n_negatives,
    max_sampled, rm)``, ``rm`` true for per-row AdaGrad factors. ``history`` is the side of
    the item history vectors ``y``, with no rows when the model has none; with rows, the
    epoch runs user by user.
    """
    np.random.seed(seed)  # noqa: NPY002 (Numba's generator)
    _epoch_order(order, data[0], user[0].shape[0], history[1].shape[0] > 0)
    return _train_range(loss, hp, spec, clock, user, item, history, data, order, 0, order.size,
                        consts)  # fmt: skip


@numba.njit(**PARALLEL_JIT)
def mf_train_epoch_hogwild(loss, hp, spec, clock, user, item, history, data, order, consts, seed,
                           n_jobs):  # fmt: skip
    """:func:`mf_train_epoch` on ``n_jobs`` threads without locks (Hogwild).

    Each thread trains on one contiguous chunk of the shuffled order with its own copy of
    the clock; the clock that went furthest becomes the global one. With user histories the
    chunks end between users, so that a user's block stays in one thread.
    """
    np.random.seed(seed)  # noqa: NPY002 (Numba's generator)
    users = data[0]
    by_user = history[1].shape[0] > 0
    _epoch_order(order, users, user[0].shape[0], by_user)
    clocks = np.empty((n_jobs, clock.size))
    for j in range(n_jobs):
        clocks[j] = clock
    status = np.zeros(n_jobs, np.int64)
    totals = np.zeros(n_jobs)
    edges = np.empty(n_jobs + 1, np.int64)
    chunk = (order.size + n_jobs - 1) // n_jobs
    for j in range(n_jobs + 1):
        e = min(j * chunk, order.size)
        while by_user and 0 < e < order.size and users[order[e]] == users[order[e - 1]]:
            e += 1
        edges[j] = e
    for j in numba.prange(n_jobs):
        np.random.seed(seed + 1 + j)  # noqa: NPY002 (Numba's generator)
        status[j], totals[j] = _train_range(
            loss, hp, spec, clocks[j], user, item, history, data, order, edges[j], edges[j + 1],
            consts,
        )  # fmt: skip
    clock[:] = clocks[np.argmax(clocks[:, R.CLOCK_T])]
    return status.max(), totals.sum()


@numba.njit(**JIT)
def mf_catch_up(hp, spec, clock, side, k, rm):
    """Apply every row's pending zero-gradient steps: the weights become the dense ones."""
    bias, factors, stamp, mark = side
    if stamp.size == 0:
        return
    h = R.unpack(hp)
    t = clock[R.CLOCK_T]
    for x in range(bias.shape[0]):
        if stamp[x] < t:
            _catch_up_row(
                h, spec, bias, factors, stamp, mark, x, k, rm, t, clock[R.CLOCK_LOG_DECAY]
            )
