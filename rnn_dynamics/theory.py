"""Closed forms: the lecture bound on ‖∂h_t/∂h_k‖ and Lyapunov exponents in closed form.

``jacobian_bound`` (Pascanu et al. 2013); ``mean_field`` / ``mean_field_lyapunov`` (random tanh,
sigmoid, ReLU and linear networks, edge of chaos); ``gaussian_product_lyapunov`` (Newman 1986);
``linear_lyapunov`` (linear cells). Tests and notebooks check the numerical analyses
(:func:`rnn_dynamics.lyapunov_spectrum`, ...) against these.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma

from ._cell import check_cell
from ._checks import check_choice, check_positive_int

__all__ = [
    "jacobian_bound",
    "MeanField",
    "mean_field",
    "mean_field_lyapunov",
    "gaussian_product_lyapunov",
    "linear_lyapunov",
]


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


# --------------------------------------------------------------------------------------------
# Lyapunov exponents in closed form: mean field, Gaussian products, linear cells

_MF_ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear")
_NODES = 4001


class MeanField(NamedTuple):
    """Result of :func:`mean_field`: ``q`` the fixed-point pre-activation variance q*
    (inf where the linear or ReLU map diverges), ``chi1`` χ₁ = g²·E_z[φ′(√q* z)²], and
    ``lyapunov`` ½·ln χ₁ (nats per step). Each has the shape of the broadcast inputs."""

    q: jax.Array
    chi1: jax.Array
    lyapunov: jax.Array


def _gauss_expect(f, q):
    """E_z[f(√q·z)], z ~ N(0, 1), by the trapezoid rule on z ∈ [-10, 10] (4001 nodes).

    For these analytic integrands the trapezoid rule converges exponentially, at a rate set by
    the distance of the nearest complex singularity (π/(2√q) for tanh); Gauss–Hermite with 96
    nodes was off by 1.2e-4 relative at q = 6.3 (g = 3), this rule by 2e-13 against scipy's
    adaptive quadrature (float64).
    """
    z = np.linspace(-10.0, 10.0, _NODES)
    w = np.exp(-z * z / 2) * (z[1] - z[0]) / np.sqrt(2 * np.pi)
    z = jnp.asarray(z, q.dtype)
    w = jnp.asarray(w, q.dtype)
    return jnp.sum(w * f(jnp.sqrt(q)[..., None] * z), axis=-1)


def _moments(activation):
    """(E[φ(√q z)²], E[φ′(√q z)²]) as functions of q (closed forms for relu and linear)."""
    if activation == "linear":
        return (lambda q: q), (lambda q: jnp.ones_like(q))
    if activation == "relu":
        return (lambda q: q / 2), (lambda q: jnp.full_like(q, 0.5))
    if activation == "tanh":
        phi = jnp.tanh
        dphi = lambda a: 1 / jnp.cosh(a) ** 2
    else:
        phi = jax.nn.sigmoid
        dphi = lambda a: jax.nn.sigmoid(a) * (1 - jax.nn.sigmoid(a))
    return (lambda q: _gauss_expect(lambda a: phi(a) ** 2, q)), (
        lambda q: _gauss_expect(lambda a: dphi(a) ** 2, q)
    )


def _solve_q(m2, g2, s2, dtype):
    """The largest non-negative root of q = g²·m2(q) + σ²: fixed-point iteration from a
    large start (it decreases monotonically to the largest root for these concave or linear
    maps), then Newton steps to remove critical slowing down near χ₁ = 1."""
    F = lambda q: g2 * m2(q) + s2
    q0 = jnp.broadcast_to(jnp.asarray(1.0, dtype) * (1 + g2 + s2), jnp.broadcast_shapes(g2.shape, s2.shape))
    q = jax.lax.fori_loop(0, 300, lambda i, q: F(q), q0)

    def newton(i, q):
        f = F(q) - q
        df = jax.jvp(F, (q,), (jnp.ones_like(q),))[1] - 1  # F acts elementwise
        step = jnp.where(df < 0, f / df, 0)
        return jnp.maximum(q - step, 0)

    return jax.lax.fori_loop(0, 60, newton, q)


def mean_field(activation: str, gain, input_variance=0.0) -> MeanField:
    """Mean-field theory of a random network h_t = φ(W h_{t-1} + U x_t), W_ij ~ N(0, g²/n).

    Solves q* = g²·E_z[φ(√q* z)²] + σ_x² for the pre-activation variance and returns
    χ₁ = g²·E_z[φ′(√q* z)²] and the predicted largest Lyapunov exponent ½·ln χ₁, z ~ N(0, 1)
    (Molgedey, Schuchhardt & Schuster 1992; Poole et al. 2016: χ₁ = 1 is the edge of chaos).
    σ_x² is the variance of the input drive (U x_t)_i per unit: for ``rd.cells.vanilla`` with
    inputs x ~ N(0, s²) that is input_gain²·s². Expectations: a 4001-node trapezoid rule in z
    for tanh and sigmoid (relative error 2e-13 in float64), closed forms for relu
    (E φ² = q/2, E φ′² = 1/2) and linear. q* is the
    largest non-negative fixed point: 0 for tanh with g ≤ 1 and no input (then χ₁ = g²); inf
    for a linear (g ≥ 1) or ReLU (g ≥ √2) map with input, whose χ₁ does not depend on q. At
    q* = 0, χ₁ is the limit q → 0⁺ (g²·φ′(0)², and g²/2 for relu). Valid for large n.

    Args:
      activation: ``"tanh"``, ``"sigmoid"``, ``"relu"`` or ``"linear"``.
      gain: g, a number or an array (broadcast with ``input_variance``); jit- and vmap-able.
      input_variance: σ_x² ≥ 0.

    Returns:
      :class:`MeanField` (q, chi1, lyapunov), each of the broadcast shape.

    Example: ``rd.theory.mean_field("tanh", 2.0).lyapunov`` is 0.1547; measured λ_max of one
    n = 512 network (no input, T = 5000) was 0.1554.
    """
    check_choice("activation", activation, _MF_ACTIVATIONS)
    _check_nonneg_array("gain", gain)
    _check_nonneg_array("input_variance", input_variance)
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    g, s2 = jnp.broadcast_arrays(jnp.asarray(gain, dtype), jnp.asarray(input_variance, dtype))
    return _mean_field(activation, g, s2)


@partial(jax.jit, static_argnames="activation")
def _mean_field(activation, g, s2):
    dtype = g.dtype
    g2 = g * g
    m2, d2 = _moments(activation)
    if activation in ("linear", "relu"):
        slope = 1.0 if activation == "linear" else 0.5
        q = jnp.where(g2 * slope < 1, s2 / jnp.maximum(1 - g2 * slope, 1e-30), jnp.where(s2 > 0, jnp.inf, 0.0))
        q = q.astype(dtype)
    else:
        q = _solve_q(m2, g2, s2, dtype)
    tiny = jnp.finfo(dtype).tiny ** 0.5
    chi1 = g2 * d2(jnp.clip(q, tiny, 1e30))
    return MeanField(q, chi1, 0.5 * jnp.log(chi1))


def mean_field_lyapunov(activation: str, gain, input_variance=0.0) -> jax.Array:
    """½·ln χ₁, the mean-field largest Lyapunov exponent (nats per step); see :func:`mean_field`.

    Example: ``rd.theory.mean_field_lyapunov("tanh", jnp.linspace(0.5, 3, 6))`` (jit/vmap-able).
    """
    return mean_field(activation, gain, input_variance).lyapunov


def gaussian_product_lyapunov(n: int, sigma=1.0) -> jax.Array:
    """Newman's (1986) exact Lyapunov exponents of products of i.i.d. n×n Gaussian matrices.

    Entries N(0, σ²/n): λ_i = ½·[ln(2σ²/n) + ψ((n − i + 1)/2)], i = 1..n, ψ the digamma
    function, in nats per step, descending.

    Args:
      n: matrix size. sigma: σ > 0 (a number or a traced scalar).

    Returns:
      (n,) the exponents.

    Example: ``rd.theory.gaussian_product_lyapunov(2)`` is [−0.2886, −0.9818].
    """
    n = check_positive_int("n", n)
    _check_nonneg_array("sigma", sigma)
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    i = jnp.arange(1, n + 1, dtype=dtype)
    sigma = jnp.asarray(sigma, dtype)
    return 0.5 * (jnp.log(2 * sigma**2 / n) + digamma((n - i + 1) / 2))


def linear_lyapunov(W) -> jax.Array:
    """Lyapunov exponents of the linear map h ↦ W h: ln|λ_i(W)| of its eigenvalues, descending.

    Uses ``jnp.linalg.eigvals`` (XLA's non-symmetric eigensolver runs on the CPU/host; under jit
    it works on CPU backends). Exact for any linear cell (``rd.cells.linear``), whatever its
    input, since the step Jacobian is W at every step.

    Args:
      W: (..., n, n) real matrices.

    Returns:
      (..., n) nats per step; -inf for a zero eigenvalue.

    Example: ``rd.theory.linear_lyapunov(jnp.diag(jnp.array([0.5, 2.0])))`` is [ln 2, ln 0.5].
    """
    W = jnp.asarray(W)
    if W.ndim < 2 or W.shape[-1] != W.shape[-2]:
        raise ValueError(f"W: expected square matrices (..., n, n), got shape {tuple(W.shape)}.")
    if not jnp.issubdtype(W.dtype, jnp.floating):
        W = W.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    ev = jnp.linalg.eigvals(W)
    return -jnp.sort(-jnp.log(jnp.abs(ev)), axis=-1).astype(W.dtype)


def _check_nonneg_array(name, value):
    if isinstance(value, jax.core.Tracer):
        return
    try:
        a = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a non-negative number or array of numbers, got {value!r}.") from None
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"{name}: expected finite non-negative values, got {value!r}.")
