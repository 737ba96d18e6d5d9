"""Long horizons: Lyapunov spectra by QR, log-singular values, matrix-free top singular values.

A dense ∂h_T/∂h_1 leaves the float range once T·λ_max passes about 88.7 nats (float32) or
709.8 nats (float64). The functions here never form it:

:func:`lyapunov_spectrum`
    Benettin's / Shimada–Nagashima's QR method: an orthonormal n×k frame is pushed through the
    step Jacobians (the forward-tangent primitive) and re-orthonormalised by a reduced QR every
    ``reorth_every`` steps; the exponents are the time averages of log diag R (nats per step).
:func:`log_singular_values`
    log σ_i(∂h_T/∂h_1) at any horizon, exactly (not asymptotically): the QR chain with the full
    n×n frame gives ∂h_T/∂h_1 = Q_T·(R_T ⋯ R_2); the triangular product is carried as
    diag(e^s)·M with unit-norm rows of M (rescaled at every step, so it never overflows), and
    its singular values come from a one-sided Jacobi SVD that works on the logs of the scales.
:func:`top_singular_values`
    The k largest singular values and vectors by block subspace iteration on Jacobian-vector and
    vector-Jacobian products (rescaled at every step), with Rayleigh–Ritz; memory O(k·n + T·n).

Extras from a spectrum: :func:`kaplan_yorke_dimension`, :func:`entropy_rate`,
:func:`participation_ratio`. Closed forms to compare with live in :mod:`rnn_dynamics.theory`
(mean field, Newman's Gaussian products, linear cells).

Index convention as everywhere (:mod:`rnn_dynamics.rollout`): the state passed is h_1, ``xs``
holds x_2..x_T, so there are T-1 steps. Autonomous runs need no input array: pass ``xs`` with
zero columns, shape (T-1, 0), or ``steps=T`` instead of ``xs``; the cell then gets x_t = 0.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._cell import check_cell
from ._checks import (
    NumericalWarning,
    _as_float_array,
    as_inputs,
    as_state,
    check_positive_int,
    is_traced,
)
from ._compile import cell_jit
from ._tangent import push

__all__ = [
    "LyapunovSpectrum",
    "lyapunov_spectrum",
    "kaplan_yorke_dimension",
    "entropy_rate",
    "participation_ratio",
    "log_singular_values",
    "TopSingular",
    "top_singular_values",
]


# --------------------------------------------------------------------------------------------
# Input handling shared by the three analyses


def _drive(cell, xs, steps):
    """``(xs or None, number of steps T-1)``; None means an autonomous run (x_t = 0)."""
    if steps is not None:
        if xs is not None:
            raise ValueError(
                "steps: pass either xs (the inputs x_2..x_T) or steps=T (an autonomous run with "
                "x_t = 0), not both."
            )
        T = check_positive_int("steps", steps)
        if T < 2:
            raise ValueError(f"steps: expected T >= 2 (at least one step), got {T}.")
        return None, T - 1
    if xs is None:
        raise TypeError(
            "xs: expected the inputs x_2..x_T, shape (T-1, input_size); for an autonomous run "
            "pass steps=T or an array of shape (T-1, 0)."
        )
    shape = getattr(xs, "shape", None)
    if shape is not None and len(shape) == 2 and shape[1] == 0 and cell.input_size != 0:
        if shape[0] == 0:
            raise ValueError("xs: got zero steps (shape (0, 0)); pass at least one step.")
        return None, int(shape[0])
    xs = as_inputs(cell, xs)
    return xs, int(xs.shape[0])


def _scan_inputs(cell, xs, length, dtype, body, carry, reverse=False, extra=None):
    """``lax.scan`` over x_t (zeros when ``xs`` is None) and optionally per-step ``extra``."""
    m = cell.input_size
    if xs is None:
        zero = jnp.zeros((m,), dtype)
        if extra is None:
            return jax.lax.scan(lambda c, _: body(c, zero), carry, None, length=length, reverse=reverse)
        return jax.lax.scan(lambda c, e: body(c, zero, e), carry, extra, length=length, reverse=reverse)
    if extra is None:
        return jax.lax.scan(body, carry, xs, length=length, reverse=reverse)
    return jax.lax.scan(lambda c, xe: body(c, *xe), carry, (xs, extra), length=length, reverse=reverse)


def _check_k(k, n, name="k"):
    if k is None:
        return n
    k = check_positive_int(name, k)
    if k > n:
        raise ValueError(f"{name}: expected at most state_size = {n}, got {k}.")
    return k


def _nonneg_int(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected a non-negative int, got {v!r} ({type(v).__name__}).")
    if v < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {v}.")
    return int(v)


def _default_frame(n, k, dtype):
    """A fixed random orthonormal n×k frame (the same on every call): almost surely not inside
    an invariant subspace of the dynamics, as the first columns of the identity can be."""
    A = jax.random.normal(jax.random.key(0), (n, k), dtype)
    return jnp.linalg.qr(A)[0]


def _qr_pos(Y):
    """Reduced QR with diag R > 0: ``(Q, diag R)``. The sign fix is a constant ±1 per column,
    so reverse-mode gradients flow through ``jnp.linalg.qr`` unchanged."""
    Q, R = jnp.linalg.qr(Y)
    d = jnp.diagonal(R)
    sgn = jnp.where(d < 0, -1, 1).astype(Y.dtype)
    return Q * sgn, R * sgn[:, None]


def _warn_nonfinite(values, what, *, allow_neg_inf=True, stacklevel=3):
    if is_traced(values) or values is None:
        return
    v = np.asarray(values)
    bad = np.isnan(v) | (v == np.inf) | ((v == -np.inf) & (not allow_neg_inf))
    if np.any(bad):
        warnings.warn(
            f"{what} has {int(bad.sum())} non-finite entries (NaN or +inf). The trajectory itself "
            f"left the float range (an unbounded cell such as a linear or ReLU RNN with gain > 1 "
            f"diverges: its state, not just its tangents, overflows) or the cell's step produced "
            f"NaN. Shorten the horizon, lower the gain, or use a bounded activation. (An exponent "
            f"of -inf is a legitimate result: a direction killed exactly, e.g. by ReLU units that "
            f"are all off.)",
            NumericalWarning,
            stacklevel=stacklevel,
        )


# --------------------------------------------------------------------------------------------
# Lyapunov spectrum


class LyapunovSpectrum(NamedTuple):
    """Result of :func:`lyapunov_spectrum`.

    ``exponents`` (k,) in nats per step, descending in expectation (the QR method orders them).
    With ``history=True`` also, one row per re-orthonormalisation after the warm-up (B rows):
    ``running`` (B, k) the running estimates, ``local`` (B, k) the local exponents of that block
    (log diag R / block length), ``steps`` (B,) the measured steps so far, and ``frame`` (n, k)
    the final orthonormal frame (the leading backward Lyapunov vectors at h_T). Otherwise those
    fields are None.
    """

    exponents: jax.Array
    running: jax.Array | None = None
    local: jax.Array | None = None
    steps: jax.Array | None = None
    frame: jax.Array | None = None


def _kahan(S, C, v):
    """Compensated sum S + v (compensation C); a -inf term (a direction killed exactly)
    makes S = -inf with C = 0 instead of NaN."""
    y = v - C
    t = S + y
    return t, jnp.where(jnp.isfinite(t), (t - S) - y, 0)


def _qr_segment(cell, params, h, Q, xs, length, r, acc, history):
    """Push the frame ``length`` steps with a QR every ``r`` steps (and after the last step).

    ``acc`` = (S, C, t): compensated sum of log diag R and measured steps so far.
    Returns (h, Q, acc) and, with ``history``, per-block (running, local, steps).
    """
    dt = h.dtype
    nb, rem = divmod(length, r)

    def block(h, Q, xb, size):
        def one(c, x):
            return push(cell, params, c[0], x, c[1]), None

        (h, Y), _ = _scan_inputs(cell, xb, size, dt, one, (h, Q))
        Q, R = _qr_pos(Y)
        return h, Q, jnp.log(jnp.diagonal(R))

    def record(acc, logs, size):
        S, C, t = acc
        S, C = _kahan(S, C, logs)
        t = t + size
        out = (S / t, logs / size, t) if history else None
        return (S, C, t), out

    def body(carry, xb):
        h, Q, acc = carry
        h, Q, logs = block(h, Q, xb, r)
        acc, out = record(acc, logs, r)
        return (h, Q, acc), out

    outs = None
    if nb:
        xb = None if xs is None else xs[: nb * r].reshape(nb, r, xs.shape[1])
        if xb is None:
            (h, Q, acc), outs = jax.lax.scan(lambda c, _: body(c, None), (h, Q, acc), None, length=nb)
        else:
            (h, Q, acc), outs = jax.lax.scan(body, (h, Q, acc), xb)
    if rem:
        tail = None if xs is None else xs[nb * r :]
        h, Q, logs = block(h, Q, tail, rem)
        acc, out = record(acc, logs, rem)
        if history:
            out = jax.tree_util.tree_map(lambda a: a[None], out)
            outs = out if outs is None else jax.tree_util.tree_map(
                lambda a, b: jnp.concatenate([a, b]), outs, out
            )
    return h, Q, acc, outs


def _lyapunov_impl(cell, params, h1, xs, frame, *, length, warmup, r, history):
    dt = h1.dtype
    k = frame.shape[1]
    Q = _qr_pos(frame)[0]
    zero = (jnp.zeros((k,), dt), jnp.zeros((k,), dt), jnp.zeros((), dt))
    h = h1
    if warmup:
        wx = None if xs is None else xs[:warmup]
        h, Q, _, _ = _qr_segment(cell, params, h, Q, wx, warmup, r, zero, False)
    mx = None if xs is None else xs[warmup:]
    h, Q, (S, C, t), outs = _qr_segment(cell, params, h, Q, mx, length - warmup, r, zero, history)
    exps = (S - C) / t
    if not history:
        return LyapunovSpectrum(exps)
    running, local, steps = outs
    return LyapunovSpectrum(exps, running, local, steps.astype(jnp.int32), Q)


_lyapunov_jit = cell_jit(_lyapunov_impl, static_argnames=("length", "warmup", "r", "history"))


def lyapunov_spectrum(
    cell,
    params,
    h1,
    xs=None,
    k: int | None = None,
    *,
    steps: int | None = None,
    reorth_every: int = 1,
    warmup: int = 0,
    history: bool = False,
    frame=None,
) -> LyapunovSpectrum:
    """The k leading Lyapunov exponents of the input-driven trajectory, in nats per step.

    An orthonormal n×k frame is pushed through the step Jacobians J_t = ∂h_t/∂h_{t-1} (the
    library's forward-tangent primitive, no n×n Jacobian is formed) inside one ``lax.scan``,
    re-orthonormalised by a reduced QR (sign-fixed, diag R > 0) every ``reorth_every`` steps,
    and λ_i = Σ log R_ii / (steps measured). The sum is compensated (Kahan) in the working
    dtype: float32 by default, float64 when x64 is on (the dtype of ``h1``). Cost per step:
    one step JVP on k columns (2·n²·k flops for a vanilla cell) plus a QR every
    ``reorth_every`` steps (≈ 4·n·k² flops). Memory O(n·k), flat in T (without ``history``).

    Args:
      cell, params: the cell and its params.
      h1: (state_size,) the initial state h_1.
      xs: (T-1, input_size) inputs x_2..x_T; or shape (T-1, 0), or None with ``steps=T``,
        for an autonomous run (x_t = 0).
      k: how many leading exponents (default all, state_size).
      steps: T for an autonomous run (instead of ``xs``).
      reorth_every: steps between QRs. Larger is faster; exact as long as the frame's growth
        over that many steps stays within the float range and its columns stay distinguishable
        (e.g. reorth_every·(λ_1 − λ_k) well below ~15 nats in float32, ~35 in float64).
      warmup: steps discarded first (transient); they still advance the state and the frame.
        Must be smaller than T-1.
      history: also return the convergence history and the final frame (see
        :class:`LyapunovSpectrum`); costs O(T/reorth_every · k) memory.
      frame: optional (state_size, k) initial frame (orthonormalised here); default a fixed
        random orthonormal frame, the same on every call.

    Resolution: each QR resolves directions down to about ε·‖J_t‖ (ε the dtype's epsilon), so
    exponents below roughly ln ε + ln‖J_t‖ per step (about −12 to −16 in float32 for the
    networks tested, −33 to −37 in float64) are floors, not measurements (e.g. saturated tanh
    units at g = 3). Use float64 for the bottom of a spectrum.

    Returns:
      :class:`LyapunovSpectrum` with ``exponents`` (k,). Warns ``NumericalWarning`` if a
      concrete result holds NaN or +inf (the trajectory itself diverged); -inf is a legitimate
      exponent (a direction killed exactly).

    Composes with ``jax.jit``, ``jax.vmap`` (over params for seeds, or over a gain with the
    cell built inside from the traced gain) and ``jax.grad`` (reverse mode through the QRs;
    memory O(T·n·k) then, so keep such horizons short).

    Example::

        cell = rd.cells.vanilla(1, 64, "tanh", gain=2.0)
        p = cell.init(jax.random.key(0))
        out = rd.lyapunov_spectrum(cell, p, 0.1 * jnp.ones(64), steps=5001, warmup=500)
        out.exponents[:3]     # [0.0092, 0.0010, -0.0052] (float32, measured): weakly chaotic
    """
    check_cell(cell)
    h1 = as_state(cell, h1)
    xs, length = _drive(cell, xs, steps)
    n = cell.state_size
    r = check_positive_int("reorth_every", reorth_every)
    warmup = _nonneg_int("warmup", warmup)
    if warmup >= length:
        raise ValueError(
            f"warmup: expected fewer than T-1 = {length} steps so that some are measured, got "
            f"{warmup}. Lengthen the run or shorten the warm-up."
        )
    if frame is None:
        k = _check_k(k, n)
        frame = _default_frame(n, k, h1.dtype)
    else:
        frame = _as_float_array("frame", frame).astype(h1.dtype)
        if frame.ndim != 2 or frame.shape[0] != n or (k is not None and frame.shape[1] != k):
            want = f"({n}, {k if k is not None else 'k'})"
            raise ValueError(f"frame: expected shape {want}, got {tuple(frame.shape)}.")
        _check_k(frame.shape[1], n, "frame.shape[1]")
    if not isinstance(history, bool):
        raise TypeError(f"history: expected a bool, got {history!r}.")
    out = _lyapunov_jit(cell, params, h1, xs, frame, length=length, warmup=warmup, r=r,
                        history=history)
    _warn_nonfinite(out.exponents, "lyapunov_spectrum(...).exponents")
    return out


# --------------------------------------------------------------------------------------------
# Quantities derived from a spectrum


def _exponents_array(exponents, name="exponents"):
    e = _as_float_array(name, exponents)
    if e.ndim < 1 or e.shape[-1] == 0:
        raise ValueError(f"{name}: expected an array (..., k) with k >= 1, got shape {tuple(e.shape)}.")
    return e


def kaplan_yorke_dimension(exponents) -> jax.Array:
    """Kaplan–Yorke (Lyapunov) dimension D = j + (λ_1 + … + λ_j) / |λ_{j+1}|.

    j is the largest index with λ_1 + … + λ_j ≥ 0 (exponents sorted descending here first).
    D = 0 when λ_1 < 0 (a stable fixed point or orbit); D = k when all partial sums are
    non-negative (then the k exponents given do not determine it: pass more of them).

    Args:
      exponents: (..., k) Lyapunov exponents, any leading batch dims.

    Returns:
      (...) the dimension.

    Example: ``rd.kaplan_yorke_dimension(jnp.array([0.5, -0.2, -1.0]))`` is 2.3.
    """
    e = -jnp.sort(-_exponents_array(exponents), axis=-1)
    k = e.shape[-1]
    cs = jnp.cumsum(e, axis=-1)
    j = jnp.sum(cs >= 0, axis=-1)  # partial sums decrease once negative: a prefix count
    Sj = jnp.take_along_axis(cs, jnp.clip(j - 1, 0, k - 1)[..., None], axis=-1)[..., 0]
    nxt = jnp.take_along_axis(e, jnp.clip(j, 0, k - 1)[..., None], axis=-1)[..., 0]
    D = j + Sj / jnp.abs(nxt)
    return jnp.where(j == 0, 0.0, jnp.where(j == k, float(k), D)).astype(e.dtype)


def entropy_rate(exponents) -> jax.Array:
    """Sum of the positive exponents (Pesin's bound on the Kolmogorov–Sinai entropy), nats/step.

    Args: exponents (..., k). Returns (...). Example:
    ``rd.entropy_rate(jnp.array([0.5, 0.1, -1.0]))`` is 0.6.
    """
    e = _exponents_array(exponents)
    return jnp.sum(jnp.where(e > 0, e, 0), axis=-1)


def participation_ratio(vectors, axis: int | None = None) -> jax.Array:
    """How many units a vector spreads over: PR(v) = (Σ_i v_i²)² / Σ_i v_i⁴, in [1, n].

    PR = 1 for a vector on one unit, n for a vector spread evenly over all n units (a random
    unit vector gives about n/3). For a Lyapunov frame (n, k) it is computed per column (one
    number per Lyapunov vector), i.e. over ``axis=-2`` for arrays of rank ≥ 2 and over the only
    axis for a single vector.

    Args:
      vectors: (n,) a vector or (..., n, k) vectors as columns (e.g. ``LyapunovSpectrum.frame``).
      axis: the unit axis, to override the default.

    Returns:
      () for a vector, (..., k) for columns.

    Example: ``rd.participation_ratio(jnp.array([1.0, 1.0, 0.0, 0.0]))`` is 2.0.
    """
    v = _as_float_array("vectors", vectors)
    if v.ndim == 0:
        raise ValueError("vectors: expected a vector (n,) or columns (..., n, k), got a scalar.")
    if axis is None:
        axis = -1 if v.ndim == 1 else -2
    v2 = v * v
    return jnp.sum(v2, axis=axis) ** 2 / jnp.sum(v2 * v2, axis=axis)


# --------------------------------------------------------------------------------------------
# Log singular values of ∂h_T/∂h_1 at any horizon


def _rescaled_triangular_update(R, s, M):
    """``(s', M')`` with diag(e^s')·M' = R·diag(e^s)·M, rows of M' of unit norm.

    Row i of the product is Σ_k R_ik e^{s_k} M_k; it is computed as e^{c_i} Σ_k F_ik M_k with
    c_i = max_k (log|R_ik| + s_k), so |F_ik| ≤ 1: nothing overflows whatever the spread of s.
    """
    A = jnp.log(jnp.abs(R)) + s[None, :]
    c = jnp.max(A, axis=1)
    c = jnp.where(jnp.isfinite(c), c, 0)
    F = jnp.sign(R) * jnp.exp(A - c[:, None])
    N = F @ M
    rn = jnp.sqrt(jnp.sum(N * N, axis=1))
    s = c + jnp.log(rn)
    M = N / jnp.where(rn > 0, rn, 1)[:, None]
    return s, M


def _round_robin(n):
    """Static pairing schedule: n-1 rounds of n/2 disjoint pairs covering all pairs (n even)."""
    idx = list(range(n))
    rounds = []
    for _ in range(n - 1):
        rounds.append([(idx[i], idx[n - 1 - i]) for i in range(n // 2)])
        idx = [idx[0], idx[-1]] + idx[1:-1]
    a = np.array([[p for p, _ in r] for r in rounds], np.int32)
    b = np.array([[q for _, q in r] for r in rounds], np.int32)
    return a, b


def _scaled_jacobi_logsv(U, s, *, max_sweeps=40, vectors=False):
    """log singular values of A = U·diag(e^s) (columns u_j scaled by e^{s_j}), descending.

    With ``vectors=True`` returns ``(log σ, Ũ, Z)`` with A·Z = Ũ·diag(σ) (Z orthogonal, Ũ with
    orthonormal columns), i.e. Aᵀ's left singular vectors Z and right ones Ũ.

    One-sided Jacobi (Hestenes) on the scaled columns, with every rotation computed from the
    unscaled columns and the scale differences δ = s_a − s_b, never from e^s itself, so the
    columns may span any range. Rotations run in parallel over disjoint pairs (round robin).
    Stops when every pair's cosine is below n·eps (or after ``max_sweeps`` sweeps).
    """
    n = U.shape[1]
    dt = U.dtype
    if n % 2:
        U = jnp.concatenate([U, jnp.zeros((U.shape[0], 1), dt)], axis=1)
        s = jnp.concatenate([s, jnp.full((1,), -jnp.inf, dt)])
    np_ = U.shape[1]
    Z = jnp.eye(np_, dtype=dt)
    a_idx, b_idx = _round_robin(np_)
    tol = np_ * jnp.finfo(dt).eps

    def rotate(U, s, Z, ia, ib):
        uj, uk, sj, sk = U[:, ia], U[:, ib], s[ia], s[ib]
        zj, zk = Z[:, ia], Z[:, ib]
        big = sj >= sk
        ua, ub = jnp.where(big, uj, uk), jnp.where(big, uk, uj)
        sa, sb = jnp.where(big, sj, sk), jnp.where(big, sk, sj)
        delta = sa - sb
        delta = jnp.where(jnp.isnan(delta), jnp.inf, delta)  # both columns zero
        alpha = jnp.sum(ua * ua, 0)
        beta = jnp.sum(ub * ub, 0)
        gamma = jnp.sum(ua * ub, 0)
        em = jnp.exp(-delta)  # e^{-δ} ≤ 1
        D = em * em * beta - alpha
        den = jnp.abs(D) + jnp.sqrt(D * D + 4 * gamma * gamma * em * em)
        sgn = jnp.where(D >= 0, 1, -1).astype(dt) * jnp.sign(gamma)
        tau = jnp.where(den > 0, sgn * 2 * jnp.abs(gamma) / jnp.where(den > 0, den, 1), 0)  # t·e^δ
        t = tau * em
        c = 1 / jnp.sqrt(1 + t * t)
        cos = jnp.abs(gamma) / jnp.sqrt(jnp.where(alpha * beta > 0, alpha * beta, 1))
        ua2 = c * ua - c * t * em * ub
        ub2 = c * tau * ua + c * ub
        na = jnp.sqrt(jnp.sum(ua2 * ua2, 0))
        nb = jnp.sqrt(jnp.sum(ub2 * ub2, 0))
        sa2 = sa + jnp.log(na)
        sb2 = sb + jnp.log(nb)
        ua2 = ua2 / jnp.where(na > 0, na, 1)
        ub2 = ub2 / jnp.where(nb > 0, nb, 1)
        uj2, uk2 = jnp.where(big, ua2, ub2), jnp.where(big, ub2, ua2)
        sj2, sk2 = jnp.where(big, sa2, sb2), jnp.where(big, sb2, sa2)
        U = U.at[:, ia].set(uj2).at[:, ib].set(uk2)
        s = s.at[ia].set(sj2).at[ib].set(sk2)
        if vectors:  # the same plane rotation, unscaled: (c, -c·t; c·t, c) on (a, b)
            za, zb = jnp.where(big, zj, zk), jnp.where(big, zk, zj)
            za2, zb2 = c * za - c * t * zb, c * t * za + c * zb
            Z = Z.at[:, ia].set(jnp.where(big, za2, zb2)).at[:, ib].set(jnp.where(big, zb2, za2))
        return U, s, Z, jnp.max(jnp.where(jnp.isfinite(sa) & jnp.isfinite(sb), cos, 0))

    def sweep(state):
        U, s, Z, _, it = state

        def rnd(c, ab):
            U, s, Z, off = c
            U, s, Z, o = rotate(U, s, Z, ab[0], ab[1])
            return (U, s, Z, jnp.maximum(off, o)), None

        (U, s, Z, off), _ = jax.lax.scan(rnd, (U, s, Z, jnp.zeros((), dt)), (a_idx, b_idx))
        return U, s, Z, off, it + 1

    def cond(state):
        return (state[3] > tol) & (state[4] < max_sweeps)

    # normalise the columns first, moving their norms into s
    nrm = jnp.sqrt(jnp.sum(U * U, 0))
    s = s + jnp.log(nrm)
    U = U / jnp.where(nrm > 0, nrm, 1)
    U, s, Z, _, _ = jax.lax.while_loop(cond, sweep, (U, s, Z, jnp.asarray(jnp.inf, dt), 0))
    if not vectors:
        return -jnp.sort(-s)[:n]
    order = jnp.argsort(-s)[:n]
    return s[order], U[:, order], Z[:n, order]


def _lsv_impl(cell, params, h1, xs, *, length):
    n = h1.shape[0]
    dt = h1.dtype
    eye = jnp.eye(n, dtype=dt)

    def body(c, x):
        h, Q, s, M = c
        h, Y = push(cell, params, h, x, Q)
        Q, R = _qr_pos(Y)
        s, M = _rescaled_triangular_update(R, s, M)
        return (h, Q, s, M), None

    (_, _, s, M), _ = _scan_inputs(cell, xs, length, dt, body, (h1, eye, jnp.zeros((n,), dt), eye))
    # ∂h_T/∂h_1 = Q·diag(e^s)·M; σ(diag(e^s)·M) = σ(Mᵀ·diag(e^s)): columns of Mᵀ scaled by e^s
    return _scaled_jacobi_logsv(M.T, s)


_lsv_jit = cell_jit(_lsv_impl, static_argnames=("length",))


def log_singular_values(cell, params, h1, xs=None, k: int | None = None, *, steps: int | None = None):
    """log σ_i(∂h_T/∂h_1), descending, exact at any horizon (no overflow, no underflow).

    The full n×n frame goes through the QR chain J_t Q_{t-1} = Q_t R_t, so
    ∂h_T/∂h_1 = Q_T·R_T ⋯ R_2 and the singular values are those of the triangular product.
    That product is carried as diag(e^s)·M with M's rows of unit norm, rescaled at every step
    with per-row maxima (so |entries| ≤ 1 before each rescale); at the end a one-sided Jacobi
    SVD works on the columns of Mᵀ with scales e^s kept as logs. The result equals
    ``log(rd.singular_values(rd.jacobian(...)))`` where the dense matrix is representable and
    its SVD accurate (tests: relative 1e-4 in float64), and stays finite where the dense
    matrix overflows (T = 100,000 at g = 1.5). ``lyapunov_spectrum`` gives the long-T limit
    log σ_i / (T-1) → λ_i; this gives the finite-T values exactly.

    Cost: O(n³) per step (push, QR and a triangular product) plus O(n³) per Jacobi sweep
    (a few sweeps). Memory O(n²), flat in T. Not reverse-differentiable (the Jacobi loop is a
    ``while_loop``); use :func:`lyapunov_spectrum` for gradients.

    Args:
      cell, params, h1: as :func:`rnn_dynamics.jacobian`.
      xs: (T-1, input_size) inputs x_2..x_T, or (T-1, 0) / None with ``steps=T`` (autonomous).
      k: return only the k largest (all are computed anyway).
      steps: T for an autonomous run.

    Returns:
      (k,) natural logs of the singular values, descending (-inf for an exactly singular
      direction).

    Example::

        cell = rd.cells.vanilla(1, 64, "tanh", gain=3.0, bias=False)
        p = cell.init(jax.random.key(0)); h1 = jax.random.normal(jax.random.key(1), (64,))
        ls = rd.log_singular_values(cell, p, h1, steps=3000)
        ls[:2]                # [773.6, 697.4] (float32, measured); ls[0] / 2999 = 0.258 ≈ λ_max
        # the dense rd.jacobian(...) of this network is inf even in float64 (e^773 > e^709.8)
    """
    check_cell(cell)
    h1 = as_state(cell, h1)
    xs, length = _drive(cell, xs, steps)
    k = _check_k(k, cell.state_size)
    out = _lsv_jit(cell, params, h1, xs, length=length)[:k]
    _warn_nonfinite(out, "log_singular_values(...)")
    return out


# --------------------------------------------------------------------------------------------
# Matrix-free top singular values


class TopSingular(NamedTuple):
    """Result of :func:`top_singular_values`: ``values`` (k,) σ_1 ≥ … ≥ σ_k (inf where beyond
    the float range), ``log_values`` (k,) their natural logs (always finite), ``left`` (n, k)
    and ``right`` (n, k) the singular vectors (∂h_T/∂h_1 · right_i = σ_i · left_i),
    ``iterations`` () the subspace iterations run."""

    values: jax.Array
    log_values: jax.Array
    left: jax.Array
    right: jax.Array
    iterations: jax.Array


def _top_impl(cell, params, h1, xs, key, *, length, k, block, max_iters, tol):
    n = h1.shape[0]
    dt = h1.dtype

    def step_fn(h, x):
        return cell.step(params, h, x)

    # trajectory h_1..h_{T-1}: the states each step Jacobian is taken at (T·n memory)
    def roll(h, x):
        return step_fn(h, x), h

    _, hprev = _scan_inputs(cell, xs, length, dt, roll, h1)

    def forward(V):
        """J·V = Q·diag(e^s)·M with a QR at every step (the span of J·V, and its triangular
        factor kept in rescaled form: columns far below the first are not swamped)."""
        eye = jnp.eye(V.shape[1], dtype=dt)

        def body(c, x, h):
            Q, s, M = c
            _, Y = push(cell, params, h, x, Q)
            Q, R = _qr_pos(Y)
            s, M = _rescaled_triangular_update(R, s, M)
            return (Q, s, M), None

        (Q, s, M), _ = _scan_inputs(cell, xs, length, dt, body, (V, jnp.zeros((V.shape[1],), dt), eye),
                                    extra=hprev)
        # σ(J·V) = σ(diag(e^s)·M); Aᵀ = diag(e^s)·M with A = Mᵀ·diag(e^s): A·Z = Ũ·Σ
        ls, Ut, Z = _scaled_jacobi_logsv(M.T, s, vectors=True)
        return ls, Q @ Z, Ut  # J·(V·Ut) = (Q·Z)·Σ

    def backward(U):  # an orthonormal basis of span((∂h_T/∂h_1)ᵀ·U), QR at every step
        # The block is carried as rows (b, n): each step is then Uᵀ·W, a plain row-major
        # product, where the column layout made XLA:CPU contract W over its first axis (a
        # transposed dot, 9x slower at n = 4096 on a 2-core CPU).
        def body(c, x, h):
            _, vjp = jax.vjp(lambda h_: step_fn(h_, x), h)
            Z = jax.lax.optimization_barrier(jax.vmap(lambda u: vjp(u)[0])(c))
            return _qr_pos(Z.T)[0].T, None

        Z, _ = _scan_inputs(cell, xs, length, dt, body, U.T, reverse=True, extra=hprev)
        return Z.T

    V0 = jnp.linalg.qr(jax.random.normal(key, (n, block), dt))[0]
    ls, left, Ut = forward(V0)

    def cond(st):
        return (st[4] > tol) & (st[5] < max_iters)

    def body(st):
        V, ls, left, Ut, _, it = st
        V = backward(left)
        ls2, left2, Ut2 = forward(V)
        change = jnp.max(jnp.abs(jnp.expm1(ls2[:k] - ls[:k])))
        return V, ls2, left2, Ut2, change, it + 1

    V, ls, left, Ut, _, it = jax.lax.while_loop(
        cond, body, (V0, ls, left, Ut, jnp.asarray(jnp.inf, dt), jnp.asarray(0))
    )
    right = V @ Ut
    return TopSingular(jnp.exp(ls[:k]), ls[:k], left[:, :k], right[:, :k], it)


_top_jit = cell_jit(_top_impl, static_argnames=("length", "k", "block", "max_iters", "tol"))


def top_singular_values(
    cell,
    params,
    h1,
    xs=None,
    k: int = 1,
    *,
    steps: int | None = None,
    oversample: int | None = None,
    iters: int = 50,
    tol: float | None = None,
    key=None,
) -> TopSingular:
    """The k largest singular values and vectors of ∂h_T/∂h_1, without forming it.

    Block subspace iteration on b = k + ``oversample`` vectors: V ← orth(Jᵀ·U), U from the SVD
    of J·V (Rayleigh–Ritz on the right subspace), with J·V from Jacobian-vector products pushed
    forward through the steps and Jᵀ·U from vector-Jacobian products run backward along the
    stored trajectory. Both passes re-orthonormalise the block by QR at every step, and J·V's
    b×b triangular factor is kept as in :func:`log_singular_values` (rescaled, logs apart), so
    σ beyond the float range come back as finite ``log_values`` and σ_i far below σ_1 are not
    swamped by rounding. Memory O(b·n + T·n) (the trajectory); cost per iteration two passes
    over T of b-column step JVPs/VJPs and QRs (4·T·n²·b + 8·T·n·b² flops for a vanilla cell).

    Iteration count rule: one iteration multiplies the error of σ_i² by about
    (σ_{b+1}/σ_i)²; it stops when every Ritz value changed by a relative amount below ``tol``
    (default 1e-4 in float32, whose Ritz values jitter near 1e-6 from rounding, and
    1e-10 in float64) or after ``iters`` iterations (reported in
    ``iterations``). Long horizons separate the singular values exponentially, so a few
    iterations suffice there; at short horizons with close σ_k, σ_{b+1}, raise
    ``oversample``. Tests: equal to the dense SVD within relative 1e-4 in float64.

    Args:
      cell, params, h1: as :func:`rnn_dynamics.jacobian`.
      xs: (T-1, input_size) inputs, or (T-1, 0) / None with ``steps=T`` (autonomous).
      k: how many singular triplets.
      steps: T for an autonomous run.
      oversample: extra block vectors (default min(k, n − k); more is faster per accuracy).
      iters: maximum subspace iterations.
      tol: relative change of the Ritz values that stops the iteration.
      key: PRNG key of the starting block (default ``jax.random.key(0)``).

    Returns:
      :class:`TopSingular`.

    Example::

        cell = rd.cells.vanilla(1, 4096, "tanh", gain=1.0); p = cell.init(jax.random.key(0))
        top = rd.top_singular_values(cell, p, jnp.zeros(4096), jnp.ones((999, 1)), k=8)
        top.log_values      # (8,) log σ_1..σ_8 of the 4096×4096 ∂h_T/∂h_1
    """
    check_cell(cell)
    h1 = as_state(cell, h1)
    xs, length = _drive(cell, xs, steps)
    n = cell.state_size
    k = _check_k(k, n)
    if oversample is None:
        oversample = min(k, n - k)
    oversample = _nonneg_int("oversample", oversample)
    block = min(n, k + oversample)
    iters = _nonneg_int("iters", iters)
    if tol is None:
        tol = 1e-10 if h1.dtype == jnp.float64 else 1e-4
    tol = float(tol)
    if not tol > 0:
        raise ValueError(f"tol: expected a positive number, got {tol!r}.")
    key = jax.random.key(0) if key is None else key
    out = _top_jit(cell, params, h1, xs, key, length=length, k=k, block=block, max_iters=iters,
                   tol=tol)
    _warn_nonfinite(out.log_values, "top_singular_values(...).log_values")
    if not is_traced(out.values) and not np.all(np.isfinite(np.asarray(out.values))):
        if np.all(np.isfinite(np.asarray(out.log_values))):
            warnings.warn(
                "top_singular_values: some σ_i left the float range (values holds inf or 0); "
                "use .log_values, which are finite.",
                NumericalWarning,
                stacklevel=2,
            )
    return out
