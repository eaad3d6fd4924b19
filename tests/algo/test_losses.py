"""Critic, actor and dual-variable losses (spec sections 4 and 5) against numpy/scipy recomputations."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from reppo.algo import losses
from reppo.algo.hl_gauss import HLGauss
from reppo.nets import Actor, Critic

SEEDS = st.integers(0, 2**32 - 1)
FEW = settings(max_examples=6, deadline=None, database=None)

B, OBS, CRITIC_OBS, ACT = 12, 5, 7, 3
V_MIN, V_MAX, BINS = -5.0, 5.0, 21
WIDTH = 16


# ----------------------------------------------------------------------------------------------------
# independent references


def ref_hl_probs(g, v_min=V_MIN, v_max=V_MAX, num_bins=BINS):
    """float64 HL-Gauss target: mass of N(clip(g), 0.75 w) per bin, renormalised. g: (n,) -> (n, K)."""
    width = (v_max - v_min) / (num_bins - 1)
    centres = v_min + width * np.arange(num_bins)
    g = np.clip(np.asarray(g, np.float64), v_min, v_max)[:, None]
    mass = stats.norm.cdf(centres + width / 2, g, 0.75 * width) - stats.norm.cdf(centres - width / 2, g, 0.75 * width)
    return mass / mass.sum(-1, keepdims=True), centres


def ref_tanh_gauss_log_prob(u, mean, std):
    """float64: sum_i log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2), log(1 - tanh^2) = -2 log cosh."""
    u, mean, std = (np.asarray(x, np.float64) for x in (u, mean, std))
    log_cosh = np.logaddexp(u, -u) - np.log(2.0)
    return np.sum(stats.norm.logpdf(u, mean, std) + 2.0 * log_cosh, axis=-1)


def perturb(params, seed, scale):
    """Random parameters around the initialisation, so the outputs are not at their special initial values."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x) + scale * rng.normal(size=x.shape), x.dtype), params)


# ----------------------------------------------------------------------------------------------------
# critic loss

HL = HLGauss.create(V_MIN, V_MAX, BINS)
ZERO_PROBS = tuple(float(p) for p in ref_hl_probs([0.0])[0][0])
CRITIC = Critic(width=WIDTH, encoder_depth=2, zero_value_probs=ZERO_PROBS)


@functools.cache
def critic_init_params():
    return jax.jit(CRITIC.init)(jax.random.key(0), jnp.zeros((1, CRITIC_OBS)), jnp.zeros((1, ACT)))


def make_critic_batch(rng: np.random.Generator):
    f = lambda *shape, s=1.0: jnp.asarray(rng.normal(0.0, s, shape), jnp.float32)
    returns = rng.uniform(V_MIN - 3.0, V_MAX + 3.0, B)  # some targets outside the range (clipped)
    terminated = (rng.random(B) < 0.4).astype(np.float32)
    terminated[0], terminated[1] = 1.0, 0.0
    return losses.Minibatch(
        obs=f(B, OBS),
        critic_obs=f(B, CRITIC_OBS),
        actions=jnp.asarray(rng.uniform(-1, 1, (B, ACT)), jnp.float32),
        rewards=f(B, s=2.0),
        terminated=jnp.asarray(terminated),
        returns=jnp.asarray(returns, jnp.float32),
        next_embedding=f(B, WIDTH),
        old_mean=f(B, ACT),
        old_std=jnp.asarray(rng.uniform(0.1, 1.0, (B, ACT)), jnp.float32),
    )


@jax.jit
def critic_outputs(params, mb):
    """Network outputs only (no loss arithmetic): logits, aux predictions and next embedding."""
    logits = CRITIC.apply(params, mb.critic_obs, mb.actions, method="q_logits")
    emb = CRITIC.apply(params, mb.critic_obs, mb.actions, method="embed")
    pred_r, pred_next = CRITIC.apply(params, emb, method="predict_aux")
    return logits, pred_r, pred_next, mb.next_embedding


@jax.jit
def critic_loss_and_grad(params, mb, aux_coef):
    return jax.value_and_grad(losses.critic_loss, has_aux=True)(params, CRITIC.apply, mb, HL, aux_coef)


def ref_critic_loss(params, mb, aux_coef):
    logits, pred_r, pred_next, next_emb = (np.asarray(x, np.float64) for x in critic_outputs(params, mb))
    target, centres = ref_hl_probs(np.asarray(mb.returns))
    ce = -np.sum(target * special.log_softmax(logits, axis=-1), axis=-1)
    sq = np.concatenate([(pred_r - np.asarray(mb.rewards))[:, None] ** 2, (pred_next - next_emb) ** 2], axis=-1)
    aux = (1.0 - np.asarray(mb.terminated)) * sq.mean(-1)
    q = special.softmax(logits, axis=-1) @ centres
    info = {
        "critic_ce": ce.mean(),
        "aux_loss": aux.mean(),
        "q_mean": q.mean(),
        "q_error": np.abs(q - np.asarray(mb.returns)).mean(),
    }
    return float(np.mean(ce + aux_coef * aux)), info


@FEW
@given(seed=SEEDS, aux_coef=st.sampled_from([0.0, 1.0, 0.37]))
def test_critic_loss_matches_numpy(seed, aux_coef):
    rng = np.random.default_rng(seed)
    params = perturb(critic_init_params(), seed, 0.3)
    mb = make_critic_batch(rng)
    (loss, info), _ = critic_loss_and_grad(params, mb, aux_coef)
    ref, ref_info = ref_critic_loss(params, mb, aux_coef)
    assert float(loss) == pytest.approx(ref, rel=1e-5, abs=1e-5)
    for name, value in ref_info.items():
        assert float(info[name]) == pytest.approx(value, rel=1e-4, abs=1e-5), name


@FEW
@given(seed=SEEDS)
def test_critic_aux_term_masked_by_termination(seed):
    """Changing the aux targets (reward, next embedding) of terminated samples changes neither the loss nor
    its gradient; changing them for a live sample does."""
    rng = np.random.default_rng(seed)
    params = perturb(critic_init_params(), seed, 0.3)
    mb = make_critic_batch(rng)
    term = np.asarray(mb.terminated) > 0
    (loss, _), grads = critic_loss_and_grad(params, mb, 1.0)

    def changed(mask):
        noise = lambda x: jnp.where(
            jnp.asarray(mask).reshape(-1, *([1] * (x.ndim - 1))), x + 5.0 + 3.0 * rng.normal(size=x.shape), x
        ).astype(jnp.float32)
        return mb.replace(
            rewards=noise(mb.rewards),
            next_embedding=noise(mb.next_embedding),
        )

    (loss_t, _), grads_t = critic_loss_and_grad(params, changed(term), 1.0)
    assert float(loss_t) == pytest.approx(float(loss), rel=1e-6, abs=1e-7)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads_t, grads)
    (loss_l, _), _ = critic_loss_and_grad(params, changed(~term), 1.0)
    assert abs(float(loss_l) - float(loss)) > 1e-3


@jax.jit
def ref_critic_grad(params, mb, target, next_emb, aux_coef):
    """Independent jax critic loss with constant HL-Gauss target and next embedding; its gradient."""

    def ref_loss(p):
        logits = CRITIC.apply(p, mb.critic_obs, mb.actions, method="q_logits")
        emb = CRITIC.apply(p, mb.critic_obs, mb.actions, method="embed")
        pred_r, pred_next = CRITIC.apply(p, emb, method="predict_aux")
        ce = -jnp.sum(target * jax.nn.log_softmax(logits), axis=-1)
        sq_sum = (pred_r - mb.rewards) ** 2 + jnp.sum((pred_next - next_emb) ** 2, axis=-1)
        return jnp.mean(ce + aux_coef * (1.0 - mb.terminated) * sq_sum / (1 + WIDTH))

    return jax.grad(ref_loss)(params)


@FEW
@given(seed=SEEDS)
def test_critic_gradient_matches_reference_with_stopped_next_embedding(seed):
    """The gradient equals that of an independent jax re-implementation in which the next-state embedding and
    the HL-Gauss target are constants (stop-gradient on phi(x', a'))."""
    rng = np.random.default_rng(seed)
    params = perturb(critic_init_params(), seed, 0.3)
    mb = make_critic_batch(rng)
    aux_coef = 0.7
    _, grads = critic_loss_and_grad(params, mb, aux_coef)
    target = jnp.asarray(ref_hl_probs(np.asarray(mb.returns))[0], jnp.float32)
    next_emb = critic_outputs(params, mb)[3]  # a constant here

    ref_grads = ref_critic_grad(params, mb, target, next_emb, aux_coef)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6), grads, ref_grads)


# ----------------------------------------------------------------------------------------------------
# actor loss

ACTOR = Actor(action_size=ACT, width=WIDTH, depth=2, min_std=0.05)
NUM_KL = 8


actor_apply = jax.jit(ACTOR.apply)


@functools.cache
def actor_init_params():
    return jax.jit(ACTOR.init)(jax.random.key(1), jnp.zeros((1, OBS)))


def q_params(rng):
    return {
        "w": jnp.asarray(rng.normal(0.0, 1.0, (CRITIC_OBS, ACT)), jnp.float32),
        "c": jnp.asarray(rng.uniform(0.5, 2.0, ACT), jnp.float32),
        "v": jnp.asarray(rng.normal(0.0, 1.0, CRITIC_OBS), jnp.float32),
    }


def quadratic_q(qp, critic_obs, action):
    """Closed-form critic: Q(x, a) = x.v - sum_i c_i (a_i - tanh(x W)_i)^2 (jax, differentiable in a)."""
    return critic_obs @ qp["v"] - jnp.sum(qp["c"] * (action - jnp.tanh(critic_obs @ qp["w"])) ** 2, axis=-1)


def quadratic_q_np(qp, critic_obs, action):
    w, c, v = (np.asarray(qp[k], np.float64) for k in ("w", "c", "v"))
    x = np.asarray(critic_obs, np.float64)
    return x @ v - np.sum(c * (action - np.tanh(x @ w)) ** 2, axis=-1)


@jax.jit
def actor_loss_and_grad(params, old_mean, old_std, qp, obs, critic_obs, key, alpha, beta, kl_bound):
    critic_q = functools.partial(quadratic_q, qp)
    return jax.value_and_grad(losses.actor_loss, has_aux=True)(
        params, ACTOR.apply, old_mean=old_mean, old_std=old_std, critic_q=critic_q, obs=obs, critic_obs=critic_obs,
        key=key, alpha=alpha, beta=beta, kl_bound=kl_bound, num_kl_samples=NUM_KL,
    )  # fmt: skip


def make_actor_case(seed):
    """Random actor, observations and an old policy that equals the current one on some states (KL = 0) and is
    far from it on the others (KL well above any bound used)."""
    rng = np.random.default_rng(seed)
    params = perturb(actor_init_params(), seed, 0.3)
    obs = jnp.asarray(rng.normal(0.0, 1.0, (B, OBS)), jnp.float32)
    critic_obs = jnp.asarray(rng.normal(0.0, 1.0, (B, CRITIC_OBS)), jnp.float32)
    mean, std = (np.asarray(x) for x in actor_apply(params, obs))
    far = rng.random(B) < 0.5
    far[0], far[1] = True, False
    shift = rng.uniform(2.0, 3.0, (B, ACT)) * rng.choice([-1.0, 1.0], (B, ACT))
    old_mean = np.where(far[:, None], mean + shift * std, mean).astype(np.float32)
    old_std = np.where(far[:, None], std * rng.uniform(0.7, 1.4, (B, ACT)), std).astype(np.float32)
    return rng, params, obs, critic_obs, mean, std, old_mean, old_std, far


@jax.jit
def documented_noise(key):
    """The documented key use of actor_loss: key_action, key_kl = split(key); the action noise has the shape
    of the mean, the KL noise the shape (S, *mean.shape)."""
    key_action, key_kl = jax.random.split(key)
    return (
        jax.random.normal(key_action, (B, ACT), jnp.float32),
        jax.random.normal(key_kl, (NUM_KL, B, ACT), jnp.float32),
    )


def _log_normal(x, m, s):
    return jnp.sum(-0.5 * ((x - m) / s) ** 2 - jnp.log(s) - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)


@jax.jit
def ref_actor_grad(params, obs, critic_obs, qp, eps, noise, old_mean, old_std, inside, alpha, beta):
    """Independent jax actor loss with given noise and a fixed (non-differentiated) per-state switch."""
    b = old_mean + old_std * noise

    def ref_loss(p):
        m, s = ACTOR.apply(p, obs)
        u = m + s * eps
        log_prob = _log_normal(u, m, s) + 2.0 * (jnp.logaddexp(u, -u) - jnp.log(2.0)).sum(-1)
        q = quadratic_q(qp, critic_obs, jnp.tanh(u))
        kl = jnp.mean(_log_normal(b, old_mean, old_std) - _log_normal(b, m, s), axis=0)
        return jnp.mean(jnp.where(inside, alpha * log_prob - q, beta * kl))

    return jax.grad(ref_loss)(params)


def ref_actor(key, mean, std, old_mean, old_std, qp, critic_obs, alpha, beta, kl_bound):
    """numpy float64 recomputation of the actor loss with the documented noise."""
    eps, noise = (np.asarray(x, np.float64) for x in documented_noise(key))
    mean, std, old_mean, old_std = (np.asarray(x, np.float64) for x in (mean, std, old_mean, old_std))
    u = mean + std * eps
    log_prob = ref_tanh_gauss_log_prob(u, mean, std)
    q = quadratic_q_np(qp, critic_obs, np.tanh(u))
    b = old_mean + old_std * noise
    kl = np.mean(stats.norm.logpdf(b, old_mean, old_std).sum(-1) - stats.norm.logpdf(b, mean, std).sum(-1), axis=0)
    inside = kl < kl_bound
    per_state = np.where(inside, alpha * log_prob - q, beta * kl)
    return per_state.mean(), log_prob, kl, inside, eps, noise


@FEW
@given(seed=SEEDS)
def test_actor_loss_per_state_switch_matches_numpy(seed):
    rng, params, obs, critic_obs, mean, std, old_mean, old_std, far = make_actor_case(seed)
    qp = q_params(rng)
    alpha, beta = float(rng.uniform(0.01, 1.0)), float(rng.uniform(0.01, 2.0))
    kl_bound = float(rng.choice([0.05, 0.1, 0.3]))
    key = jax.random.key(seed)
    (loss, (stats_, info)), _ = actor_loss_and_grad(
        params, old_mean, old_std, qp, obs, critic_obs, key, jnp.float32(alpha), jnp.float32(beta), kl_bound
    )
    ref_loss, ref_logp, ref_kl, inside, _, _ = ref_actor(
        key, mean, std, old_mean, old_std, qp, critic_obs, alpha, beta, kl_bound
    )
    # The construction puts the near states exactly at KL = 0 and the far ones outside (KL > 4 in 200 seeds).
    np.testing.assert_array_equal(inside, ~far)
    np.testing.assert_allclose(np.asarray(stats_.log_prob), ref_logp, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(stats_.kl), ref_kl, rtol=1e-4, atol=1e-5)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-4, abs=1e-4)
    assert float(info["entropy"]) == pytest.approx(-ref_logp.mean(), rel=1e-4, abs=1e-4)
    assert float(info["kl"]) == pytest.approx(ref_kl.mean(), rel=1e-4, abs=1e-5)
    assert float(info["kl_violation_frac"]) == pytest.approx(1.0 - inside.mean(), abs=1e-6)
    assert float(info["policy_std"]) == pytest.approx(std.mean(), rel=1e-5)


@FEW
@given(seed=SEEDS)
def test_actor_loss_gradient_matches_reference(seed):
    """Gradient wrt the actor parameters equals that of an independent jax implementation with the same
    noise: reparameterised alpha log pi - Q inside the trust region, beta * sampled KL (samples from pi_old,
    no gradient through them) outside, per state, with the switch not differentiated."""
    rng, params, obs, critic_obs, mean, std, old_mean, old_std, far = make_actor_case(seed)
    qp = q_params(rng)
    alpha, beta, kl_bound = float(rng.uniform(0.01, 1.0)), float(rng.uniform(0.01, 2.0)), 0.1
    key = jax.random.key(seed)
    _, grads = actor_loss_and_grad(
        params, old_mean, old_std, qp, obs, critic_obs, key, jnp.float32(alpha), jnp.float32(beta), kl_bound
    )
    _, _, _, inside, eps, noise = ref_actor(key, mean, std, old_mean, old_std, qp, critic_obs, alpha, beta, kl_bound)
    eps, noise = jnp.asarray(eps, jnp.float32), jnp.asarray(noise, jnp.float32)
    ref_grads = ref_actor_grad(params, obs, critic_obs, qp, eps, noise, old_mean, old_std, inside, alpha, beta)
    jax.tree.map(lambda a, r: np.testing.assert_allclose(a, r, rtol=2e-4, atol=2e-5), grads, ref_grads)


@FEW
@given(seed=SEEDS)
def test_actor_loss_outside_trust_region_ignores_critic(seed):
    """When every state violates the bound the loss is beta * mean KL: scaling Q changes nothing; inside the
    bound it does."""
    rng, params, obs, critic_obs, mean, std, old_mean, old_std, far = make_actor_case(seed)
    qp = q_params(rng)
    key = jax.random.key(seed)
    args = (jnp.float32(0.2), jnp.float32(0.5), 0.1)
    all_far = np.asarray(make_far(mean, std, rng))
    qp_scaled = {**qp, "c": qp["c"] * 10.0, "v": qp["v"] * 10.0}
    (l1, (s1, _)), _ = actor_loss_and_grad(params, all_far[0], all_far[1], qp, obs, critic_obs, key, *args)
    (l2, _), _ = actor_loss_and_grad(params, all_far[0], all_far[1], qp_scaled, obs, critic_obs, key, *args)
    assert float(l1) == pytest.approx(float(l2), rel=1e-6)
    assert float(l1) == pytest.approx(0.5 * float(np.mean(np.asarray(s1.kl))), rel=1e-5)
    (l3, _), _ = actor_loss_and_grad(params, mean, std, qp, obs, critic_obs, key, *args)
    (l4, _), _ = actor_loss_and_grad(params, mean, std, qp_scaled, obs, critic_obs, key, *args)
    assert abs(float(l3) - float(l4)) > 1e-3


def make_far(mean, std, rng):
    shift = rng.uniform(2.0, 3.0, mean.shape) * rng.choice([-1.0, 1.0], mean.shape)
    return jnp.asarray(mean + shift * std, jnp.float32), jnp.asarray(std, jnp.float32)


# ----------------------------------------------------------------------------------------------------
# dual variables

dual_grad = jax.jit(jax.value_and_grad(losses.dual_loss))


def dual_case(rng, entropy_offset, kl_offset):
    """Stats whose mean entropy -log pi is target + entropy_offset and mean KL is bound + kl_offset."""
    target_entropy, kl_bound = -0.5 * ACT, float(rng.uniform(0.05, 0.3))
    log_prob = rng.normal(0.0, 1.0, B)
    log_prob = log_prob - log_prob.mean() - target_entropy - entropy_offset
    kl = rng.uniform(0.0, 1.0, B)
    kl = kl - kl.mean() + kl_bound + kl_offset
    stats_ = losses.ActorStats(log_prob=jnp.asarray(log_prob, jnp.float32), kl=jnp.asarray(kl, jnp.float32))
    return stats_, target_entropy, kl_bound, log_prob, kl


@FEW
@given(seed=SEEDS)
def test_dual_loss_value_and_gradient_closed_form(seed):
    rng = np.random.default_rng(seed)
    stats_, target_entropy, kl_bound, log_prob, kl = dual_case(rng, rng.normal(), rng.normal(0.0, 0.2))
    log_duals = rng.normal(-2.0, 1.0, 2)
    loss, grad = dual_grad(jnp.asarray(log_duals, jnp.float32), stats_, target_entropy, kl_bound)
    alpha, beta = np.exp(log_duals)
    g_alpha = alpha * np.mean(-log_prob - target_entropy)
    g_beta = -beta * np.mean(kl - kl_bound)
    assert float(loss) == pytest.approx(g_alpha + g_beta, rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(np.asarray(grad), [g_alpha, g_beta], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("entropy_side", [-1.0, 1.0])
@pytest.mark.parametrize("kl_side", [-1.0, 1.0])
@FEW
@given(seed=SEEDS)
def test_dual_update_signs(entropy_side, kl_side, seed):
    """One SGD step on the dual loss: log alpha rises iff the entropy is below the target -c_H d; log beta
    rises iff the KL exceeds the bound."""
    rng = np.random.default_rng(seed)
    stats_, target_entropy, kl_bound, _, _ = dual_case(
        rng, entropy_side * rng.uniform(0.1, 2.0), kl_side * rng.uniform(0.01, 0.5)
    )
    log_duals = jnp.asarray(np.log([0.01, 0.01]) + rng.normal(0.0, 0.5, 2), jnp.float32)
    tx = optax.sgd(0.1)
    _, grad = dual_grad(log_duals, stats_, target_entropy, kl_bound)
    updates, _ = tx.update(grad, tx.init(log_duals))
    new = np.asarray(optax.apply_updates(log_duals, updates))
    old = np.asarray(log_duals)
    # entropy below target (side -1) -> alpha up; KL above bound (side +1) -> beta up.
    assert np.sign(new[0] - old[0]) == -entropy_side
    assert np.sign(new[1] - old[1]) == kl_side
