"""Plain NumPy dense references of the optimizer rules, one full step over every coordinate.

They follow each rule's textbook definition and know nothing of laziness: a coordinate absent
from a step simply gets a zero gradient (for Adam's "decay" and "skip" modes, the documented
treatment of absent coordinates is spelled out step by step instead).
"""

import numpy as np

from sparseopt.optim import FTRL, SGD, AdaGrad, Adam, AMSGrad, Momentum, RMSProp, as_schedule


def _ftrl_weight(z, n, alpha, opt):
    w = -(z - np.sign(z) * opt.l1) / ((opt.beta + np.sqrt(n)) / alpha + opt.l2)
    return np.where(np.abs(z) <= opt.l1, 0.0, w)


def dense_run(opt, params, steps):
    """Run ``opt`` densely on ``steps`` (a list of (indices, grads)) from ``params``."""
    w = params.astype(np.float64).copy()
    n = w.size
    schedule = as_schedule(opt.learning_rate)
    a = np.zeros(n)
    b = np.zeros(n)
    c = np.zeros(n)
    if isinstance(opt, AdaGrad):
        a[:] = opt.initial_accumulator_value
    for t, (indices, grads) in enumerate(steps, start=1):
        g = np.zeros(n)
        np.add.at(g, indices, grads)
        present = np.zeros(n, dtype=bool)
        present[indices] = True
        eta = float(schedule(t))
        shrink = 1.0 - eta * opt.weight_decay
        if isinstance(opt, FTRL):
            if t > 1:
                w = _ftrl_weight(a, b, float(schedule(t - 1)), opt)
            a *= shrink
            n_new = b + g * g
            sigma = (np.sqrt(n_new) - np.sqrt(b)) / eta
            a += g - sigma * w
            b = n_new
            w = _ftrl_weight(a, b, eta, opt)
            continue
        w *= shrink
        if type(opt) is SGD:
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
    return w
