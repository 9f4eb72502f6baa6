"""fastnn's kernels skip Numba's per-function O3 passes; every other function keeps them."""

import numpy as np
import pytest
from llvmlite import binding as ll
from numba import njit
from numba.core import codegen

from fastnn._kernels import _module_passes
from fastnn._kernels._module_passes import PREFIXES, _Others


IR = """
define double @"_ZN6fastnn5probe3ourEd"(double %x) {
  %y = fadd double %x, 1.0
  ret double %y
}
define double @"_ZN7cpython6fastnn5probe3ourEd"(double %x) {
  ret double %x
}
define double @"other"(double %x) {
  %y = call double @"_ZN6fastnn5probe3ourEd"(double %x)
  ret double %y
}
declare double @"declared"(double)
"""


def test_the_view_leaves_out_fastnns_functions_and_declarations():
    module = ll.parse_assembly(IR)
    view = _Others(module)
    assert [f.name for f in view.functions] == ["other"]
    assert {f.name for f in module.functions} == {
        "_ZN6fastnn5probe3ourEd", "_ZN7cpython6fastnn5probe3ourEd", "other", "declared",
    }  # fmt: skip
    view.data_layout = "e-m:e-i64:64-n8:16:32:64-S128"
    assert module.data_layout == "e-m:e-i64:64-n8:16:32:64-S128"
    assert view.name == module.name


def _probe(module_name):
    # a loop whose function name is mangled within `module_name`
    source = (
        "def probe(x):\n"
        "    total = 0.0\n"
        "    for i in range(x.size):\n"
        "        total += x[i] * x[i]\n"
        "    return total\n"
    )
    scope = {"__name__": module_name}
    exec(compile(source, f"<{module_name}>", "exec"), scope)
    return njit(scope["probe"])


@pytest.mark.requires_jit
def test_only_functions_outside_fastnn_get_the_function_passes(monkeypatch):
    assert _module_passes.INSTALLED
    seen = []
    make = codegen.JITCPUCodegen._function_pass_manager

    class Recording:
        def __init__(self, manager):
            self._manager = manager

        def run(self, function, *args):
            seen.append(function.name)
            return self._manager.run(function, *args)

    def recording(self, **kwargs):
        manager, builder = make(self, **kwargs)
        return Recording(manager), builder

    monkeypatch.setattr(codegen.JITCPUCodegen, "_function_pass_manager", recording)
    x = np.linspace(-1.0, 2.0, 37)
    ours, theirs = _probe("fastnn.probe_module"), _probe("a_users_module")
    assert ours(x) == theirs(x) == sum(v * v for v in x)
    assert any(name.startswith("_ZN14a_users_module") for name in seen)
    assert not any(name.startswith(PREFIXES) for name in seen)
    assert not any("probe_module" in name for name in seen)


@pytest.mark.parametrize("name", ["_ZN6fastnn8_kernels5dense7forwardE", "cfunc._ZN6fastnn1fE"])
def test_prefixes_are_fastnns_mangled_names(name):
    assert name.startswith(PREFIXES)
    assert not "_ZN5numba2np4dotE".startswith(PREFIXES)
