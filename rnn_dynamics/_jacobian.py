"""Exact Jacobians ∂h_T/∂h_1, per-step Jacobians and the norm at every lag.

Index convention: see :mod:`rnn_dynamics` (h_1 given, ``xs`` = x_2..x_T, T-1 factors).

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

``"auto"`` (the default) picks by size: up to n = 64 the cell's own Jacobian kernel where it has
one, else jacrev; above 64 jacfwd. Vanilla cells (and so ``linear`` and ``irnn``) have a kernel:
one loop with the tangents as rows, Q_t = Q_{t-1} Wᵀ diag(φ'(a_t)) = (J_t ⋯ J_2)ᵀ, with Wᵀ laid
out once before the loop so that each step's product is a plain (n, n)·(n, n) one (jacrev needs
a second loop; jacfwd's W @ Q and a vmapped jvp's Q @ Wᵀ with W in place run slower on
XLA:CPU's YNNPACK dots at these sizes), and h_t computed as the step computes it (the same
trajectory as :func:`rnn_dynamics.rollout`'s). Tests check it against numpy's product of
diag(φ'(a_t)) W, against jacrev and, for gradients, against finite differences. A cell whose
step is replaced (``cell._replace(step=f)``) uses the generic methods.

Which is fastest depends on the size (benchmarks/README.md has the measured tables): jacrev
stores the trajectory (T·n memory), jacfwd does not, so prefer jacfwd for long horizons. On
CPU with n > 64, top-level calls (not under a user's jit) compile without XLA's YNNPACK dots
(``rnn_dynamics._compile``; ``rd.fast_cpu_options()`` gives the same options to your own jit).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ._cell import check_cell, jacobian_kernel_of
from ._checks import check_choice, warn_if_degenerate, warn_if_nan_logs, warn_if_norms_lost
from ._compile import cell_jit
from ._rollout import _final, _states, check_args
from ._tangent import normalize, push

__all__ = ["METHODS", "jacobian", "step_jacobians", "jacobian_norms"]

METHODS = ("jacfwd", "jacrev", "product")
AUTO_REVERSE_MAX = 64  # "auto" picks a cell's kernel or jacrev up to this state size, jacfwd above


def resolve_method(method: str, state_size: int, cell=None) -> str:
    """``"auto"`` -> for state_size ≤ 64 the cell's own Jacobian kernel where it has one
    (``"kernel"``: vanilla cells, one loop of plain products), else ``"jacrev"`` (less per-step
    overhead than jacfwd: 112 against 83 GF/s at n = 32 on a 2-core CPU, benchmarks/README.md);
    above 64 ``"jacfwd"`` (no stored trajectory, and the faster one from n = 128 on). Any other
    method is returned checked."""
    check_choice("method", method, METHODS + ("auto",))
    if method == "auto":
        if state_size > AUTO_REVERSE_MAX:
            return "jacfwd"
        return "kernel" if cell is not None and jacobian_kernel_of(cell) is not None else "jacrev"
    return method


def _jac_forward(cell, params, h1, xs, unroll):
    eye = jnp.eye(h1.shape[0], dtype=h1.dtype)
    body = lambda c, x: (push(cell, params, c[0], x, c[1]), None)
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


def _jac_kernel(cell, params, h1, xs, unroll):
    return jacobian_kernel_of(cell)(params, h1, xs, unroll).T


_IMPLS = {"jacfwd": _jac_forward, "jacrev": _jac_reverse, "product": _jac_product, "kernel": _jac_kernel}


def _jacobian(cell, params, h1, xs, method="jacfwd", unroll=1):
    return _IMPLS[method](cell, params, h1, xs, unroll)


_jacobian_jit = cell_jit(_jacobian, static_argnames=("method", "unroll"))


def jacobian(cell, params, h1, xs, *, method: str = "auto", unroll: int = 1) -> jax.Array:
    """∂h_T/∂h_1, the exact (state_size, state_size) Jacobian of the final state.

    Args:
      cell: an :class:`rnn_dynamics.Cell`.
      params: the cell's params (checked against ``cell.init``'s shapes before tracing).
      h1: (state_size,) the initial state h_1.
      xs: (T-1, input_size) inputs x_2..x_T (index convention: :mod:`rnn_dynamics`).
      method: ``"auto"`` (default: for state_size ≤ 64 the cell's own kernel where it has one,
        else ``"jacrev"``; ``"jacfwd"`` above: the faster one on CPU), ``"jacfwd"``, ``"jacrev"``
        or ``"product"`` (module docstring).
      unroll: ``lax.scan`` unroll factor (speed only).

    Returns:
      (state_size, state_size) matrix, entry [i, j] = ∂h_T[i]/∂h_1[j].

    Composes with ``jax.jit``, ``jax.vmap`` and ``jax.grad``. Warns ``NumericalWarning`` when
    the concrete result is non-finite (naming any non-finite input) or exactly zero (float32
    covers e^-103..e^88.7); for long horizons use :func:`jacobian_norms` with ``log10=True``.

    Example::

        cell = rd.cells.univariate(w=1.1)
        rd.jacobian(cell, cell.init(None), jnp.zeros(1), jnp.zeros((50, 1)))  # [[117.39]]
    """
    check_cell(cell)
    method = resolve_method(method, cell.state_size, cell)
    h1, xs, unroll = check_args(cell, params, h1, xs, unroll)
    J = _jacobian_jit(cell, params, h1, xs, method=method, unroll=unroll)
    warn_if_degenerate(J, "∂h_T/∂h_1", inputs={"params": params, "h1": h1, "xs": xs})
    return J


def _step_jacobians(cell, params, h1, xs):
    hs = _states(cell, params, h1, xs)
    h_prev = jnp.concatenate([h1[None], hs[:-1]], axis=0)
    return jax.vmap(_step_jac, in_axes=(None, None, 0, 0))(cell, params, h_prev, xs)


_step_jacobians_jit = cell_jit(_step_jacobians)


def step_jacobians(cell, params, h1, xs) -> jax.Array:
    """All step Jacobians ∂h_t/∂h_{t-1}, t = 2..T, computed in parallel over time.

    Args: as :func:`jacobian`.

    Returns:
      (T-1, state_size, state_size); entry k is ∂h_{k+2}/∂h_{k+1}. For a vanilla cell
      entry k equals diag(φ'(a_{k+2})) W.

    Example: ``Js = rd.step_jacobians(cell, p, h1, xs)``; then ∂h_T/∂h_1 = Js[-1] @ ... @ Js[0].
    """
    h1, xs, _ = check_args(cell, params, h1, xs)
    return _step_jacobians_jit(cell, params, h1, xs)


POWER_ITERATIONS = 3


def _top_singular_power(M, v, iters=POWER_ITERATIONS):
    """σ_max(M) by ``iters`` power iterations on MᵀM from the unit vector ``v``; (σ, v).

    A fixed count (no data-dependent loop), so it is cheap, vmaps well and is differentiable.
    The estimate ‖M v‖ is a lower bound of σ_max; warm-started from the previous step's vector.
    """

    def it(_, v):
        u = M.T @ (M @ v)
        nu = jnp.sqrt(jnp.sum(u * u))
        return jnp.where(nu > 0, u / jnp.where(nu > 0, nu, 1), v)

    v = jax.lax.fori_loop(0, iters, it, v)
    return jnp.sqrt(jnp.sum((M @ v) ** 2)), v


def _log_norms(cell, params, h1, xs, unroll=1, svd=True):
    """Natural-log ‖∂h_t/∂h_1‖₂ for t = 2..T, never overflowing.

    The running product is kept as exp(s)·M with ‖M‖_F = 1: each step pushes M through the
    step Jacobian (the forward-tangent primitive), then moves M's Frobenius norm into s. The
    rescaling is by a scalar, so M's direction is exactly that of the unscaled product.
    σ_max(M) comes from an SVD (``svd=True``) or warm-started power iteration.
    """
    n = h1.shape[0]
    eye = jnp.eye(n, dtype=h1.dtype)
    v0 = 1.0 + 0.5 * jnp.sin(1.7 * jnp.arange(n, dtype=h1.dtype))  # generic, not ⟂ to anything
    v0 = v0 / jnp.sqrt(jnp.sum(v0 * v0))

    def body(carry, x):
        h, M, s, v = carry
        h, M = push(cell, params, h, x, M)
        M, log_f = normalize(M)
        s = s + log_f
        if svd:
            top = jnp.linalg.svd(M, compute_uv=False)[0]
        else:
            top, v = _top_singular_power(M, v)
        return (h, M, s, v), s + jnp.log(top)

    init = (h1, eye, jnp.zeros((), h1.dtype), v0)
    return jax.lax.scan(body, init, xs, unroll=unroll)[1]


_log_norms_jit = cell_jit(_log_norms, static_argnames=("unroll", "svd"))


def jacobian_norms(
    cell, params, h1, xs, *, log10: bool = False, unroll: int = 1, svd: bool = True
) -> jax.Array:
    """‖∂h_t/∂h_1‖₂ for every t = 2..T, in one scan.

    The running product is rescaled by a scalar at every step, so the log-norms never over- or
    underflow (a tanh cell at g = 1 reaches 1e-190 at T = 1000, which float32 cannot hold).

    Args:
      cell, params, h1, xs: as :func:`jacobian`.
      log10: return log10 of the norms (recommended beyond a few hundred steps).
      unroll: ``lax.scan`` unroll factor.
      svd: True (default): each norm is the top singular value from an SVD of the rescaled
        product: exact to rounding (relative 1e-6 in float32, 1e-14 in float64, tested on
        near-degenerate and near-orthogonal products). False: 3 power iterations per step,
        warm-started from the previous step's vector, instead: O(n²) rather than O(n³) per
        step, but only a lower bound of the norm, with no error bound: it converges like
        (σ₂/σ₁)^(6 per step) and stays low by up to the relative spread of the top singular
        values when they nearly coincide. Use it for speed at large n after checking it
        against ``svd=True`` on your networks.

    Returns:
      (T-1,): entry k is ‖∂h_{k+2}/∂h_1‖₂ (or its log10); the last entry is ‖∂h_T/∂h_1‖₂.

    Reverse-differentiable with respect to params, h1 and xs (``jax.grad`` of the last entry
    gives ∂ log‖∂h_T/∂h_1‖₂/∂θ, as Pascanu et al.'s regulariser needs). Without ``log10`` a norm
    outside the dtype's range comes back as 0 or inf with a ``NumericalWarning``; NaN results
    warn and name any non-finite input.

    Example::

        norms = rd.jacobian_norms(cell, p, h1, xs, log10=True)   # (T-1,) log10 norms
    """
    h1, xs, unroll = check_args(cell, params, h1, xs, unroll)
    logs = _log_norms_jit(cell, params, h1, xs, unroll=unroll, svd=bool(svd))
    logs = logs / jnp.log(10.0).astype(h1.dtype)
    warn_if_nan_logs(logs, inputs={"params": params, "h1": h1, "xs": xs})
    if log10:
        return logs
    norms = 10.0**logs
    warn_if_norms_lost(logs, norms)
    return norms
