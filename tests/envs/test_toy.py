"""ToyAsymmetric (pure JAX, dict observations) through make_env: the asymmetric-critic path, termination,
randomised step counters, action repeat and the wrapper inside ``lax.scan``."""

from __future__ import annotations

import secrets

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo.envs import make_env, task_defaults
from reppo.envs.toy import ToyAsymmetric


def _seed() -> int:
    return secrets.randbits(31)


class Toy:
    def __init__(self):
        self.env = make_env("ToyAsymmetric", 8, episode_length=50)
        self.reset = jax.jit(self.env.reset)
        self.step = jax.jit(self.env.step)
        self.raw_step = jax.jit(jax.vmap(self.env.env.step))


@pytest.fixture(scope="module")
def toy() -> Toy:
    return Toy()


def test_dict_obs_gives_privileged_critic_obs(toy):
    seed = _seed()
    env = toy.env
    assert (env.obs_size, env.critic_obs_size, env.action_size) == (6, 8, 2)
    assert env.asymmetric
    state = toy.reset(jax.random.PRNGKey(seed))
    np.testing.assert_array_equal(state.obs, state.inner.obs["state"])
    np.testing.assert_array_equal(state.critic_obs, state.inner.obs["privileged_state"])
    action = jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (8, 2)), jnp.float32)
    expected = toy.raw_step(state.inner, action)
    state, res = toy.step(state, action)
    np.testing.assert_array_equal(res.next_obs, expected.obs["state"])
    np.testing.assert_array_equal(res.next_critic_obs, expected.obs["privileged_state"])
    assert res.next_obs.shape == (8, 6) and res.next_critic_obs.shape == (8, 8)
    assert ((res.reward > 0) & (res.reward <= 1)).all()
    d = task_defaults("ToyAsymmetric")
    assert d.asymmetric and d.episode_length == 1000 and d.v_min <= 0 < d.v_max


def test_termination_sets_terminated_not_truncated_and_keeps_final_obs():
    seed = _seed()
    n = 16
    # Small arena, long time limit, full push to +x: every env leaves the arena within a few steps.
    env = make_env("ToyAsymmetric", n, episode_length=1000, config_overrides={"arena": 0.3})
    state = jax.jit(env.reset)(jax.random.PRNGKey(seed))
    step = jax.jit(env.step)
    raw_step = jax.jit(jax.vmap(env.env.step))
    action = jnp.tile(jnp.asarray([[1.0, 0.0]]), (n, 1))
    ended = np.zeros(n, bool)
    for t in range(40):
        expected = raw_step(state.inner, action)
        steps_before = np.asarray(state.steps)
        state, res = step(state, action)
        term = np.asarray(res.terminated) == 1
        msg = f"seed={seed} t={t}"
        np.testing.assert_array_equal(term, np.asarray(expected.done) == 1, err_msg=msg)
        at_limit = steps_before == env.episode_length - 1
        np.testing.assert_array_equal(res.truncated, (at_limit & ~term).astype(np.float32), err_msg=msg)
        np.testing.assert_array_equal(res.next_obs, expected.obs["state"], err_msg=msg)
        np.testing.assert_array_equal(res.next_critic_obs, expected.obs["privileged_state"], err_msg=msg)
        if term.any():
            # Final (pre-reset) observation is outside the arena; the one to act on is a fresh reset.
            assert (np.abs(np.asarray(res.next_critic_obs)[term, :2]).max(axis=-1) > 0.3).all(), msg
            np.testing.assert_array_equal(np.asarray(state.obs)[term, 2:4], 0.0, err_msg=msg)  # vel = 0
            np.testing.assert_array_equal(np.asarray(state.steps)[term], 0, err_msg=msg)
        ended |= term
    assert ended.all(), seed


def test_time_limit_wins_only_without_termination():
    env = make_env("ToyAsymmetric", 4, episode_length=3, randomize_steps=False,
                   config_overrides={"terminate_out_of_bounds": False})  # fmt: skip
    state = jax.jit(env.reset)(jax.random.PRNGKey(_seed()))
    step = jax.jit(env.step)
    flags = []
    for _ in range(7):
        state, res = step(state, jnp.zeros((4, 2)))
        flags.append((float(res.truncated[0]), float(res.terminated[0])))
        assert (res.truncated == res.truncated[0]).all()
    assert flags == [(0, 0), (0, 0), (1, 0), (0, 0), (0, 0), (1, 0), (0, 0)]


def test_randomize_steps():
    seed = _seed()
    env = make_env("ToyAsymmetric", 256, episode_length=100)
    steps = np.asarray(jax.jit(env.reset)(jax.random.PRNGKey(seed)).steps)
    assert steps.dtype == np.int32
    assert ((steps >= 0) & (steps < 100)).all()
    assert len(np.unique(steps)) > 50, seed  # 256 uniform draws over 100 values
    env = make_env("ToyAsymmetric", 256, episode_length=100, randomize_steps=False)
    np.testing.assert_array_equal(jax.jit(env.reset)(jax.random.PRNGKey(seed)).steps, 0)


@pytest.mark.parametrize("strategy", ["pool", "direct", "naive"])
def test_strategies_agree_on_everything_but_the_reset_draws(strategy):
    """All strategies: same true next obs / rewards / flags; resets always fresh, never repeated."""
    seed = _seed()
    n, ep = 6, 4
    env = make_env("ToyAsymmetric", n, episode_length=ep, reset_strategy=strategy, reset_pool_size=3,
                   reset_chunk_size=2, config_overrides={"terminate_out_of_bounds": False})  # fmt: skip
    key = jax.random.PRNGKey(seed)
    T = 3 * ep
    actions = jax.random.uniform(jax.random.PRNGKey(seed + 1), (T, n, 2), minval=-1, maxval=1)

    @jax.jit
    def rollout(state, key):
        state = env.prepare_rollout(state, key)
        return jax.lax.scan(env.step, state, actions)

    state0 = jax.jit(env.reset)(key)
    state, res = rollout(state0, jax.random.PRNGKey(seed + 2))
    # Python loop with the same inputs gives the same result (step/prepare are pure).
    s = jax.jit(env.prepare_rollout)(state0, jax.random.PRNGKey(seed + 2))
    step = jax.jit(env.step)
    resets = [np.asarray(state0.critic_obs)]
    for t in range(T):
        prev_steps = np.asarray(s.steps)
        s, r = step(s, actions[t])
        np.testing.assert_allclose(r.next_critic_obs, res.next_critic_obs[t], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(r.truncated, res.truncated[t])
        np.testing.assert_array_equal(r.truncated, (prev_steps == ep - 1).astype(np.float32))
        resets.append(np.asarray(s.critic_obs)[prev_steps == ep - 1])
    np.testing.assert_allclose(s.critic_obs, state.critic_obs, rtol=1e-6, atol=1e-7)
    r = np.concatenate(resets)
    assert len(r) == n + n * T // ep
    same = np.all(r[:, None] == r[None, :], axis=-1)
    assert same.sum() == len(r), f"seed={seed}: a reset state was repeated"
    ex = state.extra
    assert int(ex.completed_episodes) == n * T // ep
    if strategy == "pool":
        assert int(ex.direct_resets) > 0  # 6 envs ending together with a 3-entry pool


def test_action_repeat_sums_rewards_and_counts_agent_steps():
    seed = _seed()
    env = make_env("ToyAsymmetric", 4, config_overrides={"action_repeat": 2, "episode_length": 10})
    assert env.action_repeat == 2 and env.episode_length == 5
    state = jax.jit(env.reset)(jax.random.PRNGKey(seed))
    action = jax.random.uniform(jax.random.PRNGKey(seed + 1), (4, 2), minval=-1, maxval=1)
    raw_step = jax.jit(jax.vmap(ToyAsymmetric().step))
    one = raw_step(state.inner, action)
    two = raw_step(one, action)
    _, res = jax.jit(env.step)(state, action)
    alive = np.asarray(one.done) == 0
    np.testing.assert_allclose(res.reward, one.reward + np.where(alive, two.reward, 0.0), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(res.next_critic_obs)[alive], np.asarray(two.obs["privileged_state"])[alive], rtol=1e-6
    )


def test_nan_state_terminates_reaches_the_guard_and_is_reset(toy):
    """A diverged env ends its episode; its non-finite next observation and reward are passed on as they are, for
    the NaN guard to count (issue 22: they were zeroed before, so the guard could not see them), and the env
    continues from a reset state. The other envs are untouched."""
    state = toy.reset(jax.random.PRNGKey(_seed()))
    state = state.replace(steps=jnp.zeros_like(state.steps))
    action = jnp.zeros((8, 2)).at[0, 0].set(jnp.nan)
    state, res = toy.step(state, action)
    assert res.terminated.tolist() == [1.0] + [0.0] * 7
    assert not np.isfinite(res.next_obs[0]).all() and not np.isfinite(res.reward[0])
    assert np.isfinite(res.next_obs[1:]).all() and np.isfinite(res.next_critic_obs[1:]).all()
    assert np.isfinite(res.reward[1:]).all() and np.isfinite(state.obs).all() and np.isfinite(state.critic_obs).all()


def test_bad_config_key():
    with pytest.raises(ValueError, match="unknown ToyAsymmetric config keys"):
        make_env("ToyAsymmetric", 2, config_overrides={"arenaa": 1.0})
