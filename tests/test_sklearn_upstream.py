"""scikit-learn's own tests of its MLPs, run against fastnn's estimators.

The installed scikit-learn's ``sklearn/neural_network/tests/test_mlp.py`` is
copied twice to a temporary directory: once as it is, once with its import of
``MLPClassifier`` and ``MLPRegressor`` switched to ``fastnn.sklearn``. Both
copies run with pytest in subprocesses (with scikit-learn's conftest for its
fixtures), and every test that passes with scikit-learn's estimators must
pass with fastnn's.
"""

import ast
import os
import pathlib
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

sklearn = pytest.importorskip("sklearn")

import fastnn  # noqa: E402

SWITCHED = ("MLPClassifier", "MLPRegressor")
SENTINEL = '''

def test_fastnn_estimators_are_under_test():
    # added by fastnn's tests/test_sklearn_upstream.py
    assert MLPClassifier.__module__ == "fastnn.sklearn"
    assert MLPRegressor.__module__ == "fastnn.sklearn"
'''


def upstream_test_file():
    """The installed scikit-learn's test_mlp.py, or a skip when it is not shipped."""
    path = pathlib.Path(sklearn.__file__).parent / "neural_network" / "tests" / "test_mlp.py"
    if not path.is_file():
        pytest.skip(
            f"scikit-learn {sklearn.__version__} was installed without its tests "
            f"(no sklearn/neural_network/tests/test_mlp.py)"
        )
    return path


def switch_imports(source):
    """``source`` with its imports of scikit-learn's MLPs taken from fastnn.sklearn.

    Every ``from sklearn.neural_network... import`` statement naming
    MLPClassifier or MLPRegressor is rewritten (other names it imports stay
    scikit-learn's). Raises ValueError when the file gets the estimators in
    a way this cannot switch.
    """
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sklearn.neural_network"):
                    raise ValueError(
                        f"line {node.lineno}: 'import {alias.name}' cannot be switched to fastnn"
                    )
        if not isinstance(node, ast.ImportFrom):
            continue
        if not (node.module or "").startswith("sklearn.neural_network"):
            continue
        ours = [a for a in node.names if a.name in SWITCHED]
        if not ours:
            continue
        if node.col_offset != 0:
            raise ValueError(f"line {node.lineno}: a nested import of {SWITCHED} is not switched")
        theirs = [a for a in node.names if a.name not in SWITCHED]

        def spell(aliases):
            return ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in aliases)

        text = f"from fastnn.sklearn import {spell(ours)}\n"
        if theirs:
            text += f"from {node.module} import {spell(theirs)}\n"
        edits.append((node.lineno, node.end_lineno, text))
    if not edits:
        raise ValueError(f"no 'from sklearn.neural_network import' of {SWITCHED} found")
    for first, last, text in sorted(edits, reverse=True):
        lines[first - 1 : last] = [text]
    switched = "".join(lines)
    for name in SWITCHED:
        if f"neural_network.{name}" in switched:
            raise ValueError(f"the file also reaches scikit-learn's {name} by its module path")
    return switched + SENTINEL


def run_pytest(directory):
    """Runs test_mlp.py in ``directory``; returns ({test id: outcome}, {id: message}, seconds)."""
    directory.joinpath("pytest.ini").write_text("[pytest]\n")
    report = directory / "report.xml"
    env = dict(os.environ)
    # the fastnn under test, not some other installed copy
    root = str(pathlib.Path(fastnn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "test_mlp.py", "-q", "-p", "no:cacheprovider",
            "-p", "sklearn.conftest", "-c", "pytest.ini", "--rootdir", str(directory),
            "--junitxml", str(report), "-o", "junit_family=xunit1",
        ],
        cwd=directory, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if not report.is_file():
        raise AssertionError(
            f"pytest wrote no report (exit {done.returncode}):\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    outcomes, messages = {}, {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = case.get("name")
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
                message = (child.get("message") or "").strip()
                messages[test_id] = message.splitlines()[0][:300] if message else ""
                break
            if child.tag == "skipped":
                outcome = "skipped"
        if outcomes.get(test_id) == "failed":  # (an error in teardown after a pass)
            continue
        outcomes[test_id] = outcome
    if not outcomes:
        raise AssertionError(f"no test ran (exit {done.returncode}):\n{done.stdout[-3000:]}")
    return outcomes, messages, seconds


def test_switch_imports_rewrites_only_the_estimators():
    source = (
        '"""doc"""\nimport numpy as np\n'
        "from sklearn.neural_network import (\n    BernoulliRBM,\n    MLPClassifier,\n"
        "    MLPRegressor as R,\n)\nfrom sklearn.metrics import r2_score\n"
    )
    switched = switch_imports(source)
    assert "from fastnn.sklearn import MLPClassifier, MLPRegressor as R\n" in switched
    assert "from sklearn.neural_network import BernoulliRBM\n" in switched
    assert "from sklearn.metrics import r2_score\n" in switched
    assert "test_fastnn_estimators_are_under_test" in switched
    with pytest.raises(ValueError, match="no 'from sklearn.neural_network import'"):
        switch_imports("from sklearn.metrics import r2_score\n")
    with pytest.raises(ValueError, match="module path"):
        switch_imports(
            "from sklearn.neural_network import MLPClassifier\n"
            "import sklearn\nclf = sklearn.neural_network.MLPClassifier()\n"
        )


def test_sklearn_test_mlp_passes_with_fastnn_estimators(tmp_path):
    source = upstream_test_file().read_text()
    runs = {}
    for label, text in (("sklearn", source), ("fastnn", switch_imports(source))):
        directory = tmp_path / label
        directory.mkdir()
        directory.joinpath("test_mlp.py").write_text(text)
        runs[label] = run_pytest(directory)
    theirs, _, their_s = runs["sklearn"]
    ours, messages, our_s = runs["fastnn"]
    print(
        f"\nscikit-learn {sklearn.__version__} test_mlp.py: "
        + ", ".join(
            f"{label}: {sum(o == 'passed' for o in out.values())} passed, "
            f"{sum(o == 'failed' for o in out.values())} failed, "
            f"{sum(o == 'skipped' for o in out.values())} skipped ({s:.1f} s)"
            for label, (out, _, s) in runs.items()
        )
    )
    assert ours.get("test_fastnn_estimators_are_under_test") == "passed", (
        "the switched copy did not run fastnn's estimators"
    )
    passed = sorted(t for t, o in theirs.items() if o == "passed")
    assert len(passed) > 10, f"scikit-learn's own estimators passed only {passed}"
    lost = [t for t in passed if ours.get(t) != "passed"]
    assert not lost, (
        f"{len(lost)} of the {len(passed)} tests of scikit-learn {sklearn.__version__}'s "
        f"test_mlp.py that pass with its estimators do not pass with fastnn's:\n"
        + "\n".join(f"  {t}: {ours.get(t, 'not run')} {messages.get(t, '')}" for t in lost)
    )
