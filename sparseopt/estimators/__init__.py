"""scikit-learn estimators built on the model kernels."""

from ._linear import DivergenceError, SparseLinearRegression, SparseLogisticRegression
from ._mf import MatrixFactorization

__all__ = [
    "DivergenceError",
    "MatrixFactorization",
    "SparseLinearRegression",
    "SparseLogisticRegression",
]
