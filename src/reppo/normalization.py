"""Per-dimension running observation statistics (spec section 6).

Batch statistics are merged with the parallel algorithm of Chan et al. (1979); the count is a float so it never
overflows. The statistics are frozen during an iteration and updated once from the iteration's raw observations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


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

    def normalize(self, x: jax.Array, eps: float = 1e-8) -> jax.Array:
        return (x - self.mean) / jnp.sqrt(self.var + eps)
