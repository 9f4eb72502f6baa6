"""fastnn.sklearn's own parameters: class_weight, validation_loss_curve_ and callbacks.

At their defaults the estimators are scikit-learn's (tests/test_sklearn.py);
here, what each new parameter does, and that it leaves the numbers alone
where it should.
"""

import dataclasses
import inspect
import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

import scipy.sparse  # noqa: E402
from scipy.special import xlogy  # noqa: E402
from sklearn import neural_network as sknn  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score  # noqa: E402
from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight  # noqa: E402

from fastnn import _sklearn_compat as compat  # noqa: E402
from fastnn import sklearn as fsk  # noqa: E402

needs_sklearn_17 = pytest.mark.skipif(
    not compat.SAMPLE_WEIGHT,
    reason=f"scikit-learn {sklearn.__version__}'s MLPs take no sample_weight (added in 1.7), "
    "which class_weight trains through",
)
before_sklearn_17 = pytest.mark.skipif(
    compat.SAMPLE_WEIGHT, reason="class_weight works from scikit-learn 1.7 on"
)

_rng = np.random.RandomState(0)
X = _rng.randn(150, 6)
# unbalanced (63, 55 and 32 samples), labels that are not their indices
Y_MULTICLASS = np.array([3, 5, 7])[np.digitize(X[:, 0], [-0.3, 0.9])]
Y_BINARY = (X[:, 0] + 0.3 * X[:, 1] > 0.6).astype(int)
Y_MULTILABEL = (X[:, :3] > np.array([0.0, 0.8, -0.5])).astype(int)
Y_REGRESSION = 2.0 * X[:, 0] - X[:, 1] + 0.1 * _rng.randn(150)
Y_COUNTS = _rng.poisson(np.exp(0.5 * X[:, 0]))
WEIGHTS = _rng.uniform(0.2, 2.0, 150)
SMALL = dict(hidden_layer_sizes=(7, 5), activation="tanh", batch_size=32, random_state=1)
CLASS_WEIGHTS = {"balanced": "balanced", "dict": {3: 1.0, 5: 4.0, 7: 0.5}}


def params_of(est):
    return list(est.coefs_) + list(est.intercepts_)


def assert_same_params(ours, theirs, atol=0.0):
    for a, b in zip(params_of(ours), params_of(theirs), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def largest_difference(one, other):
    return max(np.abs(a - b).max() for a, b in zip(params_of(one), params_of(other)))


def fit_quietly(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


# ---------------------------------------------------------- class_weight
@needs_sklearn_17
@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-14), (np.float32, 1e-6)])
@pytest.mark.parametrize("class_weight", list(CLASS_WEIGHTS))
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_class_weight_is_the_equivalent_sample_weight(solver, class_weight, dtype, atol):
    class_weight = CLASS_WEIGHTS[class_weight]
    Xd = X.astype(dtype)
    params = dict(solver=solver, max_iter=25, **SMALL)
    ours = fsk.MLPClassifier(class_weight=class_weight, **params)
    weighted = fit_quietly(ours, Xd, Y_MULTICLASS)
    equivalent = compute_sample_weight(class_weight, Y_MULTICLASS)
    by_hand = fit_quietly(fsk.MLPClassifier(**params), Xd, Y_MULTICLASS, sample_weight=equivalent)
    assert_same_params(weighted, by_hand, atol=atol)
    assert weighted.n_iter_ == by_hand.n_iter_
    # and the weights did something
    plain = fit_quietly(fsk.MLPClassifier(**params), Xd, Y_MULTICLASS)
    assert largest_difference(weighted, plain) > 1e-3


@needs_sklearn_17
@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_class_weight_multiplies_sample_weight_also_under_early_stopping(solver):
    params = dict(solver=solver, max_iter=30, early_stopping=True, **SMALL)
    class_weight = CLASS_WEIGHTS["dict"]
    weighted = fit_quietly(
        fsk.MLPClassifier(class_weight=class_weight, **params),
        X, Y_MULTICLASS, sample_weight=WEIGHTS,
    )  # fmt: skip
    equivalent = WEIGHTS * compute_sample_weight(class_weight, Y_MULTICLASS)
    by_hand = fit_quietly(fsk.MLPClassifier(**params), X, Y_MULTICLASS, sample_weight=equivalent)
    assert_same_params(weighted, by_hand)
    if solver == "sgd":  # the validation split's score is weighted alike
        assert weighted.validation_scores_ == by_hand.validation_scores_
        assert weighted.validation_loss_curve_ == by_hand.validation_loss_curve_


@needs_sklearn_17
@pytest.mark.parametrize(
    "y, class_weight",
    [
        (Y_BINARY, {0: 1.0, 1: 5.0}),
        (Y_BINARY, "balanced"),
        (Y_MULTILABEL, "balanced"),
        (Y_MULTILABEL, [{0: 1.0, 1: 3.0}, {0: 1.0, 1: 2.0}, {0: 0.5, 1: 1.0}]),
    ],
    ids=["binary-dict", "binary-balanced", "multilabel-balanced", "multilabel-dicts"],
)
def test_class_weight_of_binary_and_multilabel_targets(y, class_weight):
    params = dict(solver="adam", max_iter=20, **SMALL)
    weighted = fit_quietly(fsk.MLPClassifier(class_weight=class_weight, **params), X, y)
    equivalent = compute_sample_weight(class_weight, y)
    by_hand = fit_quietly(fsk.MLPClassifier(**params), X, y, sample_weight=equivalent)
    assert_same_params(weighted, by_hand)
    assert largest_difference(weighted, fit_quietly(fsk.MLPClassifier(**params), X, y)) > 1e-4


@needs_sklearn_17
def test_class_weight_on_sparse_input_in_sklearns_code():
    params = dict(solver="sgd", max_iter=10, **SMALL)
    sparse = scipy.sparse.csr_matrix(X)
    weighted = fit_quietly(fsk.MLPClassifier(class_weight="balanced", **params), sparse, Y_BINARY)
    equivalent = compute_sample_weight("balanced", Y_BINARY)
    by_hand = fit_quietly(fsk.MLPClassifier(**params), sparse, Y_BINARY, sample_weight=equivalent)
    assert_same_params(weighted, by_hand)
    dense = fit_quietly(fsk.MLPClassifier(class_weight="balanced", **params), X, Y_BINARY)
    assert_same_params(weighted, dense, atol=1e-12)


@needs_sklearn_17
def test_class_weight_in_partial_fit_takes_a_dict_not_balanced():
    classes = np.unique(Y_MULTICLASS)
    class_weight = {7: 2.0, 3: 0.5}  # 5 keeps 1
    ours = fsk.MLPClassifier(solver="sgd", class_weight=class_weight, **SMALL)
    theirs = fsk.MLPClassifier(solver="sgd", **SMALL)
    per_class = compute_class_weight(class_weight, classes=classes, y=Y_MULTICLASS)
    for rows in (slice(0, 50), slice(50, 100), slice(100, 150)):
        part = Y_MULTICLASS[rows]
        ours.partial_fit(X[rows], part, classes=classes)
        weights = per_class[np.searchsorted(classes, part)]
        theirs.partial_fit(X[rows], part, classes=classes, sample_weight=weights)
    assert_same_params(ours, theirs)

    balanced = fsk.MLPClassifier(solver="sgd", class_weight="balanced", **SMALL)
    with pytest.raises(ValueError, match="'balanced' is not supported for partial_fit"):
        balanced.partial_fit(X, Y_MULTICLASS, classes=classes)
    assert not hasattr(balanced, "coefs_")  # raised before any work: a retry starts afresh
    balanced.set_params(class_weight=class_weight).partial_fit(X[:50], Y_MULTICLASS[:50])
    fresh = fsk.MLPClassifier(solver="sgd", class_weight=class_weight, **SMALL)
    fresh.partial_fit(X[:50], Y_MULTICLASS[:50], classes=classes)
    assert_same_params(balanced, fresh)


@before_sklearn_17
def test_class_weight_before_sklearn_17_names_the_release():
    est = fsk.MLPClassifier(class_weight="balanced", max_iter=5, **SMALL)
    with pytest.raises(ValueError, match=r"class_weight needs scikit-learn >= 1\.7"):
        est.fit(X, Y_MULTICLASS)
    assert not hasattr(est, "coefs_")


def test_class_weight_is_validated():
    with pytest.raises(ValueError, match="class_weight"):
        fsk.MLPClassifier(class_weight="auto").fit(X, Y_BINARY)
    assert "class_weight" not in fsk.MLPRegressor().get_params()


@needs_sklearn_17
def test_grid_search_over_class_weight():
    grid = [None, "balanced", CLASS_WEIGHTS["dict"]]
    base = fsk.MLPClassifier(solver="lbfgs", max_iter=30, **SMALL)
    cv = KFold(3, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(base, {"class_weight": grid}, cv=cv, scoring="neg_log_loss")
        search.fit(X, Y_MULTICLASS)
        by_hand = [
            cross_val_score(
                clone(base).set_params(class_weight=cw), X, Y_MULTICLASS, cv=cv,
                scoring="neg_log_loss",
            ).mean()
            for cw in grid
        ]  # fmt: skip
    assert search.cv_results_["param_class_weight"].tolist() == grid
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], by_hand, rtol=1e-12)
    assert len(set(np.round(by_hand, 12))) == 3  # each candidate trained differently
    assert search.best_params_["class_weight"] == grid[int(np.argmax(by_hand))]


# ----------------------------------------------- validation_loss_curve_
def record_splits(monkeypatch):
    """The parts of every early-stopping split fastnn.sklearn makes, in a list."""
    splits = []

    def recording_split(*arrays, **kwargs):
        parts = fsk_split(*arrays, **kwargs)
        splits.append(parts)
        return parts

    fsk_split = fsk.train_test_split
    monkeypatch.setattr(fsk, "train_test_split", recording_split)
    return splits


def numpy_loss(est, X_val, Y_val, weights=None):
    """loss_curve_'s loss of ``est`` on a validation split, from predict(_proba) and NumPy.

    ``Y_val``: the targets as the estimator trains on them (binarized labels,
    or the regression targets as a column).
    """
    Y = np.asarray(Y_val, dtype=np.float64).reshape(len(X_val), -1)
    w = np.ones(len(X_val)) if weights is None else np.asarray(weights, dtype=np.float64)
    average = lambda terms: (w @ terms) / w.sum()  # noqa: E731  (per output)
    if isinstance(est, fsk.MLPClassifier):
        P = est.predict_proba(X_val).astype(np.float64)
        eps = np.finfo(est.coefs_[0].dtype).eps
        if est.out_activation_ == "softmax":
            loss = -average(xlogy(Y, np.clip(P, eps, 1 - eps))).sum()
        else:
            P = np.clip(P[:, 1:] if P.shape[1] == 2 and Y.shape[1] == 1 else P, eps, 1 - eps)
            loss = -average(xlogy(Y, P) + xlogy(1 - Y, 1 - P)).sum()
    else:
        P = est.predict(X_val).astype(np.float64).reshape(Y.shape)
        if est.out_activation_ == "exp":
            loss = average(xlogy(Y, Y / P) - Y + P).sum()
        else:
            loss = 0.5 * average((Y - P) ** 2).mean()
    squares = sum(float(np.sum(c.astype(np.float64) ** 2)) for c in est.coefs_)
    return loss + 0.5 * est.alpha * squares / w.sum()


VALIDATION_CASES = {
    "binary": (fsk.MLPClassifier, {}, Y_BINARY),
    "multiclass": (fsk.MLPClassifier, {}, Y_MULTICLASS),
    "multilabel": (fsk.MLPClassifier, {}, Y_MULTILABEL),
    "regression": (fsk.MLPRegressor, {}, Y_REGRESSION),
    "poisson": (fsk.MLPRegressor, {"loss": "poisson"}, Y_COUNTS),
}


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("case", list(VALIDATION_CASES))
def test_validation_loss_curve_is_the_loss_of_the_validation_split(
    case, weighted, dtype, rtol, monkeypatch
):
    cls, extra, y = VALIDATION_CASES[case]
    if (weighted or case == "poisson") and not compat.SAMPLE_WEIGHT:
        pytest.skip("sample_weight and loss='poisson' need scikit-learn 1.7")
    splits = record_splits(monkeypatch)
    Xd = X.astype(dtype)
    fit_params = {"sample_weight": WEIGHTS} if weighted else {}
    params = dict(solver="adam", max_iter=12, early_stopping=True, alpha=0.3, **SMALL, **extra)

    # each epoch's entry, against NumPy on the weights of that epoch
    expected = []

    def check_epoch(record):
        _, X_val, _, Y_val, *w = splits[-1]
        expected.append(numpy_loss(record.estimator, X_val, Y_val, *w[1:]))

    ours = fit_quietly(cls(callbacks=[check_epoch], **params), Xd, y, **fit_params)
    assert len(ours.validation_loss_curve_) == len(ours.validation_scores_) == ours.n_iter_
    np.testing.assert_allclose(ours.validation_loss_curve_, expected, rtol=rtol)

    # without callbacks: the same curve, and the fitted (best) weights' entry
    plain = fit_quietly(cls(**params), Xd, y, **fit_params)
    assert plain.validation_loss_curve_ == ours.validation_loss_curve_
    _, X_val, _, Y_val, *w = splits[-1]
    best = int(np.argmax(plain.validation_scores_))
    np.testing.assert_allclose(
        plain.validation_loss_curve_[best], numpy_loss(plain, X_val, Y_val, *w[1:]), rtol=rtol
    )


def test_validation_loss_curve_is_none_without_early_stopping_and_grows_with_warm_start():
    y = Y_MULTICLASS
    assert fit_quietly(fsk.MLPClassifier(max_iter=5, **SMALL), X, y).validation_loss_curve_ is None
    lbfgs = fsk.MLPClassifier(solver="lbfgs", max_iter=5, early_stopping=True, **SMALL)
    assert fit_quietly(lbfgs, X, y).validation_loss_curve_ is None
    est = fsk.MLPClassifier(max_iter=4, early_stopping=True, warm_start=True, **SMALL)
    fit_quietly(est, X, y)
    first = list(est.validation_loss_curve_)
    assert len(first) == 4 and np.all(np.isfinite(first))
    fit_quietly(est, X, y)
    assert len(est.validation_loss_curve_) == len(est.validation_scores_) == 8
    assert est.validation_loss_curve_[:4] == first
    est.set_params(warm_start=False, early_stopping=False)
    assert fit_quietly(est, X, y).validation_loss_curve_ is None


def test_validation_loss_curve_of_sparse_input_matches_dense():
    params = dict(solver="sgd", max_iter=8, early_stopping=True, **SMALL)
    sparse = fit_quietly(fsk.MLPRegressor(**params), scipy.sparse.csr_matrix(X), Y_REGRESSION)
    dense = fit_quietly(fsk.MLPRegressor(**params), X, Y_REGRESSION)
    assert len(sparse.validation_loss_curve_) == sparse.n_iter_ == dense.n_iter_
    np.testing.assert_allclose(sparse.validation_loss_curve_, dense.validation_loss_curve_, 1e-10)


# ------------------------------------------------------------- callbacks
def _go_on(record):
    return None


def _never_stop(record):
    return False


class Recorder:
    """A callback that keeps its records (and, optionally, stops at an epoch)."""

    def __init__(self, stop_at=None, answer=True):
        self.records, self.stop_at, self.answer = [], stop_at, answer

    def __call__(self, record):
        self.records.append(record)
        return self.answer if record.epoch == self.stop_at else None


@pytest.mark.parametrize("early_stopping", [False, True], ids=["tol_rule", "early_stopping"])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_callbacks_that_go_on_leave_the_fit_bit_identical(kind, solver, shuffle, early_stopping):
    cls, y = {
        "classifier": (fsk.MLPClassifier, Y_MULTICLASS),
        "regressor": (fsk.MLPRegressor, Y_REGRESSION),
    }[kind]
    # max_iter over the tol rule's stop (in-kernel without callbacks), and several chunks
    params = dict(solver=solver, shuffle=shuffle, early_stopping=early_stopping, max_iter=60)
    params.update(SMALL)
    recorder = Recorder()
    ours = fit_quietly(cls(callbacks=[_go_on, recorder, _never_stop], **params), X, y)
    plain = fit_quietly(cls(**params), X, y)
    assert_same_params(ours, plain)
    assert ours.loss_curve_ == plain.loss_curve_ and ours.n_iter_ == plain.n_iter_
    assert ours.t_ == plain.t_ and ours.best_loss_ == plain.best_loss_
    assert ours.validation_scores_ == plain.validation_scores_
    assert [r.epoch for r in recorder.records] == list(range(1, ours.n_iter_ + 1))
    assert [r.loss for r in recorder.records] == ours.loss_curve_
    scores = [r.validation_score for r in recorder.records]
    assert scores == (ours.validation_scores_ if early_stopping else [None] * ours.n_iter_)
    assert all(r.estimator is ours for r in recorder.records)


@pytest.mark.parametrize("answer", [True, np.True_])
def test_a_callback_returning_true_stops_after_that_epoch(answer):
    params = dict(solver="sgd", max_iter=5, **SMALL)
    stopper, watcher = Recorder(stop_at=3, answer=answer), Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = fsk.MLPClassifier(callbacks=[stopper, watcher], **params).fit(X, Y_MULTICLASS)
        assert est.n_iter_ == len(est.loss_curve_) == 3
        # stopped at the last epoch: still no ConvergenceWarning
        fsk.MLPClassifier(callbacks=[Recorder(stop_at=5)], **params).fit(X, Y_MULTICLASS)
    assert len(watcher.records) == 3  # the others are called too on the last epoch
    with pytest.warns(ConvergenceWarning):
        three = fsk.MLPClassifier(**dict(params, max_iter=3)).fit(X, Y_MULTICLASS)
    assert_same_params(est, three)


@pytest.mark.parametrize("answer", [1, "stop", [True]])
def test_only_true_stops(answer):
    est = fit_quietly(
        fsk.MLPRegressor(max_iter=6, callbacks=[Recorder(stop_at=2, answer=answer)], **SMALL),
        X, Y_REGRESSION,
    )  # fmt: skip
    assert est.n_iter_ == 6


def test_callbacks_in_partial_fit_see_each_call_as_an_epoch():
    recorder = Recorder()
    est = fsk.MLPClassifier(solver="adam", callbacks=[recorder], **SMALL)
    for _ in range(3):
        est.partial_fit(X, Y_BINARY, classes=[0, 1])
    assert [r.epoch for r in recorder.records] == [1, 1, 1]
    assert [r.loss for r in recorder.records] == est.loss_curve_


def test_lbfgs_calls_the_callbacks_after_every_iteration():
    params = dict(solver="lbfgs", max_iter=40, **SMALL)
    recorder = Recorder()
    snapshots = []
    def keep_weights(record):
        snapshots.append([c.copy() for c in record.estimator.coefs_])

    ours = fsk.MLPClassifier(callbacks=[recorder, keep_weights], **params)
    fit_quietly(ours, X, Y_MULTICLASS)
    plain = fit_quietly(fsk.MLPClassifier(**params), X, Y_MULTICLASS)
    assert_same_params(ours, plain)
    assert ours.loss_ == plain.loss_ and ours.n_iter_ == plain.n_iter_
    assert [r.epoch for r in recorder.records] == list(range(1, ours.n_iter_ + 1))
    assert all(r.validation_score is None for r in recorder.records)
    assert recorder.records[-1].loss == ours.loss_
    losses = [r.loss for r in recorder.records]
    assert losses == sorted(losses, reverse=True)  # L-BFGS-B's iterates descend
    for a, b in zip(snapshots[-1], ours.coefs_):
        np.testing.assert_array_equal(a, b)


def test_a_callback_stops_lbfgs_without_a_convergence_warning():
    params = dict(solver="lbfgs", **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        stopped = fsk.MLPClassifier(callbacks=[Recorder(stop_at=4)], max_iter=40, **params)
        stopped.fit(X, Y_MULTICLASS)
    assert stopped.n_iter_ == 4
    with pytest.warns(ConvergenceWarning):
        four = fsk.MLPClassifier(max_iter=4, **params).fit(X, Y_MULTICLASS)
    assert_same_params(stopped, four)
    assert stopped.loss_ == four.loss_


class Boom(Exception):
    pass


def _explode_at_3(record):
    if record.epoch == 3:
        raise Boom("epoch 3")


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_a_callback_that_raises_leaves_a_consistent_estimator(solver):
    params = dict(solver=solver, **SMALL)
    est = fsk.MLPClassifier(callbacks=[_explode_at_3], max_iter=20, **params)
    with pytest.raises(Boom, match="epoch 3"):
        est.fit(X, Y_MULTICLASS)
    assert est.n_iter_ == 3
    three = fit_quietly(fsk.MLPClassifier(max_iter=3, **params), X, Y_MULTICLASS)
    assert_same_params(est, three)
    # independent arrays, usable at once
    arrays = params_of(est)
    assert not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1 :])
    np.testing.assert_array_equal(est.predict_proba(X), three.predict_proba(X))
    if solver != "lbfgs":
        assert len(est.loss_curve_) == 3
        est.set_params(callbacks=None).partial_fit(X, Y_MULTICLASS)  # the optimizer state holds
        assert est.n_iter_ == 1


@pytest.mark.parametrize(
    "callbacks, error, match",
    [
        (_go_on, ValueError, "callbacks"),  # a callable, not a list: the constraints say so
        ("print", ValueError, "callbacks"),
        ([_go_on, 3], TypeError, r"callbacks\[1\] is 3"),
    ],
)
def test_callbacks_are_checked_before_any_work(callbacks, error, match):
    for est in (fsk.MLPClassifier(callbacks=callbacks), fsk.MLPRegressor(callbacks=callbacks)):
        y = Y_BINARY if isinstance(est, fsk.MLPClassifier) else Y_REGRESSION
        with pytest.raises(error, match=match):
            est.fit(X, y)
        assert not hasattr(est, "coefs_")


def test_callbacks_need_dense_input():
    est = fsk.MLPRegressor(callbacks=[_go_on], max_iter=3, **SMALL)
    with pytest.raises(ValueError, match="callbacks need dense X"):
        est.fit(scipy.sparse.csr_matrix(X), Y_REGRESSION)
    assert not hasattr(est, "coefs_")
    fit_quietly(est.set_params(callbacks=[]), scipy.sparse.csr_matrix(X), Y_REGRESSION)


def test_epoch_record_is_a_small_frozen_dataclass():
    est = fsk.MLPRegressor()
    record = fsk.EpochRecord(epoch=2, loss=0.5, validation_score=None, estimator=est)
    assert dataclasses.is_dataclass(record)
    assert [f.name for f in dataclasses.fields(record)] == [
        "epoch", "loss", "validation_score", "estimator",
    ]  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.epoch = 3
    assert repr(record) == "EpochRecord(epoch=2, loss=0.5, validation_score=None)"
    assert "EpochRecord" in fsk.__all__


# ------------------------------------------------------ the parameters
@pytest.mark.parametrize(
    "ours, theirs, new",
    [
        (fsk.MLPClassifier, sknn.MLPClassifier, {"class_weight": None, "callbacks": None, "dropout": 0.0}),
        (fsk.MLPRegressor, sknn.MLPRegressor, {"callbacks": None, "dropout": 0.0}),
    ],
)
def test_constructor_is_sklearns_plus_the_new_parameters(ours, theirs, new):
    mine = list(inspect.signature(ours.__init__).parameters.values())
    base = list(inspect.signature(theirs.__init__).parameters.values())
    assert mine[: len(base)] == base  # names, kinds, defaults and order of the installed release
    added = mine[len(base) :]
    assert [p.name for p in added] == list(new)
    assert all(p.kind is p.KEYWORD_ONLY and p.default == new[p.name] for p in added)
    assert ours().get_params() == {**theirs().get_params(), **new}


def test_new_parameters_travel_with_get_set_params_clone_and_pickle():
    recorder = Recorder()
    est = fsk.MLPClassifier(class_weight={0: 1.0, 1: 2.0}, callbacks=[recorder], max_iter=3)
    params = est.get_params()
    assert params["class_weight"] == {0: 1.0, 1: 2.0} and params["callbacks"] == [recorder]
    est.set_params(class_weight="balanced", callbacks=(_go_on,))
    assert est.class_weight == "balanced" and est.callbacks == (_go_on,)
    copy = clone(est)
    assert copy.class_weight == "balanced" and copy.callbacks == (_go_on,)
    fit_quietly(est.set_params(class_weight=None, **SMALL), X, Y_BINARY)
    restored = pickle.loads(pickle.dumps(est))
    assert restored.callbacks == (_go_on,) and restored.class_weight is None
    np.testing.assert_array_equal(restored.predict_proba(X), est.predict_proba(X))
    reg = pickle.loads(pickle.dumps(fsk.MLPRegressor(callbacks=[_never_stop])))
    assert reg.get_params()["callbacks"] == [_never_stop]
