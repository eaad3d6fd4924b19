"""A trained policy as users run it: raw observation in, action in [-1, 1] out (normalisation included)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reppo.algo import distributions
from reppo.nets import Actor
from reppo.normalization import normalize


@dataclass(frozen=True)
class Policy:
    """The actor of a run with its frozen observation statistics.

    ``policy(obs)`` accepts one observation ``(obs_size,)`` or a batch ``(B, obs_size)`` of raw (unnormalised)
    observations, or a Playground dict observation (its ``"state"`` entry is used), and returns actions of the
    same leading shape. Deterministic actions are tanh(mu); stochastic ones sample the tanh-Gaussian and need a
    PRNG key. Actions are clipped to [-1 + 1e-5, 1 - 1e-5] as during training.
    """

    actor: Actor
    """The flax module (its width, depth, min_std define the architecture)."""
    params: Any
    """Actor parameters (flax variables dict)."""
    obs_mean: np.ndarray
    """(obs_size,) running mean of the actor observation."""
    obs_var: np.ndarray
    """(obs_size,) running variance of the actor observation."""
    env: str = ""
    """Env id the policy was trained on."""

    @property
    def obs_size(self) -> int:
        return int(self.obs_mean.shape[-1])

    @property
    def action_size(self) -> int:
        return int(self.actor.action_size)

    @cached_property
    def _apply(self):
        return jax.jit(self.actor.apply)

    def distribution(self, obs: Any) -> tuple[jax.Array, jax.Array]:
        """(mean, std) of the pre-tanh Gaussian for raw observations (batched or single)."""
        x = self._as_array(obs)
        return self._apply(self.params, normalize(x, self.obs_mean, self.obs_var))

    def __call__(self, obs: Any, deterministic: bool = True, key: jax.Array | None = None) -> np.ndarray:
        mean, std = self.distribution(obs)
        if deterministic:
            action = distributions.deterministic_action(mean)
        else:
            if key is None:
                raise ValueError("a stochastic action needs a PRNG key: policy(obs, deterministic=False, key=key)")
            action, _, _ = distributions.sample(key, mean, std)
        return np.asarray(distributions.env_action(action))

    def _as_array(self, obs: Any) -> jax.Array:
        if isinstance(obs, dict):
            if "state" not in obs:
                raise ValueError(f"dict observation without a 'state' entry (keys: {sorted(obs)})")
            obs = obs["state"]
        x = jnp.asarray(obs, jnp.float32)
        if x.ndim == 0 or x.shape[-1] != self.obs_size:
            raise ValueError(
                f"observation shape {tuple(x.shape)} does not fit this policy: expected (..., {self.obs_size})"
            )
        return x


def load(run_dir: str | Path, seed_index: int = 0, iteration: int | None = None) -> Policy:
    """The policy of a run folder's latest checkpoint (or the one at ``iteration``).

    ``seed_index`` picks one seed of a ``--num-seeds`` run (0 is the run's ``seed``). Raises CheckpointError
    when the folder has no checkpoint.
    """
    from reppo.checkpoint import Checkpointer
    from reppo.config import load_config

    config = load_config(run_dir)
    tree, meta = Checkpointer(run_dir, create=False).restore_policy(iteration)
    num_seeds = len(meta["seeds"])
    if not 0 <= seed_index < num_seeds:
        raise ValueError(f"seed_index={seed_index} is out of range; this run has seeds 0..{num_seeds - 1}")
    pick = (lambda x: np.asarray(x)[seed_index]) if num_seeds > 1 else np.asarray
    actor = Actor(int(meta["action_size"]), config.actor_width, config.actor_depth, config.min_std, config.init_std)
    params = jax.tree.map(lambda x: jnp.asarray(pick(x)), tree["actor_params"])
    return Policy(actor, params, pick(tree["obs_mean"]), pick(tree["obs_var"]), env=config.env)
