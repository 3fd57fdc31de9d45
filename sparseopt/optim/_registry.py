"""Optimizer rules that live in modules of their own, under :mod:`sparseopt.optim.rules`.

The rules of :mod:`._rules` (SGD ... FTRL) are written into its dispatchers. A rule added
since is one module of :mod:`sparseopt.optim.rules` (imported by :mod:`sparseopt.optim`) that
holds everything about it: its :class:`~sparseopt.optim.Optimizer` subclass (constructor,
hyperparameter checks, number of state slots, whether it needs a catch-up) and two functions
in Python that Numba compiles into every kernel made for the rule:

``step(hp, clock, w, g, S, r, o)``
    One step with gradient ``g`` at the clock's rate ``clock[CLOCK_ETA]``; the coordinate's
    slots are ``S[r, o:o + n_slots]`` (updated in place); returns the new weight.
``catch_up(hp, w, S, r, o, k)``
    The ``k >= 1`` zero-gradient steps a coordinate skipped, decoupled weight decay left out
    (the kernel multiplies it in afterwards); returns the weight. That is exact for a rule
    whose weight does not move on a zero gradient (AdaGrad's kind); a rule that drifts
    (momentum's kind) belongs in :mod:`._rules`, with its interleaved decay.

``hp`` is the hyperparameter tuple of :func:`._rules.unpack` (the generic ``HP_*`` slots,
filled by the optimizer's ``_fill``) and ``clock`` the clock tuple.

The module registers its class with :func:`sparseopt.optim._optimizers.register_rule`, which
gives the class its name in ``OPTIMIZERS`` and its rule code. A kernel gets the code as a
compile-time constant, as for the rules of :mod:`._rules`: :func:`registered_step` and
:func:`registered_catch_up`, overloaded on the literal code, compile the rule's functions into
the kernel, which the disk cache then serves like any other (a helper compiled for a code that
is not a constant gets a test of the code per registered rule). The code is part of the cache's
key, so each rule states its own, fixed one; the cache does not notice a change to a rule's
functions (as for :mod:`._rules`): run with an empty ``NUMBA_CACHE_DIR`` after editing one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
from numba.core import types
from numba.extending import overload

# codes below belong to the rules of _rules.py (SGD = 0 ... FTRL = 6)
FIRST_CODE = 7


@dataclass(frozen=True)
class Rule:
    """A registered rule: its ``OPTIMIZERS`` name and the functions the kernels compile."""

    name: str
    step: Callable
    catch_up: Callable


# rule code -> Rule
RULES: dict[int, Rule] = {}


def registered_step(rule, hp, clock, w, g, S, r, o):
    """The step of registered rule ``rule`` (see the module docstring); Python when Numba is
    off (the CUDA simulator), compiled into the caller otherwise."""
    return RULES[rule].step(hp, clock, w, g, S, r, o)


def registered_catch_up(rule, hp, w, S, r, o, k):
    """The zero-gradient steps of registered rule ``rule`` (see the module docstring)."""
    return RULES[rule].catch_up(hp, w, S, r, o, k)


def _compiled(function):
    return numba.njit(inline="always")(function)


def _step_chain(codes):
    """A compiled ``(rule, hp, clock, w, g, S, r, o) -> w`` that runs the step of the rule
    whose code is ``rule`` among ``codes``, for a code that is not a compile-time constant
    (a helper compiled for every rule): one test of the code per rule, as in :mod:`._rules`;
    an unknown code leaves the weight."""
    if not codes:
        return _compiled(lambda rule, hp, clock, w, g, S, r, o: w)
    code, step, rest = codes[0], _compiled(RULES[codes[0]].step), _step_chain(codes[1:])

    def chain(rule, hp, clock, w, g, S, r, o):
        if rule == code:
            return step(hp, clock, w, g, S, r, o)
        return rest(rule, hp, clock, w, g, S, r, o)

    return _compiled(chain)


def _catch_up_chain(codes):
    """:func:`_step_chain` for the catch-ups."""
    if not codes:
        return _compiled(lambda rule, hp, w, S, r, o, k: w)
    code, catch_up, rest = codes[0], _compiled(RULES[codes[0]].catch_up), _catch_up_chain(codes[1:])

    def chain(rule, hp, w, S, r, o, k):
        if rule == code:
            return catch_up(hp, w, S, r, o, k)
        return rest(rule, hp, w, S, r, o, k)

    return _compiled(chain)


@overload(registered_step, prefer_literal=True)
def _overload_step(rule, hp, clock, w, g, S, r, o):
    """The rule's own step where the code is a compile-time constant, else the chain (also
    for a constant that is no registered rule's: a branch for another rule, never taken,
    that Numba types where it does not prune it)."""
    if isinstance(rule, types.IntegerLiteral) and rule.literal_value in RULES:
        step = _compiled(RULES[rule.literal_value].step)

        def implementation(rule, hp, clock, w, g, S, r, o):
            return step(hp, clock, w, g, S, r, o)

        return implementation
    chain = _step_chain(sorted(RULES))

    def implementation(rule, hp, clock, w, g, S, r, o):
        return chain(rule, hp, clock, w, g, S, r, o)

    return implementation


@overload(registered_catch_up, prefer_literal=True)
def _overload_catch_up(rule, hp, w, S, r, o, k):
    """The rule's own catch-up where the code is a compile-time constant, else the chain (as
    for :func:`registered_step`)."""
    if isinstance(rule, types.IntegerLiteral) and rule.literal_value in RULES:
        catch_up = _compiled(RULES[rule.literal_value].catch_up)

        def implementation(rule, hp, w, S, r, o, k):
            return catch_up(hp, w, S, r, o, k)

        return implementation
    chain = _catch_up_chain(sorted(RULES))

    def implementation(rule, hp, w, S, r, o, k):
        return chain(rule, hp, w, S, r, o, k)

    return implementation
