"""Derive the small-argument polynomials of ``fastnn._kernels.fastexp.tanh_fast``.

For ``|z| < TANH_SMALL``, ``tanh(z) = z + z s g(s)`` with ``s = z**2`` and
``g(s) = (tanh(z) / z - 1) / s``, a smooth function of ``s`` (its nearest
singularity is at ``s = -(pi / 2)**2``). This prints Chebyshev fits of ``g`` on
``[0, TANH_SMALL**2]`` computed in 40-digit arithmetic, with the largest
relative error each contributes to ``tanh`` (the fit's error times ``s``).
Needs mpmath (``pip install mpmath``); not a dependency of fastnn.

    python tools/fit_tanh.py
"""

import mpmath as mp

mp.mp.dps = 40
TANH_SMALL = 0.55  # tanh(0.55) > 0.5: the other branch's results keep their ulp
DEGREES = {"float64": 10, "float32": 4}


def g(s):
    if s == 0:
        return mp.mpf(-1) / 3
    z = mp.sqrt(s)
    return (mp.tanh(z) / z - 1) / s


for dtype, degree in DEGREES.items():
    coefficients, error = mp.chebyfit(g, [0, TANH_SMALL**2], degree + 1, error=True)
    print(f"{dtype}: degree {degree}, relative error {mp.nstr(error * TANH_SMALL**2, 3)}")
    print("  (highest power first)", ", ".join(mp.nstr(c, 20) for c in coefficients))
