#!/usr/bin/env python
"""Benchmark: success rate against delay, with and without Lyapunov regularisation ("flossing").

Engelken (NeurIPS 2023) reports that regularising the leading Lyapunov exponents toward zero
lets a tanh RNN bridge longer delays on the delayed XOR and copy tasks. This script runs that
comparison with ``rd.train``: for each task and delay, a tanh RNN (Gaussian init, gain 1) is
trained with Adam, seeds trained together (vmapped), once plainly and once with
``rd.remedies.lyapunov_regularizer`` (Σ_{i≤k} λ_i² over the k leading exponents of the first
batch sequence) during the first ``--floss-steps`` steps. Every run uses the same seed keys
and the same held-out test batch (512 sequences).

Success of a seed (on the test batch):
  delayed XOR  accuracy of the class asked at the last step ≥ 0.95 (chance 0.5);
  copy         accuracy of the 10 recalled symbols ≥ 0.95 (chance 1/8).

Reported per (task, delay, flossing): the success count, each seed's test accuracy, λ_max at
the start and at the end (median over seeds) and the seconds spent. Nothing is asserted.

Usage::

    python benchmarks/flossing.py                 # delays XOR 10..80, copy 5..40 (minutes)
    python benchmarks/flossing.py --quick         # a smoke run
"""
from __future__ import annotations

import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import rnn_dynamics as rd  # noqa: E402
from _harness import finish_args, header, log, machine, parser, table, write_json  # noqa: E402

SUCCESS = 0.95


def accuracy(task_name, model, params, batch):
    """(S,) test accuracy per seed: the last step's class (XOR) or the 10 recalled symbols (copy)."""
    inputs, targets, _ = batch
    out = jax.vmap(lambda p: rd.predict(model, p, inputs))(params)  # (S, B, L, classes)
    if task_name == "xor":
        pred, true = jnp.argmax(out[:, :, -1], -1), jnp.argmax(targets[:, -1], -1)[None]
    else:
        pred, true = jnp.argmax(out[:, :, -10:], -1), jnp.argmax(targets[:, -10:], -1)[None]
    return np.asarray(jnp.mean((pred == true).reshape(pred.shape[0], -1), axis=1))


def run_one(task_name, delay, floss, args, key):
    make = rd.tasks.delayed_xor if task_name == "xor" else rd.tasks.copy
    task = functools.partial(make, length=delay)
    test = task(jax.random.fold_in(key, 1), 512)
    cell = rd.cells.vanilla(test.inputs.shape[-1], args.hidden, "tanh", gain=1.0)
    regs = ()
    if floss:
        regs = (rd.remedies.lyapunov_regularizer(args.floss_weight, k=args.k,
                                                 stop=args.floss_steps),)
    t0 = time.perf_counter()
    res = rd.train(cell, task, steps=args.steps, key=jax.random.fold_in(key, 0), seeds=args.seeds,
                   batch=args.batch, optimizer="adam", learning_rate=args.lr, clip_norm=1.0,
                   regularizers=regs, log_every=max(1, args.steps // 10), progress=False)
    secs = time.perf_counter() - t0
    acc = accuracy(task_name, res.model, res.params, test)
    lam = res.logs["lambda_max"]
    return dict(task=task_name, delay=delay, floss=floss, accuracy=acc.tolist(),
                successes=int(np.sum(acc >= SUCCESS)), seeds=args.seeds,
                lambda_max_start=float(np.nanmedian(lam[:, 0])),
                lambda_max_end=float(np.nanmedian(lam[:, -1])), seconds=secs)


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--xor-delays", type=int, nargs="*", default=[10, 20, 40, 80])
    ap.add_argument("--copy-delays", type=int, nargs="*", default=[5, 10, 20, 40])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--k", type=int, default=4, help="exponents flossed")
    ap.add_argument("--floss-weight", type=float, default=1.0)
    ap.add_argument("--floss-steps", type=int, default=500, help="flossing during the first steps")
    args = finish_args(ap, argv)
    if args.quick:
        args.xor_delays, args.copy_delays, args.steps, args.hidden, args.seeds = [4], [2], 40, 8, 2
        args.floss_steps = 20
    meta = machine()
    print(header(meta))
    rows = []
    results = {"machine": meta, "config": {k: v for k, v in vars(args).items()
                                           if k not in ("lapack_libs",)}, "rows": rows}
    key = jax.random.key(0)
    for task_name, delays in (("xor", args.xor_delays), ("copy", args.copy_delays)):
        for delay in delays:
            for floss in (False, True):
                r = run_one(task_name, delay, floss, args, key)
                rows.append(r)
                log(f"{task_name} delay {delay} floss={floss}: {r['successes']}/{r['seeds']} "
                    f"(acc {[round(a, 3) for a in r['accuracy']]}), λ_max {r['lambda_max_start']:.3f}"
                    f" -> {r['lambda_max_end']:.3f}, {r['seconds']:.1f} s")
                write_json("flossing", results, args.out, quick=args.quick)
    print()
    print(table(["task", "delay", "flossing", "successes", "test accuracy per seed",
                 "λ_max start", "λ_max end", "s"],
                [[r["task"], r["delay"], "yes" if r["floss"] else "no",
                  f"{r['successes']}/{r['seeds']}", " ".join(f"{a:.2f}" for a in r["accuracy"]),
                  f"{r['lambda_max_start']:.3f}", f"{r['lambda_max_end']:.3f}",
                  f"{r['seconds']:.0f}"] for r in rows]))
    path = write_json("flossing", results, args.out, quick=args.quick)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
