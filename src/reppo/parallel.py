"""One run over several devices and processes with ``jax.sharding`` (JAX's own runtime, nothing home-made).

The devices form a 1-D mesh with one axis, ``envs``. The envs' state (every leaf of ``TrainState.env_state`` whose
leading axis is the env axis) is split over that axis. Parameters, optimiser states, duals, statistics and keys are
replicated. The rollout, and with it every per-env computation, runs on the device that holds the env. The flat
batch and each global minibatch are split by rows (:func:`row_sharder`, the learner's ``shard_rows``). XLA's
partitioner then inserts the collectives: the mean over a minibatch becomes an all-reduce (so gradients are averaged
over devices), and so do the observation-statistics moments (so the normaliser sees every device's observations). It
does the same for the auto-reset pool's global counts. The sharded program computes the single-device program's
function, with only the order of floating-point sums changed.

Several processes (hosts) join one run through ``jax.distributed.initialize``. :func:`initialize` takes the
coordinator address, the process count and the process id, from flags or from the ``REPPO_COORDINATOR_ADDRESS``,
``REPPO_NUM_PROCESSES`` and ``REPPO_PROCESS_ID`` environment variables. The mesh then spans every process's devices.
Each process runs the same program; only process 0 writes logs and checkpoints (:func:`is_primary`), from state
gathered with :func:`to_host`, and any process can restore them (:func:`put`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

ENV_AXIS = "envs"
LAUNCH_VARIABLES = ("REPPO_COORDINATOR_ADDRESS", "REPPO_NUM_PROCESSES", "REPPO_PROCESS_ID")


class ParallelError(ValueError):
    """A device or process setting that cannot work (one line naming the value and what is allowed)."""


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] = os.environ,
) -> bool:
    """Join a multi-process run with ``jax.distributed.initialize``, before anything else touches JAX's devices.

    Arguments left ``None`` are taken from ``REPPO_COORDINATOR_ADDRESS`` (``host:port`` of process 0),
    ``REPPO_NUM_PROCESSES`` and ``REPPO_PROCESS_ID``. All three or none must be set; returns False (a single-process
    run) when none is.
    """
    values = {
        "coordinator_address": coordinator_address or environ.get("REPPO_COORDINATOR_ADDRESS"),
        "num_processes": num_processes if num_processes is not None else environ.get("REPPO_NUM_PROCESSES"),
        "process_id": process_id if process_id is not None else environ.get("REPPO_PROCESS_ID"),
    }
    given = [name for name, value in values.items() if value not in (None, "")]
    if not given:
        return False
    if len(given) < 3:
        missing = [name for name in values if name not in given]
        raise ParallelError(
            f"a multi-process run needs --coordinator-address, --num-processes and --process-id (or "
            f"{', '.join(LAUNCH_VARIABLES)}); missing: {', '.join(missing)}"
        )
    address = str(values["coordinator_address"])
    if ":" not in address:
        raise ParallelError(f"coordinator_address={address!r} must be host:port (process 0's address)")
    count, index = _integer("num_processes", values["num_processes"]), _integer("process_id", values["process_id"])
    if count < 1:
        raise ParallelError(f"num_processes={count} must be a positive integer")
    if not 0 <= index < count:
        raise ParallelError(f"process_id={index} must be in 0..{count - 1} (num_processes={count})")
    jax.distributed.initialize(coordinator_address=address, num_processes=count, process_id=index)
    # Arrays made outside a sharded program (Playground's MJX model, constants) go to this process's own device;
    # JAX's default would be the first device of the whole run, which only process 0 can read.
    jax.config.update("jax_default_device", jax.local_devices()[0])
    return True


def _integer(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ParallelError(f"{name}={value!r} must be an integer") from None


def device_count(devices: int | str) -> int:
    """The number of devices ``devices`` (a count or ``"all"``) asks for, checked against what this run has. With
    several processes every device takes part, so only ``"all"`` or the full count is accepted."""
    available = jax.device_count()
    kind = jax.devices()[0].platform
    if devices == "all":
        return available
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        raise ParallelError(f"devices={devices!r} must be a positive integer or 'all'")
    if devices > available:
        raise ParallelError(f"devices={devices} but this run has {available} {kind} device(s); allowed: 1..{available}")
    if jax.process_count() > 1 and devices != available:
        raise ParallelError(
            f"devices={devices}: a run over {jax.process_count()} processes uses all {available} devices; pass 'all'"
        )
    return devices


def make_mesh(devices: int | str) -> Mesh:
    """A 1-D mesh (axis ``envs``) over the first ``device_count(devices)`` devices."""
    return Mesh(np.asarray(jax.devices()[: device_count(devices)]), (ENV_AXIS,))


def row_sharder(mesh: Mesh | None):
    """``shard_rows(x, axis=0)``: split ``x``'s axis ``axis`` (envs or batch rows) over the mesh, a sharding
    constraint inside a jitted program; the identity without a mesh or on one device."""

    def shard_rows(x, axis: int = 0):
        if mesh is None or mesh.size == 1:
            return x
        spec = PartitionSpec(*([None] * axis), ENV_AXIS)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return shard_rows


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(abstract_state: Any, mesh: Mesh, num_envs: int) -> Any:
    """Shardings for a ``TrainState`` (from ``jax.eval_shape``): leaves of ``env_state`` with a leading axis of
    ``num_envs`` (all envs of all seeds) split over the mesh, everything else replicated."""

    def sharding(path, leaf) -> NamedSharding:
        in_env = any(getattr(entry, "name", None) == "env_state" for entry in path)
        if in_env and leaf.ndim >= 1 and leaf.shape[0] == num_envs:
            return NamedSharding(mesh, PartitionSpec(ENV_AXIS))
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(sharding, abstract_state)


def jit_iteration(iteration, shardings: Any, mesh: Mesh):
    """``iteration(state) -> (state, metrics)`` jitted over the mesh: the state keeps ``shardings`` (and is donated),
    the metrics come back replicated."""
    return jax.jit(iteration, donate_argnums=0, in_shardings=(shardings,), out_shardings=(shardings, replicated(mesh)))


def check_divisible(num_envs: int, mesh: Mesh) -> None:
    if num_envs % mesh.size:
        raise ParallelError(
            f"num_envs * num_seeds = {num_envs} must be divisible by the {mesh.size} devices the envs are split over"
        )


def is_primary() -> bool:
    """Whether this process writes logs and checkpoints (process 0)."""
    return jax.process_index() == 0


def to_host(tree: Any) -> Any:
    """Every array of ``tree`` as a numpy array holding its global value. Arrays split over other processes'
    devices are gathered, which is a collective: with several processes, every process must call this at the
    same point."""

    def fetch(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        if x.sharding.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(fetch, tree)


def put(tree: Any, shardings: Any) -> Any:
    """Global arrays with ``shardings`` from host values that every process holds in full (e.g. a checkpoint)."""

    def place(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(place, tree, shardings)


def barrier(name: str, timeout_s: float = 3600.0) -> None:
    """Wait until every process gets here (the coordination service's barrier, not a device collective). Used
    after compiling: the first collective's Gloo set-up on CPU times out after 30 s, and processes can finish
    compiling further apart than that."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed

    distributed.global_state.client.wait_at_barrier(f"reppo-{name}", int(timeout_s * 1000))


def any_process(flag: bool) -> bool:
    """True on every process if ``flag`` is true on any (a collective with several processes)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
