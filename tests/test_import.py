"""Importing fastnn compiles nothing, and exposes only the public names."""

import subprocess
import sys

import fastnn


def test_public_names():
    assert set(fastnn.__all__) == {"NeuralNetwork", "MLP", "DivergenceError", "reference", "__version__"}
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
