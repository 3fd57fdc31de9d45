"""Evaluation metrics for click prediction, rating prediction and top-k recommendation.

Click metrics
-------------
:class:`ClickMetrics` accumulates logloss, AUC and calibration of predicted click
probabilities over chunks of rows, in bounded memory.

Rating metrics
--------------
:func:`rmse` and :func:`mae` compare predicted ratings with observed ones.

Ranking metrics
---------------
:func:`precision_at_k`, :func:`recall_at_k`, :func:`ndcg_at_k` and :func:`auc_score`
share one input convention:

``test``
    A scipy sparse matrix (or sparse array) of shape ``(n_users, n_items)`` holding the
    held-out interactions. Every stored nonzero entry is a relevant item; its value is
    ignored (relevance is binary). Explicitly stored zeros are *not* relevant.
``recommended``
    Either

    * an **integer** array of shape ``(n_rows, width)`` of item ids, best first, as
      returned by a ``recommend(user_ids, n=k)`` method. ``-1`` marks an empty slot
      (a user with fewer recommendations). Only the first ``k`` valid columns are used.
      Duplicate item ids within a row are an error.
    * a **floating-point** score matrix of shape ``(n_rows, n_items)``: higher is better.
      The top ``k`` items of each row are taken, ties broken by the lower item id. Items
      scored ``-inf`` are never recommended. NaN scores are an error.

    The dtype decides which one is meant: an integer array is always item ids.
``user_ids``
    Optional int array of length ``n_rows``: row ``j`` of ``recommended`` belongs to
    user ``user_ids[j]`` (a row of ``test``). By default row ``j`` is user ``j`` and
    ``n_rows`` must equal ``test.shape[0]``.
``train``
    Optional sparse matrix with the shape of ``test``: the items a user interacted with
    in training are removed from that user's candidates before the top ``k`` are taken
    (for an item list, they are dropped from the list and the remaining items move up).

Averaging follows LightFM: a user counts only if it has at least one test item (for
:func:`auc_score`, also at least one candidate item that is not a test item); the
returned value is the unweighted mean over counted users. With ``average=False`` a
per-row float array is returned instead, NaN for rows that do not count. When no user
counts, a ``ValueError`` is raised.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = [
    "ClickMetrics",
    "rmse",
    "mae",
    "precision_at_k",
    "recall_at_k",
    "ndcg_at_k",
    "auc_score",
]

# Work on at most this many score-matrix cells at once (bounds temporaries to ~32 MiB).
_CHUNK_CELLS = 1 << 22


# --------------------------------------------------------------------------------------
# Rating metrics
# --------------------------------------------------------------------------------------


def _check_pair(y_true, y_pred):
    if sp.issparse(y_true) or sp.issparse(y_pred):
        raise ValueError(
            "y_true and y_pred must be dense 1-d arrays; for sparse rating matrices pass "
            "their .data arrays (with the same sparsity pattern)"
        )
    a = np.asarray(y_true, dtype=np.float64)
    b = np.asarray(y_pred, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-d, got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise ValueError(f"y_true and y_pred differ in length: {a.shape[0]} != {b.shape[0]}")
    if a.size == 0:
        raise ValueError("y_true and y_pred are empty")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("y_true and y_pred must be finite (no NaN or inf)")
    return a, b


def rmse(y_true, y_pred) -> float:
    r"""Root mean squared error.

    .. math:: \mathrm{RMSE} = \sqrt{\frac{1}{n} \sum_{i=1}^{n} (y_i - \hat y_i)^2}

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        Observed and predicted ratings. Computed in float64.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If the inputs are not 1-d, differ in length, are empty, or are not finite.
    """
    a, b = _check_pair(y_true, y_pred)
    d = a - b
    return float(np.sqrt(np.dot(d, d) / d.size))


def mae(y_true, y_pred) -> float:
    r"""Mean absolute error.

    .. math:: \mathrm{MAE} = \frac{1}{n} \sum_{i=1}^{n} |y_i - \hat y_i|

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        Observed and predicted ratings. Computed in float64.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If the inputs are not 1-d, differ in length, are empty, or are not finite.
    """
    a, b = _check_pair(y_true, y_pred)
    return float(np.mean(np.abs(a - b)))


# --------------------------------------------------------------------------------------
# Input handling shared by the ranking metrics
# --------------------------------------------------------------------------------------


def _as_interactions(m, name: str, shape=None) -> sp.csr_array:
    """Validate a users x items interaction matrix; return CSR with no explicit zeros."""
    if not sp.issparse(m):
        raise ValueError(
            f"{name} must be a scipy sparse matrix of shape (n_users, n_items), "
            f"got {type(m).__name__}"
        )
    if m.ndim != 2:
        raise ValueError(f"{name} must be 2-d, got {m.ndim}-d")
    if shape is not None and m.shape != shape:
        raise ValueError(f"{name} has shape {m.shape}, expected {shape} (the shape of test)")
    out = sp.csr_array(m, copy=True)
    out.sum_duplicates()  # also sorts the indices
    out.eliminate_zeros()
    return out


def _row_keys(m: sp.csr_array) -> np.ndarray:
    """Sorted int64 keys ``row * n_cols + col`` of the stored entries of a canonical CSR."""
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    return rows * m.shape[1] + m.indices.astype(np.int64)


def _lookup(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Boolean mask: which entries of ``query`` are in the sorted array ``keys``."""
    if keys.size == 0:
        return np.zeros(query.shape, dtype=bool)
    pos = np.searchsorted(keys, query)
    np.minimum(pos, keys.size - 1, out=pos)
    return keys[pos] == query


def _check_user_ids(user_ids, n_rows: int, n_users: int) -> np.ndarray:
    if user_ids is None:
        if n_rows != n_users:
            raise ValueError(
                f"recommended has {n_rows} rows but test has {n_users} users; "
                "pass user_ids to evaluate a subset of users"
            )
        return np.arange(n_users, dtype=np.int64)
    u = np.asarray(user_ids)
    if u.ndim != 1 or u.shape[0] != n_rows:
        raise ValueError(f"user_ids must be 1-d of length {n_rows} (the rows of recommended)")
    if u.size and not np.issubdtype(u.dtype, np.integer):
        raise ValueError(f"user_ids must be integers, got dtype {u.dtype}")
    u = u.astype(np.int64)
    if u.size and (u.min() < 0 or u.max() >= n_users):
        raise ValueError(f"user_ids must lie in [0, {n_users})")
    return u


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _check_scores(scores: np.ndarray, n_items: int) -> np.ndarray:
    if scores.ndim != 2:
        raise ValueError(f"a score matrix must be 2-d, got shape {scores.shape}")
    if scores.shape[1] != n_items:
        raise ValueError(f"score matrix has {scores.shape[1]} columns but test has {n_items} items")
    if np.isnan(scores).any():
        raise ValueError("score matrix contains NaN")
    return scores


def _topk_from_scores(s: np.ndarray, k: int) -> np.ndarray:
    """Top-k item ids of each row of a dense score block, best first, ties -> lower id.

    Items scored ``-inf`` are replaced by ``-1``. ``k <= s.shape[1]``.
    """
    m, n = s.shape
    if k < n:
        kth = np.partition(s, n - k, axis=1)[:, n - k, None]  # k-th largest per row
        above = s > kth
        tied = s == kth
        need = k - above.sum(axis=1, keepdims=True)  # >= 1 slots for the tied items
        sel = above | (tied & (np.cumsum(tied, axis=1) <= need))
        ids = np.nonzero(sel)[1].reshape(m, k)  # exactly k per row, ascending ids
    else:
        ids = np.broadcast_to(np.arange(n), (m, n))
    vals = np.take_along_axis(s, ids, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")  # stable: equal scores keep id order
    ids = np.take_along_axis(ids, order, axis=1).astype(np.int64)
    ids[np.take_along_axis(vals, order, axis=1) == -np.inf] = -1
    return ids


def _recommended_ids(recommended, test, train, user_ids, k) -> tuple[np.ndarray, np.ndarray]:
    """Resolve ``recommended`` to an (n_rows, k) int64 id array (-1 = empty) + user ids."""
    n_users, n_items = test.shape
    rec = np.asarray(recommended)
    if rec.ndim != 2:
        raise ValueError(
            "recommended must be 2-d: (n_rows, k) item ids or (n_rows, n_items) scores, "
            f"got shape {rec.shape}"
        )
    users = _check_user_ids(user_ids, rec.shape[0], n_users)
    train_keys = None
    if train is not None:
        train = _as_interactions(train, "train", test.shape)
        train_keys = _row_keys(train[users]) if users.size else np.empty(0, np.int64)

    if np.issubdtype(rec.dtype, np.integer):
        ids = rec.astype(np.int64)
        if ids.size and (ids.min() < -1 or ids.max() >= n_items):
            raise ValueError(
                f"recommended item ids must lie in [0, {n_items}) or be -1 (an integer "
                "array is read as item ids; pass a score matrix as floats)"
            )
        srt = np.sort(ids, axis=1)
        if np.any((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)):
            raise ValueError(
                "recommended contains a repeated item id within a row (an integer array "
                "is read as item ids; pass a score matrix as floats)"
            )
        drop = ids < 0
        if train_keys is not None:
            rows = np.arange(ids.shape[0], dtype=np.int64)[:, None]
            drop |= _lookup(train_keys, rows * n_items + ids) & ~drop
        if drop.any():  # compact each row: kept items move up, -1 fills the end
            order = np.argsort(drop, axis=1, kind="stable")
            ids = np.take_along_axis(ids, order, axis=1)
            ids[np.take_along_axis(drop, order, axis=1)] = -1
        if ids.shape[1] < k:
            raise ValueError(
                f"recommended has {rec.shape[1]} columns, fewer than k={k}; "
                "ask the model for at least k items"
            )
        return ids[:, :k], users

    if np.issubdtype(rec.dtype, np.floating):
        scores = _check_scores(rec, n_items)
        if k > n_items:
            raise ValueError(f"k={k} exceeds the number of items ({n_items})")
        out = np.empty((scores.shape[0], k), dtype=np.int64)
        step = max(1, _CHUNK_CELLS // max(n_items, 1))
        for start in range(0, scores.shape[0], step):  # chunks of users, not one per user
            stop = min(start + step, scores.shape[0])
            block = np.array(scores[start:stop], dtype=np.float64)
            if train_keys is not None:
                _mask_train(block, train, users[start:stop])
            out[start:stop] = _topk_from_scores(block, k)
        return out, users

    raise ValueError(
        "recommended must be an integer array of item ids or a floating-point score "
        f"matrix, got dtype {rec.dtype}"
    )


def _mask_train(block: np.ndarray, train: sp.csr_array, users: np.ndarray) -> None:
    """Set ``block[j, i] = -inf`` where ``users[j]`` has training item ``i`` (in place)."""
    sub = train[users]
    rows = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
    block[rows, sub.indices] = -np.inf


def _hits(recommended, test, train, user_ids, k):
    """Shared front end of the top-k metrics.

    Returns ``hits`` (n_rows, k) bool, the number of test items per row, and the k.
    """
    k = _check_k(k)
    test = _as_interactions(test, "test")
    ids, users = _recommended_ids(recommended, test, train, user_ids, k)
    sub = test[users]
    rows = np.arange(ids.shape[0], dtype=np.int64)[:, None]
    hits = _lookup(_row_keys(sub), rows * test.shape[1] + ids) & (ids >= 0)
    n_rel = np.diff(sub.indptr)
    return hits, n_rel, k


def _finish(per_user: np.ndarray, counted: np.ndarray, average: bool, name: str):
    per_user = np.where(counted, per_user, np.nan)
    if not average:
        return per_user
    if not counted.any():
        raise ValueError(f"{name}: no user has a test interaction to evaluate")
    return float(np.mean(per_user[counted]))


# --------------------------------------------------------------------------------------
# Ranking metrics
# --------------------------------------------------------------------------------------


def precision_at_k(test, recommended, k: int = 10, *, train=None, user_ids=None, average=True):
    r"""Precision at k, averaged over users with at least one test item.

    .. math::

        P@k(u) = \frac{|R_u^{(k)} \cap T_u|}{k}

    where :math:`R_u^{(k)}` is the user's top-k recommended items and :math:`T_u` the
    user's test items. The denominator is always ``k`` (LightFM's convention), also
    when fewer than ``k`` items were recommended.

    Parameters
    ----------
    test : sparse matrix of shape (n_users, n_items)
        Held-out interactions; nonzero entries are relevant.
    recommended : int array (n_rows, >=k) of item ids or float array (n_rows, n_items)
        Recommendations or scores; see the module docstring.
    k : int, default 10
        Cut-off.
    train : sparse matrix of shape (n_users, n_items), optional
        Training interactions to exclude from the recommendations.
    user_ids : int array of shape (n_rows,), optional
        The user of each row of ``recommended``; default ``arange(n_users)``.
    average : bool, default True
        Return the mean over counted users (float), or the per-row values (NaN for users
        without test items).

    Returns
    -------
    float or ndarray of shape (n_rows,)

    Raises
    ------
    ValueError
        On malformed input, or if no user has a test item (with ``average=True``).
    """
    hits, n_rel, k = _hits(recommended, test, train, user_ids, k)
    return _finish(hits.sum(axis=1) / k, n_rel > 0, average, "precision_at_k")


def recall_at_k(test, recommended, k: int = 10, *, train=None, user_ids=None, average=True):
    r"""Recall at k, averaged over users with at least one test item.

    .. math::

        R@k(u) = \frac{|R_u^{(k)} \cap T_u|}{|T_u|}

    with :math:`R_u^{(k)}` the top-k recommended items and :math:`T_u` the test items of
    user :math:`u` (LightFM's convention: the denominator is not capped at ``k``).

    Parameters
    ----------
    test, recommended, k, train, user_ids, average
        As in :func:`precision_at_k`.

    Returns
    -------
    float or ndarray of shape (n_rows,)
    """
    hits, n_rel, k = _hits(recommended, test, train, user_ids, k)
    counted = n_rel > 0
    return _finish(hits.sum(axis=1) / np.maximum(n_rel, 1), counted, average, "recall_at_k")


def ndcg_at_k(test, recommended, k: int = 10, *, train=None, user_ids=None, average=True):
    r"""Normalized discounted cumulative gain at k with binary relevance.

    .. math::

        \mathrm{DCG}@k(u) = \sum_{i=1}^{k} \frac{[r_{u,i} \in T_u]}{\log_2(i + 1)}, \qquad
        \mathrm{nDCG}@k(u) = \frac{\mathrm{DCG}@k(u)}
                                 {\sum_{i=1}^{\min(k, |T_u|)} 1 / \log_2(i + 1)}

    where :math:`r_{u,i}` is the item at rank :math:`i` (1-based) and :math:`T_u` the
    user's test items. The denominator is the DCG of an ideal ranking.

    Parameters
    ----------
    test, recommended, k, train, user_ids, average
        As in :func:`precision_at_k`.

    Returns
    -------
    float or ndarray of shape (n_rows,)
    """
    hits, n_rel, k = _hits(recommended, test, train, user_ids, k)
    discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    dcg = hits @ discount
    ideal = np.concatenate(([0.0], np.cumsum(discount)))[np.minimum(n_rel, k)]
    counted = n_rel > 0
    return _finish(dcg / np.where(counted, ideal, 1.0), counted, average, "ndcg_at_k")


def _average_ranks(block: np.ndarray) -> np.ndarray:
    """1-based average ranks along each row (ties share their mean rank).

    Equal to ``scipy.stats.rankdata(block, axis=1)`` for NaN-free input.
    """
    m, n = block.shape
    order = np.argsort(block, axis=1)
    sv = np.take_along_axis(block, order, axis=1)
    pos = np.broadcast_to(np.arange(n), (m, n))
    starts = np.ones((m, n), dtype=bool)
    starts[:, 1:] = sv[:, 1:] != sv[:, :-1]
    ends = np.ones((m, n), dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, pos, n)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((m, n))
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks


def auc_score(test, scores, *, train=None, user_ids=None, average=True):
    r"""Per-user ROC AUC of the scores against the held-out items, averaged over users.

    For user :math:`u` with test items :math:`T_u` and candidate items :math:`C_u`
    (all items, minus the user's training items when ``train`` is given), the negatives
    are :math:`N_u = C_u \setminus T_u` and

    .. math::

        \mathrm{AUC}(u) = \frac{1}{|T_u \cap C_u|\,|N_u|}
            \sum_{i \in T_u \cap C_u} \sum_{j \in N_u}
            \left([s_{ui} > s_{uj}] + \tfrac12 [s_{ui} = s_{uj}]\right),

    computed from average ranks (Mann-Whitney U). Users with no test item among their
    candidates, or no negative, are not counted. A test item that is also a training
    item is excluded, as LightFM does.

    Parameters
    ----------
    test : sparse matrix of shape (n_users, n_items)
        Held-out interactions; nonzero entries are positives.
    scores : float array of shape (n_rows, n_items)
        Predicted scores, higher is better; no NaN and no ``+inf`` (``-inf`` is allowed).
    train : sparse matrix of shape (n_users, n_items), optional
        Training interactions, removed from each user's candidates.
    user_ids : int array of shape (n_rows,), optional
        The user of each row of ``scores``; default ``arange(n_users)``.
    average : bool, default True
        Return the mean over counted users, or the per-row values (NaN if not counted).

    Returns
    -------
    float or ndarray of shape (n_rows,)
    """
    test = _as_interactions(test, "test")
    n_users, n_items = test.shape
    s = np.asarray(scores)
    if s.ndim != 2 or not np.issubdtype(s.dtype, np.floating):
        raise ValueError(
            "auc_score needs a floating-point score matrix of shape (n_rows, n_items), "
            f"got dtype {s.dtype} and shape {s.shape}"
        )
    s = _check_scores(s, n_items)
    if np.isposinf(s).any():
        raise ValueError("auc_score: scores must be below +inf (-inf is allowed)")
    users = _check_user_ids(user_ids, s.shape[0], n_users)
    if train is not None:
        train = _as_interactions(train, "train", test.shape)

    out = np.full(s.shape[0], np.nan)
    step = max(1, _CHUNK_CELLS // max(n_items, 1))
    for start in range(0, s.shape[0], step):  # chunks of users, not one per user
        stop = min(start + step, s.shape[0])
        block = np.array(s[start:stop], dtype=np.float64)
        u = users[start:stop]
        pos = test[u].toarray().astype(bool)
        if train is not None:
            excluded = train[u].toarray().astype(bool)
            pos &= ~excluded
            # above every candidate (scores are < +inf), so candidates' ranks ignore them
            block[excluded] = np.inf
            n_cand = n_items - excluded.sum(axis=1)
        else:
            n_cand = np.full(stop - start, n_items)
        ranks = _average_ranks(block)
        n_pos = pos.sum(axis=1)
        n_neg = n_cand - n_pos
        rank_sum = np.where(pos, ranks, 0.0).sum(axis=1)
        ok = (n_pos > 0) & (n_neg > 0)
        u_stat = rank_sum - n_pos * (n_pos + 1) / 2.0
        out[start:stop] = np.where(ok, u_stat / np.where(ok, n_pos * n_neg, 1), np.nan)
    counted = ~np.isnan(out)
    return _finish(out, counted, average, "auc_score")


# --------------------------------------------------------------------------------------
# Click metrics
# --------------------------------------------------------------------------------------


class ClickMetrics:
    """Streaming metrics of predicted click probabilities, in bounded memory.

    Logloss and the mean prediction are exact sums. AUC and the calibration table come from a
    histogram of the logit ``log(p / (1 - p))`` over ``[-16, 16]`` in ``2**16`` bins (width
    0.0005): pairs within one bin count as ties, so AUC is exact up to that resolution. The
    command line scores its validation and test files with it, chunk by chunk.

    Examples
    --------
    >>> metrics = ClickMetrics()
    >>> metrics.update([0, 1, 1], [0.2, 0.7, 0.9])
    >>> metrics.update([0], [0.6])
    >>> result = metrics.result()
    >>> result["n_rows"], result["auc"], round(result["logloss"], 4)
    (4, 1.0, 0.4004)
    """

    N_BINS = 1 << 16
    LIMIT = 16.0

    def __init__(self):
        self.n = 0
        self.loss = 0.0
        self.sum_p = 0.0
        self.positives = np.zeros(self.N_BINS)
        self.counts = np.zeros(self.N_BINS)
        self.p_sums = np.zeros(self.N_BINS)

    def update(self, y, p) -> None:
        y = np.asarray(y, dtype=np.float64)
        p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1 - 1e-15)
        self.n += y.size
        self.loss -= float(np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)))
        self.sum_p += float(p.sum())
        z = np.clip(np.log(p) - np.log1p(-p), -self.LIMIT, self.LIMIT)
        b = np.minimum(
            ((z + self.LIMIT) / (2 * self.LIMIT) * self.N_BINS).astype(np.int64), self.N_BINS - 1
        )
        self.counts += np.bincount(b, minlength=self.N_BINS)
        self.positives += np.bincount(b, weights=y, minlength=self.N_BINS)
        self.p_sums += np.bincount(b, weights=p, minlength=self.N_BINS)

    def auc(self) -> float | None:
        pos, neg = self.positives, self.counts - self.positives
        n_pos, n_neg = pos.sum(), neg.sum()
        if n_pos == 0 or n_neg == 0:
            return None
        below = np.cumsum(neg) - neg
        return float(np.sum(pos * (below + 0.5 * neg)) / (n_pos * n_neg))

    def calibration(self, n_bins=10) -> list[dict]:
        """Equal-count bins of predictions: mean prediction against observed click rate."""
        cum = np.cumsum(self.counts)
        edges = np.searchsorted(cum, np.linspace(0, self.n, n_bins + 1)[1:-1], side="right")
        table = []
        for lo, hi in zip(np.r_[0, edges], np.r_[edges, self.N_BINS], strict=True):
            n = self.counts[lo:hi].sum()
            if n:
                table.append(
                    {
                        "n": int(n),
                        "mean_prediction": self.p_sums[lo:hi].sum() / n,
                        "observed_rate": self.positives[lo:hi].sum() / n,
                    }
                )
        return table

    def result(self) -> dict:
        if self.n == 0:
            raise ValueError("no rows to evaluate")
        return {
            "n_rows": self.n,
            "logloss": self.loss / self.n,
            "auc": self.auc(),
            "mean_prediction": self.sum_p / self.n,
            "base_rate": float(self.positives.sum() / self.n),
        }
