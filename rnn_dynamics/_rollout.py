"""Rolling a cell forward with ``jax.lax.scan`` (index convention: :mod:`rnn_dynamics`)."""
from __future__ import annotations

import jax

from ._cell import check_cell, check_params
from ._checks import as_inputs, as_state, check_positive_int
from ._compile import cell_jit

__all__ = ["rollout", "final_state"]


def _states(cell, params, h1, xs, unroll=1):
    def body(h, x):
        h = cell.step(params, h, x)
        return h, h

    return jax.lax.scan(body, h1, xs, unroll=unroll)[1]


def _final(cell, params, h1, xs, unroll=1):
    return jax.lax.scan(lambda h, x: (cell.step(params, h, x), None), h1, xs, unroll=unroll)[0]


_rollout = cell_jit(_states, static_argnames=("unroll",))
_final_jit = cell_jit(_final, static_argnames=("unroll",))


def check_args(cell, params, h1, xs, unroll=1):
    """Validate ``(cell, params, h1, xs, unroll)`` before tracing; returns ``(h1, xs, unroll)``."""
    check_cell(cell)
    check_params(cell, params)
    return as_state(cell, h1), as_inputs(cell, xs), check_positive_int("unroll", unroll)


def rollout(cell, params, h1, xs, *, unroll: int = 1) -> jax.Array:
    """States h_2..h_T from h_1 and inputs x_2..x_T (index convention: :mod:`rnn_dynamics`).

    Args:
      cell: an :class:`rnn_dynamics.Cell`.
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
    h1, xs, unroll = check_args(cell, params, h1, xs, unroll)
    return _rollout(cell, params, h1, xs, unroll=unroll)


def final_state(cell, params, h1, xs, *, unroll: int = 1) -> jax.Array:
    """h_T only, shape (state_size,), without storing the trajectory.

    Arguments as :func:`rollout` (h1 (state_size,), xs (T-1, input_size) = x_2..x_T).
    Example: ``rd.final_state(cell, p, h1, xs)`` equals ``rd.rollout(cell, p, h1, xs)[-1]``.
    """
    h1, xs, unroll = check_args(cell, params, h1, xs, unroll)
    return _final_jit(cell, params, h1, xs, unroll=unroll)
