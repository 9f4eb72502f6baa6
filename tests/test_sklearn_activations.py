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
    _assert_refused_before_any_work(dict(activation=activation), ValueError, words, rng)


def _assert_refused_before_any_work(params, exc, words, rng):
    # a warm-started fit with `params` raises `exc` naming `words`, and the
    # coefficients of the fit before it are untouched
    X, y = _data(rng)
    clf = MLPClassifier(hidden_layer_sizes=(6, 4), max_iter=5, random_state=0).fit(X, y)
    before = [c.copy() for c in clf.coefs_]
    clf.set_params(warm_start=True, **params)
    with pytest.raises(exc) as err:
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


# ---------------------------------------------------------------- dropout
def test_dropout_fit_is_seeded_and_zero_dropout_is_the_plain_fit(rng):
    X, y = _data(rng, n=120)
    kw = dict(hidden_layer_sizes=(12, 8), max_iter=6, random_state=0, activation=("gelu", "relu"))
    a = MLPClassifier(dropout=(0.3, 0.1), **kw).fit(X, y)
    b = MLPClassifier(dropout=(0.3, 0.1), **kw).fit(X, y)
    plain = MLPClassifier(**kw).fit(X, y)
    zero = MLPClassifier(dropout=0.0, **kw).fit(X, y)
    for p, q, r, s in zip(a.coefs_, b.coefs_, plain.coefs_, zero.coefs_):
        np.testing.assert_array_equal(p, q)
        np.testing.assert_array_equal(r, s)
    assert a.loss_curve_ != plain.loss_curve_
    # prediction does not drop: the same weights predict the same with or without it
    plain.coefs_, plain.intercepts_ = a.coefs_, a.intercepts_
    np.testing.assert_array_equal(plain.predict_proba(X), a.predict_proba(X))


def test_dropout_epochs_match_reference_gradient_descent(rng):
    # full-batch sgd without momentum or shuffling: the reference's steps,
    # with masks from the seed drawn after the initial weights
    X = rng.standard_normal((50, 4))
    y = X[:, 0] - X[:, 1] ** 2
    rates = [0.25, 0.5]
    reg = MLPRegressor(hidden_layer_sizes=(9, 6), activation=("silu", "tanh"), solver="sgd", batch_size=50,
                       shuffle=False, momentum=0.0, learning_rate_init=0.05, alpha=1e-3, random_state=4,
                       dropout=tuple(rates), max_iter=3)  # fmt: skip
    replay = np.random.RandomState(4)
    weights, biases = [], []
    for fan_in, fan_out in [(4, 9), (9, 6), (6, 1)]:
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        weights.append(replay.uniform(-bound, bound, (fan_in, fan_out)))
        biases.append(replay.uniform(-bound, bound, fan_out))
    seed = int(replay.randint(0, 1 << 53, dtype=np.int64))
    with pytest.warns(Warning):
        reg.fit(X, y)
    expected = []
    for epoch in range(3):
        value, wg, bg = ref.loss_and_gradients(
            X, y.reshape(-1, 1), weights, biases, ["silu", "tanh"], "identity", "squared_error",
            alpha=1e-3, dropout=(rates, seed, epoch, 0),
        )  # fmt: skip
        expected.append(value)
        for p, g in zip(weights + biases, wg + bg):
            ref.gd_update(p, g, 0.05)
    np.testing.assert_allclose(reg.loss_curve_, expected, rtol=1e-12)
    for got, want in zip(reg.coefs_ + reg.intercepts_, weights + biases):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "params,exc,words",
    [
        (dict(dropout=1.0), ValueError, ["dropout", "< 1"]),
        (dict(dropout=(0.1,)), ValueError, ["dropout", "1 entries", "2 hidden layers"]),
        (dict(dropout=(0.1, -0.2)), ValueError, ["dropout[1]"]),
        (dict(dropout="0.2"), ValueError, ["dropout"]),
        (dict(dropout=0.2, solver="lbfgs"), ValueError, ["dropout", "lbfgs"]),
    ],
)
def test_bad_dropout_fails_before_any_work(params, exc, words, rng):
    _assert_refused_before_any_work(params, exc, words, rng)


def test_dropout_with_sparse_input_is_a_clear_error(rng):
    X, y = _data(rng)
    with pytest.raises(ValueError, match="dropout"):
        MLPClassifier(dropout=0.2, max_iter=3).fit(scipy.sparse.csr_matrix(X), y)


def test_grid_search_over_dropout(rng):
    X, y = _data(rng, n=90)
    grid = GridSearchCV(
        MLPClassifier(hidden_layer_sizes=(6, 5), max_iter=10, random_state=0),
        {"dropout": [0.0, (0.2, 0.1)]}, cv=2,
    )  # fmt: skip
    grid.fit(X, y)
    assert [p["dropout"] for p in grid.cv_results_["params"]] == [0.0, (0.2, 0.1)]
    assert clone(MLPClassifier(dropout=(0.2, 0.1))).get_params()["dropout"] == (0.2, 0.1)


# ------------------------------------------------------------- Activation
def test_a_custom_activation_in_the_estimators(rng):
    from test_activations import SOFTSIGN

    X, y = _data(rng)
    clf = MLPClassifier(hidden_layer_sizes=(8, 5), activation=(SOFTSIGN, "relu"), solver="lbfgs",
                        max_iter=25, alpha=0.01, random_state=1)  # fmt: skip
    clf.fit(X, y)
    value, _, _ = ref.loss_and_gradients(
        X, y.reshape(-1, 1).astype(float), clf.coefs_, clf.intercepts_, [SOFTSIGN, "relu"], "sigmoid",
        "log_loss", alpha=0.01,
    )  # fmt: skip
    np.testing.assert_allclose(clf.loss_, value, rtol=1e-12)
    adam = MLPClassifier(hidden_layer_sizes=(8,), activation=SOFTSIGN, max_iter=5, random_state=1).fit(X, y)
    assert np.isfinite(adam.loss_curve_).all()
    assert clone(adam).get_params()["activation"] is SOFTSIGN
    with pytest.raises(ValueError, match="kernels only"):
        adam.predict(scipy.sparse.csr_matrix(X))


def test_estimators_with_the_new_parameters_pickle(rng):
    import pickle

    from test_activations import SOFTSIGN

    X, y = _data(rng)
    clf = MLPClassifier(hidden_layer_sizes=(8, 5), activation=(SOFTSIGN, "silu"), dropout=(0.2, 0.0),
                        max_iter=4, random_state=0).fit(X, y)  # fmt: skip
    back = pickle.loads(pickle.dumps(clf))
    assert back.get_params()["dropout"] == (0.2, 0.0)
    assert back.activation[0].name == "softsign"
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    # and training goes on the same way
    for est in (clf, back):
        est.set_params(warm_start=True, max_iter=2)
        est.fit(X, y)
    for p, q in zip(clf.coefs_, back.coefs_):
        np.testing.assert_array_equal(p, q)
