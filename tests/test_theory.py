"""Closed forms in rd.theory: mean field, Newman's Gaussian products, linear cells.

Each is checked against published values (cited in each test), an exact special case, or an
independent numpy implementation (scipy's adaptive quadrature for the mean field).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_dynamics as rd


def test_gaussian_product_lyapunov_reference_values():
    """Newman (1986, Commun. Math. Phys. 103) exponents for σ = 1."""
    np.testing.assert_allclose(rd.theory.gaussian_product_lyapunov(2), [-0.2886, -0.9818], atol=1e-4)
    e10 = np.asarray(rd.theory.gaussian_product_lyapunov(10))
    np.testing.assert_allclose(e10[[0, 1, 2, -1]], [-0.0517, -0.1103, -0.1767, -1.7865], atol=1e-4)
    np.testing.assert_allclose(e10.sum(), -5.6478, atol=1e-3)
    e100 = np.asarray(rd.theory.gaussian_product_lyapunov(100))
    np.testing.assert_allclose(e100[[0, 1, 2, -1]], [-0.0050, -0.0101, -0.0152, -2.9378], atol=1e-4)
    # σ scales every exponent by ln σ
    np.testing.assert_allclose(rd.theory.gaussian_product_lyapunov(10, sigma=2.0), e10 + np.log(2.0), atol=1e-5)


def _quad_mean_field(phi, dphi, g, s2, iters=300):
    """Independent version: scipy's adaptive quadrature, plain fixed-point iteration."""
    from scipy.integrate import quad

    gauss = lambda f: quad(lambda z: f(z) * np.exp(-z * z / 2) / np.sqrt(2 * np.pi), -12, 12)[0]
    q = 1.0 + g * g
    for _ in range(iters):
        q = g * g * gauss(lambda z: phi(np.sqrt(q) * z) ** 2) + s2
    return q, g * g * gauss(lambda z: dphi(np.sqrt(q) * z) ** 2)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_mean_field_matches_adaptive_quadrature(activation):
    phi = {"tanh": np.tanh, "sigmoid": lambda a: 1 / (1 + np.exp(-a))}[activation]
    dphi = {"tanh": lambda a: 1 - np.tanh(a) ** 2, "sigmoid": lambda a: phi(a) * (1 - phi(a))}[activation]
    g, s2 = np.array([1.5, 3.0, 2.0]), np.array([0.0, 0.0, 0.5])
    mf = rd.theory.mean_field(activation, g, s2)
    for i in range(3):
        q, chi = _quad_mean_field(phi, dphi, g[i], s2[i])
        np.testing.assert_allclose(float(mf.q[i]), q, rtol=1e-4)
        np.testing.assert_allclose(float(mf.chi1[i]), chi, rtol=1e-4)
        np.testing.assert_allclose(float(mf.lyapunov[i]), 0.5 * np.log(chi), atol=1e-5)


def test_mean_field_edge_of_chaos_and_closed_forms():
    """tanh without input: q* = 0 and χ₁ = g² for g ≤ 1 (edge at g = 1); input moves the
    edge above 1 (χ₁ < 1 at g = 1.2 with σ_x² = 1). ReLU: χ₁ = g²/2; linear: χ₁ = g²,
    q* = σ²/(1 − g²)."""
    g = jnp.array([0.5, 0.9, 1.0])
    mf = rd.theory.mean_field("tanh", g)
    np.testing.assert_allclose(mf.q, 0.0, atol=1e-6)
    np.testing.assert_allclose(mf.chi1, g**2, rtol=1e-5)
    assert float(rd.theory.mean_field_lyapunov("tanh", 1.2)) > 0
    assert float(rd.theory.mean_field_lyapunov("tanh", 1.2, 1.0)) < 0
    np.testing.assert_allclose(rd.theory.mean_field("relu", 2.0).chi1, 2.0, rtol=1e-6)
    lin = rd.theory.mean_field("linear", 0.5, 0.3)
    np.testing.assert_allclose([lin.q, lin.chi1], [0.3 / 0.75, 0.25], rtol=1e-6)
    assert np.isinf(rd.theory.mean_field("linear", 2.0, 0.3).q)


def test_mean_field_is_jittable_and_vmappable_over_gain():
    g = jnp.linspace(0.5, 3.0, 6)
    f = jax.jit(jax.vmap(lambda x: rd.theory.mean_field_lyapunov("tanh", x)))
    np.testing.assert_allclose(f(g), rd.theory.mean_field_lyapunov("tanh", g), rtol=1e-5, atol=1e-6)


def test_linear_lyapunov_is_log_abs_eigenvalues():
    """A rotation by θ scaled by r has eigenvalues r·e^{±iθ}: both exponents ln r."""
    r, th = 0.7, 0.3
    W = r * jnp.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    np.testing.assert_allclose(rd.theory.linear_lyapunov(W), [np.log(r)] * 2, rtol=1e-5)
    D = jnp.diag(jnp.array([0.5, -3.0, 1.0]))
    np.testing.assert_allclose(rd.theory.linear_lyapunov(D), np.log([3.0, 1.0, 0.5]), atol=1e-6)


def test_theory_input_errors():
    with pytest.raises(ValueError, match="activation: expected one of"):
        rd.theory.mean_field("softplus", 1.0)
    with pytest.raises(ValueError, match="gain: expected finite non-negative"):
        rd.theory.mean_field("tanh", -1.0)
    with pytest.raises(ValueError, match="n: expected a positive int"):
        rd.theory.gaussian_product_lyapunov(0)
    with pytest.raises(ValueError, match="W: expected square"):
        rd.theory.linear_lyapunov(jnp.ones((2, 3)))
