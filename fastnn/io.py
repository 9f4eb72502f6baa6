"""Save and load fastnn models as versioned ``.npz`` files.

A model file is a NumPy ``.npz`` archive holding only plain numeric and
string arrays (it is read with ``allow_pickle=False``, so loading a file
never runs code from it):

``fastnn_format``
    integer format version (:data:`FORMAT_VERSION`);
``fastnn_kind``
    the model's kind (``"MLP"``, ``"NeuralNetwork"``, ...);
``fastnn_config``
    a JSON string: architecture and hyper-parameters;
``param:<name>``
    the model's arrays (parameters, optimizer state, loss history, ...).

Files are written atomically: to a temporary file in the destination's
directory, flushed to disk, then renamed over the destination, so that an
interrupted save leaves either the old file or the new one, never half of
one. Kinds of model are registered with :func:`register_kind`, so that
other model classes (such as scikit-learn-style estimators) can be saved
by the same two functions.
"""

from __future__ import annotations

import json
import os
import secrets
import zipfile
import zlib

import numpy as np

from fastnn import _validation as v

FORMAT_VERSION = 1

_FORMAT_KEY = "fastnn_format"
_KIND_KEY = "fastnn_kind"
_CONFIG_KEY = "fastnn_config"
_PREFIX = "param:"

# kind -> (class, dump(model) -> (config, arrays), restore(config, arrays) -> model)
_KINDS = {}


class ModelFileError(ValueError):
    """A file is not a fastnn model this version can read (foreign, damaged or newer)."""


def register_kind(kind, cls, dump, restore):
    """Teach :func:`save` and :func:`load` a kind of model.

    Parameters
    ----------
    kind : str
        Name stored in the file.
    cls : type
        Class whose instances (exact type) are saved under ``kind``.
    dump : callable
        ``dump(model) -> (config, arrays)``: a JSON-serialisable dict and a
        dict of name -> numeric ndarray.
    restore : callable
        ``restore(config, arrays) -> model``, the inverse of ``dump``; it
        raises ``ValueError`` for inconsistent content.
    """
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"kind must be a non-empty string, got {kind!r}")
    _KINDS[kind] = (cls, dump, restore)


def _kind_of(model):
    for kind, (cls, _, _) in _KINDS.items():
        if type(model) is cls:
            return kind
    known = ", ".join(sorted(_KINDS))
    raise TypeError(f"model must be a fastnn model ({known}), got {type(model).__name__}")


def _check_path(path, name="path"):
    if isinstance(path, (bool, int)) or not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or os.PathLike), got {path!r}")
    path = os.fsdecode(os.fspath(path))
    if not path:
        raise ValueError(f"{name} must not be empty")
    return path


def save(model, path):
    """Write ``model`` to ``path`` as a versioned ``.npz`` file, atomically.

    Parameters
    ----------
    model : MLP or NeuralNetwork
        (or any kind added with :func:`register_kind`).
    path : str or os.PathLike
        Destination, written exactly as given (no suffix is added; ``.npz``
        is the customary one). An existing file is replaced only once the
        new one is completely written.

    Raises
    ------
    TypeError
        If ``model`` is not a fastnn model or ``path`` is not a path.
    OSError
        If the file cannot be written; the destination is then untouched.
    """
    path = _check_path(path)
    kind = _kind_of(model)
    config, arrays = _KINDS[kind][1](model)
    payload = {
        _FORMAT_KEY: np.array(FORMAT_VERSION, dtype=np.int64),
        _KIND_KEY: np.array(kind),
        _CONFIG_KEY: np.array(json.dumps(config, sort_keys=True)),
    }
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.kind not in "biufU":
            raise TypeError(f"cannot save array {name!r} of dtype {arr.dtype}")
        payload[_PREFIX + name] = arr
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open applies the umask, so the file gets the usual permissions
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(path):
    """Read a model written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    MLP or NeuralNetwork
        A model that predicts exactly what the saved one did (and, for
        :class:`~fastnn.MLP`, continues training exactly as it would have:
        optimizer state, loss history and random generator are restored).

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ModelFileError
        (a ``ValueError``) if the file is not a fastnn model (not an
        ``.npz`` archive, or one without fastnn's keys), is truncated or
        damaged, or was written by a newer fastnn with a newer format.
    """
    path = _check_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ModelFileError(f"{path!r} holds a single .npy array, not a fastnn model file")
        with archive:
            names = set(archive.files)
            if _FORMAT_KEY not in names or _KIND_KEY not in names or _CONFIG_KEY not in names:
                raise ModelFileError(
                    f"{path!r} is an .npz archive but not a fastnn model file "
                    f"(it lacks the keys {_FORMAT_KEY!r}, {_KIND_KEY!r}, {_CONFIG_KEY!r})"
                )
            version = archive[_FORMAT_KEY]
            if version.shape != () or version.dtype.kind not in "iu":
                raise ModelFileError(f"{path!r} has an invalid format version {version!r}")
            version = int(version)
            if version > FORMAT_VERSION:
                raise ModelFileError(
                    f"{path!r} was written by a newer fastnn (file format {version}); this "
                    f"version reads formats up to {FORMAT_VERSION}: upgrade fastnn to load it"
                )
            if version < 1:
                raise ModelFileError(f"{path!r} has an invalid format version {version}")
            kind = str(archive[_KIND_KEY])
            config_text = str(archive[_CONFIG_KEY])
            arrays = {n[len(_PREFIX):]: archive[n] for n in sorted(names) if n.startswith(_PREFIX)}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise ModelFileError(
            f"{path!r} is not a readable fastnn model file (truncated, damaged or foreign): {exc}"
        ) from exc
    if kind not in _KINDS:
        known = ", ".join(sorted(_KINDS))
        raise ModelFileError(f"{path!r} holds a model of unknown kind {kind!r} (known: {known})")
    try:
        config = json.loads(config_text)
    except ValueError as exc:
        raise ModelFileError(f"{path!r} has a damaged configuration: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelFileError(f"{path!r} has a damaged configuration (not a mapping)")
    try:
        return _KINDS[kind][2](config, arrays)
    except ModelFileError:
        raise
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path!r} holds an inconsistent {kind} model: {exc}") from exc


# ------------------------------------------------------------------ helpers
def _array(arrays, name, dtype, shape):
    """``arrays[name]`` checked for dtype and shape (a copy owned by the model)."""
    if name not in arrays:
        raise KeyError(f"missing array {name!r}")
    arr = arrays[name]
    if arr.dtype != np.dtype(dtype) or arr.shape != tuple(shape):
        raise ValueError(
            f"array {name!r} has dtype {arr.dtype} and shape {arr.shape}, "
            f"expected {np.dtype(dtype)} and {tuple(shape)}"
        )
    return np.array(arr, dtype=dtype, order="C", copy=True)


def _rng_state(rng):
    state = rng.bit_generator.state
    # some bit generators keep arrays in their state: store them as lists
    state = json.loads(json.dumps(state, default=lambda o: o.tolist()))
    return {"bit_generator": type(rng.bit_generator).__name__, "state": state}


def _restore_rng(saved):
    if saved is None:
        return None
    name = saved["bit_generator"]
    allowed = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
    if name not in allowed:
        raise ValueError(f"unknown bit generator {name!r}")
    bit_generator = getattr(np.random, name)()
    bit_generator.state = saved["state"]
    return np.random.Generator(bit_generator)


# ---------------------------------------------------------------------- MLP
def _dump_mlp(model):
    from fastnn.activation import Activation

    custom = [a for a in model._hidden if isinstance(a, Activation)]
    if custom:
        raise TypeError(
            f"a model using {custom[0]!r} cannot be saved: a .npz file holds no code. "
            "Pickle the model instead (its functions must be importable), or save its weights "
            "(model.weights, model.biases) and rebuild it with the same Activation"
        )
    random_state = model.random_state
    if random_state is not None and not isinstance(random_state, (int, np.integer)):
        random_state = None  # a Generator: its state is stored below
    config = {
        "layer_sizes": [int(s) for s in model.layer_sizes],
        "activation": model.activation,
        "output_activation": model.output_activation,
        "loss": model.loss,
        "bias": bool(model.bias),
        "dropout": model.dropout,
        "dtype": model.dtype.name,
        "random_state": None if random_state is None else int(random_state),
        "optimizer": model._opt_name,
        "rng": _rng_state(model._rng),
    }
    arrays = {"params": model._params, "history": model.history_, "step_count": model._step_count}
    if model._opt_name is not None:
        arrays["state1"] = model._state1
        arrays["state2"] = model._state2
    return config, arrays


def _restore_mlp(config, arrays):
    from fastnn.mlp import MLP, OPTIMIZERS

    sizes = v.check_layer_sizes(config["layer_sizes"])
    bias = config["bias"]
    expected = sum(a * b + (b if bias is True else 0) for a, b in zip(sizes[:-1], sizes[1:]))
    params = arrays.get("params")
    # check the size before building the model: a damaged file must not make it allocate
    if params is None or params.shape != (expected,):
        shape = None if params is None else params.shape
        raise ValueError(f"array 'params' has shape {shape}, layer_sizes {list(sizes)} need ({expected},)")
    model = MLP(
        config["layer_sizes"],
        activation=config["activation"],
        output_activation=config["output_activation"],
        loss=config["loss"],
        bias=config["bias"],
        dtype=config["dtype"],
        random_state=0,
        dropout=config.get("dropout", 0.0),  # (files written before dropout have none)
    )
    dt = model.dtype
    n = model.n_parameters
    model._params[...] = _array(arrays, "params", dt, (n,))
    history = arrays.get("history")
    if history is None or history.dtype != np.float64 or history.ndim != 1:
        raise ValueError("missing or invalid array 'history'")
    model.history_ = history.copy()
    model._step_count[...] = _array(arrays, "step_count", np.int64, (1,))
    optimizer = config.get("optimizer")
    if optimizer is not None:
        v.check_choice(optimizer, "optimizer", OPTIMIZERS)
        model._opt_name = optimizer
        model._state1 = _array(arrays, "state1", dt, (n,))
        if optimizer == "adam":
            model._state2 = _array(arrays, "state2", dt, (n,))
        else:
            _array(arrays, "state2", dt, (0,))
            model._state2 = model._state1[:0]
    random_state = config.get("random_state")
    if random_state is not None:
        v.check_int(random_state, "random_state")
    model.random_state = random_state
    rng = _restore_rng(config.get("rng"))
    if rng is not None:
        model._rng = rng
    return model


# ------------------------------------------------------------ NeuralNetwork
_NN_ARRAYS = ("input", "y", "weights1", "weights2", "output", "layer1")


def _dump_nn(model):
    from fastnn.network import NeuralNetwork

    if not isinstance(model, NeuralNetwork):  # pragma: no cover - guarded by _kind_of
        raise TypeError("expected a NeuralNetwork")
    config = {
        "dtype": model.dtype.name,
        "hidden_size": int(model.hidden_size),
        "learning_rate": float(model.learning_rate),
    }
    arrays = {}
    for name in _NN_ARRAYS:
        if hasattr(model, name):
            arr = getattr(model, name)
            # the user may have replaced an attribute by a list: store what the kernels would use
            arrays[name] = v.check_array(arr, name, model.dtype, allow_1d=name == "y")
    return config, arrays


def _restore_nn(config, arrays):
    from fastnn.network import NeuralNetwork

    dt = v.check_dtype(config["dtype"])
    for name in ("input", "y", "weights1", "weights2", "output"):
        if name not in arrays:
            raise KeyError(f"missing array {name!r}")
    x = arrays["input"]
    y = arrays["y"]
    for name, arr in arrays.items():
        if name not in _NN_ARRAYS:
            raise ValueError(f"unexpected array {name!r}")
        if arr.dtype != dt or arr.ndim != 2:
            raise ValueError(f"array {name!r} must be 2-D {dt}, got {arr.ndim}-D {arr.dtype}")
    model = NeuralNetwork.__new__(NeuralNetwork)
    model.dtype = dt
    model.hidden_size = v.check_int(config["hidden_size"], "hidden_size", minimum=1)
    model.learning_rate = v.check_float(config["learning_rate"], "learning_rate", minimum=0.0)
    model.input = _array(arrays, "input", dt, x.shape)
    model.y = _array(arrays, "y", dt, y.shape)
    n, d = x.shape
    k = y.shape[1]
    w1 = arrays["weights1"]
    if w1.shape[0] != d:
        raise ValueError(f"weights1 has shape {w1.shape}, expected {d} rows")
    h = w1.shape[1]
    model.weights1 = _array(arrays, "weights1", dt, (d, h))
    model.weights2 = _array(arrays, "weights2", dt, (h, k))
    model.output = _array(arrays, "output", dt, (n, k))
    if "layer1" in arrays:
        model.layer1 = _array(arrays, "layer1", dt, (n, h))
    model._scratch = None
    model._checked = None
    model._fed = None
    return model


def _register_builtin():
    from fastnn.mlp import MLP
    from fastnn.network import NeuralNetwork

    register_kind("MLP", MLP, _dump_mlp, _restore_mlp)
    register_kind("NeuralNetwork", NeuralNetwork, _dump_nn, _restore_nn)


_register_builtin()
