"""ManiSkill3 (``maniskill:NAME``, e.g. ``maniskill:PickCube-v1``) on the host path, state observations.

Two routes, picked by where the simulator can run:

- GPU simulation (``physx_cuda``, when torch sees a CUDA device): one batched env of ``num_envs`` in ManiSkill's
  ``ManiSkillVectorEnv`` with partial resets (the envs that ended are reset alone, the others go on), as the
  authors' runner does. Its conventions: SAME_STEP autoreset; the final observation is the batched tensor
  ``info["final_observation"]`` (rows where ``info["_final_observation"]``). Tensors stay on their device: they
  reach JAX through DLPack without a copy (:func:`to_jax`), and :class:`ManiSkillVecEnv` hands JAX arrays to the
  rollout.
- CPU simulation (``physx_cpu``): ManiSkill allows one env per CPU simulator, so ``num_envs`` single envs (each
  behind ManiSkill's ``CPUGymWrapper``, numpy in and out) form a Gymnasium ``SyncVectorEnv`` with SAME_STEP
  autoreset, adapted by :class:`reppo.envs.gymnasium.GymnasiumVecEnv`.

Task presets (the authors' ``config/env/maniskill.yaml``): gamma = 1 - 10 / max_episode_steps, values [-15, 15].
Terminations (success or failure of the task) end an episode without bootstrap; the time limit truncates.

ManiSkill needs a Vulkan device even for state observations (it builds SAPIEN render materials with every scene,
also with ``render_backend="none"``). Without one (no GPU driver; Mesa 22.3's llvmpipe is listed by SAPIEN but not
supported) building an env fails, reported as one line (:class:`reppo.envs.playground.EnvLoadError`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reppo.envs.base import StepResult
from reppo.envs.gymnasium import GymnasiumVecEnv, seed_of


def _registry() -> dict:
    import mani_skill.envs  # noqa: F401 - registers the tasks
    from mani_skill.utils.registration import REGISTERED_ENVS

    return REGISTERED_ENVS


def _check(name: str) -> None:
    from reppo.envs.playground import UnknownEnvError

    if name not in _registry():
        import difflib

        close = difflib.get_close_matches(name, list(_registry()), n=5, cutoff=0.6)
        hint = f"; did you mean: {', '.join('maniskill:' + c for c in close)}?" if close else ""
        raise UnknownEnvError(f"unknown ManiSkill env {name!r}{hint}")


def episode_length(name: str) -> int:
    _check(name)
    return int(_registry()[name].max_episode_steps)


def to_jax(x: Any) -> jax.Array:
    """A torch tensor as a JAX array through DLPack: no copy when JAX can address the tensor's device (a CUDA
    tensor on a JAX GPU, a CPU tensor on the CPU); otherwise through host memory."""
    try:
        return jax.dlpack.from_dlpack(x.contiguous())
    except Exception:  # noqa: BLE001 - a device JAX cannot address: go through numpy
        return jnp.asarray(x.detach().cpu().numpy())


class ManiSkillVecEnv(GymnasiumVecEnv):
    """A batched ManiSkill env (``ManiSkillVectorEnv``, torch tensors) behind the host interface; observations,
    rewards and flags are JAX arrays on the simulator's device."""

    def __init__(self, env: Any, episode_length: int, *, reseed: bool = False, name: str = ""):
        super().__init__(env, episode_length, reseed=reseed, name=name)
        self.device = env.device

    def _split(self, obs: Any) -> tuple[jax.Array, jax.Array]:
        x = to_jax(obs).astype(jnp.float32).reshape(self.num_envs, -1)
        return x, x

    def reset(self, key: jax.Array):
        seed = seed_of(key) if self.reseed or not self._seeded else None
        self._seeded, self.last_seed = True, seed
        self._obs = self._split(self.env.reset(seed=seed)[0])
        return self._obs

    def step(self, action: np.ndarray):
        import torch

        obs, reward, terminated, truncated, info = self.env.step(
            torch.as_tensor(self.actions(action), device=self.device)
        )
        terminated = to_jax(terminated).reshape(self.num_envs).astype(bool)
        truncated = to_jax(truncated).reshape(self.num_envs).astype(bool) & ~terminated
        obs = self._split(obs)
        final = obs[0]
        if "final_observation" in info:
            ended = to_jax(info["_final_observation"]).reshape(self.num_envs, 1).astype(bool)
            final = jnp.where(ended, self._split(info["final_observation"])[0], obs[0])
        self._obs = obs
        f32 = lambda x: x.astype(jnp.float32)
        result = StepResult(f32(to_jax(reward).reshape(self.num_envs)), f32(terminated), f32(truncated), final, final)
        return *obs, result

    def reset_where(self, mask: np.ndarray, key: jax.Array):
        import torch

        rows = np.flatnonzero(np.asarray(mask))
        if rows.size:
            obs, _ = self.env.reset(options={"env_idx": torch.as_tensor(rows, device=self.device)})
            self._obs = self._split(obs)
        return self._obs


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def make_maniskill(name: str, num_envs: int, episode_length: int | None = None, reseed: bool = False):
    """``num_envs`` ManiSkill envs: GPU simulation where torch sees a GPU, else ``num_envs`` CPU simulators."""
    import gymnasium

    _check(name)
    steps = int(episode_length or _registry()[name].max_episode_steps)
    kwargs = dict(obs_mode="state", render_mode=None, max_episode_steps=steps)
    try:
        if _gpu():
            from mani_skill.vector.wrappers.gymnasium import ManiSkillVectorEnv

            env = gymnasium.make(name, num_envs=num_envs, sim_backend="physx_cuda", reconfiguration_freq=0, **kwargs)
            vec = ManiSkillVectorEnv(env, num_envs, auto_reset=True, ignore_terminations=False)
            return ManiSkillVecEnv(vec, steps, reseed=reseed, name=f"maniskill:{name}")
        from mani_skill.utils.wrappers.gymnasium import CPUGymWrapper

        one = lambda: CPUGymWrapper(gymnasium.make(name, num_envs=1, sim_backend="physx_cpu", **kwargs))
        same_step = gymnasium.vector.AutoresetMode.SAME_STEP
        vec = gymnasium.vector.SyncVectorEnv([one] * num_envs, autoreset_mode=same_step)
    except RuntimeError as exc:  # SAPIEN found no Vulkan device it supports
        from reppo.envs.playground import EnvLoadError

        raise EnvLoadError(f"could not build ManiSkill env {name!r} (SAPIEN needs a supported Vulkan device, e.g. an "
                           f"NVIDIA GPU driver): {str(exc).strip().splitlines()[0]}") from exc  # fmt: skip
    return GymnasiumVecEnv(vec, steps, reseed=reseed, name=f"maniskill:{name}")
