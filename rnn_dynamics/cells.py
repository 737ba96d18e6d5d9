"""Recurrent cells as pure functions.

A :class:`Cell` is a NamedTuple of pure functions plus static sizes, in the spirit of optax's
``GradientTransformation``::

    params = cell.init(key)              # a pytree; jax.vmap(cell.init)(keys) gives one per seed
    h      = cell.initial_state(params)  # flat 1-D state, shape (cell.state_size,)
    h      = cell.step(params, h, x)     # x: (cell.input_size,) -> new state (cell.state_size,)

The state is always one flat vector (an LSTM's is ``[h, c]``), so every Jacobian is a plain
``(state_size, state_size)`` matrix. ``cell.hidden(state)`` returns the part a next layer or a
readout sees (the ``h`` of an LSTM). ``cell.step_bound(params)``, where defined, is a bound
on ‖∂h_t/∂h_{t-1}‖₂ valid for every state and input (see :func:`rnn_dynamics.jacobian_bound`).

Factories: :func:`linear`, :func:`vanilla`, :func:`univariate`, :func:`irnn`, :func:`lstm`,
:func:`gru`, :func:`esn`, :func:`stack`, :func:`from_flax`.

Parameter layout (all matrices are (fan_out, fan_in), so the drive is ``W @ h``):

==========  =====================================================================================
cell        params
==========  =====================================================================================
vanilla     ``W`` (n, n), ``U`` (n, m), ``b`` (n,):  h' = φ(W h + U x + b)
univariate  ``w``, ``u``, ``b`` scalars:  h' = w φ(h) + u x + b  (state and input of size 1)
lstm        ``Wx`` (4n, m), ``Wh`` (4n, n), ``b`` (4n,), gate blocks in order i, f, g, o
gru         ``Wx`` (3n, m), ``Wh`` (3n, n), ``bx``, ``bh`` (3n,), gate blocks r, z, n
esn         ``W`` (n, n), ``U`` (n, m), ``b`` (n,):  h' = (1-a) h + a tanh(W h + U x + b)
==========  =====================================================================================
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import init as _init
from ._cell import Cell, Fn
from ._checks import (
    check_choice,
    check_nonnegative,
    check_positive_int,
    check_unit_interval,
    float_dtype,
)

__all__ = [
    "Cell",
    "ACTIVATIONS",
    "linear",
    "vanilla",
    "univariate",
    "irnn",
    "lstm",
    "gru",
    "esn",
    "stack",
    "from_flax",
    "split_lstm_state",
    "split_stack_state",
]

Params = Any


def _first(n):
    return lambda state: state[..., :n]


# name -> (φ, sup |φ'|)
ACTIVATIONS: dict[str, tuple[Callable, float]] = {
    "tanh": (jnp.tanh, 1.0),
    "sigmoid": (jax.nn.sigmoid, 0.25),
    "relu": (jax.nn.relu, 1.0),
    "linear": (lambda a: a, 1.0),
}


def _activation(activation: str):
    check_choice("activation", activation, ACTIVATIONS)
    return ACTIVATIONS[activation]


def _zeros_state(n):
    return lambda params: jnp.zeros((n,), jax.tree_util.tree_leaves(params)[0].dtype)


def _spectral_norm(W):
    return jnp.linalg.svd(W, compute_uv=False)[0]


def vanilla(
    input_size: int,
    hidden_size: int,
    activation: str = "tanh",
    gain: float = 1.0,
    *,
    recurrent_init: _init.Initializer | None = None,
    input_init: _init.Initializer | None = None,
    input_gain: float = 1.0,
    bias: bool = True,
    bias_scale: float = 0.0,
    dtype=None,
) -> Cell:
    """Vanilla RNN h_t = φ(W h_{t-1} + U x_t + b).

    Args:
      input_size: m, features per input x_t.
      hidden_size: n, the state size.
      activation: one of ``"tanh"``, ``"sigmoid"``, ``"relu"``, ``"linear"``.
      gain: g for the default recurrent initialiser, W_ij ~ N(0, g²/n). Ignored when
        ``recurrent_init`` is given.
      recurrent_init: any initialiser from :mod:`rnn_dynamics.init`, called with shape (n, n).
      input_init: initialiser for U, shape (n, m); default ``gaussian(input_gain)``.
      bias: whether ``b`` is used (when False it is kept at zero in the params).
      bias_scale: standard deviation of the initial bias (0: zero bias).
      dtype: parameter dtype; default float32 (float64 when x64 is enabled).

    Step Jacobian: ∂h_t/∂h_{t-1} = diag(φ'(a_t)) W with a_t = W h_{t-1} + U x_t + b.

    Example::

        cell = rd.cells.vanilla(input_size=8, hidden_size=64, activation="tanh", gain=1.1)
        params = cell.init(jax.random.key(0))
    """
    m = check_positive_int("input_size", input_size)
    n = check_positive_int("hidden_size", hidden_size)
    phi, beta = _activation(activation)
    gain = check_nonnegative("gain", gain)
    input_gain = check_nonnegative("input_gain", input_gain)
    bias_scale = check_nonnegative("bias_scale", bias_scale)
    rec = recurrent_init if recurrent_init is not None else _init.gaussian(gain)
    inp = input_init if input_init is not None else _init.gaussian(input_gain)

    def init(key):
        kw, ku, kb = jax.random.split(key, 3)
        dt = float_dtype(dtype)
        draw_b = bias and bias_scale > 0  # skip a zero draw: each normal costs compile time
        b = bias_scale * jax.random.normal(kb, (n,), dt) if draw_b else jnp.zeros((n,), dt)
        return {"W": rec(kw, (n, n), dt), "U": inp(ku, (n, m), dt), "b": b}

    def step(params, h, x):
        return phi(params["W"] @ h + params["U"] @ x + params["b"])

    def step_bound(params):
        return _spectral_norm(params["W"]) * beta

    return Cell(init, _zeros_state(n), step, m, n, n, f"vanilla-{activation}", _first(n), step_bound)


def linear(input_size: int, hidden_size: int, gain: float = 1.0, **kwargs) -> Cell:
    """Linear RNN h_t = W h_{t-1} + U x_t + b, so ∂h_T/∂h_1 = W^(T-1) exactly.

    Same arguments as :func:`vanilla`. Example: ``rd.cells.linear(1, 16, gain=0.9)``.
    """
    cell = vanilla(input_size, hidden_size, "linear", gain, **kwargs)
    return cell._replace(name="linear")


def univariate(
    w: float = 1.1, u: float = 1.0, b: float = 0.0, activation: str = "linear", *, dtype=None
) -> Cell:
    """The lectures' one-unit encoder h_t = w·φ(h_{t-1}) + u·x_t + b.

    State and input have size 1. ``init`` ignores its key and returns ``{"w", "u", "b"}`` as
    0-d arrays (vmap over them, or edit them, to sweep w). With the linear φ,
    ∂h_T/∂h_1 = w^(T-1); with ``activation="sigmoid"``, ``w=5`` and ``b`` swept this is
    Pascanu et al.'s (2013) bifurcation example.

    Example: ``rd.jacobian(cell, cell.init(key), jnp.zeros(1), jnp.zeros((50, 1)))`` is
    1.1**50 = 117.39 for the default w = 1.1.
    """
    phi, beta = _activation(activation)
    values = {}
    for name, v in (("w", w), ("u", u), ("b", b)):
        try:
            values[name] = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"{name}: expected a number, got {v!r}.") from None

    def init(key):
        del key
        dt = float_dtype(dtype)
        return {k: jnp.asarray(v, dt) for k, v in values.items()}

    def step(params, h, x):
        return params["w"] * phi(h) + params["u"] * x + params["b"]

    def step_bound(params):
        return jnp.abs(params["w"]) * beta

    return Cell(init, _zeros_state(1), step, 1, 1, 1, f"univariate-{activation}", _first(1), step_bound)


def irnn(input_size: int, hidden_size: int, scale: float = 1.0, input_gain: float = 1e-3, **kw) -> Cell:
    """IRNN (Le, Jaitly & Hinton 2015): ReLU, W = scale·I, zero bias, U ~ N(0, 0.001²·m/m).

    With h ≥ 0 and no input, h_t = h_{t-1}: every step Jacobian is the identity on active units.
    Example: ``rd.cells.irnn(2, 100)``.
    """
    cell = vanilla(
        input_size,
        hidden_size,
        "relu",
        recurrent_init=_init.identity(scale),
        input_init=_gaussian_std(input_gain),
        bias=False,
        **kw,
    )
    return cell._replace(name="irnn")


def _gaussian_std(std):
    std = check_nonnegative("input_gain", std)

    def init(key, shape, dtype=None):
        return std * jax.random.normal(key, tuple(shape), float_dtype(dtype))

    return init


def lstm(input_size: int, hidden_size: int, *, forget_bias: float = 1.0, gain: float = 1.0, dtype=None) -> Cell:
    """LSTM with state [h, c] (size 2n); gates i, f, o = σ(·), candidate g = tanh(·)::

        [i; f; g; o] = Wx x + Wh h + b
        c' = σ(f)·c + σ(i)·tanh(g),   h' = σ(o)·tanh(c')

    Weights N(0, gain²/fan_in); ``b`` zero except the forget block, ``forget_bias``.
    Use :func:`split_lstm_state` to get (h, c). With the forget gate saturated open and the input
    gate closed, c_t = c_{t-1} and ∂c_T/∂c_1 = I (the lecture exercise).

    Example: ``cell = rd.cells.lstm(4, 32); h, c = rd.cells.split_lstm_state(cell.initial_state(p))``.
    """
    m = check_positive_int("input_size", input_size)
    n = check_positive_int("hidden_size", hidden_size)
    gain = check_nonnegative("gain", gain)
    forget_bias = float(forget_bias)

    def init(key):
        kx, kh = jax.random.split(key)
        dt = float_dtype(dtype)
        b = jnp.zeros((4 * n,), dt).at[n : 2 * n].set(forget_bias)
        return {
            "Wx": _init.gaussian(gain)(kx, (4 * n, m), dt),
            "Wh": _init.gaussian(gain)(kh, (4 * n, n), dt),
            "b": b,
        }

    def step(params, state, x):
        h, c = state[:n], state[n:]
        a = params["Wx"] @ x + params["Wh"] @ h + params["b"]
        i, f, g, o = jnp.split(a, 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return jnp.concatenate([h, c])

    return Cell(init, _zeros_state(2 * n), step, m, 2 * n, n, "lstm", _first(n))


def split_lstm_state(state: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Split an LSTM state ``[h, c]`` (..., 2n) into ``(h, c)``, each (..., n).

    Also splits a Jacobian's last axis; for the c→c block of ∂state_T/∂state_1 use
    ``J[n:, n:]``.
    """
    state = jnp.asarray(state)
    if state.shape[-1] % 2:
        raise ValueError(f"state: expected an even last axis [h, c], got shape {tuple(state.shape)}.")
    n = state.shape[-1] // 2
    return state[..., :n], state[..., n:]


def gru(input_size: int, hidden_size: int, *, gain: float = 1.0, dtype=None) -> Cell:
    """GRU (Cho et al. 2014), in the convention of PyTorch and ``flax.linen.GRUCell``::

        r = σ(Wx_r x + bx_r + Wh_r h + bh_r),  z = σ(Wx_z x + bx_z + Wh_z h + bh_z)
        n = tanh(Wx_n x + bx_n + r·(Wh_n h + bh_n)),   h' = (1 - z)·n + z·h

    Weights N(0, gain²/fan_in), biases zero. Example: ``rd.cells.gru(4, 32)``.
    """
    m = check_positive_int("input_size", input_size)
    n = check_positive_int("hidden_size", hidden_size)
    gain = check_nonnegative("gain", gain)

    def init(key):
        kx, kh = jax.random.split(key)
        dt = float_dtype(dtype)
        return {
            "Wx": _init.gaussian(gain)(kx, (3 * n, m), dt),
            "Wh": _init.gaussian(gain)(kh, (3 * n, n), dt),
            "bx": jnp.zeros((3 * n,), dt),
            "bh": jnp.zeros((3 * n,), dt),
        }

    def step(params, h, x):
        ax = params["Wx"] @ x + params["bx"]
        ah = params["Wh"] @ h + params["bh"]
        xr, xz, xn = jnp.split(ax, 3)
        hr, hz, hn = jnp.split(ah, 3)
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        cand = jnp.tanh(xn + r * hn)
        return (1 - z) * cand + z * h

    return Cell(init, _zeros_state(n), step, m, n, n, "gru", _first(n))


def esn(
    input_size: int,
    hidden_size: int,
    spectral_radius: float = 0.9,
    leak_rate: float = 1.0,
    *,
    input_scale: float = 1.0,
    connectivity: int | None = None,
    bias_scale: float = 0.0,
    dtype=None,
) -> Cell:
    """Echo-state reservoir (Jaeger 2001): h' = (1-a)·h + a·tanh(W h + U x + b).

    W is drawn Gaussian (or with ``connectivity`` non-zeros per row) and rescaled to the given
    spectral radius; U_ij ~ U[-input_scale, input_scale]. The reservoir is fixed by design: only a
    readout is trained (a later module). ``leak_rate`` a in (0, 1].
    Step-Jacobian bound: (1-a) + a‖W‖₂.

    Example: ``rd.cells.esn(1, 200, spectral_radius=0.95, leak_rate=0.3)``.
    """
    m = check_positive_int("input_size", input_size)
    n = check_positive_int("hidden_size", hidden_size)
    radius = check_nonnegative("spectral_radius", spectral_radius)
    a = check_unit_interval("leak_rate", leak_rate, open_left=True)
    input_scale = check_nonnegative("input_scale", input_scale)
    bias_scale = check_nonnegative("bias_scale", bias_scale)
    base = _init.sparse(connectivity) if connectivity is not None else _init.gaussian(1.0)
    rec = _init.spectral_radius(radius, base=base)

    def init(key):
        kw, ku, kb = jax.random.split(key, 3)
        dt = float_dtype(dtype)
        return {
            "W": rec(kw, (n, n), dt),
            "U": jax.random.uniform(ku, (n, m), dt, -input_scale, input_scale),
            "b": bias_scale * jax.random.normal(kb, (n,), dt) if bias_scale > 0 else jnp.zeros((n,), dt),
        }

    def step(params, h, x):
        return (1 - a) * h + a * jnp.tanh(params["W"] @ h + params["U"] @ x + params["b"])

    def step_bound(params):
        return (1 - a) + a * _spectral_norm(params["W"])

    return Cell(init, _zeros_state(n), step, m, n, n, "esn", _first(n), step_bound)


def stack(cells: Sequence[Cell]) -> Cell:
    """A deep (stacked) RNN: layer k reads layer k-1's ``hidden`` output at the same step.

    The state is the concatenation of the layers' states, bottom layer first; params are a tuple
    of the layers' params; ``hidden`` is the top layer's. Example::

        deep = rd.cells.stack([rd.cells.vanilla(8, 32), rd.cells.vanilla(32, 32)])
    """
    cells = tuple(cells)
    if not cells or not all(isinstance(c, Cell) for c in cells):
        raise TypeError("cells: expected a non-empty sequence of rd.cells.Cell.")
    for k in range(1, len(cells)):
        if cells[k].input_size != cells[k - 1].hidden_size:
            raise ValueError(
                f"cells[{k}].input_size: expected {cells[k - 1].hidden_size} (hidden_size of "
                f"cells[{k - 1}]), got {cells[k].input_size}."
            )
    bounds = np.cumsum([0] + [c.state_size for c in cells])

    def init(key):
        return tuple(c.init(k) for c, k in zip(cells, jax.random.split(key, len(cells))))

    def initial_state(params):
        return jnp.concatenate([c.initial_state(p) for c, p in zip(cells, params)])

    def step(params, state, x):
        out = []
        for c, p, lo, hi in zip(cells, params, bounds[:-1], bounds[1:]):
            h = c.step(p, state[lo:hi], x)
            out.append(h)
            x = c.hidden(h)
        return jnp.concatenate(out)

    top = cells[-1]
    lo = int(bounds[-2])

    def hidden(state):
        return top.hidden(state[..., lo:])

    name = "stack(" + ",".join(c.name for c in cells) + ")"
    return Cell(init, initial_state, step, cells[0].input_size, int(bounds[-1]), top.hidden_size,
                name, hidden, None, cells)


def split_stack_state(cell: Cell, state: jax.Array) -> list[jax.Array]:
    """Split a :func:`stack` state (..., state_size) into one array per layer."""
    if not cell.layers:
        raise ValueError(f"cell: expected a stacked cell from rd.cells.stack, got {cell.name!r}.")
    bounds = np.cumsum([c.state_size for c in cell.layers])[:-1]
    return jnp.split(jnp.asarray(state), bounds, axis=-1)


def from_flax(module, input_size: int, *, dtype=None) -> Cell:
    """Wrap a ``flax.linen`` RNN cell (SimpleCell, GRUCell, LSTMCell, OptimizedLSTMCell, …).

    The flax carry pytree is flattened into the 1-D state (``jax.flatten_util.ravel_pytree``
    order: for LSTMCell that is ``[c, h]``); ``hidden`` returns the last carry leaf (the ``h``
    of the LSTM cells). ``initial_state`` is zeros, as flax's default ``carry_init``.

    Example::

        cell = rd.cells.from_flax(flax.linen.GRUCell(features=32), input_size=4)
        J = rd.jacobian(cell, cell.init(key), jnp.zeros(32), xs)
    """
    from jax.flatten_util import ravel_pytree

    m = check_positive_int("input_size", input_size)
    if not (hasattr(module, "initialize_carry") and callable(module)):
        raise TypeError(
            f"module: expected a flax.linen RNN cell (with initialize_carry), got {type(module).__name__}."
        )
    dt = float_dtype(dtype)
    carry_shape = jax.eval_shape(lambda: module.initialize_carry(jax.random.key(0), (m,)))
    carry0 = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, dt), carry_shape)
    flat0, unravel = ravel_pytree(carry0)
    leaves = jax.tree_util.tree_leaves(carry0)
    n_last = leaves[-1].size
    size = int(flat0.size)
    hidden_size = int(getattr(module, "features", n_last))

    def init(key):
        return module.init(key, unravel(jnp.zeros((size,), dt)), jnp.zeros((m,), dt))

    def step(params, state, x):
        carry, _ = module.apply(params, unravel(state), x)
        return ravel_pytree(carry)[0].astype(state.dtype)

    def hidden(state):
        return state[..., size - n_last :]

    return Cell(init, lambda params: jnp.zeros((size,), dt), step, m, size, hidden_size,
                f"flax-{type(module).__name__}", hidden)
