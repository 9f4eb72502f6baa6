"""Which products take the few-rows loops, and the dense passes that take them.

The loops themselves are checked against NumPy on blocks in test_tiled.py;
here: the rule (`loop_rows`, by layer and BLAS), the layout columns a fit
gets (`with_loops`), the forward and backward passes of the two-shard
kernel through those columns (the loops' own bits, and the reference's
numbers), a fit of a few rows on either rule, predictions of a few rows,
and how the BLAS's kernel set is read.
"""

import warnings

import numpy as np
import pytest

from conftest import DTYPES, assert_close
from fastnn import MLP
from fastnn import reference as ref
from fastnn import _runtime, _threads
from fastnn._kernels import codes, few_rows
from fastnn._kernels import dense as kd
from fastnn._kernels._jit import kernel
from fastnn._kernels.few_rows import few_rows_nn, few_rows_tn, loop_at, loop_rows, with_loops
from fastnn._kernels.layout import NN_FN, NN_ROWS, TN_FN, TN_ROWS, build


@pytest.fixture(autouse=True)
def narrow_vectors(monkeypatch):
    # the few-rows rule as on a CPU without 512-bit vectors, where no layer
    # takes the blocked products (tests/test_blocked.py tests those)
    monkeypatch.setitem(_runtime._vectors, "wide", False)


@pytest.mark.parametrize(
    "fan_in, fan_out, architecture, limits",
    [
        (256, 512, "skylakex", (8, 8)),  # wide (131,072 weights and 512 units): any BLAS
        (64, 2048, None, (8, 8)),
        (64, 1024, "skylakex", (0, 4)),  # a small-product path: its forward product, the loop's gradient
        (128, 512, None, (0, 4)),  # (an unknown BLAS is taken as one with the path)
        (1024, 256, "skylakex", (0, 0)),
        (1024, 256, "haswell", (16, 16)),  # a BLAS that packs every operand: the loops from 64 units
        (64, 64, "zen", (16, 16)),
        (784, 100, "haswell", (16, 16)),
        (256, 512, "haswell", (8, 8)),  # (wide: 8 rows on any BLAS)
        (64, 63, "haswell", (0, 0)),  # narrow: BLAS's on any BLAS
        (4096, 10, "haswell", (0, 0)),
    ],
)  # fmt: skip
def test_the_loops_take_the_products_where_blas_was_measured_slower(fan_in, fan_out, architecture, limits):
    assert loop_rows(fan_in, fan_out, architecture) == limits


def test_a_fit_gets_the_loops_of_the_layers_and_rows_that_take_them():
    layout, _ = build([64, 1024, 256, 10], [codes.TANH, codes.TANH, codes.SIGMOID])
    # rows no loop takes, or a BLAS whose forward product is faster and no
    # gradient of few enough rows: the model's own layout, unchanged
    assert with_loops(layout, np.float64, {17, 64}, "haswell") is layout
    assert with_loops(layout, np.float64, {5}, "skylakex") is layout
    got = with_loops(layout, np.float64, {5, 200}, "haswell")
    assert got is not layout and not layout[:, NN_ROWS:].any()
    nn, tn = few_rows.address(np.float64, "nn"), few_rows.address(np.float64, "tn")
    np.testing.assert_array_equal(got[:2, NN_ROWS:], [[16, nn, 16, tn]] * 2)
    np.testing.assert_array_equal(got[2, NN_ROWS:], 0)  # 10 units: BLAS's
    np.testing.assert_array_equal(got[:, :NN_ROWS], layout[:, :NN_ROWS])
    # 64-1024 on a BLAS with a small-product path: the gradient of 4 rows
    got = with_loops(layout, np.float32, {4}, "skylakex")
    np.testing.assert_array_equal(got[0, NN_ROWS:], [0, 0, 4, few_rows.address(np.float32, "tn")])
    np.testing.assert_array_equal(got[1:, NN_ROWS:], 0)
    # only the layers asked for (the tiled kernel's hidden layers)
    got = with_loops(layout, np.float64, {5}, "haswell", layers=range(1, 2))
    assert not got[[0, 2], NN_ROWS:].any() and got[1, NN_ROWS] == 16


@kernel
def _loop_at(layout, layer, rows, column):
    return loop_at(layout, layer, rows, column)


def test_a_product_takes_the_loop_up_to_its_layers_limit():
    layout, _ = build([64, 1024, 10], [codes.TANH, codes.SIGMOID])
    layout[0, NN_ROWS : TN_FN + 1] = [8, 111, 4, 222]
    for rows, nn, tn in [(1, 111, 222), (4, 111, 222), (5, 111, 0), (8, 111, 0), (9, 0, 0)]:
        assert _loop_at(layout, 0, rows, NN_ROWS) == nn and _loop_at(layout, 0, rows, TN_ROWS) == tn
    assert _loop_at(layout, 1, 1, NN_ROWS) == 0 and _loop_at(layout, 1, 0, TN_ROWS) == 0


def _pass(X, Y, params, layout, out_code, loss_code):
    # dense.loss_and_gradients on fresh buffers: (loss, acts, deltas, grads)
    nb = X.shape[0]
    sizes = [X.shape[1]] + [int(f) for f in layout[:, 1]]
    acts = np.zeros(nb * sum(sizes[1:]), X.dtype)
    deltas = np.zeros(nb * kd.deltas_units(sizes), X.dtype)
    grads = np.zeros(params.size, X.dtype)
    value = kd.loss_and_gradients(X, Y, params, layout, out_code, loss_code, 0.0, acts, deltas, grads, None)
    return value, acts, deltas, grads


@kernel
def _nn(m, n, k, A, B, C):
    few_rows_nn(m, n, k, A, B, C, False)


@kernel
def _tn(m, n, k, A, B, C):
    few_rows_tn(m, n, k, A, B, C, False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_the_dense_passes_give_the_loops_bits_where_the_layout_says(dtype, rows, rng):
    # identity layers without bias, so that the activations are the forward
    # products and the gradients the weight products: with the loops'
    # columns filled, each is the loop's result, bit for bit (but the forward
    # product of one row, which BLAS's gemv makes faster: dense.product)
    sizes = [5, 70, 66]
    layout, n_params = build(sizes, [codes.IDENTITY, codes.IDENTITY], bias=False)
    params = rng.standard_normal(n_params).astype(dtype) / 4
    X = rng.standard_normal((rows, sizes[0])).astype(dtype)
    Y = rng.standard_normal((rows, sizes[-1])).astype(dtype)
    looped = with_loops(layout, dtype, {rows}, "haswell")
    assert looped[:, NN_ROWS].tolist() == [16, 16]
    value, acts, deltas, grads = _pass(X, Y, params, looped, codes.IDENTITY, codes.MSE)
    W1, W2 = params[: 5 * 70], params[5 * 70 :]
    A1, A2 = acts[: rows * 70], acts[rows * 70 :]
    D1, D2 = deltas[: rows * 70], deltas[rows * 70 : rows * (70 + 66)]
    for m, n, k, A, B, C in [(rows, 70, 5, X.ravel(), W1, A1), (rows, 66, 70, A1, W2, A2)] * (rows > 1):
        expected = np.empty(m * n, dtype)
        _nn(m, n, k, (A, 0, k), (B, 0, n), (expected, 0, n))
        np.testing.assert_array_equal(C, expected)
    for m, n, k, A, B, C in [(5, 70, rows, X.ravel(), D1, grads[: 5 * 70]), (70, 66, rows, A1, D2, grads[5 * 70 :])]:
        expected = np.empty(m * n, dtype)
        _tn(m, n, k, (A, 0, m), (B, 0, n), (expected, 0, n))
        np.testing.assert_array_equal(C, expected)
    # ... and the same numbers as BLAS's products in the model's own layout
    blas = _pass(X, Y, params, layout, codes.IDENTITY, codes.MSE)
    assert_close(value, blas[0], dtype)
    for got, expected in zip((acts, deltas, grads), blas[1:]):
        assert_close(got, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_the_dense_passes_through_the_loops_match_the_reference(dtype, bias, rng):
    sizes, rows = [9, 64, 96, 3], 4
    layout, n_params = build(sizes, [codes.TANH, codes.RELU, codes.SOFTMAX], bias=bias)
    params = rng.standard_normal(n_params).astype(dtype) / 4
    X = rng.standard_normal((rows, sizes[0])).astype(dtype)
    Y = np.eye(3, dtype=dtype)[rng.integers(0, 3, rows)]
    looped = with_loops(layout, dtype, {rows}, "haswell")
    assert looped[:2, NN_ROWS].tolist() == [16, 16] and looped[2, NN_ROWS] == 0
    value, _, _, grads = _pass(X, Y, params, looped, codes.SOFTMAX, codes.LOG_LOSS)
    weights = [params[w : w + a * b].reshape(a, b) for a, b, w in looped[:, :3]]
    biases = [params[b : b + f] for f, b in looped[:, [1, 3]]] if bias else None
    acts = ref.forward(X, weights, biases, ["tanh", "relu"], "softmax")
    assert_close(value, ref.loss(Y, acts[-1], "log_loss", "softmax"), dtype)
    wg, bg = ref.backward(acts, Y, weights, ["tanh", "relu"], "softmax", "log_loss", bias)
    for (a, b, w), g in zip(looped[:, :3], wg):
        assert_close(grads[w : w + a * b].reshape(a, b), g, dtype)
    if bias:
        for (f, b), g in zip(looped[:, [1, 3]], bg):
            assert_close(grads[b : b + f], g, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_fit_of_a_few_rows_trains_alike_on_either_rule(dtype, monkeypatch):
    # the two-shard kernel's batches of 4 rows (and a last one of 2) through
    # 64-256-10: the loops on a packing BLAS, BLAS's products on another; the
    # same training to the dtype's tolerance (plain SGD: Adam's steps in float32
    # turn the rounding of a gradient near 0 into a step of lr), and the
    # loops' layout in the fit
    rng = np.random.default_rng(4)
    X = rng.standard_normal((10, 64)).astype(dtype)
    Y = rng.random((10, 10)).astype(dtype)
    fits, layouts = {}, {}
    real = _runtime.TwinTrainer.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        layouts[architecture] = self.net.layout

    monkeypatch.setattr(_runtime.TwinTrainer, "__init__", spy)
    for architecture in ("haswell", "skylakex"):
        monkeypatch.setattr(_runtime, "blas_architecture", lambda: architecture)
        model = MLP([64, 256, 10], activation="tanh", dtype=dtype, random_state=3)
        model.fit(X, Y, epochs=5, batch_size=4, learning_rate=0.05, optimizer="sgd")
        fits[architecture] = (model.history_, model.predict(X))
    assert layouts["haswell"][0, NN_ROWS] == 16 and layouts["haswell"][0, NN_FN] != 0
    assert not layouts["skylakex"][:, NN_ROWS:].any()
    assert_close(fits["haswell"][0], fits["skylakex"][0], dtype)
    assert_close(fits["haswell"][1], fits["skylakex"][1], dtype)


@pytest.mark.parametrize(
    "libraries, expected",
    [
        ([("openblas", "Haswell")], "haswell"),
        ([("openblas", "SkylakeX"), ("openblas", "SkylakeX")], "skylakex"),
        ([("openblas", "Haswell"), ("openblas", "SkylakeX")], None),  # two that differ
        ([("mkl", None)], None),
        ([("openblas", None)], None),
        ([], None),
    ],
)  # fmt: skip
def test_the_blas_kernel_set_is_read_from_threadpoolctl(libraries, expected, monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    info = [{"user_api": "blas", "internal_api": api, "architecture": arch} for api, arch in libraries]
    info.append({"user_api": "openmp", "internal_api": "openmp", "architecture": None})
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: info)
    assert _threads._read_blas_architecture() == expected


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_prediction_of_a_few_rows_takes_the_loops_and_matches_the_reference(dtype, monkeypatch):
    # 2 to 16 rows through 64-256-10 on a packing BLAS: the loops' layout,
    # kept for the next prediction of as many rows; one row (BLAS's gemv)
    # and 17 rows do not take them; every prediction matches the reference
    monkeypatch.setattr(_runtime, "blas_architecture", lambda: "haswell")
    rng = np.random.default_rng(6)
    model = MLP([64, 256, 10], activation="tanh", dtype=dtype, random_state=2)
    X = rng.standard_normal((17, 64)).astype(dtype)
    for rows in (1, 4, 4, 16, 17):
        got = model.predict(X[:rows])
        expected = ref.forward(X[:rows], model.weights, model.biases, ["tanh"], "sigmoid")[-1]
        assert_close(got, expected, dtype)
    kept = model._workspace[("predict", 4)]
    assert kept[0, NN_ROWS] == 16 and kept[0, NN_FN] == few_rows.address(dtype, "nn")
    assert ("predict", 16) in model._workspace
    assert ("predict", 1) not in model._workspace and ("predict", 17) not in model._workspace


def test_an_estimators_prediction_of_a_few_rows_matches_its_batch_prediction(monkeypatch):
    pytest.importorskip("sklearn")
    from fastnn.sklearn import MLPClassifier

    monkeypatch.setattr(_runtime, "blas_architecture", lambda: "haswell")
    rng = np.random.default_rng(8)
    X = rng.standard_normal((60, 64))
    y = rng.integers(0, 3, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (5 iterations: scikit-learn's ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(256,), max_iter=5, random_state=0).fit(X, y)
    whole = clf.predict_proba(X)
    for lo, hi in [(0, 1), (0, 4), (10, 18)]:
        assert_close(clf.predict_proba(X[lo:hi]), whole[lo:hi], np.float64)
    # one row goes to BLAS's gemv: it asks for no loop, so none is compiled for it
    asked = []
    real = _runtime.layout_with_loops
    monkeypatch.setattr(_runtime, "layout_with_loops", lambda *a, **k: asked.append(a[2]) or real(*a, **k))
    assert_close(clf.predict_proba(X[5:6]), whole[5:6], np.float64)
    assert MLP([64, 256, 10], random_state=0).predict(X[:1]).shape == (1, 10)
    assert asked == []
    clf.predict_proba(X[5:7])
    assert asked == [(2,)]
