"""A trained policy as users run it: raw observation in, action out (normalisation included): an action in
[-1, 1]^d for a continuous actor, an int32 action index for a discrete one (docs/discrete.md)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reppo.algo import categorical, distributions
from reppo.envs.spaces import Image
from reppo.nets import Actor, DiscreteActor
from reppo.normalization import normalize


def policy_action(actor: Actor | DiscreteActor, params: Any, obs: jax.Array, key: jax.Array | None,
                  deterministic: bool) -> jax.Array:  # fmt: skip
    """The action the env receives for normalised observations ``obs`` (..., obs_size), the one rule used by
    evaluation, videos and :class:`Policy`. Continuous: tanh(mu) (deterministic) or a tanh-Gaussian sample, clipped
    to [-1 + 1e-5, 1 - 1e-5]. Discrete: argmax_a pi(a|x) (deterministic) or a ~ pi(.|x), int32 (...)."""
    if isinstance(actor, DiscreteActor):
        logits = actor.apply(params, obs)
        return categorical.greedy_action(logits) if deterministic else categorical.sample(key, logits)[0]
    mean, std = actor.apply(params, obs)
    action = distributions.deterministic_action(mean) if deterministic else distributions.sample(key, mean, std)[0]
    return distributions.env_action(action)


@dataclass(frozen=True)
class Policy:
    """The actor of a run with its frozen observation statistics.

    ``policy(obs)`` accepts one observation ``(obs_size,)`` or a batch ``(B, obs_size)`` of raw (unnormalised)
    observations, or a Playground dict observation (its ``"state"`` entry is used), and returns actions of the
    same leading shape. Continuous: deterministic actions are tanh(mu); stochastic ones sample the tanh-Gaussian and
    need a PRNG key; actions are clipped to [-1 + 1e-5, 1 - 1e-5] as during training. Discrete (a
    :class:`reppo.nets.DiscreteActor`): int32 action indices, argmax_a pi(a|x) or a sample.
    """

    actor: Actor | DiscreteActor
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
    def num_actions(self) -> int:
        """Number of discrete actions; 0 for a continuous policy."""
        return int(self.actor.num_actions) if isinstance(self.actor, DiscreteActor) else 0

    @property
    def action_size(self) -> int:
        """Size of a continuous action; 1 for a discrete policy (one index)."""
        return 1 if self.num_actions else int(self.actor.action_size)

    @cached_property
    def _apply(self):
        return jax.jit(self.actor.apply)

    @cached_property
    def _act(self):
        return jax.jit(lambda params, x, key, deterministic: policy_action(self.actor, params, x, key, deterministic),
                       static_argnums=3)  # fmt: skip

    def distribution(self, obs: Any) -> tuple[jax.Array, jax.Array] | jax.Array:
        """(mean, std) of the pre-tanh Gaussian for raw observations (batched or single); discrete: the logits of
        pi(.|x), (..., num_actions)."""
        x = self._as_array(obs)
        return self._apply(self.params, normalize(x, self.obs_mean, self.obs_var))

    def __call__(self, obs: Any, deterministic: bool = True, key: jax.Array | None = None) -> np.ndarray:
        if not deterministic and key is None:
            raise ValueError("a stochastic action needs a PRNG key: policy(obs, deterministic=False, key=key)")
        x = normalize(self._as_array(obs), self.obs_mean, self.obs_var)
        return np.asarray(self._act(self.params, x, key, deterministic))

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
    num_actions = int(meta.get("num_actions", 0))
    image = Image.from_list(meta["obs_image"]) if meta.get("obs_image") else None
    if num_actions:
        actor = DiscreteActor(num_actions, config.actor_width, config.actor_depth, image=image)
    else:
        actor = Actor(int(meta["action_size"]), config.actor_width, config.actor_depth, config.min_std,
                      config.init_std, image=image)  # fmt: skip
    params = jax.tree.map(lambda x: jnp.asarray(pick(x)), tree["actor_params"])
    return Policy(actor, params, pick(tree["obs_mean"]), pick(tree["obs_var"]), env=config.env)
