"""Fixed points and slow points of a cell under a constant input, and their linearisation.

A fixed point of the map F(h) = cell.step(params, h, x) for a constant input x is a state with
F(h*) = h*. Following Sussillo & Barak (2013, "Opening the black box: low-dimensional dynamics
in high-dimensional recurrent neural networks"), every candidate state is moved downhill on the
speed

    q(h) = ½‖F(h) − h‖²,

which is zero exactly at fixed points (stable, unstable or saddles alike) and small at slow
points. :func:`minimize_speed` does the numerical part, all candidates at once: Adam
(``optax.adam``) on q for ``steps`` steps inside one ``lax.scan``, vmapped over candidates,
then Newton-type polishing: with A = ∂F/∂h − I (``jax.jacfwd``) and r = F(h) − h, the
Levenberg–Marquardt step d = −(AᵀA + μI)⁻¹Aᵀr for a tiny μ (μ = s·clip(‖r‖², ε, 1e-6), s =
tr(AᵀA)/n, ε the machine epsilon: μ → 0 as r → 0, so near a regular zero this is the Newton
step −A⁻¹r and converges quadratically) and for a damped one (μ = 1e-2·s), both solved by
Cholesky; the step that lowers q more is taken, and a step that lowers q not at all
is refused. It is a pure function of arrays: the user's jit and vmap apply.

:func:`fixed_points` adds the bookkeeping on the host: it drops the candidates that did not
converge, the outliers and the duplicates (and says which candidate went for which reason), and
linearises the map at each point found: the eigenvalues of ∂F/∂h*, computed with numpy
(``jnp.linalg.eig`` runs on CPU only, so the host does it for every backend), and a stability
class from the number of eigenvalues outside the unit circle. Its output size depends on the
data, so it is not itself jit-able; its compiled core is.

Recipe for candidates: states the network visits. :func:`fixed_point_candidates` runs the cell
from random initial states under the constant input, takes each trajectory's state at a random
time and adds a little Gaussian noise (so unstable points and saddles, which trajectories only
pass by, are also approached). Add states from rollouts on your own inputs where you have them.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._cell import check_cell
from ._checks import check_nonnegative, check_positive_int, float_dtype
from ._compile import cell_jit

__all__ = [
    "FixedPoints",
    "fixed_points",
    "fixed_point_speed",
    "minimize_speed",
    "fixed_point_candidates",
]

#: |λ| above 1 + this counts as an unstable direction.
UNSTABLE_MARGIN = 1e-6

REASONS = ("kept", "slow", "not converged", "outlier", "duplicate")


class FixedPoints(NamedTuple):
    """What :func:`fixed_points` found (numpy arrays; k points in a state of size n).

    Fields:
      points: (k, n) the fixed points (and slow points, if kept), lowest q first.
      q: (k,) the speed ½‖F(h) − h‖² at each.
      eigenvalues: (k, n) complex eigenvalues of ∂F/∂h at each point, by decreasing modulus.
      kind: (k,) strings: ``"stable"`` (no |λ| > 1), ``"unstable"`` (all |λ| > 1) or
        ``"saddle"`` (some), with ``|λ| > 1 + 1e-6`` counting as outside the unit circle.
      slow: (k,) bool, True for a slow point (q above ``tol``, kept with ``keep_slow=True``).
      summary: dict with ``candidates``, ``converged`` (q < tol after polishing), ``unique``
        (points returned) and ``dropped``, a dict reason -> count for ``"not converged"``,
        ``"outlier"`` and ``"duplicate"``.
      candidate_q: (C,) the final q of every candidate.
      candidate_status: (C,) strings, what became of each candidate: ``"kept"``, ``"slow"``,
        ``"not converged"``, ``"outlier"`` or ``"duplicate"``.
      right_vectors, left_vectors: (k, n, n) complex eigenvectors (column i belongs to
        eigenvalue i; left ones satisfy vᴴ J = λ vᴴ), or None unless ``eigenvectors=True``.
      jacobians: (k, n, n) ∂F/∂h at each point.
    """

    points: np.ndarray
    q: np.ndarray
    eigenvalues: np.ndarray
    kind: np.ndarray
    slow: np.ndarray
    summary: dict
    candidate_q: np.ndarray
    candidate_status: np.ndarray
    right_vectors: np.ndarray | None
    left_vectors: np.ndarray | None
    jacobians: np.ndarray


def _speed(cell, params, h, x):
    r = cell.step(params, h, x) - h
    return 0.5 * jnp.sum(r * r)


def _newton(cell, params, x, h, newton_steps):
    """Gauss–Newton iterations on F(h) − h = 0 (two damping levels tried per iteration, the
    better one kept); a step that does not lower q is refused, so q never rises."""
    n = h.shape[0]
    eye = jnp.eye(n, dtype=h.dtype)
    F = lambda h_: cell.step(params, h_, x)

    def body(h, _):
        r = F(h) - h
        q0 = 0.5 * jnp.sum(r * r)
        A = jax.jacfwd(F)(h) - eye
        AtA = A.T @ A
        scale = jnp.trace(AtA) / n + jnp.finfo(h.dtype).tiny
        g = A.T @ r

        def lm(mu):  # Levenberg–Marquardt: (AᵀA + μ I) d = -Aᵀ r, by Cholesky
            return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(AtA + mu * eye), -g)

        # a nearly pure Gauss–Newton (= Newton where A is regular) and a damped direction
        eps = jnp.finfo(h.dtype).eps
        mus = scale * jnp.stack([jnp.clip(2 * q0, eps, 1e-6), jnp.asarray(1e-2, h.dtype)])
        d = jax.vmap(lm)(mus)
        hn = h[None] + d
        qn = jax.vmap(lambda v: _speed(cell, params, v, x))(hn)
        ok = jnp.all(jnp.isfinite(hn), axis=1) & jnp.isfinite(qn) & (qn < q0)
        qn = jnp.where(ok, qn, jnp.inf)
        k = jnp.argmin(qn)
        return jnp.where(qn[k] < q0, hn[k], h), None

    return jax.lax.scan(body, h, None, length=newton_steps)[0]


def _minimize(cell, params, x, candidates, learning_rate, steps, newton_steps):
    opt = optax.adam(learning_rate)
    total = lambda H: jnp.sum(jax.vmap(lambda h: _speed(cell, params, h, x))(H))

    def body(carry, _):
        H, s = carry
        g = jax.grad(total)(H)
        upd, s = opt.update(g, s, H)
        return (optax.apply_updates(H, upd), s), None

    H = candidates
    if steps > 0:
        (H, _), _ = jax.lax.scan(body, (H, opt.init(H)), None, length=steps)
    if newton_steps > 0:
        H = jax.vmap(lambda h: _newton(cell, params, x, h, newton_steps))(H)
    q = jax.vmap(lambda h: _speed(cell, params, h, x))(H)
    return H, q


_minimize_jit = cell_jit(_minimize, static_argnames=("steps", "newton_steps"))


def _jacobians(cell, params, x, H):
    return jax.vmap(lambda h: jax.jacfwd(lambda h_: cell.step(params, h_, x))(h))(H)


_jacobians_jit = cell_jit(_jacobians)


def _check_input(cell, x):
    dt = float_dtype()
    if x is None:
        return jnp.zeros((cell.input_size,), dt)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(dt)
    if x.shape != (cell.input_size,):
        raise ValueError(
            f"x: expected one constant input of shape ({cell.input_size},) (cell.input_size of "
            f"this {cell.name} cell), got {tuple(x.shape)}. Pass x=None for zero input."
        )
    return x


def _check_candidates(cell, candidates, name="candidates"):
    try:
        c = jnp.asarray(candidates)
    except TypeError:
        raise TypeError(
            f"{name}: expected an array of states, got {type(candidates).__name__}."
        ) from None
    if not jnp.issubdtype(c.dtype, jnp.floating):
        c = c.astype(float_dtype())
    if c.ndim == 1 and c.shape[0] == cell.state_size:
        c = c[None]
    if c.ndim != 2 or c.shape[1] != cell.state_size or c.shape[0] == 0:
        raise ValueError(
            f"{name}: expected shape (C, {cell.state_size}) (C >= 1 candidate states of size "
            f"cell.state_size), got {tuple(c.shape)}. fixed_point_candidates(...) makes some."
        )
    return c


def fixed_point_speed(cell, params, h, x=None) -> jax.Array:
    """The speed q(h) = ½‖F(h) − h‖², F(h) = cell.step(params, h, x); zero at fixed points.

    Args:
      cell, params: a cell and its params.
      h: (state_size,) a state (vmap for many).
      x: (input_size,) the constant input; None means zeros.

    Returns:
      A scalar. Differentiable in ``h`` and ``params``; jit/vmap apply.

    Example::

        cell = rd.cells.vanilla(1, 1, recurrent_init=rd.init.identity(2.0), bias=False)
        rd.fixed_point_speed(cell, cell.init(jax.random.key(0)), jnp.zeros(1))  # 0.0: h = 0 is fixed
    """
    check_cell(cell)
    x = _check_input(cell, x)
    return _speed(cell, params, jnp.asarray(h), x)


def minimize_speed(
    cell, params, x, candidates, *, steps: int = 1000, learning_rate: float = 1e-2, newton_steps: int = 5
):
    """Move every candidate to a nearby zero of q(h) = ½‖F(h) − h‖² (the numeric core).

    Adam on q for ``steps`` steps (one ``lax.scan``, all candidates vmapped), then
    ``newton_steps`` Newton-type (Levenberg–Marquardt) iterations, each accepted only when it
    lowers q (see the module docstring).
    Compiled once per cell structure and (steps, newton_steps); no filtering or de-duplication
    (see :func:`fixed_points`).

    Args:
      cell, params: a cell and its params.
      x: (input_size,) constant input, or None for zeros.
      candidates: (C, state_size) starting states.
      steps: Adam steps (0 skips Adam).
      learning_rate: Adam's step size, in units of the state.
      newton_steps: polishing iterations (0 skips them); each costs a (state_size)² Jacobian and
        two linear solves per candidate.

    Returns:
      ``(states (C, state_size), q (C,))``.

    Example::

        H, q = rd.minimize_speed(cell, params, None, candidates, steps=500)
    """
    check_cell(cell)
    x = _check_input(cell, x)
    c = _check_candidates(cell, candidates)
    steps = int(check_nonnegative("steps", steps))
    newton_steps = int(check_nonnegative("newton_steps", newton_steps))
    lr = check_nonnegative("learning_rate", learning_rate)
    return _minimize_jit(cell, params, x.astype(c.dtype), c, jnp.asarray(lr, c.dtype),
                         steps=steps, newton_steps=newton_steps)


def _candidates(cell, params, x, key, scale, noise, num, steps):
    n = cell.state_size
    dt = x.dtype
    k0, kt, kn = jax.random.split(key, 3)
    h0 = cell.initial_state(params)[None] + scale * jax.random.normal(k0, (num, n), dt)
    when = jax.random.randint(kt, (num,), 0, steps + 1)

    def run(h, t_pick):
        def body(carry, t):
            h, kept = carry
            kept = jnp.where(t == t_pick, h, kept)
            return (cell.step(params, h, x), kept), None

        (h_end, kept), _ = jax.lax.scan(body, (h, h), jnp.arange(steps))
        return jnp.where(t_pick == steps, h_end, kept)

    H = jax.vmap(run)(h0, when)
    return H + noise * jax.random.normal(kn, H.shape, dt)


_candidates_jit = cell_jit(_candidates, static_argnames=("num", "steps"))


def fixed_point_candidates(
    cell, params, key, num: int, *, x=None, steps: int = 100, scale: float = 1.0, noise: float = 0.05
) -> jax.Array:
    """Candidate states for :func:`fixed_points`: states the network visits, plus noise.

    ``num`` trajectories start at initial_state + N(0, scale²) per unit and run ``steps`` steps
    under the constant input ``x``; from each, the state at a uniformly random time 0..steps is
    taken and N(0, noise²) is added to every unit. The same key gives the same candidates.

    Args:
      cell, params: a cell and its params.
      key: a ``jax.random`` key.
      num: number of candidates C.
      x: (input_size,) constant input (None: zeros).
      steps: length of each trajectory.
      scale: spread of the initial states.
      noise: spread of the noise added to the visited states.

    Returns:
      (num, state_size) candidate states.

    Example::

        cand = rd.fixed_point_candidates(cell, params, jax.random.key(1), 512)
        fps = rd.fixed_points(cell, params, None, cand)
    """
    check_cell(cell)
    x = _check_input(cell, x)
    num = check_positive_int("num", num)
    steps = int(check_nonnegative("steps", steps))
    scale = check_nonnegative("scale", scale)
    noise = check_nonnegative("noise", noise)
    leaves = jax.tree_util.tree_leaves(params)
    dt = jnp.result_type(*leaves) if leaves else x.dtype
    x = x.astype(dt)
    return _candidates_jit(cell, params, x, key, jnp.asarray(scale, dt), jnp.asarray(noise, dt),
                           num=num, steps=steps)


def _classify(eigs):
    n_out = np.sum(np.abs(eigs) > 1 + UNSTABLE_MARGIN, axis=-1)
    n = eigs.shape[-1]
    return np.where(n_out == 0, "stable", np.where(n_out == n, "unstable", "saddle")).astype(object)


def _eig(J, vectors):
    if not vectors:
        return np.linalg.eigvals(J), None, None
    import scipy.linalg

    out = [scipy.linalg.eig(A, left=True, right=True) for A in J]
    return (np.stack([o[0] for o in out]), np.stack([o[2] for o in out]),
            np.stack([o[1] for o in out]))


def fixed_points(
    cell,
    params,
    x,
    candidates,
    *,
    steps: int = 1000,
    learning_rate: float = 1e-2,
    newton_steps: int = 5,
    tol: float | None = None,
    unique_tol: float | None = None,
    keep_slow: bool = False,
    slow_tol: float = 1e-4,
    outlier_scale: float | None = 10.0,
    eigenvectors: bool = False,
) -> FixedPoints:
    """Fixed points h* = F(h*) = cell.step(params, h*, x) for a constant input, found from many
    candidates, de-duplicated, linearised and classified.

    Steps: (1) :func:`minimize_speed` (Adam on q(h) = ½‖F(h) − h‖², then Newton polishing),
    compiled, all candidates at once; (2) on the host: a candidate is ``"not converged"`` when
    its q is not below ``tol`` (or is non-finite); an ``"outlier"`` when it ended farther than
    ``outlier_scale``·(1 + R) from the candidates' mean, R the largest distance of a candidate
    from that mean; a ``"duplicate"`` when it lies within ``unique_tol`` of a point with lower
    q; (3) eigenvalues of J = ∂F/∂h at each point (numpy on the host; ``jnp.linalg.eig`` runs
    on CPU only), classified by the count of |λ| > 1.

    Args:
      cell, params: any cell (vanilla, LSTM, GRU, ``stack``, ``from_flax``, ...) and its params.
      x: (input_size,) the constant input; None means zeros.
      candidates: (C, state_size) starting states (see :func:`fixed_point_candidates`).
      steps, learning_rate, newton_steps: see :func:`minimize_speed`.
      tol: converged when q < tol. Default ½·n·(100·ε)², ε the dtype's machine epsilon
        (7e-11·n in float32, 2.5e-28·n in float64): a residual of about 100 ε per unit.
      unique_tol: Euclidean distance under which two points are one (default 1e-3·√n).
      keep_slow: also keep slow points, tol ≤ q < ``slow_tol`` (marked in ``slow``).
      outlier_scale: see above; None keeps every finite point.
      eigenvectors: also return left and right eigenvectors (scipy, on the host).

    Returns:
      A :class:`FixedPoints`.

    Example (one tanh unit h ← tanh(2h): fixed points 0 and ±0.9575)::

        cell = rd.cells.vanilla(1, 1, "tanh", recurrent_init=rd.init.identity(2.0), bias=False)
        p = cell.init(jax.random.key(0))
        fps = rd.fixed_points(cell, p, None, jnp.linspace(-1.5, 1.5, 31)[:, None])
        fps.points[:, 0], fps.kind      # [-0.9575, 0., 0.9575] (in some order), stable/unstable
    """
    check_cell(cell)
    x = _check_input(cell, x)
    c = _check_candidates(cell, candidates)
    n = cell.state_size
    eps = float(jnp.finfo(c.dtype).eps)
    tol = 0.5 * n * (100 * eps) ** 2 if tol is None else check_nonnegative("tol", tol)
    if unique_tol is None:
        unique_tol = 1e-3 * np.sqrt(n)
    unique_tol = check_nonnegative("unique_tol", unique_tol)
    slow_tol = check_nonnegative("slow_tol", slow_tol)
    if outlier_scale is not None:
        outlier_scale = check_nonnegative("outlier_scale", outlier_scale)

    H, q = minimize_speed(cell, params, x, c, steps=steps, learning_rate=learning_rate,
                          newton_steps=newton_steps)
    H, q, c_np = np.asarray(H), np.asarray(q), np.asarray(c)
    finite = np.isfinite(q) & np.all(np.isfinite(H), axis=1)
    limit = slow_tol if keep_slow else tol
    status = np.full(q.shape, "not converged", dtype=object)
    good = finite & (q < limit)
    if outlier_scale is not None:
        centre = c_np.mean(axis=0)
        radius = np.max(np.linalg.norm(c_np - centre, axis=1)) if c_np.size else 0.0
        dist = np.linalg.norm(np.where(finite[:, None], H, 0) - centre, axis=1)
        far = dist > outlier_scale * (1 + radius)
        status[good & far] = "outlier"
        good &= ~far
    # Greedy de-duplication, best q first: one pass per unique point found.
    idx = np.flatnonzero(good)
    idx = idx[np.argsort(q[idx], kind="stable")]
    kept = []
    while idx.size:
        best = idx[0]
        kept.append(best)
        close = np.linalg.norm(H[idx] - H[best], axis=1) <= unique_tol
        status[idx[close]] = "duplicate"
        idx = idx[~close]
    kept = np.asarray(kept, dtype=int)
    status[kept] = np.where(q[kept] < tol, "kept", "slow") if kept.size else status[kept]

    points = H[kept]
    if kept.size:
        J = np.asarray(_jacobians_jit(cell, params, x.astype(c.dtype), jnp.asarray(points)))
        eigs, right, left = _eig(J.astype(np.float64), eigenvectors)
        eigs = eigs.astype(np.complex128)
        order = np.argsort(-np.abs(eigs), axis=1, kind="stable")
        eigs = np.take_along_axis(eigs, order, axis=1)
        if eigenvectors:
            right = np.take_along_axis(right, order[:, None, :], axis=2)
            left = np.take_along_axis(left, order[:, None, :], axis=2)
        kind = _classify(eigs)
    else:
        J = np.zeros((0, n, n), H.dtype)
        eigs = np.zeros((0, n), complex)
        kind = np.zeros((0,), object)
        right = left = (np.zeros((0, n, n), complex) if eigenvectors else None)
    summary = {
        "candidates": int(q.size),
        "converged": int(np.sum(finite & (q < tol))),
        "unique": int(kept.size),
        "dropped": {r: int(np.sum(status == r)) for r in ("not converged", "outlier", "duplicate")},
    }
    return FixedPoints(points, q[kept], eigs, kind, q[kept] >= tol, summary, q, status,
                       right, left, J)
