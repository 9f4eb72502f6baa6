"""A batch of a few rows through a layer without BLAS: the weight gradient
``dW = A.T @ D`` (`few_rows_tn`) and the forward product ``Z = A @ W``
(`few_rows_nn`).

With an inner dimension of a few rows, ``dW`` is a sum of a few outer
products: each element costs a handful of multiply-adds, and the product is
bound by writing ``dW`` once. The forward product of a few rows reads each
weight once. BLAS packs (copies) its operands before it multiplies, a copy
as large as the product itself here. `few_rows_tn` streams two rows of
``dW`` at a time against four rows of ``D``, and `few_rows_nn` a pair of
rows of ``Z`` against four rows of ``W`` at a time (vectorised loops over
the columns).

Where that pays depends on the layer and on the BLAS (`loop_rows`, with the
measurements at `FEW_ROWS`): through wide layers on any BLAS; through
smaller ones on OpenBLAS's Haswell kernels, which pack every operand
however small the product, but not on its AVX-512 kernels, which multiply
small products without packing. The Python side decides per fit and writes
the decision into the fit's copy of the layout (`with_loops`: each layer's
most rows and the loops' addresses); the kernels read it (`loop_at`). Both
training kernels take the loops that way: the tiled kernel's FORWARD and
GRADIENT tasks, and the forward and backward passes (``fastnn._kernels.dense``)
of the two-shard kernel, of a plan of shards and of a prediction.

Each element is computed by the same expression wherever its block starts or
ends, and in a fixed order over the inner dimension (four terms at a time,
each four added to what the element holds), so the tiled runtime, which
cuts the products into blocks, gets the same bits for any cut, and so for
any number of threads.

The register-blocked products of ``fastnn._kernels.blocked`` go through the
same columns and callbacks, for layers that take them (`with_loops`).

No kernel links the loops: they are called through their addresses
(`few_rows_call`, `few_rows_nn_call`), as C callbacks compiled on their own
(`address`), only for fits that take them. Linked into the tiled kernel's
GRADIENT tasks, the gradient loop was optimised again with every kernel
above them and made every first fit of the tiled kernel in an empty cache
1.7 s longer (17.9 against 16.2 s), whether it ran or not; linked into the
two-shard kernel, 1.6 s (14.3 to 15.9 s). Run as Python
(``NUMBA_DISABLE_JIT=1``), the calls run the loops themselves.
"""

import threading

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from fastnn._kernels._jit import OPTIONS, kernel
from fastnn._kernels.layout import FAN_IN, FAN_OUT, NN_ROWS, TN_ROWS
from fastnn._kernels.views import span

# Which products take the loops (`loop_rows`). BLAS's time / the loops', one
# thread, on the Zen 5 development machine:
# - wide layers (at least FEW_COLS units and FEW_SIZE weights): 1.0-6.9x for
#   1 to 8 rows through 64-8192, 784-2048 and 256-1024 with OpenBLAS's Haswell
#   kernels (but 0.93-0.98x for the gradient of 4 or 8 rows through 784-2048
#   and 256-1024), 1.0-4.9x with its SkylakeX kernels at 1 to 4 rows (at 8
#   rows in float64: 0.7-1.0x); on the Zen 4 machine before it, the gradient
#   of 8 rows 1.2-2.2x and of 12 rows 0.8x (64 x 8192);
# - smaller layers: OpenBLAS's Haswell kernels (which its Zen kernels are)
#   pack every operand, however small the product: 1.2-12x for 1 to 8 rows
#   through 16-64, 64-100, 784-100, 100-256, 64-256, 64-512 and 64-1024 (both
#   dtypes, both products), and mostly 1.1-2.4x for 12 and 16 rows through
#   64-64 to 256-512 (0.96-0.99x for the gradient through 64-1024 and 784-100;
#   at 32 rows 0.9-1.3x: PACKING_ROWS), but BLAS is faster where a layer has
#   fewer than NARROW_COLS units (0.2-0.9x at 10 and 16). The SkylakeX kernels (for
#   AVX-512) multiply small products without packing: there BLAS's forward
#   product is faster (0.4-0.7x at 4 rows), and so is the gradient through
#   fewer than FEW_COLS units (0.5-0.8x), but the gradient through FEW_COLS or
#   more takes the loop up to SMALL_TN_ROWS rows (64-512, 64-1024 and
#   256-512: 2.7-3.7x in float64, 0.8-5.2x in float32, at 4 rows).
# The rule depends on the layer and the BLAS, never on how a product is cut:
# every block of a layer's product takes the same path, for any number of
# threads.
FEW_ROWS = 8
FEW_COLS = 512
FEW_SIZE = 1 << 17
NARROW_COLS = 64
SMALL_TN_ROWS = 4
PACKING_ROWS = 16  # the smaller layers' limit on the Haswell kernels
MOST_ROWS = max(FEW_ROWS, PACKING_ROWS)  # the most rows any product takes a loop for
PACKING_KERNELS = frozenset({"haswell", "zen"})  # OpenBLAS kernel sets without a small-product path


def loop_rows(fan_in, fan_out, architecture):
    """``(nn, tn)``: the most rows of a block whose forward product (`few_rows_nn`) and
    weight gradient (`few_rows_tn`) through a ``fan_in x fan_out`` layer take the loops,
    0 where BLAS is faster, with the OpenBLAS kernel set ``architecture`` (lower case;
    None: unknown, taken as one with a small-product path). See `FEW_ROWS`."""
    if fan_out >= FEW_COLS and fan_in * fan_out >= FEW_SIZE:
        return FEW_ROWS, FEW_ROWS
    if architecture in PACKING_KERNELS and fan_out >= NARROW_COLS:
        return PACKING_ROWS, PACKING_ROWS
    if fan_out >= FEW_COLS:
        return 0, SMALL_TN_ROWS
    return 0, 0


def with_loops(layout, dtype, rows, architecture, layers=None, wide=False):
    """``layout`` with the loops' columns (``NN_ROWS``, ``NN_FN``, ``TN_ROWS``,
    ``TN_FN`` of ``fastnn._kernels.layout``) filled for products of ``rows`` rows
    (an iterable of row counts) through ``layers`` (default: all): a copy, or
    ``layout`` itself when none takes a loop. ``wide``: Numba compiles for
    512-bit vectors (``fastnn._kernels.blocked.wide_vectors``); layers that
    `blocked.takes_blocked` take the register-blocked products for any number
    of rows, the others the few-rows loops where `loop_rows` says so. A loop's
    callback is compiled (`address`) only where a product takes it.
    Remembered per layout, dtype, rows and layers (a prediction of a few rows
    asks for it at every call).
    """
    from fastnn._kernels.blocked import ANY_ROWS, available, takes_blocked

    # past MOST_ROWS only the blocked products take a product: where none can
    # run, such counts return at once (a prediction asks at every call)
    most = ANY_ROWS if available(architecture, wide) else MOST_ROWS
    rows = frozenset(int(r) for r in rows if 0 < r <= most)
    if not rows:
        return layout
    key = (layout.tobytes(), layout.shape, np.dtype(dtype).name, rows, architecture,
           None if layers is None else tuple(layers), bool(wide))  # fmt: skip
    if key not in _looped:
        out = None
        for layer in range(layout.shape[0]) if layers is None else layers:
            fan_in, fan_out = int(layout[layer, FAN_IN]), int(layout[layer, FAN_OUT])
            if takes_blocked(fan_in, fan_out, np.dtype(dtype).itemsize, architecture, wide):
                limits, products = (ANY_ROWS, ANY_ROWS), ("blocked_nn", "blocked_tn")
            else:
                limits, products = loop_rows(fan_in, fan_out, architecture), ("nn", "tn")
            for column, limit, product in zip((NN_ROWS, TN_ROWS), limits, products):
                if limit > 0 and min(rows) <= limit:
                    out = layout.copy() if out is None else out
                    out[layer, column], out[layer, column + 1] = limit, address(dtype, product)
        if len(_looped) >= 256:
            _looped.clear()
        _looped[key] = out
    out = _looped[key]
    return layout if out is None else out


_looped = {}  # with_loops' layouts (None: no loop), by their key


@kernel(inline="always")
def loop_at(layout, layer, rows, column):
    # the address of the few-rows loop that a product of `rows` rows through
    # `layer` takes (column: NN_ROWS or TN_ROWS, followed by the loop's
    # address; see with_loops), 0: BLAS's
    return layout[layer, column + 1] if rows <= layout[layer, column] else np.int64(0)


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

    A forward product of a few rows: BLAS packs ``B`` (the weights) before
    it multiplies, a copy of the whole matrix for a product that reads each
    element once. This reads ``B`` from memory once,
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
    """The address of the callback of `few_rows_tn` (``product="tn"``),
    `few_rows_nn` (``"nn"``), or ``fastnn._kernels.blocked``'s `blocked_nn` /
    `blocked_tn` (``"blocked_nn"``, ``"blocked_tn"``) for ``dtype``, compiled
    (or loaded) on first use.

    Without the compiler (``NUMBA_DISABLE_JIT=1``), a small number standing
    for the product (`STAND_INS`): `few_rows_call` and `few_rows_nn_call` then
    call the loops directly.
    """
    if numba.config.DISABLE_JIT:
        return STAND_INS[product]
    key = (np.dtype(dtype).name, product)
    if key in _callbacks:
        return _callbacks[key].address
    with _compiling:
        if key not in _callbacks:
            t = numba.from_dtype(np.dtype(dtype))
            i = types.int64
            signature = types.void(i, i, i, types.CPointer(t), i, types.CPointer(t), i, types.CPointer(t), i, i)
            if product.startswith("blocked"):
                from fastnn._kernels.blocked import CALLBACKS as loops
            else:
                loops = _LOOPS
            _callbacks[key] = numba.cfunc(signature, **OPTIONS)(loops[product])
        return _callbacks[key].address


STAND_INS = {"tn": 1, "nn": 2, "blocked_nn": 3, "blocked_tn": 4}  # `address` without the compiler


def few_rows_call(fn, m, n, k, A, B, C, accumulate):
    """`few_rows_tn` (or `blocked_tn`) through the callback at ``fn`` (see `address`); Python stand-in."""
    if fn == STAND_INS["blocked_tn"]:
        from fastnn._kernels.blocked import blocked_tn

        blocked_tn(m, n, k, A, B, C, accumulate)
    else:
        few_rows_tn(m, n, k, A, B, C, accumulate)


def few_rows_nn_call(fn, m, n, k, A, B, C, accumulate):
    """`few_rows_nn` (or `blocked_nn`) through the callback at ``fn`` (``address(dtype, "nn")``); Python stand-in."""
    if fn == STAND_INS["blocked_nn"]:
        from fastnn._kernels.blocked import blocked_nn

        blocked_nn(m, n, k, A, B, C, accumulate)
    else:
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
