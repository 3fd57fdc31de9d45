"""Optimizer rules in modules of their own, one per module: :mod:`sparseopt.optim` imports
each module here, and each registers itself (see :mod:`sparseopt.optim._registry`)."""
