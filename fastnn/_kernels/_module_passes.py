"""fastnn's kernels optimised by LLVM's module passes only.

Numba optimises the code of every function it compiles three times:

1. as each function's LLVM module is added to its library, the O3 function
   passes, one function at a time (``CPUCodeLibrary._optimize_functions``);
2. once the library's callees are linked in, a cheap module pipeline, whose
   inlining brings reference-count operations together for Numba's pruning
   pass;
3. then the full O3 module pipeline, which runs the function passes again
   over every function, inlined callees included.

The first adds nothing the third does not redo, on fastnn's kernels: in a
first fit of 64-100-10 in an empty cache it took 1.2-1.3 s of LLVM's
3.2-3.3 s. So for fastnn's functions (their symbols begin with fastnn's
mangled package name) and their wrappers, step 1 only sets the data layout,
as Numba does before running it; steps 2 and 3 run as always, and every other
function (Numba's own, or a user's in the same process) gets all three. The
CHANGELOG has the measurements: the kernels' results are bit-identical (nine
fits hashed) and their steps within 2% (eight workloads, in turns), and a first
fit in an empty cache is 0.3-0.9 s shorter.

How: ``_optimize_functions`` is wrapped, and runs Numba's own code on a
view of the module whose list of functions leaves fastnn's out; everything
else (setting the data layout) goes to the module itself. Where Numba is not
laid out as expected, nothing is installed and Numba optimises as it always
did.
"""

# the symbols of fastnn's functions (Itanium mangling of names in the package
# fastnn), of the wrappers Python calls them through, and of C callbacks
PREFIXES = ("_ZN6fastnn", "_ZN7cpython6fastnn", "cfunc._ZN6fastnn")


class _Others:
    """A module as ``_optimize_functions`` sees it: the functions it defines, less fastnn's.

    (Numba makes a pass manager for every function of the module, the
    declarations of the functions it calls included, on which the passes do
    nothing: 0.2-0.3 s of a first fit.)
    """

    def __init__(self, module):
        object.__setattr__(self, "_module", module)

    @property
    def functions(self):
        return (f for f in self._module.functions if not (f.is_declaration or f.name.startswith(PREFIXES)))

    def __getattr__(self, name):
        return getattr(self._module, name)

    def __setattr__(self, name, value):
        setattr(self._module, name, value)


def _install():
    try:
        from numba.core import codegen
    except ImportError:  # pragma: no cover
        return False
    library = getattr(codegen, "CPUCodeLibrary", None)
    original = getattr(library, "_optimize_functions", None)
    if original is None:
        return False  # pragma: no cover - reorganised Numba: optimised as before
    if getattr(original, "_fastnn", False):
        return True

    def _optimize_functions(self, ll_module):
        return original(self, _Others(ll_module))

    _optimize_functions._fastnn = True
    _optimize_functions._original = original
    library._optimize_functions = _optimize_functions
    return True


INSTALLED = _install()
