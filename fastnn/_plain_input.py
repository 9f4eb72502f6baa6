"""scikit-learn's input checks of a fitted estimator, for plain arrays, at a tenth of the cost.

``partial_fit`` and ``predict`` check their input with scikit-learn's
``validate_data`` (and a classifier's labels with ``unique_labels`` and its
``LabelBinarizer``). On scikit-learn 1.9 those checks take about 0.5-1 ms a
call, whatever the number of rows: more than a ``partial_fit`` of tens of
rows takes to train, so a stream of small batches through fastnn's
estimators ran no faster than through scikit-learn's.

The functions here recognise the common case, where every check passes and
changes nothing: NumPy arrays of a float dtype that scikit-learn keeps, the
number of features seen in ``fit``, no feature names on either side, finite
values, and labels that are all known classes. They return what
scikit-learn's checks would return, or None for anything else (another
container, a dtype scikit-learn converts, a warning or an error to give), and
the caller then runs scikit-learn's own checks, so every message, warning
and conversion stays scikit-learn's. tests/test_plain_input.py compares both
paths on inputs of every kind.
"""

import numpy as np

FLOATS = (np.dtype(np.float64), np.dtype(np.float32))  # the dtypes the estimators keep


def _finite(a):
    # every element finite: the sum first, as scikit-learn's _assert_all_finite does
    # (a finite sum has no NaN or infinity in it; an overflowing one is looked at closely)
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(a.sum()):
            return True
    return bool(np.isfinite(a).all())


def plain_X(estimator, X):
    """``X`` when ``validate_data(estimator, X, reset=False)`` would return it
    unchanged, without a warning: else None."""
    if type(X) is not np.ndarray or X.ndim != 2 or X.dtype not in FLOATS:
        return None
    if hasattr(estimator, "feature_names_in_") or X.shape[0] < 1:
        return None
    if X.shape[1] != getattr(estimator, "n_features_in_", None) or not _finite(X):
        return None
    return X


def plain_targets(y, n_rows):
    """A regressor's ``y`` when scikit-learn's checks would return it unchanged:
    numbers, one per row, finite, 1-D or with two or more columns (one column
    would be raveled with a warning); else None."""
    if type(y) is not np.ndarray or y.dtype.kind not in "fiu" or y.shape[:1] != (n_rows,):
        return None
    if not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] >= 2)):
        return None
    return y if y.dtype.kind != "f" or _finite(y) else None


def plain_labels(binarizer, y, n_rows):
    """A classifier's labels ``y`` as the bool targets that scikit-learn's
    ``partial_fit`` trains on (``binarizer.transform(y).astype(bool)``), when
    ``y`` is a 1-D array of integer or string labels, one per row, all of them
    among ``binarizer.classes_`` (two or more, of the same kind); else None."""
    classes = binarizer.classes_
    if type(y) is not np.ndarray or y.ndim != 1 or y.shape[0] != n_rows or not _plain(binarizer):
        return None
    kinds = {y.dtype.kind, classes.dtype.kind}
    if not (kinds <= set("iu") or kinds == {"U"}) or len(classes) < 2:
        return None
    index = np.searchsorted(classes, y)
    if index.size and (index.max() >= len(classes) or not np.array_equal(classes[index], y)):
        return None  # a label scikit-learn would reject
    return binarized(index, len(classes))


def _plain(binarizer):
    # a LabelBinarizer fitted on dense binary or multiclass labels, with its
    # default labels (1 and 0) and dense output
    if binarizer.y_type_ not in ("binary", "multiclass"):
        return False
    if binarizer.sparse_input_ or binarizer.sparse_output:
        return False
    return (binarizer.pos_label, binarizer.neg_label) == (1, 0)


def binarized(index, n_classes):
    """Bool targets of the output units from each row's class index (one unit,
    for the second class, when there are two classes)."""
    if n_classes == 2:
        return (index == 1)[:, None]
    return index[:, None] == np.arange(n_classes)


def predicted_labels(binarizer, scores):
    """``binarizer.inverse_transform(scores)`` for a classifier's output
    ``scores`` (a NumPy array: one column per class, or 1-D for two classes),
    when ``binarizer`` was fitted on dense binary or multiclass labels with
    its default labels: the class of the highest score, or the second class
    where the score of two classes is above 0.5. Else None."""
    if type(scores) is not np.ndarray or not _plain(binarizer):
        return None
    classes = binarizer.classes_
    if binarizer.y_type_ == "multiclass" and scores.ndim == 2 and scores.shape[1] == len(classes):
        return classes[scores.argmax(axis=1)]
    if binarizer.y_type_ == "binary" and scores.ndim == 1 and len(classes) == 2:
        return classes[(scores > 0.5).astype(np.intp)]
    return None
