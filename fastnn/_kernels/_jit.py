"""The one decorator every kernel is compiled with, and its on-disk cache.

``cache=True`` keeps compiled code on disk between processes.
``error_model="numpy"`` makes division follow IEEE rules (as NumPy does)
instead of checking every divisor for zero to raise ``ZeroDivisionError``:
that check is a branch per element that stops LLVM from vectorising the
sigmoid loops (measured 4.7x slower on 4M elements).

Numba decides whether a cached kernel is fresh from the content of the file
that defines it, but our kernels inline kernels of other files (``exp`` into
``sigmoid`` into ``forward`` into ``train``): editing ``fastexp.py`` would
leave the cached ``train`` stale. The locators below stamp every kernel with
a hash of *all* the kernel sources instead, so any change recompiles them
all. Where the package directory is read-only, Numba's own fallback (a
user-wide cache directory, or ``NUMBA_CACHE_DIR``) is used, with the same stamp.
"""

import functools
import hashlib
import os

from numba import njit

OPTIONS = {"cache": True, "error_model": "numpy"}

KERNEL_DIR = os.path.dirname(os.path.abspath(__file__))


@functools.lru_cache(maxsize=None)
def _stamp(state):
    digest = hashlib.sha256()
    for name, _, _ in state:
        with open(os.path.join(KERNEL_DIR, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()


def kernel_sources_stamp():
    """Hash of every kernel source file (recomputed when one changes)."""
    state = []
    for name in sorted(os.listdir(KERNEL_DIR)):
        if name.endswith(".py"):
            st = os.stat(os.path.join(KERNEL_DIR, name))
            state.append((name, st.st_mtime_ns, st.st_size))
    return _stamp(tuple(state))


def _install_locators():
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover - very old or reorganised Numba
        return
    bases = [
        getattr(caching, name, None)
        for name in ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")
    ]
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    if impl is None or not all(bases) or not hasattr(impl, "_locator_classes"):
        return  # pragma: no cover
    ours = []
    for base in bases:

        class KernelLocator(base):
            @classmethod
            def from_function(cls, py_func, py_file):
                if os.path.dirname(os.path.abspath(py_file)) != KERNEL_DIR:
                    return None
                return super().from_function(py_func, py_file)

            def get_source_stamp(self):
                return kernel_sources_stamp()

        KernelLocator.__name__ = "FastnnKernel" + base.__name__
        ours.append(KernelLocator)
    if not any(c.__name__.startswith("FastnnKernel") for c in impl._locator_classes):
        impl._locator_classes = ours + list(impl._locator_classes)


_install_locators()


def _install_light_cache_load():
    # Before loading anything from a cache, Numba initialises its whole
    # compiler back end (imports the lowering of all of NumPy and Python,
    # which imports SciPy's linalg package): 0.2-0.3 s, most of the time of
    # a first call served from the cache. Loading compiled code only needs
    # the runtime (NRT), so fastnn's kernels load with just that; a cache
    # miss still compiles through Numba's normal path, which initialises
    # everything it needs.
    try:
        from numba.core import caching
        from numba.core.runtime import rtsys
    except ImportError:  # pragma: no cover
        return
    cache_class = getattr(caching, "Cache", None)
    if cache_class is None or not hasattr(cache_class, "_load_overload"):
        return  # pragma: no cover - reorganised Numba: keep its own behaviour
    original = cache_class.load_overload
    if getattr(original, "_fastnn", False):
        return

    def load_overload(self, sig, target_context):
        locator = getattr(getattr(self, "_impl", None), "locator", None)
        if not type(locator).__name__.startswith("FastnnKernel"):
            return original(self, sig, target_context)
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)

    load_overload._fastnn = True
    cache_class.load_overload = load_overload


_install_light_cache_load()


def kernel(func=None, **extra):
    """``numba.njit`` with fastnn's options; ``@kernel`` or ``@kernel(inline="always")``."""
    if func is None:
        return lambda f: njit(**OPTIONS, **extra)(f)
    return njit(**OPTIONS)(func)
