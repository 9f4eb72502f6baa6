"""fastnn._plain_input: the fitted estimators' input checks for plain arrays.

Each check either returns what scikit-learn's own checks return (the same
object, the same targets, no warning) or declines (None), and then
scikit-learn's checks run and give their own conversions, warnings and
errors. Every case is run through both.
"""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402
from sklearn.utils.validation import validate_data  # noqa: E402

from fastnn import _plain_input as plain  # noqa: E402
from fastnn import sklearn as fsk  # noqa: E402

_rng = np.random.RandomState(0)
X = _rng.randn(40, 5)
LABELS = np.array([3, 7, 9])
SMALL = dict(hidden_layer_sizes=(6,), random_state=0, max_iter=5)


@pytest.fixture(scope="module")
def classifier():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fsk.MLPClassifier(**SMALL).fit(X, LABELS[np.arange(40) % 3])


def sklearn_X(estimator, X):
    """scikit-learn's checks of X for a fitted estimator: (result, warnings), or the error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return validate_data(estimator, X, accept_sparse=["csr", "csc"], reset=False), caught
        except ValueError as error:
            return error, caught


def odd_inputs():
    big = np.full((3, 5), 1e308)  # finite, but its sum overflows
    with_nan, with_inf = X[:4].copy(), X[:4].copy()
    with_nan[1, 2], with_inf[0, 0] = np.nan, -np.inf
    return {
        "float64": X[:7],
        "float32": X[:7].astype(np.float32),
        "fortran": np.asfortranarray(X[:7]),
        "strided": X[::2],
        "read-only": np.frombuffer(X[:3].tobytes()).reshape(3, 5),
        "one row": X[:1],
        "overflowing sum": big,
        "nan": with_nan,
        "inf": with_inf,
        "int": np.arange(15).reshape(3, 5),
        "float16": X[:3].astype(np.float16),
        "list": X[:3].tolist(),
        "wrong features": X[:3, :4],
        "no rows": X[:0],
        "1-D": X[0],
        "3-D": X[:4].reshape(2, 2, 5),
        "subclass": np.ma.masked_array(X[:3]),
    }


@pytest.mark.parametrize("case", list(odd_inputs()))
def test_plain_X_returns_what_sklearn_returns_or_declines(classifier, case):
    # declined: another container or dtype (which scikit-learn converts), a
    # warning or an error to give; else what scikit-learn returns, unchanged
    X_in = odd_inputs()[case]
    ours = plain.plain_X(classifier, X_in)
    plain_cases = ("float64", "float32", "fortran", "strided", "read-only", "one row",
                   "overflowing sum")  # fmt: skip
    assert (ours is not None) == (case in plain_cases)
    if ours is not None:
        theirs, caught = sklearn_X(classifier, X_in)
        assert ours is X_in and theirs is X_in and not caught


def test_plain_X_declines_for_an_estimator_fitted_with_feature_names():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=list("abcde"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = fsk.MLPClassifier(**SMALL).fit(frame, LABELS[np.arange(40) % 3])
    assert plain.plain_X(est, X[:3]) is None  # scikit-learn warns: X has no feature names
    with pytest.warns(UserWarning, match="feature names"):
        est.predict(X[:3])


def test_an_overflowing_sum_of_finite_values_is_still_finite():
    assert plain._finite(np.full(4, 1e308))
    assert not plain._finite(np.array([1e308, np.nan]))
    assert not plain._finite(np.array([np.inf, -np.inf]))


LABEL_CASES = {
    "ints": np.array([3, 9, 9, 7]),
    "int32": np.array([7, 3, 3, 9], dtype=np.int32),
    "uint8": np.array([7, 3, 3, 9], dtype=np.uint8),
    "one class": np.array([9, 9, 9, 9]),
    "unknown label": np.array([3, 4, 9, 7]),
    "label past the last": np.array([3, 10, 9, 7]),
    "floats": np.array([3.0, 9.0, 9.0, 7.0]),
    "strings": np.array(["3", "9", "9", "7"]),
    "column": np.array([[3], [9], [9], [7]]),
    "list": [3, 9, 9, 7],
    "too short": np.array([3, 9, 9]),
}


def sklearn_targets(estimator, X_in, y):
    """scikit-learn's own _validate_input for a partial_fit: (X, y) or the error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cls = SkClassifier if isinstance(estimator, SkClassifier) else SkRegressor
            return cls._validate_input(estimator, X_in, y, incremental=True, reset=False), caught
        except ValueError as error:
            return error, caught


def through_both(estimator, y):
    """(ours, theirs) for a partial_fit's X (4 rows) and ``y``: fastnn's plain
    checks (None: declined) and scikit-learn's, which must not warn or raise
    where ours did not decline."""
    X_in = X[:4]
    ours = estimator._fastnn_plain_input(X_in, y, incremental=True)
    theirs, caught = sklearn_targets(estimator, X_in, y)
    if ours is not None:
        assert not caught and not isinstance(theirs, Exception)
        assert ours[0] is theirs[0] is X_in
    return ours, theirs


@pytest.mark.parametrize("case", list(LABEL_CASES))
def test_plain_labels_binarize_as_sklearn_or_decline(classifier, case):
    ours, theirs = through_both(classifier, LABEL_CASES[case])
    if ours is None:
        assert case in ("unknown label", "label past the last", "floats", "strings", "column",
                        "list", "too short")  # fmt: skip
        return
    assert ours[1].dtype == theirs[1].dtype == bool
    np.testing.assert_array_equal(ours[1], theirs[1])


@pytest.mark.parametrize("classes", [[0, 1], ["no", "yes"]])
def test_two_classes_give_one_unit(classes):
    y = np.array(classes)[np.arange(40) % 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = fsk.MLPClassifier(**SMALL).fit(X, y)
    batch, X_in = y[[1, 0, 0, 1, 1]], X[:5]
    ours = est._fastnn_plain_input(X_in, batch, incremental=True)
    theirs, _ = sklearn_targets(est, X_in, batch)
    assert ours[1].shape == (5, 1)
    np.testing.assert_array_equal(ours[1], theirs[1])


def test_labels_decline_where_sklearn_checks_otherwise(classifier):
    y = LABEL_CASES["ints"]
    # a fit (not incremental) and warm_start compare the sets of classes
    assert classifier._fastnn_plain_input(X[:4], y, incremental=False) is None
    classifier.warm_start = True
    try:
        assert classifier._fastnn_plain_input(X[:4], y, incremental=True) is None
    finally:
        classifier.warm_start = False
    # a multilabel binarizer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        multilabel = fsk.MLPClassifier(**SMALL).fit(X, (X[:, :2] > 0).astype(int))
    assert multilabel._fastnn_plain_input(X[:4], (X[:4, :2] > 0).astype(int), True) is None


def test_unknown_labels_raise_sklearns_error(classifier):
    y = LABEL_CASES["unknown label"]
    theirs, _ = sklearn_targets(classifier, X[:4], y)
    with pytest.raises(ValueError) as ours:
        classifier.partial_fit(X[:4], y)
    assert str(ours.value) == str(theirs)


TARGET_CASES = {
    "float64": X[:4, 0],
    "float32": X[:4, 0].astype(np.float32),
    "ints": np.arange(4),
    "two columns": X[:4, :2],
    "one column": X[:4, :1],
    "nan": np.array([0.0, np.nan, 1.0, 2.0]),
    "objects": np.array([0.5, 1.5, 2.5, 3.5], dtype=object),
    "strings": np.array(["a", "b", "c", "d"]),
    "list": [0.5, 1.5, 2.5, 3.5],
    "too long": X[:5, 0],
}


@pytest.fixture(scope="module")
def regressor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fsk.MLPRegressor(**SMALL).fit(X, X[:, 0])


@pytest.mark.parametrize("case", list(TARGET_CASES))
def test_plain_targets_are_sklearns_or_declined(regressor, case):
    ours, theirs = through_both(regressor, TARGET_CASES[case])
    if ours is None:
        assert case in ("one column", "nan", "objects", "strings", "list", "too long")
        return
    assert ours[1] is theirs[1]


def test_one_column_still_warns_as_sklearn(regressor):
    from sklearn.exceptions import DataConversionWarning

    with pytest.warns(DataConversionWarning):
        regressor.partial_fit(X[:4], X[:4, :1])


def forced_sklearn_checks(monkeypatch):
    for name in ("plain_X", "plain_labels", "plain_targets"):
        monkeypatch.setattr(fsk, name, lambda *args: None)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_a_stream_of_partial_fits_is_the_same_either_way(kind, monkeypatch):
    # the same estimator fed the same batches, with and without the plain checks,
    # and scikit-learn's: the same coefficients and predictions
    y = LABELS[np.arange(40) % 3] if kind == "classifier" else X[:, :2] @ [1.0, -2.0]
    extra = {"classes": LABELS} if kind == "classifier" else {}
    fitted = []
    for way in ("plain", "sklearn's checks", "sklearn"):
        if way == "sklearn":
            est = (SkClassifier if kind == "classifier" else SkRegressor)(**SMALL)
        else:
            est = (fsk.MLPClassifier if kind == "classifier" else fsk.MLPRegressor)(**SMALL)
        with monkeypatch.context() as m:
            if way == "sklearn's checks":
                forced_sklearn_checks(m)
            for start in range(0, 40, 8):
                est.partial_fit(X[start : start + 8], y[start : start + 8], **extra)
                extra = {}
            fitted.append((est, est.predict(X[:10])))
        extra = {"classes": LABELS} if kind == "classifier" else {}
    (a, pa), (b, pb), (c, pc) = fitted
    for ours, other in ((a, b), (a, c)):
        for p, q in zip(ours.coefs_ + ours.intercepts_, other.coefs_ + other.intercepts_):
            np.testing.assert_allclose(p, q, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(pa, pb)
    if kind == "classifier":
        np.testing.assert_array_equal(pa, pc)
    else:
        np.testing.assert_allclose(pa, pc, rtol=0, atol=1e-12)


def fitted_binarizer(labels):
    from sklearn.preprocessing import LabelBinarizer

    return LabelBinarizer().fit(labels)


SCORE_CASES = {
    "multiclass": (np.array([3, 7, 9]), _rng.rand(50, 3)),
    "strings": (np.array(["a", "b", "c", "d"]), _rng.rand(50, 4)),
    "ties and nan": (np.array([3, 7, 9]), np.array([[0.2, 0.2, 0.1], [np.nan, 0.5, 0.9],
                                                    [0.4, np.nan, np.nan], [0.0, 0.0, 0.0]])),
    "binary": (np.array([0, 1]), np.concatenate([_rng.rand(40), [0.5, np.nan, 0.5000001]])),
    "binary strings": (np.array(["no", "yes"]), _rng.rand(30)),
    "float32": (np.array([3, 7, 9]), _rng.rand(20, 3).astype(np.float32)),
}


@pytest.mark.parametrize("case", list(SCORE_CASES))
def test_predicted_labels_are_the_binarizers(case):
    labels, scores = SCORE_CASES[case]
    binarizer = fitted_binarizer(labels)
    ours = plain.predicted_labels(binarizer, scores)
    theirs = binarizer.inverse_transform(scores)
    assert ours is not None
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


def test_predicted_labels_decline_what_they_do_not_cover():
    multiclass = fitted_binarizer(np.array([3, 7, 9]))
    assert plain.predicted_labels(multiclass, _rng.rand(5, 4)) is None  # a column too many
    assert plain.predicted_labels(multiclass, _rng.rand(5, 3).tolist()) is None
    assert plain.predicted_labels(multiclass, _rng.rand(5)) is None
    binary = fitted_binarizer(np.array([0, 1]))
    assert plain.predicted_labels(binary, _rng.rand(5, 2)) is None
    multilabel = fitted_binarizer(np.array([[0, 1], [1, 1]]))
    assert plain.predicted_labels(multilabel, _rng.rand(5, 2)) is None
    import scipy.sparse

    sparse = fitted_binarizer(scipy.sparse.csr_matrix(np.array([[0, 1], [1, 0], [1, 0]])))
    assert plain.predicted_labels(sparse, _rng.rand(5, 2)) is None


@pytest.mark.parametrize("labels", [LABELS, np.array(["no", "yes"])])
def test_predict_is_sklearns(labels, monkeypatch):
    y = labels[np.arange(40) % len(labels)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = fsk.MLPClassifier(**SMALL).fit(X, y)
        theirs = SkClassifier(**SMALL).fit(X, y)
    fast = ours.predict(X)
    np.testing.assert_array_equal(fast, theirs.predict(X))
    monkeypatch.setattr(fsk, "predicted_labels", lambda *args: None)
    np.testing.assert_array_equal(fast, ours.predict(X))
