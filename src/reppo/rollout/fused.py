"""The fused rollout path: a JAX env stepped inside the compiled iteration with ``lax.scan``, then the learner,
in one program per iteration (spec section 1). The envs of all seeds step as one batch; acting and learning are
vmapped over seeds (``reppo.seeds``)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct
from jax.sharding import Mesh

from reppo import parallel
from reppo.algo import guard
from reppo.algo.learner import LearnerState, Transition
from reppo.envs.base import EnvState, VecEnv
from reppo.rollout import (
    Iterate,
    TrainState,
    bad_envs_key,
    iteration_keys,
    rollout_keys,
    start_keys,
)
from reppo.seeds import SeededLearner


class FusedRollout(struct.PyTreeNode):
    """``init(keys) -> TrainState`` and ``iteration(state) -> (state, metrics)``, pure and jittable."""

    seeded: SeededLearner = struct.field(pytree_node=False)
    env: VecEnv = struct.field(pytree_node=False)
    shard_rows: Callable = struct.field(pytree_node=False)
    """Lays a per-env axis out over the devices (``reppo.parallel.row_sharder``); each device keeps its envs' steps."""

    def init(self, keys: jax.Array) -> TrainState:
        """The state of S seeds (``keys``: (S, 2)): fresh learners, the envs reset, iteration 0."""
        learner_keys, env_key, next_keys = start_keys(keys)
        env_state = self.env.reset(env_key)
        learner = self.seeded.init(learner_keys, env_state.obs, env_state.critic_obs)
        return TrainState(learner=learner, env_state=env_state, key=next_keys, iteration=jnp.zeros((), jnp.int32))

    def rollout(self, learner: LearnerState, env_state: EnvState, keys: jax.Array) -> tuple[EnvState, Transition]:
        """T steps of all envs with a ~ pi_theta (statistics frozen); the batch is time-major (T, S * N, ...)."""
        pool_key, step_keys = rollout_keys(keys, self.seeded.learner.config.num_steps)
        env_state = self.env.prepare_rollout(env_state, pool_key)

        def step(env_state: EnvState, step_keys: jax.Array):
            action, log_prob = self.seeded.act(learner, env_state.obs, step_keys)
            next_state, result = self.env.step(env_state, action)
            transition = Transition(
                obs=env_state.obs,
                critic_obs=env_state.critic_obs,
                actions=action,
                log_probs=log_prob,
                rewards=result.reward,
                terminated=result.terminated,
                truncated=result.truncated,
                next_obs=result.next_obs,
                next_critic_obs=result.next_critic_obs,
            )
            return next_state, jax.tree.map(self.shard_rows, transition)

        return jax.lax.scan(step, env_state, step_keys)

    def iteration(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        """Rollout, then every seed learns from its envs' steps. With the guard, the envs that went non-finite are
        reset (``health/bad_envs``) and a seed's non-finite update is rolled back."""
        keys = iteration_keys(state.key)
        env_state, batch = self.rollout(state.learner, state.env_state, keys.rollout)
        if self.seeded.guarded:
            bad = guard.bad_envs(batch, env_state.obs, env_state.critic_obs)
            env_state = self.env.reset_where(env_state, bad, bad_envs_key(keys.rollout))
        learner, metrics = self.seeded.learn(state.learner, batch, keys.learn)
        if self.seeded.guarded:
            metrics["health/bad_envs"] = jnp.sum(self.seeded.by_seed(bad), axis=1, dtype=jnp.float32)
        new = TrainState(learner=learner, env_state=env_state, key=keys.next, iteration=state.iteration + 1)
        return new, metrics

    # ---- what the host loop calls -------------------------------------------------------------------------
    def start(self, keys: jax.Array) -> TrainState:
        return jax.jit(self.init)(keys)

    def abstract_state(self, keys: jax.Array) -> TrainState:
        return jax.eval_shape(self.init, keys)

    def compile(self, state: TrainState, shardings, mesh: Mesh) -> tuple[Iterate, list[str]]:
        """The iteration compiled for ``state``'s shapes and ``shardings`` (state donated), and its metric names."""
        lowered = parallel.jit_iteration(self.iteration, shardings, mesh).lower(state)
        names = list(jax.tree.unflatten(lowered.out_tree, [0] * lowered.out_tree.num_leaves)[1])
        return lowered.compile(), names
