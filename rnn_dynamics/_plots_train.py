"""Plots of training runs and of the remedies comparison (matplotlib, imported lazily).

Each function takes results (a :class:`rnn_dynamics.TrainResult`, its ``logs`` dict, or the
rows of :func:`rnn_dynamics.remedies.compare`), draws on ``ax`` if given (else a new figure),
labels its axes and returns the Figure.
"""
from __future__ import annotations

import numpy as np

__all__ = ["plot_training", "plot_stability", "plot_compare"]


def _logs(result):
    logs = getattr(result, "logs", result)
    if not isinstance(logs, dict) or "step" not in logs:
        raise TypeError(
            f"result: expected an rd.TrainResult or its logs dict (with a 'step' entry), got "
            f"{type(result).__name__}."
        )
    return logs


def _axes(ax, figsize=(6.4, 4.0)):
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def _seed_lines(ax, steps, values, color, label, log=False):
    values = np.atleast_2d(np.asarray(values, float))
    for s, v in enumerate(values):
        ok = np.isfinite(v)
        ax.plot(steps[ok], v[ok], color=color, alpha=0.8, lw=1.2, label=label if s == 0 else None)
    if log:
        ax.set_yscale("log")


def plot_training(result, ax=None):
    """Loss (left axis, log scale: probe loss solid, training loss dashed) and gradient norm
    (right axis, log scale) against step, one line per seed.

    Args:
      result: an :class:`rnn_dynamics.TrainResult` or its ``logs`` dict.
      ax: optional matplotlib Axes.

    Returns: the Figure. Example: ``rd.plot.plot_training(res).savefig("loss.png")``.
    """
    logs = _logs(result)
    fig, ax = _axes(ax)
    steps = np.asarray(logs["step"])
    _seed_lines(ax, steps, logs["probe_loss"], "C0", "probe loss", log=True)
    if "loss" in logs:
        vals = np.atleast_2d(np.asarray(logs["loss"], float))
        for s, v in enumerate(vals):
            ok = np.isfinite(v)
            ax.plot(steps[ok], v[ok], "--", color="C0", alpha=0.5, lw=1,
                    label="training loss" if s == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    _seed_lines(ax2, steps, logs["grad_norm"], "C3", "gradient norm", log=True)
    ax2.set_ylabel("gradient norm ‖∇L‖ (mean since last log)", color="C3")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=8)
    return fig


def plot_stability(result, ax=None):
    """log10 ‖∂h_T/∂h_1‖₂ (left axis) and λ_max in nats per step (right axis, with 0 marked)
    against step, one line per seed.

    Args: as :func:`plot_training`. Returns: the Figure.
    Example: ``rd.plot.plot_stability(res)``.
    """
    logs = _logs(result)
    fig, ax = _axes(ax)
    steps = np.asarray(logs["step"])
    _seed_lines(ax, steps, logs["log10_jacobian_norm"], "C2", "log10 ‖∂h_T/∂h_1‖₂")
    ax.set_xlabel("step")
    ax.set_ylabel("log10 ‖∂h_T/∂h_1‖₂ (probe mean)", color="C2")
    ax2 = ax.twinx()
    _seed_lines(ax2, steps, logs["lambda_max"], "C4", "λ_max")
    ax2.axhline(0.0, color="C4", lw=0.6, ls=":")
    ax2.set_ylabel("λ_max (nats per step)", color="C4")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="best", fontsize=8)
    return fig


def plot_compare(rows, ax=None, baseline: float | None = 1.0 / 6.0):
    """Final test MSE per configuration (one dot per seed, bar at the median), log scale,
    with the baseline (default 1/6, the adding problem's mean predictor) dashed.

    Args:
      rows: the list returned by :func:`rnn_dynamics.remedies.compare` (rows may carry a
        ``length``; each (name, length) gets its own bar).
      ax: optional Axes. baseline: a horizontal reference line, or None.

    Returns: the Figure. Example: ``rd.plot.plot_compare(rows).savefig("compare.png")``.
    """
    if not rows:
        raise ValueError("rows: expected at least one row from rd.remedies.compare.")
    fig, ax = _axes(ax, figsize=(max(6.4, 0.55 * len(rows)), 4.0))
    labels = [r["name"] + (f"\nT={r['length']}" if "length" in r else "") for r in rows]
    for i, r in enumerate(rows):
        mse = np.asarray(r["test_mse"], float)
        ax.bar(i, np.nanmedian(mse), color="C0", alpha=0.35)
        ax.plot(np.full(mse.shape, i), mse, "o", color="C0", ms=4)
    if baseline is not None:
        ax.axhline(baseline, color="k", ls="--", lw=1, label=f"baseline {baseline:.3g}")
        ax.legend(fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("final test MSE")
    ax.set_xlabel("configuration")
    fig.tight_layout()
    return fig
