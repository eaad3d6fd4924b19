"""The host rollout path: a vector env stepped from Python (:class:`reppo.envs.base.HostVecEnv`) with a jitted
``act`` per step, then one jitted ``learn`` on the stacked batch. The keys and the batch are those of the fused
path (``reppo.rollout``), so a JAX env driven through here trains the fused path's run."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from reppo.algo import guard
from reppo.algo.learner import Transition
from reppo.envs.base import HostVecEnv
from reppo.rollout import (
    Iterate,
    TrainState,
    bad_envs_key,
    iteration_keys,
    rollout_keys,
    start_keys,
)
from reppo.seeds import SeededLearner


class HostRollout:
    """``start(keys) -> TrainState`` and, once compiled, ``iterate(state) -> (state, metrics)``. The env keeps its
    own state, so ``TrainState.env_state`` is None and the observations to act on next live here."""

    def __init__(self, seeded: SeededLearner, env: HostVecEnv):
        self.seeded, self.env = seeded, env
        self.num_steps = seeded.learner.config.num_steps
        self._obs: tuple[np.ndarray, np.ndarray] | None = None
        self._keys = jax.jit(self._iteration_keys)
        self._act = jax.jit(seeded.act)
        self._bad = jax.jit(guard.bad_envs)

    def _iteration_keys(self, key: jax.Array):
        keys = iteration_keys(key)
        return keys, *rollout_keys(keys.rollout, self.num_steps)

    def start(self, keys: jax.Array) -> TrainState:
        """Reset the env and initialise S learners from its first observations (the fused path's key schedule)."""
        learner_keys, env_key, next_keys = jax.jit(start_keys)(keys)
        self._obs = self.env.reset(env_key)
        learner = jax.jit(self.seeded.init)(learner_keys, *self._obs)
        return TrainState(learner=learner, env_state=None, key=next_keys, iteration=jnp.zeros((), jnp.int32))

    def abstract_state(self, keys: jax.Array) -> TrainState:
        learner_keys, _, next_keys = jax.eval_shape(start_keys, keys)
        n, s = self.env.num_envs, self.seeded.learner.spaces
        obs = jax.ShapeDtypeStruct((n, s.obs_size), jnp.float32)
        critic_obs = jax.ShapeDtypeStruct((n, s.critic_obs_size), jnp.float32)
        learner = jax.eval_shape(self.seeded.init, learner_keys, obs, critic_obs)
        return TrainState(learner, None, next_keys, jax.ShapeDtypeStruct((), jnp.int32))

    def compile(self, state: TrainState, shardings, mesh: Mesh) -> tuple[Iterate, list[str]]:
        """Compile ``learn`` for ``state``'s shapes; a resumed run (no observations yet) resets the env first, from
        a key of the resumed iteration's schedule (a host env's state is not in the checkpoint)."""
        if self._obs is None:
            self._obs = self.env.reset(jax.random.fold_in(np.asarray(state.key)[0], 2))
        batch = self._batch_shapes()
        learner_shardings = shardings.learner
        learn = jax.jit(self.seeded.learn, donate_argnums=0, in_shardings=(learner_shardings, None, None),
                        out_shardings=(learner_shardings, None))  # fmt: skip
        self._learn = learn.lower(state.learner, batch, state.key).compile()
        names = list(jax.eval_shape(self.seeded.learn, state.learner, batch, state.key)[1])
        if self.seeded.guarded:
            names.append("health/bad_envs")
        return self.iterate, sorted(names)

    def _batch_shapes(self) -> Transition:
        t, n, s = self.num_steps, self.env.num_envs, self.seeded.learner.spaces
        f = lambda *shape: jax.ShapeDtypeStruct((t, n, *shape), jnp.float32)
        actions = jax.ShapeDtypeStruct((t, n), jnp.int32) if s.discrete else f(s.action_size)
        return Transition(f(s.obs_size), f(s.critic_obs_size), actions, f(), f(), f(), f(),
                          f(s.obs_size), f(s.critic_obs_size))  # fmt: skip

    def rollout(self, state: TrainState, keys: jax.Array) -> Transition:
        """T steps of the env with a ~ pi_theta; the batch is time-major (T, S * N, ...)."""
        pool_key, step_keys = keys
        self.env.begin_rollout(pool_key)
        steps = []
        for t in range(self.num_steps):
            obs, critic_obs = self._obs
            action, log_prob = self._act(state.learner, obs, step_keys[t])
            next_obs, next_critic_obs, result = self.env.step(np.asarray(action))
            steps.append(Transition(obs, critic_obs, action, log_prob, result.reward, result.terminated,
                                    result.truncated, result.next_obs, result.next_critic_obs))  # fmt: skip
            self._obs = (next_obs, next_critic_obs)
        return jax.tree.map(lambda *xs: jnp.stack(xs), *steps)

    def iterate(self, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
        keys, pool_key, step_keys = self._keys(state.key)
        batch = self.rollout(state, (pool_key, step_keys))
        bad = None
        if self.seeded.guarded:
            bad = np.asarray(self._bad(batch, *self._obs))
            if bad.any():
                self._obs = self.env.reset_where(bad, bad_envs_key(keys.rollout))
        learner, metrics = self._learn(state.learner, batch, keys.learn)
        if bad is not None:
            metrics["health/bad_envs"] = jnp.asarray(self.seeded.by_seed(bad).sum(axis=1), jnp.float32)
        new = TrainState(learner=learner, env_state=None, key=keys.next, iteration=state.iteration + 1)
        return new, metrics
