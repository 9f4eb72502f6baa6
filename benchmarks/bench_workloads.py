"""The named workloads of ``fastnn bench``, as pytest-benchmark groups.

One round is ``k`` full-batch training steps (forward, backward, update;
sigmoid, SSE, no bias); pytest-benchmark reports the time of a round, so
divide by ``k`` (in ``extra_info``) for the time per step. Each group puts
fastnn beside the NumPy reference (and PyTorch CPU when installed), in
float64 and float32. ``fastnn bench`` prints the same comparison as a table.
"""

import pytest

from fastnn import bench

ENGINES = ["reference", "fastnn"] + (["torch"] if bench.installed("torch") else [])
# steps per round: enough to dwarf per-call overhead, few enough to keep a round short
STEPS = {"tutorial": bench.TUTORIAL_STEPS, "A": 5, "B": 1, "C": 1}
ROUNDS = {"tutorial": 10, "A": 5, "B": 3, "C": 3}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("workload", list(bench.WORKLOADS))
def test_workload(benchmark, workload, engine, dtype):
    n, d, h, o = bench.WORKLOADS[workload]
    benchmark.group = f"{workload}: n={n} {d}-{h}-{o} {dtype}"
    if workload == "tutorial":
        run = bench._tutorial_engine(engine, dtype)
    else:
        X, Y, W1, W2 = bench.make_problem(n, d, h, o, dtype)
        run = bench._ENGINE_FACTORIES[engine](X, Y, W1, W2, bench.LEARNING_RATE)
    run(1)  # compile / warm up
    k = STEPS[workload]
    benchmark.extra_info["steps_per_round"] = k
    benchmark.extra_info["flops_per_step"] = bench.step_flops(n, d, h, o)
    benchmark.pedantic(run, args=(k,), rounds=ROUNDS[workload], iterations=1, warmup_rounds=0)
