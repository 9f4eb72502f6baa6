"""Numba's inliner copying a callee's blocks with one memo (fastnn._kernels._inline_copy)."""

import numpy as np
import pytest

numba = pytest.importorskip("numba")
from numba.core import inline_closurecall, ir  # noqa: E402
from numba.core.compiler import run_frontend  # noqa: E402

from fastnn._kernels import _inline_copy  # noqa: E402


def _sample(a, n):
    s = 0.0
    for i in range(n):
        if a[i] > 0:
            s += a[i]
        else:
            s -= 2 * a[i]
    return s


def _copy_pass(copier, blocks):
    return {label: copier.deepcopy(block) for label, block in blocks.items()}


def _variables(blocks):
    return [var for block in blocks.values() for stmt in block.body for var in stmt.list_vars()]


def test_it_is_installed_on_this_numba():
    assert _inline_copy.INSTALLED
    assert inline_closurecall.InlineWorker.inline_ir._fastnn


def test_the_blocks_of_one_pass_share_one_new_scope_and_the_original_is_untouched():
    func_ir = run_frontend(_sample)
    before = func_ir.dump_to_string() if hasattr(func_ir, "dump_to_string") else None
    copier = _inline_copy._BlockCopier(ir.Block)
    _inline_copy._state.slot = (None, None)
    first = _copy_pass(copier, func_ir.blocks)
    assert len(func_ir.blocks) > 3
    scopes = {id(block.scope) for block in first.values()}
    assert len(scopes) == 1
    (scope,) = {block.scope for block in first.values()}
    assert scope is not next(iter(func_ir.blocks.values())).scope
    assert all(var.scope is scope for var in _variables(first))
    for label, block in func_ir.blocks.items():
        assert all(new is not old for new, old in zip(first[label].body, block.body))
        assert [str(s) for s in first[label].body] == [str(s) for s in block.body]

    # the next pass over the same blocks (the next call site) copies afresh
    second = _copy_pass(copier, func_ir.blocks)
    assert next(iter(second.values())).scope is not scope
    for label in first:
        assert all(a is not b for a, b in zip(first[label].body, second[label].body))
    # a pass over the copy (inline_ir's unchanged copy) gets a scope of its own
    third = _copy_pass(copier, first)
    third_scope = next(iter(third.values())).scope
    assert third_scope is not scope and third_scope is not next(iter(second.values())).scope  # (scopes compare equal)

    # renaming in one copy's scope leaves the others and the original alone
    name = next(iter(scope.localvars._con))
    scope.redefine(name, loc=scope.loc)
    assert len(next(iter(second.values())).scope.localvars._con) < len(scope.localvars._con)
    assert len(next(iter(func_ir.blocks.values())).scope.localvars._con) < len(scope.localvars._con)
    if before is not None:
        assert func_ir.dump_to_string() == before
    _inline_copy._state.slot = (None, None)


def test_other_copies_are_the_copy_modules():
    copier = _inline_copy._BlockCopier(ir.Block)
    x = {"a": [1, [2, 3]]}
    y = copier.deepcopy(x)
    assert y == x and y["a"][1] is not x["a"][1]
    memo = {}
    assert copier.deepcopy(x, memo) == x and id(x) in memo
    assert copier.copy(x)["a"] is x["a"]


@numba.njit(inline="always")
def _clipped_sum(x, lo, hi):
    s = 0.0
    for v in x:
        if v < lo:
            s += lo
        elif v > hi:
            s += hi
        else:
            s += v
    return s


@numba.njit(inline="always")
def _both_ways(x, lo, hi):
    if x.size == 0:
        return -1.0
    return _clipped_sum(x, lo, hi) + _clipped_sum(x, -hi, -lo)


def _three_sites(x):
    return _both_ways(x, -0.5, 0.5) - 2.0 * _clipped_sum(x, 0.0, 1.0) + _both_ways(x[::2], -1.0, 1.0)


def _naive_three_sites(x):
    # _three_sites with NumPy's clip, each clipped sum added up in order as the loop does
    def clipped(v, lo, hi):
        return sum(np.clip(v, lo, hi).tolist(), 0.0)

    def both(v, lo, hi):
        return -1.0 if v.size == 0 else clipped(v, lo, hi) + clipped(v, -hi, -lo)

    return both(x, -0.5, 0.5) - 2.0 * clipped(x, 0.0, 1.0) + both(x[::2], -1.0, 1.0)


@pytest.mark.parametrize("inliner", ["shared memo", "numba's own"])
def test_functions_inlined_at_several_sites_and_levels_compute_what_python_does(inliner, monkeypatch):
    if inliner == "numba's own":
        worker = inline_closurecall.InlineWorker
        monkeypatch.setattr(worker, "inline_ir", worker.inline_ir._original)
    _inline_copy._state.slot = (None, None)
    compiled = numba.njit(_three_sites)  # a new dispatcher: compiled here, with this inliner
    rng = np.random.default_rng(3)
    for x in (rng.standard_normal(101), rng.standard_normal(2), np.zeros(0), np.array([0.25, -3.0, 7.0])):
        assert compiled(x) == _naive_three_sites(x)
    assert _inline_copy._state.slot == (None, None)  # no memo outlives a call
