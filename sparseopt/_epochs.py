"""The epoch loop and its early-stopping rule, shared by the estimators' ``fit`` and
:func:`sparseopt.dask.fit`.

An epoch counts as stale when its monitored loss (the training loss, or the held-out rows'
loss when a fit holds some out) is not below the best loss so far minus ``tol``; training
stops after ``patience`` stale epochs in a row (the estimators' ``n_iter_no_change``).
"""

from __future__ import annotations

import math
from collections.abc import Callable


class Stopper:
    """Early stopping on one monitored loss per epoch.

    With :math:`b_e` the best loss of the first :math:`e` epochs and :math:`s_e` the stale
    count, epoch :math:`e + 1` with loss :math:`\\ell` gives

    .. math::

        s_{e+1} = \\begin{cases} s_e + 1 & \\ell > b_e - \\mathrm{tol} \\\\
                                 0 & \\text{otherwise} \\end{cases}, \\qquad
        b_{e+1} = \\min(b_e, \\ell),

    and training stops once :math:`s_{e+1} \\ge` ``patience``. Divergence is not its
    business: the trainings raise ``DivergenceError`` on a non-finite loss first.

    Parameters
    ----------
    tol : float or None
        Improvement that resets the stale count; None: never stop early.
    patience : int
        Stale epochs in a row that stop training.

    Examples
    --------
    >>> stopper = Stopper(tol=0.01, patience=2)
    >>> [stopper.update(loss) for loss in (0.5, 0.4, 0.395, 0.41)]
    [False, False, False, True]
    """

    def __init__(self, tol: float | None, patience: int):
        self.tol, self.patience = tol, patience
        self.best, self.stale = math.inf, 0

    def update(self, loss: float) -> bool:
        """Record one epoch's monitored ``loss``; True when training should stop."""
        if self.tol is None:
            return False
        self.stale = self.stale + 1 if loss > self.best - self.tol else 0
        self.best = min(self.best, loss)
        return self.stale >= self.patience


def run_epochs(
    train_epoch: Callable[[int], float], n_epochs: int, stopper: Stopper | None = None
) -> list[float]:
    """Train up to ``n_epochs`` epochs; ``train_epoch(epoch)`` runs epoch ``epoch`` (from 0)
    and returns its monitored loss. Stops early when ``stopper`` says so.

    Returns
    -------
    curve : list of float
        The monitored loss of each epoch run.

    Examples
    --------
    >>> run_epochs(lambda epoch: 1.0 / (epoch + 1), 10, Stopper(tol=0.2, patience=1))
    [1.0, 0.5, 0.3333333333333333]
    """
    curve = []
    for epoch in range(n_epochs):
        curve.append(train_epoch(epoch))
        if stopper is not None and stopper.update(curve[-1]):
            break
    return curve
