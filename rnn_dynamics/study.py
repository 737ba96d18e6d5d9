"""Studies at scale: grids of cells × numbers × seeds, sharded over devices, stored resumably.

A study is a grid of *configurations* (every combination of the listed ``cell``, ``activation``,
``hidden``, ``inputs``, ``steps``, ``gain`` and ``input_scale``) times ``seeds`` random networks
each. Declare it in Python (:class:`Study`, or a dict through :meth:`Study.from_dict`) or in a
TOML (or JSON) file (:func:`load_config`)::

    study = rd.study.Study(cell="vanilla", hidden=64, steps=300, gain=[0.8, 1.0, 1.5, 2.0],
                           seeds=64, metrics=["norms", "lyapunov"], k=4)
    rd.study.run(study, "out/")          # results.jsonl, arrays/<id>.npz, study.json
    print(rd.study.summary("out/"))      # median/q10/q90 per configuration
    rd.plot.study_phase("out/")          # replot from the store at any time

Metrics:

* ``"norms"``: log10 ‖∂h_t/∂h_1‖₂ for t = 2..T (the rescaled scan, never overflows) and the
  singular values of the dense ∂h_T/∂h_1, via :func:`rnn_dynamics.spectra`.
* ``"dense"``: only the singular values of the dense ∂h_T/∂h_1 (``spectra(..., curve=False)``).
  The curve takes an exact SVD at every step, which costs 20-30× the Jacobian product itself
  (n = 64-256 on a 2-core CPU); "dense" skips it, for large grids that need σ_i(∂h_T/∂h_1)
  only (finite while the product stays within the float range; "norms" includes it).
* ``"lyapunov"``: the ``k`` leading Lyapunov exponents (nats per step) of each seed's driven
  trajectory over the same T-1 steps, via :func:`rnn_dynamics.lyapunov_spectrum`.

Seeds are drawn exactly as :func:`rnn_dynamics.spectra` draws them from
``jax.random.key(seed)`` (see :func:`rnn_dynamics.draw_seed`): seed i of every configuration is
``rd.draw_seed(cell, jax.random.split(jax.random.key(seed), seeds)[i], steps,
input_scale=input_scale)``, with h_1 the cell's initial state. Every configuration reuses the
same seed keys (common random numbers). So any configuration can be rerun by hand with
``rd.spectra(cell, jax.random.key(seed), seeds, steps, input_scale=...)``.

Execution. Configurations with the same *shape* (cell kind, activation, sizes, steps) differ
only in numbers (gain, input scale), which are data: they run in groups of at most
``group_size``, each group one call of one compiled function (a ``lax.map`` over a numbers array,
padded to the group size), so every group of a shape shares one compilation. Seeds are
sharded over all devices: the seed keys are laid out on a one-axis ``jax.sharding.Mesh`` (axis
``"seeds"``) and each device runs its slice (``jax.shard_map``); a seed count that does not
divide the device count is padded and the padding dropped. One device or several give the same
numbers up to float rounding; with ``batch_size=1`` (one seed per chunk everywhere) the singular
values and Lyapunov exponents are bit for bit the same on CPU (tested with 1 and 4 host devices;
the curve's log10 differed by at most 2.4e-7 for vanilla cells). On several *CPU* devices (a
CPU's cores exposed with ``jax_num_cpu_devices``, or ``rnn-dynamics sweep --cpu-devices``) only
shapes with a state of at most 64 are split over them; larger ones run on the first device,
whose matmuls already use every core (measured: benchmarks/README.md; each record's
``device_count`` says how many devices its configuration ran on). There every SVD is unbatched
(batched LAPACK calls on two CPU devices at once can hang XLA:CPU): the dense singular values
are taken seed by seed, and with the curve (``"norms"``) each device runs its seeds one at a time.

Store (folder ``out``)::

    study.json        schema "rnn_dynamics.study", schema_version, the full config, its hash
    results.jsonl     one record per (configuration, seed): every scalar metric, the full
                      configuration, the seed index, library and jax versions, device kind and
                      the number of devices the configuration ran on
    arrays/<id>.npz   per configuration: log10_norms (S, T-1) ("norms"), singular_values
                      (S, n) ("norms", "dense"), lyapunov (S, k) ("lyapunov")

Results are written group by group (arrays by temporary file and ``os.replace``, records in one
append), each group while the next one computes. An interrupted study (Ctrl-C, ``kill -9``)
loses at most the groups in flight (the one computing and the one being written): rerunning the
same study skips the finished configurations, drops any half-written group and never duplicates
a record. Writes are not fsync-ed one by one (that cost more than a small group's whole
computation); after a crash of the machine itself, the rerun checks that every finished
configuration's arrays file opens and holds every seed, and recomputes any that does not. A
folder that holds another study (its hash differs) or another schema version is refused.

Several hosts (not yet measured on a GPU or TPU). Start one process per GPU (or per TPU host),
each running the same script; ``jax.distributed.initialize()`` finds the coordinator (from
SLURM, Open MPI or the TPU metadata), the mesh then spans every device of every process, seeds
are split across all of them, results are gathered, and only process 0 writes the store::

    # run_study.py
    import jax
    jax.distributed.initialize()
    import rnn_dynamics as rd
    rd.study.run("examples/sweep_gpu.toml", "out", progress=False)

On a GPU node with 8 GPUs (Open MPI, one process per GPU)::

    mpirun -np 8 python3 run_study.py

On a TPU pod slice (one process per host)::

    gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command="python3 run_study.py"
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from . import cells as _cells
from . import store as _store
from ._cell import init_many
from ._checks import FIX, NumericalWarning, check_choice, float_dtype
from ._compile import _MIN_STATE, fast_cpu_options
from ._devices import several_cpu
from ._spectra import _draw, default_batch_size, spectra
from ._sweep import default_sweep_batch
from .lyapunov import lyapunov_spectrum

__all__ = [
    "Study", "METRICS", "SCHEMA", "SCHEMA_VERSION", "load_config", "configurations", "run",
    "read", "summary",
]

SCHEMA = "rnn_dynamics.study"
SCHEMA_VERSION = 1
METRICS = ("norms", "dense", "lyapunov")
_SHAPE_KEYS = ("cell", "activation", "init", "hidden", "inputs", "steps")
_NUMBER_KEYS = ("gain", "input_scale")
_WITH_ACTIVATION = ("vanilla", "univariate")
_WITH_INIT = _cells.INIT_KINDS
_AXIS = "seeds"


# ----------------------------------------------------------------------------------------------
# Declaring a study


def _as_list(name, value, what):
    if isinstance(value, (list, tuple)):
        items = list(value)
        if not items:
            raise ValueError(f"{name}: expected {what} or a non-empty list of them, got an empty list.")
    else:
        items = [value]
    return items


def _no_repeats(name, items):
    seen = set()
    for v in items:
        if v in seen:
            raise ValueError(f"{name}: the value {v!r} is listed twice; list each value once.")
        seen.add(v)
    return tuple(items)


def _ints(name, value, least):
    items = _as_list(name, value, "an int")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name}: expected an int >= {least} (or a list of them), got {v!r} "
                            f"({type(v).__name__}).")
        if v < least:
            raise ValueError(f"{name}: expected an int >= {least} (or a list of them), got {v}.")
    return _no_repeats(name, [int(v) for v in items])


def _numbers(name, value):
    items = _as_list(name, value, "a number")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name}: expected non-negative numbers, got {v!r} ({type(v).__name__}).")
        if not (math.isfinite(float(v)) and float(v) >= 0):
            raise ValueError(f"{name}: expected finite non-negative numbers, got {v!r}. Remove it "
                             f"from the list.")
        out.append(float(v))
    return _no_repeats(name, out)


def _choices(name, value, allowed):
    items = _as_list(name, value, "a string")
    for v in items:
        check_choice(name, v, allowed)
    return _no_repeats(name, items)


@dataclasses.dataclass(frozen=True)
class Study:
    """A study: every combination of the listed settings, ``seeds`` random networks each.

    Every field but ``seeds``, ``seed``, ``metrics`` and ``k`` takes one value or a list;
    lists are normalised to tuples and validated on construction (before any computation).

    Attributes:
      cell: kind(s) of cell, from ``rd.cells.KINDS`` (built with ``rd.cells.from_gain``).
      activation: for ``vanilla`` and ``univariate`` cells, from ``rd.cells.ACTIVATIONS``
        (ignored by the other kinds).
      init: recurrent initialiser(s) of ``vanilla`` and ``linear`` cells, from
        ``rd.cells.INITS``: ``"default"`` (Gaussian, W_ij ~ N(0, g²/n)), ``"orthogonal"``
        (g times a random orthogonal matrix), ``"identity"`` (g·I); the other kinds always
        use their own (``"default"``).
      hidden: hidden size(s) n. inputs: input size(s) m. steps: T (>= 2): T-1 step Jacobians.
      gain: the cell's one number (``rd.cells.GAIN_MEANING``), non-negative.
      input_scale: std of the Gaussian inputs x_t, non-negative.
      seeds: random networks per configuration. seed: the study's PRNG seed.
      h1: the initial state: 0 (default) is the cell's own (zeros for the vanilla cells, so an
        autonomous network, input_scale = 0, stays at its fixed point 0); a positive number is
        the standard deviation of a Gaussian h_1 per seed, drawn as ``rd.spectra(...,
        h1=std)`` draws it (for autonomous and chaotic studies).
      metrics: a subset of :data:`METRICS` (``"norms"``, ``"dense"``, ``"lyapunov"``).
      k: Lyapunov exponents per seed (with ``"lyapunov"``), at most the state size.

    Example::

        s = rd.study.Study(cell="vanilla", hidden=32, steps=100, gain=[1.0, 2.0], seeds=8)
        len(rd.study.configurations(s))     # 2
    """

    cell: tuple = ("vanilla",)
    activation: tuple = ("tanh",)
    init: tuple = ("default",)
    hidden: tuple = (64,)
    inputs: tuple = (8,)
    steps: tuple = (100,)
    gain: tuple = (1.0,)
    input_scale: tuple = (1.0,)
    seeds: int = 32
    seed: int = 0
    metrics: tuple = ("norms",)
    k: int = 1
    h1: float = 0.0

    def __post_init__(self):
        s = object.__setattr__
        s(self, "cell", _choices("cell", self.cell, _cells.KINDS))
        s(self, "activation", _choices("activation", self.activation, _cells.ACTIVATIONS))
        s(self, "init", _choices("init", self.init, _cells.INITS))
        if set(self.init) != {"default"} and not set(self.cell) & set(_WITH_INIT):
            raise ValueError(f"init: {[i for i in self.init if i != 'default']} apply to "
                             f"{' and '.join(_WITH_INIT)} cells only, and the study lists "
                             f"{list(self.cell)}. Remove init or add one of those cells.")
        s(self, "hidden", _ints("hidden", self.hidden, 1))
        s(self, "inputs", _ints("inputs", self.inputs, 1))
        s(self, "steps", _ints("steps", self.steps, 2))
        s(self, "gain", _numbers("gain", self.gain))
        s(self, "input_scale", _numbers("input_scale", self.input_scale))
        for name in ("seeds", "seed", "k"):
            v = getattr(self, name)
            least = 0 if name == "seed" else 1
            if isinstance(v, (list, tuple)):
                raise TypeError(f"{name}: expected one int >= {least}, got a list {list(v)!r}.")
            s(self, name, _ints(name, v, least)[0])
        s(self, "metrics", _choices("metrics", self.metrics, METRICS))
        if isinstance(self.h1, (list, tuple)):
            raise TypeError(f"h1: expected one non-negative number, got a list {list(self.h1)!r}.")
        s(self, "h1", _numbers("h1", self.h1)[0])
        if "lyapunov" in self.metrics:
            for shape in _shapes(self):
                size = _probe(shape).state_size
                if self.k > size:
                    raise ValueError(
                        f"k: expected at most the state size, but the {shape['cell']} cell with "
                        f"hidden = {shape['hidden']} has state size {size} and k = {self.k}. "
                        f"Lower k or raise hidden.")

    @classmethod
    def from_dict(cls, config: dict) -> "Study":
        """A :class:`Study` from a dict of settings (e.g. a parsed TOML table); unknown keys are
        refused with the list of known ones. Example:
        ``rd.study.Study.from_dict({"gain": [1, 2], "seeds": 4})``."""
        if isinstance(config, Study):
            return config
        if not isinstance(config, dict):
            raise TypeError(f"config: expected a dict of settings or a Study, got "
                            f"{type(config).__name__}.")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ValueError(f"config: unknown key(s) {', '.join(map(repr, unknown))}; the known "
                             f"keys are {', '.join(known)}.")
        return cls(**config)

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict (lists for tuples): what the store keeps and hashes.
        ``init`` and ``h1`` are left out at their defaults, so stores written before they
        existed keep their hash."""
        out = {f.name: list(v) if isinstance(v, tuple) else v
               for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}
        if out["init"] == ["default"]:
            del out["init"]
        if out["h1"] == 0.0:
            del out["h1"]
        return out

    @property
    def hash(self) -> str:
        """A 16-hex-digit hash of :meth:`to_dict`: two studies with equal settings share it."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_config(path) -> Study:
    """Read a study from a TOML file (Python >= 3.11's ``tomllib``, or ``tomli``) or a JSON file.

    The file's top level holds the :class:`Study` keys, e.g.::

        cell = "vanilla"
        hidden = 64
        steps = 300
        gain = [0.8, 1.0, 1.5]
        seeds = 32
        metrics = ["norms", "lyapunov"]

    Example: ``rd.study.load_config("examples/sweep_small.toml")``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config: no such file {str(path)!r}.")
    raw = path.read_bytes()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(raw.decode("utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"config: {path} is not valid JSON ({e}).") from None
    else:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python < 3.11
            try:
                import tomli as tomllib
            except ModuleNotFoundError:
                raise ValueError(f"config: reading TOML ({path}) needs Python >= 3.11 or the "
                                 f"tomli package; write the config as JSON instead.") from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config: {path} is not valid TOML ({e}).") from None
    return Study.from_dict(data)


def _shapes(study: Study) -> list[dict]:
    out, seen = [], set()
    for cell, act, init, n, m, T in itertools.product(study.cell, study.activation, study.init,
                                                      study.hidden, study.inputs, study.steps):
        act = act if cell in _WITH_ACTIVATION else None
        init = init if cell in _WITH_INIT else "default"
        if cell == "univariate":
            n = m = 1
        key = (cell, act, init, n, m, T)
        if key not in seen:
            seen.add(key)
            out.append(dict(zip(_SHAPE_KEYS, key)))
    return out


def _probe(shape: dict):
    return _cells.from_gain(shape["cell"], shape["inputs"], shape["hidden"], 1.0,
                            shape["activation"] or "tanh", shape["init"])


def _config_id(c: dict) -> str:
    act = f"-{c['activation']}" if c["activation"] else ""
    act += f"-{c['init']}" if c.get("init", "default") != "default" else ""
    return (f"{c['cell']}{act}-m{c['inputs']}-n{c['hidden']}-T{c['steps']}"
            f"-g{c['gain']!r}-x{c['input_scale']!r}")


def configurations(study) -> list[dict]:
    """Every configuration of ``study`` (a :class:`Study` or dict), in run order.

    Returns:
      A list of dicts with keys ``id`` (a file-name-safe label, e.g.
      ``"vanilla-tanh-m8-n64-T100-g1.5-x1.0"``; a non-default init is added after the
      activation, e.g. ``"vanilla-tanh-orthogonal-m8-..."``), ``cell``, ``activation`` (None for
      kinds without one), ``init``, ``hidden``, ``inputs``, ``steps``, ``gain``, ``input_scale``. A ``univariate`` cell
      has hidden = inputs = 1.

    Example: ``[c["id"] for c in rd.study.configurations({"gain": [1, 2], "seeds": 4})]``.
    """
    study = Study.from_dict(study)
    out = []
    for shape in _shapes(study):
        for g, x in itertools.product(study.gain, study.input_scale):
            c = dict(shape, gain=g, input_scale=x)
            out.append({"id": _config_id(c), **c})
    return out


# ----------------------------------------------------------------------------------------------
# The compiled group


def _group_impl(numbers, key_data, *, kind, inputs, hidden, activation, init, steps, metrics, k,
                h1_scale, batch_size, serial_svd, number_batch, mesh):
    """Every metric for each row (gain, input_scale) of ``numbers`` (G, 2) and each seed key.

    ``key_data`` (S_pad, ...) is laid out over ``mesh``'s seed axis; each device computes its
    own seeds. Returns a dict of (G, S_pad, ...) arrays, sharded on the seed axis.
    """

    def local(numbers, key_data):
        keys = jax.random.wrap_key_data(key_data)
        S = keys.shape[0]

        def per_number(row):
            gain, scale = row[0], row[1]
            cell = _cells.from_gain(kind, inputs, hidden, gain, activation, init)
            k_params = jax.vmap(lambda kk: jax.random.split(kk, 3)[0])(keys)
            params = init_many(cell, k_params)  # seed by seed: never a batched LAPACK call
            h1_kind = "scale" if h1_scale > 0 else "default"
            _, h1, xs = jax.vmap(lambda kk, p: _draw(cell, kk, steps, scale, h1_kind, h1_scale, p))(
                keys, params)
            out = {}
            if "norms" in metrics or "dense" in metrics:
                sp = spectra(cell, keys[0], seeds=S, steps=steps, params=params, xs=xs,
                             h1=h1 if h1_scale > 0 else None, batch_size=batch_size,
                             curve="norms" in metrics, serial_svd=serial_svd)
                if "norms" in metrics:
                    out["log10_norms"] = sp.log10_norms
                out["singular_values"] = sp.singular_values
            if "lyapunov" in metrics:
                out["lyapunov"] = jax.lax.map(
                    lambda a: lyapunov_spectrum(cell, a[0], a[1], a[2], k=k).exponents,
                    (params, h1, xs))
            return out

        return jax.lax.map(per_number, numbers, batch_size=number_batch)

    f = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(_AXIS)), out_specs=P(None, _AXIS),
                      check_vma=False)
    return f(numbers, key_data)


_STATIC = ("kind", "inputs", "hidden", "activation", "init", "steps", "metrics", "k", "h1_scale", "batch_size",
           "serial_svd", "number_batch", "mesh")


@functools.lru_cache(maxsize=None)
def _group_jit(fast: bool):
    """The jitted group (one per compile-option set): the numbers and seed keys are data, so
    every group of a shape and size shares one compilation."""
    return jax.jit(_group_impl, static_argnames=_STATIC,
                   compiler_options=fast_cpu_options() if fast else None)


def _mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), (_AXIS,))


def _shape_mesh(mesh: Mesh, state_size: int) -> Mesh:
    """The mesh a shape's groups run on: ``mesh``, except on several CPU devices of one process
    (a CPU's cores exposed as devices) for state sizes above 64, which run on the first device
    alone. Above n = 64 the library compiles without XLA's YNNPACK dots and XLA's own dots
    already use every core, so splitting the seeds over the cores only makes them compete; up
    to n = 64 the seeds' matmuls are too small to fill the cores, and two devices run them side
    by side (the measurements: ``sweep.py`` in benchmarks/README.md)."""
    if (state_size > _MIN_STATE and jax.process_count() == 1 and several_cpu(mesh.devices.flat)):
        return _one_device_mesh(mesh.devices.flat[0])
    return mesh


@functools.lru_cache(maxsize=8)
def _one_device_mesh(device) -> Mesh:
    return Mesh(np.asarray([device]), (_AXIS,))


@functools.lru_cache(maxsize=64)
def _key_data(seed: int, seeds: int, impl: str) -> np.ndarray:
    """``key_data(split(key(seed), seeds))`` as a read-only numpy array. A pure function of its
    arguments (the PRNG implementation among them), cached: drawn op by op it costs ~0.7 ms,
    a fifth of a small study's whole computation."""
    data = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(seed), seeds)))
    data.flags.writeable = False
    return data


def _seed_keys(study: Study, mesh: Mesh):
    """The seed keys' data, padded to a multiple of the device count and laid out on ``mesh``."""
    return _laid_out_keys(study.seed, study.seeds, str(jax.config.jax_default_prng_impl), mesh)


@functools.lru_cache(maxsize=16)
def _laid_out_keys(seed: int, S: int, impl: str, mesh: Mesh):
    """A pure function of its arguments, cached (an immutable device array laid out once)."""
    D = mesh.devices.size
    pad = -S % D
    data = _key_data(seed, S, impl)
    if pad:
        data = np.concatenate([data, np.repeat(data[-1:], pad, axis=0)])
    sharding = NamedSharding(mesh, P(_AXIS))
    return jax.make_array_from_callback(data.shape, sharding, lambda idx: data[idx])


def _run_group(study: Study, shape: dict, numbers, key_data, mesh: Mesh, batch_size=None):
    """The raw outputs of one group: dict of (G, S_pad, ...) arrays, sharded over seeds."""
    cell = _probe(shape)
    D = mesh.devices.size
    local = key_data.shape[0] // D
    batch = default_batch_size(cell.state_size, study.seeds) if batch_size is None else batch_size
    batch = min(batch, local)
    serial = several_cpu(mesh.devices.flat)
    if serial and "norms" in study.metrics:
        # Every decomposition unbatched: batched LAPACK calls on two CPU devices at once can
        # hang XLA:CPU (a (16, 128, 128) SVD per device did, on 2 cores with 2 devices). The
        # curve's per-step SVDs run inside the seed batch, so the seeds go one at a time;
        # "dense" alone keeps its batch and takes its singular values seed by seed.
        batch = 1
    numbers = np.asarray(numbers, float_dtype())
    fast = (cell.state_size > _MIN_STATE and jax.default_backend() == "cpu"
            and bool(fast_cpu_options()))
    return _group_jit(fast)(
        numbers, key_data, kind=shape["cell"], inputs=shape["inputs"], hidden=shape["hidden"],
        activation=shape["activation"] or "tanh", init=shape["init"], steps=shape["steps"],
        metrics=tuple(m for m in METRICS if m in study.metrics), k=study.k, h1_scale=study.h1,
        batch_size=batch, serial_svd=serial,
        number_batch=default_sweep_batch(len(numbers)), mesh=mesh)


def _gather(tree):
    if jax.process_count() > 1:  # pragma: no cover - multi-host only
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree_util.tree_map(np.asarray, tree)


# ----------------------------------------------------------------------------------------------
# The store


def _manifest(study: Study) -> dict:
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "hash": study.hash,
            "config": study.to_dict(), "configurations": [c["id"] for c in configurations(study)],
            "environment": _store.environment()}


def _check_manifest(path: Path, study: Study | None) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"out: {path} is not a readable study manifest ({e}); choose another "
                         f"folder.") from None
    if not isinstance(m, dict) or m.get("schema") != SCHEMA:
        raise ValueError(f"out: {path} is not an rnn_dynamics study manifest (expected \"schema\": "
                         f"{SCHEMA!r}); choose another folder.")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"out: {path} has study schema version {m.get('schema_version')!r}, this "
                         f"rnn_dynamics reads version {SCHEMA_VERSION}; choose another folder or "
                         f"use the version that wrote it.")
    if study is not None and m.get("hash") != study.hash:
        old = m.get("config", {})
        new = study.to_dict()
        diff = "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now"
                         for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
        raise ValueError(f"out: {path.parent} holds a different study (hash {m.get('hash')}, this "
                         f"one {study.hash}; {diff or 'other settings'}). Choose another folder, "
                         f"or delete that one to start over.")
    return m


def _arrays_ok(path: Path, study: Study) -> bool:
    """Whether ``path`` is a whole arrays file of this study: it opens as an npz (a file cut
    short or zero-filled by a machine crash does not) and holds one row per seed."""
    try:
        with np.load(path) as z:
            return z["seed_index"].shape == (study.seeds,)
    except Exception:
        return False


def _recover(out: Path, study: Study) -> set:
    """The ids of the finished configurations; rewrites results.jsonl without half-written
    groups, repeats or a partial last line, and removes stale temporary files."""
    for tmp in list(out.glob(".*.tmp")) + list((out / "arrays").glob(".*.tmp")):
        tmp.unlink()
    path = out / "results.jsonl"
    if not path.exists():
        return set()
    text = path.read_text(encoding="utf-8")
    by_id: dict = {}
    clean = text.endswith("\n") or not text
    for line in text.splitlines(keepends=True):
        try:
            r = json.loads(line) if line.endswith("\n") else None
        except json.JSONDecodeError:
            r = None
        if not isinstance(r, dict) or "config_id" not in r or "seed_index" not in r:
            clean = False
            continue
        seen = by_id.setdefault(r["config_id"], {})
        if r["seed_index"] in seen:
            clean = False
            continue
        seen[r["seed_index"]] = line
    done = {cid for cid, seen in by_id.items()
            if set(seen) == set(range(study.seeds)) and _arrays_ok(out / "arrays" / f"{cid}.npz", study)}
    if not clean or set(by_id) != done:
        order = [c["id"] for c in configurations(study) if c["id"] in done]
        body = "".join(by_id[cid][i] for cid in order for i in range(study.seeds))
        _store.write_bytes_atomic(path, body.encode("utf-8"))
    return done


def _json_scalar(v) -> str:
    """``json.dumps(v)`` for None, a bool, an int or a finite float."""
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(int(v))


def _column(values) -> list:
    """A numpy column as JSON numbers (NaN and ±inf -> None), one conversion for all seeds."""
    return [x if math.isfinite(x) else None for x in np.asarray(values, float).tolist()]


def _record_frame(study: Study, config: dict, env: dict) -> tuple[str, str]:
    """The parts of a configuration's record lines that hold no result: the text before the seed
    index and the text after the metrics. Built while the configuration computes."""
    cfg = {k: v for k, v in config.items() if k != "id"}
    cfg.update(seeds=study.seeds, seed=study.seed, metrics=list(study.metrics), k=study.k)
    if study.h1:
        cfg["h1"] = study.h1
    cfg_text = json.dumps(_store.to_json(cfg), allow_nan=False, separators=(",", ":"))
    env_text = json.dumps(_store.to_json(dict(
        rnn_dynamics=env["rnn_dynamics"], jax=env["jax"], platform=env["platform"],
        device_kind=env["device_kind"], device_count=env["device_count"])),
        allow_nan=False, separators=(",", ":"))
    head = '{"config_id":' + json.dumps(config["id"]) + ',"seed_index":'
    tail = ',"config":' + cfg_text + "," + env_text[1:] + "\n"
    return head, tail


def _record_lines(study: Study, frame: tuple[str, str], arrays: dict) -> list[str]:
    """One record per seed, as JSON lines, built column-wise: the configuration's text (its
    ``frame``, from :func:`_record_frame`) is spliced into every seed's line and each metric is
    converted once for all seeds (rather than one conversion and ``json.dumps`` per record;
    timings in benchmarks/README.md)."""
    S = study.seeds
    cols: dict = {}
    if "log10_norms" in arrays:
        curve = np.asarray(arrays["log10_norms"])[:S]
        last = curve[:, -1]  # in the arrays' dtype, as one record at a time computed it
        cols["log10_norm"] = _column(last)
        T1 = curve.shape[1]
        with np.errstate(over="ignore"):  # per seed, as numpy's scalar power rounds it
            cols["growth_rate"] = _column([10.0 ** (x / T1) for x in last])
    if "singular_values" in arrays:
        sv = np.asarray(arrays["singular_values"])[:S]
        ok = np.all(np.isfinite(sv), axis=1) & (sv[:, 0] > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            top, bottom = np.log10(sv[:, 0]), np.log10(sv[:, -1])
        cols["dense_ok"] = ok.tolist()
        cols["log10_sigma_max"] = [v if o else None for v, o in zip(_column(top), ok)]
        cols["log10_sigma_min"] = [v if o else None for v, o in zip(_column(bottom), ok)]
    if "lyapunov" in arrays:
        ex = np.asarray(arrays["lyapunov"])[:S]
        cols["lambda_max"] = _column(ex[:, 0])
        cols["lyapunov_sum"] = _column(ex.sum(axis=1))
    head, tail = frame
    head_hash = ',"study_hash":' + json.dumps(study.hash)
    names = [(',"' + name + '":', col) for name, col in cols.items()]
    # the text json.dumps gives for the same dict (finite floats by repr), a line at a time
    return [head + str(i) + head_hash + "".join(k + _json_scalar(col[i]) for k, col in names) + tail
            for i in range(S)]


def _save_group(out: Path, study: Study, group: list[dict], outputs: dict, frames: list) -> None:
    """Arrays first (temporary file, then ``os.replace``), then the group's records in one
    append. No fsync: a killed process loses nothing the kernel has accepted, and after a crash
    of the machine itself :func:`_recover` checks every finished configuration's records and
    arrays, so a torn write is recomputed, never read. ``frames``: each configuration's
    :func:`_record_frame`."""
    lines = []
    seed_index = np.arange(study.seeds)
    for j, (c, frame) in enumerate(zip(group, frames)):
        arrays = {name: v[j, :study.seeds] for name, v in outputs.items()}
        data = _store.npz_bytes({"seed_index": seed_index, **arrays})
        _store.write_bytes_atomic(out / "arrays" / f"{c['id']}.npz", data, sync=False)
        lines += _record_lines(study, frame, arrays)
    with open(out / "results.jsonl", "a", encoding="utf-8") as f:  # one write
        f.write("".join(lines))


def _group_rows(group: list[dict], size: int) -> list[list]:
    """The (gain, input_scale) rows of a group, padded with its last row to ``size``."""
    rows = [[c["gain"], c["input_scale"]] for c in group]
    return rows + [rows[-1]] * (size - len(group))


def _groups(study: Study, todo: list[dict], group_size: int):
    """Configurations to compute, by shape, in groups of equal size (the last one padded)."""
    by_shape: dict = {}
    for c in todo:
        by_shape.setdefault(tuple(c[k] for k in _SHAPE_KEYS), []).append(c)
    for shape_key, cs in by_shape.items():
        chunks = math.ceil(len(cs) / group_size)
        size = math.ceil(len(cs) / chunks)
        for i in range(0, len(cs), size):
            yield dict(zip(_SHAPE_KEYS, shape_key)), cs[i:i + size], size


def run(study, out, *, progress: bool | None = None, group_size: int = 16,
        batch_size: int | None = None, on_group: Callable | None = None,
        should_stop: Callable | None = None) -> Path:
    """Run (or resume) ``study`` into the folder ``out``; returns ``out`` as a Path.

    Args:
      study: a :class:`Study`, a dict of settings, or a path to a TOML/JSON config.
      out: the store folder (created if missing). If it already holds this study, the
        finished configurations are skipped; if it holds another study or another schema
        version, a ``ValueError`` says so and nothing is computed.
      progress: a tqdm bar over configurations (seeds/s, ETA) on stderr; default: only when
        stderr is a terminal.
      group_size: configurations per compiled call at most (they are split into equal groups,
        the last padded; every group of a shape shares one compilation).
      batch_size: seeds vmapped together on each device (``rd.spectra``'s batch_size); default
        :func:`rnn_dynamics.default_batch_size`, at most the seeds per device. Other device
        counts give other loop and batch shapes, which round differently: measured on CPU in
        float32 (n = 4, T = 9, 1 vs 4 devices), log10 norms agreed to 2.4e-7 and singular
        values to 3.3e-6·σ_max; the Lyapunov exponents were bit-identical.
      on_group: called as ``on_group(done, total)`` after each group is saved.
      should_stop: called before each group; when it returns True the study stops (the
        finished groups are saved) and ``run`` returns.

    Results: see the module docstring; read them with :func:`read`, :func:`summary` and the
    ``rd.plot.study_*`` functions. A ``NumericalWarning`` says how many seeds' dense
    ∂h_T/∂h_1 left the float range or gave non-finite exponents.

    Example (n = 8, 3 gains, 4 seeds, T = 50: 2.0 s, compilation included, on a shared 2-core
    AMD EPYC)::

        rd.study.run({"hidden": 8, "steps": 50, "gain": [0.5, 1, 2], "seeds": 4}, "out")
    """
    if isinstance(study, (str, os.PathLike)):
        study = load_config(study)
    study = Study.from_dict(study)
    for name, v in (("group_size", group_size), ("batch_size", batch_size)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name}: expected a positive int, got {v!r}.")
    out = Path(out)
    writer = jax.process_index() == 0
    manifest = out / "study.json"
    fresh = not manifest.exists()
    if not fresh:
        _check_manifest(manifest, study)
    configs = configurations(study)
    done = _recover(out, study) if writer else set()
    if jax.process_count() > 1:  # pragma: no cover - multi-host: every process runs the same groups
        from jax.experimental import multihost_utils

        mask = np.array([c["id"] in done for c in configs])
        mask = np.asarray(multihost_utils.broadcast_one_to_all(mask))
        done = {c["id"] for c, d in zip(configs, mask) if d}
    todo = [c for c in configs if c["id"] not in done]
    mesh = _mesh()
    groups = iter(_groups(study, todo, group_size))

    def launch():
        """Dispatch the next group (asynchronously); None when done or asked to stop."""
        if should_stop is not None and should_stop():
            return None
        item = next(groups, None)
        if item is None:
            return None
        shape, group, size = item
        rows = _group_rows(group, size)
        m = _shape_mesh(mesh, _probe(shape).state_size)
        raw = _run_group(study, shape, rows, _seed_keys(study, m), m, batch_size)
        return group, time.perf_counter(), m.devices.size, raw

    # One group computes at a time; the host's work overlaps it: the manifest and the folder
    # while the first group runs, each group's checks and writes while the next one runs.
    pending = launch()
    if writer:
        if fresh:
            _store.save_json(manifest, _manifest(study))
        (out / "arrays").mkdir(parents=True, exist_ok=True)
    env = _store.environment()
    if progress is None:
        progress = sys.stderr.isatty()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(configs), initial=len(configs) - len(todo), unit="config",
               disable=not progress, desc="study")
    bad_dense = zero_dense = bad_lyap = 0
    finished = len(configs) - len(todo)
    try:
        while pending is not None:
            group, t0, n_devices, raw = pending
            if writer:
                frames = [_record_frame(study, c, {**env, "device_count": n_devices}) for c in group]
            outputs = _gather(raw)  # waits for this group's computation
            pending = launch()
            outputs = {name: v[:len(group)] for name, v in outputs.items()}
            if "singular_values" in outputs:
                sv = outputs["singular_values"][:, :study.seeds]
                if "log10_norms" in outputs:
                    zero = outputs["log10_norms"][:, :study.seeds, -1] == -np.inf
                else:  # without the curve an exact zero cannot be told from an underflow
                    zero = np.zeros(sv.shape[:2], bool)
                zero_dense += int(np.sum(zero))
                bad_dense += int(np.sum(~(np.all(np.isfinite(sv), -1) & (sv[..., 0] > 0)) & ~zero))
            if "lyapunov" in outputs:
                ex = outputs["lyapunov"][:, :study.seeds]
                bad_lyap += int(np.sum(~np.all(np.isfinite(ex) | (ex == -np.inf), -1)))
            if writer:
                _save_group(out, study, group, outputs, frames)
            finished += len(group)
            secs = time.perf_counter() - t0
            bar.set_postfix(seeds_per_s=f"{len(group) * study.seeds / max(secs, 1e-9):.1f}")
            bar.update(len(group))
            if on_group is not None:
                on_group(finished, len(configs))
    finally:
        bar.close()
    if bad_dense or zero_dense:
        parts = []
        if bad_dense:
            parts.append(f"left the range of {np.dtype(float_dtype()).name} for {bad_dense} "
                         f"(configuration, seed) pairs (its singular values are 0 or non-finite; "
                         f"dense_ok false). {FIX}")
        if zero_dense:
            parts.append(f"is exactly zero for {zero_dense} pairs (every unit's derivative 0, e.g. "
                         f"all ReLU units off): log10_norm is -inf there, stored as null.")
        warnings.warn("study: the dense ∂h_T/∂h_1 " + " It ".join(parts), NumericalWarning,
                      stacklevel=2)
    if bad_lyap:
        warnings.warn(f"study: {bad_lyap} (configuration, seed) pairs gave NaN or +inf Lyapunov "
                      f"exponents: the trajectory itself left the float range (e.g. a linear or "
                      f"ReLU cell with gain > 1). Lower the gain or T.", NumericalWarning,
                      stacklevel=2)
    return out


# ----------------------------------------------------------------------------------------------
# Reading a store


def read(out) -> dict:
    """The contents of a study folder, for the finished configurations.

    Returns:
      ``{"manifest": study.json's dict, "study": the Study, "configurations": [config dicts,
      finished ones only, in run order], "records": [results.jsonl records], "arrays":
      {config id: {"log10_norms": (S, T-1), "singular_values": (S, n), "lyapunov": (S, k)}}}``
      (the arrays that the study's metrics produce).

    Example: ``res = rd.study.read("out"); res["arrays"][res["configurations"][0]["id"]]``.
    """
    out = Path(out)
    path = out / "study.json"
    if not path.exists():
        raise ValueError(f"out: {out} holds no study.json; run a study into it first "
                         f"(rd.study.run or rnn-dynamics sweep).")
    m = _check_manifest(path, None)
    study = Study.from_dict(m["config"])
    records = _store.read_jsonl(out / "results.jsonl") if (out / "results.jsonl").exists() else []
    count: dict = {}
    for r in records:
        count.setdefault(r["config_id"], set()).add(r["seed_index"])
    arrays, cfgs = {}, []
    for c in configurations(study):
        npz = out / "arrays" / f"{c['id']}.npz"
        if len(count.get(c["id"], ())) == study.seeds and npz.exists():
            with np.load(npz) as z:
                arrays[c["id"]] = {k: z[k] for k in z.files if k != "seed_index"}
            cfgs.append(c)
    done = {c["id"] for c in cfgs}
    return {"manifest": m, "study": study, "configurations": cfgs,
            "records": [r for r in records if r["config_id"] in done], "arrays": arrays}


def _q(x, qs=(0.1, 0.5, 0.9)):
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return np.quantile(x, qs) if x.size else np.full(len(qs), np.nan)


def summary(out) -> str:
    """A table per finished configuration: median, q10 and q90 over seeds of
    log10 ‖∂h_T/∂h_1‖₂ and of λ_max (nats per step), as text.

    ``out``: a study folder or the dict from :func:`read`.
    Example: ``print(rd.study.summary("out"))``.
    """
    res = out if isinstance(out, dict) else read(out)
    study = res["study"]
    head = ["configuration", "log10|J| med", "q10", "q90", "λmax med", "q10", "q90"]
    rows = []
    for c in res["configurations"]:
        a = res["arrays"][c["id"]]
        if "log10_norms" in a:
            norm = a["log10_norms"][:, -1]
        elif "singular_values" in a:  # "dense" only: from σ_1 where the product stayed finite
            with np.errstate(divide="ignore"):
                norm = np.where(a["singular_values"][:, 0] > 0, np.log10(a["singular_values"][:, 0]), np.nan)
        else:
            norm = []
        lam = a["lyapunov"][:, 0] if "lyapunov" in a else []
        qn, ql = _q(norm), _q(lam)
        rows.append([c["id"], *(f"{v:.3f}" for v in (qn[1], qn[0], qn[2])),
                     *(f"{v:.4f}" for v in (ql[1], ql[0], ql[2]))])
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]

    def line(r):
        return "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths)))

    total = len(configurations(study))
    text = [f"{len(rows)} of {total} configurations, {study.seeds} seeds each; log10|J| = "
            f"log10 ‖∂h_T/∂h_1‖₂ at T; λmax in nats per step; quantiles over finite seeds "
            f"(nan: metric not computed)", line(head), line(["-" * w for w in widths])]
    return "\n".join(text + [line(r) for r in rows])
