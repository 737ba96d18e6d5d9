"""Jacobian spectra across random seeds, with one compiled function.

Seeds: ``spectra(cell, key, seeds=S, steps=T, ...)`` draws seed i from
``key_i = jax.random.split(key, S)[i]`` with :func:`draw_seed`, which splits ``key_i`` into
``(k_params, k_inputs, k_h1) = jax.random.split(key_i, 3)`` and returns

* ``params = cell.init(k_params)``,
* ``xs = input_scale * jax.random.normal(k_inputs, (T-1, cell.input_size))``,
* ``h1 = cell.initial_state(params)`` if ``h1`` is None; ``h1 * jax.random.normal(k_h1,
  (state_size,))`` if ``h1`` is a number (a standard deviation); ``h1`` itself if it is an array
  of shape (state_size,); row i if it has shape (S, state_size).

So any single seed can be rebuilt by hand with ``draw_seed(cell, jax.random.split(key, S)[i], T)``.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._cell import check_cell
from ._checks import (
    as_state,
    check_choice,
    check_nonnegative,
    check_positive_int,
    FIX,
    NumericalWarning,
    float_dtype,
)
from ._compile import cell_jit
from ._jacobian import METHODS, _jacobian, _log_norms

__all__ = ["Spectra", "draw_seed", "spectra", "default_batch_size"]


class Spectra(NamedTuple):
    """Result of :func:`spectra`, one row per seed.

    Attributes:
      log10_norms: (seeds, T-1) log10 ‖∂h_t/∂h_1‖₂ for t = 2..T, from the rescaled scan (never
        overflows); ``None`` when ``curve=False``.
      singular_values: (seeds, state_size) singular values of the dense ∂h_T/∂h_1 from
        ``method``, descending. Entries are 0 or non-finite where the dense product left the
        dtype's range (see :attr:`dense_ok`); ``None`` when ``dense=False``.
    """

    log10_norms: jax.Array | None
    singular_values: jax.Array | None

    @property
    def log10_norm(self) -> jax.Array:
        """(seeds,) log10 ‖∂h_T/∂h_1‖₂: from the curve if computed, else from the dense matrix."""
        if self.log10_norms is not None:
            return self.log10_norms[:, -1]
        return jnp.log10(self.singular_values[:, 0])

    @property
    def growth_rate(self) -> jax.Array:
        """(seeds,) geometric-mean growth per step, ‖∂h_T/∂h_1‖₂^(1/(T-1)) (1 is neutral)."""
        if self.log10_norms is None:
            raise ValueError("growth_rate needs the curve: call spectra(..., curve=True).")
        return 10.0 ** (self.log10_norms[:, -1] / self.log10_norms.shape[1])

    @property
    def dense_ok(self) -> jax.Array:
        """(seeds,) True where the dense ∂h_T/∂h_1 stayed finite and non-zero."""
        if self.singular_values is None:
            raise ValueError("dense_ok needs the dense matrices: call spectra(..., dense=True).")
        sv = self.singular_values
        return jnp.all(jnp.isfinite(sv), axis=-1) & (sv[:, 0] > 0)


def draw_seed(cell, key, steps: int, *, input_scale=1.0, h1=None):
    """Params, initial state and inputs of one seed, exactly as :func:`spectra` draws them.

    Args:
      cell: a Cell.
      key: one PRNG key (``jax.random.split(key, seeds)[i]`` for seed i of a study).
      steps: T; the inputs are x_2..x_T, so ``xs`` has T-1 rows.
      input_scale: standard deviation of the Gaussian inputs (0 for an autonomous network).
      h1: None, a float (standard deviation of a Gaussian h_1) or a (state_size,) array.

    Returns:
      ``(params, h1, xs)`` with h1 (state_size,) and xs (T-1, input_size).

    Example::

        params, h1, xs = rd.draw_seed(cell, jax.random.split(key, 32)[5], 200)
    """
    check_cell(cell)
    steps = _check_steps(steps)
    input_scale = check_nonnegative("input_scale", input_scale)
    return _draw(cell, key, steps, input_scale, _h1_kind(cell, h1, None), h1)


def _check_steps(steps):
    steps = check_positive_int("steps", steps)
    if steps < 2:
        raise ValueError(f"steps: expected T >= 2 (T-1 >= 1 step Jacobians), got {steps}.")
    return steps


def _h1_kind(cell, h1, seeds):
    if h1 is None:
        return "default"
    if isinstance(h1, (int, float)) and not isinstance(h1, bool):
        check_nonnegative("h1", h1)
        return "scale"
    h1 = jnp.asarray(h1)
    if h1.ndim == 0:
        check_nonnegative("h1", float(h1))
        return "scale"
    if h1.shape == (cell.state_size,):
        as_state(cell, h1)
        return "fixed"
    if seeds is not None and h1.shape == (seeds, cell.state_size):
        return "per_seed"
    want = f"({cell.state_size},)" + (f" or ({seeds}, {cell.state_size})" if seeds else "")
    raise ValueError(
        f"h1: expected None, a standard deviation, or an array of shape {want}; "
        f"got shape {tuple(h1.shape)}."
    )


def _draw(cell, key, steps, input_scale, h1_kind, h1):
    k_params, k_inputs, k_h1 = jax.random.split(key, 3)
    params = cell.init(k_params)
    dt = float_dtype()
    xs = input_scale * jax.random.normal(k_inputs, (steps - 1, cell.input_size), dt)
    if h1_kind == "default":
        h = cell.initial_state(params)
    elif h1_kind == "scale":
        h = h1 * jax.random.normal(k_h1, (cell.state_size,), dt)
    else:
        h = jnp.asarray(h1, dt)
    return params, h, xs


def default_batch_size(state_size: int, seeds: int) -> int:
    """How many seeds to vmap at once inside ``spectra``'s ``lax.map``.

    Chosen from benchmarks/jacobian.py on a 2-core CPU (benchmarks/README.md): up to n = 64
    vmapping wins while a (batch, n, n) float32 carry stays within 128 KiB; above n = 64 (XLA's
    own dots, see ``rnn_dynamics._compile``) any batch of 4 or more runs at the full matmul rate.
    Measured never slower than a Python loop of jitted one-seed calls (n = 32: 1.28x,
    n = 64: 1.06x, n = 128: 1.58x, n = 256: 1.03x).
    """
    return max(1, min(seeds, max(4, 2**15 // (state_size * state_size))))


def _spectra_impl(cell, keys, steps, input_scale, h1, method, h1_kind, batch_size, curve, dense, unroll):
    def one(args):
        key, h1_i = args
        params, h, xs = _draw(cell, key, steps, input_scale, h1_kind, h1_i)
        sv = None
        if dense:
            J = _jacobian(cell, params, h, xs, method=method, unroll=unroll)
            sv = jnp.linalg.svd(J, compute_uv=False)
        logs = _log_norms(cell, params, h, xs, unroll) / jnp.log(10.0).astype(h.dtype) if curve else None
        return logs, sv

    if h1_kind != "per_seed":
        h1 = jnp.broadcast_to(jnp.asarray(h1, float_dtype()), (keys.shape[0],) + jnp.shape(h1))
    logs, sv = jax.lax.map(one, (keys, h1), batch_size=batch_size)
    return Spectra(logs, sv)


_spectra = cell_jit(
    _spectra_impl,
    static_argnames=("steps", "method", "h1_kind", "batch_size", "curve", "dense", "unroll"),
)


def spectra(
    cell,
    key,
    seeds: int = 32,
    steps: int = 100,
    *,
    input_scale: float = 1.0,
    h1=None,
    method: str = "jacfwd",
    batch_size: int | None = None,
    curve: bool = True,
    dense: bool = True,
    unroll: int = 1,
) -> Spectra:
    """Jacobian spectra of ∂h_T/∂h_1 over many random seeds, in one compiled function.

    Args:
      cell: a Cell.
      key: a PRNG key; seeds are drawn from it as in the module docstring (:func:`draw_seed`).
      seeds: S, number of random networks (params, inputs and h_1 per seed).
      steps: T (inputs x_2..x_T, T-1 step-Jacobian factors).
      input_scale: standard deviation of the Gaussian inputs.
      h1: None (``cell.initial_state``), a float (std of a Gaussian h_1), a (state_size,) array,
        or a (S, state_size) array.
      method: how the dense ∂h_T/∂h_1 is computed: ``"jacfwd"``, ``"jacrev"``, ``"product"``.
      batch_size: seeds vmapped together inside a ``lax.map`` over chunks; default
        :func:`default_batch_size`. 1 is a compiled loop, S a full vmap.
      curve: compute log10 ‖∂h_t/∂h_1‖₂ for every t (the rescaled scan; never overflows).
      dense: compute the dense ∂h_T/∂h_1 and its singular values (turn off for long horizons,
        where the dense matrix leaves the float range).
      unroll: ``lax.scan`` unroll factor.

    Returns:
      :class:`Spectra` with ``log10_norms`` (S, T-1) and ``singular_values`` (S, state_size).

    Example::

        cell = rd.cells.vanilla(8, 64, "tanh", gain=1.1)
        out = rd.spectra(cell, jax.random.key(0), seeds=32, steps=200)
        out.log10_norm        # (32,) log10 ‖∂h_T/∂h_1‖₂
    """
    check_cell(cell)
    seeds = check_positive_int("seeds", seeds)
    steps = _check_steps(steps)
    input_scale = check_nonnegative("input_scale", input_scale)
    check_choice("method", method, METHODS)
    batch_size = default_batch_size(cell.state_size, seeds) if batch_size is None else batch_size
    batch_size = min(check_positive_int("batch_size", batch_size), seeds)
    unroll = check_positive_int("unroll", unroll)
    if not (curve or dense):
        raise ValueError("curve, dense: at least one must be True (nothing to compute).")
    kind = _h1_kind(cell, h1, seeds)
    h1_arr = jnp.zeros((), float_dtype()) if kind == "default" else jnp.asarray(h1, float_dtype())
    keys = jax.random.split(key, seeds)
    out = _spectra(cell, keys, steps=steps, input_scale=jnp.asarray(input_scale, float_dtype()), h1=h1_arr,
                   method=method, h1_kind=kind, batch_size=batch_size, curve=bool(curve),
                   dense=bool(dense), unroll=unroll)
    bad = ~np.asarray(out.dense_ok) if dense else np.zeros(1, bool)
    if bad.any():
        warnings.warn(
            f"The dense ∂h_T/∂h_1 left the range of {out.singular_values.dtype} for "
            f"{int(bad.sum())} of {seeds} seeds (their singular_values are 0 or non-finite); "
            f"log10_norms is unaffected. {FIX}",
            NumericalWarning,
            stacklevel=2,
        )
    return out
