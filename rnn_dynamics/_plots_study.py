"""Plots of a study store (``rd.plot.study_*``): replot any time from the folder, no recomputing.

Each function takes a study folder written by :func:`rnn_dynamics.study.run` (or the dict from
:func:`rnn_dynamics.study.read`), an optional ``ax=`` and ``where=`` (a dict selecting
configurations, e.g. ``{"hidden": 64, "input_scale": 0.0}``; default: those that share the first
configuration's cell, activation, sizes, steps and input scale, i.e. one line per gain), and
returns the matplotlib Figure. matplotlib is imported inside the functions.
"""
from __future__ import annotations

import numpy as np

__all__ = ["study_norms", "study_phase", "study_singular_values", "study_lyapunov"]

_KEYS = ("cell", "activation", "init", "hidden", "inputs", "steps", "gain", "input_scale")


def _axes(ax):
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    return fig, ax


def _select(out, where, need):
    """(results, configurations sorted by gain) for the plot; ``need``: the array it reads."""
    from .study import read

    res = out if isinstance(out, dict) else read(out)
    cfgs = res["configurations"]
    if not cfgs:
        raise ValueError("out: the study holds no finished configuration yet; run it first.")
    if where is None:
        first = cfgs[0]
        where = {k: first[k] for k in _KEYS if k != "gain"}
    elif not isinstance(where, dict) or set(where) - set(_KEYS):
        raise ValueError(f"where: expected a dict with keys among {', '.join(_KEYS)}, got {where!r}.")
    chosen = [c for c in cfgs if all(c[k] == v for k, v in where.items())]
    if not chosen:
        raise ValueError(f"where: no finished configuration matches {where!r}.")
    if need not in res["arrays"][chosen[0]["id"]]:
        metric = {"lyapunov": "lyapunov", "singular_values": "norms' or 'dense"}.get(need, "norms")
        raise ValueError(f"out: this study did not compute {need!r}; add {metric!r} to its metrics.")
    return res, sorted(chosen, key=lambda c: c["gain"])


def _title(c, res):
    act = f" {c['activation']}" if c["activation"] else ""
    return (f"{c['cell']}{act}, n = {c['hidden']}, T = {c['steps']}, input scale "
            f"{c['input_scale']:g}, {res['study'].seeds} seeds")


def _finite(a):
    a = np.asarray(a, float)
    return np.where(np.isfinite(a), a, np.nan)


def study_norms(out, ax=None, *, where=None, quantiles=(0.1, 0.9)):
    """log10 ‖∂h_t/∂h_1‖₂ against t: per gain, the median over seeds with a quantile band.

    Args:
      out: a study folder (or :func:`rnn_dynamics.study.read`'s dict) with the ``"norms"`` metric.
      ax: a matplotlib Axes (default: a new figure). where: which configurations (module doc).
      quantiles: the band's lower and upper seed quantiles.

    Returns the Figure. Example: ``rd.plot.study_norms("out").savefig("norms.png")``.
    """
    res, cfgs = _select(out, where, "log10_norms")
    fig, ax = _axes(ax)
    for c in cfgs:
        curve = _finite(res["arrays"][c["id"]]["log10_norms"])
        t = np.arange(2, curve.shape[1] + 2)
        lo, med, hi = np.nanquantile(curve, [quantiles[0], 0.5, quantiles[1]], axis=0)
        (line,) = ax.plot(t, med, label=f"g = {c['gain']:g}")
        ax.fill_between(t, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.axhline(0.0, color="0.5", linewidth=0.8, linestyle=":")
    ax.set_xlabel("t")
    ax.set_ylabel(r"$\log_{10}\,\|\partial h_t/\partial h_1\|_2$")
    ax.set_title(f"{_title(cfgs[0], res)}: median, {quantiles[0]:g}–{quantiles[1]:g} quantiles",
                 fontsize=9)
    ax.legend(fontsize=8)
    return fig


def study_phase(out, ax=None, *, where=None):
    """Phase diagram: gain × t → median over seeds of log10 ‖∂h_t/∂h_1‖₂, with the zero contour
    (the border between vanishing and exploding).

    Args: as :func:`study_norms`; needs at least two gains. Returns the Figure (with a colour
    bar). Example: ``rd.plot.study_phase("out")``.
    """
    res, cfgs = _select(out, where, "log10_norms")
    if len(cfgs) < 2:
        raise ValueError(f"out: the phase diagram needs at least two gains, the selection holds "
                         f"{len(cfgs)}; add gains to the study or change where=.")
    from matplotlib.colors import TwoSlopeNorm

    gains = np.array([c["gain"] for c in cfgs])
    Z = np.stack([np.nanmedian(_finite(res["arrays"][c["id"]]["log10_norms"]), axis=0)
                  for c in cfgs])
    t = np.arange(2, Z.shape[1] + 2)
    fig, ax = _axes(ax)
    lo, hi = np.nanmin(Z), np.nanmax(Z)
    norm = TwoSlopeNorm(0.0, min(lo, -1e-6), max(hi, 1e-6))
    mesh = ax.pcolormesh(t, gains, Z, cmap="RdBu_r", norm=norm, shading="nearest")
    fig.colorbar(mesh, ax=ax, label=r"median $\log_{10}\,\|\partial h_t/\partial h_1\|_2$")
    if lo < 0 < hi:
        ax.contour(t, gains, Z, levels=[0.0], colors="k", linewidths=1.2)
    ax.set_xlabel("t")
    ax.set_ylabel("gain g")
    ax.set_title(f"{_title(cfgs[0], res)}; black: ‖∂h_t/∂h_1‖₂ = 1", fontsize=9)
    return fig


def study_singular_values(out, ax=None, *, where=None, bins=40):
    """Histograms of log10 σ_i(∂h_T/∂h_1) over all seeds, one per configuration (per gain).

    Only the resolved singular values are counted: a dense product computed in floating point
    holds its small singular values only down to about n·ε·σ_max (ε the dtype's epsilon,
    1.2e-7 in float32); below that, and below tiny/ε (the smallest normal number over ε: 1e-31 in
    float32, where products have lost their precision to underflow), they are rounding noise. Seeds whose dense matrix left the float range (σ_max = 0 or non-finite)
    are left out. The legend gives the share of singular values resolved. Returns the Figure.
    Example: ``rd.plot.study_singular_values("out")``.
    """
    res, cfgs = _select(out, where, "singular_values")
    fig, ax = _axes(ax)
    for c in cfgs:
        sv = np.asarray(res["arrays"][c["id"]]["singular_values"])
        info = np.finfo(sv.dtype)
        sv = sv.astype(float)
        ok = np.all(np.isfinite(sv), axis=1) & (sv[:, 0] > 0)
        floor = np.maximum(sv[:, :1] * sv.shape[1] * float(info.eps), float(info.tiny / info.eps))
        keep = ok[:, None] & (sv >= floor)
        logs = np.log10(sv[keep])
        if logs.size:
            ax.hist(logs, bins=bins, histtype="step", density=True,
                    label=f"g = {c['gain']:g} ({100 * keep.mean():.0f}% resolved)")
    ax.set_xlabel(r"$\log_{10}\,\sigma_i(\partial h_T/\partial h_1)$")
    ax.set_ylabel("density over seeds and i")
    ax.set_title(f"{_title(cfgs[0], res)}; σ_i ≥ n·ε·σ_max", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def study_lyapunov(out, ax=None, *, where=None, quantiles=(0.1, 0.9)):
    """λ_max against gain (median over seeds, quantile band), with the mean-field λ_max
    (``rd.theory.mean_field_lyapunov``, input variance = input_scale²) for vanilla cells.

    Needs the ``"lyapunov"`` metric. Returns the Figure. Example: ``rd.plot.study_lyapunov("out")``.
    """
    res, cfgs = _select(out, where, "lyapunov")
    gains = np.array([c["gain"] for c in cfgs])
    lam = [_finite(res["arrays"][c["id"]]["lyapunov"][:, 0]) for c in cfgs]
    lo, med, hi = np.array([np.nanquantile(v, [quantiles[0], 0.5, quantiles[1]]) for v in lam]).T
    fig, ax = _axes(ax)
    ax.fill_between(gains, lo, hi, alpha=0.25, linewidth=0)
    ax.plot(gains, med, "o-", label=r"$\lambda_{\max}$, median over seeds")
    c0 = cfgs[0]
    if c0["cell"] == "vanilla" and c0["activation"] == "tanh":
        from .theory import mean_field_lyapunov

        g = np.linspace(max(gains.min(), 1e-3), gains.max(), 200)
        mf = np.asarray(mean_field_lyapunov("tanh", g, input_variance=c0["input_scale"] ** 2))
        ax.plot(g, mf, "k--", label="mean field (n → ∞)")
    ax.axhline(0.0, color="0.5", linewidth=0.8, linestyle=":")
    ax.set_xlabel("gain g")
    ax.set_ylabel(r"$\lambda_{\max}$ (nats per step)")
    ax.set_title(_title(c0, res), fontsize=9)
    ax.legend(fontsize=8)
    return fig
