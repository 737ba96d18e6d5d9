"""Command line: ``rnn-dynamics spectrum`` (also ``python -m rnn_dynamics spectrum``).

A thin argparse layer over :func:`rnn_dynamics.spectra`, :mod:`rnn_dynamics.store` and
:mod:`rnn_dynamics.plot`; it holds no analysis of its own.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

CELLS = ("vanilla", "linear", "irnn", "lstm", "gru", "esn", "univariate")
GAIN_MEANING = {
    "vanilla": "W_ij ~ N(0, g²/n)",
    "linear": "W_ij ~ N(0, g²/n)",
    "irnn": "W = g·I",
    "lstm": "weights ~ N(0, g²/fan_in)",
    "gru": "weights ~ N(0, g²/fan_in)",
    "esn": "spectral radius of W",
    "univariate": "w",
}


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The top-level parser and the ``spectrum`` sub-parser (for its error messages)."""
    p = argparse.ArgumentParser(
        prog="rnn-dynamics",
        description="Exact Jacobians of recurrent networks: how ‖∂h_T/∂h_1‖ explodes or vanishes.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser(
        "spectrum",
        help="Jacobian-spectrum study over seeds (runs an embedded default with no flags).",
        description=(
            "For each gain: draw --seeds random networks, inputs x_t ~ N(0, input_scale²), and h_1 "
            "(the cell's initial state), compute ∂h_T/∂h_1 exactly and ‖∂h_t/∂h_1‖₂ for every t. "
            "Prints a table, writes results.json and norms.png into --out. Rerunning the same "
            "command resumes an interrupted study. The gain means: "
            + "; ".join(f"{k}: {v}" for k, v in GAIN_MEANING.items())
            + ". Every gain reuses the same seed keys (common random numbers)."
        ),
    )
    s.add_argument("--cell", choices=CELLS, default="vanilla")
    s.add_argument("--activation", choices=("tanh", "sigmoid", "relu", "linear"), default="tanh",
                   help="for vanilla and univariate cells (default tanh)")
    s.add_argument("--hidden", type=int, default=64, help="hidden size n (default 64)")
    s.add_argument("--inputs", type=int, default=8, help="input size m (default 8)")
    s.add_argument("--steps", type=int, default=300, help="T: T-1 step Jacobians (default 300)")
    s.add_argument("--gain", type=float, nargs="+", default=[0.8, 1.0, 1.5, 2.0, 3.0],
                   help="one or more gains (default 0.8 1.0 1.5 2.0 3.0)")
    s.add_argument("--seeds", type=int, default=32, help="random networks per gain (default 32)")
    s.add_argument("--seed", type=int, default=0, help="PRNG seed of the study (default 0)")
    s.add_argument("--method", choices=("jacfwd", "jacrev", "product"), default="jacfwd",
                   help="how the dense ∂h_T/∂h_1 is computed (default jacfwd)")
    s.add_argument("--input-scale", type=float, default=1.0, help="std of the inputs (default 1)")
    s.add_argument("--batch-size", type=int, default=None, help="seeds vmapped at once")
    s.add_argument("--x64", action="store_true", help="compute in float64")
    s.add_argument("--out", type=Path, default=Path("rnn_dynamics_out"),
                   help="output folder (default ./rnn_dynamics_out/)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace results of a different study already in --out")
    s.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    return p, s


def _make_cell(cells, args, gain):
    kind = args.cell
    if kind == "vanilla":
        return cells.vanilla(args.inputs, args.hidden, args.activation, gain)
    if kind == "linear":
        return cells.linear(args.inputs, args.hidden, gain)
    if kind == "irnn":
        return cells.irnn(args.inputs, args.hidden, scale=gain)
    if kind == "lstm":
        return cells.lstm(args.inputs, args.hidden, gain=gain)
    if kind == "gru":
        return cells.gru(args.inputs, args.hidden, gain=gain)
    if kind == "esn":
        return cells.esn(args.inputs, args.hidden, spectral_radius=gain)
    return cells.univariate(w=gain, activation=args.activation)


def _config(args) -> dict:
    cfg = {k: v for k, v in vars(args).items() if k not in ("command", "out", "overwrite", "no_plot")}
    if args.cell == "univariate":
        cfg["hidden"], cfg["inputs"] = 1, 1
    return cfg


def _summary_row(run) -> list[str]:
    f = np.asarray(run["log10_norm"], float)
    q10, med, q90 = np.nanquantile(f, [0.1, 0.5, 0.9])
    growth = np.nanmedian(np.asarray(run["growth_rate"], float))
    ok = np.mean(run["dense_ok"])
    return [run["label"], f"{med:9.2f}", f"{q10:9.2f}", f"{q90:9.2f}", f"{growth:8.4f}",
            f"{100 * ok:5.0f}%", f"{run['seconds']:6.1f}"]


def format_table(results) -> str:
    """The per-configuration summary table of a results dict, as text."""
    head = ["config", "median", "q10", "q90", "growth/step", "dense", "sec"]
    rows = [_summary_row(r) for r in results["runs"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    T = results["config"]["steps"]
    out = [
        f"log10 ‖∂h_T/∂h_1‖₂ over seeds at T = {T} (T-1 = {T - 1} step Jacobians); growth/step = "
        f"‖∂h_T/∂h_1‖₂^(1/(T-1)), median; dense = seeds whose dense matrix stayed in range",
        line(head),
        line(["-" * w for w in widths]),
    ]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _run_spectrum(args, parser) -> int:
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import rnn_dynamics as rd
    from rnn_dynamics import store

    for name in ("hidden", "inputs", "steps", "seeds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name}: expected a positive integer, got {getattr(args, name)}")
    if args.steps < 2:
        parser.error(f"--steps: expected T >= 2, got {args.steps}")
    if any(g < 0 for g in args.gain):
        parser.error(f"--gain: expected non-negative values, got {args.gain}")
    if args.input_scale < 0:
        parser.error(f"--input-scale: expected a non-negative value, got {args.input_scale}")
    if args.batch_size is not None and args.batch_size <= 0:
        parser.error(f"--batch-size: expected a positive integer, got {args.batch_size}")

    config = _config(args)
    out = args.out
    path = out / "results.json"
    runs = {}
    if path.exists() and not args.overwrite:
        old = store.load_json(path)
        if old.get("config") != config:
            parser.error(
                f"--out: {path} holds a study with another configuration ({old.get('config')}); "
                f"pass --overwrite to replace it, or choose another --out folder."
            )
        runs = {r["gain"]: r for r in old.get("runs", [])}
        if runs:
            print(f"resuming: {len(runs)} of {len(args.gain)} configurations already in {path}")
    results = {"config": config, "environment": store.environment(), "runs": [], "complete": False}

    key = jax.random.key(args.seed)
    try:
        for i, gain in enumerate(args.gain):
            if gain in runs:
                results["runs"].append(runs[gain])
                continue
            try:
                cell = _make_cell(rd.cells, args, gain)
            except (ValueError, TypeError) as e:
                parser.error(str(e))
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rd.NumericalWarning)  # reported in the table
                sp = rd.spectra(cell, key, seeds=args.seeds, steps=args.steps,
                                input_scale=args.input_scale, method=args.method,
                                batch_size=args.batch_size)
                jax.block_until_ready(sp)
            secs = time.perf_counter() - t0
            run = {
                "label": f"{cell.name} g={gain:g}",
                "gain": gain,
                "seconds": secs,
                "log10_norm": np.asarray(sp.log10_norm).tolist(),
                "growth_rate": np.asarray(sp.growth_rate).tolist(),
                "dense_ok": np.asarray(sp.dense_ok).tolist(),
                "singular_values": np.asarray(sp.singular_values).tolist(),
                "log10_norms": np.asarray(sp.log10_norms).tolist(),
            }
            results["runs"].append(run)
            store.save_json(path, results)  # after every configuration: resumable
            print(f"[{i + 1}/{len(args.gain)}] {run['label']}: median log10‖∂h_T/∂h_1‖₂ = "
                  f"{np.nanmedian(run['log10_norm']):.2f} ({secs:.1f} s)", flush=True)
    except KeyboardInterrupt:
        store.save_json(path, results)
        print(f"\ninterrupted: {len(results['runs'])} configurations saved in {path}; "
              f"rerun the same command to resume.", file=sys.stderr)
        return 130
    results["complete"] = True
    store.save_json(path, results)
    print()
    print(format_table(results))
    print(f"\nwrote {path}")
    if not args.no_plot:
        import matplotlib

        matplotlib.use("Agg")
        from rnn_dynamics import plot

        fig = plot.norm_curves(results)
        fig.savefig(out / "norms.png", dpi=120)
        print(f"wrote {out / 'norms.png'}")
    return 0


def main(argv=None) -> int:
    # The per-seed SVDs call OpenBLAS (through scipy, loaded at the first SVD); its spinning
    # threads fight XLA's for the cores and halved seeds/s at n = 128 on a 2-core CPU.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    parser, spectrum = _parser()
    args = parser.parse_args(argv)  # the sub-command is required: only "spectrum" gets here
    return _run_spectrum(args, spectrum)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
