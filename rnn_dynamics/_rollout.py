"""Rolling a cell forward with ``jax.lax.scan``.

Index convention (used by every function in this library, stated once here):

* The state you pass is **h_1**. The inputs ``xs`` are **x_2, …, x_T**, shape ``(T-1, input_size)``.
* Step t (t = 2..T) computes h_t = step(params, h_{t-1}, x_t).
* ∂h_T/∂h_1 is the product of the **T-1** step Jacobians ∂h_t/∂h_{t-1}, later factors on the
  left: ∂h_T/∂h_1 = J_T J_{T-1} ⋯ J_2. Per-step outputs have a leading axis of length T-1 whose
  entry k belongs to t = k + 2 (entry -1 is t = T).

So 50 inputs give T = 51 and 50 factors: the linear univariate cell with w = 1.1 gives
1.1**50 = 117.39 (the lecture's figure), and a linear matrix cell gives W^(T-1).
"""
from __future__ import annotations

from functools import partial

import jax

from ._cell import check_cell
from ._checks import as_inputs, as_state, check_positive_int

__all__ = ["rollout", "final_state"]


@partial(jax.jit, static_argnames=("cell", "unroll"))
def _rollout(cell, params, h1, xs, unroll=1):
    def body(h, x):
        h = cell.step(params, h, x)
        return h, h

    return jax.lax.scan(body, h1, xs, unroll=unroll)[1]


def _final(cell, params, h1, xs, unroll=1):
    return jax.lax.scan(lambda h, x: (cell.step(params, h, x), None), h1, xs, unroll=unroll)[0]


_final_jit = jax.jit(_final, static_argnames=("cell", "unroll"))


def rollout(cell, params, h1, xs, *, unroll: int = 1) -> jax.Array:
    """States h_2..h_T from h_1 and inputs x_2..x_T (see the module's index convention).

    Args:
      cell: an :class:`rnn_dynamics.cells.Cell`.
      params: the cell's params (``cell.init(key)``).
      h1: (state_size,) initial state h_1.
      xs: (T-1, input_size) inputs x_2..x_T.
      unroll: ``lax.scan`` unroll factor (a speed knob; the result is the same).

    Returns:
      (T-1, state_size): row k is h_{k+2}; the last row is h_T.

    Example::

        cell = rd.cells.vanilla(8, 64); p = cell.init(jax.random.key(0))
        hs = rd.rollout(cell, p, cell.initial_state(p), jnp.ones((99, 8)))   # (99, 64)
    """
    check_cell(cell)
    h1 = as_state(cell, h1)
    xs = as_inputs(cell, xs)
    return _rollout(cell, params, h1, xs, unroll=check_positive_int("unroll", unroll))


def final_state(cell, params, h1, xs, *, unroll: int = 1) -> jax.Array:
    """h_T only, shape (state_size,), without storing the trajectory.

    Arguments as :func:`rollout` (h1 (state_size,), xs (T-1, input_size) = x_2..x_T).
    Example: ``rd.final_state(cell, p, h1, xs)`` equals ``rd.rollout(cell, p, h1, xs)[-1]``.
    """
    check_cell(cell)
    h1 = as_state(cell, h1)
    xs = as_inputs(cell, xs)
    return _final_jit(cell, params, h1, xs, unroll=check_positive_int("unroll", unroll))
