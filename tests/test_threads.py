"""TwinRunner: the choice between a training kernel's serial and parallel twin."""

import numpy as np
import pytest

from fastnn import _threads


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(_threads.time, "perf_counter", c)
    monkeypatch.setattr(
        _threads, "_state", {"broken": False, "calls": set(), "learned": {}}
    )
    monkeypatch.setattr(_threads, "parallel_allowed", lambda: True)
    return c


def twins(clock, serial_s, parallel_s, log):
    """Fake kernels: args = (epochs,); each takes the given seconds per epoch."""

    def serial(epochs):
        log.append(("serial", epochs))
        clock.now += serial_s * epochs
        return epochs

    def parallel(epochs):
        log.append(("parallel", epochs))
        clock.now += parallel_s * epochs
        return epochs

    return serial, parallel


def drive(runner, total):
    done = 0
    while done < total:
        mode, count = runner.plan(total - done)
        done += runner.run(mode, count, (count,))


@pytest.mark.parametrize("parallel_faster", [True, False])
@pytest.mark.parametrize("gap", ["close", "wide"])
def test_probes_both_then_runs_the_faster_and_probes_again(clock, parallel_faster, gap):
    log = []
    # the slower twin 1.1x (close: probed every REPROBE chunks) or 1.5x
    # (wide: after WIDE_PROBES measurements that wide, every REPROBE_WIDE)
    # the faster one's time per epoch
    slower = 1.1 if gap == "close" else 1.5
    serial_s, parallel_s = (slower, 1.0) if parallel_faster else (1.0, slower)
    serial, parallel = twins(clock, serial_s, parallel_s, log)
    runner = _threads.TwinRunner(serial, parallel, "k", parallel_ok=True)
    P, C, R = runner.PROBE, runner.CHUNK, runner.REPROBE
    R2 = runner.REPROBE if gap == "close" else runner.REPROBE_WIDE
    assert 1.1 < runner.WIDE <= 1.5 and runner.WIDE_PROBES == 2
    total = 1 + 3 * P + R * C + P + R2 * C + P + C
    drive(runner, total)
    fast, slow = ("parallel", "serial") if parallel_faster else ("serial", "parallel")
    # an untimed first epoch, then a timed probe of each twin (the first call
    # of a twin in the process loads it and is not timed either)
    expected = [("parallel", 1), ("parallel", P), ("serial", P), ("serial", P)]
    expected += [(fast, C)] * R + [(slow, P)] + [(fast, C)] * R2 + [(slow, P), (fast, C)]
    assert log == expected
    assert runner.used[True] + runner.used[False] == total


def test_one_wide_probe_is_not_enough(clock):
    # a slower twin measured wide once, then close: probed every REPROBE chunks
    log = []
    times = {"serial": [1.5, 1.5, 1.1, 1.1, 1.1]}
    def serial(epochs):
        log.append(("serial", epochs))
        clock.now += (times["serial"].pop(0) if times["serial"] else 1.1) * epochs
        return epochs
    def parallel(epochs):
        log.append(("parallel", epochs))
        clock.now += 1.0 * epochs
        return epochs
    runner = _threads.TwinRunner(serial, parallel, "k", parallel_ok=True)
    P, C, R = runner.PROBE, runner.CHUNK, runner.REPROBE
    drive(runner, 1 + 3 * P + 2 * (R * C + P))
    # warm-up, timed parallel, serial load (untimed, 1.5), serial probe (1.5:
    # one wide), then reprobes every R chunks: the second probe (1.1) resets
    expected = [("parallel", 1), ("parallel", P), ("serial", P), ("serial", P)]
    expected += ([("parallel", C)] * R + [("serial", P)]) * 2
    assert log == expected


@pytest.mark.parametrize("spike", ["once", "lasting"])
def test_a_slow_chunk_of_the_faster_twin_is_timed_again_at_once(clock, spike):
    # parallel 1.0, serial 1.5 per epoch; the third chunk of the parallel
    # twin takes 3.0 per epoch (a noisy moment, or for good): the runner
    # probes the parallel twin again at once instead of running the serial
    # one for REPROBE_WIDE chunks, and keeps the serial one only if the
    # parallel one stays slow
    log = []
    chunks = {"parallel": 0}

    def serial(epochs):
        log.append(("serial", epochs))
        clock.now += 1.5 * epochs
        return epochs

    def parallel(epochs):
        log.append(("parallel", epochs))
        chunks["parallel"] += 1
        slow = chunks["parallel"] == 5 or (spike == "lasting" and chunks["parallel"] > 5)
        clock.now += (3.0 if slow else 1.0) * epochs
        return epochs

    runner = _threads.TwinRunner(serial, parallel, "k", parallel_ok=True)
    P, C = runner.PROBE, runner.CHUNK
    drive(runner, 1 + 3 * P + 3 * C + P + 2 * C)
    # warm-up, parallel probe, serial load and probe, two parallel chunks,
    # the slow one, the parallel twin again at once (a probe), then chunks
    expected = [("parallel", 1), ("parallel", P), ("serial", P), ("serial", P)]
    expected += [("parallel", C)] * 3 + [("parallel", P)]
    if spike == "once":
        expected += [("parallel", C)] * 2
    else:
        expected += [("serial", C)] * 2
    assert log == expected


def test_the_parallel_twins_startup_is_not_timed(clock):
    # a parallel twin that spent 2.5 of its 3.0 seconds starting its threads
    # (train_parallel.last_startup_s) is timed at 0.5 / 3 epochs
    log = []
    serial, parallel = twins(clock, 1.0, 1.0, log)

    def starting(epochs):
        done = parallel(epochs)
        clock.now += 2.5
        starting.last_startup_s = 2.5
        return done

    runner = _threads.TwinRunner(serial, starting, "k", parallel_ok=True)
    runner.run(True, 1, (1,))  # the first call of a twin is not timed
    runner.run(True, 3, (3,))
    assert runner.per_epoch[True] == pytest.approx(1.0)


def test_a_later_runner_starts_from_what_was_learnt(clock):
    log = []
    serial, parallel = twins(clock, 2.0, 1.0, log)
    drive(_threads.TwinRunner(serial, parallel, "k", parallel_ok=True), 12)
    log.clear()
    runner = _threads.TwinRunner(serial, parallel, "k", parallel_ok=True)
    drive(runner, 2 * runner.CHUNK)
    assert log == [("parallel", runner.CHUNK)] * 2
    # another key learns on its own
    log.clear()
    drive(_threads.TwinRunner(serial, parallel, "other", parallel_ok=True), 1)
    assert log == [("parallel", 1)]


@pytest.mark.parametrize("parallel_faster", [True, False])
def test_a_loop_of_one_epoch_fits_learns_and_probes_again(clock, parallel_faster):
    log = []
    serial, parallel = twins(clock, 1.1, 1.0 if parallel_faster else 1.2, log)
    for _ in range(12):
        drive(_threads.TwinRunner(serial, parallel, "k", parallel_ok=True), 1)
    fast, slow = ("parallel", "serial") if parallel_faster else ("serial", "parallel")
    R = _threads.TwinRunner.REPROBE
    # warm-up, timed parallel, serial load, timed serial; then the faster,
    # with the slower probed again every REPROBE fits
    expected = ["parallel", "parallel", "serial", "serial"] + [fast] * R + [slow] + [fast] * 2
    assert [mode for mode, _ in log] == expected


def starting_twins(clock, serial_s, parallel_s, startup_s, log):
    """`twins` whose parallel twin takes ``startup_s`` more to start its helpers
    at every call, as at each partial_fit (new arrays: new helpers)."""
    serial, parallel = twins(clock, serial_s, parallel_s, log)

    def starting(epochs):
        clock.now += startup_s
        starting.last_startup_s = startup_s
        return parallel(epochs)

    return serial, starting


@pytest.mark.parametrize("startup", [0.5, 3.0])
def test_one_epoch_fits_count_the_helpers_startup(clock, startup):
    # parallel 1.0 per epoch, serial 2.0: for a fit of one epoch, the helpers'
    # startup (measured at the last fit) is counted against the parallel twin.
    # 0.5: still the faster, 3.0: serial, and a startup longer than a whole
    # serial chunk is never probed again
    log = []
    serial, parallel = starting_twins(clock, 2.0, 1.0, startup, log)
    R, R2 = _threads.TwinRunner.REPROBE, _threads.TwinRunner.REPROBE_WIDE
    for _ in range(4 + R2 + 2):
        drive(_threads.TwinRunner(serial, parallel, "k", parallel_ok=True), 1)
    modes = [mode for mode, _ in log]
    assert modes[:4] == ["parallel", "parallel", "serial", "serial"]
    if startup < 1.0:
        # the parallel twin, with the serial one probed now and then
        assert modes[4 : 4 + R + 1] == ["parallel"] * R + ["serial"]
        assert modes[4:].count("serial") <= 2
    else:
        # probed every REPROBE_WIDE fits only: the startup is measured again
        assert modes[4:] == ["serial"] * R2 + ["parallel", "serial"]


def test_the_startup_of_the_first_call_is_not_learnt(clock):
    # the first call of a process loads the kernel in the helpers too: its
    # startup (100.0 here, 0.5 later) is not the one a later fit will pay
    log = []
    serial, parallel = twins(clock, 2.0, 1.0, log)

    def starting(epochs):
        startup = 100.0 if not log else 0.5
        clock.now += startup
        starting.last_startup_s = startup
        return parallel(epochs)

    for _ in range(6):
        drive(_threads.TwinRunner(serial, starting, "k", parallel_ok=True), 1)
    assert [mode for mode, _ in log] == ["parallel", "parallel", "serial", "serial", "parallel", "parallel"]


def test_a_long_fit_pays_the_startup_once(clock):
    # the same twins with a startup of 3.0: a fit of many epochs runs the
    # parallel twin (3.0 once against 1.0 saved per epoch), and no startup is
    # counted once this fit's helpers are started
    log = []
    serial, parallel = starting_twins(clock, 2.0, 1.0, 3.0, log)
    drive(_threads.TwinRunner(serial, parallel, "k", parallel_ok=True), 12)
    log.clear()
    runner = _threads.TwinRunner(serial, parallel, "k", parallel_ok=True)
    assert runner.plan(4) == (True, 4)  # 4 epochs save 4.0 > 3.0
    runner.run(True, 4, (4,))
    assert runner._parallel_faster(1)  # started: 1.0 against 2.0
    fresh = _threads.TwinRunner(serial, parallel, "k", parallel_ok=True)
    assert fresh.plan(2) == (False, 2)  # 2 epochs save 2.0 < 3.0


def test_serial_only_when_not_allowed(clock):
    log = []
    serial, parallel = twins(clock, 2.0, 1.0, log)
    runner = _threads.TwinRunner(serial, parallel, "k", parallel_ok=False)
    drive(runner, 45)
    assert log == [("serial", 45)] and runner.used[False] == 45


def test_a_parallel_twin_that_cannot_start_falls_back_for_good(clock):
    log = []
    serial, _ = twins(clock, 2.0, 1.0, log)

    def broken(epochs):
        raise RuntimeError("no threading layer")

    runner = _threads.TwinRunner(serial, broken, "k", parallel_ok=True)
    drive(runner, 30)
    assert [mode for mode, _ in log] == ["serial"] * len(log) and runner.used[False] == 30
    assert _threads._state["broken"] and not runner.parallel_ok


def test_parallel_allowed_reads_the_state(monkeypatch):
    numba = pytest.importorskip("numba")
    monkeypatch.setattr(
        _threads, "_state", {"broken": False, "calls": set(), "learned": {}}
    )
    threads = numba.get_num_threads()
    assert _threads.parallel_allowed() == (threads > 1)
    _threads._state["broken"] = True
    assert not _threads.parallel_allowed()
    _threads._state["broken"] = False
    numba.set_num_threads(1)
    try:
        assert not _threads.parallel_allowed()
    finally:
        numba.set_num_threads(threads)


def test_busy_lock_runs_serially(clock):
    log = []
    serial, parallel = twins(clock, 2.0, 1.0, log)
    runner = _threads.TwinRunner(serial, parallel, "k", parallel_ok=True)
    with _threads._lock:
        assert runner.run(True, 3, (3,)) == 3
    assert log == [("serial", 3)]
    assert runner.run(True, 2, (2,)) == 2 and log[-1] == ("parallel", 2)
    assert np.isclose(clock.now, 3 * 2.0 + 2 * 1.0)
