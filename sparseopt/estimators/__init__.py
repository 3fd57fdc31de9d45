"""scikit-learn estimators built on the model kernels."""

from ._fm import FFMClassifier, FMClassifier, FMRegressor
from ._linear import DivergenceError, SparseLinearRegression, SparseLogisticRegression
from ._mf import MatrixFactorization

__all__ = [
    "DivergenceError",
    "FFMClassifier",
    "FMClassifier",
    "FMRegressor",
    "MatrixFactorization",
    "SparseLinearRegression",
    "SparseLogisticRegression",
]
