"""Tanh-Gaussian policy distribution and KL estimators (spec sections 2 and 5) against float64 numpy/scipy."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from reppo.algo import distributions as D

SEEDS = st.integers(0, 2**32 - 1)
FEW = settings(max_examples=8, deadline=None, database=None)
B, DIM = 5, 3

gaussian_log_prob = jax.jit(D.gaussian_log_prob)
tanh_log_det_jacobian = jax.jit(D.tanh_log_det_jacobian)
log_prob_from_pre_tanh = jax.jit(D.log_prob_from_pre_tanh)
sample = jax.jit(D.sample)
gaussian_kl = jax.jit(D.gaussian_kl)
sampled_forward_kl = jax.jit(D.sampled_forward_kl, static_argnums=5)


def ref_log_det_definition(u):
    """log(1 - tanh(u)^2) straight from the definition (float64; only accurate for moderate |u|)."""
    u = np.asarray(u, np.float64)
    return np.log(1.0 - np.tanh(u) ** 2)


def ref_log_det_asymptotic(u):
    """log(1 - tanh(u)^2) = log 4 - 2|u| - 2 log1p(exp(-2|u|)) (exact, stable for all u, float64)."""
    a = np.abs(np.asarray(u, np.float64))
    return np.log(4.0) - 2.0 * a - 2.0 * np.log1p(np.exp(-2.0 * a))


def ref_kl(mp, sp, mq, sq):
    """KL(N(mp, sp^2) || N(mq, sq^2)) for diagonal Gaussians, summed over the last axis (float64)."""
    mp, sp, mq, sq = (np.asarray(x, np.float64) for x in (mp, sp, mq, sq))
    return np.sum(np.log(sq / sp) + (sp**2 + (mp - mq) ** 2) / (2.0 * sq**2) - 0.5, axis=-1)


def random_gaussian(rng, shape=(B, DIM)):
    mean = rng.uniform(-2.0, 2.0, shape).astype(np.float32)
    std = rng.uniform(0.1, 1.5, shape).astype(np.float32)
    return mean, std


def f32(*xs):
    return tuple(jnp.asarray(x, jnp.float32) for x in xs)


# ----------------------------------------------------------------------------------------------------
# log-densities


@FEW
@given(seed=SEEDS)
def test_gaussian_log_prob_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    mean, std = random_gaussian(rng)
    u = (mean + std * rng.normal(0.0, 2.0, mean.shape)).astype(np.float32)
    got = np.asarray(gaussian_log_prob(*f32(u, mean, std)))
    ref = stats.norm.logpdf(u.astype(np.float64), mean.astype(np.float64), std.astype(np.float64)).sum(-1)
    assert got.shape == (B,)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)


@FEW
@given(seed=SEEDS)
def test_log_prob_change_of_variables_moderate_u(seed):
    rng = np.random.default_rng(seed)
    mean, std = random_gaussian(rng)
    u = rng.uniform(-3.0, 3.0, mean.shape).astype(np.float32)
    u64 = u.astype(np.float64)
    ref_jac = ref_log_det_definition(u64).sum(-1)
    ref = stats.norm.logpdf(u64, mean.astype(np.float64), std.astype(np.float64)).sum(-1) - ref_jac
    np.testing.assert_allclose(np.asarray(tanh_log_det_jacobian(jnp.asarray(u))), ref_jac, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(log_prob_from_pre_tanh(*f32(u, mean, std))), ref, rtol=1e-5, atol=1e-4)


def test_log_det_reference_forms_agree():
    """The two float64 references agree where the definition is accurate."""
    u = np.linspace(-4.0, 4.0, 41)
    np.testing.assert_allclose(ref_log_det_definition(u), ref_log_det_asymptotic(u), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("magnitude", [10.5, 12.0, 30.0, 80.0])
def test_log_prob_stable_for_large_pre_tanh(magnitude):
    """|u| > 10: tanh(u) rounds to +-1 in float32, yet the log-density is finite and exact."""
    rng = np.random.default_rng(int(magnitude))
    u = np.array([[magnitude, -magnitude, magnitude], [-magnitude, 0.3, -magnitude]], np.float32)
    mean = rng.uniform(-2.0, 2.0, u.shape).astype(np.float32)
    std = rng.uniform(0.5, 2.0, u.shape).astype(np.float32)
    jac = np.asarray(tanh_log_det_jacobian(jnp.asarray(u)))
    logp = np.asarray(log_prob_from_pre_tanh(*f32(u, mean, std)))
    assert np.all(np.isfinite(jac)) and np.all(np.isfinite(logp))
    u64 = u.astype(np.float64)
    ref_jac = ref_log_det_asymptotic(u64).sum(-1)
    np.testing.assert_allclose(jac, ref_jac, rtol=1e-5)
    ref = stats.norm.logpdf(u64, mean.astype(np.float64), std.astype(np.float64)).sum(-1) - ref_jac
    np.testing.assert_allclose(logp, ref, rtol=1e-5)
    # Per-element check (no cancellation between dimensions hides an error).
    per_elem = np.asarray(jax.vmap(jax.vmap(lambda x: tanh_log_det_jacobian(x[None])))(jnp.asarray(u)))
    np.testing.assert_allclose(per_elem, ref_log_det_asymptotic(u64), rtol=1e-5)


def test_log_prob_gradient_finite_for_large_pre_tanh():
    u = jnp.array([[12.0, -30.0, 80.0]], jnp.float32)
    mean, std = jnp.zeros_like(u), jnp.ones_like(u)
    grad = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(D.log_prob_from_pre_tanh(x, mean, std))))(u))
    # d/du [log N(u; 0, 1) - log(1 - tanh^2 u)] = -u + 2 tanh(u)
    np.testing.assert_allclose(grad, -np.asarray(u) + 2.0 * np.tanh(np.asarray(u, np.float64)), rtol=1e-5)


# ----------------------------------------------------------------------------------------------------
# sampling


@FEW
@given(seed=SEEDS)
def test_sample_statistics_and_log_prob(seed):
    rng = np.random.default_rng(seed)
    mean, std = random_gaussian(rng, (DIM,))
    n = 20000
    mean_b = np.broadcast_to(mean, (n, DIM))
    std_b = np.broadcast_to(std, (n, DIM))
    action, u, logp = (np.asarray(x) for x in sample(jax.random.key(seed), *f32(mean_b, std_b)))
    assert action.shape == u.shape == (n, DIM) and logp.shape == (n,)
    # Empirical moments of the pre-tanh samples (5 standard errors).
    np.testing.assert_array_less(np.abs(u.mean(0) - mean), 5.0 * std / np.sqrt(n))
    np.testing.assert_array_less(np.abs(u.std(0) - std), 5.0 * std / np.sqrt(2.0 * n))
    # The action is tanh(u), in [-1, 1].
    np.testing.assert_allclose(action, np.tanh(u.astype(np.float64)), atol=1e-6)
    assert np.all(np.abs(action) <= 1.0)
    # The returned log-prob is the change-of-variables density of the returned u ...
    u64 = u.astype(np.float64)
    ref = stats.norm.logpdf(u64, mean.astype(np.float64), std.astype(np.float64)).sum(-1)
    ref -= ref_log_det_asymptotic(u64).sum(-1)
    np.testing.assert_allclose(logp, ref, rtol=1e-5, atol=1e-4)
    # ... and equals log_prob_from_pre_tanh of that u.
    np.testing.assert_allclose(logp, np.asarray(log_prob_from_pre_tanh(*f32(u, mean_b, std_b))), rtol=1e-6)


def test_sample_is_reparameterised():
    """d u / d mean = 1 and d u / d std = (u - mean) / std for the returned pre-tanh sample."""
    key = jax.random.key(3)
    mean, std = jnp.array([0.3, -1.0], jnp.float32), jnp.array([0.5, 2.0], jnp.float32)
    _, u, _ = sample(key, mean, std)
    pre_tanh_sum = lambda m, s: jnp.sum(D.sample(key, m, s)[1])
    d_mean, d_std = jax.jit(jax.grad(pre_tanh_sum, argnums=(0, 1)))(mean, std)
    np.testing.assert_allclose(np.asarray(d_mean), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(d_std), np.asarray((u - mean) / std), rtol=1e-5)


@FEW
@given(seed=SEEDS)
def test_deterministic_action_is_tanh_mean(seed):
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 3.0, (B, DIM)).astype(np.float32)
    got = np.asarray(jax.jit(D.deterministic_action)(jnp.asarray(mean)))
    np.testing.assert_allclose(got, np.tanh(mean.astype(np.float64)), atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# KL


@FEW
@given(seed=SEEDS)
def test_gaussian_kl_closed_form(seed):
    rng = np.random.default_rng(seed)
    mp, sp = random_gaussian(rng)
    mq, sq = random_gaussian(rng)
    got = np.asarray(gaussian_kl(*f32(mp, sp, mq, sq)))
    assert got.shape == (B,)
    np.testing.assert_allclose(got, ref_kl(mp, sp, mq, sq), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gaussian_kl(*f32(mp, sp, mp, sp))), 0.0, atol=1e-6)


@FEW
@given(seed=SEEDS)
def test_gaussian_kl_matches_numerical_integration(seed):
    """One dimension: KL = E_p[log p - log q] by quadrature on a fine grid (independent of closed form)."""
    rng = np.random.default_rng(seed)
    mp, sp = random_gaussian(rng, (1,))
    mq, sq = random_gaussian(rng, (1,))
    x = np.linspace(mp[0] - 12 * sp[0], mp[0] + 12 * sp[0], 200001)
    p = stats.norm(mp[0], sp[0])
    integrand = p.pdf(x) * (p.logpdf(x) - stats.norm.logpdf(x, mq[0], sq[0]))
    ref = np.sum((integrand[1:] + integrand[:-1]) / 2.0 * np.diff(x))
    got = float(gaussian_kl(*f32(mp, sp, mq, sq)))
    assert got == pytest.approx(ref, rel=1e-4, abs=1e-5)


@FEW
@given(seed=SEEDS)
def test_sampled_forward_kl_converges_to_closed_form(seed):
    rng = np.random.default_rng(seed)
    m_old, s_old = random_gaussian(rng)
    m_new, s_new = random_gaussian(rng)
    num = 20000
    got = np.asarray(sampled_forward_kl(jax.random.key(seed), *f32(m_old, s_old, m_new, s_new), num))
    ref = ref_kl(m_old, s_old, m_new, s_new)
    # Statistical tolerance from the per-sample std of log p_old - log p_new (estimated with numpy draws).
    x = m_old + s_old * rng.normal(size=(num, B, DIM))
    diffs = (stats.norm.logpdf(x, m_old, s_old) - stats.norm.logpdf(x, m_new, s_new)).sum(-1)
    tol = 5.0 * diffs.std(0) / np.sqrt(num) + 1e-4
    assert got.shape == (B,)
    np.testing.assert_array_less(np.abs(got - ref), tol)


@FEW
@given(seed=SEEDS)
def test_sampled_forward_kl_is_exactly_zero_for_identical_policies(seed):
    rng = np.random.default_rng(seed)
    m, s = random_gaussian(rng)
    got = np.asarray(sampled_forward_kl(jax.random.key(seed), *f32(m, s, m, s), 4))
    np.testing.assert_array_equal(got, 0.0)


@functools.partial(jax.jit, static_argnums=5)
def _kl_grads(key, m_old, s_old, m_new, s_new, num):
    fn = lambda *args: jnp.sum(D.sampled_forward_kl(key, *args, num))
    return jax.grad(fn, argnums=(0, 1, 2, 3))(m_old, s_old, m_new, s_new)


def grads_of_sampled_kl(key, m_old, s_old, m_new, s_new, num):
    return [np.asarray(g, np.float64) for g in _kl_grads(key, *f32(m_old, s_old, m_new, s_new), num)]


@FEW
@given(seed=SEEDS)
def test_sampled_kl_gradient_vanishes_at_identical_policies(seed):
    """At new == old the gradient wrt the new mean (and std) is zero on average: per dimension it is a mean of
    S zero-mean terms, -(u - m)/s^2 (std 1/(s sqrt S)) and 1/s - (u - m)^2/s^3 (std sqrt(2)/(s sqrt S))."""
    rng = np.random.default_rng(seed)
    m, s = random_gaussian(rng)
    num = 4096
    _, _, g_mnew, g_snew = grads_of_sampled_kl(jax.random.key(seed), m, s, m, s, num)
    np.testing.assert_array_less(np.abs(g_mnew), 5.0 / (s * np.sqrt(num)))
    np.testing.assert_array_less(np.abs(g_snew), 5.0 * np.sqrt(2.0) / (s * np.sqrt(num)))


@FEW
@given(seed=SEEDS)
def test_sampled_kl_gradient_converges_to_closed_form(seed):
    rng = np.random.default_rng(seed)
    m_old, s_old = random_gaussian(rng)
    m_new, s_new = random_gaussian(rng)
    num = 20000
    _, _, g_mean, g_std = grads_of_sampled_kl(jax.random.key(seed), m_old, s_old, m_new, s_new, num)
    mo, so, mn, sn = (np.asarray(x, np.float64) for x in (m_old, s_old, m_new, s_new))
    delta = mo - mn
    ref_mean = (mn - mo) / sn**2
    ref_std = 1.0 / sn - (so**2 + delta**2) / sn**3
    tol_mean = 5.0 * so / (sn**2 * np.sqrt(num)) + 1e-4
    tol_std = 5.0 * np.sqrt(2.0 * so**4 + 4.0 * delta**2 * so**2) / (sn**3 * np.sqrt(num)) + 1e-4
    np.testing.assert_array_less(np.abs(g_mean - ref_mean), tol_mean)
    np.testing.assert_array_less(np.abs(g_std - ref_std), tol_std)
