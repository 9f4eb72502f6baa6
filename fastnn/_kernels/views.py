"""Array views made without ``reshape`` / ``ravel``.

Numba's ``reshape`` (and ``ravel``, which uses it) compiles an error path
that formats the shapes into a message: string formatting that took about
a quarter of a cold compile of the training kernels (measured: 3.2 s of
11 s on a loaded 2-core machine). The kernels only ever reshape slices of
their own contiguous buffers into shapes of the same size, so these
intrinsics build the view directly (same data pointer and owner, C strides)
and have no error path: the callers guarantee the sizes.

`span` (a row of a buffer) and `unowned` (the arrays of a bundle) make views
that hold no reference to their memory: every slice made in compiled code,
and every array passed to a compiled function, otherwise costs an atomic
increment and decrement of a reference count, which the kernels' row loops
and task calls paid thousands of times a step. `c_layout` says whether an
array's compiled type is C-contiguous, so that `flat` of it is a view.
"""

from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic, overload
from numba.np.arrayobj import populate_array


def _view(context, builder, src_type, src_value, out_type, dims, first=None, owned=True):
    # a C-contiguous view of `dims` from the source's data (from its element
    # `first`, an intp, when given); owned=False: holding no reference
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
        data=src.data if first is None else builder.gep(src.data, [first]),
        shape=cgutils.pack_array(builder, dims),
        strides=cgutils.pack_array(builder, strides),
        itemsize=src.itemsize,
        meminfo=src.meminfo if owned else cgutils.get_null_value(src.meminfo.type),
        parent=src.parent if owned else cgutils.get_null_value(src.parent.type),
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


@intrinsic
def _span_view(typingctx, a, start, length):
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"):
        return None
    out_type = types.Array(a.dtype, 1, "C")
    sig = out_type(a, start, length)

    def codegen(context, builder, signature, args):
        first = context.cast(builder, args[1], signature.args[1], types.intp)
        size = context.cast(builder, args[2], signature.args[2], types.intp)
        return _view(context, builder, signature.args[0], args[0], out_type, [size], first, owned=False)

    return sig, codegen


def span(a, start, length):
    """``a[start : start + length]`` of a contiguous 1-D ``a``, as a view that
    holds no reference to ``a``'s memory (Python stand-in; compiled code uses
    the overload).

    A slice made in compiled code increments and decrements its buffer's
    reference count (Numba's NRT), an atomic operation each, which Numba
    could not prune in the kernels' row loops: a quarter of a one-thread
    step of 4096 x 64-16-10 went to them, and with several workers every
    slice of a shared buffer bounces one cache line between the cores. A
    span is for a loop over the rows of a buffer that its caller holds for
    the whole loop; it must not outlive the call, nor be returned. The
    callers guarantee the bounds.
    """
    return a[start : start + length]


@overload(span)
def _span_impl(a, start, length):
    if isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C":
        return lambda a, start, length: _span_view(a, start, length)
    return lambda a, start, length: a[start : start + length]


def flat(a):
    """``a.ravel()`` (Python stand-in; compiled code uses the overload)."""
    return a.ravel()


@overload(flat)
def _flat_impl(a):
    if isinstance(a, types.Array) and a.layout == "C":
        return lambda a: _flat_view(a)
    return lambda a: a.ravel()  # not contiguous: a copy, as ravel makes


def c_layout(a):
    """Whether ``a`` is C-contiguous by its compiled type, so that `flat` is a view of it, not a copy
    (Python stand-in: its flags)."""
    return a.flags.c_contiguous


@overload(c_layout)
def _c_layout_impl(a):
    if isinstance(a, types.Array) and a.layout == "C":
        return lambda a: True
    return lambda a: False


def _without_owner(context, builder, ty, value):
    # `value` of type `ty` with every array in it (at any depth of tuples)
    # holding no reference: null meminfo and parent
    if isinstance(ty, types.Array):
        ary = context.make_array(ty)(context, builder, value)
        ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
        ary.parent = cgutils.get_null_value(ary.parent.type)
        return ary._getvalue()
    if isinstance(ty, types.BaseTuple):
        for i, member in enumerate(ty):
            inner = _without_owner(context, builder, member, builder.extract_value(value, i))
            value = builder.insert_value(value, inner, i)
        return value
    return value


@intrinsic
def _unowned(typingctx, value):
    sig = value(value)

    def codegen(context, builder, signature, args):
        return _without_owner(context, builder, signature.args[0], args[0])

    return sig, codegen


def unowned(value):
    """``value`` (an array or a tuple of them, at any depth), its arrays
    holding no reference to their memory (Python stand-in: ``value``).

    Every compiled function increments the reference count of each array it
    is passed, and decrements it on return (Numba's NRT: an atomic operation
    each). A task that takes a bundle of twenty arrays pays forty of them per
    call, and workers that share the bundles bounce their counts' cache
    lines between the cores. A kernel whose caller holds its arguments for
    the whole call (a call from Python does) makes them unowned once at the
    top: below it, a reference count is a test of a null pointer. Nothing
    unowned may be returned or kept beyond the call.
    """
    return value


@overload(unowned)
def _unowned_impl(value):
    return lambda value: _unowned(value)


def unless_none(flag, value):
    """None when ``flag`` is None, else ``value``: chosen by ``flag``'s compiled type, so that the
    code for the other case is not even typed (Python stand-in: the same test at run time).

    Numba prunes a branch ``if flag is None`` before compiling only when ``flag`` is None: with
    ``flag`` of another type, both branches are compiled, and a branch that calls a kernel with
    None compiles a whole specialisation of it that never runs. One call with
    ``unless_none(flag, value)`` as the argument compiles only the one that does.
    """
    return None if flag is None else value


@overload(unless_none)
def _unless_none_impl(flag, value):
    if isinstance(flag, types.NoneType):
        return lambda flag, value: None
    return lambda flag, value: value
