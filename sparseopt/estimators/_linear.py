"""Linear estimators on sparse features: SparseLogisticRegression and SparseLinearRegression
(their training: :mod:`._linear_training`)."""

from __future__ import annotations

from numbers import Real

from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions

from ..optim import OPTIMIZERS, Optimizer
from ._linear_training import LinearTraining
from ._rowmodel import RowModel, _LogisticOutput, _RegressionOutput
from ._rowtraining import DEFAULT_LEARNING_RATE  # noqa: F401 (the command line's help)


class _SparseLinearModel(RowModel):
    """The linear estimators: a row model with a :class:`LinearState`, L2 (``alpha``) and,
    with FTRL, L1 (``l1``)."""

    _parameter_constraints: dict = {
        **RowModel._parameter_constraints,
        "optimizer": [StrOptions(set(OPTIMIZERS)), Optimizer],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "l1": [Interval(Real, 0, None, closed="left")],
    }
    _has_gpu_path = True
    _training_type = LinearTraining


_COMMON_DOC = """
    optimizer : str or Optimizer, default="adagrad"
        ``"sgd"``, ``"momentum"``, ``"adagrad"``, ``"rmsprop"``, ``"adam"``, ``"amsgrad"``,
        ``"ftrl"``, or an optimizer object from :mod:`sparseopt.optim` carrying its own
        hyperparameters (``optimizer__beta_1`` etc. are then tunable in a grid search).
        ``"adam"`` and ``"amsgrad"`` are ``Adam(lazy="decay")`` and ``AMSGrad(lazy="decay")``
        (the best lazy mode in cross-validation on the real sets); pass ``Adam(lazy="exact")``
        for dense Adam's path.
    learning_rate : "auto", float or Schedule, default="auto"
        ``"auto"``: a per-optimizer default (AdaGrad 0.05), or the optimizer object's own.
    alpha : float, default=0.0
        L2 penalty, applied as decoupled weight decay: each step shrinks every weight by
        ``1 - eta_t * alpha`` (exact for lazily updated coordinates).
    l1 : float, default=0.0
        L1 penalty; needs ``optimizer="ftrl"`` (applied in FTRL-Proximal's closed form).
    fit_intercept : bool, default=True
    batch_size : int, default=1
        Rows per optimizer step; 1 is pure online learning.
    max_iter : "auto" or int, default="auto"
        Epochs. ``"auto"``: as many as help, decided by the data. The last
        ``validation_fraction`` of the rows (in the order given: the most recent, in a log)
        is held out; epochs run over the others until the held-out loss has not improved by
        ``tol`` for ``n_iter_no_change`` epochs (at most 100); the state of the best epoch is
        kept, and then learns the held-out rows once, in order. With one best epoch, as on
        large or time-ordered click logs, that is exactly one epoch over all the rows; sets
        that want more get more. Measured (``benchmarks/bench_defaults.py``, pooled 10-fold
        cross-validation): Criteo head logloss 0.4598 against 0.4596 for the best fixed
        epoch count (one) and 0.4970 for 10 epochs, Vowpal Wabbit 0.4624; Avazu head 0.4200
        (best, 3 epochs: 0.4190); a9a 0.3239 (the exact optimum 0.3242). It costs the epochs
        run after the best (``n_iter_no_change``) and a copy of the model while they run; set
        an integer to skip both, e.g. ``max_iter=1`` for a log too large to pass over twice.
        An integer: that many epochs, fewer if ``tol`` stops them.
    tol : float or None, default=1e-4
        Stop when the epoch's loss (training, or held-out with ``max_iter="auto"`` or early
        stopping) has not improved by ``tol`` for ``n_iter_no_change`` epochs.
    shuffle : bool, default=False
        Reshuffle the rows before each epoch. By default rows are taken in the order given,
        as online click-prediction learners (Vowpal Wabbit) take them: in a time-ordered log
        the last rows learned are the most recent, which predict the next rows best (Criteo
        head, one epoch: AUC 0.722 in file order, 0.717 shuffled). Shuffle data sorted by
        label or by any other key unrelated to time.
    early_stopping : bool, default=False
        Hold out a random, stratified ``validation_fraction`` of the rows, never trained
        on; stop on their loss (``tol``, ``n_iter_no_change``) and keep the state of the
        epoch where it was lowest. ``max_iter="auto"`` alone learns the held-out rows too,
        and is the better default (Criteo head: 0.4598 against 0.4628).
    validation_fraction : float, default=0.1
        Share of the rows held out by ``max_iter="auto"`` and ``early_stopping``.
    n_iter_no_change : int, default=2
    warm_start : bool, default=False
    n_jobs : int or None, default=None
        Threads; above 1, lock-free (Hogwild) updates on single rows: faster, not
        deterministic. ``None`` and 1 train serially and deterministically.
    verbose : int, default=0
        Show a progress bar with the running loss.
    device : {"cpu", "auto", "cuda"}, default="cpu"
        ``"cuda"``: train on the GPU with numba-cuda (``pip install 'sparseopt[cuda12]'``),
        deterministic minibatch steps equal to the CPU's up to rounding; ``n_jobs`` is
        ignored, use a large ``batch_size``. ``"auto"``: the GPU when one is usable and the
        data is large (see :mod:`sparseopt.cuda`), else the CPU.
    random_state : int, RandomState or None, default=None
"""


class SparseLogisticRegression(_LogisticOutput, ClassifierMixin, _SparseLinearModel):
    __doc__ = (
        """Logistic regression (binary, or multinomial softmax) trained with lazy sparse updates.

    Minimizes :math:`\\sum_i s_i \\ell(y_i, x_i^T W + b)` with the logistic (two classes) or
    softmax cross-entropy loss (more classes: one model, not one-vs-rest), one optimizer step
    per minibatch, touching only the coordinates present in it.

    Parameters
    ----------"""
        + _COMMON_DOC
        + """    class_weight : dict, "balanced" or None, default=None

    Attributes
    ----------
    classes_ : ndarray
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    state_ : LinearState
        Weights and optimizer state (resumable).
    n_iter_, t_ : int
        Epochs run (with held-out rows: up to the best epoch, whose state was kept) and
        optimizer steps taken.
    loss_curve_ : list of float
        Mean training loss of each epoch (each row scored before its update).
    validation_scores_ : list of float
        Held-out loss after each epoch run (``max_iter="auto"`` or ``early_stopping``).

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sparseopt import SparseLogisticRegression
    >>> X, y = make_classification(random_state=0)
    >>> SparseLogisticRegression(random_state=0).fit(X, y).score(X, y) > 0.8
    True
    """
    )

    export_kind = "logistic"  # the model sparseopt.export writes for it

    _parameter_constraints = {
        **_SparseLinearModel._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        optimizer="adagrad",
        learning_rate="auto",
        alpha=0.0,
        l1=0.0,
        fit_intercept=True,
        batch_size=1,
        max_iter="auto",
        tol=1e-4,
        shuffle=False,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=2,
        class_weight=None,
        warm_start=False,
        n_jobs=None,
        verbose=0,
        device="cpu",
        random_state=None,
    ):
        self._keep_params(locals())


class SparseLinearRegression(_RegressionOutput, RegressorMixin, _SparseLinearModel):
    __doc__ = (
        """Linear regression (squared or Huber loss) trained with lazy sparse updates.

    Minimizes :math:`\\sum_i s_i \\ell(y_i - x_i^T w - b)` with
    :math:`\\ell(r) = r^2/2` (``loss="squared"``) or Huber's loss with threshold
    ``epsilon``: :math:`r^2/2` for :math:`|r| \\le \\epsilon`, else
    :math:`\\epsilon (|r| - \\epsilon/2)`.

    Parameters
    ----------
    loss : {"squared", "huber"}, default="squared"
    epsilon : float, default=1.35
        Huber threshold."""
        + _COMMON_DOC
        + """
    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features)
    intercept_ : ndarray of shape (1,)
    state_ : LinearState
    n_iter_, t_ : int
    loss_curve_ : list of float

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from sparseopt import SparseLinearRegression
    >>> X, y = make_regression(n_features=5, noise=0.1, random_state=0)
    >>> SparseLinearRegression(learning_rate=2.0, max_iter=100, tol=None, random_state=0).fit(
    ...     X, y).score(X, y) > 0.99
    True
    """
    )

    export_kind = "linear"  # the model sparseopt.export writes for it

    _parameter_constraints = {
        **_SparseLinearModel._parameter_constraints,
        "loss": [StrOptions({"squared", "huber"})],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        loss="squared",
        epsilon=1.35,
        optimizer="adagrad",
        learning_rate="auto",
        alpha=0.0,
        l1=0.0,
        fit_intercept=True,
        batch_size=1,
        max_iter="auto",
        tol=1e-4,
        shuffle=False,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=2,
        warm_start=False,
        n_jobs=None,
        verbose=0,
        device="cpu",
        random_state=None,
    ):
        self._keep_params(locals())
