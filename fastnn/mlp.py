"""`MLP`: the general multilayer perceptron, a thin facade over the training driver.

`MLP` checks its arguments and data (``fastnn._validation``: a clear
``ValueError`` or ``TypeError`` naming the argument, and the model left as
it was), turns them into the three bundles the kernels take (`Model`,
`Optimizer`, `Batches`, from ``fastnn._runtime``) and hands them to
``fastnn._driver.Driver``, which picks the kernel and the threads and runs
whole chunks of epochs in one compiled call each. The scikit-learn
estimators (``fastnn.sklearn``) go through the same driver.

Why it is built this way: on small layers Python's dispatch costs more than
the arithmetic, so nothing runs per step in Python; the facade only acts
between chunks (the callback, the history, the divergence contract: replay
to the last good epoch and raise `DivergenceError`). Activations, losses
and optimizers reach the kernels as the integer codes of
``fastnn._kernels.codes``, looked up by name: the facade maps names to
codes; the training math is all in the kernels.
"""

from __future__ import annotations

import numpy as np

from fastnn import _validation as v
from fastnn.activation import Activation
from fastnn._driver import Driver, no_order
from fastnn._runtime import Batches, Model, Optimizer, predict_layout
from fastnn._kernels import codes

# hidden activations (fastnn._kernels.activations: value and slope tables)
ACTIVATIONS = (
    "sigmoid", "logistic", "tanh", "relu", "identity", "leaky_relu", "elu", "softplus", "gelu", "silu",
)  # fmt: skip
OUTPUT_ACTIVATIONS = ("sigmoid", "logistic", "tanh", "relu", "identity", "softmax")
LOSSES = ("sse", "mse", "log_loss")
OPTIMIZERS = ("gd", "sgd", "momentum", "adam")

# rows x epochs of shuffled indices drawn per compiled call
_ORDER_BUDGET = 1 << 22


def _check_fit_arguments(n, epochs, learning_rate, batch_size, shuffle, optimizer, callback, rest):
    """`MLP.fit`'s arguments checked, in the order they are listed: ``(epochs, batch's rows,
    hyper-parameter array)``; ``n`` rows of data; ``rest`` the optimizer's other
    hyper-parameters, `_hyper_parameters`' after the learning rate."""
    epochs = v.check_int(epochs, "epochs", minimum=0)
    learning_rate = v.check_float(learning_rate, "learning_rate", minimum=0.0)
    batch = n if batch_size is None else min(v.check_int(batch_size, "batch_size", minimum=1), n)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
    v.check_choice(optimizer, "optimizer", OPTIMIZERS)
    hyper = _hyper_parameters(learning_rate, *rest)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {callback!r}")
    return epochs, batch, hyper


def _hyper_parameters(learning_rate, momentum, nesterov, beta_1, beta_2, epsilon, alpha):
    """The training kernels' ``hyper`` array, from checked optimizer arguments."""
    momentum = v.check_float(momentum, "momentum", minimum=0.0, exclusive=False, maximum=1.0, max_exclusive=True)
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"nesterov must be True or False, got {nesterov!r}")
    beta_1 = v.check_float(beta_1, "beta_1", minimum=0.0, exclusive=False, maximum=1.0, max_exclusive=True)
    beta_2 = v.check_float(beta_2, "beta_2", minimum=0.0, exclusive=False, maximum=1.0, max_exclusive=True)
    epsilon = v.check_float(epsilon, "epsilon", minimum=0.0)
    alpha = v.check_float(alpha, "alpha", minimum=0.0, exclusive=False)
    from fastnn._kernels.train import hyper_array

    return hyper_array(learning_rate, momentum, nesterov, beta_1, beta_2, epsilon, alpha)


def _hidden_activations(activation, n_hidden, choices=ACTIVATIONS):
    """The hidden layers' activations (names among ``choices`` or ``Activation``
    objects) from ``activation``: one for all, or one per hidden layer."""
    if isinstance(activation, (str, Activation)):
        return [_check_activation(activation, "activation", choices)] * n_hidden
    if not isinstance(activation, (list, tuple)):
        raise TypeError(f"activation must be a name, an Activation or a list of them, got {activation!r}")
    if len(activation) != n_hidden:
        raise ValueError(
            f"activation has {len(activation)} entries for {n_hidden} hidden layers; "
            "give one per hidden layer, or one for all"
        )
    return [_check_activation(entry, f"activation[{i}]", choices) for i, entry in enumerate(activation)]


def _check_activation(entry, name, choices):
    """A hidden activation: a name among ``choices``, or a ``fastnn.Activation``."""
    return entry if isinstance(entry, Activation) else v.check_choice(entry, name, choices)


def activation_code(entry):
    """The kernels' code of a hidden activation (a name or an ``Activation``)."""
    return codes.CUSTOM if isinstance(entry, Activation) else codes.ACTIVATION_CODES[entry]


def activation_addresses(hidden, dtype):
    """Per hidden layer, the ``(FN, DFN)`` addresses of an ``Activation`` in ``dtype``, or None."""
    return [entry.addresses(dtype) if isinstance(entry, Activation) else None for entry in hidden]


def _dropout_rates(dropout, n_hidden):
    """``(dropout as stored, one rate per hidden layer)`` from a rate or one per hidden layer."""

    def rate(value, name):
        return v.check_float(value, name, minimum=0.0, exclusive=False, maximum=1.0, max_exclusive=True)

    if isinstance(dropout, (list, tuple)):
        if len(dropout) != n_hidden:
            raise ValueError(
                f"dropout has {len(dropout)} entries for {n_hidden} hidden layers; "
                "give one rate per hidden layer, or one rate for all"
            )
        rates = [rate(value, f"dropout[{i}]") for i, value in enumerate(dropout)]
        return rates, rates
    single = rate(dropout, "dropout")
    return single, [single] * n_hidden


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or gradient.

    The model keeps parameters that gave finite losses (see ``MLP.fit``);
    ``epoch`` is the (0-based, counted over the failing call) epoch that failed.
    """

    def __init__(self, message, epoch):
        super().__init__(message)
        self.epoch = epoch


class MLP:
    """A fully connected feed-forward network trained by compiled kernels.

    Parameters
    ----------
    layer_sizes : sequence of int
        ``[n_features, hidden_1, ..., n_outputs]``; at least two entries.
    activation : str, Activation or sequence of them
        Activation of the hidden layers: one of ``"sigmoid"`` (alias
        ``"logistic"``), ``"tanh"``, ``"relu"``, ``"identity"``,
        ``"leaky_relu"`` (slope 0.01 below 0), ``"elu"`` (alpha 1),
        ``"softplus"``, ``"gelu"`` (exact, with erf) and ``"silu"``; a
        :class:`fastnn.Activation` (compiled functions of your own); or a
        list with one of these per hidden layer.
    output_activation : {"sigmoid", "logistic", "tanh", "relu", "identity", "softmax"}
        Activation of the output layer.
    loss : {"sse", "mse", "log_loss"}
        ``"sse"`` is ``sum((y - out)**2)``, ``"mse"`` its mean over all
        elements, ``"log_loss"`` the mean over samples of the cross-entropy
        (needs a sigmoid or softmax output).
    bias : bool
        Whether the layers have biases.
    dtype : {"float64", "float32"}
        Precision of parameters and computation, kept end to end.
    random_state : None, int or numpy.random.Generator
        Seeds the initial weights, the shuffles and the dropout masks of :meth:`fit`.
    dropout : float or sequence of float, default 0
        Inverted dropout of the hidden layers during :meth:`fit` (not in
        :meth:`predict` or :meth:`loss_and_gradients`): each unit is zeroed
        with this probability and the others are scaled by ``1 / (1 - rate)``;
        a rate in [0, 1), or a list with one per hidden layer. The masks
        come from a seed drawn from the model's random state once per
        :meth:`fit` call and from each unit's epoch, row and column, so a
        seeded fit is bit-identical run to run and for any number of threads.
        Rates are used rounded to a multiple of ``2**-32``.

    Attributes
    ----------
    weights : list of ndarray
        ``(fan_in, fan_out)`` arrays, views into one flat parameter buffer:
        writing into them in place changes the model.
    biases : list of ndarray or None
        ``(fan_out,)`` views into the same buffer; ``None`` without bias.
    history_ : ndarray
        Loss of every epoch trained so far (all :meth:`fit` calls).

    Notes
    -----
    Weights are initialised like scikit-learn's MLP: uniform in
    ``[-b, b]`` with ``b = sqrt(f / (fan_in + fan_out))``, ``f = 2`` for a
    sigmoid hidden activation and 6 otherwise; biases from the same range.
    With one activation per hidden layer, each layer's weights take the
    factor of the activation they feed (the output layer: the last hidden
    layer's).

    Examples
    --------
    >>> import numpy as np
    >>> from fastnn import MLP
    >>> X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], float)
    >>> y = np.array([[0], [1], [1], [0]], float)
    >>> net = MLP([3, 8, 1], random_state=0)
    >>> history = net.fit(X, y, epochs=2000, learning_rate=0.5)
    >>> bool(history[-1] < history[0])
    True
    """

    def __init__(
        self,
        layer_sizes,
        activation="sigmoid",
        output_activation="sigmoid",
        loss="sse",
        bias=True,
        dtype="float64",
        random_state=None,
        dropout=0.0,
    ):
        sizes = v.check_layer_sizes(layer_sizes)
        hidden = _hidden_activations(activation, len(sizes) - 2)
        stored_dropout, rates = _dropout_rates(dropout, len(sizes) - 2)
        v.check_choice(output_activation, "output_activation", OUTPUT_ACTIVATIONS)
        v.check_choice(loss, "loss", LOSSES)
        if loss == "log_loss" and output_activation not in ("sigmoid", "logistic", "softmax"):
            raise ValueError(
                "loss='log_loss' needs output_activation 'sigmoid', 'logistic' or 'softmax', "
                f"got {output_activation!r}"
            )
        if output_activation == "softmax" and loss != "log_loss":
            raise ValueError("output_activation='softmax' is only supported with loss='log_loss'")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        self.layer_sizes = sizes
        self.activation = activation if isinstance(activation, (str, Activation)) else list(hidden)
        self._hidden = hidden
        self.dropout = stored_dropout
        self._rates = rates
        self.output_activation = output_activation
        self.loss = loss
        self.bias = bool(bias)
        self.dtype = v.check_dtype(dtype)
        self.random_state = random_state
        self._rng = v.check_random_state(random_state)
        self._build()
        self._init_parameters()

    # ------------------------------------------------------------------ setup
    def _build(self):
        from fastnn._kernels import layout as kl

        layer_codes = [activation_code(entry) for entry in self._hidden]
        layer_codes.append(codes.ACTIVATION_CODES[self.output_activation])
        self._layout, off = kl.build(
            self.layer_sizes, layer_codes, bias=self.bias, dropout=self._rates,
            functions=activation_addresses(self._hidden, self.dtype),
        )  # fmt: skip
        self._params = np.zeros(off, dtype=self.dtype)
        self._make_views()
        self._opt_name = None
        self._state1 = None
        self._state2 = None
        self._step_count = np.zeros(1, dtype=np.int64)
        self._workspace = {}
        self.history_ = np.empty(0, dtype=np.float64)

    def _make_views(self):
        self.weights = []
        self.biases = [] if self.bias else None
        for fan_in, fan_out, w_off, b_off in self._layout[:, :4]:
            self.weights.append(self._params[w_off : w_off + fan_in * fan_out].reshape(fan_in, fan_out))
            if self.bias:
                self.biases.append(self._params[b_off : b_off + fan_out])

    def _init_parameters(self):
        for i, W in enumerate(self.weights):
            feeds = self._hidden[min(i, len(self._hidden) - 1)] if self._hidden else None
            factor = 2.0 if feeds in ("sigmoid", "logistic") else 6.0
            fan_in, fan_out = W.shape
            bound = np.sqrt(factor / (fan_in + fan_out))
            W[...] = self._rng.uniform(-bound, bound, size=W.shape)
            if self.bias:
                self.biases[i][...] = self._rng.uniform(-bound, bound, size=fan_out)

    @property
    def n_features(self):
        """Number of input features."""
        return self.layer_sizes[0]

    @property
    def n_outputs(self):
        """Number of outputs."""
        return self.layer_sizes[-1]

    @property
    def n_parameters(self):
        """Number of trainable parameters (weights and biases)."""
        return int(self._params.size)

    def _codes(self):
        # (output activation, loss); the hidden layers' codes are in the layout
        return codes.ACTIVATION_CODES[self.output_activation], codes.LOSS_CODES[self.loss]

    def _buffers(self, rows):
        """Activation and delta workspaces for batches of up to ``rows`` rows."""
        from fastnn._kernels.dense import deltas_units

        ws = self._workspace.get("acts")
        if ws is None or ws[0] < rows:
            size = rows * sum(self.layer_sizes[1:])
            work = rows * deltas_units(self.layer_sizes)
            ws = (rows, np.empty(size, dtype=self.dtype), np.empty(work, dtype=self.dtype))
            self._workspace["acts"] = ws
        return ws[1], ws[2]

    # ------------------------------------------------------------ validation
    def _check_X(self, X, name="X"):
        return v.check_array(X, name, self.dtype, n_columns=self.n_features, column_name="features")

    def _check_y(self, y, name="y"):
        return v.check_array(
            y, name, self.dtype, n_columns=self.n_outputs, column_name="outputs",
            allow_1d=self.n_outputs == 1,
        )

    def _check_Xy(self, X, y):
        X = self._check_X(X)
        y = self._check_y(y)
        v.check_same_rows(X, y)
        return X, y

    # ------------------------------------------------------------ public API
    def predict(self, X):
        """Network output for ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_outputs), in the model's dtype.
        """
        from fastnn._kernels.dense import extras_of, forward
        from fastnn._kernels.few_rows import MOST_ROWS

        X = self._check_X(X)
        out_act, _ = self._codes()
        acts = np.empty(X.shape[0] * sum(self.layer_sizes[1:]), dtype=self.dtype)
        # a few rows take the few-rows loops where they pay (fastnn._kernels.few_rows),
        # and any number of rows the blocked products (fastnn._kernels.blocked); such a
        # layout is kept: looking it up again took 3 us of a 27 us prediction. Every
        # count past MOST_ROWS gets the same layout, so they share one entry.
        key = ("predict", min(X.shape[0], MOST_ROWS + 1))
        layout = self._workspace.get(key)
        if layout is None:
            layout = predict_layout(self._layout, self.dtype, X.shape[0])
            if layout is not self._layout:
                self._workspace[key] = layout
        out = forward(X, self._params, layout, out_act, acts, acts[:0], extras_of(self._layout))
        return out.copy()

    def loss_and_gradients(self, X, y, alpha=0.0):
        """Loss of the model on ``(X, y)`` and its gradients.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples, n_outputs)
        alpha : float, default 0
            L2 penalty ``0.5 * alpha * sum(W**2) / n_samples`` added to the loss.

        Returns
        -------
        loss : float
        weight_grads : list of ndarray, shaped like :attr:`weights`
        bias_grads : list of ndarray, or None without bias
        """
        from fastnn._kernels.dense import extras_of, loss_and_gradients

        X, y = self._check_Xy(X, y)
        alpha = v.check_float(alpha, "alpha", minimum=0.0, exclusive=False)
        out_act, loss = self._codes()
        acts, deltas = self._buffers(X.shape[0])
        grads = np.empty_like(self._params)
        value = loss_and_gradients(
            X, y, self._params, self._layout, out_act, loss, alpha, acts, deltas, grads,
            extras_of(self._layout),
        )
        wg, bg = [], ([] if self.bias else None)
        for fan_in, fan_out, w_off, b_off in self._layout[:, :4]:
            wg.append(grads[w_off : w_off + fan_in * fan_out].reshape(fan_in, fan_out))
            if self.bias:
                bg.append(grads[b_off : b_off + fan_out])
        return float(value), wg, bg

    def fit(
        self,
        X,
        y,
        epochs=1,
        learning_rate=0.1,
        batch_size=None,
        shuffle=True,
        optimizer="gd",
        momentum=0.9,
        nesterov=False,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        alpha=0.0,
        callback=None,
    ):
        """Train the network; the whole loop runs in compiled code.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples, n_outputs)
        epochs : int
            Passes over the data.
        learning_rate : float > 0
        batch_size : int or None
            Rows per step; ``None`` means the full batch (gradient descent).
        shuffle : bool
            Visit the rows in a fresh random order each epoch (drawn from the
            model's ``random_state``). Ignored for full batches, whose
            gradient does not depend on the order.
        optimizer : {"gd", "sgd", "momentum", "adam"}
            ``"gd"`` and ``"sgd"`` are the plain step ``W -= lr * dW``;
            ``"momentum"`` keeps a velocity (``nesterov`` for Nesterov's
            variant); ``"adam"`` is Kingma & Ba's. Optimizer state carries
            over between calls with the same optimizer.
        momentum, nesterov, beta_1, beta_2, epsilon
            Optimizer hyper-parameters.
        alpha : float >= 0
            L2 penalty on the weights (scikit-learn's ``alpha``).
        callback : callable or None
            Called as ``callback(epochs_done, loss)`` after each compiled
            chunk of epochs (for progress reporting).

        Returns
        -------
        ndarray of shape (epochs,)
            Loss of each epoch, measured during the epoch (before each
            step's update), float64.

        Raises
        ------
        DivergenceError
            If the loss or a gradient becomes NaN or infinite. The model is
            then left as it was after the epoch before the last complete one
            (every batch loss of the epoch that followed it was finite), with
            the matching optimizer state and ``history_``.
        """
        X, y = self._check_Xy(X, y)
        n = X.shape[0]
        epochs, batch, hyper = _check_fit_arguments(
            n, epochs, learning_rate, batch_size, shuffle, optimizer, callback,
            (momentum, nesterov, beta_1, beta_2, epsilon, alpha),
        )  # fmt: skip

        self._use_optimizer(optimizer)
        use_order = bool(shuffle) and batch < n
        if use_order:
            chunk = max(1, min(epochs, _ORDER_BUDGET // n))
        else:
            chunk = epochs if callback is None else max(1, min(epochs, 1000))
        from fastnn._kernels import layout as kl
        from fastnn._kernels.train import H_SEED

        if kl.has_dropout(self._layout):
            hyper[H_SEED] = float(self._rng.integers(1 << 53))  # this call's masks
        # everything a replay needs to retrace this call's steps exactly
        start_state = (
            self._params.copy(), self._state1.copy(), self._state2.copy(),
            self._step_count.copy(), self._rng.bit_generator.state,
        )  # fmt: skip
        driver = Driver(*self._bundles(X, y, batch, use_order, codes.OPTIMIZER_CODES[optimizer], hyper),
                        self._workspace)  # fmt: skip
        return self._train_and_record(driver, epochs, chunk, callback, start_state)

    def _train_and_record(self, driver, epochs, chunk, callback, start_state):
        # fit's epochs on `driver`, in chunks of `chunk`; returns their losses and
        # adds them to history_, also when interrupted (the epochs that ran); a
        # divergence returns to the last good epoch and raises
        history = np.empty(epochs, dtype=np.float64)
        progress = [0]
        recorded = False
        try:
            with driver:
                done, diverged = self._train_chunks(driver, epochs, chunk, history, callback, progress)
                if diverged:
                    error = self._return_to_last_good_epoch(driver, start_state, chunk, history, done)
                    recorded = True
                    raise error
            self.history_ = np.concatenate([self.history_, history])
            recorded = True
        finally:
            if not recorded:
                # interrupted (KeyboardInterrupt, or the callback raised): the
                # epochs that ran are kept, and so is their history
                self.history_ = np.concatenate([self.history_, history[: progress[0]]])
        return history

    def _use_optimizer(self, optimizer):
        # fresh optimizer state, unless the last fit used the same optimizer
        opt_code = codes.OPTIMIZER_CODES[optimizer]
        if self._opt_name is None or codes.OPTIMIZER_CODES[self._opt_name] != opt_code:
            self._state1 = np.zeros_like(self._params)
            self._state2 = np.zeros_like(self._params) if opt_code == codes.OPT_ADAM else self._state1[:0]
            self._step_count[0] = 0
        self._opt_name = optimizer

    def _bundles(self, X, Y, batch, use_order, opt_code, hyper):
        """The training driver's ``(Model, Optimizer, Batches)`` for a fit (``fastnn._runtime``)."""
        out, loss = self._codes()
        model = Model(self._params, self._layout, tuple(self.layer_sizes), out, loss)
        optimizer = Optimizer(opt_code, hyper, self._state1, self._state2, self._step_count)
        return model, optimizer, Batches(X, Y, np.empty(0, dtype=self.dtype), batch, use_order)

    def _train_chunks(self, driver, total, chunk, history, report, progress):
        """Train ``total`` epochs in compiled chunks, shuffles drawn per chunk;
        returns (epochs completed, whether the last chunk diverged)."""
        n = driver.batches.X.shape[0]
        done = 0
        while done < total:
            count = driver.next_chunk(min(chunk, total - done))
            if driver.batches.use_order:
                order = np.empty((count, n), dtype=np.int64)
                for e in range(count):
                    order[e] = self._rng.permutation(n)
            else:
                order = no_order()
            result = driver.run(count, order, history[done : done + count], first_epoch=done)
            done += result.done
            progress[0] = done
            if result.diverged:
                return done, True
            if report is not None:
                report(done, float(history[done - 1]))
        return done, False

    def _return_to_last_good_epoch(self, driver, start_state, chunk, history, epoch):
        """After a divergence in ``epoch``: back to the parameters of the epoch
        before the last complete one; returns the `DivergenceError` to raise.

        The kernel stopped before the failing update, but the parameters it
        reached may already give NaN elsewhere: go back to the start of this
        call and replay (deterministically, the shuffles included) to the end
        of the epoch before the last complete one, whose parameters all gave
        finite batch losses.
        """
        bad = history[epoch]
        params, state1, state2, steps, rng_state = start_state
        self._params[...] = params
        self._state1[...] = state1
        self._state2[...] = state2
        self._step_count[...] = steps
        self._rng.bit_generator.state = rng_state
        keep = max(epoch - 1, 0)
        self._train_chunks(driver, keep, chunk, history, None, [0])
        self.history_ = np.concatenate([self.history_, history[:keep]])
        what = f"the loss became {bad}" if not np.isfinite(bad) else "a gradient became non-finite"
        return DivergenceError(
            f"training diverged at epoch {epoch}: {what}; the model keeps the parameters "
            f"it had after epoch {keep} of this call (try a smaller learning_rate)",
            epoch,
        )

    # -------------------------------------------------------------- pickling
    def __getstate__(self):
        state = self.__dict__.copy()
        for key in ("weights", "biases", "_workspace"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        from fastnn._kernels import layout as kl

        self.__dict__.update(state)
        self._workspace = {}
        self._make_views()
        # a model pickled before the layout's few-rows columns: they are 0 in a
        # model's own layout (the kernels would read past a narrower one)
        narrow = self._layout.shape[1]
        if narrow < kl.COLUMNS:
            self._layout = np.hstack([self._layout, np.zeros((self._layout.shape[0], kl.COLUMNS - narrow), np.int64)])
        # the compiled functions of Activation objects live at other addresses in this process
        for i, pair in enumerate(activation_addresses(self._hidden, self.dtype)):
            if pair is not None:
                self._layout[i, kl.FN], self._layout[i, kl.DFN] = pair

    def __repr__(self):
        return (
            f"MLP(layer_sizes={list(self.layer_sizes)}, activation={self.activation!r}, "
            f"output_activation={self.output_activation!r}, loss={self.loss!r}, "
            f"bias={self.bias}, dtype={self.dtype.name!r}"
            + (f", dropout={self.dropout!r}" if any(self._rates) else "")
            + ")"
        )
