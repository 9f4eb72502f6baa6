"""The feature tests again with NUMBA_DISABLE_JIT=1: the kernels run as Python.

Activations, dropout (its counter-based masks and the stand-ins of its
uint64 mixing), custom activations (looked up by key instead of called by
address), class_weight, callbacks and the validation loss run through the
same kernel code as plain Python here, so that a path that only works
compiled, or only as Python, fails in CI. (Coverage runs the whole suite
this way.)
"""

import os
import subprocess
import sys

import pytest

from conftest import JIT_DISABLED

FILES = [
    "tests/test_activations.py",
    "tests/test_dropout.py",
    "tests/test_sklearn_activations.py",
    "tests/test_sklearn_features.py",
]


@pytest.mark.skipif(JIT_DISABLED, reason="the whole run is already without JIT")
def test_feature_tests_pass_as_python():
    pytest.importorskip("sklearn")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *FILES],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout.splitlines()[-1]
