"""Backpropagation through time made visible: the gradient split by lag, and truncated BPTT.

Index convention as everywhere (:mod:`rnn_dynamics.rollout`): h_1 given, ``xs`` = x_2..x_T,
step t = 2..T computes h_t = step(θ, h_{t−1}, x_t). ∂⁺h_t/∂θ is the *immediate* derivative of
step t (h_{t−1} held fixed).

Loss on the final state, L = ℓ(h_T)::

    ∂L/∂θ = Σ_{t=2..T} (∂ℓ/∂h_T)(∂h_T/∂h_t)(∂⁺h_t/∂θ)  =  Σ_{k=0..T−2} C_k,   k = T − t.

C_k, the *lag-k contribution*, is how parameters acting k steps before the loss move it. Its
size follows ‖∂h_T/∂h_{T−k}‖: far-past terms vanish or explode with k (Britz's BPTT tutorial,
Pascanu et al. 2013). Per-step losses, L = ℓ(h_2, …, h_T) (for instance Σ_t ℓ_t(h_t)), give the
double sum ∂L/∂θ = Σ_t Σ_{s ≤ t} (∂L/∂h_t)(∂h_t/∂h_s)(∂⁺h_s/∂θ), with ∂L/∂h_t the direct
partial. :func:`by_lag` groups it two ways:

* ``group="lag"``: term (t, s) goes to k = t − s, the distance between the loss term and the
  step that acts: the lag over which the gradient travels. Costs T − 1 vector-Jacobian
  products of the whole batched step (O(T²·n²) for a vanilla cell): about T plain gradients.
* ``group="step"``: term (t, s) goes to k = T − s, the distance from the end of the step that
  acts. One reverse scan that accumulates the adjoint (the usual backward pass), the cost of
  the final-state decomposition.

For a final-state loss the two coincide (and ``group`` is ignored).

Truncated BPTT (:func:`truncated_grad`) here is the **k-step window**: every loss term
backpropagates through at most ``window`` steps (Williams & Peng's BPTT(h)): the sum of the
lag contributions C_0 .. C_{window−1} (``group="lag"``). It is computed with ``stop_gradient``
on the state ``window`` steps before each loss term, independently of :func:`by_lag`. (The
other common variant, stop_gradient every k steps in fixed chunks, gives each loss term a
window between 1 and k that depends on its position.) :func:`gradient_bias` is the cosine
between truncated and full gradients.

Example::

    cell = rd.cells.vanilla(2, 32, "tanh", gain=1.0)
    p = cell.init(jax.random.key(0)); h1 = jnp.zeros(32)
    xs = jax.random.normal(jax.random.key(1), (99, 2))
    out = rd.bptt.by_lag(cell, p, h1, xs, lambda h: jnp.sum(h ** 2))
    out.norms.shape                      # (99,): ‖C_k‖ for k = 0..98
    jax.tree.map(lambda c: c.sum(0), out.contributions)   # == jax.grad of the loss
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from ._cell import check_cell
from ._checks import NumericalWarning, as_inputs, as_state, check_choice, check_positive_int, is_traced
from ._compile import cell_jit

__all__ = ["ByLag", "by_lag", "truncated_grad", "gradient_bias", "full_grad"]

GROUPS = ("lag", "step")


class ByLag(NamedTuple):
    """Result of :func:`by_lag`.

    Fields:
      contributions: params-shaped pytree, each leaf with a leading axis of length T−1: entry k
        is C_k (None with ``keep=False``). Summed over k they give ``grad``.
      norms: (T−1,) ‖C_k‖₂ over all parameters together (the global L2 norm).
      param_norms: params-shaped pytree of (T−1,) arrays: ‖C_k‖ per parameter array.
      grad: ∂L/∂θ, the full gradient (Σ_k C_k).
      loss: the loss value.
    """

    contributions: Any
    norms: jax.Array
    param_norms: Any
    grad: Any
    loss: jax.Array


def _tree_norm(tree):
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))


def _norms(tree):
    """(global L2 norm, pytree of per-leaf L2 norms), reading each leaf once."""
    sq = jax.tree_util.tree_map(lambda x: jnp.sum(jnp.square(x)), tree)
    return jnp.sqrt(sum(jax.tree_util.tree_leaves(sq))), jax.tree_util.tree_map(jnp.sqrt, sq)


def _trajectory(cell, params, h1, xs):
    def body(h, x):
        h = cell.step(params, h, x)
        return h, h

    _, hs = jax.lax.scan(body, h1, xs)
    return hs, jnp.concatenate([h1[None], hs[:-1]])  # h_2..h_T and h_1..h_{T-1}


def _loss_and_direct(loss_fn, per_step, hs):
    """The loss and its direct partials ∂L/∂h_t, shape (T−1, n) (only the last row for ℓ(h_T))."""
    if per_step:
        return jax.value_and_grad(loss_fn)(hs)
    loss, g = jax.value_and_grad(loss_fn)(hs[-1])
    return loss, jnp.zeros_like(hs).at[-1].set(g)


def _by_step(cell, params, hprev, xs, G, keep):
    """One reverse scan: adjoint a_t = G_t + a_{t+1} J_{t+1}; emits a_t ∂⁺h_t/∂θ."""

    def body(carry, inp):
        a, acc = carry
        hp, x, g = inp
        _, vjp = jax.vjp(lambda p, h: cell.step(p, h, x), params, hp)
        dp, dh = vjp(a + g)
        acc = jax.tree_util.tree_map(jnp.add, acc, dp)
        return (dh, acc), (dp if keep else None, *_norms(dp))

    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    rev = (hprev[::-1], xs[::-1], G[::-1])  # k = 0 first
    (_, grad), (contribs, norms, pnorms) = jax.lax.scan(body, (jnp.zeros_like(G[0]), zero), rev)
    return contribs, norms, pnorms, grad


def _by_lag(cell, params, hprev, xs, G, keep):
    """Lag grouping of the double sum: all adjoints move back one step per scan iteration.

    A[i] is the adjoint sitting on h_{i+2} (the output of step i) that left its loss term k
    steps ago; one vjp of the batched step gives every term's lag-k contribution (summed over
    i) and the adjoints on h_{i+1}, which become A[i−1] for lag k+1.
    """

    def batched(p, H):
        return jax.vmap(cell.step, in_axes=(None, 0, 0))(p, H, xs)

    _, f_vjp = jax.vjp(batched, params, hprev)

    def body(carry, _):
        A, acc = carry
        dp, dH = f_vjp(A)
        acc = jax.tree_util.tree_map(jnp.add, acc, dp)
        A = jnp.concatenate([dH[1:], jnp.zeros_like(dH[:1])])
        return (A, acc), (dp if keep else None, *_norms(dp))

    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    (_, grad), (contribs, norms, pnorms) = jax.lax.scan(body, (G, zero), None, length=G.shape[0])
    return contribs, norms, pnorms, grad


def _by_lag_impl(cell, params, h1, xs, *, loss_fn, per_step, group, keep):
    hs, hprev = _trajectory(cell, params, h1, xs)
    loss, G = _loss_and_direct(loss_fn, per_step, hs)
    if per_step and group == "lag":
        c, nrm, pn, grad = _by_lag(cell, params, hprev, xs, G, keep)
    else:
        c, nrm, pn, grad = _by_step(cell, params, hprev, xs, G, keep)
    return ByLag(c, nrm, pn, grad, loss)


_by_lag_jit = cell_jit(_by_lag_impl, static_argnames=("loss_fn", "per_step", "group", "keep"))


def _check_loss(cell, loss_fn, per_step, T1, dtype):
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a function of the state(s) returning a scalar, got {type(loss_fn).__name__}.")
    shape = (T1, cell.state_size) if per_step else (cell.state_size,)
    what = "hs (T-1, state_size) = h_2..h_T" if per_step else "h_T (state_size,)"
    try:
        out = jax.eval_shape(loss_fn, jax.ShapeDtypeStruct(shape, dtype))
    except Exception as e:  # the user's function failed on the documented input
        raise TypeError(f"loss_fn: calling it on {what} failed: {type(e).__name__}: {e}") from e
    if getattr(out, "shape", None) != ():
        raise ValueError(
            f"loss_fn: expected a scalar loss from {what}, got shape {getattr(out, 'shape', out)}. "
            f"Sum or average it (jnp.sum / jnp.mean)."
        )


def _prepare(cell, params, h1, xs, loss_fn, per_step):
    check_cell(cell)
    h1 = as_state(cell, h1)
    xs = as_inputs(cell, xs)
    if not isinstance(per_step, bool):
        raise TypeError(f"per_step: expected True or False, got {per_step!r}.")
    _check_loss(cell, loss_fn, per_step, xs.shape[0], h1.dtype)
    return h1, xs


def _warn_nonfinite(what, value, stacklevel=3):
    if is_traced(value):
        return
    if not all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(value)):
        warnings.warn(
            f"{what} has non-finite entries: the backpropagated adjoint overflowed (exploding "
            f"gradients: ‖∂h_T/∂h_t‖ grows with the lag) or the trajectory itself diverged. "
            f"Shorten the sequence, lower the gain, or enable float64 "
            f"(jax.config.update('jax_enable_x64', True)).",
            NumericalWarning,
            stacklevel=stacklevel,
        )


def by_lag(cell, params, h1, xs, loss_fn: Callable, *, per_step: bool = False,
           group: str = "lag", keep: bool = True) -> ByLag:
    """The gradient ∂L/∂params split into its contribution at every lag k (see the module).

    Args:
      cell, params: the cell and its params.
      h1: (state_size,) the state h_1. xs: (T−1, input_size) inputs x_2..x_T.
      loss_fn: ``per_step=False``: ℓ(h_T), a function of the final state (state_size,)
        -> scalar. ``per_step=True``: L(hs), a function of all states hs = h_2..h_T,
        (T−1, state_size) -> scalar (e.g. ``lambda hs: jnp.sum((hs @ V - ys) ** 2)``).
        Close over targets; pass the same function object again to reuse the compilation.
      per_step: which form ``loss_fn`` has.
      group: for per-step losses, ``"lag"`` (k = t − s, ~T gradients of work) or ``"step"``
        (k = T − s, ~1 gradient); ignored for a final-state loss, where both are k = T − t.
      keep: keep the stacked contributions (T−1 copies of the params); False keeps only their
        norms and the sum (memory of one gradient).

    Returns:
      :class:`ByLag`: ``contributions`` (each params leaf with a leading (T−1,) axis, entry k
      = C_k), ``norms`` (T−1,), ``param_norms``, ``grad`` = Σ_k C_k, ``loss``. Non-finite
      results raise an :class:`rnn_dynamics.NumericalWarning`.

    Cost: one forward scan and one reverse scan that recomputes each step's vjp and emits its
    parameter contribution. Measured with benchmarks/bptt.py (tanh cell, float32, 2-core AMD
    EPYC shared with other jobs, so ±30 %): ``keep=False`` ran 1.9× ``jax.grad`` of the same
    loss at n = 128, T = 500 and n = 256, T = 1000. ``keep=True`` also writes T−1 copies of the
    params (262 MB at n = 256, T = 1000) and is bound by that memory traffic: 5.5× and 8.8×
    there, under 1× at n = 64, T = 200. Use ``keep=False`` for long sequences and large cells.

    Example::

        out = rd.bptt.by_lag(cell, p, h1, xs, lambda h: jnp.sum(h ** 2))
        jnp.log10(out.norms)             # falls linearly in k for a contracting tanh RNN
    """
    h1, xs = _prepare(cell, params, h1, xs, loss_fn, per_step)
    check_choice("group", group, GROUPS)
    if not isinstance(keep, bool):
        raise TypeError(f"keep: expected True or False, got {keep!r}.")
    out = _by_lag_jit(cell, params, h1, xs, loss_fn=loss_fn, per_step=per_step, group=group, keep=keep)
    _warn_nonfinite("by_lag: the gradient contributions", (out.norms, out.loss))
    return out


def _full_impl(cell, params, h1, xs, *, loss_fn, per_step):
    def L(p):
        hs, _ = _trajectory(cell, p, h1, xs)
        return loss_fn(hs) if per_step else loss_fn(hs[-1])

    return jax.grad(L)(params)


def _truncated_impl(cell, params, h1, xs, *, loss_fn, per_step, window):
    T1 = xs.shape[0]
    window = min(window, T1)  # no loss term has more than T−1 steps behind it
    hs, _ = _trajectory(cell, params, h1, xs)
    if not per_step:
        states = jnp.concatenate([h1[None], hs])  # row j = h_{j+1}
        start = jax.lax.stop_gradient(states[T1 - window])  # h_{T−window}

        def L(p):
            h = jax.lax.scan(lambda h, x: (cell.step(p, h, x), None), start, xs[T1 - window:])[0]
            return loss_fn(h)

        return jax.grad(L)(params)

    states = jax.lax.stop_gradient(jnp.concatenate([h1[None], hs]))  # row j = h_{j+1}

    def L(p):
        def window_end(i):
            j0 = i + 1 - window  # h_{i+2} is reached from state row j0 by inputs xs[j0..i]

            def body(h, j):
                h_new = cell.step(p, h, xs[jnp.maximum(j, 0)])
                return jnp.where(j >= 0, h_new, h), None

            return jax.lax.scan(body, states[jnp.maximum(j0, 0)], j0 + jnp.arange(window))[0]

        return loss_fn(jax.vmap(window_end)(jnp.arange(T1)))

    return jax.grad(L)(params)


_truncated_jit = cell_jit(_truncated_impl, static_argnames=("loss_fn", "per_step", "window"))
_full_jit = cell_jit(_full_impl, static_argnames=("loss_fn", "per_step"))


def truncated_grad(cell, params, h1, xs, loss_fn: Callable, window: int, *, per_step: bool = False):
    """Truncated BPTT with a ``window``-step window: each loss term backpropagates ``window`` steps.

    Forward values are exact (the full trajectory); the gradient of each loss term stops at the
    state ``window`` steps before it (``stop_gradient``). So it equals the sum of the lag
    contributions C_0 .. C_{window−1} of :func:`by_lag` (``group="lag"``), and with
    window ≥ T − 1 the full gradient.

    Args:
      cell, params, h1 (state_size,), xs (T−1, input_size), loss_fn, per_step: as :func:`by_lag`.
      window: the number of steps each loss term backpropagates through (≥ 1).

    Returns: a params-shaped pytree, the truncated gradient. Per-step losses cost about
    ``window`` forward steps per time step (one window per loss term, vmapped).

    Example: ``g = rd.bptt.truncated_grad(cell, p, h1, xs, lambda h: jnp.sum(h ** 2), window=10)``.
    """
    h1, xs = _prepare(cell, params, h1, xs, loss_fn, per_step)
    window = min(check_positive_int("window", window), xs.shape[0])  # one compile for all ≥ T−1
    g = _truncated_jit(cell, params, h1, xs, loss_fn=loss_fn, per_step=per_step, window=window)
    _warn_nonfinite("truncated_grad: the gradient", g)
    return g


def full_grad(cell, params, h1, xs, loss_fn: Callable, *, per_step: bool = False):
    """The full BPTT gradient, ``jax.grad`` of the loss of the rollout (for comparison).

    Args and example as :func:`truncated_grad` without ``window``. Returns a params-shaped pytree.
    """
    h1, xs = _prepare(cell, params, h1, xs, loss_fn, per_step)
    g = _full_jit(cell, params, h1, xs, loss_fn=loss_fn, per_step=per_step)
    _warn_nonfinite("full_grad: the gradient", g)
    return g


def _cosine(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    dot = sum(jnp.vdot(x, y) for x, y in zip(la, lb))
    den = _tree_norm(a) * _tree_norm(b)
    return jnp.where(den > 0, dot / jnp.where(den > 0, den, 1), jnp.nan)


def gradient_bias(cell, params, h1, xs, loss_fn: Callable, window: int, *, per_step: bool = False):
    """Cosine between the truncated (``window`` steps) and the full BPTT gradient.

    1 means truncation only rescales the gradient; below 1 it also turns it (a biased
    direction); NaN if either gradient is zero. Arguments as :func:`truncated_grad`.

    Returns: a scalar in [−1, 1].

    Example: ``rd.bptt.gradient_bias(cell, p, h1, xs, loss, window=5)`` is close to 1 for a
    strongly contracting RNN (far lags contribute nothing) and drops near the edge of chaos.
    """
    h1, xs = _prepare(cell, params, h1, xs, loss_fn, per_step)
    window = min(check_positive_int("window", window), xs.shape[0])
    gt = _truncated_jit(cell, params, h1, xs, loss_fn=loss_fn, per_step=per_step, window=window)
    gf = _full_jit(cell, params, h1, xs, loss_fn=loss_fn, per_step=per_step)
    c = _cosine(gt, gf)
    _warn_nonfinite("gradient_bias: the gradients", (gt, gf))
    return c
