"""Plots of Lyapunov spectra: spectrum per gain, λ_max against g with mean field, convergence.

Thin layers over results (arrays, a :class:`rnn_dynamics.LyapunovSpectrum`, or the
``results.json`` written by ``rnn-dynamics lyapunov``). matplotlib is imported inside each
function. Each takes an optional ``ax=`` and returns the Figure.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["lyapunov_spectrum", "lyapunov_vs_gain", "lyapunov_convergence"]


def _axes(ax):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    return ax.figure, ax


def _load(results):
    """A results dict from a dict, a results.json path or a folder holding one; else None."""
    if isinstance(results, dict):
        return results
    if isinstance(results, (str, Path)):
        p = Path(results)
        if p.is_dir():
            p = p / "results.json"
        with open(p) as f:
            return json.load(f)
    return None


def _as_float(a):
    """A float array from JSON lists (null -> NaN)."""
    return np.array(a, dtype=float)


def _check_quantiles(quantiles):
    lo, hi = quantiles
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"quantiles: expected (lo, hi) with 0 <= lo < hi <= 1, got {quantiles!r}.")
    return lo, hi


def lyapunov_spectrum(exponents, ax=None, *, gains=None, quantiles=(0.1, 0.9)):
    """Exponent λ_i against its index i, the median over seeds with a quantile band, per gain.

    Args:
      exponents: (k,) one spectrum, (seeds, k) several seeds, or (gains, seeds, k); or a results
        dict / results.json path / folder from ``rnn-dynamics lyapunov``.
      ax: a matplotlib Axes to draw into (default: a new figure).
      gains: (gains,) labels for the curves (taken from the results when given those).
      quantiles: the band over seeds (default 10%..90%).

    Returns:
      The Figure. Exponents of -inf (directions killed exactly) are left out of the curves.

    Example: ``rd.plot.lyapunov_spectrum(jax.vmap(spec)(params).exponents)``.
    """
    lo, hi = _check_quantiles(quantiles)
    res = _load(exponents)
    if res is not None:
        gains = [r["gain"] for r in res["runs"]]
        E = [_as_float(r["exponents"]) for r in res["runs"]]
    else:
        e = np.asarray(exponents, float)
        if e.ndim == 1:
            e = e[None, None]
        elif e.ndim == 2:
            e = e[None]
        if e.ndim != 3:
            raise ValueError(f"exponents: expected (k,), (seeds, k) or (gains, seeds, k), got shape {e.shape}.")
        E = list(e)
    if gains is not None and len(gains) != len(E):
        raise ValueError(f"gains: expected {len(E)} labels (one per spectrum group), got {len(gains)}.")
    fig, ax = _axes(ax)
    for j, e in enumerate(E):
        e = np.where(np.isfinite(e), e, np.nan)  # -inf (a direction killed exactly) is not drawn
        i = np.arange(1, e.shape[-1] + 1)
        med = np.nanmedian(e, axis=0)
        label = f"g = {gains[j]:g}" if gains is not None else None
        (line,) = ax.plot(i, med, lw=1.5, label=label)
        if e.shape[0] > 1:
            ax.fill_between(i, np.nanquantile(e, lo, axis=0), np.nanquantile(e, hi, axis=0),
                            color=line.get_color(), alpha=0.25, lw=0)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("index i")
    ax.set_ylabel("Lyapunov exponent λ_i (nats per step)")
    ax.set_title("Lyapunov spectrum")
    if gains is not None:
        ax.legend(fontsize=8)
    return fig


def lyapunov_vs_gain(gains, lambda_max=None, ax=None, *, activation="tanh", input_variance=0.0,
                     theory=True, quantiles=(0.1, 0.9)):
    """λ_max against the gain g: median over seeds with a quantile band, mean field over it.

    Args:
      gains: (G,) gains; or a results dict / results.json path / folder (then ``lambda_max``,
        ``activation`` and ``input_variance`` come from it).
      lambda_max: (G,) or (G, seeds) measured largest exponents.
      ax: optional Axes.
      activation, input_variance: for the mean-field curve ½·ln χ₁ (``rd.theory.mean_field``).
      theory: draw the mean-field curve (for vanilla cells; False to omit).
      quantiles: the band over seeds.

    Returns:
      The Figure.

    Example: ``rd.plot.lyapunov_vs_gain(gains, lam)`` with lam (G, seeds).
    """
    lo, hi = _check_quantiles(quantiles)
    res = _load(gains)
    if res is not None:
        g = np.asarray([r["gain"] for r in res["runs"]], float)
        lam = [_as_float(r["lambda_max"]) for r in res["runs"]]
        cfg = res.get("config", {})
        activation = cfg.get("activation", activation)
        input_variance = float(cfg.get("input_scale", 0.0)) ** 2
        theory = theory and cfg.get("cell") == "vanilla"
    else:
        if lambda_max is None:
            raise TypeError("lambda_max: expected the measured exponents (G,) or (G, seeds).")
        g = np.asarray(gains, float)
        lm = np.asarray(lambda_max, float)
        if lm.shape[0] != g.shape[0]:
            raise ValueError(f"lambda_max: expected a leading axis of {g.shape[0]} (one per gain), got shape {lm.shape}.")
        lam = [np.atleast_1d(x) for x in lm]
    fig, ax = _axes(ax)
    med = np.array([np.nanmedian(x) for x in lam])
    ax.plot(g, med, "o-", lw=1.5, label="measured (median over seeds)")
    if max(len(x) for x in lam) > 1:
        ax.fill_between(g, [np.nanquantile(x, lo) for x in lam], [np.nanquantile(x, hi) for x in lam],
                        alpha=0.25, lw=0, label=f"{int(100 * lo)}–{int(100 * hi)}% of seeds")
    if theory:
        import jax.numpy as jnp

        from .theory import mean_field_lyapunov

        gg = np.linspace(max(float(np.min(g)) * 0.9, 1e-3), float(np.max(g)) * 1.05, 200)
        mf = np.asarray(mean_field_lyapunov(activation, jnp.asarray(gg), input_variance))
        ax.plot(gg, mf, "k--", lw=1, label="mean field ½ ln χ₁")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("gain g")
    ax.set_ylabel("λ_max (nats per step)")
    ax.set_title("Largest Lyapunov exponent against gain")
    ax.legend(fontsize=8)
    return fig


def lyapunov_convergence(spectrum, ax=None, *, steps=None, indices=None):
    """Running estimates of the exponents against the number of measured steps (log x axis).

    Args:
      spectrum: a :class:`rnn_dynamics.LyapunovSpectrum` computed with ``history=True``, or a
        (B, k) array of running estimates (then pass ``steps`` (B,)).
      ax: optional Axes.
      steps: (B,) steps measured at each row, when ``spectrum`` is an array (default 1..B).
      indices: which exponents to draw (default the first min(k, 8)).

    Returns:
      The Figure.

    Example: ``rd.plot.lyapunov_convergence(rd.lyapunov_spectrum(..., history=True))``.
    """
    running = getattr(spectrum, "running", spectrum)
    if running is None:
        raise ValueError("spectrum: no history; call rd.lyapunov_spectrum(..., history=True).")
    run = np.asarray(running, float)
    if run.ndim == 1:
        run = run[:, None]
    if run.ndim != 2:
        raise ValueError(f"spectrum: expected running estimates (B, k), got shape {run.shape}.")
    if steps is None:
        steps = getattr(spectrum, "steps", None)
    t = np.arange(1, run.shape[0] + 1) if steps is None else np.asarray(steps, float)
    if t.shape[0] != run.shape[0]:
        raise ValueError(f"steps: expected {run.shape[0]} entries, got {t.shape[0]}.")
    idx = range(min(run.shape[1], 8)) if indices is None else indices
    fig, ax = _axes(ax)
    for i in idx:
        ax.plot(t, run[:, i], lw=1, label=f"λ_{i + 1}")
    ax.set_xscale("log")
    ax.set_xlabel("steps measured")
    ax.set_ylabel("running estimate (nats per step)")
    ax.set_title("Convergence of the Lyapunov exponents")
    ax.legend(fontsize=8, ncol=2)
    return fig
