"""`fastnn.bench`: the structure of its results and the `fastnn bench` command (no timing assertions)."""

import json
import os

import numpy as np
import pytest

from fastnn import bench
from fastnn.cli import main


def test_step_flops_counts_the_five_matrix_products():
    n, d, h, o = 3, 5, 7, 2
    forward = 2 * n * d * h + 2 * n * h * o
    backward = 2 * h * n * o + 2 * n * o * h + 2 * d * n * h
    assert bench.step_flops(n, d, h, o) == forward + backward


def test_make_problem_shapes_dtype_and_determinism():
    X, Y, W1, W2 = bench.make_problem(5, 3, 4, 2, "float32", seed=7)
    assert [a.shape for a in (X, Y, W1, W2)] == [(5, 3), (5, 2), (3, 4), (4, 2)]
    assert all(a.dtype == np.float32 for a in (X, Y, W1, W2))
    again = bench.make_problem(5, 3, 4, 2, "float32", seed=7)
    assert all(np.array_equal(a, b) for a, b in zip((X, Y, W1, W2), again))


def test_measure_reports_the_median_per_step():
    calls = []

    def run(k):
        calls.append(k)

    per, k, times = bench.measure(run, fixed_steps=10, repeats=3)
    assert k == 10 and len(times) == 3
    assert per == sorted(times)[1]
    assert calls[0] == 1 and calls[1:] == [10, 10, 10]



@pytest.mark.parametrize("slow_call", [1, 2, 3])
def test_measure_calibrates_past_one_slow_call(slow_call, monkeypatch):
    # a fake clock: a call costs 0.2 ms plus 10 us a step, and one call 30
    # ms more (a helper thread waking up): the warm-up, the timed single
    # step, or the first call of more steps
    clock = {"now": 0.0}
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["now"])
    calls = []

    def run(k):
        calls.append(k)
        clock["now"] += 2e-4 + 1e-5 * k + (0.03 if len(calls) == slow_call else 0.0)

    per, k, times = bench.measure(run, target_s=0.05, repeats=3)
    # calibrated once, from the slow call, k would be 2 (a slow single step:
    # 0.22 ms a repeat of 2 steps, 110 us a step) or 367 (a slow first call
    # of 239 steps)
    assert k >= 2000 and calls[-3:] == [k, k, k]
    assert per == pytest.approx(1e-5, rel=0.1)

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_engines_make_the_same_training_steps(dtype):
    # three steps of every engine doing the same math give the reference's weights
    from fastnn import reference

    X, Y, W1, W2 = bench.make_problem(6, 3, 5, 2, dtype)
    lr = 0.5
    weights = [W1.copy(), W2.copy()]
    reference.train_gd(X, Y, weights, None, "sigmoid", "sigmoid", "sse", lr, 3)
    same_math = [e for e in bench.available_engines() if e != "sklearn"]
    assert "fastnn" in same_math
    tol = 1e-12 if dtype == "float64" else 1e-5
    for name in same_math:
        run = bench._ENGINE_FACTORIES[name](X, Y, W1, W2, lr)
        run(3)
        for got, want in zip(run.weights(), weights):
            assert got.dtype == np.dtype(dtype), name
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)


def test_time_point_structure():
    point = bench.time_point(4, 3, 5, 2, "float64", engines=["reference", "fastnn"], repeats=2,
                             target_s=0.001, gemm=True)
    assert (point["n"], point["d"], point["h"], point["o"], point["dtype"]) == (4, 3, 5, 2, "float64")
    assert point["flops_per_step"] == bench.step_flops(4, 3, 5, 2)
    assert set(point["engines"]) == {"reference", "fastnn"}
    for e in point["engines"].values():
        assert e["s_per_step"] > 0 and e["gflops"] > 0 and e["steps"] >= 1 and len(e["repeats_s"]) == 2
    assert point["speedup"]["reference"] == pytest.approx(1.0)
    ratio = point["engines"]["reference"]["s_per_step"] / point["engines"]["fastnn"]["s_per_step"]
    assert point["speedup"]["fastnn"] == pytest.approx(ratio)
    assert point["gemm_s"] > 0 and point["fastnn_pct_of_gemm"] > 0
    json.dumps(point)


def test_tutorial_point_uses_the_tutorial_loop():
    point = bench.time_point(4, 3, 4, 1, engines=["reference", "fastnn"], repeats=1, tutorial=True)
    assert point["engines"]["fastnn"]["steps"] == bench.TUTORIAL_STEPS
    assert point["engines"]["reference"]["steps"] == bench.TUTORIAL_STEPS


def test_sweep_covers_the_grid_in_order():
    points = bench.run_sweep(hidden_sizes=(2, 3), batch_sizes=(4, 5), dtypes=("float32",),
                             engines=["reference", "fastnn"], n_features=3, n_outputs=2, repeats=1,
                             target_s=0.001)
    assert [(p["n"], p["h"]) for p in points] == [(4, 2), (4, 3), (5, 2), (5, 3)]
    assert all(p["dtype"] == "float32" and p["d"] == 3 and p["o"] == 2 for p in points)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"dtype": "int32"}, "dtype"), ({"engines": ["nope"]}, "engine")],
)
def test_time_point_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench.time_point(2, 2, 2, 1, repeats=1, **kwargs)


def test_run_named_rejects_unknown_workload():
    with pytest.raises(ValueError, match="workload"):
        bench.run_named(["Z"])


def test_format_report_and_plot(tmp_path):
    report = {
        "quick": True, "repeats": 1, "engines": ["reference", "fastnn"],
        "machine": {"platform": "x", "cpu_count": 2},
        "threads": {"blas_threads": 1, "numba_num_threads": 1},
        "named": [],
        "sweep": bench.run_sweep(hidden_sizes=(2, 4), batch_sizes=(3,), engines=["reference", "fastnn"],
                                 n_features=2, n_outputs=1, repeats=1, target_s=0.001),
    }
    text = bench.format_report(report)
    assert "n=3 h=2" in text and "n=3 h=4" in text and "speed-up" in text
    pytest.importorskip("matplotlib")
    path = tmp_path / "sweep.png"
    bench.plot_report(report, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.requires_jit
def test_ping_pong_takes_turns():
    # the two threads' turns never overlap: no increment of the shared,
    # non-atomic buffer is lost
    import threading
    import time

    from fastnn._kernels import train as kt

    buf = np.zeros(4000)
    sync = np.zeros(kt.SYNC_SIZE, dtype=np.int64)
    other = threading.Thread(target=kt.ping_pong, args=(sync, 1, 2, 1000, buf))
    other.start()
    time.sleep(0.05)
    assert (buf == 0).all()  # thread 1 waits for thread 0's first turn
    assert kt.ping_pong(sync, 0, 2, 1000, buf) == 1000
    other.join()
    assert (buf == 2000).all() and sync[kt.SYNC_SHARDS] == 2000
    kt.ping_pong(sync, 0, 1, 5, buf)  # one thread alone: every turn is its own
    assert (buf == 2005).all()


@pytest.mark.requires_jit
def test_thread_handoff_reports_and_prints():
    import os

    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two CPUs")
    out = bench.thread_handoff(rounds=300, size=100, repeats=1)
    assert out["rounds"] == 300 and out["size"] == 100
    for key in ("round_trip_s", "exchange_s", "local_s"):
        assert 0 < out[key] < 1
    report = {"repeats": 1, "engines": ["reference"], "machine": {"platform": "x", "cpu_count": 2},
              "threads": {}, "handoff": out}
    assert "hand-off between two threads: round trip" in bench.format_report(report)


def test_cli_quick_json_exits_0(tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--json", str(path), "--dtype", "float32", "--workloads", "tutorial",
            "--engines", "fastnn", "--no-sweep", "--no-extras", "--repeats", "1", "--no-progress",
            "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "tutorial" in out and str(path) in out
    data = json.loads(path.read_text())
    assert data["quick"] is True
    assert [p["workload"] for p in data["named"]] == ["tutorial"]
    assert set(data["named"][0]["engines"]) == {"reference", "fastnn"}
    assert data["sweep"] == []
    assert data["thread_limit"] == 1


def test_thread_limit_is_restored():
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_info

    import numba
    import scipy.linalg.cython_blas  # noqa: F401  (loaded by the limit otherwise)

    numba_before = numba.get_num_threads()  # starts Numba's thread pool (OpenMP)
    before = [lib["num_threads"] for lib in threadpool_info()]
    with bench._ThreadLimit(1):
        assert all(lib["num_threads"] == 1 for lib in threadpool_info())
        assert numba.get_num_threads() == 1  # the parallel training twin too
    assert [lib["num_threads"] for lib in threadpool_info()] == before
    assert numba.get_num_threads() == numba_before


def test_thread_limit_reaches_torch_in_a_fresh_process():
    # the first numba.get_num_threads() of a process starts Numba's OpenMP layer, which
    # sets the OpenMP thread count that PyTorch shares: the limit must come after it
    pytest.importorskip("threadpoolctl")
    pytest.importorskip("torch")
    code = (
        "import torch, numba\n"
        "from fastnn.bench import _ThreadLimit\n"
        "with _ThreadLimit(1):\n"
        "    print(torch.get_num_threads(), numba.get_num_threads())\n"
    )
    assert _printed_by_a_fresh_process(code) == ["1", "1"]


def _printed_by_a_fresh_process(code):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return out.stdout.split()


def test_thread_limit_starts_xla_on_that_many_cpus_in_a_fresh_process():
    # XLA sizes its thread pool by the process's CPU mask when JAX starts its
    # backend, and its threads keep that mask; the process's own is given back
    pytest.importorskip("threadpoolctl")
    pytest.importorskip("jax")
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a CPU mask of two CPUs or more")
    code = (
        "import os\n"
        "from fastnn.bench import _ThreadLimit\n"
        "before = os.sched_getaffinity(0)\n"
        "with _ThreadLimit(1, xla=True):\n"
        "    import jax\n"
        "    jax.numpy.ones(3).sum().block_until_ready()\n"
        "    own = os.sched_getaffinity(0) == before\n"
        "    pinned = [t for t in os.listdir('/proc/self/task') if len(os.sched_getaffinity(int(t))) == 1]\n"
        "print(own, len(pinned) > 0)\n"
    )
    assert _printed_by_a_fresh_process(code) == ["True", "True"]


def test_the_report_compares_fastnn_with_jax_when_it_ran():
    point = bench.time_point(4, 3, 5, 2, "float64", engines=["reference", "fastnn"], repeats=1, target_s=0.001)
    point["label"] = "p"
    assert "fastnn vs jax" not in bench._table([point], "point", ["reference", "fastnn"])
    point["engines"]["jax"] = dict(point["engines"]["fastnn"], s_per_step=2 * point["engines"]["fastnn"]["s_per_step"])
    point["speedup"]["jax"] = 1.0
    table = bench._table([point], "point", ["reference", "fastnn", "jax"])
    assert table.splitlines()[0].split("  ")[-2].strip() == "fastnn vs jax"
    assert table.splitlines()[2].split()[-2] == "2.00"


@pytest.mark.parametrize(
    "argv",
    [["bench", "--workloads", "Z"], ["bench", "--engines", "nope"], ["bench", "--plot", "x.png", "--no-sweep"]],
)
def test_cli_bad_choices_exit_1(argv, capsys):
    assert main(argv + ["--no-progress"]) == 1
    assert "fastnn bench: error:" in capsys.readouterr().err


def test_cli_bad_dtype_exits_2():
    with pytest.raises(SystemExit) as info:
        main(["bench", "--dtype", "float16"])
    assert info.value.code == 2


def test_cli_sklearn_section(tmp_path, capsys, monkeypatch):
    pytest.importorskip("sklearn")
    # the skorch table that follows is tested in test_skorch_bench.py
    monkeypatch.setattr(bench, "_skorch_section", lambda *args: None)
    path = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--no-sweep", "--no-extras", "--workloads", "tutorial", "--dtype", "float64",
            "--engines", "reference", "--repeats", "1", "--no-progress", "--sklearn", "--json", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "scikit-learn estimators" in out
    rows = json.loads(path.read_text())["sklearn"]
    assert {(r["workload"], r["solver"]) for r in rows} == {
        (w, s) for w in ("digits", "breast_cancer", "make_regression", "make_classification")
        for s in ("adam", "sgd", "lbfgs")
    }
    for r in rows:
        assert r["dtype"] == "float64" and r["sklearn_s"] > 0 and r["fastnn_s"] > 0
        assert r["speedup"] == pytest.approx(r["sklearn_s"] / r["fastnn_s"])
        if r["solver"] != "lbfgs":  # same updates from the same random stream: same model
            assert r["fastnn_score"] == pytest.approx(r["sklearn_score"], abs=1e-12)


# ------------------------------------------------- machine header, thread scaling
def test_scaling_thread_counts_are_powers_of_two_and_the_cpu_count():
    for n in range(1, 40):
        expected = sorted({2 ** i for i in range(n.bit_length()) if 2 ** i < n} | {n})
        assert bench.scaling_thread_counts(n) == expected
    assert bench.scaling_thread_counts()[-1] == (__import__("os").cpu_count() or 1)


def test_machine_info_names_the_cpu_and_the_blas_without_paths():
    import os

    info = bench.machine_info()
    json.dumps(info)
    assert info["cpu_count"] == os.cpu_count()
    pools = info["thread_pools"]
    assert any(p["user_api"] == "blas" for p in pools)  # NumPy's and SciPy's BLAS at least
    for p in pools:
        assert set(p) >= {"internal_api", "version", "architecture", "num_threads", "filename"}
        assert p["filename"] and os.sep not in p["filename"]
    text = "\n".join(bench._machine_lines(info))
    assert text.startswith("CPU: ")
    assert f"{os.cpu_count()} logical CPUs" in text
    blas = next(p for p in pools if p["user_api"] == "blas")
    assert "BLAS: " in text and blas["filename"] in text and f"{blas['num_threads']} threads" in text
    assert os.sep + "lib" not in text and "site-packages" not in text


def test_cpu_model_falls_back_and_never_fails(monkeypatch):
    import builtins
    import subprocess

    real_open = builtins.open

    def no_cpuinfo(path, *args, **kwargs):
        if str(path) == "/proc/cpuinfo":
            raise OSError("no such file")
        return real_open(path, *args, **kwargs)

    def no_command(*args, **kwargs):
        raise OSError("no such command")

    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    monkeypatch.setattr(bench.platform, "processor", lambda: "Test CPU 3000")
    assert bench.cpu_model() == "Test CPU 3000"
    monkeypatch.setattr(bench.platform, "processor", lambda: "")
    monkeypatch.setattr(subprocess, "run", no_command)
    assert bench.cpu_model() is None
    info = bench.machine_info()
    assert info["cpu_model"] is None and info["physical_cores"] is None
    assert bench._machine_lines(info)[0].startswith("CPU: model unknown")

    class Lscpu:
        returncode = 0
        stdout = "Architecture: x86_64\nModel name:   Example Core 9\n"

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: Lscpu())
    assert bench.cpu_model() == "Example Core 9"


def test_thread_scaling_sets_and_restores_every_pool(monkeypatch):
    # "k threads" = Numba, every threadpoolctl pool and PyTorch limited to k during the measurement
    import numba
    from threadpoolctl import threadpool_info

    seen = {}

    def recorder(engine):
        def factory(X, Y, W1, W2, lr):
            def run(k):
                state = {"numba": numba.get_num_threads(),
                         "pools": {lib["num_threads"] for lib in threadpool_info()}}
                if bench.installed("torch"):
                    import torch

                    state["torch"] = torch.get_num_threads()
                seen.setdefault(engine, []).append(state)

            return run

        return factory

    for engine in ("fastnn", "torch"):
        monkeypatch.setitem(bench._ENGINE_FACTORIES, engine, recorder(engine))
    import scipy.linalg.cython_blas  # noqa: F401
    numba_before = numba.get_num_threads()
    pools_before = [lib["num_threads"] for lib in threadpool_info()]
    out = bench.thread_scaling(["tiny"], engines=["fastnn", "torch"], counts=[2], repeats=2, target_s=0.001,
                               shapes={"tiny": (6, 3, 5, 2)})
    assert out["thread_counts"] == [1, 2]  # 1 is always timed: the base of the speed-ups
    for engine in ("fastnn", "torch"):
        calls = seen[engine]
        limits = [next(iter(state["pools"])) for state in calls]
        assert all(len(state["pools"]) == 1 for state in calls)
        # the calls of k = 1 (warm-ups, sizing, two repeats), then those of k = 2
        assert limits == sorted(limits) and limits[0] == 1 and limits[-1] == 2
        assert limits.count(1) >= 4 and limits.count(2) >= 4
        for k, state in zip(limits, calls):
            assert state["numba"] == min(k, numba.config.NUMBA_NUM_THREADS)
            assert state.get("torch", k) == k
    rows = out["workloads"]["tiny"]["rows"]
    assert [r["numba_threads"] for r in rows] == [1, min(2, numba.config.NUMBA_NUM_THREADS)]
    assert numba.get_num_threads() == numba_before
    assert [lib["num_threads"] for lib in threadpool_info()] == pools_before


def test_thread_scaling_structure_on_a_tiny_workload():
    engines = [e for e in bench.SCALING_ENGINES if e in bench.available_engines()]
    out = bench.thread_scaling(["tiny"], dtype="float32", counts=[2, 1], repeats=1, target_s=0.001,
                               shapes={"tiny": (8, 3, 5, 2)})
    json.dumps(out)
    assert out["dtype"] == "float32" and out["engines"] == engines and out["thread_counts"] == [1, 2]
    w = out["workloads"]["tiny"]
    assert w["shape"] == [8, 3, 5, 2] and w["flops_per_step"] == bench.step_flops(8, 3, 5, 2)
    assert [r["threads"] for r in w["rows"]] == [1, 2]
    base = w["rows"][0]["engines"]
    for r in w["rows"]:
        assert set(r["engines"]) == set(engines)
        for e, cell in r["engines"].items():
            assert cell["s_per_step"] > 0
            assert cell["speedup"] == pytest.approx(base[e]["s_per_step"] / cell["s_per_step"])
    text = "\n".join(bench._scaling_lines(out))
    assert "Thread scaling, float32" in text
    assert len([line for line in text.splitlines() if line.startswith("tiny")]) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [({"workloads": ["tutorial"]}, "scaling workload"), ({"engines": ["nope"]}, "engine"),
     ({"counts": [0]}, "positive"), ({"dtype": "int8"}, "dtype")],
)
def test_thread_scaling_rejects_bad_arguments(kwargs, message):
    args = {"workloads": ["B"], **kwargs}
    with pytest.raises(ValueError, match=message):
        bench.thread_scaling(repeats=1, **args)


def test_cli_prints_the_machine_and_the_scaling_section(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(bench.WORKLOADS, "B", (8, 3, 5, 2))  # a tiny B: structure, not timings
    path = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--workloads", "none", "--no-sweep", "--no-extras", "--scaling", "B",
            "--scaling-threads", "1,2", "--engines", "fastnn", "--repeats", "1", "--no-progress",
            "--json", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "\nCPU: " in out and "\nBLAS: " in out and "Thread scaling, float64" in out
    data = json.loads(path.read_text())
    assert data["machine"]["cpu_count"] and data["machine"]["thread_pools"]
    scaling = data["thread_scaling"]
    assert scaling["engines"] == ["fastnn"] and scaling["thread_counts"] == [1, 2]
    assert scaling["workloads"]["B"]["shape"] == [8, 3, 5, 2]
    assert [r["threads"] for r in scaling["workloads"]["B"]["rows"]] == [1, 2]
    # --threads fixes the count: the section says it is skipped
    argv = ["bench", "--quick", "--workloads", "none", "--no-sweep", "--no-extras", "--scaling", "B",
            "--engines", "fastnn", "--repeats", "1", "--no-progress", "--threads", "1", "--json", str(path)]
    assert main(argv) == 0
    assert "thread scaling: skipped (every engine is limited to 1 thread(s) by --threads)" in capsys.readouterr().out
    assert "skipped" in json.loads(path.read_text())["thread_scaling"]
    # --no-extras without --scaling: no section
    argv = ["bench", "--quick", "--workloads", "none", "--no-sweep", "--no-extras", "--no-progress",
            "--json", str(path)]
    assert main(argv) == 0
    assert "thread scaling" not in capsys.readouterr().out.lower()
    assert "thread_scaling" not in json.loads(path.read_text())


@pytest.mark.parametrize("argv", [["--scaling", "Z"], ["--scaling", "tutorial"], ["--scaling-threads", "0"],
                                  ["--scaling-threads", "2,x"]])
def test_cli_bad_scaling_arguments_exit_1_with_one_line(argv, capsys):
    assert main(["bench", "--no-progress"] + argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastnn bench: error:") and err.count("\n") == 1


def test_the_report_notes_openblas_kernels_without_avx512_on_a_cpu_with_it():
    def machine(arch, flags=bench.AVX512_FLAGS, coretype=None, api="openblas"):
        pool = {"user_api": "blas", "internal_api": api, "version": "0.3.30", "architecture": arch,
                "num_threads": 2, "filename": "libopenblas.so"}  # fmt: skip
        return {"cpu_model": "Test CPU", "cpu_count": 2, "thread_pools": [pool], "cpu_flags": sorted(flags),
                "openblas_coretype": coretype}  # fmt: skip

    note = bench.blas_note(machine("Haswell", coretype="Haswell"))
    assert "Haswell kernels" in note and "OPENBLAS_CORETYPE=Haswell in the environment" in note
    assert note in bench._machine_lines(machine("Haswell", coretype="Haswell"))
    assert "does not know this CPU model" in bench.blas_note(machine("Zen"))
    for quiet in (machine("SkylakeX"), machine("SapphireRapids"), machine("Haswell", flags={"avx2", "avx512f"}),
                  machine("Haswell", api="mkl"), machine(None)):  # fmt: skip
        assert bench.blas_note(quiet) is None
        assert not any(line.startswith("note:") for line in bench._machine_lines(quiet))
    assert set(bench.machine_info()["cpu_flags"]) <= bench.AVX512_FLAGS


def test_the_report_says_which_products_of_a_few_rows_take_fastnns_loops():
    # the rule of fastnn._kernels.few_rows.loop_rows, by the BLAS's kernel set
    wide = "up to 8 rows through layers of 512 units and 131,072 weights or more"
    packing = bench.few_rows_line({"blas_architecture": "haswell"})
    assert packing.startswith("few-rows loops (batches and predictions of a few rows): " + wide)
    assert "up to 16 through the other layers of 64 units or more" in packing
    for other in ("skylakex", None):
        line = bench.few_rows_line({"blas_architecture": other})
        assert wide in line and "up to 4 rows through 512 units" in line and "16" not in line
    machine = bench.machine_info()
    assert bench.few_rows_line(machine) in bench._machine_lines(machine)


def test_the_report_says_which_layers_take_the_blocked_products():
    # the rule of fastnn._kernels.blocked.takes_blocked, by the BLAS's kernel set and the vectors
    taken = bench.blocked_line({"blas_architecture": "haswell", "wide_vectors": True})
    assert taken.startswith("register-blocked products (512-bit")
    assert "layers of 2 units or more (32 in float32)" in taken and "fed by 128 inputs or fewer" in taken
    assert "not taken" in bench.blocked_line({"blas_architecture": "skylakex", "wide_vectors": True})
    assert "not taken" in bench.blocked_line({"blas_architecture": "haswell", "wide_vectors": False})
    machine = bench.machine_info()
    assert isinstance(machine["wide_vectors"], bool)
    assert bench.blocked_line(machine) in bench._machine_lines(machine)
