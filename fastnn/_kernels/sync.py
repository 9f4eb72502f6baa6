"""Atomic operations on int64 array elements, for the threads of the training kernel.

``train_parallel`` runs the slots of the training loop on separate threads
(the calling one and helpers), which wait for each other through counters in
an int64 array (see ``fastnn._kernels.train``); `pause` lets other threads
run during a long wait. Numba compiles plain array accesses as ordinary
loads and stores, which the compiler may keep in registers or reorder; these
compile to LLVM's atomic instructions with sequential consistency, so that a
thread that reads a counter sees everything the other thread wrote before
increasing it.

Each takes the array and an index (no bounds check, no negative indices).
The Python stand-ins (for ``NUMBA_DISABLE_JIT=1``) hold a lock instead.
"""

import os
import threading
import time

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from fastnn._kernels._jit import kernel

_lock = threading.Lock()
# the C library's sched_yield, where there is one (POSIX): compiled code
# calls it by name, so a cached kernel does not hold its address
_sched_yield = types.ExternalFunction("sched_yield", types.intc()) if os.name == "posix" else None


def _pointer(context, builder, array_type, array, index):
    ary = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, ary, [index], wraparound=False)


def _int64_array(a):
    return isinstance(a, types.Array) and a.dtype == types.int64 and a.ndim == 1


@intrinsic
def _atomic_add(typingctx, a, index, value):
    if not (_int64_array(a) and isinstance(index, types.Integer)):
        return None
    if not isinstance(value, types.Integer):
        return None
    sig = types.int64(a, index, value)

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        v = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", ptr, v, "seq_cst")

    return sig, codegen


@intrinsic
def _atomic_load(typingctx, a, index):
    if not (_int64_array(a) and isinstance(index, types.Integer)):
        return None
    sig = types.int64(a, index)

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "seq_cst", 8)

    return sig, codegen


@intrinsic
def _atomic_cas(typingctx, a, index, expected, new):
    if not (_int64_array(a) and isinstance(index, types.Integer)):
        return None
    if not (isinstance(expected, types.Integer) and isinstance(new, types.Integer)):
        return None
    sig = types.int64(a, index, expected, new)

    def codegen(context, builder, signature, args):
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        e = context.cast(builder, args[2], signature.args[2], types.int64)
        n = context.cast(builder, args[3], signature.args[3], types.int64)
        pair = builder.cmpxchg(ptr, e, n, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return sig, codegen


def atomic_add(a, index, value):
    """``a[index] += value`` atomically; returns the value before."""
    with _lock:
        before = int(a[index])
        a[index] = before + value
    return before


def atomic_load(a, index):
    """``a[index]``, read atomically (never kept in a register)."""
    with _lock:
        return int(a[index])


def atomic_cas(a, index, expected, new):
    """If ``a[index] == expected``, set it to ``new``, atomically; returns the value before."""
    with _lock:
        before = int(a[index])
        if before == expected:
            a[index] = new
    return before


@overload(atomic_add)
def _atomic_add_impl(a, index, value):
    return lambda a, index, value: _atomic_add(a, index, value)


@overload(atomic_load)
def _atomic_load_impl(a, index):
    return lambda a, index: _atomic_load(a, index)


@overload(atomic_cas)
def _atomic_cas_impl(a, index, expected, new):
    return lambda a, index, expected, new: _atomic_cas(a, index, expected, new)


def pause():
    """Let another thread run on this core (``sched_yield``; a no-op without it)."""
    time.sleep(0)


@overload(pause)
def _pause_impl():
    if _sched_yield is None:
        return lambda: None

    def impl():
        _sched_yield()

    return impl



@kernel(inline="always")
def wait_at_least(a, index, target, spins_before_yield):
    # until a[index] >= target: atomic reads, spinning, then (after
    # spins_before_yield reads) letting other threads run before each read,
    # so that a wait for a thread the scheduler set aside does not hold the
    # core that thread needs
    spins = 0
    while atomic_load(a, index) < target:
        spins += 1
        if spins > spins_before_yield:
            pause()
