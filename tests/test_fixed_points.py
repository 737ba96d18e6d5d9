"""Fixed points against closed forms: a linear cell, one tanh unit, and 3ⁿ points of tanh(a·h)."""
from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_dynamics as rd
from conftest import CELL_FACTORIES

pytestmark = pytest.mark.usefixtures("fast_compile")

A = 2.0  # recurrent weight of the tanh unit: fixed points 0 and ±h*


def _tanh_root(a, iters=200):
    """Positive root of h = tanh(a h), a > 1, by bisection in numpy float64."""
    lo, hi = 1e-9, 1.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if np.tanh(a * mid) - mid > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _tanh_cell(n, a=A):
    return rd.cells.vanilla(1, n, "tanh", recurrent_init=rd.init.identity(a), bias=False)


def test_linear_cell_single_point_and_eigen(x64):
    cell = rd.cells.linear(3, 5, gain=0.9, bias_scale=0.5)
    p = cell.init(jax.random.key(1))
    x = jnp.array([0.3, -1.0, 0.7])
    cand = jax.random.normal(jax.random.key(2), (16, 5))
    fps = rd.fixed_points(cell, p, x, cand, steps=0, newton_steps=3, eigenvectors=True)
    W, U, b = (np.asarray(p[k]) for k in ("W", "U", "b"))
    expected = np.linalg.solve(np.eye(5) - W, U @ np.asarray(x) + b)
    assert fps.summary["unique"] == 1, fps.summary
    np.testing.assert_allclose(fps.points[0], expected, rtol=1e-10, atol=1e-12)
    ev = np.linalg.eigvals(W)
    np.testing.assert_allclose(np.sort_complex(fps.eigenvalues[0]), np.sort_complex(ev), atol=1e-10)
    n_out = int(np.sum(np.abs(ev) > 1))
    assert fps.kind[0] == ("stable" if n_out == 0 else "unstable" if n_out == 5 else "saddle")
    # eigenvectors: J v = λ v (right), vᴴ J = λ vᴴ (left)
    lam, R, L = fps.eigenvalues[0], fps.right_vectors[0], fps.left_vectors[0]
    np.testing.assert_allclose(W @ R, R * lam, atol=1e-10)
    np.testing.assert_allclose(L.conj().T @ W, lam[:, None] * L.conj().T, atol=1e-10)


def test_one_tanh_unit_three_points():
    cell = _tanh_cell(1)
    p = cell.init(jax.random.key(0))
    cand = jnp.linspace(-1.5, 1.5, 31)[:, None]
    fps = rd.fixed_points(cell, p, None, cand, steps=300)
    h = _tanh_root(A)
    order = np.argsort(fps.points[:, 0])
    np.testing.assert_allclose(fps.points[order, 0], [-h, 0.0, h], atol=1e-6)
    assert list(fps.kind[order]) == ["stable", "unstable", "stable"]
    slope = A * (1 - h**2)  # ∂/∂h tanh(a h) at ±h*; a at 0
    np.testing.assert_allclose(fps.eigenvalues[order, 0].real, [slope, A, slope], rtol=1e-5)
    s = fps.summary
    assert (s["candidates"], s["unique"], s["dropped"]["duplicate"]) == (31, 3, 28)
    assert list(fps.candidate_status).count("kept") == 3


def test_tanh_identity_two_units_all_nine_points():
    cell = _tanh_cell(2)
    p = cell.init(jax.random.key(0))
    g = jnp.linspace(-1.3, 1.3, 15)
    cand = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    fps = rd.fixed_points(cell, p, None, cand, steps=300)
    h = _tanh_root(A)
    expected = np.array(list(itertools.product([-h, 0.0, h], repeat=2)))
    assert fps.points.shape == (9, 2)
    found = fps.points[np.lexsort(np.round(fps.points, 4).T[::-1])]
    np.testing.assert_allclose(found, expected, atol=1e-6)
    counts = {k: int(np.sum(fps.kind == k)) for k in ("stable", "saddle", "unstable")}
    assert counts == {"stable": 4, "saddle": 4, "unstable": 1}
    # a unit at 0 has eigenvalue a, one at ±h* has a(1 - h*²): the kind follows from the zeros
    zeros = np.sum(np.abs(fps.points) < 1e-6, axis=1)
    assert np.all(fps.kind[zeros == 0] == "stable") and np.all(fps.kind[zeros == 2] == "unstable")


def test_slow_points_kept_only_on_request():
    # h ← h + 1e-3 (linear univariate, w = 1): no fixed point; q = ½·1e-6 everywhere.
    cell = rd.cells.univariate(w=1.0, b=1e-3)
    p = cell.init(None)
    cand = jnp.array([[-1.0], [0.0], [1.0]])
    none = rd.fixed_points(cell, p, None, cand, steps=10, newton_steps=1)
    assert none.points.shape == (0, 1)
    assert none.summary["dropped"]["not converged"] == 3
    slow = rd.fixed_points(cell, p, None, cand, steps=10, newton_steps=1, keep_slow=True)
    assert slow.points.shape == (3, 1) and slow.slow.all()
    np.testing.assert_allclose(slow.q, 0.5e-6, rtol=1e-3)


def test_outlier_dropped():
    # linear unit h ← 0.5 h + 10: the fixed point 20 is far from candidates in [-0.1, 0.1]
    cell = rd.cells.univariate(w=0.5, b=10.0)
    p = cell.init(None)
    cand = jnp.linspace(-0.1, 0.1, 5)[:, None]
    fps = rd.fixed_points(cell, p, None, cand, steps=0, newton_steps=2)
    assert fps.summary["dropped"]["outlier"] == 5 and fps.points.shape == (0, 1)
    kept = rd.fixed_points(cell, p, None, cand, steps=0, newton_steps=2, outlier_scale=None)
    np.testing.assert_allclose(kept.points[:, 0], [20.0], rtol=1e-6)


SMOKE = [c for c in CELL_FACTORIES if c[0] in ("gru", "lstm", "stack", "flax-LSTMCell")]


@pytest.mark.parametrize("name, make", SMOKE, ids=[c[0] for c in SMOKE])
def test_points_are_fixed_for_gated_stacked_and_flax_cells(name, make):
    cell = make()
    p = cell.init(jax.random.key(3))
    x = 0.5 * jax.random.normal(jax.random.key(4), (cell.input_size,))
    cand = 0.5 * jax.random.normal(jax.random.key(5), (64, cell.state_size))
    fps = rd.fixed_points(cell, p, x, cand, steps=200)
    assert fps.summary["unique"] >= 1, fps.summary
    F = jax.vmap(lambda h: cell.step(p, h, x))(jnp.asarray(fps.points))
    resid = np.linalg.norm(np.asarray(F) - fps.points, axis=1)
    tol = 0.5 * cell.state_size * (100 * np.finfo(np.float32).eps) ** 2
    assert np.all(0.5 * resid**2 < tol), resid
    s = fps.summary
    assert s["unique"] + sum(s["dropped"].values()) == s["candidates"] == 64


def test_candidates_deterministic_and_composes_with_jit():
    cell = _tanh_cell(3)
    p = cell.init(jax.random.key(0))
    c1 = rd.fixed_point_candidates(cell, p, jax.random.key(7), 8, steps=5)
    c2 = rd.fixed_point_candidates(cell, p, jax.random.key(7), 8, steps=5)
    chex.assert_shape(c1, (8, 3))
    np.testing.assert_array_equal(c1, c2)
    f = jax.jit(lambda pp, c: rd.minimize_speed(cell, pp, None, c, steps=50, newton_steps=2))
    H, q = f(p, c1)  # under the user's jit: q must still be the speed of the returned states
    W = np.asarray(p["W"], np.float64)
    speed = lambda h: 0.5 * np.sum((np.tanh(h @ W.T) - h) ** 2, axis=1)
    np.testing.assert_allclose(q, speed(np.asarray(H, np.float64)), rtol=1e-4, atol=1e-12)
    assert np.all(q < 1e-3 * speed(np.asarray(c1, np.float64)))  # and it went downhill


def test_bad_input_is_explained():
    cell = _tanh_cell(2)
    p = cell.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"candidates: expected shape \(C, 2\)"):
        rd.fixed_points(cell, p, None, jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"x: expected one constant input of shape \(1,\)"):
        rd.fixed_points(cell, p, jnp.zeros(2), jnp.zeros((4, 2)))
    with pytest.raises(TypeError, match="cell"):
        rd.fixed_points("gru", p, None, jnp.zeros((4, 2)))


def test_eigenvalue_plot_renders(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from rnn_dynamics import _plots_dynamics as plots

    cell = _tanh_cell(2)
    p = cell.init(jax.random.key(0))
    g = jnp.linspace(-1.3, 1.3, 7)
    fps = rd.fixed_points(cell, p, None, jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2), steps=300)
    fig = plots.fixed_points(fps)
    fig.savefig(tmp_path / "eig.png")
    assert (tmp_path / "eig.png").stat().st_size > 1000
    assert fig.axes[0].get_xlabel() == "Re λ"
