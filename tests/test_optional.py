"""Missing optional packages: one line naming the extra, before any work starts.

A missing package is simulated with ``sys.modules[name] = None`` (which makes
``import name`` fail as if it were not installed and ``find_spec`` return
None), in this process through ``monkeypatch`` or in a fresh one.
"""

import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

from fastnn import _optional
from fastnn._optional import MissingDependency, import_optional
from fastnn.cli import main

# import name -> (what to install, extra): the list, spelled out
EXPECTED = {
    "sklearn": ("scikit-learn", "sklearn"),
    "tqdm": ("tqdm", "progress"),
    "matplotlib": ("matplotlib", "plot"),
    "torch": ("torch", "bench"),
    "jax": ("jax", "jax"),
    "dask": ("dask", "dask"),
    "distributed": ("distributed", "dask"),
    "dask_ml": ("dask-ml", "dask"),
    "skorch": ("skorch", "skorch"),
}


class _WorkStarted(Exception):
    """Raised by the stand-ins of the measurements: work started."""


def _no_work(*args, **kwargs):
    raise _WorkStarted


def _block(monkeypatch, *names):
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def _blocked_python(names, code):
    """Run ``code`` in a fresh interpreter where ``names`` cannot be imported."""
    prelude = "import sys\n" + "".join(f"sys.modules[{n!r}] = None\n" for n in names)
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- the helper
def test_every_optional_package_has_its_extra():
    assert _optional.EXTRAS == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_missing_package_is_named_with_its_extra(monkeypatch, name):
    _block(monkeypatch, name)
    with pytest.raises(MissingDependency) as info:
        import_optional(name, "the feature")
    dist, extra = EXPECTED[name]
    assert str(info.value) == f'the feature needs {dist}: pip install "fastnn[{extra}]"'
    assert isinstance(info.value, ImportError) and isinstance(info.value, ModuleNotFoundError)
    assert info.value.name == name
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_installed_package_is_returned(monkeypatch):
    fake = types.ModuleType("tqdm")
    monkeypatch.setitem(sys.modules, "tqdm", fake)
    assert import_optional("tqdm", "x") is fake


def test_missing_submodule_is_named_with_its_extra(monkeypatch):
    # a package without the submodule (say an old release): same message
    monkeypatch.setitem(sys.modules, "dask_ml", types.ModuleType("dask_ml"))
    monkeypatch.delitem(sys.modules, "dask_ml.wrappers", raising=False)
    with pytest.raises(MissingDependency, match=r'^Incremental needs dask-ml: pip install "fastnn\[dask\]"$'):
        import_optional("dask_ml.wrappers", "Incremental")


def test_broken_install_is_not_disguised(tmp_path, monkeypatch):
    # an installed package whose own import fails for another reason keeps its error
    (tmp_path / "tqdm").mkdir()
    (tmp_path / "tqdm" / "__init__.py").write_text("import fastnn_test_no_such_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tqdm", raising=False)
    with pytest.raises(ModuleNotFoundError) as info:
        import_optional("tqdm", "x")
    assert not isinstance(info.value, MissingDependency)
    assert info.value.name == "fastnn_test_no_such_module"


def test_unknown_package_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown optional dependency"):
        import_optional("json", "x")


# ---------------------------------------------------------------- fastnn.sklearn
def test_import_fastnn_sklearn_without_scikit_learn():
    proc = _blocked_python(["sklearn"], "import fastnn.sklearn\n")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        'fastnn._optional.MissingDependency: fastnn.sklearn needs scikit-learn: pip install "fastnn[sklearn]"'
    )
    # `except ImportError` (pytest.importorskip, optional imports of users) still catches it
    proc = _blocked_python(["sklearn"], "try:\n    import fastnn.sklearn\nexcept ImportError as e:\n    print(e)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'fastnn.sklearn needs scikit-learn: pip install "fastnn[sklearn]"'


# ---------------------------------------------------------------- tqdm
def test_verbose_fit_without_tqdm_prints_its_lines(monkeypatch, capsys):
    pytest.importorskip("sklearn")
    from fastnn.sklearn import MLPClassifier

    _block(monkeypatch, "tqdm", "tqdm.auto")
    rng = np.random.RandomState(0)
    X = rng.randn(60, 4)
    y = (X[:, 0] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, verbose=True, random_state=0)
    with pytest.warns(Warning):  # ConvergenceWarning after 3 epochs
        clf.fit(X, y)
    out = capsys.readouterr().out
    for epoch in (1, 2, 3):
        assert f"Iteration {epoch}, loss = " in out


def test_bench_progress_without_tqdm_counts_on_stderr(monkeypatch, capsys):
    from fastnn import bench

    _block(monkeypatch, "tqdm")
    progress = bench._Progress(2)
    progress.update("first")
    progress.update("second")
    progress.close()
    err = capsys.readouterr().err
    assert "[1/2] first" in err and "[2/2] second" in err


# ---------------------------------------------------------------- the command line
@pytest.mark.parametrize(
    "argv, blocked, measurement, message",
    [
        (["bench", "--quick", "--plot", "out.png"], "matplotlib", ("fastnn.bench", "run_benchmarks"),
         '--plot needs matplotlib: pip install "fastnn[plot]"'),
        (["bench", "--quick", "--sklearn"], "sklearn", ("fastnn.bench", "run_benchmarks"),
         '--sklearn needs scikit-learn: pip install "fastnn[sklearn]"'),
        (["profile", "--sweep-hidden", "4,8", "--plot", "out.png"], "matplotlib",
         ("fastnn.profiling", "sweep_hidden"), '--plot needs matplotlib: pip install "fastnn[plot]"'),
    ],
)
def test_cli_names_the_missing_package_before_any_work(argv, blocked, measurement, message, monkeypatch, capsys,
                                                       tmp_path):
    import importlib

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(importlib.import_module(measurement[0]), measurement[1], _no_work)
    _block(monkeypatch, blocked)
    assert main(argv) == 1  # (_WorkStarted would propagate: nothing was measured)
    captured = capsys.readouterr()
    assert captured.err == f"fastnn {argv[0]}: error: {message}\n"
    assert captured.out == ""
    assert not (tmp_path / "out.png").exists()


def test_bench_plot_without_matplotlib_exits_at_once_in_a_fresh_process(tmp_path):
    proc = _blocked_python(
        ["matplotlib"],
        f"from fastnn.cli import main\nsys.exit(main(['bench', '--plot', {str(tmp_path / 'out.png')!r}]))\n",
    )
    assert proc.returncode == 1
    assert proc.stderr == 'fastnn bench: error: --plot needs matplotlib: pip install "fastnn[plot]"\n'
    assert proc.stdout == ""  # no table: the benchmark never started
    assert not (tmp_path / "out.png").exists()


def test_bench_without_torch_leaves_its_engines_out_with_a_note(monkeypatch, capsys):
    from fastnn import bench

    _block(monkeypatch, "torch")
    assert "torch" not in bench.available_engines()
    started = {}

    def record(**kwargs):
        started.update(kwargs)
        raise _WorkStarted

    monkeypatch.setattr(bench, "run_benchmarks", record)
    with pytest.raises(_WorkStarted):
        main(["bench", "--quick"])
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("fastnn bench: engine(s) not installed, left out: torch, torch_autograd")
    assert 'pip install "fastnn[bench]"' in err.splitlines()[0]
    assert started["engines"] is None  # run_benchmarks times the installed engines


@pytest.mark.parametrize("engine, module, extra", [("torch", "torch", "bench"), ("jax", "jax", "jax")])
def test_bench_engine_without_its_package_fails_at_once(engine, module, extra, monkeypatch, capsys):
    from fastnn import bench

    _block(monkeypatch, module)
    monkeypatch.setattr(bench, "run_benchmarks", _no_work)
    assert main(["bench", "--engines", engine]) == 1
    err = capsys.readouterr().err
    assert err == f'fastnn bench: error: engine(s) not installed: {engine} (pip install "fastnn[{extra}]")\n'


# ---------------------------------------------------------------- Dask
@pytest.mark.parametrize("blocked, dist", [("dask", "dask"), ("distributed", "distributed"), ("dask_ml", "dask-ml")])
def test_dask_benchmark_names_the_missing_package_before_any_work(blocked, dist):
    for name in ("sklearn", "dask", "distributed"):
        pytest.importorskip(name)
    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "dask_incremental.py"
    proc = _blocked_python(
        [blocked], f"import runpy\nsys.argv = [{str(script)!r}]\nrunpy.run_path({str(script)!r}, run_name='__main__')\n"
    )
    assert proc.returncode == 1
    assert proc.stderr == f'error: benchmarks/dask_incremental.py needs {dist}: pip install "fastnn[dask]"\n'
    assert proc.stdout == ""
