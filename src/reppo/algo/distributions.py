"""Tanh-squashed diagonal Gaussian policy distribution (spec section 2).

u ~ Normal(mu, sigma), a = tanh(u). Log-densities are always computed from the pre-tanh value ``u`` using

    log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)),

which is exact and finite for every finite ``u`` (no atanh of a clipped action).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

ACTION_EPS = 1e-5
"""Actions sent to an environment are clipped to [-1 + ACTION_EPS, 1 - ACTION_EPS] (spec section 2)."""


def gaussian_log_prob(u: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """Sum over the last axis of log N(u_i; mean_i, std_i)."""
    z = (u - mean) / std
    return jnp.sum(-0.5 * z**2 - jnp.log(std) - _HALF_LOG_2PI, axis=-1)


def tanh_log_det_jacobian(u: jax.Array) -> jax.Array:
    """Sum over the last axis of log(1 - tanh(u_i)^2), in the stable form 2 (log 2 - u - softplus(-2u))."""
    return jnp.sum(2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)


def log_prob_from_pre_tanh(u: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """log pi(tanh(u) | x) for pre-tanh value ``u`` (change of variables, spec section 2)."""
    return gaussian_log_prob(u, mean, std) - tanh_log_det_jacobian(u)


def sample(key: jax.Array, mean: jax.Array, std: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Reparameterised sample. Returns (action = tanh(u), pre-tanh u, log pi(action | x))."""
    u = mean + std * jax.random.normal(key, mean.shape, mean.dtype)
    return jnp.tanh(u), u, log_prob_from_pre_tanh(u, mean, std)


def deterministic_action(mean: jax.Array) -> jax.Array:
    """The evaluation action tanh(mu)."""
    return jnp.tanh(mean)


def env_action(action: jax.Array) -> jax.Array:
    """``action`` clipped to [-1 + ACTION_EPS, 1 - ACTION_EPS], as it is sent to an environment."""
    return jnp.clip(action, -1.0 + ACTION_EPS, 1.0 - ACTION_EPS)


def gaussian_kl(mean_p: jax.Array, std_p: jax.Array, mean_q: jax.Array, std_q: jax.Array) -> jax.Array:
    """Closed-form KL(N(mean_p, std_p) || N(mean_q, std_q)) summed over the last axis.

    The tanh map is a bijection, so this is also the KL between the two tanh-squashed policies.
    """
    var_ratio = (std_p / std_q) ** 2
    return jnp.sum(0.5 * (var_ratio + ((mean_p - mean_q) / std_q) ** 2 - 1.0 - jnp.log(var_ratio)), axis=-1)


def sampled_forward_kl(
    key: jax.Array,
    mean_old: jax.Array,
    std_old: jax.Array,
    mean_new: jax.Array,
    std_new: jax.Array,
    num_samples: int,
) -> jax.Array:
    """Monte-Carlo forward KL(pi_old || pi_new) with ``num_samples`` draws b_j ~ pi_old (spec section 5).

    KL = (1/S) sum_j [log pi_old(b_j|x) - log pi_new(b_j|x)]. Both log-densities share the pre-tanh value of
    b_j, so the tanh Jacobian cancels exactly and only the Gaussian terms remain. Gradients flow into
    ``mean_new``/``std_new`` only through log pi_new. Shapes: (..., d) -> (...).
    """
    noise = jax.random.normal(key, (num_samples, *mean_old.shape), mean_old.dtype)
    u = jax.lax.stop_gradient(mean_old + std_old * noise)
    log_old = gaussian_log_prob(u, mean_old, std_old)
    log_new = gaussian_log_prob(u, mean_new, std_new)
    return jnp.mean(log_old - log_new, axis=0)
