"""fastnn's activations in the scikit-learn estimators: names, tuples, errors.

At the default activations every number is scikit-learn's (test_sklearn);
these tests check what fastnn adds: the kernels' activations beyond
scikit-learn's four, and a tuple with one per hidden layer.
"""

import numpy as np
import pytest

pytest.importorskip("sklearn")

import scipy.sparse  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from fastnn import reference as ref  # noqa: E402
from fastnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data(rng, n=60, d=5):
    X = rng.standard_normal((n, d))
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 > 0.3).astype(int)
    return X, y


def test_a_tuple_of_one_name_trains_as_the_name(rng):
    X, y = _data(rng)
    kw = dict(hidden_layer_sizes=(7, 6), max_iter=15, random_state=0, solver="adam")
    a = MLPClassifier(activation="tanh", **kw).fit(X, y)
    b = MLPClassifier(activation=("tanh", "tanh"), **kw).fit(X, y)
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(p, q)
    assert a.loss_curve_ == b.loss_curve_


@pytest.mark.parametrize("activation", ["gelu", ("silu", "leaky_relu"), ("elu", "softplus")])
def test_lbfgs_loss_is_the_reference_loss_at_the_solution(activation, rng):
    X, y = _data(rng)
    clf = MLPClassifier(hidden_layer_sizes=(8, 5) if isinstance(activation, tuple) else (8,),
                        activation=activation, solver="lbfgs", max_iter=30, alpha=0.01, random_state=1)  # fmt: skip
    clf.fit(X, y)
    Y = y.reshape(-1, 1).astype(float)
    value, _, _ = ref.loss_and_gradients(
        X, Y, clf.coefs_, clf.intercepts_, list(activation) if isinstance(activation, tuple) else activation,
        "sigmoid", "log_loss", alpha=0.01,
    )  # fmt: skip
    np.testing.assert_allclose(clf.loss_, value, rtol=1e-12)
    proba = ref.forward(X, clf.coefs_, clf.intercepts_, activation if isinstance(activation, str)
                        else list(activation), "sigmoid")[-1][:, 0]  # fmt: skip
    np.testing.assert_allclose(clf.predict_proba(X)[:, 1], proba, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sgd_epochs_match_reference_gradient_descent(dtype, rng):
    # full-batch sgd without momentum is plain gradient descent: compare the
    # kernels' epochs with the reference's, from the same starting weights
    X = rng.standard_normal((40, 4)).astype(dtype)
    y = (X[:, 0] - X[:, 1] ** 2).astype(dtype)
    kw = dict(hidden_layer_sizes=(9, 6), activation=("gelu", "silu"), solver="sgd", batch_size=40,
              shuffle=False, momentum=0.0, learning_rate_init=0.05, alpha=0.001, random_state=2)  # fmt: skip
    reg = MLPRegressor(max_iter=1, **kw)
    with pytest.warns(Warning):
        reg.fit(X, y)
    weights = [w.astype(np.float64) for w in reg.coefs_]
    biases = [b.astype(np.float64) for b in reg.intercepts_]
    reg.set_params(warm_start=True, max_iter=4)
    with pytest.warns(Warning):
        reg.fit(X, y)
    expected = []
    for _ in range(4):
        value, wg, bg = ref.loss_and_gradients(
            X.astype(np.float64), y.reshape(-1, 1).astype(np.float64), weights, biases,
            ["gelu", "silu"], "identity", "squared_error", alpha=0.001,
        )  # fmt: skip
        expected.append(value)
        for p, g in zip(weights + biases, wg + bg):
            ref.gd_update(p, g, 0.05)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(reg.loss_curve_[1:], expected, rtol=tol)
    for got, want in zip(reg.coefs_ + reg.intercepts_, weights + biases):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "activation,words",
    [
        ("swish", ["activation", "swish"]),
        (("relu",), ["1 entries", "2 hidden layers"]),
        (("relu", "mish"), ["activation[1]", "mish"]),
    ],
)
def test_bad_activations_fail_before_any_work(activation, words, rng):
    X, y = _data(rng)
    clf = MLPClassifier(hidden_layer_sizes=(6, 4), max_iter=5, random_state=0).fit(X, y)
    before = [c.copy() for c in clf.coefs_]
    clf.set_params(activation=activation, warm_start=True)
    with pytest.raises(ValueError) as err:
        clf.fit(X, y)
    for word in words:
        assert word in str(err.value)
    for c, b in zip(clf.coefs_, before):
        np.testing.assert_array_equal(c, b)


def test_sparse_input_with_a_fastnn_activation_is_a_clear_error(rng):
    X, y = _data(rng)
    with pytest.raises(ValueError, match="kernels only"):
        MLPClassifier(activation="gelu", max_iter=3).fit(scipy.sparse.csr_matrix(X), y)
    dense = MLPClassifier(activation="gelu", max_iter=3, random_state=0)
    with pytest.warns(Warning):
        dense.fit(X, y)
    with pytest.raises(ValueError, match="kernels only"):
        dense.predict(scipy.sparse.csr_matrix(X))


def test_params_clone_and_grid_search_carry_tuples(rng):
    X, y = _data(rng, n=90)
    clf = MLPClassifier(hidden_layer_sizes=(6, 5), activation=("gelu", "tanh"), max_iter=5)
    assert clone(clf).get_params()["activation"] == ("gelu", "tanh")
    grid = GridSearchCV(
        MLPClassifier(hidden_layer_sizes=(6, 5), max_iter=20, random_state=0),
        {"activation": ["relu", ("gelu", "silu")]}, cv=2,
    )  # fmt: skip
    with pytest.warns(Warning):
        grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 2
    assert grid.best_params_["activation"] in ("relu", ("gelu", "silu"))
