"""A batch of a few rows through a wide layer without BLAS: the weight
gradient ``dW = A.T @ D`` (`few_rows_tn`) and the forward product ``Z = A @ W``
(`few_rows_nn`).

With an inner dimension of a few rows, ``dW`` is a sum of a few outer
products: each element costs a handful of multiply-adds, and the product is
bound by writing ``dW`` once. SciPy's OpenBLAS is slow on these shapes: it
packs its operands for a blocked product that has nothing to block. On the
development machine (AMD EPYC, Zen 4, one thread), ``(4 x 64).T @ (4 x 8192)``
took 230-330 us in float64 and 180-245 us in float32 through BLAS, against
130-150 and 65-75 us with `few_rows_tn`, which streams two rows of ``dW`` at a
time against four rows of ``D`` (a vectorised loop over the columns). BLAS
stays faster from about 12 rows, and where ``dW`` is narrow or small enough
to stay in cache (`few_rows_pays`).

Each element is computed by the same expression wherever its block starts or
ends, and in a fixed order over the batch's rows (four at a time, each four
added to what the element holds), so the tiled runtime, which cuts ``dW``
into blocks, gets the same bits for any cut (``fastnn._kernels.tiled``'s
GRADIENT tasks). The small-layer twins keep BLAS's product: compiled into
them, this loop added 1.6 s to a first fit in an empty cache (14.3 to 15.9
s), for the few layers of 131,072 to 262,143 weights that they train.

The forward product has the opposite problem: BLAS packs (copies) the
whole weight matrix for a product that reads each weight once. `few_rows_nn`
streams it from memory once. On the Zen 5 development machine (OpenBLAS's
Haswell kernels), one thread, BLAS's time / the loop's: 2.0-5.9x (float64) and 3.1-8.9x (float32)
for 1 to 6 rows through 64-1024, 64-8192, 784-2048 and 256-512; at 8 rows
1.3-1.6x but 0.91x through 784-2048 in float64, and 2.1-2.4x in float32.

The tiled kernel does not link the loops either: it calls them through
their addresses (`few_rows_call`, `few_rows_nn_call`), as C callbacks
compiled on their own (`address`), only for fits whose batches have blocks
of a few rows. Linked into the
GRADIENT tasks, it was optimised again with every kernel above them and made
every first fit of the tiled kernel in an empty cache 1.7 s longer (17.9
against 16.2 s), whether it ran or not. Run as Python (``NUMBA_DISABLE_JIT=1``),
`few_rows_call` calls `few_rows_tn` itself.
"""

import threading

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from fastnn._kernels._jit import OPTIONS, kernel
from fastnn._kernels.views import span

# A gradient of at most FEW_ROWS rows, at least FEW_COLS columns and
# FEW_SIZE elements takes `few_rows_tn` (see `few_rows_pays`). Measured on
# the development machine, one thread, BLAS's time / few_rows_tn's: 8 rows
# still 1.2-2.2x, 12 rows 0.8x (64 x 8192); narrow or cache-resident
# gradients are BLAS's: 0.2-0.8x at 10 and 64 columns, 0.6-1.6x at 64 x 1024,
# 1.2-1.9x at 64 x 2048 and 256 x 512 (131,072 elements).
FEW_ROWS = 8
FEW_COLS = 512
FEW_SIZE = 1 << 17


@kernel(inline="always")
def few_rows_pays(rows, fan_in, fan_out):
    # the weight gradient of a layer (fan_in x fan_out) over `rows` rows is
    # made faster by few_rows_tn than by BLAS. The layer's shape decides, not
    # a block's, so that every cut of the gradient into blocks takes the same
    # path (and gets the same bits)
    return rows <= FEW_ROWS and fan_out >= FEW_COLS and fan_in * fan_out >= FEW_SIZE


@kernel(inline="always")
def four_terms(r, d0, d1, d2, d3, a, first):
    # r[j] (+)= a0 d0[j] + a1 d1[j] + a2 d2[j] + a3 d3[j]
    a0, a1, a2, a3 = a
    if first:
        for j in range(r.size):
            r[j] = a0 * d0[j] + a1 * d1[j] + a2 * d2[j] + a3 * d3[j]
    else:
        for j in range(r.size):
            r[j] += a0 * d0[j] + a1 * d1[j] + a2 * d2[j] + a3 * d3[j]


@kernel(inline="always")
def four_terms_twice(r, s, d0, d1, d2, d3, a, b, first):
    # four_terms for two rows of the result that share the rows of D (each
    # element the same expression as four_terms')
    a0, a1, a2, a3 = a
    b0, b1, b2, b3 = b
    if first:
        for j in range(r.size):
            x0, x1, x2, x3 = d0[j], d1[j], d2[j], d3[j]
            r[j] = a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3
            s[j] = b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3
    else:
        for j in range(r.size):
            x0, x1, x2, x3 = d0[j], d1[j], d2[j], d3[j]
            r[j] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3
            s[j] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3


@kernel(inline="always")
def coefficients(a, a_off, lda, i, k, n):
    # A[k : k + 4, i] (row-major A at a_off, lda), zeros past row n - 1
    zero = a.dtype.type(0.0)
    c0 = a[a_off + k * lda + i]
    c1 = a[a_off + (k + 1) * lda + i] if k + 1 < n else zero
    c2 = a[a_off + (k + 2) * lda + i] if k + 2 < n else zero
    c3 = a[a_off + (k + 3) * lda + i] if k + 3 < n else zero
    return c0, c1, c2, c3


@kernel(inline="always")
def b_row(b, b_off, ldb, n, g, row, k):
    # row `row` of B (row g, the group's first, past the last row k - 1)
    at = b_off + (row if row < k else g) * ldb
    return span(b, at, n)


@kernel(inline="always")
def b_rows(b, b_off, ldb, n, g, k):
    # the group of four rows of B from row g (see b_row)
    return (b_row(b, b_off, ldb, n, g, g, k), b_row(b, b_off, ldb, n, g, g + 1, k),
            b_row(b, b_off, ldb, n, g, g + 2, k), b_row(b, b_off, ldb, n, g, g + 3, k))  # fmt: skip


@kernel(inline="always")
def trivial_product(m, n, k, C, accumulate):
    # an empty C (nothing to do), or an empty inner dimension (C = 0 unless
    # accumulating): True when the product is done
    c, c_off, ldc = C
    if m == 0 or n == 0:
        return True
    if k == 0:
        if not accumulate:
            for i in range(m):
                span(c, c_off + i * ldc, n)[:] = 0
        return True
    return False


@kernel(inline="always")
def row_coefficients(a, a_off, lda, i, k, n):
    # A[i, k : k + 4] (row-major A at a_off, lda), zeros past column n - 1
    zero = a.dtype.type(0.0)
    at = a_off + i * lda + k
    c0 = a[at]
    c1 = a[at + 1] if k + 1 < n else zero
    c2 = a[at + 2] if k + 2 < n else zero
    c3 = a[at + 3] if k + 3 < n else zero
    return c0, c1, c2, c3


# few_rows_nn works on NN_COLS columns of C at a time: a pair of its rows
# stays in the first-level cache while the rows of B stream past, four at a
# time (from memory for the first pair, from cache for the others)
NN_COLS = 256


@kernel
def few_rows_nn(m, n, k, A, B, C, accumulate):
    """``C (+)= A @ B`` on blocks (see ``fastnn._kernels.blas.gemm``) for a
    small ``m``: ``A`` is ``m x k``, ``B`` is ``k x n``, ``C`` is ``m x n``.

    A forward product of a few rows through a wide layer: BLAS packs ``B``
    (the weights) before it multiplies, a copy of the whole matrix for a
    product that reads each element once. This reads ``B`` from memory once,
    ``NN_COLS`` columns and four rows at a time, against each pair of rows
    of ``C``. Each element of ``C``
    is the same expression wherever a block of columns starts (groups of four
    terms in order, as in `few_rows_tn`), so any cut of ``C`` into column
    tiles gets the same bits.
    """
    a, a_off, lda = A
    b, b_off, ldb = B
    c, c_off, ldc = C
    if trivial_product(m, n, k, C, accumulate):
        return
    for j0 in range(0, n, NN_COLS):
        w = min(NN_COLS, n - j0)
        for i in range(0, m, 2):
            r = span(c, c_off + i * ldc + j0, w)
            s = span(c, c_off + (i + 1) * ldc + j0, w) if i + 1 < m else r
            for g in range(0, k, 4):
                d0, d1, d2, d3 = b_rows(b, b_off + j0, ldb, w, g, k)
                first = g == 0 and not accumulate
                a_i = row_coefficients(a, a_off, lda, i, g, k)
                if i + 1 < m:
                    four_terms_twice(r, s, d0, d1, d2, d3, a_i, row_coefficients(a, a_off, lda, i + 1, g, k), first)
                else:
                    four_terms(r, d0, d1, d2, d3, a_i, first)


@kernel
def few_rows_tn(m, n, k, A, B, C, accumulate):
    """``C (+)= A.T @ B`` on blocks (see ``fastnn._kernels.blas.gemm``) for
    a small ``k``: ``A`` is ``k x m``, ``B`` is ``k x n``, ``C`` is ``m x n``.

    Rows of ``B`` past the last of a group of four are padded with a copy
    of the group's first row and a zero coefficient.
    """
    a, a_off, lda = A
    b, b_off, ldb = B
    c, c_off, ldc = C
    if trivial_product(m, n, k, C, accumulate):
        return
    for i in range(0, m, 2):
        r = span(c, c_off + i * ldc, n)
        for g in range(0, k, 4):
            d0, d1, d2, d3 = b_rows(b, b_off, ldb, n, g, k)
            first = g == 0 and not accumulate
            if i + 1 < m:
                s = span(c, c_off + (i + 1) * ldc, n)
                a_i, b_i = coefficients(a, a_off, lda, i, g, k), coefficients(a, a_off, lda, i + 1, g, k)
                four_terms_twice(r, s, d0, d1, d2, d3, a_i, b_i, first)
            else:
                four_terms(r, d0, d1, d2, d3, coefficients(a, a_off, lda, i, g, k), first)


def _few_rows_c(m, n, k, a, lda, b, ldb, c, ldc, accumulate):
    # few_rows_tn on C pointers to the blocks' first elements (the callback)
    A = numba.carray(a, max(0, (k - 1) * lda + m))
    B = numba.carray(b, max(0, (k - 1) * ldb + n))
    C = numba.carray(c, max(0, (m - 1) * ldc + n))
    few_rows_tn(m, n, k, (A, 0, lda), (B, 0, ldb), (C, 0, ldc), accumulate != 0)


def _few_rows_nn_c(m, n, k, a, lda, b, ldb, c, ldc, accumulate):
    # few_rows_nn on C pointers to the blocks' first elements (its callback)
    A = numba.carray(a, max(0, (m - 1) * lda + k))
    B = numba.carray(b, max(0, (k - 1) * ldb + n))
    C = numba.carray(c, max(0, (m - 1) * ldc + n))
    few_rows_nn(m, n, k, (A, 0, lda), (B, 0, ldb), (C, 0, ldc), accumulate != 0)


_LOOPS = {"tn": _few_rows_c, "nn": _few_rows_nn_c}
_callbacks = {}  # (dtype name, product) -> the compiled callback (kept alive: the address is its)
_compiling = threading.Lock()  # one callback per dtype, also for fits in several threads


def address(dtype, product="tn"):
    """The address of the callback of `few_rows_tn` (``product="tn"``) or
    `few_rows_nn` (``"nn"``) for ``dtype``, compiled (or loaded) on first use.

    1 without the compiler (``NUMBA_DISABLE_JIT=1``): `few_rows_call` and
    `few_rows_nn_call` then call the loops directly.
    """
    if numba.config.DISABLE_JIT:
        return 1
    key = (np.dtype(dtype).name, product)
    with _compiling:
        if key not in _callbacks:
            t = numba.from_dtype(np.dtype(dtype))
            i = types.int64
            signature = types.void(i, i, i, types.CPointer(t), i, types.CPointer(t), i, types.CPointer(t), i, i)
            _callbacks[key] = numba.cfunc(signature, **OPTIONS)(_LOOPS[product])
        return _callbacks[key].address


def few_rows_call(fn, m, n, k, A, B, C, accumulate):
    """`few_rows_tn` through the callback at ``fn`` (see `address`); Python stand-in."""
    few_rows_tn(m, n, k, A, B, C, accumulate)


def few_rows_nn_call(fn, m, n, k, A, B, C, accumulate):
    """`few_rows_nn` through the callback at ``fn`` (``address(dtype, "nn")``); Python stand-in."""
    few_rows_nn(m, n, k, A, B, C, accumulate)


@intrinsic
def _call_at(typingctx, fn, m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc, accumulate):
    # calls the callback at fn with pointers to a[a_off], b[b_off], c[c_off]
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        kinds = signature.args

        def int64(at):
            return context.cast(builder, args[at], kinds[at], types.int64)

        def data_at(at):
            array = context.make_array(kinds[at])(context, builder, args[at])
            return builder.gep(array.data, [int64(at + 1)])

        pointer = context.get_value_type(kinds[4].dtype).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i64, i64, i64, pointer, i64, pointer, i64, pointer, i64, i64])
        callee = builder.inttoptr(int64(0), fnty.as_pointer())
        builder.call(callee, [int64(1), int64(2), int64(3), data_at(4), int64(6), data_at(7), int64(9),
                              data_at(10), int64(12), int64(13)])  # fmt: skip
        return context.get_dummy_value()

    return types.void(fn, m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc, accumulate), codegen


@overload(few_rows_call)
@overload(few_rows_nn_call)
def _few_rows_call_impl(fn, m, n, k, A, B, C, accumulate):
    def impl(fn, m, n, k, A, B, C, accumulate):
        _call_at(fn, m, n, k, A[0], A[1], A[2], B[0], B[1], B[2], C[0], C[1], C[2], accumulate)

    return impl
