"""The ``layout`` array: where each layer's parameters live, and what it computes.

Parameters live in one flat array; ``layout`` is an int64 array of shape
``(n_layers, COLUMNS)``, one row per dense layer:

* ``FAN_IN``, ``FAN_OUT``: the weight matrix is ``(fan_in, fan_out)``,
  applied as ``X @ W + b``;
* ``W_OFF``, ``B_OFF``: offsets of the weights (row-major) and of the bias
  in the flat array (``B_OFF = -1``: no bias);
* ``CODE``: the layer's activation (``fastnn._kernels.codes``); the output
  layer's entry is the output activation;
* ``KEEP``: 1 when the training kernels keep the layer's ``f'(z)`` from the
  forward pass: activations in ``codes.KEPT`` (some of whose derivatives
  the backward pass could not compute from the activated value), and layers
  with dropout, whose kept slope carries the mask;
* ``DROP``: the layer's dropout rate as a threshold on 32 random bits,
  ``round(rate * 2**32)`` (0: no dropout; see ``fastnn._kernels.dropout``);
* ``FN``, ``DFN``: for a ``fastnn.Activation`` (``CODE`` is ``codes.CUSTOM``),
  the addresses of its compiled function and derivative in the model's
  dtype (``fastnn._kernels.custom``); 0 otherwise. They are valid in this
  process only: models fill them again when unpickled.
* ``NN_ROWS``, ``NN_FN`` and ``TN_ROWS``, ``TN_FN``: the most rows of a
  block whose forward product (``A @ W``) and weight gradient (``A.T @ D``)
  through the layer take the few-rows loops or the register-blocked
  products (``fastnn._kernels.few_rows``, ``fastnn._kernels.blocked``), and
  the addresses of those loops; 0 (BLAS) in a model's own layout.
  A fit fills them in a copy of it (`few_rows.with_loops`), for its batches.

Putting the activation of each layer in the layout lets every kernel take
per-layer activations without one more argument. Built in Python by `build`,
the one place that knows the columns' order.
"""

import numpy as np

from fastnn._kernels.codes import KEPT

FAN_IN, FAN_OUT, W_OFF, B_OFF, CODE, KEEP, DROP, FN, DFN, NN_ROWS, NN_FN, TN_ROWS, TN_FN = range(13)
COLUMNS = 13
DROP_BITS = 32


def drop_threshold(rate):
    """The ``DROP`` entry of a dropout rate in [0, 1): ``round(rate * 2**32)``."""
    return int(round(float(rate) * (1 << DROP_BITS)))


def build(layer_sizes, layer_codes, bias=True, weights_first=False, dropout=None, functions=None):
    """``(layout, n_params)`` for dense layers ``layer_sizes`` with activations ``layer_codes``.

    ``layer_codes`` has one code per layer (the hidden layers', then the
    output's); ``dropout``, one rate per hidden layer (None: none);
    ``functions``, per hidden layer the ``(FN, DFN)`` addresses or None. Each
    layer's weights are followed by its bias, or, with ``weights_first``,
    all weights come first and then all biases (scikit-learn's packing order).
    """
    n_layers = len(layer_sizes) - 1
    if len(layer_codes) != n_layers:
        raise ValueError(f"{len(layer_codes)} activation codes for {n_layers} layers")
    layout = np.empty((n_layers, COLUMNS), dtype=np.int64)
    off = 0
    for i in range(n_layers):
        fan_in, fan_out = int(layer_sizes[i]), int(layer_sizes[i + 1])
        layout[i, FAN_IN], layout[i, FAN_OUT], layout[i, W_OFF] = fan_in, fan_out, off
        off += fan_in * fan_out
        if bias and not weights_first:
            layout[i, B_OFF] = off
            off += fan_out
        elif not bias:
            layout[i, B_OFF] = -1
        layout[i, CODE] = int(layer_codes[i])
        hidden = i < n_layers - 1
        layout[i, DROP] = drop_threshold(dropout[i]) if (hidden and dropout is not None) else 0
        layout[i, KEEP] = 1 if hidden and (int(layer_codes[i]) in KEPT or layout[i, DROP] > 0) else 0
        pair = functions[i] if (hidden and functions is not None) else None
        layout[i, FN], layout[i, DFN] = pair if pair is not None else (0, 0)
        layout[i, NN_ROWS : TN_FN + 1] = 0
    if bias and weights_first:
        for i in range(n_layers):
            layout[i, B_OFF] = off
            off += int(layer_sizes[i + 1])
    return layout, off


def has_dropout(layout):
    """Whether any layer of ``layout`` has dropout."""
    return bool(layout[:, DROP].any())


def keeps_slopes(layout):
    """Whether any layer of ``layout`` keeps its ``f'(z)`` (see ``KEEP``)."""
    return bool(layout[:, KEEP].any())
