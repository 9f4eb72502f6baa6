"""Activation functions and their derivatives, elementwise and in place.

The classic activations (sigmoid, tanh, relu, identity, and exp for an
output) are entries of two scalar tables, `value` (``a = f(z)``) and `slope`
(``f'(z)``, given ``z`` and ``a``); their derivatives are computed from the
*activated* value, as the tutorial's ``sigmoid_derivative(s) = s * (1 - s)``
does, so that the backward pass needs no stored ``z``. They keep loops of
their own (`activate_row`, `derivative_row`, ...), hoisted out of any
per-element dispatch: they are the defaults whose speed was measured.

The activations that keep their slopes (``codes.KEPT``: leaky_relu, elu,
softplus, gelu, silu; gelu and silu need ``z``) are a pair of scalar
functions each in `KEPT_FUNCTIONS`. Their slope is computed in the forward
pass, while ``z`` is at hand, and kept in a buffer of the activations' shape
(`activate_row_keep`, `times_kept`); the kernels of models that use none of
them never reference these paths. Adding one means its two functions, an
entry in `KEPT_FUNCTIONS`, its code in ``fastnn._kernels.codes`` and its twin
in ``fastnn.reference``. Each has a loop of its own (`keep_loop`,
`value_loop`: one definition, specialised per activation), so that no
element pays a dispatch, and the special functions (tanh, expm1, log1p, the
normal distribution function) come from ``fastnn._kernels.fastmath`` rather
than libm: the loops vectorise.

All arithmetic stays in the arrays' own dtype (`as_type_of` makes the
constants).
"""

import math

import numpy as np
from numba.extending import overload

from fastnn._kernels._jit import kernel
from fastnn._kernels.codes import (
    CUSTOM,
    ELU,
    EXP,
    GELU,
    IDENTITY,
    LEAKY_RELU,
    RELU,
    SIGMOID,
    SILU,
    SOFTMAX,
    SOFTPLUS,
    TANH,
)
from fastnn._kernels.custom import call_slope, call_value
from fastnn._kernels.fastexp import exp_nonpositive
from fastnn._kernels.fastmath import as_type_of, expm1_nonpositive, log1p_unit, normal_cdf, tanh_fast
from fastnn._kernels.views import c_layout, flat, span

LEAKY_SLOPE = 0.01  # leaky_relu's slope for z <= 0 (PyTorch's default)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@kernel(inline="always")
def sigmoid_scalar(z, one):
    # 1 / (1 + exp(-z)), computed from exp(-|z|) so that it never overflows;
    # `one` is 1 in z's dtype, so that float32 stays float32
    e = exp_nonpositive(-abs(z))
    r = one / (one + e)
    return r if z >= 0 else e * r


@kernel(inline="always")
def value(code, z):
    # a = f(z) for the classic activations (and exp, an output's)
    zero = as_type_of(z, 0.0)
    one = as_type_of(z, 1.0)
    if code == SIGMOID:
        return sigmoid_scalar(z, one)
    if code == TANH:
        return tanh_fast(z)
    if code == RELU:
        return zero if z < zero else z
    if code == EXP:
        return np.exp(z)
    return z  # IDENTITY


@kernel(inline="always")
def slope(code, z, a):
    # f'(z), given a = f(z), for the classic activations
    zero = as_type_of(a, 0.0)
    one = as_type_of(a, 1.0)
    if code == SIGMOID:
        return a * (one - a)
    if code == TANH:
        return one - a * a
    if code == RELU:
        return zero if a <= zero else one
    if code == EXP:
        return a
    return one  # IDENTITY


# The activations that keep their slopes (codes.KEPT): f(z), and f'(z)
# given z and a = f(z), one pair each in KEPT_FUNCTIONS.
@kernel(inline="always")
def leaky_relu_value(z):
    return z if z > as_type_of(z, 0.0) else as_type_of(z, LEAKY_SLOPE) * z


@kernel(inline="always")
def leaky_relu_slope(z, a):
    return as_type_of(a, 1.0) if a > as_type_of(a, 0.0) else as_type_of(a, LEAKY_SLOPE)


@kernel(inline="always")
def elu_value(z):
    zero = as_type_of(z, 0.0)
    return z if z > zero else expm1_nonpositive(min(z, zero))


@kernel(inline="always")
def elu_slope(z, a):
    one = as_type_of(a, 1.0)
    return one if a > as_type_of(a, 0.0) else a + one


@kernel(inline="always")
def softplus_value(z):
    # log(1 + exp(z)), written so that it never overflows
    return max(z, as_type_of(z, 0.0)) + log1p_unit(exp_nonpositive(-abs(z)))


@kernel(inline="always")
def softplus_slope(z, a):
    # sigmoid(z): its exp(-|z|) is the value's, computed once
    return sigmoid_scalar(z, as_type_of(z, 1.0))


@kernel(inline="always")
def gelu_value(z):
    # z (1 + erf(z / sqrt(2))) / 2
    return z * normal_cdf(z)


@kernel(inline="always")
def gelu_slope(z, a):
    half = as_type_of(z, 0.5)
    return normal_cdf(z) + z * exp_nonpositive(-half * z * z) * as_type_of(z, INV_SQRT_2PI)


@kernel(inline="always")
def silu_value(z):
    return z * sigmoid_scalar(z, as_type_of(z, 1.0))


@kernel(inline="always")
def silu_slope(z, a):
    one = as_type_of(z, 1.0)
    s = sigmoid_scalar(z, one)
    return s * (one + z * (one - s))


KEPT_FUNCTIONS = {
    LEAKY_RELU: (leaky_relu_value, leaky_relu_slope),
    ELU: (elu_value, elu_slope),
    SOFTPLUS: (softplus_value, softplus_slope),
    GELU: (gelu_value, gelu_slope),
    SILU: (silu_value, silu_slope),
}


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


# Rows narrower than this are activated as one flat run (see `activate_block`):
# a loop over a row of 10 or 16 values never reaches its vector body (16
# float32 lanes, unrolled), so the sigmoid's exp ran one value at a time.
# Sigmoid over 4096 rows of 10, development machine: 1.10 against 0.18 ns a
# value in float32, 0.98 against 0.56 in float64; rows of 16: 0.24 against
# 0.18 (float32); from 32 up, within 10%.
NARROW_ROW = 64


@kernel(inline="always")
def bias_activate(Z, b, has_bias, code):
    # Z = act(Z + b), in place, row by row; softmax is taken over each row.
    # Z is C-contiguous (by its compiled type: flat would copy another)
    if not c_layout(Z):
        raise ValueError("bias_activate takes a C-contiguous block")
    n, m = Z.shape
    activate_block(flat(Z), 0, m, n, m, b, has_bias, code)
    return Z


@kernel(inline="always")
def activate_block(values, off, ld, rows, cols, b, has_bias, code):
    # the rows x cols block at values[off:], its rows ld apart (values: 1-D,
    # C-contiguous) = act(block + b), in place, row by row. Narrow rows of a
    # contiguous block (ld == cols) and an elementwise activation are one
    # flat run: the bias row by row, then the activation in one loop over
    # every value, which vectorises however narrow the rows are (the same
    # operations as a row's, in the same order: the same bits). activate_row
    # has one call site: each site is one more copy of every activation's
    # loops to compile (three sites made a first fit 0.7-1.2 s longer)
    runs, length, bias = rows, cols, has_bias
    if ld == cols and cols < NARROW_ROW and code != SOFTMAX:
        if has_bias:
            for i in range(rows):
                row = span(values, off + i * cols, cols)
                for j in range(cols):
                    row[j] += b[j]
        runs, length, ld, bias = 1, rows * cols, rows * cols, False
    for r in range(runs):
        activate_row(span(values, off + r * ld, length), b, bias, code)


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
            row[j] = tanh_fast(row[j])
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


@kernel(inline="always")
def value_and_slope(code, z, fns):
    # (f(z), f'(z)) for a classic activation, or a fastnn.Activation's
    # compiled functions at the addresses fns = (f, f') when code is CUSTOM
    if code == CUSTOM:
        a = call_value(fns[0], z)
        return a, call_slope(fns[1], z, a)
    a = value(code, z)
    return a, slope(code, z, a)


def keep_loop(row, b, has_bias, code, slopes, fns):
    """``row = f(row + b)`` in place and ``slopes = f'(row + b)`` (Python stand-in; compiled code uses the overload)."""
    pair = KEPT_FUNCTIONS.get(int(code))
    for j in range(row.size):
        z = row[j] + b[j] if has_bias else row[j]
        if pair is None:
            row[j], slopes[j] = value_and_slope(code, z, fns)
        else:
            row[j] = pair[0](z)
            slopes[j] = pair[1](z, row[j])


@overload(keep_loop, prefer_literal=True)
def _keep_loop_impl(row, b, has_bias, code, slopes, fns):
    # called with a constant code of KEPT_FUNCTIONS: that activation's loop,
    # and nothing else; otherwise the classic activations' and CUSTOM's
    pair = KEPT_FUNCTIONS.get(getattr(code, "literal_value", None))
    if pair is not None:
        f, df = pair

        def kept(row, b, has_bias, code, slopes, fns):
            for j in range(row.size):
                z = row[j] + b[j] if has_bias else row[j]
                a = f(z)
                row[j] = a
                slopes[j] = df(z, a)

        return kept

    def classic(row, b, has_bias, code, slopes, fns):
        for j in range(row.size):
            z = row[j] + b[j] if has_bias else row[j]
            row[j], slopes[j] = value_and_slope(code, z, fns)

    return classic


def value_loop(row, b, has_bias, code, fns):
    """``row = f(row + b)`` in place (Python stand-in; compiled code uses the overload)."""
    pair = KEPT_FUNCTIONS.get(int(code))
    for j in range(row.size):
        z = row[j] + b[j] if has_bias else row[j]
        if pair is not None:
            row[j] = pair[0](z)
        else:
            row[j] = call_value(fns[0], z) if code == CUSTOM else value(code, z)


@overload(value_loop, prefer_literal=True)
def _value_loop_impl(row, b, has_bias, code, fns):
    # as keep_loop's, without the slopes (prediction)
    pair = KEPT_FUNCTIONS.get(getattr(code, "literal_value", None))
    if pair is not None:
        f = pair[0]

        def kept(row, b, has_bias, code, fns):
            for j in range(row.size):
                row[j] = f(row[j] + b[j] if has_bias else row[j])

        return kept

    def other(row, b, has_bias, code, fns):
        # a fastnn.Activation (CUSTOM), or a classic activation
        for j in range(row.size):
            z = row[j] + b[j] if has_bias else row[j]
            row[j] = call_value(fns[0], z) if code == CUSTOM else value(code, z)

    return other


# The loops over these activations (and the kept-slope paths) are compiled
# once each, not inlined into their callers: inlined, their branches (erf,
# expm1, log1p, the fast exp) were copied into every training kernel, whose
# cold compile grew from 12.5 s to 22.4 s (MLP's small-layer kernel on the
# 2-core development machine); compiled once, 17.8 s; and the kernels of
# models without kept slopes prune these paths (dense.extras_of). Each
# activation has a loop of its own, its functions called with a constant
# code (keep_loop's overload), so that no element pays a dispatch and the
# loop vectorises where the arithmetic does: one core, 256 x 1024 float64,
# silu took 8.1 ns a value and leaky_relu 6.7 with a dispatch in the loop,
# 1.5 and 0.2 without. One loop over every activation, each constant in turn
# (a loop inlined with each constant code) took a gelu model's first fit
# from 27 s to 47 s to compile.
@kernel
def activate_row_keep(row, b, has_bias, code, slopes, fns):
    # keep_loop: the forward pass of a layer that keeps its slopes
    # (codes.KEPT, dropout); fns: see value_and_slope
    if code == SILU:
        keep_loop(row, b, has_bias, SILU, slopes, fns)
    elif code == GELU:
        keep_loop(row, b, has_bias, GELU, slopes, fns)
    elif code == LEAKY_RELU:
        keep_loop(row, b, has_bias, LEAKY_RELU, slopes, fns)
    elif code == ELU:
        keep_loop(row, b, has_bias, ELU, slopes, fns)
    elif code == SOFTPLUS:
        keep_loop(row, b, has_bias, SOFTPLUS, slopes, fns)
    else:  # a classic activation with dropout, or a fastnn.Activation (CUSTOM)
        keep_loop(row, b, has_bias, code, slopes, fns)


@kernel
def activate_row_table(row, b, has_bias, code, fns):
    # row = f(row + b) in place for an activation of KEPT_FUNCTIONS, or the
    # fastnn.Activation at fns (prediction: no slopes)
    if code == SILU:
        value_loop(row, b, has_bias, SILU, fns)
    elif code == GELU:
        value_loop(row, b, has_bias, GELU, fns)
    elif code == LEAKY_RELU:
        value_loop(row, b, has_bias, LEAKY_RELU, fns)
    elif code == ELU:
        value_loop(row, b, has_bias, ELU, fns)
    elif code == SOFTPLUS:
        value_loop(row, b, has_bias, SOFTPLUS, fns)
    else:  # a fastnn.Activation (CUSTOM; or a classic activation)
        value_loop(row, b, has_bias, code, fns)


@kernel
def times_kept(delta, slopes, out, sums, with_sums):
    # out = delta * slopes, elementwise over rows (2-D arrays of one shape;
    # out may be delta or slopes); with_sums: sums[j] = column sums of out
    n, m = out.shape
    if with_sums:
        for j in range(m):
            sums[j] = 0
    for i in range(n):
        d = delta[i]
        s = slopes[i]
        o = out[i]
        for j in range(m):
            x = d[j] * s[j]
            o[j] = x
            if with_sums:
                sums[j] += x
