"""Tests of rd.maps (iterated maps), their plots and the ``maps`` command.

Expected values are closed forms (the formulas cited in each test),
hand-computed orbits, plain numpy loops, or finite differences; never the code under test.
"""
from __future__ import annotations

import argparse
import io
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_dynamics as rd

M = rd.maps

SQRT04 = math.sqrt(0.4)
QUAD_FP = np.array([(1 - SQRT04) / 2, (1 + SQRT04) / 2])  # x² + 0.15: 0.18377, 0.81623
CYCLE4 = np.array([0.38282, 0.50088, 0.82694, 0.87500])  # 3.5x(1−x), from the reference


def logistic_np(r, x0, steps, dtype=np.float32):
    """The logistic orbit x_0..x_steps by a plain numpy loop."""
    r, x = dtype(r), dtype(x0)
    out = [x]
    for _ in range(steps):
        x = r * x * (dtype(1) - x)
        out.append(x)
    return np.array(out)


def two_cycle(r):
    """The logistic 2-cycle ((r+1) ± √((r+1)(r−3)))/(2r) and its multiplier −r² + 2r + 4."""
    s = math.sqrt((r + 1) * (r - 3))
    return np.array([(r + 1 - s) / (2 * r), (r + 1 + s) / (2 * r)]), -r * r + 2 * r + 4


# ------------------------------------------------------------------------------------------
# Fixed points and cycles against closed forms


def test_quadratic_fixed_points_closed_form(x64):
    fp = M.fixed_points(M.quadratic(0.15), (0.0, 1.0))
    assert fp.location.dtype == jnp.float64
    np.testing.assert_allclose(fp.location, QUAD_FP, atol=1e-12)
    np.testing.assert_allclose(fp.derivative, 2 * QUAD_FP, atol=1e-12)  # f′ = 2x*
    assert fp.kind == ("sink", "source")


def test_quadratic_fixed_points_float32_to_1e6():
    fp = M.fixed_points(M.quadratic(0.15), (0.0, 1.0))
    assert fp.location.dtype == jnp.float32
    np.testing.assert_allclose(fp.location, QUAD_FP, atol=1e-6)
    assert fp.kind == ("sink", "source")


def test_logistic_3_5_fixed_points_cycles_and_orbit():
    f = M.logistic(3.5)
    fp = M.fixed_points(f, (0.0, 1.0))
    np.testing.assert_allclose(fp.location, [0.0, 1 - 1 / 3.5], atol=1e-6)
    np.testing.assert_allclose(fp.derivative, [3.5, -1.5], atol=1e-5)  # f′ = r(1 − 2x)
    assert fp.kind == ("source", "source")

    po = M.periodic_orbits(f, 4, (0.0, 1.0))
    assert po.points.shape == (1, 4) and po.kind == ("sink",)
    np.testing.assert_allclose(np.sort(po.points[0]), CYCLE4, atol=1e-4)
    pts = np.asarray(po.points[0], np.float64)
    np.testing.assert_allclose(3.5 * pts * (1 - pts), np.roll(pts, -1), atol=1e-5)  # orbit order
    np.testing.assert_allclose(po.multiplier, [np.prod(3.5 * (1 - 2 * pts))], rtol=1e-4)

    cyc2, mult2 = two_cycle(3.5)  # 3/7, 6/7, −1.25: unstable since r > 1 + √6
    po2 = M.periodic_orbits(f, 2, (0.0, 1.0))
    np.testing.assert_allclose(po2.points, [cyc2], atol=1e-6)
    np.testing.assert_allclose(po2.multiplier, [mult2], atol=1e-5)
    assert po2.kind == ("source",)
    assert M.periodic_orbits(f, 3, (0.0, 1.0)).points.shape == (0, 3)  # period 3 needs r ≥ 1 + √8

    # The same 4-cycle by iterating from a generic x0, and the orbit equals a numpy loop.
    xs = M.iterate(f, 0.2, 1000)
    chex.assert_shape(xs, (1001,))
    np.testing.assert_allclose(np.sort(xs[-4:]), CYCLE4, atol=1e-4)
    np.testing.assert_allclose(xs, logistic_np(3.5, 0.2, 1000), atol=1e-5)


def test_logistic_r4_cycle_counts_and_multipliers(x64):
    # r = 4 is conjugate to the doubling map: 2^p points of period dividing p, 9 cycles of
    # exact period 6 (Möbius: (64 − 8 − 4 + 2)/6), each with |(f^6)′| = 2^6. Finding all 9
    # excludes the points of period 1, 2 and 3 among the 64 roots of f^6(x) = x.
    po = M.periodic_orbits(M.logistic(4.0), 6, (0.0, 1.0), grid=20001)
    assert po.points.shape == (9, 6)
    np.testing.assert_allclose(np.abs(po.multiplier), 64.0, rtol=1e-8)
    x = np.asarray(po.points, np.float64)
    np.testing.assert_allclose(4 * x * (1 - x), np.roll(x, -1, axis=1), atol=1e-10)
    assert len(np.unique(np.round(x, 8))) == 54  # 9 × 6 distinct points
    assert po.kind == ("source",) * 9


def test_tangent_and_missing_fixed_points(x64):
    # x² + 1/4: g = (x − 1/2)² touches 0 without crossing; f′(1/2) = 1, neutral.
    fp = M.fixed_points(M.quadratic(0.25), (-1.0, 2.0))
    np.testing.assert_allclose(fp.location, [0.5], atol=1e-7)
    assert fp.kind == ("neutral",)
    # x² + 0.3 > x everywhere (min of f(x) − x is 0.05): no fixed point, none invented.
    assert M.fixed_points(M.quadratic(0.3), (-1.0, 2.0)).location.shape == (0,)


def test_fixed_points_under_vmap_jit_and_grad(x64):
    cs = jnp.array([0.0, 0.15, 0.2])
    out = jax.jit(jax.vmap(lambda c: M.fixed_points(M.quadratic(c), (0.0, 1.0))))(cs)
    chex.assert_shape(out.location, (3, 2001))
    root = np.sqrt(1 - 4 * np.asarray(cs))
    np.testing.assert_allclose(out.location[:, :2], np.stack([(1 - root) / 2, (1 + root) / 2], 1),
                               atol=1e-12)
    assert np.all(np.isnan(out.location[:, 2:]))
    np.testing.assert_array_equal(out.kind[:, :3], [[0, 2, -1]] * 3)
    # Implicit differentiation: d/dc (1 ∓ √(1 − 4c))/2 = ±1/√(1 − 4c).
    sink = jax.grad(lambda c: M.fixed_points(M.quadratic(c), (0.0, 1.0)).location[0])(0.15)
    np.testing.assert_allclose(sink, 1 / SQRT04, rtol=1e-10)
    # and the 2-cycle's multiplier −r² + 2r + 4 has derivative 2 − 2r
    dm = jax.grad(lambda r: M.periodic_orbits(M.logistic(r), 2, (0.0, 1.0)).multiplier[0])(3.2)
    np.testing.assert_allclose(dm, 2 - 2 * 3.2, rtol=1e-8)


# ------------------------------------------------------------------------------------------
# Orbits, Lyapunov exponents, bifurcation


def test_iterate_vmaps_over_parameters_and_vector_maps():
    rs = jnp.array([2.8, 3.2, 3.9])
    want = np.stack([logistic_np(r, 0.3, 40) for r in np.asarray(rs)])
    closure = jax.vmap(lambda r: M.iterate(lambda x: r * x * (1 - x), 0.3, 40))(rs)
    family = jax.jit(jax.vmap(lambda r: M.iterate(M.logistic(r), 0.3, 40)))(rs)
    np.testing.assert_allclose(closure, want, atol=2e-5)
    np.testing.assert_allclose(family, want, atol=2e-5)
    A = np.array([[0.9, 0.3], [-0.2, 0.7]], np.float32)
    xs = M.iterate(lambda x: jnp.asarray(A) @ x, np.array([1.0, -1.0], np.float32), 12)
    chex.assert_shape(xs, (13, 2))
    np.testing.assert_allclose(xs[12], np.linalg.matrix_power(A, 12) @ [1.0, -1.0], rtol=1e-5)


def test_iterate_gradient_matches_finite_differences(x64):
    g = jax.grad(lambda r: M.iterate(M.logistic(r), 0.3, 8)[-1])(3.3)
    fd = (logistic_np(3.3 + 1e-6, 0.3, 8, np.float64)[-1]
          - logistic_np(3.3 - 1e-6, 0.3, 8, np.float64)[-1]) / 2e-6
    np.testing.assert_allclose(g, fd, rtol=1e-7)


def test_lyapunov_exponents(x64):
    # r = 4: ln 2 (the invariant density 1/(π√(x(1−x))) gives E log|4 − 8x| = ln 2).
    lam4 = M.lyapunov_exponent(M.logistic(4.0), 0.2, 100_000)
    assert abs(float(lam4) - math.log(2)) < 0.01
    # r = 3.5: the orbit settles on the 4-cycle, λ = ln|∏ f′(x_k)| / 4 over the reference cycle.
    lam35 = M.lyapunov_exponent(M.logistic(3.5), 0.2, 4000, discard=1000)
    np.testing.assert_allclose(lam35, np.log(abs(np.prod(3.5 * (1 - 2 * CYCLE4)))) / 4, atol=2e-3)


def test_lyapunov_r4_float32():
    lam = M.lyapunov_exponent(M.logistic(4.0), 0.2, 100_000)
    assert lam.dtype == jnp.float32 and abs(float(lam) - math.log(2)) < 0.01


def test_bifurcation_rows_match_closed_forms():
    rs = jnp.array([2.8, 3.2, 3.5, 3.83])
    tail = M.bifurcation(M.logistic, rs, 0.2, 2000, 12)
    chex.assert_shape(tail, (4, 12))
    np.testing.assert_allclose(tail[0], 1 - 1 / 2.8, atol=1e-5)  # the sink 1 − 1/r
    np.testing.assert_allclose(np.unique(np.round(np.asarray(tail[1]), 5)), two_cycle(3.2)[0],
                               atol=2e-5)
    np.testing.assert_allclose(np.unique(np.round(np.asarray(tail[2]), 4)), CYCLE4, atol=2e-4)
    assert len(np.unique(np.round(np.asarray(tail[3]), 4))) == 3  # the period-3 window
    # The last iterate is x_steps of the plain orbit.
    np.testing.assert_allclose(tail[:, -1], [logistic_np(r, 0.2, 2000)[-1] for r in [2.8, 3.2, 3.5]]
                               + [float(M.iterate(M.logistic(3.83), 0.2, 2000)[-1])], atol=1e-4)


# ------------------------------------------------------------------------------------------
# Mandelbrot


def test_escape_time_membership_and_hand_computed_counts():
    c = jnp.array([0, -1, -2, 1j, 1, 0.5 + 0.5j, -2.1])
    # 1: z = 1, 2, 5 (first |z| > 2 at n = 3); 0.5+0.5i: |z_n| = .71, 1.12, 1.52, 1.71, 3.55
    # (n = 5); −2.1: n = 1. Count = first escape index − 1; max_iter for the set.
    np.testing.assert_array_equal(M.escape_time(c, 500), [500, 500, 500, 500, 2, 4, 0])


def test_escape_time_matches_numpy_loop(x64):
    rng = np.random.default_rng(0)
    c = rng.uniform(-2.2, 0.7, 400) + 1j * rng.uniform(-1.3, 1.3, 400)
    want = np.zeros(c.shape, int)
    z = np.zeros_like(c)
    alive = np.ones(c.shape, bool)
    for _ in range(60):
        z = np.where(alive, z * z + c, z)
        alive &= np.abs(z) <= 2
        want += alive
    got = np.asarray(M.escape_time(c, 60))
    assert np.mean(got == want) >= 0.99  # rounding may flip a boundary point or two
    assert 0.1 < np.mean(want == 60) < 0.5


def test_mandelbrot_grid_layout():
    re, im, shape = (-1.7, 0.4), (-0.35, 1.1), (7, 9)
    img = np.asarray(M.mandelbrot(re, im, shape, 60))
    chex.assert_shape(img, shape)
    cr = re[0] + (np.arange(9) + 0.5) * ((re[1] - re[0]) / 9)  # cell centres; row 0 = lowest Im
    ci = im[0] + (np.arange(7) + 0.5) * ((im[1] - im[0]) / 7)
    want = np.asarray(M.escape_time(cr[None, :] + 1j * ci[:, None], 60))
    # A transposed or flipped layout disagrees on most cells; rounding of c may flip a boundary one.
    # (measured: 63/63 equal; flipped rows or columns would agree on 24% or 30%)
    assert np.mean(img == want) >= 0.95


def test_mandelbrot_area_falls_toward_known_value():
    # Cheap grid (250 × 500 half plane): measured 1.5882, 1.5258, 1.5110 at 50, 200, 1000
    # iterations; the known area is 1.5066, tolerance 0.015 for this coarse grid.
    areas = [float(M.mandelbrot_area((250, 500), n)) for n in (50, 200, 1000)]
    assert areas[0] > areas[1] > areas[2] > 1.5066 - 0.015
    assert abs(areas[2] - 1.5066) < 0.015


@pytest.mark.slow
def test_mandelbrot_area_2000_by_1000_grid():
    # measured 1.5104 (float32; 4 to 7 s on a 2-core CPU, depending on load)
    assert abs(float(M.mandelbrot_area((1000, 2000), 1000)) - 1.5066) < 0.01


# ------------------------------------------------------------------------------------------
# Bad input and non-finite results


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: M.fixed_points(M.quadratic(0.15), (1.0, 0.0)), ValueError, r"interval.*a < b.*1\.0"),
        (lambda: M.fixed_points(M.quadratic(0.15), 1.0), TypeError, "interval: expected a pair"),
        (lambda: M.periodic_orbits(M.logistic(3.5), 0, (0, 1)), ValueError, "period: .*got 0"),
        (lambda: M.iterate(M.logistic(3.5), 0.2, 0), ValueError, "steps: .*got 0"),
        (lambda: M.iterate("logistic", 0.2, 5), TypeError, "f: expected a map"),
        (lambda: M.iterate(lambda x: jnp.stack([x, x]), 0.2, 5), ValueError, "f: .*shape"),
        (lambda: M.lyapunov_exponent(M.logistic(4.0), jnp.ones(2), 10), ValueError, "x0: .*scalar"),
        (lambda: M.bifurcation(M.logistic, jnp.ones(3), 0.2, 10, 12), ValueError, "keep: .*11"),
        (lambda: M.logistic("3.5"), TypeError, "r: expected a real number"),
        (lambda: M.mandelbrot(shape=(0, 10)), ValueError, r"shape\[0\]"),
        (lambda: M.mandelbrot_area(re_range=(-1.5, 0.5)), ValueError, "re_range: .*contains"),
        (lambda: M.escape_time(0.3, max_iter=2.5), TypeError, "max_iter"),
    ],
)
def test_bad_input_names_the_argument(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_escaping_orbit_warns():
    with pytest.warns(rd.NumericalWarning, match="escapes to infinity"):
        xs = M.iterate(M.quadratic(1.0), 0.0, 200)  # 0, 1, 2, 5, 26, ... overflows
    assert not np.isfinite(xs[-1])
    with pytest.warns(rd.NumericalWarning, match="orbits of 1 of 2 parameters"):
        M.bifurcation(M.quadratic, jnp.array([0.1, 1.0]), 0.0, 200, 5)


# ------------------------------------------------------------------------------------------
# Plots and the command line


def test_plots_render_png_with_labelled_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rnn_dynamics import _plots_maps as plots

    f = M.quadratic(0.15)
    rs = jnp.linspace(2.5, 4.0, 50)
    fig, axes = plt.subplots(2, 2, figsize=(8, 8))
    figs = [
        plots.cobweb(f, M.iterate(f, 0.7, 20), interval=(0, 1), ax=axes[0, 0]),
        plots.phase(f, (0, 1), ax=axes[0, 1]),
        plots.bifurcation(rs, M.bifurcation(M.logistic, rs, 0.2, 200, 20), ax=axes[1, 0]),
        plots.mandelbrot(M.mandelbrot(shape=(40, 40), max_iter=30), ax=axes[1, 1]),
    ]
    assert all(g is fig for g in figs)
    for ax in axes.flat:
        assert ax.get_xlabel() and ax.get_ylabel()
    # The phase plot marks the sink and the source at (x*, x*).
    marks = {c.get_label(): c.get_offsets() for c in axes[0, 1].collections}
    np.testing.assert_allclose(marks["sink"], [[QUAD_FP[0]] * 2], atol=1e-6)
    np.testing.assert_allclose(marks["source"], [[QUAD_FP[1]] * 2], atol=1e-6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    plt.close("all")


def _maps_parser():
    from rnn_dynamics._cli_maps import register

    p = argparse.ArgumentParser(prog="rnn-dynamics")
    register(p.add_subparsers(dest="command"))
    return p


def test_cli_maps_prints_tables_and_writes_plots(tmp_path, capsys):
    args = _maps_parser().parse_args(
        ["maps", "--map", "logistic", "--param", "3.5", "--x0", "0.2", "--steps", "40",
         "--interval", "0", "1", "--out", str(tmp_path)]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "0.000000      3.500000  source" in out
    assert "0.714286     -1.500000  source" in out
    assert "cycles of period 3 (0)" in out
    cycle = next(line for line in out.splitlines() if "sink" in line and "," in line)
    np.testing.assert_allclose(sorted(float(v) for v in cycle.split("sink")[1].split(",")),
                               CYCLE4, atol=1e-4)
    for name in ("cobweb.png", "phase.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_cli_maps_bad_interval(tmp_path, capsys):
    args = _maps_parser().parse_args(["maps", "--interval", "1", "0", "--out", str(tmp_path)])
    assert args.func(args) == 2
    assert "--interval: expected (a, b) with a < b" in capsys.readouterr().err
