"""Basins and sensitivity maps against a plain numpy loop, closed-form label maps, and the
shipped example's numbers; the ``basins`` command through its own parser."""
from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np
import pytest

import rnn_dynamics as rd

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def example():
    ex = rd.basins_example()
    return ex, rd.basins(ex.cell, ex.params, ex.grid, ex.steps)


def _numpy_run(W, h, steps):
    """h_T and ‖∂h_T/∂h_1‖₂ of h ← tanh(W h) by a plain float64 loop over steps."""
    P = np.eye(len(h))
    for _ in range(steps):
        h = np.tanh(W @ h)
        P = np.diag(1 - h**2) @ W @ P
    return h, np.linalg.norm(P, 2)


def test_example_vanishes_inside_and_explodes_at_the_boundary(example):
    ex, res = example
    c = rd.basin_contrast(res)
    assert c["deep"] < 1e-3 and c["boundary"] > 1, c
    assert c["n_deep"] > 1000 and c["n_boundary"] > 100
    # two attractors, each a stable fixed point h = tanh(W h), at ±p (W is odd-symmetric)
    W = np.asarray(ex.params["W"], np.float64)
    att = res.attractors
    assert att.shape == (2, 2)
    np.testing.assert_allclose(np.tanh(att @ W.T), att, atol=1e-5)
    np.testing.assert_allclose(att[0], -att[1], atol=1e-5)
    for p in att:
        assert np.all(np.abs(np.linalg.eigvals(np.diag(1 - p**2) @ W)) < 1)
    # odd symmetry of the map: h_1 and -h_1 end at opposite attractors
    lab = res.labels
    both = (lab >= 0) & (lab[::-1, ::-1] >= 0)
    assert both.mean() > 0.95
    np.testing.assert_array_equal(lab[both], 1 - lab[::-1, ::-1][both])


def test_final_states_and_norms_match_a_numpy_loop(example):
    ex, res = example
    W = np.asarray(ex.params["W"], np.float64)
    dist = rd.basin_boundary_distance(res.labels)
    rng = np.random.default_rng(0)
    picks = [tuple(rng.integers(0, 201, 2)) for _ in range(4)]
    picks += [tuple(np.argwhere(dist == 1)[k]) for k in (0, 200)]  # two next to the boundary
    for i, j in picks:
        h1 = np.array([res.a[i], res.b[j]])
        hT, norm = _numpy_run(W, h1, ex.steps)
        np.testing.assert_allclose(res.final_states[i, j], hT, atol=1e-5)
        np.testing.assert_allclose(res.log10_sensitivity[i, j], np.log10(norm), atol=2e-3)


def test_boundary_distance_closed_form():
    lab = np.zeros((4, 6), int)
    lab[:, 3:] = 1
    d = rd.basin_boundary_distance(lab)
    np.testing.assert_array_equal(d, np.tile([3, 2, 1, 1, 2, 3], (4, 1)))
    assert np.all(np.isinf(rd.basin_boundary_distance(np.zeros((3, 3), int))))


def test_slice_of_a_larger_state_and_a_plain_step_function():
    # a third unit that decays on its own does not move the basins of the first two
    ex = rd.basins_example()
    W3 = np.zeros((3, 3))
    W3[:2, :2] = np.asarray(ex.params["W"])
    W3[2, 2] = 0.2
    g = np.linspace(-2, 2, 21)
    two = rd.basins(ex.cell, ex.params, (g, g), ex.steps, radius=0.07)
    step = lambda params, h: jnp.tanh(params @ h)
    three = rd.basins(step, jnp.asarray(W3, jnp.float32), (g, g), ex.steps, base=np.zeros(3),
                      directions=np.eye(3)[:2], radius=0.07)
    assert three.attractors.shape == (2, 3)
    np.testing.assert_allclose(three.attractors[:, 2], 0.0, atol=1e-6)
    # same labels up to the order of the attractors
    perm = np.argmin(np.linalg.norm(three.attractors[:, None, :2] - two.attractors[None], axis=-1), axis=1)
    mapped = np.where(three.labels >= 0, perm[three.labels], -1)
    np.testing.assert_array_equal(mapped, two.labels)
    np.testing.assert_allclose(three.log10_sensitivity, two.log10_sensitivity, atol=1e-3)


def test_bad_input_is_explained():
    ex = rd.basins_example()
    with pytest.raises(TypeError, match="grid: expected a pair"):
        rd.basins(ex.cell, ex.params, 5, 10)
    with pytest.raises(ValueError, match=r"directions: expected shape \(2, 2\)"):
        rd.basins(ex.cell, ex.params, ex.grid, 10, directions=np.eye(3))
    with pytest.raises(ValueError, match="steps"):
        rd.basins(ex.cell, ex.params, ex.grid, 0)
    with pytest.raises(ValueError, match="base"):
        rd.basins(lambda p, h: h, None, ex.grid, 10)


def test_plot_and_command(example, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from rnn_dynamics import _cli_basins, _plots_dynamics as plots

    _, res = example
    fig = plots.basins(res)
    fig.savefig(tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 1000
    assert fig.axes[0].get_xlabel() == "$h[0]$"

    parser = argparse.ArgumentParser()
    _cli_basins.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["basins", "--grid", "41", "--steps", "18", "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    data = np.load(tmp_path / "o" / "basins.npz")
    assert data["labels"].shape == (41, 41) and data["attractors"].shape == (2, 2)
    assert (tmp_path / "o" / "basins.png").stat().st_size > 1000
    bad = parser.parse_args(["basins", "--grid", "2"])
    assert bad.func(bad) == 2
