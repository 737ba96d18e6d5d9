#!/usr/bin/env python
"""Benchmark: Lyapunov spectra by QR, matrix-free top singular values, against plain numpy.

Sections (one run, same machine and load for every ratio):

``spectrum``  full spectrum of a tanh network (n = 64, T = 100,000, one seed, no input, g = 1.5):
              compile and steady time; peak RSS at T = 1e4 and 1e5 in fresh subprocesses
              (``resource.getrusage``), which should agree within 10 % (memory flat in T).
``top``       the 8 largest singular values of ∂h_T/∂h_1 for a tanh network n = 4096,
              T = 1000 (g = 1.5, no input), matrix-free; wall time and peak RSS (subprocess).
``qr_share``  seconds per step of the full spectrum (k = n) for n = 32 … 1024, and the same
              scan with the QR removed (push only): the QR's share of the step.
``reorth``    reorth_every = 1, 2, 5, 10 at n = 128 (full spectrum, T = 5000): speed-up and
              the largest change of any exponent.
``numpy``     Engelken's plain-numpy QR algorithm (written here: a Python loop of
              tanh, D·W·Q, np.linalg.qr) on the same network and horizon, n = 256, the full
              spectrum (k = n) and the 32 leading exponents: our speed-up (floor 5x), and one
              QR alone in each library (the full spectrum is QR-bound in both: numpy's time
              over the time of our QRs alone is the most any implementation built on
              LAPACK's QR could gain).

Usage::

    python benchmarks/lyapunov.py            # everything (several minutes on a 2-core CPU)
    python benchmarks/lyapunov.py --quick    # tiny sizes, a smoke run
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # spinning LAPACK threads: see _harness

import json
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import rnn_dynamics as rd  # noqa: E402

SECTIONS = ("spectrum", "top", "qr_share", "reorth", "numpy")


def tanh_net(n, g=1.5, seed=0):
    cell = rd.cells.vanilla(1, n, "tanh", gain=g, bias=False)
    p = cell.init(jax.random.key(seed))
    h1 = jax.random.normal(jax.random.key(1000 + seed), (n,))
    return cell, p, h1


def timed(f):
    t = time.perf_counter()
    out = jax.block_until_ready(f())
    return out, time.perf_counter() - t


_CHILD = r"""
import os, sys, json, time, resource
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import jax, jax.numpy as jnp, rnn_dynamics as rd
what, n, T = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cell = rd.cells.vanilla(1, n, "tanh", gain=1.5, bias=False)
p = cell.init(jax.random.key(0)); h1 = jax.random.normal(jax.random.key(1000), (n,))
t = time.perf_counter()
if what == "spectrum":
    out = rd.lyapunov_spectrum(cell, p, h1, steps=T).exponents
    res = dict(first=float(out[0]), last=float(out[-1]))
else:
    top = rd.top_singular_values(cell, p, h1, steps=T, k=8)
    res = dict(log_values=[float(v) for v in top.log_values], iterations=int(top.iterations))
jax.block_until_ready(out if what == "spectrum" else top.log_values)
res["wall_s"] = time.perf_counter() - t
res["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(res))
"""


def child(what, n, T):
    out = subprocess.run([sys.executable, "-c", _CHILD, what, str(n), str(T)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def section_spectrum(args, R):
    n, T = (16, 2000) if args.quick else (64, 100_000)
    cell, p, h1 = tanh_net(n)
    f = lambda: rd.lyapunov_spectrum(cell, p, h1, steps=T).exponents
    e, first = timed(f)
    _, steady = timed(f)
    H.log(f"spectrum n={n} T={T}: first call {first:.1f} s, steady {steady:.1f} s")
    mem = {t: child("spectrum", n, t) for t in ((T // 10, T) if not args.quick else (200, 2000))}
    (t1, m1), (t2, m2) = [(t, m["max_rss_mib"]) for t, m in mem.items()]
    R["spectrum"] = dict(n=n, T=T, first_call_s=first, steady_s=steady, compile_s=first - steady,
                         lambda_max=float(e[0]), lambda_min=float(e[-1]),
                         kaplan_yorke=float(rd.kaplan_yorke_dimension(e)),
                         rss_mib={str(t1): m1, str(t2): m2}, rss_ratio=m2 / m1,
                         target_s=60, pass_time=steady < 60, pass_flat=abs(m2 / m1 - 1) < 0.10)
    print(H.table(["n", "T", "first call s", "steady s", "λ_max", f"RSS MiB T={t1}", f"RSS MiB T={t2}"],
                  [[n, T, f"{first:.1f}", f"{steady:.1f}", f"{float(e[0]):.4f}", f"{m1:.0f}", f"{m2:.0f}"]]))


def section_top(args, R):
    n, T = (256, 100) if args.quick else (args.top_n, 1000)
    m = child("top", n, T)
    H.log(f"top-8 n={n} T={T}: {m['wall_s']:.1f} s, {m['max_rss_mib']:.0f} MiB, {m['iterations']} iterations")
    R["top"] = dict(n=n, T=T, k=8, **m, target_s=120, target_mib=2048,
                    pass_time=m["wall_s"] < 120, pass_memory=m["max_rss_mib"] < 2048)
    print(H.table(["n", "T", "k", "wall s (incl. compile)", "peak RSS MiB", "iterations", "log σ_1", "log σ_8"],
                  [[n, T, 8, f"{m['wall_s']:.1f}", f"{m['max_rss_mib']:.0f}", m["iterations"],
                    f"{m['log_values'][0]:.2f}", f"{m['log_values'][-1]:.2f}"]]))


def _push_only(cell, p, h1, T):
    """The same scan as lyapunov_spectrum without the QR (frame renormalised by its norm)."""
    from rnn_dynamics._tangent import normalize, push

    n = h1.shape[0]

    @jax.jit
    def f(p, h1):
        def body(c, _):
            h, Q = push(cell, p, c[0], jnp.zeros((1,)), c[1])
            return (h, normalize(Q)[0]), None

        return jax.lax.scan(body, (h1, jnp.eye(n)), None, length=T)[0][1]

    return lambda: f(p, h1)


def section_qr_share(args, R):
    sizes = (32, 64) if args.quick else (32, 64, 128, 256, 512, 1024)
    rows, out = [], []
    for n in sizes:
        T = max(20, int(2e9 / (6 * n**3)))  # about 2 s of work per call
        cell, p, h1 = tanh_net(n)
        full = lambda: rd.lyapunov_spectrum(cell, p, h1, steps=T + 1).exponents
        push_only = _push_only(cell, p, h1, T)
        meas = H.measure({"full": H.blocked(full), "push": H.blocked(push_only)},
                         repeats=args.repeats, budget_s=args.budget)
        tf, tp = meas["full"]["median_s"] / T, meas["push"]["median_s"] / T
        share = max(0.0, 1 - tp / tf)
        out.append(dict(n=n, T=T, s_per_step=tf, push_s_per_step=tp, qr_share=share))
        rows.append([n, T, f"{1e3 * tf:.3f}", f"{1e3 * tp:.3f}", f"{100 * share:.0f}%"])
        H.log(f"qr_share n={n}: {1e3 * tf:.3f} ms/step, QR share {100 * share:.0f}%")
    R["qr_share"] = out
    print(H.table(["n", "T", "ms/step (full spectrum)", "ms/step (push only)", "QR share"], rows))


def section_reorth(args, R):
    n, T = (32, 1000) if args.quick else (128, 5000)
    cell, p, h1 = tanh_net(n)
    res, rows = {}, []
    for r in (1, 2, 5, 10):
        f = lambda: rd.lyapunov_spectrum(cell, p, h1, steps=T, reorth_every=r).exponents
        e = jax.block_until_ready(f())
        m = H.measure({"f": H.blocked(f)}, repeats=args.repeats, budget_s=args.budget)["f"]["median_s"]
        res[r] = (np.asarray(e, np.float64), m)
    base_e, base_t = res[1]
    out = []
    for r, (e, t) in res.items():
        ok = np.isfinite(base_e) & (base_e > -10)  # below ~-10 float32 QR resolves nothing
        d = float(np.max(np.abs(e - base_e)[ok]))
        out.append(dict(reorth_every=r, seconds=t, speedup=base_t / t, max_abs_change=d,
                        max_abs_change_lambda1=float(abs(e[0] - base_e[0]))))
        rows.append([r, f"{t:.2f}", f"{base_t / t:.2f}x", f"{d:.2e}", f"{abs(e[0] - base_e[0]):.2e}"])
    R["reorth"] = dict(n=n, T=T, rows=out)
    print(H.table(["reorth_every", "s", "speed-up", "max |Δλ_i| (λ_i > -10)", "|Δλ_1|"], rows))


def engelken_numpy(W, h, T, k=None):
    """Engelken's plain algorithm (nLE = k leading exponents, orthonormalised every step):
    h ← tanh(W h); Q ← diag(1 − h²)·W·Q; Q, R = qr(Q) (reduced); sum log |diag R|."""
    n = W.shape[0]
    k = n if k is None else k
    Q = np.linalg.qr(np.random.default_rng(0).standard_normal((n, k)))[0]
    ls = np.zeros(k)
    for _ in range(T):
        h = np.tanh(W @ h)
        Q = (1 - h * h)[:, None] * (W @ Q)
        Q, Rm = np.linalg.qr(Q)
        ls += np.log(np.abs(np.diag(Rm)))
    return ls / T


def qr_alone(n, k, reps=200):
    """Seconds per reduced QR of an (n, k) float32 matrix: jnp.linalg.qr (jaxlib's LAPACK, in a
    compiled loop) and np.linalg.qr (numpy's) — the floor under both implementations' step."""
    Y = np.random.default_rng(1).standard_normal((n, k)).astype(np.float32)
    loop = jax.jit(lambda Y: jax.lax.fori_loop(0, reps, lambda i, Y: jnp.linalg.qr(Y)[0] + 1e-3 * Y, Y))
    Yj = jnp.asarray(Y)
    jax.block_until_ready(loop(Yj))
    t = time.perf_counter()
    jax.block_until_ready(loop(Yj))
    t_jax = (time.perf_counter() - t) / reps
    t = time.perf_counter()
    for _ in range(reps):
        np.linalg.qr(Y)
    return t_jax, (time.perf_counter() - t) / reps


def section_numpy(args, R):
    n, T = (64, 300) if args.quick else (256, 2000)
    cell, p, h1 = tanh_net(n)
    W, h = np.asarray(p["W"]), np.asarray(h1)
    rows = []
    for k in (n, 32 if not args.quick else 8):
        f = lambda: rd.lyapunov_spectrum(cell, p, h1, k=k, steps=T + 1).exponents
        e, first = timed(f)
        ours = H.measure({"f": H.blocked(f)}, repeats=3, budget_s=args.budget)["f"]["median_s"]
        t = time.perf_counter()
        e_np = engelken_numpy(W, h, T, k)
        t_np = time.perf_counter() - t
        q_jax, q_np = qr_alone(n, k)
        rows.append(dict(n=n, k=k, T=T, ours_s=ours, ours_first_call_s=first, numpy_s=t_np,
                         speedup=t_np / ours, floor=5.0, pass_=t_np / ours >= 5.0,
                         qr_jax_ms=q_jax * 1e3, qr_numpy_ms=q_np * 1e3,
                         ceiling=t_np / (T * q_jax),  # numpy's time over our QRs alone
                         lambda_max_ours=float(e[0]), lambda_max_numpy=float(e_np[0]),
                         max_abs_diff=float(np.max(np.abs(e_np - np.asarray(e, np.float64))))))
    R["numpy"] = rows
    print(H.table(["n", "k", "T", "ours s", "numpy s", "speed-up", "QR ms (jax / numpy)",
                   "ceiling (numpy s / our QRs)", "max |Δλ|"],
                  [[r["n"], r["k"], r["T"], f"{r['ours_s']:.2f}", f"{r['numpy_s']:.2f}",
                    f"{r['speedup']:.2f}x", f"{r['qr_jax_ms']:.3f} / {r['qr_numpy_ms']:.3f}",
                    f"{r['ceiling']:.2f}x", f"{r['max_abs_diff']:.1e}"] for r in rows]))


def main(argv=None):
    ap = H.parser(__doc__)
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    ap.add_argument("--top-n", type=int, default=4096, help="n of the top section (default 4096)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other sections of an existing results file (runs of --only)")
    args = H.finish_args(ap, argv)
    meta = H.machine()
    print(H.header(meta))
    R = {"machine": meta, "quick": args.quick}
    path = args.out or os.path.join(H.RESULTS_DIR, f"lyapunov-{H.device_slug()}{'-quick' if args.quick else ''}.json")
    if args.merge and os.path.exists(path):
        with open(path) as fh:
            old = json.load(fh)
        R = {**old, "machine_" + "_".join(args.only.split(",")): meta}
    for name in args.only.split(","):
        if name not in SECTIONS:
            ap.error(f"--only: unknown section {name!r}; choose from {SECTIONS}")
        print(f"\n== {name} ==")
        globals()[f"section_{name}"](args, R)
        R["machine_after"] = H.machine()["load_avg"]
        path = H.write_json("lyapunov", R, path)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
