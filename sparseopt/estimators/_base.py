"""What every sparseopt estimator shares, and the training protocol that drives them all.

The training protocol
---------------------
``fit`` and ``partial_fit``, the command line (:mod:`sparseopt.pipeline`,
``sparseopt train --model mf``) and the Dask front end (:mod:`sparseopt.dask`) train every
model through these calls and no other::

    training = estimator.start_training(X, classes=None, reset=True)  # a Training
    rows = training.rows(X, y)              # checked and encoded once
    order = training.order(rows, rng)       # an epoch's order (shuffle, threads)
    loss = training.epoch(rows, order)      # one pass over the rows in ``order``, in place
    training.catch_up()                     # bring lazily updated coordinates up to date
    training.finish(curve)                  # check the model, then hand it to the estimator

``X`` given to ``start_training`` fixes the columns and the value type (for a row model, a
matrix of zero rows will do; matrix factorization takes every interaction). ``order`` may come
from the caller (a Dask worker trains ``order[start:stop]`` of a block); a data-parallel
trainer also merges copies through :meth:`Training.tables`, :meth:`Training.touched`,
:meth:`Training.table`, :meth:`Training.prepare_merge`, :meth:`Training.advance` and
:meth:`Training.set_clock`. Each model family implements :class:`Training` in its own class
(``docs/architecture-training.md``); a model whose ``start_training`` returns one runs
everywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, NamedTuple

import numba
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .._io import save_model
from ..optim import Optimizer
from ..optim import _rules as R

if TYPE_CHECKING:
    from .._typing import FilePath


class DivergenceError(ValueError):
    """Training produced non-finite or absurd values (weights beyond any sane range, a loss
    far worse than a constant prediction): the learning rate is too large for the data."""


def diverged(opt: Optimizer, what: str = "non-finite loss or weights"):
    """Raise DivergenceError: training with ``opt`` diverged because of ``what``."""
    raise DivergenceError(
        f"training diverged ({what}) with optimizer {type(opt).__name__} and "
        f"learning_rate={opt.learning_rate!r}: try a smaller learning_rate, or scale the "
        f"features"
    )


class Rows(NamedTuple):
    """Training rows as the kernels take them: canonical CSR, encoded targets, weights."""

    X: object
    targets: np.ndarray
    weights: np.ndarray


class SparseEstimator(BaseEstimator):
    """Base of every sparseopt estimator: optimizer and learning rate, threads, device,
    divergence, saving.

    A subclass gives ``_make_optimizer`` (:mod:`._optimizer_param`: the named optimizer with
    its default rates, then its own penalties and refusals, validated), ``_has_gpu_path``,
    ``_saved()`` and ``_from_file``, and ``start_training``, which makes its family's
    :class:`Training`.
    """

    _has_gpu_path = False  # device="cuda" trains on the GPU (else it is refused)

    def _keep_params(self, arguments: dict) -> None:
        """Store each constructor parameter as given, under its own name (scikit-learn's
        rule: no validation in ``__init__``); ``arguments``: the constructor's ``locals()``."""
        for name in self._get_param_names():
            setattr(self, name, arguments[name])

    # -- where it runs -----------------------------------------------------------------------
    def _n_threads(self) -> int:
        """Training threads from ``n_jobs`` (None: 1; -1: all, -2: all but one...), after
        checking ``device``."""
        if self.device == "cuda" and not self._has_gpu_path:
            raise ValueError(
                f"device='cuda': {type(self).__name__} has no GPU path yet (the linear "
                f"estimators have one); use device='cpu' or 'auto' (the CPU)"
            )
        n, most = self.n_jobs, numba.config.NUMBA_NUM_THREADS
        if n is None:
            return 1
        if n == 0:
            raise ValueError("n_jobs=0: give a positive number of threads, -1 (all) or None")
        return max(1, min(most + 1 + n if n < 0 else n, most))

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: FilePath) -> None:
        """Save to ``path`` (.npz of arrays and JSON metadata, no pickle), atomically.

        The optimizer state is saved too: a loaded model can go on with ``partial_fit``.
        Load it with :func:`sparseopt.load`.
        """
        check_is_fitted(self)
        arrays, attributes = self._saved()
        save_model(path, self, arrays, attributes)

    def export(self, path: FilePath, format: str = "onnx", **options) -> list:
        """Write the fitted model for serving without sparseopt, as an ONNX graph or JSON
        weights with their formula: see :func:`sparseopt.export.export` (``options``:
        ``data``, ``input_form``). Returns the files written."""
        from ..export import export  # onnx is imported only for format="onnx"

        return export(self, path, format=format, **options)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def check_order(order: np.ndarray, n: int) -> None:
    """Refuse an epoch's ``order`` that indexes outside ``n`` updates."""
    if order.size and (order.min() < 0 or order.max() >= n):
        raise ValueError(f"order holds an index outside 0 .. {n - 1}")


class Training(ABC):
    """One training in progress: the protocol of the module docstring, implemented by each
    model family (``RowTraining`` for the linear models and factorization machines,
    ``MFTraining`` for matrix factorization).

    A training holds what its kernels need, read once from the estimator's parameters when
    the estimator makes it; ``optimizer`` is its optimizer and ``n_iter_start`` the epochs
    the model had run before it. Only :meth:`finish` changes the estimator's fitted
    attributes.
    """

    optimizer: Optimizer
    n_iter_start: int

    @abstractmethod
    def rows(self, X, y=None, sample_weight=None, *, first_row=0):
        """Check ``X`` (and ``y``, ``sample_weight``) and encode them for :meth:`epoch`;
        ``first_row``: where X starts in the whole data (a block's offset)."""

    @abstractmethod
    def max_epochs(self) -> int:
        """Epochs a fit without held-out rows runs (a Dask fit, the command line)."""

    @abstractmethod
    def count(self, rows) -> int:
        """How many updates ``rows`` hold: what an order indexes."""

    @abstractmethod
    def order(self, rows, rng) -> np.ndarray:
        """An epoch's order of ``rows`` (``rng``: a Generator or RandomState)."""

    @abstractmethod
    def epoch(self, rows, order: np.ndarray) -> float:
        """Train the state in place on ``rows`` in ``order`` (checked by
        :func:`check_order`); returns the sum of the updates' weighted losses, each taken
        before its update. Raises DivergenceError on a non-finite loss."""

    @abstractmethod
    def catch_up(self) -> None:
        """Apply every coordinate's pending lazy steps (weight decay, momentum): the state is
        then the same as after dense updates."""

    @abstractmethod
    def check(self, rows=None, loss: float | None = None) -> None:
        """Raise DivergenceError if the state is not finite or beyond any sane range, or if
        ``loss`` (a mean training loss over ``rows``) is far worse than a constant one's."""

    def refuse(self, what: str):
        """Raise DivergenceError, naming ``what`` went wrong and the learning rate."""
        diverged(self.optimizer, what)

    @abstractmethod
    def finish(self, curve, *, scores=(), rows=None):
        """Check the state (with the last loss of ``curve`` on ``rows``), then make it the
        estimator's fitted model (``curve``: each epoch's mean training loss, ``scores``
        their held-out losses); returns the estimator."""

    # -- merging copies (sparseopt.dask) ---------------------------------------------------
    @abstractmethod
    def tables(self) -> dict:
        """``{name: (parameter columns, accumulator slot, shared)}``: the state's tables, each
        row ``[parameters..., slots...]``. Rows of a shared table merge across copies by
        :func:`sparseopt.dask.merge_table`, weighted by the accumulator slot (None:
        averaged); a table that is not shared has each row trained by one copy only."""

    @abstractmethod
    def table(self, name: str) -> np.ndarray:
        """The table ``name`` of :meth:`tables`, to read or write in place."""

    @abstractmethod
    def touched(self, rows, order: np.ndarray) -> dict:
        """``{name: rows of the table, or None for all}`` that training on ``rows`` in
        ``order`` may change (before a catch-up, which moves every row of a lazy model)."""

    #: Whether merging copies needs the rows each copy touched (:meth:`prepare_merge` reads
    #: them, or a table is not shared); if not, a merge may compare whole tables instead.
    needs_touched = True

    @abstractmethod
    def prepare_merge(self, touched) -> None:
        """Make the state what every copy started from on the rows each copy touched
        (``touched``: one :meth:`touched` result per copy), before merging them."""

    @abstractmethod
    def lazy(self) -> bool:
        """Whether coordinates keep pending steps (then :meth:`catch_up` moves every row)."""

    @abstractmethod
    def clock(self) -> np.ndarray:
        """The optimizer's clock (its step count is ``clock()[CLOCK_T]``)."""

    @abstractmethod
    def set_clock(self, clock) -> None:
        """Set the clock to ``clock``, every coordinate up to date with it."""

    def advance(self, steps: int) -> None:
        """Move the clock ``steps`` optimizer steps on, every coordinate up to date with it
        (after merging copies that took ``steps`` steps in all, each caught up)."""
        clock = self.clock()
        R.advance_clock(self.optimizer.hyperparameters(), self.optimizer.schedule_spec(),
                        clock, steps)  # fmt: skip
        self.set_clock(clock)


__all__ = [
    "DivergenceError",
    "Rows",
    "SparseEstimator",
    "Training",
    "check_order",
    "diverged",
]
