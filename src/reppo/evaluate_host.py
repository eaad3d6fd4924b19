"""Whole-episode evaluation on a host env (:class:`reppo.envs.base.HostVecEnv`): the host-path twin of
:func:`reppo.evaluate.make_evaluate`, with the same signature and result.

Every env of the evaluation env runs one whole episode from a reset (seeded from the evaluation's key); steps after
an env's first episode ended are masked out, and the loop stops once every env has finished (at most
``episode_length`` steps). Seed s acts in envs ``s * E .. s * E + E - 1`` with its own parameters and frozen
statistics; the deterministic policy acts with tanh(mu), or the most probable action of a discrete policy.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from reppo.envs.base import HostVecEnv
from reppo.evaluate import EvalResult
from reppo.nets import Actor, DiscreteActor
from reppo.policy import policy_action
from reppo.seeds import over_seeds


def make_host_evaluate(
    actor: Actor | DiscreteActor, env: HostVecEnv, num_seeds: int, deterministic: bool = True
) -> Callable:
    """``evaluate(actor_params, obs_stats, key) -> EvalResult`` (numpy arrays of shape (num_seeds, E))."""

    def act_one(params, stats, obs, key):
        return policy_action(actor, params, stats.normalize(obs), key, deterministic)

    @jax.jit
    def act(actor_params, obs_stats, obs, key):
        obs = obs.reshape(num_seeds, -1, obs.shape[-1])
        action = over_seeds(act_one, num_seeds)(actor_params, obs_stats, obs, jax.random.split(key, num_seeds))
        return action.reshape(env.num_envs, *action.shape[2:])

    def evaluate(actor_params, obs_stats, key) -> EvalResult:
        k_reset, k_steps = jax.random.split(jax.numpy.asarray(key))
        obs, _ = env.reset(k_reset)
        n = env.num_envs
        alive, returns, lengths = np.ones(n, np.float64), np.zeros(n, np.float64), np.zeros(n, np.float64)
        for t in range(env.episode_length):
            action = act(actor_params, obs_stats, obs, jax.random.fold_in(k_steps, t))
            obs, _, result = env.step(np.asarray(action))
            returns += alive * result.reward
            lengths += alive
            alive *= 1.0 - np.maximum(result.terminated, result.truncated)
            if not alive.any():
                break
        shape = (num_seeds, -1)
        return EvalResult(returns=returns.reshape(shape).astype(np.float32), lengths=lengths.reshape(shape))

    return evaluate
