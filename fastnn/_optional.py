"""Optional dependencies: import one, or say in one line which extra installs it.

fastnn needs only NumPy, SciPy, Numba and threadpoolctl. Everything else is
optional and named by an extra of ``pyproject.toml``; a feature that needs
one checks for it before doing any work, and a missing one is reported as::

    fastnn.sklearn needs scikit-learn: pip install "fastnn[sklearn]"

by :class:`MissingDependency` (a :class:`ModuleNotFoundError`, hence an
:class:`ImportError`, whose ``name`` is the missing module). ``fastnn``'s
command line prints that message as one line on stderr and exits with
status 1.
"""

from __future__ import annotations

import importlib

__all__ = ["EXTRAS", "MissingDependency", "import_optional", "install_hint", "missing_message"]

# import name -> (distribution to install, fastnn extra that installs it)
EXTRAS = {
    "sklearn": ("scikit-learn", "sklearn"),
    "tqdm": ("tqdm", "progress"),
    "matplotlib": ("matplotlib", "plot"),
    "torch": ("torch", "bench"),
    "jax": ("jax", "jax"),
    "dask": ("dask", "dask"),
    "distributed": ("distributed", "dask"),
    "dask_ml": ("dask-ml", "dask"),
    "skorch": ("skorch", "skorch"),
}


class MissingDependency(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def _top(module):
    return module.partition(".")[0]


def install_hint(module):
    """``pip install "fastnn[EXTRA]"`` for the extra that installs ``module``."""
    return f'pip install "fastnn[{EXTRAS[_top(module)][1]}]"'


def missing_message(module, feature):
    """The one-line message: ``FEATURE needs DISTRIBUTION: pip install "fastnn[EXTRA]"``."""
    return f"{feature} needs {EXTRAS[_top(module)][0]}: {install_hint(module)}"


def import_optional(module, feature):
    """Import and return ``module``, or raise :class:`MissingDependency` naming the extra.

    Parameters
    ----------
    module : str
        Module to import, e.g. ``"matplotlib"`` or ``"dask_ml.wrappers"``;
        its top-level package must be a key of :data:`EXTRAS`.
    feature : str
        What needs it, as the user knows it (``"fastnn bench --plot"``); the
        message starts with it.

    Only the absence of the package itself (or of the named submodule) is
    turned into :class:`MissingDependency`; an installed package that fails
    to import for another reason raises its own error, unchanged.
    """
    if _top(module) not in EXTRAS:
        raise ValueError(f"unknown optional dependency {module!r}; expected one of {', '.join(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        parts = module.split(".")
        missing = {".".join(parts[: i + 1]) for i in range(len(parts))}
        if exc.name not in missing:
            raise
        raise MissingDependency(missing_message(module, feature), name=exc.name) from None
