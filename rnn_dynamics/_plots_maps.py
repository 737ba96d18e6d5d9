"""Plots of iterated maps: cobweb, phase plot, bifurcation diagram, Mandelbrot image.

Each function takes results of :mod:`rnn_dynamics.maps` (and the map itself where a curve is
drawn), draws into ``ax`` (a new figure when None), labels its axes and returns the Figure.
matplotlib is imported inside the functions.
"""
from __future__ import annotations

import numpy as np

__all__ = ["cobweb", "phase", "bifurcation", "mandelbrot"]

_STYLE = {  # marker style per kind of fixed point: filled attracts, open repels
    "sink": dict(marker="o", facecolors="C3", edgecolors="C3"),
    "source": dict(marker="o", facecolors="white", edgecolors="C3"),
    "neutral": dict(marker="s", facecolors="C1", edgecolors="C1"),
}


def _axes(ax, figsize=(5.5, 5)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


def _curve(f, lo, hi, samples):
    import jax
    import jax.numpy as jnp

    xs = jnp.linspace(lo, hi, samples)
    return np.asarray(xs), np.asarray(jax.vmap(f)(xs))


def _title(f, what):
    describe = getattr(f, "describe", None)
    return f"{what} of f(x) = {describe()}" if describe else what


def _as_orbit(orbit):
    o = np.asarray(orbit, dtype=float)
    if o.ndim != 1 or o.size < 2:
        raise ValueError(
            f"orbit: expected a 1-D orbit x_0..x_T with at least 2 points (rd.maps.iterate of a "
            f"scalar x0), got shape {o.shape}."
        )
    return o


def _range(interval, values):
    if interval is not None:
        lo, hi = map(float, interval)
        if not lo < hi:
            raise ValueError(f"interval: expected (a, b) with a < b, got {interval!r}.")
        return lo, hi
    v = values[np.isfinite(values)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    return lo - pad, hi + pad


def cobweb(f, orbit, *, interval=None, ax=None, samples: int = 400):
    """Cobweb plot of an orbit: y = f(x), the identity y = x, and the staircase x_t → x_{t+1}.

    Args:
      f: the scalar map the orbit came from (for the curve).
      orbit: (T+1,) the orbit x_0..x_T, e.g. ``rd.maps.iterate(f, x0, T)``.
      interval: (a, b) for the x axis and the curve; default: the orbit's range, padded 5%.
      ax: a matplotlib Axes to draw into (default: a new figure).
      samples: points on the curve.

    Returns:
      The matplotlib Figure.

    Example::

        f = rd.maps.quadratic(0.15)
        rd.plot.cobweb(f, rd.maps.iterate(f, 0.7, 30), interval=(0, 1)).savefig("cobweb.png")
    """
    o = _as_orbit(orbit)
    lo, hi = _range(interval, o)
    fig, ax = _axes(ax)
    xs, ys = _curve(f, lo, hi, samples)
    ax.plot(xs, ys, color="C0", label="y = f(x)")
    ax.plot([lo, hi], [lo, hi], color="0.4", linestyle="--", linewidth=1, label="y = x")
    # (x0, x0) -> (x0, x1) -> (x1, x1) -> (x1, x2) -> ...
    px = np.repeat(o, 2)[1:-1]
    py = np.repeat(o, 2)[2:]
    px = np.concatenate([[o[0]], px])
    py = np.concatenate([[o[0]], py])
    ax.plot(px, py, color="C2", linewidth=0.9, label="orbit")
    ax.scatter([o[0]], [o[0]], color="C2", zorder=3, s=20, label=f"x₀ = {o[0]:.4g}")
    ax.set_xlim(lo, hi)
    ax.set_xlabel(r"$x_t$")
    ax.set_ylabel(r"$x_{t+1}$")
    ax.set_title(_title(f, f"Cobweb, {o.size - 1} steps"))
    ax.legend(fontsize=8, loc="best")
    return fig


def phase(f, interval, *, fixed_points=None, orbit=None, ax=None, samples: int = 400):
    """Phase plot x_{t+1} against x_t: the map, the identity line, fixed points by stability.

    Sinks (|f′(x*)| < 1) are filled circles, sources (|f′(x*)| > 1) open circles, neutral
    points squares; each is labelled with x* and f′(x*).

    Args:
      f: a scalar map.
      interval: (a, b), the x range (and where fixed points are looked for).
      fixed_points: a result of ``rd.maps.fixed_points``; computed on ``interval`` when None.
      orbit: optional (T+1,) orbit, drawn as points (x_t, x_{t+1}).
      ax: a matplotlib Axes (default: a new figure).
      samples: points on the curve.

    Returns:
      The matplotlib Figure.

    Example: ``rd.plot.phase(rd.maps.quadratic(0.15), (0, 1))`` marks the sink 0.18377 and the
    source 0.81623.
    """
    from .maps import fixed_points as find_fixed_points

    lo, hi = _range(interval, np.zeros(0))
    if fixed_points is None:
        fixed_points = find_fixed_points(f, (lo, hi))
    loc = np.asarray(fixed_points.location, dtype=float)
    der = np.asarray(fixed_points.derivative, dtype=float)
    kinds = fixed_points.kind
    if not isinstance(kinds, tuple):  # codes from a traced call: drop the padding
        from .maps import KINDS

        codes = np.asarray(kinds)
        keep = codes >= 0
        loc, der, kinds = loc[keep], der[keep], tuple(KINDS[c] for c in codes[keep])
    fig, ax = _axes(ax)
    xs, ys = _curve(f, lo, hi, samples)
    ax.plot(xs, ys, color="C0", label=r"$x_{t+1} = f(x_t)$")
    ax.plot([lo, hi], [lo, hi], color="0.4", linestyle="--", linewidth=1, label="identity")
    if orbit is not None:
        o = _as_orbit(orbit)
        ax.scatter(o[:-1], o[1:], s=8, color="C2", alpha=0.7, label="orbit", zorder=2)
    for kind in ("sink", "source", "neutral"):
        sel = [i for i, k in enumerate(kinds) if k == kind]
        if sel:
            ax.scatter(loc[sel], loc[sel], s=60, zorder=4, linewidths=1.5, label=kind,
                       **_STYLE[kind])
    for x, d in zip(loc, der):
        ax.annotate(f"x*={x:.5g}\nf′={d:.4g}", (x, x), xytext=(6, -22), textcoords="offset points",
                    fontsize=8)
    ax.set_xlim(lo, hi)
    ax.set_xlabel(r"$x_t$")
    ax.set_ylabel(r"$x_{t+1}$")
    ax.set_title(_title(f, "Phase plot"))
    ax.legend(fontsize=8, loc="best")
    return fig


def bifurcation(params, iterates, *, ax=None, param_name: str = "r", markersize: float = 0.2):
    """Bifurcation diagram: the long-run iterates of each parameter's map against the parameter.

    Args:
      params: (P,) the parameters.
      iterates: (P, keep) the last iterates per parameter, from ``rd.maps.bifurcation``.
      ax: a matplotlib Axes (default: a new figure).
      param_name: the x-axis label.
      markersize: the dot size.

    Returns:
      The matplotlib Figure.

    Example::

        rs = jnp.linspace(2.5, 4.0, 800)
        rd.plot.bifurcation(rs, rd.maps.bifurcation(rd.maps.logistic, rs, 0.2, 1000, 200))
    """
    p = np.asarray(params, dtype=float)
    it = np.asarray(iterates, dtype=float)
    if p.ndim != 1 or it.ndim != 2 or it.shape[0] != p.shape[0]:
        raise ValueError(
            f"iterates: expected shape (P, keep) with P = len(params) = {p.shape}, got {it.shape}."
        )
    fig, ax = _axes(ax, figsize=(8, 5))
    ax.plot(np.repeat(p, it.shape[1]), it.reshape(-1), ",", color="k", alpha=0.4,
            markersize=markersize)
    ax.set_xlim(p.min(), p.max())
    ax.set_xlabel(param_name)
    ax.set_ylabel(f"x (last {it.shape[1]} iterates)")
    ax.set_title("Bifurcation diagram")
    return fig


def mandelbrot(counts, re_range=(-2.0, 0.5), im_range=(-1.25, 1.25), *, ax=None,
               max_iter: int | None = None, cmap: str = "viridis"):
    """The Mandelbrot set from escape counts: the set black, outside coloured by log escape time.

    Args:
      counts: (rows, cols) escape counts from ``rd.maps.mandelbrot`` (row 0 = lowest Im c).
      re_range, im_range: the ranges the counts were computed on.
      ax: a matplotlib Axes (default: a new figure).
      max_iter: the count that marks the set (default: the largest count present).
      cmap: a matplotlib colormap for the outside (one that does not start at black, so that
        the set stands out).

    Returns:
      The matplotlib Figure.

    Example: ``rd.plot.mandelbrot(rd.maps.mandelbrot(shape=(600, 600), max_iter=200))``.
    """
    c = np.asarray(counts)
    if c.ndim != 2:
        raise ValueError(f"counts: expected a 2-D image (rows, cols), got shape {c.shape}.")
    top = int(c.max()) if max_iter is None else int(max_iter)
    inside = c >= top
    img = np.ma.masked_array(np.log1p(c.astype(float)), mask=inside)
    import matplotlib as mpl

    cm = mpl.colormaps[cmap].with_extremes(bad="black")
    aspect = (im_range[1] - im_range[0]) / (re_range[1] - re_range[0])
    fig, ax = _axes(ax, figsize=(6, 6 * aspect + 0.6))
    im = ax.imshow(img, origin="lower", extent=(*re_range, *im_range), cmap=cm,
                   interpolation="nearest", aspect="equal")
    ax.set_xlabel("Re c")
    ax.set_ylabel("Im c")
    ax.set_title(f"Mandelbrot set ({top} iterations; black: bounded)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="log(1 + escape time)")
    return fig
