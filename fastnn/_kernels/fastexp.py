"""An inlinable, vectorisable ``exp(x)`` for ``x <= 0``.

Numba lowers ``np.exp`` on a scalar to a call into libm. In the tutorial's
tiny layers each call spills registers around it, and in large layers the
call blocks vectorisation of the sigmoid loop, which then costs more than
the matrix products. Sigmoid only needs ``exp(-|z|)``, so this routine
handles ``x <= 0``, by one range reduction: ``x = k ln2 + r`` with
``|r| <= ln2 / 2``, so ``exp(x) = 2**k exp(r)``, with ``2**k`` built
directly from its bit pattern, and ``exp(r)`` from a polynomial:

- float64: ``1 + r + r**2 h(r)``, ``h`` a degree-9 Chebyshev fit
  (``tools/fit_polynomials.py``) that contributes a relative error of 1e-17;
- float32: a degree-6 Chebyshev fit of ``exp(r)`` itself, relative error 2e-9.

No table. A table of ``2**(j/N)`` (64 entries in float64, 32 in float32,
in earlier versions) shortens the polynomial, but a vectorised loop loads
its entries with a gather, which the loop then waits on. One core of the
Zen 5 development machine (AVX-512), float64, a 65,536-value block in
cache: exp 0.43 against 0.31-0.33 ns a value, sigmoid 0.51-0.56 against
0.46 (PyTorch 2.13's ``torch.sigmoid`` on one thread: 0.54-0.56), and the
largest error went from 2.2 to 1.1 ulp. (On the Zen 4 machine before it,
whose AVX-512 units are half as wide, a Taylor polynomial without the table
had been 4% slower: the CHANGELOG has the figures.)

`exp_nonpositive_short` keeps float64's table, for code that waits on each
value in turn rather than streaming many (the tutorial's kernel): there the
table's load runs beside a shorter polynomial.

Two choices keep the chain of dependent operations short, which is what the
tutorial's tiny layers wait on (each layer's sigmoids need the last layer's),
and leave the vectorised loop over a wide layer fewer instructions:

- the nearest integer ``k`` to ``x / ln2`` comes from adding a shift
  (``1.5 * 2**52``, or ``1.5 * 2**23`` in float32): the sum's low bits are ``k``, and
  the sum less the shift is ``k`` as a float. No rounding instruction, and
  no conversion from float to integer and back;
- the polynomial is evaluated in Estrin's scheme (``r**2`` and the pairs of
  terms in parallel), not Horner's (one multiply-add after the other), and
  summed so that only the last addition, of 1, rounds at the magnitude of 1
  (adding ``1 + r`` first cost a bit: 3 ulp in float64 instead of 2);
- where Numba's target has fused multiply-adds (`FMA`), each ``a * b + c``
  of the reduction and the polynomial is one (`mul_add`): one instruction
  and one rounding instead of two on the chain. On the development machine
  (Zen 4): the tutorial 91 against 96 ns an iteration, sigmoid 0.92-0.99
  against 1.06-1.15 ns a value in float64 and 0.33-0.35 against 0.41-0.43 in
  float32. Without FMA, LLVM's ``fma`` would be a call into the C library,
  so `mul_add` is then a multiply and an add, the bits of the code before.

Inputs whose result would be subnormal (``x < -708.3`` in float64,
``x < -87.3`` in float32) give 0, an absolute error below 3e-308 (2e-38).
The tests bound the relative error against ``np.exp`` by 1.5 ulp (float64;
2 for `exp_nonpositive_short`) and 4 ulp (float32); at most 1.1 ulp was measured
in both dtypes against an exact ``exp``.
"""

import numpy as np
from numba import types
from numba.extending import intrinsic, overload

from fastnn._kernels._jit import kernel
from fastnn._kernels.bits import float32_as_int32, float64_as_int64, int32_as_float32, int64_as_float64

# ln2 split in a high part with trailing zero bits (k * hi is exact) and a low part
_LN2 = np.log(2.0)


def _split(value, zero_bits, dtype, itype):
    bits = np.array(value, dtype=dtype).view(itype)
    hi = (bits & ~itype((1 << zero_bits) - 1)).view(dtype)
    return dtype(hi), dtype(value - float(hi))


# float64: fdlibm's split of ln2 (ln2_hi has 21 trailing zero bits; |k| < 2**17)
HI_64 = 6.93147180369123816490e-01
LO_64 = 1.90821492927058770002e-10
# exp_nonpositive_short's table: 2**(j / N_SHORT), and ln2 / N_SHORT split as above
SHORT_BITS = 6
N_SHORT = 1 << SHORT_BITS
TABLE_SHORT = 2.0 ** (np.arange(N_SHORT) / N_SHORT)
HI_SHORT, LO_SHORT, INV_SHORT = HI_64 / N_SHORT, LO_64 / N_SHORT, float(N_SHORT / _LN2)
# float32: ln2 with 11 significant bits in the high part, the rest from float64 (|k| <= 126)
HI_32, LO_32 = _split(_LN2, 12, np.float32, np.int32)
INV_64 = float(1.0 / _LN2)
INV_32 = np.float32(1.0 / _LN2)
# float64's exp(r) = 1 + r + r**2 h(r), |r| <= ln2 / 2: h a degree-9 Chebyshev fit
# (tools/fit_polynomials.py), which contributes a relative error of 1.3e-17, highest power first
EXP_H_64 = (
    2.5100375832561233664e-8, 2.7620075879983366586e-7, 2.7557268480310025526e-6,
    0.000024801521322368693266, 0.00019841269863040545271, 0.0013888888917196719077,
    0.0083333333333300644495, 0.041666666666624161903, 0.16666666666666667452,
    0.50000000000000010211,
)  # fmt: skip
# float32's exp(r), |r| <= ln2 / 2: a degree-6 Chebyshev fit (tools/fit_polynomials.py),
# relative error 2e-9, highest power first
EXP_32 = tuple(
    np.float32(c)
    for c in (0.0013941108433972674608, 0.008375126398153335682, 0.041666352896775156786,
              0.16666415514653275427, 0.50000000471177576744, 1.0000000377162138425, 1.0)
)  # fmt: skip
MIN_64 = -708.3  # exp(MIN_64) is still a normal float64
# Adding 1.5 * 2**52 (1.5 * 2**23 in float32) to y, |y| < 2**51 (2**22),
# rounds y to the nearest integer k and leaves k in the sum's low bits (the
# sum's binade has a spacing of 1): k = bits(sum) - bits(shift), and k as a
# float is sum - shift
SHIFT_64 = 1.5 * 2.0**52
SHIFT_64_BITS = int(np.array(SHIFT_64).view(np.int64))
SHIFT_32 = np.float32(1.5 * 2.0**23)
SHIFT_32_BITS = int(np.array(SHIFT_32).view(np.int32))
MIN_32 = np.float32(-87.3)


def _target_has_fma():
    # whether the code Numba generates here may use fused multiply-adds: the
    # features of its target machine (NUMBA_CPU_FEATURES, else the host's)
    import numba
    from llvmlite import binding as ll

    features = numba.config.CPU_FEATURES
    if features is None:
        try:
            features = ll.get_host_cpu_features().flatten()
        except Exception:  # pragma: no cover - a host LLVM cannot describe
            return False
    return "+fma" in features.split(",")


# With FMA, a * b + c is one instruction rounded once; without, LLVM's fma
# becomes a call into the C library, so mul_add is then a * b + c, with the
# same bits as before it existed. Numba's kernel cache is kept per CPU and
# feature set, so a cache compiled with one never serves the other.
FMA = _target_has_fma()


@intrinsic
def _fused_multiply_add(typingctx, a, b, c):
    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, a, a), codegen


def mul_add(a, b, c):
    """``a * b + c`` (Python stand-in; compiled code uses the overload: one rounding with `FMA`)."""
    return a * b + c


@overload(mul_add)
def _mul_add_impl(a, b, c):
    if FMA:
        return lambda a, b, c: _fused_multiply_add(a, b, c)
    return lambda a, b, c: a * b + c


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
        E0, E1, E2, E3, E4, E5, E6 = EXP_32

        def impl32(x):
            xc = MIN_32 if not x >= MIN_32 else x  # NaN too (see impl64)
            kd = mul_add(xc, INV_32, SHIFT_32)  # k = round(xc / ln2) in kd's low bits
            k = float32_as_int32(kd) - SHIFT_32_BITS
            kf = kd - SHIFT_32
            r = mul_add(-kf, LO_32, mul_add(-kf, HI_32, xc))
            r2 = r * r
            low, mid = mul_add(E3, r, E4), mul_add(E1, r, E2)
            p = E6 + mul_add(E5, r, r2 * mul_add(r2, mul_add(r2, E0, mid), low))
            scale = int32_as_float32(np.int32(k + 127) << np.int32(23))
            value = p * scale
            if x != x:
                return x
            return np.float32(0.0) if x < MIN_32 else value

        return impl32

    H9, H8, H7, H6, H5, H4, H3, H2, H1, H0 = EXP_H_64

    def impl64(x):
        xc = MIN_64 if not x >= MIN_64 else x  # NaN too: kd must stay in SHIFT_64's binade
        kd = mul_add(xc, INV_64, SHIFT_64)  # k = round(xc / ln2) in kd's low bits
        k = float64_as_int64(kd) - SHIFT_64_BITS
        kf = kd - SHIFT_64
        r = mul_add(-kf, LO_64, mul_add(-kf, HI_64, xc))
        r2 = r * r
        r4 = r2 * r2
        # h(r) in Estrin's scheme: pairs of terms, pairs of pairs, then the rest
        low = mul_add(r2, mul_add(H3, r, H2), mul_add(H1, r, H0))
        mid = mul_add(r2, mul_add(H7, r, H6), mul_add(H5, r, H4))
        h = mul_add(r4 * r4, mul_add(H9, r, H8), mul_add(r4, mid, low))
        p = 1.0 + mul_add(r2, h, r)
        scale = int64_as_float64((k + 1023) << 52)
        value = scale * p
        if x != x:
            return x
        return 0.0 if x < MIN_64 else value

    return impl64


def exp_nonpositive_short(x):
    """`exp_nonpositive` with a shorter chain of dependent operations (Python
    stand-in; compiled code uses the overload), for code that waits on one
    value after another rather than streaming many.

    float64: ``exp(x) = 2**(k / N_SHORT) exp(r)``, ``|r| <= ln2 / (2 N_SHORT)``,
    with ``2**(j / N_SHORT)`` from `TABLE_SHORT` and ``exp(r)`` from a degree-5
    Taylor polynomial: two fewer multiply-adds on the chain than
    `exp_nonpositive`, and the table's load beside them. The tutorial's
    network waits on two layers of sigmoids an iteration: 81-82 ns an iteration
    with this, 85-87 with `exp_nonpositive` (float64, Zen 5). In a
    vectorised loop the table's load is a gather, and this is the slower one
    (see the module docstring). Relative error 2.2 ulp. float32: `exp_nonpositive`.
    """
    return exp_nonpositive(x)


@overload(exp_nonpositive_short)
def _exp_nonpositive_short_impl(x):
    if x == types.float32:
        return lambda x: exp_nonpositive(x)

    def short64(x):
        xc = MIN_64 if not x >= MIN_64 else x  # (see exp_nonpositive)
        kd = mul_add(xc, INV_SHORT, SHIFT_64)  # k = round(xc * N / ln2) in kd's low bits
        k = float64_as_int64(kd) - SHIFT_64_BITS
        kf = kd - SHIFT_64
        r = mul_add(-kf, LO_SHORT, mul_add(-kf, HI_SHORT, xc))
        r2 = r * r
        q = mul_add(r2, mul_add(r2, mul_add(r, 1.0 / 120.0, 1.0 / 24.0), mul_add(r, 1.0 / 6.0, 0.5)), r)
        j = k & (N_SHORT - 1)
        scale = int64_as_float64(((k >> SHORT_BITS) + 1023) << 52)
        value = (TABLE_SHORT[j] * scale) * (1.0 + q)
        if x != x:
            return x
        return 0.0 if x < MIN_64 else value

    return short64


@kernel
def exp_nonpositive_array(x, out):
    # out = exp(x) elementwise for x <= 0 (the array form of exp_nonpositive)
    for i in range(x.size):
        out[i] = exp_nonpositive(x[i])
    return out


@kernel
def exp_nonpositive_short_array(x, out):
    # the same with exp_nonpositive_short
    for i in range(x.size):
        out[i] = exp_nonpositive_short(x[i])
    return out
