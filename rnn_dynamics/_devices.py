"""Seeds over devices: when a computation may run on several devices at once.

A seed axis splits over devices with no communication (each device runs its own seeds), so
several devices, including the cores of one CPU exposed as devices
(``jax.config.update("jax_num_cpu_devices", os.cpu_count())`` before the first computation,
or ``JAX_NUM_CPU_DEVICES``), multiply throughput when one seed's operations are too small to
fill the machine (hidden 32 on a 2-core CPU).

One hazard on CPU: when two CPU devices run batched LAPACK calls (QR, SVD, triangular
solves, Cholesky, LU, ...) at the same time, XLA:CPU can hang at 0% CPU (reproduced on a
2-core CPU with two devices: a (32, 128, 128) QR per device). :func:`uses_lapack` tells whether a
traced computation holds any such call; the library shards a CPU computation only when it
holds none, and otherwise runs it on one device.
"""
from __future__ import annotations

import jax

__all__ = ["LAPACK_PRIMITIVES", "uses_lapack", "several_cpu", "seed_devices"]

# primitives that jaxlib lowers to LAPACK/BLAS custom calls on CPU
LAPACK_PRIMITIVES = frozenset({
    "qr", "geqrf", "geqp3", "householder_product", "svd", "eigh", "eig", "cholesky",
    "cholesky_update", "lu", "triangular_solve", "schur", "hessenberg", "tridiagonal",
    "tridiagonal_solve",
})


def _subjaxprs(params):
    for v in params.values():
        for x in (v if isinstance(v, (tuple, list)) else (v,)):
            if hasattr(x, "eqns"):
                yield x
            elif hasattr(x, "jaxpr") and hasattr(x.jaxpr, "eqns"):
                yield x.jaxpr


def uses_lapack(jaxpr) -> bool:
    """Whether a (closed) jaxpr, sub-jaxprs included, holds a primitive in LAPACK_PRIMITIVES."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in LAPACK_PRIMITIVES:
            return True
        if any(uses_lapack(sub) for sub in _subjaxprs(eqn.params)):
            return True
    return False


def several_cpu(devices) -> bool:
    """Whether ``devices`` (an iterable) are several and include a CPU: the hazard above."""
    devices = tuple(devices)
    return len(devices) > 1 and any(d.platform == "cpu" for d in devices)


def seed_devices(devices, seeds: int, jaxpr_fn) -> tuple | None:
    """The devices to split ``seeds`` over, or None for one device.

    Args:
      devices: None (every device of this process, when there is more than one) or a sequence
        of devices.
      seeds: the length of the seed axis.
      jaxpr_fn: a thunk returning the jaxpr of the per-device computation; called only when
        the choice depends on it (several CPU devices).
    """
    if devices is None:
        if jax.process_count() > 1:
            return None
        devices = jax.local_devices()
    devices = tuple(devices)
    if len(devices) < 2 or seeds < 2:
        return None
    devices = devices[:seeds]
    if several_cpu(devices) and uses_lapack(jaxpr_fn()):
        return None
    return devices
