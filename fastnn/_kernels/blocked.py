"""Register-blocked products for layers of tens to hundreds of units:
``C (+)= A @ B`` (`blocked_nn`) and ``C (+)= A.T @ B`` (`blocked_tn`), on
CPUs with 512-bit vectors where BLAS runs narrower kernels.

OpenBLAS's Haswell kernels (which it also runs on AMD's Zen, and wherever
``OPENBLAS_CORETYPE=Haswell`` says so) multiply with 256-bit vectors, and
they pack both operands into panels before they multiply, however small
the product. The forward product and the weight gradient of a layer of a
few hundred units, in batches of tens to hundreds of rows, are small
enough for the packing to matter and large enough to be bound by the
multiply-adds; on a CPU with AVX-512 those multiply-adds can be twice as
wide. `block` computes a block of four rows by three vectors of columns
(24 in float64, 48 in float32) with twelve vector accumulators that stay
in registers through the whole inner dimension: per step of it, three
vector loads of ``B``, four broadcasts of ``A`` and twelve fused
multiply-adds, with no packing. Edges are masked loads and stores, and a
block of fewer than four rows repeats its last row (computed, not stored).

Each element of ``C`` is a chain of fused multiply-adds in the order of
the inner dimension, cut into chains of at most `K_BLOCK` terms whose sums
are added to ``C`` in turn (`inner_blocks`, the rule of OpenBLAS's level-3
driver). An element's value does not depend on the block it is computed
in, so any cut of ``C`` into tiles gives the same bits, for any number of
threads. In float64 the products are the same, bit for bit, as those of
OpenBLAS's Haswell kernels on one thread wherever ``C`` has an even number
of rows (tests/test_blocked.py checks it where those kernels run; an odd
last row, and the blocks BLAS's threads cut, go through its edge kernels,
which add in another order).

`block` is an intrinsic: it writes the loop in LLVM IR with vector types,
which Numba's loops cannot express (LLVM does not keep an array of
accumulators in registers across a loop). Run as Python
(``NUMBA_DISABLE_JIT=1``), the same function computes the block with Python
loops (each step rounded twice, where the compiled chain fuses it).
"""

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from fastnn._kernels._jit import kernel
from fastnn._kernels.few_rows import trivial_product

ROWS = 4  # rows of a register block
VECTORS = 3  # vectors of columns of a register block
VECTOR_BYTES = 64  # 512 bits
K_BLOCK = 256  # the longest chain of multiply-adds (OpenBLAS's GEMM_Q for its Haswell kernels)
# Where a chain's rows of B take at most this many bytes (half the 1 MB
# second-level cache of the development machine's cores), C is written
# block row after block row; else panel of columns after panel (256 rows
# through 64-1024: 456 us against 496 us for the forward product, float64).
# Both orders go through one call site: with one loop nest each, the block
# was inlined twice, and the two callbacks took 1.22-1.24 s to compile in an
# empty cache against 1.01-1.03 s.
ROWS_FIRST_BYTES = 1 << 19
K_ROUND = 4  # a split inner dimension is cut at a multiple of this (its GEMM_UNROLL_M)


@kernel(inline="always")
def columns_per_block(itemsize):
    # columns of C in one register block: 24 in float64, 48 in float32
    return VECTORS * (VECTOR_BYTES // itemsize)


def block(k, A, B, C, rows, cols, first):
    """``C[:rows, :cols] (+)= A[:rows] B`` over an inner dimension of ``k``.

    ``A`` is ``(a, at, row_step, k_step)``: element ``(i, l)`` is
    ``a[at + i * row_step + l * k_step]``; ``B`` and ``C`` are
    ``(buffer, offset, ld)`` blocks. ``rows`` is 1 to `ROWS`, ``cols`` 1 to
    `columns_per_block`. ``first``: ``C`` is overwritten, else added to.
    Python stand-in; compiled code uses the intrinsic below.
    """
    a, at, row_step, k_step = A
    b, b_off, ldb = B
    c, c_off, ldc = C
    for i in range(rows):
        for j in range(cols):
            acc = a.dtype.type(0.0)
            for l in range(k):  # (rounded twice, where the compiled chain fuses each step)
                acc += a[at + i * row_step + l * k_step] * b[b_off + l * ldb + j]
            old = a.dtype.type(0.0) if first else c[c_off + i * ldc + j]
            c[c_off + i * ldc + j] = old + acc


class _Emitter:
    # the IR of one register block (see `block`): what the intrinsic's
    # codegen needs, and one method per part of the loop

    def __init__(self, context, builder, signature, args):
        self.context, self.builder = context, builder
        kinds = signature.args
        self.dtype = kinds[1][0].dtype
        self.lanes = VECTOR_BYTES // context.get_abi_sizeof(context.get_data_type(self.dtype))
        self.vec = ir.VectorType(context.get_value_type(self.dtype), self.lanes)
        self.i64 = ir.IntType(64)
        self.zero = ir.Constant(self.vec, None)

        def unpack(at, count):
            values = cgutils.unpack_tuple(builder, args[at], count)
            return values, kinds[at]

        (a, a_at, row_step, k_step), a_kinds = unpack(1, 4)
        (b, b_off, ldb), b_kinds = unpack(2, 3)
        (c, c_off, ldc), c_kinds = unpack(3, 3)
        self.a, self.b, self.c = (self._data(kind[0], value) for kind, value in ((a_kinds, a), (b_kinds, b), (c_kinds, c)))
        as_int = self._int64
        self.k = as_int(args[0], kinds[0])
        self.a_at, self.row_step, self.k_step = (as_int(v, t) for v, t in zip((a_at, row_step, k_step), a_kinds[1:]))
        self.b_off, self.ldb = (as_int(v, t) for v, t in zip((b_off, ldb), b_kinds[1:]))
        self.c_off, self.ldc = (as_int(v, t) for v, t in zip((c_off, ldc), c_kinds[1:]))
        self.rows = as_int(args[4], kinds[4])
        self.cols = as_int(args[5], kinds[5])
        self.first = context.cast(builder, args[6], kinds[6], types.boolean)
        self._declare()

    def _int64(self, value, kind):
        return self.context.cast(self.builder, value, kind, types.int64)

    def _data(self, kind, value):
        return self.context.make_array(kind)(self.context, self.builder, value).data

    def _declare(self):
        # llvm.fma and the masked load and store, on this block's vectors
        name = "v%df%d" % (self.lanes, 64 if self.dtype == types.float64 else 32)
        vec, mask = self.vec, ir.VectorType(ir.IntType(1), self.lanes)
        ptr = vec.as_pointer()
        module = self.builder.module
        self.fma = cgutils.get_or_insert_function(module, ir.FunctionType(vec, [vec] * 3), "llvm.fma." + name)
        load_type = ir.FunctionType(vec, [ptr, ir.IntType(32), mask, vec])
        self.masked_load = cgutils.get_or_insert_function(module, load_type, "llvm.masked.load.%s.p0" % name)
        store_type = ir.FunctionType(ir.VoidType(), [vec, ptr, ir.IntType(32), mask])
        self.masked_store = cgutils.get_or_insert_function(module, store_type, "llvm.masked.store.%s.p0" % name)
        self.align = ir.Constant(ir.IntType(32), VECTOR_BYTES // self.lanes)

    def const(self, value):
        return ir.Constant(self.i64, value)

    def splat(self, value, vector_type):
        # every lane of a vector of vector_type set to the scalar value
        builder = self.builder
        undef = ir.Constant(vector_type, ir.Undefined)
        one = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32), self.lanes), [0] * self.lanes))

    def masks(self):
        # per vector of the block, which of its lanes are columns below cols
        index_type = ir.VectorType(self.i64, self.lanes)
        cols = self.splat(self.cols, index_type)
        lanes = self.lanes
        return [
            self.builder.icmp_signed("<", ir.Constant(index_type, [v * lanes + i for i in range(lanes)]), cols)
            for v in range(VECTORS)
        ]

    def vector_at(self, data, offset):
        return self.builder.bitcast(self.builder.gep(data, [offset]), self.vec.as_pointer())

    def a_rows(self):
        # where each of the block's rows of A starts (rows past the last repeat it)
        builder = self.builder
        last = builder.sub(self.rows, self.const(1))
        starts = []
        for r in range(ROWS):
            row = builder.select(builder.icmp_signed("<", self.const(r), self.rows), self.const(r), last)
            starts.append(builder.add(self.a_at, builder.mul(row, self.row_step)))
        return starts

    def multiply(self, masks):
        # the accumulators after the loop over the inner dimension
        builder = self.builder
        accumulators = [[cgutils.alloca_once_value(builder, self.zero) for _ in range(VECTORS)] for _ in range(ROWS)]
        starts = self.a_rows()
        with cgutils.for_range(builder, self.k) as loop:
            b_row = builder.add(self.b_off, builder.mul(loop.index, self.ldb))
            b = [
                builder.call(self.masked_load, [self.vector_at(self.b, builder.add(b_row, self.const(v * self.lanes))),
                                                self.align, masks[v], self.zero])  # fmt: skip
                for v in range(VECTORS)
            ]
            step = builder.mul(loop.index, self.k_step)
            for r in range(ROWS):
                a = self.splat(builder.load(builder.gep(self.a, [builder.add(starts[r], step)])), self.vec)
                for v in range(VECTORS):
                    acc = accumulators[r][v]
                    builder.store(builder.call(self.fma, [a, b[v], builder.load(acc)]), acc)
        return accumulators

    def store(self, accumulators, masks):
        # C's rows of the block (+)= the accumulators
        builder = self.builder
        for r in range(ROWS):
            with builder.if_then(builder.icmp_signed("<", self.const(r), self.rows)):
                row = builder.add(self.c_off, builder.mul(self.const(r), self.ldc))
                for v in range(VECTORS):
                    at = self.vector_at(self.c, builder.add(row, self.const(v * self.lanes)))
                    with builder.if_else(self.first) as (overwrite, add):
                        with overwrite:
                            # 0 + sum, as BLAS with beta = 0 (a sum of -0.0 is stored as 0.0)
                            total = builder.fadd(self.zero, builder.load(accumulators[r][v]))
                            builder.call(self.masked_store, [total, at, self.align, masks[v]])
                        with add:
                            old = builder.call(self.masked_load, [at, self.align, masks[v], self.zero])
                            total = builder.fadd(old, builder.load(accumulators[r][v]))
                            builder.call(self.masked_store, [total, at, self.align, masks[v]])


@intrinsic
def _block(typingctx, k, A, B, C, rows, cols, first):
    sig = types.void(k, A, B, C, rows, cols, first)

    def codegen(context, builder, signature, args):
        emit = _Emitter(context, builder, signature, args)
        masks = emit.masks()
        emit.store(emit.multiply(masks), masks)
        return context.get_dummy_value()

    return sig, codegen


@overload(block, inline="always")
def _block_impl(k, A, B, C, rows, cols, first):
    def impl(k, A, B, C, rows, cols, first):
        _block(k, A, B, C, rows, cols, first)

    return impl


@kernel(inline="always")
def inner_blocks(k, start):
    # the length of the chain of multiply-adds from `start` of an inner
    # dimension of k: K_BLOCK while at least twice that remains, half the
    # rest (rounded up to K_ROUND) while more than K_BLOCK remains, else all
    rest = k - start
    if rest >= 2 * K_BLOCK:
        return K_BLOCK
    if rest > K_BLOCK:
        return ((rest // 2 + K_ROUND - 1) // K_ROUND) * K_ROUND
    return rest


@kernel(inline="always")
def blocked(m, n, k, A, B, C, accumulate):
    """``C (+)= op(A) @ B`` by register blocks: ``A`` is
    ``(a, offset, row_step, k_step)`` (element ``(i, l)`` of ``op(A)`` at
    ``a[offset + i * row_step + l * k_step]``), ``B`` (``k x n``) and ``C``
    (``m x n``) are ``(buffer, offset, ld)`` blocks.

    `block` is inlined here and this into `blocked_nn` and `blocked_tn`, so
    that LLVM sees one of A's steps as the constant 1. With both steps
    variables (`block` called as a function), LLVM kept a pointer per row and
    unrolled step of the loop, more than there are registers, and spilled
    them: 29.3-30.9 us against 23.4-23.7 us for 200 x 64 -> 100 in float64."""
    a, a_off, row_step, k_step = A
    b, b_off, ldb = B
    c, c_off, ldc = C
    if trivial_product(m, n, k, C, accumulate):
        return
    width = columns_per_block(c.itemsize)
    start = 0
    while start < k:
        chain = inner_blocks(k, start)
        first = start == 0 and not accumulate
        # where B's rows of the chain stay in cache, C is written block row
        # after block row; else a panel of B's columns stays in cache while
        # the rows pass (one call site either way: each inlines the block)
        rows_first = chain * n * c.itemsize <= ROWS_FIRST_BYTES
        row_blocks, col_blocks = (m + ROWS - 1) // ROWS, (n + width - 1) // width
        inner = col_blocks if rows_first else row_blocks
        for t in range(row_blocks * col_blocks):
            outer_at, inner_at = divmod(t, inner)
            i, j = (outer_at, inner_at) if rows_first else (inner_at, outer_at)
            i, j = i * ROWS, j * width
            A_i = (a, a_off + i * row_step + start * k_step, row_step, k_step)
            B_j = (b, b_off + start * ldb + j, ldb)
            block(chain, A_i, B_j, (c, c_off + i * ldc + j, ldc), min(ROWS, m - i), min(width, n - j), first)
        start += chain


@kernel
def blocked_nn(m, n, k, A, B, C, accumulate):
    """``C (+)= A @ B`` on blocks (``A`` is ``m x k``; as ``few_rows.few_rows_nn``)."""
    a, a_off, lda = A
    blocked(m, n, k, (a, a_off, lda, 1), B, C, accumulate)


@kernel
def blocked_tn(m, n, k, A, B, C, accumulate):
    """``C (+)= A.T @ B`` on blocks (``A`` is ``k x m``; as ``few_rows.few_rows_tn``)."""
    a, a_off, lda = A
    blocked(m, n, k, (a, a_off, 1, lda), B, C, accumulate)


# Which layers take the blocked products (`takes_blocked`). BLAS's time /
# theirs, one thread, on the Zen 5 development machine with OpenBLAS's
# Haswell kernels (forward product / weight gradient):
# - float64: 1.7-2.2x for 16 to 200 rows through 64-100, 100-100, 100-10,
#   10-100 and 16-16; 4.8x at 4 rows; 1.4-2.1x through 784-100, 64-256 and
#   256-256 (200 rows); 1.2-1.4x through 64-512 (64 rows), 1024-1024 (32
#   rows) and 64-1024 (32 rows; 256 rows: 1.22x / 1.05x); 1.2-1.6x at 3 units.
# - float32: 1.5-3.1x at 32 or more units (6.0x at 4 rows), but 0.62-1.54x at
#   3 to 16 units, where most lanes of a block's 48 columns are masked.
# They also beat the few-rows loops (`fastnn._kernels.few_rows`) at every one
# of these points. Layers the few-rows loops call wide (at least FEW_COLS units
# and FEW_SIZE weights: the tiled kernel's large products), in its blocks (256
# rows a forward block, gradients over 1024 rows), float64:
# - fed by 64: 1.31x / 1.12x through 64-1024, 1.39x / 1.19x through 64-2048,
#   1.7-2.1x at 8 and 32 rows through 64-4096 (float32 gradient: 1.26x);
# - fed by 128: 1.15x / 1.02x;
# - fed by 256 to 1024: 0.73-1.15x (784-1024: 0.95x / 0.85x): there B's panel
#   of a chain of 256 rows no longer stays in the first-level cache, where
#   BLAS packs it; those keep the few-rows rule. Packing the panel into a
#   48 KB buffer on the stack, in an experiment, took 256 x 784 -> 1024 to
#   1.02x / 1.05x (784 x 1024 over 1024 rows: 0.95x) and 256 x 64 -> 1024 to
#   1.45x / 1.32x, but the gradient fed by 64 over 1024 rows (B's) to 0.58x,
#   where a packed panel serves 16 blocks only: not kept. The large products
#   need the rest of what BLAS does (blocks of A packed for the second-level
#   cache, panels of B for the first).
WIDE_MAX_FAN_IN = 128
# A layer of one unit keeps BLAS, which multiplies by a vector there (gemv)
# in another order: where a diverging fit overflows, that order decides
# whether a sum of infinities is NaN or infinite, and scikit-learn's
# estimators go on with what BLAS gives.
MIN_UNITS = 2
MIN_UNITS_32 = 32
ANY_ROWS = 1 << 62  # the row limit of a layer that takes them (see few_rows.with_loops)


def available(architecture, wide):
    """Whether any layer can take the blocked products: the OpenBLAS kernel set
    ``architecture`` packs every operand and Numba compiles for 512-bit vectors
    (``wide``, `wide_vectors`)."""
    from fastnn._kernels.few_rows import PACKING_KERNELS

    return bool(wide) and architecture in PACKING_KERNELS


def takes_blocked(fan_in, fan_out, itemsize, architecture, wide):
    """Whether a ``fan_in x fan_out`` layer takes the blocked products, for
    a dtype of ``itemsize`` bytes, with the OpenBLAS kernel set
    ``architecture`` (lower case, None: unknown) and where Numba compiles for
    512-bit vectors (``wide``, `wide_vectors`)."""
    from fastnn._kernels.few_rows import FEW_COLS, FEW_SIZE

    if not available(architecture, wide):
        return False
    if fan_out >= FEW_COLS and fan_in * fan_out >= FEW_SIZE and fan_in > WIDE_MAX_FAN_IN:
        return False
    return fan_out >= (MIN_UNITS if itemsize == 8 else MIN_UNITS_32)


def wide_vectors():
    """Whether Numba compiles for this CPU and the CPU has 512-bit vectors (AVX-512F)."""
    import llvmlite.binding as llvm

    if numba.config.CPU_NAME not in (None, "host"):
        return False
    return "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")



def _blocked_nn_c(m, n, k, a, lda, b, ldb, c, ldc, accumulate):
    # blocked_nn on C pointers to the blocks' first elements (its callback, see few_rows.address)
    A = numba.carray(a, max(0, (m - 1) * lda + k))
    B = numba.carray(b, max(0, (k - 1) * ldb + n))
    C = numba.carray(c, max(0, (m - 1) * ldc + n))
    blocked_nn(m, n, k, (A, 0, lda), (B, 0, ldb), (C, 0, ldc), accumulate != 0)


def _blocked_tn_c(m, n, k, a, lda, b, ldb, c, ldc, accumulate):
    # blocked_tn on C pointers (its callback)
    A = numba.carray(a, max(0, (k - 1) * lda + m))
    B = numba.carray(b, max(0, (k - 1) * ldb + n))
    C = numba.carray(c, max(0, (m - 1) * ldc + n))
    blocked_tn(m, n, k, (A, 0, lda), (B, 0, ldb), (C, 0, ldc), accumulate != 0)


CALLBACKS = {"blocked_nn": _blocked_nn_c, "blocked_tn": _blocked_tn_c}
