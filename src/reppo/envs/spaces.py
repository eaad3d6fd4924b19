"""Action and observation spaces of the envs users bring, in one place.

The learner emits actions in [-1, 1]^d (a tanh-Gaussian) or, for a discrete action space, an action index
(a categorical policy, docs/discrete.md). :func:`action_map` reads an env's action space and returns the map from
the learner's action to the env's: a Box with finite bounds is rescaled affinely onto [low, high]; a Discrete
space of n actions takes the index (shifted by the space's ``start``). Other spaces are refused with one line.

Observations reach the learner as flat float32 vectors: a Box is flattened; a dict with a ``"state"`` entry (and
optionally ``"privileged_state"``, the critic's observation) is read as MuJoCo Playground's are. A 3-D Box is an
image (:func:`image_of`): the flat vector keeps its layout, and a CNN encoder (``reppo.nets.ConvEncoder``) reads
it back as an image.
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

    num_actions = 0
    """0: a continuous action space."""

    @property
    def size(self) -> int:
        return int(self.low.size)

    def __call__(self, action: Any) -> np.ndarray:
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        finite = np.isfinite(self.low) & np.isfinite(self.high)
        low, high = np.where(finite, self.low, -1.0), np.where(finite, self.high, 1.0)
        return (low + (a + 1.0) * 0.5 * (high - low)).astype(np.float32)


@dataclass(frozen=True)
class DiscreteActions:
    """An action index in {0, ..., n - 1} -> the env's action ``start + index`` (int64, as Gymnasium's Discrete
    holds them); ``size`` is 1 by convention (the learner's ``Spaces.action_size`` is unused when discrete)."""

    num_actions: int
    start: int = 0
    size = 1

    def __call__(self, action: Any) -> np.ndarray:
        a = np.asarray(action)
        if a.dtype.kind not in "iu":
            raise TypeError(f"a discrete action must be an integer index, got dtype {a.dtype}")
        return a.astype(np.int64) + self.start


@dataclass(frozen=True)
class Image:
    """The layout of an image observation that reaches the learner flattened: ``height x width x channels``, stored
    channels-last (MinAtar's 10 x 10 x C) or channels-first (EnvPool's and Gymnasium's stacked Atari frames,
    4 x 84 x 84)."""

    height: int
    width: int
    channels: int
    channels_first: bool = False

    @property
    def stored_shape(self) -> tuple[int, int, int]:
        """The shape of one observation as the env gives it (before flattening)."""
        if self.channels_first:
            return (self.channels, self.height, self.width)
        return (self.height, self.width, self.channels)

    def to_list(self) -> list[int]:
        """For checkpoint metadata (JSON): ``[height, width, channels, channels_first]``."""
        return [self.height, self.width, self.channels, int(self.channels_first)]

    @classmethod
    def from_list(cls, values: Any) -> Image:
        h, w, c, first = (int(v) for v in values)
        return cls(h, w, c, bool(first))


def image_of(shape: Any) -> Image | None:
    """The :class:`Image` of one observation of ``shape``, or None when it is not an image (not 3-D, or a side
    below 3 pixels, the smallest convolution's kernel). The channel axis is the shorter end: (4, 84, 84) is
    channels-first, (10, 10, 4) and (64, 64, 3) channels-last."""
    shape = tuple(int(d) for d in (shape or ()))
    if len(shape) != 3 or min(shape) < 1:
        return None
    image = Image(shape[1], shape[2], shape[0], channels_first=True) if shape[0] < shape[-1] else Image(*shape)
    return image if min(image.height, image.width) >= 3 else None


def _describe(space: Any) -> str:
    return f"{type(space).__name__}{getattr(space, 'shape', '')}" if not hasattr(space, "n") else repr(space)


def action_map(space: Any) -> BoxActions | DiscreteActions:
    """The map from the learner's actions to ``space`` (a single env's action space: a Gymnasium or gymnax Box or
    Discrete, or anything with ``low``/``high``/``shape``). Other spaces raise :class:`UnsupportedSpaceError`."""
    kind = type(space).__name__
    if kind in ("MultiDiscrete", "MultiBinary"):
        raise UnsupportedSpaceError(f"action space {_describe(space)} is not supported; allowed: a Box or a Discrete")
    if hasattr(space, "n"):
        n = int(np.asarray(space.n))
        if np.ndim(space.n) != 0 or n < 2:
            raise UnsupportedSpaceError(f"discrete action space {_describe(space)} is not supported; allowed: a "
                                        "Discrete of at least 2 actions")  # fmt: skip
        return DiscreteActions(n, int(getattr(space, "start", 0)))
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
