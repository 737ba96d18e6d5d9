"""The compile-option dispatcher: same results on every path, safe fallbacks."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

import rnn_dynamics as rd
from rnn_dynamics import _compile

N = 72  # above the threshold where the CPU option is used


def _setup():
    cell = rd.cells.vanilla(2, N, "tanh", gain=1.5)
    p, h1, xs = rd.draw_seed(cell, jax.random.key(0), 15, input_scale=0.1)
    return cell, p, h1, xs


def test_fast_and_plain_paths_agree():
    cell, p, h1, xs = _setup()
    fast = rd.jacobian(cell, p, h1, xs)  # top level: the dispatcher may use the option
    plain = jax.jit(lambda p, h, x: rd.jacobian(cell, p, h, x))(p, h1, xs)  # traced: plain jit
    scale = np.abs(np.asarray(plain)).max()
    assert scale > 1e-3
    # two dot implementations round differently in float32: compare on the matrix's scale
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-5 * scale)


def test_under_a_user_jit_with_concrete_closures():
    cell, p, h1, xs = _setup()
    got = jax.jit(lambda: rd.jacobian_norms(cell, p, h1, xs, log10=True))()
    np.testing.assert_allclose(got, rd.jacobian_norms(cell, p, h1, xs, log10=True), rtol=1e-5, atol=1e-5)


def test_falls_back_when_xla_rejects_the_option(monkeypatch):
    monkeypatch.setattr(_compile, "_NO_YNN", {"no_such_option_for_this_test": ""})
    f = _compile.jit_dispatch(lambda x: 2.0 * x, static_argnames=())
    x = jnp.arange(3.0)
    np.testing.assert_array_equal(f(N + 1, x), 2.0 * x)
    if jax.default_backend() == "cpu":
        assert not f.option_known  # remembered: no second failing compile
    np.testing.assert_array_equal(f(N + 1, x), 2.0 * x)


def test_spectra_above_threshold_matches_loop():
    cell = rd.cells.vanilla(2, N, "tanh", gain=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rd.NumericalWarning)
        out = rd.spectra(cell, jax.random.key(1), seeds=2, steps=10, input_scale=0.1, batch_size=2)
    for i, k in enumerate(jax.random.split(jax.random.key(1), 2)):
        p, h1, xs = rd.draw_seed(cell, k, 10, input_scale=0.1)
        with jax.disable_jit():
            ref = rd.jacobian_norms(cell, p, h1, xs, log10=True)
        np.testing.assert_allclose(out.log10_norms[i], ref, rtol=1e-4, atol=1e-4)
