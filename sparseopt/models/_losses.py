"""Losses and kernel status codes, one code space for every model.

Pointwise losses take a row's margin(s) ``m`` and target ``y``:

- ``LOGISTIC``: :math:`\\log(1 + e^{-\\tilde y m})`, :math:`\\tilde y = \\pm 1`;
- ``SOFTMAX``: :math:`\\log \\sum_c e^{m_c} - m_y`;
- ``SQUARED``: :math:`(m - y)^2 / 2`;
- ``HUBER``: :math:`r^2/2` for :math:`|r| \\le \\delta`, else :math:`\\delta (|r| - \\delta/2)`.

:func:`pointwise` gives one margin's loss and derivative, :func:`loss_derivative` a row's
(softmax included). Matrix factorization's pointwise terms go through them too: a rating's
squared loss, a sampled negative's logistic loss, and a positive's (weighted by its value)
through :func:`logistic_positive`, as is ``BPR``, the logistic loss of a positive's score
minus a negative's. ``WARP`` (a rank-weighted hinge) is written out in :mod:`._mf`.

Every training kernel returns ``(status, summed loss)`` with a status below: ``OK``, or why
it stopped (the worst of several threads is the largest).
"""

import math

import numba

from .._jit import JIT

LOGISTIC, SOFTMAX, SQUARED, HUBER, BPR, WARP = range(6)

OK, NON_FINITE, BAD_STEP = range(3)  # BAD_STEP: the learning rate became unusable


@numba.njit(inline="always", **JIT)
def softplus(x):
    """``log(1 + exp(x))`` without overflow."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@numba.njit(inline="always", **JIT)
def sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@numba.njit(inline="always", **JIT)
def pointwise(loss, m, target, delta):
    """``(loss, d loss / d m)`` of one margin ``m`` for ``LOGISTIC`` (target 0 or 1),
    ``SQUARED`` and ``HUBER`` (threshold ``delta``)."""
    if loss == LOGISTIC:
        return softplus(-m if target > 0.5 else m), sigmoid(m) - target
    r = m - target
    if loss == HUBER and abs(r) > delta:
        return delta * (abs(r) - 0.5 * delta), math.copysign(delta, r)
    return 0.5 * r * r, r


@numba.njit(inline="always", **JIT)
def logistic_positive(m):
    """``(log(1 + e^{-m}), -sigmoid(-m))``: the logistic loss of a positive and its
    derivative, in the form that keeps its precision where ``sigmoid(m)`` is close to 1."""
    return softplus(-m), -sigmoid(-m)


@numba.njit(inline="always", **JIT)
def loss_derivative(loss, margins, target, delta, dloss):
    """Fill ``dloss`` with d loss / d margin for one row; returns the row's loss.

    ``loss`` is a compile-time constant in every kernel, so only its own branch is compiled.
    """
    if loss == SOFTMAX:
        top = margins[0]
        for c in range(1, margins.size):
            top = max(top, margins[c])
        total = 0.0
        for c in range(margins.size):
            dloss[c] = math.exp(margins[c] - top)
            total += dloss[c]
        label = int(target)
        for c in range(margins.size):
            dloss[c] = dloss[c] / total - (1.0 if c == label else 0.0)
        return math.log(total) + top - margins[label]
    row_loss, dloss[0] = pointwise(loss, margins[0], target, delta)
    return row_loss
