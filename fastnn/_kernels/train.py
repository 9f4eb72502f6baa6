"""Fused training loops: many epochs of forward, backward and update in one call.

``hyper`` is a float64 array ``(learning_rate, momentum, nesterov, beta_1,
beta_2, epsilon, alpha)``; ``step_count`` a one-element int64 array holding
Adam's step counter between calls. Optimizer state (``state1``, ``state2``)
has the layout of ``params``. Scalars are cast to the parameters' dtype, so a
float32 model is updated in float32. ``control`` (``CONTROL_SIZE`` float64,
indices ``C_*``) switches on scikit-learn's stopping rule and learning-rate
schedules and carries their state between calls. The per-shard workspaces
come from :func:`shard_buffers`.

``train`` and ``train_parallel`` are the same loop compiled without and with
Numba's ``parallel=True``: the second runs the shards of a batch, and the
parts of the parameter update, on separate threads, with bit-identical
results (``fastnn._threads`` chooses between them).
"""

import numpy as np
from numba import prange

from fastnn._kernels._jit import kernel
from fastnn._kernels.codes import OPT_ADAM, OPT_MOMENTUM, SSE
from fastnn._kernels.dense import deltas_units, l2_gradient_range, partial_loss_and_gradients


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


# A batch is split into up to MAX_SHARDS shards of at least MIN_SHARD_ROWS
# rows; each shard's forward and backward pass fills its own gradient
# buffer and the shards' gradients are summed in a fixed order. The rule
# depends on the batch size only, never on the number of threads, so that
# `train` and `train_parallel` (which runs the shards on separate threads)
# give bit-identical results. Measured on 2 cores (digits, 64-100-10, batch
# 200): two 100-row shards 78 us each on one thread, 82 us for both on two.
MAX_SHARDS = 2
MIN_SHARD_ROWS = 32
# parameter vectors of at least this many elements are combined and
# updated in MAX_SHARDS parts (on separate threads in train_parallel)
MIN_PARALLEL_UPDATE = 4096

# control[...] of `train`: the stopping rule and learning-rate schedule of
# scikit-learn's stochastic solvers, and their state between calls
C_RULE = 0  # 0: run all epochs; 1: stop by the training-loss rule
C_SCHEDULE = 1  # SCHEDULE_* (SGD only)
C_LR_INIT = 2
C_POWER_T = 3
C_TOL = 4
C_N_ITER_NO_CHANGE = 5
C_BEST_LOSS = 6  # in/out
C_NO_IMPROVEMENT = 7  # in/out
C_TIME_STEP = 8  # in/out: samples seen (scikit-learn's t_)
C_STOPPED = 9  # out: 1 when the rule stopped training
CONTROL_SIZE = 10
SCHEDULE_CONSTANT = 0
SCHEDULE_INVSCALING = 1
SCHEDULE_ADAPTIVE = 2


@kernel(inline="always")
def shard_count(nb):
    # number of shards a batch of nb rows is split into
    return max(1, min(MAX_SHARDS, nb // MIN_SHARD_ROWS))


def shards_of(nb):
    """`shard_count` called from Python (its Python source: nothing to compile)."""
    return getattr(shard_count, "py_func", shard_count)(nb)


def shard_rows(batch_size):
    """Most rows a shard of any batch of up to ``batch_size`` rows has."""
    sizes = [batch_size] + [min(batch_size, k * MIN_SHARD_ROWS - 1) for k in range(2, MAX_SHARDS + 1)]
    return max(-(-nb // shards_of(nb)) for nb in sizes if nb > 0)


def shard_buffers(batch_size, layer_sizes, n_params, dtype):
    """``(acts, deltas, grads, shard_loss)`` workspaces of `train` for ``batch_size``."""
    rows = shard_rows(batch_size)
    return (
        np.empty((MAX_SHARDS, rows * int(sum(layer_sizes[1:]))), dtype=dtype),
        np.empty((MAX_SHARDS, rows * deltas_units(layer_sizes)), dtype=dtype),
        np.empty((MAX_SHARDS, n_params), dtype=dtype),
        np.zeros(MAX_SHARDS, dtype=np.float64),
    )


@kernel(inline="always")
def end_of_epoch(loss, n, optimizer_code, hyper, control):
    # scikit-learn's bookkeeping after an epoch with training loss `loss`
    # (_update_no_improvement_count without early stopping, the optimizer's
    # iteration_ends and trigger_stopping); returns True to stop
    control[C_TIME_STEP] += n
    if loss > control[C_BEST_LOSS] - control[C_TOL]:
        control[C_NO_IMPROVEMENT] += 1
    else:
        control[C_NO_IMPROVEMENT] = 0
    if loss < control[C_BEST_LOSS]:
        control[C_BEST_LOSS] = loss
    sgd = optimizer_code != OPT_ADAM
    schedule = control[C_SCHEDULE]
    if sgd and schedule == SCHEDULE_INVSCALING:
        hyper[0] = control[C_LR_INIT] / (control[C_TIME_STEP] + 1.0) ** control[C_POWER_T]
    if control[C_NO_IMPROVEMENT] > control[C_N_ITER_NO_CHANGE]:
        if not sgd or schedule != SCHEDULE_ADAPTIVE or hyper[0] <= 1e-6:
            control[C_STOPPED] = 1
            return True
        hyper[0] /= 5.0
        control[C_NO_IMPROVEMENT] = 0
    return False


# The per-part work of a step after the shards, compiled on their own and
# called from the parallel loops: small loop bodies keep the parallel
# twin's cold compile short.
@kernel
def combine_part(params, layout, grads, shards, scale, with_l2, lo, hi):
    # grads[0, lo:hi] += the other shards' gradients (in shard order), then
    # += scale * W on the weights in [lo, hi); returns (sum of W**2 there,
    # whether grads[0, lo:hi] is all finite)
    g = grads[0, lo:hi]
    for s in range(1, shards):
        gs = grads[s, lo:hi]
        for i in range(hi - lo):
            g[i] += gs[i]
    squares = l2_gradient_range(params, layout, scale, grads[0], lo, hi) if with_l2 else 0.0
    return squares, all_finite(g)


@kernel
def update_part(params, grads, optimizer_code, hyper, state1, state2, t, lo, hi):
    # one optimizer step on params[lo:hi] with the gradient grads[0, lo:hi]
    p = params[lo:hi]
    g = grads[0, lo:hi]
    if optimizer_code == OPT_MOMENTUM:
        momentum_update(p, g, state1[lo:hi], hyper[0], hyper[1], hyper[2] != 0)
    elif optimizer_code == OPT_ADAM:
        adam_update(p, g, state1[lo:hi], state2[lo:hi], hyper[0], hyper[3], hyper[4], hyper[5], t)
    else:
        gd_update(p, g, hyper[0])


@kernel(inline="always")
def combine_and_update(
    params, layout, grads, shard_loss, shards, nb, optimizer_code, hyper, state1, state2,
    step_count, part_sums, part_ok,
):  # fmt: skip
    # sums the shards' losses and gradients into grads[0] (in shard order),
    # adds the L2 term and, when the loss and every gradient are finite,
    # applies one optimizer step; returns (loss, finite). The parameter
    # vector is processed in `parts` contiguous parts (prange: threads in
    # train_parallel, 8 us of a 100 us digits step saved on 2 cores); the
    # split depends on the size only, so both twins compute the same numbers.
    size = params.size
    parts = MAX_SHARDS if size >= MIN_PARALLEL_UPDATE else 1
    alpha = hyper[6]
    scale = params.dtype.type(alpha / nb)
    for part in prange(parts):
        part_sums[part], part_ok[part] = combine_part(
            params, layout, grads, shards, scale, alpha > 0,
            (part * size) // parts, ((part + 1) * size) // parts,
        )  # fmt: skip
    value = shard_loss[0]
    for s in range(1, shards):
        value += shard_loss[s]
    finite = True
    squares = 0.0
    for part in range(parts):
        squares += part_sums[part]
        finite = finite and part_ok[part]
    if alpha > 0:
        value += 0.5 * alpha * squares / nb
    if not (finite and np.isfinite(value)):
        return value, False
    if optimizer_code == OPT_ADAM:
        step_count[0] += 1
    t = step_count[0]
    for part in prange(parts):
        update_part(
            params, grads, optimizer_code, hyper, state1, state2, t,
            (part * size) // parts, ((part + 1) * size) // parts,
        )  # fmt: skip
    return value, True


@kernel(inline="always")
def sharded_epochs(
    X, Y, params, layout, activation_code, output_code, loss_code, optimizer_code, hyper,
    control, epochs, batch_size, order, use_order, state1, state2, step_count,
    acts, deltas, grads, shard_loss, X_batch, Y_batch, history, sample_weight, W_batch,
):  # fmt: skip
    # `epochs` passes over (X, Y) in mini-batches of `batch_size` rows, taken
    # in the order order[epoch] when use_order, else in storage order; each
    # batch is split into shard_count(rows) shards (prange: threads in
    # train_parallel). acts, deltas and grads have one row per shard; the
    # summed gradient is left in grads[0]. history[e] = the epoch's loss: sum
    # of batch losses for SSE, the size-weighted mean of batch losses
    # otherwise. Returns the number of epochs completed; on a non-finite loss
    # or gradient it stops before updating, stores that batch's loss in
    # history[epoch] (finite when the gradient was the culprit) and returns
    # the epoch. With control[C_RULE] set, stops after an epoch where
    # scikit-learn's rule says so (control[C_STOPPED] = 1). sample_weight
    # (n,) weighs the rows (empty: all 1; W_batch gathers them when use_order):
    # a batch's losses are then weighted means, normalised with the L2 term
    # by the sum of its weights, as scikit-learn does.
    n = X.shape[0]
    weighted = sample_weight.size > 0
    part_sums = np.zeros(MAX_SHARDS)  # per part of the parameter vector
    part_ok = np.zeros(MAX_SHARDS, dtype=np.bool_)
    for epoch in range(epochs):
        total = 0.0
        start = 0
        while start < n:
            stop = min(start + batch_size, n)
            nb = stop - start
            shards = shard_count(nb)
            # the batch's normaliser: its rows, or the sum of its weights
            norm = float(nb)
            if weighted:
                norm = 0.0
                for r in range(nb):
                    norm += sample_weight[order[epoch, start + r] if use_order else start + r]
            for s in prange(shards):
                lo = (s * nb) // shards
                hi = ((s + 1) * nb) // shards
                if use_order:
                    # element loops rather than `X_batch[r, :] = X[src]`, whose
                    # shape check compiles a formatted error message (seconds
                    # of cold compile)
                    for r in range(lo, hi):
                        src = order[epoch, start + r]
                        for c in range(X.shape[1]):
                            X_batch[r, c] = X[src, c]
                        for c in range(Y.shape[1]):
                            Y_batch[r, c] = Y[src, c]
                        if weighted:
                            W_batch[r] = sample_weight[src]
                    xs = X_batch[lo:hi]
                    ys = Y_batch[lo:hi]
                    ws = W_batch[lo:hi] if weighted else W_batch[0:0]
                else:
                    xs = X[start + lo : start + hi]
                    ys = Y[start + lo : start + hi]
                    ws = sample_weight[start + lo : start + hi] if weighted else W_batch[0:0]
                shard_loss[s] = partial_loss_and_gradients(
                    xs, ys, ws, params, layout, activation_code, output_code, loss_code, norm,
                    acts[s], deltas[s], grads[s],
                )  # fmt: skip
            value, finite = combine_and_update(
                params, layout, grads, shard_loss, shards, norm, optimizer_code, hyper,
                state1, state2, step_count, part_sums, part_ok,
            )  # fmt: skip
            if not finite:
                history[epoch] = value
                return epoch
            if loss_code == SSE:
                total += value
            else:
                total += value * nb
            start = stop
        history[epoch] = total if loss_code == SSE else total / n
        if control[C_RULE] != 0 and end_of_epoch(history[epoch], n, optimizer_code, hyper, control):
            return epoch + 1
    return epochs


@kernel
def train(
    X, Y, params, layout, activation_code, output_code, loss_code, optimizer_code, hyper,
    control, epochs, batch_size, order, use_order, state1, state2, step_count,
    acts, deltas, grads, shard_loss, X_batch, Y_batch, history, sample_weight, W_batch,
):  # fmt: skip
    # many epochs of mini-batch training in one call: see sharded_epochs
    return sharded_epochs(
        X, Y, params, layout, activation_code, output_code, loss_code, optimizer_code, hyper,
        control, epochs, batch_size, order, use_order, state1, state2, step_count,
        acts, deltas, grads, shard_loss, X_batch, Y_batch, history, sample_weight, W_batch,
    )  # fmt: skip


@kernel(parallel=True)
def train_parallel(
    X, Y, params, layout, activation_code, output_code, loss_code, optimizer_code, hyper,
    control, epochs, batch_size, order, use_order, state1, state2, step_count,
    acts, deltas, grads, shard_loss, X_batch, Y_batch, history, sample_weight, W_batch,
):  # fmt: skip
    # `train` with each batch's shards on separate threads: same results
    return sharded_epochs(
        X, Y, params, layout, activation_code, output_code, loss_code, optimizer_code, hyper,
        control, epochs, batch_size, order, use_order, state1, state2, step_count,
        acts, deltas, grads, shard_loss, X_batch, Y_batch, history, sample_weight, W_batch,
    )  # fmt: skip
