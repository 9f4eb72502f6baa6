"""The tutorial network trained with the NumPy reference and with fastnn, side by side."""

from __future__ import annotations

import statistics
import time

import numpy as np

from fastnn import reference
from fastnn.network import NeuralNetwork

TUTORIAL_X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.float64)
TUTORIAL_Y = np.array([[0], [1], [1], [0]], dtype=np.float64)


def _reference_loop(seed, iterations):
    np.random.seed(seed)
    nn = reference.NeuralNetwork(TUTORIAL_X, TUTORIAL_Y)
    start = time.perf_counter()
    for _ in range(iterations):
        nn.feedforward()
        nn.backprop()
    return time.perf_counter() - start, nn


def _fastnn_train(seed, iterations):
    np.random.seed(seed)
    nn = NeuralNetwork(TUTORIAL_X, TUTORIAL_Y)
    start = time.perf_counter()
    nn.train(iterations)
    return time.perf_counter() - start, nn


def _fastnn_loop(seed, iterations):
    np.random.seed(seed)
    nn = NeuralNetwork(TUTORIAL_X, TUTORIAL_Y)
    start = time.perf_counter()
    for _ in range(iterations):
        nn.feedforward()
        nn.backprop()
    return time.perf_counter() - start, nn


def run_demo(iterations=1500, repeats=5, seed=1):
    """Train the tutorial network both ways and time it.

    Returns a dict with the trained networks, the median seconds per
    iteration of each engine (NumPy reference loop, fastnn ``train``,
    fastnn's unchanged ``feedforward``/``backprop`` loop), the speed-ups and
    the first-call (compile or cache-load) time.
    """
    start = time.perf_counter()
    _fastnn_train(seed, 1)
    _fastnn_loop(seed, 1)
    first_call = time.perf_counter() - start
    ref_times, train_times, loop_times = [], [], []
    for _ in range(repeats):
        t, ref_net = _reference_loop(seed, iterations)
        ref_times.append(t)
        t, fast_net = _fastnn_train(seed, iterations)
        train_times.append(t)
        t, _ = _fastnn_loop(seed, iterations)
        loop_times.append(t)
    ref_t = statistics.median(ref_times)
    train_t = statistics.median(train_times)
    loop_t = statistics.median(loop_times)
    return {
        "iterations": iterations,
        "repeats": repeats,
        "reference_net": ref_net,
        "fastnn_net": fast_net,
        "first_call_s": first_call,
        "reference_s_per_iter": ref_t / iterations,
        "train_s_per_iter": train_t / iterations,
        "loop_s_per_iter": loop_t / iterations,
        "train_speedup": ref_t / train_t,
        "loop_speedup": ref_t / loop_t,
        "max_abs_difference": float(np.abs(ref_net.output - fast_net.output).max()),
    }


def _fmt_time(seconds):
    if seconds >= 1e-3:
        return f"{seconds * 1e3:8.3f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:8.3f} us"
    return f"{seconds * 1e9:8.1f} ns"


def format_demo(result):
    """Human-readable report of :func:`run_demo`'s result."""
    ref_net, fast_net = result["reference_net"], result["fastnn_net"]
    n = result["iterations"]
    lines = [
        f"fastnn demo: the tutorial network (4x3 inputs, 4 hidden units, sigmoid, SSE), {n} iterations",
        "",
        "  target   reference   fastnn",
    ]
    for target, r, f in zip(TUTORIAL_Y[:, 0], ref_net.output[:, 0], fast_net.output[:, 0]):
        lines.append(f"  {target:6.0f}   {r:9.6f}   {f:9.6f}")
    ref_loss = float(np.sum((TUTORIAL_Y - ref_net.output) ** 2))
    lines += [
        "",
        f"  final loss (sum of squares): reference {ref_loss:.6e}, fastnn {fast_net.loss():.6e}",
        f"  largest output difference:   {result['max_abs_difference']:.1e}",
        "",
        f"  time per iteration (median of {result['repeats']} runs of {n}):",
        f"    NumPy reference loop            {_fmt_time(result['reference_s_per_iter'])}",
        f"    fastnn train({n})             {_fmt_time(result['train_s_per_iter'])}"
        f"   speed-up {result['train_speedup']:7.1f}x",
        f"    fastnn feedforward()/backprop() {_fmt_time(result['loop_s_per_iter'])}"
        f"   speed-up {result['loop_speedup']:7.1f}x",
        f"  first call (compile or load from cache): {result['first_call_s']:.3f} s",
    ]
    return "\n".join(lines)


def configure_parser(parser):
    """Arguments of ``fastnn demo``."""
    from fastnn.cli import positive_int

    parser.add_argument("--iterations", type=positive_int, default=1500, help="training iterations (1500)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed repeats; the median is shown (5)")
    parser.add_argument("--seed", type=int, default=1, help="NumPy global seed for the initial weights (1)")


def run_cli(args):
    """Run ``fastnn demo``."""
    print(format_demo(run_demo(args.iterations, args.repeats, args.seed)))
    return 0
