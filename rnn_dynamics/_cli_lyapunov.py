"""``rnn-dynamics lyapunov``: Lyapunov spectra of random networks over gains and seeds.

A thin argparse layer over :func:`rnn_dynamics.lyapunov_spectrum`,
:func:`rnn_dynamics.kaplan_yorke_dimension`, :mod:`rnn_dynamics.theory` and the plots in
:mod:`rnn_dynamics._plots_lyapunov`. ``register(subparsers)`` adds the sub-command.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from . import cells, store

__all__ = ["register", "run", "format_table"]

CELLS = ("vanilla", "linear", "lstm", "gru")  # the kinds of rd.cells.from_gain offered here


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``lyapunov`` sub-command to an ``argparse`` sub-parsers object; returns it."""
    s = subparsers.add_parser(
        "lyapunov",
        help="Lyapunov spectra (QR method) over gains and seeds, with the mean-field λ_max.",
        description=(
            "For each gain: --seeds random networks, h_1 ~ N(0, 1) per unit, inputs x_t ~ "
            "N(0, input_scale²) (none when --input-scale is 0, the default: an autonomous "
            "network), and the k leading Lyapunov exponents by QR re-orthonormalisation over "
            "T-1 steps after --warmup. Prints λ_max, λ_min and the Kaplan–Yorke dimension "
            "(seed median and 10%/90% quantiles) and the mean-field λ_max = ½ ln χ₁ for vanilla "
            "cells; writes results.json, spectrum.png and lambda_vs_gain.png into --out. All "
            "gains run in one compiled function. Gain: "
            + "; ".join(f"{k}: {cells.GAIN_MEANING[k]}" for k in CELLS) + "."
        ),
    )
    s.add_argument("--cell", choices=CELLS, default="vanilla")
    s.add_argument("--activation", choices=tuple(cells.ACTIVATIONS), default="tanh",
                   help="for vanilla cells (default tanh)")
    s.add_argument("--hidden", type=int, default=128, help="hidden size n (default 128)")
    s.add_argument("--inputs", type=int, default=1, help="input size m (default 1)")
    s.add_argument("--steps", type=int, default=3000, help="T: T-1 steps (default 3000)")
    s.add_argument("--warmup", type=int, default=500, help="steps discarded first (default 500)")
    s.add_argument("--gain", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 3.0],
                   help="one or more gains (default 0.5 1.0 1.5 2.0 3.0)")
    s.add_argument("--seeds", type=int, default=8, help="random networks per gain (default 8)")
    s.add_argument("--k", type=int, default=None, help="leading exponents (default all)")
    s.add_argument("--reorth-every", type=int, default=1, help="steps between QRs (default 1)")
    s.add_argument("--input-scale", type=float, default=0.0,
                   help="std of the inputs x_t (default 0: autonomous)")
    s.add_argument("--seed", type=int, default=0, help="PRNG seed of the study (default 0)")
    s.add_argument("--out", type=Path, default=Path("rnn_dynamics_lyapunov"),
                   help="output folder (default ./rnn_dynamics_lyapunov/)")
    s.add_argument("--x64", action="store_true", help="compute in float64")
    s.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    s.set_defaults(func=run)
    return s


def _make_cell(args, gain):
    return cells.from_gain(args.cell, args.inputs, args.hidden, gain, args.activation)


def _validate(args):
    for name in ("hidden", "inputs", "steps", "seeds", "reorth_every"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}.")
    if args.steps < 2:
        raise ValueError(f"--steps: expected T >= 2, got {args.steps}.")
    if not 0 <= args.warmup < args.steps - 1:
        raise ValueError(f"--warmup: expected 0 <= warmup < T-1 = {args.steps - 1}, got {args.warmup}.")
    if any(not (g >= 0 and math.isfinite(g)) for g in args.gain):
        raise ValueError(f"--gain: expected finite non-negative values, got {args.gain}.")
    if not (args.input_scale >= 0 and math.isfinite(args.input_scale)):
        raise ValueError(f"--input-scale: expected a finite non-negative value, got {args.input_scale}.")


def compute(args):
    """Exponents (G, seeds, k) for every gain and seed, in one compiled function."""
    import jax
    import jax.numpy as jnp

    import rnn_dynamics as rd

    probe = _make_cell(args, 1.0)
    n, m = probe.state_size, probe.input_size
    k = n if args.k is None else args.k
    keys = jax.random.split(jax.random.key(args.seed), args.seeds)
    T, scale = args.steps, float(args.input_scale)

    def one(gain, key):
        cell = _make_cell(args, gain)
        kp, kh, kx = jax.random.split(key, 3)
        params = cell.init(kp)
        h1 = jax.random.normal(kh, (n,), jnp.result_type(float))
        if scale > 0:
            xs = scale * jax.random.normal(kx, (T - 1, m), h1.dtype)
            kw = {"xs": xs}
        else:
            kw = {"steps": T}
        return rd.lyapunov_spectrum(cell, params, h1, k=k, reorth_every=args.reorth_every,
                                    warmup=args.warmup, **kw).exponents

    # the gains are data: lax.map runs them one after the other through one compiled body
    study = jax.jit(lambda gains: jax.lax.map(lambda g: jax.vmap(one, (None, 0))(g, keys), gains))
    gains = jnp.asarray(args.gain, jnp.result_type(float))
    t0 = time.perf_counter()
    E = np.asarray(study(gains))
    return E, time.perf_counter() - t0


def _q(x):
    x = np.asarray(x, float)
    if not np.any(np.isfinite(x)):
        return [float("nan")] * 3
    return [float(v) for v in np.nanquantile(np.where(np.isfinite(x), x, np.nan), [0.5, 0.1, 0.9])]


def format_table(results) -> str:
    """The per-gain summary of a results dict, as text."""
    head = ["gain", "λ_max median [q10, q90]", "λ_min median [q10, q90]", "D_KY median [q10, q90]",
            "mean field"]
    rows = []
    for r in results["runs"]:
        cells = [f"{r['gain']:g}"]
        for key in ("lambda_max", "lambda_min", "kaplan_yorke"):
            med, lo, hi = _q(np.array(r[key], dtype=float))
            cells.append(f"{med:8.4f} [{lo:8.4f}, {hi:8.4f}]")
        mf = r.get("mean_field")
        cells.append("" if mf is None else f"{mf:8.4f}")
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))
    cfg = results["config"]
    out = [
        f"Lyapunov exponents (nats per step) of {cfg['cell']} cells, n = {cfg['hidden']}, "
        f"T = {cfg['steps']} (warm-up {cfg['warmup']}), {cfg['seeds']} seeds per gain; "
        f"D_KY = Kaplan–Yorke dimension of the k = {results['k']} exponents",
        line(head),
        line(["-" * w for w in widths]),
    ]
    return "\n".join(out + [line(r) for r in rows])


def run(args) -> int:
    """Run the study described by parsed ``args``; returns the exit status."""
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    try:
        _validate(args)
    except ValueError as e:
        print(f"rnn-dynamics lyapunov: error: {e}")
        return 2
    import rnn_dynamics as rd

    n = _make_cell(args, 1.0).state_size
    if args.k is not None and not 1 <= args.k <= n:
        print(f"rnn-dynamics lyapunov: error: --k: expected 1..{n} (the state size), got {args.k}.")
        return 2
    E, seconds = compute(args)
    k = E.shape[-1]
    theory = None
    if args.cell == "vanilla":
        theory = np.asarray(rd.theory.mean_field_lyapunov(args.activation, np.asarray(args.gain),
                                                          args.input_scale**2))
    elif args.cell == "linear":
        theory = np.log(np.asarray(args.gain))  # circular law: ρ(W) → g
    runs = []
    for i, g in enumerate(args.gain):
        e = E[i]
        ky = np.asarray(rd.kaplan_yorke_dimension(e)) if k == n else np.full(e.shape[0], np.nan)
        runs.append({
            "gain": float(g),
            "exponents": e.tolist(),
            "lambda_max": e[:, 0].tolist(),
            "lambda_min": e[:, -1].tolist(),
            "kaplan_yorke": ky.tolist(),
            "entropy_rate": np.asarray(rd.entropy_rate(e)).tolist(),
            "mean_field": None if theory is None else float(theory[i]),
        })
    config = {key: (str(v) if isinstance(v, Path) else v) for key, v in vars(args).items()
              if key not in ("func", "command", "out", "no_plot")}
    results = {
        "schema": "rnn_dynamics.lyapunov/1",
        "config": config,
        "k": int(k),
        "seconds": seconds,
        "environment": store.environment(),
        "runs": runs,
    }
    out = Path(args.out)
    store.save_json(out / "results.json", results)
    print(format_table(results))
    if k < n:
        print(f"(D_KY needs the whole spectrum: pass --k {n} or leave --k out.)")
    print(f"{seconds:.1f} s for {len(args.gain)} gains × {args.seeds} seeds; wrote {out / 'results.json'}")
    if not args.no_plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from . import _plots_lyapunov as P

        for name, fig in (("spectrum.png", P.lyapunov_spectrum(results)),
                          ("lambda_vs_gain.png", P.lyapunov_vs_gain(results))):
            fig.savefig(out / name, dpi=120, bbox_inches="tight")
            plt.close(fig)
            print(f"wrote {out / name}")
    return 0
