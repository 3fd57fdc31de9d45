"""Factorization machines on sparse features: FMClassifier, FMRegressor and FFMClassifier
(their training: :mod:`._fm_training`)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..optim import OPTIMIZERS, Optimizer
from ._fm_training import FMTraining, factor_init
from ._rowmodel import RowModel, _LogisticOutput, _RegressionOutput

# The race of AUTO_CANDIDATES keeps a run behind the leader while it would catch up within
# this many epochs at its last epoch's pace (RowModel._catching_up). The damped start (30)
# begins behind and may overtake late: on planted interactions of strength 1 it was 0.022
# behind after one epoch and ahead after six, and plain halving, which dropped it after the
# first, left FM 0.0036 above its tuned grid (now level with it, 0.4874); the other sets of
# benchmarks/bench_fm_quality.py kept their figures. FFM keeps plain halving
# (FFM_RACE_CATCH_UP_EPOCHS): a catch-up of 2 epochs changed only its Avazu head figure, 0.0016
# worse, and the longer races that gained 0.0014 on MovieLens cost Avazu as much and
# MovieLens 2.9 times the epochs (benchmarks/README.md, "The race's schedule").
FM_RACE_CATCH_UP_EPOCHS = 2
FFM_RACE_CATCH_UP_EPOCHS = 0

# Default L2 penalties of the factors (alpha_factors) of FMClassifier and FFMClassifier.
# Where interactions exist the factors' start at 1 lets them grow fast, and at 1e-4 they
# overfit within a few epochs: at 1e-2 FM beat a tuned PyTorch FM on MovieLens u1 (0.5440
# against 0.5475) and on planted interactions (0.3562 against 0.3573), from 0.5493 and 0.3596,
# and left the Criteo, Avazu and a9a figures within 0.0001 of 1e-4's. FFM spreads a feature's
# data over a vector per field: at 1e-2 it lost 0.0015 on the Avazu head and took three times
# the epochs on MovieLens, so 3e-3 (Avazu +0.0005, MovieLens u1 0.5464 from 0.5477). See
# benchmarks/README.md, "Factorization machines' defaults". FMRegressor keeps 1e-4: no
# regression data were measured.
FM_ALPHA_FACTORS = 1e-2
FFM_ALPHA_FACTORS = 3e-3

# alpha_factors="auto" of FFMClassifier with max_iter="auto" (see _chooses): (penalty, learning
# rate) that, after the race of AUTO_CANDIDATES at FFM_ALPHA_FACTORS, train the kept run on from
# its best epoch in turn, each kept if the held-out loss goes lower. No one penalty serves every
# set: 3e-3 learns planted interactions (planted3 0.4907 against 0.5547 at 3e-2) and 3e-2
# MovieLens' (u1 0.5376 against 0.5464; a field-aware PyTorch FFM 0.5441). Racing 3e-2 from
# the start took 29 epochs on u1 (3.7x the fit time of the defaults before issue 29); going on
# from 3e-3's best epoch, the best epoch came 19 epochs later at the rate 0.05 (u1 0.5402), 9
# at 0.1 (0.5395), 5 at 0.2 (0.5391; u1-u5 pooled 0.5497 / 0.5488 / 0.5482); FFM's fits then
# took at most 2.6x (the Criteo head). FMClassifier has none: its race already took the heads'
# fits to 2.3-2.8x that of the defaults before issue 29. benchmarks/README.md, "Issue 29,
# fifth pass".
FFM_PENALTY_FOLLOW_UPS = ((3e-2, 0.2),)


class _FactorizationMachine(RowModel):
    """The factorization machines: a row model with an :class:`FMState` and
    :class:`FMTraining`."""

    _parameter_constraints: dict = {
        **RowModel._parameter_constraints,
        "optimizer": [StrOptions(set(OPTIMIZERS) - {"ftrl"}), Optimizer],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "alpha_linear": [Interval(Real, 0, None, closed="left")],
        "alpha_factors": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
        "init_std": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "factor_state": [StrOptions({"auto", "element", "row"})],
    }
    _training_type = FMTraining
    _race_catch_up_epochs = FM_RACE_CATCH_UP_EPOCHS
    # alpha_factors="auto": this penalty, and after max_iter="auto"'s race these (penalty,
    # learning rate) from the kept run's best epoch (FFM_PENALTY_FOLLOW_UPS)
    _family_params = {"auto_alpha_factors": FM_ALPHA_FACTORS, "penalty_follow_ups": ()}

    @classmethod
    def _from_file(cls, params, attributes, arrays):
        init = arrays.get("init")
        if init is None or np.shape(init) == (2,):  # saved before the state kept them
            model = cls(**params)
            model._validate_params()
            if model.init_std == "auto" and init is None:  # as new as "auto": it has init
                raise ValueError(
                    "the model file has no array 'init' (the factors' initialization), which "
                    "every file with init_std='auto' holds: it was edited or damaged"
                )
            if model.alpha_factors == "auto":  # as new as "auto": its init has the penalty
                raise ValueError(
                    "the model file's array 'init' has no alpha_factors, which every file "
                    "with alpha_factors='auto' holds: it was edited or damaged"
                )
            if init is None:
                opt = model._make_optimizer()
                init = factor_init(model._params(), opt, sp.csr_matrix((0, 1)))
            else:
                init = [*np.asarray(init, np.float64), model.alpha_factors]
            arrays = {**arrays, "init": np.array(init, np.float64)}
        return super()._from_file(params, attributes, arrays)

    # -- the learnt model ------------------------------------------------------------------
    @property
    def learning_rate_(self):
        """The learning rate the fit ran with (the one chosen with ``max_iter="auto"``)."""
        check_is_fitted(self, "state_")
        fitted = getattr(self, "optimizer_", None)
        return (fitted if fitted is not None else self._make_optimizer()).learning_rate

    @property
    def init_std_(self) -> float:
        """Standard deviation of the factors' initial draw (the one chosen, or "auto"'s)."""
        check_is_fitted(self, "state_")
        return float(self.state_.init[0])

    @property
    def alpha_factors_(self) -> float:
        """The factors' L2 penalty the model trained with (the one chosen, or the one set)."""
        check_is_fitted(self, "state_")
        return float(self.state_.init[2])

    @property
    def factor_accumulator_start_(self) -> float:
        """Value the factors' first optimizer slot starts at (AdaGrad: its accumulator)."""
        check_is_fitted(self, "state_")
        return float(self.state_.init[1])

    @property
    def factors_(self) -> np.ndarray:
        """Factor vectors: (n_features, n_components), or (n_features, n_fields, n_components)
        for a field-aware model (``factors_[j, G]`` is column j's vector for field G)."""
        check_is_fitted(self, "state_")
        state = self.state_
        k, F = state.n_components, state.n_fields
        f = state.factors[:, :k] if state.per_row else state.factors[:, 0]
        f = f.reshape(state.table.shape[0], F, k).copy()
        return f if state.fields.size else f[:, 0]


_FM_DOC = """
    n_components : int, default={k}
        Dimension k of the factor vectors.
    optimizer : str or Optimizer, default="adagrad"
        ``"sgd"``, ``"momentum"``, ``"adagrad"``, ``"rmsprop"``, ``"adam"``, ``"amsgrad"``, or an
        optimizer object from :mod:`sparseopt.optim` (not FTRL: its closed-form weights
        discard the factors' random initialization).
    learning_rate : "auto", float or Schedule, default="auto"
        ``"auto"``: a per-optimizer default (AdaGrad 0.05, as for the linear estimators), or
        the optimizer object's own. With ``optimizer="adagrad"`` the linear weights'
        accumulators start at 0 and the factors' at 30, which damps the factors until a
        feature has been seen often; an AdaGrad object's ``initial_accumulator_value`` serves
        both. With ``optimizer="adagrad"``, ``init_std="auto"`` and ``max_iter="auto"``, the
        held-out rows choose between two starts of the factors' accumulators, 30 and 1 (at
        learning rate 0.05), by a race: each epoch trains every setting still in the race
        once, from where it was, and keeps the better half by its best held-out loss so far
        and, except in FFMClassifier, any setting behind still improving fast enough to catch up
        within two epochs at its last epoch's pace (the start at 30 begins behind and can
        overtake late), until one is left, which then runs on as a single fit would (a
        setting that diverges drops out). 30 protects small click logs, where the factors
        overfit (the Criteo and Avazu heads keep it); 1 learns interactions where the data
        hold them (MovieLens, planted interactions: ``benchmarks/bench_fm_quality.py``). The
        cost is the epochs of the setting that drops out (one, or as many as it kept up),
        and a second model in memory meanwhile. The start of the accumulators
        sets the factors' first steps (AdaGrad's step is the rate over the root of the
        accumulator), so this is a choice of their early step size; ``AUTO_CANDIDATES`` in
        ``sparseopt/estimators/_fm_training.py`` can hold learning rates and initial scales as well.
        ``learning_rate_`` and ``factor_accumulator_start_`` say what was chosen,
        ``verbose=1`` what was tried. Continued training (``partial_fit``, ``warm_start``)
        goes on at the fitted learning rate.
    alpha_linear : float, default={alpha_linear}
        L2 penalty of the linear weights, per occurrence (see the class description).
    alpha_factors : "auto" or float, default={alpha_factors}
        L2 penalty of the factor vectors, per occurrence. {auto_penalty}
    init_std : "auto" or float, default="auto"
        Standard deviation of the factors' normal initialization (a factorization machine
        started at zero stays there: every factor gradient is a product of other factors).
        ``"auto"``: :math:`\\sigma = (s / \\sqrt{{k\\,m(m-1)/2}})^{{1/2}}` for rows of m active
        features on average (the first fit's X), so that the pairwise term of a row starts
        with standard deviation about :math:`s = 0.005` whatever k and the number of fields
        (0.014 for MovieLens' 9 features and k = 16, 0.007 for Criteo's 39). A training
        started from a matrix without rows (the Dask front end, ``sparseopt train``) assumes
        39. The value is kept with the model (``init_std_``): continued training draws the
        vectors of new features with it.
    factor_state : {{"auto", "element", "row"}}, default="auto"
        Optimizer state of the factors. ``"element"``: every factor element has its own slots
        beside it (AdaGrad: its own accumulator); it runs every optimizer of
        :mod:`sparseopt.optim` through the same per-coordinate rules, with their exact lazy
        catch-up. ``"row"``: AdaGrad only, one accumulator per factor vector fed the mean of
        its elements' squared gradients: half the memory (k + 1 floats per vector instead of
        2k) and 1.6x (k = 8) to 2x (k = 16) faster, with the same accuracy in our measurements
        (``benchmarks/README.md``). ``"auto"``: ``"row"`` with AdaGrad, else ``"element"``.
    fit_intercept : bool, default=True
    batch_size : int, default=1
        Rows per optimizer step; 1 is pure online learning.
    max_iter : "auto" or int, default="auto"
        Epochs. ``"auto"``: as many as help, decided on the last ``validation_fraction`` of
        the rows, held out until the best epoch is found, then learned once (see the linear
        estimators). Measured (``benchmarks/bench_defaults.py``, pooled 10-fold
        cross-validation, FMClassifier with the defaults before issue 29): Criteo head
        logloss 0.4599 against 0.4595 for the best fixed epoch count (one) and 0.5449 for 10
        epochs; Avazu head 0.4191 (best, 2 epochs: 0.4191); a9a 0.3214 (best, 10 epochs:
        0.3212). With the learning rate and ``init_std`` left to "auto", the held-out rows
        also choose the learning rate (see ``learning_rate``). An integer: that many epochs,
        fewer if ``tol`` stops them.
    tol : float or None, default=1e-4
        Stop when the epoch's loss (training, or held-out with ``max_iter="auto"`` or early
        stopping) has not improved by ``tol`` for ``n_iter_no_change`` epochs.
    shuffle : bool, default=False
        Reshuffle the rows before each epoch; by default rows are taken in the order given
        (see the linear estimators).
    early_stopping : bool, default=False
        Hold out a random, stratified ``validation_fraction`` of the rows, never trained
        on; stop on their loss and keep the state of the epoch where it was lowest.
    validation_fraction : float, default=0.1
        Share of the rows held out by ``max_iter="auto"`` and ``early_stopping``.
    n_iter_no_change : int, default=2
    warm_start : bool, default=False
    n_jobs : int or None, default=None
        Threads; above 1, lock-free (Hogwild) updates on single rows: faster, not
        deterministic. ``None`` and 1 train serially and deterministically.
    verbose : int, default=0
        Show a progress bar with the running loss.
    device : {{"cpu", "auto", "cuda"}}, default="cpu"
        Factorization machines train on the CPU: "auto" picks it, "cuda" raises an error
        until they have a GPU path.
    random_state : int, RandomState or None, default=None
        Seeds the factors' initialization and the shuffling."""

_FFM_PENALTY = """``"auto"``: 0.003 and, with
        ``max_iter="auto"`` and the learning rate and ``init_std`` left to "auto" (AdaGrad
        by name), a second choice on the held-out rows: after the race of the learning
        rate's settings (see ``learning_rate``), the kept run trains on from its best epoch
        at 0.03 (learning rate 0.2) while its held-out loss improves, and that is kept if it
        went lower (``alpha_factors_``, ``learning_rate_``). No one value served every data
        set: 0.03 learns MovieLens' interactions but not planted ones; the cost is the
        epochs at 0.03. Continued training keeps the fitted penalty unless one is set."""

_FM_MODEL = r"""

    .. math::

        m(x) = b + \sum_j w_j x_j + \sum_{j<l} \langle v_j, v_l \rangle x_j x_l

    computed in :math:`O(k \cdot nnz)` per row (Rendle 2010). Training minimizes
    :math:`\sum_i s_i [\ell(y_i, m(x_i)) + \sum_{j: x_{ij} \ne 0} (\tfrac{\alpha_w}{2} w_j^2
    + \tfrac{\alpha_v}{2} \lVert v_j \rVert^2)]` with ``s_i`` the sample weights: the L2
    penalty is per occurrence, as in libFM, so a feature's weight and vector are read and
    updated only in the steps whose rows hold it (lazy updates, exact for AdaGrad; rules with
    decaying state catch a feature up on its skipped steps first)."""

_FM_ATTRIBUTES = """
    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features)
        Linear weights :math:`w`.
    intercept_ : ndarray of shape (1,)
    factors_ : ndarray of shape (n_features, n_components)
    state_ : FMState
        Weights, factors and optimizer state (resumable).
    n_iter_, t_ : int
        Epochs run (with held-out rows: up to the best epoch, whose state was kept) and
        optimizer steps taken.
    loss_curve_ : list of float
        Mean training loss of each epoch (each row scored before its update).
    validation_scores_ : list of float
        Held-out loss after each epoch run (``max_iter="auto"`` or ``early_stopping``).
    learning_rate_ : float or Schedule
        Learning rate the fit ran with (with ``max_iter="auto"``, maybe chosen).
    init_std_ : float
        Standard deviation of the factors' initial draws.
    alpha_factors_ : float
        L2 penalty of the factors the fit trained with (with ``alpha_factors="auto"``, maybe
        chosen).
    factor_accumulator_start_ : float
        Value the factors' first optimizer slot started at (AdaGrad's accumulator).

    References
    ----------
    Rendle, "Factorization machines", ICDM 2010. Duchi, Hazan and Singer, "Adaptive
    subgradient methods", JMLR 2011."""


class FMClassifier(_LogisticOutput, ClassifierMixin, _FactorizationMachine):
    __doc__ = (
        """Binary factorization machine with the logistic loss, trained with lazy sparse updates.

    The margin of a row is"""
        + _FM_MODEL
        + """ The loss is :math:`\\log(1 + e^{-y m})`. For more than two classes wrap it in
    :class:`sklearn.multiclass.OneVsRestClassifier`.

    Parameters
    ----------"""
        + _FM_DOC.format(
            k=16,
            alpha_linear=1e-5,
            alpha_factors=FM_ALPHA_FACTORS,
            auto_penalty=f'"auto": {FM_ALPHA_FACTORS:g}.',
        )
        + """
    class_weight : dict, "balanced" or None, default=None
"""
        + _FM_ATTRIBUTES
        + """

    Examples
    --------
    >>> from sklearn.metrics import log_loss
    >>> from sparseopt import FMClassifier
    >>> from sparseopt.datasets import make_ctr
    >>> data = make_ctr(20_000, n_fields=8, n_bits=16, interactions=1.0, n_test=5_000,
    ...                 random_state=0)
    >>> fm = FMClassifier(max_iter=3, random_state=0).fit(data.X, data.y)
    >>> fm.predict_proba(data.X_test).shape
    (5000, 2)
    """
    )

    export_kind = "fm"  # the model sparseopt.export writes for it

    _parameter_constraints = {
        **_FactorizationMachine._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        n_components=16,
        optimizer="adagrad",
        learning_rate="auto",
        alpha_linear=1e-5,
        alpha_factors=FM_ALPHA_FACTORS,
        init_std="auto",
        factor_state="auto",
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags


class FMRegressor(_RegressionOutput, RegressorMixin, _FactorizationMachine):
    __doc__ = (
        """Factorization machine regression (squared or Huber loss), trained with lazy updates.

    The prediction of a row is"""
        + _FM_MODEL
        + """ The loss is :math:`(y - m)^2 / 2`, or Huber's with threshold ``epsilon``.

    Parameters
    ----------
    loss : {"squared", "huber"}, default="squared"
    epsilon : float, default=1.35
        Huber threshold."""
        + _FM_DOC.format(k=16, alpha_linear=1e-5, alpha_factors=1e-4, auto_penalty='"auto": 1e-4.')
        + "\n"
        + _FM_ATTRIBUTES
        + """

    Examples
    --------
    >>> import numpy as np
    >>> from sparseopt import FMRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(2000, 5))
    >>> y = X[:, 0] * X[:, 1] - X[:, 2]
    >>> FMRegressor(n_components=4, learning_rate=0.1, max_iter=30, init_std=0.1,
    ...             random_state=0).fit(X, y).score(X, y) > 0.95
    True
    """
    )

    export_kind = "fm_regressor"  # the model sparseopt.export writes for it
    # its default: no regression data were measured
    _family_params = {"auto_alpha_factors": 1e-4, "penalty_follow_ups": ()}

    _parameter_constraints = {
        **_FactorizationMachine._parameter_constraints,
        "loss": [StrOptions({"squared", "huber"})],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        n_components=16,
        loss="squared",
        epsilon=1.35,
        optimizer="adagrad",
        learning_rate="auto",
        alpha_linear=1e-5,
        alpha_factors=1e-4,
        init_std="auto",
        factor_state="auto",
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


class FFMClassifier(FMClassifier):
    __doc__ = (
        """Binary field-aware factorization machine (logistic loss), trained with lazy updates.

    Every column j belongs to a field :math:`\\phi(j)` and has one vector per field; a pair
    of features interacts through the vectors each keeps for the other's field:

    .. math::

        m(x) = b + \\sum_j w_j x_j
             + \\sum_{j<l} \\langle v_{j,\\phi(l)}, v_{l,\\phi(j)} \\rangle x_j x_l

    (Juan et al. 2016), :math:`O(k \\cdot nnz^2)` per row. Penalties, updates and loss are
    those of :class:`FMClassifier`; the factor L2 applies per row to each vector the row
    uses.

    Parameters
    ----------
    fields : "auto", array-like of int of shape (n_features,) or None, default="auto"
        Field of each column, ``0 .. n_fields - 1`` (-1: a column without interactions,
        linear only). The Criteo and Avazu readers give each field its own slice of columns
        with ``field_aware=True``; its layout is
        ``sparseopt.datasets.column_fields(reader.n_bits, reader.n_fields)``. None: every
        column is a field of its own (for a few dense columns; up to 1024 columns). "auto":
        the fields that X carries as its attribute ``column_fields`` (the output of
        ``FieldHasher(field_aware=True)``, so that a pipeline of the two needs no argument;
        continued training keeps the fitted ones), else as None."""
        + _FM_DOC.format(k=4, alpha_linear=1e-5, alpha_factors='"auto"', auto_penalty=_FFM_PENALTY)
        + """
    class_weight : dict, "balanced" or None, default=None
"""
        + _FM_ATTRIBUTES.replace(
            "(n_features, n_components)", "(n_features, n_fields, n_components)"
        ).replace(
            "ICDM 2010.",
            'ICDM 2010. Juan, Zhuang, Chin and Lin, "Field-aware\n    '
            'factorization machines for CTR prediction", RecSys 2016.',
        )  # fmt: skip
        + """

    Examples
    --------
    >>> from sparseopt import FFMClassifier
    >>> from sparseopt.datasets import column_fields, make_ctr
    >>> data = make_ctr(5_000, n_fields=6, n_bits=12, field_aware=True, random_state=0)
    >>> ffm = FFMClassifier(fields=column_fields(12, 6), max_iter=2, random_state=0)
    >>> ffm.fit(data.X, data.y).factors_.shape
    (4096, 6, 4)
    """
    )

    export_kind = "ffm"  # the model sparseopt.export writes for it
    _race_catch_up_epochs = FFM_RACE_CATCH_UP_EPOCHS
    _family_params = {
        "auto_alpha_factors": FFM_ALPHA_FACTORS,
        "penalty_follow_ups": FFM_PENALTY_FOLLOW_UPS,
    }

    _parameter_constraints = {
        **FMClassifier._parameter_constraints,
        "fields": [StrOptions({"auto"}), "array-like", None],
    }

    def __init__(
        self,
        fields="auto",
        n_components=4,
        optimizer="adagrad",
        learning_rate="auto",
        alpha_linear=1e-5,
        alpha_factors="auto",
        init_std="auto",
        factor_state="auto",
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


__all__ = ["FFMClassifier", "FMClassifier", "FMRegressor"]
