"""ToyAsymmetric: a pure-JAX point mass with an asymmetric (privileged) observation, Playground's env API.

A point mass on a plane must reach a target. Dynamics per step (dt = 0.05): ``vel <- vel * (1 - damping *
dt) + gain * action * dt``, ``pos <- pos + vel * dt``, with a per-episode ``damping`` in [0.5, 2.0] and
``gain`` in [2, 4] hidden from the actor. Reward ``exp(-2 * |pos - target|)`` in (0, 1] every step. With
``terminate_out_of_bounds`` the episode terminates when the mass leaves the square arena ``|pos|_inf >
arena``.

Observations (a dict, like Playground's locomotion tasks):
    ``state`` (6): pos - target, vel, tanh(pos / arena)   - what the actor sees
    ``privileged_state`` (8): pos, vel, target, damping, gain   - what the critic sees

It needs no MuJoCo model and no network, so the asymmetric-critic path can be tested anywhere.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

ENV_ID = "ToyAsymmetric"

_DT = 0.05


@struct.dataclass
class ToyState:
    """Same fields as ``mujoco_playground.State``; ``data`` is a dict of arrays instead of ``mjx.Data``."""

    data: dict[str, jax.Array]
    obs: dict[str, jax.Array]
    reward: jax.Array
    done: jax.Array
    metrics: dict[str, jax.Array]
    info: dict[str, Any]


def default_config() -> dict[str, Any]:
    return {
        "episode_length": 1000,
        "action_repeat": 1,
        "arena": 2.0,
        "terminate_out_of_bounds": True,
    }


class ToyAsymmetric:
    """Point-mass reaching task with dict observations {"state", "privileged_state"}."""

    def __init__(self, config: dict[str, Any] | None = None, config_overrides: dict[str, Any] | None = None):
        cfg = default_config()
        cfg.update(config or {})
        unknown = set(config_overrides or {}) - set(cfg)
        if unknown:
            raise ValueError(f"unknown ToyAsymmetric config keys {sorted(unknown)}; known: {sorted(cfg)}")
        cfg.update(config_overrides or {})
        self._config = cfg
        self.arena = float(cfg["arena"])
        self.terminate_out_of_bounds = bool(cfg["terminate_out_of_bounds"])

    @property
    def action_size(self) -> int:
        return 2

    @property
    def dt(self) -> float:
        return _DT

    @property
    def observation_size(self) -> dict[str, tuple[int, ...]]:
        obs = jax.eval_shape(self.reset, jax.random.PRNGKey(0)).obs
        return {k: v.shape for k, v in obs.items()}

    def reset(self, rng: jax.Array) -> ToyState:
        k_pos, k_target, k_damp, k_gain = jax.random.split(rng, 4)
        half = 0.5 * self.arena
        data = {
            "pos": jax.random.uniform(k_pos, (2,), minval=-half, maxval=half),
            "vel": jnp.zeros((2,)),
            "target": jax.random.uniform(k_target, (2,), minval=-half, maxval=half),
            "damping": jax.random.uniform(k_damp, (), minval=0.5, maxval=2.0),
            "gain": jax.random.uniform(k_gain, (), minval=2.0, maxval=4.0),
        }
        zero = jnp.zeros((), jnp.float32)
        return ToyState(
            data=data,
            obs=self._obs(data),
            reward=zero,
            done=zero,
            metrics={"distance": self._distance(data)},
            info={},
        )

    def step(self, state: ToyState, action: jax.Array) -> ToyState:
        d = state.data
        action = jnp.clip(action, -1.0, 1.0)
        vel = d["vel"] * (1.0 - d["damping"] * _DT) + d["gain"] * action * _DT
        pos = d["pos"] + vel * _DT
        data = {**d, "pos": pos, "vel": vel}
        dist = self._distance(data)
        reward = jnp.exp(-2.0 * dist).astype(jnp.float32)
        out = jnp.max(jnp.abs(pos)) > self.arena
        bad = ~jnp.all(jnp.isfinite(pos)) | ~jnp.all(jnp.isfinite(vel))
        done = (bad | (out & self.terminate_out_of_bounds)).astype(jnp.float32)
        return ToyState(
            data=data,
            obs=self._obs(data),
            reward=reward,
            done=done,
            metrics={"distance": dist},
            info=state.info,
        )

    @staticmethod
    def _distance(data: dict[str, jax.Array]) -> jax.Array:
        return jnp.linalg.norm(data["pos"] - data["target"])

    def _obs(self, d: dict[str, jax.Array]) -> dict[str, jax.Array]:
        state = jnp.concatenate([d["pos"] - d["target"], d["vel"], jnp.tanh(d["pos"] / self.arena)])
        privileged = jnp.concatenate([d["pos"], d["vel"], d["target"], d["damping"][None], d["gain"][None]])
        return {"state": state.astype(jnp.float32), "privileged_state": privileged.astype(jnp.float32)}
