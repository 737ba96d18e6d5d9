#!/usr/bin/env python
"""Benchmark: compile time of ∂h_T/∂h_1 + spectral norm against the horizon T.

``jax.jit(jax.vmap(lambda p, h, x: rd.spectral_norm(rd.jacobian(cell, p, h, x))))`` for a tanh
vanilla cell (n = 32, 4 seeds) at T = 100 and T = 10,000: lower + compile, the median of three
fresh jits (nothing comes from the executable cache), and the first (cold) one. The time
stepping is a ``lax.scan``, so compile time should not grow with T (floor: T = 10,000 at most
1.5x T = 100).

Usage::

    python benchmarks/compile_time.py            # about 10 s
    python benchmarks/compile_time.py --quick
"""
from __future__ import annotations

import os
import sys
import warnings

import numpy as np

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402

import rnn_dynamics as rd  # noqa: E402

warnings.simplefilter("ignore", rd.NumericalWarning)
INPUT_SCALE = 0.01
FLOOR = 1.5


def problem(n, T, seeds):
    cell = rd.cells.vanilla(1, n, "tanh", gain=1.0)
    keys = jax.random.split(jax.random.key(0), seeds)
    return cell, jax.vmap(lambda k: rd.draw_seed(cell, k, T, input_scale=INPUT_SCALE))(keys)


def main(argv=None):
    args = H.finish_args(H.parser(__doc__), argv)
    meta = H.machine()
    print(H.header(meta), flush=True)
    n, seeds, Ts = (8, 2, (20, 2000)) if args.quick else (32, 4, (100, 10_000))
    rows = []
    for T in Ts:
        H.log(f"compile: n={n} T={T} seeds={seeds}")
        cell, (p, h1, xs) = problem(n, T, seeds)
        ts = []
        for _ in range(3):  # a fresh function each time: no cache hit
            f = jax.vmap(lambda p, h, x: rd.spectral_norm(rd.jacobian(cell, p, h, x)))
            ts.append(H.compile_jit(lambda *a: f(*a), p, h1, xs)[1])
        rows.append(dict(n=n, T=T, seeds=seeds, lower_s=float(np.median([t["lower_s"] for t in ts])),
                         compile_s=float(np.median([t["compile_s"] for t in ts])),
                         total_s=float(np.median([t["total_s"] for t in ts])), cold_total_s=ts[0]["total_s"]))
    ratio = rows[-1]["total_s"] / rows[0]["total_s"]
    print(H.table(["n", "T", "seeds", "lower s", "compile s", "total s", "first (cold) s"],
                  [[r["n"], r["T"], r["seeds"], f"{r['lower_s']:.2f}", f"{r['compile_s']:.2f}",
                    f"{r['total_s']:.2f}", f"{r['cold_total_s']:.2f}"] for r in rows], left=()))
    print(f"\ncompile T={Ts[-1]} / T={Ts[0]}: {ratio:.2f} (floor <= {FLOOR}: "
          f"{'PASS' if ratio <= FLOOR else 'FAIL'})")
    meta.update(args=vars(args), rnn_dynamics_version=rd.__version__)
    path = H.write_json("compile_time", dict(meta=meta, rows=rows, ratio=ratio, floor=FLOOR),
                        args.out, args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
