"""The two training kernels behind one interface, and the bundles they take.

A fit describes itself to the kernels as three bundles:

- `Model`: the flat parameters, their layout (``fastnn._kernels.layout``),
  the output activation's and the loss's codes;
- `Optimizer`: its code, hyper-parameters (``train.hyper_array``), state,
  step counter, and ``control`` (scikit-learn's stopping rule and
  learning-rate schedule, which both kernels run between epochs);
- `Batches`: the training arrays, the sample weights (empty: every sample
  weighs 1), the batch size, and whether batches follow a given order.

Two trainers run them, with the same `next_chunk` / `run` interface:

- `TiledTrainer`, the tile-streamed kernel (``fastnn._kernels.tiled``): the
  calling thread drives the loop (worker 0) and ``numba.get_num_threads() -
  1`` helper threads take tasks (``NUMBA_NUM_THREADS`` /
  ``numba.set_num_threads`` set how many). Helpers come from one thread pool
  per process (a forked child makes its own), and the caller never waits for
  them to arrive, so a helper that starts late, or after the call is over,
  changes nothing but speed. Each call gets a fresh ``sync`` array: a helper
  of an earlier call that has not yet seen its quit flag cannot take tasks of
  a later one. BLAS runs on one thread in every worker for the duration of a
  call (``blas_single_thread``). Results depend on the layer sizes and the
  batch only, not on the number of threads.
- `TwinTrainer`, the two-shard kernel of small layers, whose serial and
  parallel twins ``fastnn._threads.TwinRunner`` chooses between.

``fastnn._driver`` decides which one a fit takes.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import NamedTuple, Optional

import numpy as np

from fastnn._kernels.bundles import Data, Net, Optim
from fastnn._threads import TwinRunner, blas_architecture, blas_single_thread

_pool = {"pid": None, "executor": None, "size": 0, "lock": threading.Lock()}


class Model(NamedTuple):
    """What the kernels train: ``params`` laid out by ``layout``."""

    params: np.ndarray
    layout: np.ndarray
    layer_sizes: tuple
    output_code: int
    loss_code: int


class Optimizer(NamedTuple):
    """An optimizer as the kernels take it (``control``: None for no stopping rule)."""

    code: int
    hyper: np.ndarray
    state1: np.ndarray
    state2: np.ndarray
    step_count: np.ndarray
    control: Optional[np.ndarray] = None


class Batches(NamedTuple):
    """Training data and how it is cut into batches."""

    X: np.ndarray
    Y: np.ndarray
    weights: np.ndarray
    batch_size: int
    use_order: bool


def worker_count():
    """Threads a call may use: Numba's thread setting (1 when JIT is off)."""
    import numba

    if numba.config.DISABLE_JIT:
        return 1  # as Python, the helpers' waits would hold the GIL
    try:
        return max(1, int(numba.get_num_threads()))
    except Exception:  # pragma: no cover - Numba without threading support
        return 1


def _executor(helpers):
    # the process's helper pool, with room for `helpers` threads
    with _pool["lock"]:
        if _pool["pid"] != os.getpid() or _pool["size"] < helpers:
            _pool["executor"] = concurrent.futures.ThreadPoolExecutor(
                max_workers=helpers, thread_name_prefix="fastnn-worker"
            )
            _pool["pid"] = os.getpid()
            _pool["size"] = helpers
        return _pool["executor"]


def _net(model):
    """The kernels' `Net` of ``model`` (``extras``: None without kept slopes)."""
    from fastnn._kernels.layout import keeps_slopes

    extras = np.int64(1) if keeps_slopes(model.layout) else None
    return Net(model.params, model.layout, np.int64(model.output_code), np.int64(model.loss_code), extras)


def layout_with_loops(layout, dtype, rows, layers=None):
    """``layout`` with the few-rows loops for products of ``rows`` rows (an iterable of row
    counts) through ``layers`` (default: all), on this process's BLAS
    (``fastnn._kernels.few_rows.with_loops``): for the training kernels and for prediction."""
    from fastnn._kernels.blocked import wide_vectors
    from fastnn._kernels.few_rows import with_loops

    if "wide" not in _vectors:
        _vectors["wide"] = wide_vectors()
    return with_loops(layout, dtype, rows, blas_architecture(), layers, wide=_vectors["wide"])


_vectors = {}  # whether Numba compiles for 512-bit vectors (asked once)


def predict_layout(layout, dtype, rows):
    """The layout a prediction of ``rows`` rows takes: `layout_with_loops` for a few rows;
    ``layout`` itself for one row, which the forward pass gives to BLAS's gemv whatever
    the layout says (``fastnn._kernels.dense.product``), so no loop is compiled for it."""
    return layout if rows <= 1 else layout_with_loops(layout, dtype, (rows,))


def _shard_rows(counts, shards_of):
    """Row counts of the shards of batches of ``counts`` rows, each cut into ``shards_of(rows)`` shards."""
    out = set()
    for nb in counts:
        shards = shards_of(nb)
        out.update(((s + 1) * nb) // shards - (s * nb) // shards for s in range(shards))
    return out


def _optim(optimizer):
    """The kernels' `Optim` of ``optimizer`` (without ``control``: zeros, no stopping rule)."""
    from fastnn._kernels.train import CONTROL_SIZE

    control = optimizer.control
    if control is None:
        control = np.zeros(CONTROL_SIZE, dtype=np.float64)
    code, hyper, state1, state2, step_count = optimizer[:5]
    return Optim(np.int64(code), hyper, state1, state2, step_count, control)


def _writable(a):
    """``a``, or a copy when it is read-only (the tiled kernel takes writable arrays only)."""
    return a if a.flags.writeable else a.copy()


class TiledTrainer:
    """Buffers and bundles of the tiled kernel for one fit call.

    Parameters
    ----------
    model : Model
    optimizer : Optimizer
        Its ``control`` (None: none) switches on scikit-learn's stopping
        rule and learning-rate schedule, which the kernel runs after each
        epoch, as the two-shard kernel does.
    batches : Batches
    workspace : dict
        Keeps the buffers for the next fit of the same kind (a model's).
    workers : int or None
        Threads (default: `worker_count`).
    plan : ndarray or None
        The tiling (default: ``tiled.make_plan`` of the shapes; tests pass small tiles).
    shards : int
        With the default plan: > 0 for a plan of that many shards a batch
        (layers too small to share by tiles, see ``fastnn._driver``), 0 for
        layer phases.
    """

    def __init__(self, model, optimizer, batches, workspace=None, workers=None, plan=None, shards=0):
        from fastnn._kernels import tiled

        self._tiled = tiled
        self.workers = worker_count() if workers is None else int(workers)
        self.net = _net(model)
        keep = self.net.extras is not None  # some layer keeps its slopes
        self.X, self.Y = _writable(batches.X), _writable(batches.Y)
        # sample weights (empty: every row weighs 1), in the parameters' dtype
        self.W = _writable(np.ascontiguousarray(batches.weights, dtype=model.params.dtype))
        self.batch_size = int(batches.batch_size)
        self.use_order = bool(batches.use_order)
        self.optim = _optim(optimizer)
        workspace = {} if workspace is None else workspace
        weighted = self.W.size > 0
        tiling = None if plan is None else plan.tobytes()
        key = (self.batch_size, self.use_order, self.workers, weighted, tiling, shards)
        cached = workspace.get("tiled")
        if cached is None or cached[0] != key:
            dtype = model.params.dtype
            work = tiled.workspace(
                model.layer_sizes, self.batch_size, model.params.size, dtype, self.workers,
                self.use_order, plan, keep, weighted, shards,
            )  # fmt: skip
            cached = (key, work)
            workspace["tiled"] = cached
        self.work = cached[1]
        # the few-rows loops, for the products of the blocks of rows this fit's
        # tasks take: blocks of layer phases through the hidden layers (the
        # output layer's products are BLAS's), shards of a plan of shards
        # through every layer
        plan = self.work.plan
        counts = tiled.block_rows(self.batch_size, self.X.shape[0], plan[tiled.P_BLOCK])
        if plan[tiled.P_SHARDS] > 0:
            shards_for = getattr(tiled.shards_for, "py_func", tiled.shards_for)
            rows = _shard_rows(counts, lambda nb: shards_for(plan, nb))
            layers = None
        else:
            rows, layers = counts, range(len(model.layer_sizes) - 2)
        self.net = self.net._replace(layout=layout_with_loops(model.layout, model.params.dtype, rows, layers))

    def next_chunk(self, epochs):
        """Epochs of the next call of `run`: all of them."""
        return epochs

    def run(self, epochs, order, history):
        """Train ``epochs`` epochs (batches in ``order`` when shuffling); returns epochs completed."""
        tiled = self._tiled
        work = self.work._replace(sync=np.zeros(tiled.SYNC_SIZE, dtype=np.int64))
        data = Data(self.X, self.Y, self.W, order, self.use_order, np.int64(self.batch_size))
        args = (self.net, data, self.optim, work, np.int64(epochs), history, work.shard_grads,
                None if work.plan[tiled.P_SHARDS] > 0 else np.int64(1))
        with blas_single_thread():
            helpers = self.workers - 1
            if helpers > 0 and epochs > 0:
                try:
                    pool = _executor(helpers)
                    for w in range(1, self.workers):
                        pool.submit(tiled.run_worker, np.int64(w), *args)
                except RuntimeError:
                    pass  # no thread could start (interpreter shutting down): this one does it all
            return int(tiled.run_worker(np.int64(0), *args))


class TwinTrainer:
    """The two-shard training kernel's twins behind `TiledTrainer`'s interface.

    The arguments are `TiledTrainer`'s, and ``parallel_ok``: whether the
    parallel twin may run (BLAS is on one thread). `next_chunk` lets
    ``TwinRunner`` choose the twin and the length of the next chunk; `used`
    counts the epochs each twin ran.
    """

    def __init__(self, model, optimizer, batches, workspace=None, parallel_ok=False):
        from fastnn._kernels import train as kt
        from fastnn._kernels.tiled import block_rows

        X, Y, weights, batch_size, use_order = batches
        dtype = model.params.dtype
        key = (dtype.str, bool(use_order), tuple(model.layer_sizes), batch_size, X.shape[0])
        self.runner = TwinRunner(kt.train, kt.train_parallel, key, parallel_ok)
        workspace = {} if workspace is None else workspace
        shape = (batch_size, bool(parallel_ok), bool(use_order), weights.size > 0)
        buffers = workspace.get("shards")
        if buffers is None or buffers[0] != shape:
            work = kt.shard_buffers(batch_size, model.layer_sizes, model.params.size, dtype, *shape[1:])
            buffers = (shape, work)
            workspace["shards"] = buffers
        self.net, self.optim, self.work = _net(model), _optim(optimizer), buffers[1]
        # the few-rows loops, for the shards of this fit's batches (of which
        # only batches of fewer than 2 * train.MIN_SHARD_ROWS rows have one
        # shard, and so can have few rows); a batch is one block
        counts = block_rows(batch_size, X.shape[0], batch_size)
        rows = _shard_rows(counts, kt.shards_of)
        self.net = self.net._replace(layout=layout_with_loops(model.layout, dtype, rows))
        self.data = Data(X, Y, weights, None, bool(use_order), np.int64(batch_size))
        self._parallel = False

    @property
    def used(self):
        """Epochs run by each twin: ``{"parallel": ..., "serial": ...}``."""
        return {"parallel": self.runner.used[True], "serial": self.runner.used[False]}

    def next_chunk(self, epochs):
        """Epochs of the next call of `run` (at most ``epochs``), and which twin runs it."""
        self._parallel, count = self.runner.plan(epochs)
        return count

    def run(self, epochs, order, history):
        """Train ``epochs`` epochs with the twin `next_chunk` chose; returns epochs completed."""
        args = (self.net, self.data._replace(order=order), self.optim, self.work, epochs, history)
        return self.runner.run(self._parallel, epochs, args)
