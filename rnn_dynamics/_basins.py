"""Basins of attraction and the sensitivity ‖∂h_T/∂h_1‖₂ over a 2-D slice of initial states.

Initial states lie on a plane: h_1(a, b) = base + a·d₁ + b·d₂ for a grid of (a, b) (for a
two-unit network with the default base 0 and directions e₁, e₂, the grid is the state plane
itself). Each is run ``steps`` steps under a constant input; the final state h_T
(T = steps + 1, so ``steps`` step Jacobians) gets the label of the attractor it ended next to,
and ‖∂h_T/∂h_1‖₂ is computed in forward mode with the product rescaled at every step (it is
kept as e^s·M with ‖M‖_F = 1), so it never over- or underflows.

The picture this gives (Pascanu, Mikolov & Bengio 2013, Sec. 2.3; Grosse, CSC321 Lecture 16):
inside a basin every trajectory is pulled into the same attractor and the Jacobian vanishes;
near the boundary between two basins a small change of h_1 decides which attractor is reached,
and the Jacobian explodes. :func:`basins_example` is a ready two-unit network that shows it.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import cells as _cells
from ._cell import Cell, Fn
from ._checks import check_nonnegative, check_positive_int, float_dtype
from ._compile import cell_jit
from ._fixed_points import _check_input, fixed_points
from ._tangent import normalize, push

__all__ = [
    "Basins",
    "BasinsExample",
    "basins",
    "sensitivity_map",
    "basin_boundary_distance",
    "basin_contrast",
    "basins_example",
]


class Basins(NamedTuple):
    """What :func:`basins` computed over an (A, B) grid of initial states (numpy arrays).

    Fields:
      labels: (A, B) int, index into ``attractors`` of the attractor each h_1 ended at (within
        ``radius``), or -1 where h_T is near none (it has not settled yet: typically on a
        boundary).
      log10_sensitivity: (A, B) log10 ‖∂h_T/∂h_1‖₂.
      final_states: (A, B, n) h_T.
      attractors: (k, n) the attractors used for the labels.
      a, b: (A,), (B,) the grid coordinates along ``directions[0]`` and ``directions[1]``.
      base: (n,) and directions: (2, n): h_1(a, b) = base + a·directions[0] + b·directions[1].
      steps: the number of steps (T - 1).
    """

    labels: np.ndarray
    log10_sensitivity: np.ndarray
    final_states: np.ndarray
    attractors: np.ndarray
    a: np.ndarray
    b: np.ndarray
    base: np.ndarray
    directions: np.ndarray
    steps: int


class BasinsExample(NamedTuple):
    """A ready :func:`basins` setup: ``rd.basins(ex.cell, ex.params, ex.grid, ex.steps)``."""

    cell: Cell
    params: dict
    grid: tuple
    steps: int


def _map_step(static, hyper, params, h, x):
    del hyper, x
    return static[0](params, h)


def _as_cell(cell_or_step, n):
    if isinstance(cell_or_step, Cell):
        return cell_or_step
    if not callable(cell_or_step):
        raise TypeError(
            f"cell_or_step: expected an rd.cells.Cell or a function step(params, h) -> h, got "
            f"{type(cell_or_step).__name__}."
        )
    if n is None:
        raise ValueError(
            "base: a plain step function has no state size; pass base=(n,) (or use a 2-D grid "
            "for a 2-D state, which needs base=jnp.zeros(2))."
        )
    step = Fn(_map_step, (cell_or_step,))
    zeros = Fn(_zeros_state, (n,))
    return Cell(init=None, initial_state=zeros, step=step, input_size=1, state_size=n,
                hidden_size=n, name="map")


def _zeros_state(static, hyper, params):
    del hyper, params
    return jnp.zeros((static[0],), float_dtype())


def _sensitivity(cell, params, x, H0, steps):
    def one(h):
        n = h.shape[0]

        def body(carry, _):
            h, M, s = carry
            h, M = push(cell, params, h, x, M)
            M, lf = normalize(M)
            return (h, M, s + lf), None

        (h, M, s), _ = jax.lax.scan(body, (h, jnp.eye(n, dtype=h.dtype), jnp.zeros((), h.dtype)),
                                    None, length=steps)
        top = jnp.linalg.svd(M, compute_uv=False)[0]
        return h, (s + jnp.log(top)) / jnp.log(jnp.asarray(10.0, h.dtype))

    return jax.vmap(one)(H0)


_sensitivity_jit = cell_jit(_sensitivity, static_argnames=("steps",))


def sensitivity_map(cell, params, h1s, steps: int, *, x=None):
    """Final states and log10 ‖∂h_T/∂h_1‖₂ for many initial states, ``steps`` steps each.

    The pure, compiled core of :func:`basins` (jit/vmap/grad apply): a ``lax.scan`` of forward
    tangents (:func:`rnn_dynamics._tangent.push`) vmapped over the initial states, the running
    product kept as e^s·M with ‖M‖_F = 1 so the norm never over- or underflows.

    Args:
      cell, params: a cell and its params.
      h1s: (G, state_size) initial states h_1.
      steps: T - 1, the number of steps (and of step Jacobians in the product).
      x: (input_size,) constant input; None means zeros.

    Returns:
      ``(h_T (G, state_size), log10 ‖∂h_T/∂h_1‖₂ (G,))``.

    Example::

        hT, lg = rd.sensitivity_map(cell, params, jnp.array([[0.5, 0.0], [0.01, 0.0]]), 20)
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected an rd.cells.Cell, got {type(cell).__name__}.")
    steps = check_positive_int("steps", steps)
    x = _check_input(cell, x)
    H = jnp.asarray(h1s)
    if H.ndim != 2 or H.shape[1] != cell.state_size:
        raise ValueError(
            f"h1s: expected shape (G, {cell.state_size}) (initial states of size "
            f"cell.state_size), got {tuple(H.shape)}."
        )
    if not jnp.issubdtype(H.dtype, jnp.floating):
        H = H.astype(float_dtype())
    return _sensitivity_jit(cell, params, x.astype(H.dtype), H, steps=steps)


def _check_grid(grid):
    try:
        a, b = grid
        a, b = np.asarray(a, float), np.asarray(b, float)
    except (TypeError, ValueError):
        raise TypeError(
            "grid: expected a pair of 1-D coordinate arrays (a, b), e.g. "
            "(np.linspace(-2, 2, 101), np.linspace(-2, 2, 101))."
        ) from None
    if a.ndim != 1 or b.ndim != 1 or a.size < 2 or b.size < 2:
        raise ValueError(
            f"grid: expected two 1-D arrays of at least 2 coordinates, got shapes {a.shape} and "
            f"{b.shape}."
        )
    return a, b


def _find_attractors(cell, params, x, finals, key_count=512):
    """Stable fixed points found from (a deterministic subsample of) the final states."""
    idx = np.linspace(0, finals.shape[0] - 1, min(key_count, finals.shape[0])).astype(int)
    fps = fixed_points(cell, params, x, finals[idx], steps=200, newton_steps=5)
    return fps.points[fps.kind == "stable"]


def basins(
    cell_or_step,
    params,
    grid,
    steps: int,
    *,
    x=None,
    base=None,
    directions=None,
    attractors=None,
    radius: float | None = None,
) -> Basins:
    """Which attractor each initial state on a 2-D slice ends at, and ‖∂h_T/∂h_1‖₂ there.

    h_1(a_i, b_j) = base + a_i·d₁ + b_j·d₂ is run ``steps`` steps (:func:`sensitivity_map`,
    compiled, vmapped over the whole grid). Attractors: the stable fixed points that
    :func:`rnn_dynamics.fixed_points` finds from up to 512 of the final states (or the
    ``attractors`` you pass, e.g. for limit cycles: any states to cluster around). A final state
    gets the label of the nearest attractor within ``radius``, else -1. The labelling runs on
    the host (numpy), so this function is not jit-able; :func:`sensitivity_map` is its compiled,
    jit/vmap-able core.

    Args:
      cell_or_step: a cell, or a map ``step(params, h) -> h`` (then pass ``base``).
      params: its params.
      grid: ``(a, b)``, two 1-D coordinate arrays of lengths A and B.
      steps: T - 1, the number of steps.
      x: (input_size,) constant input (None: zeros).
      base: (n,) the slice's origin; default the zero state.
      directions: (2, n) the slice's directions; default e₁, e₂ (the first two units).
      attractors: (k, n) states to label by; default found as above.
      radius: largest distance from an attractor for a label (default 0.05·√n).

    Returns:
      A :class:`Basins` (numpy arrays).

    Example (the shipped two-unit network)::

        ex = rd.basins_example()
        res = rd.basins(ex.cell, ex.params, ex.grid, ex.steps)
        rd.basin_contrast(res)    # median ‖∂h_T/∂h_1‖₂ deep inside vs at the boundary
    """
    a, b = _check_grid(grid)
    n = None if base is None else int(np.size(base))
    if isinstance(cell_or_step, Cell):
        n = cell_or_step.state_size
    cell = _as_cell(cell_or_step, n)
    n = cell.state_size
    steps = check_positive_int("steps", steps)
    dt = float_dtype()
    base = np.zeros(n) if base is None else np.asarray(base, float)
    if base.shape != (n,):
        raise ValueError(f"base: expected shape ({n},) (the state size), got {base.shape}.")
    if directions is None:
        if n < 2:
            raise ValueError(
                f"directions: a {n}-unit state has no 2-D plane; basins needs state_size >= 2."
            )
        directions = np.eye(n)[:2]
    directions = np.asarray(directions, float)
    if directions.shape != (2, n):
        raise ValueError(f"directions: expected shape (2, {n}), got {directions.shape}.")
    radius = 0.05 * np.sqrt(n) if radius is None else check_nonnegative("radius", radius)

    A, B = np.meshgrid(a, b, indexing="ij")
    H0 = base + A[..., None] * directions[0] + B[..., None] * directions[1]
    xin = _check_input(cell, x)
    finals, logs = sensitivity_map(cell, params, jnp.asarray(H0.reshape(-1, n), dt), steps, x=xin)
    finals, logs = np.asarray(finals), np.asarray(logs)
    if attractors is None:
        ok = np.all(np.isfinite(finals), axis=1)
        attractors = _find_attractors(cell, params, xin, finals[ok]) if ok.any() else np.zeros((0, n))
    attractors = np.asarray(attractors, float)
    if attractors.ndim != 2 or attractors.shape[1] != n:
        raise ValueError(
            f"attractors: expected shape (k, {n}) (k states of size {n}), got {attractors.shape}."
        )
    labels = np.full(finals.shape[0], -1, int)
    if attractors.shape[0]:
        d = np.linalg.norm(finals[:, None, :] - attractors[None], axis=-1)
        near = np.argmin(d, axis=1)
        labels = np.where(d[np.arange(d.shape[0]), near] <= radius, near, -1)
    shape = (a.size, b.size)
    return Basins(labels.reshape(shape), logs.reshape(shape), finals.reshape(shape + (n,)),
                  attractors, a, b, base, directions, steps)


def basin_boundary_distance(labels) -> np.ndarray:
    """Chessboard distance, in grid cells, from each cell to the nearest cell of another label.

    A cell with one of its 8 neighbours labelled differently (including -1, "not settled") is at
    distance 1: it lies within one grid cell of a basin boundary. With a single label everywhere
    the distance is inf.

    Args:
      labels: (A, B) integer label map (``Basins.labels``).

    Returns:
      (A, B) float array of distances 1, 2, ... (or inf).

    Example: ``d = rd.basin_boundary_distance(res.labels); res.log10_sensitivity[d == 1]``.
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels: expected a 2-D label map, got shape {lab.shape}.")
    P = np.pad(lab, 1, mode="edge")
    A, B = lab.shape
    shifts = [(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)]
    edge = np.zeros(lab.shape, bool)
    for i, j in shifts:
        edge |= P[1 + i : 1 + i + A, 1 + j : 1 + j + B] != lab
    dist = np.full(lab.shape, np.inf)
    dist[edge] = 1
    front, d = edge, 1
    while front.any() and np.isinf(dist).any():
        d += 1
        Pf = np.pad(front, 1)
        grown = np.zeros_like(front)
        for i, j in shifts:
            grown |= Pf[1 + i : 1 + i + A, 1 + j : 1 + j + B]
        front = grown & np.isinf(dist)
        dist[front] = d
    return dist


def basin_contrast(result: Basins, *, depth: int = 10) -> dict:
    """Median ‖∂h_T/∂h_1‖₂ deep inside the basins against near their boundaries.

    "Deep inside": a labelled cell (label ≥ 0) at least ``depth`` grid cells (chessboard
    distance, :func:`basin_boundary_distance`) from any cell of another label. "Near the
    boundary": cells within one grid cell of a cell of another label (distance 1).

    Returns:
      dict with ``deep`` and ``boundary`` (medians of ‖∂h_T/∂h_1‖₂, linear scale, computed from
      the log10 values), ``deep_log10``, ``boundary_log10``, and the cell counts ``n_deep`` and
      ``n_boundary``. A median over no cells is nan.

    The boundary number depends on the grid: a finer grid puts the cells next to the boundary
    closer to it, where the norm is larger (the shipped example, 18 steps: 0.09 at 41 points per
    axis, 1.2 at 101, 4.7 at 201).

    Example: ``c = rd.basin_contrast(res); c["deep"] < 1e-3 < 1 < c["boundary"]``.
    """
    depth = check_positive_int("depth", depth)
    dist = basin_boundary_distance(result.labels)
    lg = np.asarray(result.log10_sensitivity)
    deep = (dist >= depth) & (result.labels >= 0)
    near = dist == 1
    dl = float(np.median(lg[deep])) if deep.any() else float("nan")
    bl = float(np.median(lg[near])) if near.any() else float("nan")
    return {"deep": 10.0**dl, "boundary": 10.0**bl, "deep_log10": dl, "boundary_log10": bl,
            "n_deep": int(deep.sum()), "n_boundary": int(near.sum())}


EXAMPLE_W = ((1.5, 0.5), (-0.5, 0.3))


def basins_example(grid_size: int = 201, steps: int = 18) -> BasinsExample:
    """A two-unit tanh RNN h ← tanh(W h), W = [[1.5, 0.5], [-0.5, 0.3]], with two attractors.

    The origin is a saddle (eigenvalues of W: 1.23 and 0.57); two stable fixed points ±h* lie
    on either side of its stable manifold, which is the basin boundary. The shipped grid is
    ``grid_size`` points per axis on [-2, 2]² and ``steps`` = 18 (T = 19).

    Measured (float32, CPU, grid 201, steps 18, :func:`basin_contrast` with depth 10): median
    ‖∂h_T/∂h_1‖₂ deep inside a basin 2.5e-05, within one grid cell of the boundary 4.7
    (attractors ±(0.6235, -0.4091)).

    Returns:
      A :class:`BasinsExample` ``(cell, params, grid, steps)``; the cell is
      ``rd.cells.vanilla(1, 2, "tanh")`` with W as above, zero U and b.

    Example::

        ex = rd.basins_example()
        res = rd.basins(ex.cell, ex.params, ex.grid, ex.steps)
    """
    grid_size = check_positive_int("grid_size", grid_size)
    steps = check_positive_int("steps", steps)
    cell = _cells.vanilla(1, 2, "tanh")
    dt = float_dtype()
    params = {"W": jnp.asarray(EXAMPLE_W, dt), "U": jnp.zeros((2, 1), dt), "b": jnp.zeros((2,), dt)}
    g = np.linspace(-2.0, 2.0, grid_size)
    return BasinsExample(cell, params, (g, g), steps)
