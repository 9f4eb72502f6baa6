"""Activation functions and their derivatives, elementwise and in place.

Derivatives take the *activated* value, as the tutorial's
``sigmoid_derivative(s) = s * (1 - s)`` does. All arithmetic stays in the
arrays' own dtype.
"""

import numpy as np
from fastnn._kernels._jit import kernel

from fastnn._kernels.codes import EXP, IDENTITY, RELU, SIGMOID, SOFTMAX, TANH
from fastnn._kernels.fastexp import exp_nonpositive
from fastnn._kernels.views import flat


@kernel(inline="always")
def sigmoid_scalar(z, one):
    # 1 / (1 + exp(-z)), computed from exp(-|z|) so that it never overflows;
    # `one` is 1 in z's dtype, so that float32 stays float32
    e = exp_nonpositive(-abs(z))
    r = one / (one + e)
    return r if z >= 0 else e * r


@kernel
def sigmoid(z, out):
    # out = 1 / (1 + exp(-z)), elementwise; z and out may be the same array
    zf = flat(z)
    of = flat(out)
    one = zf.dtype.type(1.0)
    for i in range(zf.size):
        of[i] = sigmoid_scalar(zf[i], one)
    return out


@kernel
def sigmoid_derivative(s, out):
    # out = s * (1 - s), s being the activated value
    sf = flat(s)
    of = flat(out)
    one = sf.dtype.type(1.0)
    for i in range(sf.size):
        v = sf[i]
        of[i] = v * (one - v)
    return out


@kernel(inline="always")
def bias_activate(Z, b, has_bias, code):
    # Z = act(Z + b), in place, row by row; softmax is taken over each row
    for i in range(Z.shape[0]):
        activate_row(Z[i], b, has_bias, code)
    return Z


@kernel(inline="always")
def activate_row(row, b, has_bias, code):
    # row = act(row + b), in place (one row of bias_activate)
    m = row.size
    zero = row.dtype.type(0.0)
    one = row.dtype.type(1.0)
    if code == RELU:
        # the bias and the rectifier in one pass, as a select (NaN stays
        # NaN): a digits step (64-100-10, float64) took about 1 us less
        # than with a bias loop and a conditional store
        if has_bias:
            for j in range(m):
                z = row[j] + b[j]
                row[j] = zero if z < zero else z
        else:
            for j in range(m):
                z = row[j]
                row[j] = zero if z < zero else z
        return
    if has_bias:
        for j in range(m):
            row[j] += b[j]
    if code == SIGMOID:
        for j in range(m):
            row[j] = sigmoid_scalar(row[j], one)
    elif code == TANH:
        for j in range(m):
            row[j] = np.tanh(row[j])
    elif code == EXP:
        for j in range(m):
            row[j] = np.exp(row[j])
    elif code == SOFTMAX:
        peak = row[0]
        for j in range(1, m):
            if row[j] > peak:
                peak = row[j]
        total = zero
        for j in range(m):
            e = exp_nonpositive(row[j] - peak)
            row[j] = e
            total += e
        inv = one / total
        for j in range(m):
            row[j] *= inv


@kernel
def softmax_columns(Z, T, stats):
    # softmax over each row of Z (n x k), in place, through a column-major
    # copy in T (k * n elements); stats holds each row's peak and 1 / sum
    # (2 n elements). The arithmetic is bias_activate's row loop, in the
    # same order (bit-identical results), but the loops run down the rows of
    # T, contiguous, so that exp_nonpositive vectorises: 100 x 10 took
    # 2.2 us instead of 6.1 us, 200 x 10 3.8 us instead of 12.6 us.
    n, k = Z.shape
    zero = Z.dtype.type(0.0)
    one = Z.dtype.type(1.0)
    peak = stats[:n]
    scale = stats[n : 2 * n]
    for i in range(n):
        row = Z[i]
        for j in range(k):
            T[j * n + i] = row[j]
    for i in range(n):
        peak[i] = T[i]
    for j in range(1, k):
        col = T[j * n : (j + 1) * n]
        for i in range(n):
            if col[i] > peak[i]:
                peak[i] = col[i]
    for i in range(n):
        scale[i] = zero
    for j in range(k):
        col = T[j * n : (j + 1) * n]
        for i in range(n):
            e = exp_nonpositive(col[i] - peak[i])
            col[i] = e
            scale[i] += e
    for i in range(n):
        scale[i] = one / scale[i]
    for i in range(n):
        row = Z[i]
        inv = scale[i]
        for j in range(k):
            row[j] = T[j * n + i] * inv
    return Z


@kernel(inline="always")
def multiply_derivative(delta, A, code):
    # delta *= act'(A), elementwise, A being the activated value
    if code == IDENTITY:
        return delta
    df = flat(delta)
    af = flat(A)
    one = af.dtype.type(1.0)
    zero = af.dtype.type(0.0)
    if code == SIGMOID:
        for i in range(df.size):
            a = af[i]
            df[i] *= a * (one - a)
    elif code == TANH:
        for i in range(df.size):
            a = af[i]
            df[i] *= one - a * a
    elif code == RELU:
        for i in range(df.size):
            if af[i] <= zero:
                df[i] = zero
    return delta


@kernel(inline="always")
def multiply_derivative_sum_rows(delta, A, code, sums):
    # multiply_derivative(delta, A, code), and sums[j] = the sum over rows of
    # the result's column j, in one pass (row order: the numbers of a
    # separate column-sum loop); the backward pass's next bias gradient
    n, m = delta.shape
    one = A.dtype.type(1.0)
    zero = A.dtype.type(0.0)
    for j in range(m):
        sums[j] = zero
    if code == RELU:
        # (the default activation: its loop without the per-row dispatch)
        for i in range(n):
            d = delta[i]
            a = A[i]
            for j in range(m):
                x = zero if a[j] <= zero else d[j]
                d[j] = x
                sums[j] += x
        return delta
    for i in range(n):
        d = delta[i]
        a = A[i]
        if code == SIGMOID:
            for j in range(m):
                x = d[j] * (a[j] * (one - a[j]))
                d[j] = x
                sums[j] += x
        elif code == TANH:
            for j in range(m):
                x = d[j] * (one - a[j] * a[j])
                d[j] = x
                sums[j] += x
        elif code == RELU:
            for j in range(m):
                x = zero if a[j] <= zero else d[j]
                d[j] = x
                sums[j] += x
        else:
            for j in range(m):
                sums[j] += d[j]
    return delta


@kernel(inline="always")
def derivative_row(delta, a, out, code):
    # out = delta * act'(a), elementwise along one row, a being the activated
    # value (out may be a: each a[j] is read before out[j] is written)
    one = a.dtype.type(1.0)
    zero = a.dtype.type(0.0)
    m = a.size
    if code == SIGMOID:
        for j in range(m):
            x = a[j]
            out[j] = delta[j] * (x * (one - x))
    elif code == TANH:
        for j in range(m):
            x = a[j]
            out[j] = delta[j] * (one - x * x)
    elif code == RELU:
        for j in range(m):
            out[j] = zero if a[j] <= zero else delta[j]
    else:
        for j in range(m):
            out[j] = delta[j]
