"""Shared timing harness for the scripts in benchmarks/ (scripts, never tests).

API (import as ``from _harness import ...``; the scripts run as ``python benchmarks/<name>.py``):
  parser(doc) / finish_args(ap)   argparse with --quick --repeats --budget --out --lapack-threads
  machine()                       dict: CPU model (/proc/cpuinfo), cores, load, device, versions, date
  header(meta)                    the one-line machine description every script prints first
  compile_jit(f, *args, options=)  (compiled, {"lower_s", "compile_s", "total_s"}): compile time apart
  blocked(f, *args)               a thunk that runs f(*args) to completion (block_until_ready)
  measure(thunks, repeats, budget)  interleaved round robin -> {name: {"median_s", "min_s", "repeats"}}
  gflops(flops, s), table(header, rows), log(msg), limit_lapack_threads(n), cpu_only_libraries()
  write_json(name, results, out=None)  -> benchmarks/results/<name>-<device>.json (``-quick`` with --quick)
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

import numpy as np

import jax
import jax.numpy as jnp

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MIN_REPEATS = 3


def log(msg: str) -> None:
    """Progress line on stderr (stdout is kept for the tables)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# the machine


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(mod: str):
    try:
        return __import__(mod).__version__
    except Exception:
        return None


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine() -> dict:
    """Everything a number needs next to it: where, when, with what."""
    dev = jax.devices()[0]
    return dict(
        cpu_model=cpu_model(),
        cpu_count=os.cpu_count(),
        load_avg=_loadavg(),
        platform=dev.platform,
        device_kind=dev.device_kind,
        device_count=jax.device_count(),
        jax_version=jax.__version__,
        jaxlib_version=_version("jaxlib"),
        numpy_version=np.__version__,
        torch_version=_version("torch"),
        flax_version=_version("flax"),
        python=platform.python_version(),
        machine=platform.machine(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def header(meta: dict) -> str:
    return (f"{meta['date']}  {meta['cpu_model']} ({meta['cpu_count']} cores, load "
            f"{meta['load_avg']})  device {meta['platform']}/{meta['device_kind']}  "
            f"jax {meta['jax_version']}  jaxlib {meta['jaxlib_version']}  numpy "
            f"{meta['numpy_version']}  torch {meta['torch_version'] or 'not installed'}")


def cpu_only_libraries() -> bool:
    """numpy and torch peers are a fair comparison only when JAX also runs on the CPU."""
    return jax.devices()[0].platform == "cpu"


def limit_lapack_threads(n_threads: int) -> list:
    """Set the thread count of the OpenBLAS behind jaxlib's CPU LAPACK (the SVDs); returns the libs.

    Its worker threads spin-wait: on an oversubscribed small CPU a 128×128 SVD went from 0.8 ms
    to ~600 ms (benchmarks/README.md). numpy's own OpenBLAS is left alone. Linux only.
    """
    if n_threads <= 0 or not cpu_only_libraries():
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
# timing


def blocked(f, *args):
    """A thunk running ``f(*args)`` to completion (JAX results are blocked on)."""
    return lambda: jax.block_until_ready(f(*args))


def compile_jit(f, *args, options=None):
    """``(compiled, times)`` for ``jax.jit(f)`` at these arguments; times in seconds:
    ``lower_s`` (trace + lower), ``compile_s`` (XLA), ``total_s``. ``options``: XLA compile options."""
    t = time.perf_counter()
    lowered = jax.jit(f).lower(*args)
    t_lower = time.perf_counter() - t
    t = time.perf_counter()
    compiled = lowered.compile(compiler_options=options) if options else lowered.compile()
    t_compile = time.perf_counter() - t
    return compiled, dict(lower_s=t_lower, compile_s=t_compile, total_s=t_lower + t_compile)


def first_call(thunk) -> float:
    """Seconds of one call (the cold call of a function that compiles on first use)."""
    t = time.perf_counter()
    thunk()
    return time.perf_counter() - t


def measure(thunks: dict, repeats: int = 5, budget_s: float = 40.0, warmup: bool = True) -> dict:
    """Steady time of each thunk, interleaved so that a change in machine load hits all alike.

    Runs ``repeats`` rounds, each thunk once per round; stops early (after at least
    ``MIN_REPEATS`` rounds) once ``budget_s`` seconds are spent. With ``warmup`` every thunk
    runs once first, untimed. Returns ``{name: {"median_s", "min_s", "repeats"}}``.
    """
    if warmup:
        for f in thunks.values():
            f()
    times = {k: [] for k in thunks}
    t0 = time.perf_counter()
    for r in range(max(repeats, 1)):
        for k, f in thunks.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
        if r + 1 >= min(MIN_REPEATS, repeats) and time.perf_counter() - t0 > budget_s:
            break
    return {k: dict(median_s=float(np.median(v)), min_s=float(np.min(v)), repeats=len(v))
            for k, v in times.items()}


def gflops(flops: float, seconds: float) -> float:
    return flops / seconds / 1e9 if seconds > 0 else float("nan")


# --------------------------------------------------------------------------------------------
# output


def table(header_row, rows, left=(0,)) -> str:
    """Plain-text table; columns in ``left`` are left-aligned, the rest right-aligned."""
    cells = [[str(c) for c in header_row]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header_row))]

    def line(r):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])


def device_slug() -> str:
    kind = jax.devices()[0].platform
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-") or "unknown"


def write_json(name: str, results: dict, out: str | None = None, quick: bool = False) -> str:
    """Write ``results`` to ``out`` or ``benchmarks/results/<name>-<platform>[-quick].json``."""
    path = out or os.path.join(RESULTS_DIR, f"{name}-{device_slug()}{'-quick' if quick else ''}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1, default=float)
    return path


# --------------------------------------------------------------------------------------------
# command line


def parser(doc: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the flags every benchmark shares; add your own, then finish_args."""
    ap = argparse.ArgumentParser(description=(doc or "").strip().split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (median), default 5")
    ap.add_argument("--budget", type=float, default=None,
                    help=f"seconds per group of interleaved timings before stopping after "
                         f"{MIN_REPEATS} repeats (default 40, 2 with --quick)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<name>-<platform>.json)")
    ap.add_argument("--lapack-threads", type=int, default=1,
                    help="threads of the OpenBLAS behind jaxlib's CPU LAPACK; default 1, 0 leaves it")
    return ap


def cpu_devices(ap: argparse.ArgumentParser, argv, default: int, what: str) -> int:
    """Add ``--cpu-devices`` (CPU cores exposed as JAX devices) and apply it at once: it must
    reach ``jax_num_cpu_devices`` before the backend starts (``finish_args`` starts it)."""
    ap.add_argument("--cpu-devices", type=int, default=default,
                    help=f"CPU cores exposed as JAX devices (jax_num_cpu_devices): {what}. "
                         f"Default {default}")
    n = ap.parse_known_args(argv)[0].cpu_devices
    if n > 1:
        jax.config.update("jax_num_cpu_devices", n)
    return n


def finish_args(ap: argparse.ArgumentParser, argv=None):
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats: expected >= 1")
    if args.budget is None:
        args.budget = 2.0 if args.quick else 40.0
    args.lapack_libs = limit_lapack_threads(args.lapack_threads)
    return args
