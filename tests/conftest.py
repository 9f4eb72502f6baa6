"""Shared helpers: the tutorial data and the oracle tolerances of DESIGN.md."""

import numpy as np
import pytest

TUTORIAL_X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.float64)
TUTORIAL_Y = np.array([[0], [1], [1], [0]], dtype=np.float64)

RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
DTYPES = [np.float64, np.float32]


def assert_close(actual, expected, dtype=None, scale=None):
    """Compare to the oracle: 1e-12 (float64) or 1e-5 (float32), relative to
    the magnitude of the expected values (so that entries near zero are
    compared on the scale of the whole array, not on their own)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    dt = np.dtype(dtype if dtype is not None else expected.dtype)
    rtol = RTOL[dt]
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
