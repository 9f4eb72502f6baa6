"""tanh, expm1, log1p, erfc and the normal distribution function of ``fastnn._kernels.fastmath``.

Each function is checked against NumPy's or SciPy's on both sides of the
point where it switches formulas, at its edges (signed zeros, infinities,
NaN, tiny and large arguments), in both dtypes, within a few ulp of the
result.
"""

import numpy as np
import pytest
from scipy.special import erfc, ndtr

from fastnn._kernels import fastmath as fm

from conftest import DTYPES

TANH, EXPM1, LOG1P, ERFC, CDF = range(5)  # fm.apply's codes


def _apply(code, x):
    return fm.apply(code, x, np.empty_like(x))


def _around(point, dtype, width=0.05, n=2001):
    # points on both sides of a switch, and the two floats next to it
    p = dtype(point)
    near = [np.nextafter(p, dtype(-np.inf)), p, np.nextafter(p, dtype(np.inf))]
    return np.concatenate([np.linspace(point - width, point + width, n), near]).astype(dtype)


def _ulps(got, expected, dtype):
    spacing = np.spacing(np.abs(expected).astype(dtype)).astype(np.float64)
    return np.abs(got.astype(np.float64) - expected) / spacing


MAX_ULP = {np.float64: 3, np.float32: 4}


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_within_a_few_ulp(dtype, rng):
    x = np.concatenate([np.linspace(-25.0, 25.0, 20001), rng.normal(0.0, 1.0, 20000),
                        rng.normal(0.0, 1e-3, 2000), _around(fm.TANH_SMALL, dtype),
                        [1e-30, 5e-39]]).astype(dtype)
    x = np.concatenate([x, -x])
    got = _apply(TANH, x)
    assert got.dtype == dtype
    assert _ulps(got, np.tanh(x.astype(np.float64)), dtype).max() <= MAX_ULP[dtype]
    assert np.all(np.abs(got) <= 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_expm1_within_a_few_ulp(dtype, rng):
    x = np.concatenate([-np.linspace(0.0, 80.0, 20001), -rng.exponential(1.0, 20000),
                        -rng.exponential(1e-4, 2000), _around(-fm.EXPM1_SMALL, dtype), [-1e-30, -5e-39]])
    x = x.astype(dtype)
    got = _apply(EXPM1, x)
    assert got.dtype == dtype
    assert _ulps(got, np.expm1(x.astype(np.float64)), dtype).max() <= MAX_ULP[dtype]
    assert np.all((got <= 0) & (got >= -1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_log1p_of_the_unit_interval_within_a_few_ulp(dtype, rng):
    x = np.concatenate([np.linspace(0.0, 1.0, 20001), rng.random(20000), rng.random(2000) * 1e-6,
                        [1e-30, 5e-39, 1.0]]).astype(dtype)
    got = _apply(LOG1P, x)
    assert got.dtype == dtype
    assert _ulps(got, np.log1p(x.astype(np.float64)), dtype).max() <= MAX_ULP[dtype]


def _check_tail(got, expected, q, dtype, accurate, per_q):
    # a few ulp, and up to per_q * q more from the rounding of the square q
    # in exp(-q) (ours and SciPy's), where SciPy is accurate (results above
    # `accurate`); relative 1e-11 (float64) or 1e-5 (float32) further out,
    # where SciPy's own error grows as fast (against mpmath: ndtr is 56 ulp
    # off above z = -6, fastnn's normal_cdf 12; 1730 against 446 ulp down to
    # z = -38); 0 where the result underflows
    assert got.dtype == dtype
    normal = expected > np.finfo(dtype).tiny * 4
    near = normal & (expected > accurate)
    bound = 12 + per_q * q[near]
    assert np.all(_ulps(got[near], expected[near], dtype) <= bound)
    far = normal & ~near
    assert np.all(np.abs(got[far] - expected[far]) <= (1e-11 if dtype == np.float64 else 1e-5) * expected[far])
    assert np.all(got[~normal] <= np.finfo(dtype).tiny * 8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_erfc_within_a_few_ulp_to_its_underflow(dtype, rng):
    large = fm.ERF_LARGE_64 if dtype == np.float64 else fm.ERF_LARGE_32
    x = np.concatenate([np.linspace(0.0, large + 1.0, 40001), np.abs(rng.normal(0.0, 2.0, 20000)),
                        _around(fm.ERF_SMALL, dtype), _around(large, dtype), [1e-30, 5e-39]]).astype(dtype)
    got = _apply(ERFC, x)
    x64 = x.astype(np.float64)
    _check_tail(got, erfc(x64), x64**2, dtype, 1e-25, 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_normal_cdf_within_a_few_ulp_in_both_tails(dtype, rng):
    x = np.concatenate([np.linspace(-38.0, 10.0, 40001), rng.normal(0.0, 3.0, 20000),
                        _around(fm.ERF_SMALL * np.sqrt(2.0), dtype), _around(0.0, dtype)]).astype(dtype)
    x = np.concatenate([x, -x])
    got = _apply(CDF, x)
    x64 = x.astype(np.float64)
    _check_tail(got, ndtr(x64), x64**2 / 2, dtype, 1e-10, 4)
    assert np.all((got >= 0) & (got <= 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("code, x, expected", [
    (TANH, [0.0, -0.0, np.inf, -np.inf, 1e4, -1e4], [0.0, -0.0, 1.0, -1.0, 1.0, -1.0]),
    (EXPM1, [0.0, -np.inf, -1e4, -100.0], [0.0, -1.0, -1.0, -1.0]),
    (LOG1P, [0.0, 1.0], [0.0, np.log1p(1.0)]),
    (ERFC, [0.0, np.inf, 1e4], [1.0, 0.0, 0.0]),
    (CDF, [0.0, np.inf, -np.inf, 1e4, -1e4], [0.5, 1.0, 0.0, 1.0, 0.0]),
])
def test_edges_and_nan(dtype, code, x, expected):
    got = _apply(code, np.array(x + [np.nan], dtype=dtype))
    np.testing.assert_allclose(got[:-1], np.array(expected, dtype=dtype), rtol=np.finfo(dtype).eps)
    assert np.array_equal(np.signbit(got[:-1]), np.signbit(np.array(expected)))
    assert np.isnan(got[-1])
