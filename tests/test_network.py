"""The tutorial drop-in `NeuralNetwork` against the tutorial's own class."""

import pickle

import numpy as np
import pytest

from conftest import TUTORIAL_X, TUTORIAL_Y, assert_close
from fastnn import NeuralNetwork
from fastnn import reference as ref


def _pair(seed, x=TUTORIAL_X, y=TUTORIAL_Y, **kw):
    np.random.seed(seed)
    tutorial = ref.NeuralNetwork(x, y)
    np.random.seed(seed)
    fast = NeuralNetwork(x, y, **kw)
    return tutorial, fast


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_tutorial_script_prints_the_same_numbers(seed):
    tutorial, fast = _pair(seed)
    assert_close(fast.weights1, tutorial.weights1)
    assert_close(fast.weights2, tutorial.weights2)
    assert_close(fast.output, tutorial.output)
    for _ in range(1500):
        tutorial.feedforward()
        tutorial.backprop()
        fast.feedforward()
        fast.backprop()
    for name in ("output", "layer1", "weights1", "weights2"):
        assert_close(getattr(fast, name), getattr(tutorial, name))
    # the tutorial's printout
    assert np.array2string(fast.output, precision=8) == np.array2string(tutorial.output, precision=8)


def test_same_attributes_as_the_tutorial():
    tutorial, fast = _pair(3)
    for name in ("input", "weights1", "weights2", "y", "output"):
        assert getattr(fast, name).shape == getattr(tutorial, name).shape
    tutorial.feedforward()
    fast.feedforward()
    assert fast.layer1.shape == tutorial.layer1.shape


def test_consumes_the_global_stream_like_the_tutorial():
    np.random.seed(3)
    ref.NeuralNetwork(TUTORIAL_X, TUTORIAL_Y)
    after_tutorial = np.random.rand()
    np.random.seed(3)
    NeuralNetwork(TUTORIAL_X, TUTORIAL_Y)
    assert np.random.rand() == after_tutorial


@pytest.mark.parametrize("iterations", [0, 1, 7, 1500])
def test_train_equals_feedforward_backprop_rounds(iterations):
    _, loop = _pair(5)
    _, fused = _pair(5)
    losses = []
    for _ in range(iterations):
        loop.feedforward()
        losses.append(float(np.sum((loop.y - loop.output) ** 2)))
        loop.backprop()
    history = fused.train(iterations)
    assert history.shape == (iterations,)
    assert_close(history, np.array(losses))
    assert_close(fused.weights1, loop.weights1)
    assert_close(fused.weights2, loop.weights2)
    if iterations:
        assert_close(fused.output, loop.output)
        assert_close(fused.layer1, loop.layer1)


def test_train_matches_tutorial_loop():
    tutorial, fast = _pair(11)
    for _ in range(1500):
        tutorial.feedforward()
        tutorial.backprop()
    fast.train(1500)
    assert_close(fast.output, tutorial.output)
    assert_close(fast.weights1, tutorial.weights1)
    # and it learned XOR
    assert np.abs(fast.output - TUTORIAL_Y).max() < 0.1


@pytest.mark.parametrize("n,d,k", [(1, 1, 1), (10, 5, 3), (64, 20, 4)])
@pytest.mark.parametrize("hidden", [1, 4, 40])
def test_any_shape_and_hidden_size(n, d, k, hidden, rng):
    x = rng.random((n, d))
    y = rng.random((n, k))
    np.random.seed(9)
    fast = NeuralNetwork(x, y, hidden_size=hidden, learning_rate=0.5)
    # an oracle with the same weights, the tutorial's math generalised
    w1, w2 = fast.weights1.copy(), fast.weights2.copy()
    for _ in range(20):
        ref_out = ref.forward(x, [w1, w2], None, "sigmoid", "sigmoid")
        wg, _ = ref.backward(ref_out, y, [w1, w2], "sigmoid", "sigmoid", "sse", False)
        w1 -= 0.5 * wg[0]
        w2 -= 0.5 * wg[1]
    fast.train(20)
    assert fast.weights1.shape == (d, hidden) and fast.weights2.shape == (hidden, k)
    assert_close(fast.weights1, w1)
    assert_close(fast.weights2, w2)


def test_float32_end_to_end():
    tutorial, fast = _pair(2, dtype="float32")
    for name in ("input", "y", "weights1", "weights2", "output"):
        assert getattr(fast, name).dtype == np.float32
    fast.train(200)
    assert fast.output.dtype == np.float32 and fast.layer1.dtype == np.float32
    for _ in range(200):
        tutorial.feedforward()
        tutorial.backprop()
    np.testing.assert_allclose(fast.output, tutorial.output, rtol=1e-4, atol=1e-5)


def test_outputs_are_fresh_arrays_like_the_tutorial():
    _, fast = _pair(0)
    fast.feedforward()
    first = fast.output
    fast.backprop()
    fast.feedforward()
    assert fast.output is not first
    assert not np.array_equal(first, fast.output)


def test_replaced_weights_are_used():
    _, fast = _pair(0)
    fast.weights1 = np.zeros((3, 4)).tolist()  # a list, as a user might write
    fast.weights2 = np.zeros((4, 1))
    fast.feedforward()
    np.testing.assert_array_equal(fast.output, 0.5)
    assert isinstance(fast.weights1, np.ndarray)


def test_backprop_before_feedforward_is_a_clear_error():
    _, fast = _pair(0)
    with pytest.raises(AttributeError, match="feedforward"):
        fast.backprop()


@pytest.mark.parametrize(
    "kwargs,exc,word",
    [
        ({"x": [[1, 2], [3, 4]], "y": [[1]]}, ValueError, "rows"),
        ({"x": [1, 2, 3], "y": [[1]]}, ValueError, "x"),
        ({"x": [["a", "b"]], "y": [[1]]}, TypeError, "x"),
        ({"x": [[np.nan, 1.0]], "y": [[1]]}, ValueError, "NaN"),
        ({"x": [[1.0, 1.0]], "y": [[1]], "hidden_size": 0}, ValueError, "hidden_size"),
        ({"x": [[1.0, 1.0]], "y": [[1]], "learning_rate": -1}, ValueError, "learning_rate"),
        ({"x": [[1.0, 1.0]], "y": [[1]], "dtype": "int32"}, ValueError, "dtype"),
    ],
)
def test_bad_input(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        NeuralNetwork(**kwargs)


def test_bad_iterations():
    _, fast = _pair(0)
    w1 = fast.weights1.copy()
    with pytest.raises(ValueError, match="iterations"):
        fast.train(-1)
    with pytest.raises(TypeError, match="iterations"):
        fast.train(2.5)
    np.testing.assert_array_equal(fast.weights1, w1)


def test_pickle_round_trip():
    _, fast = _pair(0)
    fast.train(100)
    clone = pickle.loads(pickle.dumps(fast))
    clone.feedforward()
    fast.feedforward()
    np.testing.assert_array_equal(clone.output, fast.output)
