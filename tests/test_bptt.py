"""BPTT by lag: against jax.grad, a numpy BPTT loop, closed forms, and truncation by stop_gradient."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_dynamics as rd
from conftest import CELL_FACTORIES, x64_enabled

pytestmark = pytest.mark.usefixtures("fast_compile")

KEY = jax.random.key(0)
FACTORIES = dict(CELL_FACTORIES)


def _final_loss(h):
    return jnp.sum(jnp.sin(h) + 0.5 * h**2)


def _setup(cell, T, key=KEY):
    kp, kh, kx, kv, ky = jax.random.split(key, 5)
    p = cell.init(kp)
    h1 = 0.5 * jax.random.uniform(kh, (cell.state_size,), minval=-1.0, maxval=1.0)
    xs = jax.random.normal(kx, (T - 1, cell.input_size))
    V = jax.random.normal(kv, (cell.state_size, 2))
    ys = jax.random.normal(ky, (T - 1, 2))
    return p, h1, xs, (lambda hs: jnp.sum((hs @ V - ys) ** 2))


def _grad(cell, p, h1, xs, loss, per_step):
    def L(p):
        hs = rd.rollout(cell, p, h1, xs)
        return loss(hs) if per_step else loss(hs[-1])

    return jax.grad(L)(p)


def _max_rel(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))) / np.max(np.abs(np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("name", ["lstm"])
def test_contributions_sum_to_the_full_gradient(name):
    """Σ_k C_k = jax.grad of the rolled-out loss, relative 1e-5 in float64: final-state and
    per-step losses, for a gated cell (the numpy test below covers group="step"; add names from
    conftest.CELL_FACTORIES here for more cells, about 1.5 s of compilation each)."""
    with x64_enabled():
        cell = FACTORIES[name]()
        p, h1, xs, seq_loss = _setup(cell, 9)
        for per_step, group in [(False, "lag"), (True, "lag")]:
            loss = seq_loss if per_step else _final_loss
            out = rd.bptt.by_lag(cell, p, h1, xs, loss, per_step=per_step, group=group)
            g = _grad(cell, p, h1, xs, loss, per_step)
            summed = jax.tree.map(lambda c: c.sum(0), out.contributions)
            assert _max_rel(summed, g) < 1e-5
            assert _max_rel(out.grad, g) < 1e-5
            norms = np.sqrt(sum(np.sum(np.asarray(c, np.float64) ** 2, axis=tuple(range(1, c.ndim)))
                                for c in jax.tree.leaves(out.contributions)))
            np.testing.assert_allclose(out.norms, norms, rtol=1e-6)
            assert out.norms.shape == (8,)
        lean = rd.bptt.by_lag(cell, p, h1, xs, seq_loss, per_step=True, keep=False)
        assert lean.contributions is None
        np.testing.assert_allclose(lean.norms, out.norms, rtol=1e-12)
        assert _max_rel(lean.grad, g) < 1e-5


def _np_vanilla(p, h1, xs):
    W, U, b = (np.asarray(p[k], np.float64) for k in ("W", "U", "b"))
    h, hs, acts = np.asarray(h1, np.float64), [np.asarray(h1, np.float64)], []
    for x in np.asarray(xs, np.float64):
        a = W @ h + U @ x + b
        h = np.tanh(a)
        hs.append(h)
        acts.append(a)
    return W, U, np.array(hs), np.array(acts)  # hs[j] = h_{j+1}, acts[i] drives h_{i+2}


def _np_term(W, U, hs, acts, xs, a, s):
    """Contribution of step s (row index i = s − 2) given the adjoint a on h_s: (dW, dU, db)."""
    i = s - 2
    d = a * (1 - np.tanh(acts[i]) ** 2)
    return np.outer(d, hs[i]), np.outer(d, np.asarray(xs[i])), d


def _np_back(W, acts, a, s):
    """Adjoint on h_{s−1} from the adjoint on h_s."""
    return W.T @ (a * (1 - np.tanh(acts[s - 2]) ** 2))


def test_each_lag_term_matches_a_numpy_bptt_loop():
    """Every C_k of a tanh RNN, final-state and per-step losses (both groupings), term by term."""
    with x64_enabled():
        cell = rd.cells.vanilla(2, 4, "tanh", gain=1.3, bias_scale=0.2)
        T = 7
        p, h1, xs, _ = _setup(cell, T)
        ys = np.asarray(jax.random.normal(jax.random.key(5), (T - 1, 4)))
        W, U, hs, acts = _np_vanilla(p, h1, xs)
        keys = ("W", "U", "b")

        def empty():
            return [[np.zeros_like(np.asarray(p[k], np.float64)) for k in keys] for _ in range(T - 1)]

        # final state, L = Σ h_T² / 2: dL/dh_T = h_T
        fin = empty()
        a = hs[-1]
        for s in range(T, 1, -1):
            for acc, term in zip(fin[T - s], _np_term(W, U, hs, acts, xs, a, s)):
                acc += term
            a = _np_back(W, acts, a, s)
        # per-step, L = Σ_t ‖h_t − y_t‖² / 2: direct partial h_t − y_t
        lag, step = empty(), empty()
        for t in range(2, T + 1):
            a = hs[t - 1] - ys[t - 2]
            for s in range(t, 1, -1):
                term = _np_term(W, U, hs, acts, xs, a, s)
                for acc, x in zip(lag[t - s], term):
                    acc += x
                for acc, x in zip(step[T - s], term):
                    acc += x
                a = _np_back(W, acts, a, s)

        cases = [
            (fin, dict(loss_fn=lambda h: 0.5 * jnp.sum(h**2))),
            (lag, dict(loss_fn=lambda H: 0.5 * jnp.sum((H - ys) ** 2), per_step=True, group="lag")),
            (step, dict(loss_fn=lambda H: 0.5 * jnp.sum((H - ys) ** 2), per_step=True, group="step")),
        ]
        for expected, kw in cases:
            out = rd.bptt.by_lag(cell, p, h1, xs, **kw)
            for j, k in enumerate(keys):
                np.testing.assert_allclose(out.contributions[k], np.stack([e[j] for e in expected]),
                                           rtol=1e-10, atol=1e-13)
        # the two groupings differ for per-step losses (else the test above could not tell them apart)
        assert not np.allclose(np.stack([e[0] for e in lag]), np.stack([e[0] for e in step]))


@pytest.mark.parametrize("w", [1.1, 0.9])
def test_univariate_linear_lag_terms_are_powers_of_w(w):
    """h_t = w h_{t−1} + u x_t + b, L = h_T: C_k = w^k · (h_{T−k−1}, x_{T−k}, 1) for (w, u, b)."""
    with x64_enabled():
        cell = rd.cells.univariate(w=w, u=0.7, b=0.1)
        p = cell.init(None)
        xs = jnp.asarray(np.random.default_rng(0).normal(size=(50, 1)))
        h1 = jnp.array([0.3])
        out = rd.bptt.by_lag(cell, p, h1, xs, lambda h: h[0])
        hs = np.concatenate([[0.3], np.asarray(rd.rollout(cell, p, h1, xs))[:, 0]])  # h_1..h_T
        k = np.arange(50)
        np.testing.assert_allclose(out.contributions["b"], w**k, rtol=1e-12)
        np.testing.assert_allclose(out.contributions["u"], w**k * np.asarray(xs)[::-1, 0], rtol=1e-12)
        np.testing.assert_allclose(out.contributions["w"], w**k * hs[-2::-1], rtol=1e-12)
        np.testing.assert_allclose(out.norms, w**k * np.sqrt(1 + np.asarray(xs)[::-1, 0] ** 2 + hs[-2::-1] ** 2),
                                   rtol=1e-12)


@pytest.mark.parametrize("per_step", [False, True])
def test_truncated_equals_first_lags_and_full_for_long_windows(per_step):
    """stop_gradient windows (truncated_grad) against the lag sums of by_lag and against jax.grad."""
    with x64_enabled():
        cell = rd.cells.gru(2, 3)
        T = 8
        p, h1, xs, seq_loss = _setup(cell, T)
        loss = seq_loss if per_step else _final_loss
        out = rd.bptt.by_lag(cell, p, h1, xs, loss, per_step=per_step, group="lag")
        g = rd.bptt.truncated_grad(cell, p, h1, xs, loss, 2, per_step=per_step)
        first = jax.tree.map(lambda c: c[:2].sum(0), out.contributions)
        assert _max_rel(g, first) < 1e-10
        full = _grad(cell, p, h1, xs, loss, per_step)
        for window in (T - 1, T + 5):
            assert _max_rel(rd.bptt.truncated_grad(cell, p, h1, xs, loss, window, per_step=per_step), full) < 1e-10
        assert _max_rel(g, full) > 1e-3  # truncation changes the gradient here: the checks can fail


def test_gradient_bias_is_the_cosine_of_truncated_and_full():
    cell = rd.cells.vanilla(2, 6, "tanh", gain=1.5)
    p, h1, xs, loss = _setup(cell, 30)
    out = rd.bptt.by_lag(cell, p, h1, xs, loss, per_step=True)
    a = np.concatenate([np.ravel(c[:4].sum(0)) for c in jax.tree.leaves(out.contributions)])
    b = np.concatenate([np.ravel(g) for g in jax.tree.leaves(out.grad)])
    cos = float(rd.bptt.gradient_bias(cell, p, h1, xs, loss, 4, per_step=True))
    assert cos == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-4)
    assert cos < 0.999  # gain 1.5: lags ≥ 4 matter


def test_composes_with_jit_and_vmap():
    cell = rd.cells.vanilla(2, 5, "tanh", gain=1.2)
    keys = jax.random.split(KEY, 3)
    params = jax.vmap(cell.init)(keys)
    h1 = jnp.zeros(5)
    xs = jax.random.normal(KEY, (12, 2))

    def f(p):
        return rd.bptt.by_lag(cell, p, h1, xs, _final_loss, keep=False).norms

    batched = jax.jit(jax.vmap(f))(params)
    single = np.stack([f(jax.tree.map(lambda x: x[i], params)) for i in range(3)])
    np.testing.assert_allclose(batched, single, rtol=1e-5)
    assert batched.shape == (3, 12)


def test_exploding_contributions_warn():
    """A linear cell with gain 30: the adjoint overflows float32 within 60 steps; say so."""
    cell = rd.cells.linear(1, 8, gain=30.0)
    p = cell.init(KEY)
    with pytest.warns(rd.NumericalWarning, match="exploding"):
        rd.bptt.by_lag(cell, p, jnp.zeros(8), jnp.ones((60, 1)), lambda h: jnp.sum(h))


def test_bad_input_is_explained():
    cell = rd.cells.vanilla(2, 3)
    p = cell.init(KEY)
    h1, xs = jnp.zeros(3), jnp.ones((5, 2))
    with pytest.raises(ValueError, match="loss_fn: expected a scalar"):
        rd.bptt.by_lag(cell, p, h1, xs, lambda h: h)
    with pytest.raises(ValueError, match="window: expected a positive int"):
        rd.bptt.truncated_grad(cell, p, h1, xs, _final_loss, 0)
    with pytest.raises(ValueError, match="group"):
        rd.bptt.by_lag(cell, p, h1, xs, _final_loss, group="time")
    with pytest.raises(ValueError, match="xs: expected 2 features"):
        rd.bptt.by_lag(cell, p, h1, jnp.ones((5, 3)), _final_loss)
    with pytest.raises(TypeError, match="loss_fn: calling it on hs"):
        rd.bptt.by_lag(cell, p, h1, xs, lambda h: h[:, :, 0].sum(), per_step=True)
