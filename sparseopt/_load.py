"""Loading a saved model: :func:`load` reads the file (:mod:`sparseopt._io`) and hands its
fields to the estimator class it names.

It sits above both: the estimators import :mod:`sparseopt._io` to save and check their files,
and only this module knows the estimators, so ``_io`` imports none of them.
"""

from __future__ import annotations

import os

from sklearn.base import BaseEstimator

from . import estimators
from ._io import read_model


def load(path: str | os.PathLike) -> BaseEstimator:
    """Load a model saved with an estimator's ``save`` (no pickle involved).

    Examples
    --------
    >>> import sparseopt
    >>> model = sparseopt.load("model.npz")  # doctest: +SKIP
    """
    name, params, attributes, arrays = read_model(path)
    cls = getattr(estimators, name, None)
    if not (isinstance(cls, type) and hasattr(cls, "_from_file")):
        raise ValueError(f"{path} holds a {name!r}, which this sparseopt cannot load")
    unknown = sorted(set(params) - set(cls._get_param_names()))
    if unknown:
        raise ValueError(f"{path}: model file field 'params' has unknown parameters {unknown}")
    try:
        return cls._from_file(params, attributes, arrays)
    except (TypeError, KeyError, IndexError, AttributeError, ValueError) as exc:
        raise ValueError(f"{path}: the model file does not hold a valid {name}: {exc}") from exc
