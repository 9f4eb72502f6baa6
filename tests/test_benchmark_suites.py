"""The pytest-benchmark suites under benchmarks/ still run (a smoke test).

Each benchmark asserts its own result (against the oracle or the other
engine) as well as timing it; here a representative subset runs once each
with timing disabled, so that a broken benchmark cannot go unnoticed.
"""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

SUBSET = (
    "crossover and (4-loops or 4-blas) and float64"
    " or sigmoid"
    " or (layer_product and 200x64-100)"
    " or (test_workload and (tutorial or A-) and not torch)"
    " or (test_fit and digits and adam and float64)"
    " or (test_digits_skorch and none)"
)


def test_benchmark_subset_runs():
    pytest.importorskip("pytest_benchmark")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "benchmarks"),
         "--benchmark-disable", "-k", SUBSET],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
