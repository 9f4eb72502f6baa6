"""scikit-learn-compatible `MLPClassifier` and `MLPRegressor` trained by fastnn's kernels.

Replace::

    from sklearn.neural_network import MLPClassifier, MLPRegressor

by::

    from fastnn.sklearn import MLPClassifier, MLPRegressor

and the same code trains the same networks, faster. The estimators subclass
scikit-learn's own classes, so that parameters, defaults, input validation,
``classes_`` handling, ``partial_fit``, ``warm_start``, scoring and every
fitted attribute behave exactly as scikit-learn's. (A fitted model's plain
arrays skip scikit-learn's input checks where those would return them
unchanged: ``fastnn._plain_input``.) What is replaced is the
work: the mini-batch epochs of the ``"sgd"`` and ``"adam"`` solvers run in
compiled calls of up to 20 epochs each (one per epoch when something must
happen in Python between epochs: ``verbose``, ``early_stopping``,
``partial_fit``), with their shuffles drawn by a compiled copy of NumPy's;
the loss and gradient that SciPy's L-BFGS-B minimises for ``"lbfgs"`` are
computed by one compiled call, and prediction is a compiled forward pass.

Parameters are drawn from the same random stream, the loss (with its L2
term), the optimizer updates, the learning-rate schedules, the shuffles, the
early-stopping split and the stopping rules are scikit-learn's, so a seeded
fit gives scikit-learn's coefficients up to floating-point rounding.

``verbose`` prints scikit-learn's own lines; ``verbose >= 2`` adds a tqdm
progress bar on stderr when tqdm is installed. A fit whose weights overflow
goes on as scikit-learn's does (NaN losses; the best weights under early
stopping, else the "non-finite parameter weights" error).

``fit(X, y, sample_weight=...)`` trains in the kernels too, with
scikit-learn's weighted losses (weighted means, normalised with the L2 term
by the sum of the batch's weights), and so does
``MLPRegressor(loss="poisson")`` (exp output, half Poisson deviance); both
need scikit-learn 1.7 or later. Sparse input runs scikit-learn's own NumPy
code unchanged.

Three things are fastnn's own, and leave every number alone at their
defaults: ``MLPClassifier(class_weight=...)`` (as ``LogisticRegression``'s,
through the sample weights; scikit-learn 1.7 or later), the
``validation_loss_curve_`` attribute under ``early_stopping``, and
``callbacks``, called after every epoch with an :class:`EpochRecord`, which
can stop training.

Supported scikit-learn releases: ``fastnn._sklearn_compat.MIN_VERSION``
(1.6.1) to the newest; that module lists the private parts of scikit-learn
that these classes rely on, and its tests check them against the installed
release. This module imports scikit-learn; the rest of fastnn does not.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from numbers import Real
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize
import scipy.sparse

from fastnn._optional import import_optional

import_optional("sklearn", "fastnn.sklearn")  # one line naming the extra when scikit-learn is missing

import sklearn
from sklearn.base import is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as _SkMLPClassifier
from sklearn.neural_network import MLPRegressor as _SkMLPRegressor
from sklearn.neural_network._base import LOSS_FUNCTIONS
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight

from fastnn import _sklearn_compat as compat
from fastnn.activation import Activation
from fastnn._kernels import codes
from fastnn._driver import Driver
from fastnn._plain_input import FLOATS as _FLOATS
from fastnn._plain_input import binarized, plain_labels, plain_targets, plain_X, predicted_labels
from fastnn._runtime import Batches, Model, Optimizer
from fastnn._threads import TwinRunner, blas_single_thread_for

__all__ = [
    "EpochRecord",
    "MLPClassifier",
    "MLPRegressor",
    "format_sklearn_comparison",
    "sklearn_comparison",
]

_OUT_CODES = {
    "identity": codes.IDENTITY,
    "logistic": codes.SIGMOID,
    "softmax": codes.SOFTMAX,
    "exp": codes.EXP,
}


# scikit-learn's hidden activations, and those fastnn adds (its kernels only)
_SK_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
_ACTIVATIONS = _SK_ACTIVATIONS + ("leaky_relu", "elu", "softplus", "gelu", "silu")


def _with_activations(constraints):
    """scikit-learn's parameter constraints, with fastnn's activations (names or a tuple)."""
    return {**constraints, "activation": [StrOptions(set(_ACTIVATIONS)), Activation, tuple, list]}


def _hidden_names(activation, n_hidden):
    """The hidden layers' activations (names or ``fastnn.Activation``): ``activation`` is
    one for all, or a tuple of one per layer (``MLP``'s rule, with scikit-learn's names)."""
    from fastnn.mlp import _hidden_activations

    return _hidden_activations(activation, n_hidden, _ACTIVATIONS)


def _flat_layout(layer_units, activation="identity", out_code=codes.IDENTITY, dropout=None, dtype=np.float64):
    """Layout of a flat buffer in scikit-learn's packing order.

    All weights first (layer by layer, row-major ``(fan_in, fan_out)``), then
    all biases: the order of ``sklearn.neural_network``'s ``_pack``, so that
    the vector L-BFGS-B sees and the optimizer state lists map one to one.
    ``activation`` (a name or one per hidden layer) and ``out_code`` are the
    layers' activations; ``dropout``, one rate per hidden layer (None: none);
    ``dtype``, the one a ``fastnn.Activation`` is compiled for.
    """
    from fastnn._kernels import layout as kl

    from fastnn.mlp import activation_addresses, activation_code

    hidden = _hidden_names(activation, len(layer_units) - 2)
    layer_codes = [activation_code(entry) for entry in hidden] + [out_code]
    functions = activation_addresses(hidden, dtype)
    return kl.build(layer_units, layer_codes, weights_first=True, dropout=dropout, functions=functions)


@functools.lru_cache(maxsize=64)
def _remembered_layout(*args):
    # _flat_layout's result, remembered: a partial_fit or predict of a few rows
    # asks for it at every call (25 us), and it never changes
    return _flat_layout(*args)


def _pack(arrays, dtype):
    """Concatenate ``coefs + intercepts`` (or optimizer state lists) into one flat array."""
    return np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in arrays])


def _views(flat, layout):
    """Per-layer ``(coefs, intercepts)`` views into ``flat``."""
    coefs, intercepts = [], []
    for fan_in, fan_out, w_off, b_off in layout[:, :4]:
        coefs.append(flat[w_off : w_off + fan_in * fan_out].reshape(fan_in, fan_out))
        intercepts.append(flat[b_off : b_off + fan_out])
    return coefs, intercepts


def _unflatten_list(flat, layout):
    """Flat state in packing order -> list of independent arrays (coefs then intercepts)."""
    coefs, intercepts = _views(flat, layout)
    return [a.copy() for a in coefs] + [a.copy() for a in intercepts]


def _weights(sample_weight, dtype):
    """Sample weights as the kernels take them: contiguous, or empty for none."""
    if sample_weight is None:
        return np.empty(0, dtype=dtype)
    return np.ascontiguousarray(sample_weight, dtype=dtype)


# Draws of at most this many elements in all (epochs x rows) are NumPy's:
# the compiled draws read and write the generator's state, 66 us a call,
# where NumPy shuffles 10 rows in 1 us and 1347 in 15 us.
FEW_DRAWS = 4096


def _draw_orders(random_state, sample_idx, perm, order, count, keep_state=True):
    """scikit-learn's epoch orders for ``count`` epochs, drawn into ``order``.

    Each epoch, scikit-learn's loop draws ``sample_idx = shuffle(sample_idx,
    random_state=...)``: ``random_state.shuffle(arange(n))`` composed with
    the previous order. order[e] gets the e-th epoch's order (order[0] from
    ``sample_idx``), and ``random_state`` is left where those draws leave it.
    Returns the state from before the draws (``set_state`` it and draw again
    to rewind to an earlier epoch), or None without ``keep_state``.
    ``perm``: n int64 of workspace. With an MT19937 generator (every
    ``RandomState`` that scikit-learn makes), more than ``FEW_DRAWS`` draws
    are compiled (`fastnn._kernels.shuffle`); otherwise, or with
    ``NUMBA_DISABLE_JIT=1``, NumPy makes them.
    """
    import numba

    from fastnn._kernels.shuffle import draw_orders

    n = sample_idx.size
    if count * n <= FEW_DRAWS or numba.config.DISABLE_JIT:
        state = random_state.get_state(legacy=False) if keep_state else None
        _numpy_orders(random_state, sample_idx, perm, order, count)
        return state
    state = random_state.get_state(legacy=False)
    if state["bit_generator"] == "MT19937" and n < 2**32:
        mt = state["state"]
        key = mt["key"].copy()
        pos = draw_orders(key, np.int64(mt["pos"]), sample_idx, perm, order, count)
        random_state.set_state(dict(state, state={"key": key, "pos": int(pos)}))
    else:
        _numpy_orders(random_state, sample_idx, perm, order, count)
    return state if keep_state else None


def _numpy_orders(random_state, sample_idx, perm, order, count):
    # _draw_orders by NumPy's own shuffle
    previous = sample_idx
    for e in range(count):
        perm[...] = np.arange(sample_idx.size)
        random_state.shuffle(perm)
        np.take(previous, perm, out=order[e])
        previous = order[e]


def _progress(total, verbose):
    """A tqdm bar on stderr for ``verbose >= 2`` when tqdm is installed, else None.

    It comes in addition to scikit-learn's printed lines, never instead.
    """
    if int(verbose) < 2:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="fastnn", unit="epoch", leave=True)


def _printing(bar):
    """Context for printing scikit-learn's lines: the bar cleared, then redrawn."""
    return contextlib.nullcontext() if bar is None else bar.external_write_mode()


@dataclass(frozen=True)
class EpochRecord:
    """What each of the ``callbacks`` of the estimators is given after an epoch.

    Parameters
    ----------
    epoch : int
        The epoch that just ended, counted from 1 in this call of ``fit`` or
        ``partial_fit``: the estimator's ``n_iter_``. With ``solver="lbfgs"``,
        the L-BFGS-B iteration that just ended.
    loss : float
        The training loss of that epoch, with its L2 term
        (``loss_curve_[-1]``); with ``"lbfgs"``, the loss at the iterate.
    validation_score : float or None
        The score on the validation split (``validation_scores_[-1]``) under
        ``early_stopping``, else None.
    estimator : MLPClassifier or MLPRegressor
        The estimator in training, with the weights after that epoch (its
        ``coefs_`` may be updated in place by the next epochs: copy what you
        keep). Left out of the record's ``repr`` and comparisons.

    Examples
    --------
    >>> from fastnn.sklearn import EpochRecord
    >>> EpochRecord(epoch=3, loss=0.25, validation_score=None, estimator=None)
    EpochRecord(epoch=3, loss=0.25, validation_score=None)
    """

    epoch: int
    loss: float
    validation_score: float | None
    estimator: object = field(repr=False, compare=False)


class _StopLbfgs(Exception):
    """Raised through SciPy's L-BFGS-B when a callback asked to stop; holds the iterate."""

    def __init__(self, result):
        super().__init__("a callback stopped L-BFGS-B")
        self.result = result


def _checked_callbacks(callbacks):
    """``callbacks`` as a tuple (empty for None); a TypeError unless a list of callables."""
    if callbacks is None:
        return ()
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            f"callbacks must be None or a list of callables, got {type(callbacks).__name__}"
        )
    for i, callback in enumerate(callbacks):
        if not callable(callback):
            raise TypeError(f"callbacks must be callables; callbacks[{i}] is {callback!r}")
    return tuple(callbacks)


def _stop_requested(callbacks, record):
    """Calls every callback with ``record``; True when one of them returned True.

    All are called, also after one asked to stop. Only True (a bool or a
    NumPy bool) stops; any other value, None included, lets training go on.
    """
    stop = False
    for callback in callbacks:
        answer = callback(record)
        if isinstance(answer, (bool, np.bool_)) and answer:
            stop = True
    return stop


class _FastnnMLPMixin:
    """The compiled training and prediction paths shared by both estimators."""

    _fastnn_loss_code = None  # set by the subclasses

    # ----------------------------------------------------------- dispatch
    def _fastnn_supported(self, X, sample_weight):
        return (
            not scipy.sparse.issparse(X)
            and getattr(self, "out_activation_", None) in _OUT_CODES
            and np.dtype(X.dtype) in _FLOATS
        )

    def _fastnn_codes(self):
        # (output activation, loss); the hidden layers' codes are in the layout
        return _OUT_CODES[self.out_activation_], self._fastnn_loss_code

    def _fastnn_layout(self, layer_units, dtype):
        """``(layout, n_params)`` of the network in ``dtype``, with its activations and dropout."""
        rates = self._fastnn_dropout(len(layer_units) - 2)
        args = (tuple(int(u) for u in layer_units), self.activation, _OUT_CODES[self.out_activation_],
                tuple(rates), np.dtype(dtype))  # fmt: skip
        try:
            layout, size = _remembered_layout(*args)
        except TypeError:  # an activation that is not hashable (a list of names)
            return _flat_layout(*args)
        return layout.copy(), size

    def _fastnn_dropout(self, n_hidden):
        """One dropout rate per hidden layer (errors name ``dropout``)."""
        from fastnn.mlp import _dropout_rates

        return _dropout_rates(self.dropout, n_hidden)[1]

    def _validate_params(self):
        # scikit-learn's checks, then those of what fastnn adds: before any work
        super()._validate_params()
        hidden = self.hidden_layer_sizes
        n_hidden = len(list(hidden)) if hasattr(hidden, "__iter__") else 1
        _hidden_names(self.activation, n_hidden)
        if any(self._fastnn_dropout(n_hidden)) and self.solver == "lbfgs":
            raise ValueError("dropout needs solver='sgd' or 'adam', not 'lbfgs': it makes the loss random")

    def _fastnn_fallback(self, what):
        """Raise when scikit-learn's own code would run with an activation or dropout only fastnn has."""
        if not (isinstance(self.activation, str) and self.activation in _SK_ACTIVATIONS):
            raise ValueError(
                f"activation={self.activation!r} runs in fastnn's kernels only, which take "
                f"dense float32 or float64 input; {what} would run scikit-learn's code, "
                f"whose activations are {_SK_ACTIVATIONS}"
            )
        rates = self.dropout if isinstance(self.dropout, (tuple, list)) else [self.dropout]
        if any(rate != 0 for rate in rates):
            raise ValueError(
                f"dropout={self.dropout!r} runs in fastnn's kernels only, which take dense float32 "
                f"or float64 input; {what} would run scikit-learn's code, which has no dropout"
            )

    # ---------------------------------------- class_weight, callbacks, ...
    def _validate_input(self, X, y, incremental, reset):
        # the first step of scikit-learn's _fit: the checks come before any work.
        # A fitted estimator's plain arrays skip scikit-learn's checks, which
        # would return them unchanged (fastnn._plain_input): they cost more
        # than a partial_fit of tens of rows trains
        self._fastnn_check_new_params(X, incremental)
        if not reset:
            checked = self._fastnn_plain_input(X, y, incremental)
            if checked is not None:
                return checked
        return super()._validate_input(X, y, incremental, reset)

    def _fastnn_check_new_params(self, X, incremental):
        """The checks of ``callbacks`` and ``class_weight`` that ``_parameter_constraints``
        cannot make: the items, the input, the call and the scikit-learn release."""
        if _checked_callbacks(self.callbacks) and scipy.sparse.issparse(X):
            raise ValueError(
                "callbacks need dense X: sparse input trains in scikit-learn's own code, "
                "which calls none"
            )
        class_weight = getattr(self, "class_weight", None)
        if class_weight is None:
            return
        if not compat.SAMPLE_WEIGHT:
            raise ValueError(
                "class_weight needs scikit-learn >= 1.7 (it weighs the samples through "
                f"sample_weight, which 1.7 added); scikit-learn {sklearn.__version__} is "
                "installed"
            )
        if incremental and isinstance(class_weight, str):
            raise ValueError(
                f"class_weight={class_weight!r} is not supported for partial_fit: it needs "
                f"the whole y. Use compute_class_weight({class_weight!r}, classes=classes, "
                "y=y) on all the targets (or a large enough sample of them) and pass the "
                "resulting weights as a dict {class: weight}."
            )

    def _fastnn_sample_weight(self, y, sample_weight, dtype):
        """``sample_weight`` (or ones) times the ``class_weight`` of each sample's label.

        ``y``: the binarized targets that scikit-learn's ``_fit`` passes on.
        Returns ``sample_weight`` itself without ``class_weight``.
        """
        class_weight = getattr(self, "class_weight", None)
        if class_weight is None:
            return sample_weight
        if self._label_binarizer.y_type_.startswith("multilabel"):
            weights = compute_sample_weight(class_weight, y.astype(np.int64))
        else:
            index = y.argmax(axis=1) if y.shape[1] > 1 else y[:, 0].astype(np.intp)
            per_class = compute_class_weight(
                class_weight, classes=self.classes_, y=self.classes_[index]
            )
            weights = per_class[index]
        if sample_weight is not None:
            weights = sample_weight * weights
        return np.asarray(weights, dtype=dtype)

    def _initialize(self, y, layer_units, dtype):
        super()._initialize(y, layer_units, dtype)
        # beside validation_scores_ (set by the same call): a list under early stopping
        stochastic = self.solver in ("sgd", "adam")
        self.validation_loss_curve_ = [] if (stochastic and self.early_stopping) else None

    def _update_no_improvement_count(self, early_stopping, X, y, *sample_weight):
        # (scikit-learn 1.7 and later pass the validation split's sample_weight)
        super()._update_no_improvement_count(early_stopping, X, y, *sample_weight)
        if early_stopping:
            self.validation_loss_curve_.append(self._fastnn_validation_loss(X, y, *sample_weight))

    def _fastnn_validation_loss(self, X, y, sample_weight=None):
        """The loss of the validation split, computed as scikit-learn's ``_backprop``
        computes a batch's: the same loss function and L2 term, with the weights."""
        if is_classifier(self):
            y = self._fastnn_binarized(y)
        output = self._forward_pass_fast(X, check_input=False)
        name = self.loss
        if name == "log_loss" and self.out_activation_ == "logistic":
            name = "binary_log_loss"
        weights = () if sample_weight is None else (sample_weight,)
        loss = LOSS_FUNCTIONS[name](y.reshape(output.shape), output, *weights)
        values = 0
        for s in self.coefs_:
            s = s.ravel()
            values += np.dot(s, s)
        sw_sum = X.shape[0] if sample_weight is None else sample_weight.sum()
        return float(loss + (0.5 * self.alpha) * values / sw_sum)

    def _fastnn_binarized(self, labels):
        """Class labels -> the bool targets of the output units, as ``_label_binarizer``
        makes them (without its checks, a tenth of the time: this runs every epoch)."""
        if self._label_binarizer.y_type_.startswith("multilabel"):
            return np.asarray(labels).astype(bool)  # an indicator matrix already
        return binarized(np.searchsorted(self.classes_, labels), len(self.classes_))

    def _fastnn_end_callbacks(self, validation_score=None):
        """The callbacks after an epoch (or L-BFGS-B iteration); True to stop."""
        record = EpochRecord(self.n_iter_, self.loss_, validation_score, self)
        return _stop_requested(_checked_callbacks(self.callbacks), record)

    # ---------------------------------------------------------- prediction
    def _forward_pass_fast(self, X, check_input=True):
        if check_input:
            plain = plain_X(self, X)  # (scikit-learn's checks would return it unchanged)
            if plain is None:
                plain = compat.validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
            X = plain
        if scipy.sparse.issparse(X) or self.out_activation_ not in _OUT_CODES:
            self._fastnn_fallback("sparse input")
            return super()._forward_pass_fast(X, check_input=False)
        from fastnn._kernels.dense import extras_of, forward
        from fastnn._runtime import predict_layout

        dtype = np.result_type(X.dtype, self.coefs_[0].dtype)
        if dtype not in _FLOATS:
            dtype = np.dtype(np.float64)
        X = np.ascontiguousarray(X, dtype=dtype)
        layer_units = [X.shape[1]] + [c.shape[1] for c in self.coefs_]
        layout, _ = self._fastnn_layout(layer_units, dtype)
        params = _pack(list(self.coefs_) + list(self.intercepts_), dtype)
        out, _ = self._fastnn_codes()
        acts = np.empty(X.shape[0] * sum(layer_units[1:]), dtype=dtype)
        looped = predict_layout(layout, dtype, X.shape[0])  # (a few rows: see fastnn._kernels.few_rows)
        output = forward(X, params, looped, out, acts, acts[:0], extras_of(layout))
        return output.copy()

    # --------------------------------------------------------------- lbfgs
    def _fastnn_fit_lbfgs(
        self, X, y, sample_weight, activations, deltas, coef_grads, intercept_grads, layer_units
    ):
        """scikit-learn's ``_fit_lbfgs`` on the compiled loss and gradient."""
        sample_weight = self._fastnn_sample_weight(y, sample_weight, X.dtype)
        if not self._fastnn_supported(X, sample_weight):
            self._fastnn_fallback("this input")
            rest = (activations, deltas, coef_grads, intercept_grads, layer_units)
            return super()._fit_lbfgs(X, y, *compat.with_sample_weight(sample_weight, rest))
        from fastnn._kernels.dense import deltas_units, extras_of, weighted_loss_and_gradients

        layout, size = self._fastnn_layout(layer_units, X.dtype)
        # the bookkeeping scikit-learn keeps for its own unpacking
        self._coef_indptr = [
            (int(w), int(w + fi * fo), (int(fi), int(fo))) for fi, fo, w, _ in layout[:, :4]
        ]
        self._intercept_indptr = [(int(b), int(b + fo)) for _, fo, _, b in layout[:, :4]]

        dtype = np.dtype(X.dtype)
        X = np.ascontiguousarray(X, dtype=dtype)
        Y = np.ascontiguousarray(y, dtype=dtype)
        weights = _weights(sample_weight, dtype)
        out, loss_code = self._fastnn_codes()
        params = np.empty(size, dtype=dtype)
        grads = np.empty(size, dtype=dtype)
        acts = np.empty(X.shape[0] * sum(layer_units[1:]), dtype=dtype)
        work = np.empty(X.shape[0] * deltas_units(layer_units), dtype=dtype)
        alpha = float(self.alpha)
        extras = extras_of(layout)
        last = [np.nan]  # the loss at params, the point of the last evaluation

        def loss_grad(x):
            params[...] = x
            last[0] = weighted_loss_and_gradients(
                X, Y, weights, params, layout, out, loss_code, alpha, acts, work, grads, extras
            )
            return last[0], grads.astype(np.float64)

        def loss_at(xk):
            same = np.array_equal(params, xk.astype(dtype))
            return float(last[0]) if same else float(loss_grad(xk)[0])

        iprint = 1 if (self.verbose is True or self.verbose >= 1) else -1
        x0 = _pack(list(self.coefs_) + list(self.intercepts_), np.float64)
        callback = self._fastnn_lbfgs_callback(loss_at, layout, dtype) if self.callbacks else None
        try:
            with blas_single_thread_for(layer_units, X.shape[0]):
                opt_res = self._fastnn_minimize(loss_grad, x0, iprint, callback)
            self.n_iter_ = compat.check_optimize_result("lbfgs", opt_res, self.max_iter)
        except _StopLbfgs as stopped:
            # a callback stopped it: no ConvergenceWarning
            opt_res = stopped.result
            self.n_iter_ = opt_res.nit
        self.loss_ = opt_res.fun
        self.coefs_, self.intercepts_ = (
            [a.copy() for a in part] for part in _views(opt_res.x.astype(dtype), layout)
        )

    def _fastnn_minimize(self, loss_grad, x0, iprint, callback=None):
        return scipy.optimize.minimize(
            loss_grad,
            x0,
            method="L-BFGS-B",
            jac=True,
            callback=callback,
            options={
                "maxfun": self.max_fun,
                "maxiter": self.max_iter,
                "gtol": self.tol,
                **compat.lbfgs_print_options(iprint),
            },
        )

    def _fastnn_lbfgs_callback(self, loss_at, layout, dtype):
        """SciPy's per-iteration callback: the estimator set to the iterate
        (``coefs_``, ``intercepts_``, ``loss_``, ``n_iter_``), then the callbacks.

        A stop raises :class:`_StopLbfgs` with the iterate, on every SciPy
        release (SciPy's own ``StopIteration`` needs 1.11 and warns as a failure).
        """
        iteration = [0]

        def on_iteration(xk):
            iteration[0] += 1
            self.n_iter_ = iteration[0]
            self.loss_ = loss_at(xk)
            self.coefs_, self.intercepts_ = (
                [a.copy() for a in part] for part in _views(xk.astype(dtype), layout)
            )
            if self._fastnn_end_callbacks():
                result = scipy.optimize.OptimizeResult(x=xk, fun=self.loss_, nit=iteration[0])
                raise _StopLbfgs(result)

        return on_iteration

    # scikit-learn calls it with or without sample_weight, by release
    _fit_lbfgs = compat.override(_fastnn_fit_lbfgs, "_fit_lbfgs")

    # ---------------------------------------------------------- sgd / adam
    def _fastnn_fit_stochastic(
        self,
        X,
        y,
        sample_weight,
        activations,
        deltas,
        coef_grads,
        intercept_grads,
        layer_units,
        incremental,
    ):
        """scikit-learn's ``_fit_stochastic``, its epochs in compiled calls."""
        sample_weight = self._fastnn_sample_weight(y, sample_weight, X.dtype)
        if not self._fastnn_supported(X, sample_weight):
            self._fastnn_fallback("this input")
            rest = (activations, deltas, coef_grads, intercept_grads, layer_units, incremental)
            return super()._fit_stochastic(X, y, *compat.with_sample_weight(sample_weight, rest))
        optimizer = self._fastnn_optimizer(incremental)
        X_train, y_train, sample_weight, X_val, y_val, sample_weight_val = self._fastnn_split(
            X, y, sample_weight, incremental
        )
        n_samples = X_train.shape[0]
        dtype = np.dtype(X.dtype)
        # flat parameter buffer and optimizer state, in scikit-learn's packing order
        layout, _ = self._fastnn_layout(layer_units, dtype)
        params = _pack(list(self.coefs_) + list(self.intercepts_), dtype)
        self.coefs_, self.intercepts_ = _views(params, layout)
        out, loss_code = self._fastnn_codes()
        model = Model(params, layout, tuple(layer_units), out, loss_code)
        batches = Batches(
            np.ascontiguousarray(X_train, dtype=dtype), np.ascontiguousarray(y_train, dtype=dtype),
            _weights(sample_weight, dtype), self._fastnn_batch_size(n_samples), bool(self.shuffle),
        )  # fmt: skip
        # scikit-learn's stopping rule and learning-rate schedule run inside
        # the kernel, many epochs per call, unless something must happen
        # between epochs in Python (a validation score, a printed line, a
        # callback)
        in_kernel = not (self.early_stopping or incremental or self.verbose or self.callbacks)
        kernel_optimizer = self._fastnn_kernel_state(optimizer, layout, dtype, in_kernel)
        driver = Driver(model, kernel_optimizer, batches)
        bar = None if incremental else _progress(self.max_iter, self.verbose)
        epoch_args = (
            optimizer, self.early_stopping, X_val, y_val, sample_weight_val, n_samples, incremental, bar,
        )  # fmt: skip
        diverged = False
        try:
            with driver:
                diverged = self._fastnn_epochs(driver, in_kernel, epoch_args)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        finally:
            # epochs each twin ran (the kernels' threads, for reports and tests)
            self._fastnn_epochs_by_twin = driver.epochs_by_twin
            if bar is not None:
                bar.close()
            self._fastnn_hand_back(optimizer, kernel_optimizer, params, layout)

        if self.early_stopping:
            # (after a divergence too: scikit-learn's best weights are finite)
            self.coefs_ = self._best_coefs
            self.intercepts_ = self._best_intercepts
        elif diverged:
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may"
                " contain large values and need to be preprocessed."
            )

    def _fastnn_epochs(self, driver, in_kernel, epoch_args):
        """scikit-learn's epoch loop, chunks of epochs per compiled call;
        returns whether the weights went non-finite."""
        n_samples = driver.batches.X.shape[0]
        sample_idx = np.arange(n_samples, dtype=np.int64)
        perm = np.empty(n_samples, dtype=np.int64)
        max_chunk = TwinRunner.CHUNK if in_kernel else 1
        order = np.zeros((max_chunk, n_samples if self.shuffle else 0), dtype=np.int64)
        history = np.zeros(max_chunk, dtype=np.float64)
        self.n_iter_ = 0
        diverged = False
        while self.n_iter_ < self.max_iter:
            if diverged:
                # scikit-learn trains on after its weights went non-finite:
                # epochs of NaN loss, each with its shuffle, until a rule
                # or max_iter stops them; they take no compiled call
                if self.shuffle:
                    _draw_orders(self._random_state, sample_idx, perm, order, 1, False)
                    sample_idx[...] = order[0]
                self._fastnn_nan_epoch()
                stop = self._fastnn_end_of_epoch(epoch_args)
            else:
                count = driver.next_chunk(min(max_chunk, self.max_iter - self.n_iter_))
                result = self._fastnn_chunk(driver, count, in_kernel, order, history, sample_idx, perm)
                if result.diverged:
                    # a non-finite loss or gradient in epoch `done`: the
                    # kernel stopped before the step, scikit-learn takes it
                    # and finishes the epoch on non-finite weights. Its
                    # loss: infinite when the failing batch's is (the
                    # batches after it stay infinite), else NaN
                    diverged = True
                    driver.model.params[...] = np.nan
                    failed = float(history[result.done])
                    self._fastnn_nan_epoch(failed if np.isinf(failed) else np.nan)
                    stop = self._fastnn_end_of_epoch(epoch_args)
                elif in_kernel:
                    stop = result.stopped
                else:
                    stop = self._fastnn_end_of_epoch(epoch_args)
            if stop:
                break
            if self.n_iter_ == self.max_iter:
                warnings.warn(
                    "Stochastic Optimizer: Maximum iterations (%d) "
                    "reached and the optimization hasn't converged yet." % self.max_iter,
                    ConvergenceWarning,
                )
        return diverged

    def _fastnn_chunk(self, driver, count, in_kernel, order, history, sample_idx, perm):
        """One compiled call of ``count`` epochs, with scikit-learn's shuffles
        and bookkeeping before and after; returns the driver's ``Chunk``."""
        from fastnn._kernels import train as kt

        hyper, control = driver.optimizer.hyper, driver.optimizer.control
        optimizer = self._optimizer
        is_adam = isinstance(optimizer, AdamOptimizer)
        if self.shuffle:
            # scikit-learn's per-epoch shuffles, for each epoch of the chunk
            # (the state before them is kept for a rewind below, which a chunk
            # of one epoch never needs: its one epoch is started)
            rng_state = _draw_orders(self._random_state, sample_idx, perm, order, count, count > 1)
        if not is_adam:
            hyper[0] = optimizer.learning_rate
        control[kt.C_BEST_LOSS] = self.best_loss_ if in_kernel else np.inf
        control[kt.C_NO_IMPROVEMENT] = self._no_improvement_count
        control[kt.C_TIME_STEP] = self.t_
        result = driver.run(count, order, history, first_epoch=self.n_iter_)
        done = result.done
        started = done if (done == count or result.stopped) else done + 1
        if self.shuffle and started < count:
            # leave the random stream where scikit-learn's would be:
            # one shuffle per epoch started
            self._random_state.set_state(rng_state)
            _draw_orders(self._random_state, sample_idx, perm, order, started)
        if self.shuffle and started > 0:
            # the last epoch's order (order is rewritten by the next chunk)
            sample_idx[...] = order[started - 1]
        for e in range(done):
            self.n_iter_ += 1
            self.loss_ = float(history[e])
            self.loss_curve_.append(self.loss_)
        if in_kernel:
            self.t_ = int(control[kt.C_TIME_STEP])
            self.best_loss_ = float(control[kt.C_BEST_LOSS])
            self._no_improvement_count = int(control[kt.C_NO_IMPROVEMENT])
            if not is_adam:
                optimizer.learning_rate = float(hyper[0])
        return result

    # ------------------------------------------ the steps of _fit_stochastic
    def _fastnn_optimizer(self, incremental):
        """scikit-learn's optimizer object: a new one, or the one partial_fit goes on with."""
        if not incremental or not hasattr(self, "_optimizer"):
            params_list = list(self.coefs_) + list(self.intercepts_)
            if self.solver == "sgd":
                self._optimizer = SGDOptimizer(
                    params_list,
                    self.learning_rate_init,
                    self.learning_rate,
                    self.momentum,
                    self.nesterovs_momentum,
                    self.power_t,
                )
            else:
                self._optimizer = AdamOptimizer(
                    params_list, self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon
                )
        return self._optimizer

    def _fastnn_split(self, X, y, sample_weight, incremental):
        """scikit-learn's early-stopping split (drawn from ``random_state`` as its own):
        ``(X_train, y_train, sample_weight, X_val, y_val, sample_weight_val)``."""
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        if not self.early_stopping:
            return X, y, sample_weight, None, None, None
        should_stratify = is_classifier(self) and self.n_outputs_ == 1
        arrays = (X, y) if sample_weight is None else (X, y, sample_weight)
        parts = train_test_split(
            *arrays,
            random_state=self._random_state,
            test_size=self.validation_fraction,
            stratify=y if should_stratify else None,
        )
        X_train, X_val, y_train, y_val = parts[:4]
        sample_weight_val = None
        if sample_weight is not None:
            sample_weight, sample_weight_val = parts[4:]
        if compat.VALIDATION_SIZE_CHECK and X_val.shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' "
                "or the size of your dataset."
            )
        if is_classifier(self):
            y_val = self._label_binarizer.inverse_transform(y_val)
        return X_train, y_train, sample_weight, X_val, y_val, sample_weight_val

    def _fastnn_batch_size(self, n_samples):
        """scikit-learn's batch size for ``n_samples`` rows (with its warning when clipped)."""
        if self.batch_size == "auto":
            return min(200, n_samples)
        if self.batch_size > n_samples:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than "
                "sample size. It is going to be clipped"
            )
        return int(np.clip(self.batch_size, 1, n_samples))

    def _fastnn_kernel_state(self, optimizer, layout, dtype, in_kernel):
        """scikit-learn's optimizer as the kernels take it (a ``fastnn._runtime.Optimizer``),
        its state in scikit-learn's packing order. With dropout, ``hyper``
        carries this call's seed, drawn from ``random_state``; ``control``
        runs scikit-learn's stopping rule inside the kernel when ``in_kernel``."""
        from fastnn._kernels import train as kt
        from fastnn._kernels.layout import has_dropout

        is_adam = isinstance(optimizer, AdamOptimizer)
        if is_adam:
            opt_code = codes.OPT_ADAM
            state1 = _pack(optimizer.ms, dtype)
            state2 = _pack(optimizer.vs, dtype)
            step_count = np.array([optimizer.t], dtype=np.int64)
        else:
            opt_code = codes.OPT_MOMENTUM
            state1 = _pack(optimizer.velocities, dtype)
            state2 = np.zeros(0, dtype=dtype)
            step_count = np.zeros(1, dtype=np.int64)
        hyper = kt.hyper_array(
            optimizer.learning_rate_init if is_adam else optimizer.learning_rate,
            0.0 if is_adam else optimizer.momentum,
            False if is_adam else bool(optimizer.nesterov),
            self.beta_1,
            self.beta_2,
            self.epsilon,
            self.alpha,
        )
        if has_dropout(layout):  # this call's dropout masks
            hyper[kt.H_SEED] = float(self._random_state.randint(0, 1 << 53, dtype=np.int64))
        control = self._fastnn_control(optimizer, in_kernel)
        return Optimizer(opt_code, hyper, state1, state2, step_count, control)

    def _fastnn_control(self, optimizer, in_kernel):
        """The kernels' ``control``: scikit-learn's stopping rule (run inside
        the kernel when ``in_kernel``) and the sgd learning-rate schedule."""
        from fastnn._kernels import train as kt

        control = np.zeros(kt.CONTROL_SIZE, dtype=np.float64)
        control[kt.C_RULE] = 1.0 if in_kernel else 0.0
        if not isinstance(optimizer, AdamOptimizer):
            control[kt.C_SCHEDULE] = {
                "constant": kt.SCHEDULE_CONSTANT,
                "invscaling": kt.SCHEDULE_INVSCALING,
                "adaptive": kt.SCHEDULE_ADAPTIVE,
            }[optimizer.lr_schedule]
            control[kt.C_LR_INIT] = optimizer.learning_rate_init
            control[kt.C_POWER_T] = optimizer.power_t
        control[kt.C_TOL] = self.tol
        control[kt.C_N_ITER_NO_CHANGE] = self.n_iter_no_change
        return control

    def _fastnn_hand_back(self, optimizer, state, params, layout):
        """The kernels' optimizer ``state`` back to scikit-learn's optimizer
        object, and the parameters to ``coefs_`` / ``intercepts_``, so that
        partial_fit, pickling and the NumPy fallback continue from them."""
        if isinstance(optimizer, AdamOptimizer):
            optimizer.ms = _unflatten_list(state.state1, layout)
            optimizer.vs = _unflatten_list(state.state2, layout)
            optimizer.t = int(state.step_count[0])
            if optimizer.t > 0:
                optimizer.learning_rate = (
                    optimizer.learning_rate_init
                    * np.sqrt(1 - optimizer.beta_2**optimizer.t)
                    / (1 - optimizer.beta_1**optimizer.t)
                )
        else:
            optimizer.velocities = _unflatten_list(state.state1, layout)
        coefs, intercepts = _views(params, layout)
        self.coefs_ = [c.copy() for c in coefs]
        self.intercepts_ = [b.copy() for b in intercepts]

    # scikit-learn calls it with or without sample_weight, by release
    _fit_stochastic = compat.override(_fastnn_fit_stochastic, "_fit_stochastic")

    def _fastnn_nan_epoch(self, loss=np.nan):
        """An epoch of scikit-learn's on non-finite weights (NaN loss)."""
        self.n_iter_ += 1
        self.loss_ = float(loss)
        self.loss_curve_.append(self.loss_)

    def _fastnn_end_of_epoch(self, args):
        """scikit-learn's bookkeeping after an epoch, in Python: the printed
        lines, the stopping rule (with the validation score under early
        stopping) and the learning-rate schedule; then the callbacks.
        Returns True to stop."""
        optimizer, early_stopping, X_val, y_val, sample_weight_val, n_samples, incremental, bar = (
            args
        )
        self.t_ += n_samples
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{self.loss_:.8f}", refresh=False)
        with _printing(bar):
            if self.verbose:
                print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
            # (prints the validation score under early stopping and verbose)
            compat.update_no_improvement_count(
                self, early_stopping, X_val, y_val, sample_weight_val
            )
            optimizer.iteration_ends(self.t_)
            stop = self._fastnn_stopping_rule(optimizer, early_stopping)
            # the callbacks see the epoch's bookkeeping done; any may stop
            score = self.validation_scores_[-1] if early_stopping else None
            if self._fastnn_end_callbacks(score):
                stop = True
        return stop or bool(incremental)

    def _fastnn_stopping_rule(self, optimizer, early_stopping):
        """scikit-learn's tol / n_iter_no_change rule after an epoch; True to stop."""
        if self._no_improvement_count <= self.n_iter_no_change:
            return False
        if early_stopping:
            msg = (
                "Validation score did not improve more than "
                "tol=%f for %d consecutive epochs." % (self.tol, self.n_iter_no_change)
            )
        else:
            msg = (
                "Training loss did not improve more than tol=%f"
                " for %d consecutive epochs." % (self.tol, self.n_iter_no_change)
            )
        # (prints msg and "Stopping." or the new learning rate when verbose)
        if optimizer.trigger_stopping(msg, self.verbose):
            return True
        self._no_improvement_count = 0
        return False


_FASTNN_PARAMETERS = ("class_weight", "callbacks", "dropout")


def _sklearn_arguments(values):
    """The ``locals()`` of a constructor, less fastnn's own parameters: scikit-learn's."""
    skip = ("self", "__class__", *_FASTNN_PARAMETERS)
    return {name: value for name, value in values.items() if name not in skip}


_COMMON_DOC = """
    The constructor parameters, their defaults and meaning, the methods and
    the fitted attributes are those of scikit-learn's
    ``sklearn.neural_network.{name}`` (this class subclasses it); see its
    documentation for the full list. Only the computation differs: training
    and prediction run in fastnn's compiled kernels.

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        Sizes of the hidden layers.
    activation : str or tuple of str, default="relu"
        Activation of the hidden layers: scikit-learn's ``"relu"``,
        ``"identity"``, ``"logistic"``, ``"tanh"``, or one that fastnn adds
        (``"leaky_relu"``, ``"elu"``, ``"softplus"``, ``"gelu"``, ``"silu"``,
        computed in fastnn's kernels only, so dense input only); or a tuple
        with one name per hidden layer. Weights are initialised with
        scikit-learn's rule (factor 2 for ``"logistic"``, else 6).
    solver : {{"adam", "lbfgs", "sgd"}}, default="adam"
        Weight optimizer.
    alpha : float, default=1e-4
        L2 penalty: ``0.5 * alpha * sum(W**2) / n_samples`` is added to the loss.
    batch_size, learning_rate, learning_rate_init, power_t, max_iter, shuffle, \
random_state, tol, verbose, warm_start, momentum, nesterovs_momentum, \
early_stopping, validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change, \
max_fun
        As in scikit-learn. ``verbose`` prints scikit-learn's lines, the same
        text as its estimator (``Iteration 3, loss = 0.41234567`` per epoch,
        ``Validation score: ...`` under early stopping, the stopping and
        learning-rate messages). With ``verbose >= 2`` and tqdm installed, a
        progress bar on stderr comes in addition to them.
{extra}    dropout : float or tuple of float, default=0.0
        fastnn's own. Inverted dropout of the hidden layers during ``fit`` and
        ``partial_fit`` with ``"sgd"`` or ``"adam"`` (not ``"lbfgs"``, whose
        line search needs a deterministic loss; not in prediction): each unit
        is zeroed with this probability and the others are scaled by ``1 / (1
        - rate)``; one rate, or a tuple with one per hidden layer. The masks
        come from a seed drawn from ``random_state`` once per call and from
        each unit's epoch, row and column, so a seeded fit is bit-identical
        run to run. At 0 nothing is drawn: the numbers stay scikit-learn's.
    callbacks : list of callable, default=None
        fastnn's own. Each is called after every epoch with an
        :class:`EpochRecord` ``(epoch, loss, validation_score, estimator)``,
        after scikit-learn's bookkeeping of the epoch (the stopping rule, the
        learning-rate schedule). A callback that returns True stops training
        after that epoch (``n_iter_`` counts the epochs that ran, and no
        ``ConvergenceWarning`` is raised); any other value lets it go on. With
        ``solver="lbfgs"`` they are called after every L-BFGS-B iteration,
        with the loss at the iterate and the estimator's weights set to it.
        An exception raised by a callback ends ``fit`` and propagates; the
        estimator then holds the weights of the last epoch (under
        ``early_stopping``, not the best ones). Setting callbacks makes the
        ``"sgd"`` and ``"adam"`` solvers run one compiled call per epoch; the
        numbers stay those of a fit without callbacks. They need dense ``X``
        (sparse input trains in scikit-learn's code). To clone, pickle or
        search estimators in parallel, the callbacks must pickle.

    Attributes
    ----------
    coefs_, intercepts_ : list of ndarray
        Weights ``(fan_in, fan_out)`` and biases of each layer.
    loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, \
n_iter_, n_layers_, n_outputs_, out_activation_, n_features_in_, t_
        As in scikit-learn.
    validation_loss_curve_ : list of float or None
        fastnn's own. Under ``early_stopping`` (``"sgd"`` and ``"adam"``),
        the loss on the validation split after each epoch, beside
        ``validation_scores_``: the loss that ``loss_curve_`` reports, with
        the L2 term ``0.5 * alpha * sum(W**2) / n`` (``n`` the validation rows,
        or the sum of their sample weights), weighted by their sample weights
        when there are some. None otherwise.{attrs}

    Notes
    -----
    With the same ``random_state``, the ``"sgd"`` and ``"adam"`` solvers give
    scikit-learn's coefficients, losses and iteration counts up to
    floating-point rounding, with ``shuffle=False`` and ``shuffle=True``, with
    and without ``sample_weight``, and for the regressor's ``loss="poisson"``.
    Sparse input runs scikit-learn's own NumPy implementation.{notes}
"""


_CLASS_WEIGHT_DOC = """\
    class_weight : dict, list of dict or "balanced", default=None
        fastnn's own, as ``LogisticRegression``'s: each sample's weight is
        multiplied by the weight of its class (``{class: weight}``;
        ``"balanced"``: ``n_samples / (n_classes * np.bincount(y))``; for
        multilabel ``y``, a list of dicts, one per label, or ``"balanced"``,
        the weights of the labels multiplied), on top of ``sample_weight``.
        The fit is the one with ``sample_weight=compute_sample_weight(class_weight,
        y)`` (times ``sample_weight``), with every solver, and under
        ``early_stopping`` the validation score is weighted too. ``partial_fit``
        takes a dict but not ``"balanced"``, which needs the whole ``y``.
        Needs scikit-learn 1.7 or later (a ValueError before).
"""


class MLPClassifier(_FastnnMLPMixin, _SkMLPClassifier):
    __doc__ = (
        "Multi-layer perceptron classifier, a faster drop-in for scikit-learn's.\n"
        + _COMMON_DOC.format(name="MLPClassifier", extra=_CLASS_WEIGHT_DOC, notes="",
                             attrs="\n    classes_ : ndarray\n        Class labels.")
        + """
    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from fastnn.sklearn import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier(hidden_layer_sizes=(20,), max_iter=2000, random_state=0).fit(X, y)
    >>> bool(clf.score(X, y) > 0.9)
    True
"""
    )

    _fastnn_loss_code = codes.LOG_LOSS
    _parameter_constraints: dict = {
        **_with_activations(_SkMLPClassifier._parameter_constraints),
        "class_weight": [dict, list, StrOptions({"balanced"}), None],
        "callbacks": [list, tuple, None],
        "dropout": [Real, tuple, list],
    }

    # scikit-learn's parameters and defaults (1.6.1 to 1.9.1), then fastnn's
    def __init__(
        self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
        batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
        max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
        warm_start=False, momentum=0.9, nesterovs_momentum=True, early_stopping=False,
        validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
        n_iter_no_change=10, max_fun=15000, class_weight=None, callbacks=None, dropout=0.0,
    ):  # fmt: skip
        super().__init__(**_sklearn_arguments(locals()))
        self.class_weight = class_weight
        self.callbacks = callbacks
        self.dropout = dropout

    def _predict(self, X, check_input=True):
        # scikit-learn's _predict, the labels of a plain binarizer picked
        # without its inverse_transform's checks (a third of predicting a row)
        scores = self._forward_pass_fast(X, check_input=check_input)
        if self.n_outputs_ == 1:
            scores = scores.ravel()
        labels = predicted_labels(self._label_binarizer, scores)
        return labels if labels is not None else self._label_binarizer.inverse_transform(scores)

    def _fastnn_plain_input(self, X, y, incremental):
        # (X, bool targets) of a partial_fit on plain arrays and known labels,
        # as scikit-learn's _validate_input makes them; None: its checks decide
        if not incremental or self.warm_start or not hasattr(self, "classes_"):
            return None  # (scikit-learn compares the sets of classes, or fits its binarizer)
        X = plain_X(self, X)
        targets = None if X is None else plain_labels(self._label_binarizer, y, X.shape[0])
        return None if targets is None else (X, targets)


class MLPRegressor(_FastnnMLPMixin, _SkMLPRegressor):
    __doc__ = (
        "Multi-layer perceptron regressor, a faster drop-in for scikit-learn's.\n"
        + _COMMON_DOC.format(
            name="MLPRegressor",
            extra="    loss : {\"squared_error\", \"poisson\"}, default=\"squared_error\"\n"
            "        Loss to minimise (scikit-learn's half squared error or half Poisson\n"
            "        deviance).\n",
            attrs="",
            notes="\n\n    The squared-error loss is scikit-learn's: ``mean((y - p)**2) / 2``"
            " over all\n    samples and outputs, with the gradient ``(p - y) / n_samples``. With several\n"
            "    outputs that gradient is ``n_outputs`` times the derivative of the reported\n"
            "    loss (scikit-learn issue #8349); matching scikit-learn's numbers, this\n"
            "    estimator inherits that convention.",
        )
        + """
    Examples
    --------
    >>> import numpy as np
    >>> from fastnn.sklearn import MLPRegressor
    >>> X = np.linspace(-1, 1, 200).reshape(-1, 1)
    >>> reg = MLPRegressor(hidden_layer_sizes=(20,), solver="lbfgs", random_state=0)
    >>> bool(reg.fit(X, X.ravel() ** 2).score(X, X.ravel() ** 2) > 0.9)
    True
"""
    )

    _parameter_constraints: dict = {
        **_with_activations(_SkMLPRegressor._parameter_constraints),
        "callbacks": [list, tuple, None],
        "dropout": [Real, tuple, list],
    }

    # scikit-learn's parameters and defaults, then fastnn's; 1.7 added loss, first
    if compat.REGRESSOR_LOSS:

        def __init__(
            self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
            solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
            learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
            random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
            nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
            beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
            callbacks=None, dropout=0.0,
        ):  # fmt: skip
            super().__init__(**_sklearn_arguments(locals()))
            self.callbacks = callbacks
            self.dropout = dropout

    else:

        def __init__(
            self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
            alpha=0.0001, batch_size="auto", learning_rate="constant",
            learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
            random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
            nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
            beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
            callbacks=None, dropout=0.0,
        ):  # fmt: skip
            super().__init__(**_sklearn_arguments(locals()))
            self.callbacks = callbacks
            self.dropout = dropout

    def _fastnn_plain_input(self, X, y, incremental):
        # (X, y) of a fitted estimator's fit or partial_fit on plain arrays, as
        # scikit-learn's _validate_input returns them; None: its checks decide
        X = plain_X(self, X)
        y = None if X is None else plain_targets(y, X.shape[0])
        return None if y is None else (X, y)

    @property
    def _fastnn_loss_code(self):
        # (scikit-learn 1.7 added ``loss``; before, the squared error only)
        return codes.POISSON if getattr(self, "loss", None) == "poisson" else codes.SQUARED_ERROR


# ------------------------------------------------------------------ benchmark
def _workloads(quick):
    from sklearn.datasets import (
        load_breast_cancer,
        load_digits,
        make_classification,
        make_regression,
    )
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    Xd = digits.data / 16.0
    cancer = load_breast_cancer()
    Xc = StandardScaler().fit_transform(cancer.data)
    n = 1000 if quick else 4000
    Xr, yr = make_regression(n_samples=n, n_features=30, n_targets=1, noise=5.0, random_state=0)
    yr = yr / np.std(yr)
    Xk, yk = make_classification(
        n_samples=n, n_features=30, n_informative=10, n_classes=3, random_state=0
    )
    return [
        ("digits", "classifier", Xd, digits.target),
        ("breast_cancer", "classifier", Xc, cancer.target),
        ("make_regression", "regressor", Xr, yr),
        ("make_classification", "classifier", Xk, yk),
    ]


# Untimed pause before each timed fit. The BLAS and OpenMP worker threads
# of one fit busy-wait for new work for a while after it ends (OpenBLAS's
# for about 0.1 s); a fit started at once shares the cores with them.
# Measured on 2 cores, digits, default settings (medians of 5): fastnn 0.22 s
# right after scikit-learn's fit, 0.18 s after a 0.2 s pause (its thread
# probe then also sees the machine as it is).
SETTLE_S = 0.2


def sklearn_comparison(
    quick=False,
    repeats=None,
    solvers=("adam", "sgd", "lbfgs"),
    dtypes=("float64", "float32"),
    workloads=None,
):
    """Fit time and score of fastnn's estimators against scikit-learn's.

    Each workload (digits, breast_cancer, make_regression,
    make_classification) is fitted by both libraries with default settings
    except ``solver`` and ``random_state=0``, for every solver and dtype; the
    fit time is the median of ``repeats`` fits, the two libraries taking turns
    (after one warm-up fit of the fastnn estimator, so that compilation is not
    timed, and with an untimed pause of ``SETTLE_S`` before each fit so that
    the worker threads of the previous fit have gone idle), and the score is
    the estimator's ``score`` on a held-out quarter of the data.

    Parameters
    ----------
    quick : bool, default=False
        Smaller synthetic workloads, fewer repeats and ``max_iter=50``.
    repeats : int, optional
        Number of timed fits per library (default 5, or 2 when ``quick``).
    solvers : sequence of str
        Solvers to time.
    dtypes : sequence of str
        Input dtypes to time.
    workloads : sequence of str, optional
        Subset of ``("digits", "breast_cancer", "make_regression",
        "make_classification")``; all by default.

    Returns
    -------
    list of dict
        One row per (workload, solver, dtype) with keys ``workload``,
        ``solver``, ``dtype``, ``n_samples``, ``sklearn_s``, ``fastnn_s``,
        ``speedup``, ``sklearn_score``, ``fastnn_score``, ``n_iter``.
    """
    from sklearn.model_selection import train_test_split as split

    repeats, workloads = _comparison_args(quick, repeats, solvers, dtypes, workloads)
    rows = []
    extra = {"max_iter": 50} if quick else {}
    for name, kind, X, y in _workloads(quick):
        if name not in workloads:
            continue
        if kind == "classifier":
            classes = (_SkMLPClassifier, MLPClassifier)
        else:
            classes = (_SkMLPRegressor, MLPRegressor)
        for dtype in dtypes:
            Xt, Xv, yt, yv = split(X.astype(dtype), y, random_state=0)
            for solver in solvers:
                params = dict(solver=solver, random_state=0, **extra)
                times, scores, n_iter = _time_in_turns(classes, params, (Xt, yt, Xv, yv), repeats)
                rows.append(
                    {
                        "workload": name,
                        "solver": solver,
                        "dtype": dtype,
                        "n_samples": int(Xt.shape[0]),
                        "sklearn_s": times["sklearn"],
                        "fastnn_s": times["fastnn"],
                        "speedup": times["sklearn"] / times["fastnn"],
                        "sklearn_score": scores["sklearn"],
                        "fastnn_score": scores["fastnn"],
                        "n_iter": n_iter,
                    }
                )
    return rows


def _comparison_args(quick, repeats, solvers, dtypes, workloads):
    """`sklearn_comparison`'s arguments checked: (repeats, workloads) with their defaults."""
    if repeats is None:
        repeats = 2 if quick else 5
    repeats = int(repeats)
    if repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    known = ("digits", "breast_cancer", "make_regression", "make_classification")
    if workloads is None:
        workloads = known
    for name in workloads:
        if name not in known:
            raise ValueError(f"workloads must be among {known}, got {name!r}")
    for solver in solvers:
        if solver not in ("adam", "sgd", "lbfgs"):
            raise ValueError(f"solvers must be among ('adam', 'sgd', 'lbfgs'), got {solver!r}")
    for dtype in dtypes:
        if np.dtype(dtype) not in _FLOATS:
            raise ValueError(f"dtypes must be float64 or float32, got {dtype!r}")
    return repeats, workloads


def _time_in_turns(classes, params, data, repeats):
    """Median fit times, held-out scores and fastnn's ``n_iter_`` of scikit-learn's
    and fastnn's estimator (``classes``), fitting in turns (see `sklearn_comparison`)."""
    sk_cls, fn_cls = classes
    Xt, yt, Xv, yv = data
    scores = {}
    n_iter = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fn_cls(**params).fit(Xt, yt)  # compile / load the kernels
        spent = {"sklearn": [], "fastnn": []}
        # interleaved, so that a change of machine load hits both alike
        for _ in range(repeats):
            for label, cls in (("sklearn", sk_cls), ("fastnn", fn_cls)):
                est = cls(**params)
                time.sleep(SETTLE_S)
                start = time.perf_counter()
                est.fit(Xt, yt)
                spent[label].append(time.perf_counter() - start)
                scores[label] = float(est.score(Xv, yv))
                if label == "fastnn":
                    n_iter = int(est.n_iter_)
    times = {label: float(np.median(t)) for label, t in spent.items()}
    return times, scores, n_iter


def format_sklearn_comparison(rows):
    """The rows of :func:`sklearn_comparison` as a plain-text table.

    Parameters
    ----------
    rows : list of dict
        As returned by :func:`sklearn_comparison`.

    Returns
    -------
    str
    """
    header = (
        f"{'workload':<20} {'solver':<6} {'dtype':<8} {'sklearn s':>10} {'fastnn s':>10} "
        f"{'speedup':>8} {'sk score':>9} {'fn score':>9}"
    )
    lines = [header]
    for r in rows:
        lines.append(
            f"{r['workload']:<20} {r['solver']:<6} {r['dtype']:<8} {r['sklearn_s']:>10.4f} "
            f"{r['fastnn_s']:>10.4f} {r['speedup']:>7.1f}x {r['sklearn_score']:>9.4f} "
            f"{r['fastnn_score']:>9.4f}"
        )
    return "\n".join(lines)
