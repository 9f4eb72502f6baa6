"""The compiled views of fastnn._kernels.views: the same elements as NumPy's
slices and reshapes, writes that reach the parent, and no reference held by
`span` and `unowned` (a null meminfo, so that Numba's reference counting
skips them)."""

from collections import namedtuple

import numpy as np
import pytest
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from fastnn._kernels._jit import kernel
from fastnn._kernels.views import as_matrix, c_layout, flat, span, unowned

Pair = namedtuple("Pair", "a b")


@intrinsic
def _owned(typingctx, ary):
    # whether the array holds a reference to its memory (a meminfo)
    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        null = cgutils.get_null_value(arr.meminfo.type)
        return builder.icmp_unsigned("!=", arr.meminfo, null)

    return types.boolean(ary), codegen


@kernel
def _span_sum_and_scale(a, start, length, factor):
    s = span(a, start, length)
    total = 0.0
    for i in range(s.size):
        total += s[i]
        s[i] *= factor
    return total, _owned(s), _owned(a)


@kernel
def _unowned_pair(pair, nested):
    p, (n0, n1) = unowned((pair, nested))
    p.a[0] = 7.0
    n1[1] = 9.0
    return _owned(p.a), _owned(p.b), _owned(n0), _owned(n1), _owned(pair.a)


@kernel
def _layouts(c, f, strided):
    return c_layout(c), c_layout(f), c_layout(strided)


@kernel
def _flat_and_matrix(a):
    m = as_matrix(flat(a), a.shape[1], a.shape[0])
    m[0, 0] = -1.0
    return m.shape[0], m.shape[1]


@pytest.mark.parametrize("start, length", [(0, 10), (3, 4), (9, 1), (5, 0)])
def test_span_is_the_slice_and_writes_reach_the_array(start, length):
    a = np.arange(10, dtype=np.float64)
    expected = a.copy()
    total, span_owned, parent_owned = _span_sum_and_scale(a, start, length, 2.0)
    assert total == expected[start : start + length].sum()
    expected[start : start + length] *= 2.0
    np.testing.assert_array_equal(a, expected)
    assert not span_owned and parent_owned


def test_span_in_python_is_a_slice():
    a = np.arange(6.0)
    np.testing.assert_array_equal(span(a, 2, 3), a[2:5])


def test_unowned_strips_every_array_of_nested_tuples_and_keeps_their_data():
    pair = Pair(np.zeros(3), np.zeros(2, np.float32))
    nested = (np.zeros(4, np.int64), np.zeros(2))
    owned = _unowned_pair(pair, nested)
    assert owned == (False, False, False, False, True)  # the argument itself still holds its memory
    assert pair.a[0] == 7.0 and nested[1][1] == 9.0
    assert unowned(pair) is pair  # (Python: the value itself)


def test_c_layout_follows_the_compiled_type():
    a = np.zeros((4, 6))
    assert _layouts(a, np.asfortranarray(a), a[:, ::2]) == (True, False, False)


def test_flat_and_as_matrix_are_views():
    a = np.zeros((2, 3))
    assert _flat_and_matrix(a) == (3, 2)
    assert a[0, 0] == -1.0
