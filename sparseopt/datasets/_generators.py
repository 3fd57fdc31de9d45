"""Synthetic click-through data with a known true model."""

import numba
import numpy as np
from sklearn.utils import Bunch

from .._jit import JIT
from ._hashing import check_n_bits, csr_from_columns, hash_int, index_dtype, slice_size, to_column

# planted pairs are among the most frequent values of their field, so that data shows them
_PLANTED_RANKS = 20

# Rows drawn (from a stream of their own) to set the intercept, so the true model does not
# depend on n_samples: make_ctr(1_000) and make_ctr(1_000_000) share it.
_N_CALIBRATION = 20_000


@numba.njit(**JIT)
def _alias_table(p):
    """Vose's alias method: draw index i with probability p[i] from one uniform."""
    n = p.shape[0]
    prob = np.empty(n)
    alias = np.zeros(n, dtype=np.int64)
    scaled = p * n / p.sum()
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    ns = 0
    nl = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        nl -= 1
        g = large[nl]
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = scaled[g] + scaled[s] - 1.0
        if scaled[g] < 1.0:
            small[ns] = g
            ns += 1
        else:
            large[nl] = g
            nl += 1
    for i in range(nl):
        prob[large[i]] = 1.0
    for i in range(ns):
        prob[small[i]] = 1.0
    return prob, alias


@numba.njit(**JIT)
def _value_columns(n_values, n_bits, slice_size):
    """Hashed column of every (field, value id) pair, the value hashed as its decimal text."""
    offsets = np.zeros(n_values.shape[0] + 1, dtype=np.int64)
    for f in range(n_values.shape[0]):
        offsets[f + 1] = offsets[f] + n_values[f]
    cols = np.empty(offsets[-1], dtype=np.int64)
    scratch = np.empty(24, dtype=np.uint8)
    for f in range(n_values.shape[0]):
        for v in range(n_values[f]):
            h = hash_int(v, np.uint32(f), scratch)
            cols[offsets[f] + v] = to_column(h, f, n_bits, slice_size)
    return cols


@numba.njit(**JIT)
def _draw_field(u, missing, table, model, f, out):
    """Value ids of field ``f`` from uniforms ``u`` (alias method on ``table = (prob,
    alias)``; -1 where ``missing``) into column ``f`` of ``values``; with ``model = (weights,
    factors)`` of the field's values and ``out = (values, logit, total, sq)``, their weights
    are added to ``logit``, their factors to ``total`` and the factors' squared norms to
    ``sq`` (for the pairwise sum)."""
    prob, alias = table
    weights, factors = model
    values, logit, total, sq = out
    n_values = prob.shape[0]
    has_missing = missing.shape[0] > 0
    k = factors.shape[1]
    for r in range(u.shape[0]):
        x = u[r] * n_values
        i = min(np.int64(x), n_values - 1)
        v = i if x - i < prob[i] else alias[i]
        if has_missing and missing[r]:
            values[r, f] = -1
        else:
            values[r, f] = v
            logit[r] += weights[v]
            for j in range(k):
                a = factors[v, j]
                total[r, j] += a
                sq[r] += a * a


@numba.njit(**JIT)
def _values_to_columns(values, offsets, value_columns, absent, cols):
    for r in range(values.shape[0]):
        for f in range(values.shape[1]):
            v = values[r, f]
            cols[r, f] = absent if v < 0 else value_columns[offsets[f] + v]


def _as_generator(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if random_state is None or isinstance(random_state, int | np.integer):
        return np.random.default_rng(random_state)
    raise TypeError(f"random_state must be None, an int or a numpy Generator, got {random_state!r}")


def _per_field(value, n_fields, name, dtype):
    arr = np.asarray(value, dtype=dtype)
    if arr.ndim == 0:
        arr = np.full(n_fields, arr, dtype=dtype)
    if arr.shape != (n_fields,):
        raise ValueError(f"{name} must be a scalar or have one entry per field ({n_fields})")
    return arr


def _default_n_values(n_fields):
    """Criteo-like vocabularies: a few tiny fields up to fields of 100,000 values."""
    return np.round(np.geomspace(4, 100_000, n_fields)).astype(np.int64)


class _CTRModel:
    """The true model and the row sampler behind :func:`make_ctr`."""

    def __init__(
        self,
        n_fields,
        n_values,
        zipf_exponent,
        weight_scale,
        interactions,
        n_factors,
        missing_rate,
        rng,
    ):
        self.n_fields = n_fields
        self.n_values = n_values
        self.offsets = np.concatenate([[0], np.cumsum(n_values)])
        self.missing_rate = missing_rate
        self.interactions = float(interactions)
        self.tables = []
        for f in range(n_fields):
            p = np.arange(1, n_values[f] + 1, dtype=np.float64) ** -zipf_exponent
            self.tables.append(_alias_table(p / p.sum()))
        total = int(self.offsets[-1])
        self.weights = rng.normal(0.0, weight_scale / np.sqrt(n_fields), size=total)
        if self.interactions > 0:
            # entries of variance 1/sqrt(k): each dot product <u, u'> has variance 1
            self.factors = rng.normal(0.0, n_factors**-0.25, size=(total, n_factors))
        else:
            self.factors = np.zeros((total, 0))
        self.intercept = 0.0

    def plant(self, n_planted, weight_scale, rng):
        """Give ``n_planted`` distinct frequent (field, value) pairs strong weights, the
        i-th (from 0) of magnitude ``weight_scale * (2 - i / n_planted)`` and a random sign."""
        pairs = set()
        while len(pairs) < n_planted:
            f = int(rng.integers(self.n_fields))
            pairs.add((f, int(rng.integers(min(self.n_values[f], _PLANTED_RANKS)))))
        pairs = sorted(pairs)
        rng.shuffle(pairs)
        fields = np.array([f for f, _ in pairs], dtype=np.int64)
        values = np.array([v for _, v in pairs], dtype=np.int64)
        weights = weight_scale * (2 - np.arange(n_planted) / max(n_planted, 1))
        weights *= rng.choice([-1.0, 1.0], size=n_planted)
        self.weights[self.offsets[fields] + values] = weights
        self.planted = (fields, values, weights)

    def draw(self, n, rng):
        """Value ids (n, n_fields), -1 where missing, and the logit without the intercept."""
        values = np.empty((n, self.n_fields), dtype=np.int32)
        logit = np.zeros(n)
        k = self.factors.shape[1]
        s = np.zeros((n, k))
        sq = np.zeros(n)
        no_missing = np.zeros(0, dtype=np.bool_)
        for f in range(self.n_fields):
            u = rng.random(n)
            missing = rng.random(n) < self.missing_rate[f] if self.missing_rate[f] else no_missing
            own = slice(self.offsets[f], self.offsets[f + 1])
            model = (self.weights[own], self.factors[own])
            _draw_field(u, missing, self.tables[f], model, f, (values, logit, s, sq))
        if k:
            n_pairs = self.n_fields * (self.n_fields - 1) / 2
            pairs = 0.5 * (np.einsum("ij,ij->i", s, s) - sq)
            logit += self.interactions / np.sqrt(max(n_pairs, 1.0)) * pairs
        return values, logit

    def calibrate(self, base_rate, rng):
        """Set the intercept so that the mean click probability is ``base_rate``."""
        _, z = self.draw(_N_CALIBRATION, rng)
        b = np.log(base_rate / (1 - base_rate))
        for _ in range(50):  # Newton on mean(sigmoid(b + z)) = base_rate; monotone in b
            p = _sigmoid(b + z)
            step = (p.mean() - base_rate) / max((p * (1 - p)).mean(), 1e-12)
            b -= step
            if abs(step) < 1e-10:
                break
        self.intercept = float(b)


def _sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


def _simulate_ctr(
    n_samples,
    n_test,
    n_fields,
    n_values,
    zipf_exponent,
    weight_scale,
    interactions,
    n_factors,
    missing_rate,
    base_rate,
    random_state,
    n_planted=0,
):
    """Validate the arguments, build the model, draw train and test value ids and labels."""
    for name, value in [("n_samples", n_samples), ("n_test", n_test), ("n_fields", n_fields)]:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if n_fields < 1:
        raise ValueError("n_fields must be at least 1")
    if not 0 < base_rate < 1:
        raise ValueError(f"base_rate must be in (0, 1), got {base_rate}")
    if interactions < 0:
        raise ValueError(f"interactions must be >= 0, got {interactions}")
    if zipf_exponent < 0:
        raise ValueError(f"zipf_exponent must be >= 0, got {zipf_exponent}")
    if n_values is None:
        n_values = _default_n_values(n_fields)
    n_values = _per_field(n_values, n_fields, "n_values", np.int64)
    if np.any(n_values < 1):
        raise ValueError("every field needs at least one value (n_values >= 1)")
    missing_rate = _per_field(missing_rate, n_fields, "missing_rate", np.float64)
    if np.any((missing_rate < 0) | (missing_rate >= 1)):
        raise ValueError("missing_rate must be in [0, 1)")
    if isinstance(n_planted, bool) or not isinstance(n_planted, int | np.integer) or n_planted < 0:
        raise ValueError(f"n_planted must be a non-negative integer, got {n_planted!r}")
    if n_planted > sum(min(v, _PLANTED_RANKS) for v in n_values):
        raise ValueError(f"n_planted={n_planted} is more than the fields' frequent values")
    seed = _as_generator(random_state).integers(0, 2**63 - 1)
    # a fifth stream for the planted pairs: the first four, and so the model without planted
    # pairs, are those of the same seed before they existed
    model_rng, calib_rng, train_rng, test_rng, plant_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    model = _CTRModel(
        n_fields,
        n_values,
        zipf_exponent,
        weight_scale,
        interactions,
        n_factors,
        missing_rate,
        model_rng,
    )
    model.plant(n_planted, weight_scale, plant_rng)
    model.calibrate(base_rate, calib_rng)
    parts = []
    for n, rng in [(n_samples, train_rng), (n_test, test_rng)]:
        values, z = model.draw(n, rng)
        proba = _sigmoid(model.intercept + z)
        y = (rng.random(n) < proba).astype(np.float32)
        parts.append((values, y, proba))
    return model, parts


def make_ctr(
    n_samples=100_000,
    n_fields=39,
    n_values=None,
    n_bits=22,
    zipf_exponent=1.05,
    interactions=0.0,
    n_factors=4,
    weight_scale=1.25,
    base_rate=0.27,
    missing_rate=0.0,
    field_aware=False,
    n_test=0,
    random_state=None,
    dtype=np.float32,
    n_planted=0,
    as_frame=False,
):
    r"""Synthetic Criteo-like click data drawn from a known logistic model.

    **Generative model.** Field :math:`f` (of :math:`F`) has a vocabulary of :math:`V_f` values
    and every row holds one value per field, drawn independently with Zipf probabilities

    .. math:: P(v_f = k) \propto (k + 1)^{-s}, \quad k = 0, \dots, V_f - 1,

    and then, with probability ``missing_rate[f]``, erased (an empty field: no feature).
    Each (field, value) pair has a weight :math:`w_{f,k} \sim N(0, \sigma^2 / F)` with
    :math:`\sigma` = ``weight_scale`` (the spread of the linear part of the logit), and, when
    ``interactions`` :math:`= \lambda > 0`, a latent vector :math:`u_{f,k} \in R^r` with
    i.i.d. :math:`N(0, r^{-1/2})` entries (so each :math:`\langle u, u' \rangle` has variance
    1). The click probability of a row is

    .. math::

        p = \operatorname{sigmoid}\Big(b + \sum_f w_{f,v_f}
            + \frac{\lambda}{\sqrt{F(F-1)/2}} \sum_{f<g} \langle u_{f,v_f}, u_{g,v_g} \rangle
            \Big),

    sums running over the present fields, and the label is :math:`y \sim Bernoulli(p)`. The
    intercept :math:`b` is set (by Newton's method on 20,000 rows from a stream of their own)
    so that the mean of :math:`p` is ``base_rate``. The interaction term is what a
    factorization machine of rank :math:`r` can learn and a linear model cannot; its
    standard deviation is about :math:`\lambda`.

    **Features.** The pair (field :math:`f`, value :math:`k`) becomes column
    ``murmurhash3_32(str(k).encode(), seed=f) mod 2**n_bits`` (see
    :func:`hash_features` for the exact layout and ``field_aware``); two fields of a row that
    hash to the same column give one entry of value 2, so in hashed space the true model is
    exact only up to such collisions.

    **Planted effects.** With ``n_planted`` :math:`= P > 0`, :math:`P` distinct pairs among
    the 20 most frequent values of random fields get the weights
    :math:`\pm\sigma (2 - i / P)`, :math:`i = 0, \dots, P - 1` (random signs): known
    features that move the click rate most, for checking what a model says drives it
    (:func:`sparseopt.inspect.top_features`).

    The model (weights, factors, intercept) depends only on ``random_state`` and the model
    parameters, not on ``n_samples`` or ``n_test``; the training rows do not depend on
    ``n_test``.

    Parameters
    ----------
    n_samples : int, default=100_000
        Number of training rows.
    n_fields : int, default=39
        Number of fields (Criteo has 13 counts and 26 categoricals).
    n_values : int or array-like of shape (n_fields,), default=None
        Vocabulary size of each field. None: ``geomspace(4, 100_000, n_fields)`` rounded.
    n_bits : int, default=22
        Number of hashed columns is ``2**n_bits``.
    zipf_exponent : float, default=1.05
        Exponent :math:`s` of the value frequencies (0: uniform).
    interactions : float, default=0.0
        Strength :math:`\lambda` of the pairwise field interactions.
    n_factors : int, default=4
        Rank :math:`r` of the interaction latent vectors.
    weight_scale : float, default=1.25
        Standard deviation :math:`\sigma` of the linear part of the logit.
    base_rate : float, default=0.27
        Mean click probability (the expected fraction of positives).
    missing_rate : float or array-like of shape (n_fields,), default=0.0
        Probability that a field is empty in a row.
    field_aware : bool, default=False
        Hash each field into its own contiguous slice of columns (see :func:`column_fields`).
    n_test : int, default=0
        Number of test rows drawn from the same model (an independent stream).
    random_state : None, int or numpy.random.Generator, default=None
        Seed of everything.
    dtype : numpy dtype, default=np.float32
        Dtype of ``X.data``.
    n_planted : int, default=0
        Number of planted (field, value) pairs with strong weights (see above).
    as_frame : bool, default=False
        Also return the raw rows as a pandas DataFrame ``frame`` (and ``frame_test``):
        column ``f"f{f}"`` holds the value ids of field ``f`` as text (``"0"``, ``"1"``...),
        None where missing. Without missing values,
        ``FieldHasher(n_bits).fit_transform(frame)`` equals ``X`` (a missing value is a
        feature of its own for :class:`FieldHasher`, none in ``X``).

    Returns
    -------
    data : sklearn.utils.Bunch
        ``X`` (csr_matrix of shape (n_samples, 2**n_bits), canonical, int32 indices when
        ``n_bits <= 30``), ``y`` (float32 array of 0/1), ``proba`` (float64, the true click
        probabilities: ``log_loss(y, proba)`` is the Bayes floor), and when ``n_test > 0``
        ``X_test``, ``y_test``, ``proba_test``. The true model: ``intercept`` (float),
        ``weights`` (float64, one per (field, value) pair, field ``f``'s values at
        ``weights[value_offsets[f]:value_offsets[f + 1]]``), ``factors`` (shape
        (n_pairs, n_factors), empty when ``interactions == 0``), ``value_offsets``,
        ``value_columns`` (the hashed column of each pair), ``n_values``, ``n_features``;
        the planted pairs, strongest first: ``planted_fields``, ``planted_values`` (value
        ids) and ``planted_weights``.

    Examples
    --------
    >>> from sklearn.metrics import log_loss
    >>> from sparseopt.datasets import make_ctr
    >>> data = make_ctr(10_000, n_bits=18, n_test=2_000, random_state=0)
    >>> data.X.shape, data.X_test.shape
    ((10000, 262144), (2000, 262144))
    >>> bayes_floor = log_loss(data.y_test, data.proba_test)
    """
    n_bits = check_n_bits(n_bits)
    model, parts = _simulate_ctr(
        n_samples,
        n_test,
        n_fields,
        n_values,
        zipf_exponent,
        weight_scale,
        interactions,
        n_factors,
        missing_rate,
        base_rate,
        random_state,
        n_planted,
    )
    n_features = 1 << n_bits
    size = slice_size(n_bits, n_fields, field_aware)
    value_columns = _value_columns(model.n_values, n_bits, size)
    out = Bunch(
        intercept=model.intercept,
        weights=model.weights,
        factors=model.factors,
        value_offsets=model.offsets,
        value_columns=value_columns,
        n_values=model.n_values,
        n_features=n_features,
        planted_fields=model.planted[0],
        planted_values=model.planted[1],
        planted_weights=model.planted[2],
    )
    for suffix, (values, y, proba) in zip(["", "_test"], parts, strict=True):
        if suffix and n_test == 0:
            break
        cols = np.empty(values.shape, dtype=index_dtype(n_features))
        _values_to_columns(values, model.offsets, value_columns, n_features, cols)
        X = csr_from_columns(cols, n_features, dtype=dtype)
        out["X" + suffix], out["y" + suffix], out["proba" + suffix] = X, y, proba
        if as_frame:
            out["frame" + suffix] = _frame(values)
    return out


def _frame(values):
    """Value ids (-1: missing) as a pandas DataFrame of text columns f0, f1, ..."""
    import pandas as pd  # only when asked: pandas is not a dependency

    return pd.DataFrame(
        {
            f"f{f}": pd.array(np.where(v >= 0, v.astype(str), None), dtype="string")
            for f, v in enumerate(values.T)
        }
    )
