r"""AdaGrad with a decayed accumulator: one rule in one module (see
:mod:`sparseopt.optim._registry`).

.. math::
    G \leftarrow \gamma G + g^2, \quad w \leftarrow w - \eta_t g / (\sqrt{G} + \epsilon)

With :math:`\gamma = 1` it is AdaGrad; with :math:`\gamma < 1` old gradients fade, so a
coordinate's step grows back after a quiet stretch (RMSProp without the :math:`1 - \rho`
factor on new gradients).
"""

import math

import numpy as np

from .. import _rules as R
from .._optimizers import Optimizer, _check_real, register_rule


def step(hp, clock, w, g, S, r, o):
    """One step with gradient ``g``: the accumulator ``S[r, o]`` decays and adds ``g^2``."""
    acc = hp[R.HP_BETA_1] * S[r, o] + g * g
    S[r, o] = acc
    return w - clock[R.CLOCK_ETA] * g / (math.sqrt(acc) + hp[R.HP_EPSILON])


def catch_up(hp, w, S, r, o, k):
    """``k`` zero-gradient steps: the accumulator decays by :math:`\\gamma^k`, ``w`` stays."""
    S[r, o] = R.decayed(S[r, o], hp[R.HP_LOG_BETA_1], k)
    return w


@register_rule("decayed_adagrad", code=7, step=step, catch_up=catch_up)
class DecayedAdaGrad(Optimizer):
    r"""AdaGrad whose accumulator of squared gradients decays by ``decay`` every step:
    :math:`G \leftarrow \gamma G + g^2`, :math:`w \leftarrow w - \eta_t g / (\sqrt{G} +
    \epsilon)`.

    On zero-gradient steps only G decays; the lazy catch-up multiplies it by
    :math:`\gamma^k`: exact.

    Parameters
    ----------
    learning_rate : float or Schedule
    decay : float in (0, 1]
        :math:`\gamma`; 1 is AdaGrad.
    epsilon : float
    initial_accumulator_value : float
    weight_decay : float
    """

    n_slots = 1
    _accumulator_slot = 0

    def __init__(
        self,
        learning_rate=0.01,
        decay=0.99,
        epsilon=1e-10,
        initial_accumulator_value=0.0,
        weight_decay=0.0,
    ):
        super().__init__(learning_rate, weight_decay)
        self.decay = decay
        self.epsilon = epsilon
        self.initial_accumulator_value = initial_accumulator_value

    def _fill(self, hp):
        hp[R.HP_BETA_1] = _check_real("decay", self.decay, 0.0, 1.0, low_open=True)
        hp[R.HP_EPSILON] = _check_real("epsilon", self.epsilon, 0.0, np.inf)
        _check_real("initial_accumulator_value", self.initial_accumulator_value, 0.0, np.inf)

    def initial_slots(self):
        return np.full(1, float(self.initial_accumulator_value))

    @property
    def needs_stamp(self):
        return True
