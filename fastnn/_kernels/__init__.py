"""Private compiled kernels of fastnn.

Every kernel here is compiled by ``fastnn._kernels._jit.kernel`` (Numba's
``njit`` with ``cache=True``), takes only NumPy arrays and
numbers, validates nothing and allocates nothing in its steady state. The
facades (:mod:`fastnn.network`, :mod:`fastnn.mlp`) validate input and own the
buffers. Activation, loss and optimizer are passed as small integer codes
(below), each layer's activation and dropout in the ``layout`` array
(:mod:`fastnn._kernels.layout`), so that one specialization per dtype serves
every configuration; models with kept slopes (table activations, dropout,
custom activations) compile a second one, whose extra paths the first
prunes (:func:`fastnn._kernels.dense.extras_of`).
"""

from fastnn._kernels.codes import (  # noqa: F401
    ACTIVATION_CODES,
    IDENTITY,
    LOG_LOSS,
    LOSS_CODES,
    MSE,
    OPT_ADAM,
    OPT_GD,
    OPT_MOMENTUM,
    OPTIMIZER_CODES,
    RELU,
    SIGMOID,
    SOFTMAX,
    SQUARED_ERROR,
    SSE,
    TANH,
)
