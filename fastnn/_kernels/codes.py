"""Integer codes that select activations, losses and optimizers inside kernels."""

IDENTITY = 0
SIGMOID = 1
TANH = 2
RELU = 3
SOFTMAX = 4
EXP = 5  # output only: scikit-learn's MLPRegressor(loss="poisson")
LEAKY_RELU = 6  # z if z > 0 else 0.01 z
ELU = 7  # z if z > 0 else exp(z) - 1
SOFTPLUS = 8  # log(1 + exp(z))
GELU = 9  # z * Phi(z), Phi the standard normal CDF (erf form)
SILU = 10  # z * sigmoid(z)
CUSTOM = 11  # a fastnn.Activation: compiled functions at the layout's addresses

# the activations of activations.KEPT_FUNCTIONS, and custom ones: their
# layers keep f'(z) from the forward pass (fastnn._kernels.layout KEEP).
# gelu, silu and custom activations need z for it; for the others it keeps
# their loops out of the kernels of models that do not use them (see
# fastnn._kernels.dense.extras_of)
KEPT = (LEAKY_RELU, ELU, SOFTPLUS, GELU, SILU, CUSTOM)

ACTIVATION_CODES = {
    "identity": IDENTITY,
    "sigmoid": SIGMOID,
    "logistic": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "softmax": SOFTMAX,
    "leaky_relu": LEAKY_RELU,
    "elu": ELU,
    "softplus": SOFTPLUS,
    "gelu": GELU,
    "silu": SILU,
}

SSE = 0  # sum((y - out)**2)
MSE = 1  # mean((y - out)**2) over all elements
LOG_LOSS = 2  # mean over samples of the cross-entropy
SQUARED_ERROR = 3  # scikit-learn's mean((y - out)**2) / 2, gradient (out - y) / n
POISSON = 4  # scikit-learn's half Poisson deviance, with an EXP output: gradient (out - y) / n

LOSS_CODES = {"sse": SSE, "mse": MSE, "log_loss": LOG_LOSS, "squared_error": SQUARED_ERROR}

OPT_GD = 0  # W -= lr * dW
OPT_MOMENTUM = 1  # v = mu * v - lr * dW; W += v   (or Nesterov's look-ahead)
OPT_ADAM = 2  # Kingma & Ba, in scikit-learn's formulation

OPTIMIZER_CODES = {"gd": OPT_GD, "sgd": OPT_GD, "momentum": OPT_MOMENTUM, "adam": OPT_ADAM}
