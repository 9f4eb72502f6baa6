"""The private scikit-learn names that fastnn.sklearn relies on still hold.

Each entry of ``fastnn._sklearn_compat.PRIVATE`` is checked against the
installed scikit-learn; a failure names the entry, the scikit-learn version
and what to do.
"""

import ast
import inspect
import pathlib
import re

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn import neural_network as sknn  # noqa: E402
from sklearn.neural_network._stochastic_optimizers import (  # noqa: E402
    AdamOptimizer,
    SGDOptimizer,
)

from fastnn import _sklearn_compat as compat  # noqa: E402
from fastnn import sklearn as fsk  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

_rng = np.random.RandomState(0)
X = _rng.randn(60, 4)
y = (X[:, 0] > 0).astype(int)


def _holder(of):
    """The scikit-learn object that an attribute entry is read from."""
    small = dict(hidden_layer_sizes=(3,), max_iter=3, random_state=0)
    if of == "sgd_optimizer":
        return SGDOptimizer([np.zeros(2)], 0.1, "constant", 0.9, True, 0.5)
    if of == "adam_optimizer":
        return AdamOptimizer([np.zeros(2)], 0.001, 0.9, 0.999, 1e-8)
    if of in ("sgd_fit", "classifier_fit"):
        return sknn.MLPClassifier(solver="sgd", **small).fit(X, y)
    if of == "early_stopping_fit":
        return sknn.MLPClassifier(early_stopping=True, **small).fit(X, y)
    if of == "lbfgs_fit":
        return sknn.MLPClassifier(solver="lbfgs", **small).fit(X, y)
    raise AssertionError(f"no holder {of!r} for attribute entries")


@pytest.mark.parametrize("entry", compat.PRIVATE, ids=lambda e: f"{e.kind}:{e.name}")
def test_private_name_holds(entry):
    holder = _holder(entry.of) if entry.kind == "attribute" and entry.needed else None
    problem = compat.problem(entry, holder)
    assert problem is None, problem


def test_problems_is_empty_with_the_installed_sklearn():
    assert compat.problems() == []


def _entry(**changes):
    base = dict(
        name="neural_network._multilayer_perceptron.BaseMultilayerPerceptron._fit_stochastic",
        kind="override",
        use="test",
    )
    base.update(changes)
    return compat.Private(**base)


def test_problem_messages_name_the_entry_and_the_version():
    version = f"scikit-learn {sklearn.__version__}"
    real = next(e for e in compat.PRIVATE if e.name.endswith("._fit_stochastic"))
    path = "sklearn." + real.name

    moved = compat.problem(_entry(name=real.name + "_renamed"))
    assert version in moved and path + "_renamed" in moved and "is gone" in moved

    other_layout = compat.problem(_entry(layouts={("self", "X"): "1.0"}, reviewed=real.reviewed))
    assert version in other_layout and path in other_layout and "(self, X) in 1.0" in other_layout

    changed = compat.problem(_entry(layouts=real.layouts, reviewed={"0" * 12: "1.0"}))
    assert version in changed and path in changed and "changed" in changed
    assert compat.current_fingerprint(real) in changed

    text = compat.problem(_entry(kind="format", text="Epoch %d finished"))
    assert version in text and "'Epoch %d finished'" in text

    attribute = compat.problem(
        _entry(name=real.name.rsplit(".", 1)[0] + "._gone_attribute", kind="attribute"),
        object(),
    )
    assert version in attribute and "_gone_attribute" in attribute

    assert compat.problem(_entry(layouts={("self",): "x"}, since=(99, 0, 0))) is None


def test_fingerprint_ignores_docstrings_comments_and_formatting():
    one = 'def f(a, b):\n    """Doc."""\n    # a comment\n    return a + b\n'
    same = "@decorated\ndef f(a, b):\n    return (a +\n            b)  # split\n"
    other = "def f(a, b):\n    return a - b\n"
    assert compat.fingerprint_source(one) == compat.fingerprint_source(same)
    assert compat.fingerprint_source(one) != compat.fingerprint_source(other)
    assert re.fullmatch(r"[0-9a-f]{12}", compat.fingerprint_source(one))


def test_overrides_take_the_installed_signature():
    base = sknn._multilayer_perceptron.BaseMultilayerPerceptron
    for name in ("_fit_stochastic", "_fit_lbfgs"):
        for cls in (fsk.MLPClassifier, fsk.MLPRegressor):
            assert inspect.signature(getattr(cls, name)) == inspect.signature(getattr(base, name))
    has_weights = "sample_weight" in inspect.signature(base._fit_stochastic).parameters
    assert compat.SAMPLE_WEIGHT == has_weights
    expected = (1, (2, 3)) if has_weights else (None, (1, 2, 3))
    assert compat.split_sample_weight((1, 2, 3)) == expected
    assert compat.split_sample_weight(compat.with_sample_weight(None, (2, 3)))[1] == (2, 3)


def _sklearn_names_used(path):
    """Private sklearn imports and ``self._x`` / ``optimizer.x`` attributes in a source file."""
    tree = ast.parse(path.read_text())
    imports, attributes = set(), set()
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sklearn"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if any(part.startswith("_") for part in full.split(".")):
                    imports.add(full.removeprefix("sklearn."))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner, attr = node.value.id, node.attr
            if owner in ("self", "estimator") and attr.startswith("_"):
                if not attr.startswith("_fastnn") and attr not in defined:
                    attributes.add(attr)
            if owner == "optimizer":
                attributes.add(attr)
    return imports, attributes


def test_every_private_name_in_the_code_is_registered():
    registered = {e.name for e in compat.PRIVATE}
    leaves = {name.rsplit(".", 1)[1] for name in registered}
    unregistered = []
    for module in ("sklearn.py", "_sklearn_compat.py"):
        imports, attributes = _sklearn_names_used(ROOT / "fastnn" / module)
        for name in imports:
            # a private class or module counts as registered when some entry lies under it
            if name not in registered and not any(r.startswith(name + ".") for r in registered):
                if module == "sklearn.py" or not name.startswith("neural_network."):
                    unregistered.append(f"{module}: import sklearn.{name}")
        for attr in attributes:
            if attr not in leaves:
                unregistered.append(f"{module}: attribute {attr}")
    assert not unregistered, (
        "fastnn uses private scikit-learn names that fastnn/_sklearn_compat.py does not list: "
        + ", ".join(sorted(unregistered))
    )


def test_parse_version():
    assert compat.parse_version("1.7.2") == (1, 7, 2)
    assert compat.parse_version("1.8") == (1, 8, 0)
    assert compat.parse_version("1.9.0rc1") == (1, 9, 0)
    assert compat.parse_version("1.4.1.post1") == (1, 4, 1)
    assert compat.parse_version("1.10.dev0") == (1, 10, 0)
    assert compat.VERSION >= compat.parse_version(compat.MIN_VERSION)


def test_declared_floor_is_min_version_in_every_extra_and_in_ci():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project["optional-dependencies"].values():
        requirements += extra
    named = [r for r in requirements if re.match(r"scikit-learn\b", r)]
    assert named, "no extra names scikit-learn"
    for requirement in named:
        assert requirement == f"scikit-learn>={compat.MIN_VERSION}", requirement
    ci = (ROOT / ".ci" / "run").read_text()
    assert f'"scikit-learn=={compat.MIN_VERSION}"' in ci, "CI does not test the declared floor"
