"""`Activation`: a user-defined hidden activation, compiled into fastnn's kernels.

Give it two scalar functions compiled by ``numba.njit``: the activation
``function(z)`` and its ``derivative(z, a)``, where ``a = function(z)``. It
is accepted wherever an activation name is (``MLP``, ``fastnn.sklearn``'s
estimators, per-layer lists). The training and prediction kernels call the
functions compiled as C callbacks, in the model's dtype, through their
addresses (``fastnn._kernels.custom``): no Python call per element, and the
kernels themselves stay compiled once and cached.
"""

from __future__ import annotations

import math

import numpy as np

_PROBES = (-2.0, -0.5, 0.0, 0.5, 2.0)


class Activation:
    """A hidden activation given by two compiled scalar functions.

    Parameters
    ----------
    name : str
        A name for messages and ``repr``.
    function : numba-compiled function
        ``function(z) -> a``, one float to one float (``@numba.njit``).
    derivative : numba-compiled function
        ``derivative(z, a) -> f'(z)``, given ``a = function(z)``.

    Raises
    ------
    TypeError
        A function that is not compiled by ``numba.njit``, or a name that is
        not a string.
    ValueError
        A function that fails on a float or returns something other than a
        finite float there (they are tried at a few points in [-2, 2]).

    Notes
    -----
    The functions run in the model's dtype (float32 models call a float32
    version), without vectorisation: expect a custom activation to cost
    more per element than the built-in ones. A model using one pickles
    (the functions must be importable, as for any pickled function), but
    ``fastnn.save`` refuses it, since a ``.npz`` file holds no code.

    Examples
    --------
    >>> import numba
    >>> from fastnn import Activation, MLP
    >>> softsign = Activation(
    ...     "softsign",
    ...     numba.njit(lambda z: z / (1.0 + abs(z))),
    ...     numba.njit(lambda z, a: 1.0 / (1.0 + abs(z)) ** 2),
    ... )
    >>> MLP([3, 8, 1], activation=softsign, random_state=0).predict([[0.0, 1.0, 2.0]]).shape
    (1, 1)
    """

    def __init__(self, name, function, derivative):
        import numba

        if not isinstance(name, str):
            raise TypeError(f"Activation name must be a string, got {name!r}")
        for label, fn in (("function", function), ("derivative", derivative)):
            # (with NUMBA_DISABLE_JIT=1, numba.njit returns the Python function itself)
            compiled = hasattr(fn, "py_func") or (numba.config.DISABLE_JIT and callable(fn))
            if not compiled:
                raise TypeError(
                    f"Activation({name!r}).{label} must be compiled by numba.njit, got {fn!r}"
                )
        self.name = name
        self.function = function
        self.derivative = derivative
        self._compiled = {}
        self._check()

    def _check(self):
        for z in _PROBES:
            a = self._try("function", self.function, z)
            self._try("derivative", self.derivative, z, a)

    def _try(self, label, fn, *args):
        try:
            out = fn(*args)
        except Exception as err:
            raise ValueError(
                f"Activation({self.name!r}).{label} fails on float arguments {args}: {err}"
            ) from err
        if isinstance(out, (bool, np.bool_)) or not isinstance(out, (float, int, np.floating, np.integer)):
            raise ValueError(f"Activation({self.name!r}).{label}{args} returned {out!r}, not a float")
        if not math.isfinite(float(out)):
            raise ValueError(f"Activation({self.name!r}).{label}{args} returned {out}, not a finite float")
        return float(out)

    def addresses(self, dtype):
        """``(function, derivative)`` addresses of their C callbacks for ``dtype`` (compiled once)."""
        import numba

        from fastnn._kernels import custom

        dtype = np.dtype(dtype)
        if numba.config.DISABLE_JIT:
            # the kernels run as Python and look the functions up by these keys
            custom.REGISTRY[id(self.function)] = self.function
            custom.REGISTRY[id(self.derivative)] = self.derivative
            return id(self.function), id(self.derivative)
        if dtype not in self._compiled:
            t = numba.from_dtype(dtype)
            f = numba.cfunc(t(t))(self.function.py_func)
            d = numba.cfunc(t(t, t))(self.derivative.py_func)
            custom.REGISTRY[f.address] = self.function.py_func
            custom.REGISTRY[d.address] = self.derivative.py_func
            self._compiled[dtype] = (f, d)  # kept alive: the addresses are theirs
        f, d = self._compiled[dtype]
        return f.address, d.address

    def __getstate__(self):
        return {"name": self.name, "function": self.function, "derivative": self.derivative}

    def __setstate__(self, state):
        self.__init__(state["name"], state["function"], state["derivative"])

    def __deepcopy__(self, memo):
        return self  # immutable: clone() and deep copies share it

    def __repr__(self):
        return f"Activation({self.name!r})"
