"""Shared fixtures for the rnn_dynamics tests.

``ALL_CELLS`` is the list of every kind of cell, small enough to keep the suite fast; each
entry is ``pytest.param(name, factory, id=name)`` (use with
``@pytest.mark.parametrize("name, make", ALL_CELLS)``); the factory builds a *fresh* cell
(build it inside ``x64`` if the test wants float64: ``from_flax`` fixes its dtype when built).
"""
from __future__ import annotations

import contextlib
import os

# Before jax/scipy load OpenBLAS: its threads would fight XLA's on a 2-core CI machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import flax.linen as nn
import jax
import pytest

import rnn_dynamics as rd

# Small sizes: m inputs, n hidden units.
M = 3
N = 4


def _stack():
    return rd.cells.stack([rd.cells.vanilla(M, N), rd.cells.vanilla(N, N + 1, "sigmoid")])


# (id, factory) pairs. One entry per distinct cell: "linear" is vanilla(..., "linear").
CELL_FACTORIES = [
    ("linear", lambda: rd.cells.linear(M, N, gain=0.9)),
    ("vanilla-tanh", lambda: rd.cells.vanilla(M, N, "tanh", bias_scale=0.3)),
    ("vanilla-sigmoid", lambda: rd.cells.vanilla(M, N, "sigmoid", gain=4.0, bias_scale=0.3)),
    ("vanilla-relu", lambda: rd.cells.vanilla(M, N, "relu", bias_scale=0.3)),
    ("univariate", lambda: rd.cells.univariate(w=1.1)),
    ("irnn", lambda: rd.cells.irnn(M, N)),
    ("lstm", lambda: rd.cells.lstm(M, N)),
    ("gru", lambda: rd.cells.gru(M, N)),
    ("esn", lambda: rd.cells.esn(M, N, spectral_radius=0.9, leak_rate=0.5, bias_scale=0.1)),
    ("stack", _stack),
    ("flax-SimpleCell", lambda: rd.cells.from_flax(nn.SimpleCell(features=N), input_size=M)),
    ("flax-GRUCell", lambda: rd.cells.from_flax(nn.GRUCell(features=N), input_size=M)),
    ("flax-LSTMCell", lambda: rd.cells.from_flax(nn.LSTMCell(features=N), input_size=M)),
    (
        "flax-OptimizedLSTMCell",
        lambda: rd.cells.from_flax(nn.OptimizedLSTMCell(features=N), input_size=M),
    ),
]

ALL_CELLS = [pytest.param(name, factory, id=name) for name, factory in CELL_FACTORIES]

# Cells whose init ignores the key entirely.
KEYLESS_CELLS = {"univariate"}

FLAX_CELLS = {name for name, _ in CELL_FACTORIES if name.startswith("flax-")}


@contextlib.contextmanager
def x64_enabled():
    """Enable float64 inside the block, restoring the previous setting afterwards.

    This flips the *global* flag with ``jax.config.update`` rather than using the
    ``jax.enable_x64`` context manager, which is thread-local: work that jax runs on another
    thread (a callback, an asynchronous dispatch finishing late) would not see it. Tests must
    finish (``np.asarray`` / ``jax.block_until_ready``) every float64 result inside the block.
    """
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (restored afterwards)."""
    with x64_enabled():
        yield


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(scope="module")
def fast_compile():
    """Cut XLA compile time (most of this suite's runtime on a small CPU) for one module.

    Opt in with ``pytestmark = pytest.mark.usefixtures("fast_compile")``. The flag only skips
    XLA's optimisation passes (compile time), not what is computed; it is restored afterwards.
    """
    name = "jax_disable_most_optimizations"
    values = getattr(jax.config, "values", {})
    if name not in values:  # not in this jax: run at normal speed
        yield
        return
    old = values[name]
    jax.config.update(name, True)
    try:
        yield
    finally:
        jax.config.update(name, old)
