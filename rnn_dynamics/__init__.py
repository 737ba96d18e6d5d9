"""rnn_dynamics: why gradients explode and vanish in recurrent networks, in JAX.

Index convention (once, for the whole library): the state you pass is h_1, the inputs are
x_2..x_T with shape (T-1, input_size), and ∂h_T/∂h_1 is the product of T-1 step Jacobians.
See :mod:`rnn_dynamics.rollout`.
"""
from . import cells, init
from ._checks import NumericalWarning
from .cells import Cell
from .jacobian import METHODS, jacobian, jacobian_norms, step_jacobians
from .rollout import final_state, rollout
from .spectral import singular_values, spectral_norm
from .study import Spectra, default_batch_size, draw_seed, spectra
from .theory import jacobian_bound

__version__ = "0.1.0"

__all__ = [
    "Cell",
    "METHODS",
    "NumericalWarning",
    "Spectra",
    "cells",
    "default_batch_size",
    "draw_seed",
    "final_state",
    "init",
    "jacobian",
    "jacobian_bound",
    "jacobian_norms",
    "rollout",
    "singular_values",
    "spectra",
    "spectral_norm",
    "step_jacobians",
]
