"""Plots (``rd.plot``): each takes results, returns a matplotlib Figure and accepts ``ax=``.

Results come as arrays or as results files, read through :mod:`rnn_dynamics.store` (a results
dict, a ``results.json`` path or its folder). matplotlib is imported inside the functions, so
``import rnn_dynamics`` never loads it. The plots of the other analyses (maps, dynamics,
Lyapunov spectra, training) are re-exported here from their modules when present.
"""
from __future__ import annotations

import numpy as np

__all__ = ["norm_curves"]


def _axes(ax, figsize=(7, 4.5)):
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def norm_curves(results, ax=None, *, quantiles=(0.1, 0.9)):
    """log10 ‖∂h_t/∂h_1‖₂ against t: the median over seeds with a quantile band, one per run.

    Args:
      results: spectrum results (a dict of the :mod:`rnn_dynamics.store` schema, a
        ``results.json`` path or its folder), whose runs each hold ``label`` and
        ``log10_norms`` (seeds, T-1); or a dict label -> array (seeds, T-1), e.g.
        ``{"g=1.5": rd.spectra(cell, key).log10_norms}``.
      ax: a matplotlib Axes to draw into (default: a new figure).
      quantiles: the lower and upper seed quantiles of the band (non-finite seeds left out).

    Returns:
      The matplotlib Figure. The legend gives each run's label and its number of seeds
      ("g=1.5, 32 seeds"); for results files the title gives the cell, n and T.

    Example: ``rd.plot.norm_curves("rnn_dynamics_out").savefig("norms.png")``.
    """
    from . import store

    cfg = None
    if isinstance(results, dict) and "schema" not in results:
        curves = {str(k): np.asarray(v, float) for k, v in results.items()}
    else:
        if isinstance(results, dict):
            res = store.validate(results, "spectrum")
        else:
            res = store.load_results(results, "spectrum")
        cfg = res["config"]
        curves = {r["label"]: np.asarray(r["log10_norms"], float) for r in res["runs"]}
        names = sorted({r.get("cell", cfg["cell"]) for r in res["runs"]}) or [cfg["cell"]]
    fig, ax = _axes(ax)
    for label, c in curves.items():
        c = np.atleast_2d(c)
        c = np.where(np.isfinite(c), c, np.nan)
        t = np.arange(2, c.shape[1] + 2)
        lo, med, hi = np.nanquantile(c, [quantiles[0], 0.5, quantiles[1]], axis=0)
        (line,) = ax.plot(t, med, label=f"{label}, {c.shape[0]} seeds")
        ax.fill_between(t, lo, hi, color=line.get_color(), alpha=0.25, linewidth=0)
    ax.set_xlabel("t")
    ax.set_ylabel(r"$\log_{10}\,\|\partial h_t / \partial h_1\|_2$")
    band = f"median and {quantiles[0] * 100:g}–{quantiles[1] * 100:g}% of seeds"
    if cfg is not None:
        ax.set_title(f"{', '.join(names)}, n = {cfg['hidden']}, T = {cfg['steps']}: {band}")
    else:
        ax.set_title(f"Jacobian norm vs horizon: {band}")
    ax.axhline(0.0, color="0.5", linewidth=0.8, linestyle=":")
    ax.legend(fontsize=8)
    return fig


# The other plot modules, re-exported as rd.plot.<name> (each imports matplotlib lazily).
from ._plots_maps import *  # noqa: E402,F401,F403
from ._plots_dynamics import *  # noqa: E402,F401,F403
from ._plots_lyapunov import *  # noqa: E402,F401,F403
from ._plots_train import *  # noqa: E402,F401,F403
from ._plots_study import *  # noqa: E402,F401,F403
from . import _plots_dynamics, _plots_lyapunov, _plots_maps, _plots_study, _plots_train  # noqa: E402

__all__ += [n for m in (_plots_maps, _plots_dynamics, _plots_lyapunov, _plots_train, _plots_study)
            for n in m.__all__]
