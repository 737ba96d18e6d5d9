#!/usr/bin/env python
"""Benchmark: the remedies for exploding and vanishing gradients, side by side, on the adding problem.

Every configuration of ``rd.remedies.COMPARE_CONFIGS`` (tanh RNN with Gaussian init, with and
without clipping; ReLU RNN; IRNN; LSTM; GRU; tanh with Hessian-free, with Pascanu et al.'s Ω,
with Lyapunov regularisation, and with momentum from an echo-state start) is trained on the
adding problem at each T, hidden 100, 3 seeds trained together (vmapped), the same seed keys
and the same held-out test batch (1000 sequences) for all. Reported per configuration: final
test MSE against the baseline 1/6, steps until the probe MSE first fell below 0.01 (at a
logged step; "not reached" otherwise), log10 ‖∂h_T/∂h_1‖₂ and λ_max (nats per step) at the
start and the end (medians over seeds), the seconds spent, the first call (compile plus one
chunk of steps) and the steady steps per second.

The full run (T ∈ {50, 100, 200}, 2000 steps) takes a few minutes per configuration on a
2-core CPU; ``--lengths 50 --steps 500`` is a reduced run. Results go to
``benchmarks/results/compare-<device>.json`` and the table is printed as markdown.

Usage::

    python benchmarks/compare.py                                  # full run
    python benchmarks/compare.py --lengths 50 --steps 500         # reduced
    python benchmarks/compare.py --quick                          # smoke test
"""
from __future__ import annotations

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

import rnn_dynamics as rd  # noqa: E402
from rnn_dynamics import remedies  # noqa: E402
from rnn_dynamics._cli_train import compare_markdown  # noqa: E402
from _harness import finish_args, header, log, machine, parser, write_json  # noqa: E402


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--lengths", type=int, nargs="+", default=[50, 100, 200])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--only", type=str, default=None, help="comma-separated configuration names")
    args = finish_args(ap, argv)
    if args.quick:
        args.lengths, args.steps, args.hidden, args.log_every = [10], 40, 8, 20
    meta = machine()
    print(header(meta))
    names = None if args.only is None else args.only.split(",")
    rows = []
    results = {"machine": meta, "config": dict(lengths=args.lengths, steps=args.steps,
                                               hidden=args.hidden, seeds=args.seeds,
                                               batch=args.batch, log_every=args.log_every),
               "rows": rows}

    def keep(row, T):
        row["length"] = T
        rows.append(row)
        log(f"T={T} {row['name']}: test MSE {[round(x, 4) for x in row['test_mse']]}, "
            f"{row['seconds']:.1f} s (first call {row['first_call_s']:.1f} s, steady "
            f"{row['steady_steps_per_s']:.1f} steps/s)")
        write_json("compare", results, args.out, quick=args.quick)

    for T in args.lengths:
        task = functools.partial(rd.tasks.adding, length=T)
        remedies.compare(task, input_size=2, hidden=args.hidden, steps=args.steps,
                         seeds=args.seeds, key=jax.random.key(0), names=names, batch=args.batch,
                         log_every=args.log_every, on_result=lambda r, T=T: keep(r, T))
    print()
    print(compare_markdown(rows))
    print("\nfirst call s (compile + one chunk) and steady steps/s:")
    for r in rows:
        print(f"  T={r['length']} {r['name']}: {r['first_call_s']:.1f} s, "
              f"{r['steady_steps_per_s']:.1f} steps/s")
    path = write_json("compare", results, args.out, quick=args.quick)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
