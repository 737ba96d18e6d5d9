"""Training a cell with a linear readout: models, losses and the jit-compiled optax loop.

A :class:`Model` is a :class:`~rnn_dynamics.Cell` plus a linear readout of ``cell.hidden(h)``,
from the last state (``readout="last"``) or from every state (``readout="all"``), with a
masked mean-squared error (``loss="mse"``) or a masked softmax cross-entropy
(``loss="xent"``, integer labels). Params are the pytree ``{"cell": ..., "readout": {"W", "b"}}``.

A *batch* is ``(inputs, targets, mask)``:

* ``inputs`` (B, L, input_size): the sequence fed to the cell, from h_1 = ``cell.initial_state``
  (index convention: :mod:`rnn_dynamics.rollout`; L inputs give states h_2..h_{L+1}).
* ``targets``: regression values (``mse``) or class labels, as integers or one-hot vectors
  (``xent``). Per step, as :mod:`rnn_dynamics.tasks` returns them: (B, L, output_size) or
  (B, L), with ``mask`` (B, L). Or, for ``readout="last"``, one answer per sequence:
  (B, output_size) or (B,), with ``mask`` (B,). A model with ``readout="last"`` given a
  per-step batch scores its output against the last step's target, weighted by the last
  step's mask (right for tasks answered at the end, such as the adding problem).
* ``mask``: ``None`` or weights, one per position scored. The loss is Σ mask·ℓ / Σ mask.

:func:`train` takes a task function ``task(key, batch_size) -> batch`` (for instance
``functools.partial(rd.tasks.adding, length=100)``) or a fixed data set (a batch of N
examples, from which minibatches are drawn). The batch for step t of a seed is
``task(jax.random.fold_in(seed_key, t), batch)``, so it depends only on the seed's key and
the step: chunking, vmapping and resuming give the same data.
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from . import lyapunov as _lyapunov
from ._cell import Cell, batch_step_of, check_cell, split_cell
from ._checks import NumericalWarning, check_choice, check_nonnegative, check_positive_int
from ._compile import cell_jit
from ._devices import seed_devices
from ._jacobian import jacobian_norms

__all__ = [
    "Model",
    "Regularizer",
    "TrainResult",
    "init_model",
    "predict",
    "model_loss",
    "evaluate",
    "train",
    "make_optimizer",
    "OPTIMIZERS",
]

READOUTS = ("last", "all")
LOSSES = ("mse", "xent")
OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
_PROBE_FOLD = 0x7FFFFFFF  # fold_in constant of the probe batch (steps stay below it)


# --------------------------------------------------------------------------------------------
# the model


class Model(NamedTuple):
    """A cell with a linear readout ``y = W_o · cell.hidden(h) + b_o``.

    Fields:
      cell: any :class:`rnn_dynamics.Cell` (``stack`` and ``from_flax`` included).
      output_size: outputs of the readout (number of classes for ``loss="xent"``).
      readout: ``"last"`` (read h_T only) or ``"all"`` (read every state).
      loss: ``"mse"`` (masked mean-squared error, averaged over outputs) or ``"xent"``
        (masked softmax cross-entropy with integer labels).

    Example::

        model = rd.Model(rd.cells.irnn(2, 100), output_size=1)     # adding problem
        params = rd.init_model(model, jax.random.key(0))
        y = rd.predict(model, params, inputs)                      # (B, 1)
    """

    cell: Cell
    output_size: int = 1
    readout: str = "last"
    loss: str = "mse"


def _check_model(model) -> Model:
    if isinstance(model, Cell):
        raise TypeError(
            "model: expected an rd.Model (a cell plus readout), got a Cell. Wrap it: "
            "rd.Model(cell, output_size=1)."
        )
    if not isinstance(model, Model):
        raise TypeError(f"model: expected an rd.Model, got {type(model).__name__}.")
    check_cell(model.cell)
    check_positive_int("output_size", model.output_size)
    check_choice("readout", model.readout, READOUTS)
    check_choice("loss", model.loss, LOSSES)
    return model


def init_model(model: Model, key) -> dict:
    """Params ``{"cell": cell.init(k1), "readout": {"W": (out, hidden), "b": (out,)}}``.

    The readout W has entries N(0, 1/hidden_size), b = 0; dtype follows the cell's params.
    Example: ``params = rd.init_model(rd.Model(cell, 1), jax.random.key(0))``; for seeds,
    ``jax.lax.map(lambda k: rd.init_model(model, k), keys)`` (not ``jax.vmap``: see
    ``rnn_dynamics._cell.init_many``).
    """
    kc, kr = jax.random.split(key)
    cp = model.cell.init(kc)
    dt = jax.tree_util.tree_leaves(cp)[0].dtype
    H, O = model.cell.hidden_size, model.output_size
    W = jax.random.normal(kr, (O, H), jnp.float32).astype(dt) / math.sqrt(H)
    return {"cell": cp, "readout": {"W": W, "b": jnp.zeros((O,), dt)}}


def _read(model, params, hs):
    """Readout of the states of one sequence: (out,) for "last", (L, out) for "all"."""
    r = params["readout"]
    hid = model.cell.hidden(hs[-1] if model.readout == "last" else hs)
    return hid @ r["W"].T + r["b"]


def predict(model: Model, params, inputs) -> jax.Array:
    """Readout outputs for a batch of sequences.

    Args:
      model: a :class:`Model`; params: its params.
      inputs: (B, L, input_size).

    Returns:
      (B, output_size) for ``readout="last"``, (B, L, output_size) for ``"all"`` (logits for
      ``loss="xent"``). Example: ``y = rd.predict(model, params, inputs)``.
    """
    cell, cp = model.cell, params["cell"]
    # Time-major scan with the batch inside each step (one (B, n)·(n, n) product per step),
    # carrying only the state when the readout needs only the last one: 10 % faster training
    # than vmapping a per-sequence scan over the batch (n = 128, T = 200, batch 32, 2-core CPU).
    h1 = cell.initial_state(cp)
    xs = jnp.swapaxes(inputs, 0, 1).astype(h1.dtype)  # (L, B, m)
    H1 = jnp.broadcast_to(h1, (inputs.shape[0],) + h1.shape)
    step = batch_step_of(cell) or jax.vmap(cell.step, (None, 0, 0))
    if model.readout == "last":
        hT = jax.lax.scan(lambda h, x: (step(cp, h, x), None), H1, xs)[0]
        return jax.vmap(lambda h: _read(model, params, h[None]))(hT)
    hs = jax.lax.scan(lambda h, x: (step(cp, h, x),) * 2, H1, xs)[1]  # (L, B, state)
    return jax.vmap(lambda h: _read(model, params, h), in_axes=1)(hs)


def _per_example(model, outputs, targets):
    """Per-example loss ℓ: (B,) for "last", (B, L) for "all"."""
    if model.loss == "xent":
        if targets.ndim == outputs.ndim:  # one-hot (or probability) targets
            return optax.softmax_cross_entropy(outputs, targets.astype(outputs.dtype))
        return optax.softmax_cross_entropy_with_integer_labels(outputs, targets.astype(jnp.int32))
    t = targets.astype(outputs.dtype)
    if t.ndim == outputs.ndim - 1:
        t = t[..., None]
    return jnp.mean((outputs - t) ** 2, axis=-1)


def _per_step(model, targets, mask):
    """Whether a batch follows the per-step convention of :mod:`rnn_dynamics.tasks`
    (targets (B, L, k), mask (B, L)) while the model reads only the last state."""
    return model.readout == "last" and ((mask is not None and mask.ndim == 2) or targets.ndim == 3)


def _masked_mean(ell, mask):
    if mask is None:
        return jnp.mean(ell)
    w = mask.astype(ell.dtype)
    return jnp.sum(w * ell) / jnp.maximum(jnp.sum(w), jnp.finfo(ell.dtype).tiny)


def _output_loss(model, outputs, batch):
    _, targets, mask = batch
    if _per_step(model, targets, mask):  # read the answer and its weight at the last step
        targets = targets[:, -1]
        mask = None if mask is None else mask[:, -1]
    return _masked_mean(_per_example(model, outputs, targets), mask)


def _loss(model, params, batch):
    return _output_loss(model, predict(model, params, batch[0]), batch)


def _as_batch(batch):
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise TypeError(
            "batch: expected a tuple (inputs, targets, mask) or (inputs, targets), got "
            f"{type(batch).__name__}."
        )
    inputs, targets, *rest = batch
    arr = lambda a: a if isinstance(a, (jax.ShapeDtypeStruct, jax.Array)) else jnp.asarray(a)
    return arr(inputs), arr(targets), None if not rest or rest[0] is None else arr(rest[0])


def _check_batch(model: Model, batch, name="batch"):
    """Shapes of a batch against the model, in Python, before anything is traced."""
    inputs, targets, mask = _as_batch(batch)
    m = model.cell.input_size
    if inputs.ndim != 3 or inputs.shape[-1] != m:
        raise ValueError(
            f"{name}: inputs: expected shape (batch, length, {m}) (input_size of the cell), "
            f"got {tuple(inputs.shape)}."
        )
    B, L = inputs.shape[:2]
    per_step = model.readout == "all" or _per_step(model, targets, mask)
    lead = (B, L) if per_step else (B,)
    K = model.output_size
    shapes = (lead, lead + (K,))
    if not tuple(targets.shape) in shapes:
        kind = "integer labels or one-hot" if model.loss == "xent" else "values"
        raise ValueError(
            f"{name}: targets: expected {kind} of shape {lead} or {lead + (K,)} for "
            f"readout={model.readout!r} (output_size {K}), got {tuple(targets.shape)}."
        )
    if mask is not None and tuple(mask.shape) != lead:
        raise ValueError(
            f"{name}: mask: expected None or weights of shape {lead} (one per "
            f"{'example and step' if per_step else 'example'}), got {tuple(mask.shape)}."
        )
    return inputs, targets, mask


def model_loss(model: Model, params, batch) -> jax.Array:
    """The masked loss of one batch, a scalar: Σ mask·ℓ / Σ mask (mean when mask is None).

    Args:
      model: a :class:`Model`; params: its params (no seed axis).
      batch: ``(inputs (B, L, m), targets, mask)``, shapes as in the module docstring.

    Example: ``rd.model_loss(model, params, (inputs, targets, None))``; with jax.grad it gives
    the gradient; the adding problem's mean predictor scores 1/6.
    """
    _check_model(model)
    batch = _check_batch(model, batch)
    return _loss(model, params, batch)


def evaluate(model: Model, params, batch) -> jax.Array:
    """:func:`model_loss` for params with a leading seed axis (S, ...): returns (S,).

    Example: ``rd.evaluate(result.model, result.params, test_batch)``.
    """
    _check_model(model)
    batch = _check_batch(model, batch)
    return jax.jit(jax.vmap(lambda p: _loss(model, p, batch)))(params)


# --------------------------------------------------------------------------------------------
# loss terms and optimisers


class Regularizer(NamedTuple):
    """A loss term ``weight · fn(model, params, batch)``, added while ``start <= step < stop``.

    ``fn`` must be pure and differentiable in ``params``. ``stop=None`` means to the end.
    :mod:`rnn_dynamics.remedies` builds the standard ones (Pascanu et al.'s Ω, Lyapunov
    regularisation). Example::

        reg = rd.Regularizer("l2", lambda model, p, batch: _norm(p) ** 2, 1e-4)
    """

    name: str
    fn: Callable
    weight: float = 1.0
    start: int = 0
    stop: int | None = None


def make_optimizer(optimizer="sgd", learning_rate=1e-2, *, momentum=0.9, clip_norm=None,
                   clip_value=None) -> optax.GradientTransformationExtraArgs:
    """The optax chain :func:`train` uses: ``clip(clip_value)``, ``clip_by_global_norm(clip_norm)``,
    then the optimiser.

    Args:
      optimizer: ``"sgd"``, ``"momentum"`` (SGD with Nesterov momentum ``momentum``),
        ``"adam"``, ``"rmsprop"``, or any optax ``GradientTransformation`` (then
        ``learning_rate`` and ``momentum`` are ignored).
      learning_rate: a float or an optax schedule.
      clip_norm: rescale the gradient to global norm at most this (``optax.clip_by_global_norm``).
      clip_value: clip every entry to [-clip_value, clip_value] (``optax.clip``).

    Example: ``rd.make_optimizer("sgd", 0.01, clip_norm=1.0)``: with SGD, every update then
    has norm at most 0.01.
    """
    if isinstance(optimizer, str):
        check_choice("optimizer", optimizer, OPTIMIZERS)
        if not callable(learning_rate):
            check_nonnegative("learning_rate", learning_rate)
        opt = {
            "sgd": lambda: optax.sgd(learning_rate),
            "momentum": lambda: optax.sgd(learning_rate, momentum=momentum, nesterov=True),
            "adam": lambda: optax.adam(learning_rate),
            "rmsprop": lambda: optax.rmsprop(learning_rate),
        }[optimizer]()
    elif isinstance(optimizer, (optax.GradientTransformation, optax.GradientTransformationExtraArgs)):
        opt = optimizer
    else:
        raise TypeError(
            f"optimizer: expected one of {', '.join(map(repr, OPTIMIZERS))} or an optax "
            f"GradientTransformation, got {type(optimizer).__name__}."
        )
    parts = []
    if clip_value is not None:
        parts.append(optax.clip(check_nonnegative("clip_value", clip_value)))
    if clip_norm is not None:
        parts.append(optax.clip_by_global_norm(check_nonnegative("clip_norm", clip_norm)))
    return optax.chain(*parts, opt)


# --------------------------------------------------------------------------------------------
# the compiled training chunk


class _Spec(NamedTuple):
    """Everything static about a training run, hashable by value, so that runs with equal
    settings (and the same task, optimiser and regulariser objects) share compiled code."""

    output_size: int
    readout: str
    loss: str
    task: Any
    batch: int
    optimizer: Any  # ("sgd", lr, momentum, clip_norm, clip_value) or an optax transformation
    regularizers: tuple
    loss_weight: float
    probe_size: int
    probe_jacobians: int
    probe_lyapunov: bool

    def model(self, cell):
        return Model(cell, self.output_size, self.readout, self.loss)

    def make_optimizer(self):
        opt = self.optimizer
        if isinstance(opt, tuple) and len(opt) == 5 and isinstance(opt[0], str):
            name, lr, mom, cn, cv = opt
            opt = make_optimizer(name, lr, momentum=mom, clip_norm=cn, clip_value=cv)
        return opt if isinstance(opt, optax.GradientTransformationExtraArgs) else optax.with_extra_args_support(opt)


_norm = getattr(getattr(optax, "tree", None), "norm", None) or optax.global_norm


def _tree_where(c, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(c, x, y), a, b)


def _all_finite(tree):
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _draw(spec, data, key):
    if data is None:
        return _as_batch(spec.task(key, spec.batch))
    n = data[0].shape[0]
    if spec.batch >= n:
        return data
    idx = jax.random.choice(key, n, (spec.batch,), replace=False)
    return jax.tree_util.tree_map(lambda a: a[idx], data)


def _total_loss(spec, model, params, batch, step):
    base = _loss(model, params, batch)
    total = spec.loss_weight * base
    for reg in spec.regularizers:
        active = (step >= reg.start) & ((step < reg.stop) if reg.stop is not None else True)
        term = jax.lax.cond(active, lambda p: reg.fn(model, p, batch).astype(base.dtype),
                            lambda p: jnp.zeros((), base.dtype), params)
        total = total + reg.weight * term
    return total, base


def _train_step(spec, model, carry, t, seed_key, data):
    params, opt_state, skipped = carry
    batch = _draw(spec, data, jax.random.fold_in(seed_key, t))
    (total, base), grads = jax.value_and_grad(
        lambda p: _total_loss(spec, model, p, batch, t), has_aux=True)(params)
    extra = dict(
        outputs_fn=lambda p: predict(model, p, batch[0]),
        output_loss=lambda z: _output_loss(model, z, batch),
        value_fn=lambda p: _total_loss(spec, model, p, batch, t)[0],
        value=total,
    )
    updates, new_opt = spec.make_optimizer().update(grads, opt_state, params, **extra)
    new_params = optax.apply_updates(params, updates)
    # new_params = params + updates with params finite: finite new params imply finite updates
    ok = jnp.isfinite(total) & _all_finite(grads) & _all_finite(new_params)
    params = _tree_where(ok, new_params, params)
    opt_state = _tree_where(ok, new_opt, opt_state)
    unorm = jnp.where(ok, _norm(updates), 0.0)
    out = (base, _norm(grads), unorm)
    return (params, opt_state, skipped + (~ok).astype(skipped.dtype)), out


def _chunk(cell, params, opt_state, skipped, seed_keys, data, step0, *, spec, length):
    """``length`` training steps for every seed (vmapped), one ``lax.scan``."""
    model = spec.model(cell)

    def one(params, opt_state, skipped, seed_key):
        body = lambda c, i: _train_step(spec, model, c, step0 + i, seed_key, data)
        carry, (loss, gnorm, unorm) = jax.lax.scan(
            body, (params, opt_state, skipped), jnp.arange(length, dtype=jnp.int32))
        nanmean = lambda v: jnp.nanmean(jnp.where(jnp.isfinite(v), v, jnp.nan))
        stats = dict(loss=nanmean(loss), grad_norm=nanmean(gnorm), grad_norm_max=jnp.max(gnorm),
                     update_norm_max=jnp.max(unorm))
        return carry, stats

    return _vmap_seeds(one, params, opt_state, skipped, seed_keys)


def _vmap_seeds(f, *args):
    """``jax.vmap(f)(*args)`` over the seed axis; one seed runs unbatched (XLA:CPU picks slower
    kernels for dots with a batch dimension of 1) and gets its axis back."""
    if args[-1].shape[0] == 1:
        out = f(*jax.tree_util.tree_map(lambda a: a[0], args))
        return jax.tree_util.tree_map(lambda a: a[None], out)
    return jax.vmap(f)(*args)




# Called through ``.plain`` (the cell split, XLA's default CPU dots), also for n > 64: the
# training step's (batch × n)·(n × n) products are not the batched (n × n) tangent products
# that ``cell_jit`` compiles without YNNPACK dots for; at n = 128, T = 200, batch 32, 50 SGD
# steps took 0.97 s with them and 1.02 s without (medians of 6, interleaved, loaded 2-core CPU).
_chunk_jit = cell_jit(_chunk, static_argnames=("spec", "length"))


_SEEDS = "seeds"  # the mesh axis the seeds are split over


def _chunk_sharded(cell, params, opt_state, skipped, seed_keys, data, step0, *, spec, length,
                   mesh):
    """:func:`_chunk` with the seed axis split over ``mesh``'s devices (axis "seeds"; every
    seed array padded to a multiple of the device count and laid out on it). Each device runs
    its seeds alone: no communication."""
    local = lambda p, o, s, k, d, t: _chunk(cell, p, o, s, k, d, t, spec=spec, length=length)
    seeds = P(_SEEDS)
    f = jax.shard_map(local, mesh=mesh, in_specs=(seeds, seeds, seeds, seeds, P(), P()),
                      out_specs=seeds, check_vma=False)
    return f(params, opt_state, skipped, seed_keys, data, step0)


_chunk_sharded_jit = cell_jit(_chunk_sharded, static_argnames=("spec", "length", "mesh"))


def _train_mesh(devices, cell, params, opt_state, skipped, seed_keys, data, spec, length):
    """The mesh to split the seeds over, or None (see :mod:`rnn_dynamics._devices`)."""
    def jaxpr():
        static, hyper = split_cell(cell)
        return _chunk_jit.plain.trace(static, hyper, params, opt_state, skipped, seed_keys, data,
                                      jnp.int32(0), spec=spec, length=length).jaxpr

    chosen = seed_devices(devices, seed_keys.shape[0], jaxpr)
    return None if chosen is None else Mesh(np.asarray(chosen), (_SEEDS,))


def _init(cell, seed_keys, params, *, spec):
    """Params (unless given) and optimiser state for every seed."""
    if params is None:
        # one seed after another: batched LAPACK calls in a flax init can deadlock XLA:CPU
        params = jax.lax.map(lambda k: init_model(spec.model(cell), k), seed_keys)
    return params, jax.vmap(spec.make_optimizer().init)(params)


_init_jit = cell_jit(_init, static_argnames=("spec",))


def _lyapunov_fn():
    return getattr(_lyapunov, "lyapunov_spectrum", None)


def _probe(cell, params, seed_keys, data, *, spec):
    """Probe metrics per seed: loss, mean log10 ‖∂h_T/∂h_1‖₂ and λ_max over probe sequences."""
    model = spec.model(cell)
    lyap = _lyapunov_fn() if spec.probe_lyapunov else None

    def one(params, seed_key):
        k = jax.random.fold_in(seed_key, _PROBE_FOLD)
        if data is None:
            batch = _as_batch(spec.task(k, spec.probe_size))
        else:
            batch = jax.tree_util.tree_map(lambda a: a[: spec.probe_size], data)
        loss = _loss(model, params, batch)
        cp = params["cell"]
        xs = batch[0][: spec.probe_jacobians]
        h1 = cell.initial_state(cp)
        out = dict(probe_loss=loss)
        if spec.probe_jacobians:
            lj = jax.vmap(lambda x: jacobian_norms(cell, cp, h1, x.astype(h1.dtype), log10=True)[-1])(xs)
            out["log10_jacobian_norm"] = jnp.mean(lj)
            if lyap is not None:
                lm = jax.vmap(lambda x: lyap(cell, cp, h1, x.astype(h1.dtype), k=1).exponents[0])(xs)
                out["lambda_max"] = jnp.mean(lm)
        return out

    return jax.vmap(one)(params, seed_keys)


_probe_jit = cell_jit(_probe, static_argnames=("spec",))


# --------------------------------------------------------------------------------------------
# results, checkpoints


class TrainResult(NamedTuple):
    """What :func:`train` returns. Arrays have a leading seed axis S.

    Fields:
      params: the trained params, every leaf (S, ...).
      opt_state: the optimiser state, (S, ...).
      logs: dict of numpy arrays; ``"step"`` (K,) holds the steps logged (0 first, then every
        ``log_every``); ``"probe_loss"``, ``"log10_jacobian_norm"`` (mean over probe sequences of
        log10 ‖∂h_T/∂h_1‖₂), ``"lambda_max"`` (largest Lyapunov exponent, nats per step; NaN when
        :func:`rnn_dynamics.lyapunov_spectrum` is unavailable) are (S, K) at those steps;
        ``"loss"``, ``"grad_norm"`` (means over the steps since the previous log; NaN at step 0),
        ``"grad_norm_max"``, ``"update_norm_max"`` are (S, K); ``"skipped"`` (S, K) counts
        steps skipped so far for a non-finite loss, gradient or update.
      skipped: (S,) steps skipped in all.
      steps: steps done.
      model: the :class:`Model`.
      seed_keys: (S,) the seeds' PRNG keys (pass one back as ``key=`` to retrain that seed).
      seconds: wall time of this call.
    """

    params: Any
    opt_state: Any
    logs: dict
    skipped: np.ndarray
    steps: int
    model: Model
    seed_keys: Any
    seconds: float

    def records(self) -> list:
        """The logs as one JSON-ready dict per (seed, logged step), for JSON lines."""
        out = []
        S = self.skipped.shape[0]
        for s in range(S):
            for j, step in enumerate(self.logs["step"]):
                rec = {"seed": s, "step": int(step)}
                for k, v in self.logs.items():
                    if k != "step":
                        x = float(v[s, j])
                        rec[k] = x if math.isfinite(x) else None
                out.append(rec)
        return out


_CKPT = "checkpoint.npz"


def _save_checkpoint(directory, fingerprint, step, params, opt_state, skipped, seed_keys, logs):
    """Write the run's state atomically (temp file in the same folder, then ``os.replace``)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {f"p{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(params))}
    arrays.update({f"o{i}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(opt_state))})
    arrays["skipped"] = np.asarray(skipped)
    arrays["seed_keys"] = np.asarray(jax.random.key_data(seed_keys))
    arrays["step"] = np.asarray(step)
    arrays["fingerprint"] = np.asarray(fingerprint)
    arrays["logs"] = np.asarray(json.dumps({k: np.asarray(v).tolist() for k, v in logs.items()}))
    fd, tmp = tempfile.mkstemp(prefix=_CKPT, suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, d / _CKPT)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_checkpoint(directory, fingerprint, params, opt_state):
    path = Path(directory) / _CKPT
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        if str(z["fingerprint"]) != fingerprint:
            raise ValueError(
                f"checkpoint_dir: {path} holds a run with another configuration "
                f"({z['fingerprint']}); this run is ({fingerprint}). Use another "
                f"checkpoint_dir or delete the file to start afresh."
            )
        pl, pt = jax.tree_util.tree_flatten(params)
        ol, ot = jax.tree_util.tree_flatten(opt_state)
        params = jax.tree_util.tree_unflatten(pt, [jnp.asarray(z[f"p{i}"]) for i in range(len(pl))])
        opt_state = jax.tree_util.tree_unflatten(ot, [jnp.asarray(z[f"o{i}"]) for i in range(len(ol))])
        logs = {k: [np.asarray(x) for x in v] if k != "step" else list(v)
                for k, v in json.loads(str(z["logs"])).items()}
        return int(z["step"]), params, opt_state, jnp.asarray(z["skipped"]), logs


def _describe(x) -> str:
    """A stable description (no memory addresses) of a task or optimiser, for fingerprints."""
    if isinstance(x, str):
        return x
    if isinstance(x, functools.partial):
        kw = ", ".join(f"{k}={v!r}" for k, v in sorted(x.keywords.items()))
        return f"{_describe(x.func)}({', '.join(map(repr, x.args))}; {kw})"
    return f"{getattr(x, '__module__', '')}.{getattr(x, '__qualname__', None) or type(x).__name__}"


def _progress_bar(total, initial, enabled):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False)


# --------------------------------------------------------------------------------------------
# train


def _seed_keys(key, seeds):
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        raise TypeError(
            f"key: expected a typed PRNG key (jax.random.key(0)) or an array of S keys, got "
            f"dtype {key.dtype}. Wrap a raw uint32 key with jax.random.wrap_key_data."
        )
    if key.ndim == 0:
        S = 1 if seeds is None else check_positive_int("seeds", seeds)
        return jax.random.split(key, S)
    if key.ndim == 1:
        if seeds is not None and check_positive_int("seeds", seeds) != key.shape[0]:
            raise ValueError(f"seeds: got {seeds} but key holds {key.shape[0]} keys; pass one of them.")
        return key
    raise ValueError(f"key: expected one key or a 1-D array of keys, got shape {key.shape}.")


def train(
    model,
    task,
    *,
    steps: int,
    key,
    batch: int = 32,
    optimizer="sgd",
    learning_rate=1e-2,
    momentum: float = 0.9,
    clip_norm: float | None = None,
    clip_value: float | None = None,
    seeds: int | None = None,
    params=None,
    output_size: int | None = None,
    readout: str | None = None,
    loss: str | None = None,
    loss_weight: float = 1.0,
    regularizers: Sequence[Regularizer] = (),
    log_every: int = 100,
    probe_size: int = 32,
    probe_jacobians: int = 4,
    probe_lyapunov: bool = True,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    progress: bool = True,
    callback: Callable | None = None,
    devices=None,
) -> TrainResult:
    """Train a cell with a linear readout on a task, every seed at once, with optax.

    Args:
      model: an :class:`rnn_dynamics.Cell` (then ``output_size``, ``readout``, ``loss`` build
        the :class:`Model`) or a :class:`Model`.
      task: ``task(key, batch_size) -> (inputs (B, L, m), targets, mask)`` (e.g.
        ``functools.partial(rd.tasks.adding, length=100)``), or a fixed data set, a tuple of
        arrays with N examples from which minibatches are drawn without replacement.
      steps: optimiser steps in all (a resumed run continues up to ``steps``).
      key: a PRNG key; ``seeds`` seed keys are ``jax.random.split(key, seeds)``. Or an array of S
        keys, one per seed (``result.seed_keys[i:i+1]`` retrains seed i alone).
      batch: minibatch size.
      optimizer, learning_rate, momentum, clip_norm, clip_value: see :func:`make_optimizer`;
        any optax ``GradientTransformation`` works, including
        :func:`rnn_dynamics.remedies.hessian_free` (its update receives ``outputs_fn``,
        ``output_loss``, ``value_fn`` and ``value`` as extra arguments).
      seeds: networks trained together in one vmapped computation (default 1), split over
        ``devices``.
      params: initial params with a leading seed axis (default: :func:`init_model` per seed).
      output_size: readout outputs; default from the targets (integer labels: pass it).
      readout, loss: see :class:`Model`; defaults: ``"all"`` for per-step batches (those of
        :mod:`rnn_dynamics.tasks`; with the adding problem's mask it scores the last step
        only), else ``"last"``; ``"xent"`` when ``task.loss == "cross_entropy"``, else ``"mse"``.
      loss_weight: weight of the task loss (0 with a regulariser: pre-training on it alone).
      regularizers: :class:`Regularizer` terms added to the loss.
      log_every: steps per compiled call and between logs; the probe batch
        (``task(fold_in(seed_key, 2**31-1), probe_size)``) is evaluated at step 0 and after
        every call.
      probe_jacobians: probe sequences for log10 ‖∂h_T/∂h_1‖₂ and λ_max (0: skip both).
      probe_lyapunov: log λ_max (needs :func:`rnn_dynamics.lyapunov_spectrum`).
      checkpoint_dir: folder for ``checkpoint.npz`` (params, optimiser state, keys, step,
        logs), written atomically every ``checkpoint_every`` steps (a multiple of
        ``log_every``; default ``log_every``), at the end and on Ctrl-C (KeyboardInterrupt,
        re-raised). A call with the same configuration resumes from it, bit-identically.
      progress: a tqdm bar (steps/s, loss, ETA) when stderr is a terminal.
      callback: ``callback(step, logs)`` after every log (logs: dict of lists).
      devices: the devices the seeds are split over (each runs its own seeds, no
        communication; a seed count that does not divide them is padded and the padding
        dropped). Default: every device of this process, so a CPU whose cores are exposed as
        devices (``jax.config.update("jax_num_cpu_devices", os.cpu_count())`` before the first
        computation) trains seeds on all its cores. ``[jax.devices()[0]]`` keeps one device. On
        CPU, a training step that holds a LAPACK call (Lyapunov regularisers) runs on one
        device: XLA:CPU can hang when two CPU devices run batched LAPACK calls at once. The
        probes run on one device; the result's arrays live on ``jax.devices()[0]``.

    Returns:
      :class:`TrainResult`. Steps with a non-finite loss, gradient or update are skipped
      (params and optimiser state unchanged) and counted; a ``NumericalWarning`` reports them.

    The batch of step t for a seed is ``task(jax.random.fold_in(seed_key, t), batch)``.

    Example::

        task = functools.partial(rd.tasks.adding, length=50)
        res = rd.train(rd.cells.irnn(2, 100), task, steps=2000, key=jax.random.key(0),
                       optimizer="sgd", learning_rate=0.01, clip_norm=1.0, seeds=3)
        res.logs["probe_loss"][:, -1]      # (3,) final probe MSE per seed (baseline 1/6)
    """
    t_start = time.perf_counter()
    steps = check_positive_int("steps", steps)
    batch = check_positive_int("batch", batch)
    log_every = check_positive_int("log_every", log_every)
    probe_size = check_positive_int("probe_size", probe_size)
    if isinstance(probe_jacobians, bool) or not isinstance(probe_jacobians, int) or probe_jacobians < 0:
        raise TypeError(f"probe_jacobians: expected an int >= 0, got {probe_jacobians!r}.")
    loss_weight = check_nonnegative("loss_weight", loss_weight)
    if checkpoint_every is None:
        checkpoint_every = log_every
    checkpoint_every = check_positive_int("checkpoint_every", checkpoint_every)
    if checkpoint_every % log_every:
        raise ValueError(
            f"checkpoint_every: expected a multiple of log_every={log_every}, got "
            f"{checkpoint_every} (checkpoints are taken between compiled chunks of log_every steps)."
        )
    regularizers = tuple(regularizers)
    for i, r in enumerate(regularizers):
        if not isinstance(r, Regularizer):
            raise TypeError(f"regularizers[{i}]: expected an rd.Regularizer, got {type(r).__name__}.")
    seed_keys = _seed_keys(key, seeds)
    S = seed_keys.shape[0]

    # the task: a function or data
    if callable(task):
        try:  # shapes only: nothing is compiled or run
            sample = jax.eval_shape(lambda k: tuple(_as_batch(task(k, 2))), jax.random.key(0))
        except TypeError as e:
            raise TypeError(f"task: expected task(key, batch_size) -> (inputs, targets, mask); {e}") from None
        data = None
    else:
        data = _as_batch(task)
        sample = data
        if data[1].shape[0] != data[0].shape[0] or (data[2] is not None and data[2].shape[0] != data[0].shape[0]):
            raise ValueError("task: inputs, targets and mask must have the same number of examples.")
    if isinstance(model, Cell):
        t, mk = sample[1], sample[2]
        if readout is None:
            readout = "all" if (mk is not None and mk.ndim == 2) or t.ndim == 3 else "last"
        if loss is None:
            named = getattr(task, "loss", getattr(getattr(task, "func", None), "loss", None))
            loss = "xent" if named in ("cross_entropy", "xent") else "mse"
        if output_size is None:
            lead = 1 if readout == "last" and not ((mk is not None and mk.ndim == 2) or t.ndim == 3) else 2
            if t.ndim > lead:
                output_size = int(t.shape[-1])
            elif loss == "xent":
                raise ValueError("output_size: pass the number of classes (integer labels were given).")
            else:
                output_size = 1
        model = Model(model, output_size, readout, loss)
    model = _check_model(model)
    _check_batch(model, sample, "task")
    opt = make_optimizer(optimizer, learning_rate, momentum=momentum, clip_norm=clip_norm,
                         clip_value=clip_value)  # validates; the compiled code rebuilds it
    recipe = ((optimizer, learning_rate, momentum, clip_norm, clip_value)
              if isinstance(optimizer, str) else opt)
    spec = _Spec(model.output_size, model.readout, model.loss, task if data is None else None,
                 batch, recipe, regularizers, loss_weight, probe_size,
                 min(probe_jacobians, probe_size), bool(probe_lyapunov))
    cell = model.cell
    if params is not None:
        lead = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(params)}
        if lead != {S}:
            raise ValueError(f"params: expected every leaf to have a leading seed axis of {S}, got {lead}.")
    params, opt_state = _init_jit(cell, seed_keys, params, spec=spec)
    skipped = np.zeros((S,), np.int32)
    fingerprint = json.dumps(dict(
        cell=cell.name, sizes=[cell.input_size, cell.state_size, cell.hidden_size],
        model=list(model[1:]), batch=batch, optimizer=_describe(optimizer),
        learning_rate=learning_rate if not callable(learning_rate) else _describe(learning_rate),
        momentum=momentum, clip_norm=clip_norm, clip_value=clip_value, seeds=S,
        loss_weight=loss_weight, log_every=log_every,
        regularizers=[[r.name, r.weight, r.start, r.stop] for r in regularizers],
        seed_keys=np.asarray(jax.random.key_data(seed_keys)).tolist(),
        task=_describe(task) if data is None else "data",
    ), sort_keys=True, default=str)

    step, logs = 0, None
    if checkpoint_dir is not None:
        loaded = _load_checkpoint(checkpoint_dir, fingerprint, params, opt_state)
        if loaded is not None:
            step, params, opt_state, skipped, logs = loaded
    if logs is None:
        logs = {}

    one_device = jax.devices()[0]
    mesh = _train_mesh(devices, cell, params, opt_state, skipped, seed_keys, data, spec,
                       min(log_every, steps))

    if mesh is not None:  # the carry and keys stay padded and laid out over the mesh
        pad = (-S) % mesh.size
        layout = NamedSharding(mesh, P(_SEEDS))
        grow = lambda a: jax.device_put(
            jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a, layout)
        shrink = lambda tree: jax.tree_util.tree_map(lambda a: a[:S], tree) if pad else tree
        carry = jax.tree_util.tree_map(grow, (params, opt_state, skipped))
        keys_laid_out = grow(seed_keys)

    def record(step, stats):
        # on one device: the probes hold LAPACK calls (see ``devices``)
        local = params if mesh is None else jax.device_put(params, one_device)
        probe = _probe_jit(cell, local, seed_keys, data, spec=spec)
        nan = np.full((S,), np.nan)
        row = {"loss": nan, "grad_norm": nan, "grad_norm_max": nan, "update_norm_max": nan}
        row.update({k: np.asarray(v, float) for k, v in (stats or {}).items()})
        row.update({k: np.asarray(v, float) for k, v in probe.items()})
        row.setdefault("log10_jacobian_norm", nan)
        row.setdefault("lambda_max", nan)
        row["skipped"] = np.asarray(skipped, float)
        logs.setdefault("step", []).append(step)
        for k, v in row.items():
            logs.setdefault(k, []).append(v)
        if callback is not None:
            callback(step, logs)

    def save(step):
        if checkpoint_dir is not None:
            _save_checkpoint(checkpoint_dir, fingerprint, step, params, opt_state, skipped,
                             seed_keys, logs)

    bar = _progress_bar(steps, min(step, steps), progress)
    try:
        if not logs:
            record(0, None)
        while step < steps:
            n = min(log_every, steps - step)
            if mesh is None:
                (params, opt_state, skipped), stats = _chunk_jit.plain(
                    *split_cell(cell), params, opt_state, skipped, seed_keys, data,
                    jnp.int32(step), spec=spec, length=n)
            else:
                carry, stats = _chunk_sharded_jit.plain(
                    *split_cell(cell), *carry, keys_laid_out, data, jnp.int32(step), spec=spec,
                    length=n, mesh=mesh)
                (params, opt_state, skipped), stats = shrink((carry, stats))
            step += n
            record(step, stats)
            if step % checkpoint_every == 0 or step == steps:
                save(step)
            if bar is not None:
                bar.update(n)
                bar.set_postfix(loss=f"{float(np.nanmean(logs['loss'][-1])):.4g}")
    except KeyboardInterrupt:
        done = logs["step"][-1] if logs.get("step") else 0
        if done == step:  # params, opt_state and logs all belong to `step`
            save(step)
        raise
    finally:
        if bar is not None:
            bar.close()

    out = {"step": np.asarray(logs["step"], int)}
    out.update({k: np.stack([np.asarray(x, float) for x in v], axis=1) for k, v in logs.items()
                if k != "step"})
    skipped_np = np.asarray(skipped)
    if mesh is not None:
        params, opt_state = jax.device_put((params, opt_state), one_device)
    if skipped_np.any():
        warnings.warn(
            f"train: skipped {skipped_np.tolist()} of {step} steps (per seed) whose loss, gradient "
            f"or update was NaN or inf; those steps left params and optimiser state unchanged. "
            f"Lower learning_rate, set clip_norm (e.g. 1.0), or check the task's inputs.",
            NumericalWarning, stacklevel=2)
    return TrainResult(params, opt_state, out, skipped_np, step, model, seed_keys,
                       time.perf_counter() - t_start)
