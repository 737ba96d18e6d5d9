"""Plots of results (arrays or a results directory); each returns a Figure and takes ``ax=``."""
from __future__ import annotations

import numpy as np

__all__ = ["norm_curves"]


def norm_curves(results, ax=None, *, quantiles=(0.1, 0.9)):
    """log10 ‖∂h_t/∂h_1‖₂ against t: the median over seeds with a quantile band, one per run.

    Args:
      results: a results dict as written by ``rnn-dynamics spectrum`` (or its directory), whose
        ``runs`` each hold ``label`` and ``log10_norms`` (seeds, T-1); or a dict label -> array
        (seeds, T-1).
      ax: a matplotlib Axes to draw into (default: a new figure).
      quantiles: the lower and upper seed quantiles of the band.

    Returns:
      The matplotlib Figure.

    Example: ``rd.plot.norm_curves("rnn_dynamics_out").savefig("norms.png")``.
    """
    import matplotlib.pyplot as plt

    from .store import load_json

    if not isinstance(results, dict):
        results = load_json(results)
    if "runs" in results:
        curves = {r["label"]: np.asarray(r["log10_norms"], float) for r in results["runs"]}
    else:
        curves = {k: np.asarray(v, float) for k, v in results.items()}
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    else:
        fig = ax.figure
    for label, c in curves.items():
        c = np.atleast_2d(c)
        t = np.arange(2, c.shape[1] + 2)
        lo, med, hi = np.nanquantile(c, [quantiles[0], 0.5, quantiles[1]], axis=0)
        (line,) = ax.plot(t, med, label=f"{label} (n={c.shape[0]} seeds)")
        ax.fill_between(t, lo, hi, color=line.get_color(), alpha=0.25, linewidth=0)
    ax.set_xlabel("t")
    ax.set_ylabel(r"$\log_{10}\,\|\partial h_t / \partial h_1\|_2$")
    ax.set_title(
        f"Jacobian norm vs horizon: median, {int(quantiles[0] * 100)}–{int(quantiles[1] * 100)}% of seeds"
    )
    ax.axhline(0.0, color="0.5", linewidth=0.8, linestyle=":")
    ax.legend(fontsize=8)
    return fig
