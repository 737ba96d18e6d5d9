#!/usr/bin/env python
"""Benchmark: seeds per second of ``rd.spectra`` against its batch size and a Python loop.

For a tanh vanilla cell at n = 32 and n = 128 (T = 500, 64 seeds, ``curve=False``, jacfwd):
``rd.spectra(..., batch_size=b)`` for b = 1, 2, 4, ..., 64 and the default
(``rd.default_batch_size``), against a Python loop of a jitted one-seed call
``rd.singular_values(rd.jacobian(cell, *rd.draw_seed(cell, k, T)))`` as a user would write it.
Floor: the default batch size is never slower than the loop.

Usage::

    python benchmarks/spectra_batch.py           # a few minutes on a 2-core CPU
    python benchmarks/spectra_batch.py --quick
"""
from __future__ import annotations

import os
import sys
import warnings

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402

import rnn_dynamics as rd  # noqa: E402

warnings.simplefilter("ignore", rd.NumericalWarning)
INPUT_SCALE = 0.01


def run(n, T, seeds, batch_sizes, args):
    cell = rd.cells.vanilla(1, n, "tanh", gain=1.0)
    key = jax.random.key(0)
    default = rd.default_batch_size(n, seeds)
    bs = sorted({b for b in batch_sizes if b <= seeds} | {seeds, default})
    H.log(f"spectra: n={n} T={T} seeds={seeds}: batch sizes {bs} (default {default}) + loop")

    def spectra_thunk(b):
        return lambda: jax.block_until_ready(
            rd.spectra(cell, key, seeds, T, input_scale=INPUT_SCALE, batch_size=b, curve=False).singular_values)

    one = jax.jit(lambda k: rd.singular_values(rd.jacobian(cell, *rd.draw_seed(cell, k, T, input_scale=INPUT_SCALE))))
    key_list = list(jax.random.split(key, seeds))
    thunks = {"loop": lambda: jax.block_until_ready([one(k) for k in key_list]),
              **{f"b={b}": spectra_thunk(b) for b in bs}}
    firsts = {k: H.first_call(f) for k, f in thunks.items()}
    t = H.measure(thunks, args.repeats, args.budget, warmup=False)
    loop_rate = seeds / t["loop"]["median_s"]
    entries = [dict(config=k, batch_size=None if k == "loop" else int(k[2:]),
                    is_default=k == f"b={default}", median_s=v["median_s"], min_s=v["min_s"],
                    seeds_per_s=seeds / v["median_s"], vs_loop=seeds / v["median_s"] / loop_rate,
                    first_call_s=firsts[k], repeats=v["repeats"]) for k, v in t.items()]
    return dict(n=n, T=T, seeds=seeds, default_batch_size=default, entries=entries)


def main(argv=None):
    args = H.finish_args(H.parser(__doc__), argv)
    meta = H.machine()
    print(H.header(meta), flush=True)
    if args.quick:
        sizes, batch_sizes = [(8, 30, 8), (16, 30, 8)], (1, 2, 8)
    else:
        sizes, batch_sizes = [(32, 500, 64), (128, 500, 64)], (1, 2, 4, 8, 16, 32, 64)
    rows = [run(n, T, s, batch_sizes, args) for n, T, s in sizes]
    for r in rows:
        print(f"\nrd.spectra seeds/s, n={r['n']} T={r['T']} seeds={r['seeds']} (loop = Python loop "
              f"of a jitted one-seed call)")
        print(H.table(["config", "seeds/s", "vs loop", "median ms", "first call s"],
                      [[e["config"] + (" (default)" if e["is_default"] else ""), f"{e['seeds_per_s']:.1f}",
                        f"{e['vs_loop']:.2f}", f"{e['median_s'] * 1e3:.1f}", f"{e['first_call_s']:.2f}"]
                       for e in r["entries"]]))
        d = next(e for e in r["entries"] if e["is_default"])
        print(f"default (b={d['batch_size']}) vs loop: {d['vs_loop']:.2f} (floor >= 1: "
              f"{'PASS' if d['vs_loop'] >= 1 else 'FAIL'})")
    meta.update(args=vars(args), rnn_dynamics_version=rd.__version__, input_scale=INPUT_SCALE)
    path = H.write_json("spectra_batch", dict(meta=meta, rows=rows), args.out, args.quick)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
