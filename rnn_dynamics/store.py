"""Results on disk: one versioned JSON schema for every study, written atomically.

Orchestration layer: the command line writes results here and the plots read them from here
(:mod:`rnn_dynamics.plot` never opens a file itself). Nothing here does maths or imports jax
transformations.

The results schema (``SCHEMA_VERSION`` = 1), one JSON object::

    {
      "schema": "rnn_dynamics.results",   # what this file is
      "schema_version": 1,                # SCHEMA_VERSION of the writer
      "kind": "spectrum",                 # the kind of study (which command wrote it)
      "config": {...},                    # the study's settings: everything that defines its numbers
      "environment": {...},               # library, jax, numpy, python versions; device; x64
      "complete": false,                  # true once every run of the config is finished
      "runs": [                           # one object per finished configuration (e.g. per gain)
        {"label": "g=0.8", "gain": 0.8, "seconds": 1.2,
         "log10_norm": [... one number per seed ...],
         "log10_norms": [[... T-1 numbers ...] per seed], ...},
      ]
    }

Per-seed arrays are nested lists whose first axis is the seed (length ``config["seeds"]``).
Non-finite numbers (NaN, ±inf) are written as ``null``, so every file is strict JSON (RFC 8259);
``np.asarray(run[name], float)`` reads them back as NaN. Fields required per run for each known
kind are listed in ``RUN_FIELDS``; other kinds get the general checks only.

Files are written atomically (a temporary file in the same folder, then ``os.replace``) with the
usual permissions (0666 minus the umask, so 0644 under the common umask 022): an interrupted
run never leaves half a file. :func:`append_jsonl` writes one record per line, for streams of
per-run results.
"""
from __future__ import annotations

import io
import json
import math
import os
import platform
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SCHEMA", "SCHEMA_VERSION", "RUN_FIELDS", "new_results", "validate", "load_results",
    "save_results", "save_json", "load_json", "append_jsonl", "save_jsonl", "read_jsonl", "to_json",
    "environment", "npz_bytes",
]

SCHEMA = "rnn_dynamics.results"
SCHEMA_VERSION = 1

# kind -> fields every run must hold; the per-seed ones (first axis = seed) are marked True.
RUN_FIELDS: dict[str, dict[str, bool]] = {
    "spectrum": {
        "label": False, "gain": False, "seconds": False, "log10_norm": True, "growth_rate": True,
        "dense_ok": True, "singular_values": True, "log10_norms": True,
    },
}


def to_json(obj: Any) -> Any:
    """``obj`` as plain JSON values: arrays and numpy scalars to lists and numbers, NaN/±inf to None.

    Example: ``to_json({"a": np.array([1.0, np.nan])})`` is ``{"a": [1.0, None]}``.
    """
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__array__"):  # numpy and jax arrays
        return to_json(np.asarray(obj).tolist())
    raise TypeError(f"to_json: cannot store a {type(obj).__name__} in JSON ({obj!r}).")


def write_bytes_atomic(path: Path, data, sync: bool = True) -> Path:
    """Write ``data`` (bytes-like) to ``path`` through a temporary file and ``os.replace``, so a
    reader never sees half a file; ``sync`` fsyncs the data first (durable across a machine
    crash, not only a killed process). The folder is created if missing.
    Example: ``store.write_bytes_atomic(Path("out/a.npz"), buf.getbuffer(), sync=False)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    # os.open applies the umask to 0o666 (mkstemp would give 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return path


def _npy_bytes(a: np.ndarray) -> bytes:
    """numpy's own .npy header (version 1.0), then the raw data in the order it names (Fortran
    order for a Fortran-contiguous array, as ``np.save`` writes it; C order otherwise)."""
    header = io.BytesIO()
    info = np.lib.format.header_data_from_array_1_0(a)
    np.lib.format.write_array_header_1_0(header, info)
    return header.getvalue() + a.tobytes(order="F" if info["fortran_order"] else "C")


def npz_bytes(arrays: dict) -> bytes:
    """The bytes of an uncompressed ``.npz`` holding ``arrays`` (name -> numpy array), as
    ``np.savez`` writes it: a zip of stored (uncompressed) ``<name>.npy`` members, read back by
    ``np.load``. Built in memory in one pass, faster than ``np.savez`` through ``zipfile`` (a
    study writes one file per configuration; timings in benchmarks/README.md). Object arrays and
    members over 4 GiB (zip64) are not supported: use ``np.savez`` for those.

    Example: ``store.write_bytes_atomic(Path("a.npz"), npz_bytes({"x": np.arange(3)}), sync=False)``.
    """
    local, central, offset = [], [], 0
    for name, a in arrays.items():
        a = np.asanyarray(a)
        if a.dtype.hasobject:
            raise TypeError(f"npz_bytes: array {name!r} holds Python objects; use np.savez.")
        data = _npy_bytes(a)
        fname = f"{name}.npy".encode()
        if len(data) >= 2**32 - 1 or offset >= 2**32 - 1:
            raise ValueError(f"npz_bytes: array {name!r} needs zip64 (over 4 GiB); use np.savez.")
        crc = zlib.crc32(data)
        # version 2.0, no flags, stored, DOS time 0 / date 1980-01-01, crc, sizes, name length
        head = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0x21, crc, len(data), len(data),
                           len(fname), 0)
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, crc, len(data),
                                   len(data), len(fname), 0, 0, 0, 0, 0, offset) + fname)
        local.append(head + fname + data)
        offset += len(head) + len(fname) + len(data)
    directory = b"".join(central)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), len(directory),
                      offset, 0)
    return b"".join(local) + directory + end


def _write_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def save_json(path, data: Any) -> Path:
    """Write ``data`` as strict JSON to ``path`` atomically; NaN and ±inf become ``null``.

    Args:
      path: the file (its folder is created if missing).
      data: dicts, lists, numbers, strings, numpy or jax arrays.

    Returns:
      The path written. Example: ``store.save_json("out/x.json", {"a": np.arange(3)})``.
    """
    text = json.dumps(to_json(data), indent=1, allow_nan=False)
    return _write_atomic(Path(path), text + "\n")


def load_json(path) -> Any:
    """Read a JSON file (a directory means its ``results.json``); no schema checks (see
    :func:`load_results` for those). Example: ``store.load_json("out/x.json")["a"]``."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def append_jsonl(path, record: dict) -> Path:
    """Append one record as one line of strict JSON to ``path`` (JSON lines; NaN/±inf -> null).

    A line is written with a single ``write`` and flushed, so a reader sees whole records.
    Example: ``store.append_jsonl("out/runs.jsonl", {"gain": 1.0, "lambda_max": 0.01})``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(to_json(record), allow_nan=False, separators=(",", ":"))
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
    return path


def save_jsonl(path, records) -> Path:
    """Write ``records`` as a whole JSON-lines file, atomically (strict JSON, NaN/±inf -> null).

    Example: ``store.save_jsonl("out/log.jsonl", [{"step": 0, "loss": 0.2}])``.
    """
    lines = (json.dumps(to_json(r), allow_nan=False, separators=(",", ":")) + "\n" for r in records)
    return _write_atomic(Path(path), "".join(lines))


def read_jsonl(path) -> list:
    """The records (dicts) of a JSON-lines file, in order; a final partial line (a writer stopped
    mid-line) is ignored. Example: ``[r["gain"] for r in store.read_jsonl("out/runs.jsonl")]``."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n") and line.strip():
                out.append(json.loads(line))
    return out


def new_results(config: dict, kind: str = "spectrum") -> dict:
    """An empty results object of the current schema for a study of ``kind`` with ``config``.

    Args:
      config: the study's settings (JSON-able; tuples become lists).
      kind: the kind of study, e.g. ``"spectrum"``.

    Returns:
      ``{"schema", "schema_version", "kind", "config", "environment", "complete": False,
      "runs": []}``; append finished runs to ``["runs"]`` and save with :func:`save_results`.

    Example::

        res = store.new_results({"cell": "vanilla", "seeds": 4, "gain": [1.0]})
        res["runs"].append({...}); store.save_results("out/results.json", res)
    """
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a dict of settings, got {type(config).__name__}.")
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"kind: expected a non-empty string such as 'spectrum', got {kind!r}.")
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "config": to_json(config),
        "environment": environment(),
        "complete": False,
        "runs": [],
    }


def validate(results, kind: str | None = None, *, source: str = "results") -> dict:
    """Check that ``results`` follows this schema (and is of ``kind`` if given); return it.

    Args:
      results: a dict as loaded from a results file.
      kind: the expected kind of study, or None for any.
      source: how to name the results in messages (e.g. the file's path).

    Returns:
      ``results`` unchanged.

    Raises:
      ValueError: another schema or schema version, another kind of study, or a malformed
        layout; the message says which and what to do.

    Example: ``store.validate(json.load(open("out/results.json")), "spectrum")``.
    """
    if not isinstance(results, dict) or results.get("schema") != SCHEMA:
        raise ValueError(
            f"{source}: not an rnn_dynamics results file (expected \"schema\": {SCHEMA!r}). It was "
            f"written by another program or by rnn_dynamics before results files were versioned; "
            f"rerun the study (with --overwrite, or another --out) to write it in this format."
        )
    version = results.get("schema_version")
    if version != SCHEMA_VERSION:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        raise ValueError(
            f"{source}: results schema version {version!r}, but this rnn_dynamics reads version "
            f"{SCHEMA_VERSION}. "
            + ("Upgrade rnn_dynamics to read it." if newer
               else "Rerun the study (with --overwrite, or another --out) to write it in this version.")
        )
    if kind is not None and results.get("kind") != kind:
        raise ValueError(
            f"{source}: holds a {results.get('kind')!r} study, expected a {kind!r} study. "
            f"Use another output folder, or the command that wrote it."
        )
    for name, typ in (("kind", str), ("config", dict), ("environment", dict), ("complete", bool),
                      ("runs", list)):
        if not isinstance(results.get(name), typ):
            raise ValueError(
                f"{source}: field {name!r} should be a {typ.__name__}, got "
                f"{type(results.get(name)).__name__}; the file is damaged: rerun the study."
            )
    fields = RUN_FIELDS.get(results["kind"], {})
    seeds = results["config"].get("seeds")
    for i, run in enumerate(results["runs"]):
        if not isinstance(run, dict):
            raise ValueError(f"{source}: run {i} should be an object, got {type(run).__name__}.")
        missing = [f for f in fields if f not in run]
        if missing:
            raise ValueError(
                f"{source}: run {i} lacks {', '.join(missing)}; the file is damaged: rerun the study."
            )
        for f, per_seed in fields.items():
            if per_seed and isinstance(seeds, int) and (
                not isinstance(run[f], list) or len(run[f]) != seeds
            ):
                got = len(run[f]) if isinstance(run[f], list) else type(run[f]).__name__
                raise ValueError(
                    f"{source}: run {i} field {f!r} should hold one entry per seed ({seeds}), got "
                    f"{got}; the file is damaged: rerun the study."
                )
    return results


def load_results(path, kind: str | None = None) -> dict:
    """Read and :func:`validate` a results file (a directory means its ``results.json``).

    Example: ``res = rd.store.load_results("rnn_dynamics_out", "spectrum")``; ``res["runs"]``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = load_json(path)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); rerun the study to rewrite it.") from None
    return validate(data, kind, source=str(path))


def save_results(path, results: dict) -> Path:
    """:func:`validate` ``results`` and write them atomically to ``path`` (see :func:`save_json`).

    Returns the path. Example: ``store.save_results("out/results.json", res)`` with ``res`` from
    :func:`new_results`.
    """
    results = to_json(results)
    validate(results, source="results to save")
    return save_json(path, results)


def environment() -> dict:
    """Library, jax, numpy and python versions, the default device and whether x64 is on.

    Example: ``rd.store.environment()["jax"]`` is ``"0.10.2"`` here.
    """
    import jax
    import jaxlib

    from . import __version__

    dev = jax.devices()[0]
    return {
        "rnn_dynamics": __version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "x64": bool(jax.config.jax_enable_x64),
    }
