"""Turn user input into contiguous float arrays, or raise a clear error.

Every public entry point of fastnn sends its arguments through here, so
that errors name the argument and what was expected, and nothing that
fails validation can touch a model.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def check_dtype(dtype, name="dtype"):
    """Return ``np.float64`` or ``np.float32`` as a dtype, else raise."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be 'float32' or 'float64', got {dtype!r}") from exc
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be 'float32' or 'float64', got {dtype!r}")
    return dt


def check_array(value, name, dtype, *, n_columns=None, column_name="columns", allow_1d=False):
    """Convert ``value`` into a C-contiguous 2-D array of ``dtype``.

    Accepts lists, integer, boolean and float arrays of any memory order;
    never modifies the input (a new array is made whenever conversion is
    needed). A 1-D input is read as one column when ``allow_1d`` is true.

    Raises
    ------
    TypeError
        for non-numeric input (strings, objects, complex numbers).
    ValueError
        for the wrong number of dimensions, zero rows or columns, NaN or
        infinity, or a column count different from ``n_columns``.
    """
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a numeric array, got a {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be a rectangular numeric array: {exc}") from exc
    kind = arr.dtype.kind
    if kind not in "biuf":
        what = {"c": "complex", "O": "object", "U": "string", "S": "bytes"}.get(kind, str(arr.dtype))
        raise TypeError(f"{name} must hold real numbers (float, int or bool), got {what} dtype")
    if arr.ndim == 1 and allow_1d:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        expected = "a 1-D or 2-D array" if allow_1d else "a 2-D array (n_samples, n_features)"
        raise ValueError(f"{name} must be {expected}, got {arr.ndim} dimension(s) with shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row (sample), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column, got shape {arr.shape}")
    if n_columns is not None and arr.shape[1] != n_columns:
        raise ValueError(
            f"{name} has {arr.shape[1]} {column_name}, but the model expects {n_columns}"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # reported below instead
        out = np.ascontiguousarray(arr, dtype=dtype)
    if kind == "f" and not np.isfinite(out).all():
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinity")
        raise ValueError(f"{name} has values too large for {np.dtype(dtype).name}")
    return out


def check_same_rows(X, y, x_name="X", y_name="y"):
    """Raise unless ``X`` and ``y`` have the same number of rows."""
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"{x_name} and {y_name} must have the same number of rows (samples), "
            f"got {X.shape[0]} and {y.shape[0]}"
        )


def check_int(value, name, minimum=0):
    """Return ``value`` as an int ``>= minimum``; bools and floats are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_float(value, name, *, minimum=None, exclusive=True, maximum=None, max_exclusive=False):
    """Return ``value`` as a finite float within the given bounds."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None:
        if exclusive and value <= minimum:
            raise ValueError(f"{name} must be > {minimum}, got {value}")
        if not exclusive and value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None:
        if max_exclusive and value >= maximum:
            raise ValueError(f"{name} must be < {maximum}, got {value}")
        if not max_exclusive and value > maximum:
            raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_choice(value, name, choices):
    """Return ``value`` if it is one of ``choices`` (strings), else raise naming them."""
    valid = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {valid}, got {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {valid}, got {value!r}")
    return value


def check_layer_sizes(layer_sizes, name="layer_sizes"):
    """Return a tuple of ints ``>= 1`` with at least two entries."""
    if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__iter__"):
        raise TypeError(f"{name} must be a list of positive integers, got {layer_sizes!r}")
    sizes = tuple(layer_sizes)
    if len(sizes) < 2:
        raise ValueError(
            f"{name} must list at least [n_features, n_outputs], got {list(sizes)}"
        )
    for i, size in enumerate(sizes):
        check_int(size, f"{name}[{i}]", minimum=1)
    return tuple(int(s) for s in sizes)


def check_random_state(random_state, name="random_state"):
    """Return a ``numpy.random.Generator`` for ``None``, an int or a Generator."""
    if random_state is None or isinstance(random_state, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(random_state, (bool, np.bool_)):
            raise TypeError(f"{name} must be None, an integer or a numpy Generator, got {random_state!r}")
        if isinstance(random_state, numbers.Integral) and random_state < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {random_state}")
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    raise TypeError(f"{name} must be None, an integer or a numpy Generator, got {random_state!r}")
