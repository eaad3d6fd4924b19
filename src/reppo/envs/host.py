"""A JAX :class:`VecEnv` stepped from Python as a :class:`HostVecEnv`: each call is one jitted program and the env
state lives in this object. It drives the host rollout path with a simulator whose fused-path results are known,
so the two paths can be checked against each other."""

from __future__ import annotations

import jax
import numpy as np

from reppo.envs.base import EnvState, StepResult, VecEnv


class JaxEnvOnHost:
    """``env`` (a JAX VecEnv) behind the host interface. Its keys are used exactly as the fused path uses them:
    ``reset(key)`` is ``env.reset(key)``, ``begin_rollout(key)`` is ``env.prepare_rollout(state, key)``."""

    def __init__(self, env: VecEnv):
        self.env = env
        for name in ("num_envs", "obs_size", "critic_obs_size", "action_size", "episode_length"):
            setattr(self, name, getattr(env, name))
        self.num_actions = int(getattr(env, "num_actions", 0) or 0)
        self.obs_image = getattr(env, "obs_image", None)
        self.state: EnvState | None = None
        self._reset = jax.jit(env.reset)
        self._prepare = jax.jit(env.prepare_rollout)
        self._step = jax.jit(env.step)
        self._reset_where = jax.jit(env.reset_where)

    def _observed(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.state.obs), np.asarray(self.state.critic_obs)

    def reset(self, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
        self.state = self._reset(key)
        return self._observed()

    def begin_rollout(self, key: jax.Array) -> None:
        self.state = self._prepare(self.state, key)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, StepResult]:
        self.state, result = self._step(self.state, action)
        return *self._observed(), jax.tree.map(np.asarray, result)

    def reset_where(self, mask: np.ndarray, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
        self.state = self._reset_where(self.state, mask, key)
        return self._observed()
