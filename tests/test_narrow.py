"""The loops of a narrow layer's products (``fastnn._kernels.narrow``) against NumPy's products.

Each loop runs on blocks at offsets, with leading dimensions wider than the
blocks, for every remainder of its groups of four rows and four units; the
elements outside the blocks must be left as they were. The tiled runtime's
training with these loops is compared with the reference in test_tiled.py.
"""

import numpy as np
import pytest

from conftest import DTYPES
from test_tiled import assert_block
from fastnn._kernels import narrow
from fastnn._kernels.blas import _block
from fastnn._kernels.narrow import narrow_back, narrow_nn, narrow_tn, takes_narrow, transpose

ROWS = [1, 3, 4, 6, 11]  # groups of four rows and every remainder
UNITS = [1, 2, 3, 4, 5, 10, 12]  # groups of four units and every remainder
WIDE = [1, 17, 64]


def _weights(rng, k, o, dtype):
    # W (k x o) inside a larger buffer at offset 2, and wt = W.T from transpose
    buf = rng.standard_normal(2 + k * o + 3).astype(dtype)
    W = buf[2 : 2 + k * o].reshape(k, o)
    wt = np.full(o * k, np.nan, dtype=dtype)
    transpose(buf, 2, k, o, wt)
    return W, wt


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, o", [(1, 1), (5, 3), (64, 10), (3, 12)])
def test_transpose_gives_the_transposed_weights(k, o, dtype, rng):
    W, wt = _weights(rng, k, o, dtype)
    np.testing.assert_array_equal(wt.reshape(o, k), W.T)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("o", UNITS)
@pytest.mark.parametrize("k", WIDE)
def test_narrow_nn_is_a_at_w_on_blocks_and_leaves_the_rest(rows, o, k, dtype, rng):
    W, wt = _weights(rng, k, o, dtype)
    a = rng.standard_normal(5 + rows * (k + 3)).astype(dtype)
    z = rng.standard_normal(3 + rows * (o + 2)).astype(dtype)
    before = z.copy()
    A = _block((a, 5, k + 3), rows, k)
    narrow_nn(rows, k, o, (a, 5, k + 3), wt, (z, 3, o + 2))
    assert_block(z, before, (3, o + 2), rows, o, A.astype(np.float64) @ W.astype(np.float64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("o", UNITS)
@pytest.mark.parametrize("k", WIDE)
@pytest.mark.parametrize("accumulate", [False, True])
def test_narrow_tn_is_the_transposed_gradient_and_leaves_the_rest(rows, o, k, accumulate, dtype, rng):
    a = rng.standard_normal(5 + rows * (k + 3)).astype(dtype)
    d = rng.standard_normal(1 + rows * (o + 1)).astype(dtype)
    g = rng.standard_normal(4 + o * k + 6).astype(dtype)
    before = g.copy()
    A, D = _block((a, 5, k + 3), rows, k), _block((d, 1, o + 1), rows, o)
    narrow_tn(rows, k, o, (a, 5, k + 3), (d, 1, o + 1), (g, 4), accumulate)
    expected = D.T.astype(np.float64) @ A.astype(np.float64)
    if accumulate:
        expected += before[4 : 4 + o * k].reshape(o, k)
    assert_block(g, before, (4, k), o, k, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("o", UNITS)
@pytest.mark.parametrize("k", WIDE)
def test_narrow_back_is_d_at_w_transposed_on_blocks_and_leaves_the_rest(rows, o, k, dtype, rng):
    W, wt = _weights(rng, k, o, dtype)
    d = rng.standard_normal(1 + rows * (o + 1)).astype(dtype)
    s = rng.standard_normal(2 + rows * (k + 4)).astype(dtype)
    before = s.copy()
    D = _block((d, 1, o + 1), rows, o)
    narrow_back(rows, k, o, (d, 1, o + 1), wt, (s, 2, k + 4))
    assert_block(s, before, (2, k + 4), rows, k, D.astype(np.float64) @ W.T.astype(np.float64), dtype)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_value_that_is_not_finite_reaches_the_results_it_belongs_to(bad, rng):
    # the kernels' divergence checks rely on NaN and infinity propagating as
    # through BLAS (no fast-math assumptions beyond reassociation)
    rows, k, o = 6, 40, 5
    W, wt = _weights(rng, k, o, np.float64)
    a = rng.standard_normal(rows * k)
    a[2 * k + 7] = bad  # row 2
    z = np.zeros(rows * o)
    narrow_nn(rows, k, o, (a, 0, k), wt, (z, 0, o))
    Z = z.reshape(rows, o)
    assert not np.isfinite(Z[2]).any() and np.isfinite(np.delete(Z, 2, axis=0)).all()
    d = rng.standard_normal(rows * o)
    g = np.zeros(o * k)
    narrow_tn(rows, k, o, (a, 0, k), (d, 0, o), (g, 0), False)
    G = g.reshape(o, k)
    assert not np.isfinite(G[:, 7]).any() and np.isfinite(np.delete(G, 7, axis=1)).all()
    d[3 * o + 1] = bad  # row 3
    s = np.zeros(rows * k)
    narrow_back(rows, k, o, (d, 0, o), wt, (s, 0, k))
    S = s.reshape(rows, k)
    assert not np.isfinite(S[3]).any() and np.isfinite(np.delete(S, 3, axis=0)).all()


def test_takes_narrow_covers_the_narrow_layers_fed_by_wide_ones():
    assert takes_narrow(1024, 10, 256) and takes_narrow(64, 2, 8) and takes_narrow(4096, narrow.NARROW_UNITS, 64)
    assert not takes_narrow(1024, 1, 256)  # one unit
    assert not takes_narrow(1024, narrow.NARROW_UNITS + 1, 256)
    assert not takes_narrow(16, 10, 256)  # too short to vectorise along
    assert not takes_narrow(4096, 10, 4)  # too few rows to pay for the transpositions
