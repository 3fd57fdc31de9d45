"""scikit-learn estimators built on the model kernels, and each model family's training."""

from ._base import DivergenceError, Training
from ._fm import FFMClassifier, FMClassifier, FMRegressor
from ._fm_training import FMTraining
from ._linear import SparseLinearRegression, SparseLogisticRegression
from ._linear_training import LinearTraining
from ._mf import MatrixFactorization
from ._mf_training import MFTraining

__all__ = [
    "DivergenceError",
    "FFMClassifier",
    "FMClassifier",
    "FMRegressor",
    "FMTraining",
    "LinearTraining",
    "MFTraining",
    "MatrixFactorization",
    "SparseLinearRegression",
    "SparseLogisticRegression",
    "Training",
]
