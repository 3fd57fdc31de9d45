"""Numba compilation options shared by every kernel.

The fastmath flags are the safe subset: they allow reassociation and fused multiply-add but
not the assumption that values are finite, so ``np.isfinite`` checks stay real (full fastmath
lets LLVM delete them, which hides diverging learning rates).
"""

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

JIT = dict(nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")
PARALLEL_JIT = dict(JIT, parallel=True)
