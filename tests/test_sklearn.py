"""fastnn.sklearn: scikit-learn's numbers, and its behaviour in the ecosystem."""

import functools
import inspect
import pickle
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

import scipy.sparse  # noqa: E402
from sklearn import neural_network as sknn  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastnn import _sklearn_compat as compat  # noqa: E402
from fastnn import sklearn as fsk  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# scikit-learn 1.7 added sample_weight to fit and MLPRegressor(loss="poisson")
needs_sklearn_17 = pytest.mark.skipif(
    not compat.SAMPLE_WEIGHT,
    reason=f"scikit-learn {sklearn.__version__}'s MLPs take no sample_weight and no loss "
    "(both added in 1.7)",
)

_rng = np.random.RandomState(0)
X = _rng.randn(150, 6)
TARGETS = {
    "binary": ("classifier", (X[:, 0] + 0.3 * X[:, 1] > 0).astype(int)),
    "multiclass": ("classifier", np.array(["a", "b", "c"])[np.digitize(X[:, 0], [-0.5, 0.5])]),
    "multilabel": ("classifier", (X[:, :3] > 0).astype(int)),
    "regression": ("regressor", 2.0 * X[:, 0] - X[:, 1] + 0.1 * _rng.randn(150)),
    "multi_output_regression": ("regressor", X[:, :3] @ _rng.randn(3, 3)),
}
SOLVERS = {
    "sgd_nesterov": dict(solver="sgd", momentum=0.9, nesterovs_momentum=True),
    "sgd_momentum": dict(solver="sgd", momentum=0.9, nesterovs_momentum=False),
    "sgd_plain_invscaling": dict(solver="sgd", momentum=0.0, learning_rate="invscaling"),
    "adam": dict(solver="adam"),
}
BASE = dict(hidden_layer_sizes=(7, 5), activation="tanh", batch_size=32, random_state=1)


def pair(kind):
    if kind == "classifier":
        return sknn.MLPClassifier, fsk.MLPClassifier
    return sknn.MLPRegressor, fsk.MLPRegressor


def params_of(est):
    return list(est.coefs_) + list(est.intercepts_)


def assert_same_fit(ours, theirs, atol=1e-8):
    for a, b in zip(params_of(ours), params_of(theirs)):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10, atol=atol)
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-10, atol=atol)
    if theirs.best_loss_ is None:
        assert ours.best_loss_ is None
    else:
        np.testing.assert_allclose(ours.best_loss_, theirs.best_loss_, rtol=1e-10, atol=atol)
    assert ours.out_activation_ == theirs.out_activation_
    assert ours.n_layers_ == theirs.n_layers_ and ours.n_outputs_ == theirs.n_outputs_


def fit_both(kind, y, Xa=X, **params):
    sk_cls, fn_cls = pair(kind)
    theirs = sk_cls(**params).fit(Xa, y)
    ours = fn_cls(**params).fit(Xa, y)
    return ours, theirs


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("target", list(TARGETS))
def test_twenty_iterations_match_sklearn(target, solver, shuffle):
    kind, y = TARGETS[target]
    ours, theirs = fit_both(
        kind, y, max_iter=20, n_iter_no_change=100, shuffle=shuffle, **BASE, **SOLVERS[solver]
    )
    assert ours.n_iter_ == 20
    assert_same_fit(ours, theirs)
    if kind == "classifier":
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-8)


@pytest.mark.parametrize("target", ["multiclass", "multi_output_regression"])
@pytest.mark.parametrize("solver", ["sgd_nesterov", "adam"])
def test_float32_trains_in_float32_close_to_sklearn(target, solver):
    kind, y = TARGETS[target]
    X32 = X.astype(np.float32)
    ours, theirs = fit_both(kind, y, Xa=X32, max_iter=20, **BASE, **SOLVERS[solver])
    for a, b in zip(params_of(ours), params_of(theirs)):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=2e-5)
    if kind == "regressor":
        assert ours.predict(X32).dtype == np.float32


@pytest.mark.parametrize("relu_or_logistic", ["relu", "logistic", "identity"])
def test_hidden_activations_match_sklearn(relu_or_logistic):
    kind, y = TARGETS["multiclass"]
    params = dict(BASE, activation=relu_or_logistic, max_iter=20)
    ours, theirs = fit_both(kind, y, **params)
    assert_same_fit(ours, theirs)


def test_tol_stopping_rule_matches_sklearn():
    kind, y = TARGETS["binary"]
    ours, theirs = fit_both(kind, y, max_iter=300, tol=1e-2, n_iter_no_change=3, **BASE)
    assert ours.n_iter_ < 300
    assert_same_fit(ours, theirs)


def test_adaptive_learning_rate_matches_sklearn():
    kind, y = TARGETS["regression"]
    ours, theirs = fit_both(
        kind, y, solver="sgd", learning_rate="adaptive", learning_rate_init=0.05, tol=0.05,
        n_iter_no_change=2, max_iter=60, **BASE,
    )
    assert ours._optimizer.learning_rate < 0.05  # it was divided at least once
    assert ours._optimizer.learning_rate == theirs._optimizer.learning_rate
    assert_same_fit(ours, theirs)


@pytest.mark.parametrize("solver", ["adam", "sgd_nesterov", "sgd_plain_invscaling"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_sharded_batches_and_in_kernel_stopping_match_sklearn(solver, shuffle):
    # batches of 64 rows run as two shards (150 rows: 64, 64, 22); the tol
    # rule stops the fit inside the kernel, in the middle of a chunk of epochs
    kind, y = TARGETS["multiclass"]
    params = dict(BASE, batch_size=64, max_iter=300, tol=3e-3, n_iter_no_change=3)
    params.update(SOLVERS[solver], shuffle=shuffle)
    ours, theirs = fit_both(kind, y, **params)
    assert 1 < ours.n_iter_ < 300 and ours.n_iter_ % 20 != 0
    assert_same_fit(ours, theirs)
    assert ours._no_improvement_count == theirs._no_improvement_count
    assert ours._optimizer.learning_rate == pytest.approx(theirs._optimizer.learning_rate, rel=1e-12)
    # the random stream is left where scikit-learn leaves it
    assert ours._random_state.randint(2**31 - 1) == theirs._random_state.randint(2**31 - 1)


def test_compiled_shuffles_draw_numpys_orders(monkeypatch):
    import numba

    sample_idx = np.random.RandomState(5).permutation(150).astype(np.int64)
    results = []
    # the compiled drawer, then NumPy's shuffles: for few draws, and without the compiler
    for few, numpy_draws in ((0, False), (10**6, False), (0, True)):
        monkeypatch.setattr(fsk, "FEW_DRAWS", few)
        monkeypatch.setattr(numba.config, "DISABLE_JIT", numpy_draws)
        rs = np.random.RandomState(3)
        order = np.zeros((6, 150), dtype=np.int64)
        before = fsk._draw_orders(rs, sample_idx, np.empty(150, dtype=np.int64), order, 5)
        results.append((order, rs.randint(2**31 - 1), before["state"]["pos"]))
    for other in results[1:]:
        np.testing.assert_array_equal(results[0][0], other[0])
        assert results[0][1:] == other[1:]
    assert (results[0][0][5] == 0).all()
    # without keep_state: the same draws, no state returned
    rs = np.random.RandomState(3)
    order = np.zeros((6, 150), dtype=np.int64)
    assert fsk._draw_orders(rs, sample_idx, np.empty(150, dtype=np.int64), order, 5, False) is None
    np.testing.assert_array_equal(order, results[0][0])


def test_shuffles_from_a_random_state_on_another_generator_match_sklearn():
    # RandomState(PCG64): not MT19937, so NumPy draws the shuffles; no
    # warning about the legacy state
    kind, y = TARGETS["multiclass"]
    params = dict(BASE, max_iter=15, n_iter_no_change=100, shuffle=True)
    params["random_state"] = np.random.RandomState(np.random.PCG64(4))
    theirs = sknn.MLPClassifier(**params).fit(X, y)
    params["random_state"] = np.random.RandomState(np.random.PCG64(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ours = fsk.MLPClassifier(**params).fit(X, y)
    assert_same_fit(ours, theirs)
    assert ours._random_state.randint(2**31 - 1) == theirs._random_state.randint(2**31 - 1)


@pytest.mark.parametrize("parallel", [False, True])
def test_serial_and_parallel_twins_fit_identically(parallel, monkeypatch):
    from fastnn import _threads

    kind, y = TARGETS["multiclass"]
    params = dict(BASE, batch_size=100, max_iter=30, n_iter_no_change=100)
    expected = fsk.MLPClassifier(**params).fit(X, y)
    monkeypatch.setattr(_threads.TwinRunner, "plan", lambda self, rest: (parallel, min(rest, 7)))
    ours = fsk.MLPClassifier(**params).fit(X, y)
    for a, b in zip(params_of(ours), params_of(expected)):
        np.testing.assert_array_equal(a, b)
    assert ours.loss_curve_ == expected.loss_curve_
    runs = ours._fastnn_epochs_by_twin
    assert runs["parallel"] + runs["serial"] == 30
    if parallel and _threads.parallel_allowed():
        assert runs["parallel"] == 30
    elif not parallel:
        assert runs["serial"] == 30


@functools.cache
def sklearn_early_stops_on_string_labels():
    """False where scikit-learn's early stopping raises on string labels (its
    validation score calls np.isnan on the predicted labels; fixed in 1.9).
    fastnn calls scikit-learn's scoring there, and raises the same."""
    labels = np.array(["a", "b"])[(X[:60, 0] > 0).astype(int)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sknn.MLPClassifier(hidden_layer_sizes=(2,), early_stopping=True, max_iter=1).fit(
                X[:60], labels
            )
    except TypeError:
        return False
    return True


@pytest.mark.parametrize("target", ["multiclass", "multiclass_codes", "regression"])
def test_early_stopping_matches_sklearn(target):
    kind, y = TARGETS[target.replace("_codes", "")]
    if target.endswith("_codes"):
        y = np.unique(y, return_inverse=True)[1]
    params = dict(
        early_stopping=True, validation_fraction=0.2, n_iter_no_change=4, max_iter=100,
        shuffle=True, **BASE,
    )  # fmt: skip
    if y.dtype.kind == "U" and not sklearn_early_stops_on_string_labels():
        for cls in pair(kind):
            with pytest.raises(TypeError, match="isnan"):
                cls(**params).fit(X, y)
        return
    ours, theirs = fit_both(kind, y, **params)
    assert ours.best_loss_ is None
    assert len(ours.validation_scores_) == ours.n_iter_
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, atol=1e-10)
    assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_, abs=1e-10)
    assert ours.best_validation_score_ == max(ours.validation_scores_)
    assert_same_fit(ours, theirs)


@pytest.mark.parametrize("target", ["multiclass", "multi_output_regression"])
def test_lbfgs_converges_like_sklearn(target):
    kind, y = TARGETS[target]
    ours, theirs = fit_both(kind, y, solver="lbfgs", max_iter=100, **BASE)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-6)
    for a, b in zip(params_of(ours), params_of(theirs)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_lbfgs_float32_keeps_float32_parameters():
    kind, y = TARGETS["binary"]
    ours = fsk.MLPClassifier(solver="lbfgs", max_iter=50, **BASE).fit(X.astype(np.float32), y)
    assert all(p.dtype == np.float32 for p in params_of(ours))
    assert ours.score(X.astype(np.float32), y) > 0.9


def test_partial_fit_matches_sklearn():
    kind, y = TARGETS["multiclass"]
    classes = np.unique(y)
    theirs = sknn.MLPClassifier(**BASE)
    ours = fsk.MLPClassifier(**BASE)
    for start in range(0, 150, 50):
        part = slice(start, start + 50)
        theirs.partial_fit(X[part], y[part], classes=classes)
        ours.partial_fit(X[part], y[part], classes=classes)
        assert ours._optimizer.t == theirs._optimizer.t
    assert_same_fit(ours, theirs)
    with pytest.raises(ValueError, match="classes"):
        ours.partial_fit(X[:5], np.array(["z"] * 5))


def test_partial_fit_regressor_then_fit_restarts():
    kind, y = TARGETS["regression"]
    theirs = sknn.MLPRegressor(solver="sgd", **BASE)
    ours = fsk.MLPRegressor(solver="sgd", **BASE)
    for _ in range(3):
        theirs.partial_fit(X, y)
        ours.partial_fit(X, y)
    assert_same_fit(ours, theirs)
    with pytest.raises(ValueError, match="early_stopping"):
        fsk.MLPRegressor(early_stopping=True).partial_fit(X, y)


def test_warm_start_matches_sklearn():
    kind, y = TARGETS["binary"]
    theirs = sknn.MLPClassifier(warm_start=True, max_iter=10, **BASE)
    ours = fsk.MLPClassifier(warm_start=True, max_iter=10, **BASE)
    for _ in range(2):
        theirs.fit(X, y)
        ours.fit(X, y)
    assert_same_fit(ours, theirs)
    with pytest.raises(ValueError, match="warm_start"):
        ours.fit(X, np.where(y == 1, 2, 3))


WEIGHTS = np.random.RandomState(3).uniform(0.2, 3.0, X.shape[0])


@needs_sklearn_17
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("solver", ["adam", "sgd_nesterov", "sgd_plain_invscaling"])
@pytest.mark.parametrize("target", ["binary", "multiclass", "multilabel", "multi_output_regression"])
def test_sample_weight_trains_in_the_kernels_like_sklearn(target, solver, shuffle, monkeypatch):
    # batch_size 64: weighted batches of two shards (64, 64) and one (22)
    kind, y = TARGETS[target]
    params = dict(BASE, batch_size=64, max_iter=20, n_iter_no_change=100, shuffle=shuffle)
    params.update(SOLVERS[solver])
    sk_cls, fn_cls = pair(kind)
    theirs = sk_cls(**params).fit(X, y, sample_weight=WEIGHTS)
    monkeypatch.setattr(  # the scikit-learn code must not run
        fn_cls.__mro__[2], "_backprop", lambda *a, **k: pytest.fail("scikit-learn's backprop ran")
    )
    ours = fn_cls(**params).fit(X, y, sample_weight=WEIGHTS)
    assert_same_fit(ours, theirs)


@needs_sklearn_17
@pytest.mark.parametrize("target", ["multiclass", "regression"])
def test_sample_weight_with_lbfgs_and_early_stopping_like_sklearn(target):
    kind, y = TARGETS[target]
    if y.dtype.kind == "U" and not sklearn_early_stops_on_string_labels():
        y = np.unique(y, return_inverse=True)[1]
    sk_cls, fn_cls = pair(kind)
    theirs = sk_cls(solver="lbfgs", max_iter=30, **BASE).fit(X, y, sample_weight=WEIGHTS)
    ours = fn_cls(solver="lbfgs", max_iter=30, **BASE).fit(X, y, sample_weight=WEIGHTS)
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-8)
    params = dict(BASE, early_stopping=True, max_iter=40, n_iter_no_change=3)
    theirs = sk_cls(**params).fit(X, y, sample_weight=WEIGHTS)
    ours = fn_cls(**params).fit(X, y, sample_weight=WEIGHTS)
    assert_same_fit(ours, theirs)
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=1e-10)
    # weights of 1 give the unweighted fit exactly
    ones = fn_cls(**params).fit(X, y, sample_weight=np.ones(X.shape[0]))
    plain = fn_cls(**params).fit(X, y)
    for a, b in zip(params_of(ones), params_of(plain)):
        np.testing.assert_array_equal(a, b)


def test_sparse_input_uses_sklearn_code_with_same_results():
    kind, y = TARGETS["regression"]
    Xs = scipy.sparse.csr_matrix(np.where(np.abs(X) > 1, X, 0.0))
    ours, theirs = fit_both(kind, y, Xa=Xs, max_iter=10, **BASE)
    assert_same_fit(ours, theirs, atol=1e-12)
    np.testing.assert_allclose(ours.predict(Xs), theirs.predict(Xs), atol=1e-12)


@needs_sklearn_17
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("solver", ["adam", "sgd_nesterov", "lbfgs"])
def test_poisson_loss_trains_in_the_kernels_like_sklearn(solver, weighted, monkeypatch):
    y = np.random.RandomState(5).poisson(np.exp(0.5 * X[:, 0] - 0.2 * X[:, 1])).astype(float)
    params = dict(BASE, loss="poisson", batch_size=64, max_iter=20, n_iter_no_change=100)
    params.update(SOLVERS.get(solver, dict(solver=solver)))
    w = WEIGHTS if weighted else None
    theirs = sknn.MLPRegressor(**params).fit(X, y, sample_weight=w)
    monkeypatch.setattr(  # the scikit-learn code must not run
        sknn.MLPRegressor, "_backprop", lambda *a, **k: pytest.fail("scikit-learn's backprop ran")
    )
    ours = fsk.MLPRegressor(**params).fit(X, y, sample_weight=w)
    assert ours.out_activation_ == "exp"
    if solver == "lbfgs":
        assert ours.n_iter_ == theirs.n_iter_
        np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-8)
    else:
        assert_same_fit(ours, theirs)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-6)


@pytest.mark.parametrize("learning_rate_init", [0.3, 0.5])
@pytest.mark.parametrize("mode", ["in_kernel", "verbose", "early_stopping"])
def test_diverging_fit_goes_on_like_sklearn(mode, learning_rate_init, capsys):
    # scikit-learn trains on after its weights overflow, with NaN losses, to
    # max_iter; under early stopping it keeps its best (finite) weights,
    # otherwise fit raises
    early_stopping = mode == "early_stopping"
    y = TARGETS["regression"][1]
    params = dict(
        solver="sgd", learning_rate_init=learning_rate_init, activation="identity",
        hidden_layer_sizes=(50,), max_iter=20, n_iter_no_change=10, shuffle=True,
        early_stopping=early_stopping, verbose=mode == "verbose", random_state=0,
    )  # fmt: skip
    fits, printed = [], []
    for cls in (sknn.MLPRegressor, fsk.MLPRegressor):
        est = cls(**params)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if early_stopping:
                est.fit(X, y)
            else:
                with pytest.raises(ValueError, match="non-finite parameter weights"):
                    est.fit(X, y)
        fits.append(est)
        printed.append(capsys.readouterr().out)
    theirs, ours = fits
    # the same lines; losses of 1e9 and more print digits beyond rounding
    number = r"-?(?:\d+\.\d+|nan|inf)"
    ours_lines, their_lines = printed[1].splitlines(), printed[0].splitlines()
    shapes = [[re.sub(number, "#", t) for t in lines] for lines in (ours_lines, their_lines)]
    assert shapes[0] == shapes[1]
    values = [[float(v) for v in re.findall(number, text)] for text in printed]
    np.testing.assert_allclose(values[1], values[0], rtol=1e-10)
    assert ("loss = nan" in printed[0]) == (mode == "verbose")
    assert np.isnan(theirs.loss_curve_[-1])  # it did diverge
    assert ours.n_iter_ == theirs.n_iter_ == 20 and ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)  # NaN == NaN
    if early_stopping:
        assert np.isnan(theirs.validation_scores_[-1])
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=1e-10)
        for a, b in zip(params_of(ours), params_of(theirs)):
            assert np.isfinite(a).all()
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-8)
    assert ours._random_state.randint(2**31 - 1) == theirs._random_state.randint(2**31 - 1)


def test_divergence_raises_like_sklearn():
    y = TARGETS["regression"][1] * 1e10
    for cls in (sknn.MLPRegressor, fsk.MLPRegressor):
        with np.errstate(all="ignore"), pytest.raises(ValueError, match="non-finite parameter"):
            cls(solver="sgd", learning_rate_init=10.0, max_iter=5, random_state=0).fit(X, y)


# ------------------------------------------------------- prediction API
def test_predict_proba_log_proba_and_score():
    kind, y = TARGETS["multiclass"]
    clf = fsk.MLPClassifier(max_iter=50, **BASE).fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba), atol=1e-12)
    predicted = clf.predict(X)
    np.testing.assert_array_equal(predicted, clf.classes_[np.argmax(proba, axis=1)])
    assert clf.score(X, y) == pytest.approx(np.mean(predicted == y))

    kind, yb = TARGETS["binary"]
    binary = fsk.MLPClassifier(max_iter=50, **BASE).fit(X, yb)
    pb = binary.predict_proba(X)
    assert pb.shape == (150, 2)
    np.testing.assert_allclose(pb.sum(axis=1), 1.0, atol=1e-12)

    kind, ym = TARGETS["multilabel"]
    multi = fsk.MLPClassifier(max_iter=50, **BASE).fit(X, ym)
    assert multi.predict(X).shape == ym.shape
    assert set(np.unique(multi.predict(X))) <= {0, 1}

    kind, yr = TARGETS["multi_output_regression"]
    reg = fsk.MLPRegressor(max_iter=50, **BASE).fit(X, yr)
    assert reg.predict(X).shape == (150, 3)
    from sklearn.metrics import r2_score

    assert reg.score(X, yr) == pytest.approx(r2_score(yr, reg.predict(X)))


def test_predict_with_other_dtypes_follows_sklearn():
    kind, y = TARGETS["regression"]
    ours, theirs = fit_both(kind, y, max_iter=10, **BASE)
    for Xq in (X.astype(np.float32), np.round(X * 3).astype(np.int64), np.asfortranarray(X)):
        a, b = ours.predict(Xq), theirs.predict(Xq)
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="features"):
        ours.predict(X[:, :3])


VERBOSE_CASES = {
    # the tol rule stops the fit: "Training loss did not improve ... Stopping."
    "sgd_tol_stop": ("binary", dict(solver="sgd", max_iter=300, tol=1e-2, n_iter_no_change=3)),
    # the adaptive schedule: "... Setting learning rate to ..."
    "sgd_adaptive": ("regression", dict(
        solver="sgd", learning_rate="adaptive", learning_rate_init=0.05, tol=0.05,
        n_iter_no_change=2, max_iter=40,
    )),  # fmt: skip
    # "Validation score: ..." lines and the early-stopping message
    "adam_early_stopping": ("binary", dict(
        early_stopping=True, validation_fraction=0.2, n_iter_no_change=4, max_iter=100,
    )),  # fmt: skip
    "adam_max_iter": ("multi_output_regression", dict(max_iter=12, n_iter_no_change=100)),
    "lbfgs": ("multiclass", dict(solver="lbfgs", max_iter=15)),
}


def _verbose_output(cls, y, capsys, **params):
    est = cls(**BASE, **params)
    est.fit(X, y)
    if params.get("solver", "adam") != "lbfgs" and not params.get("early_stopping"):
        est.partial_fit(X, y)  # one more line, from partial_fit
    out, err = capsys.readouterr()
    return out.splitlines(), err


@pytest.mark.parametrize("case", list(VERBOSE_CASES))
def test_verbose_prints_sklearns_lines(case, capsys):
    target, params = VERBOSE_CASES[case]
    kind, y = TARGETS[target]
    sk_cls, fn_cls = pair(kind)
    theirs, _ = _verbose_output(sk_cls, y, capsys, verbose=True, **params)
    ours, err = _verbose_output(fn_cls, y, capsys, verbose=True, **params)
    if params.get("solver") != "lbfgs":
        assert sum(line.startswith("Iteration ") for line in theirs) > 3
    assert ours == theirs
    assert "epoch" not in err  # no progress bar for verbose=True, tqdm installed or not
    # and the same fit with verbose off prints nothing
    _verbose_output(fn_cls, y, capsys, **params)
    assert capsys.readouterr() == ("", "")


def test_verbose_2_adds_a_progress_bar_to_sklearns_lines(capsys):
    pytest.importorskip("tqdm")
    target, params = VERBOSE_CASES["sgd_tol_stop"]
    kind, y = TARGETS[target]
    sk_cls, fn_cls = pair(kind)
    theirs, _ = _verbose_output(sk_cls, y, capsys, verbose=2, **params)
    ours, err = _verbose_output(fn_cls, y, capsys, verbose=2, **params)
    assert ours == theirs
    assert any(line.startswith("Training loss did not improve") for line in ours)
    assert "fastnn" in err and "epoch" in err


def test_verbose_without_tqdm_prints_the_same_lines(capsys, monkeypatch):
    target, params = VERBOSE_CASES["sgd_tol_stop"]
    kind, y = TARGETS[target]
    with_tqdm, _ = _verbose_output(fsk.MLPClassifier, y, capsys, verbose=2, **params)
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    without, err = _verbose_output(fsk.MLPClassifier, y, capsys, verbose=2, **params)
    assert without == with_tqdm and err == ""


# ---------------------------------------------------------- ecosystem
def test_pipeline_grid_search_cross_val_clone_pickle():
    kind, y = TARGETS["multiclass"]
    pipe = make_pipeline(StandardScaler(), fsk.MLPClassifier(max_iter=30, **BASE))
    grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-1]}, cv=3).fit(X, y)
    assert grid.best_params_["mlpclassifier__alpha"] in (1e-4, 1e-1)
    reg = fsk.MLPRegressor(max_iter=30, **BASE)
    scores = cross_val_score(reg, X, TARGETS["regression"][1], cv=3)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))

    est = fsk.MLPClassifier(alpha=0.5, max_iter=30, **BASE)
    copy = clone(est)
    assert type(copy) is fsk.MLPClassifier and copy.get_params() == est.get_params()
    est.fit(X, y)
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(restored.predict_proba(X), est.predict_proba(X))
    # a pickled model continues training exactly like the original
    restored.partial_fit(X, y)
    est.partial_fit(X, y)
    for a, b in zip(params_of(restored), params_of(est)):
        np.testing.assert_array_equal(a, b)


def test_set_params_and_invalid_parameters():
    est = fsk.MLPRegressor().set_params(solver="sgd", momentum=0.5)
    assert est.get_params()["momentum"] == 0.5
    with pytest.raises(ValueError, match="solver"):
        fsk.MLPRegressor(solver="newton").fit(X, TARGETS["regression"][1])
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        fsk.MLPRegressor(hidden_layer_sizes=(3, 0)).fit(X, TARGETS["regression"][1])


def test_import_fastnn_does_not_import_sklearn():
    code = "import sys, fastnn; assert 'sklearn' not in sys.modules, 'sklearn was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _expected_failed_checks(estimator):
    expected = {}
    if estimator.solver == "lbfgs" and isinstance(estimator, fsk.MLPClassifier):
        expected["check_classifiers_multilabel_output_format_predict_proba"] = (
            "scikit-learn's own MLPClassifier(solver='lbfgs') fails it too: its fit on this "
            "check's data saturates the logistic output, so some probabilities equal 1.0"
        )
    if isinstance(estimator, fsk.MLPClassifier) and not compat.SAMPLE_WEIGHT:
        expected["check_class_weight_classifiers"] = (
            f"fastnn's class_weight trains through sample_weight, which scikit-learn "
            f"{sklearn.__version__}'s MLPs lack (1.7 added it): a ValueError names the release"
        )
    return expected


# scikit-learn 1.6 added expected_failed_checks; before, the test marks them
_MARKS_EXPECTED = "expected_failed_checks" in inspect.signature(parametrize_with_checks).parameters


@parametrize_with_checks(
    [
        fsk.MLPClassifier(),
        fsk.MLPRegressor(),
        fsk.MLPClassifier(solver="lbfgs"),
        fsk.MLPRegressor(solver="sgd"),
    ],
    **({"expected_failed_checks": _expected_failed_checks} if _MARKS_EXPECTED else {}),
)
def test_check_estimator(estimator, check):
    reason = _expected_failed_checks(estimator).get(getattr(check, "func", check).__name__)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if reason is None or _MARKS_EXPECTED:
            check(estimator)
            return
        try:
            check(estimator)
        except AssertionError:
            pytest.xfail(reason)


def test_grid_search_on_dask_backend():
    distributed = pytest.importorskip("distributed")
    joblib = pytest.importorskip("joblib")
    kind, y = TARGETS["binary"]
    search = GridSearchCV(
        fsk.MLPClassifier(max_iter=20, **BASE), {"alpha": [1e-4, 1e-2]}, cv=2, n_jobs=2
    )
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster, distributed.Client(cluster):
        with joblib.parallel_backend("dask"):
            search.fit(X, y)
    local = GridSearchCV(
        fsk.MLPClassifier(max_iter=20, **BASE), {"alpha": [1e-4, 1e-2]}, cv=2
    ).fit(X, y)
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    assert search.best_params_ == local.best_params_


def test_sklearn_comparison_rows_and_table():
    rows = fsk.sklearn_comparison(
        quick=True, repeats=1, solvers=("adam",), dtypes=("float32",), workloads=("breast_cancer",)
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["workload"], row["solver"], row["dtype"]) == ("breast_cancer", "adam", "float32")
    assert row["sklearn_s"] > 0 and row["fastnn_s"] > 0
    assert row["speedup"] == pytest.approx(row["sklearn_s"] / row["fastnn_s"])
    # same seed, same data: the same fitted model, hence the same held-out score
    assert row["fastnn_score"] == pytest.approx(row["sklearn_score"], abs=1e-6)
    table = fsk.format_sklearn_comparison(rows)
    assert "breast_cancer" in table and "speedup" in table
    with pytest.raises(ValueError, match="workloads"):
        fsk.sklearn_comparison(workloads=("mnist",))
    with pytest.raises(ValueError, match="solvers"):
        fsk.sklearn_comparison(solvers=("newton",))


def test_blas_thread_limit_is_restored_after_fit():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    kind, y = TARGETS["binary"]
    fsk.MLPClassifier(max_iter=3, **BASE).fit(X, y)
    fsk.MLPClassifier(solver="lbfgs", max_iter=3, **BASE).fit(X, y)
    after = [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    assert [a for a in after if a[0] in dict(before)] == before


def test_remembered_layouts_are_copies_and_a_list_of_activations_is_built_each_time():
    from fastnn._kernels import codes

    est = fsk.MLPClassifier(hidden_layer_sizes=(4, 3), activation="tanh")
    est.out_activation_ = "softmax"
    units = [5, 4, 3, 2]
    first, size = est._fastnn_layout(units, np.float64)
    expected = fsk._flat_layout(units, "tanh", codes.SOFTMAX, [0.0, 0.0], np.float64)
    np.testing.assert_array_equal(first, expected[0])
    first[...] = -7  # a caller's copy: the next call is not changed
    again, size_again = est._fastnn_layout(units, np.float64)
    np.testing.assert_array_equal(again, expected[0])
    assert size == size_again == expected[1]
    est.activation = ["tanh", "relu"]  # a list (not hashable): built, not remembered
    mixed, _ = est._fastnn_layout(units, np.float64)
    np.testing.assert_array_equal(mixed, fsk._flat_layout(units, ["tanh", "relu"], codes.SOFTMAX)[0])
    assert not np.array_equal(mixed, again)
