"""fastnn.skorch_bench: the PyTorch network of an estimator, the comparison with skorch, and
the line that names what to install when PyTorch or skorch is missing.

The comparisons run on a tiny problem with one thread per library, so that
the file takes seconds; the real workloads run in ``fastnn bench --sklearn``
and ``benchmarks/bench_skorch.py``.
"""

import importlib.util
import json
import math
import sys

import numpy as np
import pytest

from fastnn import bench, skorch_bench
from fastnn._optional import MissingDependency
from fastnn.cli import main

pytest.importorskip("sklearn")


def _tiny(activation=("gelu", "relu"), dropout=(0.2, 0.1), hidden=(8, 4)):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, n_classes=3, random_state=0)
    return skorch_bench.Workload("tiny", X.astype(np.float32), y.astype(np.int64), hidden, activation, dropout)


def _compare(**kwargs):
    return skorch_bench.skorch_comparison(
        quick=True, repeats=1, threads=(1,), epochs=2, pause_s=0.0, **{"workloads": [_tiny()], **kwargs}
    )


def _check_measured(row):
    assert row["skipped"] is None
    for key in ("fastnn_s", "skorch_s", "speedup"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["speedup"] == pytest.approx(row["skorch_s"] / row["fastnn_s"])
    for key in ("fastnn_acc", "skorch_acc"):
        assert 0.0 <= row[key] <= 1.0, key
    assert row["torch_threads"] == 1 and row["numba_threads"] == 1


# ---------------------------------------------------------------- the PyTorch network
def test_torch_module_has_the_estimators_layers():
    torch = pytest.importorskip("torch")
    net = skorch_bench.build_torch_module(64, (128, 64), 10, ("gelu", "relu"), (0.2, 0.1))
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "GELU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    linear = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(64, 128), (128, 64), (64, 10)]
    assert net[1].approximate == "none"  # the exact GELU, as fastnn's
    assert [m.p for m in net if isinstance(m, torch.nn.Dropout)] == [0.2, 0.1]
    for m in linear:  # scikit-learn's initialisation rule, biases included
        bound = math.sqrt(6.0 / (m.in_features + m.out_features))
        weight, bias = m.weight.detach().abs().max().item(), m.bias.detach().abs().max().item()
        assert 0.9 * bound < weight <= bound and bias <= bound


def test_torch_module_dropout_one_rate_or_none():
    torch = pytest.importorskip("torch")
    net = skorch_bench.build_torch_module(40, (256, 128), 4, ("silu", "leaky_relu"), 0.2)
    assert [type(m).__name__ for m in net] == ["Linear", "SiLU", "Dropout", "Linear", "LeakyReLU", "Dropout",
                                               "Linear"]
    assert net[4].negative_slope == 0.01
    plain = skorch_bench.build_torch_module(40, (256, 128), 4, "tanh")
    assert [type(m).__name__ for m in plain] == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain)
    with pytest.raises(ValueError, match="dropout has 3 entries for 2 hidden layers"):
        skorch_bench.build_torch_module(4, (3, 3), 2, "relu", (0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="activation must be among"):
        skorch_bench.build_torch_module(4, (3,), 2, "swish")


@pytest.mark.parametrize("name", sorted(skorch_bench.TORCH_ACTIVATIONS))
def test_torch_activation_is_fastnns(name):
    torch = pytest.importorskip("torch")
    from fastnn import reference

    z = np.linspace(-30.0, 30.0, 601)
    layer = getattr(torch.nn, skorch_bench.TORCH_ACTIVATIONS[name])()
    np.testing.assert_allclose(layer(torch.from_numpy(z)).numpy(), reference.activate(z, name),
                               rtol=1e-9, atol=1e-12)


def _sklearn_initial_weights(layer_units, random_state=0):
    # scikit-learn's _initialize: per layer, the weights then the biases, uniform in
    # +-sqrt(6 / (fan_in + fan_out)), from check_random_state(random_state)
    rng = np.random.RandomState(random_state)
    out = []
    for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        out.append((rng.uniform(-bound, bound, (fan_in, fan_out)), rng.uniform(-bound, bound, fan_out)))
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_skorch_net_trains_as_fastnn(alpha):
    # from the same initial weights, without shuffling: the same weights after 3 epochs
    # of 2 batches (200 rows, then 25), the L2 term too, batch by batch. Differences are
    # float32 rounding and Adam's epsilon (up to 1e-5 here); a fixed weight_decay of
    # alpha / 200 instead of alpha / n would leave 2e-3 to 5e-3 with alpha = 0.5
    torch = pytest.importorskip("torch")
    pytest.importorskip("skorch")
    w = _tiny()
    X, y = w.X[:225], w.y[:225]
    fastnn = skorch_bench.make_fastnn(w, epochs=3, alpha=alpha).set_params(shuffle=False)
    with pytest.warns(Warning):  # ConvergenceWarning: max_iter reached
        fastnn.fit(X, y)
    net = skorch_bench.make_skorch(w, epochs=3, alpha=alpha).set_params(
        iterator_train__shuffle=False, warm_start=True
    )
    net.initialize()
    linear = [m for m in net.module_ if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer, (W, b) in zip(linear, _sklearn_initial_weights([6, 8, 4, 3])):
            layer.weight.copy_(torch.from_numpy(W.T))
            layer.bias.copy_(torch.from_numpy(b))
    net.fit(X, y)
    for layer, W, b in zip(linear, fastnn.coefs_, fastnn.intercepts_):
        np.testing.assert_allclose(layer.weight.detach().numpy().T, W, rtol=0, atol=2e-5)
        np.testing.assert_allclose(layer.bias.detach().numpy(), b, rtol=0, atol=2e-5)


# ---------------------------------------------------------------- the comparison
def test_comparison_on_a_tiny_workload():
    pytest.importorskip("skorch")
    rows = _compare()
    assert [(r["workload"], r["variant"], r["threads"]) for r in rows] == [("tiny", "dropout", 1),
                                                                         ("tiny", "none", 1)]
    assert rows[0]["dropout"] == [0.2, 0.1] and rows[1]["dropout"] is None
    assert rows[1]["n_train"] == 225 and rows[1]["n_test"] == 75 and rows[1]["epochs"] == 2
    _check_measured(rows[1])
    if skorch_bench.supports_dropout(__import__("fastnn.sklearn").sklearn.MLPClassifier):
        _check_measured(rows[0])
    else:
        assert rows[0]["skipped"] == "MLPClassifier has no dropout parameter"
    json.dumps(rows)  # what `fastnn bench --json` writes
    text = skorch_bench.format_skorch_comparison(rows)
    assert text.splitlines()[0].split()[:3] == ["threads", "workload", "variant"]
    assert "tiny" in text and "dropout 0.2/0.1" in text


def test_estimator_without_dropout_runs_the_no_dropout_variant_only():
    pytest.importorskip("skorch")
    from sklearn.neural_network import MLPClassifier

    # scikit-learn's own estimator has no dropout, and only its own activations
    rows = _compare(workloads=[_tiny(activation="relu")], estimator=MLPClassifier)
    assert rows[0]["variant"] == "dropout" and rows[0]["skipped"] == "MLPClassifier has no dropout parameter"
    assert "fastnn_s" not in rows[0]
    _check_measured(rows[1])
    lines = skorch_bench.format_skorch_comparison(rows).splitlines()
    assert "skipped: MLPClassifier has no dropout parameter" in lines[1]
    assert lines[-1].startswith("dropout variants not run") and "no-dropout variants only" in lines[-1]
    with pytest.raises(ValueError, match="no dropout parameter"):
        skorch_bench.make_fastnn(_tiny(), dropout=0.2, estimator=MLPClassifier)


def test_estimator_with_dropout_gets_the_rates():
    pytest.importorskip("skorch")
    from fastnn.sklearn import MLPClassifier

    seen = []

    class WithDropout(MLPClassifier):
        def __init__(self, dropout=0.0, **kwargs):
            super().__init__(**kwargs)
            self.dropout = dropout

        def fit(self, X, y):
            seen.append(self.dropout)
            return super().fit(X, y)

    assert skorch_bench.supports_dropout(WithDropout)
    rows = _compare(estimator=WithDropout)
    _check_measured(rows[0])
    _check_measured(rows[1])
    assert seen == [(0.2, 0.1), (0.2, 0.1), 0.0, 0.0]  # warm-up and timed fit of each variant


# ---------------------------------------------------------------- PyTorch or skorch missing
@pytest.mark.parametrize("blocked, named", [(("torch",), "torch"), (("skorch",), "skorch"),
                                            (("torch", "skorch"), "torch and skorch")])
def test_missing_packages_are_named_with_the_extra(monkeypatch, blocked, named):
    for other in ("torch", "skorch"):
        if other not in blocked and importlib.util.find_spec(other) is None:
            pytest.skip(f"needs {other} installed, to block the others only")
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)
    message = f'the skorch comparison needs {named}: pip install "fastnn[skorch]"'
    assert skorch_bench.missing_message() == message
    with pytest.raises(MissingDependency) as info:
        skorch_bench.skorch_comparison(workloads=[_tiny()])
    assert str(info.value) == message and info.value.name == blocked[0]


def _no_benchmarks(monkeypatch):
    # the main tables and the scikit-learn comparison are tested elsewhere
    monkeypatch.setattr(bench, "run_benchmarks", lambda **kwargs: {})
    monkeypatch.setattr(bench, "format_report", lambda report: "")
    monkeypatch.setattr(bench, "_sklearn_section", lambda *args: [])


def test_bench_sklearn_without_skorch_prints_one_line(monkeypatch, capsys, tmp_path):
    _no_benchmarks(monkeypatch)
    monkeypatch.setitem(sys.modules, "skorch", None)
    path = tmp_path / "bench.json"
    assert main(["bench", "--sklearn", "--no-progress", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    # (torch may be missing too, where the test extra is installed alone)
    named = "skorch" if importlib.util.find_spec("torch") is not None else "torch and skorch"
    line = f'the skorch comparison needs {named}: pip install "fastnn[skorch]"'
    assert out.splitlines()[:2] == ["", line]
    assert json.loads(path.read_text())["skorch"] == {"skipped": line}


def test_bench_sklearn_prints_the_skorch_table(monkeypatch, capsys, tmp_path):
    pytest.importorskip("skorch")
    _no_benchmarks(monkeypatch)
    monkeypatch.setattr(skorch_bench, "workloads", lambda quick: [_tiny(hidden=(5, 3))])
    monkeypatch.setattr(skorch_bench, "PAUSE_S", 0.0)
    monkeypatch.setattr(skorch_bench, "QUICK_EPOCHS", 1)
    path = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--sklearn", "--threads", "1", "--repeats", "1", "--no-progress", "--json", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "skorch's NeuralNetClassifier" in out and "CPU: " in out and "torch " in out
    saved = json.loads(path.read_text())["skorch"]
    assert saved["environment"]["versions"]["skorch"]
    assert [(r["variant"], r["threads"], r["epochs"]) for r in saved["rows"]] == [("dropout", 1, 1), ("none", 1, 1)]
    _check_measured(saved["rows"][1])
