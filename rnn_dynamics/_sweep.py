"""Sweeps over numbers: one compiled computation for a whole array of hyperparameters."""
from __future__ import annotations

import jax

from ._checks import check_positive_int

__all__ = ["sweep"]


def _sweep(fn, values, batch_size):
    return jax.lax.map(fn, values, batch_size=batch_size)


_sweep_jit = jax.jit(_sweep, static_argnames=("fn", "batch_size"))


def default_sweep_batch(size: int) -> int:
    """Values evaluated together by :func:`sweep`: 1 on CPU (a compiled loop), all on GPU/TPU.

    On a 2-core CPU the analyses already fill the cores with their own seed batches, and vmapping
    a gain axis on top only grows the working set: ``jax.lax.map`` over 20 gains ran 3.7x
    faster than a Python loop of calls while a plain ``jax.vmap`` over gains was no faster
    than the loop. Accelerators want the full width.
    """
    return 1 if jax.default_backend() == "cpu" else max(1, size)


def sweep(fn, values, *, batch_size: int | None = None):
    """``fn`` over the leading axis of ``values``, as one compiled computation.

    Args:
      fn: a function of one value (a pytree slice of ``values``) that builds what it needs,
        e.g. ``lambda g: rd.spectra(rd.cells.vanilla(8, 64, gain=g), key, seeds=16,
        steps=200).log10_norm``. Define it once and reuse it: it is a static argument, so a
        new lambda per call compiles again.
      values: an array (or pytree of arrays) with a leading axis of size G.
      batch_size: values evaluated together (``jax.lax.map``'s batch_size); default
        :func:`default_sweep_batch`.

    Returns:
      ``fn``'s outputs stacked along a new leading axis of size G.

    Equivalent to ``jax.jit(jax.vmap(fn))(values)`` up to rounding (and to a loop of calls),
    batched the way that is fastest on the backend. Example::

        gains = jnp.linspace(0.5, 3.0, 20)
        log10_norms = rd.sweep(per_gain, gains)        # (20, seeds)
    """
    leaves = jax.tree_util.tree_leaves(values)
    if not leaves or any(jax.numpy.ndim(v) == 0 for v in leaves):
        raise ValueError("values: expected arrays with a leading axis (one entry per configuration).")
    size = int(jax.numpy.shape(leaves[0])[0])
    if batch_size is None:
        batch_size = default_sweep_batch(size)
    batch_size = min(check_positive_int("batch_size", batch_size), max(size, 1))
    return _sweep_jit(fn, values, batch_size=batch_size)
