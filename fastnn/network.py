"""`NeuralNetwork`: a compiled drop-in for the classic two-layer tutorial network.

The class keeps the tutorial's constructor, attributes and methods
(``feedforward``, ``backprop``), so that the tutorial's script runs on it
unchanged and prints the same numbers (to 1e-12), and adds ``train(iterations)``, the
whole loop in one compiled call. The tutorial lets its users replace or edit
any attribute between calls, so every method first brings the arrays it
reads back to contiguous arrays of the model's dtype and shape (checked,
with an error naming the attribute) before a kernel sees them. The kernels
(``fastnn._kernels.tutorial``) are plain loops at the tutorial's sizes,
where a BLAS call costs more than the arithmetic, and hand the products of
larger hidden layers to BLAS. ``fastnn.reference.NeuralNetwork`` is the
same math in NumPy, the oracle of the tests and the baseline of the
benchmarks.
"""

from __future__ import annotations

import math

import numpy as np

from fastnn import _validation as v

_tutorial_kernels = None


def _all_finite(arr):
    return bool(np.isfinite(arr).all())


def _kernels():
    """The compiled tutorial kernels, imported on first use (importing fastnn compiles nothing)."""
    global _tutorial_kernels
    if _tutorial_kernels is None:
        from fastnn._kernels import tutorial

        _tutorial_kernels = tutorial
    return _tutorial_kernels


class NeuralNetwork:
    """The tutorial's two-layer network, with compiled kernels.

    Same constructor, attributes and methods as the tutorial's class: after
    ``np.random.seed(s)`` the tutorial's script run with this class prints the
    same numbers (to 1e-12). Sigmoid activations, no biases, the
    sum-of-squares loss and ``weights += d_weights``.

    Parameters
    ----------
    x : array-like of shape (n_samples, n_features)
        Training input (stored as ``input``).
    y : array-like of shape (n_samples, n_outputs) or (n_samples,)
        Targets (stored as ``y``, one column per output).
    hidden_size : int, default 4
        Units in the hidden layer (the tutorial's 4).
    learning_rate : float, default 1.0
        Step size; the tutorial's ``weights += d_weights`` is 1.0.
    dtype : {"float64", "float32"}, default "float64"
        Precision of every array of the network.

    Attributes
    ----------
    input, y : ndarray
        The data, as C-contiguous arrays of ``dtype``.
    weights1 : ndarray of shape (n_features, hidden_size)
    weights2 : ndarray of shape (hidden_size, n_outputs)
        Drawn with ``np.random.rand`` in the tutorial's order (``weights1``
        first), so NumPy's global seed decides them.
    layer1 : ndarray of shape (n_samples, hidden_size)
        Hidden activations of the last :meth:`feedforward`.
    output : ndarray of shape (n_samples, n_outputs)
        Output of the last :meth:`feedforward` (zeros before the first).

    Examples
    --------
    >>> import numpy as np
    >>> from fastnn import NeuralNetwork
    >>> X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
    >>> y = np.array([[0], [1], [1], [0]])
    >>> np.random.seed(0)
    >>> nn = NeuralNetwork(X, y)
    >>> losses = nn.train(1500)
    >>> bool(np.abs(nn.output - y).max() < 0.2)
    True
    """

    def __init__(self, x, y, hidden_size=4, learning_rate=1.0, dtype="float64"):
        dt = v.check_dtype(dtype)
        hidden_size = v.check_int(hidden_size, "hidden_size", minimum=1)
        learning_rate = v.check_float(learning_rate, "learning_rate", minimum=0.0)
        x = v.check_array(x, "x", dt)
        y = v.check_array(y, "y", dt, allow_1d=True)
        v.check_same_rows(x, y, "x", "y")
        self.dtype = dt
        self.hidden_size = hidden_size
        self.learning_rate = learning_rate
        self.input = x
        self.weights1 = np.random.rand(self.input.shape[1], hidden_size).astype(dt, copy=False)
        self.weights2 = np.random.rand(hidden_size, y.shape[1]).astype(dt, copy=False)
        self.y = y
        self.output = np.zeros(self.y.shape, dtype=dt)
        self._scratch = None
        self._checked = None
        self._fed = None

    # the user may replace or edit any attribute between calls, as with the
    # tutorial's class: bring them back to contiguous arrays of the right
    # dtype and shapes before a kernel sees them.
    def _array(self, name, shape=None, columns_of=None):
        arr = getattr(self, name)
        if not (
            type(arr) is np.ndarray
            and arr.dtype == self.dtype
            and arr.ndim == 2
            and arr.flags.c_contiguous
            and arr.flags.writeable
        ):
            arr = v.check_array(arr, name, self.dtype, allow_1d=name == "y")
            if not arr.flags.writeable:  # the kernels update weights in place
                arr = arr.copy()
            setattr(self, name, arr)
        elif arr.size == 0 or not np.isfinite(arr).all():
            v.check_array(arr, name, self.dtype)  # raises, naming the attribute
        if shape is not None and arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
        return arr

    def _arrays(self):
        X, W1, W2 = self.input, self.weights1, self.weights2
        checked = self._checked
        # fast path: the very arrays checked last time, with the same shapes
        if (
            checked is not None
            and checked[0] is X
            and checked[1] is W1
            and checked[2] is W2
            and checked[3] == (X.shape, W1.shape, W2.shape)
        ):
            return X, W1, W2
        X = self._array("input")
        n, d = X.shape
        W1 = self._array("weights1")
        if W1.shape[0] != d:
            raise ValueError(f"weights1 must have {d} rows (one per input feature), got shape {W1.shape}")
        h = W1.shape[1]
        W2 = self._array("weights2")
        if W2.shape[0] != h:
            raise ValueError(f"weights2 must have {h} rows (one per hidden unit), got shape {W2.shape}")
        self._checked = (X, W1, W2, (X.shape, W1.shape, W2.shape))
        return X, W1, W2

    def _targets(self, n, k):
        Y = self.y
        if self._checked is not None and len(self._checked) > 4 and self._checked[4] is Y and Y.shape == (n, k):
            return Y
        Y = self._array("y")
        if Y.shape != (n, k):
            raise ValueError(f"y must have shape {(n, k)} to match input and weights2, got {Y.shape}")
        self._checked = self._checked[:4] + (Y,)
        return Y

    def _scratch_for(self, n, d, h, k):
        s = self._scratch
        if s is None or s[0] != (n, d, h, k):
            dt = self.dtype
            s = (
                (n, d, h, k),
                np.empty((n, h), dt),
                np.empty((n, k), dt),
                np.empty((d, h), dt),
                np.empty((h, k), dt),
            )
            self._scratch = s
        return s[1:]

    def feedforward(self):
        """Compute ``layer1 = sigmoid(input @ weights1)`` and ``output = sigmoid(layer1 @ weights2)``.

        Both are fresh arrays, as in the tutorial.
        """
        X, W1, W2 = self._arrays()
        layer1 = np.empty((X.shape[0], W1.shape[1]), self.dtype)
        output = np.empty((X.shape[0], W2.shape[1]), self.dtype)
        _kernels().feedforward(X, W1, W2, layer1, output)
        self.layer1 = layer1
        self.output = output
        self._fed = (layer1, output)

    def backprop(self):
        """One gradient step on ``sum((y - output)**2)``, from the last :meth:`feedforward`.

        Like the tutorial, it uses the stored ``layer1`` and ``output`` and
        updates ``weights1`` and ``weights2`` in place.
        """
        if not hasattr(self, "layer1"):
            raise AttributeError("backprop() needs layer1 and output: call feedforward() first")
        X, W1, W2 = self._arrays()
        n, d = X.shape
        h, k = W2.shape
        Y = self._targets(n, k)
        fed = self._fed
        if fed is not None and fed[0] is self.layer1 and fed[1] is self.output:
            layer1, output = fed  # made by feedforward() for these shapes
        else:
            layer1 = self._array("layer1", (n, h))
            output = self._array("output", (n, k))
        d1, d2, g1, g2 = self._scratch_for(n, d, h, k)
        _kernels().backprop(X, Y, W1, W2, layer1, output, self.learning_rate, d1, d2, g1, g2)

    def train(self, iterations=1500):
        """Run ``iterations`` rounds of :meth:`feedforward` + :meth:`backprop` in one compiled call.

        Parameters
        ----------
        iterations : int, default 1500

        Returns
        -------
        ndarray of shape (iterations,)
            The loss ``sum((y - output)**2)`` before each step.

        Raises
        ------
        DivergenceError
            If the loss becomes NaN or infinite (only with absurdly large
            learning rates or inputs: the sigmoid output bounds the loss).
            The network then keeps the weights of the last finite loss.
        """
        iterations = v.check_int(iterations, "iterations", minimum=0)
        X, W1, W2 = self._arrays()
        n, d = X.shape
        h, k = W2.shape
        Y = self._targets(n, k)
        history = np.empty(iterations, dtype=np.float64)
        if iterations == 0:
            return history
        layer1 = np.empty((n, h), self.dtype)
        output = np.empty((n, k), self.dtype)
        d1, d2, g1, g2 = self._scratch_for(n, d, h, k)
        W1_start, W2_start = W1.copy(), W2.copy()
        _kernels().train(X, Y, W1, W2, layer1, output, self.learning_rate, iterations, d1, d2, g1, g2, history)
        self.layer1 = layer1
        self.output = output
        self._fed = (layer1, output)
        # a NaN never leaves the weights again, so the last loss and the
        # final weights tell whether anything went non-finite
        if not (math.isfinite(history[-1]) and _all_finite(W1) and _all_finite(W2)):
            self._diverged(history, W1_start, W2_start)
        return history

    def _diverged(self, history, W1_start, W2_start):
        # the loss of iteration i is measured on the weights after i steps;
        # replay the steps up to the last finite loss (training is
        # deterministic) so that the model keeps those weights, then raise
        from fastnn.mlp import DivergenceError

        bad = np.flatnonzero(~np.isfinite(history))
        # no non-finite loss: the last step made the weights non-finite
        iteration = int(bad[0]) if bad.size else history.size
        self.weights1[...] = W1_start
        self.weights2[...] = W2_start
        if iteration > 1:
            self.train(iteration - 1)
        else:
            self.feedforward()
        raise DivergenceError(
            f"training diverged at iteration {iteration}: "
            + (f"the loss became {history[iteration]}; " if bad.size else "the weights became non-finite; ")
            + "the network keeps the weights of the last finite loss (try a smaller learning_rate)",
            iteration,
        )

    def loss(self):
        """Sum of squared errors of the current ``output`` against ``y``."""
        return float(np.sum((self.y - self.output) ** 2))

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_scratch"] = None
        state["_checked"] = None
        state["_fed"] = None
        return state
