"""Every analysis composes with jit, vmap and grad; gradients equal central finite differences;
the norm curve is exact on near-degenerate spectra."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_dynamics as rd
from conftest import x64_enabled


def _fd_check(f, params, key, eps=1e-6, rtol=1e-5):
    """⟨∇f, d⟩ from jax.grad against a central difference along a random direction d."""
    g = jax.grad(f)(params)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    d = jax.tree_util.tree_unflatten(tree, [jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])
    shift = lambda s: jax.tree_util.tree_map(lambda p, v: p + s * v, params, d)
    fd = (f(shift(eps)) - f(shift(-eps))) / (2 * eps)
    ad = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(d)))
    assert abs(float(fd)) > 1e-3  # a real slope, not 0 ≈ 0
    np.testing.assert_allclose(float(ad), float(fd), rtol=rtol)


def test_grad_of_log_norm_curve_matches_finite_differences():
    with x64_enabled():
        cell = rd.cells.vanilla(3, 6, "tanh", gain=1.3, bias_scale=0.2)
        p, h1, xs = rd.draw_seed(cell, jax.random.key(0), 15, h1=0.5)
        for svd in (True, False):
            f = lambda p: rd.jacobian_norms(cell, p, h1, xs, log10=True, svd=svd)[-1]
            _fd_check(f, p, jax.random.key(1))


def test_grad_of_dense_jacobian_spectral_norm_matches_finite_differences():
    with x64_enabled():
        cell = rd.cells.gru(2, 5, gain=1.5)
        p, h1, xs = rd.draw_seed(cell, jax.random.key(2), 10, h1=0.5)
        for method in rd.METHODS:
            f = lambda p: jnp.log(rd.spectral_norm(rd.jacobian(cell, p, h1, xs, method=method)))
            _fd_check(f, p, jax.random.key(3))


def test_grad_through_the_vanilla_kernel_matches_finite_differences():
    # rd.jacobian's default for a small vanilla cell is the cell's own kernel (one loop of
    # plain products with a transposed W laid out before it): reverse mode through it
    with x64_enabled():
        cell = rd.cells.vanilla(2, 5, "tanh", gain=1.4, bias_scale=0.3)
        p, h1, xs = rd.draw_seed(cell, jax.random.key(7), 11, h1=0.5)
        _fd_check(lambda p: jnp.log(rd.spectral_norm(rd.jacobian(cell, p, h1, xs))), p, jax.random.key(8))


def test_grad_of_spectra_through_a_function_that_builds_the_params():
    with x64_enabled():
        key = jax.random.key(4)

        def f(g):
            return rd.spectra(rd.cells.vanilla(2, 6, gain=g), key, seeds=3, steps=12).log10_norm.mean()

        g0, eps = 1.4, 1e-6
        fd = (f(g0 + eps) - f(g0 - eps)) / (2 * eps)
        ad = jax.grad(f)(g0)
        assert abs(float(fd)) > 0.1
        np.testing.assert_allclose(float(ad), float(fd), rtol=1e-5)
        # d/dg of log10‖W^(T-1)‖ for a linear cell is exactly (T-1)/(g ln 10): W scales with g
        lin = lambda g: rd.spectra(rd.cells.linear(2, 6, gain=g), key, seeds=2, steps=12, input_scale=0.0).log10_norm.mean()
        np.testing.assert_allclose(float(jax.grad(lin)(g0)), 11 / (g0 * np.log(10)), rtol=1e-10)


# ---------------------------------------------------------------- jit and vmap of every analysis

CELL = rd.cells.lstm(2, 3)


def _batch(S=3, T=6):
    keys = jax.random.split(jax.random.key(5), S)
    params = jax.vmap(CELL.init)(keys)
    h1 = 0.3 * jax.random.normal(jax.random.key(6), (S, CELL.state_size))
    xs = jax.random.normal(jax.random.key(7), (S, T - 1, 2))
    return params, h1, xs


ANALYSES = {
    "rollout": lambda p, h, x: rd.rollout(CELL, p, h, x),
    "final_state": lambda p, h, x: rd.final_state(CELL, p, h, x),
    "jacobian-jacfwd": lambda p, h, x: rd.jacobian(CELL, p, h, x),
    "jacobian-jacrev": lambda p, h, x: rd.jacobian(CELL, p, h, x, method="jacrev"),
    "jacobian-product": lambda p, h, x: rd.jacobian(CELL, p, h, x, method="product"),
    "step_jacobians": lambda p, h, x: rd.step_jacobians(CELL, p, h, x),
    "jacobian_norms": lambda p, h, x: rd.jacobian_norms(CELL, p, h, x, log10=True),
    "spectral_norm": lambda p, h, x: rd.spectral_norm(rd.jacobian(CELL, p, h, x)),
    "singular_values": lambda p, h, x: rd.singular_values(rd.jacobian(CELL, p, h, x)),
    "jacobian_bound": lambda p, h, x: rd.jacobian_bound(rd.cells.vanilla(2, 3), {"W": p["Wh"][:3], "U": p["Wx"][:3], "b": p["b"][:3]}, jnp.arange(1, 4)),
    "spectra": lambda p, h, x: rd.spectra(CELL, jax.random.key(0), params=jax.tree_util.tree_map(lambda a: a[None], p), h1=h[None], xs=x[None]).log10_norms[0],
}


@pytest.mark.parametrize("name", list(ANALYSES))
def test_every_analysis_runs_under_jit_and_vmap_and_equals_a_loop(name):
    f = ANALYSES[name]
    params, h1, xs = _batch()
    loop = [np.asarray(f(jax.tree_util.tree_map(lambda a: a[i], params), h1[i], xs[i])) for i in range(3)]
    vm = jax.jit(jax.vmap(f))(params, h1, xs)
    np.testing.assert_allclose(np.asarray(vm), np.stack(loop), rtol=2e-5, atol=1e-6)


# ---------------------------------------------------------------- accuracy of the norm curve


def test_norm_is_exact_when_the_top_singular_values_nearly_coincide():
    with x64_enabled():
        n = 6
        rng = np.random.default_rng(0)
        U = np.linalg.qr(rng.normal(size=(n, n)))[0]
        V = np.linalg.qr(rng.normal(size=(n, n)))[0]
        s = np.array([1.0, 0.997, 0.9, 0.5, 0.3, 0.1])
        W = U @ np.diag(s) @ V.T
        cell = rd.cells.linear(1, n)
        p = {"W": jnp.asarray(W), "U": jnp.zeros((n, 1)), "b": jnp.zeros(n)}
        got = np.asarray(rd.jacobian_norms(cell, p, jnp.zeros(n), jnp.zeros((1, 1))))
        np.testing.assert_allclose(got, [1.0], rtol=1e-13)


def test_norm_curve_is_exact_on_a_near_orthogonal_network():
    with x64_enabled():
        n, T = 16, 100
        rng = np.random.default_rng(1)
        W = np.linalg.qr(rng.normal(size=(n, n)))[0] + 1e-3 * rng.normal(size=(n, n))
        cell = rd.cells.linear(1, n)
        p = {"W": jnp.asarray(W), "U": jnp.zeros((n, 1)), "b": jnp.zeros(n)}
        got = np.asarray(rd.jacobian_norms(cell, p, jnp.zeros(n), jnp.zeros((T - 1, 1))))
        P, want = np.eye(n), []
        for _ in range(T - 1):
            P = W @ P
            want.append(np.linalg.svd(P, compute_uv=False)[0])
        np.testing.assert_allclose(got, want, rtol=1e-11)
    # float32: the documented 1e-6 relative
    p32 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), p)
    got32 = np.asarray(rd.jacobian_norms(cell, p32, jnp.zeros(n), jnp.zeros((T - 1, 1))))
    np.testing.assert_allclose(got32, want, rtol=1e-5)
