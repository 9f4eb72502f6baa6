"""Derive the polynomials of ``fastnn._kernels.fastmath`` (tanh, expm1, log1p, erfc) and of exp.

Each function is split where a formula built on the vectorisable
``exp_nonpositive`` would lose accuracy, and a smooth remainder is fitted
there by Chebyshev interpolation in 40-digit arithmetic (``mpmath.chebyfit``,
within a few percent of the best polynomial of its degree). This prints, for
each fit and dtype, the degree, the largest error it contributes to the
function (relative) and the coefficients, highest power first, as ``fastmath`` holds them. Needs
mpmath (``pip install mpmath``), which fastnn does not depend on.

    python tools/fit_polynomials.py
"""

import mpmath as mp

mp.mp.dps = 40

TANH_SMALL = 0.55  # tanh(0.55) > 0.5: the exp branch's results keep their ulp
EXPM1_SMALL = 0.7  # exp(-0.7) < 1/2: exp(x) - 1 loses at most about an ulp below -0.7
ERF_SMALL = 0.5  # erf(0.5) < 0.53: 1 - erf loses about an ulp below
ERF_K = 3.0  # erfc(x) exp(x**2) is fitted in t = (x - K) / (x + K)
ERF_LARGE = {"float64": 27.0, "float32": 10.0}  # exp(-x**2) underflows to 0 beyond


def tanh_g(s):
    # tanh(z) = z + z s g(s), s = z**2
    if s == 0:
        return mp.mpf(-1) / 3
    z = mp.sqrt(s)
    return (mp.tanh(z) / z - 1) / s


def expm1_h(x):
    # expm1(x) = x + x**2 h(x)
    if x == 0:
        return mp.mpf(1) / 2
    return (mp.expm1(x) - x) / x**2


def exp_h(r):
    # exp(r) = 1 + r + r**2 h(r); its series near 0, where the difference cancels
    if abs(r) < mp.mpf(10) ** -6:
        return mp.fsum(r**k / mp.factorial(k + 2) for k in range(8))
    return (mp.exp(r) - 1 - r) / r**2


def atanh_q(s):
    # atanh(w) = w + w s q(s), s = w**2; log1p(u) = 2 atanh(u / (2 + u))
    if s == 0:
        return mp.mpf(1) / 3
    w = mp.sqrt(s)
    return (mp.atanh(w) / w - 1) / s


def erf_p(s):
    # erf(x) = x p(s), s = x**2
    if s == 0:
        return 2 / mp.sqrt(mp.pi)
    x = mp.sqrt(s)
    return mp.erf(x) / x


def erfcx_r(t):
    # erfc(x) = exp(-x**2) r(t), t = (x - K) / (x + K)
    x = ERF_K * (1 + t) / (1 - t)
    return mp.erfc(x) * mp.exp(x * x)


def fits():
    # exp(r) in fastnn._kernels.fastexp, |r| <= ln2 / 2: float32's whole,
    # float64's as 1 + r + r**2 h(r)
    half_ln2 = mp.log(2) / 2
    yield "float32", "EXP", mp.exp, [-half_ln2, half_ln2], 6, 1
    yield "float64", "EXP_H", exp_h, [-half_ln2, half_ln2], 9, half_ln2**2
    t_lo = (ERF_SMALL - ERF_K) / (ERF_SMALL + ERF_K)
    for dtype in ("float64", "float32"):
        t_hi = (ERF_LARGE[dtype] - ERF_K) / (ERF_LARGE[dtype] + ERF_K)
        big = dtype == "float64"
        # name, function, interval, degree, factor turning the fit's error into the function's
        yield dtype, "TANH_G", tanh_g, [0, TANH_SMALL**2], 10 if big else 4, TANH_SMALL**2
        yield dtype, "EXPM1_H", expm1_h, [-EXPM1_SMALL, 0], 10 if big else 5, EXPM1_SMALL
        yield dtype, "ATANH_Q", atanh_q, [0, mp.mpf(1) / 9], 9 if big else 4, mp.mpf(1) / 9
        yield dtype, "ERF_P", erf_p, [0, ERF_SMALL**2], 8 if big else 4, ERF_SMALL
        # (relative to r's smallest value, at t_hi)
        yield dtype, "ERFC_R", erfcx_r, [t_lo, t_hi], 22 if big else 10, 1 / erfcx_r(t_hi)


if __name__ == "__main__":
    for dtype, name, f, interval, degree, factor in fits():
        coefficients, error = mp.chebyfit(f, interval, degree + 1, error=True)
        suffix = "64" if dtype == "float64" else "32"
        print(f"# {name}_{suffix}: degree {degree}, error {mp.nstr(error * factor, 3)}")
        print(f"{name}_{suffix} = (")
        for c in coefficients:
            print(f"    {mp.nstr(c, 20)},")
        print(")")
