"""The per-phase profiler: `fastnn.profiling.profile` and `fastnn profile`.

Structure and arithmetic only; no assertion depends on how fast anything runs.
"""

import json
import math

import numpy as np
import pytest

from fastnn import profiling, reference
from fastnn._kernels import codes
from fastnn.cli import main

from conftest import assert_close

# small limits measurements keep these tests fast
FAST = {"gemm_size": 32, "bandwidth_bytes": 2**16}

TOP_KEYS = {"schema", "config", "machine", "phases", "totals", "groups", "check", "memory", "roofline",
            "training_step"}
CONFIG_KEYS = {"layer_sizes", "batch_size", "dtype", "activation", "output_activation", "loss", "bias",
               "optimizer", "learning_rate", "steps", "warmup", "threads"}
MACHINE_KEYS = {"gemm_gflops", "gemm_numpy_gflops", "gemm_kernel_gflops", "gemm_size", "bandwidth_gbs",
                "bandwidth_bytes", "blas_threads", "cpu_count"}
PHASE_KEYS = {"name", "kind", "group", "layer", "shape", "seconds", "share", "flops", "gflops", "bytes", "gbs",
              "limit", "pct_of_limit"}
TOTALS_KEYS = {"seconds", "flops", "bytes", "gflops"}
GROUP_KEYS = {"fastnn_seconds", "reference_seconds", "speedup"}
CHECK_KEYS = {"phases_seconds", "unprofiled_seconds", "relative_difference", "tolerance", "passed"}
MEMORY_KEYS = {"parameters_bytes", "gradients_bytes", "activations_bytes", "workspaces_bytes", "data_bytes",
               "buffers_bytes", "step_alloc_peak_bytes", "step_peak_bytes", "reference_step_alloc_peak_bytes",
               "reference_step_peak_bytes", "max_rss_bytes", "method"}
ROOFLINE_KEYS = {"gemm_seconds", "memory_seconds", "seconds", "step_seconds", "ratio", "matmul_phases", "flops",
                 "activation_bytes", "bytes", "gemm_gflops", "bandwidth_gbs"}
SWEEP_KEYS = {"schema", "config", "points", "exponent", "prefactor", "flops_exponent"}
POINT_KEYS = {"hidden", "layer_sizes", "seconds", "flops", "gflops"}


@pytest.fixture(scope="module")
def result():
    return profiling.profile([8, 16, 4], 8, steps=2, warmup=1, **FAST)


# --------------------------------------------------------------------------
# arithmetic, by hand
# --------------------------------------------------------------------------
def test_phase_model_counts_by_hand_float64_sigmoid():
    # layers 3 -> 5 -> 2, batch 4, 8-byte items, no bias (25 weights)
    got = [(p["name"], p["layer"], p["kind"], p["group"], p["flops"], p["bytes"])
           for p in profiling.phase_model([3, 5, 2], 4)]
    assert got == [
        ("forward_matmul", 1, "matmul", "forward", 2 * 4 * 3 * 5, (12 + 15 + 20) * 8),
        ("activation", 1, "elementwise", "forward", 3 * 20, 2 * 20 * 8),
        ("forward_matmul", 2, "matmul", "forward", 2 * 4 * 5 * 2, (20 + 10 + 8) * 8),
        ("activation", 2, "elementwise", "forward", 3 * 8, 2 * 8 * 8),
        ("loss_delta", None, "elementwise", "loss", (4 + 3) * 8, 3 * 8 * 8),
        ("weight_grad", 2, "matmul", "backward", 80, (20 + 8 + 10) * 8),
        ("delta_backprop", 2, "matmul", "backward", 80, (8 + 10 + 20) * 8),
        ("derivative", 1, "elementwise", "backward", 3 * 20, 3 * 20 * 8),
        ("weight_grad", 1, "matmul", "backward", 120, (12 + 20 + 15) * 8),
        ("update", None, "elementwise", "update", 2 * 25, 3 * 25 * 8),
    ]


def test_phase_model_counts_by_hand_float32_relu_bias():
    # layers 3 -> 5 -> 2, batch 4, 4-byte items, bias (25 weights + 7 biases)
    model = profiling.phase_model([3, 5, 2], 4, dtype="float32", activation="relu",
                                  output_activation="identity", bias=True)
    got = [(p["name"], p["layer"], p["flops"], p["bytes"]) for p in model]
    assert got == [
        ("forward_matmul", 1, 120, 47 * 4),
        ("activation", 1, (1 + 1) * 20, (40 + 5) * 4),  # relu + bias add
        ("forward_matmul", 2, 80, 38 * 4),
        ("activation", 2, (0 + 1) * 8, (16 + 2) * 4),  # identity + bias add
        ("loss_delta", None, 4 * 8, 24 * 4),
        ("weight_grad", 2, 80, 38 * 4),
        ("bias_grad", 2, 8, (8 + 2) * 4),
        ("delta_backprop", 2, 80, 38 * 4),
        ("derivative", 1, 20, 60 * 4),
        ("weight_grad", 1, 120, 47 * 4),
        ("bias_grad", 1, 20, (20 + 5) * 4),
        ("update", None, 2 * 32, 3 * 32 * 4),
    ]


def test_identity_hidden_derivative_moves_nothing():
    model = profiling.phase_model([3, 5, 2], 4, activation="identity")
    (deriv,) = [p for p in model if p["name"] == "derivative"]
    assert deriv["flops"] == 0 and deriv["bytes"] == 0


def test_memory_model_by_hand():
    mem = profiling.memory_model([3, 5, 2], 4)
    assert mem == {
        "parameters_bytes": 25 * 8,
        "gradients_bytes": 25 * 8,
        "activations_bytes": 4 * (5 + 2) * 8,
        "workspaces_bytes": 4 * (5 + 2) * 8,
        "data_bytes": 4 * (3 + 2) * 8,
        "buffers_bytes": (25 + 25 + 28 + 28 + 20) * 8,
    }
    assert profiling.memory_model([3, 5, 2], 4, "float32", bias=True)["parameters_bytes"] == 32 * 4


def test_timed_rounds_warm_each_engine_and_pause_between_them(monkeypatch):
    # each engine's turn: an untimed pass of its calls, then the timed one; a
    # pause after the kernels' turn and after the reference's; warm-up rounds
    # are not among the samples
    events = []
    ticks = iter(range(1000))
    monkeypatch.setattr(profiling.time, "sleep", lambda s: events.append("pause"))
    monkeypatch.setattr(profiling.time, "perf_counter", lambda: float(next(ticks)))
    calls = [lambda: events.append("a"), lambda: events.append("b")]
    phases, fused, ref = profiling._timed_rounds(calls, lambda: events.append("f"),
                                                 [lambda: events.append("r")], steps=2, warmup=1)
    one_round = ["a", "b", "a", "b", "f", "f", "pause", "r", "r", "pause"]
    assert events == one_round * 3
    # the clock ticks once before and once after each timed call: every sample is 1
    assert phases == [1.0, 1.0] and fused == 1.0 and ref == [1.0]


def test_fit_exponent_is_exact_on_a_power_law():
    h = [256, 512, 1024, 2048, 4096]
    exponent, prefactor = profiling.fit_exponent(h, [3e-7 * x**1.7 for x in h])
    assert exponent == pytest.approx(1.7, rel=1e-12)
    assert prefactor == pytest.approx(3e-7, rel=1e-9)
    assert profiling.fit_exponent([5, 5], [1.0, 2.0]) == (None, None)
    with pytest.raises(ValueError, match="positive"):
        profiling.fit_exponent([1, 2], [0.0, 1.0])


# --------------------------------------------------------------------------
# the profiled phases are the real step
# --------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [False, True])
def test_phase_calls_compute_the_oracle_gradients(bias):
    sizes, nb = [6, 9, 7, 3], 5
    net = profiling._Network(sizes, nb, np.dtype(np.float64), bias, 3, codes.SIGMOID, codes.SIGMOID)
    weights = [W.copy() for W in net.W]
    biases = [b.copy() for b in net.b] if bias else None
    calls = profiling._phase_calls(net, codes.SIGMOID, codes.SIGMOID, 0.1)
    assert len(calls) == len(profiling.phase_model(sizes, nb, bias=bias))
    for call in calls[:-1]:  # everything but the update
        call()
    _, wg, bg = reference.loss_and_gradients(net.X, net.Y, weights, biases, "sigmoid", "sigmoid", "sse")
    for i in range(len(wg)):
        assert_close(net.gW[i], wg[i])
        if bias:
            assert_close(net.gb[i], bg[i])
    calls[-1]()
    for i in range(len(wg)):
        assert_close(net.W[i], weights[i] - 0.1 * wg[i])


@pytest.mark.parametrize("wide", [True, False])
def test_the_phases_take_the_products_the_training_kernels_take(wide, monkeypatch):
    # where a fit's layers take fastnn's own products (the blocked ones here,
    # forced), the phases and the fused step take them too: the same
    # gradients as the reference, through the loops' addresses
    from fastnn import _runtime
    from fastnn._kernels import few_rows

    monkeypatch.setattr(_runtime, "blas_architecture", lambda: "haswell")
    monkeypatch.setitem(_runtime._vectors, "wide", wide)
    sizes, nb = [6, 40, 7, 3], 50
    net = profiling._Network(sizes, nb, np.dtype(np.float64), True, 3, codes.SIGMOID, codes.SIGMOID)
    nn, tn = profiling._loops(net)
    blocked = few_rows.address(np.float64, "blocked_nn"), few_rows.address(np.float64, "blocked_tn")
    assert (nn, tn) == (([blocked[0]] * 3, [blocked[1]] * 3) if wide else ([0] * 3, [0] * 3))
    weights, biases = [W.copy() for W in net.W], [b.copy() for b in net.b]
    for call in profiling._phase_calls(net, codes.SIGMOID, codes.SIGMOID, 0.1)[:-1]:
        call()
    _, wg, bg = reference.loss_and_gradients(net.X, net.Y, weights, biases, "sigmoid", "sigmoid", "sse")
    for i in range(len(wg)):
        assert_close(net.gW[i], wg[i])
        assert_close(net.gb[i], bg[i])
    grads = net.grads.copy()
    net.grads[:] = 0
    fused = profiling._fused_step(net, codes.SIGMOID, codes.SIGMOID, 0.0)  # (no update: lr 0)
    fused()
    np.testing.assert_allclose(net.grads, grads, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("activation", profiling.KEPT_ACTIVATIONS)
@pytest.mark.parametrize("bias", [False, True])
def test_phase_calls_of_kept_slopes_compute_the_oracle_gradients(activation, bias):
    # the layers that keep f'(z) run other kernels in each phase: the same
    # gradients as the reference, and as the fused step the check times
    sizes, nb = [6, 9, 7, 3], 5
    code = codes.ACTIVATION_CODES[activation]
    net = profiling._Network(sizes, nb, np.dtype(np.float64), bias, 3, code, codes.SIGMOID)
    weights = [W.copy() for W in net.W]
    biases = [b.copy() for b in net.b] if bias else None
    calls = profiling._phase_calls(net, code, codes.SIGMOID, 0.1)
    assert len(calls) == len(profiling.phase_model(sizes, nb, activation=activation, bias=bias))
    for call in calls[:-1]:
        call()
    _, wg, bg = reference.loss_and_gradients(net.X, net.Y, weights, biases, activation, "sigmoid", "sse")
    for i in range(len(wg)):
        assert_close(net.gW[i], wg[i])
        if bias:
            assert_close(net.gb[i], bg[i])
    phased = net.grads.copy()
    net.grads[:] = 0.0
    profiling._fused_step(net, code, codes.SIGMOID, 0.0)()
    assert_close(net.grads, phased)


def test_phase_model_counts_the_kept_slopes():
    # gelu: 15 FLOPs and three arrays (z, a, f'(z)) in its activation, one product in its derivative
    sizes, nb = [4, 6, 2], 3
    plain = profiling.phase_model(sizes, nb, activation="sigmoid")
    kept = profiling.phase_model(sizes, nb, activation="gelu")
    act = [p for p in kept if p["name"] == "activation"][0]
    assert act["flops"] == 15 * nb * 6 and act["bytes"] == 3 * nb * 6 * 8
    der = [p for p in kept if p["name"] == "derivative"][0]
    assert der["flops"] == nb * 6 and der["bytes"] == 3 * nb * 6 * 8
    # the output layer and the products are as for any activation
    for a, b in zip(plain, kept):
        if a["name"] not in ("activation", "derivative") or a["layer"] == 2:
            assert a == b


def test_profile_of_a_kept_activation_runs_and_passes_through():
    res = profiling.profile([4, 6, 2], 3, activation="silu", steps=1, warmup=0, **FAST)
    assert res["config"]["activation"] == "silu"
    assert res["training_step"]["seconds"] > 0
    assert res["groups"]["step"]["reference_seconds"] > 0


# --------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------
def test_result_structure(result):
    assert set(result) == TOP_KEYS
    assert result["schema"] == "fastnn.profile/1"
    assert set(result["config"]) == CONFIG_KEYS
    assert result["config"]["layer_sizes"] == [8, 16, 4]
    assert set(result["machine"]) == MACHINE_KEYS
    assert result["machine"]["gemm_gflops"] > 0 and result["machine"]["bandwidth_gbs"] > 0
    assert set(result["totals"]) == TOTALS_KEYS
    assert set(result["groups"]) == {"forward", "loss", "backward", "update", "step"}
    assert all(set(g) == GROUP_KEYS for g in result["groups"].values())
    assert set(result["check"]) == CHECK_KEYS
    assert set(result["memory"]) == MEMORY_KEYS
    model = profiling.phase_model([8, 16, 4], 8)
    assert len(result["phases"]) == len(model)
    for phase, expected in zip(result["phases"], model):
        assert set(phase) == PHASE_KEYS
        for key in ("name", "kind", "group", "layer", "shape", "flops", "bytes"):
            assert phase[key] == expected[key]
        assert phase["seconds"] > 0
        assert phase["limit"] == ("gemm" if phase["kind"] == "matmul" else "bandwidth")


def test_derived_figures_are_consistent(result):
    phases = result["phases"]
    assert math.fsum(p["share"] for p in phases) == pytest.approx(1.0, abs=1e-12)
    total = sum(p["seconds"] for p in phases)
    assert result["totals"]["seconds"] == pytest.approx(total, rel=1e-12)
    assert result["totals"]["flops"] == sum(p["flops"] for p in phases)
    assert result["totals"]["bytes"] == sum(p["bytes"] for p in phases)
    m = result["machine"]
    for p in phases:
        assert p["share"] == pytest.approx(p["seconds"] / total, rel=1e-12)
        assert p["gflops"] == pytest.approx(p["flops"] / p["seconds"] / 1e9, rel=1e-12)
        assert p["gbs"] == pytest.approx(p["bytes"] / p["seconds"] / 1e9, rel=1e-12)
        limit = p["gflops"] / m["gemm_gflops"] if p["kind"] == "matmul" else p["gbs"] / m["bandwidth_gbs"]
        assert p["pct_of_limit"] == pytest.approx(100 * limit, rel=1e-12)
    groups = result["groups"]
    parts = sum(groups[g]["fastnn_seconds"] for g in ("forward", "loss", "backward", "update"))
    assert groups["step"]["fastnn_seconds"] == pytest.approx(parts, rel=1e-12)
    for g in groups.values():
        assert g["reference_seconds"] > 0
        assert g["speedup"] == pytest.approx(g["reference_seconds"] / g["fastnn_seconds"], rel=1e-12)
    check = result["check"]
    assert check["phases_seconds"] == result["totals"]["seconds"]
    rel = (check["phases_seconds"] - check["unprofiled_seconds"]) / check["unprofiled_seconds"]
    assert check["relative_difference"] == pytest.approx(rel, rel=1e-12)
    assert check["passed"] == (abs(rel) <= 0.10)
    mem = result["memory"]
    for key, value in profiling.memory_model([8, 16, 4], 8).items():
        assert mem[key] == value
    assert mem["method"] == "tracemalloc"
    assert mem["step_peak_bytes"] == mem["buffers_bytes"] + mem["step_alloc_peak_bytes"]
    # the reference allocates its activations and gradients inside the step
    assert mem["reference_step_alloc_peak_bytes"] >= mem["activations_bytes"]


def _roofline_by_hand(sizes, nb, itemsize, gemm_gflops, bandwidth_gbs):
    # every layer: a forward product and a weight gradient (2 nb k n FLOPs each);
    # every layer but the first: a delta back-propagation (2 nb n k)
    pairs = list(zip(sizes[:-1], sizes[1:]))
    flops = sum(4 * nb * k * n for k, n in pairs) + sum(2 * nb * k * n for k, n in pairs[1:])
    act_bytes = nb * sum(sizes[1:]) * itemsize
    gemm_s = flops / (gemm_gflops * 1e9)
    memory_s = 2 * act_bytes / (bandwidth_gbs * 1e9)
    return flops, act_bytes, gemm_s, memory_s


def test_roofline_is_the_formula_of_the_reported_machine_and_shapes(result):
    r = result["roofline"]
    assert set(r) == ROOFLINE_KEYS
    m, c, check = result["machine"], result["config"], result["check"]
    flops, act_bytes, gemm_s, memory_s = _roofline_by_hand(
        c["layer_sizes"], c["batch_size"], np.dtype(c["dtype"]).itemsize, m["gemm_gflops"], m["bandwidth_gbs"])
    assert r["matmul_phases"] == 3 * (len(c["layer_sizes"]) - 1) - 1 == 5
    assert r["flops"] == flops and r["activation_bytes"] == act_bytes and r["bytes"] == 2 * act_bytes
    assert r["gemm_seconds"] == pytest.approx(gemm_s, rel=1e-12)
    assert r["memory_seconds"] == pytest.approx(memory_s, rel=1e-12)
    assert r["seconds"] == pytest.approx(gemm_s + memory_s, rel=1e-12)
    step = result["training_step"]
    assert step["seconds"] > 0 and step["runtime"] in ("tiled", "twins")
    assert r["step_seconds"] == step["seconds"]
    assert r["ratio"] == pytest.approx(step["seconds"] / (gemm_s + memory_s), rel=1e-12)
    assert (r["gemm_gflops"], r["bandwidth_gbs"]) == (m["gemm_gflops"], m["bandwidth_gbs"])


@pytest.mark.parametrize("sizes, nb, dtype", [([64, 4096, 10], 1024, "float64"), ([5, 7, 3, 2], 9, "float32"),
                                              ([3, 2], 4, "float64")])
def test_roofline_counts_3l_minus_1_products_and_the_activations(sizes, nb, dtype):
    gemm, bw = 123.0, 45.6
    r = profiling.roofline(sizes, nb, dtype, gemm, bw, step_seconds=0.25)
    flops, act_bytes, gemm_s, memory_s = _roofline_by_hand(sizes, nb, np.dtype(dtype).itemsize, gemm, bw)
    assert r["matmul_phases"] == 3 * (len(sizes) - 1) - 1
    assert r["flops"] == flops and r["activation_bytes"] == act_bytes
    assert r["seconds"] == pytest.approx(gemm_s + memory_s, rel=1e-12)
    assert r["ratio"] == pytest.approx(0.25 / (gemm_s + memory_s), rel=1e-12)
    assert profiling.roofline(sizes, nb, dtype, gemm, bw)["ratio"] is None
    with pytest.raises(ValueError, match="gemm_gflops"):
        profiling.roofline(sizes, nb, dtype, 0.0, bw)
    with pytest.raises(ValueError, match="bandwidth_gbs"):
        profiling.roofline(sizes, nb, dtype, gemm, -1.0)


def test_json_round_trip_keeps_the_keys(result):
    again = json.loads(json.dumps(result))
    assert again == result


def test_without_reference_and_float32():
    res = profiling.profile([4, 6, 2], 3, dtype="float32", activation="tanh", steps=1, warmup=0,
                            reference_engine=False, bias=True, **FAST)
    assert res["config"]["dtype"] == "float32" and res["config"]["bias"] is True
    assert res["groups"]["step"]["reference_seconds"] is None
    assert res["memory"]["reference_step_peak_bytes"] is None
    assert [p["name"] for p in res["phases"]].count("bias_grad") == 2


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"layer_sizes": [8]}, ValueError, "layer_sizes"),
    ({"layer_sizes": [8, 0, 4]}, ValueError, "layer_sizes"),
    ({"layer_sizes": [8, 2.5, 4]}, TypeError, "layer_sizes"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"dtype": "float16"}, ValueError, "dtype"),
    ({"activation": "softmax"}, ValueError, "activation"),
    ({"output_activation": "gelu"}, ValueError, "output_activation"),
    ({"steps": 0}, ValueError, "steps"),
    ({"learning_rate": -1.0}, ValueError, "learning_rate"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, exc, word):
    args = {"layer_sizes": [8, 16, 4], "batch_size": 8, **kwargs}
    with pytest.raises(exc, match=word):
        profiling.profile(**args, **FAST)


# --------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------
def test_sweep_structure():
    res = profiling.sweep_hidden([8, 16, 16, 4], 4, [4, 8, 16], steps=1, warmup=0)
    assert set(res) == SWEEP_KEYS
    assert res["schema"] == "fastnn.profile.sweep/1"
    assert [p["hidden"] for p in res["points"]] == [4, 8, 16]
    assert res["points"][1]["layer_sizes"] == [8, 8, 8, 4]
    for p in res["points"]:
        assert set(p) == POINT_KEYS
        assert p["flops"] == sum(q["flops"] for q in profiling.phase_model(p["layer_sizes"], 4))
        assert p["seconds"] > 0
    expected, _ = profiling.fit_exponent([4, 8, 16], [p["seconds"] for p in res["points"]])
    assert res["exponent"] == pytest.approx(expected, rel=1e-12)
    assert json.loads(json.dumps(res)) == res
    with pytest.raises(ValueError, match="hidden layer"):
        profiling.sweep_hidden([8, 4], 4, [4, 8])


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------
TINY = ["profile", "--layers", "8,16,4", "--batch", "8", "--steps", "2", "--gemm-size", "32", "--bandwidth-mb", "1"]


def test_cli_prints_tables_and_writes_json(tmp_path, capsys):
    path = tmp_path / "profile.json"
    assert main(TINY + ["--json", str(path)]) == 0
    out = capsys.readouterr().out
    for text in ("forward_matmul L1", "weight_grad L1", "time ms", "GFLOP/s", "% of limit", "MB",
                 "distortion check", "NumPy reference ms", "roofline of a step", "x the roofline"):
        assert text in out
    assert ("PASS" in out) != ("FAIL" in out)
    data = json.loads(path.read_text())
    assert set(data) == TOP_KEYS
    assert data["config"]["layer_sizes"] == [8, 16, 4]
    assert data["config"]["steps"] == 2


def test_cli_sweep_with_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png, js = tmp_path / "sweep.png", tmp_path / "sweep.json"
    argv = ["profile", "--layers", "8,16,4", "--batch", "4", "--steps", "1", "--sweep-hidden", "4,8,16",
            "--plot", str(png), "--json", str(js)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fitted exponent" in out and "hidden^" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(json.loads(js.read_text())) == SWEEP_KEYS


@pytest.mark.parametrize("extra, code", [
    (["--layers", "8"], 2),
    (["--layers", "8,x,4"], 2),
    (["--layers", "8,,4"], 2),
    (["--batch", "0"], 2),
    (["--steps", "-1"], 2),
    (["--dtype", "float16"], 2),
    (["--activation", "softmax"], 2),
    (["--output-activation", "gelu"], 2),
    (["--sweep-hidden", "4,0"], 2),
    (["--plot", "x.png"], 1),
    (["--layers", "8,4", "--sweep-hidden", "4,8"], 1),
    (["--json", "no-such-folder/x.json"], 1),
])
def test_cli_bad_arguments_one_line_nonzero(extra, code, capsys):
    argv = TINY + extra
    if code == 2:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    else:
        assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "error" in err and "Traceback" not in err


def test_threads_limit_is_applied_and_restored():
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    res = profiling.profile([4, 6, 2], 3, steps=1, warmup=0, reference_engine=False, threads=1, **FAST)
    assert res["config"]["threads"] == 1
    if before:
        assert res["machine"]["blas_threads"] == 1
    assert blas_threads() == before
    with pytest.raises(ValueError, match="threads"):
        profiling.profile([4, 6, 2], 3, threads=0, **FAST)


def test_the_training_step_is_timed_in_fits_of_many_steps_when_steps_are_short(monkeypatch, result):
    # a fit of one short step is mostly the call's own cost: the step is timed
    # in fits of enough steps to make FIT_SECONDS (counted here, with a fake
    # MLP.fit whose call costs 1.0 and each step 0.01)
    import fastnn

    clock = {"now": 0.0, "fits": []}

    def fake_fit(self, X, Y, epochs=1, learning_rate=None):
        clock["now"] += 1.0 + 0.01 * epochs
        clock["fits"].append(epochs)
        return self

    monkeypatch.setattr(fastnn.MLP, "fit", fake_fit)
    monkeypatch.setattr(profiling.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(profiling, "FIT_SECONDS", 20.2)  # 20x one fit of one step
    step = profiling._training_step([4, 6, 2], 8, np.dtype("float64"), "sigmoid", "sigmoid", False,
                                    0.1, 3, 0, None)
    assert step["steps_per_fit"] == 20 and clock["fits"] == [1, 1, 1, 1, 20, 20, 20]
    assert step["seconds"] == pytest.approx((1.0 + 0.2) / 20)
    text = profiling.format_profile(dict(result, training_step=step))
    assert "training step (MLP.fit, fits of 20 steps)" in text
