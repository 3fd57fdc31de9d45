"""GPU training with numba-cuda: device detection and the choice between CPU and GPU.

This module imports nothing from CUDA: ``import sparseopt`` stays free of it, and
:func:`available` and :func:`unavailable_reason` import ``numba.cuda`` only when asked. The
kernels are in :mod:`sparseopt.cuda._linear`; they call the same rule functions as the CPU kernels
(:mod:`sparseopt.optim._rules`), which numba-cuda compiles again as device functions.

Under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set before numba is imported) the GPU
path runs on the CPU in Python, for tests; the rule functions must then run as Python too
(``NUMBA_DISABLE_JIT=1``), since the simulator's arrays cannot be passed to compiled code.
"""

from __future__ import annotations

import functools
import importlib.util

# compute capability below which sparseopt does not use a GPU (Volta and newer)
MIN_COMPUTE_CAPABILITY = (7, 0)
# device="auto" trains on the GPU from this many stored values in X and this batch size:
# smaller runs are dominated by transfers and by one kernel launch per batch
AUTO_MIN_NNZ = 10_000_000
AUTO_MIN_BATCH_SIZE = 1024

_INSTALL = "install it with `pip install 'sparseopt[cuda12]'` (or cuda13 for CUDA 13 drivers)"


def available() -> bool:
    """Whether a GPU is usable for ``device="cuda"`` (:func:`unavailable_reason` says why not).

    .. versionchanged:: 0.2
        Returns a bool. It returned None when a GPU was usable and the reason when not, so
        ``if sparseopt.cuda.available():`` was true on a machine without a GPU; that value
        is now :func:`unavailable_reason`'s. No value could keep the old ``is None`` checks
        working and make the ``if`` right, so the change is not behind a deprecation.
    """
    return unavailable_reason() is None


@functools.cache
def unavailable_reason() -> str | None:
    """Why no GPU is usable (a sentence), or None when one is."""
    if importlib.util.find_spec("numba_cuda") is None:
        return f"numba-cuda is not installed: {_INSTALL}"
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        return None
    try:
        cuda.current_context()
        device = cuda.get_current_device()
    except Exception as exc:  # the driver's own message says what is missing
        message = " ".join(str(exc).split()).rstrip(": ")
        return f"no usable CUDA driver or GPU ({type(exc).__name__}: {message})"
    cc = tuple(device.compute_capability)
    if cc < MIN_COMPUTE_CAPABILITY:
        need = ".".join(map(str, MIN_COMPUTE_CAPABILITY))
        return (
            f"GPU {device.name.decode() if isinstance(device.name, bytes) else device.name} "
            f"has compute capability {cc[0]}.{cc[1]}; sparseopt needs {need} or newer"
        )
    return None


def require() -> None:
    """Raise a RuntimeError saying why ``device="cuda"`` cannot be used, if it cannot."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"device='cuda' is not usable: {reason}. Use device='cpu' or 'auto'.")


def use_gpu(device: str, nnz: int, batch_size: int) -> bool:
    """Whether to train on the GPU: always for "cuda", for "auto" when usable and worth it."""
    if device == "cuda":
        return True
    if device != "auto" or nnz < AUTO_MIN_NNZ or batch_size < AUTO_MIN_BATCH_SIZE:
        return False
    return available()
