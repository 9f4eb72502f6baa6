"""Shared helpers: the tutorial data and the oracle tolerances of DESIGN.md."""

import os

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


# ---------------------------------------------------------------------------
# Running the suite with NUMBA_DISABLE_JIT=1 (kernels executed as Python, for
# line coverage of the kernels). Tests that inspect Numba's compiled
# dispatchers (their cache, their signatures) are marked ``requires_jit`` and
# skipped there; nothing changes in a normal run.
JIT_DISABLED = os.environ.get("NUMBA_DISABLE_JIT", "0").strip() not in ("", "0")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires_jit: needs Numba's compiled dispatchers (skipped under NUMBA_DISABLE_JIT=1)"
    )


def pytest_collection_modifyitems(config, items):
    if not JIT_DISABLED:
        return
    skip = pytest.mark.skip(reason="inspects compiled Numba dispatchers; NUMBA_DISABLE_JIT=1 runs kernels as Python")
    for item in items:
        if item.get_closest_marker("requires_jit") is not None:
            item.add_marker(skip)
