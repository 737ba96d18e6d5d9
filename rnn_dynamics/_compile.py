"""``cell_jit``: the one way the library compiles a function of a cell.

* The cell is split (:func:`rnn_dynamics._cell.split_cell`): its structure is a static
  argument, its numbers (gain, radius, leak rate, ...) are data. Equal structures share one
  compiled function; a sweep over numbers never recompiles.
* A speed knob for XLA:CPU: its YNNPACK dot path runs the batched (b, n, n) tangent matmuls
  of n ≳ 96 on one core, while XLA's own dot emitter uses all of them (jacfwd at n = 128 ran
  1.8x faster without it on a 2-core CPU; benchmarks/README.md). Top-level calls with
  state_size > 64 on CPU compile without it. Whether this XLA knows the option is probed once
  per process (a tiny compile); inside a user's trace the plain compile is used, since
  ``compiler_options`` only apply to a top-level jit. Results are the same either way.
"""
from __future__ import annotations

import functools

import jax
from jax._src import core as _core  # trace_state_clean has no public name

from ._cell import check_cell, merge_cell, split_cell
from ._checks import is_traced

__all__ = ["cell_jit", "fast_cpu_options"]

_NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}
_MIN_STATE = 64


@functools.lru_cache(maxsize=None)
def _option_supported(backend: str) -> bool:
    if backend != "cpu":
        return False
    try:
        jax.jit(lambda x: x @ x, compiler_options=_NO_YNN).lower(jax.numpy.ones((2, 2))).compile()
    except Exception:  # an XLA without this option
        return False
    return True


def fast_cpu_options() -> dict:
    """The compile options the library uses on CPU for n > 64 (``{}`` where unsupported).

    Pass them to your own top-level jit for the same speed:
    ``jax.jit(f, compiler_options=rd.fast_cpu_options())``.
    """
    return dict(_NO_YNN) if _option_supported(jax.default_backend()) else {}


def _under_trace() -> bool:
    return not _core.trace_state_clean()


def cell_jit(fun=None, *, static_argnames=()):
    """``jax.jit`` for ``fun(cell, *args, **kwargs)``: the cell's structure static, its numbers data.

    Usable as a decorator: ``@cell_jit(static_argnames=("unroll",))``.
    """
    if fun is None:
        return functools.partial(cell_jit, static_argnames=static_argnames)
    static_argnames = tuple(static_argnames)

    def inner(static, hyper, *args, **kwargs):
        return fun(merge_cell(static, hyper), *args, **kwargs)

    plain = jax.jit(inner, static_argnums=0, static_argnames=static_argnames)
    fast = jax.jit(inner, static_argnums=0, static_argnames=static_argnames, compiler_options=_NO_YNN)

    def resolve(cell, *args, **kwargs):
        """``(jitted, static, hyper)``: what ``call`` runs as ``jitted(static, hyper, *args, **kwargs)``."""
        check_cell(cell)
        static, hyper = split_cell(cell)
        if (
            cell.state_size > _MIN_STATE
            and not is_traced((hyper, args, kwargs))
            and not _under_trace()
            and _option_supported(jax.default_backend())
        ):
            return fast, static, hyper
        return plain, static, hyper

    @functools.wraps(fun)
    def call(cell, *args, **kwargs):
        jitted, static, hyper = resolve(cell, *args, **kwargs)
        return jitted(static, hyper, *args, **kwargs)

    call.plain = plain
    call.fast = fast
    call.resolve = resolve
    return call
