#!/usr/bin/env python
"""Benchmark: ``rd.study.run`` (seeds sharded over devices, numbers in one compiled call).

1. Seeds. One configuration (tanh, 8 inputs, T = 500, metric "dense": the exact dense
   ∂h_T/∂h_1 and its singular values) at n ∈ {32, 128, 256} × seeds ∈ {8, 64, 512}, through
   ``rd.study.run`` (into a fresh folder each call, so the store's I/O is included) against a
   Python loop of a jit-compiled one-seed function doing the same work (``rd.draw_seed``,
   ``rd.jacobian``, ``rd.singular_values``). ``--metric norms`` adds the curve
   log10 ‖∂h_t/∂h_1‖₂ (an SVD at every step, 20-30x the product's cost) on both sides.
2. Numbers. A 20-gain study (n = 64, T = 300, 32 seeds) against a 1-gain study of the same
   shape: 20 configurations run as one compiled call.

Each row gives the first call (compile + run) and the steady time (median), the rate
seeds·(T-1)·n³ per second (work units of the study; the dense product costs 2 flop per unit),
and the study's share of the machine's matmul rate at that n (a chain of T-1 batched n×n
products in a jitted scan, :func:`matmul_rate`). ``--quick`` uses
n ∈ {16, 32}, seeds ∈ {4, 16}, T = 60 and a 5-gain sweep at n = 16, T = 60, 8 seeds.

Usage::

    python benchmarks/sweep.py [--quick]
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402

import rnn_dynamics as rd  # noqa: E402


_SCRATCH = tempfile.TemporaryDirectory(prefix="sweep-bench-")  # removed at exit, not timed


def _study_thunk(cfg):
    """One full study into a new folder per call (its writes included; the folders are removed
    when the benchmark exits, outside the timing, as a user's results would stay)."""
    count = iter(range(10**9))

    def go():
        rd.study.run(cfg, os.path.join(_SCRATCH.name, f"s{id(cfg)}-{next(count)}"), progress=False)
    return go


def _compute_thunk(cfg):
    """The study's compiled computation alone (its one group's call and the gather to host),
    without the store: what batching the seeds buys or costs, apart from the writes."""
    from rnn_dynamics import study as _st

    s = _st.Study.from_dict(cfg)
    ((shape, group, size),) = list(_st._groups(s, _st.configurations(s), 16))
    mesh = _st._shape_mesh(_st._mesh(), _st._probe(shape).state_size)  # the devices run() uses
    key_data = _st._seed_keys(s, mesh)
    rows = _st._group_rows(group, size)  # padded to the group size, as run() pads it
    return lambda: _st._gather(_st._run_group(s, shape, rows, key_data, mesh))


def matmul_rate(n, steps, batch=4, distinct=8):
    """GF/s of the machine's matmul chain at this n: c <- A_t·c over ``steps`` products of
    (batch, n, n) float32 matrices (``distinct`` of them, reused in turn, as a Jacobian product
    reuses its W), in a jitted ``lax.scan``, with the compile options the library uses at this n;
    the best of 3 calls."""
    import jax.numpy as jnp

    A = jax.random.normal(jax.random.key(1), (distinct, batch, n, n)) / n ** 0.5
    eye = jnp.broadcast_to(jnp.eye(n), (batch, n, n))
    f = lambda A, c: jax.lax.scan(lambda c, t: (A[t % distinct] @ c, None), c,
                                  jnp.arange(steps))[0]
    opts = rd.fast_cpu_options() if n > 64 else None
    g = jax.jit(f, compiler_options=opts)
    jax.block_until_ready(g(A, eye))
    best = min(_first(lambda: jax.block_until_ready(g(A, eye))) for _ in range(3))
    return 2 * batch * steps * n**3 / best / 1e9


def _loop_thunk(n, T, seeds, gain=1.0, curve=False):
    cell = rd.cells.vanilla(8, n, "tanh", gain)

    @jax.jit
    def one(key):
        params, h1, xs = rd.draw_seed(cell, key, T)
        logn = rd.jacobian_norms(cell, params, h1, xs, log10=True) if curve else None
        sv = rd.singular_values(rd.jacobian(cell, params, h1, xs))
        return logn, sv

    keys = jax.random.split(jax.random.key(0), seeds)

    def go():
        jax.block_until_ready([one(keys[i]) for i in range(seeds)])
    return go


def _first(thunk):
    t = time.perf_counter()
    thunk()
    return time.perf_counter() - t


def main(argv=None):
    ap = H.parser(__doc__)
    ap.add_argument("--metric", choices=("dense", "norms"), default="dense")
    ap.add_argument("--n", type=int, nargs="*", default=None, help="only these state sizes")
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help="only these seed counts")
    ap.add_argument("--no-gains", action="store_true", help="skip the 20-gain section")
    H.cpu_devices(ap, argv, 1, "the study shards its seeds over them; the loop runs on one")
    args = H.finish_args(ap, argv)
    # at T = 500 the dense product of a g = 1 tanh network underflows float32 for most seeds;
    # both sides compute it all the same, the warning would only repeat on every call
    warnings.filterwarnings("ignore", category=rd.NumericalWarning)
    meta = H.machine()
    print(H.header(meta), flush=True)
    if args.quick:
        sizes, seed_counts, T = (16, 32), (4, 16), 60
        gn, gT, gS, G = 16, 60, 8, 5
    else:
        sizes, seed_counts, T = (32, 128, 256), (8, 64, 512), 500
        gn, gT, gS, G = 64, 300, 32, 20
    if args.n:
        sizes = tuple(n for n in sizes if n in args.n)
    if args.seeds:
        seed_counts = tuple(S for S in seed_counts if S in args.seeds)
    rows, out = [], {"machine": meta, "quick": args.quick, "seeds": [], "gains": {}}
    rates = {n: matmul_rate(n, T - 1) for n in sizes}
    out["matmul_gflops"] = rates
    for n in sizes:
        for S in seed_counts:
            cfg = dict(hidden=n, inputs=8, steps=T, gain=1.0, input_scale=1.0, seeds=S,
                       metrics=[args.metric])
            study, loop = _study_thunk(cfg), _loop_thunk(n, T, S, curve=args.metric == "norms")
            compute = _compute_thunk(cfg)
            H.log(f"n = {n}, seeds = {S}: first calls")
            first = {"study": _first(study), "loop": _first(loop), "compute": _first(compute)}
            steady = H.measure({"study": study, "loop": loop, "compute": compute}, args.repeats,
                               args.budget, warmup=False)
            work = S * (T - 1) * n**3
            rec = {"n": n, "seeds": S, "steps": T}
            for k in ("study", "loop", "compute"):
                rec[k] = dict(first_s=first[k], compile_s=max(first[k] - steady[k]["median_s"], 0.0),
                              **steady[k], units_per_s=work / steady[k]["median_s"])
            rec["speedup"] = steady["loop"]["median_s"] / steady["study"]["median_s"]
            rec["speedup_compute"] = steady["loop"]["median_s"] / steady["compute"]["median_s"]
            rec["share_of_matmul"] = 2 * rec["study"]["units_per_s"] / 1e9 / rates[n]
            out["seeds"].append(rec)
            rows.append([n, S, f"{first['study']:.2f}", f"{steady['study']['median_s']:.3f}",
                         f"{first['loop']:.2f}", f"{steady['loop']['median_s']:.3f}",
                         f"{steady['compute']['median_s']:.3f}", f"{rec['speedup']:.2f}",
                         f"{rec['speedup_compute']:.2f}", f"{rec['study']['units_per_s']:.3g}",
                         f"{rec['share_of_matmul']:.2f}"])
    what = "dense ∂h_T/∂h_1 + curve" if args.metric == "norms" else "dense ∂h_T/∂h_1 and its singular values"
    print(f"\n1. one configuration, tanh, T = {T}, {args.metric} ({what}); times in s")
    print(H.table(["n", "seeds", "study first", "study steady", "loop first", "loop steady",
                   "compute steady", "loop/study", "loop/compute", "study S·(T-1)·n³/s",
                   "share of matmul"], rows, left=()))
    print("share of matmul: the study's 2·S·(T-1)·n³ flop/s over the machine's matmul chain at that "
          "n (" + ", ".join(f"n = {n}: {r:.0f} GF/s" for n, r in rates.items()) + ")")
    print("compute: the study's compiled group call alone (no store writes); floors: loop/study "
          "and loop/compute >= 1 everywhere, >= 1.5 at n = 32")

    if args.no_gains:
        path = H.write_json("sweep", out, args.out, quick=args.quick)
        print(f"wrote {path}")
        return
    gains = [0.5 + 2.5 * i / max(G - 1, 1) for i in range(G)]
    base = dict(hidden=gn, inputs=8, steps=gT, input_scale=1.0, seeds=gS, metrics=[args.metric])
    many, one = _study_thunk(dict(base, gain=gains)), _study_thunk(dict(base, gain=[1.0]))
    H.log(f"{G} gains vs 1 gain: first calls")
    first = {"many": _first(many), "one": _first(one)}
    steady = H.measure({"many": many, "one": one}, args.repeats, args.budget, warmup=False)
    for k, g in (("many", G), ("one", 1)):
        out["gains"][k] = dict(configs=g, first_s=first[k], **steady[k],
                               units_per_s=g * gS * (gT - 1) * gn**3 / steady[k]["median_s"])
    ratio = steady["many"]["median_s"] / steady["one"]["median_s"]
    out["gains"]["steady_ratio"] = ratio
    out["gains"]["first_ratio"] = first["many"] / first["one"]
    print(f"\n2. {G} gains vs 1 gain (n = {gn}, T = {gT}, {gS} seeds): first call "
          f"{first['many']:.2f} s vs {first['one']:.2f} s; steady {steady['many']['median_s']:.3f} s "
          f"vs {steady['one']['median_s']:.3f} s ({ratio:.1f}x for {G}x the work); "
          f"{out['gains']['many']['units_per_s']:.3g} vs {out['gains']['one']['units_per_s']:.3g} "
          f"S·(T-1)·n³ per second")
    path = H.write_json("sweep", out, args.out, quick=args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
