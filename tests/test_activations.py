"""The activations of the value/slope tables, against the reference and PyTorch.

Each activation is checked alone (its value and its derivative, separately,
on edge cases where a careless formula overflows or loses its digits), then
inside a model: per-layer lists, bad arguments, saving. The training kernels
are checked with these activations in test_kernels, test_mlp and test_tiled.
"""

import numba
import numpy as np
import pytest

from conftest import DTYPES, JIT_DISABLED, assert_close
from fastnn import MLP, Activation, load, save
from fastnn import reference as ref
from fastnn._kernels import activations as ka
from fastnn._kernels import codes

NAMES = ["sigmoid", "tanh", "relu", "identity", "leaky_relu", "elu", "softplus", "gelu", "silu"]
EDGES = [-1000.0, -100.0, -40.0, -20.0, -3.0, -1.0, -1e-8, 0.0, 1e-8, 0.5, 1.0, 3.0, 20.0, 40.0, 100.0, 1000.0]


def _edges(dtype):
    z = np.array(EDGES, dtype=np.float64)
    if dtype == np.float32:
        z = z[np.abs(z) < 500]  # float32 exp overflows past 88 anyway: the table stops short
    return z.astype(dtype)


def _kernel_value_and_slope(z, name):
    # the rows the training kernels compute: a = f(z) in place, and f'(z)
    # from a (derivative_row) or kept from z (activate_row_keep)
    code = codes.ACTIVATION_CODES[name]
    a = z.copy()
    slope = np.empty_like(z)
    if code in codes.KEPT:
        ka.activate_row_table(a, z[:0], False, code, (0, 0))  # prediction's path
        kept = z.copy()
        ka.activate_row_keep(kept, z[:0], False, code, slope, (0, 0))
        np.testing.assert_array_equal(kept, a)  # the same value either way
    else:
        ka.activate_row(a, z[:0], False, code)
        ka.derivative_row(np.ones_like(z), a.copy(), slope, code)
    return a, slope


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_value_and_slope_match_the_reference_on_edge_cases(name, dtype):
    z = _edges(dtype)
    a, slope = _kernel_value_and_slope(z, name)
    expected = ref.activate(z, name)
    assert a.dtype == slope.dtype == dtype
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(slope))
    assert_close(a, expected, dtype)
    assert_close(slope, ref.activation_derivative(expected, name, z), dtype, scale=1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_slopes_match_finite_differences(name, dtype):
    # away from kinks, in float64: the slope is the derivative of the value
    z = np.array([-4.0, -1.3, -0.2, 0.3, 1.1, 2.5, 6.0])
    h = 1e-6
    up, _ = _kernel_value_and_slope(z + h, name)
    down, _ = _kernel_value_and_slope(z - h, name)
    _, slope = _kernel_value_and_slope(z.astype(dtype), name)
    np.testing.assert_allclose(slope, (up - down) / (2 * h), rtol=1e-6 if dtype == np.float64 else 1e-5, atol=1e-7)


TORCH = {
    "leaky_relu": "leaky_relu",
    "elu": "elu",
    "softplus": "softplus",
    "gelu": "gelu",
    "silu": "silu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
}


@pytest.mark.parametrize("name", sorted(TORCH))
def test_value_and_gradient_match_pytorch(name):
    torch = pytest.importorskip("torch")
    z = np.linspace(-30, 30, 241)
    a, slope = _kernel_value_and_slope(z, name)
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    fn = getattr(torch.nn.functional, TORCH[name], None) or getattr(torch, TORCH[name])
    if name == "softplus":
        out = fn(zt, beta=1.0, threshold=1e9)  # PyTorch's default switches to z above 20
    else:
        out = fn(zt)
    out.sum().backward()
    # the value and the gradient are checked separately
    np.testing.assert_allclose(a, out.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(slope, zt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_per_layer_activations_are_applied_layer_by_layer(rng):
    m = MLP([3, 5, 4, 2], activation=["gelu", "tanh"], output_activation="identity", random_state=0)
    X = rng.standard_normal((6, 3))
    h1 = ref.gelu(X @ m.weights[0] + m.biases[0])
    h2 = np.tanh(h1 @ m.weights[1] + m.biases[1])
    assert_close(m.predict(X), h2 @ m.weights[2] + m.biases[2])
    assert m.activation == ["gelu", "tanh"]
    assert "activation=['gelu', 'tanh']" in repr(m)


def test_initialisation_takes_the_factor_of_the_activation_each_layer_feeds():
    m = MLP([50, 40, 30, 2], activation=["logistic", "relu"], random_state=3)
    mixed = [np.abs(w).max() for w in m.weights]
    # uniform in [-b, b] with b = sqrt(f / (fan_in + fan_out)): f = 2 for the
    # layer feeding the logistic one, 6 for the others (output: the last hidden's)
    bounds = [np.sqrt(2 / 90), np.sqrt(6 / 70), np.sqrt(6 / 32)]
    for got, bound in zip(mixed, bounds):
        assert 0.9 * bound < got <= bound


@pytest.mark.parametrize(
    "activation,exc,words",
    [
        ("swish", ValueError, ["activation", "'swish'", "gelu"]),
        (["relu"], ValueError, ["activation", "1 entries", "2 hidden layers"]),
        (["relu", "relu", "relu"], ValueError, ["3 entries"]),
        (["relu", "mish"], ValueError, ["activation[1]", "'mish'"]),
        (["relu", 3], TypeError, ["activation[1]"]),
        (("relu",), ValueError, ["1 entries"]),
        (7, TypeError, ["activation"]),
        ("softmax", ValueError, ["activation"]),
    ],
)
def test_bad_activations_are_named(activation, exc, words):
    with pytest.raises(exc) as err:
        MLP([3, 4, 4, 1], activation=activation)
    for word in words:
        assert word in str(err.value)


def test_per_layer_model_saves_and_loads(tmp_path, rng):
    m = MLP([3, 6, 5, 2], activation=["silu", "elu"], output_activation="softmax", loss="log_loss",
            dtype="float32", random_state=1)  # fmt: skip
    X = rng.standard_normal((20, 3)).astype(np.float32)
    Y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 20)]
    m.fit(X, Y, epochs=3, learning_rate=0.05, optimizer="adam", batch_size=8)
    save(m, tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert back.activation == ["silu", "elu"]
    np.testing.assert_array_equal(back.predict(X), m.predict(X))
    # and training goes on identically
    np.testing.assert_array_equal(
        back.fit(X, Y, epochs=2, learning_rate=0.05, optimizer="adam", batch_size=8),
        m.fit(X, Y, epochs=2, learning_rate=0.05, optimizer="adam", batch_size=8),
    )


# ------------------------------------------------------------ Activation
@numba.njit
def _softsign(z):
    return z / (1.0 + abs(z))


@numba.njit
def _softsign_derivative(z, a):
    return 1.0 / ((1.0 + abs(z)) * (1.0 + abs(z)))


@numba.njit
def _tanh(z):
    return np.tanh(z)


@numba.njit
def _tanh_derivative(z, a):
    return 1.0 - a * a


SOFTSIGN = Activation("softsign", _softsign, _softsign_derivative)


def _softsign_numpy(z):
    return z / (1 + np.abs(z))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_custom_activation_runs_in_the_kernels(dtype, rng):
    m = MLP([4, 7, 5, 2], activation=[SOFTSIGN, "gelu"], output_activation="identity", loss="mse",
            dtype=dtype, random_state=0)  # fmt: skip
    X = rng.standard_normal((9, 4)).astype(dtype)
    Y = rng.standard_normal((9, 2)).astype(dtype)
    h = _softsign_numpy(X @ m.weights[0] + m.biases[0])
    out = ref.gelu(h @ m.weights[1] + m.biases[1]) @ m.weights[2] + m.biases[2]
    assert m.predict(X).dtype == dtype
    assert_close(m.predict(X), out, dtype)
    value, wg, bg = m.loss_and_gradients(X, Y, alpha=0.1)
    ev, ewg, ebg = ref.loss_and_gradients(X, Y, m.weights, m.biases, [SOFTSIGN, "gelu"], "identity", "mse", 0.1)
    assert_close(value, ev, dtype)
    for g, e in zip(wg + bg, ewg + ebg):
        assert_close(g, e, dtype)


def test_a_custom_copy_of_tanh_trains_as_tanh(rng):
    # the same math through the function addresses, in both runtimes' kernels
    mine = Activation("my_tanh", _tanh, _tanh_derivative)
    X = rng.standard_normal((150, 5))
    Y = rng.random((150, 2))
    runs = []
    for activation in ("tanh", mine):
        m = MLP([5, 12, 2], activation=activation, output_activation="sigmoid", loss="mse", random_state=1)
        runs.append((m.fit(X, Y, epochs=4, batch_size=100, optimizer="adam", learning_rate=0.01), m._params))
    assert_close(runs[1][0], runs[0][0])
    assert_close(runs[1][1], runs[0][1])


def test_a_model_with_a_custom_activation_pickles_but_does_not_save(tmp_path, rng):
    import pickle

    m = MLP([3, 6, 1], activation=SOFTSIGN, random_state=0)
    X = rng.standard_normal((5, 3))
    back = pickle.loads(pickle.dumps(m))
    assert back.activation.name == "softsign"
    np.testing.assert_array_equal(back.predict(X), m.predict(X))
    with pytest.raises(TypeError, match="softsign.*cannot be saved"):
        save(m, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def _plain(z):
    return z


@numba.njit
def _raises(z):
    raise ValueError("no")


@numba.njit
def _pair(z):
    return (z, z)


@numba.njit
def _infinite(z, a):
    return np.inf


@pytest.mark.parametrize(
    "args,exc,words",
    [
        (("x", _plain, _softsign_derivative), TypeError, ["Activation('x').function", "numba.njit"]),
        (("x", _softsign, _plain), TypeError, ["Activation('x').derivative", "numba.njit"]),
        (("x", _raises, _softsign_derivative), ValueError, ["Activation('x').function", "fails"]),
        (("x", _pair, _softsign_derivative), ValueError, ["Activation('x').function", "not a float"]),
        (("x", _softsign, _infinite), ValueError, ["Activation('x').derivative", "not a finite float"]),
        ((3, _softsign, _softsign_derivative), TypeError, ["name"]),
    ],
)
def test_bad_custom_activations_are_named(args, exc, words):
    if JIT_DISABLED and "numba.njit" in words:
        pytest.skip("with NUMBA_DISABLE_JIT=1, numba.njit returns the Python function")
    with pytest.raises(exc) as err:
        Activation(*args)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "identity"])
def test_the_table_loops_take_a_classic_activation_too(name, dtype):
    # prediction's and dropout's loops are specialised per kept activation;
    # any other code goes through the classic table
    z = _edges(dtype)
    code = codes.ACTIVATION_CODES[name]
    a = z.copy()
    ka.activate_row_table(a, z[:0], False, code, (0, 0))
    kept, slope = z.copy(), np.empty_like(z)
    ka.activate_row_keep(kept, z[:0], False, code, slope, (0, 0))
    expected = ref.activate(z, name)
    assert_close(a, expected, dtype)
    np.testing.assert_array_equal(kept, a)
    assert_close(slope, ref.activation_derivative(expected, name, z), dtype, scale=1.0)
