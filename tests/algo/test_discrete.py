"""Discrete actions (docs/discrete.md): the categorical policy's exact sums, the per-action HL-Gauss critic and the
discrete losses, each against a numpy reference that loops over the actions explicitly (float64)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from reppo.algo import categorical, losses
from reppo.algo.hl_gauss import HLGauss
from reppo.nets import DiscreteActor, DiscreteCritic

SEEDS = st.integers(0, 2**32 - 1)
FEW = settings(max_examples=8, deadline=None, database=None)

B, OBS, A = 10, 5, 6
V_MIN, V_MAX, BINS = -5.0, 5.0, 21
WIDTH = 16


def random_logits(rng, *shape, scale=None):
    """Logits from flat to peaked (scale up to 8), so some policies are nearly deterministic."""
    scale = rng.uniform(0.1, 8.0) if scale is None else scale
    return (scale * rng.normal(size=shape)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# references: explicit loops over the actions


def ref_policy(logits):
    """float64 pi(a|x) and log pi(a|x), one action at a time: pi_a = exp(l_a) / sum_b exp(l_b)."""
    logits = np.asarray(logits, np.float64)
    logp = np.empty_like(logits)
    for s in range(logits.shape[0]):
        m = max(logits[s])
        norm = m + math.log(sum(math.exp(logits[s, b] - m) for b in range(logits.shape[1])))
        for a in range(logits.shape[1]):
            logp[s, a] = logits[s, a] - norm
    return np.exp(logp), logp


def ref_entropy(logits):
    p, logp = ref_policy(logits)
    return np.array([-sum(p[s, a] * logp[s, a] for a in range(p.shape[1])) for s in range(p.shape[0])])


def ref_kl(logits_old, logits_new):
    p_old, logp_old = ref_policy(logits_old)
    _, logp_new = ref_policy(logits_new)
    n, k = p_old.shape
    return np.array([sum(p_old[s, a] * (logp_old[s, a] - logp_new[s, a]) for a in range(k)) for s in range(n)])


def ref_soft_value(logits, q, alpha):
    """V(x) = sum_a pi(a|x) [Q(x, a) - alpha log pi(a|x)]."""
    p, logp = ref_policy(logits)
    q = np.asarray(q, np.float64)
    n, k = p.shape
    return np.array([sum(p[s, a] * (q[s, a] - alpha * logp[s, a]) for a in range(k)) for s in range(n)])


def ref_actor_loss(logits, old_logits, q, alpha, beta, kl_bound, sign=1.0):
    """mean_x [ sum_a pi(a|x) (sign * alpha log pi(a|x) - Q(x, a)) if KL(x) < eps_KL else beta KL(x) ]."""
    p, logp = ref_policy(logits)
    kl = ref_kl(old_logits, logits)
    q = np.asarray(q, np.float64)
    per_state = []
    for s in range(p.shape[0]):
        if kl[s] < kl_bound:
            per_state.append(sum(p[s, a] * (sign * alpha * logp[s, a] - q[s, a]) for a in range(p.shape[1])))
        else:
            per_state.append(beta * kl[s])
    return float(np.mean(per_state)), kl


# ----------------------------------------------------------------------------------------------------
# the categorical distribution


@FEW
@given(seed=SEEDS)
def test_log_probs_entropy_kl_match_loops(seed):
    rng = np.random.default_rng(seed)
    logits, old = random_logits(rng, B, A), random_logits(rng, B, A)
    np.testing.assert_allclose(categorical.log_probs(logits), ref_policy(logits)[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(categorical.entropy(logits), ref_entropy(logits), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(categorical.kl(old, logits), ref_kl(old, logits), rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(categorical.entropy(logits)) <= math.log(A) + 1e-5)
    np.testing.assert_allclose(categorical.kl(logits, logits), 0.0, atol=1e-6)


@FEW
@given(seed=SEEDS, alpha=st.floats(0.0, 3.0))
def test_soft_value_and_actor_objective_match_loops(seed, alpha):
    rng = np.random.default_rng(seed)
    logits = random_logits(rng, B, A)
    q = rng.normal(0.0, 3.0, (B, A)).astype(np.float32)
    ref = ref_soft_value(logits, q, alpha)
    np.testing.assert_allclose(categorical.soft_value(logits, q, alpha), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(categorical.actor_objective(logits, q, alpha), -ref, rtol=1e-4, atol=1e-4)


@FEW
@given(seed=SEEDS)
def test_soft_value_against_monte_carlo(seed):
    """The exact sum against (1/N) sum_n [Q(x, a_n) - alpha log pi(a_n|x)], a_n ~ pi via ``categorical.sample``
    with N = 100,000. The per-sample term has variance s^2 (computed exactly), so the estimate's error is below
    5 s / sqrt(N) except with probability < 1e-6 per state (normal approximation), i.e. < 1e-4 over this test."""
    rng = np.random.default_rng(seed)
    n, alpha = 100_000, 0.7
    logits = random_logits(rng, B, A, scale=1.5)
    q = rng.normal(0.0, 2.0, (B, A)).astype(np.float32)
    actions, log_p = jax.jit(categorical.sample)(jax.random.key(seed), jnp.broadcast_to(logits, (n, B, A)))
    terms = np.take_along_axis(q[None], np.asarray(actions)[..., None], axis=-1)[..., 0] - alpha * np.asarray(log_p)
    p, logp = ref_policy(logits)
    exact = ref_soft_value(logits, q, alpha)
    s = np.sqrt(np.sum(p * (q - alpha * logp - exact[:, None]) ** 2, axis=-1))
    bound = 5.0 * s / math.sqrt(n) + 1e-5
    assert np.all(np.abs(terms.mean(0) - np.asarray(categorical.soft_value(logits, q, alpha))) < bound), seed


@FEW
@given(seed=SEEDS)
def test_sample_frequencies_log_prob_and_greedy(seed):
    """Sample frequencies of each action against pi (chi-square test at level 1e-6); log pi of the sampled action
    and the greedy action against the loops."""
    rng = np.random.default_rng(seed)
    logits = random_logits(rng, 1, A, scale=1.0)[0]
    n = 50_000
    actions, log_p = categorical.sample(jax.random.key(seed), jnp.broadcast_to(logits, (n, A)))
    actions = np.asarray(actions)
    assert actions.dtype == np.int32 and actions.min() >= 0 and actions.max() < A
    p, logp = ref_policy(logits[None])
    counts = np.bincount(actions, minlength=A)
    assert stats.chisquare(counts, n * p[0]).pvalue > 1e-6, seed
    np.testing.assert_allclose(log_p, logp[0][actions], rtol=1e-5, atol=1e-5)
    batch = random_logits(rng, B, A)
    assert np.array_equal(categorical.greedy_action(batch), np.array([int(np.argmax(row)) for row in batch]))


def test_target_entropy_is_fraction_of_uniform_entropy():
    assert categorical.target_entropy(6, 0.5) == pytest.approx(0.5 * math.log(6))
    assert categorical.target_entropy(6, 1.0) == pytest.approx(float(categorical.entropy(jnp.zeros(6))), rel=1e-6)
    assert categorical.target_entropy(18, 0.0) == 0.0


# ----------------------------------------------------------------------------------------------------
# the actor loss (logits as the parameters: actor_apply(p, obs) = p)

logits_as_params = lambda params, obs: params


@jax.jit
def actor_loss_and_grad(logits, old_logits, q, alpha, beta, kl_bound):
    return jax.value_and_grad(losses.discrete_actor_loss, has_aux=True)(
        logits, logits_as_params, old_logits=old_logits, q=q, obs=jnp.zeros((logits.shape[0], 1)), alpha=alpha,
        beta=beta, kl_bound=kl_bound,
    )  # fmt: skip


def make_actor_case(seed):
    """Random policies; pi_old equals pi on some states (KL = 0) and is far from it on others (KL >> bound)."""
    rng = np.random.default_rng(seed)
    logits = random_logits(rng, B, A, scale=1.5)
    far = rng.random(B) < 0.5
    far[0], far[1] = True, False
    kl_bound = 0.05
    old = logits.copy()
    redraw = far.copy()
    while redraw.any():  # a far state's noise can by chance land near pi: draw it again until KL > 4 x the bound
        old[redraw] = logits[redraw] + rng.normal(0.0, 3.0, (int(redraw.sum()), A)).astype(np.float32)
        redraw = far & (ref_kl(old, logits) < 4 * kl_bound)
    q = rng.normal(0.0, 2.0, (B, A)).astype(np.float32)
    alpha, beta = float(rng.uniform(0.05, 2.0)), float(rng.uniform(0.1, 3.0))
    kl = ref_kl(old, logits)
    assert np.all(np.abs(kl - kl_bound) > 1e-3)  # no state on the switch
    return rng, logits, old, q, alpha, beta, kl_bound


def numeric_grad(f, x, h=1e-6):
    """Central finite differences of a float64 function of an array."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        g[idx] = (f(up) - f(down)) / (2 * h)
    return g


@FEW
@given(seed=SEEDS)
def test_actor_loss_and_gradient_match_loops_and_finite_differences(seed):
    """Loss, per-state KL, exact entropy and the switch against the loops; the gradient in the logits against
    central finite differences of the float64 loop reference (the switch held fixed, as stop-gradient does)."""
    _, logits, old, q, alpha, beta, kl_bound = make_actor_case(seed)
    (loss, (actor_stats, info)), grad = actor_loss_and_grad(logits, old, q, alpha, beta, kl_bound)
    ref, kl = ref_actor_loss(logits, old, q, alpha, beta, kl_bound)
    assert float(loss) == pytest.approx(ref, rel=1e-4, abs=1e-5)
    np.testing.assert_allclose(actor_stats.kl, kl, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(actor_stats.log_prob, -ref_entropy(logits), rtol=1e-4, atol=1e-5)
    assert float(info["kl_violation_frac"]) == pytest.approx(np.mean(kl >= kl_bound))
    assert float(info["entropy"]) == pytest.approx(ref_entropy(logits).mean(), rel=1e-4)

    inside = kl < kl_bound

    def fixed_switch(x):
        p, logp = ref_policy(x)
        k = ref_kl(old, x)
        obj = np.sum(p * (alpha * logp - q), axis=-1)
        return np.mean(np.where(inside, obj, beta * k))

    np.testing.assert_allclose(grad, numeric_grad(fixed_switch, logits), rtol=1e-3, atol=1e-5)
    # a state beyond the bound gets only the KL's gradient: zero where pi = pi_old would hold
    assert not np.allclose(np.asarray(grad)[~inside], 0.0)


@FEW
@given(seed=SEEDS)
def test_flipping_the_sign_of_the_entropy_term_is_detected(seed):
    """The reference with +alpha log pi replaced by -alpha log pi disagrees with the loss and its gradient by far
    more than the tolerances above, so the tests above would catch that sign error."""
    _, logits, old, q, _, beta, kl_bound = make_actor_case(seed)
    alpha = 1.0
    (loss, _), grad = actor_loss_and_grad(logits, old, q, alpha, beta, kl_bound)
    flipped, kl = ref_actor_loss(logits, old, q, alpha, beta, kl_bound, sign=-1.0)
    inside = kl < kl_bound
    assert abs(float(loss) - flipped) > 1e-2 * np.mean(inside) * np.mean(ref_entropy(logits)[inside])

    def flipped_fixed(x):
        p, logp = ref_policy(x)
        obj = np.sum(p * (-alpha * logp - q), axis=-1)
        return np.mean(np.where(inside, obj, beta * ref_kl(old, x)))

    assert np.max(np.abs(np.asarray(grad) - numeric_grad(flipped_fixed, logits))) > 1e-2


def test_minimising_the_objective_with_flat_q_raises_entropy_to_uniform():
    """With Q constant the objective is -alpha H(pi): gradient descent drives pi to uniform (H = log A). The
    flipped sign would drive it to a deterministic policy."""
    rng = np.random.default_rng(0)
    logits = jnp.asarray(random_logits(rng, B, A, scale=2.0))
    grad = jax.jit(jax.grad(lambda x: jnp.mean(categorical.actor_objective(x, jnp.ones((B, A)), 0.5))))
    start = np.asarray(categorical.entropy(logits))
    for _ in range(2000):
        logits = logits - 2.0 * B * grad(logits)
    end = np.asarray(categorical.entropy(logits))
    assert np.all(end > start) and np.all(end > math.log(A) - 1e-3)


# ----------------------------------------------------------------------------------------------------
# the per-action critic and its loss


def ref_hl_probs(g):
    width = (V_MAX - V_MIN) / (BINS - 1)
    centres = V_MIN + width * np.arange(BINS)
    g = np.clip(np.asarray(g, np.float64), V_MIN, V_MAX)[:, None]
    mass = stats.norm.cdf(centres + width / 2, g, 0.75 * width) - stats.norm.cdf(centres - width / 2, g, 0.75 * width)
    return mass / mass.sum(-1, keepdims=True), centres


HL = HLGauss.create(V_MIN, V_MAX, BINS)
CRITIC = DiscreteCritic(A, WIDTH, 2, tuple(float(p) for p in ref_hl_probs([0.0])[0][0]))


@functools.cache
def critic_init_params():
    return jax.jit(CRITIC.init)(jax.random.key(0), jnp.zeros((1, OBS)), jnp.zeros((1,), jnp.int32))


def perturb(params, seed, scale):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x) + scale * rng.normal(size=x.shape), x.dtype), params)


def make_critic_batch(rng, num_used_actions=A):
    terminated = (rng.random(B) < 0.4).astype(np.float32)
    terminated[0], terminated[1] = 1.0, 0.0
    return losses.DiscreteMinibatch(
        obs=jnp.asarray(rng.normal(size=(B, OBS)), jnp.float32),
        critic_obs=jnp.asarray(rng.normal(size=(B, OBS)), jnp.float32),
        actions=jnp.asarray(rng.integers(0, num_used_actions, B), jnp.int32),
        rewards=jnp.asarray(rng.normal(0.0, 2.0, B), jnp.float32),
        terminated=jnp.asarray(terminated),
        returns=jnp.asarray(rng.uniform(V_MIN - 3.0, V_MAX + 3.0, B), jnp.float32),
        next_embedding=jnp.asarray(rng.normal(size=(B, WIDTH)), jnp.float32),
        old_logits=jnp.asarray(rng.normal(size=(B, A)), jnp.float32),
    )


@jax.jit
def critic_loss_and_grad(params, mb, aux_coef):
    return jax.value_and_grad(losses.discrete_critic_loss, has_aux=True)(params, CRITIC.apply, mb, HL, aux_coef)


def test_initial_critic_gives_every_action_q_near_zero():
    obs = jnp.asarray(np.random.default_rng(1).normal(size=(B, OBS)), jnp.float32)
    logits = CRITIC.apply(critic_init_params(), obs, method="q_logits")
    assert logits.shape == (B, A, BINS)
    assert np.max(np.abs(HL.to_value(logits))) < 0.05


@FEW
@given(seed=SEEDS, aux_coef=st.sampled_from([0.0, 1.0, 0.37]))
def test_critic_loss_uses_the_taken_actions_logits(seed, aux_coef):
    """CE of the HL-Gauss target against the taken action's head, picked by a loop; auxiliary MSE masked by
    (1 - d_t), its prediction from [phi(x), one_hot(a)]."""
    rng = np.random.default_rng(seed)
    params = perturb(critic_init_params(), seed, 0.3)
    mb = make_critic_batch(rng)
    (loss, info), _ = critic_loss_and_grad(params, mb, aux_coef)

    emb = CRITIC.apply(params, mb.critic_obs, method="embed")
    all_logits = np.asarray(CRITIC.apply(params, emb, method="logits"), np.float64)
    pred_r, pred_next = (np.asarray(x, np.float64) for x in CRITIC.apply(params, emb, mb.actions, method="predict_aux"))
    one_hot_in = np.concatenate([np.asarray(emb), np.eye(A)[np.asarray(mb.actions)]], axis=-1)
    block_params = {"params": {"aux_block": params["params"]["aux_block"], "aux_out": params["params"]["aux_out"]}}
    manual = np.asarray(
        CRITIC.apply(block_params, jnp.asarray(one_hot_in, jnp.float32), method=lambda m, h: m.aux_out(m.aux_block(h)))
    )
    np.testing.assert_allclose(pred_r, manual[:, 0], rtol=1e-5, atol=1e-5)
    target, centres = ref_hl_probs(np.asarray(mb.returns))
    ce, aux, q = [], [], []
    for s in range(B):
        row = all_logits[s, int(mb.actions[s])]
        log_sm = row - np.logaddexp.reduce(row)
        ce.append(-np.sum(target[s] * log_sm))
        q.append(np.sum(np.exp(log_sm) * centres))
        sq = np.concatenate(
            [[(pred_r[s] - float(mb.rewards[s])) ** 2], (pred_next[s] - np.asarray(mb.next_embedding[s])) ** 2]
        )
        aux.append((1.0 - float(mb.terminated[s])) * sq.mean())
    ref = np.mean(np.array(ce) + aux_coef * np.array(aux))
    assert float(loss) == pytest.approx(ref, rel=1e-5, abs=1e-5)
    assert float(info["critic_ce"]) == pytest.approx(np.mean(ce), rel=1e-5)
    assert float(info["aux_loss"]) == pytest.approx(np.mean(aux), rel=1e-4, abs=1e-6)
    assert float(info["q_mean"]) == pytest.approx(np.mean(q), rel=1e-4, abs=1e-5)


@FEW
@given(seed=SEEDS)
def test_heads_of_actions_not_taken_get_no_gradient(seed):
    """Only the taken actions' heads are trained: with actions drawn from {0, 1, 2} the output weights and biases
    of the heads 3..A-1 get exactly zero gradient, those of the taken heads do not."""
    rng = np.random.default_rng(seed)
    params = perturb(critic_init_params(), seed, 0.3)
    mb = make_critic_batch(rng, num_used_actions=3).replace(actions=jnp.asarray(np.arange(B) % 3, jnp.int32))
    _, grads = critic_loss_and_grad(params, mb, 1.0)
    out = grads["params"]["q_out"]
    kernel = np.asarray(out["kernel"]).reshape(WIDTH, A, BINS)
    bias = np.asarray(out["bias"]).reshape(A, BINS)
    assert np.all(kernel[:, 3:] == 0.0) and np.all(bias[3:] == 0.0)
    assert np.all(np.abs(bias[:3]).max(-1) > 0.0)


def test_dual_loss_with_exact_entropy():
    """dual_loss is reused: with stats.log_prob = -H(pi) its alpha gradient is alpha (H - H_target), so alpha
    grows (negative gradient) when the exact entropy is below the target."""
    logits = jnp.asarray(np.random.default_rng(2).normal(0.0, 3.0, (B, A)), jnp.float32)
    h = categorical.entropy(logits)
    stats_ = losses.ActorStats(log_prob=-h, kl=jnp.zeros(B))
    log_duals = jnp.log(jnp.array([0.3, 0.2]))
    target = categorical.target_entropy(A, 0.9)
    g = jax.grad(losses.dual_loss)(log_duals, stats_, target, 0.1)
    assert float(g[0]) == pytest.approx(0.3 * (float(jnp.mean(h)) - target), rel=1e-5)
    assert float(jnp.mean(h)) < target and float(g[0]) < 0.0


def test_discrete_actor_network_starts_near_uniform():
    actor = DiscreteActor(A, WIDTH, 2)
    params = actor.init(jax.random.key(3), jnp.zeros((1, OBS)))
    logits = actor.apply(params, jnp.asarray(np.random.default_rng(3).normal(size=(B, OBS)), jnp.float32))
    assert logits.shape == (B, A)
    assert np.all(np.asarray(categorical.entropy(logits)) > math.log(A) - 0.01)
