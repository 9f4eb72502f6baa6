"""A damaged kernel cache file is recompiled and rewritten, with one warning.

The end-to-end tests run fastnn in child processes whose Numba cache is a
directory of their own (``NUMBA_CACHE_DIR``), so the cache the other tests
use is never damaged.
"""

import glob
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Trains the tutorial network (kernel tutorial.train) and reports its losses,
# the KernelCacheWarnings it saw and whether tutorial.train came from the cache.
_SCRIPT = textwrap.dedent(
    """
    import json, warnings
    import numpy as np
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from fastnn import NeuralNetwork
        from fastnn._kernels import _jit, tutorial
        X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.float64)
        Y = np.array([[0], [1], [1], [0]], dtype=np.float64)
        np.random.seed(3)
        loss = NeuralNetwork(X, Y).train(60)
    print(json.dumps({
        "loss": [float(v) for v in loss],
        "warnings": [str(w.message) for w in caught if issubclass(w.category, _jit.KernelCacheWarning)],
        "categories": sorted({w.category.__name__ for w in caught}),
        "hits": sum(tutorial.train.stats.cache_hits.values()),
        "misses": sum(tutorial.train.stats.cache_misses.values()),
    }))
    """
)


def _run(cache_dir, script=_SCRIPT, timeout=600):
    # `script` in a child process whose Numba cache is cache_dir; its last line, parsed
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    env.update(NUMBA_CACHE_DIR=str(cache_dir), PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=str(cache_dir), env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def compiled_cache(tmp_path_factory):
    """A cache directory filled by one run, and that run's report."""
    cache = tmp_path_factory.mktemp("numba-cache")
    first = _run(cache)
    assert first["misses"] >= 1 and first["warnings"] == []
    return cache, first


def _cache_files(cache, suffix):
    return glob.glob(os.path.join(str(cache), "**", f"tutorial.train-*{suffix}"), recursive=True)


@pytest.mark.requires_jit
@pytest.mark.parametrize("suffix", [".nbc", ".nbi"])
def test_a_truncated_cache_file_is_recompiled_rewritten_and_warned_once(compiled_cache, tmp_path, suffix):
    source, first = compiled_cache
    cache = tmp_path / "cache"
    shutil.copytree(source, cache)
    files = _cache_files(cache, suffix)
    assert len(files) == 1, files
    (damaged,) = files
    size = os.path.getsize(damaged)
    with open(damaged, "r+b") as f:  # as a full disk leaves it
        f.truncate(size // 2)

    second = _run(cache)
    assert second["loss"] == first["loss"]
    assert second["misses"] >= 1 and second["hits"] == 0  # recompiled
    assert len(second["warnings"]) == 1, second["warnings"]
    message = second["warnings"][0]
    assert "tutorial.train" in message and os.path.basename(damaged) in message
    assert "recompiled" in message and "\n" not in message
    assert os.path.getsize(damaged) > size // 2  # rewritten

    third = _run(cache)
    assert third["warnings"] == [] and "KernelCacheWarning" not in third["categories"]
    assert third["hits"] >= 1 and third["misses"] == 0  # loaded from the rewritten file
    assert third["loss"] == first["loss"]


# ------------------------------------------------ the cache file class alone
def _checked_file(tmp_path, monkeypatch):
    from fastnn._kernels import _jit, tutorial

    monkeypatch.setattr(_jit, "_warned_paths", set())
    checked = type(tutorial.train._cache._cache_file)
    assert checked.__name__ == "_CheckedCacheFile"
    cache_file = checked(cache_path=str(tmp_path), filename_base="k-1.py3", source_stamp="stamp")
    cache_file.kernel_name = "demo.kernel"
    return cache_file


@pytest.mark.requires_jit
@pytest.mark.parametrize("which", ["index", "data"])
def test_every_truncation_is_a_miss_with_one_warning_per_file(tmp_path, monkeypatch, which):
    from fastnn._kernels import _jit

    cache_file = _checked_file(tmp_path, monkeypatch)
    payload = (b"object code" * 50, {"a": 1}, 2.5, "signature")
    cache_file.save("key", payload)
    assert cache_file.load("key") == payload
    path = cache_file._index_path if which == "index" else cache_file._data_path(cache_file._data_name(1))
    with open(path, "rb") as f:
        whole = f.read()
    seen = []
    for cut in range(0, len(whole), 7):
        with open(path, "wb") as f:
            f.write(whole[:cut])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert cache_file.load("key") is None
        seen += [w for w in caught if issubclass(w.category, _jit.KernelCacheWarning)]
        assert not os.path.exists(path)  # removed: the next save writes it anew
        cache_file.save("key", payload)
        assert cache_file.load("key") == payload
    # once per damaged file and process, however often it is found damaged
    assert len(seen) == 1
    assert "demo.kernel" in str(seen[0].message) and os.path.basename(path) in str(seen[0].message)


@pytest.mark.requires_jit
def test_a_file_holding_something_else_is_damage(tmp_path, monkeypatch):
    cache_file = _checked_file(tmp_path, monkeypatch)
    cache_file.save("key", ("data",))
    data_path = cache_file._data_path(cache_file._data_name(1))
    with open(data_path, "wb") as f:
        pickle.dump(["not", "a", "tuple"], f)
    with pytest.warns(RuntimeWarning, match="not a tuple"):
        assert cache_file.load("key") is None
    with open(cache_file._index_path, "wb") as f:
        f.write(b"\x80\x05garbage that is no pickle")
    with pytest.warns(RuntimeWarning, match="k-1.py3.nbi"):
        assert cache_file.load("key") is None


# ------------------------------------ kernels compiled apart (called by symbol)
# Fits the small-layer kernel (train.run_slot, which calls
# dense.partial_loss_and_gradients and train.step_part by symbol) and reports
# its parameters and where run_slot and partial_loss_and_gradients came from.
_APART_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    from fastnn import MLP
    from fastnn._kernels import dense, train
    rng = np.random.default_rng(0)
    X, Y = rng.random((150, 6)), rng.random((150, 3))
    net = MLP([6, 9, 3], random_state=0)
    net.fit(X, Y, epochs=3, batch_size=50)
    def stats(kernel):
        return [sum(kernel.stats.cache_hits.values()), sum(kernel.stats.cache_misses.values())]
    print(json.dumps({"params": [float(v) for v in net._params], "run_slot": stats(train.run_slot),
                      "pass": stats(dense.partial_loss_and_gradients)}))
    """
)


def _run_apart(cache_dir):
    return _run(cache_dir, _APART_SCRIPT, timeout=900)


@pytest.mark.requires_jit
def test_callers_of_kernels_compiled_apart_load_from_the_cache_with_them(tmp_path):
    # a caller's machine code refers to its callees' symbols: loaded from the
    # cache, it must find them loaded (else it would call address 0), also
    # when a callee's cache entry is gone and the callee compiles again
    # under another symbol (the caller then compiles again too)
    first = _run_apart(tmp_path)
    assert first["run_slot"][1] >= 1 and first["pass"][1] >= 1  # compiled
    second = _run_apart(tmp_path)
    assert second["run_slot"] == [1, 0] and second["pass"] == [1, 0]  # both from the cache
    assert second["params"] == first["params"]
    callee = glob.glob(os.path.join(str(tmp_path), "**", "dense.partial_loss_and_gradients-*"), recursive=True)
    assert callee
    for path in callee:
        os.remove(path)
    third = _run_apart(tmp_path)
    assert third["pass"][1] >= 1  # compiled again
    assert third["params"] == first["params"]
    fourth = _run_apart(tmp_path)
    assert fourth["run_slot"] == [1, 0] and fourth["pass"] == [1, 0]
    assert fourth["params"] == first["params"]


@pytest.mark.requires_jit
def test_a_caller_records_the_kernels_it_calls_by_symbol_and_checks_their_symbols():
    import numpy as np

    from numba.core import caching

    from fastnn import MLP
    from fastnn._kernels import _apart, dense, train

    # both patches in place (every cache entry records its calls), or none
    assert _apart.INSTALLED
    assert caching.CompileResultCacheImpl.reduce.__name__ == "reduce_with_calls"
    rng = np.random.default_rng(1)
    MLP([4, 5, 2], random_state=0).fit(rng.random((40, 4)), rng.random((40, 2)), epochs=1, batch_size=20)
    cres = next(iter(train.run_slot.overloads.values()))
    calls = _apart.calls_of(cres.library)
    names = {qualname for _, qualname, _, _ in calls}
    assert {"partial_loss_and_gradients", "step_part"} <= names
    # declared in the caller's code, not defined there (not linked in)
    module = cres.library._get_module_for_linking()
    defined = {fn.name for fn in module.functions if not fn.is_declaration}
    assert not defined & {symbol for *_, symbol in calls}
    assert _apart.load_calls(calls)
    # a callee under another symbol than the caller was built against: a miss
    module_name, qualname, argtypes, symbol = next(c for c in calls if c[1] == "partial_loss_and_gradients")
    assert dense.partial_loss_and_gradients.overloads[tuple(argtypes)].fndesc.mangled_name == symbol
    assert not _apart.load_calls([(module_name, qualname, argtypes, symbol + "x")])
    assert not _apart.load_calls([(module_name, "no_such_kernel", argtypes, symbol)])
    assert not _apart.load_calls([_apart.UNKNOWN])
