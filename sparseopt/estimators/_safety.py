"""Checks at the boundary between the estimators and the compiled kernels.

The kernels index their tables with the column ids of the input and with sizes read from
the fitted state, without bounds checks (Numba's default, and the speed of the hot loop).
Everything they index is therefore checked here, in Python, once per call: the structure of
a sparse input (its index arrays against its own shape), the input's width against the
table's own shape, and the fitted tables against the parameters that must have shaped them.
A fit that fails leaves the estimator as it was (:func:`unchanged_on_failure`), and a fit
that ends far worse than a constant prediction is refused (:func:`useless_fit`).
"""

from __future__ import annotations

import functools
import math
import os

import numpy as np
import scipy.sparse as sp

# Largest |weight| (and factor element) a fit may end with. A logistic margin beyond 40 is
# already a probability of 1 - 4e-18, and AdaGrad moves a weight by at most about the
# learning rate per step, so reaching 1e10 takes lr * steps >= 1e10: no sane fit on features
# of moderate scale gets there, while a diverging one passes it within a few steps (FFM at
# learning rate 1e6 ends at 1e66). Regressors scale it by the largest |y|.
MAX_WEIGHT = 1e10
# The loss check needs enough rows for the training loss to judge a fit: one surprising row of
# a good model costs several nats, a small chunk can hold one label only, and scikit-learn's
# own estimator checks fit 100 rows of random labels on unscaled features (centred at 100),
# where our learning rates for the checks end at logloss 50 and are meant to pass. Smaller
# fits are left to the weight-range check.
MIN_ROWS_FOR_LOSS_CHECK = 1000


def unchanged_on_failure(method):
    """Decorate a fitting method: if it raises, every attribute of the estimator is put back.

    scikit-learn's ``validate_data(reset=True)`` sets ``n_features_in_`` (and
    ``feature_names_in_``) before anything else: restoring the attributes keeps a failed
    ``fit`` from leaving a model whose width no longer matches its tables.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        saved = dict(vars(self))
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            vars(self).clear()
            vars(self).update(saved)
            raise

    return wrapper


# -- sparse input -------------------------------------------------------------------------
def _check_index_array(name, values, bound, what):
    """``values`` are integers in ``[0, bound)`` (one pass: negative ids read as unsigned)."""
    if values.dtype.kind not in "iu":
        raise ValueError(f"sparse input {name} must be integers, got dtype {values.dtype}")
    if values.size == 0:
        return
    top = values.view(np.dtype(f"u{values.dtype.itemsize}")).max()
    if top >= bound:
        bad = values[(values < 0) | (values >= bound)][0]
        raise ValueError(
            f"sparse input has {what} index {bad}, out of range for its shape (0 .. "
            f"{bound - 1}): its {name} array is corrupted"
        )


def check_sparse_structure(X, csr_indices: bool = True) -> None:
    """Raise ValueError unless the index arrays of sparse ``X`` are consistent with its shape.

    SciPy checks them when a matrix is built, not after its arrays are modified, and its own
    conversions (CSC, BSR or COO to CSR) write out of bounds on a corrupted matrix. Costs one
    pass over the indices; dense input and the other sparse formats (whose conversions are
    NumPy code) pass through. ``csr_indices=False`` leaves a CSR matrix's column indices to
    :func:`check_nonzeros` (SciPy's CSR code that runs before it never indexes by column).
    """
    if not sp.issparse(X):
        return
    if X.format in ("csr", "csc", "bsr"):
        csr = X.format != "csc"
        major, minor = X.shape if csr else X.shape[::-1]
        if X.format == "bsr":  # block rows and columns
            major, minor = major // X.blocksize[0], minor // X.blocksize[1]
        indptr, indices = np.asarray(X.indptr), np.asarray(X.indices)
        if indptr.ndim != 1 or indptr.shape[0] != major + 1 or indptr.dtype.kind not in "iu":
            raise ValueError(
                f"sparse input's indptr has shape {indptr.shape} ({indptr.dtype}), not "
                f"({major + 1},) integers for its {major} {'rows' if csr else 'columns'}"
            )
        nnz = int(indptr[-1])
        if (
            indptr[0] != 0
            or indices.ndim != 1
            or np.asarray(X.data).shape[:1] != indices.shape
            or (X.format == "bsr" and np.asarray(X.data).shape[1:] != X.blocksize)
            or not 0 <= nnz <= indices.shape[0]
            or (major and np.diff(indptr).min() < 0)
        ):
            raise ValueError(
                "sparse input's indptr is not a valid row pointer (it must start at 0, never "
                "decrease, and end at most at the number of stored entries)"
            )
        if csr_indices or X.format != "csr":
            _check_index_array("indices", indices[:nnz], minor, "column" if csr else "row")
    elif X.format == "coo":
        row, col = np.asarray(X.row), np.asarray(X.col)
        if row.shape != col.shape or row.ndim != 1 or np.asarray(X.data).shape != row.shape:
            raise ValueError("sparse input's row, col and data arrays differ in length")
        _check_index_array("row", row, X.shape[0], "row")
        _check_index_array("col", col, X.shape[1], "column")


def check_nonzeros(X, n_threads: int = 1) -> None:
    """Raise ValueError unless every stored entry of CSR ``X`` has a column in
    ``[0, n_columns)`` and a finite value.

    Two reductions, split over ``n_threads`` threads (NumPy's release the GIL): the largest
    column index read as unsigned (a negative one reads as huge, see
    :func:`_check_index_array`), and the sum of the values, finite unless a value is NaN or
    infinite or the sum overflows (then the values are checked one by one). Fewer than 2^20
    entries per thread take one thread (starting one costs more than it saves).
    """
    from ..models._hogwild import map_threads, thread_ranges

    nnz = int(X.indptr[-1])
    indices, values = X.indices[:nnz], X.data[:nnz]
    if indices.dtype.kind not in "iu":
        raise ValueError(f"sparse input indices must be integers, got dtype {indices.dtype}")
    unsigned = indices.view(np.dtype(f"u{indices.dtype.itemsize}"))
    edges = thread_ranges(nnz, max(1, min(n_threads, nnz // (1 << 20))))

    def reduce(p):
        part = slice(edges[p], edges[p + 1])
        with np.errstate(over="ignore"):  # an infinite sum: the values are checked below
            return unsigned[part].max(initial=0), values[part].sum()

    parts = map_threads(reduce, len(edges) - 1) if len(edges) > 2 else [reduce(0)]
    if max(top for top, _ in parts) >= X.shape[1]:
        _check_index_array("indices", indices, X.shape[1], "column")
    if not all(np.isfinite(total) for _, total in parts):
        if np.isnan(values).any():
            raise ValueError("Input X contains NaN.")
        if not np.isfinite(values).all():
            raise ValueError(f"Input X contains infinity or a value too large for {values.dtype}.")


def check_input_width(X, n_columns: int, what: str) -> None:
    """The kernels read ``n_columns`` rows of a table: refuse wider input."""
    if X.shape[1] != n_columns:
        raise ValueError(
            f"X has {X.shape[1]} features, but the fitted {what} holds {n_columns}: "
            f"the model's tables do not match its n_features_in_; refit the model"
        )


# -- fitted tables ------------------------------------------------------------------------
def check_array(name: str, value, shape: tuple | None, dtypes) -> np.ndarray:
    """``value`` is a C-contiguous ndarray of one of ``dtypes`` (native byte order) with
    exactly ``shape`` (None: any)."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array, got {type(value).__name__}")
    dtypes = [np.dtype(d) for d in (dtypes if isinstance(dtypes, tuple | list) else [dtypes])]
    if value.dtype not in dtypes:
        wanted = " or ".join(d.name for d in dtypes)
        raise ValueError(f"{name} has dtype {value.dtype.str}, expected {wanted}")
    if shape is not None and value.shape != tuple(shape):
        raise ValueError(f"{name} has shape {value.shape}, expected {tuple(shape)}")
    if not value.flags.c_contiguous:
        raise ValueError(f"{name} is not a C-contiguous array")
    return value


def check_table_size(n_bytes: int, what: str) -> None:
    """Refuse, before allocating, a table larger than the memory this machine has free."""
    limit = available_memory()
    if limit is not None and n_bytes > limit:
        raise ValueError(
            f"{what} needs {n_bytes:,} bytes ({n_bytes / 2**30:.1f} GiB), more than the "
            f"{limit / 2**30:.1f} GiB of memory available: use fewer columns (a smaller "
            f"n_bits when hashing) or fewer components"
        )


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable, else the
    physical memory), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def all_finite(*arrays) -> bool:
    """Whether every value in ``arrays`` is finite, without a temporary array.

    ``np.isfinite(a).all()`` first fills a boolean array as large as ``a`` (64 MB for a
    factorization machine's factors at 2^22 columns, k = 8), whose fresh pages cost up to
    0.2 s of system time per fit; ``max`` and ``min`` propagate NaN and meet any infinity.
    """
    return all(a.size == 0 or bool(np.isfinite(a.max()) and np.isfinite(a.min())) for a in arrays)


def largest_magnitude(*arrays) -> float:
    """The largest ``|value|`` in ``arrays`` (0.0 if they are empty; NaN if one holds a NaN),
    without a temporary array.

    ``np.abs(w).max()`` copies ``w`` first: for a factorization machine's factors (2^22
    columns, k = 8: a 134 MB copy) the fresh pages cost 0.2-0.4 s of system time per fit,
    against about 1 s for the epoch itself (``benchmarks/README.md``, the FM minibatch
    regression). ``max`` and ``min`` reduce a strided view in place.
    """
    largest = 0.0
    for a in arrays:
        if a.size:
            largest = np.maximum(largest, np.maximum(a.max(), -a.min()))  # NaN propagates
    return float(largest)


# -- training that ends useless -----------------------------------------------------------
def _entropy(p):
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def zero_model_loss(kind: str, targets, weights, delta: float = 0.0, n_classes: int = 2):
    """Mean loss of the all-zero model (where training starts): ``log(n_classes)`` for the
    logistic and softmax losses, without a pass over the data."""
    if kind in ("logistic", "softmax"):
        return math.log(n_classes)
    return constant_loss(kind, targets, weights, delta, center=0.0)


def constant_loss(kind: str, targets, weights, delta: float = 0.0, center=None) -> float:
    """Mean loss of the best constant prediction: the (weighted) base rates' entropy for
    classifiers (targets are class indices), the mean's for the squared loss (half the
    variance), the median's for Huber's loss (``delta``: its threshold); a regressor's
    loss of the prediction ``center`` instead when given."""
    t = np.asarray(targets, dtype=np.float64)
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64), t.shape)
    total = float(w.sum())
    if not total > 0:
        return 0.0
    if kind == "logistic":
        p = float(w @ t) / total
        return _entropy(np.array([p, 1.0 - p]))
    if kind == "softmax":
        return _entropy(np.bincount(t.astype(np.intp), weights=w) / total)
    if center is None and kind == "squared":
        center = float(w @ t) / total
    elif center is None:
        order = np.argsort(t)
        half = np.searchsorted(np.cumsum(w[order]), 0.5 * total)
        center = t[order][min(half, t.size - 1)]
    r = t - center
    with np.errstate(over="ignore"):  # targets near the float range: an infinite loss
        if kind == "squared":
            return 0.5 * float(w @ r**2) / total
        a = np.abs(r)
        return float(w @ np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))) / total


def useless_fit(
    loss: float, n_rows: int, zero: float, constant, min_rows: int = MIN_ROWS_FOR_LOSS_CHECK
) -> bool:
    """Whether a training loss is far worse than predicting a constant.

    Far worse: above twice the best constant's loss plus the all-zero model's (where
    training starts), e.g. 2 * 0.53 + 0.69 = 1.75 for logistic regression at a 25% base
    rate. A learner that is merely slow stays near its starting loss; one that diverged
    ends far above (logloss 3 to 10 and beyond in the cases that prompted this check).
    ``constant`` is the best constant's loss, or a function computing it: called only when
    the loss exceeds the all-zero model's, so a sane fit pays no pass over the data.
    Fits of fewer than ``min_rows`` rows are not judged.
    """
    if n_rows < min_rows or loss <= zero:
        return False
    constant = constant() if callable(constant) else constant
    return not loss <= 2.0 * constant + zero
