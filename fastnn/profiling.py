"""Where a training step spends its time: a per-phase profiler (``fastnn profile``).

One full-batch training step of a multilayer perceptron (plain gradient
descent, sum-of-squares loss, no bias by default) is split into the phases
fastnn's fused step is made of, and each phase is timed on its own by calling
the same compiled kernel on the same preallocated buffers:

=====================  ==========  =============================================
phase                  kind        kernel
=====================  ==========  =============================================
``forward_matmul``     matmul      ``Z_l = A_{l-1} @ W_l`` (``dense.product``)
``activation``         elementwise ``A_l = act(Z_l + b_l)`` in place (``bias_activate``)
``loss_delta``         elementwise loss and output delta (``dense.loss_delta``)
``weight_grad``        matmul      ``dW_l = A_{l-1}^T @ D_l`` (``dense.product_tn``)
``bias_grad``          elementwise ``db_l = sum of the rows of D_l`` (only with bias)
``delta_backprop``     matmul      ``D_{l-1} = D_l @ W_l^T`` (``dense.matmul_nt``)
``derivative``         elementwise ``D_{l-1} *= act'(A_{l-1})`` (``multiply_derivative``)
``update``             elementwise ``params -= lr * grads`` (``train.gd_update``)
=====================  ==========  =============================================

The forward products and weight gradients go where the training kernels
send them (``fastnn._runtime.layout_with_loops``): to BLAS, or to fastnn's
own loops (``fastnn._kernels.few_rows``, ``fastnn._kernels.blocked``), and so
does the fused step the phases are checked against.

A hidden layer whose activation keeps its slopes in training (leaky_relu,
elu, softplus, gelu, silu) is profiled as the training kernels run it: its
``activation`` writes ``f(z)`` and ``f'(z)`` (``dense.activate_layer``), its
``delta_backprop`` writes into the activations' block, and its
``derivative`` multiplies by the kept slopes (``activations.times_kept``).

Each timed round runs every phase in order (so that every phase sees the
data the previous one left, as in a real step) timing each, then an
unprofiled fused step, then a step of the NumPy reference; after ``warmup``
untimed rounds, the median over ``steps`` rounds is kept for every figure.
Interleaving keeps the comparisons fair on a machine whose load changes.

Models behind the derived figures
---------------------------------
FLOPs: a matmul of ``(m, k) @ (k, n)`` counts ``2 m k n``. Elementwise phases
count per element: bias add 1; sigmoid 3 (``exp`` counted as one operation,
one add, one divide), tanh 1, relu 1, identity 0; the output delta of SSE 4
plus the output derivative (sigmoid or tanh 3, relu 1, identity 0); the
hidden derivative sigmoid or tanh 3, relu 1, identity 0 (the kernel returns at
once); the update 2 per parameter; a bias gradient 1 per delta element. A kept
activation counts ``f(z)`` and ``f'(z)`` together (``ACTIVATION_FLOPS``) and
moves one more array (its slopes); its derivative is 1 (a product).

Bytes moved: every operand is read once and every output written once, at the
dtype's item size (an in-place operand counts once read and once written);
caches are ignored, so an elementwise phase whose operands stay in cache can
show more than 100% of the measured memory bandwidth.

Machine limits, measured in the same run (before and after the timed rounds,
the best timing kept): the GEMM peak from the product of two square
``gemm_size`` matrices of the dtype, timed both with NumPy's ``np.dot`` and
with fastnn's ``dense.matmul`` kernel (Numba may link another BLAS than
NumPy's), the faster kept; the memory bandwidth
from NumPy ``np.add(a, b, out=c)`` (3 arrays of ``bandwidth_bytes`` bytes,
counted as 3 arrays moved) and ``np.copyto`` (2 arrays moved). Matmul phases are
compared with the GEMM peak, elementwise phases with the bandwidth.

Distortion check: an unprofiled step (the fused kernel
``dense.loss_and_gradients`` followed by ``train.gd_update``) is timed in
every round; the check passes when the sum of the phase medians is within 10% of
its median. For very small networks the per-call overhead of the separate
kernel calls dominates and the check fails -- that failure is the true answer.

Memory: ``parameters``, ``gradients``, ``activations`` (one block per layer
for the batch), ``workspaces`` (the deltas, as many), ``data`` (the batch's
inputs and targets). The peak of a step is measured with :mod:`tracemalloc`,
which sees NumPy's allocations (not BLAS's internal buffers, nor memory the
compiled kernels allocate themselves -- they are written to allocate
nothing): ``step_peak_bytes`` is the resident buffers plus the peak of new
allocations during one fastnn step; the reference allocates its activations,
gradients and temporaries during the step. ``max_rss_bytes`` is the process's
peak resident set (``resource.getrusage``), for context.

The NumPy reference (:mod:`fastnn.reference`) is timed per group: forward
(``reference.forward``), loss (``reference.loss``), backward
(``reference.backward``, including the output delta) and update
(``reference.gd_update`` per weight matrix).

Result keys (:func:`profile`; the ``--json`` file is this dict)
----------------------------------------------------------------
``schema``
    ``"fastnn.profile/1"``.
``config``
    ``layer_sizes``, ``batch_size``, ``dtype``, ``activation``,
    ``output_activation``, ``loss`` (``"sse"``), ``bias``, ``optimizer``
    (``"gd"``), ``learning_rate``, ``steps``, ``warmup``, ``threads`` (the
    BLAS thread limit asked for, ``None`` when none).
``machine``
    ``gemm_gflops`` (GFLOP/s, the best of ``gemm_numpy_gflops`` and
    ``gemm_kernel_gflops``), ``gemm_numpy_gflops``, ``gemm_kernel_gflops``,
    ``gemm_size``, ``bandwidth_gbs`` (GB/s, 1e9
    bytes), ``bandwidth_bytes``, ``blas_threads`` (``None`` if unknown),
    ``cpu_count``.
``phases``
    list, in execution order, of dicts with ``name``, ``kind``
    (``"matmul"``/``"elementwise"``), ``group``
    (``"forward"``/``"loss"``/``"backward"``/``"update"``), ``layer`` (1-based
    layer index or ``None``), ``shape`` (text), ``seconds`` (median),
    ``share`` (of the sum of phases; the shares sum to 1), ``flops``,
    ``gflops`` (GFLOP/s), ``bytes``, ``gbs`` (GB/s), ``limit``
    (``"gemm"``/``"bandwidth"``), ``pct_of_limit`` (percent).
``totals``
    ``seconds`` (sum of phase medians), ``flops``, ``bytes``, ``gflops``.
``groups``
    dict ``forward``/``loss``/``backward``/``update``/``step`` -> dict
    ``fastnn_seconds``, ``reference_seconds``, ``speedup`` (reference over
    fastnn).
``check``
    ``phases_seconds``, ``unprofiled_seconds``, ``relative_difference``
    (signed, relative to the unprofiled step), ``tolerance`` (0.1),
    ``passed``.
``memory``
    ``parameters_bytes``, ``gradients_bytes``, ``activations_bytes``,
    ``workspaces_bytes``, ``data_bytes``, ``buffers_bytes`` (their sum),
    ``step_alloc_peak_bytes``, ``step_peak_bytes``,
    ``reference_step_alloc_peak_bytes``, ``reference_step_peak_bytes``,
    ``max_rss_bytes``, ``method`` (``"tracemalloc"``).
``training_step``
    ``seconds`` (a full-batch step of ``MLP.fit`` on the same shapes, the
    runtime users train with: the median of ``steps`` fits of
    ``steps_per_fit`` steps each, per step), ``runtime`` (``"tiled"`` for
    large products, else ``"twins"``), ``threads`` (the tiled runtime's
    workers, else ``None``), ``steps_per_fit`` (1 for a step of 20 ms or
    more; for shorter steps as many as make a fit of about 20 ms, at most
    100, so that each call's own cost is a few percent at most).
``roofline``
    the least time of a step (:func:`roofline`): ``gemm_seconds`` (the
    ``3 L - 1`` matrix products' FLOPs at ``machine.gemm_gflops``),
    ``memory_seconds`` (the activations of the batch written and read once at
    ``machine.bandwidth_gbs``), ``seconds`` (their sum), ``step_seconds``
    (``training_step.seconds``), ``ratio`` (step over roofline), and what
    was counted: ``matmul_phases``, ``flops``, ``activation_bytes``, ``bytes``,
    ``gemm_gflops``, ``bandwidth_gbs``. Added within schema 1 (a new key);
    see ``docs/profiling-roofline.md``.

Sweep keys (:func:`sweep_hidden`)
---------------------------------
``schema`` (``"fastnn.profile.sweep/1"``), ``config`` (as above, with
``layer_sizes`` the template, and ``hidden_sizes``), ``points`` (list of dicts
``hidden``, ``layer_sizes``, ``seconds`` (median unprofiled step),
``flops``, ``gflops``), ``exponent`` and ``prefactor`` (least-squares fit of
``seconds = prefactor * hidden ** exponent`` on log-log axes; ``None`` with
fewer than two distinct sizes), ``flops_exponent`` (the same fit of the FLOP
counts).
"""

from __future__ import annotations

import math
import os
import statistics
import time
import tracemalloc

import numpy as np

from fastnn import _validation as _v
from fastnn import reference
from fastnn._kernels import codes

SCHEMA = "fastnn.profile/1"
SWEEP_SCHEMA = "fastnn.profile.sweep/1"
TOLERANCE = 0.10

OUTPUT_ACTIVATIONS = ("sigmoid", "logistic", "tanh", "relu", "identity")
# hidden activations whose layers keep f'(z) from the forward pass (codes.KEPT):
# their activation phase writes the values and the slopes, their derivative
# phase multiplies the back-propagated delta by the kept slopes
KEPT_ACTIVATIONS = tuple(name for name, code in codes.ACTIVATION_CODES.items() if code in codes.KEPT)
HIDDEN_ACTIVATIONS = OUTPUT_ACTIVATIONS + KEPT_ACTIVATIONS
DTYPES = ("float32", "float64")

# FLOPs per element of the elementwise passes (exp, expm1, log1p, erf and
# tanh count as one); a kept activation's entry counts f(z) and f'(z)
ACTIVATION_FLOPS = {"identity": 0, "sigmoid": 3, "logistic": 3, "tanh": 1, "relu": 1,
                    "leaky_relu": 2, "elu": 2, "softplus": 7, "gelu": 15, "silu": 8}
DERIVATIVE_FLOPS = {"identity": 0, "sigmoid": 3, "logistic": 3, "tanh": 3, "relu": 1,
                    "leaky_relu": 1, "elu": 1, "softplus": 1, "gelu": 1, "silu": 1}
SSE_DELTA_FLOPS = 4  # r = a - y; total += r*r (2); d = 2*r


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------
# argument checks: thin adapters over fastnn._validation, the one place that
# turns user input into values or clear errors
def _check_int(value, name, minimum=1):
    return _v.check_int(value, name, minimum=minimum)


def _check_layers(layer_sizes):
    return list(_v.check_layer_sizes(layer_sizes))


def _check_choice(value, name, choices):
    return _v.check_choice(value, name, choices)


def _check_dtype(dtype):
    return _v.check_dtype(dtype)


def _check_run(batch_size, dtype, steps, warmup, activation, output_activation, learning_rate):
    # the arguments shared by profile() and sweep_hidden()
    _check_choice(activation, "activation", HIDDEN_ACTIVATIONS)
    _check_choice(output_activation, "output_activation", OUTPUT_ACTIVATIONS)
    return (
        _check_int(batch_size, "batch_size"),
        _check_dtype(dtype),
        _check_int(steps, "steps"),
        _check_int(warmup, "warmup", 0),
        _v.check_float(learning_rate, "learning_rate", minimum=0.0),
    )


# --------------------------------------------------------------------------
# the arithmetic of a step (no timing)
# --------------------------------------------------------------------------
def phase_model(layer_sizes, batch_size, dtype="float64", activation="sigmoid",
                output_activation="sigmoid", bias=False):
    """The phases of one training step with their FLOP and byte counts.

    Parameters
    ----------
    layer_sizes : sequence of int
        Units per layer, inputs first, outputs last.
    batch_size : int
        Rows of the (full) batch.
    dtype : {"float64", "float32"}
    activation, output_activation : str
        Hidden and output activations.
    bias : bool
        Whether the layers have a bias.

    Returns
    -------
    list of dict
        In execution order, with keys ``name``, ``kind``, ``group``,
        ``layer`` (1-based or ``None``), ``shape``, ``flops`` and ``bytes``
        (see the module docstring for the models).
    """
    sizes = _check_layers(layer_sizes)
    nb = _check_int(batch_size, "batch_size")
    s = _check_dtype(dtype).itemsize
    _check_choice(activation, "activation", HIDDEN_ACTIVATIONS)
    _check_choice(output_activation, "output_activation", OUTPUT_ACTIVATIONS)
    n_layers = len(sizes) - 1
    phases = []

    def add(name, kind, group, layer, shape, flops, nbytes):
        phases.append({"name": name, "kind": kind, "group": group, "layer": layer,
                       "shape": shape, "flops": int(flops), "bytes": int(nbytes)})

    for i in range(n_layers):
        k, n = sizes[i], sizes[i + 1]
        add("forward_matmul", "matmul", "forward", i + 1, f"{nb}x{k} @ {k}x{n}",
            2 * nb * k * n, (nb * k + k * n + nb * n) * s)
        act = output_activation if i == n_layers - 1 else activation
        per = ACTIVATION_FLOPS[act] + (1 if bias else 0)
        arrays = 3 if act in KEPT_ACTIVATIONS else 2  # (z read, a written, and f'(z) kept)
        add("activation", "elementwise", "forward", i + 1, f"{nb}x{n}" + (" + bias" if bias else ""),
            per * nb * n, (arrays * nb * n + (n if bias else 0)) * s)
    n_out = sizes[-1]
    add("loss_delta", "elementwise", "loss", None, f"{nb}x{n_out}",
        (SSE_DELTA_FLOPS + DERIVATIVE_FLOPS[output_activation]) * nb * n_out, 3 * nb * n_out * s)
    for i in range(n_layers - 1, -1, -1):
        k, n = sizes[i], sizes[i + 1]
        add("weight_grad", "matmul", "backward", i + 1, f"({nb}x{k})^T @ {nb}x{n}",
            2 * nb * k * n, (nb * k + nb * n + k * n) * s)
        if bias:
            add("bias_grad", "elementwise", "backward", i + 1, f"sum rows {nb}x{n}",
                nb * n, (nb * n + n) * s)
        if i > 0:
            add("delta_backprop", "matmul", "backward", i + 1, f"{nb}x{n} @ ({k}x{n})^T",
                2 * nb * n * k, (nb * n + k * n + nb * k) * s)
            moved = 0 if activation == "identity" else 3 * nb * k * s
            add("derivative", "elementwise", "backward", i, f"{nb}x{k}",
                DERIVATIVE_FLOPS[activation] * nb * k, moved)
    n_params = sum(sizes[i] * sizes[i + 1] + (sizes[i + 1] if bias else 0) for i in range(n_layers))
    add("update", "elementwise", "update", None, f"{n_params} params", 2 * n_params, 3 * n_params * s)
    return phases


def memory_model(layer_sizes, batch_size, dtype="float64", bias=False):
    """Bytes of the buffers a step works on.

    Returns
    -------
    dict
        ``parameters_bytes``, ``gradients_bytes``, ``activations_bytes``,
        ``workspaces_bytes`` (the deltas), ``data_bytes`` (inputs and
        targets of the batch) and ``buffers_bytes`` (their sum).
    """
    sizes = _check_layers(layer_sizes)
    nb = _check_int(batch_size, "batch_size")
    s = _check_dtype(dtype).itemsize
    n_params = sum(sizes[i] * sizes[i + 1] + (sizes[i + 1] if bias else 0) for i in range(len(sizes) - 1))
    per_batch = nb * sum(sizes[1:]) * s
    out = {
        "parameters_bytes": n_params * s,
        "gradients_bytes": n_params * s,
        "activations_bytes": per_batch,
        "workspaces_bytes": per_batch,
        "data_bytes": nb * (sizes[0] + sizes[-1]) * s,
    }
    out["buffers_bytes"] = sum(out.values())
    return out


def roofline(layer_sizes, batch_size, dtype, gemm_gflops, bandwidth_gbs, step_seconds=None):
    """The least time a training step could take: its large products at the GEMM peak, plus one
    write and one read of its activations at the memory bandwidth.

    What is counted: the FLOPs of the step's ``3 L - 1`` matrix products for
    ``L`` layers (``L`` forward products, ``L`` weight gradients and
    ``L - 1`` delta back-propagations; the ``matmul`` phases of
    :func:`phase_model`), at ``gemm_gflops``; and the activations of the
    batch (every hidden and output layer, ``batch_size * sum(layer_sizes[1:])``
    elements of ``dtype``: :func:`memory_model`'s ``activations_bytes``)
    written once and read once, at ``bandwidth_gbs``. The elementwise FLOPs,
    the deltas, the parameters, the gradients and the data are not counted:
    the roofline is a lower bound that a fused step could approach.

    Parameters
    ----------
    layer_sizes : sequence of int
    batch_size : int
    dtype : {"float64", "float32"}
    gemm_gflops, bandwidth_gbs : float
        The machine's GEMM peak (GFLOP/s) and memory bandwidth (GB/s, 1e9 bytes).
    step_seconds : float, optional
        A measured step, compared with the roofline (``ratio``).

    Returns
    -------
    dict
        ``gemm_seconds``, ``memory_seconds``, ``seconds`` (their sum),
        ``step_seconds``, ``ratio`` (``step_seconds / seconds``; ``None``
        without a step), and what was counted: ``matmul_phases`` (``3 L -
        1``), ``flops`` (theirs), ``activation_bytes``, ``bytes`` (twice
        ``activation_bytes``: one write, one read), ``gemm_gflops`` and
        ``bandwidth_gbs`` (the rates used).
    """
    sizes = _check_layers(layer_sizes)
    nb = _check_int(batch_size, "batch_size")
    itemsize = _check_dtype(dtype).itemsize
    gemm_gflops = _v.check_float(gemm_gflops, "gemm_gflops", minimum=0.0)  # > 0
    bandwidth_gbs = _v.check_float(bandwidth_gbs, "bandwidth_gbs", minimum=0.0)
    matmuls = [p for p in phase_model(sizes, nb, dtype) if p["kind"] == "matmul"]
    flops = sum(p["flops"] for p in matmuls)
    activation_bytes = nb * sum(sizes[1:]) * itemsize
    moved = 2 * activation_bytes
    gemm_seconds = flops / (gemm_gflops * 1e9)
    memory_seconds = moved / (bandwidth_gbs * 1e9)
    seconds = gemm_seconds + memory_seconds
    if step_seconds is not None:
        step_seconds = float(step_seconds)
    return {
        "gemm_seconds": gemm_seconds,
        "memory_seconds": memory_seconds,
        "seconds": seconds,
        "step_seconds": step_seconds,
        "ratio": step_seconds / seconds if step_seconds is not None and seconds > 0 else None,
        "matmul_phases": len(matmuls),
        "flops": flops,
        "activation_bytes": activation_bytes,
        "bytes": moved,
        "gemm_gflops": gemm_gflops,
        "bandwidth_gbs": bandwidth_gbs,
    }


def fit_exponent(sizes, values):
    """Least-squares fit of ``values = prefactor * sizes ** exponent`` on log-log axes.

    Parameters
    ----------
    sizes, values : sequence of positive float

    Returns
    -------
    (float, float) or (None, None)
        ``(exponent, prefactor)``; ``(None, None)`` with fewer than two
        distinct sizes.
    """
    x = np.asarray(sizes, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("sizes and values must be 1-d sequences of the same length")
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("sizes and values must be positive to fit on log-log axes")
    if np.unique(x).size < 2:
        return None, None
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(math.exp(intercept))


# --------------------------------------------------------------------------
# machine limits
# --------------------------------------------------------------------------
def _best_time(fn, repeats):
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_gemm_peak(dtype="float64", size=1024, repeats=5, engine="numpy"):
    """GFLOP/s of a product of two square ``size`` matrices (best of ``repeats``).

    ``engine="numpy"`` times NumPy's ``np.dot``; ``engine="kernel"`` times
    fastnn's ``dense.matmul`` kernel, a plain BLAS call through Numba (which
    may link a different BLAS library than NumPy does).
    """
    dt = _check_dtype(dtype)
    size = _check_int(size, "gemm_size")
    _check_choice(engine, "engine", ("numpy", "kernel"))
    rng = np.random.default_rng(0)
    a = rng.random((size, size)).astype(dt)
    b = rng.random((size, size)).astype(dt)
    c = np.empty((size, size), dtype=dt)
    if engine == "kernel":
        from fastnn._kernels.dense import matmul

        def run():
            matmul(a, b, c)
    else:
        def run():
            np.dot(a, b, out=c)
    run()
    t = _best_time(run, repeats)
    return 2.0 * size**3 / t / 1e9


def measure_bandwidth(nbytes=2**26, repeats=5):
    """Memory bandwidth in GB/s: best of NumPy ``add`` (3 arrays) and ``copyto`` (2 arrays)."""
    nbytes = _check_int(nbytes, "bandwidth_bytes", 8)
    n = nbytes // 8
    a = np.ones(n)
    b = np.ones(n)
    c = np.empty(n)
    np.add(a, b, out=c)
    t_add = _best_time(lambda: np.add(a, b, out=c), repeats)
    t_copy = _best_time(lambda: np.copyto(c, a), repeats)
    return max(3 * n * 8 / t_add, 2 * n * 8 / t_copy) / 1e9


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - optional
        return None
    counts = [info.get("num_threads") for info in threadpool_info() if info.get("user_api") == "blas"]
    return max(counts) if counts else None


class _blas_limit:
    """Context manager: BLAS libraries limited to ``threads`` threads (``None``: unchanged)."""

    def __init__(self, threads):
        if threads is not None:
            threads = _check_int(threads, "threads")
            try:
                import threadpoolctl  # noqa: F401
            except ImportError:
                raise ValueError("threads needs threadpoolctl, which is not installed "
                                 "(pip install threadpoolctl)") from None
        self.threads = threads
        self._limiter = None

    def __enter__(self):
        if self.threads is not None:
            from threadpoolctl import threadpool_limits

            # threadpoolctl only sees libraries already loaded: load the BLAS
            # that Numba's np.dot calls (SciPy's) before setting the limit
            import scipy.linalg.cython_blas  # noqa: F401

            self._limiter = threadpool_limits(limits=self.threads, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self._limiter is not None:
            self._limiter.restore_original_limits()
        return False


def _max_rss_bytes():
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    import sys
    return int(rss if sys.platform == "darwin" else rss * 1024)


# --------------------------------------------------------------------------
# the profiled network
# --------------------------------------------------------------------------
class _Network:
    """Flat buffers of one network and batch, laid out as fastnn's MLP lays them out."""

    def __init__(self, sizes, nb, dt, bias, seed, act_code, out_code):
        from fastnn._kernels import layout as kl

        self.sizes, self.nb, self.dt, self.bias = sizes, nb, dt, bias
        n_layers = len(sizes) - 1
        layout, off = kl.build(sizes, [act_code] * (n_layers - 1) + [out_code], bias=bias)
        self.layout = layout
        rng = np.random.default_rng(seed)
        self.params = np.empty(off, dtype=dt)
        for i in range(n_layers):
            fan_in, fan_out, w_off, b_off = layout[i, :4]
            bound = 1.0 / math.sqrt(fan_in)
            self.params[w_off:w_off + fan_in * fan_out] = rng.uniform(-bound, bound, fan_in * fan_out)
            if b_off >= 0:
                self.params[b_off:b_off + fan_out] = rng.uniform(-bound, bound, fan_out)
        self.grads = np.zeros(off, dtype=dt)
        total = nb * sum(sizes[1:])
        self.acts = np.zeros(total, dtype=dt)
        self.deltas = np.zeros(total, dtype=dt)
        self.X = rng.random((nb, sizes[0])).astype(dt)
        self.Y = (rng.random((nb, sizes[-1])) < 0.5).astype(dt)
        self.W, self.gW, self.b, self.gb, self.A, self.D = [], [], [], [], [], []
        a_off = 0
        for i in range(n_layers):
            fan_in, fan_out, w_off, b_off = (int(v) for v in layout[i, :4])
            self.W.append(self.params[w_off:w_off + fan_in * fan_out].reshape(fan_in, fan_out))
            self.gW.append(self.grads[w_off:w_off + fan_in * fan_out].reshape(fan_in, fan_out))
            if b_off >= 0:
                self.b.append(self.params[b_off:b_off + fan_out])
                self.gb.append(self.grads[b_off:b_off + fan_out])
            else:
                self.b.append(self.params[0:0])
                self.gb.append(None)
            self.A.append(self.acts[a_off:a_off + nb * fan_out].reshape(nb, fan_out))
            self.D.append(self.deltas[a_off:a_off + nb * fan_out].reshape(nb, fan_out))
            a_off += nb * fan_out


def _phase_calls(net, act_code, out_code, learning_rate):
    """One zero-argument callable per phase, in the order of :func:`phase_model`."""
    from fastnn._kernels import activations as ka
    from fastnn._kernels import dense as kd
    from fastnn._kernels import train as kt

    n_layers = len(net.sizes) - 1
    kept = act_code in codes.KEPT
    nn, tn = _loops(net)
    calls = []
    off = 0
    for i in range(n_layers):
        prev = net.X if i == 0 else net.A[i - 1]
        calls.append(lambda prev=prev, i=i: kd.product(prev, net.W[i], net.A[i], nn[i]))
        code = out_code if i == n_layers - 1 else act_code
        if kept and i < n_layers - 1:
            # the values into A[i], the slopes into D[i] (free until backward), as in training
            calls.append(lambda i=i, off=off: kd.activate_layer(
                net.A[i], net.b[i], net.bias, act_code, net.deltas, off, net.layout, i, kd.NO_DROPOUT))
        else:
            calls.append(lambda i=i, code=code: ka.bias_activate(net.A[i], net.b[i], net.bias, code))
        off += net.A[i].size
    calls.append(lambda: kd.loss_delta(net.Y, net.A[-1], codes.SSE, out_code, net.D[-1]))
    for i in range(n_layers - 1, -1, -1):
        prev = net.X if i == 0 else net.A[i - 1]
        calls.append(lambda prev=prev, i=i: kd.product_tn(prev, net.D[i], net.gW[i], tn[i]))
        if net.bias:
            calls.append(lambda i=i: np.sum(net.D[i], axis=0, out=net.gb[i]))
        if i > 0 and kept:
            # D[i] @ W[i].T into A[i - 1] (read by weight_grad already), then times the kept slopes
            calls.append(lambda i=i: kd.matmul_nt(net.D[i], net.W[i], net.A[i - 1]))
            calls.append(lambda i=i: ka.times_kept(net.A[i - 1], net.D[i - 1], net.D[i - 1],
                                                   net.params[0:0], False))
        elif i > 0:
            calls.append(lambda i=i: kd.matmul_nt(net.D[i], net.W[i], net.D[i - 1]))
            calls.append(lambda i=i: ka.multiply_derivative(net.D[i - 1], net.A[i - 1], act_code))
    calls.append(lambda: kt.gd_update(net.params, net.grads, learning_rate))
    return calls


def _loops(net):
    """Per layer, the address of the loop its forward product and its weight gradient of the
    batch's rows take in training (0: BLAS's), from the fit's layout (`_looped_layout`)."""
    from fastnn._kernels.few_rows import loop_at
    from fastnn._kernels.layout import NN_ROWS, TN_ROWS

    loop_at = getattr(loop_at, "py_func", loop_at)  # (the kernels' own rule, run as Python)
    looped, nb = _looped_layout(net), net.X.shape[0]
    nn = [int(loop_at(looped, i, nb, NN_ROWS)) for i in range(len(looped))]
    tn = [int(loop_at(looped, i, nb, TN_ROWS)) for i in range(len(looped))]
    return nn, tn


def _looped_layout(net):
    # the layout a fit of the batch's rows runs on (the loops' columns filled)
    from fastnn._runtime import layout_with_loops

    return layout_with_loops(net.layout, net.X.dtype, (net.X.shape[0],))


def _fused_step(net, act_code, out_code, learning_rate):
    from fastnn._kernels import dense as kd
    from fastnn._kernels import train as kt

    looped = _looped_layout(net)

    def step():
        kd.loss_and_gradients(net.X, net.Y, net.params, looped, out_code, codes.SSE,
                              0.0, net.acts, net.deltas, net.grads, kd.extras_of(net.layout))
        kt.gd_update(net.params, net.grads, learning_rate)

    return step




def _alloc_peak(fn):
    """Peak of new NumPy/Python allocations (tracemalloc) while ``fn`` runs."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return max(0, peak - base)


def _reference_groups(net, activation, output_activation, learning_rate):
    """Callables of the reference step by group, sharing state through a dict."""
    weights = [W.copy() for W in net.W]
    biases = [b.copy() for b in net.b] if net.bias else None
    state = {}

    def fwd():
        state["acts"] = reference.forward(net.X, weights, biases, activation, output_activation)

    def loss():
        state["loss"] = reference.loss(net.Y, state["acts"][-1], "sse", output_activation)

    def bwd():
        state["grads"] = reference.backward(state["acts"], net.Y, weights, activation, output_activation,
                                            "sse", net.bias)

    def upd():
        wg, bg = state["grads"]
        for i, g in enumerate(wg):
            reference.gd_update(weights[i], g, learning_rate)
            if biases is not None:
                reference.gd_update(biases[i], bg[i], learning_rate)

    def whole():
        fwd()
        loss()
        bwd()
        upd()
        state.clear()

    return {"forward": fwd, "loss": loss, "backward": bwd, "update": upd}, whole


# untimed pause after NumPy's BLAS calls, so that its spinning workers let go
# of the cores before the kernels' BLAS (SciPy's) runs again
_BLAS_SETTLE_SECONDS = 0.15


def _timed_rounds(calls, fused, ref_calls, steps, warmup):
    """Median seconds of each phase call, of the fused step and of each reference call.

    Every round runs the phases in order, then the fused step, then the
    reference calls in order, timing each; ``warmup`` rounds come first.
    Each engine's turn starts with an untimed pass of its calls, and ends
    with an untimed pause of ``_BLAS_SETTLE_SECONDS``. NumPy's BLAS is
    another library than the one the kernels call, and each library's worker
    threads keep spinning for a while after a call. On 2 cores, with no
    pause, NumPy's slowed the next round's first matrix product 2x and failed
    the distortion check on an otherwise idle machine, and the kernels' made
    the reference's forward pass through 128 x 64-256-10 take 13.9 ms. After
    a pause, the first call wakes its library's threads: that forward pass
    took 0.90 ms, and 0.63 ms after an untimed pass; the kernels' phases
    summed to 0.37 ms against 0.18 ms (the distortion check +39%, then +0.7%).
    """
    clock = time.perf_counter
    settle = _BLAS_SETTLE_SECONDS if ref_calls else 0.0

    def turn(timed, samples):
        for call in timed:
            call()
        for out, call in zip(samples, timed):
            t0 = clock()
            call()
            out.append(clock() - t0)

    phase_samples = [[] for _ in calls]
    fused_samples = [[]]
    ref_samples = [[] for _ in ref_calls]
    for i in range(warmup + steps):
        if i == warmup:  # the warm-up rounds' samples are dropped
            phase_samples, fused_samples = [[] for _ in calls], [[]]
            ref_samples = [[] for _ in ref_calls]
        turn(calls, phase_samples)
        turn([fused], fused_samples)
        time.sleep(settle)
        if ref_calls:
            turn(ref_calls, ref_samples)
            time.sleep(settle)
    median = statistics.median
    return ([median(s) for s in phase_samples], median(fused_samples[0]), [median(s) for s in ref_samples])


def profile(layer_sizes, batch_size, dtype="float64", activation="sigmoid", steps=10, *,
            output_activation="sigmoid", bias=False, learning_rate=1e-4, warmup=2, seed=0,
            gemm_size=1024, bandwidth_bytes=2**26, reference_engine=True, threads=None):
    """Profile one full-batch training step, phase by phase.

    Parameters
    ----------
    layer_sizes : sequence of int
        Units per layer, inputs first, outputs last (at least two).
    batch_size : int
        Rows of the batch; one step is one full-batch gradient step.
    dtype : {"float64", "float32"}
    activation : str
        Hidden activation: ``"sigmoid"`` (``"logistic"``), ``"tanh"``,
        ``"relu"``, ``"identity"``, ``"leaky_relu"``, ``"elu"``,
        ``"softplus"``, ``"gelu"`` or ``"silu"``.
    steps : int
        Timed steps; every figure is the median over them.
    output_activation : str
        Output activation: one of the first five of ``activation``'s choices.
    bias : bool
        Give the layers a bias (adds ``bias_grad`` phases).
    learning_rate : float
        Step size of the gradient-descent update.
    warmup : int
        Untimed steps first (compilation or cache loading, caches).
    seed : int
        Seed of the random weights and data.
    gemm_size : int
        Side of the square ``np.dot`` that measures the GEMM peak.
    bandwidth_bytes : int
        Size of each array of the bandwidth measurement.
    reference_engine : bool
        Also time the NumPy reference (``reference_seconds`` are ``None``
        otherwise).
    threads : int, optional
        Limit the BLAS libraries to this many threads for the whole run
        (needs threadpoolctl); ``None`` leaves them as they are. One thread
        gives steadier figures on a busy machine.

    Returns
    -------
    dict
        The keys listed in the module docstring.
    """
    with _blas_limit(threads):
        return _profile(layer_sizes, batch_size, dtype, activation, steps, output_activation, bias,
                        learning_rate, warmup, seed, gemm_size, bandwidth_bytes, reference_engine, threads)


GROUPS = ("forward", "loss", "backward", "update")  # the phases' groups, in a step's order


def _profile(layer_sizes, batch_size, dtype, activation, steps, output_activation, bias, learning_rate,
             warmup, seed, gemm_size, bandwidth_bytes, reference_engine, threads):
    sizes = _check_layers(layer_sizes)
    nb, dt, steps, warmup, learning_rate = _check_run(
        batch_size, dtype, steps, warmup, activation, output_activation, learning_rate
    )
    bias = bool(bias)
    gemm_size = _check_int(gemm_size, "gemm_size")
    bandwidth_bytes = _check_int(bandwidth_bytes, "bandwidth_bytes", 8)
    config = {
        "layer_sizes": sizes, "batch_size": nb, "dtype": dt.name, "activation": activation,
        "output_activation": output_activation, "loss": "sse", "bias": bias, "optimizer": "gd",
        "learning_rate": float(learning_rate), "steps": steps, "warmup": warmup, "threads": threads,
    }

    act_code = codes.ACTIVATION_CODES[activation]
    out_code = codes.ACTIVATION_CODES[output_activation]
    net = _Network(sizes, nb, dt, bias, seed, act_code, out_code)
    calls = _phase_calls(net, act_code, out_code, learning_rate)
    fused = _fused_step(net, act_code, out_code, learning_rate)
    ref_calls, whole = [], None
    if reference_engine:
        groups_ref, whole = _reference_groups(net, activation, output_activation, learning_rate)
        ref_calls = [groups_ref[g] for g in GROUPS]

    # limits before and after the timed rounds (the best of both: the machine may be shared)
    before = _machine_limits(dt, gemm_size, bandwidth_bytes)
    # each round: a profiled step, an unprofiled fused step and a reference step, so
    # that all three see the same conditions on a busy machine
    seconds, unprofiled, ref_times = _timed_rounds(calls, fused, ref_calls, steps, warmup)
    machine = _machine_limits(dt, gemm_size, bandwidth_bytes, before)
    training = _training_step(sizes, nb, dt, activation, output_activation, bias, learning_rate,
                              steps, seed, threads)
    memory = _step_memory(memory_model(sizes, nb, dt.name, bias), fused, whole)

    phases = _timed_phases(phase_model(sizes, nb, dt.name, activation, output_activation, bias),
                           seconds, machine["gemm_gflops"], machine["bandwidth_gbs"])
    total = sum(seconds)
    flops = sum(p["flops"] for p in phases)
    ref_seconds = dict(zip(GROUPS, ref_times)) if reference_engine else dict.fromkeys(GROUPS)
    rel = (total - unprofiled) / unprofiled if unprofiled > 0 else 0.0
    return {
        "schema": SCHEMA,
        "config": config,
        "machine": machine,
        "phases": phases,
        "totals": {"seconds": total, "flops": flops, "bytes": sum(p["bytes"] for p in phases),
                   "gflops": flops / total / 1e9 if total > 0 else 0.0},
        "groups": _groups(phases, total, ref_seconds, reference_engine),
        "check": {"phases_seconds": total, "unprofiled_seconds": unprofiled, "relative_difference": rel,
                  "tolerance": TOLERANCE, "passed": abs(rel) <= TOLERANCE},
        "memory": memory,
        "training_step": training,
        "roofline": roofline(sizes, nb, dt.name, machine["gemm_gflops"], machine["bandwidth_gbs"],
                             training["seconds"]),
    }


def _machine_limits(dt, gemm_size, bandwidth_bytes, earlier=None):
    """The result's ``machine`` entry: GEMM peaks (NumPy's and the kernel's) and bandwidth,
    measured now, each the better of this and ``earlier`` (a shared machine varies)."""
    numpy_peak = measure_gemm_peak(dt, gemm_size, engine="numpy")
    kernel_peak = measure_gemm_peak(dt, gemm_size, engine="kernel")
    bandwidth = measure_bandwidth(bandwidth_bytes)
    if earlier is not None:
        numpy_peak = max(numpy_peak, earlier["gemm_numpy_gflops"])
        kernel_peak = max(kernel_peak, earlier["gemm_kernel_gflops"])
        bandwidth = max(bandwidth, earlier["bandwidth_gbs"])
    return {
        "gemm_gflops": max(numpy_peak, kernel_peak), "gemm_numpy_gflops": numpy_peak,
        "gemm_kernel_gflops": kernel_peak, "gemm_size": gemm_size, "bandwidth_gbs": bandwidth,
        "bandwidth_bytes": bandwidth_bytes, "blas_threads": _blas_threads(), "cpu_count": os.cpu_count(),
    }


def _step_memory(memory, fused, whole):
    """`memory_model`'s entry with the peaks of one fused step (and of the reference's
    step ``whole``, None when it was not run) seen by tracemalloc."""
    step_alloc = _alloc_peak(fused)
    ref_alloc = None if whole is None else _alloc_peak(whole)
    memory.update({
        "step_alloc_peak_bytes": step_alloc,
        "step_peak_bytes": memory["buffers_bytes"] + step_alloc,
        "reference_step_alloc_peak_bytes": ref_alloc,
        # the reference keeps parameters and data; everything else is allocated in the step
        "reference_step_peak_bytes": (None if ref_alloc is None else
                                      memory["parameters_bytes"] + memory["data_bytes"] + ref_alloc),
        "max_rss_bytes": _max_rss_bytes(),
        "method": "tracemalloc",
    })
    return memory


def _groups(phases, total, ref_seconds, reference_engine):
    """The result's ``groups`` entry: fastnn's and the reference's time per group and step."""
    groups = {}
    for g in GROUPS:
        fast = sum(p["seconds"] for p in phases if p["group"] == g)
        groups[g] = _group(fast, ref_seconds[g])
    groups["step"] = _group(total, sum(ref_seconds.values()) if reference_engine else None)
    return groups


def _training_step(sizes, nb, dt, activation, output_activation, bias, learning_rate, steps, seed,
                   threads):
    """Median seconds of one full-batch step of ``MLP.fit``: the runtime users train with
    (for large layers the tiled kernel on Numba's threads, ``threads`` of them when given)."""
    import numba

    from fastnn import MLP
    from fastnn._driver import tiled_for

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((nb, sizes[0])).astype(dt)
    Y = rng.random((nb, sizes[-1])).astype(dt)
    model = MLP(sizes, activation=activation, output_activation=output_activation, loss="sse",
                bias=bias, dtype=dt.name, random_state=seed)
    before = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        workers = numba.get_num_threads()
        model.fit(X, Y, epochs=1, learning_rate=learning_rate)  # compile or load, warm the caches
        single = []
        for _ in range(3):
            start = time.perf_counter()
            model.fit(X, Y, epochs=1, learning_rate=learning_rate)
            single.append(time.perf_counter() - start)
        # each timed fit runs enough steps for the call's own cost (its
        # checks and setup, about 0.3 ms) to be a few percent at most: one
        # fit of one step of 64-100-10 in batches of 200 took 0.41 ms, a step
        # of a fit of many 0.15 ms
        per_fit = int(min(MAX_STEPS_PER_FIT, max(1, round(FIT_SECONDS / min(single)))))
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model.fit(X, Y, epochs=per_fit, learning_rate=learning_rate)
            times.append((time.perf_counter() - start) / per_fit)
    finally:
        numba.set_num_threads(before)
    tiled = tiled_for(sizes, nb)
    return {"seconds": float(np.median(times)), "runtime": "tiled" if tiled else "twins",
            "threads": workers if tiled else None, "steps_per_fit": per_fit}


FIT_SECONDS = 0.02  # the least time of one timed fit of _training_step
MAX_STEPS_PER_FIT = 100


def _timed_phases(model, seconds, gemm, bandwidth):
    """The phase model's entries with their times, rates and share of the limits."""
    total = sum(seconds)
    phases = []
    for entry, t in zip(model, seconds):
        p = dict(entry)
        p["seconds"] = t
        p["share"] = t / total if total > 0 else 0.0
        p["gflops"] = entry["flops"] / t / 1e9 if t > 0 else 0.0
        p["gbs"] = entry["bytes"] / t / 1e9 if t > 0 else 0.0
        if entry["kind"] == "matmul":
            p["limit"] = "gemm"
            p["pct_of_limit"] = 100.0 * p["gflops"] / gemm
        else:
            p["limit"] = "bandwidth"
            p["pct_of_limit"] = 100.0 * p["gbs"] / bandwidth
        phases.append(p)
    return phases


def _group(fast, ref):
    return {"fastnn_seconds": fast, "reference_seconds": ref,
            "speedup": (ref / fast) if (ref is not None and fast > 0) else None}


# --------------------------------------------------------------------------
# hidden-size sweep
# --------------------------------------------------------------------------
def sweep_hidden(layer_sizes, batch_size, hidden_sizes, dtype="float64", activation="sigmoid", steps=5, *,
                 output_activation="sigmoid", bias=False, learning_rate=1e-4, warmup=1, seed=0, threads=None):
    """Time per training step as every hidden layer takes each size in ``hidden_sizes``.

    ``layer_sizes`` is a template: its first and last sizes (inputs and
    outputs) are kept and each hidden size is replaced; it must have at least
    one hidden layer. Each point is the median of ``steps`` unprofiled fused
    steps; the sizes are timed round-robin (one step of each per round) so
    that a burst of load from other processes does not skew a single size.
    Returns the dict described in the module docstring, with the exponent of
    ``seconds ~ hidden ** exponent`` fitted on log-log axes.
    ``threads`` limits the BLAS threads as in :func:`profile`.
    """
    with _blas_limit(threads):
        return _sweep_hidden(layer_sizes, batch_size, hidden_sizes, dtype, activation, steps,
                             output_activation, bias, learning_rate, warmup, seed, threads)


def _sweep_hidden(layer_sizes, batch_size, hidden_sizes, dtype, activation, steps, output_activation, bias,
                  learning_rate, warmup, seed, threads):
    sizes = _check_layers(layer_sizes)
    if len(sizes) < 3:
        raise ValueError(f"layer_sizes needs a hidden layer to sweep, got {sizes!r}")
    try:
        hidden = [_check_int(h, "every hidden size") for h in hidden_sizes]
    except TypeError:
        raise TypeError(f"hidden_sizes must be a sequence of positive integers, got {hidden_sizes!r}") from None
    if not hidden:
        raise ValueError("hidden_sizes must not be empty")
    nb, dt, steps, warmup, learning_rate = _check_run(
        batch_size, dtype, steps, warmup, activation, output_activation, learning_rate
    )
    act_code = codes.ACTIVATION_CODES[activation]
    out_code = codes.ACTIVATION_CODES[output_activation]
    # all sizes are timed round-robin, one step each per round, so that a burst of
    # load from other processes spreads over the sizes instead of skewing one
    nets, steppers = [], []
    for h in hidden:
        layers = [sizes[0]] + [h] * (len(sizes) - 2) + [sizes[-1]]
        net = _Network(layers, nb, dt, bool(bias), seed, act_code, out_code)
        nets.append(net)
        steppers.append(_fused_step(net, act_code, out_code, learning_rate))
    for _ in range(warmup):
        for step in steppers:
            step()
    samples = [[] for _ in steppers]
    for _ in range(steps):
        for times, step in zip(samples, steppers):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    points = []
    for h, net, times in zip(hidden, nets, samples):
        t = statistics.median(times)
        flops = sum(p["flops"] for p in phase_model(net.sizes, nb, dt.name, activation, output_activation, bias))
        points.append({"hidden": h, "layer_sizes": list(net.sizes), "seconds": t, "flops": flops,
                       "gflops": flops / t / 1e9 if t > 0 else 0.0})
    del nets, steppers
    exponent, prefactor = fit_exponent([p["hidden"] for p in points], [p["seconds"] for p in points])
    flops_exponent, _ = fit_exponent([p["hidden"] for p in points], [p["flops"] for p in points])
    return {
        "schema": SWEEP_SCHEMA,
        "config": {
            "layer_sizes": sizes, "hidden_sizes": hidden, "batch_size": nb, "dtype": dt.name,
            "activation": activation, "output_activation": output_activation, "loss": "sse",
            "bias": bool(bias), "optimizer": "gd", "learning_rate": float(learning_rate),
            "steps": steps, "warmup": warmup, "threads": threads,
        },
        "points": points,
        "exponent": exponent,
        "prefactor": prefactor,
        "flops_exponent": flops_exponent,
    }


def plot_sweep(result, path):
    """Write a log-log PNG of a :func:`sweep_hidden` result (needs matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib, which is not installed (pip install matplotlib)") from None
    h = np.array([p["hidden"] for p in result["points"]], dtype=float)
    t = np.array([p["seconds"] for p in result["points"]], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    try:
        ax.loglog(h, t * 1e3, "o-", label="measured (median step)")
        if result["exponent"] is not None:
            hh = np.geomspace(h.min(), h.max(), 50)
            ax.loglog(hh, result["prefactor"] * hh ** result["exponent"] * 1e3, "--",
                      label=f"fit: t ~ hidden^{result['exponent']:.2f}")
        from matplotlib.ticker import NullFormatter

        ax.set_xticks(h)
        ax.set_xticklabels([str(int(x)) for x in h])
        ax.xaxis.set_minor_formatter(NullFormatter())
        c = result["config"]
        ax.set_xlabel("hidden units per layer")
        ax.set_ylabel("time per training step (ms)")
        ax.set_title(f"fastnn step, batch {c['batch_size']}, {c['dtype']}, {c['activation']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


# --------------------------------------------------------------------------
# text output
# --------------------------------------------------------------------------
def _num(x):
    # 3 decimals from 1 up, 4 significant digits below (tiny networks)
    if x == 0 or abs(x) >= 1:
        return f"{x:.3f}" if abs(x) < 1e5 else f"{x:.0f}"
    return f"{x:.4g}"


def _ms(seconds):
    return "-" if seconds is None else _num(seconds * 1e3)


def _table(header, rows, align):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    def line(cells):
        return "  ".join(str(c).ljust(w) if a == "<" else str(c).rjust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()
    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return out


def _roofline_lines(r, per_fit=1):
    """The roofline block of :func:`format_profile` (``per_fit``: steps per timed fit)."""
    lines = [
        f"roofline of a step: {_ms(r['seconds'])} ms (GEMM part + memory part)",
        f"  GEMM    {_ms(r['gemm_seconds'])} ms: {r['matmul_phases']} matrix products, "
        f"{_num(r['flops'] / 1e6)} MFLOP at {r['gemm_gflops']:.1f} GFLOP/s",
        f"  memory  {_ms(r['memory_seconds'])} ms: the activations ({_num(r['activation_bytes'] / 1e6)} MB) "
        f"written once and read once at {r['bandwidth_gbs']:.1f} GB/s",
    ]
    if r.get("step_seconds") is not None:
        timed = f", fits of {per_fit} steps" if per_fit > 1 else ""
        lines.append(f"training step (MLP.fit{timed}) {_ms(r['step_seconds'])} ms = {r['ratio']:.2f}x the roofline")
    return lines


def format_profile(result):
    """Human-readable report of :func:`profile`'s result (aligned tables with units)."""
    c, m = result["config"], result["machine"]
    layers = "-".join(str(s) for s in c["layer_sizes"])
    lines = [
        f"fastnn profile: layers {layers}, batch {c['batch_size']}, {c['dtype']}, {c['activation']} hidden, "
        f"{c['output_activation']} output, SSE, {'bias' if c['bias'] else 'no bias'}, plain GD; "
        f"median of {c['steps']} steps after {c['warmup']} warm-up",
        f"machine limits measured now: GEMM {m['gemm_gflops']:.1f} GFLOP/s ({m['gemm_size']}x{m['gemm_size']} "
        f"{c['dtype']}: np.dot {m['gemm_numpy_gflops']:.1f}, kernel {m['gemm_kernel_gflops']:.1f}; "
        f"BLAS threads: {m['blas_threads'] or '?'}), memory bandwidth "
        f"{m['bandwidth_gbs']:.1f} GB/s (NumPy add/copy, {m['bandwidth_bytes'] / 1e6:.0f} MB arrays)",
        "",
    ]
    lines += _phase_table(result) + [""]
    if result.get("roofline"):
        per_fit = result.get("training_step", {}).get("steps_per_fit", 1)
        lines += _roofline_lines(result["roofline"], per_fit) + [""]
    grows = []
    for g in GROUPS + ("step",):
        e = result["groups"][g]
        grows.append([g, _ms(e["fastnn_seconds"]), _ms(e["reference_seconds"]),
                      "-" if e["speedup"] is None else f"{e['speedup']:.2f}x"])
    lines += _table(["group", "fastnn ms", "NumPy reference ms", "speed-up"], grows, "<>>>")
    ch = result["check"]
    lines += [
        "",
        f"distortion check: sum of phases {_ms(ch['phases_seconds'])} ms vs unprofiled fused step "
        f"{_ms(ch['unprofiled_seconds'])} ms: {100 * ch['relative_difference']:+.1f}% "
        f"(tolerance {100 * ch['tolerance']:.0f}%) {'PASS' if ch['passed'] else 'FAIL'}",
        "",
    ]
    lines += _memory_table(result["memory"])
    return "\n".join(lines)


def _phase_table(result):
    """The lines of the phases' table, with the total."""
    rows = []
    for p in result["phases"]:
        name = p["name"] + (f" L{p['layer']}" if p["layer"] is not None else "")
        rows.append([name, p["shape"], _ms(p["seconds"]), f"{100 * p['share']:.1f}",
                     _num(p["flops"] / 1e6), _num(p["gflops"]), _num(p["bytes"] / 1e6),
                     _num(p["gbs"]), f"{p['pct_of_limit']:.1f}", "GEMM" if p["limit"] == "gemm" else "BW"])
    t = result["totals"]
    rows.append(["total (sum of phases)", "", _ms(t["seconds"]), "100.0", _num(t["flops"] / 1e6),
                 _num(t["gflops"]), _num(t["bytes"] / 1e6), "", "", ""])
    header = ["phase", "shape", "time ms", "share %", "MFLOP", "GFLOP/s", "MB", "GB/s", "% of limit", "limit"]
    return _table(header, rows, "<<>>>>>>><")


def _memory_table(mem):
    """The lines of the memory table (megabytes)."""
    mrows = [[label, _num(mem[key] / 1e6)] for label, key in (
        ("parameters", "parameters_bytes"), ("gradients", "gradients_bytes"),
        ("activations", "activations_bytes"), ("workspaces (deltas)", "workspaces_bytes"),
        ("data (inputs + targets)", "data_bytes"), ("buffers total", "buffers_bytes"),
        ("new allocations in a fastnn step (peak)", "step_alloc_peak_bytes"),
        ("peak memory of a fastnn step", "step_peak_bytes"),
    )]
    if mem["reference_step_alloc_peak_bytes"] is not None:
        mrows += [["new allocations in a reference step (peak)", _num(mem["reference_step_alloc_peak_bytes"] / 1e6)],
                  ["peak memory of a reference step", _num(mem["reference_step_peak_bytes"] / 1e6)]]
    if mem["max_rss_bytes"] is not None:
        mrows.append(["process peak RSS (whole run)", _num(mem["max_rss_bytes"] / 1e6)])
    return _table(["memory", "MB"], mrows, "<>") + [
        "(step peaks: resident buffers + peak of NumPy allocations seen by tracemalloc)"]


def format_sweep(result):
    """Human-readable report of :func:`sweep_hidden`'s result."""
    c = result["config"]
    lines = [
        f"fastnn profile sweep: hidden sizes {', '.join(str(h) for h in c['hidden_sizes'])}, "
        f"batch {c['batch_size']}, {c['dtype']}, {c['activation']} hidden; median of {c['steps']} unprofiled steps",
        "",
    ]
    rows = [[str(p["hidden"]), "-".join(str(s) for s in p["layer_sizes"]), _ms(p["seconds"]),
             _num(p["flops"] / 1e6), _num(p["gflops"])] for p in result["points"]]
    lines += _table(["hidden", "layers", "ms/step", "MFLOP/step", "GFLOP/s"], rows, "><>>>")
    lines.append("")
    if result["exponent"] is None:
        lines.append("fitted exponent: needs at least two distinct hidden sizes")
    else:
        lines.append(f"fitted exponent (least squares on log-log): time per step ~ hidden^{result['exponent']:.3f}"
                     f"  (FLOPs ~ hidden^{result['flops_exponent']:.3f})")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------
def _int_list(text):
    import argparse

    from fastnn.cli import positive_int

    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return [positive_int(p) for p in parts]


def _layers_arg(text):
    import argparse

    sizes = _int_list(text)
    if len(sizes) < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 comma-separated sizes, got {text!r}")
    return sizes


def configure_parser(parser):
    """Arguments of ``fastnn profile``."""
    from fastnn.cli import positive_int

    parser.add_argument("--layers", type=_layers_arg, default=[784, 4096, 10],
                        help="comma-separated layer sizes, inputs first (784,4096,10)")
    parser.add_argument("--batch", type=positive_int, default=1024, help="batch size (1024)")
    parser.add_argument("--dtype", choices=DTYPES, default="float64", help="float64 (default) or float32")
    parser.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default="sigmoid",
                        help="hidden activation (sigmoid)")
    parser.add_argument("--output-activation", choices=OUTPUT_ACTIVATIONS, default="sigmoid",
                        help="output activation (sigmoid)")
    parser.add_argument("--bias", action="store_true", help="give the layers a bias")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="timed steps, the median is reported (10; 5 per point of a sweep)")
    parser.add_argument("--no-reference", action="store_true", help="do not time the NumPy reference")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="limit BLAS to this many threads (steadier on a busy machine; needs threadpoolctl)")
    parser.add_argument("--gemm-size", type=positive_int, default=1024,
                        help="side of the square np.dot that measures the GEMM peak (1024)")
    parser.add_argument("--bandwidth-mb", type=positive_int, default=64,
                        help="size in MiB of each array of the bandwidth measurement (64)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the result as JSON")
    parser.add_argument("--sweep-hidden", type=_int_list, default=None, metavar="H1,H2,...",
                        help="time a step for each hidden size and fit the growth exponent")
    parser.add_argument("--plot", metavar="PATH", default=None, help="with --sweep-hidden: write a log-log PNG")


def run_cli(args):
    """Run ``fastnn profile``."""
    import json

    if args.plot is not None and args.sweep_hidden is None:
        raise ValueError("--plot needs --sweep-hidden")
    if args.plot is not None:  # before the measurements; MissingDependency names the extra
        from fastnn._optional import import_optional

        import_optional("matplotlib", "--plot")
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        # fail before the measurements, not after
        folder = os.path.dirname(os.path.abspath(path)) if path is not None else None
        if folder is not None and not os.path.isdir(folder):
            raise ValueError(f"{option}: folder {os.path.dirname(path)!r} does not exist")
    if args.sweep_hidden is not None:
        if len(args.layers) < 3:
            raise ValueError("--sweep-hidden needs --layers with a hidden layer, e.g. 784,4096,10")
        result = sweep_hidden(args.layers, args.batch, args.sweep_hidden, args.dtype, args.activation,
                              args.steps or 5, output_activation=args.output_activation, bias=args.bias,
                              threads=args.threads)
        text = format_sweep(result)
    else:
        result = profile(args.layers, args.batch, args.dtype, args.activation, args.steps or 10,
                         output_activation=args.output_activation, bias=args.bias,
                         reference_engine=not args.no_reference, gemm_size=args.gemm_size,
                         bandwidth_bytes=args.bandwidth_mb * 2**20, threads=args.threads)
        text = format_profile(result)
    print(text)
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    if args.plot is not None:
        plot_sweep(result, args.plot)
        print(f"wrote {args.plot}")
    return 0
