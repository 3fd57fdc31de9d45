"""Matrix factorization with side features (a hybrid model, as LightFM's): the training kernel.

A user is a sparse row of feature weights :math:`a_{uf}` (its id is usually one of them), and
so is an item (:math:`c_{ig}`). Each feature has a bias and a vector; a user's bias and vector
are the weighted sums of its features',

.. math:: b_u = \\sum_f a_{uf} \\beta_f, \\quad p_u = \\sum_f a_{uf} e_f, \\qquad
          b_i = \\sum_g c_{ig} \\gamma_g, \\quad q_i = \\sum_g c_{ig} d_g,

and a pair scores :math:`s_{ui} = \\mu + b_u + b_i + p_u^\\top q_i` as in :mod:`._mf`. A user or
item that training never saw is scored from its features alone.

The tables are :mod:`._mf`'s sides (``(bias, factors, stamp, mark)``), one row per *feature*
rather than per user or item. For a loss term with derivative :math:`d_i` in
:math:`s_{ui}` (and :math:`d_j` in :math:`s_{uj}` for the pairwise losses), the chain rule
gives each touched feature row its gradient; with the L2 penalty on each feature row, as
LightFM and :mod:`._mf` put it on each touched row,

.. math:: \\nabla_{e_f} = a_{uf} (d_i q_i + d_j q_j) + \\alpha_f e_f, \\quad
          \\nabla_{d_g} = (c_{ig} d_i + c_{jg} d_j) p_u + \\alpha_f d_g,

and likewise for the biases (:math:`\\nabla_{\\gamma_g} = c_{ig} d_i + c_{jg} d_j +
\\alpha_b \\gamma_g`; the user biases step for the pointwise losses only, since :math:`b_u`
cancels in :math:`s_{ui} - s_{uj}`). A feature shared by ``i`` and ``j`` gets one step with the
summed gradient. With each user and item its identity alone (weight 1), every gradient is
:mod:`._mf`'s: the model is plain matrix factorization.

With user histories (:mod:`._mf`'s third side, item vectors :math:`y_m`), a user's vector
also sums those of the items :math:`N(u)` it interacted with, as in :mod:`._mf`:

.. math:: p_u = \\sum_f a_{uf} e_f + |N(u)|^{-1/2} \\sum_{m \\in N(u)} y_m .

Training then runs user by user; a step on the positive ``i`` leaves :math:`y_i` out and
scales the sum by :math:`(|N(u)| - 1)^{-1/2}` (a positive never scores itself), the user's
feature rows step as above (their penalty :math:`\\alpha_f e_f` on themselves alone), and at
the end of the user's block every :math:`y_m` takes one step on the scaled sum of the block's
gradients in :math:`p_u`, plus :math:`\\alpha_f y_m` (:mod:`._mf`'s history update).

Each step touches only the feature rows of its user and items (lazy): every row is caught up
on its skipped zero-gradient steps (:func:`._mf._sync`) before it is read, and stamped when it
is stepped, exactly as the id rows of :mod:`._mf` (every catch-up in the kernel, under its
compile-time ``LAZY`` flag: :func:`mf_features_train_range`). The epoch order, negative
sampling, Hogwild driver and final catch-up are :mod:`._mf`'s (:func:`._mf.mf_train_epoch`,
:func:`._mf.mf_catch_up`).

References
----------
Kula, "Metadata embeddings for user and item cold-start recommendations", CBRecSys 2015
(LightFM).
"""

import functools
import math

import numba
import numpy as np

from .._jit import JIT, borrowed
from ..optim import _rules as R
from ._losses import BAD_STEP, BPR, LOGISTIC, NON_FINITE, OK, SQUARED, sigmoid, softplus
from ._mf import _add_row, _sample_negative, _stamp, _sync_rows


@numba.njit(inline="always", **JIT)
def _gather(side, rows, x, dims, vec):
    """Return the bias of user or item ``x`` and set ``vec`` to its vector (both weighted sums
    of its features', in float64; the rows caught up: :func:`_sync_rows`).

    ``side = (bias, factors, stamp, mark)`` holds the feature tables, ``rows = (indptr,
    indices, weights)`` the CSR feature rows and ``dims = (k, rm)``."""
    bias, factors = side[0], side[1]
    indptr, indices, weights = rows
    k, rm = dims
    vec[:] = 0.0
    b = 0.0
    for n in range(indptr[x], indptr[x + 1]):
        f = indices[n]
        w = np.float64(weights[n])
        b += w * bias[f, 0]
        _add_row(vec, factors, f, w, k, rm)
    return b


@numba.njit(inline="always", **JIT)
def _score_with(side, rows, x, dims, p):
    """Return the bias of item ``x`` plus ``p . q_x`` (the sum over its features of
    ``w (bias + p . row)``, without building ``q_x``: a WARP draw reads the vector of a
    negative that is most often not stepped). The arguments as for :func:`_gather`."""
    bias, factors = side[0], side[1]
    indptr, indices, weights = rows
    k, rm = dims
    s = 0.0
    for n in range(indptr[x], indptr[x + 1]):
        f = indices[n]
        t = np.float64(bias[f, 0])
        for m in range(k):
            t += p[m] * (factors[f, m] if rm else factors[f * k + m, 0])
        s += np.float64(weights[n]) * t
    return s


@numba.njit(inline="always", **JIT)
def _dot(a, b, k):
    """``a . b`` as a loop (a BLAS call costs more than k = 32 products)."""
    s = 0.0
    for m in range(k):
        s += a[m] * b[m]
    return s


@numba.njit(inline="always", **JIT)
def _step_row(rule, h, c, lazy, side, f, coefs, vec, dims, alphas):
    """One optimizer step on feature row ``f`` of ``side = (bias, factors, stamp, mark)``:
    gradients ``a_bias + alpha_b beta_f`` on its bias (if ``step_bias``) and
    ``a vec + alpha_f e_f`` on its vector (old values); the row stamped if ``lazy`` (a flag
    that guards no call costs nothing to inline: :func:`_sync_rows`).

    ``coefs = (a, a_bias, step_bias)``, ``dims = (k, rm)``, ``alphas = (alpha_b, alpha_f)``."""
    bias, factors, stamp, mark = side
    a, a_bias, step_bias = coefs
    k, rm = dims
    alpha_b, alpha_f = alphas
    if step_bias:
        bias[f, 0] = R.step_caught_up(rule, h, c, bias, f, a_bias + alpha_b * bias[f, 0])
    if rm:
        sum_sq = 0.0
        for m in range(k):
            g = a * vec[m] + alpha_f * factors[f, m]
            sum_sq += g * g
        scale = R.row_adagrad_scale(h, c, factors, f, k, sum_sq)
        shrink = c[R.CLOCK_SHRINK] if h[R.HP_WEIGHT_DECAY] > 0.0 else 1.0
        for m in range(k):
            e = np.float64(factors[f, m])
            factors[f, m] = shrink * e - scale * (a * vec[m] + alpha_f * e)
    else:
        for r in range(f * k, f * k + k):
            e = np.float64(factors[r, 0])
            factors[r, 0] = R.step_caught_up(rule, h, c, factors, r, a * vec[r - f * k]
                                             + alpha_f * e)  # fmt: skip
    _stamp(c, lazy, stamp, mark, f)


@numba.njit(**JIT)
def _history_term(hf, known, u, dims, h_u):
    """Set ``h_u`` to user ``u``'s history term :math:`(n - 1)^{-1/2} \\sum_{m \\in N(u)} y_m`
    (``n = |N(u)|``, 0 if ``n = 1``; the rows caught up: :func:`_sync_rows`); return the
    scale.

    ``hf`` is the table of the :math:`y_m`, ``known = (indptr, indices)`` every user's known
    items, ``dims = (k, rm)``.
    """
    indptr, indices = known
    k, rm = dims
    lo, hi = indptr[u], indptr[u + 1]
    scale = 1.0 / math.sqrt(hi - lo - 1) if hi - lo > 1 else 0.0
    h_u[:] = 0.0
    for t in range(lo, hi):
        _add_row(h_u, hf, indices[t], scale, k, rm)
    return scale


@numba.njit(**JIT)
def _step_history(rule, h, c, lazy, history, known, block, dims, alpha_f):
    """Step every :math:`y_m`, ``m`` in user ``u``'s known items (caught up:
    :func:`_sync_rows`), on the gradient ``scale g_u + alpha_f y_m``; ``history`` is the side
    of the :math:`y_m`, ``block = (u, scale, g_u)``, ``g_u`` the sum of the user block's
    gradients in the user vector, the rest as for :func:`_history_term`."""
    indptr, indices = known
    u, scale, g_u = block
    for t in range(indptr[u], indptr[u + 1]):
        _step_row(rule, h, c, lazy, history, indices[t], (scale, 0.0, False), g_u, dims,
                  (0.0, alpha_f))  # fmt: skip


@numba.njit(inline="always", **JIT)
def _step_items(rule, h, c, lazy, side, rows, pair, p, dims, alphas):
    """Step the feature rows of item ``i`` (derivative ``di``) and, if ``j >= 0``, of item
    ``j`` (``dj``), ``pair = (i, j, di, dj)``: a walk over both sorted rows at once, so that a
    shared feature takes one step with the summed gradient. The rest as for :func:`_gather`
    and :func:`_step_row`."""
    indptr, indices, weights = rows
    i, j, di, dj = pair
    a, a_end = indptr[i], indptr[i + 1]
    b, b_end = (indptr[j], indptr[j + 1]) if j >= 0 else (0, 0)
    while a < a_end or b < b_end:
        fa = indices[a] if a < a_end else -1
        fb = indices[b] if b < b_end else -1
        coef = 0.0
        if fa >= 0 and (fb < 0 or fa <= fb):
            f = fa
            coef += np.float64(weights[a]) * di
            a += 1
            if fb == fa:
                coef += np.float64(weights[b]) * dj
                b += 1
        else:
            f = fb
            coef += np.float64(weights[b]) * dj
            b += 1
        _step_row(rule, h, c, lazy, side, f, (coef, coef, True), p, dims, alphas)


@functools.cache
def mf_features_train_range(rule, loss, lazy, per_row, history):
    """The training kernel of the hybrid model for one rule, loss, laziness, factor state and
    user histories or none, with the signature and losses of :func:`._mf.mf_train_range`.
    As there, every catch-up sits here under ``if LAZY`` (:func:`_sync_rows`): rules
    without pending steps compile none, and the kernel refuses tables whose stamps disagree
    with the flag.

    ``sides`` is ``(user, item, history, user_rows, item_rows)``: the feature tables of users
    and items, the history side (no rows: no user histories; with rows, ``order`` runs user
    by user, as :func:`._mf.mf_train_epoch` makes it), and the users' and items' feature rows
    as CSR tuples ``(indptr, indices, weights)`` with sorted, distinct indices inside each row.
    """
    RULE, LOSS, LAZY, RM, HISTORY = rule, loss, lazy, per_row, history
    POINTWISE = loss == SQUARED or loss == LOGISTIC

    @numba.njit(**JIT)
    def train(start, stop, pace, seed, sides, data, consts, optimizer):
        hp, spec, clock = optimizer
        user, item, history, user_rows, item_rows = sides
        if (history[1].shape[0] > 0) != HISTORY:
            raise ValueError("the history table's rows do not match the kernel's history flag")
        if (user[2].size > 0) != LAZY or (item[2].size > 0) != LAZY or (
            HISTORY and (history[2].size > 0) != LAZY
        ):  # fmt: skip
            raise ValueError("the tables' stamps do not match the kernel's lazy flag")
        users, items, values, indptr, indices, order = data
        mu, alpha_b, alpha_f, k, n_negatives, max_sampled, _ = consts
        # the feature tables reach the helpers in tuples of borrowed arrays: each helper
        # extracts them again, which costs two atomic reference-count updates per array else
        ub, uf, u_stamp, u_mark = user
        ib, itf, i_stamp, i_mark = item
        user = (borrowed(ub), borrowed(uf), borrowed(u_stamp), borrowed(u_mark))
        item = (borrowed(ib), borrowed(itf), borrowed(i_stamp), borrowed(i_mark))
        n_items = item_rows[0].size - 1
        h = R.unpack(hp)
        c = R.unpack(clock)
        if seed >= 0:
            np.random.seed(seed)  # noqa: NPY002 (Numba's generator, one per thread)
        n_pairs = 1 + n_negatives if LOSS == LOGISTIC else 1
        total = 0.0
        others = 0  # the other threads' steps before this one's next: none before its first
        p, qi, qj, grad = np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k)
        # user history: the block's user, its history term, its summed gradient, the scale
        hf = history[1]
        known, dims, alphas = (indptr, indices), (k, RM), (alpha_b, alpha_f)
        block_user, scale = -1, 0.0
        h_u, g_u = np.zeros(k), np.zeros(k)
        for e in range(start, stop):
            n = order[e]
            u, i, x = users[n], items[n], np.float64(values[n])
            if HISTORY and u != block_user:
                if block_user >= 0:
                    if LAZY:
                        _sync_rows(RULE, h, spec, c, history, known, block_user, dims)
                    _step_history(RULE, h, c, LAZY, history, known, (block_user, scale, g_u), dims,
                                  alpha_f)  # fmt: skip
                if LAZY:  # the block reads the y_m: their pending steps first
                    _sync_rows(RULE, h, spec, c, history, known, u, dims)
                scale = _history_term(hf, known, u, dims, h_u)
                g_u[:] = 0.0
                block_user = u
            for pair in range(n_pairs):
                j = i
                if pair > 0 or LOSS == BPR:
                    j = _sample_negative(indptr, indices, u, n_items)
                    if j < 0:
                        break
                for _ in range(others):  # their rates are theirs to check (see _hogwild)
                    _, c = R.next_clock(h, spec, c)
                others = pace - 1
                usable, c = R.next_clock(h, spec, c)
                if not usable:
                    R.store_clock(c, clock)
                    return BAD_STEP, total
                if LAZY:  # a constant: only the lazy rules' kernels compile a catch-up
                    _sync_rows(RULE, h, spec, c, user, user_rows, u, dims)
                    _sync_rows(RULE, h, spec, c, item, item_rows, j if POINTWISE else i, dims)
                bu = _gather(user, user_rows, u, dims, p)
                if HISTORY:  # the history term, the positive left out
                    for m in range(k):
                        p[m] += h_u[m]
                    _add_row(p, hf, i, -scale, k, RM)
                bi = _gather(item, item_rows, j if POINTWISE else i, dims, qi)
                s = bu + bi + _dot(p, qi, k)
                if not math.isfinite(s):
                    R.store_clock(c, clock)
                    return NON_FINITE, total
                d = 0.0
                if POINTWISE:
                    if pair > 0:
                        d = sigmoid(s)
                        total += softplus(s)
                    elif LOSS == SQUARED:
                        d = s + mu - x
                        total += 0.5 * d * d
                    else:
                        d = -x * sigmoid(-s)
                        total += x * softplus(-s)
                    for m in range(k):
                        grad[m] = d * qi[m]
                        g_u[m] += grad[m]
                    for r in range(user_rows[0][u], user_rows[0][u + 1]):
                        a = np.float64(user_rows[2][r])
                        _step_row(RULE, h, c, LAZY, user, user_rows[1][r], (a, a * d, True),
                                  grad, dims, alphas)  # fmt: skip
                    _step_items(RULE, h, c, LAZY, item, item_rows, (j, -1, d, 0.0), p, dims,
                                alphas)  # fmt: skip
                else:
                    if LOSS == BPR:
                        if LAZY:
                            _sync_rows(RULE, h, spec, c, item, item_rows, j, dims)
                        bj = _gather(item, item_rows, j, dims, qj)
                        diff = s - (bu + bj + _dot(p, qj, k))
                        d = x * sigmoid(-diff)
                        total += x * softplus(-diff)
                    else:  # WARP
                        j = -1
                        for trial in range(1, max_sampled + 1):
                            neg = _sample_negative(indptr, indices, u, n_items)
                            if neg < 0:
                                break
                            if LAZY:
                                _sync_rows(RULE, h, spec, c, item, item_rows, neg, dims)
                            sj = bu + _score_with(item, item_rows, neg, dims, p)
                            if sj > s - 1.0:
                                j = neg
                                _gather(item, item_rows, neg, dims, qj)
                                d = x * math.log(max(1.0, math.floor((n_items - 1) / trial)))
                                total += d * (1.0 - s + sj)
                                break
                    if j >= 0:
                        for m in range(k):
                            grad[m] = d * (qj[m] - qi[m])
                            g_u[m] += grad[m]
                        # the user biases cancel in s_ui - s_uj: their rows' vectors step
                        for r in range(user_rows[0][u], user_rows[0][u + 1]):
                            a = np.float64(user_rows[2][r])
                            _step_row(RULE, h, c, LAZY, user, user_rows[1][r], (a, 0.0, False),
                                      grad, dims, alphas)  # fmt: skip
                        _step_items(RULE, h, c, LAZY, item, item_rows, (i, j, -d, d), p, dims,
                                    alphas)  # fmt: skip
        if HISTORY and block_user >= 0:
            if LAZY:
                _sync_rows(RULE, h, spec, c, history, known, block_user, dims)
            _step_history(RULE, h, c, LAZY, history, known, (block_user, scale, g_u), dims, alpha_f)
        R.store_clock(c, clock)
        return OK, total

    return train
