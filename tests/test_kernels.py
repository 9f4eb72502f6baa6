"""Every compiled kernel against its NumPy twin in fastnn.reference."""

import gc
import itertools
import os

import numpy as np
import pytest

from conftest import DTYPES, assert_close
from fastnn import MLP
from fastnn import reference as ref
from fastnn._kernels import activations as ka
from fastnn._kernels import codes
from fastnn._kernels import dense as kd
from fastnn._kernels import train as kt
from fastnn._kernels._jit import kernel
from fastnn._kernels.bundles import Data, Net, Optim
from fastnn._kernels.fastexp import mul_add

ACTS = ["identity", "sigmoid", "tanh", "relu"]
# the activations of the value/slope tables (gelu and silu keep their slopes)
TABLE_ACTS = ["leaky_relu", "elu", "softplus", "gelu", "silu"]


# ---------------------------------------------------------------- activations
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (4, 3), (17, 33), (64, 256)])
def test_sigmoid_and_derivative(dtype, shape, rng):
    z = (rng.standard_normal(shape) * 6).astype(dtype)
    out = np.empty_like(z)
    ka.sigmoid(z, out)
    assert out.dtype == dtype
    assert_close(out, ref.sigmoid(z), dtype)
    d = np.empty_like(z)
    ka.sigmoid_derivative(out, d)
    assert_close(d, ref.sigmoid_derivative(out), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_is_overflow_safe(dtype):
    z = np.array([-1e4, -800.0, -100.0, 0.0, 100.0, 800.0, 1e4], dtype=dtype)
    out = np.empty_like(z)
    with np.errstate(all="raise"):
        ka.sigmoid(z, out)
    assert np.isfinite(out).all()
    assert out[0] == 0.0 and out[-1] == 1.0 and out[3] == 0.5
    # the same inputs through the softmax path
    Z = np.array([[-1e4, 0.0, 1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    ka.bias_activate(Z, Z[0, :0], False, codes.SOFTMAX)
    assert np.isfinite(Z).all()
    assert_close(Z, [[0.0, 0.0, 1.0], [0.5, 0.5, 0.0]], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS + ["softmax"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_bias_activate(dtype, name, with_bias, rng):
    Z = (rng.standard_normal((9, 7)) * 3).astype(dtype)
    b = rng.standard_normal(7).astype(dtype)
    expected = ref.activate(Z + b if with_bias else Z, name)
    got = Z.copy()
    ka.bias_activate(got, b if with_bias else b[:0], with_bias, codes.ACTIVATION_CODES[name])
    assert got.dtype == dtype
    assert_close(got, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("shape", [(300, 10), (17, 63), (9, 64), (5, 1), (1, 16)])
def test_narrow_rows_activated_as_one_run_give_the_row_loops_bits(dtype, name, with_bias, shape, rng):
    # bias_activate takes the rows of a C-contiguous Z narrower than
    # NARROW_ROW as one flat run (activate_block); each row through
    # activate_row, and the rows of a wider buffer (a block whose rows are
    # not contiguous: the row loop), give the same bits
    Z = (rng.standard_normal(shape) * 4).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    bias = b if with_bias else b[:0]
    code = codes.ACTIVATION_CODES[name]
    run = Z.copy()
    ka.bias_activate(run, bias, with_bias, code)
    rows = Z.copy()
    for i in range(shape[0]):
        ka.activate_row(rows[i], bias, with_bias, code)
    n, m = shape
    ld = m + 3
    wide = np.full(2 + n * ld, 7.0, dtype=dtype)  # the block at offset 2, rows ld apart
    for i in range(n):
        wide[2 + i * ld : 2 + i * ld + m] = Z[i]
    ka.activate_block(wide, 2, ld, n, m, bias, with_bias, code)
    strided = np.stack([wide[2 + i * ld : 2 + i * ld + m] for i in range(n)])
    np.testing.assert_array_equal(run, rows)
    np.testing.assert_array_equal(strided, rows)
    gaps = np.ones(wide.size, dtype=bool)
    for i in range(n):
        gaps[2 + i * ld : 2 + i * ld + m] = False
    assert (wide[gaps] == 7.0).all()  # nothing outside the block is touched
    fortran = np.asfortranarray(Z.copy())
    if not fortran.flags.c_contiguous:  # (one row or column is both)
        with pytest.raises(ValueError, match="C-contiguous"):
            ka.bias_activate(fortran, bias, with_bias, code)  # (flat would activate a copy)
    assert_close(run, ref.activate(Z + b if with_bias else Z, name), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (9, 7), (100, 10), (33, 2)])
def test_softmax_columns_is_the_row_loop_bit_for_bit(dtype, shape, rng):
    # the column-major softmax the training kernels use must give exactly the
    # numbers of bias_activate's row loop, extreme logits included
    Z = (rng.standard_normal(shape) * 30).astype(dtype)
    Z[0, 0] = 1e4
    if shape[1] > 1:
        Z[-1, -1] = -1e4
    expected = Z.copy()
    ka.bias_activate(expected, Z[0, :0], False, codes.SOFTMAX)
    got = Z.copy()
    T = np.full(Z.size, np.nan, dtype)
    stats = np.full(2 * shape[0], np.nan, dtype)
    ka.softmax_columns(got, T, stats)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)
    assert_close(got, ref.activate(Z, "softmax"), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_workspace_gives_the_same_gradients(dtype, weighted, rng):
    # with room for softmax_columns in `deltas` (deltas_units per row) the
    # loss and gradients are those of the row-by-row path, bit for bit, and
    # the reference's
    sizes, n = [5, 8, 4], 23
    m = _model(sizes, "relu", "softmax", "log_loss", True, dtype)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    X.setflags(write=False)  # read-only input (a memory map, say) must compile too
    Y = _targets(rng, "log_loss", "softmax", n, sizes[-1], dtype)
    w = rng.uniform(0.2, 3.0, n).astype(dtype) if weighted else np.empty(0, dtype)
    args = (codes.SOFTMAX, codes.LOG_LOSS, 0.1)
    results = []
    for units in (sum(sizes[1:]), kd.deltas_units(sizes)):
        assert units == sum(sizes[1:]) or units == sum(sizes[1:]) + 2
        acts = np.empty(n * sum(sizes[1:]), dtype=dtype)
        deltas = np.full(n * units, np.nan, dtype=dtype)
        grads = np.full_like(m._params, np.nan)
        value = kd.weighted_loss_and_gradients(
            X, Y, w, m._params, m._layout, *args, acts, deltas, grads, kd.extras_of(m._layout)
        )
        results.append((value, grads))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    ev, ewg, ebg = ref.loss_and_gradients(
        X, Y, m.weights, m.biases, "relu", "softmax", "log_loss", 0.1, w if weighted else None
    )
    assert_close(results[1][0], ev, dtype)
    for (fi, fo, wo, bo), gw, gb in zip(m._layout[:, :4], ewg, ebg):
        assert_close(results[1][1][wo : wo + fi * fo].reshape(fi, fo), gw, dtype)
        assert_close(results[1][1][bo : bo + fo], gb, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS)
def test_multiply_derivative(dtype, name, rng):
    A = ref.activate((rng.standard_normal((6, 5)) * 2).astype(dtype), name)
    delta = rng.standard_normal((6, 5)).astype(dtype)
    expected = delta * ref.activation_derivative(A, name)
    got = delta.copy()
    ka.multiply_derivative(got, A, codes.ACTIVATION_CODES[name])
    assert_close(got, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS)
def test_multiply_derivative_sum_rows_is_the_two_loops(dtype, name, rng):
    # the fused derivative and bias-gradient pass of the backward pass gives
    # the numbers of multiply_derivative followed by a row-order column sum
    A = ref.activate((rng.standard_normal((37, 9)) * 2).astype(dtype), name)
    delta = rng.standard_normal((37, 9)).astype(dtype)
    expected = delta.copy()
    ka.multiply_derivative(expected, A, codes.ACTIVATION_CODES[name])
    expected_sums = np.zeros(9, dtype)
    for row in expected:
        expected_sums += row
    got = delta.copy()
    sums = np.full(9, np.nan, dtype)
    ka.multiply_derivative_sum_rows(got, A, codes.ACTIVATION_CODES[name], sums)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(sums, expected_sums)


# ------------------------------------------------------------------- matmuls
# shapes on both sides of the loop/BLAS crossover (kd.SMALL_MATMUL)
SHAPES = [(1, 1, 1), (4, 3, 4), (4, 4, 1), (3, 5, 2), (8, 8, 8), (33, 17, 65), (128, 64, 32)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matmuls(dtype, m, k, n, rng):
    A = rng.standard_normal((m, k)).astype(dtype)
    B = rng.standard_normal((k, n)).astype(dtype)
    out = np.full((m, n), np.nan, dtype=dtype)
    kd.matmul(A, B, out)
    scale = max(1.0, np.sqrt(k))
    assert_close(out, A @ B, dtype, scale=scale)
    # A.T @ B with A: (k, m), B: (k, n)
    At = np.ascontiguousarray(A.T)
    Bm = rng.standard_normal((k, n)).astype(dtype)
    out = np.full((m, n), np.nan, dtype=dtype)
    kd.matmul_tn(At, Bm, out)
    assert_close(out, At.T @ Bm, dtype, scale=scale)
    # A @ B.T with B: (n, k)
    Bt = rng.standard_normal((n, k)).astype(dtype)
    out = np.full((m, n), np.nan, dtype=dtype)
    kd.matmul_nt(A, Bt, out)
    assert_close(out, A @ Bt.T, dtype, scale=scale)


# --------------------------------------------------------------- loss, delta
LOSS_CASES = [
    ("sse", "sigmoid"),
    ("sse", "identity"),
    ("sse", "tanh"),
    ("sse", "relu"),
    ("mse", "sigmoid"),
    ("mse", "identity"),
    ("log_loss", "sigmoid"),
    ("log_loss", "softmax"),
    ("squared_error", "identity"),
]


def _targets(rng, loss, out_act, n, k, dtype):
    if out_act == "softmax":
        return np.eye(k, dtype=dtype)[rng.integers(0, k, n)]
    if loss == "log_loss":
        return rng.integers(0, 2, (n, k)).astype(dtype)
    return rng.standard_normal((n, k)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,out_act", LOSS_CASES)
def test_loss_delta(dtype, loss, out_act, rng):
    n, k = 11, 3
    A = ref.activate(rng.standard_normal((n, k)).astype(dtype), out_act)
    Y = _targets(rng, loss, out_act, n, k, dtype)
    delta = np.empty_like(A)
    value = kd.loss_delta(Y, A, codes.LOSS_CODES[loss], codes.ACTIVATION_CODES[out_act], delta)
    assert_close(value, ref.loss(Y, A, loss, out_act), dtype)
    assert_close(delta, ref.output_delta(Y, A, loss, out_act), dtype)


# ------------------------------------------------- forward / backward / grads
ARCHS = [[3, 4, 1], [5, 1], [7, 16, 9, 3], [20, 64, 32, 4]]


def _model(sizes, act, out_act, loss, bias, dtype):
    return MLP(sizes, activation=act, output_activation=out_act, loss=loss, bias=bias,
               dtype=dtype, random_state=7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", ARCHS)
@pytest.mark.parametrize("act", ACTS + TABLE_ACTS)
@pytest.mark.parametrize("bias", [False, True])
def test_forward(dtype, sizes, act, bias, rng):
    m = _model(sizes, act, "sigmoid", "sse", bias, dtype)
    X = rng.standard_normal((13, sizes[0])).astype(dtype)
    acts = np.empty(13 * sum(sizes[1:]), dtype=dtype)
    out = kd.forward(X, m._params, m._layout, codes.SIGMOID, acts, acts[:0], kd.extras_of(m._layout))
    expected = ref.forward(X, m.weights, m.biases, act, "sigmoid")
    assert out.dtype == dtype
    assert_close(out, expected[-1], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", ARCHS)
@pytest.mark.parametrize("act", ACTS + TABLE_ACTS)
@pytest.mark.parametrize("loss,out_act", LOSS_CASES)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_gradients(dtype, sizes, act, loss, out_act, bias, weighted, rng):
    n = 10
    m = _model(sizes, act, out_act if loss != "squared_error" else "identity",
               loss if loss != "squared_error" else "sse", bias, dtype)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    Y = _targets(rng, loss, out_act, n, sizes[-1], dtype)
    if out_act == "softmax" and sizes[-1] == 1:
        Y = np.ones((n, 1), dtype)
    alpha = 0.3
    acts = np.empty(n * sum(sizes[1:]), dtype=dtype)
    deltas = np.empty_like(acts)
    grads = np.full_like(m._params, np.nan)
    codes_ = (codes.ACTIVATION_CODES[out_act], codes.LOSS_CODES[loss])
    if weighted:
        w = rng.uniform(0.2, 3.0, n).astype(dtype)
        value = kd.weighted_loss_and_gradients(
            X, Y, w, m._params, m._layout, *codes_, alpha, acts, deltas, grads, kd.extras_of(m._layout)
        )
    else:
        w = None
        value = kd.loss_and_gradients(
            X, Y, m._params, m._layout, *codes_, alpha, acts, deltas, grads, kd.extras_of(m._layout)
        )
    ev, ewg, ebg = ref.loss_and_gradients(X, Y, m.weights, m.biases, act, out_act, loss, alpha, w)
    assert_close(value, ev, dtype)
    for (fi, fo, wo, bo), gw in zip(m._layout[:, :4], ewg):
        assert_close(grads[wo : wo + fi * fo].reshape(fi, fo), gw, dtype)
    if bias:
        for (fi, fo, wo, bo), gb in zip(m._layout[:, :4], ebg):
            assert_close(grads[bo : bo + fo], gb, dtype)
    assert grads.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_poisson_loss_with_exp_output(dtype, weighted, rng):
    # scikit-learn's MLPRegressor(loss="poisson"): exp output, half deviance
    sizes, n = [4, 6, 2], 12
    m = _model(sizes, "tanh", "identity", "sse", True, dtype)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    Y = rng.poisson(1.5, (n, sizes[-1])).astype(dtype)  # zeros included
    w = rng.uniform(0.2, 3.0, n).astype(dtype) if weighted else np.empty(0, dtype)
    acts = np.empty(n * sum(sizes[1:]), dtype=dtype)
    deltas = np.empty_like(acts)
    grads = np.full_like(m._params, np.nan)
    value = kd.weighted_loss_and_gradients(
        X, Y, w, m._params, m._layout, codes.EXP, codes.POISSON, 0.2, acts, deltas, grads, None
    )
    ev, ewg, ebg = ref.loss_and_gradients(
        X, Y, m.weights, m.biases, "tanh", "exp", "poisson", 0.2, w if weighted else None
    )
    assert_close(value, ev, dtype)
    for (fi, fo, wo, bo), gw, gb in zip(m._layout[:, :4], ewg, ebg):
        assert_close(grads[wo : wo + fi * fo].reshape(fi, fo), gw, dtype)
        assert_close(grads[bo : bo + fo], gb, dtype)


# ----------------------------------------------------------------- optimizers
@pytest.mark.parametrize("dtype", DTYPES)
def test_gd_update(dtype, rng):
    p = rng.standard_normal(50).astype(dtype)
    g = rng.standard_normal(50).astype(dtype)
    expected = ref.gd_update(p.copy(), g, 0.3)
    kt.gd_update(p, g, 0.3)
    assert_close(p, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_update(dtype, nesterov, rng):
    p = rng.standard_normal(50).astype(dtype)
    v = rng.standard_normal(50).astype(dtype)
    p_ref, v_ref = p.copy(), v.copy()
    for _ in range(5):
        g = rng.standard_normal(50).astype(dtype)
        ref.momentum_update(p_ref, g, v_ref, 0.1, 0.9, nesterov)
        kt.momentum_update(p, g, v, 0.1, 0.9, nesterov)
    assert_close(p, p_ref, dtype)
    assert_close(v, v_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update(dtype, rng):
    p = rng.standard_normal(50).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    p_ref, m_ref, v_ref = p.copy(), m.copy(), v.copy()
    for t in range(1, 6):
        g = rng.standard_normal(50).astype(dtype)
        ref.adam_update(p_ref, g, m_ref, v_ref, 0.01, 0.9, 0.999, 1e-8, t)
        kt.adam_update(p, g, m, v, 0.01, 0.9, 0.999, 1e-8, t)
    assert_close(p, p_ref, dtype)
    assert_close(m, m_ref, dtype)
    assert_close(v, v_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shards", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("optimizer", ["gd", "momentum", "nesterov", "adam"])
def test_step_part_writes_one_step_to_the_other_set(dtype, shards, bias, optimizer, rng):
    # the shards' gradient sum + alpha / nb * W on the weights only, one
    # optimizer step from set `live` to the other set, the sum of W**2 and
    # finiteness, against NumPy, for a part of the parameters (the whole, or
    # a part that cuts a weight block, handed to the other copy too); for
    # the caller's copy and a further copy, in both directions; the live
    # sets, and everything outside the part, are left as they were
    m = _model([5, 7, 3], "relu", "softmax", "log_loss", bias, dtype)
    layout, size = m._layout, m._params.size
    grads = rng.standard_normal((kt.MAX_SHARDS, size)).astype(dtype)
    alpha, nb, t = 0.3, 20.0, 3
    hyper = kt.hyper_array(0.01, 0.9, optimizer == "nesterov", 0.9, 0.999, 1e-8, alpha)
    code = codes.OPTIMIZER_CODES["momentum" if optimizer == "nesterov" else optimizer]
    state_size = 0 if optimizer == "gd" else size
    sets = rng.standard_normal((2 * kt.MAX_SHARDS, 3, size)).astype(dtype)
    sets[:, 2] = np.abs(sets[:, 2])  # Adam's second moment is not negative
    weights = np.zeros(size, bool)
    for fi, fo, wo, bo in layout[:, :4]:
        weights[wo : wo + fi * fo] = True

    def expected(params, state1, state2):
        g = grads[0] + grads[1] if shards == 2 else grads[0].copy()
        g[weights] += dtype(alpha / nb) * params[weights]
        p, s1, s2 = params.copy(), state1.copy(), state2.copy()
        if optimizer == "gd":
            ref.gd_update(p, g, hyper[0])
        elif optimizer == "adam":
            ref.adam_update(p, g, s1, s2, hyper[0], hyper[3], hyper[4], hyper[5], t)
        else:
            ref.momentum_update(p, g, s1, hyper[0], hyper[1], optimizer == "nesterov")
        return p, s1, s2

    cut = int(kt.part_bound(size, 1, 2))
    assert 0 < cut < layout[0, 0] * layout[0, 1]  # inside the first weight block
    for (lo, hi, n_copies), c, live in itertools.product(
        ((0, size, 1), (0, cut, 2), (cut, size, 2)), (0, 1), (0, 1)
    ):
        params, state1, state2 = sets[0, 0].copy(), sets[0, 1].copy(), sets[0, 2].copy()
        copies = sets[1:].reshape(-1, size).copy()
        s1_view, s2_view = state1[:state_size], state2[: size if optimizer == "adam" else 0]
        net = Net(params, layout, np.int64(codes.SOFTMAX), np.int64(codes.LOG_LOSS), None)
        opt = Optim(np.int64(code), hyper, s1_view, s2_view, np.zeros(1, np.int64), np.zeros(kt.CONTROL_SIZE))
        step = (np.int64(shards), nb, np.int64(t))  # (shards, normaliser, t)
        at = (np.int64(c), np.int64(live), np.int64(n_copies))
        args = (net, opt, grads, copies, step, at, np.int64(lo), np.int64(hi))

        def rows(d, k):  # copy d's set k
            if d == 0 and k == 0:
                return params, state1, state2
            first = kt.COPY_ROWS * (2 * d + k - 1)
            return tuple(copies[first + i] for i in range(3))

        before = {(d, k): [a.copy() for a in rows(d, k)] for d in (0, 1) for k in (0, 1)}
        got_squares, ok = kt.step_part(*args)
        assert ok
        p, s1, s2 = expected(*before[c, live])
        inside = np.zeros(size, bool)
        inside[lo:hi] = True
        dst = rows(c, 1 - live)
        assert_close(dst[0][inside], p[inside], dtype)
        if optimizer != "gd":
            assert_close(dst[1][inside], s1[inside], dtype)
        if optimizer == "adam":
            assert_close(dst[2][inside], s2[inside], dtype)
        squares = float(np.sum(before[c, live][0][weights & inside].astype(np.float64) ** 2))
        assert_close(got_squares, squares, dtype)
        # the other copy's other set gets the new parameters of the part,
        # when it is below n_copies
        mirrored = 1 - c < n_copies
        if mirrored:
            np.testing.assert_array_equal(rows(1 - c, 1 - live)[0][inside], dst[0][inside])
        states = {"gd": 0, "momentum": 1, "nesterov": 1, "adam": 2}[optimizer]
        for d, k in before:
            for i, (now, was) in enumerate(zip(rows(d, k), before[d, k])):
                written = (d, k) == (c, 1 - live) and i <= states
                written |= (d, k, i) == (1 - c, 1 - live, 0) and mirrored
                if written:
                    np.testing.assert_array_equal(now[~inside], was[~inside])
                else:
                    np.testing.assert_array_equal(now, was)
        # without an L2 term: no squares
        hyper[6] = 0.0
        assert kt.step_part(*args) == (0.0, True)
        hyper[6] = alpha
        # a non-finite gradient, or a sum of finite ones that overflows, is
        # found in a weight block and in a bias block, inside the part only
        big = np.finfo(dtype).max
        for position in (1, cut + 1, size - 1):
            for g0, g1 in ((np.nan, 0.0), (np.inf, 0.0), (big, big)):
                if shards == 1 and g1 != 0.0:
                    continue
                saved = grads.copy()
                grads[0, position], grads[1, position] = g0, g1
                with np.errstate(over="ignore", invalid="ignore"):
                    assert kt.step_part(*args)[1] == (not lo <= position < hi)
                grads[...] = saved


# ------------------------------------------------------ fused training loop
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [[3, 4, 1], [6, 32, 8, 2]])
@pytest.mark.parametrize("bias", [False, True])
def test_train_kernel_full_batch_equals_reference_loop(dtype, sizes, bias, rng):
    m = _model(sizes, "sigmoid", "sigmoid", "sse", bias, dtype)
    X = rng.standard_normal((12, sizes[0])).astype(dtype)
    Y = rng.random((12, sizes[-1])).astype(dtype)
    weights = [w.copy() for w in m.weights]
    biases = [b.copy() for b in m.biases] if bias else None
    epochs = 30 if dtype == np.float64 else 5
    expected = ref.train_gd(X, Y, weights, biases, "sigmoid", "sigmoid", "sse", 0.05, epochs)
    history = m.fit(X, Y, epochs=epochs, learning_rate=0.05)
    assert_close(history, expected, dtype)
    for w, ew in zip(m.weights, weights):
        assert_close(w, ew, dtype)
    if bias:
        for b, eb in zip(m.biases, biases):
            assert_close(b, eb, dtype)


# ----------------------------------------------------------------- fast exp
# the two exps of fastnn._kernels.fastexp, as array kernels
EXPS = ("exp_nonpositive_array", "exp_nonpositive_short_array")


def _exp_kernel(name):
    from fastnn._kernels import fastexp

    return getattr(fastexp, name)


@pytest.mark.parametrize(
    "name,dtype,low,max_ulp",
    [
        ("exp_nonpositive_array", np.float64, -708.0, 1.5),  # 1.1 ulp at most, measured
        ("exp_nonpositive_short_array", np.float64, -708.0, 2),
        ("exp_nonpositive_array", np.float32, -87.0, 4),
        ("exp_nonpositive_short_array", np.float32, -87.0, 4),
    ],
)
def test_exp_nonpositive_within_a_few_ulp(name, dtype, low, max_ulp, rng):
    x = np.concatenate([np.linspace(low, 0.0, 20001), -rng.exponential(10.0, 20000),
                        -rng.exponential(1e-3, 2000), [0.0, -0.0, low]])  # fmt: skip
    x = np.maximum(x, low).astype(dtype)
    got = _exp_kernel(name)(x, np.empty_like(x))
    expected = np.exp(x.astype(np.float64))
    ulps = np.abs(got - expected) / np.spacing(expected.astype(dtype)).astype(np.float64)
    assert got.dtype == dtype
    assert ulps.max() <= max_ulp


@pytest.mark.parametrize("name", EXPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_nonpositive_underflows_to_zero(name, dtype):
    x = np.array([-1e4, -800.0, -746.0, -np.inf], dtype=dtype)
    got = _exp_kernel(name)(x, np.empty_like(x))
    np.testing.assert_array_equal(got, 0.0)


@pytest.mark.parametrize("name", EXPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_is_never_hidden(name, dtype):
    x = np.array([np.nan], dtype=dtype)
    assert np.isnan(_exp_kernel(name)(x, np.empty_like(x))).all()
    z = np.array([np.nan, 1.0], dtype=dtype)
    out = ka.sigmoid(z, np.empty_like(z))
    assert np.isnan(out[0]) and np.isfinite(out[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_mul_add_rounds_once_where_the_target_has_fma(dtype):
    # (1 + e)(1 - e) - 1 = -e**2: rounded once (FMA) that is -e**2; rounded
    # twice the product is 1 and the sum 0. Python (NUMBA_DISABLE_JIT) rounds twice.
    import numba

    from fastnn._kernels import fastexp

    e = dtype(2.0**-20 if dtype == np.float32 else 2.0**-30)
    a, b, c = dtype(1) + e, dtype(1) - e, dtype(-1)
    fused = fastexp.FMA and not numba.config.DISABLE_JIT
    assert _mul_add(a, b, c) == (-(e * e) if fused else 0.0)
    assert _mul_add(dtype(2), dtype(3), dtype(1)) == 7


@kernel
def _mul_add(a, b, c):
    return mul_add(a, b, c)


# ------------------------------------------- sharded batches, parallel twin
# positions of the bundles in _train_args' list: train's arguments
NET, DATA, OPT, WORK, EPOCHS, HISTORY = range(6)


def _train_args(kernel_dtype, n, batch, shuffle, optimizer, rng, rule=False, weighted=False):
    sizes = [9, 40, 3]
    m = _model(sizes, "relu", "softmax", "log_loss", True, kernel_dtype)
    X = rng.standard_normal((n, sizes[0])).astype(kernel_dtype)
    Y = np.eye(sizes[-1], dtype=kernel_dtype)[rng.integers(0, sizes[-1], n)]
    epochs = 4
    order = np.array([rng.permutation(n) for _ in range(epochs)], dtype=np.int64)
    work = kt.shard_buffers(batch, sizes, m._params.size, kernel_dtype, use_order=True, weighted=weighted)
    hyper = kt.hyper_array(0.01, 0.9, True, 0.9, 0.999, 1e-8, 1e-3)
    control = np.zeros(kt.CONTROL_SIZE)
    if rule:
        control[kt.C_RULE] = 1
        control[kt.C_TOL] = 10.0  # every epoch "fails to improve": stops after epoch 2
        control[kt.C_N_ITER_NO_CHANGE] = 1
        control[kt.C_BEST_LOSS] = np.inf
    net = Net(m._params.copy(), m._layout, np.int64(codes.SOFTMAX), np.int64(codes.LOG_LOSS), None)
    weights = rng.uniform(0.2, 3.0, n if weighted else 0).astype(kernel_dtype)
    data = Data(X, Y, weights, order, shuffle, np.int64(batch))
    state = (np.zeros_like(m._params), np.zeros_like(m._params), np.zeros(1, np.int64))
    opt = Optim(np.int64(codes.OPTIMIZER_CODES[optimizer]), hyper, *state, control)
    return [net, data, opt, work, epochs, np.zeros(epochs)]


def _copied(args):
    # train's arguments with every array copied (the bundles' too)
    def copy(a):
        return a.copy() if isinstance(a, np.ndarray) else a

    return [type(a)(*map(copy, a)) if isinstance(a, tuple) else copy(a) for a in args]


def _arrays(args):
    # (name, array) of every array in train's arguments
    for i, a in enumerate(args):
        fields = zip(a._fields, a) if isinstance(a, tuple) else [(str(i), a)]
        for name, value in fields:
            if isinstance(value, np.ndarray):
                yield name, value


def _assert_untouched(args, before):
    for (name, a), (_, b) in zip(_arrays(args), _arrays(before)):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", ["gd", "momentum", "adam"])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n,batch", [(150, 100), (150, 150), (40, 16), (201, 64)])
@pytest.mark.parametrize("weighted", [False, True])
def test_parallel_twin_gives_bit_identical_training(dtype, optimizer, shuffle, n, batch, weighted, rng):
    serial = _train_args(dtype, n, batch, shuffle, optimizer, rng, weighted=weighted)
    parallel = _copied(serial)
    assert kt.train(*serial) == kt.train_parallel(*parallel) == 4
    _assert_same_training(serial, parallel)


def _assert_same_training(serial, parallel):
    # parameters, optimizer state, step count, schedule state, history and
    # the shards' workspaces are equal bit for bit, but `copies`, which the
    # twins fill differently (the parallel twin keeps its further copies there)
    for (name, a), (_, b) in zip(_arrays(serial), _arrays(parallel)):
        if name != "copies":
            np.testing.assert_array_equal(a, b, err_msg=name)
    history = serial[HISTORY]
    assert np.isfinite(history).all() and history[-1] < history[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,batch", [(150, 100), (40, 16)])
def test_parallel_twin_with_one_copy_shares_the_parameters(dtype, n, batch, rng):
    # with room for one copy only (shard_buffers(..., replicas=False)) the
    # parallel twin's shards read the one shared copy: the same results
    serial = _train_args(dtype, n, batch, True, "adam", rng)
    parallel = _copied(serial)
    size = serial[NET].params.size
    one = kt.shard_buffers(batch, [9, 40, 3], size, dtype, replicas=False).copies
    assert one.shape == (kt.COPY_ROWS, size)
    parallel[WORK] = parallel[WORK]._replace(copies=one)
    assert kt.train(*serial) == kt.train_parallel(*parallel) == 4
    _assert_same_training(serial, parallel)
    # the serial twin never needs more
    again = _train_args(dtype, n, batch, True, "adam", np.random.default_rng(5))
    alone = _copied(again)
    alone[WORK] = alone[WORK]._replace(copies=one.copy())
    assert kt.train(*again) == kt.train(*alone) == 4
    _assert_same_training(again, alone)


@pytest.mark.parametrize("twin", ["train", "train_parallel"])
def test_train_refuses_workspaces_too_small(twin, rng):
    args = _train_args(np.float64, 40, 16, True, "adam", rng)
    before = _copied(args)
    size = args[NET].params.size
    for position, field, shape in (
        (WORK, "copies", (kt.COPY_ROWS - 1, size)),
        (WORK, "copies", (kt.COPY_ROWS, size - 1)),
        (WORK, "grads", (kt.MAX_SHARDS, size)),
        (WORK, "shard_loss", (kt.MAX_SHARDS,)),
        (OPT, "hyper", (kt.HYPER_SIZE - 1,)),
        (OPT, "control", (kt.CONTROL_SIZE + 1,)),
    ):
        bad = list(args)
        bad[position] = bad[position]._replace(**{field: np.empty(shape)})
        with pytest.raises(ValueError, match=field):
            getattr(kt, twin)(*bad)
        _assert_untouched(args, before)


def _run_slot(index, args, sync, threaded=1, job=None):
    job = np.zeros(0, np.int64) if job is None else job
    slot = kt.Slot(np.int64(index), np.int64(threaded), sync, job)
    net, data, opt, work, epochs, history = args
    return kt.run_slot(slot, net, data, opt, work, np.int64(epochs), history, net.extras)


@pytest.mark.requires_jit
@pytest.mark.parametrize("first", [0, 1])
def test_slots_that_do_not_meet_leave_the_work_to_slot_0(first, rng):
    # a threading setup that runs the slots one after another: a slot gives
    # up waiting after ARRIVE_SPINS; slot 0 then does all the work (the same
    # numbers as `train`) and slot 1 returns without touching anything,
    # whichever starts first
    serial = _train_args(np.float64, 150, 100, True, "adam", rng)
    alone = _copied(serial)
    assert kt.train(*serial) == 4
    sync = np.zeros(kt.SYNC_SIZE, np.int64)
    untouched = _copied(alone)
    if first == 1:
        assert _run_slot(1, alone, sync) == 0
        assert sync[kt.SYNC_MODE] == kt.MODE_ALONE
        _assert_untouched(alone, untouched)
    assert _run_slot(0, alone, sync) == 4
    assert sync[kt.SYNC_MODE] == kt.MODE_ALONE and sync[kt.SYNC_RESULT] == 4
    _assert_same_training(serial, alone)
    if first == 0:
        after = _copied(alone)
        assert _run_slot(1, alone, sync) == 0
        _assert_untouched(alone, after)


@pytest.mark.requires_jit
def test_slots_meet_and_split_the_work(rng):
    # two slots on two threads: parallel mode, each slot ran its own shards
    # (the counter of finished shards saw both), same numbers as `train`
    import threading

    serial = _train_args(np.float64, 150, 100, True, "momentum", rng)
    parallel = _copied(serial)
    assert kt.train(*serial) == 4
    sync = np.zeros(kt.SYNC_SIZE, np.int64)
    results = {}
    other = threading.Thread(target=lambda: results.update(one=_run_slot(1, parallel, sync)))
    other.start()
    results["zero"] = _run_slot(0, parallel, sync)
    other.join()
    assert sync[kt.SYNC_MODE] == kt.MODE_PARALLEL and sync[kt.SYNC_ARRIVED] == 2
    # 150 rows in batches of 100 and 50: two shards, then one, for 4 epochs
    assert sync[kt.SYNC_SHARDS] == 4 * (2 + 1)
    assert results == {"zero": 4, "one": 4} and sync[kt.SYNC_RESULT] == 4
    assert sync[kt.SYNC_FINISHED] == 2  # slot 0 returned after both were done
    _assert_same_training(serial, parallel)


def test_shard_rule_and_buffers():
    assert [kt.shards_of(nb) for nb in (1, 63, 64, 100, 1000)] == [1, 1, 2, 2, 2]
    # a batch of 64 splits into 32 + 32, but a last batch of 63 rows is one shard
    assert kt.shard_rows(64) == 63 and kt.shard_rows(200) == 100 and kt.shard_rows(5) == 5
    acts, deltas, grads, loss, copies, X_batch, Y_batch, W_batch = kt.shard_buffers(200, [9, 40, 3], 533, np.float32)
    assert acts.shape == (kt.MAX_SHARDS, 100 * 43) and acts.dtype == np.float32
    # two more per row: room for the column-major softmax (kd.deltas_units)
    assert deltas.shape == (kt.MAX_SHARDS, 100 * 45) and deltas.dtype == np.float32
    # gradients and losses: a half for steps of even and of odd number; then
    # the sum of squares and the finiteness of each part of the update
    assert grads.shape == (2 * kt.MAX_SHARDS, 533) and loss.shape == (4 * kt.MAX_SHARDS,)
    assert loss.dtype == np.float64
    # parameters and the two optimizer states: the caller's second set, and
    # two sets for each further copy
    assert kt.COPY_ROWS == 3
    assert copies.shape == (3 * (2 * kt.MAX_SHARDS - 1), 533) and copies.dtype == np.float32
    assert kt.shard_buffers(200, [9, 40, 3], 533, np.float32, replicas=False).copies.shape == (3, 533)
    # no batch buffers unless batches are gathered in an order, with their weights
    assert X_batch.shape == (0, 9) and Y_batch.shape == (0, 3) and W_batch.shape == (0,)
    gathered = kt.shard_buffers(200, [9, 40, 3], 533, np.float32, use_order=True, weighted=True)
    assert gathered.X_batch.shape == (200, 9) and gathered.Y_batch.shape == (200, 3)
    assert gathered.W_batch.shape == (200,) and gathered.W_batch.dtype == np.float32


def test_train_kernel_stopping_rule(rng):
    args = _train_args(np.float64, 150, 100, True, "adam", rng, rule=True)
    control = args[OPT].control
    # epoch 1 improves on inf; epochs 2 and 3 do not by tol = 10: the count
    # exceeds n_iter_no_change = 1 after epoch 3
    assert kt.train(*args) == 3
    assert control[kt.C_STOPPED] == 1 and control[kt.C_NO_IMPROVEMENT] == 2
    assert control[kt.C_TIME_STEP] == 3 * 150
    assert control[kt.C_BEST_LOSS] == args[HISTORY][:3].min()


def _forked_training(args, queue):
    done = kt.train_parallel(*args)
    queue.put((done, args[NET].params, args[HISTORY]))


@pytest.mark.requires_jit
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_parallel_twin_runs_in_a_forked_child(rng):
    # the helper threads do not survive a fork: the child starts its own
    import multiprocessing

    serial = _train_args(np.float64, 150, 100, True, "adam", rng)
    parent = _copied(serial)
    child = _copied(serial)
    assert kt.train(*serial) == kt.train_parallel(*parent) == 4
    queue = multiprocessing.get_context("fork").Queue()
    process = multiprocessing.get_context("fork").Process(
        target=_forked_training, args=(child, queue)
    )
    process.start()
    done, params, history = queue.get(timeout=60)
    process.join(timeout=60)
    assert done == 4 and process.exitcode == 0
    np.testing.assert_array_equal(params, serial[NET].params)
    np.testing.assert_array_equal(history, serial[HISTORY])


@pytest.mark.requires_jit
def test_a_helper_that_fails_leaves_the_work_to_slot_0(monkeypatch, rng):
    # slot 0 waits ARRIVE_SPINS for the helper on an empty job, then trains
    # as `train`, and so do later calls
    import concurrent.futures

    class FailingPool:
        def submit(self, *args):
            future = concurrent.futures.Future()
            future.set_exception(RuntimeError("can't start new thread"))
            return future

    monkeypatch.setattr(kt, "_helper_pool", lambda: FailingPool())
    monkeypatch.setitem(kt._helpers, "failed", False)
    serial = _train_args(np.float64, 150, 100, True, "sgd", rng)
    parallel = _copied(serial)
    assert kt.train(*serial) == kt.train_parallel(*parallel) == 4
    _assert_same_training(serial, parallel)
    assert kt._helpers["failed"]
    monkeypatch.setattr(kt, "run_slot", None)  # not called again with helpers
    monkeypatch.setattr(kt, "train", lambda *args: "serial")
    assert kt.train_parallel(*parallel) == "serial"


@pytest.mark.requires_jit
def test_a_standing_helper_runs_the_jobs_posted_until_told_to_quit(rng):
    # slot 1 as a helper's standing call: it runs the job it was started
    # with, then each job post_job hands it, on the same arrays; two calls
    # of 2 epochs equal `train` in two calls of 2 epochs
    import threading

    serial = _train_args(np.float64, 150, 100, True, "adam", rng)
    parallel = _copied(serial)
    for args in (serial, parallel):
        args[EPOCHS] = 2  # epochs per call
        # the order of 2 epochs, used by both calls
        args[DATA] = args[DATA]._replace(order=args[DATA].order[:2])
    assert kt.train(*serial) == kt.train(*serial) == 2
    start = _copied(parallel)
    # The helper waits SERVE_SPINS spins for the next job, then returns. On a
    # loaded machine this thread can be descheduled for longer than that
    # between the two jobs (seen with another test process on the 2 cores):
    # then the helper has exited, post_job says so, and the round starts
    # again from the same arrays with a new helper.
    for attempt in range(20):
        parallel = _copied(start)
        sync = np.zeros(kt.SYNC_SIZE, np.int64)
        job = np.zeros(kt.JOB_SIZE, np.int64)
        job[kt.JOB_STATE], job[kt.JOB_EPOCHS] = kt.JOB_POSTED, 2
        helper = threading.Thread(target=_run_slot, args=(1, parallel, sync, 1, job))
        helper.start()
        assert _run_slot(0, parallel, sync) == 2
        assert sync[kt.SYNC_MODE] == kt.MODE_PARALLEL
        if kt.post_job(job, sync, 2):  # waits while the helper leaves the first job
            break
        helper.join(timeout=10)
        assert job[kt.JOB_STATE] == kt.JOB_EXITED  # (the only way post_job refuses)
    else:
        pytest.fail("the helper had always returned before the second job was posted")
    assert sync[kt.SYNC_ARRIVED] in (0, 1)  # cleared for the new job
    assert _run_slot(0, parallel, sync) == 2
    assert sync[kt.SYNC_MODE] == kt.MODE_PARALLEL and sync[kt.SYNC_FINISHED] == 2
    _assert_same_training(serial, parallel)
    kt.quit_job(job)
    helper.join(timeout=10)
    assert not helper.is_alive() and job[kt.JOB_STATE] == kt.JOB_EXITED
    # a helper that has returned takes no job
    before = sync.copy()
    assert not kt.post_job(job, sync, 2)
    np.testing.assert_array_equal(sync, before)


@pytest.mark.requires_jit
def test_train_parallel_keeps_its_helper_for_the_same_arrays_only(rng):
    # consecutive calls on the same arrays hand their jobs to the same
    # standing helper; other arrays get a new one (the old one quits); a
    # helper left alone returns by itself; the results are `train`'s
    import time

    first = _train_args(np.float64, 150, 100, True, "momentum", rng)
    other = _train_args(np.float64, 201, 64, True, "adam", rng)
    runs = {}
    for name, args in (("first", first), ("other", other)):
        serial = _copied(args)
        parallel = _copied(args)
        assert kt.train(*serial) == kt.train(*serial) == 4
        runs[name] = (serial, parallel)
    serial, parallel = runs["first"]
    assert kt.train_parallel(*parallel) == 4
    # The helper waits about 2 ms (SERVE_SPINS) for the next job. A pause of
    # the test process that long (a garbage collection late in the full
    # suite) lets it return, and the next call meets a new one: so the
    # collector is off, and the handover must happen in one of a few tries.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        for tries in range(1, 6):
            server = kt._helpers["server"]
            assert kt.train_parallel(*parallel) == 4
            if kt._helpers["server"] is server:
                break
    finally:
        if gc_was_on:
            gc.enable()
    assert kt._helpers["server"] is server
    for _ in range(tries - 1):  # as many calls of the serial twin (it made two)
        assert kt.train(*serial) == 4
    _assert_same_training(serial, parallel)
    def exits(job):
        deadline = time.monotonic() + 30
        while job[kt.JOB_STATE] != kt.JOB_EXITED and time.monotonic() < deadline:
            time.sleep(0.01)
        return job[kt.JOB_STATE] == kt.JOB_EXITED

    serial, parallel = runs["other"]
    assert kt.train_parallel(*parallel) == 4
    assert kt._helpers["server"] is not server
    assert exits(server["jobs"][0])  # told to quit
    assert kt.train_parallel(*parallel) == 4
    _assert_same_training(serial, parallel)
    assert exits(kt._helpers["server"]["jobs"][0])  # after SERVE_SPINS without a job


@pytest.mark.requires_jit
def test_a_long_wait_for_another_slot_yields_and_ends(rng):
    # wait_until spins, then lets other threads run between its reads (the
    # compiled pause, sched_yield where there is one), and returns once the
    # other thread has counted
    import threading
    import time

    from numba import njit

    @njit(nogil=True)
    def wait(sync, target):
        kt.wait_until(sync, kt.SYNC_SHARDS, target)

    sync = np.zeros(kt.SYNC_SIZE, np.int64)
    wait(sync, 0)  # already there: returns at once (and compiles)

    def count_later():
        time.sleep(0.05)
        sync[kt.SYNC_SHARDS] = 1

    other = threading.Thread(target=count_later)
    start = time.perf_counter()
    other.start()
    wait(sync, 1)
    other.join()
    assert time.perf_counter() - start >= 0.05 and sync[kt.SYNC_SHARDS] == 1


def test_atomics_add_load_and_compare_and_swap():
    # compiled (LLVM atomics), or the locked Python stand-ins without JIT
    from numba import njit

    from fastnn._kernels.sync import atomic_add, atomic_cas, atomic_load, pause

    @njit
    def run(a):
        first = atomic_add(a, 3, 5)  # 2 -> 7, returns 2
        seen = atomic_load(a, 3)
        kept = atomic_cas(a, 3, 6, 100)  # 7 != 6: unchanged, returns 7
        swapped = atomic_cas(a, 3, 7, 100)  # 7 == 7: 100, returns 7
        pause()
        return first, seen, kept, swapped

    a = np.array([0, 0, 0, 2, 0], dtype=np.int64)
    assert run(a) == (2, 7, 7, 7)
    assert a.tolist() == [0, 0, 0, 100, 0]


# ---------------------------------------------------------------- shuffles
def _numpy_orders(random_state, sample_idx, count):
    # scikit-learn's per-epoch `sample_idx = shuffle(sample_idx, random_state=...)`
    orders = []
    for _ in range(count):
        perm = np.arange(sample_idx.size)
        random_state.shuffle(perm)
        sample_idx = sample_idx[perm]
        orders.append(sample_idx)
    return np.array(orders)


@pytest.mark.parametrize(
    "n, seed, skip, count",
    [
        *itertools.product([1, 2, 3, 5, 64, 1000], [0, 1, 12345], [0, 1, 600], [4]),
        # i = 2**16 first: its mask needs the last of the mask's shifts
        *((65_537, seed, 0, 1) for seed in range(4)),
    ],
)
def test_draw_orders_makes_numpys_shuffles_and_leaves_its_state(n, seed, skip, count):
    from fastnn._kernels.shuffle import draw_orders

    ours, theirs = np.random.RandomState(seed), np.random.RandomState(seed)
    for rs in (ours, theirs):
        rs.randint(2**31 - 1, size=skip)  # start inside the state, or just before a refresh
    sample_idx = np.random.default_rng(seed).permutation(n).astype(np.int64)
    expected = _numpy_orders(theirs, sample_idx, count)
    state = ours.get_state(legacy=False)
    key = state["state"]["key"].copy()
    order = np.full((count + 1, n), -1, dtype=np.int64)
    perm = np.empty(n, dtype=np.int64)
    pos = draw_orders(key, np.int64(state["state"]["pos"]), sample_idx, perm, order, count)
    np.testing.assert_array_equal(order[:count], expected)
    assert (order[count] == -1).all()  # only `count` rows written
    after = theirs.get_state(legacy=False)["state"]
    np.testing.assert_array_equal(key, after["key"])
    assert pos == after["pos"]
    # a drawer that skipped the rejections or the refresh would now diverge
    ours.set_state(dict(state, state={"key": key, "pos": int(pos)}))
    assert ours.randint(2**31 - 1) == theirs.randint(2**31 - 1)
