"""Discrete action spaces in the env families (docs/discrete.md): the action map, gymnax's discrete tasks through
the fused-path wrapper against gymnax's own step, and Gymnasium's CartPole through the host adapter against a
plain Gymnasium vector env."""

from __future__ import annotations

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo.envs import make_env, task_defaults
from reppo.envs.spaces import DiscreteActions, UnsupportedSpaceError, action_map


@pytest.mark.parametrize("seed", range(3))
def test_discrete_action_map_shifts_indices_by_the_space_start(seed):
    rng = np.random.default_rng(seed)
    n, start = int(rng.integers(2, 9)), int(rng.integers(-5, 6))
    actions = action_map(gymnasium.spaces.Discrete(n, start=start))
    assert actions == DiscreteActions(n, start) and (actions.num_actions, actions.size) == (n, 1)
    index = rng.integers(0, n, 16).astype(np.int32)
    out = actions(index)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, index.astype(np.int64) + start)
    assert all(actions.__class__ is DiscreteActions and gymnasium.spaces.Discrete(n, start=start).contains(a)
               for a in out)  # fmt: skip
    with pytest.raises(TypeError, match="a discrete action must be an integer index, got dtype float32"):
        actions(index.astype(np.float32))


def test_discrete_spaces_that_cannot_be_learned_are_one_line():
    with pytest.raises(UnsupportedSpaceError, match=r"^discrete action space .* allowed: a Discrete of at least 2"):
        action_map(gymnasium.spaces.Discrete(1))
    with pytest.raises(UnsupportedSpaceError, match=r"^action space MultiBinary.* allowed: a Box or a Discrete$"):
        action_map(gymnasium.spaces.MultiBinary(3))


@pytest.mark.parametrize(("name", "num_actions", "obs_size"), [("Acrobot-v1", 3, 6), ("Breakout-MinAtar", 3, 400)])
def test_gymnax_discrete_tasks_step_as_gymnax_does(name, num_actions, obs_size):
    """Every action index reaches gymnax unchanged (a [-1, 1] clip would turn action 2 into 1): the wrapper's
    observations and rewards equal gymnax's ``step_env`` on the same states, keys and actions; MinAtar's 10 x 10 x C
    grid is flattened."""
    gymnax = pytest.importorskip("gymnax")
    raw, params = gymnax.make(name)
    n = 2 * num_actions
    env = make_env(f"gymnax:{name}", n, randomize_steps=False)
    assert (env.num_actions, env.action_size, env.obs_size, env.critic_obs_size) == (num_actions, 1, obs_size, obs_size)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    rng = np.random.default_rng(0)
    for _ in range(30):
        action = jnp.asarray(rng.integers(0, num_actions, n), jnp.int32)
        step_keys = jax.vmap(lambda k: jax.random.split(k)[1])(state.inner.key)
        ref_obs, _, ref_reward, ref_done, _ = jax.vmap(raw.step_env, (0, 0, 0, None))(
            step_keys, state.inner.env_state, action, params
        )
        state, result = step(state, action)
        # Acrobot integrates an ODE in float32, compiled differently in the two programs: a few ulp apart
        np.testing.assert_allclose(
            result.next_obs, np.asarray(ref_obs, np.float32).reshape(n, -1), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_array_equal(result.reward, ref_reward)
        np.testing.assert_array_equal(result.terminated, np.asarray(ref_done, np.float32))


def test_gymnax_discrete_presets():
    pytest.importorskip("gymnax")
    for env_id, expected in [("gymnax:CartPole-v1", (0.99, 0.0, 110.0, 500)),
                             ("gymnax:Breakout-MinAtar", (0.99, 0.0, 50.0, 1000)),
                             ("gymnax:Asterix-MinAtar", (0.99, 0.0, 20.0, 1000)),
                             ("gymnax:Freeway-MinAtar", (0.99, 0.0, 50.0, 2500))]:  # fmt: skip
        d = task_defaults(env_id)
        assert (d.gamma, d.v_min, d.v_max, d.episode_length) == expected, env_id


def test_gymnasium_cartpole_on_the_host_path_matches_gymnasium():
    """CartPole-v1 through the host adapter: int actions, the same observations, rewards and episode ends as a
    plain Gymnasium vector env stepped with the same seed and actions (NEXT_STEP autoreset: the adapter resets
    ended envs at once, so compare only up to the first end)."""
    env = make_env("gymnasium:CartPole-v1", 4)
    assert (env.num_actions, env.action_size, env.obs_size) == (2, 1, 4)
    ref = gymnasium.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync")
    key = jax.random.PRNGKey(5)
    obs, _ = env.reset(key)
    ref_obs, _ = ref.reset(seed=env.last_seed)
    np.testing.assert_array_equal(obs, ref_obs)
    rng = np.random.default_rng(1)
    for _ in range(500):
        action = rng.integers(0, 2, 4).astype(np.int32)
        _, _, result = env.step(action)
        ref_obs, ref_reward, ref_terminated, _, _ = ref.step(action.astype(np.int64))
        np.testing.assert_array_equal(result.next_obs, ref_obs)
        np.testing.assert_array_equal(result.reward, ref_reward)
        np.testing.assert_array_equal(result.terminated, ref_terminated)
        if result.terminated.any():
            break
    assert result.terminated.any()


def test_envpool_atari_trains_on_lives_and_clipped_rewards_and_evaluates_whole_games():
    """Breakout-v5: 4 actions, 4 x 84 x 84 frames flattened. The training pool ends an episode at each lost life
    and clips rewards; the evaluation pool plays whole games (5 lives) with game scores. Same seeds and random
    actions: the training pool reports several times more episode ends."""
    pytest.importorskip("envpool")
    train_env, eval_env = make_env("envpool:Breakout-v5", 2), make_env("envpool:Breakout-v5", 2, randomize_steps=False)
    assert (train_env.num_actions, train_env.action_size, train_env.obs_size) == (4, 1, 4 * 84 * 84)
    assert (train_env.env.config["episodic_life"], train_env.env.config["reward_clip"]) == (True, True)
    key, rng, ends = jax.random.PRNGKey(0), np.random.default_rng(0), []
    for env in (train_env, eval_env):
        env.reset(key)
        eval_pool = env is eval_env
        assert (env.env.config["episodic_life"], env.env.config["reward_clip"]) == (not eval_pool, not eval_pool)
        count = 0
        for _ in range(600):
            _, _, result = env.step(rng.integers(0, 4, 2).astype(np.int32))
            count += int(result.terminated.sum())
        ends.append(count)
    assert ends[0] >= 2 * max(ends[1], 1), ends
    d = task_defaults("envpool:Breakout-v5")
    assert (d.gamma, d.v_min, d.v_max, d.episode_length) == (0.99, -10.0, 10.0, 27000)
