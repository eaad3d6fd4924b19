"""The jitted REPPO iteration on a real (pure-JAX) env: PRNG independence, frozen normalisation, determinism,
the asymmetric critic path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from closeness import assert_same_run

from reppo.algo.reppo import make_train
from reppo.config import Config, resolve
from reppo.envs import make_env

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
    config = resolve(Config(env=env_id, **{**TINY, **overrides}))
    env = make_env(env_id, config.num_envs, episode_length=6)
    return config, env, *make_train(config, env)


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_no_prng_key_is_used_twice(monkeypatch):
    """Run two iterations eagerly and record every concrete key given to a sampler or to split."""
    config, env, init, iteration, _ = _build()
    seen: dict[str, list[bytes]] = {"sample": [], "split": []}

    def record(kind, fn):
        def wrapped(key, *args, **kwargs):
            if not isinstance(key, jax.core.Tracer):
                seen[kind].append(
                    np.asarray(
                        jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
                    ).tobytes()
                )
            return fn(key, *args, **kwargs)

        return wrapped

    for name in ("normal", "uniform", "permutation", "randint", "bernoulli", "choice", "truncated_normal"):
        monkeypatch.setattr(jax.random, name, record("sample", getattr(jax.random, name)))
    monkeypatch.setattr(jax.random, "split", record("split", jax.random.split))
    with jax.disable_jit():
        state = init(jax.random.PRNGKey(np.random.default_rng().integers(2**31)))
        for _ in range(2):
            state, _ = iteration(state)
    samples, splits = seen["sample"], seen["split"]
    # rollout steps + value chunks + epochs x (perm + minibatches x (action, kl)) at least, per iteration
    assert len(samples) > 2 * (config.num_steps + config.num_epochs * (1 + 2 * config.num_minibatches))
    assert len(set(samples)) == len(samples), "a key was given to two samplers"
    assert len(set(splits)) == len(splits), "a key was split twice"
    assert not set(samples) & set(splits), "a key was both split and used to sample"


def test_normalisation_frozen_during_iteration_and_merged_after():
    config, env, init, iteration, algo = _build()
    state = jax.jit(init)(jax.random.PRNGKey(3))
    state, _ = jax.jit(iteration)(state)  # stats now differ from their initial values
    _, k_rollout, _, _ = jax.random.split(state.key, 4)
    _, traj = jax.jit(algo.rollout)(state, k_rollout)
    new_state, _ = jax.jit(iteration)(state)
    obs = np.asarray(traj.obs, np.float64).reshape(-1, env.obs_size)
    old = state.obs_stats
    n_old = float(old.count)
    mean = (np.asarray(old.mean) * n_old + obs.sum(0)) / (n_old + len(obs))
    ex2 = ((np.asarray(old.var) + np.asarray(old.mean) ** 2) * n_old + (obs**2).sum(0)) / (n_old + len(obs))
    np.testing.assert_allclose(new_state.obs_stats.mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_state.obs_stats.var, ex2 - mean**2, rtol=1e-3, atol=1e-5)
    # the critic's privileged statistics are kept separately
    assert new_state.critic_obs_stats.mean.shape == (env.critic_obs_size,)
    # the batch was normalised with the frozen (pre-iteration) statistics
    data = jax.jit(algo.compute_targets)(state, traj, jax.random.PRNGKey(0))
    expected = (np.asarray(traj.obs).reshape(-1, env.obs_size) - old.mean) / np.sqrt(old.var + 1e-8)
    np.testing.assert_allclose(data.obs, expected, rtol=1e-5, atol=1e-5)


def test_iteration_is_deterministic_and_seed_dependent():
    _, _, init, iteration, _ = _build()
    run = jax.jit(iteration)

    def params_after(seed, n=3):
        state = jax.jit(init)(jax.random.PRNGKey(seed))
        for _ in range(n):
            state, metrics = run(state)
        return state, metrics

    a, ma = params_after(5)
    b, mb = params_after(5)
    c, _ = params_after(6)
    assert _leaves_equal(a.actor_params, b.actor_params) and _leaves_equal(a.critic_params, b.critic_params)
    assert all(float(ma[k]) == float(mb[k]) for k in ma)
    assert not _leaves_equal(a.actor_params, c.actor_params)
    assert int(a.iteration) == 3


def test_asymmetric_critic_sees_privileged_observation():
    config, env, init, iteration, algo = _build()
    assert env.critic_obs_size != env.obs_size
    state = jax.jit(init)(jax.random.PRNGKey(0))
    first_actor = state.actor_params["params"]["Block_0"]["Dense_0"]["kernel"]
    first_critic = state.critic_params["params"]["encoder_0"]["Dense_0"]["kernel"]
    assert first_actor.shape[0] == env.obs_size
    assert first_critic.shape[0] == env.critic_obs_size + env.action_size
    state, metrics = jax.jit(iteration)(state)
    assert all(np.isfinite(float(v)) for v in metrics.values())


@pytest.mark.parametrize("chunk", [1, 5, 10_000])
def test_value_estimate_independent_of_chunking(chunk):
    """V from chunked evaluation equals an unchunked numpy-side average over the same samples."""
    config, env, init, _, algo = _build(value_chunk_size=chunk * TINY["num_value_samples"])
    state = jax.jit(init)(jax.random.PRNGKey(1))
    rng = np.random.default_rng()
    obs = jnp.asarray(rng.normal(size=(7, env.obs_size)), jnp.float32)
    cobs = jnp.asarray(rng.normal(size=(7, env.critic_obs_size)), jnp.float32)
    values, first = algo.soft_values(state, obs, cobs, jax.random.PRNGKey(2))
    assert values.shape == (7,) and first.shape == (7, config.critic_width)
    # reference: the soft value under many fresh samples (Monte Carlo), loose statistical tolerance
    alpha = float(jnp.exp(state.log_duals[0]))
    mean, std = algo.actor.apply(state.actor_params, obs)
    u = mean + std * jax.random.normal(jax.random.PRNGKey(9), (4096, *mean.shape))
    from reppo.algo.distributions import log_prob_from_pre_tanh

    q = jax.vmap(lambda a: algo.critic_q(state.critic_params, cobs, a))(jnp.tanh(u))
    ref = np.mean(np.asarray(q) - alpha * np.asarray(log_prob_from_pre_tanh(u, mean, std)), axis=0)
    spread = np.std(np.asarray(q) - alpha * np.asarray(log_prob_from_pre_tanh(u, mean, std)), axis=0)
    k = TINY["num_value_samples"]
    assert np.all(np.abs(np.asarray(values) - ref) <= 6 * spread / np.sqrt(k) + 1e-4)


def test_update_is_epochs_of_disjoint_minibatches_of_one_shuffle():
    """The jitted update phase equals a plain loop: each epoch permutes the batch once and hands its M consecutive
    slices to ``update_minibatch`` in order, so every sample is used exactly once per epoch."""
    config, env, init, iteration, algo = _build()
    rng = np.random.default_rng()
    state = jax.jit(init)(jax.random.PRNGKey(int(rng.integers(2**31))))
    state, _ = jax.jit(iteration)(state)  # away from the initial parameters and statistics
    k_rollout, k_targets, k_update = jax.random.split(jax.random.PRNGKey(int(rng.integers(2**31))), 3)
    _, traj = jax.jit(algo.rollout)(state, k_rollout)
    data = jax.jit(algo.compute_targets)(state, traj, k_targets)
    got, _ = jax.jit(algo.update)(state, data, k_update)

    step = jax.jit(algo.update_minibatch)
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
