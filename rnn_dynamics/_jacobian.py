"""Exact Jacobians ∂h_T/∂h_1, per-step Jacobians and the norm at every lag.

Index convention: see :mod:`rnn_dynamics.rollout` (h_1 given, ``xs`` = x_2..x_T, T-1 factors).

Methods for :func:`jacobian` (all give the same matrix; tests check them against each other,
against finite differences and against closed forms):

``"jacfwd"`` (default)
    Forward mode: the identity is pushed through the scan, one ``jax.jvp`` per column
    (``jax.linearize`` of the step, ``vmap``-ed over the columns of the tangent carry, which is
    kept in the (state, direction) layout so each step is one plain ``W @ T``). This is
    ``jax.jacfwd`` of the rollout with the tangent layout fixed; cost ≈ 2·n³ per step.
``"jacrev"``
    Reverse mode, ``jax.jacrev`` of the rollout: one vector-Jacobian product per output row;
    stores the trajectory (T·n memory). Same flop count as forward mode for a square Jacobian.
``"product"``
    The explicit product J_T ⋯ J_2 of step Jacobians (each from ``jax.jacfwd`` of ``step``),
    accumulated in a scan. For a vanilla cell XLA hoists the ``W @ I`` out of the loop, so it
    costs about as much as forward mode.

Which wins (benchmarks/jacobian.py, 2-core CPU, tanh cell, vmapped over seeds): at n = 32
``"jacrev"`` (0.76 of the machine's matmul rate against 0.64 for jacfwd: less per-step
overhead); at n = 128 jacfwd and jacrev tie; at n = 256 jacfwd (0.95); ``"product"`` is 5-15 %
slower than the best everywhere. jacrev also stores the trajectory, jacfwd does not: prefer
jacfwd for long horizons. On CPU with n > 64, top-level calls (not under a user's jit) compile
without XLA's YNNPACK dots, 1.8x faster at n = 128 (``rnn_dynamics._compile``).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ._cell import check_cell
from ._checks import (
    as_inputs,
    as_state,
    check_choice,
    check_positive_int,
    warn_if_degenerate,
    warn_if_norms_lost,
)
from ._compile import cell_jit
from ._rollout import _final, _rollout

__all__ = ["METHODS", "jacobian", "step_jacobians", "jacobian_norms"]

METHODS = ("jacfwd", "jacrev", "product")


def _push(cell, params, h, x, T):
    """One step of forward-mode accumulation: (h_t, J_t @ T) from (h_{t-1}, T)."""
    h_new, jvp = jax.linearize(lambda h_: cell.step(params, h_, x), h)
    return h_new, jax.vmap(jvp, in_axes=1, out_axes=1)(T)


def _jac_forward(cell, params, h1, xs, unroll):
    eye = jnp.eye(h1.shape[0], dtype=h1.dtype)
    body = lambda c, x: (_push(cell, params, c[0], x, c[1]), None)
    return jax.lax.scan(body, (h1, eye), xs, unroll=unroll)[0][1]


def _jac_reverse(cell, params, h1, xs, unroll):
    return jax.jacrev(lambda h: _final(cell, params, h, xs, unroll))(h1)


def _step_jac(cell, params, h, x):
    return jax.jacfwd(cell.step, argnums=1)(params, h, x)


def _jac_product(cell, params, h1, xs, unroll):
    def body(carry, x):
        h, J = carry
        A = _step_jac(cell, params, h, x)
        return (cell.step(params, h, x), A @ J), None

    eye = jnp.eye(h1.shape[0], dtype=h1.dtype)
    return jax.lax.scan(body, (h1, eye), xs, unroll=unroll)[0][1]


_IMPLS = {"jacfwd": _jac_forward, "jacrev": _jac_reverse, "product": _jac_product}


def _jacobian(cell, params, h1, xs, method="jacfwd", unroll=1):
    return _IMPLS[method](cell, params, h1, xs, unroll)


_jacobian_jit = cell_jit(_jacobian, static_argnames=("method", "unroll"))


def _check_common(cell, h1, xs, unroll):
    check_cell(cell)
    return as_state(cell, h1), as_inputs(cell, xs), check_positive_int("unroll", unroll)


def jacobian(cell, params, h1, xs, *, method: str = "jacfwd", unroll: int = 1) -> jax.Array:
    """∂h_T/∂h_1, the exact (state_size, state_size) Jacobian of the final state.

    Args:
      cell: an :class:`rnn_dynamics.cells.Cell`.
      params: the cell's params.
      h1: (state_size,) the initial state h_1.
      xs: (T-1, input_size) inputs x_2..x_T (index convention: :mod:`rnn_dynamics.rollout`).
      method: ``"jacfwd"`` (default), ``"jacrev"`` or ``"product"`` (see the module docstring).
      unroll: ``lax.scan`` unroll factor (speed only).

    Returns:
      (state_size, state_size) matrix, entry [i, j] = ∂h_T[i]/∂h_1[j].

    Warns ``NumericalWarning`` when the concrete result is non-finite or exactly zero (float32
    covers e^-103..e^88.7); use :func:`jacobian_norms` with ``log10=True`` for long horizons.

    Example::

        cell = rd.cells.univariate(w=1.1)
        rd.jacobian(cell, cell.init(None), jnp.zeros(1), jnp.zeros((50, 1)))  # [[117.39]]
    """
    check_choice("method", method, METHODS)
    h1, xs, unroll = _check_common(cell, h1, xs, unroll)
    J = _jacobian_jit(cell, params, h1, xs, method=method, unroll=unroll)
    warn_if_degenerate(J, "∂h_T/∂h_1")
    return J


@partial(jax.jit, static_argnames=("cell",))
def _step_jacobians(cell, params, h1, xs):
    hs = _rollout(cell, params, h1, xs)
    h_prev = jnp.concatenate([h1[None], hs[:-1]], axis=0)
    return jax.vmap(_step_jac, in_axes=(None, None, 0, 0))(cell, params, h_prev, xs)


def step_jacobians(cell, params, h1, xs) -> jax.Array:
    """All step Jacobians ∂h_t/∂h_{t-1}, t = 2..T, computed in parallel over time.

    Args: as :func:`jacobian`.

    Returns:
      (T-1, state_size, state_size); entry k is ∂h_{k+2}/∂h_{k+1}. For a vanilla cell
      entry k equals diag(φ'(a_{k+2})) W.

    Example: ``Js = rd.step_jacobians(cell, p, h1, xs)``; then ∂h_T/∂h_1 = Js[-1] @ ... @ Js[0].
    """
    h1, xs, _ = _check_common(cell, h1, xs, 1)
    return _step_jacobians(cell, params, h1, xs)


def _top_singular(M, v, max_iters=200):
    """σ_max(M) by power iteration on MᵀM from the unit vector ``v``; returns (σ, v).

    The estimates ‖M v_k‖ increase monotonically to σ_max; iteration stops when one changes by
    less than ``rtol``·σ (1e-6 in float32, 1e-12 in float64) or after ``max_iters``. Warm-started
    from the previous step's vector, since the top right singular vector of ∂h_t/∂h_1 settles
    as t grows, a step usually needs two or three iterations.
    """
    rtol = 1e-6 if M.dtype == jnp.float32 else 1e-12

    def it(state):
        i, v, sig, _ = state
        w = M @ v
        u = M.T @ w
        nu = jnp.sqrt(jnp.sum(u * u))
        v = jnp.where(nu > 0, u / jnp.where(nu > 0, nu, 1), v)
        return i + 1, v, jnp.sqrt(jnp.sum(w * w)), sig

    def more(state):
        i, _, sig, prev = state
        return (i < 2) | ((i < max_iters) & (sig - prev > rtol * sig))

    zero = jnp.zeros((), M.dtype)
    _, v, sig, _ = jax.lax.while_loop(more, it, (0, v, zero, zero))
    return jnp.sqrt(jnp.sum((M @ v) ** 2)), v


def _log_norms(cell, params, h1, xs, unroll=1, svd=False):
    """Natural-log ‖∂h_t/∂h_1‖₂ for t = 2..T, never overflowing.

    The running product is kept as exp(s)·M with ‖M‖_F = 1: each step multiplies M by the step
    Jacobian (forward mode, as in ``_jac_forward``), then moves M's Frobenius norm into s.
    The rescaling is by a scalar, so the matrix direction is exactly the same as without it.
    σ_max(M) comes from a warm-started power iteration (``svd=True``: a full SVD per step).
    """
    n = h1.shape[0]
    eye = jnp.eye(n, dtype=h1.dtype)
    v0 = 1.0 + 0.5 * jnp.sin(1.7 * jnp.arange(n, dtype=h1.dtype))  # generic, not ⟂ to anything
    v0 = v0 / jnp.sqrt(jnp.sum(v0 * v0))

    def body(carry, x):
        h, M, s, v = carry
        h, M = _push(cell, params, h, x, M)
        f = jnp.sqrt(jnp.sum(M * M))
        M = M / jnp.where(f > 0, f, 1)
        s = s + jnp.log(f)
        if svd:
            top = jnp.linalg.svd(M, compute_uv=False)[0]
        else:
            top, v = _top_singular(M, v)
        return (h, M, s, v), s + jnp.log(top)

    init = (h1, eye, jnp.zeros((), h1.dtype), v0)
    return jax.lax.scan(body, init, xs, unroll=unroll)[1]


_log_norms_jit = cell_jit(_log_norms, static_argnames=("unroll", "svd"))


def jacobian_norms(
    cell, params, h1, xs, *, log10: bool = False, unroll: int = 1, svd: bool = False
) -> jax.Array:
    """‖∂h_t/∂h_1‖₂ for every t = 2..T, in one scan.

    The running product is rescaled by a scalar at every step, so the log-norms never over- or
    underflow (a tanh cell at g = 1 reaches 1e-190 at T = 1000, which float32 cannot hold).

    Args:
      cell, params, h1, xs: as :func:`jacobian`.
      log10: return log10 of the norms (recommended beyond a few hundred steps).
      unroll: ``lax.scan`` unroll factor.
      svd: take each norm from a full SVD instead of the warm-started power iteration (which
        converges to a relative 1e-6 in float32, 1e-12 in float64, and costs O(n²) per
        iteration against O(n³) for the SVD).

    Returns:
      (T-1,): entry k is ‖∂h_{k+2}/∂h_1‖₂ (or its log10); the last entry is ‖∂h_T/∂h_1‖₂.

    Without ``log10`` a norm outside the dtype's range comes back as 0 or inf with a
    ``NumericalWarning``.

    Example::

        norms = rd.jacobian_norms(cell, p, h1, xs, log10=True)   # (T-1,) log10 norms
    """
    h1, xs, unroll = _check_common(cell, h1, xs, unroll)
    logs = _log_norms_jit(cell, params, h1, xs, unroll=unroll, svd=bool(svd))
    logs = logs / jnp.log(10.0).astype(h1.dtype)
    if log10:
        return logs
    norms = 10.0**logs
    warn_if_norms_lost(logs, norms)
    return norms
