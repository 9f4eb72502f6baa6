"""The command line: `fastnn demo` and `python -m fastnn`."""

import re
import subprocess
import sys

import pytest

from fastnn.cli import main


def test_demo_prints_predictions_loss_timings_and_speedup(capsys):
    assert main(["demo", "--iterations", "200", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "target" in out and "reference" in out
    assert "final loss" in out
    speedups = re.findall(r"speed-up\s+([0-9.]+)x", out)
    assert len(speedups) == 2
    assert all(float(s) > 0 for s in speedups)
    # four prediction rows, reference and fastnn agreeing to the printed digits
    rows = re.findall(r"^\s+([01])\s+([0-9.]+)\s+([0-9.]+)$", out, flags=re.M)
    assert len(rows) == 4
    assert all(r[1] == r[2] for r in rows)


def test_python_dash_m_runs_the_same_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "fastnn", "demo", "--iterations", "50", "--repeats", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "speed-up" in proc.stdout


@pytest.mark.parametrize(
    "argv", [["demo", "--iterations", "0"], ["demo", "--repeats", "x"], ["nonsense"], ["demo", "--bogus"]]
)
def test_bad_arguments_get_one_line_and_nonzero_exit(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "error" in err and "Traceback" not in err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


@pytest.mark.requires_jit
def test_warmup_prepares_both_training_twins(capsys):
    from fastnn._kernels import train as kt
    from fastnn._threads import TwinRunner

    assert main(["warmup", "--dtype", "float64", "--no-sklearn"]) == 0
    out = capsys.readouterr().out
    assert "tutorial" in out and "MLP float64" in out and "kernels ready" in out
    assert "scikit-learn" not in out and "float32" not in out
    assert TwinRunner.force is None
    assert kt.run_slot.signatures


@pytest.mark.requires_jit
def test_warmup_classic_only_leaves_out_the_layers_that_keep_their_slopes(monkeypatch, capsys):
    from fastnn import warmup as wu
    from fastnn._kernels.layout import keeps_slopes

    seen = []  # whether each model warmup runs through the tiled kernel keeps its slopes
    monkeypatch.setattr(wu, "_tiled", lambda model, X, Y: seen.append(keeps_slopes(model._layout)))
    assert main(["warmup", "--dtype", "float32", "--no-sklearn", "--classic-only"]) == 0
    assert "MLP float32" in capsys.readouterr().out
    assert seen == [False]
    seen.clear()
    wu.warmup(("float32",), sklearn=False)
    assert seen == [False, True]


@pytest.mark.requires_jit
def test_compile_times_counts_compiles_inclusive_and_own_and_not_cache_loads():
    import numba

    from fastnn.warmup import compile_times, format_compile_times

    @numba.njit
    def inner(x):
        return x + 1.0

    @numba.njit
    def outer(x):
        return inner(x) * 2.0

    with compile_times() as times:
        assert outer(1.0) == 4.0
    by_name = {name.rsplit(".", 1)[-1]: entry for name, entry in times.items()}
    total, own, count = by_name["outer"]
    assert count == 1 and by_name["inner"][2] == 1
    # inner is compiled while outer is typed: outer's own time leaves it out
    assert 0 < by_name["inner"][0] < total
    assert own == pytest.approx(total - by_name["inner"][0], abs=1e-6)
    assert by_name["inner"][1] == pytest.approx(by_name["inner"][0], abs=1e-6)
    lines = format_compile_times(times, top=1).splitlines()
    assert len(lines) == 3 and lines[-1].endswith("<locals>.outer")  # header, columns, the longest
    with compile_times() as again:  # compiled already: nothing to count
        outer(2.0)
    assert again == {}
    assert "nothing compiled" in format_compile_times(again)


@pytest.mark.requires_jit
def test_warmup_prints_compile_times_when_asked(capsys):
    assert main(["warmup", "--dtype", "float64", "--no-sklearn", "--classic-only", "--compile-times"]) == 0
    out = capsys.readouterr().out
    # kernels this run compiled are listed; with a full cache there are none
    assert "kernels ready" in out
    assert "compiled now (not loaded from the cache)" in out or "nothing compiled" in out


def test_warmup_rejects_other_dtypes():
    from fastnn.warmup import warmup

    with pytest.raises(ValueError, match="dtypes"):
        warmup(("float16",))
    with pytest.raises(SystemExit) as info:
        main(["warmup", "--dtype", "float16"])
    assert info.value.code == 2
