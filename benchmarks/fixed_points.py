"""Fixed-point search speed: rd.fixed_points on a GRU, n = 100, 10,000 candidates, 1,000 Adam steps.

Times the whole call (Adam on q(h) = ½‖F(h) − h‖² for every candidate in one scan, 5
Levenberg–Marquardt polishing iterations, de-duplication and eigenvalues on the host): the first
call (compile + run) and the steady time of a second call, and reports candidates·steps per
second of the steady call. ``--phases`` also times the Adam phase and the polishing phase apart
(``rd.minimize_speed`` with one of them switched off). Target: under 60 s steady on a 2-core CPU.

    python benchmarks/fixed_points.py            # the full size (a few minutes on 2 cores)
    python benchmarks/fixed_points.py --quick    # n = 16, 500 candidates, 100 steps
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

import rnn_dynamics as rd  # noqa: E402
from _harness import finish_args, header, log, machine, parser, table, write_json  # noqa: E402


def _timed(f):
    """(result, wall seconds, CPU seconds of this process: all its threads)."""
    t, c = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(f())
    return out, time.perf_counter() - t, time.process_time() - c


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--newton-steps", type=int, default=5)
    ap.add_argument("--phases", action="store_true", help="also time Adam and polishing apart")
    args = finish_args(ap, argv)
    if args.quick:
        args.hidden, args.candidates, args.steps = 16, 500, 100
    meta = machine()
    print(header(meta))
    n, C, S, K = args.hidden, args.candidates, args.steps, args.newton_steps
    cell = rd.cells.gru(8, n)
    params = cell.init(jax.random.key(0))
    x = 0.5 * jax.random.normal(jax.random.key(1), (8,))
    cand = jax.block_until_ready(rd.fixed_point_candidates(cell, params, jax.random.key(2), C, x=x,
                                                           steps=50))
    run = lambda: rd.fixed_points(cell, params, x, cand, steps=S, newton_steps=K)
    log(f"GRU n={n}, {C} candidates, {S} Adam steps + {K} polishing steps: first call")
    fps, first, first_cpu = _timed(run)
    log("second call (steady)")
    fps, steady, steady_cpu = _timed(run)
    rate = C * S / steady
    results = dict(
        machine=meta, config=dict(cell="gru", hidden=n, inputs=8, candidates=C, adam_steps=S,
                                  newton_steps=K, dtype=str(cand.dtype)),
        first_call_s=first, steady_s=steady, compile_s_estimate=first - steady,
        first_call_cpu_s=first_cpu, steady_cpu_s=steady_cpu,
        compile_cpu_s_estimate=first_cpu - steady_cpu,
        candidate_steps_per_s=rate, summary=fps.summary,
        kinds={k: int((fps.kind == k).sum()) for k in ("stable", "saddle", "unstable")},
    )
    rows = [["fixed_points (all)", f"{first:.3g}", f"{steady:.3g}", f"{steady_cpu:.3g}", f"{rate:.3g}"]]
    if args.phases:
        for name, s, k in (("Adam only", S, 0), ("polishing only", 0, K)):
            f = lambda s=s, k=k: rd.minimize_speed(cell, params, x, cand, steps=s, newton_steps=k)
            log(f"{name}: first call")
            _, t1, _ = _timed(f)
            _, t2, c2 = _timed(f)
            r = C * S / t2 if s else float("nan")
            rows.append([name, f"{t1:.3g}", f"{t2:.3g}", f"{c2:.3g}", f"{r:.3g}" if s else "-"])
            results[name.replace(" ", "_") + "_s"] = dict(first_call_s=t1, steady_s=t2, steady_cpu_s=c2)
    print(table(["phase", "first call s", "steady s", "steady CPU s", "candidate·steps/s"], rows))
    print("(CPU s: this process's CPU time over all its threads; on a loaded machine it is a "
          "steadier measure of the work than the wall time)")
    print(f"summary: {fps.summary}; kinds: {results['kinds']}")
    print(f"compile (first call - steady): {first - steady:.3g} s wall, "
          f"{first_cpu - steady_cpu:.3g} s CPU")
    print(f"target: steady under 60 s -> {'met' if steady < 60 else 'NOT met'} ({steady:.1f} s wall, "
          f"{steady_cpu:.1f} s CPU, load average {meta['load_avg']})")
    path = write_json("fixed_points", results, args.out, quick=args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
