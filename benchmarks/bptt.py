#!/usr/bin/env python
"""Benchmark: the per-lag BPTT decomposition (rd.bptt.by_lag) against a plain jax.grad.

For a tanh vanilla cell (``rd.cells.vanilla(4, n, "tanh", gain=1.0)``, float32) and each
(n, T) below, all jitted, compile time apart from the steady time (median of interleaved
repeats, ``jax.block_until_ready``):

``grad``            ``jax.grad`` of ℓ(h_T) = Σ h_T² through a ``lax.scan`` rollout: the reference.
``by_lag``          ``rd.bptt.by_lag(..., keep=True)``: every lag contribution C_k stacked
                    (T−1 copies of the params) plus their norms and the gradient.
``by_lag_norms``    ``keep=False``: norms and gradient only (memory of one gradient).
``per_step:grad``   ``jax.grad`` of a per-step loss Σ_t ‖V h_t − y_t‖²;
``per_step:step``   ``by_lag(..., per_step=True, group="step")`` (one reverse scan);
``per_step:lag``    ``group="lag"`` (T−1 vjps of the batched step, O(T²)): shown for the
                    smaller sizes only.
``write_only``      no computation: a jitted function that returns an array of the size of
                    ``by_lag``'s stacked contributions (T−1 copies of the params, filled from
                    W). The memory-bound floor under ``keep=True``: what writing the output
                    alone costs against a gradient.

The target (printed PASS/FAIL, nothing asserted): by_lag at most 3× a plain gradient.

Usage::

    python benchmarks/bptt.py            # full run (about a minute on a 2-core CPU)
    python benchmarks/bptt.py --quick    # tiny sizes, a smoke test
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import rnn_dynamics as rd  # noqa: E402
from _harness import (  # noqa: E402
    blocked, compile_jit, finish_args, header, log, machine, measure, parser, table, write_json,
)

FULL = [(64, 200), (128, 500), (256, 1000)]
QUICK = [(16, 50), (32, 100)]
LAG_MAX_T = 500  # the O(T²) lag grouping is timed up to this T
RATIO_FLOOR = 3.0


def _final_loss(h):
    return jnp.sum(h * h)


def setup(n, T, key=jax.random.key(0)):
    cell = rd.cells.vanilla(4, n, "tanh", gain=1.0)
    kp, kx, kv, ky = jax.random.split(key, 4)
    p = cell.init(kp)
    h1 = jnp.zeros(n)
    xs = jax.random.normal(kx, (T - 1, 4))
    V = jax.random.normal(kv, (n, 2)) / jnp.sqrt(n)
    ys = jax.random.normal(ky, (T - 1, 2))
    return cell, p, h1, xs, V, ys


def functions(cell):
    def rollout(p, h1, xs):
        return jax.lax.scan(lambda h, x: (cell.step(p, h, x),) * 2, h1, xs)[1]

    def grad(p, h1, xs, V, ys):
        return jax.grad(lambda p: _final_loss(rollout(p, h1, xs)[-1]))(p)

    def by_lag(p, h1, xs, V, ys):
        return rd.bptt.by_lag(cell, p, h1, xs, _final_loss)

    def by_lag_norms(p, h1, xs, V, ys):
        return rd.bptt.by_lag(cell, p, h1, xs, _final_loss, keep=False)

    def seq_loss(V, ys):
        return lambda hs: jnp.sum((hs @ V - ys) ** 2)

    def ps_grad(p, h1, xs, V, ys):
        return jax.grad(lambda p: seq_loss(V, ys)(rollout(p, h1, xs)))(p)

    def ps_step(p, h1, xs, V, ys):
        return rd.bptt.by_lag(cell, p, h1, xs, seq_loss(V, ys), per_step=True, group="step")

    def ps_lag(p, h1, xs, V, ys):
        return rd.bptt.by_lag(cell, p, h1, xs, seq_loss(V, ys), per_step=True, group="lag", keep=False)

    def write_only(p, h1, xs, V, ys):
        T1 = xs.shape[0]
        return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(2 * a, (T1,) + a.shape), p)

    return {"grad": grad, "by_lag": by_lag, "by_lag_norms": by_lag_norms, "write_only": write_only,
            "per_step:grad": ps_grad, "per_step:step": ps_step, "per_step:lag": ps_lag}


def main(argv=None):
    ap = parser(__doc__)
    args = finish_args(ap, argv)
    meta = machine()
    print(header(meta))
    sizes = QUICK if args.quick else FULL
    results = {"machine": meta, "sizes": [], "ratio_floor": RATIO_FLOOR}
    rows = []
    for n, T in sizes:
        log(f"n = {n}, T = {T}")
        cell, p, h1, xs, V, ys = setup(n, T)
        fns = functions(cell)
        if T > LAG_MAX_T:
            fns.pop("per_step:lag")
        compiled, compile_s = {}, {}
        for name, f in fns.items():
            compiled[name], t = compile_jit(f, p, h1, xs, V, ys)
            compile_s[name] = t["total_s"]
        thunks = {k: blocked(c, p, h1, xs, V, ys) for k, c in compiled.items()}
        timing = measure(thunks, args.repeats, args.budget)
        base = {"grad": timing["grad"]["median_s"], "per_step": timing["per_step:grad"]["median_s"]}
        entry = {"n": n, "T": T, "compile_s": compile_s, "timing": timing, "ratio": {}}
        for name in fns:
            ref = base["per_step"] if name.startswith("per_step") else base["grad"]
            ratio = timing[name]["median_s"] / ref
            entry["ratio"][name] = ratio
            verdict = "" if name in ("grad", "per_step:grad", "per_step:lag", "write_only") else (
                "PASS" if ratio <= RATIO_FLOOR else "FAIL")
            rows.append([f"{n}", f"{T}", name, f"{compile_s[name]:.2f}",
                         f"{1e3 * timing[name]['median_s']:.2f}", f"{ratio:.2f}", verdict])
        results["sizes"].append(entry)
    print(table(["n", "T", "function", "compile s", "steady ms", "× grad", f"≤ {RATIO_FLOOR}×"],
                rows, left=(2,)))
    path = write_json("bptt", results, args.out, quick=args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
