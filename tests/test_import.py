"""Importing fastnn compiles nothing, and exposes only the public names."""

import subprocess
import sys

import pytest

import fastnn


def test_public_names():
    assert set(fastnn.__all__) == {
        "NeuralNetwork", "MLP", "Activation", "DivergenceError", "profile", "save", "load", "reference",
        "__version__",
    }
    assert isinstance(fastnn.__version__, str)


def test_import_compiles_nothing():
    code = (
        "import fastnn, sys\n"
        "from numba.core.registry import CPUDispatcher\n"
        "compiled = [name for mod in list(sys.modules) if mod.startswith('fastnn._kernels')\n"
        "            for name, obj in vars(sys.modules[mod]).items()\n"
        "            if isinstance(obj, CPUDispatcher) and obj.signatures]\n"
        "kernels = [mod for mod in sys.modules if mod.startswith('fastnn._kernels.')]\n"
        "print(len(compiled), len(kernels))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    compiled, _ = out.split()
    assert compiled == "0"


def test_reference_imports_nothing_of_fastnn():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(fastnn.reference))
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported and not [name for name in imported if name and name.startswith("fastnn")]


@pytest.mark.requires_jit
def test_kernel_cache_is_stamped_with_all_kernel_sources(tmp_path, monkeypatch):
    """Editing any kernel file (say fastexp.py) must invalidate the cache of
    kernels in other files that inline it (say tutorial.train)."""
    from numba.core import caching

    from fastnn._kernels import _jit, tutorial

    locator = tutorial.train._cache._impl._locator
    assert type(locator).__name__.startswith("FastnnKernel")
    assert locator.get_source_stamp() == _jit.kernel_sources_stamp()
    names = [c.__name__ for c in getattr(caching, "CacheImpl", None)._locator_classes]
    assert names[0].startswith("FastnnKernel")

    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text(f"# {name}\n")
    monkeypatch.setattr(_jit, "KERNEL_DIR", str(tmp_path))
    before = _jit.kernel_sources_stamp()
    (tmp_path / "b.py").write_text("# b.py, edited\n")
    assert _jit.kernel_sources_stamp() != before
