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


def make_ctr(n_samples=100_000, n_fields=39, n_values=None, n_bits=22, zipf_exponent=1.05,
             interactions=0.0, n_factors=4, weight_scale=1.25, base_rate=0.27,
             missing_rate=0.0, field_aware=False, n_test=0, random_state=None,
             dtype=np.float32, n_planted=0, as_frame=False):  # fmt: skip
    r"""Synthetic Criteo-like click data drawn from a known logistic model.

    **Model.** A row holds one value per field :math:`f` (of :math:`F`), drawn among its
    :math:`V_f` values with Zipf probabilities :math:`P(v_f = k) \propto (k + 1)^{-s}`, then
    erased (no feature) with probability ``missing_rate[f]``. A (field, value) pair has a
    weight :math:`w_{f,k} \sim N(0, \sigma^2 / F)` and, if :math:`\lambda > 0`, a latent
    :math:`u_{f,k} \in R^r` of i.i.d. :math:`N(0, r^{-1/2})` entries (each :math:`\langle u,
    u' \rangle` of variance 1). Over the present fields, :math:`y \sim Bernoulli(p)` with

    .. math:: p = \operatorname{sigmoid}\Big(b + \sum_f w_{f,v_f} + \frac{\lambda}
              {\sqrt{F(F-1)/2}} \sum_{f<g} \langle u_{f,v_f}, u_{g,v_g} \rangle\Big),

    :math:`b` set by Newton's method (on 20,000 rows of a stream of their own) so that the
    mean of :math:`p` is ``base_rate``. The interaction term (standard deviation about
    :math:`\lambda`) is what a rank-:math:`r` factorization machine learns and a linear model
    cannot. Pair :math:`(f, k)` is column ``murmurhash3_32(str(k).encode(), seed=f)`` mod
    ``2**n_bits`` (:func:`hash_features`); two fields of a row in one column give one entry
    of value 2. :math:`P` distinct pairs among the 20 most frequent values of random fields
    get the weights :math:`\pm\sigma (2 - i / P)`, :math:`i < P`: known drivers of the click
    rate (:func:`sparseopt.inspect.top_features`). The model depends on ``random_state`` and
    its parameters only, the training rows not on ``n_test``.

    Parameters
    ----------
    n_samples, n_test : int, default=100_000 and 0
        Training rows; test rows from the same model (an independent stream).
    n_fields : int, default=39
        :math:`F` (Criteo has 13 counts and 26 categoricals).
    n_values : int or array-like of shape (n_fields,), default=None
        :math:`V_f`; None: ``geomspace(4, 100_000, n_fields)`` rounded.
    n_bits : int, default=22
        The number of hashed columns is ``2**n_bits``.
    zipf_exponent : float, default=1.05
        :math:`s` (0: uniform values).
    interactions, n_factors : float and int, default=0.0 and 4
        :math:`\lambda` and :math:`r`: the strength and rank of the pairwise interactions.
    weight_scale : float, default=1.25
        :math:`\sigma`, the standard deviation of the logit's linear part.
    base_rate : float, default=0.27
        The mean click probability.
    missing_rate : float or array-like of shape (n_fields,), default=0.0
        The probability that a field is empty in a row.
    field_aware : bool, default=False
        Hash each field into a slice of columns of its own (:func:`column_fields`).
    random_state : None, int or numpy.random.Generator, default=None
        The seed of everything.
    dtype : numpy dtype, default=np.float32
        The dtype of ``X.data``.
    n_planted : int, default=0
        :math:`P`, the planted pairs.
    as_frame : bool, default=False
        Also return ``frame`` (and ``frame_test``): a DataFrame, column ``f"f{f}"`` field ``f``'s
        value ids as text, None if missing (none: ``FieldHasher(n_bits).fit_transform(frame)``
        equals ``X``).

    Returns
    -------
    data : sklearn.utils.Bunch
        ``X`` (canonical CSR, shape (n_samples, 2**n_bits), int32 indices if n_bits <= 30),
        ``y`` (float32 0/1), ``proba`` (float64, the true probabilities: ``log_loss(y, proba)``
        is the Bayes floor), with ``_test`` if ``n_test > 0``; the true model: ``intercept``,
        ``weights`` (field ``f``'s at ``weights[value_offsets[f]:value_offsets[f + 1]]``),
        ``factors`` (n_pairs, n_factors; empty without interactions), ``value_offsets``,
        ``value_columns`` (each pair's column), ``n_values``, ``n_features``; the planted
        pairs, strongest first: ``planted_fields``, ``planted_values``, ``planted_weights``.
    """
    n_bits = check_n_bits(n_bits)
    model, parts = _simulate_ctr(n_samples, n_test, n_fields, n_values, zipf_exponent,
                                 weight_scale, interactions, n_factors, missing_rate,
                                 base_rate, random_state, n_planted)  # fmt: skip
    out = _true_model(model, n_bits, slice_size(n_bits, n_fields, field_aware))
    for suffix, part in zip(["", "_test"], parts[: 2 if n_test else 1], strict=False):
        _add_rows(out, suffix, part, dtype, as_frame)
    return out


def _true_model(model, n_bits, size):
    """:func:`make_ctr`'s Bunch of the true model ``model``: its weights, factors and
    intercept, and the column of each (field, value) pair (``size``: a field's slice)."""
    return Bunch(
        intercept=model.intercept,
        weights=model.weights,
        factors=model.factors,
        value_offsets=model.offsets,
        value_columns=_value_columns(model.n_values, n_bits, size),
        n_values=model.n_values,
        n_features=1 << n_bits,
        planted_fields=model.planted[0],
        planted_values=model.planted[1],
        planted_weights=model.planted[2],
    )


def _add_rows(out, suffix, part, dtype, as_frame):
    """Put the rows ``part = (values, y, proba)`` of :func:`make_ctr` into its Bunch ``out``
    (made by :func:`_true_model`): ``X + suffix``, the value ids ``values`` (-1: missing) in
    their hashed columns, ``y + suffix``, ``proba + suffix`` and, with ``as_frame``,
    ``frame + suffix``."""
    values, y, proba = part
    n_features = out.n_features
    cols = np.empty(values.shape, dtype=index_dtype(n_features))
    _values_to_columns(values, out.value_offsets, out.value_columns, n_features, cols)
    out["X" + suffix] = csr_from_columns(cols, n_features, dtype=dtype)
    out["y" + suffix], out["proba" + suffix] = y, proba
    if as_frame:
        out["frame" + suffix] = _frame(values)


def _frame(values):
    """Value ids (-1: missing) as a pandas DataFrame of text columns f0, f1, ..."""
    import pandas as pd  # only when asked: pandas is not a dependency

    return pd.DataFrame(
        {
            f"f{f}": pd.array(np.where(v >= 0, v.astype(str), None), dtype="string")
            for f, v in enumerate(values.T)
        }
    )
