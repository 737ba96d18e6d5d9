"""Echo-state networks (Jaeger 2001): a fixed random reservoir and a ridge-regression readout.

Only the readout is trained, so nothing is backpropagated through time: Hinton's third way
around exploding and vanishing gradients. The reservoir is :func:`rnn_dynamics.cells.esn`
(or any cell); its states come from :func:`rnn_dynamics.rollout`.

Pipeline (the numbers are from one run on a 2-core CPU, float32)::

    cell = rd.cells.esn(1, 300, spectral_radius=0.9, bias_scale=0.2)
    params = cell.init(jax.random.key(0))
    series = rd.tasks.mackey_glass(4000, washout=300.0)
    u, y = (series[:-1] - 1.0)[:, None], series[1:]              # one-step prediction
    readout = rd.esn.fit(cell, params, u[:2666], y[:2666], ridge=1e-7, washout=100)
    pred = rd.esn.predict(cell, params, readout, u)[2666:]
    rd.esn.nrmse(pred, y[2666:])                 # 1.7e-4
    rd.esn.nrmse(series[2666:-1], y[2666:])      # persistence, x_{t+1} = x_t: 0.146

Echo-state property: the state forgets where it started. ``(1 − a) + a·σ_max(W) < 1``
(σ_max(W) < 1 for any leak rate a) makes every step a contraction, which is sufficient;
ρ(W) < 1 is the usual heuristic and is not. :func:`echo_state_property` reports the sufficient
condition and measures the forgetting.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._cell import check_cell
from ._checks import NumericalWarning, as_inputs, as_state, check_nonnegative, check_positive_int, is_traced
from ._rollout import rollout

__all__ = [
    "Readout",
    "EchoStateCheck",
    "fit_readout",
    "apply_readout",
    "run_reservoir",
    "fit",
    "predict",
    "nrmse",
    "echo_state_property",
]


class Readout(NamedTuple):
    """A linear readout y = states @ weights + bias: weights (n, k) (or (n,)), bias (k,) (or ())."""

    weights: jax.Array
    bias: jax.Array


def _as_float(name, x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name}: expected an array of floats, got dtype {x.dtype}.")
    return x


def fit_readout(states, targets, ridge: float = 1e-6, *, bias: bool = True) -> Readout:
    """Ridge regression of ``targets`` on ``states``, in closed form.

    Minimises ‖X w − Y‖² + ridge·‖w‖² with X = [states, 1] (the ones column only when
    ``bias``; the bias is penalised like the weights, as in Lukoševičius's practical guide):
    w = (XᵀX + ridge·I)⁻¹ XᵀY, computed through the SVD of X, w = V diag(s/(s² + ridge)) UᵀY,
    which never forms XᵀX (no squared condition number in float32).

    Args:
      states: (..., n) reservoir states; leading axes (time, batch) are flattened.
      targets: (..., k) or (...) with the same leading axes.
      ridge: the penalty λ ≥ 0. bias: fit an intercept.

    Returns:
      :class:`Readout` with weights (n, k) and bias (k,) (or (n,) and () for 1-D targets).

    Example: ``r = rd.esn.fit_readout(states, y, 1e-6); pred = rd.esn.apply_readout(r, states)``.
    """
    states = _as_float("states", states)
    targets = _as_float("targets", targets)
    ridge = check_nonnegative("ridge", ridge)
    if states.ndim < 1:
        raise ValueError("states: expected shape (..., n), got a scalar.")
    lead = states.shape[:-1]
    if targets.shape[: len(lead)] != lead or targets.ndim not in (len(lead), len(lead) + 1):
        raise ValueError(
            f"targets: expected shape {tuple(lead)} or {tuple(lead)} + (k,) to match states "
            f"{tuple(states.shape)}, got {tuple(targets.shape)}."
        )
    vector = targets.ndim == len(lead)
    n = states.shape[-1]
    X = states.reshape(-1, n)
    Y = targets.reshape(X.shape[0], -1).astype(X.dtype)
    if bias:
        X = jnp.concatenate([X, jnp.ones((X.shape[0], 1), X.dtype)], axis=1)
    U, s, Vt = jnp.linalg.svd(X, full_matrices=False)
    w = Vt.T @ ((s / (s * s + ridge))[:, None] * (U.T @ Y))
    W, b = (w[:n], w[n]) if bias else (w, jnp.zeros((Y.shape[1],), w.dtype))
    if vector:
        W, b = W[:, 0], b[0]
    if not is_traced(W) and not bool(jnp.all(jnp.isfinite(W))):
        warnings.warn(
            "fit_readout: the readout has non-finite weights: the states or targets hold NaN/inf "
            "(a reservoir that diverged?), or ridge = 0 with linearly dependent states. Check "
            "the inputs and use ridge > 0.",
            NumericalWarning,
            stacklevel=2,
        )
    return Readout(W, b)


def apply_readout(readout: Readout, states):
    """``states @ readout.weights + readout.bias``: (..., n) -> (..., k) (or (...) for 1-D).

    Example: ``rd.esn.apply_readout(rd.esn.fit_readout(S, y), S)``.
    """
    W, b = readout
    return jnp.asarray(states) @ W + b


def run_reservoir(cell, params, inputs, *, h1=None, washout: int = 0):
    """Reservoir states driven by ``inputs``: :func:`rnn_dynamics.rollout` minus a washout.

    Args:
      cell, params: the reservoir (e.g. ``rd.cells.esn``) and its params.
      inputs: (T, input_size): row t drives the state that row t of the result holds.
      h1: the state before the first input (default ``cell.initial_state(params)``).
      washout: number of leading states dropped (the transient that still remembers h1).

    Returns: (T − washout, state_size).

    Example: ``S = rd.esn.run_reservoir(cell, params, u, washout=100)``.
    """
    check_cell(cell)
    washout = _check_washout(washout)
    h1 = cell.initial_state(params) if h1 is None else as_state(cell, h1)
    inputs = as_inputs(cell, inputs, "inputs")
    if washout >= inputs.shape[0]:
        raise ValueError(f"washout: expected fewer than the {inputs.shape[0]} input steps, got {washout}.")
    return rollout(cell, params, h1, inputs)[washout:]


def _check_washout(washout):
    if washout == 0:
        return 0
    return check_positive_int("washout", washout)


def fit(cell, params, inputs, targets, *, ridge: float = 1e-6, washout: int = 0, h1=None,
        bias: bool = True) -> Readout:
    """Drive the reservoir with ``inputs`` and fit a ridge readout to ``targets``.

    Args:
      inputs: (T, input_size). targets: (T, k) or (T,), row t the target for state t.
      ridge, bias: see :func:`fit_readout`. washout, h1: see :func:`run_reservoir` (the first
      ``washout`` rows of targets are dropped too).

    Returns: a :class:`Readout`. Example: ``rd.esn.fit(cell, p, u, y, ridge=1e-6, washout=100)``.
    """
    states = run_reservoir(cell, params, inputs, h1=h1, washout=washout)
    targets = jnp.asarray(targets)
    if targets.shape[:1] != (jnp.shape(inputs)[0],):
        raise ValueError(
            f"targets: expected {jnp.shape(inputs)[0]} rows (one per input step), got shape {tuple(targets.shape)}."
        )
    return fit_readout(states, targets[washout:], ridge, bias=bias)


def predict(cell, params, readout: Readout, inputs, *, washout: int = 0, h1=None):
    """Readout of the reservoir driven by ``inputs`` (teacher-forced, one step at a time).

    Args: as :func:`fit`. Returns: (T − washout, k) (or (T − washout,)).
    Example: ``pred = rd.esn.predict(cell, p, readout, u)``.
    """
    return apply_readout(readout, run_reservoir(cell, params, inputs, h1=h1, washout=washout))


def nrmse(pred, target):
    """Normalised root-mean-square error sqrt(mean((pred − target)²) / var(target)).

    Means and the variance run over all entries. 1 is the error of predicting the target's
    mean; 0 is perfect. Args: pred, target of the same shape. Returns: a scalar.
    Example: ``rd.esn.nrmse(series[:-1], series[1:])`` is the persistence baseline.
    """
    pred, target = jnp.asarray(pred), jnp.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred: expected the shape of target {tuple(target.shape)}, got {tuple(pred.shape)}.")
    return jnp.sqrt(jnp.mean((pred - target) ** 2) / jnp.var(target))


class EchoStateCheck(NamedTuple):
    """Result of :func:`echo_state_property` (all arrays; vmap-able).

    Fields:
      sigma_max: σ_max(W) = ‖W‖₂ of ``params["W"]`` (NaN for cells without a ``W``).
      bound: ``cell.step_bound(params)``, a bound on ‖∂h_t/∂h_{t−1}‖₂ for all states and
        inputs ((1 − a) + a·σ_max(W) for an ESN; NaN when the cell has none).
      sufficient: bound < 1: every step contracts, so the echo-state property holds.
      distances: (T−1,) ‖h_t − h_t′‖₂ for two runs from different h_1 with the same inputs.
      ratio: distances[-1] / ‖h_1 − h_1′‖₂.
      forgets: ratio < tol: the initial state was forgotten over this input sequence.
    """

    sigma_max: jax.Array
    bound: jax.Array
    sufficient: jax.Array
    distances: jax.Array
    ratio: jax.Array
    forgets: jax.Array


def echo_state_property(cell, params, xs=None, *, key=None, steps: int = 500,
                        input_scale: float = 1.0, tol: float = 1e-4) -> EchoStateCheck:
    """Check the echo-state property: the sufficient condition, and forgetting in practice.

    Two states h_1, h_1′ drawn uniformly in [−1, 1]^n are driven by the same inputs; the
    property holds on those inputs when ‖h_t − h_t′‖ decays to zero. Under the sufficient
    condition (bound < 1) the distance falls at least as fast as bound^(t−1); a reservoir with a
    large spectral radius (chaotic) keeps them apart.

    Args:
      cell, params: the reservoir (any cell).
      xs: (T−1, input_size) inputs; if None, ``steps`` inputs drawn U[−input_scale,
        input_scale] from ``key``.
      key: PRNG key for h_1, h_1′ (and the inputs when xs is None). Required.
      steps, input_scale: the drawn inputs. tol: the forgetting threshold on ``ratio`` (keep it
        above the rounding floor: in float32 the distance bottoms out near 1e-7).

    Returns: :class:`EchoStateCheck`.

    Example::

        cell = rd.cells.esn(1, 100, spectral_radius=0.9)
        chk = rd.esn.echo_state_property(cell, cell.init(jax.random.key(0)), key=jax.random.key(1))
        chk.sigma_max, chk.sufficient, chk.forgets   # ρ = 0.9 but σ_max = 1.70: False, True
    """
    check_cell(cell)
    if key is None:
        raise TypeError("key: expected a PRNG key (jax.random.key(0)) for the two initial states, got None.")
    check_nonnegative("tol", tol)
    kh, kx = jax.random.split(key)
    if xs is None:
        steps = check_positive_int("steps", steps)
        input_scale = check_nonnegative("input_scale", input_scale)
        dt = jnp.asarray(jax.tree_util.tree_leaves(params)[0]).dtype
        xs = input_scale * jax.random.uniform(kx, (steps, cell.input_size), dt, -1.0, 1.0)
    xs = as_inputs(cell, xs)
    dtype = xs.dtype
    h1s = jax.random.uniform(kh, (2, cell.state_size), dtype, -1.0, 1.0)
    ha = rollout(cell, params, h1s[0], xs)
    hb = rollout(cell, params, h1s[1], xs)
    d = jnp.linalg.norm(ha - hb, axis=-1)
    ratio = d[-1] / jnp.linalg.norm(h1s[0] - h1s[1])
    W = params.get("W") if isinstance(params, dict) else None
    nan = jnp.asarray(jnp.nan, dtype)
    sigma = jnp.linalg.norm(W, 2).astype(dtype) if W is not None and jnp.ndim(W) == 2 else nan
    bound = jnp.asarray(cell.step_bound(params), dtype) if cell.step_bound is not None else nan
    return EchoStateCheck(sigma, bound, bound < 1, d, ratio, ratio < tol)
