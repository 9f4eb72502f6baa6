"""Pure-NumPy reference implementation of every piece of fastnn's math.

This module is the test oracle and the baseline of every benchmark. It is
written for clarity, never for speed, and imports nothing else from fastnn.
Each compiled kernel in :mod:`fastnn._kernels` has a twin here with the same
name and argument order.

Conventions (shared with the rest of the package):

* weights are stored ``(fan_in, fan_out)`` and applied as ``X @ W + b``;
* ``sigmoid_derivative`` and friends take the *activated* value, except
  ``gelu_derivative`` and ``silu_derivative``, which take ``z`` (the value
  before the activation);
* ``activation`` is one name for every hidden layer, or a list of one per
  hidden layer;
* losses: ``"sse"`` = ``sum((y - out)**2)``, ``"mse"`` = ``mean((y - out)**2)``
  over all elements, ``"log_loss"`` = mean over samples of the cross-entropy
  (binary with a sigmoid output, multiclass with softmax);
* gradients are the true gradients of the named loss, and a step is
  ``W -= learning_rate * dW``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

__all__ = [
    "sigmoid",
    "sigmoid_derivative",
    "tanh",
    "tanh_derivative",
    "relu",
    "relu_derivative",
    "identity",
    "identity_derivative",
    "softmax",
    "exp",
    "exp_derivative",
    "leaky_relu",
    "leaky_relu_derivative",
    "elu",
    "elu_derivative",
    "softplus",
    "softplus_derivative",
    "gelu",
    "gelu_derivative",
    "silu",
    "silu_derivative",
    "activate",
    "activation_derivative",
    "dropout_mask",
    "forward",
    "loss",
    "output_delta",
    "backward",
    "loss_and_gradients",
    "gd_update",
    "momentum_update",
    "adam_update",
    "gd_step",
    "train_gd",
    "NeuralNetwork",
]


# --------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------
def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``, overflow-safe, dtype-preserving."""
    x = np.asarray(x)
    out = np.empty_like(x, dtype=np.result_type(x, np.float32))
    pos = x >= 0
    out[pos] = 1 / (1 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1 + e)
    return out


def sigmoid_derivative(s):
    """Derivative of the sigmoid, given the activated value ``s``: ``s * (1 - s)``."""
    return s * (1 - s)


def tanh(x):
    """Hyperbolic tangent."""
    return np.tanh(x)


def tanh_derivative(t):
    """Derivative of tanh given the activated value ``t``: ``1 - t**2``."""
    return 1 - t * t


def relu(x):
    """Rectified linear unit ``max(x, 0)``."""
    return np.maximum(x, 0)


def relu_derivative(r):
    """Derivative of relu given the activated value ``r``: 1 where ``r > 0`` else 0."""
    return (r > 0).astype(r.dtype)


def identity(x):
    """Identity activation."""
    return np.array(x, copy=True)


def identity_derivative(a):
    """Derivative of the identity: ones."""
    return np.ones_like(a)


def softmax(x):
    """Row-wise softmax, shifted by the row maximum so that it never overflows."""
    shifted = x - x.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def exp(x):
    """Elementwise exponential (the output of scikit-learn's Poisson regressor)."""
    return np.exp(x)


def exp_derivative(a):
    """Derivative of exp given the activated value ``a``: ``a``."""
    return a


LEAKY_SLOPE = 0.01


def leaky_relu(x):
    """Leaky rectifier: ``x`` where ``x > 0``, else ``0.01 * x``."""
    return np.where(x > 0, x, x * x.dtype.type(LEAKY_SLOPE))


def leaky_relu_derivative(a):
    """Derivative of leaky_relu given the activated value ``a``: 1 where ``a > 0``, else 0.01."""
    return np.where(a > 0, a.dtype.type(1), a.dtype.type(LEAKY_SLOPE))


def elu(x):
    """Exponential linear unit (alpha 1): ``x`` where ``x > 0``, else ``exp(x) - 1``."""
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def elu_derivative(a):
    """Derivative of elu given the activated value ``a``: 1 where ``a > 0``, else ``a + 1``."""
    return np.where(a > 0, a.dtype.type(1), a + 1)


def softplus(x):
    """``log(1 + exp(x))``, written so that it never overflows."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def softplus_derivative(a):
    """Derivative of softplus given the activated value ``a``: ``sigmoid(x) = 1 - exp(-a)``."""
    return -np.expm1(-a)


def gelu(x):
    """Gaussian error linear unit, exact: ``x * Phi(x)``, ``Phi`` the standard normal CDF."""
    return x * x.dtype.type(0.5) * (1 + erf(x / x.dtype.type(np.sqrt(2.0))))


def gelu_derivative(z):
    """Derivative of gelu at ``z`` (not the activated value): ``Phi(z) + z * phi(z)``."""
    cdf = z.dtype.type(0.5) * (1 + erf(z / z.dtype.type(np.sqrt(2.0))))
    return cdf + z * np.exp(-(z * z) / 2) / z.dtype.type(np.sqrt(2.0 * np.pi))


def silu(x):
    """Sigmoid linear unit: ``x * sigmoid(x)``."""
    return x * sigmoid(x)


def silu_derivative(z):
    """Derivative of silu at ``z`` (not the activated value): ``s * (1 + z * (1 - s))``."""
    s = sigmoid(z)
    return s * (1 + z * (1 - s))


# name -> (function, derivative, what the derivative takes: "a" or "z")
_ACTIVATIONS = {
    "identity": (identity, identity_derivative, "a"),
    "exp": (exp, exp_derivative, "a"),
    "sigmoid": (sigmoid, sigmoid_derivative, "a"),
    "logistic": (sigmoid, sigmoid_derivative, "a"),
    "tanh": (tanh, tanh_derivative, "a"),
    "relu": (relu, relu_derivative, "a"),
    "softmax": (softmax, None, "a"),
    "leaky_relu": (leaky_relu, leaky_relu_derivative, "a"),
    "elu": (elu, elu_derivative, "a"),
    "softplus": (softplus, softplus_derivative, "a"),
    "gelu": (gelu, gelu_derivative, "z"),
    "silu": (silu, silu_derivative, "z"),
}


def _entry(name):
    """``(function, derivative, takes)`` of an activation: a name of the table, or
    an object with scalar ``function(z)`` and ``derivative(z, a)`` (a
    ``fastnn.Activation``, duck-typed: this module imports nothing of fastnn),
    applied element by element."""
    if isinstance(name, str):
        return _ACTIVATIONS[name]

    def function(z):
        return np.vectorize(name.function, otypes=[z.dtype])(z)

    def derivative(z, a):
        return np.vectorize(name.derivative, otypes=[z.dtype])(z, a)

    return function, derivative, "za"


def activate(z, name):
    """Apply the activation called ``name`` (or an object with ``function``) to ``z``."""
    return _entry(name)[0](z)


def activation_derivative(a, name, z=None):
    """Derivative of activation ``name`` given its activated value ``a`` (and ``z``,
    the value before it, for gelu, silu and objects with ``derivative(z, a)``)."""
    _, deriv, takes = _entry(name)
    if deriv is None:
        raise ValueError("softmax has no elementwise derivative; use it as output with log_loss")
    if takes in ("z", "za") and z is None:
        raise ValueError(f"the derivative of {name} needs z, the value before the activation")
    if takes == "za":
        return deriv(z, a)
    return deriv(z if takes == "z" else a)


def _hidden(activation, i):
    """The activation of hidden layer ``i``: ``activation`` is one for all, or a list of one per layer."""
    return activation[i] if isinstance(activation, (list, tuple)) else activation


# --------------------------------------------------------------------------
# dropout
# --------------------------------------------------------------------------
def _splitmix(x):
    """SplitMix64's output for states ``x`` (uint64 arrays, which wrap around)."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dropout_mask(shape, rate, seed, epoch, first_row, layer, dtype=np.float64):
    """Inverted dropout's mask of hidden layer ``layer`` for rows ``first_row ...``.

    Entries are 0 (dropped) or ``1 / (1 - p)``, with ``p = round(rate *
    2**32) / 2**32``: the unit ``(row, j)`` is dropped when the top 32 bits
    of ``splitmix(key(row) + j)`` are below ``round(rate * 2**32)``, with
    ``key(row) = splitmix(splitmix(splitmix(splitmix(seed) ^ epoch) ^ row) ^
    layer)``. ``row`` is the row's position in the epoch.
    """
    threshold = int(round(rate * 2**32))
    u = np.uint64
    h = _splitmix(np.array([seed], dtype=u))
    h = _splitmix(h ^ u(epoch))
    rows = np.arange(shape[0], dtype=u) + u(first_row)
    key = _splitmix(_splitmix(h ^ rows) ^ u(layer))
    bits = _splitmix(key[:, None] + np.arange(shape[1], dtype=u)[None, :]) >> u(32)
    scale = np.dtype(dtype).type(1.0 / (1.0 - threshold / 2**32))
    return np.where(bits < u(threshold), np.dtype(dtype).type(0), scale)


# --------------------------------------------------------------------------
# network math
# --------------------------------------------------------------------------
def _masks(dropout, X, weights):
    """The masks of the hidden layers for ``dropout = (rates, seed, epoch, first_row)`` (or Nones)."""
    if dropout is None:
        return [None] * (len(weights) - 1)
    rates, seed, epoch, first_row = dropout
    return [
        dropout_mask((X.shape[0], W.shape[1]), rate, seed, epoch, first_row, i, X.dtype) if rate > 0 else None
        for i, (rate, W) in enumerate(zip(rates, weights[:-1]))
    ]


def forward(X, weights, biases, activation, output_activation, dropout=None):
    """Forward pass of a stack of dense layers.

    Returns the list of activations ``[X, a1, ..., aL]``. ``dropout =
    (rates, seed, epoch, first_row)`` multiplies each hidden layer's
    activation by its :func:`dropout_mask` (training only).
    """
    acts = [X]
    n_layers = len(weights)
    masks = _masks(dropout, X, weights)
    for i, W in enumerate(weights):
        z = acts[-1] @ W
        if biases is not None:
            z = z + biases[i]
        name = output_activation if i == n_layers - 1 else _hidden(activation, i)
        a = activate(z, name)
        if i < n_layers - 1 and masks[i] is not None:
            a = a * masks[i]
        acts.append(a)
    return acts


def _row_weights(y, sample_weight):
    """(per-row weights as a column, their sum): ones and the row count without weights."""
    if sample_weight is None:
        return 1.0, y.shape[0]
    w = np.asarray(sample_weight, dtype=np.float64)
    return w[:, None], float(w.sum())


def loss(y, output, loss_name, output_activation="sigmoid", sample_weight=None):
    """Value of the named loss for targets ``y`` and network ``output``.

    ``log_loss`` is the binary (multi-label) cross-entropy for a sigmoid
    output and the categorical one for a softmax output; probabilities are
    clipped to ``[eps, 1 - eps]`` so that it is always finite. The private
    ``"squared_error"`` loss is scikit-learn's ``mean((y - out)**2) / 2``.
    With ``sample_weight``, each row's terms are multiplied by its weight and
    the means over rows divide by the sum of the weights.
    """
    w, n = _row_weights(y, sample_weight)
    if loss_name == "sse":
        return np.sum(w * (y - output) ** 2)
    if loss_name == "mse":
        return np.sum(w * (y - output) ** 2) / (n * y.shape[1])
    if loss_name == "log_loss":
        eps = np.finfo(output.dtype).eps
        p = np.clip(output, eps, 1 - eps)
        if output_activation == "softmax":
            return -np.sum(w * y * np.log(p)) / n
        return -np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p))) / n
    if loss_name == "squared_error":
        return np.sum(w * (y - output) ** 2) / (n * y.shape[1]) / 2
    if loss_name == "poisson":
        # half Poisson deviance, with 0 * log(0) = 0
        safe_y = np.where(y > 0, y, 1.0)
        return np.sum(w * (np.where(y > 0, y * np.log(safe_y / output), 0.0) - y + output)) / n
    raise ValueError(f"unknown loss {loss_name!r}")


def output_delta(y, output, loss_name, output_activation, sample_weight=None):
    """Gradient of the loss with respect to the output layer's pre-activation."""
    w, n = _row_weights(y, sample_weight)
    if loss_name == "log_loss":
        if output_activation not in ("sigmoid", "logistic", "softmax"):
            raise ValueError("log_loss needs a sigmoid or softmax output")
        return w * (output - y) / n
    if loss_name == "poisson":
        if output_activation != "exp":
            raise ValueError("poisson needs an exp output")
        return w * (output - y) / n
    if loss_name == "sse":
        d_out = 2 * w * (output - y)
    elif loss_name == "mse":
        d_out = 2 * w * (output - y) / (n * y.shape[1])
    elif loss_name == "squared_error":
        # scikit-learn's convention: not divided by n_outputs (its issue #8349)
        d_out = w * (output - y) / n
    else:
        raise ValueError(f"unknown loss {loss_name!r}")
    return d_out * activation_derivative(output, output_activation)


def backward(
    acts, y, weights, activation, output_activation, loss_name, with_bias, sample_weight=None, biases=None,
    dropout=None,
):  # fmt: skip
    """Backward pass: gradients of the loss for every weight (and bias).

    ``acts`` is the list returned by :func:`forward` (with the same
    ``dropout``). Returns ``(weight_grads, bias_grads)``; ``bias_grads`` is
    ``None`` without bias. A hidden layer whose derivative needs ``z``
    (gelu, silu) or whose output was dropped has ``z`` computed again from
    ``acts``, ``weights`` and ``biases``.
    """
    masks = _masks(dropout, acts[0], weights)
    n_layers = len(weights)
    delta = output_delta(y, acts[-1], loss_name, output_activation, sample_weight)
    weight_grads = [None] * n_layers
    bias_grads = [None] * n_layers if with_bias else None
    for i in range(n_layers - 1, -1, -1):
        weight_grads[i] = acts[i].T @ delta
        if with_bias:
            bias_grads[i] = delta.sum(axis=0)
        if i > 0:
            name = _hidden(activation, i - 1)
            mask, z, a = masks[i - 1], None, acts[i]
            if _entry(name)[2] != "a" or mask is not None:
                z = acts[i - 1] @ weights[i - 1] + (biases[i - 1] if with_bias else 0)
                a = activate(z, name)
            slope = activation_derivative(a, name, z)
            delta = (delta @ weights[i].T) * (slope if mask is None else slope * mask)
    return weight_grads, bias_grads


def loss_and_gradients(
    X, y, weights, biases, activation, output_activation, loss_name, alpha=0.0, sample_weight=None,
    dropout=None,
):  # fmt: skip
    """Loss and its gradients ``(loss, weight_grads, bias_grads)`` for one batch.

    ``alpha`` adds scikit-learn's L2 penalty ``0.5 * alpha * sum(W**2) / n``
    on the weights (not the biases) to the loss, and ``alpha * W / n`` to
    their gradients; ``n`` is the number of rows, or the sum of
    ``sample_weight`` (scikit-learn's weighted loss).
    """
    acts = forward(X, weights, biases, activation, output_activation, dropout)
    value = loss(y, acts[-1], loss_name, output_activation, sample_weight)
    wg, bg = backward(
        acts, y, weights, activation, output_activation, loss_name, biases is not None, sample_weight,
        biases, dropout,
    )
    if alpha:
        n = X.shape[0] if sample_weight is None else float(np.sum(sample_weight))
        value = value + 0.5 * alpha * sum(np.sum(W * W) for W in weights) / n
        wg = [g + alpha * W / n for g, W in zip(wg, weights)]
    return value, wg, bg


def gd_update(params, grads, learning_rate):
    """Plain gradient step ``params -= learning_rate * grads`` (in place)."""
    params -= learning_rate * grads
    return params


def momentum_update(params, grads, velocity, learning_rate, momentum, nesterov):
    """Momentum step, in place (scikit-learn's formulation).

    ``velocity = momentum * velocity - learning_rate * grads``, then
    ``params += velocity`` or, with Nesterov's look-ahead,
    ``params += momentum * velocity - learning_rate * grads``.
    """
    velocity[...] = momentum * velocity - learning_rate * grads
    if nesterov:
        params += momentum * velocity - learning_rate * grads
    else:
        params += velocity
    return params


def adam_update(params, grads, m, v, learning_rate, beta_1, beta_2, epsilon, t):
    """Adam step number ``t`` (1-based), in place (scikit-learn's formulation).

    ``m`` and ``v`` are the running first and second moments.
    """
    m[...] = beta_1 * m + (1 - beta_1) * grads
    v[...] = beta_2 * v + (1 - beta_2) * grads**2
    lr_t = float(learning_rate * np.sqrt(1 - beta_2**t) / (1 - beta_1**t))
    params -= lr_t * m / (np.sqrt(v) + epsilon)
    return params


def gd_step(X, y, weights, biases, activation, output_activation, loss_name, learning_rate):
    """One full-batch gradient-descent step, in place. Returns the loss before the step."""
    value, wg, bg = loss_and_gradients(X, y, weights, biases, activation, output_activation, loss_name)
    for i, g in enumerate(wg):
        weights[i] -= learning_rate * g
        if biases is not None:
            biases[i] -= learning_rate * bg[i]
    return value


def train_gd(X, y, weights, biases, activation, output_activation, loss_name, learning_rate, epochs):
    """``epochs`` full-batch gradient-descent steps, in place. Returns the loss history."""
    history = np.empty(epochs, dtype=X.dtype)
    for epoch in range(epochs):
        history[epoch] = gd_step(
            X, y, weights, biases, activation, output_activation, loss_name, learning_rate
        )
    return history


# --------------------------------------------------------------------------
# the tutorial network, exactly as the tutorial writes it
# --------------------------------------------------------------------------
def _tutorial_sigmoid(x):
    return 1.0 / (1 + np.exp(-x))


def _tutorial_sigmoid_derivative(x):
    return x * (1.0 - x)


class NeuralNetwork:
    """The classic two-layer tutorial network, in plain NumPy.

    Sigmoid activations, no biases, 4 hidden units, sum-of-squares loss and
    ``weights += d_weights``. Weights are drawn with ``np.random.rand`` so
    that the global NumPy seed decides them.

    Parameters
    ----------
    x : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples, n_outputs)
    """

    def __init__(self, x, y):
        self.input = x
        self.weights1 = np.random.rand(self.input.shape[1], 4)
        self.weights2 = np.random.rand(4, 1)
        self.y = y
        self.output = np.zeros(self.y.shape)

    def feedforward(self):
        """Compute ``layer1`` and ``output`` from the current weights."""
        self.layer1 = _tutorial_sigmoid(np.dot(self.input, self.weights1))
        self.output = _tutorial_sigmoid(np.dot(self.layer1, self.weights2))

    def backprop(self):
        """One step of gradient descent on the sum-of-squares loss."""
        d_weights2 = np.dot(
            self.layer1.T,
            (2 * (self.y - self.output) * _tutorial_sigmoid_derivative(self.output)),
        )
        d_weights1 = np.dot(
            self.input.T,
            (
                np.dot(
                    2 * (self.y - self.output) * _tutorial_sigmoid_derivative(self.output),
                    self.weights2.T,
                )
                * _tutorial_sigmoid_derivative(self.layer1)
            ),
        )
        self.weights1 += d_weights1
        self.weights2 += d_weights2
