"""Evaluation over whole episodes on separate environments, with the training statistics frozen."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from reppo.envs.base import HostVecEnv, VecEnv
from reppo.nets import Actor, DiscreteActor
from reppo.normalization import RunningStats
from reppo.policy import policy_action
from reppo.seeds import over_seeds


@struct.dataclass
class EvalResult:
    returns: jax.Array
    """(num_seeds, envs per seed) undiscounted return of each env's first episode ((episodes,) from
    :func:`evaluate_policy`)."""
    lengths: jax.Array
    """Length of that episode, likewise."""


def make_evaluate(actor: Actor | DiscreteActor, env: VecEnv, num_seeds: int, deterministic: bool = True) -> Callable:
    """``evaluate(actor_params, obs_stats, key) -> EvalResult``: one whole episode per env of ``env``.

    ``actor_params`` and ``obs_stats`` have a leading seed axis S = ``num_seeds``; seed s acts in envs
    ``s * E .. s * E + E - 1`` (E = env.num_envs / S), and the env itself is never vmapped.

    ``env`` must start every episode at step 0 (``randomize_steps=False``) so each env runs exactly one full
    episode in ``episode_length`` steps; steps after an env's first episode ended are masked out. The
    deterministic policy acts with tanh(mu) (discrete: the most probable action); the stochastic one samples
    (``reppo.policy.policy_action``).
    """

    def act(params, stats, obs, step_key):
        return policy_action(actor, params, stats.normalize(obs), step_key, deterministic)

    def evaluate(actor_params, obs_stats: RunningStats, key: jax.Array) -> EvalResult:
        k_reset, k_pool, k_steps = jax.random.split(key, 3)
        env_state = env.prepare_rollout(env.reset(k_reset), k_pool)

        def step(carry, step_key):
            env_state, alive, returns, lengths = carry
            obs = env_state.obs.reshape(num_seeds, -1, env_state.obs.shape[-1])
            keys = jax.random.split(step_key, num_seeds)
            action = over_seeds(act, num_seeds)(actor_params, obs_stats, obs, keys)
            env_state, result = env.step(env_state, action.reshape(env.num_envs, *action.shape[2:]))
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
    env_actions = int(getattr(env, "num_actions", 0) or 0)
    if (env.obs_size, env.action_size, env_actions) != (policy.obs_size, policy.action_size, policy.num_actions):
        raise ValueError(
            f"policy (obs {policy.obs_size}, action {policy.action_size}, discrete actions {policy.num_actions}) "
            f"does not fit {policy.env} (obs {env.obs_size}, action {env.action_size}, discrete actions {env_actions})"
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
