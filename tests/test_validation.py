"""The bad-input battery: every public entry point, every kind of bad input.

Each case asserts the error type, that the message names the offending
argument (and what was expected), and that the model is exactly as it was:
parameters, optimizer state, step counter, loss history and random
generator (for :class:`NeuralNetwork`, its arrays and NumPy's global
stream). The second half checks what must be accepted and converted
without touching the caller's arrays.
"""

import os

import numpy as np
import pytest

from conftest import TUTORIAL_X, TUTORIAL_Y
from fastnn import MLP, NeuralNetwork
from fastnn import _validation as v
from fastnn.cli import main as cli_main
from fastnn.io import load, save

N, D = TUTORIAL_X.shape


# ------------------------------------------------------------------ helpers
def _trained_mlp(dtype="float64"):
    m = MLP([D, 5, 1], random_state=0, dtype=dtype)
    m.fit(TUTORIAL_X, TUTORIAL_Y, epochs=3, batch_size=2, optimizer="adam", learning_rate=0.01)
    return m


def _mlp_state(m):
    return {
        "params": m._params.copy(),
        "state1": m._state1.copy(),
        "state2": m._state2.copy(),
        "step": m._step_count.copy(),
        "history": m.history_.copy(),
        "opt": m._opt_name,
        "rng": repr(m._rng.bit_generator.state),
        "views": [w.copy() for w in m.weights] + [b.copy() for b in m.biases],
    }


def _assert_mlp_unchanged(m, before):
    after = _mlp_state(m)
    assert after["opt"] == before["opt"]
    assert after["rng"] == before["rng"]
    for key in ("params", "state1", "state2", "step", "history"):
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    for a, b in zip(after["views"], before["views"]):
        np.testing.assert_array_equal(a, b)
    assert all(np.shares_memory(w, m._params) for w in m.weights)


def _trained_nn():
    np.random.seed(0)
    nn = NeuralNetwork(TUTORIAL_X, TUTORIAL_Y)
    nn.train(5)
    return nn


_NN_ARRAYS = ("input", "y", "weights1", "weights2", "output", "layer1")


def _nn_state(nn):
    return {name: np.array(getattr(nn, name), copy=True) for name in _NN_ARRAYS}


def _assert_nn_unchanged(nn, before, skip=()):
    for name in _NN_ARRAYS:
        if name not in skip:
            np.testing.assert_array_equal(np.asarray(getattr(nn, name)), before[name], err_msg=name)


def _raises(exc, words, call):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
    return info


# ------------------------------------------------------- bad array contents
# (id, factory(rows, columns) -> bad value, exception, words in the message)
BAD_ARRAYS = [
    ("1-D", lambda n, d: np.ones(n * d), ValueError, ["2-D"]),
    ("3-D", lambda n, d: np.ones((n, d, 1)), ValueError, ["2-D", "3 dimension"]),
    ("scalar", lambda n, d: 5.0, ValueError, ["2-D", "0 dimension"]),
    ("zero-rows", lambda n, d: np.ones((0, d)), ValueError, ["at least one row"]),
    ("zero-columns", lambda n, d: np.ones((n, 0)), ValueError, ["at least one column"]),
    ("nan", lambda n, d: np.where(np.eye(n, d) > 0, np.nan, 1.0), ValueError, ["NaN"]),
    ("inf", lambda n, d: np.full((n, d), np.inf), ValueError, ["infinity"]),
    ("-inf-float32", lambda n, d: np.full((n, d), -np.inf, np.float32), ValueError, ["infinity"]),
    ("object", lambda n, d: np.ones((n, d)).astype(object), TypeError, ["object"]),
    ("strings", lambda n, d: [["a"] * d] * n, TypeError, ["string"]),
    ("bytes-array", lambda n, d: np.full((n, d), b"x"), TypeError, ["bytes"]),
    ("complex", lambda n, d: np.ones((n, d)) * 1j, TypeError, ["complex"]),
    ("datetime", lambda n, d: np.zeros((n, d), "datetime64[s]"), TypeError, ["real numbers"]),
    ("str", lambda n, d: "1,2,3", TypeError, ["numeric array"]),
    ("none", lambda n, d: None, TypeError, ["object"]),
    ("ragged", lambda n, d: [[1.0] * d, [1.0] * (d + 1)], ValueError, ["rectangular"]),
]


@pytest.mark.parametrize("case", BAD_ARRAYS, ids=[c[0] for c in BAD_ARRAYS])
@pytest.mark.parametrize(
    "entry", ["fit:X", "fit:y", "predict:X", "loss_and_gradients:X", "loss_and_gradients:y"]
)
def test_mlp_bad_arrays(entry, case):
    _, factory, exc, words = case
    method, arg = entry.split(":")
    m = _trained_mlp()
    before = _mlp_state(m)
    columns = D if arg == "X" else 1
    bad = factory(N, columns)
    if arg == "y" and case[0] == "1-D":
        bad = np.ones((N, 1, 1))  # a 1-D y is one column: valid for one output
        words = ["2-D"]
    kwargs = {"X": TUTORIAL_X, "y": TUTORIAL_Y}
    kwargs[arg] = bad
    if method == "predict":
        call = lambda: m.predict(kwargs["X"])  # noqa: E731
    elif method == "fit":
        call = lambda: m.fit(kwargs["X"], kwargs["y"], epochs=2)  # noqa: E731
    else:
        call = lambda: m.loss_and_gradients(kwargs["X"], kwargs["y"])  # noqa: E731
    _raises(exc, [arg] + words, call)
    _assert_mlp_unchanged(m, before)


@pytest.mark.parametrize("case", BAD_ARRAYS, ids=[c[0] for c in BAD_ARRAYS])
@pytest.mark.parametrize("arg", ["x", "y"])
def test_neural_network_constructor_bad_arrays(arg, case):
    name, factory, exc, words = case
    columns = D if arg == "x" else 1
    bad = factory(N, columns)
    if arg == "y" and name == "1-D":
        bad = np.ones((N, 1, 1))
        words = ["2-D"]
    kwargs = {"x": TUTORIAL_X, "y": TUTORIAL_Y, arg: bad}
    np.random.seed(7)
    _raises(exc, [arg] + words, lambda: NeuralNetwork(**kwargs))
    # a failed constructor draws nothing from NumPy's global stream
    after = np.random.rand()
    np.random.seed(7)
    assert after == np.random.rand()


# feedforward does not read y (as in the tutorial)
_NN_METHOD_ATTRS = [
    (method, attr)
    for method in ("feedforward", "backprop", "train")
    for attr in ("input", "weights1", "weights2", "y")
    if (method, attr) != ("feedforward", "y")
]


@pytest.mark.parametrize("case", BAD_ARRAYS, ids=[c[0] for c in BAD_ARRAYS])
@pytest.mark.parametrize("method,attr", _NN_METHOD_ATTRS)
def test_neural_network_replaced_attributes(method, attr, case):
    """The tutorial lets users replace attributes; bad replacements are refused."""
    name, factory, exc, words = case
    nn = _trained_nn()
    nn.feedforward()
    before = _nn_state(nn)
    shape = before[attr].shape
    bad = factory(*shape)
    if attr == "y" and name == "1-D":
        bad = np.ones((shape[0], 1, 1))
        words = ["2-D"]
    setattr(nn, attr, bad)
    _raises(exc, [attr] + words, lambda: getattr(nn, method)(*([3] if method == "train" else [])))
    _assert_nn_unchanged(nn, before, skip=(attr,))


@pytest.mark.parametrize(
    "attr,shape,word",
    [
        ("weights1", (D + 1, 4), "weights1"),
        ("weights2", (5, 1), "weights2"),
        ("y", (N + 1, 1), "y"),
        ("y", (N, 2), "y"),
    ],
)
@pytest.mark.parametrize("method", ["backprop", "train"])
def test_neural_network_inconsistent_shapes(method, attr, shape, word):
    nn = _trained_nn()
    nn.feedforward()
    before = _nn_state(nn)
    setattr(nn, attr, np.ones(shape))
    _raises(ValueError, [word, "shape"], lambda: getattr(nn, method)(*([3] if method == "train" else [])))
    _assert_nn_unchanged(nn, before, skip=(attr,))


# ------------------------------------------------------ shape mismatches
@pytest.mark.parametrize(
    "entry",
    ["fit", "loss_and_gradients"],
)
@pytest.mark.parametrize(
    "X,y,exc,words",
    [
        (np.ones((4, 3)), np.ones((3, 1)), ValueError, ["X", "y", "same number of rows", "4 and 3"]),
        (np.ones((4, 3)), np.ones(5), ValueError, ["same number of rows"]),
        (np.ones((4, 2)), np.ones((4, 1)), ValueError, ["X", "2 features", "expects 3"]),
        (np.ones((4, 3)), np.ones((4, 2)), ValueError, ["y", "2 outputs", "expects 1"]),
    ],
)
def test_mlp_mismatched_shapes(entry, X, y, exc, words):
    m = _trained_mlp()
    before = _mlp_state(m)
    _raises(exc, words, lambda: getattr(m, entry)(X, y))
    _assert_mlp_unchanged(m, before)


@pytest.mark.parametrize("columns", [1, 2, 4, 30])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_predict_wrong_feature_count(columns, dtype):
    m = _trained_mlp(dtype)
    before = _mlp_state(m)
    _raises(ValueError, ["X", f"{columns} features", f"expects {D}"], lambda: m.predict(np.ones((2, columns))))
    _assert_mlp_unchanged(m, before)


def test_values_too_large_for_float32_are_refused_without_warnings():
    m = _trained_mlp("float32")
    before = _mlp_state(m)
    with np.errstate(all="raise"):
        _raises(ValueError, ["X", "too large", "float32"], lambda: m.predict(np.full((2, D), 1e300)))
    _assert_mlp_unchanged(m, before)


# ------------------------------------------------------ hyper-parameters
FIT_HYPER = [
    ({"learning_rate": 0}, ValueError, ["learning_rate", "> 0"]),
    ({"learning_rate": -0.5}, ValueError, ["learning_rate"]),
    ({"learning_rate": np.nan}, ValueError, ["learning_rate", "finite"]),
    ({"learning_rate": np.inf}, ValueError, ["learning_rate", "finite"]),
    ({"learning_rate": "0.1"}, TypeError, ["learning_rate", "real number"]),
    ({"learning_rate": None}, TypeError, ["learning_rate"]),
    ({"learning_rate": True}, TypeError, ["learning_rate"]),
    ({"epochs": -1}, ValueError, ["epochs", ">= 0"]),
    ({"epochs": 1.5}, TypeError, ["epochs", "integer"]),
    ({"epochs": 2.0}, TypeError, ["epochs", "integer"]),
    ({"epochs": "3"}, TypeError, ["epochs"]),
    ({"epochs": None}, TypeError, ["epochs"]),
    ({"epochs": True}, TypeError, ["epochs"]),
    ({"batch_size": 0}, ValueError, ["batch_size", ">= 1"]),
    ({"batch_size": -3}, ValueError, ["batch_size"]),
    ({"batch_size": 2.5}, TypeError, ["batch_size"]),
    ({"shuffle": "yes"}, TypeError, ["shuffle", "True or False"]),
    ({"optimizer": "rmsprop"}, ValueError, ["optimizer", "'gd'", "'sgd'", "'momentum'", "'adam'"]),
    ({"optimizer": None}, TypeError, ["optimizer", "'adam'"]),
    ({"optimizer": "Adam"}, ValueError, ["optimizer"]),
    ({"momentum": 1.0}, ValueError, ["momentum", "< 1"]),
    ({"momentum": -0.1}, ValueError, ["momentum", ">= 0"]),
    ({"nesterov": 1}, TypeError, ["nesterov"]),
    ({"beta_1": 1.0}, ValueError, ["beta_1"]),
    ({"beta_2": -0.1}, ValueError, ["beta_2"]),
    ({"beta_2": "x"}, TypeError, ["beta_2"]),
    ({"epsilon": 0.0}, ValueError, ["epsilon"]),
    ({"alpha": -1.0}, ValueError, ["alpha", ">= 0"]),
    ({"alpha": np.nan}, ValueError, ["alpha"]),
    ({"callback": 3}, TypeError, ["callback", "callable"]),
]


@pytest.mark.parametrize("kwargs,exc,words", FIT_HYPER, ids=[repr(c[0]) for c in FIT_HYPER])
def test_fit_bad_hyper_parameters(kwargs, exc, words):
    m = _trained_mlp()
    before = _mlp_state(m)
    _raises(exc, words, lambda: m.fit(TUTORIAL_X, TUTORIAL_Y, **{"epochs": 2, **kwargs}))
    _assert_mlp_unchanged(m, before)


def test_fit_bad_hyper_parameters_with_another_optimizer_keep_the_old_state():
    """Switching optimizer resets its state, but only once the call is valid."""
    m = _trained_mlp()
    before = _mlp_state(m)
    _raises(ValueError, ["learning_rate"], lambda: m.fit(TUTORIAL_X, TUTORIAL_Y, optimizer="momentum", learning_rate=0))
    _assert_mlp_unchanged(m, before)


@pytest.mark.parametrize(
    "alpha,exc",
    [(-1.0, ValueError), (np.inf, ValueError), ("big", TypeError), (None, TypeError)],
)
def test_loss_and_gradients_bad_alpha(alpha, exc):
    m = _trained_mlp()
    before = _mlp_state(m)
    _raises(exc, ["alpha"], lambda: m.loss_and_gradients(TUTORIAL_X, TUTORIAL_Y, alpha=alpha))
    _assert_mlp_unchanged(m, before)


MLP_CONSTRUCTOR = [
    ({"layer_sizes": []}, ValueError, ["layer_sizes", "at least"]),
    ({"layer_sizes": [3, -1, 1]}, ValueError, ["layer_sizes[1]", ">= 1"]),
    ({"layer_sizes": [0, 1]}, ValueError, ["layer_sizes[0]"]),
    ({"layer_sizes": [3, 1, 0]}, ValueError, ["layer_sizes[2]"]),
    ({"layer_sizes": [3, True]}, TypeError, ["layer_sizes[1]"]),
    ({"layer_sizes": [3, "4"]}, TypeError, ["layer_sizes[1]"]),
    ({"layer_sizes": "34"}, TypeError, ["layer_sizes"]),
    ({"layer_sizes": 3}, TypeError, ["layer_sizes"]),
    ({"layer_sizes": None}, TypeError, ["layer_sizes"]),
    (
        {"layer_sizes": [3, 1], "activation": "swish"},
        ValueError,
        ["activation", "'sigmoid'", "'logistic'", "'tanh'", "'relu'", "'identity'", "'swish'"],
    ),
    ({"layer_sizes": [3, 1], "activation": "softmax"}, ValueError, ["activation"]),
    ({"layer_sizes": [3, 1], "activation": None}, TypeError, ["activation"]),
    ({"layer_sizes": [3, 1], "output_activation": "gelu"}, ValueError, ["output_activation", "'softmax'"]),
    ({"layer_sizes": [3, 1], "loss": "hinge"}, ValueError, ["loss", "'sse'", "'mse'", "'log_loss'"]),
    ({"layer_sizes": [3, 1], "loss": "log_loss", "output_activation": "tanh"}, ValueError, ["log_loss"]),
    ({"layer_sizes": [3, 2], "loss": "mse", "output_activation": "softmax"}, ValueError, ["softmax"]),
    ({"layer_sizes": [3, 1], "bias": "yes"}, TypeError, ["bias"]),
    ({"layer_sizes": [3, 1], "dtype": "float16"}, ValueError, ["dtype", "float32", "float64"]),
    ({"layer_sizes": [3, 1], "dtype": "int64"}, ValueError, ["dtype"]),
    ({"layer_sizes": [3, 1], "dtype": "no-such-type"}, TypeError, ["dtype"]),
    ({"layer_sizes": [3, 1], "random_state": -1}, ValueError, ["random_state"]),
    ({"layer_sizes": [3, 1], "random_state": 1.5}, TypeError, ["random_state"]),
    ({"layer_sizes": [3, 1], "random_state": "seed"}, TypeError, ["random_state"]),
    ({"layer_sizes": [3, 1], "random_state": True}, TypeError, ["random_state"]),
]


@pytest.mark.parametrize("kwargs,exc,words", MLP_CONSTRUCTOR, ids=[repr(c[0]) for c in MLP_CONSTRUCTOR])
def test_mlp_constructor_bad_arguments(kwargs, exc, words):
    _raises(exc, words, lambda: MLP(**kwargs))


NN_CONSTRUCTOR = [
    ({"hidden_size": 0}, ValueError, ["hidden_size", ">= 1"]),
    ({"hidden_size": -2}, ValueError, ["hidden_size"]),
    ({"hidden_size": 2.5}, TypeError, ["hidden_size"]),
    ({"hidden_size": True}, TypeError, ["hidden_size"]),
    ({"learning_rate": 0.0}, ValueError, ["learning_rate"]),
    ({"learning_rate": -1}, ValueError, ["learning_rate"]),
    ({"learning_rate": np.nan}, ValueError, ["learning_rate"]),
    ({"learning_rate": "1"}, TypeError, ["learning_rate"]),
    ({"dtype": "float16"}, ValueError, ["dtype"]),
    ({"dtype": "int32"}, ValueError, ["dtype"]),
    ({"x": np.ones((4, 3)), "y": np.ones((3, 1))}, ValueError, ["x", "y", "same number of rows"]),
]


@pytest.mark.parametrize("kwargs,exc,words", NN_CONSTRUCTOR, ids=[repr(c[0])[:40] for c in NN_CONSTRUCTOR])
def test_neural_network_constructor_bad_arguments(kwargs, exc, words):
    args = {"x": TUTORIAL_X, "y": TUTORIAL_Y, **kwargs}
    np.random.seed(3)
    _raises(exc, words, lambda: NeuralNetwork(**args))
    after = np.random.rand()
    np.random.seed(3)
    assert after == np.random.rand()


@pytest.mark.parametrize(
    "iterations,exc",
    [(-1, ValueError), (2.5, TypeError), (2.0, TypeError), ("10", TypeError), (None, TypeError), (True, TypeError)],
)
def test_neural_network_train_bad_iterations(iterations, exc):
    nn = _trained_nn()
    before = _nn_state(nn)
    _raises(exc, ["iterations"], lambda: nn.train(iterations))
    _assert_nn_unchanged(nn, before)


def test_backprop_before_feedforward_leaves_the_weights():
    np.random.seed(0)
    nn = NeuralNetwork(TUTORIAL_X, TUTORIAL_Y)
    w1, w2 = nn.weights1.copy(), nn.weights2.copy()
    _raises(AttributeError, ["feedforward"], nn.backprop)
    np.testing.assert_array_equal(nn.weights1, w1)
    np.testing.assert_array_equal(nn.weights2, w2)


# ------------------------------------------------------------- save / load
@pytest.mark.parametrize(
    "model,path,exc,words",
    [
        ("not a model", "m.npz", TypeError, ["model", "MLP", "NeuralNetwork"]),
        (None, "m.npz", TypeError, ["model"]),
        ("mlp", 123, TypeError, ["path"]),
        ("mlp", None, TypeError, ["path"]),
        ("mlp", "", ValueError, ["path"]),
    ],
)
def test_save_bad_arguments(model, path, exc, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = _trained_mlp() if model == "mlp" else model
    before = _mlp_state(m) if model == "mlp" else None
    _raises(exc, words, lambda: save(m, path))
    assert os.listdir(tmp_path) == []
    if before is not None:
        _assert_mlp_unchanged(m, before)


def test_save_into_a_missing_directory_is_an_os_error(tmp_path):
    m = _trained_mlp()
    with pytest.raises(FileNotFoundError):
        save(m, tmp_path / "missing" / "m.npz")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("path,exc", [(None, TypeError), (3.5, TypeError), ("", ValueError)])
def test_load_bad_path_arguments(path, exc):
    _raises(exc, ["path"], lambda: load(path))


def test_load_missing_file(tmp_path):
    _raises(FileNotFoundError, ["no such file"], lambda: load(tmp_path / "nothing.npz"))


# -------------------------------------------------------------------- CLI
@pytest.mark.parametrize(
    "argv,code",
    [
        (["demo", "--iterations", "-3"], 2),
        (["demo", "--iterations", "1.5"], 2),
        (["demo", "--iterations", ""], 2),
        (["demo", "--repeats", "0"], 2),
        (["demo", "--seed", "abc"], 2),
        (["demo", "--seed"], 2),
        (["demo", "extra"], 2),
        (["demo", "--iterations", "5", "--repeats", "1", "--seed", "-1"], 1),
        (["demo", "--iterations", "5", "--repeats", "1", "--seed", str(2**40)], 1),
    ],
)
def test_cli_demo_bad_arguments_one_line_nonzero_exit(argv, code, capsys):
    try:
        result = cli_main(argv)
    except SystemExit as exc:
        result = exc.code
    assert result == code
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert "error" in err and "Traceback" not in err
    assert "Traceback" not in captured.out


# ------------------------------------------------ accept, convert, never mutate
def _variants(X):
    """(id, equivalent input, exact) for a float64 array X of small integers."""
    fortran = np.asfortranarray(X)
    strided = np.zeros((X.shape[0], 2 * X.shape[1]))
    strided[:, ::2] = X
    readonly = X.copy()
    readonly.setflags(write=False)
    return [
        ("list", X.tolist()),
        ("tuple", tuple(map(tuple, X.tolist()))),
        ("int64", X.astype(np.int64)),
        ("int8", X.astype(np.int8)),
        ("uint16", X.astype(np.uint16)),
        ("bool", X.astype(bool)),
        ("fortran", fortran),
        ("non-contiguous", strided[:, ::2]),
        ("reversed-rows", X[::-1][::-1]),
        ("read-only", readonly),
        ("float32", X.astype(np.float32)),
        ("float16", X.astype(np.float16)),
    ]


def _fingerprint(value):
    arr = np.asarray(value)
    return (arr.tobytes(), arr.dtype, arr.shape, arr.flags.writeable, type(value))


VARIANT_IDS = [name for name, _ in _variants(TUTORIAL_X)]


@pytest.mark.parametrize("variant", range(len(VARIANT_IDS)), ids=VARIANT_IDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mlp_accepts_and_converts_without_mutating(variant, dtype):
    name, X = _variants(TUTORIAL_X)[variant]
    _, y = _variants(TUTORIAL_Y)[variant]
    x_print, y_print = _fingerprint(X), _fingerprint(y)
    a = MLP([D, 5, 1], random_state=2, dtype=dtype)
    b = MLP([D, 5, 1], random_state=2, dtype=dtype)
    ha = a.fit(X, y, epochs=4, batch_size=3, optimizer="momentum")
    hb = b.fit(TUTORIAL_X.astype(dtype), TUTORIAL_Y.astype(dtype), epochs=4, batch_size=3, optimizer="momentum")
    np.testing.assert_array_equal(ha, hb)
    np.testing.assert_array_equal(a._params, b._params)
    pa = a.predict(X)
    assert pa.dtype == np.dtype(dtype) and pa.flags.c_contiguous
    np.testing.assert_array_equal(pa, b.predict(TUTORIAL_X))
    la = a.loss_and_gradients(X, y)
    lb = b.loss_and_gradients(TUTORIAL_X, TUTORIAL_Y)
    assert la[0] == lb[0]
    for ga, gb in zip(la[1], lb[1]):
        np.testing.assert_array_equal(ga, gb)
    assert _fingerprint(X) == x_print and _fingerprint(y) == y_print


def test_float64_input_to_float32_model_rounds_like_astype():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 3))
    m = MLP([3, 4, 2], dtype="float32", random_state=0)
    np.testing.assert_array_equal(m.predict(X), m.predict(X.astype(np.float32)))
    m64 = MLP([3, 4, 2], dtype="float64", random_state=0)
    X32 = X.astype(np.float32)
    np.testing.assert_array_equal(m64.predict(X32), m64.predict(X32.astype(np.float64)))


def test_one_output_accepts_1d_targets():
    a = MLP([D, 4, 1], random_state=0)
    b = MLP([D, 4, 1], random_state=0)
    np.testing.assert_array_equal(a.fit(TUTORIAL_X, TUTORIAL_Y.ravel(), epochs=3), b.fit(TUTORIAL_X, TUTORIAL_Y, epochs=3))
    two = MLP([D, 4, 2], random_state=0)
    _raises(ValueError, ["y", "2-D"], lambda: two.fit(TUTORIAL_X, np.ones(N)))


@pytest.mark.parametrize("variant", range(len(VARIANT_IDS)), ids=VARIANT_IDS)
def test_neural_network_accepts_and_converts_without_mutating(variant):
    name, X = _variants(TUTORIAL_X)[variant]
    _, y = _variants(TUTORIAL_Y)[variant]
    x_print, y_print = _fingerprint(X), _fingerprint(y)
    np.random.seed(4)
    a = NeuralNetwork(X, y)
    np.random.seed(4)
    b = NeuralNetwork(TUTORIAL_X, TUTORIAL_Y)
    np.testing.assert_array_equal(a.train(20), b.train(20))
    a.feedforward()
    a.backprop()
    b.feedforward()
    b.backprop()
    np.testing.assert_array_equal(a.weights1, b.weights1)
    np.testing.assert_array_equal(a.output, b.output)
    assert _fingerprint(X) == x_print and _fingerprint(y) == y_print


def test_neural_network_read_only_weights_are_copied_not_written():
    nn = _trained_nn()
    w1 = nn.weights1.copy()
    w1.setflags(write=False)
    kept = w1.copy()
    nn.weights1 = w1
    nn.train(3)
    np.testing.assert_array_equal(w1, kept)
    assert nn.weights1 is not w1 and nn.weights1.flags.writeable


def test_check_array_never_returns_a_view_of_converted_input():
    X = np.asfortranarray(np.ones((3, 2)))
    out = v.check_array(X, "X", np.float64)
    assert out.flags.c_contiguous and not np.shares_memory(out, X)
    # already the right layout: no copy is made (and none is needed: nothing writes into it)
    C = np.ones((3, 2))
    assert v.check_array(C, "X", np.float64) is C
