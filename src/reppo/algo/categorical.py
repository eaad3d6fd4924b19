"""Categorical policy over A discrete actions (docs/discrete.md).

pi(a|x) = softmax(l(x))_a for actor logits l(x) of shape (..., A). Every expectation over actions is an exact sum
over the A actions (no samples): entropy, KL(pi_old || pi), the soft value and the actor objective.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def log_probs(logits: jax.Array) -> jax.Array:
    """log pi(a|x) = l_a - logsumexp_b l_b for every action, (..., A) -> (..., A)."""
    return jax.nn.log_softmax(logits, axis=-1)


def entropy(logits: jax.Array) -> jax.Array:
    """H(pi(.|x)) = -sum_a pi(a|x) log pi(a|x), (..., A) -> (...)."""
    logp = log_probs(logits)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def kl(logits_old: jax.Array, logits_new: jax.Array) -> jax.Array:
    """Forward KL(pi_old || pi_new) = sum_a pi_old(a|x) [log pi_old(a|x) - log pi_new(a|x)], (..., A) -> (...)."""
    logp_old, logp_new = log_probs(logits_old), log_probs(logits_new)
    return jnp.sum(jnp.exp(logp_old) * (logp_old - logp_new), axis=-1)


def sample(key: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """a ~ pi(.|x) (int32 indices, shape (...)) and log pi(a|x)."""
    action = jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
    return action, log_prob_of(logits, action)


def log_prob_of(logits: jax.Array, action: jax.Array) -> jax.Array:
    """log pi(a|x) of the given integer actions, (..., A), (...) -> (...)."""
    return jnp.take_along_axis(log_probs(logits), action[..., None].astype(jnp.int32), axis=-1)[..., 0]


def greedy_action(logits: jax.Array) -> jax.Array:
    """The evaluation action argmax_a pi(a|x) (int32, shape (...))."""
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def soft_value(logits: jax.Array, q: jax.Array, alpha: jax.Array | float) -> jax.Array:
    """Exact soft state value V(x) = sum_a pi(a|x) [Q(x, a) - alpha log pi(a|x)], (..., A) x2 -> (...)."""
    logp = log_probs(logits)
    return jnp.sum(jnp.exp(logp) * (q - alpha * logp), axis=-1)


def actor_objective(logits: jax.Array, q: jax.Array, alpha: jax.Array | float) -> jax.Array:
    """Per-state actor objective sum_a pi(a|x) [alpha log pi(a|x) - Q(x, a)] = -V(x), (..., A) x2 -> (...).

    Its gradient in the logits is the exact expectation the continuous actor estimates with one pathwise sample."""
    return -soft_value(logits, q, alpha)


def target_entropy(num_actions: int, entropy_coef: float) -> float:
    """H_target = c_H log(A): the fraction c_H of the largest entropy, that of the uniform policy."""
    return entropy_coef * math.log(num_actions)
