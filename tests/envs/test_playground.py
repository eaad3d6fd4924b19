"""The auto-reset wrapper on a real MuJoCo Playground env (CartpoleBalance, impl="jax"), plus ids and errors.

One small env (4 envs, 6-step episodes, a 2-entry reset pool: both the pool path and the direct fallback run)
is compiled once per module; every test draws fresh random keys and actions.
"""

from __future__ import annotations

import secrets

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo.envs import (
    AutoResetVecEnv,
    UnknownEnvError,
    available_envs,
    make_env,
    task_defaults,
)

N, EP, POOL = 4, 6, 2


class Cart:
    def __init__(self):
        self.env: AutoResetVecEnv = make_env("CartpoleBalance", N, impl="jax", episode_length=EP,
                                             reset_pool_size=POOL)  # fmt: skip
        self.reset = jax.jit(self.env.reset)
        self.step = jax.jit(self.env.step)
        self.prepare = jax.jit(self.env.prepare_rollout)
        self.raw_step = jax.jit(jax.vmap(self.env.env.step))


@pytest.fixture(scope="module")
def cart() -> Cart:
    return Cart()


def _seed() -> int:
    return secrets.randbits(31)


def _actions(rng: np.random.Generator, env) -> jnp.ndarray:
    # Slightly outside [-1, 1] on purpose: the wrapper clips.
    return jnp.asarray(rng.uniform(-1.1, 1.1, (env.num_envs, env.action_size)), jnp.float32)


def test_shapes_and_presets(cart):
    env = cart.env
    assert (env.num_envs, env.episode_length, env.action_size) == (N, EP, 1)
    assert env.obs_size == env.critic_obs_size == 5
    assert env.reset_pool_size == POOL
    d = task_defaults("CartpoleBalance")
    assert (d.gamma, d.v_min, d.v_max, d.asymmetric, d.episode_length) == (0.99, 0.0, 150.0, False, 1000)
    d = task_defaults("Go1JoystickFlatTerrain")
    assert (d.gamma, d.v_min, d.v_max, d.asymmetric) == (0.97, -10.0, 10.0, True)
    ids = available_envs()
    assert "ToyAsymmetric" in ids and "CheetahRun" in ids and "G1JoystickFlatTerrain" in ids
    assert ids == sorted(ids)


def diverge(state, env_index: int, velocity: float = 1e20):
    """The state with one env's cart moving at ``velocity``: finite, but MJX's next step turns it into NaN."""
    data = state.inner.data
    return state.replace(inner=state.inner.replace(data=data.replace(qvel=data.qvel.at[env_index].set(velocity))))


def test_diverged_physics_reaches_the_caller(cart):
    """A physics divergence is reported, not hidden: the diverged env's reward and true next observation are
    non-finite as MJX made them (for the NaN/Inf guard to see), Playground's termination replaces the state by a
    reset one, and the other envs and the episode statistics stay finite."""
    seed = _seed()
    rng = np.random.default_rng(seed)
    k = int(rng.integers(N))
    state = cart.prepare(cart.reset(jax.random.PRNGKey(seed)), jax.random.PRNGKey(seed + 1))
    state = diverge(state, k)
    assert np.all(np.isfinite(np.asarray(state.obs)))
    new, res = cart.step(state, _actions(rng, cart.env))
    others = np.arange(N) != k
    reward, next_obs = np.asarray(res.reward), np.asarray(res.next_obs)
    assert not np.isfinite(reward[k]) and not np.all(np.isfinite(next_obs[k])), seed
    assert not np.all(np.isfinite(np.asarray(res.next_critic_obs)[k])), seed
    assert np.all(np.isfinite(reward[others])) and np.all(np.isfinite(next_obs[others])), seed
    assert float(res.terminated[k]) == 1.0 and int(new.steps[k]) == 0, seed
    assert np.all(np.isfinite(np.asarray(new.obs))) and np.all(np.isfinite(np.asarray(new.inner.data.qvel)))
    assert np.isfinite(float(new.extra.completed_return_sum)) and np.all(np.isfinite(new.extra.episode_return))


def test_final_observation_truncation_and_fresh_resets(cart):
    """Walk 5 episodes per env, checking every step against the raw Playground env."""
    seed = _seed()
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    state = cart.reset(key)
    steps0 = np.asarray(state.steps)
    assert ((steps0 >= 0) & (steps0 < EP)).all(), seed
    np.testing.assert_array_equal(state.obs, state.critic_obs)

    reset_obs = list(np.asarray(state.obs))  # every observation a reset produced, initial ones included
    n_truncated = 0
    for t in range(5 * EP):
        if t % 4 == 0:  # a rollout boundary every 4 steps
            key, sub = jax.random.split(key)
            state = cart.prepare(state, sub)
        if t == 2 * EP:  # force all envs to end together: more endings than the pool holds -> direct resets
            state = state.replace(steps=jnp.full((N,), EP - 1, jnp.int32))
        action = _actions(rng, cart.env)
        expected = cart.raw_step(state.inner, jnp.clip(action, -1.0, 1.0))
        steps_before = np.asarray(state.steps)
        direct_before = int(state.extra.direct_resets)
        state, res = cart.step(state, action)

        at_limit = steps_before == EP - 1
        msg = f"seed={seed} t={t}"
        # The true next observation is the raw env's, reset or not.
        np.testing.assert_array_equal(res.next_obs, expected.obs, err_msg=msg)
        np.testing.assert_array_equal(res.next_critic_obs, expected.obs, err_msg=msg)
        np.testing.assert_allclose(res.reward, expected.reward, err_msg=msg)
        np.testing.assert_array_equal(res.truncated, at_limit.astype(np.float32), err_msg=msg)
        np.testing.assert_array_equal(res.terminated, np.zeros(N, np.float32), err_msg=msg)
        assert res.truncated.dtype == res.terminated.dtype == jnp.float32
        np.testing.assert_array_equal(state.steps, np.where(at_limit, 0, steps_before + 1), err_msg=msg)

        time_ = np.asarray(state.inner.data.time)
        obs = np.asarray(state.obs)
        # Continuing envs act on the true next observation; ended ones on a fresh reset (time back to 0).
        np.testing.assert_array_equal(obs[~at_limit], np.asarray(res.next_obs)[~at_limit], err_msg=msg)
        assert (time_[~at_limit] > 0).all(), msg
        assert (time_[at_limit] == 0).all(), msg
        assert not np.any(np.all(obs[at_limit] == np.asarray(res.next_obs)[at_limit], axis=-1)), msg
        np.testing.assert_array_equal(obs, np.asarray(state.inner.obs), err_msg=msg)
        if t == 2 * EP:
            assert at_limit.all() and int(state.extra.direct_resets) == direct_before + 1, msg
        reset_obs.extend(obs[at_limit])
        n_truncated += int(at_limit.sum())

    assert n_truncated >= 4 * N, seed
    # Every reset drew fresh randomness: no two reset observations (any env, any time, pool or direct) agree.
    r = np.stack(reset_obs)
    assert len(r) == N + n_truncated
    same = np.all(r[:, None, :] == r[None, :, :], axis=-1)
    assert same.sum() == len(r), f"seed={seed}: repeated reset states"


def test_pool_refresh_only_redoes_consumed_entries(cart):
    seed = _seed()
    state = cart.reset(jax.random.PRNGKey(seed))
    pool_before = np.asarray(state.extra.pool.obs)
    # Exactly one env ends at the next step: it takes pool entry 0.
    state = state.replace(steps=jnp.asarray([EP - 1] + [0] * (N - 1), jnp.int32))
    state, res = cart.step(state, jnp.zeros((N, 1)))
    assert res.truncated.tolist() == [1.0] + [0.0] * (N - 1)
    np.testing.assert_array_equal(state.obs[0], pool_before[0])
    assert int(state.extra.pool_used) == 1 and int(state.extra.pool_next) == 1
    state = cart.prepare(state, jax.random.PRNGKey(seed + 1))
    pool_after = np.asarray(state.extra.pool.obs)
    assert int(state.extra.pool_used) == 0
    assert not np.array_equal(pool_after[0], pool_before[0]), seed  # consumed entry regenerated
    np.testing.assert_array_equal(pool_after[1:], pool_before[1:])  # unused entries kept


def test_unknown_env_lists_close_matches():
    with pytest.raises(UnknownEnvError) as e:
        make_env("CartpoleBalanc", 2)
    msg = str(e.value)
    assert msg == (
        "unknown env 'CartpoleBalanc'; did you mean: CartpoleBalance, CartpoleBalanceSparse? (see available_envs())"
    )
    assert "\n" not in msg
    assert isinstance(e.value, ValueError)
    with pytest.raises(UnknownEnvError, match="did you mean: .*Go1JoystickFlatTerrain"):
        make_env("Go1Joystick", 2)
    with pytest.raises(UnknownEnvError, match=r"^unknown env 'zzzzqqq' \(see available_envs\(\)\)$"):
        task_defaults("zzzzqqq")


def test_bad_impl_is_one_line():
    with pytest.raises(ValueError) as e:
        make_env("CartpoleBalance", 2, impl="mjx")
    assert str(e.value) == "impl must be one of 'jax', 'warp', got 'mjx'"


@pytest.mark.slow
def test_warp_backend_auto_reset():
    """MJX's warp backend keeps some state leaves (contact buffers, counters) global to the batch; reset
    swaps must leave those alone. ~1 min on CPU, so marked slow."""
    seed = _seed()
    env = make_env("CartpoleBalance", N, impl="warp", episode_length=EP, reset_pool_size=POOL)
    assert not all(env._batched)
    state = jax.jit(env.reset)(jax.random.PRNGKey(seed))
    step, prepare = jax.jit(env.step), jax.jit(env.prepare_rollout)
    raw_step = jax.jit(jax.vmap(env.env.step))
    rng = np.random.default_rng(seed)
    for t in range(2 * EP + 1):
        if t % 4 == 0:
            state = prepare(state, jax.random.PRNGKey(seed + t + 1))
        action = _actions(rng, env)
        expected = raw_step(state.inner, jnp.clip(action, -1.0, 1.0))
        at_limit = np.asarray(state.steps) == EP - 1
        state, res = step(state, action)
        np.testing.assert_allclose(res.next_obs, expected.obs, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(res.truncated, at_limit.astype(np.float32))
        assert (np.asarray(state.inner.data.time)[at_limit] == 0).all()
        assert (np.asarray(state.inner.data.time)[~at_limit] > 0).all()
