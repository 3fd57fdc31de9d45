"""The shared early-stopping rule (sparseopt._epochs.Stopper)."""

import pytest

from sparseopt._epochs import Stopper, run_epochs


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


@pytest.mark.parametrize(
    ("tie_is_stale", "stops", "best_epoch"),
    [(False, [False, False, False, False], 4), (True, [False, False, False, True], 2)],
)
def test_stopper_counts_a_tie_as_stale_when_asked(tie_is_stale, stops, best_epoch):
    """The command line's rule: a validation loss equal to the best is no improvement."""
    stopper = Stopper(0.0, 2, tie_is_stale=tie_is_stale)
    assert [stopper.update(loss) for loss in (0.5, 0.4, 0.4, 0.4)] == stops
    assert stopper.best_epoch == best_epoch and stopper.best == 0.4


def test_stopper_keeps_the_best_epochs_snapshot():
    state = {"epoch": 0}

    def train_epoch(epoch):
        state["epoch"] = epoch
        return [0.9, 0.5, 0.7, 0.6, 0.1][epoch]

    stopper = Stopper(0.0, 2, tie_is_stale=True)
    curve = run_epochs(train_epoch, 5, stopper, snapshot=lambda: dict(state))
    assert curve == [0.9, 0.5, 0.7, 0.6]
    assert stopper.best_state == {"epoch": 1} and stopper.best_epoch == 2
    assert not stopper.improved


def test_a_restored_stopper_stops_where_an_uninterrupted_one_does():
    """A run resumed from a checkpoint that recorded (best, stale) stops at the same epoch."""
    losses = [0.5, 0.4, 0.45, 0.4, 0.42]  # the tie at 0.4 is the second stale epoch
    whole = Stopper(0.0, 3, tie_is_stale=True)
    stops = [whole.update(loss) for loss in losses]
    for cut in range(1, len(losses)):
        first = Stopper(0.0, 3, tie_is_stale=True)
        [first.update(loss) for loss in losses[:cut]]
        resumed = Stopper(0.0, 3, tie_is_stale=True)
        resumed.restore(first.best, first.stale)
        assert [resumed.update(loss) for loss in losses[cut:]] == stops[cut:]
    assert stops[-1]
