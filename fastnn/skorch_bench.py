"""fastnn's `MLPClassifier` against skorch training the same network in PyTorch.

`fastnn bench --sklearn` compares fastnn's estimators with scikit-learn's,
which train the same math more slowly. Users who want modern activations
and dropout in a scikit-learn-style estimator more often reach for skorch,
which wraps a PyTorch module in a scikit-learn API. This module times the
two on the same networks and reports fit time and held-out accuracy, so
that the question "how does fastnn compare with what I would otherwise
use?" has an answer measured on the reader's machine.

What "the same network" means here:

* the same layers: ``Linear`` layers of the estimator's sizes, the hidden
  activation of each layer from ``torch.nn`` (``"gelu"`` is the exact,
  erf-based GELU on both sides), ``torch.nn.Dropout`` after each hidden
  activation whose rate is above 0 (fastnn: inverted dropout during fit
  only, as PyTorch's), a linear output layer whose logits go through
  softmax and the mean cross-entropy (``torch.nn.CrossEntropyLoss``;
  scikit-learn's log-loss with a softmax output);
* the same initialisation rule: weights and biases uniform in
  ``+-sqrt(6 / (fan_in + fan_out))`` (2 instead of 6 for ``"logistic"``),
  scikit-learn's rule; the draws differ (NumPy's and PyTorch's generators);
* the same training: Adam with the same learning rate, betas and epsilon,
  mini-batches of the same size reshuffled every epoch, the same fixed
  number of epochs (fastnn with ``tol=0`` and ``n_iter_no_change=max_iter``,
  so it never stops early; skorch with ``train_split=None``), float32 on
  both sides;
* the same L2 penalty. scikit-learn adds ``0.5 * alpha * sum(W**2) / n``
  to the mean loss of each batch of ``n`` rows, weights only (not biases),
  so each weight's gradient gains ``alpha * W / n``. ``torch.optim.Adam``'s
  ``weight_decay`` adds ``weight_decay * W`` to the gradient before the
  moments are updated (coupled L2, not AdamW's decoupled decay), so the
  skorch net puts the weights, and only them, in a parameter group of their
  own and a callback sets that group's ``weight_decay`` to ``alpha / n``
  before every batch, ``n`` being that batch's size (the last batch of an
  epoch is usually smaller). The gradients are then scikit-learn's.

One difference is left: Adam's epsilon. scikit-learn divides by
``sqrt(v) + eps`` with the bias-corrected step size ``lr * sqrt(1 -
beta_2**t) / (1 - beta_1**t)``; PyTorch divides by ``sqrt(v / (1 -
beta_2**t)) + eps``, which is scikit-learn's formula with
``eps * sqrt(1 - beta_2**t)`` in place of ``eps``. At ``eps = 1e-8`` the two
agree unless the second moment is tiny.

PyTorch and skorch are optional (the ``skorch`` extra); this module imports
them only when a comparison runs, and names the extra when they are missing.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from typing import NamedTuple

import numpy as np

from fastnn._optional import MissingDependency, install_hint

__all__ = [
    "Workload",
    "build_torch_module",
    "format_skorch_comparison",
    "make_fastnn",
    "make_skorch",
    "missing_message",
    "skorch_comparison",
    "skorch_environment",
    "supports_dropout",
    "workloads",
]

EPOCHS = 20
QUICK_EPOCHS = 5
BATCH_SIZE = 200
LEARNING_RATE = 1e-3
ALPHA = 1e-4  # scikit-learn's default L2 penalty
BETAS = (0.9, 0.999)
EPSILON = 1e-8
# Untimed pause before each timed fit: the worker threads of the previous
# fit (OpenMP, BLAS, Numba) spin for a while after it ends.
PAUSE_S = 0.5

FEATURE = "the skorch comparison"


class Workload(NamedTuple):
    """A classification problem and the network to train on it.

    Parameters
    ----------
    name : str
        Label in the table.
    X : ndarray of shape (n_samples, n_features)
        Features, float32.
    y : ndarray of shape (n_samples,)
        Class labels 0 .. n_classes - 1 (int64).
    hidden : tuple of int
        Hidden layer sizes.
    activation : str or tuple of str
        Activation of the hidden layers (one name, or one per layer), by
        fastnn's names.
    dropout : float or tuple of float or None
        Dropout rate of the dropout variant (one rate, or one per hidden
        layer); None: no dropout variant.

    Notes
    -----
    With two classes scikit-learn's estimator has one logistic output unit,
    where the PyTorch network keeps two softmax outputs: the comparison is
    meant for three classes or more.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    hidden: tuple
    activation: object
    dropout: object


def workloads(quick=False):
    """The two workloads of the comparison.

    ``digits``: scikit-learn's digits (1,797 8x8 images, pixels / 16),
    network 64-128-64-10, gelu then relu, dropout 0.2 then 0.1.
    ``make_classification``: 20,000 rows (4,000 with ``quick``), 40
    features of which 20 informative, 4 classes, ``random_state=0``;
    network 40-256-128-4, silu then leaky_relu, dropout 0.2.

    Parameters
    ----------
    quick : bool, default=False
        The smaller make_classification problem.

    Returns
    -------
    list of Workload
    """
    from sklearn.datasets import load_digits, make_classification

    digits = load_digits()
    Xk, yk = make_classification(
        n_samples=4000 if quick else 20000, n_features=40, n_informative=20, n_classes=4, random_state=0
    )
    return [
        Workload("digits", (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64),
                 (128, 64), ("gelu", "relu"), (0.2, 0.1)),
        Workload("make_classification", Xk.astype(np.float32), yk.astype(np.int64),
                 (256, 128), ("silu", "leaky_relu"), 0.2),
    ]  # fmt: skip


def _missing():
    """The packages of the comparison (torch, skorch) that are not installed."""
    return [name for name in ("torch", "skorch") if importlib.util.find_spec(name) is None]


def missing_message():
    """The one line that says what to install, or None when torch and skorch are installed.

    ``the skorch comparison needs torch and skorch: pip install
    "fastnn[skorch]"`` (naming only the missing ones); nothing is imported.
    """
    missing = _missing()
    if not missing:
        return None
    return f"{FEATURE} needs {' and '.join(missing)}: {install_hint('skorch')}"


def _require():
    """Import and return ``(torch, skorch)``, or raise :class:`MissingDependency`
    with :func:`missing_message`. A package that is installed but fails to
    import raises its own error."""
    missing = _missing()
    if missing:
        raise MissingDependency(missing_message(), name=missing[0])
    import skorch
    import torch

    return torch, skorch


# ---------------------------------------------------------------- the two estimators
# fastnn's activation names -> the torch.nn module (constructor arguments: PyTorch's defaults,
# which are fastnn's: leaky_relu slope 0.01, elu alpha 1, exact gelu, softplus beta 1)
TORCH_ACTIVATIONS = {
    "identity": "Identity",
    "logistic": "Sigmoid",
    "tanh": "Tanh",
    "relu": "ReLU",
    "leaky_relu": "LeakyReLU",
    "elu": "ELU",
    "softplus": "Softplus",
    "gelu": "GELU",
    "silu": "SiLU",
}


def _per_layer(value, n_hidden, what):
    """``value`` (one entry, or a tuple of one per hidden layer) as a list of ``n_hidden``."""
    if isinstance(value, (str, int, float)):
        return [value] * n_hidden
    value = list(value)
    if len(value) != n_hidden:
        raise ValueError(f"{what} has {len(value)} entries for {n_hidden} hidden layers")
    return value


def build_torch_module(n_features, hidden, n_classes, activation="relu", dropout=0.0):
    """The PyTorch network of a fastnn estimator, as a ``torch.nn.Sequential``.

    ``Linear(n_features, hidden[0])``, the layer's activation,
    ``Dropout(rate)`` when its rate is above 0, and so on for each hidden
    layer, then ``Linear(hidden[-1], n_classes)`` giving the logits (the
    softmax is in the loss). Weights and biases are drawn from PyTorch's
    generator with scikit-learn's rule: uniform in ``+-sqrt(6 / (fan_in +
    fan_out))``, 2 instead of 6 when ``activation == "logistic"``.

    Parameters
    ----------
    n_features, n_classes : int
        Input and output widths.
    hidden : sequence of int
        Hidden layer sizes.
    activation : str or sequence of str, default="relu"
        fastnn's name of the hidden activation, or one per hidden layer.
    dropout : float or sequence of float, default=0.0
        Dropout rate after each hidden activation, or one per hidden layer.

    Returns
    -------
    torch.nn.Sequential
    """
    torch, _ = _require()
    hidden = [int(h) for h in hidden]
    names = _per_layer(activation, len(hidden), "activation")
    rates = [float(r) for r in _per_layer(dropout, len(hidden), "dropout")]
    factor = 2.0 if isinstance(activation, str) and activation == "logistic" else 6.0
    layers = []
    fan_in = int(n_features)
    for width, name, rate in zip(hidden, names, rates):
        if name not in TORCH_ACTIVATIONS:
            raise ValueError(f"activation must be among {tuple(TORCH_ACTIVATIONS)}, got {name!r}")
        layers += [torch.nn.Linear(fan_in, width), getattr(torch.nn, TORCH_ACTIVATIONS[name])()]
        if rate > 0:
            layers.append(torch.nn.Dropout(rate))
        fan_in = width
    layers.append(torch.nn.Linear(fan_in, int(n_classes)))
    with torch.no_grad():
        for layer in layers:
            if isinstance(layer, torch.nn.Linear):
                bound = float(np.sqrt(factor / (layer.in_features + layer.out_features)))
                layer.weight.uniform_(-bound, bound)
                layer.bias.uniform_(-bound, bound)
    return torch.nn.Sequential(*layers)


def supports_dropout(estimator):
    """Whether ``estimator`` (a class or an instance) has a ``dropout`` parameter."""
    instance = estimator() if isinstance(estimator, type) else estimator
    return "dropout" in instance.get_params()


def make_fastnn(workload, dropout=None, epochs=EPOCHS, estimator=None, random_state=0, alpha=ALPHA):
    """fastnn's classifier for ``workload``, set up as :func:`make_skorch`'s net.

    Parameters
    ----------
    workload : Workload
        The network's sizes and activations.
    dropout : float or tuple of float, optional
        Dropout rates; None trains without dropout (and sets no ``dropout``
        parameter). Needs an estimator with a ``dropout`` parameter.
    epochs : int, default=20
        Epochs, all of them run (``tol=0``, ``n_iter_no_change=epochs``).
    estimator : class, optional
        The estimator class (default ``fastnn.sklearn.MLPClassifier``).
    random_state : int, default=0
    alpha : float, default=1e-4
        L2 penalty (scikit-learn's default).

    Returns
    -------
    estimator instance, unfitted
    """
    if estimator is None:
        from fastnn.sklearn import MLPClassifier as estimator
    params = dict(
        hidden_layer_sizes=tuple(workload.hidden), activation=workload.activation, solver="adam",
        alpha=alpha, batch_size=BATCH_SIZE, learning_rate_init=LEARNING_RATE, beta_1=BETAS[0],
        beta_2=BETAS[1], epsilon=EPSILON, max_iter=int(epochs), tol=0.0, n_iter_no_change=int(epochs),
        shuffle=True, random_state=random_state,
    )  # fmt: skip
    if dropout is not None:
        if not supports_dropout(estimator):
            raise ValueError(f"{estimator.__name__} has no dropout parameter")
        params["dropout"] = dropout
    return estimator(**params)


_CLASSES = {}


def _l2_callback_class():
    """The skorch callback that gives the weights scikit-learn's L2 gradient (made once)."""
    if "l2" not in _CLASSES:
        _, skorch = _require()

        class ScikitLearnL2(skorch.callbacks.Callback):
            """Before each training batch of ``n`` rows, set ``weight_decay = alpha / n`` in the
            optimizer's parameter groups marked with ``l2_alpha`` (the weights)."""

            def on_batch_begin(self, net, batch=None, training=False, **kwargs):
                if training:
                    n = len(batch[0])
                    for group in net.optimizer_.param_groups:
                        if "l2_alpha" in group:
                            group["weight_decay"] = group["l2_alpha"] / n

        _CLASSES["l2"] = ScikitLearnL2
    return _CLASSES["l2"]


def make_skorch(workload, dropout=None, epochs=EPOCHS, alpha=ALPHA):
    """A skorch ``NeuralNetClassifier`` training :func:`build_torch_module`'s network
    as :func:`make_fastnn`'s estimator trains its own.

    Adam (``lr``, betas, epsilon as fastnn's), batches of ``BATCH_SIZE``
    rows reshuffled every epoch, ``epochs`` epochs on all the data
    (``train_split=None``), cross-entropy on the logits, and scikit-learn's
    L2 penalty ``alpha`` on the weights: a parameter group of the weights
    (``*.weight``) marked with ``l2_alpha`` whose ``weight_decay`` a callback
    sets to ``alpha / n`` before each batch of ``n`` rows. Seed PyTorch
    (``torch.manual_seed``) before ``fit`` for repeatable draws.

    Parameters
    ----------
    workload : Workload
        The network's sizes and activations; its data give the input and
        output widths.
    dropout : float or tuple of float, optional
        Dropout rates; None: no ``Dropout`` layers.
    epochs : int, default=20
    alpha : float, default=1e-4
        scikit-learn's L2 penalty.

    Returns
    -------
    skorch.NeuralNetClassifier, unfitted
    """
    torch, skorch = _require()
    return skorch.NeuralNetClassifier(
        module=build_torch_module,
        module__n_features=workload.X.shape[1],
        module__hidden=tuple(workload.hidden),
        module__n_classes=int(np.max(workload.y)) + 1,
        module__activation=workload.activation,
        module__dropout=0.0 if dropout is None else dropout,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=LEARNING_RATE,
        optimizer__betas=BETAS,
        optimizer__eps=EPSILON,
        optimizer__param_groups=[("*.weight", {"l2_alpha": float(alpha)})],
        batch_size=BATCH_SIZE,
        max_epochs=int(epochs),
        train_split=None,
        iterator_train__shuffle=True,
        callbacks=[_l2_callback_class()()],
        device="cpu",
        verbose=0,
    )


# ---------------------------------------------------------------- the comparison
def _fit_seconds(model, X, y, pause_s):
    """Seconds of ``model.fit(X, y)``, after an untimed pause of ``pause_s``."""
    time.sleep(pause_s)
    start = time.perf_counter()
    model.fit(X, y)
    return time.perf_counter() - start


def _compare(workload, split, rates, epochs, repeats, pause_s, estimator):
    """fastnn's and skorch's fits of ``workload`` with dropout ``rates`` (None: none) under
    the thread setting in force: ``({engine: [seconds, ...]}, {engine: last model})``.

    One untimed fit of each first (it compiles or loads fastnn's kernels and
    warms PyTorch up), then ``repeats`` rounds of one timed fit of each, so
    that a change of machine load hits both alike. Every skorch fit starts
    from ``torch.manual_seed(0)``; every fastnn fit from ``random_state=0``.
    """
    from sklearn.exceptions import ConvergenceWarning

    torch, _ = _require()
    X_train, _, y_train, _ = split

    def fastnn():
        return make_fastnn(workload, rates, epochs, estimator)

    def skorch():
        torch.manual_seed(0)  # initial weights, shuffles and dropout masks
        return make_skorch(workload, rates, epochs)

    engines = {"fastnn": fastnn, "skorch": skorch}
    times = {name: [] for name in engines}
    models = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter reached: by design
        for make in engines.values():
            _fit_seconds(make(), X_train, y_train, pause_s)
        for _ in range(repeats):
            for name, make in engines.items():
                models[name] = make()
                times[name].append(_fit_seconds(models[name], X_train, y_train, pause_s))
    return times, models


def _chosen(workload_list, quick):
    """The workloads asked for: all by default; names pick among :func:`workloads`."""
    known = workloads(quick)
    if workload_list is None:
        return known
    by_name = {w.name: w for w in known}
    chosen = []
    for w in workload_list:
        if isinstance(w, str):
            if w not in by_name:
                raise ValueError(f"workloads must be among {tuple(by_name)} or Workload objects, got {w!r}")
            w = by_name[w]
        chosen.append(w)
    return chosen


def _thread_setting(threads):
    """The thread limit of one setting: every engine's threads (Numba, BLAS/OpenMP,
    PyTorch's intra-op) limited to ``threads``; no limit for None."""
    from fastnn.bench import _ThreadLimit

    return _ThreadLimit(threads)


def _row(workload, variant, rates, threads, split, epochs):
    """A row's description: the keys common to measured and skipped rows."""
    return {
        "workload": workload.name,
        "variant": variant,
        "dropout": None if rates is None else _per_layer(rates, len(workload.hidden), "dropout"),
        "threads": "default" if threads is None else int(threads),
        "n_train": int(split[0].shape[0]),
        "n_test": int(split[1].shape[0]),
        "epochs": int(epochs),
        "skipped": None,
    }


def skorch_comparison(quick=False, repeats=3, workloads=None, threads=None, epochs=None, pause_s=None,
                      estimator=None):
    """Fit time and held-out accuracy of fastnn's `MLPClassifier` and of skorch on the same networks.

    For each thread setting, workload and variant (with the workload's
    dropout, and without), both engines train the same network (see the
    module's description) on the same 75 % of the data
    (``train_test_split(random_state=0)``) for a fixed number of epochs; the
    fit time is the median of ``repeats`` fits taken in turns after one
    untimed fit of each, with an untimed pause of ``pause_s`` before every
    fit, and the accuracy is that of the last fit on the other 25 %.

    When the estimator has no ``dropout`` parameter (fastnn releases before
    dropout), the dropout variants are not run: their rows say so in
    ``skipped`` and only the no-dropout variants are measured.

    Parameters
    ----------
    quick : bool, default=False
        5 epochs instead of 20, the smaller make_classification problem,
        and default threads only (unless ``threads`` is given).
    repeats : int, default=3
        Timed fits per engine and row.
    workloads : sequence of str or Workload, optional
        Names among ``("digits", "make_classification")`` or
        :class:`Workload` objects; both named ones by default.
    threads : sequence of int or None, optional
        Thread settings: None for each library's default, ``k`` for Numba,
        BLAS/OpenMP and PyTorch (``torch.set_num_threads``) all limited to
        ``k``. Default ``(None, 1)``; ``(None,)`` with ``quick``.
    epochs : int, optional
        Epochs per fit (default 20; 5 with ``quick``).
    pause_s : float, optional
        Untimed pause before each fit (default ``PAUSE_S``, 0.5 s), so that
        the previous fit's worker threads have gone idle.
    estimator : class, optional
        fastnn's estimator class (default ``fastnn.sklearn.MLPClassifier``).

    Returns
    -------
    list of dict
        One row per thread setting, workload and variant, with keys
        ``threads`` ("default" or the limit), ``workload``, ``variant``
        ("dropout" or "none"), ``dropout`` (rates per hidden layer, or
        None), ``n_train``, ``n_test``, ``epochs``, ``skipped`` (None, or
        why the row was not measured), and when measured ``torch_threads``
        and ``numba_threads`` (in force during the fits), ``fastnn_s``,
        ``skorch_s``, ``speedup`` (skorch's time / fastnn's), ``fastnn_acc``
        and ``skorch_acc``.

    Raises
    ------
    MissingDependency
        When torch or skorch is not installed (the message names the extra).
    """
    import numba
    from sklearn.model_selection import train_test_split

    torch, _ = _require()
    repeats = int(repeats)
    if repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    epochs = int(epochs if epochs is not None else (QUICK_EPOCHS if quick else EPOCHS))
    threads = ((None,) if quick else (None, 1)) if threads is None else tuple(threads)
    pause_s = PAUSE_S if pause_s is None else float(pause_s)
    if estimator is None:
        from fastnn.sklearn import MLPClassifier as estimator
    with_dropout = supports_dropout(estimator)
    chosen = _chosen(workloads, quick)
    rows = []
    for setting in threads:
        with _thread_setting(setting):
            for w in chosen:
                split = train_test_split(w.X, w.y, test_size=0.25, random_state=0)
                variants = ([("dropout", w.dropout)] if w.dropout is not None else []) + [("none", None)]
                for variant, rates in variants:
                    row = _row(w, variant, rates, setting, split, epochs)
                    rows.append(row)
                    if rates is not None and not with_dropout:
                        row["skipped"] = f"{estimator.__name__} has no dropout parameter"
                        continue
                    times, models = _compare(w, split, rates, epochs, repeats, pause_s, estimator)
                    fit_s = {name: float(np.median(t)) for name, t in times.items()}
                    acc = {name: float(np.mean(m.predict(split[1]) == split[3])) for name, m in models.items()}
                    row.update(
                        torch_threads=torch.get_num_threads(), numba_threads=numba.get_num_threads(),
                        fastnn_s=fit_s["fastnn"], skorch_s=fit_s["skorch"], speedup=fit_s["skorch"] / fit_s["fastnn"],
                        fastnn_acc=acc["fastnn"], skorch_acc=acc["skorch"],
                    )  # fmt: skip
    return rows


def skorch_environment():
    """What the table's header says of the machine and the libraries, as a dict.

    ``machine`` is :func:`fastnn.bench.machine_info` (CPU model and counts,
    BLAS and OpenMP libraries with their threads); ``versions`` names
    fastnn, NumPy, Numba, scikit-learn, PyTorch and skorch; ``threads`` the
    default threads of PyTorch (intra-op) and Numba.
    """
    import numba
    import sklearn

    from fastnn import __version__
    from fastnn.bench import machine_info

    torch, skorch = _require()
    return {
        "machine": machine_info(),  # after importing PyTorch: its OpenMP runtime is listed too
        "versions": {
            "fastnn": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "scikit-learn": sklearn.__version__, "torch": torch.__version__, "skorch": skorch.__version__,
        },  # fmt: skip
        "threads": {"torch": torch.get_num_threads(), "numba": numba.get_num_threads()},
    }


def _variant(row):
    """``none``, ``dropout 0.2`` (one rate for every hidden layer) or ``dropout 0.2/0.1``."""
    rates = row["dropout"]
    if rates is None:
        return "none"
    return "dropout " + "/".join(f"{r:g}" for r in (rates[:1] if len(set(rates)) == 1 else rates))


def format_skorch_comparison(rows, environment=None):
    """The rows of :func:`skorch_comparison` as a plain-text table.

    Parameters
    ----------
    rows : list of dict
        As returned by :func:`skorch_comparison`.
    environment : dict, optional
        :func:`skorch_environment`'s dict: when given, header lines name the
        CPU, the BLAS, the library versions and the default threads.

    Returns
    -------
    str
    """
    from fastnn.bench import _machine_lines

    lines = []
    if environment is not None:
        v, t = environment["versions"], environment["threads"]
        lines += _machine_lines(environment["machine"])
        lines.append(", ".join(f"{k} {v[k]}" for k in v)
                     + f"; default threads: PyTorch {t['torch']}, Numba {t['numba']}")
    lines.append(
        f"{'threads':<8} {'workload':<20} {'variant':<16} {'fastnn s':>9} {'skorch s':>9} "
        f"{'speedup':>8} {'fastnn acc':>10} {'skorch acc':>10}"
    )
    skipped = []
    for r in rows:
        head = f"{str(r['threads']):<8} {r['workload']:<20} {_variant(r):<16}"
        if r.get("skipped"):
            lines.append(f"{head} skipped: {r['skipped']}")
            skipped.append(r["skipped"])
            continue
        lines.append(
            f"{head} {r['fastnn_s']:>9.3f} {r['skorch_s']:>9.3f} {r['speedup']:>7.1f}x "
            f"{r['fastnn_acc']:>10.4f} {r['skorch_acc']:>10.4f}"
        )
    if skipped:
        lines.append(f"dropout variants not run ({skipped[0]}): no-dropout variants only")
    return "\n".join(lines)
