"""Fused training loops: many epochs of forward, backward and update in one call.

A call takes the bundles of ``fastnn._kernels.bundles`` (`Net`, `Data`,
`Optim`, which the tiled kernel takes too) and its own workspace, `Shards`
(`shard_buffers`). ``Optim.hyper`` is a float64 array ``(learning_rate,
momentum, nesterov, beta_1, beta_2, epsilon, alpha, dropout_seed,
first_epoch)`` (`hyper_array`; the last two give dropout's masks their
counters, see ``fastnn._kernels.dropout``: a seed < 0 is no dropout, and the
epochs of a call are numbered from ``first_epoch``); ``step_count`` a
one-element int64 array holding Adam's step counter between calls.
Optimizer state (``state1``, ``state2``) has the layout of ``params``.
Scalars are cast to the parameters' dtype, so a float32 model is updated in
float32. ``control`` (``CONTROL_SIZE`` float64, indices ``C_*``) switches on
scikit-learn's stopping rule and learning-rate schedules and carries their
state between calls.

``train`` and ``train_parallel`` run the same compiled loop, `run_slot`: the
first on the calling thread, the second in ``MAX_SHARDS`` slots on as many
threads (the calling one and helper threads; the loop releases the GIL).
Each slot runs one shard of every batch and keeps its own copy of the
parameters; after the shards, it applies the summed gradient to its part of
the parameters (it keeps the optimizer state of that part only) and writes
the new values into every copy. The slots wait for each other twice per
step, on atomic counters (``fastnn._kernels.sync``): once all shards are
done, and once all parts are. The results are bit-identical to ``train``'s
(``fastnn._threads`` chooses between the two). `run_slot` holds the loops (a
helper's jobs, the epochs, the batches) and calls small inlined pieces of one
idea each (`meet`, `own_optim`, `run_shards`, `update_parts`, `finish`); it
calls the two kernels that do the work, `partial_loss_and_gradients` (a
shard's forward and backward passes) and `step_part` (a part of the update),
by symbol: they are compiled apart (``fastnn._kernels._apart``), not linked
into it and optimised again with it.

Why slots and not Numba's parallel loops: ``train_parallel`` was the loop
compiled with ``parallel=True``, which opened two parallel loops per step
(the shards, then the copies' updates), each with a launch and a join of
Numba's threads, and the parallel compile took about 9 s of an estimator's
first fit in an empty cache. The slots meet on counters instead, and no
kernel is compiled with ``parallel=True`` any more (see the CHANGELOG for the
measurements).

Why parts: with a copy each (below), every slot applied the whole optimizer
step to its own copy, so each step's update ran twice, once per core
(Adam's square roots and divisions dominate it). Each slot now updates one
part and hands the new parameters to the others through their copies, at
the price of the second wait: digits step (adam, float64, 2 cores, medians
of 40 calls, processes taking turns) 84.4-86.4 us against 89.4-98.8 us with
whole-copy updates.

Why copies: when the threads shared one copy and each updated half of it,
every step moved half the parameters and half the summed gradient between
the cores' caches, through two more synchronisations. With a copy each, a
thread only reads the other shard's gradient; it does the whole optimizer
update (twice the arithmetic) on data already in its cache. Digits step
(64-100-10, batch 200, adam, 2 cores, the two kernels interleaved in one
process): 91-108 us against 96-123 us (per-round ratio 1.08-1.14 in three
runs, 1.38 in a run where the shared-copy kernel was slower than serial).

Why two sets of buffers per copy: an optimizer step must not be taken when
the loss or any gradient is not finite, which is known only at the end of
the pass that sums the shards' gradients. With two sets, one pass sums,
checks and writes the step into the other set, and the kernel switches sets
only when everything was finite. A summing pass into a buffer followed by an
update pass from it (the previous design) read and wrote the gradient once
more and serialised the reads of the other core's gradient and Adam's
divisions: digits step 92.6-94.3 us against 95.7-96.4 us (medians of 40
interleaved rounds, per-round ratio 1.02-1.03; serial twin 1.01), parameters
bit-identical. The price is three more vectors of the parameters' size per
copy.
"""

import os
import time
from collections import namedtuple

import numba
import numpy as np

from fastnn._kernels._jit import kernel
from fastnn._kernels.bundles import Optim
from fastnn._kernels.codes import OPT_ADAM, OPT_MOMENTUM, SSE
from fastnn._kernels.dense import deltas_units, partial_loss_and_gradients, sum_of_squares
from fastnn._kernels.sync import atomic_add, atomic_cas, atomic_load, wait_at_least
from fastnn._kernels.views import unless_none, unowned


@kernel(inline="always")
def momentum_step(p, g, v, lr, mu, nesterov):
    # one element of momentum_update: returns (new p, new v)
    step = lr * g
    v_new = mu * v - step
    if nesterov:
        return p + (mu * v_new - step), v_new
    return p + v_new, v_new


@kernel(inline="always")
def adam_rate(params, learning_rate, beta_1, beta_2, epsilon, t):
    # Adam's scalars in the parameters' dtype: (lr_t, b1, b2, 1 - b1, 1 - b2, eps)
    dt = params.dtype.type
    lr_t = dt(learning_rate * np.sqrt(1.0 - beta_2**t) / (1.0 - beta_1**t))
    return lr_t, dt(beta_1), dt(beta_2), dt(1.0 - beta_1), dt(1.0 - beta_2), dt(epsilon)


@kernel(inline="always")
def adam_step(p, g, m, v, rate):
    # one element of adam_update: returns (new p, new m, new v)
    lr_t, b1, b2, c1, c2, eps = rate
    m_new = b1 * m + c1 * g
    v_new = b2 * v + c2 * (g * g)
    return p - lr_t * m_new / (np.sqrt(v_new) + eps), m_new, v_new


@kernel(inline="always")
def gd_update(params, grads, learning_rate):
    # params -= learning_rate * grads
    lr = params.dtype.type(learning_rate)
    for i in range(params.size):
        params[i] -= lr * grads[i]


@kernel(inline="always")
def momentum_update(params, grads, velocity, learning_rate, momentum, nesterov):
    # v = mu * v - lr * g; params += v, or params += mu * v - lr * g (Nesterov)
    lr = params.dtype.type(learning_rate)
    mu = params.dtype.type(momentum)
    for i in range(params.size):
        params[i], velocity[i] = momentum_step(params[i], grads[i], velocity[i], lr, mu, nesterov)


@kernel(inline="always")
def adam_update(params, grads, m, v, learning_rate, beta_1, beta_2, epsilon, t):
    # m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    # params -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)   (t >= 1)
    rate = adam_rate(params, learning_rate, beta_1, beta_2, epsilon, t)
    for i in range(params.size):
        params[i], m[i], v[i] = adam_step(params[i], grads[i], m[i], v[i], rate)


# A batch is split into up to MAX_SHARDS shards of at least MIN_SHARD_ROWS
# rows; each shard's forward and backward pass fills its own gradient
# buffer and the shards' gradients are summed in a fixed order. The rule
# depends on the batch size only, never on the number of threads, so that
# `train` and `train_parallel` (which runs the shards on separate threads)
# give bit-identical results. Measured on 2 cores (digits, 64-100-10, batch
# 200): two 100-row shards 78 us each on one thread, 82 us for both on two.
MAX_SHARDS = 2  # update_range sums one or two shards
MIN_SHARD_ROWS = 32
# The `copies` workspace (see shard_buffers): sets of COPY_ROWS rows, each
# one copy's parameters (row + COPY_PARAMS) and optimizer states (+
# COPY_STATE1, + COPY_STATE2). Every copy c has two sets, the live one and
# the one its next update writes (see step_part); set 0 of copy 0 is the
# caller's arrays, so copy c's set k is the rows from COPY_ROWS * (2c + k - 1).
COPY_ROWS = 3
COPY_PARAMS = 0
COPY_STATE1 = 1
COPY_STATE2 = 2

# The twins' workspace (shard_buffers): each shard's activations, deltas and
# gradients (two halves, see batch_step), the shards' losses, the further
# sets and copies of the parameters, and the gathered batch.
Shards = namedtuple("Shards", "acts deltas grads shard_loss copies X_batch Y_batch W_batch")
# Who a call of run_slot is: its index, whether it runs with other slots
# (int64 0 or 1), their counters (SYNC_*) and, for a helper's standing call,
# its job (JOB_*; empty otherwise).
Slot = namedtuple("Slot", "index threaded sync job")

# control[...] of `train`: the stopping rule and learning-rate schedule of
# scikit-learn's stochastic solvers, and their state between calls
# hyper[...]
H_LR, H_MOMENTUM, H_NESTEROV, H_BETA_1, H_BETA_2, H_EPSILON, H_ALPHA, H_SEED, H_EPOCH = range(9)
HYPER_SIZE = 9


def hyper_array(learning_rate, momentum=0.0, nesterov=False, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                alpha=0.0, seed=-1, first_epoch=0):  # fmt: skip
    """The kernels' ``hyper`` array (``HYPER_SIZE`` float64, indices ``H_*``)."""
    if not -1 <= seed < 2**53:
        raise ValueError(f"seed must be -1 or in [0, 2**53), got {seed}")
    return np.array(
        [learning_rate, momentum, float(nesterov), beta_1, beta_2, epsilon, alpha, seed, first_epoch],
        dtype=np.float64,
    )


C_RULE = 0  # 0: run all epochs; 1: stop by the training-loss rule
C_SCHEDULE = 1  # SCHEDULE_* (SGD only)
C_LR_INIT = 2
C_POWER_T = 3
C_TOL = 4
C_N_ITER_NO_CHANGE = 5
C_BEST_LOSS = 6  # in/out
C_NO_IMPROVEMENT = 7  # in/out
C_TIME_STEP = 8  # in/out: samples seen (scikit-learn's t_)
C_STOPPED = 9  # out: 1 when the rule stopped training
CONTROL_SIZE = 10
SCHEDULE_CONSTANT = 0
SCHEDULE_INVSCALING = 1
SCHEDULE_ADAPTIVE = 2


@kernel(inline="always")
def shard_count(nb):
    # number of shards a batch of nb rows is split into
    return max(1, min(MAX_SHARDS, nb // MIN_SHARD_ROWS))


def shards_of(nb):
    """`shard_count` called from Python (its Python source: nothing to compile)."""
    return getattr(shard_count, "py_func", shard_count)(nb)


def shard_rows(batch_size):
    """Most rows a shard of any batch of up to ``batch_size`` rows has."""
    sizes = [batch_size] + [min(batch_size, k * MIN_SHARD_ROWS - 1) for k in range(2, MAX_SHARDS + 1)]
    return max(-(-nb // shards_of(nb)) for nb in sizes if nb > 0)


def shard_buffers(batch_size, layer_sizes, n_params, dtype, replicas=True, use_order=False, weighted=False):
    """The `Shards` workspace of `train` for batches of up to ``batch_size`` rows.

    ``copies`` holds the buffers the optimizer steps write (see `step_part`):
    ``COPY_ROWS`` rows of ``n_params`` for the second set of the caller's
    copy, and with ``replicas`` two sets for each further copy, one per
    thread of ``train_parallel`` (``COPY_ROWS * (2 * MAX_SHARDS - 1)`` rows).
    Without ``replicas``, ``train_parallel`` runs on one thread, as ``train``.
    ``grads`` and ``shard_loss`` have two halves of ``MAX_SHARDS`` rows, used
    by steps of even and odd number, and ``shard_loss`` ``2 * MAX_SHARDS``
    more elements for the parts of the update (see `update_parts`). The
    batch buffers have room for a batch gathered in a given order
    (``use_order``) and its sample weights (``weighted``), else none.
    """
    rows = shard_rows(batch_size)
    sets = 2 * MAX_SHARDS - 1 if replicas else 1
    gathered = batch_size if use_order else 0
    return Shards(
        np.empty((MAX_SHARDS, rows * int(sum(layer_sizes[1:]))), dtype=dtype),
        np.empty((MAX_SHARDS, rows * deltas_units(layer_sizes)), dtype=dtype),
        np.empty((2 * MAX_SHARDS, n_params), dtype=dtype),
        np.zeros(4 * MAX_SHARDS, dtype=np.float64),
        np.empty((COPY_ROWS * sets, n_params), dtype=dtype),
        np.empty((gathered, layer_sizes[0]), dtype=dtype),
        np.empty((gathered, layer_sizes[-1]), dtype=dtype),
        np.empty(gathered if weighted else 0, dtype=dtype),
    )


@kernel(inline="always")
def batch_norm_of(sample_weight, order, use_order, epoch, start, nb):
    # the normaliser of the batch of nb rows at `start` (of the epoch's order
    # when use_order): its rows, or the sum of their weights (sample_weight
    # empty: every row weighs 1); its loss is a weighted mean, and the L2
    # term is scaled likewise, as scikit-learn does
    norm = float(nb)
    if sample_weight.size > 0:
        norm = 0.0
        for r in range(nb):
            norm += sample_weight[order[epoch, start + r] if use_order else start + r]
    return norm


@kernel(inline="always")
def end_of_epoch(loss, n, optimizer_code, hyper, control):
    # scikit-learn's bookkeeping after an epoch with training loss `loss`
    # (_update_no_improvement_count without early stopping, the optimizer's
    # iteration_ends and trigger_stopping); returns True to stop
    control[C_TIME_STEP] += n
    if loss > control[C_BEST_LOSS] - control[C_TOL]:
        control[C_NO_IMPROVEMENT] += 1
    else:
        control[C_NO_IMPROVEMENT] = 0
    if loss < control[C_BEST_LOSS]:
        control[C_BEST_LOSS] = loss
    sgd = optimizer_code != OPT_ADAM
    schedule = control[C_SCHEDULE]
    if sgd and schedule == SCHEDULE_INVSCALING:
        hyper[0] = control[C_LR_INIT] / (control[C_TIME_STEP] + 1.0) ** control[C_POWER_T]
    if control[C_NO_IMPROVEMENT] > control[C_N_ITER_NO_CHANGE]:
        if not sgd or schedule != SCHEDULE_ADAPTIVE or hyper[0] <= 1e-6:
            control[C_STOPPED] = 1
            return True
        hyper[0] /= 5.0
        control[C_NO_IMPROVEMENT] = 0
    return False


@kernel(inline="always")
def copy_set(c, k, params, opt, copies):
    # (parameters, state1, state2) of copy c's set k (see COPY_ROWS)
    if c == 0 and k == 0:
        return params, opt.state1, opt.state2
    row = COPY_ROWS * (2 * c + k - 1)
    return (
        copies[row + COPY_PARAMS, : params.size],
        copies[row + COPY_STATE1, : opt.state1.size],
        copies[row + COPY_STATE2, : opt.state2.size],
    )


@kernel(inline="always")
def update_range(grads, shards, lo, hi, scale, with_l2, optimizer_code, rate, src, dst):
    # One pass over [lo, hi): g = the shards' gradients summed in shard order
    # (+ scale * W when with_l2), checked for finiteness, and the optimizer's
    # step from the parameters and states `src` written to `dst` (three
    # arrays each, never the same memory); returns True when every g is
    # finite. rate: (lr, mu, nesterov) for momentum and plain descent, see
    # adam_rate for Adam.
    # The sum, the L2 term, the check and the step fused: as a summing pass
    # (to a buffer) and an update pass (from it), a digits step's update took
    # 12 us, against 9-10 us fused, where the reads of the other shard's
    # gradient overlap Adam's divisions.
    # The check is an OR over `x - x == 0` (0 exactly for finite x), which
    # vectorises; a floating-point sum of x * 0 (the first version) is one
    # long dependency chain: 16x slower on 75k floats. The three lines that
    # form g are written out in each loop: taken from an inlined helper, the
    # loops no longer vectorised (digits step 106-112 us against 84-86 us).
    g0 = grads[0, lo:hi]
    g1 = grads[min(1, shards - 1), lo:hi]  # read only with two shards
    two = shards > 1
    p = src[0][lo:hi]
    q = dst[0][lo:hi]
    bad = False
    if optimizer_code == OPT_ADAM:
        m = src[1][lo:hi]
        v = src[2][lo:hi]
        m_out = dst[1][lo:hi]
        v_out = dst[2][lo:hi]
        for i in range(hi - lo):
            g = g0[i] + g1[i] if two else g0[i]
            if with_l2:
                g += scale * p[i]
            bad |= not (g - g == 0)
            q[i], m_out[i], v_out[i] = adam_step(p[i], g, m[i], v[i], rate)
    elif optimizer_code == OPT_MOMENTUM:
        velocity = src[1][lo:hi]
        v_out = dst[1][lo:hi]
        lr, mu, nesterov = rate[0], rate[1], rate[2] != 0
        for i in range(hi - lo):
            g = g0[i] + g1[i] if two else g0[i]
            if with_l2:
                g += scale * p[i]
            bad |= not (g - g == 0)
            q[i], v_out[i] = momentum_step(p[i], g, velocity[i], lr, mu, nesterov)
    else:
        lr = rate[0]
        for i in range(hi - lo):
            g = g0[i] + g1[i] if two else g0[i]
            if with_l2:
                g += scale * p[i]
            bad |= not (g - g == 0)
            q[i] = p[i] - lr * g
    return not bad


@kernel(inline="always")
def part_bound(size, part, parts):
    # start of part `part` of `parts` of a vector of `size` elements (a
    # multiple of 8, so that every part starts on a 64-byte boundary of
    # float64 buffers); part_bound(size, parts, parts) = size
    if part >= parts:
        return size
    return (part * size // parts) // 8 * 8


@kernel(inline="always")
def step_rate(params, opt, t):
    # the scalars of an optimizer step, in the parameters' dtype: adam_rate's
    # at Adam's step number t, else (lr, mu, nesterov, 0, 0, 0) for momentum
    # and plain descent (update_range's `rate`)
    hyper, dt = opt.hyper, params.dtype.type
    if opt.code == OPT_ADAM:
        return adam_rate(params, hyper[H_LR], hyper[H_BETA_1], hyper[H_BETA_2], hyper[H_EPSILON], t)
    zero = dt(0.0)
    return dt(hyper[H_LR]), dt(hyper[H_MOMENTUM]), dt(hyper[H_NESTEROV]), zero, zero, zero


@kernel(inline="always")
def step_between(net, opt, grads, shards, nb, t, lo, hi, src, dst):
    # One optimizer step of elements [lo, hi), from the (parameters, state1,
    # state2) of `src` into those of `dst`, with the sum of the shards'
    # gradients (rows of grads) + alpha / nb * W on the weights; t: Adam's
    # step number. Returns (sum of W**2 of src's weights in [lo, hi), whether
    # every gradient there was finite). The two-shard kernel's step_part and
    # the tiled kernel's STEP tasks take their steps here.
    params, layout = net.params, net.layout
    alpha = opt.hyper[H_ALPHA]
    with_l2 = alpha > 0
    scale = params.dtype.type(alpha / nb)
    rate = step_rate(params, opt, t)
    squares = 0.0
    finite = True
    for layer in range(layout.shape[0]):
        for part in range(2):  # the weights (with the L2 term), then the bias
            off = layout[layer, 2 + part]
            size = layout[layer, 0] * layout[layer, 1] if part == 0 else layout[layer, 1]
            a, b = max(lo, off), min(hi, off + size)
            if off < 0 or a >= b:
                continue
            l2 = with_l2 and part == 0
            if l2:
                squares += sum_of_squares(src[0][a:b])
            # (one call site: update_range's three loops are inlined once, not twice)
            finite &= update_range(grads, shards, a, b, scale, l2, opt.code, rate, src, dst)
    return squares, finite


# An optimizer step of one part of the parameters, compiled on its own and
# called once per step and slot.
@kernel(linked=False)
def step_part(net, opt, grads, copies, step, at, lo, hi):
    # One optimizer step of elements [lo, hi) of copy c, from its set `live`
    # to its other set, with the sum of the shards' gradients + the L2 term
    # (grads: the step's half of Shards.grads; copies: Shards.copies; at =
    # (c, live, n_copies); step = (shards, normaliser, Adam's step number));
    # the new parameters [lo, hi) are also written to the other set of the
    # other copies below n_copies (each slot updates one part and hands it
    # to the others). Returns (sum of W**2 of the live weights in [lo, hi),
    # whether every gradient there was finite). The live sets are left as
    # they were, so that the caller can keep them when a gradient or the
    # loss turns out not finite.
    c, live, n_copies = at
    shards, nb, t = step
    src = copy_set(c, live, net.params, opt, copies)
    dst = copy_set(c, 1 - live, net.params, opt, copies)
    squares, finite = step_between(net, opt, grads, shards, nb, t, lo, hi, src, dst)
    new = dst[0][lo:hi]
    for d in range(n_copies):
        if d != c:
            out = copy_set(d, 1 - live, net.params, opt, copies)[0][lo:hi]
            for i in range(hi - lo):
                out[i] = new[i]
    return squares, finite


@kernel
def copy_between(params, opt, copies, c, k, d, j):
    # copy d's set j = copy c's set k
    src = copy_set(c, k, params, opt, copies)
    dst = copy_set(d, j, params, opt, copies)
    for a in range(3):
        for i in range(src[a].size):
            dst[a][i] = src[a][i]


# The `sync` workspace of the parallel twin (int64, SYNC_SIZE): counters the
# slots (threads) update atomically, each on its own cache line
SYNC_MODE = 0  # 0 until decided, then MODE_PARALLEL or MODE_ALONE
SYNC_ARRIVED = 8  # slots that have started
SYNC_SHARDS = 16  # shards finished by all slots since the call began
SYNC_RESULT = 24  # epochs completed (added by the leading slot)
SYNC_FINISHED = 32  # slots that have finished their work
SYNC_PARTS = 40  # parts of the parameters updated by all slots since the call began
SYNC_SIZE = 48
MODE_PARALLEL = 1
MODE_ALONE = 2
# How long a slot waits for the other slots to start (spins of an atomic
# read, about 10 ms) before slot 0 does every slot's work alone: a helper
# thread may fail to start, or start only after slot 0 has returned, and a
# slot that waited for a slot that cannot start would wait forever. A pool
# thread that had slept for 10 ms took 1.8 ms (median; up to 10 ms) to start
# on the development machine: with 0.6 ms here, first chunks ran alone.
ARRIVE_SPINS = 1 << 25


# The `job` array of a helper's standing call of run_slot (int64, JOB_SIZE)
JOB_STATE = 0  # JOB_* below
JOB_EPOCHS = 8  # epochs of the job posted
JOB_SIZE = 16
JOB_IDLE = 0  # the helper waits for a job
JOB_POSTED = 1  # a job is there (train_parallel's post_job)
JOB_BUSY = 2  # the helper runs it
JOB_EXITED = 3  # the helper has returned (no job for SERVE_SPINS spins, or told to)
JOB_QUIT = 4  # return now (quit_job)
# How long a helper waits for the next job (spins of an atomic read, about
# 2 ms): long enough to span the Python work between two calls of a fit (the
# next chunk's shuffles), so that it is still awake when the job comes. A
# helper that had returned took 0.1 ms to start again after 0.4 ms of
# Python, and 1.8 ms (up to 10 ms) after 10 ms of sleep.
SERVE_SPINS = 1 << 23


@kernel(inline="always")
def wait_for_job(job):
    # JOB_POSTED (and the job is now the caller's: JOB_BUSY) or JOB_EXITED
    spins = 0
    while True:
        state = atomic_load(job, JOB_STATE)
        if state == JOB_POSTED:
            atomic_cas(job, JOB_STATE, JOB_POSTED, JOB_BUSY)
            return JOB_POSTED
        if state == JOB_QUIT:
            atomic_cas(job, JOB_STATE, JOB_QUIT, JOB_EXITED)
            return JOB_EXITED
        spins += 1
        if spins >= SERVE_SPINS and atomic_cas(job, JOB_STATE, JOB_IDLE, JOB_EXITED) == JOB_IDLE:
            return JOB_EXITED


@kernel
def next_job(job):
    # after a job: whether another was posted (False without a job array)
    if job.size == 0:
        return False
    atomic_cas(job, JOB_STATE, JOB_BUSY, JOB_IDLE)
    return wait_for_job(job) == JOB_POSTED


# Spins of a wait for the other slots (about 18 us) after which the waiting
# thread lets other threads run between its reads: when another process
# keeps a core busy, the slot waited for may be the one the scheduler set
# aside, and a wait that only spins holds the core it needs (with a busy
# loop on the other core, a digits fit that ran 66 of its epochs on the
# parallel twin took 0.44 s against 0.22-0.26 s).
YIELD_AFTER = 1 << 16


@kernel(inline="always")
def wait_until(sync, index, target):
    # until sync[index] >= target
    wait_at_least(sync, index, target, YIELD_AFTER)


# tally[...] of a slot's call: its counters, in one array allocated before
# the slots meet (nothing may fail after they have)
T_LIVE = 0  # the set of every copy that holds the current parameters (0 or 1)
T_ADAM = 1  # Adam's step counter
T_STEPS = 2  # steps taken in this call (their parity picks the half of grads)
T_SHARDS = 3  # shards of all steps so far (threaded: the target of the first wait)
T_PARTS = 4  # parts of all steps so far (the target of the second wait)
TALLY_SIZE = 5


@kernel(nogil=True)
def run_slot(slot, net, data, opt, work, epochs, history, extras):
    """Slot ``slot.index`` of a call of `train` or `train_parallel`.

    Trains ``epochs`` passes over the data in batches of ``data.batch_size``
    rows (in the order ``data.order[epoch]`` when ``data.use_order``), each
    batch split into ``shard_count`` shards; returns the epochs completed.
    ``history[e]`` gets epoch e's loss: the sum of batch losses for SSE, the
    size-weighted mean of batch losses otherwise. On a non-finite loss or
    gradient it stops before that step's update, with that batch's loss in
    ``history[epoch]`` (finite when a gradient was the culprit), and returns
    the epoch. With ``control[C_RULE]`` set, it stops after an epoch where
    scikit-learn's rule says so (``control[C_STOPPED] = 1``). ``extras`` is
    ``net.extras`` again, as an argument of its own: Numba prunes the
    branches of a ``None`` argument only.

    Serial (``slot.threaded == 0``) this one call does all the work.
    Threaded, slot s runs shard s of every batch on copy s of the parameters
    (copy 0: the caller's arrays; the others start as copies of it), then
    the optimizer step of part s of the parameters, which it writes into
    every copy (`update_parts`): the copies stay equal bit for bit. Every
    slot makes the same decisions (stop, learning-rate schedule) from the
    same numbers; slot 0, the leader, writes history, control, hyper and
    step_count (`own_optim`), and adds the result to ``sync[SYNC_RESULT]``.
    If the slots do not all start within ``ARRIVE_SPINS`` (`meet`), slot 0
    does all the work alone and the others return 0 at once.

    With a non-empty ``slot.job`` (a helper thread's standing call, see
    `train_parallel`) it runs the jobs posted there, one after another on the
    same arrays (each of ``job[JOB_EPOCHS]`` epochs), until none comes for
    ``SERVE_SPINS`` spins or it is told to quit.
    """
    # (The loops are written out here, and only small pieces inlined: as a
    # chain of inlined functions (call, epochs, step, shards) the same code
    # took about 5 s longer to compile, and a kernel compiled on its own
    # between this one and the two that do the work optimises their code
    # once more: about 4 s longer with the step compiled on its own.)
    # (the caller holds the arrays for the whole call: see views.unowned)
    net, data, opt, work = unowned((net, data, opt, work))
    n_epochs = epochs
    job = slot.job
    if job.size > 0:
        if wait_for_job(job) != JOB_POSTED:
            return 0
        n_epochs = job[JOB_EPOCHS]
    done = 0
    more = True
    while more:
        local = np.empty(CONTROL_SIZE + HYPER_SIZE)  # before the slots meet: nothing may fail after
        tally = np.zeros(TALLY_SIZE, dtype=np.int64)
        alone = meet(slot) == MODE_ALONE
        done = 0
        if slot.index == 0 or not alone:
            own = own_optim(slot, net, opt, work, local)
            tally[T_ADAM] = opt.step_count[0]
            done = n_epochs
            n = data.X.shape[0]
            for epoch in range(n_epochs):
                total = 0.0
                start = 0
                while start < n:
                    nb = min(start + data.batch_size, n) - start
                    # one step: this slot's shards, then its part of the update
                    # (shards, the half of grads and shard_loss the step's parity picks, normaliser)
                    norm = batch_norm_of(data.W, data.order, data.use_order, epoch, start, nb)
                    step = (shard_count(nb), (tally[T_STEPS] % 2) * MAX_SHARDS, norm)
                    run_shards(slot, alone, net, data, own, work, (epoch, start, nb), step, tally, extras)
                    value, finite = update_parts(slot, alone, net, own, work, step, tally)
                    if not finite:
                        if slot.index == 0:
                            history[epoch] = value
                        done = epoch
                        break
                    total += value if net.loss == SSE else value * nb
                    start += nb
                if done < n_epochs:
                    break
                loss = total if net.loss == SSE else total / n
                if slot.index == 0:
                    history[epoch] = loss
                if own.control[C_RULE] != 0 and end_of_epoch(loss, n, own.code, own.hyper, own.control):
                    done = epoch + 1
                    break
            finish(slot, alone, net, opt, work, done, tally)
        more = next_job(job)
        n_epochs = job[JOB_EPOCHS] if more else n_epochs
    return done


@kernel(inline="always")
def meet(slot):
    # MODE_ALONE for the serial twin. Threaded: MODE_PARALLEL when every slot
    # has arrived within ARRIVE_SPINS, else MODE_ALONE; the first slot to
    # decide decides for all.
    if slot.threaded == 0:
        return MODE_ALONE
    sync = slot.sync
    atomic_add(sync, SYNC_ARRIVED, 1)
    spins = 0
    while atomic_load(sync, SYNC_ARRIVED) < MAX_SHARDS and spins < ARRIVE_SPINS:
        spins += 1
    mode = MODE_PARALLEL if atomic_load(sync, SYNC_ARRIVED) >= MAX_SHARDS else MODE_ALONE
    before = atomic_cas(sync, SYNC_MODE, 0, mode)
    return mode if before == 0 else before


@kernel(inline="always")
def own_optim(slot, net, opt, work, local):
    # The optimizer bundle a slot works with: the caller's for the leader;
    # for another slot, private copies of control and hyper (in `local`),
    # and its copy of the parameters and states starts as the caller's. The
    # leader changes neither before every slot has finished its first shard,
    # which this slot has not yet started.
    hyper, control = opt.hyper, opt.control
    if slot.index != 0:
        for i in range(CONTROL_SIZE):
            local[i] = control[i]
        for i in range(HYPER_SIZE):
            local[CONTROL_SIZE + i] = hyper[i]
        control = local[:CONTROL_SIZE]
        hyper = local[CONTROL_SIZE:]
        # (int64 arguments: literals would compile copy_between once per call site)
        zero = np.int64(0)
        copy_between(net.params, opt, work.copies, zero, zero, slot.index, zero)
    return Optim(opt.code, hyper, opt.state1, opt.state2, opt.step_count, control)


@kernel(inline="always")
def run_shards(slot, alone, net, data, opt, work, batch, step, tally, extras):
    # The forward and backward passes of this slot's shards of batch =
    # (epoch, first row, rows), each into its own gradient and loss share;
    # threaded, then the wait for the other slots' shards. step = (shards,
    # half, normaliser): gradients and shard losses alternate between two
    # halves of work.grads and work.shard_loss by the step's parity, so that
    # a slot may start the next step's shard while another still reads this
    # one's.
    epoch, start, nb = batch
    shards, half, norm = step
    live = tally[T_LIVE]
    sync = slot.sync
    first, last = (0, MAX_SHARDS - 1) if alone else (slot.index, slot.index)
    for s in range(first, min(last, shards - 1) + 1):
        lo = (s * nb) // shards
        hi = ((s + 1) * nb) // shards
        rows = shard_data(data, work, epoch, start, lo, hi)
        params = copy_set(0 if alone else s, live, net.params, opt, work.copies)[0]
        buffers = (work.acts[s], work.deltas[s], work.grads[half + s])
        work.shard_loss[half + s] = shard_pass(net, opt, rows, params, norm, buffers, epoch, start + lo, extras)
        if not alone:
            atomic_add(sync, SYNC_SHARDS, 1)
    tally[T_SHARDS] += shards
    if not alone:
        wait_until(sync, SYNC_SHARDS, tally[T_SHARDS])


@kernel(inline="always")
def shard_pass(net, opt, rows, params, norm, buffers, epoch, first_row, extras):
    # forward, loss and backward of a shard's rows = (X, Y, sample weights)
    # into buffers = (acts, deltas, grads); returns the shard's loss share.
    # extras: net.extras, as an argument (Numba prunes the branch of a None
    # argument before compiling: see dense.extras_of); with it, dropout's
    # counters: the seed, the epoch of the fit, the shard's first row. The
    # two-shard kernel's shards and the tiled kernel's SHARD tasks run here.
    xs, ys, ws = rows
    acts, deltas, grads = buffers
    layout, output, loss = net.layout, net.output, net.loss
    # (one call: with `if extras is None`, a model with kept slopes compiled
    # the kernel for drop=None too, 4 s of its first fit, never to run it)
    drop = unless_none(extras, (np.int64(opt.hyper[H_SEED]), np.int64(opt.hyper[H_EPOCH]) + epoch, np.int64(first_row)))
    return partial_loss_and_gradients(xs, ys, ws, params, layout, output, loss, norm, acts, deltas, grads, drop)


@kernel(inline="always")
def shard_data(data, work, epoch, start, lo, hi):
    # (X, Y, sample weights) of rows [lo, hi) of the batch at `start`: views
    # of the data, or, in the order order[epoch], gathered into work's batch
    # buffers (element loops rather than `X_batch[r, :] = X[src]`, whose
    # shape check compiles a formatted error message: seconds of cold
    # compile). Weights are empty when the rows are not weighted.
    X, Y, W, order = data.X, data.Y, data.W, data.order
    X_batch, Y_batch, W_batch = work.X_batch, work.Y_batch, work.W_batch
    weighted = W.size > 0
    if data.use_order:
        for r in range(lo, hi):
            src = order[epoch, start + r]
            for c in range(X.shape[1]):
                X_batch[r, c] = X[src, c]
            for c in range(Y.shape[1]):
                Y_batch[r, c] = Y[src, c]
            if weighted:
                W_batch[r] = W[src]
        ws = W_batch[lo:hi] if weighted else W_batch[0:0]
        return X_batch[lo:hi], Y_batch[lo:hi], ws
    ws = W[start + lo : start + hi] if weighted else W_batch[0:0]
    return X[start + lo : start + hi], Y[start + lo : start + hi], ws


@kernel(inline="always")
def update_parts(slot, alone, net, opt, work, batch, tally):
    # This slot's part of the optimizer step (alone: every part, into copy
    # 0), from the sum of the gradients of the batch's shards; batch =
    # (shards, half, normaliser), as run_shards gets it. Threaded, then the
    # wait for the other slots' parts. Returns the batch's loss (the shards'
    # shares and the L2 term) and whether it and every gradient were finite;
    # only then do the copies switch to the sets the step wrote. The parts'
    # sums of squared weights and finiteness (work.shard_loss[2 *
    # MAX_SHARDS:]) are summed part by part, in part order, in every slot
    # and alone, so that the losses are the same too.
    shards, half, norm = batch
    t = tally[T_ADAM] + 1 if opt.code == OPT_ADAM else tally[T_ADAM]
    step = (shards, norm, t)
    grads, copies, losses = work.grads[half : half + MAX_SHARDS], work.copies, work.shard_loss
    first, last = (0, MAX_SHARDS - 1) if alone else (slot.index, slot.index)
    n_copies = 1 if alone else MAX_SHARDS
    size = net.params.size
    for part in range(first, last + 1):
        at = (np.int64(0 if alone else part), tally[T_LIVE], np.int64(n_copies))
        lo, hi = part_bound(size, part, MAX_SHARDS), part_bound(size, part + 1, MAX_SHARDS)
        squares, ok = step_part(net, opt, grads, copies, step, at, lo, hi)
        losses[2 * MAX_SHARDS + part] = squares
        losses[3 * MAX_SHARDS + part] = 1.0 if ok else 0.0
    if not alone:
        atomic_add(slot.sync, SYNC_PARTS, 1)
        tally[T_PARTS] += MAX_SHARDS
        wait_until(slot.sync, SYNC_PARTS, tally[T_PARTS])
    value = losses[half]
    for s in range(1, shards):
        value += losses[half + s]
    squares = 0.0
    finite = True
    for part in range(MAX_SHARDS):
        squares += losses[2 * MAX_SHARDS + part]
        finite &= losses[3 * MAX_SHARDS + part] != 0
    alpha = opt.hyper[H_ALPHA]
    if alpha > 0:
        value += 0.5 * alpha * squares / norm
    tally[T_STEPS] += 1
    if not (finite and np.isfinite(value)):
        return value, False
    tally[T_LIVE] = 1 - tally[T_LIVE]
    tally[T_ADAM] = t
    return value, True


@kernel(inline="always")
def finish(slot, alone, net, opt, work, done, tally):
    # After the epochs. Threaded, the leader goes on once every slot is done
    # with the arrays, so that the caller need not wait for the helper
    # threads to get back to Python (a wait on their futures took about 50
    # us more per call), and merges the optimizer state each slot kept for
    # its part. Then the leader leaves the live set in the caller's arrays
    # and writes step_count and, threaded, the result.
    leader = slot.index == 0
    live = tally[T_LIVE]
    if not alone:
        atomic_add(slot.sync, SYNC_FINISHED, 1)
        if leader:
            wait_until(slot.sync, SYNC_FINISHED, MAX_SHARDS)
            size = net.params.size
            dst = copy_set(0, live, net.params, opt, work.copies)
            for part in range(1, MAX_SHARDS):
                src = copy_set(part, live, net.params, opt, work.copies)
                lo, hi = part_bound(size, part, MAX_SHARDS), part_bound(size, part + 1, MAX_SHARDS)
                for a in range(1, 3):
                    for i in range(lo, min(hi, src[a].size)):
                        dst[a][i] = src[a][i]
    if leader:
        if live == 1:
            zero = np.int64(0)
            copy_between(net.params, opt, work.copies, zero, np.int64(1), zero, zero)
        opt.step_count[0] = tally[T_ADAM]
        if slot.threaded != 0:
            atomic_add(slot.sync, SYNC_RESULT, done)


@kernel(nogil=True)
def ping_pong(sync, me, parties, rounds, buf):
    # `rounds` turns of thread `me` of `parties` (1 or 2) taking turns on
    # the counter sync[SYNC_SHARDS]: a turn adds 1 to every element of buf,
    # then passes the turn on. fastnn bench's measure of how fast the
    # parallel twin's threads hand work to each other.
    one = buf.dtype.type(1.0)
    for k in range(rounds):
        wait_until(sync, SYNC_SHARDS, parties * k + me)
        for i in range(buf.size):
            buf[i] += one
        atomic_add(sync, SYNC_SHARDS, 1)
    return rounds


@kernel(inline="always")
def settled_state(job):
    # the helper's state once it has left its last job (not JOB_BUSY)
    state = atomic_load(job, JOB_STATE)
    while state == JOB_BUSY:
        state = atomic_load(job, JOB_STATE)
    return state


@kernel
def post_job(job, sync, epochs):
    # hands a job of `epochs` epochs to the helper waiting on `job`, with
    # `sync` cleared; False when that helper has returned (or is returning)
    if settled_state(job) != JOB_IDLE:
        return False
    for i in range(sync.size):
        sync[i] = 0
    job[JOB_EPOCHS] = epochs
    return atomic_cas(job, JOB_STATE, JOB_IDLE, JOB_POSTED) == JOB_IDLE


@kernel
def quit_job(job):
    # tells the helper waiting on `job`, if any, to return
    settled_state(job)
    atomic_cas(job, JOB_STATE, JOB_IDLE, JOB_QUIT)


def _check_workspaces(net, opt, work):
    params, grads, shard_loss, copies = net.params, work.grads, work.shard_loss, work.copies
    if opt.hyper.size != HYPER_SIZE:
        raise ValueError(f"hyper has {opt.hyper.size} entries, not {HYPER_SIZE} (see hyper_array)")
    if opt.control.size != CONTROL_SIZE:
        raise ValueError(f"control has {opt.control.size} entries, not {CONTROL_SIZE}")
    if grads.shape[0] < 2 * MAX_SHARDS or shard_loss.size < 4 * MAX_SHARDS:
        raise ValueError(
            f"grads and shard_loss need {2 * MAX_SHARDS} and {4 * MAX_SHARDS} rows (see "
            f"shard_buffers), got {grads.shape[0]} and {shard_loss.size}"
        )
    if copies.shape[0] < COPY_ROWS or copies.shape[1] < params.size:
        raise ValueError(
            f"copies needs at least {COPY_ROWS} rows of {params.size} (see shard_buffers), "
            f"got shape {copies.shape}"
        )


def train(net, data, opt, work, epochs, history):
    """Many epochs of mini-batch training in one compiled call, on this thread.

    ``net``, ``data`` and ``opt`` are the bundles of ``fastnn._kernels.bundles``,
    ``work`` the `Shards` of `shard_buffers`; ``history`` gets each epoch's
    loss. Returns the epochs completed (see `run_slot`).
    """
    _check_workspaces(net, opt, work)
    slot = Slot(np.int64(0), np.int64(0), np.zeros(SYNC_SIZE, dtype=np.int64), _NO_JOB)
    return int(run_slot(slot, net, data, opt, work, np.int64(epochs), history, net.extras))


_NO_JOB = np.zeros(0, dtype=np.int64)
_helpers = {"pid": None, "pool": None, "failed": False, "pending": [], "server": None}


def _helper_pool():
    # the threads that run slots 1 .. MAX_SHARDS - 1 (a new pool in a forked child)
    import concurrent.futures

    if _helpers["pid"] != os.getpid():
        # (one more worker than helpers: a new helper need not queue behind
        # one that is returning)
        _helpers["pool"] = concurrent.futures.ThreadPoolExecutor(
            max_workers=MAX_SHARDS, thread_name_prefix="fastnn-slot"
        )
        _helpers["pid"] = os.getpid()
        _helpers["pending"] = []
        _helpers["server"] = None
    return _helpers["pool"]


def _job_key(net, data, opt, work, history):
    # what a helper's standing call was made with, but the epochs: the same
    # objects (alive, held by that call, so their ids are theirs) and values
    fields = (*net, *data, *opt, *work, history)
    return tuple(id(a) if isinstance(a, np.ndarray) else a for a in fields)


def _post(net, data, opt, work, epochs, history):
    # the `sync` of a job of `epochs` epochs, posted to standing helpers, or
    # None when none is posted: the helpers of the last call have returned
    # or were called with other arrays, and new ones could not be met
    key = _job_key(net, data, opt, work, history)
    server = _helpers["server"]
    if server is not None:
        sync = server["sync"]
        if server["key"] == key and all(post_job(job, sync, epochs) for job in server["jobs"]):
            return sync
        for job in server["jobs"]:
            quit_job(job)
        _helpers["server"] = None
    # new helpers, met first on an empty job: a thread of the pool took from
    # 0.1 to 10 ms to start on the development machine, which would count
    # as time of the first epochs (see last_startup_s)
    pool = _helper_pool()
    sync = np.zeros(SYNC_SIZE, dtype=np.int64)
    jobs = []
    for index in range(1, MAX_SHARDS):
        job = np.zeros(JOB_SIZE, dtype=np.int64)
        job[JOB_STATE] = JOB_POSTED
        jobs.append(job)
        slot = Slot(np.int64(index), np.int64(1), sync, job)
        _helpers["pending"].append(
            pool.submit(run_slot, slot, net, data, opt, work, np.int64(0), history, net.extras)
        )
    _helpers["server"] = {"key": key, "sync": sync, "jobs": jobs}
    leader = Slot(np.int64(0), np.int64(1), sync, _NO_JOB)
    run_slot(leader, net, data, opt, work, np.int64(0), history, net.extras)
    if sync[SYNC_MODE] == MODE_PARALLEL and all(post_job(job, sync, epochs) for job in jobs):
        return sync
    return None


def train_parallel(net, data, opt, work, epochs, history):
    """`train` with its slots on ``MAX_SHARDS`` threads: the same results.

    Slot 0 runs on this thread and the others on helper threads (`run_slot`
    releases the GIL), which wait about 2 ms for the next call with the same
    arrays before they return (the next chunk of a fit finds them awake).
    Without room in ``work.copies`` for a copy per slot
    (``shard_buffers(..., replicas=False)``), or with ``NUMBA_DISABLE_JIT=1``,
    it runs as `train`. ``train_parallel.last_startup_s`` is the time the
    last call spent starting helpers before the work (0 when they were
    waiting), which ``fastnn._threads.TwinRunner`` leaves out of its timing.
    """
    _check_workspaces(net, opt, work)
    # (as Python, with NUMBA_DISABLE_JIT, the slots' waits would hold the
    # GIL: one thread is faster)
    replicas = work.copies.shape[0] >= COPY_ROWS * (2 * MAX_SHARDS - 1)
    if not replicas or numba.config.DISABLE_JIT or _helpers["failed"]:
        return train(net, data, opt, work, epochs, history)
    start = time.perf_counter()
    sync = _post(net, data, opt, work, epochs, history)
    train_parallel.last_startup_s = time.perf_counter() - start
    if sync is None:  # the helpers did not come: this thread alone
        done = train(net, data, opt, work, epochs, history)
    else:
        leader = Slot(np.int64(0), np.int64(1), sync, _NO_JOB)
        run_slot(leader, net, data, opt, work, np.int64(epochs), history, net.extras)
        done = int(sync[SYNC_RESULT])
    # slot 0 returns when every slot is done with the arrays (or, alone,
    # when it has done all the work); the helpers' standing calls return
    # later, and are looked at now or in a later call
    pending = _helpers["pending"]
    for other in [f for f in pending if f.done()]:
        pending.remove(other)
        if other.exception() is not None:
            # a helper could not run: run as `train` from now on
            _helpers["failed"] = True
    return done


train_parallel.last_startup_s = 0.0
