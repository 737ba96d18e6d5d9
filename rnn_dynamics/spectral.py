"""Spectral norms and singular values of Jacobians, over any leading batch dims."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ._checks import warn_if_degenerate

__all__ = ["spectral_norm", "singular_values"]


def _as_matrices(J, name="J"):
    J = jnp.asarray(J)
    if J.ndim < 2:
        raise ValueError(
            f"{name}: expected an array of matrices (..., n, k) with at least 2 dims, "
            f"got shape {tuple(J.shape)}."
        )
    if not jnp.issubdtype(J.dtype, jnp.inexact):
        J = J.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    warn_if_degenerate(J, name, stacklevel=4)
    return J


def singular_values(J) -> jax.Array:
    """All singular values of J, in descending order.

    Args:
      J: (..., n, k) one matrix or a batch (e.g. (seeds, n, n) from a vmapped ``rd.jacobian``).

    Returns:
      (..., min(n, k)).

    Example: ``rd.singular_values(rd.jacobian(cell, p, h1, xs))``.
    """
    return jnp.linalg.svd(_as_matrices(J), compute_uv=False)


def spectral_norm(J) -> jax.Array:
    """‖J‖₂ = the largest singular value, over any leading batch dims: (..., n, k) -> (...).

    Example: ``rd.spectral_norm(jnp.eye(3) * 2.0)`` is 2.0.
    """
    return singular_values(J)[..., 0]
