"""gymnax envs (``gymnax:NAME``) for the fused path, with the true final observation.

gymnax's ``env.step(key, state, action, params)`` auto-resets: on ``done`` it returns the *reset* observation, so
the final observation of an episode is lost, and before gymnax 1.0 its ``done`` also fires at the time limit
(``state.time >= params.max_steps_in_episode``), a truncation, not a termination. :class:`GymnaxEnv` therefore
steps with ``env.step_env`` (no reset) under params whose time limit never fires, reports only the task's own
terminations as ``done``, and leaves the time limit (the task's ``max_steps_in_episode``) and the resets to
:class:`reppo.envs.playground.AutoResetVecEnv`, which keeps the final observation. The object has MuJoCo
Playground's single-env API: ``reset(rng) -> State`` and ``step(State, action) -> State``; its state carries the
PRNG key gymnax's step needs. Actions in [-1, 1] are rescaled to the action Box (:mod:`reppo.envs.spaces`); on a
Discrete space (CartPole-v1, Acrobot-v1, the MinAtar games) the action is the index itself, and ``num_actions``
says how many there are. Observations are flattened (MinAtar's 10 x 10 x C grids become vectors of 100 C;
``obs_image`` keeps their layout for a CNN encoder).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from reppo.envs.spaces import action_map, image_of

NEVER = 2**30
"""The time limit given to gymnax, so that its ``done`` means termination only."""


@struct.dataclass
class GymnaxState:
    env_state: Any
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    key: jax.Array


def _make(name: str):
    import gymnax

    from reppo.envs.playground import UnknownEnvError

    if name not in gymnax.registered_envs:
        raise UnknownEnvError(f"unknown gymnax env {name!r}; allowed: {', '.join(gymnax.registered_envs)}")
    return gymnax.make(name)


def episode_length(name: str) -> int:
    """The task's own time limit (``default_params.max_steps_in_episode``)."""
    _, params = _make(name)
    return int(params.max_steps_in_episode)


class GymnaxEnv:
    """One gymnax env with Playground's single-env API (see the module doc)."""

    def __init__(self, name: str):
        self.name = name
        self.env, params = _make(name)
        self.params = params.replace(max_steps_in_episode=NEVER)
        self.actions = action_map(self.env.action_space(params))
        self.action_size = self.actions.size
        self.num_actions = self.actions.num_actions
        # MinAtar's grids (10 x 10 x C) are images: ``--encoder auto`` reads them with a CNN
        self.obs_image = image_of(getattr(self.env.observation_space(params), "shape", None))
        if not self.num_actions:
            self._low, self._high = jnp.asarray(self.actions.low), jnp.asarray(self.actions.high)

    def _state(self, env_state, obs, reward, done, key) -> GymnaxState:
        obs = jnp.asarray(obs, jnp.float32).reshape(-1)
        return GymnaxState(env_state, obs, jnp.asarray(reward, jnp.float32), jnp.asarray(done, jnp.float32), key)

    def reset(self, rng: jax.Array) -> GymnaxState:
        k_reset, key = jax.random.split(rng)
        obs, env_state = self.env.reset_env(k_reset, self.params)
        return self._state(env_state, obs, 0.0, 0.0, key)

    def step(self, state: GymnaxState, action: jax.Array) -> GymnaxState:
        key, k_step = jax.random.split(state.key)
        if self.num_actions:
            a = action.astype(jnp.int32)
        else:
            a = jnp.clip(action, -1.0, 1.0)
            a = self._low + (a + 1.0) * 0.5 * (self._high - self._low)
        obs, env_state, reward, done, _ = self.env.step_env(k_step, state.env_state, a, self.params)
        return self._state(env_state, obs, reward, done, key)
