"""scikit-learn estimators built on the model kernels."""

from ._base import DivergenceError, Training
from ._fm import FFMClassifier, FMClassifier, FMRegressor
from ._linear import SparseLinearRegression, SparseLogisticRegression
from ._mf import MatrixFactorization

__all__ = [
    "DivergenceError",
    "FFMClassifier",
    "FMClassifier",
    "FMRegressor",
    "MatrixFactorization",
    "SparseLinearRegression",
    "SparseLogisticRegression",
    "Training",
]
