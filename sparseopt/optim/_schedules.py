"""Learning-rate schedules: plain hyperparameter objects, evaluated inside the kernels.

A schedule maps the optimizer step ``t = 1, 2, ...`` to a learning rate ``eta(t)``. Each schedule
packs itself into a small float64 array (``spec``) that the compiled function :func:`rate`
evaluates, so the kernels can compute the rate of any past step (the lazy catch-up of drifting
rules needs it) and Python and Numba share one formula.
"""

from __future__ import annotations

import math
from numbers import Real

import numba
import numpy as np

from .._jit import JIT

# spec layout: [kind, warmup_steps, p0, p1, ...]
CONSTANT, INVERSE_SCALING, EXPONENTIAL, PIECEWISE = 0, 1, 2, 3


@numba.njit(inline="always", **JIT)  # inlined: kernels evaluate it once per step
def rate(spec, t):
    """Learning rate of step ``t`` (``t >= 1``) for a packed schedule ``spec``."""
    warmup = spec[1]
    if t <= warmup:
        # linear ramp up to the inner schedule's first rate
        return _inner_rate(spec, 1.0) * t / (warmup + 1.0)
    return _inner_rate(spec, t - warmup)


@numba.njit(inline="always", **JIT)
def _inner_rate(spec, t):
    kind = int(spec[0])
    eta0 = spec[2]
    if kind == INVERSE_SCALING:
        return eta0 * (t + spec[4]) ** (-spec[3])
    if kind == EXPONENTIAL:
        return eta0 * math.exp(-spec[3] * t)
    if kind == PIECEWISE:
        n_bounds = int(spec[2])
        for i in range(n_bounds):
            if t <= spec[3 + i]:
                return spec[3 + n_bounds + i]
        return spec[3 + 2 * n_bounds]
    return eta0


@numba.njit(**JIT)
def rate_bound(spec, t):
    """An upper bound of ``rate(spec, s)`` over every step ``s >= t``.

    Every inner schedule is non-increasing in its step except the piecewise constant one (its
    largest remaining value), and a warm-up ramp stays below the inner schedule's first rate.
    """
    warmup = spec[1]
    s = t - warmup if t > warmup else 1.0
    kind = int(spec[0])
    if kind == PIECEWISE:
        n_bounds = int(spec[2])
        first = n_bounds
        for i in range(n_bounds):
            if s <= spec[3 + i]:
                first = i
                break
        top = 0.0
        for i in range(first, n_bounds + 1):
            top = max(top, spec[3 + n_bounds + i])
        return top
    return _inner_rate(spec, s)


@numba.njit(inline="always", **JIT)
def constant_rate(spec, first, last):
    """Whether ``rate(spec, s)`` is one value for every step ``first <= s <= last``."""
    warmup = spec[1]
    if first <= warmup:
        return False
    kind = int(spec[0])
    if kind == CONSTANT:
        return True
    if kind == PIECEWISE:  # both ends in one piece
        n_bounds = int(spec[2])
        for i in range(n_bounds):
            if (first - warmup <= spec[3 + i]) != (last - warmup <= spec[3 + i]):
                return False
        return True
    return spec[3] == 0.0  # inverse scaling with power 0, exponential with decay 0


class Schedule:
    """Base class of the learning-rate schedules; ``schedule(t)`` gives the rate of step t."""

    def _pack(self) -> list[float]:
        raise NotImplementedError

    def spec(self, warmup: int = 0) -> np.ndarray:
        """The float64 array that the kernels evaluate."""
        values = self._pack()
        return np.array([values[0], float(warmup), *values[1:]], dtype=np.float64)

    def __call__(self, t):
        spec = self.spec()
        return np.array([rate(spec, float(s)) for s in np.atleast_1d(t)]).reshape(np.shape(t))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


def _positive(name: str, value) -> float:
    if not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _non_negative(name: str, value) -> float:
    if not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class Constant(Schedule):
    """``eta(t) = learning_rate``."""

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate

    def _pack(self):
        return [CONSTANT, _positive("learning_rate", self.learning_rate)]


class InverseScaling(Schedule):
    """Polynomial decay ``eta(t) = eta0 * (t + offset) ** (-power)``.

    ``power=0.5`` with ``offset=0`` is the classic ``eta0 / sqrt(t)``; scikit-learn's
    ``"invscaling"`` is the same family.
    """

    def __init__(self, eta0: float, power: float = 0.5, offset: float = 0.0):
        self.eta0 = eta0
        self.power = power
        self.offset = offset

    def _pack(self):
        return [
            INVERSE_SCALING,
            _positive("eta0", self.eta0),
            _non_negative("power", self.power),
            _non_negative("offset", self.offset),
        ]


class Exponential(Schedule):
    """Exponential decay ``eta(t) = eta0 * exp(-decay * t)``."""

    def __init__(self, eta0: float, decay: float):
        self.eta0 = eta0
        self.decay = decay

    def _pack(self):
        return [EXPONENTIAL, _positive("eta0", self.eta0), _non_negative("decay", self.decay)]


class PiecewiseConstant(Schedule):
    """``eta(t) = values[i]`` for ``boundaries[i-1] < t <= boundaries[i]``.

    ``values`` has one more entry than ``boundaries``: the last one holds after the last
    boundary. Example: ``PiecewiseConstant([1000, 5000], [0.1, 0.01, 0.001])``.
    """

    def __init__(self, boundaries, values):
        self.boundaries = boundaries
        self.values = values

    def _pack(self):
        bounds = [float(b) for b in self.boundaries]
        values = [_positive("values[i]", v) for v in self.values]
        if len(values) != len(bounds) + 1:
            raise ValueError(
                f"PiecewiseConstant needs len(values) == len(boundaries) + 1, "
                f"got {len(values)} values for {len(bounds)} boundaries"
            )
        if any(b <= a for a, b in zip(bounds[:-1], bounds[1:], strict=True)) or any(
            b < 0 for b in bounds
        ):
            raise ValueError(f"boundaries must be increasing and >= 0, got {self.boundaries!r}")
        return [PIECEWISE, float(len(bounds)), *bounds, *values]


class Warmup(Schedule):
    """Linear warm-up in front of another schedule.

    ``eta(t) = inner(1) * t / (steps + 1)`` for ``t <= steps``, then ``inner(t - steps)``.
    """

    def __init__(self, steps: int, schedule: Schedule | float):
        self.steps = steps
        self.schedule = schedule

    def spec(self, warmup: int = 0) -> np.ndarray:
        if not isinstance(self.steps, int | np.integer) or self.steps < 0:
            raise ValueError(f"Warmup steps must be an integer >= 0, got {self.steps!r}")
        return as_schedule(self.schedule).spec(warmup + int(self.steps))


def as_schedule(learning_rate) -> Schedule:
    """A :class:`Schedule` from a number (constant rate) or a schedule."""
    if isinstance(learning_rate, Schedule):
        return learning_rate
    if isinstance(learning_rate, Real) and not isinstance(learning_rate, bool):
        return Constant(learning_rate)
    raise TypeError(
        f"learning_rate must be a positive number or a sparseopt.optim schedule, "
        f"got {learning_rate!r}"
    )
