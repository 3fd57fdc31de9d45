"""sparseopt: lazy per-coordinate optimizers for sparse features, compiled with Numba.

>>> from sparseopt import SparseLogisticRegression
>>> model = SparseLogisticRegression(optimizer="adagrad", max_iter=5)  # doctest: +SKIP

The estimators and :func:`load` are imported on first use (PEP 562), so that
``import sparseopt`` stays fast: scikit-learn alone takes about a second to import.
"""

import importlib

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS = {
    "DivergenceError": "estimators",
    "FFMClassifier": "estimators",
    "FMClassifier": "estimators",
    "FMRegressor": "estimators",
    "FieldHasher": "datasets",
    "MatrixFactorization": "estimators",
    "SparseLinearRegression": "estimators",
    "SparseLogisticRegression": "estimators",
    "load": "_load",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})
