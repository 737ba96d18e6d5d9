"""Generators: baselines against their formulas, answers and masks decoded by numpy, exact reversal,
the MNIST reader on files written here, and Mackey–Glass against a numpy integrator."""
from __future__ import annotations

import gzip
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_dynamics as rd

pytestmark = pytest.mark.usefixtures("fast_compile")

KEY = jax.random.key(0)
# One (batch, length) per generator across the tests below: each shape is one compilation.
ADD = (40000, 12)
XOR = (20000, 40)
ORDER = (10000, 100)
COPY_T = 30


def _np(batch):
    return tuple(np.asarray(a, np.float64) for a in batch)


def _masked(per_step, mask):
    return (per_step * mask).sum() / mask.sum()


def _ce(logp, y, mask):
    return _masked(-(y * logp).sum(-1), mask)


def _onehot_ids(a):
    assert np.all(a.sum(-1) == 1) and np.all((a == 0) | (a == 1))
    return a.argmax(-1)


# ------------------------------------------------------------------ chance-level baselines


def test_adding_baseline_is_one_sixth():
    x, y, m = _np(rd.tasks.adding(KEY, *ADD))
    mse = _masked((1.0 - y[..., 0]) ** 2, m)  # always answer the mean, 1
    assert rd.tasks.adding.baseline(12) == pytest.approx(1 / 6)
    assert mse == pytest.approx(1 / 6, rel=0.02)
    assert float(rd.tasks.mse(jnp.ones_like(y), y, m)) == pytest.approx(mse, rel=1e-5)


def test_copy_baseline_is_10_ln8_over_T_plus_20():
    T = COPY_T
    x, y, m = _np(rd.tasks.copy(KEY, 2000, T))
    assert x.shape == (2000, T + 20, 10) and y.shape == (2000, T + 20, 9)
    logp = np.full(y.shape, -np.inf)
    logp[:, : T + 10, 0] = 0.0  # blank, certain, for T + 10 steps
    logp[:, T + 10:, 1:] = -math.log(8)  # then a uniform guess among the 8 categories
    with np.errstate(invalid="ignore"):
        ce = _ce(np.where(y > 0, logp, 0.0), y, m)  # −inf only where the target is 0
    assert ce == pytest.approx(10 * math.log(8) / (T + 20), rel=0.02)
    assert rd.tasks.copy.baseline(T) == pytest.approx(10 * math.log(8) / (T + 20))
    logits = jnp.asarray(np.where(np.isfinite(logp), logp, -1e9))
    assert float(rd.tasks.cross_entropy(logits, y, m)) == pytest.approx(ce, rel=1e-5)


@pytest.mark.parametrize("gen, shape, classes", [(rd.tasks.temporal_order, ORDER, 4), (rd.tasks.delayed_xor, XOR, 2)])
def test_classification_baselines_are_ln_classes(gen, shape, classes):
    """Balanced classes: the best memoryless guess, the class frequencies, scores ln C."""
    x, y, m = _np(gen(KEY, *shape))
    freq = y[:, -1].mean(0)
    entropy = -(freq * np.log(freq)).sum()
    assert entropy == pytest.approx(gen.baseline(shape[1]), rel=0.02)
    assert gen.baseline(shape[1]) == pytest.approx(math.log(classes))
    np.testing.assert_allclose(freq, 1 / classes, atol=0.02)


def test_flip_flop_baseline_matches_formula():
    p, T = 0.05, 100
    x, y, m = _np(rd.tasks.flip_flop(KEY, 3000, T, p=p))
    mse = _masked((y**2).mean(-1), m)  # answer 0, the mean
    formula = 1 - sum((1 - p) ** t for t in range(1, T + 1)) / T
    assert rd.tasks.flip_flop.baseline(T, p=p) == pytest.approx(formula, rel=1e-12)
    assert mse == pytest.approx(formula, rel=0.02)


def test_delayed_recall_baseline_is_ln_C():
    x, y, m = _np(rd.tasks.delayed_recall(KEY, 500, 20, symbols=4, categories=6))
    logp = np.full(y.shape, -math.log(6))  # a uniform guess among the 6 symbols ...
    logp[..., 0] = -1e30  # ... never blank
    ce = _ce(logp, y, m)
    assert np.all(y[..., 0][m == 1] == 0)  # only symbols are asked for


# ------------------------------------------------------------------ answers and masks (numpy decoding)


def _end_mask(b, T):
    m = np.zeros((b, T))
    m[:, -1] = 1
    return m


def test_adding_and_xor_answers_and_masks():
    for gen, (b, T) in ((rd.tasks.adding, ADD), (rd.tasks.delayed_xor, XOR)):
        x, y, m = _np(gen(KEY, b, T))
        np.testing.assert_array_equal(m, _end_mask(b, T))
        assert np.all(y[:, :-1] == 0)
        marks = x[..., 1]
        assert np.all(marks.sum(1) == 2) and np.all(marks[:, : T // 2].sum(1) == 1)  # one per half
        marked = x[..., 0][marks == 1].reshape(b, 2)
        if gen is rd.tasks.adding:
            np.testing.assert_allclose(y[:, -1, 0], marked.sum(1), rtol=1e-6)
            assert 0 <= x[..., 0].min() and x[..., 0].max() < 1
        else:
            assert set(np.unique(x[..., 0])) == {0.0, 1.0}
            np.testing.assert_array_equal(_onehot_ids(y[:, -1]), marked[:, 0].astype(int) ^ marked[:, 1].astype(int))


def test_temporal_order_answers_and_mask():
    b, T = ORDER
    x, y, m = _np(rd.tasks.temporal_order(KEY, b, T))
    ids = _onehot_ids(x)
    np.testing.assert_array_equal(m, _end_mask(b, T))
    assert np.all(ids[:, 0] == 6) and np.all(ids[:, -1] == 7)  # B ... E
    rel = np.argwhere((ids == 4) | (ids == 5))
    assert len(rel) == 2 * b
    t = rel[:, 1].reshape(b, 2)
    assert np.all((10 <= t[:, 0]) & (t[:, 0] <= 20) & (50 <= t[:, 1]) & (t[:, 1] <= 60))  # the paper's ranges
    sym = ids[np.arange(b)[:, None], t] - 4  # 0: X, 1: Y
    np.testing.assert_array_equal(_onehot_ids(y[:, -1]), 2 * sym[:, 0] + sym[:, 1])


def test_flip_flop_holds_the_last_pulse():
    x, y, m = _np(rd.tasks.flip_flop(KEY, 20, 200, p=0.1))
    assert np.all(m == 1) and set(np.unique(x)) <= {-1.0, 0.0, 1.0}
    held = np.zeros((20, 3))
    for t in range(200):
        held = np.where(x[:, t] != 0, x[:, t], held)
        np.testing.assert_array_equal(y[:, t], held)


def test_copy_layout_and_recall():
    T = COPY_T
    x, y, m = _np(rd.tasks.copy(KEY, 2000, T))
    xi, yi = _onehot_ids(x), _onehot_ids(y)
    assert np.all((1 <= xi[:, :10]) & (xi[:, :10] <= 8))
    assert np.all(xi[:, 10: T + 9] == 0) and np.all(xi[:, T + 9] == 9) and np.all(xi[:, T + 10:] == 0)
    assert np.all(yi[:, : T + 10] == 0)
    np.testing.assert_array_equal(yi[:, T + 10:], xi[:, :10])
    assert np.all(m == 1)


# ------------------------------------------------------------------ reversal


@pytest.mark.parametrize("gen, shape", [(rd.tasks.adding, ADD), (rd.tasks.temporal_order, ORDER),
                                         (rd.tasks.delayed_xor, XOR)])
def test_reverse_reverses_the_whole_input_exactly(gen, shape):
    fwd, rev = gen(KEY, *shape), gen(KEY, *shape, reverse=True)
    np.testing.assert_array_equal(rev.inputs, np.asarray(fwd.inputs)[:, ::-1])
    np.testing.assert_array_equal(rev.targets, fwd.targets)
    np.testing.assert_array_equal(rev.mask, fwd.mask)
    np.testing.assert_array_equal(rd.tasks.reverse(fwd).inputs, rev.inputs)


def test_recall_reversal_reverses_only_the_source_and_shortens_the_first_lag():
    K, T = 4, 16
    fwd = rd.tasks.delayed_recall(KEY, 30, T, symbols=K, categories=50)
    rev = rd.tasks.delayed_recall(KEY, 30, T, symbols=K, categories=50, reverse=True)
    xf, xr = np.asarray(fwd.inputs), np.asarray(rev.inputs)
    np.testing.assert_array_equal(xr[:, :K], xf[:, K - 1:: -1])
    np.testing.assert_array_equal(xr[:, K:], xf[:, K:])
    np.testing.assert_array_equal(rev.targets, fwd.targets)
    np.testing.assert_array_equal(rd.tasks.reverse(fwd, 0, K).inputs, xr)
    # lag between seeing a symbol and recalling it (50 categories: mostly distinct symbols)
    gap = T - 2 * K
    xi, yi = _onehot_ids(xr), _onehot_ids(np.asarray(rev.targets))
    first = np.argmax(xi[:, :K] == yi[:, T - K][:, None], axis=1)  # where the first answer was seen
    unique = np.array([len(set(r)) == K for r in xi[:, :K]])
    np.testing.assert_array_equal((T - K - first)[unique], gap + 1)  # forward: gap + K for all
    xi = _onehot_ids(xf)
    first = np.argmax(xi[:, :K] == yi[:, T - K][:, None], axis=1)
    np.testing.assert_array_equal((T - K - first)[unique], gap + K)


# ------------------------------------------------------------------ keys, jit, vmap, errors


def test_pure_keyed_and_composable():
    a = rd.tasks.adding(KEY, 4, 10)
    np.testing.assert_array_equal(a.inputs, rd.tasks.adding(KEY, 4, 10).inputs)
    assert not np.array_equal(a.inputs, rd.tasks.adding(jax.random.key(1), 4, 10).inputs)
    j = jax.jit(rd.tasks.adding, static_argnums=(1, 2))(KEY, 4, 10)
    np.testing.assert_allclose(j.inputs, a.inputs)
    v = jax.vmap(lambda k: rd.tasks.flip_flop(k, 2, 9))(jax.random.split(KEY, 3))
    assert v.inputs.shape == (3, 2, 9, 3)
    assert a.inputs.dtype == jnp.float32


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="length: expected at least 10"):
        rd.tasks.temporal_order(KEY, 4, 5)
    with pytest.raises(TypeError, match="batch: expected a positive int"):
        rd.tasks.adding(KEY, 4.0, 10)
    with pytest.raises(ValueError, match="length: expected at least 9"):
        rd.tasks.delayed_recall(KEY, 2, 8, symbols=4)
    with pytest.raises(ValueError, match="tau: expected a positive multiple of dt"):
        rd.tasks.mackey_glass(10, tau=17.05)


# ------------------------------------------------------------------ MNIST files


def _idx_bytes(a, code):
    head = bytes([0, 0, code, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return head + a.tobytes()


def _images(n=7):
    i = np.arange(n)[:, None, None]
    r, c = np.arange(28)[None, :, None], np.arange(28)[None, None, :]
    return ((3 * i + 5 * r + 11 * c) % 256).astype(np.uint8), (np.arange(n) * 3 % 10).astype(np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_reads_idx_files(tmp_path, compress):
    images, labels = _images()
    for name, a, code in [("train-images-idx3-ubyte", images, 0x08), ("train-labels-idx1-ubyte", labels, 0x08)]:
        data = _idx_bytes(a, code)
        if compress:
            (tmp_path / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (tmp_path / name).write_bytes(data)
    im, lb = rd.tasks.load_mnist(tmp_path)
    np.testing.assert_array_equal(im, images)
    np.testing.assert_array_equal(lb, labels)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        rd.tasks.load_mnist(tmp_path, "test")


def test_load_mnist_reads_npz_and_names_a_missing_path(tmp_path):
    images, labels = _images()
    np.savez(tmp_path / "mnist.npz", x_train=images, y_train=labels, x_test=images[:2], y_test=labels[:2])
    im, lb = rd.tasks.load_mnist(tmp_path / "mnist.npz", "test")
    np.testing.assert_array_equal(im, images[:2])
    np.testing.assert_array_equal(lb, labels[:2])
    missing = tmp_path / "nowhere" / "mnist.npz"
    with pytest.raises(FileNotFoundError, match="nowhere/mnist.npz.*never downloads"):
        rd.tasks.load_mnist(missing)


def test_sequential_digits_feeds_pixels_with_one_fixed_permutation():
    images, labels = _images()
    flat = images.reshape(7, -1).astype(np.float64) / 255
    x, y, m = _np(rd.tasks.sequential_digits(KEY, 12, images, labels, permutation_key=jax.random.key(3)))
    assert x.shape == (12, 784, 1)
    np.testing.assert_array_equal(m, _end_mask(12, 784))
    plain = np.asarray(rd.tasks.sequential_digits(KEY, 12, images, labels).inputs)[..., 0]
    which = [int(np.argmin(np.abs(flat - row).sum(1))) for row in plain]  # which image each row is
    np.testing.assert_allclose(plain, flat[which], atol=1e-6)
    np.testing.assert_array_equal(_onehot_ids(y[:, -1]), labels[which])
    perm = np.asarray(jax.random.permutation(jax.random.key(3), 784))
    np.testing.assert_allclose(x[..., 0], flat[which][:, perm], atol=1e-6)
    assert not np.array_equal(perm, np.arange(784))


# ------------------------------------------------------------------ Mackey–Glass


def _np_mackey_glass(n, tau=17, dt=0.1, sub=10, x0=1.2, beta=0.2, gamma=0.1, p=10):
    """Heun's method on the grid, history x0, a plain list as the delay line."""
    D = int(round(tau / dt))
    hist = [x0] * (D + 1)  # hist[-1] = x(t), hist[-1 - D] = x(t − τ)
    f = lambda x, xd: beta * xd / (1 + xd**p) - gamma * x
    out = [x0]
    for k in range((n - 1) * sub):
        x, xd0, xd1 = hist[-1], hist[-1 - D], hist[-D]
        k1 = f(x, xd0)
        k2 = f(x + dt * k1, xd1)
        hist.append(x + 0.5 * dt * (k1 + k2))
        if (k + 1) % sub == 0:
            out.append(hist[-1])
    return np.array(out)


def test_mackey_glass_matches_a_numpy_integrator_and_converges():
    ours = np.asarray(rd.tasks.mackey_glass(300))
    np.testing.assert_allclose(ours, _np_mackey_glass(300), rtol=2e-4, atol=2e-4)
    # second order: halving dt moves the first 40 time units by far less than the signal
    fine = np.asarray(rd.tasks.mackey_glass(41, dt=0.05))
    np.testing.assert_allclose(ours[:41], fine, atol=2e-3)
    assert 0.2 < ours[100:].min() and ours[100:].max() < 1.4 and ours[100:].std() > 0.1  # chaotic, bounded
