"""Hypothesis property tests over random architectures, shapes, dtypes and data.

* the compiled kernels (through :class:`MLP` and :class:`NeuralNetwork`)
  equal the NumPy oracle;
* a save / load round trip is exact;
* finite input never yields NaN.

Example counts are modest (``max_examples`` below) so that the suite stays fast.
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import assert_close  # noqa: E402
from fastnn import MLP, DivergenceError, NeuralNetwork  # noqa: E402
from fastnn import reference as ref  # noqa: E402
from fastnn.io import load, save  # noqa: E402

EXAMPLES = 40
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

HIDDEN = ["sigmoid", "logistic", "tanh", "relu", "identity"]
# every valid (loss, output activation) pair
PAIRS = [(loss, out) for loss in ("sse", "mse") for out in HIDDEN] + [
    ("log_loss", "sigmoid"),
    ("log_loss", "logistic"),
    ("log_loss", "softmax"),
]


@st.composite
def configurations(draw, max_width=12, max_layers=4):
    n_layers = draw(st.integers(1, max_layers))
    sizes = draw(st.lists(st.integers(1, max_width), min_size=n_layers + 1, max_size=n_layers + 1))
    loss, out = draw(st.sampled_from(PAIRS))
    return {
        "layer_sizes": sizes,
        "activation": draw(st.sampled_from(HIDDEN)),
        "output_activation": out,
        "loss": loss,
        "bias": draw(st.booleans()),
        "dtype": draw(st.sampled_from(["float64", "float32"])),
        "random_state": draw(st.integers(0, 2**32 - 1)),
    }


def _data(config, n, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    sizes = config["layer_sizes"]
    dtype = config["dtype"]
    X = (rng.standard_normal((n, sizes[0])) * scale).astype(dtype)
    k = sizes[-1]
    if config["output_activation"] == "softmax":
        Y = np.eye(k, dtype=dtype)[rng.integers(0, k, n)]
    elif config["loss"] == "log_loss":
        Y = rng.integers(0, 2, (n, k)).astype(dtype)
    else:
        Y = rng.random((n, k)).astype(dtype)
    return X, Y


@SETTINGS
@given(config=configurations(), n=st.integers(1, 25), seed=st.integers(0, 2**32 - 1), alpha=st.sampled_from([0.0, 0.3]))
def test_mlp_kernels_equal_the_oracle(config, n, seed, alpha):
    m = MLP(**config)
    X, Y = _data(config, n, seed)
    dtype = m.dtype
    act, out_act = config["activation"], config["output_activation"]
    with np.errstate(all="ignore"):
        expected = ref.forward(X, m.weights, m.biases, act, out_act)[-1]
        ev, ewg, ebg = ref.loss_and_gradients(X, Y, m.weights, m.biases, act, out_act, config["loss"], alpha)
    got = m.predict(X)
    assert got.dtype == dtype and got.shape == (n, m.n_outputs)
    assert_close(got, expected, dtype)
    value, wg, bg = m.loss_and_gradients(X, Y, alpha=alpha)
    assert_close(value, ev, dtype)
    for g, e in zip(wg, ewg):
        assert_close(g, e, dtype)
    if config["bias"]:
        for g, e in zip(bg, ebg):
            assert_close(g, e, dtype)


def _oracle_tutorial_training(x, y, w1, w2, lr, iterations):
    losses = []
    for _ in range(iterations):
        acts = ref.forward(x, [w1, w2], None, "sigmoid", "sigmoid")
        losses.append(ref.loss(y, acts[-1], "sse"))
        wg, _ = ref.backward(acts, y, [w1, w2], "sigmoid", "sigmoid", "sse", False)
        w1 = w1 - lr * wg[0]
        w2 = w2 - lr * wg[1]
    return np.array(losses), w1, w2


@SETTINGS
@given(
    n=st.integers(1, 20),
    d=st.integers(1, 8),
    hidden=st.integers(1, 10),
    k=st.integers(1, 4),
    iterations=st.integers(0, 30),
    lr=st.sampled_from([0.05, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_neural_network_equals_the_oracle(n, d, hidden, k, iterations, lr, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.random((n, d)), rng.random((n, k))
    np.random.seed(seed)
    nn = NeuralNetwork(x, y, hidden_size=hidden, learning_rate=lr)
    w1, w2 = nn.weights1.copy(), nn.weights2.copy()
    expected = _oracle_tutorial_training(x, y, w1, w2, lr, iterations)
    # how far float64 rounding alone can move this trajectory: the oracle
    # started from weights one ulp away (training at lr = 1 can be chaotic),
    # in three directions, which can differ by 100x (one nudge alone let a
    # run with the kernels executed as Python fail by 8e-11)
    ulp = 2.0**-52
    nudges = [(w1 * (1 + ulp), w2), (w1 * (1 - ulp), w2), (w1, w2 * (1 + ulp))]
    nudged = [_oracle_tutorial_training(x, y, a, b, lr, iterations) for a, b in nudges]
    got = (nn.train(iterations), nn.weights1, nn.weights2)
    # the oracle tolerance holds per evaluation; along a trajectory rounding
    # differences (summation order, exp to 2 ulp) add up step after step
    steps = max(1, iterations)
    for i, (g, e) in enumerate(zip(got, expected)):
        if not e.size:
            continue
        scale = max(1.0, float(np.abs(e).max()))
        sensitivity = max(float(np.abs(other[i] - e).max()) for other in nudged)
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12 * scale * steps + 10 * sensitivity)


@SETTINGS
@given(
    config=configurations(max_width=8, max_layers=3),
    optimizer=st.sampled_from([None, "gd", "momentum", "adam"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_save_load_round_trip_is_exact(config, optimizer, seed, tmp_path_factory):
    m = MLP(**config)
    X, Y = _data(config, 9, seed)
    if optimizer is not None:
        _fit(m, X, Y, optimizer)  # a model that diverged is saved like any other
    path = tmp_path_factory.mktemp("io") / "model.npz"
    save(m, path)
    clone = load(path)
    assert repr(clone) == repr(m)
    np.testing.assert_array_equal(clone._params, m._params)
    np.testing.assert_array_equal(clone.history_, m.history_)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(clone.predict(X), m.predict(X))
    a = _fit(m, X, Y, optimizer or "gd", epochs=2)
    b = _fit(clone, X, Y, optimizer or "gd", epochs=2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(clone._params, m._params)
    np.testing.assert_array_equal(clone.history_, m.history_)


def _fit(m, X, Y, optimizer, epochs=3):
    """Loss history of a short fit, or the epoch at which it diverged."""
    try:
        return m.fit(X, Y, epochs=epochs, batch_size=4, optimizer=optimizer, learning_rate=0.01)
    except DivergenceError as exc:
        return np.array([-1.0, exc.epoch])


@SETTINGS
@given(
    n=st.integers(1, 8),
    d=st.integers(1, 6),
    hidden=st.integers(1, 6),
    k=st.integers(1, 3),
    dtype=st.sampled_from(["float64", "float32"]),
    trained=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_neural_network_save_load_round_trip_is_exact(n, d, hidden, k, dtype, trained, seed, tmp_path_factory):
    rng = np.random.default_rng(seed)
    np.random.seed(seed)
    nn = NeuralNetwork(rng.random((n, d)), rng.random((n, k)), hidden_size=hidden, dtype=dtype)
    if trained:
        nn.train(5)
    path = tmp_path_factory.mktemp("io") / "nn.npz"
    save(nn, path)
    clone = load(path)
    for name in ("input", "y", "weights1", "weights2", "output"):
        np.testing.assert_array_equal(getattr(clone, name), getattr(nn, name))
    np.testing.assert_array_equal(clone.train(3), nn.train(3))


@st.composite
def finite_inputs(draw, config, n):
    dtype = np.dtype(config["dtype"])
    bounded = config["activation"] in ("sigmoid", "logistic", "tanh")
    # unbounded hidden activations pass magnitudes on; keep those away from overflow
    limit = (1e300 if bounded else 1e6) if dtype == np.float64 else (1e30 if bounded else 1e3)
    limit = float(dtype.type(limit))  # exactly representable in the dtype
    elements = st.floats(-limit, limit, allow_nan=False, allow_infinity=False, width=64 if dtype == np.float64 else 32)
    values = draw(st.lists(elements, min_size=n * config["layer_sizes"][0], max_size=n * config["layer_sizes"][0]))
    return np.array(values, dtype=dtype).reshape(n, config["layer_sizes"][0])


@SETTINGS
@given(data=st.data(), config=configurations(max_width=8, max_layers=3), n=st.integers(1, 6))
def test_finite_input_never_yields_nan(data, config, n):
    m = MLP(**config)
    X = data.draw(finite_inputs(config, n))
    out = m.predict(X)
    assert not np.isnan(out).any()
    if config["output_activation"] in ("sigmoid", "logistic", "tanh", "softmax"):
        assert np.isfinite(out).all()
    if config["loss"] == "log_loss":
        # bounded outputs: the clipped log-loss and its gradients are finite for any finite input
        _, Y = _data(config, n, 0)
        value, wg, bg = m.loss_and_gradients(X, Y)
        assert np.isfinite(value)
        if config["activation"] in ("sigmoid", "logistic", "tanh"):
            assert all(np.isfinite(g).all() for g in wg)
