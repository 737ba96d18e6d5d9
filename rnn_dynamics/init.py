"""Initialisers for weight matrices, in the ``jax.nn.initializers`` form.

Each factory closes over its settings and returns ``init(key, shape, dtype=None) -> Array``.
``shape`` is ``(fan_out, fan_in)``: rows are the units a matrix writes to, columns the units it
reads from, so ``W @ h`` is the recurrent drive. ``dtype=None`` means float32, or float64 when
``jax_enable_x64`` is on.

Random draws are made in float32 (then cast and scaled in the working dtype), so one key
gives the same network with and without ``jax_enable_x64``: the float64 weights round to the
float32 ones, and precision can be compared on one network.
Initialisers are values (:class:`rnn_dynamics._cell.Fn`): ``gaussian(1.1) == gaussian(1.1)``,
and their numbers (gain, radius, scale) may be traced (a sweep inside ``jax.vmap``); a traced
number is not validated.

>>> import jax, rnn_dynamics as rd
>>> W = rd.init.gaussian(1.1)(jax.random.key(0), (64, 64))    # entries N(0, 1.1**2 / 64)
>>> W = rd.init.spectral_radius(0.95, base=rd.init.sparse(15))(jax.random.key(0), (100, 100))
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ._cell import Fn
from ._checks import check_nonnegative, check_positive_int, float_dtype

Initializer = Callable[..., jax.Array]

__all__ = [
    "Initializer", "gaussian", "orthogonal", "identity", "spectral_radius", "sparse", "zeros",
    "matrix_spectral_radius",
]


def _shape2(shape) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        raise ValueError(f"shape: expected a matrix shape (fan_out, fan_in), got {shape}.")
    return shape


def gaussian(gain: float = 1.0) -> Initializer:
    """Entries i.i.d. N(0, gain² / fan_in).

    For a square ``(n, n)`` matrix this gives ‖W h‖ ≈ gain·‖h‖ and, for large n, spectral radius
    ≈ gain (circular law) and ‖W‖₂ ≈ 2·gain.

    Example: ``rd.init.gaussian(1.0)(key, (128, 128))``.
    """
    return Fn(_gaussian, (), {"gain": check_nonnegative("gain", gain)})


def _normal32(key, shape):
    return jax.random.normal(key, shape, jnp.float32)


def _scale(x, dt):
    """A (maybe traced) number in dtype ``dt``: the draw is float32, the scaling is done in ``dt``.

    So with x64 on, a matrix is the float32 draw times the scale in float64: the same network
    as without x64 up to float32 rounding of the weights, and smooth (exactly differentiable)
    in the scale.
    """
    return jnp.asarray(x).astype(dt)


def _gaussian(static, hp, key, shape, dtype=None):
    fan_out, fan_in = _shape2(shape)
    dt = float_dtype(dtype)
    return _scale(hp["gain"] / np.sqrt(fan_in), dt) * _normal32(key, (fan_out, fan_in)).astype(dt)


def orthogonal(gain: float = 1.0) -> Initializer:
    """A (semi-)orthogonal matrix times ``gain`` (Haar-distributed, via QR with sign fix).

    Square: every singular value equals ``gain``. Example: ``rd.init.orthogonal()(key, (64, 64))``.
    """
    return Fn(_orthogonal, (), {"gain": check_nonnegative("gain", gain)})


def _orthogonal(static, hp, key, shape, dtype=None):
    Q = jax.nn.initializers.orthogonal(scale=1.0)(key, _shape2(shape), jnp.float32)
    dt = float_dtype(dtype)
    return _scale(hp["gain"], dt) * Q.astype(dt)


def identity(scale: float = 1.0) -> Initializer:
    """``scale`` times the identity (rectangular: ones on the main diagonal). The key is unused.

    With ``scale=1`` and ReLU this is the IRNN of Le, Jaitly & Hinton (2015).
    """
    return Fn(_identity, (), {"scale": check_nonnegative("scale", scale)})


def _identity(static, hp, key, shape, dtype=None):
    del key
    dt = float_dtype(dtype)
    return _scale(hp["scale"], dt) * jnp.eye(*_shape2(shape), dtype=dt)


def zeros(key, shape, dtype=None):
    """All zeros (an initialiser itself, not a factory)."""
    del key
    return jnp.zeros(tuple(shape), float_dtype(dtype))


def matrix_spectral_radius(W: jax.Array, squarings: int | None = None) -> jax.Array:
    """ρ(W) = max |λ_i(W)| of a square matrix, in pure JAX (jit, vmap, every backend).

    Gelfand's formula by repeated squaring in log space: with B_0 = W/‖W‖_F and
    B_{k+1} = B_k²/‖B_k²‖_F, log ‖W^(2^K)‖_F = Σ_k 2^(K-1-k)·log ‖B_k²‖_F + 2^K·log ‖W‖_F, and
    ρ = lim ‖W^m‖^(1/m). The constant in ‖W^m‖ ≈ C·ρ^m contributes C^(1/m) - 1 ≈ ln(C)/m, so
    K = 40 squarings (float32) or 64 (float64) put it below the rounding error. Nothing
    overflows (every B_k has unit norm). No eigen-solver is needed, which XLA lacks on some
    backends. Measured against ``numpy.linalg.eigvals``: relative error below 1e-6 in float32.

    Args:
      W: (n, n).
      squarings: K; default 40 (float32) or 64 (float64).

    Returns:
      A scalar of W's dtype. Example: ``rd.init.matrix_spectral_radius(2.0 * jnp.eye(3))`` is 2.0.
    """
    W = jnp.asarray(W)
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W: expected a square matrix, got shape {tuple(W.shape)}.")
    B = W.astype(jnp.promote_types(W.dtype, jnp.float32))
    if squarings is None:
        squarings = 64 if B.dtype == jnp.float64 else 40

    def norm_log(A):
        f = jnp.sqrt(jnp.sum(A * A))
        return A / jnp.where(f > 0, f, 1), jnp.log(f)

    B, log_w = norm_log(B)

    def body(k, carry):
        B, acc = carry
        B, lf = norm_log(B @ B)
        return B, acc + lf / 2.0 ** (k + 1)

    _, acc = jax.lax.fori_loop(0, squarings, body, (B, jnp.zeros((), B.dtype)))
    return jnp.exp(log_w + acc).astype(W.dtype)


def spectral_radius(radius: float, base: Initializer | None = None) -> Initializer:
    """Draw with ``base`` (default ``gaussian(1.0)``), then rescale so that ρ(W) = ``radius``.

    The usual echo-state recipe (Jaeger 2001). Square shapes only. Note ρ(W) < 1 does not by
    itself guarantee the echo-state property; σ_max(W) < 1 does.

    Example: ``rd.init.spectral_radius(0.9)(key, (200, 200))``.
    """
    radius = check_nonnegative("radius", radius)
    base = gaussian(1.0) if base is None else base
    return Fn(_spectral_radius, (), {"radius": radius, "base": base})


def _spectral_radius(static, hp, key, shape, dtype=None):
    n, m = _shape2(shape)
    if n != m:
        raise ValueError(f"shape: spectral-radius scaling needs a square matrix, got {(n, m)}.")
    dt = float_dtype(dtype)
    W = hp["base"](key, (n, m), dt)
    rho = matrix_spectral_radius(W)
    return W * jnp.where(rho > 0, _scale(hp["radius"], dt) / jnp.where(rho > 0, rho, 1), 0)


def sparse(k: int, gain: float = 1.0) -> Initializer:
    """``k`` non-zeros per row at random columns, values N(0, gain²/k) (Pascanu et al. 2013 code).

    Each row then has expected squared norm gain², as with ``gaussian(gain)``. Combine with
    :func:`spectral_radius` for the usual sparse reservoir. Example: ``rd.init.sparse(15)``.
    """
    k = check_positive_int("k", k)
    return Fn(_sparse, (k,), {"gain": check_nonnegative("gain", gain)})


def _sparse(static, hp, key, shape, dtype=None):
    (k,) = static
    n, m = _shape2(shape)
    if k > m:
        raise ValueError(f"k: expected at most fan_in = {m} non-zeros per row, got {k}.")
    k_pos, k_val = jax.random.split(key)
    # The k smallest of m uniform numbers per row pick k distinct columns uniformly.
    ranks = jnp.argsort(jax.random.uniform(k_pos, (n, m), jnp.float32), axis=1)
    mask = jnp.zeros((n, m), bool).at[jnp.arange(n)[:, None], ranks[:, :k]].set(True)
    dt = float_dtype(dtype)
    values = _scale(hp["gain"] / np.sqrt(k), dt) * _normal32(k_val, (n, m)).astype(dt)
    return jnp.where(mask, values, jnp.zeros((), dt))
