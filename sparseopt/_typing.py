"""Type aliases of the public API's signatures (for type checkers: imported by the estimator
modules only under ``TYPE_CHECKING``, so nothing here runs on import)."""

from os import PathLike
from typing import Any

import numpy.typing as npt
import scipy.sparse as sp

# X of the estimators: a dense array-like or any SciPy sparse matrix or array
MatrixLike = npt.ArrayLike | sp.spmatrix | sp.sparray
# FieldHasher's X: a pandas or polars DataFrame, a pyarrow Table, a mapping of column name to
# array, or a 2-D array (no common type: pandas and polars are not dependencies)
TableLike = Any
# a file to read or write
FilePath = str | PathLike
