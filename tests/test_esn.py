"""Echo-state networks: the ridge readout against numpy, Mackey–Glass against persistence, and
the echo-state property (contraction bound, forgetting, failure for a large radius)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_dynamics as rd
from conftest import x64_enabled

pytestmark = pytest.mark.usefixtures("fast_compile")

KEY = jax.random.key(0)


@pytest.mark.parametrize("bias, vector", [(True, False), (False, False), (True, True)])
def test_ridge_readout_equals_the_normal_equations(bias, vector):
    rng = np.random.default_rng(0)
    S = rng.normal(size=(60, 7))
    Y = S @ rng.normal(size=(7, 3)) + 0.3 + 0.1 * rng.normal(size=(60, 3))
    if vector:
        Y = Y[:, 0]
    lam = 0.5
    X = np.hstack([S, np.ones((60, 1))]) if bias else S
    w = np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ Y)
    with x64_enabled():
        r = rd.esn.fit_readout(S, Y, lam, bias=bias)
        W, b = np.asarray(r.weights), np.asarray(r.bias)
        pred = np.asarray(rd.esn.apply_readout(r, S))
    np.testing.assert_allclose(W, w[:7], rtol=1e-10)
    np.testing.assert_allclose(b, w[7] if bias else np.zeros_like(w[0]), atol=1e-12)
    np.testing.assert_allclose(pred, X @ w, rtol=1e-10)


def test_readout_flattens_time_and_batch_and_checks_shapes():
    rng = np.random.default_rng(1)
    S, Y = rng.normal(size=(4, 20, 5)), rng.normal(size=(4, 20, 2))
    with x64_enabled():
        a = rd.esn.fit_readout(S, Y, 0.1)
        b = rd.esn.fit_readout(S.reshape(80, 5), Y.reshape(80, 2), 0.1)
        np.testing.assert_allclose(a.weights, b.weights, rtol=1e-12)
    with pytest.raises(ValueError, match=r"targets: expected shape \(4, 20\)"):
        rd.esn.fit_readout(S, Y[:, :10], 0.1)
    with pytest.raises(ValueError, match="ridge"):
        rd.esn.fit_readout(S, Y, -1.0)


def test_nrmse_is_one_for_the_mean_and_matches_numpy():
    rng = np.random.default_rng(2)
    y, p = rng.normal(size=200), rng.normal(size=200)
    assert float(rd.esn.nrmse(np.full(200, y.mean()), y)) == pytest.approx(1.0, rel=1e-5)
    assert float(rd.esn.nrmse(p, y)) == pytest.approx(np.sqrt(np.mean((p - y) ** 2) / np.var(y)), rel=1e-5)


def test_esn_beats_persistence_on_mackey_glass_by_10x():
    """Jaeger & Haas's benchmark, one step ahead: a 100-unit reservoir against x_{t+1} = x_t."""
    series = rd.tasks.mackey_glass(1500, washout=300.0)
    u, y = (series[:-1] - 1.0)[:, None], series[1:]
    cell = rd.cells.esn(1, 100, spectral_radius=0.9, bias_scale=0.2)
    params = cell.init(KEY)
    readout = rd.esn.fit(cell, params, u[:1000], y[:1000], ridge=1e-7, washout=100)
    pred = rd.esn.predict(cell, params, readout, u)[1000:]
    esn = float(rd.esn.nrmse(pred, y[1000:]))
    persistence = float(rd.esn.nrmse(series[1000:-1], y[1000:]))
    assert persistence > 0.1  # the series moves: persistence is a real baseline
    assert esn < persistence / 10


def _reservoir():
    """One reservoir (one compilation) for the three checks; W is rescaled per check."""
    cell = rd.cells.esn(1, 60, spectral_radius=0.9, leak_rate=0.5)
    return cell, cell.init(KEY)


def _check(cell, params, **kw):
    return rd.esn.echo_state_property(cell, params, key=jax.random.key(1), steps=300, input_scale=0.1, **kw)


def test_echo_state_property_holds_below_sigma_max_one():
    """σ_max(W) = 0.95 < 1: every step contracts, ‖h_{t+1} − h_{t+1}′‖ ≤ bound·‖h_t − h_t′‖."""
    cell, params = _reservoir()
    W = params["W"]
    chk = _check(cell, {**params, "W": W * 0.95 / np.linalg.norm(np.asarray(W), 2)})
    assert float(chk.sigma_max) == pytest.approx(0.95, rel=1e-5)
    assert float(chk.bound) == pytest.approx(0.5 + 0.5 * 0.95, rel=1e-5)
    assert bool(chk.sufficient) and bool(chk.forgets)
    d = np.asarray(chk.distances, np.float64)
    live = d[:-1] > 1e-5 * d[0]  # above float32 rounding (the distance bottoms out near 1e-7)
    assert live.sum() > 10
    assert np.all((d[1:] <= 0.975 * d[:-1] * (1 + 1e-4))[live])  # each step contracts by the bound
    assert d[-1] < 1e-4 * d[0]


def test_echo_state_property_fails_for_a_large_spectral_radius():
    """ρ(W) = 3 with weak input: the reservoir is chaotic and never forgets its start."""
    cell, params = _reservoir()
    chk = _check(cell, {**params, "W": params["W"] * (3.0 / 0.9)})
    assert not bool(chk.sufficient) and not bool(chk.forgets)
    assert float(chk.ratio) > 0.1


def test_spectral_radius_below_one_is_not_the_sufficient_condition():
    """ρ(W) = 0.9 but σ_max(W) > 1 (Gaussian W): the sufficient test fails, forgetting still holds."""
    cell, params = _reservoir()
    chk = _check(cell, params)
    assert float(chk.sigma_max) > 1.0 and not bool(chk.sufficient)
    assert bool(chk.forgets)


def test_bad_input_is_explained():
    cell = rd.cells.esn(1, 10)
    with pytest.raises(TypeError, match="key: expected a PRNG key"):
        rd.esn.echo_state_property(cell, cell.init(KEY))
    with pytest.raises(ValueError, match="inputs: expected 1 features"):
        rd.esn.run_reservoir(cell, cell.init(KEY), jnp.ones((5, 2)))
    with pytest.raises(ValueError, match="washout: expected fewer than the 5"):
        rd.esn.run_reservoir(cell, cell.init(KEY), jnp.ones((5, 1)), washout=5)
