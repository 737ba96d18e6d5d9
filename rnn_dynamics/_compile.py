"""One place for backend-specific compile options (a speed knob; results are the same).

XLA:CPU hands dots to YNNPACK by default, which runs the batched (b, n, n) tangent matmuls of
n ≳ 96 on one core while XLA's own dot emitter uses all of them: on a 2-core CPU jacfwd at
n = 128 ran 1.8x faster without it, and ``spectra`` went from 35 to 61 seeds/s (see
benchmarks/PROPOSAL.md). Up to n = 64 YNNPACK is as fast or faster, so it is kept there.

``compiler_options`` are only allowed on a top-level jit, so the option is used only when the
call is not under a user's trace; GPU and TPU always take the plain compilation.
"""
from __future__ import annotations

import jax

from ._checks import is_traced

__all__ = ["jit_dispatch"]

_NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}
_MIN_STATE = 64


class jit_dispatch:
    """``jax.jit(fun, static_argnames=...)`` that, on CPU for state_size > 64 and outside any
    trace, compiles without YNNPACK dots. Call as ``f(state_size, *args, **kwargs)``."""

    def __init__(self, fun, static_argnames):
        self.plain = jax.jit(fun, static_argnames=static_argnames)
        self.fast = jax.jit(fun, static_argnames=static_argnames, compiler_options=_NO_YNN)
        self.option_known = True  # False once an XLA says it has no such option

    def __call__(self, state_size, *args, **kwargs):
        if (
            self.option_known
            and state_size > _MIN_STATE
            and jax.default_backend() == "cpu"
            and not is_traced((args, kwargs))
        ):
            try:
                return self.fast(*args, **kwargs)
            except jax.errors.JaxRuntimeError as e:  # an XLA without this option
                if "compile option" not in str(e):
                    raise
                self.option_known = False
            except ValueError as e:  # called under a user's jit with concrete closures
                if "compiler_options" not in str(e):
                    raise
        return self.plain(*args, **kwargs)
