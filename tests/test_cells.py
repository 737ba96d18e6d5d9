"""Tests for rnn_dynamics.cells: every cell's contract, and each cell against closed forms,
numpy re-implementations of its documented equations, or flax's own cells."""
from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_dynamics as rd
from conftest import ALL_CELLS, FLAX_CELLS, KEYLESS_CELLS, x64_enabled

pytestmark = pytest.mark.usefixtures("fast_compile")

# Sizes every cell of ALL_CELLS is documented to have (input_size, state_size, hidden_size),
# written out by hand from the conftest factories (m = 3, n = 4).
EXPECTED_SIZES = {
    "linear": (3, 4, 4),
    "vanilla-tanh": (3, 4, 4),
    "vanilla-sigmoid": (3, 4, 4),
    "vanilla-relu": (3, 4, 4),
    "univariate": (1, 1, 1),
    "irnn": (3, 4, 4),
    "lstm": (3, 8, 4),  # state [h, c]
    "gru": (3, 4, 4),
    "esn": (3, 4, 4),
    "stack": (3, 9, 5),  # vanilla(3, 4) then vanilla(4, 5)
    "flax-SimpleCell": (3, 4, 4),
    "flax-GRUCell": (3, 4, 4),
    "flax-LSTMCell": (3, 8, 4),  # carry (c, h)
    "flax-OptimizedLSTMCell": (3, 8, 4),
}

# Parameter shapes from the layout table in the cells module docstring.
_VANILLA_SHAPES = {"W": (4, 4), "U": (4, 3), "b": (4,)}
EXPECTED_PARAM_SHAPES = {
    "linear": _VANILLA_SHAPES,
    "vanilla-tanh": _VANILLA_SHAPES,
    "vanilla-sigmoid": _VANILLA_SHAPES,
    "vanilla-relu": _VANILLA_SHAPES,
    "univariate": {"w": (), "u": (), "b": ()},
    "irnn": _VANILLA_SHAPES,
    "lstm": {"Wx": (16, 3), "Wh": (16, 4), "b": (16,)},
    "gru": {"Wx": (12, 3), "Wh": (12, 4), "bx": (12,), "bh": (12,)},
    "esn": _VANILLA_SHAPES,
    "stack": (_VANILLA_SHAPES, {"W": (5, 5), "U": (5, 4), "b": (5,)}),
}

FLAX_MODULES = {
    "flax-SimpleCell": nn.SimpleCell,
    "flax-GRUCell": nn.GRUCell,
    "flax-LSTMCell": nn.LSTMCell,
    "flax-OptimizedLSTMCell": nn.OptimizedLSTMCell,
}


# The vanilla cells of ALL_CELLS with other activations share every code path of init, dtype
# and vmap handling with vanilla-tanh and linear; tests of those paths skip them.
SAME_INIT_AS_LINEAR = {"vanilla-tanh", "vanilla-sigmoid", "vanilla-relu"}


def cells_except(skip):
    return [c for c in ALL_CELLS if c.id not in skip]


# ----------------------------------------------------------------------------- shared code


def _rand(seed, shape, scale=1.0, dtype=np.float32):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(dtype)


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def np_sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


NP_ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": np_sigmoid,
    "relu": lambda a: np.maximum(a, 0.0),
    "linear": lambda a: a,
}


def np_vanilla_step(p, h, x, act):
    W, U, b = (np.asarray(p[k], np.float64) for k in ("W", "U", "b"))
    return NP_ACTIVATIONS[act](W @ h + U @ x + b)


def np_lstm_step(p, state, x):
    """The documented equations: [i; f; g; o] = Wx x + Wh h + b; c' = σ(f)c + σ(i)tanh(g);
    h' = σ(o) tanh(c'); state [h, c]."""
    Wx, Wh, b = (np.asarray(p[k], np.float64) for k in ("Wx", "Wh", "b"))
    n = Wh.shape[1]
    h, c = state[:n], state[n:]
    a = Wx @ x + Wh @ h + b
    i, f, g, o = a[:n], a[n : 2 * n], a[2 * n : 3 * n], a[3 * n :]
    c = np_sigmoid(f) * c + np_sigmoid(i) * np.tanh(g)
    h = np_sigmoid(o) * np.tanh(c)
    return np.concatenate([h, c])


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name, make", ALL_CELLS)
def test_sizes_shapes_and_float32_default(name, make, key):
    cell = make()
    assert isinstance(cell, rd.Cell)
    assert (cell.input_size, cell.state_size, cell.hidden_size) == EXPECTED_SIZES[name]

    params = cell.init(key)
    leaves = _leaves(params)
    assert leaves
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)
    if name in EXPECTED_PARAM_SHAPES:
        shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), params)
        assert shapes == EXPECTED_PARAM_SHAPES[name]

    h = cell.initial_state(params)
    assert h.shape == (cell.state_size,)
    assert h.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(h), 0.0)

    h = h + jnp.asarray(_rand(1, cell.state_size, 0.5))
    out = cell.step(params, h, jnp.asarray(_rand(2, cell.input_size)))
    assert out.shape == (cell.state_size,)
    assert out.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(out)))
    assert cell.hidden(out).shape == (cell.hidden_size,)


@pytest.mark.parametrize("name", sorted(FLAX_MODULES))
def test_from_flax_params_are_flax_own_init(name):
    """from_flax(module).init(key) is exactly what flax's module.init gives with that key."""
    n, m = 4, 3
    key = jax.random.key(3)  # not key(0): a cell that ignored its key would still match that one
    module = FLAX_MODULES[name](features=n)
    cell = rd.cells.from_flax(module, input_size=m)
    carry = module.initialize_carry(jax.random.key(1), (m,))
    ref = module.init(key, carry, jnp.zeros((m,)))
    ours = cell.init(key)
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(ref)
    for a, b in zip(_leaves(ours), _leaves(ref)):
        assert _same_bits(a, b)
    # One step equals flax's own apply (with the carry flattened as documented).
    h = _rand(3, cell.state_size, 0.5)
    x = _rand(4, m)
    if "LSTM" in name:  # carry (c, h) flattens to [c, h]
        fcarry = (jnp.asarray(h[:n]), jnp.asarray(h[n:]))
        want = np.concatenate([np.asarray(a) for a in module.apply(ref, fcarry, x)[0]])
        np.testing.assert_array_equal(np.asarray(cell.hidden(jnp.asarray(h))), h[n:])
    else:
        want = np.asarray(module.apply(ref, jnp.asarray(h), x)[0])
    np.testing.assert_allclose(np.asarray(cell.step(ours, jnp.asarray(h), x)), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name, make", cells_except({"vanilla-sigmoid", "vanilla-relu"}))
def test_float64_when_x64_enabled(name, make, key):
    with x64_enabled():
        cell = make()
        params = cell.init(key)
        if name not in FLAX_CELLS:  # flax params follow the module's own param_dtype
            assert all(leaf.dtype == jnp.float64 for leaf in _leaves(params))
        h = cell.initial_state(params)
        assert h.shape == (cell.state_size,)
        assert h.dtype == jnp.float64
        x = jnp.ones((cell.input_size,))
        assert x.dtype == jnp.float64
        out = cell.step(params, h + 0.5, x)
        assert out.shape == (cell.state_size,)
        # The state's dtype must survive a step, or lax.scan rejects the carry.
        assert out.dtype == jnp.float64
        assert np.all(np.isfinite(np.asarray(out)))  # finish inside the float64 block


@pytest.mark.parametrize(
    "make",
    [
        lambda dt: rd.cells.vanilla(3, 4, bias_scale=0.1, dtype=dt),
        lambda dt: rd.cells.univariate(dtype=dt),
        lambda dt: rd.cells.lstm(3, 4, dtype=dt),
        lambda dt: rd.cells.gru(3, 4, dtype=dt),
        lambda dt: rd.cells.esn(3, 4, bias_scale=0.1, dtype=dt),
    ],
    ids=["vanilla", "univariate", "lstm", "gru", "esn"],
)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32-under-x64"])
def test_requested_param_dtype_is_honoured(make, dtype):
    """``dtype=`` is the parameter dtype (cells docstring): every leaf must have it."""
    if dtype == "bfloat16":
        ctx, want = contextlib.nullcontext(), jnp.bfloat16
    else:
        ctx, want = x64_enabled(), jnp.float32
    with ctx:
        cell = make(want)
        params = jax.block_until_ready(cell.init(jax.random.key(0)))
        got = jax.tree_util.tree_map(lambda a: jnp.dtype(a.dtype).name, params)
        assert all(leaf == jnp.dtype(want).name for leaf in _leaves(got)), got
        assert cell.initial_state(params).dtype == want


@pytest.mark.parametrize("name, make", cells_except(SAME_INIT_AS_LINEAR | FLAX_CELLS))
def test_different_keys_different_params(name, make):
    """Every drawn matrix depends on the key (flax cells: test_from_flax_params_are_flax_own_init)."""
    cell = make()
    p1 = cell.init(jax.random.key(1))
    p2 = cell.init(jax.random.key(2))
    if name in KEYLESS_CELLS:  # documented to ignore the key
        assert all(_same_bits(a, b) for a, b in zip(_leaves(p1), _leaves(p2)))
        return
    if name == "irnn":  # W = I whatever the key; U is random
        assert _same_bits(p1["W"], p2["W"])
        np.testing.assert_array_equal(np.asarray(p1["W"]), np.eye(4))
        assert not np.array_equal(np.asarray(p1["U"]), np.asarray(p2["U"]))
        return
    matrices = [(a, b) for a, b in zip(_leaves(p1), _leaves(p2)) if a.ndim == 2]
    assert matrices
    for a, b in matrices:  # every weight matrix is drawn from the key
        assert not np.array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------------------- vanilla & co


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "linear"])
def test_vanilla_step_matches_numpy(activation):
    cell = rd.cells.vanilla(3, 5, activation, gain=1.3, bias_scale=0.5)
    assert cell.name == f"vanilla-{activation}"
    p = cell.init(jax.random.key(3))
    assert np.any(np.asarray(p["b"]) != 0)  # the bias is exercised
    for seed in range(3):
        h = _rand(10 + seed, 5)
        x = _rand(20 + seed, 3)
        got = np.asarray(cell.step(p, jnp.asarray(h), jnp.asarray(x)))
        want = np_vanilla_step(p, h.astype(np.float64), x.astype(np.float64), activation)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_vanilla_without_bias_keeps_zero_bias():
    cell = rd.cells.vanilla(2, 3, bias=False, bias_scale=1.0)
    np.testing.assert_array_equal(np.asarray(cell.init(jax.random.key(0))["b"]), 0.0)


def test_univariate_step_closed_form():
    cell = rd.cells.univariate(w=0.7, u=-1.5, b=0.25, activation="tanh")
    p = cell.init(None)
    got = float(cell.step(p, jnp.array([0.4]), jnp.array([2.0]))[0])
    assert got == pytest.approx(0.7 * np.tanh(0.4) - 1.5 * 2.0 + 0.25, rel=1e-6)


def test_univariate_rejects_non_numbers():
    with pytest.raises(TypeError, match="w"):
        rd.cells.univariate(w="big")


def test_irnn_zero_input_keeps_positive_state_and_identity_jacobian():
    cell = rd.cells.irnn(3, 4)
    p = cell.init(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(p["W"]), np.eye(4))
    np.testing.assert_array_equal(np.asarray(p["b"]), 0.0)
    h1 = np.array([0.5, 1.0, 2.0, 0.1], np.float32)
    xs = np.zeros((10, 3), np.float32)
    hs = np.asarray(rd.rollout(cell, p, h1, xs))
    np.testing.assert_array_equal(hs, np.broadcast_to(h1, (10, 4)))
    J = np.asarray(rd.jacobian(cell, p, h1, xs))
    np.testing.assert_array_equal(J, np.eye(4))


# ----------------------------------------------------------------------------- LSTM


def test_lstm_step_matches_numpy():
    n, m = 4, 3
    cell = rd.cells.lstm(m, n, forget_bias=0.7, gain=1.2)
    p = cell.init(jax.random.key(2))
    b = np.asarray(p["b"])
    np.testing.assert_array_equal(b[n : 2 * n], np.float32(0.7))  # forget block
    np.testing.assert_array_equal(np.delete(b, np.s_[n : 2 * n]), 0.0)
    p = dict(p, b=jnp.asarray(_rand(0, 4 * n)))  # exercise every bias block
    for seed in range(3):
        s = _rand(10 + seed, 2 * n)
        x = _rand(20 + seed, m)
        got = np.asarray(cell.step(p, jnp.asarray(s), jnp.asarray(x)))
        want = np_lstm_step(p, s.astype(np.float64), x.astype(np.float64))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_lstm_saturated_forget_gate_carries_c_unchanged():
    """Lecture exercise: forget gate open (σ(+50) = 1), input gate closed (σ(-50) ≈ 0)
    => c_T = c_1 and ∂c_T/∂c_1 = I."""
    n, m = 4, 3
    cell = rd.cells.lstm(m, n)
    p = cell.init(jax.random.key(4))
    i_rows, f_rows = slice(0, n), slice(n, 2 * n)
    Wx = np.asarray(p["Wx"]).copy()
    Wh = np.asarray(p["Wh"]).copy()
    b = _rand(5, 4 * n)
    for rows, bias in ((f_rows, 50.0), (i_rows, -50.0)):
        Wx[rows] = 0.0
        Wh[rows] = 0.0
        b[rows] = bias
    p = {"Wx": jnp.asarray(Wx), "Wh": jnp.asarray(Wh), "b": jnp.asarray(b)}

    h1 = _rand(6, n, 0.5)
    c1 = np.array([0.8, -1.3, 2.0, -0.4], np.float32)
    s1 = np.concatenate([h1, c1])
    xs = _rand(7, (20, m))

    hs = np.asarray(rd.rollout(cell, p, s1, xs))
    h_T, c_T = rd.cells.split_lstm_state(hs[-1])
    np.testing.assert_allclose(np.asarray(c_T), c1, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(hs[:, n:]), np.broadcast_to(c1, (20, n)), rtol=1e-6)

    J = np.asarray(rd.jacobian(cell, p, s1, xs))
    assert J.shape == (2 * n, 2 * n)
    np.testing.assert_allclose(J[n:, n:], np.eye(n), atol=1e-6)


def test_split_lstm_state():
    s = jnp.arange(8.0)
    h, c = rd.cells.split_lstm_state(s)
    np.testing.assert_array_equal(np.asarray(h), [0, 1, 2, 3])
    np.testing.assert_array_equal(np.asarray(c), [4, 5, 6, 7])
    hb, cb = rd.cells.split_lstm_state(jnp.arange(16.0).reshape(2, 8))
    assert hb.shape == cb.shape == (2, 4)
    np.testing.assert_array_equal(np.asarray(cb[1]), [12, 13, 14, 15])
    with pytest.raises(ValueError, match="even"):
        rd.cells.split_lstm_state(jnp.zeros(5))


# ----------------------------------------------------------------------------- flax equivalence


def _randomize_flax_biases(params, seed):
    rng = np.random.default_rng(seed)
    inner = {
        name: {
            k: (v if k == "kernel" else jnp.asarray(rng.standard_normal(v.shape), v.dtype))
            for k, v in layer.items()
        }
        for name, layer in params["params"].items()
    }
    return {"params": inner}


def test_gru_matches_flax_gru_cell():
    n, m, T1 = 4, 3, 12
    fcell = rd.cells.from_flax(nn.GRUCell(features=n), input_size=m)
    fp = _randomize_flax_biases(fcell.init(jax.random.key(0)), 1)
    P = {k: {kk: np.asarray(vv) for kk, vv in v.items()} for k, v in fp["params"].items()}
    assert "bias" not in P["hr"] and "bias" not in P["hz"] and "bias" in P["hn"]

    # Dense: y = x @ K + b, so our (fan_out, fan_in) blocks are K.T; gate order r, z, n.
    ours = rd.cells.gru(m, n)
    op = {
        "Wx": np.concatenate([P["ir"]["kernel"].T, P["iz"]["kernel"].T, P["in"]["kernel"].T]),
        "Wh": np.concatenate([P["hr"]["kernel"].T, P["hz"]["kernel"].T, P["hn"]["kernel"].T]),
        "bx": np.concatenate([P["ir"]["bias"], P["iz"]["bias"], P["in"]["bias"]]),
        "bh": np.concatenate([np.zeros(n), np.zeros(n), P["hn"]["bias"]]),
    }
    op = {k: jnp.asarray(v, jnp.float32) for k, v in op.items()}
    assert jax.tree_util.tree_map(jnp.shape, op) == jax.tree_util.tree_map(
        jnp.shape, ours.init(jax.random.key(0))
    )

    h1 = _rand(2, n, 0.5)
    xs = _rand(3, (T1, m))
    np.testing.assert_allclose(
        np.asarray(rd.rollout(ours, op, h1, xs)),
        np.asarray(rd.rollout(fcell, fp, h1, xs)),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        np.asarray(rd.jacobian(ours, op, h1, xs)),
        np.asarray(rd.jacobian(fcell, fp, h1, xs)),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("module", [nn.LSTMCell, nn.OptimizedLSTMCell], ids=lambda c: c.__name__)
def test_lstm_matches_flax_lstm_cells(module):
    n, m, T1 = 4, 3, 12
    fcell = rd.cells.from_flax(module(features=n), input_size=m)
    fp = _randomize_flax_biases(fcell.init(jax.random.key(0)), 1)
    P = {k: {kk: np.asarray(vv) for kk, vv in v.items()} for k, v in fp["params"].items()}
    assert all("bias" not in P[g] for g in ("ii", "if", "ig", "io"))

    ours = rd.cells.lstm(m, n)
    gates = "ifgo"
    op = {
        "Wx": np.concatenate([P["i" + g]["kernel"].T for g in gates]),
        "Wh": np.concatenate([P["h" + g]["kernel"].T for g in gates]),
        "b": np.concatenate([P["h" + g]["bias"] for g in gates]),
    }
    op = {k: jnp.asarray(v, jnp.float32) for k, v in op.items()}

    # flax state is [c, h], ours [h, c]: ours = flax[perm].
    perm = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    s1_ours = _rand(2, 2 * n, 0.5)
    s1_flax = np.empty_like(s1_ours)
    s1_flax[perm] = s1_ours
    xs = _rand(3, (T1, m))

    r_ours = np.asarray(rd.rollout(ours, op, s1_ours, xs))
    r_flax = np.asarray(rd.rollout(fcell, fp, s1_flax, xs))
    np.testing.assert_allclose(r_ours, r_flax[:, perm], rtol=1e-5, atol=1e-6)
    # hidden() is the h half in both layouts.
    np.testing.assert_allclose(
        np.asarray(ours.hidden(r_ours[-1])), np.asarray(fcell.hidden(r_flax[-1])), rtol=1e-5, atol=1e-6
    )

    J_ours = np.asarray(rd.jacobian(ours, op, s1_ours, xs))
    J_flax = np.asarray(rd.jacobian(fcell, fp, s1_flax, xs))
    np.testing.assert_allclose(J_ours, J_flax[np.ix_(perm, perm)], rtol=1e-5, atol=1e-6)


def test_from_flax_rejects_non_flax_objects():
    with pytest.raises(TypeError, match="module"):
        rd.cells.from_flax(object(), input_size=3)
    with pytest.raises(TypeError, match="module"):
        rd.cells.from_flax(lambda c, x: (c, x), input_size=3)
    with pytest.raises(TypeError, match="module"):
        rd.cells.from_flax(nn.Dense(4), input_size=3)  # a flax module, but not an RNN cell


# ----------------------------------------------------------------------------- stack


def test_stack_of_vanillas_equals_layer_by_layer_loop():
    n1, n2, m, T1 = 4, 5, 3, 8
    c1 = rd.cells.vanilla(m, n1, "tanh", bias_scale=0.3)
    c2 = rd.cells.vanilla(n1, n2, "sigmoid", bias_scale=0.3)
    deep = rd.cells.stack([c1, c2])
    assert (deep.input_size, deep.state_size, deep.hidden_size) == (m, n1 + n2, n2)
    assert deep.layers == (c1, c2)
    p1, p2 = deep.init(jax.random.key(0))
    s1 = _rand(1, n1 + n2, 0.5)
    xs = _rand(2, (T1, m))

    a, b = s1[:n1].astype(np.float64), s1[n1:].astype(np.float64)
    want = []
    for x in xs.astype(np.float64):
        a = np_vanilla_step(p1, a, x, "tanh")
        b = np_vanilla_step(p2, b, a, "sigmoid")  # layer 2 reads layer 1's new state
        want.append(np.concatenate([a, b]))
    got = np.asarray(rd.rollout(deep, (p1, p2), s1, xs))
    np.testing.assert_allclose(got, np.array(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(deep.hidden(got[-1])), want[-1][n1:], rtol=1e-5, atol=1e-6)

    # Layer 1 never reads layer 2: that block of ∂h_T/∂h_1 is exactly zero.
    J = np.asarray(rd.jacobian(deep, (p1, p2), s1, xs))
    np.testing.assert_array_equal(J[:n1, n1:], 0.0)


def test_stack_lstm_then_vanilla_reads_lstm_hidden():
    n1, n2, m, T1 = 3, 2, 2, 6
    lstm = rd.cells.lstm(m, n1)
    top = rd.cells.vanilla(n1, n2, "tanh", bias_scale=0.3)
    deep = rd.cells.stack([lstm, top])
    assert (deep.state_size, deep.hidden_size) == (2 * n1 + n2, n2)
    p1, p2 = deep.init(jax.random.key(3))
    s1 = _rand(1, 2 * n1 + n2, 0.5)
    xs = _rand(2, (T1, m))
    a, b = s1[: 2 * n1].astype(np.float64), s1[2 * n1 :].astype(np.float64)
    for x in xs.astype(np.float64):
        a = np_lstm_step(p1, a, x)
        b = np_vanilla_step(p2, b, a[:n1], "tanh")  # the LSTM's h, not [h, c]
    got = np.asarray(rd.final_state(deep, (p1, p2), s1, xs))
    np.testing.assert_allclose(got, np.concatenate([a, b]), rtol=1e-5, atol=1e-6)


def test_stack_of_lstm_and_gru_independent_layer_keys_and_finite_differences(x64):
    """Layer k's params are layer_k.init(jax.random.split(key, 2)[k]) (independent keys), and
    ∂h_T/∂h_1 of the stack equals central finite differences of its final state (float64)."""
    lstm, gru = rd.cells.lstm(2, 3), rd.cells.gru(3, 4)
    deep = rd.cells.stack([lstm, gru])
    key = jax.random.key(5)
    params = deep.init(key)
    k0, k1 = jax.random.split(key, 2)
    for got, want in zip(params, (lstm.init(k0), gru.init(k1))):
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
        assert all(_same_bits(a, b) for a, b in zip(_leaves(got), _leaves(want)))

    n = deep.state_size  # 2·3 + 4
    h1 = _rand(1, n, 0.5, np.float64)
    xs = _rand(2, (6, 2), 1.0, np.float64)
    J = np.asarray(rd.jacobian(deep, params, h1, xs))
    final = jax.jit(lambda h: rd.final_state(deep, params, h, xs))
    eps = 1e-6
    fd = np.stack([(np.asarray(final(h1 + eps * e)) - np.asarray(final(h1 - eps * e))) / (2 * eps)
                   for e in np.eye(n)], axis=1)
    assert np.abs(J).max() > 1e-2
    np.testing.assert_allclose(J, fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(J[:6, 6:], 0.0)  # the LSTM never reads the GRU


def test_stack_size_mismatch_names_the_layer():
    with pytest.raises(ValueError, match=r"cells\[1\]\.input_size"):
        rd.cells.stack([rd.cells.vanilla(3, 4), rd.cells.vanilla(5, 6)])
    with pytest.raises(ValueError, match=r"cells\[2\]\.input_size"):
        rd.cells.stack([rd.cells.vanilla(3, 4), rd.cells.lstm(4, 2), rd.cells.gru(4, 2)])


def test_stack_rejects_non_cells():
    with pytest.raises(TypeError, match="cells"):
        rd.cells.stack([])
    with pytest.raises(TypeError, match="cells"):
        rd.cells.stack([rd.cells.vanilla(3, 4), "vanilla"])


def test_split_stack_state():
    deep = rd.cells.stack([rd.cells.vanilla(3, 4), rd.cells.lstm(4, 2), rd.cells.vanilla(2, 3)])
    assert deep.state_size == 4 + 4 + 3
    parts = rd.cells.split_stack_state(deep, jnp.arange(11.0))
    assert [np.asarray(p).tolist() for p in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    batched = rd.cells.split_stack_state(deep, jnp.arange(22.0).reshape(2, 11))
    assert [p.shape for p in batched] == [(2, 4), (2, 4), (2, 3)]
    np.testing.assert_array_equal(np.asarray(batched[2][1]), [19, 20, 21])
    with pytest.raises(ValueError, match="stack"):
        rd.cells.split_stack_state(rd.cells.vanilla(3, 4), jnp.zeros(4))


# ----------------------------------------------------------------------------- esn


@pytest.mark.parametrize("radius, connectivity", [(0.5, None), (1.3, 3)])
def test_esn_spectral_radius(radius, connectivity):
    n = 12
    cell = rd.cells.esn(2, n, spectral_radius=radius, connectivity=connectivity)
    W = np.asarray(cell.init(jax.random.key(1))["W"], np.float64)
    rho = np.max(np.abs(np.linalg.eigvals(W)))
    assert rho == pytest.approx(radius, rel=1e-5)
    if connectivity is not None:
        np.testing.assert_array_equal(np.count_nonzero(W, axis=1), connectivity)


@pytest.mark.parametrize("leak_rate", [0.0, 1.5])  # negative, NaN, inf: test_checks
def test_esn_leak_rate_outside_unit_interval_raises(leak_rate):
    with pytest.raises(ValueError, match="leak_rate"):
        rd.cells.esn(2, 4, leak_rate=leak_rate)


def test_esn_leak_rate_one_is_allowed():
    cell = rd.cells.esn(2, 4, leak_rate=1.0)
    p = cell.init(jax.random.key(0))
    h, x = _rand(0, 4), _rand(1, 2)
    W, U, b = (np.asarray(p[k], np.float64) for k in ("W", "U", "b"))
    np.testing.assert_allclose(
        np.asarray(cell.step(p, h, x)), np.tanh(W @ h + U @ x + b), rtol=1e-5, atol=1e-6
    )


def test_esn_step_matches_numpy():
    a, n, m = 0.3, 6, 2
    cell = rd.cells.esn(m, n, spectral_radius=0.9, leak_rate=a, input_scale=0.5, bias_scale=0.2)
    p = cell.init(jax.random.key(2))
    W, U, b = (np.asarray(p[k], np.float64) for k in ("W", "U", "b"))
    assert np.all(np.abs(U) <= 0.5) and np.any(b != 0)
    for seed in range(3):
        h, x = _rand(10 + seed, n).astype(np.float64), _rand(20 + seed, m).astype(np.float64)
        want = (1 - a) * h + a * np.tanh(W @ h + U @ x + b)
        got = np.asarray(cell.step(p, jnp.asarray(h, jnp.float32), jnp.asarray(x, jnp.float32)))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- bounds


def test_jacobian_bound_undefined_for_gated_and_stacked_cells():
    for cell in (rd.cells.lstm(3, 4), rd.cells.stack([rd.cells.vanilla(3, 4), rd.cells.vanilla(4, 4)])):
        with pytest.raises(ValueError, match="cell"):
            rd.jacobian_bound(cell, cell.init(jax.random.key(0)), 5)


def test_vanilla_jacobian_bound_closed_form():
    """(‖W‖₂·sup|φ′|)^lag with sup|φ′| = 1 (tanh, ReLU, identity) and 1/4 (logistic sigmoid)."""
    lags = np.array([1, 2, 7])
    for activation, beta in (("tanh", 1.0), ("sigmoid", 0.25), ("relu", 1.0), ("linear", 1.0)):
        cell = rd.cells.vanilla(3, 5, activation, gain=1.1)
        p = cell.init(jax.random.key(0))
        ab = beta * np.linalg.norm(np.asarray(p["W"], np.float64), 2)
        np.testing.assert_allclose(np.asarray(rd.jacobian_bound(cell, p, lags)), ab**lags, rtol=1e-5,
                                   err_msg=activation)
        np.testing.assert_allclose(np.asarray(rd.jacobian_bound(cell, p, lags, log10=True)),
                                   lags * np.log10(ab), rtol=1e-5, atol=1e-6, err_msg=activation)


def test_esn_and_univariate_bounds_closed_form():
    a = 0.25
    cell = rd.cells.esn(2, 6, spectral_radius=0.9, leak_rate=a)
    p = cell.init(jax.random.key(0))
    ab = (1 - a) + a * np.linalg.norm(np.asarray(p["W"], np.float64), 2)
    assert float(rd.jacobian_bound(cell, p, 1)) == pytest.approx(ab, rel=1e-5)
    cell = rd.cells.univariate(w=-1.5, activation="sigmoid")
    assert float(rd.jacobian_bound(cell, cell.init(None), 3)) == pytest.approx(
        (1.5 * 0.25) ** 3, rel=1e-5
    )
