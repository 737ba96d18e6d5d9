"""Loss landscapes, cliffs and the bifurcations behind them.

:func:`landscape` sweeps one or two scalar entries of a params pytree over a grid and returns
the loss and the norm of its full gradient at every grid point (vmapped, or ``lax.map``-ped in
batches), for any ``loss_fn(params)``: close over your cell, a data batch and the loss.

Pascanu, Mikolov & Bengio (2013, "On the difficulty of training recurrent neural networks",
Sec. 2.3) explain exploding gradients with one unit x_t = w·σ(x_{t−1}) + b, w = 5, b swept:
for b between two saddle-node bifurcations the map has two stable fixed points and an unstable
one between them, and the final state x_T of a fixed x_1 jumps from one branch to the other
when the unstable point crosses x_1. The loss of the final state then has a cliff, and the
gradient is huge exactly there. :func:`bifurcation` finds every fixed point of a one-unit map
for each value of a swept parameter; :func:`pascanu_cliff` is the loss sweep.

Closed form for the unit (w = 5, logistic σ): the saddle-nodes satisfy 5σ(x)(1 − σ(x)) = 1 and
x = 5σ(x) + b, i.e. σ = (1 ± √0.2)/2, x = ±0.9624, b = −2.6556 and b = −2.3444; the map has
three fixed points for b between them and one outside.
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import cells as _cells
from ._cell import check_cell
from ._checks import check_positive_int, float_dtype
from ._compile import cell_jit
from ._fixed_points import _check_input
from ._rollout import final_state

__all__ = ["Landscape", "landscape", "Bifurcation", "bifurcation", "pascanu_cliff"]


class Landscape(NamedTuple):
    """What :func:`landscape` computed on a grid of shape S = (V₁,) or (V₁, V₂).

    Fields:
      names: the swept entries (``"b"``, ``"W[0,1]"``, ...).
      values: the coordinate arrays, one per name.
      loss: (S) the loss.
      grad_norm: (S) ‖∇_θ loss‖₂ over every leaf of params (the norm a clipping rule sees).
      grad: (S + (d,)) the partial derivatives along the d swept entries.
    """

    names: tuple
    values: tuple
    loss: jax.Array
    grad_norm: jax.Array
    grad: jax.Array


_PATH = re.compile(r"^([^\[\]]+)(?:\[([0-9,\s]*)\])?$")


def _parse(path):
    if not isinstance(path, str):
        raise TypeError(f"sweep: expected string keys such as 'b' or 'W[0,1]', got {path!r}.")
    keys, index = [], ()
    parts = path.split("/")
    for i, part in enumerate(parts):
        m = _PATH.match(part)
        if not m or (m.group(2) is not None and i != len(parts) - 1):
            raise ValueError(
                f"sweep: cannot read the path {path!r}; use a key ('b'), a nested key ('0/W') or an "
                f"index on the last key ('W[0,1]')."
            )
        keys.append(m.group(1).strip())
        if m.group(2) is not None:
            index = tuple(int(s) for s in m.group(2).split(",") if s.strip())
    return tuple(keys), index


def _child(node, key):
    if isinstance(node, dict):
        return node[key]
    return node[int(key)]


def _get(params, path):
    keys, index = path
    node = params
    for k in keys:
        node = _child(node, k)
    return node[index] if index else node


def _set(params, path, value):
    keys, index = path

    def rec(node, ks):
        k = ks[0]
        if len(ks) == 1:
            leaf = _child(node, k)
            leaf = jnp.asarray(leaf)
            new = leaf.at[index].set(value) if index else jnp.asarray(value, leaf.dtype)
        else:
            new = rec(_child(node, k), ks[1:])
        if isinstance(node, dict):
            out = dict(node)
            out[k] = new
            return out
        out = list(node)
        out[int(k)] = new
        return type(node)(out)

    return rec(params, keys)


def _check_path(params, name, path):
    try:
        leaf = _get(params, path)
    except (KeyError, IndexError, TypeError, ValueError):
        raise ValueError(
            f"sweep: {name!r} does not name a scalar entry of params (top-level keys: "
            f"{list(params) if isinstance(params, dict) else type(params).__name__})."
        ) from None
    if jnp.ndim(leaf) != 0:
        raise ValueError(
            f"sweep: {name!r} is an array of shape {jnp.shape(leaf)}; sweep one entry of it, "
            f"e.g. '{name}[0]' or '{name}[0,1]'."
        )


def _landscape(loss_fn, params, grid, paths, batch_size):
    def at(theta):
        p = params
        for path, v in zip(paths, theta):
            p = _set(p, path, v)
        loss, g = jax.value_and_grad(loss_fn)(p)
        leaves = jax.tree_util.tree_leaves(g)
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(l)) for l in leaves))
        part = jnp.stack([jnp.asarray(_get(g, path)) for path in paths])
        return loss, norm, part

    if batch_size is None:
        return jax.vmap(at)(grid)
    return jax.lax.map(at, grid, batch_size=batch_size)


_landscape_jit = jax.jit(_landscape, static_argnames=("loss_fn", "paths", "batch_size"))


def landscape(loss_fn: Callable, params, sweep: dict, *, batch_size: int | None = None) -> Landscape:
    """Loss and gradient norm over a 1-D or 2-D grid of one or two scalar parameters.

    Args:
      loss_fn: ``loss_fn(params) -> scalar``, differentiable (close over the cell, a data
        batch and the loss). Pass the same function object again to reuse the compilation.
      params: the params pytree (dicts, tuples, lists of arrays); the entries not swept keep
        their values.
      sweep: ``{path: values}`` with one or two entries; a path is a key (``"b"``), a nested key
        (``"0/W"`` for a ``stack``'s first layer) with an optional index into the last array
        (``"W[0,1]"``); values are 1-D arrays. Two entries make a (V₁, V₂) grid ("ij" order).
      batch_size: None vmaps the whole grid at once; an int uses ``lax.map`` with that batch
        (less memory).

    Returns:
      A :class:`Landscape` (jax arrays; this function composes with ``jax.jit`` when
      ``loss_fn`` is static).

    Example::

        cell = rd.cells.univariate(w=5.0, activation="sigmoid")
        loss = lambda p: (rd.final_state(cell, p, jnp.zeros(1), jnp.zeros((49, 1)))[0] - 1.0) ** 2
        ls = rd.landscape(loss, cell.init(None), {"b": jnp.linspace(-4, 0, 401)})
        ls.loss.shape, ls.grad_norm.shape     # (401,), (401,)
    """
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn: expected a function loss_fn(params) -> scalar, got {type(loss_fn).__name__}."
        )
    if not isinstance(sweep, dict) or not 1 <= len(sweep) <= 2:
        raise ValueError(
            f"sweep: expected a dict of one or two entries {{path: 1-D values}}, got {sweep!r:.80}."
        )
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
    names = tuple(sweep)
    paths = tuple(_parse(k) for k in names)
    for name, path in zip(names, paths):
        _check_path(params, name, path)
    values = []
    for name in names:
        v = jnp.asarray(sweep[name])
        if v.ndim != 1 or v.shape[0] == 0:
            raise ValueError(
                f"sweep[{name!r}]: expected a non-empty 1-D array of values, got shape {v.shape}."
            )
        if not jnp.issubdtype(v.dtype, jnp.floating):
            v = v.astype(float_dtype())
        values.append(v)
    mesh = jnp.meshgrid(*values, indexing="ij")
    shape = mesh[0].shape
    grid = jnp.stack([m.reshape(-1) for m in mesh], axis=-1)
    loss, norm, part = _landscape_jit(loss_fn, params, grid, paths, batch_size)
    return Landscape(names, tuple(values), loss.reshape(shape), norm.reshape(shape),
                     part.reshape(shape + (len(names),)))


class Bifurcation(NamedTuple):
    """Fixed points of a one-unit map for each value of a swept parameter.

    Fields:
      name: the swept entry of params.
      values: (V,) its values.
      points: (V, P) the fixed points, ascending, nan-padded to P = ``max_points``.
      slope: (V, P) F′(x*) at each (nan where padded).
      stable: (V, P) bool, |F′(x*)| < 1.
      count: (V,) number of fixed points found in the searched interval.
    """

    name: str
    values: jax.Array
    points: jax.Array
    slope: jax.Array
    stable: jax.Array
    count: jax.Array


def _roots(cell, params, x, values, lo, hi, path, num, max_points, iters):
    def one(v):
        p = _set(params, path, v)
        F = lambda h: cell.step(p, jnp.reshape(h, (1,)), x)[0]
        g = jax.vmap(lambda h: F(h) - h)
        hs = jnp.linspace(lo, hi, num)
        gs = g(hs)
        cross = (gs[:-1] == 0) | (gs[:-1] * gs[1:] < 0)
        (idx,) = jnp.nonzero(cross, size=max_points, fill_value=0)
        valid = jnp.arange(max_points) < jnp.sum(cross)
        a, b = hs[idx], hs[idx + 1]
        ga = gs[idx]

        def bisect(_, ab):
            a, b, ga = ab
            m = 0.5 * (a + b)
            gm = g(m)
            keep_left = (ga == 0) | (ga * gm < 0) | (gm == 0)
            a2 = jnp.where(keep_left, a, m)
            b2 = jnp.where(keep_left, m, b)
            ga2 = jnp.where(keep_left, ga, gm)
            return a2, b2, ga2

        a, b, ga = jax.lax.fori_loop(0, iters, bisect, (a, b, ga))
        root = jnp.where(ga == 0, a, 0.5 * (a + b))
        slope = jax.vmap(jax.grad(F))(root)
        nan = jnp.asarray(jnp.nan, root.dtype)
        stable = valid & (jnp.abs(slope) < 1)
        return jnp.where(valid, root, nan), jnp.where(valid, slope, nan), stable, jnp.sum(cross)

    return jax.vmap(one)(values)


_roots_jit = cell_jit(_roots, static_argnames=("path", "num", "max_points", "iters"))


def bifurcation(
    cell,
    params,
    name: str,
    values,
    *,
    x=None,
    state_range: tuple = (-10.0, 10.0),
    num: int = 4001,
    max_points: int = 8,
    iters: int = 60,
) -> Bifurcation:
    """All fixed points of a one-unit cell in ``state_range``, for each value of one parameter.

    For each value: F(h) − h on ``num`` evenly spaced states, a root bracketed by every sign
    change, refined by ``iters`` bisections (to the dtype's resolution), and F′ at the root by
    autodiff. Two roots closer than the grid spacing (just at a saddle-node) can be missed.

    Args:
      cell: a cell with state_size 1 (e.g. ``rd.cells.univariate``).
      params: its params; name: the swept scalar entry (a key or path as in :func:`landscape`).
      values: (V,) the parameter values.
      x: (input_size,) constant input (None: zeros).
      state_range: (lo, hi) the interval searched.
      num: grid points in the interval; max_points: fixed points kept per value.
      iters: bisection steps.

    Returns:
      A :class:`Bifurcation` (jax arrays).

    For an iterated scalar map given as a function (not a cell), see
    :func:`rnn_dynamics.maps.fixed_points`; :func:`rnn_dynamics.maps.bifurcation` returns long-run
    orbits instead of fixed points. Plot: ``rd.plot.fixed_point_branches``.

    Example (Pascanu et al.'s unit: three fixed points for -2.6556 < b < -2.3444)::

        cell = rd.cells.univariate(w=5.0, activation="sigmoid")
        bif = rd.bifurcation(cell, cell.init(None), "b", jnp.linspace(-4, 0, 401))
        bif.count      # 1 outside, 3 inside the bistable range
    """
    check_cell(cell)
    if cell.state_size != 1:
        raise ValueError(
            f"cell: bifurcation needs a one-unit state (state_size 1), got state_size "
            f"{cell.state_size}; use rd.fixed_points for larger states."
        )
    path = _parse(name)
    _check_path(params, name, path)
    num = check_positive_int("num", num)
    max_points = check_positive_int("max_points", max_points)
    iters = check_positive_int("iters", iters)
    lo, hi = (float(v) for v in state_range)
    if not lo < hi:
        raise ValueError(f"state_range: expected (lo, hi) with lo < hi, got {state_range!r}.")
    xin = _check_input(cell, x)
    v = jnp.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"values: expected a 1-D array, got shape {v.shape}.")
    dt = jax.tree_util.tree_leaves(params)[0].dtype
    v = v.astype(dt)
    pts, slope, stable, count = _roots_jit(cell, params, xin.astype(dt), v, jnp.asarray(lo, dt),
                                           jnp.asarray(hi, dt), path=path, num=num,
                                           max_points=max_points, iters=iters)
    return Bifurcation(name, v, pts, slope, stable, count)


def pascanu_cliff(
    b_values,
    *,
    w: float = 5.0,
    x1: float = 0.5,
    steps: int = 30,
    target: float = 1.0,
    batch_size: int | None = None,
) -> Landscape:
    """Pascanu et al.'s (2013) cliff: the loss (x_T − target)² of x_t = w·σ(x_{t−1}) + b over b.

    The cell is ``rd.cells.univariate(w, b=0, activation="sigmoid")`` with zero input, run from
    x_1 = ``x1`` for ``steps`` steps (T = steps + 1). The defaults are this library's choice (not
    the paper's exact setting): with x_1 = 0.5 the final state switches branch where the unstable
    fixed point crosses 0.5, at b = 0.5 − 5σ(0.5) = −2.6123 for w = 5. The cliff is as narrow as
    the time the trajectory can linger near the unstable point: with more steps it gets
    narrower than a grid cell and the gradient at the grid points stops showing it.

    Args:
      b_values: (V,) values of b.
      w, x1, steps, target: the unit, the initial state, T − 1 and the loss target.
      batch_size: as in :func:`landscape`.

    Returns:
      A :class:`Landscape` over ``"b"``; ``grad_norm`` is ‖(∂L/∂w, ∂L/∂u, ∂L/∂b)‖₂.

    Measured (float32, CPU, b on 2001 points in [−4, 0], defaults): largest gradient norm
    4.9e+03 (at b = −2.614), median 10.0, a ratio of 492.

    Example::

        ls = rd.pascanu_cliff(jnp.linspace(-4.0, 0.0, 2001))
        float(ls.grad_norm.max() / jnp.median(ls.grad_norm))    # > 100
    """
    steps = check_positive_int("steps", steps)
    cell = _cells.univariate(w=w, b=0.0, activation="sigmoid")
    params = cell.init(None)
    loss = _PascanuLoss(cell, float(x1), steps, float(target), float(w))
    return landscape(loss, params, {"b": b_values}, batch_size=batch_size)


class _PascanuLoss:
    """(x_T − target)², hashable by value so that repeated calls share one compilation."""

    def __init__(self, cell, x1, steps, target, w):
        self.cell, self.x1, self.steps, self.target = cell, x1, steps, target
        self._key = (cell.name, w, x1, steps, target)

    def __call__(self, params):
        dt = params["b"].dtype
        h1 = jnp.full((1,), self.x1, dt)
        xs = jnp.zeros((self.steps, 1), dt)
        return (final_state(self.cell, params, h1, xs)[0] - self.target) ** 2

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _PascanuLoss) and self._key == other._key
