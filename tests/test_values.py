"""Cells as values and hyperparameters as data: equal cells share compilations, a sweep over
numbers is one trace, one key builds one network at both precisions, bad params and
non-finite inputs are named."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import x64_enabled as enable_x64

import rnn_dynamics as rd
from rnn_dynamics import cells as cells_mod


@pytest.fixture
def traces(monkeypatch):
    """Counts how often the vanilla step kernel is traced (cells built after patching use it)."""
    count = {"n": 0}
    original = cells_mod._vanilla_step

    def counting(static, hp, params, h, x):
        count["n"] += 1
        return original(static, hp, params, h, x)

    monkeypatch.setattr(cells_mod, "_vanilla_step", counting)
    return count


def test_equal_settings_give_equal_cells_and_one_compilation(traces):
    a = rd.cells.vanilla(4, 16, "tanh", gain=1.0)
    b = rd.cells.vanilla(4, 16, "tanh", gain=1.0)
    assert a == b and hash(a) == hash(b)
    assert a != rd.cells.vanilla(4, 16, "tanh", gain=1.5)
    assert a != rd.cells.vanilla(4, 16, "relu", gain=1.0)
    key = jax.random.key(0)
    rd.spectra(a, key, seeds=4, steps=12)
    first = traces["n"]
    assert first > 0
    rd.spectra(b, key, seeds=4, steps=12)  # an equal cell built anew
    rd.spectra(rd.cells.vanilla(4, 16, "tanh", gain=1.5), key, seeds=4, steps=12)  # other number
    assert traces["n"] == first
    rd.spectra(a, key, seeds=4, steps=13)  # another shape does compile
    assert traces["n"] > first


def test_hyperparameters_are_read_only_and_a_reused_split_holds_no_tracer():
    """Splits are reused by the cell's identity, which is sound only while a cell cannot change
    (a mutated gain would otherwise keep its old split) and a traced cell is never kept."""
    from rnn_dynamics import _cell

    cell = rd.cells.vanilla(2, 5, gain=1.5)
    for mutate in (lambda h: h.__setitem__("gain", 3.0), lambda h: h.update(gain=3.0),
                   lambda h: h.pop("gain"), lambda h: h.clear()):
        with pytest.raises(TypeError, match="Hyper: a cell's hyperparameters are read-only"):
            mutate(cell.hyper)
    assert cell.hyper["gain"] == 1.5
    import copy
    import pickle

    for twin in (copy.deepcopy(cell), pickle.loads(pickle.dumps(cell))):  # rebuilt whole
        assert twin == cell and isinstance(twin.hyper, _cell.Hyper)
    static, hyper = _cell.split_cell(cell)
    again = _cell.split_cell(cell)
    assert again[0] is static and again[1] == hyper and again[1] is not hyper  # a fresh list
    assert _cell.merge_cell(*again) == cell

    def f(g):
        return rd.spectra(rd.cells.vanilla(2, 5, gain=g), jax.random.key(0), seeds=2, steps=4).log10_norm

    jax.vmap(f)(jnp.array([0.5, 1.0]))
    kept = [x for _, _, dyn in _cell._SPLITS.values() for x in dyn]
    assert kept and not any(isinstance(x, jax.core.Tracer) for x in kept)


def test_twenty_gain_vmapped_sweep_is_one_trace_and_equals_per_gain_calls(traces):
    key = jax.random.key(3)
    gains = jnp.linspace(0.3, 1.2, 20)

    def per_gain(g):
        return rd.spectra(rd.cells.vanilla(3, 12, gain=g), key, seeds=4, steps=25).log10_norm

    swept = jax.jit(jax.vmap(per_gain))(gains)
    one_trace = traces["n"]
    looped = np.stack([np.asarray(per_gain(float(g))) for g in gains])
    assert traces["n"] == 2 * one_trace  # the loop compiled once more (outside the user's jit), not 20 times
    assert swept.shape == (20, 4)
    np.testing.assert_allclose(np.asarray(swept), looped, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(np.asarray(rd.sweep(per_gain, gains)), looped, rtol=2e-5, atol=2e-5)
    # the numbers really matter: larger gains grow the norm
    assert np.all(np.diff(np.median(looped, axis=1)) > 0)


@pytest.mark.parametrize(
    "make",
    [
        lambda g: rd.cells.esn(2, 8, spectral_radius=g, leak_rate=0.5),
        lambda g: rd.cells.lstm(2, 4, gain=g),
        lambda g: rd.cells.irnn(2, 6, scale=g),
        lambda g: rd.cells.univariate(w=g, activation="tanh"),
    ],
    ids=["esn", "lstm", "irnn", "univariate"],
)
def test_factories_accept_traced_numbers(make):
    key = jax.random.key(1)

    def f(g):
        return rd.spectra(make(g), key, seeds=2, steps=6, dense=False).log10_norm

    gs = jnp.array([0.6, 0.9])
    np.testing.assert_allclose(np.asarray(jax.vmap(f)(gs)), np.stack([f(0.6), f(0.9)]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: rd.cells.vanilla(3, 5, bias_scale=0.5),
        lambda: rd.cells.lstm(3, 4),
        lambda: rd.cells.gru(3, 4),
        lambda: rd.cells.esn(3, 6, connectivity=2, bias_scale=0.1),
        lambda: rd.cells.vanilla(3, 5, recurrent_init=rd.init.orthogonal(1.2)),
    ],
    ids=["vanilla", "lstm", "gru", "esn-sparse", "orthogonal"],
)
def test_one_key_builds_one_network_at_both_precisions(make):
    key = jax.random.key(42)
    p32, h32, x32 = rd.draw_seed(make(), key, 7, h1=0.5)
    with enable_x64():
        p64, h64, x64 = rd.draw_seed(make(), key, 7, h1=0.5)
        assert jax.tree_util.tree_leaves(p64)[0].dtype == jnp.float64
        # the same network: equal up to float32 rounding of the weights (a different draw would
        # differ by O(1)); the float64 weights round to the float32 ones within an ulp or two
        for a, b in zip(jax.tree_util.tree_leaves(p32), jax.tree_util.tree_leaves(p64)):
            np.testing.assert_allclose(np.asarray(b).astype(np.float32), np.asarray(a), rtol=3e-7, atol=1e-30)
        np.testing.assert_allclose(np.asarray(h64).astype(np.float32), np.asarray(h32), rtol=3e-7)
        np.testing.assert_allclose(np.asarray(x64).astype(np.float32), np.asarray(x32), rtol=3e-7)


def test_params_are_checked_against_init_and_the_leaf_is_named():
    cell = rd.cells.vanilla(3, 4)
    p = cell.init(jax.random.key(0))
    h1, xs = jnp.zeros(4), jnp.ones((5, 3))
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        rd.jacobian(cell, {"W": p["W"], "U": p["U"]}, h1, xs)
    with pytest.raises(ValueError, match=r"params\['W'\]: expected shape \(4, 4\).*got \(3, 4\)"):
        rd.rollout(cell, {**p, "W": p["W"][:3]}, h1, xs)
    with pytest.raises(TypeError, match=r"params\['W'\]: expected a real floating dtype.*int32"):
        rd.jacobian_norms(cell, {**p, "W": p["W"].astype(jnp.int32)}, h1, xs)
    with pytest.raises(TypeError, match=r"params\['b'\].*complex"):
        rd.final_state(cell, {**p, "b": p["b"] + 0j}, h1, xs)
    batch = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), p)
    with pytest.raises(ValueError, match=r"jax\.vmap"):
        rd.jacobian(cell, batch, h1, xs)
    lstm = rd.cells.lstm(3, 4)
    with pytest.raises(ValueError, match=r"params\['Wh'\]: expected shape \(16, 4\)"):
        rd.jacobian(lstm, {**lstm.init(jax.random.key(0)), "Wh": jnp.zeros((16, 5))}, jnp.zeros(8), xs)
    # spectra checks a batch of per-seed params per seed
    with pytest.raises(ValueError, match=r"params\['U'\]"):
        rd.spectra(cell, jax.random.key(0), params={**batch, "U": jnp.zeros((2, 4, 2))}, steps=4)


@pytest.mark.parametrize("where", ["xs", "h1", "params['W']"])
def test_nan_input_is_reported_as_non_finite_input(where):
    cell = rd.cells.vanilla(3, 4)
    p = cell.init(jax.random.key(0))
    h1, xs = jnp.full(4, 0.1), jnp.ones((5, 3))
    if where == "xs":
        xs = xs.at[2, 1].set(jnp.nan)
    elif where == "h1":
        h1 = h1.at[0].set(jnp.nan)
    else:
        p = {**p, "W": p["W"].at[0, 0].set(jnp.inf)}
    for f in (lambda: rd.jacobian(cell, p, h1, xs), lambda: rd.jacobian_norms(cell, p, h1, xs, log10=True)):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            f()
        msgs = [str(m.message) for m in w if issubclass(m.category, rd.NumericalWarning)]
        assert len(msgs) == 1 and "non-finite input" in msgs[0] and where in msgs[0], msgs
        assert "range" not in msgs[0]


def test_spectra_on_user_params_equals_per_seed_calls():
    cell = rd.cells.gru(2, 5)
    keys = jax.random.split(jax.random.key(7), 3)
    params = jax.vmap(cell.init)(keys)
    xs = jax.random.normal(jax.random.key(8), (3, 9, 2))
    h1 = 0.3 * jnp.ones((3, 5))
    out = rd.spectra(cell, jax.random.key(0), params=params, xs=xs, h1=h1)
    assert out.log10_norms.shape == (3, 9)
    for i in range(3):
        p_i = jax.tree_util.tree_map(lambda a: a[i], params)
        np.testing.assert_allclose(out.log10_norms[i], rd.jacobian_norms(cell, p_i, h1[i], xs[i], log10=True),
                                   rtol=1e-5, atol=1e-5)
        sv = np.linalg.svd(np.asarray(rd.jacobian(cell, p_i, h1[i], xs[i])), compute_uv=False)
        np.testing.assert_allclose(out.singular_values[i], sv, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="steps"):
        rd.spectra(cell, jax.random.key(0), params=params, xs=xs, steps=5)
    with pytest.raises(ValueError, match="seeds"):
        rd.spectra(cell, jax.random.key(0), seeds=4, params=params, steps=5)


# ---------------------------------------------------------------- the XLA:CPU LAPACK deadlock


def _lapack_calls(cell, method):
    import re

    f = lambda k: getattr(rd.spectra(cell, k, seeds=8, steps=5), method)
    txt = jax.jit(f).lower(jax.random.key(0)).as_text()
    return re.findall(r"custom_call @(lapack_\w+)\(.*?num_batch_dims = \"(\d+)\"", txt)


@pytest.mark.parametrize("module", ["GRUCell", "LSTMCell"])
def test_spectra_never_batches_the_decompositions_of_an_init(module):
    """Batched LAPACK calls that XLA runs at once deadlock its 2-thread pool (a flax init has
    one orthogonal QR per gate under vmap). spectra draws params seed by seed instead."""
    import flax.linen as nn

    cell = rd.cells.from_flax(getattr(nn, module)(features=8), input_size=1)
    calls = _lapack_calls(cell, "singular_values")
    qr = [(name, b) for name, b in calls if "geqrf" in name or "orgqr" in name]
    assert qr, calls  # the init's QRs are in the program ...
    assert all(b == "0" for _, b in qr), qr  # ... unbatched


def test_flax_cells_at_n128_finish(tmp_path):
    """The reported hang, run in a subprocess with a timeout (it was intermittent)."""
    import subprocess
    import sys

    code = (
        "import os; os.environ['OPENBLAS_NUM_THREADS'] = '1'\n"
        "import jax, flax.linen as nn, rnn_dynamics as rd\n"
        "for M in (nn.LSTMCell, nn.GRUCell, nn.OptimizedLSTMCell):\n"
        "    cell = rd.cells.from_flax(M(features=128), input_size=1)\n"
        "    out = rd.spectra(cell, jax.random.key(0), seeds=8, steps=20, input_scale=0.0, h1=1.0, dense=False)\n"
        "    jax.block_until_ready(out)\n"
        "print('done')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0 and "done" in out.stdout, out.stderr[-2000:]
