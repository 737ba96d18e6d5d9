"""Tests for rnn_dynamics.init: each initialiser against its defining property (moments,
orthogonality, numpy eigenvalues, sparsity pattern), its argument checks, and vmap/jit."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnn_dynamics as rd
from conftest import x64_enabled

pytestmark = pytest.mark.usefixtures("fast_compile")

init = rd.init
FAST = settings(max_examples=10, deadline=None)
gains = st.floats(0.05, 3.0, allow_nan=False)
seeds = st.integers(0, 2**31 - 1)


def _key(seed=0):
    return jax.random.key(seed)


def _bits(a):
    a = np.asarray(a)
    return a.dtype, a.shape, a.tobytes()


def _rho(W):
    return np.max(np.abs(np.linalg.eigvals(np.asarray(W, np.float64))))


# ----------------------------------------------------------------------------- gaussian


@pytest.mark.parametrize("shape", [(256, 64), (64, 256)])
def test_gaussian_moments(shape):
    """Entries N(0, gain²/fan_in), fan_in = shape[1] (columns); other gains: linear scaling."""
    gain = 1.7
    W = np.asarray(init.gaussian(gain)(_key(1), shape), np.float64)
    assert W.shape == shape
    N, fan_in = W.size, shape[1]
    var = gain**2 / fan_in
    # Sample variance of N normals: relative standard error sqrt(2/N) ≈ 1.1%; allow ~5.5σ.
    assert W.var() == pytest.approx(var, rel=6 * np.sqrt(2 / N))
    assert abs(W.mean()) < 5 * np.sqrt(var / N)


@FAST
@given(gain=gains, seed=seeds)
def test_gaussian_scales_linearly_with_gain(gain, seed):
    """gaussian(g) is g times gaussian(1) with the same key (same normal draws)."""
    a = np.asarray(init.gaussian(gain)(_key(seed), (8, 6)), np.float64)
    b = np.asarray(init.gaussian(1.0)(_key(seed), (8, 6)), np.float64)
    np.testing.assert_allclose(a, gain * b, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- orthogonal


@FAST
@given(gain=gains, seed=seeds)
def test_orthogonal_square(gain, seed):
    W = np.asarray(init.orthogonal(gain)(_key(seed), (8, 8)), np.float64)
    np.testing.assert_allclose(W.T @ W, gain**2 * np.eye(8), atol=1e-5 * gain**2)
    np.testing.assert_allclose(W @ W.T, gain**2 * np.eye(8), atol=1e-5 * gain**2)
    np.testing.assert_allclose(np.linalg.svd(W, compute_uv=False), gain, rtol=1e-5)


@pytest.mark.parametrize("shape", [(8, 5), (5, 8)])
def test_orthogonal_rectangular(shape):
    g = 1.3
    W = np.asarray(init.orthogonal(g)(_key(2), shape), np.float64)
    assert W.shape == shape
    k = min(shape)
    G = W.T @ W if shape[0] > shape[1] else W @ W.T  # the small Gram matrix
    np.testing.assert_allclose(G, g**2 * np.eye(k), atol=1e-5)


# ----------------------------------------------------------------------------- identity, zeros


def test_identity():
    for shape in [(3, 5), (5, 3)]:  # rectangular: ones on the main diagonal
        W = np.asarray(init.identity(0.7)(_key(0), shape))
        np.testing.assert_array_equal(W, np.float32(0.7) * np.eye(*shape, dtype=np.float32))
        # The key is unused.
        assert _bits(W) == _bits(init.identity(0.7)(None, shape))


def test_zeros():
    W = init.zeros(_key(0), (3, 2))
    assert W.shape == (3, 2) and W.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(W), 0.0)


# ----------------------------------------------------------------------------- spectral radius


@FAST
@given(radius=st.floats(0.01, 3.0), seed=seeds)
def test_spectral_radius_property(radius, seed):
    W = init.spectral_radius(radius)(_key(seed), (6, 6))
    assert _rho(W) == pytest.approx(radius, rel=1e-5)


def test_spectral_radius_float64():
    """Documented: drawn and rescaled in float32 at both precisions (one key, one network; that
    promise is test_values'), so under x64 ρ(W) = radius only to float32 rounding (measured
    0.9000000190 for 0.9)."""
    with x64_enabled():
        W = np.asarray(init.spectral_radius(0.9)(_key(4), (10, 10)))
    assert W.dtype == np.float64
    assert _rho(W) == pytest.approx(0.9, rel=1e-6)


def test_spectral_radius_is_a_rescaled_base_draw():
    """Same key: the result is the base draw times radius / ρ(base draw)."""
    base = init.sparse(3, gain=1.0)
    B = np.asarray(base(_key(5), (9, 9)), np.float64)
    W = np.asarray(init.spectral_radius(0.8, base=base)(_key(5), (9, 9)), np.float64)
    np.testing.assert_allclose(W, B * (0.8 / _rho(B)), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.count_nonzero(W, axis=1), 3)
    assert _rho(W) == pytest.approx(0.8, rel=1e-5)


def test_spectral_radius_of_a_zero_base_is_zero_not_nan():
    W = np.asarray(init.spectral_radius(0.9, base=init.zeros)(_key(), (5, 5)))
    np.testing.assert_array_equal(W, 0.0)


def test_matrix_spectral_radius_matches_numpy_under_jit_and_vmap():
    # A rotation by 90° scaled by 2: eigenvalues ±2i, so ρ = 2 although the matrix is real.
    R = jnp.array([[0.0, -2.0], [2.0, 0.0]])
    assert float(init.matrix_spectral_radius(R)) == pytest.approx(2.0, rel=1e-6)
    Ws = jax.random.normal(_key(6), (3, 5, 5))
    got = jax.jit(jax.vmap(init.matrix_spectral_radius))(Ws)
    np.testing.assert_allclose(np.asarray(got), [_rho(W) for W in Ws], rtol=1e-5)
    with pytest.raises(ValueError, match="W"):
        init.matrix_spectral_radius(jnp.ones((2, 3)))


# ----------------------------------------------------------------------------- sparse


@pytest.mark.parametrize("k", [1, 4])  # k = fan_in: test_sparse_k_above_fan_in_raises
def test_sparse_has_exactly_k_nonzeros_per_row(k):
    for seed in range(5):
        W = np.asarray(init.sparse(k)(_key(seed), (6, 10)))
        assert W.shape == (6, 10)
        np.testing.assert_array_equal(np.count_nonzero(W, axis=1), k)


def test_sparse_value_variance():
    """Non-zeros are N(0, gain²/k), so each row has expected squared norm gain²."""
    k, g = 8, 1.5
    W = np.asarray(init.sparse(k, gain=g)(_key(7), (500, 40)), np.float64)
    vals = W[W != 0]
    assert vals.size == 500 * k
    assert vals.var() == pytest.approx(g**2 / k, rel=6 * np.sqrt(2 / vals.size))
    assert np.mean(np.sum(W**2, axis=1)) == pytest.approx(g**2, rel=0.1)
    # Columns are picked uniformly: every column is used by about 500·k/40 = 100 rows.
    counts = np.count_nonzero(W, axis=0)
    assert counts.min() > 50 and counts.max() < 150


# ----------------------------------------------------------------------------- keys, dtypes

INITIALIZERS = [
    pytest.param(init.gaussian(1.2), id="gaussian"),
    pytest.param(init.orthogonal(0.9), id="orthogonal"),
    pytest.param(init.spectral_radius(0.9), id="spectral_radius"),
    pytest.param(init.sparse(3), id="sparse"),
]


@pytest.mark.parametrize("initializer", INITIALIZERS)
def test_distinct_keys_give_distinct_matrices(initializer):
    a = np.asarray(initializer(_key(1), (6, 6)))
    b = np.asarray(initializer(_key(2), (6, 6)))
    drawn = a != 0  # every entry of the dense ones, the k per row of sparse
    assert drawn.any() and np.all(a[drawn] != b[drawn])
    assert np.any(drawn != (b != 0)) or drawn.all()  # sparse: the pattern is drawn as well


@pytest.mark.parametrize("initializer", INITIALIZERS[:2] + INITIALIZERS[3:])  # spectral_radius: below
def test_vmap_over_keys(initializer):
    shape = (6, 6)
    keys = jax.random.split(_key(3), 3)
    batched = jax.vmap(lambda k: initializer(k, shape))(keys)
    assert batched.shape == (3,) + shape and batched.dtype == jnp.float32
    for i, k in enumerate(keys):
        single = np.asarray(initializer(k, shape))
        np.testing.assert_allclose(np.asarray(batched[i]), single, rtol=1e-5, atol=1e-6)


def test_spectral_radius_under_jit_and_vmap():
    f = jax.jit(jax.vmap(lambda k: init.spectral_radius(0.7, base=init.sparse(2))(k, (6, 6))))
    for W in np.asarray(f(jax.random.split(_key(4), 3))):
        assert _rho(W) == pytest.approx(0.7, rel=1e-5)
        np.testing.assert_array_equal(np.count_nonzero(W, axis=1), 2)


ALL_INITIALIZERS = INITIALIZERS + [pytest.param(init.identity(2.0), id="identity")]


@pytest.mark.parametrize("initializer", ALL_INITIALIZERS + [pytest.param(init.zeros, id="zeros")])
def test_default_dtype(initializer):
    assert initializer(_key(0), (4, 4)).dtype == jnp.float32
    with x64_enabled():
        W = jax.block_until_ready(initializer(_key(0), (4, 4)))
        assert W.dtype == jnp.float64


@pytest.mark.parametrize("initializer", ALL_INITIALIZERS)
def test_requested_dtype_is_honoured(initializer):
    """``init(key, shape, dtype)`` returns ``dtype`` (the jax.nn.initializers contract): bfloat16
    by default, float32 under x64 (where the default would be float64)."""
    if initializer is not ALL_INITIALIZERS[1].values[0]:  # orthogonal's QR has no bfloat16 CPU kernel
        assert jax.block_until_ready(initializer(_key(0), (4, 4), jnp.bfloat16)).dtype == jnp.bfloat16
    with x64_enabled():
        W = jax.block_until_ready(initializer(_key(0), (4, 4), jnp.float32))
        assert W.dtype == jnp.float32


# ----------------------------------------------------------------------------- bad arguments


def test_negative_scale_raises_naming_the_argument():
    """Each factory checks its number (NaN, inf and tiny negatives: test_checks)."""
    for factory, arg in ((init.gaussian, "gain"), (init.orthogonal, "gain"), (init.identity, "scale"),
                         (init.spectral_radius, "radius")):
        with pytest.raises(ValueError, match=rf"^{arg}: expected a finite non-negative number"):
            factory(-1.0)
    with pytest.raises(TypeError, match=r"^gain: expected a non-negative number"):
        init.gaussian("large")


def test_sparse_non_positive_k_raises():
    with pytest.raises(ValueError, match=r"^k: expected a positive int, got 0"):
        init.sparse(0)


def test_sparse_non_int_k_raises():
    with pytest.raises(TypeError, match=r"^k: "):
        init.sparse(2.5)


def test_sparse_negative_gain_raises():
    with pytest.raises(ValueError, match="gain"):
        init.sparse(2, gain=-1.0)


def test_sparse_k_above_fan_in_raises():
    with pytest.raises(ValueError, match=r"^k: .*fan_in = 10"):
        init.sparse(11)(_key(), (6, 10))
    assert np.all(np.asarray(init.sparse(10)(_key(), (6, 10))) != 0)  # k == fan_in is fine


def test_spectral_radius_non_square_raises():
    with pytest.raises(ValueError, match=r"shape.*square"):
        init.spectral_radius(0.9)(_key(), (4, 5))


@pytest.mark.parametrize(
    "initializer",
    [init.gaussian(), init.orthogonal(), init.identity(), init.spectral_radius(0.9), init.sparse(1)],
    ids=["gaussian", "orthogonal", "identity", "spectral_radius", "sparse"],
)
def test_non_matrix_shape_raises(initializer):
    with pytest.raises(ValueError, match=r"shape: expected a matrix shape \(fan_out, fan_in\), got \(2, 3, 4\)"):
        initializer(_key(), (2, 3, 4))
