"""fastnn: multilayer perceptrons trained by compiled (Numba) kernels on the CPU.

Public names:

* :class:`NeuralNetwork` -- drop-in for the classic two-layer tutorial class;
* :class:`MLP` -- the general engine (any depth, activations, losses, optimizers);
* :class:`Activation` -- a hidden activation of your own, compiled into the kernels;
* :mod:`fastnn.reference` -- the pure-NumPy oracle of all the math;
* :class:`DivergenceError` -- raised when training produces NaN or infinity;
* :func:`profile` -- where a training step spends its time, per phase;
* :func:`save` / :func:`load` -- versioned ``.npz`` model files, written atomically.

Importing fastnn compiles nothing: kernels compile (or load from Numba's
on-disk cache) on first use.
"""

from fastnn import reference
from fastnn.activation import Activation
from fastnn.io import load, save
from fastnn.mlp import MLP, DivergenceError
from fastnn.network import NeuralNetwork
from fastnn.profiling import profile

__version__ = "0.1.0"

__all__ = [
    "NeuralNetwork", "MLP", "Activation", "DivergenceError", "profile", "save", "load", "reference", "__version__",
]  # fmt: skip
