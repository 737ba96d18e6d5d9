#!/usr/bin/env python
"""Benchmark: a sweep over a hyperparameter is one compiled computation.

A 20-gain sweep of ``rd.spectra`` (tanh, n = 48, 8 inputs, T = 120, 8 seeds, float32) against
one gain, each measured as a first call in a fresh compile cache (compile + run) and steady:

* ``one gain``: ``rd.spectra(vanilla(gain=1.0), ...)``.
* ``rd.sweep``: ``rd.sweep(per_gain, gains)`` (``lax.map`` over the gains, one compilation).
* ``jit(vmap)``: ``jax.jit(jax.vmap(per_gain))(gains)``.
* ``loop``: a Python loop of ``rd.spectra`` calls over the 20 gains (equal cells share one
  compilation since the gain is data; before that, each gain compiled anew).

Floor: the 20-gain sweep costs at most 3x one gain, first call included.

Usage::

    python benchmarks/sweep_gains.py [--quick]
"""
from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402

import rnn_dynamics as rd  # noqa: E402

FLOOR = 3.0


def main(argv=None):
    args = H.finish_args(H.parser(__doc__), argv)
    meta = H.machine()
    print(H.header(meta), flush=True)
    n, T, S, G = (16, 40, 4, 5) if args.quick else (48, 120, 8, 20)
    key = jax.random.key(0)
    gains = jnp.linspace(0.5, 2.5, G)

    def per_gain(g):
        return rd.spectra(rd.cells.vanilla(8, n, gain=g), key, seeds=S, steps=T).log10_norm

    def first(thunk):
        jax.clear_caches()
        t = time.perf_counter()
        jax.block_until_ready(thunk())
        return time.perf_counter() - t

    thunks = {
        "one gain": lambda: per_gain(1.0),
        "rd.sweep": lambda: rd.sweep(per_gain, gains),
        "jit(vmap)": lambda: jax.jit(jax.vmap(per_gain))(gains),
        "loop": lambda: [per_gain(float(g)) for g in gains],
    }
    firsts = {k: first(f) for k, f in thunks.items()}
    steady = H.measure({k: (lambda f=f: jax.block_until_ready(f())) for k, f in thunks.items()},
                       repeats=args.repeats, budget_s=args.budget)
    base = firsts["one gain"]
    rows = [[k, f"{firsts[k]:.2f}", f"{firsts[k] / base:.2f}", f"{steady[k]['median_s']:.3f}"] for k in thunks]
    print(f"\n{G} gains, tanh n = {n}, T = {T}, {S} seeds, float32")
    print(H.table(["route", "first call s", "x one gain", "steady median s"], rows))
    ratio = firsts["rd.sweep"] / base
    print(f"\nfloor: the {G}-gain sweep (rd.sweep, first call) costs at most {FLOOR}x one gain: "
          f"{ratio:.2f}x -> {'PASS' if ratio <= FLOOR else 'FAIL'}")
    H.write_json("sweep_gains", dict(machine=meta, n=n, T=T, seeds=S, gains=G, first_call_s=firsts,
                                     steady=steady, ratio=ratio, floor=FLOOR), quick=args.quick)


if __name__ == "__main__":
    main()
