"""Forward and backward passes of a stack of dense layers on flat buffers.

Parameters live in one flat array ``params``; ``layout`` (see
``fastnn._kernels.layout``) says where each layer's weights and bias are and
which activation it applies. Weights are stored ``(fan_in, fan_out)`` and
applied as ``X @ W + b``. Gradients use the same
layout in ``grads``. Activations and deltas of a batch of ``nb`` rows are
packed one layer after another in the flat workspaces ``acts`` and
``deltas`` (``nb * sum(fan_out)`` elements each).
"""

import numpy as np
from numba import types
from numba.extending import overload

from fastnn._kernels._jit import kernel

from fastnn._kernels.activations import (
    activate_row_table,
    activate_row_keep,
    bias_activate,
    multiply_derivative,
    multiply_derivative_sum_rows,
    softmax_columns,
    times_kept,
)
from fastnn._kernels.dropout import activate_row_drop, keep_scale, row_key
from fastnn._kernels.few_rows import few_rows_call, few_rows_nn_call, loop_at
from fastnn._kernels.layout import B_OFF, CODE, DFN, DROP, FAN_IN, FAN_OUT, FN, KEEP, NN_ROWS, TN_ROWS, W_OFF
from fastnn._kernels.views import as_matrix, c_layout, flat
from fastnn._kernels.codes import (
    IDENTITY,
    LEAKY_RELU,
    LOG_LOSS,
    MSE,
    POISSON,
    RELU,
    SIGMOID,
    SOFTMAX,
    SSE,
    TANH,
)

def machine_epsilon(x):
    """``np.finfo(x.dtype).eps`` (Python stand-in; compiled code uses the overload)."""
    return np.finfo(np.asarray(x).dtype).eps


@overload(machine_epsilon)
def _machine_epsilon_impl(x):
    # a constant per dtype; compiled here rather than with Numba's np.finfo,
    # whose cached environment makes loading the kernels import SciPy's linalg
    eps = np.finfo(np.float32 if x == types.float32 else np.float64).eps
    value = np.float32(eps) if x == types.float32 else float(eps)

    def impl(x):
        return value

    return impl


# m * k * n below which explicit loops beat a BLAS call, both called from
# compiled code: Numba's np.dot costs ~40-50 ns per call, about the time of
# the loops at 5x5x5; measured loops 31 ns vs BLAS 44 ns at 4x4x4 and 93 ns
# vs 48 ns at 6x6x6 (benchmarks/bench_kernels.py::test_matmul_crossover)
SMALL_MATMUL = 128


@kernel(inline="always")
def matmul_loops(A, B, out):
    # out = A @ B by explicit loops with a register accumulator (small shapes)
    m, k = A.shape
    n = B.shape[1]
    for i in range(m):
        for j in range(n):
            acc = out.dtype.type(0.0)
            for p in range(k):
                acc += A[i, p] * B[p, j]
            out[i, j] = acc
    return out


@kernel
def matmul(A, B, out):
    # out = A @ B   (A: m x k, B: k x n): loops below SMALL_MATMUL, else BLAS
    m, k = A.shape
    n = B.shape[1]
    if m * k * n >= SMALL_MATMUL:
        np.dot(A, B, out)
        return out
    return matmul_loops(A, B, out)


@kernel
def matmul_tn(A, B, out):
    # out = A.T @ B   (A: m x k, B: m x n, out: k x n)
    m, k = A.shape
    n = B.shape[1]
    if m * k * n >= SMALL_MATMUL:
        np.dot(A.T, B, out)
        return out
    for p in range(k):
        for j in range(n):
            acc = out.dtype.type(0.0)
            for i in range(m):
                acc += A[i, p] * B[i, j]
            out[p, j] = acc
    return out


@kernel
def matmul_nt(A, B, out):
    # out = A @ B.T   (A: m x k, B: n x k, out: m x n)
    m, k = A.shape
    n = B.shape[0]
    if m * k * n >= SMALL_MATMUL:
        np.dot(A, B.T, out)
        return out
    for i in range(m):
        for j in range(n):
            acc = out.dtype.type(0.0)
            for p in range(k):
                acc += A[i, p] * B[j, p]
            out[i, j] = acc
    return out


# product and product_tn are compiled on their own, not inlined: inlined at
# their three call sites they made a first fit in an empty cache 1.0-1.3 s
# longer than before them, compiled on their own 0.4-0.6 s (in turns, the
# two-shard kernel's 64-100-10)
@kernel
def product(A, B, out, fn):
    # out = A @ B, by the few-rows loop at address fn (few_rows.loop_at), or
    # by matmul when fn is 0 or A is one row (Numba's np.dot calls BLAS's
    # gemv for one row: the loop took 1.05-1.56x as long through 64-1024,
    # 784-128, 64-8192 and 20-100 on the development machine)
    if fn != 0 and A.shape[0] > 1 and c_layout(A):
        m, k = A.shape
        n = B.shape[1]
        few_rows_nn_call(fn, m, n, k, (flat(A), 0, k), (flat(B), 0, n), (flat(out), 0, n), False)
    else:
        matmul(A, B, out)


@kernel
def product_tn(A, B, out, fn):
    # out = A.T @ B, by the few-rows loop at address fn, or by matmul_tn when fn is 0
    if fn != 0 and c_layout(A):
        rows, m = A.shape
        n = B.shape[1]
        few_rows_call(fn, m, n, rows, (flat(A), 0, m), (flat(B), 0, n), (flat(out), 0, n), False)
    else:
        matmul_tn(A, B, out)


@kernel(inline="always")
def loss_delta(Y, A, loss_code, output_code, delta):
    # loss(Y, A) and delta = d loss / d z of the output layer, in one pass.
    # The loss is accumulated in float64 whatever the dtype.
    return loss_delta_rows(Y, A, A[:0, 0], loss_code, output_code, A.shape[0], delta)


@kernel(inline="always")
def loss_delta_rows(Y, A, w, loss_code, output_code, n, delta):
    # loss_delta for rows that are part of a batch whose normaliser is n (its
    # number of rows, or the sum of its sample weights): the mean-type losses
    # and their deltas are divided by n, not by A.shape[0], so that the parts
    # of a batch add up to the whole batch. w: the rows' sample weights, or
    # empty for weight 1 (a multiplication by 1 is exact: the same numbers)
    k = A.shape[1]
    total = np.float64(0.0)  # (run as Python, 0.0 + a float32 is a float32 under NumPy 2's promotion)
    one = A.dtype.type(1.0)
    zero = A.dtype.type(0.0)
    weighted = w.size > 0
    if loss_code == LOG_LOSS or loss_code == POISSON:
        # canonical links, whose delta is (p - y) / n: cross-entropy of a
        # sigmoid or softmax output, and the half Poisson deviance
        # y log(y / p) - y + p (0 log 0 = 0) of an exp output
        eps = machine_epsilon(A.dtype.type(0.0))
        inv_n = one / A.dtype.type(n)
        for i in range(A.shape[0]):
            wi = A.dtype.type(w[i]) if weighted else one
            for j in range(k):
                a = A[i, j]
                y = Y[i, j]
                if loss_code == POISSON:
                    term = a - y
                    if y != 0:
                        term += y * np.log(y / a)
                    total += wi * term
                else:
                    p = min(max(a, eps), one - eps)
                    if output_code == SOFTMAX:
                        if y != 0:
                            total -= wi * (y * np.log(p))
                    else:
                        total -= wi * (y * np.log(p) + (one - y) * np.log(one - p))
                delta[i, j] = (a - y) * inv_n * wi
        return total / n
    if loss_code == SSE:
        scale = A.dtype.type(2.0)
    elif loss_code == MSE:
        scale = A.dtype.type(2.0) / A.dtype.type(n * k)
    else:  # SQUARED_ERROR, scikit-learn's convention
        scale = one / A.dtype.type(n)
    for i in range(A.shape[0]):
        wi = A.dtype.type(w[i]) if weighted else one
        for j in range(k):
            a = A[i, j]
            r = a - Y[i, j]
            total += wi * (r * r)
            d = scale * r * wi
            if output_code == SIGMOID:
                d *= a * (one - a)
            elif output_code == TANH:
                d *= one - a * a
            elif output_code == RELU:
                if a <= 0:
                    d = zero
            delta[i, j] = d
    if loss_code == SSE:
        return total
    if loss_code == MSE:
        return total / (n * k)
    return total / (n * k) / 2.0


# forward's `drop` without dropout (prediction, loss_and_gradients) for a
# model with layers that keep their slopes (fastnn._kernels.layout.KEEP)
NO_DROPOUT = (np.int64(-1), np.int64(0), np.int64(0))


def extras_of(layout):
    """The kernels' ``drop`` outside training: ``NO_DROPOUT``, or None for a model
    without kept slopes (no gelu, silu, dropout or ``fastnn.Activation``).

    With None, Numba prunes the branches of those features before compiling
    (their paths added about 5 s to the cold compile of the training kernels);
    a model that uses one compiles a second specialisation, once.
    """
    from fastnn._kernels.layout import keeps_slopes

    return NO_DROPOUT if keeps_slopes(layout) else None


@kernel(inline="always")
def forward(X, params, layout, output_code, acts, slopes, drop):
    # a_0 = X; a_l = act_l(a_{l-1} @ W_l + b_l), act_l = layout[l, CODE] (the
    # output layer: output_code); returns a_L (a view into acts). A layer
    # with layout[l, KEEP] also writes act_l'(z) into its block of slopes
    # (same offsets as acts), unless slopes is empty (prediction). drop =
    # (seed, epoch, position of X's first row in the epoch): the dropout of
    # the layers with layout[l, DROP], when seed >= 0; None: no layer keeps
    # its slopes (extras_of), and those paths are not even compiled
    n_layers = layout.shape[0]
    nb = X.shape[0]
    prev = X
    off = np.int64(0)  # (a literal 0 compiled activate_layer once more, for Literal[int](0))
    for layer in range(n_layers):
        fan_in = layout[layer, FAN_IN]
        fan_out = layout[layer, FAN_OUT]
        w_off = layout[layer, W_OFF]
        b_off = layout[layer, B_OFF]
        W = as_matrix(params[w_off : w_off + fan_in * fan_out], fan_in, fan_out)
        Z = as_matrix(acts[off : off + nb * fan_out], nb, fan_out)
        product(prev, W, Z, loop_at(layout, layer, nb, NN_ROWS))
        code = output_code if layer == n_layers - 1 else layout[layer, CODE]
        # one call site, one specialisation (the two branches compiled two)
        b = params[b_off : b_off + fan_out] if b_off >= 0 else params[0:0]
        if drop is None:  # (the other branch is pruned before compiling)
            bias_activate(Z, b, b_off >= 0, code)
        else:
            activate_layer(Z, b, b_off >= 0, code, slopes, off, layout, layer, drop)
        prev = Z
        off += nb * fan_out
    return prev


@kernel
def activate_layer(Z, b, has_bias, code, slopes, off, layout, layer, drop):
    # forward's activation of a layer of a model with kept slopes: by
    # activate_extras, or as the others (one call site in forward, so that
    # the branch pruned for other models costs no compile time)
    nb, fan_out = Z.shape
    S = slopes[off : off + nb * fan_out] if slopes.size > 0 else slopes[0:0]
    if not activate_extras(Z, b, has_bias, code, S, layout, layer, drop):
        bias_activate(Z, b, has_bias, code)


@kernel(inline="always")
def activate_extras(Z, b, has_bias, code, S, layout, layer, drop):
    # the activation of a hidden layer that keeps its slopes (into S, when S
    # is not empty: training; see layout KEEP); returns whether it was such
    # a layer (else the caller activates it)
    if layer == layout.shape[0] - 1 or layout[layer, KEEP] == 0:
        return False
    fns = (layout[layer, FN], layout[layer, DFN])
    if S.size > 0:
        activate_kept(Z, b, has_bias, code, as_matrix(S, Z.shape[0], Z.shape[1]), fns, layer,
                      layout[layer, DROP], drop)  # fmt: skip
    elif code >= LEAKY_RELU:  # (the tables' codes, codes.KEPT)
        for i in range(Z.shape[0]):
            activate_row_table(Z[i], b, has_bias, code, fns)
    else:
        bias_activate(Z, b, has_bias, code)  # (a classic activation with dropout, in prediction)
    return True


@kernel(inline="always")
def activate_kept(Z, b, has_bias, code, S, fns, layer, threshold, drop):
    # Z = act(Z + b) and S = act'(Z + b), row by row; with dropout (threshold
    # > 0 and drop's seed >= 0) each row's mask applied to both
    if threshold > 0 and drop[0] >= 0:
        scale = Z.dtype.type(keep_scale(threshold))
        for i in range(Z.shape[0]):
            key = row_key(drop[0], drop[1], drop[2] + i, layer)
            activate_row_drop(Z[i], b, has_bias, code, S[i], fns, key, 0, threshold, scale)
    else:
        for i in range(Z.shape[0]):
            activate_row_keep(Z[i], b, has_bias, code, S[i], fns)


@kernel(inline="always")
def backward(X, params, layout, acts, deltas, grads, drop):
    # given the output delta (last block of deltas), fill grads:
    # dW_l = a_{l-1}.T @ d_l, db_l = sum_rows d_l, d_{l-1} = (d_l @ W_l.T) * act'(a_{l-1});
    # a layer that kept its slopes (layout KEEP: in its block of deltas, see
    # forward) gets d_l @ W_l.T in its block of acts, free once dW_l is
    # done, and then d = that * slopes in its block of deltas (drop: as
    # forward's, None when no layer keeps its slopes)
    n_layers = layout.shape[0]
    nb = X.shape[0]
    off = 0
    for layer in range(n_layers):
        off += nb * layout[layer, FAN_OUT]
    bias_done = False  # this layer's bias gradient summed with the derivative
    for layer in range(n_layers - 1, -1, -1):
        fan_in = layout[layer, FAN_IN]
        fan_out = layout[layer, FAN_OUT]
        w_off = layout[layer, W_OFF]
        b_off = layout[layer, B_OFF]
        off -= nb * fan_out
        D = as_matrix(deltas[off : off + nb * fan_out], nb, fan_out)
        gW = as_matrix(grads[w_off : w_off + fan_in * fan_out], fan_in, fan_out)
        fn = loop_at(layout, layer, nb, TN_ROWS)
        if layer == 0:
            product_tn(X, D, gW, fn)
        else:
            product_tn(as_matrix(acts[off - nb * fan_in : off], nb, fan_in), D, gW, fn)
        if b_off >= 0 and not bias_done:
            gb = grads[b_off : b_off + fan_out]
            for j in range(fan_out):
                gb[j] = 0
            for i in range(nb):
                row = D[i]
                for j in range(fan_out):
                    gb[j] += row[j]
        bias_done = False
        if layer > 0:
            back_into(params, layout, layer, nb, off, acts, deltas, grads, D, drop)
            bias_done = layout[layer - 1, B_OFF] >= 0
    return grads


@kernel(inline="always")
def back_into(params, layout, layer, nb, off, acts, deltas, grads, D, drop):
    # d_{l-1} = (D @ W_l.T) * act'(a_{l-1}) into the block of deltas before
    # `off`, with the bias gradient of layer l-1 summed in the same pass
    fan_in = layout[layer, FAN_IN]
    fan_out = layout[layer, FAN_OUT]
    w_off = layout[layer, W_OFF]
    W = as_matrix(params[w_off : w_off + fan_in * fan_out], fan_in, fan_out)
    prev = as_matrix(acts[off - nb * fan_in : off], nb, fan_in)
    Dprev = as_matrix(deltas[off - nb * fan_in : off], nb, fan_in)
    code = layout[layer - 1, CODE]
    prev_b_off = layout[layer - 1, B_OFF]
    gb_prev = grads[prev_b_off : prev_b_off + fan_in] if prev_b_off >= 0 else grads[0:0]
    if drop is not None:
        if layout[layer - 1, KEEP] != 0:
            matmul_nt(D, W, prev)
            times_kept(prev, Dprev, Dprev, gb_prev, prev_b_off >= 0)
            return
    matmul_nt(D, W, Dprev)
    if prev_b_off >= 0:
        # the derivative and the previous layer's bias gradient in one pass
        multiply_derivative_sum_rows(Dprev, prev, code, gb_prev)
    else:
        multiply_derivative(Dprev, prev, code)


@kernel(inline="always")
def sum_of_squares(x):
    # sum(x ** 2) in float64 with eight independent running sums: one running
    # sum is a chain of dependent additions (3-4 cycles each) that cannot be
    # vectorised; eight chains run side by side (with the slice loop of
    # l2_penalty, 7,400 weights took 2.4 us instead of 6.1 us)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float64(0.0)  # (float64 as Python too, see loss_delta_rows)
    n = x.size
    i = 0
    while i + 8 <= n:
        s0 += x[i] * x[i]
        s1 += x[i + 1] * x[i + 1]
        s2 += x[i + 2] * x[i + 2]
        s3 += x[i + 3] * x[i + 3]
        s4 += x[i + 4] * x[i + 4]
        s5 += x[i + 5] * x[i + 5]
        s6 += x[i + 6] * x[i + 6]
        s7 += x[i + 7] * x[i + 7]
        i += 8
    while i < n:
        s0 += x[i] * x[i]
        i += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@kernel(inline="always")
def l2_penalty(params, layout, alpha, nb, grads):
    # adds alpha * W / nb to every weight (not bias) gradient; returns
    # 0.5 * alpha * sum(W**2) / nb. (The training kernels fuse the same
    # terms into their gradient sum: train.step_copy.)
    scale = params.dtype.type(alpha / nb)
    total = 0.0
    for layer in range(layout.shape[0]):
        w_off = layout[layer, 2]
        w_end = w_off + layout[layer, 0] * layout[layer, 1]
        # loops over slices: indexing from w_off instead kept LLVM from
        # vectorising the update (3.7 us vs 1.0 us)
        w = params[w_off:w_end]
        gw = grads[w_off:w_end]
        total += sum_of_squares(w)
        for i in range(w_end - w_off):
            gw[i] += scale * w[i]
    return 0.5 * alpha * total / nb


# Rows of the `deltas` workspace the training kernels take per batch row:
# one per unit of every layer, plus two that let a softmax output use
# softmax_columns (with fewer, it is computed row by row: same numbers)
def deltas_units(layer_sizes):
    """Elements of the ``deltas`` workspace per batch row for layers ``layer_sizes``."""
    return int(sum(layer_sizes[1:])) + 2


# compiled on its own (not inlined): the training loop calls it once per
# shard, and inlining it into the parallel loop of the training kernel of the
# time (compiled with parallel=True) made that kernel's cold compile about 15 s
@kernel(linked=False)
def partial_loss_and_gradients(X, Y, w, params, layout, output_code, loss_code, n, acts, deltas, grads, drop):
    # forward, loss and backward for rows (X, Y) with sample weights w (empty:
    # all 1) that are part of a batch with normaliser n (rows, or the sum of
    # weights): the loss and gradients are this part's share of the batch's
    # (without the L2 term), so that the shares of the parts sum to the
    # batch's; fills grads, returns the loss share. drop: see forward (the
    # training kernels' dropout). With deltas of
    # nb * deltas_units(...) elements, a softmax output is computed on the
    # output block of deltas (free until the loss fills it) and two more
    # elements per row: see softmax_columns
    nb = X.shape[0]
    n_out = Y.shape[1]
    off = 0
    for layer in range(layout.shape[0] - 1):
        off += nb * layout[layer, 1]
    units = off + nb * n_out
    columns = output_code == SOFTMAX and deltas.size >= units + 2 * nb
    # (the hidden blocks of deltas keep the slopes of KEEP layers until backward)
    output = forward(X, params, layout, IDENTITY if columns else output_code, acts, deltas, drop)
    if columns:
        # the output block of acts, typed from acts: `output` may share the
        # type of X, read-only when X is
        Z = as_matrix(acts[off:units], nb, n_out)
        softmax_columns(Z, deltas[off:units], deltas[units : units + 2 * nb])
    D = as_matrix(deltas[off:units], nb, n_out)
    value = loss_delta_rows(Y, output, w, loss_code, output_code, n, D)
    backward(X, params, layout, acts, deltas, grads, drop)
    return value


@kernel
def loss_and_gradients(X, Y, params, layout, output_code, loss_code, alpha, acts, deltas, grads, drop):
    # forward, loss (+ L2 penalty), backward; returns the loss, fills grads;
    # drop: extras_of(layout) (never dropout: its seed is -1). No weights:
    # params[:0], a contiguous empty array, so that the kernels below are the
    # training's signature (X[:0, 0], a strided one, compiled them once more)
    return weighted_loss_and_gradients(
        X, Y, params[:0], params, layout, output_code, loss_code, alpha, acts, deltas, grads, drop
    )


@kernel
def weighted_loss_and_gradients(
    X, Y, w, params, layout, output_code, loss_code, alpha, acts, deltas, grads, drop
):
    # loss_and_gradients with sample weights w (empty: all 1): the losses are
    # weighted means, normalised (with the L2 term) by the sum of the weights
    nb = X.shape[0]
    n = float(nb)
    if w.size > 0:
        n = 0.0
        for i in range(nb):
            n += w[i]
    value = partial_loss_and_gradients(
        X, Y, w, params, layout, output_code, loss_code, n, acts, deltas, grads, drop
    )
    if alpha > 0:
        value += l2_penalty(params, layout, alpha, n, grads)
    return value
