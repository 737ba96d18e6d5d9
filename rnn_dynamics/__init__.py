"""rnn_dynamics: why gradients explode and vanish in recurrent networks, in JAX.

Index convention (the only one, for the whole library):

* The state you pass is **h_1**. The inputs ``xs`` are **x_2, …, x_T**, shape
  ``(T-1, input_size)``.
* Step t (t = 2..T) computes h_t = step(params, h_{t-1}, x_t): state before input, as in
  ``jax.lax.scan``.
* ∂h_T/∂h_1 is the product of the **T-1** step Jacobians ∂h_t/∂h_{t-1}, later factors on the
  left: ∂h_T/∂h_1 = J_T J_{T-1} ⋯ J_2. Per-step outputs have a leading axis of length T-1
  whose entry k belongs to t = k + 2 (entry -1 is t = T).

So 50 inputs give T = 51 and 50 factors: the linear univariate cell with w = 1.1 gives
1.1**50 = 117.39 (the lecture's figure), and a linear matrix cell gives W^(T-1).

``rnn_dynamics.plot``, ``rnn_dynamics.store`` and ``rnn_dynamics.cli`` are loaded on first
use, so ``import rnn_dynamics`` does not import matplotlib.
"""
import importlib as _importlib

from . import cells, init, theory
from . import maps, tasks, esn, bptt, remedies, study
from ._cell import Cell
from ._checks import NumericalWarning
from ._compile import fast_cpu_options
from ._jacobian import METHODS, jacobian, jacobian_norms, step_jacobians
from ._rollout import final_state, rollout
from .spectral import singular_values, spectral_norm
from ._spectra import Spectra, default_batch_size, draw_seed, spectra
from ._sweep import sweep
from .theory import jacobian_bound
from .lyapunov import *  # noqa: F401,F403
from ._fixed_points import *  # noqa: F401,F403
from ._basins import *  # noqa: F401,F403
from ._landscape import *  # noqa: F401,F403
from ._train import *  # noqa: F401,F403
from . import lyapunov as _ly, _fixed_points as _fp, _basins as _ba, _landscape as _la, _train as _tr

__version__ = "0.2.0"

_LAZY = ("plot", "store", "cli")


def __getattr__(name):
    if name in _LAZY:
        return _importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'rnn_dynamics' has no attribute {name!r}")


__all__ = sorted(
    [
        "Cell", "METHODS", "NumericalWarning", "Spectra", "bptt", "cells", "default_batch_size",
        "draw_seed", "esn", "fast_cpu_options", "final_state", "init", "jacobian",
        "jacobian_bound", "jacobian_norms", "maps", "remedies", "rollout", "singular_values", "spectra",
        "spectral_norm", "step_jacobians", "study", "sweep", "tasks", "theory",
    ]
    + list(_ly.__all__) + list(_fp.__all__) + list(_ba.__all__) + list(_la.__all__)
    + list(_tr.__all__)
)
