"""rd.spectra: every cell against a loop of one-seed calls, the documented key split, the
summary properties against their definitions, and the out-of-range warning."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_dynamics as rd
from conftest import CELL_FACTORIES

pytestmark = pytest.mark.usefixtures("fast_compile")

KEY = jax.random.key(42)
CELL = rd.cells.vanilla(3, 6, "tanh", gain=1.2, bias_scale=0.2)
S, T = 5, 20

# ----------------------------------------------------------------------------- every cell

# Run in a fresh interpreter with a timeout: a hang inside XLA with vmapped flax cells has been
# seen (at n >= 32), and a hung test must fail, not stall the suite. float64, so that the only
# difference between the two sides is rounding; XLA's optimisation passes are off (compile time
# only, as the suite's ``fast_compile`` fixture).
_EVERY_CELL = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_disable_most_optimizations", True)
    import numpy as np
    import rnn_dynamics as rd
    from conftest import CELL_FACTORIES

    S, T, key = 3, 8, jax.random.key(4)
    part, parts = int(sys.argv[2]), int(sys.argv[3])
    out = {}
    for name, make in CELL_FACTORIES[part::parts]:
        cell = make()
        res = rd.spectra(cell, key, seeds=S, steps=T, h1=0.5)
        # the draws (checked against the documented key split elsewhere), then one seed at a time
        draws = jax.vmap(lambda k: rd.draw_seed(cell, k, T, h1=0.5))(jax.random.split(key, S))
        logs, svs = [], []
        for i in range(S):
            p, h1, xs = jax.tree_util.tree_map(lambda a: a[i], draws)
            logs.append(rd.jacobian_norms(cell, p, h1, xs, log10=True))
            svs.append(rd.singular_values(rd.jacobian(cell, p, h1, xs)))
        out[name + "/spectra_logs"] = np.asarray(res.log10_norms)
        out[name + "/spectra_sv"] = np.asarray(res.singular_values)
        out[name + "/loop_logs"] = np.stack(logs)
        out[name + "/loop_sv"] = np.stack(svs)
    np.savez(sys.argv[1], **out)
    """
)


def test_spectra_equals_a_loop_over_seeds_for_every_cell(tmp_path):
    """Each seed of rd.spectra equals draw_seed + jacobian_norms + jacobian for that seed.

    Tolerances: both sides are float64 and the horizon is 7 steps of non-chaotic networks, so
    they agree to rounding (measured ≤ 1e-15 in log10 norm and ≤ 4e-16 in σ); 1e-12 leaves room
    for other summation orders and still catches any mix-up of seeds, keys, h_1 or method, which
    moves them by 1e-3 or more.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    parts = 2  # two interpreters, half of the cells each: XLA compiles on one core
    files = [tmp_path / f"every_cell_{i}.npz" for i in range(parts)]
    procs = [subprocess.Popen([sys.executable, "-c", _EVERY_CELL, str(f), str(i), str(parts)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, f in enumerate(files)]
    deadline = time.monotonic() + 300
    try:
        errs = [p.communicate(timeout=max(1.0, deadline - time.monotonic()))[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-3000:]
    got = {}
    for f in files:
        got.update(np.load(f))
    failures = []
    for name, _ in CELL_FACTORIES:
        logs, ref_logs = got[name + "/spectra_logs"], got[name + "/loop_logs"]
        sv, ref_sv = got[name + "/spectra_sv"], got[name + "/loop_sv"]
        assert logs.shape == (3, 7) and sv.shape == ref_sv.shape and sv.shape[0] == 3, name
        assert np.all(np.isfinite(ref_logs)) and np.all(ref_sv[:, 0] > 0), f"{name}: degenerate draw"
        try:
            np.testing.assert_allclose(logs, ref_logs, rtol=0, atol=1e-12)
            np.testing.assert_allclose(sv, ref_sv, rtol=1e-12, atol=1e-12 * ref_sv.max())
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------------------- the draws


def test_draw_seed_follows_the_documented_key_split():
    """Seed i is drawn from split(key, S)[i] split in three (params, inputs, h1), in float32."""
    i = 3
    key_i = jax.random.split(KEY, S)[i]
    k_params, k_inputs, k_h1 = jax.random.split(key_i, 3)
    p, h1, xs = rd.draw_seed(CELL, key_i, T, input_scale=0.7, h1=0.3)
    ref = CELL.init(k_params)
    for name in ("W", "U", "b"):
        np.testing.assert_array_equal(p[name], ref[name])
    assert np.any(np.asarray(ref["b"]) != 0)  # bias_scale > 0: b is a real draw too
    np.testing.assert_array_equal(xs, 0.7 * jax.random.normal(k_inputs, (T - 1, 3), jnp.float32))
    np.testing.assert_array_equal(h1, 0.3 * jax.random.normal(k_h1, (6,), jnp.float32))
    # the default h1 is the cell's initial state; a (state_size,) array is used as given
    np.testing.assert_array_equal(rd.draw_seed(CELL, key_i, T)[1], np.zeros(6))
    fixed = np.linspace(-1, 1, 6, dtype=np.float32)
    np.testing.assert_array_equal(rd.draw_seed(CELL, key_i, T, h1=fixed)[1], fixed)


# ----------------------------------------------------------------------------- summaries


def _np_tanh_curve(p, h, xs):
    """‖∂h_t/∂h_1‖₂ for t = 2..T and the dense product, for a tanh cell, in numpy float64."""
    W, U, b = (np.asarray(p[k], np.float64) for k in ("W", "U", "b"))
    h, P, norms = np.asarray(h, np.float64), np.eye(len(h)), []
    for x in np.asarray(xs, np.float64):
        h = np.tanh(W @ h + U @ x + b)
        P = (1 - h**2)[:, None] * W @ P  # diag(φ'(a_t)) W, later factors on the left
        norms.append(np.linalg.norm(P, 2))
    return np.array(norms), P


def test_shared_inputs_fixed_h1_and_growth_rate_at_T3():
    """xs (T-1, m) shared by all seeds and a fixed h_1, against a dense numpy product; and
    growth_rate = ‖∂h_T/∂h_1‖₂^(1/(T-1)) at T = 3, where dividing by T instead would be off by
    a factor ‖·‖^(1/6) (at least 8% here)."""
    seeds = 3
    xs = np.array([[2.0, -3.0, 1.5], [-2.5, 2.0, 3.0]], np.float32)  # T - 1 = 2; saturating
    h1 = np.linspace(-0.8, 0.8, 6, dtype=np.float32)
    out = rd.spectra(CELL, KEY, seeds=seeds, xs=xs, h1=h1)  # steps inferred from xs
    assert out.log10_norms.shape == (seeds, 2) and out.singular_values.shape == (seeds, 6)
    for i, k in enumerate(jax.random.split(KEY, seeds)):
        p = CELL.init(jax.random.split(k, 3)[0])  # the documented params key, not draw_seed
        norms, P = _np_tanh_curve(p, h1, xs)
        np.testing.assert_allclose(out.log10_norms[i], np.log10(norms), rtol=0, atol=2e-6)
        np.testing.assert_allclose(out.singular_values[i], np.linalg.svd(P, compute_uv=False),
                                   rtol=1e-5, atol=1e-6 * norms[-1])
        np.testing.assert_allclose(out.growth_rate[i], norms[-1] ** (1 / 2), rtol=1e-5)
        assert abs(np.log10(norms[-1])) / 6 > np.log10(1.08)  # T vs T-1 is visible


def test_curve_only_dense_only_and_the_norm_fallback():
    both = rd.spectra(CELL, KEY, seeds=S, steps=T, batch_size=2)  # chunks of 2, 2 and 1
    curve = rd.spectra(CELL, KEY, seeds=S, steps=T, dense=False)
    dense = rd.spectra(CELL, KEY, seeds=S, steps=T, curve=False, method="jacrev")
    assert curve.singular_values is None and dense.log10_norms is None
    # seed-by-seed SVDs (what several CPU devices need): the same matrices, the same values
    serial = rd.spectra(CELL, KEY, seeds=S, steps=T, curve=False, method="jacrev", serial_svd=True)
    np.testing.assert_allclose(serial.singular_values, dense.singular_values, rtol=1e-6,
                               atol=1e-6 * float(np.max(dense.singular_values)))
    np.testing.assert_allclose(curve.log10_norms, both.log10_norms, rtol=0, atol=1e-6)
    np.testing.assert_allclose(dense.singular_values, both.singular_values, rtol=1e-4,
                               atol=1e-5 * float(np.max(both.singular_values)))
    # Without the curve, log10_norm is the largest singular value of the dense matrix: equal to
    # the curve's last entry (another computation); the smallest is orders of magnitude lower.
    np.testing.assert_allclose(dense.log10_norm, both.log10_norms[:, -1], rtol=0, atol=1e-4)
    assert np.all(np.log10(dense.singular_values[:, -1]) < dense.log10_norm - 1)
    with pytest.raises(ValueError, match="growth_rate needs the curve"):
        _ = dense.growth_rate
    with pytest.raises(ValueError, match="dense_ok needs the dense"):
        _ = curve.dense_ok
    with pytest.raises(ValueError, match="at least one"):
        rd.spectra(CELL, KEY, seeds=S, steps=T, curve=False, dense=False)


def test_dense_out_of_range_warns_with_the_count_and_the_curve_is_intact():
    """Seed 0 has w = 2 (2**200 overflows float32), seed 1 w = 1.1 (1.1**200 = 1.9e8 fits)."""
    cell = rd.cells.univariate()
    params = {"w": jnp.array([2.0, 1.1]), "u": jnp.ones(2), "b": jnp.zeros(2)}
    with pytest.warns(rd.NumericalWarning, match=r"left the range of float32 for 1 of 2 seeds") as rec:
        out = rd.spectra(cell, KEY, params=params, steps=201)
    assert rec[0].filename == __file__
    np.testing.assert_array_equal(out.dense_ok, [False, True])
    np.testing.assert_allclose(out.log10_norm, [200 * np.log10(2.0), 200 * np.log10(1.1)], rtol=1e-5)
    with warnings.catch_warnings():  # in range: silent
        warnings.simplefilter("error")
        ok = rd.spectra(cell, KEY, params=params, steps=51)
    np.testing.assert_array_equal(ok.dense_ok, [True, True])


def test_spectra_compiles_once_for_new_values():
    """key, input_scale and a scalar h1 are data: new values reuse the compiled function."""
    traces = []

    def step(params, h, x):
        traces.append(1)
        return CELL.step(params, h, x)

    cell = CELL._replace(step=step)
    a = rd.spectra(cell, KEY, seeds=S, steps=T, input_scale=1.0, h1=0.5, dense=False)
    n = len(traces)
    b = rd.spectra(cell, jax.random.key(1), seeds=S, steps=T, input_scale=0.5, h1=0.25, dense=False)
    assert n > 0 and len(traces) == n
    assert not np.allclose(a.log10_norms, b.log10_norms)  # the new values were used


def test_default_batch_size_follows_its_documented_rule():
    """A (batch, n, n) float32 carry of at most 128 KiB, at least 4 seeds, at most all of them."""
    cases = {(4, 64): 64, (32, 64): 32, (64, 64): 8, (128, 64): 4, (1024, 64): 4, (4, 1): 1,
             (32, 7): 7, (128, 3): 3}
    for (n, seeds), want in cases.items():
        assert rd.default_batch_size(n, seeds) == want, (n, seeds)


def test_repeated_calls_skip_the_checks_but_still_reject_bad_input(monkeypatch):
    """A call with the signature of an earlier one (same cell, settings, shapes and dtypes) goes
    straight to the compiled function; anything else is checked as on a first call."""
    from rnn_dynamics import _spectra

    cell = rd.cells.vanilla(2, 5, "tanh", gain=0.9)
    keys = jax.random.split(KEY, 3)
    params, h1, xs = jax.vmap(lambda k: rd.draw_seed(cell, k, 9, input_scale=0.5))(keys)
    first = rd.spectra(cell, KEY, params=params, h1=h1, xs=xs, input_scale=0.5)
    compiled = _spectra._spectra.plain._cache_size()
    checks = []
    real = _spectra.check_params
    monkeypatch.setattr(_spectra, "check_params", lambda *a, **k: (checks.append(1), real(*a, **k))[1])
    again = rd.spectra(cell, KEY, params=params, h1=h1, xs=xs, input_scale=0.5)
    assert checks == []  # the second call ran no check
    np.testing.assert_array_equal(again.singular_values, first.singular_values)
    np.testing.assert_array_equal(again.log10_norms, first.log10_norms)
    # new values of the same shapes reuse it, and are used
    other = rd.spectra(cell, KEY, params=jax.tree_util.tree_map(lambda a: 1.5 * a, params), h1=h1, xs=xs,
                       input_scale=0.5)
    assert checks == [] and not np.allclose(other.singular_values, first.singular_values)
    assert _spectra._spectra.plain._cache_size() == compiled  # and the same compiled function
    # equal values of other types are other calls: numpy params are checked (and give the same
    # numbers), a setting of the wrong type is refused as on a first call
    np_params = jax.tree_util.tree_map(np.asarray, params)
    np.testing.assert_array_equal(
        rd.spectra(cell, KEY, params=np_params, h1=h1, xs=xs, input_scale=0.5).singular_values, first.singular_values)
    with pytest.raises(TypeError, match="unroll"):
        rd.spectra(cell, KEY, params=params, h1=h1, xs=xs, input_scale=0.5, unroll=True)
    assert len(checks) == 2
    # a wrong leaf, a wrong dtype, a bad number: checked and named, as on a first call
    bad = dict(params, W=params["W"][:, :4])
    with pytest.raises(ValueError, match=r"params\['W'\]"):
        rd.spectra(cell, KEY, params=bad, h1=h1, xs=xs, input_scale=0.5)
    with pytest.raises(TypeError, match=r"params\['b'\]"):
        rd.spectra(cell, KEY, params=dict(params, b=params["b"].astype(jnp.int32)), h1=h1, xs=xs, input_scale=0.5)
    with pytest.raises(ValueError, match="input_scale"):
        rd.spectra(cell, KEY, params=params, h1=h1, xs=xs, input_scale=-0.5)
    with pytest.raises(ValueError, match="seeds"):
        rd.spectra(cell, KEY, params=jax.tree_util.tree_map(lambda a: a[:2], params), h1=h1, xs=xs,
                   input_scale=0.5)
    assert len(checks) == 6
    # an equal cell built anew is another signature: its first call is checked
    rd.spectra(rd.cells.vanilla(2, 5, "tanh", gain=0.9), KEY, params=params, h1=h1, xs=xs, input_scale=0.5)
    assert len(checks) == 7
