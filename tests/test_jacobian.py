"""Jacobians against closed forms and against independent methods (finite differences, a
jax.jacfwd of a plain Python loop, dense numpy products)."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import rnn_dynamics as rd
from conftest import ALL_CELLS

pytestmark = pytest.mark.usefixtures("fast_compile")

KEY = jax.random.key(0)


def _setup(cell, T, key=KEY, h_scale=0.5, x_scale=1.0, min_entry=0.0):
    """params, a random h1 and inputs for T-1 steps, from a draw where comparisons mean something.

    A small ReLU net can switch off entirely or keep one unit alive, leaving a product of 0 or
    1e-7; and a pre-activation next to ReLU's kink makes central differences straddle it. Such
    draws are skipped by folding the key (deterministically: the same draw on every run) until
    ∂h_T/∂h_1 has an entry above ``min_entry`` and, for the vanilla ReLU
    cell, every pre-activation is at least 1e-4 from 0 (100 times the finite-difference step).
    """
    for i in range(20):
        p, h1, xs = rd.draw_seed(cell, jax.random.fold_in(key, i), T, input_scale=x_scale, h1=h_scale)
        with warnings.catch_warnings():  # an exactly zero product warns: that draw is skipped
            warnings.simplefilter("ignore", rd.NumericalWarning)
            J = np.asarray(rd.jacobian(cell, p, h1, xs))
        if np.abs(J).max() > min_entry and _away_from_relu_kinks(cell, p, h1, xs):
            return p, h1, xs
    raise AssertionError("no non-degenerate draw")


def _away_from_relu_kinks(cell, p, h1, xs, margin=1e-4):
    if cell.name != "vanilla-relu":
        return True
    W, U, b = (np.asarray(p[k], np.float64) for k in ("W", "U", "b"))
    h = np.asarray(h1, np.float64)
    for x in np.asarray(xs, np.float64):
        a = W @ h + U @ x + b
        if np.abs(a).min() < margin:
            return False
        h = np.maximum(a, 0.0)
    return True


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
    """Grosse's slides: 1.1^50 = 117.39 and 0.9^50 = 0.0051538 (50 factors, T = 51); 49
    factors give 1.1^49 = 106.72. With linear φ the value does not depend on h_1 or the inputs."""
    cell = rd.cells.univariate(w=w)
    rng = np.random.default_rng(n_inputs)
    h1 = rng.normal(size=1).astype(np.float32)
    xs = rng.normal(size=(n_inputs, 1)).astype(np.float32)
    J = rd.jacobian(cell, cell.init(None), h1, xs)
    assert J.shape == (1, 1)
    np.testing.assert_allclose(float(J[0, 0]), expected, rtol=5e-5)


def test_orthogonal_linear_cell_keeps_every_singular_value_at_one():
    cell = rd.cells.linear(2, 16, recurrent_init=rd.init.orthogonal())
    p, h1, xs = _setup(cell, 301)
    sv = rd.singular_values(rd.jacobian(cell, p, h1, xs))
    np.testing.assert_allclose(sv, np.ones(16), atol=2e-3)


# ---------------------------------------------------------------- independent methods


@pytest.mark.parametrize("name, make", ALL_CELLS)
def test_methods_finite_differences_step_jacobians_and_norm_curve_agree(name, make, x64):
    """On one draw per cell (float64):

    * every method equals jax.jacfwd of a plain Python loop (no scan, no custom tangent
      layout), which equals central finite differences;
    * the product of rd.step_jacobians (computed in parallel over time) is that matrix;
    * rd.jacobian_norms (svd=True) is the exact ‖·‖₂ of every prefix product; svd=False (power
      iteration) never exceeds it.
    """
    cell = make()
    p, h1, xs = _setup(cell, 9, min_entry=1e-3)
    J = {m: np.asarray(rd.jacobian(cell, p, h1, xs, method=m)) for m in rd.METHODS}

    def final(h):
        for x in xs:
            h = cell.step(p, h, x)
        return h

    J_ref = np.asarray(jax.jit(jax.jacfwd(final))(h1))
    final = jax.jit(final)
    eps = 1e-6
    fd = np.stack([(np.asarray(final(h1 + eps * e)) - np.asarray(final(h1 - eps * e))) / (2 * eps)
                   for e in np.eye(cell.state_size)], axis=1)
    assert np.abs(J_ref).max() > 1e-3  # the comparison is not between zeros
    for m in rd.METHODS:
        np.testing.assert_allclose(J[m], J_ref, rtol=1e-10, atol=1e-12, err_msg=m)
    np.testing.assert_allclose(J_ref, fd, rtol=1e-6, atol=1e-8)

    Js = np.asarray(rd.step_jacobians(cell, p, h1, xs))
    assert Js.shape == (8, cell.state_size, cell.state_size)
    P, expected = np.eye(cell.state_size), []
    for A in Js:  # later factors on the left
        P = A @ P
        expected.append(np.linalg.norm(P, 2))
    np.testing.assert_allclose(P, J_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rd.jacobian_norms(cell, p, h1, xs), expected, rtol=1e-10)
    power = np.asarray(rd.jacobian_norms(cell, p, h1, xs, svd=False))
    assert np.all(power <= np.array(expected) * (1 + 1e-12)), "svd=False must be a lower bound"


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "linear"])
def test_vanilla_kernel_is_the_product_of_diag_phi_prime_times_W(activation, x64):
    """The vanilla cell's own Jacobian kernel (what "auto" runs up to n = 64) against numpy's
    product of D_t W at T = 2 (no step of its loop), 3 and 12, and against jacrev under vmap."""
    from rnn_dynamics._jacobian import resolve_method

    cell = rd.cells.vanilla(3, 5, activation, gain=1.2, bias_scale=0.5)
    assert resolve_method("auto", 5, cell) == "kernel"
    assert resolve_method("auto", 5, cell._replace(step=lambda p, h, x: cell.step(p, h, x))) == "jacrev"
    assert resolve_method("auto", 65, rd.cells.vanilla(3, 65)) == "jacfwd"
    for T in (2, 3, 12):
        p, h1, xs = _setup(cell, T)
        W, U, b = (np.asarray(p[k]) for k in ("W", "U", "b"))
        h, P = np.asarray(h1), np.eye(5)
        for x in np.asarray(xs):
            a = W @ h + U @ x + b
            P = np.diag(_np_phi_prime(activation, a)) @ W @ P
            h = np.asarray(cell.step(p, jnp.asarray(h), jnp.asarray(x)))
        scale = np.abs(P).max()
        assert scale > 1e-12  # not a comparison of zeros (sigmoid: φ' <= 1/4 shrinks it fast)
        np.testing.assert_allclose(rd.jacobian(cell, p, h1, xs), P, rtol=1e-10, atol=1e-12 * scale,
                                   err_msg=f"T={T}")
    ps, h1s, xss = jax.vmap(lambda k: rd.draw_seed(cell, k, 7, h1=0.5))(jax.random.split(KEY, 4))
    batched = jax.vmap(lambda p, h, x: rd.jacobian(cell, p, h, x))
    reverse = jax.vmap(lambda p, h, x: rd.jacobian(cell, p, h, x, method="jacrev"))
    np.testing.assert_allclose(batched(ps, h1s, xss), reverse(ps, h1s, xss), rtol=1e-10, atol=1e-13)


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


def test_power_iteration_norms_are_accurate_when_the_top_singular_value_is_separated(x64):
    """svd=False on W = Q diag(1.2, 0.6, 0.5, 0.3, 0.2, 0.1) Rᵀ: three warm-started iterations
    per step; measured relative error 5e-5 at lag 1, 6e-8 at lag 2, below 5e-15 from lag 4 on."""
    n = 6
    rng = np.random.default_rng(0)
    Q, R = (np.linalg.qr(rng.standard_normal((n, n)))[0] for _ in range(2))
    W = Q @ np.diag([1.2, 0.6, 0.5, 0.3, 0.2, 0.1]) @ R.T
    cell = rd.cells.linear(2, n)
    p = {"W": jnp.asarray(W), "U": jnp.ones((n, 2)), "b": jnp.zeros(n)}
    got = np.asarray(rd.jacobian_norms(cell, p, jnp.zeros(n), jnp.ones((30, 2)), svd=False))
    want = np.array([np.linalg.norm(np.linalg.matrix_power(W, k), 2) for k in range(1, 31)])
    assert np.all(got <= want * (1 + 1e-12))
    np.testing.assert_allclose(got[:3], want[:3], rtol=1e-3)
    np.testing.assert_allclose(got[3:], want[3:], rtol=1e-12)


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


@settings(max_examples=15, deadline=None)
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


# ---------------------------------------------------------------- spectral_norm, singular_values


def test_spectral_norm_and_singular_values_on_batches_match_numpy():
    A = np.asarray(jax.random.normal(KEY, (3, 2, 5, 4)))
    np.testing.assert_allclose(rd.singular_values(A), np.linalg.svd(A, compute_uv=False), rtol=1e-5)
    np.testing.assert_allclose(rd.spectral_norm(A), np.linalg.norm(A, 2, axis=(-2, -1)), rtol=1e-5)
    assert float(rd.spectral_norm(2.0 * jnp.eye(3))) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="J: expected an array of matrices"):
        rd.spectral_norm(jnp.ones(3))
