"""Lazy per-coordinate optimizers for sparse updates, usable on plain NumPy arrays.

>>> import numpy as np
>>> from sparseopt.optim import Adam, InverseScaling
>>> params = np.zeros(1000, dtype=np.float32)
>>> opt = Adam(learning_rate=InverseScaling(0.1, power=0.5))
>>> state = opt.init(params)
>>> opt.update(params, state, np.array([3, 17]), np.array([0.5, -1.0]))
>>> opt.catch_up(params, state)   # params now equal dense Adam's after 1 step
"""

import importlib
import pkgutil

from . import rules
from ._optimizers import (
    FTRL,
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    AMSGrad,
    Momentum,
    Optimizer,
    OptimizerState,
    RMSProp,
)
from ._schedules import (
    Constant,
    Exponential,
    InverseScaling,
    PiecewiseConstant,
    Schedule,
    Warmup,
    as_schedule,
)

__all__ = [
    "FTRL",
    "OPTIMIZERS",
    "SGD",
    "AMSGrad",
    "AdaGrad",
    "Adam",
    "Constant",
    "Exponential",
    "InverseScaling",
    "Momentum",
    "Optimizer",
    "OptimizerState",
    "PiecewiseConstant",
    "RMSProp",
    "Schedule",
    "Warmup",
    "as_schedule",
]

# the rules of their own modules: each registers itself in OPTIMIZERS on import, and its
# optimizer class is exported here under its own name
for _module in pkgutil.iter_modules(rules.__path__):
    importlib.import_module(f"{rules.__name__}.{_module.name}")
for _cls in OPTIMIZERS.values():
    if _cls.__name__ not in globals():
        globals()[_cls.__name__] = _cls
        __all__.append(_cls.__name__)
