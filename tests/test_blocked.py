"""The register-blocked products (``fastnn._kernels.blocked``): against NumPy
on blocks with every remainder of a register block's rows and columns and
inner dimensions across the chains' cuts; the same bits however ``C`` is cut
into tiles; non-finite values; the bits of OpenBLAS's Haswell kernels in
float64; which layers take them; and fits and predictions through them
against the reference and against BLAS's.
"""

import threadpoolctl
import numpy as np
import pytest

from conftest import DTYPES, assert_close
from fastnn import MLP
from fastnn import reference as ref
from fastnn import _runtime, _threads
from fastnn._kernels import blocked, codes, few_rows
from fastnn._kernels.blocked import ANY_ROWS, blocked_nn, blocked_tn, inner_blocks, takes_blocked
from fastnn._kernels.few_rows import with_loops
from fastnn._kernels.layout import NN_ROWS, build
from test_tiled import _block, assert_block

ROWS_24 = [1, 2, 3, 4, 5, 7, 8, 9]  # every remainder of four rows, one block and more


def _run(product, m, n, k, blocks, a, b, c, accumulate, dtype):
    # product on the blocks ((offset, ld) of a, b, c): C (+)= op(A) @ B, the rest of c untouched
    (a_off, lda), (b_off, ldb), (c_off, ldc) = blocks
    A = _block((a, a_off, lda), *((k, m) if product is blocked_tn else (m, k)))
    op_a = A.T if product is blocked_tn else A
    expected = op_a.astype(np.float64) @ _block((b, b_off, ldb), k, n).astype(np.float64)
    before = c.copy()
    if accumulate:
        expected = expected + _block((before, c_off, ldc), m, n)
    product(m, n, k, (a, a_off, lda), (b, b_off, ldb), (c, c_off, ldc), accumulate)
    assert_block(c, before, (c_off, ldc), m, n, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("product", [blocked_nn, blocked_tn])
@pytest.mark.parametrize("m", ROWS_24)
@pytest.mark.parametrize("accumulate", [False, True])
def test_every_remainder_of_a_block_matches_numpy_and_leaves_the_rest(dtype, product, m, accumulate, rng):
    width = blocked.VECTORS * blocked.VECTOR_BYTES // np.dtype(dtype).itemsize
    for n in (1, 7, width - 1, width, width + 1, 2 * width + 5):
        for k in (0, 1, 3, 17):
            blocks = (3, max(m, k) + 4), (5, n + 3), (2, n + 6)
            a, b, c = (rng.standard_normal(4000).astype(dtype) for _ in range(3))
            _run(product, m, n, k, blocks, a, b, c, accumulate, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("product", [blocked_nn, blocked_tn])
@pytest.mark.parametrize("k", [255, 256, 257, 300, 511, 512, 513, 700])
def test_long_inner_dimensions_are_cut_into_chains_and_still_match(dtype, product, k, rng):
    blocks = (1, k + 2 if product is blocked_nn else 9), (0, 30), (4, 31)
    a, b, c = (rng.standard_normal(30000).astype(dtype) for _ in range(3))
    _run(product, 6, 29, k, blocks, a, b, c, False, dtype)


def test_the_chains_follow_openblas_level3_cut():
    # K_BLOCK while twice that remains, then halves rounded up to K_ROUND, then the rest
    def chains(k):
        out, start = [], 0
        while start < k:
            out.append(inner_blocks(k, start))
            start += out[-1]
        return out

    assert chains(200) == [200] and chains(256) == [256]
    assert chains(300) == [152, 148]
    assert chains(1024) == [256, 256, 256, 256]
    assert chains(700) == [256, 224, 220]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("product", [blocked_nn, blocked_tn])
def test_any_cut_of_c_into_tiles_gives_the_same_bits(dtype, product, rng):
    # the tiled kernel multiplies blocks of rows and of columns: every
    # element has the same bits whichever tile computes it
    m, n, k = 23, 61, 300
    a = rng.standard_normal(m * k).astype(dtype)
    b = rng.standard_normal(k * n).astype(dtype)
    whole = np.zeros(m * n, dtype)
    lda = k if product is blocked_nn else m
    product(m, n, k, (a, 0, lda), (b, 0, n), (whole, 0, n), False)
    cut = np.zeros(m * n, dtype)
    for i0, i1 in ((0, 5), (5, 6), (6, 23)):
        for j0, j1 in ((0, 25), (25, 26), (26, 61)):
            a_off = i0 * k if product is blocked_nn else i0
            product(i1 - i0, j1 - j0, k, (a, a_off, lda), (b, j0, n), (cut, i0 * n + j0, n), False)
    np.testing.assert_array_equal(cut, whole)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_infinity_reach_the_results_they_belong_to(dtype):
    m, n, k = 6, 30, 9
    a = np.ones(m * k, dtype)
    b = np.ones(k * n, dtype)
    a[2 * k + 4] = np.nan  # row 2 of A
    b[5 * n + 27] = np.inf  # column 27 of B
    c = np.zeros(m * n, dtype)
    blocked_nn(m, n, k, (a, 0, k), (b, 0, n), (c, 0, n), False)
    C = c.reshape(m, n)
    assert np.isnan(C[2]).all()
    assert np.isposinf(np.delete(C[:, 27], 2)).all()
    rest = np.delete(np.delete(C, 2, axis=0), 27, axis=1)
    np.testing.assert_array_equal(rest, k)


def _blas_architecture():
    with threadpoolctl.threadpool_limits(1):
        return _threads._read_blas_architecture()


@pytest.mark.parametrize("product", [blocked_nn, blocked_tn])
@pytest.mark.parametrize("shape", [(200, 64, 100), (64, 200, 10), (8, 300, 16), (100, 1024, 30)])
def test_float64_products_have_the_bits_of_openblas_haswell_kernels(product, shape, rng):
    # each element a chain of fused multiply-adds in order, cut as OpenBLAS's
    # level-3 driver cuts the inner dimension: the same bits as its Haswell
    # kernels on one thread, where C has an even number of rows
    if _blas_architecture() != "haswell":
        pytest.skip("BLAS does not run OpenBLAS's Haswell kernels here")
    m, k, n = shape
    A = rng.standard_normal((k, m) if product is blocked_tn else (m, k))
    B = rng.standard_normal((k, n))
    c = np.zeros(m * n)
    product(m, n, k, (A.ravel(), 0, A.shape[1]), (B.ravel(), 0, n), (c, 0, n), False)
    with threadpoolctl.threadpool_limits(1):  # (BLAS's threads cut C into blocks with odd edges)
        expected = (A.T if product is blocked_tn else A) @ B
    np.testing.assert_array_equal(c.reshape(m, n), expected)


@pytest.mark.parametrize(
    "fan_in, fan_out, itemsize, architecture, wide, takes",
    [
        (64, 100, 8, "haswell", True, True),
        (64, 100, 8, "zen", True, True),
        (100, 10, 8, "haswell", True, True),  # float64: narrow layers too
        (100, 2, 8, "haswell", True, True),
        (100, 1, 8, "haswell", True, False),  # one unit: BLAS's gemv
        (100, 10, 4, "haswell", True, False),  # float32: most lanes of 48 columns masked
        (100, 32, 4, "haswell", True, True),
        (64, 1024, 8, "haswell", True, True),
        (64, 4096, 8, "haswell", True, True),  # wide, fed by a few inputs
        (128, 4096, 4, "haswell", True, True),
        (256, 4096, 8, "haswell", True, False),  # wide: the few-rows rule
        (784, 2048, 4, "haswell", True, False),
        (64, 100, 8, "skylakex", True, False),  # BLAS's AVX-512 kernels
        (64, 100, 8, None, True, False),
        (64, 100, 8, "haswell", False, False),  # no 512-bit vectors
    ],
)  # fmt: skip
def test_layers_take_the_blocked_products_where_they_were_measured_faster(fan_in, fan_out, itemsize, architecture, wide, takes):
    assert takes_blocked(fan_in, fan_out, itemsize, architecture, wide) == takes


def test_a_fit_gets_the_blocked_products_for_every_row_count():
    layout, _ = build([784, 4096, 100, 10], [codes.TANH, codes.TANH, codes.SIGMOID])
    got = with_loops(layout, np.float64, {3, 200}, "haswell", wide=True)
    fns = few_rows.address(np.float64, "blocked_nn"), few_rows.address(np.float64, "blocked_tn")
    assert got[0, NN_ROWS] == few_rows.FEW_ROWS  # 784-4096: the few-rows rule
    np.testing.assert_array_equal(got[1:, NN_ROWS:], [[ANY_ROWS, fns[0], ANY_ROWS, fns[1]]] * 2)
    assert with_loops(layout, np.float64, {200}, "haswell", wide=True)[1, NN_ROWS] == ANY_ROWS
    assert with_loops(layout, np.float64, {200}, "haswell", wide=False) is layout


@pytest.fixture
def blocked_or_blas(monkeypatch):
    # set(True): fits take the blocked products (any CPU runs them, if not
    # as fast), set(False): BLAS's
    monkeypatch.setattr(_runtime, "blas_architecture", lambda: "haswell")

    def set_wide(wide):
        monkeypatch.setitem(_runtime._vectors, "wide", wide)

    return set_wide


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [5, 64, 200])
def test_a_fit_through_the_blocked_products_matches_blas_and_the_reference(dtype, batch_size, blocked_or_blas, rng):
    X = rng.standard_normal((200, 20)).astype(dtype)
    Y = rng.random((200, 3)).astype(dtype)
    fits = {}
    for wide in (True, False):
        blocked_or_blas(wide)
        model = MLP([20, 48, 40, 3], activation="tanh", output_activation="sigmoid", dtype=dtype, random_state=1)
        model.fit(X, Y, epochs=3, batch_size=batch_size, learning_rate=0.05, optimizer="sgd", shuffle=False)
        fits[wide] = model
    for a, b in zip(fits[True].weights + fits[True].biases, fits[False].weights + fits[False].biases):
        assert_close(a, b, dtype)
    expected = ref.forward(X, fits[True].weights, fits[True].biases, ["tanh", "tanh"], "sigmoid")[-1]
    blocked_or_blas(True)
    assert_close(fits[True].predict(X), expected, dtype)


def test_an_estimator_through_the_blocked_products_stays_with_scikit_learn(blocked_or_blas):
    sklearn = pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier as Theirs

    from fastnn.sklearn import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X = X[:600] / 16
    blocked_or_blas(True)
    params = dict(hidden_layer_sizes=(50,), max_iter=10, random_state=0)
    with pytest.warns(sklearn.exceptions.ConvergenceWarning):
        ours = MLPClassifier(**params).fit(X, y[:600])
    with pytest.warns(sklearn.exceptions.ConvergenceWarning):
        theirs = Theirs(**params).fit(X, y[:600])
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


def test_predictions_of_any_number_of_rows_keep_a_bounded_set_of_layouts(blocked_or_blas, rng):
    # the blocked layout is the same for every count past few_rows.MOST_ROWS:
    # a model predicting batches of many sizes keeps one entry for all of them
    blocked_or_blas(True)
    model = MLP([20, 48, 3], activation="tanh", random_state=0)
    X = rng.standard_normal((300, 20))
    for rows in (2, 5, 17, 40, 41, 100, 299, 300):
        assert_close(model.predict(X[:rows]), ref.forward(X[:rows], model.weights, model.biases, ["tanh"], "sigmoid")[-1])
    kept = [key for key in model._workspace if isinstance(key, tuple) and key[0] == "predict"]
    assert sorted(k[1] for k in kept) == [2, 5, few_rows.MOST_ROWS + 1]
    assert model._workspace[("predict", few_rows.MOST_ROWS + 1)][0, NN_ROWS] == ANY_ROWS
