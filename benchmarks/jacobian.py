#!/usr/bin/env python
"""Benchmark: ∂h_T/∂h_1 and its spectral norm, rnn_dynamics against its peers and the matmul rate.

Problem: a tanh vanilla cell ``rd.cells.vanilla(1, n, "tanh", gain=1.0)``; per seed, params,
h_1 and x_2..x_T from ``rd.draw_seed(cell, key_i, T, input_scale=0.01)`` with
``key_i = jax.random.split(jax.random.key(0), seeds)[i]`` (the seeds ``rd.spectra`` draws);
the output is ‖∂h_T/∂h_1‖₂ for every seed, float32, at (n, T, seeds) = (32, 100, 32),
(128, 1000, 8), (256, 1000, 4). The ideal cost is the T-1 products of n×n matrices,
2·(T-1)·n³ flops per seed; every peer's GF/s is measured against that cost, and its *share* is
its rate divided by the best matmul-chain rate of any library on this machine.

Peers (JAX ones jitted and vmapped over seeds; torch ones vmapped or batched):
  rd.jacobian [user jit]         jax.jit(jax.vmap(spectral_norm ∘ rd.jacobian(method=m))), every m
  rd.jacobian [user jit + fast_cpu_options]  the same jit with compiler_options=rd.fast_cpu_options()
  rd.spectra [library path]      rd.spectra(cell, key, seeds, T, curve=False): largest singular value
                                 (it also draws every seed's params, h_1 and inputs)
  rd.spectra [..., given the networks]  the same with params=, h1=, xs= passed: the peers' work
  jax.jacfwd over lax.scan       plain jacfwd of a hand-written tanh scan
  flax nn.RNN(SimpleCell)+jacfwd  jax.jacfwd of flax's RNN with the same weights
  ... [matrix only]              rd.jacobian (default method) and flax's jacfwd without the SVD:
                                 the same work as a matmul chain, so their share is comparable
  torch.func.jacfwd              torch.func.vmap(torch.func.jacfwd(loop of tanh steps))
  torch.bmm product              the step Jacobians diag(1-h²) W multiplied by hand with torch.bmm
Matmul chains (the reference): carry <- A_t carry over T-1 random (seeds, n, n) matrices with a
jitted lax.scan (XLA with and without YNNPACK dots), a numpy.matmul loop, a torch.bmm loop.

Usage::

    python benchmarks/jacobian.py            # full sizes (28 min on a heavily loaded 2-core CPU)
    python benchmarks/jacobian.py --quick    # tiny sizes, a smoke run
"""
from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402

import rnn_dynamics as rd  # noqa: E402

warnings.simplefilter("ignore", rd.NumericalWarning)

try:  # torch is never a dependency: only a peer when it is importable.
    import torch
except Exception:  # pragma: no cover - depends on the machine
    torch = None

INPUT_SCALE = 0.01  # small inputs keep tanh near its linear regime: ∂h_T/∂h_1 stays finite
FULL_SIZES = [(32, 100, 32), (128, 1000, 8), (256, 1000, 4)]
QUICK_SIZES = [(8, 20, 4), (16, 50, 2)]
REFERENCE = "rd.jacobian jacfwd [user jit]"
DEFAULT = "rd.jacobian default=auto [user jit]"
# Targets, printed PASS/FAIL (nothing is asserted): share of the best chain by n, for the
# default method on the library's path and under a user's jit; speed-up over torch.func.jacfwd.
SHARE_FLOORS = {32: 0.40, 128: 0.60, 256: 0.80}
TORCH_FLOOR = 2.5
GIVEN = "rd.spectra [library path, given the networks]"
LIBRARY_PEERS = ("rd.spectra [library path]", GIVEN, DEFAULT)
MATRIX_ONLY = "rd.jacobian default=auto [user jit, matrix only]"
CAP_SHARE = 0.9  # where XLA's matmul chain is the cap: the Jacobian alone at >= 90 % of it
JAX_PEERS = ("jax.jacfwd over lax.scan", "flax nn.RNN(SimpleCell) + jax.jacfwd")


def make_problem(n, T, seeds, key=0):
    cell = rd.cells.vanilla(1, n, "tanh", gain=1.0)
    keys = jax.random.split(jax.random.key(key), seeds)
    params, h1, xs = jax.vmap(lambda k: rd.draw_seed(cell, k, T, input_scale=INPUT_SCALE))(keys)
    return cell, jax.block_until_ready((params, h1, xs))


def ideal_flops(n, T, seeds):
    return seeds * 2 * (T - 1) * n**3


# --------------------------------------------------------------------------------------------
# JAX peers: functions of (params, h1, xs) batched over seeds -> (seeds,) norms


def rd_jacobian_fn(cell, method):
    return jax.vmap(lambda p, h, x: rd.spectral_norm(rd.jacobian(cell, p, h, x, method=method)))


def plain_jacfwd_fn(p, h1, xs):
    def one(p, h1, xs):
        def final(h):
            step = lambda h, x: (jnp.tanh(p["W"] @ h + p["U"] @ x + p["b"]), None)
            return jax.lax.scan(step, h, xs)[0]

        return jnp.linalg.norm(jax.jacfwd(final)(h1), ord=2)

    return jax.vmap(one)(p, h1, xs)


def flax_fn(n, norm=True):
    import flax.linen as nn

    rnn = nn.RNN(nn.SimpleCell(features=n), return_carry=True)

    def one(p, h1, xs):
        fp = {"params": {"cell": {"i": {"kernel": p["U"].T, "bias": p["b"]}, "h": {"kernel": p["W"].T}}}}
        final = lambda h: rnn.apply(fp, xs, initial_carry=h)[0]
        J = jax.jacfwd(final)(h1)
        return jnp.linalg.norm(J, ord=2) if norm else J

    return jax.vmap(one)


# --------------------------------------------------------------------------------------------
# torch peers (CPU only)


def torch_tensors(p, h1, xs):
    return [torch.from_numpy(np.array(a, dtype=np.float32)) for a in (p["W"], p["U"], p["b"], h1, xs)]


def torch_jacfwd_fn(T):
    def one(W, U, b, h1, xs):
        drive = xs @ U.T + b  # (T-1, n): the input part of every step, hoisted out of the loop

        def final(h):
            for t in range(T - 1):
                h = torch.tanh(W @ h + drive[t])
            return h

        return torch.linalg.matrix_norm(torch.func.jacfwd(final)(h1), ord=2)

    vmapped = torch.func.vmap(one)

    def run(*a):
        with torch.inference_mode():
            return vmapped(*a)

    return run


def torch_product_fn(T):
    def run(W, U, b, h1, xs):  # batched over seeds: W (S, n, n), U (S, n, m), xs (S, T-1, m)
        with torch.inference_mode():
            drive = torch.einsum("snm,stm->stn", U, xs) + b[:, None, :]
            n = W.shape[-1]
            c = torch.eye(n).expand(W.shape[0], n, n).contiguous()
            h = h1
            for t in range(T - 1):
                h = torch.tanh(torch.bmm(W, h[:, :, None])[:, :, 0] + drive[:, t])
                c = (1 - h * h)[:, :, None] * torch.bmm(W, c)  # J_t = diag(1 - h_t²) W
            return torch.linalg.matrix_norm(c, ord=2)

    return run


# --------------------------------------------------------------------------------------------
# matmul chains


def chain_peers(n, T, seeds, on_cpu, fast_opts):
    """(jax thunks, host thunks, compile info): carry <- A_t carry over T-1 (seeds, n, n) matrices."""
    rng = np.random.default_rng(1)
    A_np = rng.standard_normal((T - 1, seeds, n, n), dtype=np.float32)
    A_np *= np.float32(1 / np.sqrt(n))  # in place: 1 GB at n = 256
    A = jax.device_put(A_np)
    eye = jnp.broadcast_to(jnp.eye(n, dtype=A.dtype), (seeds, n, n))
    left = lambda A, eye: jax.lax.scan(lambda c, a: (a @ c, None), eye, A)[0]
    right = lambda A, eye: jax.lax.scan(lambda c, a: (c @ a, None), eye, A)[0]
    variants = [("chain: jax scan A_t@c", left, None), ("chain: jax scan c@A_t", right, None)]
    if fast_opts:
        variants.append(("chain: jax scan A_t@c [fast_cpu_options]", left, fast_opts))
    jax_thunks, info = {}, {}
    for name, f, opts in variants:
        compiled, t = H.compile_jit(f, A, eye, options=opts)
        jax_thunks[name], info[name] = H.blocked(compiled, A, eye), t["total_s"]
    host = {}
    if on_cpu:
        def np_chain():
            c = np.broadcast_to(np.eye(n, dtype=np.float32), (seeds, n, n)).copy()
            buf = np.empty_like(c)
            for a in A_np:
                np.matmul(a, c, out=buf)
                c, buf = buf, c
            return c

        host["chain: numpy matmul loop"] = np_chain
        if torch is not None:
            A_t = torch.from_numpy(A_np)  # shares the memory

            def torch_chain():
                with torch.inference_mode():
                    c = torch.eye(n).expand(seeds, n, n).contiguous()
                    for a in A_t:
                        c = torch.bmm(a, c)
                return c

            host["chain: torch.bmm loop"] = torch_chain
    return jax_thunks, host, info


# --------------------------------------------------------------------------------------------


def run_size(n, T, seeds, args, fast_opts):
    on_cpu = H.cpu_only_libraries()
    H.log(f"n={n} T={T} seeds={seeds}: compiling")
    cell, (p, h1, xs) = make_problem(n, T, seeds)
    flops = ideal_flops(n, T, seeds)
    jax_thunks, host_thunks, compile_s, outputs = {}, {}, {}, {}

    def add_jax(name, f, options=None):
        compiled, t = H.compile_jit(f, p, h1, xs, options=options)
        jax_thunks[name], compile_s[name] = H.blocked(compiled, p, h1, xs), t["total_s"]
        outputs[name] = np.asarray(compiled(p, h1, xs))

    for m in rd.METHODS:
        add_jax(f"rd.jacobian {m} [user jit]", rd_jacobian_fn(cell, m))
    if fast_opts:
        add_jax(DEFAULT, rd_jacobian_fn(cell, "auto"))
        add_jax("rd.jacobian jacfwd [user jit + fast_cpu_options]", rd_jacobian_fn(cell, "jacfwd"), fast_opts)

    key = jax.random.key(0)
    spectra = lambda: rd.spectra(cell, key, seeds, T, input_scale=INPUT_SCALE, curve=False).singular_values
    t_first = H.first_call(lambda: jax.block_until_ready(spectra()))
    jax_thunks["rd.spectra [library path]"] = lambda: jax.block_until_ready(spectra())
    outputs["rd.spectra [library path]"] = np.asarray(spectra())[:, 0]
    # The same work as the peers (which are handed each seed's network): the drawn params,
    # h_1 and inputs passed in, so only the Jacobians and their singular values are timed.
    given = lambda: rd.spectra(cell, key, params=p, h1=h1, xs=xs, curve=False).singular_values
    t_first_given = H.first_call(lambda: jax.block_until_ready(given()))
    jax_thunks[GIVEN] = lambda: jax.block_until_ready(given())
    outputs[GIVEN] = np.asarray(given())[:, 0]
    add_jax("jax.jacfwd over lax.scan", plain_jacfwd_fn)
    add_jax("flax nn.RNN(SimpleCell) + jax.jacfwd", flax_fn(n))
    # The Jacobians alone (no SVD), to compare with the matmul chains, which take none either.
    for name, f in ((MATRIX_ONLY, jax.vmap(lambda p, h, x: rd.jacobian(cell, p, h, x))),
                    ("flax nn.RNN(SimpleCell) + jax.jacfwd [matrix only]", flax_fn(n, norm=False))):
        compiled, t = H.compile_jit(f, p, h1, xs)
        jax_thunks[name], compile_s[name] = H.blocked(compiled, p, h1, xs), t["total_s"]
        outputs[name] = np.linalg.norm(np.asarray(compiled(p, h1, xs), np.float64), ord=2, axis=(1, 2))

    if on_cpu and torch is not None:
        tens = torch_tensors(p, h1, xs)
        for name, f in (("torch.func.jacfwd", torch_jacfwd_fn(T)), ("torch.bmm product", torch_product_fn(T))):
            t0 = time.perf_counter()
            outputs[name] = f(*tens).numpy()
            compile_s[name] = time.perf_counter() - t0  # first call; torch compiles nothing
            host_thunks[name] = (lambda f=f: f(*tens))

    c_jax, c_host, c_compile = chain_peers(n, T, seeds, on_cpu, fast_opts)
    compile_s.update(c_compile)

    H.log(f"n={n} T={T} seeds={seeds}: timing")
    times = H.measure({**c_jax, **jax_thunks}, args.repeats, args.budget)
    if c_host or host_thunks:  # host thread pools spin after a call: timed in a group of their own
        times.update(H.measure({**c_host, **host_thunks}, args.repeats, args.budget))
        time.sleep(0.5)
    if "rd.spectra [library path]" in times:
        compile_s["rd.spectra [library path]"] = t_first - times["rd.spectra [library path]"]["median_s"]
    if GIVEN in times:
        compile_s[GIVEN] = t_first_given - times[GIVEN]["median_s"]

    chains = [k for k in times if k.startswith("chain:")]
    best_chain = min(chains, key=lambda k: times[k]["median_s"])
    best_rate = H.gflops(flops, times[best_chain]["median_s"])
    ref = outputs[REFERENCE]
    rows = []
    for name, t in times.items():
        rate = H.gflops(flops, t["median_s"])
        row = dict(n=n, T=T, seeds=seeds, peer=name, compile_s=compile_s.get(name),
                   median_s=t["median_s"], min_s=t["min_s"], repeats=t["repeats"], gflops=rate,
                   share=rate / best_rate, is_chain=name in chains)
        if name in outputs:
            out = outputs[name]
            row["finite"] = bool(np.all(np.isfinite(out)) and np.all(out > 0))
            row["max_rel_diff"] = float(np.max(np.abs(out - ref) / np.abs(ref)))
        rows.append(row)
    H.log(f"n={n}: best chain {best_rate:.1f} GF/s ({best_chain}); best peer "
          + max((r for r in rows if not r["is_chain"]), key=lambda r: r["share"])["peer"])
    return dict(n=n, T=T, seeds=seeds, flops=flops, best_chain=best_chain,
                best_chain_gflops=best_rate, rows=rows)


def floors(results):
    """(what, measured, needed, passed) for every target this run measured."""
    out = []
    for s in results["sizes"]:
        rows = {r["peer"]: r for r in s["rows"]}
        for peer in LIBRARY_PEERS:
            if s["n"] in SHARE_FLOORS and peer in rows:
                f = SHARE_FLOORS[s["n"]]
                out.append((f"{peer} share, n={s['n']}", rows[peer]["share"], f"≥ {f}", rows[peer]["share"] >= f))
        for peer in (GIVEN, DEFAULT):  # the same work as the JAX peers: at least as fast
            for other in JAX_PEERS:
                if peer in rows and other in rows:
                    x = rows[other]["median_s"] / rows[peer]["median_s"]
                    out.append((f"{peer} vs {other}, n={s['n']}", x, "≥ 1", x >= 1))
        xla_best = max((r["gflops"] for k, r in rows.items() if k.startswith("chain: jax")), default=0.0)
        torch_rate = rows["torch.func.jacfwd"]["gflops"] if "torch.func.jacfwd" in rows else None
        # the cap target stands in for the torch floor only where XLA's own chain cannot reach it
        if MATRIX_ONLY in rows and (torch_rate is None or TORCH_FLOOR * torch_rate > xla_best):
            x = rows[MATRIX_ONLY]["share"]
            out.append((f"{MATRIX_ONLY} share of the best chain, n={s['n']}", x, f"≥ {CAP_SHARE}", x >= CAP_SHARE))
        if "torch.func.jacfwd" in rows:
            x = rows["torch.func.jacfwd"]["median_s"] / rows[DEFAULT]["median_s"]
            out.append((f"{DEFAULT} vs torch.func.jacfwd, n={s['n']}", x, f"≥ {TORCH_FLOOR}", x >= TORCH_FLOOR))
    return out


def report(results):
    out = ["", "‖∂h_T/∂h_1‖₂ per seed (tanh, float32); GF/s at the ideal 2·(T-1)·n³ flop per seed; "
           "share = GF/s / best matmul chain of any library; compile: lower+compile (JAX), "
           "first call - steady (rd.spectra), first call (torch)"]
    for s in results["sizes"]:
        rows = []
        for r in sorted(s["rows"], key=lambda r: (r["is_chain"], -r["share"])):
            rows.append([r["peer"], "-" if r["compile_s"] is None else f"{r['compile_s']:.2f}",
                         f"{r['median_s'] * 1e3:.3g}", f"{r['min_s'] * 1e3:.3g}", f"{r['gflops']:.1f}",
                         f"{r['share']:.2f}", f"{r['max_rel_diff']:.0e}" if "max_rel_diff" in r else "-"])
        out += ["", f"n = {s['n']}, T = {s['T']}, seeds = {s['seeds']}: best chain "
                    f"{s['best_chain_gflops']:.1f} GF/s ({s['best_chain']})",
                H.table(["peer", "compile s", "median ms", "min ms", "GF/s", "share",
                         "max rel diff vs rd.jacobian"], rows)]
    fl = results.get("floors") or []
    if fl:
        out += ["", "Targets (reported, not asserted):",
                H.table(["target", "measured", "needed", ""],
                        [[w, f"{v:.2f}", need, "PASS" if ok else "FAIL"] for w, v, need, ok in fl])]
    return "\n".join(out)


def main(argv=None):
    ap = H.parser(__doc__)
    ap.add_argument("--n", type=int, nargs="*", default=None, help="only these state sizes")
    args = H.finish_args(ap, argv)
    meta = H.machine()
    print(H.header(meta), flush=True)
    fast_opts = rd.fast_cpu_options()
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    if args.n:
        sizes = [s for s in sizes if s[0] in args.n]
    meta.update(args={k: v for k, v in vars(args).items()}, input_scale=INPUT_SCALE,
                cell='rd.cells.vanilla(1, n, "tanh", gain=1.0)', fast_cpu_options=fast_opts,
                torch_threads=torch.get_num_threads() if torch is not None else None,
                rnn_dynamics_version=rd.__version__)
    t0 = time.perf_counter()
    results = dict(meta=meta, sizes=[run_size(n, T, s, args, fast_opts) for n, T, s in sizes])
    meta["wall_s"] = time.perf_counter() - t0
    meta["load_avg_end"] = H.machine()["load_avg"]
    results["floors"] = floors(results) if not args.quick else []
    print(report(results))
    path = H.write_json("jacobian", results, args.out, args.quick)
    print(f"\nwrote {path} (wall {meta['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
