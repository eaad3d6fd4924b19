"""Any Gymnasium ``VectorEnv`` as a :class:`reppo.envs.base.HostVecEnv` (the host rollout path).

Episode ends, whatever the vector env's autoreset mode (``env.metadata["autoreset_mode"]``, Gymnasium >= 1.0):

- terminated and truncated are kept apart; a step that is both counts as terminated (no bootstrap);
- ``StepResult.next_obs`` is the true next observation: under ``SAME_STEP`` the final observation comes from
  ``info["final_obs"]``; under ``NEXT_STEP`` (Gymnasium's default, and EnvPool's) and ``DISABLED`` the step's own
  observation is the final one;
- no reset step becomes experience: under ``NEXT_STEP`` / ``DISABLED`` the envs that ended are reset at once with
  ``reset(options={"reset_mask": ended})`` (Gymnasium >= 1.1, EnvPool), so the next ``step`` steps every env and
  the reset step Gymnasium would otherwise insert never happens.

Actions from the learner in [-1, 1] are rescaled to the action Box (:mod:`reppo.envs.spaces`). Seeds: the first
reset seeds the sub-envs from the run's key (``reset(seed=s)`` seeds env i with s + i); later resets continue each
sub-env's own generator, so a run is a function of its seed.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from reppo.envs.base import StepResult
from reppo.envs.spaces import UnsupportedSpaceError, action_map, image_of, split_obs

MODES = ("NextStep", "SameStep", "Disabled")


def seed_of(key: jax.Array) -> int:
    """A non-negative 31-bit integer seed drawn from a JAX key (the same key gives the same seed)."""
    return int(np.asarray(jax.random.randint(jax.random.wrap_key_data(np.asarray(key, np.uint32)), (), 0, 2**31 - 1)))


def autoreset_mode(env: Any) -> str:
    """'NextStep', 'SameStep' or 'Disabled': the vector env's autoreset mode (NextStep when it does not say)."""
    mode = (getattr(env, "metadata", None) or {}).get("autoreset_mode", "NextStep")
    mode = getattr(mode, "value", mode)
    if mode not in MODES:
        raise UnsupportedSpaceError(f"autoreset mode {mode!r} is not supported; allowed: {', '.join(MODES)}")
    return mode


def time_limit(env: Any) -> int | None:
    """The vector env's episode length in steps, where it says (a registered spec, EnvPool's config)."""
    spec = getattr(env, "spec", None)
    steps = getattr(spec, "max_episode_steps", None)
    config = getattr(env, "config", None)
    if steps is None and isinstance(config, dict):
        steps = config.get("max_episode_steps")
    return int(steps) if steps else None


def _obs_size(space: Any, key: str) -> int:
    spaces = getattr(space, "spaces", None)
    if isinstance(spaces, dict):
        if "state" not in spaces:
            raise UnsupportedSpaceError(
                f"dict observation space without a 'state' entry (keys: {sorted(spaces)}); allowed: a Box, or a "
                "dict with 'state' and optionally 'privileged_state'"
            )
        space = spaces.get(key, spaces["state"])
    if not hasattr(space, "shape") or space.shape is None:
        raise UnsupportedSpaceError(f"observation space {space} is not supported; allowed: a Box")
    return int(math.prod(space.shape))


class GymnasiumVecEnv:
    """``env`` (a Gymnasium ``VectorEnv`` with ``num_envs`` sub-envs) behind the host interface.

    Args:
        env: the vector env (``gymnasium.make_vec``, ``SyncVectorEnv``/``AsyncVectorEnv``, EnvPool, ...).
        episode_length: time limit in steps (evaluation runs this many steps); default from the env.
        seed_on_reset: pass a seed to the first ``reset`` (False for envs seeded when built, as EnvPool's).
        reseed: seed every ``reset`` from its key, not only the first (evaluation envs: each evaluation's episodes
            are then a function of its key alone, also after a resume).
        name: env id, for messages.
    """

    def __init__(self, env: Any, episode_length: int | None = None, *, seed_on_reset: bool = True,
                 reseed: bool = False, name: str = ""):  # fmt: skip
        self.env, self.seed_on_reset, self.reseed = env, seed_on_reset, reseed
        self.name = name or type(env).__name__
        self.num_envs = int(env.num_envs)
        self.actions = action_map(env.single_action_space)
        self.action_size = self.actions.size
        self.num_actions = self.actions.num_actions
        self.mode = autoreset_mode(env)
        self.obs_size = _obs_size(env.single_observation_space, "state")
        self.critic_obs_size = _obs_size(env.single_observation_space, "privileged_state")
        # a 3-D Box (stacked Atari frames, an RGB frame) is an image for a CNN encoder
        space = env.single_observation_space
        self.obs_image = None if isinstance(getattr(space, "spaces", None), dict) else image_of(space.shape)
        self.episode_length = int(episode_length or time_limit(env) or 0)
        if self.episode_length < 1:
            raise ValueError(f"{self.name}: the env has no time limit; pass episode_length")
        self._seeded = False

    def __repr__(self) -> str:
        return (f"GymnasiumVecEnv({self.name!r}, num_envs={self.num_envs}, mode={self.mode}, obs_size={self.obs_size}, "
                f"action_size={self.action_size}, episode_length={self.episode_length})")  # fmt: skip

    def _split(self, obs: Any) -> tuple[np.ndarray, np.ndarray]:
        return split_obs(obs, self.num_envs)

    def reset(self, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
        seed = seed_of(key) if self.seed_on_reset and (self.reseed or not self._seeded) else None
        self._seeded, self.last_seed = True, seed  # last_seed: the seed given to the vector env (None: continued)
        obs, _ = self.env.reset(seed=seed)
        self._obs = self._split(obs)
        return self._obs

    def begin_rollout(self, key: jax.Array) -> None:
        """Nothing to prepare: the vector env resets its own sub-envs."""

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, StepResult]:
        obs, reward, terminated, truncated, info = self.env.step(self.actions(action))
        terminated = np.asarray(terminated, bool).reshape(self.num_envs)
        truncated = np.asarray(truncated, bool).reshape(self.num_envs) & ~terminated
        ended = terminated | truncated
        obs = self._split(obs)
        if self.mode == "SameStep":
            final = self.final_obs(info, ended, obs)
        else:
            final = obs
            if ended.any():
                obs = self._reset_rows(ended, obs)
        self._obs = obs
        result = StepResult(
            reward=np.asarray(reward, np.float32).reshape(self.num_envs),
            terminated=terminated.astype(np.float32),
            truncated=truncated.astype(np.float32),
            next_obs=final[0],
            next_critic_obs=final[1],
        )
        return *obs, result

    def final_obs(self, info: dict, ended: np.ndarray, obs: tuple[np.ndarray, np.ndarray]):
        """SAME_STEP: the step's observations with the rows of the envs that ended replaced by their final
        observation (``info["final_obs"]``, an object array of the sub-envs' observations)."""
        actor, critic = obs[0].copy(), obs[1].copy()
        rows = np.flatnonzero(ended)
        if rows.size:
            if "final_obs" not in info:
                raise RuntimeError(f"{self.name}: an episode ended under SameStep autoreset without info['final_obs']")
            for i in rows:
                actor[i], critic[i] = (x[0] for x in split_obs(_batch_of_one(info["final_obs"][i]), 1))
        return actor, critic

    def _reset_rows(self, mask: np.ndarray, obs: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Reset the sub-envs where ``mask``; ``obs`` with their rows replaced by the new first observations. A
        vector env may return every row (Gymnasium) or only the reset ones (EnvPool, rows in ``info["env_id"]``)."""
        new, info = self.env.reset(options={"reset_mask": np.asarray(mask, bool)})
        rows = np.flatnonzero(mask)
        k = len(new["state"] if isinstance(new, dict) else new)
        actor, critic = obs[0].copy(), obs[1].copy()
        if k == self.num_envs:
            new_actor, new_critic = self._split(new)
            actor[rows], critic[rows] = new_actor[rows], new_critic[rows]
        else:
            order = np.asarray(info.get("env_id", rows)).reshape(-1) if isinstance(info, dict) else rows
            actor[order], critic[order] = split_obs(new, len(order))
        return actor, critic

    def reset_where(self, mask: np.ndarray, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
        mask = np.asarray(mask, bool)
        if mask.any():
            self._obs = self._reset_rows(mask, self._obs)
        return self._obs

    def close(self) -> None:
        self.env.close()


def _batch_of_one(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: np.asarray(v)[None] for k, v in x.items()}
    return np.asarray(x)[None]


def _check_registered(name: str) -> None:
    import gymnasium

    from reppo.envs.playground import UnknownEnvError

    if name not in gymnasium.registry:
        import difflib

        close = difflib.get_close_matches(name, list(gymnasium.registry), n=5, cutoff=0.6)
        hint = f"; did you mean: {', '.join('gymnasium:' + c for c in close)}?" if close else ""
        raise UnknownEnvError(f"unknown Gymnasium env {name!r}{hint}")


def registered_time_limit(name: str) -> int:
    """The registered time limit of Gymnasium env ``name`` (1000 when it has none)."""
    import gymnasium

    _check_registered(name)
    return int(gymnasium.registry[name].max_episode_steps or 1000)


def make_gymnasium(name: str, num_envs: int, episode_length: int | None = None, reseed: bool = False):
    """``num_envs`` copies of the registered Gymnasium env ``name`` in one ``SyncVectorEnv`` with SAME_STEP
    autoreset (the final observation and the next episode's first one from a single ``step``). ``episode_length``
    replaces the registered time limit."""
    import gymnasium

    _check_registered(name)
    limit = {"max_episode_steps": int(episode_length)} if episode_length else {}
    same_step = {"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP}
    env = gymnasium.make_vec(name, num_envs=num_envs, vectorization_mode="sync", vector_kwargs=same_step, **limit)
    return GymnasiumVecEnv(env, episode_length or registered_time_limit(name), reseed=reseed, name=f"gymnasium:{name}")
