"""Vectorisable tanh, expm1, log1p, erfc and the normal distribution function.

Numba lowers ``np.tanh``, ``math.expm1``, ``math.log1p`` and ``math.erf`` on
a scalar to calls into libm, which keep a loop over a row scalar: the tanh
layer took 10-13 ns a value in float64, ten times the sigmoid's, and the
activations that keep their slopes (elu, softplus, gelu) 10-36 ns, where
PyTorch's take 1-5 ns. Each function here is the same arithmetic in every
lane: a formula built on the vectorisable ``exp_nonpositive`` where it is
accurate, and a polynomial where it would cancel, both computed and one
selected, so that the loops have no branch.

- ``tanh_fast(x)``: for ``|x| >= 0.55``, ``1 - 2e / (1 + e)`` with
  ``e = exp(-2|x|) <= 1/3``; below, ``|x| + |x| s g(s)``, ``s = x**2``; then
  the sign of ``x`` (``-0.0`` and NaN kept). ``tanh(0.55) > 0.5``, so the
  first formula's results keep the ulp of ``[0.5, 1]``: with 0.4 the error
  reached 4 ulp.
- ``expm1_nonpositive(x)``, ``x <= 0``: ``exp(x) - 1`` below ``-0.7`` (where
  ``exp(x) < 1/2``), ``x + x**2 h(x)`` above.
- ``log1p_unit(u)``, ``0 <= u <= 1``: ``2 atanh(w)`` with ``w = u / (2 + u)
  <= 1/3``, and ``atanh(w) = w + w s q(s)``, ``s = w**2``.
- ``erfc_nonnegative(a)``, ``a >= 0``: ``1 - a p(a**2)`` below 0.5 (where
  ``erf(a) < 0.53``: the subtraction loses about an ulp); above,
  ``exp(-a**2) r(t)`` with ``t = (a - 3) / (a + 3)``, ``a`` capped at 27
  (float64) or 10 (float32), where ``exp(-a**2)`` is 0 already.
- ``normal_cdf(z)``: ``erfc(|z| / sqrt(2)) / 2`` for ``z < 0``, one minus it
  above. gelu is ``z normal_cdf(z)``: computed as ``(1 + erf) / 2``, its
  left tail would cancel (in float32, a relative error of about 1e-6 at
  ``z = -2``).

The polynomials ``g, h, q, p, r`` are Chebyshev fits in 40-digit arithmetic,
from ``tools/fit_polynomials.py``, which prints them with the error each
contributes: at most 2e-17 in float64 and 4e-9 in float32, below the
rounding of the formulas around them. Errors seen, in ulp of the result
(``tests/test_fastmath.py`` bounds them against NumPy and SciPy):

- tanh 2.0 (float64) and 1.4 (float32), expm1 2.0 and 1.2, log1p 2.0 and 1.8,
  against NumPy;
- erfc 8 and 9 for ``a <= 4``, normal_cdf 12 and 9 for ``z >= -6``, against
  mpmath. Further out the rounding of the square ``q`` in ``exp(-q)`` adds
  up to about ``q`` ulp (462 at ``erfc(26)``, a relative 1e-13). SciPy's
  ``ndtr`` is less accurate there: 56 ulp above ``z = -6``, 1730 below.

Each function is a kernel that Numba inlines into its caller, around small
overloads (the polynomials by dtype) that LLVM inlines. An overload inlined
by Numba with a branch in it warned of a variable out of scope when inlined
in turn (from the training kernels), and one left whole to LLVM stayed a
call: the tanh loop took 10 ns a value again. The polynomials' steps, like
the exp's, are ``fastexp.mul_add``: fused multiply-adds where the target has
FMA. On one core of the development machine (AVX-512 Zen 4), tanh took
1.33-1.36 ns a value in float64 and 0.50 ns in float32 (1.85-1.98 and 0.64
without FMA), against 4.9 and 2.5 ns for PyTorch 2.13's ``torch.tanh``;
gelu 2.64-2.73 and 0.76 ns (4.02-4.09 and 1.00-1.01 without).
"""

import math

import numpy as np
from numba import types
from numba.extending import overload

from fastnn._kernels._jit import kernel
from fastnn._kernels.fastexp import exp_nonpositive, mul_add

TANH_SMALL = 0.55
EXPM1_SMALL = 0.7
ERF_SMALL = 0.5
ERF_K = 3.0
ERF_LARGE_64 = 27.0
ERF_LARGE_32 = 10.0
INV_SQRT2 = 1.0 / math.sqrt(2.0)

# The fits of tools/fit_polynomials.py, highest power first.
# TANH_G_64: degree 10, error 2.33e-18
TANH_G_64 = (
    -0.000020602765376366339642,
    0.000085113136855776712331,
    -0.00023463474108872371272,
    0.00058893605200740577639,
    -0.0014556618301007160335,
    0.0035921103786890238773,
    -0.0088632343978143548378,
    0.021869488493666941903,
    -0.053968253967434014504,
    0.13333333333332714826,
    -0.33333333333333332561,
)
# EXPM1_H_64: degree 10, error 8.07e-19
EXPM1_H_64 = (
    1.5562991015725103788e-9,
    2.4213936178477725585e-8,
    2.7480602548275958603e-7,
    2.7552911930859959629e-6,
    0.000024801423768288252025,
    0.00019841265932179707003,
    0.001388888883051885618,
    0.0083333333328241770474,
    0.041666666666643865333,
    0.16666666666666626807,
    0.49999999999999999885,
)
# ATANH_Q_64: degree 9, error 5.02e-18
ATANH_Q_64 = (
    0.080820228059717661105,
    0.044003692430723369411,
    0.060005364047953562676,
    0.066570721048274680752,
    0.076927850324793115517,
    0.090908947180664290846,
    0.11111111358713931495,
    0.14285714283554378581,
    0.20000000000007291337,
    0.33333333333333329281,
)
# ERF_P_64: degree 8, error 2.15e-18
ERF_P_64 = (
    1.4725865480556743912e-6,
    -0.000014845849259707869768,
    0.00012053335124353740746,
    -0.00085482977536749668828,
    0.0052239773730214700169,
    -0.026866170632887929351,
    0.11283791670925353147,
    -0.37612638903183473544,
    1.1283791670955125696,
)
# ERFC_R_64: degree 22, error 5.02e-18
ERFC_R_64 = (
    1.1655143037683173804e-9,
    -6.8534558041325389362e-10,
    -8.8516762438700140908e-9,
    4.0307170458115842777e-10,
    4.7052033890341362354e-8,
    2.9049420654868545044e-8,
    -2.3481025892547544301e-7,
    -2.9424965971545604065e-7,
    1.2525691727469852231e-6,
    2.1201175511610687503e-6,
    -7.9781520719413687146e-6,
    -0.000012860519967730880034,
    0.000064056559375813617787,
    0.000045255301361502455707,
    -0.00059706194906644999492,
    0.00070774643871595076923,
    0.0042691363328822858489,
    -0.024392499318663987696,
    0.071665837197976480819,
    -0.15011593650077734211,
    0.24560380171233090501,
    -0.32623356004303722769,
    0.17900115118138995036,
)
# TANH_G_32: degree 4, error 3.96e-9
TANH_G_32 = (
    -0.0066102278311147342278,
    0.021309388664443473655,
    -0.053909428827460545414,
    0.1333311372902087191,
    -0.33333332007976979681,
)
# EXPM1_H_32: degree 5, error 7.92e-10
EXPM1_H_32 = (
    0.00015318509273815313081,
    0.0013549320324953542567,
    0.008321282588749777441,
    0.041664712759240736637,
    0.16666655009858001246,
    0.49999999886795042487,
)
# ATANH_Q_32: degree 4, error 4.02e-10
ATANH_Q_32 = (
    0.11612164612011674416,
    0.10853287900440186323,
    0.14296178997151418861,
    0.19999853165964858701,
    0.33333333660263706234,
)
# ERF_P_32: degree 4, error 7.44e-10
ERF_P_32 = (
    0.0047190825672188138798,
    -0.026757732735015515622,
    0.11282831428465861874,
    -0.37612609007469802928,
    1.1283791656017914552,
)
# ERFC_R_32: degree 10, error 7.72e-10
ERFC_R_32 = (
    0.000062851943305754661139,
    0.000036558656221055820495,
    -0.00059882242589333159739,
    0.00070991872969745476377,
    0.0042698073538386395977,
    -0.02439272469400730833,
    0.07166575512992197202,
    -0.15011592817959710756,
    0.2456038050231859169,
    -0.3262335600965442001,
    0.17900115116025216337,
)


def as_type_of(x, value):
    """``value`` as a scalar of ``x``'s float type (Python stand-in; compiled code uses the overload)."""
    return np.float32(value) if isinstance(x, np.float32) else float(value)


@overload(as_type_of)
def _as_type_of_impl(x, value):
    if x == types.float32:
        return lambda x, value: np.float32(value)
    return lambda x, value: np.float64(value)


def _horner(coefficients):
    # a function of s evaluating the polynomial with these coefficients
    # (highest power first) by Horner's rule, written out term by term: a
    # loop over a tuple of 23 float64 coefficients was not unrolled, and the
    # gelu loop took 51 ns a value instead of 4. Each step is a `mul_add`,
    # fused where the target has FMA (a multiply and an add elsewhere)
    names = {f"c{i}": c for i, c in enumerate(coefficients)}
    names["mul_add"] = mul_add
    lines = ["def horner(s):", "    g = c0"]
    lines += [f"    g = mul_add(g, s, c{i})" for i in range(1, len(coefficients))]
    lines += ["    return g"]
    exec("\n".join(lines), names)
    return names["horner"]


def _polynomial(c64, c32):
    # a function of s evaluating c64 (float64 s) or c32 (float32 s), with its overload
    horner64 = _horner(tuple(float(c) for c in c64))
    horner32 = _horner(tuple(np.float32(c) for c in c32))

    def evaluate(s):
        return horner32(s) if isinstance(s, np.float32) else horner64(s)

    @overload(evaluate)
    def _evaluate_impl(s):
        return horner32 if s == types.float32 else horner64

    return evaluate


tanh_g = _polynomial(TANH_G_64, TANH_G_32)
expm1_h = _polynomial(EXPM1_H_64, EXPM1_H_32)
atanh_q = _polynomial(ATANH_Q_64, ATANH_Q_32)
erf_p = _polynomial(ERF_P_64, ERF_P_32)
erfc_r = _polynomial(ERFC_R_64, ERFC_R_32)


def erf_large(x):
    """Where ``exp(-x**2)`` underflows to 0 in ``x``'s dtype (Python stand-in)."""
    return np.float32(ERF_LARGE_32) if isinstance(x, np.float32) else ERF_LARGE_64


@overload(erf_large)
def _erf_large_impl(x):
    if x == types.float32:
        return lambda x: np.float32(ERF_LARGE_32)
    return lambda x: ERF_LARGE_64


@kernel(inline="always")
def tanh_fast(x):
    # tanh(x) in x's dtype (see the module docstring)
    one = as_type_of(x, 1.0)
    a = abs(x)
    e = exp_nonpositive(-(a + a))
    t = one - (e + e) / (one + e)
    if a < TANH_SMALL:
        s = a * a
        t = a + a * (s * tanh_g(s))
    return math.copysign(t, x)


@kernel(inline="always")
def expm1_nonpositive(x):
    # exp(x) - 1 for x <= 0, in x's dtype
    m = exp_nonpositive(x) - as_type_of(x, 1.0)
    if x > -EXPM1_SMALL:
        m = x + (x * x) * expm1_h(x)
    return m


@kernel(inline="always")
def log1p_unit(u):
    # log(1 + u) for 0 <= u <= 1, in u's dtype
    two = as_type_of(u, 2.0)
    w = u / (two + u)
    s = w * w
    return two * w + (two * w) * (s * atanh_q(s))


@kernel(inline="always")
def erfc_of(a, square):
    # erfc(a) = 1 - erf(a) for a >= 0, given square = a**2 (rounded once),
    # in a's dtype; relative error: a few ulp, and about `square` ulp more
    # in the tail, from the rounding of the square in exp(-square)
    one = as_type_of(a, 1.0)
    k = as_type_of(a, ERF_K)
    large = erf_large(a)  # (r is fitted up to there; exp(-a**2) is 0 beyond)
    capped = min(a, large)
    c = exp_nonpositive(-min(square, large * large)) * erfc_r((capped - k) / (capped + k))
    if a < ERF_SMALL:
        c = one - a * erf_p(a * a)
    return c


@kernel(inline="always")
def erfc_nonnegative(a):
    # erfc(a) for a >= 0 (see erfc_of)
    return erfc_of(a, a * a)


@kernel(inline="always")
def normal_cdf(z):
    # the standard normal distribution function (1 + erf(z / sqrt(2))) / 2, in
    # z's dtype: from erfc, so that its left tail keeps its relative accuracy
    # (the square z**2 / 2 from z itself: one rounding, not three)
    half = as_type_of(z, 0.5)
    c = half * erfc_of(abs(z) * as_type_of(z, INV_SQRT2), half * (z * z))
    return c if z < 0 else as_type_of(z, 1.0) - c


@kernel
def apply(code, x, out):
    # out = f(x) elementwise, f by code: 0 tanh, 1 expm1 (x <= 0), 2 log1p
    # (0 <= x <= 1), 3 erfc (x >= 0), 4 the normal distribution function;
    # the tests' and benchmarks' way in
    for i in range(x.size):
        if code == 0:
            out[i] = tanh_fast(x[i])
        elif code == 1:
            out[i] = expm1_nonpositive(x[i])
        elif code == 2:
            out[i] = log1p_unit(x[i])
        elif code == 3:
            out[i] = erfc_nonnegative(x[i])
        else:
            out[i] = normal_cdf(x[i])
    return out
