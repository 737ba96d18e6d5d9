"""Jacobian spectra across random seeds, with one compiled function.

Seeds: ``spectra(cell, key, seeds=S, steps=T, ...)`` draws seed i from
``key_i = jax.random.split(key, S)[i]`` with :func:`draw_seed`, which splits ``key_i`` into
``(k_params, k_inputs, k_h1) = jax.random.split(key_i, 3)`` and returns

* ``params = cell.init(k_params)``,
* ``xs = input_scale * jax.random.normal(k_inputs, (T-1, cell.input_size))`` (drawn in float32
  and cast, so x64 on or off gives the same seed),
* ``h1 = cell.initial_state(params)`` if ``h1`` is None; ``h1 * jax.random.normal(k_h1,
  (state_size,))`` if ``h1`` is a number (a standard deviation); ``h1`` itself if it is an array
  of shape (state_size,); row i if it has shape (S, state_size).

So any single seed can be rebuilt by hand with ``draw_seed(cell, jax.random.split(key, S)[i], T)``.
Anything passed explicitly (``params=`` a batch of per-seed params, ``xs=``, an array ``h1``)
replaces the corresponding draw, so ``spectra`` also works on the user's own networks, e.g.
inside a training loss.

Chaotic networks: rebuilding a seed and calling :func:`rnn_dynamics.jacobian_norms` runs a
differently compiled program (other fusion, other summation order) than ``spectra``'s batched
one. Both are correct to rounding per step, but where the dynamics are chaotic (λ_max > 0,
e.g. g = 3) rounding differences in h_t grow like e^(λ_max t) until the two trajectories are
unrelated, and so are their Jacobian products after that. The size of the effect, measured
on a 2-core CPU (tanh, n = 64, 8 inputs, T = 300, 8 seeds, float32): at g = 1 the two agree to
3e-5 in log10 ‖∂h_T/∂h_1‖₂ (median 8e-6); at g = 3 they part by more than 1e-3 after 32-44
steps and end a median 1.25 (at most 4.0) apart in log10, around a median of 32. The seed
distribution is the same; single chaotic seeds are not reproducible across compiled programs
(float64 delays the divergence; it does not remove it).
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._cell import check_cell, check_params, init_many, remember
from ._checks import (
    FIX,
    NumericalWarning,
    as_state,
    check_nonnegative,
    check_positive_int,
    float_dtype,
    is_traced,
)
from ._compile import _under_trace, cell_jit
from ._jacobian import _jacobian, _log_norms, resolve_method

__all__ = ["Spectra", "draw_seed", "spectra", "default_batch_size"]


class Spectra(NamedTuple):
    """Result of :func:`spectra`, one row per seed.

    Attributes:
      log10_norms: (seeds, T-1) log10 ‖∂h_t/∂h_1‖₂ for t = 2..T, from the rescaled scan (never
        overflows); ``None`` when ``curve=False``.
      singular_values: (seeds, state_size) singular values of the dense ∂h_T/∂h_1 from
        ``method``, descending. Entries are 0 or non-finite where the dense product left the
        dtype's range (see :attr:`dense_ok`); ``None`` when ``dense=False``.
    """

    log10_norms: jax.Array | None
    singular_values: jax.Array | None

    @property
    def log10_norm(self) -> jax.Array:
        """(seeds,) log10 ‖∂h_T/∂h_1‖₂: from the curve if computed, else from the dense matrix."""
        if self.log10_norms is not None:
            return self.log10_norms[:, -1]
        return jnp.log10(self.singular_values[:, 0])

    @property
    def growth_rate(self) -> jax.Array:
        """(seeds,) geometric-mean growth per step, ‖∂h_T/∂h_1‖₂^(1/(T-1)) (1 is neutral)."""
        if self.log10_norms is None:
            raise ValueError("growth_rate needs the curve: call spectra(..., curve=True).")
        return 10.0 ** (self.log10_norms[:, -1] / self.log10_norms.shape[1])

    @property
    def dense_ok(self) -> jax.Array:
        """(seeds,) True where the dense ∂h_T/∂h_1 stayed finite and non-zero."""
        if self.singular_values is None:
            raise ValueError("dense_ok needs the dense matrices: call spectra(..., dense=True).")
        sv = self.singular_values
        return jnp.all(jnp.isfinite(sv), axis=-1) & (sv[:, 0] > 0)


def draw_seed(cell, key, steps: int, *, input_scale=1.0, h1=None):
    """Params, initial state and inputs of one seed, exactly as :func:`spectra` draws them.

    Args:
      cell: a Cell.
      key: one PRNG key (``jax.random.split(key, seeds)[i]`` for seed i of a study).
      steps: T; the inputs are x_2..x_T, so ``xs`` has T-1 rows.
      input_scale: standard deviation of the Gaussian inputs (0 for an autonomous network).
      h1: None, a float (standard deviation of a Gaussian h_1) or a (state_size,) array.

    Returns:
      ``(params, h1, xs)`` with h1 (state_size,) and xs (T-1, input_size).

    Example::

        params, h1, xs = rd.draw_seed(cell, jax.random.split(key, 32)[5], 200)
    """
    check_cell(cell)
    steps = _check_steps(steps)
    input_scale = check_nonnegative("input_scale", input_scale)
    return _draw(cell, key, steps, input_scale, _h1_kind(cell, h1, None), h1)


def _check_steps(steps):
    steps = check_positive_int("steps", steps)
    if steps < 2:
        raise ValueError(f"steps: expected T >= 2 (T-1 >= 1 step Jacobians), got {steps}.")
    return steps


def _h1_kind(cell, h1, seeds):
    if h1 is None:
        return "default"
    if isinstance(h1, (int, float)) and not isinstance(h1, bool):
        check_nonnegative("h1", h1)
        return "scale"
    if not isinstance(h1, (jax.Array, np.ndarray)):  # a jax array needs no conversion
        h1 = jnp.asarray(h1)
    if h1.ndim == 0:
        if not is_traced(h1):
            check_nonnegative("h1", float(h1))
        return "scale"
    if h1.shape == (cell.state_size,):
        as_state(cell, h1)
        return "fixed"
    if seeds is not None and h1.shape == (seeds, cell.state_size):
        return "per_seed"
    want = f"({cell.state_size},)" + (f" or ({seeds}, {cell.state_size})" if seeds else "")
    raise ValueError(
        f"h1: expected None, a standard deviation, or an array of shape {want}; "
        f"got shape {tuple(h1.shape)}."
    )


def _normal(key, shape, scale, dt):
    """scale·N(0, 1), the normal drawn in float32: the same draw with and without x64."""
    return jnp.asarray(scale).astype(dt) * jax.random.normal(key, shape, jnp.float32).astype(dt)


def _draw(cell, key, steps, input_scale, h1_kind, h1, params=None, xs=None):
    k_params, k_inputs, k_h1 = jax.random.split(key, 3)
    if params is None:
        params = cell.init(k_params)
    dt = float_dtype()
    if xs is None:
        xs = _normal(k_inputs, (steps - 1, cell.input_size), input_scale, dt)
    if h1_kind == "default":
        h = cell.initial_state(params)
    elif h1_kind == "scale":
        h = _normal(k_h1, (cell.state_size,), h1, dt)
    else:
        h = jnp.asarray(h1, dt)
    return params, h, xs


def default_batch_size(state_size: int, seeds: int) -> int:
    """How many seeds to vmap at once inside ``spectra``'s ``lax.map``.

    Up to n = 64 vmapping wins while a (batch, n, n) float32 carry stays within 128 KiB; above
    that any batch of 4 or more already runs at the machine's matmul rate on CPU, and a wider
    batch only grows the working set. The measurements behind the rule (never slower than a
    Python loop of jitted one-seed calls) are in benchmarks/README.md. Example:
    ``rd.default_batch_size(64, 32)`` is 8.
    """
    return max(1, min(seeds, max(4, 2**15 // (state_size * state_size))))


def _spectra_impl(cell, key, h1, params, xs, input_scale, *, seeds, steps, method, h1_kind,
                  per_seed_xs, batch_size, curve, dense, unroll, svd, serial_svd=False):
    """The compiled study. Its LAPACK calls never run two at a time (see ``_cell.init_many``):

    * params are drawn seed by seed (``init_many``), so an init's decompositions are unbatched;
    * the only LAPACK call inside the seed loop is the curve's per-step SVD, one after another;
    * the dense matrices' singular values are taken after the loop, in one call, or seed by
      seed with ``serial_svd`` (unbatched: what several CPU devices running at once need,
      since batched LAPACK calls on two CPU devices at once can hang XLA:CPU).
    """
    shared_xs = None if per_seed_xs else xs
    S = seeds
    keys = jax.random.split(key, S)
    if params is None:
        params = init_many(cell, jax.vmap(lambda k: jax.random.split(k, 3)[0])(keys))

    def one(args):
        key, h1_i, params_i, xs_i = args
        params_i, h, xs_i = _draw(cell, key, steps, input_scale, h1_kind, h1_i, params_i,
                                  xs_i if per_seed_xs else shared_xs)
        J = _jacobian(cell, params_i, h, xs_i, method=method, unroll=unroll) if dense else None
        logs = None
        if curve:
            logs = _log_norms(cell, params_i, h, xs_i, unroll, svd) / jnp.log(10.0).astype(h.dtype)
        return logs, J

    if h1_kind != "per_seed":
        h1 = jnp.broadcast_to(h1, (S,) + jnp.shape(h1))
    logs, J = jax.lax.map(one, (keys, h1, params, xs if per_seed_xs else None), batch_size=batch_size)
    sv = bad = None
    if dense:
        svd_ = lambda M: jnp.linalg.svd(M, compute_uv=False)
        sv = jax.lax.map(svd_, J) if serial_svd else svd_(J)
        # seeds whose dense matrix left the float range, counted here so that a top-level call
        # reads one scalar back instead of every singular value; unused (and removed by XLA)
        # under a user's trace
        bad = jnp.sum(~Spectra(logs, sv).dense_ok, dtype=jnp.int32)
    return Spectra(logs, sv), bad


_spectra = cell_jit(
    _spectra_impl,
    static_argnames=("seeds", "steps", "method", "h1_kind", "per_seed_xs", "batch_size", "curve", "dense",
                     "unroll", "svd", "serial_svd"),
)


def _leading(name, tree, what):
    sizes = set()
    for a in jax.tree_util.tree_leaves(tree):
        shape = a.shape if isinstance(a, jax.Array) else np.shape(a)  # no numpy call per array
        sizes.add(int(shape[0]) if shape else None)
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"{name}: expected {what} with one leading seed axis on every leaf, got leading "
                         f"sizes {sorted(s for s in sizes if s is not None)}.")
    return sizes.pop()


class _Plan(NamedTuple):
    """What a top-level ``spectra`` call's checks found, to run a call of the same signature."""

    cell: object  # kept alive, so that its id (part of the signature) is not reused
    hyper: object  # the cell's numbers, as the compiled function takes them
    h1: object  # the array passed for h1=None (a zero placeholder); None: the caller's h1
    kw: dict  # the compiled function's settings (seeds, dense, ...)
    sig: tuple  # the signature it was made for
    compiled: object  # jit's executable for these arguments (jax's AOT ``Compiled``)


# Top-level calls seen recently: signature -> _Plan. A signature holds everything the checks
# read: the cell (by identity), every setting with its type, and the structure, shapes and
# dtypes of every array argument (concrete jax arrays only). A call that matches one passed
# the same checks before and goes straight to its compiled function.
_PLANS: dict = {}
_PLANS_MAX = 32
# The latest plan by (cell identity, settings, h1 is None): a guess, taken before the signature.
# Its executable refuses arguments of other structure, shapes or dtypes without tracing them;
# the signature, read while the computation runs, must then equal the plan's, or the result is
# dropped and the call takes the checked way (so a guess never returns what the checks reject).
_GUESS: dict = {}


def _aval(a):
    if isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer):
        return a.shape, a.dtype
    raise TypeError  # not a concrete jax array: no signature


def _signature(cell, key, input_scale, h1, params, xs, settings):
    """A hashable signature of a call, or None when the call has none (numpy or traced
    arguments, a number for h1, a non-number input_scale: the checks then run every time)."""
    if type(input_scale) not in (float, int):
        return None
    try:
        sig = [id(cell), _aval(key), None if h1 is None else _aval(h1), None if xs is None else _aval(xs),
               settings, tuple(map(type, settings)), bool(jax.config.jax_enable_x64)]
        if params is not None:
            leaves, treedef = jax.tree_util.tree_flatten(params)
            sig.append(treedef)
            sig.extend([_aval(a) for a in leaves])
    except TypeError:
        return None
    return tuple(sig)


def _plan_of(sig, plans=_PLANS):
    try:
        return plans.get(sig)
    except TypeError:  # an unhashable setting: no plan
        return None


def _run_plan(plan, key, h1, params, xs, input_scale):
    """``(out, bad)`` from the plan's executable, or None where the call cannot take that way (a
    traced, negative or non-number input_scale, a user's trace, jax.disable_jit) or the executable
    refuses the arguments (other structure, shapes, dtypes or placement: nothing is traced)."""
    if not (type(input_scale) in (float, int) and 0 <= input_scale < np.inf) or _under_trace() \
            or jax.config.jax_disable_jit:
        return None
    try:
        return plan.compiled(plan.hyper, key, plan.h1 if h1 is None else h1, params, xs, float(input_scale))
    except Exception:
        return None


def spectra(
    cell,
    key,
    seeds: int | None = None,
    steps: int | None = None,
    *,
    input_scale: float = 1.0,
    h1=None,
    params=None,
    xs=None,
    method: str = "auto",
    batch_size: int | None = None,
    curve: bool = True,
    dense: bool = True,
    unroll: int = 1,
    svd: bool = True,
    serial_svd: bool = False,
) -> Spectra:
    """Jacobian spectra of ∂h_T/∂h_1 over many random seeds, in one compiled function.

    Args:
      cell: a Cell. May be built from traced numbers (a sweep: ``jax.vmap`` over a function
        that builds the cell and calls ``spectra``).
      key: a PRNG key; seeds are drawn from it as in the module docstring (:func:`draw_seed`).
      seeds: S, number of random networks (default 32, or the leading size of ``params``/``xs``).
      steps: T (inputs x_2..x_T, T-1 step-Jacobian factors); default 100, or from ``xs``.
      input_scale: standard deviation of the Gaussian inputs (may be traced).
      h1: None (``cell.initial_state``), a float (std of a Gaussian h_1), a (state_size,) array,
        or a (S, state_size) array.
      params: None (drawn with ``cell.init``) or a batch of params, every leaf with a leading
        axis of size S (e.g. ``jax.lax.map(cell.init, keys)``, or a trained network's).
      xs: None (drawn), a (T-1, input_size) array shared by all seeds, or (S, T-1, input_size).
      method: how the dense ∂h_T/∂h_1 is computed, as in :func:`rnn_dynamics.jacobian`:
        ``"auto"`` (up to n = 64 the cell's own kernel where it has one, else jacrev; jacfwd
        above), ``"jacfwd"``, ``"jacrev"``, ``"product"``.
      batch_size: seeds vmapped together inside a ``lax.map`` over chunks; default
        :func:`default_batch_size`. 1 is a compiled loop, S a full vmap.
      curve: compute log10 ‖∂h_t/∂h_1‖₂ for every t (the rescaled scan; never overflows).
      dense: compute the dense ∂h_T/∂h_1 and its singular values (turn off for long horizons,
        where the dense matrix leaves the float range).
      unroll: ``lax.scan`` unroll factor.
      svd: how the curve takes each norm (see :func:`rnn_dynamics.jacobian_norms`).
      serial_svd: take the dense singular values seed by seed (unbatched SVDs) instead of in
        one batched call. For your own ``shard_map`` over several CPU devices: batched LAPACK
        calls on two CPU devices at once can hang XLA:CPU (with ``curve=True`` and an exact
        ``svd``, also pass ``batch_size=1``: the curve's per-step SVDs are batched too).

    Returns:
      :class:`Spectra` with ``log10_norms`` (S, T-1) and ``singular_values`` (S, state_size).

    Composes with ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (e.g. of ``.log10_norm.mean()``
    with respect to numbers the cell or ``params`` are built from). Outside a trace, a
    ``NumericalWarning`` says how many seeds' dense matrices left the float range. A top-level
    call with the same cell object, settings, and array shapes and dtypes as a recent one (jax
    arrays, not numpy) skips the argument checks it already passed and runs the compiled
    function directly: it is dispatched first and matched while it runs (a call that does not
    match is checked and run as a first call would be, and its early result dropped).

    Example::

        cell = rd.cells.vanilla(8, 64, "tanh", gain=1.1)
        out = rd.spectra(cell, jax.random.key(0), seeds=32, steps=200)
        out.log10_norm        # (32,) log10 ‖∂h_T/∂h_1‖₂
    """
    settings = (seeds, steps, method, batch_size, curve, dense, unroll, svd, serial_svd)
    gkey = (id(cell), settings, h1 is None)
    guess = _plan_of(gkey, _GUESS)
    ran = None if guess is None else _run_plan(guess, key, h1, params, xs, input_scale)
    if ran is not None:  # dispatched first: the signature is read while the computation runs
        if _signature(cell, key, input_scale, h1, params, xs, settings) == guess.sig:
            return _warn_range(*ran, guess.kw["dense"], guess.kw["seeds"])
        _GUESS.pop(gkey, None)  # accepted what the checks may not (numpy, other setting types): not again
    sig = _signature(cell, key, input_scale, h1, params, xs, settings)
    plan = _plan_of(sig) if sig is not None else None
    ran = None if plan is None else _run_plan(plan, key, h1, params, xs, input_scale)
    if ran is not None:
        remember(_GUESS, gkey, plan, _PLANS_MAX)
        return _warn_range(*ran, plan.kw["dense"], plan.kw["seeds"])
    check_cell(cell)
    xs_in = xs
    inferred = {}
    if params is not None:
        inferred["params"] = _leading("params", params, "a batch of per-seed params")
        check_params(cell, params, leading=1)
    per_seed_xs = False
    if xs is not None:
        if not isinstance(xs, jax.Array):  # a jax array needs no conversion (no dispatched copy)
            xs = jnp.asarray(xs)
        if xs.ndim == 3:
            per_seed_xs = True
            inferred["xs"] = xs.shape[0]
        elif xs.ndim != 2:
            raise ValueError(f"xs: expected (T-1, input_size) or (seeds, T-1, input_size), got shape {tuple(xs.shape)}.")
        if xs.shape[-1] != cell.input_size or xs.shape[-2] < 1:
            raise ValueError(f"xs: expected last axes (T-1 >= 1, {cell.input_size}), got shape {tuple(xs.shape)}.")
        if steps is not None and steps != xs.shape[-2] + 1:
            raise ValueError(f"steps: {steps} does not match xs, which holds T-1 = {xs.shape[-2]} inputs "
                             f"(T = {xs.shape[-2] + 1}); leave steps out.")
        steps = xs.shape[-2] + 1
        xs = xs.astype(float_dtype()) if not jnp.issubdtype(xs.dtype, jnp.floating) else xs
    if seeds is None:
        seeds = next(iter(inferred.values()), 32)
    seeds = check_positive_int("seeds", seeds)
    for name, size in inferred.items():
        if size != seeds:
            raise ValueError(f"{name}: its leading (seed) axis has size {size}, but seeds = {seeds}.")
    steps = _check_steps(100 if steps is None else steps)
    input_scale = check_nonnegative("input_scale", input_scale)
    method = resolve_method(method, cell.state_size, cell)
    batch_size = default_batch_size(cell.state_size, seeds) if batch_size is None else batch_size
    batch_size = min(check_positive_int("batch_size", batch_size), seeds)
    unroll = check_positive_int("unroll", unroll)
    if not (curve or dense):
        raise ValueError("curve, dense: at least one must be True (nothing to compute).")
    kind = _h1_kind(cell, h1, seeds)
    dt = float_dtype()
    if kind == "default":
        h1_arr = np.zeros((), dt)
    elif isinstance(h1, jax.Array) and h1.dtype == dt:
        h1_arr = h1
    else:
        h1_arr = jnp.asarray(h1, dt)
    kw = dict(seeds=seeds, steps=steps, method=method, h1_kind=kind, per_seed_xs=per_seed_xs,
              batch_size=batch_size, curve=bool(curve), dense=bool(dense), unroll=unroll, svd=bool(svd),
              serial_svd=bool(serial_svd))
    jitted, static, hyper = _spectra.resolve(cell, key, h1_arr, params, xs, input_scale, **kw)
    out, bad = jitted(static, hyper, key, h1_arr, params, xs, input_scale, **kw)
    if (sig is not None and xs is xs_in and (h1 is None or (h1_arr is h1 and kind != "scale"))
            and not _under_trace() and not is_traced(hyper)):
        try:  # the executable jit has just built (its trace and compilation are cached: no new work)
            compiled = jitted.lower(static, hyper, key, h1_arr, params, xs, input_scale, **kw).compile()
        except Exception:  # e.g. arguments a lowering cannot take again: no plan
            compiled = None
        if compiled is not None:
            plan = _Plan(cell, hyper, h1_arr if h1 is None else None, kw, sig, compiled)
            remember(_PLANS, sig, plan, _PLANS_MAX)
            remember(_GUESS, gkey, plan, _PLANS_MAX)
    return _warn_range(out, bad, dense, seeds)


def _warn_range(out, bad, dense, seeds):
    if dense and not isinstance(bad, jax.core.Tracer):
        bad = int(np.asarray(bad))  # one scalar read back: waits for the computation
        if bad:
            warnings.warn(
                f"The dense ∂h_T/∂h_1 left the range of {out.singular_values.dtype} for "
                f"{bad} of {seeds} seeds (their singular_values are 0 or non-finite); "
                f"log10_norms is unaffected. {FIX}",
                NumericalWarning,
                stacklevel=3,
            )
    return out
