"""Jacobians against closed forms and against independent methods."""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import rnn_dynamics as rd
from conftest import ALL_CELLS

KEY = jax.random.key(0)


def _setup(cell, T, key=KEY, h_scale=0.5, x_scale=1.0):
    """params, a random h1 (away from ReLU kinks) and inputs for T-1 steps.

    A small ReLU net can switch off entirely (∂h_T/∂h_1 = 0, nothing to compare): such draws
    are skipped by folding the key until the product of step Jacobians is non-zero.
    """
    for i in range(20):
        p, h1, xs = rd.draw_seed(cell, jax.random.fold_in(key, i), T, input_scale=x_scale, h1=h_scale)
        P = np.eye(cell.state_size)
        for A in np.asarray(rd.step_jacobians(cell, p, h1, xs)):
            P = A @ P
        if np.abs(P).max() > 0:
            return p, h1, xs
    raise AssertionError("no non-degenerate draw")


def _np_phi_prime(activation, a):
    if activation == "tanh":
        return 1 - np.tanh(a) ** 2
    if activation == "sigmoid":
        s = 1 / (1 + np.exp(-a))
        return s * (1 - s)
    if activation == "relu":
        return (a > 0).astype(a.dtype)
    return np.ones_like(a)


# ---------------------------------------------------------------- closed forms


def test_linear_matrix_cell_is_matrix_power(x64):
    cell = rd.cells.linear(3, 6, gain=1.3)
    p, h1, xs = _setup(cell, 13)
    J = rd.jacobian(cell, p, h1, xs)
    expected = np.linalg.matrix_power(np.asarray(p["W"]), 12)
    np.testing.assert_allclose(J, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("w, n_inputs, expected", [(1.1, 50, 117.39), (0.9, 50, 0.0051538), (1.1, 49, 106.72)])
def test_univariate_lecture_figures(w, n_inputs, expected):
    """Grosse's slides: 1.1^50 = 117.39 and 0.9^50 = 0.0051538 (50 factors, T = 51)."""
    cell = rd.cells.univariate(w=w)
    J = rd.jacobian(cell, cell.init(None), jnp.zeros(1), jnp.ones((n_inputs, 1)))
    assert J.shape == (1, 1)
    np.testing.assert_allclose(float(J[0, 0]), expected, rtol=5e-5)


def test_orthogonal_linear_cell_keeps_every_singular_value_at_one():
    cell = rd.cells.linear(2, 16, recurrent_init=rd.init.orthogonal())
    p, h1, xs = _setup(cell, 301)
    sv = rd.singular_values(rd.jacobian(cell, p, h1, xs))
    np.testing.assert_allclose(sv, np.ones(16), atol=2e-3)


# ---------------------------------------------------------------- independent methods


@pytest.mark.parametrize("name, make", ALL_CELLS)
def test_methods_agree_with_each_other_and_finite_differences(name, make, x64):
    cell = make()
    p, h1, xs = _setup(cell, 9)
    J = {m: np.asarray(rd.jacobian(cell, p, h1, xs, method=m)) for m in rd.METHODS}

    # Literal jax.jacfwd over a plain Python loop: no scan, no custom tangent layout.
    def final(h):
        for x in xs:
            h = cell.step(p, h, x)
        return h

    J_ref = np.asarray(jax.jacfwd(final)(h1))
    eps = 1e-6
    E = np.eye(cell.state_size)
    fd = np.stack(
        [(np.asarray(final(h1 + eps * e)) - np.asarray(final(h1 - eps * e))) / (2 * eps) for e in E],
        axis=1,
    )
    for m in rd.METHODS:
        np.testing.assert_allclose(J[m], J_ref, rtol=1e-10, atol=1e-12, err_msg=m)
    np.testing.assert_allclose(J_ref, fd, rtol=1e-6, atol=1e-8)
    assert np.abs(J_ref).max() > 1e-6  # the comparison is not between zeros


@pytest.mark.parametrize("name, make", ALL_CELLS)
def test_scan_rollout_equals_python_loop(name, make):
    cell = make()
    p, h1, xs = _setup(cell, 12)
    hs = rd.rollout(cell, p, h1, xs)
    h, expected = h1, []
    for x in xs:
        h = cell.step(p, h, x)
        expected.append(h)
    np.testing.assert_allclose(hs, np.stack(expected), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rd.final_state(cell, p, h1, xs), expected[-1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "linear"])
def test_vanilla_step_jacobian_is_diag_phi_prime_times_W(activation, x64):
    cell = rd.cells.vanilla(3, 5, activation, gain=1.2, bias_scale=0.5)
    p, h1, xs = _setup(cell, 8)
    Js = np.asarray(rd.step_jacobians(cell, p, h1, xs))
    W, U, b = (np.asarray(p[k]) for k in ("W", "U", "b"))
    h = np.asarray(h1)
    for k, x in enumerate(np.asarray(xs)):
        a = W @ h + U @ x + b
        np.testing.assert_allclose(Js[k], np.diag(_np_phi_prime(activation, a)) @ W, rtol=1e-12, atol=1e-14)
        h = np.asarray(cell.step(p, jnp.asarray(h), jnp.asarray(x)))


@pytest.mark.parametrize("name, make", ALL_CELLS)
def test_product_of_step_jacobians_is_the_jacobian(name, make, x64):
    cell = make()
    p, h1, xs = _setup(cell, 10)
    Js = np.asarray(rd.step_jacobians(cell, p, h1, xs))
    P = np.eye(cell.state_size)
    for A in Js:  # later factors on the left
        P = A @ P
    np.testing.assert_allclose(rd.jacobian(cell, p, h1, xs), P, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, make", ALL_CELLS)
@pytest.mark.parametrize("svd", [False, True])
def test_jacobian_norms_match_svd_of_every_prefix_product(name, make, svd, x64):
    cell = make()
    p, h1, xs = _setup(cell, 25)
    Js = np.asarray(rd.step_jacobians(cell, p, h1, xs))
    P, expected = np.eye(cell.state_size), []
    for A in Js:
        P = A @ P
        expected.append(np.linalg.norm(P, 2))
    got = rd.jacobian_norms(cell, p, h1, xs, svd=svd)
    np.testing.assert_allclose(got, expected, rtol=1e-8)
    np.testing.assert_allclose(
        rd.jacobian_norms(cell, p, h1, xs, log10=True, svd=svd), np.log10(expected), atol=1e-8
    )


def _np_log10_norm(W, U, b, h, xs):
    """Independent numpy float64 log10 ‖∂h_T/∂h_1‖₂ for a tanh cell, renormalising each step."""
    P, s = np.eye(len(h)), 0.0
    for x in xs:
        a = W @ h + U @ x + b
        h = np.tanh(a)
        P = (1 - h**2)[:, None] * (W @ P)
        f = np.linalg.norm(P)
        P, s = P / f, s + np.log10(f)
    return s + np.log10(np.linalg.norm(P, 2))


def test_long_horizon_float32_norms_stay_finite_where_dense_underflows():
    """tanh at g = 1, unit inputs: ‖∂h_T/∂h_1‖ falls far below float32's range by T = 1000."""
    cell = rd.cells.vanilla(4, 32, "tanh", gain=1.0)
    p, h1, xs = rd.draw_seed(cell, jax.random.key(3), 1000)
    logs = np.asarray(rd.jacobian_norms(cell, p, h1, xs, log10=True))
    assert np.all(np.isfinite(logs))
    ref = _np_log10_norm(*(np.asarray(p[k], np.float64) for k in ("W", "U", "b")),
                         np.asarray(h1, np.float64), np.asarray(xs, np.float64))
    assert logs[-1] < -60  # far outside float32 (1e-45 is its smallest subnormal)
    np.testing.assert_allclose(logs[-1], ref, rtol=1e-3)
    with pytest.warns(rd.NumericalWarning, match="log10=True"):
        J = rd.jacobian(cell, p, h1, xs)
    assert not np.any(np.asarray(J))


# ---------------------------------------------------------------- the bound


_BOUND_CELLS = {a: rd.cells.vanilla(2, 5, a, gain=1.0, bias_scale=0.5) for a in rd.cells.ACTIVATIONS}


@settings(max_examples=30, deadline=None)
@given(
    activation=st.sampled_from(sorted(rd.cells.ACTIVATIONS)),
    gain=st.floats(0.05, 3.0),
    seed=st.integers(0, 2**16),
    x_scale=st.floats(0.0, 2.0),
)
def test_norms_never_exceed_the_lecture_bound(activation, gain, seed, x_scale):
    """‖∂h_t/∂h_k‖₂ ≤ (‖W‖₂·sup|φ′|)^(t−k) for every lag t−k (Pascanu et al. 2013)."""
    cell = _BOUND_CELLS[activation]
    p, h1, xs = rd.draw_seed(cell, jax.random.key(seed), 30, input_scale=x_scale, h1=1.0)
    p = dict(p, W=gain * p["W"])  # gain as data: one compile per activation
    logs = np.asarray(rd.jacobian_norms(cell, p, h1, xs, log10=True))
    bound = np.asarray(rd.jacobian_bound(cell, p, np.arange(1, 30), log10=True))
    ok = np.isfinite(logs)  # a ReLU net may switch off entirely: log10 0 = -inf
    assert np.all(logs[ok] <= bound[ok] + 1e-4)


def test_bound_is_attained_by_the_linear_cell_with_orthogonal_W():
    cell = rd.cells.linear(2, 8, recurrent_init=rd.init.orthogonal(1.05))
    p, h1, xs = _setup(cell, 40)
    lags = np.arange(1, 40)
    np.testing.assert_allclose(rd.jacobian_norms(cell, p, h1, xs), 1.05**lags, rtol=1e-4)  # ‖(1.05 Q)^k‖ = 1.05^k
    np.testing.assert_allclose(rd.jacobian_bound(cell, p, lags), 1.05**lags, rtol=1e-4)


def test_bound_values_from_numpy():
    cell = rd.cells.vanilla(2, 6, "sigmoid", gain=1.5)
    p = cell.init(KEY)
    np.testing.assert_allclose(rd.jacobian_bound(cell, p, 3),
                               (np.linalg.norm(np.asarray(p["W"]), 2) * 0.25) ** 3, rtol=1e-5)
    e = rd.cells.esn(2, 6, spectral_radius=0.8, leak_rate=0.3)
    pe = e.init(KEY)
    np.testing.assert_allclose(rd.jacobian_bound(e, pe, 1),
                               0.7 + 0.3 * np.linalg.norm(np.asarray(pe["W"]), 2), rtol=1e-5)


# ---------------------------------------------------------------- spectral helpers


def test_spectral_helpers_on_batches_match_numpy():
    A = np.asarray(jax.random.normal(KEY, (3, 2, 5, 4)))
    np.testing.assert_allclose(rd.singular_values(A), np.linalg.svd(A, compute_uv=False), rtol=1e-5)
    np.testing.assert_allclose(rd.spectral_norm(A), np.linalg.norm(A, 2, axis=(-2, -1)), rtol=1e-5)
    assert float(rd.spectral_norm(2.0 * jnp.eye(3))) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="J: expected an array of matrices"):
        rd.spectral_norm(jnp.ones(3))


def test_jacobian_under_user_jit_and_vmap_over_seeds():
    cell = rd.cells.vanilla(2, 4)
    keys = jax.random.split(KEY, 5)
    p, h1, xs = jax.vmap(lambda k: rd.draw_seed(cell, k, 12, h1=0.5))(keys)
    f = jax.jit(jax.vmap(lambda p, h, x: rd.spectral_norm(rd.jacobian(cell, p, h, x))))
    batched = f(p, h1, xs)
    for i in range(5):
        pi = jax.tree_util.tree_map(lambda a: a[i], p)
        np.testing.assert_allclose(batched[i], rd.spectral_norm(rd.jacobian(cell, pi, h1[i], xs[i])), rtol=1e-5)
