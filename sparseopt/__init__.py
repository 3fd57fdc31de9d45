"""sparseopt: lazy per-coordinate optimizers for sparse features, compiled with Numba."""

__version__ = "0.1.0"
