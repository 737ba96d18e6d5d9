"""``rnn-dynamics basins``: a basin map and a sensitivity map of a small RNN, as PNG and .npz.

A thin argparse layer over :func:`rnn_dynamics.basins` and :func:`rnn_dynamics.plot.basins`;
``register(subparsers)`` adds the sub-command to the main parser.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

__all__ = ["register", "run"]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``basins`` sub-command to an ``argparse`` sub-parsers object; returns its parser."""
    p = subparsers.add_parser(
        "basins",
        help="basins of attraction and ‖∂h_T/∂h_1‖₂ over a grid of initial states (PNG + .npz)",
        description=(
            "Run every initial state of a grid (the first two units; the others start at 0) for "
            "--steps steps with zero input, label it by the stable fixed point it ends at, and "
            "compute ‖∂h_T/∂h_1‖₂ there. Default: the built-in two-unit example with two "
            "attractors (rd.basins_example). Writes basins.png and basins.npz into --out and "
            "prints the median norm deep inside the basins and next to their boundaries."
        ),
    )
    p.add_argument("--cell", choices=("example", "vanilla"), default="example",
                   help="'example' (built-in two-unit network, default) or a random vanilla RNN")
    from .cells import ACTIVATIONS

    p.add_argument("--activation", choices=tuple(ACTIVATIONS), default="tanh",
                   help="vanilla activation (default tanh)")
    p.add_argument("--hidden", type=int, default=2, help="vanilla hidden size n >= 2 (default 2)")
    p.add_argument("--gain", type=float, default=2.0,
                   help="vanilla gain g, W_ij ~ N(0, g²/n) (default 2)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of the vanilla weights (default 0)")
    p.add_argument("--grid", type=int, default=201, help="grid points per axis (default 201)")
    p.add_argument("--extent", type=float, default=2.0,
                   help="the grid covers [-extent, extent]² (default 2)")
    p.add_argument("--steps", type=int, default=18, help="steps T - 1 (default 18)")
    p.add_argument("--out", type=Path, default=Path("rnn_dynamics_out"),
                   help="output folder (default ./rnn_dynamics_out/)")
    p.set_defaults(func=run)
    return p


def _fail(msg: str) -> int:
    import sys

    print(f"rnn-dynamics basins: error: {msg}", file=sys.stderr)
    return 2


def run(args) -> int:
    """Compute, print, and write ``basins.png`` and ``basins.npz``; returns the exit code."""
    import jax

    from . import cells
    from ._basins import basin_contrast, basins, basins_example
    from ._plots_dynamics import basins as plot_basins

    if args.grid < 3:
        return _fail(f"--grid: expected at least 3 points per axis, got {args.grid}.")
    if args.steps < 1:
        return _fail(f"--steps: expected a positive number of steps, got {args.steps}.")
    if not args.extent > 0:
        return _fail(f"--extent: expected a positive number, got {args.extent}.")
    g = np.linspace(-args.extent, args.extent, args.grid)
    if args.cell == "example":
        ex = basins_example(grid_size=args.grid, steps=args.steps)
        cell, params, label = ex.cell, ex.params, "built-in example (rd.basins_example)"
    else:
        if args.hidden < 2:
            return _fail(f"--hidden: basins needs at least 2 units, got {args.hidden}.")
        cell = cells.vanilla(1, args.hidden, args.activation, args.gain)
        params = cell.init(jax.random.key(args.seed))
        label = f"vanilla-{args.activation} n={args.hidden} g={args.gain} seed={args.seed}"
    res = basins(cell, params, (g, g), args.steps)
    c = basin_contrast(res)
    print(f"{label}: {len(res.attractors)} attractor(s), grid {args.grid}x{args.grid}, "
          f"T - 1 = {args.steps} steps")
    for i, a in enumerate(res.attractors):
        share = float(np.mean(res.labels == i))
        where = np.array2string(np.asarray(a), precision=4)
        print(f"  attractor {i}: {where}  basin {share:.1%} of the grid")
    if not len(res.attractors):
        print("  no stable fixed point found: the trajectories may end on cycles or in chaos, so "
              "there are no basin labels; the sensitivity map is still computed (another --seed "
              "or --gain may give fixed-point attractors)")
    print(f"  not settled: {float(np.mean(res.labels < 0)):.1%} of the grid")
    print(f"  median ‖∂h_T/∂h_1‖₂ deep inside a basin (>= 10 cells from another label): "
          f"{c['deep']:.3g} over {c['n_deep']} cells")
    print(f"  median ‖∂h_T/∂h_1‖₂ within one cell of a boundary: {c['boundary']:.3g} over "
          f"{c['n_boundary']} cells")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "basins.npz", labels=res.labels, log10_sensitivity=res.log10_sensitivity,
             final_states=res.final_states, attractors=res.attractors, a=res.a, b=res.b,
             base=res.base, directions=res.directions, steps=res.steps)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plot_basins(res)
    fig.savefig(out / "basins.png", dpi=120)
    plt.close(fig)
    print(f"wrote {out / 'basins.png'} and {out / 'basins.npz'}")
    return 0
