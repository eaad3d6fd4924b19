"""Soft TD(lambda) targets in the expectation form (spec section 3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_td_lambda(
    rewards: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    next_values: jax.Array,
    next_log_probs: jax.Array,
    alpha: jax.Array | float,
    gamma: float,
    lam: float,
) -> jax.Array:
    """Soft TD(lambda) returns G_t for a rollout laid out time-major, shape (T, ...).

    Backwards over t = T-1 .. 0 (spec section 3):

        B_{t+1} = V(x'_t)                                                 if t = T-1 or truncated_t
        B_{t+1} = (1 - lam) V(x_{t+1}) + lam [G_{t+1} - alpha log pi(a_{t+1}|x_{t+1})]   otherwise
        G_t     = r_t + gamma (1 - terminated_t) B_{t+1}

    Args:
      rewards, terminated, truncated: (T, ...) per-step reward and episode-end flags (0/1 floats).
      next_values: (T, ...) soft value V of the true next state x'_t of step t (equal to x_{t+1} unless the
        episode ended at t).
      next_log_probs: (T, ...) log pi(a_{t+1} | x_{t+1}) of the action taken at the next step; row T-1 is unused.
      alpha: entropy temperature.
    """
    # The value at the last step of the rollout is always a bootstrap from x'_{T-1}.
    cut = truncated.at[-1].set(1.0)

    def backward(carry_g, xs):
        r, term, cut_t, v_next, logp_next = xs
        mixed = (1.0 - lam) * v_next + lam * (carry_g - alpha * logp_next)
        bootstrap = jnp.where(cut_t > 0, v_next, mixed)
        g = r + gamma * (1.0 - term) * bootstrap
        return g, g

    # next_log_probs[T-1] and the initial carry are only ever used where cut = 1, so any value works.
    _, returns = jax.lax.scan(
        backward,
        jnp.zeros_like(rewards[0]),
        (rewards, terminated, cut, next_values, next_log_probs),
        reverse=True,
    )
    return returns
