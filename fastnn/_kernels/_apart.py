"""Kernels compiled apart: their callers call them by symbol instead of linking them in.

When a Numba function calls another, Numba links the callee's whole LLVM
module into the caller's and optimises and emits it again there, so that
LLVM may inline it. The training kernels are a tree of large functions (a
loop calls the phases, which call the tasks, which call the passes), and
each level optimised and emitted everything below it once more: the tasks
of the tiled kernel were compiled three times over in a first fit. A
kernel declared with ``@kernel(linked=False)`` is compiled once, on its own;
its callers hold a declaration of its symbol, which the JIT resolves to the
one compiled copy. That suits large kernels called a few times a step,
where a call costs nothing and inlining gains nothing (a first fit of
64-4096-10 in an empty cache took 16.6-17.0 s against 19.6-23.9 s with them
linked, in turns; docs/startup.md has the figures).

A caller loaded from the cache then needs its callees loaded first: its
machine code refers to their symbols, and a symbol the JIT cannot resolve is
a call to address 0. So the cache entry of every fastnn kernel records the
kernels it calls by symbol (module, name, argument types and symbol, read
from the declarations in its code), and loading it loads those first, from
the cache or by compiling them. When a callee comes back under another
symbol (it was compiled again since, after its cache file was lost or
damaged), the caller's entry is treated as a cache miss and the caller is
compiled again against the callee as it is now.

Where Numba's internals are not as expected (another version), nothing is
installed and every kernel is linked as before. `compile_apart` without the
two patches in place (``INSTALLED`` false) changes nothing.
"""

import importlib

_apart = set()  # (module, qualified name) of the kernels declared linked=False
_symbols = {}  # symbol -> (module, qualified name, argument types) of their compiled overloads

TAG = "fastnn-calls"  # a cache entry with the kernels it calls: (TAG, calls, Numba's data)
UNKNOWN = ("", "", (), "")  # a call no load satisfies (the calls of a library could not be read)


def compile_apart(func):
    """Mark ``func`` (a Python function about to be compiled) as called by symbol."""
    _apart.add((func.__module__, func.__qualname__))


def _install():
    # Both patches or neither: a kernel called by symbol is safe only if
    # every cache entry records its calls (else a caller loaded before its
    # callees would call address 0)
    try:
        from numba.core import base, caching
    except ImportError:  # pragma: no cover
        return False
    impl = getattr(caching, "CompileResultCacheImpl", None)
    original = getattr(base.BaseContext, "insert_user_function", None)
    if impl is None or original is None or not all(hasattr(impl, name) for name in ("reduce", "rebuild")):
        return False  # pragma: no cover - reorganised Numba: every kernel is linked
    if getattr(original, "_fastnn", False):
        return True
    reduce, rebuild = impl.reduce, impl.rebuild

    def insert_user_function(self, func, fndesc, libs=()):
        # Numba registers every compiled function (and every one loaded from
        # the cache) here, with the libraries a caller links in to call it
        if (fndesc.modname, fndesc.qualname) in _apart:
            _symbols[fndesc.mangled_name] = (fndesc.modname, fndesc.qualname, tuple(fndesc.argtypes))
            libs = ()
        return original(self, func, fndesc, libs)

    def reduce_with_calls(self, cres):
        # the cache entry of any compiled function (fastnn's or not: a
        # function that calls a fastnn kernel apart needs it as well)
        try:
            calls = calls_of(cres.library)
        except Exception:  # pragma: no cover - calls unknown: an entry that never loads
            calls = [UNKNOWN]
        return (TAG, calls, reduce(self, cres)) if calls else reduce(self, cres)

    def rebuild_after_calls(self, target_context, payload):
        if len(payload) == 3 and payload[0] == TAG:
            _, calls, payload = payload
            if not load_calls(calls):
                return None  # a cache miss: compiled again
        return rebuild(self, target_context, payload)

    insert_user_function._fastnn = True
    impl.reduce, impl.rebuild = reduce_with_calls, rebuild_after_calls
    base.BaseContext.insert_user_function = insert_user_function
    return True


def calls_of(library):
    """The kernels compiled apart that ``library``'s code calls: a list of
    ``(module, qualified name, argument types, symbol)``."""
    if not _symbols:
        return []
    module = library._get_module_for_linking()  # (what Numba itself caches)
    return [_symbols[fn.name] + (fn.name,) for fn in module.functions if fn.is_declaration and fn.name in _symbols]


def load_calls(calls):
    """Load (or compile) the kernels of `calls_of`; whether each has the
    symbol recorded (else a caller built against them must be compiled again)."""
    for module_name, qualname, argtypes, symbol in calls:
        try:
            target = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
            target.compile(tuple(argtypes))
            cres = target.overloads.get(tuple(argtypes))
        except Exception:  # anything but the callee we need: compile the caller again
            return False
        if cres is None or cres.fndesc.mangled_name != symbol:
            return False
    return True


INSTALLED = _install()
