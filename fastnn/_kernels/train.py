"""Fused training loops: many epochs of forward, backward and update in one call.

``hyper`` is a float64 array ``(learning_rate, momentum, nesterov, beta_1,
beta_2, epsilon, alpha)``; ``step_count`` a one-element int64 array holding
Adam's step counter between calls. Optimizer state (``state1``, ``state2``)
has the layout of ``params``. Scalars are cast to the parameters' dtype, so a
float32 model is updated in float32.
"""

import numpy as np
from fastnn._kernels._jit import kernel

from fastnn._kernels.codes import OPT_ADAM, OPT_MOMENTUM, SSE
from fastnn._kernels.dense import loss_and_gradients


@kernel(inline="always")
def all_finite(values):
    # True when no element is NaN or +-inf (x - x is 0 exactly for finite x).
    # An OR over comparisons vectorises; a floating-point sum of x * 0 (the
    # first version) is one long dependency chain: 16x slower on 75k floats,
    # which made small-batch, wide-layer steps slower than NumPy's.
    bad = False
    for i in range(values.size):
        x = values[i]
        bad |= not (x - x == 0)
    return not bad


@kernel(inline="always")
def gd_update(params, grads, learning_rate):
    # params -= learning_rate * grads
    lr = params.dtype.type(learning_rate)
    for i in range(params.size):
        params[i] -= lr * grads[i]


@kernel(inline="always")
def momentum_update(params, grads, velocity, learning_rate, momentum, nesterov):
    # v = mu * v - lr * g; params += v, or params += mu * v - lr * g (Nesterov)
    lr = params.dtype.type(learning_rate)
    mu = params.dtype.type(momentum)
    for i in range(params.size):
        step = lr * grads[i]
        v = mu * velocity[i] - step
        velocity[i] = v
        if nesterov:
            params[i] += mu * v - step
        else:
            params[i] += v


@kernel(inline="always")
def adam_update(params, grads, m, v, learning_rate, beta_1, beta_2, epsilon, t):
    # m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    # params -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)   (t >= 1)
    dt = params.dtype.type
    lr_t = dt(learning_rate * np.sqrt(1.0 - beta_2**t) / (1.0 - beta_1**t))
    b1 = dt(beta_1)
    b2 = dt(beta_2)
    c1 = dt(1.0 - beta_1)
    c2 = dt(1.0 - beta_2)
    eps = dt(epsilon)
    for i in range(params.size):
        g = grads[i]
        mi = b1 * m[i] + c1 * g
        vi = b2 * v[i] + c2 * (g * g)
        m[i] = mi
        v[i] = vi
        params[i] -= lr_t * mi / (np.sqrt(vi) + eps)


@kernel(inline="always")
def apply_update(params, grads, optimizer_code, hyper, state1, state2, step_count):
    # one optimizer step with the hyper-parameters in `hyper`
    if optimizer_code == OPT_MOMENTUM:
        momentum_update(params, grads, state1, hyper[0], hyper[1], hyper[2] != 0)
    elif optimizer_code == OPT_ADAM:
        step_count[0] += 1
        adam_update(params, grads, state1, state2, hyper[0], hyper[3], hyper[4], hyper[5], step_count[0])
    else:
        gd_update(params, grads, hyper[0])


@kernel
def train(
    X,
    Y,
    params,
    layout,
    activation_code,
    output_code,
    loss_code,
    optimizer_code,
    hyper,
    epochs,
    batch_size,
    order,
    use_order,
    state1,
    state2,
    step_count,
    acts,
    deltas,
    grads,
    X_batch,
    Y_batch,
    history,
):
    # `epochs` passes over (X, Y) in mini-batches of `batch_size` rows, taken
    # in the order order[epoch] when use_order, else in storage order.
    # history[e] = the epoch's loss: sum of batch losses for SSE, the
    # size-weighted mean of batch losses otherwise. Returns the number of
    # epochs completed; on a non-finite loss or gradient it stops before
    # updating, stores that batch's loss in history[epoch] (finite when the
    # gradient was the culprit) and returns the epoch.
    n = X.shape[0]
    for epoch in range(epochs):
        total = 0.0
        start = 0
        while start < n:
            stop = min(start + batch_size, n)
            nb = stop - start
            if use_order:
                # element loops rather than `X_batch[r, :] = X[src]`, whose
                # shape check compiles a formatted error message (seconds of
                # cold compile)
                for r in range(nb):
                    src = order[epoch, start + r]
                    for c in range(X.shape[1]):
                        X_batch[r, c] = X[src, c]
                    for c in range(Y.shape[1]):
                        Y_batch[r, c] = Y[src, c]
                xb = X_batch[:nb]
                yb = Y_batch[:nb]
            else:
                xb = X[start:stop]
                yb = Y[start:stop]
            value = loss_and_gradients(
                xb, yb, params, layout, activation_code, output_code, loss_code, hyper[6],
                acts, deltas, grads,
            )
            if not np.isfinite(value):
                history[epoch] = value
                return epoch
            if not all_finite(grads):
                history[epoch] = value
                return epoch
            apply_update(params, grads, optimizer_code, hyper, state1, state2, step_count)
            if loss_code == SSE:
                total += value
            else:
                total += value * nb
            start = stop
        history[epoch] = total if loss_code == SSE else total / n
    return epochs
