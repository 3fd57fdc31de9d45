"""The epoch loop and its early-stopping rule, shared by the estimators' ``fit``,
:func:`sparseopt.dask.fit` and the command line.

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

    and training stops once :math:`s_{e+1} \\ge` ``patience``; with ``tie_is_stale`` an epoch
    whose loss equals :math:`b_e - \\mathrm{tol}` is stale too (the command line's rule). Divergence
    is not its business: the trainings raise ``DivergenceError`` on a non-finite loss first.

    Parameters
    ----------
    tol : float or None
        Improvement that resets the stale count; None: never stop early.
    patience : int
        Stale epochs in a row that stop training.
    tie_is_stale : bool, default False
        Count a loss equal to the best minus ``tol`` as stale rather than as an improvement.

    Attributes
    ----------
    best, stale : float, int
        The best loss so far and the stale epochs since; :meth:`restore` sets them when a
        run goes on from a record of them (a checkpoint).
    best_epoch : int or None
        The last update (from 1) that was not stale: the one that gave ``best`` when
        ``tol`` is 0.
    best_state : object
        What ``snapshot()`` returned at ``best_epoch``, when :meth:`update` is given one.

    Examples
    --------
    >>> stopper = Stopper(tol=0.01, patience=2)
    >>> [stopper.update(loss) for loss in (0.5, 0.4, 0.395, 0.41)]
    [False, False, False, True]
    """

    def __init__(self, tol: float | None, patience: int, *, tie_is_stale: bool = False):
        self.tol, self.patience, self.tie_is_stale = tol, patience, tie_is_stale
        self.best, self.stale = math.inf, 0
        self.n_updates, self.best_epoch, self.best_state = 0, None, None

    def update(self, loss: float, snapshot: Callable[[], object] | None = None) -> bool:
        """Record one epoch's monitored ``loss``; True when training should stop.

        ``snapshot``: called when this epoch is the best so far, its result kept as
        ``best_state`` (a copy of the model, to return the best epoch's)."""
        if self.tol is None:
            return False
        bar = self.best - self.tol
        stale = loss >= bar if self.tie_is_stale else loss > bar
        self.stale = self.stale + 1 if stale else 0
        self.best = min(self.best, loss)
        self.n_updates += 1
        if not stale:
            self.best_epoch = self.n_updates
            if snapshot is not None:
                self.best_state = snapshot()
        return self.stale >= self.patience

    @property
    def improved(self) -> bool:
        """Whether the last update gave a new best."""
        return self.n_updates > 0 and self.best_epoch == self.n_updates

    def restore(self, best: float, stale: int) -> None:
        """Go on from a saved record: ``best`` loss so far, ``stale`` epochs since."""
        self.best, self.stale = best, stale


def run_epochs(
    train_epoch: Callable[[int], float],
    n_epochs: int,
    stopper: Stopper | None = None,
    snapshot: Callable[[], object] | None = None,
) -> list[float]:
    """Train up to ``n_epochs`` epochs; ``train_epoch(epoch)`` runs epoch ``epoch`` (from 0)
    and returns its monitored loss. Stops early when ``stopper`` says so; ``snapshot``: what
    the stopper keeps of its best epoch (:meth:`Stopper.update`).

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
        if stopper is not None and stopper.update(curve[-1], snapshot):
            break
    return curve
