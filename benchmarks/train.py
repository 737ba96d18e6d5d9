#!/usr/bin/env python
"""Benchmark: training throughput of ``rd.train`` (sequences per second).

``flax``
    A tanh RNN (hidden 128) with a linear readout of the last state on the adding problem
    (T = 200, batch 32), plain SGD (``optax.sgd(0.01)``): ``rd.train`` (``rd.cells.vanilla``,
    ``readout="last"``, no probes) against the same model written with
    ``flax.linen.RNN(nn.SimpleCell(128))`` + ``nn.Dense(1)`` and the same optax optimiser, its
    steps in one jitted ``lax.scan`` with the batches drawn inside (as ``rd.train`` does).
    Floor: ``rd.train`` at least as many sequences/s.
``seeds``
    Hidden 32, same task: 8 seeds in one ``rd.train(..., seeds=8)`` (vmapped, the seed axis
    split over the CPU's cores exposed as devices, ``--cpu-devices``, default all cores), the
    same on one device (``devices=[jax.devices()[0]]``), and 8 sequential
    ``rd.train(..., seeds=1)`` calls (compiled once, the same code each time; one seed runs on
    one device). Floor: at least 2× the throughput of the sequential runs.

Compile time (the first call) is reported apart from the steady time (later calls of the
same configuration, which reuse the compiled code). Nothing is asserted; floors print
PASS/FAIL. The machine may be shared: compare ratios taken in the same run.

Usage::

    python benchmarks/train.py            # full run (about a minute on a quiet 2-core CPU)
    python benchmarks/train.py --quick    # tiny sizes, a smoke test
"""
from __future__ import annotations

import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import rnn_dynamics as rd  # noqa: E402
from _harness import cpu_devices, finish_args, header, log, machine, measure, parser, table, write_json  # noqa: E402

LR = 0.01


def ours(hidden, length, batch, steps, seeds=1, key=None, devices=None):
    """A thunk running ``steps`` SGD steps of rd.train (the same task object every call)."""
    task = _task(length)
    cell = rd.cells.vanilla(2, hidden, "tanh")
    key = jax.random.key(0) if key is None else key

    def run():
        res = rd.train(cell, task, steps=steps, key=key, seeds=seeds, batch=batch,
                       optimizer="sgd", learning_rate=LR, readout="last", log_every=steps,
                       probe_jacobians=0, probe_size=1, progress=False, devices=devices)
        jax.block_until_ready(res.params)
        return res

    return run


@functools.lru_cache(maxsize=None)
def _task(length):
    return functools.partial(rd.tasks.adding, length=length)


def flax_thunk(hidden, length, batch, steps):
    """The same model and optimiser in flax.linen, steps in one jitted scan."""

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.RNN(nn.SimpleCell(features=hidden))(x)
            return nn.Dense(1)(h[:, -1])

    net = Net()
    opt = optax.sgd(LR)
    x0 = jnp.zeros((batch, length, 2))
    params = net.init(jax.random.key(0), x0)
    state = opt.init(params)
    task = _task(length)

    def loss_fn(p, x, y):
        return jnp.mean((net.apply(p, x)[:, 0] - y) ** 2)

    @jax.jit
    def run(params, state, key):
        def step(carry, t):
            p, s = carry
            x, y, _ = task(jax.random.fold_in(key, t), batch)
            g = jax.grad(loss_fn)(p, x, y[:, -1, 0])
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (params, state), jnp.arange(steps))[0]

    return lambda: jax.block_until_ready(run(params, state, jax.random.key(1)))


def timed_first(thunk):
    t = time.perf_counter()
    thunk()
    return time.perf_counter() - t


def main(argv=None):
    ap = parser(__doc__)
    cpu_devices(ap, argv, os.cpu_count(), "rd.train splits its seeds over them")
    args = finish_args(ap, argv)
    meta = machine()
    print(header(meta))
    q = args.quick
    H, T, B, STEPS = (32, 20, 8, 20) if q else (128, 200, 32, 100)
    results = {"machine": meta, "config": dict(hidden=H, length=T, batch=B, steps=STEPS, lr=LR)}

    log("flax comparison")
    a, b = ours(H, T, B, STEPS), flax_thunk(H, T, B, STEPS)
    first = {"rd.train": timed_first(a), "flax nn.RNN(SimpleCell)": timed_first(b)}
    m = measure({"rd.train": a, "flax nn.RNN(SimpleCell)": b}, args.repeats, args.budget, warmup=False)
    rows = []
    for k in m:
        seq_s = STEPS * B / m[k]["median_s"]
        m[k].update(first_call_s=first[k], sequences_per_s=seq_s)
        rows.append([k, f"{first[k]:.2f}", f"{m[k]['median_s']:.3f}", f"{seq_s:.0f}"])
    print(f"\ntanh RNN n={H}, T={T}, batch {B}, {STEPS} SGD steps per call")
    print(table(["model", "first call s (compile)", "steady s", "sequences/s"], rows))
    ratio = m["rd.train"]["sequences_per_s"] / m["flax nn.RNN(SimpleCell)"]["sequences_per_s"]
    print(f"rd.train / flax = {ratio:.2f}  [{'PASS' if ratio >= 1.0 else 'FAIL'}: floor 1.0]")
    results["flax"] = dict(times=m, ratio=ratio)

    log("seeds together vs one at a time")
    Hs, S = (16, 4) if q else (32, 8)
    keys = jax.random.split(jax.random.key(0), S)
    D = jax.device_count()
    split = f"vmapped, {D} devices"
    together = ours(Hs, T, B, STEPS, seeds=S, key=keys)
    one_dev = ours(Hs, T, B, STEPS, seeds=S, key=keys, devices=jax.devices()[:1])
    alone = [ours(Hs, T, B, STEPS, seeds=1, key=keys[i:i + 1]) for i in range(S)]
    seq = lambda: [f() for f in alone]
    thunks = {split: together, "vmapped, 1 device": one_dev, "sequential": seq}
    if D == 1:
        del thunks[split]
        split = "vmapped, 1 device"
    first = {k: timed_first(f if k != "sequential" else alone[0]) for k, f in thunks.items()}
    m2 = measure(thunks, args.repeats, args.budget, warmup=False)
    rows = []
    for k in m2:
        seq_s = S * STEPS * B / m2[k]["median_s"]
        m2[k].update(first_call_s=first[k], sequences_per_s=seq_s)
        rows.append([k, f"{first[k]:.2f}", f"{m2[k]['median_s']:.3f}", f"{seq_s:.0f}"])
    print(f"\n{S} seeds, tanh RNN n={Hs}, T={T}, batch {B}, {STEPS} steps each")
    print(table(["how", "first call s (compile)", "steady s", "sequences/s (all seeds)"], rows))
    rate = lambda k: m2[k]["sequences_per_s"] / m2["sequential"]["sequences_per_s"]
    r2 = rate(split)
    print(f"{split} / sequential = {r2:.2f}  [{'PASS' if r2 >= 2.0 else 'FAIL'}: floor 2.0]")
    if D > 1:
        print(f"vmapped, 1 device / sequential = {rate('vmapped, 1 device'):.2f}")
    results["seeds"] = dict(times=m2, ratio=r2, ratio_one_device=rate("vmapped, 1 device"),
                            seeds=S, hidden=Hs, devices=D)
    path = write_json("train", results, args.out, quick=q)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
