"""sparseopt: lazy per-coordinate optimizers for sparse features, compiled with Numba.

>>> from sparseopt import SparseLogisticRegression
>>> model = SparseLogisticRegression(optimizer="adagrad", max_iter=5)  # doctest: +SKIP
"""

from ._io import load
from .estimators import (
    DivergenceError,
    FFMClassifier,
    FMClassifier,
    FMRegressor,
    MatrixFactorization,
    SparseLinearRegression,
    SparseLogisticRegression,
)

__version__ = "0.1.0"

__all__ = [
    "DivergenceError",
    "FFMClassifier",
    "FMClassifier",
    "FMRegressor",
    "MatrixFactorization",
    "SparseLinearRegression",
    "SparseLogisticRegression",
    "__version__",
    "load",
]
