"""Kernel-level benchmarks: the small-matmul crossover and the elementwise passes (activations).

The sigmoid and tanh groups also time PyTorch's ``torch.sigmoid`` /
``torch.tanh`` on one thread (engine ``torch``, where PyTorch is installed),
against fastnn's loop, which runs on one thread: the per-thread comparison
of the vectorised exp. A block of 65,536 values stays in cache; 4M values
stream from memory.

``test_matmul_crossover`` times an ``m x m`` by ``m x m`` product made by
the explicit loops of :mod:`fastnn._kernels.dense` and by a BLAS call
(Numba's ``np.dot`` into a preallocated output), both from inside compiled
code, as the kernels use them. Measured on the development machine: loops
31 ns against BLAS 44 ns per call at 4x4x4, 93 ns against 48 ns at 6x6x6,
hence ``dense.SMALL_MATMUL = 128`` (about 5x5x5).

``test_layer_product`` times a layer's forward product and weight gradient
on one thread by BLAS, by the register-blocked products
(:mod:`fastnn._kernels.blocked`) and by the few-rows loops
(:mod:`fastnn._kernels.few_rows`): where OpenBLAS runs its Haswell kernels
on an AVX-512 CPU, the blocked products were 1.7-2.2x faster than BLAS
through 64-100 on the development machine.
"""

import numpy as np
import pytest
import threadpoolctl
from numba import njit

from fastnn import bench, reference
from fastnn._kernels import dense, fastmath
from fastnn._kernels.blocked import blocked_nn, blocked_tn
from fastnn._kernels.few_rows import few_rows_nn, few_rows_tn
from fastnn._kernels.activations import activate_row_keep, multiply_derivative, sigmoid
from fastnn._kernels.codes import ACTIVATION_CODES, SIGMOID

CALLS = 2000
ELEMENTWISE_ENGINES = ["reference", "fastnn"] + (["torch"] if bench.installed("torch") else [])


def _torch_one_thread(benchmark, fn, z):
    # fn(z, out=...) timed with PyTorch on one thread, as fastnn's loops run;
    # returns the result as a NumPy array
    import time

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tz = torch.from_numpy(z)
        out = torch.empty_like(tz)
        time.sleep(0.2)  # other engines' worker threads go idle first
        benchmark(fn, tz, out=out)
    finally:
        torch.set_num_threads(before)
    return out.numpy()


@njit(cache=False)
def _loops(A, B, out, calls):
    # the very loops that dense.matmul runs below SMALL_MATMUL
    for _ in range(calls):
        dense.matmul_loops(A, B, out)
    return out


@njit(cache=False)
def _blas(A, B, out, calls):
    for _ in range(calls):
        np.dot(A, B, out)
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method", ["loops", "blas"])
@pytest.mark.parametrize("size", [2, 4, 6, 8, 12, 16, 32])
def test_matmul_crossover(benchmark, size, method, dtype):
    benchmark.group = f"matmul {size}x{size}x{size} {dtype} ({CALLS} calls)"
    rng = np.random.default_rng(0)
    A = rng.standard_normal((size, size)).astype(dtype)
    B = rng.standard_normal((size, size)).astype(dtype)
    out = np.empty((size, size), dtype)
    fn = _loops if method == "loops" else _blas
    fn(A, B, out, 1)
    benchmark(fn, A, B, out, CALLS)
    np.testing.assert_allclose(out, A @ B, rtol=1e-4, atol=1e-5 * size)
    benchmark.extra_info["m*k*n"] = size**3
    benchmark.extra_info["below SMALL_MATMUL"] = size**3 < dense.SMALL_MATMUL


@njit(cache=False)
def _layer_product(engine, transposed, A, B, out, calls):
    # out = A @ B (A.T @ B when transposed) by BLAS (engine 0), the blocked
    # products (1) or the few-rows loops (2), as the kernels call them
    m, n = out.shape
    k = A.shape[0] if transposed else A.shape[1]
    a, b, c = (A.ravel(), 0, A.shape[1]), (B.ravel(), 0, n), (out.ravel(), 0, n)
    for _ in range(calls):
        if engine == 0 and transposed:
            np.dot(A.T, B, out)
        elif engine == 0:
            np.dot(A, B, out)
        elif engine == 1 and transposed:
            blocked_tn(m, n, k, a, b, c, False)
        elif engine == 1:
            blocked_nn(m, n, k, a, b, c, False)
        elif transposed:
            few_rows_tn(m, n, k, a, b, c, False)
        else:
            few_rows_nn(m, n, k, a, b, c, False)
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("product", ["A@W", "A.T@D"])
@pytest.mark.parametrize("engine", ["blas", "blocked", "few_rows"])
@pytest.mark.parametrize("shape", ["200x64-100", "16x64-100", "200x100-10", "32x64-1024", "256x64-1024"])
def test_layer_product(benchmark, shape, engine, product, dtype):
    # a layer's forward product (rows x fan_in @ fan_in x units) or weight
    # gradient (fan_in x rows @ rows x units), one thread: which of BLAS,
    # fastnn._kernels.blocked and fastnn._kernels.few_rows is faster where
    rows, layer = shape.split("x")
    rows, (fan_in, units) = int(rows), map(int, layer.split("-"))
    benchmark.group = f"layer product {product} {shape} {dtype} (100 calls)"
    rng = np.random.default_rng(0)
    transposed = product == "A.T@D"
    A = rng.standard_normal((rows, fan_in)).astype(dtype)
    B = rng.standard_normal((rows, units) if transposed else (fan_in, units)).astype(dtype)
    out = np.empty((fan_in, units) if transposed else (rows, units), dtype)
    engine_code = ["blas", "blocked", "few_rows"].index(engine)
    with threadpoolctl.threadpool_limits(1):
        _layer_product(engine_code, transposed, A, B, out, 1)
        benchmark(_layer_product, engine_code, transposed, A, B, out, 100)
    expected = (A.T if transposed else A).astype(np.float64) @ B.astype(np.float64)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * max(rows, fan_in))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("engine", ELEMENTWISE_ENGINES)
@pytest.mark.parametrize("size", [1 << 16, 1 << 22])
def test_sigmoid(benchmark, size, engine, dtype):
    benchmark.group = f"sigmoid of {size:,} values, {dtype}"
    z = np.random.default_rng(0).standard_normal(size).astype(dtype) * 4
    out = np.empty_like(z)
    if engine == "fastnn":
        sigmoid(z, out)
        benchmark(sigmoid, z, out)
        np.testing.assert_allclose(out, reference.sigmoid(z), rtol=4 * np.finfo(dtype).eps, atol=0)
    elif engine == "torch":
        import torch

        got = _torch_one_thread(benchmark, torch.sigmoid, z)
        np.testing.assert_allclose(got, reference.sigmoid(z), rtol=8 * np.finfo(dtype).eps, atol=0)
    else:
        benchmark(reference.sigmoid, z)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("engine", ELEMENTWISE_ENGINES)
@pytest.mark.parametrize("size", [1 << 16, 1 << 22])
def test_tanh(benchmark, size, engine, dtype):
    # fastnn's tanh (fastmath.tanh_fast, the loop the tanh layers run) against np.tanh
    benchmark.group = f"tanh of {size:,} values, {dtype}"
    z = np.random.default_rng(0).standard_normal(size).astype(dtype) * 2
    out = np.empty_like(z)
    if engine == "fastnn":
        fastmath.apply(0, z, out)
        benchmark(fastmath.apply, 0, z, out)
        np.testing.assert_allclose(out, np.tanh(z), rtol=4 * np.finfo(dtype).eps, atol=0)
    elif engine == "torch":
        import torch

        got = _torch_one_thread(benchmark, torch.tanh, z)
        np.testing.assert_allclose(got, np.tanh(z), rtol=8 * np.finfo(dtype).eps, atol=0)
    else:
        benchmark(np.tanh, z, out)


@njit(cache=False)
def _keep_rows(Z, S, code):
    # the forward pass of a layer that keeps its slopes, row by row, as the training kernels run it
    fns = (np.int64(0), np.int64(0))
    for i in range(Z.shape[0]):
        activate_row_keep(Z[i], Z[i, :0], False, code, S[i], fns)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("engine", ["reference", "fastnn"])
@pytest.mark.parametrize("name", ["leaky_relu", "elu", "softplus", "gelu", "silu"])
def test_kept_activation_and_slope_1m(benchmark, name, engine, dtype):
    # f(z) and f'(z) of 1024 x 1024 values (fastmath's tanh, expm1, log1p and
    # normal distribution function rather than libm's) against the reference
    benchmark.group = f"{name} and its slope on 1M values, {dtype}"
    z = np.random.default_rng(0).standard_normal((1024, 1024)).astype(dtype) * 2
    code = ACTIVATION_CODES[name]
    if engine == "fastnn":
        Z, S = z.copy(), np.empty_like(z)
        _keep_rows(Z, S, code)
        benchmark(lambda: (np.copyto(Z, z), _keep_rows(Z, S, code)))
        a = reference.activate(z, name)
        np.testing.assert_allclose(S, reference.activation_derivative(a, name, z), rtol=1e-4, atol=1e-6)
    else:
        benchmark(lambda: reference.activation_derivative(reference.activate(z, name), name, z))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("engine", ["reference", "fastnn"])
def test_sigmoid_derivative_product_4m(benchmark, engine, dtype):
    benchmark.group = f"delta *= s (1 - s) on 4M values, {dtype}"
    rng = np.random.default_rng(0)
    s = rng.random(1 << 22).astype(dtype)
    delta = rng.standard_normal(1 << 22).astype(dtype)
    if engine == "fastnn":
        multiply_derivative(delta, s, SIGMOID)
        benchmark(multiply_derivative, delta, s, 0)
    else:
        benchmark(lambda: delta * reference.sigmoid_derivative(s))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("engine", ["reference", "fastnn"])
def test_loss_and_gradients_1024x64x4096x10(benchmark, engine, dtype):
    # workload B's gradient (no update), the kernel against the reference
    from fastnn import MLP

    benchmark.group = f"loss_and_gradients n=1024 64-4096-10 {dtype}"
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1024, 64)).astype(dtype)
    Y = rng.random((1024, 10)).astype(dtype)
    net = MLP([64, 4096, 10], bias=False, dtype=dtype, random_state=0)
    if engine == "fastnn":
        net.loss_and_gradients(X, Y)
        benchmark.pedantic(net.loss_and_gradients, args=(X, Y), rounds=5, iterations=1)
    else:
        weights = [w.copy() for w in net.weights]
        benchmark.pedantic(
            reference.loss_and_gradients, args=(X, Y, weights, None, "sigmoid", "sigmoid", "sse"),
            rounds=5, iterations=1,
        )
