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

A cache file that cannot be read back (truncated by a full disk, copied while
it was being written) would make every later call of its kernel fail with
Numba's unpickling error until the file is deleted by hand. fastnn's kernels
read their cache through :class:`_CheckedCacheFile` instead, which treats such
a file as a cache miss: the file is removed, the kernel recompiled and the
file written again, with one :class:`KernelCacheWarning` per damaged file.
"""

import functools
import hashlib
import os
import pickle
import warnings
import zlib

from numba import njit

from fastnn._kernels import _apart
from fastnn._kernels import _inline_copy  # noqa: F401 - importing it makes Numba's inliner copy faster
from fastnn._kernels import _module_passes  # noqa: F401 - importing it leaves fastnn's kernels to LLVM's module passes

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


class KernelCacheWarning(RuntimeWarning):
    """A kernel's on-disk cache file could not be read back; the kernel was recompiled."""


# What unpickling a truncated or otherwise damaged file raises: pickle's own
# error, EOFError (file cut inside an opcode's argument), and the errors the
# opcodes raise on bytes that are not theirs (bad lengths, unknown modules or
# names, wrong types); zlib's for compressed payloads.
_DAMAGE_ERRORS = (
    pickle.UnpicklingError, EOFError, zlib.error, ValueError, TypeError, IndexError,
    KeyError, AttributeError, ImportError, OverflowError, MemoryError,
)

_warned_paths = set()


def _checked_cache_file_class():
    try:
        from numba.core.caching import IndexDataCacheFile
    except ImportError:  # pragma: no cover - reorganised Numba
        return None
    if not all(hasattr(IndexDataCacheFile, name) for name in ("_load_index", "_load_data", "_data_path")):
        return None  # pragma: no cover

    class _CheckedCacheFile(IndexDataCacheFile):
        """Numba's index and data files, read with damage treated as a cache miss."""

        kernel_name = "?"
        kernel_file = __file__
        kernel_line = 1

        def _load_index(self):
            try:
                overloads = super()._load_index()
                if not isinstance(overloads, dict):
                    raise pickle.UnpicklingError(f"index holds a {type(overloads).__name__}, not a dict")
            except _DAMAGE_ERRORS as exc:
                self._damaged(self._index_path, exc)
                return {}
            return overloads

        def _load_data(self, name):
            path = self._data_path(name)
            try:
                data = super()._load_data(name)
                if not isinstance(data, tuple):
                    raise pickle.UnpicklingError(f"data file holds a {type(data).__name__}, not a tuple")
            except _DAMAGE_ERRORS as exc:
                self._damaged(path, exc)
                return None  # IndexDataCacheFile.load: a miss; the save rewrites this data file
            return data

        def _damaged(self, path, exc):
            # Remove the file so that nothing reads it again; the save that
            # follows the recompilation writes it anew (the index lists the
            # data file under the same name, so it is overwritten).
            try:
                os.remove(path)
            except OSError:
                pass
            if path in _warned_paths:
                return
            _warned_paths.add(path)
            reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
            # Reported at the kernel's definition, as Numba reports its own
            # cache warnings: the caller's frame is deep inside Numba.
            warnings.warn_explicit(
                f"fastnn kernel {self.kernel_name}: its cache file {os.path.basename(path)} was damaged "
                f"({reason}); recompiled the kernel and rewrote the file",
                KernelCacheWarning,
                self.kernel_file,
                self.kernel_line,
                module="fastnn._kernels",
            )

    return _CheckedCacheFile


def _install_damage_check():
    # Every cache of a fastnn kernel reads its files through _CheckedCacheFile:
    # the class of the cache file object is swapped right after Numba builds
    # it (when the kernel is decorated), for fastnn's locators only.
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover
        return
    checked = _checked_cache_file_class()
    cache_class = getattr(caching, "Cache", None)
    if checked is None or cache_class is None:
        return  # pragma: no cover
    original = cache_class.__init__
    if getattr(original, "_fastnn", False):
        return

    def __init__(self, py_func):
        original(self, py_func)
        locator = getattr(getattr(self, "_impl", None), "locator", None)
        cache_file = getattr(self, "_cache_file", None)
        if type(locator).__name__.startswith("FastnnKernel") and type(cache_file) is checked.__bases__[0]:
            cache_file.__class__ = checked
            cache_file.kernel_name = getattr(py_func, "__module__", "").rpartition(".")[2] + "." + py_func.__qualname__
            cache_file.kernel_file = py_func.__code__.co_filename
            cache_file.kernel_line = py_func.__code__.co_firstlineno

    __init__._fastnn = True
    cache_class.__init__ = __init__


_install_damage_check()


def kernel(func=None, linked=True, **extra):
    """``numba.njit`` with fastnn's options; ``@kernel`` or ``@kernel(inline="always")``.

    ``linked=False``: callers call the kernel by symbol rather than link its
    code in (``fastnn._kernels._apart``), for large kernels called a few
    times a step.
    """

    def compile_kernel(f):
        if not linked:
            _apart.compile_apart(f)
        return njit(**OPTIONS, **extra)(f)

    return compile_kernel if func is None else compile_kernel(func)
