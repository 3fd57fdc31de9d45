"""Matrix factorization for explicit ratings and implicit feedback, trained with lazy rules."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from numbers import Integral, Real
from typing import TYPE_CHECKING

import numba
import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted

from .. import _io, optim
from .._io import save_model
from .._jit import compile_notice, compile_seconds
from ..models import _mf as K
from ..optim import _rules as R
from . import _safety
from ._linear import DivergenceError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from typing_extensions import Self

    from .._typing import FilePath, MatrixLike

# Defaults by loss, picked on validation splits cut from the training files only (20% of
# u1.base for the squared loss; ten ratings per user of ua.base for WARP), never on a test
# file (benchmarks/README.md): five epochs at rate 0.08 fit MovieLens 100K's ratings as well
# as fifteen at 0.05; WARP (with user histories) learns best in twenty epochs at rate 0.04
# with AdaGrad's accumulators starting at 10, which damps its first, largest steps (LightFM
# starts them at 1).
_DEFAULT_LEARNING_RATE = {"squared": 0.08, "warp": 0.04}
_DEFAULT_MAX_ITER = {"squared": 5, "warp": 20}
_IMPLICIT_LEARNING_RATE = 0.05
_IMPLICIT_MAX_ITER = 15
_WARP_INITIAL_ACCUMULATOR = 10.0
# the tables of a model: user rows, item rows and, with user_history, the item history rows
SIDES = ("user", "item", "history")


@dataclass
class _Side:
    """The tables of one side (users or items), laid out as :mod:`sparseopt.models._mf` reads.

    ``counts[x]`` is the number of known interactions of row ``x``: rows with none are
    cold and scored by their bias alone.
    """

    bias: np.ndarray
    factors: np.ndarray
    stamp: np.ndarray
    mark: np.ndarray
    counts: np.ndarray

    def kernel_view(self):
        return (self.bias, self.factors, self.stamp, self.mark)

    def copy(self) -> _Side:
        return _Side(*(getattr(self, f.name).copy() for f in fields(self)))

    @property
    def n_rows(self) -> int:
        return self.bias.shape[0]


def _new_side(n_rows, n_components, opt, rng, init_std, per_row) -> _Side:
    slots = opt.initial_slots().astype(np.float32)
    bias = np.zeros((n_rows, 1 + slots.size), np.float32)
    bias[:, 1:] = slots
    init = rng.normal(0.0, init_std, n_rows * n_components)
    if per_row:  # the k factors, then the shared AdaGrad accumulator
        factors = np.empty((n_rows, n_components + 1), np.float32)
        factors[:, :n_components] = init.reshape(n_rows, n_components)
        factors[:, n_components] = slots[0]
    else:
        factors = np.zeros((n_rows * n_components, 1 + slots.size), np.float32)
        factors[:, 1:] = slots
        factors[:, 0] = init
    size = n_rows if opt.needs_stamp else 0
    return _Side(bias, factors, np.zeros(size), np.zeros(size), np.zeros(n_rows, dtype=np.int64))


def _grow(side: _Side, n_rows, n_components, opt, rng, init_std, per_row, t, log_decay):
    """``side`` with fresh rows appended up to ``n_rows`` (stamped at the current step)."""
    extra = n_rows - side.n_rows
    if extra <= 0:
        return side
    new = _new_side(extra, n_components, opt, rng, init_std, per_row)
    new.stamp[:] = t
    new.mark[:] = log_decay
    return _Side(
        *(np.concatenate([getattr(side, f.name), getattr(new, f.name)]) for f in fields(side))
    )


class MatrixFactorization(BaseEstimator):
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
    learning_rate : float, sparseopt.optim.Schedule or None, default=None
        The optimizer's rate. None: for a named optimizer 0.08 with ``loss="squared"``, 0.04
        with ``"warp"``, 0.05 otherwise; the object's own rate for an optimizer object.
    alpha_factors : float, default=0.1
        L2 penalty :math:`\alpha_f` of the factors.
    alpha_biases : float, default=0.02
        L2 penalty :math:`\alpha_b` of the biases.
    max_iter : int or None, default=None
        Passes over the data in ``fit`` (``partial_fit`` makes one). None: 5 with
        ``loss="squared"``, 20 with ``"warp"``, 15 otherwise.
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
    user_history : bool or "auto", default="auto"
        Add the user's history term above to each user vector (one more table of
        ``n_items`` vectors; an optimizer with ``weight_decay`` is refused). ``"auto"``: on
        for ``loss="warp"`` (MovieLens 100K ``ua``: validation p@10 0.124 against 0.119
        without), off otherwise.
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
        :math:`p_u` plus the history term.
    history_factors_ : ndarray of shape (n_items_, n_components) or None
        The item history vectors :math:`y_m`; None without user histories.
    user_biases_, item_biases_ : ndarray of shape (n_users_ | n_items_,)

    Notes
    -----
    Cold start: a user or item with no interaction (an empty row or column of ``X``, or one
    added by a larger ``partial_fit`` matrix) is scored by the biases alone, its factors
    ignored until it has interactions: an unknown user's recommendations rank items by
    :math:`b_i`. Ids outside ``[0, n_users_)`` or ``[0, n_items_)`` raise ``ValueError``.

    References
    ----------
    Koren, Bell and Volinsky, "Matrix factorization techniques for recommender systems",
    IEEE Computer, 2009. Rendle et al., "BPR: Bayesian personalized ranking from implicit
    feedback", UAI 2009. Weston, Bengio and Usunier, "WSABIE: scaling up to large vocabulary
    image annotation", IJCAI 2011. Koren, "Factorization meets the neighborhood", KDD 2008.
    Kabbur, Ning and Karypis, "FISM: factored item similarity models for top-N recommender
    systems", KDD 2013.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from sparseopt import MatrixFactorization
    >>> X = sp.random(50, 40, density=0.2, format="csr", random_state=0)
    >>> X.data = 1 + 4 * X.data  # ratings from 1 to 5 on the stored entries
    >>> mf = MatrixFactorization(n_components=8, random_state=0).fit(X)
    >>> mf.predict([0, 1], [3, 4]).shape
    (2,)
    >>> mf.recommend([0], n=5).shape
    (1, 5)
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "loss": [StrOptions(set(K.LOSSES))],
        "optimizer": [StrOptions(set(optim.OPTIMIZERS) - {"ftrl"}), optim.Optimizer],
        "learning_rate": [Interval(Real, 0, None, closed="neither"), optim.Schedule, None],
        "alpha_factors": [Interval(Real, 0, None, closed="left")],
        "alpha_biases": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left"), None],
        "init_std": [Interval(Real, 0, None, closed="left")],
        "factor_state": [StrOptions({"auto", "element", "row"})],
        "user_history": [StrOptions({"auto"}), "boolean"],
        "n_negatives": [Interval(Integral, 1, None, closed="left")],
        "max_sampled": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "device": [StrOptions({"cpu"})],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_components=32,
        *,
        loss="squared",
        optimizer="adagrad",
        learning_rate=None,
        alpha_factors=0.1,
        alpha_biases=0.02,
        max_iter=None,
        init_std=0.01,
        factor_state="auto",
        user_history="auto",
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
        self.n_negatives = n_negatives
        self.max_sampled = max_sampled
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.device = device
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.non_deterministic = self.n_jobs not in (None, 1)
        return tags

    # -- training --------------------------------------------------------------------------
    @_safety.unchanged_on_failure
    def fit(self, X: MatrixLike, y: None = None) -> Self:
        """Learn the factors of ``X`` from scratch.

        Parameters
        ----------
        X : sparse matrix of shape (n_users, n_items)
            Ratings (``loss="squared"``) or positive interaction weights; each stored entry
            is one observation (dense arrays are accepted: their nonzeros). No NaN or inf.
            A repeated (user, item) entry is refused for ratings (SciPy would sum 3 and 4
            into 7) and summed for the implicit losses (its weights add up).
        y : None
            Ignored.

        Returns
        -------
        self
        """
        self._validate_params()
        X = self._check_X(X)
        opt = self._resolve_optimizer()
        per_row = self._per_row(opt)
        rng = check_random_state(self.random_state)
        n_users, n_items = X.shape
        k = self.n_components
        _safety.check_table_size(self._tables_nbytes(opt, per_row, n_users, n_items), "the model")
        state = {
            "user": _new_side(n_users, k, opt, rng, self.init_std, per_row),
            "item": _new_side(n_items, k, opt, rng, self.init_std, per_row),
            "clock": np.zeros(R.CLOCK_SIZE),
            "seen": sp.csr_matrix((n_users, n_items), dtype=np.float32),
        }
        if self._user_history():
            state["history"] = _new_side(n_items, k, opt, rng, self.init_std, per_row)
        mu = float(X.data.mean()) if self.loss == "squared" else 0.0
        lo, hi = float(X.data.min()), float(X.data.max())
        max_iter = self._max_iter()
        self._train(state, X, opt, per_row, max_iter, rng, mu)
        self._refuse_useless(state, opt, per_row, max(abs(lo), abs(hi)))
        self._set_state(state, opt, per_row, mu, (lo, hi), max_iter)
        return self

    @_safety.unchanged_on_failure
    def partial_fit(self, X: MatrixLike, y: None = None) -> Self:
        """One epoch over new interactions ``X``, keeping what was learnt.

        ``X`` may be larger than the matrices seen so far: new users (rows) and items
        (columns) get fresh factors. On an unfitted estimator it is one epoch of
        :meth:`fit`. If training fails (a diverging learning rate), a ``ValueError`` is
        raised and the fitted state is left as it was: the update runs on a copy of the
        tables, which costs O(model size) per call.

        Parameters
        ----------
        X : sparse matrix of shape (n_users, n_items)
        y : None
            Ignored.

        Returns
        -------
        self
        """
        if not hasattr(self, "tables_"):
            max_iter = self.max_iter
            try:
                self.max_iter = 1
                return self.fit(X)
            finally:
                self.max_iter = max_iter
        self._validate_params()
        X = self._check_X(X)
        opt = self._continued_optimizer()
        per_row = self.factor_state_ == "row"
        rng = check_random_state(self.random_state)
        old = self.tables_
        clock = old["clock"].copy()
        n_users = max(X.shape[0], old["user"].n_rows)
        n_items = max(X.shape[1], old["item"].n_rows)
        _safety.check_table_size(
            self._tables_nbytes(opt, per_row, n_users, n_items, "history" in old), "the model"
        )
        t, log_decay = clock[R.CLOCK_T], clock[R.CLOCK_LOG_DECAY]
        k = self.n_components
        state = {
            "user": _grow(
                old["user"].copy(), n_users, k, opt, rng, self.init_std, per_row, t, log_decay
            ),
            "item": _grow(
                old["item"].copy(), n_items, k, opt, rng, self.init_std, per_row, t, log_decay
            ),
            "clock": clock,
            "seen": _resize(old["seen"], (n_users, n_items)),
        }
        if "history" in old:  # the fitted model's structure, whatever user_history says now
            state["history"] = _grow(
                old["history"].copy(), n_items, k, opt, rng, self.init_std, per_row, t, log_decay
            )
        X = _resize(X, (n_users, n_items))
        lo, hi = self.rating_range_
        lo, hi = min(lo, float(X.data.min())), max(hi, float(X.data.max()))
        self._train(state, X, opt, per_row, 1, rng, self.global_mean_)
        self._refuse_useless(state, opt, per_row, max(abs(lo), abs(hi)))
        self._set_state(state, opt, per_row, self.global_mean_, (lo, hi), self.n_iter_ + 1)
        return self

    def _train(self, state, X, opt, per_row, n_epochs, rng, mu):
        """Run ``n_epochs`` over ``X`` on ``state`` in place; raise if the model diverges."""
        seen = state["seen"] + X
        seen.data[:] = 1.0
        seen.sort_indices()
        state["seen"] = seen
        state["user"].counts[:] = np.diff(seen.indptr)
        item_counts = np.bincount(seen.indices, minlength=seen.shape[1])
        for name in ("item", "history"):
            if name in state:
                state[name].counts[:] = item_counts
        coo = X.tocoo()
        data = (
            coo.row.astype(np.int32),
            coo.col.astype(np.int32),
            coo.data.astype(np.float32),
            seen.indptr.astype(np.int64),
            seen.indices.astype(np.int32),
        )
        hp, spec = opt.hyperparameters(), opt.schedule_spec()
        consts = (
            mu,
            float(self.alpha_biases),
            float(self.alpha_factors),
            int(self.n_components),
            int(self.n_negatives),
            int(self.max_sampled),
            bool(per_row),
        )
        loss = K.LOSSES[self.loss]
        user, item = state["user"].kernel_view(), state["item"].kernel_view()
        if "history" in state:
            history = state["history"].kernel_view()
        else:  # no rows: the kernels skip the history term
            history = _new_side(0, 1, opt, np.random.RandomState(0), 0.0, per_row).kernel_view()
        data += (np.arange(coo.nnz, dtype=np.int64),)  # the epoch's order
        n_threads = self._n_threads()
        train = K.mf_train_range(opt._rule, loss, user[2].size > 0, bool(per_row))
        what = f"MatrixFactorization ({self.loss}, {type(opt).__name__})"
        for epoch in range(n_epochs):
            start, compiling = time.perf_counter(), compile_seconds()
            seed = int(rng.randint(np.iinfo(np.int32).max))
            sides = (user, item, history)
            with compile_notice(what, self.verbose):
                status, total = K.mf_train_epoch(train, n_threads, seed, sides, data, consts, hp,
                                                 spec, state["clock"])  # fmt: skip
            seconds = time.perf_counter() - start - (compile_seconds() - compiling)
            if status != K.OK or not math.isfinite(total):
                raise DivergenceError(
                    f"matrix factorization diverged in epoch {epoch + 1} (non-finite "
                    f"{'learning rate' if status == K.BAD_STEP else 'loss'}): "
                    f"learning_rate={opt.learning_rate!r} is too large for these "
                    f"data; try a smaller learning_rate"
                )
            if self.verbose:
                print(
                    f"epoch {epoch + 1}/{n_epochs}: mean loss {total / max(coo.nnz, 1):.5f} "
                    f"({seconds:.3f} s, compiling not counted)"
                )
        if self.loss == "squared" and n_epochs:
            # as the other estimators: a last epoch far worse than predicting the mean rating
            ratings = data[2].astype(np.float64)
            loss = total / max(coo.nnz, 1)
            constant = _safety.constant_loss("squared", ratings, 1.0)
            start_loss = _safety.zero_model_loss("squared", ratings - mu, 1.0)
            if _safety.useless_fit(loss, coo.nnz, start_loss, constant):
                raise DivergenceError(
                    f"matrix factorization diverged: the training loss ended at {loss:.4g}, "
                    f"far worse than predicting the mean rating ({constant:.4g}), with "
                    f"learning_rate={opt.learning_rate!r}; try a smaller learning_rate"
                )
        for side in (user, item, history):
            if side[2].size:  # stamps: the rule has pending steps
                with compile_notice(what, self.verbose):
                    catch_up = K.mf_catch_up(opt._rule, bool(per_row))
                    catch_up(hp, spec, state["clock"], side, self.n_components)
            if not (np.isfinite(side[0][:, 0]).all() and np.isfinite(side[1][:, 0]).all()):
                raise DivergenceError(
                    f"matrix factorization diverged (non-finite weights): "
                    f"learning_rate={opt.learning_rate!r} is too large; try a smaller "
                    f"learning_rate"
                )

    def _set_state(self, state, opt, per_row, mu, rating_range, n_iter):
        self.tables_ = state
        self.optimizer_ = opt
        self.factor_state_ = "row" if per_row else "element"
        self.global_mean_ = mu
        self.rating_range_ = rating_range
        self.n_iter_ = n_iter
        self.n_users_ = state["user"].n_rows
        self.n_items_ = state["item"].n_rows
        self.n_features_in_ = self.n_items_

    # -- checks at the kernels' boundary (see sparseopt.estimators._safety) ----------------
    def _tables_nbytes(self, opt, per_row, n_users, n_items, history=None) -> int:
        """Bytes of the tables of ``n_users`` x ``n_items``, counted before allocating them."""
        k, width = self.n_components, 1 + opt.initial_slots().size
        history = self._user_history() if history is None else history
        n_rows = n_users + n_items * (2 if history else 1)
        per_row_bytes = 4 * (width + (k + 1 if per_row else k * width)) + 8
        return n_rows * (per_row_bytes + (16 if opt.needs_stamp else 0))

    def _continued_optimizer(self) -> optim.Optimizer:
        """The optimizer of the current parameters (a new learning rate applies), if the
        fitted state carries over to it."""
        opt = self._resolve_optimizer()
        fitted = self.optimizer_
        if type(opt) is not type(fitted) or opt.needs_stamp != fitted.needs_stamp:
            raise ValueError(
                f"optimizer {type(opt).__name__} (weight_decay={opt.weight_decay}) differs "
                f"from {type(fitted).__name__} (weight_decay={fitted.weight_decay}), which the "
                f"model was fitted with: its state does not carry over; set the optimizer back "
                f"to continue training, or call fit to start over"
            )
        self._check_params_match_state()
        return opt

    def _check_params_match_state(self):
        """``n_components`` against the fitted tables, before they are read or trained."""
        k = self.n_components
        for name in SIDES:
            if name in self.tables_:
                side = self.tables_[name]
                if self.factor_state_ == "row":
                    shape = (side.n_rows, k + 1)
                else:
                    shape = (side.n_rows * k, side.bias.shape[1])
                if side.factors.shape != shape:
                    raise ValueError(
                        f"n_components={k} differs from the fitted model's factors "
                        f"({name} table of shape {side.factors.shape}): set it back, or call "
                        f"fit to start over"
                    )

    def _refuse_useless(self, state, opt, per_row, largest_rating):
        """Raise DivergenceError if a bias or factor left the sane range (``MAX_WEIGHT``
        times the largest |rating|)."""
        bound = _safety.MAX_WEIGHT * max(1.0, largest_rating)
        for name in SIDES:
            if name in state:
                side = state[name]
                weights = side.factors[:, : self.n_components] if per_row else side.factors[:, 0]
                largest = _safety.largest_magnitude(side.bias[:, 0], weights)
                if not largest <= bound:
                    raise DivergenceError(
                        f"matrix factorization diverged: a {name} weight reached "
                        f"{largest:.3g} (the limit is {bound:.3g}), with learning_rate="
                        f"{opt.learning_rate!r}; try a smaller learning_rate"
                    )

    # -- validation ------------------------------------------------------------------------
    def _n_threads(self) -> int:
        if self.n_jobs is None:
            return 1
        if self.n_jobs < 0:
            return max(1, numba.config.NUMBA_NUM_THREADS + 1 + self.n_jobs)
        if self.n_jobs == 0:
            raise ValueError("n_jobs must be a positive integer, -1 or None, got 0")
        return int(self.n_jobs)

    def _check_X(self, X):
        _safety.check_sparse_structure(X)
        if self.loss == "squared":
            _refuse_duplicates(X)
        X = check_array(
            X,
            accept_sparse="csr",
            dtype=(np.float64, np.float32),
            ensure_all_finite=True,
            input_name="X",
            estimator=self,
        )
        X = sp.csr_matrix(X, dtype=np.float32)
        X.sum_duplicates()
        if self.loss != "squared":
            if (X.data < 0).any():
                raise ValueError(
                    f"loss={self.loss!r} reads X as positive interaction weights; X has "
                    f"negative values"
                )
            X.eliminate_zeros()
        if X.nnz == 0:
            raise ValueError(
                f"X of shape {X.shape} has no interactions (no stored entries to learn from)"
            )
        return X

    def _resolve_optimizer(self) -> optim.Optimizer:
        if isinstance(self.optimizer, str):
            lr = self.learning_rate
            if lr is None:
                lr = _DEFAULT_LEARNING_RATE.get(self.loss, _IMPLICIT_LEARNING_RATE)
            opt = optim.OPTIMIZERS[self.optimizer](learning_rate=lr)
            if self.loss == "warp" and isinstance(opt, optim.AdaGrad):
                opt.set_params(initial_accumulator_value=_WARP_INITIAL_ACCUMULATOR)
        else:
            if isinstance(self.optimizer, optim.FTRL):
                raise ValueError(
                    "FTRL is not supported for matrix factorization: its closed-form weights "
                    "discard the random initialization of the factors"
                )
            opt = self.optimizer.__class__(**self.optimizer.get_params())
            if self.learning_rate is not None:
                opt.set_params(learning_rate=self.learning_rate)
        opt.hyperparameters()  # validates
        opt.schedule_spec()
        if self._user_history() and opt.weight_decay > 0:
            raise ValueError(
                "user_history needs an optimizer without weight_decay (the decay would shrink "
                "the history term held in the user's vector during its steps); set "
                "weight_decay=0 and use alpha_factors, or user_history=False"
            )
        if self.factor_state == "row" and not isinstance(opt, optim.AdaGrad):
            raise ValueError(
                f"factor_state='row' (one accumulator per factor vector) needs AdaGrad; got "
                f"{type(opt).__name__}: use factor_state='element' or optimizer='adagrad'"
            )
        return opt

    def _user_history(self) -> bool:
        if self.user_history == "auto":
            return self.loss == "warp"
        return bool(self.user_history)

    def _max_iter(self) -> int:
        if self.max_iter is None:
            return _DEFAULT_MAX_ITER.get(self.loss, _IMPLICIT_MAX_ITER)
        return self.max_iter

    def _per_row(self, opt) -> bool:
        """Whether the factors keep one AdaGrad accumulator per vector (``factor_state``)."""
        if self.factor_state == "auto":
            return isinstance(opt, optim.AdaGrad)
        return self.factor_state == "row"

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
        r"""The users' vectors as scored: :math:`p_u`, plus with user histories
        :math:`|N(u)|^{-1/2} \sum_{m \in N(u)} y_m` (float64)."""
        p = self._factors("user").astype(np.float64)
        if "history" in self.tables_:
            seen = self.tables_["seen"]
            n = np.diff(seen.indptr)
            scale = 1.0 / np.sqrt(np.maximum(n, 1))
            p += sp.diags(scale) @ (seen @ self._factors("history").astype(np.float64))
        return p

    def _weights(self, side: str):
        """(biases, vectors) of a side as float64, vectors of cold rows zeroed."""
        s = self.tables_[side]
        factors = self._user_vectors() if side == "user" else self._factors(side).astype(np.float64)
        factors[s.counts == 0] = 0.0
        return s.bias[:, 0].astype(np.float64), factors

    @property
    def user_factors_(self) -> np.ndarray:
        check_is_fitted(self)
        return self._user_vectors().astype(np.float32)

    @property
    def history_factors_(self) -> np.ndarray | None:
        check_is_fitted(self)
        return self._factors("history") if "history" in self.tables_ else None

    @property
    def item_factors_(self) -> np.ndarray:
        check_is_fitted(self)
        return self._factors("item")

    @property
    def user_biases_(self) -> np.ndarray:
        check_is_fitted(self)
        return self.tables_["user"].bias[:, 0].copy()

    @property
    def item_biases_(self) -> np.ndarray:
        check_is_fitted(self)
        return self.tables_["item"].bias[:, 0].copy()

    def predict(self, user_ids: ArrayLike, item_ids: ArrayLike) -> np.ndarray:
        """The score :math:`s_{ui}` of each pair (a rating for ``loss="squared"``).

        Squared-loss predictions are clipped to ``rating_range_``.

        Parameters
        ----------
        user_ids, item_ids : array-like of int, shape (n_pairs,)

        Returns
        -------
        ndarray of shape (n_pairs,), float64
        """
        check_is_fitted(self)
        users = self._check_ids(user_ids, self.n_users_, "user_ids")
        items = self._check_ids(item_ids, self.n_items_, "item_ids")
        if users.shape != items.shape:
            raise ValueError(
                f"user_ids and item_ids differ in length: {users.size} != {items.size}"
            )
        bu, pu = self._weights("user")
        bi, qi = self._weights("item")
        s = self.global_mean_ + bu[users] + bi[items] + np.einsum("ij,ij->i", pu[users], qi[items])
        if self.loss == "squared":
            s = np.clip(s, *self.rating_range_)
        return s

    def recommend(self, user_ids: ArrayLike, n: int = 10, exclude_seen: bool = True) -> np.ndarray:
        """The ``n`` best-scored items of each user, best first.

        Parameters
        ----------
        user_ids : array-like of int, shape (n_users,)
        n : int, default=10
        exclude_seen : bool, default=True
            Leave out the items a user interacted with in training.

        Returns
        -------
        ndarray of shape (n_users, n), int64
            Item ids; ``-1`` fills the places beyond the user's candidate items.
        """
        check_is_fitted(self)
        users = self._check_ids(user_ids, self.n_users_, "user_ids")
        if not isinstance(n, Integral) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        _, pu = self._weights("user")
        bi, qi = self._weights("item")
        seen = self.tables_["seen"]
        out = np.full((users.size, n), -1, dtype=np.int64)
        m = min(n, self.n_items_)
        chunk = max(1, (1 << 22) // max(self.n_items_, 1))
        for start in range(0, users.size, chunk):
            rows = users[start : start + chunk]
            scores = pu[rows] @ qi.T + bi
            if exclude_seen:
                part = seen[rows]
                scores[
                    np.repeat(np.arange(rows.size), np.diff(part.indptr)), part.indices
                ] = -np.inf
            top = np.argpartition(-scores, m - 1, axis=1)[:, :m]
            top_scores = np.take_along_axis(scores, top, axis=1)
            rank = np.lexsort((top, -top_scores), axis=1)
            top = np.take_along_axis(top, rank, axis=1)
            top[np.take_along_axis(top_scores, rank, axis=1) == -np.inf] = -1
            out[start : start + rows.size, :m] = top
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
        top = np.argpartition(-sims, m - 1, axis=1)[:, :m]
        top_sims = np.take_along_axis(sims, top, axis=1)
        rank = np.lexsort((top, -top_sims), axis=1)
        top = np.take_along_axis(top, rank, axis=1)
        top[np.take_along_axis(top_sims, rank, axis=1) == -np.inf] = -1
        out = np.full((items.size, n), -1, dtype=np.int64)
        out[:, :m] = top
        return out

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: FilePath) -> None:
        """Write the model to ``path`` (an ``.npz`` of arrays and JSON metadata), atomically.

        Training can resume from the file (:func:`sparseopt.load`, then ``partial_fit``): it
        holds the optimizer state too.
        """
        check_is_fitted(self)
        arrays = {}
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
        save_model(path, self, arrays, attributes)

    @classmethod
    def _from_file(cls, params, attributes, arrays):
        """The model a file describes, every array checked against the shapes the metadata
        implies before any reaches a kernel."""
        model = cls(**params)
        model._validate_params()
        opt = model._resolve_optimizer()
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
        fitted = attributes["optimizer_"]
        fitted.hyperparameters()
        fitted.schedule_spec()
        if type(fitted) is not type(opt):
            raise ValueError(
                f"attribute optimizer_ is a {type(fitted).__name__} but the parameters give a "
                f"{type(opt).__name__}"
            )
        per_row = attributes.get("factor_state_", "element") == "row"
        if per_row and not isinstance(fitted, optim.AdaGrad):
            raise ValueError("factor_state_='row' needs an AdaGrad optimizer_")
        names = [n for n in SIDES if n != "history" or "history_bias" in arrays]
        expected = {f"{n}_{f.name}" for n in names for f in fields(_Side)}
        expected |= {"clock", "seen_indptr", "seen_indices", "seen_shape"}
        if set(arrays) != expected:
            raise ValueError(
                f"arrays {sorted(arrays)} do not fit a {cls.__name__} (expected {sorted(expected)})"
            )
        check = _safety.check_array
        shape = check("seen_shape", arrays["seen_shape"], (2,), np.int64).tolist()
        n_rows = {"user": shape[0], "item": shape[1], "history": shape[1]}
        k, width = model.n_components, 1 + fitted.initial_slots().size
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
        item_counts = np.bincount(indices, minlength=shape[1])
        if not np.array_equal(sides["user"].counts, np.diff(indptr)) or any(
            not np.array_equal(sides[n].counts, item_counts) for n in names[1:]
        ):
            raise ValueError("the tables' counts do not match the seen interactions")
        state = {**sides, "clock": check("clock", arrays["clock"], (R.CLOCK_SIZE,), np.float64),
                 "seen": seen}  # fmt: skip
        mu, rating_range = float(attributes["global_mean_"]), tuple(attributes["rating_range_"])
        model._set_state(state, fitted, per_row, mu, rating_range, int(attributes["n_iter_"]))
        return model


def _refuse_duplicates(X):
    """Ratings hold one value per (user, item): refuse repeated entries, which would be
    summed (3 and 4 becoming 7)."""
    if not sp.issparse(X) or X.format not in ("coo", "csr", "csc"):
        return
    if X.format != "coo" and X.has_canonical_format:
        return
    canonical = X.tocsr() if X.format == "coo" else X.copy()
    canonical.sum_duplicates()
    if canonical.nnz != X.nnz:
        raise ValueError(
            f"X repeats {X.nnz - canonical.nnz} (user, item) entries: with loss='squared' each "
            f"pair holds one rating (repeats would be summed); keep one rating per pair (the "
            f"latest, or their mean) before fitting"
        )


def _resize(m, shape):
    """CSR ``m`` zero-padded to ``shape`` (at least as large)."""
    m = sp.csr_matrix(m)
    if m.shape == shape:
        return m
    indptr = np.concatenate([m.indptr, np.full(shape[0] - m.shape[0], m.indptr[-1])])
    return sp.csr_matrix((m.data, m.indices, indptr), shape=shape)


__all__ = ["MatrixFactorization"]
