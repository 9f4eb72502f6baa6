"""The one training driver (``fastnn._driver``): which kernel a fit takes,
and the estimators on the tile-streamed kernel against scikit-learn.

Estimators whose largest product is large run their epochs on the tiled
kernel, one compiled call per epoch, with scikit-learn's stopping rule in
Python; these tests compare such fits with scikit-learn's own estimators
(the oracle of the drop-in) and with the same fit on the two-shard twins.
"""

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import neural_network as sknn  # noqa: E402

from fastnn import MLP, _threads  # noqa: E402
from fastnn import _sklearn_compat as compat  # noqa: E402
from fastnn import sklearn as fsk  # noqa: E402
from fastnn._driver import Driver, takes_tiled  # noqa: E402
from fastnn._runtime import Batches, TiledTrainer, TwinTrainer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

_rng = np.random.RandomState(3)
X = _rng.randn(260, 64)
Y_CLASS = np.digitize(X[:, 0] + 0.5 * X[:, 1], [-0.6, 0.6])
Y_REG = X[:, :2] @ np.array([[1.0, -0.5], [0.3, 2.0]])
# batch 200 x 64 x 512: 6.6M multiply-adds, above SINGLE_THREAD_MACS (4M)
PAIRS = {
    "classifier": (fsk.MLPClassifier, sknn.MLPClassifier),
    "regressor": (fsk.MLPRegressor, sknn.MLPRegressor),
}
WIDE = dict(hidden_layer_sizes=(512,), batch_size=200, random_state=0, max_iter=4, n_iter_no_change=100)


def _params(est):
    return list(est.coefs_) + list(est.intercepts_)


def _assert_same_fit(ours, theirs, rtol):
    for a, b in zip(_params(ours), _params(theirs)):
        assert a.dtype == b.dtype
        scale = float(np.max(np.abs(b)))
        np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)


def test_the_driver_takes_the_tiled_kernel_for_large_products():
    empty = np.empty(0)
    wide = Batches(X, X, empty, 200, True)
    assert takes_tiled((64, 512, 3), wide)
    assert takes_tiled((64, 512, 3), wide._replace(weights=np.ones(260)))
    assert not takes_tiled((64, 16, 3), wide)
    assert not takes_tiled((64, 512, 3), wide._replace(batch_size=50))  # 1.6M multiply-adds
    # ... or many weights, whatever the batch
    assert takes_tiled((64, 8192, 10), wide._replace(batch_size=4))  # 0.61M weights
    assert takes_tiled((64, 4096, 10), wide._replace(batch_size=1))
    assert not takes_tiled((64, 2048, 10), wide._replace(batch_size=4))


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
@pytest.mark.parametrize("alpha", [0.0, 1e-4])  # 0: REDUCE sums the output layer's span only
def test_wide_estimators_run_on_the_tiled_kernel_like_sklearn(kind, solver, shuffle, alpha):
    ours_cls, theirs_cls = PAIRS[kind]
    y = Y_CLASS if kind == "classifier" else Y_REG
    params = dict(WIDE, solver=solver, shuffle=shuffle, learning_rate_init=0.01, alpha=alpha)
    ours = ours_cls(**params).fit(X, y)
    assert ours._fastnn_epochs_by_twin == {"parallel": 0, "serial": 0}  # the tiled kernel ran them
    theirs = theirs_cls(**params).fit(X, y)
    _assert_same_fit(ours, theirs, 1e-10)


@pytest.mark.skipif(not compat.SAMPLE_WEIGHT, reason="sample_weight needs scikit-learn 1.7")
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_wide_estimators_with_sample_weights_run_on_the_tiled_kernel_like_sklearn(kind, shuffle):
    ours_cls, theirs_cls = PAIRS[kind]
    y = Y_CLASS if kind == "classifier" else Y_REG
    sample_weight = np.random.RandomState(5).uniform(0.0, 2.0, X.shape[0])
    params = dict(WIDE, solver="adam", shuffle=shuffle, alpha=1e-3)
    ours = ours_cls(**params).fit(X, y, sample_weight=sample_weight)
    assert ours._fastnn_epochs_by_twin == {"parallel": 0, "serial": 0}  # the tiled kernel ran them
    theirs = theirs_cls(**params).fit(X, y, sample_weight=sample_weight)
    _assert_same_fit(ours, theirs, 1e-10)


def test_wide_estimators_give_the_twins_results_on_the_tiled_kernel(monkeypatch):
    params = dict(WIDE, solver="adam", alpha=1e-3, max_iter=3)
    tiled = fsk.MLPClassifier(**params).fit(X, Y_CLASS)
    monkeypatch.setattr(_threads, "SINGLE_THREAD_MACS", 1 << 40)  # every product small: the twins
    twins = fsk.MLPClassifier(**params).fit(X, Y_CLASS)
    assert sum(twins._fastnn_epochs_by_twin.values()) == 3
    _assert_same_fit(tiled, twins, 1e-12)


@pytest.mark.parametrize("schedule", ["constant", "invscaling", "adaptive"])
def test_scikit_learns_stopping_rule_runs_between_tiled_epochs(schedule):
    # a tolerance no epoch can meet: both stop after n_iter_no_change + 1
    # epochs (the adaptive schedule divides the rate by 5 first, until it is
    # below 1e-6); the tiled kernel runs the rule between its epochs
    params = dict(WIDE, solver="sgd", tol=1e3, n_iter_no_change=2, max_iter=50, learning_rate=schedule)
    ours = fsk.MLPRegressor(**params).fit(X, Y_REG)
    theirs = sknn.MLPRegressor(**params).fit(X, Y_REG)
    assert ours._fastnn_epochs_by_twin == {"parallel": 0, "serial": 0}
    assert ours.n_iter_ < 50
    _assert_same_fit(ours, theirs, 1e-10)
    assert ours._optimizer.learning_rate == theirs._optimizer.learning_rate


def test_partial_fit_and_early_stopping_on_the_tiled_kernel_match_sklearn():
    params = dict(WIDE, solver="adam", early_stopping=True, validation_fraction=0.2, max_iter=5)
    ours = fsk.MLPClassifier(**params).fit(X, Y_CLASS)
    theirs = sknn.MLPClassifier(**params).fit(X, Y_CLASS)
    _assert_same_fit(ours, theirs, 1e-10)
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
    ours = fsk.MLPRegressor(**WIDE)
    theirs = sknn.MLPRegressor(**WIDE)
    for _ in range(2):
        ours.partial_fit(X, Y_REG)
        theirs.partial_fit(X, Y_REG)
    _assert_same_fit(ours, theirs, 1e-10)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverging_wide_fit_fails_as_sklearns_does():
    huge = X * 1e200
    params = dict(WIDE, solver="sgd", learning_rate_init=1.0, max_iter=3)
    with pytest.raises(ValueError, match="non-finite parameter weights"):
        sknn.MLPRegressor(**params).fit(huge, Y_REG)
    ours = fsk.MLPRegressor(**params)
    with pytest.raises(ValueError, match="non-finite parameter weights"):
        ours.fit(huge, Y_REG)
    assert ours._fastnn_epochs_by_twin == {"parallel": 0, "serial": 0}


def test_mlp_and_the_estimators_share_the_driver(monkeypatch):
    # every fit of either facade goes through Driver.run
    calls = []
    run = Driver.run
    monkeypatch.setattr(Driver, "run", lambda self, *a, **k: calls.append(self) or run(self, *a, **k))
    MLP([64, 8, 3], random_state=0).fit(X, Y_REG @ np.ones((2, 3)), epochs=2, batch_size=100)
    MLP([64, 512, 3], random_state=0).fit(X[:200], Y_REG[:200] @ np.ones((2, 3)), epochs=1)
    fsk.MLPRegressor(**dict(WIDE, max_iter=1)).fit(X, Y_REG)
    fsk.MLPRegressor(hidden_layer_sizes=(8,), max_iter=1).fit(X, Y_REG)
    # (the twins' runner may split a fit into chunks: one driver per fit)
    drivers = [d for i, d in enumerate(calls) if i == 0 or calls[i - 1] is not d]
    assert [type(d.trainer) for d in drivers] == [TwinTrainer, TiledTrainer, TiledTrainer, TwinTrainer]


@pytest.mark.parametrize(
    "layer_sizes, batch",
    [((64, 4096, 10), 1024), ((784, 2048, 10), 1024), ((64, 1024, 10), 256), ((64, 256, 256, 3), 200),
     ((64, 512, 3), 200), ((10, 100, 2), 32), ((64, 3), 50), ((64, 256, 10), 512), ((64, 16, 10), 4096)],
)  # fmt: skip
def test_tiles_give_each_phase_several_blocks_within_their_bounds(layer_sizes, batch):
    from fastnn._kernels import tiled

    rows, cols = tiled.tile_sizes(layer_sizes, batch)
    assert 64 <= rows <= tiled.MAX_ROWS and 128 <= cols <= tiled.MAX_COLS
    widest = max(layer_sizes[1:-1], default=layer_sizes[-1])
    blocks = -(-batch // rows) * -(-widest // cols)
    # as many blocks as MIN_TASKS asks, unless the smallest blocks give fewer
    assert blocks >= tiled.MIN_TASKS or (rows, cols) == (64, 128)
    plan = tiled.make_plan(layer_sizes, batch, 8)
    assert (plan[tiled.P_ROWS], plan[tiled.P_COLS]) == (rows, cols)
    # the largest hidden gradient: MIN_TASKS / 2 blocks, unless the smallest give fewer
    grad_rows, grad_cols = plan[tiled.P_GRAD_ROWS], plan[tiled.P_GRAD_COLS]
    hidden = list(zip(layer_sizes[:-2], layer_sizes[1:-1]))
    if hidden:
        fan_in, fan_out = max(hidden, key=lambda pair: pair[0] * pair[1])
        blocks = -(-fan_in // grad_rows) * -(-fan_out // grad_cols)
        assert blocks >= tiled.MIN_TASKS // 2 or (grad_rows, grad_cols) == (32, 64)
        assert 32 <= grad_rows <= max(cols // 2, 64) and 64 <= grad_cols <= cols
    # the output layer: MIN_TASKS tiles (each its own group), unless a tile
    # would get under 32 rows or out of a core's L2 cache
    out_rows = plan[tiled.P_OUT_ROWS]
    assert out_rows * layer_sizes[-2] * 8 <= 256 * 1024 or out_rows == 4
    tiles = -(-plan[tiled.P_BLOCK] // out_rows)
    assert tiles >= tiled.MIN_TASKS or out_rows == 32 or out_rows * layer_sizes[-2] * 8 > 128 * 1024
    assert plan[tiled.P_GROUP_TILES] == 1
