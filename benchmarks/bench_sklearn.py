"""Fit time of fastnn.sklearn's estimators against scikit-learn's.

One group per workload, solver and dtype, with scikit-learn and fastnn side
by side: ``python -m pytest benchmarks/bench_sklearn.py``. Each round is one
``fit`` with default settings except ``solver`` and ``random_state=0`` on
scikit-learn's digits and breast_cancer data and on ``make_regression`` /
``make_classification`` data (see ``fastnn.sklearn._workloads``). The
held-out score of the fitted model is stored in ``extra_info`` so that the
speed can be read beside the accuracy. ``fastnn.sklearn.sklearn_comparison``
measures the same table without pytest-benchmark (``fastnn bench`` uses it).
``test_partial_fit_stream`` and ``test_predict_rows`` time the calls of a
stream of small batches: ``partial_fit`` and ``predict`` of a few rows.
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


@pytest.mark.parametrize("rows", [1, 10, 50, 200])
@pytest.mark.parametrize("engine", ["sklearn", "fastnn"])
def test_partial_fit_stream(benchmark, engine, rows):
    """One pass of ``partial_fit`` calls of ``rows`` rows each over digits
    (its training split): a stream of small batches, where each call's own
    cost (the input checks, the setup of the epoch) counts as much as the
    training."""
    kind, X, y = WORKLOADS["digits"]
    X_train, _, y_train, _ = train_test_split(X, y, random_state=0)
    cls = CLASSES[engine, kind]
    benchmark.group = f"digits partial_fit stream, {rows} rows a call"
    starts = range(0, X_train.shape[0] - rows + 1, rows)
    model = cls(random_state=0).partial_fit(X_train[:rows], y_train[:rows], classes=sorted(set(y)))

    def stream():
        for start in starts:
            model.partial_fit(X_train[start : start + rows], y_train[start : start + rows])

    stream()  # compile or load the kernels, warm the caches
    benchmark.pedantic(stream, setup=lambda: time.sleep(fsk.SETTLE_S), rounds=5, iterations=1)
    benchmark.extra_info["calls"] = len(starts)


@pytest.mark.parametrize("rows", [1, 10, 200])
@pytest.mark.parametrize("engine", ["sklearn", "fastnn"])
def test_predict_rows(benchmark, engine, rows):
    """``predict`` of ``rows`` rows by a model fitted on digits: for a few rows,
    the call's own cost."""
    kind, X, y = WORKLOADS["digits"]
    X_train, X_test, y_train, _ = train_test_split(X, y, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = CLASSES[engine, kind](random_state=0, max_iter=20).fit(X_train, y_train)
    benchmark.group = f"digits predict, {rows} rows"
    model.predict(X_test[:rows])
    benchmark(model.predict, X_test[:rows])
