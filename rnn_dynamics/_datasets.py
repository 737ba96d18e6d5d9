"""Reading data sets from files the user gives (re-exported as ``rd.tasks.load_mnist`` and
``rd.tasks.read_idx``): the only file I/O behind :mod:`rnn_dynamics.tasks`. Nothing is
downloaded."""
from __future__ import annotations

import gzip
import os

import numpy as np

__all__ = ["load_mnist", "read_idx"]


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (the MNIST format), raw or gzip-compressed (detected from its bytes).

    Args: path: the file. Returns: a numpy array with the shape stored in the file.
    Example: ``rd.tasks.read_idx("train-labels-idx1-ubyte.gz").shape`` is (60000,).
    """
    path = os.path.expanduser(os.fspath(path))
    _require(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"path: {path!r} is not an IDX file (bad magic number {raw[:4]!r}).")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(raw) - offset < count * dtype.itemsize:
        raise ValueError(f"path: {path!r} is truncated: the header says shape {dims}, the file is too short.")
    return np.frombuffer(raw, dtype, count, offset).reshape(dims)


def _require(path):
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"path: {path!r} does not exist. rnn_dynamics never downloads data: save MNIST there "
            f"yourself (the 'mnist.npz' of Keras, or the four IDX files 'train-images-idx3-ubyte', "
            f"'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte', "
            f"optionally .gz) and pass that path."
        )


def _find_idx(directory, prefix, kind):
    names = [f"{prefix}-{kind}", f"{prefix}-{kind}".replace("-idx", ".idx")]
    for name in names:
        for ext in ("", ".gz"):
            p = os.path.join(directory, name + ext)
            if os.path.exists(p):
                return p
    raise FileNotFoundError(
        f"path: no {names[0]!r} (or .gz) in the directory {directory!r}. Expected the MNIST IDX "
        f"files there, or pass the path of a mnist.npz."
    )


def load_mnist(path, split: str = "train"):
    """MNIST from a path you give: a ``mnist.npz`` or a directory of IDX files (raw or .gz).

    Nothing is ever downloaded. ``mnist.npz`` is the common Keras layout (``x_train``,
    ``y_train``, ``x_test``, ``y_test``). A directory must hold ``train-images-idx3-ubyte``
    and ``train-labels-idx1-ubyte`` (``t10k-…`` for the test split), each optionally ``.gz``.

    Args:
      path: the .npz file or the directory. split: ``"train"`` or ``"test"``.

    Returns:
      ``(images, labels)`` as numpy arrays: (N, 28, 28) uint8 and (N,) integers.
      A missing path raises ``FileNotFoundError`` naming it.

    Example: ``images, labels = rd.tasks.load_mnist("~/data/mnist.npz", "test")``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}.")
    path = os.path.expanduser(os.fspath(path))
    _require(path)
    if os.path.isdir(path):
        prefix = "train" if split == "train" else "t10k"
        images = read_idx(_find_idx(path, prefix, "images-idx3-ubyte"))
        labels = read_idx(_find_idx(path, prefix, "labels-idx1-ubyte"))
    else:
        try:
            with np.load(path) as z:
                images, labels = z[f"x_{split}"], z[f"y_{split}"]
        except KeyError as e:
            raise ValueError(
                f"path: {path!r} has no array {e.args[0]!r}; expected the Keras mnist.npz keys "
                f"x_train, y_train, x_test, y_test."
            ) from None
        except (OSError, ValueError) as e:
            raise ValueError(f"path: {path!r} is not a readable .npz file ({e}).") from None
    if images.shape[:1] != labels.shape[:1]:
        raise ValueError(f"path: {path!r} holds {images.shape[0]} images but {labels.shape[0]} labels.")
    return images, labels


# ------------------------------------------------------------------------------- Mackey–Glass
