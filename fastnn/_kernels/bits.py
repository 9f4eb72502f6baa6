"""Floats as their bit patterns: the exp's scaling and the finiteness checks.

``exp_nonpositive`` (``fastnn._kernels.fastexp``) builds ``2**k`` from an
integer and reads ``k`` back from a float's low bits; the checks that a
gradient is finite (``fastnn._kernels.tiled.largest``) take the largest
magnitude of a block as an integer. Both reinterpret a float's bits with an
LLVM ``bitcast`` (the intrinsics below), which costs no instruction.

Why integers for the largest magnitude: without fast-math flags, LLVM keeps
a float maximum over a loop scalar (``maxsd`` after ``maxsd``, each waiting
for the last, 0.64 ns a value on the development machine), because the
order of comparisons with NaN matters. The magnitude's bits, ``bits & ~sign``,
compare as integers as the floats do, with infinity above every finite value
and NaN above infinity; an integer maximum vectorises.
"""

import numpy as np
from numba import types
from numba.extending import intrinsic, overload

MAGNITUDE_64 = (1 << 63) - 1  # every bit but the sign
MAGNITUDE_32 = (1 << 31) - 1
INF_BITS_64 = int(np.array(np.inf).view(np.int64))
INF_BITS_32 = int(np.array(np.float32(np.inf)).view(np.int32))


def _bitcast(source, target):
    # an intrinsic reinterpreting the bits of a `source` scalar as a `target` one
    @intrinsic
    def reinterpret(typingctx, value):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    return reinterpret


int64_as_float64 = _bitcast(types.int64, types.float64)
int32_as_float32 = _bitcast(types.int32, types.float32)
float64_as_int64 = _bitcast(types.float64, types.int64)
float32_as_int32 = _bitcast(types.float32, types.int32)


def magnitude_bits(x):
    """The bits of ``|x|`` as an integer of x's width (Python stand-in; compiled code uses the overload)."""
    if isinstance(x, np.float32):
        return np.int32(np.array(x, dtype=np.float32).view(np.int32) & MAGNITUDE_32)
    return np.int64(np.array(x, dtype=np.float64).view(np.int64) & MAGNITUDE_64)


def magnitude_of_bits(bits, like):
    """The float64 of `magnitude_bits` ``bits`` of a ``like``-typed float; inf for inf and NaN.

    (Python stand-in; compiled code uses the overload.)
    """
    if isinstance(like, np.float32):
        if bits >= INF_BITS_32:
            return np.inf
        return float(np.array(bits, dtype=np.int32).view(np.float32))
    if bits >= INF_BITS_64:
        return np.inf
    return float(np.array(bits, dtype=np.int64).view(np.float64))


@overload(magnitude_bits)
def _magnitude_bits_impl(x):
    if x == types.float32:
        return lambda x: float32_as_int32(x) & np.int32(MAGNITUDE_32)
    if x == types.float64:
        return lambda x: float64_as_int64(x) & np.int64(MAGNITUDE_64)
    return None


@overload(magnitude_of_bits)
def _magnitude_of_bits_impl(bits, like):
    if like == types.float32:

        def impl(bits, like):
            if bits >= INF_BITS_32:
                return np.inf
            return np.float64(int32_as_float32(np.int32(bits)))

        return impl
    if like == types.float64:

        def impl(bits, like):
            if bits >= INF_BITS_64:
                return np.inf
            return int64_as_float64(np.int64(bits))

        return impl
    return None
