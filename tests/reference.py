"""Plain NumPy dense references of the optimizer rules, one full step over every coordinate.

They follow each rule's textbook definition and know nothing of laziness: a coordinate absent
from a step simply gets a zero gradient (for Adam's "decay" and "skip" modes, the documented
treatment of absent coordinates is spelled out step by step instead).
"""

import numpy as np

from sparseopt.optim import FTRL, SGD, AdaGrad, Adam, AMSGrad, Momentum, RMSProp, as_schedule

# optimizer class -> its dense step ``(opt, w, a, g, eta) -> (w, a)`` after the weight decay
# (``a`` its one state vector): the references of rules in modules of their own, given by
# their tests (tests/test_optim.py)
DENSE_STEPS = {}


def _ftrl_weight(z, n, alpha, opt):
    w = -(z - np.sign(z) * opt.l1) / ((opt.beta + np.sqrt(n)) / alpha + opt.l2)
    return np.where(np.abs(z) <= opt.l1, 0.0, w)


class DenseOptimizer:
    """Dense twin of an optimizer: ``step`` updates every coordinate of ``w``."""

    def __init__(self, opt, params):
        self.opt = opt
        self.w = params.astype(np.float64).copy()
        n = self.w.size
        self.schedule = as_schedule(opt.learning_rate)
        self.a = np.zeros(n)
        self.b = np.zeros(n)
        self.c = np.zeros(n)
        if hasattr(opt, "initial_accumulator_value"):  # AdaGrad's kind
            self.a[:] = opt.initial_accumulator_value
        self.t = 0

    def step(self, indices, grads):
        """One step; ``indices`` and ``grads`` as given to ``Optimizer.update``."""
        opt, n = self.opt, self.w.size
        w, a, b, c = self.w, self.a, self.b, self.c
        self.t = t = self.t + 1
        g = np.zeros(n)
        np.add.at(g, indices, grads)
        present = np.zeros(n, dtype=bool)
        present[indices] = True
        eta = float(self.schedule(t))
        shrink = 1.0 - eta * opt.weight_decay
        if isinstance(opt, FTRL):
            if t > 1:
                w = _ftrl_weight(a, b, float(self.schedule(t - 1)), opt)
            a *= shrink
            n_new = b + g * g
            sigma = (np.sqrt(n_new) - np.sqrt(b)) / eta
            a += g - sigma * w
            b = n_new
            w = _ftrl_weight(a, b, eta, opt)
        else:
            w *= shrink
            if type(opt) in DENSE_STEPS:
                w, a = DENSE_STEPS[type(opt)](opt, w, a, g, eta)
            elif type(opt) is SGD:
                w -= eta * g
            elif isinstance(opt, Momentum):
                a = opt.momentum * a + eta * g
                w -= eta * g + opt.momentum * a if opt.nesterov else a
            elif isinstance(opt, AdaGrad):
                a += g * g
                w -= eta * g / (np.sqrt(a) + opt.epsilon)
            elif isinstance(opt, RMSProp):
                a = opt.rho * a + (1 - opt.rho) * g * g
                w -= eta * g / (np.sqrt(a) + opt.epsilon)
            elif isinstance(opt, Adam):
                moves = present if opt.lazy != "exact" else np.ones(n, dtype=bool)
                decays = present if opt.lazy == "skip" else np.ones(n, dtype=bool)
                a = np.where(decays, opt.beta_1 * a + (1 - opt.beta_1) * g, a)
                b = np.where(decays, opt.beta_2 * b + (1 - opt.beta_2) * g * g, b)
                v = b
                if isinstance(opt, AMSGrad):
                    c = np.where(decays, np.maximum(c, b), c)
                    v = c
                m_hat = a / (1 - opt.beta_1**t)
                v_hat = v / (1 - opt.beta_2**t)
                w -= np.where(moves, eta * m_hat / (np.sqrt(v_hat) + opt.epsilon), 0.0)
            else:
                raise TypeError(opt)
        self.w, self.a, self.b, self.c = w, a, b, c

    def idle(self, n_steps):
        """``n_steps`` steps in which no coordinate has a gradient.

        For exact Adam and AMSGrad the steps are summed directly, all at once: step s moves
        the weight by ``eta_s m_hat_s / (sqrt(v_hat_s) + eps)`` with the moments decayed
        since the last gradient, and the later steps shrink that move by their weight decay.
        Other optimizers take the steps one by one.
        """
        opt = self.opt
        if n_steps == 0:
            return
        if not (isinstance(opt, Adam) and opt.lazy == "exact"):
            for _ in range(n_steps):
                self.step(np.zeros(0, dtype=np.int64), np.zeros(0))
            return
        i = np.arange(1, n_steps + 1)
        s = self.t + i
        eta = self.schedule(s)
        log_shrink = np.log1p(-eta * opt.weight_decay)
        shrink_after = np.exp(np.cumsum(log_shrink[::-1])[::-1] - log_shrink)  # steps > s
        m = self.a * opt.beta_1 ** i[:, None]
        v = self.b * opt.beta_2 ** i[:, None]
        big_v = np.broadcast_to(self.c, v.shape) if isinstance(opt, AMSGrad) else v
        m_hat = m / (1 - opt.beta_1**s)[:, None]
        v_hat = big_v / (1 - opt.beta_2**s)[:, None]
        moves = eta[:, None] * m_hat / (np.sqrt(v_hat) + opt.epsilon)
        self.w = self.w * np.exp(log_shrink.sum()) - (shrink_after[:, None] * moves).sum(axis=0)
        self.a, self.b = m[-1], v[-1]
        self.t += n_steps


def dense_run(opt, params, steps):
    """Run ``opt`` densely on ``steps`` (a list of (indices, grads)) from ``params``."""
    dense = DenseOptimizer(opt, params)
    for indices, grads in steps:
        dense.step(indices, grads)
    return dense.w
