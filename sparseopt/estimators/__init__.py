"""scikit-learn estimators built on the model kernels."""

from ._linear import DivergenceError, SparseLinearRegression, SparseLogisticRegression

__all__ = ["DivergenceError", "SparseLinearRegression", "SparseLogisticRegression"]
