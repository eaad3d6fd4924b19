"""Action and observation spaces of the envs users bring, in one place.

The learner emits actions in [-1, 1]^d (a tanh-Gaussian). :func:`action_map` reads an env's action space and
returns the map from the learner's action to the env's: a Box with finite bounds is rescaled affinely onto
[low, high]. Discrete spaces are refused with one line for now; discrete REPPO (a categorical policy) extends
:func:`action_map` and nothing else here.

Observations reach the learner as flat float32 vectors: a Box is flattened; a dict with a ``"state"`` entry (and
optionally ``"privileged_state"``, the critic's observation) is read as MuJoCo Playground's are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from reppo.config import ConfigError


class UnsupportedSpaceError(ConfigError):
    """An env's action or observation space that reppo cannot train on (yet); one line (``reppo`` exits 2)."""


@dataclass(frozen=True)
class BoxActions:
    """[-1, 1]^d -> the Box [low, high]: ``low + (a + 1) / 2 * (high - low)``, elementwise. Dimensions with a
    non-finite bound pass the learner's action through unchanged (it lies in [-1, 1], inside such a bound)."""

    low: np.ndarray
    high: np.ndarray

    @property
    def size(self) -> int:
        return int(self.low.size)

    def __call__(self, action: Any) -> np.ndarray:
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        finite = np.isfinite(self.low) & np.isfinite(self.high)
        low, high = np.where(finite, self.low, -1.0), np.where(finite, self.high, 1.0)
        return (low + (a + 1.0) * 0.5 * (high - low)).astype(np.float32)


def _describe(space: Any) -> str:
    return f"{type(space).__name__}{getattr(space, 'shape', '')}" if not hasattr(space, "n") else repr(space)


def action_map(space: Any) -> BoxActions:
    """The map from the learner's actions to ``space`` (a single env's action space: a Gymnasium or gymnax Box,
    or anything with ``low``/``high``/``shape``). Discrete and other spaces raise :class:`UnsupportedSpaceError`."""
    if hasattr(space, "n") or type(space).__name__ in ("Discrete", "MultiDiscrete", "MultiBinary"):
        raise UnsupportedSpaceError(
            f"discrete action space {_describe(space)} is not supported yet (REPPO here is continuous: a Box "
            "action space is needed)"
        )
    if not (hasattr(space, "low") and hasattr(space, "high") and hasattr(space, "shape")):
        raise UnsupportedSpaceError(f"action space {_describe(space)} is not supported; allowed: a Box")
    shape = tuple(space.shape)
    if len(shape) != 1:
        raise UnsupportedSpaceError(f"action space of shape {shape} is not supported; allowed: a 1-D Box")
    low = np.broadcast_to(np.asarray(space.low, np.float64), shape).copy()
    high = np.broadcast_to(np.asarray(space.high, np.float64), shape).copy()
    if np.any(low >= high):
        raise UnsupportedSpaceError(f"action space bounds low={low} high={high} are empty")
    return BoxActions(low, high)


def split_obs(obs: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(actor obs, critic obs) as float32 (n, size) numpy arrays from a batched observation."""
    if isinstance(obs, Mapping):
        if "state" not in obs:
            raise UnsupportedSpaceError(
                f"dict observation without a 'state' entry (keys: {sorted(obs)}); allowed: a Box, or a dict with "
                "'state' and optionally 'privileged_state'"
            )
        actor, critic = obs["state"], obs.get("privileged_state", obs["state"])
    else:
        actor = critic = obs
    as_flat = lambda x: np.asarray(x, np.float32).reshape(n, -1)
    return as_flat(actor), as_flat(critic)
