"""The estimators' ``optimizer`` parameter: the optimizer it names, and what the factor models
refuse. The trainings make their optimizer here, below the estimators' base class."""

from __future__ import annotations

import copy

from ..optim import FTRL, OPTIMIZERS, AdaGrad, Adam, Optimizer

# optimizer="adam" or "amsgrad": the lazy mode, chosen by 5-fold cross-validation at the
# default learning rate on a9a and the Criteo and Avazu heads, logistic regression and FM
# (benchmarks/README.md, "Adam's lazy modes"): "decay" had the lowest logloss and the highest
# AUC in all 12 cases; "exact" (dense Adam) the worst, and FM with it overshot on Criteo
DEFAULT_LAZY = "decay"


def named_optimizer(optimizer, learning_rate, default_rates: dict) -> Optimizer:
    """A fresh copy of the ``optimizer`` parameter: the named one at its rate in
    ``default_rates`` (else its class's; Adam and AMSGrad with ``lazy=DEFAULT_LAZY``), or a
    copy of the given object, with ``learning_rate`` applied unless "auto"."""
    if isinstance(optimizer, Optimizer):
        opt = copy.deepcopy(optimizer)
    else:
        opt = OPTIMIZERS[optimizer]()
        opt.learning_rate = default_rates.get(optimizer, opt.learning_rate)
        if isinstance(opt, Adam):
            opt.lazy = DEFAULT_LAZY
    if learning_rate != "auto":
        opt.learning_rate = learning_rate
    return opt


def refuse_ftrl(opt: Optimizer, owner: str) -> None:
    """Factor models: FTRL's closed-form weights would discard the random factors."""
    if isinstance(opt, FTRL):
        raise ValueError(
            f"{owner} cannot use FTRL: its closed-form weights discard the factors' random "
            f"initialization; use optimizer='adagrad'"
        )


def per_row(factor_state: str, opt: Optimizer) -> bool:
    """Whether factor vectors keep one AdaGrad accumulator each (``factor_state``)."""
    if factor_state == "auto":
        return isinstance(opt, AdaGrad)
    if factor_state == "row" and not isinstance(opt, AdaGrad):
        raise ValueError(
            f"factor_state='row' (one accumulator per factor vector) needs AdaGrad; got "
            f"{type(opt).__name__}: use factor_state='element' or optimizer='adagrad'"
        )
    return factor_state == "row"


def validated(opt: Optimizer) -> Optimizer:
    """``opt``, its hyperparameters and schedule checked (before any state changes)."""
    opt.hyperparameters()
    opt.schedule_spec()
    return opt


__all__ = ["DEFAULT_LAZY", "named_optimizer", "per_row", "refuse_ftrl", "validated"]
