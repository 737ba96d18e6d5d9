"""Tests for rd.train, the models and losses, and the remedies (rnn_dynamics.remedies).

Every expected value comes from a closed form, a plain numpy loop, a dense matrix built
independently, or a second run of the same computation along another path.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnn_dynamics as rd
from rnn_dynamics import remedies

pytestmark = pytest.mark.usefixtures("fast_compile")  # XLA compile time dominates here

KEY = jax.random.key(0)


def adding(key, batch, length):
    """The adding problem, one answer per sequence: inputs (B, T, 2), targets (B,)."""
    kv, k1, k2 = jax.random.split(key, 3)
    v = jax.random.uniform(kv, (batch, length))
    i = jax.random.randint(k1, (batch,), 0, length // 2)
    j = jax.random.randint(k2, (batch,), length // 2, length)
    m = jax.nn.one_hot(i, length) + jax.nn.one_hot(j, length)
    return jnp.stack([v, m], -1), jnp.sum(v * m, 1), None


# --------------------------------------------------------------------------------------------
# models and losses


def test_model_loss_matches_numpy_for_sequence_classification_with_mask():
    """readout="all", softmax cross-entropy, per-step mask: against a numpy forward pass."""
    cell = rd.cells.vanilla(3, 5, "tanh", bias_scale=0.3)
    model = rd.Model(cell, output_size=4, readout="all", loss="xent")
    params = rd.init_model(model, KEY)
    B, L = 3, 6
    x = np.asarray(jax.random.normal(jax.random.key(1), (B, L, 3)))
    labels = np.asarray(jax.random.randint(jax.random.key(2), (B, L), 0, 4))
    mask = (np.arange(L)[None, :] >= np.array([[1], [3], [5]])).astype(np.float32)
    p = jax.tree_util.tree_map(np.asarray, params)
    total = 0.0
    for b in range(B):
        h = np.zeros(5)
        for t in range(L):
            h = np.tanh(p["cell"]["W"] @ h + p["cell"]["U"] @ x[b, t] + p["cell"]["b"])
            z = p["readout"]["W"] @ h + p["readout"]["b"]
            logp = z - np.log(np.sum(np.exp(z)))
            total += mask[b, t] * -logp[labels[b, t]]
    expected = total / mask.sum()
    loss = jax.jit(lambda t: rd.model_loss(model, params, (x, t, mask)))
    np.testing.assert_allclose(loss(labels), expected, rtol=1e-5)
    # one-hot targets, the convention of rd.tasks, give the same number
    np.testing.assert_allclose(loss(jax.nn.one_hot(labels, 4)), expected, rtol=1e-5)


def test_bad_inputs_name_the_argument():
    model = rd.Model(rd.cells.vanilla(2, 4), 1)
    params = rd.init_model(model, KEY)
    with pytest.raises(ValueError, match=r"targets: expected .*\(8,\) or \(8, 1\)"):
        rd.model_loss(model, params, (jnp.zeros((8, 5, 2)), jnp.zeros((8, 3)), None))
    with pytest.raises(ValueError, match=r"inputs: expected shape \(batch, length, 2\)"):
        rd.model_loss(model, params, (jnp.zeros((8, 5)), jnp.zeros((8,)), None))
    with pytest.raises(ValueError, match="optimizer: expected one of 'sgd'"):
        rd.train(rd.cells.vanilla(2, 4), functools.partial(adding, length=5), steps=1, key=KEY,
                 optimizer="adagrad")
    with pytest.raises(ValueError, match="checkpoint_every: expected a multiple of log_every=10"):
        rd.train(rd.cells.vanilla(2, 4), functools.partial(adding, length=5), steps=1, key=KEY,
                 log_every=10, checkpoint_every=15)


# --------------------------------------------------------------------------------------------
# training


def test_learns_the_adding_problem_T10():
    """A real learning test: 16 tanh units, Adam, T = 10, below MSE 0.02 (baseline 1/6)."""
    task = functools.partial(rd.tasks.adding, length=10)
    res = rd.train(rd.cells.vanilla(2, 16, "tanh"), task, steps=600, batch=64, key=KEY,
                   optimizer="adam", learning_rate=1e-2, log_every=300, probe_jacobians=0)
    test = rd.tasks.adding(jax.random.key(99), 1000, 10)
    first = float(res.logs["probe_loss"][0, 0])
    mse = float(rd.evaluate(res.model, res.params, test)[0])
    assert first > 0.1  # the untrained model is no better than the baseline
    assert mse < 0.02, mse
    assert res.model.readout == "all" and res.model.loss == "mse"


def test_clip_by_norm_caps_the_update_norm():
    """A linear cell with gain 3 at T = 20: gradients of order 3^19; SGD steps are lr·clip."""
    cell = rd.cells.linear(2, 6, gain=3.0)
    task = functools.partial(adding, length=20)
    res = rd.train(cell, task, steps=5, batch=8, key=KEY, optimizer="sgd", learning_rate=0.1,
                   clip_norm=1.0, log_every=5, probe_jacobians=0)
    assert res.logs["grad_norm_max"][0, -1] > 1e3
    chex.assert_trees_all_close(res.logs["update_norm_max"][0, -1], 0.1, rtol=1e-5)
    assert res.skipped[0] == 0


def test_nan_guard_skips_and_counts():
    """Batches with a NaN input are skipped (params untouched) and counted; others train."""

    def task(key, batch):
        x, y, m = adding(key, batch, 6)
        bad = jax.random.uniform(jax.random.fold_in(key, 7)) < 0.4
        return jnp.where(bad, jnp.nan, x), y, m

    keys = jax.random.split(KEY, 1)
    steps = 20
    expected = sum(
        bool(np.isnan(np.asarray(task(jax.random.fold_in(keys[0], t), 4)[0])).any())
        for t in range(steps))
    assert 0 < expected < steps
    with pytest.warns(rd.NumericalWarning, match=f"skipped \\[{expected}\\] of {steps} steps"):
        res = rd.train(rd.cells.vanilla(2, 4), task, steps=steps, batch=4, key=keys,
                       optimizer="sgd", learning_rate=0.1, log_every=steps, probe_jacobians=0)
    assert res.skipped.tolist() == [expected]
    chex.assert_tree_all_finite(res.params)
    init = jax.vmap(lambda k: rd.init_model(res.model, k))(keys)
    assert not np.allclose(res.params["cell"]["W"], init["cell"]["W"])  # the good steps trained


SMALL_TASK = functools.partial(adding, length=6)  # one object: equal runs share compiled code


def _small_run(key, **kw):
    return rd.train(rd.cells.vanilla(2, 5, "tanh"), SMALL_TASK, key=key,
                    batch=8, optimizer="momentum", learning_rate=0.05, probe_jacobians=0,
                    progress=False, **kw)


def test_vmapped_seeds_equal_separately_trained_seeds():
    together = _small_run(KEY, steps=30, seeds=3, log_every=15)
    for i in range(3):
        alone = _small_run(together.seed_keys[i:i + 1], steps=30, log_every=15)
        one = jax.tree_util.tree_map(lambda a: a[i:i + 1], together.params)
        chex.assert_trees_all_close(alone.params, one, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone.logs["probe_loss"][0], together.logs["probe_loss"][i],
                                   rtol=1e-5)


def test_batch_step_equals_the_vmapped_step_values_and_gradients():
    """The vanilla family's row-major batch step against ``vmap(step)``: a transposed W, a
    dropped bias or input term in it would train another model than the analyses study."""
    X = jax.random.normal(jax.random.key(1), (6, 9, 3))
    for cell in (rd.cells.vanilla(3, 5, "tanh", bias_scale=0.5),
                 rd.cells.vanilla(3, 5, "sigmoid", gain=1.7, bias_scale=0.5),
                 rd.cells.irnn(3, 5, input_gain=0.7), rd.cells.linear(3, 5, bias_scale=0.5)):
        assert cell.batch_step is not None
        plain = cell._replace(batch_step=None)
        model, ref = rd.Model(cell, 2, "all"), rd.Model(plain, 2, "all")
        params = rd.init_model(model, jax.random.key(2))
        H = jax.random.normal(jax.random.key(3), (6, 5))
        np.testing.assert_allclose(cell.batch_step(params["cell"], H, X[:, 0]),
                                   jax.vmap(cell.step, (None, 0, 0))(params["cell"], H, X[:, 0]),
                                   rtol=1e-6, atol=1e-6)
        batch = (X, jnp.ones((6, 9, 2)), None)
        g = jax.grad(lambda p: rd.model_loss(model, p, batch))(params)
        g_ref = jax.grad(lambda p: rd.model_loss(ref, p, batch))(params)
        chex.assert_trees_all_close(g, g_ref, rtol=1e-5, atol=1e-6)
    # a cell whose step was replaced afterwards trains with its new step, not the old batch step
    cell = rd.cells.vanilla(3, 5, "tanh")
    other = rd.cells.vanilla(3, 5, "sigmoid")
    swapped = cell._replace(step=other.step)
    params = rd.init_model(rd.Model(swapped, 2, "all"), jax.random.key(2))
    np.testing.assert_allclose(rd.predict(rd.Model(swapped, 2, "all"), params, X),
                               rd.predict(rd.Model(other, 2, "all"), params, X), rtol=1e-6)


def test_lapack_detection_keeps_decompositions_on_one_cpu_device():
    from rnn_dynamics._devices import seed_devices, uses_lapack

    def scanned(op):
        return jax.make_jaxpr(lambda a: jax.lax.scan(lambda c, _: (op(c), None), a, None, 3)[0])(
            jnp.eye(4))

    assert uses_lapack(scanned(lambda a: jnp.linalg.qr(a)[0]))
    assert uses_lapack(scanned(lambda a: jax.grad(lambda b: jnp.linalg.svd(b, compute_uv=False)[0])(a)))
    assert not uses_lapack(scanned(lambda a: jnp.tanh(a @ a)))
    cpu = jax.devices("cpu")[0]
    two = [cpu, cpu]
    assert seed_devices(two, 8, lambda: scanned(lambda a: jnp.tanh(a @ a))) == (cpu, cpu)
    assert seed_devices(two, 8, lambda: scanned(lambda a: jnp.linalg.qr(a)[0])) is None
    assert seed_devices(two, 1, lambda: 1 / 0) is None  # one seed: nothing to split, no trace
    assert seed_devices([cpu], 8, lambda: 1 / 0) is None


def test_seeds_split_over_two_cpu_devices_give_the_same_numbers():
    """3 seeds on 2 host devices (padded to 4) against one device: the same per-device program
    for each seed, so params, losses and probes agree bit for bit; the result lives on one
    device; a Lyapunov regulariser (a QR in the step) keeps training on one device."""
    code = """
        import functools, jax, numpy as np
        import rnn_dynamics as rd
        from rnn_dynamics import _train, remedies
        assert jax.device_count() == 2
        task = functools.partial(rd.tasks.adding, length=8)
        kw = dict(steps=20, key=jax.random.key(0), seeds=3, batch=8, log_every=10, progress=False,
                  probe_jacobians=2, probe_size=4)
        cell = rd.cells.vanilla(2, 6, "tanh")
        two = rd.train(cell, task, **kw)
        assert _train._chunk_sharded_jit.plain._cache_size() == 1
        one = rd.train(cell, task, devices=jax.devices()[:1], **kw)
        for a, b in zip(jax.tree.leaves(two.params), jax.tree.leaves(one.params)):
            assert a.sharding.device_set == {jax.devices()[0]}
            np.testing.assert_array_equal(a, b)
        for k in ("loss", "grad_norm", "probe_loss", "log10_jacobian_norm", "lambda_max"):
            np.testing.assert_array_equal(two.logs[k], one.logs[k])
        reg = remedies.lyapunov_regularizer(0.1, k=1, horizon=6)
        rd.train(cell, task, regularizers=[reg], **kw)
        assert _train._chunk_sharded_jit.plain._cache_size() == 1, "a QR step was sharded"
        print("ok")
    """
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, timeout=300,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_resume_after_interruption_is_bit_identical(tmp_path):
    def interrupt(step, logs):
        if step == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _small_run(KEY, steps=40, seeds=2, log_every=10, checkpoint_dir=tmp_path, callback=interrupt)
    resumed = _small_run(KEY, steps=40, seeds=2, log_every=10, checkpoint_dir=tmp_path)
    straight = _small_run(KEY, steps=40, seeds=2, log_every=10)
    chex.assert_trees_all_equal(resumed.params, straight.params)
    chex.assert_trees_all_equal(resumed.opt_state, straight.opt_state)
    for k in straight.logs:
        np.testing.assert_array_equal(resumed.logs[k], straight.logs[k])
    with pytest.raises(ValueError, match="checkpoint_dir: .* another configuration"):
        _small_run(KEY, steps=40, seeds=2, log_every=10, checkpoint_dir=tmp_path, clip_norm=1.0)


# --------------------------------------------------------------------------------------------
# Hessian-free


def test_gauss_newton_vector_product_equals_dense_JT_H_J():
    model = rd.Model(rd.cells.vanilla(2, 3, "tanh", bias_scale=0.5), output_size=2, loss="xent")
    params = rd.init_model(model, KEY)
    x = jax.random.normal(jax.random.key(1), (4, 5, 2))
    labels = jnp.array([0, 1, 1, 0])
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    outputs = lambda p: rd.predict(model, p, x)
    out_loss = lambda z: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, labels))

    @jax.jit
    def dense_and_matrix_free(v):
        J = jax.jacfwd(lambda f: outputs(unravel(f)).ravel())(flat)                      # (8, P)
        H = jax.hessian(lambda z: out_loss(z.reshape(4, 2)))(outputs(params).ravel())  # (8, 8)
        gv = remedies.gauss_newton_vp(outputs, out_loss, params, unravel(v))
        return J.T @ (H @ (J @ v)), jax.flatten_util.ravel_pytree(gv)[0]

    v = jax.random.normal(jax.random.key(2), flat.shape)
    dense, got = dense_and_matrix_free(v)
    np.testing.assert_allclose(got, dense, rtol=1e-4, atol=1e-6)
    assert float(jnp.vdot(v, got)) > 0  # G is positive semi-definite


def test_hessian_free_reduces_the_loss():
    task = functools.partial(adding, length=8)
    res = rd.train(rd.cells.vanilla(2, 8, "tanh"), task, steps=20, batch=64, key=KEY,
                   optimizer=remedies.hessian_free(damping=1.0, cg_iters=20), log_every=10,
                   probe_jacobians=0)
    probe = res.logs["probe_loss"][0]
    assert probe[-1] < 0.5 * probe[0], probe
    state = res.opt_state[-1]  # the chain's last element: HF's state
    assert isinstance(state, remedies.HessianFreeState)
    assert 0 < int(state.cg_iters[0]) <= 20
    assert float(state.damping[0]) != 1.0  # Levenberg–Marquardt adapted λ


# --------------------------------------------------------------------------------------------
# Pascanu's Ω and Lyapunov regularisation


def test_pascanu_omega_equals_a_direct_computation():
    """Ω = Σ_t (‖J_tᵀ δ_t‖/‖δ_t‖ − 1)², δ by a numpy backward loop (readout of the last state)."""
    cell = rd.cells.vanilla(2, 4, "tanh", gain=1.5, bias_scale=0.2)
    model = rd.Model(cell, 1)
    params = rd.init_model(model, KEY)
    x, y, _ = adding(jax.random.key(3), 3, 7)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    W, U, b = p["cell"]["W"], p["cell"]["U"], p["cell"]["b"]
    omegas = []
    for s in range(3):
        hs = [np.zeros(4)]
        for t in range(7):
            hs.append(np.tanh(W @ hs[-1] + U @ np.asarray(x[s, t], np.float64) + b))
        out = p["readout"]["W"] @ hs[-1] + p["readout"]["b"]
        delta = p["readout"]["W"].T @ (2 * (out - float(y[s])))     # ∂ℓ/∂h_T
        om = 0.0
        for t in range(7, 0, -1):                                     # J_t = diag(1 - h_t²) W
            back = (np.diag(1 - hs[t] ** 2) @ W).T @ delta
            om += (np.linalg.norm(back) / np.linalg.norm(delta) - 1) ** 2
            delta = back
        omegas.append(om)
    omega = jax.jit(jax.value_and_grad(lambda q: remedies.pascanu_omega(model, q, (x, y, None))))
    got, g = omega(params)
    np.testing.assert_allclose(got, np.mean(omegas), rtol=2e-5)
    # δ_t is a constant, so the readout (which enters Ω only through δ) gets no gradient
    chex.assert_tree_all_finite(g)
    np.testing.assert_array_equal(g["readout"]["W"], 0)  # readout enters only through δ


def _power_lambda_max(cell, cp, xs):
    """A small λ_max of our own (renormalised power iteration along one input sequence)."""
    n = cell.state_size

    def body(c, x):
        h, v = c
        h_new, jv = jax.jvp(lambda h_: cell.step(cp, h_, x), (h,), (v,))
        nrm = jnp.linalg.norm(jv)
        return (h_new, jv / nrm), jnp.log(nrm)

    _, logs = jax.lax.scan(body, (cell.initial_state(cp), jnp.ones((n,)) / math.sqrt(n)), xs)
    return jnp.mean(logs[10:])


def test_lyapunov_regularisation_moves_lambda_max_toward_zero_on_a_chaotic_network():
    """g = 3: λ_max ≈ 0.25 > 0 (chaos). Flossing alone (loss_weight = 0, the term built on
    rd.lyapunov_spectrum's QR) brings it near 0 in 300 steps; measured by our own power
    iteration (an independent estimate) and by the logged probe value."""
    cell = rd.cells.vanilla(1, 32, "tanh", gain=3.0)

    def task(key, batch):
        return 0.5 * jax.random.normal(key, (batch, 60, 1)), jnp.zeros((batch,)), None

    reg = remedies.lyapunov_regularizer(1.0, k=1, sequences=4)
    res = rd.train(cell, task, steps=300, batch=4, key=KEY, seeds=3, optimizer="adam",
                   learning_rate=3e-2, loss_weight=0.0, regularizers=(reg,), log_every=300,
                   probe_size=4, probe_jacobians=4)
    p0 = jax.vmap(lambda k: rd.init_model(res.model, k))(res.seed_keys)
    xs = task(jax.random.key(5), 4)[0]
    own = jax.vmap(lambda p: jnp.mean(jax.vmap(lambda x: _power_lambda_max(cell, p["cell"], x))(xs)))
    before, after = np.median(own(p0)), np.median(own(res.params))
    assert before > 0.15, before
    assert abs(after) < 0.4 * before, (before, after)
    lam = np.median(res.logs["lambda_max"], axis=0)
    assert lam[0] > 0.15 and abs(lam[-1]) < 0.4 * lam[0], lam


def test_echo_state_start_sets_the_spectral_radius():
    cell, opt = remedies.echo_state_start(2, 50, spectral_radius=1.1)
    W = np.asarray(cell.init(KEY)["W"])
    np.testing.assert_allclose(np.max(np.abs(np.linalg.eigvals(W))), 1.1, rtol=1e-4)
    assert isinstance(opt, optax.GradientTransformation)


# --------------------------------------------------------------------------------------------
# command line and plots


def test_cli_train_and_compare(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from rnn_dynamics import _cli_train

    parser = argparse.ArgumentParser()
    _cli_train.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "train"
    args = parser.parse_args(["train", "--task", "adding", "--length", "6", "--cell", "irnn",
                              "--hidden", "6", "--steps", "20", "--batch", "8", "--seeds", "2",
                              "--log-every", "10", "--clip", "1.0", "--out", str(out),
                              "--no-progress"])
    assert args.func(args) == 0
    lines = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines()]
    assert {r["seed"] for r in lines} == {0, 1} and max(r["step"] for r in lines) == 20
    assert (out / "training.png").exists() and (out / "checkpoint.npz").exists()
    assert args.func(args) == 0  # rerun: resumes, nothing left to do
    out2 = tmp_path / "compare"
    args = parser.parse_args(["compare", "--length", "6", "--hidden", "4", "--steps", "10",
                              "--seeds", "2", "--only", "irnn", "--log-every", "5",
                              "--out", str(out2)])
    assert args.func(args) == 0
    table = json.loads((out2 / "compare.json").read_text())
    assert [r["name"] for r in table["rows"]] == ["irnn"] and len(table["rows"][0]["test_mse"]) == 2
    assert "| irnn | 6 | 10 |" in (out2 / "compare.md").read_text()
