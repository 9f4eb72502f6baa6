"""The one training driver: ``MLP.fit`` and the estimators' sgd/adam epochs.

A fit hands the driver its `Model`, `Optimizer` and `Batches` (the bundles
of ``fastnn._runtime``), and the driver does what both facades need done the
same way:

- **the kernel**: the tile-streamed one (``TiledTrainer``) when the largest
  matrix product of a step has ``SINGLE_THREAD_MACS`` multiply-adds or more,
  or the layers have ``MANY_WEIGHTS`` weights or more, so that N workers
  share each step; else the two-shard twins (``TwinTrainer``), whose
  per-step overhead is smallest on small layers. The choice depends on the
  shapes only: the two kernels sum in different orders, and results must
  not depend on the number of threads;
- **threads**: BLAS on one thread while the twins run batches of two shards
  of small products (their own threads need it, and such products are
  faster on one), and in every worker of the tiled kernel;
- **buffers**: allocated once per fit, and kept in the workspace a model
  passes for its next fit of the same kind;
- **chunks**: `next_chunk` sizes the next compiled call (the twins' runner
  probes its two twins in short chunks), `run` runs it and says how it
  ended: all epochs done, stopped by scikit-learn's rule (both kernels run
  it between epochs when ``Optimizer.control`` asks), or diverged: a loss or a
  gradient was not finite, and the kernel stopped before that step's update,
  with the failing loss in ``history[done]``.

What happens after a divergence is each facade's contract, not the
driver's: ``MLP.fit`` replays to the last good epoch and raises
``DivergenceError``; the estimators carry on as scikit-learn does.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np

from fastnn._runtime import TiledTrainer, TwinTrainer
from fastnn._threads import blas_single_thread_for, large_products


class Chunk(NamedTuple):
    """How a compiled call ended: epochs completed, and why it stopped early."""

    done: int
    stopped: bool  # by scikit-learn's stopping rule, in the kernel
    diverged: bool  # a non-finite loss or gradient in epoch `done`


# A step streams the weights and their gradient through memory several times
# (forward, gradient, update). With this many, the tiled kernel, which shares
# those passes among its workers, is faster even when the products are small:
# a batch of 4 rows through 64-8192-10 (0.61M weights) took 0.63-0.69 ms a
# step on 2 threads against 0.81-0.98 on the twins (whose batch of one shard
# runs on one thread), and 64-4096-10 0.34 against 0.40 (float32: 0.39
# against 0.62 and 0.20 against 0.27); 64-2048-10 was faster on the twins
# (0.09 against 0.12 ms, float32); on one thread the two were within 5%
# (the tiled kernel 8% faster at 64-8192-10 in float64).
MANY_WEIGHTS = 1 << 18


def takes_tiled(layer_sizes, batches):
    """Whether a fit of ``batches`` through ``layer_sizes`` runs on the tiled kernel."""
    return tiled_for(layer_sizes, batches.batch_size)


def tiled_for(layer_sizes, batch_size):
    """Whether batches of ``batch_size`` rows through ``layer_sizes`` train on the tiled kernel."""
    weights = sum(a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))
    return large_products(layer_sizes, batch_size) or weights >= MANY_WEIGHTS


class Driver:
    """Runs one fit call's epochs on the kernel that suits its shapes.

    Use as a context manager: BLAS's thread limit is held inside it.

    Parameters
    ----------
    model : fastnn._runtime.Model
    optimizer : fastnn._runtime.Optimizer
    batches : fastnn._runtime.Batches
    workspace : dict or None
        Buffers kept between fits (a model's); None: this call's only.
    """

    def __init__(self, model, optimizer, batches, workspace=None):
        self.model, self.optimizer, self.batches = model, optimizer, batches
        self.workspace = {} if workspace is None else workspace
        self.tiled = takes_tiled(model.layer_sizes, batches)
        self.trainer = None
        self._blas = None

    def __enter__(self):
        from fastnn._kernels.train import shards_of

        sharded = not self.tiled and shards_of(self.batches.batch_size) > 1
        if sharded:
            self._blas = blas_single_thread_for(self.model.layer_sizes, self.batches.batch_size)
        else:
            # the tiled kernel's workers set BLAS to one thread for each call
            # (TiledTrainer.run); a batch of one shard has products too small
            # for BLAS's threads, and setting the limit took 40 us a fit
            self._blas = contextlib.nullcontext(False)
        single = self._blas.__enter__()
        try:
            if self.tiled:
                self.trainer = TiledTrainer(self.model, self.optimizer, self.batches, self.workspace)
            else:
                self.trainer = TwinTrainer(self.model, self.optimizer, self.batches, self.workspace, single)
        except BaseException:
            self._blas.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        self._blas.__exit__(*exc)
        return False

    @property
    def epochs_by_twin(self):
        """Epochs each twin ran, ``{"parallel": ..., "serial": ...}`` (zeros on the tiled kernel)."""
        if isinstance(self.trainer, TwinTrainer):
            return self.trainer.used
        return {"parallel": 0, "serial": 0}

    def next_chunk(self, limit):
        """Epochs of the next `run`, at most ``limit``."""
        return self.trainer.next_chunk(limit)

    def run(self, epochs, order, history, first_epoch):
        """Train ``epochs`` epochs; returns a `Chunk`.

        ``order`` holds a row order per epoch when batches follow one;
        ``history`` gets each epoch's loss; ``first_epoch`` numbers the
        call's epochs for dropout's masks.
        """
        from fastnn._kernels.train import C_STOPPED, H_EPOCH

        self.optimizer.hyper[H_EPOCH] = first_epoch
        control = self.optimizer.control
        if control is not None:
            control[C_STOPPED] = 0.0
        done = int(self.trainer.run(epochs, order, history))
        stopped = control is not None and bool(control[C_STOPPED])
        return Chunk(done, stopped, done < epochs and not stopped)


def no_order():
    """The ``order`` argument of a call whose batches follow the rows as they are."""
    return np.empty((0, 0), dtype=np.int64)
