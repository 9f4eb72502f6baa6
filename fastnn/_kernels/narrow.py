"""The products against a narrow layer, without BLAS: ``Z = A @ W``
(`narrow_nn`), the weight gradient ``D.T @ A`` (`narrow_tn`) and the delta
sent back, ``D @ W.T`` (`narrow_back`).

The tiled kernel's OUTPUT tasks (``fastnn._kernels.tiled.output_tile``)
multiply a tile of the last hidden layer (8 to 32 rows of 1024 to 4096
units, as many as fit in 256 KB) by the output layer's weights, which have a
few columns (10 for a classifier of ten classes). BLAS spends more on such a
product than on its multiply-adds: it packs the operands into panels for a
kernel built for wide blocks, and its kernels for 10 columns run at 15-32
GFLOP/s where the large products of the same step run at 50-60. Here each
loop keeps a 4 x 4 block of results (four rows by four units), or four
rows' shares of two units' gradient rows, in registers, and is vectorised
along the wide dimension, which is contiguous in both operands: the output
layer's weights are read transposed, ``wt`` (``o x k``, from `transpose`,
once a batch), and the gradient is accumulated transposed (``o x k``; the
tiled kernel's REDUCE writes it back as ``k x o``).

Measured on the Zen 5 development machine, one thread, the three products
of one tile (BLAS's time -> these loops'), float64: 32 x 1024 -> 10 67 ->
32-37 us, 8 x 4096 -> 10 92 -> 28-30 us, 16 x 2048 -> 10 75 -> 27-33 us;
float32: 41 -> 18, 73 -> 17-25 and 50 -> 17 us. That is with OpenBLAS's
Haswell kernels; with its SkylakeX (AVX-512) kernels BLAS took 36, 57 and 46
us in float64. At 16 units the loops were slower than the SkylakeX kernels
for tiles of 16 and 32 rows, at 3 units 1.5x (SkylakeX) to 4x (Haswell)
faster, and at 10 units fed by 16 (a tile of 256 rows) slower than BLAS:
`takes_narrow` says which layers take them.

The sums over the wide dimension are compiled with reassociation allowed
(``fastmath`` 'reassoc' and 'contract'), so that LLVM splits them into
vector lanes. Which loop computes an element, and in which order it adds
a tile's rows, depends on the tile's shape only, and the tiles on the
shapes of the layers and the batch: results depend on the shapes, not on
the number of threads. Nothing else of IEEE arithmetic is relaxed: an
infinity or a NaN propagates as it does through BLAS (the kernels'
divergence checks rely on it).
"""

from fastnn._kernels._jit import kernel
from fastnn._kernels.views import span

NARROW_UNITS = 12
NARROW_MIN_UNITS = 2
NARROW_MIN_FAN_IN = 64
# Batches of fewer rows keep BLAS: the loops' fixed costs (the weights
# transposed, the gradient transposed back: two passes over the layer's
# weights a step) then match what they save. Steps of 4 rows through
# 64-4096-10 took 166-168 us with the loops against 159-161 without; 8 rows
# 231-240 against 234-240; 16 rows 384 against 393-398 (float64, 2 threads).
NARROW_MIN_ROWS = 8


def takes_narrow(fan_in, units, rows):
    """Whether a layer of ``units`` units fed by ``fan_in`` takes the loops
    in batches of ``rows`` rows (see the module docstring)."""
    wide_enough = fan_in >= NARROW_MIN_FAN_IN and rows >= NARROW_MIN_ROWS
    return NARROW_MIN_UNITS <= units <= NARROW_UNITS and wide_enough


# reassociation and contraction only (see the module docstring)
_SUMS = {"fastmath": {"reassoc", "contract"}}


@kernel(linked=False, **_SUMS)
def narrow_nn(rows, k, o, A, wt, Z):
    """``Z = A @ W`` for ``A`` (``rows x k``), ``wt = W.T`` (``o x k``,
    contiguous); ``A`` and ``Z`` are ``(buffer, offset, ld)`` blocks."""
    a, a_off, lda = A
    z, z_off, ldz = Z
    for g in range(0, rows, 4):
        r, q1, q2, q3 = _four_rows(g, rows)
        a0, a1, a2, a3 = _rows4(a, a_off, lda, k, r, q1, q2, q3)
        for j in range(0, o, 4):
            w0, w1, w2, w3 = _units4(wt, k, o, j)
            zero = z.dtype.type(0)
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
            for i in range(k):
                x0, x1, x2, x3 = a0[i], a1[i], a2[i], a3[i]
                v0, v1, v2, v3 = w0[i], w1[i], w2[i], w3[i]
                s00 += x0 * v0
                s01 += x0 * v1
                s02 += x0 * v2
                s03 += x0 * v3
                s10 += x1 * v0
                s11 += x1 * v1
                s12 += x1 * v2
                s13 += x1 * v3
                s20 += x2 * v0
                s21 += x2 * v1
                s22 += x2 * v2
                s23 += x2 * v3
                s30 += x3 * v0
                s31 += x3 * v1
                s32 += x3 * v2
                s33 += x3 * v3
            _put4(z, z_off + r * ldz, j, o, s00, s01, s02, s03)
            _put4(z, z_off + q1 * ldz, j, o, s10, s11, s12, s13)
            _put4(z, z_off + q2 * ldz, j, o, s20, s21, s22, s23)
            _put4(z, z_off + q3 * ldz, j, o, s30, s31, s32, s33)


@kernel(inline="always")
def _four_rows(g, rows):
    # the rows of group g (a multiple of 4) of a product of `rows` rows: the
    # last group of a product with a remainder overlaps the one before it,
    # and one of fewer than 4 rows repeats its last row. A row computed
    # twice is computed by the same code from the same inputs (the same
    # value, written again), and every load of a group comes before its
    # stores, so that a repeated row is not added to twice.
    r = max(0, min(g, rows - 4))
    return r, min(r + 1, rows - 1), min(r + 2, rows - 1), min(r + 3, rows - 1)


@kernel(inline="always")
def _rows4(buf, off, ld, k, r0, r1, r2, r3):
    # rows r0 .. r3 of the block (buf, off, ld), k elements each
    first, second = span(buf, off + r0 * ld, k), span(buf, off + r1 * ld, k)
    return first, second, span(buf, off + r2 * ld, k), span(buf, off + r3 * ld, k)


@kernel(inline="always")
def _units4(wt, k, o, j):
    # wt's rows of units j .. j + 3; past the last unit, the last again
    j1, j2, j3 = min(j + 1, o - 1), min(j + 2, o - 1), min(j + 3, o - 1)
    return span(wt, j * k, k), span(wt, j1 * k, k), span(wt, j2 * k, k), span(wt, j3 * k, k)


@kernel(inline="always")
def _put4(z, off, j, o, s0, s1, s2, s3):
    # a row's results for units j .. j + 3 (those that exist)
    z[off + j] = s0
    if j + 1 < o:
        z[off + j + 1] = s1
    if j + 2 < o:
        z[off + j + 2] = s2
    if j + 3 < o:
        z[off + j + 3] = s3


@kernel(linked=False, **_SUMS)
def narrow_tn(rows, k, o, A, D, gt, accumulate):
    """``Gt = D.T @ A`` (``+=`` when ``accumulate``): the weight gradient of
    the narrow layer, transposed (``o x k``, contiguous from ``gt = (buffer,
    offset)``), for ``A`` (``rows x k``) and ``D`` (``rows x o``), blocks."""
    a, a_off, lda = A
    d, d_off, ldd = D
    g_buf, g_off = gt
    full = rows - rows % 4
    if not accumulate and full == 0:
        for i in range(o * k):
            g_buf[g_off + i] = 0
    zero = a.dtype.type(0)
    for r in range(0, full, 4):
        # four rows' shares of two units' gradient rows at once (the first
        # four rows of a product that does not accumulate assign them)
        a0, a1, a2, a3 = _rows4(a, a_off, lda, k, r, r + 1, r + 2, r + 3)
        add = accumulate or r > 0
        for j in range(0, o, 2):
            # an odd last unit is paired with itself, weighing 0: its second
            # row (h, the same as g) is stored first, so g's sum is the one kept
            j1 = min(j + 1, o - 1)
            g, h = span(g_buf, g_off + j * k, k), span(g_buf, g_off + j1 * k, k)
            d0, d1 = d[d_off + r * ldd + j], d[d_off + (r + 1) * ldd + j]
            d2, d3 = d[d_off + (r + 2) * ldd + j], d[d_off + (r + 3) * ldd + j]
            paired = j + 1 < o
            e0 = d[d_off + r * ldd + j1] if paired else zero
            e1 = d[d_off + (r + 1) * ldd + j1] if paired else zero
            e2 = d[d_off + (r + 2) * ldd + j1] if paired else zero
            e3 = d[d_off + (r + 3) * ldd + j1] if paired else zero
            for i in range(k):
                x0, x1, x2, x3 = a0[i], a1[i], a2[i], a3[i]
                tg = d0 * x0 + d1 * x1 + d2 * x2 + d3 * x3
                th = e0 * x0 + e1 * x1 + e2 * x2 + e3 * x3
                if add:
                    tg += g[i]
                    th += h[i]
                h[i] = th
                g[i] = tg
    for r in range(full, rows):
        a0 = span(a, a_off + r * lda, k)
        for j in range(o):
            g = span(g_buf, g_off + j * k, k)
            d0 = d[d_off + r * ldd + j]
            for i in range(k):
                g[i] += d0 * a0[i]


@kernel(linked=False, **_SUMS)
def narrow_back(rows, k, o, D, wt, S):
    """``S = D @ W.T`` for ``D`` (``rows x o``) and ``wt = W.T`` (``o x k``,
    contiguous): the delta a narrow layer sends back; ``S`` (``rows x k``)
    and ``D`` are blocks."""
    d, d_off, ldd = D
    s, s_off, lds = S
    for g in range(0, rows, 4):
        r, q1, q2, q3 = _four_rows(g, rows)
        s0, s1, s2, s3 = _rows4(s, s_off, lds, k, r, q1, q2, q3)
        for j in range(0, o, 4):
            c0 = _take4(d, d_off + r * ldd, j, o)
            c1 = _take4(d, d_off + q1 * ldd, j, o)
            c2 = _take4(d, d_off + q2 * ldd, j, o)
            c3 = _take4(d, d_off + q3 * ldd, j, o)
            w0, w1, w2, w3 = _units4(wt, k, o, j)
            # units j .. j + 3 of four rows: the first four units assign, the others add
            for i in range(k):
                v0, v1, v2, v3 = w0[i], w1[i], w2[i], w3[i]
                t0 = c0[0] * v0 + c0[1] * v1 + c0[2] * v2 + c0[3] * v3
                t1 = c1[0] * v0 + c1[1] * v1 + c1[2] * v2 + c1[3] * v3
                t2 = c2[0] * v0 + c2[1] * v1 + c2[2] * v2 + c2[3] * v3
                t3 = c3[0] * v0 + c3[1] * v1 + c3[2] * v2 + c3[3] * v3
                if j > 0:
                    t0 += s0[i]
                    t1 += s1[i]
                    t2 += s2[i]
                    t3 += s3[i]
                s0[i], s1[i], s2[i], s3[i] = t0, t1, t2, t3


@kernel(inline="always")
def _take4(d, off, j, o):
    # a row's units j .. j + 3 of d, 0 past the last (whose rows of wt
    # repeat the last unit's: finite weights, so they add 0)
    zero = d.dtype.type(0)
    return (
        d[off + j],
        d[off + j + 1] if j + 1 < o else zero,
        d[off + j + 2] if j + 2 < o else zero,
        d[off + j + 3] if j + 3 < o else zero,
    )


@kernel
def transpose(src, src_off, k, o, dst):
    """``dst[:o * k]`` = the ``k x o`` matrix at ``src[src_off:]``, transposed (``o x k``)."""
    for j in range(o):
        for i in range(k):
            dst[j * k + i] = src[src_off + i * o + j]
