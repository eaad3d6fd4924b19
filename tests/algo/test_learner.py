"""The REPPO learner on batches from a real (pure-JAX) env: frozen normalisation, the value estimate's chunking, the
update phase as epochs of disjoint minibatches, the asymmetric critic path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from closeness import assert_same_run

from reppo.config import Config, resolve
from reppo.envs import make_env
from reppo.rollout import make_rollout

TINY = dict(
    num_envs=8,
    num_steps=4,
    num_minibatches=2,
    num_epochs=2,
    critic_width=16,
    actor_width=16,
    num_value_samples=3,
    value_chunk_size=12,
    eval_envs=2,
)


def _build(env_id="ToyAsymmetric", **overrides):
    """(config, env, rollout, learner): the fused rollout of one seed and its single-seed learner."""
    config = resolve(Config(env=env_id, **{**TINY, **overrides}))
    env = make_env(env_id, config.num_envs, episode_length=6)
    rollout = make_rollout(config, env)
    return config, env, rollout, rollout.seeded.learner


def _one_seed(tree):
    return jax.tree.map(lambda x: x[0], tree)


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _after_one_iteration(rollout, seed: int):
    """A state one iteration in (statistics and parameters away from their initial values), and a fresh batch."""
    state = jax.jit(rollout.init)(jax.random.PRNGKey(seed)[None])
    state, _ = jax.jit(rollout.iteration)(state)
    _, batch = jax.jit(rollout.rollout)(state.learner, state.env_state, jax.random.PRNGKey(seed + 1)[None])
    return state, batch


def test_normalisation_frozen_during_iteration_and_merged_after():
    config, env, rollout, learner = _build()
    state, batch = _after_one_iteration(rollout, 3)
    old_state = _one_seed(state.learner)
    new_state, _ = jax.jit(learner.learn)(old_state, batch, jax.random.PRNGKey(4))
    obs = np.asarray(batch.obs, np.float64).reshape(-1, env.obs_size)
    old = old_state.obs_stats
    n_old = float(old.count)
    mean = (np.asarray(old.mean) * n_old + obs.sum(0)) / (n_old + len(obs))
    ex2 = ((np.asarray(old.var) + np.asarray(old.mean) ** 2) * n_old + (obs**2).sum(0)) / (n_old + len(obs))
    np.testing.assert_allclose(new_state.obs_stats.mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_state.obs_stats.var, ex2 - mean**2, rtol=1e-3, atol=1e-5)
    # the critic's privileged statistics are kept separately
    assert new_state.critic_obs_stats.mean.shape == (env.critic_obs_size,)
    # the batch was normalised with the frozen (pre-iteration) statistics
    data = jax.jit(learner.targets)(old_state, batch, jax.random.PRNGKey(0))
    raw = np.asarray(batch.obs).reshape(-1, env.obs_size)
    expected = np.clip((raw - old.mean) / np.sqrt(np.maximum(old.var, 1e-4)), -10.0, 10.0)
    np.testing.assert_allclose(data.obs, expected, rtol=1e-5, atol=1e-5)


def test_asymmetric_critic_sees_privileged_observation():
    config, env, rollout, _ = _build()
    assert env.critic_obs_size != env.obs_size
    state = jax.jit(rollout.init)(jax.random.PRNGKey(0)[None])
    first_actor = state.learner.actor_params["params"]["Block_0"]["Dense_0"]["kernel"]
    first_critic = state.learner.critic_params["params"]["encoder_0"]["Dense_0"]["kernel"]
    assert first_actor.shape[1] == env.obs_size  # (seed, in, out)
    assert first_critic.shape[1] == env.critic_obs_size + env.action_size
    state, metrics = jax.jit(rollout.iteration)(state)
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())


@pytest.mark.parametrize("chunk", [1, 5, 10_000])
def test_value_estimate_independent_of_chunking(chunk):
    """V from chunked evaluation equals an unchunked numpy-side average over the same samples."""
    config, env, rollout, learner = _build(value_chunk_size=chunk * TINY["num_value_samples"])
    state = _one_seed(jax.jit(rollout.init)(jax.random.PRNGKey(1)[None]).learner)
    rng = np.random.default_rng()
    obs = jnp.asarray(rng.normal(size=(7, env.obs_size)), jnp.float32)
    cobs = jnp.asarray(rng.normal(size=(7, env.critic_obs_size)), jnp.float32)
    values, first = learner.soft_values(state, obs, cobs, jax.random.PRNGKey(2))
    assert values.shape == (7,) and first.shape == (7, config.critic_width)
    # reference: the soft value under many fresh samples (Monte Carlo), loose statistical tolerance
    alpha = float(jnp.exp(state.log_duals[0]))
    mean, std = learner.actor.apply(state.actor_params, obs)
    u = mean + std * jax.random.normal(jax.random.PRNGKey(9), (4096, *mean.shape))
    from reppo.algo.distributions import log_prob_from_pre_tanh

    q = jax.vmap(lambda a: learner.critic_q(state.critic_params, cobs, a))(jnp.tanh(u))
    ref = np.mean(np.asarray(q) - alpha * np.asarray(log_prob_from_pre_tanh(u, mean, std)), axis=0)
    spread = np.std(np.asarray(q) - alpha * np.asarray(log_prob_from_pre_tanh(u, mean, std)), axis=0)
    k = TINY["num_value_samples"]
    assert np.all(np.abs(np.asarray(values) - ref) <= 6 * spread / np.sqrt(k) + 1e-4)


def test_update_is_epochs_of_disjoint_minibatches_of_one_shuffle():
    """The jitted update phase equals a plain loop: each epoch permutes the batch once and hands its M consecutive
    slices to ``update_minibatch`` in order, so every sample is used exactly once per epoch."""
    config, env, rollout, learner = _build()
    rng = np.random.default_rng()
    state, batch = _after_one_iteration(rollout, int(rng.integers(2**31 - 1)))
    state = _one_seed(state.learner)
    k_targets, k_update = jax.random.split(jax.random.PRNGKey(int(rng.integers(2**31))), 2)
    data = jax.jit(learner.targets)(state, batch, k_targets)
    got, _ = jax.jit(learner.update)(state, data, k_update)

    step = jax.jit(learner.update_minibatch)
    expected, size = state, config.minibatch_size
    for epoch_key in jax.random.split(k_update, config.num_epochs):
        k_perm, k_mb = jax.random.split(epoch_key)
        perm = np.asarray(jax.random.permutation(k_perm, config.batch_size))
        assert sorted(perm) == list(range(config.batch_size))
        for i, mb_key in enumerate(jax.random.split(k_mb, config.num_minibatches)):
            rows = perm[i * size : (i + 1) * size]
            mb = jax.tree.map(lambda x, rows=rows: np.asarray(x)[rows], data)
            expected, _ = step(expected, mb, mb_key)
    # One scan against a loop of separately compiled steps: the same sums, possibly fused in another order.
    assert_same_run(got, expected, state)
    assert not _leaves_equal(got.critic_params, state.critic_params)
