"""Several seeds in one program: a ``vmap`` of the single-seed learner, not a second implementation.

The learner state gets a leading seed axis S (also for one seed, so that no consumer branches on the count). The
envs of all seeds form one batch of S * N, seed s owning envs s*N .. s*N + N - 1: the env itself is never vmapped
(``reppo.envs.playground`` says why), only the learner's functions are. One seed runs the learner without the
vmap (:func:`over_seeds`), with the same seed axis of size 1.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import struct

from reppo.algo import guard
from reppo.algo.learner import Learner, LearnerState, Transition, may_overflow


def over_seeds(fn: Callable, num_seeds: int, in_axes: tuple[int | None, ...] | int = 0) -> Callable:
    """``jax.vmap(fn, in_axes)`` over a seed axis of size ``num_seeds``. One seed: ``fn`` on the inputs with that
    axis indexed away, its outputs given back a leading axis of 1. The same values, without the batched kernels
    a vmap of size 1 still compiles to: on a CPU they made one REPPO update twice as slow (docs/BENCHMARKS.md,
    "One learner, two rollout paths")."""
    if num_seeds > 1:
        return jax.vmap(fn, in_axes=in_axes)

    def one_seed(*args):
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        args = [
            arg if axis is None else jax.tree.map(lambda x, a=axis: jax.lax.index_in_dim(x, 0, a, False), arg)
            for arg, axis in zip(args, axes, strict=True)
        ]
        return jax.tree.map(lambda x: x[None], fn(*args))

    return one_seed


class SeededLearner(struct.PyTreeNode):
    """``Learner.init`` / ``act`` / ``learn`` over S seeds; keys come one per seed, shape (S, 2)."""

    learner: Learner = struct.field(pytree_node=False)
    num_seeds: int = struct.field(pytree_node=False)
    guarded: bool = struct.field(pytree_node=False)
    """Whether ``learn`` rolls back non-finite updates (``reppo.algo.guard``)."""

    @classmethod
    def create(cls, learner: Learner) -> SeededLearner:
        c = learner.config
        return cls(learner=learner, num_seeds=c.num_seeds, guarded=c.max_bad_iterations > 0)

    def by_seed(self, x: jax.Array, axis: int = 0) -> jax.Array:
        """Split axis ``axis`` of S * N envs into (S, N)."""
        shape = x.shape
        return x.reshape(*shape[:axis], self.num_seeds, shape[axis] // self.num_seeds, *shape[axis + 1 :])

    def merged(self, x: jax.Array, axis: int = 0) -> jax.Array:
        """Merge axes ``axis`` (S) and ``axis + 1`` (N) into one axis of S * N envs."""
        shape = x.shape
        return x.reshape(*shape[:axis], shape[axis] * shape[axis + 1], *shape[axis + 2 :])

    def init(self, keys: jax.Array, obs: jax.Array, critic_obs: jax.Array) -> LearnerState:
        """Seed s from ``keys[s]`` and the first observations of its envs (``obs``: (S * N, size))."""
        return over_seeds(self.learner.init, self.num_seeds)(keys, self.by_seed(obs), self.by_seed(critic_obs))

    def act(self, state: LearnerState, obs: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Actions and log-probs for the S * N envs, each seed acting in its own envs with its own key."""
        action, log_prob = over_seeds(self.learner.act, self.num_seeds)(state, self.by_seed(obs), keys)
        return self.merged(action), self.merged(log_prob)

    def learn(self, state: LearnerState, batch: Transition, keys: jax.Array):
        """Each seed learns from its envs' part of the time-major batch (T, S * N, ...); metrics have shape (S,).
        With the guard, each seed is rolled back on its own."""
        learn = guard.guarded(self.learner.learn, may_overflow) if self.guarded else self.learner.learn
        batch = jax.tree.map(lambda x: self.by_seed(x, 1), batch)
        return over_seeds(learn, self.num_seeds, in_axes=(0, 1, 0))(state, batch, keys)
