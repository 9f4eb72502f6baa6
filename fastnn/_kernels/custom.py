"""Calls of user-defined activations from compiled kernels, through function addresses.

A ``fastnn.Activation`` compiles its two scalar functions as C callbacks
(``numba.cfunc``, one pair per dtype) and the layout carries their addresses
(``fastnn._kernels.layout``: ``FN``, ``DFN``). `call_value` and `call_slope`
call them from compiled code through those addresses. The kernels keep one
signature whatever the functions are, so they stay in the on-disk cache: a
kernel taking the functions themselves as arguments is typed by the function
objects, which differ in every process, so it would be compiled again in
every process (checked with Numba 0.68). The price is an indirect call per
element, with no inlining and no vectorisation of the custom activation.

Run as Python (``NUMBA_DISABLE_JIT=1``), the stand-ins look the address up in
`REGISTRY`, which ``fastnn.Activation`` fills when it compiles a pair.
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

# address -> the Python function it was compiled from (for the stand-ins)
REGISTRY = {}


def call_value(address, z):
    """``f(z)`` for the compiled ``f`` at ``address`` (Python stand-in)."""
    return REGISTRY[int(address)](z)


def call_slope(address, z, a):
    """``f'(z, a)`` for the compiled derivative at ``address`` (Python stand-in)."""
    return REGISTRY[int(address)](z, a)


def _codegen(n_args):
    # calls the C function at args[0] with the n_args scalars after it, all of
    # the return type
    def codegen(context, builder, signature, args):
        t = context.get_value_type(signature.return_type)
        pointer = builder.inttoptr(args[0], ir.FunctionType(t, [t] * n_args).as_pointer())
        return builder.call(pointer, list(args[1:]))

    return codegen


@intrinsic
def _call1(typingctx, address, z):
    return z(types.int64, z), _codegen(1)


@intrinsic
def _call2(typingctx, address, z, a):
    return z(types.int64, z, z), _codegen(2)


@overload(call_value)
def _call_value_impl(address, z):
    return lambda address, z: _call1(address, z)


@overload(call_slope)
def _call_slope_impl(address, z, a):
    return lambda address, z, a: _call2(address, z, a)
