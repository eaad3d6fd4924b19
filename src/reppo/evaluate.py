"""Evaluation over whole episodes on separate environments, with the training statistics frozen."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from reppo.algo import distributions
from reppo.envs.base import HostVecEnv, VecEnv
from reppo.nets import Actor
from reppo.normalization import RunningStats
from reppo.seeds import over_seeds


@struct.dataclass
class EvalResult:
    returns: jax.Array
    """(num_seeds, envs per seed) undiscounted return of each env's first episode ((episodes,) from
    :func:`evaluate_policy`)."""
    lengths: jax.Array
    """Length of that episode, likewise."""


def make_evaluate(actor: Actor, env: VecEnv, num_seeds: int, deterministic: bool = True) -> Callable:
    """``evaluate(actor_params, obs_stats, key) -> EvalResult``: one whole episode per env of ``env``.

    ``actor_params`` and ``obs_stats`` have a leading seed axis S = ``num_seeds``; seed s acts in envs
    ``s * E .. s * E + E - 1`` (E = env.num_envs / S), and the env itself is never vmapped.

    ``env`` must start every episode at step 0 (``randomize_steps=False``) so each env runs exactly one full
    episode in ``episode_length`` steps; steps after an env's first episode ended are masked out. The
    deterministic policy acts with tanh(mu); the stochastic one samples.
    """

    def act(params, stats, obs, step_key):
        mean, std = actor.apply(params, stats.normalize(obs))
        if deterministic:
            return distributions.deterministic_action(mean)
        return distributions.sample(step_key, mean, std)[0]

    def evaluate(actor_params, obs_stats: RunningStats, key: jax.Array) -> EvalResult:
        k_reset, k_pool, k_steps = jax.random.split(key, 3)
        env_state = env.prepare_rollout(env.reset(k_reset), k_pool)

        def step(carry, step_key):
            env_state, alive, returns, lengths = carry
            obs = env_state.obs.reshape(num_seeds, -1, env_state.obs.shape[-1])
            keys = jax.random.split(step_key, num_seeds)
            action = over_seeds(act, num_seeds)(actor_params, obs_stats, obs, keys).reshape(env.num_envs, -1)
            env_state, result = env.step(env_state, distributions.env_action(action))
            returns = returns + alive * result.reward
            lengths = lengths + alive
            alive = alive * (1.0 - jnp.maximum(result.terminated, result.truncated))
            return (env_state, alive, returns, lengths), None

        ones = jnp.ones(env.num_envs, jnp.float32)
        carry = (env_state, ones, 0.0 * ones, 0.0 * ones)
        (_, _, returns, lengths), _ = jax.lax.scan(step, carry, jax.random.split(k_steps, env.episode_length))
        return EvalResult(returns=returns.reshape(num_seeds, -1), lengths=lengths.reshape(num_seeds, -1))

    return evaluate


def evaluate_policy(policy, episodes: int, key: jax.Array, deterministic: bool = True, impl: str = "jax"):
    """Run ``episodes`` whole episodes of a :class:`reppo.policy.Policy` on its env; returns an EvalResult."""
    from reppo.envs import make_env

    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be a positive integer")
    env = make_env(policy.env, episodes, impl=impl, randomize_steps=False)
    if env.obs_size != policy.obs_size or env.action_size != policy.action_size:
        raise ValueError(
            f"policy (obs {policy.obs_size}, action {policy.action_size}) does not fit {policy.env} "
            f"(obs {env.obs_size}, action {env.action_size})"
        )
    stats = RunningStats(mean=jnp.asarray(policy.obs_mean), var=jnp.asarray(policy.obs_var), count=jnp.ones(()))
    one_seed = lambda x: jnp.asarray(x)[None]
    if isinstance(env, HostVecEnv):  # Gymnasium, EnvPool, ManiSkill: stepped from Python
        from reppo.evaluate_host import make_host_evaluate

        evaluate = make_host_evaluate(policy.actor, env, 1, deterministic)
    else:
        evaluate = jax.jit(make_evaluate(policy.actor, env, 1, deterministic))
    out = evaluate(jax.tree.map(one_seed, policy.params), jax.tree.map(one_seed, stats), key)
    return EvalResult(returns=out.returns[0], lengths=out.lengths[0])
