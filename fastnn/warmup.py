"""``fastnn warmup``: compile fastnn's kernels into the on-disk cache ahead of time.

The kernels are compiled on first use and cached on disk (Numba's
``cache=True``). In a fresh environment the first ``MLP.fit`` therefore
waits about 12 s (the training loop, which serves both twins, and what it
calls; 2-core development machine), and the first fit of a scikit-learn
estimator about 1 s more (its shuffle drawer); later processes load the
cache in well under a second. ``fastnn warmup`` pays that cost ahead of
time, for instance while a container image is built, by running small fits
through every path: the tutorial network, ``MLP`` (both training twins,
shuffled and in order, the tiled kernel of large layers, prediction, loss
and gradients; and all of these again for the layers that keep their
slopes, gelu and the like, and dropout, which compile a specialisation of
their own, about 70 s more per dtype, which ``--classic-only`` skips) and, when
scikit-learn is installed, the estimators (every solver, both losses of the
regressor).

``--compile-times`` (`compile_times`) also reports what each kernel took to
compile: Numba's compile events, per function, inclusive of the kernels it
calls and on its own.
"""

from __future__ import annotations

import contextlib
import time
import warnings

import numpy as np

DTYPES = ("float64", "float32")


@contextlib.contextmanager
def _forced_twin(parallel):
    from fastnn._threads import TwinRunner

    TwinRunner.force = parallel
    try:
        yield
    finally:
        TwinRunner.force = None


def _tutorial():
    from fastnn import NeuralNetwork

    X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.float64)
    y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    net = NeuralNetwork(X, y)
    net.train(2)
    net.feedforward()
    net.backprop()


def _mlp(dtype, X, Y, kept_slopes):
    from fastnn import MLP

    for parallel in (False, True):
        with _forced_twin(parallel):
            for shuffle in (False, True):
                m = MLP([X.shape[1], 16, Y.shape[1]], activation="relu", output_activation="softmax",
                        loss="log_loss", dtype=dtype, random_state=0)
                m.fit(X, Y, epochs=2, batch_size=64, shuffle=shuffle, optimizer="adam", learning_rate=0.01)
    m.predict(X)
    m.loss_and_gradients(X, Y)
    _tiled(m, X, Y)
    if not kept_slopes:
        return
    # the specialisation for layers that keep their slopes (leaky_relu, elu,
    # softplus, gelu, silu, dropout): every such activation's loops at once
    kept = MLP([X.shape[1], 16, Y.shape[1]], activation="gelu", output_activation="softmax", loss="log_loss",
               dtype=dtype, random_state=0, dropout=0.1)  # fmt: skip
    kept.fit(X, Y, epochs=2, batch_size=64, optimizer="adam", learning_rate=0.01)
    kept.predict(X)
    kept.loss_and_gradients(X, Y)
    _tiled(kept, X, Y)


def _tiled(model, X, Y):
    # the tile-streamed kernel of large layers (MLP.fit takes it for large
    # products only), on a small problem: one compiled signature per dtype
    from fastnn._kernels import codes, few_rows
    from fastnn._runtime import TiledTrainer

    from fastnn._kernels.train import hyper_array

    hyper = hyper_array(0.01, 0.9, False, 0.9, 0.999, 1e-8, 0.0)
    order = np.stack([np.arange(X.shape[0])] * 2)
    model._use_optimizer("adam")
    trainer = TiledTrainer(*model._bundles(X, Y, 64, True, codes.OPT_ADAM, hyper))
    trainer.run(2, order, np.empty(2))
    # a few rows through wide layers (weight gradients, forward products): callbacks of their own
    few_rows.address(model.dtype)
    few_rows.address(model.dtype, "nn")
    # the register-blocked products, where this machine's layers can take them
    from fastnn._kernels.blocked import available, wide_vectors
    from fastnn._threads import blas_architecture

    if available(blas_architecture(), wide_vectors()):
        few_rows.address(model.dtype, "blocked_nn")
        few_rows.address(model.dtype, "blocked_tn")


def _sklearn(dtype, X, labels):
    from fastnn.sklearn import MLPClassifier, MLPRegressor

    target = X[:, 0] ** 2 + 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for parallel in (False, True):
            with _forced_twin(parallel):
                for solver in ("adam", "sgd"):
                    for shuffle in (False, True):
                        kw = dict(solver=solver, shuffle=shuffle, hidden_layer_sizes=(16,), max_iter=2,
                                  batch_size=64, random_state=0)
                        MLPClassifier(**kw).fit(X, labels).predict_proba(X)
                        MLPRegressor(**kw).fit(X, target).predict(X)
                        MLPRegressor(loss="poisson", **kw).fit(X, target).predict(X)
        MLPClassifier(solver="lbfgs", hidden_layer_sizes=(16,), max_iter=2, random_state=0).fit(X, labels)
        MLPRegressor(solver="lbfgs", hidden_layer_sizes=(16,), max_iter=2, random_state=0).fit(X, target)


@contextlib.contextmanager
def compile_times():
    """Numba's compile time of each function compiled while the block runs.

    Yields a dict, filled as the block runs: ``{name: [inclusive_s, own_s,
    compiles]}``. Only compiling counts: a kernel loaded from the on-disk
    cache emits no compile event. Inclusive time holds the functions
    compiled while this one was typed (the kernels it calls), own time
    leaves them out. A function inlined by Numba (``inline="always"``) has
    no entry of its own: its cost is its caller's.
    """
    from numba.core import event

    times = {}
    open_ = []  # [name, start, seconds of the compiles nested in it]

    class _Listener(event.Listener):
        # Numba compiles under one global lock, so events nest and do not interleave
        def on_start(self, ev):
            func = ev.data["dispatcher"].py_func
            open_.append([f"{func.__module__}.{func.__qualname__}", time.perf_counter(), 0.0])

        def on_end(self, ev):
            name, start, nested = open_.pop()
            took = time.perf_counter() - start
            entry = times.setdefault(name, [0.0, 0.0, 0])
            entry[0] += took
            entry[1] += took - nested
            entry[2] += 1
            if open_:
                open_[-1][2] += took

    with event.install_listener("numba:compile", _Listener()):
        yield times


def format_compile_times(times, top=15):
    """The ``top`` entries of `compile_times`' dict, longest first, as text."""
    if not times:
        return "nothing compiled: every kernel was loaded from the cache"
    lines = [f"compiled now (not loaded from the cache), {len(times)} functions; the {min(top, len(times))} "
             f"longest:", f"{'inclusive s':>11} {'own s':>7} {'compiles':>8}  function"]  # fmt: skip
    ranked = sorted(times.items(), key=lambda item: -item[1][0])
    lines += [f"{total:11.2f} {own:7.2f} {count:8d}  {name}" for name, (total, own, count) in ranked[:top]]
    return "\n".join(lines)


def warmup(dtypes=DTYPES, sklearn=None, kept_slopes=True):
    """Compile (or load) the kernels of every training path, for each dtype.

    Parameters
    ----------
    dtypes : sequence of {"float64", "float32"}
        Model dtypes to prepare.
    sklearn : bool or None
        Also the scikit-learn estimators; None: when scikit-learn is installed.
    kept_slopes : bool, default=True
        Also the specialisation of the kernels for layers that keep their
        slopes (leaky_relu, elu, softplus, gelu, silu, a custom activation,
        dropout), about 70 s per dtype in an empty cache; False leaves it to
        the first fit of such a model.

    Returns
    -------
    dict
        Seconds spent per part (``"tutorial"``, ``"MLP float64"``, ...).
    """
    for dtype in dtypes:
        if np.dtype(dtype) not in (np.dtype(np.float64), np.dtype(np.float32)):
            raise ValueError(f"dtypes must be float64 or float32, got {dtype!r}")
    if sklearn is None:
        try:
            import sklearn as _  # noqa: F401

            sklearn = True
        except ImportError:
            sklearn = False
    rng = np.random.default_rng(0)
    X64 = rng.standard_normal((150, 6))
    labels = (X64[:, 0] > 0).astype(int) + (X64[:, 1] > 0).astype(int)
    Y64 = np.eye(3)[labels]
    spent = {}
    start = time.perf_counter()
    _tutorial()
    spent["tutorial"] = time.perf_counter() - start
    for dtype in dtypes:
        X, Y = X64.astype(dtype), Y64.astype(dtype)
        start = time.perf_counter()
        _mlp(dtype, X, Y, kept_slopes)
        spent[f"MLP {dtype}"] = time.perf_counter() - start
        if sklearn:
            start = time.perf_counter()
            _sklearn(dtype, X, labels)
            spent[f"scikit-learn {dtype}"] = time.perf_counter() - start
    return spent


def configure_parser(parser):
    parser.add_argument("--dtype", choices=("float64", "float32", "both"), default="both",
                        help="model dtype to prepare (default: both)")
    parser.add_argument("--no-sklearn", action="store_true",
                        help="skip the scikit-learn estimators even when scikit-learn is installed")
    parser.add_argument("--classic-only", action="store_true",
                        help="only the classic activations (sigmoid, tanh, relu, identity, softmax): skip "
                             "the kernels of leaky_relu, elu, softplus, gelu, silu, custom activations and "
                             "dropout (about 70 s per dtype in an empty cache)")
    parser.add_argument("--compile-times", action="store_true",
                        help="also print what each kernel took to compile (kernels loaded from the cache "
                             "take no compile time: use an empty cache, e.g. a fresh NUMBA_CACHE_DIR)")


def run_cli(args):
    dtypes = DTYPES if args.dtype == "both" else (args.dtype,)
    with compile_times() if args.compile_times else contextlib.nullcontext() as times:
        spent = warmup(dtypes, sklearn=False if args.no_sklearn else None, kept_slopes=not args.classic_only)
    for part, seconds in spent.items():
        print(f"{part:<22} {seconds:7.2f} s")
    print(f"kernels ready in the cache ({sum(spent.values()):.2f} s)")
    if args.compile_times:
        print(format_compile_times(times))
    return 0
