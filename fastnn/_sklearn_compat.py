"""The private parts of scikit-learn that ``fastnn.sklearn`` relies on, in one place.

fastnn's estimators subclass scikit-learn's ``MLPClassifier`` and
``MLPRegressor`` and replace some of their private methods, so any
scikit-learn release may break them. This module lists every private name
they use (:data:`PRIVATE`) and holds the shims that make one code base work
from :data:`MIN_VERSION` (the floor declared in ``pyproject.toml``) to the
newest release. ``tests/test_sklearn_compat.py`` checks every entry against
the installed scikit-learn and names the entry and the version when one no
longer holds; :func:`problems` runs the same checks for anyone.

An entry says what fastnn does with the name:

``override``
    fastnn replaces the method. Its parameters must be one of the known
    layouts, and the normalised code of scikit-learn's version (docstring,
    comments and formatting left out) must be one that was reviewed: a
    scikit-learn change there (a bug fix, a new option) would otherwise be
    silently lost. The same holds for ``reimplemented`` entries, code whose
    arithmetic or rules fastnn's kernels repeat.
``call``
    fastnn calls it; its parameters must be one of the known layouts.
``attribute``
    fastnn reads or writes it on scikit-learn's objects; it must be there.
``format``
    a message that fastnn prints or raises as scikit-learn does; the
    format string must still be in scikit-learn's code.

Differences between the supported releases: 1.7 added ``sample_weight`` to
``fit``, ``partial_fit`` and to the private methods that fastnn overrides or
calls, ``MLPRegressor(loss="poisson")`` and the "validation set is too
small" error of ``early_stopping``.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import re
import textwrap
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import _base as _sk_base
from sklearn.neural_network import _multilayer_perceptron as _sk_mlp
from sklearn.neural_network import _stochastic_optimizers as _sk_opt

# The oldest scikit-learn that fastnn supports and tests (CI runs the
# scikit-learn tests against it and against the newest release). 1.4.1 and
# before need NumPy < 2. 1.4.2 and 1.5.2 give scikit-learn's coefficients
# and pass check_estimator (with a shim for validate_data), but their own
# test_mlp.py checks float32 against float64 predictions at rtol=1e-4 on one
# seed, which scikit-learn's estimator passes and fastnn's misses (1.1e-4:
# float32 rounding, not a bug; scikit-learn's own misses it on 3 of 12
# seeds, and 1.6 relaxed the test).
MIN_VERSION = "1.6.1"


def parse_version(text):
    """``"1.7.2"`` -> ``(1, 7, 2)``; suffixes (``rc1``, ``.post1``, ``.dev0``) dropped."""
    parts = []
    for piece in str(text).split(".")[:3]:
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
    return tuple(parts + [0] * (3 - len(parts)))


VERSION = parse_version(sklearn.__version__)
if VERSION < parse_version(MIN_VERSION):
    raise ImportError(
        f"fastnn.sklearn needs scikit-learn >= {MIN_VERSION}, found {sklearn.__version__}: "
        f"pip install 'scikit-learn>={MIN_VERSION}'"
    )
_Base = _sk_mlp.BaseMultilayerPerceptron


def _parameters(func):
    return tuple(inspect.signature(func).parameters)


# ----------------------------------------------------------------- layouts
_WITH_SW = ("self", "X", "y", "sample_weight")
_NO_SW = ("self", "X", "y")
_STOCHASTIC_REST = (
    "activations", "deltas", "coef_grads", "intercept_grads", "layer_units", "incremental",
)  # fmt: skip
_LBFGS_REST = ("activations", "deltas", "coef_grads", "intercept_grads", "layer_units")

#: Whether the installed scikit-learn passes ``sample_weight`` through its
#: private methods (1.7 and later). Before, fastnn's overrides get none.
SAMPLE_WEIGHT = "sample_weight" in _parameters(_Base._fit_stochastic)

#: The "validation set is too small" error of ``early_stopping`` (1.7).
VALIDATION_SIZE_CHECK = VERSION >= (1, 7, 0)

#: Whether ``MLPRegressor.__init__`` takes ``loss`` (1.7 and later, as its
#: first parameter); fastnn's constructor mirrors the installed one.
REGRESSOR_LOSS = "loss" in _parameters(_sk_mlp.MLPRegressor.__init__)


# ------------------------------------------------------------------ shims
from sklearn.utils.validation import validate_data  # noqa: E402  (public from 1.6)

try:
    from sklearn.utils.optimize import _check_optimize_result as check_optimize_result
except ImportError:  # pragma: no cover - every supported release has it

    def check_optimize_result(solver, result, max_iter=None, extra_warning_msg=None):
        """The iteration count of a SciPy result, with a warning when it did not converge."""
        if result.status != 0:
            message = f"{solver} failed to converge (status={result.status}):\n{result.message}."
            if extra_warning_msg is not None:
                message += "\n" + extra_warning_msg
            warnings.warn(message, ConvergenceWarning, stacklevel=2)
        n_iter = int(result.nit)
        return min(n_iter, max_iter) if max_iter is not None else n_iter


def lbfgs_print_options(iprint):
    """L-BFGS-B's ``iprint`` option where SciPy still takes it (before 1.15).

    SciPy 1.15 deprecated it (a warning on every call, and it prints
    nothing); scikit-learn 1.7 and later leave it out there, and so does
    fastnn on every release.
    """
    return {} if parse_version(scipy.__version__) >= (1, 15, 0) else {"iprint": iprint}


def split_sample_weight(args):
    """Arguments after ``X, y`` of a private method -> ``(sample_weight, rest)``.

    scikit-learn 1.7 and later pass ``sample_weight`` first; earlier
    releases do not pass it (``None`` here).
    """
    if SAMPLE_WEIGHT:
        return args[0], tuple(args[1:])
    return None, tuple(args)


def with_sample_weight(sample_weight, args):
    """``args`` for a private method of the installed scikit-learn: the
    inverse of :func:`split_sample_weight`."""
    if SAMPLE_WEIGHT:
        return (sample_weight, *args)
    if sample_weight is not None:  # pragma: no cover - fit() cannot pass one there
        raise TypeError(f"scikit-learn {sklearn.__version__} does not take sample_weight")
    return tuple(args)


def override(impl, name):
    """``impl(self, X, y, sample_weight, *rest)`` as the installed scikit-learn calls ``name``.

    On releases whose ``name`` takes no ``sample_weight``, the returned
    method takes scikit-learn's arguments and passes ``sample_weight=None``.
    Its signature is the installed base method's.
    """
    base = getattr(_Base, name)

    def method(self, X, y, *args):
        sample_weight, rest = split_sample_weight(args)
        return impl(self, X, y, sample_weight, *rest)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = impl.__doc__
    method.__signature__ = inspect.signature(base)
    return method


def update_no_improvement_count(estimator, early_stopping, X_val, y_val, sample_weight_val):
    """scikit-learn's ``_update_no_improvement_count`` with the installed layout."""
    if SAMPLE_WEIGHT:
        return estimator._update_no_improvement_count(
            early_stopping, X_val, y_val, sample_weight_val
        )
    return estimator._update_no_improvement_count(early_stopping, X_val, y_val)


# ----------------------------------------------------------- the register
def fingerprint_source(source):
    """A short hash of a function definition's code: docstring, comments,
    decorators and formatting left out (``ast.unparse`` of its definition)."""
    node = ast.parse(textwrap.dedent(source)).body[0]
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    node.decorator_list = []
    return hashlib.sha256(ast.unparse(node).encode()).hexdigest()[:12]


def fingerprint(func):
    """:func:`fingerprint_source` of a function's source."""
    return fingerprint_source(inspect.getsource(func))


def _base_functions_fingerprint():
    """One fingerprint over the losses, activations and derivatives of
    ``sklearn.neural_network._base`` (the math fastnn's kernels repeat)."""
    parts = []
    for table in ("LOSS_FUNCTIONS", "ACTIVATIONS", "DERIVATIVES"):
        for key, func in sorted(getattr(_sk_base, table).items()):
            parts.append(f"{table}.{key}={fingerprint(func)}")
    return hashlib.sha256(";".join(parts).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Private:
    """One private name of scikit-learn that fastnn uses.

    name: the dotted path from ``sklearn``; kind: ``override``,
    ``reimplemented``, ``call``, ``attribute`` or ``format``; use: what
    fastnn does with it; layouts: the accepted parameter names (each tuple
    one layout, with the releases that have it); reviewed: fingerprint ->
    releases whose code was reviewed (override, reimplemented); text: the
    format string (format); since/until: the releases where fastnn needs it
    (``until`` exclusive); of: for attributes, the object that holds it
    (see ``tests/test_sklearn_compat.py``).
    """

    name: str
    kind: str
    use: str
    layouts: dict = field(default_factory=dict)
    reviewed: dict = field(default_factory=dict)
    text: str = ""
    since: tuple = (0, 0, 0)
    until: tuple = (99, 0, 0)
    of: str = ""

    @property
    def needed(self):
        """Whether the installed scikit-learn is a release where fastnn uses this name."""
        return self.since <= VERSION < self.until


_MLP = "neural_network._multilayer_perceptron."
_OPT = "neural_network._stochastic_optimizers."
_SW17 = "1.7.2-1.9.1"
_NOSW = "1.6.1"
_ALL = "1.6.1-1.9.1"
_STATE = "optimizer state handed to and from the kernels"

PRIVATE = (
    # --- methods fastnn replaces
    Private(
        _MLP + "BaseMultilayerPerceptron._fit_stochastic", "override",
        "the sgd/adam epochs, run in compiled calls",
        layouts={_WITH_SW + _STOCHASTIC_REST: _SW17, _NO_SW + _STOCHASTIC_REST: _NOSW},
        reviewed={"7e91d0f6744a": _SW17, "6a385ce717fe": _NOSW},
    ),
    Private(
        _MLP + "BaseMultilayerPerceptron._fit_lbfgs", "override",
        "SciPy's L-BFGS-B on the compiled loss and gradient",
        layouts={_WITH_SW + _LBFGS_REST: _SW17, _NO_SW + _LBFGS_REST: _NOSW},
        reviewed={"d1728b9f58a0": _SW17, "b574d288ddb4": _NOSW},
    ),
    Private(
        _MLP + "BaseMultilayerPerceptron._forward_pass_fast", "override",
        "prediction, a compiled forward pass",
        layouts={("self", "X", "check_input"): _ALL},
        reviewed={"39e2d9622ccc": _ALL},
    ),
    Private(
        _MLP + "MLPClassifier._predict", "override",
        "predicted labels: a plain binarizer's picked without inverse_transform's checks "
        "(fastnn._plain_input.predicted_labels), else inverse_transform",
        layouts={("self", "X", "check_input"): _ALL},
        reviewed={"f50886d04ad7": _ALL},
    ),
    # --- code whose rules and arithmetic the kernels repeat
    Private(
        _MLP + "BaseMultilayerPerceptron._backprop", "reimplemented",
        "the loss (with its L2 term) and gradients of a batch",
        reviewed={"1d8116aa3450": _SW17, "d95b5e8d524b": _NOSW},
    ),
    Private(
        _MLP + "BaseMultilayerPerceptron._compute_loss_grad", "reimplemented",
        "a layer's gradient (mean over the batch, or over its weights)",
        reviewed={"ecf22ba01b6f": _SW17, "564bf5a45c65": _NOSW},
    ),
    Private(
        _MLP + "BaseMultilayerPerceptron._update_no_improvement_count", "reimplemented",
        "the tol / n_iter_no_change rule, run inside the kernel between epochs; also "
        "wrapped (called, then the validation loss appended to validation_loss_curve_)",
        layouts={
            ("self", "early_stopping", "X", "y", "sample_weight"): _SW17,
            ("self", "early_stopping", "X_val", "y_val"): _NOSW,
        },
        reviewed={"798dd71073a1": _SW17, "adfb25298258": _NOSW},
    ),
    Private(
        "neural_network._base.LOSS_FUNCTIONS+ACTIVATIONS+DERIVATIVES", "reimplemented",
        "losses, activations and derivatives, computed by the kernels",
        reviewed={"45be2e2bf7a1": _SW17, "2070b1db3f5f": _NOSW},
    ),
    Private(
        _OPT + "SGDOptimizer._get_updates", "reimplemented", "the momentum/Nesterov step",
        reviewed={"13c8282ade32": _ALL},
    ),
    Private(
        _OPT + "SGDOptimizer.iteration_ends", "reimplemented",
        "the invscaling schedule, inside the kernel",
        layouts={("self", "time_step"): _ALL}, reviewed={"54d20fd96231": _ALL},
    ),
    Private(
        _OPT + "SGDOptimizer.trigger_stopping", "reimplemented",
        "the adaptive schedule's division of the learning rate, inside the kernel",
        layouts={("self", "msg", "verbose"): _ALL}, reviewed={"79a1e401ad88": _ALL},
    ),
    Private(
        _OPT + "AdamOptimizer._get_updates", "reimplemented", "Adam's step",
        reviewed={"593d8fb4dc20": _ALL},
    ),
    *(
        Private(
            "preprocessing._label." + name, "reimplemented",
            "the labels of a plain binarizer's scores (fastnn._plain_input.predicted_labels)",
            reviewed=reviewed,
        )
        for name, reviewed in (
            ("LabelBinarizer.inverse_transform",
             {"f4df6347c1f2": "1.6.1-1.7.2", "40ea27ecda67": "1.8.0", "e1377c6a0137": "1.9.0-1.9.1"}),
            ("_inverse_binarize_multiclass",
             {"0b3eb188ffba": "1.6.1-1.7.2", "595c07c501de": "1.8.0-1.9.1"}),
            ("_inverse_binarize_thresholding",
             {"825fecfb719a": "1.6.1-1.7.2", "992a3cb151ed": "1.8.0", "8106da1d2e0f": "1.9.0-1.9.1"}),
        )
    ),  # fmt: skip
    # --- functions and constructors fastnn calls
    Private(
        _MLP + "BaseMultilayerPerceptron._initialize", "call",
        "wrapped: called, then validation_loss_curve_ set beside validation_scores_",
        layouts={("self", "y", "layer_units", "dtype"): _ALL},
    ),
    *(
        Private(
            _MLP + cls + "._validate_input", "reimplemented",
            "wrapped: class_weight and callbacks checked; then, for a fitted estimator's plain "
            "arrays, what it would return (fastnn._plain_input), else called",
            layouts={("self", "X", "y", "incremental", "reset"): _ALL},
            reviewed={code: _ALL},
        )
        for cls, code in (("MLPClassifier", "264553e94c27"), ("MLPRegressor", "5fd94bcde85a"))
    ),
    Private(
        "neural_network._base.LOSS_FUNCTIONS", "call",
        "the validation loss (validation_loss_curve_), with sample_weight from 1.7",
    ),
    Private(
        "utils._param_validation.StrOptions", "call",
        "the parameter constraints of class_weight='balanced' and of the activation names",
        layouts={("options", "deprecated"): _ALL},
    ),
    Private(
        "utils.validation.validate_data", "call", "input validation in predict (public)",
        layouts={("_estimator", "X", "y", "reset", "validate_separately", "skip_check_array",
                  "check_params"): _ALL},
    ),  # fmt: skip
    Private(
        "utils.optimize._check_optimize_result", "call",
        "n_iter_ and the ConvergenceWarning of an L-BFGS-B result",
        layouts={("solver", "result", "max_iter", "extra_warning_msg"): _ALL},
    ),
    Private(
        _OPT + "SGDOptimizer.__init__", "call", "the sgd optimizer, positional arguments",
        layouts={("self", "params", "learning_rate_init", "lr_schedule", "momentum", "nesterov",
                  "power_t"): _ALL},
    ),  # fmt: skip
    Private(
        _OPT + "AdamOptimizer.__init__", "call", "the adam optimizer, positional arguments",
        layouts={("self", "params", "learning_rate_init", "beta_1", "beta_2", "epsilon"):
                 _ALL},
    ),  # fmt: skip
    # --- attributes of scikit-learn's objects that fastnn reads or writes
    *(
        Private(_OPT + "SGDOptimizer." + a, "attribute", _STATE, of="sgd_optimizer")
        for a in ("learning_rate", "learning_rate_init", "lr_schedule", "momentum", "nesterov",
                  "power_t", "velocities")
    ),  # fmt: skip
    *(
        Private(_OPT + "AdamOptimizer." + a, "attribute", _STATE, of="adam_optimizer")
        for a in ("learning_rate", "learning_rate_init", "beta_1", "beta_2", "epsilon", "ms",
                  "vs", "t")
    ),  # fmt: skip
    *(
        Private(_MLP + "BaseMultilayerPerceptron." + a, "attribute", use, of=of)
        for a, use, of in (
            ("_random_state", "weights, shuffles and early-stopping split", "sgd_fit"),
            ("_optimizer", "optimizer kept for partial_fit", "sgd_fit"),
            ("_no_improvement_count", "the tol rule's state", "sgd_fit"),
            ("_best_coefs", "early stopping's best weights", "early_stopping_fit"),
            ("_best_intercepts", "early stopping's best biases", "early_stopping_fit"),
            ("_coef_indptr", "written for scikit-learn's _unpack after L-BFGS-B", "lbfgs_fit"),
            ("_intercept_indptr", "written for scikit-learn's _unpack after L-BFGS-B",
             "lbfgs_fit"),
            ("_label_binarizer", "validation labels under early stopping", "classifier_fit"),
            ("_parameter_constraints", "extended with the activations fastnn adds", "sgd_fit"),
        )
    ),  # fmt: skip
    Private(
        "base.BaseEstimator._validate_params", "call",
        "extended: per-layer activations checked before any work",
        layouts={("self",): _ALL},
    ),
    # --- messages printed or raised as scikit-learn does
    *(
        Private(_MLP + "BaseMultilayerPerceptron." + where, "format", use, text=text)
        for where, text, use in (
            ("_fit_stochastic", "Iteration %d, loss = %.8f", "verbose line per epoch"),
            ("_fit_stochastic", "Validation score did not improve more than ",
             "verbose stopping message"),
            ("_fit_stochastic", "tol=%f for %d consecutive epochs.", "verbose stopping message"),
            ("_fit_stochastic", "Training loss did not improve more than tol=%f",
             "verbose stopping message"),
            ("_fit_stochastic", "Stochastic Optimizer: Maximum iterations (%d) ",
             "ConvergenceWarning"),
            ("_fit_stochastic", "Got `batch_size` less than 1 or larger than ", "batch warning"),
            ("_fit_stochastic", "partial_fit does not support early_stopping=True", "error"),
            ("_fit_stochastic", "Training interrupted by user.", "warning"),
            ("_fit", "Solver produced non-finite parameter weights.", "error"),
        )
    ),  # fmt: skip
    Private(
        _MLP + "BaseMultilayerPerceptron._fit_stochastic", "format", "error under early_stopping",
        text="The validation set is too small. Increase 'validation_fraction' ",
        since=(1, 7, 0),
    ),
    Private(
        _MLP + "BaseMultilayerPerceptron._update_no_improvement_count", "format",
        "verbose line per epoch under early_stopping", text="Validation score: %f",
    ),
)


def resolve(name):
    """The object at ``sklearn.<name>``; AttributeError/ImportError when it is gone."""
    import importlib

    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module("sklearn." + ".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(f"no module of sklearn.{name}")


def current_fingerprint(entry):
    """The fingerprint of the installed code of a reviewed entry."""
    if entry.name.startswith("neural_network._base."):
        return _base_functions_fingerprint()
    return fingerprint(resolve(entry.name))


def problem(entry, instance=None):
    """Why ``entry`` does not hold with the installed scikit-learn, or None.

    ``instance``: for ``attribute`` entries, the object that should hold it
    (left unchecked when None).
    """
    where = f"scikit-learn {sklearn.__version__}"
    if not entry.needed:
        return None
    label = f"sklearn.{entry.name}"
    if entry.kind == "attribute":
        if instance is None:
            return None
        attr = entry.name.rsplit(".", 1)[1]
        if not hasattr(instance, attr):
            return f"{where}: {label} ({entry.use}) is gone: fastnn.sklearn needs it"
        return None
    try:
        obj = resolve(entry.name) if "+" not in entry.name else None
    except (ImportError, AttributeError) as exc:
        return f"{where}: {label} ({entry.use}) is gone ({exc}): fastnn.sklearn needs it"
    if entry.kind == "format":
        source = inspect.getsource(obj)
        if entry.text not in source:
            return (
                f"{where}: the message {entry.text!r} is no longer in {label}; "
                f"fastnn prints or raises it as scikit-learn did ({entry.use})"
            )
        return None
    if entry.layouts:
        params = _parameters(obj)
        if params not in entry.layouts:
            known = "; ".join(f"({', '.join(p)}) in {v}" for p, v in entry.layouts.items())
            return (
                f"{where}: {label} takes ({', '.join(params)}), not a layout fastnn knows "
                f"({known}): adapt fastnn/_sklearn_compat.py"
            )
    if entry.kind in ("override", "reimplemented"):
        now = current_fingerprint(entry)
        if now not in entry.reviewed:
            known = ", ".join(f"{f} ({v})" for f, v in entry.reviewed.items()) or "none"
            return (
                f"{where}: the code of {label} changed (fingerprint {now}; reviewed: {known}). "
                f"fastnn {'replaces' if entry.kind == 'override' else 'repeats'} it ({entry.use}): "
                f"compare the new code with the reviewed release's, port the change to fastnn, "
                f"then add the fingerprint to fastnn/_sklearn_compat.py"
            )
    return None


def problems():
    """Every entry of :data:`PRIVATE` that does not hold (messages; attributes unchecked)."""
    return [msg for msg in (problem(e) for e in PRIVATE) if msg is not None]
