"""Bad input gives clear exceptions, raised before anything is traced; over- and underflow
give a NumericalWarning that names the fix (log10=True)."""
from __future__ import annotations

import math
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_dynamics as rd
from conftest import x64_enabled

pytestmark = pytest.mark.usefixtures("fast_compile")

M, N = 3, 4  # input_size, state_size of the test cell


@pytest.fixture
def counted():
    """A vanilla cell whose step counts its traces, its params, a good h1 and good xs."""
    base = rd.cells.vanilla(M, N)
    count = [0]

    def step(params, h, x):
        count[0] += 1
        return base.step(params, h, x)

    cell = base._replace(step=step)
    params = base.init(jax.random.key(0))
    return cell, params, jnp.zeros(N), jnp.ones((5, M)), count


# Every public function of (cell, params, h1, xs): each must run its checks before tracing.
FUNCTIONS = (rd.jacobian, rd.rollout, rd.final_state, rd.jacobian_norms, rd.step_jacobians)


# ----------------------------------------------------------------------------- xs and h1

BAD_XS = [
    pytest.param(np.zeros(M), r"xs: expected a 2-D array \(T-1, input_size\) .*rank 1", id="rank1"),
    pytest.param(
        np.zeros((2, 5, M)), r"xs: expected a 2-D array .*rank 3\)\. .*jax\.vmap", id="rank3"
    ),
    pytest.param(np.zeros(()), r"xs: expected a 2-D array .*rank 0", id="rank0"),
    pytest.param(
        np.zeros((5, M + 1)), r"xs: expected 3 features per step \(cell\.input_size\), got shape \(5, 4\)",
        id="features",
    ),
    pytest.param(np.zeros((0, M)), r"xs: got zero steps", id="zero-steps"),
]


@pytest.mark.parametrize("xs, match", BAD_XS)
def test_bad_xs_raises_before_tracing(xs, match, counted):
    cell, params, h1, _, count = counted
    for fn in FUNCTIONS:
        with pytest.raises(ValueError, match=match):
            fn(cell, params, h1, xs)
    assert count[0] == 0


BAD_H1 = [
    pytest.param(np.zeros(N + 1), r"h1: expected shape \(4,\) \(cell\.state_size", id="size"),
    pytest.param(np.zeros(()), r"h1: expected shape \(4,\)", id="scalar"),
    pytest.param(np.zeros((2, N)), r"h1: expected shape \(4,\).*jax\.vmap", id="batched"),
]


@pytest.mark.parametrize("h1, match", BAD_H1)
def test_bad_h1_raises_before_tracing(h1, match, counted):
    cell, params, _, xs, count = counted
    for fn in FUNCTIONS:
        with pytest.raises(ValueError, match=match):
            fn(cell, params, h1, xs)
    assert count[0] == 0


def test_complex_inputs_raise_type_error(counted):
    cell, params, h1, xs, count = counted
    for fn in FUNCTIONS:
        with pytest.raises(TypeError, match="h1: expected real floats"):
            fn(cell, params, h1.astype(jnp.complex64), xs)
        with pytest.raises(TypeError, match="xs: expected real floats"):
            fn(cell, params, h1, xs.astype(jnp.complex64))
    assert count[0] == 0


def test_non_cell_raises_type_error(counted):
    """A flax module (wrap it with rd.cells.from_flax) and a plain tuple with a Cell's fields."""
    _, params, h1, xs, _ = counted
    for not_a_cell in (nn.GRUCell(features=N), tuple(rd.cells.vanilla(M, N))):
        for fn in FUNCTIONS:
            with pytest.raises(TypeError, match=r"cell: expected an rd\.cells\.Cell"):
                fn(not_a_cell, params, h1, xs)


def test_unknown_method_lists_the_valid_ones(counted):
    cell, params, h1, xs, count = counted
    with pytest.raises(ValueError, match=r"method: expected one of 'jacfwd', 'jacrev', 'product', 'auto'; got 'svd'"):
        rd.jacobian(cell, params, h1, xs, method="svd")
    assert count[0] == 0
    assert rd.METHODS == ("jacfwd", "jacrev", "product")


def test_non_positive_unroll_raises(counted):
    cell, params, h1, xs, count = counted
    for fn in (rd.jacobian, rd.rollout, rd.final_state, rd.jacobian_norms):
        with pytest.raises(ValueError, match=r"unroll: expected a positive int, got 0"):
            fn(cell, params, h1, xs, unroll=0)
    assert count[0] == 0


def test_good_input_is_accepted_in_other_forms(counted):
    """Lists, numpy float64 and int arrays are converted (not rejected)."""
    cell, params, _, _, count = counted
    a = rd.rollout(cell, params, [0.0] * N, np.ones((5, M), np.float64))
    b = rd.rollout(cell, params, np.zeros(N, np.int32), np.ones((5, M), np.int64))
    assert a.shape == b.shape == (5, N)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b))
    assert count[0] > 0


# ----------------------------------------------------------------------------- cell factories


def test_unknown_activation_lists_the_valid_ones():
    match = r"activation: expected one of 'tanh', 'sigmoid', 'relu', 'linear'; got 'Tanh'"
    for make in (lambda a: rd.cells.vanilla(M, N, a), lambda a: rd.cells.univariate(activation=a)):
        with pytest.raises(ValueError, match=match):
            make("Tanh")  # names are case-sensitive


SIZED_FACTORIES = [
    pytest.param(lambda m, n: rd.cells.vanilla(m, n), id="vanilla"),
    pytest.param(lambda m, n: rd.cells.linear(m, n), id="linear"),
    pytest.param(lambda m, n: rd.cells.irnn(m, n), id="irnn"),
    pytest.param(lambda m, n: rd.cells.lstm(m, n), id="lstm"),
    pytest.param(lambda m, n: rd.cells.gru(m, n), id="gru"),
    pytest.param(lambda m, n: rd.cells.esn(m, n), id="esn"),
]


@pytest.mark.parametrize("make", SIZED_FACTORIES)
def test_non_positive_sizes_raise(make):
    with pytest.raises(ValueError, match=r"^input_size: expected a positive int, got 0"):
        make(0, N)
    with pytest.raises(ValueError, match=r"^hidden_size: expected a positive int, got -2"):
        make(M, -2)


@pytest.mark.parametrize("bad", [3.0, True])  # a float, and a bool (an int subclass)
def test_non_int_sizes_raise_type_error(bad):
    with pytest.raises(TypeError, match=r"^input_size: expected a positive int"):
        rd.cells.vanilla(bad, N)
    with pytest.raises(TypeError, match=r"^hidden_size: expected a positive int"):
        rd.cells.vanilla(M, bad)


def test_from_flax_non_positive_input_size_raises():
    with pytest.raises(ValueError, match="input_size"):
        rd.cells.from_flax(nn.GRUCell(features=N), input_size=0)


@pytest.mark.parametrize(
    "make, arg",
    [
        pytest.param(lambda v: rd.cells.vanilla(M, N, gain=v), "gain", id="vanilla-gain"),
        pytest.param(lambda v: rd.cells.linear(M, N, gain=v), "gain", id="linear-gain"),
        pytest.param(lambda v: rd.cells.lstm(M, N, gain=v), "gain", id="lstm-gain"),
        pytest.param(lambda v: rd.cells.gru(M, N, gain=v), "gain", id="gru-gain"),
        pytest.param(lambda v: rd.cells.vanilla(M, N, input_gain=v), "input_gain", id="vanilla-input_gain"),
        pytest.param(lambda v: rd.cells.vanilla(M, N, bias_scale=v), "bias_scale", id="vanilla-bias_scale"),
        pytest.param(lambda v: rd.cells.irnn(M, N, scale=v), "scale", id="irnn-scale"),
        pytest.param(lambda v: rd.cells.irnn(M, N, input_gain=v), "input_gain", id="irnn-input_gain"),
        pytest.param(lambda v: rd.cells.esn(M, N, spectral_radius=v), "spectral_radius", id="esn-radius"),
        pytest.param(lambda v: rd.cells.esn(M, N, input_scale=v), "input_scale", id="esn-input_scale"),
        pytest.param(lambda v: rd.cells.esn(M, N, bias_scale=v), "bias_scale", id="esn-bias_scale"),
    ],
)
def test_negative_scales_raise_naming_the_argument(make, arg):
    with pytest.raises(ValueError, match=rf"^{arg}: expected a finite non-negative number"):
        make(-1.0)


@pytest.mark.parametrize("value", [-1e-6, float("nan"), float("inf")])
def test_tiny_negative_and_non_finite_numbers_raise(value):
    with pytest.raises(ValueError, match=r"^gain: expected a finite non-negative number"):
        rd.cells.vanilla(M, N, gain=value)
    with pytest.raises(ValueError, match=r"^leak_rate: expected a finite non-negative number"):
        rd.cells.esn(M, N, leak_rate=value)


# ----------------------------------------------------------------------------- rd.spectra


@pytest.fixture
def spectra_args(counted):
    cell, _, _, _, count = counted
    return cell, jax.random.key(0), count


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        pytest.param({"seeds": 0}, ValueError, r"seeds: expected a positive int, got 0", id="seeds=0"),
        pytest.param({"seeds": 2.0}, TypeError, r"seeds: expected a positive int", id="seeds-float"),
        pytest.param({"steps": 1}, ValueError, r"steps: expected T >= 2", id="steps=1"),
        pytest.param({"steps": 0}, ValueError, r"steps: expected a positive int", id="steps=0"),
        pytest.param({"input_scale": -0.5}, ValueError, r"input_scale: expected a finite non-negative", id="input_scale<0"),
        pytest.param({"h1": np.zeros(N + 1)}, ValueError, r"h1: expected None, a standard deviation, or an array of shape \(4,\) or \(2, 4\); got shape \(5,\)", id="h1-size"),
        pytest.param({"h1": np.zeros((3, N))}, ValueError, r"h1: .*got shape \(3, 4\)", id="h1-seeds"),
        pytest.param({"h1": -1.0}, ValueError, r"h1: expected a finite non-negative", id="h1-negative-std"),
        pytest.param({"method": "eig"}, ValueError, r"method: expected one of 'jacfwd', 'jacrev', 'product'", id="method"),
        pytest.param({"batch_size": 0}, ValueError, r"batch_size: expected a positive int", id="batch_size"),
        pytest.param({"xs": np.zeros((4, M + 1))}, ValueError, r"xs: expected last axes \(T-1 >= 1, 3\), got shape \(4, 4\)", id="xs-features"),
        pytest.param({"xs": np.zeros(M)}, ValueError, r"xs: expected \(T-1, input_size\) or \(seeds, T-1, input_size\)", id="xs-rank"),
    ],
)
def test_spectra_bad_arguments(kwargs, exc, match, spectra_args):
    cell, key, count = spectra_args
    args = {"seeds": 2, "steps": None if "xs" in kwargs else 5, **kwargs}
    with pytest.raises(exc, match=match):
        rd.spectra(cell, key, **args)
    assert count[0] == 0


def test_spectra_non_cell_raises_type_error():
    with pytest.raises(TypeError, match=r"cell: expected an rd\.cells\.Cell"):
        rd.spectra(nn.GRUCell(features=N), jax.random.key(0), seeds=2, steps=5)


# ----------------------------------------------------------------------------- numerical warnings

STEPS = 200  # 200 inputs: T - 1 = 200 factors of w


def _univariate(w):
    cell = rd.cells.univariate(w=w)  # linear: ∂h_T/∂h_1 = w**(T-1) exactly
    return cell, cell.init(None), jnp.zeros(1), jnp.zeros((STEPS, 1))


@pytest.mark.parametrize("method", ["jacfwd", "jacrev", "product"])
def test_overflow_warns_and_names_log10(method):
    cell, p, h1, xs = _univariate(2.0)  # 2**200 > 3.4e38 = float32 max
    with pytest.warns(rd.NumericalWarning, match=r"log10=True") as record:
        J = rd.jacobian(cell, p, h1, xs, method=method)
    assert J.dtype == jnp.float32
    assert np.isposinf(np.asarray(J)[0, 0])
    msg = str(record[0].message)
    assert "non-finite" in msg and "float32" in msg
    assert record[0].filename == __file__  # points at the caller's line


@pytest.mark.parametrize("method", ["jacfwd", "jacrev", "product"])
def test_underflow_warns_and_names_log10(method):
    cell, p, h1, xs = _univariate(0.5)  # 2**-200 < 1.4e-45 = smallest float32
    with pytest.warns(rd.NumericalWarning, match=r"log10=True") as record:
        J = rd.jacobian(cell, p, h1, xs, method=method)
    assert np.asarray(J)[0, 0] == 0.0
    assert "exactly zero" in str(record[0].message)
    assert record[0].filename == __file__


def test_no_warning_inside_a_users_jit():
    """Inside jit the values are unknown: no warning (and no error), the inf comes back."""
    cell, p, h1, xs = _univariate(2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        J = jax.jit(lambda p: rd.jacobian(cell, p, h1, xs))(p)
    assert np.isposinf(np.asarray(J)[0, 0])


def test_float64_extends_the_range():
    """2**200 fits in float64 (max ≈ 1.8e308): no warning there."""
    with x64_enabled():
        cell, p, h1, xs = _univariate(2.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            J = np.asarray(rd.jacobian(cell, p, h1, xs))
    assert J.dtype == np.float64
    assert J[0, 0] == 2.0**200


@pytest.mark.parametrize("w", [2.0, 0.5])
def test_log10_norms_are_exact_and_silent(w):
    cell, p, h1, xs = _univariate(w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logs = np.asarray(rd.jacobian_norms(cell, p, h1, xs, log10=True))
    assert logs.shape == (STEPS,)
    lags = np.arange(1, STEPS + 1)  # entry k is ‖∂h_{k+2}/∂h_1‖₂ = |w|**(k+1)
    want = lags * math.log10(w)
    np.testing.assert_allclose(logs, want, rtol=1e-5, atol=1e-5)
    assert logs[-1] == pytest.approx(STEPS * math.log10(w), rel=1e-5)  # ±60.206


@pytest.mark.parametrize("w, lost", [(2.0, np.inf), (0.5, 0.0)])
def test_norms_without_log10_warn(w, lost):
    cell, p, h1, xs = _univariate(w)
    with pytest.warns(rd.NumericalWarning, match=r"Pass log10=True") as record:
        norms = np.asarray(rd.jacobian_norms(cell, p, h1, xs))
    assert record[0].filename == __file__
    assert norms.shape == (STEPS,)
    # In range the norms are right; beyond float32's range they come back as 0 / inf.
    np.testing.assert_allclose(norms[:20], w ** np.arange(1, 21), rtol=1e-4)
    assert norms[-1] == lost
