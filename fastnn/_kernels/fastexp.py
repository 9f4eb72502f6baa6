"""An inlinable, vectorisable ``exp(x)`` for ``x <= 0``, and ``tanh`` built on it.

Numba lowers ``np.exp`` on a scalar to a call into libm. In the tutorial's
tiny layers each call spills registers around it, and in large layers the
call blocks vectorisation of the sigmoid loop, which then costs more than
the matrix products. Sigmoid only needs ``exp(-|z|)``, so this routine
handles ``x <= 0``, the way libm does it: ``x = (m * N + j) * ln2 / N + r``
with ``|r| <= ln2 / (2N)``, so ``exp(x) = 2**m * 2**(j/N) * exp(r)``, with
``2**m`` built directly from its bit pattern.

- float64: ``N = 64``, ``2**(j/N)`` from a small table, ``exp(r)`` from a
  degree-5 Taylor polynomial.
- float32: ``N = 1``, no table, ``exp(r)`` from a degree-7 Taylor polynomial
  (``|r| <= ln2 / 2``). With a 32-entry table and degree 3 (the first
  version), the vectorised loop spent its time in the table's gathers: on
  one core of an AVX-512 Zen 4, a 256 x 512 block in cache took 0.55 ns an
  element for exp and 0.63 for sigmoid, against 0.35 and 0.48 without the
  table (PyTorch 2.13's ``torch.sigmoid``: 0.47), and the error went from
  1.8 to 1.2 ulp. In float64, eight FMAs more cost as much as the gathers
  save (0.97 against 1.01 ns for exp), so the table stays.

Inputs whose result would be subnormal (``x < -708.3`` in float64,
``x < -87.3`` in float32) give 0, an absolute error below 3e-308 (2e-38).
The tests bound the relative error by 2 ulp (float64) and 4 ulp (float32)
against ``np.exp``.

``tanh_fast``: ``np.tanh`` is a libm call too, which kept the tanh loop
scalar at about 10-13 ns an element in float64, ten times the sigmoid's.

- For ``|z| >= 0.55``: ``1 - 2e / (1 + e)`` with ``e = exp_nonpositive(-2|z|)``
  (``e <= 1/3``, so the subtraction loses at most about one ulp).
- Below, where that subtraction would cancel: ``|z| + |z| s g(s)`` with
  ``s = z**2`` and ``g`` a polynomial fit to ``(tanh(z) / z - 1) / s`` on
  ``[0, 0.3025]`` (Chebyshev fits in 40-digit arithmetic, by
  ``tools/fit_tanh.py``: degree 10 in float64, relative error 2e-18; degree 4
  in float32, 4e-9).
- Then the sign of ``z`` (``-0.0`` stays ``-0.0``, NaN stays NaN).

Both branches are computed and one selected, so the loop has no branch. The
overload is inlined into its callers (``inline="always"``): LLVM left it a
call, and the loop took 10 ns an element. On one core of the development
machine (AVX-512 Zen 4), 262,144 elements: 1.9 ns an element in float64 and
0.64 ns in float32, against 4.9 and 2.5 ns for PyTorch 2.13's ``torch.tanh``
(NumPy 2.4's own SIMD ``np.tanh``: 1.7 and 0.36 ns). The tests bound the
error by 3 ulp in float64 (2.0 seen on 700,000 points) and 4 ulp in float32
(1.4 seen) against ``np.tanh``.
"""

import math

import numpy as np
from numba import types
from numba.extending import intrinsic, overload

from fastnn._kernels._jit import kernel

_N64 = 64
TABLE_64 = 2.0 ** (np.arange(_N64) / _N64)

# ln2 / N split in a high part with trailing zero bits (k * hi is exact) and a low part
_LN2 = np.log(2.0)


def _split(value, zero_bits, dtype, itype):
    bits = np.array(value, dtype=dtype).view(itype)
    hi = (bits & ~itype((1 << zero_bits) - 1)).view(dtype)
    return dtype(hi), dtype(value - float(hi))


# float64: fdlibm's split of ln2 (ln2_hi has 21 trailing zero bits; k < 2**17)
HI_64 = 6.93147180369123816490e-01 / _N64
LO_64 = 1.90821492927058770002e-10 / _N64
# float32: ln2 with 11 significant bits in the high part, the rest from float64 (|k| <= 126)
HI_32, LO_32 = _split(_LN2, 12, np.float32, np.int32)
INV_64 = float(_N64 / _LN2)
INV_32 = np.float32(1.0 / _LN2)
MIN_64 = -708.3  # exp(MIN_64) is still a normal float64
MIN_32 = np.float32(-87.3)


def _bitcast(source, target):
    # an intrinsic reinterpreting the bits of a `source` scalar as a `target` one
    @intrinsic
    def reinterpret(typingctx, value):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    return reinterpret


_int64_as_float64 = _bitcast(types.int64, types.float64)
_int32_as_float32 = _bitcast(types.int32, types.float32)


def exp_nonpositive(x):
    """``exp(x)`` for ``x <= 0`` (Python stand-in; compiled code uses the overload).

    Runs when kernels execute as Python (``NUMBA_DISABLE_JIT=1``): it keeps
    the compiled version's dtype and its flush to 0 below ``MIN_64``
    (``MIN_32`` in float32), so that it never underflows or warns.
    """
    if isinstance(x, np.float32):
        return np.float32(0.0) if x < MIN_32 else np.exp(x)
    return 0.0 if x < MIN_64 else float(np.exp(x))


@overload(exp_nonpositive)
def _exp_nonpositive_impl(x):
    if x == types.float32:

        def impl32(x):
            xc = MIN_32 if not x >= MIN_32 else x  # NaN too: fptosi(NaN) is undefined
            kf = np.floor(xc * INV_32 + np.float32(0.5))
            r = (xc - kf * HI_32) - kf * LO_32
            p = np.float32(1.0 / 5040.0)
            p = p * r + np.float32(1.0 / 720.0)
            p = p * r + np.float32(1.0 / 120.0)
            p = p * r + np.float32(1.0 / 24.0)
            p = p * r + np.float32(1.0 / 6.0)
            p = p * r + np.float32(0.5)
            p = p * r + np.float32(1.0)
            p = p * r + np.float32(1.0)
            scale = _int32_as_float32((np.int32(kf) + np.int32(127)) << np.int32(23))
            value = p * scale
            if x != x:
                return x
            return np.float32(0.0) if x < MIN_32 else value

        return impl32

    def impl64(x):
        xc = MIN_64 if not x >= MIN_64 else x  # NaN too: fptosi(NaN) is undefined
        k = np.int64(np.floor(xc * INV_64 + 0.5))
        kf = np.float64(k)
        r = (xc - kf * HI_64) - kf * LO_64
        p = 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        j = k & (_N64 - 1)
        m = k >> 6
        scale = _int64_as_float64((m + 1023) << 52)
        value = (TABLE_64[j] * scale) * p
        if x != x:
            return x
        return 0.0 if x < MIN_64 else value

    return impl64


@kernel
def exp_nonpositive_array(x, out):
    # out = exp(x) elementwise for x <= 0 (the array form of exp_nonpositive)
    for i in range(x.size):
        out[i] = exp_nonpositive(x[i])
    return out


# g(s) ~ (tanh(z) / z - 1) / s, s = z**2 <= TANH_SMALL**2: coefficients from
# the highest power down (tools/fit_tanh.py). tanh(TANH_SMALL) > 0.5, so that
# the results of the other branch, whose subtraction costs about an ulp of 1,
# lie in [0.5, 1]: with 0.4, their error reached 4 ulp (float64).
TANH_SMALL = 0.55
TANH_G_64 = (
    -0.000020602765376366339642, 0.000085113136855776712331, -0.00023463474108872371272,
    0.00058893605200740577639, -0.0014556618301007160335, 0.0035921103786890238773,
    -0.0088632343978143548378, 0.021869488493666941903, -0.053968253967434014504,
    0.13333333333332714826, -0.33333333333333332561,
)  # fmt: skip
TANH_G_32 = (-0.0066102278311147342278, 0.021309388664443473655, -0.053909428827460545414,
             0.1333311372902087191, -0.33333332007976979681)  # fmt: skip
_G64 = tuple(float(c) for c in TANH_G_64)
_G32 = tuple(np.float32(c) for c in TANH_G_32)
_SMALL_32 = np.float32(TANH_SMALL)


def tanh_fast(x):
    """``tanh(x)`` (Python stand-in; compiled code uses the overload, see the module docstring)."""
    return np.float32(np.tanh(x)) if isinstance(x, np.float32) else float(np.tanh(x))


@overload(tanh_fast, inline="always")
def _tanh_fast_impl(x):
    if x == types.float32:
        g0, g1, g2, g3, g4 = _G32

        def impl32(x):
            a = abs(x)
            s = x * x
            g = (((g0 * s + g1) * s + g2) * s + g3) * s + g4
            small = a + a * (s * g)
            e = exp_nonpositive(np.float32(-2.0) * a)
            big = np.float32(1.0) - np.float32(2.0) * e / (np.float32(1.0) + e)
            return math.copysign(small if a < _SMALL_32 else big, x)

        return impl32

    g0, g1, g2, g3, g4, g5, g6, g7, g8, g9, g10 = _G64

    def impl64(x):
        a = abs(x)
        s = x * x
        g = (((((g0 * s + g1) * s + g2) * s + g3) * s + g4) * s + g5) * s + g6
        g = (((g * s + g7) * s + g8) * s + g9) * s + g10
        small = a + a * (s * g)
        e = exp_nonpositive(-2.0 * a)
        big = 1.0 - 2.0 * e / (1.0 + e)
        return math.copysign(small if a < TANH_SMALL else big, x)

    return impl64


@kernel
def tanh_fast_array(x, out):
    # out = tanh(x) elementwise (the array form of tanh_fast)
    for i in range(x.size):
        out[i] = tanh_fast(x[i])
    return out
