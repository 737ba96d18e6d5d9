"""Iterated maps x_{t+1} = f(x_t): orbits, fixed points, cycles, Lyapunov exponents, Mandelbrot.

The one-dimensional picture behind exploding and vanishing gradients (Grosse, CSC321 Lecture 16
"Learning Long-Term Dependencies"; Boddeti, CSE 891 notes): iterating f multiplies derivatives,
(f^t)′(x_0) = f′(x_{t-1}) ⋯ f′(x_0), so near a fixed point x* = f(x*) perturbations shrink when
|f′(x*)| < 1 (a *sink*) and grow when |f′(x*)| > 1 (a *source*).

A map is any function ``f(x) -> x`` written with ``jax.numpy`` (scalar for the 1-D analyses,
any shape for :func:`iterate`). The shipped families :func:`logistic` and :func:`quadratic`
return a :class:`Map`, a callable pytree whose parameter is data: a sweep over r compiles once,
and ``jax.vmap`` over the parameter works (as it does for a plain ``lambda`` that closes over a
traced number, which compiles once per call instead).

Everything is pure JAX: float32 by default, float64 when ``jax_enable_x64`` is on; every
function runs under the user's ``jax.jit`` and ``jax.vmap``. Inputs are checked in Python
before tracing.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._checks import NumericalWarning, check_positive_int, float_dtype, is_traced

__all__ = [
    "Map",
    "logistic",
    "quadratic",
    "iterate",
    "FixedPoints",
    "fixed_points",
    "PeriodicOrbits",
    "periodic_orbits",
    "lyapunov_exponent",
    "bifurcation",
    "escape_time",
    "mandelbrot",
    "mandelbrot_area",
    "KINDS",
]

KINDS = ("sink", "neutral", "source")
"""Names of the stability codes: ``KINDS[code]`` (code -1 marks padding under a trace)."""

_NEWTON_ITERS = 64
_MANDELBROT_UNROLL = 4
_MANDELBROT_BLOCK = 4096


# ------------------------------------------------------------------------------------------
# Maps as values


@jax.tree_util.register_pytree_node_class
class Map:
    """A map ``x -> fn(x, *params)`` whose parameters are data (a pytree: ``fn`` is static).

    ``Map(fn, params, template)``: ``fn`` a module-level function, ``params`` a tuple of numbers
    (floats, arrays or tracers), ``template`` a format string for :meth:`describe`. Calling the
    map applies it; two maps with the same ``fn`` share every compiled function, whatever their
    parameters.

    Example::

        >>> f = rd.maps.logistic(3.5)
        >>> float(f(0.5))
        0.875
        >>> f.describe()
        '3.5·x·(1−x)'
    """

    __slots__ = ("fn", "params", "template", "__weakref__")

    def __init__(self, fn: Callable, params: tuple = (), template: str | None = None):
        self.fn = fn
        self.params = tuple(params)
        self.template = template

    def __call__(self, x):
        return self.fn(x, *self.params)

    def tree_flatten(self):
        return (self.params,), (self.fn, self.template)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(aux[0], children[0], aux[1])

    def describe(self) -> str:
        """A formula with the parameter values filled in (names only when they are traced)."""
        name = getattr(self.fn, "__name__", "f")
        if self.template is None:
            return name
        if is_traced(self.params):
            return self.template.replace("{0:g}", "p")
        return self.template.format(*(float(np.asarray(p)) for p in self.params))

    def __repr__(self):
        return f"Map({self.describe()})"


def _logistic(x, r):
    return r * x * (1 - x)


def _quadratic(x, c):
    return x * x + c


def logistic(r) -> Map:
    """The logistic map f(x) = r·x·(1 − x).

    Args:
      r: a number (float, 0-d array, or a tracer inside ``jax.vmap``/``jax.jit``). On [0, 1]
        for 0 ≤ r ≤ 4. Fixed points 0 and 1 − 1/r; period doubling from r = 3, chaos at r = 4.

    Returns:
      A :class:`Map`.

    Example: ``rd.maps.logistic(3.5)(0.5)`` is 0.875.
    """
    return Map(_logistic, (_check_param("r", r),), "{0:g}·x·(1−x)")


def quadratic(c) -> Map:
    """The quadratic map f(x) = x² + c (the real slice of z ↦ z² + c).

    Args:
      c: a number (float, 0-d array, or a tracer). For c < 1/4 the fixed points are
        (1 ± √(1 − 4c))/2: the smaller one a sink for −3/4 < c < 1/4, the larger one a source.

    Returns:
      A :class:`Map`.

    Example: ``rd.maps.fixed_points(rd.maps.quadratic(0.15), (0, 1)).location`` is
    [0.18377, 0.81623] (a sink and a source).
    """
    return Map(_quadratic, (_check_param("c", c),), "x²{0:+g}")


# ------------------------------------------------------------------------------------------
# Checks (Python side, before tracing)


def _check_param(name, value):
    if isinstance(value, (jax.core.Tracer, jax.Array, np.ndarray)):
        if jnp.shape(value) != ():
            raise ValueError(
                f"{name}: expected a scalar, got shape {jnp.shape(value)}. For many values use "
                f"jax.vmap over a function that builds the map, or rd.maps.bifurcation."
            )
        if jnp.issubdtype(jnp.result_type(value), jnp.complexfloating):
            raise TypeError(f"{name}: expected a real number, got dtype {jnp.result_type(value)}.")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a real number, got {value!r} ({type(value).__name__}).")
    return float(value)


def _root_search_args(f, interval, grid, neutral_tol):
    """Checked ``(map, a, b, grid, neutral_tol)`` for the fixed-point and cycle searches, with
    the interval's ends in the map's dtype."""
    f = _as_map(f)
    a, b = _check_interval(interval)
    grid = _check_grid(grid)
    neutral_tol = _check_tol("neutral_tol", neutral_tol)
    probe = _as_x0(f, jnp.asarray(0.5 * (a + b), float_dtype()), "interval", scalar=True)
    neutral_tol = _default_neutral_tol(probe.dtype, neutral_tol)
    a, b = (jnp.asarray(v, probe.dtype) for v in (a, b))
    return f, a, b, grid, neutral_tol


def _as_map(f, name: str = "f"):
    if isinstance(f, Map):
        return f
    if not callable(f):
        raise TypeError(
            f"{name}: expected a map, a callable x -> f(x) such as rd.maps.logistic(3.5) or "
            f"lambda x: x**2 + 0.15; got {type(f).__name__}."
        )
    return Map(f, (), None)


def _check_interval(interval, name: str = "interval"):
    if is_traced(interval):  # inside the user's jit: the values are checked by nobody
        a, b = interval
        return a, b
    try:
        a, b = interval
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name}: expected a pair of finite numbers (a, b) with a < b, got {interval!r}."
        ) from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"{name}: expected finite end points, got ({a!r}, {b!r}).")
    if not a < b:
        raise ValueError(
            f"{name}: expected (a, b) with a < b, got ({a!r}, {b!r}); swap the end points or "
            f"widen the interval."
        )
    return a, b


def _check_grid(grid):
    grid = check_positive_int("grid", grid)
    if grid < 3:
        raise ValueError(f"grid: expected at least 3 points, got {grid}.")
    return grid


def _check_tol(name, value):
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a non-negative number or None, got {value!r}.") from None
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name}: expected a finite non-negative number or None, got {value!r}.")
    return v


def _as_x0(f: Map, x0, name: str = "x0", *, scalar: bool = False):
    """``x0`` as a float array in the dtype ``f`` returns, with ``f`` checked to keep its shape."""
    try:
        x0 = jnp.asarray(x0)
    except TypeError:
        raise TypeError(f"{name}: expected a real number or array, got {type(x0).__name__}.") from None
    if jnp.issubdtype(x0.dtype, jnp.complexfloating):
        raise TypeError(f"{name}: expected real values, got dtype {x0.dtype}.")
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(float_dtype())
    if scalar and x0.shape != ():
        raise ValueError(
            f"{name}: expected a scalar (this analysis is for 1-D maps), got shape {x0.shape}. "
            f"For many starting points use jax.vmap."
        )
    try:
        out = jax.eval_shape(lambda m, x: m(x), f, jax.ShapeDtypeStruct(x0.shape, x0.dtype))
    except Exception as e:  # the map itself failed: say where
        raise TypeError(f"f: calling the map on {name} (shape {x0.shape}) failed: {e}") from e
    if not hasattr(out, "shape") or out.shape != x0.shape:
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"f: expected a map that keeps the shape of {name} {x0.shape}, but f({name}) has "
            f"shape {got}."
        )
    dtype = jnp.result_type(x0.dtype, out.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"f: expected real floating-point values, f({name}) has dtype {out.dtype}.")
    return x0.astype(dtype)


def _warn_nonfinite(values, what: str, fix: str, *, stacklevel: int = 3) -> None:
    if is_traced(values):
        return
    v = np.asarray(values)
    bad = ~np.isfinite(v)
    if np.any(bad):
        warnings.warn(
            f"{what}: {int(bad.sum())} of {v.size} values are not finite (the orbit left the "
            f"range of {v.dtype}: it escapes to infinity). {fix}",
            NumericalWarning,
            stacklevel=stacklevel,
        )


# ------------------------------------------------------------------------------------------
# Orbits


def _derivative(f, x):
    """(f(x), f′(x)) for a scalar map, by one forward-mode pass."""
    return jax.jvp(f, (x,), (jnp.ones_like(x),))


def _power(f, p: int):
    """f composed p times (p static)."""

    def fp(x):
        for _ in range(p):  # unrolled: p is small, and XLA compiles straight code fastest
            x = f(x).astype(x.dtype)
        return x

    return fp


@functools.partial(jax.jit, static_argnames=("steps",))
def _iterate(f, x0, steps):
    def body(x, _):
        y = f(x).astype(x.dtype)
        return y, y

    _, xs = lax.scan(body, x0, None, length=steps)
    return jnp.concatenate([x0[None], xs])


def iterate(f, x0, steps: int):
    """The orbit x_0, f(x_0), …, f^steps(x_0) of any map, by ``lax.scan``.

    Args:
      f: a map: ``rd.maps.logistic(r)``, ``rd.maps.quadratic(c)``, or any function
        ``x -> f(x)`` in jax.numpy that keeps the shape of x (scalar or vector). It may close
        over traced numbers (inside ``jax.vmap`` over a parameter).
      x0: the starting point, a scalar or an array of any shape.
      steps: the number of applications of f (a positive int).

    Returns:
      An array of shape ``(steps + 1, *x0.shape)``: row t is x_t, row 0 is x_0 itself. A
      ``NumericalWarning`` says when the orbit escapes to infinity (non-finite rows).

    Example::

        >>> xs = rd.maps.iterate(rd.maps.logistic(3.5), 0.2, 1000)   # (1001,)
        >>> np.sort(xs[-4:])      # the attracting 4-cycle
        [0.38282, 0.50088, 0.82694, 0.875]
        >>> jax.vmap(lambda r: rd.maps.iterate(rd.maps.logistic(r), 0.2, 100))(rs)  # (len(rs), 101)
    """
    f = _as_map(f)
    steps = check_positive_int("steps", steps)
    x0 = _as_x0(f, x0)
    xs = _iterate(f, x0, steps)
    _warn_nonfinite(xs, "rd.maps.iterate", "Start from a bounded orbit (for the logistic map, "
                    "x0 in [0, 1] and 0 <= r <= 4).")
    return xs


@functools.partial(jax.jit, static_argnames=("steps", "discard"))
def _lyapunov(f, x0, steps, discard):
    x = lax.fori_loop(0, discard, lambda _, y: f(y).astype(y.dtype), x0)

    def body(x, _):
        y, d = _derivative(f, x)
        return y.astype(x.dtype), jnp.log(jnp.abs(d))

    _, logs = lax.scan(body, x, None, length=steps)
    return jnp.mean(logs)


def lyapunov_exponent(f, x0, steps: int, *, discard: int = 100):
    """The Lyapunov exponent of a 1-D map: the mean of log|f′(x_t)| along an orbit.

    λ = (1/steps) Σ_{t=discard}^{discard+steps-1} log|f′(x_t)|, so |(f^t)′| ≈ e^{λt}: λ > 0
    means nearby orbits separate (gradients explode), λ < 0 that they converge.

    Args:
      f: a scalar map (see :func:`iterate`); its derivative is taken by ``jax.jvp``.
      x0: a scalar starting point.
      steps: the number of terms averaged (a positive int).
      discard: iterations run first and not averaged (the transient; a non-negative int).

    Returns:
      A scalar. −inf when the orbit lands exactly on a critical point (f′ = 0: a superstable
      cycle, e.g. the logistic map at r = 2 from x0 = 0.5). A ``NumericalWarning`` says when
      the orbit escapes to infinity (then the result is inf or nan).

    Example: ``rd.maps.lyapunov_exponent(rd.maps.logistic(4.0), 0.2, 100_000)`` is
    ln 2 = 0.69315 to within 0.01 (measured 0.69313 in float64, 0.69308 in float32); at
    r = 3.5 (from 0.2, discard=1000, 4000 steps) it is −0.8726 = ln|−0.0305|/4, the attracting
    4-cycle's multiplier per step.
    """
    f = _as_map(f)
    steps = check_positive_int("steps", steps)
    if isinstance(discard, bool) or not isinstance(discard, (int, np.integer)) or discard < 0:
        raise ValueError(f"discard: expected a non-negative int, got {discard!r}.")
    x0 = _as_x0(f, x0, scalar=True)
    lam = _lyapunov(f, x0, steps, int(discard))
    if not is_traced(lam) and not np.asarray(lam) == -np.inf:  # -inf is a true answer
        _warn_nonfinite(lam, "rd.maps.lyapunov_exponent", "Start from a bounded orbit (for the "
                        "logistic map, x0 in [0, 1] and 0 <= r <= 4).")
    return lam


@functools.partial(jax.jit, static_argnames=("steps", "keep"))
def _bifurcation(family, params, x0, steps, keep):
    def one(p):
        f = family(p)
        x = lax.fori_loop(0, steps - keep + 1, lambda _, y: f(y).astype(y.dtype), x0)

        def body(y, _):
            z = f(y).astype(y.dtype)
            return z, z

        _, tail = lax.scan(body, x, None, length=keep - 1)
        return jnp.concatenate([x[None], tail])

    return jax.vmap(one)(params)


def bifurcation(family, params, x0, steps: int, keep: int):
    """Long-run iterates of a family of maps, one orbit per parameter, vmapped.

    Args:
      family: a function ``p -> map``, e.g. ``rd.maps.logistic`` (``lambda p: lambda x: ...``
        works too).
      params: a 1-D array of parameters, shape (P,).
      x0: the scalar starting point, the same for every parameter.
      steps: iterations per parameter (a positive int).
      keep: how many of the last iterates to return, 1 <= keep <= steps + 1.

    Returns:
      An array (P, keep): row i holds x_{steps-keep+1} … x_steps of the map ``family(params[i])``
      started at x0. For the logistic family the rows of r < 3 are one repeated value (the
      sink 1 − 1/r), of 3 < r < 3.449 a 2-cycle, and so on (the bifurcation diagram:
      ``rd.plot.bifurcation(params, result)``). A ``NumericalWarning`` names the parameters
      whose orbits escaped to infinity.

    Example::

        >>> rs = jnp.linspace(2.5, 4.0, 1000)
        >>> tail = rd.maps.bifurcation(rd.maps.logistic, rs, 0.2, steps=1000, keep=100)  # (1000, 100)
    """
    if not callable(family):
        raise TypeError(
            f"family: expected a function p -> map such as rd.maps.logistic, got "
            f"{type(family).__name__}."
        )
    steps = check_positive_int("steps", steps)
    keep = check_positive_int("keep", keep)
    if keep > steps + 1:
        raise ValueError(
            f"keep: expected at most steps + 1 = {steps + 1} iterates (x_0..x_steps), got {keep}; "
            f"raise steps or lower keep."
        )
    params = jnp.asarray(params)
    if params.ndim != 1 or params.shape[0] == 0:
        raise ValueError(
            f"params: expected a non-empty 1-D array of parameters, got shape {params.shape}."
        )
    if not jnp.issubdtype(params.dtype, jnp.floating):
        params = params.astype(float_dtype())
    x0 = _as_x0(_as_map(family(params[0]), "family(p)"), x0, scalar=True)
    out = _bifurcation(_Family(family), params, x0, steps, keep)
    if not is_traced(out):
        bad = ~np.all(np.isfinite(np.asarray(out)), axis=1)
        if np.any(bad):
            ps = np.asarray(params)[bad]
            warnings.warn(
                f"rd.maps.bifurcation: the orbits of {int(bad.sum())} of {len(bad)} parameters "
                f"escaped to infinity (first: {ps[0]:g}, last: {ps[-1]:g}); their rows hold inf or "
                f"nan. Restrict params to values whose map keeps x0's orbit bounded.",
                NumericalWarning,
                stacklevel=2,
            )
    return out


class _Family:
    """``family`` as a pytree with no leaves: the function is static in the compiled call."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, p):
        return _as_map(self.fn(p), "family(p)")


jax.tree_util.register_pytree_node(_Family, lambda f: ((), f.fn), lambda fn, _: _Family(fn))


# ------------------------------------------------------------------------------------------
# Fixed points and cycles


class FixedPoints(NamedTuple):
    """The fixed points x* = f(x*) of a 1-D map on an interval, in ascending order.

    Fields:
      location: (k,) the fixed points x*.
      derivative: (k,) f′(x*).
      kind: a tuple of k names from :data:`KINDS`: ``"sink"`` where |f′(x*)| < 1,
        ``"source"`` where |f′(x*)| > 1, ``"neutral"`` where |f′(x*)| = 1 to within
        ``neutral_tol``.

    Under the user's ``jax.jit``/``jax.vmap`` the values are not known while tracing, so the
    result keeps its static size ``grid``: ``location`` and ``derivative`` padded with nan after
    the k valid entries, and ``kind`` an int array of codes (0 sink, 1 neutral, 2 source,
    −1 padding; ``rd.maps.KINDS[code]``).
    """

    location: Any
    derivative: Any
    kind: Any


class PeriodicOrbits(NamedTuple):
    """The cycles of exact period p of a 1-D map: p distinct points with f^p(x) = x.

    Fields:
      points: (k, p) one cycle per row, starting at its smallest point in the interval and
        listed in orbit order x, f(x), …, f^{p−1}(x).
      multiplier: (k,) (f^p)′ along the cycle, the product f′(x_0)⋯f′(x_{p−1}).
      kind: a tuple of k names from :data:`KINDS` by |multiplier| (a ``"sink"`` cycle attracts).

    Under a trace the padding is as in :class:`FixedPoints` (``points`` (grid, p)).
    """

    points: Any
    multiplier: Any
    kind: Any


def _eps(dtype):
    return float(jnp.finfo(dtype).eps)


def _roots(g, a, b, grid, dtype):
    """All roots of the scalar function g on [a, b]: (sorted roots, valid, is_touch), size grid.

    Sign changes of g between grid points are polished by safeguarded Newton (bisection when a
    Newton step leaves the bracket). Interior grid points where g has a local extremum are
    polished by Newton from there (clipped to the two neighbouring cells) and kept when g
    vanishes to rounding: double roots, where g touches 0 without crossing.
    """
    eps = _eps(dtype)
    scale = jnp.maximum(1, jnp.maximum(jnp.abs(a), jnp.abs(b)))
    cell = (b - a) / (grid - 1)
    xs = jnp.linspace(a, b, grid)
    gs = jax.vmap(g)(xs)
    nxt = jnp.concatenate([gs[1:], gs[-1:]])
    prv = jnp.concatenate([gs[:1], gs[:-1]])
    sg = jnp.sign(gs)
    cross = (gs == 0) | (sg * jnp.concatenate([sg[1:], sg[-1:]]) < 0)
    cross_prev = jnp.concatenate([jnp.zeros(1, bool), cross[:-1]])
    interior = (jnp.arange(grid) > 0) & (jnp.arange(grid) < grid - 1)
    touch = interior & ~cross & ~cross_prev & ((gs - prv) * (nxt - gs) <= 0)

    lo = jnp.where(cross, xs, jnp.concatenate([xs[:1], xs[:-1]]))
    hi = jnp.concatenate([xs[1:], xs[-1:]])
    x_init = jnp.where(
        cross & (nxt != gs),
        xs - gs * (hi - xs) / jnp.where(nxt != gs, nxt - gs, 1),  # regula falsi point
        xs,
    )
    x_init = jnp.where(gs == 0, xs, x_init)

    def polish(lo, hi, x, bracketed):
        glo = g(lo)
        one = jnp.ones_like(x)

        def body(_, s):
            lo, hi, x, glo = s
            gx, dgx = jax.jvp(g, (x,), (one,))
            same = jnp.sign(gx) == jnp.sign(glo)
            nlo = jnp.where(bracketed & same, x, lo)
            nhi = jnp.where(bracketed & ~same, x, hi)
            nglo = jnp.where(bracketed & same, gx, glo)
            step = x - gx / dgx
            inside = jnp.isfinite(step) & (step >= nlo) & (step <= nhi)
            bis = 0.5 * (nlo + nhi)
            xn = jnp.where(inside, step, jnp.where(bracketed, bis, jnp.clip(
                jnp.where(jnp.isfinite(step), step, x), nlo, nhi)))
            xn = jnp.where(gx == 0, x, xn)
            return nlo, nhi, xn, nglo

        return lax.fori_loop(0, _NEWTON_ITERS, body, (lo, hi, x, glo))[2]

    # The search is not differentiated (its branches hold nan/inf in unused lanes); the
    # derivative of each root is attached below by the implicit function theorem.
    r = lax.stop_gradient(jax.vmap(polish)(lo, hi, x_init, cross))
    fr = lax.stop_gradient(jax.vmap(g)(r))
    # A crossing must shrink |g| below its bracket's ends (a pole of a discontinuous f does
    # not); a touch must vanish to rounding.
    ok_cross = cross & (jnp.abs(fr) <= jnp.maximum(jnp.abs(gs), jnp.abs(nxt)))
    ok_touch = touch & (jnp.abs(fr) <= 64 * eps * (1 + 2 * jnp.abs(r)))
    valid = (ok_cross | ok_touch) & jnp.isfinite(r)

    # Sort, merge near-duplicates (one root reached from two brackets), compact to the front.
    merge_tol = math.sqrt(eps) * scale
    order = jnp.argsort(jnp.where(valid, r, jnp.inf))
    rs, vs, crossed = r[order], valid[order], ok_cross[order]
    first = vs & jnp.concatenate([jnp.ones(1, bool), (rs[1:] - rs[:-1]) > merge_tol])
    # A merged pair is a touch root (f′ = 1) only if neither member was a crossing.
    merged_crossing = jnp.concatenate([(~first[1:] & vs[1:] & crossed[1:]), jnp.zeros(1, bool)])
    touch_root = first & ~crossed & ~merged_crossing
    order = jnp.argsort(jnp.where(first, rs, jnp.inf))
    rs, keep, is_touch = rs[order], first[order], touch_root[order]
    # Value unchanged; derivative dx*/dθ = −(∂g/∂θ)/g′(x*) (implicit function theorem), so
    # jax.grad of a fixed point with respect to the map's parameters is exact.
    rs = jnp.where(keep, rs, a).astype(dtype)
    gval, dg = jax.vmap(lambda x: jax.jvp(g, (x,), (jnp.ones_like(x),)))(rs)
    dg = lax.stop_gradient(dg)
    step = gval / jnp.where(dg != 0, dg, 1)
    rs = rs - (step - lax.stop_gradient(step))
    return jnp.where(keep, rs, jnp.nan), keep, is_touch, jnp.maximum(merge_tol, cell)


def _classify(absd, touch, neutral_tol):
    code = jnp.where(absd < 1 - neutral_tol, 0, jnp.where(absd > 1 + neutral_tol, 2, 1))
    return jnp.where(touch, 1, code).astype(jnp.int8)


@functools.partial(jax.jit, static_argnames=("grid",))
def _fixed_points(f, a, b, neutral_tol, grid):
    dtype = a.dtype
    loc, valid, touch, _ = _roots(lambda x: f(x) - x, a, b, grid, dtype)
    d = jax.vmap(lambda x: _derivative(f, x)[1])(jnp.where(valid, loc, a))
    d = jnp.where(valid, d, jnp.nan)
    code = jnp.where(valid, _classify(jnp.abs(d), touch, neutral_tol), -1).astype(jnp.int8)
    return loc, d, code, jnp.sum(valid)


def _default_neutral_tol(dtype, neutral_tol):
    return math.sqrt(_eps(dtype)) if neutral_tol is None else neutral_tol


def _names(codes):
    return tuple(KINDS[int(c)] for c in np.asarray(codes))


def fixed_points(f, interval, *, grid: int = 2001, neutral_tol: float | None = None):
    """All fixed points x* = f(x*) of a 1-D map on [a, b], classified by |f′(x*)|.

    Method: g(x) = f(x) − x on ``grid`` equally spaced points; every sign change of g (and
    every exact zero) is polished by safeguarded Newton with ``jax.jvp`` (bisection when a step
    leaves the bracket), to machine precision. Points where g touches zero without crossing
    (a double root, f′ = 1: e.g. x² + 1/4 at x = 1/2) are found by Newton from the local
    extrema of g and kept when g vanishes to rounding; they are ``"neutral"``. Two fixed points
    closer together than the grid spacing (b − a)/(grid − 1) can be missed (raise ``grid``);
    roots within √eps·max(1, |a|, |b|) of each other count as one.

    Args:
      f: a scalar map (``rd.maps.quadratic(0.15)`` or any ``x -> f(x)`` in jax.numpy).
      interval: (a, b) with a < b, the search interval (end points included; Python numbers,
        data of the compiled function: a new interval does not recompile).
      grid: number of grid points (static; at least 3).
      neutral_tol: |f′| within this of 1 counts as ``"neutral"``; default √eps of the dtype
        (3.5e-4 in float32, 1.5e-8 in float64).

    Returns:
      :class:`FixedPoints` ``(location, derivative, kind)``, ascending, trimmed to the k fixed
      points found: arrays (k,) and a tuple of k names. Under the user's ``jax.jit`` or
      ``jax.vmap`` the arrays keep the static size ``grid`` (nan-padded) and ``kind`` is an
      int8 array of codes (see :class:`FixedPoints`). All of it runs in one compiled function
      whose size depends only on ``grid``. ``jax.grad`` of a location with respect to the
      map's parameters is exact (implicit function theorem: dx*/dθ = −(∂f/∂θ)/(f′(x*) − 1)).

    Example::

        >>> fp = rd.maps.fixed_points(rd.maps.quadratic(0.15), (0.0, 1.0))
        >>> fp.location, fp.derivative, fp.kind       # float32
        ([0.18377, 0.81623], [0.36754, 1.63246], ('sink', 'source'))
    """
    f, a, b, grid, neutral_tol = _root_search_args(f, interval, grid, neutral_tol)
    loc, d, code, k = _fixed_points(f, a, b, neutral_tol, grid)
    if is_traced((loc, k)):
        return FixedPoints(loc, d, code)
    k = int(k)
    return FixedPoints(loc[:k], d[:k], _names(code[:k]))


def _proper_divisors(p):
    return [d for d in range(1, p) if p % d == 0]


@functools.partial(jax.jit, static_argnames=("period", "grid"))
def _periodic_orbits(f, a, b, neutral_tol, period, grid):
    dtype = a.dtype
    p = period
    fp = _power(f, p)
    loc, valid, touch, tol = _roots(lambda x: fp(x) - x, a, b, grid, dtype)
    safe = jnp.where(valid, loc, a)
    lower = jnp.zeros_like(valid)
    for d in _proper_divisors(p):
        lower = lower | (jnp.abs(jax.vmap(_power(f, d))(safe) - safe) <= tol)
    cand = valid & ~lower

    # The orbit of every candidate: pts[i, k] = f^k(x_i), k = 0..p-1.
    def orbit(x):
        ys = [x]
        for _ in range(p - 1):
            ys.append(f(ys[-1]).astype(x.dtype))
        return jnp.stack(ys)

    pts = jax.vmap(orbit)(safe)  # (grid, p)
    # One Newton step on f^p(x) − x re-polishes each iterate (the value only: derivatives with
    # respect to the map's parameters follow the orbit, d f^k(x*)/dθ).
    def residual(x):
        return jax.jvp(lambda y: fp(y) - y, (x,), (jnp.ones_like(x),))

    gv, dg = jax.vmap(jax.vmap(residual))(pts)
    corr = gv / jnp.where(dg != 0, dg, 1)
    vals = pts - lax.stop_gradient(jnp.where((dg != 0) & (jnp.abs(corr) <= tol), corr, 0))
    # The leader of a cycle is its smallest point in the interval: one row per cycle.
    inside = (vals >= a - tol) & (vals <= b + tol)
    leader = cand & jnp.all(~inside | (vals >= safe[:, None] - tol), axis=1)
    # Every point of an exact-period-p cycle is a distinct root; reject rows that repeat a point.
    apart = jnp.abs(vals[:, :, None] - vals[:, None, :]) > tol
    distinct = jnp.all(apart | jnp.eye(p, dtype=bool), axis=(1, 2))
    leader = leader & distinct
    mult = jnp.prod(jax.vmap(jax.vmap(lambda x: _derivative(f, x)[1]))(vals), axis=1)
    order = jnp.argsort(jnp.where(leader, safe, jnp.inf))
    leader, vals, mult = leader[order], vals[order], mult[order]
    vals = jnp.where(leader[:, None], vals, jnp.nan)
    mult = jnp.where(leader, mult, jnp.nan)
    code = jnp.where(leader, _classify(jnp.abs(mult), jnp.zeros_like(leader), neutral_tol), -1)
    return vals, mult, code.astype(jnp.int8), jnp.sum(leader)


def periodic_orbits(f, period: int, interval, *, grid: int = 2001,
                    neutral_tol: float | None = None):
    """The cycles of exact period p of a 1-D map with a point in [a, b], and their stability.

    The points of a p-cycle are fixed points of f^p that are not fixed points of f^d for any
    proper divisor d of p. They are found as in :func:`fixed_points` (applied to f^p), grouped
    into cycles by iterating f, and each cycle's multiplier (f^p)′ = ∏ f′(x_k) is computed along
    it: a cycle is a ``"sink"`` (it attracts) where |multiplier| < 1.

    Args:
      f: a scalar map.
      period: p, a positive int (``period=1`` gives the fixed points as 1-point cycles).
      interval: (a, b) with a < b.
      grid: grid points for f^p (static). f^p oscillates 2^(p−1) times on [0, 1] for the chaotic
        logistic map: keep grid well above that.
      neutral_tol: |multiplier| within this of 1 counts as ``"neutral"`` (default √eps).

    Returns:
      :class:`PeriodicOrbits` ``(points (k, p), multiplier (k,), kind)``, one row per cycle,
      ascending by the cycle's smallest point; under a trace nan-padded to ``grid`` rows (see
      :class:`FixedPoints`).

    Example::

        >>> po = rd.maps.periodic_orbits(rd.maps.logistic(3.5), 4, (0.0, 1.0))
        >>> po.points, po.multiplier, po.kind
        ([[0.38282, 0.82694, 0.50088, 0.875]], [-0.0305], ('sink',))
        >>> rd.maps.periodic_orbits(rd.maps.logistic(3.5), 2, (0.0, 1.0)).kind
        ('source',)                    # the 2-cycle born at r = 3 lost its stability at r = 3.449
    """
    if isinstance(period, bool) or not isinstance(period, (int, np.integer)) or period < 1:
        raise ValueError(
            f"period: expected a positive int (1 for fixed points, 2 for 2-cycles, ...), got "
            f"{period!r}."
        )
    period = int(period)
    f, a, b, grid, neutral_tol = _root_search_args(f, interval, grid, neutral_tol)
    pts, mult, code, k = _periodic_orbits(f, a, b, neutral_tol, period, grid)
    if is_traced((pts, k)):
        return PeriodicOrbits(pts, mult, code)
    k = int(k)
    return PeriodicOrbits(pts[:k], mult[:k], _names(code[:k]))


# ------------------------------------------------------------------------------------------
# Mandelbrot set


def _escape_kernel(cr, ci, max_iter):
    """Escape counts for flat arrays c = cr + i·ci: the number of z_1..z_max_iter with |z| <= 2.

    z is frozen once it escapes (no overflow); the loop stops as soon as every point escaped.
    """
    unroll = _MANDELBROT_UNROLL
    zero = jnp.zeros_like(cr)
    cnt0 = jnp.zeros(cr.shape, jnp.int32)

    def cond(s):
        n, _, _, _, alive = s
        return (n < max_iter) & alive

    def body(s):
        n, zr, zi, cnt, _ = s
        inside = None
        for k in range(unroll):
            zr2, zi2 = zr * zr, zi * zi
            live = (zr2 + zi2 <= 4) & (n + k < max_iter)
            zr, zi = jnp.where(live, zr2 - zi2 + cr, zr), jnp.where(live, 2 * zr * zi + ci, zi)
            inside = (zr * zr + zi * zi <= 4) & live
            cnt = cnt + inside
        return n + unroll, zr, zi, cnt, jnp.any(inside)

    return lax.while_loop(cond, body, (jnp.int32(0), zero, zero, cnt0, jnp.bool_(True)))[3]


@jax.jit
def _escape_time(c, max_iter):
    flat = c.reshape(-1)
    return _blocked(jnp.real(flat), jnp.imag(flat), max_iter).reshape(c.shape)


def _blocked(cr, ci, max_iter):
    """The kernel over blocks of points (cache-sized; a block stops when all escaped)."""
    n = cr.shape[0]
    block = min(_MANDELBROT_BLOCK, n)
    nb = -(-n // block)
    pad = nb * block - n
    cr = jnp.pad(cr, (0, pad), constant_values=10.0).reshape(nb, block)
    ci = jnp.pad(ci, (0, pad)).reshape(nb, block)
    out = lax.map(lambda a: _escape_kernel(a[0], a[1], max_iter), (cr, ci))
    return out.reshape(-1)[:n]


def _check_max_iter(max_iter):
    return check_positive_int("max_iter", max_iter)


def escape_time(c, max_iter: int = 256):
    """Escape-time counts of z_{n+1} = z_n² + c from z_0 = 0, for any array of complex c.

    Args:
      c: complex numbers, any shape (real input is taken as c + 0i).
      max_iter: iterations (a positive int).

    Returns:
      An int32 array of c's shape: how many of z_1, …, z_max_iter satisfy |z_n| ≤ 2, i.e. the
      index of the first iterate with |z_n| > 2, minus 1. It equals ``max_iter`` for the c
      whose orbit stays bounded that long: the Mandelbrot set, up to max_iter.

    Example: ``rd.maps.escape_time(jnp.array([0, -1, -2, 1j, 1, 0.5 + 0.5j, -2.1]), 100)`` is
    [100, 100, 100, 100, 2, 4, 0]: the first four are in the set.
    """
    max_iter = _check_max_iter(max_iter)
    try:
        c = jnp.asarray(c)
    except TypeError:
        raise TypeError(f"c: expected an array of complex numbers, got {type(c).__name__}.") from None
    if not jnp.issubdtype(c.dtype, jnp.number):
        raise TypeError(f"c: expected complex numbers, got dtype {c.dtype}.")
    c = c.astype(jnp.result_type(float_dtype(), jnp.complex64))
    if c.size == 0:
        return jnp.zeros(c.shape, jnp.int32)
    return _escape_time(c, max_iter)


def _check_shape(shape):
    try:
        rows, cols = shape
    except (TypeError, ValueError):
        raise TypeError(f"shape: expected (rows, cols), two positive ints, got {shape!r}.") from None
    return check_positive_int("shape[0] (rows)", rows), check_positive_int("shape[1] (cols)", cols)


def _centres(lo, hi, n, dtype):
    return lo + (jnp.arange(n, dtype=dtype) + 0.5) * ((hi - lo) / n)


@functools.partial(jax.jit, static_argnames=("shape",))
def _mandelbrot(re_range, im_range, shape, max_iter):
    dtype = re_range.dtype
    rows, cols = shape
    re = _centres(re_range[0], re_range[1], cols, dtype)
    im = _centres(im_range[0], im_range[1], rows, dtype)
    cr = jnp.broadcast_to(re[None, :], shape).reshape(-1)
    ci = jnp.broadcast_to(im[:, None], shape).reshape(-1)
    return _blocked(cr, ci, max_iter).reshape(shape)


def mandelbrot(re_range=(-2.0, 0.5), im_range=(-1.25, 1.25), shape=(1000, 1000),
               max_iter: int = 256):
    """Escape-time image of the Mandelbrot set on a grid of c (see :func:`escape_time`).

    Args:
      re_range: (lo, hi) of Re c, the columns.
      im_range: (lo, hi) of Im c, the rows.
      shape: (rows, cols) of the grid. Entry [r, k] is the cell centre with
        Re c = re_lo + (k + ½)·Δre and Im c = im_lo + (r + ½)·Δim (Δre = (re_hi − re_lo)/cols,
        Δim = (im_hi − im_lo)/rows): row 0 is the bottom (lowest Im c), so show it with
        ``origin="lower"`` (``rd.plot.mandelbrot`` does).
      max_iter: iterations, a positive int (data: a new value does not recompile).

    Returns:
      An int32 array (rows, cols) of escape counts; ``max_iter`` marks the set.

    Measured with ``benchmarks/mandelbrot.py`` (float32, 2-core AMD EPYC CPU shared with other
    jobs, load average 12): the default 1000×1000 grid at 256 iterations runs in 0.24 s (best)
    to 1.1 s (median of 5) after about 1 s of compilation; not yet measured on a GPU.

    Example: ``img = rd.maps.mandelbrot(shape=(500, 500), max_iter=100)``;
    ``rd.plot.mandelbrot(img, (-2.0, 0.5), (-1.25, 1.25))``.
    """
    re_range = _check_interval(re_range, "re_range")
    im_range = _check_interval(im_range, "im_range")
    shape = _check_shape(shape)
    max_iter = _check_max_iter(max_iter)
    return _mandelbrot(jnp.asarray(re_range, float_dtype()), jnp.asarray(im_range, float_dtype()),
                       shape, max_iter)


_SET_RE = (-2.0, 0.4715)  # the set's extent: Re c in [-2, 0.4715], |Im c| <= 1.1226
_SET_IM = 1.1226


@functools.partial(jax.jit, static_argnames=("shape",))
def _area(re_range, im_range, shape, max_iter):
    counts = _mandelbrot(re_range, im_range, shape, max_iter)
    rows, cols = shape
    pixel = (re_range[1] - re_range[0]) / cols * ((im_range[1] - im_range[0]) / rows)
    return 2 * pixel * jnp.sum(counts == max_iter).astype(re_range.dtype)


def mandelbrot_area(shape=(1000, 2000), max_iter: int = 1000, *, re_range=(-2.0, 0.5),
                    im_max: float = 1.25):
    """An estimate of the Mandelbrot set's area (known: 1.5066) by counting grid cells.

    The set is symmetric about the real axis, so only the upper half-plane
    [re_lo, re_hi] × [0, im_max] is gridded (cell centres) and the count doubled. Cells whose
    centre has not escaped after ``max_iter`` iterations count as inside, so the estimate is
    an overestimate that falls toward the area as ``max_iter`` grows (cells that escape late
    stop counting), with a grid error on the boundary on top.

    Args:
      shape: (rows, cols) of the half-plane grid: rows along Im c ∈ [0, im_max], cols along Re c.
      max_iter: iterations, a positive int (data: a new value does not recompile).
      re_range: (lo, hi) of Re c; must contain the set, [−2, 0.4715].
      im_max: the top of the half-plane; at least 1.1226 (the set's height).

    Returns:
      A scalar, the area estimate.

    Measured (float32): 1000×2000 cells at 1000 iterations give 1.5104 (0.0038 above 1.5066;
    6.5 s on a 2-core AMD EPYC CPU under load); 250×500 cells at 50, 200, 1000 iterations give
    1.5882, 1.5258, 1.5110.

    Example: ``rd.maps.mandelbrot_area((250, 500), 200)``.
    """
    shape = _check_shape(shape)
    max_iter = _check_max_iter(max_iter)
    re_range = _check_interval(re_range, "re_range")
    if not is_traced(re_range) and not (re_range[0] <= _SET_RE[0] and re_range[1] >= _SET_RE[1]):
        raise ValueError(
            f"re_range: expected a range that contains the set, [{_SET_RE[0]}, {_SET_RE[1]}], "
            f"got {re_range}; the estimate would miss part of the set."
        )
    try:
        im_max = im_max if is_traced(im_max) else float(im_max)
    except (TypeError, ValueError):
        raise TypeError(f"im_max: expected a number, got {im_max!r}.") from None
    if not is_traced(im_max) and not (math.isfinite(im_max) and im_max >= _SET_IM):
        raise ValueError(
            f"im_max: expected at least {_SET_IM} (the set's height above the real axis), got "
            f"{im_max!r}; the estimate would miss part of the set."
        )
    dtype = float_dtype()
    return _area(jnp.asarray(re_range, dtype), jnp.asarray((0.0, im_max), dtype), shape, max_iter)
