"""The forward-tangent primitive: push a frame of tangent vectors through one step.

Written once, used by the dense Jacobian (frame = I), the rescaled norm curve, QR/Lyapunov
spectra (an orthonormal n×k frame) and matrix-free singular values.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["push", "normalize"]


def push(cell, params, h, x, frame):
    """``(h_t, J_t @ frame)`` from ``(h_{t-1}, frame)``, J_t = ∂h_t/∂h_{t-1}.

    Args:
      cell, params: the cell and its params.
      h: (n,) state h_{t-1}; x: (input_size,) input x_t.
      frame: (n, k) tangent vectors as columns (kept in this layout, so for a vanilla cell
        each step is one plain ``W @ frame``).

    Returns:
      ``(h_t (n,), J_t @ frame (n, k))``. One ``jax.linearize`` of the step, vmapped over the
      frame's columns; differentiable (forward and reverse) with respect to params and h.
    """
    h_new, jvp = jax.linearize(lambda h_: cell.step(params, h_, x), h)
    return h_new, jax.vmap(jvp, in_axes=1, out_axes=1)(frame)


def normalize(M):
    """``(M / ‖M‖_F, log ‖M‖_F)``; a zero matrix stays zero with log-norm -inf."""
    f = jnp.sqrt(jnp.sum(M * M))
    return M / jnp.where(f > 0, f, 1).astype(M.dtype), jnp.log(f)
