#!/usr/bin/env python
"""Benchmark: the dense Jacobian ∂h_T/∂h_1 and its spectral norm, against a matmul chain.

What it measures (all in one run, so every ratio compares numbers taken on the same machine
under the same load):

``jacobian``
    For (n, T, seeds) in (32, 100, 32), (128, 1000, 8), (256, 1000, 4): a tanh vanilla cell
    (``rd.cells.vanilla(1, n, "tanh", gain=1.0)``), per-seed params/h_1/xs from ``rd.draw_seed``
    (vmapped), and ``jax.jit(jax.vmap(lambda p, h, x: rd.spectral_norm(rd.jacobian(cell, p, h,
    x, method=m))))`` for every ``m`` in ``rd.METHODS``. Compile time (``lower`` + ``compile``)
    is reported apart from the steady time (median of repeats, ``jax.block_until_ready``).
    Next to them, in the same rounds, a chain of T-1 batched (seeds, n, n) matmuls
    ``carry = A_t @ carry`` (a jitted ``lax.scan``; also ``carry @ A_t``; then, in a group of
    their own, ``np.matmul`` in a loop and ``torch.bmm`` in a loop when torch is importable).
    The best of these is the reference rate; each method's "share" is its rate at the ideal
    cost 2·(T-1)·n³ flops per seed divided by that reference. On CPU, rows tagged
    ``[no ynn]`` repeat jacfwd and the jax chain compiled without XLA's YNNPACK dot fusions
    (the compile path the library itself takes on CPU for n > 64 outside a user's jit, in
    ``rd.spectra`` and top-level ``rd.jacobian``/``rd.jacobian_norms``; rnn_dynamics/_compile.py).
``torch``
    ``torch.func.jacfwd`` of the same RNN (same weights, float32), ``torch.func.vmap``-ed over
    seeds, plus ``torch.linalg.matrix_norm(J, 2)``; our speedup over it (CPU only). Timed with
    torch's default thread count and with 1 thread; the faster is torch's time.
``compile``
    Compile time of the default method at T = 100 and T = 10,000 (n = 32, 4 seeds); a scan
    should make it flat in T.
``spectra``
    Seeds per second of ``rd.spectra(..., curve=False, method="jacfwd")`` at batch_size
    1, 2, 4, ..., seeds and the default (``rd.default_batch_size``), and of a plain Python loop
    of a jitted one-seed call, at n = 32 and n = 128 (T = 500, 64 seeds).

Floors from the issue are printed as PASS/FAIL; nothing is asserted. The machine may be shared:
treat single numbers as approximate and compare ratios taken in the same run. On CPU the
OpenBLAS behind jaxlib's LAPACK (the SVD of the spectral norm) is set to one thread
(``--lapack-threads``), see ``limit_lapack_threads`` and benchmarks/README.md.

Usage::

    python benchmarks/jacobian.py                 # full run (a few minutes on a 2-core CPU)
    python benchmarks/jacobian.py --quick         # tiny sizes, a smoke test (~30 s)
    python benchmarks/jacobian.py --only jacobian,compile --repeats 7 --out /tmp/r.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time
import warnings

import numpy as np

import jax
import jax.numpy as jnp

import rnn_dynamics as rd

warnings.simplefilter("ignore", rd.NumericalWarning)

try:  # torch is never a dependency: only a comparison when it is importable.
    import torch
except Exception:  # pragma: no cover - depends on the machine
    torch = None

SECTIONS = ("jacobian", "torch", "compile", "spectra")
INPUT_SCALE = 0.01  # small inputs keep tanh near its linear regime: ∂h_T/∂h_1 stays finite
MIN_REPEATS = 3

# Floors from the issue: share of the same-run matmul rate for the default method, by n.
SHARE_FLOORS = {32: 0.40, 128: 0.60, 256: 0.80}
TORCH_FLOOR = 2.5
COMPILE_FLOOR = 1.5


# --------------------------------------------------------------------------------------------
# LAPACK threads


def limit_lapack_threads(n_threads):
    """Set the thread count of the OpenBLAS behind jaxlib's CPU LAPACK kernels; returns the libs.

    On CPU, ``jnp.linalg.svd`` (so ``rd.spectral_norm``) is a custom call into LAPACK, which
    jaxlib takes from SciPy's bundled OpenBLAS; XLA's own matmuls do not use it. OpenBLAS's
    worker threads spin-wait, and as soon as the cores are oversubscribed (anything else running
    on a 2-core machine) a 128×128 SVD goes from ~1 ms to ~600 ms, erratically, drowning the
    Jacobian being measured. One thread costs ~1 ms per SVD at these sizes. numpy's own OpenBLAS
    (used by the numpy matmul chain) is left alone. Linux only; elsewhere nothing is changed.
    """
    if n_threads <= 0 or jax.devices()[0].platform != "cpu":
        return []
    import ctypes

    jax.block_until_ready(jnp.linalg.svd(jnp.ones((2, 2))))  # loads jaxlib's LAPACK provider
    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({ln.split()[-1] for ln in fh if "openblas" in ln.lower()})
    except OSError:
        return []
    done = []
    for path in paths:
        if "numpy" in path or not os.path.exists(path):
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
                    "openblas_set_num_threads", "openblas_set_num_threads64_"):
            if hasattr(lib, sym):
                getattr(lib, sym)(ctypes.c_int(n_threads))
                done.append(path)
                break
    return done


# --------------------------------------------------------------------------------------------
# timing helpers


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def blocked(f, *args):
    """A thunk running f(*args) to completion."""
    return lambda: jax.block_until_ready(f(*args))


def first_call(thunk):
    t = time.perf_counter()
    thunk()
    return time.perf_counter() - t


def round_robin(thunks, repeats, budget_s):
    """Median seconds per thunk: `repeats` rounds, each thunk once per round (interleaved, so a
    change in machine load hits all of them alike). Stops early after MIN_REPEATS rounds once
    `budget_s` is spent. Thunks must already be warm (compiled)."""
    times = {k: [] for k in thunks}
    t0 = time.perf_counter()
    for r in range(max(repeats, 1)):
        for k, f in thunks.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
        if r + 1 >= min(MIN_REPEATS, repeats) and time.perf_counter() - t0 > budget_s:
            break
    return {k: float(np.median(v)) for k, v in times.items()}, {k: len(v) for k, v in times.items()}


def compile_jit(f, *args, options=None):
    """(compiled, lower seconds, compile seconds) for jax.jit(f) at these arguments."""
    t = time.perf_counter()
    lowered = jax.jit(f).lower(*args)
    t_lower = time.perf_counter() - t
    t = time.perf_counter()
    compiled = lowered.compile(compiler_options=options) if options else lowered.compile()
    return compiled, t_lower, time.perf_counter() - t


# XLA:CPU hands dots to YNNPACK by default. For batched n×n matmuls of n ≈ 96..256 on CPU
# those run on one core, while XLA's own dot emitter uses them all (see README.md); this compile
# option turns the YNNPACK dot fusions off for one compilation. The "[no ynn]" rows measure it.
NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}
NO_YNN_TAG = " [no ynn]"


def no_ynn_supported():
    """True on CPU when this jaxlib accepts the option (it is experimental and may go away)."""
    if jax.devices()[0].platform != "cpu":
        return False
    try:
        jax.jit(lambda x: x @ x).lower(jnp.ones((2, 2))).compile(compiler_options=NO_YNN)
        return True
    except Exception:
        return False


def gflops(flops, seconds):
    return flops / seconds / 1e9 if seconds > 0 else float("nan")


# --------------------------------------------------------------------------------------------
# problem set-up


def make_problem(n, T, seeds, key=0):
    cell = rd.cells.vanilla(1, n, "tanh", gain=1.0)
    keys = jax.random.split(jax.random.key(key), seeds)
    params, h1, xs = jax.vmap(lambda k: rd.draw_seed(cell, k, T, input_scale=INPUT_SCALE))(keys)
    return cell, jax.block_until_ready((params, h1, xs))


def norm_fn(cell, method):
    return jax.vmap(lambda p, h, x: rd.spectral_norm(rd.jacobian(cell, p, h, x, method=method)))


def ideal_flops(n, T, seeds):
    return seeds * 2 * (T - 1) * n**3


# --------------------------------------------------------------------------------------------
# matmul chains (the reference rate)


def chain_thunks(n, T, seeds, on_cpu, no_ynn=False):
    """Thunks computing the chain carry <- A_t carry over T-1 batched (seeds, n, n) matrices:
    (jax thunks, host-library thunks, jax compile seconds). Host libraries (numpy, torch) keep
    their own thread pools, whose idle threads spin for a while after each call; they are timed
    in a group of their own so that they never steal the cores from the next JAX call."""
    rng = np.random.default_rng(1)
    A_np = rng.standard_normal((T - 1, seeds, n, n), dtype=np.float32)
    A_np *= np.float32(1 / np.sqrt(n))  # in place: at n = 256 this is 1 GB
    A = jax.device_put(A_np)
    eye = jnp.broadcast_to(jnp.eye(n, dtype=A.dtype), (seeds, n, n))

    def left(A, eye):
        return jax.lax.scan(lambda c, a: (a @ c, None), eye, A)[0]

    def right(A, eye):  # the same cost, multiplying on the other side: carry <- carry A_t
        return jax.lax.scan(lambda c, a: (c @ a, None), eye, A)[0]

    thunks, host, compile_s = {}, {}, {}
    variants = [("jax scan A_t@c", left, None), ("jax scan c@A_t", right, None)]
    if no_ynn:
        variants += [("jax scan A_t@c" + NO_YNN_TAG, left, NO_YNN)]
    for name, f, options in variants:
        compiled, tl, tc = compile_jit(f, A, eye, options=options)
        compile_s[name] = tl + tc
        thunks[name] = blocked(compiled, A, eye)

    if on_cpu:  # numpy and torch run on the host: only a fair reference when JAX does too
        def np_chain():
            c = np.broadcast_to(np.eye(n, dtype=np.float32), (seeds, n, n)).copy()
            buf = np.empty_like(c)
            for a in A_np:
                np.matmul(a, c, out=buf)
                c, buf = buf, c
            return c

        host["numpy matmul loop"] = np_chain
        if torch is not None:
            A_t = torch.from_numpy(A_np)  # shares the memory

            def torch_chain():
                with torch.inference_mode():
                    c = torch.eye(n).expand(seeds, n, n).contiguous()
                    for a in A_t:
                        c = torch.bmm(a, c)
                return c

            host["torch.bmm loop"] = torch_chain
    for f in (*thunks.values(), *host.values()):  # warm-up (first touch, thread pools)
        f()
    return thunks, host, compile_s


# --------------------------------------------------------------------------------------------
# sections


def run_jacobian(sizes, args, results):
    on_cpu = jax.devices()[0].platform == "cpu"
    no_ynn = on_cpu and args.no_ynn_rows and no_ynn_supported()
    # every method as the public API gives it, plus the default method compiled without YNNPACK
    variants = [(m, m, None) for m in rd.METHODS]
    if no_ynn:
        variants.append(("jacfwd" + NO_YNN_TAG, "jacfwd", NO_YNN))
    rows, chains = [], []
    for n, T, seeds in sizes:
        log(f"jacobian: n={n} T={T} seeds={seeds}: compiling")
        cell, (p, h1, xs) = make_problem(n, T, seeds)
        flops = ideal_flops(n, T, seeds)
        c_thunks, host_thunks, c_compile = chain_thunks(n, T, seeds, on_cpu, no_ynn)
        m_thunks, m_info = {}, {}
        for m, method, options in variants:
            compiled, tl, tc = compile_jit(norm_fn(cell, method), p, h1, xs, options=options)
            thunk = blocked(compiled, p, h1, xs)
            t_first = first_call(thunk)
            out = np.asarray(compiled(p, h1, xs))
            m_thunks[m] = thunk
            m_info[m] = dict(lower_s=tl, compile_s=tc, first_run_s=t_first,
                             finite=bool(np.all(np.isfinite(out)) and np.all(out > 0)),
                             norm_median=float(np.median(out)))
        log(f"jacobian: n={n} T={T} seeds={seeds}: timing")
        med, count = round_robin({**c_thunks, **m_thunks}, args.repeats, args.budget)
        if host_thunks:
            m2, c2 = round_robin(host_thunks, args.repeats, args.budget / 2)
            med.update(m2), count.update(c2)
            c_thunks = {**c_thunks, **host_thunks}
            time.sleep(0.5)  # let the host libraries' spinning threads go idle
        best_name = min(c_thunks, key=lambda k: med[k])
        best_rate = gflops(flops, med[best_name])
        chain_row = dict(n=n, T=T, seeds=seeds, flops=flops, best=best_name, best_gflops=best_rate,
                         impls={k: dict(steady_s=med[k], gflops=gflops(flops, med[k]),
                                        repeats=count[k], compile_s=c_compile.get(k))
                                for k in c_thunks})
        chains.append(chain_row)
        for m, _, _ in variants:
            rate = gflops(flops, med[m])
            rows.append(dict(n=n, T=T, seeds=seeds, method=m, steady_s=med[m], repeats=count[m],
                             gflops=rate, share=rate / best_rate, **m_info[m]))
        log(f"jacobian: n={n}: best chain {best_rate:.1f} GF/s ({best_name}); "
            + ", ".join(f"{r['method']} {r['share']:.2f}" for r in rows[-len(variants):]))
    results["matmul_chain"] = chains
    results["jacobian"] = rows


def torch_norms_fn(T):
    def one(W, U, b, h1, xs):
        drive = xs @ U.T + b  # (T-1, n): the input part of every step, hoisted out of the loop

        def final(h):
            for t in range(T - 1):
                h = torch.tanh(W @ h + drive[t])
            return h

        J = torch.func.jacfwd(final)(h1)
        return torch.linalg.matrix_norm(J, ord=2)

    vmapped = torch.func.vmap(one)

    def run(*a):
        with torch.inference_mode():
            try:
                return vmapped(*a)
            except Exception:  # fall back to a loop over seeds if vmap cannot handle it
                return torch.stack([one(*(x[i] for x in a)) for i in range(a[0].shape[0])])

    return run


def run_torch(sizes, args, results):
    if torch is None:
        log("torch: not importable, skipped")
        results["torch"] = None
        return
    if jax.devices()[0].platform != "cpu":
        log("torch: comparison runs on CPU only, skipped on this device")
        results["torch"] = None
        return
    rows = []
    default_threads = torch.get_num_threads()
    thread_options = sorted({default_threads, 1}, reverse=True)
    for n, T, seeds in sizes:
        log(f"torch: n={n} T={T} seeds={seeds}")
        cell, (p, h1, xs) = make_problem(n, T, seeds)
        tens = [torch.from_numpy(np.array(a, dtype=np.float32))
                for a in (p["W"], p["U"], p["b"], h1, xs)]
        run = torch_norms_fn(T)
        ours = jax.jit(norm_fn(cell, "jacfwd"))
        ours_thunk = blocked(ours, p, h1, xs)
        ours_out = np.asarray(ours(p, h1, xs))
        ours_no_ynn = None
        if args.no_ynn_rows and no_ynn_supported():
            ours_no_ynn = blocked(compile_jit(norm_fn(cell, "jacfwd"), p, h1, xs, options=NO_YNN)[0],
                                  p, h1, xs)
            ours_no_ynn()
        torch_times, first, ours_times, no_ynn_times = {}, {}, [], []
        ours_thunk()
        for th in thread_options:
            torch.set_num_threads(th)
            t = time.perf_counter()
            out = run(*tens).numpy()
            first[th] = time.perf_counter() - t
            # torch costs seconds per call at the larger sizes: fewer repeats, same budget
            reps = max(2, min(args.repeats, int(args.budget / max(first[th], 1e-3))))
            torch_times[th] = round_robin({"torch": lambda: run(*tens)}, reps, args.budget)[0]["torch"]
            time.sleep(0.5)  # torch's OpenMP threads spin after a call: let them go idle
            ours_times.append(round_robin({"ours": ours_thunk}, args.repeats, args.budget)[0]["ours"])
            if ours_no_ynn is not None:
                no_ynn_times.append(round_robin({"o": ours_no_ynn}, args.repeats, args.budget)[0]["o"])
        torch.set_num_threads(default_threads)
        ours_s = float(np.median(ours_times))
        no_ynn_s = float(np.median(no_ynn_times)) if no_ynn_times else None
        best_th = min(torch_times, key=torch_times.get)
        rel = np.abs(out - ours_out) / np.maximum(np.abs(ours_out), 1e-30)
        rows.append(dict(n=n, T=T, seeds=seeds, torch_version=torch.__version__,
                         torch_s_by_threads={str(k): v for k, v in torch_times.items()},
                         torch_first_call_s={str(k): v for k, v in first.items()},
                         torch_s=torch_times[best_th], torch_threads=best_th, ours_s=ours_s,
                         speedup=torch_times[best_th] / ours_s, ours_no_ynn_s=no_ynn_s,
                         speedup_no_ynn=torch_times[best_th] / no_ynn_s if no_ynn_s else None,
                         max_rel_diff_norm=float(np.max(rel))))
        log(f"torch: n={n}: torch {torch_times[best_th]:.3f}s ({best_th} threads), "
            f"ours {ours_s:.3f}s, speedup {rows[-1]['speedup']:.1f}x")
    results["torch"] = rows


def run_compile(Ts, n, seeds, args, results):
    rows = []
    for T in Ts:
        log(f"compile: default method, n={n} T={T} seeds={seeds}")
        cell, (p, h1, xs) = make_problem(n, T, seeds)
        lows, comps, totals = [], [], []
        for _ in range(3):  # a fresh jit each time, so nothing comes from the executable cache
            _, tl, tc = compile_jit(lambda p, h, x: norm_fn(cell, "jacfwd")(p, h, x), p, h1, xs)
            lows.append(tl), comps.append(tc), totals.append(tl + tc)
        rows.append(dict(n=n, T=T, seeds=seeds, method="jacfwd", lower_s=float(np.median(lows)),
                         compile_s=float(np.median(comps)), total_s=float(np.median(totals)),
                         cold_total_s=totals[0]))
    results["compile"] = rows


def run_spectra(sizes, batch_sizes, args, results):
    rows = []
    for n, T, seeds in sizes:
        cell = rd.cells.vanilla(1, n, "tanh", gain=1.0)
        key = jax.random.key(0)
        default = rd.default_batch_size(n, seeds)
        bs = sorted({b for b in batch_sizes if b <= seeds} | {seeds, default})
        log(f"spectra: n={n} T={T} seeds={seeds}: batch sizes {bs} (default {default}) + loop")

        def spectra_thunk(b):
            return lambda: jax.block_until_ready(
                rd.spectra(cell, key, seeds, T, input_scale=INPUT_SCALE, method="jacfwd",
                           batch_size=b, curve=False).singular_values)

        one = jax.jit(lambda k: rd.singular_values(
            rd.jacobian(cell, *rd.draw_seed(cell, k, T, input_scale=INPUT_SCALE))))
        key_list = list(jax.random.split(key, seeds))

        def loop():
            return jax.block_until_ready([one(k) for k in key_list])

        thunks = {"loop": loop, **{f"b={b}": spectra_thunk(b) for b in bs}}
        firsts = {k: first_call(f) for k, f in thunks.items()}
        med, count = round_robin(thunks, args.repeats, args.budget)
        loop_rate = seeds / med["loop"]
        entries = []
        for k in thunks:
            b = None if k == "loop" else int(k[2:])
            entries.append(dict(config=k, batch_size=b, is_default=b == default,
                                steady_s=med[k], seeds_per_s=seeds / med[k],
                                vs_loop=(seeds / med[k]) / loop_rate, first_call_s=firsts[k],
                                repeats=count[k]))
        best = max((e for e in entries if e["batch_size"]), key=lambda e: e["seeds_per_s"])
        rows.append(dict(n=n, T=T, seeds=seeds, default_batch_size=default,
                         best_batch_size=best["batch_size"], entries=entries))
        log(f"spectra: n={n}: loop {loop_rate:.1f} seeds/s; best b={best['batch_size']} "
            f"{best['seeds_per_s']:.1f} seeds/s; default b={default} "
            f"{seeds / med[f'b={default}']:.1f} seeds/s")
    results["spectra"] = rows


# --------------------------------------------------------------------------------------------
# report


def floors(results, full):
    """(what, value, floor, pass) for every floor of the issue that this run measured."""
    out = []
    for r in results.get("jacobian") or []:
        if r["method"].startswith("jacfwd") and r["n"] in SHARE_FLOORS:
            f = SHARE_FLOORS[r["n"]]
            out.append((f"{r['method']} share of matmul rate, n={r['n']}", r["share"], f,
                        r["share"] >= f))
    for r in results.get("torch") or []:
        out.append((f"speedup over torch.func.jacfwd, n={r['n']}", r["speedup"], TORCH_FLOOR,
                    r["speedup"] >= TORCH_FLOOR))
        if r.get("speedup_no_ynn"):
            out.append((f"speedup{NO_YNN_TAG} over torch.func.jacfwd, n={r['n']}",
                        r["speedup_no_ynn"], TORCH_FLOOR, r["speedup_no_ynn"] >= TORCH_FLOOR))
    comp = results.get("compile") or []
    if len(comp) >= 2:
        ratio = comp[-1]["total_s"] / comp[0]["total_s"]
        out.append((f"compile T={comp[-1]['T']} / T={comp[0]['T']}", ratio, COMPILE_FLOOR,
                    ratio <= COMPILE_FLOOR))
    for r in results.get("spectra") or []:
        d = next(e for e in r["entries"] if e["is_default"])
        out.append((f"spectra default (b={d['batch_size']}) vs loop, n={r['n']}", d["vs_loop"], 1.0,
                    d["vs_loop"] >= 1.0))
    if not full:
        out = [(w + " [quick sizes: not the issue's]", v, f, ok) for w, v, f, ok in out]
    return out


def table(header, rows, left=()):
    """Plain-text table; columns in `left` are left-aligned, the rest right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i in left else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


def report(results, full):
    meta = results["meta"]
    out = [f"rnn_dynamics Jacobian benchmark — {meta['platform']} / {meta['device_kind']}, "
           f"jax {meta['jax_version']}, {meta['cpu_count']} CPUs, torch {meta['torch_version']}"]
    if results.get("matmul_chain"):
        names = sorted({k for r in results["matmul_chain"] for k in r["impls"]})
        rows = [[r["n"], r["T"], r["seeds"]]
                + [f"{r['impls'][k]['gflops']:.1f}" if k in r["impls"] else "-" for k in names]
                + [f"{r['best_gflops']:.1f}"] for r in results["matmul_chain"]]
        out += ["", "Matmul chain, GF/s at 2·(T-1)·n³ flop per seed (reference = best):",
                table(["n", "T", "seeds"] + names + ["best"], rows)]
    if results.get("jacobian"):
        rows = [[r["n"], r["T"], r["seeds"], r["method"], f"{r['lower_s'] + r['compile_s']:.2f}",
                 f"{r['steady_s'] * 1e3:.1f}", f"{r['gflops']:.1f}", f"{r['share']:.2f}",
                 "yes" if r["finite"] else "NO"] for r in results["jacobian"]]
        out += ["", "∂h_T/∂h_1 + spectral norm, jit(vmap over seeds) (steady = median):",
                table(["n", "T", "seeds", "method", "compile s", "steady ms", "GF/s", "share",
                       "finite"], rows)]
    if results.get("torch"):
        rows = [[r["n"], r["T"], r["seeds"],
                 " / ".join(f"{float(v) * 1e3:.0f}" for v in r["torch_s_by_threads"].values()),
                 "/".join(r["torch_s_by_threads"]), f"{r['ours_s'] * 1e3:.1f}",
                 f"{r['speedup']:.1f}x",
                 f"{r['ours_no_ynn_s'] * 1e3:.1f}" if r.get("ours_no_ynn_s") else "-",
                 f"{r['speedup_no_ynn']:.1f}x" if r.get("speedup_no_ynn") else "-",
                 f"{r['max_rel_diff_norm']:.1e}"] for r in results["torch"]]
        out += ["", "torch.func.jacfwd (vmap over seeds; threads: default/1, the faster counts) "
                    "vs ours (jacfwd):",
                table(["n", "T", "seeds", "torch ms", "threads", "ours ms", "speedup",
                       "ours" + NO_YNN_TAG + " ms", "speedup" + NO_YNN_TAG, "max rel diff ‖J‖"], rows)]
    if results.get("compile"):
        rows = [[r["n"], r["T"], r["seeds"], f"{r['lower_s']:.2f}", f"{r['compile_s']:.2f}",
                 f"{r['total_s']:.2f}", f"{r['cold_total_s']:.2f}"] for r in results["compile"]]
        out += ["", "Compile time of the default method (median of 3 fresh jits):",
                table(["n", "T", "seeds", "lower s", "compile s", "total s", "first (cold) s"], rows)]
    for r in results.get("spectra") or []:
        rows = [[e["config"] + (" (default)" if e["is_default"] else ""),
                 f"{e['seeds_per_s']:.1f}", f"{e['vs_loop']:.2f}", f"{e['steady_s'] * 1e3:.1f}",
                 f"{e['first_call_s']:.2f}"] for e in r["entries"]]
        out += ["", f"rd.spectra seeds/s, n={r['n']} T={r['T']} seeds={r['seeds']} "
                    f"(curve=False, jacfwd; loop = Python loop of a jitted one-seed call); "
                    f"fastest batch_size here: {r['best_batch_size']}",
                table(["config", "seeds/s", "vs loop", "steady ms", "first call s"], rows, left=(0,))]
    fl = floors(results, full)
    if fl:
        rows = [[w, f"{v:.2f}", ("≤ " if "compile" in w else "≥ ") + f"{f:g}",
                 "PASS" if ok else "FAIL"] for w, v, f, ok in fl]
        out += ["", "Floors (reported, not asserted; plain rows: a user's own jit(vmap(rd.jacobian)); "
                    "[no ynn] rows: the library's compile path on CPU for n > 64):",
                table(["floor", "measured", "needed", ""], rows, left=(0,))]
    return "\n".join(out)


def device_slug():
    kind = jax.devices()[0].device_kind
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-") or "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (~30 s, mostly compiling)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (median), default 5")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per group of interleaved timings before stopping after "
                         f"{MIN_REPEATS} repeats (default 40, 2 with --quick)")
    ap.add_argument("--out", default=None,
                    help="JSON path (default benchmarks/results/jacobian-<device_kind>.json)")
    ap.add_argument("--lapack-threads", type=int, default=1,
                    help="threads for the OpenBLAS behind jaxlib's CPU LAPACK (the SVD of the "
                         "spectral norm); default 1, 0 leaves it as it is (see README)")
    ap.add_argument("--no-ynn-rows", action=argparse.BooleanOptionalAction, default=True,
                    help="on CPU, also time jacfwd and the jax matmul chain compiled with XLA's "
                         "YNNPACK dot fusions off (rows tagged [no ynn]); default on")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run: {', '.join(SECTIONS)}")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"--only: unknown section(s) {bad}; choose from {SECTIONS}")
    if args.repeats < 1:
        ap.error("--repeats: expected >= 1")
    if args.budget is None:
        args.budget = 2.0 if args.quick else 40.0

    if args.quick:
        sizes = [(8, 20, 4), (16, 50, 2)]
        compile_Ts, compile_n = (20, 200), 8
        spectra_sizes, batch_sizes = [(8, 30, 8), (16, 30, 8)], (1, 2, 8)
    else:
        sizes = [(32, 100, 32), (128, 1000, 8), (256, 1000, 4)]
        compile_Ts, compile_n = (100, 10_000), 32
        spectra_sizes, batch_sizes = [(32, 500, 64), (128, 500, 64)], (1, 2, 4, 8, 16, 32, 64)

    dev = jax.devices()[0]
    lapack_libs = limit_lapack_threads(args.lapack_threads)
    results = {"meta": dict(
        device_kind=dev.device_kind, platform=dev.platform, jax_version=jax.__version__,
        jaxlib_version=getattr(jax.lib, "__version__", None) or _jaxlib_version(),
        numpy_version=np.__version__, torch_version=torch.__version__ if torch is not None else None,
        torch_threads=torch.get_num_threads() if torch is not None else None,
        rnn_dynamics_version=rd.__version__, cpu_count=os.cpu_count(),
        python=platform.python_version(), machine=platform.machine(),
        load_avg_start=_loadavg(), date=datetime.datetime.now().isoformat(timespec="seconds"),
        args=vars(args), sections=only, input_scale=INPUT_SCALE,
        lapack_threads_set_in=lapack_libs,
        cell='rd.cells.vanilla(1, n, "tanh", gain=1.0)')}
    log(f"device {dev.platform}/{dev.device_kind}, jax {jax.__version__}, sections {only}; "
        f"LAPACK threads set to {args.lapack_threads} in {lapack_libs or 'nothing'}")
    t0 = time.perf_counter()
    if "jacobian" in only:
        run_jacobian(sizes, args, results)
    if "torch" in only:
        run_torch(sizes, args, results)
    if "compile" in only:
        run_compile(compile_Ts, compile_n, 4 if not args.quick else 2, args, results)
    if "spectra" in only:
        run_spectra(spectra_sizes, batch_sizes, args, results)
    results["meta"]["load_avg_end"] = _loadavg()
    results["meta"]["wall_s"] = time.perf_counter() - t0
    results["floors"] = [dict(what=w, measured=v, needed=f, passed=bool(ok))
                         for w, v, f, ok in floors(results, not args.quick)]

    print(report(results, not args.quick))
    path = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                    f"jacobian-{device_slug()}{'-quick' if args.quick else ''}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1, default=float)
    print(f"\nwrote {path} (wall {results['meta']['wall_s']:.0f} s)")


def _jaxlib_version():
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:
        return None


def _loadavg():
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


if __name__ == "__main__":
    main()
