"""Kernels of the tutorial's two-layer network (sigmoid, no bias, SSE).

The tutorial's matrices are tiny (4x3 by 3x4), where a BLAS call, array
views and per-call overhead cost more than the arithmetic, so these kernels
are written as plain loops over the drop-in's own arrays (``weights1``,
``weights2``, ``layer1``, ``output``) and inlined into one another at the
Numba IR level: ``train`` compiles to a single loop nest. For hidden layers
large enough for BLAS to win they hand the matrix products to the general
dense kernels. The math is the same as ``fastnn.reference.NeuralNetwork``.
"""

import numpy as np
from fastnn._kernels._jit import kernel

from fastnn._kernels.activations import sigmoid_scalar
from fastnn._kernels.dense import SMALL_MATMUL, matmul, matmul_nt, matmul_tn


@kernel(inline="always")
def _feedforward(X, W1, W2, layer1, output):
    # layer1 = sigmoid(X @ W1); output = sigmoid(layer1 @ W2)
    n, d = X.shape
    h = W1.shape[1]
    k = W2.shape[1]
    one = X.dtype.type(1.0)
    if n * d * h >= SMALL_MATMUL:
        matmul(X, W1, layer1)
        for i in range(n):
            for j in range(h):
                layer1[i, j] = sigmoid_scalar(layer1[i, j], one)
    else:
        for i in range(n):
            for j in range(h):
                acc = X.dtype.type(0.0)
                for p in range(d):
                    acc += X[i, p] * W1[p, j]
                layer1[i, j] = sigmoid_scalar(acc, one)
    if n * h * k >= SMALL_MATMUL:
        matmul(layer1, W2, output)
        for i in range(n):
            for j in range(k):
                output[i, j] = sigmoid_scalar(output[i, j], one)
    else:
        for i in range(n):
            for j in range(k):
                acc = X.dtype.type(0.0)
                for p in range(h):
                    acc += layer1[i, p] * W2[p, j]
                output[i, j] = sigmoid_scalar(acc, one)


@kernel(inline="always")
def _backprop(X, Y, W1, W2, layer1, output, learning_rate, d1, d2, g1, g2):
    # d2 = 2 (output - Y) * output (1 - output); g2 = layer1.T @ d2
    # d1 = (d2 @ W2.T) * layer1 (1 - layer1);    g1 = X.T @ d1
    # W -= learning_rate * g (both gradients taken before either weight moves)
    n, d = X.shape
    h = W1.shape[1]
    k = W2.shape[1]
    one = X.dtype.type(1.0)
    two = X.dtype.type(2.0)
    zero = X.dtype.type(0.0)
    lr = X.dtype.type(learning_rate)
    total = 0.0
    for i in range(n):
        for j in range(k):
            a = output[i, j]
            r = a - Y[i, j]
            total += r * r
            d2[i, j] = two * r * (a * (one - a))
    if n * h * k >= SMALL_MATMUL:
        matmul_tn(layer1, d2, g2)
        matmul_nt(d2, W2, d1)
        for i in range(n):
            for j in range(h):
                a = layer1[i, j]
                d1[i, j] *= a * (one - a)
    else:
        for p in range(h):
            for j in range(k):
                acc = zero
                for i in range(n):
                    acc += layer1[i, p] * d2[i, j]
                g2[p, j] = acc
        for i in range(n):
            for j in range(h):
                acc = zero
                for p in range(k):
                    acc += d2[i, p] * W2[j, p]
                a = layer1[i, j]
                d1[i, j] = acc * (a * (one - a))
    if n * d * h >= SMALL_MATMUL:
        matmul_tn(X, d1, g1)
    else:
        for p in range(d):
            for j in range(h):
                acc = zero
                for i in range(n):
                    acc += X[i, p] * d1[i, j]
                g1[p, j] = acc
    for p in range(d):
        for j in range(h):
            W1[p, j] -= lr * g1[p, j]
    for p in range(h):
        for j in range(k):
            W2[p, j] -= lr * g2[p, j]
    return total


@kernel
def feedforward(X, W1, W2, layer1, output):
    # layer1 = sigmoid(X @ W1); output = sigmoid(layer1 @ W2)
    _feedforward(X, W1, W2, layer1, output)


@kernel
def backprop(X, Y, W1, W2, layer1, output, learning_rate, d1, d2, g1, g2):
    # one gradient step on sum((Y - output)**2) from the stored layer1 / output;
    # returns the loss of the stored output
    return _backprop(X, Y, W1, W2, layer1, output, learning_rate, d1, d2, g1, g2)


@kernel
def train(X, Y, W1, W2, layer1, output, learning_rate, iterations, d1, d2, g1, g2, history):
    # `iterations` rounds of feedforward + backprop; history[i] = loss before step i
    for it in range(iterations):
        _feedforward(X, W1, W2, layer1, output)
        history[it] = _backprop(X, Y, W1, W2, layer1, output, learning_rate, d1, d2, g1, g2)
    return np.int64(iterations)
