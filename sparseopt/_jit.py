"""Numba compilation options shared by every kernel, and a watch on compile time.

The fastmath flags are the safe subset: they allow reassociation and fused multiply-add but
not the assumption that values are finite, so ``np.isfinite`` checks stay real (full fastmath
lets LLVM delete them, which hides diverging learning rates).
"""

import sys
import threading
import time
from contextlib import contextmanager, nullcontext

import numba
from llvmlite import ir
from numba.core import cgutils, event, types
from numba.extending import intrinsic

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

JIT = dict(nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")
PARALLEL_JIT = dict(JIT, parallel=True)


class _CompileWatch(event.Listener):
    """Counts the seconds spent compiling (disk-cache misses only; Numba emits no compile
    event for a cache hit) and announces the first compile inside :func:`announce_compile`."""

    def __init__(self):
        self.seconds = 0.0
        self.notice = None  # (message, write) while announce_compile is active
        self._local = threading.local()

    def on_start(self, event):
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        if depth == 0:
            self._local.started = time.perf_counter()
            notice, self.notice = self.notice, None
            if notice is not None:
                message, write = notice
                write(message)

    def on_end(self, event):
        self._local.depth -= 1
        if self._local.depth == 0:
            self.seconds += time.perf_counter() - self._local.started


_watch = _CompileWatch()
event.register("numba:compile", _watch)


def compile_seconds() -> float:
    """Seconds this process has spent compiling kernels so far (rates exclude them)."""
    return _watch.seconds


@contextmanager
def announce_compile(what: str, write):
    """Within the block, the first kernel that compiles (not in the disk cache) first calls
    ``write`` with one line saying so: a first run waits seconds, later runs do not."""
    _watch.notice = (f"compiling the {what} kernels (first run only; cached for later runs)",
                     write)  # fmt: skip
    try:
        yield
    finally:
        _watch.notice = None


@intrinsic
def prefetch(typingctx, array, index):
    """Ask the CPU to bring ``array[index]`` (``array[index, 0]`` for a table) into cache.

    A hint (LLVM's ``llvm.prefetch``): it never faults and changes no result. Kernels that
    visit rows in shuffled order use it to fetch the rows and weights they will need a few
    rows ahead, which hides the memory latency the hardware prefetcher cannot predict.
    """

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        position = [args[1]] + [zero] * (array_type.ndim - 1)
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, position)
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]),
            "llvm.prefetch.p0",
        )
        # read access, high temporal locality, data cache
        builder.call(function, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@intrinsic
def borrowed(typingctx, array):
    """The same array without its reference count: a view whose meminfo is null.

    Numba counts references to every array a variable holds, with an atomic increment and
    decrement each time an inlined helper takes it; where a kernel's inner loop calls such
    a helper per coordinate, that cost more than the helper's arithmetic. The counting
    functions skip a null meminfo, so a kernel that passes ``borrowed(table)`` to its helpers
    pays a test instead. Only for arrays that the caller keeps alive (a kernel's arguments)
    and that nothing stores or returns.
    """

    def codegen(context, builder, signature, args):
        view = context.make_array(signature.args[0])(context, builder, args[0])
        view.meminfo = cgutils.get_null_value(view.meminfo.type)
        view.parent = cgutils.get_null_value(view.parent.type)
        return view._getvalue()

    return array(array), codegen


if numba.config.DISABLE_JIT:  # kernels run as Python (the CUDA simulator's tests): no hint

    def prefetch(array, index):  # noqa: F811
        pass

    def borrowed(array):  # noqa: F811
        return array


@numba.njit(inline="always", **JIT)
def prefetch_ahead(i, order, indptr, indices, data, y, weights, table, K):
    """Prefetch, for the CSR rows a training loop visits next (``order[i + n]``): row 16's
    extent, row 8's nonzeros, label and weight, row 2's weights (row ``j``'s at
    ``table[j * K]``); each step needs the one before in cache."""
    n = order.size
    if i + 16 < n:
        prefetch(indptr, order[i + 16])
    if i + 8 < n:
        row = order[i + 8]
        lo, hi = indptr[row], indptr[row + 1]
        for k in range(lo, hi, 16):  # one cache line holds 16 four-byte values
            prefetch(indices, k)
            prefetch(data, k)
        prefetch(y, row)
        prefetch(weights, row)
    if i + 2 < n:
        row = order[i + 2]
        for k in range(indptr[row], indptr[row + 1]):
            prefetch(table, indices[k] * K)


def compile_notice(what: str, verbose):
    """:func:`announce_compile` on stderr for an estimator with ``verbose`` set, else nothing."""
    if not verbose:
        return nullcontext()
    return announce_compile(what, lambda line: print(line, file=sys.stderr, flush=True))
