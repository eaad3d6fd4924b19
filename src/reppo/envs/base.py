"""The vectorised environment interfaces the two rollout paths speak.

Every environment reppo trains on is a batch of ``num_envs`` copies. ``step`` auto-resets finished episodes and
returns, beside the observation to act on next, the *true* next observation of each env (the final observation of
an episode that just ended, before the reset), so the critic can bootstrap from it.

- :class:`VecEnv`: a JAX env, functional (state in, state out), stepped inside the compiled iteration
  (``reppo.rollout.fused``).
- :class:`HostVecEnv`: an env stepped from Python with numpy arrays, its state kept inside the object
  (``reppo.rollout.host``): simulators that are not JAX programs.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np
from flax import struct


@struct.dataclass
class EnvState:
    """Batched state of a :class:`VecEnv` (leading axis ``num_envs`` on every array)."""

    inner: Any
    """The wrapped simulator's own batched state (e.g. a Playground ``State``)."""
    obs: jax.Array
    """(N, obs_size) actor observation to act on now (after any auto-reset)."""
    critic_obs: jax.Array
    """(N, critic_obs_size) critic observation (privileged state if the env has one, else ``obs``)."""
    steps: jax.Array
    """(N,) int32 steps taken in the current episode."""
    extra: Any = None
    """Wrapper-specific state (e.g. reset pool, PRNG key); opaque to the algorithm."""


@struct.dataclass
class StepResult:
    """What one batched step returns besides the new state."""

    reward: jax.Array
    """(N,) float32 reward."""
    terminated: jax.Array
    """(N,) float32, 1 where the episode ended without bootstrap (failure / absorbing state)."""
    truncated: jax.Array
    """(N,) float32, 1 where the episode hit its time limit (and did not terminate): bootstrap from next_obs."""
    next_obs: jax.Array
    """(N, obs_size) true next observation: the pre-reset final observation where the episode ended."""
    next_critic_obs: jax.Array
    """(N, critic_obs_size) true next critic observation, likewise."""


class VecEnv(Protocol):
    num_envs: int
    obs_size: int
    critic_obs_size: int
    action_size: int
    episode_length: int

    def reset(self, key: jax.Array) -> EnvState:
        """Reset all envs. Training envs randomise their episode step counters so they do not reset in lock-step."""

    def prepare_rollout(self, state: EnvState, key: jax.Array) -> EnvState:
        """Called once at the start of every rollout (outside the per-step scan); may refresh reset states."""

    def step(self, state: EnvState, action: jax.Array) -> tuple[EnvState, StepResult]:
        """Step all envs with actions in [-1, 1]; auto-reset the ones whose episode ended."""

    def reset_where(self, state: EnvState, mask: jax.Array, key: jax.Array) -> EnvState:
        """Reset the envs where ``mask`` (N,) bool is true to fresh initial states (step counter 0); leave the
        others untouched. Free when no env is masked (used by the NaN/Inf guard to drop envs that went bad)."""


@runtime_checkable
class HostVecEnv(Protocol):
    """A vector env stepped from Python; arrays are numpy, the leading axis ``num_envs``. PRNG keys are JAX keys
    (uint32 arrays); an adapter derives whatever seeds its simulator takes from them."""

    num_envs: int
    obs_size: int
    critic_obs_size: int
    action_size: int
    episode_length: int

    def reset(self, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
        """Reset all envs; returns (obs, critic_obs) to act on."""

    def begin_rollout(self, key: jax.Array) -> None:
        """Called once at the start of every rollout, before the first ``step``."""

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, StepResult]:
        """Step all envs with actions in [-1, 1], auto-resetting the ones whose episode ended; returns the (obs,
        critic_obs) to act on next and the step's :class:`StepResult` (numpy arrays)."""

    def reset_where(self, mask: np.ndarray, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
        """Reset the envs where ``mask`` (N,) is true; returns the (obs, critic_obs) to act on next."""
