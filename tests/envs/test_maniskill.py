"""ManiSkill3 (``pip install -e ".[maniskill]"``; ``python -m pytest -q -m maniskill tests/envs/test_maniskill.py``):
the batched adapter's episode ends against a scripted env with ManiSkill's conventions (torch tensors, SAME_STEP,
batched ``info["final_observation"]``, partial resets through ``env_idx``), DLPack without a copy, and a real
PickCube-v1 where SAPIEN finds a Vulkan device."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from scripted import ScriptedVectorEnv, length, terminates

pytestmark = pytest.mark.maniskill
torch = pytest.importorskip("torch")

from reppo.envs.maniskill import ManiSkillVecEnv, to_jax  # noqa: E402


class ScriptedManiSkill(ScriptedVectorEnv):
    """The scripted episodes (``scripted.py``) with ``ManiSkillVectorEnv``'s conventions."""

    device = torch.device("cpu")

    def __init__(self, num_envs: int):
        super().__init__(num_envs, AutoresetMode.SAME_STEP, low=(-1.0, -1.0), high=(1.0, 1.0))

    def reset(self, *, seed=None, options=None):
        if options and "env_idx" in options:
            mask = np.zeros(self.num_envs, bool)
            mask[options["env_idx"].numpy()] = True
            options = {"reset_mask": mask}
        obs, info = super().reset(seed=seed, options=options)
        return torch.as_tensor(obs), info

    def step(self, actions):
        assert isinstance(actions, torch.Tensor)
        obs, reward, terminated, truncated, info = super().step(actions.numpy())
        ended = terminated | truncated
        out = {}
        if ended.any():
            final = np.stack([f if f is not None else obs[i] for i, f in enumerate(info["final_obs"])])
            out = {"final_observation": torch.as_tensor(final), "_final_observation": torch.as_tensor(ended)}
        as_t = torch.as_tensor
        return as_t(obs), as_t(reward, dtype=torch.float32), as_t(terminated), as_t(truncated), out


def test_maniskill_conventions_give_the_scripted_episode_ends():
    n = 5
    raw = ScriptedManiSkill(n)
    env = ManiSkillVecEnv(raw, episode_length=10)
    obs, _ = env.reset(jax.random.PRNGKey(0))
    assert isinstance(obs, jax.Array)
    rng = np.random.default_rng(0)
    for _ in range(20):
        next_act, _, result = env.step(rng.uniform(-1, 1, (n, 2)))
        obs_np, next_np = np.asarray(obs), np.asarray(result.next_obs)
        for i in range(n):
            _, e, k = obs_np[i]
            end = k + 1 == length(i)
            np.testing.assert_array_equal(next_np[i], [i, e, k + 1])
            assert float(result.reward[i]) == k + 1 + 0.5 * i
            assert float(result.terminated[i]) == (end and terminates(i))
            assert float(result.truncated[i]) == (end and not terminates(i))
            np.testing.assert_array_equal(np.asarray(next_act)[i], [i, e + 1, 0] if end else [i, e, k + 1])
        obs = next_act
    obs, _ = env.reset_where(np.array([True, False, False, False, True]), jax.random.PRNGKey(1))
    assert np.asarray(obs)[0, 2] == 0 and np.asarray(obs)[4, 2] == 0


def test_dlpack_hands_torch_memory_to_jax_without_a_copy():
    t = torch.arange(16, dtype=torch.float32)
    j = to_jax(t)
    assert j.unsafe_buffer_pointer() == t.data_ptr()
    np.testing.assert_array_equal(np.asarray(j), t.numpy())


def test_real_pickcube_steps_on_this_machine():
    from reppo.envs import make_env, task_defaults
    from reppo.envs.playground import EnvLoadError

    d = task_defaults("maniskill:PickCube-v1")
    assert (d.episode_length, d.v_min, d.v_max) == (50, -15.0, 15.0) and abs(d.gamma - 0.8) < 1e-12
    try:
        env = make_env("maniskill:PickCube-v1", 2)
    except EnvLoadError as exc:
        pytest.skip(str(exc))
    obs, _ = env.reset(jax.random.PRNGKey(0))
    for _ in range(50):
        obs, _, result = env.step(np.zeros((2, env.action_size)))
    assert np.asarray(result.truncated).all() or np.asarray(result.terminated).any()
