"""Remedies for exploding and vanishing gradients, as composable pieces for :func:`rnn_dynamics.train`.

Each remedy is an optax ``GradientTransformation`` or a loss term (:class:`rnn_dynamics.Regularizer`),
never a flag inside the training loop:

* Gradient clipping: ``rd.train(..., clip_norm=1.0)`` / ``clip_value=`` (``optax.clip_by_global_norm``,
  ``optax.clip``; Pascanu, Mikolov & Bengio 2013).
* :func:`hessian_free`: truncated Newton with conjugate gradient on Gauss–Newton vector products,
  Levenberg–Marquardt damping (Martens 2010; Martens & Sutskever 2011), an optax transformation.
* :func:`pascanu_regularizer`: Pascanu et al.'s (2013) Ω that keeps the backpropagated error's norm.
* :func:`lyapunov_regularizer`: gradient flossing (Engelken 2023), Σ_i λ_i² over the k leading
  Lyapunov exponents, before training (``loss_weight=0``), during it, or both (``start``/``stop``).
* :func:`echo_state_start`: Hinton's fourth way, a tanh RNN initialised like an echo-state
  network (W rescaled to a spectral radius) trained with momentum (Sutskever et al. 2013).
* :func:`compare`: all of the above, and IRNN, LSTM and GRU, on one task (the ``compare`` command).
"""
from __future__ import annotations

import time
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from . import cells as _cells
from . import init as _init
from . import lyapunov as _lyapunov
from ._checks import check_nonnegative, check_positive_int
from ._train import Model, Regularizer, evaluate, train

__all__ = [
    "gauss_newton_vp",
    "HessianFreeState",
    "hessian_free",
    "pascanu_omega",
    "pascanu_regularizer",
    "lyapunov_penalty",
    "lyapunov_regularizer",
    "echo_state_start",
    "COMPARE_CONFIGS",
    "compare",
]


# --------------------------------------------------------------------------------------------
# Hessian-free optimisation


def gauss_newton_vp(outputs_fn: Callable, output_loss: Callable, params, v):
    """The Gauss–Newton vector product G v = Jᵀ H_L J v, never forming a matrix.

    Args:
      outputs_fn: ``params -> z``, the network outputs (any pytree of arrays) on a batch.
      output_loss: ``z -> scalar``, the loss as a function of the outputs (convex in z for
        MSE and softmax cross-entropy, so G is positive semi-definite).
      params: where J = ∂z/∂params is taken; v: a pytree like ``params``.

    Returns:
      A pytree like ``params``: J v by ``jax.jvp``, H_L (J v) by a forward-over-reverse
      Hessian-vector product of ``output_loss``, then Jᵀ(·) by ``jax.vjp``.

    Example: ``gv = rd.remedies.gauss_newton_vp(lambda p: rd.predict(model, p, x),
    lambda z: jnp.mean((z - y) ** 2), params, v)``.
    """
    z, Jv = jax.jvp(outputs_fn, (params,), (v,))
    HJv = jax.jvp(jax.grad(output_loss), (z,), (Jv,))[1]
    return jax.vjp(outputs_fn, params)[1](HJv)[0]


class HessianFreeState(NamedTuple):
    """State of :func:`hessian_free`: the damping λ, the last CG solution (warm start), the
    last reduction ratio ρ and the CG iterations used by the last step."""

    damping: jax.Array
    direction: jax.Array
    rho: jax.Array
    cg_iters: jax.Array


def hessian_free(
    *,
    damping: float = 1.0,
    cg_iters: int = 50,
    cg_tol: float = 1e-4,
    warm_start: float = 0.95,
    learning_rate: float = 1.0,
    min_damping: float = 1e-6,
) -> optax.GradientTransformationExtraArgs:
    """Hessian-free optimisation (Martens 2010) as an optax transformation.

    Each update solves (G + λI) d = -g by conjugate gradient (at most ``cg_iters``
    iterations, stopped when ‖r‖ ≤ ``cg_tol``·‖g‖), started from ``warm_start`` times the
    previous solution, where G v = Jᵀ H_L J v is the Gauss–Newton product
    (:func:`gauss_newton_vp`, by ``jax.jvp``/``jax.vjp``; no matrix is formed) and g the
    gradient it receives. The step is taken when it lowers the loss, else the update is zero.
    Levenberg–Marquardt: with ρ = (f(θ + d) − f(θ)) / (gᵀd + ½ dᵀG d), λ ← 1.5 λ when
    ρ < 1/4 and λ ← (2/3) λ when ρ > 3/4 (Martens 2010, section 4.1).

    The update needs the batch's functions as extra arguments (:func:`rnn_dynamics.train`
    passes them): ``outputs_fn(params) -> z``, ``output_loss(z) -> scalar``,
    ``value_fn(params) -> scalar`` (the loss minimised) and optionally ``value`` (its value at
    params). Parameters are flattened with ``jax.flatten_util.ravel_pytree`` for the CG.

    Args:
      damping: initial λ.
      cg_iters: maximum CG iterations per update (a static loop bound).
      cg_tol: relative residual at which CG stops.
      warm_start: factor of the previous solution used as CG's start (Martens: 0.95).
      learning_rate: scale of the accepted step (1: the full Newton step).
      min_damping: λ never goes below this.

    Example::

        res = rd.train(cell, task, steps=100, key=key, optimizer=rd.remedies.hessian_free())
    """
    damping = check_nonnegative("damping", damping)
    cg_iters = check_positive_int("cg_iters", cg_iters)
    cg_tol = check_nonnegative("cg_tol", cg_tol)
    warm_start = check_nonnegative("warm_start", warm_start)
    learning_rate = check_nonnegative("learning_rate", learning_rate)
    min_damping = check_nonnegative("min_damping", min_damping)

    def init(params):
        flat, _ = ravel_pytree(params)
        return HessianFreeState(jnp.asarray(damping, flat.dtype), jnp.zeros_like(flat),
                                jnp.asarray(jnp.nan, flat.dtype), jnp.zeros((), jnp.int32))

    def update(grads, state, params=None, *, outputs_fn=None, output_loss=None, value_fn=None,
               value=None, **extra):
        del extra
        if params is None or outputs_fn is None or output_loss is None or value_fn is None:
            raise ValueError(
                "hessian_free: the update needs params and the extra arguments outputs_fn, "
                "output_loss and value_fn (rd.train passes them); call "
                "opt.update(grads, state, params, outputs_fn=..., output_loss=..., value_fn=...)."
            )
        g, unravel = ravel_pytree(grads)
        theta, _ = ravel_pytree(params)
        lam = state.damping
        f_out = lambda flat: outputs_fn(unravel(flat))
        z, lin = jax.linearize(f_out, theta)         # J v without redoing the forward pass
        lin_t = jax.linear_transpose(lin, theta)     # Jᵀ u
        hvp = lambda u: jax.jvp(jax.grad(output_loss), (z,), (u,))[1]

        def G(v):
            return lin_t(hvp(lin(v)))[0]

        A = lambda v: G(v) + lam * v
        tol2 = (cg_tol ** 2) * jnp.vdot(g, g)
        x0 = warm_start * state.direction
        r0 = -g - A(x0)

        def cond(c):
            i, _, r, _, rr = c
            return (i < cg_iters) & (rr > tol2)

        def body(c):
            i, x, r, p, rr = c
            Ap = A(p)
            pAp = jnp.vdot(p, Ap)
            alpha = jnp.where(pAp > 0, rr / jnp.where(pAp > 0, pAp, 1), 0.0)
            x = x + alpha * p
            r = r - alpha * Ap
            rr_new = jnp.vdot(r, r)
            p = r + (rr_new / jnp.where(rr > 0, rr, 1)) * p
            return i + 1, x, r, p, rr_new

        iters, d, _, _, _ = jax.lax.while_loop(
            cond, body, (jnp.zeros((), jnp.int32), x0, r0, r0, jnp.vdot(r0, r0)))
        f0 = value_fn(params) if value is None else value
        f1 = value_fn(unravel(theta + learning_rate * d))
        step = learning_rate * d
        q = jnp.vdot(g, step) + 0.5 * jnp.vdot(step, G(step))
        rho = (f1 - f0) / jnp.where(q < 0, q, -jnp.finfo(q.dtype).tiny)
        lam = jnp.where(rho < 0.25, lam * 1.5, jnp.where(rho > 0.75, lam * (2.0 / 3.0), lam))
        lam = jnp.maximum(lam, min_damping)
        accept = jnp.isfinite(f1) & (f1 < f0)
        updates = unravel(jnp.where(accept, step, jnp.zeros_like(step)))
        return updates, HessianFreeState(lam.astype(state.damping.dtype), d, rho, iters)

    return optax.GradientTransformationExtraArgs(init, update)


# --------------------------------------------------------------------------------------------
# Pascanu et al.'s regulariser


def _omega_one(model, params, xs, target, weight):
    """Ω of one sequence (see :func:`pascanu_omega`)."""
    from ._train import _per_example, _read

    cell = model.cell
    cp = params["cell"]
    xs = xs.astype(jax.tree_util.tree_leaves(cp)[0].dtype)
    h1 = jax.lax.stop_gradient(cell.initial_state(cp))

    def loss_of_eps(eps):
        def body(h, xe):
            h = cell.step(cp, h, xe[0]) + xe[1]
            return h, h

        hs = jax.lax.scan(body, h1, (xs, eps))[1]
        ell = _per_example(model, _read(model, params, hs)[None], target[None])[0]
        return jnp.sum(ell * weight) if weight is not None else jnp.sum(ell), hs

    eps0 = jnp.zeros((xs.shape[0], cell.state_size), h1.dtype)
    delta, hs = jax.grad(loss_of_eps, has_aux=True)(eps0)
    delta = jax.lax.stop_gradient(delta)                      # δ_t = ∂ℓ/∂h_t, constant
    h_prev = jax.lax.stop_gradient(jnp.concatenate([h1[None], hs[:-1]]))   # h_{t-1}, constant

    def term(h, x, d):
        _, vjp = jax.vjp(lambda h_: cell.step(cp, h_, x), h)
        back = vjp(d)[0]                                      # (∂h_t/∂h_{t-1})ᵀ δ_t
        nd = jnp.sqrt(jnp.sum(d * d))
        nb = jnp.sqrt(jnp.sum(back * back) + jnp.finfo(d.dtype).tiny)
        return jnp.where(nd > 0, (nb / jnp.where(nd > 0, nd, 1) - 1.0) ** 2, 0.0)

    return jnp.sum(jax.vmap(term)(h_prev, xs, delta))


def pascanu_omega(model: Model, params, batch) -> jax.Array:
    """Pascanu, Mikolov & Bengio's (2013, eq. 9) regulariser, averaged over the batch.

    For one sequence, with δ_t = ∂ℓ/∂h_t the backpropagated error at state h_t
    (t = 2..L+1 for L inputs)::

        Ω = Σ_t ( ‖(∂h_t/∂h_{t-1})ᵀ δ_t‖ / ‖δ_t‖ − 1 )²

    Eq. 9 writes the row-vector form ‖(∂E/∂x_{k+1}) (∂x_{k+1}/∂x_k)‖ / ‖∂E/∂x_{k+1}‖; this is
    the same number. As in the paper, δ_t is treated as a constant and only the immediate
    dependence of ∂h_t/∂h_{t-1} on the parameters is differentiated (h_{t-1} is held fixed: their
    ∂⁺ notation, eq. 10). Terms with δ_t = 0 count 0. The mask weights ℓ (so δ) per example.

    Args:
      model: a :class:`rnn_dynamics.Model`; params: its params.
      batch: ``(inputs (B, L, m), targets, mask)``.

    Returns: a scalar, the mean of Ω over the batch's sequences.

    Example: ``rd.remedies.pascanu_omega(model, params, (x, y, None))``.
    """
    inputs, targets, mask = batch
    w = mask if mask is not None else None
    if w is None:
        om = jax.vmap(lambda x, t: _omega_one(model, params, x, t, None))(inputs, targets)
    else:
        om = jax.vmap(lambda x, t, m: _omega_one(model, params, x, t, m))(inputs, targets, w)
    return jnp.mean(om)


def pascanu_regularizer(weight: float = 1.0, *, start: int = 0, stop: int | None = None) -> Regularizer:
    """Pascanu et al.'s Ω (:func:`pascanu_omega`) as a loss term ``weight · Ω``.

    Example: ``rd.train(cell, task, ..., clip_norm=1.0,
    regularizers=(rd.remedies.pascanu_regularizer(2.0),))`` (the paper pairs it with clipping).
    """
    return Regularizer("pascanu_omega", pascanu_omega, check_nonnegative("weight", weight), start, stop)


# --------------------------------------------------------------------------------------------
# Lyapunov regularisation (gradient flossing)


def _default_exponents(k, horizon, sequences):
    spectrum = getattr(_lyapunov, "lyapunov_spectrum", None)
    if spectrum is None:
        raise ValueError(
            "exponents_fn: rnn_dynamics.lyapunov_spectrum is not available in this build; pass "
            "exponents_fn(params, batch) -> (k,) (a differentiable estimate of the k leading "
            "Lyapunov exponents)."
        )

    def fn(model, params, batch):
        cell, cp = model.cell, params["cell"]
        xs = batch[0][:sequences]
        if horizon is not None:
            xs = xs[:, :horizon]
        h1 = cell.initial_state(cp)
        ex = jax.vmap(lambda x: spectrum(cell, cp, h1, x.astype(h1.dtype), k=k).exponents)(xs)
        return jnp.mean(ex, axis=0)

    return fn


def lyapunov_penalty(exponents: jax.Array) -> jax.Array:
    """Σ_i λ_i²: the gradient-flossing loss of a (k,) vector of Lyapunov exponents."""
    return jnp.sum(jnp.asarray(exponents) ** 2)


def lyapunov_regularizer(
    weight: float = 1.0,
    *,
    k: int = 1,
    horizon: int | None = None,
    sequences: int = 1,
    exponents_fn: Callable | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Regularizer:
    """Gradient flossing (Engelken, NeurIPS 2023): the loss term ``weight · Σ_{i≤k} λ_i²``.

    The k leading Lyapunov exponents (nats per step) come from a differentiable QR
    re-orthonormalisation along the first ``sequences`` input sequences of the batch, cut to
    ``horizon`` steps (default: the whole sequence): by default
    :func:`rnn_dynamics.lyapunov_spectrum` from h_1 = ``cell.initial_state``. Pushing them to 0
    keeps the products of step Jacobians, so the backpropagated gradients, well-conditioned.

    When: during training (``start``, ``stop`` select steps), before it (train with
    ``loss_weight=0`` and this term alone, then pass the result's params to a second
    :func:`rnn_dynamics.train`), or both.

    Args:
      weight: the term's weight.
      k: number of leading exponents.
      horizon: steps of the estimate (None: all).
      sequences: batch sequences averaged over.
      exponents_fn: your own ``exponents_fn(model, params, batch) -> (k,)`` (differentiable);
        replaces the default.
      start, stop: active for start <= step < stop.

    Example::

        floss = rd.remedies.lyapunov_regularizer(1.0, k=4, horizon=50, stop=500)
        rd.train(cell, task, ..., regularizers=(floss,))
    """
    weight = check_nonnegative("weight", weight)
    k = check_positive_int("k", k)
    sequences = check_positive_int("sequences", sequences)
    if horizon is not None:
        horizon = check_positive_int("horizon", horizon)
    fn = exponents_fn if exponents_fn is not None else _default_exponents(k, horizon, sequences)

    def penalty(model, params, batch):
        return lyapunov_penalty(fn(model, params, batch))

    return Regularizer("lyapunov", penalty, weight, start, stop)


# --------------------------------------------------------------------------------------------
# momentum from an echo-state start


def echo_state_start(
    input_size: int,
    hidden_size: int,
    *,
    spectral_radius: float = 1.1,
    input_scale: float = 1.0,
    learning_rate: float = 1e-3,
    momentum: float = 0.9,
):
    """Hinton's fourth way: a tanh RNN initialised like an echo-state network, then every
    weight trained with momentum (Sutskever, Martens, Dahl & Hinton 2013).

    Returns ``(cell, optimizer)``: ``rd.cells.vanilla(input_size, hidden_size, "tanh")`` with
    W drawn Gaussian and rescaled to ``spectral_radius`` (``rd.init.spectral_radius``; Sutskever
    et al. used 1.1 for tanh units), U ~ N(0, input_scale²/input_size), and
    ``optax.sgd(learning_rate, momentum, nesterov=True)``.

    Example::

        cell, opt = rd.remedies.echo_state_start(2, 100)
        rd.train(cell, task, steps=1000, key=key, optimizer=opt)
    """
    radius = check_nonnegative("spectral_radius", spectral_radius)
    cell = _cells.vanilla(input_size, hidden_size, "tanh",
                          recurrent_init=_init.spectral_radius(radius), input_gain=input_scale)
    opt = optax.sgd(check_nonnegative("learning_rate", learning_rate),
                    momentum=check_nonnegative("momentum", momentum), nesterov=True)
    return cell._replace(name="esn-tanh"), opt


# --------------------------------------------------------------------------------------------
# the comparison


def _cfg(make, **kw):
    return (make, kw)


# name -> (cell factory (m, n) -> cell, train keyword arguments). Plain SGD with clipping at 1
# for every model but "tanh" (no clipping), learning rate 0.01 (0.1 for the gated cells), set
# once and not tuned; "tanh+hf" takes a tenth of the steps, each a CG solve of up to 20
# Gauss–Newton products; "esn+momentum": W at spectral radius 1.1, Nesterov momentum 0.9,
# learning rate 0.001, no clipping.
COMPARE_CONFIGS = {
    "tanh": _cfg(lambda m, n: _cells.vanilla(m, n, "tanh"), optimizer="sgd", learning_rate=1e-2),
    "tanh+clip": _cfg(lambda m, n: _cells.vanilla(m, n, "tanh"), optimizer="sgd",
                      learning_rate=1e-2, clip_norm=1.0),
    "relu": _cfg(lambda m, n: _cells.vanilla(m, n, "relu"), optimizer="sgd", learning_rate=1e-2,
                 clip_norm=1.0),
    "irnn": _cfg(lambda m, n: _cells.irnn(m, n), optimizer="sgd", learning_rate=1e-2, clip_norm=1.0),
    "lstm": _cfg(lambda m, n: _cells.lstm(m, n), optimizer="sgd", learning_rate=1e-1, clip_norm=1.0),
    "gru": _cfg(lambda m, n: _cells.gru(m, n), optimizer="sgd", learning_rate=1e-1, clip_norm=1.0),
    "tanh+hf": _cfg(lambda m, n: _cells.vanilla(m, n, "tanh"), hf=dict(cg_iters=20),
                    steps_scale=0.1),
    "tanh+omega": _cfg(lambda m, n: _cells.vanilla(m, n, "tanh"), optimizer="sgd",
                       learning_rate=1e-2, clip_norm=1.0, omega=2.0),
    "tanh+floss": _cfg(lambda m, n: _cells.vanilla(m, n, "tanh"), optimizer="sgd",
                       learning_rate=1e-2, clip_norm=1.0, floss=dict(weight=1.0, k=4)),
    "esn+momentum": _cfg(None, esn=dict(spectral_radius=1.1, learning_rate=1e-3, momentum=0.9)),
}


def compare(
    task,
    *,
    input_size: int,
    hidden: int,
    steps: int,
    seeds: int,
    key,
    names: Sequence[str] | None = None,
    batch: int = 32,
    log_every: int = 100,
    test_size: int = 1000,
    target: float = 0.01,
    progress: bool = False,
    on_result: Callable | None = None,
) -> list:
    """Train every configuration of :data:`COMPARE_CONFIGS` on one task; one row per configuration.

    Args:
      task: ``task(key, batch_size) -> (inputs, targets, mask)``, a regression task.
      input_size, hidden: the cells' sizes.
      steps: optimiser steps (Hessian-free: ``steps_scale`` of them, each a CG solve).
      seeds: networks per configuration, trained together (vmapped).
      key: PRNG key; every configuration uses the same seed keys and the same test batch.
      names: a subset of the configurations (default all).
      test_size: sequences in the test batch (``task(fold_in(key, 1), test_size)``).
      target: the probe MSE whose first crossing is reported.
      on_result: ``on_result(row)`` after each configuration (e.g. to save partial results).

    Returns:
      A list of dicts: ``name``, ``test_mse`` (per seed), ``steps_to_target`` (per seed, None
      when not reached at a logged step), ``log10_jacobian_norm`` and ``lambda_max`` (per seed,
      at start and end), ``skipped``, ``seconds``, ``first_call_s`` (compile plus one chunk),
      ``steady_steps_per_s``, ``steps``.

    Example: ``rows = rd.remedies.compare(partial(rd.tasks.adding, length=50), input_size=2,
    hidden=100, steps=2000, seeds=3, key=jax.random.key(0))``.
    """
    names = list(COMPARE_CONFIGS) if names is None else list(names)
    for nm in names:
        if nm not in COMPARE_CONFIGS:
            raise ValueError(f"names: unknown configuration {nm!r}; expected some of {list(COMPARE_CONFIGS)}.")
    test = task(jax.random.fold_in(key, 1), check_positive_int("test_size", test_size))
    train_key = jax.random.fold_in(key, 0)
    rows = []
    for nm in names:
        make, kw = COMPARE_CONFIGS[nm]
        kw = dict(kw)
        n_steps = max(1, int(round(steps * kw.pop("steps_scale", 1.0))))
        every = max(1, min(log_every, n_steps))
        if "esn" in kw:
            cell, opt = echo_state_start(input_size, hidden, **kw.pop("esn"))
            kw["optimizer"] = opt
        else:
            cell = make(input_size, hidden)
        if "hf" in kw:
            kw["optimizer"] = hessian_free(**kw.pop("hf"))
            every = max(1, min(every, n_steps // 10 or 1))
        regs = []
        if "omega" in kw:
            regs.append(pascanu_regularizer(kw.pop("omega")))
        if "floss" in kw:
            regs.append(lyapunov_regularizer(**kw.pop("floss")))
        stamps = []
        t0 = time.perf_counter()
        res = train(cell, task, steps=n_steps, key=train_key, seeds=seeds, batch=batch,
                    log_every=every, regularizers=tuple(regs), progress=progress,
                    callback=lambda s, logs: stamps.append((s, time.perf_counter())), **kw)
        secs = time.perf_counter() - t0
        mse = np.asarray(evaluate(res.model, res.params, test))
        probe = res.logs["probe_loss"]
        reached = []
        for s in range(probe.shape[0]):
            hit = np.nonzero(probe[s] < target)[0]
            reached.append(int(res.logs["step"][hit[0]]) if hit.size else None)
        first = stamps[1][1] - t0 if len(stamps) > 1 else secs
        steady = (stamps[-1][0] - stamps[1][0]) / (stamps[-1][1] - stamps[1][1]) if len(stamps) > 2 else float("nan")
        row = dict(
            name=nm, cell=cell.name, steps=n_steps, test_mse=mse.tolist(),
            steps_to_target=reached,
            log10_jacobian_norm_start=res.logs["log10_jacobian_norm"][:, 0].tolist(),
            log10_jacobian_norm_end=res.logs["log10_jacobian_norm"][:, -1].tolist(),
            lambda_max_start=res.logs["lambda_max"][:, 0].tolist(),
            lambda_max_end=res.logs["lambda_max"][:, -1].tolist(),
            skipped=res.skipped.tolist(), seconds=secs, first_call_s=first,
            steady_steps_per_s=steady, baseline=1.0 / 6.0, target=target,
        )
        rows.append(row)
        if on_result is not None:
            on_result(row)
    return rows
