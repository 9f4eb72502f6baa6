"""Overflow safety, divergence, determinism (in and across processes) and the compiled cache."""

import os
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings
import zlib

import numpy as np
import pytest

from conftest import DTYPES, JIT_DISABLED, TUTORIAL_X, TUTORIAL_Y
from fastnn import MLP, DivergenceError, NeuralNetwork
from fastnn import network as network_module
from fastnn import reference as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Z = 1e4


def _strict():
    """Warnings are errors and NumPy raises on any floating-point event."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("error")
    err = np.errstate(all="raise")
    err.__enter__()
    return ctx, err


@pytest.fixture
def strict():
    ctx, err = _strict()
    yield
    err.__exit__(None, None, None)
    ctx.__exit__(None, None, None)


def _saturated(dtype, hidden, out_act, loss, k):
    """A network whose pre-activations are exactly +-1e4 in every layer."""
    m = MLP([1, 2, k], activation=hidden, output_activation=out_act, loss=loss, dtype=dtype, random_state=0)
    m.weights[0][...] = [[Z, -Z]]
    m.biases[0][...] = 0
    # hidden activations are in {0, 1} (sigmoid), {-1, 1} (tanh) or {0, 1e4} (relu, identity):
    # scale the second layer so that |z| = 1e4 at the output either way
    scale = Z if hidden in ("sigmoid", "tanh") else 1.0
    W = np.zeros((2, k))
    W[0, :] = scale * np.where(np.arange(k) == 0, 1.0, -1.0)  # one winner: no softmax ties
    W[1, :] = -W[0, :] if k == 1 else scale * np.where(np.arange(k) == k - 1, 1.0, -0.5)
    m.weights[1][...] = W
    m.biases[1][...] = 0
    X = np.array([[1.0], [-1.0], [1.0], [-1.0]], dtype=dtype)
    return m, X


OUTPUTS = [("sigmoid", "log_loss", 1), ("sigmoid", "log_loss", 3), ("softmax", "log_loss", 3), ("sigmoid", "sse", 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", ["sigmoid", "tanh", "relu", "identity"])
@pytest.mark.parametrize("out_act,loss,k", OUTPUTS)
def test_saturated_network_is_finite_and_silent(dtype, hidden, out_act, loss, k, strict):
    m, X = _saturated(dtype, hidden, out_act, loss, k)
    out = m.predict(X)
    assert out.dtype == dtype and np.isfinite(out).all()
    assert ((out >= 0) & (out <= 1)).all()
    if out_act == "softmax":
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
    # saturated to exactly 0 and 1
    assert set(np.unique(out)) <= {0.0, 1.0}
    # targets that are the opposite of the confident prediction: the worst case of log-loss
    if out_act == "softmax":
        Y = np.eye(k, dtype=dtype)[np.argmin(out, axis=1)]
    else:
        Y = (1 - out).astype(dtype)
    value, wg, bg = m.loss_and_gradients(X, Y, alpha=0.1)
    assert np.isfinite(value)
    for g in wg + bg:
        assert g.dtype == dtype and np.isfinite(g).all()
    if loss == "log_loss":
        eps = np.finfo(dtype).eps
        per_sample = -np.log(eps) * (1 if out_act == "softmax" else k)
        assert value >= 0.99 * per_sample
    history = m.fit(X, Y, epochs=3, learning_rate=1e-9, optimizer="adam", batch_size=2)
    assert np.isfinite(history).all() and np.isfinite(m._params).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_saturated_values_match_the_oracle(dtype, strict):
    m, X = _saturated(dtype, "sigmoid", "softmax", "log_loss", 3)
    with np.errstate(all="ignore"):  # the oracle is written for clarity, not silence
        expected = ref.forward(X, m.weights, m.biases, "sigmoid", "softmax")[-1]
    np.testing.assert_array_equal(m.predict(X), expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_neural_network_saturated_is_finite_and_silent(dtype, strict):
    np.random.seed(0)
    X = np.array([[Z, -Z, 1.0], [-Z, Z, 1.0]])
    nn = NeuralNetwork(X, [[0.0], [1.0]], dtype=dtype)
    nn.weights1[...] = 1.0
    nn.weights1[1] = -1.0
    nn.feedforward()
    assert np.isfinite(nn.layer1).all() and np.isfinite(nn.output).all()
    nn.backprop()
    history = nn.train(5)
    assert np.isfinite(history).all() and np.isfinite(nn.weights1).all()


# --------------------------------------------------------------- divergence
class _silent_when_compiled(warnings.catch_warnings):
    """Warnings are errors, except with NUMBA_DISABLE_JIT=1: kernels run as
    Python then, and NumPy scalars warn on the overflow that compiled code
    (IEEE semantics) passes over silently."""

    def __enter__(self):
        result = super().__enter__()
        if not JIT_DISABLED:
            warnings.simplefilter("error")
        return result


def _exploding(dtype=np.float64):
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((20, 3)) * 100).astype(dtype)
    y = (rng.standard_normal((20, 1)) * 100).astype(dtype)
    return X, y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer,batch_size", [("gd", None), ("momentum", None), ("sgd", 5), ("adam", 4)])
def test_mlp_divergence_names_the_epoch_and_keeps_finite_parameters(dtype, optimizer, batch_size):
    X, y = _exploding(dtype)
    m = MLP([3, 50, 1], activation="identity", output_activation="identity", loss="sse", dtype=dtype, random_state=0)
    m.fit(X, y, epochs=1, learning_rate=1e-12)
    # Adam's steps are bounded by the learning rate: it needs an absurd one to diverge
    lr = (1e200 if dtype == np.float64 else 1e30) if optimizer == "adam" else 10.0
    with _silent_when_compiled():
        with pytest.raises(DivergenceError) as info:
            m.fit(X, y, epochs=100000, learning_rate=lr, optimizer=optimizer, batch_size=batch_size)
    epoch = info.value.epoch
    assert isinstance(info.value, FloatingPointError)
    assert f"epoch {epoch}" in str(info.value) and "learning_rate" in str(info.value)
    assert 0 <= epoch < 100000
    assert np.isfinite(m._params).all()
    # kept: the first fit's epoch, then this call's epochs up to the one before the last complete one
    assert m.history_.shape == (1 + max(epoch - 1, 0),) and np.isfinite(m.history_).all()
    # the model still accepts calls afterwards, and its parameters give finite predictions
    assert np.isfinite(m.predict(X)).all()
    m.loss_and_gradients(X, y)


@pytest.mark.parametrize("batch_size", [None, 1])
def test_mlp_finite_loss_with_non_finite_gradient_is_a_divergence(batch_size):
    # h = 1e200 and z = 1e154: the loss z**2 = 1e308 is finite, dW2 = 2 z h overflows
    m = MLP([1, 1, 1], activation="identity", output_activation="identity", loss="mse", bias=False)
    m.weights[0][...] = 1.0
    m.weights[1][...] = 1e-46
    X, y = np.array([[1e200]]), np.array([[0.0]])
    value, wg, _ = m.loss_and_gradients(X, y)
    assert np.isfinite(value) and not np.isfinite(wg[1]).all()
    before = m._params.copy()
    with pytest.raises(DivergenceError, match="epoch 0: a gradient became non-finite") as info:
        m.fit(X, y, epochs=5, batch_size=batch_size, optimizer="momentum")
    assert info.value.epoch == 0
    np.testing.assert_array_equal(m._params, before)  # stopped before the update
    assert m.history_.shape == (0,)


def test_mlp_parameters_kept_after_divergence_give_finite_predictions():
    X, y = _exploding()
    m = MLP([3, 50, 1], activation="identity", output_activation="identity", loss="sse", random_state=0)
    with pytest.raises(DivergenceError):
        m.fit(X, y, epochs=100000, learning_rate=10.0, optimizer="sgd", batch_size=5)
    assert np.isfinite(m.predict(X)).all()
    assert np.isfinite(m.loss_and_gradients(X, y)[0])


def test_neural_network_divergence_keeps_the_weights_of_the_last_finite_loss():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    y = (rng.random((200, 1)) > 0.5) * 1.0
    np.random.seed(0)
    nn = NeuralNetwork(X, y, learning_rate=1e308)
    w1, w2 = nn.weights1.copy(), nn.weights2.copy()
    with _silent_when_compiled():
        with pytest.raises(DivergenceError, match="iteration 1") as info:
            nn.train(30)
    assert info.value.epoch == 1
    # the loss of iteration 0 (the last finite one) was measured on the starting weights
    np.testing.assert_array_equal(nn.weights1, w1)
    np.testing.assert_array_equal(nn.weights2, w2)
    assert np.isfinite(nn.output).all() and np.isfinite(nn.layer1).all()


def test_neural_network_divergence_replays_up_to_the_last_finite_loss(monkeypatch):
    """A divergence at iteration k leaves the weights of k - 1 clean iterations."""
    real = network_module._kernels()
    k = 6

    class Poisoned:
        @staticmethod
        def train(X, Y, W1, W2, layer1, output, lr, iterations, d1, d2, g1, g2, history):
            done = min(iterations, k)
            real.train(X, Y, W1, W2, layer1, output, lr, done, d1, d2, g1, g2, history[:done])
            if iterations > k:
                W1[...] = np.nan
                history[k:] = np.nan

    np.random.seed(5)
    clean = NeuralNetwork(TUTORIAL_X, TUTORIAL_Y)
    expected = clean.train(k - 1)
    np.random.seed(5)
    nn = NeuralNetwork(TUTORIAL_X, TUTORIAL_Y)
    monkeypatch.setattr(network_module, "_tutorial_kernels", Poisoned)
    with pytest.raises(DivergenceError, match=f"iteration {k}") as info:
        nn.train(20)
    assert info.value.epoch == k
    np.testing.assert_array_equal(nn.weights1, clean.weights1)
    np.testing.assert_array_equal(nn.weights2, clean.weights2)
    np.testing.assert_array_equal(nn.output, clean.output)
    assert np.isfinite(expected).all()


# -------------------------------------------------------------- determinism
_DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    from fastnn import MLP, NeuralNetwork

    def digest(*arrays):
        h = hashlib.sha256()
        for a in arrays:
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    rng = np.random.default_rng(11)
    X = rng.standard_normal((64, 20))
    Y = rng.random((64, 3))
    out = []
    for dtype in ("float64", "float32"):
        m = MLP([20, 64, 3], activation="relu", dtype=dtype, random_state=7)
        start = m._params.copy()
        history = m.fit(X, Y, epochs=5, batch_size=16, optimizer="adam", learning_rate=0.01)
        out.append(digest(start, m._params, history, m.predict(X)))
        np.random.seed(7)
        nn = NeuralNetwork(X, Y, hidden_size=9, dtype=dtype, learning_rate=0.1)
        nn.train(25)
        nn.feedforward()
        out.append(digest(nn.weights1, nn.weights2, nn.output))
    print(" ".join(out))
    """
)


def _determinism_digests():
    code = _DETERMINISM_SCRIPT.format(root=ROOT)
    namespace = {}
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec(compile(code, "<determinism>", "exec"), namespace)
    return buffer.getvalue().split()


def test_same_seed_gives_bit_identical_models_across_processes():
    here = _determinism_digests()
    assert here == _determinism_digests()  # and across runs in this process
    code = _DETERMINISM_SCRIPT.format(root=ROOT)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        )
        for seed in (1, 2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert out.split() == here
    assert len(set(here)) == len(here)  # float32 and float64 runs differ, as they should


@pytest.mark.parametrize("dtype", DTYPES)
def test_neural_network_follows_numpy_global_seed(dtype):
    runs = []
    for seed in (3, 3, 4):
        np.random.seed(seed)
        nn = NeuralNetwork(TUTORIAL_X, TUTORIAL_Y, dtype=dtype)
        nn.train(40)
        runs.append((nn.weights1.tobytes(), nn.weights2.tobytes(), nn.output.tobytes()))
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.mark.parametrize("dtype", DTYPES)
def test_mlp_random_state_forms_are_equivalent(dtype):
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((30, 4)), rng.random((30, 2))
    fitted = []
    for random_state in (9, np.random.default_rng(9), np.int64(9)):
        m = MLP([4, 7, 2], dtype=dtype, random_state=random_state)
        m.fit(X, Y, epochs=4, batch_size=8, optimizer="momentum")
        fitted.append(m._params.tobytes())
    assert fitted[0] == fitted[1] == fitted[2]
    # and the global NumPy seed plays no part in an MLP
    np.random.seed(1)
    a = MLP([4, 7, 2], dtype=dtype, random_state=9)
    np.random.seed(2)
    b = MLP([4, 7, 2], dtype=dtype, random_state=9)
    assert a._params.tobytes() == b._params.tobytes()


# ----------------------------------------------------------- compiled cache
_READ_ONLY_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import fastnn
    from fastnn import MLP, NeuralNetwork
    from fastnn._kernels import dense, tutorial
    X = np.random.default_rng(0).random((8, 3))
    Y = X[:, :1] > 0.5
    np.random.seed(0)
    nn = NeuralNetwork(X, Y)
    loss = nn.train(200)
    m = MLP([3, 4, 1], random_state=0)
    p = m.predict(X)
    print(json.dumps({
        "package": os.path.dirname(fastnn.__file__),
        "loss": [float(loss[0]), float(loss[-1])],
        "finite": bool(np.isfinite(p).all()),
        "cache_hits": [sum(tutorial.train.stats.cache_hits.values()), sum(dense.forward.stats.cache_hits.values())],
    }))
    """
)


def _without_write_permission():
    """A command prefix under which permission bits bind (root ignores them)."""
    if os.name != "posix" or os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only directory would still be writable")
    caps = "-dac_override,-dac_read_search,-fowner"
    probe = subprocess.run([setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot drop root's file capabilities here")
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]


@pytest.mark.requires_jit
def test_read_only_install_caches_compiled_kernels_elsewhere(tmp_path):
    """fastnn in a read-only directory: it trains, and Numba caches in the user's cache dir."""
    import json

    prefix = _without_write_permission()
    site = tmp_path / "site"
    shutil.copytree(
        os.path.join(ROOT, "fastnn"), site / "fastnn",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"),
    )
    for dirpath, dirnames, filenames in os.walk(site):
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            os.chmod(path, os.stat(path).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    os.chmod(site, 0o555)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH"))
    }
    env.update(HOME=str(home), PYTHONPATH=str(site))
    runs = []
    try:
        for _ in range(2):
            proc = subprocess.run(
                prefix + [sys.executable, "-c", _READ_ONLY_SCRIPT],
                cwd=str(home), env=env, capture_output=True, text=True, timeout=300,
            )
            assert proc.returncode == 0, proc.stderr
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        package_files = [os.path.join(d, f) for d, _, fs in os.walk(site) for f in fs]
    finally:
        for dirpath, dirnames, _ in os.walk(tmp_path):
            os.chmod(dirpath, 0o755)
    first, second = runs
    assert first["package"] == str(site / "fastnn")
    assert first["finite"] and first["loss"][1] < first["loss"][0]
    assert not [f for f in package_files if f.endswith((".nbi", ".nbc"))]
    cached = [os.path.join(d, f) for d, _, fs in os.walk(home) for f in fs if f.endswith((".nbi", ".nbc"))]
    assert cached, "Numba wrote no cache outside the read-only package"
    # the user-wide cache directory (~/.cache/numba on Linux) of the fresh HOME
    assert all(f.startswith(str(home) + os.sep) and "numba" in f for f in cached)
    # the second process loads the kernels from that cache instead of compiling them
    assert first["cache_hits"] == [0, 0] and second["cache_hits"][0] >= 1 and second["cache_hits"][1] >= 1
    assert second["loss"] == first["loss"]


# ------------------------------------------------- finite-difference gradients
# tests/test_mlp.py::test_gradients_match_finite_differences covers hidden
# sigmoid/tanh/relu/identity with (sse, sigmoid), (mse, identity), (mse, tanh),
# (log_loss, sigmoid), (log_loss, softmax). These are the remaining
# combinations, so that together every hidden activation x valid
# (loss, output activation) pair x bias is checked, in float64.
_HIDDEN = ["sigmoid", "logistic", "tanh", "relu", "identity"]
_PAIRS = [(loss, out) for loss in ("sse", "mse") for out in _HIDDEN] + [
    ("log_loss", "sigmoid"), ("log_loss", "logistic"), ("log_loss", "softmax"),
]
_IN_TEST_MLP = {
    (act, pair)
    for act in ("sigmoid", "tanh", "relu", "identity")
    for pair in [("sse", "sigmoid"), ("mse", "identity"), ("mse", "tanh"), ("log_loss", "sigmoid"), ("log_loss", "softmax")]
}
_REMAINING = [(act, loss, out) for act in _HIDDEN for loss, out in _PAIRS if (act, (loss, out)) not in _IN_TEST_MLP]


def _numeric_gradient(m, X, Y, alpha, h=1e-6):
    numeric = np.empty_like(m._params)
    for i in range(m._params.size):
        old = m._params[i]
        m._params[i] = old + h
        up = m.loss_and_gradients(X, Y, alpha=alpha)[0]
        m._params[i] = old - h
        down = m.loss_and_gradients(X, Y, alpha=alpha)[0]
        m._params[i] = old
        numeric[i] = (up - down) / (2 * h)
    return numeric


@pytest.mark.parametrize("act,loss,out_act", _REMAINING)
@pytest.mark.parametrize("bias", [False, True])
def test_remaining_gradients_match_finite_differences(act, loss, out_act, bias):
    rng = np.random.default_rng(zlib.crc32(f"{act} {loss} {out_act} {bias}".encode()))
    sizes = [4, 6, 3]
    m = MLP(sizes, activation=act, output_activation=out_act, loss=loss, bias=bias, random_state=2)
    X = rng.standard_normal((8, 4))
    if out_act == "softmax":
        Y = np.eye(3)[rng.integers(0, 3, 8)]
    elif loss == "log_loss":
        Y = rng.integers(0, 2, (8, 3)).astype(float)
    else:
        Y = rng.random((8, 3))
    alpha = 0.3
    _, wg, bg = m.loss_and_gradients(X, Y, alpha=alpha)
    analytic = np.empty_like(m._params)
    for (fan_in, fan_out, w_off, b_off), g in zip(m._layout[:, :4], wg):
        analytic[w_off : w_off + fan_in * fan_out] = g.ravel()
    if bias:
        for (fan_in, fan_out, w_off, b_off), g in zip(m._layout[:, :4], bg):
            analytic[b_off : b_off + fan_out] = g
    numeric = _numeric_gradient(m, X, Y, alpha)
    if "relu" in (act, out_act):
        np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-5)
    else:
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7)

