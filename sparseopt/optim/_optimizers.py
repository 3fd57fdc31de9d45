"""The optimizers: hyperparameter objects whose state lives in plain arrays.

An optimizer holds only its constructor arguments (it is a scikit-learn style parameter
object: ``get_params``, ``clone`` and ``repr`` work); ``init`` returns an
:class:`OptimizerState` of arrays, and ``update`` and ``catch_up`` change params and state in
place with the compiled rules of :mod:`sparseopt.optim._rules`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator

from . import _rules as R
from ._registry import FIRST_CODE, RULES, Rule
from ._schedules import Constant, as_schedule


@dataclass
class OptimizerState:
    """What an optimizer learns besides the parameters themselves.

    Attributes
    ----------
    slots : ndarray of shape (n_params, n_slots)
        Per-coordinate optimizer state (accumulators, moments), in the params' dtype.
    stamp : ndarray of shape (n_params,) or (0,)
        Step of each coordinate's last update; empty when the rule has nothing to catch up.
    mark : ndarray of shape (n_params,) or (0,)
        Cumulative log weight-decay factor at each coordinate's last update.
    clock : ndarray of shape (6,)
        The global step and the values derived from it (see ``_rules``).
    scratch : ndarray of shape (n_params,)
        NaN-filled work space that sums repeated indices; holds no information.
    """

    slots: np.ndarray
    stamp: np.ndarray
    mark: np.ndarray
    clock: np.ndarray
    scratch: np.ndarray

    @property
    def step(self) -> int:
        """Number of optimizer steps taken so far (the global ``t``)."""
        return int(self.clock[R.CLOCK_T])


def _check_real(name, value, low, high, *, low_open=False, high_open=False):
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low) or value > high or (high_open and value == high):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}")
    return float(value)


class Optimizer(BaseEstimator):
    """Base class: one ``update`` call is one optimizer step ``t`` on a sparse set of indices."""

    _rule: int
    n_slots: int
    # the slot holding the rule's accumulator of squared gradients (None: it has none)
    _accumulator_slot: int | None = None

    def __init__(self, learning_rate=0.01, weight_decay=0.0):
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay

    @property
    def rule(self) -> int:
        """The rule's integer code (``sparseopt.optim._rules.SGD`` ...), a compile-time
        constant of every kernel made for this optimizer."""
        return self._rule

    @property
    def accumulator_slot(self) -> int | None:
        """The state slot (counted after the weight) that holds the rule's accumulator of
        squared gradients, or None; it weights the copies' parameters in a merge
        (:mod:`sparseopt.dask`)."""
        return self._accumulator_slot

    # -- hyperparameters -------------------------------------------------------------------
    def _fill(self, hp: np.ndarray) -> None:
        """Write the rule's own hyperparameters into ``hp`` (validated)."""

    def hyperparameters(self) -> np.ndarray:
        """The validated float64 hyperparameter array that the kernels read."""
        hp = np.zeros(R.HP_SIZE)
        hp[R.HP_RULE] = self._rule
        hp[R.HP_WEIGHT_DECAY] = _check_real("weight_decay", self.weight_decay, 0.0, np.inf)
        self._fill(hp)
        return hp

    def schedule_spec(self) -> np.ndarray:
        """The packed learning-rate schedule."""
        return as_schedule(self.learning_rate).spec()

    @property
    def needs_stamp(self) -> bool:
        """Whether coordinates must remember their last step (a catch-up is not a no-op)."""
        return self.weight_decay > 0

    # -- state -----------------------------------------------------------------------------
    def initial_slots(self) -> np.ndarray:
        """Initial value of each of the ``n_slots`` state slots of a coordinate."""
        return np.zeros(self.n_slots)

    def init_state(self, n_params: int, dtype=np.float64) -> OptimizerState:
        """Fresh state arrays for ``n_params`` coordinates."""
        size = n_params if self.needs_stamp else 0
        return OptimizerState(
            slots=np.tile(self.initial_slots().astype(dtype), (n_params, 1)),
            stamp=np.zeros(size, dtype=np.float64),
            mark=np.zeros(size, dtype=np.float64),
            clock=np.zeros(R.CLOCK_SIZE, dtype=np.float64),
            scratch=np.full(n_params, np.nan),
        )

    def init(self, params: np.ndarray) -> OptimizerState:
        """State for ``params``, a 1-D float32 or float64 array.

        Examples
        --------
        >>> import numpy as np
        >>> from sparseopt.optim import AdaGrad
        >>> params = np.zeros(5)
        >>> opt = AdaGrad(learning_rate=0.5)
        >>> state = opt.init(params)
        >>> opt.update(params, state, np.array([1, 3, 3]), np.array([1.0, 0.5, 0.5]))
        >>> params.round(3).tolist()
        [0.0, -0.5, 0.0, -0.5, 0.0]
        """
        params = _check_params(params)
        self.hyperparameters()
        self.schedule_spec()
        return self.init_state(params.size, params.dtype)

    def update(self, params, state: OptimizerState, indices, grads) -> None:
        """One optimizer step ``t``: coordinates in ``indices`` get ``grads``, all others 0.

        Repeated indices are summed first. Coordinates not listed take a zero-gradient step
        lazily: their entries may lag until touched again or until :meth:`catch_up`.
        On bad input a ValueError is raised and params and state are left unchanged.
        """
        params = _check_params(params, state)
        self._check_state(state, params.size)
        indices = np.asarray(indices)
        grads = np.asarray(grads)
        if indices.ndim != 1 or grads.ndim != 1 or indices.shape != grads.shape:
            raise ValueError(
                f"indices and grads must be 1-D arrays of the same length, got shapes "
                f"{indices.shape} and {grads.shape}"
            )
        if indices.size and not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"indices must be integers, got dtype {indices.dtype}")
        if indices.size and (indices.min() < 0 or indices.max() >= params.size):
            bad = indices[(indices < 0) | (indices >= params.size)][0]
            raise ValueError(f"index {bad} is out of range for {params.size} parameters")
        grads = grads.astype(np.float64, copy=False)
        if not np.isfinite(grads).all():
            raise ValueError(
                "grads contain NaN or infinite values; check the model's loss and inputs "
                "(a diverging model often means the learning rate is too large)"
            )
        hp = self.hyperparameters()
        spec = self.schedule_spec()
        clock = state.clock.copy()
        if not R.tick(hp, spec, clock):
            raise ValueError(
                f"step {int(clock[R.CLOCK_T])}: learning rate {clock[R.CLOCK_ETA]!r} with "
                f"weight_decay={self.weight_decay} gives no valid step (the rate must be "
                f"finite and > 0, and learning_rate * weight_decay < 1)"
            )
        step = R.sparse_step(self._rule)
        arrays = (params, state.slots, state.stamp, state.mark, state.scratch)
        step(hp, spec, clock, arrays, indices.astype(np.int64, copy=False), grads)
        state.clock[:] = clock

    def catch_up(self, params, state: OptimizerState) -> None:
        """Apply every pending zero-gradient step: params then equal the dense optimizer's."""
        params = _check_params(params, state)
        self._check_state(state, params.size)
        R.catch_up_all(self._rule)(
            self.hyperparameters(),
            self.schedule_spec(),
            state.clock,
            params,
            state.slots,
            state.stamp,
            state.mark,
        )

    def _check_state(self, state: OptimizerState, n_params: int) -> None:
        """Raise ValueError unless ``state`` has the arrays this optimizer's rule indexes for
        ``n_params`` coordinates (the compiled rules do not check bounds)."""
        stamped = n_params if self.needs_stamp else 0
        expected = {
            "slots": ((n_params, self.initial_slots().size), state.slots.dtype),
            "stamp": ((stamped,), np.float64),
            "mark": ((stamped,), np.float64),
            "clock": ((R.CLOCK_SIZE,), np.float64),
            "scratch": ((n_params,), np.float64),
        }
        for name, (shape, dtype) in expected.items():
            value = getattr(state, name)
            if (
                not isinstance(value, np.ndarray)
                or value.shape != shape
                or value.dtype != dtype
                or not value.flags.c_contiguous
            ):
                raise ValueError(
                    f"state.{name} has shape {getattr(value, 'shape', None)} "
                    f"({getattr(value, 'dtype', type(value).__name__)}), but "
                    f"{type(self).__name__}(weight_decay={self.weight_decay}) needs {shape} "
                    f"({np.dtype(dtype).name}): call init(params) for this optimizer"
                )


def _check_params(params, state: OptimizerState | None = None) -> np.ndarray:
    if not isinstance(params, np.ndarray) or params.dtype not in (np.float32, np.float64):
        raise ValueError(
            f"params must be a float32 or float64 NumPy array, got "
            f"{getattr(params, 'dtype', type(params).__name__)}"
        )
    if params.ndim != 1 or not params.flags.c_contiguous or not params.flags.writeable:
        raise ValueError(
            f"params must be a writeable, contiguous 1-D array, got shape {params.shape}"
        )
    if state is not None and (
        params.shape[0] != state.slots.shape[0] or params.dtype != state.slots.dtype
    ):
        raise ValueError(
            f"params ({params.size} x {params.dtype}) do not match the optimizer state "
            f"({state.slots.shape[0]} x {state.slots.dtype}); call init(params) first"
        )
    return params


class SGD(Optimizer):
    r"""Stochastic gradient descent: :math:`w \leftarrow w - \eta_t g`.

    Lazy updates are exact: a zero gradient moves nothing (weight decay is caught up exactly).

    Parameters
    ----------
    learning_rate : float or Schedule
    weight_decay : float
        Decoupled weight decay :math:`\lambda`: every step first shrinks all weights by
        :math:`1 - \eta_t \lambda` (Loshchilov and Hutter, 2019).
    """

    _rule = R.SGD
    n_slots = 0


class Momentum(Optimizer):
    r"""Heavy-ball momentum: :math:`v \leftarrow \gamma v + \eta_t g`, :math:`w \leftarrow w - v`.

    With ``nesterov=True`` the step is :math:`w \leftarrow w - (\eta_t g + \gamma v)`.
    On zero-gradient steps the velocity decays by :math:`\gamma` and still moves the weight;
    the lazy catch-up applies :math:`\sum_{i=1}^{k} \gamma^i v` in closed form (exact for any
    schedule, since the rate only multiplies gradients), and step by step while the drift
    exceeds float precision when weight decay interleaves with it.

    Parameters
    ----------
    learning_rate : float or Schedule
    momentum : float in [0, 1)
    nesterov : bool
    weight_decay : float
    """

    _rule = R.MOMENTUM
    n_slots = 1

    def __init__(self, learning_rate=0.01, momentum=0.9, nesterov=False, weight_decay=0.0):
        super().__init__(learning_rate, weight_decay)
        self.momentum = momentum
        self.nesterov = nesterov

    def _fill(self, hp):
        hp[R.HP_BETA_1] = _check_real("momentum", self.momentum, 0.0, 1.0, high_open=True)
        hp[R.HP_MODE] = float(bool(self.nesterov))

    @property
    def needs_stamp(self):
        return True


class AdaGrad(Optimizer):
    r"""AdaGrad (Duchi et al., 2011): :math:`G \leftarrow G + g^2`,
    :math:`w \leftarrow w - \eta_t g / (\sqrt{G} + \epsilon)`.

    A zero gradient changes neither G nor w, so lazy updates are exact. Its one state slot
    sits beside the weight: 8 bytes per coordinate in float32.

    Parameters
    ----------
    learning_rate : float or Schedule
    epsilon : float
    initial_accumulator_value : float
        Starting value of G (TensorFlow uses 0.1, PyTorch 0).
    weight_decay : float
    """

    _rule = R.ADAGRAD
    n_slots = 1
    _accumulator_slot = 0

    def __init__(
        self, learning_rate=0.01, epsilon=1e-10, initial_accumulator_value=0.0, weight_decay=0.0
    ):
        super().__init__(learning_rate, weight_decay)
        self.epsilon = epsilon
        self.initial_accumulator_value = initial_accumulator_value

    def _fill(self, hp):
        hp[R.HP_EPSILON] = _check_real("epsilon", self.epsilon, 0.0, np.inf)
        _check_real("initial_accumulator_value", self.initial_accumulator_value, 0.0, np.inf)

    def initial_slots(self):
        return np.full(1, float(self.initial_accumulator_value))


class RMSProp(Optimizer):
    r"""RMSProp (Tieleman and Hinton, 2012): :math:`s \leftarrow \rho s + (1 - \rho) g^2`,
    :math:`w \leftarrow w - \eta_t g / (\sqrt{s} + \epsilon)`.

    On skipped steps only s decays; the catch-up multiplies it by :math:`\rho^k`: exact.

    Parameters
    ----------
    learning_rate : float or Schedule
    rho : float in [0, 1)
    epsilon : float
    weight_decay : float
    """

    _rule = R.RMSPROP
    n_slots = 1
    _accumulator_slot = 0

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-8, weight_decay=0.0):
        super().__init__(learning_rate, weight_decay)
        self.rho = rho
        self.epsilon = epsilon

    def _fill(self, hp):
        hp[R.HP_BETA_1] = _check_real("rho", self.rho, 0.0, 1.0, high_open=True)
        hp[R.HP_EPSILON] = _check_real("epsilon", self.epsilon, 0.0, np.inf)

    @property
    def needs_stamp(self):
        return True


_LAZY_MODES = {"skip": R.SKIP, "decay": R.DECAY, "exact": R.EXACT}


class Adam(Optimizer):
    r"""Adam (Kingma and Ba, 2015) with lazy sparse updates.

    .. math::
        m \leftarrow \beta_1 m + (1 - \beta_1) g, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \quad
        w \leftarrow w - \eta_t \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon}

    Bias correction uses the one global step ``t`` (the number of ``update`` calls), the
    same for every coordinate, as dense Adam does.

    On a zero-gradient step dense Adam still decays both moments and moves the weight by
    :math:`\eta_t \hat m / (\sqrt{\hat v} + \epsilon)`. ``lazy`` says what a coordinate absent
    from a step gets:

    - ``"exact"`` (default): the moments' decay and the weight's drift over the skipped steps,
      equal to dense Adam to float precision. The drift terms shrink like
      :math:`(\beta_1/\sqrt{\beta_2})^i`; at a constant (or piecewise constant) rate their
      sum has a closed form (geometric sums with series for epsilon and the bias correction,
      truncated by a written error bound at ``2**-30`` of the drift), so a touch costs the
      same whatever the gap; the first steps of a run (bias correction still changing fast)
      and other schedules replay steps until a proven bound says the rest is negligible. It
      is this class's default because it is the only mode that follows dense Adam's path; the
      estimators' ``optimizer="adam"`` uses ``"decay"``, which generalized better in
      cross-validation on the real sets (``benchmarks/bench_lazy.py``).
    - ``"decay"``: the moments decay by :math:`\beta^k`, the weight does not drift.
    - ``"skip"``: nothing happens while absent: the semantics of TensorFlow's LazyAdam and
      PyTorch's SparseAdam, which converge worse on some problems (TensorFlow issue 23668).

    Parameters
    ----------
    learning_rate : float or Schedule
    beta_1, beta_2 : float in [0, 1)
    epsilon : float
    lazy : {"exact", "decay", "skip"}
    weight_decay : float
        Decoupled weight decay (AdamW).
    """

    _rule = R.ADAM
    n_slots = 2
    _accumulator_slot = 1

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        lazy="exact",
        weight_decay=0.0,
    ):
        super().__init__(learning_rate, weight_decay)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.lazy = lazy

    def _fill(self, hp):
        hp[R.HP_BETA_1] = _check_real("beta_1", self.beta_1, 0.0, 1.0, high_open=True)
        hp[R.HP_BETA_2] = _check_real("beta_2", self.beta_2, 0.0, 1.0, high_open=True)
        hp[R.HP_EPSILON] = _check_real("epsilon", self.epsilon, 0.0, np.inf)
        if self.lazy not in _LAZY_MODES:
            raise ValueError(f"lazy must be one of {sorted(_LAZY_MODES)}, got {self.lazy!r}")
        hp[R.HP_MODE] = _LAZY_MODES[self.lazy]

    @property
    def needs_stamp(self):
        return self.lazy != "skip" or self.weight_decay > 0


class AMSGrad(Adam):
    r"""AMSGrad (Reddi et al., 2018): Adam with :math:`\hat v` replaced by the running
    maximum of v, :math:`v_{max} \leftarrow \max(v_{max}, v)`, bias-corrected by
    :math:`1 - \beta_2^t` as PyTorch does. Same ``lazy`` modes as :class:`Adam`; on skipped
    steps :math:`v_{max}` stays, so the drift shrinks like :math:`\beta_1^i`.
    """

    _rule = R.AMSGRAD
    n_slots = 3


class FTRL(Optimizer):
    r"""FTRL-Proximal (McMahan et al., 2013) with per-coordinate rates.

    .. math::
        \sigma = (\sqrt{n + g^2} - \sqrt{n}) / \alpha_t, \quad
        z \leftarrow z + g - \sigma w, \quad n \leftarrow n + g^2, \\
        w = 0 \text{ if } |z| \le \lambda_1 \text{ else }
        -\frac{z - \operatorname{sign}(z) \lambda_1}{(\beta + \sqrt{n}) / \alpha_t + \lambda_2}

    The weight is a closed form of (z, n), so lazy updates are exact. ``learning_rate`` is
    :math:`\alpha`; ``weight_decay`` shrinks z by :math:`1 - \alpha_t \lambda` each step
    (which shrinks w by the same factor when ``l1 = 0``). The first step starts from the
    given params; afterwards the weights are those of the closed form.

    Parameters
    ----------
    learning_rate : float or Schedule
        :math:`\alpha`.
    beta : float
    l1, l2 : float
    weight_decay : float
    """

    _rule = R.FTRL
    n_slots = 2

    def __init__(self, learning_rate=0.1, beta=1.0, l1=0.0, l2=0.0, weight_decay=0.0):
        super().__init__(learning_rate, weight_decay)
        self.beta = beta
        self.l1 = l1
        self.l2 = l2

    @property
    def needs_stamp(self):
        # the weight is a function of the rate: a changing rate changes untouched weights too
        return self.weight_decay > 0 or not isinstance(as_schedule(self.learning_rate), Constant)

    def _fill(self, hp):
        hp[R.HP_BETA] = _check_real("beta", self.beta, 0.0, np.inf)
        hp[R.HP_L1] = _check_real("l1", self.l1, 0.0, np.inf)
        hp[R.HP_L2] = _check_real("l2", self.l2, 0.0, np.inf)


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "adagrad": AdaGrad,
    "rmsprop": RMSProp,
    "adam": Adam,
    "amsgrad": AMSGrad,
    "ftrl": FTRL,
}

# each rule's accumulator slot (see Optimizer.accumulator_slot), for code that has the rule alone
ACCUMULATOR_SLOT = {
    cls._rule: cls._accumulator_slot
    for cls in OPTIMIZERS.values()
    if cls._accumulator_slot is not None
}


def register_rule(name: str, code: int, step, catch_up):
    """Class decorator of a rule's :class:`Optimizer` subclass in its own module (see
    :mod:`sparseopt.optim._registry`): gives it rule ``code`` (``FIRST_CODE`` or more, fixed
    and unique: kernels cached on disk are keyed by it) and the name ``name`` in
    ``OPTIMIZERS``, and hands ``step`` and ``catch_up`` to the kernels."""

    def register(cls):
        if code < FIRST_CODE or code in RULES or name in OPTIMIZERS:
            raise ValueError(f"rule {name!r}: code {code} or its name is already taken")
        RULES[code] = Rule(name, step, catch_up)
        cls._rule = code
        OPTIMIZERS[name] = cls
        if cls._accumulator_slot is not None:
            ACCUMULATOR_SLOT[code] = cls._accumulator_slot
        return cls

    return register
