"""The tile-streamed runtime (``fastnn._kernels.tiled``) against the reference.

Small networks run with small tiles (a few rows and units each, partial
tiles at every edge, several OUTPUT groups and parameter chunks), so that
every phase is split into many tasks; the results are compared with a
NumPy training loop on ``fastnn.reference``, and with themselves for any
number of threads.
"""

import multiprocessing
import threading

import numpy as np
import pytest

from conftest import DTYPES, JIT_DISABLED, assert_close
from test_activations import SOFTSIGN
from test_mlp import _data
from fastnn import MLP
from fastnn import reference as ref
from fastnn._kernels import codes, tiled
from fastnn._kernels._jit import kernel
from fastnn._kernels.blas import _block, gemm
from fastnn._kernels import few_rows
from fastnn._kernels.few_rows import few_rows_call, few_rows_nn, few_rows_nn_call, few_rows_tn, loop_rows
from fastnn._kernels.layout import NN_FN, NN_ROWS, TN_FN, TN_ROWS
from fastnn._kernels.train import hyper_array
from fastnn._runtime import TiledTrainer
from fastnn._threads import blas_architecture

SMALL = dict(rows=3, cols=4, out_rows=2, groups=3, chunk=7, group_tiles=1, out_chunk=5)
# ... and batches of more than 5 rows in blocks of 5 (the gradients accumulate over blocks)
BLOCKS = dict(SMALL, block=5)
# ... and whole passes of shards of rows (the two-shard kernel's split), chunks of 7 parameters
SHARDS = dict(chunk=7, shards=2)
# ... and the output layer's products by fastnn._kernels.narrow's loops
# (the small networks here are too narrow for them by default)
NARROW, NARROW_BLOCKS = dict(SMALL, narrow=True), dict(BLOCKS, narrow=True)


@kernel
def _gemm(m, n, k, A, trans_a, B, trans_b, C, accumulate):
    gemm(m, n, k, A, trans_a, B, trans_b, C, accumulate)


@pytest.mark.parametrize("dtype", DTYPES)
def test_largest_is_the_largest_magnitude_of_a_block_and_inf_for_inf_or_nan(dtype, rng):
    # `largest` compares magnitudes as integers (fastnn._kernels.bits): the
    # oracle is NumPy's float maximum, on blocks with every kind of value
    info = np.finfo(dtype)
    specials = [0.0, -0.0, info.tiny / 4, -info.tiny, info.max, -info.max, 1.0, -1.5]
    rows, cols, off, ld = 6, 9, 4, 13
    block = lambda v: _block((v, off, ld), rows, cols)  # noqa: E731
    for trial in range(40):
        values = (rng.standard_normal(off + rows * ld) * 10.0 ** rng.integers(-30, 30)).astype(dtype)
        at = rng.integers(0, values.size, size=3)
        values[at] = rng.choice(specials, size=3)
        outside = np.ones(values.size, dtype=bool)
        outside[[off + i * ld + j for i in range(rows) for j in range(cols)]] = False
        values[np.flatnonzero(outside)[: trial % 4]] = np.nan  # never read
        expected = float(np.abs(block(values)).max())
        got = tiled.largest(values, np.int64(off), np.int64(ld), np.int64(rows), np.int64(cols))
        assert got == expected
        for bad in (np.inf, -np.inf, np.nan, -np.nan):
            spoiled = values.copy()
            spoiled[off + (trial % rows) * ld + trial % cols] = bad
            assert tiled.largest(spoiled, np.int64(off), np.int64(ld), np.int64(rows), np.int64(cols)) == np.inf
    empty = tiled.largest(np.zeros(3, dtype=dtype), np.int64(0), np.int64(1), np.int64(0), np.int64(1))
    assert empty == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_gemm_on_blocks_matches_numpy_and_leaves_the_rest(dtype, trans_a, trans_b, accumulate, rng):
    m, n, k = 5, 7, 3
    (a_off, lda), (b_off, ldb), (c_off, ldc) = (3, 11), (4, 13), (5, 9)
    a, b, c = (rng.standard_normal(200).astype(dtype) for _ in range(3))
    A = _block((a, a_off, lda), k if trans_a else m, m if trans_a else k)
    B = _block((b, b_off, ldb), n if trans_b else k, k if trans_b else n)
    product = (A.T if trans_a else A) @ (B.T if trans_b else B)
    before = c.copy()
    expected = _block((before, c_off, ldc), m, n) * (1 if accumulate else 0) + product
    _gemm(m, n, k, (a, a_off, lda), trans_a, (b, b_off, ldb), trans_b, (c, c_off, ldc), accumulate)
    assert_close(_block((c, c_off, ldc), m, n), expected, dtype)
    outside = np.ones(c.size, dtype=bool)
    outside[[c_off + i * ldc + j for i in range(m) for j in range(n)]] = False
    np.testing.assert_array_equal(c[outside], before[outside])


def test_gemm_with_no_inner_dimension_zeroes_or_keeps_the_block(rng):
    c = rng.standard_normal(12)
    keep = c.copy()
    empty = np.empty(0)
    _gemm(2, 3, 0, (empty, 0, 1), False, (empty, 0, 1), False, (c, 0, 3), True)
    np.testing.assert_array_equal(c, keep)
    _gemm(2, 3, 0, (empty, 0, 1), False, (empty, 0, 1), False, (c, 0, 3), False)
    np.testing.assert_array_equal(c[:6], 0.0)
    np.testing.assert_array_equal(c[6:], keep[6:])


@kernel
def _few_rows_tn(m, n, k, A, B, C, accumulate):
    few_rows_tn(m, n, k, A, B, C, accumulate)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", range(10))  # groups of four rows and every remainder (and none)
@pytest.mark.parametrize("m", [1, 4, 5])  # pairs of rows of C, and one left over
@pytest.mark.parametrize("accumulate", [False, True])
def test_few_rows_tn_on_blocks_matches_numpy_and_leaves_the_rest(dtype, k, m, accumulate, rng):
    n = 7
    blocks = (3, 11), (4, 13), (5, 9)
    a, b, c = (rng.standard_normal(200).astype(dtype) for _ in range(3))
    product = _block((a, *blocks[0]), k, m).T.astype(np.float64) @ _block((b, *blocks[1]), k, n).astype(np.float64)
    _assert_product_on_blocks(_few_rows_tn, m, n, k, blocks, a, b, c, product, accumulate, dtype)


def _assert_product_on_blocks(run, m, n, k, blocks, a, b, c, product, accumulate, dtype):
    # run(m, n, k, A, B, C, accumulate) on the blocks ((offset, ld) of a, b
    # and c) makes C (+)= product, and leaves the rest of c as it was
    (a_off, lda), (b_off, ldb), (c_off, ldc) = blocks
    before = c.copy()
    expected = _block((before, c_off, ldc), m, n) * (1 if accumulate else 0) + product
    run(m, n, k, (a, a_off, lda), (b, b_off, ldb), (c, c_off, ldc), accumulate)
    assert_block(c, before, (c_off, ldc), m, n, expected, dtype)


def assert_block(buf, before, block, rows, cols, expected, dtype):
    # the block (offset, ld) of buf holds `expected`; the rest of buf is as `before`
    off, ld = block
    assert_close(_block((buf, off, ld), rows, cols), expected, dtype)
    outside = np.ones(buf.size, dtype=bool)
    outside[[off + i * ld + j for i in range(rows) for j in range(cols)]] = False
    np.testing.assert_array_equal(buf[outside], before[outside])


@kernel
def _few_rows_nn(m, n, k, A, B, C, accumulate):
    few_rows_nn(m, n, k, A, B, C, accumulate)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", range(10))  # groups of four columns of A and every remainder (and none)
@pytest.mark.parametrize("m", [1, 2, 5])  # pairs of rows of C, and one left over
@pytest.mark.parametrize("n", [7, few_rows.NN_COLS + 3])  # one block of columns, and more
@pytest.mark.parametrize("accumulate", [False, True])
def test_few_rows_nn_on_blocks_matches_numpy_and_leaves_the_rest(dtype, k, m, n, accumulate, rng):
    blocks = (3, 11), (4, n + 6), (5, n + 2)
    a, b, c = (rng.standard_normal(3000).astype(dtype) for _ in range(3))
    product = _block((a, *blocks[0]), m, k).astype(np.float64) @ _block((b, *blocks[1]), k, n).astype(np.float64)
    _assert_product_on_blocks(_few_rows_nn, m, n, k, blocks, a, b, c, product, accumulate, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_few_rows_nn_gives_the_same_bits_for_any_cut_into_blocks(dtype, rng):
    # the tiled runtime's FORWARD tasks cut the product into row and column
    # tiles; each element must not depend on the cut
    m, k, n = 7, 9, few_rows.NN_COLS + 20
    A = rng.standard_normal((m, k)).astype(dtype)
    B = rng.standard_normal((k, n)).astype(dtype)
    whole = np.zeros(m * n, dtype)
    _few_rows_nn(m, n, k, (A.ravel(), 0, k), (B.ravel(), 0, n), (whole, 0, n), False)
    for rows, cols in [(1, 1), (2, 3), (3, 8), (5, 100), (7, n)]:
        cut = np.zeros(m * n, dtype)
        for r0 in range(0, m, rows):
            for c0 in range(0, n, cols):
                rr, cc = min(rows, m - r0), min(cols, n - c0)
                _few_rows_nn(rr, cc, k, (A.ravel(), r0 * k, k), (B.ravel(), c0, n), (cut, r0 * n + c0, n), False)
        np.testing.assert_array_equal(cut, whole)


@kernel
def _few_rows_call(fn, m, n, k, A, B, C, accumulate):
    few_rows_call(fn, m, n, k, A, B, C, accumulate)


@kernel
def _few_rows_nn_call(fn, m, n, k, A, B, C, accumulate):
    few_rows_nn_call(fn, m, n, k, A, B, C, accumulate)


@pytest.mark.parametrize("product", ["tn", "nn"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [0, 3, 4, 9])
@pytest.mark.parametrize("accumulate", [False, True])
def test_few_rows_callbacks_give_the_bits_of_their_loops(product, dtype, k, accumulate, rng):
    # the tiled kernel calls the loops through their callbacks' addresses:
    # the same elements, bit for bit, on blocks at offsets, and nothing else
    loop, call = {"tn": (_few_rows_tn, _few_rows_call), "nn": (_few_rows_nn, _few_rows_nn_call)}[product]
    m, n = 5, 7
    (a_off, lda), (b_off, ldb), (c_off, ldc) = (3, 11), (4, 13), (5, 9)
    a, b, c = (rng.standard_normal(200).astype(dtype) for _ in range(3))
    direct = c.copy()
    loop(m, n, k, (a, a_off, lda), (b, b_off, ldb), (direct, c_off, ldc), accumulate)
    fn = few_rows.address(dtype, product)
    assert fn != 0 and few_rows.address(dtype, product) == fn  # compiled once per dtype
    if not JIT_DISABLED:  # (as Python, every address is 1: the calls run the loops)
        assert (fn == few_rows.address(dtype)) == (product == "tn")
    call(fn, m, n, k, (a, a_off, lda), (b, b_off, ldb), (c, c_off, ldc), accumulate)
    np.testing.assert_array_equal(c, direct)


def test_fits_in_several_threads_get_one_few_rows_callback(monkeypatch):
    # the first fits of a process may ask for the callback at once: one is
    # compiled (or loaded), and every fit gets its address (a second one
    # would free the first one's code)
    monkeypatch.setattr(few_rows, "_callbacks", {})
    addresses = []
    threads = [threading.Thread(target=lambda: addresses.append(few_rows.address(np.float32))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(addresses) == 4 and len(set(addresses)) == 1 and addresses[0] != 0


def test_blocks_of_a_pass():
    # blocks of full batches and of the last one
    assert tiled.block_rows(64, 260, 64) == {64, 4}
    assert tiled.block_rows(1024, 1024, 256) == {256}
    assert tiled.block_rows(5, 13, 5) == {5, 3}
    assert tiled.block_rows(100, 30, 64) == {30}
    assert tiled.block_rows(100, 230, 64) == {64, 36, 30}


@pytest.mark.parametrize("n, batch, needed", [(13, 4, True), (64, 64, False), (68, 64, True)])
def test_tiled_trainer_gives_the_loops_to_the_hidden_layers_where_blocks_can_be_short(n, batch, needed):
    # 256-512: a wide layer (both loops, up to 8 rows, on any BLAS); blocks
    # of 4 and 1 rows, of 64, and of 64 and 4; the output layer's products
    # are BLAS's in the tiled kernel's OUTPUT tasks
    model, X, Y = _problem(np.random.default_rng(3), [256, 512, 3], n, "tanh", "softmax", "log_loss", True,
                           np.float64)  # fmt: skip
    model._state1, model._state2 = np.zeros_like(model._params), np.zeros_like(model._params)
    hyper = hyper_array(0.01, 0.9, False, 0.9, 0.999, 1e-8, 0.0)
    trainer = TiledTrainer(*model._bundles(X, Y, batch, False, codes.OPTIMIZER_CODES["adam"], hyper))
    layout = trainer.net.layout
    if needed:
        assert layout is not model._layout
        assert list(layout[0, [NN_ROWS, TN_ROWS]]) == [8, 8]
        assert list(layout[0, [NN_FN, TN_FN]]) == [few_rows.address(np.float64, "nn"), few_rows.address(np.float64)]
    else:
        assert layout is model._layout
    assert not layout[1, NN_ROWS:].any() and not model._layout[:, NN_ROWS:].any()
    history = np.full(2, np.nan)
    assert trainer.run(2, np.empty((0, 0), np.int64), history) == 2 and np.isfinite(history).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_few_rows_tn_gives_the_same_bits_for_any_cut_into_blocks(dtype, rng):
    # the tiled runtime cuts dW into blocks (rows and columns of any size);
    # each element must not depend on the cut
    k, m, n = 7, 9, 20
    A = rng.standard_normal((k, m)).astype(dtype)
    B = rng.standard_normal((k, n)).astype(dtype)
    whole = np.zeros(m * n, dtype)
    _few_rows_tn(m, n, k, (A.ravel(), 0, m), (B.ravel(), 0, n), (whole, 0, n), False)
    for rows, cols in [(1, 1), (2, 3), (3, 8), (5, 20)]:
        cut = np.zeros(m * n, dtype)
        for p0 in range(0, m, rows):
            for c0 in range(0, n, cols):
                pr, cc = min(rows, m - p0), min(cols, n - c0)
                _few_rows_tn(pr, cc, k, (A.ravel(), p0, m), (B.ravel(), c0, n), (cut, p0 * n + c0, n), False)
        np.testing.assert_array_equal(cut, whole)


def _problem(rng, sizes, n, act, out, loss, bias, dtype):
    X, Y = _data(rng, n, sizes, loss, out, dtype)
    model = MLP(sizes, activation=act, output_activation=out, loss=loss, bias=bias, dtype=dtype, random_state=7)
    return model, X, Y


def _train(model, X, Y, epochs, batch, order, optimizer, lr, alpha, workers=1, plan=SMALL, sample_weight=None):
    code = codes.OPTIMIZER_CODES[optimizer]
    model._state1 = np.zeros_like(model._params)
    model._state2 = np.zeros_like(model._params)
    hyper = hyper_array(lr, 0.9, False, 0.9, 0.999, 1e-8, alpha)
    if isinstance(plan, dict):
        plan = tiled.make_plan(model.layer_sizes, batch, model.dtype.itemsize, **plan)
    use_order = order.size > 0
    bundles = model._bundles(X, Y, batch, use_order, code, hyper)
    if sample_weight is not None:
        bundles = (*bundles[:2], bundles[2]._replace(weights=sample_weight.astype(model.dtype)))
    trainer = TiledTrainer(*bundles, workers=workers, plan=plan)
    history = np.full(epochs, np.nan)
    return trainer.run(epochs, order, history), history


def _numpy_loop(model, X, Y, epochs, batch, order, optimizer, lr, alpha, sample_weight=None):
    weights = [w.copy() for w in model.weights]
    biases = [b.copy() for b in model.biases] if model.bias else None
    flat = weights + (biases or [])
    state1 = [np.zeros_like(p) for p in flat]
    state2 = [np.zeros_like(p) for p in flat]
    history, t, n = [], 0, X.shape[0]
    for epoch in range(epochs):
        rows = order[epoch] if order.size else np.arange(n)
        total = 0.0
        for start in range(0, n, batch):
            idx = rows[start : start + batch]
            value, wg, bg = ref.loss_and_gradients(
                X[idx], Y[idx], weights, biases, model.activation, model.output_activation, model.loss, alpha,
                sample_weight=None if sample_weight is None else sample_weight[idx],
            )
            total += value if model.loss == "sse" else value * len(idx)
            t += 1
            for p, g, s1, s2 in zip(flat, wg + (bg or []), state1, state2):
                if optimizer == "gd":
                    ref.gd_update(p, g, lr)
                elif optimizer == "momentum":
                    ref.momentum_update(p, g, s1, lr, 0.9, False)
                else:
                    ref.adam_update(p, g, s1, s2, lr, 0.9, 0.999, 1e-8, t)
        history.append(total if model.loss == "sse" else total / n)
    return np.array(history), weights, biases


CASES = [
    # sizes, rows, batch, activation, output, loss, optimizer, bias
    ([5, 9, 3], 11, 11, "sigmoid", "sigmoid", "sse", "gd", False),
    ([5, 9, 3], 11, 4, "tanh", "softmax", "log_loss", "adam", True),
    ([4, 10, 7, 2], 13, 13, "relu", "identity", "mse", "momentum", True),
    ([6, 5, 9, 6, 3], 17, 6, "sigmoid", "sigmoid", "log_loss", "adam", True),
    ([3, 2], 9, 9, "identity", "sigmoid", "sse", "gd", True),  # no hidden layer
    # per-layer activations; gelu and silu keep their slopes from the forward pass
    ([4, 10, 7, 2], 13, 5, ["gelu", "silu"], "identity", "mse", "adam", True),
    ([6, 5, 9, 6, 3], 17, 17, ["leaky_relu", "elu", "softplus"], "softmax", "log_loss", "momentum", True),
    ([5, 9, 3], 11, 4, "gelu", "sigmoid", "sse", "gd", False),
    ([5, 9, 7, 3], 11, 4, [SOFTSIGN, "relu"], "identity", "mse", "adam", True),  # a fastnn.Activation
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[0])) + f"-{c[6]}-{c[3]}")
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize(
    "plan", [SMALL, BLOCKS, SHARDS, NARROW, NARROW_BLOCKS],
    ids=["one-block", "blocks", "shards", "narrow", "narrow-blocks"],
)  # fmt: skip
@pytest.mark.parametrize("alpha", [0.0, 1e-2])  # (without an L2 term, REDUCE cuts the output layer only)
def test_tiled_training_matches_a_numpy_loop(case, shuffle, plan, alpha, dtype, rng):
    sizes, n, batch, act, out, loss, optimizer, bias = case
    model, X, Y = _problem(rng, sizes, n, act, out, loss, bias, dtype)
    epochs = 4
    order = np.stack([rng.permutation(n) for _ in range(epochs)]) if shuffle else np.empty((0, 0), np.int64)
    lr = 0.05 if optimizer != "adam" else 0.01
    expected, weights, biases = _numpy_loop(model, X, Y, epochs, batch, order, optimizer, lr, alpha)
    done, history = _train(model, X, Y, epochs, batch, order, optimizer, lr, alpha, plan=plan)
    assert done == epochs
    assert_close(history, expected, dtype)
    for got, want in zip(model.weights + (model.biases or []), weights + (biases or [])):
        assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5]], ids=["softmax", "deep", "kept-slopes"])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("plan", [SMALL, BLOCKS, NARROW_BLOCKS], ids=["one-block", "blocks", "narrow-blocks"])
def test_tiled_training_with_sample_weights_matches_a_numpy_loop(case, shuffle, plan, dtype, rng):
    # losses are weighted means, normalised with the L2 term by each batch's sum of weights
    sizes, n, batch, act, out, loss, optimizer, bias = case
    model, X, Y = _problem(rng, sizes, n, act, out, loss, bias, dtype)
    sample_weight = rng.uniform(0.0, 3.0, n)
    sample_weight[::4] = 0.0  # rows that do not count
    epochs = 3
    order = np.stack([rng.permutation(n) for _ in range(epochs)]) if shuffle else np.empty((0, 0), np.int64)
    lr = 0.05 if optimizer != "adam" else 0.01
    w = sample_weight.astype(dtype).astype(np.float64)  # the weights the kernel sees
    expected, weights, biases = _numpy_loop(model, X, Y, epochs, batch, order, optimizer, lr, 1e-2, w)
    done, history = _train(model, X, Y, epochs, batch, order, optimizer, lr, 1e-2, plan=plan,
                           sample_weight=sample_weight)  # fmt: skip
    assert done == epochs
    assert_close(history, expected, dtype)
    for got, want in zip(model.weights + (model.biases or []), weights + (biases or [])):
        assert_close(got, want, dtype)


@pytest.mark.parametrize(
    "plan", [SMALL, BLOCKS, SHARDS, NARROW_BLOCKS, None],
    ids=["small-tiles", "blocks", "shards", "narrow-blocks", "default-tiles"],
)  # fmt: skip
def test_results_are_bit_identical_for_any_number_of_threads(plan, rng):
    runs = []
    for workers in (1, 2, 3, 4, 8):
        model, X, Y = _problem(np.random.default_rng(3), [7, 40, 30, 5], 57, "tanh", "softmax", "log_loss", True, np.float64)
        done, history = _train(model, X, Y, 3, 20, np.empty((0, 0), np.int64), "adam", 0.01, 1e-3, workers, plan)
        runs.append((done, history, model._params.copy(), model._state1.copy(), model._step_count[0]))
    for other in runs[1:]:
        assert other[0] == runs[0][0] == 3
        np.testing.assert_array_equal(other[1], runs[0][1])
        np.testing.assert_array_equal(other[2], runs[0][2])
        np.testing.assert_array_equal(other[3], runs[0][3])
        assert other[4] == runs[0][4] == 9


@pytest.mark.parametrize("n_params", [1, 100, 7510, 16 * 1024, 16 * 1024 + 1, 76810, 307210, 1_632_010, 10**8])
def test_parameter_chunks_give_up_to_16_tasks_in_whole_cache_lines(n_params):
    chunk = tiled.chunk_size(n_params)
    tasks = -(-n_params // chunk)
    assert chunk % 64 == 0 and tiled.MIN_CHUNK <= chunk <= tiled.MAX_CHUNK
    if n_params >= tiled.MIN_CHUNKS * tiled.MIN_CHUNK and chunk < tiled.MAX_CHUNK:
        assert tasks == tiled.MIN_CHUNKS  # every share of the update has a task
    elif chunk == tiled.MIN_CHUNK:
        assert tasks <= tiled.MIN_CHUNKS  # chunks no smaller than MIN_CHUNK
    else:
        assert tasks > tiled.MIN_CHUNKS  # chunks no larger than MAX_CHUNK


def test_a_plan_cuts_update_by_all_parameters_and_reduce_by_the_output_layers():
    plan = tiled.make_plan([64, 100, 10], 200, 8)
    assert plan[tiled.P_CHUNK] == tiled.chunk_size(64 * 100 + 100 + 100 * 10 + 10)
    assert plan[tiled.P_OUT_CHUNK] == tiled.chunk_size(100 * 10 + 10)  # REDUCE without an L2 term
    plan = tiled.make_plan([64, 4096, 10], 1024, 8)  # B: 16 tasks each
    assert -(-307210 // plan[tiled.P_CHUNK]) == -(-40970 // plan[tiled.P_OUT_CHUNK]) == 16


@pytest.mark.parametrize(
    "sizes, batch, shards, narrow",
    [([64, 1024, 10], 256, 0, True), ([784, 2048, 3], 256, 0, True), ([64, 16, 10], 256, 0, False),
     ([64, 1024, 1], 256, 0, False), ([64, 1024, 13], 256, 0, False), ([64, 4096, 10], 4, 0, False),
     ([64, 1024, 10], 256, 2, False)],
)  # fmt: skip
def test_a_plan_gives_the_narrow_loops_the_narrow_output_layers_of_wide_ones(sizes, batch, shards, narrow):
    # (a plan of shards runs whole passes, whose products are BLAS's)
    work = tiled.workspace(sizes, batch, 10, np.float64, 2, False, shards=shards)
    assert work.plan[tiled.P_NARROW] == narrow
    assert work.wt.size == (sizes[-2] * sizes[-1] if narrow else 0)


@pytest.mark.parametrize("alpha", [0.0, 1e-2])
@pytest.mark.parametrize("narrow", [False, True])  # (REDUCE transposes the output layer's narrow gradient)
def test_the_parameters_do_not_depend_on_the_chunks(alpha, narrow):
    # REDUCE and UPDATE work element by element: only the L2 term's sum of
    # squares is summed chunk by chunk (in chunk order), so the losses may
    # differ in their last bits, never the parameters (REDUCE's chunks of the
    # output layer, without an L2 term, vary with UPDATE's)
    runs = []
    for chunk in (7, 64, 1024, 1 << 15):  # 1705 parameters: 244 tasks to one
        model, X, Y = _problem(
            np.random.default_rng(5), [7, 40, 30, 5], 57, "tanh", "softmax", "log_loss", True, np.float64
        )
        plan = dict(SMALL, chunk=chunk, out_chunk=chunk, narrow=narrow)
        done, history = _train(model, X, Y, 3, 20, np.empty((0, 0), np.int64), "adam", 0.01, alpha, 2, plan)
        runs.append((done, history, model._params.copy(), model._state2.copy()))
    for other in runs[1:]:
        assert other[0] == runs[0][0] == 3
        np.testing.assert_allclose(other[1], runs[0][1], rtol=1e-13)
        np.testing.assert_array_equal(other[2], runs[0][2])
        np.testing.assert_array_equal(other[3], runs[0][3])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "softmax"])
@pytest.mark.parametrize("cols", [10, 64, 100])
def test_contiguous_blocks_give_the_bits_of_strided_ones(dtype, name, cols, rng):
    # activate_rows and derivative_rows take a contiguous block (ld == cols)
    # as one run; the same block at a row stride of cols + 3 goes row by row
    rows, pad, off = 37, 3, 5
    Z = (rng.standard_normal((rows, cols)) * 4).astype(dtype)
    b = rng.standard_normal(cols).astype(dtype)
    code = codes.ACTIVATION_CODES[name]
    wide = np.full((rows, cols + pad), 0.25, dtype)
    wide[:, :cols] = Z
    dense_buf = np.concatenate([np.zeros(off, dtype), Z.ravel()])
    strided_buf = np.concatenate([np.zeros(off, dtype), wide.ravel()])
    for buf, ld in ((dense_buf, cols), (strided_buf, cols + pad)):
        tiled.activate_rows(buf, off, ld, rows, cols, b, True, code, buf[:0], False, (0, 0), None)
    dense = dense_buf[off:].reshape(rows, cols)
    strided = strided_buf[off:].reshape(rows, cols + pad)
    np.testing.assert_array_equal(dense, strided[:, :cols])
    assert (strided[:, cols:] == 0.25).all() and (dense_buf[:off] == 0).all()
    assert_close(dense, ref.activate(Z + b, name), dtype)
    if name == "softmax":
        return
    A = dense.copy()
    delta = rng.standard_normal(rows * cols).astype(dtype)
    for buf, ld in ((dense_buf, cols), (strided_buf, cols + pad)):
        tiled.derivative_rows(delta, buf, off, ld, rows, cols, code, buf[:0], False, None)
    np.testing.assert_array_equal(dense, strided[:, :cols])
    assert (strided[:, cols:] == 0.25).all()
    assert_close(dense, delta.reshape(rows, cols) * ref.activation_derivative(A, name), dtype)


def _blocks(n_rows, n_cols, tile_rows, tile_cols):
    # the blocks of a matrix as tile_at gives them, one by one
    args = (n_rows, n_cols, tile_rows, tile_cols)
    return [tuple(tiled.tile_at(t, *args)) for t in range(tiled.tile_total(*args))]


@pytest.mark.parametrize(
    "n_rows, n_cols, tile_rows, tile_cols",
    [(12, 8, 4, 4), (13, 9, 4, 4), (13, 8, 4, 4), (12, 9, 4, 4), (3, 10, 4, 4), (10, 3, 4, 4), (1, 1, 4, 4),
     (257, 1032, 64, 1024), (257, 1, 64, 1), (64, 4096, 512, 1024), (0, 5, 4, 4), (27, 9, 4, 4), (1024, 2048, 256, 1024),
     (31, 5, 2, 2)],
)  # fmt: skip
def test_tiles_cover_each_element_once_row_by_row(n_rows, n_cols, tile_rows, tile_cols):
    blocks = _blocks(n_rows, n_cols, tile_rows, tile_cols)
    cover = np.zeros((n_rows, n_cols), int)
    for r0, c0, rows, cols in blocks:
        assert rows > 0 and cols > 0
        cover[r0 : r0 + rows, c0 : c0 + cols] += 1
    assert (cover == 1).all()
    across = -(-n_cols // tile_cols)
    assert len(blocks) == -(-n_rows // tile_rows) * across
    for task, (r0, c0, _, _) in enumerate(blocks):
        assert (r0, c0) == (task // across * tile_rows, task % across * tile_cols)


@pytest.mark.parametrize("shards", [0, 2])
@pytest.mark.parametrize(
    "sizes, batch", [([64, 1024, 10], 256), ([784, 2048, 10], 1024), ([64, 16, 10], 4096), ([30, 300, 200, 5], 257)]
)
def test_the_plan_does_not_depend_on_the_number_of_workers(sizes, batch, shards):
    # every worker count cuts each product into the same BLAS calls (BLAS
    # may round a product cut otherwise differently, see tiled.tile_at);
    # only a plan of shards' STEP chunks (elementwise, no sums), and the
    # room kept for them, follow the workers
    plans = [tiled.workspace(sizes, batch, 10, np.float32, w, False, shards=shards).plan for w in (1, 2, 3, 8)]
    if shards:
        plans = [plan.copy() for plan in plans]
        for plan in plans:
            plan[[tiled.P_CHUNK, tiled.P_MAX_CHUNKS]] = 0
    for plan in plans[1:]:
        np.testing.assert_array_equal(plan, plans[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "sizes, n, batch",
    [([64, 1024, 10], 257, 257), ([784, 600, 10], 300, 257), ([30, 300, 200, 5], 514, 257),
     ([30, 300, 200, 5], 300, 256), ([784, 1032, 10], 258, 258)],
)  # fmt: skip
def test_default_tiles_give_the_same_bits_on_any_number_of_workers(sizes, n, batch, dtype):
    # default tiles, with remainders of one row (257) and of some columns
    # (300, 600), on 1, 2 and 3 workers. (A plan that joined tiles for fewer
    # workers failed this in float32 with OpenBLAS's Haswell kernels.)
    runs = []
    for workers in (1, 2, 3):
        model, X, Y = _problem(np.random.default_rng(3), sizes, n, "tanh", "softmax", "log_loss", True, dtype)
        code = codes.OPTIMIZER_CODES["adam"]
        model._state1, model._state2 = np.zeros_like(model._params), np.zeros_like(model._params)
        hyper = hyper_array(0.01, 0.9, False, 0.9, 0.999, 1e-8, 1e-3)
        trainer = TiledTrainer(*model._bundles(X, Y, batch, False, code, hyper), workers=workers)
        history = np.full(2, np.nan)
        assert trainer.run(2, np.empty((0, 0), np.int64), history) == 2
        runs.append((history, model._params.copy()))
    for history, params in runs[1:]:
        np.testing.assert_array_equal(history, runs[0][0])
        np.testing.assert_array_equal(params, runs[0][1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("plan", [dict(block=5), None], ids=["blocks", "default-tiles"])
@pytest.mark.parametrize(
    "sizes, n, batch, outer",
    [([256, 512, 520, 3], 14, 7, [True, True, False]), ([512, 520, 3], 24, 12, [False, False])],
    ids=["few-rows", "small-products"],
)  # fmt: skip
def test_a_few_rows_through_wide_layers_train_like_the_reference_with_the_same_bits(sizes, n, batch, outer, plan,
                                                                                    dtype):  # fmt: skip
    # few-rows: batches of 7 rows (with blocks of 5, a block of 2 rows adds
    # to the first) through a layer whose gradient takes few_rows_tn from X,
    # and one from the activations. small-products: batches of 12 rows, whose
    # gradients BLAS makes (blocks of 5 rows take few_rows_tn), in forward
    # tiles of 12 x 512 @ 512 x 128
    assert [loop_rows(a, b, blas_architecture())[1] >= batch for a, b in zip(sizes[:-1], sizes[1:])] == outer
    runs = []
    for workers in (1, 2, 3):
        model, X, Y = _problem(np.random.default_rng(5), sizes, n, "tanh", "softmax", "log_loss", True, dtype)
        if workers == 1:
            # (momentum: Adam's steps in float32 turn the rounding of a gradient near 0 into a step of lr)
            expected, weights, biases = _numpy_loop(model, X, Y, 2, batch, np.empty((0, 0), np.int64), "momentum",
                                                    0.05, 1e-2)  # fmt: skip
        done, history = _train(model, X, Y, 2, batch, np.empty((0, 0), np.int64), "momentum", 0.05, 1e-2, workers,
                               plan)  # fmt: skip
        assert done == 2
        runs.append((history, model._params.copy()))
        if workers == 1:
            assert_close(history, expected, dtype)
            for got, want in zip(model.weights + model.biases, weights + biases):
                assert_close(got, want, dtype)
    for history, params in runs[1:]:
        np.testing.assert_array_equal(history, runs[0][0])
        np.testing.assert_array_equal(params, runs[0][1])


@pytest.mark.parametrize("plan", [SMALL, SHARDS, NARROW], ids=["layers", "shards", "narrow"])
def test_a_non_finite_loss_stops_before_that_update(plan, rng):
    # (a shard plan stops with its live set of parameters in the spare arrays
    # when an odd number of steps came before: those are copied back)
    model, X, Y = _problem(rng, [4, 12, 3], 16, "relu", "identity", "mse", True, np.float64)
    start = model._params.copy()
    done, history = _train(model, X, Y, 50, 16, np.empty((0, 0), np.int64), "gd", 1e3, 0.0, 2, plan)
    assert done < 50 and not np.isfinite(history[done])
    assert np.all(np.isfinite(model._params))
    # the parameters are those of `done` complete epochs, run again
    again = MLP([4, 12, 3], activation="relu", output_activation="identity", loss="mse", random_state=7)
    again._params[...] = start
    _train(again, X, Y, done, 16, np.empty((0, 0), np.int64), "gd", 1e3, 0.0, 1, plan)
    np.testing.assert_array_equal(model._params, again._params)


@pytest.mark.parametrize("plan", [None, SHARDS, dict(narrow=True)], ids=["layers", "shards", "narrow"])
@pytest.mark.parametrize("alpha", [0.0, 1e-3])
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "units, rows, w1, w2, overflows",
    [(1, 4, 1e-151, 1e4, 0),  # a block of dW1 read back
     (8, 1, 1.5625e-156, 1e4, 0),  # factors smaller than dW1: bounded, then read back
     (1, 4, 1e4, 1e-151, 1)],  # dW2, the output layer's: REDUCE's check
    ids=["hidden-read", "hidden-bounded", "output"],
)  # fmt: skip
def test_a_gradient_that_is_not_finite_stops_before_that_update(units, rows, w1, w2, overflows, alpha, workers, plan):
    # x = 1e300, identity layers: the output (1e153 / 1e150) and the loss are
    # finite, and so is one of dW1 = 2 x z W2 and dW2 = 2 (W1 x) z; the other
    # overflows. The GRADIENT tasks catch dW1 (without an L2 term REDUCE skips
    # the hidden layers; with one it reads them again), REDUCE catches dW2
    model = MLP([units, units, 1], activation="identity", output_activation="identity", loss="mse", bias=False)
    model.weights[0][...] = w1
    model.weights[1][...] = w2
    X, Y = np.full((rows, units), 1e300), np.zeros((rows, 1))
    value, grads, _ = model.loss_and_gradients(X, Y)
    assert np.isfinite(value) and np.isfinite(grads[1 - overflows]).all()
    assert not np.isfinite(grads[overflows]).all()
    start = model._params.copy()
    done, history = _train(model, X, Y, 3, rows, np.empty((0, 0), np.int64), "gd", 1e-320, alpha, workers, plan)
    assert done == 0 and np.isfinite(history[0])
    np.testing.assert_array_equal(model._params, start)
    # the flag is the batch's, and a bounded finite gradient passes: a finite batch after it trains
    model.weights[0][...] = 0.5
    model.weights[1][...] = 0.5
    X = np.ones((rows, units))
    done, history = _train(model, X, Y, 3, rows, np.empty((0, 0), np.int64), "gd", 0.01, alpha, workers, plan)
    assert done == 3 and np.isfinite(history).all() and np.isfinite(model._params).all()


def _large_fit(seed=0, threads=None):
    # large enough for MLP.fit to take the tiled runtime (fastnn._threads.large_products)
    data = np.random.default_rng(seed)
    X = data.standard_normal((256, 64))
    Y = data.random((256, 10))
    model = MLP([64, 300, 10], random_state=seed)
    history = model.fit(X, Y, epochs=3, learning_rate=1e-3, optimizer="momentum")
    return model, history, X, Y


def test_mlp_fit_takes_the_tiled_runtime_for_large_layers(monkeypatch):
    calls = []
    run = TiledTrainer.run
    monkeypatch.setattr(TiledTrainer, "run", lambda self, *a: calls.append(a[0]) or run(self, *a))
    model, history, X, Y = _large_fit()
    assert calls == [3]
    reference = MLP([64, 300, 10], random_state=0)
    expected, weights, biases = _numpy_loop(reference, X, Y, 3, 256, np.empty((0, 0)), "momentum", 1e-3, 0.0)
    assert_close(history, expected)
    for got, want in zip(model.weights + model.biases, weights + biases):
        assert_close(got, want)


def test_concurrent_fits_in_threads_and_a_busy_core_give_the_same_results():
    expected = _large_fit()[0]._params
    stop = threading.Event()

    def busy():  # keeps a core (and the GIL, between the kernels' calls) busy
        while not stop.is_set():
            sum(range(1000))

    results = {}

    def fit(i):
        results[i] = _large_fit()[0]._params

    threads = [threading.Thread(target=busy)] + [threading.Thread(target=fit, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    for params in results.values():
        np.testing.assert_array_equal(params, expected)


def _fit_in_child(queue):
    queue.put(_large_fit()[0]._params)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_trains_like_its_parent():
    expected = _large_fit()[0]._params  # the parent has started its helper threads
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_fit_in_child, args=(queue,))
    child.start()
    params = queue.get(timeout=120)
    child.join(timeout=60)
    np.testing.assert_array_equal(params, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_memory_does_not_grow_with_the_batch(dtype):
    sizes = [64, 4096, 10]
    small, large = (tiled.workspace(sizes, rows, 300_000, dtype, 2, False) for rows in (1024, 65536))
    assert large.acts.nbytes <= tiled.BLOCK_BYTES
    assert large.acts.nbytes == tiled.workspace(sizes, 8192, 300_000, dtype, 2, False).acts.nbytes
    assert small.acts.size == 1024 * sum(sizes[1:])  # a batch that fits runs as one block


def test_a_helper_that_cannot_start_leaves_the_work_to_the_caller(monkeypatch):
    from fastnn import _runtime

    class NoThreads:
        def submit(self, *args):
            raise RuntimeError("can't start new thread")

    expected = _large_fit()[0]._params
    monkeypatch.setattr(_runtime, "_executor", lambda helpers: NoThreads())
    monkeypatch.setattr(_runtime, "worker_count", lambda: 4)
    np.testing.assert_array_equal(_large_fit()[0]._params, expected)


_AS_PYTHON = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_tiled import BLOCKS, _problem, _train
runs = []
for workers in (1, 8, 8, 8, 8, 8):
    model, X, Y = _problem(np.random.default_rng(3), [7, 40, 30, 5], 57, "tanh", "softmax", "log_loss",
                           True, np.float64)
    _train(model, X, Y, 3, 20, np.empty((0, 0), np.int64), "adam", 0.01, 1e-3, workers, BLOCKS)
    runs.append(model._params)
print(all(np.array_equal(r, runs[0]) for r in runs))
"""


def test_threads_interleaved_as_python_still_give_identical_results():
    # Run as Python (NUMBA_DISABLE_JIT=1), the threads switch every few
    # bytecodes, which opens the windows that compiled code leaves almost
    # shut: a helper taking a task of the last phase with the new phase's
    # fields did here, and not in compiled runs
    import os
    import pathlib
    import subprocess
    import sys

    tests = str(pathlib.Path(__file__).resolve().parent)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    proc = subprocess.run([sys.executable, "-c", _AS_PYTHON.format(tests=tests)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "True"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", ["gd", "momentum", "adam"])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 1e-3])
def test_a_shard_plan_gives_the_bits_of_the_two_shard_kernel(dtype, optimizer, shuffle, alpha, monkeypatch):
    # the tiled kernel with SHARD and STEP tasks (not yet what the driver
    # gives small layers) trains as the two-shard twins do: same shards, same
    # sums in the same order, the same L2 term; 9 steps, an odd number, end
    # with the spare set live
    import fastnn._driver as driver

    rng = np.random.default_rng(0)
    X, Y = rng.random((537, 64)).astype(dtype), rng.random((537, 10)).astype(dtype)
    results = []
    for tiled_shards in (False, True):
        if tiled_shards:
            monkeypatch.setattr(driver, "takes_tiled", lambda sizes, batches: True)
            make_plan = tiled.make_plan
            monkeypatch.setattr(tiled, "make_plan", lambda *a, **k: make_plan(*a, **dict(k, shards=2)))
        net = MLP([64, 100, 10], activation="tanh", output_activation="softmax", loss="log_loss", dtype=dtype, random_state=0)
        history = net.fit(
            X, Y, epochs=3, batch_size=200, learning_rate=1e-2, optimizer=optimizer, shuffle=shuffle, alpha=alpha
        )
        results.append((np.asarray(history), net._params.copy()))
    np.testing.assert_array_equal(results[1][0], results[0][0])
    np.testing.assert_array_equal(results[1][1], results[0][1])
