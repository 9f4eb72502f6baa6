"""`fastnn.MLP` against the reference: predictions, gradients, training, state."""

import pickle

import numpy as np
import pytest

from conftest import DTYPES, TUTORIAL_X, TUTORIAL_Y, assert_close
from fastnn import MLP, DivergenceError
from fastnn import reference as ref

ACTS = ["sigmoid", "tanh", "relu", "identity"]
NEW_ACTS = ["leaky_relu", "elu", "softplus", "gelu", "silu"]
LOSS_OUT = [("sse", "sigmoid"), ("mse", "identity"), ("mse", "tanh"), ("log_loss", "sigmoid"), ("log_loss", "softmax")]


def _data(rng, n, sizes, loss, out_act, dtype=np.float64):
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    k = sizes[-1]
    if out_act == "softmax":
        Y = np.eye(k, dtype=dtype)[rng.integers(0, k, n)]
    elif loss == "log_loss":
        Y = rng.integers(0, 2, (n, k)).astype(dtype)
    else:
        Y = rng.random((n, k)).astype(dtype)
    return X, Y


def test_weights_and_biases_are_views_of_one_buffer():
    m = MLP([3, 5, 2], random_state=0)
    assert [w.shape for w in m.weights] == [(3, 5), (5, 2)]
    assert [b.shape for b in m.biases] == [(5,), (2,)]
    for arr in m.weights + m.biases:
        assert np.shares_memory(arr, m._params)
    X = np.ones((2, 3))
    before = m.predict(X)
    m.weights[1][...] = 0.0
    m.biases[1][...] = 0.0
    np.testing.assert_array_equal(m.predict(X), 0.5)
    assert not np.array_equal(before, 0.5)
    assert MLP([3, 2], bias=False).biases is None
    assert m.n_parameters == 3 * 5 + 5 + 5 * 2 + 2


def test_initialisation_is_glorot_like_scikit_learn():
    m = MLP([50, 100, 10], activation="sigmoid", random_state=1)
    bound = np.sqrt(2.0 / 150)
    assert np.abs(m.weights[0]).max() <= bound
    assert np.abs(m.weights[0]).max() > 0.9 * bound
    m = MLP([50, 100, 10], activation="relu", random_state=1)
    assert np.abs(m.weights[0]).max() <= np.sqrt(6.0 / 150)


def test_same_random_state_same_model_bit_for_bit():
    for dtype in DTYPES:
        a = MLP([4, 8, 3], random_state=3, dtype=dtype)
        b = MLP([4, 8, 3], random_state=3, dtype=dtype)
        np.testing.assert_array_equal(a._params, b._params)
        X = np.random.default_rng(0).standard_normal((40, 4))
        y = np.random.default_rng(1).random((40, 3))
        ha = a.fit(X, y, epochs=5, batch_size=7, optimizer="adam", learning_rate=0.01)
        hb = b.fit(X, y, epochs=5, batch_size=7, optimizer="adam", learning_rate=0.01)
        np.testing.assert_array_equal(ha, hb)
        np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert not np.array_equal(MLP([4, 3], random_state=1)._params, MLP([4, 3], random_state=2)._params)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("loss,out_act", LOSS_OUT)
@pytest.mark.parametrize("bias", [False, True])
def test_predict_and_gradients_match_reference(dtype, act, loss, out_act, bias, rng):
    sizes = [6, 9, 5, 3]
    m = MLP(sizes, activation=act, output_activation=out_act, loss=loss, bias=bias, dtype=dtype, random_state=0)
    X, Y = _data(rng, 15, sizes, loss, out_act, dtype)
    out = m.predict(X)
    assert out.dtype == dtype
    assert_close(out, ref.forward(X, m.weights, m.biases, act, out_act)[-1], dtype)
    value, wg, bg = m.loss_and_gradients(X, Y)
    ev, ewg, ebg = ref.loss_and_gradients(X, Y, m.weights, m.biases, act, out_act, loss)
    assert_close(value, ev, dtype)
    for g, e in zip(wg, ewg):
        assert g.dtype == dtype
        assert_close(g, e, dtype)
    if bias:
        for g, e in zip(bg, ebg):
            assert_close(g, e, dtype)
    else:
        assert bg is None


@pytest.mark.parametrize("act", ACTS + NEW_ACTS + [["gelu", "leaky_relu"]], ids=str)
@pytest.mark.parametrize("loss,out_act", LOSS_OUT)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_gradients_match_finite_differences(act, loss, out_act, bias, alpha, rng):
    sizes = [4, 6, 3] if isinstance(act, str) else [4, 6, 5, 3]
    m = MLP(sizes, activation=act, output_activation=out_act, loss=loss, bias=bias, random_state=1)
    X, Y = _data(rng, 8, sizes, loss, out_act)
    _, wg, bg = m.loss_and_gradients(X, Y, alpha=alpha)
    analytic = np.concatenate([g.ravel() for g in wg] + ([g.ravel() for g in bg] if bias else []))
    params = [w for w in m.weights] + (list(m.biases) if bias else [])
    numeric = []
    h = 1e-6
    for p in params:
        flat = p.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + h
            up = m.loss_and_gradients(X, Y, alpha=alpha)[0]
            flat[i] = old - h
            down = m.loss_and_gradients(X, Y, alpha=alpha)[0]
            flat[i] = old
            numeric.append((up - down) / (2 * h))
    numeric = np.array(numeric)
    if act in ("relu", "leaky_relu") or not isinstance(act, str):
        # kinks: compare where no pre-activation sits within h of zero
        np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-5)
    else:
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", ["gd", "sgd", "momentum", "adam"])
# batches of 64 rows or more run as two shards whose gradients are summed
# (fastnn._kernels.train.shard_count): 150 rows in one batch, or a batch of
# 100 (two shards of 50) then a batch of 50 (one shard)
@pytest.mark.parametrize("n,batch_size", [(23, None), (23, 5), (150, None), (150, 100)])
@pytest.mark.parametrize("act", ["tanh", "gelu", ["silu", "elu"]], ids=str)
def test_fit_matches_a_numpy_training_loop(dtype, optimizer, n, batch_size, act, rng):
    sizes = [5, 12, 2] if isinstance(act, str) else [5, 12, 6, 2]
    m = MLP(sizes, activation=act, output_activation="sigmoid", loss="mse", dtype=dtype, random_state=4)
    X, Y = _data(rng, n, sizes, "mse", "sigmoid", dtype)
    weights = [w.copy() for w in m.weights]
    biases = [b.copy() for b in m.biases]
    flat = [*weights, *biases]
    state1 = [np.zeros_like(p) for p in flat]
    state2 = [np.zeros_like(p) for p in flat]
    epochs = 6
    lr = 0.05
    # the shuffles come from the model's generator: replay them
    replay = np.random.default_rng(4)
    for arr in m.weights:
        replay.uniform(size=arr.shape)
        replay.uniform(size=arr.shape[1])
    history = []
    t = 0
    n = X.shape[0]
    bs = n if batch_size is None else batch_size
    for _ in range(epochs):
        order = replay.permutation(n) if bs < n else np.arange(n)
        total = 0.0
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            value, wg, bg = ref.loss_and_gradients(X[idx], Y[idx], weights, biases, act, "sigmoid", "mse")
            total += value * len(idx)
            grads = [*wg, *bg]
            t += 1
            for p, g, s1, s2 in zip(flat, grads, state1, state2):
                if optimizer in ("gd", "sgd"):
                    ref.gd_update(p, g, lr)
                elif optimizer == "momentum":
                    ref.momentum_update(p, g, s1, lr, 0.9, False)
                else:
                    ref.adam_update(p, g, s1, s2, lr, 0.9, 0.999, 1e-8, t)
        history.append(total / n)
    got = m.fit(X, Y, epochs=epochs, learning_rate=lr, batch_size=batch_size, optimizer=optimizer)
    assert got.shape == (epochs,)
    assert_close(got, np.array(history), dtype)
    for w, e in zip(m.weights, weights):
        assert w.dtype == dtype
        assert_close(w, e, dtype)
    assert_close(m.history_, got, dtype)


def test_fit_learns_xor_and_history_accumulates():
    m = MLP([3, 8, 1], random_state=0)
    h1 = m.fit(TUTORIAL_X, TUTORIAL_Y, epochs=1000, learning_rate=0.5)
    h2 = m.fit(TUTORIAL_X, TUTORIAL_Y, epochs=1000, learning_rate=0.5)
    assert h2[-1] < h1[0] / 10
    assert m.history_.shape == (2000,)
    assert np.abs(m.predict(TUTORIAL_X) - TUTORIAL_Y).max() < 0.2


def test_softmax_classifier_learns():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 2))
    labels = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)
    Y = np.eye(3)[labels]
    m = MLP([2, 16, 3], activation="tanh", output_activation="softmax", loss="log_loss", random_state=0)
    m.fit(X, Y, epochs=200, learning_rate=0.01, batch_size=32, optimizer="adam")
    proba = m.predict(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert (proba.argmax(axis=1) == labels).mean() > 0.9


def test_divergence_stops_with_a_clear_error_and_finite_parameters():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3)) * 100
    y = rng.standard_normal((20, 1)) * 100
    m = MLP([3, 50, 1], activation="identity", output_activation="identity", loss="sse", random_state=0)
    with pytest.raises(DivergenceError, match="epoch") as info:
        m.fit(X, y, epochs=1000, learning_rate=10.0)
    assert np.isfinite(m._params).all()
    assert info.value.epoch < 1000
    # the model is left after epoch (failing epoch - 1), and so is its history
    assert m.history_.shape == (max(info.value.epoch - 1, 0),)
    assert np.isfinite(m.history_).all()
    assert np.isfinite(m.predict(X)).all()


def test_divergence_replay_matches_a_run_that_stops_earlier():
    """After divergence at epoch e the model equals a fresh run of e - 1 epochs
    (same seed, shuffles and optimizer state included)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 3))
    y = rng.standard_normal((30, 1))
    kwargs = dict(learning_rate=0.015, batch_size=7, optimizer="momentum")
    m = MLP([3, 20, 1], activation="identity", output_activation="identity", random_state=5)
    with pytest.raises(DivergenceError) as info:
        m.fit(X, y, epochs=10000, **kwargs)
    keep = info.value.epoch - 1
    assert keep >= 1
    fresh = MLP([3, 20, 1], activation="identity", output_activation="identity", random_state=5)
    fresh.fit(X, y, epochs=keep, **kwargs)
    np.testing.assert_array_equal(m._params, fresh._params)
    np.testing.assert_array_equal(m._state1, fresh._state1)
    np.testing.assert_array_equal(m.history_, fresh.history_)


def test_interrupted_fit_keeps_the_history_of_the_epochs_that_ran():
    m = MLP([3, 4, 1], random_state=0)

    class Stop(Exception):
        pass

    def callback(done, loss):
        if done >= 2000:
            raise Stop

    with pytest.raises(Stop):
        m.fit(TUTORIAL_X, TUTORIAL_Y, epochs=10000, callback=callback)
    assert m.history_.shape == (2000,)
    fresh = MLP([3, 4, 1], random_state=0)
    fresh.fit(TUTORIAL_X, TUTORIAL_Y, epochs=2000)
    np.testing.assert_array_equal(m._params, fresh._params)
    np.testing.assert_array_equal(m.history_, fresh.history_)


def test_pickle_round_trip_keeps_views():
    m = MLP([3, 4, 2], random_state=0)
    m.fit(TUTORIAL_X, np.hstack([TUTORIAL_Y, 1 - TUTORIAL_Y]), epochs=10, optimizer="adam")
    clone = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(clone.predict(TUTORIAL_X), m.predict(TUTORIAL_X))
    assert np.shares_memory(clone.weights[0], clone._params)
    clone.weights[0][...] = 0
    assert not np.array_equal(clone.predict(TUTORIAL_X), m.predict(TUTORIAL_X))


def test_a_model_pickled_before_the_few_rows_columns_loads_and_trains_alike():
    # its layout had 9 columns: it gets the few-rows columns, zero
    from fastnn._kernels import layout as kl

    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((6, 64)), rng.random((6, 10))
    m = MLP([64, 256, 10], random_state=0)
    m.fit(X, Y, epochs=2, batch_size=3)
    state = m.__getstate__()
    state["_layout"] = state["_layout"][:, : kl.NN_ROWS]
    old = MLP.__new__(MLP)
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    assert old._layout.shape == m._layout.shape and not old._layout[:, kl.NN_ROWS :].any()
    np.testing.assert_array_equal(old._layout, m._layout)
    np.testing.assert_array_equal(old.predict(X[:4]), m.predict(X[:4]))
    old.fit(X, Y, epochs=2, batch_size=3)
    m.fit(X, Y, epochs=2, batch_size=3)
    np.testing.assert_array_equal(old._params, m._params)


@pytest.mark.parametrize(
    "kwargs,exc,word",
    [
        ({"layer_sizes": [3]}, ValueError, "layer_sizes"),
        ({"layer_sizes": [3, 0, 1]}, ValueError, r"layer_sizes\[1\]"),
        ({"layer_sizes": [3, 2.5, 1]}, TypeError, r"layer_sizes\[1\]"),
        ({"layer_sizes": [3, 1], "activation": "swish"}, ValueError, "activation"),
        ({"layer_sizes": [3, 1], "loss": "hinge"}, ValueError, "'sse'"),
        ({"layer_sizes": [3, 1], "dtype": "float16"}, ValueError, "dtype"),
        ({"layer_sizes": [3, 1], "loss": "log_loss", "output_activation": "identity"}, ValueError, "log_loss"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        MLP(**kwargs)


@pytest.mark.parametrize(
    "kwargs,exc,word",
    [
        ({"epochs": -1}, ValueError, "epochs"),
        ({"epochs": 1.5}, TypeError, "epochs"),
        ({"learning_rate": 0}, ValueError, "learning_rate"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"optimizer": "rmsprop"}, ValueError, "optimizer"),
        ({"X": np.ones((4, 2))}, ValueError, "features"),
        ({"y": np.ones((3, 1))}, ValueError, "rows"),
        ({"X": np.full((4, 3), np.nan)}, ValueError, "NaN"),
    ],
)
def test_bad_fit_arguments_leave_the_model_untouched(kwargs, exc, word):
    m = MLP([3, 4, 1], random_state=0)
    m.fit(TUTORIAL_X, TUTORIAL_Y, epochs=3, optimizer="momentum")
    params, state, history = m._params.copy(), m._state1.copy(), m.history_.copy()
    args = {"X": TUTORIAL_X, "y": TUTORIAL_Y, **kwargs}
    with pytest.raises(exc, match=word):
        m.fit(**args)
    np.testing.assert_array_equal(m._params, params)
    np.testing.assert_array_equal(m._state1, state)
    np.testing.assert_array_equal(m.history_, history)


def test_accepts_lists_ints_fortran_and_readonly_input_without_mutating_it():
    m = MLP([3, 4, 1], random_state=0)
    X = np.asfortranarray(TUTORIAL_X.astype(np.int64))
    X.setflags(write=False)
    y = TUTORIAL_Y.ravel().astype(bool)
    m.fit(X, y, epochs=5)
    m.fit(TUTORIAL_X.tolist(), TUTORIAL_Y.tolist(), epochs=5)
    p = m.predict(TUTORIAL_X.astype(np.float32))
    assert p.dtype == np.float64
    np.testing.assert_array_equal(X, TUTORIAL_X)


@pytest.mark.parametrize("parallel", [False, True])
def test_fit_serial_and_parallel_twins_train_identically(parallel, monkeypatch, rng):
    from fastnn import _threads

    sizes = [8, 40, 3]
    X, Y = _data(rng, 300, sizes, "log_loss", "softmax", np.float64)

    def model():
        return MLP(sizes, activation="relu", output_activation="softmax", loss="log_loss", random_state=3)

    expected = model()
    expected.fit(X, Y, epochs=12, batch_size=100, optimizer="adam", learning_rate=0.01, alpha=1e-3)
    monkeypatch.setattr(_threads.TwinRunner, "plan", lambda self, rest: (parallel, min(rest, 5)))
    got = model()
    history = got.fit(X, Y, epochs=12, batch_size=100, optimizer="adam", learning_rate=0.01, alpha=1e-3)
    np.testing.assert_array_equal(got._params, expected._params)
    np.testing.assert_array_equal(history, expected.history_)
    assert history[-1] < history[0]
