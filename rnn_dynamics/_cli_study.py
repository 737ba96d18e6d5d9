"""``rnn-dynamics sweep CONFIG --out DIR`` and ``rnn-dynamics plot DIR``: studies from a config file.

A thin argparse layer over :mod:`rnn_dynamics.study` and the ``study_*`` plots of
:mod:`rnn_dynamics._plots_study`. ``register(subparsers)`` adds both sub-commands.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

__all__ = ["register", "run"]

_PLOTS = (("norms.png", "study_norms", "log10_norms"), ("phase.png", "study_phase", "log10_norms"),
          ("singular_values.png", "study_singular_values", "singular_values"),
          ("lyapunov.png", "study_lyapunov", "lyapunov"))


def register(subparsers) -> None:
    """Add ``sweep`` and ``plot`` to an argparse sub-parsers object (both call :func:`run`)."""
    s = subparsers.add_parser(
        "sweep",
        help="Run (or resume) a study from a TOML/JSON config: cells × numbers × seeds.",
        description=(
            "Reads a study config (TOML, or JSON; keys: cell, activation, init, hidden, inputs, steps, "
            "gain, input_scale, seeds, seed, metrics, k, h1; see examples/sweep_small.toml), runs every "
            "configuration with its seeds sharded over all devices, and writes study.json, "
            "results.jsonl and arrays/<id>.npz into --out, group by group. Rerunning with the same "
            "config and --out resumes (finished configurations are skipped); a folder holding "
            "another study is refused. Ctrl-C saves the finished groups and exits with status 130. "
            "Prints a summary table and writes the plots (see `rnn-dynamics plot`)."
        ),
    )
    s.add_argument("config", type=Path, help="the study config (.toml or .json)")
    s.add_argument("--out", type=Path, default=Path("rnn_dynamics_study"),
                   help="store folder (default ./rnn_dynamics_study/)")
    s.add_argument("--group-size", type=int, default=16,
                   help="configurations per compiled call at most (default 16)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    s.add_argument("--cpu-devices", type=int, default=1,
                   help="CPU cores exposed as JAX devices, so that the seeds of small shapes run on "
                        "all of them (larger shapes use one device, whose matmuls already use "
                        "every core); 0: every core (default 1)")
    s.set_defaults(func=run)
    p = subparsers.add_parser(
        "plot",
        help="Write the PNG plots of a study folder (from `rnn-dynamics sweep`).",
        description=("Writes norms.png, phase.png (two gains or more), singular_values.png and "
                     "lyapunov.png (when computed) into DIR, from the stored results only."),
    )
    p.add_argument("dir", type=Path, help="the study folder")
    p.set_defaults(func=run)


def _plots(out: Path) -> list[Path]:
    from matplotlib.figure import Figure

    from . import _plots_study
    from .study import read

    res = read(out)
    if not res["configurations"]:
        return []
    first = res["arrays"][res["configurations"][0]["id"]]
    gains = {c["gain"] for c in res["configurations"]}
    written = []
    for name, fn, need in _PLOTS:
        if need not in first or (fn == "study_phase" and len(gains) < 2):
            continue
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        getattr(_plots_study, fn)(res, ax=fig.add_subplot())
        fig.savefig(out / name, dpi=120)
        written.append(out / name)
    return written


def run(args) -> int:
    """Run ``sweep`` or ``plot`` from parsed arguments; returns the exit status."""
    from . import study

    if args.command == "plot":
        try:
            paths = _plots(args.dir)
        except ValueError as e:
            print(f"rnn-dynamics plot: error: {e}", file=sys.stderr)
            return 2
        for p in paths:
            print(f"wrote {p}")
        return 0

    stop = {"requested": False}

    def handle(signum, frame):
        if stop["requested"]:
            print("\ninterrupted again: stopping now; the finished groups are saved.",
                  file=sys.stderr, flush=True)
            os._exit(130)
        stop["requested"] = True
        print("\ninterrupt: finishing the group in flight, then stopping (Ctrl-C again to stop "
              "at once).", file=sys.stderr, flush=True)

    from ._cli_train import _use_cpu_devices

    _use_cpu_devices(args.cpu_devices)
    try:
        cfg = study.load_config(args.config)
        if args.group_size < 1:
            raise ValueError(f"--group-size: expected a positive int, got {args.group_size}.")
    except (ValueError, TypeError) as e:
        print(f"rnn-dynamics sweep: error: {e}", file=sys.stderr)
        return 2
    try:
        old = signal.signal(signal.SIGINT, handle)
    except ValueError:  # not the main thread: Ctrl-C stays the caller's business
        old = None
    try:
        study.run(cfg, args.out, progress=None if not args.no_progress else False,
                  group_size=args.group_size, should_stop=lambda: stop["requested"])
    except (ValueError, TypeError) as e:
        print(f"rnn-dynamics sweep: error: {e}", file=sys.stderr)
        return 2
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    res = study.read(args.out)
    print(study.summary(res))
    if stop["requested"] and len(res["configurations"]) < len(study.configurations(cfg)):
        print("\ninterrupted: rerun the same command to compute the rest.", file=sys.stderr)
        return 130
    print(f"\nwrote {args.out / 'study.json'}, {args.out / 'results.jsonl'}, {args.out / 'arrays'}/")
    if not args.no_plot:
        for p in _plots(args.out):
            print(f"wrote {p}")
    return 0
