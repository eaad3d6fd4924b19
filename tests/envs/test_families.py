"""The env families behind FAMILY:NAME ids: episode ends of the Gymnasium adapter against a scripted vector env
(both autoreset modes), real Gymnasium, EnvPool, gymnax and Brax envs against their own step functions, and the
one-line errors."""

from __future__ import annotations

import sys

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from scripted import ScriptedVectorEnv, length, terminates

from reppo.config import ConfigError
from reppo.envs import make_env, task_defaults
from reppo.envs.build import ScaledRewards, build_envs, label
from reppo.envs.families import MissingExtraError
from reppo.envs.gymnasium import GymnasiumVecEnv
from reppo.envs.playground import UnknownEnvError
from reppo.envs.spaces import UnsupportedSpaceError

MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_episode_ends_follow_the_script(mode):
    """Every transition goes from [i, e, k] to [i, e, k + 1] with the scripted reward; the last one of an episode
    is terminated or truncated as scripted and bootstraps from the true final observation; the next observation
    to act on is the new episode's first; no reset step is ever a transition."""
    n, steps = 6, 25
    raw = ScriptedVectorEnv(n, mode)
    env = GymnasiumVecEnv(raw, episode_length=10)
    obs, critic_obs = env.reset(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(obs, [[i, 0, 0] for i in range(n)])
    rng = np.random.default_rng(0)
    for _ in range(steps):
        action = rng.uniform(-1, 1, (n, 2))
        next_act, _, result = env.step(action)
        np.testing.assert_allclose(raw.received[-1], np.stack([2 * action[:, 0], 5 * (action[:, 1] + 1)], 1), 1e-6)
        for i in range(n):
            _, e, k = obs[i]
            assert k < length(i), "an episode's final observation was acted on"
            end = k + 1 == length(i)
            np.testing.assert_array_equal(result.next_obs[i], [i, e, k + 1])
            assert result.reward[i] == k + 1 + 0.5 * i, "a reset step became a transition"
            assert result.terminated[i] == (end and terminates(i))
            assert result.truncated[i] == (end and not terminates(i))
            np.testing.assert_array_equal(next_act[i], [i, e + 1, 0] if end else [i, e, k + 1])
        obs = next_act
    assert len(raw.received) == steps  # no extra steps taken behind the learner's back


def test_reset_where_resets_only_the_masked_envs():
    env = GymnasiumVecEnv(ScriptedVectorEnv(4, AutoresetMode.NEXT_STEP), episode_length=10)
    env.reset(jax.random.PRNGKey(0))
    env.step(np.zeros((4, 2)))
    obs, _ = env.reset_where(np.array([False, True, False, True]), jax.random.PRNGKey(1))
    np.testing.assert_array_equal(obs[:, 1:], [[0, 1], [1, 0], [0, 1], [1, 0]])


def _pendulum(mode, n=2):
    raw = gymnasium.make_vec(
        "Pendulum-v1", num_envs=n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}
    )
    return GymnasiumVecEnv(raw)


def test_real_gymnasium_modes_give_the_same_transitions():
    """Pendulum-v1 (200-step time limit) under NEXT_STEP and SAME_STEP, same seed and actions: the same
    transitions, truncated at step 200 with the final observation, then the same new episodes."""
    a, b = _pendulum(AutoresetMode.NEXT_STEP), _pendulum(AutoresetMode.SAME_STEP)
    assert a.episode_length == 200 and (a.obs_size, a.action_size) == (3, 1)
    key = jax.random.PRNGKey(3)
    oa, ob = a.reset(key)[0], b.reset(key)[0]
    np.testing.assert_array_equal(oa, ob)
    rng = np.random.default_rng(1)
    for t in range(205):
        action = rng.uniform(-1, 1, (2, 1))
        oa, _, ra = a.step(action)
        ob, _, rb = b.step(action)
        for x, y in zip((oa, ra.reward, ra.truncated, ra.terminated, ra.next_obs),
                        (ob, rb.reward, rb.truncated, rb.terminated, rb.next_obs), strict=True):  # fmt: skip
            np.testing.assert_allclose(x, y, rtol=1e-6)
        assert ra.truncated.all() == (t == 199) and not ra.terminated.any()
        if t == 199:  # the final observation is not the new episode's first
            assert not np.allclose(ra.next_obs, oa)


def test_envpool_final_obs_and_immediate_reset():
    """EnvPool (NEXT_STEP, partial resets returning only the reset rows): Hopper-v5 under random actions falls
    often; each end bootstraps from the fallen final state and the next observation starts a fresh episode (the
    standing pose: height 1.25 +- 0.005, speeds near 0)."""
    pytest.importorskip("envpool")
    env = make_env("envpool:Hopper-v5", 8)
    assert env.mode == "NextStep" and env.obs_size == 11
    obs, _ = env.reset(jax.random.PRNGKey(0))
    rng, ends = np.random.default_rng(2), 0
    for _ in range(200):
        obs, _, result = env.step(rng.uniform(-1, 1, (8, 3)))
        ended = (result.terminated + result.truncated) > 0
        ends += ended.sum()
        if ended.any():
            assert np.all(np.abs(obs[ended, 0] - 1.25) <= 0.0051) and np.all(np.abs(obs[ended, 5:]) <= 0.0051)
            assert np.all(np.abs(result.next_obs[ended] - obs[ended]).max(axis=1) > 0.01)
    assert ends > 8


def test_gymnax_keeps_the_final_obs_and_reports_the_time_limit_as_truncation():
    """Pendulum-v1 through the fused-path wrapper: rewards and final observations equal gymnax's own
    ``step_env`` (actions rescaled to [-2, 2]); at step 200 truncated (not terminated) with the final observation,
    where gymnax's auto-resetting ``step`` would return a reset one."""
    gymnax = pytest.importorskip("gymnax")
    raw, params = gymnax.make("Pendulum-v1")
    env = make_env("gymnax:Pendulum-v1", 2, randomize_steps=False)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    ref_step = jax.jit(jax.vmap(lambda s, a: raw.step_env(jax.random.PRNGKey(0), s, a, params)))
    action = jnp.array([[0.5], [-1.0]])
    for t in range(200):
        ref_obs, _, ref_reward, ref_done, _ = ref_step(state.inner.env_state, 2.0 * action)
        state, result = step(state, action)
        np.testing.assert_allclose(result.next_obs, ref_obs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.reward, ref_reward, rtol=1e-5)
        assert not result.terminated.any()
        assert result.truncated.all() == (t + 1 == params.max_steps_in_episode == 200) and not ref_done.any()
    assert not np.allclose(state.obs, result.next_obs)  # the envs were reset
    assert task_defaults("gymnax:Pendulum-v1").reward_scale == 0.1


@pytest.mark.slow  # Brax's generalized pipeline compiles for about 100 s on a 2-core CPU
def test_brax_terminations_keep_the_final_obs():
    """brax:inverted_pendulum: falling terminates (not truncates); the final observation is Brax's own step."""
    env = make_env("brax:inverted_pendulum", 4, randomize_steps=False)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    step, raw_step = jax.jit(env.step), jax.jit(jax.vmap(env.env.step))
    terminated = 0
    for _ in range(60):
        action = jnp.ones((4, 1))
        expected = raw_step(state.inner, action)
        state, result = step(state, action)
        np.testing.assert_allclose(result.next_obs, expected.obs, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(result.terminated, expected.done)
        terminated += int(result.terminated.sum())
        assert not result.truncated.any()
    assert terminated >= 4
    d = task_defaults("brax:humanoid")
    assert (d.gamma, d.v_min, d.v_max, d.reward_scale, d.episode_length) == (0.99, 0.0, 200.0, 0.1, 1000)


def test_multi_discrete_actions_are_refused_with_one_line():
    raw = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    raw.single_action_space = gymnasium.spaces.MultiDiscrete([2, 3])
    message = r"^action space MultiDiscrete.* is not supported; allowed: a Box or a Discrete$"
    with pytest.raises(UnsupportedSpaceError, match=message):
        GymnasiumVecEnv(raw)


@pytest.mark.parametrize(
    ("env_id", "message"),
    [("gymnasium:HalfCheetah-v9", "unknown Gymnasium env 'HalfCheetah-v9'; did you mean: gymnasium:HalfCheetah-v5"),
     ("dmc:walker", "env 'dmc:walker' has an unknown family 'dmc'; allowed: gymnasium, envpool"),
     ("brax:", "names no env")],
)  # fmt: skip
def test_unknown_ids_are_one_line(env_id, message):
    with pytest.raises(UnknownEnvError, match=message):
        task_defaults(env_id)


def test_missing_extra_is_one_line_and_exit_2(monkeypatch, capsys):
    from reppo.cli import main

    monkeypatch.setitem(sys.modules, "gymnax", None)  # import gymnax now raises ImportError
    with pytest.raises(MissingExtraError, match=r'needs the gymnax extra .*: pip install "reppo\[gymnax\]"$'):
        make_env("gymnax:Pendulum-v1", 2)
    assert main(["train", "--env", "gymnax:Pendulum-v1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "reppo[gymnax]"' in err


def test_env_objects_and_reward_scale():
    """A Gymnasium VectorEnv object is labelled by its id and adapted; the train env's rewards carry the task's
    reward scale, the evaluation env's do not."""
    from reppo.config import Config, resolve

    vec = gymnasium.make_vec("Pendulum-v1", num_envs=4, vectorization_mode="sync")
    assert label(vec, "CartpoleBalance") == "gymnasium:Pendulum-v1"
    config = resolve(Config(env="gymnasium:Pendulum-v1", num_envs=4, num_minibatches=2, eval_envs=2,
                            reward_scale=0.5))  # fmt: skip
    with pytest.raises(ValueError, match="pass eval_env= as well"):
        build_envs(config, vec)
    with pytest.raises(ValueError, match="env has 4 envs; this run needs"):
        build_envs(config, vec, gymnasium.make_vec("Pendulum-v1", num_envs=4))
    train, evaluation = build_envs(config, vec, gymnasium.make_vec("Pendulum-v1", num_envs=2))
    assert isinstance(train, ScaledRewards) and isinstance(evaluation, GymnasiumVecEnv) and evaluation.reseed
    train.reset(jax.random.PRNGKey(0))
    ref = gymnasium.make_vec("Pendulum-v1", num_envs=4, vectorization_mode="sync")
    ref.reset(seed=train.env.last_seed)
    *_, result = train.step(np.zeros((4, 1)))
    np.testing.assert_allclose(result.reward, 0.5 * ref.step(np.zeros((4, 1)))[1], rtol=1e-6)
    with pytest.raises(ConfigError, match="reward_scale=0 must be a finite number > 0"):
        resolve(Config(reward_scale=0))


def test_video_of_a_family_without_a_renderer_is_refused_before_training(tmp_path):
    from reppo.config import Config
    from reppo.envs.render import renders
    from reppo.training import train

    assert renders("gymnasium:Hopper-v5") and renders("envpool:Hopper-v5") and renders("CheetahRun")
    assert not renders("gymnax:Pendulum-v1") and not renders("envpool:T1JoystickFlatTerrain-v1")
    with pytest.raises(ConfigError, match="video=True: 'gymnax:Pendulum-v1' cannot be rendered; allowed: gymnasium:"):
        train(Config(env="gymnax:Pendulum-v1", video=True), run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()
