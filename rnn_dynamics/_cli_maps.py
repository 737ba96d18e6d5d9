"""Command line ``rnn-dynamics maps``: fixed points, cycles and plots of a 1-D iterated map.

A thin argparse layer over :mod:`rnn_dynamics.maps` and the map plots; no analysis of its own.
``register(subparsers)`` adds the sub-command; its ``run(args)`` does the work.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULTS = {  # map -> (parameter name, default parameter, default interval)
    "logistic": ("r", 3.5, (0.0, 1.0)),
    "quadratic": ("c", 0.15, (-2.0, 2.0)),
}
MAX_PERIOD = 4


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``maps`` sub-command to an argparse ``subparsers`` object; returns its parser.

    Example::

        p = argparse.ArgumentParser(); sub = p.add_subparsers()
        register(sub)
        args = p.parse_args(["maps", "--map", "quadratic", "--param", "0.15", "--out", "out"])
        args.func(args)      # prints the tables, writes out/cobweb.png and out/phase.png
    """
    p = subparsers.add_parser(
        "maps",
        help="fixed points, cycles and cobweb/phase plots of a 1-D iterated map",
        description=(
            "Iterate the logistic map r·x·(1−x) or the quadratic map x² + c. Prints every fixed "
            "point on --interval (location, f′, sink/source/neutral by |f′| < 1 or > 1) and the "
            f"cycles of period 2..{MAX_PERIOD} with their multipliers, and writes cobweb.png "
            "(the orbit from --x0) and phase.png (x_{t+1} against x_t) into --out."
        ),
    )
    p.add_argument("--map", choices=tuple(DEFAULTS), default="logistic",
                   help="logistic: r·x·(1−x); quadratic: x² + c (default logistic)")
    p.add_argument("--param", type=float, default=None,
                   help="r of the logistic map (default 3.5) or c of the quadratic map "
                        "(default 0.15)")
    p.add_argument("--x0", type=float, default=0.2, help="start of the orbit (default 0.2)")
    p.add_argument("--steps", type=int, default=50, help="steps of the orbit (default 50)")
    p.add_argument("--interval", type=float, nargs=2, metavar=("A", "B"), default=None,
                   help="where to look for fixed points and cycles, and the plots' x range "
                        "(default 0 1 for logistic, -2 2 for quadratic)")
    p.add_argument("--out", type=Path, default=Path("rnn_dynamics_out"),
                   help="output folder (default ./rnn_dynamics_out/)")
    p.set_defaults(func=run)
    return p


def _fail(message: str) -> int:
    print(f"rnn-dynamics maps: error: {message}", file=sys.stderr)
    return 2


def run(args) -> int:
    """Run ``rnn-dynamics maps`` with parsed ``args``; returns the exit status (0, or 2 on bad
    arguments, with the reason on stderr)."""
    import numpy as np

    from . import maps
    from . import _plots_maps as plots

    pname, pdefault, idefault = DEFAULTS[args.map]
    param = pdefault if args.param is None else args.param
    interval = tuple(idefault if args.interval is None else args.interval)
    try:
        f = getattr(maps, args.map)(param)
        orbit = maps.iterate(f, args.x0, args.steps)
        fp = maps.fixed_points(f, interval)
        cycles = {p: maps.periodic_orbits(f, p, interval) for p in range(2, MAX_PERIOD + 1)}
    except (TypeError, ValueError) as e:
        msg = str(e)
        name = msg.split(":", 1)[0]
        flag = {"interval": "--interval", "steps": "--steps", "x0": "--x0", pname: "--param"}
        return _fail(flag[name] + msg[len(name):] if name in flag else msg)

    print(f"f(x) = {f.describe()}   ({args.map}, {pname} = {param:g}), interval "
          f"[{interval[0]:g}, {interval[1]:g}]")
    print()
    print(f"fixed points ({len(fp.kind)}):")
    print(f"  {'x*':>12}  {'f′(x*)':>12}  kind")
    for x, d, k in zip(np.asarray(fp.location), np.asarray(fp.derivative), fp.kind):
        print(f"  {x:12.6f}  {d:12.6f}  {k}")
    for p, po in cycles.items():
        print()
        print(f"cycles of period {p} ({len(po.kind)}):")
        if po.kind:
            print(f"  {'multiplier':>12}  {'kind':<7}  points")
        for pts, m, k in zip(np.asarray(po.points), np.asarray(po.multiplier), po.kind):
            print(f"  {m:12.6f}  {k:<7}  " + ", ".join(f"{x:.6f}" for x in pts))
    o = np.asarray(orbit)
    print()
    print(f"orbit from x0 = {args.x0:g}: x_{args.steps} = {o[-1]:.6f}; last iterates: "
          + ", ".join(f"{x:.6f}" for x in o[-MAX_PERIOD:]))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, fig in (("cobweb.png", plots.cobweb(f, orbit, interval=interval)),
                      ("phase.png", plots.phase(f, interval, fixed_points=fp, orbit=orbit))):
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        print(f"wrote {out / name}")
    return 0
