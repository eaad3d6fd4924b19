"""The two rollout paths (``reppo.rollout``): the fused iteration's key discipline and determinism, and the host
path driving a JAX env to the fused path's run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from closeness import assert_same_run

from reppo import parallel
from reppo.config import Config, resolve
from reppo.envs import make_env
from reppo.envs.host import JaxEnvOnHost
from reppo.rollout import make_rollout
from reppo.rollout.fused import FusedRollout
from reppo.rollout.host import HostRollout

TINY = dict(
    num_envs=8, num_steps=4, num_minibatches=2, num_epochs=2, critic_width=16, actor_width=16, num_value_samples=3,
    value_chunk_size=12, eval_envs=2,
)  # fmt: skip


def _config(env_id="ToyAsymmetric", **overrides) -> Config:
    return resolve(Config(env=env_id, **{**TINY, **overrides}))


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _concrete(key):
    """The value of a key, through the batching tracers of eager ``vmap`` (which hold their batched value in
    ``val``, beside ``batch_dim``); None if it is abstract."""
    while isinstance(key, jax.core.Tracer) and hasattr(key, "batch_dim"):
        key = key.val
    return None if isinstance(key, jax.core.Tracer) else np.asarray(key)


def test_no_prng_key_is_used_twice(monkeypatch):
    """Run init and two iterations of two seeds eagerly and record every key given to a sampler or to split (the
    seeds' keys through ``vmap`` as one batched key)."""
    config = _config(num_seeds=2)
    rollout = make_rollout(config, make_env(config.env, 2 * config.num_envs, episode_length=6))
    seen: dict[str, list[bytes]] = {"sample": [], "split": []}

    def record(kind, fn):
        def wrapped(key, *args, **kwargs):
            value = _concrete(key)
            if value is not None:
                seen[kind].append(value.tobytes())
            return fn(key, *args, **kwargs)

        return wrapped

    for name in ("normal", "uniform", "permutation", "randint", "bernoulli", "choice", "truncated_normal"):
        monkeypatch.setattr(jax.random, name, record("sample", getattr(jax.random, name)))
    monkeypatch.setattr(jax.random, "split", record("split", jax.random.split))
    with jax.disable_jit():
        state = rollout.init(jax.random.split(jax.random.PRNGKey(np.random.default_rng().integers(2**31)), 2))
        for _ in range(2):
            state, _ = rollout.iteration(state)
    samples, splits = seen["sample"], seen["split"]
    # rollout steps + value chunks + epochs x (perm + minibatches x (action, kl)) at least, per iteration
    assert len(samples) > 2 * (config.num_steps + config.num_epochs * (1 + 2 * config.num_minibatches))
    assert len(set(samples)) == len(samples), "a key was given to two samplers"
    assert len(set(splits)) == len(splits), "a key was split twice"
    assert not set(samples) & set(splits), "a key was both split and used to sample"


def test_iteration_is_deterministic_and_seed_dependent():
    rollout = make_rollout(_config(), make_env("ToyAsymmetric", TINY["num_envs"], episode_length=6))
    run = jax.jit(rollout.iteration)

    def params_after(seed, n=3):
        state = jax.jit(rollout.init)(jax.random.PRNGKey(seed)[None])
        for _ in range(n):
            state, metrics = run(state)
        return state, metrics

    a, ma = params_after(5)
    b, mb = params_after(5)
    c, _ = params_after(6)
    assert _leaves_equal(a.learner.actor_params, b.learner.actor_params)
    assert _leaves_equal(a.learner.critic_params, b.learner.critic_params)
    assert all(float(ma[k][0]) == float(mb[k][0]) for k in ma)
    assert not _leaves_equal(a.learner.actor_params, c.learner.actor_params)
    assert int(a.iteration) == 3


def _iterations(rollout, keys, n: int, mesh):
    """``n`` iterations as the host loop runs them: start, place, compile, iterate; returns (start, states)."""
    start = parallel.to_host(rollout.start(keys))
    shardings = parallel.state_shardings(start, mesh, rollout.env.num_envs)
    iterate, names = rollout.compile(parallel.put(start, shardings), shardings, mesh)
    state, states = parallel.put(start, shardings), []
    for _ in range(n):
        state, metrics = iterate(state)
        states.append((parallel.to_host(state), {k: np.asarray(v) for k, v in metrics.items()}))
    return start, states, names


@pytest.mark.parametrize(
    ("env_id", "num_seeds"),
    [
        ("ToyAsymmetric", 1),
        ("gymnax:CartPole-v1", 2),
        pytest.param("CartpoleBalance", 2, marks=pytest.mark.slow),  # MJX compiles for about a minute
    ],
)
def test_host_path_trains_the_fused_run(env_id, num_seeds):
    """A JAX env stepped from Python (jitted act per step, then one jitted learn) gives the fused program's run
    after 3 iterations: the same keys, metrics, learner and final observations (gymnax CartPole: discrete actions,
    int32 in the batch on both paths). Equal bit for bit on the CPUs
    measured, where the two compilations do the same arithmetic; checked as ``tests/closeness.py`` says, since
    another compiler or processor may fuse the separately compiled pieces differently."""
    config = _config(env_id, num_seeds=num_seeds)
    n = config.num_envs * num_seeds
    fused = make_rollout(config, make_env(env_id, n))
    host = make_rollout(config, JaxEnvOnHost(make_env(env_id, n)))
    assert isinstance(fused, FusedRollout) and isinstance(host, HostRollout)
    mesh = parallel.make_mesh(1)
    keys = jnp.stack([jax.random.split(jax.random.PRNGKey(s))[0] for s in range(3, 3 + num_seeds)])
    start, fused_states, fused_names = _iterations(fused, keys, 3, mesh)
    host_start, host_states, host_names = _iterations(host, keys, 3, mesh)
    assert fused_names == host_names and "health/bad_envs" in host_names
    assert_same_run(host_start.learner, start.learner, start.learner)
    for (a, ma), (b, mb) in zip(fused_states, host_states, strict=True):
        np.testing.assert_array_equal(b.key, a.key)
        assert int(b.iteration) == int(a.iteration)
        assert_same_run(b.learner, a.learner, start.learner)
        for k in ma:
            np.testing.assert_allclose(mb[k], ma[k], rtol=1e-4, atol=1e-6, err_msg=k)
    env_state = fused_states[-1][0].env_state
    np.testing.assert_allclose(host.env.state.obs, env_state.obs, rtol=1e-4, atol=1e-5)
    assert not _leaves_equal(fused_states[-1][0].learner.actor_params, start.learner.actor_params)


def test_env_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="env has 8 envs; expected num_envs \\* num_seeds = 16"):
        make_rollout(_config(num_seeds=2), make_env("ToyAsymmetric", 8))
