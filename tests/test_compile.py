"""cell_jit's dispatcher: which compiled path a call takes, that both give the same numbers, and
the fallback when XLA does not know the option."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_dynamics as rd
from rnn_dynamics import _compile, _jacobian, _spectra

on_cpu_with_option = pytest.mark.skipif(
    jax.default_backend() != "cpu" or not _compile._option_supported("cpu"),
    reason="the no-YNNPACK option is only used on CPU, by an XLA that knows it",
)


def _setup(n, steps=13):
    # Unusual sizes (3 inputs, T = 13), so that no other test has compiled these shapes already.
    cell = rd.cells.vanilla(3, n, "tanh", gain=1.5)
    p, h1, xs = rd.draw_seed(cell, jax.random.key(0), steps, input_scale=0.1)
    return cell, p, h1, xs


def _sizes(f):
    return f.fast._cache_size(), f.plain._cache_size()


@on_cpu_with_option
def test_top_level_calls_above_64_units_take_the_fast_path_and_agree_with_plain():
    f = _jacobian._jacobian_jit
    cell, p, h1, xs = _setup(77)
    fast0, plain0 = _sizes(f)
    J_fast = rd.jacobian(cell, p, h1, xs)
    assert _sizes(f) == (fast0 + 1, plain0)
    # Inside a user's jit (concrete closures, so no tracer among the arguments) the options
    # cannot apply: the plain path is compiled.
    J_plain = jax.jit(lambda: rd.jacobian(cell, p, h1, xs))()
    assert _sizes(f) == (fast0 + 1, plain0 + 1)
    scale = np.abs(np.asarray(J_plain)).max()
    assert scale > 1e-3
    # two dot implementations round differently in float32: compare on the matrix's scale
    np.testing.assert_allclose(J_fast, J_plain, rtol=0, atol=1e-5 * scale)


@on_cpu_with_option
def test_small_cells_take_the_plain_path():
    f = _jacobian._jacobian_jit
    cell, p, h1, xs = _setup(17)
    fast0, plain0 = _sizes(f)
    rd.jacobian(cell, p, h1, xs)
    assert _sizes(f) == (fast0, plain0 + 1)
    cell, p, h1, xs = _setup(64)  # the threshold itself is plain: state_size > 64 is fast
    rd.jacobian(cell, p, h1, xs)
    assert _sizes(f) == (fast0, plain0 + 2)


@on_cpu_with_option
def test_spectra_above_the_threshold_is_fast_and_matches_the_loop():
    n, steps = 72, 11
    cell = rd.cells.vanilla(3, n, "tanh", gain=1.5)
    fast0, plain0 = _sizes(_spectra._spectra)
    out = rd.spectra(cell, jax.random.key(1), seeds=2, steps=steps, input_scale=0.1, dense=False)
    assert _sizes(_spectra._spectra) == (fast0 + 1, plain0)
    for i, k in enumerate(jax.random.split(jax.random.key(1), 2)):
        p, h1, xs = rd.draw_seed(cell, k, steps, input_scale=0.1)
        ref = rd.jacobian_norms(cell, p, h1, xs, log10=True)
        np.testing.assert_allclose(out.log10_norms[i], ref, rtol=0, atol=1e-4)


def test_falls_back_to_plain_when_xla_rejects_the_option(monkeypatch):
    """An XLA without the option: the probe says so once, and every call compiles plainly."""
    monkeypatch.setattr(_compile, "_NO_YNN", {"no_such_option_for_this_test": ""})
    _compile._option_supported.cache_clear()
    try:
        assert _compile._option_supported(jax.default_backend()) is False
        assert rd.fast_cpu_options() == {}
        f = _compile.cell_jit(lambda cell, x: 2.0 * x)
        x = jnp.arange(3.0)
        np.testing.assert_array_equal(f(rd.cells.vanilla(1, 80), x), 2.0 * x)
        assert _sizes(f) == (0, 1)
    finally:
        monkeypatch.undo()
        _compile._option_supported.cache_clear()
    assert _compile._option_supported("gpu") is False  # only ever used on CPU
