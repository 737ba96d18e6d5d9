#!/usr/bin/env python
"""Benchmark: rd.maps.mandelbrot escape-time image and rd.maps.mandelbrot_area.

``image``
    ``rd.maps.mandelbrot(shape=(1000, 1000), max_iter=256)`` over [-2, 0.5] × [-1.25, 1.25],
    float32: compile time (``jax.jit`` of the call, lower + compile) apart from the steady time
    (median of interleaved repeats). Floor: steady time under 2 s on a 2-core CPU. Next to it,
    the same grid at 64 and 1024 iterations (the kernel stops a block of points as soon as all
    of them escaped, so time grows slower than max_iter).
``area``
    ``rd.maps.mandelbrot_area((1000, 2000), 1000)`` (the half-plane grid, 2 million cells,
    1000 iterations): one cold call and one warm call, and the estimate against 1.5066.

Usage::

    python benchmarks/mandelbrot.py            # about 30 s on a 2-core CPU
    python benchmarks/mandelbrot.py --quick    # a smoke run
"""
from __future__ import annotations

import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness as H  # noqa: E402

import rnn_dynamics as rd  # noqa: E402

FLOOR_S = 2.0
AREA = 1.5066


def main(argv=None):
    args = H.finish_args(H.parser(__doc__), argv)
    meta = H.machine()
    print(H.header(meta), flush=True)
    side, iters = (200, (16, 64, 128)) if args.quick else (1000, (64, 256, 1024))
    area_shape, area_iter = ((100, 200), 200) if args.quick else ((1000, 2000), 1000)

    rows, image = [], {}
    for n in iters:
        H.log(f"image: {side}x{side}, max_iter={n}")
        _, ct = H.compile_jit(lambda: rd.maps.mandelbrot(shape=(side, side), max_iter=n))
        cold = H.first_call(H.blocked(rd.maps.mandelbrot, (-2.0, 0.5), (-1.25, 1.25), (side, side), n))
        image[n] = dict(compile_s=ct["total_s"], first_call_s=cold)
    steady = H.measure(
        {n: H.blocked(rd.maps.mandelbrot, (-2.0, 0.5), (-1.25, 1.25), (side, side), n) for n in iters},
        repeats=args.repeats, budget_s=args.budget,
    )
    for n in iters:
        image[n].update(steady[n])
        rows.append([f"{side}x{side}", n, f"{image[n]['compile_s']:.2f}",
                     f"{image[n]['first_call_s']:.2f}", f"{image[n]['median_s']:.3f}",
                     f"{image[n]['min_s']:.3f}", image[n]["repeats"]])
    print()
    print(H.table(["grid", "max_iter", "compile s", "first call s", "steady median s", "min s",
                   "repeats"], rows))
    key = 256 if 256 in image else iters[1]
    ok = image[key]["median_s"] < FLOOR_S
    print(f"\nfloor: {side}x{side} at {key} iterations in under {FLOOR_S} s: "
          f"{image[key]['median_s']:.3f} s -> {'PASS' if ok else 'FAIL'}")

    H.log(f"area: {area_shape} at {area_iter} iterations")
    cold = H.first_call(H.blocked(rd.maps.mandelbrot_area, area_shape, area_iter))
    warm = H.first_call(H.blocked(rd.maps.mandelbrot_area, area_shape, area_iter))
    est = float(rd.maps.mandelbrot_area(area_shape, area_iter))
    print(f"area: {area_shape[0]}x{area_shape[1]} half-plane cells, {area_iter} iterations: "
          f"{est:.4f} (known {AREA}, error {est - AREA:+.4f}); first call {cold:.2f} s, "
          f"warm {warm:.2f} s")

    results = dict(
        machine=meta,
        image={str(n): v for n, v in image.items()},
        image_grid=[side, side],
        floor=dict(seconds=FLOOR_S, max_iter=key, passed=bool(ok)),
        area=dict(shape=list(area_shape), max_iter=area_iter, estimate=est, known=AREA,
                  first_call_s=cold, warm_s=warm),
        dtype=str(jax.numpy.zeros(0).dtype),
    )
    path = H.write_json("mandelbrot", results, args.out, quick=args.quick)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
