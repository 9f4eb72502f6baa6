"""Numba's inliner, made to copy a callee's blocks with one memo.

``inline="always"`` makes Numba copy the callee's IR twice at every call site
(``InlineWorker.inline_ir``: one copy to splice into the caller, one kept
unchanged), and it deep-copies each block on its own. Every variable of a
block refers to the function's scope, which holds all of its variables, so
each block's copy copies the whole scope again: one copy costs blocks x
variables. fastnn's passes are large functions with their callees inlined
(``dense.forward``: 127 blocks, 1,261 variables), and in a first fit of
64-100-10 in an empty cache that copying took 2.3-2.9 s of Numba's inlining
pass, a fifth of the fit.

Here the blocks of one IR are deep-copied with one shared memo, as
``copy.deepcopy`` of the whole ``blocks`` dict would do (and as Numba's own
loop-unrolling pass does). The copy then has the structure of the IR it
copies: one scope, and objects shared between blocks stay shared. That is
the structure Numba's passes run on everywhere else, the callee's own IR
included. The compiled code is the same; the same first fit took 9.8-10.6 s
against 12.8-13.3 s, in turns (Numba's inlining pass in
``partial_loss_and_gradients`` 0.7-0.8 s against 2.3-2.9 s; CHANGELOG).

How: ``InlineWorker.inline_ir`` is re-created from its own code object, with
globals in which the name ``copy`` is a `_BlockCopier` and every other name is
looked up in Numba's module. Nothing of Numba's source is repeated here.
A copy's memo lasts one pass over the blocks of one IR: a new pass starts when
the block comes from another scope or was already copied with this memo.
Where Numba is not as expected (another version that moved these pieces),
nothing is installed and Numba copies as it always did.

The cost is known upstream (numba/numba#8989 removed a third copy; #9245
stopped copying source locations), and a shared memo is the kind of fix that
belongs in Numba; this one goes when Numba has it.
"""

import copy
import threading

_state = threading.local()  # this thread's (scope, memo) of the pass being copied


class _BlockCopier:
    """Stands for the ``copy`` module in ``inline_ir``: blocks of one IR share a memo."""

    def __init__(self, block_type):
        self._block_type = block_type

    def deepcopy(self, x, memo=None):
        if memo is not None or not isinstance(x, self._block_type):
            return copy.deepcopy(x, memo)
        scope, shared = getattr(_state, "slot", (None, None))
        if scope is not x.scope or id(x) in shared:
            shared = {}
            _state.slot = (x.scope, shared)
        return copy.deepcopy(x, shared)

    def __getattr__(self, name):
        return getattr(copy, name)


class _Globals(dict):
    """``copy`` (and nothing else) of our own; the rest read from Numba's module."""

    def __init__(self, module, copier):
        super().__init__(copy=copier, __builtins__=module.__dict__["__builtins__"])
        self._module = module

    def __missing__(self, name):
        return self._module.__dict__[name]


def _expected(function):
    # inline_ir names ``copy`` only in its nested copy_ir, as copy.deepcopy
    nested = [c for c in function.__code__.co_consts if getattr(c, "co_name", None) == "copy_ir"]
    return (
        len(nested) == 1
        and {"copy", "deepcopy"} <= set(nested[0].co_names)
        and "copy" not in function.__code__.co_names
        and function.__closure__ is None
    )


def _install():
    try:
        import types

        from numba.core import inline_closurecall, ir
    except ImportError:  # pragma: no cover
        return False
    worker = getattr(inline_closurecall, "InlineWorker", None)
    original = getattr(worker, "inline_ir", None)
    if original is None or getattr(original, "_fastnn", False):
        return original is not None
    if inline_closurecall.__dict__.get("copy") is not copy or not _expected(original):
        return False  # pragma: no cover - reorganised Numba: left as it is
    clone = types.FunctionType(
        original.__code__,
        _Globals(inline_closurecall, _BlockCopier(ir.Block)),
        original.__name__,
        original.__defaults__,
    )
    clone.__kwdefaults__ = original.__kwdefaults__

    def inline_ir(self, *args, **kwargs):
        saved = getattr(_state, "slot", (None, None))
        _state.slot = (None, None)  # no memo survives from another call
        try:
            return clone(self, *args, **kwargs)
        finally:
            _state.slot = saved

    inline_ir.__doc__ = original.__doc__
    inline_ir._fastnn = True
    inline_ir._original = original
    worker.inline_ir = inline_ir
    return True


INSTALLED = _install()
