"""The named bundles that both training kernels take.

A compiled training call gets the model, the data, the optimizer and its
workspace as a few namedtuples rather than dozens of positional arrays: the
two kernels (the two-shard twins of ``fastnn._kernels.train`` and the tiled
kernel of ``fastnn._kernels.tiled``) read the same `Net`, `Data` and
`Optim`, and each has its own workspace bundle. Numba types a namedtuple by
its fields, so a bundle costs nothing at run time; the classes live at module
level so that the compiled code caches.
"""

from collections import namedtuple

# params: the flat parameters, laid out by `layout` (fastnn._kernels.layout);
# output, loss: the output activation's and the loss's codes (int64);
# extras: None for a model without kept slopes (no table activation,
# dropout or custom activation), whose kernels are then compiled without
# those paths (they prune them: see fastnn._kernels.dense.extras_of), else
# an int64.
Net = namedtuple("Net", "params layout output loss extras")

# X, Y: the training rows; W: their sample weights (empty: every row weighs
# 1); order: a row order per epoch, followed when use_order; batch_size (int64).
Data = namedtuple("Data", "X Y W order use_order batch_size")

# code: OPT_* (int64); hyper: train.hyper_array; state1, state2: the
# optimizer's state in the layout of the parameters; step_count: Adam's step
# counter (one int64); control: scikit-learn's stopping rule and
# learning-rate schedule (train.CONTROL_SIZE float64, train.C_*), run by the
# two-shard kernel only (zeros: no rule).
Optim = namedtuple("Optim", "code hyper state1 state2 step_count control")
