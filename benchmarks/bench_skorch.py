"""Fit time of fastnn's MLPClassifier against skorch training the same PyTorch network.

One group per variant of the digits workload of ``fastnn.skorch_bench``
(64-128-64-10, gelu then relu, Adam, batches of 200, 20 epochs, float32),
with dropout 0.2 / 0.1 and without, fastnn and skorch side by side:
``python -m pytest benchmarks/bench_skorch.py``. Each round is one ``fit``
on 75 % of the data after an untimed pause; the held-out accuracy of the
fitted model is stored in ``extra_info``. The suite is skipped when PyTorch
or skorch is missing (``pip install "fastnn[skorch]"``), and fastnn's
dropout case when its estimator has no ``dropout`` parameter.
``fastnn.skorch_bench.skorch_comparison`` measures the same table without
pytest-benchmark, on one more workload (``fastnn bench --sklearn`` uses it).
"""

import time
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from fastnn import skorch_bench  # noqa: E402

if skorch_bench.missing_message():
    pytest.skip(skorch_bench.missing_message(), allow_module_level=True)

import torch  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from fastnn.sklearn import MLPClassifier  # noqa: E402

DIGITS = next(w for w in skorch_bench.workloads(quick=True) if w.name == "digits")
X_TRAIN, X_TEST, Y_TRAIN, Y_TEST = train_test_split(DIGITS.X, DIGITS.y, test_size=0.25, random_state=0)


def _make(engine, rates):
    if engine == "fastnn":
        return skorch_bench.make_fastnn(DIGITS, rates)
    torch.manual_seed(0)  # initial weights, shuffles and dropout masks
    return skorch_bench.make_skorch(DIGITS, rates)


@pytest.mark.parametrize("variant", ["dropout", "none"])
@pytest.mark.parametrize("engine", ["fastnn", "skorch"])
def test_digits_skorch(benchmark, engine, variant):
    rates = DIGITS.dropout if variant == "dropout" else None
    if engine == "fastnn" and rates is not None and not skorch_bench.supports_dropout(MLPClassifier):
        pytest.skip("fastnn's MLPClassifier has no dropout parameter in this version")
    benchmark.group = f"digits n={X_TRAIN.shape[0]} {skorch_bench.EPOCHS} epochs dropout={rates}"

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # all epochs run, by design
            return _make(engine, rates).fit(X_TRAIN, Y_TRAIN)

    fit()  # compile or load fastnn's kernels, warm PyTorch up, outside the timed rounds
    # the untimed pause lets the previous fit's worker threads go idle
    model = benchmark.pedantic(
        fit, setup=lambda: time.sleep(skorch_bench.PAUSE_S), rounds=3, iterations=1, warmup_rounds=0
    )
    accuracy = float(np.mean(model.predict(X_TEST) == Y_TEST))
    benchmark.extra_info["accuracy"] = accuracy
    assert accuracy > 0.9
