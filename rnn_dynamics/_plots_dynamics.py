"""Plots of fixed points, basins and loss landscapes (matplotlib, imported when called).

Each function takes a result (:class:`rnn_dynamics.Basins`, :class:`rnn_dynamics.FixedPoints`,
:class:`rnn_dynamics.Landscape`, :class:`rnn_dynamics.Bifurcation`), draws into ``ax`` when one
is given (else a new figure), labels its axes and returns the Figure. Re-exported as
``rd.plot.basins``, ``rd.plot.fixed_points``, ``rd.plot.landscape`` and
``rd.plot.fixed_point_branches``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["basins", "fixed_points", "landscape", "fixed_point_branches"]

_KIND_STYLE = {
    "stable": dict(color="tab:blue", marker="o"),
    "saddle": dict(color="tab:orange", marker="s"),
    "unstable": dict(color="tab:red", marker="^"),
}


def _axes(ax, n, figsize):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, axs = plt.subplots(1, n, figsize=figsize, layout="constrained")
        axs = [axs] if n == 1 else list(axs)
        return fig, axs
    axs = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
    return axs[0].figure, axs


def basins(result, ax=None, *, cmap="viridis"):
    """Basin map and sensitivity map log10 ‖∂h_T/∂h_1‖₂ side by side.

    Args:
      result: a :class:`rnn_dynamics.Basins`.
      ax: None (a new figure with two panels), two Axes (basins, sensitivity), or one Axes: the
        sensitivity map alone with the basin boundaries drawn over it.
      cmap: colour map of the sensitivity (log colour scale: the values are log10).

    Returns:
      The matplotlib Figure.

    Example: ``rd.plot.basins(rd.basins(ex.cell, ex.params, ex.grid, ex.steps)).savefig("b.png")``.
    """
    from matplotlib.colors import ListedColormap

    fig, axs = _axes(ax, 2, (10, 4.2))
    a, b = np.asarray(result.a), np.asarray(result.b)
    extent = (a[0], a[-1], b[0], b[-1])
    labels = np.asarray(result.labels)
    lg = np.asarray(result.log10_sensitivity)
    att = np.asarray(result.attractors)
    # attractor coordinates on the slice
    rel = att - np.asarray(result.base)
    coords = rel @ np.linalg.pinv(np.asarray(result.directions))
    n = len(result.base)
    plain = np.allclose(result.base, 0) and np.allclose(result.directions, np.eye(n)[:2])
    xlabel, ylabel = (("$h[0]$", "$h[1]$") if plain
                      else ("a (along direction 1)", "b (along direction 2)"))
    if len(axs) >= 2:
        k = max(int(labels.max()) + 1, 1)
        colours = ["0.85"] + [f"C{i % 10}" for i in range(k)]
        axl = axs[0]
        axl.imshow(labels.T + 1, origin="lower", extent=extent, aspect="auto",
                   cmap=ListedColormap(colours), vmin=-0.5, vmax=k + 0.5, interpolation="nearest")
        axl.scatter(coords[:, 0], coords[:, 1], c="k", marker="*", s=90, label="attractor")
        axl.set_title(f"basins after {result.steps} steps (grey: not settled)")
        axl.set_xlabel(xlabel)
        axl.set_ylabel(ylabel)
        if len(att):
            axl.legend(loc="upper right", fontsize=8)
        axs_ = axs[1]
    else:
        axs_ = axs[0]
    im = axs_.imshow(lg.T, origin="lower", extent=extent, aspect="auto", cmap=cmap,
                     interpolation="nearest")
    cb = fig.colorbar(im, ax=axs_)
    cb.set_label(r"$\log_{10}\,\|\partial h_T/\partial h_1\|_2$")
    if len(axs) == 1 and labels.max() > labels.min():
        axs_.contour(a, b, labels.T, levels=np.arange(labels.min(), labels.max()) + 0.5,
                     colors="w", linewidths=0.8)
    axs_.scatter(coords[:, 0], coords[:, 1], c="w", marker="*", s=90, edgecolors="k")
    axs_.set_title(f"sensitivity, T - 1 = {result.steps} steps")
    axs_.set_xlabel(xlabel)
    axs_.set_ylabel(ylabel)
    return fig


def fixed_points(result, ax=None):
    """Eigenvalues of ∂F/∂h at each fixed point, in the complex plane with the unit circle.

    Args:
      result: a :class:`rnn_dynamics.FixedPoints`.
      ax: an Axes to draw into (default: a new figure).

    Returns:
      The matplotlib Figure; one colour and marker per kind (stable, saddle, unstable).

    Example: ``rd.plot.fixed_points(rd.fixed_points(cell, p, None, cand)).savefig("eig.png")``.
    """
    fig, (ax,) = _axes(ax, 1, (5, 5))
    t = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(t), np.sin(t), color="0.4", linewidth=1, label="|λ| = 1")
    eigs = np.asarray(result.eigenvalues)
    kinds = np.asarray(result.kind)
    for kind, style in _KIND_STYLE.items():
        sel = kinds == kind
        if sel.any():
            e = eigs[sel].ravel()
            k = int(sel.sum())
            ax.scatter(e.real, e.imag, s=18, alpha=0.7, label=f"{kind}: {k} point{'s' * (k != 1)}",
                       **style)
    ax.axhline(0, color="0.8", linewidth=0.6)
    ax.axvline(0, color="0.8", linewidth=0.6)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title(r"eigenvalues of $\partial F/\partial h$ at the fixed points")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def landscape(result, ax=None, *, log_grad=True):
    """Loss and gradient norm over a 1-D or 2-D parameter sweep.

    Args:
      result: a :class:`rnn_dynamics.Landscape`.
      ax: 1-D: one Axes (loss on it, ‖∇L‖ on a twin axis); 2-D: two Axes (loss, ‖∇L‖).
        Default: a new figure.
      log_grad: plot the gradient norm on a log scale.

    Returns:
      The matplotlib Figure.

    Example: ``rd.plot.landscape(rd.pascanu_cliff(jnp.linspace(-4, 0, 2001))).savefig("cliff.png")``.
    """
    from matplotlib.colors import LogNorm

    loss = np.asarray(result.loss)
    gn = np.asarray(result.grad_norm)
    names = result.names
    if loss.ndim == 1:
        fig, (ax,) = _axes(ax, 1, (7, 4))
        v = np.asarray(result.values[0])
        ax.plot(v, loss, color="tab:blue")
        ax.set_xlabel(names[0])
        ax.set_ylabel("loss", color="tab:blue")
        ax2 = ax.twinx()
        ax2.plot(v, gn, color="tab:red", linewidth=0.9)
        if log_grad:
            ax2.set_yscale("log")
        ax2.set_ylabel(r"$\|\nabla_\theta L\|_2$", color="tab:red")
        ax.set_title(f"loss and gradient norm against {names[0]}")
        return fig
    fig, axs = _axes(ax, 2, (11, 4.2))
    v0, v1 = (np.asarray(v) for v in result.values)
    extent = (v0[0], v0[-1], v1[0], v1[-1])
    im = axs[0].imshow(loss.T, origin="lower", extent=extent, aspect="auto", cmap="viridis")
    fig.colorbar(im, ax=axs[0]).set_label("loss")
    axs[0].set_title("loss")
    pos = gn[gn > 0]
    norm = LogNorm(vmin=pos.min(), vmax=pos.max()) if (log_grad and pos.size) else None
    im = axs[1].imshow(gn.T, origin="lower", extent=extent, aspect="auto", cmap="magma", norm=norm)
    fig.colorbar(im, ax=axs[1]).set_label(r"$\|\nabla_\theta L\|_2$")
    axs[1].set_title("gradient norm")
    for a in axs[:2]:
        a.set_xlabel(names[0])
        a.set_ylabel(names[1])
    return fig


def fixed_point_branches(result, ax=None):
    """Fixed points of a one-unit cell against the swept parameter (a bifurcation diagram from
    :func:`rnn_dynamics.bifurcation`): stable filled, unstable open. (``rd.plot.bifurcation``
    plots the long-run orbits of an iterated map, :func:`rnn_dynamics.maps.bifurcation`.)

    Args:
      result: a :class:`rnn_dynamics.Bifurcation`.
      ax: an Axes (default: a new figure).

    Returns:
      The matplotlib Figure.

    Example: ``rd.plot.fixed_point_branches(rd.bifurcation(cell, p, "b", jnp.linspace(-4, 0, 401)))``.
    """
    fig, (ax,) = _axes(ax, 1, (7, 4))
    v = np.asarray(result.values)
    pts = np.asarray(result.points)
    st = np.asarray(result.stable)
    V = np.broadcast_to(v[:, None], pts.shape)
    ok = np.isfinite(pts)
    ax.scatter(V[ok & st], pts[ok & st], s=4, color="tab:blue", label="stable (|F′| < 1)")
    ax.scatter(V[ok & ~st], pts[ok & ~st], s=4, facecolors="none", edgecolors="tab:red",
               label="unstable (|F′| > 1)")
    ax.set_xlabel(result.name)
    ax.set_ylabel("fixed point x*")
    ax.set_title(f"fixed points against {result.name}")
    ax.legend(fontsize=8)
    return fig
