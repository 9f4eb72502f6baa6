"""Inverted dropout in the training kernels, against the reference's masks and loops.

A mask depends on the seed and the unit's coordinates only (epoch, row,
layer, column), so both runtimes, every thread count and every chunking of a
fit draw the same masks; these tests check that, the masks themselves, and
that nothing but ``fit`` drops anything.
"""

import numpy as np
import pytest

from conftest import DTYPES, assert_close
from test_mlp import _data
from fastnn import MLP, load, save
from fastnn import reference as ref
from fastnn._kernels import codes, tiled
from fastnn._kernels import dropout as kdrop
from fastnn._kernels.train import hyper_array
from fastnn._runtime import TiledTrainer, TwinTrainer

SIZES = [6, 20, 10, 2]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_kernel_masks_are_the_reference_masks(rate, dtype):
    # identity activation on ones: the row becomes the mask itself
    threshold = int(round(rate * 2**32))
    scale = np.dtype(dtype).type(kdrop.keep_scale(threshold))
    seed, epoch, first_row, layer, width = 987654321, 3, 40, 1, 37
    rows = np.ones((5, width), dtype)
    slopes = np.empty_like(rows)
    for i in range(rows.shape[0]):
        key = np.uint64(kdrop.row_key(seed, epoch, first_row + i, layer))
        kdrop.activate_row_drop(rows[i], rows[i, :0], False, codes.IDENTITY, slopes[i], (0, 0), key, 0, threshold,
                                scale)  # fmt: skip
    expected = ref.dropout_mask(rows.shape, rate, seed, epoch, first_row, layer, dtype)
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_array_equal(slopes, expected)  # the identity's slope is 1: the mask again


def test_masks_drop_the_rate_and_differ_by_every_counter():
    base = ref.dropout_mask((400, 250), 0.3, 11, 0, 0, 0)
    assert abs((base == 0).mean() - 0.3) < 0.005  # 100,000 units
    np.testing.assert_allclose(base[base > 0], 1 / 0.7)
    for changed in [(12, 0, 0, 0), (11, 1, 0, 0), (11, 0, 1, 0), (11, 0, 0, 1)]:
        other = ref.dropout_mask((400, 250), 0.3, *changed)
        agree = ((base == 0) == (other == 0)).mean()
        assert 0.54 < agree < 0.62  # independent masks agree on 0.3^2 + 0.7^2 = 58%
    # a mask is the mask of its rows wherever the batch starts
    np.testing.assert_array_equal(ref.dropout_mask((10, 250), 0.3, 11, 0, 390, 0), base[390:])


def _replay_seed(random_state, weights, bias=True):
    # the model's generator after its initial weights: the fit's dropout seed comes first
    replay = np.random.default_rng(random_state)
    for w in weights:
        replay.uniform(size=w.shape)
        if bias:
            replay.uniform(size=w.shape[1])
    return replay, int(replay.integers(1 << 53))


def _numpy_fit(m, X, Y, epochs, batch, lr, act, rates, random_state):
    weights = [w.copy() for w in m.weights]
    biases = [b.copy() for b in m.biases]
    flat = [*weights, *biases]
    state1 = [np.zeros_like(p) for p in flat]
    state2 = [np.zeros_like(p) for p in flat]
    replay, seed = _replay_seed(random_state, m.weights)
    history, t, n = [], 0, X.shape[0]
    for epoch in range(epochs):
        order = replay.permutation(n) if batch < n else np.arange(n)
        total = 0.0
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            value, wg, bg = ref.loss_and_gradients(
                X[idx], Y[idx], weights, biases, act, "identity", "mse", dropout=(rates, seed, epoch, start)
            )
            total += value * len(idx)
            t += 1
            for p, g, s1, s2 in zip(flat, [*wg, *bg], state1, state2):
                ref.adam_update(p, g, s1, s2, lr, 0.9, 0.999, 1e-8, t)
        history.append(total / n)
    return np.array(history), flat


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [150, 100, 32])
@pytest.mark.parametrize("act", ["relu", ["tanh", "gelu"]], ids=str)
def test_fit_with_dropout_matches_a_numpy_loop(dtype, batch, act, rng):
    # batches of 100 run as two shards in the small-layer kernel
    X, Y = _data(rng, 150, SIZES, "mse", "identity", dtype)
    rates = [0.3, 0.1]
    m = MLP(SIZES, activation=act, output_activation="identity", loss="mse", dtype=dtype, random_state=5,
            dropout=rates)  # fmt: skip
    expected, params = _numpy_fit(m, X, Y, 4, batch, 0.01, act, rates, 5)
    exact = params
    if dtype == np.float32:
        # float32 Adam carries the last-ulp differences of two tanh and erf
        # implementations into the weights: with tanh and gelu in batches of
        # 32, the NumPy loop in float32 ends 4.5e-5 from the same loop in
        # float64 (the kernel: 2e-5). So the kernel must be within float32's
        # tolerance, plus the float32 loop's own distance, of the float64 loop.
        m64 = MLP(SIZES, activation=act, output_activation="identity", loss="mse", random_state=5,
                  dropout=rates)  # fmt: skip
        _, exact = _numpy_fit(m64, X.astype(np.float64), Y.astype(np.float64), 4, batch, 0.01, act, rates, 5)
    history = m.fit(X, Y, epochs=4, learning_rate=0.01, batch_size=batch, optimizer="adam")
    assert_close(history, expected, dtype)
    for got, want, want64 in zip([*m.weights, *m.biases], params, exact):
        if dtype == np.float64:
            assert_close(got, want, dtype)
        else:
            slack = np.abs(want.astype(np.float64) - want64).max()
            np.testing.assert_allclose(got, want64, rtol=1e-5, atol=1e-5 + slack)


def _tiled_fit(workers, plan=None, seed=12345, chunks=(5,)):
    rng = np.random.default_rng(0)
    X, Y = _data(rng, 150, SIZES, "mse", "identity")
    m = MLP(SIZES, activation=["relu", "gelu"], output_activation="identity", loss="mse", random_state=3,
            dropout=[0.3, 0.1])  # fmt: skip
    m._state1, m._state2 = np.zeros_like(m._params), np.zeros_like(m._params)
    hyper = hyper_array(0.05, 0.9, False, 0.9, 0.999, 1e-8, 1e-3, seed=seed)
    if workers == "twins":
        trainer = TwinTrainer(*m._bundles(X, Y, 100, False, codes.OPT_ADAM, hyper))
    else:
        plan = tiled.make_plan(m.layer_sizes, 100, 8, rows=16, cols=8, out_rows=8, groups=3, chunk=64)
        trainer = TiledTrainer(*m._bundles(X, Y, 100, False, codes.OPT_ADAM, hyper), workers=workers, plan=plan)
    history, done = np.zeros(sum(chunks)), 0
    for count in chunks:
        hyper[8] = done  # the chunk's first epoch (MLP.fit does the same)
        done += trainer.run(count, np.empty((0, 0), np.int64), history[done : done + count])
    return done, history, m._params.copy()


def test_dropout_is_bit_identical_for_any_threads_and_chunks():
    runs = [_tiled_fit(w) for w in (1, 2, 3, 8)] + [_tiled_fit(1, chunks=(2, 3))]
    for other in runs[1:]:
        assert other[0] == runs[0][0] == 5
        np.testing.assert_array_equal(other[1], runs[0][1])
        np.testing.assert_array_equal(other[2], runs[0][2])
    # the small-layer kernel draws the same masks (its sums run in another order)
    twins = _tiled_fit("twins")
    assert_close(twins[1], runs[0][1], np.float64)
    assert_close(twins[2], runs[0][2], np.float64)
    # another seed, other masks
    assert not np.array_equal(_tiled_fit(1, seed=777)[2], runs[0][2])


@pytest.mark.parametrize("parallel", [False, True])
def test_seeded_fit_is_the_same_on_either_twin(parallel, monkeypatch, rng):
    from fastnn import _threads

    X, Y = _data(rng, 300, SIZES, "mse", "identity")

    def fit(**patch):
        m = MLP(SIZES, activation="relu", output_activation="identity", loss="mse", random_state=3, dropout=0.25)
        return m.fit(X, Y, epochs=8, batch_size=100, optimizer="adam", learning_rate=0.01), m._params

    expected = fit()
    monkeypatch.setattr(_threads.TwinRunner, "plan", lambda self, rest: (parallel, min(rest, 3)))
    got = fit()
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_predict_and_gradients_do_not_drop(rng):
    X, Y = _data(rng, 40, SIZES, "mse", "identity")
    kw = dict(activation=["silu", "relu"], output_activation="identity", loss="mse", random_state=2)
    with_dropout = MLP(SIZES, dropout=0.5, **kw)
    plain = MLP(SIZES, **kw)
    np.testing.assert_array_equal(with_dropout._params, plain._params)
    np.testing.assert_array_equal(with_dropout.predict(X), plain.predict(X))
    a, b = with_dropout.loss_and_gradients(X, Y), plain.loss_and_gradients(X, Y)
    assert a[0] == b[0]
    for g, h in zip(a[1] + a[2], b[1] + b[2]):
        np.testing.assert_array_equal(g, h)
    # a fit does drop: its first epoch's loss (before any update) is not the plain one's
    first = with_dropout.fit(X, Y, epochs=1, learning_rate=1e-3)[0]
    assert first != plain.fit(X, Y, epochs=1, learning_rate=1e-3)[0] == b[0]


@pytest.mark.parametrize(
    "dropout,exc,words",
    [
        (1.0, ValueError, ["dropout", "< 1"]),
        (-0.1, ValueError, ["dropout", ">= 0"]),
        (float("nan"), ValueError, ["dropout", "finite"]),
        ("0.5", TypeError, ["dropout"]),
        ([0.1], ValueError, ["dropout", "1 entries", "2 hidden layers"]),
        ([0.1, 1.5], ValueError, ["dropout[1]"]),
    ],
)
def test_bad_dropout_is_named(dropout, exc, words):
    with pytest.raises(exc) as err:
        MLP(SIZES, dropout=dropout)
    for word in words:
        assert word in str(err.value)


def test_dropout_is_saved_and_repr_shows_it(tmp_path):
    m = MLP(SIZES, dropout=[0.2, 0.0], random_state=0)
    assert "dropout=[0.2, 0.0]" in repr(m)
    save(m, tmp_path / "m.npz")
    assert load(tmp_path / "m.npz").dropout == [0.2, 0.0]
    assert "dropout" not in repr(MLP(SIZES))
