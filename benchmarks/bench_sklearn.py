"""Fit time of fastnn.sklearn's estimators against scikit-learn's.

One group per workload, solver and dtype, with scikit-learn and fastnn side
by side: ``python -m pytest benchmarks/bench_sklearn.py``. Each round is one
``fit`` with default settings except ``solver`` and ``random_state=0`` on
scikit-learn's digits and breast_cancer data and on ``make_regression`` /
``make_classification`` data (see ``fastnn.sklearn._workloads``). The
held-out score of the fitted model is stored in ``extra_info`` so that the
speed can be read beside the accuracy. ``fastnn.sklearn.sklearn_comparison``
measures the same table without pytest-benchmark (``fastnn bench`` uses it).
"""

import time
import warnings

import pytest

pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402

from fastnn import sklearn as fsk  # noqa: E402

WORKLOADS = {name: (kind, X, y) for name, kind, X, y in fsk._workloads(quick=False)}
CLASSES = {
    ("sklearn", "classifier"): SkClassifier,
    ("sklearn", "regressor"): SkRegressor,
    ("fastnn", "classifier"): fsk.MLPClassifier,
    ("fastnn", "regressor"): fsk.MLPRegressor,
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("engine", ["sklearn", "fastnn"])
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_fit(benchmark, workload, engine, solver, dtype):
    kind, X, y = WORKLOADS[workload]
    X_train, X_test, y_train, y_test = train_test_split(X.astype(dtype), y, random_state=0)
    cls = CLASSES[engine, kind]
    benchmark.group = f"{workload} n={X_train.shape[0]} solver={solver} {dtype}"

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return cls(solver=solver, random_state=0).fit(X_train, y_train)

    if engine == "fastnn":
        fit()  # compile or load the kernels outside the timed rounds
    # the untimed pause lets the previous fit's worker threads go idle
    model = benchmark.pedantic(
        fit, setup=lambda: time.sleep(fsk.SETTLE_S), rounds=3, iterations=1, warmup_rounds=0
    )
    benchmark.extra_info["score"] = float(model.score(X_test, y_test))
    benchmark.extra_info["n_iter"] = int(model.n_iter_)
