"""Rollout paths: how a batch is collected for the learner, and the state a run carries between iterations.

- ``fused``: a JAX env stepped inside the compiled iteration with ``lax.scan``; rollout and learning are one program.
- ``host``: a vector env stepped from Python with a jitted ``act``, then one jitted ``learn``.

Both fill the same time-major :class:`reppo.algo.learner.Transition` batch and use one key schedule, so a JAX env
driven through either path trains the same run. :func:`make_rollout` picks the path from the env's interface.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import struct
from jax.sharding import Mesh

from reppo import parallel
from reppo.algo.learner import Learner, LearnerState, Spaces
from reppo.config import Config
from reppo.envs.base import EnvState, HostVecEnv
from reppo.seeds import SeededLearner


@struct.dataclass
class TrainState:
    """Everything a run carries from one iteration to the next."""

    learner: LearnerState
    """Networks, optimiser states, duals and statistics, with a leading seed axis (S, ...)."""
    env_state: EnvState | None
    """The S * N envs of a JAX env (fused path); None on the host path, where the env keeps its own state."""
    key: jax.Array
    """(S, 2): each seed's PRNG key for the next iteration."""
    iteration: jax.Array
    """() int32: iterations done."""


@struct.dataclass
class IterationKeys:
    """One iteration's keys, each (S, 2): split from ``TrainState.key``, never used twice."""

    next: jax.Array
    rollout: jax.Array
    learn: jax.Array


def iteration_keys(keys: jax.Array) -> IterationKeys:
    split = jax.vmap(lambda k: jax.random.split(k, 3))(keys)
    return IterationKeys(next=split[:, 0], rollout=split[:, 1], learn=split[:, 2])


def start_keys(keys: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(learner keys (S, 2), the env's reset key (2,), the first iteration's keys (S, 2)) from the seeds' keys."""
    split = jax.vmap(lambda k: jax.random.split(k, 3))(keys)
    return split[:, 0], split[0, 1], split[:, 2]


def rollout_keys(rollout: jax.Array, num_steps: int) -> tuple[jax.Array, jax.Array]:
    """(the env's key for ``prepare_rollout`` / ``begin_rollout`` (2,), the acting keys (T, S, 2))."""
    parts = jax.vmap(jax.random.split)(rollout)  # (S, 2, 2): pool key, steps key
    steps = jax.vmap(lambda k: jax.random.split(k, num_steps))(parts[:, 1])  # (S, T, 2)
    return parts[0, 0], jax.numpy.swapaxes(steps, 0, 1)


def bad_envs_key(rollout: jax.Array) -> jax.Array:
    """The key that resets envs gone non-finite: derived with ``fold_in`` (the rollout only ``split``s), so the
    guard leaves every other key of the iteration unchanged."""
    return jax.random.fold_in(rollout[0], 1)


Iterate = Callable[[TrainState], tuple[TrainState, dict[str, Any]]]


def make_rollout(config: Config, env, mesh: Mesh | None = None):
    """The rollout path for ``env`` (:class:`reppo.rollout.fused.FusedRollout` for a JAX VecEnv,
    :class:`reppo.rollout.host.HostRollout` for a :class:`HostVecEnv`) around the learner of ``config``.

    ``config`` must be resolved; ``env`` holds ``num_seeds * num_envs`` envs. With a ``mesh`` the envs and the
    batch rows are split over its devices (``reppo.parallel``)."""
    if env.num_envs != config.num_envs * config.num_seeds:
        raise ValueError(
            f"env has {env.num_envs} envs; expected num_envs * num_seeds = {config.num_envs * config.num_seeds}"
        )
    shard_rows = parallel.row_sharder(mesh)
    seeded = SeededLearner.create(Learner.create(config, Spaces.of(env, config.encoder), shard_rows))
    if isinstance(env, HostVecEnv):
        from reppo.rollout.host import HostRollout

        return HostRollout(seeded, env)
    from reppo.rollout.fused import FusedRollout

    return FusedRollout(seeded=seeded, env=env, shard_rows=shard_rows)
