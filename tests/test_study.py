"""Seeds: vmapped/chunked spectra against a loop over seeds, the documented key split, theory."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_dynamics as rd

KEY = jax.random.key(42)
CELL = rd.cells.vanilla(3, 6, "tanh", gain=1.2, bias_scale=0.2)
S, T = 5, 20


def _loop_over_seeds(cell, key, seeds, steps, **kw):
    """The same study, one seed at a time through the public one-seed functions."""
    logs, svs = [], []
    for k in jax.random.split(key, seeds):
        p, h1, xs = rd.draw_seed(cell, k, steps, **kw)
        logs.append(rd.jacobian_norms(cell, p, h1, xs, log10=True))
        svs.append(rd.singular_values(rd.jacobian(cell, p, h1, xs)))
    return np.stack(logs), np.stack(svs)


@pytest.mark.parametrize("batch_size", [1, 2, S])
def test_spectra_equals_a_loop_over_seeds(batch_size):
    out = rd.spectra(CELL, KEY, seeds=S, steps=T, h1=0.3, batch_size=batch_size)
    logs, svs = _loop_over_seeds(CELL, KEY, S, T, h1=0.3)
    assert out.log10_norms.shape == (S, T - 1) and out.singular_values.shape == (S, 6)
    np.testing.assert_allclose(out.log10_norms, logs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.singular_values, svs, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out.log10_norm, np.log10(svs[:, 0]), atol=1e-4)


def test_draw_seed_follows_the_documented_key_split():
    i = 3
    key_i = jax.random.split(KEY, S)[i]
    k_params, k_inputs, k_h1 = jax.random.split(key_i, 3)
    p, h1, xs = rd.draw_seed(CELL, key_i, T, input_scale=0.7, h1=0.3)
    ref = CELL.init(k_params)
    np.testing.assert_array_equal(p["W"], ref["W"])
    np.testing.assert_array_equal(xs, 0.7 * jax.random.normal(k_inputs, (T - 1, 3)))
    np.testing.assert_array_equal(h1, 0.3 * jax.random.normal(k_h1, (6,)))
    # the default h1 is the cell's initial state
    np.testing.assert_array_equal(rd.draw_seed(CELL, key_i, T)[1], CELL.initial_state(ref))


def test_same_key_same_bits_other_key_other_numbers():
    a = rd.spectra(CELL, KEY, seeds=S, steps=T)
    b = rd.spectra(CELL, KEY, seeds=S, steps=T)
    c = rd.spectra(CELL, jax.random.key(7), seeds=S, steps=T)
    np.testing.assert_array_equal(a.log10_norms, b.log10_norms)
    np.testing.assert_array_equal(a.singular_values, b.singular_values)
    assert not np.allclose(a.log10_norms, c.log10_norms)


def test_h1_forms():
    fixed = jnp.linspace(-1, 1, 6)
    per_seed = jax.random.normal(KEY, (S, 6))
    a = rd.spectra(CELL, KEY, seeds=S, steps=T, h1=fixed)
    b = rd.spectra(CELL, KEY, seeds=S, steps=T, h1=per_seed)
    for i, k in enumerate(jax.random.split(KEY, S)):
        p, _, xs = rd.draw_seed(CELL, k, T)
        np.testing.assert_allclose(
            a.log10_norms[i], rd.jacobian_norms(CELL, p, fixed, xs, log10=True), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            b.log10_norms[i], rd.jacobian_norms(CELL, p, per_seed[i], xs, log10=True), rtol=1e-5, atol=1e-5)


def test_curve_only_and_dense_only():
    both = rd.spectra(CELL, KEY, seeds=S, steps=T)
    curve = rd.spectra(CELL, KEY, seeds=S, steps=T, dense=False)
    dense = rd.spectra(CELL, KEY, seeds=S, steps=T, curve=False, method="jacrev")
    assert curve.singular_values is None and dense.log10_norms is None
    np.testing.assert_allclose(curve.log10_norms, both.log10_norms, rtol=1e-6)
    np.testing.assert_allclose(dense.singular_values, both.singular_values, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="growth_rate needs the curve"):
        _ = dense.growth_rate
    with pytest.raises(ValueError, match="at least one"):
        rd.spectra(CELL, KEY, seeds=S, steps=T, curve=False, dense=False)


def test_spectra_compiles_once_for_new_values():
    traces = []

    def step(params, h, x):
        traces.append(1)
        return CELL.step(params, h, x)

    cell = CELL._replace(step=step)
    rd.spectra(cell, KEY, seeds=S, steps=T, input_scale=1.0, h1=0.5)
    n = len(traces)
    rd.spectra(cell, jax.random.key(1), seeds=S, steps=T, input_scale=0.5, h1=0.25)
    assert n > 0 and len(traces) == n


def test_subcritical_growth_rate_is_the_spectral_radius():
    """h_t = tanh(W h_{t-1}), g < 1, no input: h → 0 and ‖W^k‖^(1/k) → ρ(W) (Gelfand)."""
    cell = rd.cells.vanilla(1, 16, "tanh", gain=0.6)
    out = rd.spectra(cell, KEY, seeds=6, steps=400, input_scale=0.0, h1=0.1, dense=False)
    keys = jax.random.split(KEY, 6)
    rho = [np.abs(np.linalg.eigvals(np.asarray(cell.init(jax.random.split(k, 3)[0])["W"], float))).max()
           for k in keys]
    np.testing.assert_allclose(out.growth_rate, rho, rtol=0.03)


def test_chaotic_exponent_matches_mean_field_theory():
    """g > 1, no input: λ_max = ½ ln(g² E[φ'(√q* z)²]), q* = g² E[φ(√q* z)²] (Poole et al. 2016).

    Theory from Gauss-Hermite quadrature; the finite-size estimate (n = 128) sits a few percent
    below it (measured: 0.290 vs 0.312 nats/step at g = 3).
    """
    g = 3.0
    z, w = np.polynomial.hermite_e.hermegauss(101)
    w = w / w.sum()
    q = 1.0
    for _ in range(500):
        q = g**2 * np.sum(w * np.tanh(np.sqrt(q) * z) ** 2)
    lam = 0.5 * np.log(g**2 * np.sum(w * (1 - np.tanh(np.sqrt(q) * z) ** 2) ** 2))
    assert lam == pytest.approx(0.3119, abs=1e-3)
    cell = rd.cells.vanilla(1, 128, "tanh", gain=g)
    out = rd.spectra(cell, KEY, seeds=4, steps=601, input_scale=0.0, h1=1.0, dense=False)
    logs = np.asarray(out.log10_norms, float) * np.log(10)
    est = (logs[:, -1] - logs[:, 99]) / 500  # skip the transient
    assert np.median(est) == pytest.approx(lam, rel=0.12)


def test_default_batch_size_is_a_valid_chunk():
    for n in (4, 32, 128, 1024):
        for seeds in (1, 7, 64):
            b = rd.default_batch_size(n, seeds)
            assert 1 <= b <= seeds
