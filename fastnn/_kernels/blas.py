"""A matrix product on blocks of flat buffers, straight into BLAS.

Numba's ``np.dot(A, B, out)`` takes whole contiguous matrices and always
overwrites ``out``. The tiled runtime (``fastnn._kernels.tiled``) multiplies
blocks: a column tile of a wide activation matrix, a row tile of the batch,
a block of a weight gradient; and it accumulates into blocks
(``C += A @ B``). Copying each block to a contiguous buffer first would add
one more pass over the data per product, which is what the tiles are there
to avoid. So `gemm` calls the same BLAS routine as ``np.dot`` (the
``?gemm`` of SciPy's BLAS, reached through Numba's ``numba_xxgemm`` helper,
a symbol resolved when the code is loaded: cache-safe) with the leading
dimensions and ``beta`` of the blocks.

A block is a tuple ``(buffer, offset, ld)``: element ``(i, j)`` of the
row-major block is ``buffer[offset + i * ld + j]``. ``beta`` is 0 (the
product overwrites ``C``) or 1 (it is added to ``C``); ``alpha`` is 1.
"""

import numpy as np
from numba import types
from numba.extending import overload

# alpha and beta are passed to BLAS by pointer: constants of each dtype,
# [0, 1], frozen into the compiled code (BLAS only reads them)
_SCALARS_64 = np.array([0.0, 1.0], dtype=np.float64)
_SCALARS_32 = np.array([0.0, 1.0], dtype=np.float32)
_N = ord("n")
_T = ord("t")


def gemm(m, n, k, A, trans_a, B, trans_b, C, accumulate):
    """``C = op(A) @ op(B)`` (``C += ...`` when ``accumulate``) on blocks.

    ``op(A)`` is ``m x k`` (``A`` read transposed when ``trans_a``), ``op(B)``
    is ``k x n``, ``C`` is ``m x n``; ``A``, ``B`` and ``C`` are
    ``(buffer, offset, ld)`` blocks of row-major matrices. This Python
    version runs when kernels execute as Python (``NUMBA_DISABLE_JIT=1``).
    """
    a = _block(A, k if trans_a else m, m if trans_a else k)
    b = _block(B, n if trans_b else k, k if trans_b else n)
    c = _block(C, m, n)
    product = (a.T if trans_a else a) @ (b.T if trans_b else b)
    if accumulate:
        c += product
    else:
        c[...] = product


def _block(block, rows, cols):
    buf, off, ld = block
    if rows == 0 or cols == 0:
        return buf[off:off].reshape(rows, cols)
    return np.lib.stride_tricks.as_strided(
        buf[off:], shape=(rows, cols), strides=(ld * buf.itemsize, buf.itemsize)
    )


@overload(gemm)
def _gemm_impl(m, n, k, A, trans_a, B, trans_b, C, accumulate):
    from numba.np.linalg import _BLAS, ensure_blas

    ensure_blas()
    dtype = C[0].dtype
    xxgemm = _BLAS().numba_xxgemm(dtype)
    kind = np.int8(ord("d" if dtype == types.float64 else "s"))
    scalars = _SCALARS_64 if dtype == types.float64 else _SCALARS_32

    def impl(m, n, k, A, trans_a, B, trans_b, C, accumulate):
        if m == 0 or n == 0:
            return
        a, a_off, lda = A
        b, b_off, ldb = B
        c, c_off, ldc = C
        if k == 0:
            if not accumulate:
                for i in range(m):
                    for j in range(n):
                        c[c_off + i * ldc + j] = 0
            return
        # row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T,
        # and a row-major buffer read column-major is its transpose
        xxgemm(
            kind, np.int8(_T if trans_b else _N), np.int8(_T if trans_a else _N),
            n, m, k, scalars[1:].ctypes, b[b_off:].ctypes, ldb, a[a_off:].ctypes, lda,
            scalars[1:].ctypes if accumulate else scalars.ctypes, c[c_off:].ctypes, ldc,
        )  # fmt: skip

    return impl
