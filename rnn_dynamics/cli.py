"""Command line: ``rnn-dynamics COMMAND`` (also ``python -m rnn_dynamics COMMAND``).

A thin argparse layer over the public API, :mod:`rnn_dynamics.store` and :mod:`rnn_dynamics.plot`;
it holds no analysis of its own.

Sub-commands are plugins: ``spectrum`` is defined here, and every module named in ``PLUGINS``
that exists is imported and asked to add its own, through ``register(subparsers)``, which adds a
sub-parser and calls ``set_defaults(func=run)`` with ``run(args) -> int`` (the exit status).
``main`` parses the command line and returns ``args.func(args)``.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import math
import os
import signal
import sys
import time
from pathlib import Path

import jax
import numpy as np

from . import cells, store
from ._checks import check_positive_int, float_dtype
from ._compile import _MIN_STATE, fast_cpu_options
from ._jacobian import METHODS
from ._spectra import spectra

__all__ = ["PLUGINS", "build_parser", "main", "format_table"]

# Modules of this package that add sub-commands (each with register(subparsers)); absent ones
# are skipped.
PLUGINS = ("_cli_maps", "_cli_basins", "_cli_lyapunov", "_cli_train", "_cli_study")

# Library argument names -> the flags that set them, so the library's own error messages
# (which start with "name:") name the flag.
_FLAGS = {
    "input_size": "--inputs", "hidden_size": "--hidden", "activation": "--activation",
    "cell": "--cell", "kind": "--cell", "seeds": "--seeds", "steps": "--steps",
    "input_scale": "--input-scale", "h1": "--h1", "method": "--method", "batch_size": "--batch-size",
    "gain": "--gain", "w": "--gain", "spectral_radius": "--gain", "scale": "--gain",
}


def _usage_error(parser: argparse.ArgumentParser, err: Exception):
    """Exit with status 2 and the library's message, its argument name replaced by the flag."""
    msg = str(err)
    name, sep, rest = msg.partition(":")
    if sep and name in _FLAGS:
        msg = _FLAGS[name] + sep + rest
    parser.error(msg)


def _load_plugin(name: str):
    full = f"{__package__}.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name == full:  # the plugin is not installed; anything it imports must exist
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    """The ``rnn-dynamics`` parser: ``spectrum`` plus the sub-commands of the ``PLUGINS`` present.

    Example: ``args = build_parser().parse_args(["spectrum", "--gain", "1.5"]); args.func(args)``.
    """
    p = argparse.ArgumentParser(
        prog="rnn-dynamics",
        description="Exact Jacobians of recurrent networks: how ‖∂h_T/∂h_1‖ explodes or vanishes.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register_spectrum(sub)
    for name in PLUGINS:
        module = _load_plugin(name)
        if module is not None:
            module.register(sub)
    return p


def main(argv=None) -> int:
    """Run the command line with ``argv`` (a list of strings, default ``sys.argv[1:]``).

    Returns the exit status: 0 done, 2 bad flags (argparse's SystemExit), 130 interrupted
    (Ctrl-C; the finished gains are saved). Example: ``rd.cli.main(["spectrum", "--gain", "1.5"])``.
    """
    # The per-seed SVDs call OpenBLAS (through scipy, loaded at the first SVD, after this); its
    # spinning threads fight XLA's for the cores and halved seeds/s at n = 128 on a 2-core CPU.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    with _Interrupt() as interrupt:  # Ctrl-C while the plugins load: stop cleanly before any work
        args = build_parser().parse_args(argv)
    if interrupt.requested:
        print("interrupted before starting.", file=sys.stderr, flush=True)
        return 130
    return args.func(args)


# ----------------------------------------------------------------------------------------------
# rnn-dynamics spectrum


def register_spectrum(sub) -> argparse.ArgumentParser:
    """Add the ``spectrum`` sub-command to ``sub`` (an argparse sub-parsers object); return it."""
    s = sub.add_parser(
        "spectrum",
        help="Jacobian-spectrum study over seeds (runs an embedded default with no flags).",
        description=(
            "For each gain: draw --seeds random networks, inputs x_t ~ N(0, input_scale²) and h_1 "
            "(the cell's initial state, or N(0, h1²) with --h1), compute ∂h_T/∂h_1 exactly and "
            "‖∂h_t/∂h_1‖₂ for every t. All gains run in one compiled computation. Prints a table, "
            "writes results.json and norms.png into --out. Rerunning the same command resumes an "
            "interrupted study (Ctrl-C saves the finished gains); rerunning with more gains "
            "computes only the new ones. The gain means: "
            + "; ".join(f"{k}: {v}" for k, v in cells.GAIN_MEANING.items())
            + ". Every gain reuses the same seed keys (common random numbers)."
        ),
    )
    s.add_argument("--cell", choices=tuple(cells.GAIN_MEANING), default="vanilla")
    s.add_argument("--activation", choices=tuple(cells.ACTIVATIONS), default="tanh",
                   help="for the cells that take one (default tanh)")
    s.add_argument("--hidden", type=int, default=64, help="hidden size n (default 64)")
    s.add_argument("--inputs", type=int, default=8, help="input size m (default 8)")
    s.add_argument("--steps", type=int, default=300, help="T: T-1 step Jacobians (default 300)")
    s.add_argument("--gain", type=float, nargs="+", default=[0.8, 1.0, 1.5, 2.0, 3.0],
                   help="one or more gains (default 0.8 1.0 1.5 2.0 3.0)")
    s.add_argument("--seeds", type=int, default=32, help="random networks per gain (default 32)")
    s.add_argument("--seed", type=int, default=0, help="PRNG seed of the study (default 0)")
    s.add_argument("--method", choices=tuple(METHODS), default="jacfwd",
                   help="how the dense ∂h_T/∂h_1 is computed (default jacfwd)")
    s.add_argument("--input-scale", type=float, default=1.0, help="std of the inputs (default 1)")
    s.add_argument("--h1", type=float, default=None, metavar="STD",
                   help="draw h_1 ~ N(0, STD²) per seed instead of the cell's initial state "
                        "(with --input-scale 0: an autonomous study)")
    s.add_argument("--batch-size", type=int, default=None, help="seeds vmapped at once")
    s.add_argument("--chunk", type=int, default=4,
                   help="gains per compiled call at most (the largest divisor of the number of new "
                        "gains up to CHUNK, so every call has one shape); results are saved after "
                        "each call (default 4)")
    s.add_argument("--x64", action="store_true", help="compute in float64")
    s.add_argument("--out", type=Path, default=Path("rnn_dynamics_out"),
                   help="output folder (default ./rnn_dynamics_out/)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace results of a different study already in --out")
    s.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    s.set_defaults(func=functools.partial(_run_spectrum, parser=s))
    return s


# Flags that do not change the numbers: left out of the stored config.
_NOT_CONFIG = ("command", "func", "out", "overwrite", "no_plot", "batch_size", "chunk")


def _fmt(gains) -> str:
    return ", ".join(f"{g:g}" for g in gains)


def _chunk_size(n: int, most: int) -> int:
    """The largest divisor of n that is <= most: equal chunks, so one compiled shape, no padding."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


class _Interrupt:
    """SIGINT sets a flag, checked between compiled calls; a second SIGINT exits at once.

    A KeyboardInterrupt raised in the middle of jax (tracing, compiling, dispatching) can leave
    XLA threads running into interpreter shutdown, which segfaulted (exit -11) when Ctrl-C came
    during compilation. With this handler nothing is raised: the call in flight finishes, the
    finished gains are saved, and the command returns 130. The second Ctrl-C uses ``os._exit``,
    which skips the interpreter's teardown (so it cannot crash there); the finished gains are
    already on disk, since results are saved after every compiled call.
    """

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no handler, Ctrl-C is the caller's business
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def _handle(self, signum, frame):
        if self.requested:
            print("\ninterrupted again: stopping now; the gains in flight are lost, the finished "
                  "ones are saved.", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(130)  # no interpreter teardown while XLA threads run
        self.requested = True
        print("\ninterrupt: finishing the gains in flight, then saving (Ctrl-C again to stop at "
              "once).", file=sys.stderr, flush=True)


def _spectrum_gains_impl(key, gains, input_scale, *, kind, inputs, hidden, activation, seeds, steps,
                         h1, method, batch_size):
    """Every output of ``rd.spectra`` for each of the (k,) ``gains``, with a leading gain axis."""

    def per_gain(gain):
        cell = cells.from_gain(kind, inputs, hidden, gain, activation)
        sp = spectra(cell, key, seeds=seeds, steps=steps, input_scale=input_scale, h1=h1,
                     method=method, batch_size=batch_size)
        return {"log10_norms": sp.log10_norms, "singular_values": sp.singular_values,
                "log10_norm": sp.log10_norm, "growth_rate": sp.growth_rate, "dense_ok": sp.dense_ok}

    return jax.lax.map(per_gain, gains)


@functools.lru_cache(maxsize=None)
def _spectrum_gains(fast: bool):
    """The jitted :func:`_spectrum_gains_impl` (one per compile-option set, so its cache is kept):
    gains and the input scale are data, so one compile serves every gain of a shape."""
    static = ("kind", "inputs", "hidden", "activation", "seeds", "steps", "h1", "method", "batch_size")
    return jax.jit(_spectrum_gains_impl, static_argnames=static,
                   compiler_options=fast_cpu_options() if fast else None)


def _wait(tree) -> None:
    """Block until every array of ``tree`` is computed, letting signal handlers run meanwhile."""
    leaves = jax.tree_util.tree_leaves(tree)
    while not all(x.is_ready() for x in leaves):
        time.sleep(0.02)


def _run_spectrum(args, parser) -> int:
    with _Interrupt() as interrupt:
        return _spectrum(args, parser, interrupt)


def _spectrum(args, parser, interrupt) -> int:
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    try:
        check_positive_int("chunk", args.chunk)
    except (ValueError, TypeError) as e:
        parser.error(f"--{e}")
    gains = list(dict.fromkeys(float(g) for g in args.gain))  # in order, without repeats
    try:  # the library checks sizes, gains and the activation
        probe = [cells.from_gain(args.cell, args.inputs, args.hidden, g, args.activation) for g in gains]
    except (ValueError, TypeError) as e:
        _usage_error(parser, e)
    cell0 = probe[0]
    config = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
    config["inputs"], config["hidden"] = cell0.input_size, cell0.hidden_size
    config = store.to_json(config)

    path = args.out / "results.json"
    done = {}
    if path.exists() and not args.overwrite:
        try:
            old = store.load_results(path, "spectrum")
        except ValueError as e:
            parser.error(f"--out: {e}")
        old_cfg = old["config"]
        differ = [k for k in sorted(set(old_cfg) | set(config))
                  if k != "gain" and old_cfg.get(k, "(absent)") != config.get(k, "(absent)")]
        if differ:
            what = "; ".join(f"{k}: {old_cfg.get(k, '(absent)')!r} there, {config.get(k, '(absent)')!r} now"
                             for k in differ)
            parser.error(f"--out: {path} holds a study with other settings ({what}); pass "
                         f"--overwrite to replace it, or choose another --out folder.")
        done = {float(r["gain"]): r for r in old["runs"]}
    kept = [g for g in done if g not in gains]
    reused = [g for g in gains if g in done]
    missing = [g for g in gains if g not in done]
    config["gain"] = gains + kept
    if reused:
        print(f"resuming {path}: reusing {len(reused)} finished gain(s) ({_fmt(reused)}); "
              f"computing {len(missing)}" + (f" ({_fmt(missing)})" if missing else ""), flush=True)
    if kept:
        print(f"keeping gain(s) {_fmt(kept)} from the earlier study in {path}", flush=True)

    results = store.new_results(config, "spectrum")

    def save():
        results["runs"] = [done[g] for g in config["gain"] if g in done]
        results["complete"] = all(g in done for g in config["gain"])
        store.save_results(path, results)

    key = jax.random.key(args.seed)
    if missing:
        k = _chunk_size(len(missing), args.chunk)

        static = dict(kind=args.cell, inputs=args.inputs, hidden=args.hidden,
                      activation=args.activation, seeds=args.seeds, steps=args.steps, h1=args.h1,
                      method=args.method, batch_size=args.batch_size)
        scale = np.asarray(args.input_scale, float_dtype())
        t0 = time.perf_counter()
        try:  # tracing runs the library's checks of seeds, steps, input scale, h1, ...
            lowered = _spectrum_gains(cell0.state_size > _MIN_STATE).lower(
                key, jax.ShapeDtypeStruct((k,), float_dtype()), scale, **static)
        except (ValueError, TypeError) as e:
            _usage_error(parser, e)
        compiled = lowered.compile()
        print(f"compiled in {time.perf_counter() - t0:.2f} s: one computation for {len(missing)} "
              f"gain(s), {k} per call", flush=True)
        for start in range(0, len(missing), k):
            if interrupt.requested:
                break
            chunk = missing[start:start + k]
            t0 = time.perf_counter()
            out = compiled(key, np.asarray(chunk, float_dtype()), scale)
            _wait(out)
            secs = (time.perf_counter() - t0) / k
            out = {name: np.asarray(v) for name, v in out.items()}
            for i, g in enumerate(chunk):
                run = {"label": f"g={g:g}", "gain": g, "cell": cell0.name, "seconds": secs}
                run.update({name: v[i] for name, v in out.items()})
                done[g] = store.to_json(run)
                print(f"[{len(done) - len(kept)}/{len(gains)}] {cell0.name} g={g:g}: median "
                      f"log10‖∂h_T/∂h_1‖₂ = {_finite_quantiles(out['log10_norm'][i])[1]:.2f} "
                      f"({secs:.2f} s)", flush=True)
            save()  # after every call: an interrupted or killed study resumes from here
    save()
    if interrupt.requested:
        print(f"\ninterrupted: {len(results['runs'])} of {len(config['gain'])} gains saved in "
              f"{path}; rerun the same command to compute the rest.", file=sys.stderr, flush=True)
        sys.stdout.flush()
        return 130

    print()
    print(format_table(results))
    print(f"\nwrote {path}")
    if not args.no_plot:
        from matplotlib.figure import Figure

        from .plot import norm_curves

        fig = Figure(figsize=(7, 4.5), layout="constrained")
        norm_curves(path, ax=fig.add_subplot())
        fig.savefig(args.out / "norms.png", dpi=120)
        print(f"wrote {args.out / 'norms.png'}")
    return 0


def _finite_quantiles(x, q=(0.1, 0.5, 0.9)):
    """Quantiles of the finite entries of ``x`` (a list with nulls, or an array); NaN if none."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return np.quantile(x, q) if x.size else np.full(len(q), math.nan)


def _summary_row(run) -> list[str]:
    f = np.asarray(run["log10_norm"], float)
    fin = f[np.isfinite(f)]
    q10, med, q90 = _finite_quantiles(f)
    (growth,) = _finite_quantiles(run["growth_rate"], (0.5,))
    ok = np.mean(np.asarray(run["dense_ok"], dtype=bool))
    return [run["label"], f"{med:9.2f}", f"{q10:9.2f}", f"{q90:9.2f}", f"{growth:8.4f}",
            f"{100 * ok:5.0f}%", f"{len(fin)}/{len(f)}", f"{run['seconds']:6.2f}"]


def format_table(results) -> str:
    """The per-gain summary table of a spectrum results dict (see :mod:`rnn_dynamics.store`), as text.

    Example: ``print(rd.cli.format_table(rd.store.load_results("rnn_dynamics_out")))``.
    """
    cfg = results["config"]
    head = ["config", "median", "q10", "q90", "growth/step", "dense", "finite", "sec"]
    rows = [_summary_row(r) for r in results["runs"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(r):
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))

    T = cfg["steps"]
    names = sorted({r.get("cell", cfg["cell"]) for r in results["runs"]}) or [cfg["cell"]]
    out = [
        f"{', '.join(names)}, n = {cfg['hidden']}, {cfg['seeds']} seeds: log10 ‖∂h_T/∂h_1‖₂ at "
        f"T = {T} (T-1 = {T - 1} step Jacobians), quantiles over the finite seeds; growth/step = "
        f"‖∂h_T/∂h_1‖₂^(1/(T-1)), median; dense = seeds whose dense matrix stayed in range; "
        f"sec = compute time per gain",
        line(head),
        line(["-" * w for w in widths]),
    ]
    out += [line(r) for r in rows]
    if any(r[6].split("/")[0] != r[6].split("/")[1] for r in rows):
        out.append(
            "finite < seeds: for those seeds log10 ‖∂h_T/∂h_1‖₂ is -inf (the Jacobian is exactly "
            "zero, e.g. every ReLU unit off) or NaN (the state itself overflowed); they are stored "
            "as null in results.json."
        )
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
