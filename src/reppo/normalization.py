"""Per-dimension running observation statistics (spec section 6).

Batch statistics are merged with the parallel algorithm of Chan et al. (1979); the count is a float so it never
overflows. The statistics are frozen during an iteration and updated once from the iteration's raw observations.

Normalisation **[ours: a variance floor and a clip in place of the spec's eps]**:

    x_n = clip((x - mean) / sqrt(max(var, VAR_FLOOR)), -CLIP, CLIP)

The statistics start from one reset batch, in which a dimension can be constant (Playground zeroes the velocities
of ReacherEasy, FingerSpin, Walker and Hopper at reset; every dimension of BallInCup is constant there) or nearly so
(CartpoleBalance's velocities have a variance of 3e-8). With the spec's sqrt(var + 1e-8) such a dimension is scaled
by up to 1e4 in the first rollout and update. The floor bounds the scale at 1 / sqrt(VAR_FLOOR) = 100 (the
``std + 1e-2`` of the normaliser the authors' torch code uses), and the clip bounds every normalised input.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

VAR_FLOOR = 1e-4
"""Smallest variance a dimension is normalised with (std 0.01): a dimension is scaled by at most 100."""
CLIP = 10.0
"""Normalised observations are clipped to [-CLIP, CLIP] (Stable-Baselines' VecNormalize default)."""


def normalize(x: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
    """clip((x - mean) / sqrt(max(var, VAR_FLOOR)), -CLIP, CLIP): spec section 6 with the floor and clip of the
    module docstring (also what ``reppo.policy`` and the ONNX export compute)."""
    return jnp.clip((x - mean) / jnp.sqrt(jnp.maximum(var, VAR_FLOOR)), -CLIP, CLIP)


@struct.dataclass
class RunningStats:
    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, size: int) -> RunningStats:
        return cls(
            mean=jnp.zeros(size, jnp.float32),
            var=jnp.ones(size, jnp.float32),
            count=jnp.zeros((), jnp.float32),
        )

    def update(self, batch: jax.Array) -> RunningStats:
        """Merge the statistics of ``batch`` (..., size) into these (Chan et al. parallel update)."""
        x = batch.reshape(-1, batch.shape[-1]).astype(jnp.float32)
        n_b = jnp.asarray(x.shape[0], jnp.float32)
        mean_b = jnp.mean(x, axis=0)
        var_b = jnp.var(x, axis=0)
        n = self.count + n_b
        delta = mean_b - self.mean
        mean = self.mean + delta * (n_b / n)
        m2 = self.var * self.count + var_b * n_b + delta**2 * (self.count * n_b / n)
        return RunningStats(mean=mean, var=m2 / n, count=n)

    def normalize(self, x: jax.Array) -> jax.Array:
        """:func:`normalize` with these statistics."""
        return normalize(x, self.mean, self.var)
