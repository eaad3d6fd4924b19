"""The REPPO learner on batches from a real (pure-JAX) env: frozen normalisation, the asymmetric critic path, the
update phase as epochs of disjoint minibatches; and against plain numpy references written from the spec: the K-sample
soft value (section 3), the targets of a hand-made trajectory (section 3) and one minibatch step as its sequence of
critic, actor and dual steps (sections 4 and 5)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from closeness import assert_same_run
from scipy import special, stats

from reppo.algo.learner import Transition
from reppo.config import Config, resolve
from reppo.envs import make_env
from reppo.rollout import make_rollout

TINY = dict(
    num_envs=8,
    num_steps=4,
    num_minibatches=2,
    num_epochs=2,
    critic_width=16,
    actor_width=16,
    num_value_samples=3,
    value_chunk_size=12,
    eval_envs=2,
)


def _build(env_id="ToyAsymmetric", **overrides):
    """(config, env, rollout, learner): the fused rollout of one seed and its single-seed learner."""
    config = resolve(Config(env=env_id, **{**TINY, **overrides}))
    env = make_env(env_id, config.num_envs, episode_length=6)
    rollout = make_rollout(config, env)
    return config, env, rollout, rollout.seeded.learner


def _one_seed(tree):
    return jax.tree.map(lambda x: x[0], tree)


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _after_one_iteration(rollout, seed: int):
    """A state one iteration in (statistics and parameters away from their initial values), and a fresh batch."""
    state = jax.jit(rollout.init)(jax.random.PRNGKey(seed)[None])
    state, _ = jax.jit(rollout.iteration)(state)
    _, batch = jax.jit(rollout.rollout)(state.learner, state.env_state, jax.random.PRNGKey(seed + 1)[None])
    return state, batch


def test_normalisation_frozen_during_iteration_and_merged_after():
    config, env, rollout, learner = _build()
    state, batch = _after_one_iteration(rollout, 3)
    old_state = _one_seed(state.learner)
    new_state, _ = jax.jit(learner.learn)(old_state, batch, jax.random.PRNGKey(4))
    obs = np.asarray(batch.obs, np.float64).reshape(-1, env.obs_size)
    old = old_state.obs_stats
    n_old = float(old.count)
    mean = (np.asarray(old.mean) * n_old + obs.sum(0)) / (n_old + len(obs))
    ex2 = ((np.asarray(old.var) + np.asarray(old.mean) ** 2) * n_old + (obs**2).sum(0)) / (n_old + len(obs))
    np.testing.assert_allclose(new_state.obs_stats.mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_state.obs_stats.var, ex2 - mean**2, rtol=1e-3, atol=1e-5)
    # the critic's privileged statistics are kept separately
    assert new_state.critic_obs_stats.mean.shape == (env.critic_obs_size,)
    # the batch was normalised with the frozen (pre-iteration) statistics
    data = jax.jit(learner.targets)(old_state, batch, jax.random.PRNGKey(0))
    raw = np.asarray(batch.obs).reshape(-1, env.obs_size)
    expected = np.clip((raw - old.mean) / np.sqrt(np.maximum(old.var, 1e-4)), -10.0, 10.0)
    np.testing.assert_allclose(data.obs, expected, rtol=1e-5, atol=1e-5)


def test_asymmetric_critic_sees_privileged_observation():
    config, env, rollout, _ = _build()
    assert env.critic_obs_size != env.obs_size
    state = jax.jit(rollout.init)(jax.random.PRNGKey(0)[None])
    first_actor = state.learner.actor_params["params"]["Block_0"]["Dense_0"]["kernel"]
    first_critic = state.learner.critic_params["params"]["encoder_0"]["Dense_0"]["kernel"]
    assert first_actor.shape[1] == env.obs_size  # (seed, in, out)
    assert first_critic.shape[1] == env.critic_obs_size + env.action_size
    state, metrics = jax.jit(rollout.iteration)(state)
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())


def test_update_is_epochs_of_disjoint_minibatches_of_one_shuffle():
    """The jitted update phase equals a plain loop: each epoch permutes the batch once and hands its M consecutive
    slices to ``update_minibatch`` in order, so every sample is used exactly once per epoch."""
    config, env, rollout, learner = _build()
    rng = np.random.default_rng()
    state, batch = _after_one_iteration(rollout, int(rng.integers(2**31 - 1)))
    state = _one_seed(state.learner)
    k_targets, k_update = jax.random.split(jax.random.PRNGKey(int(rng.integers(2**31))), 2)
    data = jax.jit(learner.targets)(state, batch, k_targets)
    got, _ = jax.jit(learner.update)(state, data, k_update)

    step = jax.jit(learner.update_minibatch)
    expected, size = state, config.minibatch_size
    for epoch_key in jax.random.split(k_update, config.num_epochs):
        k_perm, k_mb = jax.random.split(epoch_key)
        perm = np.asarray(jax.random.permutation(k_perm, config.batch_size))
        assert sorted(perm) == list(range(config.batch_size))
        for i, mb_key in enumerate(jax.random.split(k_mb, config.num_minibatches)):
            rows = perm[i * size : (i + 1) * size]
            mb = jax.tree.map(lambda x, rows=rows: np.asarray(x)[rows], data)
            expected, _ = step(expected, mb, mb_key)
    # One scan against a loop of separately compiled steps: the same sums, possibly fused in another order.
    assert_same_run(got, expected, state)
    assert not _leaves_equal(got.critic_params, state.critic_params)


# ---------------------------------------------------------------------------------------------------------------
# Independent references (numpy float64 straight from the spec; the networks are only applied, never differentiated
# here, except through the separately written losses of the minibatch step)


def _noisy(state, seed: int, alpha: float, beta: float = 0.5):
    """One seed's state with parameters moved away from their initial values and the critic's head spread over the
    bins (so that Q is far from 0 and responds to its inputs: the initial head is saturated around Q = 0), and the
    given duals."""
    rng = np.random.default_rng(seed)

    def move(path, x):
        if "q_out" in jax.tree_util.keystr(path) and "bias" in jax.tree_util.keystr(path):
            return jnp.asarray(rng.normal(size=x.shape), x.dtype)  # in place of the initial offset around Q = 0
        return jnp.asarray(np.asarray(x) + 0.3 * rng.normal(size=x.shape), x.dtype)

    return state.replace(
        actor_params=jax.tree_util.tree_map_with_path(move, state.actor_params),
        critic_params=jax.tree_util.tree_map_with_path(move, state.critic_params),
        log_duals=jnp.log(jnp.asarray([alpha, beta], jnp.float32)),
    )


def ref_normalize(x, stats_):
    """Spec section 6 with this project's floor and clip (reppo.normalization), float64."""
    mean, var = np.asarray(stats_.mean, np.float64), np.asarray(stats_.var, np.float64)
    return np.clip((np.asarray(x, np.float64) - mean) / np.sqrt(np.maximum(var, 1e-4)), -10.0, 10.0)


def ref_log_prob(u, mean, std):
    """log pi(tanh u) = sum_i log N(u_i; mean_i, std_i) + 2 log cosh(u_i) (spec section 2), float64."""
    log_cosh = np.logaddexp(u, -u) - np.log(2.0)
    return np.sum(stats.norm.logpdf(u, mean, std) + 2.0 * log_cosh, axis=-1)


def ref_q(learner, critic_params, critic_obs, actions):
    """Q = softmax(logits) . z in float64 from the critic network's logits."""
    logits = learner.critic.apply(critic_params, jnp.asarray(critic_obs, jnp.float32),
                                  jnp.asarray(actions, jnp.float32), method="q_logits")  # fmt: skip
    c = learner.config
    return special.softmax(np.asarray(logits, np.float64), axis=-1) @ np.linspace(c.v_min, c.v_max, c.num_bins)


def ref_soft_values(learner, state, obs, critic_obs, key):
    """V(x) = (1/K) sum_k [Q(x, a_k) - alpha log pi(a_k|x)] (spec section 3) for normalised inputs (B, ...), with the
    documented noise: row i's K pre-tanh noises are normal(fold_in(key, i), (K, d)). Returns the values, the
    critic's embedding phi(x, a_1) of each row's first sample, and alpha log pi of every sample."""
    k, d = learner.config.num_value_samples, learner.spaces.action_size
    alpha = float(np.exp(state.log_duals[0]))
    mean, std = (np.asarray(x, np.float64) for x in learner.actor.apply(state.actor_params, jnp.asarray(obs)))
    noise = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, i), (k, d))) for i in range(len(obs))])
    u = mean[:, None] + std[:, None] * noise  # (B, K, d)
    log_p = ref_log_prob(u, mean[:, None], std[:, None])
    actions = np.clip(np.tanh(u), -1.0 + 1e-5, 1.0 - 1e-5)
    q = np.stack([ref_q(learner, state.critic_params, critic_obs, actions[:, j]) for j in range(k)], axis=1)
    first = learner.critic.apply(state.critic_params, jnp.asarray(critic_obs, jnp.float32),
                                 jnp.asarray(actions[:, 0], jnp.float32), method="embed")  # fmt: skip
    return np.mean(q - alpha * log_p, axis=1), np.asarray(first), alpha * log_p


def test_soft_values_against_documented_samples_and_independent_of_chunking():
    """V with a critic far from 0 and alpha = 0.5, so that Q and the -alpha log pi term both weigh: against the
    numpy reference, and the same samples for chunks of 1, 5 and all (7) states (padding included)."""
    seed = int(np.random.default_rng().integers(2**31))
    rng = np.random.default_rng(seed)
    got = {}
    for rows in (1, 5, 10_000):
        config, env, rollout, learner = _build(value_chunk_size=rows * TINY["num_value_samples"])
        state = _noisy(_one_seed(jax.jit(rollout.init)(jax.random.PRNGKey(seed % 1000)[None]).learner), seed, 0.5)
        if rows == 1:
            obs = rng.normal(size=(7, env.obs_size)).astype(np.float32)
            critic_obs = rng.normal(size=(7, env.critic_obs_size)).astype(np.float32)
            key = jax.random.PRNGKey(seed)
        got[rows] = [np.asarray(x) for x in jax.jit(learner.soft_values)(state, obs, critic_obs, key)]
    values, first = got[1]
    for rows in (5, 10_000):
        # The same samples: equal up to float32 summation order (XLA sums a matmul of another shape in another order;
        # measured within 3e-6 relative). Samples that moved with the chunking would differ by O(1).
        np.testing.assert_allclose(got[rows][0], values, rtol=1e-5, atol=1e-6, err_msg=f"chunks of {rows}")
        np.testing.assert_allclose(got[rows][1], first, rtol=1e-5, atol=1e-6, err_msg=f"chunks of {rows}")
    ref, ref_first, alpha_log_p = ref_soft_values(learner, state, obs, critic_obs, key)
    assert values.shape == (7,) and first.shape == (7, config.critic_width)
    np.testing.assert_allclose(values, ref, rtol=1e-5, atol=1e-4, err_msg=str(seed))
    np.testing.assert_allclose(first, ref_first, rtol=1e-5, atol=1e-5, err_msg=str(seed))
    # The test can see both terms: Q is far from 0, and alpha log pi is far above the tolerance.
    assert np.mean(ref) > 10.0 and np.max(np.abs(alpha_log_p.mean(axis=1))) > 0.1, seed


# Hand-made episode ends (t, env) of a T = 6, N = 4 rollout: a termination and a truncation in one env, a truncation
# and a termination at the last step in another, one env without any end, a termination at t = 0 and a truncation
# at the last step.
T, N = 6, 4
TERMINATED = [(2, 0), (T - 1, 1), (0, 3)]
TRUNCATED = [(4, 0), (1, 1), (T - 1, 3)]


def _hand_made_batch(env, rng):
    """A rollout whose next observation is the following step's observation unless the episode ended (then a true
    final observation, different from the reset one that follows)."""
    d, tr = np.zeros((T, N), np.float32), np.zeros((T, N), np.float32)
    for t, e in TERMINATED:
        d[t, e] = 1.0
    for t, e in TRUNCATED:
        tr[t, e] = 1.0
    ended = (d + tr) > 0
    obs = rng.normal(size=(T + 1, N, env.obs_size)).astype(np.float32)
    critic_obs = rng.normal(size=(T + 1, N, env.critic_obs_size)).astype(np.float32)
    final = lambda x: np.where(ended[..., None], rng.normal(size=x[1:].shape).astype(np.float32), x[1:])
    return Transition(
        obs=obs[:T], critic_obs=critic_obs[:T],
        actions=rng.uniform(-0.99, 0.99, (T, N, env.action_size)).astype(np.float32),
        log_probs=rng.normal(-1.0, 1.0, (T, N)).astype(np.float32),
        rewards=rng.uniform(0.0, 1.0, (T, N)).astype(np.float32),
        terminated=d, truncated=tr, next_obs=final(obs), next_critic_obs=final(critic_obs),
    ), obs, critic_obs  # fmt: skip


def ref_targets(learner, state, batch, obs, critic_obs, key):
    """G_t by plain loops over envs and t = T-1 .. 0, straight from spec section 3:
    B_{t+1} = V(x'_t) if t = T-1 or truncated, else (1 - lambda) V(x_{t+1}) + lambda [G_{t+1} - alpha log pi(a_{t+1}|
    x_{t+1})]; G_t = r_t + gamma (1 - d_t) B_{t+1}, with log pi(a_{t+1}|x_{t+1}) the rollout's log-prob of step t+1
    and V from :func:`ref_soft_values` (row t * N + e)."""
    c = learner.config
    alpha = float(np.exp(state.log_duals[0]))
    # The state each step bootstraps from: x_{t+1} while the episode goes on, else the true final observation x'_t.
    goes_on = np.asarray(batch.terminated + batch.truncated) == 0
    goes_on[-1] = False
    x_next = np.where(goes_on[..., None], obs[1:], batch.next_obs)
    critic_next = np.where(goes_on[..., None], critic_obs[1:], batch.next_critic_obs)
    x_next = ref_normalize(x_next.reshape(T * N, -1), state.obs_stats)
    critic_next = ref_normalize(critic_next.reshape(T * N, -1), state.critic_obs_stats)
    values, _, _ = ref_soft_values(learner, state, x_next, critic_next, key)
    v = values.reshape(T, N)
    r, d, tr, log_p = (np.asarray(x, np.float64) for x in (batch.rewards, batch.terminated, batch.truncated,
                                                           batch.log_probs))  # fmt: skip
    g = np.zeros((T, N))
    for e in range(N):
        for t in reversed(range(T)):
            if t == T - 1 or tr[t, e]:
                bootstrap = v[t, e]
            else:
                bootstrap = (1.0 - c.lam) * v[t, e] + c.lam * (g[t + 1, e] - alpha * log_p[t + 1, e])
            g[t, e] = r[t, e] + c.gamma * (1.0 - d[t, e]) * bootstrap
    return g


def test_targets_against_plain_loop_reference():
    """``Learner.targets`` on a hand-made trajectory with terminations (one at t = 0, one at T-1), truncations (one
    at T-1), true final observations and the rollout's log-probs shifted by one step, with a critic far from 0,
    alpha = 0.3 and statistics with a constant dimension."""
    config, env, rollout, learner = _build(lam=0.8)
    seed = int(np.random.default_rng().integers(2**31))
    rng = np.random.default_rng(seed)
    state = _noisy(_one_seed(jax.jit(rollout.init)(jax.random.PRNGKey(seed % 1000)[None]).learner), seed, 0.3)
    first = rng.normal(1.0, 2.0, (64, env.obs_size)).astype(np.float32)
    first[:, 0] = 0.5  # constant in the statistics' first batch
    state = state.replace(obs_stats=state.obs_stats.update(jnp.asarray(first)))
    batch, obs, critic_obs = _hand_made_batch(env, rng)
    key = jax.random.PRNGKey(seed)
    data = jax.jit(learner.targets)(state, jax.tree.map(jnp.asarray, batch), key)
    ref = ref_targets(learner, state, batch, obs, critic_obs, key)
    np.testing.assert_allclose(np.asarray(data.returns).reshape(T, N), ref, rtol=1e-5, atol=1e-4, err_msg=str(seed))
    np.testing.assert_allclose(data.obs, ref_normalize(batch.obs.reshape(T * N, -1), state.obs_stats), rtol=1e-5,
                               atol=1e-5)  # fmt: skip
    assert np.mean(ref) > 10.0  # the bootstraps weigh (Q far from 0)


def ref_adam(params, grads, opt_state, lr: float, max_norm: float | None):
    """One step of Adam (b1 0.9, b2 0.999, eps 1e-8, bias-corrected), after a global-norm clip to ``max_norm`` when
    given, in float64 over the leaves. Returns (parameters, the optimiser state with its Adam moments replaced)."""
    adam = next(x for x in jax.tree.leaves(opt_state, is_leaf=_is_adam) if _is_adam(x))
    g = [np.asarray(x, np.float64) for x in jax.tree.leaves(grads)]
    norm = np.sqrt(sum(float(np.sum(x**2)) for x in g))
    if max_norm is not None and norm > max_norm:
        g = [x * max_norm / norm for x in g]
    count = int(adam.count) + 1
    mu = [0.9 * np.asarray(m, np.float64) + 0.1 * x for m, x in zip(jax.tree.leaves(adam.mu), g, strict=True)]
    nu = [0.999 * np.asarray(v, np.float64) + 0.001 * x**2 for v, x in zip(jax.tree.leaves(adam.nu), g, strict=True)]
    new = [np.asarray(p, np.float64) - lr * (m / (1 - 0.9**count)) / (np.sqrt(v / (1 - 0.999**count)) + 1e-8)
           for p, m, v in zip(jax.tree.leaves(params), mu, nu, strict=True)]  # fmt: skip
    treedef = jax.tree.structure(params)
    f32 = lambda xs: jax.tree.unflatten(
        treedef, [np.float32(x) if np.ndim(x) == 0 else x.astype(np.float32) for x in xs]
    )
    moments = adam._replace(count=np.int32(count), mu=f32(mu), nu=f32(nu))
    state = jax.tree.map(lambda x: moments if _is_adam(x) else x, opt_state, is_leaf=_is_adam)
    return f32(new), state, norm


def _with_moments(state, seed: int):
    """The state with small Adam moments on every element (mu ~ N(0, 1e-5), nu in [1e-8, 1e-6], 5 steps), so that
    each step follows its own gradient. One iteration in, the far bins of the saturated head have moments of 1e-12
    and 1e-26, where Adam's m / sqrt(v) turns float32 rounding of the gradient into a step of any sign
    (tests/closeness.py)."""
    rng = np.random.default_rng(seed + 1)

    def moments(x):
        if not _is_adam(x):
            return x
        mu = jax.tree.map(lambda m: jnp.asarray(rng.normal(0.0, 1e-5, m.shape), m.dtype), x.mu)
        nu = jax.tree.map(lambda v: jnp.asarray(rng.uniform(1e-8, 1e-6, v.shape), v.dtype), x.nu)
        return x._replace(count=jnp.asarray(5, x.count.dtype), mu=mu, nu=nu)

    opt = lambda tree: jax.tree.map(moments, tree, is_leaf=_is_adam)
    return state.replace(actor_opt=opt(state.actor_opt), critic_opt=opt(state.critic_opt), dual_opt=opt(state.dual_opt))


def _is_adam(x) -> bool:
    return isinstance(x, optax.ScaleByAdamState)


def _log_normal(x, m, s):
    return jnp.sum(-0.5 * ((x - m) / s) ** 2 - jnp.log(s) - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)


def ref_minibatch_step(learner, state, mb, key):
    """Spec sections 4 and 5 as a sequence, written independently of reppo.algo.losses: a critic step on the
    HL-Gauss cross-entropy and the masked auxiliary MSE, then an actor step against the updated critic (documented
    noise: action and KL keys = split(key)), then a dual step on the closed-form dual gradients. Gradients of the
    two networks' losses by jax.grad of the losses written here; clip and Adam in numpy."""
    c, critic, actor = learner.config, learner.critic, learner.actor
    width = c.critic_width
    returns = np.clip(np.asarray(mb.returns, np.float64), c.v_min, c.v_max)[:, None]
    centres = np.linspace(c.v_min, c.v_max, c.num_bins)
    w = centres[1] - centres[0]
    mass = stats.norm.cdf(centres + w / 2, returns, 0.75 * w) - stats.norm.cdf(centres - w / 2, returns, 0.75 * w)
    target = jnp.asarray(mass / mass.sum(-1, keepdims=True), jnp.float32)

    def critic_loss(p):
        emb = critic.apply(p, mb.critic_obs, mb.actions, method="embed")
        ce = -jnp.sum(target * jax.nn.log_softmax(critic.apply(p, emb, method="logits")), axis=-1)
        pred_r, pred_next = critic.apply(p, emb, method="predict_aux")
        sq = (pred_r - mb.rewards) ** 2 + jnp.sum((pred_next - mb.next_embedding) ** 2, axis=-1)
        return jnp.mean(ce + c.aux_coef * (1.0 - mb.terminated) * sq / (1 + width))

    critic_params, critic_opt, critic_norm = ref_adam(state.critic_params, jax.grad(critic_loss)(state.critic_params),
                                                      state.critic_opt, c.critic_lr, c.max_grad_norm)  # fmt: skip

    alpha, beta = np.exp(np.asarray(state.log_duals, np.float64))
    key_action, key_kl = jax.random.split(key)
    eps = jax.random.normal(key_action, mb.old_mean.shape)
    b = mb.old_mean + mb.old_std * jax.random.normal(key_kl, (c.num_kl_samples, *mb.old_mean.shape))
    z = jnp.asarray(centres, jnp.float32)

    def actor_loss(p):
        m, s = actor.apply(p, mb.obs)
        u = m + s * eps
        log_p = _log_normal(u, m, s) + 2.0 * jnp.sum(jnp.logaddexp(u, -u) - jnp.log(2.0), axis=-1)
        logits = critic.apply(critic_params, mb.critic_obs, jnp.tanh(u), method="q_logits")  # the UPDATED critic
        q = jax.nn.softmax(logits) @ z
        kl = jnp.mean(_log_normal(b, mb.old_mean, mb.old_std) - _log_normal(b, m, s), axis=0)
        inside = jax.lax.stop_gradient(kl < c.kl_bound)
        return jnp.mean(jnp.where(inside, alpha * log_p - q, beta * kl)), (log_p, kl)

    grads, (log_p, kl) = jax.grad(actor_loss, has_aux=True)(state.actor_params)
    actor_params, actor_opt, actor_norm = ref_adam(state.actor_params, grads, state.actor_opt, c.actor_lr,
                                                   c.max_grad_norm)  # fmt: skip

    log_p, kl = np.asarray(log_p, np.float64), np.asarray(kl, np.float64)
    target_entropy = -c.entropy_coef * learner.spaces.action_size
    dual_grads = np.array([alpha * np.mean(-log_p - target_entropy), -beta * np.mean(kl - c.kl_bound)])
    log_duals, dual_opt, _ = ref_adam(state.log_duals, dual_grads, state.dual_opt, c.dual_lr, None)
    new = state.replace(actor_params=actor_params, critic_params=critic_params, log_duals=log_duals,
                        actor_opt=actor_opt, critic_opt=critic_opt, dual_opt=dual_opt)  # fmt: skip
    return new, critic_norm, actor_norm


@pytest.mark.parametrize("max_grad_norm", [1e-2, 1e3])  # every step clipped / none
def test_minibatch_step_is_critic_then_actor_against_updated_critic_then_duals(max_grad_norm):
    """``update_minibatch`` against :func:`ref_minibatch_step` on a state one iteration in, with Adam moments on
    every element (:func:`_with_moments`), the critic's head spread over the bins (so the actor's gradient depends on
    which critic it sees), alpha 0.3 and beta 0.7: the new parameters, optimiser states and duals, the gradient norms
    and the clip flags."""
    config, env, rollout, learner = _build(max_grad_norm=max_grad_norm, critic_lr=1e-2)  # a critic step that shows
    seed = int(np.random.default_rng().integers(2**31 - 2))
    state, batch = _after_one_iteration(rollout, seed)
    state = _with_moments(_noisy(_one_seed(state.learner), seed, 0.3, 0.7), seed)
    k_targets, k_perm, k_step = jax.random.split(jax.random.PRNGKey(seed), 3)
    data = jax.jit(learner.targets)(state, batch, k_targets)
    rows = np.asarray(jax.random.permutation(k_perm, config.batch_size))[: config.minibatch_size]
    mb = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[rows]), data)
    got, info = jax.jit(learner.update_minibatch)(state, mb, k_step)
    want, critic_norm, actor_norm = ref_minibatch_step(learner, state, mb, k_step)
    assert_same_run(got, want, state)
    assert float(info["critic_grad_norm"]) == pytest.approx(critic_norm, rel=1e-4)
    assert float(info["actor_grad_norm"]) == pytest.approx(actor_norm, rel=1e-4)
    assert float(info["critic_clip_frac"]) == float(critic_norm > max_grad_norm)
    assert float(info["actor_clip_frac"]) == float(actor_norm > max_grad_norm)
    assert not _leaves_equal(got.log_duals, state.log_duals)


@pytest.mark.parametrize("decay", [True, False])
def test_learning_rates_fall_linearly_to_zero_over_the_decay_iterations(decay):
    """Under a constant gradient Adam's step is -lr * g / (|g| + eps) per element, so each step shows the learning
    rate it used: with ``lr_decay_steps`` d it must be lr * (1 - n / N) at step n, N = ceil(d / B) * E * M Adam
    steps, then 0; without, lr at every step. Actor and critic alike."""
    rng = np.random.default_rng()
    batch = TINY["num_envs"] * TINY["num_steps"]
    d = int(rng.integers(1, 3 * batch + 1)) if decay else 0
    actor_lr, critic_lr = float(rng.uniform(1e-4, 1e-2)), float(rng.uniform(1e-4, 1e-2))
    _, _, _, learner = _build(lr_decay_steps=d, actor_lr=actor_lr, critic_lr=critic_lr, max_grad_norm=1e3)
    n_steps = -(-d // batch) * TINY["num_epochs"] * TINY["num_minibatches"] if decay else 5
    g = rng.normal(size=7).astype(np.float32)
    for tx, lr in ((learner.actor_tx, actor_lr), (learner.critic_tx, critic_lr)):
        params = {"w": jnp.zeros(7)}
        opt = tx.init(params)
        for n in range(n_steps + 2):
            updates, opt = tx.update({"w": jnp.asarray(g)}, opt, params)
            expected = lr * max(0.0, 1 - n / n_steps) if decay else lr
            np.testing.assert_allclose(np.asarray(updates["w"]), -expected * g / (np.abs(g) + 1e-8), rtol=1e-4,
                                       atol=1e-12)  # fmt: skip
