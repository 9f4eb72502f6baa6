"""Inverted dropout inside the training kernels, with counter-based masks.

Unit ``j`` of the row at position ``row`` of epoch ``epoch`` (its position in
the epoch's order of rows) in hidden layer ``layer`` is dropped when
``unit_bits(row_key(seed, epoch, row, layer), j) < threshold``, with
``threshold = round(rate * 2**32)`` (``fastnn._kernels.layout``); a unit kept
is scaled by ``1 / (1 - threshold / 2**32)``. The bits come from SplitMix64's
mixing function applied to those counters, so a mask depends on nothing but
the seed and the unit's coordinates: not on the tiles, the shards, the
threads or the order in which they run. A seeded fit is bit-identical run to
run and for any number of threads, and both training runtimes (the
small-layer twins and the tiled one) draw the same masks. ``seed`` comes from
the model's random state, once per fit; ``seed < 0`` switches dropout off
(prediction, ``loss_and_gradients``).

The dropped output is what the next layer reads, and the layer's slope is
multiplied by the same mask, so the backward pass (which multiplies by the
kept slopes, see ``activations.times_kept``) needs nothing more.
``fastnn.reference.dropout_mask`` computes the same masks with NumPy.
"""

import numpy as np
from numba.extending import overload

from fastnn._kernels._jit import kernel
from fastnn._kernels.activations import activate_row_keep

GOLDEN = 0x9E3779B97F4A7C15
MIX_1 = 0xBF58476D1CE4E5B9
MIX_2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1
BITS = 32  # the bits compared with a threshold


def mix(x):
    """SplitMix64's output for state ``x``: ``x + GOLDEN``, mixed (Python stand-in).

    Compiled code uses the overload below (uint64 arithmetic, which wraps);
    as Python (``NUMBA_DISABLE_JIT=1``) the same numbers come from integers
    masked to 64 bits, without NumPy's overflow warnings.
    """
    z = (int(x) + GOLDEN) & _MASK
    z = ((z ^ (z >> 30)) * MIX_1) & _MASK
    z = ((z ^ (z >> 27)) * MIX_2) & _MASK
    return z ^ (z >> 31)


@overload(mix)
def _mix_impl(x):
    def impl(x):
        z = np.uint64(x) + np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX_1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX_2)
        return z ^ (z >> np.uint64(31))

    return impl


def mix_with(h, v):
    """``mix(h ^ v)`` for a hash ``h`` and a counter ``v >= 0`` (Python stand-in)."""
    return mix(int(h) ^ int(v))


@overload(mix_with)
def _mix_with_impl(h, v):
    def impl(h, v):
        return mix(np.uint64(h) ^ np.uint64(v))

    return impl


def unit_bits(h, j):
    """The top ``BITS`` bits of ``mix(h + j)``, as an int64 (Python stand-in)."""
    return mix((int(h) + int(j)) & _MASK) >> (64 - BITS)


@overload(unit_bits)
def _unit_bits_impl(h, j):
    def impl(h, j):
        return np.int64(mix(np.uint64(h) + np.uint64(j)) >> np.uint64(64 - BITS))

    return impl


@kernel(inline="always")
def row_key(seed, epoch, row, layer):
    # the hash of one row of one layer in one epoch (see the module docstring)
    return mix_with(mix_with(mix_with(mix(seed), epoch), row), layer)


@kernel(inline="always")
def keep_scale(threshold):
    # 1 / (1 - p) for the rate p = threshold / 2**BITS, in float64
    return 1.0 / (1.0 - threshold * (0.5**BITS))


@kernel
def activate_row_drop(row, b, has_bias, code, slopes, fns, key, first_unit, threshold, scale):
    # row = act(row + b) and slopes = act'(row + b) (activate_row_keep),
    # then inverted dropout: unit first_unit + j is dropped (both 0) when its
    # bits fall below threshold, else both are multiplied by scale
    # (scale comes in the row's dtype). Two passes, the second over a row
    # still in cache: the activation's own loop then vectorises, which a
    # per-element dispatch in one fused loop kept from happening.
    activate_row_keep(row, b, has_bias, code, slopes, fns)
    zero = scale - scale
    for j in range(row.size):
        if unit_bits(key, first_unit + j) < threshold:
            row[j] = zero
            slopes[j] = zero
        else:
            row[j] *= scale
            slopes[j] *= scale
