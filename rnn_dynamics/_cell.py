"""The one contract every analysis shares: :class:`Cell`, and how a cell is split for ``jit``.

A cell is a value. Its functions are :class:`Fn` objects, module-level kernels bound to
their settings, which compare and hash by value: two cells built by the same factory with
equal arguments are equal and hash equal, so every jit cache hits.

Settings come in two kinds:

* ``static``: what decides shapes and code (sizes, the activation's name, a flax module).
  Hashable; part of the compiled function's identity.
* ``hyper``: numbers (gain, spectral radius, leak rate, scales), a small dict of floats or
  arrays. They are data: :func:`split_cell` lifts them out of a cell so that every analysis
  passes them to its compiled function as arguments. So a sweep over gains compiles once,
  and a factory called with a traced number (inside a user's ``jax.vmap`` or ``jax.jit``)
  builds a cell that every analysis accepts.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

__all__ = ["Cell", "Fn", "Hyper", "BATCH_KERNELS", "JACOBIAN_KERNELS", "batch_step_of", "jacobian_kernel_of", "check_cell", "check_params", "init_many", "remember", "split_cell", "merge_cell", "is_hyper_leaf"]

Params = Any


def is_hyper_leaf(x) -> bool:
    """True for a number that is data (float, array, tracer), False for static settings."""
    if isinstance(x, (bool, int, str)) or x is None:
        return False
    return isinstance(x, (float, np.floating, np.ndarray, jax.Array, jax.core.Tracer))


def _leaf_key(x):
    if isinstance(x, jax.core.Tracer):
        raise TypeError(
            "cell: this cell holds traced hyperparameters (built inside jax.jit or jax.vmap), so "
            "it cannot be a static argument of your own jax.jit. Pass it to rnn_dynamics "
            "functions, which lift its numbers out as data, or build it inside the jitted function."
        )
    a = np.asarray(x)
    return (a.dtype.str, a.shape, a.tobytes())


def _tree_key(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(_leaf_key(x) if is_hyper_leaf(x) else x for x in leaves)


def _read_only(self, *args, **kwargs):
    raise TypeError(
        "Hyper: a cell's hyperparameters are read-only (the cell is a value); build a new cell "
        "with the factory, e.g. rd.cells.vanilla(..., gain=2.0)."
    )


class Hyper(dict):
    """A cell's numeric hyperparameters: a read-only dict that hashes and compares by value (a
    pytree)."""

    __setitem__ = __delitem__ = __ior__ = _read_only
    update = pop = popitem = clear = setdefault = _read_only

    def __reduce__(self):  # copy and pickle rebuild it whole (never item by item)
        return (Hyper, (dict(self),))

    def __hash__(self):
        return hash(_tree_key(dict(self)))

    def __eq__(self, other):
        if not isinstance(other, dict):
            return NotImplemented
        return _tree_key(dict(self)) == _tree_key(dict(other))

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq


jax.tree_util.register_pytree_with_keys(
    Hyper,
    lambda d: (tuple((jax.tree_util.DictKey(k), d[k]) for k in sorted(d)), tuple(sorted(d))),
    lambda keys, values: Hyper(zip(keys, values)),
)


class Fn:
    """A pure function bound to its settings: ``Fn(kernel, static, hyper)(*args)`` calls
    ``kernel(static, hyper, *args)``.

    ``static`` is a hashable tuple, ``hyper`` a pytree of numbers (see the module docstring).
    Two ``Fn`` are equal when their kernel is the same object and their settings are equal.
    """

    __slots__ = ("fn", "static", "hyper", "__weakref__")

    def __init__(self, fn: Callable, static: tuple = (), hyper: Any = None):
        self.fn = fn
        self.static = tuple(static)
        self.hyper = Hyper() if hyper is None else Hyper(hyper) if type(hyper) is dict else hyper

    def __call__(self, *args, **kwargs):
        return self.fn(self.static, self.hyper, *args, **kwargs)

    def _key(self):
        return (self.fn, self.static, _tree_key(self.hyper))

    def __eq__(self, other):
        if not isinstance(other, Fn):
            return NotImplemented
        if self is other:
            return True
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"Fn({getattr(self.fn, '__name__', self.fn)}, static={self.static})"


jax.tree_util.register_pytree_node(
    Fn, lambda f: ((f.hyper,), (f.fn, f.static)), lambda aux, ch: Fn(aux[0], aux[1], ch[0])
)


def _identity(state):
    return state


class Cell(NamedTuple):
    """A recurrent cell: pure functions and static sizes, in the spirit of optax's
    ``GradientTransformation``.

    What every analysis relies on (the contract)::

        params = cell.init(key)              # a pytree of arrays
        h      = cell.initial_state(params)  # flat 1-D state, shape (cell.state_size,)
        h      = cell.step(params, h, x)     # x (cell.input_size,) -> h (cell.state_size,)
        v      = cell.hidden(h)              # (cell.hidden_size,): what a next layer reads

    The state is one flat vector (an LSTM's is ``[h, c]``), so every Jacobian is a plain
    ``(state_size, state_size)`` matrix. Construct by keyword. The other fields are optional:
    ``name`` (a label), ``step_bound(params)`` (a bound on ‖∂h_t/∂h_{t-1}‖₂ for every state and
    input, or None; see :func:`rnn_dynamics.jacobian_bound`), ``layers`` (the sub-cells of a
    :func:`rnn_dynamics.cells.stack`), ``hyper`` (the cell's numeric hyperparameters, for
    reading only: e.g. ``cell.hyper["gain"]``) and ``batch_step(params, H, X)``: the step for a
    batch of states as rows, H (B, state_size) and X (B, input_size) -> (B, state_size), equal
    to ``jax.vmap(step, (None, 0, 0))`` and only a faster way to write it (training runs it;
    None: the vmapped ``step``; a factory's batch step is ignored once ``step`` is replaced,
    so ``cell._replace(step=f)`` trains with ``f``).

    Functions may be plain Python callables (a cell built by hand); the factories in
    :mod:`rnn_dynamics.cells` use :class:`Fn` so that equal settings give equal cells.
    """

    init: Callable[[jax.Array], Params]
    initial_state: Callable[[Params], jax.Array]
    step: Callable[[Params, jax.Array, jax.Array], jax.Array]
    input_size: int
    state_size: int
    hidden_size: int
    name: str = "cell"
    hidden: Callable[[jax.Array], jax.Array] = _identity
    step_bound: Callable[[Params], jax.Array] | None = None
    layers: tuple = ()
    hyper: Any = None
    batch_step: Callable[[Params, jax.Array, jax.Array], jax.Array] | None = None


# batch-step kernels and the step kernel each one batches (filled by the factories' module)
BATCH_KERNELS: dict = {}

# step kernel -> a kernel for the transposed dense Jacobian (∂h_T/∂h_1)ᵀ of that step, called as
# ``kernel(static, hyper, params, h1, xs, unroll)`` (filled by the factories' module)
JACOBIAN_KERNELS: dict = {}


def jacobian_kernel_of(cell):
    """``f(params, h1, xs, unroll) -> (∂h_T/∂h_1)ᵀ`` written for this cell's step, or None (a
    cell whose step is not a library kernel, e.g. after ``cell._replace(step=f)``)."""
    s = cell.step
    if isinstance(s, Fn) and s.fn in JACOBIAN_KERNELS:
        return functools.partial(JACOBIAN_KERNELS[s.fn], s.static, s.hyper)
    return None


def batch_step_of(cell):
    """``cell.batch_step``, or None when it no longer matches ``cell.step``: a library batch step
    (an :class:`Fn` whose kernel is in ``BATCH_KERNELS``) counts only while the cell's step is
    the kernel it batches with the same settings, so ``cell._replace(step=f)`` never trains
    with the old step. A hand-written ``batch_step`` is trusted."""
    b = cell.batch_step
    if isinstance(b, Fn) and b.fn in BATCH_KERNELS:
        s = cell.step
        if not (isinstance(s, Fn) and s.fn is BATCH_KERNELS[b.fn] and s.static == b.static
                and s.hyper == b.hyper):
            return None
    return b


def check_cell(cell) -> None:
    if not isinstance(cell, Cell):
        raise TypeError(
            f"cell: expected an rd.cells.Cell (made by a factory such as rd.cells.vanilla(...)), "
            f"got {type(cell).__name__}."
        )


class _Static(NamedTuple):
    """The hashable part of a cell: its tree structure and its non-numeric leaves."""

    treedef: Any
    leaves: tuple


# the last few cells split, by identity: {id(cell): (cell, static, hyper)}. A cell is an
# immutable value (a NamedTuple of Fn objects and read-only Hyper dicts), so its split never
# changes; holding the cell keeps its id from being reused. Cells with traced numbers are
# never kept (a tracer must not outlive its trace).
_SPLITS: dict = {}
_SPLITS_MAX = 32


def remember(cache: dict, key, value, limit: int = 32) -> None:
    """``cache[key] = value``, first dropping the oldest entry once ``cache`` holds ``limit``."""
    if len(cache) >= limit:
        cache.pop(next(iter(cache)), None)
    cache[key] = value


def split_cell(cell: Cell):
    """``(static, hyper)``: the cell's structure (hashable) and its numbers (a list of leaves).

    ``merge_cell(*split_cell(cell))`` rebuilds the cell; jit with ``static`` static and
    ``hyper`` as data compiles once for every value of the numbers. The split of a cell seen
    recently is reused (flattening a factory's cell costs tens of microseconds per call).
    """
    hit = _SPLITS.get(id(cell))
    if hit is not None and hit[0] is cell:
        return hit[1], list(hit[2])
    leaves, treedef = jax.tree_util.tree_flatten(cell)
    dyn = [x if is_hyper_leaf(x) else None for x in leaves]
    static = _Static(treedef, tuple(None if is_hyper_leaf(x) else x for x in leaves))
    if not any(isinstance(x, jax.core.Tracer) for x in dyn):
        remember(_SPLITS, id(cell), (cell, static, tuple(dyn)), _SPLITS_MAX)
    return static, dyn


def merge_cell(static: _Static, hyper) -> Cell:
    leaves = [h if s is None and h is not None else s for s, h in zip(static.leaves, hyper)]
    return jax.tree_util.tree_unflatten(static.treedef, leaves)


@functools.lru_cache(maxsize=256)
def _param_spec(static: _Static, x64: bool):
    cell = merge_cell(static, [None if s is not None else 0.5 for s in static.leaves])
    return jax.eval_shape(cell.init, jax.random.key(0))


@functools.lru_cache(maxsize=256)
def _flat_spec(static: _Static, x64: bool):
    """``(treedef, ((shape, dtype), ...))`` of ``cell.init``'s params: the fast path's reference."""
    leaves, treedef = jax.tree_util.tree_flatten(_param_spec(static, x64))
    return treedef, tuple((tuple(e.shape), np.dtype(e.dtype)) for e in leaves)


def _leaf_ok(g, shape, dtype, leading) -> bool:
    gs = getattr(g, "shape", None)
    gd = getattr(g, "dtype", None)
    return (gs is not None and tuple(gs[leading:]) == shape and len(gs) == len(shape) + leading
            and gd is not None and np.dtype(gd) == dtype)


def check_params(cell: Cell, params, name: str = "params", leading: int = 0) -> None:
    """Check ``params`` against the structure, shapes and dtypes of ``cell.init(key)``.

    Runs in Python before tracing (shapes and dtypes only: works on tracers too) and names the
    offending leaf. Raises ``ValueError`` (structure, shape) or ``TypeError`` (dtype).
    ``leading``: how many leading (batch) axes every leaf carries before the param's own shape.
    """
    x64 = bool(jax.config.jax_enable_x64)
    try:
        static = split_cell(cell)[0]
        treedef, spec = _flat_spec(static, x64)
    except TypeError:  # a hand-made cell with unhashable parts: no cache
        static = None
    if static is not None:  # fast path: exact structure, shapes and dtypes, nothing to report
        leaves, got_def = jax.tree_util.tree_flatten(params)
        if got_def == treedef and all(_leaf_ok(g, sh, dt, leading) for g, (sh, dt) in zip(leaves, spec)):
            return
        expected = _param_spec(static, x64)
    else:
        expected = jax.eval_shape(cell.init, jax.random.key(0))
    if leading:
        params = jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(np.shape(a)[leading:], jax.numpy.result_type(a)), params)
    exp, exp_def = jax.tree_util.tree_flatten_with_path(expected)
    try:
        got, got_def = jax.tree_util.tree_flatten_with_path(params)
    except Exception:  # pragma: no cover - exotic containers
        got, got_def = [], None
    if got_def != exp_def:
        want = {jax.tree_util.keystr(p) for p, _ in exp}
        have = {jax.tree_util.keystr(p) for p, _ in got}
        missing, extra = sorted(want - have), sorted(have - want)
        detail = "; ".join(
            s for s in (f"missing {', '.join(missing)}" if missing else "",
                        f"unexpected {', '.join(extra)}" if extra else "") if s
        ) or f"expected a pytree like {exp_def}, got {got_def}"
        raise ValueError(
            f"{name}: does not match the structure of cell.init(key) for this {cell.name} cell "
            f"({detail}). Build params with cell.init(key) and edit its arrays."
        )
    for (path, e), (_, g) in zip(exp, got):
        where = f"{name}{jax.tree_util.keystr(path)}"
        shape = tuple(g.shape) if hasattr(g, "shape") else np.shape(g)
        dtype = g.dtype if hasattr(g, "dtype") else np.asarray(g).dtype
        if np.issubdtype(dtype, np.complexfloating) or not np.issubdtype(dtype, np.floating):
            raise TypeError(
                f"{where}: expected a real floating dtype (as cell.init gives, {e.dtype}), got {dtype}. "
                f"Cast it, e.g. params = jax.tree.map(lambda a: a.astype(jnp.float32), params)."
            )
        if shape != tuple(e.shape):
            hint = (" For a batch of params (one per seed), use jax.vmap, or rd.spectra(..., params=...)."
                    if shape[1:] == tuple(e.shape) else "")
            raise ValueError(f"{where}: expected shape {tuple(e.shape)} (from cell.init), got {shape}.{hint}")


def init_many(cell: Cell, keys):
    """Params for many keys, one after another: ``jax.lax.map(cell.init, keys)``.

    Not ``jax.vmap(cell.init)``: an init with several independent LAPACK calls (the orthogonal
    recurrent kernels of flax's LSTM and GRU cells draw one QR each) becomes several *batched*
    LAPACK calls under vmap, which XLA:CPU may run at once; each parallelises its batch on the
    intra-op thread pool and waits for it, and when every pool thread is such a waiter the
    process deadlocks (seen on 2 cores: 0% CPU in ``block_until_ready``). Unbatched calls do
    not wait on the pool. Drawing is cheap next to any analysis, so nothing is lost.

    Args:
      cell: a Cell. keys: (S,) PRNG keys. Returns params with a leading axis of size S.
    """
    return jax.lax.map(cell.init, keys)
