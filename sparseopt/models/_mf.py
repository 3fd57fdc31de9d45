"""Matrix factorization kernels: one epoch of per-interaction optimizer steps, in Numba.

The model scores a (user, item) pair as

.. math:: s_{ui} = \\mu + b_u + b_i + p_u^\\top q_i

(:math:`\\mu` is 0 for the implicit-feedback losses). Every interaction of an epoch, in a
shuffled order, is one optimizer step ``t`` (one tick of the clock): its loss gradient goes to the
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
serial kernel is deterministic for a given seed. With threads, :func:`mf_train_epoch` splits
the shuffled epoch into one contiguous chunk per thread (:mod:`._hogwild`, the one driver of
every model); the threads write the shared tables without locks.
"""

import functools
import math

import numba
import numpy as np

from .._jit import JIT
from ..optim import _rules as R
from ._hogwild import run_threads, thread_ranges
from ._losses import (
    BAD_STEP,
    BPR,
    LOGISTIC,
    NON_FINITE,
    OK,
    SQUARED,
    WARP,
    logistic_positive,
    pointwise,
)

LOSSES = {"squared": SQUARED, "logistic": LOGISTIC, "bpr": BPR, "warp": WARP}

# A negative is drawn uniformly among all items and redrawn if the user interacted with it;
# a user who interacted with (almost) every item gets no negative after this many draws.
MAX_REDRAWS = 32


def mf_consts(*, mu, alpha_biases, alpha_factors, n_components, n_negatives, max_sampled,
              per_row):  # fmt: skip
    """The kernels' ``consts`` tuple, in the order :func:`mf_train_range` unpacks it: the
    global mean, the L2 strengths of the biases and of the factors, the factors' length k,
    the negatives per interaction (logistic), WARP's most draws, and the per-row flag."""
    return (float(mu), float(alpha_biases), float(alpha_factors), int(n_components),
            int(n_negatives), int(max_sampled), bool(per_row))  # fmt: skip


@numba.njit(inline="always", **JIT)
def _catch_up_row(rule, h, spec, side, x, dims, until):
    """Apply row ``x``'s zero-gradient steps up to ``until = (t, log_decay)`` (bias and
    factors, through :func:`sparseopt.optim._rules.catch_up_row`); ``side = (bias, factors,
    stamp, mark)``, ``dims = (k, rm)``."""
    bias, factors, stamp, mark = side
    k, rm = dims
    t, log_decay = until
    n = 1 if rm else k
    R.catch_up_row(rule, h, spec, (bias, factors), (x, x + 1, x * n, x * n + n, k if rm else 0),
                   (stamp[x], t, log_decay, mark[x]))  # fmt: skip
    stamp[x] = t
    mark[x] = log_decay


@numba.njit(inline="always", **JIT)
def _sync(rule, h, spec, c, bias, factors, stamp, mark, x, dims):
    """Bring row ``x`` to step ``t - 1`` before step ``t`` reads it; called only under a
    kernel's compile-time ``LAZY`` flag, whose tables have stamps (the kernels check it)."""
    if stamp[x] < c[R.CLOCK_T] - 1.0:
        until = (c[R.CLOCK_T] - 1.0, c[R.CLOCK_LOG_DECAY_PREV])
        _catch_up_row(rule, h, spec, (bias, factors, stamp, mark), x, dims, until)


@numba.njit(inline="always", **JIT)
def _stamp(c, lazy, stamp, mark, x):
    """Record that row ``x`` was updated at the current step."""
    if lazy:
        stamp[x] = c[R.CLOCK_T]
        mark[x] = c[R.CLOCK_LOG_DECAY]


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
def _apply(rule, h, c, ub, uf, ib, itf, term, dims, alphas):
    """One optimizer step on the rows a loss term ``term = (u, i, j, di, dj)`` touches;
    ``dims = (k, rm)``, ``alphas = (alpha_b, alpha_f)``.

    Pointwise (``j < 0``): derivative ``di`` of the loss in ``s_ui``; steps on ``b_u, b_i,
    p_u, q_i`` with gradients ``di + alpha_b b``, ``di q_i + alpha_f p_u`` and
    ``di p_u + alpha_f q_i``. Pairwise: derivatives ``di, dj`` in ``s_ui, s_uj``; steps on
    ``b_i, b_j, p_u, q_i, q_j`` (the user bias cancels in ``s_ui - s_uj``), with
    ``di q_i + dj q_j + alpha_f p_u`` for ``p_u``. All gradients use the old values.
    """
    u, i, j, di, dj = term
    k, rm = dims
    alpha_b, alpha_f = alphas
    if j < 0:
        ub[u, 0] = R.step_caught_up(rule, h, c, ub, u, di + alpha_b * ub[u, 0])
    else:
        ib[j, 0] = R.step_caught_up(rule, h, c, ib, j, dj + alpha_b * ib[j, 0])
    ib[i, 0] = R.step_caught_up(rule, h, c, ib, i, di + alpha_b * ib[i, 0])
    if rm:
        _apply_rows(h, c, uf, itf, term, k, alpha_f)
        return
    ru, ri = u * k, i * k
    if j < 0:
        for f in range(k):
            p = np.float64(uf[ru + f, 0])
            q = np.float64(itf[ri + f, 0])
            uf[ru + f, 0] = R.step_caught_up(rule, h, c, uf, ru + f, di * q + alpha_f * p)
            itf[ri + f, 0] = R.step_caught_up(rule, h, c, itf, ri + f, di * p + alpha_f * q)
    else:
        rj = j * k
        for f in range(k):
            p = np.float64(uf[ru + f, 0])
            qi = np.float64(itf[ri + f, 0])
            qj = np.float64(itf[rj + f, 0])
            uf[ru + f, 0] = R.step_caught_up(rule, h, c, uf, ru + f,
                                             di * qi + dj * qj + alpha_f * p)  # fmt: skip
            itf[ri + f, 0] = R.step_caught_up(rule, h, c, itf, ri + f, di * p + alpha_f * qi)
            itf[rj + f, 0] = R.step_caught_up(rule, h, c, itf, rj + f, dj * p + alpha_f * qj)


@numba.njit(inline="always", **JIT)
def _apply_rows(h, c, uf, itf, term, k, alpha_f):
    """The factor steps of :func:`_apply` with per-row AdaGrad (``rm``).

    A first pass sums each vector's squared gradient for its accumulator, a second applies
    ``w <- shrink_t w - scale g`` (:func:`~sparseopt.optim._rules.row_adagrad_scale`),
    recomputing ``g`` from the old values.
    """
    u, i, j, di, dj = term
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
        scale_u = R.row_adagrad_scale(h, c, uf, u, k, su)
        scale_i = R.row_adagrad_scale(h, c, itf, i, k, si)
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
        scale_u = R.row_adagrad_scale(h, c, uf, u, k, su)
        scale_i = R.row_adagrad_scale(h, c, itf, i, k, si)
        scale_j = R.row_adagrad_scale(h, c, itf, j, k, sj)
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


@numba.njit(inline="always", **JIT)
def _sync_rows(rule, h, spec, c, side, rows, x, dims):
    """Bring the rows ``indices[indptr[x]:indptr[x + 1]]`` of ``side = (bias, factors,
    stamp, mark)`` to step ``t - 1`` (a lazy rule's pending steps) before step ``t`` reads
    them: the history rows of user ``x`` (``rows = (indptr, indices)``, its known items) or,
    in :mod:`._mf_features`, the feature rows of user or item ``x`` (``rows = (indptr,
    indices, weights)``).

    Called only by the kernels of lazy rules, under their compile-time flag: Numba prunes a
    constant branch only in the kernel's own code, so a flag handed to a helper is pruned
    after the helper's calls are inlined, every rule's catch-up with them (half of the 60 CPU
    seconds of a cold WARP fit with features and AdaGrad went to inlining, 2026-12-07)."""
    bias, factors, stamp, mark = side
    indptr, indices = rows[0], rows[1]
    for n in range(indptr[x], indptr[x + 1]):
        _sync(rule, h, spec, c, bias, factors, stamp, mark, indices[n], dims)


@numba.njit(**JIT)
def _begin_user(uf, hf, known, u, dims, work):
    """Add user ``u``'s history term to its factors for the steps of its block; the scale.

    ``uf`` and ``hf`` are the users' and the history's factor tables (caught up: see
    :func:`_sync_rows`), ``known = (indptr, indices)`` the known items of every user,
    ``dims = (k, rm)`` and ``work = (h_u, g_u)`` the block's history term and gradient sum.

    With ``N(u)`` the user's known items and ``n = |N(u)|``, row ``p_u`` becomes
    ``p_u + c S`` with ``S = sum_{m in N(u)} y_m`` and ``c = (n - 1)^{-1/2}`` (0 if n = 1):
    each step on a positive ``i`` takes ``c y_i`` out first (:func:`_shift_row_by_row`), so
    the positive never scores itself. ``g_u`` starts collecting the block's user gradients.
    """
    indptr, indices = known
    k, rm = dims
    h_u, g_u = work
    lo, hi = indptr[u], indptr[u + 1]
    scale = 1.0 / math.sqrt(hi - lo - 1) if hi - lo > 1 else 0.0
    h_u[:] = 0.0
    g_u[:] = 0.0
    for t in range(lo, hi):
        _add_row(h_u, hf, indices[t], scale, k, rm)
    _shift_row(uf, u, 1.0, h_u, k, rm)
    return scale


@numba.njit(**JIT)
def _end_user(rule, h, c, vectors, history, known, block, dims, alpha_f):
    """Take the history term back out of ``p_u`` and step every ``y_m``, ``m in N(u)``.

    Each gets the gradient ``c g_u + alpha_f y_m``, ``g_u`` the sum over the block's steps of
    the loss gradients in the user vector (the history vectors move once per block).
    ``vectors = (uf, h_u, g_u)``: the users' factors and the block's history term and
    gradient sum; ``block = (u, scale)``; the rest as for :func:`_begin_user` (the ``y_m``
    caught up: :func:`_sync_rows`).
    """
    uf, h_u, g_u = vectors
    hb, hf, h_stamp, h_mark = history
    indptr, indices = known
    u, scale = block
    k, rm = dims
    _shift_row(uf, u, -1.0, h_u, k, rm)
    for t in range(indptr[u], indptr[u + 1]):
        m = indices[t]
        if rm:
            sum_sq = 0.0
            for f in range(k):
                g = scale * g_u[f] + alpha_f * hf[m, f]
                sum_sq += g * g
            step = R.row_adagrad_scale(h, c, hf, m, k, sum_sq)
            for f in range(k):
                hf[m, f] -= step * (scale * g_u[f] + alpha_f * hf[m, f])
        else:
            for r in range(m * k, m * k + k):
                y = np.float64(hf[r, 0])
                g = scale * g_u[r - m * k] + alpha_f * y
                hf[r, 0] = R.step_caught_up(rule, h, c, hf, r, g)
        _stamp(c, h_stamp.size > 0, h_stamp, h_mark, m)


@functools.cache
def mf_train_range(rule, loss, lazy, per_row, history):
    """The training kernel for one rule, loss, laziness, factor state (per-row AdaGrad or
    per element) and user histories or none, all compile-time constants: a fit compiles
    only its own case. Numba prunes a branch on a constant before typing, but only in this
    kernel's own code: a flag handed to a helper is pruned after the helper's calls have
    been inlined, with every rule's catch-up in them (three quarters of a cold WARP fit's
    compile time when the helpers synced their rows). So every catch-up sits here under
    ``if LAZY`` (rules without pending steps compile none) and the history code under
    ``if HISTORY``.

    ``train(start, stop, pace, seed, sides, data, consts, optimizer)`` trains on the
    interactions ``order[start:stop]`` and returns (status, summed loss), where ``sides`` is
    ``(user, item, history)``, ``data`` is ``(users, items, values, indptr, indices,
    order)``: the interactions as coordinate arrays, the CSR pattern of every known
    interaction (for negative sampling and the user histories) and the epoch's order;
    ``consts`` comes from :func:`mf_consts` and ``optimizer`` is ``(hp, spec, clock)``:
    each step ticks ``clock`` ``pace`` times after the previous one (1 serially, see
    :mod:`._hogwild`). A ``seed`` of 0 or more seeds the calling thread's generator first; -1
    continues it.

    Losses, with ``x`` the interaction's value and ``s`` the score:

    - squared: ``(s + mu - x)^2 / 2``, one step per rating;
    - logistic: ``x log(1 + e^{-s_ui})`` for the interaction, then ``log(1 + e^{s_uj})``
      for each of ``n_negatives`` sampled items ``j``, one step each;
    - bpr: ``x log(1 + e^{-(s_ui - s_uj)})`` with one sampled ``j``;
    - warp: ``x L(r) max(0, 1 - s_ui + s_uj)`` for the first of up to ``max_sampled``
      sampled ``j`` that violates the margin, where ``r = floor((n_items - 1) / n_draws)``
      estimates the positive's rank and ``L(r) = log(max(1, r))``.
    """
    RULE, LOSS, LAZY, RM, HISTORY = rule, loss, lazy, per_row, history
    POINTWISE = loss == SQUARED or loss == LOGISTIC

    @numba.njit(**JIT)
    def train(start, stop, pace, seed, sides, data, consts, optimizer):
        hp, spec, clock = optimizer
        user, item, history = sides
        if (history[1].shape[0] > 0) != HISTORY:
            raise ValueError("the history table's rows do not match the kernel's history flag")
        if (user[2].size > 0) != LAZY or (item[2].size > 0) != LAZY or (
            HISTORY and (history[2].size > 0) != LAZY
        ):  # fmt: skip
            raise ValueError("the tables' stamps do not match the kernel's lazy flag")
        users, items, values, indptr, indices, order = data
        mu, alpha_b, alpha_f, k, n_negatives, max_sampled, _ = consts
        # the tables leave their tuples once, here: extracting an array inside the loop costs
        # two atomic reference-count updates per use, which were most of a step's time
        ub, uf, u_stamp, u_mark = user
        ib, itf, i_stamp, i_mark = item
        n_items = ib.shape[0]
        h = R.unpack(hp)
        c = R.unpack(clock)  # the clock in registers, stored back on return
        if seed >= 0:
            np.random.seed(seed)  # noqa: NPY002 (Numba's generator, one per thread)
        n_pairs = 1 + n_negatives if LOSS == LOGISTIC else 1
        dims, alphas, known = (k, RM), (alpha_b, alpha_f), (indptr, indices)
        total = 0.0
        others = 0  # the other threads' steps before this one's next: none before its first
        # user history (``order`` then runs user by user): the block's user, its history term,
        # its summed gradient and the history scale (see _begin_user)
        hb, hf, h_stamp, h_mark = history
        block_user, scale = -1, 0.0
        h_u, g_u = np.zeros(k), np.zeros(k)
        for e in range(start, stop):
            n = order[e]
            u, i, x = users[n], items[n], np.float64(values[n])
            if HISTORY:
                if u != block_user:
                    if block_user >= 0:
                        if LAZY:
                            _sync_rows(RULE, h, spec, c, history, known, block_user, dims)
                        _end_user(RULE, h, c, (uf, h_u, g_u), history, known,
                                  (block_user, scale), dims, alpha_f)  # fmt: skip
                    if LAZY:  # the block reads p_u and the y_m: their pending steps first
                        _sync(RULE, h, spec, c, ub, uf, u_stamp, u_mark, u, dims)
                        _sync_rows(RULE, h, spec, c, history, known, u, dims)
                    scale = _begin_user(uf, hf, known, u, dims, (h_u, g_u))
                    block_user = u
                _shift_row_by_row(uf, u, -scale, hf, i, k, RM)  # the positive leaves the history
            for pair in range(n_pairs):  # pointwise losses: the interaction, then negatives
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
                    _sync(RULE, h, spec, c, ub, uf, u_stamp, u_mark, u, dims)
                    _sync(RULE, h, spec, c, ib, itf, i_stamp, i_mark, i, dims)
                    if j != i:
                        _sync(RULE, h, spec, c, ib, itf, i_stamp, i_mark, j, dims)
                s = _score(ub, uf, ib, itf, u, j if POINTWISE else i, k, RM)
                if not math.isfinite(s):
                    R.store_clock(c, clock)
                    return NON_FINITE, total
                d = 0.0
                if POINTWISE:
                    if pair > 0:  # a sampled negative
                        term, d = pointwise(LOGISTIC, s, 0.0, 0.0)
                    elif LOSS == SQUARED:
                        term, d = pointwise(SQUARED, s + mu, x, 0.0)
                    else:  # the positive, weighted by its value
                        term, d = logistic_positive(s)
                        term, d = x * term, x * d
                    total += term
                    if HISTORY:
                        _add_row(g_u, itf, j, d, k, RM)
                    _apply(RULE, h, c, ub, uf, ib, itf, (u, j, -1, d, 0.0), dims, alphas)
                else:
                    if LOSS == BPR:  # the logistic loss of the difference, for the positive
                        term, d = logistic_positive(s - _score(ub, uf, ib, itf, u, j, k, RM))
                        d = -x * d
                        total += x * term
                    else:  # WARP
                        j = -1
                        for trial in range(1, max_sampled + 1):
                            neg = _sample_negative(indptr, indices, u, n_items)
                            if neg < 0:
                                break
                            if LAZY:
                                _sync(RULE, h, spec, c, ib, itf, i_stamp, i_mark, neg, dims)
                            sj = _score(ub, uf, ib, itf, u, neg, k, RM)
                            if sj > s - 1.0:
                                j = neg
                                d = x * math.log(max(1.0, math.floor((n_items - 1) / trial)))
                                total += d * (1.0 - s + sj)
                                break
                    if j >= 0:
                        if HISTORY:
                            _add_row(g_u, itf, i, -d, k, RM)
                            _add_row(g_u, itf, j, d, k, RM)
                        _apply(RULE, h, c, ub, uf, ib, itf, (u, i, j, -d, d), dims, alphas)
                        _stamp(c, LAZY, i_stamp, i_mark, i)
                if j >= 0:  # else (WARP found no violator) step t is still to be caught up
                    _stamp(c, LAZY, u_stamp, u_mark, u)
                    _stamp(c, LAZY, i_stamp, i_mark, j)
            if HISTORY:
                _shift_row_by_row(uf, u, scale, hf, i, k, RM)
        if HISTORY and block_user >= 0:
            if LAZY:
                _sync_rows(RULE, h, spec, c, history, known, block_user, dims)
            _end_user(RULE, h, c, (uf, h_u, g_u), history, known, (block_user, scale), dims,
                      alpha_f)  # fmt: skip
        R.store_clock(c, clock)
        return OK, total

    return train


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
    for n in range(order.size):  # a loop: a slice copy compiles its shape-mismatch message
        order[n] = grouped[n]


@numba.njit(**JIT)
def mf_epoch_order(order, users, n_users, by_user, seed):
    """Seed the calling thread's generator, then shuffle ``order`` (:func:`_epoch_order`)."""
    np.random.seed(seed)  # noqa: NPY002 (Numba's generator)
    _epoch_order(order, users, n_users, by_user)


def mf_train_epoch(train, n_threads, seed, sides, data, consts, hp, spec, clock, continued):
    """One epoch of ``train`` (a :func:`mf_train_range` kernel) over the order in ``data``
    (from :func:`mf_epoch_order`); returns (status, summed loss).

    One thread trains serially and deterministically for a given seed (``continued``: the
    thread's generator goes on from the order's shuffle, seeded with ``seed``). More train
    without locks (Hogwild, :func:`._hogwild.run_threads`), each on one contiguous chunk of the
    order with its own seed. With user histories the chunks end between users, so that a
    user's block stays in one thread.
    """
    users, order = data[0], data[5]
    by_user = sides[2][1].shape[0] > 0
    edges = thread_ranges(order.size, n_threads,
                          (lambda e: users[order[e]]) if by_user else None)  # fmt: skip

    serial = -1 if continued else seed
    seeds = [seed + 1 + p for p in range(n_threads)] if n_threads > 1 else [serial]
    arguments = [(s, sides, data, consts, (hp, spec, clock)) for s in seeds]
    return run_threads(train, edges, arguments, clock, hp, spec)


@functools.cache
def mf_catch_up(rule, per_row):
    """The kernel ``catch_up(hp, spec, clock, side, k)`` that applies every row's pending
    zero-gradient steps of ``rule``: the weights become the dense ones."""
    RULE, RM = rule, per_row

    @numba.njit(**JIT)
    def catch_up(hp, spec, clock, side, k):
        bias, factors, stamp, mark = side
        if stamp.size == 0:
            return
        h = R.unpack(hp)
        t = clock[R.CLOCK_T]
        for x in range(bias.shape[0]):
            if stamp[x] < t:
                _catch_up_row(RULE, h, spec, side, x, (k, RM), (t, clock[R.CLOCK_LOG_DECAY]))

    return catch_up
