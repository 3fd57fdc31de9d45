"""Matrix factorization for explicit ratings and implicit feedback, trained with lazy rules."""

from __future__ import annotations

import math
import time
from dataclasses import fields
from numbers import Integral, Real
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted

from .. import _io, optim
from .._epochs import run_epochs
from .._jit import compile_notice, compile_seconds
from ..models import _mf as K
from ..optim import AdaGrad
from ..optim import _rules as R
from . import _optimizer_param, _safety
from ._base import SparseEstimator
from ._mf_features import (
    MAP_KEYS,
    feature_map,
    grown_maps,
    loaded_maps,
    mapped_weights,
    new_rows_map,
    saved_maps,
)
from ._mf_training import (
    _ACCEPT,
    SIDES,
    FeatureMFTraining,
    MFTraining,
    _check_interactions,
    _count_interactions,
    _grow,
    _max_epochs,
    _new_side,
    _resize,
    _set_fitted,
    _Side,
    _table_counts,
)
from ._optimizer_param import validated

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from typing_extensions import Self

    from .._typing import MatrixLike

# Defaults by loss, picked on validation splits cut from the training files only (20% of
# u1.base for the squared loss; ten ratings per user of ua.base for WARP), never on a test
# file (benchmarks/README.md): five epochs at rate 0.08 fit MovieLens 100K's ratings as well
# as fifteen at 0.05; WARP (with user histories) learns best in twenty epochs at rate 0.04
# with AdaGrad's accumulators starting at 10, which damps its first, largest steps (LightFM
# starts them at 1). The epochs by loss: _mf_training._DEFAULT_MAX_ITER.
_DEFAULT_LEARNING_RATE = {"squared": 0.08, "warp": 0.04}
_IMPLICIT_LEARNING_RATE = 0.05
_WARP_INITIAL_ACCUMULATOR = 10.0


class MatrixFactorization(SparseEstimator):
    r"""Matrix factorization of a users x items matrix, trained with lazy per-coordinate rules.

    A (user, item) pair is scored as

    .. math:: s_{ui} = \mu + b_u + b_i + p_u^\top q_i

    with ``n_components``-dimensional factors :math:`p_u, q_i`, biases :math:`b_u, b_i` and,
    for ``loss="squared"``, the global mean rating :math:`\mu` (0 otherwise). Training makes
    ``max_iter`` passes over the stored entries of ``X`` in a shuffled order; each entry is
    one optimizer step on the few coordinates it touches. With :math:`x_{ui}` the stored
    value, the loss of an entry is

    - ``"squared"`` (explicit ratings, biased MF):
      :math:`\tfrac12 (s_{ui} - x_{ui})^2`;
    - ``"logistic"`` (implicit feedback): :math:`x_{ui} \log(1 + e^{-s_{ui}})` plus
      :math:`\log(1 + e^{s_{uj}})` for ``n_negatives`` items :math:`j` drawn uniformly among
      those the user has no interaction with (each one its own step);
    - ``"bpr"`` (Rendle et al., 2009): :math:`x_{ui} \log(1 + e^{-(s_{ui} - s_{uj})})` with
      one drawn :math:`j`;
    - ``"warp"`` (Weston et al., 2011): draw up to ``max_sampled`` items until one violates
      the margin, :math:`s_{uj} > s_{ui} - 1` at draw :math:`n`; then
      :math:`x_{ui} \log\lfloor (n_{items} - 1) / n \rfloor (1 - s_{ui} + s_{uj})`, which
      weights a positive by the log of its estimated rank.

    With ``user_history`` (Koren's SVD++ and Kabbur et al.'s FISM), a user's vector also
    sums a second set of item vectors :math:`y_m` over the items :math:`N(u)` the user
    interacted with,

    .. math:: p_u + |N(u)|^{-1/2} \sum_{m \in N(u)} y_m,

    so that what a user did shapes their vector even where :math:`p_u` learnt little. An
    epoch then runs user by user (users and each user's entries shuffled): for an entry
    :math:`(u, i)` the sum leaves out :math:`y_i` and is scaled by :math:`(|N(u)| - 1)^{-1/2}`,
    so that a positive never scores itself. The :math:`y_m` move once per user block, by one
    optimizer step on the sum of the block's gradients in the user vector, scaled alike, plus
    :math:`\alpha_f y_m`; :math:`\alpha_f` of the user vector is on the whole vector above.

    plus the L2 penalty :math:`\tfrac{\alpha_b}{2}(b_u^2 + b_i^2) + \tfrac{\alpha_f}{2}
    (\lVert p_u \rVert^2 + \lVert q_i \rVert^2)` on the rows the entry touches (so active
    users and items are regularized more, as in Funk's SGD and Surprise; the pairwise
    losses leave :math:`b_u`, which cancels, untouched). For the implicit losses every
    stored entry is a positive, its value a weight.

    Every bias has its own optimizer state beside it. The factors keep theirs per element
    (every rule of :mod:`sparseopt.optim`) or, with AdaGrad, per vector (``factor_state``).
    Rules that move a weight while its gradient is zero (momentum, Adam with
    ``lazy="exact"``, weight decay) catch a user or item up on its skipped steps before it is
    next read, and all rows at the end of each ``fit`` and ``partial_fit``: the weights are
    the dense optimizer's.

    Parameters
    ----------
    n_components : int, default=32
        Dimension of the factors.
    loss : {"squared", "logistic", "bpr", "warp"}, default="squared"
    optimizer : str or sparseopt.optim.Optimizer, default="adagrad"
        A name of :data:`sparseopt.optim.OPTIMIZERS` (except ``"ftrl"``: its closed-form
        weights discard the random initialization) or an optimizer object.
    learning_rate : "auto", float or sparseopt.optim.Schedule, default="auto"
        The optimizer's rate. ``"auto"``: for a named optimizer 0.08 with ``loss="squared"``,
        0.04 with ``"warp"``, 0.05 otherwise; the object's own rate for an optimizer object.
    alpha_factors : float, default=0.1
        L2 penalty :math:`\alpha_f` of the factors.
    alpha_biases : float, default=0.02
        L2 penalty :math:`\alpha_b` of the biases.
    max_iter : "auto" or int, default="auto"
        Passes over the data in ``fit`` (``partial_fit`` makes one). ``"auto"``: 5 with
        ``loss="squared"``, 20 with ``"warp"``, 15 otherwise (picked on validation splits,
        ``benchmarks/README.md``; unlike the linear estimators' ``"auto"``, no rows are held
        out).
    init_std : float, default=0.01
        Standard deviation of the normal initial factors.
    factor_state : {"auto", "element", "row"}, default="auto"
        Optimizer state of the factors. ``"element"``: every factor element has its own
        slots (AdaGrad: its own accumulator, as LightFM's), through the per-coordinate rules.
        ``"row"``: AdaGrad only, one accumulator :math:`G_u` per vector fed the mean of its
        elements' squared gradients, :math:`G_u \leftarrow G_u + \lVert g_u \rVert^2 / k`,
        :math:`p_u \leftarrow p_u - \eta_t g_u / (\sqrt{G_u} + \epsilon)`: one square root
        per vector instead of ``k`` and contiguous, vectorized k-loops (about 4x faster at
        ``k = 32`` on MovieLens 100K, ``benchmarks/README.md``). ``"auto"``: ``"row"`` with
        AdaGrad, else ``"element"``. With ``optimizer="adagrad"`` and ``loss="warp"`` the
        accumulators (of biases and factors) start at 10 instead of AdaGrad's 0: it damps
        the first steps, which raised WARP's validation precision (pass an
        ``AdaGrad`` object to choose).
    user_identity, item_identity : bool, default=True
        With side features (``fit(X, user_features=..., item_features=...)``), add each
        user's (item's) identity as one more feature of weight 1: a user seen in training
        gets a vector of its own besides its features'. False: users (items) are their
        features alone, every user then needs at least one.
    user_history : bool or "auto", default="auto"
        Add the user's history term above to each user vector (one more table of
        ``n_items`` vectors; an optimizer with ``weight_decay`` is refused). With side
        features the history term is added to the features' sum, and the factor penalty
        applies to the feature rows and the :math:`y_m`. ``"auto"``: on for ``loss="warp"``
        (MovieLens 100K ``ua``: validation p@10 0.124 against 0.119 without; with side
        features 0.119 against 0.110, cold-item AUC 0.736 either way), off otherwise.
    n_negatives : int, default=1
        Negatives drawn per positive for ``loss="logistic"``.
    max_sampled : int, default=50
        Most negatives drawn per positive for ``loss="warp"``.
    random_state : int, RandomState instance or None, default=None
        Seeds initialization, shuffling and negative sampling: with ``n_jobs=1`` two fits
        with the same integer give the same model.
    n_jobs : int or None, default=None
        Threads. Above 1 they update the shared tables without locks (Hogwild): faster, not
        deterministic; each optimizer step then holds one entry per thread. -1: all of
        Numba's threads.
    device : {"cpu"}, default="cpu"
        Only the CPU is supported yet.
    verbose : int, default=0
        Above 0, print the mean training loss of each epoch.

    Attributes
    ----------
    n_features_in_ : int
        Number of items (columns of ``X``).
    n_users_, n_items_ : int
    global_mean_ : float
        :math:`\mu`: the mean training rating for ``loss="squared"``, else 0.
    rating_range_ : tuple of float
        Smallest and largest training value; squared-loss predictions are clipped to it.
    n_iter_ : int
        Epochs run by the last ``fit`` (plus one per later ``partial_fit``).
    optimizer_ : sparseopt.optim.Optimizer
        The optimizer used.
    factor_state_ : {"element", "row"}
        The factors' optimizer state (``factor_state`` resolved).
    tables_ : dict
        Trained state: weights with optimizer slots, stamps, clock, known interactions
        (what :meth:`save` writes).
    user_factors_, item_factors_ : ndarray of shape (n_users_ | n_items_, n_components)
        The vectors the scores use: with user histories, ``user_factors_`` holds
        :math:`p_u` plus the history term. With side features, the weighted sums of the
        features' vectors (``tables_`` holds one row per feature: the given feature columns,
        then the identities).
    history_factors_ : ndarray of shape (n_items_, n_components) or None
        The item history vectors :math:`y_m`; None without user histories.
    user_biases_, item_biases_ : ndarray of shape (n_users_ | n_items_,)
        With side features, the weighted sums of the features' biases.

    Notes
    -----
    Cold start: a user or item with no interaction (an empty row or column of ``X``, or one
    added by a larger ``partial_fit`` matrix) is scored by the biases alone, its factors
    ignored until it has interactions: an unknown user's recommendations rank items by
    :math:`b_i`. Ids outside ``[0, n_users_)`` or ``[0, n_items_)`` raise ``ValueError``.
    With side features (``fit(X, user_features=..., item_features=...)``) a user or item is
    scored from its features instead, also one never seen in training (``predict`` and
    ``recommend`` take their feature rows), as in LightFM (Kula, 2015).

    References
    ----------
    Koren, Bell and Volinsky, "Matrix factorization techniques for recommender systems",
    IEEE Computer, 2009. Rendle et al., "BPR: Bayesian personalized ranking from implicit
    feedback", UAI 2009. Weston, Bengio and Usunier, "WSABIE: scaling up to large vocabulary
    image annotation", IJCAI 2011. Koren, "Factorization meets the neighborhood", KDD 2008.
    Kabbur, Ning and Karypis, "FISM: factored item similarity models for top-N recommender
    systems", KDD 2013.
    Kula, "Metadata embeddings for user and item cold-start recommendations", CBRecSys 2015.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from sparseopt import MatrixFactorization
    >>> X = sp.random(50, 40, density=0.2, format="csr", random_state=0)
    >>> X.data = 1 + 4 * X.data  # ratings from 1 to 5 on the stored entries
    >>> mf = MatrixFactorization(n_components=8, random_state=0).fit(X)
    >>> mf.predict([0, 1], [3, 4]).shape
    (2,)
    >>> mf.predict(X).nnz == X.nnz  # X's entries scored, in a matrix shaped like X
    True
    >>> mf.recommend([0], n=5).shape
    (1, 5)
    """

    export_kind = "mf"  # the model sparseopt.export writes for it

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "loss": [StrOptions(set(K.LOSSES))],
        "optimizer": [StrOptions(set(optim.OPTIMIZERS) - {"ftrl"}), optim.Optimizer],
        "learning_rate": [
            StrOptions({"auto"}),
            Interval(Real, 0, None, closed="neither"),
            optim.Schedule,
        ],
        "alpha_factors": [Interval(Real, 0, None, closed="left")],
        "alpha_biases": [Interval(Real, 0, None, closed="left")],
        "max_iter": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "init_std": [Interval(Real, 0, None, closed="left")],
        "factor_state": [StrOptions({"auto", "element", "row"})],
        "user_history": [StrOptions({"auto"}), "boolean"],
        "user_identity": ["boolean"],
        "item_identity": ["boolean"],
        "n_negatives": [Interval(Integral, 1, None, closed="left")],
        "max_sampled": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "device": [StrOptions({"cpu", "auto", "cuda"})],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_components=32,
        *,
        loss="squared",
        optimizer="adagrad",
        learning_rate="auto",
        alpha_factors=0.1,
        alpha_biases=0.02,
        max_iter="auto",
        init_std=0.01,
        factor_state="auto",
        user_history="auto",
        user_identity=True,
        item_identity=True,
        n_negatives=1,
        max_sampled=50,
        random_state=None,
        n_jobs=None,
        device="cpu",
        verbose=0,
    ):
        self.n_components = n_components
        self.loss = loss
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.alpha_factors = alpha_factors
        self.alpha_biases = alpha_biases
        self.max_iter = max_iter
        self.init_std = init_std
        self.factor_state = factor_state
        self.user_history = user_history
        self.user_identity = user_identity
        self.item_identity = item_identity
        self.n_negatives = n_negatives
        self.max_sampled = max_sampled
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.device = device
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.n_jobs not in (None, 1)
        return tags

    # -- training --------------------------------------------------------------------------
    @_safety.unchanged_on_failure
    def fit(self, X: MatrixLike, y: None = None, *, user_features: MatrixLike | None = None,
            item_features: MatrixLike | None = None) -> Self:  # fmt: skip
        """Learn the factors of ``X`` from scratch: ``max_iter`` epochs.

        Parameters
        ----------
        X : sparse matrix of shape (n_users, n_items)
            Ratings (``loss="squared"``) or positive interaction weights; each stored entry
            is one observation (dense arrays are accepted: their nonzeros). No NaN or inf.
            A repeated (user, item) entry is refused for ratings (SciPy would sum 3 and 4
            into 7) and summed for the implicit losses (its weights add up).
        y : None
            Ignored.
        user_features : sparse matrix of shape (n_users, n_user_features), default=None
            Side features of the users (row ``u`` describes user ``u``): nonnegative weights,
            no NaN. With them (or ``item_features``) a user's bias and vector are the weighted
            sums of its features' (the identity among them unless ``user_identity=False``),
            and users unseen in training are scored from their features
            (:mod:`sparseopt.models._mf_features`). User histories are then off.
        item_features : sparse matrix of shape (n_items, n_item_features), default=None
            Side features of the items, likewise.

        Returns
        -------
        self
        """
        self._validate_params()
        return self._fit(X, _max_epochs(self.max_iter, self.loss), reset=True,
                         features=(user_features, item_features))  # fmt: skip

    @_safety.unchanged_on_failure
    def partial_fit(self, X: MatrixLike, y: None = None, *,
                    user_features: MatrixLike | None = None,
                    item_features: MatrixLike | None = None) -> Self:  # fmt: skip
        """One epoch over new interactions ``X``, keeping what was learnt.

        ``X`` has at least the fitted items as columns (fewer are refused, as scikit-learn
        refuses a changed number of features) and any number of rows: new users (rows) and
        items (columns) beyond those fitted get fresh factors. On an unfitted estimator it
        is :meth:`fit` with one epoch. If training fails (a diverging learning rate), a
        :class:`~sparseopt.DivergenceError` is raised and the fitted state is left as it
        was: the update runs on a copy of the tables, which costs O(model size) per call.

        Parameters
        ----------
        X : sparse matrix of shape (n_users, n_items)
        y : None
            Ignored.
        user_features, item_features : sparse matrix, default=None
            For a model fitted with side features: the features of every user (item) of the
            grown model, old and new, with the fitted feature columns (see :meth:`fit`).
            None keeps the fitted rows; new users (items) then have their identity alone.

        Returns
        -------
        self
        """
        self._validate_params()
        return self._fit(X, 1, reset=not hasattr(self, "tables_"),
                         features=(user_features, item_features))  # fmt: skip

    def _fit(self, X, n_epochs, reset, features=(None, None)):
        """``n_epochs`` over ``X`` through the training protocol, from fresh tables
        (``reset``) or from the fitted ones, grown to the users and items of ``X``."""
        X = _check_interactions(X, self.loss, self)
        training = self._start(X, reset, features)
        rows = training._rows(X)
        what = f"MatrixFactorization ({self.loss}, {type(training.optimizer).__name__})"

        def train_epoch(epoch):
            start, compiling = time.perf_counter(), compile_seconds()
            with compile_notice(what, self.verbose):
                loss = training.epoch(rows, training.order(rows, training.rng)) / max(X.nnz, 1)
            seconds = time.perf_counter() - start - (compile_seconds() - compiling)
            if self.verbose:
                print(
                    f"epoch {epoch + 1}/{n_epochs}: mean loss {loss:.5f} "
                    f"({seconds:.3f} s, compiling not counted)"
                )
            return loss

        curve = run_epochs(train_epoch, n_epochs)
        with compile_notice(what, self.verbose):
            training.catch_up()
        return training.finish(curve, rows=rows)

    def start_training(self, X, *, classes=None, reset=True, in_place=False,
                       user_features=None, item_features=None) -> MFTraining:  # fmt: skip
        """Begin training (the protocol of :mod:`sparseopt.estimators._base`).

        Parameters
        ----------
        X : sparse matrix of shape (n_users, n_items)
            Every interaction training will see (a Dask fit gathers them: the model keeps
            them, to sample negatives, recommend unseen items and sum user histories).
        classes : None
            Ignored.
        reset : bool
            Start from new tables; False: grow the fitted ones to X's users and items.
        in_place : bool
            Ignored: training always runs on a copy of the fitted tables.
        user_features, item_features : sparse matrix, default=None
            Side features, as :meth:`fit` and :meth:`partial_fit` take them.
        """
        self._validate_params()
        return self._start(_check_interactions(X, self.loss, self), reset,
                           (user_features, item_features))  # fmt: skip

    def _start(self, X, reset, features=(None, None)) -> MFTraining:
        """:meth:`start_training` on a checked X."""
        opt = self._make_optimizer()
        n_threads = self._n_threads()  # device and n_jobs refused before any work
        rng = check_random_state(self.random_state)
        begin = self._new_state if reset else self._continued_state
        state, per_row, mu, rating_range, n_iter = begin(X, opt, rng, features)
        _count_interactions(state, X)
        training = FeatureMFTraining if "user_map" in state else MFTraining
        return training(self, opt, state, per_row, mu, rating_range, n_iter, rng, n_threads)

    def _new_state(self, X, opt, rng, features):
        """Fresh tables for the users and items of X (one row per side feature with
        ``features``), and the global mean and rating range of its ratings."""
        k = self.n_components
        per_row = _optimizer_param.per_row(self.factor_state, opt)
        n_users, n_items = X.shape
        # with side features the tables hold one row per feature, read through the maps
        with_features = any(f is not None for f in features)
        maps = _feature_maps(self, features, X.shape) if with_features else {}
        n_user_rows, n_item_rows = (
            (maps["user_map"].shape[1], maps["item_map"].shape[1]) if maps else X.shape
        )
        _safety.check_table_size(
            self._tables_nbytes(opt, per_row, n_user_rows, n_item_rows), "the model"
        )
        state = {
            "user": _new_side(n_user_rows, k, opt, rng, self.init_std, per_row),
            "item": _new_side(n_item_rows, k, opt, rng, self.init_std, per_row),
            "clock": np.zeros(R.CLOCK_SIZE),
            "seen": sp.csr_matrix((n_users, n_items), dtype=np.float32),
            **maps,
        }
        if self._user_history():
            state["history"] = _new_side(n_items, k, opt, rng, self.init_std, per_row)
        mu = float(X.data.mean()) if self.loss == "squared" else 0.0
        rating_range = float(X.data.min()), float(X.data.max())
        n_iter = 0
        return state, per_row, mu, rating_range, n_iter

    def _continued_state(self, X, opt, rng, features):
        """The fitted tables grown to the users and items of X (new rows drawn as a fresh
        fit draws them, their accumulators caught up to the model's clock), and the mean,
        rating range and epoch count carried on."""
        check_is_fitted(self)
        k = self.n_components
        if X.shape[1] < self.n_items_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_items_} features as input: its columns are the fitted items "
                f"(more columns add new items); call fit to start over"
            )
        self._check_continued(opt)
        per_row = self.factor_state_ == "row"
        old = self.tables_
        n_users, n_items = max(X.shape[0], self.n_users_), X.shape[1]
        maps = {}
        if "user_map" in old:  # the feature tables grow by the new identity rows
            maps = grown_maps(old, features, n_users, n_items)
        elif any(f is not None for f in features):
            raise ValueError(
                "the model was fitted without side features: call fit(X, "
                "user_features=..., item_features=...) to start over with them"
            )
        n_rows = ({"user": maps["user_map"].shape[1], "item": maps["item_map"].shape[1]}
                  if maps else {"user": n_users})  # fmt: skip
        _safety.check_table_size(
            self._tables_nbytes(
                opt, per_row, n_rows["user"], n_rows.get("item", n_items), "history" in old
            ),
            "the model",
        )
        clock = old["clock"].copy()
        t, log_decay = clock[R.CLOCK_T], clock[R.CLOCK_LOG_DECAY]
        # the fitted model's structure (its history table), whatever user_history says now
        state = {
            name: _grow(old[name].copy(), n_rows.get(name, n_items), k, opt, rng,
                        self.init_std, per_row, t, log_decay)
            for name in SIDES if name in old
        }  # fmt: skip
        state.update(clock=clock, seen=_resize(old["seen"], (n_users, n_items)), **maps)
        mu, n_iter = self.global_mean_, self.n_iter_
        lo, hi = self.rating_range_
        rating_range = min(lo, float(X.data.min())), max(hi, float(X.data.max()))
        return state, per_row, mu, rating_range, n_iter

    # -- checks at the kernels' boundary (see sparseopt.estimators._safety) ----------------
    def _tables_nbytes(self, opt, per_row, n_users, n_items, history=None) -> int:
        """Bytes of the tables of ``n_users`` x ``n_items``, counted before allocating them."""
        k, width = self.n_components, 1 + opt.initial_slots().size
        history = self._user_history() if history is None else history
        n_rows = n_users + n_items * (2 if history else 1)
        per_row_bytes = 4 * (width + (k + 1 if per_row else k * width)) + 8
        return n_rows * (per_row_bytes + (16 if opt.needs_stamp else 0))

    def _check_continued(self, opt):
        """Raise ValueError unless the fitted state carries over to ``opt``, the optimizer of
        the current parameters (a new learning rate applies)."""
        fitted = self.optimizer_
        if type(opt) is not type(fitted) or opt.needs_stamp != fitted.needs_stamp:
            raise ValueError(
                f"optimizer {type(opt).__name__} (weight_decay={opt.weight_decay}) differs "
                f"from {type(fitted).__name__} (weight_decay={fitted.weight_decay}), which the "
                f"model was fitted with: its state does not carry over; set the optimizer back "
                f"to continue training, or call fit to start over"
            )
        self._check_params_match_state()

    def _check_params_match_state(self):
        """``n_components`` against the fitted tables, before they are read or trained."""
        k, per_row = self.n_components, self.factor_state_ == "row"
        for name in SIDES:
            if name in self.tables_:
                side = self.tables_[name]
                shape = (side.n_rows, k + 1) if per_row else (side.n_rows * k, side.bias.shape[1])
                if side.factors.shape != shape:
                    raise ValueError(
                        f"n_components={k} differs from the fitted model's factors "
                        f"({name} table of shape {side.factors.shape}): set it back, or call "
                        f"fit to start over"
                    )

    # -- validation ------------------------------------------------------------------------
    def _make_optimizer(self):
        rate = _DEFAULT_LEARNING_RATE.get(self.loss, _IMPLICIT_LEARNING_RATE)
        rates = dict.fromkeys(optim.OPTIMIZERS, rate)
        opt = _optimizer_param.named_optimizer(self.optimizer, self.learning_rate, rates)
        _optimizer_param.refuse_ftrl(opt, type(self).__name__)
        if isinstance(self.optimizer, str) and self.loss == "warp" and isinstance(opt, AdaGrad):
            opt.set_params(initial_accumulator_value=_WARP_INITIAL_ACCUMULATOR)
        if self._user_history() and opt.weight_decay > 0:
            raise ValueError(
                "user_history needs an optimizer without weight_decay (the decay would shrink "
                "the history term held in the user's vector during its steps); set "
                "weight_decay=0 and use alpha_factors, or user_history=False"
            )
        _optimizer_param.per_row(self.factor_state, opt)  # factor_state="row" needs AdaGrad
        return validated(opt)

    def _user_history(self) -> bool:
        if self.user_history == "auto":
            return self.loss == "warp"
        return bool(self.user_history)

    def _check_ids(self, ids, n, name):
        ids = np.asarray(ids)
        if ids.ndim == 0:
            ids = ids.reshape(1)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"{name} must be a 1-D array of integer ids, got {ids!r:.80}")
        bad = (ids < 0) | (ids >= n)
        if bad.any():
            raise ValueError(
                f"{name} contains {ids[bad][0]}, out of range for {n} known "
                f"{name.split('_')[0]}s (ids are 0 .. {n - 1})"
            )
        return ids.astype(np.int64)

    # -- the learnt model ------------------------------------------------------------------
    def _factors(self, side: str) -> np.ndarray:
        """A side's factors as a new (n_rows, n_components) float32 array."""
        self._check_params_match_state()
        s, k = self.tables_[side], self.n_components
        if self.factor_state_ == "row":
            return s.factors[:, :k].copy()
        return s.factors[:, 0].reshape(s.n_rows, k).copy()

    def _user_vectors(self) -> np.ndarray:
        """The users' vectors as scored: :math:`p_u` plus the history term (float64)."""
        return self._factors("user").astype(np.float64) + self._history_term()

    def _history_term(self):
        r""":math:`|N(u)|^{-1/2} \sum_{m \in N(u)} y_m` of every fitted user (float64; 0
        without user histories)."""
        if "history" not in self.tables_:
            return 0.0
        seen = self.tables_["seen"]
        scale = 1.0 / np.sqrt(np.maximum(np.diff(seen.indptr), 1))
        return sp.diags(scale) @ (seen @ self._factors("history").astype(np.float64))

    def _weights(self, side: str, features=None):
        """(biases, vectors) of a side as float64, vectors of cold rows zeroed; with side
        features, of the rows the map reads, or of the rows of ``features`` (new users or
        items, scored from their features alone)."""
        s = self.tables_[side]
        if f"{side}_map" in self.tables_:
            rows = self.tables_[f"{side}_map"]
            if features is not None:  # new users or items: no history
                n_columns = int(self.tables_["feature_columns"][int(side == "item")])
                rows = new_rows_map(features, f"{side}_features", rows, n_columns)
            biases, vectors = mapped_weights(s.bias[:, 0], self._factors(side), s.counts, rows)
            if side == "user" and features is None:
                vectors += self._history_term()
            return biases, vectors
        if features is not None:
            raise ValueError(
                f"the model was fitted without side features: {side}_features are unknown "
                f"to it (fit with {side}_features=... to score new {side}s)"
            )
        factors = self._user_vectors() if side == "user" else self._factors(side).astype(np.float64)
        factors[s.counts == 0] = 0.0
        return s.bias[:, 0].astype(np.float64), factors

    def _fitted_weights(self, side: str, part: int) -> np.ndarray:
        """``{side}_biases_`` (``part`` 0) or ``{side}_factors_`` (1), float32."""
        check_is_fitted(self)
        if f"{side}_map" in self.tables_:
            return self._weights(side)[part].astype(np.float32)
        if part == 0:
            return self.tables_[side].bias[:, 0].copy()
        return self._user_vectors().astype(np.float32) if side == "user" else self._factors(side)

    user_biases_ = property(lambda self: self._fitted_weights("user", 0))
    item_biases_ = property(lambda self: self._fitted_weights("item", 0))
    user_factors_ = property(lambda self: self._fitted_weights("user", 1))
    item_factors_ = property(lambda self: self._fitted_weights("item", 1))

    @property
    def history_factors_(self) -> np.ndarray | None:
        check_is_fitted(self)
        return self._factors("history") if "history" in self.tables_ else None

    def predict(
        self, user_ids: ArrayLike | MatrixLike, item_ids: ArrayLike | None = None, *,
        user_features: MatrixLike | None = None, item_features: MatrixLike | None = None,
    ) -> np.ndarray | sp.csr_matrix | sp.csr_array:  # fmt: skip
        """The score :math:`s_{ui}` of (user, item) pairs (a rating for ``loss="squared"``).

        Two forms: ``predict(user_ids, item_ids)`` scores the pairs
        ``(user_ids[n], item_ids[n])``; ``predict(X)`` scores the stored entries of a matrix
        shaped like the training one (row ``u``, column ``i``: the pair ``(u, i)``) and
        returns ``X`` with each stored value replaced by its score, so that a test matrix
        and its predictions line up entry by entry. Squared-loss predictions are clipped to
        ``rating_range_``.

        Parameters
        ----------
        user_ids : array-like of int of shape (n_pairs,), or matrix of shape (n_rows, n_items_)
            With ``item_ids``: the users of the pairs. Alone: ``X``, whose stored entries
            (nonzeros of a dense array) are the pairs; its columns are the fitted items and
            its rows the first ``n_rows <= n_users_`` users. No NaN or inf.
        item_ids : array-like of int of shape (n_pairs,), default=None
            The items of the pairs.
        user_features, item_features : sparse matrix, default=None
            For a model fitted with side features: users (items) described by their features
            alone, one row each, with the fitted feature columns; ``user_ids``
            (``item_ids``) then index its rows. Users and items unseen in training are
            scored this way.

        Returns
        -------
        ndarray of shape (n_pairs,), or matrix of shape (n_rows, n_items_), float64
            For ``X``: a CSR matrix (a CSR array if ``X`` is a sparse array) with the
            structure of ``X`` (duplicates summed), or for a dense ``X`` an array with the
            scores at its nonzeros and 0 elsewhere.
        """
        check_is_fitted(self)
        if item_ids is None:
            if user_features is not None or item_features is not None:
                raise ValueError("user_features and item_features need user_ids and item_ids")
            return self._predict_matrix(user_ids)
        bu, pu = self._weights("user", user_features)
        bi, qi = self._weights("item", item_features)
        users = self._check_ids(user_ids, bu.shape[0], "user_ids")
        items = self._check_ids(item_ids, bi.shape[0], "item_ids")
        if users.shape != items.shape:
            raise ValueError(
                f"user_ids and item_ids differ in length: {users.size} != {items.size}"
            )
        return self._scores(users, items, (bu, pu), (bi, qi))

    def _scores(self, users, items, user_weights=None, item_weights=None) -> np.ndarray:
        """The scores of the pairs ``(users[n], items[n])``, ids already checked; the
        sides' (biases, vectors) if already computed."""
        bu, pu = user_weights or self._weights("user")
        bi, qi = item_weights or self._weights("item")
        s = self.global_mean_ + bu[users] + bi[items] + np.einsum("ij,ij->i", pu[users], qi[items])
        if self.loss == "squared":
            s = np.clip(s, *self.rating_range_)
        return s

    def _predict_matrix(self, X):
        """``predict(X)``: ``X`` with its stored entries replaced by their scores."""
        if sp.issparse(X):
            _safety.check_sparse_structure(X)
        container = sp.csr_array if isinstance(X, sp.sparray) else sp.csr_matrix
        try:
            X = check_array(X, estimator=self, **_ACCEPT)
        except ValueError as exc:
            if "Reshape your data" not in str(exc):
                raise
            raise ValueError(
                f"{exc} To score (user, item) pairs, pass item_ids too: "
                f"predict(user_ids, item_ids)."
            ) from None
        n_rows, n_cols = X.shape
        if n_cols != self.n_items_:
            raise ValueError(
                f"X has {n_cols} features, but {type(self).__name__} is expecting "
                f"{self.n_items_} features as input (its columns are the fitted items)"
            )
        if n_rows > self.n_users_:
            raise ValueError(
                f"X has {n_rows} rows, but {type(self).__name__} was fitted on "
                f"{self.n_users_} users (its rows are users 0 .. {self.n_users_ - 1})"
            )
        if not sp.issparse(X):
            users, items = np.nonzero(X)
            out = np.zeros(X.shape)
            out[users, items] = self._scores(users, items)
            return out
        X = sp.csr_matrix(X)  # check_array may return the input itself: never edit it
        if not X.has_canonical_format:
            X = X.copy()
            X.sum_duplicates()
        users = np.repeat(np.arange(n_rows), np.diff(X.indptr))
        items = X.indices.astype(np.int64)
        scores = self._scores(users, items)
        return container((scores, X.indices.copy(), X.indptr.copy()), shape=X.shape)

    def recommend(
        self, user_ids: ArrayLike | None = None, n: int = 10, exclude_seen: bool = True, *,
        user_features: MatrixLike | None = None, item_features: MatrixLike | None = None,
    ) -> np.ndarray:  # fmt: skip
        """The ``n`` best-scored items of each user, best first.

        Parameters
        ----------
        user_ids : array-like of int, shape (n_users,), default=None
            Fitted users; with ``user_features``, rows of it (None: every row).
        n : int, default=10
        exclude_seen : bool, default=True
            Leave out the items a user interacted with in training (fitted users and items
            only).
        user_features : sparse matrix of shape (n_new_users, n_user_features), default=None
            For a model fitted with side features: users described by their features alone
            (one row each, the fitted feature columns), such as users unseen in training:
            ``recommend(user_features=row)``.
        item_features : sparse matrix of shape (n_new_items, n_item_features), default=None
            Candidate items described by their features alone, in place of the fitted items;
            the returned ids are then rows of it.

        Returns
        -------
        ndarray of shape (n_users, n), int64
            Item ids; ``-1`` fills the places beyond the user's candidate items.
        """
        check_is_fitted(self)
        if not isinstance(n, Integral) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        _, pu = self._weights("user", user_features)
        bi, qi = self._weights("item", item_features)
        if user_ids is None and user_features is None:
            raise ValueError("recommend needs user_ids, or user_features of new users")
        users = (np.arange(pu.shape[0]) if user_ids is None
                 else self._check_ids(user_ids, pu.shape[0], "user_ids"))  # fmt: skip
        # what a user interacted with is known of fitted users and items only
        exclude_seen = exclude_seen and user_features is None and item_features is None
        seen = self.tables_["seen"]
        n_items = bi.shape[0]
        out = np.full((users.size, n), -1, dtype=np.int64)
        m = min(n, n_items)
        chunk = max(1, (1 << 22) // max(n_items, 1))
        for start in range(0, users.size, chunk):
            rows = users[start : start + chunk]
            scores = pu[rows] @ qi.T + bi
            if exclude_seen:
                part = seen[rows]
                scores[
                    np.repeat(np.arange(rows.size), np.diff(part.indptr)), part.indices
                ] = -np.inf
            out[start : start + rows.size, :m] = _best(scores, m)
        return out

    def similar_items(self, item_ids: ArrayLike, n: int = 10) -> np.ndarray:
        """The ``n`` items whose factors are closest in cosine to each item's, best first.

        Cold items (no interactions) have no factors: they are similar to nothing and
        come last, as ``-1``.

        Parameters
        ----------
        item_ids : array-like of int, shape (n_queries,)
        n : int, default=10

        Returns
        -------
        ndarray of shape (n_queries, n), int64
            Item ids, the query item itself excluded; ``-1`` where fewer candidates exist.
        """
        check_is_fitted(self)
        items = self._check_ids(item_ids, self.n_items_, "item_ids")
        if not isinstance(n, Integral) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        _, q = self._weights("item")
        norms = np.linalg.norm(q, axis=1)
        unit = np.divide(q, norms[:, None], out=np.zeros_like(q), where=norms[:, None] > 0)
        sims = unit[items] @ unit.T
        sims[:, norms == 0] = -np.inf
        sims[np.arange(items.size), items] = -np.inf
        m = min(n, self.n_items_)
        out = np.full((items.size, n), -1, dtype=np.int64)
        out[:, :m] = _best(sims, m)
        return out

    # -- persistence -----------------------------------------------------------------------
    def _saved(self):
        """The arrays and scalar attributes that :meth:`save` writes."""
        arrays = {}
        if "user_map" in self.tables_:
            arrays.update(saved_maps(self.tables_))
        for name in SIDES:
            if name not in self.tables_:
                continue
            for f in fields(_Side):
                arrays[f"{name}_{f.name}"] = getattr(self.tables_[name], f.name)
        seen = self.tables_["seen"]
        arrays.update(
            clock=self.tables_["clock"],
            seen_indptr=seen.indptr,
            seen_indices=seen.indices,
            seen_shape=np.array(seen.shape, dtype=np.int64),
        )
        attributes = {
            "optimizer_": self.optimizer_,
            "global_mean_": self.global_mean_,
            "rating_range_": list(self.rating_range_),
            "n_iter_": self.n_iter_,
            "factor_state_": self.factor_state_,
        }
        return arrays, attributes

    @classmethod
    def _from_file(cls, params, attributes, arrays):
        """The model a file describes, every array checked against the shapes the metadata
        implies before any reaches a kernel."""
        # files written before "auto" hold None for these parameters, in the same meaning
        params = {k: "auto" if v is None and k in ("learning_rate", "max_iter") else v
                  for k, v in params.items()}  # fmt: skip
        model = cls(**params)
        model._validate_params()
        model._make_optimizer()  # the parameters must make an optimizer, as for a fit
        attributes = _io.check_attributes(attributes, {
            "optimizer_": _io.instance_of(optim.Optimizer),
            "global_mean_": (lambda v: _io.NUMBER[0](v) and math.isfinite(v), "a finite number"),
            "rating_range_": (
                lambda v: _io.NUMBERS[0](v) and len(v) == 2 and -np.inf < v[0] <= v[1] < np.inf,
                "[lowest, highest], finite",
            ),
            "n_iter_": _io.COUNT,
        }, optional={
            "factor_state_": (lambda v: v in ("element", "row"), "'element' or 'row'"),
        })  # fmt: skip
        # the tables are checked against the optimizer they were fitted with: an optimizer
        # set after fitting (set_params, then save) loads as it stood in memory, where
        # partial_fit refuses it until it is set back
        fitted = attributes["optimizer_"]
        fitted.hyperparameters()
        fitted.schedule_spec()
        per_row = attributes.get("factor_state_", "element") == "row"
        if per_row and not isinstance(fitted, optim.AdaGrad):
            raise ValueError("factor_state_='row' needs an AdaGrad optimizer_")
        names = [n for n in SIDES if n != "history" or "history_bias" in arrays]
        expected = {f"{n}_{f.name}" for n in names for f in fields(_Side)}
        expected |= {"clock", "seen_indptr", "seen_indices", "seen_shape"}
        with_features = "feature_columns" in arrays
        if with_features:
            expected |= set(MAP_KEYS)
        if set(arrays) != expected:
            raise ValueError(
                f"arrays {sorted(arrays)} do not fit a {cls.__name__} (expected {sorted(expected)})"
            )
        check = _safety.check_array
        shape = check("seen_shape", arrays["seen_shape"], (2,), np.int64).tolist()
        maps = loaded_maps(arrays, shape) if with_features else {}
        sides = _loaded_sides(arrays, names, shape, model.n_components, fitted, per_row, maps)
        indptr = check("seen_indptr", arrays["seen_indptr"], None, (np.int32, np.int64))
        indices = check("seen_indices", arrays["seen_indices"], None, (np.int32, np.int64))
        if indptr.ndim != 1 or indices.ndim != 1 or indptr.shape[0] != shape[0] + 1:
            raise ValueError(f"seen_indptr and seen_indices do not fit seen_shape {shape}")
        data = np.ones(indices.size, np.float32)
        seen = sp.csr_matrix((data, indices, indptr), shape=tuple(shape))
        _safety.check_sparse_structure(seen)
        if seen.nnz != indices.size or not seen.has_canonical_format:
            raise ValueError("seen_indices are not sorted and distinct within each user")
        if not all(np.isfinite(a).all() for v in sides.values() for a in (v.bias, v.factors)):
            raise ValueError("the weights are not all finite")
        counts = _table_counts(seen, maps)
        if any(not np.array_equal(sides[n].counts, counts[n]) for n in names):
            raise ValueError("the tables' counts do not match the seen interactions")
        state = {**sides, "clock": check("clock", arrays["clock"], (R.CLOCK_SIZE,), np.float64),
                 "seen": seen, **maps}  # fmt: skip
        mu, rating_range = float(attributes["global_mean_"]), tuple(attributes["rating_range_"])
        # a fit sets the mean of the ratings (inside their range) for the squared loss, and 0
        # for the ranking losses; later fits only widen the range
        if model.loss == "squared" and not rating_range[0] <= mu <= rating_range[1]:
            raise ValueError(
                f"attribute global_mean_ {mu!r} lies outside rating_range_ {list(rating_range)}"
            )
        if model.loss != "squared" and mu != 0.0:
            raise ValueError(
                f"attribute global_mean_ must be 0 for loss={model.loss!r}, got {mu!r}"
            )
        _set_fitted(model, state, fitted, per_row, mu, rating_range, int(attributes["n_iter_"]))
        return model


def _feature_maps(model, features, shape) -> dict:
    """The feature maps of users and items (:func:`._mf_features.feature_map`)."""
    maps, columns = {}, []
    for side, F, n in zip(("user", "item"), features, shape, strict=True):
        maps[f"{side}_map"] = feature_map(F, f"{side}_features", n,
                                          getattr(model, f"{side}_identity"))  # fmt: skip
        # the given feature columns (the identity columns follow them)
        columns.append(0 if F is None else F.shape[1])
    return {**maps, "feature_columns": np.array(columns, dtype=np.int64)}


def _loaded_sides(arrays, names, shape, k, fitted, per_row, maps=None) -> dict:
    """The sides ``names`` of a model file's ``arrays``, each checked against the shapes
    that ``shape`` (users, items), ``k``, the optimizer ``fitted`` and ``per_row`` imply."""
    check = _safety.check_array
    n_rows = {"user": shape[0], "item": shape[1], "history": shape[1]}
    if maps:  # side features: one table row per column of the map
        n_rows.update(user=maps["user_map"].shape[1], item=maps["item_map"].shape[1])
    width = 1 + fitted.initial_slots().size
    sides = {}
    for name in names:
        n = n_rows[name]
        if n < 1:
            raise ValueError(f"seen_shape {shape} has no {name}s")
        stamped = n if fitted.needs_stamp else 0
        sides[name] = _Side(
            check(f"{name}_bias", arrays[f"{name}_bias"], (n, width), np.float32),
            check(f"{name}_factors", arrays[f"{name}_factors"],
                  (n, k + 1) if per_row else (n * k, width), np.float32),
            check(f"{name}_stamp", arrays[f"{name}_stamp"], (stamped,), np.float64),
            check(f"{name}_mark", arrays[f"{name}_mark"], (stamped,), np.float64),
            check(f"{name}_counts", arrays[f"{name}_counts"], (n,), np.int64),
        )  # fmt: skip
    return sides


def _best(scores, m):
    """The columns of the ``m`` highest scores of each row, best first (ties: the lower
    column), ``-1`` for a score of ``-inf`` (excluded)."""
    top = np.argpartition(-scores, m - 1, axis=1)[:, :m]
    top_scores = np.take_along_axis(scores, top, axis=1)
    rank = np.lexsort((top, -top_scores), axis=1)
    top = np.take_along_axis(top, rank, axis=1)
    top[np.take_along_axis(top_scores, rank, axis=1) == -np.inf] = -1
    return top


__all__ = ["MFTraining", "MatrixFactorization"]
