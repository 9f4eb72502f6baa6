"""Benchmark sweep: fastnn against the NumPy reference, PyTorch (CPU) and scikit-learn.

One *step* is a full-batch training step of a one-hidden-layer network:
forward, backward and the update ``W -= learning_rate * dW``, with sigmoid
activations, the sum-of-squares loss (SSE) and no biases. Every engine is
timed in the same process, as the median of several repeats of ``k`` steps
(``k`` chosen so that one repeat lasts a few tens of milliseconds), and
reported as seconds per step, GFLOP/s of the step's matrix products and the
speed-up over the reference.

Engines
-------
``reference``
    :func:`fastnn.reference.train_gd` (NumPy); for the tutorial workload the
    tutorial's own ``feedforward()`` / ``backprop()`` loop
    (:class:`fastnn.reference.NeuralNetwork`).
``fastnn``
    ``MLP([d, h, o], bias=False).fit(X, Y, epochs=k)``; for the tutorial
    workload ``NeuralNetwork.train(k)``.
``torch``
    PyTorch CPU, the same math written by hand (``torch.mm`` and in-place
    elementwise operations into preallocated tensors), one Python loop
    iteration per step.
``torch_autograd``
    PyTorch CPU, ``torch.sigmoid`` layers, ``((out - Y)**2).sum()``,
    ``backward()`` and ``torch.optim.SGD`` (no momentum): the same
    gradients and update, with autograd's allocations.
``jax``
    JAX on the CPU (XLA), the same math written by hand, ``k`` steps in one
    jitted ``lax.fori_loop`` with the weights donated: the whole loop
    compiled, as fastnn's is. float64 needs JAX's ``jax_enable_x64``, which
    the engine turns on for the process. ``--threads N`` reaches XLA only
    when JAX has not started its CPU backend yet (a fresh ``fastnn bench``
    process): XLA sizes its thread pool once, by the CPUs the process may
    run on then (`_start_xla`). So the scaling section, which changes the
    count within one process, leaves JAX out.
``sklearn``
    ``MLPRegressor(solver="sgd", batch_size=n, momentum=0, alpha=0,
    max_iter=1, warm_start=True)``: one call is one full-batch step. *Not
    the same math*: scikit-learn always has biases, its regressor's output
    is linear (identity) and its loss is ``mean((y - out)**2) / 2``; the
    matrix products (and hence the FLOPs) are the same, the elementwise work
    differs slightly, and each call re-validates its input. Shown for scale.

The library functions :func:`time_point`, :func:`run_named`,
:func:`run_sweep`, :func:`startup_times`, :func:`allocation_check`,
:func:`thread_check`, :func:`thread_handoff`, :func:`thread_scaling` and
:func:`machine_info` return plain dicts (JSON-serialisable); ``fastnn bench``
prints them as tables.

The report's header names the machine: the CPU model, its logical, usable
and physical CPU counts, and every BLAS and OpenMP library loaded with its
version, kernel architecture and threads (threadpoolctl), by file name only.
Its "thread scaling" section times workload B (A, B and C without
``--quick``; ``--scaling``) with 1, 2, 4, ... threads up to the CPU count,
Numba, BLAS/OpenMP and PyTorch all limited to each count in turn, fastnn and
PyTorch side by side, with the speed-up over one thread.
"""

from __future__ import annotations

import importlib.util
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from fastnn import _threads

ENGINES = ("reference", "fastnn", "torch", "torch_autograd", "jax", "sklearn")

# name -> (n, d, h, o)
WORKLOADS = {
    "tutorial": (4, 3, 4, 1),
    "A": (256, 64, 1024, 10),
    "B": (1024, 64, 4096, 10),
    "C": (1024, 784, 2048, 10),
}
TUTORIAL_STEPS = 1500

SWEEP_HIDDEN = (4, 16, 64, 256, 1024, 4096, 8192)
SWEEP_BATCH = (4, 64, 512, 4096)
QUICK_HIDDEN = (4, 64, 1024)
QUICK_BATCH = (4, 256)
SWEEP_FEATURES = 64
SWEEP_OUTPUTS = 10
LEARNING_RATE = 1e-4

_TUTORIAL_X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.float64)
_TUTORIAL_Y = np.array([[0], [1], [1], [0]], dtype=np.float64)


# ---------------------------------------------------------------- helpers
def installed(module):
    """True when ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def available_engines():
    """The engines whose libraries are installed here."""
    found = ["reference", "fastnn"]
    if installed("torch"):
        found += ["torch", "torch_autograd"]
    if installed("jax"):
        found.append("jax")
    if installed("sklearn"):
        found.append("sklearn")
    return found


def step_flops(n, d, h, o):
    """Floating-point operations of the matrix products of one step.

    Forward ``X @ W1`` and ``A1 @ W2``, backward ``A1.T @ D2``,
    ``D2 @ W2.T`` and ``X.T @ D1``: ``4 n d h + 6 n h o``. The elementwise
    work (sigmoid, loss, derivative, update) is not counted.
    """
    return 4 * n * d * h + 6 * n * h * o


def make_problem(n, d, h, o, dtype, seed=0):
    """Random data and initial weights ``(X, Y, W1, W2)`` of one benchmark point."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dt)
    Y = rng.random((n, o)).astype(dt)
    W1 = rng.uniform(-1, 1, (d, h)).astype(dt) * dt.type(np.sqrt(2.0 / (d + h)))
    W2 = rng.uniform(-1, 1, (h, o)).astype(dt) * dt.type(np.sqrt(2.0 / (h + o)))
    return X, Y, W1, W2


def _settle(seconds=0.15):
    """Let the previous engine's idle worker threads stop spinning.

    OpenBLAS (NumPy's and SciPy's are two separate libraries), OpenMP and
    PyTorch keep their workers busy-waiting for a while after each parallel
    call; on a machine with few cores those spinning threads slow down
    whatever runs next. Pausing before each engine keeps the engines from
    timing each other's leftovers.
    """
    time.sleep(seconds)


def measure(run, fixed_steps=None, target_s=0.05, repeats=5, max_steps=100000):
    """Median seconds per step of ``run(k)`` (which performs ``k`` steps).

    ``run`` is called once to warm up (compile, allocate); ``k`` is
    ``fixed_steps`` or chosen so that one call lasts about ``target_s``.
    Returns ``(seconds_per_step, steps_per_repeat, all_repeats)``.
    """
    run(1)
    if fixed_steps is not None:
        k = int(fixed_steps)
    else:
        start = time.perf_counter()
        run(1)
        once = max(time.perf_counter() - start, 1e-7)
        k = int(min(max_steps, max(1, math.ceil(target_s / once))))
        # calls shorter than target_s may carry per-call overhead: estimate
        # again on k steps, keeping the fastest estimate, until two agree.
        # One slow call (a helper thread waking up in a twin's probe: a few
        # ms) made k = 16 for a step of 9 us, whose repeats then measured a
        # fit's own overhead (0.25 ms a call) as 15-210 us a step
        best = last = None
        for _ in range(3):
            if k <= 1:
                break
            start = time.perf_counter()
            run(k)
            per = max((time.perf_counter() - start) / k, 1e-9)
            best = per if best is None else min(best, per)
            k = int(min(max_steps, max(1, math.ceil(target_s / best))))
            if last is not None and max(per, last) <= 1.5 * min(per, last):
                break
            last = per
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(k)
        times.append((time.perf_counter() - start) / k)
    return statistics.median(times), k, times


# ---------------------------------------------------------------- engines
# Each factory returns ``run(k)``, which makes k training steps, with an
# attribute ``run.weights()`` giving the current weights as NumPy arrays.
def _reference_engine(X, Y, W1, W2, lr):
    from fastnn import reference

    weights = [W1.copy(), W2.copy()]

    def run(k):
        reference.train_gd(X, Y, weights, None, "sigmoid", "sigmoid", "sse", lr, k)

    run.weights = lambda: weights
    return run


def _fastnn_engine(X, Y, W1, W2, lr):
    from fastnn import MLP

    d, h = W1.shape
    o = W2.shape[1]
    net = MLP([d, h, o], bias=False, dtype=X.dtype, random_state=0)
    net.weights[0][...] = W1
    net.weights[1][...] = W2

    def run(k):
        net.fit(X, Y, epochs=k, learning_rate=lr)
        net.history_ = net.history_[:0]  # keep the history from growing between repeats

    run.weights = lambda: net.weights
    return run


def _torch_engine(X, Y, W1, W2, lr):
    import torch

    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    w1, w2 = torch.from_numpy(W1.copy()), torch.from_numpy(W2.copy())
    n, h, o = X.shape[0], W1.shape[1], W2.shape[1]
    a1 = torch.empty((n, h), dtype=Xt.dtype)
    a2 = torch.empty((n, o), dtype=Xt.dtype)
    d1 = torch.empty_like(a1)
    d2 = torch.empty_like(a2)
    tmp1 = torch.empty_like(a1)
    tmp2 = torch.empty_like(a2)
    g1 = torch.empty_like(w1)
    g2 = torch.empty_like(w2)

    def run(k):
        with torch.no_grad():
            for _ in range(k):
                torch.mm(Xt, w1, out=a1)
                a1.sigmoid_()
                torch.mm(a1, w2, out=a2)
                a2.sigmoid_()
                torch.sub(a2, Yt, out=d2)  # r = out - y; loss = sum(r * r)
                torch.neg(a2, out=tmp2).add_(1.0)
                tmp2.mul_(a2).mul_(2.0)
                d2.mul_(tmp2)  # d2 = 2 r out (1 - out)
                torch.mm(a1.t(), d2, out=g2)
                torch.mm(d2, w2.t(), out=d1)
                torch.neg(a1, out=tmp1).add_(1.0)
                tmp1.mul_(a1)
                d1.mul_(tmp1)  # d1 = (d2 W2^T) a1 (1 - a1)
                torch.mm(Xt.t(), d1, out=g1)
                w1.sub_(g1, alpha=lr)
                w2.sub_(g2, alpha=lr)

    run.weights = lambda: [w1.numpy(), w2.numpy()]
    return run


def _torch_autograd_engine(X, Y, W1, W2, lr):
    import torch

    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    w1 = torch.from_numpy(W1.copy()).requires_grad_()
    w2 = torch.from_numpy(W2.copy()).requires_grad_()
    opt = torch.optim.SGD([w1, w2], lr=lr, momentum=0.0)

    def run(k):
        for _ in range(k):
            opt.zero_grad(set_to_none=False)
            out = torch.sigmoid(torch.sigmoid(Xt @ w1) @ w2)
            loss = ((out - Yt) ** 2).sum()
            loss.backward()
            opt.step()

    run.weights = lambda: [w1.detach().numpy(), w2.detach().numpy()]
    return run


def _jax_engine(X, Y, W1, W2, lr):
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 arrays stay float64 (float32 ones stay float32)
    import jax.numpy as jnp

    x, y = jnp.asarray(X), jnp.asarray(Y)

    def step(_, weights):
        w1, w2 = weights
        a1 = jax.nn.sigmoid(x @ w1)
        a2 = jax.nn.sigmoid(a1 @ w2)
        d2 = 2.0 * (a2 - y) * a2 * (1.0 - a2)  # r = out - y; loss = sum(r * r)
        d1 = (d2 @ w2.T) * a1 * (1.0 - a1)
        return w1 - lr * (x.T @ d1), w2 - lr * (a1.T @ d2)

    steps = jax.jit(lambda weights, k: jax.lax.fori_loop(0, k, step, weights), donate_argnums=0)
    state = [(jnp.asarray(W1), jnp.asarray(W2))]

    def run(k):
        state[0] = jax.block_until_ready(steps(state[0], k))

    run.weights = lambda: [np.asarray(w) for w in state[0]]
    return run


def _sklearn_engine(X, Y, W1, W2, lr):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    n = X.shape[0]
    model = MLPRegressor(
        hidden_layer_sizes=(W1.shape[1],), activation="logistic", solver="sgd", batch_size=n,
        learning_rate="constant", learning_rate_init=lr, momentum=0.0, nesterovs_momentum=False,
        alpha=0.0, max_iter=1, shuffle=False, warm_start=True, tol=0.0, n_iter_no_change=10**9,
        random_state=0,
    )
    y = Y[:, 0] if Y.shape[1] == 1 else Y

    def run(k):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for _ in range(k):
                model.fit(X, y)

    return run


_ENGINE_FACTORIES = {
    "reference": _reference_engine,
    "fastnn": _fastnn_engine,
    "torch": _torch_engine,
    "torch_autograd": _torch_autograd_engine,
    "jax": _jax_engine,
    "sklearn": _sklearn_engine,
}


def _tutorial_engine(name, dtype, lr=1.0):
    X = _TUTORIAL_X.astype(dtype)
    Y = _TUTORIAL_Y.astype(dtype)
    if name == "reference":
        from fastnn import reference

        def run(k):
            np.random.seed(1)
            nn = reference.NeuralNetwork(X, Y)
            for _ in range(k):
                nn.feedforward()
                nn.backprop()

        return run
    if name == "fastnn":
        from fastnn import NeuralNetwork

        np.random.seed(1)
        nn = NeuralNetwork(X, Y, dtype=dtype)
        W1, W2 = nn.weights1.copy(), nn.weights2.copy()

        def run(k):
            nn.weights1[...] = W1
            nn.weights2[...] = W2
            nn.train(k)

        return run
    np.random.seed(1)
    W1 = np.random.rand(3, 4).astype(dtype)
    W2 = np.random.rand(4, 1).astype(dtype)
    return _ENGINE_FACTORIES[name](X, Y, W1, W2, lr)


# ---------------------------------------------------------------- points
def _gemm_seconds(n, d, h, o, dtype, repeats):
    """Median seconds of the step's five plain matrix products, alone.

    They are made by the same BLAS calls fastnn's kernels make (Numba's
    ``np.dot`` into preallocated outputs, hence the same BLAS library and
    threads), without any of the elementwise work: the machine's GEMM peak
    for these shapes.
    """
    from fastnn._kernels.dense import matmul, matmul_nt, matmul_tn

    X, Y, W1, W2 = make_problem(n, d, h, o, dtype, seed=1)
    A1 = np.empty((n, h), dtype)
    A2 = np.empty((n, o), dtype)
    D1 = np.empty((n, h), dtype)
    G1 = np.empty((d, h), dtype)
    G2 = np.empty((h, o), dtype)

    def run(k):
        for _ in range(k):
            matmul(X, W1, A1)
            matmul(A1, W2, A2)
            matmul_tn(A1, A2, G2)
            matmul_nt(A2, W2, D1)
            matmul_tn(X, D1, G1)

    _settle()
    return measure(run, repeats=repeats)[0]


def time_point(n, d, h, o, dtype="float64", engines=None, repeats=5, target_s=0.05,
               learning_rate=LEARNING_RATE, tutorial=False, gemm=False):
    """Time one benchmark point with every engine.

    Parameters
    ----------
    n, d, h, o : int
        Batch size (= number of samples), features, hidden units, outputs.
    dtype : {"float64", "float32"}
    engines : sequence of str or None
        Subset of :data:`ENGINES`; ``None`` means all installed ones.
    repeats : int
        Timed repeats; the median is reported.
    target_s : float
        Approximate duration of one repeat.
    learning_rate : float
    tutorial : bool
        Time the tutorial drop-in instead (``reference`` is the tutorial's
        loop, ``fastnn`` is ``NeuralNetwork.train``, both 1500 steps).
    gemm : bool
        Also time the step's matrix products alone (plain NumPy ``dot``)
        and report fastnn's share of that peak.

    Returns
    -------
    dict
        ``{"n", "d", "h", "o", "dtype", "flops_per_step", "engines": {name:
        {"s_per_step", "gflops", "steps", "repeats_s"}}, "speedup": {name:
        reference time / engine time}}`` and, with ``gemm``, ``"gemm_s"``,
        ``"gemm_gflops"`` and ``"fastnn_pct_of_gemm"``.
    """
    dtype = np.dtype(dtype).name
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    names = available_engines() if engines is None else list(engines)
    for name in names:
        if name not in ENGINES:
            raise ValueError(f"unknown engine {name!r}; expected one of {', '.join(ENGINES)}")
    flops = step_flops(n, d, h, o)
    result = {"n": n, "d": d, "h": h, "o": o, "dtype": dtype, "flops_per_step": flops, "engines": {}}
    if not tutorial:
        X, Y, W1, W2 = make_problem(n, d, h, o, dtype)
    for name in names:
        if tutorial:
            run = _tutorial_engine(name, dtype)
            fixed = TUTORIAL_STEPS if name in ("reference", "fastnn") else None
        else:
            run = _ENGINE_FACTORIES[name](X, Y, W1, W2, learning_rate)
            fixed = None
        _settle()
        per, k, times = measure(run, fixed_steps=fixed, target_s=target_s, repeats=repeats)
        result["engines"][name] = {
            "s_per_step": per,
            "gflops": flops / per / 1e9,
            "steps": k,
            "repeats_s": times,
        }
    ref = result["engines"].get("reference")
    result["speedup"] = {
        name: (ref["s_per_step"] / e["s_per_step"] if ref else None)
        for name, e in result["engines"].items()
    }
    if gemm:
        g = _gemm_seconds(n, d, h, o, dtype, repeats)
        result["gemm_s"] = g
        result["gemm_gflops"] = flops / g / 1e9
        fast = result["engines"].get("fastnn")
        result["fastnn_pct_of_gemm"] = 100.0 * g / fast["s_per_step"] if fast else None
    return result


class _Progress:
    """tqdm when installed, else a counter on stderr; silent when disabled."""

    def __init__(self, total, enabled=True):
        self.total = total
        self.count = 0
        self.enabled = enabled
        self.bar = None
        if enabled and installed("tqdm"):
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="point", file=sys.stderr, leave=False)

    def update(self, label):
        self.count += 1
        if self.bar is not None:
            self.bar.set_postfix_str(label)
            self.bar.update(1)
        elif self.enabled:
            print(f"\r[{self.count}/{self.total}] {label:40s}", end="", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.count:
            print(file=sys.stderr)


def run_named(names=None, dtypes=("float64", "float32"), engines=None, repeats=5, target_s=0.05,
              progress=None):
    """Time the named workloads (:data:`WORKLOADS`); returns a list of :func:`time_point` dicts
    with a ``"workload"`` key. ``C`` also gets the GEMM peak comparison."""
    names = list(WORKLOADS) if names is None else list(names)
    for name in names:
        if name not in WORKLOADS:
            raise ValueError(f"unknown workload {name!r}; expected one of {', '.join(WORKLOADS)}")
    out = []
    for name in names:
        n, d, h, o = WORKLOADS[name]
        for dtype in dtypes:
            point = time_point(
                n, d, h, o, dtype, engines=engines, repeats=repeats, target_s=target_s,
                tutorial=name == "tutorial", gemm=name != "tutorial",
            )
            point["workload"] = name
            out.append(point)
            if progress is not None:
                progress.update(f"{name} {dtype}")
    return out


def run_sweep(hidden_sizes=SWEEP_HIDDEN, batch_sizes=SWEEP_BATCH, dtypes=("float64",), engines=None,
              n_features=SWEEP_FEATURES, n_outputs=SWEEP_OUTPUTS, repeats=5, target_s=0.05, progress=None):
    """Time every (hidden size, batch size, dtype) of the grid; returns a list of
    :func:`time_point` dicts."""
    out = []
    for dtype in dtypes:
        for n in batch_sizes:
            for h in hidden_sizes:
                point = time_point(
                    n, n_features, h, n_outputs, dtype, engines=engines, repeats=repeats, target_s=target_s
                )
                out.append(point)
                if progress is not None:
                    progress.update(f"n={n} h={h} {dtype}")
    return out


# ---------------------------------------------------------------- startup, allocations, threads
_STARTUP_CODE = """
import time
start = time.perf_counter()
import numpy as np
from fastnn import MLP
X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.float64)
y = np.array([[0], [1], [1], [0]], dtype=np.float64)
MLP([3, 4, 1], bias=False, random_state=0).fit(X, y, epochs=10)
print(time.perf_counter() - start)
"""


def _startup_once(env):
    proc = subprocess.run(
        [sys.executable, "-c", _STARTUP_CODE], capture_output=True, text=True, env=env, timeout=600
    )
    if proc.returncode != 0:
        raise OSError(f"startup measurement failed: {proc.stderr.strip().splitlines()[-1:]}")
    return float(proc.stdout.split()[-1])


def startup_times(repeats=3, cold=True):
    """Seconds from ``import fastnn`` (NumPy included) to the end of a first ``MLP.fit``, in fresh
    processes.

    ``warm_s``: median over ``repeats`` processes with the kernel cache in
    place (one run first fills it). ``cold_s`` (with ``cold``): one process
    with an empty ``NUMBA_CACHE_DIR``, so every kernel used is compiled.
    """
    env = dict(os.environ)
    _startup_once(env)
    warm = [_startup_once(env) for _ in range(repeats)]
    result = {"warm_s": statistics.median(warm), "warm_repeats_s": warm}
    if cold:
        with tempfile.TemporaryDirectory() as cache:
            env_cold = dict(env, NUMBA_CACHE_DIR=cache)
            result["cold_s"] = _startup_once(env_cold)
    return result


_ALLOC_CODE = """
import json, tracemalloc
import numpy as np
from numba.core.runtime import rtsys
from fastnn import MLP
n, d, h, o, steps = {n}, {d}, {h}, {o}, {steps}
rng = np.random.default_rng(0)
X = rng.standard_normal((n, d)); Y = rng.random((n, o))
net = MLP([d, h, o], bias=False, random_state=0)
net.fit(X, Y, epochs=2, learning_rate=1e-4)
out = {{}}
for k in (steps, 2 * steps):
    a0 = rtsys.get_allocation_stats()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    net.fit(X, Y, epochs=k, learning_rate=1e-4)
    cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    a1 = rtsys.get_allocation_stats()
    out[k] = {{"python_peak_bytes": peak - base, "kernel_allocs": a1.alloc - a0.alloc}}
print(json.dumps(out))
"""


def allocation_check(n=256, d=64, h=256, o=10, steps=200):
    """Allocations of ``MLP.fit`` over ``steps`` and ``2 * steps`` full-batch steps, in a fresh
    process.

    ``python_peak_bytes`` is tracemalloc's peak (NumPy arrays included) above
    the level before the call, ``kernel_allocs`` the number of allocations
    made by compiled code (Numba's runtime statistics, ``NUMBA_NRT_STATS=1``).
    A steady state that allocates nothing per step gives kernel allocations
    0 and a Python peak that does not grow with the number of steps beyond
    the returned loss history (8 bytes per epoch).
    """
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    code = _ALLOC_CODE.format(n=n, d=d, h=h, o=o, steps=steps)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise OSError(f"allocation measurement failed: {proc.stderr.strip().splitlines()[-1:]}")
    raw = json.loads(proc.stdout.strip().splitlines()[-1])
    k1, k2 = steps, 2 * steps
    a, b = raw[str(k1)], raw[str(k2)]
    extra = b["python_peak_bytes"] - a["python_peak_bytes"]
    return {
        "shape": [n, d, h, o],
        "steps": [k1, k2],
        "python_peak_bytes": [a["python_peak_bytes"], b["python_peak_bytes"]],
        "kernel_allocs": [a["kernel_allocs"], b["kernel_allocs"]],
        "python_bytes_per_extra_step": extra / (k2 - k1),
    }


def thread_info():
    """Thread settings in effect: Numba's threads and layer, BLAS libraries and their threads."""
    import numba

    info = {
        "cpu_count": os.cpu_count(),
        "numba_num_threads": numba.config.NUMBA_NUM_THREADS,
        "env": {k: os.environ.get(k) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                             "OPENBLAS_CORETYPE", "MKL_NUM_THREADS") if os.environ.get(k)},
    }
    if installed("threadpoolctl"):
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: lib.get(k) for k in ("internal_api", "prefix", "version", "architecture", "num_threads",
                                      "threading_layer")}
            for lib in threadpool_info()
        ]
    return info


def thread_check(workloads=("B", "C"), dtype="float64", repeats=3, target_s=0.05):
    """fastnn's step time on the named workloads with BLAS limited to 1 thread and with all of them.

    Uses ``threadpoolctl.threadpool_limits`` (which also governs the BLAS
    that the kernels call). Returns ``{workload: {"1": s, "all": s}}``.
    """
    if not installed("threadpoolctl"):
        return {}
    from threadpoolctl import threadpool_limits

    out = {}
    for name in workloads:
        n, d, h, o = WORKLOADS[name]
        X, Y, W1, W2 = make_problem(n, d, h, o, dtype)
        run = _fastnn_engine(X, Y, W1, W2, LEARNING_RATE)
        row = {}
        _settle()
        with threadpool_limits(limits=1, user_api="blas"):
            row["1"] = measure(run, repeats=repeats, target_s=target_s)[0]
        _settle()
        row["all"] = measure(run, repeats=repeats, target_s=target_s)[0]
        out[name] = row
    return out


def thread_handoff(rounds=20000, size=7510, repeats=3):
    """How fast two threads hand work to each other, as the parallel twin's do.

    Two threads take turns on an atomic counter (``train.ping_pong``), each
    turn adding 1 to every element of one shared float64 buffer. Returns
    seconds per round (one turn of each thread), medians of ``repeats``:
    ``round_trip_s`` with an empty buffer, ``exchange_s`` with ``size``
    elements (7,510: the parameters of scikit-learn's default network on
    digits, about the data each thread of a digits step reads from the
    other), and ``local_s`` for the same two turns on one thread. The gap
    between the last two is the price of moving the buffer between the
    cores. On the development machine: 0.06-0.10 us and 1.8-3.3 us when the
    host ran its two virtual CPUs near each other, 0.33-0.36 us and
    6.8-8.4 us in spells when it ran them far apart. Empty under
    ``NUMBA_DISABLE_JIT=1`` (the turns would hold the GIL) and on one CPU.
    """
    import threading

    import numba

    from fastnn._kernels.train import SYNC_SIZE, ping_pong

    if numba.config.DISABLE_JIT or (os.cpu_count() or 1) < 2:
        return {}
    rounds = int(rounds)

    def pair(buf):
        sync = np.zeros(SYNC_SIZE, dtype=np.int64)
        other = threading.Thread(target=ping_pong, args=(sync, 1, 2, rounds, buf))
        other.start()  # it waits for the first turn, taken below
        start = time.perf_counter()
        ping_pong(sync, 0, 2, rounds, buf)
        other.join()
        return (time.perf_counter() - start) / rounds

    def alone(buf):
        sync = np.zeros(SYNC_SIZE, dtype=np.int64)
        start = time.perf_counter()
        ping_pong(sync, 0, 1, 2 * rounds, buf)
        return (time.perf_counter() - start) / rounds

    empty, full = np.zeros(0), np.zeros(int(size))
    ping_pong(np.zeros(SYNC_SIZE, dtype=np.int64), 0, 1, 1, full)  # load or compile
    _settle()  # BLAS threads of earlier measurements spin for a while, holding a core
    out = {"rounds": rounds, "size": int(size)}
    for key, run, buf in (("round_trip_s", pair, empty), ("exchange_s", pair, full),
                          ("local_s", alone, full)):
        out[key] = statistics.median(run(buf) for _ in range(repeats))
    return out


# ---------------------------------------------------------------- machine, thread scaling
def cpu_model():
    """The CPU's model name, or None when the system does not say.

    Read from ``/proc/cpuinfo`` ("model name"; "Processor" or "cpu model" on
    some ARM and MIPS kernels), else ``platform.processor()``, else ``lscpu``
    ("Model name") or, on macOS, ``sysctl machdep.cpu.brand_string``.
    """
    try:
        with open("/proc/cpuinfo", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("model name", "processor", "cpu model") and not value.strip().isdigit() \
                        and value.strip():
                    return value.strip()
    except OSError:
        pass
    name = (platform.processor() or "").strip()
    if name and name not in (platform.machine(), "unknown"):
        return name
    for command, key in ((["lscpu"], "model name"), (["sysctl", "-n", "machdep.cpu.brand_string"], None)):
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
            if key is None and line.strip():
                return line.strip()
            label, _, value = line.partition(":")
            if key is not None and label.strip().lower() == key and value.strip():
                return value.strip()
    return name or None


def _physical_cores():
    """Distinct (physical id, core id) pairs of ``/proc/cpuinfo``, or None."""
    try:
        with open("/proc/cpuinfo", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    cores = set()
    for block in text.split("\n\n"):
        fields = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in block.splitlines()))
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return len(cores) or None


# What OpenBLAS's AVX-512 kernels (SkylakeX and its successors) need of the CPU
AVX512_FLAGS = frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})
OPENBLAS_AVX512_CORES = frozenset({"skylakex", "cooperlake", "sapphirerapids"})


def cpu_flags():
    """The CPU's feature flags (``/proc/cpuinfo``'s "flags"), an empty set where the system does not say."""
    try:
        with open("/proc/cpuinfo", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def blas_note(machine):
    """A line for a report whose OpenBLAS took kernels without AVX-512 on a CPU that has it, or None.

    OpenBLAS chooses its kernels by the CPU model, unless ``OPENBLAS_CORETYPE``
    names them (read when the library loads), and falls back to older ones
    for a model it does not know. Its Haswell kernels (AVX2) on an AVX-512
    CPU leave speed unused: on the 2-core Zen 5 development machine, whose
    environment sets ``OPENBLAS_CORETYPE=Haswell``, SkylakeX's kernels made a
    1024 x 1024 product 44% (float64) and 29% (float32) faster on one
    thread, and a digits fit of fastnn 1.8x faster. fastnn never sets the
    variable itself: it would change every OpenBLAS of the process, those of
    its children, and those of the engines it is compared with.
    """
    if not AVX512_FLAGS <= set(machine.get("cpu_flags") or ()):
        return None
    slow = sorted({str(p.get("architecture")) for p in machine.get("thread_pools") or []
                   if p.get("internal_api") == "openblas" and p.get("architecture")
                   and str(p["architecture"]).lower() not in OPENBLAS_AVX512_CORES})  # fmt: skip
    if not slow:
        return None
    chosen = machine.get("openblas_coretype")
    why = f"OPENBLAS_CORETYPE={chosen} in the environment" if chosen else "OpenBLAS does not know this CPU model"
    return (f"note: this CPU has AVX-512, but OpenBLAS runs its {' and '.join(slow)} kernels ({why}); "
            "OPENBLAS_CORETYPE=SkylakeX, set before Python starts, gives it its AVX-512 kernels")


def few_rows_line(machine):
    """The report's line on which products of a few rows fastnn makes with its own loops
    rather than BLAS's, by the kernel set of the BLAS (``machine["blas_architecture"]``;
    see ``fastnn._kernels.few_rows.loop_rows``)."""
    from fastnn._kernels import few_rows as fr

    wide = f"up to {fr.FEW_ROWS} rows through layers of {fr.FEW_COLS} units and {fr.FEW_SIZE:,} weights or more"
    if machine.get("blas_architecture") in fr.PACKING_KERNELS:
        where = (f"{wide}, up to {fr.PACKING_ROWS} through the other layers of {fr.NARROW_COLS} units or more "
                 "(this BLAS packs even small products)")
    else:
        where = f"{wide}; the weight gradient of up to {fr.SMALL_TN_ROWS} rows through {fr.FEW_COLS} units or more"
    return f"few-rows loops (batches and predictions of a few rows): {where}"


def blocked_line(machine):
    """The report's line on which layers take fastnn's register-blocked products
    (``fastnn._kernels.blocked.takes_blocked``), by the kernel set of the BLAS and
    whether Numba compiles for 512-bit vectors here (``machine["wide_vectors"]``)."""
    from fastnn._kernels import blocked as bl
    from fastnn._kernels import few_rows as fr

    if not machine.get("wide_vectors"):
        return "register-blocked products: not taken (Numba does not compile for 512-bit vectors here)"
    if machine.get("blas_architecture") not in fr.PACKING_KERNELS:
        return "register-blocked products: not taken (this BLAS has kernels for 512-bit vectors)"
    return (f"register-blocked products (512-bit, any number of rows, in place of BLAS and the few-rows loops): "
            f"layers of {bl.MIN_UNITS} units or more ({bl.MIN_UNITS_32} in float32), the wide ones among them "
            f"fed by {bl.WIDE_MAX_FAN_IN} inputs or fewer")


def thread_pools():
    """The thread pools loaded in this process, as threadpoolctl lists them.

    One dict per library: ``user_api`` ("blas" or "openmp"),
    ``internal_api`` (openblas, mkl, blis, openmp...), ``version``,
    ``architecture`` (the kernel set the library chose), ``num_threads``,
    ``threading_layer`` and ``filename`` (the library file's base name; the
    path is left out). SciPy's BLAS, which the kernels call, is loaded first
    so that it is listed. Empty without threadpoolctl.
    """
    if not installed("threadpoolctl"):
        return []
    try:
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError:  # pragma: no cover
        pass
    from threadpoolctl import threadpool_info

    out = []
    for lib in threadpool_info():
        entry = {k: lib.get(k) for k in ("user_api", "internal_api", "version", "architecture", "num_threads",
                                          "threading_layer")}
        entry["filename"] = os.path.basename(lib.get("filepath") or "") or None
        out.append(entry)
    return out


def machine_info():
    """What the report's header says of the machine: CPU model, CPU counts, Python, NumPy and the
    thread pools (:func:`thread_pools`)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {
        "platform": platform.machine() + " " + platform.system(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "physical_cores": _physical_cores(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "thread_pools": thread_pools(),
        "cpu_flags": sorted(cpu_flags() & AVX512_FLAGS),  # (the ones blas_note looks at)
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE") or None,
        "blas_architecture": _threads.blas_architecture(),  # (what few_rows_line reports on)
        "wide_vectors": _wide_vectors(),  # (and blocked_line)
    }


SCALING_ENGINES = ("fastnn", "torch")


def scaling_thread_counts(cpu_count=None):
    """Thread counts of the scaling section: the powers of two below the CPU count, and the CPU count
    (``os.cpu_count()``): 1, 2 on two CPUs; 1, 2, 4, 8, 12 on twelve."""
    n = max(1, int(cpu_count or os.cpu_count() or 1))
    counts = []
    k = 1
    while k < n:
        counts.append(k)
        k *= 2
    return counts + [n]


def thread_scaling(workloads=("B",), dtype="float64", engines=None, counts=None, repeats=3, target_s=0.05,
                   shapes=None):
    """Step time of named workloads with 1, 2, ... threads, fastnn and PyTorch side by side.

    "k threads" means, for the duration of each measurement, Numba's threads
    (``numba.set_num_threads``, capped at ``NUMBA_NUM_THREADS``), every
    BLAS and OpenMP pool (``threadpoolctl.threadpool_limits``) and PyTorch's
    intra-op threads (``torch.set_num_threads``) limited to ``k``; all three
    are restored afterwards. Each count times every engine in turn (with
    :func:`_settle` before each), on the same data and initial weights.

    Parameters
    ----------
    workloads : sequence of str
        Names of ``shapes`` (by default :data:`WORKLOADS`, without the tutorial).
    dtype : {"float64", "float32"}
    engines : sequence of str or None
        Engines of :data:`ENGINES` (default: the installed ones of
        :data:`SCALING_ENGINES`).
    counts : sequence of int or None
        Thread counts (default :func:`scaling_thread_counts`); 1 is always
        timed, as the base of the speed-ups.
    shapes : dict or None
        ``{name: (n, d, h, o)}`` to look the workloads up in.

    Returns
    -------
    dict
        ``{"dtype", "thread_counts", "engines", "workloads": {name: {"shape":
        [n, d, h, o], "flops_per_step", "rows": [{"threads": k,
        "numba_threads": threads Numba ran with, "engines": {engine:
        {"s_per_step", "speedup"}}}]}}}``, ``speedup`` being the engine's
        time on 1 thread over its time on ``k``.
    """
    import numba

    shapes = {k: v for k, v in WORKLOADS.items() if k != "tutorial"} if shapes is None else dict(shapes)
    dtype = np.dtype(dtype).name
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    for name in workloads:
        if name not in shapes:
            raise ValueError(f"unknown scaling workload {name!r}; expected one of {', '.join(shapes)}")
    if engines is None:
        engines = [e for e in SCALING_ENGINES if e in available_engines()]
    for e in engines:
        if e not in ENGINES:
            raise ValueError(f"unknown engine {e!r}; expected one of {', '.join(ENGINES)}")
    counts = scaling_thread_counts() if counts is None else [int(k) for k in counts]
    if any(k < 1 for k in counts):
        raise ValueError(f"thread counts must be positive, got {counts}")
    counts = sorted(set(counts) | {1})
    out = {"dtype": dtype, "thread_counts": counts, "engines": list(engines), "workloads": {}}
    for name in workloads:
        n, d, h, o = shapes[name]
        X, Y, W1, W2 = make_problem(n, d, h, o, dtype)
        runs = {e: _ENGINE_FACTORIES[e](X, Y, W1, W2, LEARNING_RATE) for e in engines}
        rows = []
        for k in counts:
            row = {"threads": k, "numba_threads": None, "engines": {}}
            with _ThreadLimit(k):
                row["numba_threads"] = numba.get_num_threads()
                for e in engines:
                    _settle()
                    row["engines"][e] = {"s_per_step": measure(runs[e], repeats=repeats, target_s=target_s)[0]}
            rows.append(row)
        for row in rows:
            for e, cell in row["engines"].items():
                cell["speedup"] = rows[0]["engines"][e]["s_per_step"] / cell["s_per_step"]
        out["workloads"][name] = {"shape": [n, d, h, o], "flops_per_step": step_flops(n, d, h, o), "rows": rows}
    return out


# ---------------------------------------------------------------- formatting
def _fmt_time(seconds):
    if seconds is None:
        return "-"
    if seconds >= 1.0:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.3g} us"
    return f"{seconds * 1e9:.3g} ns"


def _table(points, label, engines):
    head = [label, "dtype"] + [f"{e}" for e in engines] + [f"x {e}" for e in engines if e != "reference"]
    torches = [e for e in ("torch", "torch_autograd") if e in engines]
    if torches:
        head += ["fastnn vs torch"]
    if "jax" in engines:
        head += ["fastnn vs jax"]
    head += ["fastnn GFLOP/s"]
    rows = [head]
    for p in points:
        row = [p["label"], p["dtype"]]
        for e in engines:
            row.append(_fmt_time(p["engines"][e]["s_per_step"]) if e in p["engines"] else "-")
        for e in engines:
            if e == "reference":
                continue
            s = p["speedup"].get(e)
            row.append(f"{s:.2f}" if s is not None else "-")
        f = p["engines"].get("fastnn")
        if torches:
            t = [p["engines"][e]["s_per_step"] for e in torches if e in p["engines"]]
            row.append(f"{min(t) / f['s_per_step']:.2f}" if f and t else "-")
        if "jax" in engines:
            j = p["engines"].get("jax")
            row.append(f"{j['s_per_step'] / f['s_per_step']:.2f}" if f and j else "-")
        row.append(f"{f['gflops']:.2f}" if f else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _machine_lines(machine):
    """Header lines naming the CPU and the thread pools (BLAS, OpenMP) of a report's ``machine``."""
    counts = [f"{machine.get('cpu_count')} logical CPUs"]
    if machine.get("usable_cpus") not in (None, machine.get("cpu_count")):
        counts.append(f"{machine['usable_cpus']} usable")
    if machine.get("physical_cores"):
        counts.append(f"{machine['physical_cores']} physical cores")
    lines = [f"CPU: {machine.get('cpu_model') or 'model unknown'} ({', '.join(counts)})"]
    for api in ("blas", "openmp"):
        pools = [p for p in machine.get("thread_pools") or [] if p.get("user_api") == api]
        if not pools:
            continue
        described = []
        for p in pools:
            what = [str(p[k]) for k in ("architecture", "threading_layer") if p.get(k)]
            what.append(f"{p.get('num_threads')} threads")
            if p.get("version") or p.get("internal_api") != api:
                name = " ".join(str(p[k]) for k in ("internal_api", "version") if p.get(k))
                described.append(f"{name} ({', '.join(what)}; {p.get('filename')})")
            else:  # an OpenMP runtime: its file says which one
                described.append(f"{p.get('filename')} ({', '.join(what)})")
        lines.append(f"{'BLAS' if api == 'blas' else 'OpenMP'}: " + "; ".join(described))
    note = blas_note(machine)
    if note:
        lines.append(note)
    lines.append(few_rows_line(machine))
    lines.append(blocked_line(machine))
    return lines


def _wide_vectors():
    from fastnn._kernels.blocked import wide_vectors

    return wide_vectors()


def _scaling_lines(scaling):
    """The "thread scaling" section of a report."""
    if scaling.get("skipped"):
        return [f"thread scaling: skipped ({scaling['skipped']})"]
    engines = scaling["engines"]
    head = ["workload", "threads"]
    for e in engines:
        head += [e, "x1"]
    rows = [head]
    for name, w in scaling["workloads"].items():
        for r in w["rows"]:
            row = [name, str(r["threads"]) + (f" (Numba {r['numba_threads']})"
                                              if r.get("numba_threads") not in (None, r["threads"]) else "")]
            for e in engines:
                cell = r["engines"].get(e)
                row += [_fmt_time(cell["s_per_step"]), f"{cell['speedup']:.2f}"] if cell else ["-", "-"]
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return [
        f"Thread scaling, {scaling['dtype']}: seconds per step with k threads (Numba, BLAS/OpenMP and "
        "PyTorch each limited to k); 'x1' = time on 1 thread / time on k",
    ] + lines


def format_report(report):
    """The text tables of a :func:`run_benchmarks` report."""
    engines = report["engines"]
    out = [
        f"fastnn bench: seconds per training step (median of {report['repeats']}); "
        "'x E' = reference time / time of engine E; "
        "'fastnn vs torch' = faster PyTorch variant's time / fastnn's time"
        + ("; 'fastnn vs jax' = JAX's time / fastnn's" if "jax" in engines else ""),
        f"machine: {report['machine']['platform']}, {report['machine']['cpu_count']} CPUs; "
        f"BLAS threads: {report['threads'].get('blas_threads')}; Numba threads: "
        f"{report['threads'].get('numba_num_threads')}"
        + (f"; all engines limited to {report['thread_limit']} thread(s)" if report.get("thread_limit") else ""),
    ]
    out += _machine_lines(report["machine"]) + [""]
    out += _named_lines(report.get("named") or [], engines)
    out += _sweep_lines(report.get("sweep") or [], engines)
    out += _extras_lines(report)
    sc = report.get("thread_scaling")
    if sc:
        out += [""] + _scaling_lines(sc)
    return "\n".join(out).rstrip() + "\n"


def _named_lines(named, engines):
    """The named workloads' table, and fastnn against the same products alone."""
    if not named:
        return []
    for p in named:
        p["label"] = p["workload"] + (" (per iteration)" if p["workload"] == "tutorial" else "")
    out = ["Named workloads (sigmoid, SSE, no bias, full batch)", _table(named, "workload", engines), ""]
    gem = [p for p in named if "gemm_s" in p]
    if gem:
        out.append("fastnn against the same five matrix products alone (same BLAS calls, same run):")
        for p in gem:
            out.append(
                f"  {p['workload']:>3s} {p['dtype']}: GEMM {_fmt_time(p['gemm_s'])} "
                f"({p['gemm_gflops']:.1f} GFLOP/s), fastnn {_fmt_time(p['engines']['fastnn']['s_per_step'])} "
                f"= {p['fastnn_pct_of_gemm']:.0f}% of GEMM peak"
            )
        out.append("")
    return out


def _sweep_lines(sweep, engines):
    """The sweep's table, and fastnn's smallest speed-up over the reference in it."""
    if not sweep:
        return []
    for p in sweep:
        p["label"] = f"n={p['n']} h={p['h']}"
    out = [
        f"Sweep (d={sweep[0]['d']}, o={sweep[0]['o']}; n = batch = samples, h = hidden units)",
        _table(sweep, "point", engines),
    ]
    slow = [p for p in sweep if p["speedup"].get("fastnn") is not None and p["speedup"]["fastnn"] < 1]
    worst = min((p["speedup"]["fastnn"] for p in sweep if p["speedup"].get("fastnn")), default=None)
    if worst is not None:
        out.append(f"fastnn slowest speed-up over the reference in the sweep: {worst:.2f}x"
                   + (f" ({len(slow)} point(s) below 1)" if slow else " (never slower)"))
    return out + [""]


def _extras_lines(report):
    """Start-up, allocations, BLAS threads and the threads' hand-off, where measured."""
    out = []
    st = report.get("startup")
    if st:
        line = f"import + first fit in a fresh process: warm cache {st['warm_s']:.3f} s"
        if "cold_s" in st:
            line += f", cold (empty cache) {st['cold_s']:.2f} s"
        out.append(line)
    al = report.get("allocations")
    if al:
        out.append(
            f"allocations, MLP.fit of {al['steps'][0]} and {al['steps'][1]} steps (shape n,d,h,o={al['shape']}): "
            f"compiled code {al['kernel_allocs'][0]} / {al['kernel_allocs'][1]}, Python peak "
            f"{al['python_peak_bytes'][0]} / {al['python_peak_bytes'][1]} bytes "
            f"({al['python_bytes_per_extra_step']:.1f} bytes per extra step: the returned loss history)"
        )
    for name, row in (report.get("thread_check") or {}).items():
        out.append(f"BLAS threads, workload {name}: 1 thread {_fmt_time(row['1'])}, all "
                   f"{_fmt_time(row['all'])} ({row['1'] / row['all']:.2f}x)")
    ho = report.get("handoff")
    if ho:
        out.append(
            f"hand-off between two threads: round trip {_fmt_time(ho['round_trip_s'])}; "
            f"{ho['size'] * 8 / 1000:.0f} KB updated by each in turn {_fmt_time(ho['exchange_s'])} "
            f"a round ({_fmt_time(ho['local_s'])} on one thread)"
        )
    return out


def plot_report(report, path):
    """Log-log plot of seconds per step against hidden size, one line per engine
    (the sweep's largest batch size, first dtype)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = report.get("sweep") or []
    if not sweep:
        raise ValueError("--plot needs a sweep (nothing to plot)")
    dtype = sweep[0]["dtype"]
    batches = sorted({p["n"] for p in sweep})
    fig, axes = plt.subplots(1, len(batches), figsize=(4.5 * len(batches), 4), squeeze=False, sharey=False)
    for ax, n in zip(axes[0], batches):
        pts = sorted((p for p in sweep if p["n"] == n and p["dtype"] == dtype), key=lambda p: p["h"])
        for e in report["engines"]:
            xs = [p["h"] for p in pts if e in p["engines"]]
            ys = [p["engines"][e]["s_per_step"] for p in pts if e in p["engines"]]
            if xs:
                ax.plot(xs, ys, marker="o", label=e)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("hidden units")
        ax.set_title(f"batch {n}, {dtype}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("seconds per training step")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _start_xla(n):
    """Start JAX's CPU backend with ``n`` CPUs: XLA sizes its thread pool by the
    CPUs the process may run on, and its threads keep the mask they were
    started with. The process's own mask is given back at once. (XLA_FLAGS'
    ``--xla_cpu_multi_thread_eigen=false`` left C's step on both cores of the
    development machine: 33 ms a step with 65 ms of CPU time; this way 67 ms
    with 67 ms.) No effect once JAX has started its backend, or where the
    platform cannot set a mask."""
    if not hasattr(os, "sched_setaffinity"):  # pragma: no cover - not Linux
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) <= n:
        return
    os.sched_setaffinity(0, cpus[:n])
    try:
        import jax

        jax.devices("cpu")
    finally:
        os.sched_setaffinity(0, cpus)


class _ThreadLimit:
    """Limit BLAS/OpenMP pools (threadpoolctl), Numba's and PyTorch's intra-op threads to ``n``
    (and with ``xla``, JAX's XLA threads, when it has not started yet: `_start_xla`); no-op for
    None."""

    def __init__(self, n, xla=False):
        self.n = n
        self.xla = xla
        self.ctl = None
        self.torch_threads = None
        self.numba_threads = None

    def __enter__(self):
        if self.n is None:
            return self
        if self.xla and installed("jax"):
            _start_xla(self.n)
        if not installed("threadpoolctl"):
            raise ValueError("--threads needs threadpoolctl installed")
        # fastnn's own kernel threads (the parallel training twin), first: the first
        # get_num_threads of a process starts Numba's threading layer, and its OpenMP
        # layer then sets the process's OpenMP thread count (PyTorch's too) to Numba's
        import numba

        self.numba_threads = numba.get_num_threads()
        numba.set_num_threads(max(1, min(self.n, numba.config.NUMBA_NUM_THREADS)))
        if installed("torch"):
            import torch

            self.torch_threads = torch.get_num_threads()
            torch.set_num_threads(self.n)
        from threadpoolctl import threadpool_limits

        try:  # load the BLAS that the kernels call (SciPy's) now, so that the limit reaches it
            import scipy.linalg.cython_blas  # noqa: F401
        except ImportError:  # pragma: no cover
            pass
        self.ctl = threadpool_limits(limits=self.n)
        return self

    def __exit__(self, *exc):
        if self.ctl is not None:
            self.ctl.restore_original_limits()
            self.ctl = None
        if self.numba_threads is not None:
            import numba

            numba.set_num_threads(self.numba_threads)
            self.numba_threads = None
        if self.torch_threads is not None:
            import torch

            torch.set_num_threads(self.torch_threads)
            self.torch_threads = None
        return False


def run_benchmarks(quick=False, dtypes=("float64", "float32"), engines=None, named=None, sweep=True,
                   startup=True, allocations=True, threads=True, repeats=None, progress=True,
                   thread_limit=None, scaling=None, scaling_threads=None):
    """Everything ``fastnn bench`` measures, as one JSON-serialisable dict.

    ``thread_limit`` (int or None) limits every engine's thread pools (BLAS
    libraries and OpenMP through threadpoolctl, PyTorch through
    ``torch.set_num_threads``, XLA's when ``jax`` is among ``engines``) for
    the timings, so that engines compare at equal thread counts.

    ``scaling`` names the workloads of the thread scaling section
    (:func:`thread_scaling`, first dtype, fastnn and PyTorch where among
    ``engines``); None means B with ``quick``, else A, B and C, when
    ``threads`` is true, and none otherwise. ``scaling_threads`` are its
    thread counts (default :func:`scaling_thread_counts`). With
    ``thread_limit`` the section is skipped and says so.
    """
    engines = available_engines() if engines is None else list(engines)
    repeats = repeats if repeats is not None else (3 if quick else 5)
    target = 0.02 if quick else 0.05
    hidden = QUICK_HIDDEN if quick else SWEEP_HIDDEN
    batch = QUICK_BATCH if quick else SWEEP_BATCH
    named = list(WORKLOADS) if named is None else list(named)
    total = len(named) * len(dtypes) + (len(hidden) * len(batch) * len(dtypes) if sweep else 0)
    bar = _Progress(total, enabled=progress)
    if thread_limit is not None and installed("torch"):
        import torch  # noqa: F401 - loaded first, so that threadpoolctl sees its OpenMP runtime
    limit = _ThreadLimit(thread_limit, xla="jax" in engines)
    try:
        limit.__enter__()
        report = {
            "thread_limit": thread_limit,
            "quick": quick,
            "repeats": repeats,
            "engines": engines,
            "machine": None,  # after the timings: the thread pools the engines loaded are listed too
            "named": run_named(named, dtypes, engines, repeats, target, bar) if named else [],
            "sweep": run_sweep(hidden, batch, dtypes, engines, repeats=repeats, target_s=target, progress=bar)
            if sweep else [],
        }
        info = thread_info()  # after the kernels ran: the BLAS they load is listed too
        blas = [lib.get("num_threads") for lib in info.get("blas", [])]
        info["blas_threads"] = blas[0] if len(set(blas)) == 1 else blas
        report["threads"] = info
        limit.__exit__(None, None, None)
        report["machine"] = machine_info()  # each pool's own thread count, outside the limit
        scaled = _scaling_section(quick, dtypes, engines, threads, thread_limit, scaling, scaling_threads,
                                  repeats, target)
        if scaled is not None:
            report["thread_scaling"] = scaled
        if threads:
            report["thread_check"] = thread_check(("B",) if quick else ("B", "C"), repeats=repeats, target_s=target)
            report["handoff"] = thread_handoff(rounds=2000 if quick else 20000, repeats=repeats)
        if startup:
            report["startup"] = startup_times(repeats=1 if quick else 3, cold=not quick)
        if allocations:
            report["allocations"] = allocation_check(steps=50 if quick else 200)
    finally:
        limit.__exit__(None, None, None)
        bar.close()
    return report


def _scaling_section(quick, dtypes, engines, threads, thread_limit, scaling, counts, repeats, target):
    """:func:`thread_scaling` as :func:`run_benchmarks` runs it, or a skip note, or None (not asked)."""
    if scaling is None:
        scaling = (["B"] if quick else ["A", "B", "C"]) if threads else []
    if not scaling:
        return None
    if thread_limit is not None:
        return {"skipped": f"every engine is limited to {thread_limit} thread(s) by --threads"}
    chosen = [e for e in SCALING_ENGINES if e in engines]
    if not chosen:
        return {"skipped": f"none of the engines {', '.join(SCALING_ENGINES)} is selected"}
    return thread_scaling(scaling, dtypes[0], chosen, counts, repeats=repeats, target_s=target)


# ---------------------------------------------------------------- CLI
def configure_parser(parser):
    """Arguments of ``fastnn bench``."""
    from fastnn.cli import positive_int

    parser.add_argument("--quick", action="store_true", help="small grid and few repeats (under a minute)")
    parser.add_argument("--dtype", choices=("float64", "float32", "both"), default="both",
                        help="precision(s) to time (both)")
    parser.add_argument("--repeats", type=positive_int, default=None, help="timed repeats per point (5; quick: 3)")
    parser.add_argument("--workloads", default=None,
                        help=f"comma-separated named workloads ({','.join(WORKLOADS)}), or 'none'")
    parser.add_argument("--engines", default=None, help=f"comma-separated engines (installed ones of {','.join(ENGINES)})")
    parser.add_argument("--no-sweep", action="store_true", help="skip the hidden x batch sweep")
    parser.add_argument("--no-extras", action="store_true",
                        help="skip the startup, allocation and thread measurements")
    parser.add_argument("--json", metavar="PATH", default=None, help="write all results to PATH as JSON")
    parser.add_argument("--plot", metavar="PATH", default=None, help="write a PNG plot of the sweep to PATH")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="limit every engine's BLAS/OpenMP/PyTorch threads to N for the timings "
                             "(default: each library's own setting)")
    parser.add_argument("--scaling", metavar="WORKLOADS", default=None,
                        help="comma-separated workloads (A,B,C) of the thread scaling section, or 'none' "
                             "(default: B with --quick, else A,B,C; none with --no-extras)")
    parser.add_argument("--scaling-threads", metavar="COUNTS", default=None,
                        help="comma-separated thread counts of the scaling section (default: powers of two "
                             "below the CPU count, and the CPU count)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--sklearn", action="store_true",
                        help="also compare fastnn.sklearn's estimators with scikit-learn's (fit time and score "
                        "on digits, breast_cancer, make_regression, make_classification per solver), then "
                        "fastnn's MLPClassifier with skorch training the same PyTorch network (needs the skorch "
                        "extra)")


def _split(text, allowed, what):
    if text is None:
        return None
    if text.strip().lower() == "none":
        return []
    items = [t.strip() for t in text.split(",") if t.strip()]
    for t in items:
        if t not in allowed:
            raise ValueError(f"unknown {what} {t!r}; expected one of {', '.join(allowed)}")
    return items


def _thread_counts(text):
    """``--scaling-threads``: comma-separated positive integers, or None."""
    if text is None:
        return None
    counts = []
    for item in text.split(","):
        try:
            k = int(item.strip())
        except ValueError:
            k = 0
        if k < 1:
            raise ValueError(f"--scaling-threads expects comma-separated positive integers, got {text!r}")
        counts.append(k)
    return counts


def _sklearn_section(quick, dtypes, repeats, thread_limit):
    """Run and print fastnn.sklearn's comparison with scikit-learn; returns its rows."""
    try:
        from fastnn.sklearn import format_sklearn_comparison, sklearn_comparison
    except ImportError as exc:
        raise ValueError(f"--sklearn needs scikit-learn installed ({exc})") from None
    if thread_limit is not None:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(thread_limit)
    else:
        limit = contextlib.nullcontext()
    with limit:
        rows = sklearn_comparison(quick=quick, repeats=repeats, dtypes=dtypes)
    print("\nscikit-learn estimators: fit time and held-out score, fastnn.sklearn against scikit-learn")
    print(format_sklearn_comparison(rows))
    return rows


def _skorch_section(quick, repeats, thread_limit):
    """Run and print the comparison with skorch (:mod:`fastnn.skorch_bench`), or, when PyTorch
    or skorch is missing, one line naming what to install; returns what goes into the JSON."""
    from fastnn import skorch_bench

    missing = skorch_bench.missing_message()
    if missing:
        print(f"\n{missing}")
        return {"skipped": missing}
    threads = None if thread_limit is None else (thread_limit,)
    repeats = repeats if repeats is not None else (2 if quick else 3)
    rows = skorch_bench.skorch_comparison(quick=quick, repeats=repeats, threads=threads)
    environment = skorch_bench.skorch_environment()
    print("\nskorch: fit time (median of {}) and held-out accuracy, fastnn.sklearn.MLPClassifier against "
          "skorch's NeuralNetClassifier training the same PyTorch network; speedup = skorch's time / "
          "fastnn's".format(repeats))
    print(skorch_bench.format_skorch_comparison(rows, environment))
    return {"environment": environment, "rows": rows}


# engine -> the optional module it needs
_ENGINE_MODULES = {"torch": "torch", "torch_autograd": "torch", "jax": "jax", "sklearn": "sklearn"}


def run_cli(args):
    """Run ``fastnn bench``."""
    from fastnn._optional import import_optional, install_hint

    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    named = _split(args.workloads, list(WORKLOADS), "workload")
    engines = _split(args.engines, list(ENGINES), "engine")
    if engines is not None:
        missing = [e for e in engines if e not in available_engines()]
        if missing:
            hints = sorted({install_hint(_ENGINE_MODULES[e]) for e in missing})
            raise ValueError(f"engine(s) not installed: {', '.join(missing)} ({'; '.join(hints)})")
        if "reference" not in engines:
            engines = ["reference"] + engines
    if args.plot and args.no_sweep:
        raise ValueError("--plot needs the sweep (drop --no-sweep)")
    scaling = _split(args.scaling, [w for w in WORKLOADS if w != "tutorial"], "scaling workload")
    scaling_threads = _thread_counts(args.scaling_threads)
    # optional packages, checked before any timing (MissingDependency names the extra)
    if args.plot:
        import_optional("matplotlib", "--plot")
    if args.sklearn:
        import_optional("sklearn", "--sklearn")
    if engines is None:
        left_out = [e for e in ENGINES if e not in available_engines()]
        if left_out:
            hints = sorted({install_hint(_ENGINE_MODULES[e]) for e in left_out})
            print(f"fastnn bench: engine(s) not installed, left out: {', '.join(left_out)} ({'; '.join(hints)})",
                  file=sys.stderr)
    extras = not args.no_extras
    report = run_benchmarks(
        quick=args.quick, dtypes=dtypes, engines=engines, named=named, sweep=not args.no_sweep,
        startup=extras, allocations=extras, threads=extras, repeats=args.repeats,
        progress=not args.no_progress, thread_limit=args.threads, scaling=scaling,
        scaling_threads=scaling_threads,
    )
    print(format_report(report), end="")
    if args.sklearn:
        report["sklearn"] = _sklearn_section(args.quick, dtypes, args.repeats, args.threads)
        report["skorch"] = _skorch_section(args.quick, args.repeats, args.threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"results written to {args.json}")
    if args.plot:
        plot_report(report, args.plot)
        print(f"plot written to {args.plot}")
    return 0
