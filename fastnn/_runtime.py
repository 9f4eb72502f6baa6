"""Runs the tile-streamed training kernel on the calling thread and helpers.

``fastnn._kernels.tiled`` splits each step into tasks that any thread may
take; this module starts the threads. The calling thread drives the loop
(worker 0) and ``numba.get_num_threads() - 1`` helper threads take tasks
(``NUMBA_NUM_THREADS`` / ``numba.set_num_threads`` set how many). Helpers
come from one thread pool per process (a forked child makes its own), and
the caller never waits for them to arrive, so a helper that starts late, or
after the call is over, changes nothing but speed. Each call gets a fresh
``sync`` array: a helper of an earlier call that has not yet seen its quit
flag cannot take tasks of a later one. BLAS runs on one thread in every
worker for the duration of a call (``blas_single_thread``).

Results depend on the layer sizes and the batch only, not on the number of
threads (see ``fastnn._kernels.tiled``).

`TwinTrainer` puts the two-shard kernel of small layers (its serial and
parallel twins, ``fastnn._threads.TwinRunner``) behind the same interface,
so that ``MLP.fit`` runs one loop of chunks whichever kernel trains.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

import numpy as np

from fastnn._threads import TwinRunner, blas_single_thread

_pool = {"pid": None, "executor": None, "size": 0, "lock": threading.Lock()}


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


class TiledTrainer:
    """Buffers and bundles of the tiled kernel for one fit call.

    Parameters
    ----------
    model : MLP
        Supplies the parameters, layout, codes and optimizer state arrays.
    X, Y : ndarray
        Training data (C-contiguous, writable, in the model's dtype).
    batch_size : int
    use_order : bool
        Batches are taken in the order of ``order`` rows passed to `run`.
    optimizer_code : int
    hyper : ndarray
        ``(learning_rate, momentum, nesterov, beta_1, beta_2, epsilon, alpha)``.
    workers : int or None
        Threads (default: `worker_count`).
    plan : ndarray or None
        The tiling (default: ``tiled.make_plan`` of the shapes; tests pass small tiles).
    """

    def __init__(self, model, X, Y, batch_size, use_order, optimizer_code, hyper, workers=None, plan=None):
        from fastnn._kernels import tiled

        self._tiled = tiled
        self.workers = worker_count() if workers is None else int(workers)
        from fastnn._kernels.layout import keeps_slopes

        out, loss = model._codes()
        extras = np.int64(1) if keeps_slopes(model._layout) else None
        self.net = tiled.Net(model._params, model._layout, np.int64(out), np.int64(loss), extras)
        self.X, self.Y = X, Y
        self.batch_size = int(batch_size)
        self.use_order = bool(use_order)
        self.optim = tiled.Optim(
            np.int64(optimizer_code), hyper, model._state1, model._state2, model._step_count
        )
        # the buffers are kept by the model for its next fit of the same kind
        key = (self.batch_size, self.use_order, self.workers, None if plan is None else plan.tobytes())
        cached = model._workspace.get("tiled")
        if cached is None or cached[0] != key:
            work = tiled.workspace(
                model.layer_sizes, self.batch_size, model._params.size, model.dtype, self.workers,
                self.use_order, plan, keeps_slopes(model._layout),
            )
            cached = (key, work)
            model._workspace["tiled"] = cached
        self.work = cached[1]

    def next_chunk(self, epochs):
        """Epochs of the next call of `run`: all of them."""
        return epochs

    def run(self, epochs, order, history):
        """Train ``epochs`` epochs (batches in ``order`` when shuffling); returns epochs completed."""
        tiled = self._tiled
        work = self.work._replace(sync=np.zeros(tiled.SYNC_SIZE, dtype=np.int64))
        data = tiled.Data(self.X, self.Y, order, self.use_order, np.int64(self.batch_size))
        args = (self.net, data, self.optim, work, np.int64(epochs), history)
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
    ``TwinRunner`` choose the twin and the length of the next chunk.
    """

    def __init__(self, model, X, Y, batch_size, use_order, optimizer_code, hyper, parallel_ok):
        from fastnn._kernels import train as kt
        from fastnn._kernels.train import CONTROL_SIZE, train, train_parallel

        key = (model.dtype.str, use_order, tuple(model.layer_sizes), batch_size, X.shape[0])
        self.runner = TwinRunner(train, train_parallel, key, parallel_ok)
        rows = batch_size if use_order else 0
        no_weights = np.empty(0, dtype=model.dtype)  # every sample weighs 1
        acts, deltas, shard_grads, shard_loss, copies = model._shard_buffers(batch_size, parallel_ok)
        out, loss = model._codes()
        # train's arguments, with the epochs, order and history of each call
        self._args = [
            X, Y, model._params, model._layout, out, loss, optimizer_code, hyper,
            np.zeros(CONTROL_SIZE, dtype=np.float64),  # no stopping rule
            0, batch_size, None, use_order, model._state1, model._state2, model._step_count,
            acts, deltas, shard_grads, shard_loss, copies,
            np.empty((rows, X.shape[1]), dtype=model.dtype), np.empty((rows, Y.shape[1]), dtype=model.dtype),
            None, no_weights, no_weights,
        ]  # fmt: skip
        self._parallel = False
        self._positions = (kt.ARG_EPOCHS, kt.ARG_ORDER, kt.ARG_HISTORY)

    def next_chunk(self, epochs):
        """Epochs of the next call of `run` (at most ``epochs``), and which twin runs it."""
        self._parallel, count = self.runner.plan(epochs)
        return count

    def run(self, epochs, order, history):
        """Train ``epochs`` epochs with the twin `next_chunk` chose; returns epochs completed."""
        args = self._args
        at_epochs, at_order, at_history = self._positions
        args[at_epochs], args[at_order], args[at_history] = epochs, order, history
        return self.runner.run(self._parallel, epochs, tuple(args))
