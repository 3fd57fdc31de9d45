"""The shared early-stopping rule (sparseopt._epochs.Stopper)."""

import pytest

from sparseopt._epochs import Stopper


@pytest.mark.parametrize(
    ("tol", "patience", "losses", "stops"),
    [
        # no tolerance: never stops, whatever the losses do
        (None, 1, [1.0, 2.0, 3.0], [False, False, False]),
        # improving by more than tol every epoch: never stale
        (0.1, 1, [1.0, 0.8, 0.6], [False, False, False]),
        # an improvement of less than tol is stale; two in a row stop with patience 2
        (0.1, 2, [1.0, 0.95, 0.92], [False, False, True]),
        # an improvement of more than tol in between resets the stale count
        (0.1, 2, [1.0, 0.95, 0.5, 0.49, 0.6], [False, False, False, False, True]),
        # a worse epoch does not lower the bar: the best so far stays the reference
        (0.0, 3, [1.0, 2.0, 0.99, 1.5, 1.2], [False, False, False, False, False]),
        # a loss equal to best - tol counts as an improvement (the comparison is strict)
        (0.5, 1, [1.0, 0.5], [False, False]),
    ],
)
def test_stopper_counts_stale_epochs(tol, patience, losses, stops):
    stopper = Stopper(tol, patience)
    assert [stopper.update(loss) for loss in losses] == stops


def test_stopper_keeps_the_best_loss():
    stopper = Stopper(0.01, 5)
    for loss in (0.7, 0.4, 0.9, 0.5):
        stopper.update(loss)
    assert stopper.best == 0.4
    assert stopper.stale == 2
