"""Running a training kernel's serial or parallel twin, chosen by measurement.

``train`` and ``train_parallel`` (``fastnn._kernels.train``) give
bit-identical results; the parallel twin runs the shards of each batch on
separate threads. Whether that is faster depends on the machine and on what
else it is doing: on 2 idle cores it is about 1.8x faster on scikit-learn's
digits with default settings (84-86 against 152 us per step; 120-150 us in
spells when the host ran the two virtual CPUs far apart), but while another
process keeps one core busy the parallel twin waits for that core and is
slower than the serial one (185 us against 170 us per step with a busy loop
on the other core, measured on earlier code).
So :class:`TwinRunner` runs training in chunks of epochs, times both twins
on short probe chunks, runs the faster one, and probes again now and then;
what it measured carries over to the next fit of the same kind.
Because both twins give the same numbers, the choice changes speed only.

The parallel twin runs one slot of the kernel on this thread and the other
on a helper thread (``train_parallel``). It is not used when Numba may use
only one thread (``numba.set_num_threads(1)`` or ``NUMBA_NUM_THREADS=1``,
the setting fastnn honours for its own threads), while another thread of the
process runs it (the two would wait for cores held by each other), or once it
failed to start.
"""

from __future__ import annotations

import contextlib
import threading
import time

_lock = threading.Lock()
# what this process has learnt: whether the parallel twin failed to start,
# the twins already loaded, and per key the latest seconds per epoch of each
# twin and the chunks run since the slower one was last probed (shared by
# the fits of a process, so that loops of short fits choose well too)
_state = {"broken": False, "calls": set(), "learned": {}}


def parallel_allowed():
    """Whether this process and thread may run a parallel kernel now."""
    if _state["broken"]:
        return False
    try:
        import numba

        return numba.get_num_threads() > 1
    except Exception:  # pragma: no cover - Numba without threading support
        return False


class TwinRunner:
    """Chunks of epochs for a serial/parallel kernel pair, fastest twin first.

    Parameters
    ----------
    serial, parallel : callable
        The twins; same arguments, same results.
    key : hashable
        The kind of fit (dtype, shapes, batch size, ...): what is learnt is
        kept per key, and the first call of each twin per key in a process
        (which may load or compile it) is not timed.
    parallel_ok : bool
        False to use the serial twin only.
    """

    force = None  # True / False: run that twin only (``fastnn warmup`` compiles both)
    PROBE = 3  # epochs of a probe chunk
    CHUNK = 20  # epochs of a chunk run with the faster twin
    REPROBE = 5  # chunks between probes of the slower twin
    # ... and when the slower twin took at least WIDE times as long per
    # epoch at its last WIDE_PROBES measurements, REPROBE_WIDE chunks. The
    # faster twin's chunks are timed too, so a switch when it slows down
    # needs no probe; the probes only find out whether the slower twin has
    # become faster, which is unlikely soon after a wide gap, seen twice
    # (once could be a noisy probe, which would then hold the choice for
    # long). On digits (parallel about 1.6x faster) the probes cost 1-2% of
    # a fit at every REPROBE chunks.
    WIDE = 1.25
    WIDE_PROBES = 2
    REPROBE_WIDE = 20

    def __init__(self, serial, parallel, key, parallel_ok):
        self.serial = serial
        self.parallel = parallel
        self.key = key
        self.parallel_ok = bool(parallel_ok) and parallel_allowed()
        self._learned = _state["learned"].setdefault(
            key,
            {"per_epoch": {}, "since_probe": 0, "warm": False, "wide": 0, "best": None,
             "probed": False, "startup": 0.0},
        )  # fmt: skip
        # True (parallel) / False (serial) -> latest seconds per epoch
        self.per_epoch = self._learned["per_epoch"]
        # the first chunk touches fresh buffers and wakes sleeping worker
        # threads: the first of a key in the process is not timed (it biased
        # the first probe by 5-10%)
        self._warmup = not self._learned["warm"]
        self.used = {True: 0, False: 0}  # epochs run by each twin (for tests and reports)
        self._probe = False  # whether the chunk planned last is a probe
        self._started = False  # whether this fit has run the parallel twin (its helpers wait)

    def plan(self, remaining):
        """(use_parallel, epochs) for the next chunk of at most ``remaining`` epochs.

        With the serial twin only, the whole ``remaining`` (the caller caps
        its chunks); else probe chunks, then chunks of ``CHUNK`` epochs.
        """
        if not self.parallel_ok:
            return False, remaining
        if TwinRunner.force is not None:
            return TwinRunner.force, min(remaining, self.CHUNK)
        self._probe = True
        if self._warmup:
            return True, 1
        for mode in (True, False):
            if mode not in self.per_epoch:
                return mode, min(remaining, self.PROBE)
        best = self.per_epoch[True] < self.per_epoch[False]
        last, self._learned["best"] = self._learned["best"], best
        if last is not None and best != last and not self._learned["probed"]:
            # A chunk of the faster twin was slower than the other twin's
            # last time: time it again at once. A single slow chunk (the
            # machine had a noisy moment) would otherwise hold the choice for
            # REPROBE chunks or more (a digits fit then ran 120 of its 200
            # epochs serially, in 0.22 s instead of 0.13 s).
            self._learned["wide"] = 0
            self._learned["since_probe"] = 0
            return last, min(remaining, self.PROBE)
        every = self.REPROBE_WIDE if self._learned["wide"] >= self.WIDE_PROBES else self.REPROBE
        epochs = min(remaining, self.CHUNK)
        best = best and self._parallel_faster(epochs)  # its helpers' startup counted
        if not (best or self._may_win(epochs)):
            every = self.REPROBE_WIDE  # (a probe only measures the startup again)
        if self._learned["since_probe"] >= every:
            self._learned["since_probe"] = 0
            return (not best), min(remaining, self.PROBE)
        self._learned["since_probe"] += 1
        self._probe = False
        return best, min(remaining, self.CHUNK)

    def _parallel_faster(self, epochs):
        # Whether the parallel twin would run a chunk of `epochs` epochs
        # faster: per epoch, and counting the time its helpers took to start
        # in the first parallel chunk of the last fit of this kind, until
        # this fit has started them (they then wait for its next chunks). A
        # fit of one short epoch, as each partial_fit is, runs serially:
        # 200 rows of digits, one step, took 316 us in all on the parallel
        # twin (about 200 us of it starting the helper) against 150 us on
        # the serial one.
        return self.per_epoch[True] * epochs + self._startup() < self.per_epoch[False] * epochs

    def _may_win(self, epochs):
        # whether the parallel twin could run a chunk of `epochs` epochs
        # faster at all: not when starting its helpers takes longer than the
        # serial twin's whole chunk (then it is probed only every
        # REPROBE_WIDE chunks, which measures its startup again)
        return self._startup() < self.per_epoch[False] * epochs

    def _startup(self):
        # what starting the parallel twin's helpers would add to this fit's
        # next parallel chunk: nothing once this fit has started them
        return 0.0 if self._started else self._learned["startup"]

    def run(self, use_parallel, epochs, args):
        """Run one chunk: ``args`` are the twins' arguments, for ``epochs`` epochs.

        Returns the twin's result (the epochs it completed).
        """
        if use_parallel and self.parallel_ok and _lock.acquire(blocking=False):
            try:
                start = time.perf_counter()
                try:
                    done = self.parallel(*args)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception:
                    # no helper thread could start: the twin raised before
                    # running, so the state is untouched; go on serially
                    _state["broken"] = True
                    self.parallel_ok = False
                else:
                    # less the time it spent starting its threads, if it says
                    # (once per fit, not a cost of the epochs: it made
                    # 3-epoch probes of the parallel twin look 2x slower)
                    seconds = time.perf_counter() - start
                    startup = getattr(self.parallel, "last_startup_s", 0.0)
                    if not self._started and not self._untimed(True):
                        # (the first call of a process also loads the kernel in the helper)
                        self._learned["startup"] = startup
                    self._started = True
                    self._record(True, done, seconds - startup)
                    return done
            finally:
                _lock.release()
        start = time.perf_counter()
        done = self.serial(*args)
        self._record(False, done, time.perf_counter() - start)
        return done

    def _untimed(self, mode):
        # whether the chunk just run is not timed: the warm-up chunk, or this
        # twin's first call for this key in the process (which may load or compile it)
        return (mode, self.key) not in _state["calls"] or self._warmup

    def _record(self, mode, done, seconds):
        self.used[mode] += int(done)
        untimed = self._untimed(mode)
        _state["calls"].add((mode, self.key))
        self._warmup = False
        self._learned["warm"] = True
        if not untimed and done > 0:
            self.per_epoch[mode] = seconds / done
            self._learned["probed"] = self._probe
            if self._probe and len(self.per_epoch) == 2:
                # a probe, with both twins measured: count the wide gaps in a row
                fast, slow = sorted(self.per_epoch.values())
                self._learned["wide"] = self._learned["wide"] + 1 if slow >= self.WIDE * fast else 0


# Below this many multiply-adds in the largest matrix product of a step, the
# products run faster on one BLAS thread: the work per call is a few tens of
# microseconds, less than what waking and synchronising threads costs, and on
# a loaded machine multi-threaded OpenBLAS spends most of it spinning
# (digits, default settings, 2 busy cores: 7.7 s with 2 threads, 0.67 s with 1).
SINGLE_THREAD_MACS = 1 << 22
_blas = {"lock": threading.Lock(), "depth": 0, "limiter": None, "controller": None}


def blas_architecture():
    """The kernel set of the OpenBLAS the kernels call (threadpoolctl's
    ``architecture``, lower case: ``"haswell"``, ``"skylakex"``, ...), or
    None when that is not known: another BLAS, several that differ, or no
    threadpoolctl. Read once per process (``OPENBLAS_CORETYPE`` is read when
    OpenBLAS loads)."""
    with _blas["lock"]:
        if "architecture" not in _blas:
            _blas["architecture"] = _read_blas_architecture()
        return _blas["architecture"]


def _read_blas_architecture():
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (the BLAS the kernels call)
        from threadpoolctl import threadpool_info

        blas = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    except Exception:  # pragma: no cover - threadpoolctl missing or unable
        return None
    kinds = {(lib.get("internal_api"), str(lib.get("architecture") or "").lower()) for lib in blas}
    if len(kinds) != 1:
        return None
    api, architecture = kinds.pop()
    return architecture if api == "openblas" and architecture else None


def large_products(layer_units, rows):
    """Whether the largest matrix product of a step has ``SINGLE_THREAD_MACS`` multiply-adds or more."""
    return rows * max(a * b for a, b in zip(layer_units[:-1], layer_units[1:])) >= SINGLE_THREAD_MACS


@contextlib.contextmanager
def blas_single_thread_for(layer_units, rows):
    """Run the block with one BLAS thread when the matrix products are small.

    Yields True when BLAS is limited to one thread (so that the kernels' own
    threads may be used), False for large products, left to BLAS's threads.
    """
    if large_products(layer_units, rows):
        yield False
        return
    with blas_single_thread() as limited:
        yield limited


def _free_openblas():
    # threadpoolctl (3.8) lets only one thread, the first to set a limit,
    # change OpenBLAS's process-wide thread count, and silently ignores the
    # others: a fit called from any other thread then ran its products on
    # BLAS's default threads (other rounding, and every worker's products
    # competing for the cores). fastnn's limit is one per process, taken and
    # given back under _blas["lock"], so it frees the control around it.
    try:
        from threadpoolctl import OpenBLASController
    except ImportError:  # pragma: no cover - older threadpoolctl: no such rule
        return
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


@contextlib.contextmanager
def blas_single_thread():
    """Run the block with one BLAS thread.

    Nested and concurrent calls in one process share a single limit, set by the
    first to enter and restored by the last to leave. Yields True when BLAS
    is limited to one thread (False when threadpoolctl could not limit it).
    """
    state = _blas
    with state["lock"]:
        if state["depth"] == 0:
            try:
                if state["controller"] is None:
                    import scipy.linalg.cython_blas  # noqa: F401  (the BLAS the kernels call)
                    from threadpoolctl import ThreadpoolController

                    state["controller"] = ThreadpoolController()
                _free_openblas()
                state["limiter"] = state["controller"].limit(limits=1, user_api="blas")
            except Exception:  # threadpoolctl missing or unable: leave BLAS as it is
                state["limiter"] = None
        state["depth"] += 1
        limited = state["limiter"] is not None
    try:
        yield limited
    finally:
        with state["lock"]:
            state["depth"] -= 1
            if state["depth"] == 0 and state["limiter"] is not None:
                _free_openblas()
                state["limiter"].restore_original_limits()
                state["limiter"] = None
                _free_openblas()
