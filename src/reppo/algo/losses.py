"""Critic, actor and dual-variable losses (spec sections 4 and 5).

Each loss is a pure function of parameters and a minibatch so it can be differentiated with ``jax.grad``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from reppo.algo import categorical, distributions
from reppo.algo.hl_gauss import HLGauss


@struct.dataclass
class Minibatch:
    """Flat samples (leading axis = minibatch) with observations already normalised."""

    obs: jax.Array
    critic_obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    terminated: jax.Array
    returns: jax.Array
    next_embedding: jax.Array
    """phi(x'_t, a'_t) with a'_t ~ pi(.|x'_t), computed once per iteration (the auxiliary target; no gradient)."""
    old_mean: jax.Array
    """Pre-tanh mean of pi_old at obs (pi_old is frozen for the iteration, so computed once)."""
    old_std: jax.Array
    """Pre-tanh std of pi_old at obs."""


def critic_loss(
    critic_params,
    critic_apply: Callable,
    mb: Minibatch,
    hl: HLGauss,
    aux_coef: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """mean[ CE(p(G_t), softmax l(x_t, a_t)) + c_aux * (1 - d_t) * MSE(aux(phi_t), [r_t, sg phi(x'_t, a'_t)]) ]

    (spec section 4). The next embedding comes precomputed in the minibatch with the iteration's critic."""
    emb = critic_apply(critic_params, mb.critic_obs, mb.actions, method="embed")
    logits = critic_apply(critic_params, emb, method="logits")
    target_probs = hl.to_probs(mb.returns)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.sum(target_probs * log_probs, axis=-1)

    next_emb = jax.lax.stop_gradient(mb.next_embedding)
    pred_reward, pred_next_emb = critic_apply(critic_params, emb, method="predict_aux")
    squared = jnp.concatenate([(pred_reward - mb.rewards)[:, None] ** 2, (pred_next_emb - next_emb) ** 2], axis=-1)
    aux = (1.0 - mb.terminated) * jnp.mean(squared, axis=-1)

    loss = jnp.mean(ce + aux_coef * aux)
    q = jnp.sum(jnp.exp(jax.lax.stop_gradient(log_probs)) * hl.centres, axis=-1)  # hl.to_value(logits)
    return loss, {
        "critic_ce": jnp.mean(ce),
        "aux_loss": jnp.mean(aux),
        "q_mean": jnp.mean(q),
        "q_error": jnp.mean(jnp.abs(q - mb.returns)),
    }


@struct.dataclass
class ActorStats:
    """Per-state quantities of the actor step that the dual-variable losses need (no gradient)."""

    log_prob: jax.Array
    kl: jax.Array


def actor_loss(
    actor_params,
    actor_apply: Callable,
    *,
    old_mean: jax.Array,
    old_std: jax.Array,
    critic_q: Callable[[jax.Array, jax.Array], jax.Array],
    obs: jax.Array,
    critic_obs: jax.Array,
    key: jax.Array,
    alpha: jax.Array,
    beta: jax.Array,
    kl_bound: float,
    num_kl_samples: int,
) -> tuple[jax.Array, tuple[ActorStats, dict[str, jax.Array]]]:
    """Spec section 5, per state x:

        l(x) = alpha log pi(a~|x) - Q(x, a~)   if KL(x) < eps_KL,   else   beta KL(x)

    with a~ a reparameterised sample and KL(x) the sampled forward KL(pi_old || pi_theta). ``critic_q`` maps
    (critic_obs, action) to Q values and must not carry gradients into the critic parameters.
    """
    key_action, key_kl = jax.random.split(key)
    mean, std = actor_apply(actor_params, obs)
    action, _, log_prob = distributions.sample(key_action, mean, std)
    q = critic_q(critic_obs, action)
    kl = distributions.sampled_forward_kl(key_kl, old_mean, old_std, mean, std, num_kl_samples)
    inside = jax.lax.stop_gradient(kl < kl_bound)
    per_state = jnp.where(inside, alpha * log_prob - q, beta * kl)
    stats = ActorStats(log_prob=jax.lax.stop_gradient(log_prob), kl=jax.lax.stop_gradient(kl))
    info = {
        "entropy": -jnp.mean(log_prob),
        "kl": jnp.mean(kl),
        "kl_violation_frac": 1.0 - jnp.mean(inside),
        "policy_std": jnp.mean(std),
    }
    return jnp.mean(per_state), (stats, info)


def dual_loss(log_duals: jax.Array, stats: ActorStats, target_entropy: float, kl_bound: float) -> jax.Array:
    """L_alpha + L_beta on (log alpha, log beta):

    L_alpha = mean alpha * sg(-log pi(a~|x) - H_target)   (alpha grows while entropy < H_target)
    L_beta  = mean -beta * sg(KL(x) - eps_KL)            (beta grows while the KL bound is violated)
    """
    alpha, beta = jnp.exp(log_duals[0]), jnp.exp(log_duals[1])
    loss_alpha = alpha * jnp.mean(-stats.log_prob - target_entropy)
    loss_beta = -beta * jnp.mean(stats.kl - kl_bound)
    return loss_alpha + loss_beta


# ---- discrete actions (docs/discrete.md) ---------------------------------------------------------------------


@struct.dataclass
class DiscreteMinibatch:
    """Flat samples of a discrete-action batch (leading axis = minibatch), observations already normalised."""

    obs: jax.Array
    critic_obs: jax.Array
    actions: jax.Array
    """Taken actions, int32 (B,)."""
    rewards: jax.Array
    terminated: jax.Array
    returns: jax.Array
    next_embedding: jax.Array
    """phi(x'_t), computed once per iteration (the auxiliary target; no gradient)."""
    old_logits: jax.Array
    """Logits of pi_old at obs, (B, A) (pi_old is frozen for the iteration, so computed once)."""


def taken_action_logits(all_logits: jax.Array, actions: jax.Array) -> jax.Array:
    """l(x, a_t) = the taken action's row of the per-action head's logits, (B, A, K_b), (B,) -> (B, K_b)."""
    return jnp.take_along_axis(all_logits, actions[:, None, None].astype(jnp.int32), axis=1)[:, 0]


def discrete_critic_loss(
    critic_params,
    critic_apply: Callable,
    mb: DiscreteMinibatch,
    hl: HLGauss,
    aux_coef: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """mean[ CE(p(G_t), softmax l(x_t, a_t)) + c_aux (1 - d_t) MSE(aux(phi(x_t), a_t), [r_t, sg phi(x'_t)]) ]

    with l(x_t, a_t) the taken action's logits from the per-action head (docs/discrete.md, section 6)."""
    emb = critic_apply(critic_params, mb.critic_obs, method="embed")
    logits = taken_action_logits(critic_apply(critic_params, emb, method="logits"), mb.actions)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.sum(hl.to_probs(mb.returns) * log_probs, axis=-1)

    next_emb = jax.lax.stop_gradient(mb.next_embedding)
    pred_reward, pred_next_emb = critic_apply(critic_params, emb, mb.actions, method="predict_aux")
    squared = jnp.concatenate([(pred_reward - mb.rewards)[:, None] ** 2, (pred_next_emb - next_emb) ** 2], axis=-1)
    aux = (1.0 - mb.terminated) * jnp.mean(squared, axis=-1)

    loss = jnp.mean(ce + aux_coef * aux)
    q = jnp.sum(jnp.exp(jax.lax.stop_gradient(log_probs)) * hl.centres, axis=-1)
    return loss, {
        "critic_ce": jnp.mean(ce),
        "aux_loss": jnp.mean(aux),
        "q_mean": jnp.mean(q),
        "q_error": jnp.mean(jnp.abs(q - mb.returns)),
    }


def discrete_actor_loss(
    actor_params,
    actor_apply: Callable,
    *,
    old_logits: jax.Array,
    q: jax.Array,
    obs: jax.Array,
    alpha: jax.Array,
    beta: jax.Array,
    kl_bound: float,
) -> tuple[jax.Array, tuple[ActorStats, dict[str, jax.Array]]]:
    """Per state x (docs/discrete.md, section 4), every expectation an exact sum over the A actions:

        l(x) = sum_a pi(a|x) [alpha log pi(a|x) - Q(x, a)]   if KL(x) < eps_KL,   else   beta KL(x)

    with KL(x) = KL(pi_old || pi_theta) exact. ``q`` is Q(x, .) of shape (B, A) from the just-updated critic and
    gets no gradient. The stats carry log_prob = E_pi[log pi] = -H(pi), so that ``dual_loss`` is the same formula
    with the exact entropy in place of the one-sample estimate.
    """
    logits = actor_apply(actor_params, obs)
    q = jax.lax.stop_gradient(q)
    objective = categorical.actor_objective(logits, q, alpha)
    kl = categorical.kl(old_logits, logits)
    entropy = categorical.entropy(logits)
    inside = jax.lax.stop_gradient(kl < kl_bound)
    per_state = jnp.where(inside, objective, beta * kl)
    stats = ActorStats(log_prob=jax.lax.stop_gradient(-entropy), kl=jax.lax.stop_gradient(kl))
    info = {
        "entropy": jnp.mean(entropy),
        "kl": jnp.mean(kl),
        "kl_violation_frac": 1.0 - jnp.mean(inside),
        "policy_max_prob": jnp.mean(jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1)),
    }
    return jnp.mean(per_state), (stats, info)
