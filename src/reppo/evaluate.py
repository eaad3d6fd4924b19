"""Evaluation over whole episodes on separate environments, with the training statistics frozen."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from reppo.algo import distributions
from reppo.algo.reppo import ACTION_EPS
from reppo.envs.base import VecEnv
from reppo.nets import Actor
from reppo.normalization import RunningStats


@struct.dataclass
class EvalResult:
    returns: jax.Array
    """(num_envs,) undiscounted return of each env's first episode."""
    lengths: jax.Array
    """(num_envs,) length of that episode."""


def make_evaluate(actor: Actor, env: VecEnv, deterministic: bool = True) -> Callable:
    """``evaluate(actor_params, obs_stats, key) -> EvalResult``: one whole episode per env of ``env``.

    ``env`` must start every episode at step 0 (``randomize_steps=False``) so each env runs exactly one full
    episode in ``episode_length`` steps; steps after an env's first episode ended are masked out. The
    deterministic policy acts with tanh(mu); the stochastic one samples.
    """

    def evaluate(actor_params, obs_stats: RunningStats, key: jax.Array) -> EvalResult:
        k_reset, k_pool, k_steps = jax.random.split(key, 3)
        env_state = env.prepare_rollout(env.reset(k_reset), k_pool)

        def step(carry, step_key):
            env_state, alive, returns, lengths = carry
            mean, std = actor.apply(actor_params, obs_stats.normalize(env_state.obs))
            if deterministic:
                action = distributions.deterministic_action(mean)
            else:
                action, _, _ = distributions.sample(step_key, mean, std)
            action = jnp.clip(action, -1.0 + ACTION_EPS, 1.0 - ACTION_EPS)
            env_state, result = env.step(env_state, action)
            returns = returns + alive * result.reward
            lengths = lengths + alive
            alive = alive * (1.0 - jnp.maximum(result.terminated, result.truncated))
            return (env_state, alive, returns, lengths), None

        ones = jnp.ones(env.num_envs, jnp.float32)
        carry = (env_state, ones, 0.0 * ones, 0.0 * ones)
        (_, _, returns, lengths), _ = jax.lax.scan(step, carry, jax.random.split(k_steps, env.episode_length))
        return EvalResult(returns=returns, lengths=lengths)

    return evaluate
