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
Numba's ``parallel=True``: the second runs the shards of a batch on separate
threads, each thread keeping its own copy of the parameters and optimizer
state and applying the summed gradient to it, with results bit-identical to
the first (``fastnn._threads`` chooses between them).

Why copies: when the threads shared one copy and each updated half of it,
every step moved half the parameters and half the summed gradient between
the cores' caches, through two more synchronisations. With a copy each, a
thread only reads the other shard's gradient; it does the whole optimizer
update (twice the arithmetic) on data already in its cache. Digits step
(64-100-10, batch 200, adam, 2 cores, the two kernels interleaved in one
process): 91-108 us against 96-123 us (per-round ratio 1.08-1.14 in three
runs, 1.38 in a run where the shared-copy kernel was slower than serial).
"""

import numpy as np
from numba import prange

from fastnn._kernels._jit import kernel
from fastnn._kernels.codes import OPT_ADAM, OPT_MOMENTUM, SSE
from fastnn._kernels.dense import deltas_units, partial_loss_and_gradients, sum_of_squares


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
MAX_SHARDS = 2  # combine_range sums one or two shards
MIN_SHARD_ROWS = 32
# rows per copy in the `copies` workspace (see shard_buffers): a 2-D array
# like grads, a type the kernels already use; row COPY_ROWS * c + COPY_*
# holds copy c's summed gradient, parameters, and optimizer states
COPY_ROWS = 4
COPY_GRAD = 0
COPY_PARAMS = 1
COPY_STATE1 = 2
COPY_STATE2 = 3

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


def shard_buffers(batch_size, layer_sizes, n_params, dtype, replicas=True):
    """``(acts, deltas, grads, shard_loss, copies)`` workspaces of `train` for ``batch_size``.

    ``copies`` holds ``train_parallel``'s per-thread copies: row
    ``COPY_ROWS * c + COPY_GRAD`` is copy c's summed gradient, ``+ COPY_PARAMS``
    its parameters, ``+ COPY_STATE1`` and ``+ COPY_STATE2`` its optimizer
    states (``COPY_ROWS * MAX_SHARDS`` rows of ``n_params``); without
    ``replicas`` it has no columns and ``train_parallel`` shares one copy.
    """
    rows = shard_rows(batch_size)
    return (
        np.empty((MAX_SHARDS, rows * int(sum(layer_sizes[1:]))), dtype=dtype),
        np.empty((MAX_SHARDS, rows * deltas_units(layer_sizes)), dtype=dtype),
        np.empty((MAX_SHARDS, n_params), dtype=dtype),
        np.zeros(MAX_SHARDS, dtype=np.float64),
        np.empty((COPY_ROWS * MAX_SHARDS, n_params if replicas else 0), dtype=dtype),
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


@kernel(inline="always")
def combine_range(grads, shards, total, lo, hi, scale, weights, in_place):
    # total[lo:hi] = the shards' gradients summed in shard order, then
    # + scale * weights (when weights is not empty), in one pass that also
    # checks finiteness; returns True when all of total[lo:hi] is finite.
    # One to MAX_SHARDS (2) shards; in_place: total is grads[0], written
    # through grads[0] itself (through a second view of the same memory,
    # LLVM's overlap check ran the loop unvectorised: the serial step was
    # 4% slower). The check is an OR over `x - x == 0` (0 exactly for finite
    # x), which vectorises; a floating-point sum of x * 0 (the first version)
    # is one long dependency chain: 16x slower on 75k floats, which made
    # small-batch, wide-layer steps slower than NumPy's.
    g0 = grads[0, lo:hi]
    g1 = grads[min(1, shards - 1), lo:hi]  # read only with two shards
    out = total[lo:hi]
    with_l2 = weights.size > 0
    two = shards > 1
    bad = False
    if in_place and not (two or with_l2):
        # nothing to add: the check only (a pass that wrote the values back
        # made a 4 x 64 x 1024 full-batch step 33 us slower)
        for i in range(hi - lo):
            x = g0[i]
            bad |= not (x - x == 0)
    elif in_place:
        for i in range(hi - lo):
            x = g0[i] + g1[i] if two else g0[i]
            if with_l2:
                x += scale * weights[i]
            g0[i] = x
            bad |= not (x - x == 0)
    else:
        for i in range(hi - lo):
            x = g0[i] + g1[i] if two else g0[i]
            if with_l2:
                x += scale * weights[i]
            out[i] = x
            bad |= not (x - x == 0)
    return not bad


@kernel(inline="always")
def combine_copy(params, layout, grads, shards, scale, with_l2, total, in_place):
    # total = the sum of the shards' gradients (in shard order: the same
    # numbers whether total is grads[0] itself or another buffer), + scale *
    # W on the weights; returns (sum of W**2, whether total is all finite).
    # in_place: total is grads[0].
    # One pass per weight and bias block (the sum, the L2 term and the
    # check fused: three passes over the vector before).
    finite = True
    squares = 0.0
    empty = params[:0]
    for layer in range(layout.shape[0]):
        w_off = layout[layer, 2]
        w_end = w_off + layout[layer, 0] * layout[layer, 1]
        w = params[w_off:w_end]
        if with_l2:
            squares += sum_of_squares(w)
        finite &= combine_range(
            grads, shards, total, w_off, w_end, scale, w if with_l2 else empty, in_place
        )
        b_off = layout[layer, 3]
        if b_off >= 0:
            finite &= combine_range(
                grads, shards, total, b_off, b_off + layout[layer, 1], scale, empty, in_place
            )
    return squares, finite


# The work of a step after the shards for one copy, compiled on its own and
# called from the parallel loop: a loop body that is one call keeps the
# parallel twin's cold compile short.
@kernel
def step_copy(
    c, n_copies, params, layout, grads, shards, nb, optimizer_code, hyper, state1, state2,
    copies, loss, t,
):  # fmt: skip
    # sums the shards' gradients for copy c (into grads[0] when there is one
    # copy, else into its row of copies), adds the L2 term and, when the loss
    # (loss + L2 term) and the gradient are finite, applies one optimizer
    # step to copy c of the parameters and state (copy 0: the caller's
    # arrays); returns (sum of W**2, whether the gradient is finite)
    p = params
    s1 = state1
    s2 = state2
    if c > 0:
        p = copies[COPY_ROWS * c + COPY_PARAMS]
        s1 = copies[COPY_ROWS * c + COPY_STATE1, : state1.size]
        s2 = copies[COPY_ROWS * c + COPY_STATE2, : state2.size]
    alpha = hyper[6]
    total = grads[0] if n_copies == 1 else copies[COPY_ROWS * c + COPY_GRAD]
    scale = params.dtype.type(alpha / nb)
    squares, ok = combine_copy(p, layout, grads, shards, scale, alpha > 0, total, n_copies == 1)
    if ok and np.isfinite(loss + 0.5 * alpha * squares / nb):
        if optimizer_code == OPT_MOMENTUM:
            momentum_update(p, total, s1, hyper[0], hyper[1], hyper[2] != 0)
        elif optimizer_code == OPT_ADAM:
            adam_update(p, total, s1, s2, hyper[0], hyper[3], hyper[4], hyper[5], t)
        else:
            gd_update(p, total, hyper[0])
    return squares, ok


@kernel
def start_copies(params, state1, state2, copies, n_copies):
    # copies 1 .. n_copies - 1 of the parameters and optimizer state start
    # as copies of the caller's arrays (copy 0)
    for c in range(1, n_copies):
        p = copies[COPY_ROWS * c + COPY_PARAMS]
        s1 = copies[COPY_ROWS * c + COPY_STATE1]
        s2 = copies[COPY_ROWS * c + COPY_STATE2]
        for i in range(params.size):
            p[i] = params[i]
        for i in range(state1.size):
            s1[i] = state1[i]
        for i in range(state2.size):
            s2[i] = state2[i]


@kernel(inline="always")
def combine_and_update(
    params, layout, grads, shard_loss, shards, nb, optimizer_code, hyper, state1, state2,
    step_count, copies, n_copies, copy_sums, copy_ok,
):  # fmt: skip
    # sums the shards' losses and gradients (in shard order), adds the L2
    # term and, when the loss and every gradient are finite, applies one
    # optimizer step to each of the n_copies copies of the parameters and
    # optimizer state (prange: one thread per copy in train_parallel, each
    # on the copy its shard read; see step_copy); returns (loss, finite).
    # Every copy does the same arithmetic, so they stay equal, bit for bit,
    # to the one copy of `train`.
    alpha = hyper[6]
    value = shard_loss[0]
    for s in range(1, shards):
        value += shard_loss[s]
    t = step_count[0] + 1 if optimizer_code == OPT_ADAM else step_count[0]
    for c in prange(n_copies):
        # int64 casts: one compiled signature for both twins (the parallel
        # loop's index is unsigned, and n_copies a literal 1 in `train`)
        copy_sums[c], copy_ok[c] = step_copy(
            np.int64(c), np.int64(n_copies), params, layout, grads, shards, nb, optimizer_code,
            hyper, state1, state2, copies, value, t,
        )  # fmt: skip
    if alpha > 0:
        value += 0.5 * alpha * copy_sums[0] / nb
    if not (copy_ok[0] and np.isfinite(value)):
        return value, False
    step_count[0] = t
    return value, True


@kernel(inline="always")
def sharded_epochs(
    X, Y, params, layout, activation_code, output_code, loss_code, optimizer_code, hyper,
    control, epochs, batch_size, order, use_order, state1, state2, step_count,
    acts, deltas, grads, shard_loss, copies, X_batch, Y_batch, history, sample_weight, W_batch,
    replicated,
):  # fmt: skip
    # `epochs` passes over (X, Y) in mini-batches of `batch_size` rows, taken
    # in the order order[epoch] when use_order, else in storage order; each
    # batch is split into shard_count(rows) shards (prange: threads in
    # train_parallel). acts, deltas and grads have one row per shard; the
    # summed gradient goes to grads[0] (or to each copy's row of copies, see
    # combine_and_update). replicated (train_parallel): with room in
    # `copies`, the thread of shard c reads and updates copy c of the
    # parameters and optimizer state (copy 0: the caller's arrays; the others
    # start as copies of them). history[e] = the epoch's loss: sum
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
    n_copies = 1
    if replicated and copies.shape[1] >= params.size:
        n_copies = min(MAX_SHARDS, copies.shape[0] // COPY_ROWS)
    start_copies(params, state1, state2, copies, n_copies)
    copy_sums = np.zeros(MAX_SHARDS)
    copy_ok = np.zeros(MAX_SHARDS, dtype=np.bool_)
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
                si = np.int64(s)
                ps = copies[COPY_ROWS * si + COPY_PARAMS] if 0 < si < n_copies else params
                shard_loss[s] = partial_loss_and_gradients(
                    xs, ys, ws, ps, layout, activation_code, output_code, loss_code, norm,
                    acts[s], deltas[s], grads[s],
                )  # fmt: skip
            value, finite = combine_and_update(
                params, layout, grads, shard_loss, shards, norm, optimizer_code, hyper,
                state1, state2, step_count, copies, n_copies, copy_sums, copy_ok,
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
    acts, deltas, grads, shard_loss, copies, X_batch, Y_batch, history, sample_weight, W_batch,
):  # fmt: skip
    # many epochs of mini-batch training in one call: see sharded_epochs
    return sharded_epochs(
        X, Y, params, layout, activation_code, output_code, loss_code, optimizer_code, hyper,
        control, epochs, batch_size, order, use_order, state1, state2, step_count,
        acts, deltas, grads, shard_loss, copies, X_batch, Y_batch, history, sample_weight, W_batch,
        False,
    )  # fmt: skip


@kernel(parallel=True)
def train_parallel(
    X, Y, params, layout, activation_code, output_code, loss_code, optimizer_code, hyper,
    control, epochs, batch_size, order, use_order, state1, state2, step_count,
    acts, deltas, grads, shard_loss, copies, X_batch, Y_batch, history, sample_weight, W_batch,
):  # fmt: skip
    # `train` with each batch's shards on separate threads: same results
    return sharded_epochs(
        X, Y, params, layout, activation_code, output_code, loss_code, optimizer_code, hyper,
        control, epochs, batch_size, order, use_order, state1, state2, step_count,
        acts, deltas, grads, shard_loss, copies, X_batch, Y_batch, history, sample_weight, W_batch,
        True,
    )  # fmt: skip
