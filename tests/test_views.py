"""The compiled views of fastnn._kernels.views: the same elements as NumPy's
slices and reshapes, writes that reach the parent, and no reference held by
`span` and `unowned` (a null meminfo, so that Numba's reference counting
skips them), and `unless_none`, which compiles only the case its flag's type
asks for."""

from collections import namedtuple

import numba
import numpy as np
import pytest
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from fastnn._kernels._jit import kernel
from fastnn._kernels.views import as_matrix, c_layout, flat, span, unless_none, unowned

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


@pytest.mark.requires_jit  # (reference counts exist in compiled code only)
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


@pytest.mark.requires_jit
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


@numba.njit  # (not cached: a caller loaded from a cache would ask its callee for nothing)
def _probe(drop):
    # 1 + the tuple's first element, 0 for None
    if drop is None:
        return 0
    return 1 + drop[0]


@numba.njit
def _with_flag(flag, seed):
    return _probe(unless_none(flag, (seed, seed + 1)))


def test_unless_none_is_none_or_the_value_and_compiles_one_case():
    assert unless_none(None, (1, 2)) is None and unless_none(3, (1, 2)) == (1, 2)
    assert _with_flag(None, np.int64(5)) == 0
    assert _with_flag(np.int64(1), np.int64(5)) == 6
    if hasattr(_probe, "signatures"):  # compiled (not under NUMBA_DISABLE_JIT)
        # one specialisation per flag type: None for a None flag, the tuple
        # for an int64 flag, never the None case for an int64 flag
        drops = sorted(str(sig[0]) for sig in _probe.signatures)
        assert drops == ["UniTuple(int64 x 2)", "none"]


@pytest.mark.requires_jit
def test_forward_asks_for_activate_layer_with_an_int64_offset_only():
    # forward's activation of a model whose layers keep their slopes takes the
    # layer's offset: an int64, never Literal[int](0), which compiled
    # activate_layer a second time. A fresh compile of forward (the cached one
    # asks for nothing) records what it asks for in activate_layer's signatures
    from fastnn import MLP
    from fastnn._kernels import dense

    m = MLP([3, 5, 2], activation="gelu", random_state=0)
    X = np.random.default_rng(0).random((8, 3))
    acts = np.empty(8 * 7)
    args = (X, m._params, m._layout, np.int64(dense.IDENTITY), acts, acts[:0], dense.extras_of(m._layout))
    fresh = numba.njit(dense.forward.py_func)
    np.testing.assert_array_equal(fresh(*args), dense.forward(*args))
    if hasattr(dense.activate_layer, "signatures"):
        assert dense.activate_layer.signatures
        for sig in dense.activate_layer.signatures:
            assert not any(isinstance(arg, types.Literal) for arg in sig), sig
