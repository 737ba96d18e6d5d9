#!/usr/bin/env python
"""Benchmark: what a top-level ``rd.spectra`` call costs beyond its compiled program.

The same work four ways, interleaved (tanh vanilla cell, ∂h_T/∂h_1 of every seed and its
singular values, float32, each seed's network, h_1 and inputs handed in):

* ``flax nn.RNN(SimpleCell) + jax.jacfwd``: the peer of benchmarks/jacobian.py (its spectral
  norm, compiled ahead of time);
* ``rd.spectra [inside a user's jit]``: the library's compiled program alone, its argument
  checks run once at trace time;
* ``... + range count read back``: the same, plus reading back the number of seeds whose dense
  matrix left the float range, as the top-level call does for its warning;
* ``rd.spectra [top level]``: the call a script makes (signature lookup, dispatch, range count).

Differences between rows are host work around one dispatch, not computation: the compiled
programs are the same. Ratios are ``flax time / row time`` (above 1: faster than flax).

Usage::

    python benchmarks/spectra_overhead.py                    # n = 32, T = 100, 32 seeds
    python benchmarks/spectra_overhead.py --repeats 300 --budget 120
    python benchmarks/spectra_overhead.py --quick
"""
from __future__ import annotations

import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402
from jacobian import flax_fn, make_problem  # noqa: E402

import rnn_dynamics as rd  # noqa: E402

warnings.simplefilter("ignore", rd.NumericalWarning)

FLAX = "flax nn.RNN(SimpleCell) + jax.jacfwd"
INNER = "rd.spectra [inside a user's jit]"
READ = "rd.spectra [inside a user's jit] + range count read back"
TOP = "rd.spectra [top level, given the networks]"


def run(n, T, seeds, args):
    cell, (p, h1, xs) = make_problem(n, T, seeds)
    key = jax.random.key(0)
    H.log(f"n={n} T={T} seeds={seeds}: compiling")
    flax, _ = H.compile_jit(flax_fn(n), p, h1, xs)

    def inner_fn(p, h1, xs):
        out = rd.spectra(cell, key, params=p, h1=h1, xs=xs, curve=False)
        return out.singular_values, jnp.sum(~out.dense_ok, dtype=jnp.int32)

    inner, _ = H.compile_jit(inner_fn, p, h1, xs)

    def read():
        sv, bad = inner(p, h1, xs)
        int(np.asarray(bad))
        return sv

    top = lambda: rd.spectra(cell, key, params=p, h1=h1, xs=xs, curve=False).singular_values
    thunks = {FLAX: H.blocked(flax, p, h1, xs), INNER: lambda: jax.block_until_ready(inner(p, h1, xs)[0]),
              READ: lambda: jax.block_until_ready(read()), TOP: lambda: jax.block_until_ready(top())}
    ref = np.asarray(flax(p, h1, xs))
    diff = float(np.max(np.abs(np.asarray(top())[:, 0] / ref - 1)))
    t = H.measure(thunks, args.repeats, args.budget)
    base = t[FLAX]["median_s"]
    rows = [dict(peer=k, median_s=v["median_s"], min_s=v["min_s"], repeats=v["repeats"],
                 vs_flax=base / v["median_s"]) for k, v in t.items()]
    host_us = (t[TOP]["median_s"] - t[INNER]["median_s"]) * 1e6
    return dict(n=n, T=T, seeds=seeds, rows=rows, top_minus_inner_us=host_us,
                max_rel_diff_top_vs_flax=diff)


def main(argv=None):
    ap = H.parser(__doc__)
    ap.add_argument("--n", type=int, nargs="*", default=None, help="state sizes (default 32)")
    args = H.finish_args(ap, argv)
    meta = H.machine()
    print(H.header(meta), flush=True)
    sizes = [(8, 20, 8)] if args.quick else [(n, 100, 32) for n in (args.n or [32])]
    results = dict(meta=meta, sizes=[run(n, T, s, args) for n, T, s in sizes])
    for s in results["sizes"]:
        print(f"\nn = {s['n']}, T = {s['T']}, seeds = {s['seeds']}; flax / row > 1: faster than flax "
              f"(max rel diff of ‖J‖ top level vs flax: {s['max_rel_diff_top_vs_flax']:.0e})")
        print(H.table(["peer", "median ms", "min ms", "flax / row", "rounds"],
                      [[r["peer"], f"{r['median_s'] * 1e3:.3f}", f"{r['min_s'] * 1e3:.3f}",
                        f"{r['vs_flax']:.3f}", r["repeats"]] for r in s["rows"]]))
        print(f"top level - inside a user's jit: {s['top_minus_inner_us']:.0f} µs per call")
    meta.update(args=vars(args), rnn_dynamics_version=rd.__version__)
    path = H.write_json("spectra_overhead", results, args.out, args.quick)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
