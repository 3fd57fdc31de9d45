"""Which (field, value) pairs drive a model trained on hashed features.

A hashed model is a table of weights indexed by hash columns. :class:`FieldHasher` with
``keep_tokens=True`` remembers which (field, value) pairs it saw and where each one hashed
(:class:`~sparseopt.datasets.Tokens`, saved as arrays and JSON by ``Tokens.save`` and read
back by :func:`load_tokens`), and :func:`top_features` joins the two, in the spirit of
Vowpal Wabbit's ``--invert_hash``.
"""

from __future__ import annotations

from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np

from .datasets._crosses import CROSS_NAME_SEP, CROSS_VALUE_SEP
from .datasets._field_hasher import FieldHasher, Tokens, load_tokens

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["load_tokens", "top_features"]


def _final_step_and_hasher(model, hasher):
    """The model at the end of a pipeline, and its FieldHasher step when none is given."""
    steps = getattr(model, "steps", None)
    if steps is None:
        return model, hasher
    if hasher is None:
        hasher = next((s for _, s in steps if isinstance(s, FieldHasher)), None)
    return steps[-1][1], hasher


def _tokens(hasher) -> Tokens:
    if isinstance(hasher, Tokens):
        return hasher
    if isinstance(hasher, FieldHasher):
        tokens = getattr(hasher, "tokens_", None)
        if tokens is None:
            raise ValueError("the hasher kept no tokens: fit it with FieldHasher(keep_tokens=True)")
        return tokens
    raise TypeError(
        f"hasher must be a fitted FieldHasher or Tokens (load_tokens(path)), got "
        f"{type(hasher).__name__}"
    )


def top_features(
    model: Any,
    hasher: FieldHasher | Tokens | None = None,
    n: int | None = 20,
    field: str | None = None,
) -> pd.DataFrame:
    """The (field, value) pairs with the largest weights in a model, by name.

    Each pair kept by the hasher is looked up at its hashed column. Pairs that share a
    column (hash collisions) share its weight: each is listed, and ``collisions`` says how
    many other kept pairs the column holds, so a shared weight is never taken for one
    pair's. Pairs the hasher did not keep (beyond ``max_tokens`` per field) may share the
    columns too.

    Parameters
    ----------
    model : fitted estimator or Pipeline
        A sparseopt linear model or factorization machine (anything with ``coef_`` of shape
        (n_outputs, 2**n_bits)), or a pipeline ending with one.
    hasher : FieldHasher or Tokens, default=None
        The fitted ``FieldHasher(keep_tokens=True)`` that made the model's features, or its
        tokens (:func:`load_tokens`). None: the FieldHasher step of ``model``, a pipeline.
    n : int or None, default=20
        Number of rows returned (at most; None: every kept pair).
    field : str, default=None
        Only the pairs of this field.

    Returns
    -------
    features : pandas.DataFrame
        One row per (field, value) pair, sorted by effect (the largest absolute weight,
        over the classes for a multinomial model): ``field``, ``value`` (the text hashed;
        ``""`` for a missing value, or a number's column; a cross's field and value read
        ``"site x app"`` and ``"a x b"``), ``weight`` (``weight[c]`` per
        class ``c`` for a multinomial model), ``factor_norm`` (factorization machines: the
        norm of the column's factors), ``count`` (rows with the pair when the hasher was
        fitted), ``column`` and ``collisions``.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sparseopt import FieldHasher, SparseLogisticRegression
    >>> from sparseopt.datasets import make_ctr
    >>> from sparseopt.inspect import top_features
    >>> data = make_ctr(20_000, n_fields=5, n_planted=3, as_frame=True, random_state=0)
    >>> pipe = make_pipeline(FieldHasher(n_bits=16, keep_tokens=True),
    ...                      SparseLogisticRegression(max_iter=3))
    >>> top = top_features(pipe.fit(data.frame, data.y), n=5)
    >>> list(top.columns)
    ['field', 'value', 'weight', 'count', 'column', 'collisions']
    """
    import pandas as pd  # only here: pandas is not a dependency of sparseopt

    if n is not None and (isinstance(n, bool) or not isinstance(n, Integral) or n < 0):
        raise ValueError(f"n must be a number of rows (an integer >= 0) or None, got {n!r}")
    model, tokens = _model_and_tokens(model, hasher)
    frame, weights = _feature_rows(model, tokens, field)
    order = np.argsort(-np.abs(weights).max(axis=0), kind="stable")[:n]
    return pd.DataFrame(frame).iloc[order].reset_index(drop=True)


def _model_and_tokens(model, hasher) -> tuple[Any, Tokens]:
    """The estimator at the end of ``model`` and the checked tokens of its hasher, whose
    columns must be the estimator's."""
    model, hasher = _final_step_and_hasher(model, hasher)
    if hasher is None:
        raise ValueError("pass the FieldHasher (or its tokens) that made the model's features")
    tokens = _tokens(hasher)
    tokens.check()  # built by hand or edited: its columns index the weights below
    coef = np.asarray(model.coef_)
    if coef.shape[-1] != 1 << tokens.n_bits:
        raise ValueError(
            f"the model has {coef.shape[-1]} features but the hasher hashes into 2**"
            f"{tokens.n_bits} = {1 << tokens.n_bits} columns: they were not trained together"
        )
    return model, tokens


def _feature_rows(model, tokens: Tokens, field: str | None) -> tuple[dict, np.ndarray]:
    """The columns of :func:`top_features`' table for the kept pairs (of ``field`` only,
    when given), and their weights, one row per class."""
    coef = np.asarray(model.coef_)
    keep = np.ones(tokens.field.size, dtype=bool)
    names = np.asarray(tokens.field_names, dtype=object)
    if field is not None:
        if field not in tokens.field_names:
            raise ValueError(f"no field {field!r}; the fields are {tokens.field_names}")
        keep = names[tokens.field] == field
    column = tokens.column[keep]
    _, inverse, per_column = np.unique(tokens.column, return_inverse=True, return_counts=True)
    values = tokens.value[keep]
    if len(tokens.crosses):  # a cross's value "a x b", as its field is named "site x app"
        values = np.array([v.replace(CROSS_VALUE_SEP, CROSS_NAME_SEP) for v in values], object)
    frame = {"field": names[tokens.field[keep]], "value": values}
    weights = coef[:, column]
    classes = getattr(model, "classes_", None)
    if coef.shape[0] == 1:
        frame["weight"] = weights[0]
    else:
        labels = classes if classes is not None else range(coef.shape[0])
        frame.update({f"weight[{c}]": w for c, w in zip(labels, weights, strict=True)})
    if hasattr(model, "factors_"):
        factors = np.asarray(model.factors_)  # (n_features, [n_fields,] n_components)
        frame["factor_norm"] = np.linalg.norm(factors.reshape(len(factors), -1)[column], axis=1)
    frame["count"] = tokens.count[keep]
    frame["column"] = column
    frame["collisions"] = per_column[inverse[keep]] - 1
    return frame, weights
