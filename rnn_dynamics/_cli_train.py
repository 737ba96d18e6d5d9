"""Command line: ``rnn-dynamics train`` and ``rnn-dynamics compare``.

A thin argparse layer over :func:`rnn_dynamics.train`, :func:`rnn_dynamics.remedies.compare`
and the plots in :mod:`rnn_dynamics._plots_train`. ``register(subparsers)`` adds both commands
to a parser's sub-parsers; each sets ``func`` to its runner, ``args.func(args) -> exit status``.
Ctrl-C saves a checkpoint (``train``) or the configurations done (``compare``) and exits with
status 130; rerunning the same command resumes.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np

__all__ = ["register", "run_train", "run_compare", "compare_markdown"]

TASKS = ("adding", "delayed_xor", "temporal_order", "copy", "flip_flop")
CELLS = ("tanh", "relu", "irnn", "lstm", "gru", "esn")


_CPU_DEVICES_HELP = ("CPU cores exposed as JAX devices, so that the seeds train on all of them "
                     "(rd.train splits its seeds over the devices); 0: every core (default 1)")


def register(subparsers) -> None:
    """Add the ``train`` and ``compare`` sub-commands to an argparse sub-parsers object.

    Example::

        p = argparse.ArgumentParser(); sub = p.add_subparsers(dest="command")
        register(sub); args = p.parse_args(["train", "--steps", "100"]); args.func(args)
    """
    t = subparsers.add_parser(
        "train",
        help="train a cell with a linear readout on a task (seeds vmapped), log, checkpoint",
        description=(
            "Train --seeds networks together on a task from rd.tasks and write log.jsonl (one "
            "line per seed and logged step: loss, gradient norm, log10 ‖∂h_T/∂h_1‖₂, λ_max), "
            "checkpoint.npz, summary.json and training.png into --out. Rerunning resumes."
        ),
    )
    t.add_argument("--task", choices=TASKS, default="adding")
    t.add_argument("--length", type=int, default=100, help="sequence length T (default 100)")
    t.add_argument("--cell", choices=CELLS, default="irnn",
                   help="tanh/relu: vanilla with Gaussian W (gain --gain); irnn; lstm; gru; "
                        "esn: tanh RNN with an echo-state start (spectral radius --gain)")
    t.add_argument("--hidden", type=int, default=100, help="hidden units (default 100)")
    t.add_argument("--gain", type=float, default=None,
                   help="W's gain (tanh, relu), scale of W = g·I (irnn), spectral radius (esn)")
    t.add_argument("--optimizer", choices=("sgd", "momentum", "adam", "rmsprop", "hf"), default="sgd",
                   help="hf: Hessian-free (Martens 2010)")
    t.add_argument("--lr", type=float, default=1e-2, help="learning rate (default 0.01)")
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--clip", type=float, default=None, help="clip the gradient's global norm")
    t.add_argument("--clip-value", type=float, default=None, help="clip each gradient entry")
    t.add_argument("--omega", type=float, default=None, help="weight of Pascanu et al.'s Ω")
    t.add_argument("--floss", type=float, default=None,
                   help="weight of Lyapunov regularisation (gradient flossing)")
    t.add_argument("--floss-k", type=int, default=1, help="leading exponents flossed (default 1)")
    t.add_argument("--floss-horizon", type=int, default=None, help="steps of the estimate")
    t.add_argument("--floss-stop", type=int, default=None, help="floss only before this step")
    t.add_argument("--floss-before", type=int, default=0,
                   help="steps of flossing alone before training (default 0)")
    t.add_argument("--seeds", type=int, default=1)
    t.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--log-every", type=int, default=100)
    t.add_argument("--checkpoint-every", type=int, default=None)
    t.add_argument("--out", type=Path, default=Path("rnn_dynamics_train"))
    t.add_argument("--cpu-devices", type=int, default=1, help=_CPU_DEVICES_HELP)
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--no-plot", action="store_true")
    t.set_defaults(func=run_train)

    c = subparsers.add_parser(
        "compare",
        help="the remedies side by side on the adding problem (table + plot)",
        description=(
            "Train every configuration of rd.remedies.COMPARE_CONFIGS (tanh with and without "
            "clipping, ReLU, IRNN, LSTM, GRU, Hessian-free, Pascanu's Ω, Lyapunov "
            "regularisation, momentum from an echo-state start) on the adding problem at each "
            "--length, --seeds networks each, and write compare.json, compare.md, compare.png. "
            "Rerunning resumes from the configurations already in compare.json."
        ),
    )
    c.add_argument("--length", type=int, nargs="+", default=[50])
    c.add_argument("--hidden", type=int, default=100)
    c.add_argument("--steps", type=int, default=2000)
    c.add_argument("--seeds", type=int, default=3)
    c.add_argument("--batch", type=int, default=32)
    c.add_argument("--log-every", type=int, default=100)
    c.add_argument("--only", type=str, default=None, help="comma-separated configuration names")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", type=Path, default=Path("rnn_dynamics_compare"))
    c.add_argument("--cpu-devices", type=int, default=1, help=_CPU_DEVICES_HELP)
    c.add_argument("--no-plot", action="store_true")
    c.set_defaults(func=run_compare)


def _task(rd, name, length):
    fn = getattr(rd.tasks, name)
    task = functools.partial(fn, length=length)
    task.loss = getattr(fn, "loss", None)
    return task


def _cell(rd, args, m):
    n, g = args.hidden, args.gain
    if args.cell in ("tanh", "relu"):
        return rd.cells.vanilla(m, n, args.cell, 1.0 if g is None else g), None
    if args.cell == "irnn":
        return rd.cells.irnn(m, n, scale=1.0 if g is None else g), None
    if args.cell == "lstm":
        return rd.cells.lstm(m, n), None
    if args.cell == "gru":
        return rd.cells.gru(m, n), None
    return _remedies().echo_state_start(m, n, spectral_radius=1.1 if g is None else g,
                                        learning_rate=args.lr, momentum=args.momentum)


def _use_cpu_devices(n: int) -> None:
    """``--cpu-devices``: expose ``n`` CPU cores (0: all) as JAX devices, before JAX starts."""
    if n < 0:
        raise SystemExit(f"--cpu-devices: expected 0 (every core) or a count >= 1, got {n}.")
    if n == 1:
        return
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", n or os.cpu_count())
    except RuntimeError:  # JAX already ran a computation in this process
        print("rnn-dynamics: --cpu-devices ignored: JAX had already started in this process.",
              file=sys.stderr, flush=True)


def _remedies():
    from rnn_dynamics import remedies

    return remedies


def run_train(args) -> int:
    """Run ``rnn-dynamics train`` from parsed arguments; returns the exit status."""
    _use_cpu_devices(args.cpu_devices)
    import jax

    import rnn_dynamics as rd
    from rnn_dynamics import store

    remedies = _remedies()
    for name in ("length", "hidden", "seeds", "steps", "batch", "log_every"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')}: expected a positive integer, got {getattr(args, name)}")
    task = _task(rd, args.task, args.length)
    m = task(jax.random.key(0), 1)[0].shape[-1]
    cell, opt = _cell(rd, args, m)
    if opt is None:
        opt = remedies.hessian_free() if args.optimizer == "hf" else args.optimizer
    regs = []
    if args.omega:
        regs.append(remedies.pascanu_regularizer(args.omega))
    floss = None
    if args.floss or args.floss_before:
        floss = dict(k=args.floss_k, horizon=args.floss_horizon)
    if args.floss:
        regs.append(remedies.lyapunov_regularizer(args.floss, stop=args.floss_stop, **floss))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed)
    common = dict(batch=args.batch, seeds=args.seeds, log_every=args.log_every,
                  progress=not args.no_progress)
    params = None
    try:
        if args.floss_before:
            pre = rd.train(cell, task, steps=args.floss_before, key=key, optimizer="adam",
                           learning_rate=1e-3, loss_weight=0.0, checkpoint_dir=out / "floss",
                           regularizers=(remedies.lyapunov_regularizer(1.0, **floss),), **common)
            params = pre.params
        res = rd.train(cell, task, steps=args.steps, key=key, optimizer=opt, learning_rate=args.lr,
                       momentum=args.momentum, clip_norm=args.clip, clip_value=args.clip_value,
                       regularizers=tuple(regs), params=params, checkpoint_dir=out,
                       checkpoint_every=args.checkpoint_every, **common)
    except KeyboardInterrupt:
        print(f"\ninterrupted: checkpoint saved in {out}; rerun the same command to resume.",
              file=sys.stderr)
        return 130
    except (ValueError, TypeError) as e:
        raise SystemExit(f"rnn-dynamics train: {e}") from None
    store.save_jsonl(out / "log.jsonl", res.records())
    final = res.logs["probe_loss"][:, -1]
    summary = dict(config={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                           if k != "func"},
                   environment=store.environment(), steps=res.steps,
                   final_probe_loss=final.tolist(), skipped=res.skipped.tolist(),
                   baseline=getattr(getattr(rd.tasks, args.task), "baseline", lambda *a: None)(args.length))
    store.save_json(out / "summary.json", summary)
    print(f"{cell.name}, {args.task} T={args.length}: final probe loss per seed "
          f"{np.round(final, 4).tolist()} (baseline {summary['baseline']}); wrote {out / 'log.jsonl'}")
    if not args.no_plot:
        _save_training_plot(res, out / "training.png")
    return 0


def _save_training_plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rnn_dynamics import _plots_train as P

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    P.plot_training(res, ax=a)
    P.plot_stability(res, ax=b)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def compare_markdown(rows) -> str:
    """The comparison as a markdown table: medians over seeds (test MSE against 1/6, steps to
    the target MSE or "not reached", log10 ‖∂h_T/∂h_1‖₂ and λ_max at start → end)."""
    head = ["config", "T", "steps run", "test MSE (median)", "seeds below target", "steps to target",
            "log10‖∂h_T/∂h_1‖₂ start → end", "λ_max start → end", "skipped", "s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        mse = np.asarray(r["test_mse"], float)
        reached = [s for s in r["steps_to_target"] if s is not None]
        steps = "not reached" if not reached else (
            f"{int(np.median(reached))}" + ("" if len(reached) == len(mse) else f" ({len(reached)}/{len(mse)})"))
        med = lambda k: float(np.nanmedian(np.asarray(r[k], float))) if np.isfinite(np.asarray(r[k], float)).any() else None
        lines.append("| " + " | ".join([
            r["name"], str(r.get("length", "")), str(r["steps"]), _fmt(float(np.median(mse))),
            f"{int(np.sum(mse < r['target']))}/{len(mse)}", steps,
            f"{_fmt(med('log10_jacobian_norm_start'))} → {_fmt(med('log10_jacobian_norm_end'))}",
            f"{_fmt(med('lambda_max_start'))} → {_fmt(med('lambda_max_end'))}",
            str(int(np.sum(r["skipped"]))), f"{r['seconds']:.0f}",
        ]) + " |")
    return "\n".join(lines)


def run_compare(args) -> int:
    """Run ``rnn-dynamics compare`` from parsed arguments; returns the exit status."""
    _use_cpu_devices(args.cpu_devices)
    import jax

    import rnn_dynamics as rd
    from rnn_dynamics import store

    remedies = _remedies()
    names = list(remedies.COMPARE_CONFIGS) if args.only is None else [s for s in args.only.split(",") if s]
    bad = [n for n in names if n not in remedies.COMPARE_CONFIGS]
    if bad:
        raise SystemExit(f"--only: unknown configuration(s) {bad}; expected some of "
                         f"{','.join(remedies.COMPARE_CONFIGS)}.")
    config = dict(lengths=args.length, hidden=args.hidden, steps=args.steps, seeds=args.seeds,
                  batch=args.batch, log_every=args.log_every, names=names, seed=args.seed)
    out = args.out
    path = out / "compare.json"
    done = {}
    if path.exists():
        old = store.load_json(path)
        if old.get("config") == config:
            done = {(r["length"], r["name"]): r for r in old["rows"]}
    rows = []
    results = {"config": config, "environment": store.environment(), "rows": rows}
    try:
        for T in args.length:
            task = functools.partial(rd.tasks.adding, length=T)
            todo = [n for n in names if (T, n) not in done]
            for n in names:
                if (T, n) in done:
                    rows.append(done[(T, n)])

            def keep(row, T=T):
                row["length"] = T
                rows.append(row)
                store.save_json(path, results)
                print(f"T={T} {row['name']}: test MSE {np.round(row['test_mse'], 4).tolist()} "
                      f"({row['seconds']:.1f} s)", flush=True)

            if todo:
                remedies.compare(task, input_size=2, hidden=args.hidden, steps=args.steps,
                                 seeds=args.seeds, key=jax.random.key(args.seed), names=todo,
                                 batch=args.batch, log_every=args.log_every, on_result=keep)
    except KeyboardInterrupt:
        store.save_json(path, results)
        print(f"\ninterrupted: {len(rows)} configurations saved in {path}; rerun to resume.",
              file=sys.stderr)
        return 130
    order = {(T, n): i for i, (T, n) in enumerate((T, n) for T in args.length for n in names)}
    rows.sort(key=lambda r: order[(r["length"], r["name"])])
    store.save_json(path, results)
    md = compare_markdown(rows)
    (out / "compare.md").write_text(md + "\n")
    print(md)
    if not args.no_plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from rnn_dynamics import _plots_train as P

        fig = P.plot_compare(rows)
        fig.savefig(out / "compare.png", dpi=110)
        plt.close(fig)
    return 0
