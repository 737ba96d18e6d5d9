"""Input checks and numerical warnings, run in Python before anything is traced.

Every check looks only at static facts (types, shapes, dtypes, Python values), so it works
the same on concrete arrays and on tracers inside a user's ``jax.jit`` or ``jax.vmap``.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Iterable

import jax
import jax.numpy as jnp
import numpy as np


class NumericalWarning(UserWarning):
    """A result over- or underflowed its floating-point range (see the message for the fix)."""


def float_dtype(dtype=None):
    """``dtype`` if given, else the default float (float32 unless x64 is on)."""
    if dtype is None:
        return jax.dtypes.canonicalize_dtype(jnp.float64)
    return jax.dtypes.canonicalize_dtype(dtype)


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive int, got {value!r} ({type(value).__name__}).")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value}.")
    return int(value)


def check_nonnegative(name: str, value: Any) -> float:
    if isinstance(value, jax.core.Tracer):
        return value
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a non-negative number, got {value!r}.") from None
    if not v >= 0 or math.isinf(v):
        raise ValueError(f"{name}: expected a finite non-negative number, got {value!r}.")
    return v


def check_unit_interval(name: str, value: Any, *, open_left: bool = False) -> float:
    v = check_nonnegative(name, value)
    if v > 1 or (open_left and v == 0):
        lo = "(0" if open_left else "[0"
        raise ValueError(f"{name}: expected a number in {lo}, 1], got {value!r}.")
    return v


def check_choice(name: str, value: Any, valid: Iterable[str]) -> str:
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, valid))}; got {value!r}.")
    return value


def _as_float_array(name: str, x: Any):
    try:
        x = jnp.asarray(x)
    except TypeError:
        raise TypeError(f"{name}: expected an array of floats, got {type(x).__name__}.") from None
    if not jnp.issubdtype(x.dtype, jnp.floating):
        if jnp.issubdtype(x.dtype, jnp.complexfloating):
            raise TypeError(f"{name}: expected real floats, got dtype {x.dtype}.")
        x = x.astype(float_dtype())
    return x


def as_state(cell, h: Any, name: str = "h1"):
    """``h`` as a float array of shape ``(cell.state_size,)``, or a clear error."""
    h = _as_float_array(name, h)
    if h.shape != (cell.state_size,):
        hint = " For several states at once, use jax.vmap." if h.ndim > 1 else ""
        raise ValueError(
            f"{name}: expected shape ({cell.state_size},) (cell.state_size of this "
            f"{cell.name} cell), got {tuple(h.shape)}.{hint}"
        )
    return h


def as_inputs(cell, xs: Any, name: str = "xs"):
    """``xs`` as a float array of shape ``(T-1, cell.input_size)`` with T-1 >= 1."""
    xs = _as_float_array(name, xs)
    if xs.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D array (T-1, input_size) = (T-1, {cell.input_size}), "
            f"got shape {tuple(xs.shape)} (rank {xs.ndim}). For a batch of sequences, use jax.vmap."
        )
    if xs.shape[1] != cell.input_size:
        raise ValueError(
            f"{name}: expected {cell.input_size} features per step (cell.input_size), "
            f"got shape {tuple(xs.shape)}."
        )
    if xs.shape[0] == 0:
        raise ValueError(
            f"{name}: got zero steps (shape {tuple(xs.shape)}); pass at least one input x_2 so "
            f"that ∂h_T/∂h_1 has T-1 >= 1 factors."
        )
    return xs


def is_traced(x) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


_RANGE = {
    "float32": "float32 overflows above about 3.4e38 = e^88.7 and flushes to zero below about "
    "1.4e-45 = e^-103",
    "float64": "float64 overflows above about 1.8e308 = e^709.8 and flushes to zero below about "
    "4.9e-324 = e^-744",
}

FIX = (
    "For the norm's growth use rd.jacobian_norms(..., log10=True), which rescales as it "
    "multiplies and never overflows. For the singular values at any horizon use "
    "rd.log_singular_values(cell, params, h1, xs) (exact logs) or "
    "rd.top_singular_values(..., k=...).log_values (matrix-free, for large n); for growth "
    "rates per step use rd.lyapunov_spectrum(...). For a dense matrix shorten the horizon or, "
    "in float32, enable float64 (jax.config.update('jax_enable_x64', True))."
)


def nonfinite_inputs(**named) -> list[str]:
    """Names (with pytree paths) of the concrete inputs that hold NaN or inf; [] under a trace."""
    bad = []
    for name, tree in named.items():
        if tree is None or is_traced(tree):
            continue
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            a = np.asarray(leaf)
            if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
                bad.append(f"{name}{jax.tree_util.keystr(path)}")
    return bad


def _warn_input(what, bad, stacklevel):
    warnings.warn(
        f"{what} is not finite because of non-finite input: {', '.join(bad)} "
        f"contain{'s' if len(bad) == 1 else ''} NaN or inf. Fix the input; no method can recover this.",
        NumericalWarning,
        stacklevel=stacklevel + 1,
    )


def warn_if_degenerate(J, what: str = "∂h_T/∂h_1", *, inputs: dict | None = None, stacklevel: int = 3) -> None:
    """Warn when a concrete Jacobian is non-finite or exactly zero (likely under/overflow).

    ``inputs`` (name -> pytree) are checked first, so NaN fed in is reported as non-finite
    input, not blamed on the float range. Does nothing on tracers.
    """
    if is_traced(J):
        return
    J = np.asarray(J)
    rng = _RANGE.get(str(J.dtype), "")
    if not np.all(np.isfinite(J)):
        bad = nonfinite_inputs(**(inputs or {}))
        if bad:
            return _warn_input(what, bad, stacklevel)
        warnings.warn(
            f"{what} has non-finite entries: the product of step Jacobians left the range of "
            f"{J.dtype} ({rng}). {FIX}",
            NumericalWarning,
            stacklevel=stacklevel,
        )
    elif J.size and not np.any(J):
        warnings.warn(
            f"{what} is exactly zero. Unless the cell really kills every direction (all ReLU "
            f"units off), the product of step Jacobians underflowed ({rng}). {FIX}",
            NumericalWarning,
            stacklevel=stacklevel,
        )


def warn_if_nan_logs(logs, *, inputs: dict | None = None, stacklevel: int = 3) -> None:
    """Warn when rescaled log-norms came back NaN or +inf (concrete arrays only)."""
    if is_traced(logs):
        return
    logs = np.asarray(logs)
    if np.all(np.isfinite(logs) | (logs == -np.inf)):
        return
    bad = nonfinite_inputs(**(inputs or {}))
    if bad:
        return _warn_input("‖∂h_t/∂h_1‖₂", bad, stacklevel)
    warnings.warn(
        "‖∂h_t/∂h_1‖₂ came back NaN or inf although every input is finite: the trajectory h_t "
        "itself overflowed (an unbounded cell, e.g. linear or ReLU with a large gain). Shorten "
        "the horizon, lower the gain or scale the inputs down.",
        NumericalWarning,
        stacklevel=stacklevel,
    )


def warn_if_norms_lost(logs, norms, *, stacklevel: int = 3) -> None:
    """Warn when finite log-norms came back as 0 or inf in linear scale (concrete arrays only)."""
    if is_traced(norms):
        return
    logs, norms = np.asarray(logs), np.asarray(norms)
    lost = norms[np.isfinite(logs)]
    if np.any((lost == 0) | ~np.isfinite(lost)):
        lo, hi = np.nanmin(logs), np.nanmax(logs)
        warnings.warn(
            f"‖∂h_t/∂h_1‖₂ spans 1e{lo:.0f}..1e{hi:.0f}, beyond the range of {norms.dtype}; "
            f"those entries are 0 or inf. Pass log10=True to get them as log10 values. {FIX}",
            NumericalWarning,
            stacklevel=stacklevel,
        )
