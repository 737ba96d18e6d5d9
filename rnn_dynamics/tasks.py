"""Long-dependency problems: pure, keyed batch generators with a chance-level baseline each.

One convention for every generator ``gen(key, batch, length, ...)``:

* returns ``Batch(inputs, targets, mask)``, a NamedTuple (so a pytree, and unpackable as a
  tuple ``inputs, targets, mask = ...``);
* ``inputs``: (batch, T, m) floats, time on axis 1;
* ``targets``: (batch, T, k) floats, always per step: regression values, or one-hot class
  vectors for classification problems;
* ``mask``: (batch, T) floats, 1 where the loss counts and 0 elsewhere. A problem answered at the
  end has a single 1 at t = T-1 (targets are zero elsewhere).

The loss is the masked mean over the positions where ``mask`` is 1: :func:`mse` for
regression problems, :func:`cross_entropy` for classification problems (``gen.loss`` names which).
``gen.baseline(...)`` is the loss of the best predictor that has no memory of the inputs
(the chance level a network must beat), in closed form.

Same key, same batch. Generators are plain ``jax.numpy``/``jax.random`` code: jit them with
``batch`` and ``length`` static (``jax.jit(rd.tasks.adding, static_argnums=(1, 2))``) and vmap
them over keys.

Reversal, the lectures' trick (Sutskever, Vinyals & Le 2014): ``reverse=True`` feeds the source
in reverse order. For problems answered at the end it reverses the whole input sequence; for the
sequence-to-sequence problems (:func:`copy`, :func:`delayed_recall`) it reverses only the symbols
to be recalled, so the problem stays causal and the first symbol to recall is the last one seen:
its lag shrinks from gap + K to gap + 1 (K symbols). :func:`reverse` does the same to any batch.

:func:`load_mnist` reads MNIST from a path the user gives (never downloads) for
:func:`sequential_digits`. :func:`mackey_glass` integrates the Mackey–Glass delay equation.

Example::

    x, y, mask = rd.tasks.adding(jax.random.key(0), batch=32, length=200)
    x.shape, y.shape, mask.shape          # (32, 200, 2), (32, 200, 1), (32, 200)
    rd.tasks.adding.baseline(200)         # 0.1667 = 1/6, the MSE of always answering 1
"""
from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_nonnegative, check_positive_int, float_dtype
from ._datasets import load_mnist, read_idx  # file reading lives outside the pure core

__all__ = [
    "Batch",
    "adding",
    "copy",
    "delayed_recall",
    "temporal_order",
    "delayed_xor",
    "flip_flop",
    "sequential_digits",
    "load_mnist",
    "read_idx",
    "mackey_glass",
    "reverse",
    "mse",
    "cross_entropy",
]


class Batch(NamedTuple):
    """``inputs`` (batch, T, m), ``targets`` (batch, T, k), ``mask`` (batch, T); see the module."""

    inputs: jax.Array
    targets: jax.Array
    mask: jax.Array


# ------------------------------------------------------------------------------- losses


def _masked_mean(per_step, mask):
    mask = jnp.asarray(mask, per_step.dtype)
    return jnp.sum(per_step * mask) / jnp.maximum(jnp.sum(mask), 1)


def mse(predictions, targets, mask):
    """Masked mean squared error: Σ mask·‖pred − target‖² / (k·Σ mask).

    Args:
      predictions, targets: (batch, T, k). mask: (batch, T).

    Returns: a scalar. Example: ``rd.tasks.mse(jnp.ones_like(y), y, mask)`` on an adding batch
    is about 1/6 (``rd.tasks.adding.baseline``).
    """
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    _same_shape("predictions", predictions, targets)
    return _masked_mean(jnp.mean((predictions - targets) ** 2, axis=-1), mask)


def cross_entropy(logits, targets, mask):
    """Masked mean cross-entropy (nats) of ``softmax(logits)`` against one-hot ``targets``.

    Args:
      logits, targets: (batch, T, k). mask: (batch, T).

    Returns: a scalar. Example: uniform logits on a temporal-order batch give ln 4 = 1.386.
    """
    logits, targets = jnp.asarray(logits), jnp.asarray(targets)
    _same_shape("logits", logits, targets)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return _masked_mean(-jnp.sum(targets * logp, axis=-1), mask)


def _same_shape(name, a, b):
    if a.shape != b.shape:
        raise ValueError(f"{name}: expected the shape of targets {tuple(b.shape)}, got {tuple(a.shape)}.")


# ------------------------------------------------------------------------------- shared code


def _check(batch, length, min_length=1):
    batch = check_positive_int("batch", batch)
    length = check_positive_int("length", length)
    if length < min_length:
        raise ValueError(f"length: expected at least {min_length} steps here, got {length}.")
    return batch, length


def _at_end(batch, length, dtype):
    return jnp.zeros((batch, length), dtype).at[:, -1].set(1)


def _end_targets(values, length):
    """(batch, k) answers placed at the last step of a (batch, T, k) array of zeros."""
    b, k = values.shape
    return jnp.zeros((b, length, k), values.dtype).at[:, -1].set(values)


def _two_markers(key, batch, length):
    """Positions (batch,) of a marker in the first half and one in the second half."""
    k1, k2 = jax.random.split(key)
    half = length // 2
    p1 = jax.random.randint(k1, (batch,), 0, half)
    p2 = jax.random.randint(k2, (batch,), half, length)
    return p1, p2


def reverse(data: Batch, start: int = 0, stop: int | None = None) -> Batch:
    """The same batch with ``inputs[:, start:stop]`` reversed in time; targets and mask unchanged.

    Args:
      data: a :class:`Batch` (or an ``(inputs, targets, mask)`` tuple), inputs (batch, T, m).
      start, stop: the time slice to reverse (default: the whole sequence).

    Returns: a :class:`Batch`. For problems answered at the end reverse everything; for a
    sequence-to-sequence problem reverse only the source (``stop`` = number of source steps), as
    the generators' ``reverse=True`` does. Example::

        rd.tasks.reverse(rd.tasks.adding(key, 8, 50)).inputs[:, ::-1]   # the original inputs
    """
    inputs, targets, mask = data
    inputs = jnp.asarray(inputs)
    if inputs.ndim != 3:
        raise ValueError(f"data.inputs: expected shape (batch, T, m), got {tuple(inputs.shape)}.")
    T = inputs.shape[1]
    start, stop, _ = slice(start, stop).indices(T)
    seg = jnp.flip(inputs[:, start:stop], axis=1)
    return Batch(inputs.at[:, start:stop].set(seg), targets, mask)


def _finish(data: Batch, reverse_flag, stop=None) -> Batch:
    """Reverse when ``reverse_flag`` (data, not structure: one compiled generator for both)."""
    flipped = reverse(data, 0, stop).inputs
    return data._replace(inputs=jnp.where(reverse_flag, flipped, data.inputs))


def _attach(gen, loss, baseline):
    gen.loss = loss
    gen.baseline = baseline
    return gen


# ------------------------------------------------------------------------------- generators


def adding(key, batch: int, length: int, *, reverse: bool = False) -> Batch:
    """The adding problem (Hochreiter & Schmidhuber 1997; the variant of Le, Jaitly & Hinton 2015).

    Channel 0 holds values drawn from U[0, 1]; channel 1 marks two of them with a 1, one at a
    uniformly random step in the first half and one in the second half. The target, asked at the
    last step, is the sum of the two marked values.

    Args:
      key: a PRNG key. batch: number of sequences. length: T, steps per sequence (≥ 2).
      reverse: feed the inputs in reverse order (the answer is unchanged).

    Returns:
      ``Batch``: inputs (batch, T, 2), targets (batch, T, 1) (the sum at t = T-1, zero
      elsewhere), mask (batch, T) (one at t = T-1). Loss: :func:`mse`.
      ``adding.baseline(length)`` = 1/6: always answering the mean, 1, has MSE Var(u₁ + u₂) = 2/12.

    Example: ``x, y, m = rd.tasks.adding(jax.random.key(0), 32, 200)``.
    """
    batch, length = _check(batch, length, 2)
    return _adding(key, batch, length, bool(reverse), float_dtype())


@partial(jax.jit, static_argnums=(1, 2, 4))
def _adding(key, batch, length, reverse, dt):
    kv, km = jax.random.split(key)
    values = jax.random.uniform(kv, (batch, length), dt)
    p1, p2 = _two_markers(km, batch, length)
    rows = jnp.arange(batch)
    marks = jnp.zeros((batch, length), dt).at[rows, p1].set(1).at[rows, p2].set(1)
    total = values[rows, p1] + values[rows, p2]
    data = Batch(jnp.stack([values, marks], -1), _end_targets(total[:, None], length),
                 _at_end(batch, length, dt))
    return _finish(data, reverse)


def _adding_baseline(length=None):
    """MSE of always answering 1 (the mean of u₁ + u₂): Var(u₁ + u₂) = 1/6, for every length."""
    return 1.0 / 6.0


_attach(adding, "mse", _adding_baseline)


def _recall(key, batch, symbols, categories, gap, reverse_flag, dtype):
    """Shared layout of copy and delayed_recall (Arjovsky, Shah & Bengio 2016's copy problem).

    Steps 0..K-1: the K symbols (classes 1..C); then blanks (class 0); the delimiter (channel
    C+1) at step K+gap-1; then K more steps during which the symbols must be recalled.
    """
    K, C = symbols, categories
    L = 2 * K + gap
    seq = jax.random.randint(key, (batch, K), 1, C + 1)
    src = jnp.where(reverse_flag, jnp.flip(seq, axis=1), seq)
    blank = jnp.zeros((batch, L), jnp.int32)
    x_ids = blank.at[:, :K].set(src).at[:, K + gap - 1].set(C + 1)
    y_ids = blank.at[:, K + gap:].set(seq)
    inputs = jax.nn.one_hot(x_ids, C + 2, dtype=dtype)
    targets = jax.nn.one_hot(y_ids, C + 1, dtype=dtype)
    return inputs, targets


def copy(key, batch: int, length: int, *, reverse: bool = False) -> Batch:
    """The copy problem of Arjovsky, Shah & Bengio (2016): 10 symbols from 8 categories, a blank
    gap of T steps, then recall.

    ``length`` is the paper's T, the gap: each sequence has T + 20 steps. Steps 0..9 hold the
    symbols (classes 1..8), then T-1 blanks (class 0), the delimiter (class 9) at step T + 9,
    then 10 blanks during which the 10 symbols must be output in order. The target is blank
    (class 0) at every earlier step.

    Args:
      key: a PRNG key. batch: number of sequences. length: the gap T (≥ 1).
      reverse: present the 10 symbols in reverse order (the recall order is unchanged).

    Returns:
      ``Batch``: inputs (batch, T+20, 10) one-hot, targets (batch, T+20, 9) one-hot,
      mask (batch, T+20) all ones: as in the paper the loss averages over every step.
      Loss: :func:`cross_entropy`. ``copy.baseline(T)`` = 10 ln 8 / (T + 20): blank for
      T + 10 steps, then a uniform guess among the 8 categories.

    Example: ``rd.tasks.copy(key, 16, 100).inputs.shape`` is (16, 120, 10).
    """
    batch, gap = _check(batch, length)
    return _copy(key, batch, gap, bool(reverse), float_dtype())


@partial(jax.jit, static_argnums=(1, 2, 4))
def _copy(key, batch, gap, reverse, dt):
    inputs, targets = _recall(key, batch, 10, 8, gap, reverse, dt)
    return Batch(inputs, targets, jnp.ones(inputs.shape[:2], dt))


def _copy_baseline(length):
    """10 ln 8 / (T + 20) for a gap T (Arjovsky et al. 2016)."""
    return 10 * math.log(8) / (check_positive_int("length", length) + 20)


_attach(copy, "cross_entropy", _copy_baseline)


def delayed_recall(key, batch: int, length: int, *, symbols: int = 5, categories: int = 8,
                   reverse: bool = False) -> Batch:
    """Delayed recall of a sequence: the sequence-to-sequence problem where reversal shortens the gap.

    The layout of :func:`copy` with K = ``symbols`` symbols from C = ``categories`` and a total
    of ``length`` steps (gap = length − 2K): K symbols, blanks, the delimiter at step
    length − K − 1, then the K symbols must be recalled in their original order. Only the K
    recall steps count (mask).

    Lags: in order, every symbol waits gap + K steps between being seen and being recalled.
    With ``reverse=True`` the source is presented last-symbol-first, so symbol i (0-based) waits
    gap + 2i + 1 steps: the first answer is only gap + 1 steps after its input (the mean lag is
    unchanged). This is the reversal trick of Sutskever, Vinyals & Le (2014).

    Args:
      key: a PRNG key. batch: number of sequences. length: total steps T (≥ 2K + 1).
      symbols: K. categories: C. reverse: present the source reversed.

    Returns:
      ``Batch``: inputs (batch, T, C+2) one-hot (blank, C symbols, delimiter), targets
      (batch, T, C+1) one-hot (blank, C symbols), mask (batch, T) one on the last K steps.
      Loss: :func:`cross_entropy`; ``delayed_recall.baseline(categories=C)`` = ln C.

    Example: ``rd.tasks.delayed_recall(key, 16, 60, symbols=5, reverse=True)``.
    """
    K = check_positive_int("symbols", symbols)
    C = check_positive_int("categories", categories)
    batch, length = _check(batch, length, 2 * K + 1)
    return _delayed_recall(key, batch, length, K, C, bool(reverse), float_dtype())


@partial(jax.jit, static_argnums=(1, 2, 3, 4, 6))
def _delayed_recall(key, batch, length, K, C, reverse, dt):
    inputs, targets = _recall(key, batch, K, C, length - 2 * K, reverse, dt)
    mask = jnp.zeros((batch, length), dt).at[:, length - K:].set(1)
    return Batch(inputs, targets, mask)


def _recall_baseline(length=None, *, categories=8):
    """ln C: a uniform guess at each recall step."""
    return math.log(check_positive_int("categories", categories))


_attach(delayed_recall, "cross_entropy", _recall_baseline)


def temporal_order(key, batch: int, length: int, *, reverse: bool = False) -> Batch:
    """Temporal order (Hochreiter & Schmidhuber 1997, experiment 6a), at any length.

    A stream of distractor symbols a, b, c, d starts with B and ends with E; two relevant
    symbols, each X or Y, sit at a random step in [0.1 T, 0.2 T] and in [0.5 T, 0.6 T] (the
    paper's [10, 20] and [50, 60] for T = 100). The class, asked at the last step, is their
    order: XX, XY, YX, YY (0..3).

    Args:
      key: a PRNG key. batch: number of sequences. length: T (≥ 10). reverse: reversed inputs.

    Returns:
      ``Batch``: inputs (batch, T, 8) one-hot over (a, b, c, d, X, Y, B, E), targets
      (batch, T, 4) one-hot at t = T-1, mask (batch, T) one at t = T-1. Loss:
      :func:`cross_entropy`; ``temporal_order.baseline()`` = ln 4 (the four classes are
      equally likely).

    Example: ``rd.tasks.temporal_order(key, 32, 100)``.
    """
    batch, length = _check(batch, length, 10)
    return _temporal_order(key, batch, length, bool(reverse), float_dtype())


@partial(jax.jit, static_argnums=(1, 2, 4))
def _temporal_order(key, batch, length, reverse, dt):
    kd, k1, k2, kc = jax.random.split(key, 4)
    ids = jax.random.randint(kd, (batch, length), 0, 4)
    ids = ids.at[:, 0].set(6).at[:, -1].set(7)
    t1 = jax.random.randint(k1, (batch,), int(0.1 * length), int(0.2 * length) + 1)
    t2 = jax.random.randint(k2, (batch,), int(0.5 * length), int(0.6 * length) + 1)
    bits = jax.random.bernoulli(kc, 0.5, (batch, 2)).astype(jnp.int32)  # 0: X, 1: Y
    rows = jnp.arange(batch)
    ids = ids.at[rows, t1].set(4 + bits[:, 0]).at[rows, t2].set(4 + bits[:, 1])
    cls = 2 * bits[:, 0] + bits[:, 1]
    data = Batch(jax.nn.one_hot(ids, 8, dtype=dt), _end_targets(jax.nn.one_hot(cls, 4, dtype=dt), length),
                 _at_end(batch, length, dt))
    return _finish(data, reverse)


_attach(temporal_order, "cross_entropy", lambda length=None: math.log(4))
temporal_order.baseline.__doc__ = "ln 4: a uniform guess among the 4 equally likely classes."


def delayed_xor(key, batch: int, length: int, *, reverse: bool = False) -> Batch:
    """Delayed XOR: the XOR version of the adding problem (Martens & Sutskever 2011).

    Channel 0 holds random bits (0 or 1); channel 1 marks two of them, one at a random step in
    the first half and one in the second half. The class, asked at the last step, is the XOR
    of the two marked bits.

    Args:
      key: a PRNG key. batch: number of sequences. length: T (≥ 2). reverse: reversed inputs.

    Returns:
      ``Batch``: inputs (batch, T, 2), targets (batch, T, 2) one-hot XOR at t = T-1, mask one
      at t = T-1. Loss: :func:`cross_entropy`; ``delayed_xor.baseline()`` = ln 2.

    Example: ``rd.tasks.delayed_xor(key, 32, 100)``.
    """
    batch, length = _check(batch, length, 2)
    return _delayed_xor(key, batch, length, bool(reverse), float_dtype())


@partial(jax.jit, static_argnums=(1, 2, 4))
def _delayed_xor(key, batch, length, reverse, dt):
    kb, km = jax.random.split(key)
    bits = jax.random.bernoulli(kb, 0.5, (batch, length)).astype(jnp.int32)
    p1, p2 = _two_markers(km, batch, length)
    rows = jnp.arange(batch)
    marks = jnp.zeros((batch, length), dt).at[rows, p1].set(1).at[rows, p2].set(1)
    xor = bits[rows, p1] ^ bits[rows, p2]
    data = Batch(jnp.stack([bits.astype(dt), marks], -1),
                 _end_targets(jax.nn.one_hot(xor, 2, dtype=dt), length), _at_end(batch, length, dt))
    return _finish(data, reverse)


_attach(delayed_xor, "cross_entropy", lambda length=None: math.log(2))
delayed_xor.baseline.__doc__ = "ln 2: a uniform guess between the 2 equally likely classes."


def flip_flop(key, batch: int, length: int, *, channels: int = 3, p: float = 0.05) -> Batch:
    """The 3-bit flip-flop (Sussillo & Barak 2013).

    Each input channel pulses +1 or −1 (equally likely) at each step with probability ``p``,
    and is 0 otherwise; output channel i holds the sign of the last pulse on input i (0 before
    the first pulse). The loss counts at every step. No ``reverse``: the targets are defined
    step by step from past inputs, so reversed inputs would not define the same problem.

    Args:
      key: a PRNG key. batch, length: as every generator. channels: number of bits (3).
      p: pulse probability per step and channel.

    Returns:
      ``Batch``: inputs (batch, T, channels), targets (batch, T, channels) in {−1, 0, 1},
      mask (batch, T) all ones. Loss: :func:`mse`. ``flip_flop.baseline(T, p=p)`` = the MSE of
      answering 0 (the mean), 1 − (1/T) Σ_{t=1..T} (1 − p)^t, the fraction of steps at which a
      channel has seen a pulse.

    Example: ``rd.tasks.flip_flop(key, 16, 500).targets.shape`` is (16, 500, 3).
    """
    batch, length = _check(batch, length)
    channels = check_positive_int("channels", channels)
    p = check_nonnegative("p", p)
    if p > 1:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}.")
    return _flip_flop(key, batch, length, channels, p, float_dtype())


@partial(jax.jit, static_argnums=(1, 2, 3, 5))
def _flip_flop(key, batch, length, channels, p, dt):
    kp, ks = jax.random.split(key)
    shape = (batch, length, channels)
    pulses = jax.random.bernoulli(kp, p, shape) * jnp.where(jax.random.bernoulli(ks, 0.5, shape), 1, -1)
    pulses = pulses.astype(dt)

    def hold(last, u):
        last = jnp.where(u != 0, u, last)
        return last, last

    _, held = jax.lax.scan(hold, jnp.zeros((batch, channels), dt), jnp.swapaxes(pulses, 0, 1))
    return Batch(pulses, jnp.swapaxes(held, 0, 1), jnp.ones((batch, length), dt))


def _flip_flop_baseline(length, *, p=0.05):
    """1 − (1/T) Σ_{t=1..T} (1 − p)^t = 1 − (1 − p)(1 − (1 − p)^T)/(p T)."""
    T = check_positive_int("length", length)
    q = 1.0 - float(p)
    if p == 0:
        return 0.0
    return 1.0 - q * (1.0 - q**T) / (float(p) * T)


_attach(flip_flop, "mse", _flip_flop_baseline)


# ------------------------------------------------------------------------------- digits


def sequential_digits(key, batch: int, images, labels, *, permutation_key=None,
                      reverse: bool = False) -> Batch:
    """Sequential (pixel-by-pixel) MNIST, optionally permuted (Le, Jaitly & Hinton 2015).

    Draws ``batch`` examples uniformly (with replacement) and feeds each image one pixel per
    step, row by row: T = number of pixels (784 for MNIST), the length is set by the images.
    With ``permutation_key`` the pixels are shuffled by ``jax.random.permutation(
    permutation_key, T)``: one fixed permutation for every sequence (pass the same key for
    training and test batches).

    Args:
      key: a PRNG key (which examples). batch: number of sequences.
      images: (N, H, W) or (N, P) pixels; uint8 is scaled to [0, 1], floats are kept. Pass a
        jax array (``jnp.asarray(images)`` once) to avoid copying a numpy array every call.
      labels: (N,) integers 0..9 (from :func:`load_mnist`).
      permutation_key: a PRNG key for the pixel permutation, or None (no permutation).
      reverse: feed the pixels in reverse order.

    Returns:
      ``Batch``: inputs (batch, P, 1), targets (batch, P, 10) one-hot label at the last
      step, mask (batch, P) one at the last step. Loss: :func:`cross_entropy`;
      ``sequential_digits.baseline(labels)`` = the entropy of the label frequencies (ln 10
      = 2.303 when ``labels`` is None).

    Example::

        images, labels = rd.tasks.load_mnist("~/data/mnist.npz")
        x, y, m = rd.tasks.sequential_digits(key, 64, images, labels, permutation_key=jax.random.key(1))
    """
    batch = check_positive_int("batch", batch)
    images = jnp.asarray(images)
    labels = jnp.asarray(labels)
    if images.ndim not in (2, 3):
        raise ValueError(f"images: expected shape (N, H, W) or (N, P), got {tuple(images.shape)}.")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels: expected shape ({images.shape[0]},) to match images, got {tuple(labels.shape)}.")
    dt = float_dtype()
    flat = images.reshape(images.shape[0], -1)
    P = flat.shape[1]
    idx = jax.random.randint(key, (batch,), 0, flat.shape[0])
    x = flat[idx]  # select first, convert only the batch
    x = x.astype(dt) / 255.0 if jnp.issubdtype(x.dtype, jnp.integer) else x.astype(dt)
    if permutation_key is not None:
        x = x[:, jax.random.permutation(permutation_key, P)]
    y = jax.nn.one_hot(labels[idx].astype(jnp.int32), 10, dtype=dt)
    data = Batch(x[..., None], _end_targets(y, P), _at_end(batch, P, dt))
    return _finish(data, reverse)


def _digits_baseline(labels=None):
    """Entropy (nats) of the label frequencies: the loss of predicting them; ln 10 if None."""
    if labels is None:
        return math.log(10)
    counts = np.bincount(np.asarray(labels).astype(np.int64).ravel(), minlength=10)
    f = counts[counts > 0] / counts.sum()
    return float(-(f * np.log(f)).sum())


_attach(sequential_digits, "cross_entropy", _digits_baseline)


def mackey_glass(length: int, tau: float = 17.0, *, beta: float = 0.2, gamma: float = 0.1,
                 power: int = 10, x0: float = 1.2, dt: float = 0.1, sample_every: float = 1.0,
                 washout: float = 0.0, dtype=None) -> jax.Array:
    """A Mackey–Glass series, dx/dt = β x(t−τ) / (1 + x(t−τ)^p) − γ x(t).

    Integration: Heun's method (explicit trapezoid, second order) on a grid of step ``dt``,
    with τ/dt an integer so that the delayed values x(t−τ) and x(t+dt−τ) are grid points
    (no interpolation). The history is x(t) = x0 for t ≤ 0. The series is sampled every
    ``sample_every`` time units after dropping the first ``washout`` time units. τ = 17 gives
    the chaotic regime that is the standard echo-state benchmark (Jaeger & Haas 2004).

    Args:
      length: number of samples returned. tau, beta, gamma, power: the equation's constants.
      x0: the constant initial history. dt: integration step (τ/dt and sample_every/dt must be
      integers). sample_every: time between samples. washout: time units dropped first.
      dtype: default float32 (float64 with x64).

    Returns:
      (length,) samples x(washout), x(washout + sample_every), ….

    Example: ``x = rd.tasks.mackey_glass(2000, washout=500.0)``; values lie in about [0.2, 1.4].
    """
    length = check_positive_int("length", length)
    for name, v in (("tau", tau), ("dt", dt), ("sample_every", sample_every)):
        if check_nonnegative(name, v) <= 0:
            raise ValueError(f"{name}: expected a positive number, got {v!r}.")
    check_nonnegative("washout", washout)
    delay = _grid_steps("tau", tau, dt)
    sub = _grid_steps("sample_every", sample_every, dt)
    skip = _grid_steps("washout", washout, dt) if washout else 0
    consts = tuple(float(v) for v in (beta, gamma, power, x0, dt))
    return _mackey_glass(length, delay, sub, skip, consts, float_dtype(dtype))


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def _mackey_glass(length, delay, sub, skip, consts, dt_):
    beta, gamma, power, x0, dt = consts

    def f(x, xd):
        return beta * xd / (1 + xd**power) - gamma * x

    def one(carry, _):
        buf, pos, x = carry  # buf[pos] = x(t − τ), the oldest value; buf holds x(t−τ .. t−dt)
        xd0 = buf[pos]
        xd1 = buf[(pos + 1) % delay]  # x(t + dt − τ); for delay = 1 that is x(t) itself
        xd1 = jnp.where(delay == 1, x, xd1)
        k1 = f(x, xd0)
        k2 = f(x + dt * k1, xd1)
        buf = buf.at[pos].set(x)
        return (buf, (pos + 1) % delay, x + 0.5 * dt * (k1 + k2)), None

    def sample(carry, _):
        carry, _ = jax.lax.scan(one, carry, None, length=sub)
        return carry, carry[2]

    init = (jnp.full((delay,), x0, dt_), jnp.zeros((), jnp.int32), jnp.asarray(x0, dt_))
    if skip:
        init, _ = jax.lax.scan(one, init, None, length=skip)
    first = init[2]
    _, xs = jax.lax.scan(sample, init, None, length=length - 1)
    return jnp.concatenate([first[None], xs])


def _grid_steps(name, value, dt):
    k = float(value) / float(dt)
    if abs(k - round(k)) > 1e-9 * max(1.0, k) or round(k) < 1:
        raise ValueError(f"{name}: expected a positive multiple of dt = {dt}, got {value!r}.")
    return int(round(k))
