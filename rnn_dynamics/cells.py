"""Recurrent cells as pure functions.

A :class:`Cell` is a NamedTuple of pure functions plus static sizes, in the spirit of optax's
``GradientTransformation``::

    params = cell.init(key)              # a pytree; jax.vmap(cell.init)(keys) gives one per seed
    h      = cell.initial_state(params)  # flat 1-D state, shape (cell.state_size,)
    h      = cell.step(params, h, x)     # x: (cell.input_size,) -> new state (cell.state_size,)
    v      = cell.hidden(h)              # (cell.hidden_size,): what a next layer or readout sees

The state is always one flat vector (an LSTM's is ``[h, c]``), so every Jacobian is a plain
``(state_size, state_size)`` matrix. ``cell.step_bound(params)``, where defined, is a bound
on ‖∂h_t/∂h_{t-1}‖₂ valid for every state and input (see :func:`rnn_dynamics.jacobian_bound`).

Cells are values and hyperparameters are data:

* Two cells built by the same factory with equal arguments are equal and hash equal, so
  every compiled function is reused (``vanilla(4, 16, gain=1.0) == vanilla(4, 16, gain=1.0)``).
* Numeric hyperparameters (gain, spectral radius, leak rate, input and bias scales, the IRNN
  scale, the univariate cell's w, u, b) live in ``cell.hyper`` and are passed to compiled
  functions as data: cells that differ only in these numbers share one compilation, and a
  factory accepts a traced number, so a sweep is ``jax.vmap`` of a function that builds the
  cell::

      f = lambda g: rd.spectra(rd.cells.vanilla(8, 64, gain=g), key, seeds=16, steps=200).log10_norm
      jax.jit(jax.vmap(f))(jnp.linspace(0.5, 3.0, 20))    # one compiled computation

  A traced number cannot be validated before tracing (it has no value yet): a negative
  traced gain is not caught. Sizes, activation names and flags must be concrete.
* Random draws are made in float32 and cast, so one key builds the same network with and
  without ``jax_enable_x64`` (the float64 weights round to the float32 ones).

Factories: :func:`linear`, :func:`vanilla`, :func:`univariate`, :func:`irnn`, :func:`lstm`,
:func:`gru`, :func:`esn`, :func:`stack`, :func:`from_flax`; :func:`from_gain` builds any of
the first seven from one number, whose meaning per kind is :data:`GAIN_MEANING`.

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

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import init as _init
from .init import _scale
from ._cell import BATCH_KERNELS, JACOBIAN_KERNELS, Cell, Fn, Hyper
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
    "GAIN_MEANING",
    "INITS",
    "INIT_KINDS",
    "KINDS",
    "linear",
    "vanilla",
    "univariate",
    "irnn",
    "lstm",
    "gru",
    "esn",
    "stack",
    "from_flax",
    "from_gain",
    "split_lstm_state",
    "split_stack_state",
]


# name -> (φ, sup |φ'|)
ACTIVATIONS: dict[str, tuple[Callable, float]] = {
    "tanh": (jnp.tanh, 1.0),
    "sigmoid": (jax.nn.sigmoid, 0.25),
    "relu": (jax.nn.relu, 1.0),
    "linear": (lambda a: a, 1.0),
}

# What the one number of :func:`from_gain` means for each kind of cell.
INITS = ("default", "orthogonal", "identity")  # from_gain's recurrent initialisers
INIT_KINDS = ("vanilla", "linear")  # the kinds whose recurrent initialiser from_gain may change

GAIN_MEANING: dict[str, str] = {
    "vanilla": "W_ij ~ N(0, g²/n)",
    "linear": "W_ij ~ N(0, g²/n)",
    "irnn": "W = g·I",
    "lstm": "weights ~ N(0, g²/fan_in)",
    "gru": "weights ~ N(0, g²/fan_in)",
    "esn": "spectral radius of W",
    "univariate": "w",
}
KINDS = tuple(GAIN_MEANING)


def _activation(activation: str):
    check_choice("activation", activation, ACTIVATIONS)
    return ACTIVATIONS[activation]


# ---- shared kernels: module-level, so cells built with equal settings compare equal ----------


def _zeros(static, hp, params):
    (n,) = static
    return jnp.zeros((n,), jax.tree_util.tree_leaves(params)[0].dtype)


def _first(static, hp, state):
    (n,) = static
    return state[..., :n]


def _sigma_max(W):
    return jnp.linalg.svd(W, compute_uv=False)[0]


def _dtype_name(dtype):
    return None if dtype is None else jnp.dtype(dtype).name


# ---- vanilla, linear, irnn -------------------------------------------------------------------


def _vanilla_init(static, hp, key):
    n, m, dtype = static
    kw, ku, kb = jax.random.split(key, 3)
    dt = float_dtype(dtype)
    b = _scale(hp["bias_scale"], dt) * jax.random.normal(kb, (n,), jnp.float32).astype(dt)
    return {"W": hp["recurrent_init"](kw, (n, n), dt), "U": hp["input_init"](ku, (n, m), dt), "b": b}


def _vanilla_drive(params, h, x):
    return params["W"] @ h + params["U"] @ x + params["b"]


def _vanilla_step(static, hp, params, h, x):
    (activation,) = static
    return ACTIVATIONS[activation][0](_vanilla_drive(params, h, x))


def _vanilla_batch_step(static, hp, params, H, X):
    # states as rows: (B, n)·Wᵀ gives the batch-major product directly, where the vmapped
    # ``W @ h`` gives (n, B) and a transpose each step (training at n = 128, T = 200, batch 32:
    # 9 % faster on a 2-core CPU, benchmarks/train.py)
    (activation,) = static
    return ACTIVATIONS[activation][0](H @ params["W"].T + X @ params["U"].T + params["b"])


BATCH_KERNELS[_vanilla_batch_step] = _vanilla_step


def _vanilla_jacobian_t(static, hp, params, h1, xs, unroll):
    # (∂h_T/∂h_1)ᵀ in one loop with the tangents as rows: Q_t = Q_{t-1} Wᵀ diag(φ'(a_t)) =
    # (J_t ⋯ J_2)ᵀ, with a Wᵀ laid out once before the loop, so the step's product is a plain
    # (n, n)·(n, n) one (jacrev needs a second loop; jacfwd's W @ Q and a vmapped jvp's Q @ Wᵀ
    # with W in place run slower on XLA:CPU). h_t is computed as the step computes it, every step
    # inside the loop (the same trajectory as rd.rollout's, and the same numbers on any number of
    # devices: a first step peeled off the loop rounded differently once sharded).
    (activation,) = static
    act = ACTIVATIONS[activation][0]
    Wt = params["W"].T  # laid out once: the loop below multiplies by it as it is

    def body(carry, x):
        h, Q = carry
        y, d = jax.jvp(act, (_vanilla_drive(params, h, x),), (jnp.ones_like(h),))  # φ(a), φ'(a)
        return (y, (Q @ Wt) * d), None

    return jax.lax.scan(body, (h1, jnp.eye(h1.shape[0], dtype=h1.dtype)), xs, unroll=unroll)[0][1]


JACOBIAN_KERNELS[_vanilla_step] = _vanilla_jacobian_t


def _vanilla_bound(static, hp, params):
    (activation,) = static
    return _sigma_max(params["W"]) * ACTIVATIONS[activation][1]


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
    name: str | None = None,
) -> Cell:
    """Vanilla RNN h_t = φ(W h_{t-1} + U x_t + b).

    Args:
      input_size: m, features per input x_t.
      hidden_size: n, the state size.
      activation: one of ``"tanh"``, ``"sigmoid"``, ``"relu"``, ``"linear"``.
      gain: g for the default recurrent initialiser, W_ij ~ N(0, g²/n). Ignored when
        ``recurrent_init`` is given. May be traced (see the module docstring).
      recurrent_init: any initialiser from :mod:`rnn_dynamics.init`, called with shape (n, n).
      input_init: initialiser for U, shape (n, m); default ``gaussian(input_gain)``.
      input_gain: U_ij ~ N(0, input_gain²/m) by default.
      bias: whether ``b`` is drawn (when False it is zero: ``bias_scale`` is ignored).
      bias_scale: standard deviation of the initial bias (0: zero bias).
      dtype: parameter dtype; default float32 (float64 when x64 is enabled).
      name: label; default ``"vanilla-<activation>"``.

    Step Jacobian: ∂h_t/∂h_{t-1} = diag(φ'(a_t)) W with a_t = W h_{t-1} + U x_t + b.

    Example::

        cell = rd.cells.vanilla(input_size=8, hidden_size=64, activation="tanh", gain=1.1)
        params = cell.init(jax.random.key(0))
    """
    m = check_positive_int("input_size", input_size)
    n = check_positive_int("hidden_size", hidden_size)
    _activation(activation)
    gain = check_nonnegative("gain", gain)
    input_gain = check_nonnegative("input_gain", input_gain)
    bias_scale = check_nonnegative("bias_scale", bias_scale) if bias else 0.0
    hyper = Hyper({
        "gain": gain,
        "bias_scale": bias_scale,
        "recurrent_init": recurrent_init if recurrent_init is not None else _init.gaussian(gain),
        "input_init": input_init if input_init is not None else _init.gaussian(input_gain),
    })
    return Cell(
        init=Fn(_vanilla_init, (n, m, _dtype_name(dtype)), hyper),
        initial_state=Fn(_zeros, (n,)),
        step=Fn(_vanilla_step, (activation,)),
        input_size=m,
        state_size=n,
        hidden_size=n,
        name=name or f"vanilla-{activation}",
        step_bound=Fn(_vanilla_bound, (activation,)),
        hyper=hyper,
        batch_step=Fn(_vanilla_batch_step, (activation,)),
    )


def linear(input_size: int, hidden_size: int, gain: float = 1.0, **kwargs) -> Cell:
    """Linear RNN h_t = W h_{t-1} + U x_t + b, so ∂h_T/∂h_1 = W^(T-1) exactly.

    Same arguments as :func:`vanilla`. Example: ``rd.cells.linear(1, 16, gain=0.9)``.
    """
    return vanilla(input_size, hidden_size, "linear", gain, name="linear", **kwargs)


def irnn(input_size: int, hidden_size: int, scale: float = 1.0, input_gain: float = 1e-3, **kw) -> Cell:
    """IRNN (Le, Jaitly & Hinton 2015): ReLU, W = scale·I, zero bias, U_ij ~ N(0, input_gain²).

    With h ≥ 0 and no input, h_t = h_{t-1}: every step Jacobian is the identity on active units.
    ``scale`` and ``input_gain`` may be traced. Example: ``rd.cells.irnn(2, 100)``.
    """
    m = check_positive_int("input_size", input_size)
    # input_gain is a standard deviation here (Le et al.: N(0, 0.001²)), i.e. gain √m.
    std = check_nonnegative("input_gain", input_gain)
    return vanilla(
        input_size,
        hidden_size,
        "relu",
        recurrent_init=_init.identity(scale),
        input_init=_init.gaussian(std * np.sqrt(m)),
        bias=False,
        name="irnn",
        **kw,
    )


# ---- univariate ------------------------------------------------------------------------------


def _univariate_init(static, hp, key):
    del key
    (dtype,) = static
    dt = float_dtype(dtype)
    return {k: jnp.asarray(hp[k], dt) for k in ("w", "u", "b")}


def _univariate_step(static, hp, params, h, x):
    (activation,) = static
    return params["w"] * ACTIVATIONS[activation][0](h) + params["u"] * x + params["b"]


def _univariate_bound(static, hp, params):
    (activation,) = static
    return jnp.abs(params["w"]) * ACTIVATIONS[activation][1]


def _number(name, v):
    if isinstance(v, jax.core.Tracer):
        return v
    if isinstance(v, bool):
        raise TypeError(f"{name}: expected a number, got {v!r}.")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {v!r}.") from None


def univariate(
    w: float = 1.1, u: float = 1.0, b: float = 0.0, activation: str = "linear", *, dtype=None
) -> Cell:
    """The lectures' one-unit encoder h_t = w·φ(h_{t-1}) + u·x_t + b.

    State and input have size 1. ``init`` ignores its key and returns ``{"w", "u", "b"}`` as
    0-d arrays (vmap over them, or build the cell from a traced w, to sweep w). With the
    linear φ, ∂h_T/∂h_1 = w^(T-1); with ``activation="sigmoid"``, ``w=5`` and ``b`` swept this
    is Pascanu et al.'s (2013) bifurcation example.

    Example: ``rd.jacobian(cell, cell.init(key), jnp.zeros(1), jnp.zeros((50, 1)))`` is
    1.1**50 = 117.39 for the default w = 1.1.
    """
    _activation(activation)
    hyper = Hyper({"w": _number("w", w), "u": _number("u", u), "b": _number("b", b)})
    return Cell(
        init=Fn(_univariate_init, (_dtype_name(dtype),), hyper),
        initial_state=Fn(_zeros, (1,)),
        step=Fn(_univariate_step, (activation,)),
        input_size=1,
        state_size=1,
        hidden_size=1,
        name=f"univariate-{activation}",
        step_bound=Fn(_univariate_bound, (activation,)),
        hyper=hyper,
    )


# ---- LSTM, GRU -------------------------------------------------------------------------------


def _lstm_init(static, hp, key):
    n, m, dtype = static
    kx, kh = jax.random.split(key)
    dt = float_dtype(dtype)
    g = _init.gaussian(hp["gain"])
    b = jnp.zeros((4 * n,), dt).at[n : 2 * n].set(jnp.asarray(hp["forget_bias"], dt))
    return {"Wx": g(kx, (4 * n, m), dt), "Wh": g(kh, (4 * n, n), dt), "b": b}


def _lstm_step(static, hp, params, state, x):
    (n,) = static
    h, c = state[:n], state[n:]
    a = params["Wx"] @ x + params["Wh"] @ h + params["b"]
    i, f, g, o = jnp.split(a, 4)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return jnp.concatenate([h, c])


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
    hyper = Hyper({"gain": check_nonnegative("gain", gain), "forget_bias": _number("forget_bias", forget_bias)})
    return Cell(
        init=Fn(_lstm_init, (n, m, _dtype_name(dtype)), hyper),
        initial_state=Fn(_zeros, (2 * n,)),
        step=Fn(_lstm_step, (n,)),
        input_size=m,
        state_size=2 * n,
        hidden_size=n,
        name="lstm",
        hidden=Fn(_first, (n,)),
        hyper=hyper,
    )


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


def _gru_init(static, hp, key):
    n, m, dtype = static
    kx, kh = jax.random.split(key)
    dt = float_dtype(dtype)
    g = _init.gaussian(hp["gain"])
    z = jnp.zeros((3 * n,), dt)
    return {"Wx": g(kx, (3 * n, m), dt), "Wh": g(kh, (3 * n, n), dt), "bx": z, "bh": z}


def _gru_step(static, hp, params, h, x):
    ax = params["Wx"] @ x + params["bx"]
    ah = params["Wh"] @ h + params["bh"]
    xr, xz, xn = jnp.split(ax, 3)
    hr, hz, hn = jnp.split(ah, 3)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    cand = jnp.tanh(xn + r * hn)
    return (1 - z) * cand + z * h


def gru(input_size: int, hidden_size: int, *, gain: float = 1.0, dtype=None) -> Cell:
    """GRU (Cho et al. 2014), in the convention of PyTorch and ``flax.linen.GRUCell``::

        r = σ(Wx_r x + bx_r + Wh_r h + bh_r),  z = σ(Wx_z x + bx_z + Wh_z h + bh_z)
        n = tanh(Wx_n x + bx_n + r·(Wh_n h + bh_n)),   h' = (1 - z)·n + z·h

    Weights N(0, gain²/fan_in), biases zero. Example: ``rd.cells.gru(4, 32)``.
    """
    m = check_positive_int("input_size", input_size)
    n = check_positive_int("hidden_size", hidden_size)
    hyper = Hyper({"gain": check_nonnegative("gain", gain)})
    return Cell(
        init=Fn(_gru_init, (n, m, _dtype_name(dtype)), hyper),
        initial_state=Fn(_zeros, (n,)),
        step=Fn(_gru_step, ()),
        input_size=m,
        state_size=n,
        hidden_size=n,
        name="gru",
        hyper=hyper,
    )


# ---- echo-state reservoir --------------------------------------------------------------------


def _esn_init(static, hp, key):
    n, m, connectivity, dtype = static
    kw, ku, kb = jax.random.split(key, 3)
    dt = float_dtype(dtype)
    base = _init.sparse(connectivity) if connectivity is not None else _init.gaussian(1.0)
    s = hp["input_scale"]
    return {
        "W": _init.spectral_radius(hp["spectral_radius"], base=base)(kw, (n, n), dt),
        "U": _scale(s, dt) * jax.random.uniform(ku, (n, m), jnp.float32, -1.0, 1.0).astype(dt),
        "b": _scale(hp["bias_scale"], dt) * jax.random.normal(kb, (n,), jnp.float32).astype(dt),
    }


def _esn_step(static, hp, params, h, x):
    a = hp["leak_rate"]
    return (1 - a) * h + a * jnp.tanh(params["W"] @ h + params["U"] @ x + params["b"])


def _esn_bound(static, hp, params):
    a = hp["leak_rate"]
    return (1 - a) + a * _sigma_max(params["W"])


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
    readout is trained (:mod:`rnn_dynamics.esn`). ``leak_rate`` a in (0, 1] is part of the step
    (``cell.hyper["leak_rate"]``), not of the params. Step-Jacobian bound: (1-a) + a‖W‖₂.

    Example: ``rd.cells.esn(1, 200, spectral_radius=0.95, leak_rate=0.3)``.
    """
    m = check_positive_int("input_size", input_size)
    n = check_positive_int("hidden_size", hidden_size)
    if connectivity is not None:
        connectivity = check_positive_int("connectivity", connectivity)
    hyper = Hyper({
        "spectral_radius": check_nonnegative("spectral_radius", spectral_radius),
        "leak_rate": check_unit_interval("leak_rate", leak_rate, open_left=True),
        "input_scale": check_nonnegative("input_scale", input_scale),
        "bias_scale": check_nonnegative("bias_scale", bias_scale),
    })
    return Cell(
        init=Fn(_esn_init, (n, m, connectivity, _dtype_name(dtype)), hyper),
        initial_state=Fn(_zeros, (n,)),
        step=Fn(_esn_step, (), hyper),
        input_size=m,
        state_size=n,
        hidden_size=n,
        name="esn",
        step_bound=Fn(_esn_bound, (), hyper),
        hyper=hyper,
    )


# ---- stack -----------------------------------------------------------------------------------


def _stack_init(static, hp, key):
    cells = hp["layers"]
    return tuple(c.init(k) for c, k in zip(cells, jax.random.split(key, len(cells))))


def _stack_initial_state(static, hp, params):
    return jnp.concatenate([c.initial_state(p) for c, p in zip(hp["layers"], params)])


def _stack_step(static, hp, params, state, x):
    out = []
    for c, p, lo, hi in zip(hp["layers"], params, static[:-1], static[1:]):
        h = c.step(p, state[lo:hi], x)
        out.append(h)
        x = c.hidden(h)
    return jnp.concatenate(out)


def _stack_hidden(static, hp, state):
    (lo,) = static
    return hp["top"].hidden(state[..., lo:])


def stack(cells: Sequence[Cell]) -> Cell:
    """A deep (stacked) RNN: layer k reads layer k-1's ``hidden`` output at the same step.

    The state is the concatenation of the layers' states, bottom layer first; params are a tuple
    of the layers' params, each layer drawn from its own key (``jax.random.split(key, L)``);
    ``hidden`` is the top layer's. Example::

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
    bounds = tuple(int(b) for b in np.cumsum([0] + [c.state_size for c in cells]))
    layers = Hyper({"layers": cells})
    return Cell(
        init=Fn(_stack_init, (), layers),
        initial_state=Fn(_stack_initial_state, (), layers),
        step=Fn(_stack_step, bounds, layers),
        input_size=cells[0].input_size,
        state_size=bounds[-1],
        hidden_size=cells[-1].hidden_size,
        name="stack(" + ",".join(c.name for c in cells) + ")",
        hidden=Fn(_stack_hidden, (bounds[-2],), Hyper({"top": cells[-1]})),
        layers=cells,
    )


def split_stack_state(cell: Cell, state: jax.Array) -> list[jax.Array]:
    """Split a :func:`stack` state (..., state_size) into one array per layer."""
    if not cell.layers:
        raise ValueError(f"cell: expected a stacked cell from rd.cells.stack, got {cell.name!r}.")
    bounds = np.cumsum([c.state_size for c in cell.layers])[:-1]
    return jnp.split(jnp.asarray(state), bounds, axis=-1)


# ---- flax ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _flax_layout(module, m: int, dtype: str):
    """(unravel, state size, size of the last carry leaf) of a flax cell's carry."""
    from jax.flatten_util import ravel_pytree

    shape = jax.eval_shape(lambda: module.initialize_carry(jax.random.key(0), (m,)))
    carry0 = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, dtype), shape)
    flat0, unravel = ravel_pytree(carry0)
    return unravel, int(flat0.size), int(jax.tree_util.tree_leaves(carry0)[-1].size)


def _flax_init(static, hp, key):
    module, m, dtype = static
    unravel, size, _ = _flax_layout(module, m, dtype)
    return module.init(key, unravel(jnp.zeros((size,), dtype)), jnp.zeros((m,), dtype))


def _flax_initial_state(static, hp, params):
    module, m, dtype = static
    return jnp.zeros((_flax_layout(module, m, dtype)[1],), dtype)


def _flax_step(static, hp, params, state, x):
    from jax.flatten_util import ravel_pytree

    module, m, dtype = static
    unravel = _flax_layout(module, m, dtype)[0]
    carry, _ = module.apply(params, unravel(state), x)
    return ravel_pytree(carry)[0].astype(state.dtype)


def _flax_hidden(static, hp, state):
    (start,) = static
    return state[..., start:]


def from_flax(module, input_size: int, *, dtype=None) -> Cell:
    """Wrap a ``flax.linen`` RNN cell (SimpleCell, GRUCell, LSTMCell, OptimizedLSTMCell, …).

    The flax carry pytree is flattened into the 1-D state (``jax.flatten_util.ravel_pytree``
    order: for LSTMCell that is ``[c, h]``); ``hidden`` returns the last carry leaf (the ``h``
    of the LSTM cells). ``initial_state`` is zeros, as flax's default ``carry_init``. The dtype
    is fixed when the cell is built (float64 if x64 is on then).

    Example::

        cell = rd.cells.from_flax(flax.linen.GRUCell(features=32), input_size=4)
        J = rd.jacobian(cell, cell.init(key), jnp.zeros(32), xs)
    """
    m = check_positive_int("input_size", input_size)
    if not (hasattr(module, "initialize_carry") and callable(module)):
        raise TypeError(
            f"module: expected a flax.linen RNN cell (with initialize_carry), got {type(module).__name__}."
        )
    dt = jnp.dtype(float_dtype(dtype)).name
    _, size, n_last = _flax_layout(module, m, dt)
    static = (module, m, dt)
    return Cell(
        init=Fn(_flax_init, static),
        initial_state=Fn(_flax_initial_state, static),
        step=Fn(_flax_step, static),
        input_size=m,
        state_size=size,
        hidden_size=int(getattr(module, "features", n_last)),
        name=f"flax-{type(module).__name__}",
        hidden=Fn(_flax_hidden, (size - n_last,)),
    )


# ---- one number, any kind --------------------------------------------------------------------


def from_gain(kind: str, input_size: int, hidden_size: int, gain, activation: str = "tanh",
              init: str = "default") -> Cell:
    """A cell of ``kind`` whose one free number is ``gain`` (its meaning: :data:`GAIN_MEANING`).

    ``gain`` may be traced, so ``jax.vmap(lambda g: f(from_gain("esn", 8, 64, g)))(gains)``
    sweeps it in one compiled computation. ``univariate`` ignores the sizes; ``activation``
    applies to ``vanilla`` and ``univariate``. ``init`` (:data:`INITS`) picks the recurrent
    initialiser of ``vanilla`` and ``linear`` cells: ``"default"`` (W_ij ~ N(0, g²/n)),
    ``"orthogonal"`` (g times a random orthogonal matrix) or ``"identity"`` (g·I); the other
    kinds take ``"default"`` only.

    Example: ``rd.cells.from_gain("esn", 8, 64, 0.95)`` is ``rd.cells.esn(8, 64, spectral_radius=0.95)``.
    """
    check_choice("kind", kind, KINDS)
    check_choice("init", init, INITS)
    if init != "default" and kind not in INIT_KINDS:
        raise ValueError(f"init: {init!r} applies to {' and '.join(INIT_KINDS)} cells; a {kind} "
                         f"cell takes 'default' only.")
    if kind in INIT_KINDS:
        rec = {"default": None, "orthogonal": _init.orthogonal, "identity": _init.identity}[init]
        act = activation if kind == "vanilla" else "linear"
        kw = {} if rec is None else {"recurrent_init": rec(gain)}
        if kind == "linear":
            return linear(input_size, hidden_size, gain, **kw)
        return vanilla(input_size, hidden_size, act, gain, **kw)
    if kind == "irnn":
        return irnn(input_size, hidden_size, scale=gain)
    if kind == "lstm":
        return lstm(input_size, hidden_size, gain=gain)
    if kind == "gru":
        return gru(input_size, hidden_size, gain=gain)
    if kind == "esn":
        return esn(input_size, hidden_size, spectral_radius=gain)
    return univariate(w=gain, activation=activation)
