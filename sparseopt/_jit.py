"""Numba compilation options shared by every kernel.

The fastmath flags are the safe subset: they allow reassociation and fused multiply-add but
not the assumption that values are finite, so ``np.isfinite`` checks stay real (full fastmath
lets LLVM delete them, which hides diverging learning rates).
"""

import numba
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

JIT = dict(nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")
PARALLEL_JIT = dict(JIT, parallel=True)


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


if numba.config.DISABLE_JIT:  # kernels run as Python (the CUDA simulator's tests): no hint

    def prefetch(array, index):  # noqa: F811
        pass
