"""Closed-form bounds from the lecture notes."""
from __future__ import annotations

import jax.numpy as jnp

from ._cell import check_cell

__all__ = ["jacobian_bound"]


def jacobian_bound(cell, params, lag, *, log10: bool = False):
    """The bound ‖∂h_t/∂h_k‖₂ ≤ (α·β)^(t−k) (Pascanu et al. 2013; Boddeti's notes).

    α·β is ``cell.step_bound(params)``: ‖W‖₂·sup|φ′| for vanilla, linear and IRNN cells
    (sup|φ′| = 1 for tanh, ReLU and linear, 1/4 for the sigmoid), |w|·sup|φ′| for the
    univariate cell, and (1−a) + a‖W‖₂ for a leaky echo-state cell. Gated cells (LSTM, GRU)
    and stacks have no such bound and raise ``ValueError``.

    Args:
      cell, params: the cell and its params.
      lag: t − k, an int or an array of ints (any shape).
      log10: return lag·log10(αβ) instead (no overflow at long lags).

    Returns:
      An array of the shape of ``lag``.

    Example: ``rd.jacobian_bound(cell, p, jnp.arange(1, T))`` bounds ``rd.jacobian_norms(...)``.
    """
    check_cell(cell)
    if cell.step_bound is None:
        raise ValueError(
            f"cell: the (‖W‖₂·sup|φ′|)^(t−k) bound is defined for vanilla, linear, irnn, "
            f"univariate and esn cells; got a {cell.name!r} cell."
        )
    ab = cell.step_bound(params)
    lag = jnp.asarray(lag)
    if log10:
        return lag * jnp.log10(ab)
    return ab**lag
