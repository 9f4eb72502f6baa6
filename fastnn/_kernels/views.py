"""Array views made without ``reshape`` / ``ravel``.

Numba's ``reshape`` (and ``ravel``, which uses it) compiles an error path
that formats the shapes into a message: string formatting that took about
a quarter of a cold compile of the training kernels (measured: 3.2 s of
11 s on a loaded 2-core machine). The kernels only ever reshape slices of
their own contiguous buffers into shapes of the same size, so these
intrinsics build the view directly (same data pointer and owner, C strides)
and have no error path: the callers guarantee the sizes.
"""

from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload
from numba.np.arrayobj import populate_array


def _view(context, builder, src_type, src_value, out_type, dims):
    src = context.make_array(src_type)(context, builder, src_value)
    out = context.make_array(out_type)(context, builder)
    intp = context.get_value_type(types.intp)
    itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(src_type.dtype)))
    dims = [builder.sext(d, intp) if d.type.width < intp.width else d for d in dims]
    strides = []
    step = itemsize
    for d in reversed(dims):
        strides.append(step)
        step = builder.mul(step, d)
    strides.reverse()
    populate_array(
        out,
        data=src.data,
        shape=cgutils.pack_array(builder, dims),
        strides=cgutils.pack_array(builder, strides),
        itemsize=src.itemsize,
        meminfo=src.meminfo,
        parent=src.parent,
    )
    return impl_ret_borrowed(context, builder, out_type, out._getvalue())


@intrinsic
def _matrix_view(typingctx, a, rows, cols):
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"):
        return None
    out_type = types.Array(a.dtype, 2, "C")
    sig = out_type(a, rows, cols)

    def codegen(context, builder, signature, args):
        r = context.cast(builder, args[1], signature.args[1], types.intp)
        c = context.cast(builder, args[2], signature.args[2], types.intp)
        return _view(context, builder, signature.args[0], args[0], signature.return_type, [r, c])

    return sig, codegen


@intrinsic
def _flat_view(typingctx, a):
    out_type = types.Array(a.dtype, 1, "C")
    sig = out_type(a)

    def codegen(context, builder, signature, args):
        src_type = signature.args[0]
        src = context.make_array(src_type)(context, builder, args[0])
        size = src.nitems
        return _view(context, builder, src_type, args[0], signature.return_type, [size])

    return sig, codegen


def as_matrix(a, rows, cols):
    """``a.reshape((rows, cols))`` for a contiguous 1-D ``a`` of exactly ``rows * cols`` elements
    (Python stand-in; compiled code uses the overload)."""
    return a.reshape((rows, cols))


@overload(as_matrix)
def _as_matrix_impl(a, rows, cols):
    if isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C":
        return lambda a, rows, cols: _matrix_view(a, rows, cols)
    return lambda a, rows, cols: a.reshape((rows, cols))


def flat(a):
    """``a.ravel()`` (Python stand-in; compiled code uses the overload)."""
    return a.ravel()


@overload(flat)
def _flat_impl(a):
    if isinstance(a, types.Array) and a.layout == "C":
        return lambda a: _flat_view(a)
    return lambda a: a.ravel()  # not contiguous: a copy, as ravel makes
