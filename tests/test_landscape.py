"""Loss landscapes against closed forms, and Pascanu et al.'s single unit: the saddle-node
bifurcations in closed form, and the cliff with its gradient spike."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_dynamics as rd

pytestmark = pytest.mark.usefixtures("fast_compile")


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# Saddle-nodes of x = 5σ(x) + b: 5σ(1-σ) = 1, σ = (1 ± √0.2)/2, b = x - 5σ.
_S = (1 + np.sqrt(0.2)) / 2
B_LOW = np.log(_S / (1 - _S)) - 5 * _S          # -2.6556
B_HIGH = -np.log(_S / (1 - _S)) - 5 * (1 - _S)   # -2.3444


def test_bifurcation_matches_closed_form():
    cell = rd.cells.univariate(w=5.0, activation="sigmoid")
    b = jnp.linspace(-4.0, -1.0, 301)
    bif = rd.bifurcation(cell, cell.init(None), "b", b)
    bv = np.asarray(b, np.float64)
    count = np.asarray(bif.count)
    inside = (bv > B_LOW + 0.011) & (bv < B_HIGH - 0.011)
    outside = (bv < B_LOW - 0.011) | (bv > B_HIGH + 0.011)
    assert np.all(count[inside] == 3) and np.all(count[outside] == 1)
    pts = np.asarray(bif.points, np.float64)
    ok = np.isfinite(pts)
    resid = np.abs(5 * _sigmoid(pts) + bv[:, None] - pts)[ok]
    assert resid.max() < 1e-5
    slope = 5 * _sigmoid(pts) * (1 - _sigmoid(pts))
    np.testing.assert_array_equal(np.asarray(bif.stable)[ok], (slope < 1)[ok])
    # inside the bistable range: stable, unstable, stable (ascending)
    np.testing.assert_array_equal(np.asarray(bif.stable)[inside][:, :3], [[True, False, True]] * inside.sum())


def test_pascanu_cliff_gradient_spike():
    b = jnp.linspace(-4.0, 0.0, 2001)
    ls = rd.pascanu_cliff(b)
    gn = np.asarray(ls.grad_norm)
    assert gn.max() > 100 * np.median(gn), (gn.max(), np.median(gn))
    # the spike sits where the unstable fixed point crosses x_1 = 0.5: b = 0.5 - 5σ(0.5)
    b_jump = 0.5 - 5 * _sigmoid(0.5)
    assert abs(float(b[np.argmax(gn)]) - b_jump) < 0.005
    # the loss against a plain numpy loop, on both sides of the cliff
    idx = [0, 600, 680, 700, 1000, 2000]
    expected = [(_numpy_final(float(b[i])) - 1) ** 2 for i in idx]
    np.testing.assert_allclose(np.asarray(ls.loss)[idx], expected, rtol=1e-4)


def _numpy_final(b, w=5.0, x=0.5, steps=30):
    for _ in range(steps):
        x = w * _sigmoid(x) + b
    return x


def test_landscape_against_closed_form_with_paths():
    # L = (a - 1)² + 3·W[0,1]² + Σ c², params nested as a tuple of dicts
    params = ({"a": jnp.asarray(0.0), "W": jnp.ones((2, 2))}, {"c": jnp.array([0.5, -2.0])})

    def loss(p):
        return (p[0]["a"] - 1) ** 2 + 3 * p[0]["W"][0, 1] ** 2 + jnp.sum(p[1]["c"] ** 2)

    av, wv = jnp.linspace(-1, 2, 4), jnp.linspace(-0.5, 0.5, 3)
    ls = rd.landscape(loss, params, {"0/a": av, "0/W[0,1]": wv})
    A, Wg = np.meshgrid(np.asarray(av), np.asarray(wv), indexing="ij")
    np.testing.assert_allclose(ls.loss, (A - 1) ** 2 + 3 * Wg**2 + 4.25, rtol=1e-6)
    # full gradient: ∂a = 2(a-1), ∂W01 = 6 W01, ∂c = 2c, other W entries 0
    full = np.sqrt((2 * (A - 1)) ** 2 + (6 * Wg) ** 2 + 1.0 + 16.0)
    np.testing.assert_allclose(ls.grad_norm, full, rtol=1e-6)
    np.testing.assert_allclose(ls.grad[..., 0], 2 * (A - 1), atol=1e-6)
    np.testing.assert_allclose(ls.grad[..., 1], 6 * Wg, atol=1e-6)
    # batched lax.map gives the same numbers; so does the user's jit
    lb = rd.landscape(loss, params, {"0/a": av, "0/W[0,1]": wv}, batch_size=5)
    np.testing.assert_allclose(lb.loss, ls.loss, rtol=1e-6)
    jl = jax.jit(lambda v: rd.landscape(loss, params, {"0/a": v}).loss)(av)
    np.testing.assert_allclose(jl, (np.asarray(av) - 1) ** 2 + 3 + 4.25, rtol=1e-6)


def test_bad_sweep_is_explained():
    params = {"W": jnp.ones((2, 2)), "b": jnp.asarray(0.0)}
    loss = lambda p: jnp.sum(p["W"])
    with pytest.raises(ValueError, match=r"'W' is an array of shape \(2, 2\).*'W\[0,1\]'"):
        rd.landscape(loss, params, {"W": jnp.zeros(3)})
    with pytest.raises(ValueError, match="'v' does not name"):
        rd.landscape(loss, params, {"v": jnp.zeros(3)})
    with pytest.raises(ValueError, match="one or two entries"):
        rd.landscape(loss, params, {})
    with pytest.raises(ValueError, match="state_size 1"):
        cell = rd.cells.vanilla(1, 2)
        rd.bifurcation(cell, None, "b[0]", jnp.zeros(3))


def test_plots_render(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from rnn_dynamics import _plots_dynamics as plots

    ls = rd.pascanu_cliff(jnp.linspace(-4.0, 0.0, 201))
    fig = plots.landscape(ls)
    assert fig.axes[0].get_xlabel() == "b" and fig.axes[0].get_ylabel() == "loss"
    fig.savefig(tmp_path / "l1.png")
    loss2 = lambda p: (p["a"] - 1) ** 2 + p["b"] ** 4
    ls2 = rd.landscape(loss2, {"a": jnp.asarray(0.0), "b": jnp.asarray(0.0)},
                       {"a": jnp.linspace(-1, 1, 5), "b": jnp.linspace(-1, 1, 6)})
    fig2 = plots.landscape(ls2)
    fig2.savefig(tmp_path / "l2.png")
    cell = rd.cells.univariate(w=5.0, activation="sigmoid")
    fig3 = plots.fixed_point_branches(rd.bifurcation(cell, cell.init(None), "b", jnp.linspace(-4, 0, 41)))
    fig3.savefig(tmp_path / "bif.png")
    for f in ("l1.png", "l2.png", "bif.png"):
        assert (tmp_path / f).stat().st_size > 1000
