"""pytest-benchmark suites of fastnn: run with ``python -m pytest benchmarks/``.

Files here are named ``bench_*.py``; this hook collects them (the test suite
under ``tests/`` does not run them). Compare engines within one group:
``--benchmark-group-by=group`` (the default) puts fastnn beside the reference.
"""

import pytest


def pytest_collect_file(file_path, parent):
    # files named on the command line are collected by pytest itself
    if parent.session.isinitpath(file_path):
        return None
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
