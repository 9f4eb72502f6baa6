"""Tile-streamed training of large layers on any number of threads.

A step of mini-batch (or full-batch) training is split into phases, and each
phase into tasks that write disjoint blocks:

* ``FORWARD`` of a hidden layer: a task is a (row tile, column tile) block
  ``A[R, J] = act(A_prev[R, :] @ W[:, J] + b[J])``; the activation runs on
  the block while BLAS has just left it in cache.
* ``OUTPUT``: a task is a group of consecutive row tiles. For each tile it
  computes the output rows, the loss and the output delta, adds the tile's
  share of the output layer's gradient to the group's accumulator, and
  back-propagates the delta into the last hidden layer, overwriting that
  layer's activations (no longer needed) in place. The wide activation
  matrix is read once here, with the three narrow products done on the
  cache-resident tile, instead of once per product; for an output layer of
  a few units, by ``fastnn._kernels.narrow``'s loops rather than BLAS
  (``P_NARROW``), from the output layer's weights transposed once a batch
  (``Work.wt``), and into group accumulators that hold the gradient
  transposed.
* ``GRADIENT`` of a hidden layer: a task is a block of ``dW = A_prev.T @ D``
  (each block one product over all rows, so no sum across tasks);
  ``DELTA`` back-propagates into the layer below, by blocks, in place.
* ``REDUCE``: parameter chunks; the output layer's group accumulators are
  summed in group order (and transposed back, for the narrow loops), the L2
  term added, the gradient checked finite (the hidden layers' blocks are
  checked by their GRADIENT tasks, so without an L2 term REDUCE's chunks cut
  the output layer's parameters only: a pass over the others' gradients
  less, and every task has a share of the sums).
* ``UPDATE``: parameter chunks; the optimizer step (skipped when anything
  was not finite: the step's loss and gradient are known before it).

A plan of shards (``make_plan``'s ``shards``), for layers too small to share
by tiles, has two phases a step instead:

* ``SHARD``: a task is a whole forward, loss and backward pass over a shard
  of the batch's rows (``dense.partial_loss_and_gradients``), into the
  shard's own gradient accumulator; it gathers its rows itself when batches
  follow an order.
* ``STEP``: parameter chunks, one per worker; the shards' gradients summed
  in shard order, the L2 term added, the sum checked finite and the
  optimizer's step taken, in one pass (``train.update_range``), from the
  live set of parameters and optimizer state into a spare set (`param_set`).
  The driver makes the spare set the live one only when the step's loss
  and gradient were finite, so a failed step needs no undoing; at the end of
  a call the live set is copied back into the model's arrays if it is the
  spare one (`settle`). Shards, their sums and the step are those of the
  two-shard kernel (``fastnn._kernels.train``): the same bits.

Tile sizes and the number of groups depend only on the layer sizes and the
batch (`make_plan`), never on the number of threads, and every sum runs in a
fixed order: results are bit-identical for any number of threads. That
includes which products BLAS is called on: every worker count makes the same
calls, since BLAS may round a product differently when it is cut otherwise
(see `tile_at`).

Threads: worker 0 (the caller) drives the loop and publishes each phase in
the ``sync`` array; the others (helper threads, each a call of `run_worker`
that releases the GIL) take tasks from an atomic counter until the phase is
done. No worker waits for another to arrive: the driver does every task no
helper took, so a helper that starts late, or never, costs speed, not
correctness, and more threads than cores work. Numba's own parallel loops
are not used: their OpenMP layer warns when SciPy's OpenBLAS is called from
its threads, and the workqueue layer must not be entered from two Python
threads at once (concurrent fits). Each worker's BLAS runs on one thread.

Why counters and spin waits of our own: a phase costs one publication and one
wait, on atomic counters, which took 0.7-0.9 us per phase on the development
machine (a 4-8-2 network, 5 phases a step: 3.6-4.7 us a step with 1, 2 or 4
workers on 2 cores), so that even workload A's phases (about 100 us) spend
under 1% synchronising; a Python-level barrier would hold the GIL per phase,
and a launch and join of Numba's parallel loop costs microseconds more and
brings the problems above. A wait spins for ``YIELD_AFTER`` reads, then lets
other threads run between reads (``sched_yield``), so that more workers than
cores, or a core taken by another process, slow a step down but never stall
it (tests/test_tiled.py runs 8 workers on 2 cores, beside a busy thread).

Cold compile: Numba's ``inline="always"`` copies the callee's IR at every
call site (and a nested inline copies the callee's already expanded IR
again), and a callee compiled on its own is by default linked into, and
optimised again with, every caller above it. So the phase driver
`run_phase` is compiled once, on its own, with int64 arguments at every call
site (a literal phase kind or a literal 0 gave it one specialisation per
literal), and `run_task` is inlined into its two callers (`run_phase` and
the helpers' loop): import plus a first fit took 12.5 s on the 2-core
development machine (13.7 s once the kernel took sample weights), against
22.7 s when `run_phase` was inlined at its seven call sites and `run_task`
compiled on its own, and 37.6 s when `run_phase` was compiled once per
literal kind. `run_phase`, the tasks and the passes they share
(`output_tile`, `activate_rows`) are compiled apart
(``@kernel(linked=False)``, see ``fastnn._kernels._apart``): their callers
call them by symbol, so each is optimised and emitted once rather than once
more in every caller above it (a first fit of 64-4096-10 in an empty cache
took 16.6-17.0 s against 19.6-23.9 s, in turns). docs/startup.md has the
compile time of each kernel.
"""

from collections import namedtuple

import numpy as np

from fastnn._kernels._jit import kernel
from fastnn._kernels.activations import activate_block, activate_row, activate_row_keep, derivative_row, times_kept
from fastnn._kernels.bits import magnitude_bits, magnitude_of_bits
from fastnn._kernels.blas import gemm
from fastnn._kernels.codes import OPT_ADAM, OPT_MOMENTUM, SSE
from fastnn._kernels.dense import deltas_units, loss_delta_rows, sum_of_squares
from fastnn._kernels.few_rows import few_rows_call, few_rows_nn_call, loop_at
from fastnn._kernels.dropout import activate_row_drop, keep_scale, row_key
from fastnn._kernels.narrow import narrow_back, narrow_nn, narrow_tn, takes_narrow, transpose
from fastnn._kernels.layout import B_OFF, CODE, DFN, DROP, FAN_IN, FAN_OUT, FN, KEEP, NN_ROWS, TN_ROWS, W_OFF
from fastnn._kernels.sync import atomic_add, atomic_cas, atomic_load, pause, wait_at_least
from fastnn._kernels.train import (
    C_RULE, H_ALPHA, H_EPOCH, H_SEED, MAX_SHARDS, adam_step, batch_norm_of, end_of_epoch, momentum_step,
    shard_data, shard_pass, step_between, step_rate,
)  # fmt: skip
from fastnn._kernels.views import as_matrix, flat, span, unless_none, unowned

# The bundles every worker gets: Net, Data and Optim (fastnn._kernels.bundles,
# the two-shard kernel's too; `drive` runs Optim.control's stopping rule),
# and this kernel's workspace:
Work = namedtuple(
    "Work", "plan acts slopes grads groups parts scratch X_batch Y_batch W_batch sync deltas shard_grads spare wt"
)

# plan[...]: the tiling, from the shapes only (see make_plan)
P_ROWS = 0  # rows of a FORWARD / DELTA / GATHER tile
P_COLS = 1  # units of a column tile
P_OUT_ROWS = 2  # rows of an OUTPUT tile
P_GROUPS = 3  # most OUTPUT groups (gradient accumulators of the output layer)
P_CHUNK = 4  # parameters per UPDATE task (and REDUCE's, with an L2 term)
P_MAX_TILES = 5  # OUTPUT tiles of a full batch (loss parts)
P_MAX_CHUNKS = 6
P_SCRATCH = 7  # elements of each worker's scratch
P_BLOCK = 8  # rows of a block: a batch runs forward and backward block by block
P_GROUP_TILES = 9  # least OUTPUT tiles per group (see output_groups)
P_GRAD_ROWS = 10  # rows of a GRADIENT block of dW
P_GRAD_COLS = 11  # columns of a GRADIENT block of dW
P_OUT_CHUNK = 12  # parameters per REDUCE task without an L2 term (of the output layer only)
P_SHARDS = 13  # > 0: a batch is that many SHARD tasks (whole passes over rows), not layer phases
P_NARROW = 14  # 1: OUTPUT's products by fastnn._kernels.narrow's loops, not BLAS (see make_plan)
PLAN_SIZE = 15

GATHER, FORWARD, OUTPUT, GRADIENT, DELTA, REDUCE, UPDATE, SHARD, STEP = 1, 2, 3, 4, 5, 6, 7, 8, 9

# sync[...] (int64): the published phase; the counters on their own cache lines
S_SEQ = 0  # phases published so far
S_CLAIM = 8  # (phase << 32) | next task
S_DONE = 16  # tasks of the current phase finished
S_QUIT = 24  # 1: helpers return
S_KIND = 32  # the phase's fields, written before S_SEQ moves
S_LAYER = 33
S_TASKS = 34
S_START = 35  # first row of the batch (in X, or in the epoch's order)
S_BLOCK = 36  # first row of the block, in the batch
S_ROWS = 37  # rows of the block (GATHER: of the batch)
S_NORM = 38  # rows of the batch (its loss's normaliser: batch_norm)
S_EPOCH = 39
S_T = 40  # Adam's step number of this update
S_BAD = 41  # 1: a GRADIENT task found a value that is not finite (this batch)
S_LIVE = 42  # a shard plan's live set of parameters (see param_set)
SYNC_SIZE = 48
TASK_BITS = 32
TASK_MASK = (1 << TASK_BITS) - 1
# Activations are kept for a block of rows at a time: a batch of more rows
# runs forward and backward block after block, the weight gradients
# accumulating, so that memory does not grow with the batch
BLOCK_BYTES = 64 << 20
YIELD_AFTER = 1 << 12  # spins of a wait before it lets other threads run


# Hidden-layer blocks: at most 256 rows x 1024 units, made smaller (rows
# down to 64, then units down to 128) until the widest hidden layer's
# FORWARD phase has MIN_TASKS blocks, so that batches of a few hundred rows
# still give several workers work (a batch of 200 through 256 units was one block: one worker did the
# whole phase). Wide blocks make the products faster (BLAS packs each panel
# for fewer, longer multiplications) and smaller ones give more workers a
# share. GRADIENT blocks (`gradient_tiles`) and OUTPUT tiles (`output_rows`)
# are cut so that their phases have several tasks too. The CHANGELOG has the
# measurements behind these numbers.
MIN_TASKS = 8
MAX_ROWS, MAX_COLS = 256, 1024


def tile_sizes(layer_sizes, batch_size):
    """``(rows, cols)`` of the hidden-layer blocks for these shapes (see `MIN_TASKS`)."""
    widest = max(layer_sizes[1:-1], default=layer_sizes[-1])
    rows, cols = MAX_ROWS, MAX_COLS
    while -(-batch_size // rows) * -(-widest // cols) < MIN_TASKS:
        # fewer rows first: narrower blocks cost more (workload A, 256 x
        # 64-1024-10: 1.33 ms a step with 64 x 512 blocks, 1.46 with 128 x 256)
        if rows > 64:
            rows //= 2
        elif cols > 128:
            cols //= 2
        else:
            break
    return rows, cols


def gradient_tiles(layer_sizes, cols):
    """``(rows, cols)`` of the blocks of the hidden layers' weight gradients.

    Half as many rows as columns (``cols / 2``, at least 64; a block is one
    product over the batch's rows), then fewer columns (down to 64) and
    rows (down to 32) until the largest hidden layer's gradient has
    ``MIN_TASKS / 2`` blocks: 512 x 64-256-10 had one, which one worker did
    while the other waited.
    """
    hidden = list(zip(layer_sizes[:-2], layer_sizes[1:-1]))
    fan_in, fan_out = max(hidden, key=lambda pair: pair[0] * pair[1], default=(1, 1))
    rows, width = max(cols // 2, 64), cols
    while -(-fan_in // rows) * -(-fan_out // width) < MIN_TASKS // 2:
        if width > 64:
            width //= 2
        elif rows > 32:
            rows //= 2
        else:
            break
    return rows, width


def output_rows(fan_in, block_rows, itemsize):
    """Rows of an OUTPUT tile: as many as keep a tile of the last hidden layer
    within 256 KB (the L2 cache of one core), but at least 8 (BLAS is slow on
    the narrow products of 4 rows: 64 x 64-8192-10 in float64 took 8.2 ms a
    step on one worker with tiles of 4 rows, 7.4 with 8; 4.5 and 3.8 on two),
    and few enough that a block has ``MIN_TASKS`` tiles, but at least 32 (a
    multiple of 4, at most 256)."""
    cached = max(8, min(256, (256 * 1024 // itemsize // max(fan_in, 1)) // 4 * 4))
    per_tile = -(-block_rows // MIN_TASKS)
    shared = max(32, -(-per_tile // 4) * 4)
    return min(cached, shared)


# UPDATE tasks (and REDUCE's, which cut the output layer's parameters only
# when there is no L2 term: see reduce_cut): MIN_CHUNKS of them where
# chunks of at least MIN_CHUNK parameters allow it, so that up to MIN_CHUNKS
# workers share the work, in whole cache lines (multiples of 64 parameters),
# and at most MAX_CHUNK parameters each. A fixed 32768 gave workload A's 76810
# parameters three tasks, a 64-100-10 network one (which one worker did while
# the others waited), and B's output layer two REDUCE tasks. The CHANGELOG has
# the measurements.
MIN_CHUNKS = 16
MIN_CHUNK, MAX_CHUNK = 1024, 1 << 15


def chunk_size(n_params):
    """Parameters of a task over ``n_params`` parameters (see `MIN_CHUNKS`)."""
    per_task = -(-n_params // MIN_CHUNKS)
    return min(MAX_CHUNK, max(MIN_CHUNK, -(-per_task // 64) * 64))


def shard_chunk(n_params, workers):
    """Parameters of a STEP task of a plan of shards: one task per worker.

    A step of small layers updates its parameters in a few microseconds, and
    each task costs its own claim and slices: 64-100-10 in batches of 200
    (Adam, 2 threads) took 93 us a step with 2 STEP tasks, 94 with 4 and 97
    with 8 (the two-shard kernel: 90).
    """
    per_task = -(-n_params // max(1, workers))
    return max(64, -(-per_task // 64) * 64)


def make_plan(layer_sizes, batch_size, itemsize, rows=None, cols=None, out_rows=None, groups=16,
              chunk=None, block=None, group_tiles=1, grad_rows=None, grad_cols=None,
              out_chunk=None, shards=0, workers=1, narrow=None):  # fmt: skip
    """The tiling of a step (int64 ``PLAN_SIZE``); depends on the shapes only
    (but for a plan of shards' STEP chunks, which change no sum).

    ``rows`` x ``cols`` blocks for the hidden layers (by default
    `tile_sizes`), ``grad_rows`` x ``grad_cols`` blocks of their weight
    gradients (by default `gradient_tiles`); OUTPUT tiles of ``out_rows``
    rows (by default `output_rows`), in at most ``groups`` groups of at
    least ``group_tiles`` tiles; ``chunk`` parameters per UPDATE task (by
    default `chunk_size`) and ``out_chunk`` per REDUCE task without an L2
    term (by default `chunk_size` of the output layer); blocks of ``block``
    rows (by default as many as keep the activations of a block within
    ``BLOCK_BYTES``). The other keywords are for tests, which use small
    tiles on small networks.

    ``shards`` > 0 makes a plan of shards (`shard_task`): a batch is that
    many whole passes over its rows, for layers too small to share by
    tiles, and its STEP has one task per worker (of ``workers``).

    ``narrow``: whether the OUTPUT tasks make their three products with
    ``fastnn._kernels.narrow``'s loops (by default where
    ``narrow.takes_narrow`` says so) rather than BLAS; their weight gradient
    is then accumulated transposed, and REDUCE transposes it back.
    """
    fan_in = layer_sizes[-2]
    default_rows, default_cols = tile_sizes(layer_sizes, batch_size)
    rows = default_rows if rows is None else rows
    cols = default_cols if cols is None else cols
    default_grad_rows, default_grad_cols = gradient_tiles(layer_sizes, cols)
    n_params = sum(a * b + b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))
    if chunk is None:
        chunk = shard_chunk(n_params, workers) if shards > 0 else chunk_size(n_params)
    plan = np.zeros(PLAN_SIZE, dtype=np.int64)
    plan[P_ROWS] = rows
    plan[P_COLS] = cols
    plan[P_GROUPS] = groups
    plan[P_GROUP_TILES] = group_tiles
    plan[P_GRAD_ROWS] = default_grad_rows if grad_rows is None else grad_rows
    plan[P_GRAD_COLS] = default_grad_cols if grad_cols is None else grad_cols
    plan[P_CHUNK] = chunk
    if shards > MAX_SHARDS:
        raise ValueError(f"shards must be at most {MAX_SHARDS} (update_range sums two), got {shards}")
    plan[P_SHARDS] = shards
    if narrow is None:
        narrow = takes_narrow(fan_in, layer_sizes[-1], batch_size)
    plan[P_NARROW] = 1 if narrow and shards == 0 else 0
    if shards > 0:
        block = batch_size  # a shard is a pass over all layers: the batch is one block
    # blocks of activations of at most BLOCK_BYTES (rows: a multiple of `rows`)
    width = int(sum(layer_sizes[1:])) * itemsize
    if block is None:
        block = max(rows, BLOCK_BYTES // width // rows * rows)
    plan[P_BLOCK] = min(block, batch_size)
    if out_rows is None:
        out_rows = output_rows(fan_in, plan[P_BLOCK], itemsize)
    plan[P_OUT_ROWS] = out_rows
    plan[P_MAX_TILES] = max(-(-plan[P_BLOCK] // out_rows), shards)
    # without an L2 term, REDUCE has only the output layer's groups to sum: its
    # tasks cut that layer's parameters (see reduce_cut)
    if out_chunk is None:
        out_chunk = chunk_size(fan_in * layer_sizes[-1] + layer_sizes[-1])
    plan[P_OUT_CHUNK] = out_chunk
    plan[P_MAX_CHUNKS] = max(-(-n_params // chunk), -(-n_params // out_chunk))
    plan[P_SCRATCH] = max(out_rows * fan_in, rows * cols)
    return plan


def block_rows(batch_size, n_rows, block):
    """The row counts of the blocks of a pass over ``n_rows`` rows in batches of ``batch_size``."""
    counts = set()
    for rows in {min(batch_size, n_rows), n_rows % batch_size}:
        if rows >= block:
            counts.add(block)
        if rows % block:
            counts.add(rows % block)
    return counts


def workspace(layer_sizes, batch_size, n_params, dtype, workers, use_order, plan=None, keep=False,
              weighted=False, shards=0):  # fmt: skip
    """A `Work` bundle (buffers allocated once per fit) for ``workers`` threads.

    ``plan``: by default `make_plan`'s, of ``shards`` shards (0: a plan of
    layer phases).

    ``keep``: some layer keeps its slopes (``layout.keeps_slopes``), in a
    buffer laid out as the activations; ``weighted``: the rows have sample
    weights (``Data.W``), gathered with the rows when batches follow an order.
    """
    if plan is None:
        plan = make_plan(layer_sizes, batch_size, np.dtype(dtype).itemsize, shards=shards, workers=workers)
    plan = plan.copy()  # (the workspace's own)
    fan_in, fan_out = layer_sizes[-2], layer_sizes[-1]
    rows = batch_size if use_order else 0
    acts = plan[P_BLOCK] * int(sum(layer_sizes[1:]))
    return Work(
        plan,
        np.empty(acts, dtype=dtype),
        np.empty(acts if keep else 0, dtype=dtype),  # the slopes of KEEP layers
        np.empty(n_params, dtype=dtype),
        np.empty(plan[P_GROUPS] * (fan_in * fan_out + fan_out), dtype=dtype),
        np.zeros(plan[P_MAX_TILES] + 2 * plan[P_MAX_CHUNKS] + 1, dtype=np.float64),
        np.empty(max(workers, 1) * plan[P_SCRATCH], dtype=dtype),
        np.empty((rows, layer_sizes[0]), dtype=dtype),
        np.empty((rows, layer_sizes[-1]), dtype=dtype),
        np.empty(rows if weighted else 0, dtype=dtype),
        np.zeros(SYNC_SIZE, dtype=np.int64),
        # None for a plan of layer phases: its kernels are compiled without the
        # SHARD tasks (see run_worker's `shards`)
        np.empty(plan[P_BLOCK] * deltas_units(layer_sizes), dtype=dtype) if plan[P_SHARDS] > 0 else None,
        np.empty((plan[P_SHARDS], n_params), dtype=dtype) if plan[P_SHARDS] > 0 else None,
        np.empty((3, n_params), dtype=dtype) if plan[P_SHARDS] > 0 else None,
        # the output layer's weights, transposed once a batch, for the narrow loops
        np.empty(fan_in * fan_out if plan[P_NARROW] else 0, dtype=dtype),
    )


@kernel(inline="always")
def ceil_div(a, b):
    return -(-a // b)


@kernel(inline="always")
def layer_row(layout, layer):
    # (fan_in, fan_out, weight offset, bias offset) of a layer
    return layout[layer, FAN_IN], layout[layer, FAN_OUT], layout[layer, W_OFF], layout[layer, B_OFF]


@kernel(inline="always")
def act_offset(layout, layer, block_rows):
    # start of layer `layer`'s activations in acts (blocks of block_rows rows)
    off = 0
    for i in range(layer):
        off += block_rows * layout[i, 1]
    return off


@kernel(inline="always")
def input_block(net, data, work, layer, start, b0):
    # (buffer, offset, ld) of the input rows of layer `layer` for the block at
    # row b0 of the batch at `start`: rows of X, or the previous activations
    if layer > 0:
        return work.acts, act_offset(net.layout, layer - 1, work.plan[P_BLOCK]), net.layout[layer, 0]
    d = data.X.shape[1]
    if data.use_order:
        return flat(work.X_batch), b0 * d, d
    return flat(data.X), (start + b0) * d, d


@kernel(inline="always")
def tile_total(n_rows, n_cols, tile_rows, tile_cols):
    # blocks of an n_rows x n_cols product cut into tile_rows x tile_cols tiles
    return ceil_div(n_rows, tile_rows) * ceil_div(n_cols, tile_cols)


@kernel(inline="always")
def tile_at(task, n_rows, n_cols, tile_rows, tile_cols):
    # (first row, first column, rows, columns) of block `task` of an n_rows x
    # n_cols product cut into tile_rows x tile_cols tiles, row-major.
    # Every number of workers makes these same BLAS calls. A plan that joined
    # the full tiles into one call for one worker, and into a band of tile
    # rows a worker for more, was 5% faster on one thread (A, B and C, float64)
    # and up to 2-18% on two (A; C 1%, B none): BLAS packs the shared operand
    # once a call. But BLAS may round a product differently when it is cut
    # otherwise. OpenBLAS 0.3.30's Haswell kernels (on a Zen 5 CPU whose
    # environment sets OPENBLAS_CORETYPE=Haswell) gave other float32 bits for
    # 4-10% of the elements of a product in tiles than in one call or in two
    # bands (1024 x 784 @ 784 x 2048 in tiles of 256 x 1024: 5%); its SkylakeX
    # kernels gave the same bits, but not below about 10^6 multiply-adds. Bits that must not depend on the
    # number of threads cannot depend on such a property of a BLAS build.
    across = ceil_div(n_cols, tile_cols)
    r0, c0 = task // across * tile_rows, task % across * tile_cols
    return r0, c0, min(tile_rows, n_rows - r0), min(tile_cols, n_cols - c0)


@kernel(inline="always")
def output_groups(plan, rows):
    # OUTPUT tasks (groups of consecutive tiles, each with its own gradient
    # accumulator) for a block of `rows` rows: at least P_GROUP_TILES tiles a
    # group, so that small batches do not write and sum an accumulator per tile
    return max(1, min(plan[P_GROUPS], ceil_div(rows, plan[P_OUT_ROWS]) // plan[P_GROUP_TILES]))


@kernel(inline="always")
def tile_count(net, opt, work, kind, layer, rows):
    # tasks of a phase over `rows` rows
    plan = work.plan
    if kind == GATHER:
        return ceil_div(rows, plan[P_ROWS])
    if kind == SHARD:
        return shards_for(plan, rows)
    fan_in, fan_out = net.layout[layer, 0], net.layout[layer, 1]
    if kind == FORWARD:
        return tile_total(rows, fan_out, plan[P_ROWS], plan[P_COLS])
    if kind == OUTPUT:
        return output_groups(plan, rows)
    if kind == GRADIENT:
        return tile_total(fan_in, fan_out, plan[P_GRAD_ROWS], plan[P_GRAD_COLS])
    if kind == DELTA:  # into layer `layer` from layer + 1
        return ceil_div(rows, plan[P_ROWS]) * ceil_div(net.layout[layer, 1], plan[P_COLS])
    if kind == REDUCE:
        return reduce_tasks(net, opt, work)
    return ceil_div(net.params.size, plan[P_CHUNK])  # UPDATE, STEP


# ------------------------------------------------------------------ tasks
@kernel(linked=False)
def activate_rows(buf, off, ld, rows, cols, b, has_bias, code, slopes, keep, fns, drop):
    # the block (buf, off, ld) of rows x cols = act(block + b), in place;
    # with `keep`, the same block of slopes = act'(block + b) (a custom
    # activation, at the addresses fns, is always kept). drop = (seed,
    # epoch, the first row's position in the epoch, layer, first unit,
    # threshold): dropout when threshold > 0 and seed >= 0 (see dropout.py);
    # None: a model without kept slopes (the rest is pruned before compiling).
    # A contiguous block (ld == cols) of narrow rows is one flat run
    # (activations.activate_block); the row loops take spans, which cost no
    # reference count (views.span)
    if drop is None:
        activate_block(buf, off, ld, rows, cols, b, has_bias, code)
        return
    seed, epoch, first_row, layer, first_unit, threshold = drop
    dropping = keep and threshold > 0 and seed >= 0
    scale = buf.dtype.type(keep_scale(threshold) if dropping else 1.0)
    for i in range(rows):
        row = span(buf, off + i * ld, cols)
        s = span(slopes, off + i * ld, cols) if keep else slopes[0:0]
        if dropping:
            key = row_key(seed, epoch, first_row + i, layer)
            activate_row_drop(row, b, has_bias, code, s, fns, key, first_unit, threshold, scale)
        elif keep:
            activate_row_keep(row, b, has_bias, code, s, fns)
        else:
            activate_row(row, b, has_bias, code)


@kernel
def derivative_rows(delta, buf, off, ld, rows, cols, code, slopes, keep, extras):
    # the block (buf, off, ld) = delta (rows x cols, contiguous) * act'(block),
    # in place; with `keep`, act' is the same block of slopes (extras: Net's).
    # A contiguous block (ld == cols) is one row of rows * cols values: each
    # row's slices cost an atomic reference count (see activate_rows), and
    # narrow rows never reach the vector loop
    if ld == cols:
        rows, cols, ld = 1, rows * cols, rows * cols
    # (one site of derivative_row: `if extras is None` is pruned only when
    # extras is None, and with kept slopes its branch was a second copy)
    for i in range(rows):
        a = span(buf, off + i * ld, cols)
        d = span(delta, i * cols, cols)
        if extras is not None and keep:
            s = span(slopes, off + i * ld, cols)
            times_kept(as_matrix(d, 1, cols), as_matrix(s, 1, cols), as_matrix(a, 1, cols), s[:0], False)
        else:
            derivative_row(d, a, a, code)


# `at` is (start, b0, rows, nb, epoch, t): the batch's first row, the
# block's first row in the batch and its rows, the batch's rows, the epoch,
# Adam's step number
@kernel(inline="always")
def scratch_of(work, worker):
    # worker's own scratch block (P_SCRATCH elements)
    size = work.plan[P_SCRATCH]
    return work.scratch[worker * size : (worker + 1) * size]


@kernel(linked=False)
def gather_task(data, work, task, at):
    # P_ROWS rows of the batch, in the epoch's order, into X_batch, Y_batch
    # (and W_batch)
    nb, epoch = at[2], at[4]
    lo = task * work.plan[P_ROWS]
    shard_data(data, work, epoch, at[0], lo, min(lo + work.plan[P_ROWS], nb))


@kernel(linked=False)
def forward_task(net, data, opt, work, layer, task, at, extras):
    # A[R, J] = act(A_prev[R, :] @ W[:, J] + b[J]) for one block of a hidden layer
    start, b0 = at[0], at[1]
    fan_in, fan_out, w_off, b_off = layer_row(net.layout, layer)
    plan = work.plan
    r0, c0, rows, cols = tile_at(task, at[2], fan_out, plan[P_ROWS], plan[P_COLS])
    src, src_off, ld = input_block(net, data, work, layer, start, b0)
    off = act_offset(net.layout, layer, plan[P_BLOCK]) + r0 * fan_out + c0
    a, w, z = (src, src_off + r0 * ld, ld), (net.params, w_off + c0, fan_out), (work.acts, off, fan_out)
    fn = loop_at(net.layout, layer, at[2], NN_ROWS)
    if fn != 0:
        # a few rows, where BLAS would copy the weights first (the block's
        # rows and the layer decide: every tile takes the same path)
        few_rows_nn_call(fn, rows, cols, fan_in, a, w, z, False)
    else:
        gemm(rows, cols, fan_in, a, False, w, False, z, False)
    has_bias = b_off >= 0
    b = net.params[b_off + c0 : b_off + c0 + cols] if has_bias else net.params[0:0]
    code, keep = net.layout[layer, CODE], net.layout[layer, KEEP] != 0
    fns = (net.layout[layer, FN], net.layout[layer, DFN])
    # dropout's counters, None without kept slopes (one call: see views.unless_none)
    seed, epoch = np.int64(opt.hyper[H_SEED]), np.int64(opt.hyper[H_EPOCH]) + at[4]
    drop = unless_none(extras, (seed, epoch, start + b0 + r0, np.int64(layer), c0, net.layout[layer, DROP]))
    activate_rows(work.acts, off, fan_out, rows, cols, b, has_bias, code, work.slopes, keep, fns, drop)


@kernel(linked=False)
def output_tile(net, data, work, t, at, x, first, acc, scratch):
    # output tile t: rows, loss part and delta (in place), the group's
    # gradient at `acc`, and the delta of the last hidden layer (in place)
    start, b0, nr = at[0], at[1], at[2]
    last = net.layout.shape[0] - 1
    fan_in, o, w_off, b_off = layer_row(net.layout, last)
    r0 = t * work.plan[P_OUT_ROWS]
    rows = min(work.plan[P_OUT_ROWS], nr - r0)
    a_off = act_offset(net.layout, last, work.plan[P_BLOCK]) + r0 * o
    src, src_off, ld = x[0], x[1] + r0 * x[2], x[2]
    narrow = work.plan[P_NARROW] != 0
    if narrow:
        narrow_nn(rows, fan_in, o, (src, src_off, ld), work.wt, (work.acts, a_off, o))
    else:
        gemm(rows, o, fan_in, (src, src_off, ld), False, (net.params, w_off, o), False, (work.acts, a_off, o), False)
    A = as_matrix(work.acts[a_off : a_off + rows * o], rows, o)
    has_bias = b_off >= 0
    b = net.params[b_off : b_off + o] if has_bias else net.params[0:0]
    no_fns = (np.int64(0), np.int64(0))
    keep = net.layout[last, KEEP] != 0  # (False: a bool, as forward_task's, for one specialisation)
    activate_rows(work.acts, a_off, o, rows, o, b, has_bias, net.output, work.slopes, keep, no_fns, None)
    y0 = b0 + r0 if data.use_order else start + b0 + r0
    Y = work.Y_batch[y0 : y0 + rows] if data.use_order else data.Y[y0 : y0 + rows]
    w = data.W[0:0]  # (every row weighs 1)
    if data.W.size > 0:
        w = work.W_batch[y0 : y0 + rows] if data.use_order else data.W[y0 : y0 + rows]
    work.parts[t] = loss_delta_rows(Y, A, w, net.loss, net.output, batch_norm(work), A)
    if narrow:  # (the group's gradient transposed: o x fan_in)
        narrow_tn(rows, fan_in, o, (src, src_off, ld), (work.acts, a_off, o), (work.groups, acc), not first)
    else:
        gemm(fan_in, o, rows, (src, src_off, ld), True, (work.acts, a_off, o), False, (work.groups, acc, o), not first)
    if has_bias:
        gb = work.groups[acc + fan_in * o : acc + fan_in * o + o]
        for j in range(o):
            s = A[0, j]
            for i in range(1, rows):
                s += A[i, j]
            gb[j] = s if first else gb[j] + s
    if last > 0:
        if narrow:
            narrow_back(rows, fan_in, o, (work.acts, a_off, o), work.wt, (scratch, 0, fan_in))
        else:
            gemm(rows, fan_in, o, (work.acts, a_off, o), False, (net.params, w_off, o), True,
                 (scratch, 0, fan_in), False)  # fmt: skip
        code, keep = net.layout[last - 1, CODE], net.layout[last - 1, KEEP] != 0
        derivative_rows(scratch, src, src_off, ld, rows, fan_in, code, work.slopes, keep, net.extras)


@kernel(linked=False)
def output_task(net, data, work, group, at, worker):
    # the row tiles of one group, in order (see output_tile); the group's
    # accumulators start at the first tile of the batch's first block
    last = net.layout.shape[0] - 1
    fan_in, o = net.layout[last, 0], net.layout[last, 1]
    tiles = ceil_div(at[2], work.plan[P_OUT_ROWS])
    groups = output_groups(work.plan, at[2])
    x = input_block(net, data, work, last, at[0], at[1])
    acc = group * (fan_in * o + o)
    scratch = scratch_of(work, worker)
    first_tile = group * tiles // groups
    for t in range(first_tile, (group + 1) * tiles // groups):
        output_tile(net, data, work, t, at, x, t == first_tile and at[1] == 0, acc, scratch)


@kernel(linked=False)
def gradient_task(net, data, work, layer, task, at):
    # a block dW[P, J] (+)= A_prev[:, P].T @ D[:, J] of a hidden layer (the
    # block's rows in one product), and db[J] (+)= column sums of D[:, J];
    # accumulated over the blocks of the batch
    start, b0, nr = at[0], at[1], at[2]
    fan_in, fan_out, w_off, b_off = layer_row(net.layout, layer)
    plan = work.plan
    p0, c0, pc, cc = tile_at(task, fan_in, fan_out, plan[P_GRAD_ROWS], plan[P_GRAD_COLS])
    src, src_off, ld = input_block(net, data, work, layer, start, b0)
    d_off = act_offset(net.layout, layer, plan[P_BLOCK]) + c0
    a, d, g = (src, src_off + p0, ld), (work.acts, d_off, fan_out), (work.grads, w_off + p0 * fan_out + c0, fan_out)
    fn = loop_at(net.layout, layer, nr, TN_ROWS)
    if fn != 0:
        # a few outer products, where BLAS is slow (see few_rows.loop_rows)
        few_rows_call(fn, pc, cc, nr, a, d, g, b0 > 0)
    else:
        gemm(pc, cc, nr, a, True, d, False, g, b0 > 0)
    if b_off >= 0 and p0 == 0:
        gb = work.grads[b_off + c0 : b_off + c0 + cc]
        for i in range(nr):
            row = span(work.acts, d_off + i * fan_out, cc)
            for j in range(cc):
                gb[j] = row[j] if i == 0 and b0 == 0 else gb[j] + row[j]
    # the batch's last block finishes the block of dW (and of db): checked
    # here, while it is in cache, so that REDUCE need not read the hidden
    # layers' gradients again (see reduce_task). A batch of few rows has
    # factors smaller than the product: when they bound every element of it
    # below the dtype's largest value, dW is finite without reading it (a
    # batch of 4 rows through 64-8192-10 would read 4.2 MB for 33K factors)
    if b0 + nr == at[3]:
        bounded = False
        if b0 == 0 and nr * (pc + cc) < pc * cc:
            bound = nr * largest(src, src_off + p0, ld, nr, pc) * largest(work.acts, d_off, fan_out, nr, cc)
            bounded = bound < 0.5 * np.finfo(net.params.dtype).max
        finite = bounded or largest(work.grads, w_off + p0 * fan_out + c0, fan_out, pc, cc) < np.inf
        if b_off >= 0 and p0 == 0:
            # (np.int64: a literal 1 compiled `largest` once more)
            finite &= largest(work.grads, b_off + c0, cc, np.int64(1), cc) < np.inf
        if not finite:
            exchange(work.sync, S_BAD, 1)


@kernel
def largest(values, off, ld, rows, cols):
    # the largest magnitude in the block (values, off, ld) of rows x cols, as
    # float64; infinity when a value is not finite. As integers (see
    # fastnn._kernels.bits), the maximum vectorises: 0.64 ns a value as a
    # float maximum. (Compiled on its own, not inlined at its call sites:
    # each copy cost compile time.)
    like = values.dtype.type(0.0)
    top = magnitude_bits(like)
    for i in range(rows):
        row = span(values, off + i * ld, cols)
        for j in range(cols):
            top = max(top, magnitude_bits(row[j]))
    return magnitude_of_bits(top, like)


@kernel(linked=False)
def delta_task(net, work, layer, task, at, worker):
    # a block D[R, P] = (D_next[R, :] @ W_next[P, :].T) * act'(A[R, P]) of
    # hidden layer `layer`, written over A[R, P]
    fan_in, fan_out, w_off, _ = layer_row(net.layout, layer + 1)
    # (a block of the product is a worker's scratch, P_SCRATCH)
    r0, p0, rows, pc = tile_at(task, at[2], fan_in, work.plan[P_ROWS], work.plan[P_COLS])
    d_off = act_offset(net.layout, layer + 1, work.plan[P_BLOCK]) + r0 * fan_out
    a_off = act_offset(net.layout, layer, work.plan[P_BLOCK]) + r0 * fan_in + p0
    scratch = scratch_of(work, worker)
    gemm(rows, pc, fan_out, (work.acts, d_off, fan_out), False,
         (net.params, w_off + p0 * fan_out, fan_out), True, (scratch, 0, pc), False)  # fmt: skip
    code, keep = net.layout[layer, CODE], net.layout[layer, KEEP] != 0
    derivative_rows(scratch, work.acts, a_off, fan_in, rows, pc, code, work.slopes, keep, net.extras)


MIN_SHARD_ROWS = 32


@kernel(inline="always")
def shards_for(plan, nb):
    # shards of a batch of nb rows: P_SHARDS, fewer for batches of fewer
    # than MIN_SHARD_ROWS rows a shard
    return max(1, min(plan[P_SHARDS], nb // MIN_SHARD_ROWS))


@kernel(linked=False)
def shard_task(net, data, opt, work, s, at, extras):
    # shard s of the batch: forward, loss and backward of its rows, the
    # gradient into its own accumulator, its loss share into parts[s]
    start, nb = at[0], at[2]
    shards = shards_for(work.plan, nb)
    lo, hi = (s * nb) // shards, ((s + 1) * nb) // shards
    # (rows in the epoch's order are gathered here, by the task that reads
    # them, not in a GATHER phase of their own)
    rows = shard_data(data, work, at[4], start, lo, hi)
    width = work.acts.size // work.plan[P_BLOCK]
    dwidth = work.deltas.size // work.plan[P_BLOCK]
    buffers = (work.acts[lo * width : hi * width], work.deltas[lo * dwidth : hi * dwidth], work.shard_grads[s])
    params = param_set(net, opt, work, work.sync[S_LIVE])[0]
    work.parts[s] = shard_pass(net, opt, rows, params, batch_norm(work), buffers, at[4], start + lo, extras)


@kernel(inline="always")
def param_set(net, opt, work, k):
    # (parameters, state1, state2) of a shard plan's set k: 0 the model's own
    # arrays, 1 the spare ones. A STEP writes the other set, and the driver
    # makes it the live one only when the step was finite: a failed step
    # leaves the live set as it was, with no pass to copy or undo it
    if k == 0:
        return net.params, opt.state1, opt.state2
    return work.spare[0], work.spare[1, : opt.state1.size], work.spare[2, : opt.state2.size]


@kernel(linked=False)
def step_task(net, opt, work, chunk, at):
    # parameters [lo, hi) of a shard plan: the shards' gradients summed in
    # shard order (+ alpha * W / nb on the weights), checked finite, and the
    # optimizer's step from the live set into the other one, in one pass
    # (fastnn._kernels.train.step_between, the two-shard kernel's); parts get
    # the sum of W**2 of the live weights and the check. One phase a step
    # less than a REDUCE phase then an UPDATE phase; on one thread the two
    # were within the noise (64-100-10 in batches of 200, Adam: 169 against
    # 166 us a step)
    lo = chunk * work.plan[P_CHUNK]
    hi = min(lo + work.plan[P_CHUNK], net.params.size)
    live = work.sync[S_LIVE]
    src, dst = param_set(net, opt, work, live), param_set(net, opt, work, 1 - live)
    shards = shards_for(work.plan, at[2])
    squares, finite = step_between(net, opt, work.shard_grads, shards, batch_norm(work), at[5], lo, hi, src, dst)
    work.parts[work.plan[P_MAX_TILES] + chunk] = squares
    work.parts[work.plan[P_MAX_TILES] + work.plan[P_MAX_CHUNKS] + chunk] = 1.0 if finite else 0.0


@kernel(inline="always")
def settle(net, opt, work, shards):
    # a shard plan whose live set is the spare one copies it into the model's
    # arrays (at the end of a call)
    if shards is not None and work.sync[S_LIVE] == 1:
        spare = param_set(net, opt, work, np.int64(1))
        own = param_set(net, opt, work, np.int64(0))
        for k in range(3):
            src, dst = spare[k], own[k]
            for i in range(dst.size):
                dst[i] = src[i]
        work.sync[S_LIVE] = 0


@kernel
def sum_groups(work, dst, first, count, groups, stride):
    # dst[i] = the groups' accumulators [first + i] summed in group order
    # (compiled once for REDUCE's two calls, not inlined at each)
    for i in range(count):
        dst[i] = work.groups[first + i]
    for g in range(1, groups):
        src = work.groups[g * stride + first : g * stride + first + count]
        for i in range(count):
            dst[i] += src[i]


@kernel(inline="always")
def sum_groups_transposed(work, dst, first, count, groups, stride, k, o, tmp):
    # sum_groups of a narrow output layer's weight gradient, whose groups
    # hold it transposed (o x k, see output_tile): dst[i] = element first + i
    # of the k x o sum; each unit's run of rows summed contiguously in tmp
    for j in range(o):
        lo = max(0, ceil_div(first - j, o))  # rows r with first <= r * o + j < first + count
        hi = max(0, ceil_div(first + count - j, o))
        n = hi - lo
        if n <= 0:
            continue
        t = span(tmp, 0, n)
        sum_groups(work, t, j * k + lo, n, groups, stride)
        for i in range(n):
            dst[(lo + i) * o + j - first] = t[i]


@kernel(inline="always")
def output_span(layout):
    # [lo, hi) of the parameters from the output layer's weights to its bias
    # (with scikit-learn's packing, the hidden layers' biases lie between)
    last = layout.shape[0] - 1
    fan_in, o, w_off, b_off = layer_row(layout, last)
    return w_off, (w_off + fan_in * o if b_off < 0 else b_off + o)


@kernel(inline="always")
def reduce_cut(net, opt, work):
    # (first, end, size) of REDUCE's tasks, chunks of `size` parameters in
    # [first, end): all parameters with an L2 term; without, the output
    # layer's only (the others have nothing to add, and their GRADIENT tasks
    # checked them), so that all of its tasks share the work. (A plan of
    # shards has no REDUCE, but its STEP tasks cut all parameters by P_CHUNK
    # and leave their parts where REDUCE's do: batch_step reads both alike)
    if opt.hyper[H_ALPHA] > 0 or work.plan[P_SHARDS] > 0:
        return np.int64(0), np.int64(net.params.size), work.plan[P_CHUNK]
    first, end = output_span(net.layout)
    return first, end, work.plan[P_OUT_CHUNK]


@kernel(inline="always")
def reduce_tasks(net, opt, work):
    # the number of REDUCE's tasks (see reduce_cut)
    first, end, size = reduce_cut(net, opt, work)
    return ceil_div(end - first, size)


@kernel(linked=False)
def reduce_task(net, opt, work, chunk, nb, worker):
    # parameters [lo, hi): the output layer's gradient summed over the groups,
    # + alpha * W / nb, checked finite; parts get the sum of W**2 and the check
    first, end, size = reduce_cut(net, opt, work)
    lo = first + chunk * size
    hi = min(lo + size, end)
    last = net.layout.shape[0] - 1
    o = net.layout[last, 1]
    stride = net.layout[last, 0] * o + o
    # the first block of a batch has the most groups
    groups = output_groups(work.plan, min(nb, work.plan[P_BLOCK]))
    alpha = opt.hyper[H_ALPHA]
    scale = net.params.dtype.type(alpha / batch_norm(work))
    squares = 0.0
    bad = False
    for layer in range(last + 1):
        if layer < last and not alpha > 0:
            continue  # nothing to add, and their GRADIENT tasks checked them (S_BAD)
        fan_in, fan_out, w_off, b_off = layer_row(net.layout, layer)
        for part in range(2):  # weights, then the bias
            off = w_off if part == 0 else b_off
            size = fan_in * fan_out if part == 0 else fan_out
            a, b = max(lo, off), min(hi, off + size)
            if off < 0 or a >= b:
                continue
            g = work.grads[a:b]
            if layer == last and part == 0 and work.plan[P_NARROW] != 0:
                tmp = scratch_of(work, worker)
                sum_groups_transposed(work, g, a - off, b - a, groups, stride, fan_in, o, tmp)
            elif layer == last:
                sum_groups(work, g, a - off + (0 if part == 0 else fan_in * o), b - a, groups, stride)
            if part == 0 and alpha > 0:
                w = net.params[a:b]
                squares += sum_of_squares(w)
                for i in range(b - a):
                    g[i] += scale * w[i]
            bad |= not largest(work.grads, a, b - a, np.int64(1), b - a) < np.inf
    work.parts[work.plan[P_MAX_TILES] + chunk] = squares
    work.parts[work.plan[P_MAX_TILES] + work.plan[P_MAX_CHUNKS] + chunk] = 0.0 if bad else 1.0


@kernel(linked=False)
def update_task(net, opt, work, chunk, t):
    # the optimizer's step of parameters [lo, hi) from grads
    lo = chunk * work.plan[P_CHUNK]
    hi = min(lo + work.plan[P_CHUNK], net.params.size)
    p = net.params[lo:hi]
    g = work.grads[lo:hi]
    rate = step_rate(net.params, opt, t)
    if opt.code == OPT_ADAM:
        m = opt.state1[lo:hi]
        v = opt.state2[lo:hi]
        for i in range(hi - lo):
            p[i], m[i], v[i] = adam_step(p[i], g[i], m[i], v[i], rate)
    elif opt.code == OPT_MOMENTUM:
        velocity = opt.state1[lo:hi]
        lr, mu, nesterov = rate[0], rate[1], rate[2] != 0
        for i in range(hi - lo):
            p[i], velocity[i] = momentum_step(p[i], g[i], velocity[i], lr, mu, nesterov)
    else:
        lr = rate[0]
        for i in range(hi - lo):
            p[i] -= lr * g[i]


@kernel(inline="always")
def run_task(net, data, opt, work, kind, layer, task, worker, shards, layers):
    # task `task` of the phase published in work.sync
    sync = work.sync
    at = (sync[S_START], sync[S_BLOCK], sync[S_ROWS], sync[S_NORM], sync[S_EPOCH], sync[S_T])
    # `shards` (work.shard_grads) is None for a plan of layer phases, and
    # `layers` for a plan of shards: Numba prunes the branches of the other
    # kind before compiling (it prunes on arguments that are None), so that
    # each kind of plan compiles only its own tasks
    if layers is not None:
        if kind == GATHER:
            gather_task(data, work, task, at)
        elif kind == UPDATE:
            update_task(net, opt, work, task, at[5])
        elif kind == FORWARD:
            forward_task(net, data, opt, work, layer, task, at, net.extras)
        elif kind == OUTPUT:
            output_task(net, data, work, task, at, worker)
        elif kind == GRADIENT:
            gradient_task(net, data, work, layer, task, at)
        elif kind == DELTA:
            delta_task(net, work, layer, task, at, worker)
        else:
            reduce_task(net, opt, work, task, at[3], worker)
    elif shards is not None:
        if kind == SHARD:
            shard_task(net, data, opt, work, task, at, net.extras)
        else:
            step_task(net, opt, work, task, at)


# ----------------------------------------------------------------- phases
@kernel(inline="always")
def exchange(sync, index, value):
    # sync[index] = value, atomically
    old = atomic_load(sync, index)
    while atomic_cas(sync, index, old, value) != old:
        old = atomic_load(sync, index)


@kernel(inline="always")
def take_tasks(net, data, opt, work, seq, worker, shards, layers):
    # runs tasks of phase `seq` until none is left to take
    sync = work.sync
    kind, layer, tasks = sync[S_KIND], sync[S_LAYER], sync[S_TASKS]
    while True:
        claim = atomic_load(sync, S_CLAIM)
        task = claim & TASK_MASK
        if (claim >> TASK_BITS) != seq or task >= tasks:
            return
        if atomic_cas(sync, S_CLAIM, claim, claim + 1) == claim:
            run_task(net, data, opt, work, kind, layer, task, worker, shards, layers)
            atomic_add(sync, S_DONE, 1)


@kernel(linked=False)
def run_phase(net, data, opt, work, kind, layer, at, shards, layers):
    # the driver publishes a phase, takes tasks with the helpers, and waits
    # until every task of it is finished
    # The claim counter is closed (this phase's number, no task left) before
    # the fields change: a helper still in the last phase, which read some
    # of the new fields, then finds the phase number changed and takes
    # nothing. (Without it, such a helper could take one task too many of the
    # last phase with the new fields: seen with 8 threads as Python.)
    sync = work.sync
    tasks = tile_count(net, opt, work, kind, layer, at[2])
    seq = sync[S_SEQ] + 1
    exchange(sync, S_CLAIM, (seq << TASK_BITS) | TASK_MASK)
    sync[S_KIND] = kind
    sync[S_LAYER] = layer
    sync[S_TASKS] = tasks
    sync[S_START], sync[S_BLOCK], sync[S_ROWS] = at[0], at[1], at[2]
    sync[S_NORM], sync[S_EPOCH], sync[S_T] = at[3], at[4], at[5]
    sync[S_DONE] = 0
    exchange(sync, S_CLAIM, seq << TASK_BITS)  # opens the tasks
    atomic_add(sync, S_SEQ, 1)  # publishes the fields above
    take_tasks(net, data, opt, work, seq, np.int64(0), shards, layers)  # (a literal 0 would compile run_task twice)
    wait_at_least(sync, S_DONE, tasks, YIELD_AFTER)


@kernel(inline="always")
def batch_norm(work):
    # the batch's normaliser (train.batch_norm_of), kept in the last element of work.parts
    return work.parts[work.parts.size - 1]


@kernel(inline="always")
def set_batch_norm(data, work, start, nb, epoch):
    # batch_norm of the batch of nb rows at `start` of the epoch's order
    work.parts[work.parts.size - 1] = batch_norm_of(data.W, data.order, data.use_order, epoch, start, nb)


@kernel(inline="always")
def block_pass(net, data, opt, work, at, shards, layers):
    # forward, loss and backward of one block of rows; returns its loss
    last = net.layout.shape[0] - 1
    for layer in range(last):
        run_phase(net, data, opt, work, np.int64(FORWARD), layer, at, shards, layers)
    run_phase(net, data, opt, work, np.int64(OUTPUT), last, at, shards, layers)
    value = 0.0
    for i in range(ceil_div(at[2], work.plan[P_OUT_ROWS])):
        value += work.parts[i]
    for layer in range(last - 1, -1, -1):
        run_phase(net, data, opt, work, np.int64(GRADIENT), layer, at, shards, layers)
        if layer > 0:
            run_phase(net, data, opt, work, np.int64(DELTA), layer - 1, at, shards, layers)
    return value


@kernel(inline="always")
def batch_step(net, data, opt, work, start, nb, epoch, t, shards, layers):
    # the batch's loss and gradient, block by block, then their reduction
    # (a shard plan: its shards, then the STEP of Adam's step number t into
    # the spare set); returns (loss, finite)
    # run_phase is compiled once, for int64 arguments: a literal (the first
    # batch's start, the first block's row) would compile it once more
    zero = np.int64(0)
    start = np.int64(start)
    set_batch_norm(data, work, start, nb, epoch)
    exchange(work.sync, S_BAD, 0)
    value = 0.0
    if layers is not None:  # layer phases, block by block
        if work.plan[P_NARROW] != 0:  # the output layer's weights, transposed for the narrow loops
            last = net.layout.shape[0] - 1
            fan_in, o, w_off, b_off = layer_row(net.layout, last)
            transpose(net.params, w_off, fan_in, o, work.wt)
        if data.use_order:
            run_phase(net, data, opt, work, np.int64(GATHER), zero, (start, zero, nb, nb, epoch, t), shards, layers)
        b0 = 0
        while b0 < nb:
            rows = min(work.plan[P_BLOCK], nb - b0)
            value += block_pass(net, data, opt, work, (start, np.int64(b0), rows, nb, epoch, t), shards, layers)
            b0 += rows
        run_phase(net, data, opt, work, np.int64(REDUCE), zero, (start, zero, nb, nb, epoch, t), shards, layers)
    if shards is not None:  # one SHARD phase, then one STEP phase
        run_phase(net, data, opt, work, np.int64(SHARD), zero, (start, zero, nb, nb, epoch, t), shards, layers)
        for s in range(shards_for(work.plan, nb)):
            value += work.parts[s]
        run_phase(net, data, opt, work, np.int64(STEP), zero, (start, zero, nb, nb, epoch, t), shards, layers)
    squares = 0.0
    finite = atomic_load(work.sync, S_BAD) == 0
    base = work.plan[P_MAX_TILES]
    chunks = work.plan[P_MAX_CHUNKS]
    for c in range(reduce_tasks(net, opt, work)):
        squares += work.parts[base + c]
        finite &= work.parts[base + chunks + c] != 0
    alpha = opt.hyper[H_ALPHA]
    if alpha > 0:
        value += 0.5 * alpha * squares / batch_norm(work)
    return value, finite


@kernel(inline="always")
def drive(net, data, opt, work, epochs, history, shards, layers):
    # the training loop (worker 0); returns the epochs completed: on a loss or
    # gradient that is not finite it stops before that step's update, with the
    # step's loss in history[epoch]; with control[C_RULE] set, after an epoch
    # where scikit-learn's rule says so (see fastnn._kernels.train.run_slot)
    n = data.X.shape[0]
    t = opt.step_count[0]
    for epoch in range(epochs):
        total = 0.0
        start = 0
        while start < n:
            nb = min(start + data.batch_size, n) - start
            t_next = t + 1 if opt.code == OPT_ADAM else t
            value, finite = batch_step(net, data, opt, work, start, nb, epoch, t_next, shards, layers)
            if not (finite and np.isfinite(value)):
                history[epoch] = value
                opt.step_count[0] = t
                settle(net, opt, work, shards)
                return epoch
            if layers is not None:
                zero = np.int64(0)
                at = (np.int64(start), zero, nb, nb, epoch, t_next)
                run_phase(net, data, opt, work, np.int64(UPDATE), zero, at, shards, layers)
            if shards is not None:  # the STEP's set becomes the live one
                work.sync[S_LIVE] = 1 - work.sync[S_LIVE]
            t = t_next
            total += value if net.loss == SSE else value * nb
            start += nb
        loss = total if net.loss == SSE else total / n
        history[epoch] = loss
        if opt.control[C_RULE] != 0 and end_of_epoch(loss, n, opt.code, opt.hyper, opt.control):
            opt.step_count[0] = t
            settle(net, opt, work, shards)
            return epoch + 1
    opt.step_count[0] = t
    settle(net, opt, work, shards)
    return epochs


@kernel(inline="always")
def serve(net, data, opt, work, worker, shards, layers):
    # a helper: takes tasks of every phase published until told to quit
    sync = work.sync
    seen = 0
    spins = 0
    while atomic_load(sync, S_QUIT) == 0:
        seq = atomic_load(sync, S_SEQ)
        if seq != seen:
            seen = seq
            take_tasks(net, data, opt, work, seq, worker, shards, layers)
            spins = 0
        else:
            spins += 1
            if spins > YIELD_AFTER:
                pause()


@kernel(nogil=True)
def run_worker(worker, net, data, opt, work, epochs, history, shards, layers):
    """Worker `worker` of a call: 0 drives `epochs` epochs and returns the
    epochs completed (then tells the helpers to quit); the others serve."""
    # (the caller holds the arrays for the whole call: see views.unowned)
    net, data, opt, work = unowned((net, data, opt, work))
    if worker != 0:
        serve(net, data, opt, work, worker, shards, layers)
        return 0
    done = drive(net, data, opt, work, epochs, history, shards, layers)
    atomic_add(work.sync, S_QUIT, 1)
    return done
