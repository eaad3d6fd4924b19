"""A scripted Gymnasium vector env whose episode ends and observations are known in advance.

Env i's episodes last ``length(i) = 3 + i % 3`` steps; they end by termination for even i and by truncation for
odd i. Its observation at step k of its episode number e is ``[i, e, k]`` (episode numbers count every reset, from
0), and the reward of the step from k to k + 1 is ``k + 1 + 0.5 * i``; a Gymnasium NEXT_STEP reset step gives
reward 0. The actions each env received are kept in ``received``.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv


def length(i: int) -> int:
    return 3 + i % 3


def terminates(i: int) -> bool:
    return i % 2 == 0


class ScriptedVectorEnv(VectorEnv):
    def __init__(self, num_envs: int, mode: AutoresetMode, low=(-2.0, 0.0), high=(2.0, 10.0)):
        self.num_envs = num_envs
        self.metadata = {"autoreset_mode": mode}
        self.single_action_space = gymnasium.spaces.Box(np.asarray(low, np.float32), np.asarray(high, np.float32))
        self.single_observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.action_space = gymnasium.vector.utils.batch_space(self.single_action_space, num_envs)
        self.observation_space = gymnasium.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.episode = np.full(num_envs, -1)
        self.k = np.zeros(num_envs, int)
        self.pending = np.zeros(num_envs, bool)
        self.received: list[np.ndarray] = []

    def _obs(self, i: int) -> np.ndarray:
        return np.asarray([i, self.episode[i], self.k[i]], np.float32)

    def _reset_one(self, i: int) -> None:
        self.episode[i] += 1
        self.k[i] = 0
        self.pending[i] = False

    def reset(self, *, seed=None, options=None):
        mask = (options or {}).get("reset_mask", np.ones(self.num_envs, bool))
        for i in np.flatnonzero(mask):
            self._reset_one(i)
        return np.stack([self._obs(i) for i in range(self.num_envs)]), {}

    def step(self, actions):
        self.received.append(np.asarray(actions).copy())
        n, mode = self.num_envs, self.metadata["autoreset_mode"]
        obs, reward = np.zeros((n, 3), np.float32), np.zeros(n)
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
        final = np.full(n, None, object)
        for i in range(n):
            if mode == AutoresetMode.NEXT_STEP and self.pending[i]:
                self._reset_one(i)
                obs[i] = self._obs(i)
                continue
            reward[i] = self.k[i] + 1 + 0.5 * i
            self.k[i] += 1
            ended = self.k[i] == length(i)
            terminated[i], truncated[i] = ended and terminates(i), ended and not terminates(i)
            obs[i] = self._obs(i)
            if ended and mode == AutoresetMode.SAME_STEP:
                final[i] = obs[i].copy()
                self._reset_one(i)
                obs[i] = self._obs(i)
            self.pending[i] = ended
        done = np.array([f is not None for f in final])
        info = {"final_obs": final, "_final_obs": done} if mode == AutoresetMode.SAME_STEP else {}
        return obs, reward, terminated, truncated, info
