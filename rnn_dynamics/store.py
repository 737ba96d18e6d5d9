"""Results on disk: JSON written atomically, so an interrupted run never leaves half a file.

Kept apart from the pure core: nothing here imports jax transformations or does maths.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["save_json", "load_json", "environment"]


def save_json(path, data: Any) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, allow_nan=True)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_json(path) -> Any:
    """Read a JSON file written by :func:`save_json` (a directory means its ``results.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    with open(path) as f:
        return json.load(f)


def environment() -> dict:
    """Library, jax and numpy versions and the device the default backend runs on."""
    import jax
    import jaxlib
    import numpy as np

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
